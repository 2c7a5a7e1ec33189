//! Log lines from the Rust side (`tracing` events of the provider runtime, the pool, the
//! store) to the browser console and to the page's `"log"` listeners.
//!
//! A deliberately small `tracing` subscriber: spans are ignored (nothing in the runtime relies on
//! them), events at or above the level are formatted as `message key=value ...` once and handed
//! to every sink.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use wasm_bindgen::JsValue;

/// Where formatted lines go besides the console: `(level, line)`.
pub(crate) type Sink = Box<dyn Fn(&'static str, &str)>;

thread_local! {
    static SINKS: RefCell<Vec<(u64, Sink)>> = const { RefCell::new(Vec::new()) };
    static NEXT: RefCell<u64> = const { RefCell::new(0) };
}

/// The most verbose level logged: 0 error, 1 warn, 2 info, 3 debug, 4 trace.
static MAX_LEVEL: AtomicUsize = AtomicUsize::new(2);

fn rank(level: &Level) -> usize {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        Level::TRACE => 4,
    }
}

/// The name the JS side uses for a level.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        _ => "debug",
    }
}

/// Sets the most verbose level: `"error"`, `"warn"`, `"info"` (default) or `"debug"`.
pub(crate) fn set_level(name: &str) -> Result<(), String> {
    let rank = match name {
        "error" => 0,
        "warn" => 1,
        "info" => 2,
        "debug" => 3,
        "trace" => 4,
        other => return Err(format!("unknown log level {other:?}")),
    };
    MAX_LEVEL.store(rank, Ordering::Relaxed);
    Ok(())
}

/// Installs the subscriber (once; later calls do nothing).
pub(crate) fn init() {
    let _ = tracing::subscriber::set_global_default(JsSubscriber);
}

/// Adds a sink; returns its key for [`remove_sink`].
pub(crate) fn add_sink(sink: Sink) -> u64 {
    let key = NEXT.with(|n| {
        let mut n = n.borrow_mut();
        *n += 1;
        *n
    });
    SINKS.with(|s| s.borrow_mut().push((key, sink)));
    key
}

pub(crate) fn remove_sink(key: u64) {
    SINKS.with(|s| s.borrow_mut().retain(|(k, _)| *k != key));
}

struct JsSubscriber;

struct Line(String);

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for JsSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        rank(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut line = Line(String::new());
        event.record(&mut line);
        let level = level_name(metadata.level());
        let text = line.0;
        let console = JsValue::from_str(&format!("wasimoff: {text}"));
        match *metadata.level() {
            Level::ERROR => web_sys::console::error_1(&console),
            Level::WARN => web_sys::console::warn_1(&console),
            Level::INFO => web_sys::console::info_1(&console),
            _ => web_sys::console::debug_1(&console),
        }
        // A sink that logs itself must not deadlock the RefCell: skip re-entrant calls.
        SINKS.with(|sinks| {
            if let Ok(sinks) = sinks.try_borrow() {
                for (_, sink) in sinks.iter() {
                    sink(level, &text);
                }
            }
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

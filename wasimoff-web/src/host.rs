//! Binds the pure WASI host ([`wasimoff_wasi`]) to the JS `WebAssembly` API: every import of
//! `wasi_snapshot_preview1` and `wasi_unstable` is a tiny JS trampoline into one Rust closure
//! (`Closure::wrap`) that reads and writes the guest's exported `memory` through a fresh
//! `Uint8Array` view per call (the buffer changes when memory grows).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Function, Int32Array, Object, Reflect, Uint8Array, WebAssembly};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use wasimoff_wasi::abi::{self, Errno, errno};

use crate::memcap;
use wasimoff_wasi::ctx::{Memory, Platform, Stop, WasiCtx};

/// The guest memory through a `Uint8Array` over its current buffer.
struct JsMemory {
    view: Uint8Array,
    len: u64,
}

impl JsMemory {
    fn new(memory: &WebAssembly::Memory) -> Self {
        let view = Uint8Array::new(&memory.buffer());
        let len = u64::from(view.length());
        JsMemory { view, len }
    }
    fn range(&self, ptr: u32, len: usize) -> Result<(u32, u32), Errno> {
        let end = u64::from(ptr) + len as u64;
        if end > self.len {
            return Err(errno::FAULT);
        }
        Ok((ptr, end as u32))
    }
}

impl Memory for JsMemory {
    fn read(&self, ptr: u32, buf: &mut [u8]) -> Result<(), Errno> {
        let (start, end) = self.range(ptr, buf.len())?;
        self.view.subarray(start, end).copy_to(buf);
        Ok(())
    }
    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let (start, end) = self.range(ptr, data.len())?;
        self.view.subarray(start, end).copy_from(data);
        Ok(())
    }
}

/// Clocks from `performance`, randomness from `crypto.getRandomValues`, and sleeping with
/// `Atomics.wait` (dedicated workers, cross-origin isolated) or a busy-wait elsewhere.
#[derive(Debug)]
pub struct BrowserPlatform {
    performance: web_sys::Performance,
    crypto: web_sys::Crypto,
    wait_cell: Option<Int32Array>,
    can_wait: Cell<bool>,
}

impl BrowserPlatform {
    /// The platform of the current global (window or worker).
    pub fn new() -> Result<Self, String> {
        let global = js_sys::global();
        let get = |name: &str| {
            Reflect::get(&global, &JsValue::from_str(name))
                .ok()
                .filter(|v| !v.is_undefined())
                .ok_or_else(|| format!("no {name} in this JS global"))
        };
        let performance = get("performance")?.unchecked_into();
        let crypto = get("crypto")?.unchecked_into();
        let wait_cell = get("SharedArrayBuffer")
            .ok()
            .map(|_| Int32Array::new(&js_sys::SharedArrayBuffer::new(4)));
        Ok(BrowserPlatform {
            performance,
            crypto,
            can_wait: Cell::new(wait_cell.is_some()),
            wait_cell,
        })
    }

    /// Whether sleeping blocks in `Atomics.wait` (so far) rather than busy-waiting.
    pub fn blocks_with_atomics(&self) -> bool {
        self.can_wait.get()
    }
}

impl Platform for BrowserPlatform {
    fn realtime_ns(&self) -> u64 {
        ((self.performance.time_origin() + self.performance.now()) * 1e6) as u64
    }
    fn monotonic_ns(&self) -> u64 {
        (self.performance.now() * 1e6) as u64
    }
    fn resolution_ns(&self) -> u64 {
        100_000
    }
    fn random(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(65_536) {
            // getRandomValues cannot fail for a u8 array of at most 65536 bytes.
            let _ = self.crypto.get_random_values_with_u8_array(chunk);
        }
    }
    fn sleep_ns(&self, ns: u64) {
        let until = self.monotonic_ns().saturating_add(ns);
        loop {
            let now = self.monotonic_ns();
            if now >= until {
                return;
            }
            if let (true, Some(cell)) = (self.can_wait.get(), &self.wait_cell) {
                let ms = (until - now) as f64 / 1e6;
                if js_sys::Atomics::wait_with_timeout(cell, 0, 0, ms).is_err() {
                    // Not allowed here (the main thread): busy-wait from now on.
                    self.can_wait.set(false);
                }
            }
        }
    }
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    /// `_start` returned.
    Returned,
    /// `proc_exit(status)`.
    Exited(i32),
    /// A system call saw the deadline pass.
    Deadline,
    /// A trap (the JS error's text).
    Trapped(String),
}

/// Where a run's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTimes {
    /// `new WebAssembly.Instance` (memory, data segments, imports).
    pub instantiate_ms: f64,
    /// `_start`, system calls included.
    pub run_ms: f64,
}

/// Milliseconds since the Unix epoch, with the sub-millisecond resolution of `performance`:
/// comparable across the page and its workers (each has its own `performance.now()` origin).
pub fn wall_ms() -> f64 {
    thread_local! {
        static PERFORMANCE: Option<web_sys::Performance> =
            Reflect::get(&js_sys::global(), &JsValue::from_str("performance"))
                .ok()
                .filter(|p| !p.is_undefined())
                .map(JsCast::unchecked_into);
    }
    PERFORMANCE.with(|performance| match performance {
        Some(p) => p.time_origin() + p.now(),
        None => js_sys::Date::now(),
    })
}

type Dispatch = dyn FnMut(u32, Array) -> Result<i32, JsValue>;

/// A copy of a running guest's stdout and stderr in a `SharedArrayBuffer`, kept current after
/// every system call, so that the page still has the output of a guest whose worker it
/// terminated at a deadline.
///
/// Layout: four `i32`s (stdout length, stderr length, flags: 1 = stdout cut, 2 = stderr cut,
/// unused), then `capacity` bytes of stdout, then `capacity` bytes of stderr. Each stream keeps
/// its first `capacity` bytes.
#[derive(Debug, Clone)]
pub struct OutputMirror {
    buffer: js_sys::SharedArrayBuffer,
    header: Int32Array,
    bytes: Uint8Array,
    capacity: u32,
    synced: Cell<(usize, usize)>,
}

const MIRROR_HEADER: u32 = 16;

impl OutputMirror {
    /// A mirror of `capacity` bytes per stream; `None` where `SharedArrayBuffer` does not exist
    /// (pages that are not cross-origin isolated).
    pub fn new(capacity: u32) -> Option<OutputMirror> {
        let available = Reflect::get(&js_sys::global(), &JsValue::from_str("SharedArrayBuffer"))
            .is_ok_and(|v| !v.is_undefined());
        if !available {
            return None;
        }
        let buffer = js_sys::SharedArrayBuffer::new(MIRROR_HEADER + 2 * capacity);
        Some(OutputMirror::over(buffer))
    }

    /// A view of an existing mirror buffer (the worker's side).
    pub fn over(buffer: js_sys::SharedArrayBuffer) -> OutputMirror {
        let capacity = (buffer.byte_length().saturating_sub(MIRROR_HEADER)) / 2;
        OutputMirror {
            header: Int32Array::new_with_byte_offset_and_length(&buffer, 0, 4),
            bytes: Uint8Array::new_with_byte_offset(&buffer, MIRROR_HEADER),
            buffer,
            capacity,
            synced: Cell::new((0, 0)),
        }
    }

    /// The shared buffer (to post to a worker).
    pub fn buffer(&self) -> &js_sys::SharedArrayBuffer {
        &self.buffer
    }

    /// Empties the mirror for the next task.
    pub fn reset(&self) {
        for i in 0..4 {
            let _ = js_sys::Atomics::store(&self.header, i, 0);
        }
        self.synced.set((0, 0));
    }

    /// Copies what the streams gained since the last call.
    fn sync(&self, stdout: &[u8], stderr: &[u8]) {
        let (out_done, err_done) = self.synced.get();
        if (stdout.len(), stderr.len()) == (out_done, err_done) {
            return;
        }
        let cap = self.capacity as usize;
        let mut flags = js_sys::Atomics::load(&self.header, 2).unwrap_or(0);
        for (index, data, done, base) in [(0, stdout, out_done, 0), (1, stderr, err_done, cap)] {
            let keep = data.len().min(cap);
            if keep > done {
                self.bytes
                    .subarray((base + done) as u32, (base + keep) as u32)
                    .copy_from(&data[done..keep]);
                let _ = js_sys::Atomics::store(&self.header, index, keep as i32);
            }
            if data.len() > cap {
                flags |= 1 << index;
            }
        }
        let _ = js_sys::Atomics::store(&self.header, 2, flags);
        self.synced.set((stdout.len(), stderr.len()));
    }

    /// What the mirror holds: `(stdout, stderr, stdout cut, stderr cut)`.
    pub fn read(&self) -> (Vec<u8>, Vec<u8>, bool, bool) {
        let cap = self.capacity;
        let len = |i| (js_sys::Atomics::load(&self.header, i).unwrap_or(0).max(0) as u32).min(cap);
        let flags = js_sys::Atomics::load(&self.header, 2).unwrap_or(0);
        let stdout = self.bytes.subarray(0, len(0)).to_vec();
        let stderr = self.bytes.subarray(cap, cap + len(1)).to_vec();
        (stdout, stderr, flags & 1 != 0, flags & 2 != 0)
    }
}

/// Checks a compiled module for `_start` and for WASI imports that do not exist.
pub fn check_module(module: &WebAssembly::Module) -> Result<(), String> {
    let has_start = WebAssembly::Module::exports(module).iter().any(|desc| {
        let name = Reflect::get(&desc, &"name".into())
            .ok()
            .and_then(|v| v.as_string());
        let kind = Reflect::get(&desc, &"kind".into())
            .ok()
            .and_then(|v| v.as_string());
        name.as_deref() == Some("_start") && kind.as_deref() == Some("function")
    });
    if !has_start {
        return Err("the module exports no `_start` function (not a WASI command)".into());
    }
    for desc in WebAssembly::Module::imports(module).iter() {
        let module_name = Reflect::get(&desc, &"module".into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        let name = Reflect::get(&desc, &"name".into())
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_default();
        let known = (abi::NAMESPACES.contains(&module_name.as_str())
            && abi::FUNCTIONS.contains(&name.as_str()))
            || (module_name.as_str(), name.as_str()) == memcap::MEMORY_IMPORT;
        if !known {
            return Err(format!("unknown import `{module_name}::{name}`"));
        }
    }
    Ok(())
}

/// The guest that runs on this thread right now, as the import functions see it.
struct Current {
    ctx: Rc<RefCell<WasiCtx>>,
    platform: Rc<BrowserPlatform>,
    memory: Option<WebAssembly::Memory>,
    mirror: Option<OutputMirror>,
    stop: Option<Stop>,
}

thread_local! {
    /// Set for the duration of [`run`]; the imports dispatch into it.
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
    /// The imports object, built once per thread: both namespaces with every preview 1
    /// function, each a trampoline into one dispatch closure (which lives as long as the
    /// thread). Building ~90 JS functions per task would cost more than a short task itself.
    static IMPORTS: RefCell<Option<Object>> = const { RefCell::new(None) };
    /// The memory this thread hands to guests that import theirs ([`memcap::import_memory`]):
    /// its limits in pages, and the memory, kept while no guest grew it.
    static MEMORY: RefCell<Option<(u32, Option<u32>, WebAssembly::Memory)>> =
        const { RefCell::new(None) };
    /// Each module's imported memory limits, once read ([`imported_memory`]).
    static LIMITS: js_sys::WeakMap = js_sys::WeakMap::new();
}

/// The limits (pages) of the memory `module` imports; `None` for a module that defines its
/// own memory. Read from the module's [`memcap::MEMORY_SECTION`] once per module and kept
/// in [`struct@LIMITS`] (a worker runs the same module over and over).
fn imported_memory(module: &WebAssembly::Module) -> Option<(u32, Option<u32>)> {
    // Kept as one number: -1 for none, else `minimum * 2^17 + (maximum + 1 or 0)`; a memory
    // has at most 2^16 pages, so this is exact in an f64.
    const SHIFT: f64 = 131_072.0;
    let known = LIMITS.with(|limits| limits.get(module).as_f64());
    let code = match known {
        Some(code) => code,
        None => {
            let code = memory_section(module).map_or(-1.0, |(minimum, maximum)| {
                f64::from(minimum) * SHIFT + maximum.map_or(0.0, |m| f64::from(m) + 1.0)
            });
            LIMITS.with(|limits| limits.set(module, &JsValue::from(code)));
            code
        }
    };
    if code < 0.0 {
        return None;
    }
    let minimum = (code / SHIFT).floor();
    let maximum = code - minimum * SHIFT;
    Some((
        minimum as u32,
        (maximum > 0.0).then_some((maximum - 1.0) as u32),
    ))
}

/// The limits in `module`'s [`memcap::MEMORY_SECTION`], if it has one.
fn memory_section(module: &WebAssembly::Module) -> Option<(u32, Option<u32>)> {
    let sections = WebAssembly::Module::custom_sections(module, memcap::MEMORY_SECTION);
    let section = sections.get(0).dyn_into::<js_sys::ArrayBuffer>().ok()?;
    let text = String::from_utf8(Uint8Array::new(&section).to_vec()).ok()?;
    let (minimum, maximum) = text.split_once(' ')?;
    let maximum = match maximum {
        "-" => None,
        max => Some(max.parse().ok()?),
    };
    Some((minimum.parse().ok()?, maximum))
}

/// This thread's memory for a guest that imports one of these limits: the kept one, cleared to
/// zeros (the instance then writes its data segments, so the guest starts as with a fresh
/// memory), or a new one. Clearing the pages a guest touched costs less than a new memory,
/// whose address-space reservation the engine frees only at its next garbage collection.
fn memory_for(minimum: u32, maximum: Option<u32>) -> Result<WebAssembly::Memory, String> {
    MEMORY.with(|cell| {
        let mut cell = cell.borrow_mut();
        if let Some((min, max, memory)) = cell.as_ref()
            && (*min, *max) == (minimum, maximum)
        {
            let bytes = Uint8Array::new(&memory.buffer());
            if u64::from(bytes.length()) == u64::from(minimum) * memcap::PAGE {
                bytes.fill(0, 0, bytes.length());
                return Ok(memory.clone());
            }
        }
        let descriptor = Object::new();
        let set = |key: &str, value: u32| {
            Reflect::set(&descriptor, &JsValue::from_str(key), &JsValue::from(value))
                .map(|_| ())
                .map_err(|e| js_error_text(&e))
        };
        set("initial", minimum)?;
        if let Some(maximum) = maximum {
            set("maximum", maximum)?;
        }
        let memory = WebAssembly::Memory::new(&descriptor).map_err(|e| js_error_text(&e))?;
        *cell = Some((minimum, maximum, memory.clone()));
        Ok(memory)
    })
}

/// One system call of the current guest.
fn dispatch(id: u32, args: Array) -> Result<i32, JsValue> {
    let args: Vec<i64> = args
        .iter()
        .map(|v| match v.as_f64() {
            Some(n) => n as i64,
            None => i64::try_from(v).unwrap_or(0),
        })
        .collect();
    CURRENT.with(|current| {
        let Ok(mut current) = current.try_borrow_mut() else {
            return Err(JsValue::from_str("wasimoff: re-entrant WASI call"));
        };
        let Some(current) = current.as_mut() else {
            return Err(JsValue::from_str("wasimoff: WASI call outside a run"));
        };
        let Some(memory) = current.memory.as_ref() else {
            return Err(JsValue::from_str(
                "wasimoff: WASI call before the memory export was bound",
            ));
        };
        let mut mem = JsMemory::new(memory);
        let Ok(mut ctx) = current.ctx.try_borrow_mut() else {
            return Err(JsValue::from_str("wasimoff: re-entrant WASI call"));
        };
        let result = ctx.call(
            &*current.platform,
            &mut mem,
            (id / 2) as usize,
            &args,
            id % 2 == 1,
        );
        if let Some(mirror) = &current.mirror {
            mirror.sync(&ctx.stdout.data, &ctx.stderr.data);
        }
        match result {
            Ok(errno) => Ok(errno),
            Err(stop) => {
                current.stop = Some(stop);
                Err(JsValue::from_str("wasimoff: guest stopped"))
            }
        }
    })
}

/// This thread's imports object (see [`IMPORTS`]).
fn imports() -> Result<Object, String> {
    IMPORTS.with(|cell| {
        if let Some(imports) = cell.borrow().as_ref() {
            return Ok(imports.clone());
        }
        let dispatch = Closure::wrap(Box::new(dispatch) as Box<Dispatch>);
        let trampoline = Function::new_with_args(
            "dispatch, id",
            "return function() { return dispatch(id, Array.prototype.slice.call(arguments)); };",
        );
        let imports = Object::new();
        let set = |target: &JsValue, key: &str, value: &JsValue| {
            Reflect::set(target, &JsValue::from_str(key), value)
                .map(|_| ())
                .map_err(|e| format!("building imports: {e:?}"))
        };
        for (ns_index, namespace) in abi::NAMESPACES.iter().enumerate() {
            let functions = Object::new();
            for (index, name) in abi::FUNCTIONS.iter().enumerate() {
                let id = (index * 2 + ns_index) as u32;
                let function = trampoline
                    .call2(&JsValue::NULL, dispatch.as_ref(), &JsValue::from(id))
                    .map_err(|e| format!("building imports: {e:?}"))?;
                set(&functions, name, &function)?;
            }
            set(&imports, namespace, &functions)?;
        }
        set(&imports, memcap::MEMORY_IMPORT.0, &Object::new())?;
        // The closure must outlive every instance that imports it: keep it for the thread.
        dispatch.forget();
        *cell.borrow_mut() = Some(imports.clone());
        Ok(imports)
    })
}

/// Clears [`CURRENT`] when a run ends, however it ends.
struct RunGuard;

impl Drop for RunGuard {
    fn drop(&mut self) {
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

/// Instantiates `module` with the WASI imports over `ctx` and runs `_start` to its end, on the
/// current thread; returns how it ended, the size its memory reached (bytes) and where the
/// time went. `Err` means it could not be instantiated.
pub fn run(
    module: &WebAssembly::Module,
    ctx: &Rc<RefCell<WasiCtx>>,
    platform: &Rc<BrowserPlatform>,
    mirror: Option<OutputMirror>,
) -> Result<(RunEnd, u64, RunTimes), String> {
    let imports = imports()?;
    let busy = CURRENT.with(|current| {
        let mut current = current.borrow_mut();
        if current.is_some() {
            return true;
        }
        *current = Some(Current {
            ctx: ctx.clone(),
            platform: platform.clone(),
            memory: None,
            mirror,
            stop: None,
        });
        false
    });
    if busy {
        return Err("another guest is running on this thread".into());
    }
    let _guard = RunGuard;
    let started = platform.monotonic_ns();
    let shared_memory = imported_memory(module);
    if let Some((minimum, maximum)) = shared_memory {
        let memory = memory_for(minimum, maximum)?;
        let namespace = Reflect::get(&imports, &JsValue::from_str(memcap::MEMORY_IMPORT.0))
            .map_err(|e| js_error_text(&e))?;
        Reflect::set(
            &namespace,
            &JsValue::from_str(memcap::MEMORY_IMPORT.1),
            &memory,
        )
        .map_err(|e| js_error_text(&e))?;
    }
    let instance = WebAssembly::Instance::new(module, &imports).map_err(|e| js_error_text(&e))?;
    let instantiated = platform.monotonic_ns();
    let exports = instance.exports();
    let exported_memory = Reflect::get(&exports, &"memory".into())
        .ok()
        .and_then(|m| m.dyn_into::<WebAssembly::Memory>().ok())
        .ok_or("the module exports no `memory`")?;
    CURRENT.with(|current| {
        if let Some(current) = current.borrow_mut().as_mut() {
            current.memory = Some(exported_memory.clone());
        }
    });
    let start: Function = Reflect::get(&exports, &"_start".into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or("the module exports no `_start` function")?;
    let result = start.call0(&JsValue::UNDEFINED);
    let ended = platform.monotonic_ns();
    let times = RunTimes {
        instantiate_ms: instantiated.saturating_sub(started) as f64 / 1e6,
        run_ms: ended.saturating_sub(instantiated) as f64 / 1e6,
    };
    let stop = CURRENT.with(|current| current.borrow().as_ref().and_then(|c| c.stop));
    let memory_size = exported_memory
        .buffer()
        .dyn_into::<js_sys::ArrayBuffer>()
        .map_or(0, |b| u64::from(b.byte_length()));
    // A guest that grew the memory leaves it to the garbage collector: the next gets a new one
    // of the initial size instead of keeping a large one alive.
    if let Some((minimum, _)) = shared_memory
        && memory_size != u64::from(minimum) * memcap::PAGE
    {
        MEMORY.with(|cell| cell.borrow_mut().take());
    }
    let end = match (result, stop) {
        (_, Some(Stop::Exit(status))) => RunEnd::Exited(status),
        (_, Some(Stop::Deadline)) => RunEnd::Deadline,
        (Ok(_), None) => RunEnd::Returned,
        (Err(e), None) => RunEnd::Trapped(js_error_text(&e)),
    };
    Ok((end, memory_size, times))
}

/// `String(error)`, e.g. `RuntimeError: unreachable`.
pub fn js_error_text(error: &JsValue) -> String {
    match error.dyn_ref::<js_sys::Error>() {
        Some(e) => String::from(e.to_string()),
        None => error.as_string().unwrap_or_else(|| format!("{error:?}")),
    }
}

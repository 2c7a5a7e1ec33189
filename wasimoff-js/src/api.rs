//! The package's JavaScript API (see docs/browser-api.md): [`Provider`] turns the page into a
//! provider, [`Client`] offloads from the page, [`Executor`] runs guests locally.
//!
//! `Provider` is the native provider's runtime (`wasimoff_provider::runtime`) compiled for
//! wasm32, with `wasimoff-web`'s [`WebSysConnector`] (core's `WebSysTransport`), its
//! [`WorkerPool`] as the executor and its [`BrowserStore`] as the file cache. This module only
//! translates between JS values and those pieces.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use js_sys::{Function, Object, Uint8Array};
use tokio::sync::broadcast::error::RecvError;
use wasimoff_core::executor::{
    CancellationToken, ExecLimits, ExecTask, Executor as _, ResolvedFile, Termination,
};
use wasimoff_core::platform::{self, Instant};
use wasimoff_core::store::Store;
use wasimoff_provider::runtime::{ConnectionState, ProviderConfig, ProviderStatus, TaskEvent};
use wasm_bindgen::prelude::*;

use wasimoff_web::jsmsg::{self, get, get_f64, get_string, get_strings, set};
use wasimoff_web::pool::{PoolConfig, WorkerPool};
use wasimoff_web::{BrowserStore, BrowserStoreOptions, WebSysConnector};

use crate::logging;
use crate::types;

fn js_error(text: impl std::fmt::Display) -> JsError {
    JsError::new(&text.to_string())
}

/// A client error as a JS `Error` with a stable `code` (`resource_exhausted`, `not_found`,
/// `deadline_exceeded`, `task_failed`, ... as `wasimoff_client::Error::code`); a failed task
/// also has its `kind` (`trap`, `timeout`, `memory`, ...), `stdout` and `stderr`.
fn client_error(error: wasimoff_client::Error) -> JsValue {
    let js = js_sys::Error::new(&error.to_string());
    set(&js, "code", error.code());
    if let wasimoff_client::Error::Task(failure) = &error {
        set(&js, "kind", failure.kind.as_str());
        set(&js, "stdout", failure.output.stdout_lossy());
        set(&js, "stderr", failure.output.stderr_lossy());
    }
    js.into()
}

/// `navigator.hardwareConcurrency` (browsers, Node.js 21+), or 1. Node.js 20 has no
/// `navigator` (and `os.availableParallelism()` is only reachable through an async import), so
/// Node.js 20 callers pass `workers`.
fn hardware_concurrency() -> usize {
    let navigator = get(&js_sys::global(), "navigator");
    get_f64(&navigator, "hardwareConcurrency")
        .map(|n| n as usize)
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn cross_origin_isolated() -> bool {
    get(&js_sys::global(), "crossOriginIsolated").is_truthy()
}

/// A positive integer option, if given.
fn count_option(options: &JsValue, key: &str) -> Result<Option<usize>, JsError> {
    match get(options, key) {
        v if v.is_undefined() || v.is_null() => Ok(None),
        v => match v.as_f64() {
            Some(n) if (1.0..=1024.0).contains(&n) && n.fract() == 0.0 => Ok(Some(n as usize)),
            _ => Err(js_error(format!(
                "option `{key}` must be an integer from 1 to 1024"
            ))),
        },
    }
}

/// Listeners by event type.
#[derive(Default)]
struct Listeners {
    next: Cell<u32>,
    by_type: RefCell<HashMap<String, Vec<(u32, Function)>>>,
}

const EVENT_TYPES: &[&str] = &[
    "status",
    "state",
    "taskstart",
    "taskend",
    "throughput",
    "log",
];

impl Listeners {
    fn add(&self, kind: &str, listener: Function) -> u32 {
        let key = self.next.get() + 1;
        self.next.set(key);
        self.by_type
            .borrow_mut()
            .entry(kind.to_owned())
            .or_default()
            .push((key, listener));
        key
    }

    fn remove(&self, kind: &str, key: u32) {
        if let Some(list) = self.by_type.borrow_mut().get_mut(kind) {
            list.retain(|(k, _)| *k != key);
        }
    }

    fn wants(&self, kind: &str) -> bool {
        self.by_type
            .borrow()
            .get(kind)
            .is_some_and(|list| !list.is_empty())
    }

    /// Calls every listener of `kind`; a listener that throws is logged, not propagated.
    fn emit(&self, kind: &str, detail: &JsValue) {
        let list: Vec<Function> = match self.by_type.borrow().get(kind) {
            Some(list) => list.iter().map(|(_, f)| f.clone()).collect(),
            None => return,
        };
        for listener in list {
            if let Err(e) = listener.call1(&JsValue::NULL, detail) {
                web_sys::console::error_2(&format!("wasimoff: a {kind} listener threw").into(), &e);
            }
        }
    }
}

fn state_name(state: &ConnectionState) -> (&'static str, Option<String>) {
    match state {
        ConnectionState::Idle => ("idle", None),
        ConnectionState::Connecting => ("connecting", None),
        ConnectionState::Connected => ("connected", None),
        ConnectionState::Disconnected { reason } => ("disconnected", Some(reason.clone())),
        ConnectionState::Stopped => ("stopped", None),
        _ => ("unknown", None),
    }
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("runtime", &self.runtime)
            .field("pool", &self.pool)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

/// A provider in this page: see docs/browser-api.md.
#[wasm_bindgen]
pub struct Provider {
    runtime: wasimoff_provider::runtime::Provider,
    pool: WorkerPool,
    listeners: Rc<Listeners>,
    storage: &'static str,
    stop: CancellationToken,
    log_sink: u64,
}

#[wasm_bindgen]
impl Provider {
    /// Starts contributing to the broker at `brokerUrl` (its HTTP origin, e.g.
    /// `http://localhost:4080`). Options: `workers`, `prefetch` (tasks accepted beyond the
    /// workers, waiting for one; default one per worker), `name`, `token`, `storage`
    /// (`"auto"` | `"memory"`), `logLevel`, `glueUrl` (where workers import the package from).
    pub async fn connect(
        #[wasm_bindgen(js_name = brokerUrl)] broker_url: String,
        options: Option<types::ProviderOptions>,
    ) -> Result<Provider, JsError> {
        logging::init();
        let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
        if let Some(level) = get_string(&options, "logLevel") {
            logging::set_level(&level).map_err(js_error)?;
        }
        let workers = count_option(&options, "workers")?.unwrap_or_else(hardware_concurrency);
        let prefetch = match get(&options, "prefetch") {
            v if v.is_undefined() || v.is_null() => None,
            v => match v.as_f64() {
                Some(n) if (0.0..=1024.0).contains(&n) && n.fract() == 0.0 => Some(n as usize),
                _ => {
                    return Err(js_error(
                        "option `prefetch` must be an integer from 0 to 1024",
                    ));
                }
            },
        };
        let mut config = ProviderConfig::new(broker_url);
        if let Some(name) = get_string(&options, "name") {
            config.name = name;
        }
        config.token = get_string(&options, "token");
        // The runtime offers the pool's workers plus `prefetch` slots (default: one per
        // worker): a waiting task hides the round trip to the broker between two tasks.
        config.prefetch = prefetch;
        config.user_agent = get_string(&get(&js_sys::global(), "navigator"), "userAgent")
            .unwrap_or_else(|| config.user_agent.clone());
        let store_options = BrowserStoreOptions {
            force_memory: get_string(&options, "storage").as_deref() == Some("memory"),
            ..BrowserStoreOptions::default()
        };
        let store = BrowserStore::open(store_options).await;
        let storage = store.backend();
        let pool = WorkerPool::new(PoolConfig {
            workers,
            glue_url: get_string(&options, "glueUrl"),
            ..PoolConfig::default()
        });
        #[allow(clippy::arc_with_non_send_sync, reason = "single-threaded on wasm32")]
        let store: Arc<dyn Store> = Arc::new(store);
        #[allow(clippy::arc_with_non_send_sync, reason = "single-threaded on wasm32")]
        let executor: Arc<dyn wasimoff_core::executor::Executor> = Arc::new(pool.clone());
        let runtime = wasimoff_provider::runtime::Provider::builder(config, executor)
            .connector(WebSysConnector)
            .store(store)
            .build()
            .map_err(js_error)?;
        let listeners = Rc::new(Listeners::default());
        let log_sink = {
            let listeners = Rc::downgrade(&listeners);
            logging::add_sink(Box::new(move |level, text| {
                if let Some(listeners) = listeners.upgrade()
                    && listeners.wants("log")
                {
                    let detail = Object::new();
                    set(&detail, "level", level);
                    set(&detail, "message", text);
                    set(&detail, "time", js_sys::Date::now());
                    listeners.emit("log", &detail);
                }
            }))
        };
        let provider = Provider {
            runtime,
            pool,
            listeners,
            storage,
            stop: CancellationToken::new(),
            log_sink,
        };
        provider.spawn_loops();
        let runner = provider.runtime.clone();
        platform::spawn(async move {
            if let Err(e) = runner.run().await {
                tracing::error!("the provider stopped: {e}");
            }
        });
        tracing::info!(
            "providing to {} with {workers} workers ({storage} file cache)",
            provider.runtime.url()
        );
        Ok(provider)
    }

    /// The background loops that turn the runtime's status and task events into JS events.
    fn spawn_loops(&self) {
        // Status and state, at most every 100 ms.
        let (mut status, listeners, stop) = (
            self.runtime.watch(),
            self.listeners.clone(),
            self.stop.clone(),
        );
        let extra = self.extra();
        platform::spawn(async move {
            let mut last_state = None;
            loop {
                let snapshot = status.borrow_and_update().clone();
                let (state, reason) = state_name(&snapshot.state);
                if last_state != Some(state) {
                    last_state = Some(state);
                    let detail = Object::new();
                    set(&detail, "state", state);
                    if let Some(reason) = &reason {
                        set(&detail, "reason", reason.as_str());
                    }
                    listeners.emit("state", &detail);
                }
                if listeners.wants("status") {
                    listeners.emit("status", &status_object(&snapshot, &extra()));
                }
                futures::select! {
                    changed = futures::FutureExt::fuse(status.changed()) => if changed.is_err() { break },
                    () = futures::FutureExt::fuse(stop.cancelled()) => break,
                }
                futures::select! {
                    () = futures::FutureExt::fuse(platform::sleep(Duration::from_millis(100))) => {}
                    () = futures::FutureExt::fuse(stop.cancelled()) => {}
                }
            }
        });
        // Task start and end.
        let (mut events, listeners, stop) = (
            self.runtime.task_events(),
            self.listeners.clone(),
            self.stop.clone(),
        );
        platform::spawn(async move {
            loop {
                let event = futures::select! {
                    event = futures::FutureExt::fuse(events.recv()) => event,
                    () = futures::FutureExt::fuse(stop.cancelled()) => break,
                };
                match event {
                    // No JS objects for events nobody listens to (two per task).
                    Ok(TaskEvent::Started { .. }) if !listeners.wants("taskstart") => {}
                    Ok(TaskEvent::Finished { .. }) if !listeners.wants("taskend") => {}
                    Ok(TaskEvent::Started { id, args }) => {
                        let detail = Object::new();
                        set(&detail, "id", id);
                        set(&detail, "args", jsmsg::strings_to_js(&args));
                        listeners.emit("taskstart", &detail);
                    }
                    Ok(TaskEvent::Finished {
                        id,
                        status,
                        error,
                        elapsed,
                    }) => {
                        let detail = Object::new();
                        set(&detail, "id", id);
                        set(&detail, "ok", error.is_none());
                        if let Some(status) = status {
                            set(&detail, "status", status);
                        }
                        if let Some(error) = error {
                            set(&detail, "error", error);
                        }
                        set(&detail, "ms", elapsed.as_secs_f64() * 1000.0);
                        listeners.emit("taskend", &detail);
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::debug!("the page missed {n} task events");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        // Throughput: own tasks/s over the last 5 s, every second.
        let (runtime, listeners, stop) = (
            self.runtime.clone(),
            self.listeners.clone(),
            self.stop.clone(),
        );
        platform::spawn(async move {
            let mut window: VecDeque<(Instant, u64)> = VecDeque::new();
            loop {
                futures::select! {
                    () = futures::FutureExt::fuse(platform::sleep(Duration::from_secs(1))) => {}
                    () = futures::FutureExt::fuse(stop.cancelled()) => break,
                }
                let status = runtime.status();
                let now = Instant::now();
                window.push_back((now, status.tasks_finished));
                while window.len() > 6 {
                    window.pop_front();
                }
                let Some(&(then, before)) = window.front() else {
                    continue;
                };
                let seconds = now.duration_since(then).as_secs_f64();
                let rate = if seconds > 0.0 {
                    (status.tasks_finished - before) as f64 / seconds
                } else {
                    0.0
                };
                let detail = Object::new();
                set(&detail, "tasksPerSecond", rate);
                if let Some(cluster) = status.cluster_throughput {
                    set(&detail, "clusterTasksPerSecond", f64::from(cluster));
                }
                listeners.emit("throughput", &detail);
            }
        });
    }

    /// What the status object adds to the runtime's status: pool size, storage, isolation.
    fn extra(&self) -> impl Fn() -> Extra + 'static {
        let pool = self.pool.clone();
        let storage = self.storage;
        move || Extra {
            workers: pool.size(),
            killed: pool.stats().killed,
            executing: pool.stats().executing,
            storage,
            isolated: cross_origin_isolated(),
        }
    }

    /// Sets the number of workers (tasks run at once); the broker hears of it at once.
    #[wasm_bindgen(js_name = setWorkers)]
    pub fn set_workers(&self, workers: u32) -> Result<(), JsError> {
        if !(1..=1024).contains(&workers) {
            return Err(js_error("workers must be from 1 to 1024"));
        }
        let workers = workers as usize;
        self.pool.resize(workers);
        self.runtime.set_workers(workers);
        Ok(())
    }

    /// The number of workers.
    #[wasm_bindgen(getter)]
    pub fn workers(&self) -> u32 {
        u32::try_from(self.pool.size()).unwrap_or(u32::MAX)
    }

    /// The worker pool's counters (as `Executor.stats()`).
    #[wasm_bindgen(js_name = poolStats, unchecked_return_type = "PoolStats")]
    pub fn pool_stats(&self) -> JsValue {
        pool_stats(&self.pool)
    }

    /// A snapshot of the provider's state (see docs/browser-api.md for the fields).
    #[wasm_bindgen(unchecked_return_type = "ProviderStatus")]
    pub fn status(&self) -> JsValue {
        status_object(&self.runtime.status(), &(self.extra())()).into()
    }

    /// Calls `listener(detail)` on every event of `type` (`status`, `state`, `taskstart`,
    /// `taskend`, `throughput`, `log`); returns a function that removes the listener. Its
    /// TypeScript overloads, one per event type, are in `types.rs`.
    #[wasm_bindgen(skip_typescript)]
    pub fn on(&self, r#type: String, listener: Function) -> Result<Function, JsError> {
        if !EVENT_TYPES.contains(&r#type.as_str()) {
            return Err(js_error(format!(
                "unknown event type {type:?}; known: {}",
                EVENT_TYPES.join(", ")
            )));
        }
        let key = self.listeners.add(&r#type, listener);
        let listeners = Rc::downgrade(&self.listeners);
        let off = Closure::<dyn FnMut()>::new(move || {
            if let Some(listeners) = listeners.upgrade() {
                listeners.remove(&r#type, key);
            }
        });
        Ok(off.into_js_value().unchecked_into())
    }

    /// Stops taking tasks, lets running ones finish (up to `graceMs`, default 30 s), cancels
    /// the rest and disconnects. Resolves when the provider has stopped.
    pub async fn disconnect(&self, #[wasm_bindgen(js_name = graceMs)] grace_ms: Option<f64>) {
        let grace = grace_ms
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map_or(self.runtime.config().drain_grace, |ms| {
                Duration::from_secs_f64(ms / 1000.0)
            });
        self.runtime.shutdown(grace).await;
        let status = self.runtime.status();
        self.listeners
            .emit("status", &status_object(&status, &(self.extra())()));
        let detail = Object::new();
        set(&detail, "state", "stopped");
        self.listeners.emit("state", &detail);
        self.stop.cancel();
        self.pool.close();
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop.cancel();
        logging::remove_sink(self.log_sink);
    }
}

struct Extra {
    workers: usize,
    killed: u64,
    executing: usize,
    storage: &'static str,
    isolated: bool,
}

fn status_object(status: &ProviderStatus, extra: &Extra) -> Object {
    let object = Object::new();
    let (state, reason) = state_name(&status.state);
    set(&object, "state", state);
    if let Some(reason) = reason {
        set(&object, "reason", reason);
    }
    set(&object, "workers", extra.workers as f64);
    set(&object, "busy", status.busy as f64);
    set(&object, "draining", status.draining);
    set(&object, "tasksStarted", status.tasks_started as f64);
    set(&object, "tasksFinished", status.tasks_finished as f64);
    set(&object, "tasksFailed", status.tasks_failed as f64);
    set(&object, "tasksRefused", status.tasks_refused as f64);
    set(&object, "connections", status.connections as f64);
    set(&object, "filesFetched", status.files_fetched as f64);
    if let Some(n) = status.cluster_providers {
        set(&object, "clusterProviders", n);
    }
    set(&object, "workersKilled", extra.killed as f64);
    set(&object, "workersExecuting", extra.executing as f64);
    set(&object, "storage", extra.storage);
    set(&object, "crossOriginIsolated", extra.isolated);
    object
}

/// Whether a provider or worker cut stdout / stderr at its output cap.
#[derive(Clone, Copy, Debug)]
struct Cut {
    stdout: bool,
    stderr: bool,
}

/// Builds the result object shared by `Client.submit` and `Executor.run`.
fn output_object(
    status: Option<i32>,
    stdout: &[u8],
    stderr: &[u8],
    cut: Cut,
    artifacts: Option<&[u8]>,
) -> Object {
    let object = Object::new();
    if let Some(status) = status {
        set(&object, "status", status);
    }
    set(&object, "stdout", jsmsg::bytes_to_js(stdout));
    set(&object, "stderr", jsmsg::bytes_to_js(stderr));
    set(&object, "stdoutTruncated", cut.stdout);
    set(&object, "stderrTruncated", cut.stderr);
    set(
        &object,
        "stdoutText",
        String::from_utf8_lossy(stdout).into_owned(),
    );
    set(
        &object,
        "stderrText",
        String::from_utf8_lossy(stderr).into_owned(),
    );
    if let Some(zip) = artifacts {
        set(&object, "artifacts", jsmsg::bytes_to_js(zip));
    }
    object
}

/// A timeout option in milliseconds.
fn timeout_option(task: &JsValue) -> Result<Option<Duration>, JsError> {
    match get(task, "timeoutMs") {
        v if v.is_undefined() || v.is_null() => Ok(None),
        v => match v.as_f64() {
            Some(ms) if ms.is_finite() && ms > 0.0 => {
                Ok(Some(Duration::from_secs_f64(ms / 1000.0)))
            }
            _ => Err(js_error("`timeoutMs` must be a positive number")),
        },
    }
}

/// Offloads tasks to a broker from the page (Connect RPC over `fetch`).
#[wasm_bindgen]
#[derive(Debug)]
pub struct Client {
    client: wasimoff_client::Client,
}

#[wasm_bindgen]
impl Client {
    /// A client of the broker at `brokerUrl`; option: `token`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(js_name = brokerUrl)] broker_url: String,
        options: Option<types::ClientOptions>,
    ) -> Result<Client, JsError> {
        let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
        let mut builder = wasimoff_client::Client::builder(broker_url);
        if let Some(token) = get_string(&options, "token") {
            builder = builder.token(token);
        }
        Ok(Client {
            client: builder.build().map_err(js_error)?,
        })
    }

    /// Uploads a file (a `Uint8Array`), optionally under an alias; resolves to its ref.
    pub async fn upload(
        &self,
        bytes: Uint8Array,
        alias: Option<String>,
    ) -> Result<String, JsValue> {
        let r = self
            .client
            .upload(bytes.to_vec(), alias.as_deref())
            .await
            .map_err(client_error)?;
        Ok(r.to_string())
    }

    /// Runs a task on the cluster and resolves to its output (see docs/browser-api.md).
    /// Rejects with a `WasimoffError` (`code`, and `kind`, `stdout`, `stderr`
    /// for a failed task).
    #[wasm_bindgen(unchecked_return_type = "TaskResult")]
    pub async fn submit(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ClientTask")] task: Object,
    ) -> Result<JsValue, JsValue> {
        let task: JsValue = task.into();
        let binary = get(&task, "binary");
        let source = match (binary.as_string(), jsmsg::js_bytes(&binary)) {
            (Some(name), _) => wasimoff_client::Source::Ref(name),
            (None, Some(bytes)) => wasimoff_client::Source::Inline(bytes.into()),
            (None, None) => {
                return Err(js_error("`binary` must be a ref, an alias or a Uint8Array").into());
            }
        };
        // `args` is the whole argv, program name first, as for `Executor.run`.
        let mut argv = get_strings(&task, "args").map_err(js_error)?.into_iter();
        let mut t = wasimoff_client::Task::wasip1(source);
        if let Some(argv0) = argv.next() {
            t = t.argv0(argv0);
        }
        let mut t = t
            .args(argv)
            .envs(get_strings(&task, "envs").map_err(js_error)?)
            .artifacts(get_strings(&task, "artifacts").map_err(js_error)?);
        if let Some(stdin) = jsmsg::get_bytes(&task, "stdin") {
            t = t.stdin(stdin);
        }
        let rootfs = get(&task, "rootfs");
        if let Some(name) = rootfs.as_string() {
            t = t.rootfs(name);
        } else if let Some(bytes) = jsmsg::js_bytes(&rootfs) {
            t = t.rootfs(wasimoff_client::Source::Inline(bytes.into()));
        }
        if let Some(timeout) = timeout_option(&task)? {
            t = t.timeout(timeout);
        }
        let output = self.client.run(t).await.map_err(client_error)?;
        let object = output_object(
            Some(output.status),
            &output.stdout,
            &output.stderr,
            Cut {
                stdout: output.stdout_truncated,
                stderr: output.stderr_truncated,
            },
            output.artifacts.as_deref(),
        );
        if let Some(id) = output.id {
            set(&object, "id", id);
        }
        Ok(object.into())
    }
}

/// Runs guests in this page's worker pool, without a broker.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Executor {
    pool: WorkerPool,
    running: Rc<RefCell<HashMap<String, CancellationToken>>>,
    next: Cell<u64>,
}

#[wasm_bindgen]
impl Executor {
    /// An executor with `workers` dedicated workers (default 1); option `glueUrl` as for
    /// `Provider.connect`.
    #[wasm_bindgen(constructor)]
    pub fn new(options: Option<types::ExecutorOptions>) -> Result<Executor, JsError> {
        logging::init();
        let options: JsValue = options.map(Into::into).unwrap_or(JsValue::UNDEFINED);
        let workers = count_option(&options, "workers")?.unwrap_or(1);
        Ok(Executor {
            pool: WorkerPool::new(PoolConfig {
                workers,
                glue_url: get_string(&options, "glueUrl"),
                ..PoolConfig::default()
            }),
            running: Rc::default(),
            next: Cell::new(0),
        })
    }

    /// Runs one task: `{ binary: Uint8Array, args, envs, stdin, rootfs?, artifacts, timeoutMs,
    /// id? }`. Resolves to `{ status?, error?, stdout, stderr, stdoutTruncated, stderrTruncated,
    /// stdoutText, stderrText, artifacts?, ms }`; rejects if the task could not run at all (bad
    /// module, bad rootfs).
    #[wasm_bindgen(unchecked_return_type = "ExecutorResult")]
    pub async fn run(
        &self,
        #[wasm_bindgen(unchecked_param_type = "ExecutorTask")] task: Object,
    ) -> Result<JsValue, JsError> {
        let task: JsValue = task.into();
        let binary = jsmsg::get_bytes(&task, "binary")
            .ok_or_else(|| js_error("`binary` must be a Uint8Array with the module"))?;
        let id = get_string(&task, "id").unwrap_or_else(|| {
            self.next.set(self.next.get() + 1);
            format!("local-{}", self.next.get())
        });
        let mut exec = ExecTask::new(
            id.clone(),
            ResolvedFile::from_bytes(binary),
            get_strings(&task, "args").map_err(js_error)?,
        );
        exec.envs = get_strings(&task, "envs").map_err(js_error)?;
        exec.stdin = jsmsg::get_bytes(&task, "stdin").unwrap_or_default().into();
        exec.rootfs = jsmsg::get_bytes(&task, "rootfs").map(ResolvedFile::from_bytes);
        exec.artifacts = get_strings(&task, "artifacts").map_err(js_error)?;
        exec.limits = ExecLimits {
            timeout: timeout_option(&task)?,
            ..ExecLimits::default()
        };
        let token = CancellationToken::new();
        self.running.borrow_mut().insert(id.clone(), token.clone());
        let started = Instant::now();
        let result = self.pool.execute(exec, token).await;
        self.running.borrow_mut().remove(&id);
        let output = result.map_err(js_error)?;
        // Core's wording, as the providers write it into `result.error`.
        let (status, error) = match &output.termination {
            Termination::Exited(status) => (Some(*status), None),
            other => (None, Some(other.to_string())),
        };
        let object = output_object(
            status,
            &output.stdout,
            &output.stderr,
            Cut {
                stdout: output.stdout_truncated,
                stderr: output.stderr_truncated,
            },
            output.artifacts.as_deref(),
        );
        if let Some(error) = error {
            set(&object, "error", error);
        }
        set(&object, "id", id);
        set(&object, "ms", started.elapsed().as_secs_f64() * 1000.0);
        Ok(object.into())
    }

    /// Cancels a running task by id (its worker is terminated); `false` if none runs.
    pub fn cancel(&self, id: String) -> bool {
        match self.running.borrow().get(&id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Sets the number of workers.
    #[wasm_bindgen(js_name = setWorkers)]
    pub fn set_workers(&self, workers: u32) {
        self.pool.resize(workers.max(1) as usize);
    }

    /// The pool's counters: `{ size, running, executing, idle, spawned, killed, answered,
    /// workerMs, roundTripMs }`.
    #[wasm_bindgen(unchecked_return_type = "PoolStats")]
    pub fn stats(&self) -> JsValue {
        pool_stats(&self.pool)
    }
}

/// A pool's counters as a JS object.
fn pool_stats(pool: &WorkerPool) -> JsValue {
    let stats = pool.stats();
    let object = Object::new();
    set(&object, "size", stats.size as f64);
    set(&object, "running", stats.running as f64);
    set(&object, "executing", stats.executing as f64);
    set(&object, "idle", stats.idle as f64);
    set(&object, "spawned", stats.spawned as f64);
    set(&object, "killed", stats.killed as f64);
    set(&object, "answered", stats.answered as f64);
    set(&object, "workerMs", stats.worker_ms);
    set(&object, "roundTripMs", stats.round_trip_ms);
    let parts = Object::new();
    let p = &stats.parts;
    for (key, value) in [
        ("postMs", p.post_ms),
        ("toWorkerMs", p.to_worker_ms),
        ("decodeMs", p.decode_ms),
        ("instantiateMs", p.instantiate_ms),
        ("runMs", p.run_ms),
        ("collectMs", p.collect_ms),
        ("toPageMs", p.to_page_ms),
        ("answerMs", p.answer_ms),
    ] {
        set(&parts, key, value);
    }
    set(&object, "parts", parts);
    object.into()
}

/// The most `unzipFiles` unpacks: 1 GiB, a quarter of a page's wasm32 address space.
const UNZIP_MAX_BYTES: u64 = 1 << 30;

/// Packs files into a zip archive (stored, not compressed): the `rootfs` of a task, e.g. a
/// file the visitor picked. Keys are paths inside the archive (`"input.mp4"`, `"dir/a.txt"`);
/// values are `Uint8Array`s, `ArrayBuffer`s or strings (UTF-8). Throws on a path that leaves
/// the root (`..`) or appears twice.
#[wasm_bindgen(js_name = zipFiles)]
pub fn zip_files(
    #[wasm_bindgen(unchecked_param_type = "Record<string, Uint8Array | ArrayBuffer | string>")]
    files: JsValue,
) -> Result<Uint8Array, JsError> {
    let object = files
        .dyn_into::<Object>()
        .map_err(|_| js_error("zipFiles takes an object of paths to contents"))?;
    let mut entries = Vec::new();
    for entry in Object::entries(&object) {
        let entry = js_sys::Array::from(&entry);
        let path = entry.get(0).as_string().unwrap_or_default();
        let bytes = jsmsg::js_bytes(&entry.get(1)).ok_or_else(|| {
            js_error(format!(
                "zipFiles: {path:?} is not a Uint8Array, an ArrayBuffer or a string"
            ))
        })?;
        entries.push((path, bytes));
    }
    let zip = wasimoff_web::archive::pack(
        entries
            .iter()
            .map(|(path, bytes)| (path.as_str(), bytes.as_slice())),
    )
    .map_err(|e| js_error(format!("zipFiles: {e}")))?;
    Ok(jsmsg::bytes_to_js(&zip))
}

/// The files of a zip archive, e.g. a result's `artifacts`: an object of paths (without a
/// leading `/`) to contents. Throws on an unreadable archive, a path that leaves the root, or
/// more than 1 GiB of contents.
#[wasm_bindgen(js_name = unzipFiles, unchecked_return_type = "Record<string, Uint8Array>")]
pub fn unzip_files(
    #[wasm_bindgen(unchecked_param_type = "Uint8Array | ArrayBuffer")] zip: JsValue,
) -> Result<JsValue, JsError> {
    let bytes = jsmsg::js_bytes(&zip)
        .filter(|_| zip.as_string().is_none())
        .ok_or_else(|| js_error("unzipFiles takes a Uint8Array or an ArrayBuffer"))?;
    let files = wasimoff_web::archive::unpack(&bytes, UNZIP_MAX_BYTES)
        .map_err(|e| js_error(format!("unzipFiles: {e}")))?;
    let object = Object::new();
    for (path, contents) in files {
        // Not `set`: it interns its keys, and these are the archive's.
        let _ = js_sys::Reflect::set(
            &object,
            &JsValue::from_str(&path),
            &jsmsg::bytes_to_js(&contents),
        );
    }
    Ok(object.into())
}

//! [`WorkerPool`]: core's [`Executor`] over a pool of dedicated Web Workers, each running a
//! [`BrowserExecutor`](crate::executor::BrowserExecutor) (see [`crate::worker`]).
//!
//! Under Node.js (`process.versions.node` is set, and there is no Web `Worker`) the workers are `node:worker_threads`
//! `Worker`s started from a `data:` URL module that imports the package by its file URL; a
//! small JS wrapper gives them the Web Worker interface the pool uses ([`WorkerHandle`]), so
//! everything below holds there too.
//!
//! - Up to `size` tasks run at once, one per worker; more wait for a free worker. The size can
//!   change at any time ([`WorkerPool::resize`]); idle workers beyond it are terminated.
//! - Each guest is compiled once on the page (`WebAssembly.compile`, cached by ref) and the
//!   compiled module is posted to the worker: structured cloning shares the compiled code, so
//!   workers neither receive nor compile the bytes again.
//! - Cancellation and deadlines terminate the worker (`worker.terminate()` stops even a guest
//!   spinning without system calls) and a fresh one takes its place on demand. The worker stops
//!   a guest that makes system calls at its deadline by itself, with its output; the page kills
//!   it `kill_grace` later if it did not answer.
//! - A worker that crashes or fails to start is dropped and reported as a host error; the next
//!   task gets a new worker.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use js_sys::{Object, WebAssembly};
use tokio::sync::Notify;
use wasimoff_core::executor::{
    CancellationToken, ExecError, ExecOutput, ExecTask, Executor, Termination,
};
use wasimoff_core::platform;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

use crate::executor::{self, cancelled};
use crate::host::{self, OutputMirror};
use crate::jsmsg;
use crate::watchdog::Watchdog;

/// Bytes of stdout and of stderr a worker's output mirror keeps for a guest terminated at its
/// deadline.
const MIRROR_CAPACITY: u32 = 1 << 20;

#[wasm_bindgen(inline_js = r#"
let bootstraps = new Map();
// Node.js: worker_threads instead of Web Workers. Browsers have no `process`; runtimes that
// mimic Node but have Web Workers (Deno, Bun) keep using those.
const isNode = typeof globalThis.process?.versions?.node === "string" &&
  typeof globalThis.Worker !== "function";
let nodeThreads;
// The package's main module, seen from this snippet (snippets/<crate>/inline0.js).
export function default_glue_url() {
  return new URL("../../wasimoff.js", import.meta.url).href;
}
// A module worker that imports the package from `glue`, initialises it with the module the
// page sends, and starts the task loop (workerMain). In Node.js: a promise of a NodeWorker.
export function spawn_worker(glue) {
  if (isNode) return spawn_node_worker(glue);
  let url = bootstraps.get(glue);
  if (url === undefined) {
    const source = `import init, { workerMain } from ${JSON.stringify(glue)};
addEventListener("message", async (event) => {
  try {
    await init({ module_or_path: event.data.module });
    workerMain();
    postMessage({ kind: "ready" });
  } catch (error) {
    postMessage({ kind: "fatal", message: String(error && error.stack || error) });
  }
}, { once: true });`;
    url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
    bootstraps.set(glue, url);
  }
  return new Worker(url, { type: "module", name: "wasimoff-worker" });
}
// The same bootstrap on a node:worker_threads Worker (an ES module from a data: URL, which may
// import absolute file: URLs); workerMain talks through `parentPort`.
async function spawn_node_worker(glue) {
  nodeThreads ??= import(/* webpackIgnore: true */ /* @vite-ignore */ "node:worker_threads");
  const { Worker } = await nodeThreads;
  let url = bootstraps.get(glue);
  if (url === undefined) {
    const source = `import { parentPort } from "node:worker_threads";
import init, { workerMain } from ${JSON.stringify(glue)};
parentPort.once("message", async (data) => {
  try {
    await init({ module_or_path: data.module });
    workerMain(parentPort);
    parentPort.postMessage({ kind: "ready" });
  } catch (error) {
    parentPort.postMessage({ kind: "fatal", message: String(error && error.stack || error) });
  }
});`;
    url = new URL("data:text/javascript," + encodeURIComponent(source));
    bootstraps.set(glue, url);
  }
  return new NodeWorker(new Worker(url, { name: "wasimoff-worker" }));
}
// A worker_threads Worker behind the Web Worker interface the pool uses: postMessage(message,
// transfer), onmessage/onerror handlers called with `{ data }` / `{ message }`, terminate().
class NodeWorker {
  constructor(worker) {
    this.worker = worker;
    this.onmessage = null;
    this.onerror = null;
    this.terminated = false;
    const fail = (message) => {
      if (!this.terminated && typeof this.onerror === "function") this.onerror({ message });
    };
    worker.on("message", (data) => {
      if (typeof this.onmessage === "function") this.onmessage({ data });
    });
    worker.on("messageerror", (error) => fail(`cannot read a message of the worker: ${error}`));
    worker.on("error", (error) => fail(String(error && error.stack || error)));
    worker.on("exit", (code) => fail(`the worker exited with code ${code}`));
  }
  postMessage(message, transfer) {
    this.worker.postMessage(message, transfer);
  }
  terminate() {
    this.terminated = true;
    this.worker.terminate().catch(() => {});
  }
}
"#)]
extern "C" {
    fn default_glue_url() -> String;
    /// A `Worker`, or (Node.js) a promise of a `NodeWorker`.
    #[wasm_bindgen(catch)]
    fn spawn_worker(glue: &str) -> Result<JsValue, JsValue>;
}

#[wasm_bindgen]
extern "C" {
    /// What the pool uses of a worker: a browser `Worker`, or the snippet's `NodeWorker` around
    /// a `node:worker_threads` `Worker` (all members are looked up by name).
    #[derive(Debug)]
    type WorkerHandle;
    #[wasm_bindgen(method, catch, js_name = postMessage)]
    fn post_message(this: &WorkerHandle, message: &JsValue) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch, js_name = postMessage)]
    fn post_message_with_transfer(
        this: &WorkerHandle,
        message: &JsValue,
        transfer: &JsValue,
    ) -> Result<(), JsValue>;
    #[wasm_bindgen(method, setter)]
    fn set_onmessage(this: &WorkerHandle, handler: Option<&js_sys::Function>);
    #[wasm_bindgen(method, setter)]
    fn set_onerror(this: &WorkerHandle, handler: Option<&js_sys::Function>);
    #[wasm_bindgen(method)]
    fn terminate(this: &WorkerHandle);
}

/// Starts a worker: the browser's synchronously, Node's once `node:worker_threads` is loaded.
async fn new_worker(glue: &str) -> Result<WorkerHandle, JsValue> {
    let worker = spawn_worker(glue)?;
    let worker = match worker.dyn_into::<js_sys::Promise>() {
        Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise).await?,
        Err(worker) => worker,
    };
    Ok(worker.unchecked_into())
}

/// Settings of a [`WorkerPool`].
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// Tasks run at once (workers kept).
    pub workers: usize,
    /// The URL of the package's main module (`wasimoff.js`) that workers import; `None`: next
    /// to this package's snippets, where wasm-pack puts it.
    pub glue_url: Option<String>,
    /// Deadline of tasks that set none.
    pub default_timeout: Duration,
    /// How long past a deadline a worker may take to answer before it is terminated.
    pub kill_grace: Duration,
    /// Compiled guest modules kept (by ref).
    pub module_cache: usize,
    /// Memory a guest may grow to when its task sets no `max_memory`.
    pub default_max_memory: Option<u64>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            workers: 1,
            glue_url: None,
            default_timeout: wasimoff_core::executor::DEFAULT_TIMEOUT,
            kill_grace: Duration::from_millis(500),
            module_cache: 32,
            default_max_memory: Some(wasimoff_core::executor::DEFAULT_MAX_MEMORY),
        }
    }
}

/// Counters of a pool, for status pages and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolStats {
    /// The configured size.
    pub size: usize,
    /// Tasks running now.
    pub running: usize,
    /// Tasks handed to a worker and not yet answered.
    pub executing: usize,
    /// Started workers waiting for a task.
    pub idle: usize,
    /// Workers started so far.
    pub spawned: u64,
    /// Workers terminated for a cancel or a deadline.
    pub killed: u64,
    /// Milliseconds the workers spent on the tasks they answered (as they measured it).
    pub worker_ms: f64,
    /// Milliseconds from posting those tasks to their answers (the workers' time plus the
    /// message round trips).
    pub round_trip_ms: f64,
    /// Tasks answered by a worker.
    pub answered: u64,
    /// Where the time of the answered tasks went, summed over them.
    pub parts: TaskParts,
}

/// Milliseconds spent in each part of a task's trip through the pool, summed over the
/// answered tasks (divide by [`PoolStats::answered`] for the mean). The clocks of the page and
/// of the workers are compared through `performance.timeOrigin`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TaskParts {
    /// The page encodes the task and posts it to the worker.
    pub post_ms: f64,
    /// From the post to the worker's message handler (structured clone, the worker's queue).
    pub to_worker_ms: f64,
    /// The worker decodes the task.
    pub decode_ms: f64,
    /// `new WebAssembly.Instance`.
    pub instantiate_ms: f64,
    /// The guest runs (`_start`).
    pub run_ms: f64,
    /// The rest of the worker's time: the task's file system and context, the answer.
    pub collect_ms: f64,
    /// From the worker's post to the pool seeing the answer (the page's queue).
    pub to_page_ms: f64,
    /// The page decodes the answer.
    pub answer_ms: f64,
}

impl TaskParts {
    fn add(&mut self, other: &TaskParts) {
        self.post_ms += other.post_ms;
        self.to_worker_ms += other.to_worker_ms;
        self.decode_ms += other.decode_ms;
        self.instantiate_ms += other.instantiate_ms;
        self.run_ms += other.run_ms;
        self.collect_ms += other.collect_ms;
        self.to_page_ms += other.to_page_ms;
        self.answer_ms += other.answer_ms;
    }
}

/// A started worker and the channel its messages arrive on.
struct PoolWorker {
    worker: WorkerHandle,
    /// The module ids this worker holds (the same policy as the worker's own list).
    modules: Vec<(u64, ())>,
    /// Where the worker copies a running guest's output (where `SharedArrayBuffer` exists:
    /// cross-origin isolated pages, Node.js).
    mirror: Option<OutputMirror>,
    messages: mpsc::UnboundedReceiver<JsValue>,
    _on_message: Closure<dyn FnMut(JsValue)>,
    _on_error: Closure<dyn FnMut(JsValue)>,
}

impl Drop for PoolWorker {
    fn drop(&mut self) {
        self.worker.set_onmessage(None);
        self.worker.set_onerror(None);
        self.worker.terminate();
    }
}

struct Inner {
    config: PoolConfig,
    glue_url: String,
    size: Cell<usize>,
    running: Cell<usize>,
    executing: Cell<usize>,
    idle: RefCell<Vec<PoolWorker>>,
    starting: Cell<usize>,
    closed: Cell<bool>,
    changed: Notify,
    modules: RefCell<Vec<(executor::ModuleKey, u64, WebAssembly::Module)>>,
    next_module: Cell<u64>,
    seq: Cell<u32>,
    spawned: Cell<u64>,
    killed: Cell<u64>,
    worker_ms: Cell<f64>,
    round_trip_ms: Cell<f64>,
    answered: Cell<u64>,
    parts: Cell<TaskParts>,
    /// The kill deadlines of running tasks, on one timer.
    watchdog: Watchdog,
}

/// Runs tasks in a pool of dedicated workers. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct WorkerPool {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Counts a task as executing in a worker while it lives.
struct Executing(Rc<Inner>);

impl Executing {
    fn new(inner: &Rc<Inner>) -> Self {
        inner.executing.set(inner.executing.get() + 1);
        Executing(inner.clone())
    }
}

impl Drop for Executing {
    fn drop(&mut self) {
        self.0
            .executing
            .set(self.0.executing.get().saturating_sub(1));
    }
}

/// A taken execution slot; frees it (and wakes a waiter) when dropped.
struct Slot(Rc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.running.set(self.0.running.get().saturating_sub(1));
        self.0.changed.notify_waiters();
    }
}

impl WorkerPool {
    /// A pool; workers start in the background right away (call from a page or worker whose
    /// package was initialised with `init`).
    pub fn new(config: PoolConfig) -> Self {
        let glue_url = config.glue_url.clone().unwrap_or_else(default_glue_url);
        let pool = WorkerPool {
            inner: Rc::new(Inner {
                size: Cell::new(config.workers.max(1)),
                config,
                glue_url,
                running: Cell::new(0),
                executing: Cell::new(0),
                idle: RefCell::new(Vec::new()),
                starting: Cell::new(0),
                closed: Cell::new(false),
                changed: Notify::new(),
                modules: RefCell::new(Vec::new()),
                next_module: Cell::new(0),
                seq: Cell::new(0),
                spawned: Cell::new(0),
                killed: Cell::new(0),
                worker_ms: Cell::new(0.0),
                round_trip_ms: Cell::new(0.0),
                parts: Cell::new(TaskParts::default()),
                answered: Cell::new(0),
                watchdog: Watchdog::default(),
            }),
        };
        pool.warm();
        pool
    }

    /// The counters.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        PoolStats {
            size: inner.size.get(),
            running: inner.running.get(),
            executing: inner.executing.get(),
            idle: inner.idle.borrow().len(),
            spawned: inner.spawned.get(),
            killed: inner.killed.get(),
            worker_ms: inner.worker_ms.get(),
            round_trip_ms: inner.round_trip_ms.get(),
            parts: inner.parts.get(),
            answered: inner.answered.get(),
        }
    }

    /// The number of tasks that run at once.
    pub fn size(&self) -> usize {
        self.inner.size.get()
    }

    /// Changes the pool size (at least 1). Idle workers beyond it are terminated now; running
    /// tasks finish, and their workers are terminated afterwards.
    pub fn resize(&self, workers: usize) {
        let inner = &self.inner;
        inner.size.set(workers.max(1));
        inner.closed.set(false);
        let keep = inner.size.get().saturating_sub(inner.running.get());
        inner.idle.borrow_mut().truncate(keep);
        inner.changed.notify_waiters();
        self.warm();
    }

    /// Terminates the idle workers and keeps no more: tasks still running finish, then their
    /// workers end too. A later [`WorkerPool::resize`] opens the pool again.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.closed.set(true);
        inner.idle.borrow_mut().clear();
    }

    /// Starts workers in the background until `size` are running, idle or starting.
    fn warm(&self) {
        let inner = &self.inner;
        let have = inner.running.get() + inner.idle.borrow().len() + inner.starting.get();
        for _ in have..inner.size.get() {
            inner.starting.set(inner.starting.get() + 1);
            let pool = self.clone();
            platform::spawn(async move {
                let started = pool.start_worker().await;
                let inner = &pool.inner;
                inner.starting.set(inner.starting.get().saturating_sub(1));
                match started {
                    Ok(worker) => pool.give_back(worker, false),
                    Err(e) => tracing::warn!("cannot start a worker: {e}"),
                }
            });
        }
    }

    /// Waits for a free execution slot.
    async fn slot(&self) -> Slot {
        let inner = &self.inner;
        loop {
            let changed = inner.changed.notified();
            if inner.running.get() < inner.size.get() {
                inner.running.set(inner.running.get() + 1);
                return Slot(inner.clone());
            }
            changed.await;
        }
    }

    /// Starts a worker and waits until it is ready.
    async fn start_worker(&self) -> Result<PoolWorker, ExecError> {
        let inner = &self.inner;
        let worker = new_worker(&inner.glue_url).await.map_err(|e| {
            ExecError::Host(format!(
                "cannot start a worker: {}",
                crate::host::js_error_text(&e)
            ))
        })?;
        let (tx, messages) = mpsc::unbounded();
        let on_message = {
            let tx = tx.clone();
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                let _ = tx.unbounded_send(jsmsg::get(&event, "data"));
            })
        };
        let on_error = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
            let text = jsmsg::get_string(&event, "message")
                .unwrap_or_else(|| "the worker failed".to_owned());
            if let Some(event) = event.dyn_ref::<web_sys::Event>() {
                event.prevent_default();
            }
            let message = Object::new();
            jsmsg::set(&message, "kind", "crash");
            jsmsg::set(&message, "message", text);
            let _ = tx.unbounded_send(message.into());
        });
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let mut worker = PoolWorker {
            worker,
            modules: Vec::new(),
            mirror: OutputMirror::new(MIRROR_CAPACITY),
            messages,
            _on_message: on_message,
            _on_error: on_error,
        };
        let init = Object::new();
        jsmsg::set(&init, "kind", "init");
        jsmsg::set(&init, "module", wasm_bindgen::module());
        worker.worker.post_message(&init).map_err(|e| {
            ExecError::Host(format!(
                "cannot start a worker: {}",
                crate::host::js_error_text(&e)
            ))
        })?;
        let first = platform::timeout(Duration::from_secs(60), worker.messages.next())
            .await
            .map_err(|_| ExecError::Host("a worker did not start within 60 s".into()))?;
        inner.spawned.set(inner.spawned.get() + 1);
        match first {
            Some(m) if jsmsg::get_string(&m, "kind").as_deref() == Some("ready") => Ok(worker),
            Some(m) => Err(ExecError::Host(format!(
                "a worker failed to start: {}",
                jsmsg::get_string(&m, "message").unwrap_or_default()
            ))),
            None => Err(ExecError::Host("a worker failed to start".into())),
        }
    }

    /// An idle worker, or a new one.
    async fn take_worker(&self) -> Result<PoolWorker, ExecError> {
        let idle = self.inner.idle.borrow_mut().pop();
        match idle {
            Some(worker) => Ok(worker),
            None => self.start_worker().await,
        }
    }

    /// Keeps a worker for the next task unless the pool has shrunk below its workers.
    /// `from_task`: the worker comes back from a task whose slot is still held.
    fn give_back(&self, worker: PoolWorker, from_task: bool) {
        let inner = &self.inner;
        let mut idle = inner.idle.borrow_mut();
        let others = inner.running.get() - usize::from(from_task);
        if !inner.closed.get() && idle.len() + others < inner.size.get() {
            idle.push(worker);
        }
    }

    /// The compiled module of a task's binary and its id (compiled once, cached by ref and
    /// memory cap).
    async fn module(&self, task: &ExecTask) -> Result<(u64, WebAssembly::Module), ExecError> {
        let key = &(task.binary.r#ref.clone(), task.limits.max_memory);
        {
            let mut modules = self.inner.modules.borrow_mut();
            if let Some(index) = modules.iter().position(|(k, _, _)| k == key) {
                let entry = modules.remove(index);
                let found = (entry.1, entry.2.clone());
                modules.push(entry);
                return Ok(found);
            }
        }
        let module = executor::compile(&task.binary.bytes, task.limits.max_memory).await?;
        let mut modules = self.inner.modules.borrow_mut();
        if let Some((_, id, module)) = modules.iter().find(|(k, _, _)| k == key) {
            return Ok((*id, module.clone()));
        }
        if modules.len() >= self.inner.config.module_cache.max(1) {
            modules.remove(0);
        }
        let id = self.inner.next_module.get() + 1;
        self.inner.next_module.set(id);
        modules.push((key.clone(), id, module.clone()));
        Ok((id, module))
    }

    fn killed(&self, worker: PoolWorker) {
        drop(worker);
        self.inner.killed.set(self.inner.killed.get() + 1);
    }
}

/// The result of a task whose worker was terminated at its deadline: what the output mirror
/// holds, if there is one.
fn timed_out(timeout: Duration, mirror: Option<&OutputMirror>) -> ExecOutput {
    let (stdout, stderr, stdout_truncated, stderr_truncated) =
        mirror.map(OutputMirror::read).unwrap_or_default();
    ExecOutput {
        termination: Termination::TimedOut(timeout),
        stdout: Bytes::from(stdout),
        stderr: Bytes::from(stderr),
        stdout_truncated,
        stderr_truncated,
        artifacts: None,
        error: None,
    }
}

#[async_trait::async_trait(?Send)]
impl Executor for WorkerPool {
    async fn execute(
        &self,
        task: ExecTask,
        cancel: CancellationToken,
    ) -> Result<ExecOutput, ExecError> {
        if cancel.is_cancelled() {
            return Ok(cancelled());
        }
        if task.args.is_empty() {
            return Err(ExecError::InvalidTask("argv needs at least arg0".into()));
        }
        let _slot = futures::select! {
            slot = self.slot().fuse() => slot,
            () = cancel.cancelled().fuse() => return Ok(cancelled()),
        };
        let mut task = task;
        task.limits.max_memory = task
            .limits
            .max_memory
            .or(self.inner.config.default_max_memory);
        let (module_id, module) = self.module(&task).await?;
        let mut worker = futures::select! {
            worker = self.take_worker().fuse() => worker?,
            () = cancel.cancelled().fuse() => return Ok(cancelled()),
        };
        let seq = self.inner.seq.get().wrapping_add(1);
        self.inner.seq.set(seq);
        let timeout = task
            .limits
            .timeout
            .unwrap_or(self.inner.config.default_timeout);
        task.limits.timeout = Some(timeout);
        // The module goes along only if the worker does not hold it yet.
        let mut sent_module = false;
        jsmsg::touch_module(&mut worker.modules, module_id, || {
            sent_module = true;
            Some(())
        });
        let post = |worker: &PoolWorker, with_module: bool| {
            let module = with_module.then_some(&module);
            let (message, transfer) =
                jsmsg::encode_run(seq, module_id, module, &task, worker.mirror.as_ref());
            worker
                .worker
                .post_message_with_transfer(&message, &transfer)
                .map_err(|e| {
                    ExecError::Host(format!(
                        "cannot send a task to a worker: {}",
                        crate::host::js_error_text(&e)
                    ))
                })
        };
        let encoding = host::wall_ms();
        // Before the post: the worker may start on the task before `post` returns, and the
        // round trip includes the worker's time.
        let posted = platform::Instant::now();
        post(&worker, sent_module)?;
        let _executing = Executing::new(&self.inner);
        let posted_at = host::wall_ms();
        let kill_at = timeout.saturating_add(self.inner.config.kill_grace);
        let mut kill = self.inner.watchdog.at(platform::Instant::now() + kill_at);
        loop {
            let reply = futures::select! {
                reply = worker.messages.next() => reply,
                () = cancel.cancelled().fuse() => {
                    self.killed(worker);
                    return Ok(cancelled());
                }
                _ = (&mut kill.fired).fuse() => {
                    let output = timed_out(timeout, worker.mirror.as_ref());
                    self.killed(worker);
                    return Ok(output);
                }
            };
            let Some(reply) = reply else {
                return Err(ExecError::Host("the worker went away".into()));
            };
            match jsmsg::get_string(&reply, "kind").as_deref() {
                Some("failed")
                    if !sent_module
                        && jsmsg::get_string(&reply, "error").as_deref()
                            == Some(jsmsg::MISSING_MODULE) =>
                {
                    // The worker's module list drifted from ours: send the module along.
                    sent_module = true;
                    post(&worker, true)?;
                }
                Some("done" | "failed")
                    if jsmsg::get_f64(&reply, "seq").map(|s| s as u32) == Some(seq) =>
                {
                    let seen_at = host::wall_ms();
                    let result = jsmsg::decode_result(&reply, timeout);
                    let number = |key| jsmsg::get_f64(&reply, key).unwrap_or(0.0);
                    let spent = number("workerMs");
                    let inner = &self.inner;
                    let (decode_ms, instantiate_ms, run_ms) =
                        (number("decodeMs"), number("instantiateMs"), number("runMs"));
                    let mut parts = inner.parts.get();
                    parts.add(&TaskParts {
                        post_ms: posted_at - encoding,
                        to_worker_ms: (number("receivedAt") - posted_at).max(0.0),
                        decode_ms,
                        instantiate_ms,
                        run_ms,
                        collect_ms: (spent - decode_ms - instantiate_ms - run_ms).max(0.0),
                        to_page_ms: (seen_at - number("sentAt")).max(0.0),
                        answer_ms: host::wall_ms() - seen_at,
                    });
                    inner.parts.set(parts);
                    inner.worker_ms.set(inner.worker_ms.get() + spent);
                    inner
                        .round_trip_ms
                        .set(inner.round_trip_ms.get() + posted.elapsed().as_secs_f64() * 1e3);
                    inner.answered.set(inner.answered.get() + 1);
                    self.give_back(worker, true);
                    return result;
                }
                Some("crash") => {
                    let text = jsmsg::get_string(&reply, "message").unwrap_or_default();
                    drop(worker);
                    return Err(ExecError::Host(format!("the worker crashed: {text}")));
                }
                // A late answer to an earlier task cannot happen (workers that time out are
                // terminated); ignore anything else.
                _ => {}
            }
        }
    }

    fn concurrency(&self) -> usize {
        self.size()
    }
}

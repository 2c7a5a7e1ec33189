//! [`WasmtimeExecutor`]: core's [`Executor`] on wasmtime. Each task gets a fresh store, a
//! temporary root directory preopened at `/` (and `.`), in-memory stdin, capped stdout/stderr
//! and its limits, and runs on a blocking thread; a semaphore bounds how many run at once.
//!
//! How a run ends is classified from wasmtime's error: `proc_exit` ([`I32Exit`]) is an exit,
//! the [`Interrupt`] of the task's guard (from the epoch callback or a waiting `poll_oneoff`)
//! is a timeout or cancellation, [`Trap::OutOfFuel`] is
//! fuel exhaustion, a trap after the limiter refused `memory.grow` is a memory overrun, and
//! anything else a trap with wasmtime's message.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use wasimoff_core::executor::{
    CancellationToken, ExecError, ExecOutput, ExecTask, Executor, Termination,
};
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use super::WasmtimeConfig;
use super::cache::{Compiled, ExecutorStats, ModuleCache};
use super::engine::{EngineHandle, Host, Limiter};
use super::guard::{Interrupt, TaskGuard};
use super::output::CappedOutput;
use super::rootfs::{self, DirPool};

/// Runs WASI preview 1 tasks on wasmtime; cheap to clone (all clones share engine, caches and
/// worker slots).
///
/// ```no_run
/// # async fn demo(wasm: bytes::Bytes) -> Result<(), wasimoff_core::executor::ExecError> {
/// use wasimoff_core::executor::*;
/// use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};
///
/// let executor = WasmtimeExecutor::new(WasmtimeConfig::default())?;
/// let task = ExecTask::new("t1", ResolvedFile::from_bytes(wasm), vec!["hello.wasm".into()]);
/// let output = executor.execute(task, CancellationToken::new()).await?;
/// assert_eq!(output.termination, Termination::Exited(0));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WasmtimeExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    config: WasmtimeConfig,
    workers: usize,
    engine: EngineHandle,
    cache: ModuleCache,
    slots: Arc<Semaphore>,
    tasks: AtomicU64,
    /// Guests waiting in `poll_oneoff` now (kept by their [`TaskGuard`]s).
    waiting: Arc<watch::Sender<u64>>,
    dirs: DirPool,
    /// A runtime for WASI host calls when a task runs outside any tokio runtime
    /// ([`WasmtimeExecutor::execute_blocking`] from a plain thread).
    fallback_runtime: OnceLock<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for WasmtimeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmtimeExecutor")
            .field("workers", &self.inner.workers)
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl WasmtimeExecutor {
    /// An executor with its own engine, epoch ticker thread and caches.
    pub fn new(config: WasmtimeConfig) -> Result<Self, ExecError> {
        let engine = EngineHandle::new(&config)?;
        let cache = ModuleCache::new(
            &engine.engine,
            config.memory_cache_bytes,
            config.cache_dir.as_deref(),
        )?;
        let workers = config.effective_workers();
        Ok(WasmtimeExecutor {
            inner: Arc::new(Inner {
                workers,
                engine,
                cache,
                slots: Arc::new(Semaphore::new(workers)),
                tasks: AtomicU64::new(0),
                waiting: Arc::new(watch::Sender::new(0)),
                dirs: DirPool::new(config.work_dir.clone(), workers),
                fallback_runtime: OnceLock::new(),
                config,
            }),
        })
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &WasmtimeConfig {
        &self.inner.config
    }

    /// Compile and cache counters.
    pub fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            tasks: self.inner.tasks.load(Ordering::Relaxed),
            waiting: *self.inner.waiting.borrow(),
            ..self.inner.cache.stats()
        }
    }

    /// The number of guests waiting in `poll_oneoff` (asleep, typically), updated as they
    /// start and stop waiting: shows which slots sleeping guests hold, and lets a caller act
    /// once a guest sleeps (the tests cancel a sleeping guest this way).
    pub fn watch_waiting(&self) -> watch::Receiver<u64> {
        self.inner.waiting.subscribe()
    }

    /// Compiles (or loads from a cache) a module ahead of its first task, e.g. to warm up.
    pub fn precompile(
        &self,
        binary: &wasimoff_core::executor::ResolvedFile,
    ) -> Result<(), ExecError> {
        self.inner.cache.get(&self.inner.engine, binary).map(drop)
    }

    /// Runs one task on the current thread, ignoring the worker limit: for callers that manage
    /// their own threads (benchmarks). [`Executor::execute`] is the async, bounded way.
    pub fn execute_blocking(
        &self,
        task: ExecTask,
        cancel: &CancellationToken,
    ) -> Result<ExecOutput, ExecError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return self.inner.run(task, cancel);
        }
        // wasmtime-wasi runs host calls on the ambient runtime; without one it falls back to
        // a slow path, so enter a small runtime of our own.
        let runtime = match self.inner.fallback_runtime.get() {
            Some(runtime) => runtime,
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("wasimoff-wasi")
                    .enable_all()
                    .build()
                    .map_err(|e| host("starting a runtime for WASI calls", e))?;
                self.inner.fallback_runtime.get_or_init(|| runtime)
            }
        };
        let _entered = runtime.enter();
        self.inner.run(task, cancel)
    }
}

#[async_trait::async_trait]
impl Executor for WasmtimeExecutor {
    async fn execute(
        &self,
        task: ExecTask,
        cancel: CancellationToken,
    ) -> Result<ExecOutput, ExecError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ExecError::Host("execute needs a tokio runtime".into()))?;
        let Some(permit) = cancel
            .run_until_cancelled(self.inner.slots.clone().acquire_owned())
            .await
        else {
            return Ok(cancelled_before_start());
        };
        let permit = permit.map_err(|_| ExecError::Host("the worker pool is closed".into()))?;
        // Dropping this future (the caller gave up) cancels the guest too.
        let token = cancel.child_token();
        let _stop_on_drop = token.clone().drop_guard();
        let inner = self.inner.clone();
        runtime
            .spawn_blocking(move || {
                let _permit = permit;
                inner.run(task, &token)
            })
            .await
            .map_err(|e| ExecError::Host(format!("the task's thread failed: {e}")))?
    }

    fn concurrency(&self) -> usize {
        self.inner.workers
    }
}

fn cancelled_before_start() -> ExecOutput {
    ExecOutput {
        termination: Termination::Cancelled,
        stdout: Default::default(),
        stderr: Default::default(),
        stdout_truncated: false,
        stderr_truncated: false,
        artifacts: None,
        error: None,
    }
}

/// `KEY=value` entries as pairs.
fn parse_envs(envs: &[String]) -> Result<Vec<(&str, &str)>, ExecError> {
    envs.iter()
        .map(|entry| match entry.split_once('=') {
            Some(("", _)) => Err(ExecError::InvalidTask(format!(
                "environment entry {entry:?} has an empty name"
            ))),
            Some(_) if entry.contains('\0') => Err(ExecError::InvalidTask(format!(
                "environment entry {entry:?} contains a NUL byte"
            ))),
            Some(pair) => Ok(pair),
            None => Err(ExecError::InvalidTask(format!(
                "environment entry {entry:?} is not of the form KEY=value"
            ))),
        })
        .collect()
}

fn host(what: &str, e: impl std::fmt::Display) -> ExecError {
    ExecError::Host(format!("{what}: {e}"))
}

impl Inner {
    fn run(&self, task: ExecTask, cancel: &CancellationToken) -> Result<ExecOutput, ExecError> {
        let config = &self.config;
        if task.args.is_empty() {
            return Err(ExecError::InvalidTask("argv needs at least arg0".into()));
        }
        if let Some(arg) = task.args.iter().find(|arg| arg.contains('\0')) {
            return Err(ExecError::InvalidTask(format!(
                "argument {arg:?} contains a NUL byte"
            )));
        }
        parse_envs(&task.envs)?;
        if (task.limits.fuel.is_some() || config.default_fuel.is_some()) && !self.engine.fuel {
            tracing::debug!(task = %task.id, "fuel limit ignored: fuel metering is not enabled");
        }

        let compiled = self.cache.get(&self.engine, &task.binary)?;

        // A task with neither a rootfs nor artifacts gets no directory, as under `wasmtime
        // run` without `--dir`.
        if task.rootfs.is_none() && task.artifacts.is_empty() {
            return self.run_in(&task, cancel, &compiled, None);
        }
        // The root directory, with the rootfs if there is one; it goes back to the pool (or is
        // removed) however the task ends.
        let root = self.dirs.acquire()?;
        let result = self.run_in(&task, cancel, &compiled, Some(root.path()));
        self.dirs.release(root);
        result
    }

    /// Runs the task in the (empty) directory `root`, preopened at `/` and `.`; without one,
    /// the guest has no directory.
    fn run_in(
        &self,
        task: &ExecTask,
        cancel: &CancellationToken,
        compiled: &Compiled,
        root: Option<&Path>,
    ) -> Result<ExecOutput, ExecError> {
        let config = &self.config;
        let envs = parse_envs(&task.envs)?;
        let timeout = task.limits.timeout.or(config.default_timeout);
        let max_memory = task.limits.max_memory.or(config.default_max_memory);
        let fuel = task.limits.fuel.or(config.default_fuel);
        let max_output = task.limits.max_output.unwrap_or(config.default_max_output);
        if let (Some(rootfs), Some(root)) = (&task.rootfs, root) {
            rootfs::unpack(
                &rootfs.bytes,
                root,
                config.max_rootfs_entries,
                config.max_rootfs_bytes,
            )?;
        }

        let stdout = CappedOutput::new(max_output);
        let stderr = CappedOutput::new(max_output);
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&task.args)
            .envs(&envs)
            .stdin(MemoryInputPipe::new(task.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_blocking_current_thread(true);
        if let Some(root) = root {
            wasi.preopened_dir(root, "/", FsPerms::ReadWrite)
                .map_err(|e| host("preopening the task directory", e))?;
            wasi.preopened_dir(root, ".", FsPerms::ReadWrite)
                .map_err(|e| host("preopening the task directory", e))?;
        }

        let deadline = timeout.and_then(|timeout| Instant::now().checked_add(timeout));
        let guard = TaskGuard::new(deadline, cancel.clone(), self.waiting.clone());
        let mut store = Store::new(
            &self.engine.engine,
            Host {
                wasi: wasi.build_p1(),
                limiter: Limiter::new(max_memory),
                guard: guard.clone(),
            },
        );
        store.limiter(|host| &mut host.limiter);
        if self.engine.fuel {
            store
                .set_fuel(fuel.unwrap_or(u64::MAX))
                .map_err(|e| host("setting fuel", e))?;
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            guard.check()?;
            Ok(UpdateDeadline::Continue(1))
        });

        self.tasks.fetch_add(1, Ordering::Relaxed);
        let result = if cancel.is_cancelled() {
            Err(Interrupt::Cancelled.into())
        } else {
            compiled
                .pre
                .instantiate(&mut store)
                .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
                .and_then(|start| start.call(&mut store, ()))
        };
        let refused_memory = store.data().limiter.refused();
        drop(store);
        if let Err(e) = &result
            && e.downcast_ref::<PoolConcurrencyLimitError>().is_some()
        {
            // More tasks at once than instance slots (only `execute_blocking` callers can
            // get here): the task did not run.
            return Err(host("no free instance slot", format!("{e:#}")));
        }

        let termination = match result {
            Ok(()) => Termination::Exited(0),
            Err(e) => classify(&e, timeout, max_memory, fuel, refused_memory),
        };
        let (stdout, stdout_truncated) = stdout.take();
        let (stderr, stderr_truncated) = stderr.take();
        let collect =
            |root| rootfs::collect_artifacts(root, &task.artifacts, config.max_artifacts_bytes);
        let (artifacts, error) = match (&termination, root) {
            // No artifacts requested (there is a root whenever some are).
            (_, None) => (None, None),
            _ if task.artifacts.is_empty() => (None, None),
            // A missing or oversized artifact fails the task, which keeps its output.
            (Termination::Exited(0), Some(root)) => match collect(root) {
                Ok(zip) => (Some(zip), None),
                Err(e) => (None, Some(e)),
            },
            // After a failure, artifacts are best effort: what exists may help debugging.
            (Termination::Exited(_), Some(root)) => (collect(root).ok(), None),
            _ => (None, None),
        };
        Ok(ExecOutput {
            termination,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            artifacts,
            error,
        })
    }
}

/// How a run that returned an error ended.
fn classify(
    error: &wasmtime::Error,
    timeout: Option<Duration>,
    max_memory: Option<u64>,
    fuel: Option<u64>,
    refused_memory: bool,
) -> Termination {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Termination::Exited(exit.0);
    }
    if let Some(interrupt) = error.downcast_ref::<Interrupt>() {
        return match interrupt {
            Interrupt::Cancelled => Termination::Cancelled,
            Interrupt::TimedOut => Termination::TimedOut(timeout.unwrap_or_default()),
        };
    }
    let trap = error.downcast_ref::<Trap>();
    if trap == Some(&Trap::OutOfFuel) {
        return Termination::FuelExhausted(fuel.unwrap_or(u64::MAX));
    }
    if trap == Some(&Trap::Interrupt) {
        return Termination::TimedOut(timeout.unwrap_or_default());
    }
    if refused_memory {
        return Termination::MemoryExceeded(max_memory.unwrap_or(u64::MAX));
    }
    match trap {
        Some(trap) => Termination::Trapped(trap.to_string()),
        // Host functions fail with plain errors (e.g. a WASI call that traps).
        None => Termination::Trapped(format!("{error:#}")),
    }
}

//! [`BrowserExecutor`]: core's [`Executor`] on the JS `WebAssembly` API and the WASI host in
//! [`wasimoff_wasi`], running each task on the current thread (a page or a worker).
//!
//! Limits: a guest runs synchronously to its end. The deadline is checked on every WASI call
//! (and `poll_oneoff` sleeps no further than the deadline), so a guest that makes system calls
//! stops at its deadline; a guest spinning without system calls cannot be interrupted here (the
//! planned worker pool terminates its worker). Cancellation is honoured before a task starts.
//! Memory limits and fuel are not enforced (see docs/browser.md).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use js_sys::{Uint8Array, WebAssembly};
use wasimoff_core::executor::{
    CancellationToken, ExecError, ExecOutput, ExecTask, Executor, Termination,
};
use wasimoff_core::store::Ref;

use crate::host::{self, BrowserPlatform, OutputMirror, RunEnd, RunTimes};
use wasimoff_wasi::ctx::{Platform, WasiCtx};
use wasimoff_wasi::fs::{ArtifactError, Fs, RootfsLimits};

/// Settings of a [`BrowserExecutor`].
#[derive(Debug, Clone)]
pub struct BrowserConfig {
    /// stdout/stderr kept per stream when a task sets no `max_output`.
    pub default_max_output: usize,
    /// Deadline when a task sets no timeout.
    pub default_timeout: Duration,
    /// Rootfs unpacking limits.
    pub rootfs: RootfsLimits,
    /// Most uncompressed bytes of artifacts.
    pub max_artifacts_bytes: u64,
    /// Compiled modules kept (by ref).
    pub module_cache: usize,
    /// Memory a guest may grow to when its task sets no `max_memory` (`None`: the 4 GiB of
    /// wasm32). Enforced by lowering the module's declared maximum ([`crate::memcap`]).
    pub default_max_memory: Option<u64>,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            default_max_output: wasimoff_core::executor::DEFAULT_MAX_OUTPUT,
            default_timeout: wasimoff_core::executor::DEFAULT_TIMEOUT,
            rootfs: RootfsLimits::default(),
            max_artifacts_bytes: wasimoff_core::executor::DEFAULT_MAX_ARTIFACTS_BYTES,
            module_cache: 16,
            default_max_memory: Some(wasimoff_core::executor::DEFAULT_MAX_MEMORY),
        }
    }
}

/// What a compiled module is cached by: its ref and the memory cap it was compiled with.
pub type ModuleKey = (Ref, Option<u64>);

/// Runs WASI preview 1 tasks on the current JS thread.
#[derive(Debug)]
pub struct BrowserExecutor {
    config: BrowserConfig,
    platform: Rc<BrowserPlatform>,
    modules: RefCell<Vec<(ModuleKey, WebAssembly::Module)>>,
    last_run: Cell<RunTimes>,
}

impl BrowserExecutor {
    /// The task's file system: its rootfs unpacked, stamped with the current time.
    fn task_fs(&self, task: &ExecTask) -> Result<Fs, ExecError> {
        let mut fs = Fs::new();
        if let Some(rootfs) = &task.rootfs {
            fs.unpack_zip(&rootfs.bytes, self.config.rootfs)
                .map_err(ExecError::InvalidRootfs)?;
        }
        fs.settle(|| self.platform.realtime_ns());
        Ok(fs)
    }

    /// An executor for the current global (window or worker).
    pub fn new(config: BrowserConfig) -> Result<Self, ExecError> {
        Ok(BrowserExecutor {
            config,
            platform: Rc::new(BrowserPlatform::new().map_err(ExecError::Host)?),
            modules: RefCell::new(Vec::new()),
            last_run: Cell::new(RunTimes::default()),
        })
    }

    /// Whether `poll_oneoff` sleeps block in `Atomics.wait` (else they busy-wait).
    pub fn blocks_with_atomics(&self) -> bool {
        self.platform.blocks_with_atomics()
    }

    /// Where the time of the last guest run went (zeros before the first).
    pub fn last_run_times(&self) -> RunTimes {
        self.last_run.get()
    }

    /// How many compiled modules are cached.
    pub fn cached_modules(&self) -> usize {
        self.modules.borrow().len()
    }

    /// The memory cap of a task.
    pub fn memory_cap(&self, task: &ExecTask) -> Option<u64> {
        task.limits.max_memory.or(self.config.default_max_memory)
    }

    async fn module(&self, task: &ExecTask) -> Result<WebAssembly::Module, ExecError> {
        let cap = self.memory_cap(task);
        let key = &(task.binary.r#ref.clone(), cap);
        if let Some((_, module)) = self.modules.borrow().iter().find(|(r, _)| r == key) {
            return Ok(module.clone());
        }
        let module = compile(&task.binary.bytes, cap).await?;
        let mut modules = self.modules.borrow_mut();
        if modules.len() >= self.config.module_cache.max(1) {
            modules.remove(0);
        }
        modules.push((key.clone(), module.clone()));
        Ok(module)
    }

    /// Runs `task` with an already compiled (and [checked](compile)) `module`; the task's
    /// `binary` is not looked at, and the module must have been compiled with the task's
    /// [memory cap](Self::memory_cap). With a `mirror`, stdout and stderr are copied into it as
    /// the guest writes them. The worker pool compiles each module once on the page and
    /// hands the compiled module to its workers this way.
    pub async fn execute_module(
        &self,
        module: &WebAssembly::Module,
        task: ExecTask,
        cancel: CancellationToken,
        mirror: Option<OutputMirror>,
    ) -> Result<ExecOutput, ExecError> {
        if cancel.is_cancelled() {
            return Ok(cancelled());
        }
        validate(&task)?;
        let fs = self.task_fs(&task)?;
        self.run(module, task, fs, mirror)
    }

    fn run(
        &self,
        module: &WebAssembly::Module,
        task: ExecTask,
        fs: Fs,
        mirror: Option<OutputMirror>,
    ) -> Result<ExecOutput, ExecError> {
        let max_output = task
            .limits
            .max_output
            .unwrap_or(self.config.default_max_output);
        let timeout = task.limits.timeout.unwrap_or(self.config.default_timeout);
        let cap = self.memory_cap(&task);
        let needs_dir = task.rootfs.is_some() || !task.artifacts.is_empty();
        let mut ctx = WasiCtx::new(task.args, task.envs, task.stdin.to_vec(), fs, max_output);
        if !needs_dir {
            ctx = ctx.without_preopen();
        }
        ctx.deadline_ns = Some(
            self.platform
                .monotonic_ns()
                .saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX)),
        );
        let ctx = Rc::new(RefCell::new(ctx));
        self.last_run.set(RunTimes::default());
        let (end, memory, times) =
            host::run(module, &ctx, &self.platform, mirror).map_err(ExecError::InvalidModule)?;
        self.last_run.set(times);
        let ctx = ctx.borrow();
        let termination = match end {
            RunEnd::Returned => Termination::Exited(0),
            RunEnd::Exited(status) => Termination::Exited(status),
            RunEnd::Deadline => Termination::TimedOut(timeout),
            // A trap with the memory at the cap: the guest died of a refused `memory.grow`.
            RunEnd::Trapped(_) if cap.is_some_and(|cap| near_cap(memory, cap)) => {
                Termination::MemoryExceeded(cap.unwrap_or_default())
            }
            RunEnd::Trapped(message) => Termination::Trapped(message),
        };
        let (artifacts, error) = if task.artifacts.is_empty() {
            (None, None)
        } else {
            let zip = ctx
                .fs
                .collect_artifacts(&task.artifacts, self.config.max_artifacts_bytes);
            match (&termination, zip) {
                (Termination::Exited(0), Ok(zip)) => (Some(Bytes::from(zip)), None),
                // A missing or oversized artifact fails the task, which keeps its output.
                (Termination::Exited(0), Err(e)) => (
                    None,
                    Some(match e {
                        ArtifactError::InvalidPath(m) => ExecError::InvalidTask(m),
                        ArtifactError::Missing(p) => ExecError::MissingArtifact(p),
                        ArtifactError::TooLarge(m) => ExecError::ArtifactsTooLarge(m),
                        ArtifactError::Host(m) => ExecError::Host(m),
                    }),
                ),
                (Termination::Exited(_), zip) => (zip.ok().map(Bytes::from), None),
                _ => (None, None),
            }
        };
        Ok(ExecOutput {
            termination,
            stdout: Bytes::from(ctx.stdout.data.clone()),
            stderr: Bytes::from(ctx.stderr.data.clone()),
            stdout_truncated: ctx.stdout.truncated,
            stderr_truncated: ctx.stderr.truncated,
            artifacts,
            error,
        })
    }
}

/// Whether a guest that trapped with `memory` bytes had run into its cap: the JS API does not
/// report refused `memory.grow`s, so a trap with the memory within an eighth of the cap (at
/// least 1 MiB) counts as running out of memory.
pub fn near_cap(memory: u64, cap: u64) -> bool {
    let margin = (cap / 8).max(1 << 20);
    memory.saturating_add(margin) >= cap
}

/// Compiles a guest with the async `WebAssembly.compile` (no size limit on the main thread)
/// with its memory capped at `max_memory` bytes ([`crate::memcap`]), and checks that it is a
/// WASI command whose imports this host provides.
pub async fn compile(
    bytes: &[u8],
    max_memory: Option<u64>,
) -> Result<WebAssembly::Module, ExecError> {
    let capped = match max_memory {
        Some(cap) => crate::memcap::cap_memory(bytes, cap).map_err(ExecError::InvalidModule)?,
        None => std::borrow::Cow::Borrowed(bytes),
    };
    // Each thread keeps one memory for the guests that import theirs (see `host::run`).
    let imported = crate::memcap::import_memory(&capped).map_err(ExecError::InvalidModule)?;
    let module_bytes = imported.as_deref().unwrap_or(&capped[..]);
    let bytes = Uint8Array::from(module_bytes);
    let module: WebAssembly::Module =
        wasm_bindgen_futures::JsFuture::from(WebAssembly::compile(&bytes.into()))
            .await
            .map_err(|e| ExecError::InvalidModule(host::js_error_text(&e)))?
            .into();
    host::check_module(&module).map_err(ExecError::InvalidModule)?;
    Ok(module)
}

fn validate(task: &ExecTask) -> Result<(), ExecError> {
    if task.args.is_empty() {
        return Err(ExecError::InvalidTask("argv needs at least arg0".into()));
    }
    if let Some(arg) = task.args.iter().find(|a| a.contains('\0')) {
        return Err(ExecError::InvalidTask(format!(
            "argument {arg:?} contains NUL"
        )));
    }
    for env in &task.envs {
        match env.split_once('=') {
            Some((key, _)) if !key.is_empty() && !env.contains('\0') => {}
            _ => {
                return Err(ExecError::InvalidTask(format!(
                    "environment entry {env:?} is not KEY=value"
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn cancelled() -> ExecOutput {
    ExecOutput {
        termination: Termination::Cancelled,
        stdout: Bytes::new(),
        stderr: Bytes::new(),
        stdout_truncated: false,
        stderr_truncated: false,
        artifacts: None,
        error: None,
    }
}

#[async_trait::async_trait(?Send)]
impl Executor for BrowserExecutor {
    async fn execute(
        &self,
        task: ExecTask,
        cancel: CancellationToken,
    ) -> Result<ExecOutput, ExecError> {
        if cancel.is_cancelled() {
            return Ok(cancelled());
        }
        validate(&task)?;
        let fs = self.task_fs(&task)?;
        let module = self.module(&task).await?;
        if cancel.is_cancelled() {
            return Ok(cancelled());
        }
        self.run(&module, task, fs, None)
    }

    fn concurrency(&self) -> usize {
        1
    }
}

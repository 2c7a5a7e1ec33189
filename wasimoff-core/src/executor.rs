//! The [`Executor`] trait: run one WASI preview 1 task.
//!
//! The provider resolves a task's files (binary, rootfs) through its cache before it calls the
//! executor, so an executor sees only bytes and parameters: [`ExecTask`] in, [`ExecOutput`] out.
//!
//! A guest that exits non-zero, traps or runs past a limit is a *result*
//! ([`Termination`]), with whatever stdout and stderr it produced; an [`ExecError`] means the
//! task could not run at all (bad module, bad rootfs, missing artifact, host failure).
//!
//! Implementations: `WasmtimeExecutor` (native provider) and the browser's worker executor.

use std::time::Duration;

use bytes::Bytes;
pub use tokio_util::sync::CancellationToken;

use crate::platform::{MaybeSend, MaybeSync};
use crate::proto::task::wasip1;
use crate::remote::{CANCELLED, EXITED, FUEL_EXHAUSTED, MEMORY_EXCEEDED, TIMED_OUT, TRAPPED};
use crate::store::Ref;

/// Per-task limits; `None` means the executor's default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecLimits {
    /// Wall-clock time the guest may run.
    pub timeout: Option<Duration>,
    /// Linear memory the guest may grow to, in bytes.
    pub max_memory: Option<u64>,
    /// Fuel (roughly: wasm instructions) the guest may burn.
    pub fuel: Option<u64>,
    /// Bytes kept of stdout and of stderr each; the rest is cut and flagged.
    pub max_output: Option<usize>,
}

/// A module or file the provider has resolved to bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFile {
    /// The content address, used as a cache key (compiled modules are cached by ref).
    pub r#ref: Ref,
    /// The contents.
    pub bytes: Bytes,
}

impl ResolvedFile {
    /// A file from bytes, computing its ref.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ResolvedFile {
            r#ref: Ref::of(&bytes),
            bytes,
        }
    }
}

/// One WASI preview 1 task with its files resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecTask {
    /// The task id, for logs and traces.
    pub id: String,
    /// The WebAssembly module.
    pub binary: ResolvedFile,
    /// argv, including arg0, exactly as the guest sees it.
    pub args: Vec<String>,
    /// Environment variables as `KEY=value`.
    pub envs: Vec<String>,
    /// Bytes readable on fd 0.
    pub stdin: Bytes,
    /// A zip unpacked as the guest's root directory.
    pub rootfs: Option<ResolvedFile>,
    /// Paths (files or directories) to zip up and return after the guest ends.
    pub artifacts: Vec<String>,
    /// Limits for this task.
    pub limits: ExecLimits,
}

impl ExecTask {
    /// A task running `binary` with the given argv and nothing else.
    pub fn new(id: impl Into<String>, binary: ResolvedFile, args: Vec<String>) -> Self {
        ExecTask {
            id: id.into(),
            binary,
            args,
            envs: Vec::new(),
            stdin: Bytes::new(),
            rootfs: None,
            artifacts: Vec::new(),
            limits: ExecLimits::default(),
        }
    }
}

/// How a guest ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Termination {
    /// It returned from `_start` (status 0) or called `proc_exit(status)`.
    Exited(i32),
    /// It trapped (panic, unreachable, out-of-bounds access...).
    Trapped(String),
    /// It ran past [`ExecLimits::timeout`].
    TimedOut(Duration),
    /// It tried to grow memory past [`ExecLimits::max_memory`].
    MemoryExceeded(u64),
    /// It burned all its [`ExecLimits::fuel`].
    FuelExhausted(u64),
    /// It was cancelled through its [`CancellationToken`].
    Cancelled,
}

/// What a task produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// How the guest ended.
    pub termination: Termination,
    /// Captured stdout (at most [`ExecLimits::max_output`] bytes).
    pub stdout: Bytes,
    /// Captured stderr (at most [`ExecLimits::max_output`] bytes).
    pub stderr: Bytes,
    /// Whether stdout was cut at the limit.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the limit.
    pub stderr_truncated: bool,
    /// The requested artifacts as a zip, if any were requested.
    pub artifacts: Option<Bytes>,
}

impl ExecOutput {
    /// The wire response for this output: `ok` with the status for an exit, `error` otherwise
    /// (a trap still carries its output in the error text's context for humans).
    ///
    /// `stdout_truncated` / `stderr_truncated` are set only when true: an output that was not
    /// cut encodes exactly as the original peers' (see docs/protocol.md).
    pub fn into_wasip1_result(self) -> wasip1::response::Result {
        match self.termination {
            Termination::Exited(status) => wasip1::response::Result::Ok(wasip1::Output {
                status: Some(status),
                stdout: Some(self.stdout),
                stderr: Some(self.stderr),
                artifacts: self.artifacts.map(|zip| crate::proto::File {
                    r#ref: None,
                    media: Some(crate::store::media::ZIP.into()),
                    blob: Some(zip),
                }),
                stdout_truncated: self.stdout_truncated.then_some(true),
                stderr_truncated: self.stderr_truncated.then_some(true),
            }),
            other => wasip1::response::Result::Error(describe_failure(&other, &self.stderr)),
        }
    }
}

/// Which output streams were cut, as the broker's `X-Wasimoff-Truncated` header and the
/// warnings say it: `"stdout"`, `"stderr"`, `"stdout, stderr"`, or `None` when neither was.
///
/// ```
/// use wasimoff_core::executor::truncated_streams;
/// assert_eq!(truncated_streams(true, true), Some("stdout, stderr"));
/// assert_eq!(truncated_streams(false, true), Some("stderr"));
/// assert_eq!(truncated_streams(false, false), None);
/// ```
pub fn truncated_streams(stdout: bool, stderr: bool) -> Option<&'static str> {
    match (stdout, stderr) {
        (true, true) => Some("stdout, stderr"),
        (true, false) => Some("stdout"),
        (false, true) => Some("stderr"),
        (false, false) => None,
    }
}

/// A one-line description of a guest that did not exit, with the tail of its stderr. It starts
/// with the prefix [`FailureKind::classify`](crate::remote::FailureKind::classify) looks for.
fn describe_failure(termination: &Termination, stderr: &[u8]) -> String {
    let what = match termination {
        Termination::Exited(status) => format!("{EXITED} {status}"),
        Termination::Trapped(trap) => format!("{TRAPPED}: {trap}"),
        Termination::TimedOut(limit) => format!("{TIMED_OUT}: ran longer than {limit:?}"),
        Termination::MemoryExceeded(limit) => format!("{MEMORY_EXCEEDED} {limit} bytes exceeded"),
        Termination::FuelExhausted(fuel) => format!("{FUEL_EXHAUSTED} {fuel} exhausted"),
        Termination::Cancelled => CANCELLED.to_owned(),
    };
    let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(1024)..]);
    let tail = tail.trim();
    if tail.is_empty() {
        what
    } else {
        format!("{what}; stderr: {tail}")
    }
}

/// Why a task could not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The binary is not a valid WebAssembly module (or imports what no WASI host offers).
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The rootfs zip is broken, too large, or has unsafe paths.
    #[error("invalid rootfs: {0}")]
    InvalidRootfs(String),
    /// A requested artifact does not exist after the run.
    #[error("artifact not found: {0}")]
    MissingArtifact(String),
    /// The artifacts exceed the size limit.
    #[error("artifacts too large: {0}")]
    ArtifactsTooLarge(String),
    /// The task's parameters are unusable (empty argv, bad env entry).
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// The host failed (I/O, out of worker threads).
    #[error("executor failed: {0}")]
    Host(String),
}

/// Runs WASI preview 1 tasks.
///
/// ```
/// use wasimoff_core::executor::*;
///
/// /// An executor that "runs" every task by echoing its argv, for tests.
/// struct Echo;
///
/// #[async_trait::async_trait]
/// impl Executor for Echo {
///     async fn execute(&self, task: ExecTask, _cancel: CancellationToken) -> Result<ExecOutput, ExecError> {
///         if task.args.is_empty() {
///             return Err(ExecError::InvalidTask("argv needs arg0".into()));
///         }
///         Ok(ExecOutput {
///             termination: Termination::Exited(0),
///             stdout: task.args.join(" ").into(),
///             stderr: Default::default(),
///             stdout_truncated: false,
///             stderr_truncated: false,
///             artifacts: None,
///         })
///     }
///     fn concurrency(&self) -> usize { 1 }
/// }
///
/// # futures::executor::block_on(async {
/// let task = ExecTask::new("t1", ResolvedFile::from_bytes(&b"\0asm"[..]), vec!["echo".into(), "hi".into()]);
/// let out = Echo.execute(task, CancellationToken::new()).await.unwrap();
/// assert_eq!(out.stdout, "echo hi");
/// # });
/// ```
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait Executor: MaybeSend + MaybeSync {
    /// Runs one task to its end. Cancelling `cancel` stops the guest as soon as possible; the
    /// result is then [`Termination::Cancelled`].
    async fn execute(
        &self,
        task: ExecTask,
        cancel: CancellationToken,
    ) -> Result<ExecOutput, ExecError>;

    /// How many tasks this executor runs at once (the provider's advertised concurrency).
    fn concurrency(&self) -> usize;
}

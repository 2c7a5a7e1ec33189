//! The [`Executor`] trait: run one WASI preview 1 task.
//!
//! The provider resolves a task's files (binary, rootfs) through its cache before it calls the
//! executor, so an executor sees only bytes and parameters: [`ExecTask`] in, [`ExecOutput`] out.
//!
//! A guest that exits non-zero, traps or runs past a limit is a *result*
//! ([`Termination`]), with whatever stdout and stderr it produced; an [`ExecError`] means the
//! task could not run at all (bad module, bad rootfs, host failure). A guest that ran but
//! whose artifacts cannot be returned (missing, too large) is an [`ExecOutput`] with its
//! [`error`](ExecOutput::error) set, so that its output is kept.
//!
//! Implementations: `WasmtimeExecutor` (native provider) and the browser's worker executor.

use std::time::Duration;

use bytes::Bytes;
pub use tokio_util::sync::CancellationToken;

use crate::platform::{MaybeSend, MaybeSync};
use crate::proto::task::wasip1;
use crate::remote::{CANCELLED, EXITED, FUEL_EXHAUSTED, MEMORY_EXCEEDED, TIMED_OUT, TRAPPED};
use crate::store::Ref;

/// The deadline of a task that sets none, in every executor (native and browser).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// The memory a guest may grow to when its task sets no `max_memory`, in every executor.
pub const DEFAULT_MAX_MEMORY: u64 = 2 << 30;
/// The bytes kept of stdout and of stderr each when a task sets no `max_output`.
pub const DEFAULT_MAX_OUTPUT: usize = 16 << 20;
/// The most uncompressed bytes of a task's artifacts.
pub const DEFAULT_MAX_ARTIFACTS_BYTES: u64 = 256 << 20;

/// Per-task limits; `None` means the executor's default ([`DEFAULT_TIMEOUT`],
/// [`DEFAULT_MAX_MEMORY`], [`DEFAULT_MAX_OUTPUT`] unless the executor is configured otherwise).
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
    /// The guest exited, but its result cannot be returned: a requested artifact is missing
    /// ([`ExecError::MissingArtifact`]) or the artifacts are too large
    /// ([`ExecError::ArtifactsTooLarge`]). The task fails with this error and keeps its
    /// stdout and stderr; [`artifacts`](ExecOutput::artifacts) is then `None`.
    pub error: Option<ExecError>,
}

impl ExecOutput {
    /// The wire result for this output, and what goes into `Response.error_output`:
    /// - an exit with no [`error`](ExecOutput::error) is `ok` with the status (the second
    ///   part is `None`);
    /// - anything else is `error` with a one-line description (which ends with the tail of
    ///   stderr, for peers that only read the text), and the guest's stdout and stderr as the
    ///   error output, unless it wrote nothing.
    ///
    /// `stdout_truncated` / `stderr_truncated` are set only when true, and the error output
    /// only when there is some: such messages encode exactly as the original peers' (see
    /// docs/protocol.md).
    ///
    /// ```
    /// use wasimoff_core::executor::{ExecOutput, Termination};
    /// use wasimoff_core::proto::task::wasip1::response::Result;
    /// let output = ExecOutput {
    ///     termination: Termination::Trapped("unreachable".into()),
    ///     stdout: "half a line".into(),
    ///     stderr: "oops\n".into(),
    ///     stdout_truncated: false,
    ///     stderr_truncated: false,
    ///     artifacts: None,
    ///     error: None,
    /// };
    /// let (result, kept) = output.into_wasip1_parts();
    /// assert_eq!(result, Result::Error("trapped: unreachable; stderr: oops".into()));
    /// assert_eq!(kept.unwrap().stdout.as_deref(), Some(&b"half a line"[..]));
    /// ```
    pub fn into_wasip1_parts(self) -> (wasip1::response::Result, Option<wasip1::Output>) {
        let text = match (&self.termination, &self.error) {
            (Termination::Exited(status), None) => {
                let output = wasip1::Output {
                    status: Some(*status),
                    stdout: Some(self.stdout),
                    stderr: Some(self.stderr),
                    artifacts: self.artifacts.map(|zip| crate::proto::File {
                        r#ref: None,
                        media: Some(crate::store::media::ZIP.into()),
                        blob: Some(zip),
                    }),
                    stdout_truncated: self.stdout_truncated.then_some(true),
                    stderr_truncated: self.stderr_truncated.then_some(true),
                };
                return (wasip1::response::Result::Ok(output), None);
            }
            (_, Some(error)) => with_stderr_tail(error.to_string(), &self.stderr),
            (termination, None) => describe_failure(termination, &self.stderr),
        };
        let kept = (!self.stdout.is_empty() || !self.stderr.is_empty()).then(|| wasip1::Output {
            status: match self.termination {
                Termination::Exited(status) => Some(status),
                _ => None,
            },
            stdout: Some(self.stdout),
            stderr: Some(self.stderr),
            artifacts: None,
            stdout_truncated: self.stdout_truncated.then_some(true),
            stderr_truncated: self.stderr_truncated.then_some(true),
        });
        (wasip1::response::Result::Error(text), kept)
    }

    /// The wire response for this output with `info`: [`into_wasip1_parts`] put together.
    ///
    /// [`into_wasip1_parts`]: ExecOutput::into_wasip1_parts
    pub fn into_wasip1_response(
        self,
        info: Option<crate::proto::task::Metadata>,
    ) -> wasip1::Response {
        let (result, error_output) = self.into_wasip1_parts();
        wasip1::Response {
            info,
            result: Some(result),
            error_output,
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
    with_stderr_tail(termination.to_string(), stderr)
}

/// The one wording of how a guest ended, shared by every executor and the JS API: it starts
/// with the prefix [`FailureKind::classify`](crate::remote::FailureKind::classify) looks for.
///
/// ```
/// use std::time::Duration;
/// use wasimoff_core::executor::Termination;
/// assert_eq!(Termination::TimedOut(Duration::from_secs(2)).to_string(), "deadline exceeded: ran longer than 2s");
/// assert_eq!(Termination::Exited(3).to_string(), "exited with status 3");
/// ```
impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::Exited(status) => write!(f, "{EXITED} {status}"),
            Termination::Trapped(trap) => write!(f, "{TRAPPED}: {trap}"),
            Termination::TimedOut(limit) => write!(f, "{TIMED_OUT}: ran longer than {limit:?}"),
            Termination::MemoryExceeded(limit) => {
                write!(f, "{MEMORY_EXCEEDED} {limit} bytes exceeded")
            }
            Termination::FuelExhausted(fuel) => write!(f, "{FUEL_EXHAUSTED} {fuel} exhausted"),
            Termination::Cancelled => f.write_str(CANCELLED),
        }
    }
}

/// Separates the description of a failure from the tail of stderr appended to it.
pub const STDERR_TAIL: &str = "; stderr: ";

/// `what`, followed by the last KiB of stderr (trimmed) after [`STDERR_TAIL`] if there is any.
fn with_stderr_tail(what: String, stderr: &[u8]) -> String {
    let tail = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(1024)..]);
    let tail = tail.trim();
    if tail.is_empty() {
        what
    } else {
        format!("{what}{STDERR_TAIL}{tail}")
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
///             error: None,
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

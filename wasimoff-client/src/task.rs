//! [`Task`]: a typed builder for WASI preview 1 task requests, and [`Output`], their results.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use wasimoff_core::proto::{self, task::wasip1};
use wasimoff_core::wkt::Timestamp;

use crate::error::{Error, TaskFailure};

/// A file a task uses (its module or its rootfs zip): a name the broker knows, or the bytes.
///
/// Strings are references: an alias given at upload (`hello.wasm`) or a `sha256:` ref. Bytes
/// are sent inline with the task; the broker stores them (up to its inline limit, 16 MiB by
/// default; upload bigger files with [`Client::upload`](crate::Client::upload) first).
///
/// ```
/// use wasimoff_client::Source;
/// assert!(matches!(Source::from("hello.wasm"), Source::Ref(_)));
/// assert!(matches!(Source::from(b"\0asm\x01\0\0\0".to_vec()), Source::Inline(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// An alias or `sha256:` ref in the broker's storage.
    Ref(String),
    /// The file's bytes, sent with the task.
    Inline(Bytes),
}

impl Source {
    fn to_file(&self) -> proto::File {
        match self {
            Source::Ref(r) => proto::File {
                r#ref: Some(r.clone()),
                ..Default::default()
            },
            Source::Inline(b) => proto::File {
                blob: Some(b.clone()),
                ..Default::default()
            },
        }
    }
}

impl From<&str> for Source {
    fn from(r: &str) -> Self {
        Source::Ref(r.to_owned())
    }
}
impl From<String> for Source {
    fn from(r: String) -> Self {
        Source::Ref(r)
    }
}
impl From<&String> for Source {
    fn from(r: &String) -> Self {
        Source::Ref(r.clone())
    }
}
impl From<wasimoff_core::store::Ref> for Source {
    fn from(r: wasimoff_core::store::Ref) -> Self {
        Source::Ref(r.to_string())
    }
}
impl From<&wasimoff_core::store::Ref> for Source {
    fn from(r: &wasimoff_core::store::Ref) -> Self {
        Source::Ref(r.to_string())
    }
}
impl From<Bytes> for Source {
    fn from(b: Bytes) -> Self {
        Source::Inline(b)
    }
}
impl From<Vec<u8>> for Source {
    fn from(b: Vec<u8>) -> Self {
        Source::Inline(b.into())
    }
}
impl From<&'static [u8]> for Source {
    fn from(b: &'static [u8]) -> Self {
        Source::Inline(Bytes::from_static(b))
    }
}

/// A WASI preview 1 task: a module, its arguments, environment, stdin, rootfs, the files to
/// return, and scheduling hints. Build one with [`Task::wasip1`], run it with
/// [`Client::run`](crate::Client::run) or many at once with
/// [`Client::submit_many`](crate::Client::submit_many).
///
/// Arguments given with [`args`](Task::args) come *after* `argv[0]`, like `wasmtime run`;
/// `argv[0]` is the binary's reference (or `task.wasm` for inline bytes) unless set with
/// [`argv0`](Task::argv0).
///
/// ```
/// use std::time::Duration;
/// use wasimoff_client::Task;
///
/// let task = Task::wasip1("hello.wasm")
///     .args(["print_envs", "stdin"])
///     .env("GREETING", "hi")
///     .stdin("some input\n")
///     .artifacts(["/out.txt"])
///     .timeout(Duration::from_secs(60))
///     .priority(true)
///     .reference("my-first-task");
/// let request = task.to_request();
/// let params = request.params.unwrap();
/// assert_eq!(params.args, ["hello.wasm", "print_envs", "stdin"]);
/// assert_eq!(params.envs, ["GREETING=hi"]);
/// assert_eq!(params.binary.unwrap().r#ref.as_deref(), Some("hello.wasm"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    request: wasip1::Request,
}

impl Task {
    /// A task that runs `binary`: an alias or `sha256:` ref (`&str`, `String`, `Ref`) or the
    /// module's bytes (`Vec<u8>`, `Bytes`, `&'static [u8]`).
    pub fn wasip1(binary: impl Into<Source>) -> Task {
        let binary = binary.into();
        let argv0 = match &binary {
            Source::Ref(r) => r.clone(),
            Source::Inline(_) => "task.wasm".to_owned(),
        };
        Task {
            request: wasip1::Request {
                info: None,
                qos: None,
                params: Some(wasip1::Params {
                    binary: Some(binary.to_file()),
                    args: vec![argv0],
                    ..Default::default()
                }),
            },
        }
    }

    /// A task from a complete request, as in a task JSON file (see [`Task::from_json`]).
    pub fn from_request(request: wasip1::Request) -> Task {
        Task { request }
    }

    /// Parses a task from proto3 JSON (`wasimoff.v1.Task.Wasip1.Request`; an `"@type"` key is
    /// allowed and ignored). Byte fields (`stdin`, blobs) are base64.
    ///
    /// ```
    /// let task = wasimoff_client::Task::from_json(r#"{
    ///     "@type": "wasimoff/wasimoff.v1.Task.Wasip1.Request",
    ///     "params": {"binary": {"ref": "hello.wasm"}, "args": ["hello.wasm", "exit:3"]}
    /// }"#).unwrap();
    /// assert_eq!(task.to_request().params.unwrap().args[1], "exit:3");
    /// ```
    pub fn from_json(text: &str) -> Result<Task, Error> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Local(format!("task is not JSON: {e}")))?;
        Task::from_json_value(value)
    }

    /// Like [`Task::from_json`], from a parsed JSON value.
    pub fn from_json_value(mut value: serde_json::Value) -> Result<Task, Error> {
        if let Some(object) = value.as_object_mut()
            && let Some(kind) = object.remove("@type")
        {
            let kind = kind.as_str().unwrap_or_default();
            if !kind.ends_with("wasimoff.v1.Task.Wasip1.Request") {
                return Err(Error::Local(format!(
                    "unsupported task type {kind:?} (expected wasimoff.v1.Task.Wasip1.Request)"
                )));
            }
        }
        let request: wasip1::Request = serde_json::from_value(value)
            .map_err(|e| Error::Local(format!("not a Wasip1 task request: {e}")))?;
        Ok(Task { request })
    }

    fn params(&mut self) -> &mut wasip1::Params {
        self.request.params.get_or_insert_with(Default::default)
    }

    fn qos(&mut self) -> &mut proto::task::QoS {
        self.request.qos.get_or_insert_with(Default::default)
    }

    /// Sets `argv[0]`, the program name the module sees.
    pub fn argv0(mut self, name: impl Into<String>) -> Task {
        let params = self.params();
        match params.args.first_mut() {
            Some(first) => *first = name.into(),
            None => params.args.push(name.into()),
        }
        self
    }

    /// Appends arguments (after `argv[0]`).
    pub fn args<I, S>(mut self, args: I) -> Task
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let params = self.params();
        if params.args.is_empty() {
            params.args.push("task.wasm".into());
        }
        params.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Appends one argument.
    pub fn arg(self, arg: impl Into<String>) -> Task {
        self.args([arg])
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Task {
        let entry = format!("{}={}", key.as_ref(), value.as_ref());
        self.params().envs.push(entry);
        self
    }

    /// Sets environment variables from `KEY=value` strings.
    pub fn envs<I, S>(mut self, envs: I) -> Task
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.params().envs.extend(envs.into_iter().map(Into::into));
        self
    }

    /// The task's standard input.
    pub fn stdin(mut self, stdin: impl Into<Bytes>) -> Task {
        self.params().stdin = Some(stdin.into());
        self
    }

    /// A zip archive mounted as the task's root directory `/` (a ref/alias or the bytes).
    pub fn rootfs(mut self, rootfs: impl Into<Source>) -> Task {
        self.params().rootfs = Some(rootfs.into().to_file());
        self
    }

    /// Paths (in the task's filesystem) returned as a zip in [`Output::artifacts`].
    pub fn artifacts<I, S>(mut self, paths: I) -> Task
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.params()
            .artifacts
            .extend(paths.into_iter().map(Into::into));
        self
    }

    /// The time by which the result is needed; the broker gives up after it
    /// ([`Error::DeadlineExceeded`]).
    pub fn deadline(mut self, deadline: SystemTime) -> Task {
        self.qos().deadline = Some(Timestamp::from(deadline));
        self
    }

    /// A deadline `timeout` from now.
    pub fn timeout(mut self, timeout: Duration) -> Task {
        let nanos = wasimoff_core::platform::unix_nanos() as i128 + timeout.as_nanos() as i128;
        self.qos().deadline = Some(Timestamp::from_unix_nanos(nanos));
        self
    }

    /// Queue the task ahead of tasks without priority.
    pub fn priority(mut self, priority: bool) -> Task {
        self.qos().priority = Some(priority);
        self
    }

    /// Run now or fail with [`Error::Unavailable`] (no queueing when all providers are busy).
    pub fn immediate(mut self, immediate: bool) -> Task {
        self.qos().immediate = Some(immediate);
        self
    }

    /// A reference of yours, returned in [`Output::reference`].
    pub fn reference(mut self, reference: impl Into<String>) -> Task {
        self.request
            .info
            .get_or_insert_with(Default::default)
            .reference = Some(reference.into());
        self
    }

    /// The wire request (`wasimoff.v1.Task.Wasip1.Request`).
    pub fn to_request(&self) -> wasip1::Request {
        self.request.clone()
    }

    /// The wire request, consuming the task.
    pub fn into_request(self) -> wasip1::Request {
        self.request
    }

    /// The request as proto3 JSON with an `"@type"` key, the format of task files.
    pub fn to_json(&self) -> Result<serde_json::Value, Error> {
        let mut value = serde_json::to_value(&self.request)
            .map_err(|e| Error::Local(format!("cannot encode the task: {e}")))?;
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "@type".into(),
                "wasimoff/wasimoff.v1.Task.Wasip1.Request".into(),
            );
        }
        Ok(value)
    }
}

impl From<wasip1::Request> for Task {
    fn from(request: wasip1::Request) -> Self {
        Task { request }
    }
}

/// What a task produced: its exit status, output streams, the artifacts zip, and where it ran.
///
/// A guest that exits non-zero is still an `Output` (check [`status`](Output::status)); a trap,
/// limit or missing artifact is [`Error::Task`], whose [`TaskFailure`] holds the output the
/// guest wrote before it failed.
///
/// A provider keeps at most its output cap (16 MiB by default) of each stream; a guest that
/// wrote more still ends normally, with the first bytes kept and
/// [`stdout_truncated`](Output::stdout_truncated) / [`stderr_truncated`](Output::stderr_truncated)
/// set (check [`truncated`](Output::truncated)). Providers of the original system never set
/// them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Output {
    /// The exit status (0 = success).
    pub status: i32,
    /// What the task wrote to stdout (only the first bytes if
    /// [`stdout_truncated`](Output::stdout_truncated)).
    pub stdout: Bytes,
    /// What the task wrote to stderr (only the first bytes if
    /// [`stderr_truncated`](Output::stderr_truncated)).
    pub stderr: Bytes,
    /// The provider cut stdout at its output cap: the task wrote more than
    /// [`stdout`](Output::stdout) holds.
    pub stdout_truncated: bool,
    /// The provider cut stderr at its output cap: the task wrote more than
    /// [`stderr`](Output::stderr) holds.
    pub stderr_truncated: bool,
    /// A zip of the requested [`artifacts`](Task::artifacts), if any.
    pub artifacts: Option<Bytes>,
    /// The broker's task id.
    pub id: Option<String>,
    /// The provider that ran the task.
    pub provider: Option<String>,
    /// The task's [`reference`](Task::reference).
    pub reference: Option<String>,
}

impl Output {
    /// Interprets a `wasimoff.v1.Task.Wasip1.Response`: `ok` becomes an `Output`, `error`
    /// becomes [`Error::Task`] with the output the guest wrote before it failed
    /// (`error_output`, sent by our providers).
    ///
    /// ```
    /// use wasimoff_client::{Error, FailureKind, Output};
    /// use wasimoff_core::proto::task::wasip1;
    /// let response = wasip1::Response {
    ///     info: None,
    ///     result: Some(wasip1::response::Result::Error("trapped: unreachable".into())),
    ///     error_output: Some(wasip1::Output {
    ///         stdout: Some("half a line".into()),
    ///         ..Default::default()
    ///     }),
    /// };
    /// let Err(Error::Task(failure)) = Output::from_response(response) else { panic!() };
    /// assert_eq!(failure.kind, FailureKind::Trap);
    /// assert_eq!(failure.output.stdout_lossy(), "half a line");
    /// ```
    pub fn from_response(response: wasip1::Response) -> Result<Output, Error> {
        let info = response.info.unwrap_or_default();
        let output = |output: wasip1::Output, info: proto::task::Metadata| Output {
            status: output.status.unwrap_or(0),
            stdout: output.stdout.unwrap_or_default(),
            stderr: output.stderr.unwrap_or_default(),
            stdout_truncated: output.stdout_truncated.unwrap_or(false),
            stderr_truncated: output.stderr_truncated.unwrap_or(false),
            artifacts: output
                .artifacts
                .and_then(|a| a.blob)
                .filter(|b| !b.is_empty()),
            id: info.id,
            provider: info.provider,
            reference: info.reference,
        };
        match response.result {
            Some(wasip1::response::Result::Ok(ok)) => Ok(output(ok, info)),
            Some(wasip1::response::Result::Error(error)) => {
                let kept = output(response.error_output.unwrap_or_default(), info);
                Err(Error::Task(Box::new(TaskFailure::new(error, kept))))
            }
            None => Err(Error::InvalidResponse(
                "a task response without result".into(),
            )),
        }
    }

    /// Whether the task exited with status 0 (its output may still be
    /// [`truncated`](Output::truncated)).
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// The streams the provider cut at its output cap: `Some("stdout")`, `Some("stderr")`,
    /// `Some("stdout, stderr")`, or `None` when both are complete.
    ///
    /// ```
    /// use wasimoff_client::Output;
    /// use wasimoff_core::proto::task::wasip1;
    /// let response = wasip1::Response {
    ///     info: None,
    ///     result: Some(wasip1::response::Result::Ok(wasip1::Output {
    ///         status: Some(0),
    ///         stdout: Some("the first bytes".into()),
    ///         stdout_truncated: Some(true),
    ///         ..Default::default()
    ///     })),
    ///     error_output: None,
    /// };
    /// let output = Output::from_response(response).unwrap();
    /// assert!(output.success() && output.stdout_truncated && !output.stderr_truncated);
    /// assert_eq!(output.truncated(), Some("stdout"));
    /// ```
    pub fn truncated(&self) -> Option<&'static str> {
        wasimoff_core::executor::truncated_streams(self.stdout_truncated, self.stderr_truncated)
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

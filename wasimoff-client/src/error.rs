//! [`Error`]: everything that can go wrong between a client and a broker.

use std::time::Duration;

/// Why a call to the broker did not produce what was asked for.
///
/// The broker answers errors with a Connect code (`resource_exhausted`, `invalid_argument`, ...);
/// each code has its own variant, so callers can tell "try again later" from "fix your request"
/// from "the provider failed". A task that *ran* and exited non-zero is not an error: it is an
/// [`Output`](crate::Output) with that [`status`](crate::Output::status).
///
/// ```
/// use wasimoff_client::Error;
/// let e = Error::from_code("resource_exhausted", "queue full: 1 tasks are waiting", None);
/// assert!(e.is_queue_full());
/// assert!(e.is_retryable());
/// assert_eq!(e.code(), "resource_exhausted");
/// let e = Error::from_code("invalid_argument", "bad message", None);
/// assert!(matches!(e, Error::BadRequest(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker's queue is full (`resource_exhausted`, HTTP 429): retry later, e.g. with a
    /// [`RetryPolicy`](crate::RetryPolicy).
    #[error("queue full, retry later: {message}")]
    QueueFull {
        /// The broker's explanation.
        message: String,
        /// How long the broker asked to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// The broker cannot store the file (HTTP 507): the client token's storage quota or the
    /// broker's storage is full. Remove files (`DELETE /api/storage/<alias>`) or ask for more
    /// room; waiting alone does not help, so this is not retried.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The request is malformed or breaks a limit (`invalid_argument`, HTTP 400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A module, zip or alias the task names is not in the broker's storage (`not_found`, 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The task's deadline passed before it finished (`deadline_exceeded`, HTTP 504).
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// Nobody can run the task now: no free provider for an `immediate` task, or the broker is
    /// shutting down (`unavailable`, HTTP 503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Providers failed the task (lost, timed out, errored) more often than the broker allows
    /// (`aborted`, HTTP 409).
    #[error("provider failed: {0}")]
    ProviderFailed(String),
    /// Missing or wrong token (`unauthenticated`, HTTP 401).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The task ran but did not finish normally: a trap, a resource limit, a missing
    /// artifact, or a module that could not be instantiated. It holds the provider's
    /// description, the [kind](FailureKind) and whatever the guest wrote before it failed.
    #[error("task failed: {0}")]
    Task(Box<TaskFailure>),
    /// Any other error the broker reported, with its Connect code (`internal`, `canceled`, ...)
    /// or, for non-Connect answers, the HTTP status as text.
    #[error("broker error ({code}): {message}")]
    Broker {
        /// The Connect code, or `http <status>`.
        code: String,
        /// The broker's explanation.
        message: String,
    },
    /// The broker could not be reached, the connection broke, or something in between (a
    /// proxy, a broker at its connection limit) answered 502, 503 or 504 without a Connect
    /// error.
    #[error("transport error: {0}")]
    Transport(String),
    /// TLS failed: the broker's certificate is not trusted (a self-signed or private CA
    /// certificate needs [`ClientBuilder::add_root_certificate`](crate::ClientBuilder)), is
    /// not valid for the URL's host name, or expired; the server does not speak TLS on that
    /// port; or this build has no TLS support. Retrying does not help.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The broker URL answered 404 for a route every broker has (the Connect procedures,
    /// uploads, the client socket, status): the URL's host, port or path prefix is not a
    /// broker's. Retrying does not help.
    #[error("no wasimoff broker API at this URL: {0}")]
    EndpointNotFound(String),
    /// The broker answered something this client does not understand.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// A local problem: an unreadable file, a bad URL, an invalid argument to the client.
    #[error("{0}")]
    Local(String),
}

/// Why a task that ran did not finish normally, with what it wrote ([`Error::Task`]).
///
/// ```
/// use wasimoff_client::{FailureKind, Output, TaskFailure};
/// let failure = TaskFailure::new("trapped: unreachable; stderr: oops", Output::default());
/// assert_eq!(failure.kind, FailureKind::Trap);
/// assert_eq!(failure.to_string(), "trapped: unreachable; stderr: oops");
/// // Without the stderr the provider also sent, the tail stays part of the reason.
/// assert_eq!(failure.reason(), "trapped: unreachable; stderr: oops");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskFailure {
    /// The provider's description, as sent (`result.error`): for a guest that wrote to
    /// stderr it ends with `; stderr: ` and the last KiB of it.
    pub message: String,
    /// What kind of failure this is, from the description.
    pub kind: FailureKind,
    /// What the guest wrote before it failed: stdout, stderr (and whether the provider cut
    /// them), the task id and provider. The streams are empty when the guest wrote nothing,
    /// or when the provider does not send them (providers of the original system); `status`
    /// is only meaningful for a guest that exited and then missed an artifact.
    pub output: crate::Output,
}

impl TaskFailure {
    /// A failure with this description and output; the kind comes from the description.
    pub fn new(message: impl Into<String>, output: crate::Output) -> Self {
        let message = message.into();
        TaskFailure {
            kind: FailureKind::classify(&message),
            message,
            output,
        }
    }

    /// The description without the tail of stderr when [`output`](TaskFailure::output) holds
    /// stderr itself (so that printing both does not repeat it).
    ///
    /// ```
    /// use wasimoff_client::{Output, TaskFailure};
    /// let mut output = Output::default();
    /// output.stderr = "oops\n".into();
    /// let failure = TaskFailure::new("trapped: unreachable; stderr: oops", output);
    /// assert_eq!(failure.reason(), "trapped: unreachable");
    /// ```
    pub fn reason(&self) -> &str {
        match self
            .message
            .split_once(wasimoff_core::executor::STDERR_TAIL)
        {
            Some((reason, _)) if !self.output.stderr.is_empty() => reason,
            _ => &self.message,
        }
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The kind of a task's failure: trap, memory, time limit, ... (see [`TaskFailure::kind`]).
pub use wasimoff_core::remote::FailureKind;

impl Error {
    /// The error for a Connect code and message (as in a Connect error body or a client
    /// WebSocket error text). Unknown codes become [`Error::Broker`].
    pub fn from_code(
        code: &str,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> Self {
        let message = message.into();
        match code {
            "resource_exhausted" => Error::QueueFull {
                message,
                retry_after,
            },
            "invalid_argument" | "out_of_range" | "failed_precondition" => {
                Error::BadRequest(message)
            }
            "not_found" => Error::NotFound(message),
            "deadline_exceeded" => Error::DeadlineExceeded(message),
            "unavailable" => Error::Unavailable(message),
            "aborted" => Error::ProviderFailed(message),
            "unauthenticated" | "permission_denied" => Error::Unauthenticated(message),
            other => Error::Broker {
                code: other.to_owned(),
                message,
            },
        }
    }

    /// The error for an `Envelope.error` text of the client WebSocket, `<code>: <message>`.
    ///
    /// ```
    /// use wasimoff_client::Error;
    /// let e = Error::from_envelope_text("not_found: binary \"x.wasm\" is not in storage");
    /// assert_eq!(e, Error::NotFound("binary \"x.wasm\" is not in storage".into()));
    /// ```
    pub fn from_envelope_text(text: &str) -> Self {
        match text.split_once(": ") {
            Some((code, message))
                if !code.is_empty()
                    && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                Error::from_code(code, message, None)
            }
            _ => Error::Broker {
                code: "unknown".into(),
                message: text.to_owned(),
            },
        }
    }

    /// The Connect-style code of this error (`resource_exhausted`, `invalid_argument`, ...;
    /// `task_failed`, `transport`, `tls`, `endpoint_not_found`, `invalid_response` and `local`
    /// for the client's own kinds).
    pub fn code(&self) -> &str {
        match self {
            Error::QueueFull { .. } | Error::StorageFull(_) => "resource_exhausted",
            Error::BadRequest(_) => "invalid_argument",
            Error::NotFound(_) => "not_found",
            Error::DeadlineExceeded(_) => "deadline_exceeded",
            Error::Unavailable(_) => "unavailable",
            Error::ProviderFailed(_) => "aborted",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Task(_) => "task_failed",
            Error::Broker { code, .. } => code,
            Error::Transport(_) => "transport",
            Error::Tls(_) => "tls",
            Error::EndpointNotFound(_) => "endpoint_not_found",
            Error::InvalidResponse(_) => "invalid_response",
            Error::Local(_) => "local",
        }
    }

    /// Whether the client's setup is wrong rather than this request or the broker's load: TLS
    /// failed ([`Error::Tls`]), the URL has no broker API ([`Error::EndpointNotFound`]), or
    /// the token was refused ([`Error::Unauthenticated`], 401 and 403). Every request fails
    /// the same way until the URL, the token or the trusted certificates are fixed, so these
    /// are never worth retrying.
    ///
    /// ```
    /// use wasimoff_client::Error;
    /// assert!(Error::Tls("invalid peer certificate: UnknownIssuer".into()).is_permanent());
    /// assert!(Error::from_code("unauthenticated", "missing or wrong token", None).is_permanent());
    /// assert!(!Error::Transport("connection refused".into()).is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Error::Tls(_) | Error::EndpointNotFound(_) | Error::Unauthenticated(_)
        )
    }

    /// Whether the broker's queue was full ([`Error::QueueFull`]).
    pub fn is_queue_full(&self) -> bool {
        matches!(self, Error::QueueFull { .. })
    }

    /// Whether trying the same request again later may succeed: a full queue, an unavailable
    /// broker or a broken connection.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::QueueFull { .. } | Error::Unavailable(_) | Error::Transport(_)
        )
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
        if let Some(tls) = wasimoff_core::tls::find_rustls_error(&e) {
            return Error::Tls(match e.url() {
                Some(url) => format!("{}://{}: {tls}", url.scheme(), authority(url)),
                None => tls.to_string(),
            });
        }
        // The full chain: reqwest's own message is often just "error sending request".
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Error::Transport(text)
    }
}

/// `host[:port]` of a URL.
#[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
fn authority(url: &reqwest::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => String::new(),
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

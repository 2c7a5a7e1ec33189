//! Typed reasons for what peers send as text: a provider's refusal ([`Refusal`]), any
//! `Envelope.error` ([`RemoteError`]) and a task's `result.error` ([`FailureKind`]).
//!
//! The wire carries plain strings, and old peers only know those strings, so every type here
//! parses from the text and renders back to exactly the text our own peers send:
//! `RemoteError::parse(text).to_string() == text`.

use std::fmt;

use crate::executor::Termination;

/// Start of an `Envelope.error` by which a provider refuses a task; the broker then places it
/// elsewhere.
pub const UNAVAILABLE: &str = "unavailable";

const BUSY: &str = "provider is busy";
const DRAINING: &str = "provider is shutting down";
const ALREADY_RUNNING: &str = " is already running on this provider";

/// Start of `result.error` for [`Termination::TimedOut`] (and for a deadline that passed
/// before the task started).
pub const TIMED_OUT: &str = "deadline exceeded";
/// Start of `result.error` for [`Termination::MemoryExceeded`].
pub const MEMORY_EXCEEDED: &str = "memory limit of";
/// Start of `result.error` for [`Termination::FuelExhausted`].
pub const FUEL_EXHAUSTED: &str = "fuel limit of";
/// Start of `result.error` for [`Termination::Trapped`].
pub const TRAPPED: &str = "trapped";
/// Start of `result.error` for [`Termination::Cancelled`].
pub const CANCELLED: &str = "cancelled";
/// Start of the description of [`Termination::Exited`] (never a `result.error` on its own).
pub const EXITED: &str = "exited with status";

/// Why a provider did not take a task. On the wire: an `Envelope.error` starting with
/// `unavailable:`.
///
/// ```
/// use wasimoff_core::remote::Refusal;
/// let busy = Refusal::Busy { slots: Some(4) };
/// assert_eq!(busy.to_string(), "unavailable: provider is busy: all 4 slots are taken");
/// assert_eq!(Refusal::parse("unavailable: provider is shutting down"), Some(Refusal::Draining));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Every slot is taken (`slots`: how many the provider has, if it said).
    Busy {
        /// The provider's slot count.
        slots: Option<u32>,
    },
    /// The provider is shutting down.
    Draining,
    /// A task with this id already runs on the provider.
    AlreadyRunning {
        /// The task id, if the provider named it.
        id: Option<String>,
    },
    /// Any other refusal: the text after `unavailable:`.
    Other(String),
}

impl Refusal {
    /// The refusal in `text`, or `None` if `text` does not start with `unavailable`
    /// (case-insensitive). Texts other than the known ones are [`Refusal::Other`].
    pub fn parse(text: &str) -> Option<Refusal> {
        let head = text.get(..UNAVAILABLE.len())?;
        if !head.eq_ignore_ascii_case(UNAVAILABLE) {
            return None;
        }
        let rest = &text[UNAVAILABLE.len()..];
        let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
        Some(Refusal::parse_reason(rest))
    }

    /// The known reasons; anything else is kept as [`Refusal::Other`].
    fn parse_reason(reason: &str) -> Refusal {
        if reason == BUSY {
            return Refusal::Busy { slots: None };
        }
        if reason == DRAINING {
            return Refusal::Draining;
        }
        if let Some(slots) = reason
            .strip_prefix(BUSY)
            .and_then(|r| r.strip_prefix(": all "))
            .and_then(|r| r.strip_suffix(" slots are taken"))
            .and_then(|n| n.parse::<u32>().ok().filter(|s| s.to_string() == n))
        {
            return Refusal::Busy { slots: Some(slots) };
        }
        if let Some(task) = reason.strip_prefix("task")
            && let Some(id) = task.strip_suffix(ALREADY_RUNNING)
        {
            if id.is_empty() {
                return Refusal::AlreadyRunning { id: None };
            }
            if let Some(id) = id.strip_prefix(' ') {
                return Refusal::AlreadyRunning {
                    id: Some(id.to_owned()),
                };
            }
        }
        Refusal::Other(reason.to_owned())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{UNAVAILABLE}: ")?;
        match self {
            Refusal::Busy { slots: None } => f.write_str(BUSY),
            Refusal::Busy { slots: Some(n) } => write!(f, "{BUSY}: all {n} slots are taken"),
            Refusal::Draining => f.write_str(DRAINING),
            Refusal::AlreadyRunning { id: None } => write!(f, "task{ALREADY_RUNNING}"),
            Refusal::AlreadyRunning { id: Some(id) } => write!(f, "task {id}{ALREADY_RUNNING}"),
            Refusal::Other(reason) => f.write_str(reason),
        }
    }
}

impl From<Refusal> for String {
    fn from(refusal: Refusal) -> String {
        refusal.to_string()
    }
}

/// The text of an `Envelope.error` in a Response: a refusal, or a failure.
///
/// ```
/// use wasimoff_core::remote::{Refusal, RemoteError};
/// let text = "unavailable: task t1 is already running on this provider";
/// let error = RemoteError::parse(text);
/// assert_eq!(error, RemoteError::Refused(Refusal::AlreadyRunning { id: Some("t1".into()) }));
/// assert_eq!(error.to_string(), text);
/// assert_eq!(RemoteError::parse("no such file"), RemoteError::Failed("no such file".into()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RemoteError {
    /// The peer did not take the request; trying elsewhere may succeed.
    Refused(Refusal),
    /// Anything else, with the text as sent.
    Failed(String),
}

impl RemoteError {
    /// Classifies an `Envelope.error` text.
    pub fn parse(text: &str) -> RemoteError {
        match Refusal::parse(text) {
            Some(refusal) => RemoteError::Refused(refusal),
            None => RemoteError::Failed(text.to_owned()),
        }
    }

    /// Whether this is a [`RemoteError::Refused`].
    pub fn is_refusal(&self) -> bool {
        matches!(self, RemoteError::Refused(_))
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Refused(refusal) => refusal.fmt(f),
            RemoteError::Failed(text) => f.write_str(text),
        }
    }
}

impl From<Refusal> for RemoteError {
    fn from(refusal: Refusal) -> RemoteError {
        RemoteError::Refused(refusal)
    }
}

impl From<RemoteError> for String {
    fn from(error: RemoteError) -> String {
        error.to_string()
    }
}

/// What kind of failure a `Task.Wasip1.Response` `result.error` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The task ran past its time limit or its deadline.
    Timeout,
    /// The guest tried to grow memory past its limit.
    Memory,
    /// The guest burned all its fuel.
    Fuel,
    /// The guest trapped.
    Trap,
    /// The task was cancelled.
    Cancelled,
    /// Anything else: the task could not run (bad module, file, parameters) or the host failed.
    Other,
}

impl FailureKind {
    /// Classifies the text of a `result.error` by the prefixes the provider writes.
    ///
    /// ```
    /// use wasimoff_core::remote::FailureKind;
    /// assert_eq!(FailureKind::classify("deadline exceeded: ran longer than 1s"), FailureKind::Timeout);
    /// assert_eq!(FailureKind::classify("invalid module: bad magic"), FailureKind::Other);
    /// ```
    pub fn classify(result_error: &str) -> FailureKind {
        const KINDS: [(&str, FailureKind); 5] = [
            (TIMED_OUT, FailureKind::Timeout),
            (MEMORY_EXCEEDED, FailureKind::Memory),
            (FUEL_EXHAUSTED, FailureKind::Fuel),
            (TRAPPED, FailureKind::Trap),
            (CANCELLED, FailureKind::Cancelled),
        ];
        KINDS
            .into_iter()
            .find(|(prefix, _)| starts_with_word(result_error, prefix))
            .map_or(FailureKind::Other, |(_, kind)| kind)
    }

    /// A short lowercase name (`timeout`, `memory`, `fuel`, `trap`, `cancelled`, `other`), e.g.
    /// for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Fuel => "fuel",
            FailureKind::Trap => "trap",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Other => "other",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Termination {
    /// The kind of failure this is; `None` for [`Termination::Exited`], which is a result.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            Termination::Exited(_) => None,
            Termination::Trapped(_) => Some(FailureKind::Trap),
            Termination::TimedOut(_) => Some(FailureKind::Timeout),
            Termination::MemoryExceeded(_) => Some(FailureKind::Memory),
            Termination::FuelExhausted(_) => Some(FailureKind::Fuel),
            Termination::Cancelled => Some(FailureKind::Cancelled),
        }
    }
}

/// Whether `text` starts with `prefix` as a whole word (not `trappedness` for `trapped`).
fn starts_with_word(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::executor::{ExecError, ExecOutput};
    use crate::proto::task::wasip1;

    /// Every refusal text our providers send, with its parsed form.
    fn known_refusals() -> Vec<(&'static str, Refusal)> {
        vec![
            (
                "unavailable: provider is busy: all 4 slots are taken",
                Refusal::Busy { slots: Some(4) },
            ),
            (
                "unavailable: provider is busy: all 0 slots are taken",
                Refusal::Busy { slots: Some(0) },
            ),
            (
                "unavailable: provider is busy",
                Refusal::Busy { slots: None },
            ),
            ("unavailable: provider is shutting down", Refusal::Draining),
            (
                "unavailable: task t-1 is already running on this provider",
                Refusal::AlreadyRunning {
                    id: Some("t-1".into()),
                },
            ),
            (
                "unavailable: task a b is already running on this provider",
                Refusal::AlreadyRunning {
                    id: Some("a b".into()),
                },
            ),
            (
                "unavailable: task is already running on this provider",
                Refusal::AlreadyRunning { id: None },
            ),
            (
                "unavailable: out of disk",
                Refusal::Other("out of disk".into()),
            ),
            (
                // Not in the canonical form, so kept as it came.
                "unavailable: provider is busy: all 007 slots are taken",
                Refusal::Other("provider is busy: all 007 slots are taken".into()),
            ),
            (
                "unavailable: provider is busy: all 99999999999 slots are taken",
                Refusal::Other("provider is busy: all 99999999999 slots are taken".into()),
            ),
            (
                "unavailable: tasks are not taken",
                Refusal::Other("tasks are not taken".into()),
            ),
        ]
    }

    #[test]
    fn refusals_parse_and_render_back() {
        for (text, refusal) in known_refusals() {
            assert_eq!(Refusal::parse(text).as_ref(), Some(&refusal), "{text}");
            assert_eq!(refusal.to_string(), text);
            assert_eq!(String::from(refusal.clone()), text);
            let error = RemoteError::parse(text);
            assert_eq!(error, RemoteError::Refused(refusal), "{text}");
            assert!(error.is_refusal());
            assert_eq!(error.to_string(), text, "round trip");
        }
    }

    #[test]
    fn refusals_are_recognised_loosely() {
        for (text, refusal) in [
            ("Unavailable: provider is shutting down", Refusal::Draining),
            ("UNAVAILABLE:provider is shutting down", Refusal::Draining),
            (
                "unavailable provider is busy",
                Refusal::Busy { slots: None },
            ),
            ("unavailable", Refusal::Other(String::new())),
            ("unavailable:", Refusal::Other(String::new())),
        ] {
            assert_eq!(RemoteError::parse(text), RemoteError::Refused(refusal));
        }
    }

    #[test]
    fn other_errors_are_failures_with_their_text() {
        for text in [
            "",
            "unavail",
            "no such file",
            "task without info.id",
            "pyodide is not supported by this provider",
            "request dropped without an answer",
            "provider unavailable",
        ] {
            let error = RemoteError::parse(text);
            assert_eq!(error, RemoteError::Failed(text.into()));
            assert!(!error.is_refusal());
            assert_eq!(error.to_string(), text, "round trip");
            assert_eq!(Refusal::parse(text), None);
        }
        // Not on a char boundary after the prefix length: no panic.
        assert_eq!(
            RemoteError::parse("unavailabl€"),
            RemoteError::Failed("unavailabl€".into())
        );
    }

    /// The `result.error` a termination becomes on the wire.
    fn wire_error(termination: Termination, stderr: &'static str) -> String {
        let output = ExecOutput {
            termination,
            stdout: Default::default(),
            stderr: stderr.into(),
            stdout_truncated: false,
            stderr_truncated: false,
            artifacts: None,
            error: None,
        };
        match output.into_wasip1_parts().0 {
            wasip1::response::Result::Error(e) => e,
            wasip1::response::Result::Ok(o) => panic!("expected an error, got {o:?}"),
        }
    }

    #[test]
    fn every_failed_termination_is_classified() {
        let cases = [
            (
                Termination::TimedOut(Duration::from_secs(3)),
                "deadline exceeded: ran longer than 3s",
            ),
            (
                Termination::MemoryExceeded(1 << 20),
                "memory limit of 1048576 bytes exceeded",
            ),
            (
                Termination::FuelExhausted(500),
                "fuel limit of 500 exhausted",
            ),
            (
                Termination::Trapped("unreachable".into()),
                "trapped: unreachable",
            ),
            (Termination::Cancelled, "cancelled"),
        ];
        for (termination, text) in cases {
            let kind = termination.failure_kind().unwrap();
            assert_eq!(wire_error(termination.clone(), ""), text, "exact text");
            assert_eq!(FailureKind::classify(text), kind, "{text}");
            let with_stderr = wire_error(termination, "panicked at main.rs\n");
            assert_eq!(with_stderr, format!("{text}; stderr: panicked at main.rs"));
            assert_eq!(FailureKind::classify(&with_stderr), kind, "{with_stderr}");
        }
        assert_eq!(Termination::Exited(1).failure_kind(), None);
    }

    #[test]
    fn other_result_errors_are_other() {
        let exec_errors = [
            ExecError::InvalidModule("bad magic".into()),
            ExecError::InvalidRootfs("zip slip".into()),
            ExecError::MissingArtifact("/out".into()),
            ExecError::ArtifactsTooLarge("9 MiB".into()),
            ExecError::InvalidTask("empty argv".into()),
            ExecError::Host("no threads".into()),
        ];
        for error in exec_errors {
            let text = error.to_string();
            assert_eq!(FailureKind::classify(&text), FailureKind::Other, "{text}");
        }
        for text in [
            "",
            "exited with status 1",
            "task without params",
            "cannot fetch sha256:00: not found",
            "trappedness",
            "cancelledx",
        ] {
            assert_eq!(FailureKind::classify(text), FailureKind::Other, "{text}");
        }
        assert_eq!(
            FailureKind::classify("deadline exceeded before the task started"),
            FailureKind::Timeout
        );
    }

    #[test]
    fn kinds_have_names() {
        let names: Vec<_> = [
            FailureKind::Timeout,
            FailureKind::Memory,
            FailureKind::Fuel,
            FailureKind::Trap,
            FailureKind::Cancelled,
            FailureKind::Other,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            names,
            ["timeout", "memory", "fuel", "trap", "cancelled", "other"]
        );
    }
}

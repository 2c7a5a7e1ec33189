//! The operator view: `GET /api/providers`, `GET /api/dashboard` (JSON, polled) and the
//! dashboard page at `/status` (and at `/` when no page is configured).
//!
//! The dispatcher owns the provider registry, so the JSON is a snapshot it takes on a
//! [`Command::Dashboard`] (built in O(providers + kept failures), no I/O, reused for a quarter
//! of a second so that polling cannot load the dispatcher); it is serialized here. The JSON routes take
//! a token like `/api/status` does (a client's or a provider's, when tokens are configured);
//! the page itself is static and public, and sends the token it is given in its URL fragment
//! (`/status#token=...`, never sent to the server) as a bearer header.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::dispatch::Command;
use crate::error::TaskError;
use crate::state::App;

/// How a provider runs its tasks, as the broker tells from the socket's upgrade request: a
/// browser always sends `Origin` on a WebSocket upgrade, a native provider (or the npm package
/// in Node) sends none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ProviderKind {
    Native,
    Browser,
}

impl ProviderKind {
    pub(crate) fn of(headers: &HeaderMap) -> ProviderKind {
        if headers.contains_key(header::ORIGIN) {
            ProviderKind::Browser
        } else {
            ProviderKind::Native
        }
    }
}

/// One connected provider, as `/api/providers` lists it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProviderView {
    /// The broker's id of the connection (`provider-<n>`).
    pub(crate) id: String,
    /// The name it gave (`?id=`).
    pub(crate) name: String,
    pub(crate) kind: ProviderKind,
    /// Its `User-Agent` (at most 256 characters).
    pub(crate) agent: String,
    /// Slots it offers (`Event.ProviderResources.concurrency`: workers + prefetch; 0 while
    /// draining).
    pub(crate) slots: u32,
    /// Of the slots, tasks that run at once and tasks accepted to wait for a worker, as the
    /// provider last reported (`ProviderResources` fields 100 and 101, sent by our providers);
    /// `null` for providers that do not say (the original's).
    pub(crate) workers: Option<u32>,
    pub(crate) prefetch: Option<u32>,
    /// Tasks running there now.
    pub(crate) running: u32,
    /// Backed off after refusing a task as busy.
    pub(crate) backed_off: bool,
    /// Results it returned on this connection.
    pub(crate) done: u64,
    /// Attempts that failed through it (lost, wedged, an error or a malformed answer).
    pub(crate) failed: u64,
    /// Unix milliseconds.
    pub(crate) connected_at: i64,
    /// Unix milliseconds of the last message from it (an event, a ping's answer, a result).
    pub(crate) last_seen: i64,
}

/// A task or attempt that failed, kept for the dashboard.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FailureView {
    /// Unix milliseconds.
    pub(crate) at: i64,
    pub(crate) task: String,
    /// The provider's name, if one was involved.
    pub(crate) provider: Option<String>,
    /// The task's outcome (as in `wasimoff_tasks_completed_total`), or `attempt` for an attempt
    /// that failed through its provider (the task may have been retried).
    pub(crate) outcome: String,
    /// What went wrong, at most [`FAILURE_TEXT`] bytes.
    pub(crate) message: String,
}

/// Failures kept for the dashboard; older ones are dropped.
pub(crate) const FAILURES_KEPT: usize = 32;
/// Bytes of one failure's message at most (cut at a character boundary, marked with `…`).
pub(crate) const FAILURE_TEXT: usize = 240;

/// Cuts `text` to at most [`FAILURE_TEXT`] bytes.
pub(crate) fn truncate(mut text: String) -> String {
    if text.len() > FAILURE_TEXT {
        let mut end = FAILURE_TEXT - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Cumulative figures since the broker started; the dashboard derives rates from two polls.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Totals {
    /// Tasks answered.
    pub(crate) completed: u64,
    /// Tasks answered with another outcome than `ok`.
    pub(crate) failed: u64,
    /// Sum of the queue waits, seconds.
    pub(crate) queue_wait_seconds: f64,
    /// Sum of the run times of tasks with a provider's result, seconds, and how many.
    pub(crate) run_seconds: f64,
    pub(crate) run_count: u64,
}

/// `/api/dashboard`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Dashboard {
    /// Unix milliseconds at the snapshot.
    pub(crate) now: i64,
    pub(crate) version: &'static str,
    pub(crate) queued: u64,
    pub(crate) running: u64,
    pub(crate) held_bytes: u64,
    pub(crate) slots: u64,
    pub(crate) totals: Totals,
    pub(crate) providers: Vec<ProviderView>,
    /// Newest first.
    pub(crate) failures: Vec<FailureView>,
}

async fn snapshot(app: &App, headers: &HeaderMap) -> Result<Arc<Dashboard>, Response> {
    app.check_any(headers, None)
        .map_err(IntoResponse::into_response)?;
    let (reply, answer) = oneshot::channel();
    app.dispatch.send(Command::Dashboard { reply });
    answer
        .await
        .map_err(|_| TaskError::ShuttingDown.into_response())
}

/// `GET /api/providers`: the connected providers, by id.
pub(crate) async fn providers(State(app): State<App>, headers: HeaderMap) -> Response {
    match snapshot(&app, &headers).await {
        Ok(dashboard) => axum::Json(&dashboard.providers).into_response(),
        Err(response) => response,
    }
}

/// `GET /api/dashboard`: what the dashboard page shows.
pub(crate) async fn dashboard(State(app): State<App>, headers: HeaderMap) -> Response {
    match snapshot(&app, &headers).await {
        Ok(dashboard) => axum::Json(&*dashboard).into_response(),
        Err(response) => response,
    }
}

/// The dashboard page: one self-contained HTML file (no external requests).
pub(crate) const PAGE: &str = include_str!("operator/status.html");

/// `GET /status`.
pub(crate) async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                     connect-src 'self'; img-src 'self' data:",
                ),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
        .into_response()
}

/// Unix milliseconds now.
pub(crate) fn unix_millis() -> i64 {
    wasimoff_core::platform::unix_nanos() / 1_000_000
}

/// A provider's workers and prefetch slots in one atomic word, which its session writes and
/// the operator view reads: [`SPLIT_UNKNOWN`] until the provider tells them.
#[derive(Debug)]
pub(crate) struct Split(std::sync::atomic::AtomicU64);

/// [`Split`]'s value while the provider has not told its split.
const SPLIT_UNKNOWN: u64 = u64::MAX;

impl Default for Split {
    fn default() -> Self {
        Split(std::sync::atomic::AtomicU64::new(SPLIT_UNKNOWN))
    }
}

impl Split {
    /// Records what a `ProviderResources` said (both fields, or it is unknown again).
    pub(crate) fn store(&self, workers: Option<u32>, prefetch: Option<u32>) {
        let value = match (workers, prefetch) {
            (Some(w), Some(p)) if (w, p) != (u32::MAX, u32::MAX) => {
                (u64::from(w) << 32) | u64::from(p)
            }
            _ => SPLIT_UNKNOWN,
        };
        self.0.store(value, std::sync::atomic::Ordering::Relaxed);
    }

    /// `(workers, prefetch)`, if the provider told them.
    pub(crate) fn load(&self) -> Option<(u32, u32)> {
        let value = self.0.load(std::sync::atomic::Ordering::Relaxed);
        (value != SPLIT_UNKNOWN).then_some(((value >> 32) as u32, value as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_round_trips_and_is_unknown_until_told() {
        let split = Split::default();
        assert_eq!(split.load(), None);
        split.store(Some(4), Some(1));
        assert_eq!(split.load(), Some((4, 1)));
        split.store(Some(0), Some(0));
        assert_eq!(split.load(), Some((0, 0)));
        split.store(Some(4), None);
        assert_eq!(split.load(), None);
    }

    #[test]
    fn failure_text_is_bounded_by_bytes() {
        assert_eq!(truncate("short".into()), "short");
        let long = "é".repeat(FAILURE_TEXT);
        let cut = truncate(long);
        assert!(cut.len() <= FAILURE_TEXT, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }
}

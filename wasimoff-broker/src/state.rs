//! The state every route shares, and the checks several routes need (tokens, origins).

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize},
};

use axum::http::{HeaderMap, header};
use tokio_util::sync::CancellationToken;
use wasimoff_core::store::Store;

use crate::config::BrokerConfig;
use crate::dispatch::Dispatch;
use crate::error::TaskError;
use crate::metrics::Metrics;

/// Shared by all routes.
pub(crate) struct AppState {
    pub(crate) config: BrokerConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) dispatch: Dispatch,
    pub(crate) metrics: Arc<Metrics>,
    /// Random per boot, so task ids never repeat across restarts.
    pub(crate) boot_id: String,
    pub(crate) task_counter: AtomicU64,
    pub(crate) provider_counter: AtomicU64,
    /// Bytes of task bodies being read now (see [`crate::body::WholeBody`]).
    pub(crate) reading: AtomicUsize,
    /// Cancelled when the broker shuts down: sockets close, new work is refused.
    pub(crate) shutdown: CancellationToken,
    /// Tasks submitted to be fetched later by id, and their kept results.
    pub(crate) detached: std::sync::Mutex<crate::detached::Detached>,
    /// The fetches and waits waiting for detached tasks to finish, by id.
    pub(crate) waiters: crate::by_id::Waiters,
    /// Set when the broker starts shutting down, before the dispatcher fails what it holds.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
    /// Where detached tasks and their results are kept durably (`None`: in memory only).
    pub(crate) journal: Option<Arc<dyn crate::journal::Journal>>,
    /// The NATS JetStream state shared with other brokers (`--nats`); then there is no journal.
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
}

pub(crate) type App = Arc<AppState>;

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("boot_id", &self.boot_id)
            .finish()
    }
}

/// The bearer token of a request, from `Authorization: Bearer <token>`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Compares in constant time, so tokens cannot be guessed byte by byte from timings.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl AppState {
    /// Checks a client's bearer token (if client tokens are configured).
    pub(crate) fn check_client(&self, headers: &HeaderMap) -> Result<(), TaskError> {
        check(&self.config.client_tokens, bearer(headers))
    }

    /// Checks a provider's token: bearer header or `?token=` (if provider tokens are set).
    pub(crate) fn check_provider(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(), TaskError> {
        check(&self.config.provider_tokens, bearer(headers).or(query))
    }

    /// Downloads serve providers and clients: either kind of token will do.
    pub(crate) fn check_any(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<(), TaskError> {
        if self.config.client_tokens.is_empty() && self.config.provider_tokens.is_empty() {
            return Ok(());
        }
        let token = bearer(headers).or(query);
        check(&self.config.client_tokens, token)
            .or_else(|_| check(&self.config.provider_tokens, token))
    }

    /// Whether a browser on `Origin` may open the provider socket.
    pub(crate) fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return true; // not a browser
        };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin.split("://").nth(1).unwrap_or(origin);
        if origin_host == host {
            return true;
        }
        self.config.allowed_origins.iter().any(|pattern| {
            let subject = if pattern.contains("://") {
                origin
            } else {
                origin_host
            };
            glob_match(pattern, subject)
        })
    }
}

fn check(tokens: &[String], given: Option<&str>) -> Result<(), TaskError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let Some(given) = given else {
        return Err(TaskError::Unauthenticated(
            "a bearer token is required".into(),
        ));
    };
    if tokens.iter().any(|t| same(t, given)) {
        Ok(())
    } else {
        Err(TaskError::Unauthenticated("unknown token".into()))
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        if i == parts.len() - 1 {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("https://*.example.org", "https://a.example.org"));
        assert!(!glob_match(
            "https://*.example.org",
            "https://example.org.evil"
        ));
        assert!(glob_match("localhost:*", "localhost:5173"));
        assert!(!glob_match("localhost", "localhost:5173"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXbY"));
    }
}

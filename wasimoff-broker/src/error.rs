//! [`TaskError`]: why the broker could not give a client a task result, and how each reason
//! maps to Connect codes and HTTP statuses.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

/// The [`TaskError::DeadlineExceeded`] text for a task whose deadline had passed already.
pub(crate) const PASSED_AT_SUBMISSION: &str =
    "the task's deadline had passed when it was submitted";

/// Why a task submission did not produce a result.
// Serde: the task journal keeps a task's error as its result (`journal::ResultRecord`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TaskError {
    /// The request is malformed or violates a limit.
    #[error("{0}")]
    InvalidArgument(String),
    /// A referenced file is not in the store.
    #[error("{0}")]
    NotFound(String),
    /// The queue is full; retry later.
    #[error("queue full: {0} tasks are waiting")]
    QueueFull(usize),
    /// Unanswered tasks hold the broker's whole byte budget; retry later.
    #[error("queue full: tasks hold {held} bytes of the {limit}-byte budget (max_queue_bytes)")]
    QueueBytesFull {
        /// Bytes held now.
        held: usize,
        /// The budget.
        limit: usize,
    },
    /// `immediate` was requested and no provider slot is free, or nobody can run it.
    #[error("{0}")]
    Unavailable(String),
    /// The task's deadline (or the broker's task timeout) passed: what happened to it (queued
    /// for how long and why, or running where and for how long).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Providers failed the task (lost, timed out, or errored) more often than allowed.
    #[error("provider failed: {0}")]
    ProviderFailed(String),
    /// The client gave up (it is gone; nobody reads this).
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// The broker is shutting down.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// Missing or wrong credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The store cannot take the blob even after evicting everything nothing holds (aliases
    /// and tasks in flight hold blobs); it may fit once tasks finish.
    #[error("{0}")]
    StoreFull(String),
    /// The credentials do not allow it (an alias of another client token).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The client token's storage quota would be exceeded.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A detached task's result is larger than the broker keeps for fetching later.
    #[error("{0}")]
    ResultTooLarge(String),
    /// A fault of the broker itself (storage backend).
    #[error("internal error: {0}")]
    Internal(String),
}

impl TaskError {
    /// The Connect error code.
    pub fn connect_code(&self) -> &'static str {
        match self {
            TaskError::InvalidArgument(_) => "invalid_argument",
            TaskError::NotFound(_) => "not_found",
            TaskError::QueueFull(_) | TaskError::QueueBytesFull { .. } => "resource_exhausted",
            TaskError::Unavailable(_) | TaskError::ShuttingDown | TaskError::StoreFull(_) => {
                "unavailable"
            }
            TaskError::DeadlineExceeded(_) => "deadline_exceeded",
            TaskError::ProviderFailed(_) => "aborted",
            TaskError::Cancelled(_) => "canceled",
            TaskError::Unauthenticated(_) => "unauthenticated",
            TaskError::PermissionDenied(_) => "permission_denied",
            TaskError::QuotaExceeded(_) => "resource_exhausted",
            // Not worth retrying: the same task makes the same output.
            TaskError::ResultTooLarge(_) => "failed_precondition",
            TaskError::Internal(_) => "internal",
        }
    }

    /// The HTTP status Connect uses for the code.
    pub fn status(&self) -> StatusCode {
        match self {
            TaskError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            TaskError::NotFound(_) => StatusCode::NOT_FOUND,
            TaskError::QueueFull(_) | TaskError::QueueBytesFull { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            TaskError::Unavailable(_) | TaskError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            TaskError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            TaskError::ProviderFailed(_) => StatusCode::CONFLICT,
            TaskError::Cancelled(_) => StatusCode::REQUEST_TIMEOUT,
            TaskError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            TaskError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            // Not 429 (what Connect maps the code to): waiting does not free a quota.
            TaskError::QuotaExceeded(_) | TaskError::StoreFull(_) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            TaskError::ResultTooLarge(_) => StatusCode::BAD_REQUEST,
            TaskError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The text for `Envelope.error` on the client WebSocket: `<connect code>: <message>`.
    pub fn envelope_text(&self) -> String {
        format!("{}: {self}", self.connect_code())
    }
}

impl From<wasimoff_core::store::StoreError> for TaskError {
    fn from(e: wasimoff_core::store::StoreError) -> Self {
        use wasimoff_core::store::StoreError as S;
        match e {
            S::InvalidRef(_) | S::InvalidAlias(..) | S::TooLarge { .. } => {
                TaskError::InvalidArgument(e.to_string())
            }
            S::NotFound(_) => TaskError::NotFound(e.to_string()),
            S::Full(_) => TaskError::StoreFull(e.to_string()),
            S::Forbidden(m) => TaskError::PermissionDenied(m),
            S::QuotaExceeded {
                held,
                adding,
                limit,
            } => TaskError::QuotaExceeded(format!(
                "storage quota of {limit} bytes per client token (client_quota) exceeded: \
                 this token's aliases hold {held} bytes and {adding} more do not fit; \
                 remove (DELETE /api/storage/<alias>) or re-point an alias first"
            )),
            _ => TaskError::Internal(e.to_string()),
        }
    }
}

/// A Connect error response: `{"code": ..., "message": ...}` with the code's HTTP status.
impl IntoResponse for TaskError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.connect_code(), "message": self.to_string() });
        let mut response = (self.status(), axum::Json(body)).into_response();
        if matches!(
            self,
            TaskError::QueueFull(_) | TaskError::QueueBytesFull { .. }
        ) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

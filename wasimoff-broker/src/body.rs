//! [`WholeBody`]: a request body read whole, into one buffer sized from its `Content-Length`.

use axum::{
    RequestExt as _,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use std::sync::atomic::Ordering;

use crate::error::TaskError;
use crate::state::App;

/// The request body, read whole (up to the router's body limit), and only from a client with a
/// valid token: an unauthenticated request is refused before any of its body is read.
///
/// A body for a task (Connect `RunWasip1`/`RunPyodide`, the exec route) is also checked against
/// the byte budget before it is read: if its `Content-Length`, the bodies of other tasks being
/// read and the bytes unanswered tasks hold exceed `max_queue_bytes`, it is refused with 429 at
/// once. The check is advisory (the dispatcher's accounting at submission decides), but it
/// keeps a flood of large tasks that will not fit from being read and decoded first.
///
/// Unlike axum's `Bytes` extractor, which collects the body's pieces and then copies them into
/// one buffer at the end, this copies each piece as it arrives into a buffer allocated once from
/// `Content-Length`. The work is spread over the upload instead of done in one go on a runtime
/// worker: two 190 MB uploads at once held both workers of a 2-core broker for 100-230 ms each
/// in that last copy, and `/healthz` waited that long. A body declared larger than the limit is
/// refused (413) before any of it is read.
#[derive(Debug)]
pub(crate) struct WholeBody(pub(crate) Bytes);

/// Bytes of task bodies being read now, counted against the byte budget until they are decoded.
#[derive(Debug)]
pub(crate) struct Reading {
    app: App,
    bytes: usize,
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.app.reading.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How much of an unauthenticated request's body is read (and dropped) so that a client with a
/// wrong token can read its 401; larger bodies are cut off.
const UNAUTHENTICATED_DRAIN: u64 = 1 << 20;

/// Whether a request carries a task (charged to the byte budget) rather than a file.
fn is_task(request: &Request) -> bool {
    let path = request.uri().path();
    path.contains("/api/client/run/")
        || path.ends_with("/RunWasip1")
        || path.ends_with("/RunPyodide")
        || path.ends_with("/api/client/tasks")
        || path.ends_with("/api/client/tasks/batch")
}

/// Reserves a task body's declared size, or refuses it when the budget cannot take it.
fn reserve(app: &App, declared: u64) -> Result<Reading, TaskError> {
    let bytes = usize::try_from(declared).unwrap_or(usize::MAX);
    let limit = app.config.limits.max_queue_bytes;
    let held = usize::try_from(app.metrics.held_bytes.get()).unwrap_or(0);
    let reading = app.reading.fetch_add(bytes, Ordering::AcqRel);
    let reservation = Reading {
        app: app.clone(),
        bytes,
    };
    if held.saturating_add(reading).saturating_add(bytes) > limit
        && held.saturating_add(reading) > 0
    {
        // Only when something else holds bytes: a lone task is judged at submission (a task
        // larger than the whole budget gets its 400 there).
        return Err(TaskError::QueueBytesFull {
            held: held.saturating_add(reading),
            limit,
        });
    }
    Ok(reservation)
}

impl FromRequest<App> for WholeBody {
    type Rejection = Response;

    async fn from_request(request: Request, app: &App) -> Result<Self, Response> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let expects_continue = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let task = is_task(&request);
        let authorized = app.check_client(request.headers());
        let mut body = request.into_limited_body();
        // With the router's limit applied, the upper bound is min(Content-Length, limit).
        let room = body.size_hint().upper();
        let mut reading = None;
        // A refusal, and how much of the body to read and drop before answering it.
        let refusal = match authorized {
            Err(e) => Some((e.into_response(), UNAUTHENTICATED_DRAIN)),
            Ok(()) if declared.zip(room).is_some_and(|(d, r)| d > r) => {
                let (declared, room) = (declared.unwrap_or(0), room.unwrap_or(0));
                let text =
                    format!("request body of {declared} bytes exceeds the limit of {room} bytes\n");
                // Answered at once: the client cannot send it all anyway.
                return Err((StatusCode::PAYLOAD_TOO_LARGE, text).into_response());
            }
            Ok(()) => match (task, declared) {
                (true, Some(declared)) => match reserve(app, declared) {
                    Ok(r) => {
                        reading = Some(r);
                        None
                    }
                    Err(e) => Some((e.into_response(), u64::MAX)),
                },
                _ => None,
            },
        };
        if let Some((response, drain)) = refusal {
            // A client that sent `Expect: 100-continue` has not sent its body and will not;
            // any other is still sending it and could not read an answer given before it is
            // done (its write fails first), so the body is read into nothing first.
            if !expects_continue {
                let mut left = drain;
                while let Some(Ok(frame)) = body.frame().await {
                    let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                    left = left.saturating_sub(n);
                    if left == 0 {
                        break;
                    }
                }
            }
            return Err(response);
        }
        let _reading = reading;
        // Reserved, not yet touched: the pages are taken as the bytes arrive. Fallible, so that
        // a declared size the system will not grant is a 503, not an abort.
        let capacity = usize::try_from(declared.min(room).unwrap_or(0)).unwrap_or(usize::MAX);
        let mut bytes = Vec::new();
        if bytes.try_reserve_exact(capacity).is_err() {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot take a request body of {capacity} bytes now\n"),
            )
                .into_response());
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(rejection)?;
            if let Ok(data) = frame.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        Ok(WholeBody(Bytes::from(bytes)))
    }
}

/// 413 when the body outgrew the limit, else 400 (a broken or too slow body).
fn rejection(error: axum::Error) -> Response {
    let too_large =
        std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .any(|e| e.is::<http_body_util::LengthLimitError>());
    if too_large {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body exceeds the limit\n",
        )
            .into_response()
    } else {
        (
            StatusCode::BAD_REQUEST,
            format!("failed to read the request body: {error}\n"),
        )
            .into_response()
    }
}

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

/// The request body, read whole (up to the router's body limit).
///
/// Unlike axum's `Bytes` extractor, which collects the body's pieces and then copies them into
/// one buffer at the end, this copies each piece as it arrives into a buffer allocated once from
/// `Content-Length`. The work is spread over the upload instead of done in one go on a runtime
/// worker: two 190 MB uploads at once held both workers of a 2-core broker for 100-230 ms each
/// in that last copy, and `/healthz` waited that long. A body declared larger than the limit is
/// refused (413) before any of it is read.
#[derive(Debug)]
pub(crate) struct WholeBody(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for WholeBody {
    type Rejection = Response;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Response> {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut body = request.into_limited_body();
        // With the router's limit applied, the upper bound is min(Content-Length, limit).
        let room = body.size_hint().upper();
        if let (Some(declared), Some(room)) = (declared, room)
            && declared > room
        {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body of {declared} bytes exceeds the limit of {room} bytes\n"),
            )
                .into_response());
        }
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

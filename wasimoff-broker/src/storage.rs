//! Storage routes — `POST /api/storage/upload[?name=alias]`, `GET /api/storage/{name}`,
//! `DELETE /api/storage/{alias}` — and the broker's storage policy on top of the [`Store`]:
//! who owns an alias and what quota applies, which blobs tasks in flight pin, and how long exec
//! outputs are kept.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes},
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use wasimoff_core::store::{AliasOptions, PutOptions, Ref, Store, StoreError};

use crate::body::WholeBody;
use crate::error::TaskError;
use crate::state::{App, AppState, bearer};

/// Blobs a task names (its module, its rootfs), pinned in the store from the moment they are
/// resolved until the task is answered, so that eviction never removes a file a provider is
/// about to fetch. Dropping it releases the pins.
pub(crate) struct Pins {
    store: Arc<dyn Store>,
    refs: Vec<Ref>,
}

impl Pins {
    pub(crate) fn new(store: Arc<dyn Store>) -> Pins {
        Pins {
            store,
            refs: Vec::new(),
        }
    }

    /// Takes over one pin of `r` (from [`Store::pin`] or a pinned put).
    pub(crate) fn push(&mut self, r: Ref) {
        self.refs.push(r);
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for r in &self.refs {
            self.store.unpin(r);
        }
    }
}

/// The owner id of a client token: a hash, so that no token is written to the store.
fn owner_id(token: &str) -> String {
    let digest = Ref::of(format!("wasimoff alias owner\0{token}").as_bytes());
    format!(
        "token-{}",
        &digest.as_str()[Ref::PREFIX.len()..Ref::PREFIX.len() + 32]
    )
}

impl AppState {
    /// Who owns the aliases a client request sets: its token, when client tokens are
    /// configured (the token was checked before); nobody in open mode.
    pub(crate) fn client_owner(&self, headers: &HeaderMap) -> Option<String> {
        if self.config.client_tokens.is_empty() {
            return None;
        }
        bearer(headers).map(owner_id)
    }

    /// Points an alias at a stored blob for `owner`, within the client quota: another owner's
    /// alias is refused (403), and so is a change past the quota (507).
    pub(crate) async fn set_alias_for(
        &self,
        alias: &str,
        target: &Ref,
        owner: Option<&str>,
    ) -> Result<(), StoreError> {
        let options = AliasOptions {
            owner,
            quota: owner.and(self.config.limits.client_quota),
        };
        match self.store.set_alias_with(alias, target, options).await {
            Err(StoreError::Forbidden(_)) => Err(StoreError::Forbidden(format!(
                "alias {alias:?} belongs to another client token; choose another name"
            ))),
            Err(StoreError::NotFound(_)) => Err(StoreError::Full(format!(
                "{target} was evicted before its alias could be set; the store is nearly \
                 full of held blobs"
            ))),
            other => other,
        }
    }

    /// Stores an exec call's stderr or artifacts as an ephemeral blob that expires after
    /// `output_ttl`; `None` when outputs are not kept (a zero TTL).
    pub(crate) async fn store_output(&self, bytes: Bytes) -> Result<Option<Ref>, StoreError> {
        let ttl = self.config.limits.output_ttl;
        if ttl.is_zero() {
            return Ok(None);
        }
        self.store
            .put_with(bytes, PutOptions::ephemeral(ttl))
            .await
            .map(Some)
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DownloadQuery {
    token: Option<String>,
}

fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        StoreError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        StoreError::InvalidAlias(..) | StoreError::InvalidRef(_) => StatusCode::BAD_REQUEST,
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::Forbidden(_) | StoreError::QuotaExceeded { .. } => {
            let e = TaskError::from(e);
            return (e.status(), format!("{e}\n")).into_response();
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

/// Stores a wasm module or zip (sniffed by magic bytes; modules are validated). Answers the
/// `sha256:` ref in the body and the `x-wasimoff-ref` header.
pub(crate) async fn upload(
    State(app): State<App>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    WholeBody(body): WholeBody,
) -> Response {
    // `WholeBody` has checked the client's token before reading the body.
    let r = match app.store_upload(body).await {
        Ok(r) => r,
        Err(TaskError::InvalidArgument(m)) if m.starts_with("uploads must be") => {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("{m}\n")).into_response();
        }
        Err(e) => return (e.status(), format!("{e}\n")).into_response(),
    };
    if let Some(alias) = query.name.filter(|n| !n.is_empty())
        && let Err(e) = app
            .set_alias_for(&alias, &r, app.client_owner(&headers).as_deref())
            .await
    {
        return store_error(e);
    }
    let mut response = (StatusCode::OK, r.to_string()).into_response();
    if let Ok(v) = HeaderValue::from_str(r.as_str()) {
        response.headers_mut().insert("x-wasimoff-ref", v);
    }
    response
}

/// Serves a blob by ref or alias, with its media type and ref; any origin may fetch it.
pub(crate) async fn download(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(query): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = app.check_any(&headers, query.token.as_deref()) {
        return e.into_response();
    }
    let blob = match app.store.get(&name).await {
        Ok(Some(blob)) => blob,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no file {name:?}\n")).into_response(),
        Err(e) => return store_error(e),
    };
    let mut response = Response::new(Body::from(blob.bytes));
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&blob.media) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(blob.r#ref.as_str()) {
        h.insert("x-wasimoff-ref", v);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-wasimoff-ref"),
    );
    // Content never changes under a ref; aliases may move.
    let cache = if name == blob.r#ref.as_str() {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

/// Removes an alias (not its blob, which stays until evicted): only the token that set it may
/// (403 otherwise); 204, or 404 if there is no such alias. Blobs cannot be deleted by ref: they
/// are shared by everyone who stored the same bytes.
pub(crate) async fn remove_alias(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = app.check_client(&headers) {
        return e.into_response();
    }
    if Ref::is_ref_like(&name) {
        return (
            StatusCode::BAD_REQUEST,
            "blobs are not deleted by ref: remove their aliases and the store evicts them when \
             it needs room\n",
        )
            .into_response();
    }
    let owner = app.client_owner(&headers);
    match app.store.remove_alias(&name, owner.as_deref()).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, format!("no alias {name:?}\n")).into_response(),
        Err(StoreError::Forbidden(_)) => {
            let e = TaskError::PermissionDenied(format!(
                "alias {name:?} belongs to another client token"
            ));
            (e.status(), format!("{e}\n")).into_response()
        }
        Err(e) => store_error(e),
    }
}

//! Answers the broker's requests. Each request runs in its own spawned future, so a long task
//! never holds up a listing or a cancel; every request gets exactly one response.
//!
//! - `Filesystem.Listing` → the refs in the store.
//! - `Filesystem.Probe{file}` → whether the store holds that ref or alias (no fetch).
//! - `Filesystem.Upload{upload}` → stores the inline blob (refused if it does not match a given
//!   `sha256:` ref) and answers its ref.
//! - `Filesystem.Download{file}` → the file inline, or `err`.
//! - `Task.Wasip1` → [`task`](super::task).
//! - `Task.Pyodide` → `Envelope.error` "pyodide is not supported by this provider".
//! - `Task.Cancel{id}` → cancels that task (if it runs here) and echoes the Cancel once it has
//!   stopped: after its response is queued and its slot is free (bounded by the task's time
//!   limit), at once if no task with that id runs.
//! - `Ping` is answered inside the messenger; the fallback here answers it too.

use wasimoff_core::{
    envelope::Payload,
    messenger::IncomingRequest,
    proto::{self, filesystem},
    store::{Ref, StoreError},
};

use super::{provider::Session, task};

/// The answer to a Pyodide task.
pub const PYODIDE_UNSUPPORTED: &str = "pyodide is not supported by this provider";

/// Handles one request from the broker.
pub(crate) async fn handle(session: Session, request: IncomingRequest) {
    let (payload, responder) = request.into_parts();
    let answer = match payload {
        Payload::Wasip1Request(request) => {
            task::run_wasip1(session, request, responder).await;
            return;
        }
        Payload::ListingRequest(_) => listing(&session).await,
        Payload::ProbeRequest(probe) => self::probe(&session, probe).await,
        Payload::UploadRequest(upload) => self::upload(&session, upload).await,
        Payload::DownloadRequest(download) => self::download(&session, download).await,
        Payload::Cancel(cancel) => self::cancel(&session, cancel).await,
        Payload::PyodideRequest(_) => Err(PYODIDE_UNSUPPORTED.to_owned()),
        Payload::Ping(ping) => Ok(ping.into()),
        other => Err(format!("unexpected request {}", other.type_name())),
    };
    if let Err(e) = responder.respond(answer).await {
        tracing::debug!("answer not delivered: {e}");
    }
}

async fn listing(session: &Session) -> Result<Payload, String> {
    let refs = session
        .inner
        .files
        .store()
        .list()
        .await
        .map_err(|e| e.to_string())?;
    let files = refs.into_iter().map(|r| r.to_string()).collect();
    Ok(filesystem::listing::Response { files }.into())
}

async fn probe(session: &Session, probe: filesystem::probe::Request) -> Result<Payload, String> {
    let file = probe
        .file
        .filter(|f| !f.is_empty())
        .ok_or("probe without a file")?;
    let ok = match session.inner.files.store().has(&file).await {
        Ok(ok) => ok,
        // A name that can be neither ref nor alias is simply not here.
        Err(StoreError::InvalidRef(_) | StoreError::InvalidAlias(..)) => false,
        Err(e) => return Err(e.to_string()),
    };
    Ok(filesystem::probe::Response { ok: Some(ok) }.into())
}

async fn upload(session: &Session, upload: filesystem::upload::Request) -> Result<Payload, String> {
    let file = upload.upload.ok_or("upload without a file")?;
    let blob = file.blob.ok_or("upload without a blob")?;
    if let Some(expected) = file.r#ref.as_deref().filter(|r| Ref::is_ref_like(r)) {
        let actual = Ref::of(&blob);
        if actual.as_str() != expected {
            return Err(format!(
                "upload does not match its ref {expected} (it hashes to {actual})"
            ));
        }
    }
    let r = session
        .inner
        .files
        .store()
        .put(blob)
        .await
        .map_err(|e| e.to_string())?;
    Ok(filesystem::upload::Response {
        r#ref: Some(r.to_string()),
    }
    .into())
}

async fn download(
    session: &Session,
    download: filesystem::download::Request,
) -> Result<Payload, String> {
    let name = download
        .file
        .filter(|f| !f.is_empty())
        .ok_or("download without a file")?;
    let response = match session.inner.files.store().get(&name).await {
        Ok(Some(blob)) => filesystem::download::Response {
            download: Some(proto::File {
                r#ref: Some(blob.r#ref.to_string()),
                media: Some(blob.media),
                blob: Some(blob.bytes),
            }),
            err: None,
        },
        Ok(None) => filesystem::download::Response {
            download: None,
            err: Some(format!("{name} not found")),
        },
        Err(e) => filesystem::download::Response {
            download: None,
            err: Some(e.to_string()),
        },
    };
    Ok(response.into())
}

async fn cancel(session: &Session, cancel: proto::task::Cancel) -> Result<Payload, String> {
    let id = cancel
        .id
        .as_deref()
        .filter(|id| !id.is_empty())
        .ok_or("cancel without a task id")?;
    if let Some(stopped) = session.inner.cancel(id) {
        tracing::debug!(task = %id, reason = ?cancel.reason, "task cancelled");
        // Answered once the task's result is queued and its slot is free, so the broker may
        // send the task again (even here) as soon as it has the echo.
        stopped.cancelled().await;
    }
    Ok(cancel.into())
}

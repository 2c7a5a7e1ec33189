//! Client entry points: Connect unary RPC, the client WebSocket and the plain exec route.

use std::net::SocketAddr;

use axum::{
    Extension,
    body::Bytes,
    extract::{ConnectInfo, Path, State, ws::WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::sync::CancellationToken;
use wasimoff_core::envelope::{Codec, Payload};
use wasimoff_core::executor::truncated_streams;
use wasimoff_core::messenger::{IncomingMessage, Messenger, MessengerConfig};
use wasimoff_core::proto::{self, task};

use crate::body::WholeBody;
use crate::detached::{Found, Lookup};
use crate::error::TaskError;
use crate::provider::{refuse_protocol, selected_codec};
use crate::state::App;
use crate::ws::{AxumTransport, READ_BUFFER, WRITE_BUFFER};

/// The peer's address, when the server was started with connect info.
fn requester(addr: Option<Extension<ConnectInfo<SocketAddr>>>) -> String {
    addr.map(|Extension(ConnectInfo(a))| a.to_string())
        .unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ConnectCodec {
    Proto,
    Json,
}

fn connect_codec(headers: &HeaderMap) -> Option<ConnectCodec> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    match content_type.split(';').next()?.trim() {
        "application/proto" | "application/protobuf" | "application/x-protobuf" => {
            Some(ConnectCodec::Proto)
        }
        "application/json" => Some(ConnectCodec::Json),
        _ => None,
    }
}

/// Decodes a Connect request body, consuming it. List elements are counted before decoding and
/// refused beyond `max_elements`, so decoding costs at most about twice the body: binary `bytes`
/// fields (stdin, inline files) share the body's buffer instead of copying it, and JSON is
/// decoded straight into the message, without an intermediate tree.
fn decode<M: prost::Message + prost::Name + Default + DeserializeOwned>(
    codec: ConnectCodec,
    body: Bytes,
    max_elements: usize,
) -> Result<M, TaskError> {
    let elements = match codec {
        ConnectCodec::Proto => wasimoff_core::bounds::proto_elements(&M::full_name(), &body)
            .map_err(|e| TaskError::InvalidArgument(format!("bad message: {e}")))?,
        ConnectCodec::Json => wasimoff_core::bounds::json_elements(&body),
    };
    if elements > max_elements {
        return Err(TaskError::InvalidArgument(format!(
            "request with {elements} list elements (arguments, environment, artifacts, trace \
             events) exceeds the limit of {max_elements} (twice max_args, plus 1024)"
        )));
    }
    match codec {
        ConnectCodec::Proto => {
            M::decode(body).map_err(|e| TaskError::InvalidArgument(format!("bad message: {e}")))
        }
        // Task files carry "@type" (proto3 JSON of an Any): an unknown key, skipped like any.
        ConnectCodec::Json => serde_json::from_slice(&body)
            .map_err(|e| TaskError::InvalidArgument(format!("bad JSON message: {e}"))),
    }
}

fn encode<M: prost::Message + Serialize>(codec: ConnectCodec, message: &M) -> Response {
    match codec {
        ConnectCodec::Proto => (
            [(header::CONTENT_TYPE, "application/proto")],
            message.encode_to_vec(),
        )
            .into_response(),
        ConnectCodec::Json => match serde_json::to_vec(message) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => TaskError::Internal(format!("cannot encode response: {e}")).into_response(),
        },
    }
}

/// Applies a `Connect-Timeout-Ms` header as a QoS deadline, if sooner than the task's own.
fn apply_timeout(headers: &HeaderMap, qos: &mut Option<task::QoS>) {
    let Some(ms) = headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return;
    };
    let deadline_ns = wasimoff_core::platform::unix_nanos() as i128 + i128::from(ms) * 1_000_000;
    let timeout = wasimoff_core::wkt::Timestamp::from_unix_nanos(deadline_ns);
    let qos = qos.get_or_insert_with(Default::default);
    if qos.deadline.is_none_or(|d| d.unix_nanos() > deadline_ns) {
        qos.deadline = Some(timeout);
    }
}

/// `POST /api/client/wasimoff.v1.Tasks/{method}`: Connect unary calls.
pub(crate) async fn connect_rpc(
    State(app): State<App>,
    Path(method): Path<String>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    WholeBody(body): WholeBody,
) -> Response {
    // `WholeBody` has checked the client's token before reading the body.
    let Some(codec) = connect_codec(&headers) else {
        let mut response = (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/proto or application/json\n",
        )
            .into_response();
        response.headers_mut().insert(
            "accept-post",
            HeaderValue::from_static("application/json, application/proto"),
        );
        return response;
    };
    let requester = requester(addr);
    let max_elements = app.max_list_elements();
    let result = match method.as_str() {
        "RunWasip1" => match decode::<task::wasip1::Request>(codec, body, max_elements) {
            Ok(mut request) => {
                apply_timeout(&headers, &mut request.qos);
                app.run_wasip1(request, &requester)
                    .await
                    .map(|r| encode(codec, &r))
            }
            Err(e) => Err(e),
        },
        "RunPyodide" => match decode::<task::pyodide::Request>(codec, body, max_elements) {
            Ok(mut request) => {
                apply_timeout(&headers, &mut request.qos);
                app.run_pyodide(request, &requester)
                    .await
                    .map(|r| encode(codec, &r))
            }
            Err(e) => Err(e),
        },
        "Upload" => match decode::<proto::filesystem::upload::Request>(codec, body, max_elements) {
            Ok(request) => app
                .upload(request, app.client_owner(&headers).as_deref())
                .await
                .map(|r| encode(codec, &r)),
            Err(e) => Err(e),
        },
        _ => return (StatusCode::NOT_FOUND, "no such procedure\n").into_response(),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/client/ws`: the client socket; task requests and uploads, answered by sequence.
pub(crate) async fn client_socket(
    State(app): State<App>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(e) = app.check_client(&headers) {
        return e.into_response();
    }
    let requester = requester(addr);
    let owner = app.client_owner(&headers);
    let max_frame = app.config.limits.max_frame;
    upgrade
        .protocols(Codec::SUBPROTOCOLS)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        // tungstenite reads in chunks of this size, allocated per connection: 128 KiB by
        // default, which dominates the memory of an idle connection.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let Some(codec) = selected_codec(&socket) else {
                return refuse_protocol(socket).await;
            };
            let transport = AxumTransport::new(
                socket,
                codec,
                max_frame,
                app.config.limits.socket_idle_timeout,
            );
            let config = MessengerConfig {
                outgoing_capacity: app.config.limits.socket_queue,
                incoming_capacity: app.config.limits.socket_queue,
                ..MessengerConfig::default()
            };
            let (messenger, incoming) = Messenger::spawn(transport, config);
            client_session(app, messenger, incoming, requester, owner).await;
        })
}

async fn client_session(
    app: App,
    messenger: Messenger,
    mut incoming: wasimoff_core::messenger::Incoming,
    requester: String,
    // Who owns the aliases this socket's uploads set.
    owner: Option<String>,
) {
    // Every task of this socket stops when it closes (the dispatcher then cancels them).
    let gone = CancellationToken::new();
    let _cancel_all = gone.clone().drop_guard();
    // Requests in flight per socket are bounded: the next one is read only when a slot is free,
    // so a client streaming large uploads cannot pile them up in memory.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(
        app.config.limits.socket_queue.max(1),
    ));
    // Tasks in flight that the client named (`info.id`), so that a `Task.Cancel` with that
    // id stops one of them. The names are the client's own, valid on this socket only; the
    // broker gives every task its own id as usual.
    let named: Named = Default::default();
    loop {
        let message = tokio::select! {
            message = incoming.next() => message,
            () = app.shutdown.cancelled() => None,
        };
        let Some(message) = message else { break };
        let IncomingMessage::Request(request) = message else {
            continue;
        };
        let (payload, responder) = request.into_parts();
        if let Payload::Cancel(cancel) = payload {
            let name = cancel.id.clone().unwrap_or_default();
            let token = lock_named(&named).get(&name).cloned();
            let answer = match token {
                Some(token) => {
                    token.cancel();
                    Ok(Payload::Cancel(cancel))
                }
                None => Err(TaskError::NotFound(format!(
                    "no task named {name:?} is in flight on this connection"
                ))
                .envelope_text()),
            };
            let _ = responder.respond(answer).await;
            continue;
        }
        let name = match &payload {
            Payload::Wasip1Request(r) => r.info.as_ref().and_then(|i| i.id.clone()),
            Payload::PyodideRequest(r) => r.info.as_ref().and_then(|i| i.id.clone()),
            _ => None,
        }
        .filter(|name| !name.is_empty());
        let stop = gone.child_token();
        if let Some(name) = &name {
            let taken = {
                let mut named = lock_named(&named);
                let taken = named.contains_key(name);
                if !taken {
                    named.insert(name.clone(), stop.clone());
                }
                taken
            };
            if taken {
                let error = TaskError::InvalidArgument(format!(
                    "a task named {name:?} is already in flight on this connection"
                ));
                let _ = responder.respond(Err(error.envelope_text())).await;
                continue;
            }
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let (app, requester, named) = (app.clone(), requester.clone(), named.clone());
        let owner = owner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _name = NameGuard { named, name };
            let work = async {
                match payload {
                    Payload::Wasip1Request(r) => {
                        app.run_wasip1(r, &requester).await.map(Payload::from)
                    }
                    Payload::PyodideRequest(r) => {
                        app.run_pyodide(r, &requester).await.map(Payload::from)
                    }
                    Payload::UploadRequest(r) => {
                        app.upload(r, owner.as_deref()).await.map(Payload::from)
                    }
                    other => Err(TaskError::InvalidArgument(format!(
                        "the client socket takes task requests and uploads, not {}",
                        other.type_name()
                    ))),
                }
            };
            tokio::select! {
                result = work => {
                    let _ = responder.respond(result.map_err(|e| e.envelope_text())).await;
                }
                // Dropping `work` drops the waiting task, which cancels it in the dispatcher.
                () = stop.cancelled() => {
                    let cancelled = TaskError::Cancelled("cancelled by the client".into());
                    let _ = responder.respond(Err(cancelled.envelope_text())).await;
                }
            }
        });
    }
    drop(messenger);
}

/// The client-named tasks in flight on one client socket, with the token that stops each.
type Named = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>>;

fn lock_named(
    named: &Named,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, CancellationToken>> {
    named
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Forgets a client-named task when its request is done.
struct NameGuard {
    named: Named,
    name: Option<String>,
}

impl Drop for NameGuard {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            lock_named(&self.named).remove(&name);
        }
    }
}

/// `POST /api/client/run/{wasm}`: run a module with headers for argv and env, the body as stdin.
/// Answers stdout as the body; `X-Wasimoff-Result`, `X-Wasimoff-Status`, `X-Wasimoff-Provider`
/// headers; stderr and artifacts, if any, are stored and named by `X-Wasimoff-Stderr` and
/// `X-Wasimoff-Artifacts` refs (download them from `/api/storage/<ref>` within `output_ttl`:
/// they are ephemeral blobs). A task that failed (`X-Wasimoff-Result: Error`) answers the
/// error text as the body, and what the guest wrote before it failed as `X-Wasimoff-Stdout`
/// and `X-Wasimoff-Stderr` refs.
pub(crate) async fn exec(
    State(app): State<App>,
    Path(wasm): Path<String>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    WholeBody(body): WholeBody,
) -> Response {
    // `WholeBody` has checked the client's token before reading the body.
    let request = match exec_request(&wasm, &headers, body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let response = match app.run_wasip1(request, &requester(addr)).await {
        Ok(r) => r,
        Err(e) => return (e.status(), format!("{}\n", e.envelope_text())).into_response(),
    };
    let provider = response
        .info
        .as_ref()
        .and_then(|i| i.provider.clone())
        .unwrap_or_default();
    let error_output = response.error_output;
    let mut out = match response.result {
        Some(task::wasip1::response::Result::Ok(output)) => {
            let mut out = output.stdout.unwrap_or_default().into_response();
            let h = out.headers_mut();
            h.insert("x-wasimoff-result", HeaderValue::from_static("Ok"));
            h.insert(
                "x-wasimoff-status",
                HeaderValue::from(output.status.unwrap_or(0)),
            );
            // `X-Wasimoff-Truncated: stdout | stderr | stdout, stderr` when the provider cut it.
            if let Some(cut) = truncated_streams(
                output.stdout_truncated.unwrap_or(false),
                output.stderr_truncated.unwrap_or(false),
            ) {
                h.insert("x-wasimoff-truncated", HeaderValue::from_static(cut));
            }
            let blobs = [
                ("x-wasimoff-stderr", output.stderr.filter(|s| !s.is_empty())),
                (
                    "x-wasimoff-artifacts",
                    output.artifacts.and_then(|a| a.blob),
                ),
            ];
            if let Err(e) = name_outputs(&app, &mut out, blobs).await {
                return e.into_response();
            }
            out
        }
        Some(task::wasip1::response::Result::Error(error)) => {
            let mut out = format!("{error}\n").into_response();
            out.headers_mut()
                .insert("x-wasimoff-result", HeaderValue::from_static("Error"));
            // What the guest wrote before it failed, stored like a result's stderr.
            let kept = error_output.unwrap_or_default();
            let blobs = [
                ("x-wasimoff-stdout", kept.stdout.filter(|s| !s.is_empty())),
                ("x-wasimoff-stderr", kept.stderr.filter(|s| !s.is_empty())),
            ];
            if let Err(e) = name_outputs(&app, &mut out, blobs).await {
                return e.into_response();
            }
            out
        }
        None => TaskError::ProviderFailed("empty result".into()).into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&provider) {
        out.headers_mut().insert("x-wasimoff-provider", v);
    }
    out
}

/// Stores each blob as an exec output (ephemeral, for `output_ttl`) and names it by its ref
/// in the header given with it; with `output_ttl` zero nothing is stored or named.
async fn name_outputs<const N: usize>(
    app: &App,
    out: &mut Response,
    blobs: [(&'static str, Option<Bytes>); N],
) -> Result<(), TaskError> {
    for (name, blob) in blobs {
        let Some(blob) = blob else { continue };
        if let Some(r) = app.store_output(blob).await?
            && let Ok(value) = HeaderValue::from_str(r.as_str())
        {
            out.headers_mut().insert(name, value);
        }
    }
    Ok(())
}

fn exec_request(
    wasm: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<task::wasip1::Request, TaskError> {
    let mut args = vec![wasm.to_owned()];
    if let Some(value) = headers.get("x-args") {
        let text = value
            .to_str()
            .map_err(|_| TaskError::InvalidArgument("X-Args is not text".into()))?;
        let words = shlex::split(text).ok_or_else(|| {
            TaskError::InvalidArgument(format!("X-Args is not shell-quoted: {text}"))
        })?;
        args.extend(words);
    }
    let mut envs = Vec::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix("x-env-") {
            let value = value
                .to_str()
                .map_err(|_| TaskError::InvalidArgument(format!("{name} is not text")))?;
            envs.push(format!(
                "{}={value}",
                key.to_ascii_uppercase().replace('-', "_")
            ));
        }
    }
    let rootfs = headers
        .get("x-rootfs-ref")
        .and_then(|v| v.to_str().ok())
        .map(|r| proto::File {
            r#ref: Some(r.to_owned()),
            ..Default::default()
        });
    let artifacts = headers
        .get_all("x-artifact")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    Ok(task::wasip1::Request {
        info: None,
        qos: None,
        params: Some(task::wasip1::Params {
            binary: Some(proto::File {
                r#ref: Some(wasm.to_owned()),
                ..Default::default()
            }),
            args,
            envs,
            stdin: (!body.is_empty()).then_some(body),
            rootfs,
            artifacts,
        }),
    })
}

/// The most tasks one [`submit_batch`] takes.
pub(crate) const MAX_BATCH: usize = 1_000;

/// `POST /api/client/tasks/batch`: many tasks at once, as `application/proto` holding
/// length-delimited `Task.Wasip1.Request`s (each a varint length, then the message; at most
/// [`MAX_BATCH`]). Each is checked and accepted as by [`submit`], concurrently, so their
/// journal writes share commits; answers `200 {"submitted": [...]}` with, in the order of the
/// requests, `{"id": ...}` or `{"error": {"code", "message"}}`. A full queue refuses the whole
/// batch (429), and so does a broker shutting down (503).
pub(crate) async fn submit_batch(
    State(app): State<App>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    WholeBody(mut body): WholeBody,
) -> Response {
    // `WholeBody` has checked the client's token before reading the body.
    if connect_codec(&headers) != Some(ConnectCodec::Proto) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/proto (length-delimited Task.Wasip1.Request)\n",
        )
            .into_response();
    }
    let mut requests = Vec::new();
    while !body.is_empty() {
        if requests.len() == MAX_BATCH {
            return TaskError::InvalidArgument(format!("more than {MAX_BATCH} tasks in one batch"))
                .into_response();
        }
        let length = match prost::encoding::decode_varint(&mut body) {
            Ok(length) => usize::try_from(length).unwrap_or(usize::MAX),
            Err(e) => {
                return TaskError::InvalidArgument(format!("bad batch length prefix: {e}"))
                    .into_response();
            }
        };
        if length > body.len() {
            return TaskError::InvalidArgument(format!(
                "task {} of the batch claims {length} bytes, {} remain",
                requests.len() + 1,
                body.len()
            ))
            .into_response();
        }
        let message = body.split_to(length);
        match decode::<task::wasip1::Request>(ConnectCodec::Proto, message, app.max_list_elements())
        {
            Ok(mut request) => {
                apply_timeout(&headers, &mut request.qos);
                requests.push(request);
            }
            Err(TaskError::InvalidArgument(e)) => {
                return TaskError::InvalidArgument(format!(
                    "task {} of the batch: {e}",
                    requests.len() + 1
                ))
                .into_response();
            }
            Err(e) => return e.into_response(),
        }
    }
    // As for one task: refused when the queue is full; past that, the dispatcher's refusals
    // are the tasks' results.
    let queued = usize::try_from(app.metrics.queued.get()).unwrap_or(0);
    if !requests.is_empty() && queued >= app.config.limits.max_queue {
        return TaskError::QueueFull(queued).into_response();
    }
    let owner = app.client_owner(&headers);
    let requester = requester(addr);
    let accepted = futures::future::join_all(requests.into_iter().map(|request| {
        let (app, owner, requester) = (app.clone(), owner.clone(), &requester);
        async move {
            let (job, deadline, pins) = app.prepare_wasip1(request, requester).await?;
            app.accept_by_id(job, deadline, pins, owner).await
        }
    }))
    .await;
    if accepted
        .iter()
        .any(|r| matches!(r, Err(TaskError::ShuttingDown)))
    {
        // Try again at the next start (or another broker): the whole batch, as one request.
        return TaskError::ShuttingDown.into_response();
    }
    let submitted: Vec<_> = accepted
        .into_iter()
        .map(|result| match result {
            Ok(id) => serde_json::json!({ "id": id }),
            Err(e) => serde_json::json!({
                "error": { "code": e.connect_code(), "message": e.to_string() },
            }),
        })
        .collect();
    axum::Json(serde_json::json!({ "submitted": submitted })).into_response()
}

/// A client's `wait` in seconds, capped to [`MAX_FETCH_WAIT`]; a negative or non-finite
/// value (`?wait=NaN`) is no wait.
fn wait_seconds(wait: Option<f64>) -> std::time::Duration {
    match wait {
        Some(seconds) if seconds.is_finite() && seconds > 0.0 => {
            std::time::Duration::from_secs_f64(seconds.min(MAX_FETCH_WAIT.as_secs_f64()))
        }
        _ => std::time::Duration::ZERO,
    }
}

/// The longest a fetch waits for a detached task's result (`?wait=` is capped to it).
const MAX_FETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `POST /api/client/tasks`: accepts a `Task.Wasip1.Request` (protobuf or JSON, as Connect)
/// and answers `202 {"id": ...}` at once; the result is fetched later by that id. A full
/// queue is refused at once (429) when the broker can tell; otherwise refusals of the
/// dispatcher become the task's result.
pub(crate) async fn submit(
    State(app): State<App>,
    addr: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    WholeBody(body): WholeBody,
) -> Response {
    // `WholeBody` has checked the client's token before reading the body.
    let Some(codec) = connect_codec(&headers) else {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/proto or application/json\n",
        )
            .into_response();
    };
    let mut request = match decode::<task::wasip1::Request>(codec, body, app.max_list_elements()) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    apply_timeout(&headers, &mut request.qos);
    let queued = usize::try_from(app.metrics.queued.get()).unwrap_or(0);
    let immediate = request
        .qos
        .as_ref()
        .and_then(|q| q.immediate)
        .unwrap_or(false);
    if !immediate && queued >= app.config.limits.max_queue {
        return TaskError::QueueFull(queued).into_response();
    }
    let (job, deadline, pins) = match app.prepare_wasip1(request, &requester(addr)).await {
        Ok(prepared) => prepared,
        Err(e) => return e.into_response(),
    };
    let owner = app.client_owner(&headers);
    let id = match app.accept_by_id(job, deadline, pins, owner).await {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "id": id })),
    )
        .into_response()
}

/// `GET /api/client/tasks/{id}[?wait=SECONDS]`: the result of a submitted task, as the
/// `Task.Wasip1.Response` of a Connect call (protobuf if the `Accept` header asks for
/// `application/proto`, else JSON) or its Connect error; `202 {"id", "state": "pending"}` if
/// it has not finished (after waiting up to `wait` seconds, at most 60); 404 for an id this
/// client did not submit or whose result expired.
pub(crate) async fn fetch(
    State(app): State<App>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<FetchQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = app.check_client(&headers) {
        return e.into_response();
    }
    let owner = app.client_owner(&headers);
    let codec = match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        Some(accept) if accept.contains("application/proto") => ConnectCodec::Proto,
        _ => ConnectCodec::Json,
    };
    let until = tokio::time::Instant::now() + wait_seconds(query.wait);
    // In a cluster: a task of another broker, or one from before this broker's start.
    if let Err(e) = app.learn(std::slice::from_ref(&id), owner.as_deref()).await {
        return e.into_response();
    }
    loop {
        // Registered before the lookup, so a result recorded in between is not missed.
        let registration = app.waiters.register(std::slice::from_ref(&id));
        let found =
            app.with_detached(|d| d.lookup(std::time::Instant::now(), &id, owner.as_deref()));
        match found {
            Lookup::Done(result) => {
                return match *result {
                    Ok(response) => encode(codec, &response),
                    Err(e) => e.into_response(),
                };
            }
            Lookup::Unknown => {
                return TaskError::NotFound(format!(
                    "no task {id:?} for this client: never submitted here, or its result \
                     expired ({} s after it finished)",
                    app.config.limits.result_ttl.as_secs()
                ))
                .into_response();
            }
            Lookup::Pending => {}
        }
        tokio::select! {
            () = registration.notified() => {}
            () = tokio::time::sleep_until(until) => {
                return (
                    StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({ "id": id, "state": "pending" })),
                )
                    .into_response();
            }
            () = app.shutdown.cancelled() => return TaskError::ShuttingDown.into_response(),
        }
    }
}

/// The query of [`fetch`].
#[derive(Debug, serde::Deserialize)]
pub(crate) struct FetchQuery {
    /// Seconds to wait for the result.
    wait: Option<f64>,
}

/// `DELETE /api/client/tasks/{id}`: cancels a submitted task that has not finished (its
/// result becomes `canceled`); `{"id", "state": "cancelling" | "done"}`; 404 as for a fetch.
pub(crate) async fn cancel(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = app.check_client(&headers) {
        return e.into_response();
    }
    let owner = app.client_owner(&headers);
    if let Err(e) = app.learn(std::slice::from_ref(&id), owner.as_deref()).await {
        return e.into_response();
    }
    let found = app.with_detached(|d| d.lookup(std::time::Instant::now(), &id, owner.as_deref()));
    let state = match found {
        Lookup::Pending => {
            const REASON: &str = "cancelled by the client";
            if let Some(cluster) = &app.cluster {
                // Wherever it waits or runs; the broker running it hears of it too.
                if let Err(e) = cluster.cancel(&id, owner, REASON).await {
                    return e.into_response();
                }
            } else {
                app.dispatch.send(crate::dispatch::Command::Machine(
                    crate::dispatch::Input::Cancel {
                        id: id.clone(),
                        reason: REASON.into(),
                    },
                ));
            }
            "cancelling"
        }
        Lookup::Done(_) => "done",
        Lookup::Unknown => {
            return TaskError::NotFound(format!("no task {id:?} for this client")).into_response();
        }
    };
    axum::Json(serde_json::json!({ "id": id, "state": state })).into_response()
}

/// The most ids one [`wait`] may name.
pub(crate) const MAX_WAIT_IDS: usize = 10_000;

/// The body of [`wait`].
#[derive(Debug, serde::Deserialize)]
pub(crate) struct WaitRequest {
    ids: Vec<String>,
    /// Seconds to wait for one of them to finish.
    #[serde(default)]
    wait: Option<f64>,
    /// Also answer the results of finished tasks (up to [`INLINE_RESULT_BYTES`] together).
    #[serde(default)]
    results: bool,
}

/// The most bytes of results one [`wait`] answer carries inline; the other finished ids are
/// only named in `done`, to be fetched one by one.
pub(crate) const INLINE_RESULT_BYTES: usize = 4 << 20;

/// `POST /api/client/tasks/wait` with `{"ids": [...], "wait": SECONDS}`: which of these tasks
/// have finished (`done`: fetch their results) and which this broker does not know for this
/// client (`unknown`: never submitted here, expired, or lost in a restart of a broker without
/// durable task state). Answers as soon as one is either, else after `wait` seconds (at most
/// 60) with both lists empty. Clients follow many tasks with one request at a time instead of
/// one long-poll per task. With `"results": true` the answer also holds `results`: for
/// finished tasks (as many as fit in 4 MiB), `{"id", "response"}` (a `Task.Wasip1.Response` as
/// proto3 JSON) or `{"id", "error": {"code", "message"}}`, as a fetch would answer.
pub(crate) async fn wait(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<axum::Json<WaitRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(e) = app.check_client(&headers) {
        return e.into_response();
    }
    let mut request = match body {
        Ok(axum::Json(request)) => request,
        Err(e) => {
            return TaskError::InvalidArgument(format!("a wait body is {{\"ids\": [...]}}: {e}"))
                .into_response();
        }
    };
    if request.ids.len() > MAX_WAIT_IDS {
        return TaskError::InvalidArgument(format!(
            "{} ids in one wait; at most {MAX_WAIT_IDS}",
            request.ids.len()
        ))
        .into_response();
    }
    // Each id once: repeats would only multiply the work of every scan and registration.
    let mut seen = std::collections::HashSet::new();
    request.ids.retain(|id| seen.insert(id.clone()));
    let owner = app.client_owner(&headers);
    let until = tokio::time::Instant::now() + wait_seconds(request.wait);
    if let Err(e) = app.learn(&request.ids, owner.as_deref()).await {
        return e.into_response();
    }
    loop {
        // Registered before the lookup, so a result recorded in between is not missed.
        let registration = app.waiters.register(&request.ids);
        let (done, unknown, results) = app.with_detached(|d| {
            let now = std::time::Instant::now();
            let (mut done, mut unknown, mut results) = (Vec::new(), Vec::new(), Vec::new());
            let mut inline = 0;
            for id in &request.ids {
                match d.found(now, id, owner.as_deref()) {
                    Found::Done => {
                        if request.results
                            && inline < INLINE_RESULT_BYTES
                            && let Lookup::Done(result) = d.lookup(now, id, owner.as_deref())
                        {
                            inline += result
                                .as_ref()
                                .as_ref()
                                .map_or(0, prost::Message::encoded_len);
                            results.push((id.as_str(), result));
                        }
                        done.push(id.as_str());
                    }
                    Found::Unknown => unknown.push(id.as_str()),
                    Found::Pending => {}
                }
            }
            let owned = |ids: Vec<&str>| ids.into_iter().map(str::to_owned).collect::<Vec<_>>();
            let results: Vec<(String, _)> = results
                .into_iter()
                .map(|(id, r)| (id.to_owned(), r))
                .collect();
            (owned(done), owned(unknown), results)
        });
        if !done.is_empty() || !unknown.is_empty() || request.ids.is_empty() {
            let mut answer = serde_json::json!({ "done": done, "unknown": unknown });
            if request.results {
                let results: Vec<_> = results
                    .into_iter()
                    .map(|(id, result)| match *result {
                        Ok(response) => serde_json::json!({ "id": id, "response": response }),
                        Err(e) => serde_json::json!({
                            "id": id,
                            "error": { "code": e.connect_code(), "message": e.to_string() },
                        }),
                    })
                    .collect();
                answer["results"] = results.into();
            }
            return axum::Json(answer).into_response();
        }
        tokio::select! {
            () = registration.notified() => {}
            () = tokio::time::sleep_until(until) => {
                return axum::Json(serde_json::json!({ "done": [], "unknown": [] }))
                    .into_response();
            }
            () = app.shutdown.cancelled() => return TaskError::ShuttingDown.into_response(),
        }
    }
}

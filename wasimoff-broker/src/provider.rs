//! The provider socket `GET /api/provider/ws?id=<name>`: admission, the session's event loop,
//! and the ping that drops providers that stop answering.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use axum::{
    extract::{
        Query, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use wasimoff_core::envelope::{Codec, Payload};
use wasimoff_core::messenger::{CallError, IncomingMessage, Messenger, MessengerConfig};
use wasimoff_core::proto;
use wasimoff_core::scheduler::ProviderId;
use wasimoff_core::transport::CloseReason;

use crate::dispatch::{Command, Input};
use crate::operator::{self, ProviderKind};
use crate::state::App;
use crate::ws::{AxumTransport, READ_BUFFER, WRITE_BUFFER};

#[derive(Debug, Deserialize)]
pub(crate) struct ProviderQuery {
    id: Option<String>,
    token: Option<String>,
}

/// Admits a provider: user agent, token and origin checks, then the upgrade with the
/// subprotocol chosen (protobuf preferred).
pub(crate) async fn provider_socket(
    State(app): State<App>,
    Query(query): Query<ProviderQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(agent) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "a provider must send a User-Agent\n",
        )
            .into_response();
    };
    if let Err(e) = app.check_provider(&headers, query.token.as_deref()) {
        tracing::warn!(agent, "provider socket refused: {e}");
        return e.into_response();
    }
    if !app.origin_allowed(&headers) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        tracing::warn!(agent, origin, "provider socket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed for providers\n").into_response();
    }
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "broker is shutting down\n").into_response();
    }
    let name = query
        .id
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "anonymous".to_owned());
    let name: String = name.chars().take(128).collect();
    let agent = agent.chars().take(256).collect::<String>();
    let kind = ProviderKind::of(&headers);
    let max_frame = app.config.limits.max_frame;
    upgrade
        .protocols(Codec::SUBPROTOCOLS)
        .max_message_size(max_frame)
        .max_frame_size(max_frame)
        // tungstenite reads in chunks of this size, allocated per connection: 128 KiB by
        // default, which dominates the memory of an idle connection.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| session(app, socket, name, agent, kind))
}

/// Closes a socket whose client offered none of our subprotocols.
pub(crate) async fn refuse_protocol(mut socket: WebSocket) {
    let reason = format!("supported protocols: {}", Codec::SUBPROTOCOLS.join(", "));
    let frame = CloseFrame {
        code: CloseReason::PROTOCOL_ERROR,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// The codec the upgrade selected, if any.
pub(crate) fn selected_codec(socket: &WebSocket) -> Option<Codec> {
    socket
        .protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(Codec::from_subprotocol)
}

async fn session(app: App, socket: WebSocket, name: String, agent: String, kind: ProviderKind) {
    let Some(codec) = selected_codec(&socket) else {
        return refuse_protocol(socket).await;
    };
    let transport = AxumTransport::new(
        socket,
        codec,
        app.config.limits.max_frame,
        app.config.limits.socket_idle_timeout,
    );
    let config = MessengerConfig {
        outgoing_capacity: app.config.limits.socket_queue,
        request_timeout: app.config.ping.timeout,
        ..MessengerConfig::default()
    };
    let (messenger, mut incoming) = Messenger::spawn(transport, config);

    // The provider's cached files seed the scheduler's view of it.
    let files = match messenger.call(proto::filesystem::listing::Request {}).await {
        Ok(Payload::ListingResponse(listing)) => refs_only(listing.files),
        Ok(other) => {
            let reason = format!("expected a listing, got {}", other.type_name());
            messenger
                .close(CloseReason::new(CloseReason::PROTOCOL_ERROR, reason))
                .await;
            return;
        }
        Err(e) => {
            tracing::info!(%name, "provider dropped before its listing: {e}");
            messenger
                .close(CloseReason::new(CloseReason::PROTOCOL_ERROR, e.to_string()))
                .await;
            return;
        }
    };
    let id = ProviderId(app.provider_counter.fetch_add(1, Ordering::Relaxed));
    tracing::debug!(%id, %name, %agent, ?codec, ?kind, "provider session");
    let last_seen = Arc::new(AtomicI64::new(operator::unix_millis()));
    let split = Arc::new(operator::Split::default());
    app.dispatch.send(Command::ProviderJoined {
        id,
        name,
        messenger: messenger.clone(),
        files,
        kind,
        agent,
        last_seen: last_seen.clone(),
        split: split.clone(),
    });
    tokio::spawn(ping(app.clone(), messenger.clone(), last_seen.clone()));

    loop {
        let message = tokio::select! {
            message = incoming.next() => message,
            () = app.shutdown.cancelled() => None,
        };
        let Some(message) = message else { break };
        last_seen.store(operator::unix_millis(), Ordering::Relaxed);
        match message {
            IncomingMessage::Event(event) => match event.payload {
                Payload::ProviderResources(r) => {
                    split.store(r.workers, r.prefetch);
                    let concurrency = r.concurrency.unwrap_or(0);
                    app.dispatch
                        .send(Command::Machine(Input::Resources { id, concurrency }));
                }
                Payload::FileSystemUpdate(u) => {
                    app.dispatch.send(Command::Machine(Input::Files {
                        id,
                        added: refs_only(u.added),
                        removed: refs_only(u.removed),
                    }));
                }
                Payload::GenericMessage(m) => {
                    tracing::info!(%id, "provider says: {}", m.message.unwrap_or_default());
                }
                other => tracing::debug!(%id, "ignoring event {}", other.type_name()),
            },
            IncomingMessage::Request(request) => {
                let _ = request
                    .respond(Err(
                        "requests are not supported on the provider socket".into()
                    ))
                    .await;
            }
        }
    }
    messenger
        .close(CloseReason::new(CloseReason::GOING_AWAY, "session ended"))
        .await;
    // The first reason given wins: the peer's close, a ping timeout, a protocol error.
    let reason = messenger
        .close_reason()
        .map_or_else(|| "session ended".to_owned(), |r| r.to_string());
    app.dispatch
        .send(Command::Machine(Input::ProviderLeft { id, reason }));
}

/// Pings a provider until it goes away; one that misses a ping is dropped (its calls fail, so
/// its tasks are requeued).
async fn ping(app: App, messenger: Messenger, last_seen: Arc<AtomicI64>) {
    let interval = app.config.ping.interval;
    loop {
        tokio::select! {
            _ = messenger.closed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match messenger
            .call_with_timeout(proto::Ping {}, app.config.ping.timeout)
            .await
        {
            Ok(_) => last_seen.store(operator::unix_millis(), Ordering::Relaxed),
            Err(CallError::Timeout(t)) => {
                tracing::warn!("provider missed a ping ({t:?}); dropping it");
                let reason = CloseReason::new(CloseReason::POLICY_VIOLATION, "ping timeout");
                messenger.close(reason).await;
                return;
            }
            // A provider that answers pings with an error is alive all the same.
            Err(CallError::Remote(e)) => {
                last_seen.store(operator::unix_millis(), Ordering::Relaxed);
                tracing::debug!("provider answered a ping with: {e}");
            }
            Err(CallError::Protocol(e)) => {
                let reason =
                    CloseReason::new(CloseReason::PROTOCOL_ERROR, format!("bad ping answer: {e}"));
                messenger.close(reason).await;
                return;
            }
            Err(_) => return,
        }
    }
}

/// The most files a provider may advertise; more are ignored (they only cost the scheduler).
const MAX_ADVERTISED_FILES: usize = 10_000;

/// Keeps the advertised names that are content refs, at most [`MAX_ADVERTISED_FILES`].
fn refs_only(files: Vec<String>) -> Vec<String> {
    files
        .into_iter()
        .filter(|f| f.parse::<wasimoff_core::store::Ref>().is_ok())
        .take(MAX_ADVERTISED_FILES)
        .collect()
}

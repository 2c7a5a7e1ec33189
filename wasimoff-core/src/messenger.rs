//! The [`Messenger`]: request/response correlation and events over any [`Transport`].
//!
//! A messenger owns one connection. It numbers outgoing Requests and Events with two independent
//! counters, routes each Response to the call waiting for its sequence, answers Pings at once,
//! and hands incoming Requests and Events to the application through [`Incoming`].
//!
//! Architecture Invariant: a call never stays pending. It ends with its response, its timeout,
//! the caller dropping its future or its [`PendingCall`] (the entry is removed by a guard), or
//! the connection closing (every pending call fails with the close reason; a dropped driver
//! counts as a close). [`PendingCall::response`] has no timeout of its own: its caller bounds it
//! (a task's deadline) or drops it.
//!
//! Requests leave in the order their envelopes are queued: a [`Messenger::start_call`] that has
//! returned is on the wire before any call started after it, so a caller can send a request
//! and a later one in a fixed order and await both responses separately.
//!
//! Architecture Invariant: every incoming Request gets exactly one Response, even when the
//! application drops it unanswered or the request is malformed (then with `Envelope.error`).
//!
//! The connection is driven by a future returned from [`Messenger::new`] (or spawned for you by
//! [`Messenger::spawn`]); it runs until either side closes the connection.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::envelope::{DecodeError, Envelope, Payload};
use crate::platform::{self, BoxFuture};
use crate::proto::{self, envelope::MessageType};
use crate::transport::{
    CloseReason, Transport, TransportError, TransportReceiver, TransportSender,
};

/// Settings of a [`Messenger`].
#[derive(Clone, Debug)]
pub struct MessengerConfig {
    /// How long [`Messenger::call`] waits for a response.
    pub request_timeout: Duration,
    /// Incoming Requests and Events buffered for the application before the connection stops
    /// reading (backpressure instead of unbounded memory).
    pub incoming_capacity: usize,
    /// Outgoing envelopes buffered before senders wait.
    pub outgoing_capacity: usize,
    /// The first sequence number of each counter. The Go original starts at 1, the TypeScript
    /// original at 0; 1 is safest with peers that cannot tell an explicit 0 from "unset".
    pub first_sequence: u64,
    /// Answer `Ping` requests inside the messenger, without bothering the application.
    pub answer_pings: bool,
}

impl Default for MessengerConfig {
    fn default() -> Self {
        MessengerConfig {
            request_timeout: Duration::from_secs(30),
            incoming_capacity: 256,
            outgoing_capacity: 256,
            first_sequence: 1,
            answer_pings: true,
        }
    }
}

/// Why a [`Messenger::call`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No response arrived in time; the pending entry is gone.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection closed before the response arrived.
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The peer answered with `Envelope.error`.
    #[error("peer error: {0}")]
    Remote(String),
    /// The peer answered with something that is not a valid response.
    #[error("invalid response: {0}")]
    Protocol(String),
}

/// Why a [`Messenger::send_event`] or a response failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection closed: {0}")]
pub struct SendError(pub CloseReason);

/// Envelopes are boxed so that channel blocks stay small: an idle connection's queues then
/// cost a few hundred bytes instead of tens of KiB (see docs/benchmarks.md).
enum Outgoing {
    Envelope(Box<Envelope>),
}

/// How long a closing connection may take to flush what was queued and send its close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

type Reply = oneshot::Sender<Result<Payload, CallError>>;

#[derive(Default)]
struct Pending {
    calls: HashMap<u64, Reply>,
    closed: Option<CloseReason>,
}

struct State {
    pending: Mutex<Pending>,
    next_request: AtomicU64,
    next_event: AtomicU64,
    config: MessengerConfig,
    /// Cancelled when the last handle is dropped or `close` is called.
    shutdown: CancellationToken,
    /// Cancelled when the driver has finished.
    done: CancellationToken,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still safe to use.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close_reason(&self) -> CloseReason {
        self.lock()
            .closed
            .clone()
            .unwrap_or_else(|| CloseReason::normal("connection closed"))
    }

    /// Fails every pending call and refuses new ones.
    fn finish(&self, reason: CloseReason) {
        let calls = {
            let mut pending = self.lock();
            pending.closed.get_or_insert(reason.clone());
            std::mem::take(&mut pending.calls)
        };
        for (_, reply) in calls {
            let _ = reply.send(Err(CallError::Closed(reason.clone())));
        }
    }
}

/// Removes a pending call when the caller stops waiting for any reason.
struct PendingGuard {
    state: Arc<State>,
    sequence: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.state.lock().calls.remove(&self.sequence);
    }
}

/// A request on its way or on the wire, waiting for its response; see
/// [`Messenger::start_call`]. Dropping it forgets the call (a late response is ignored).
pub struct PendingCall {
    guard: PendingGuard,
    response: oneshot::Receiver<Result<Payload, CallError>>,
}

impl std::fmt::Debug for PendingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingCall")
            .field("sequence", &self.guard.sequence)
            .finish_non_exhaustive()
    }
}

impl PendingCall {
    /// The request's sequence number.
    pub fn sequence(&self) -> u64 {
        self.guard.sequence
    }

    /// Waits for the response, without a timeout: it ends with the response or when the
    /// connection closes.
    pub async fn response(mut self) -> Result<Payload, CallError> {
        match (&mut self.response).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Closed(self.guard.state.close_reason())),
        }
    }

    /// Waits for the response up to `timeout`; the call is forgotten when it runs out.
    pub async fn response_within(self, timeout: Duration) -> Result<Payload, CallError> {
        platform::timeout(timeout, self.response())
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)))
    }
}

/// Fails the pending calls if the driver is dropped before it finished.
struct DriverGuard {
    state: Arc<State>,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if !self.state.done.is_cancelled() {
            let reason = self
                .state
                .lock()
                .closed
                .clone()
                .unwrap_or_else(|| CloseReason::new(CloseReason::GOING_AWAY, "driver dropped"));
            self.state.finish(reason);
            self.state.done.cancel();
        }
    }
}

/// Closes the connection when the last [`Messenger`] clone is dropped.
struct Handle {
    state: Arc<State>,
    outgoing: mpsc::Sender<Outgoing>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// A cheap, cloneable handle to one connection: make calls, send events, close.
///
/// ```
/// use wasimoff_core::envelope::{Codec, Payload};
/// use wasimoff_core::messenger::{Incoming, IncomingMessage, Messenger, MessengerConfig};
/// use wasimoff_core::proto;
/// use wasimoff_core::transport::MemoryTransport;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (a, b) = MemoryTransport::pair(Codec::Protobuf);
/// let (client, _events) = Messenger::spawn(a, MessengerConfig::default());
/// let (_server, mut incoming) = Messenger::spawn(b, MessengerConfig::default());
///
/// // The server answers every Probe request with "ok".
/// tokio::spawn(async move {
///     while let Some(IncomingMessage::Request(request)) = incoming.next().await {
///         let answer = proto::filesystem::probe::Response { ok: Some(true) };
///         let _ = request.respond(Ok(answer.into())).await;
///     }
/// });
///
/// let probe = proto::filesystem::probe::Request { file: Some("sha256:00".into()) };
/// let response = client.call(probe).await.unwrap();
/// assert_eq!(response, Payload::ProbeResponse(proto::filesystem::probe::Response { ok: Some(true) }));
/// # }
/// ```
#[derive(Clone)]
pub struct Messenger {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("pending", &self.pending_calls())
            .field("closed", &self.handle.state.lock().closed)
            .finish()
    }
}

/// The future that drives a connection; it resolves with the reason the connection ended.
pub type Driver = BoxFuture<'static, CloseReason>;

impl Messenger {
    /// Wraps a transport. Returns the handle, the stream of incoming Requests and Events, and
    /// the driver future, which must be polled (spawned) for anything to happen.
    pub fn new<T: Transport>(
        transport: T,
        config: MessengerConfig,
    ) -> (Messenger, Incoming, Driver) {
        let (outgoing_tx, outgoing_rx) = mpsc::channel(config.outgoing_capacity.max(1));
        let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_capacity.max(1));
        let state = Arc::new(State {
            pending: Mutex::new(Pending::default()),
            next_request: AtomicU64::new(config.first_sequence),
            next_event: AtomicU64::new(config.first_sequence),
            config,
            shutdown: CancellationToken::new(),
            done: CancellationToken::new(),
        });
        let (sender, receiver) = transport.split();
        let driver = drive(
            state.clone(),
            sender,
            receiver,
            outgoing_rx,
            outgoing_tx.clone(),
            incoming_tx,
        );
        // Outside `drive`, so that it also fires for a driver dropped before its first poll.
        let guard = DriverGuard {
            state: state.clone(),
        };
        let driver = async move {
            let _guard = guard;
            driver.await
        };
        let messenger = Messenger {
            handle: Arc::new(Handle {
                state,
                outgoing: outgoing_tx,
            }),
        };
        (messenger, Incoming { rx: incoming_rx }, Box::pin(driver))
    }

    /// Like [`Messenger::new`], and spawns the driver on the current runtime.
    pub fn spawn<T: Transport>(transport: T, config: MessengerConfig) -> (Messenger, Incoming) {
        let (messenger, incoming, driver) = Messenger::new(transport, config);
        platform::spawn(async move {
            let reason = driver.await;
            tracing::debug!(%reason, "messenger finished");
        });
        (messenger, incoming)
    }

    /// Sends a request and waits for its response, up to the configured timeout.
    pub async fn call(&self, payload: impl Into<Payload>) -> Result<Payload, CallError> {
        self.call_with_timeout(payload, self.handle.state.config.request_timeout)
            .await
    }

    /// Sends a request and waits for its response, up to `timeout`. Dropping the returned
    /// future cancels the call and forgets its sequence.
    pub async fn call_with_timeout(
        &self,
        payload: impl Into<Payload>,
        timeout: Duration,
    ) -> Result<Payload, CallError> {
        // The timeout covers the wait for queue space too: a peer that stopped reading fills
        // the queue, and a call to it must still end.
        let call = async { self.start_call(payload).await?.response().await };
        platform::timeout(timeout, call)
            .await
            .unwrap_or(Err(CallError::Timeout(timeout)))
    }

    /// Queues a request and returns without waiting for its response. It waits for space in
    /// the outgoing queue (without a timeout); once it returns `Ok` the request is queued, so
    /// requests started one after the other leave in that order. Fails at once if the
    /// connection is closed or closing.
    pub async fn start_call(&self, payload: impl Into<Payload>) -> Result<PendingCall, CallError> {
        let state = &self.handle.state;
        let sequence = state.next_request.fetch_add(1, Ordering::Relaxed);
        let (reply, response) = oneshot::channel();
        {
            let mut pending = state.lock();
            if let Some(reason) = &pending.closed {
                return Err(CallError::Closed(reason.clone()));
            }
            pending.calls.insert(sequence, reply);
        }
        let call = PendingCall {
            guard: PendingGuard {
                state: state.clone(),
                sequence,
            },
            response,
        };
        let envelope = Envelope::request(sequence, payload);
        self.handle
            .outgoing
            .send(Outgoing::Envelope(Box::new(envelope)))
            .await
            .map_err(|_| CallError::Closed(state.close_reason()))?;
        Ok(call)
    }

    /// Sends an event (numbered by the event counter).
    pub async fn send_event(&self, payload: impl Into<Payload>) -> Result<(), SendError> {
        let state = &self.handle.state;
        let sequence = state.next_event.fetch_add(1, Ordering::Relaxed);
        let envelope = Envelope::event(sequence, payload);
        self.handle
            .outgoing
            .send(Outgoing::Envelope(Box::new(envelope)))
            .await
            .map_err(|_| SendError(state.close_reason()))
    }

    /// Sends an event without waiting: if the outgoing queue is full (a slow peer) the event
    /// is dropped and `false` returned. For broadcasts, where one slow peer must not hold up
    /// the others.
    pub fn try_send_event(&self, payload: impl Into<Payload>) -> bool {
        let state = &self.handle.state;
        let sequence = state.next_event.fetch_add(1, Ordering::Relaxed);
        let envelope = Envelope::event(sequence, payload);
        self.handle
            .outgoing
            .try_send(Outgoing::Envelope(Box::new(envelope)))
            .is_ok()
    }

    /// Closes the connection with a reason, at once: pending calls fail with that reason;
    /// envelopes already queued are still sent if the peer takes them within a few seconds
    /// (a peer that stopped reading cannot hold the close up).
    pub async fn close(&self, reason: CloseReason) {
        let state = &self.handle.state;
        state.lock().closed.get_or_insert(reason);
        state.shutdown.cancel();
    }

    /// Waits until the connection has ended, and returns why.
    pub async fn closed(&self) -> CloseReason {
        self.handle.state.done.cancelled().await;
        self.handle.state.close_reason()
    }

    /// Whether the connection has ended (or is closing).
    pub fn is_closed(&self) -> bool {
        self.handle.state.lock().closed.is_some()
    }

    /// Why the connection ended or is closing; `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.handle.state.lock().closed.clone()
    }

    /// How many calls are waiting for a response.
    pub fn pending_calls(&self) -> usize {
        self.handle.state.lock().calls.len()
    }
}

/// A Request or an Event from the peer.
#[derive(Debug)]
pub enum IncomingMessage {
    /// A request; answer it with [`IncomingRequest::respond`].
    Request(IncomingRequest),
    /// An event.
    Event(IncomingEvent),
}

/// An event from the peer.
#[derive(Clone, Debug, PartialEq)]
pub struct IncomingEvent {
    /// The peer's event sequence number, if it sent one.
    pub sequence: Option<u64>,
    /// The event.
    pub payload: Payload,
}

/// A request from the peer. Dropping it unanswered sends an error response.
#[derive(Debug)]
pub struct IncomingRequest {
    payload: Payload,
    /// Answers the request; its Drop answers with an error if nobody else did.
    responder: Responder,
}

impl IncomingRequest {
    /// The request's sequence number.
    pub fn sequence(&self) -> Option<u64> {
        self.responder.sequence
    }

    /// The request.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Takes the payload out to answer later with a [`Responder`].
    pub fn into_parts(self) -> (Payload, Responder) {
        (self.payload, self.responder)
    }

    /// Answers the request: `Ok` sends the payload, `Err` sends `Envelope.error`.
    pub async fn respond(self, result: Result<Payload, String>) -> Result<(), SendError> {
        self.responder.respond(result).await
    }
}

/// Answers one request; dropping it unanswered sends an error response.
#[derive(Debug)]
pub struct Responder {
    sequence: Option<u64>,
    outgoing: Option<mpsc::Sender<Outgoing>>,
}

impl Responder {
    /// Answers the request: `Ok` sends the payload, `Err` sends `Envelope.error`.
    pub async fn respond(mut self, result: Result<Payload, String>) -> Result<(), SendError> {
        let outgoing = self.outgoing.take().expect("only respond takes the sender");
        let envelope = match result {
            Ok(payload) => Envelope {
                sequence: self.sequence,
                kind: Some(MessageType::Response),
                error: None,
                payload: Some(payload),
            },
            Err(error) => Envelope::error_response(self.sequence, error),
        };
        outgoing
            .send(Outgoing::Envelope(Box::new(envelope)))
            .await
            .map_err(|_| SendError(CloseReason::normal("connection closed")))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(outgoing) = self.outgoing.take() {
            let envelope =
                Envelope::error_response(self.sequence, "request dropped without an answer");
            let _ = outgoing.try_send(Outgoing::Envelope(Box::new(envelope)));
        }
    }
}

/// Incoming Requests and Events, in arrival order. Consume it steadily: when it is full the
/// connection stops reading, which also holds up responses to your own calls.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<Box<IncomingMessage>>,
}

impl Incoming {
    /// The next Request or Event; `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<IncomingMessage> {
        self.rx.recv().await.map(|m| *m)
    }
}

impl futures::Stream for Incoming {
    type Item = IncomingMessage;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|m| m.map(|m| *m))
    }
}

/// How the read or write loop ended.
enum End {
    /// The peer closed or the connection broke: nothing more to send.
    Gone(CloseReason),
    /// We decided to close: send a close frame first.
    Close(CloseReason),
}

async fn drive<S: TransportSender, R: TransportReceiver>(
    state: Arc<State>,
    mut sender: S,
    mut receiver: R,
    mut outgoing_rx: mpsc::Receiver<Outgoing>,
    outgoing_tx: mpsc::Sender<Outgoing>,
    incoming_tx: mpsc::Sender<Box<IncomingMessage>>,
) -> CloseReason {
    let end = {
        let reader = read_loop(&state, &mut receiver, &outgoing_tx, &incoming_tx);
        let writer = write_loop(&mut sender, &mut outgoing_rx);
        let shutdown = state.shutdown.cancelled();
        tokio::select! {
            end = reader => end,
            end = writer => end,
            () = shutdown => End::Close(
                state.lock().closed.clone().unwrap_or_else(|| CloseReason::normal("messenger dropped")),
            ),
        }
    };
    let reason = match end {
        End::Gone(reason) => reason,
        End::Close(reason) => {
            // Flush what was queued before the close, then say goodbye; a peer that does not
            // read gets a few seconds, not forever.
            let goodbye = async {
                while let Ok(Outgoing::Envelope(envelope)) = outgoing_rx.try_recv() {
                    if sender.send(*envelope).await.is_err() {
                        break;
                    }
                }
                let _ = sender.close(reason.clone()).await;
            };
            let _ = platform::timeout(CLOSE_GRACE, goodbye).await;
            reason
        }
    };
    state.finish(reason.clone());
    drop(incoming_tx);
    state.done.cancel();
    reason
}

/// Most envelopes fed to the transport before it is flushed.
const WRITE_BATCH: usize = 64;

/// Writes the queued envelopes: each one that arrives, together with those already waiting
/// behind it (up to [`WRITE_BATCH`]), is fed to the transport, then the batch is flushed, so a
/// burst of responses costs one socket write, and a lone envelope goes out at once.
async fn write_loop<S: TransportSender>(
    sender: &mut S,
    outgoing: &mut mpsc::Receiver<Outgoing>,
) -> End {
    let failed = |e: TransportError| match e {
        TransportError::Closed(reason) => End::Gone(reason),
        e => End::Gone(CloseReason::new(CloseReason::INTERNAL_ERROR, e.to_string())),
    };
    loop {
        // `None` is unreachable while the driver holds a sender clone; treat it as a shutdown.
        let Some(Outgoing::Envelope(mut envelope)) = outgoing.recv().await else {
            return End::Close(CloseReason::normal("messenger dropped"));
        };
        let mut fed = 0;
        loop {
            match sender.feed(*envelope).await {
                Ok(()) => {}
                Err(TransportError::Encode(e)) => {
                    tracing::warn!("dropping unencodable envelope: {e}")
                }
                Err(e) => return failed(e),
            }
            fed += 1;
            let Ok(Outgoing::Envelope(next)) = outgoing.try_recv() else {
                break;
            };
            if fed == WRITE_BATCH {
                if let Err(e) = sender.flush().await {
                    return failed(e);
                }
                fed = 0;
            }
            envelope = next;
        }
        if let Err(e) = sender.flush().await {
            return failed(e);
        }
    }
}

async fn read_loop<R: TransportReceiver>(
    state: &State,
    receiver: &mut R,
    outgoing: &mpsc::Sender<Outgoing>,
    incoming: &mpsc::Sender<Box<IncomingMessage>>,
) -> End {
    let answer = |sequence: Option<u64>, error: String| async move {
        let envelope = Envelope::error_response(sequence, error);
        let _ = outgoing.send(Outgoing::Envelope(Box::new(envelope))).await;
    };
    loop {
        let envelope = match receiver.recv().await {
            None => {
                return End::Gone(CloseReason::new(
                    CloseReason::GOING_AWAY,
                    "connection ended",
                ));
            }
            Some(Ok(envelope)) => envelope,
            Some(Err(TransportError::Closed(reason))) => return End::Gone(reason),
            Some(Err(TransportError::Decode(DecodeError::Payload {
                sequence,
                kind,
                source,
            }))) => {
                match kind {
                    Some(MessageType::Request) => answer(sequence, source.to_string()).await,
                    Some(MessageType::Response) => complete(
                        state,
                        sequence,
                        Err(CallError::Protocol(source.to_string())),
                    ),
                    _ => tracing::debug!("dropping event with a malformed payload: {source}"),
                }
                continue;
            }
            Some(Err(TransportError::Decode(e))) => {
                return End::Close(CloseReason::for_decode_error(&e));
            }
            Some(Err(e)) => {
                return End::Gone(CloseReason::new(CloseReason::INTERNAL_ERROR, e.to_string()));
            }
        };
        match envelope.kind {
            Some(MessageType::Response) => {
                let result = match (envelope.error, envelope.payload) {
                    (Some(error), _) => Err(CallError::Remote(error)),
                    (None, Some(payload)) => Ok(payload),
                    (None, None) => Err(CallError::Protocol("response without payload".into())),
                };
                complete(state, envelope.sequence, result);
            }
            Some(MessageType::Request) => {
                let Some(sequence) = envelope.sequence else {
                    answer(None, "request without sequence".into()).await;
                    continue;
                };
                let payload = match envelope.payload {
                    None => {
                        answer(Some(sequence), "request without payload".into()).await;
                        continue;
                    }
                    Some(Payload::Unknown(u)) => {
                        answer(
                            Some(sequence),
                            format!("unknown payload type {}", u.type_name()),
                        )
                        .await;
                        continue;
                    }
                    Some(Payload::Ping(_)) if state.config.answer_pings => {
                        let pong = Envelope::response(sequence, proto::Ping {});
                        let _ = outgoing.send(Outgoing::Envelope(Box::new(pong))).await;
                        continue;
                    }
                    Some(payload) => payload,
                };
                let request = IncomingRequest {
                    payload,
                    responder: Responder {
                        sequence: Some(sequence),
                        outgoing: Some(outgoing.clone()),
                    },
                };
                // Waits while the application is behind: backpressure on the connection. If
                // nobody listens any more, the request is dropped and its Drop answers it.
                let _ = incoming
                    .send(Box::new(IncomingMessage::Request(request)))
                    .await;
            }
            Some(MessageType::Event) => match envelope.payload {
                Some(Payload::Unknown(u)) => {
                    tracing::debug!("dropping event of unknown type {}", u.type_name())
                }
                None => tracing::debug!("dropping event without payload"),
                Some(payload) => {
                    let event = IncomingEvent {
                        sequence: envelope.sequence,
                        payload,
                    };
                    let _ = incoming.send(Box::new(IncomingMessage::Event(event))).await;
                }
            },
            Some(MessageType::Unknown) | None => {
                return End::Close(CloseReason::new(
                    CloseReason::PROTOCOL_ERROR,
                    "envelope without a message type",
                ));
            }
        }
    }
}

/// Routes a response to its pending call; an unknown sequence (late or bogus) is ignored.
fn complete(state: &State, sequence: Option<u64>, result: Result<Payload, CallError>) {
    let Some(sequence) = sequence else {
        tracing::debug!("ignoring response without sequence");
        return;
    };
    let reply = state.lock().calls.remove(&sequence);
    match reply {
        Some(reply) => {
            let _ = reply.send(result);
        }
        None => tracing::debug!(sequence, "ignoring response for no pending call"),
    }
}

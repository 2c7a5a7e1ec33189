//! The [`Transport`] trait: a bidirectional channel of [`Envelope`]s, such as a WebSocket.
//!
//! A transport splits into a sending and a receiving half so that the
//! [`Messenger`](crate::messenger::Messenger) can read and write at the same time (a large
//! outgoing message never stops incoming pings). Implementations:
//! - [`MemoryTransport`]: an in-process pair, for tests and for embedding.
//! - `WebSocketTransport` (feature `native`): tokio-tungstenite.
//! - `WebSysTransport` (feature `web`, wasm32 only): the browser's `WebSocket`.

use crate::envelope::{Codec, DecodeError, EncodeError, Envelope};
use crate::platform::MaybeSend;

mod memory;
pub use memory::{MemoryReceiver, MemorySender, MemoryTransport};

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod websocket;
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub use websocket::{ConnectError, WebSocketReceiver, WebSocketSender, WebSocketTransport};

#[cfg(all(feature = "web", target_arch = "wasm32"))]
mod websys;
#[cfg(all(feature = "web", target_arch = "wasm32"))]
pub use websys::{ConnectError, WebSysReceiver, WebSysSender, WebSysTransport};

/// The default limit on one incoming frame: 64 MiB (tasks can carry blobs inline).
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Why a connection is closed: a WebSocket close code and a short reason for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseReason {
    /// A WebSocket close code (1000 normal, 1002 protocol error, ...).
    pub code: u16,
    /// At most 123 bytes of explanation (longer reasons are cut at a character boundary).
    pub reason: String,
}

impl CloseReason {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A frame of a kind the subprotocol does not use.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A frame whose content does not decode.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy violation (authentication, origin).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame larger than allowed.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// An internal error.
    pub const INTERNAL_ERROR: u16 = 1011;

    /// A close reason; the text is cut to the 123 bytes a close frame can carry.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut cut = 123;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        CloseReason { code, reason }
    }

    /// A normal closure with a reason.
    pub fn normal(reason: impl Into<String>) -> Self {
        Self::new(Self::NORMAL, reason)
    }

    /// The close that answers an undecodable or unexpected frame.
    pub fn for_decode_error(err: &DecodeError) -> Self {
        let code = match err {
            DecodeError::WrongFrame { .. } => Self::UNSUPPORTED_DATA,
            DecodeError::TooLarge { .. } => Self::MESSAGE_TOO_BIG,
            _ => Self::INVALID_PAYLOAD,
        };
        Self::new(code, err.to_string())
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

/// What can go wrong on a transport.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// One frame could not be decoded; the connection itself is still usable but the
    /// [`Messenger`](crate::messenger::Messenger) closes it unless it can answer the envelope.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An envelope could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The connection is closed (by either side).
    #[error("connection closed: {0}")]
    Closed(CloseReason),
    /// The underlying connection failed.
    #[error("transport failed: {0}")]
    Io(String),
}

/// A connection that carries envelopes both ways.
///
/// ```
/// use wasimoff_core::envelope::{Codec, Envelope};
/// use wasimoff_core::proto;
/// use wasimoff_core::transport::{MemoryTransport, Transport, TransportReceiver, TransportSender};
///
/// # futures::executor::block_on(async {
/// let (a, b) = MemoryTransport::pair(Codec::Json);
/// let (mut a_tx, _a_rx) = a.split();
/// let (_b_tx, mut b_rx) = b.split();
/// a_tx.send(Envelope::event(0, proto::Ping {})).await.unwrap();
/// let got = b_rx.recv().await.unwrap().unwrap();
/// assert_eq!(got.sequence, Some(0));
/// # });
/// ```
pub trait Transport: MaybeSend + 'static {
    /// The sending half.
    type Sender: TransportSender;
    /// The receiving half.
    type Receiver: TransportReceiver;

    /// The codec this connection negotiated.
    fn codec(&self) -> Codec;

    /// Splits the connection into halves that can be used concurrently.
    fn split(self) -> (Self::Sender, Self::Receiver);
}

/// The sending half of a [`Transport`].
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait TransportSender: MaybeSend + 'static {
    /// Sends one envelope. Waits while the connection's outgoing buffer is full.
    async fn send(&mut self, envelope: Envelope) -> Result<(), TransportError>;

    /// Queues one envelope without necessarily writing it out: [`flush`](Self::flush) does.
    /// The [`Messenger`](crate::messenger::Messenger) feeds every envelope that is waiting and
    /// then flushes once, so that a burst costs one write to the socket instead of one each.
    /// By default the same as [`send`](Self::send).
    async fn feed(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        self.send(envelope).await
    }

    /// Writes out what [`feed`](Self::feed) queued. By default there is nothing to do.
    async fn flush(&mut self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Sends a close frame with the reason and shuts the connection down.
    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError>;
}

/// The receiving half of a [`Transport`].
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait TransportReceiver: MaybeSend + 'static {
    /// The next envelope; `Err(TransportError::Closed)` once the connection is closed (with the
    /// peer's reason where it gave one). A [`TransportError::Decode`] is about one frame only.
    async fn recv(&mut self) -> Option<Result<Envelope, TransportError>>;
}

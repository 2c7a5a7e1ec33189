//! An in-process [`Transport`] pair that carries encoded frames over bounded channels.
//!
//! Frames are really encoded and decoded with the pair's [`Codec`], so tests over a memory pair
//! exercise the same code paths as a WebSocket; [`MemorySender::send_frame`] injects raw frames
//! (a text frame on the binary protocol, garbage bytes) to test how peers cope.

use tokio::sync::mpsc;

use super::{CloseReason, Transport, TransportError, TransportReceiver, TransportSender};
use crate::envelope::{Codec, Envelope, Frame};

/// How many frames may wait in each direction before `send` waits.
const CHANNEL_CAPACITY: usize = 64;

#[derive(Debug)]
enum Item {
    Frame(Frame),
    Close(CloseReason),
}

/// One end of an in-process connection; make a pair with [`MemoryTransport::pair`].
#[derive(Debug)]
pub struct MemoryTransport {
    codec: Codec,
    tx: mpsc::Sender<Item>,
    rx: mpsc::Receiver<Item>,
}

impl MemoryTransport {
    /// Two connected ends speaking `codec`.
    pub fn pair(codec: Codec) -> (MemoryTransport, MemoryTransport) {
        let (a_tx, b_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (b_tx, a_rx) = mpsc::channel(CHANNEL_CAPACITY);
        (
            MemoryTransport {
                codec,
                tx: a_tx,
                rx: a_rx,
            },
            MemoryTransport {
                codec,
                tx: b_tx,
                rx: b_rx,
            },
        )
    }
}

impl Transport for MemoryTransport {
    type Sender = MemorySender;
    type Receiver = MemoryReceiver;

    fn codec(&self) -> Codec {
        self.codec
    }

    fn split(self) -> (MemorySender, MemoryReceiver) {
        (
            MemorySender {
                codec: self.codec,
                tx: Some(self.tx),
            },
            MemoryReceiver {
                codec: self.codec,
                rx: self.rx,
                closed: None,
            },
        )
    }
}

/// The sending half of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemorySender {
    codec: Codec,
    tx: Option<mpsc::Sender<Item>>,
}

impl MemorySender {
    /// Sends a raw frame, bypassing the codec.
    pub async fn send_frame(&mut self, frame: Frame) -> Result<(), TransportError> {
        self.push(Item::Frame(frame)).await
    }

    async fn push(&mut self, item: Item) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or_else(closed_locally)?;
        tx.send(item).await.map_err(|_| peer_gone())
    }
}

fn closed_locally() -> TransportError {
    TransportError::Closed(CloseReason::normal("closed locally"))
}

fn peer_gone() -> TransportError {
    TransportError::Closed(CloseReason::new(CloseReason::GOING_AWAY, "peer dropped"))
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl TransportSender for MemorySender {
    async fn send(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        let frame = self.codec.encode(&envelope)?;
        self.push(Item::Frame(frame)).await
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        let result = self.push(Item::Close(reason)).await;
        self.tx = None;
        result
    }
}

/// The receiving half of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemoryReceiver {
    codec: Codec,
    rx: mpsc::Receiver<Item>,
    closed: Option<CloseReason>,
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl TransportReceiver for MemoryReceiver {
    async fn recv(&mut self) -> Option<Result<Envelope, TransportError>> {
        if self.closed.is_some() {
            return None;
        }
        match self.rx.recv().await {
            Some(Item::Frame(frame)) => Some(self.codec.decode(frame).map_err(Into::into)),
            Some(Item::Close(reason)) => {
                self.closed = Some(reason.clone());
                Some(Err(TransportError::Closed(reason)))
            }
            None => {
                let reason = CloseReason::new(CloseReason::GOING_AWAY, "peer dropped");
                self.closed = Some(reason.clone());
                Some(Err(TransportError::Closed(reason)))
            }
        }
    }
}

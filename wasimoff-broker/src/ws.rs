//! [`AxumTransport`]: an upgraded axum WebSocket as a core [`Transport`], plus the subprotocol
//! choice the broker makes during the upgrade.
//!
//! Every socket is kept alive and checked with WebSocket pings (which every WebSocket peer
//! answers by protocol, the original peers included): one goes out at a third of the idle
//! timeout, and a socket from which no frame at all arrives within the timeout is closed.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use tokio::sync::Mutex;
use wasimoff_core::envelope::{Codec, DecodeError, Envelope, Frame};
use wasimoff_core::transport::{
    CloseReason, Transport, TransportError, TransportReceiver, TransportSender,
};

/// The read chunk of each WebSocket connection (frames larger than this are still read).
pub(crate) const READ_BUFFER: usize = 8 << 10;

/// Frames queued (fed) on a connection are written out once they reach this many bytes, or at
/// the next flush; the messenger flushes after each burst, so a burst costs one write.
pub(crate) const WRITE_BUFFER: usize = 8 << 10;

/// An upgraded axum WebSocket speaking one wasimoff subprotocol.
#[derive(Debug)]
pub(crate) struct AxumTransport {
    socket: WebSocket,
    codec: Codec,
    max_frame: usize,
    idle: Duration,
}

impl AxumTransport {
    /// `idle`: how long the socket may stay silent (no frame, no pong) before it is closed.
    pub(crate) fn new(socket: WebSocket, codec: Codec, max_frame: usize, idle: Duration) -> Self {
        AxumTransport {
            socket,
            codec,
            max_frame,
            idle: idle.max(Duration::from_millis(30)),
        }
    }
}

type Sink = Mutex<SplitSink<WebSocket, Message>>;

/// Pings the peer every `every` while the sender lives.
async fn keepalive(sink: Weak<Sink>, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        let Some(sink) = sink.upgrade() else { return };
        let mut sink = sink.lock().await;
        if sink.send(Message::Ping(Default::default())).await.is_err() {
            return;
        }
    }
}

impl Transport for AxumTransport {
    type Sender = AxumSender;
    type Receiver = AxumReceiver;

    fn codec(&self) -> Codec {
        self.codec
    }

    fn split(self) -> (AxumSender, AxumReceiver) {
        let (sink, stream) = self.socket.split();
        let sink = Arc::new(Mutex::new(sink));
        tokio::spawn(keepalive(Arc::downgrade(&sink), self.idle / 3));
        (
            AxumSender {
                sink,
                codec: self.codec,
            },
            AxumReceiver {
                stream,
                codec: self.codec,
                max_frame: self.max_frame,
                idle: self.idle,
                done: false,
            },
        )
    }
}

#[derive(Debug)]
pub(crate) struct AxumSender {
    sink: Arc<Sink>,
    codec: Codec,
}

impl AxumSender {
    fn message(&self, envelope: &Envelope) -> Result<Message, TransportError> {
        Ok(match self.codec.encode(envelope)? {
            Frame::Binary(b) => Message::Binary(b),
            Frame::Text(t) => Message::Text(t.into()),
        })
    }
}

fn gone() -> TransportError {
    TransportError::Closed(CloseReason::new(
        CloseReason::GOING_AWAY,
        "connection closed",
    ))
}

#[async_trait::async_trait]
impl TransportSender for AxumSender {
    async fn send(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        let message = self.message(&envelope)?;
        self.sink
            .lock()
            .await
            .send(message)
            .await
            .map_err(|_| gone())
    }

    async fn feed(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        let message = self.message(&envelope)?;
        self.sink
            .lock()
            .await
            .feed(message)
            .await
            .map_err(|_| gone())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.sink.lock().await.flush().await.map_err(|_| gone())
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        let frame = CloseFrame {
            code: reason.code,
            reason: reason.reason.into(),
        };
        let mut sink = self.sink.lock().await;
        let result = sink.send(Message::Close(Some(frame))).await;
        let _ = sink.close().await;
        result.map_err(|_| gone())
    }
}

#[derive(Debug)]
pub(crate) struct AxumReceiver {
    stream: SplitStream<WebSocket>,
    codec: Codec,
    max_frame: usize,
    idle: Duration,
    done: bool,
}

#[async_trait::async_trait]
impl TransportReceiver for AxumReceiver {
    async fn recv(&mut self) -> Option<Result<Envelope, TransportError>> {
        if self.done {
            return None;
        }
        loop {
            let Ok(next) = tokio::time::timeout(self.idle, self.stream.next()).await else {
                self.done = true;
                let reason = format!(
                    "nothing received for {} s, not even a pong",
                    self.idle.as_secs_f64()
                );
                return Some(Err(TransportError::Closed(CloseReason::new(
                    CloseReason::GOING_AWAY,
                    reason,
                ))));
            };
            let frame = match next {
                None => {
                    self.done = true;
                    return Some(Err(gone()));
                }
                Some(Err(e)) => {
                    self.done = true;
                    // axum reports an oversized frame as a capacity error of tungstenite.
                    let text = e.to_string();
                    if text.contains("Space limit exceeded") || text.contains("too long") {
                        let err = DecodeError::TooLarge {
                            size: 0,
                            limit: self.max_frame,
                        };
                        return Some(Err(err.into()));
                    }
                    return Some(Err(TransportError::Io(text)));
                }
                Some(Ok(Message::Binary(b))) => Frame::Binary(b),
                Some(Ok(Message::Text(t))) => Frame::Text(t.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    self.done = true;
                    let reason = match frame {
                        Some(f) => CloseReason::new(f.code, f.reason.as_str()),
                        None => CloseReason::new(1005, "closed without a reason"),
                    };
                    return Some(Err(TransportError::Closed(reason)));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            };
            return Some(self.codec.decode(frame).map_err(Into::into));
        }
    }
}

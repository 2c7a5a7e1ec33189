//! [`WebSocketTransport`]: the native WebSocket transport on tokio-tungstenite.
//!
//! Works over any byte stream (a `TcpStream` for clients, an upgraded connection for servers).
//! [`WebSocketTransport::connect`] dials a broker, offering both subprotocols, and insists that
//! the server picks one, as browsers do.

use futures::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        self, Message,
        client::IntoClientRequest,
        http::{HeaderValue, header},
        protocol::{CloseFrame, WebSocketConfig},
    },
};

use super::{
    CloseReason, DEFAULT_MAX_FRAME, Transport, TransportError, TransportReceiver, TransportSender,
};
use crate::envelope::{Codec, DecodeError, Envelope, Frame};

/// Why [`WebSocketTransport::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL or a header is not valid.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The handshake or the connection failed.
    #[error("cannot connect: {0}")]
    Handshake(#[from] tungstenite::Error),
    /// The server did not select one of the wasimoff subprotocols.
    #[error("the server selected no wasimoff subprotocol (got {0:?})")]
    NoSubprotocol(Option<String>),
}

/// The read chunk of a connection (larger frames are still read whole, in more steps).
/// tungstenite zero-fills the free part of its read buffer before every read, and allocates a
/// new one whenever a received frame still holds the old one (decoded `bytes` fields share it):
/// with its default of 128 KiB that was most of a small task's CPU time on the client and the
/// provider (see docs/benchmarks.md). The broker uses the same size.
const READ_BUFFER: usize = 8 << 10;

/// A WebSocket connection speaking one of the wasimoff subprotocols.
#[derive(Debug)]
pub struct WebSocketTransport<S> {
    ws: WebSocketStream<S>,
    codec: Codec,
    max_frame: usize,
}

impl<S> WebSocketTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Wraps an established WebSocket whose subprotocol negotiation chose `codec`.
    pub fn new(ws: WebSocketStream<S>, codec: Codec) -> Self {
        WebSocketTransport {
            ws,
            codec,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Sets the largest incoming frame accepted (bigger frames close the connection with 1009).
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame;
        self
    }
}

impl WebSocketTransport<MaybeTlsStream<tokio::net::TcpStream>> {
    /// Connects to a `ws://` URL, offering both subprotocols (protobuf first), with the given
    /// extra headers (e.g. `User-Agent`, `Authorization`).
    pub async fn connect(
        url: &str,
        headers: &[(&str, &str)],
        max_frame: usize,
    ) -> Result<Self, ConnectError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError::InvalidRequest(e.to_string()))?;
        let offered = Codec::SUBPROTOCOLS.join(", ");
        request.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&offered)
                .map_err(|e| ConnectError::InvalidRequest(e.to_string()))?,
        );
        for (name, value) in headers {
            let name = header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| ConnectError::InvalidRequest(e.to_string()))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| ConnectError::InvalidRequest(e.to_string()))?;
            request.headers_mut().insert(name, value);
        }
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(max_frame))
            .max_frame_size(Some(max_frame));
        let (ws, response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                .await
                .map_err(|e| match e {
                    // tungstenite itself refuses a handshake that selects none of the offered protocols.
                    tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_),
                    ) => ConnectError::NoSubprotocol(None),
                    other => ConnectError::Handshake(other),
                })?;
        let selected = response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let codec = selected
            .as_deref()
            .and_then(Codec::from_subprotocol)
            .ok_or(ConnectError::NoSubprotocol(selected))?;
        Ok(WebSocketTransport {
            ws,
            codec,
            max_frame,
        })
    }
}

impl<S> Transport for WebSocketTransport<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Sender = WebSocketSender<S>;
    type Receiver = WebSocketReceiver<S>;

    fn codec(&self) -> Codec {
        self.codec
    }

    fn split(self) -> (Self::Sender, Self::Receiver) {
        let (sink, stream) = self.ws.split();
        (
            WebSocketSender {
                sink,
                codec: self.codec,
            },
            WebSocketReceiver {
                stream,
                codec: self.codec,
                max_frame: self.max_frame,
                done: false,
            },
        )
    }
}

/// The sending half of a [`WebSocketTransport`].
#[derive(Debug)]
pub struct WebSocketSender<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    codec: Codec,
}

impl<S> WebSocketSender<S> {
    fn message(&self, envelope: &Envelope) -> Result<Message, TransportError> {
        Ok(match self.codec.encode(envelope)? {
            Frame::Binary(b) => Message::Binary(b),
            Frame::Text(t) => Message::Text(t.into()),
        })
    }
}

fn io_error(e: tungstenite::Error) -> TransportError {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            TransportError::Closed(CloseReason::new(
                CloseReason::GOING_AWAY,
                "connection closed",
            ))
        }
        other => TransportError::Io(other.to_string()),
    }
}

#[async_trait::async_trait]
impl<S> TransportSender for WebSocketSender<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn send(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        let message = self.message(&envelope)?;
        self.sink.send(message).await.map_err(io_error)
    }

    async fn feed(&mut self, envelope: Envelope) -> Result<(), TransportError> {
        let message = self.message(&envelope)?;
        self.sink.feed(message).await.map_err(io_error)
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.sink.flush().await.map_err(io_error)
    }

    async fn close(&mut self, reason: CloseReason) -> Result<(), TransportError> {
        let frame = CloseFrame {
            code: reason.code.into(),
            reason: reason.reason.into(),
        };
        let result = self.sink.send(Message::Close(Some(frame))).await;
        let _ = self.sink.close().await;
        result.map_err(io_error)
    }
}

/// The receiving half of a [`WebSocketTransport`].
#[derive(Debug)]
pub struct WebSocketReceiver<S> {
    stream: SplitStream<WebSocketStream<S>>,
    codec: Codec,
    max_frame: usize,
    done: bool,
}

#[async_trait::async_trait]
impl<S> TransportReceiver for WebSocketReceiver<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn recv(&mut self) -> Option<Result<Envelope, TransportError>> {
        if self.done {
            return None;
        }
        loop {
            let frame = match self.stream.next().await {
                None => {
                    self.done = true;
                    let reason = CloseReason::new(CloseReason::GOING_AWAY, "connection ended");
                    return Some(Err(TransportError::Closed(reason)));
                }
                Some(Err(tungstenite::Error::Capacity(e))) => {
                    // The messenger answers this with a 1009 close.
                    self.done = true;
                    tracing::debug!("incoming frame over the limit: {e}");
                    let err = DecodeError::TooLarge {
                        size: 0,
                        limit: self.max_frame,
                    };
                    return Some(Err(err.into()));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(io_error(e)));
                }
                Some(Ok(Message::Binary(b))) => Frame::Binary(b),
                Some(Ok(Message::Text(t))) => Frame::Text(t.as_str().to_owned()),
                Some(Ok(Message::Close(frame))) => {
                    self.done = true;
                    let reason = match frame {
                        Some(f) => CloseReason::new(f.code.into(), f.reason.as_str()),
                        None => CloseReason::new(1005, "closed without a reason"),
                    };
                    return Some(Err(TransportError::Closed(reason)));
                }
                // Control frames are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            };
            if frame.len() > self.max_frame {
                let err = DecodeError::TooLarge {
                    size: frame.len(),
                    limit: self.max_frame,
                };
                return Some(Err(err.into()));
            }
            return Some(self.codec.decode(frame).map_err(Into::into));
        }
    }
}

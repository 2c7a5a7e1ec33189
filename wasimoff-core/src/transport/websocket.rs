//! [`WebSocketTransport`]: the native WebSocket transport on tokio-tungstenite.
//!
//! Works over any byte stream (a `TcpStream` for clients, an upgraded connection for servers).
//! [`WebSocketTransport::connect`] dials a broker, offering both subprotocols, and insists that
//! the server picks one, as browsers do. With the `rustls` feature it speaks `wss://` too,
//! trusting the webpki roots ([`WebSocketTransport::connect_with_tls`] takes a config of your
//! own, e.g. from [`crate::tls::client_config`] with a private CA).
//!
//! [`ConnectError`] tells the failures apart that callers treat differently: the server refused
//! the upgrade with an HTTP status, TLS failed (untrusted certificate, not a TLS server) or is
//! not compiled in, or the connection itself failed.

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
    /// The connection failed or broke during the handshake (refused, reset, DNS, timeout...).
    #[error("cannot connect: {0}")]
    Handshake(#[source] tungstenite::Error),
    /// The server answered the upgrade request with an HTTP status other than 101.
    #[error("the server refused the WebSocket: HTTP {status}{}", body_suffix(.body))]
    Rejected {
        /// The HTTP status (401, 403, 404, 503, ...).
        status: u16,
        /// The start of the answer's body, if it had one (what the server said).
        body: String,
    },
    /// The TLS handshake failed: the server's certificate is not trusted or not valid for the
    /// host name, or the server does not speak TLS on this port.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// A `wss://` URL, but this build has no TLS support (wasimoff-core's `rustls` feature).
    #[error("wss:// needs TLS support, which this build lacks (the `rustls` feature)")]
    TlsUnsupported,
    /// The server did not select one of the wasimoff subprotocols.
    #[error("the server selected no wasimoff subprotocol (got {0:?})")]
    NoSubprotocol(Option<String>),
}

impl ConnectError {
    /// The HTTP status of a [`ConnectError::Rejected`] upgrade.
    pub fn status(&self) -> Option<u16> {
        match self {
            ConnectError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl From<tungstenite::Error> for ConnectError {
    /// Sorts a tungstenite error into the variants callers act on.
    fn from(e: tungstenite::Error) -> Self {
        use tungstenite::error::{ProtocolError, UrlError};
        match e {
            // tungstenite itself refuses a handshake that selects none of the offered protocols.
            tungstenite::Error::Protocol(ProtocolError::SecWebSocketSubProtocolError(_)) => {
                ConnectError::NoSubprotocol(None)
            }
            tungstenite::Error::Http(response) => {
                let body = response.body().as_deref().map(refusal).unwrap_or_default();
                ConnectError::Rejected {
                    status: response.status().as_u16(),
                    body,
                }
            }
            tungstenite::Error::Url(
                e @ (UrlError::NoHostName
                | UrlError::EmptyHostName
                | UrlError::UnsupportedUrlScheme
                | UrlError::NoPathOrQuery),
            ) => ConnectError::InvalidRequest(e.to_string()),
            tungstenite::Error::Tls(e) => ConnectError::Tls(e.to_string()),
            #[cfg(feature = "rustls")]
            tungstenite::Error::Io(io) => match crate::tls::find_rustls_error(&io) {
                Some(tls) => ConnectError::Tls(tls.to_string()),
                None => ConnectError::Handshake(tungstenite::Error::Io(io)),
            },
            other => ConnectError::Handshake(other),
        }
    }
}

/// What a refused upgrade's body says: the `message` of a Connect-style JSON error (what the
/// broker sends), else the start of the text.
fn refusal(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Refusal {
        message: String,
    }
    let text = match serde_json::from_slice::<Refusal>(body) {
        Ok(refusal) => refusal.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    text.trim().chars().take(200).collect()
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(" ({body})")
    }
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
    /// Connects to a `ws://` URL (or `wss://` with the `rustls` feature, trusting the webpki
    /// roots), offering both subprotocols (protobuf first), with the given extra headers (e.g.
    /// `User-Agent`, `Authorization`).
    pub async fn connect(
        url: &str,
        headers: &[(&str, &str)],
        max_frame: usize,
    ) -> Result<Self, ConnectError> {
        Self::dial(url, headers, max_frame, None).await
    }

    /// Like [`WebSocketTransport::connect`], with this TLS config for `wss://` URLs (see
    /// [`crate::tls`]); `ws://` URLs ignore it.
    #[cfg(feature = "rustls")]
    pub async fn connect_with_tls(
        url: &str,
        headers: &[(&str, &str)],
        max_frame: usize,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Self, ConnectError> {
        Self::dial(url, headers, max_frame, Some(tls)).await
    }

    async fn dial(
        url: &str,
        headers: &[(&str, &str)],
        max_frame: usize,
        #[cfg(feature = "rustls")] tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        #[cfg(not(feature = "rustls"))] _tls: Option<std::convert::Infallible>,
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
        let secure = request.uri().scheme_str() == Some("wss");
        // Fail before dialling: the server would only see a connection that says nothing.
        #[cfg(not(feature = "rustls"))]
        if secure {
            return Err(ConnectError::TlsUnsupported);
        }
        #[cfg(feature = "rustls")]
        let (ws, response) = {
            // The process-wide default config (webpki roots) only where TLS is spoken.
            let tls = match tls {
                Some(tls) => Some(tls),
                None if secure => Some(
                    crate::tls::default_client_config()
                        .map_err(|e| ConnectError::Tls(e.to_string()))?,
                ),
                None => None,
            };
            let connector = tls.map(tokio_tungstenite::Connector::Rustls);
            tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector)
                .await?
        };
        #[cfg(not(feature = "rustls"))]
        let (ws, response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
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

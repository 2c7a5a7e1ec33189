//! [`Connector`]: how a provider opens a connection to its broker, and which failures are worth
//! another try.
//!
//! The runtime only needs *a* [`Transport`]; where it comes from is up to the connector. Natively
//! [`WebSocketConnector`] dials the broker with tokio-tungstenite (offering both subprotocols and
//! sending `User-Agent` and the token as headers; `wss://` with the `rustls` feature); the
//! browser provider plugs in a connector over `WebSysTransport` (browsers cannot set headers, so
//! it puts the token into the URL); tests hand out one end of a `MemoryTransport` pair per
//! connect.
//!
//! A failed connect is a [`ConnectError`] of some [`ConnectFailure`] kind.
//! [`ConnectError::is_permanent`] decides, without I/O, whether the provider retries with
//! backoff (the network, an overloaded or restarting broker) or stops with the error (a refused
//! token, a wrong URL, an untrusted certificate: retrying cannot fix them, and a provider that
//! retries them forever looks healthy while it serves nobody).

use wasimoff_core::{
    messenger::{Driver, Incoming, Messenger, MessengerConfig},
    platform::{MaybeSend, MaybeSync},
    transport::Transport,
};

/// What a connector needs to dial the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The provider socket URL, `ws[s]://host/api/provider/ws?id=<name>`.
    pub url: String,
    /// The `User-Agent` to send where the platform allows it.
    pub user_agent: String,
    /// A provider token, if the broker wants one.
    pub token: Option<String>,
    /// The largest incoming frame to accept.
    pub max_frame: usize,
}

/// What kind of failure a [`ConnectError`] is; see [`ConnectError::is_permanent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectFailure {
    /// The network or the broker's state: refused, reset, timed out, name not resolved, or
    /// anything a connector cannot tell apart (browsers hide why a WebSocket failed).
    Transient,
    /// The broker (or a proxy before it) answered the WebSocket upgrade with this HTTP status.
    Status(u16),
    /// The TLS handshake failed: the certificate is not trusted or not valid for the host, or
    /// the server does not speak TLS on that port.
    Tls,
    /// This build cannot reach the URL: `wss://` without TLS support.
    Unsupported,
    /// The server accepted the socket but offered no wasimoff subprotocol: not a broker's
    /// provider socket.
    NotABroker,
    /// The request could not be formed (a URL or a token that is not valid in a header).
    InvalidRequest,
}

/// A failed connection attempt.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot connect to the broker: {message}")]
pub struct ConnectError {
    /// What kind of failure: decides whether the provider tries again.
    pub kind: ConnectFailure,
    /// What happened, for humans.
    pub message: String,
}

impl ConnectError {
    /// A failure of the given kind.
    pub fn new(kind: ConnectFailure, message: impl Into<String>) -> Self {
        ConnectError {
            kind,
            message: message.into(),
        }
    }

    /// A failure worth another try ([`ConnectFailure::Transient`]).
    pub fn transient(message: impl Into<String>) -> Self {
        ConnectError::new(ConnectFailure::Transient, message)
    }

    /// Whether trying again cannot help: the broker refused the upgrade with a client error
    /// (4xx: 401 token, 403 forbidden, 404 no socket at this path, ...; but not 408 or 429,
    /// which are about timing), TLS failed or is not supported, the server is not a broker, or
    /// the request was malformed. Transient failures and server errors (5xx: a broker at its
    /// connection limit, restarting, behind a proxy that lost it) are retried.
    ///
    /// ```
    /// use wasimoff_provider::runtime::{ConnectError, ConnectFailure};
    /// assert!(ConnectError::new(ConnectFailure::Status(401), "HTTP 401").is_permanent());
    /// assert!(!ConnectError::new(ConnectFailure::Status(503), "HTTP 503").is_permanent());
    /// assert!(!ConnectError::transient("connection refused").is_permanent());
    /// ```
    pub fn is_permanent(&self) -> bool {
        match self.kind {
            ConnectFailure::Transient => false,
            ConnectFailure::Status(status) => {
                (400..500).contains(&status) && !matches!(status, 408 | 425 | 429)
            }
            ConnectFailure::Tls
            | ConnectFailure::Unsupported
            | ConnectFailure::NotABroker
            | ConnectFailure::InvalidRequest => true,
        }
    }

    /// What to check, for a [permanent](Self::is_permanent) failure (in terms of the native
    /// provider's flags).
    pub fn advice(&self) -> Option<&'static str> {
        if !self.is_permanent() {
            return None;
        }
        Some(match self.kind {
            ConnectFailure::Tls if self.message.contains("CaUsedAsEndEntity") => CA_AS_SERVER,
            ConnectFailure::Status(401) => {
                "check --token (WASIMOFF_TOKEN): it must be one of the broker's --provider-tokens"
            }
            ConnectFailure::Status(403) => {
                "the broker forbids this provider: check --token (WASIMOFF_TOKEN) against the \
                 broker's --provider-tokens"
            }
            ConnectFailure::Status(404 | 405) => {
                "there is no provider socket at this URL: check --broker (WASIMOFF_BROKER): the \
                 scheme, host and port of the broker, plus the path prefix if it is mounted \
                 under one"
            }
            ConnectFailure::Tls => {
                "if the broker's certificate is self-signed or from a private CA, pass that \
                 certificate with --ca-cert FILE (WASIMOFF_CA_CERT); also check that the host in \
                 --broker is a name the certificate is valid for, and that the broker serves TLS \
                 on that port"
            }
            ConnectFailure::Unsupported => {
                "this build has no TLS support: build wasimoff-provider with its default \
                 `rustls` feature, or use an http:// or ws:// broker URL"
            }
            ConnectFailure::NotABroker => {
                "the server is not a wasimoff broker's provider socket: check --broker \
                 (WASIMOFF_BROKER)"
            }
            _ => "check --broker (WASIMOFF_BROKER) and --token (WASIMOFF_TOKEN)",
        })
    }
}

/// The advice for a self-signed certificate made as a CA (`openssl req -x509` does that by
/// default), which webpki refuses as a server's own certificate.
pub(crate) const CA_AS_SERVER: &str = "the broker's certificate is a CA certificate \
    (basicConstraints CA:TRUE), which is refused as a server's own: make it with CA:FALSE \
    (openssl req -x509 ... -addext basicConstraints=critical,CA:FALSE), or sign a server \
    certificate with that CA and keep the CA for --ca-cert";

/// Opens connections to the broker; called again for every reconnect.
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait Connector: MaybeSend + MaybeSync + 'static {
    /// The transport a successful connect yields.
    type Transport: Transport;

    /// Dials the broker once.
    async fn connect(&self, request: &ConnectRequest) -> Result<Self::Transport, ConnectError>;
}

/// A live connection: the messenger handle, its incoming stream and its driver future.
pub(crate) type Connection = (Messenger, Incoming, Driver);

/// [`Connector`] with the transport type erased, so the provider needs no type parameter.
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub(crate) trait DynConnector: MaybeSend + MaybeSync {
    async fn open(
        &self,
        request: &ConnectRequest,
        config: &MessengerConfig,
    ) -> Result<Connection, ConnectError>;
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl<C: Connector> DynConnector for C {
    async fn open(
        &self,
        request: &ConnectRequest,
        config: &MessengerConfig,
    ) -> Result<Connection, ConnectError> {
        let transport = self.connect(request).await?;
        Ok(Messenger::new(transport, config.clone()))
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::WebSocketConnector;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    // `tokio/net` is on through wasimoff-core's `native` feature (same package, features unify).
    use tokio::net::TcpStream;
    use tokio_tungstenite::MaybeTlsStream;
    use wasimoff_core::transport::{self, WebSocketTransport};

    use super::{ConnectError, ConnectFailure, ConnectRequest, Connector};

    /// Dials the broker over a native WebSocket: `ws://`, and `wss://` with the `rustls`
    /// feature (trusting the webpki roots, or the config given to
    /// [`WebSocketConnector::with_tls`]).
    #[derive(Clone, Debug, Default)]
    pub struct WebSocketConnector {
        #[cfg(feature = "rustls")]
        tls: Option<std::sync::Arc<wasimoff_core::tls::rustls::ClientConfig>>,
    }

    impl WebSocketConnector {
        /// A connector trusting the webpki roots for `wss://`.
        pub fn new() -> Self {
            WebSocketConnector::default()
        }

        /// A connector that trusts what `tls` trusts for `wss://` (see
        /// [`wasimoff_core::tls::client_config`]).
        #[cfg(feature = "rustls")]
        pub fn with_tls(tls: std::sync::Arc<wasimoff_core::tls::rustls::ClientConfig>) -> Self {
            WebSocketConnector { tls: Some(tls) }
        }
    }

    #[async_trait::async_trait]
    impl Connector for WebSocketConnector {
        type Transport = WebSocketTransport<MaybeTlsStream<TcpStream>>;

        async fn connect(&self, request: &ConnectRequest) -> Result<Self::Transport, ConnectError> {
            let bearer = request.token.as_ref().map(|t| format!("Bearer {t}"));
            let mut headers = vec![("User-Agent", request.user_agent.as_str())];
            if let Some(bearer) = &bearer {
                headers.push(("Authorization", bearer.as_str()));
            }
            let (url, max_frame) = (&request.url, request.max_frame);
            #[cfg(feature = "rustls")]
            let connected = match &self.tls {
                Some(tls) => {
                    WebSocketTransport::connect_with_tls(url, &headers, max_frame, tls.clone())
                        .await
                }
                None => WebSocketTransport::connect(url, &headers, max_frame).await,
            };
            #[cfg(not(feature = "rustls"))]
            let connected = WebSocketTransport::connect(url, &headers, max_frame).await;
            connected.map_err(classify)
        }
    }

    /// The kind of a WebSocket connect failure.
    pub(super) fn classify(e: transport::ConnectError) -> ConnectError {
        let kind = match &e {
            transport::ConnectError::Rejected { status, .. } => ConnectFailure::Status(*status),
            transport::ConnectError::Tls(_) => ConnectFailure::Tls,
            transport::ConnectError::TlsUnsupported => ConnectFailure::Unsupported,
            transport::ConnectError::NoSubprotocol(_) => ConnectFailure::NotABroker,
            transport::ConnectError::InvalidRequest(_) => ConnectFailure::InvalidRequest,
            _ => ConnectFailure::Transient,
        };
        ConnectError::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_retrying_cannot_fix_is_permanent() {
        let permanent = [
            ConnectFailure::Status(400),
            ConnectFailure::Status(401),
            ConnectFailure::Status(403),
            ConnectFailure::Status(404),
            ConnectFailure::Status(410),
            ConnectFailure::Tls,
            ConnectFailure::Unsupported,
            ConnectFailure::NotABroker,
            ConnectFailure::InvalidRequest,
        ];
        for kind in permanent {
            let e = ConnectError::new(kind, "x");
            assert!(e.is_permanent(), "{kind:?}");
            assert!(e.advice().is_some(), "{kind:?}");
        }
        let transient = [
            ConnectFailure::Transient,
            ConnectFailure::Status(408),
            ConnectFailure::Status(429),
            ConnectFailure::Status(500),
            ConnectFailure::Status(502),
            ConnectFailure::Status(503),
            ConnectFailure::Status(301),
        ];
        for kind in transient {
            let e = ConnectError::new(kind, "x");
            assert!(!e.is_permanent(), "{kind:?}");
            assert_eq!(e.advice(), None, "{kind:?}");
        }
    }

    #[test]
    fn advice_names_the_flag_to_check() {
        let advice = |kind| ConnectError::new(kind, "x").advice().unwrap_or_default();
        assert!(advice(ConnectFailure::Status(401)).contains("--token"));
        assert!(advice(ConnectFailure::Status(404)).contains("--broker"));
        assert!(advice(ConnectFailure::Tls).contains("--ca-cert"));
        let ca = ConnectError::new(
            ConnectFailure::Tls,
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
        );
        assert!(ca.advice().unwrap_or_default().contains("CA:FALSE"));
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn websocket_failures_are_classified() {
        use std::io::{Error, ErrorKind};
        use tokio_tungstenite::tungstenite;
        use wasimoff_core::transport::ConnectError as Ws;

        let kind = |e| native::classify(e).kind;
        let rejected = |status| Ws::Rejected {
            status,
            body: "why".into(),
        };
        assert_eq!(kind(rejected(401)), ConnectFailure::Status(401));
        assert_eq!(kind(rejected(404)), ConnectFailure::Status(404));
        assert_eq!(kind(rejected(503)), ConnectFailure::Status(503));
        assert_eq!(
            kind(Ws::Tls("invalid peer certificate: UnknownIssuer".into())),
            ConnectFailure::Tls
        );
        assert_eq!(kind(Ws::TlsUnsupported), ConnectFailure::Unsupported);
        assert_eq!(kind(Ws::NoSubprotocol(None)), ConnectFailure::NotABroker);
        assert_eq!(
            kind(Ws::InvalidRequest("bad header".into())),
            ConnectFailure::InvalidRequest
        );
        for io in [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::TimedOut,
        ] {
            let e = Ws::Handshake(tungstenite::Error::Io(Error::from(io)));
            assert_eq!(kind(e), ConnectFailure::Transient, "{io:?}");
        }
        let e = native::classify(rejected(401));
        assert!(
            e.message.contains("401") && e.message.contains("why"),
            "{e}"
        );
    }
}

//! [`Connector`]: how a provider opens a connection to its broker.
//!
//! The runtime only needs *a* [`Transport`]; where it comes from is up to the connector. Natively
//! [`WebSocketConnector`] dials the broker with tokio-tungstenite (offering both subprotocols and
//! sending `User-Agent` and the token as headers); the browser provider plugs in a connector over
//! `WebSysTransport` (browsers cannot set headers, so it puts the token into the URL); tests hand
//! out one end of a `MemoryTransport` pair per connect.

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

/// A failed connection attempt (retried with backoff).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot connect to the broker: {0}")]
pub struct ConnectError(pub String);

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
    use wasimoff_core::transport::WebSocketTransport;

    use super::{ConnectError, ConnectRequest, Connector};

    /// Dials the broker over a native WebSocket (plain `ws://`; this build has no TLS).
    #[derive(Clone, Copy, Debug, Default)]
    pub struct WebSocketConnector;

    #[async_trait::async_trait]
    impl Connector for WebSocketConnector {
        type Transport = WebSocketTransport<MaybeTlsStream<TcpStream>>;

        async fn connect(&self, request: &ConnectRequest) -> Result<Self::Transport, ConnectError> {
            let bearer = request.token.as_ref().map(|t| format!("Bearer {t}"));
            let mut headers = vec![("User-Agent", request.user_agent.as_str())];
            if let Some(bearer) = &bearer {
                headers.push(("Authorization", bearer.as_str()));
            }
            WebSocketTransport::connect(&request.url, &headers, request.max_frame)
                .await
                .map_err(|e| ConnectError(e.to_string()))
        }
    }
}

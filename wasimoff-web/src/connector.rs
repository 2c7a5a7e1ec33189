//! [`WebSysConnector`]: the provider runtime's connection to its broker in a browser, the
//! twin of the native provider's connector.

use wasimoff_core::transport::WebSysTransport;
use wasimoff_provider::runtime::{ConnectError, ConnectRequest, Connector};

/// Dials the broker with the browser's `WebSocket` (through core's `WebSysTransport`).
/// Browsers cannot set headers on a WebSocket, so a token travels as `?token=`.
#[derive(Clone, Copy, Debug, Default)]
pub struct WebSysConnector;

#[async_trait::async_trait(?Send)]
impl Connector for WebSysConnector {
    type Transport = WebSysTransport;

    async fn connect(&self, request: &ConnectRequest) -> Result<WebSysTransport, ConnectError> {
        let mut url = request.url.clone();
        if let Some(token) = &request.token {
            let separator = if url.contains('?') { '&' } else { '?' };
            let token = String::from(js_sys::encode_uri_component(token));
            url = format!("{url}{separator}token={token}");
        }
        WebSysTransport::connect(&url, request.max_frame)
            .await
            .map_err(|e| ConnectError::transient(e.to_string()))
    }
}

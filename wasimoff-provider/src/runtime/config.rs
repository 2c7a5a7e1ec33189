//! [`ProviderConfig`]: the plain-data settings of a [`Provider`](super::Provider), and the URLs
//! derived from the broker address: the provider socket `ws[s]://host/api/provider/ws?id=<name>`
//! and the storage base `http[s]://host/api/storage/` where missing files are fetched.

use std::time::Duration;

use reqwest::Url;
use wasimoff_core::{messenger::MessengerConfig, transport::DEFAULT_MAX_FRAME};

/// The path of the provider WebSocket on a broker.
pub const PROVIDER_WS_PATH: &str = "/api/provider/ws";
/// The path prefix under which a broker serves stored files.
pub const STORAGE_PATH: &str = "/api/storage/";

/// How a provider connects and behaves.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    /// The broker: `http[s]://host:port` (the path is replaced by the provider socket's) or a
    /// full `ws[s]://` URL.
    pub broker: String,
    /// The provider's display name, sent as `?id=`.
    pub name: String,
    /// The `User-Agent` header sent with the handshake and file fetches (native only; browsers
    /// send their own).
    pub user_agent: String,
    /// Task slots offered to the broker, used as given; `None`: the executor's
    /// `concurrency()` plus [`prefetch`](Self::prefetch).
    pub concurrency: Option<usize>,
    /// With `concurrency: None`, tasks accepted beyond the executor's concurrency: they wait in
    /// the executor for a free worker, so a worker that finishes finds its next task here
    /// instead of waiting a round trip to the broker (that doubles the trivial tasks per second
    /// end to end). `None`: one per worker; `Some(0)`: none (a task then never waits here
    /// while another provider may be idle).
    pub prefetch: Option<usize>,
    /// The first delay before reconnecting after a lost or failed connection.
    pub reconnect_min: Duration,
    /// The longest delay between reconnect attempts.
    pub reconnect_max: Duration,
    /// How long [`Provider::shutdown`](super::Provider::shutdown) lets running tasks finish
    /// when called through [`Provider::shutdown_default`](super::Provider::shutdown_default).
    pub drain_grace: Duration,
    /// How long a shutdown waits for cancelled tasks to report back before closing anyway.
    pub cancel_wait: Duration,
    /// The largest incoming frame accepted.
    pub max_frame: usize,
    /// A provider token, sent as `Authorization: Bearer` natively.
    pub token: Option<String>,
    /// PEM text of CA certificates (one or more) to trust for `wss://` and `https://` besides
    /// the webpki roots: for a broker with a self-signed certificate or one from a private CA.
    /// Native providers with the `rustls` feature; browsers trust what the browser trusts.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// The longest a task may run; a QoS deadline can only shorten it.
    pub max_task_timeout: Duration,
    /// The largest file fetched from the broker's storage.
    pub max_fetch_size: u64,
    /// Settings of the connection's messenger.
    pub messenger: MessengerConfig,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            broker: "http://localhost:4080".into(),
            name: "wasimoff-provider".into(),
            user_agent: concat!("wasimoff-provider/", env!("CARGO_PKG_VERSION")).into(),
            concurrency: None,
            prefetch: None,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            drain_grace: Duration::from_secs(30),
            cancel_wait: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
            token: None,
            ca_cert_pem: None,
            max_task_timeout: Duration::from_secs(600),
            max_fetch_size: 256 << 20,
            messenger: MessengerConfig::default(),
        }
    }
}

/// A broker address that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The address does not parse as a URL.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The address given.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// The scheme is none of http, https, ws, wss.
    #[error("unsupported scheme {0:?} in the broker URL (use http, https, ws or wss)")]
    UnsupportedScheme(String),
    /// [`ProviderConfig::ca_cert_pem`] holds no usable certificate.
    #[error("invalid CA certificate: {0}")]
    CaCert(String),
    /// An `https`/`wss` broker, but this build has no TLS support (the `rustls` feature).
    #[error(
        "the broker URL {0:?} needs TLS, which this build lacks (the `rustls` feature of \
         wasimoff-provider)"
    )]
    TlsUnsupported(String),
}

impl ProviderConfig {
    /// A configuration for `broker` with every other setting at its default.
    pub fn new(broker: impl Into<String>) -> Self {
        ProviderConfig {
            broker: broker.into(),
            ..ProviderConfig::default()
        }
    }

    /// The slots offered for `workers` running at once: the workers plus the prefetch.
    pub fn slots_for(&self, workers: usize) -> usize {
        workers.saturating_add(self.prefetch.unwrap_or(workers))
    }

    fn parse_broker(&self) -> Result<Url, ConfigError> {
        let text = self.broker.trim();
        Url::parse(text).map_err(|e| ConfigError::InvalidUrl {
            url: text.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The provider socket: `ws[s]://host[:port]/<prefix>/api/provider/ws?id=<name>`. An
    /// `http[s]` URL is the broker's base (its path is the prefix a broker mounted inside
    /// another application lives under); a `ws[s]` URL is the socket itself unless its path is
    /// empty. Other query parameters are kept.
    ///
    /// ```
    /// use wasimoff_provider::runtime::ProviderConfig;
    /// let mut config = ProviderConfig::new("http://broker:4080");
    /// config.name = "alice".into();
    /// assert_eq!(config.ws_url().unwrap().as_str(), "ws://broker:4080/api/provider/ws?id=alice");
    /// config.broker = "https://example.org/wasimoff/".into();
    /// assert_eq!(config.ws_url().unwrap().as_str(), "wss://example.org/wasimoff/api/provider/ws?id=alice");
    /// ```
    pub fn ws_url(&self) -> Result<Url, ConfigError> {
        let mut url = self.parse_broker()?;
        let (scheme, replace_path) = match url.scheme() {
            "http" => ("ws", true),
            "https" => ("wss", true),
            "ws" => ("ws", url.path().is_empty() || url.path() == "/"),
            "wss" => ("wss", url.path().is_empty() || url.path() == "/"),
            other => return Err(ConfigError::UnsupportedScheme(other.to_owned())),
        };
        url.set_scheme(scheme)
            .map_err(|()| ConfigError::UnsupportedScheme(url.scheme().to_owned()))?;
        if replace_path {
            let prefix = url.path().trim_end_matches('/').to_owned();
            url.set_path(&format!("{prefix}{PROVIDER_WS_PATH}"));
        }
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "id")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.set_fragment(None);
        url.query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("id", &self.name);
        Ok(url)
    }

    /// Where stored files are fetched: `http[s]://host[:port]/<prefix>/api/storage/`, with the
    /// same prefix as the socket.
    ///
    /// ```
    /// use wasimoff_provider::runtime::ProviderConfig;
    /// let config = ProviderConfig::new("wss://broker.example/api/provider/ws");
    /// assert_eq!(config.storage_url().unwrap().as_str(), "https://broker.example/api/storage/");
    /// let config = ProviderConfig::new("http://host/wasimoff");
    /// assert_eq!(config.storage_url().unwrap().as_str(), "http://host/wasimoff/api/storage/");
    /// ```
    pub fn storage_url(&self) -> Result<Url, ConfigError> {
        let mut url = self.parse_broker()?;
        let scheme = match url.scheme() {
            "http" | "ws" => "http",
            "https" | "wss" => "https",
            other => return Err(ConfigError::UnsupportedScheme(other.to_owned())),
        };
        url.set_scheme(scheme)
            .map_err(|()| ConfigError::UnsupportedScheme(url.scheme().to_owned()))?;
        let path = url.path().trim_end_matches('/');
        let prefix = path
            .strip_suffix(PROVIDER_WS_PATH)
            .unwrap_or(path)
            .to_owned();
        url.set_path(&format!("{prefix}{STORAGE_PATH}"));
        url.set_query(None);
        url.set_fragment(None);
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(broker: &str) -> ProviderConfig {
        ProviderConfig {
            name: "p 1".into(),
            ..ProviderConfig::new(broker)
        }
    }

    #[test]
    fn ws_urls() {
        let cases = [
            ("http://h:4080", "ws://h:4080/api/provider/ws?id=p+1"),
            (
                "https://h/x/y?id=old&k=v",
                "wss://h/x/y/api/provider/ws?k=v&id=p+1",
            ),
            ("http://h/mounted/", "ws://h/mounted/api/provider/ws?id=p+1"),
            ("ws://h:1/custom", "ws://h:1/custom?id=p+1"),
            ("wss://h", "wss://h/api/provider/ws?id=p+1"),
        ];
        for (input, want) in cases {
            assert_eq!(config(input).ws_url().unwrap().as_str(), want, "{input}");
        }
        assert!(matches!(
            config("ftp://h").ws_url(),
            Err(ConfigError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            config("not a url").ws_url(),
            Err(ConfigError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn storage_urls() {
        assert_eq!(
            config("ws://h:4080/api/provider/ws?id=x")
                .storage_url()
                .unwrap()
                .as_str(),
            "http://h:4080/api/storage/"
        );
        assert_eq!(
            config("https://h").storage_url().unwrap().as_str(),
            "https://h/api/storage/"
        );
        assert_eq!(
            config("ws://h/mounted/api/provider/ws")
                .storage_url()
                .unwrap()
                .as_str(),
            "http://h/mounted/api/storage/"
        );
    }
}

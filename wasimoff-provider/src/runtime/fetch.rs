//! [`Fetcher`]: how a provider downloads a file it does not hold from the broker's storage.
//!
//! [`HttpFetcher`] does `GET <broker>/api/storage/<ref>` with reqwest, which is hyper natively
//! and the browser's `fetch()` on wasm32, so the same code serves both providers. The fetcher
//! only moves bytes; checking them against the ref is the caller's job
//! ([`files`](super::files)), so a fake fetcher in tests exercises the same checks.

use bytes::Bytes;
use reqwest::Url;
use wasimoff_core::platform::{MaybeSend, MaybeSync};

/// Why a file could not be fetched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The broker does not have the file (HTTP 404).
    #[error("not found on the broker")]
    NotFound,
    /// The broker answered with another non-success status.
    #[error("broker answered HTTP {0}")]
    Status(u16),
    /// The file is larger than allowed.
    #[error("file of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced or received size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The request failed (connection, invalid URL, body read).
    #[error("request failed: {0}")]
    Http(String),
}

/// Downloads stored files by name (a `sha256:` ref).
#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
pub trait Fetcher: MaybeSend + MaybeSync {
    /// The bytes of the file called `name`.
    async fn fetch(&self, name: &str) -> Result<Bytes, FetchError>;
}

/// Fetches from a broker's `/api/storage/` over HTTP.
#[derive(Clone, Debug)]
pub struct HttpFetcher {
    client: reqwest::Client,
    base: Url,
    token: Option<String>,
    max_size: u64,
}

impl HttpFetcher {
    /// A fetcher for files under `base` (e.g. `http://broker:4080/api/storage/`), sending
    /// `token` as a bearer token and refusing files over `max_size` bytes.
    pub fn new(
        base: Url,
        user_agent: &str,
        token: Option<String>,
        max_size: u64,
    ) -> Result<Self, FetchError> {
        let builder = reqwest::Client::builder();
        #[cfg(not(target_arch = "wasm32"))]
        let builder = builder.user_agent(user_agent);
        #[cfg(target_arch = "wasm32")]
        let _ = user_agent;
        let client = builder
            .build()
            .map_err(|e| FetchError::Http(e.to_string()))?;
        Ok(HttpFetcher::with_client(base, client, token, max_size))
    }

    /// Like [`HttpFetcher::new`], over a `reqwest::Client` of your own (its TLS roots, user
    /// agent, proxies, timeouts).
    pub fn with_client(
        base: Url,
        client: reqwest::Client,
        token: Option<String>,
        max_size: u64,
    ) -> Self {
        HttpFetcher {
            client,
            base,
            token,
            max_size,
        }
    }

    /// The URL a name is fetched from: the name is appended to the base path as one segment
    /// (percent-encoded where needed, so no name can leave the storage path).
    pub fn url_of(&self, name: &str) -> Result<Url, FetchError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| FetchError::Http(format!("{} cannot be a base URL", self.base)))?
            .pop_if_empty()
            .push(name);
        Ok(url)
    }
}

#[cfg_attr(target_arch = "wasm32", async_trait::async_trait(?Send))]
#[cfg_attr(not(target_arch = "wasm32"), async_trait::async_trait)]
impl Fetcher for HttpFetcher {
    async fn fetch(&self, name: &str) -> Result<Bytes, FetchError> {
        let mut request = self.client.get(self.url_of(name)?);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(FetchError::NotFound);
        }
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let limit = self.max_size;
        if let Some(size) = response.content_length().filter(|&n| n > limit) {
            return Err(FetchError::TooLarge { size, limit });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        let size = u64::try_from(body.len()).unwrap_or(u64::MAX);
        if size > limit {
            return Err(FetchError::TooLarge { size, limit });
        }
        Ok(body)
    }
}

//! [`Client`]: uploads, Connect RPC task runs, broker status; [`RetryPolicy`].

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use reqwest::{StatusCode, header};
use serde::Deserialize;
use wasimoff_core::proto::{self, task::wasip1};
use wasimoff_core::store::Ref;

use crate::error::{Error, Result};
use crate::task::{Output, Task};

/// The broker URL used when none is given: `http://localhost:4080`.
pub const DEFAULT_BROKER: &str = "http://localhost:4080";

/// When to try a refused request again. Off by default: a full queue
/// ([`Error::QueueFull`], HTTP 429) is returned to the caller at once unless asked otherwise.
///
/// The wait doubles from `initial_backoff` up to `max_backoff`; a `Retry-After` from the broker
/// is honoured when it asks for longer.
///
/// ```
/// use std::time::Duration;
/// use wasimoff_client::RetryPolicy;
/// let policy = RetryPolicy::queue_full()
///     .max_retries(5)
///     .backoff(Duration::from_millis(100), Duration::from_secs(2));
/// assert_eq!(policy.delay(0, None), Duration::from_millis(100));
/// assert_eq!(policy.delay(3, None), Duration::from_millis(800));
/// assert_eq!(policy.delay(10, None), Duration::from_secs(2));
/// assert!(!RetryPolicy::default().enabled());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::disabled()
    }
}

impl RetryPolicy {
    /// No retries (the default).
    pub const fn disabled() -> Self {
        RetryPolicy {
            max_retries: 0,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// Retry when the queue is full: up to 30 times, waiting 250 ms doubling up to 5 s
    /// (about two minutes in all).
    pub const fn queue_full() -> Self {
        RetryPolicy {
            max_retries: 30,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }

    /// How many times a request is retried (0 disables retries).
    pub const fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// The first and the longest wait.
    pub const fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Whether any retries are made.
    pub const fn enabled(&self) -> bool {
        self.max_retries > 0
    }

    /// How long to wait before retry number `attempt` (0-based), given the broker's
    /// `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        let backoff = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        match retry_after {
            Some(after) if after > backoff => after.min(self.max_backoff.max(backoff)),
            _ => backoff,
        }
    }

    /// Runs `call` until it succeeds, fails with an error other than [`Error::QueueFull`], or
    /// the retries are used up.
    pub(crate) async fn run<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(Error::QueueFull { retry_after, .. }) if attempt < self.max_retries => {
                    let wait = self.delay(attempt, retry_after);
                    tracing::debug!(attempt, ?wait, "queue full, retrying");
                    wasimoff_core::platform::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// The broker's state, from `GET /api/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct Status {
    /// Connected providers.
    #[serde(default)]
    pub providers: i64,
    /// Task slots of all providers together (workers + prefetch). Brokers before `slots`
    /// existed sent this figure alone, as `workers`; use [`Status::slots`].
    #[serde(default)]
    pub workers: i64,
    /// Task slots of all providers together: their workers plus their prefetch slots (`None`
    /// from a broker that does not send it: then see `workers`).
    #[serde(default)]
    pub slots: Option<i64>,
    /// Tasks waiting for a slot.
    #[serde(default)]
    pub queued: i64,
    /// Tasks running on providers.
    #[serde(default)]
    pub running: i64,
    /// The scheduler's name (`locality`, `round-robin`).
    #[serde(default)]
    pub scheduler: String,
    /// Whether the broker shares its tasks by id with other brokers (NATS JetStream): then
    /// providers connected to those run them too.
    #[serde(default)]
    pub shared: bool,
}

impl Status {
    /// The slots of all providers (workers + prefetch), from whichever field the broker sent.
    pub fn slots(&self) -> i64 {
        self.slots.unwrap_or(self.workers)
    }
}

/// What [`Client::wait_any`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Finished {
    /// Tasks with a result to fetch.
    #[serde(default)]
    pub done: Vec<String>,
    /// Tasks the broker does not know for this client.
    #[serde(default)]
    pub unknown: Vec<String>,
}

/// A provider connected to the broker, from `GET /api/providers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct ProviderInfo {
    /// The broker's id of the connection (`provider-<n>`).
    #[serde(default)]
    pub id: String,
    /// The name the provider gave.
    #[serde(default)]
    pub name: String,
    /// `native` or `browser`.
    #[serde(default)]
    pub kind: String,
    /// Its `User-Agent`.
    #[serde(default)]
    pub agent: String,
    /// Task slots it offers (workers + prefetch; 0 while draining).
    #[serde(default)]
    pub slots: u32,
    /// Its workers and prefetch slots, when it reports them apart.
    #[serde(default)]
    pub workers: Option<u32>,
    #[serde(default)]
    pub prefetch: Option<u32>,
    /// Tasks running there now.
    #[serde(default)]
    pub running: u32,
    /// Backed off after refusing a task as busy.
    #[serde(default)]
    pub backed_off: bool,
    /// Results it returned on this connection.
    #[serde(default)]
    pub done: u64,
    /// Attempts that failed through it.
    #[serde(default)]
    pub failed: u64,
    /// Unix milliseconds.
    #[serde(default)]
    pub connected_at: i64,
    /// Unix milliseconds of the last message from it.
    #[serde(default)]
    pub last_seen: i64,
}

/// Builds a [`Client`]; see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    retry: RetryPolicy,
    http: Option<reqwest::Client>,
    #[cfg(not(target_arch = "wasm32"))]
    task_timeout: Duration,
    #[cfg(not(target_arch = "wasm32"))]
    reconnect_for: Duration,
    /// More brokers of the same cluster ([`ClientBuilder::also_broker`]).
    others: Vec<String>,
    /// PEM text of CA certificates trusted besides the webpki roots.
    #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
    ca_pem: Vec<u8>,
}

impl ClientBuilder {
    /// A bearer token, for brokers that require one (sent as `Authorization: Bearer <token>`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        self.token = (!token.is_empty()).then_some(token);
        self
    }

    /// Retries on a full queue ([`RetryPolicy::queue_full`]); off by default.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Uses a `reqwest::Client` of your own (proxies, TLS roots, timeouts) for HTTP requests;
    /// [`add_root_certificate`](Self::add_root_certificate) then only applies to the
    /// WebSocket of [`Client::session`].
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Also trusts the CA certificates of this PEM text (one or more), for `https://` and the
    /// `wss://` of [`Client::session`] alike: for a broker with a self-signed certificate or
    /// one from a private CA. The webpki (Mozilla) roots stay trusted. A PEM text without a
    /// certificate makes [`build`](Self::build) fail. Native targets with the `rustls` feature
    /// (on by default); in browsers the browser decides whom to trust.
    ///
    /// ```no_run
    /// # fn demo() -> Result<(), wasimoff_client::Error> {
    /// let pem = std::fs::read("broker-ca.pem").map_err(|e| wasimoff_client::Error::Local(e.to_string()))?;
    /// let client = wasimoff_client::Client::builder("https://broker.internal:4080")
    ///     .add_root_certificate(pem)
    ///     .build()?;
    /// # let _ = client; Ok(()) }
    /// ```
    #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
    pub fn add_root_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.ca_pem.extend_from_slice(pem.as_ref());
        self.ca_pem.push(b'\n');
        self
    }

    /// How long a task on the streaming API ([`Client::session`]) may take before the call
    /// gives up (default one hour; the task's own deadline is enforced by the broker).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = timeout;
        self
    }

    /// How long [`Client::run_all`] keeps trying to reach a broker that went away (restarting,
    /// or the network broke) before it fails the tasks it has not finished (default 5
    /// minutes). Its tasks stay accepted at a broker with durable task state meanwhile.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn reconnect_for(mut self, patience: Duration) -> Self {
        self.reconnect_for = patience;
        self
    }

    /// Another broker of the same cluster: brokers that share NATS JetStream (`--nats`), where
    /// any of them answers for every task. [`Client::run_all`] submits to all of them in turn
    /// and goes on at another when one cannot be reached; every other call talks to the
    /// broker given to [`Client::builder`].
    ///
    /// ```
    /// let client = wasimoff_client::Client::builder("http://b1:4080")
    ///     .also_broker("http://b2:4080")
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(client.brokers(), ["http://b1:4080", "http://b2:4080"]);
    /// ```
    pub fn also_broker(mut self, url: impl Into<String>) -> Self {
        self.others.push(url.into());
        self
    }

    /// Checks the URL and builds the client.
    pub fn build(self) -> Result<Client> {
        let text = base_url(&self.url)?;
        let others = self
            .others
            .iter()
            .map(|other| base_url(other))
            .collect::<Result<Vec<_>>>()?;
        #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
        let tls = {
            let pem = (!self.ca_pem.is_empty()).then_some(self.ca_pem.as_slice());
            wasimoff_core::tls::client_config_from_pem(pem)
                .map_err(|e| Error::Local(format!("invalid CA certificate: {e}")))?
        };
        let http = match self.http {
            Some(http) => http,
            None => {
                let builder = reqwest::Client::builder();
                // https:// trusts what wss:// trusts: one rustls config for both.
                #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
                let builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&tls));
                #[cfg(not(any(feature = "rustls", target_arch = "wasm32")))]
                if text.starts_with("https://") {
                    return Err(Error::Tls(format!(
                        "{text} needs TLS support, which this build lacks (the `rustls` \
                         feature of wasimoff-client)"
                    )));
                }
                builder
                    .build()
                    .map_err(|e| Error::Local(format!("cannot create the HTTP client: {e}")))?
            }
        };
        let mut brokers = vec![text];
        brokers.extend(others);
        Ok(Client {
            base: brokers[0].clone(),
            brokers: brokers.into(),
            token: self.token,
            retry: self.retry,
            http,
            #[cfg(not(target_arch = "wasm32"))]
            task_timeout: self.task_timeout,
            #[cfg(not(target_arch = "wasm32"))]
            reconnect_for: self.reconnect_for,
            #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
            tls,
        })
    }
}

/// A broker's base URL, checked: `http://` or `https://`, without a trailing slash.
fn base_url(given: &str) -> Result<String> {
    let text = given.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(text)
        .map_err(|e| Error::Local(format!("invalid broker URL {text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Local(format!(
            "invalid broker URL {text:?}: use http:// or https://"
        )));
    }
    Ok(text.to_owned())
}

#[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
use wasimoff_core::tls::rustls;

/// A client of one broker: upload files, run tasks, query the broker's status.
///
/// Cheap to clone (the HTTP connection pool is shared).
///
/// ```no_run
/// use wasimoff_client::{Client, Task};
///
/// # async fn demo() -> Result<(), wasimoff_client::Error> {
/// let client = Client::new("http://localhost:4080")?;
/// let hello = std::fs::read("hello.wasm").map_err(|e| wasimoff_client::Error::Local(e.to_string()))?;
/// client.upload(hello, Some("hello.wasm")).await?;
/// let output = client.run(Task::wasip1("hello.wasm").args(["world"])).await?;
/// print!("{}", output.stdout_lossy());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    /// Every broker of the cluster, `base` among them ([`ClientBuilder::also_broker`]).
    brokers: std::sync::Arc<[String]>,
    token: Option<String>,
    retry: RetryPolicy,
    http: reqwest::Client,
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) task_timeout: Duration,
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) reconnect_for: Duration,
    /// What `wss://` trusts (and `https://`, unless the caller brought an HTTP client).
    #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
    pub(crate) tls: std::sync::Arc<rustls::ClientConfig>,
}

impl Client {
    /// A client for the broker at `url` (e.g. `http://localhost:4080`), without token or retries.
    ///
    /// ```
    /// let client = wasimoff_client::Client::new("http://localhost:4080/").unwrap();
    /// assert_eq!(client.url(), "http://localhost:4080");
    /// assert!(wasimoff_client::Client::new("ftp://x").is_err());
    /// ```
    pub fn new(url: impl Into<String>) -> Result<Client> {
        Client::builder(url).build()
    }

    /// A builder for a client of the broker at `url`.
    ///
    /// ```
    /// use wasimoff_client::{Client, RetryPolicy};
    /// let client = Client::builder("http://localhost:4080")
    ///     .token("secret")
    ///     .retry(RetryPolicy::queue_full())
    ///     .build()
    ///     .unwrap();
    /// assert!(client.retry_policy().enabled());
    /// ```
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            token: None,
            retry: RetryPolicy::disabled(),
            http: None,
            #[cfg(not(target_arch = "wasm32"))]
            task_timeout: Duration::from_secs(3600),
            #[cfg(not(target_arch = "wasm32"))]
            reconnect_for: Duration::from_secs(300),
            others: Vec::new(),
            #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
            ca_pem: Vec::new(),
        }
    }

    /// The base URLs of every broker this client knows: its own first, then those given to
    /// [`ClientBuilder::also_broker`].
    pub fn brokers(&self) -> &[String] {
        &self.brokers
    }

    /// The same client talking to `base` (one of [`Client::brokers`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn at(&self, base: &str) -> Client {
        Client {
            base: base.to_owned(),
            ..self.clone()
        }
    }

    /// The broker's base URL (without a trailing slash).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Uploads a module (`.wasm`) or zip archive, optionally under an alias that tasks can use
    /// instead of the ref. Returns the content's `sha256:` ref.
    ///
    /// ```no_run
    /// # async fn demo(client: wasimoff_client::Client, bytes: Vec<u8>) -> Result<(), wasimoff_client::Error> {
    /// let r = client.upload(bytes, Some("tsp.wasm")).await?;
    /// println!("stored as {r}");
    /// # Ok(()) }
    /// ```
    pub async fn upload(&self, bytes: impl Into<Bytes>, alias: Option<&str>) -> Result<Ref> {
        let bytes = bytes.into();
        let mut request = self.request(reqwest::Method::POST, "/api/storage/upload");
        if let Some(alias) = alias.filter(|a| !a.is_empty()) {
            request = request.query(&[("name", alias)]);
        }
        let response = request.body(bytes).send().await?;
        let status = response.status();
        let url = response.url().clone();
        let header = response
            .headers()
            .get("x-wasimoff-ref")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await?;
        if !status.is_success() {
            return Err(api_error(status, &url, body.trim()));
        }
        let text = header.unwrap_or_else(|| body.trim().to_owned());
        text.parse::<Ref>()
            .map_err(|e| Error::InvalidResponse(format!("upload answered {text:?}: {e}")))
    }

    /// Reads a file and [uploads](Client::upload) it (native targets only).
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn upload_file(
        &self,
        path: impl AsRef<std::path::Path>,
        alias: Option<&str>,
    ) -> Result<Ref> {
        let path = path.as_ref();
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))?;
        self.upload(bytes, alias).await
    }

    /// Downloads a stored file by ref or alias.
    pub async fn download(&self, name: &str) -> Result<Bytes> {
        let response = self
            .request(reqwest::Method::GET, &format!("/api/storage/{name}"))
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(http_error(status, None, body.trim()));
        }
        Ok(response.bytes().await?)
    }

    /// Runs one task over Connect RPC (`RunWasip1`, protobuf) and waits for its result,
    /// retrying on a full queue if the client's [`RetryPolicy`] says so.
    ///
    /// A non-zero exit is an [`Output`] with that status; a trap is [`Error::Task`].
    ///
    /// ```no_run
    /// use wasimoff_client::{Client, Error, Task};
    /// # async fn demo(client: Client) -> Result<(), Error> {
    /// match client.run(Task::wasip1("hello.wasm").arg("exit:3")).await {
    ///     Ok(output) => assert_eq!(output.status, 3),
    ///     Err(Error::QueueFull { .. }) => eprintln!("busy, try later"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn run(&self, task: impl Into<Task>) -> Result<Output> {
        let request = task.into().into_request();
        let response = self.run_request(&request).await?;
        Output::from_response(response)
    }

    /// Runs a raw `Task.Wasip1.Request` over Connect RPC and returns the raw response (with
    /// retries as [`Client::run`]).
    pub async fn run_request(&self, request: &wasip1::Request) -> Result<wasip1::Response> {
        let body = Bytes::from(request.encode_to_vec());
        self.retry
            .run(|| self.connect_call("RunWasip1", body.clone()))
            .await
    }

    async fn connect_call(&self, method: &str, body: Bytes) -> Result<wasip1::Response> {
        let request = self
            .request(
                reqwest::Method::POST,
                &format!("/api/client/wasimoff.v1.Tasks/{method}"),
            )
            .header(header::CONTENT_TYPE, "application/proto")
            .body(body);
        let (_, body) = send_connect(request).await?;
        wasip1::Response::decode(body)
            .map_err(|e| Error::InvalidResponse(format!("cannot decode the response: {e}")))
    }

    /// Submits a task and returns its id at once, without waiting for it to run: fetch its
    /// result later with [`Client::result`] or [`Client::wait`] (from this client's token;
    /// the broker keeps a finished result for its `result_ttl`, 10 minutes by default), or
    /// cancel it with [`Client::cancel`]. A full queue is retried per the [`RetryPolicy`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use wasimoff_client::{Client, Task};
    /// # async fn demo(client: Client) -> Result<(), wasimoff_client::Error> {
    /// let id = client.submit(Task::wasip1("tsp.wasm").args(["rand", "10"])).await?;
    /// // ... later, even from another process with the same token:
    /// let output = client.wait(&id).await?;
    /// println!("{}", output.stdout_lossy());
    /// # Ok(()) }
    /// ```
    pub async fn submit(&self, task: impl Into<Task>) -> Result<String> {
        #[derive(Deserialize)]
        struct Submitted {
            id: String,
        }
        let body = Bytes::from(task.into().into_request().encode_to_vec());
        let response = self.post_proto("/api/client/tasks", body).await?;
        serde_json::from_slice::<Submitted>(&response)
            .map(|s| s.id)
            .map_err(|e| Error::InvalidResponse(format!("submit answered no id: {e}")))
    }

    /// POSTs a protobuf body to a submit route, retried per the [`RetryPolicy`]; the answer's
    /// body.
    async fn post_proto(&self, path: &str, body: Bytes) -> Result<Bytes> {
        let (_, response) = self
            .retry
            .run(|| {
                send_connect(
                    self.request(reqwest::Method::POST, path)
                        .header(header::CONTENT_TYPE, "application/proto")
                        .body(body.clone()),
                )
            })
            .await?;
        Ok(response)
    }

    /// Submits many tasks in one request (`POST /api/client/tasks/batch`): for each, in order,
    /// its id or why it was refused. A full queue refuses the whole batch and is retried per
    /// the [`RetryPolicy`].
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) async fn submit_batch(
        &self,
        requests: &[wasip1::Request],
    ) -> Result<Vec<Result<String>>> {
        #[derive(Deserialize)]
        struct Entry {
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            error: Option<ConnectErrorBody>,
        }
        #[derive(Deserialize)]
        struct Submitted {
            submitted: Vec<Entry>,
        }
        let mut body = Vec::new();
        for request in requests {
            request
                .encode_length_delimited(&mut body)
                .map_err(|e| Error::Local(format!("cannot encode a task: {e}")))?;
        }
        let response = self
            .post_proto("/api/client/tasks/batch", Bytes::from(body))
            .await?;
        let answer = serde_json::from_slice::<Submitted>(&response)
            .map_err(|e| Error::InvalidResponse(format!("batch submit answered {e}")))?;
        if answer.submitted.len() != requests.len() {
            return Err(Error::InvalidResponse(format!(
                "batch submit answered {} entries for {} tasks",
                answer.submitted.len(),
                requests.len()
            )));
        }
        Ok(answer
            .submitted
            .into_iter()
            .map(|entry| ConnectErrorBody::either(entry.id, entry.error, "batch submit", "an id"))
            .collect())
    }

    /// The result of a task [submitted](Client::submit) earlier: `Ok(None)` while it has not
    /// finished after waiting up to `wait` (the broker waits at most 60 s). A task that ran
    /// and failed is [`Error::Task`] as for [`Client::run`]; an id this client did not submit,
    /// or whose result expired, is [`Error::NotFound`].
    pub async fn result(&self, id: &str, wait: Duration) -> Result<Option<Output>> {
        let (status, body) = send_connect(
            self.request(reqwest::Method::GET, &format!("/api/client/tasks/{id}"))
                .query(&[("wait", wait.as_secs_f64())])
                .header(header::ACCEPT, "application/proto"),
        )
        .await?;
        if status == StatusCode::ACCEPTED {
            return Ok(None);
        }
        let response = wasip1::Response::decode(body)
            .map_err(|e| Error::InvalidResponse(format!("cannot decode the response: {e}")))?;
        Output::from_response(response).map(Some)
    }

    /// Waits for the result of a task [submitted](Client::submit) earlier (fetching it in
    /// rounds of up to 30 s; the task's own deadline bounds the wait).
    pub async fn wait(&self, id: &str) -> Result<Output> {
        loop {
            if let Some(output) = self.result(id, Duration::from_secs(30)).await? {
                return Ok(output);
            }
        }
    }

    /// Which of the tasks [submitted](Client::submit) earlier have finished (fetch their
    /// results with [`Client::result`]) or are unknown to the broker (never submitted with
    /// this token, expired, or lost in the restart of a broker without durable task state).
    /// Answers as soon as one of `ids` is either, else after `wait` (the broker waits at most
    /// 60 s) with both lists empty. At most 10,000 ids per call.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn demo(client: wasimoff_client::Client, ids: Vec<String>) -> Result<(), wasimoff_client::Error> {
    /// let finished = client.wait_any(&ids, Duration::from_secs(30)).await?;
    /// for id in &finished.done {
    ///     let output = client.result(id, Duration::ZERO).await?;
    ///     println!("{id}: {:?}", output.map(|o| o.status));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_any(&self, ids: &[String], wait: Duration) -> Result<Finished> {
        self.wait_request(ids, wait, false).await
    }

    /// `POST /api/client/tasks/wait`, its answer decoded as `T`.
    async fn wait_request<T: serde::de::DeserializeOwned>(
        &self,
        ids: &[String],
        wait: Duration,
        results: bool,
    ) -> Result<T> {
        let body =
            serde_json::json!({ "ids": ids, "wait": wait.as_secs_f64(), "results": results });
        let (_, response) = send_connect(
            self.request(reqwest::Method::POST, "/api/client/tasks/wait")
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
        )
        .await?;
        serde_json::from_slice::<T>(&response)
            .map_err(|e| Error::InvalidResponse(format!("wait answered {e}")))
    }

    /// [`Client::wait_any`], with the results of (some of) the finished tasks in the same
    /// answer: `(id, result)` pairs as [`Client::result`] would give them. The other finished
    /// ids are only in `done` (the broker inlines up to 4 MiB of results per answer; a broker
    /// that does not inline any answers none).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) async fn wait_any_with_results(
        &self,
        ids: &[String],
        wait: Duration,
    ) -> Result<(Finished, Vec<(String, Result<Output>)>)> {
        #[derive(Deserialize)]
        struct Inline {
            id: String,
            #[serde(default)]
            response: Option<wasip1::Response>,
            #[serde(default)]
            error: Option<ConnectErrorBody>,
        }
        #[derive(Deserialize)]
        struct Answer {
            #[serde(flatten)]
            finished: Finished,
            #[serde(default)]
            results: Vec<Inline>,
        }
        let answer: Answer = self.wait_request(ids, wait, true).await?;
        let results = answer
            .results
            .into_iter()
            .map(|inline| {
                let result =
                    ConnectErrorBody::either(inline.response, inline.error, "wait", "a response")
                        .and_then(Output::from_response);
                (inline.id, result)
            })
            .collect();
        Ok((answer.finished, results))
    }

    /// Cancels a task [submitted](Client::submit) earlier. Its result becomes an error with
    /// the code `canceled` ([`Error::Broker`]); a task that has finished keeps its result.
    pub async fn cancel(&self, id: &str) -> Result<()> {
        send_connect(self.request(reqwest::Method::DELETE, &format!("/api/client/tasks/{id}")))
            .await
            .map(drop)
    }

    /// Uploads a file over Connect RPC (`Upload`) instead of the storage route.
    pub async fn upload_rpc(&self, bytes: impl Into<Bytes>, alias: Option<&str>) -> Result<Ref> {
        let request = proto::filesystem::upload::Request {
            upload: Some(proto::File {
                r#ref: alias.map(str::to_owned),
                media: None,
                blob: Some(bytes.into()),
            }),
        };
        let response = self
            .request(
                reqwest::Method::POST,
                "/api/client/wasimoff.v1.Tasks/Upload",
            )
            .header(header::CONTENT_TYPE, "application/proto")
            .body(request.encode_to_vec())
            .send()
            .await?;
        let status = response.status();
        let url = response.url().clone();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(connect_error(status, None, &body, &url));
        }
        let response = proto::filesystem::upload::Response::decode(body)
            .map_err(|e| Error::InvalidResponse(format!("cannot decode the response: {e}")))?;
        let text = response.r#ref.unwrap_or_default();
        text.parse::<Ref>()
            .map_err(|e| Error::InvalidResponse(format!("upload answered {text:?}: {e}")))
    }

    /// The broker's state (`GET /api/status`): providers, workers, queued and running tasks.
    ///
    /// ```no_run
    /// # async fn demo(client: wasimoff_client::Client) -> Result<(), wasimoff_client::Error> {
    /// let status = client.status().await?;
    /// println!("{} providers with {} slots", status.providers, status.slots());
    /// # Ok(()) }
    /// ```
    pub async fn status(&self) -> Result<Status> {
        self.get_json("/api/status").await
    }

    /// The providers connected to the broker (`GET /api/providers`), by connection.
    pub async fn providers(&self) -> Result<Vec<ProviderInfo>> {
        self.get_json("/api/providers").await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self.request(reqwest::Method::GET, path).send().await?;
        let status = response.status();
        let url = response.url().clone();
        let body = response.bytes().await?;
        if !status.is_success() {
            return Err(api_error(
                status,
                &url,
                String::from_utf8_lossy(&body).trim(),
            ));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::InvalidResponse(format!("cannot parse {path}: {e}")))
    }

    /// Whether the broker answers its health check (`GET /healthz`).
    pub async fn health(&self) -> Result<()> {
        let response = self
            .request(reqwest::Method::GET, "/healthz")
            .send()
            .await?;
        let status = response.status();
        let url = response.url().clone();
        if status.is_success() {
            Ok(())
        } else {
            let body = response.text().await.unwrap_or_default();
            Err(api_error(status, &url, body.trim()))
        }
    }
}

/// The error for a failed Connect call: the `{"code", "message"}` body, or the HTTP status.
/// A 404 or 405 without a Connect body means the route itself is missing: no broker API at
/// `url` (a server of static files, e.g. a broker's page under a wrong prefix, answers a POST
/// with 405).
/// Sends a request to a route that answers errors the Connect way: the status and body of a
/// success, else the error (with `Retry-After`, if the broker said).
async fn send_connect(request: reqwest::RequestBuilder) -> Result<(StatusCode, Bytes)> {
    let response = request.send().await?;
    let status = response.status();
    let url = response.url().clone();
    let retry_after = retry_after(response.headers());
    let body = response.bytes().await?;
    if status.is_success() {
        return Ok((status, body));
    }
    Err(connect_error(status, retry_after, &body, &url))
}

/// A Connect error: `{"code", "message"}`.
#[derive(Deserialize)]
struct ConnectErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

impl ConnectErrorBody {
    /// One task's entry in a by-id answer (batch submit, wait): its value, or its error.
    #[cfg(not(target_arch = "wasm32"))]
    fn either<T>(value: Option<T>, error: Option<Self>, answer: &str, what: &str) -> Result<T> {
        match (value, error) {
            (Some(value), _) => Ok(value),
            (None, Some(e)) => Err(Error::from_code(&e.code, e.message, None)),
            (None, None) => Err(Error::InvalidResponse(format!(
                "{answer} answered neither {what} nor an error"
            ))),
        }
    }
}

/// A `Retry-After` header in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn connect_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    url: &reqwest::Url,
) -> Error {
    match serde_json::from_slice::<ConnectErrorBody>(body) {
        // A full quota or store (507), whatever the code: not a full queue (429), which is
        // worth a retry.
        Ok(e) if status == StatusCode::INSUFFICIENT_STORAGE => Error::StorageFull(e.message),
        Ok(e) => Error::from_code(&e.code, e.message, retry_after),
        Err(_) if no_route(status) => endpoint_not_found(without_query(url), status),
        // Not the broker's answer about the request: a gateway, or a broker restarting or at
        // its connection limit. Trying again later is what helps.
        Err(_) if matches!(status.as_u16(), 502..=504) => Error::Transport(format!(
            "{status} without a Connect error from {}: {}",
            without_query(url),
            String::from_utf8_lossy(body).trim()
        )),
        Err(_) => http_error(status, retry_after, String::from_utf8_lossy(body).trim()),
    }
}

/// The error of a route every broker has (upload, status, health): 404 (or 405) means the URL
/// is not a broker's (wrong host, port or path prefix), not that something is missing in its
/// storage.
fn api_error(status: StatusCode, url: &reqwest::Url, message: &str) -> Error {
    if no_route(status) {
        endpoint_not_found(without_query(url), status)
    } else {
        http_error(status, None, message)
    }
}

/// Statuses that say the route does not exist at this URL.
fn no_route(status: StatusCode) -> bool {
    status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED
}

/// There is no broker API at `url`: it answered `status` (404, or 405 from static files) on a
/// route every broker has.
pub(crate) fn endpoint_not_found(
    url: impl std::fmt::Display,
    status: impl std::fmt::Display,
) -> Error {
    Error::EndpointNotFound(format!("{url} answered {status}"))
}

/// `url` without its query (which may carry a token).
fn without_query(url: &reqwest::Url) -> reqwest::Url {
    let mut url = url.clone();
    url.set_query(None);
    url
}

/// The error for a non-Connect HTTP failure, by status.
fn http_error(status: StatusCode, retry_after: Option<Duration>, message: &str) -> Error {
    let code = match status.as_u16() {
        400 | 413 | 415 => "invalid_argument",
        401 | 403 => "unauthenticated",
        404 => "not_found",
        409 => "aborted",
        429 => "resource_exhausted",
        503 => "unavailable",
        507 => {
            return Error::StorageFull(if message.is_empty() {
                status.to_string()
            } else {
                message.to_owned()
            });
        }
        504 => "deadline_exceeded",
        _ => {
            return Error::Broker {
                code: format!("http {}", status.as_u16()),
                message: message.to_owned(),
            };
        }
    };
    let message = if message.is_empty() {
        status.to_string()
    } else {
        message.to_owned()
    };
    Error::from_code(code, message, retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_status_without_a_connect_error_is_a_transport_error() {
        let url = reqwest::Url::parse("http://broker:4080/api/client/tasks/wait?x=1").unwrap();
        for status in [502, 503, 504] {
            let status = StatusCode::from_u16(status).unwrap();
            let e = connect_error(status, None, b"<html>upstream down</html>", &url);
            assert!(
                matches!(&e, Error::Transport(m) if m.contains("upstream down")),
                "{e}"
            );
            assert!(e.is_retryable());
        }
        // The broker's own answer is the request's outcome.
        let body = br#"{"code": "unavailable", "message": "no provider connected"}"#;
        let e = connect_error(StatusCode::SERVICE_UNAVAILABLE, None, body, &url);
        assert!(
            matches!(&e, Error::Unavailable(m) if m.contains("no provider")),
            "{e}"
        );
        let e = connect_error(
            StatusCode::GATEWAY_TIMEOUT,
            None,
            b"{\"code\": \"deadline_exceeded\"}",
            &url,
        );
        assert!(matches!(e, Error::DeadlineExceeded(_)), "{e}");
    }
}

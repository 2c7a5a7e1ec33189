//! The wasimoff broker as a library.
//!
//! Providers connect over WebSocket; clients submit WebAssembly tasks over Connect RPC, a client
//! WebSocket or a plain HTTP route; the broker queues them, places each on a provider with a
//! free slot (through a [`Scheduler`]), retries when a
//! provider fails, and answers the client. Modules and zips live in a
//! [`Store`].
//!
//! Run it on its own port:
//!
//! ```no_run
//! # async fn run() -> Result<(), wasimoff_broker::BrokerError> {
//! let broker = wasimoff_broker::Broker::builder().listen("127.0.0.1:4080".parse().unwrap()).build().await?;
//! let handle = broker.spawn().await?;
//! println!("listening on {}", handle.local_addr());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! or mount [`Broker::router`] inside your own axum application. With
//! [`BrokerBuilder::tls`] the broker's own server speaks `https://` and `wss://` (rustls).

mod body;
mod by_id;
mod client;
mod cluster;
mod config;
mod detached;
mod dispatch;
mod error;
mod journal;
mod malloc;
mod metrics;
mod operator;
mod page;
mod provider;
mod server;
mod state;
mod storage;
mod tasks;
mod tls;
mod ws;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio_util::sync::CancellationToken;
use tower_http::{cors::CorsLayer, timeout::TimeoutLayer};
use wasimoff_core::scheduler::{LocalityScheduler, RoundRobinScheduler, Scheduler};
use wasimoff_core::store::{DirStore, MemoryStore, Store, StoreLimits};

pub use cluster::NatsConfig;
pub use config::{BrokerConfig, Limits, PingConfig, SchedulerKind, StoreConfig, TaskStateConfig};
pub use error::TaskError;
pub use malloc::release_large_buffers;
/// The rustls the broker is built with, for [`TlsConfig::Rustls`].
pub use rustls;
pub use tls::TlsConfig;

/// Whether this build serves the volunteer page built into it at `/` when
/// [`BrokerConfig::static_dir`] is `None` (feature `embedded-page`).
pub const EMBEDDED_PAGE: bool = cfg!(feature = "embedded-page");

#[doc(hidden)]
pub use dispatch::machine_decision_cost;

/// The README's example, compiled (and run where it needs no broker) as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

use dispatch::{Dispatch, DispatchConfig, ShellConfig};
use state::{App, AppState};

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] wasimoff_core::store::StoreError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used (unreadable, not PEM, not matching).
    #[error("TLS: {0}")]
    Tls(String),
    /// The durable task state could not be opened or read.
    #[error("cannot open the task state: {0}")]
    TaskState(String),
}

/// Builds a [`Broker`] from a [`BrokerConfig`]; every setter has a field of the same name.
#[derive(Default)]
pub struct BrokerBuilder {
    config: BrokerConfig,
    store: Option<Arc<dyn Store>>,
    scheduler: Option<Box<dyn Scheduler>>,
}

impl std::fmt::Debug for BrokerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BrokerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: BrokerConfig) -> Self {
        self.config = config;
        self
    }

    /// Where to listen.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// Which store backend to open.
    pub fn store_config(mut self, store: StoreConfig) -> Self {
        self.config.store = store;
        self
    }

    /// Uses a store instance of your own (overrides [`BrokerConfig::store`]).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Which built-in scheduler to use.
    pub fn scheduler_kind(mut self, kind: SchedulerKind) -> Self {
        self.config.scheduler = kind;
        self
    }

    /// Uses a scheduler of your own (overrides [`BrokerConfig::scheduler`]).
    pub fn scheduler(mut self, scheduler: Box<dyn Scheduler>) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// Size and time limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The provider ping.
    pub fn ping(mut self, ping: PingConfig) -> Self {
        self.config.ping = ping;
        self
    }

    /// Serves a directory at `/` (the volunteer page).
    pub fn static_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.static_dir = Some(dir.into());
        self
    }

    /// Origins allowed to open the provider socket.
    pub fn allowed_origins(mut self, origins: Vec<String>) -> Self {
        self.config.allowed_origins = origins;
        self
    }

    /// Tokens clients must present.
    pub fn client_tokens(mut self, tokens: Vec<String>) -> Self {
        self.config.client_tokens = tokens;
        self
    }

    /// Tokens providers must present.
    pub fn provider_tokens(mut self, tokens: Vec<String>) -> Self {
        self.config.provider_tokens = tokens;
        self
    }

    /// Whether to log one info line per finished task ([`BrokerConfig::log_tasks`]).
    pub fn log_tasks(mut self, on: bool) -> Self {
        self.config.log_tasks = on;
        self
    }

    /// Serves `https://` and `wss://` from [`Broker::spawn`] (see [`TlsConfig`]).
    pub fn tls(mut self, tls: impl Into<TlsConfig>) -> Self {
        self.config.tls = Some(tls.into());
        self
    }

    /// Checks the TLS certificate and key, opens the store and starts the dispatcher (on the
    /// current tokio runtime).
    pub async fn build(self) -> Result<Broker, BrokerError> {
        let config = self.config;
        // First: a certificate that cannot work must stop the broker before anything starts.
        let tls = match &config.tls {
            Some(tls) => Some(tls.server_config().await?),
            None => None,
        };
        let limits = StoreLimits {
            max_blob_size: config.limits.max_upload as u64,
            max_total_size: config.limits.max_store,
            ..StoreLimits::default()
        };
        let store: Arc<dyn Store> = match (self.store, &config.store) {
            (Some(store), _) => store,
            (None, StoreConfig::Memory) => Arc::new(MemoryStore::with_limits(limits)),
            (None, StoreConfig::Dir(dir)) => {
                let dir = dir.clone();
                let store = tokio::task::spawn_blocking(move || DirStore::open(dir, limits))
                    .await
                    .map_err(|e| wasimoff_core::store::StoreError::Backend(e.to_string()))??;
                Arc::new(store)
            }
        };
        let journal_path = match (&config.tasks, &config.store) {
            (TaskStateConfig::File(path), _) => Some(path.clone()),
            (TaskStateConfig::Auto, StoreConfig::Dir(dir)) => Some(dir.join(journal::FILE_NAME)),
            (TaskStateConfig::Auto | TaskStateConfig::Memory | TaskStateConfig::Nats(_), _) => None,
        };
        let cluster = match &config.tasks {
            TaskStateConfig::Nats(nats) => {
                let limits = cluster::SharedLimits {
                    max_queue: config.limits.max_queue,
                    max_queue_bytes: config.limits.max_queue_bytes,
                    result_ttl: config.limits.result_ttl,
                    max_store: config.limits.max_store,
                };
                let cluster = cluster::Cluster::connect(nats, &limits)
                    .await
                    .map_err(BrokerError::TaskState)?;
                Some(Arc::new(cluster))
            }
            _ => None,
        };
        let (journal, recovered) = match journal_path {
            Some(path) => {
                let (journal, recovered) =
                    tokio::task::spawn_blocking(move || journal::RedbJournal::open(&path))
                        .await
                        .map_err(|e| BrokerError::TaskState(e.to_string()))?
                        .map_err(|e| BrokerError::TaskState(e.to_string()))?;
                let journal: Arc<dyn journal::Journal> = Arc::new(journal);
                (Some(journal), recovered)
            }
            None => (None, journal::Recovered::default()),
        };
        let scheduler = self.scheduler.unwrap_or_else(|| match config.scheduler {
            SchedulerKind::Locality => Box::new(LocalityScheduler::default()),
            SchedulerKind::RoundRobin => Box::new(RoundRobinScheduler::default()),
        });
        let metrics = Arc::new(metrics::Metrics::new());
        let dispatch = Dispatch::start(
            scheduler,
            DispatchConfig {
                max_queue: config.limits.max_queue,
                max_bytes: config.limits.max_queue_bytes,
                max_attempts: config.limits.max_attempts.max(1),
                attempt_timeout: config.limits.attempt_timeout,
                attempt_grace: config.limits.attempt_grace,
                provider_wait: config.limits.provider_wait,
                ..DispatchConfig::default()
            },
            ShellConfig {
                log_tasks: config.log_tasks,
            },
            metrics.clone(),
        );
        // 64 random bits: ids stay distinct across restarts and across the brokers of a cluster.
        let mut boot = [0u8; 8];
        if getrandom::fill(&mut boot).is_err() {
            // No OS randomness: the clock still makes restarts distinct.
            boot = (wasimoff_core::platform::unix_nanos() as u64).to_le_bytes();
        }
        let detached =
            detached::Detached::new(config.limits.result_ttl, config.limits.max_result_bytes);
        let state = AppState {
            config,
            store,
            dispatch,
            metrics,
            boot_id: boot.iter().map(|b| format!("{b:02x}")).collect(),
            task_counter: AtomicU64::new(1),
            provider_counter: AtomicU64::new(1),
            reading: std::sync::atomic::AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            detached: std::sync::Mutex::new(detached),
            waiters: by_id::Waiters::default(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            journal,
            cluster,
        };
        let app = Arc::new(state);
        app.recover(recovered).await;
        cluster::start(&app).await.map_err(BrokerError::TaskState)?;
        Ok(Broker { app, tls })
    }
}

/// A configured broker; serve it with [`Broker::spawn`] or mount [`Broker::router`].
#[derive(Debug, Clone)]
pub struct Broker {
    app: App,
    /// The checked [`BrokerConfig::tls`].
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Broker {
    /// A builder with the default configuration (memory store, locality scheduler).
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    /// The broker's configuration.
    pub fn config(&self) -> &BrokerConfig {
        &self.app.config
    }

    /// The broker's store.
    pub fn store(&self) -> Arc<dyn Store> {
        self.app.store.clone()
    }

    /// All routes, for mounting under another axum application (e.g. with `Router::nest`).
    /// Client addresses are recorded when the server is run with
    /// `into_make_service_with_connect_info::<SocketAddr>()`.
    pub fn router(&self) -> Router {
        let app = self.app.clone();
        let limits = &app.config.limits;
        let storage = Router::new()
            .route("/api/storage/upload", post(storage::upload))
            .route(
                "/api/storage/{name}",
                get(storage::download).delete(storage::remove_alias),
            )
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                limits.http_timeout,
            ));
        let api = Router::new()
            .route("/api/provider/ws", get(provider::provider_socket))
            .route("/api/client/ws", get(client::client_socket))
            .route(
                "/api/client/wasimoff.v1.Tasks/{method}",
                post(client::connect_rpc),
            )
            .route("/api/client/run/{wasm}", post(client::exec))
            .route("/api/client/tasks", post(client::submit))
            .route("/api/client/tasks/batch", post(client::submit_batch))
            .route(
                "/api/client/tasks/wait",
                // Ids only: a small body, whatever the upload limit.
                post(client::wait).layer(DefaultBodyLimit::max(1 << 20)),
            )
            .route(
                "/api/client/tasks/{id}",
                get(client::fetch).delete(client::cancel),
            )
            .merge(storage)
            .route("/healthz", get(|| async { "OK\n" }))
            .route("/api/version", get(version))
            .route("/api/status", get(status))
            .route("/api/providers", get(operator::providers))
            .route("/api/dashboard", get(operator::dashboard))
            .route("/status", get(operator::page))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(
                limits.max_upload.saturating_add(1 << 20),
            ))
            .layer(axum::middleware::from_fn_with_state(
                server::min_rate::MinRate {
                    grace: limits.header_timeout,
                    rate: limits.min_body_rate,
                },
                server::min_rate::layer,
            ))
            .layer(
                CorsLayer::new()
                    .allow_origin(tower_http::cors::Any)
                    .allow_methods(tower_http::cors::Any)
                    .allow_headers(tower_http::cors::Any)
                    .expose_headers(tower_http::cors::Any),
            );
        let router = match page::service(app.config.static_dir.as_deref()) {
            Some(page) => api.fallback_service(page),
            // No page: the operator dashboard is the front page.
            None => api.route("/", get(operator::page)),
        };
        router.with_state(app)
    }

    /// Binds the configured address and serves until [`BrokerHandle::shutdown`].
    pub async fn spawn(self) -> Result<BrokerHandle, BrokerError> {
        let addr = self.app.config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| BrokerError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr, source })?;
        let limits = &self.app.config.limits;
        let config = server::ServerConfig {
            max_connections: limits.max_connections,
            provider_share: limits.provider_share,
            header_timeout: limits.header_timeout,
            tls: self.tls.clone(),
            tls_handshake_timeout: limits.tls_handshake_timeout,
        };
        let server = tokio::spawn(server::serve(
            listener,
            self.router(),
            config,
            self.app.shutdown.clone(),
        ));
        let tls = if self.tls.is_some() { "on" } else { "off" };
        tracing::info!(%local_addr, tls, "broker listening");
        Ok(BrokerHandle {
            broker: self,
            local_addr,
            server: Some(server),
        })
    }
}

/// A running broker.
#[derive(Debug)]
pub struct BrokerHandle {
    broker: Broker,
    local_addr: SocketAddr,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl BrokerHandle {
    /// The address it listens on (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker behind this handle.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The broker's base URL: `https://<address>` with TLS, else `http://<address>` (an
    /// unspecified listen address such as `0.0.0.0` is given as it is).
    pub fn url(&self) -> String {
        let scheme = if self.broker.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.local_addr)
    }

    /// Stops accepting connections, fails queued and running tasks with "broker is shutting
    /// down" (running ones are cancelled on their providers), closes provider sockets, and
    /// waits up to 10 s for open connections to finish. Tasks submitted by id stay accepted
    /// in the durable task state ([`TaskStateConfig`]), and the next start runs them.
    pub async fn shutdown(mut self) {
        let app = &self.broker.app;
        app.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(cluster) = &app.cluster {
            cluster.stop_pulling().await;
        }
        let (done, finished) = tokio::sync::oneshot::channel();
        app.dispatch.send(dispatch::Command::Shutdown { done });
        let _ = finished.await;
        if let Some(cluster) = &app.cluster {
            cluster.drain().await;
        }
        app.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        // Last: the tasks failed by the shutdown stay accepted in it, for the next start.
        if let Some(journal) = &app.journal {
            journal.close().await;
        }
    }
}

async fn version() -> impl IntoResponse {
    axum::Json(serde_json::json!({
        "package": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": "wasimoff.v1",
    }))
}

/// `/api/status`, `/api/providers`, `/api/dashboard` and `/metrics` tell who is connected and
/// how busy the broker is: with tokens configured they need one (a client's or a provider's).
/// `slots` is what providers offer (workers + prefetch); `workers` is the same figure under its
/// old name, kept for older clients.
async fn status(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(e) = app.check_any(&headers, None) {
        return e.into_response();
    }
    let m = &app.metrics;
    axum::Json(serde_json::json!({
        "providers": m.providers.get(),
        "slots": m.workers.get(),
        "workers": m.workers.get(),
        "queued": m.queued.get(),
        "running": m.running.get(),
        "scheduler": match app.config.scheduler {
            SchedulerKind::Locality => "locality",
            SchedulerKind::RoundRobin => "round-robin",
        },
        "shared": app.cluster.is_some(),
    }))
    .into_response()
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(e) = app.check_any(&headers, None) {
        return e.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        app.metrics.encode(),
    )
        .into_response()
}

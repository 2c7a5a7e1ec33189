//! [`BrokerConfig`]: everything that configures a broker, as plain data with defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::TlsConfig;

/// Where uploaded modules and zips are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StoreConfig {
    /// In memory (the library's default); lost on restart.
    #[default]
    Memory,
    /// In a directory ([`wasimoff_core::store::DirStore`]); survives restarts.
    Dir(PathBuf),
}

/// Where the broker keeps tasks submitted by id (`POST /api/client/tasks`) until their clients
/// have fetched the results, so that a restart (even `kill -9`) loses none of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TaskStateConfig {
    /// In a journal file in the store's directory with [`StoreConfig::Dir`], else in memory.
    #[default]
    Auto,
    /// In memory only: a restart loses every task not yet answered (clients get `not_found`).
    Memory,
    /// In this journal file (an embedded `redb` database, fsync'd on every accept and result).
    File(PathBuf),
    /// In NATS JetStream, shared with the other brokers that name the same servers: a task
    /// accepted here may run on a provider of another broker, and any of them answers for it.
    Nats(crate::NatsConfig),
}

/// Which scheduler places tasks on providers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchedulerKind {
    /// Prefer a free provider that already holds the module, else any free provider.
    #[default]
    Locality,
    /// Free providers in turn.
    RoundRobin,
}

impl std::str::FromStr for SchedulerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "locality" => Ok(SchedulerKind::Locality),
            "round-robin" | "roundrobin" => Ok(SchedulerKind::RoundRobin),
            other => Err(format!(
                "unknown scheduler {other:?} (locality, round-robin)"
            )),
        }
    }
}

/// Size and time limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Tasks waiting for a provider; more are refused with 429 / `resource_exhausted`.
    pub max_queue: usize,
    /// Bytes all unanswered tasks may hold together (each task's decoded request: stdin,
    /// arguments, environment, inline data, plus its books); more are refused with 429 /
    /// `resource_exhausted`, and a single task larger than this with 400.
    pub max_queue_bytes: usize,
    /// The largest WebSocket frame accepted.
    pub max_frame: usize,
    /// The largest upload (HTTP body of uploads and task requests).
    pub max_upload: usize,
    /// The largest stdin of a task (`max_stdin`).
    pub max_stdin: usize,
    /// The largest blob a task may carry inline (it is moved into the store).
    pub max_inline_blob: usize,
    /// The most arguments a task may have.
    pub max_args: usize,
    /// The most bytes a task's arguments and environment may have together.
    pub max_args_bytes: usize,
    /// The deadline of a task whose client sets none: queueing, every attempt and retries
    /// together (one attempt's limit is `attempt_timeout`).
    pub task_timeout: Duration,
    /// How long one attempt may run on a provider: the time limit the provider enforces on the
    /// guest (capped by what is left of the task's deadline). A guest that runs longer is a
    /// result (a timeout), not retried.
    pub attempt_timeout: Duration,
    /// How long past an attempt's time limit the broker waits for the provider's answer before
    /// it counts the provider as wedged, cancels the attempt there and tries another.
    pub attempt_grace: Duration,
    /// How long a task waits while no provider offers any slot (none connected, or all
    /// draining) before it fails with `unavailable` (503); well below `task_timeout`. Tasks
    /// submitted by id wait until their deadline instead: their clients do not hold a
    /// connection open, and after a restart the providers need a while to reconnect.
    pub provider_wait: Duration,
    /// How often a task is tried on providers when they fail (lost, wedged, an error or
    /// malformed answer); refusals (busy) do not count.
    pub max_attempts: u32,
    /// Outgoing messages buffered per WebSocket before a slow peer is skipped or waited for.
    pub socket_queue: usize,
    /// Time allowed for reading a request and for storage transfers.
    pub http_timeout: Duration,
    /// Time a connection has to send a request's headers, from connecting or from its previous
    /// response; also the grace before [`Limits::min_body_rate`] applies.
    pub header_timeout: Duration,
    /// With [`BrokerConfig::tls`]: time a new connection has to complete its TLS handshake
    /// (before its header timeout starts); a connection that has not is closed.
    pub tls_handshake_timeout: Duration,
    /// The slowest a request body may arrive on average after the grace, in bytes per second
    /// (0: no minimum).
    pub min_body_rate: u64,
    /// Open connections at most (lowered to fit the process's file limit). At the cap, the
    /// longest idle connection is closed for a newcomer; with none idle, newcomers get 503.
    pub max_connections: usize,
    /// Percent of `max_connections` that only provider sockets may use.
    pub provider_share: usize,
    /// A WebSocket from which nothing (not even a pong to the broker's pings) arrives for this
    /// long is closed; pings go out at a third of it.
    pub socket_idle_timeout: Duration,
    /// The most bytes the store keeps (`None`: no limit). To fit a new blob it evicts blobs
    /// nothing holds (no alias, no task queued or running that names it): expired and
    /// ephemeral ones first, then the least recently used; if that is not enough the upload
    /// fails with 507. Applies to the stores the broker opens, not to one passed to
    /// [`BrokerBuilder::store`](crate::BrokerBuilder::store).
    pub max_store: Option<u64>,
    /// How long the stderr and artifacts of an exec call (`POST /api/client/run/{wasm}`) stay
    /// downloadable by the refs in its answer; they are the first blobs evicted under pressure.
    /// Zero: they are not stored and the answer names no refs.
    pub output_ttl: Duration,
    /// How long the result of a task submitted with `POST /api/client/tasks` is kept for its
    /// client to fetch by id, after it finished.
    pub result_ttl: Duration,
    /// The most bytes the kept results of such tasks hold together (each its encoded size);
    /// the oldest are dropped first. A larger result is kept as an error saying so.
    pub max_result_bytes: usize,
    /// With client tokens: the most bytes the aliases a token set may hold (the distinct blobs
    /// they point at, each counted whole). `None`: no quota. Without tokens there are no
    /// owners and no quotas.
    pub client_quota: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_queue: 100_000,
            max_queue_bytes: 1 << 30,
            max_frame: 64 << 20,
            max_upload: 256 << 20,
            max_stdin: 16 << 20,
            max_inline_blob: 16 << 20,
            max_args: 65_536,
            max_args_bytes: 4 << 20,
            task_timeout: Duration::from_secs(600),
            attempt_timeout: Duration::from_secs(300),
            attempt_grace: Duration::from_secs(5),
            provider_wait: Duration::from_secs(30),
            max_attempts: 3,
            socket_queue: 256,
            http_timeout: Duration::from_secs(300),
            header_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            min_body_rate: 16 << 10,
            max_connections: 16_384,
            provider_share: 25,
            socket_idle_timeout: Duration::from_secs(60),
            max_store: Some(4 << 30),
            output_ttl: Duration::from_secs(600),
            result_ttl: Duration::from_secs(600),
            max_result_bytes: 256 << 20,
            client_quota: Some(1 << 30),
        }
    }
}

/// The provider liveness check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PingConfig {
    /// Time between pings.
    pub interval: Duration,
    /// Time a provider has to answer; one that misses it is dropped and its tasks requeued.
    pub timeout: Duration,
}

impl Default for PingConfig {
    fn default() -> Self {
        PingConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Everything that configures a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Where [`Broker::spawn`](crate::Broker::spawn) listens (`127.0.0.1:0` picks a port).
    pub listen: SocketAddr,
    /// The blob store.
    pub store: StoreConfig,
    /// The durable state of tasks submitted by id.
    pub tasks: TaskStateConfig,
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// Size and time limits.
    pub limits: Limits,
    /// The provider ping.
    pub ping: PingConfig,
    /// A directory served at `/` (the volunteer page); `None` serves the page built in (feature
    /// `embedded-page`), else the operator dashboard (also at `/status`).
    pub static_dir: Option<PathBuf>,
    /// Origins allowed to open the provider socket from a browser (`*` wildcards allowed, e.g.
    /// `https://*.example.org`). Requests without `Origin`, or from the broker's own host, always
    /// pass. Empty: only those.
    pub allowed_origins: Vec<String>,
    /// Bearer tokens accepted from clients; empty means clients need none. With tokens, an
    /// alias belongs to the token that set it (see [`Limits::client_quota`]).
    pub client_tokens: Vec<String>,
    /// Tokens accepted from providers (`Authorization: Bearer` or `?token=`, since browsers
    /// cannot set headers on WebSockets); empty means providers need none.
    pub provider_tokens: Vec<String>,
    /// Logs one info line per finished task (target `wasimoff_broker::tasks`: id, provider,
    /// outcome, attempts, queue wait, run time). On by default; `RUST_LOG` can also silence
    /// that target alone.
    pub log_tasks: bool,
    /// TLS for [`Broker::spawn`](crate::Broker::spawn): `https://` and `wss://` on the listen
    /// address instead of `http://` and `ws://`. `None`: plain HTTP (TLS terminated elsewhere,
    /// or a broker on loopback).
    pub tls: Option<TlsConfig>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4080)),
            store: StoreConfig::Memory,
            tasks: TaskStateConfig::Auto,
            scheduler: SchedulerKind::Locality,
            limits: Limits::default(),
            ping: PingConfig::default(),
            static_dir: None,
            allowed_origins: Vec::new(),
            client_tokens: Vec::new(),
            provider_tokens: Vec::new(),
            log_tasks: true,
            tls: None,
        }
    }
}

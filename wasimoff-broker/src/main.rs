//! `wasimoff-broker`: runs a broker. Configuration from flags or `WASIMOFF_*` variables.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use wasimoff_broker::{
    Broker, BrokerConfig, Limits, NatsConfig, PingConfig, SchedulerKind, StoreConfig,
    TaskStateConfig, TlsConfig,
};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "The wasimoff broker: hands WebAssembly tasks to volunteer providers"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "WASIMOFF_LISTEN", default_value = "127.0.0.1:4080")]
    listen: SocketAddr,
    /// Serve https:// and wss:// with this certificate chain (PEM, the broker's certificate
    /// first); needs --tls-key.
    #[arg(
        long,
        env = "WASIMOFF_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "WASIMOFF_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Seconds a new connection has to complete its TLS handshake.
    #[arg(long, env = "WASIMOFF_TLS_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    tls_handshake_timeout: u64,
    /// Directory for uploaded files (persistent); `--memory` keeps them in memory instead.
    #[arg(long, env = "WASIMOFF_DATA_DIR", default_value = "wasimoff-data")]
    data_dir: PathBuf,
    /// Keep uploaded files in memory only (lost on restart), and tasks submitted by id too.
    #[arg(long, env = "WASIMOFF_MEMORY_STORE")]
    memory: bool,
    /// Keep tasks submitted by id in memory only, even with a data directory: a restart loses
    /// those not yet answered. By default they are journaled in `DATA_DIR/tasks.redb`
    /// (fsync'd on accept) and a restarted broker runs them again.
    #[arg(long, env = "WASIMOFF_VOLATILE_TASKS")]
    volatile_tasks: bool,
    /// Keep tasks submitted by id in NATS JetStream, shared with every broker that names the
    /// same servers (comma-separated, e.g. `nats://n1:4222,nats://n2:4222`; nats-server runs
    /// with `-js`): any broker takes them, runs them on its providers and answers for them.
    #[arg(long, env = "WASIMOFF_NATS", value_delimiter = ',')]
    nats: Vec<String>,
    /// With `--nats`: seconds a task may go without a sign of life from its broker before
    /// another broker takes it over (what a broker's death costs its running tasks).
    #[arg(long, env = "WASIMOFF_NATS_ACK_WAIT", default_value_t = 30)]
    nats_ack_wait: u64,
    /// With `--nats`: replicas of the stream, bucket and object store when this broker is the
    /// one that creates them (3 on a three-node NATS cluster).
    #[arg(long, env = "WASIMOFF_NATS_REPLICAS", default_value_t = 1)]
    nats_replicas: usize,
    /// Scheduler: locality or round-robin.
    #[arg(long, env = "WASIMOFF_SCHEDULER", default_value = "locality")]
    scheduler: SchedulerKind,
    /// Directory served at `/` (the volunteer page).
    #[arg(long, env = "WASIMOFF_STATIC_FILES")]
    static_dir: Option<PathBuf>,
    /// Origins allowed to open the provider socket (comma-separated, `*` wildcards).
    #[arg(long, env = "WASIMOFF_ALLOWED_ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Bearer tokens accepted from clients (comma-separated); none: open.
    #[arg(
        long,
        env = "WASIMOFF_CLIENT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    client_tokens: Vec<String>,
    /// Tokens accepted from providers (comma-separated); none: open.
    #[arg(
        long,
        env = "WASIMOFF_PROVIDER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    provider_tokens: Vec<String>,
    /// Tasks waiting for a provider before submissions are refused with 429.
    #[arg(long, env = "WASIMOFF_MAX_QUEUE", default_value_t = Limits::default().max_queue)]
    max_queue: usize,
    /// Bytes all unanswered tasks may hold together (their decoded requests) before
    /// submissions are refused with 429.
    #[arg(long, env = "WASIMOFF_MAX_QUEUE_BYTES", default_value_t = Limits::default().max_queue_bytes)]
    max_queue_bytes: usize,
    /// Largest stdin of a task in bytes.
    #[arg(long, env = "WASIMOFF_MAX_STDIN", default_value_t = Limits::default().max_stdin)]
    max_stdin: usize,
    /// Largest WebSocket frame in bytes; also the largest task request, since a task must fit
    /// in one frame to a provider (keep it at or below the providers' own limit).
    #[arg(long, env = "WASIMOFF_MAX_FRAME", default_value_t = Limits::default().max_frame)]
    max_frame: usize,
    /// Largest upload in bytes.
    #[arg(long, env = "WASIMOFF_MAX_UPLOAD", default_value_t = Limits::default().max_upload)]
    max_upload: usize,
    /// The most arguments a task may have.
    #[arg(long, env = "WASIMOFF_MAX_ARGS", default_value_t = Limits::default().max_args)]
    max_args: usize,
    /// The most bytes of arguments and environment a task may have together.
    #[arg(long, env = "WASIMOFF_MAX_ARGS_BYTES", default_value_t = Limits::default().max_args_bytes)]
    max_args_bytes: usize,
    /// Seconds a task may take before it fails with deadline exceeded.
    #[arg(long, env = "WASIMOFF_TASK_TIMEOUT", default_value_t = 600)]
    task_timeout: u64,
    /// Seconds one attempt of a task may run on a provider: the time limit the provider
    /// enforces on the guest (a guest that runs longer ends as a timeout, not retried).
    #[arg(long, env = "WASIMOFF_ATTEMPT_TIMEOUT", default_value_t = 300)]
    attempt_timeout: u64,
    /// Seconds past an attempt's time limit the broker waits for the provider's answer before
    /// it counts the provider as wedged, cancels there and tries another.
    #[arg(long, env = "WASIMOFF_ATTEMPT_GRACE", default_value_t = 5)]
    attempt_grace: u64,
    /// Seconds a task waits while no provider is connected (or all are draining) before it
    /// fails with `unavailable`.
    #[arg(long, env = "WASIMOFF_PROVIDER_WAIT", default_value_t = 30)]
    provider_wait: u64,
    /// Seconds a connection has to send a request's headers (also the grace before the
    /// minimum body rate applies).
    #[arg(long, env = "WASIMOFF_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// The slowest a request body may arrive after the grace, in bytes per second (0: any).
    #[arg(long, env = "WASIMOFF_MIN_BODY_RATE", default_value_t = Limits::default().min_body_rate)]
    min_body_rate: u64,
    /// Open connections at most (lowered to fit `ulimit -n`); at the cap the longest idle
    /// connection is closed for a newcomer.
    #[arg(long, env = "WASIMOFF_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Percent of the connections that only providers may use.
    #[arg(long, env = "WASIMOFF_PROVIDER_SHARE", default_value_t = Limits::default().provider_share)]
    provider_share: usize,
    /// Seconds a WebSocket may stay silent (no message, no pong to the broker's pings) before
    /// it is closed.
    #[arg(long, env = "WASIMOFF_SOCKET_IDLE_TIMEOUT", default_value_t = 60)]
    socket_idle_timeout: u64,
    /// Log format: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(long, env = "WASIMOFF_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// One info line per finished task (id, provider, outcome, attempts, queue wait, run
    /// time); `--log-tasks false` quiets it.
    #[arg(
        long,
        env = "WASIMOFF_LOG_TASKS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    log_tasks: bool,
    /// Seconds between provider pings.
    #[arg(long, env = "WASIMOFF_PING_INTERVAL", default_value_t = 5)]
    ping_interval: u64,
    /// Most bytes the store keeps; to fit new files it evicts those no alias and no queued or
    /// running task holds (expired exec outputs first, then least recently used). 0: no limit.
    #[arg(long, env = "WASIMOFF_MAX_STORE", default_value_t = Limits::default().max_store.unwrap_or(0))]
    max_store: u64,
    /// Seconds the stderr and artifacts of exec calls stay downloadable by their refs.
    /// 0: they are not stored.
    #[arg(long, env = "WASIMOFF_OUTPUT_TTL", default_value_t = Limits::default().output_ttl.as_secs())]
    output_ttl: u64,
    /// With client tokens: most bytes the aliases of one token may hold. 0: no quota.
    #[arg(long, env = "WASIMOFF_CLIENT_QUOTA", default_value_t = Limits::default().client_quota.unwrap_or(0))]
    client_quota: u64,
    /// Seconds the result of a task submitted to be fetched later (`POST /api/client/tasks`)
    /// is kept after it finished.
    #[arg(long, env = "WASIMOFF_RESULT_TTL", default_value_t = Limits::default().result_ttl.as_secs())]
    result_ttl: u64,
    /// Most bytes such kept results hold together; the oldest go first.
    #[arg(long, env = "WASIMOFF_MAX_RESULT_BYTES", default_value_t = Limits::default().max_result_bytes)]
    max_result_bytes: usize,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
    }
}

/// The tokens given, without empty ones: `WASIMOFF_CLIENT_TOKENS=` (set but empty, as compose
/// files and unit templates often leave it) means no tokens, not "the empty token".
fn tokens(given: Vec<String>) -> Vec<String> {
    given
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// One line an operator checks first: where files live, who may connect, what `/` serves.
fn log_configuration(config: &BrokerConfig) {
    let store = match &config.store {
        StoreConfig::Memory => "memory (lost on restart)".to_owned(),
        StoreConfig::Dir(dir) => std::path::absolute(dir)
            .unwrap_or_else(|_| dir.clone())
            .display()
            .to_string(),
    };
    let auth = |tokens: &[String]| match tokens.len() {
        0 => "off (anyone may connect)".to_owned(),
        n => format!("on ({n} token{})", if n == 1 { "" } else { "s" }),
    };
    let origins = match config.allowed_origins.as_slice() {
        [] => "the broker's own host only".to_owned(),
        list => list.join(", "),
    };
    let page = match &config.static_dir {
        Some(dir) => dir.display().to_string(),
        None if wasimoff_broker::EMBEDDED_PAGE => "none (the built-in page is served)".to_owned(),
        None => "none (the operator dashboard is served)".to_owned(),
    };
    tracing::info!(
        listen = %config.listen,
        store = %store,
        client_auth = %auth(&config.client_tokens),
        provider_auth = %auth(&config.provider_tokens),
        allowed_origins = %origins,
        static_dir = %page,
        "starting broker"
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    wasimoff_broker::release_large_buffers();
    let args = Args::parse();
    init_logging(args.log_format);
    let config = BrokerConfig {
        listen: args.listen,
        store: if args.memory {
            StoreConfig::Memory
        } else {
            StoreConfig::Dir(args.data_dir)
        },
        tasks: if !args.nats.is_empty() {
            TaskStateConfig::Nats(NatsConfig {
                servers: args.nats,
                ack_wait: Duration::from_secs(args.nats_ack_wait.max(1)),
                replicas: args.nats_replicas.max(1),
            })
        } else if args.volatile_tasks {
            TaskStateConfig::Memory
        } else {
            TaskStateConfig::Auto
        },
        scheduler: args.scheduler,
        limits: Limits {
            max_queue: args.max_queue,
            max_queue_bytes: args.max_queue_bytes,
            max_stdin: args.max_stdin,
            max_frame: args.max_frame,
            max_upload: args.max_upload,
            max_args: args.max_args,
            max_args_bytes: args.max_args_bytes,
            task_timeout: Duration::from_secs(args.task_timeout),
            attempt_timeout: Duration::from_secs(args.attempt_timeout),
            attempt_grace: Duration::from_secs(args.attempt_grace),
            provider_wait: Duration::from_secs(args.provider_wait),
            header_timeout: Duration::from_secs(args.header_timeout.max(1)),
            tls_handshake_timeout: Duration::from_secs(args.tls_handshake_timeout.max(1)),
            min_body_rate: args.min_body_rate,
            max_connections: args.max_connections,
            provider_share: args.provider_share.min(100),
            socket_idle_timeout: Duration::from_secs(args.socket_idle_timeout.max(1)),
            max_store: (args.max_store > 0).then_some(args.max_store),
            output_ttl: Duration::from_secs(args.output_ttl),
            client_quota: (args.client_quota > 0).then_some(args.client_quota),
            result_ttl: Duration::from_secs(args.result_ttl),
            max_result_bytes: args.max_result_bytes,
            ..Limits::default()
        },
        ping: PingConfig {
            interval: Duration::from_secs(args.ping_interval.max(1)),
            timeout: Duration::from_secs(args.ping_interval.max(1) * 2),
        },
        static_dir: args.static_dir,
        allowed_origins: args.allowed_origins,
        client_tokens: tokens(args.client_tokens),
        provider_tokens: tokens(args.provider_tokens),
        log_tasks: args.log_tasks,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig::files(cert, key)),
            _ => None,
        },
    };
    log_configuration(&config);
    // Before the broker says it is ready: a SIGTERM right after "ready" must stop it
    // gracefully, not kill it (the default action until a handler is installed).
    let mut stop = wasimoff_core::platform::StopSignal::install()?;
    let handle = Broker::builder()
        .config(config)
        .build()
        .await?
        .spawn()
        .await?;
    tracing::info!("broker ready on {}", handle.url());
    stop.recv().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

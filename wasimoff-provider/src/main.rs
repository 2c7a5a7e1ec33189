//! `wasimoff-provider`: the native provider. Parses its configuration (flags or `WASIMOFF_*`
//! environment variables), runs tasks on [`WasmtimeExecutor`], and drains on Ctrl-C or SIGTERM
//! (a second one exits at once). All behaviour lives in the library's [`runtime`] module.
//!
//! Exit codes: 0 after a shutdown; 78 (`EX_CONFIG`) when the configuration is unusable or the
//! broker refuses the provider in a way retrying cannot fix (token refused, no provider socket
//! at the URL, untrusted TLS certificate), with a message saying what to check; 1 otherwise.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wasimoff_core::store::{DirStore, MemoryStore, Store, StoreLimits};
use wasimoff_provider::{
    WasmtimeConfig, WasmtimeExecutor,
    runtime::{self, ConfigError, Provider, ProviderConfig},
};

/// Offer this machine's CPU to a wasimoff broker: run the WebAssembly tasks it sends.
#[derive(Debug, Parser)]
#[command(name = "wasimoff-provider", version)]
struct Args {
    /// The broker, e.g. `http://localhost:4080` (or a full `ws://` socket URL).
    #[arg(
        long,
        short = 'b',
        env = "WASIMOFF_BROKER",
        default_value = "http://localhost:4080"
    )]
    broker: String,
    /// Tasks run at once (default: one per core).
    #[arg(long, short = 'w', env = "WASIMOFF_WORKERS")]
    workers: Option<usize>,
    /// Tasks accepted beyond the workers, waiting for the next free one (default: one per
    /// worker; 0: none). Hides the round trip to the broker between two short tasks.
    #[arg(long, env = "WASIMOFF_PREFETCH")]
    prefetch: Option<usize>,
    /// The name shown by the broker (default: `<hostname>-<pid>`).
    #[arg(long, short = 'n', env = "WASIMOFF_NAME")]
    name: Option<String>,
    /// Keep fetched files and compiled modules in this directory across restarts
    /// (default: in memory only).
    #[arg(long, short = 'd', env = "WASIMOFF_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// A provider token for brokers that require one.
    #[arg(long, env = "WASIMOFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Also trust the CA certificate(s) in this PEM file for wss:// and https://: for a broker
    /// with a self-signed certificate or one from a private CA (public CAs are always trusted).
    #[arg(long, env = "WASIMOFF_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Seconds running tasks get to finish on shutdown before they are cancelled.
    #[arg(long, env = "WASIMOFF_DRAIN_GRACE", default_value_t = 30)]
    drain_grace: u64,
    /// Log format: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(long, env = "WASIMOFF_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// The longest a task may run, in seconds.
    #[arg(long, env = "WASIMOFF_MAX_TASK_SECONDS", default_value_t = 600)]
    max_task_seconds: u64,
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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Do not wait for blocking work still in flight (a cancelled guest winding down).
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, config }) => {
            tracing::error!("{message}");
            if config {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The exit code for a configuration the provider cannot work with (`sysexits.h`).
const EX_CONFIG: u8 = 78;

/// Why the provider ended: the message to log, and whether the configuration is to blame
/// (the exit code tells supervisors not to restart it unchanged).
struct Failure {
    message: String,
    config: bool,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure {
            message,
            config: false,
        }
    }
}

impl From<runtime::ProviderError> for Failure {
    fn from(e: runtime::ProviderError) -> Self {
        let config = matches!(
            e,
            runtime::ProviderError::Refused { .. } | runtime::ProviderError::Config(_)
        );
        Failure {
            message: e.to_string(),
            config,
        }
    }
}

fn config_error(message: String) -> Failure {
    Failure {
        message,
        config: true,
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    // First of all: a SIGTERM sent while the provider starts must drain it, not kill it.
    let mut stop = wasimoff_core::platform::StopSignal::install()
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let wasmtime = WasmtimeConfig {
        workers: args.workers.unwrap_or(0),
        cache_dir: args.cache_dir.as_ref().map(|d| d.join("compiled")),
        default_timeout: Some(Duration::from_secs(args.max_task_seconds)),
        ..WasmtimeConfig::default()
    };
    let executor = WasmtimeExecutor::new(wasmtime).map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = match &args.cache_dir {
        Some(dir) => Arc::new(
            DirStore::open(dir.join("files"), StoreLimits::default())
                .map_err(|e| format!("cannot open the cache in {}: {e}", dir.display()))?,
        ),
        None => Arc::new(MemoryStore::default()),
    };
    let ca_cert_pem =
        match &args.ca_cert {
            Some(file) => Some(std::fs::read(file).map_err(|e| {
                config_error(format!("cannot read --ca-cert {}: {e}", file.display()))
            })?),
            None => None,
        };
    let config = ProviderConfig {
        name: args.name.unwrap_or_else(default_name),
        ca_cert_pem,
        prefetch: args.prefetch,
        token: args.token.filter(|t| !t.is_empty()),
        drain_grace: Duration::from_secs(args.drain_grace),
        max_task_timeout: Duration::from_secs(args.max_task_seconds),
        ..ProviderConfig::new(args.broker)
    };
    let provider = Provider::builder(config, Arc::new(executor))
        .store(store)
        .build()
        .map_err(|e| match (&e, &args.ca_cert) {
            (runtime::ProviderError::Config(ConfigError::CaCert(_)), Some(file)) => {
                config_error(format!("--ca-cert {}: {e}", file.display()))
            }
            _ => Failure::from(e),
        })?;
    tracing::info!(
        url = provider.url(),
        slots = provider.status().concurrency,
        "starting provider"
    );

    let runner = provider.clone();
    let mut running = tokio::spawn(async move { runner.run().await });
    tokio::select! {
        result = &mut running => return finished(result),
        () = stop.recv() => {}
    }
    tracing::info!("shutting down (Ctrl-C or SIGTERM again to exit at once)");
    tokio::select! {
        () = provider.shutdown_default() => {}
        () = stop.recv() => {
            return Err(String::from("interrupted during shutdown").into());
        }
    }
    finished(running.await)
}

fn finished(
    result: Result<Result<(), runtime::ProviderError>, tokio::task::JoinError>,
) -> Result<(), Failure> {
    match result {
        Ok(result) => result.map_err(Failure::from),
        Err(e) => Err(format!("provider task failed: {e}").into()),
    }
}

/// `<hostname>-<pid>`, or `provider-<pid>` where the hostname is unknown.
fn default_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "provider".to_owned());
    format!("{host}-{}", std::process::id())
}

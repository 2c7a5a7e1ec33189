//! Test support: in-process brokers and native providers (wasmtime) on their own runtimes, and
//! the `wasimoff` binary as a subprocess.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    sync::{Arc, OnceLock},
    time::Duration,
};

use wasimoff_broker::{Broker, BrokerConfig, Limits, PingConfig};
use wasimoff_provider::{
    WasmtimeConfig, WasmtimeExecutor,
    runtime::{Provider, ProviderConfig},
};

/// A broker (and maybe providers) running on a runtime of its own thread, so that it outlives
/// any one test's runtime.
pub struct Env {
    pub url: String,
    runtime: tokio::runtime::Handle,
}

/// A tokio runtime (2 workers) on a thread of its own, running until the test process exits.
fn background_runtime() -> tokio::runtime::Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        tx.send(runtime.handle().clone()).unwrap();
        runtime.block_on(std::future::pending::<()>());
    });
    rx.recv().unwrap()
}

pub fn config(max_queue: usize) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ping: PingConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        },
        limits: Limits {
            max_queue,
            task_timeout: Duration::from_secs(120),
            ..Limits::default()
        },
        ..BrokerConfig::default()
    }
}

impl Env {
    /// A new broker with the given configuration, without providers.
    pub fn start(config: BrokerConfig) -> Env {
        let runtime = background_runtime();
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let broker = Broker::builder()
                .config(config)
                .build()
                .await
                .unwrap()
                .spawn()
                .await
                .unwrap();
            tx.send(broker.url()).unwrap();
            // Serve until the test process exits.
            std::future::pending::<()>().await;
            drop(broker);
        });
        let url = rx.recv().unwrap();
        Env { url, runtime }
    }

    /// A runtime of its own for providers of a broker that runs elsewhere (another process).
    pub fn attach(url: &str) -> Env {
        Env {
            url: url.to_owned(),
            runtime: background_runtime(),
        }
    }

    /// Starts a native provider (wasmtime) with `workers` slots and waits until the broker
    /// sees it.
    pub fn add_provider(&self, name: &str, workers: usize) -> Provider {
        self.add_provider_with(
            name,
            WasmtimeConfig {
                workers,
                ..WasmtimeConfig::default()
            },
        )
    }

    /// Starts a native provider with this executor configuration (one slot per worker).
    pub fn add_provider_with(&self, name: &str, executor: WasmtimeConfig) -> Provider {
        let workers = executor.workers;
        let executor = WasmtimeExecutor::new(executor).unwrap();
        let config = ProviderConfig {
            name: name.into(),
            concurrency: Some(workers),
            ..ProviderConfig::new(self.url.clone())
        };
        let provider = Provider::builder(config, Arc::new(executor))
            .build()
            .unwrap();
        let runner = provider.clone();
        self.runtime.spawn(async move { runner.run().await });
        provider
    }

    /// Runs a future on the broker's runtime and waits for it.
    pub fn block_on<F: std::future::Future + Send + 'static>(&self, f: F) -> F::Output
    where
        F::Output: Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().unwrap()
    }

    /// Spawns a future on the broker's runtime.
    pub fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.runtime.spawn(f);
    }

    pub fn client(&self) -> wasimoff_client::Client {
        wasimoff_client::Client::new(&self.url).unwrap()
    }

    /// Waits until `/api/status` satisfies `check`.
    pub fn wait_status(&self, what: &str, check: impl Fn(&wasimoff_client::Status) -> bool) {
        let client = self.client();
        for _ in 0..1_000 {
            let c = client.clone();
            if let Ok(status) = self.block_on(async move { c.status().await })
                && check(&status)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the broker never reported {what}");
    }

    /// Uploads bytes under an alias.
    pub fn upload(&self, bytes: &'static [u8], alias: &str) {
        let client = self.client();
        let alias = alias.to_owned();
        self.block_on(async move { client.upload(bytes, Some(&alias)).await })
            .unwrap();
    }

    /// The `wasimoff` CLI, pointed at this broker.
    pub fn cli(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wasimoff"));
        command
            .env("WASIMOFF_BROKER", &self.url)
            .env_remove("WASIMOFF_TOKEN")
            .env_remove("WASIMOFF_CA_CERT")
            .stdin(Stdio::null());
        command
    }
}

/// The shared broker with one native provider (4 workers) and `hello.wasm`, `tsp.wasm`
/// uploaded.
pub fn shared() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let env = Env::start(config(100_000));
        env.add_provider("native-1", 4);
        env.wait_status("one provider with 4 workers", |s| {
            s.providers == 1 && s.workers == 4
        });
        env.upload(wasimoff_wasi_apps::HELLO, "hello.wasm");
        env.upload(wasimoff_wasi_apps::TSP, "tsp.wasm");
        env
    })
}

/// Runs a command and returns its output (stdout, stderr, status).
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parses JSON lines.
pub fn json_lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    text(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

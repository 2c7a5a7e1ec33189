//! End-to-end benchmark (issue 8): client -> broker -> native provider (wasmtime) -> back.
//!
//! ```text
//! cargo bench -p wasimoff-client --bench e2e             # full run, ~2 min
//! cargo bench -p wasimoff-client --bench e2e -- --quick  # small sizes, for CI
//! ```
//!
//! The broker runs in a child process (this binary with `--broker`), so its memory can be read
//! from its own `/proc/self/status`; the provider (wasmtime executor, 2 workers) and the client
//! run in this process and talk to it over loopback. Every figure is printed next to a baseline
//! measured in the same run, as a ratio:
//! 1. trivial tasks (`hello`): throughput with many tasks in flight vs the executor alone
//!    in-process (warm cache); latency one task at a time (client WebSocket and Connect RPC)
//!    vs one in-process execution;
//! 2. compute tasks (`tsp rand 10`, `tsp rand 11`): makespan of a batch vs the natively
//!    compiled `tsp`, 2 processes at a time (and vs the wasm executor alone in-process);
//! 3. large inputs (a rootfs zip and a module with a big data section): upload, first task
//!    (fetch + unpack / cold compile), second task (cache hit), broker peak RSS vs file size;
//! 4. open-loop load with the `load` guest at fixed arrival rates: latency percentiles vs
//!    offered load, next to the unloaded latency;
//! 5. hostile load (issue 13): `hello` throughput with 10 % hostile tasks (sleepers, loops,
//!    floods) vs without; broker peak RSS under a flood of 8 MiB tasks with no provider, with
//!    the default byte budget and a small one; one request with 8,000,000 empty arguments;
//!    `/healthz` latency during two 190 MB uploads vs idle;
//! 6. durable tasks (issue 19): `hello` by id (`Client::run_all`) with the tasks kept in memory,
//!    journaled on disk (fsync'd), in NATS JetStream with one broker and with three (each with
//!    a provider), next to the client WebSocket in the same run: throughput and latency one
//!    task at a time; the time from a broker's SIGKILL to all its tasks queued and running
//!    again after it restarts; on JetStream, the time until another broker runs them.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    missing_docs
)]

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use wasimoff_broker::{Broker, BrokerConfig, Limits, PingConfig, StoreConfig};
use wasimoff_client::{Client, Output, Task};
use wasimoff_core::executor::{CancellationToken, ExecTask, Executor, ResolvedFile, Termination};
use wasimoff_provider::{
    WasmtimeConfig, WasmtimeExecutor,
    runtime::{Provider, ProviderConfig},
};

const WORKERS: usize = 2;

// ---------------------------------------------------------------------------------------------
// Helpers: memory, percentiles, formatting.

/// `(VmRSS, VmHWM)` of this process in bytes.
fn mem() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1u32 << 20)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

// ---------------------------------------------------------------------------------------------
// The broker child process.

/// The broker child: `--broker [--max-queue-bytes <n>] [--data-dir <dir>] [--volatile-tasks]
/// [--nats <url> [--nats-ack-wait <seconds>]] [--listen <addr>] [--malloc-default]`.
/// Like the `wasimoff-broker` binary it calls `release_large_buffers` first, unless told
/// `--malloc-default`.
fn broker_child(args: &[String]) {
    if !args.iter().any(|a| a == "--malloc-default") {
        wasimoff_broker::release_large_buffers();
    }
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            ping: PingConfig {
                interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(60),
            },
            limits: Limits {
                max_queue: 1_000_000,
                ..Limits::default()
            },
            ..BrokerConfig::default()
        };
        if let Some(bytes) = option("--max-queue-bytes") {
            config.limits.max_queue_bytes = bytes.parse().expect("--max-queue-bytes");
        }
        if let Some(dir) = option("--data-dir") {
            config.store = StoreConfig::Dir(dir.into());
        }
        if args.iter().any(|a| a == "--volatile-tasks") {
            config.tasks = wasimoff_broker::TaskStateConfig::Memory;
        }
        if let Some(url) = option("--nats") {
            config.tasks = wasimoff_broker::TaskStateConfig::Nats(wasimoff_broker::NatsConfig {
                servers: vec![url.clone()],
                ack_wait: Duration::from_secs(
                    option("--nats-ack-wait").map_or(30, |s| s.parse().expect("--nats-ack-wait")),
                ),
                replicas: 1,
            });
        }
        if let Some(listen) = option("--listen") {
            config.listen = listen.parse().expect("--listen");
        }

        let handle = Broker::builder()
            .config(config)
            .build()
            .await
            .expect("broker")
            .spawn()
            .await
            .expect("spawn");
        println!("addr {}", handle.local_addr());
        std::io::stdout().flush().expect("flush");
        // Commands on stdin: `rss` answers `rss <VmRSS> <VmHWM>`; EOF shuts down.
        tokio::task::spawn_blocking(|| {
            for line in std::io::stdin().lines() {
                match line.as_deref() {
                    Ok("rss") => {
                        let (rss, hwm) = mem();
                        println!("rss {rss} {hwm}");
                        std::io::stdout().flush().expect("flush");
                    }
                    _ => break,
                }
            }
        })
        .await
        .expect("stdin reader");
        handle.shutdown().await;
    });
}

struct BrokerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: std::io::Lines<BufReader<ChildStdout>>,
    url: String,
}

impl BrokerProc {
    fn start() -> BrokerProc {
        BrokerProc::start_with(&[])
    }

    /// A broker child with options (see [`broker_child`]).
    fn start_with(options: &[String]) -> BrokerProc {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("--broker")
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the broker child");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = stdout.next().expect("broker line").expect("read");
        let addr = line.strip_prefix("addr ").expect("addr line").to_owned();
        BrokerProc {
            child,
            stdin,
            stdout,
            url: format!("http://{addr}"),
        }
    }

    /// `(VmRSS, VmHWM)` of the broker process.
    fn mem(&mut self) -> (u64, u64) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "rss").expect("ask broker");
        stdin.flush().expect("flush");
        let line = self.stdout.next().expect("rss line").expect("read");
        let mut it = line.split(' ').skip(1).map(|v| v.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A native provider (wasmtime, `WORKERS` workers) connected to `url`, and a client.
struct Peer {
    provider: Provider,
    running: tokio::task::JoinHandle<()>,
    client: Client,
}

impl Peer {
    async fn start(url: &str) -> Peer {
        Peer::start_with(
            url,
            WasmtimeConfig {
                workers: WORKERS,
                ..WasmtimeConfig::default()
            },
        )
        .await
    }

    async fn start_with(url: &str, config: WasmtimeConfig) -> Peer {
        let executor = WasmtimeExecutor::new(config).expect("executor");
        let provider = Provider::builder(
            ProviderConfig {
                name: "bench-provider".into(),
                ..ProviderConfig::new(url.to_owned())
            },
            Arc::new(executor),
        )
        .build()
        .expect("provider");
        let runner = provider.clone();
        let running = tokio::spawn(async move {
            let _ = runner.run().await;
        });
        let client = Client::builder(url)
            .task_timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let t = Instant::now();
        loop {
            let status = client.status().await.expect("status");
            if status.providers >= 1 && status.workers > 0 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "provider not up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Peer {
            provider,
            running,
            client,
        }
    }

    async fn stop(self) {
        self.provider.shutdown(Duration::from_secs(5)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.running).await;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--broker") {
        return broker_child(&args);
    }
    let quick = args.iter().any(|a| a == "--quick");
    let only: Option<u32> = args
        .iter()
        .position(|a| a == "--scenario")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok());
    let want = |n: u32| only.is_none_or(|o| o == n);
    println!(
        "# end-to-end benchmark{}: broker in a child process; provider (wasmtime, {WORKERS} \
         workers) and client in this one; {} cores",
        if quick { " (quick)" } else { "" },
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    runtime.block_on(async {
        if want(1) {
            trivial(quick).await;
        }
        if want(2) {
            compute(quick).await;
        }
        if want(3) {
            large(quick).await;
        }
        if want(4) {
            open_loop(quick).await;
        }
        if want(5) {
            hostile(quick).await;
        }
        if want(6) {
            durable(quick).await;
        }
    });
    println!("\ntotal {:.1} s", started.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: trivial tasks.

fn hello_exec(binary: &ResolvedFile, n: usize) -> ExecTask {
    ExecTask::new(
        format!("b{n}"),
        binary.clone(),
        vec!["hello.wasm".into(), "bench".into()],
    )
}

/// The limit: the executor alone, warm, `lanes` concurrent callers; tasks/s.
async fn executor_throughput(
    executor: &Arc<WasmtimeExecutor>,
    binary: &ResolvedFile,
    n: usize,
) -> f64 {
    let lanes = WORKERS * 2;
    let per_lane = n / lanes;
    let started = Instant::now();
    let mut handles = Vec::new();
    for lane in 0..lanes {
        let executor = executor.clone();
        let binary = binary.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_lane {
                let out = executor
                    .execute(
                        hello_exec(&binary, lane * per_lane + i),
                        CancellationToken::new(),
                    )
                    .await
                    .unwrap();
                assert_eq!(out.termination, Termination::Exited(0));
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    (per_lane * lanes) as f64 / started.elapsed().as_secs_f64()
}

async fn trivial(quick: bool) {
    let (n_tasks, n_seq, in_flight) = if quick {
        (2_000, 100, 64)
    } else {
        (20_000, 500, 64)
    };
    println!("\n## 1. trivial task (hello): throughput and latency");

    // Baseline: the executor in-process, warm memory cache.
    let binary = ResolvedFile::from_bytes(Bytes::from_static(wasimoff_wasi_apps::HELLO));
    let executor = Arc::new(
        WasmtimeExecutor::new(WasmtimeConfig {
            workers: WORKERS,
            ..WasmtimeConfig::default()
        })
        .unwrap(),
    );
    executor.precompile(&binary).unwrap();
    executor_throughput(&executor, &binary, n_tasks / 10).await;
    let limit = executor_throughput(&executor, &binary, n_tasks).await;
    // One task at a time on a blocking thread (execute_blocking may not run on the runtime).
    let mut exec_lat = {
        let executor = executor.clone();
        let binary = binary.clone();
        tokio::task::spawn_blocking(move || {
            let cancel = CancellationToken::new();
            (0..n_seq)
                .map(|i| {
                    let t = Instant::now();
                    executor
                        .execute_blocking(hello_exec(&binary, i), &cancel)
                        .unwrap();
                    t.elapsed()
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap()
    };
    exec_lat.sort();
    let exec_p50 = pct(&exec_lat, 0.5);
    drop(executor);

    let broker = BrokerProc::start();
    let peer = Peer::start(&broker.url).await;
    let client = peer.client.clone();
    client
        .upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm"))
        .await
        .unwrap();
    let run_batch = |n: usize| {
        let client = client.clone();
        async move {
            let tasks = (0..n).map(|_| Task::wasip1("hello.wasm").arg("bench"));
            let mut results = client.submit_many(tasks, in_flight);
            let started = Instant::now();
            let mut ok = 0usize;
            while let Some((_, r)) = results.next().await {
                if r.is_ok_and(|o| o.success()) {
                    ok += 1;
                }
            }
            (ok, started.elapsed())
        }
    };
    run_batch(n_tasks / 10).await; // warm-up: compile, connections
    let (ok, took) = run_batch(n_tasks).await;
    let e2e = ok as f64 / took.as_secs_f64();
    println!(
        "executor alone, in-process, warm, {WORKERS} workers: {limit:>8.0} tasks/s (the limit)"
    );
    println!(
        "end to end, submit_many, {in_flight} in flight:       {e2e:>8.0} tasks/s ({ok}/{n_tasks} \
         ok in {:.2} s)",
        took.as_secs_f64()
    );
    println!(
        "ratio end-to-end / in-process: {:.1}% (target >= 25%: {}); tasks/s target >= 5,000: {}",
        e2e / limit * 100.0,
        met(e2e >= limit * 0.25),
        met(e2e >= 5_000.0)
    );
    wasmtime_cli(limit, if quick { 5 } else { 30 });

    // Latency at low load: one task at a time.
    let session = &client.session().await.unwrap();
    let ws = latencies(n_seq, || async move {
        let out = session.run(Task::wasip1("hello.wasm").arg("bench")).await;
        assert!(out.unwrap().success());
    })
    .await;
    session.close().await;
    let client = &client;
    let rpc = latencies(n_seq, || async move {
        let out = client.run(Task::wasip1("hello.wasm").arg("bench")).await;
        assert!(out.unwrap().success());
    })
    .await;
    println!(
        "latency, one task at a time ({n_seq} tasks); baseline: one in-process execution p50 {}",
        us(exec_p50)
    );
    for (label, lat) in [
        ("client WebSocket (session)", &ws),
        ("Connect RPC (run)", &rpc),
    ] {
        let p50 = pct(lat, 0.5);
        println!(
            "  {label:<28} p50 {:>9}  p99 {:>9}  ({:.1}x the executor) target p50 < 1 ms: {}",
            us(p50),
            us(pct(lat, 0.99)),
            p50.as_secs_f64() / exec_p50.as_secs_f64(),
            met(p50 < Duration::from_millis(1))
        );
    }
    peer.stop().await;
    drop(broker);
}

/// The wasmtime CLI, one process per task, if it is on `PATH`.
fn wasmtime_cli(limit: f64, n: usize) {
    let available = Command::new("wasmtime")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        println!("wasmtime CLI, one process per task: skipped (no `wasmtime` on PATH)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("hello.wasm");
    std::fs::write(&wasm, wasimoff_wasi_apps::HELLO).unwrap();
    let started = Instant::now();
    for _ in 0..n {
        let out = Command::new("wasmtime")
            .arg("run")
            .arg(&wasm)
            .arg("bench")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "wasmtime CLI, one process per task (sequential): {rate:.0} tasks/s ({:.2}% of the limit)",
        rate / limit * 100.0
    );
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: compute tasks, wasm + offloading vs native processes.

/// The natively compiled `tsp` (built on demand, as docs/workloads.md shows), or why not.
fn native_tsp() -> Result<PathBuf, String> {
    let guests = PathBuf::from(wasimoff_wasi_apps::GUESTS_DIR);
    let target = std::env::var_os("WASIMOFF_GUESTS_TARGET_DIR")
        .map_or_else(|| guests.join("../../target/wasi-apps"), PathBuf::from);
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--release", "--locked", "--quiet", "-p", "tsp"])
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_") || k == "RUSTFLAGS" || k == "RUSTC_WRAPPER" {
            cargo.env_remove(&key);
        }
    }
    let out = cargo
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "native build failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let exe = target.join("release/tsp");
    if exe.exists() {
        Ok(exe)
    } else {
        Err(format!("{} missing after the build", exe.display()))
    }
}

/// Runs `count` native `tsp rand <n> <seed>` processes, `WORKERS` at a time; returns the
/// makespan and the stdout of each.
fn native_batch(exe: &Path, n: u32, count: usize) -> (Duration, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            let next = next.clone();
            let exe = exe.to_path_buf();
            std::thread::spawn(move || {
                let mut outs = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return outs;
                    }
                    let out = Command::new(&exe)
                        .args(["rand", &n.to_string(), &i.to_string()])
                        .output()
                        .unwrap();
                    assert!(out.status.success());
                    outs.push((i, String::from_utf8_lossy(&out.stdout).into_owned()));
                }
            })
        })
        .collect();
    let mut outs: Vec<(usize, String)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let took = started.elapsed();
    outs.sort();
    (took, outs.into_iter().map(|(_, s)| s).collect())
}

/// The same batch through the whole system; all tasks submitted at once.
async fn e2e_batch(client: &Client, n: u32, count: usize) -> (Duration, Vec<String>) {
    let tasks = (0..count).map(move |i| {
        Task::wasip1("tsp.wasm").args(["rand".to_owned(), n.to_string(), i.to_string()])
    });
    let started = Instant::now();
    let mut results = client.submit_many(tasks, count);
    let mut outs = vec![String::new(); count];
    while let Some((i, r)) = results.next().await {
        let out = r.unwrap();
        assert!(out.success());
        outs[i] = out.stdout_lossy();
    }
    (started.elapsed(), outs)
}

/// The same batch on the wasm executor alone, in-process (`WORKERS` at a time).
async fn exec_batch(executor: &Arc<WasmtimeExecutor>, n: u32, count: usize) -> Duration {
    let binary = ResolvedFile::from_bytes(Bytes::from_static(wasimoff_wasi_apps::TSP));
    let started = Instant::now();
    let handles: Vec<_> = (0..count)
        .map(|i| {
            let executor = executor.clone();
            let task = ExecTask::new(
                format!("tsp{i}"),
                binary.clone(),
                vec![
                    "tsp.wasm".into(),
                    "rand".into(),
                    n.to_string(),
                    i.to_string(),
                ],
            );
            tokio::spawn(async move { executor.execute(task, CancellationToken::new()).await })
        })
        .collect();
    for h in handles {
        assert_eq!(
            h.await.unwrap().unwrap().termination,
            Termination::Exited(0)
        );
    }
    started.elapsed()
}

async fn compute(quick: bool) {
    let (batches, repeats): (&[(u32, usize)], usize) = if quick {
        (&[(10, 8), (11, 4)], 1)
    } else {
        (&[(10, 40), (11, 16)], 3)
    };
    println!(
        "\n## 2. compute task (tsp): batch makespan, best of {repeats}; baseline: native `tsp`, \
         {WORKERS} processes at a time"
    );
    let native = native_tsp();
    if let Err(reason) = &native {
        println!("native baseline: skipped ({reason})");
    }
    let broker = BrokerProc::start();
    let peer = Peer::start(&broker.url).await;
    let client = peer.client.clone();
    client
        .upload(wasimoff_wasi_apps::TSP, Some("tsp.wasm"))
        .await
        .unwrap();
    // Warm-up: the provider compiles the module once.
    e2e_batch(&client, 8, WORKERS * 2).await;
    let executor = Arc::new(
        WasmtimeExecutor::new(WasmtimeConfig {
            workers: WORKERS,
            ..WasmtimeConfig::default()
        })
        .unwrap(),
    );
    exec_batch(&executor, 8, WORKERS).await;
    for &(n, count) in batches {
        let mut e2e = Duration::MAX;
        let mut inproc = Duration::MAX;
        let mut nat = Duration::MAX;
        for _ in 0..repeats {
            let (t, wasm_out) = e2e_batch(&client, n, count).await;
            e2e = e2e.min(t);
            inproc = inproc.min(exec_batch(&executor, n, count).await);
            if let Ok(exe) = &native {
                let exe = exe.clone();
                let (t, native_out) =
                    tokio::task::spawn_blocking(move || native_batch(&exe, n, count))
                        .await
                        .unwrap();
                assert_eq!(wasm_out, native_out, "wasm and native tsp disagree");
                nat = nat.min(t);
            }
        }
        print!(
            "tsp rand {n} x {count}: end to end {:>9}, wasm executor in-process {:>9}",
            us(e2e),
            us(inproc)
        );
        if native.is_ok() {
            let ratio = e2e.as_secs_f64() / nat.as_secs_f64();
            println!(
                ", native {:>9}\n  ratio end-to-end / native {ratio:.2}x (target <= 1.3x: {}); \
                 wasm alone / native {:.2}x; offloading / wasm alone {:.2}x",
                us(nat),
                met(ratio <= 1.3),
                inproc.as_secs_f64() / nat.as_secs_f64(),
                e2e.as_secs_f64() / inproc.as_secs_f64()
            );
        } else {
            println!(
                "\n  offloading / wasm alone {:.2}x",
                e2e.as_secs_f64() / inproc.as_secs_f64()
            );
        }
    }
    peer.stop().await;
    drop(broker);
}

// ---------------------------------------------------------------------------------------------
// Scenario 3: large inputs.

/// A pseudo-random byte generator (xorshift64*), so zip entries do not compress.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A rootfs zip of about `size` bytes: 1 MiB stored entries of noise.
fn big_rootfs(size: usize) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::with_capacity(size + 65536)));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..size.div_ceil(1 << 20) {
        zip.start_file(format!("data/blob-{i:03}.bin"), options)
            .unwrap();
        zip.write_all(&noise(1 << 20, i as u64 + 1)).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn leb(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A valid WASI command module of about `size` bytes: an exported memory with one active data
/// segment of `size` bytes of noise and a `_start` that returns at once.
fn big_module(size: usize) -> Vec<u8> {
    big_module_seeded(size, 42)
}

/// [`big_module`] with noise from this seed, so that two modules differ.
fn big_module_seeded(size: usize, seed: u64) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    let section = |id: u8, body: &[u8], m: &mut Vec<u8>| {
        m.push(id);
        leb(body.len(), m);
        m.extend_from_slice(body);
    };
    section(1, &[1, 0x60, 0, 0], &mut m); // type: () -> ()
    section(3, &[1, 0], &mut m); // function 0 has type 0
    let mut memory = vec![1, 0];
    leb(size.div_ceil(65536) + 1, &mut memory);
    section(5, &memory, &mut m);
    let mut exports = vec![2, 6];
    exports.extend_from_slice(b"_start");
    exports.extend_from_slice(&[0, 0, 6]);
    exports.extend_from_slice(b"memory");
    exports.extend_from_slice(&[2, 0]);
    section(7, &exports, &mut m);
    section(10, &[1, 2, 0, 0x0b], &mut m); // code: no locals, `end`
    let mut data = vec![1, 0, 0x41, 0, 0x0b]; // one active segment at i32.const 0
    leb(size, &mut data);
    data.extend_from_slice(&noise(size, seed));
    section(11, &data, &mut m);
    m
}

async fn large(quick: bool) {
    let (zip_size, module_size) = if quick {
        (5 << 20, 2 << 20)
    } else {
        (50 << 20, 20 << 20)
    };
    println!(
        "\n## 3. large inputs: upload (HTTP), first task (fetch + unpack/compile), second task \
         (cache hit); a fresh broker child per file"
    );
    let cases = [
        (
            "rootfs zip",
            big_rootfs(zip_size),
            Task::wasip1("hello.wasm")
                .arg("file:/data/blob-000.bin")
                .rootfs("big-rootfs.zip"),
            "big-rootfs.zip",
        ),
        (
            "module",
            big_module(module_size),
            Task::wasip1("big.wasm"),
            "big.wasm",
        ),
    ];
    for (label, bytes, task, alias) in cases {
        let size = bytes.len() as u64;
        let mut broker = BrokerProc::start();
        let peer = Peer::start(&broker.url).await;
        let client = peer.client.clone();
        client
            .upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm"))
            .await
            .unwrap();
        // A hello task first, so connections and the hello module are warm.
        assert!(
            client
                .run(Task::wasip1("hello.wasm"))
                .await
                .unwrap()
                .success()
        );
        let (broker_rss0, _) = broker.mem();
        let (self_rss0, _) = mem();
        let t = Instant::now();
        client.upload(bytes, Some(alias)).await.unwrap();
        let upload = t.elapsed();
        let (broker_rss1, _) = broker.mem();
        let t = Instant::now();
        let first = client.run(task.clone()).await.unwrap();
        let first_time = t.elapsed();
        assert!(first.success(), "{label}: {}", first.stderr_lossy());
        let t = Instant::now();
        let second = client.run(task.clone()).await.unwrap();
        let second_time = t.elapsed();
        assert!(second.success());
        let (broker_rss2, broker_hwm) = broker.mem();
        let (_, self_hwm) = mem();
        println!(
            "{label} {:.1} MiB: upload {:>9} ({:.0} MiB/s), first task {:>9}, second task {:>9} \
             ({:.1}x faster)",
            mib(size),
            us(upload),
            mib(size) / upload.as_secs_f64(),
            us(first_time),
            us(second_time),
            first_time.as_secs_f64() / second_time.as_secs_f64()
        );
        println!(
            "  broker process: peak RSS +{:.1} MiB = {:.2}x the file; held after upload +{:.1} \
             MiB ({:.2}x), after the tasks +{:.1} MiB",
            mib(broker_hwm.saturating_sub(broker_rss0)),
            broker_hwm.saturating_sub(broker_rss0) as f64 / size as f64,
            mib(broker_rss1.saturating_sub(broker_rss0)),
            broker_rss1.saturating_sub(broker_rss0) as f64 / size as f64,
            mib(broker_rss2.saturating_sub(broker_rss0)),
        );
        println!(
            "  bench process (provider + client, and the file built here): peak RSS +{:.1} MiB \
             over the RSS before the upload ({:.2}x the file; a lower bound if an earlier \
             scenario set the peak)",
            mib(self_hwm.saturating_sub(self_rss0)),
            self_hwm.saturating_sub(self_rss0) as f64 / size as f64
        );
        peer.stop().await;
        drop(broker);
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 4: open-loop load.

async fn open_loop(quick: bool) {
    let iterations = "5000"; // about 1 ms of wasm per task (docs/workloads.md)
    let (rates, window, n_seq): (&[u64], Duration, usize) = if quick {
        (&[200, 1000], Duration::from_millis(700), 50)
    } else {
        (
            &[100, 250, 500, 750, 1000, 1250, 1500],
            Duration::from_secs(2),
            300,
        )
    };
    println!(
        "\n## 4. open-loop load: `load -i {iterations}` (~1 ms of wasm), evenly spaced \
         arrival rate over one client WebSocket, {:.1} s per rate",
        window.as_secs_f64()
    );
    let broker = BrokerProc::start();
    let peer = Peer::start(&broker.url).await;
    let client = peer.client.clone();
    client
        .upload(wasimoff_wasi_apps::LOAD, Some("load.wasm"))
        .await
        .unwrap();
    let task = Task::wasip1("load.wasm").args(["-i", iterations]);
    let session = client.session().await.unwrap();
    let mut seq = Vec::new();
    for i in 0..n_seq + 10 {
        let t = Instant::now();
        assert!(session.run(task.clone()).await.unwrap().success());
        if i >= 10 {
            seq.push(t.elapsed());
        }
    }
    seq.sort();
    let base = pct(&seq, 0.5);
    println!(
        "baseline, one task at a time: p50 {} p99 {} (capacity ~{:.0} tasks/s with {WORKERS} \
         workers)",
        us(base),
        us(pct(&seq, 0.99)),
        WORKERS as f64 / base.as_secs_f64()
    );
    println!(
        "{:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "offered/s", "achieved/s", "p50", "p90", "p99", "max", "p50/base"
    );
    for &rate in rates {
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let count = (window.as_secs_f64() * rate as f64) as usize;
        let start = tokio::time::Instant::now();
        let mut handles = Vec::with_capacity(count);
        for k in 0..count {
            let due = start + period * k as u32;
            tokio::time::sleep_until(due).await;
            let session = session.clone();
            let task = task.clone();
            handles.push(tokio::spawn(async move {
                let r = match session.run(task).await {
                    Ok(o) if o.success() => Ok(()),
                    Ok(o) => Err(format!("exit {}", o.status)),
                    Err(e) => Err(e.to_string()),
                };
                (r, due.elapsed(), tokio::time::Instant::now())
            }));
        }
        let mut lat = Vec::with_capacity(count);
        let mut errors = 0;
        let mut first_error = None;
        let mut last = start;
        for h in handles {
            let (r, l, end) = h.await.unwrap();
            if let Err(e) = r {
                errors += 1;
                first_error.get_or_insert(e);
            } else {
                lat.push(l);
            }
            last = last.max(end);
        }
        lat.sort();
        let achieved = lat.len() as f64 / (last - start).as_secs_f64();
        let p50 = pct(&lat, 0.5);
        println!(
            "{rate:>8} {achieved:>10.0} {:>10} {:>10} {:>10} {:>10} {:>7.1}x{}",
            us(p50),
            us(pct(&lat, 0.9)),
            us(pct(&lat, 0.99)),
            us(pct(&lat, 1.0)),
            p50.as_secs_f64() / base.as_secs_f64(),
            if errors > 0 {
                format!(
                    " ({errors} failed, first: {})",
                    first_error.unwrap_or_default()
                )
            } else {
                String::new()
            }
        );
        if errors > 0 {
            println!("stopping at the first rate with failures");
            break;
        }
        // Let a backlog drain completely before the next rate.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    session.close().await;
    peer.stop().await;
    drop(broker);
}

// ---------------------------------------------------------------------------------------------
// Scenario 5: hostile load (issue 13).

const MIB: usize = 1 << 20;

async fn hostile(quick: bool) {
    println!("\n## 5. hostile load (issue 13)");
    if std::env::var("SKIP_MIX").is_err() {
        hostile_mix(quick).await;
    }
    stdin_flood(quick).await;
    socket_buffers().await;
    huge_args(quick).await;
    healthz_during_uploads(quick).await;
}

/// What `hello.wasm <tag>` prints.
fn hello_output(tag: &str) -> String {
    format!("Hello, wasimoff! This is the hello guest.\nargs = [\"hello.wasm\", \"{tag}\"]\n")
}

/// The hostile task number `k`: a sleeper or a loop far past its deadline, or a flood past
/// the provider's output cap.
/// Without `sleepers` (the provider cannot stop them), a loop takes the sleeper's turn.
fn hostile_task(k: usize, deadline: Duration, sleepers: bool) -> Task {
    match k % 3 {
        0 if sleepers => Task::wasip1("sleep.wasm").arg("600000").timeout(deadline),
        0 | 1 => Task::wasip1("loop.wasm").timeout(deadline),
        _ => Task::wasip1("flood.wasm").arg("4M"),
    }
}

/// Whether the native provider stops a guest sleeping in `poll_oneoff` at its time limit: a
/// provider of its own (its worker may stay taken) runs `sleep 2000` with a 300 ms deadline
/// (after a first run has compiled the module), then has to report its worker free within a
/// second of the answer.
async fn sleepers_stop(url: &str) -> bool {
    let probe = Peer::start_with(
        url,
        WasmtimeConfig {
            workers: 1,
            ..WasmtimeConfig::default()
        },
    )
    .await;
    let client = &probe.client;
    client
        .upload(wasimoff_wasi_apps::SLEEP, Some("sleep.wasm"))
        .await
        .unwrap();
    let warm = client.run(Task::wasip1("sleep.wasm").arg("0")).await;
    assert!(warm.is_ok_and(|o| o.success()));
    let started = probe.provider.status().tasks_started;
    let answer = client
        .run(
            Task::wasip1("sleep.wasm")
                .arg("2000")
                .timeout(Duration::from_millis(300)),
        )
        .await;
    assert!(
        answer.is_err(),
        "a 3 s sleep ended within 300 ms: {answer:?}"
    );
    assert_eq!(
        probe.provider.status().tasks_started,
        started + 1,
        "the sleeper never started"
    );
    let t = Instant::now();
    let mut free = false;
    while t.elapsed() < Duration::from_secs(1) {
        if probe.provider.status().busy == 0 {
            free = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    probe.stop().await;
    free
}

/// How a batch went: its wall time, good tasks right, and every other outcome by kind.
#[derive(Default)]
struct Mix {
    took: Duration,
    good_ok: usize,
    outcomes: std::collections::BTreeMap<String, usize>,
}

impl Mix {
    fn describe(&self) -> String {
        self.outcomes
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `good` hello tasks (each with its own argument, output checked) and, if `hostile_every` is
/// set, one hostile task after every `hostile_every - 1` good ones; or only the hostile ones.
async fn mix_batch(
    client: &Client,
    good: usize,
    hostile_every: Option<usize>,
    only_hostile: bool,
    deadline: Duration,
    sleepers: bool,
) -> Mix {
    let every = hostile_every.unwrap_or(usize::MAX);
    let total = match hostile_every {
        Some(e) => good * e / (e - 1),
        None => good,
    };
    let is_hostile = move |i: usize| i % every == every - 1;
    let tasks = (0..total)
        .filter(move |&i| !only_hostile || is_hostile(i))
        .map(move |i| {
            if is_hostile(i) {
                hostile_task(i / every, deadline, sleepers).reference(format!("h{i}"))
            } else {
                Task::wasip1("hello.wasm")
                    .arg(format!("g{i}"))
                    .reference(format!("g{i}"))
            }
        });
    let started = Instant::now();
    let mut results = client.submit_many(tasks, 64);
    let mut mix = Mix::default();
    while let Some((_, result)) = results.next().await {
        let kind = match result {
            Ok(out) => {
                let reference = out.reference.clone().unwrap_or_default();
                if reference.starts_with('g') {
                    if out.success() && out.stdout_lossy() == hello_output(&reference) {
                        mix.good_ok += 1;
                        continue;
                    }
                    format!("good task wrong ({})", out.stderr_lossy().trim())
                } else if out.truncated().is_some() {
                    "floods cut at the cap".to_owned()
                } else {
                    format!("hostile ran to an end (status {})", out.status)
                }
            }
            Err(wasimoff_client::Error::DeadlineExceeded(_)) => "deadline_exceeded".to_owned(),
            Err(wasimoff_client::Error::Task(failure))
                if failure.kind == wasimoff_client::FailureKind::Timeout =>
            {
                "timeout results".to_owned()
            }
            Err(e) => format!("error {}", e.code()),
        };
        *mix.outcomes.entry(kind).or_default() += 1;
    }
    mix.took = started.elapsed();
    mix
}

async fn hostile_mix(quick: bool) {
    let good = if quick { 300 } else { 10_000 };
    let deadline = Duration::from_millis(10);
    let broker = BrokerProc::start();
    let sleepers = sleepers_stop(&broker.url).await;
    println!(
        "hello x {good}, submit_many, 64 in flight; hostile: every 10th task (sleep 600 s or \
         loop, QoS deadline {} ms; or flood 4 MiB against a 1 MiB output cap)",
        deadline.as_millis()
    );
    if !sleepers {
        println!(
            "  sleepers left out, loops instead: the provider does not stop a guest sleeping in \
             poll_oneoff at its time limit (its worker stays taken)"
        );
    }
    let peer = Peer::start_with(
        &broker.url,
        WasmtimeConfig {
            workers: WORKERS,
            default_max_output: MIB,
            ..WasmtimeConfig::default()
        },
    )
    .await;
    let client = peer.client.clone();
    for (bytes, name) in [
        (wasimoff_wasi_apps::HELLO, "hello.wasm"),
        (wasimoff_wasi_apps::SLEEP, "sleep.wasm"),
        (wasimoff_wasi_apps::LOOP, "loop.wasm"),
        (wasimoff_wasi_apps::FLOOD, "flood.wasm"),
    ] {
        client.upload(bytes, Some(name)).await.unwrap();
    }
    // Warm-up: compile every module, open the connections.
    mix_batch(&client, 200, Some(10), false, deadline, sleepers).await;
    let alone = mix_batch(&client, good, None, false, deadline, sleepers).await;
    let hostile_alone = mix_batch(&client, good, Some(10), true, deadline, sleepers).await;
    let mixed = mix_batch(&client, good, Some(10), false, deadline, sleepers).await;
    let after = mix_batch(&client, good, None, false, deadline, sleepers).await;
    let rate = |m: &Mix| m.good_ok as f64 / m.took.as_secs_f64();
    println!(
        "  good tasks alone:              {:>7.0} tasks/s ({}/{good} right in {})",
        rate(&alone),
        alone.good_ok,
        us(alone.took)
    );
    println!(
        "  hostile tasks alone:           {:>9} for {} ({})",
        us(hostile_alone.took),
        hostile_alone.outcomes.values().sum::<usize>(),
        hostile_alone.describe()
    );
    println!(
        "  good tasks with 10 % hostile:  {:>7.0} tasks/s ({}/{good} right in {}; hostile: {}) \
         = {:.2}x alone; mixed time / (good alone + hostile alone) {:.2}",
        rate(&mixed),
        mixed.good_ok,
        us(mixed.took),
        mixed.describe(),
        rate(&mixed) / rate(&alone),
        mixed.took.as_secs_f64() / (alone.took + hostile_alone.took).as_secs_f64()
    );
    println!(
        "  good tasks alone, afterwards:  {:>7.0} tasks/s ({}/{good} right) = {:.2}x before",
        rate(&after),
        after.good_ok,
        rate(&after) / rate(&alone)
    );
    for (label, m) in [("alone", &alone), ("mixed", &mixed), ("afterwards", &after)] {
        if m.good_ok != good {
            println!(
                "  PROBLEM: {label}: good tasks not all right: {}",
                m.describe()
            );
        }
    }
    peer.stop().await;
    drop(broker);
}

/// The broker's `wasimoff_tasks_held_bytes`.
async fn held_bytes(http: &reqwest::Client, url: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("wasimoff_tasks_held_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `n` clients at once, each submitting one task with 8 MiB of stdin while no provider is
/// connected: peak broker RSS with the default byte budget and with 256 MiB; then the clients
/// leave and the broker should give the memory back.
async fn stdin_flood(quick: bool) {
    let n = if quick { 10 } else { 100 };
    let stdin = 8 * MIB;
    println!(
        "{n} clients at once, each one task with {} MiB of stdin, no provider connected \
         (Connect, protobuf); broker peak RSS over its idle RSS",
        stdin / MIB
    );
    let mut request = Task::wasip1("hello.wasm").arg("flood").into_request();
    request.params.as_mut().unwrap().stdin = Some(Bytes::from(vec![0x61; stdin]));
    let body = Bytes::from(prost::Message::encode_to_vec(&request));
    let cases: &[(Option<usize>, bool)] = if quick {
        &[(Some(256 * MIB), true), (Some(256 * MIB), false)]
    } else {
        &[
            (None, true),
            (Some(256 * MIB), true),
            (None, false),
            (Some(256 * MIB), false),
        ]
    };
    for &(budget, release) in cases {
        let mut options = budget
            .map(|b| vec!["--max-queue-bytes".to_owned(), b.to_string()])
            .unwrap_or_default();
        if !release {
            options.push("--malloc-default".to_owned());
        }
        let label = budget.map_or_else(
            || {
                format!(
                    "default budget ({} MiB)",
                    Limits::default().max_queue_bytes / MIB
                )
            },
            |b| format!("--max-queue-bytes {} MiB", b / MIB),
        );
        let label = if release {
            label
        } else {
            format!("{label}, glibc's malloc as it comes")
        };
        let budget = budget.unwrap_or(Limits::default().max_queue_bytes);
        let mut broker = BrokerProc::start_with(&options);
        let client = Client::new(&broker.url).unwrap();
        client
            .upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm"))
            .await
            .unwrap();
        let (rss0, _) = broker.mem();
        let http = reqwest::Client::new();
        let answered = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let clients: Vec<_> = (0..n)
            .map(|_| {
                let request = http
                    .post(format!(
                        "{}/api/client/wasimoff.v1.Tasks/RunWasip1",
                        broker.url
                    ))
                    .header("content-type", "application/proto")
                    .body(body.clone());
                let answered = answered.clone();
                tokio::spawn(async move {
                    let status = request.send().await.map(|r| r.status().as_u16());
                    answered.fetch_add(1, Ordering::Relaxed);
                    status
                })
            })
            .collect();
        // Every request is either queued or answered (429).
        let mut queued = 0;
        loop {
            queued = client.status().await.map_or(queued, |s| s.queued);
            if queued as usize + answered.load(Ordering::Relaxed) >= n {
                break;
            }
            if started.elapsed() > Duration::from_secs(25) {
                println!("  (gave up waiting: {queued} queued)");
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let settled = started.elapsed();
        let (rss1, hwm) = broker.mem();
        let held = held_bytes(&http, &broker.url).await;
        let refused = answered.load(Ordering::Relaxed);
        // The clients leave.
        for c in &clients {
            c.abort();
        }
        for c in clients {
            let _ = c.await;
        }
        let left = Instant::now();
        let mut held_after = held;
        while held_after > 0 && left.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            held_after = held_bytes(&http, &broker.url).await;
        }
        let freed_in = left.elapsed();
        let (rss2, _) = broker.mem();
        let peak = hwm.saturating_sub(rss0);
        println!(
            "  {label}: {queued} queued ({:.0} MiB held), {refused} refused (429), settled in {}; \
             peak +{:.0} MiB (target: under budget + 64 MiB: {}), +{:.0} MiB over the held \
             bytes; RSS with the tasks queued +{:.0} MiB",
            mib(held),
            us(settled),
            mib(peak),
            met((peak as usize) < budget + 64 * MIB),
            mib(peak.saturating_sub(held)),
            mib(rss1.saturating_sub(rss0)),
        );
        println!(
            "    clients left: held bytes {} after {}; RSS +{:.0} MiB over idle",
            held_after,
            us(freed_in),
            mib(rss2.saturating_sub(rss0))
        );
        drop(broker);
    }
}

/// Large tasks through one provider, one at a time: what the broker still holds once they are
/// answered (its socket to the provider keeps a write buffer as large as the largest frame).
async fn socket_buffers() {
    let mut broker = BrokerProc::start();
    let peer = Peer::start(&broker.url).await;
    let client = peer.client.clone();
    client
        .upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm"))
        .await
        .unwrap();
    assert!(
        client
            .run(Task::wasip1("hello.wasm"))
            .await
            .unwrap()
            .success()
    );
    let (rss0, _) = broker.mem();
    print!("tasks with large stdin through one provider, one at a time; broker RSS once answered:");
    for stdin in [MIB, 4 * MIB, 8 * MIB, 16 * MIB - 4096] {
        for _ in 0..3 {
            let out = client
                .run(Task::wasip1("hello.wasm").stdin(vec![0x62; stdin]))
                .await
                .unwrap();
            assert!(out.success());
        }
        let (rss, _) = broker.mem();
        print!(
            " {:.0} MiB -> +{:.1} MiB;",
            mib(stdin as u64),
            mib(rss.saturating_sub(rss0))
        );
    }
    println!();
    peer.stop().await;
    let (rss, _) = broker.mem();
    println!(
        "  after the provider left: +{:.1} MiB",
        mib(rss.saturating_sub(rss0))
    );
    drop(broker);
}

/// One request with 8,000,000 empty arguments (protobuf and JSON), each on a fresh broker:
/// refused before decoding, so the broker's peak stays near the body's size.
async fn huge_args(quick: bool) {
    let count = if quick { 800_000 } else { 8_000_000 };
    let mut request = Task::wasip1("hello.wasm").into_request();
    request.params.as_mut().unwrap().args = vec![String::new(); count];
    let proto = prost::Message::encode_to_vec(&request);
    let json = serde_json::to_vec(&request).unwrap();
    drop(request);
    println!(
        "one request with {count} empty arguments (decoded: {:.0} MiB of `String`s), a fresh \
         broker each",
        mib((count * std::mem::size_of::<String>()) as u64)
    );
    for (codec, content_type, body) in [
        ("protobuf", "application/proto", proto),
        ("JSON", "application/json", json),
    ] {
        let len = body.len() as u64;
        let mut broker = BrokerProc::start();
        let (rss0, _) = broker.mem();
        let t = Instant::now();
        let response = reqwest::Client::new()
            .post(format!(
                "{}/api/client/wasimoff.v1.Tasks/RunWasip1",
                broker.url
            ))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        let took = t.elapsed();
        let (_, hwm) = broker.mem();
        let peak = hwm.saturating_sub(rss0);
        println!(
            "  {codec:<8} body {:.1} MiB: {status} in {} ({}); broker peak +{:.1} MiB = {:.2}x \
             the body",
            mib(len),
            us(took),
            text.chars().take(90).collect::<String>().trim(),
            mib(peak),
            peak as f64 / len as f64
        );
        drop(broker);
    }
}

/// `/healthz` one request after another (keep-alive), until `until` is done.
async fn healthz_while(
    http: &reqwest::Client,
    url: &str,
    mut until: impl FnMut(usize) -> bool,
) -> Vec<Duration> {
    let mut lat = Vec::new();
    while !until(lat.len()) {
        let t = Instant::now();
        let response = http.get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        lat.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    lat.sort();
    lat
}

/// `/healthz` latency while two large uploads run at once, vs idle; memory and directory
/// stores.
async fn healthz_during_uploads(quick: bool) {
    let size = if quick { 19_000_000 } else { 190_000_000 };
    println!(
        "/healthz latency (one request at a time, 2 ms apart) while two {} MB modules upload at \
         once, vs idle",
        size / 1_000_000
    );
    let modules = [
        Bytes::from(big_module_seeded(size, 7)),
        Bytes::from(big_module_seeded(size, 8)),
    ];
    for store in ["memory", "directory"] {
        let dir = tempfile::tempdir().unwrap();
        let options = match store {
            "memory" => vec![],
            _ => vec![
                "--data-dir".to_owned(),
                dir.path().to_string_lossy().into_owned(),
            ],
        };
        let mut broker = BrokerProc::start_with(&options);
        let (rss0, _) = broker.mem();
        let http = reqwest::Client::new();
        let idle = healthz_while(&http, &broker.url, |n| n >= 200).await;
        let started = Instant::now();
        let uploads: Vec<_> = modules
            .iter()
            .map(|m| {
                let client = Client::new(&broker.url).unwrap();
                let m = m.clone();
                tokio::spawn(async move { client.upload(m, None).await.map(|_| ()) })
            })
            .collect();
        let busy = healthz_while(&http, &broker.url, |_| {
            uploads.iter().all(tokio::task::JoinHandle::is_finished)
        })
        .await;
        let took = started.elapsed();
        for u in uploads {
            u.await.unwrap().unwrap();
        }
        let (_, hwm) = broker.mem();
        let max = pct(&busy, 1.0);
        println!(
            "  {store:<9} store: idle p50 {} max {}; during the uploads ({} requests, uploads \
             done in {}) p50 {} p99 {} max {} (target < 50 ms: {}); broker peak RSS +{:.0} MiB = \
             {:.2}x the two files",
            us(pct(&idle, 0.5)),
            us(pct(&idle, 1.0)),
            busy.len(),
            us(took),
            us(pct(&busy, 0.5)),
            us(pct(&busy, 0.99)),
            us(max),
            met(max < Duration::from_millis(50)),
            mib(hwm.saturating_sub(rss0)),
            hwm.saturating_sub(rss0) as f64 / (2 * size) as f64
        );
        drop(broker);
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 6: durable tasks.

/// `hello` tasks by id through `run_all`: (ok, elapsed).
async fn by_id_batch(client: &Client, n: usize, pending: usize) -> (usize, Duration) {
    let tasks = (0..n).map(|_| Task::wasip1("hello.wasm").arg("bench"));
    let started = Instant::now();
    let mut results = client.run_all(tasks, pending);
    let mut ok = 0;
    while let Some((_, r)) = results.next().await {
        if r.is_ok_and(|o| o.success()) {
            ok += 1;
        }
    }
    (ok, started.elapsed())
}

/// `one` timed `n` times after 20 untimed warm-up runs; sorted.
async fn latencies<F, Fut>(n: usize, mut one: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        one().await;
        if i >= 20 {
            lat.push(t.elapsed());
        }
    }
    lat.sort();
    lat
}

/// One `hello` at a time by id (submit, wait, fetch), sorted latencies.
async fn by_id_latency(client: &Client, n: usize) -> Vec<Duration> {
    latencies(n, || async move {
        let id = client
            .submit(Task::wasip1("hello.wasm").arg("bench"))
            .await
            .unwrap();
        let ids = [id];
        while client
            .wait_any(&ids, Duration::from_secs(30))
            .await
            .unwrap()
            .done
            .is_empty()
        {}
        let out = client.result(&ids[0], Duration::ZERO).await.unwrap();
        assert!(out.unwrap().success());
    })
    .await
}

async fn durable(quick: bool) {
    let (n_tasks, n_seq, pending) = if quick {
        (2_000, 100, 256)
    } else {
        (20_000, 500, 256)
    };
    println!(
        "\n## 6. durable tasks: by id, in memory vs journaled (fsync'd); restart after SIGKILL"
    );
    let nats = wasimoff_wasi_apps::nats::NatsServer::start();
    let mut rows = Vec::new();
    let mut costs = Vec::new();
    for (label, state, brokers) in [
        ("by id, tasks in memory", State::Memory, 1),
        ("by id, journaled (redb)", State::Journal, 1),
        ("by id, JetStream, 1 broker", State::Nats, 1),
        ("by id, JetStream, 3 brokers", State::Nats, 3),
    ] {
        // Each row on a JetStream of its own: no stream left over from the row before.
        let nats = match state {
            State::Nats => Some(wasimoff_wasi_apps::nats::NatsServer::start()),
            _ => None,
        };
        let dirs: Vec<_> = (0..brokers).map(|_| tempfile::tempdir().unwrap()).collect();
        let procs: Vec<BrokerProc> = dirs
            .iter()
            .map(|dir| {
                let mut options = vec!["--data-dir".into(), dir.path().display().to_string()];
                match (&state, &nats) {
                    (State::Memory, _) => options.push("--volatile-tasks".into()),
                    (State::Nats, Some(nats)) => {
                        options.extend(["--nats".into(), nats.url.clone()])
                    }
                    _ => {}
                }
                BrokerProc::start_with(&options)
            })
            .collect();
        // One provider per broker; the client knows them all and submits to each in turn.
        let mut peers = Vec::new();
        for proc in &procs {
            peers.push(Peer::start(&proc.url).await);
        }
        let mut builder = Client::builder(&procs[0].url).task_timeout(Duration::from_secs(120));
        for proc in &procs[1..] {
            builder = builder.also_broker(&proc.url);
        }
        let client = builder.build().unwrap();
        for peer in &peers {
            peer.client
                .upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm"))
                .await
                .unwrap();
        }
        by_id_batch(&client, n_tasks / 10, pending).await; // warm-up
        // CPU time of each process during the run: where a task's cost goes.
        let pids = |nats: &Option<wasimoff_wasi_apps::nats::NatsServer>| {
            let brokers: Vec<u32> = procs.iter().map(|p| p.child.id()).collect();
            (
                brokers,
                nats.as_ref().map(wasimoff_wasi_apps::nats::NatsServer::pid),
            )
        };
        let (broker_pids, nats_pid) = pids(&nats);
        let cpu = || {
            let brokers: f64 = broker_pids.iter().map(|p| cpu_seconds(*p)).sum();
            let nats = nats_pid.map_or(0.0, cpu_seconds);
            (brokers, nats, cpu_seconds(std::process::id()))
        };
        let before = cpu();
        let (ok, took) = by_id_batch(&client, n_tasks, pending).await;
        let after = cpu();
        let rate = ok as f64 / took.as_secs_f64();
        let per_k = |a: f64, b: f64| (a - b) * 1000.0 / ok.max(1) as f64;
        let cost = (
            per_k(after.0, before.0),
            per_k(after.1, before.1),
            per_k(after.2, before.2),
        );
        let lat = by_id_latency(&client, n_seq).await;
        // The socket of the first broker (and its provider), as the baseline of this run.
        let tasks = (0..n_tasks).map(|_| Task::wasip1("hello.wasm").arg("bench"));
        let started = Instant::now();
        let socket_ok = peers[0]
            .client
            .submit_many(tasks, 64)
            .filter(|(_, r)| std::future::ready(r.as_ref().is_ok_and(Output::success)))
            .count()
            .await;
        let socket = socket_ok as f64 / started.elapsed().as_secs_f64();
        rows.push((label, ok, rate, lat, socket));
        costs.push((label, cost));
        for peer in peers {
            peer.stop().await;
        }
        drop(procs);
    }
    for (label, ok, rate, lat, socket) in &rows {
        println!(
            "{label:<26} {rate:>7.0} tasks/s ({ok}/{n_tasks} ok, {pending} pending at most; \
             {:.0}% of the client WebSocket's {socket:.0}/s in the same broker); one at a time: \
             p50 {} p99 {}",
            rate / socket * 100.0,
            us(pct(lat, 0.5)),
            us(pct(lat, 0.99)),
        );
    }
    if let [
        (_, _, memory, memory_lat, _),
        (_, _, journal, journal_lat, _),
        (_, _, one, one_lat, _),
        (_, _, three, three_lat, _),
    ] = rows.as_slice()
    {
        let p50 = |lat: &Vec<Duration>| pct(lat, 0.5).as_secs_f64();
        println!(
            "against in memory: journaled throughput {:.2}x, p50 latency {:.2}x; JetStream \
             (1 broker) throughput {:.2}x, p50 latency {:.2}x",
            journal / memory,
            p50(journal_lat) / p50(memory_lat),
            one / memory,
            p50(one_lat) / p50(memory_lat),
        );
        println!(
            "JetStream, 3 brokers against 1: throughput {:.2}x, p50 latency {:.2}x (all on the \
             same {} cores: brokers, providers, nats-server and the client)",
            three / one,
            p50(three_lat) / p50(one_lat),
            std::thread::available_parallelism().map_or(0, usize::from),
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    for (label, (brokers, nats, rest)) in &costs {
        let total = brokers + nats + rest;
        println!(
            "{label:<26} CPU per 1,000 tasks: brokers {brokers:.3} s, nats-server {nats:.3} s, \
             client + providers {rest:.3} s; {total:.3} s in all, so {cores:.0} cores bound it \
             at {:.0} tasks/s",
            cores * 1000.0 / total
        );
    }
    restart_after_kill(quick).await;
    takeover_after_kill(&nats).await;
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat` (0 where
/// there is no such file).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // After the command name in parentheses: fields 3.., of which utime and stime are the
    // 14th and 15th (in clock ticks, 100 per second on Linux).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Where a row of scenario 6 keeps its tasks by id.
enum State {
    Memory,
    Journal,
    Nats,
}

/// Brokers on JetStream: the time from a broker's SIGKILL until the tasks it was running run
/// at another broker (its ack wait, then the other broker's next pull).
async fn takeover_after_kill(nats: &wasimoff_wasi_apps::nats::NatsServer) {
    const ACK_WAIT: u64 = 5;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |dir: &tempfile::TempDir| {
        BrokerProc::start_with(&[
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--nats".into(),
            nats.url.clone(),
            "--nats-ack-wait".into(),
            ACK_WAIT.to_string(),
        ])
    };
    let mut doomed = start(&dirs[0]);
    let heir = start(&dirs[1]);
    let peer = Peer::start(&doomed.url).await;
    let client = peer.client.clone();
    let ref_ = client
        .upload(wasimoff_wasi_apps::HELLO, None)
        .await
        .unwrap();
    // As many sleepers as the doomed broker's provider takes: all of them run there.
    let slots = usize::try_from(client.status().await.unwrap().slots()).unwrap();
    for _ in 0..slots {
        client
            .submit(Task::wasip1(ref_.as_str()).arg("sleep:600000"))
            .await
            .unwrap();
    }
    let running = |url: String, n: usize| async move {
        let client = Client::new(url).unwrap();
        let t = Instant::now();
        loop {
            if let Ok(status) = client.status().await
                && usize::try_from(status.running + status.queued).unwrap_or(0) >= n
            {
                return;
            }
            assert!(t.elapsed() < Duration::from_secs(120), "never running");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    running(doomed.url.clone(), slots).await;
    let heir_peer = Peer::start(&heir.url).await;
    let killed = Instant::now();
    doomed.child.kill().unwrap();
    doomed.child.wait().unwrap();
    doomed.stdin = None;
    running(heir.url.clone(), slots).await;
    println!(
        "JetStream: broker SIGKILLed with {slots} tasks running, all at another broker after {} \
         (ack wait {ACK_WAIT} s)",
        us(killed.elapsed())
    );
    for peer in [peer, heir_peer] {
        peer.provider.shutdown(Duration::ZERO).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), peer.running).await;
    }
}

/// The time from a broker's SIGKILL to its tasks queued again and running again.
async fn restart_after_kill(quick: bool) {
    let n = if quick { 1_000 } else { 10_000 };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let start = |listen: &str| {
        BrokerProc::start_with(&[
            "--data-dir".into(),
            data.clone(),
            "--listen".into(),
            listen.into(),
        ])
    };
    let mut broker = start("127.0.0.1:0");
    let url = broker.url.clone();
    // A provider whose tasks never end by themselves: every slot stays busy, the rest queue.
    let peer = Peer::start(&url).await;
    let client = peer.client.clone();
    client
        .upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm"))
        .await
        .unwrap();
    let ids = futures::stream::iter(0..n)
        .map(|_| {
            let client = client.clone();
            async move {
                client
                    .submit(Task::wasip1("hello.wasm").arg("sleep:600000"))
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(ids.len(), n);
    let status_until = |what: &'static str, check: fn(&wasimoff_client::Status, usize) -> bool| {
        let client = client.clone();
        async move {
            let t = Instant::now();
            loop {
                if let Ok(status) = client.status().await
                    && check(&status, n)
                {
                    return;
                }
                assert!(t.elapsed() < Duration::from_secs(120), "never {what}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    status_until("all held", |s, n| {
        (s.queued + s.running) as usize == n && s.running > 0
    })
    .await;
    let killed = Instant::now();
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    broker.stdin = None;
    let addr = url.trim_start_matches("http://").to_owned();
    let _broker = start(&addr);
    let up = killed.elapsed();
    status_until("all queued again", |s, n| {
        (s.queued + s.running) as usize == n
    })
    .await;
    let queued = killed.elapsed();
    status_until("running again", |s, _| s.running > 0).await;
    let running = killed.elapsed();
    println!(
        "restart after SIGKILL with {n} tasks accepted ({WORKERS} running): broker serving again \
         {}, all {n} queued again {}, the provider running them again {} (its reconnect backoff)",
        us(up),
        us(queued),
        us(running)
    );
    // The sleepers would hold the provider's workers: let it go at once.
    peer.provider.shutdown(Duration::ZERO).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), peer.running).await;
}

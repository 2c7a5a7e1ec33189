//! Benchmark of `WasmtimeExecutor` on the `hello` guest: cold tasks (compile every time),
//! tasks loaded from the disk cache by a fresh executor, warm tasks (memory cache) one at a
//! time and in parallel through the async `Executor` API, and — if a `wasmtime` binary is on
//! `PATH` — spawning the wasmtime CLI per task. Prints tasks/s, per-task time and ratios.
//!
//! ```text
//! cargo bench -p wasimoff-provider --bench executor            # ~30 s
//! cargo bench -p wasimoff-provider --bench executor -- --quick # a few iterations, for CI
//! ```

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasimoff_core::executor::{CancellationToken, ExecTask, Executor, ResolvedFile, Termination};
use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};

fn hello_task(binary: &ResolvedFile, n: usize) -> ExecTask {
    ExecTask::new(
        format!("bench-{n}"),
        binary.clone(),
        vec!["hello.wasm".into(), "bench".into()],
    )
}

/// Runs `count` tasks one after another; returns the mean time per task.
fn sequential(executor: &WasmtimeExecutor, binary: &ResolvedFile, count: usize) -> Duration {
    let cancel = CancellationToken::new();
    let started = Instant::now();
    for n in 0..count {
        let out = executor
            .execute_blocking(hello_task(binary, n), &cancel)
            .unwrap();
        assert_eq!(out.termination, Termination::Exited(0));
    }
    started.elapsed() / count as u32
}

fn report(label: &str, per_task: Duration) {
    println!(
        "{label:<44} {:>10.1} µs/task {:>10.0} tasks/s",
        per_task.as_secs_f64() * 1e6,
        1.0 / per_task.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let (cold_n, warm_n, parallel_n, cli_n) = if quick {
        (3, 200, 400, 3)
    } else {
        (20, 5_000, 20_000, 30)
    };
    let binary = ResolvedFile::from_bytes(Bytes::from_static(wasimoff_wasi_apps::HELLO));
    println!(
        "hello guest: {} bytes; {} cores{}",
        binary.bytes.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if quick { "; --quick" } else { "" }
    );

    // Cold: every task compiles (no memory or disk cache).
    let cold = WasmtimeExecutor::new(WasmtimeConfig {
        memory_cache_bytes: 0,
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let cold_time = sequential(&cold, &binary, cold_n);
    assert_eq!(cold.stats().compiles, cold_n as u64);
    report("cold (compile every task)", cold_time);

    // Disk cache: a fresh executor loads the serialized module.
    let cache = tempfile::tempdir().unwrap();
    let disk_config = WasmtimeConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..WasmtimeConfig::default()
    };
    WasmtimeExecutor::new(disk_config.clone())
        .unwrap()
        .precompile(&binary)
        .unwrap();
    let mut disk_total = Duration::ZERO;
    for _ in 0..cold_n {
        let fresh = WasmtimeExecutor::new(disk_config.clone()).unwrap();
        disk_total += sequential(&fresh, &binary, 1);
        assert_eq!(fresh.stats().disk_hits, 1);
    }
    let disk_time = disk_total / cold_n as u32;
    report("first task of a new executor, disk cache", disk_time);

    // Warm: memory cache, one task at a time on this thread.
    let warm = WasmtimeExecutor::new(WasmtimeConfig::default()).unwrap();
    warm.precompile(&binary).unwrap();
    sequential(&warm, &binary, warm_n / 10);
    let warm_time = sequential(&warm, &binary, warm_n);
    report("warm, sequential (execute_blocking)", warm_time);

    // Warm, through the async trait with all worker slots busy.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let executor = Arc::new(warm.clone());
    let workers = executor.concurrency();
    let parallel_time = runtime.block_on(async {
        let started = Instant::now();
        let mut handles = Vec::new();
        for lane in 0..workers * 2 {
            let executor = executor.clone();
            let binary = binary.clone();
            let per_lane = parallel_n / (workers * 2);
            handles.push(tokio::spawn(async move {
                for n in 0..per_lane {
                    let out = executor
                        .execute(
                            hello_task(&binary, lane * per_lane + n),
                            CancellationToken::new(),
                        )
                        .await
                        .unwrap();
                    assert_eq!(out.termination, Termination::Exited(0));
                }
                per_lane
            }));
        }
        let mut done = 0;
        for handle in handles {
            done += handle.await.unwrap();
        }
        started.elapsed() / done as u32
    });
    report(
        &format!("warm, async execute, {workers} workers (throughput)"),
        parallel_time,
    );

    println!();
    println!(
        "warm vs cold: {:.0}x faster; disk-cache start vs cold: {:.1}x faster",
        cold_time.as_secs_f64() / warm_time.as_secs_f64(),
        cold_time.as_secs_f64() / disk_time.as_secs_f64()
    );
    println!(
        "warm per-task overhead: {:.1} µs (target < 100 µs)",
        warm_time.as_secs_f64() * 1e6
    );

    // The wasmtime CLI, one process per task.
    let cli_available = Command::new("wasmtime")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !cli_available {
        println!("wasmtime CLI: not on PATH, comparison skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("hello.wasm");
    std::fs::write(&wasm, &binary.bytes).unwrap();
    let started = Instant::now();
    for _ in 0..cli_n {
        let out = Command::new("wasmtime")
            .arg("run")
            .arg(&wasm)
            .arg("bench")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let cli_time = started.elapsed() / cli_n as u32;
    report("wasmtime CLI, one process per task", cli_time);
    println!(
        "warm executor vs wasmtime CLI: {:.0}x faster",
        cli_time.as_secs_f64() / warm_time.as_secs_f64()
    );
}

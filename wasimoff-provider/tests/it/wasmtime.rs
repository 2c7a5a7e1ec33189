//! `WasmtimeExecutor`-specific behaviour: the compiled-module caches (memory and disk), fuel,
//! limits taken from the executor configuration, rootfs and artifact size limits, cleanup of
//! task directories, freeing of worker slots, and the instance pool (or none).

use std::time::{Duration, Instant};

use bytes::Bytes;
use wasimoff_core::executor::{CancellationToken, ExecError, Executor, ResolvedFile, Termination};
use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};
use wasimoff_wasi_apps as apps;
use wasimoff_wasi_apps::conformance::{GREETING, assert_exit, run, task, zip_of};

fn executor(config: WasmtimeConfig) -> WasmtimeExecutor {
    WasmtimeExecutor::new(config).unwrap()
}

fn hello_stdout(arg: &str) -> String {
    format!("{GREETING}\nargs = [\"hello.wasm\", \"{arg}\"]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_of_a_ref_hits_the_memory_cache() {
    let exec = executor(WasmtimeConfig::default());
    for n in 0..3 {
        let out = run(&exec, task(apps::HELLO, &["hello.wasm", "x"])).await;
        assert_exit(&out, 0);
        assert_eq!(out.stdout, hello_stdout("x"));
        let stats = exec.stats();
        assert_eq!(stats.compiles, 1);
        assert_eq!(stats.memory_hits, n);
        assert_eq!(stats.tasks, n + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_cache_can_be_disabled() {
    let exec = executor(WasmtimeConfig {
        memory_cache_bytes: 0,
        ..WasmtimeConfig::default()
    });
    for _ in 0..2 {
        assert_exit(&run(&exec, task(apps::HELLO, &["hello.wasm"])).await, 0);
    }
    assert_eq!(exec.stats().compiles, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cache_survives_a_new_executor_and_heals_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = WasmtimeConfig {
        cache_dir: Some(dir.path().join("modules")),
        ..WasmtimeConfig::default()
    };
    let first = executor(config.clone());
    assert_exit(&run(&first, task(apps::HELLO, &["hello.wasm"])).await, 0);
    assert_eq!(first.stats().compiles, 1);
    drop(first);

    let second = executor(config.clone());
    let out = run(&second, task(apps::HELLO, &["hello.wasm", "again"])).await;
    assert_exit(&out, 0);
    assert_eq!(out.stdout, hello_stdout("again"));
    assert_eq!(second.stats().compiles, 0);
    assert_eq!(second.stats().disk_hits, 1);
    drop(second);

    // A damaged file is recompiled and overwritten.
    for entry in std::fs::read_dir(dir.path().join("modules")).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let third = executor(config.clone());
    assert_exit(&run(&third, task(apps::HELLO, &["hello.wasm"])).await, 0);
    assert_eq!(third.stats().compiles, 1);
    drop(third);
    let fourth = executor(config);
    assert_exit(&run(&fourth, task(apps::HELLO, &["hello.wasm"])).await, 0);
    assert_eq!(fourth.stats().compiles, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_the_worker_count() {
    assert_eq!(
        executor(WasmtimeConfig {
            workers: 3,
            ..WasmtimeConfig::default()
        })
        .concurrency(),
        3
    );
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(executor(WasmtimeConfig::default()).concurrency(), cores);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuel_limits_when_enabled() {
    let exec = executor(WasmtimeConfig {
        enable_fuel: true,
        ..WasmtimeConfig::default()
    });
    let mut t = task(apps::LOOP, &["loop.wasm"]);
    t.limits.fuel = Some(5_000_000);
    let out = run(&exec, t).await;
    assert_eq!(out.termination, Termination::FuelExhausted(5_000_000));
    assert_eq!(out.stdout, "loop: spinning forever\n");
    let mut t = task(apps::HELLO, &["hello.wasm", "x"]);
    t.limits.fuel = Some(100_000_000);
    assert_exit(&run(&exec, t).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_defaults_apply_when_the_task_sets_none() {
    let exec = executor(WasmtimeConfig {
        default_timeout: Some(Duration::from_millis(150)),
        default_max_output: 50,
        default_max_memory: Some(16 << 20),
        ..WasmtimeConfig::default()
    });
    let out = run(&exec, task(apps::LOOP, &["loop.wasm"])).await;
    assert_eq!(
        out.termination,
        Termination::TimedOut(Duration::from_millis(150))
    );
    let out = run(&exec, task(apps::HELLO, &["hello.wasm", "x"])).await;
    assert_exit(&out, 0);
    assert_eq!(out.stdout, hello_stdout("x")[..50]);
    assert!(out.stdout_truncated);
    let out = run(&exec, task(apps::MEMBOMB, &["membomb.wasm"])).await;
    assert_eq!(out.termination, Termination::MemoryExceeded(16 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_limits_count_entries_and_written_bytes() {
    let exec = executor(WasmtimeConfig {
        max_rootfs_entries: 3,
        max_rootfs_bytes: 1 << 20,
        ..WasmtimeConfig::default()
    });
    let mut t = task(apps::HELLO, &["hello.wasm"]);
    t.rootfs = Some(ResolvedFile::from_bytes(zip_of(&[
        ("a", b""),
        ("b", b""),
        ("c", b""),
        ("d", b""),
    ])));
    let result = exec.execute(t, CancellationToken::new()).await;
    assert!(
        matches!(&result, Err(ExecError::InvalidRootfs(m)) if m.contains("limit of 3")),
        "{result:?}"
    );

    // A small zip that inflates to 8 MiB of zeros, over the 1 MiB limit.
    let zeros = vec![0u8; 8 << 20];
    let bomb = {
        use std::io::Write;
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        writer.start_file("bomb", options).unwrap();
        writer.write_all(&zeros).unwrap();
        Bytes::from(writer.finish().unwrap().into_inner())
    };
    assert!(bomb.len() < 100 << 10);
    let mut t = task(apps::HELLO, &["hello.wasm"]);
    t.rootfs = Some(ResolvedFile::from_bytes(bomb));
    let result = exec.execute(t, CancellationToken::new()).await;
    assert!(
        matches!(&result, Err(ExecError::InvalidRootfs(m)) if m.contains("bomb") && m.contains("1048576")),
        "{result:?}"
    );

    let mut t = task(apps::HELLO, &["hello.wasm"]);
    t.rootfs = Some(ResolvedFile::from_bytes(zip_of(&[
        ("x", b"1"),
        ("./x", b"2"),
    ])));
    let result = exec.execute(t, CancellationToken::new()).await;
    assert!(
        matches!(&result, Err(ExecError::InvalidRootfs(m)) if m.contains("duplicate")),
        "{result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_over_the_limit_are_an_error() {
    let exec = executor(WasmtimeConfig {
        max_artifacts_bytes: 10,
        ..WasmtimeConfig::default()
    });
    let mut t = task(apps::HELLO, &["hello.wasm", "file:big.txt"]);
    t.artifacts = vec!["big.txt".into()];
    let out = exec.execute(t, CancellationToken::new()).await.unwrap();
    assert!(
        matches!(out.error, Some(ExecError::ArtifactsTooLarge(_))),
        "{out:?}"
    );
    assert_eq!(out.artifacts, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_directories_are_removed() {
    let work = tempfile::tempdir().unwrap();
    let exec = executor(WasmtimeConfig {
        work_dir: Some(work.path().to_owned()),
        ..WasmtimeConfig::default()
    });
    let mut ok = task(apps::HELLO, &["hello.wasm", "file:a.txt"]);
    ok.rootfs = Some(ResolvedFile::from_bytes(zip_of(&[("in/x", b"x")])));
    ok.artifacts = vec!["a.txt".into()];
    assert_exit(&run(&exec, ok).await, 0);
    let mut bad_rootfs = task(apps::HELLO, &["hello.wasm"]);
    bad_rootfs.rootfs = Some(ResolvedFile::from_bytes(zip_of(&[
        ("ok", b""),
        ("../x", b""),
    ])));
    assert!(
        exec.execute(bad_rootfs, CancellationToken::new())
            .await
            .is_err()
    );
    let mut missing = task(apps::HELLO, &["hello.wasm"]);
    missing.artifacts = vec!["nope".into()];
    let out = exec
        .execute(missing, CancellationToken::new())
        .await
        .unwrap();
    assert!(matches!(out.error, Some(ExecError::MissingArtifact(_))));
    // Empty directories are kept for reuse (at most one per worker), used ones are removed.
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.len() <= exec.concurrency());
    for dir in left {
        assert_eq!(std::fs::read_dir(dir.unwrap().path()).unwrap().count(), 0);
    }
    drop(exec);
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_abandoned_tasks_free_the_worker_slot() {
    let exec = executor(WasmtimeConfig {
        workers: 1,
        ..WasmtimeConfig::default()
    });
    let mut spin = task(apps::LOOP, &["loop.wasm"]);
    spin.limits.timeout = Some(Duration::from_millis(100));
    let out = run(&exec, spin).await;
    assert!(matches!(out.termination, Termination::TimedOut(_)));
    assert_exit(&run(&exec, task(apps::HELLO, &["hello.wasm"])).await, 0);

    // A caller that drops its future stops the guest and frees the slot.
    let mut spin = task(apps::LOOP, &["loop.wasm"]);
    spin.limits.timeout = Some(Duration::from_secs(120));
    let background = exec.clone();
    let handle =
        tokio::spawn(async move { background.execute(spin, CancellationToken::new()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    handle.abort();
    let started = Instant::now();
    assert_exit(&run(&exec, task(apps::HELLO, &["hello.wasm"])).await, 0);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_api_runs_without_a_runtime_slot() {
    let exec = executor(WasmtimeConfig::default());
    let out = tokio::task::spawn_blocking(move || {
        exec.execute_blocking(
            task(apps::HELLO, &["hello.wasm", "b"]),
            &CancellationToken::new(),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.stdout, hello_stdout("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_can_be_allocated_on_demand() {
    let exec = executor(WasmtimeConfig {
        pooled_instances: 0,
        ..WasmtimeConfig::default()
    });
    for arg in ["a", "b"] {
        let out = run(&exec, task(apps::HELLO, &["hello.wasm", arg])).await;
        assert_eq!(out.stdout, hello_stdout(arg));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_caller_past_the_instance_pool_gets_a_host_error() {
    // One slot (one worker): a second task at once through `execute_blocking` (which ignores
    // the worker limit) finds no instance slot; the slot is usable again afterwards.
    let exec = executor(WasmtimeConfig {
        workers: 1,
        pooled_instances: 1,
        ..WasmtimeConfig::default()
    });
    let cancel = CancellationToken::new();
    let mut spin = task(apps::LOOP, &["loop.wasm"]);
    spin.limits.timeout = Some(Duration::from_secs(120));
    let (background, token) = (exec.clone(), cancel.clone());
    let spinning = tokio::spawn(async move { background.execute(spin, token).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = exec.clone();
    let refused = tokio::task::spawn_blocking(move || {
        second.execute_blocking(
            task(apps::HELLO, &["hello.wasm"]),
            &CancellationToken::new(),
        )
    })
    .await
    .unwrap();
    assert!(
        matches!(&refused, Err(ExecError::Host(e)) if e.contains("instance slot")),
        "{refused:?}"
    );
    cancel.cancel();
    let out = spinning.await.unwrap().unwrap();
    assert_eq!(out.termination, Termination::Cancelled);
    assert_exit(&run(&exec, task(apps::HELLO, &["hello.wasm"])).await, 0);
}

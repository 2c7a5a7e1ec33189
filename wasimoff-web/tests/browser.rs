//! The executor conformance suite (`wasimoff_wasi_apps::conformance`, the same cases the native
//! executor runs) on [`BrowserExecutor`] in headless Chromium, inside a dedicated worker so that
//! `Atomics.wait` sleeps. Run: see docs/browser.md.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wasimoff_core::executor::{CancellationToken, Executor, Termination};
use wasimoff_core::platform::Instant;
use wasimoff_web::BrowserExecutor;
use wasimoff_web::executor::BrowserConfig;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

use wasimoff_wasi_apps::conformance;

fn executor() -> BrowserExecutor {
    BrowserExecutor::new(BrowserConfig::default()).expect("executor")
}

// The whole suite but three cases that need a worker to be terminated; the worker pool,
// tests/pool.rs, passes them by terminating the worker.
wasimoff_wasi_apps::executor_conformance_wasm_tests!(
    executor(),
    skip: {
        loop_stopped_at_deadline: "a guest spinning without system calls cannot be interrupted on the current thread",
        loop_cancelled_by_token: "a guest spinning without system calls cannot be interrupted on the current thread",
        sleep_cancelled_by_token: "a guest asleep in Atomics.wait holds the current thread, so the cancel cannot be sent"
    }
);

/// In a dedicated worker, sleeping blocks in `Atomics.wait` (not a busy-wait) and lasts.
#[wasm_bindgen_test]
async fn sleep_blocks_with_atomics_in_a_worker() {
    let executor = executor();
    let started = Instant::now();
    let out = conformance::run(
        &executor,
        conformance::task(wasimoff_wasi_apps::SLEEP, &["sleep.wasm", "200"]),
    )
    .await;
    conformance::assert_exit(&out, 0);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(
        executor.blocks_with_atomics(),
        "Atomics.wait is unavailable here"
    );
}

/// A guest that makes system calls stops at its deadline (here: inside `poll_oneoff`).
#[wasm_bindgen_test]
async fn sleeping_guest_stopped_at_deadline() {
    let executor = executor();
    let mut task = conformance::task(wasimoff_wasi_apps::HELLO, &["hello.wasm", "sleep:5000"]);
    task.limits.timeout = Some(Duration::from_millis(300));
    let started = Instant::now();
    let out = executor
        .execute(task, CancellationToken::new())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        out.termination,
        Termination::TimedOut(Duration::from_millis(300))
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(conformance::GREETING));
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

/// Modules are compiled once per ref; cancellation before the start runs nothing.
#[wasm_bindgen_test]
async fn modules_are_cached_and_cancel_before_start() {
    let executor = executor();
    for _ in 0..3 {
        let out = conformance::run(
            &executor,
            conformance::task(wasimoff_wasi_apps::HELLO, &["hello.wasm"]),
        )
        .await;
        conformance::assert_exit(&out, 0);
    }
    assert_eq!(executor.cached_modules(), 1);
    let token = CancellationToken::new();
    token.cancel();
    let out = executor
        .execute(
            conformance::task(wasimoff_wasi_apps::LOOP, &["loop.wasm"]),
            token,
        )
        .await
        .unwrap();
    assert_eq!(out.termination, Termination::Cancelled);
}

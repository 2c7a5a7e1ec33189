//! The executor conformance suite on [`WorkerPool`], the executor the browser provider really
//! uses: every task runs in a dedicated worker that the pool starts from this test's own
//! module. Compared with `tests/browser.rs` (the executor on the current thread), the three cases
//! that need a worker to be terminated pass here too: a guest spinning without system calls is
//! stopped at its deadline and by cancellation, and a guest asleep in `Atomics.wait` by
//! cancellation. Run: see docs/browser.md.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use wasimoff_core::executor::{CancellationToken, Executor, Termination};
use wasimoff_core::platform;
use wasimoff_web::pool::{PoolConfig, WorkerPool};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

use wasimoff_wasi_apps::conformance;

/// The test runner serves this test's JS glue at `/wasm-bindgen-test.js`; the pool's workers
/// import it and start `workerMain` from it.
fn glue_url() -> String {
    let location = js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("location")).unwrap();
    let origin = js_sys::Reflect::get(&location, &JsValue::from_str("origin"))
        .unwrap()
        .as_string()
        .unwrap();
    format!("{origin}/wasm-bindgen-test.js")
}

fn pool(workers: usize) -> WorkerPool {
    // Keep the worker entry point in this binary (it is only called from JS).
    let _keep = wasimoff_web::worker::worker_main;
    WorkerPool::new(PoolConfig {
        workers,
        glue_url: Some(glue_url()),
        kill_grace: Duration::from_millis(200),
        ..PoolConfig::default()
    })
}

// Every case of the suite, each in its own test.
wasimoff_wasi_apps::executor_conformance_wasm_tests!(pool(2));

/// A terminated worker is replaced: after a cancel, the pool runs tasks on both workers again,
/// and its counters say what happened.
#[wasm_bindgen_test]
async fn cancelled_worker_is_replaced() {
    let pool = pool(2);
    let token = CancellationToken::new();
    let spinning = {
        let (pool, token) = (pool.clone(), token.clone());
        async move {
            pool.execute(
                conformance::task(wasimoff_wasi_apps::LOOP, &["loop.wasm"]),
                token,
            )
            .await
        }
    };
    let cancel = async {
        while pool.stats().executing == 0 {
            platform::sleep(Duration::from_millis(10)).await;
        }
        token.cancel();
    };
    let (out, ()) = futures::join!(spinning, cancel);
    assert_eq!(out.unwrap().termination, Termination::Cancelled);
    assert_eq!(pool.stats().killed, 1);
    assert_eq!(pool.stats().running, 0);
    // Two sleeps run at once on the two workers (one of them fresh).
    let sleep = || {
        conformance::run(
            &pool,
            conformance::task(wasimoff_wasi_apps::SLEEP, &["sleep.wasm", "400"]),
        )
    };
    let both = std::pin::pin!(futures::future::join(sleep(), sleep()));
    let overlap = std::pin::pin!(async {
        while pool.stats().executing < 2 {
            platform::sleep(Duration::from_millis(5)).await;
        }
    });
    match futures::future::select(overlap, both).await {
        futures::future::Either::Left(((), both)) => {
            let (a, b) = both.await;
            conformance::assert_exit(&a, 0);
            conformance::assert_exit(&b, 0);
        }
        futures::future::Either::Right(_) => panic!("the two tasks never ran at once"),
    }
}

/// Tasks beyond the pool size wait for a worker; resizing lets more run.
#[wasm_bindgen_test]
async fn pool_size_bounds_and_resizes() {
    let pool = pool(1);
    assert_eq!(pool.concurrency(), 1);
    let task = || conformance::task(wasimoff_wasi_apps::HELLO, &["hello.wasm", "sleep:100"]);
    let (a, b) = futures::join!(conformance::run(&pool, task()), async {
        // The second task waits for the only worker.
        conformance::run(&pool, task()).await
    });
    conformance::assert_exit(&a, 0);
    conformance::assert_exit(&b, 0);
    pool.resize(3);
    assert_eq!(pool.concurrency(), 3);
    let (a, b, c) = futures::join!(
        conformance::run(&pool, task()),
        conformance::run(&pool, task()),
        conformance::run(&pool, task())
    );
    for out in [a, b, c] {
        conformance::assert_exit(&out, 0);
    }
    assert!(pool.stats().spawned >= 3);
}

/// The pool's breakdown puts a task's time where it went: a guest asleep for 100 ms is counted
/// in its run, not in instantiating it or in the messages, and every part is a real duration.
#[wasm_bindgen_test]
async fn parts_say_where_the_time_went() {
    let pool = pool(1);
    let task = conformance::task(wasimoff_wasi_apps::SLEEP, &["sleep.wasm", "100"]);
    let output = pool.execute(task, CancellationToken::new()).await.unwrap();
    assert_eq!(output.termination, Termination::Exited(0));
    let stats = pool.stats();
    assert_eq!(stats.answered, 1);
    let p = stats.parts;
    assert!(p.run_ms >= 95.0, "{p:?}");
    assert!(p.instantiate_ms < 50.0, "{p:?}");
    for part in [
        p.post_ms,
        p.to_worker_ms,
        p.decode_ms,
        p.instantiate_ms,
        p.collect_ms,
        p.to_page_ms,
        p.answer_ms,
    ] {
        assert!(part.is_finite() && part >= 0.0, "{p:?}");
    }
    // The worker's parts add up to the time it reports.
    let worker = p.decode_ms + p.instantiate_ms + p.run_ms + p.collect_ms;
    assert!(
        (worker - stats.worker_ms).abs() < 1.0,
        "{p:?} vs {}",
        stats.worker_ms
    );
    // The page's and the worker's clocks are coarsened apart (0.1 ms in Chromium).
    assert!(stats.round_trip_ms + 0.25 >= worker, "{stats:?}");
}

/// Guests in one worker share its memory (cleared between them): nothing one guest wrote is
/// seen by the next, neither in the initial pages nor after one grew the memory.
#[wasm_bindgen_test]
async fn a_reused_memory_starts_cleared() {
    // Prints the byte at 70000 (in the second page) as a digit, then sets it to 7; grows the
    // memory by a page when given an argument.
    let guest = wat::parse_str(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "args_sizes_get"
            (func $args (param i32 i32) (result i32)))
          (memory (export "memory") 2)
          (func (export "_start")
            (i32.store8 (i32.const 100)
              (i32.add (i32.const 48) (i32.load8_u (i32.const 70000))))
            (i32.store (i32.const 0) (i32.const 100))
            (i32.store (i32.const 4) (i32.const 1))
            (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
            (i32.store8 (i32.const 70000) (i32.const 7))
            (drop (call $args (i32.const 16) (i32.const 20)))
            (if (i32.gt_u (i32.load (i32.const 16)) (i32.const 1))
              (then (drop (memory.grow (i32.const 1)))))))"#,
    )
    .unwrap();
    let pool = pool(1);
    // The pool starts its worker in the background; wait for it, so that one worker runs all.
    while pool.stats().idle == 0 {
        platform::sleep(Duration::from_millis(5)).await;
    }
    for args in [&["g"][..], &["g"], &["g", "grow"], &["g"], &["g"]] {
        let task = conformance::task(&guest, args);
        let output = pool.execute(task, CancellationToken::new()).await.unwrap();
        assert_eq!(output.termination, Termination::Exited(0), "{args:?}");
        assert_eq!(&output.stdout[..], b"0", "{args:?}");
    }
    assert_eq!(pool.stats().spawned, 1, "the tasks did not share a worker");
}

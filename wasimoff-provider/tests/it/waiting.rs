//! Guests waiting in `poll_oneoff` on `WasmtimeExecutor`: stopped at their deadline and by a
//! cancel *while they wait* (the executor's waiting count says when they do, so nothing here
//! sleeps to synchronise), and their worker slot is free right after. Each executor has one
//! worker, so the `hello` that follows can only run in the slot the sleeper had.

use std::time::{Duration, Instant};

use wasimoff_core::executor::{CancellationToken, ExecTask, Executor, Termination};
use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};
use wasimoff_wasi_apps as apps;
use wasimoff_wasi_apps::conformance::{assert_exit, run, task};

/// Far more than any stop may take here, far less than the guests' sleeps (1000 s).
const GENEROUS: Duration = Duration::from_secs(30);

fn one_worker() -> WasmtimeExecutor {
    WasmtimeExecutor::new(WasmtimeConfig {
        workers: 1,
        ..WasmtimeConfig::default()
    })
    .unwrap()
}

/// Every way a guest sleeps for 1000 s: Rust's `std::thread::sleep` (one relative clock), and
/// the `poll` guest's relative, absolute monotonic, absolute realtime, two-clock and
/// `wasi_unstable` subscriptions.
fn sleepers() -> Vec<(&'static str, ExecTask)> {
    let mut tasks = vec![("sleep", task(apps::SLEEP, &["sleep.wasm", "1000000"]))];
    for mode in ["rel", "abs", "wall", "two", "unstable"] {
        tasks.push((mode, task(apps::POLL, &["poll.wasm", mode, "1000000"])));
    }
    tasks
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(GENEROUS, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done after {GENEROUS:?}"))
}

/// The slot is free: a `hello` runs on the one worker.
async fn hello_runs(exec: &WasmtimeExecutor, after: &str) {
    let out = within(after, run(exec, task(apps::HELLO, &["hello.wasm"]))).await;
    assert_exit(&out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_guest_while_it_sleeps() {
    let exec = one_worker();
    let mut waiting = exec.watch_waiting();
    for (what, mut sleeper) in sleepers() {
        sleeper.limits.timeout = Some(Duration::from_secs(3000));
        let token = CancellationToken::new();
        let running = {
            let (exec, token) = (exec.clone(), token.clone());
            tokio::spawn(async move { exec.execute(sleeper, token).await })
        };
        within(what, waiting.wait_for(|n| *n == 1)).await.unwrap();
        let cancelled = Instant::now();
        token.cancel();
        let out = within(what, running).await.unwrap().unwrap();
        let stopped = cancelled.elapsed();
        assert_eq!(out.termination, Termination::Cancelled, "{what}");
        assert_eq!(exec.stats().waiting, 0, "{what}");
        println!("{what}: cancelled while asleep, stopped after {stopped:?}");
        hello_runs(&exec, what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_stops_a_guest_while_it_sleeps() {
    let exec = one_worker();
    let limit = Duration::from_millis(300);
    for (what, mut sleeper) in sleepers() {
        sleeper.limits.timeout = Some(limit);
        let started = Instant::now();
        let out = within(what, run(&exec, sleeper)).await;
        let took = started.elapsed();
        assert_eq!(out.termination, Termination::TimedOut(limit), "{what}");
        assert!(took >= limit, "{what}: {took:?}");
        println!("{what}: timed out after {took:?} (limit {limit:?})");
        hello_runs(&exec, what).await;
    }
    // A sleep shorter than the limit still simply ends.
    let out = run(&exec, task(apps::SLEEP, &["sleep.wasm", "20"])).await;
    assert_exit(&out, 0);
}

/// A caller that gives up on a sleeping task (drops the `execute` future) stops the guest too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_sleeping_task_frees_its_slot() {
    let exec = one_worker();
    let mut waiting = exec.watch_waiting();
    let mut sleeper = task(apps::SLEEP, &["sleep.wasm", "1000000"]);
    sleeper.limits.timeout = Some(Duration::from_secs(3000));
    let running = {
        let exec = exec.clone();
        tokio::spawn(async move { exec.execute(sleeper, CancellationToken::new()).await })
    };
    within("the sleep", waiting.wait_for(|n| *n == 1))
        .await
        .unwrap();
    running.abort();
    within("the guest to stop", waiting.wait_for(|n| *n == 0))
        .await
        .unwrap();
    hello_runs(&exec, "the abandoned sleep").await;
}

/// `execute_blocking` from a plain thread (no tokio runtime around it) is bounded too, in both
/// of `poll_oneoff`'s ways of waiting.
#[test]
fn the_blocking_api_stops_sleeping_guests_at_the_deadline() {
    let exec = one_worker();
    let limit = Duration::from_millis(200);
    for mode in ["rel", "abs"] {
        let mut sleeper = task(apps::POLL, &["poll.wasm", mode, "1000000"]);
        sleeper.limits.timeout = Some(limit);
        let started = Instant::now();
        let out = exec
            .execute_blocking(sleeper, &CancellationToken::new())
            .unwrap();
        assert_eq!(out.termination, Termination::TimedOut(limit), "{mode}");
        assert!(started.elapsed() < GENEROUS, "{mode}");
    }
}

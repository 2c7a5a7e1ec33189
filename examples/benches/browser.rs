//! The browser provider against the native provider, measured in the same run (issue 7):
//!
//! - trivial tasks (`hello`): end-to-end tasks/s with one provider of 2 workers and a client
//!   keeping 256 tasks in flight over the client WebSocket;
//! - compute tasks (`tsp rand 10`): the makespan of a batch, per task.
//!
//! The same broker serves both providers in turn: first the native provider (wasmtime, 2
//! workers) in this process, then the volunteer page in headless Chromium (2 workers).
//!
//! ```text
//! cargo xtask web                                   # the package, optimised
//! WASIMOFF_WEB_DIR=$CARGO_TARGET_DIR/web cargo bench -p wasimoff-examples --bench browser
//! ... -- --quick                                    # small sizes (CI: checks that it works)
//! ```
//! (`cargo xtask bench` does both.) Targets: at least 1,000 trivial tasks/s for one browser
//! provider, tsp within 1.5x of native wasmtime.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/chrome.rs"]
#[allow(
    dead_code,
    reason = "shared with the tests; not every helper is used here"
)]
mod chrome;

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrome::{Chrome, number, wait_for};
use futures::StreamExt;
use wasimoff_client::{Client, Task};
use wasimoff_provider::{
    WasmtimeConfig, WasmtimeExecutor,
    runtime::{Provider, ProviderConfig},
};

struct Sizes {
    hello: usize,
    tsp: usize,
}

/// Runs `tasks` with up to 256 in flight; returns the elapsed time (every task must succeed).
async fn batch(client: &Client, tasks: Vec<Task>) -> Duration {
    let started = std::time::Instant::now();
    let mut results = client.submit_many(tasks, 256);
    while let Some((index, result)) = results.next().await {
        let output = result.unwrap_or_else(|e| panic!("task {index}: {e}"));
        assert_eq!(output.status, 0, "task {index}: {}", output.stdout_lossy());
    }
    started.elapsed()
}

fn hellos(n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| Task::wasip1("hello.wasm").reference(i.to_string()))
        .collect()
}

fn tsps(n: usize) -> Vec<Task> {
    (0..n)
        .map(|i| {
            Task::wasip1("tsp.wasm")
                .args(["rand".to_owned(), "10".to_owned(), i.to_string()])
                .reference(i.to_string())
        })
        .collect()
}

/// `(hello tasks/s, tsp seconds per task)` for whatever provider is connected.
async fn measure(client: &Client, sizes: &Sizes) -> (f64, f64) {
    // Warm-up: compiles both modules and fetches them into the provider's cache.
    batch(client, hellos(50)).await;
    batch(client, tsps(2)).await;
    let hello = batch(client, hellos(sizes.hello)).await;
    let tsp = batch(client, tsps(sizes.tsp)).await;
    (
        sizes.hello as f64 / hello.as_secs_f64(),
        tsp.as_secs_f64() / sizes.tsp as f64,
    )
}

async fn providers(client: &Client) -> (i64, i64) {
    client
        .status()
        .await
        .map(|s| (s.providers, s.workers))
        .unwrap_or((-1, -1))
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes = if quick {
        Sizes { hello: 300, tsp: 4 }
    } else {
        Sizes {
            hello: 20_000,
            tsp: 40,
        }
    };
    println!(
        "# browser provider vs native provider{}",
        if quick { " (quick)" } else { "" }
    );
    let Some(web_dir) = std::env::var_os("WASIMOFF_WEB_DIR").map(PathBuf::from) else {
        println!("skipped: WASIMOFF_WEB_DIR is not set (run `cargo xtask web`)");
        return;
    };
    let broker = chrome::broker(web_dir).await;
    let base = format!("http://{}", broker.local_addr());
    let client = Client::new(base.clone()).unwrap();
    client
        .upload(wasimoff_wasi_apps::HELLO.to_vec(), Some("hello.wasm"))
        .await
        .unwrap();
    client
        .upload(wasimoff_wasi_apps::TSP.to_vec(), Some("tsp.wasm"))
        .await
        .unwrap();

    // The native provider: wasmtime with 2 workers, in this process.
    let executor = WasmtimeExecutor::new(WasmtimeConfig {
        workers: 2,
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let native = Provider::builder(
        ProviderConfig {
            name: "native".into(),
            ..ProviderConfig::new(base.clone())
        },
        Arc::new(executor),
    )
    .build()
    .unwrap();
    let running = tokio::spawn({
        let native = native.clone();
        async move { native.run().await }
    });
    // 2 workers plus the default prefetch of one task per worker: 4 slots at the broker.
    wait_for("the native provider", || async {
        (providers(&client).await == (1, 4)).then_some(())
    })
    .await;
    let (native_hello, native_tsp) = measure(&client, &sizes).await;
    native.shutdown(Duration::from_secs(5)).await;
    running.await.unwrap().unwrap();
    wait_for("the native provider to leave", || async {
        (providers(&client).await.0 == 0).then_some(())
    })
    .await;

    // The volunteer page in headless Chromium, 2 workers.
    let chrome = match Chrome::start().await {
        Ok(chrome) => chrome,
        Err(why) => {
            println!("browser: skipped ({why})");
            return;
        }
    };
    chrome
        .webdriver
        .goto(&format!("{base}/#workers=2&autostart"))
        .await
        .unwrap();
    // 2 workers plus the default prefetch of one task per worker: 4 slots at the broker.
    wait_for("the page to join", || async {
        (providers(&client).await == (1, 4)).then_some(())
    })
    .await;
    let (browser_hello, browser_tsp) = measure(&client, &sizes).await;
    let page = chrome.page_status().await;
    assert_eq!(number(&page, "tasksFailed"), 0, "{page}");

    println!("\n| figure | native (wasmtime) | browser (headless Chromium) | browser / native |");
    println!("|---|---|---|---|");
    println!(
        "| hello, {} tasks: tasks/s | {native_hello:.0} | {browser_hello:.0} | {:.2} |",
        sizes.hello,
        browser_hello / native_hello
    );
    println!(
        "| tsp rand 10, {} tasks: ms per task (makespan / n) | {:.1} | {:.1} | {:.2} |",
        sizes.tsp,
        native_tsp * 1e3,
        browser_tsp * 1e3,
        browser_tsp / native_tsp
    );
    println!(
        "\ntargets: browser hello >= 1,000 tasks/s: {}; tsp within 1.5x of native: {}",
        if browser_hello >= 1000.0 {
            "met"
        } else {
            "missed"
        },
        if browser_tsp / native_tsp <= 1.5 {
            "met"
        } else {
            "missed"
        }
    );
    chrome.webdriver.clone().close().await.unwrap();
    broker.shutdown().await;
}

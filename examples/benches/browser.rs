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
//! (`cargo xtask bench` does both.) Targets: at least 3,000 trivial tasks/s for one browser
//! provider of 2 workers (issue 17), tsp within 1.5x of native wasmtime.
//!
//! For each provider it also prints the CPU time per `hello` task of every thread involved
//! (`/proc`: this process, which holds the broker and the client, and Chromium's processes),
//! and for the page the means of each part of a task's trip through its worker pool
//! (`Provider.poolStats().parts`).
//!
//! `-- --wat` runs the hand-written WAT hello (one page of memory, one `fd_write`) as the
//! `hello` task instead of the Rust one: what is left is the floor of a trivial task in each
//! provider, the transport and the runtime without the guest.

#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/chrome.rs"]
#[allow(
    dead_code,
    reason = "shared with the tests; not every helper is used here"
)]
mod chrome;
#[path = "support/cpu.rs"]
mod cpu;

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

/// What one provider did: hello tasks/s, tsp seconds per task, and the CPU time of each
/// thread group per hello task (ms).
struct Measured {
    hello: f64,
    tsp: f64,
    cpu: Vec<(String, f64)>,
}

/// CPU seconds of this process (broker and client; the native provider too when it is the
/// one measured) and of every process below `browser` (chromedriver's pid: Chromium).
fn sample_cpu(browser: Option<u32>) -> cpu::Sample {
    let this = if browser.is_some() {
        "bench (broker, client)"
    } else {
        "bench (broker, client, native provider)"
    };
    let mut sample = cpu::sample(&[std::process::id()], Some(this));
    if let Some(root) = browser {
        sample.extend(cpu::sample(&cpu::below(root), None));
    }
    sample
}

/// Measures whatever provider is connected; `page`: the browser when it is the page, and
/// whether to profile its main thread during the hello batch.
async fn measure(client: &Client, sizes: &Sizes, page: Option<(&Chrome, bool)>) -> Measured {
    // Warm-up: compiles both modules and fetches them into the provider's cache.
    batch(client, hellos(50)).await;
    batch(client, tsps(2)).await;
    let browser = page.and_then(|(chrome, _)| chrome.driver_pid());
    let profiling = page
        .filter(|(_, profile)| *profile)
        .map(|(chrome, _)| chrome);
    if let Some(chrome) = profiling {
        start_profile(chrome).await;
    }
    let before = sample_cpu(browser);
    let hello = batch(client, hellos(sizes.hello)).await;
    let after = sample_cpu(browser);
    if let Some(chrome) = profiling {
        print_profile(chrome).await;
    }
    let tsp = batch(client, tsps(sizes.tsp)).await;
    Measured {
        hello: sizes.hello as f64 / hello.as_secs_f64(),
        tsp: tsp.as_secs_f64() / sizes.tsp as f64,
        cpu: cpu::report(&before, &after, sizes.hello as f64, 0.01),
    }
}

async fn cdp(chrome: &Chrome, cmd: &'static str, params: serde_json::Value) -> serde_json::Value {
    chrome
        .webdriver
        .issue_cmd(chrome::Cdp { cmd, params })
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Starts V8's sampling profiler on the page's main thread (DevTools protocol), one sample
/// every 200 µs.
async fn start_profile(chrome: &Chrome) {
    cdp(chrome, "Profiler.enable", serde_json::json!({})).await;
    cdp(
        chrome,
        "Profiler.setSamplingInterval",
        serde_json::json!({ "interval": 200 }),
    )
    .await;
    cdp(chrome, "Profiler.start", serde_json::json!({})).await;
}

/// Stops the profiler and prints where the page's main thread spent its samples, by function
/// (self time), busiest first.
async fn print_profile(chrome: &Chrome) {
    let result = cdp(chrome, "Profiler.stop", serde_json::json!({})).await;
    let nodes = result
        .pointer("/profile/nodes")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut by_function: std::collections::HashMap<String, u64> = Default::default();
    let mut total = 0;
    for node in &nodes {
        let hits = node
            .get("hitCount")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let frame = &node["callFrame"];
        let name = frame["functionName"].as_str().unwrap_or_default();
        let url = frame["url"].as_str().unwrap_or_default();
        let file = url.rsplit('/').next().unwrap_or(url);
        let key = match (name, file) {
            ("", "") => "(anonymous)".to_owned(),
            (name, "") => name.to_owned(),
            ("", file) => format!("(anonymous) {file}"),
            (name, file) => format!("{name} {file}"),
        };
        *by_function.entry(key).or_default() += hits;
        total += hits;
    }
    let mut rows: Vec<_> = by_function.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    println!("\nThe page's main thread during the hello batch ({total} samples), by self time:\n");
    println!("| function | share |");
    println!("|---|---|");
    for (name, hits) in rows.iter().take(30) {
        let name = name.replace('|', "\\|");
        println!(
            "| {name} | {:.1} % |",
            *hits as f64 * 100.0 / total.max(1) as f64
        );
    }
}

fn print_cpu(who: &str, rows: &[(String, f64)]) {
    let total: f64 = rows.iter().map(|(_, ms)| ms).sum();
    println!("\nCPU per hello task, {who} ({total:.3} ms in all):\n");
    println!("| process: thread | ms per task |");
    println!("|---|---|");
    for (name, ms) in rows {
        println!("| {name} | {ms:.3} |");
    }
}

/// The page's pool counters (`Provider.poolStats()`), `null` without a provider.
async fn pool_stats(chrome: &Chrome) -> serde_json::Value {
    chrome
        .webdriver
        .execute(
            "const p = window.wasimoff && window.wasimoff.provider; \
             return p ? p.poolStats() : null",
            vec![],
        )
        .await
        .unwrap_or(serde_json::Value::Null)
}

/// Per-task means of the pool's parts between two snapshots of its counters.
fn print_parts(before: &serde_json::Value, after: &serde_json::Value) {
    let answered = number(after, "answered") - number(before, "answered");
    let part = |stats: &serde_json::Value, key: &str| {
        stats
            .get("parts")
            .and_then(|p| p.get(key))
            .and_then(serde_json::Value::as_f64)
    };
    if answered <= 0 || part(after, "runMs").is_none() {
        println!("\n(the page's pool reports no breakdown)");
        return;
    }
    let answered = answered as f64;
    println!("\nA hello task's trip through the page's pool ({answered} tasks; means, ms):\n");
    println!("| part | ms per task |");
    println!("|---|---|");
    for (key, what) in [
        ("postMs", "page encodes and posts the task"),
        ("toWorkerMs", "post to the worker's handler"),
        ("decodeMs", "worker decodes the task"),
        ("instantiateMs", "new WebAssembly.Instance"),
        ("runMs", "the guest runs (_start)"),
        ("collectMs", "worker: file system, context, answer"),
        ("toPageMs", "worker's post to the pool seeing it"),
        ("answerMs", "page decodes the answer"),
    ] {
        let spent = part(after, key).unwrap_or(0.0) - part(before, key).unwrap_or(0.0);
        println!("| {what} | {:.3} |", spent / answered);
    }
    for (key, what) in [
        ("workerMs", "in the worker (all of it)"),
        ("roundTripMs", "post to answer (latency)"),
    ] {
        let spent = after
            .get(key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
            - before
                .get(key)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0);
        println!("| {what} | {:.3} |", spent / answered);
    }
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
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--hello N` and `--tsp N` change the sizes (more tsp tasks: less noise in its figure);
    // `--profile` profiles the page's main thread during the hello batch.
    let size = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    };
    let sizes = if quick {
        Sizes { hello: 300, tsp: 4 }
    } else {
        Sizes {
            hello: size("--hello", 20_000),
            tsp: size("--tsp", 40),
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
    let hello = if args.iter().any(|a| a == "--wat") {
        println!("hello: the WAT hello (hello-unstable.wat)");
        wasimoff_wasi_apps::HELLO_UNSTABLE
    } else {
        wasimoff_wasi_apps::HELLO
    };
    client
        .upload(hello.to_vec(), Some("hello.wasm"))
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
    let native_run = measure(&client, &sizes, None).await;
    let profile = args.iter().any(|a| a == "--profile");
    let (native_hello, native_tsp) = (native_run.hello, native_run.tsp);
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
    let pool_before = pool_stats(&chrome).await;
    let browser_run = measure(&client, &sizes, Some((&chrome, profile))).await;
    let pool_after = pool_stats(&chrome).await;
    let (browser_hello, browser_tsp) = (browser_run.hello, browser_run.tsp);
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
    print_cpu("native provider", &native_run.cpu);
    print_cpu("volunteer page", &browser_run.cpu);
    print_parts(&pool_before, &pool_after);
    println!(
        "\ntargets: browser hello >= 3,000 tasks/s: {}; tsp within 1.5x of native: {}",
        if browser_hello >= 3000.0 {
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

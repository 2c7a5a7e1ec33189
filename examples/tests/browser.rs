//! The browser provider end to end, in headless Chromium driven through chromedriver: the broker
//! serves the volunteer page, one click makes the page a provider with 2 workers, a client
//! submits 200 tasks (hello with args and stdin, tsp, rootfs + artifacts, envs) and checks every
//! result; a task cancelled mid-run frees its worker; a reload reconnects and work continues.
//!
//! Needs the page built by `cargo xtask web` (`WASIMOFF_WEB_DIR` points at it; `cargo xtask ci`
//! builds it and sets it) and `/usr/bin/chromedriver` + `/usr/bin/chromium`. Without them the
//! test says so and passes vacuously; `cargo xtask ci` always provides them. Set
//! `WASIMOFF_SCREENSHOT=<path>` to keep a screenshot of the page at work.

#![allow(clippy::print_stderr, reason = "the test reports what it skips")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashSet,
    io::{Read, Write},
    path::PathBuf,
    time::Duration,
};

use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use futures::StreamExt;
use serde_json::{Value, json};
use wasimoff_broker::{Broker, BrokerConfig, BrokerHandle};
use wasimoff_client::{Client, Output, Task};

/// Chromium flags for this sandbox (root, no GPU, no network besides loopback).
const CHROME_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1500",
];

/// How long any one condition may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(120);

struct Chrome {
    webdriver: WebDriver,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Starts chromedriver and a headless Chromium session, or `None` if they are not installed.
async fn chrome() -> Option<Chrome> {
    let driver_path = std::env::var("CHROMEDRIVER").unwrap_or("/usr/bin/chromedriver".into());
    let chromium = std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    if !std::path::Path::new(&driver_path).exists() || !std::path::Path::new(&chromium).exists() {
        eprintln!("skipping: {driver_path} or {chromium} is missing");
        return None;
    }
    let port = free_port();
    let driver = tokio::process::Command::new(&driver_path)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = CHROME_ARGS.iter().map(|s| (*s).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium, "args": args }),
    );
    let url = format!("http://127.0.0.1:{port}");
    // chromedriver needs a moment to listen: retry the session until it does.
    let webdriver = wait_for("chromedriver", || {
        let (capabilities, url) = (capabilities.clone(), url.clone());
        async move {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url)
                .await
                .ok()
        }
    })
    .await;
    Some(Chrome {
        webdriver,
        _driver: driver,
        _profile: profile,
    })
}

/// Polls `check` until it yields a value (the condition, not a fixed delay, ends the wait).
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The page's provider status (`window.wasimoff.status()`).
async fn page_status(webdriver: &WebDriver) -> Value {
    webdriver
        .execute(
            "return window.wasimoff ? window.wasimoff.status() : null",
            vec![],
        )
        .await
        .unwrap_or(Value::Null)
}

fn number(status: &Value, key: &str) -> i64 {
    status.get(key).and_then(Value::as_i64).unwrap_or(-1)
}

fn rootfs_zip() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("greeting.txt", options).unwrap();
    zip.write_all(b"hello from the rootfs\n").unwrap();
    zip.finish().unwrap().into_inner()
}

fn unzip(bytes: &[u8], name: &str) -> String {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut text = String::new();
    archive
        .by_name(name)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

/// Task `i` of a mixed batch and the check of its output.
fn mixed_task(i: usize, rootfs: &str) -> Task {
    match i % 4 {
        0 => Task::wasip1("hello.wasm")
            .args([format!("arg-{i}"), "stdin".into()])
            .stdin(format!("stdin of task {i}\n").into_bytes()),
        1 => Task::wasip1("tsp.wasm").args(["rand", "8"]),
        2 => Task::wasip1("hello.wasm")
            .args(["file:greeting.txt"])
            .rootfs(rootfs)
            .artifacts(["greeting.txt"]),
        _ => Task::wasip1("hello.wasm")
            .args(["print_envs"])
            .env("TASK_INDEX", i.to_string()),
    }
    .reference(i.to_string())
}

fn check_mixed(i: usize, output: &Output) {
    let stdout = output.stdout_lossy();
    assert_eq!(
        output.status,
        0,
        "task {i}: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    match i % 4 {
        0 => {
            assert!(
                stdout.contains(&format!("\"arg-{i}\"")),
                "task {i}: {stdout}"
            );
            assert!(
                stdout.contains(&format!("stdin of task {i}")),
                "task {i}: {stdout}"
            );
        }
        1 => assert!(stdout.starts_with("distance = "), "task {i}: {stdout}"),
        2 => {
            let zip = output.artifacts.as_deref().expect("artifacts");
            let greeting = unzip(zip, "greeting.txt");
            assert!(
                greeting.starts_with("hello from the rootfs\n")
                    && greeting.contains("appended by the wasimoff hello guest"),
                "task {i}: {greeting}"
            );
        }
        _ => assert!(
            stdout.contains(&format!("env TASK_INDEX={i}")),
            "task {i}: {stdout}"
        ),
    }
}

async fn broker(web_dir: PathBuf) -> BrokerHandle {
    Broker::builder()
        .config(BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            static_dir: Some(web_dir),
            ..BrokerConfig::default()
        })
        .build()
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap()
}

/// Runs `tasks` over one client socket and checks each result with `check`.
async fn run_batch(client: &Client, tasks: Vec<Task>, check: impl Fn(usize, &Output)) {
    let total = tasks.len();
    let mut results = client.submit_many(tasks, 64);
    let mut seen = HashSet::new();
    while let Some((index, result)) = results.next().await {
        let output = result.unwrap_or_else(|e| panic!("task {index}: {e}"));
        check(index, &output);
        assert!(seen.insert(index), "task {index} answered twice");
    }
    assert_eq!(seen.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_provider_end_to_end() {
    let Some(web_dir) = std::env::var_os("WASIMOFF_WEB_DIR").map(PathBuf::from) else {
        eprintln!("skipping: WASIMOFF_WEB_DIR is not set (run `cargo xtask web`)");
        return;
    };
    assert!(
        web_dir.join("pkg/wasimoff.js").exists(),
        "{} has no pkg/wasimoff.js",
        web_dir.display()
    );
    let Some(chrome) = chrome().await else { return };
    let webdriver = &chrome.webdriver;
    let broker = broker(web_dir).await;
    let base = format!("http://{}", broker.local_addr());
    let client = Client::new(base.clone()).unwrap();

    // One click on the page served at `/` makes it a provider with 2 workers.
    webdriver.goto(&format!("{base}/#workers=2")).await.unwrap();
    let start = wait_for("the start button", || async {
        webdriver.find(Locator::Css("#start")).await.ok()
    })
    .await;
    start.click().await.unwrap();
    wait_for("the page to join with 2 workers", || async {
        let status = client.status().await.ok()?;
        let page = page_status(webdriver).await;
        (status.providers == 1 && status.workers == 2 && page["state"] == "connected").then_some(())
    })
    .await;

    // 200 tasks of four kinds, all correct.
    client
        .upload(wasimoff_wasi_apps::HELLO.to_vec(), Some("hello.wasm"))
        .await
        .unwrap();
    client
        .upload(wasimoff_wasi_apps::TSP.to_vec(), Some("tsp.wasm"))
        .await
        .unwrap();
    client
        .upload(wasimoff_wasi_apps::SLEEP.to_vec(), Some("sleep.wasm"))
        .await
        .unwrap();
    client
        .upload(wasimoff_wasi_apps::LOOP.to_vec(), Some("loop.wasm"))
        .await
        .unwrap();
    let rootfs = client
        .upload(rootfs_zip(), Some("rootfs.zip"))
        .await
        .unwrap()
        .to_string();
    let tasks: Vec<Task> = (0..200).map(|i| mixed_task(i, &rootfs)).collect();
    run_batch(&client, tasks, check_mixed).await;
    let status = page_status(webdriver).await;
    assert!(number(&status, "tasksFinished") >= 200, "{status}");
    assert_eq!(number(&status, "tasksFailed"), 0, "{status}");

    if let Some(path) = std::env::var_os("WASIMOFF_SCREENSHOT") {
        // A screenshot while the page works: a batch of short sleeps keeps both workers busy.
        let sleepers: Vec<Task> = (0..40)
            .map(|i| {
                Task::wasip1("sleep.wasm")
                    .args(["150"])
                    .reference(i.to_string())
            })
            .collect();
        let batch = {
            let client = client.clone();
            tokio::spawn(async move {
                run_batch(&client, sleepers, |i, o| assert_eq!(o.status, 0, "{i}")).await;
            })
        };
        wait_for("both workers busy", || async {
            (number(&page_status(webdriver).await, "busy") == 2).then_some(())
        })
        .await;
        let png = webdriver.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        batch.await.unwrap();
    }

    // A task cancelled mid-run (its client goes away) frees its worker: the worker is
    // terminated, and then both workers run tasks at once again.
    let killed_before = number(&page_status(webdriver).await, "workersKilled");
    let session = client.session().await.unwrap();
    let spinning = tokio::spawn({
        let session = session.clone();
        async move {
            session
                .run(
                    Task::wasip1("loop.wasm")
                        .argv0("loop.wasm")
                        .timeout(Duration::from_secs(300)),
                )
                .await
        }
    });
    wait_for("the loop task to run in a worker", || async {
        (number(&page_status(webdriver).await, "workersExecuting") == 1).then_some(())
    })
    .await;
    session.close().await;
    assert!(
        spinning.await.unwrap().is_err(),
        "the loop task cannot succeed"
    );
    wait_for("the worker to be terminated and freed", || async {
        let status = page_status(webdriver).await;
        (number(&status, "workersKilled") == killed_before + 1 && number(&status, "busy") == 0)
            .then_some(())
    })
    .await;
    let pair: Vec<Task> = (0..2)
        .map(|i| {
            Task::wasip1("sleep.wasm")
                .args(["1500"])
                .reference(i.to_string())
        })
        .collect();
    let both = {
        let client = client.clone();
        tokio::spawn(async move {
            run_batch(&client, pair, |i, o| assert_eq!(o.status, 0, "{i}")).await;
        })
    };
    wait_for("two tasks running at once after the cancel", || async {
        (number(&page_status(webdriver).await, "busy") == 2).then_some(())
    })
    .await;
    both.await.unwrap();

    // Reloading the page reconnects it (it remembers that it contributes) and work continues.
    let connections = number(&page_status(webdriver).await, "connections");
    assert!(connections >= 1);
    webdriver.refresh().await.unwrap();
    wait_for("the reloaded page to reconnect", || async {
        let page = page_status(webdriver).await;
        let broker = client.status().await.ok()?;
        (page["state"] == "connected" && broker.providers == 1 && broker.workers == 2).then_some(())
    })
    .await;
    let tasks: Vec<Task> = (0..40).map(|i| mixed_task(i, &rootfs)).collect();
    run_batch(&client, tasks, check_mixed).await;
    let status = page_status(webdriver).await;
    assert!(number(&status, "tasksFinished") >= 40, "{status}");

    chrome.webdriver.clone().close().await.unwrap();
    broker.shutdown().await;
}

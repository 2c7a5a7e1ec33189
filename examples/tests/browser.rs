//! The browser provider end to end, in headless Chromium driven through chromedriver: the broker
//! serves the volunteer page, one click makes the page a provider with 2 workers, a client
//! submits 200 tasks (hello with args and stdin, tsp, rootfs + artifacts, envs) and checks every
//! result; `wasiprobe` (every WASI call) prints exactly what it prints under wasmtime-wasi; a
//! task cancelled mid-run frees its worker; a reload reconnects and work continues.
//!
//! The same package as a provider in Node.js (`examples/node-provider/provider.mjs`, workers on
//! `node:worker_threads`): it joins with 2 workers, runs a mixed batch, a cancelled task frees
//! its worker, and SIGTERM drains a running task and exits 0.
//!
//! The broker's operator dashboard (`/status`) with native providers connected: their rows,
//! counts and a failure appear (`WASIMOFF_DASHBOARD_SCREENSHOT=<path>` keeps a screenshot; the
//! one in `docs/dashboard.png` was taken so). It needs only chromedriver + Chromium.
//!
//! What is tested is what would be published: every test installs the npm package with
//! `npm install` from the tarball `cargo xtask web` packed (`<target>/npm/wasimoff-*.tgz`) and
//! gives the pages that copy as their `pkg/`; the Node.js tests import it from there (one by the
//! package's name, as an npm user would).
//!
//! Needs the page built by `cargo xtask web` (`WASIMOFF_WEB_DIR` points at it; `cargo xtask ci`
//! builds it and sets it), `npm`, and `/usr/bin/chromedriver` + `/usr/bin/chromium` (the Node.js
//! tests: `node` 20.10+ on `PATH`). Without them a test says so and passes vacuously;
//! `cargo xtask ci` always provides them. Set `WASIMOFF_SCREENSHOT=<path>` to keep a screenshot
//! of the page at work.

#![allow(clippy::print_stderr, reason = "the test reports what it skips")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::HashSet,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use fantoccini::Locator;
use futures::StreamExt;

use wasimoff_client::{Client, Output, Task};

#[path = "support/chrome.rs"]
mod chrome;
#[path = "support/ffmpeg.rs"]
mod ffmpeg;
#[path = "support/zipfile.rs"]
mod zipfile;

use chrome::{Chrome, PATIENCE, number, wait_for};

fn rootfs_zip() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("greeting.txt", options).unwrap();
    zip.write_all(b"hello from the rootfs\n").unwrap();
    zip.finish().unwrap().into_inner()
}

fn unzip(bytes: &[u8], name: &str) -> String {
    String::from_utf8(zipfile::entry(bytes, name)).unwrap()
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

/// Uploads the guests the tests run (`hello.wasm`, `tsp.wasm`, `sleep.wasm`, `loop.wasm`) and
/// the rootfs zip; returns the rootfs's ref.
async fn upload_guests(client: &Client) -> String {
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
    client
        .upload(rootfs_zip(), Some("rootfs.zip"))
        .await
        .unwrap()
        .to_string()
}

/// The `WASIMOFF_WEB_DIR` the tests need (with `pkg/wasimoff.js`), or `None` (skip).
fn web_dir() -> Option<PathBuf> {
    let Some(web_dir) = std::env::var_os("WASIMOFF_WEB_DIR").map(PathBuf::from) else {
        eprintln!("skipping: WASIMOFF_WEB_DIR is not set (run `cargo xtask web`)");
        return None;
    };
    assert!(
        web_dir.join("pkg/wasimoff.js").exists(),
        "{} has no pkg/wasimoff.js",
        web_dir.display()
    );
    Some(web_dir)
}

/// The npm package as a user gets it: installed by npm from the tarball `cargo xtask web`
/// packed next to the page (`<target>/npm/`). Removed on drop.
struct Installed {
    /// The npm prefix: `node_modules/wasimoff` in it.
    dir: tempfile::TempDir,
}

impl Installed {
    /// `npm install`s the single tarball in `<web_dir>/../npm`; `None` (skip) without npm.
    fn from_tarball(web_dir: &Path) -> Option<Installed> {
        if std::process::Command::new("npm")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipping: `npm` is not on PATH");
            return None;
        }
        let packed = web_dir.with_file_name("npm");
        let tarballs: Vec<PathBuf> = std::fs::read_dir(&packed)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask web`)", packed.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "tgz"))
            .collect();
        let [tarball] = tarballs.as_slice() else {
            panic!(
                "{} should hold exactly one tarball, not {tarballs:?} (run `cargo xtask web`)",
                packed.display()
            );
        };
        let dir = tempfile::tempdir().unwrap();
        // No dependencies: nothing to fetch.
        let status = std::process::Command::new("npm")
            .args([
                "install",
                "--offline",
                "--no-audit",
                "--no-fund",
                "--no-save",
            ])
            .args(["--loglevel", "error", "--prefix"])
            .arg(dir.path())
            .arg(tarball)
            .status()
            .unwrap();
        assert!(status.success(), "npm install {} failed", tarball.display());
        let installed = Installed { dir };
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(installed.pkg().join("package.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["name"], "wasimoff");
        assert_eq!(manifest["version"], env!("CARGO_PKG_VERSION"));
        for field in ["main", "types"] {
            let file = manifest[field].as_str().unwrap();
            assert!(installed.pkg().join(file).is_file(), "{field}: {file}");
        }
        Some(installed)
    }

    /// `node_modules/wasimoff`.
    fn pkg(&self) -> PathBuf {
        self.dir.path().join("node_modules/wasimoff")
    }

    /// A copy of `site` (a page `cargo xtask web` assembled) with this package as its `pkg/`.
    fn page(&self, site: &Path) -> tempfile::TempDir {
        let page = tempfile::tempdir().unwrap();
        copy_tree(site, page.path(), &|path| path == site.join("pkg"));
        copy_tree(&self.pkg(), &page.path().join("pkg"), &|_| false);
        page
    }
}

/// Copies the files under `from` into `to`, but not those `skip` names.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        if skip(&source) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&source, &dest, skip);
        } else {
            std::fs::copy(&source, &dest).unwrap();
        }
    }
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

/// Runs `n` `sleep <ms>` tasks in the background; the handle ends when all have succeeded.
fn sleepers(client: &Client, n: usize, ms: u64) -> tokio::task::JoinHandle<()> {
    let tasks: Vec<Task> = (0..n)
        .map(|i| {
            Task::wasip1("sleep.wasm")
                .args([ms.to_string()])
                .reference(i.to_string())
        })
        .collect();
    let client = client.clone();
    tokio::spawn(async move {
        run_batch(&client, tasks, |i, o| assert_eq!(o.status, 0, "{i}")).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_provider_end_to_end() {
    let Some(web_dir) = web_dir() else { return };
    let Some(installed) = Installed::from_tarball(&web_dir) else {
        return;
    };
    let chrome = match Chrome::start().await {
        Ok(chrome) => chrome,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let webdriver = &chrome.webdriver;
    let page = installed.page(&web_dir);
    let broker = chrome::broker(page.path().to_path_buf()).await;
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
        let page = chrome.page_status().await;
        // 2 workers and, by default, one task waiting on the page per worker: 4 slots.
        (status.providers == 1 && status.workers == 4 && page["state"] == "connected").then_some(())
    })
    .await;

    // 200 tasks of four kinds, all correct.
    let rootfs = upload_guests(&client).await;
    let tasks: Vec<Task> = (0..200).map(|i| mixed_task(i, &rootfs)).collect();
    run_batch(&client, tasks, check_mixed).await;
    let status = chrome.page_status().await;
    assert!(number(&status, "tasksFinished") >= 200, "{status}");
    assert_eq!(number(&status, "tasksFailed"), 0, "{status}");

    // wasiprobe through the page: every WASI call answers as it does under wasmtime-wasi.
    client
        .upload(wasimoff_wasi_apps::PROBE.to_vec(), Some("wasiprobe.wasm"))
        .await
        .unwrap();
    let empty = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()))
        .finish()
        .unwrap()
        .into_inner();
    let empty = client.upload(empty, None).await.unwrap().to_string();
    let probe = client
        .run(
            Task::wasip1("wasiprobe.wasm")
                .argv0("wasiprobe")
                .args(["first arg", "ünïcode"])
                .rootfs(empty.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(
        probe.status,
        7,
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout),
        wasimoff_wasi_apps::PROBE_EXPECTED,
        "wasiprobe on the page differs from wasmtime-wasi"
    );

    if let Some(path) = std::env::var_os("WASIMOFF_SCREENSHOT") {
        // A screenshot while the page works: a batch of short sleeps keeps both workers busy.
        let batch = sleepers(&client, 60, 150);
        wait_for("both workers busy and a throughput shown", || async {
            let page = chrome.page_status().await;
            let rate = page["tasksPerSecond"].as_f64().unwrap_or(0.0);
            (number(&page, "workersExecuting") == 2
                && rate > 0.0
                && number(&page, "tasksFinished") >= 220)
                .then_some(())
        })
        .await;
        let png = webdriver.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
        batch.await.unwrap();
    }

    // A task cancelled mid-run (its client goes away) frees its worker: the worker is
    // terminated, and then both workers run tasks at once again.
    let killed_before = number(&chrome.page_status().await, "workersKilled");
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
        (number(&chrome.page_status().await, "workersExecuting") == 1).then_some(())
    })
    .await;
    session.close().await;
    assert!(
        spinning.await.unwrap().is_err(),
        "the loop task cannot succeed"
    );
    wait_for("the worker to be terminated and freed", || async {
        let status = chrome.page_status().await;
        (number(&status, "workersKilled") == killed_before + 1 && number(&status, "busy") == 0)
            .then_some(())
    })
    .await;
    let both = sleepers(&client, 2, 1500);
    wait_for("two tasks running at once after the cancel", || async {
        (number(&chrome.page_status().await, "workersExecuting") == 2).then_some(())
    })
    .await;
    both.await.unwrap();

    // The page offloads too: the package's `Client` submits a task (it runs on this very page).
    let offloaded = webdriver
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            (async () => {
              const { default: init, Client } = await import("/pkg/wasimoff.js");
              await init();
              const client = new Client(location.origin);
              const r = await client.submit({ binary: "hello.wasm", args: ["hello.wasm", "from-page", "stdin"], stdin: "page stdin" });
              let failed = {};
              try { await client.submit({ binary: "no-such.wasm", args: ["no-such.wasm"] }); }
              catch (e) { failed = { code: e.code, message: e.message }; }
              let trapped = {};
              try { await client.submit({ binary: "hello.wasm", args: ["hello.wasm", "trap"] }); }
              catch (e) { trapped = { code: e.code, kind: e.kind, stdout: e.stdout }; }
              done({ status: r.status, stdout: r.stdoutText, failed, trapped });
            })().catch((e) => done({ error: String(e) }));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(offloaded["status"], 0, "{offloaded}");
    let stdout = offloaded["stdout"].as_str().unwrap_or_default();
    // `args` is the whole argv, program name once, as docs/browser-api.md shows.
    assert!(
        stdout.contains(r#"args = ["hello.wasm", "from-page", "stdin"]"#)
            && stdout.contains("page stdin"),
        "{offloaded}"
    );
    // Errors carry a stable code; a failed task its kind and output.
    assert_eq!(offloaded["failed"]["code"], "not_found", "{offloaded}");
    assert_eq!(offloaded["trapped"]["code"], "task_failed", "{offloaded}");
    assert_eq!(offloaded["trapped"]["kind"], "trap", "{offloaded}");
    assert!(
        offloaded["trapped"]["stdout"]
            .as_str()
            .is_some_and(|s| s.contains("Hello, wasimoff!")),
        "{offloaded}"
    );

    // FFmpeg in the tab: a clip made, screenshot, recoded and thumbnailed, files in and out.
    ffmpeg::example_tasks(&client, 4).await;

    // Reloading the page reconnects it (it remembers that it contributes) and work continues.
    let connections = number(&chrome.page_status().await, "connections");
    assert!(connections >= 1);
    webdriver.refresh().await.unwrap();
    wait_for("the reloaded page to reconnect", || async {
        let page = chrome.page_status().await;
        let broker = client.status().await.ok()?;
        (page["state"] == "connected" && broker.providers == 1 && broker.workers == 4).then_some(())
    })
    .await;
    let tasks: Vec<Task> = (0..40).map(|i| mixed_task(i, &rootfs)).collect();
    run_batch(&client, tasks, check_mixed).await;
    let status = chrome.page_status().await;
    assert!(number(&status, "tasksFinished") >= 40, "{status}");

    chrome.webdriver.clone().close().await.unwrap();
    broker.shutdown().await;
}

/// The lines a child process writes (stdout and stderr), echoed to the test's stderr.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Collects the lines of `stream` in the background.
    fn follow(&self, stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        use tokio::io::AsyncBufReadExt;
        let lines = self.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("node: {line}");
                lines.0.lock().unwrap().push(line);
            }
        });
    }

    /// The number of lines so far.
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The first line that contains every one of `parts`.
    fn find(&self, parts: &[&str]) -> Option<String> {
        self.find_after(0, parts)
    }

    /// The first line from the `start`th on that contains every one of `parts`.
    fn find_after(&self, start: usize, parts: &[&str]) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .skip(start)
            .find(|line| parts.iter().all(|part| line.contains(part)))
            .cloned()
    }

    fn count(&self, parts: &[&str]) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|line| parts.iter().all(|part| line.contains(part)))
            .count()
    }
}

/// Whether `node` runs and is recent enough for `--experimental-websocket` (20.10+).
fn node_usable() -> bool {
    let Ok(output) = std::process::Command::new("node").arg("--version").output() else {
        eprintln!("skipping: `node` is not on PATH");
        return false;
    };
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let mut parts = version
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < (20, 10) {
        eprintln!("skipping: node {version} has no --experimental-websocket (needs 20.10+)");
        return false;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_provider_end_to_end() {
    let Some(web_dir) = web_dir() else { return };
    if !node_usable() {
        return;
    }
    let Some(installed) = Installed::from_tarball(&web_dir) else {
        return;
    };
    let pkg = installed.pkg();
    let broker = chrome::broker(web_dir).await;
    let base = format!("http://{}", broker.local_addr());
    let client = Client::new(base.clone()).unwrap();

    // `node provider.mjs <broker> 2` joins with 2 workers.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node-provider/provider.mjs");
    let mut node = tokio::process::Command::new("node")
        .arg("--experimental-websocket")
        .arg(&script)
        .arg(&base)
        .arg("2")
        .env("WASIMOFF_PKG", &pkg)
        .env("WASIMOFF_GRACE_MS", "20000")
        .env("WASIMOFF_STATUS_MS", "50")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Lines::default();
    lines.follow(node.stdout.take().unwrap());
    lines.follow(node.stderr.take().unwrap());
    wait_for("the node provider to join with 2 workers", || async {
        let status = client.status().await.ok()?;
        let connected = lines.find(&["state connected"]).is_some();
        (connected && status.providers == 1 && status.workers == 4).then_some(())
    })
    .await;

    // A mixed batch, all correct.
    let rootfs = upload_guests(&client).await;
    let tasks: Vec<Task> = (0..40).map(|i| mixed_task(i, &rootfs)).collect();
    run_batch(&client, tasks, check_mixed).await;
    wait_for("40 taskend lines", || async {
        (lines.count(&["taskend", "ok status=0"]) >= 40).then_some(())
    })
    .await;

    // A task cancelled mid-run (its client goes away) frees its worker: the worker thread is
    // terminated, and then both workers run tasks at once again.
    let session = client.session().await.unwrap();
    let before = lines.len();
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
    wait_for("the loop task to run in a worker thread", || async {
        let started = lines.find_after(before, &["taskstart", "loop.wasm"]);
        let executing = lines.find_after(before, &["status", "busy=1 executing=1 killed=0"]);
        (started.is_some() && executing.is_some()).then_some(())
    })
    .await;
    session.close().await;
    assert!(
        spinning.await.unwrap().is_err(),
        "the loop task cannot succeed"
    );
    let ended = wait_for("the loop task's worker to be terminated", || async {
        lines.find(&["taskend", "failed", "killed=1"])
    })
    .await;
    assert!(ended.contains("executing=0"), "{ended}");
    wait_for("the broker to free the slot", || async {
        (client.status().await.ok()?.running == 0).then_some(())
    })
    .await;
    let pair: Vec<Task> = (0..2)
        .map(|i| {
            Task::wasip1("sleep.wasm")
                .args(["1500"])
                .reference(i.to_string())
        })
        .collect();
    let before = lines.len();
    let both = {
        let client = client.clone();
        tokio::spawn(async move {
            run_batch(&client, pair, |i, o| assert_eq!(o.status, 0, "{i}")).await;
        })
    };
    wait_for("two tasks executing at once after the cancel", || async {
        lines.find_after(before, &["status", "busy=2 executing=2 killed=1"])
    })
    .await;
    both.await.unwrap();

    // SIGTERM drains: the running task finishes and reaches its client, then node exits 0.
    let before = lines.len();
    let draining = {
        let client = client.clone();
        tokio::spawn(async move { client.run(Task::wasip1("sleep.wasm").args(["1500"])).await })
    };
    wait_for("the last task to run in a worker thread", || async {
        lines.find_after(before, &["status", "busy=1 executing=1"])
    })
    .await;
    let pid = node.id().expect("node is running");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::time::timeout(PATIENCE, node.wait())
        .await
        .expect("node exits after draining")
        .unwrap();
    assert!(exit.success(), "node exited with {exit}");
    let output = draining.await.unwrap().expect("the drained task succeeds");
    assert_eq!(output.status, 0);
    assert!(lines.find(&["draining", "SIGTERM", "busy=1"]).is_some());
    // The one failure is the cancelled loop task.
    assert!(lines.find(&["stopped", "failed=1"]).is_some());
    wait_for("the broker to see the provider go", || async {
        (client.status().await.ok()?.providers == 0).then_some(())
    })
    .await;

    broker.shutdown().await;
}

/// A page of the web demo open in Chromium: `examples/web-demo` as `cargo xtask web`
/// assembles it next to the volunteer page, with the package installed from its tarball.
struct WebDemo {
    chrome: Chrome,
    server: wasimoff_broker::BrokerHandle,
    _site: tempfile::TempDir,
}

impl WebDemo {
    /// Opens `page` with `extra` files added to the site, once the element `ready` is enabled
    /// (returned too); `None`, after a note, where the page, npm or Chromium is missing.
    async fn open(
        page: &str,
        ready: &str,
        extra: &[(&str, &[u8])],
    ) -> Option<(WebDemo, fantoccini::elements::Element)> {
        let web_dir = web_dir()?;
        let demo = web_dir.with_file_name("web-demo");
        assert!(
            demo.join("hello.wasm").exists(),
            "{} has no hello.wasm",
            demo.display()
        );
        let installed = Installed::from_tarball(&web_dir)?;
        let site = installed.page(&demo);
        for (name, bytes) in extra {
            std::fs::write(site.path().join(name), bytes).unwrap();
        }
        let chrome = match Chrome::start().await {
            Ok(chrome) => chrome,
            Err(why) => {
                eprintln!("skipping: {why}");
                return None;
            }
        };
        // Any static server will do; the broker's sends the isolation headers.
        let server = chrome::broker(site.path().to_path_buf()).await;
        chrome
            .webdriver
            .goto(&format!("http://{}/{page}", server.local_addr()))
            .await
            .unwrap();
        let element = wait_for(&format!("#{ready} to be enabled"), || async {
            let element = chrome.webdriver.find(Locator::Id(ready)).await.ok()?;
            element.is_enabled().await.ok()?.then_some(element)
        })
        .await;
        let demo = WebDemo {
            chrome,
            server,
            _site: site,
        };
        Some((demo, element))
    }

    /// The text of the element `id`, `None` if there is none.
    async fn text(&self, id: &str) -> Option<String> {
        let element = self.chrome.webdriver.find(Locator::Id(id)).await.ok()?;
        element.text().await.ok()
    }

    async fn close(self) {
        self.chrome.webdriver.clone().close().await.unwrap();
        self.server.shutdown().await;
    }
}

/// `examples/web-demo` (assembled by `cargo xtask web` next to the volunteer page): the page
/// runs the hello guest with the form's args, env and stdin through `Executor`, no broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_demo_runs_hello() {
    let Some((demo, run)) = WebDemo::open("", "run", &[]).await else {
        return;
    };
    let args = demo
        .chrome
        .webdriver
        .find(Locator::Id("args"))
        .await
        .unwrap();
    args.clear().await.unwrap();
    args.send_keys("hello.wasm demo-arg print_envs stdin")
        .await
        .unwrap();
    run.click().await.unwrap();
    let status = wait_for("the result", || async {
        let text = demo.text("status").await?;
        (text != "–" && text != "running…").then_some(text)
    })
    .await;
    let stdout = demo.text("stdout").await.unwrap();
    assert_eq!(status, "0", "{stdout}");
    assert!(stdout.contains("\"demo-arg\""), "{stdout}");
    assert!(stdout.contains("env GREETING=hi"), "{stdout}");
    assert!(
        stdout.contains("Text on stdin comes back on stdout."),
        "{stdout}"
    );
    demo.close().await;
}

/// A clip made natively (wasmtime, in this process) by FFmpeg: 2 s of its test pattern at
/// 320x240 in MPEG-4 with a PCM tone, as a QuickTime file.
async fn native_clip(ffmpeg: &[u8]) -> Vec<u8> {
    use wasimoff_core::executor::{CancellationToken, ExecTask, Executor as _, ResolvedFile};
    let executor =
        wasimoff_provider::WasmtimeExecutor::new(wasimoff_provider::WasmtimeConfig::default())
            .unwrap();
    let args = "ffmpeg -hide_banner -nostdin -f lavfi -i testsrc=duration=2:size=320x240:rate=25 \
                -f lavfi -i sine=duration=2 -c:v mpeg4 -c:a pcm_s16le /clip.mov";
    let mut task = ExecTask::new(
        "clip",
        ResolvedFile::from_bytes(ffmpeg.to_vec()),
        args.split_whitespace().map(str::to_owned).collect(),
    );
    task.artifacts = vec!["/clip.mov".to_owned()];
    let output = executor
        .execute(task, CancellationToken::new())
        .await
        .unwrap();
    zipfile::entry(&output.artifacts.expect("the clip"), "clip.mov")
}

/// `examples/web-demo/transcode.html`: a file picked in the page (the file input, as a visitor
/// would) is transcoded in the tab by FFmpeg through `Executor`, and the outputs come back as
/// downloads: an MPEG-4 video with a PNG of its first frame, then the audio alone as WAV.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_demo_transcodes_a_picked_file() {
    let ffmpeg = match wasimoff_wasi_apps::ffmpeg() {
        Ok(ffmpeg) => ffmpeg,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let picked = tempfile::tempdir().unwrap();
    let clip = picked.path().join("my clip.mov");
    std::fs::write(&clip, native_clip(&ffmpeg).await).unwrap();
    let Some((demo, pick)) =
        WebDemo::open("transcode.html", "pick", &[("ffmpeg.wasm", &ffmpeg)]).await
    else {
        return;
    };
    let webdriver = &demo.chrome.webdriver;
    // What a visitor's pick does: chromedriver sets the file input to a local path.
    pick.send_keys(clip.to_str().unwrap()).await.unwrap();
    let info = wait_for("the picked file", || async {
        let text = demo.text("input-info").await?;
        text.contains("my clip.mov").then_some(text)
    })
    .await;
    assert!(info.contains(" MB"), "{info}");
    let args = webdriver
        .find(Locator::Id("args"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(args.contains("-i /input.mov"), "{args}");

    // Runs the preset shown and returns the result's status line and its files.
    let transcode = || async {
        webdriver
            .find(Locator::Id("run"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let status = wait_for("the transcode", || async {
            let text = demo.text("status").await?;
            (text.starts_with("done") || text.starts_with("failed") || text.contains("rror"))
                .then_some(text)
        })
        .await;
        let log = demo.text("log").await.unwrap();
        assert!(status.starts_with("done"), "{status}\n{log}");
        let files = webdriver
            .execute(
                "return [...document.querySelectorAll('#outputs a')].map((a) => a.download)",
                vec![],
            )
            .await
            .unwrap();
        (log, files)
    };

    // The first preset: MPEG-4 video 480 lines high, with a 180-line PNG of the first frame.
    let (log, files) = transcode().await;
    assert_eq!(
        files,
        serde_json::json!(["output.mp4", "preview.png"]),
        "{log}"
    );
    assert!(log.contains("mpeg4") && log.contains("640x480"), "{log}");
    let preview = wait_for("the preview to load", || async {
        let size = webdriver
            .execute(
                "const img = document.querySelector('#outputs img'); \
                 return img && img.complete ? [img.naturalWidth, img.naturalHeight] : null",
                vec![],
            )
            .await
            .ok()?;
        (!size.is_null()).then_some(size)
    })
    .await;
    assert_eq!(preview, serde_json::json!([240, 180]));

    // The audio alone, as WAV.
    webdriver
        .find(Locator::Id("preset"))
        .await
        .unwrap()
        .select_by_value("wav")
        .await
        .unwrap();
    let (log, files) = transcode().await;
    assert_eq!(files, serde_json::json!(["output.wav"]), "{log}");
    assert!(log.contains("pcm_s16le"), "{log}");
    demo.close().await;
}

/// The installed package as an npm user's Node.js program sees it: imported by its name
/// (`main`/`exports`), the module found by `import.meta.resolve("wasimoff/wasimoff_bg.wasm")`
/// as the README shows, and a guest run with `Executor` in a worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn npm_package_imports_by_name_in_node() {
    let Some(web_dir) = web_dir() else { return };
    if !node_usable() {
        return;
    }
    let Some(installed) = Installed::from_tarball(&web_dir) else {
        return;
    };
    let dir = installed.dir.path();
    std::fs::write(dir.join("hello.wasm"), wasimoff_wasi_apps::HELLO).unwrap();
    std::fs::write(
        dir.join("check.mjs"),
        r#"import { readFile } from "node:fs/promises";
import init, { Executor } from "wasimoff";
await init({ module_or_path: await readFile(new URL(import.meta.resolve("wasimoff/wasimoff_bg.wasm"))) });
const manifest = JSON.parse(await readFile(new URL(import.meta.resolve("wasimoff/package.json"))));
const executor = new Executor({ workers: 1 });
const r = await executor.run({
  binary: await readFile(new URL("./hello.wasm", import.meta.url)),
  args: ["hello.wasm", "from-node", "stdin"],
  stdin: "node stdin",
  timeoutMs: 30000,
});
console.log(JSON.stringify({ version: manifest.version, status: r.status, error: r.error, stdout: r.stdoutText }));
process.exit(0);
"#,
    )
    .unwrap();
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::process::Command::new("node")
            .arg(dir.join("check.mjs"))
            .current_dir(dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node finishes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(result["status"], 0, "{result}");
    let guest = result["stdout"].as_str().unwrap();
    assert!(
        guest.contains("\"from-node\"") && guest.contains("node stdin"),
        "{result}"
    );
}

/// The broker's operator dashboard in Chromium: two native providers appear as rows with their
/// kind and slots, finished tasks as counts, a timed-out task as a recent failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_dashboard_shows_providers() {
    let chrome = match Chrome::start().await {
        Ok(chrome) => chrome,
        Err(why) => {
            eprintln!("skipping: {why}");
            return;
        }
    };
    let config = wasimoff_broker::BrokerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        log_tasks: false,
        ..wasimoff_broker::BrokerConfig::default()
    };
    let broker = wasimoff_broker::Broker::builder()
        .config(config)
        .build()
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let url = broker.url();
    let mut providers = Vec::new();
    for (name, workers) in [("rack-1", 2), ("rack-2", 1)] {
        let executor =
            wasimoff_provider::WasmtimeExecutor::new(wasimoff_provider::WasmtimeConfig {
                workers,
                ..wasimoff_provider::WasmtimeConfig::default()
            })
            .unwrap();
        let config = wasimoff_provider::runtime::ProviderConfig {
            name: name.into(),
            ..wasimoff_provider::runtime::ProviderConfig::new(url.clone())
        };
        let provider = wasimoff_provider::runtime::Provider::builder(config, Arc::new(executor))
            .build()
            .unwrap();
        let runner = provider.clone();
        tokio::spawn(async move { runner.run().await });
        providers.push(provider);
    }
    let client = Client::new(&url).unwrap();
    wait_for("both providers", || async {
        let status = client.status().await.ok()?;
        // Workers plus one prefetch slot per worker: 4 + 2.
        (status.providers == 2 && status.slots() == 6).then_some(())
    })
    .await;

    let webdriver = &chrome.webdriver;
    webdriver.goto(&format!("{url}/status")).await.unwrap();
    let row = wait_for("the provider rows", || async {
        let row = webdriver
            .find(Locator::Css(r#"tr[data-provider="rack-1"]"#))
            .await
            .ok()?;
        webdriver
            .find(Locator::Css(r#"tr[data-provider="rack-2"]"#))
            .await
            .ok()?;
        Some(row)
    })
    .await;
    let text = row.text().await.unwrap();
    assert!(text.contains("native"), "{text}");
    assert!(text.contains('4'), "4 slots: {text}");

    // Work for the charts, and one task that runs out of time for the failures.
    upload_guests(&client).await;
    let timeout = Task::wasip1("loop.wasm").timeout(Duration::from_millis(500));
    let failed = client.run(timeout).await;
    assert!(failed.is_err(), "{failed:?}");
    // With a screenshot to take, enough work for a few polls' worth of chart.
    let screenshot = std::env::var_os("WASIMOFF_DASHBOARD_SCREENSHOT");
    let n = if screenshot.is_some() { 1500 } else { 120 };
    let batch = sleepers(&client, n, 50);
    wait_for("tasks counted and the failure shown", || async {
        let completed = webdriver
            .find(Locator::Id("c-completed"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let failures = webdriver
            .find(Locator::Css("#failures td.bad"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let lines = webdriver
            .find_all(Locator::Css("#chart-rate polyline"))
            .await
            .ok()?;
        (completed.parse::<u64>().ok()? >= 40 && !failures.is_empty() && !lines.is_empty())
            .then_some(())
    })
    .await;
    if let Some(path) = screenshot {
        // More polls, so that the charts have lines to show.
        wait_for("most of the batch", || async {
            let completed = webdriver
                .find(Locator::Id("c-completed"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (completed.parse::<u64>().ok()? >= 1300).then_some(())
        })
        .await;
        let png = webdriver.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
    }
    batch.await.unwrap();
    chrome.webdriver.clone().close().await.unwrap();
    for provider in providers {
        provider.shutdown_default().await;
    }
    broker.shutdown().await;
}

//! Chaos, bounded (issue 13): the `wasimoff-broker` binary in a child process (so its memory is
//! its own) with a 64 MiB byte budget; two real providers (wasmtime) and two fake ones, one
//! that refuses every task and one that dies on its first; one real provider killed mid-run.
//! Concurrently: good `hello` tasks over the client WebSocket and Connect, each with its own
//! argument; sleeping, looping and flooding guests; oversized, malformed and over-budget
//! requests.
//!
//! Checked: every good task is answered once, with exactly its own output; every hostile
//! request gets its clear error (a status and a message naming the limit) or, for hostile
//! guests, a timeout or a cut output; the sleepers and loops let go of the healthy provider's
//! workers; no task stays held and the broker counted each good answer once; the broker's peak
//! RSS stays under the budget plus [`BASE_RSS`]. The whole test runs under [`OUTER`]: nothing
//! may hang. Synchronisation is by events (queue length, task arrivals, provider status), never
//! by sleeping.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, stream};
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wasimoff_core::envelope::Payload;
use wasimoff_core::messenger::{Messenger, MessengerConfig};
use wasimoff_core::proto::task;
use wasimoff_core::transport::WebSocketTransport;
use wasimoff_provider::runtime::{Provider, ProviderConfig, TaskEvent};
use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};

use crate::support::{Behaviour, in_ms, provider, run_proto, wait_for_queued, wasip1};

const MIB: usize = 1 << 20;
/// The broker's byte budget (`--max-queue-bytes`).
const BUDGET: usize = 64 * MIB;
/// What the broker may use beyond the budget (measured in a debug build: peaks of 123-137 MiB
/// in all; 144-151 MiB without `release_large_buffers`): the process itself (~16 MiB idle),
/// request bodies being read (one hostile request at a time here, up to [`MAX_UPLOAD`], plus two
/// 8 MiB tasks), and, most of it, the copies of tasks on their way to providers: a task sent is
/// encoded once more and copied again into the socket's write buffer (tungstenite), 16 MiB more
/// per 8 MiB task until written, and that buffer keeps its size afterwards. 64 MiB is not
/// enough for this (docs/benchmarks.md, "Hostile load").
const BASE_RSS: usize = 96 * MIB;
/// The provider frame limit (`--max-frame`), and so the largest task request.
const MAX_FRAME: usize = 12 * MIB;
/// The largest request body (`--max-upload`; the router allows 1 MiB more).
const MAX_UPLOAD: usize = 24 * MIB;
/// stdin of each over-budget task: 7 fit in the budget, the 8th does not (each task also costs
/// its books).
const BIG_STDIN: usize = 8 * MIB;
/// The output cap of the real providers.
const OUTPUT_CAP: usize = MIB;
/// The bound on the whole test.
const OUTER: Duration = Duration::from_secs(55);

/// What `hello.wasm <tag>` prints.
fn hello_output(tag: &str) -> String {
    format!("Hello, wasimoff! This is the hello guest.\nargs = [\"hello.wasm\", \"{tag}\"]\n")
}

/// The broker binary in a child process; killed when dropped.
struct BrokerChild {
    child: Child,
    url: String,
}

impl BrokerChild {
    fn start(args: &[String]) -> BrokerChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasimoff-broker"))
            .args(["--listen", "127.0.0.1:0", "--memory"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start wasimoff-broker");
        // Reads the log to the end (a full pipe would stall the broker); the first line that
        // names the address is sent back.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some((_, rest)) = line.split_once("broker ready on http://") {
                    let addr: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    let _ = tx.send(addr);
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("broker: {line}");
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the broker never said where it listens");
        BrokerChild {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// `(VmRSS, VmHWM)` of the broker process, in bytes.
    fn memory(&self) -> (usize, usize) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            let kb: usize = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap();
            kb * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for BrokerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real provider (wasmtime, 2 workers) on a runtime of its own, so that it can be killed:
/// shutting the runtime down drops its connection at once, with tasks on it.
struct RealProvider {
    provider: Provider,
    /// Its task events from before it connected.
    events: tokio::sync::broadcast::Receiver<TaskEvent>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl RealProvider {
    fn start(url: &str, name: &str) -> RealProvider {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let executor = WasmtimeExecutor::new(WasmtimeConfig {
            workers: 2,
            default_max_output: OUTPUT_CAP,
            ..WasmtimeConfig::default()
        })
        .unwrap();
        let provider = Provider::builder(
            ProviderConfig {
                name: name.into(),
                ..ProviderConfig::new(url.to_owned())
            },
            Arc::new(executor),
        )
        .build()
        .unwrap();
        let events = provider.task_events();
        let runner = provider.clone();
        runtime.spawn(async move { runner.run().await });
        RealProvider {
            provider,
            events,
            runtime: Some(runtime),
        }
    }

    /// Ids of the tasks that ran `binary` here: (started, finished).
    fn ran(&mut self, binary: &str) -> (Vec<String>, Vec<String>) {
        let (mut started, mut finished) = (Vec::new(), Vec::new());
        loop {
            match self.events.try_recv() {
                Ok(TaskEvent::Started { id, args })
                    if args.first().map(String::as_str) == Some(binary) =>
                {
                    started.push(id)
                }
                Ok(TaskEvent::Finished { id, .. }) => finished.push(id),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    panic!("missed {n} task events")
                }
                Err(_) => break,
            }
        }
        finished.retain(|id| started.contains(id));
        (started, finished)
    }

    /// Waits until the provider's status satisfies `ready`.
    async fn wait(&self, ready: impl FnMut(&wasimoff_provider::runtime::ProviderStatus) -> bool) {
        self.provider.watch().wait_for(ready).await.unwrap();
    }

    /// Drops the connection and every task on it, without a goodbye.
    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for RealProvider {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A request for `hello.wasm <tag>`.
fn hello(tag: &str) -> task::wasip1::Request {
    wasip1("hello.wasm", &["hello.wasm", tag])
}

fn with_stdin(mut request: task::wasip1::Request, len: usize, byte: u8) -> task::wasip1::Request {
    request.params.as_mut().unwrap().stdin = Some(vec![byte; len].into());
    request
}

fn with_deadline(mut request: task::wasip1::Request, ms: i128) -> task::wasip1::Request {
    request.qos = Some(task::QoS {
        deadline: Some(in_ms(ms)),
        ..Default::default()
    });
    request
}

/// The task's stdout if it exited 0, else a description of what came back.
fn ok_stdout(
    status: u16,
    response: &Result<task::wasip1::Response, String>,
) -> Result<String, String> {
    match response {
        Ok(r) => match &r.result {
            Some(task::wasip1::response::Result::Ok(o)) if o.status == Some(0) => {
                Ok(String::from_utf8_lossy(o.stdout.as_deref().unwrap_or_default()).into_owned())
            }
            other => Err(format!("{status}: {other:?}")),
        },
        Err(body) => Err(format!("{status}: {body}")),
    }
}

/// Posts a raw body to `RunWasip1`: (status, body text).
async fn post_raw(base: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/wasimoff.v1.Tasks/RunWasip1"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Asserts a hostile request's answer: this status, and a message containing `needle`.
fn refused(what: &str, (status, body): (u16, String), expected: u16, needle: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert!(
        body.contains(needle),
        "{what}: {status} {body:?} does not name {needle:?}"
    );
}

/// Like [`refused`], for a request sent while the budget may be full: it may instead be refused
/// from its `Content-Length` before it is read (429 naming `max_queue_bytes`), which a client
/// retries later and then gets its own answer.
fn refused_large(what: &str, (status, body): (u16, String), expected: u16, needle: &str) {
    if status == 429 {
        return refused(what, (status, body), 429, "max_queue_bytes");
    }
    refused(what, (status, body), expected, needle);
}

/// A guest that must not run to its end (a sleeper, a loop): answered `deadline_exceeded` at its
/// deadline, or with the provider's timeout result.
fn stopped(what: &str, status: u16, response: &Result<task::wasip1::Response, String>) {
    match response {
        Err(body) if status == 504 => assert!(body.contains("deadline_exceeded"), "{what}: {body}"),
        Ok(r) => match &r.result {
            Some(task::wasip1::response::Result::Error(e)) => {
                assert!(e.contains("deadline") || e.contains("time"), "{what}: {e}")
            }
            other => panic!("{what}: ran to an end: {other:?}"),
        },
        Err(body) => panic!("{what}: {status} {body}"),
    }
}

/// Good tasks over one client WebSocket, `in_flight` at a time: every one must come back with
/// its own output.
async fn good_over_socket(base: String, prefix: &'static str, n: usize, in_flight: usize) -> usize {
    let url = format!("{}/api/client/ws", base.replacen("http", "ws", 1));
    let transport = WebSocketTransport::connect(&url, &[], 64 << 20)
        .await
        .unwrap();
    let (messenger, _incoming) = Messenger::spawn(transport, MessengerConfig::default());
    let answers: Vec<(String, Result<String, String>)> = stream::iter(0..n)
        .map(|i| {
            let messenger = messenger.clone();
            async move {
                let tag = format!("{prefix}-{i}");
                let answer = messenger
                    .call_with_timeout(Payload::Wasip1Request(hello(&tag)), Duration::from_secs(50))
                    .await;
                let got = match answer {
                    Ok(Payload::Wasip1Response(r)) => ok_stdout(200, &Ok(r)),
                    other => Err(format!("{other:?}")),
                };
                (tag, got)
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    check_good(answers, n)
}

/// Good tasks over Connect, `in_flight` at a time.
async fn good_over_connect(
    base: String,
    prefix: &'static str,
    n: usize,
    in_flight: usize,
) -> usize {
    let answers: Vec<(String, Result<String, String>)> = stream::iter(0..n)
        .map(|i| {
            let base = base.clone();
            async move {
                let tag = format!("{prefix}-{i}");
                let (status, response) = run_proto(&base, &hello(&tag)).await;
                (tag, ok_stdout(status, &response))
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    check_good(answers, n)
}

/// Each tag answered once, with exactly its own output. Returns the count.
fn check_good(answers: Vec<(String, Result<String, String>)>, n: usize) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (tag, got) in answers {
        match got {
            Ok(stdout) => assert_eq!(stdout, hello_output(&tag), "good task {tag}"),
            Err(e) => panic!("good task {tag} failed: {e}"),
        }
        *seen.entry(tag).or_default() += 1;
    }
    assert_eq!(seen.len(), n);
    assert!(
        seen.values().all(|&c| c == 1),
        "answered more than once: {seen:?}"
    );
    n
}

/// Sends a raw HTTP request head and then `body_len` bytes (as far as the broker reads them);
/// returns the answer's status line.
async fn raw_status(addr: &str, head: &str, body_len: usize) -> String {
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    // The broker may answer and close before it has read everything: write errors are fine.
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5a; MIB];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            if write.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(2).any(|w| w == b"\r\n") {
        match read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    writer.abort();
    String::from_utf8_lossy(&seen)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Oversized and malformed requests, one after another; each must get its clear error.
async fn hostile_requests(base: String) {
    let empty_args = |n: usize| {
        let mut r = hello("x");
        r.params.as_mut().unwrap().args = vec![String::new(); n];
        r
    };
    // Over max_args (65,536): refused after counting, before anything is held.
    let r = empty_args(65_537);
    refused_large(
        "65,537 args",
        post_raw(&base, "application/proto", r.encode_to_vec()).await,
        400,
        "max_args",
    );
    // Far more list elements than max_args allows: refused before decoding, proto and JSON.
    let r = empty_args(300_000);
    refused_large(
        "300,000 args (proto)",
        post_raw(&base, "application/proto", r.encode_to_vec()).await,
        400,
        "list elements",
    );
    refused_large(
        "300,000 args (JSON)",
        post_raw(&base, "application/json", serde_json::to_vec(&r).unwrap()).await,
        400,
        "list elements",
    );
    // Over max_args_bytes (4 MiB).
    let mut r = hello("x");
    r.params.as_mut().unwrap().args = vec!["a".repeat(3 * MIB), "b".repeat(3 * MIB)];
    refused_large(
        "6 MiB of args",
        post_raw(&base, "application/proto", r.encode_to_vec()).await,
        400,
        "max_args_bytes",
    );
    // Over max_stdin (16 MiB).
    let r = with_stdin(hello("x"), 16 * MIB + 1, b's');
    refused_large(
        "stdin over max_stdin",
        post_raw(&base, "application/proto", r.encode_to_vec()).await,
        400,
        "max_stdin",
    );
    // Within max_stdin but over the provider frame limit.
    let r = with_stdin(hello("x"), MAX_FRAME, b'f');
    refused_large(
        "request over the frame limit",
        post_raw(&base, "application/proto", r.encode_to_vec()).await,
        400,
        "frame limit",
    );
    // A body over max_upload: refused from its Content-Length (413), before it is read.
    let addr = base.trim_start_matches("http://");
    let len = MAX_UPLOAD + 2 * MIB;
    let head = format!(
        "POST /api/client/wasimoff.v1.Tasks/RunWasip1 HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/proto\r\nContent-Length: {len}\r\n\r\n"
    );
    let line = raw_status(addr, &head, len).await;
    assert!(
        line.starts_with("HTTP/1.1 413"),
        "body over max_upload: {line:?}"
    );
    // Garbage.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    refused_large(
        "garbage protobuf",
        post_raw(&base, "application/proto", garbage.clone()).await,
        400,
        "bad message",
    );
    refused_large(
        "garbage JSON",
        post_raw(
            &base,
            "application/json",
            b"{\"params\": {\"args\": [1, {".to_vec(),
        )
        .await,
        400,
        "JSON",
    );
    refused_large(
        "JSON of the wrong shape",
        post_raw(
            &base,
            "application/json",
            b"{\"params\": \"hello\"}".to_vec(),
        )
        .await,
        400,
        "JSON",
    );
    refused_large(
        "no content type",
        post_raw(&base, "text/plain", garbage).await,
        415,
        "Content-Type",
    );
    // A module nobody uploaded, and a deadline already gone.
    let (status, response) = run_proto(&base, &wasip1("nothing.wasm", &["x"])).await;
    refused_large(
        "unknown module",
        (status, response.unwrap_err()),
        404,
        "not_found",
    );
    let (status, response) = run_proto(&base, &with_deadline(hello("late"), -1_000)).await;
    refused_large(
        "past deadline",
        (status, response.unwrap_err()),
        504,
        "deadline_exceeded",
    );
}

/// Over-budget tasks while the budget may be full: each either runs (its own output) or is
/// refused with 429 naming max_queue_bytes. Returns (ran, refused).
async fn budget_pressure(base: String, n: usize) -> (usize, usize) {
    let results: Vec<_> = stream::iter(0..n)
        .map(|i| {
            let base = base.clone();
            async move {
                let tag = format!("pressure-{i}");
                let request = with_stdin(hello(&tag), BIG_STDIN, b'p');
                let (status, response) = run_proto(&base, &request).await;
                (tag, status, response)
            }
        })
        .buffer_unordered(2)
        .collect()
        .await;
    let mut counts = (0, 0);
    for (tag, status, response) in results {
        if status == 429 {
            let body = response.unwrap_err();
            assert!(body.contains("max_queue_bytes"), "{tag}: {body}");
            counts.1 += 1;
        } else {
            assert_eq!(
                ok_stdout(status, &response).as_deref(),
                Ok(hello_output(&tag).as_str())
            );
            counts.0 += 1;
        }
    }
    counts
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of a metric line that starts with `prefix`.
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_good_tasks_survive_hostile_load_within_the_budget() {
    let args = [
        ("--max-queue-bytes", BUDGET),
        ("--max-frame", MAX_FRAME),
        ("--max-upload", MAX_UPLOAD),
    ]
    .iter()
    .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
    .chain(
        [
            "--ping-interval",
            "1",
            "--attempt-grace",
            "1",
            "--task-timeout",
            "30",
            "--provider-wait",
            "20",
        ]
        .map(String::from),
    )
    .collect::<Vec<_>>();
    let broker = BrokerChild::start(&args);
    let base = broker.url.clone();
    let outcome = tokio::time::timeout(OUTER, chaos(&base)).await;
    // The peak over the whole run, whatever happened.
    let (rss, hwm) = broker.memory();
    eprintln!(
        "broker RSS at the end {:.1} MiB, peak {:.1} MiB (budget {} MiB + base {} MiB)",
        rss as f64 / MIB as f64,
        hwm as f64 / MIB as f64,
        BUDGET / MIB,
        BASE_RSS / MIB
    );
    outcome.expect("the chaos run did not finish in time: something hangs");
    assert!(
        hwm < BUDGET + BASE_RSS,
        "broker peak RSS {hwm} bytes exceeds the budget plus the base"
    );
}

async fn chaos(base: &str) {
    for (bytes, name) in [
        (wasimoff_wasi_apps::HELLO, "hello.wasm"),
        (wasimoff_wasi_apps::SLEEP, "sleep.wasm"),
        (wasimoff_wasi_apps::LOOP, "loop.wasm"),
        (wasimoff_wasi_apps::FLOOD, "flood.wasm"),
    ] {
        crate::support::upload(base, bytes, Some(name)).await;
    }

    // 1. No provider yet: 8 MiB tasks queue until the budget is full; the 8th is refused with
    //    429 naming max_queue_bytes (a single task this size fits, so it is "later", not
    //    "never").
    let mut queued = Vec::new();
    for i in 0..7u8 {
        let url = base.to_owned();
        let tag = format!("budget-{i}");
        let request = with_stdin(hello(&tag), BIG_STDIN, b'a' + i);
        queued.push(tokio::spawn(async move {
            let (status, response) = run_proto(&url, &request).await;
            (tag, ok_stdout(status, &response))
        }));
        wait_for_queued(base, i64::from(i) + 1).await;
    }
    let (status, response) = run_proto(base, &with_stdin(hello("over"), BIG_STDIN, b'o')).await;
    refused(
        "over the byte budget",
        (status, response.unwrap_err()),
        429,
        "max_queue_bytes",
    );

    // 2. Bad providers join first and take the queued tasks: one refuses everything as busy,
    //    one dies on its first task (its tasks are retried elsewhere).
    let mut refuser = provider(base, "refuser", 1, Behaviour::RefuseAlways).await;
    let mut dier = provider(base, "dier", 1, Behaviour::DieOnTask).await;
    refuser
        .arrivals
        .recv()
        .await
        .expect("the refuser got a task");
    dier.arrivals.recv().await.expect("the dier got a task");

    // 3. Real providers: one stays up, one is killed once it has started a few tasks.
    let mut healthy = RealProvider::start(base, "healthy");
    let mut victim = RealProvider::start(base, "victim");

    let killer = async {
        victim.wait(|s| s.tasks_started >= 3).await;
        victim.kill();
    };
    let hostile_guests = async {
        let base = base.to_owned();
        let guests = [
            // Sleepers and loops far longer than their deadline.
            (
                "sleeper",
                with_deadline(wasip1("sleep.wasm", &["sleep.wasm", "3600000"]), 1_500),
            ),
            (
                "sleeper",
                with_deadline(wasip1("sleep.wasm", &["sleep.wasm", "3600000"]), 2_000),
            ),
            (
                "sleeper",
                with_deadline(wasip1("sleep.wasm", &["sleep.wasm", "3600000"]), 2_500),
            ),
            (
                "loop",
                with_deadline(wasip1("loop.wasm", &["loop.wasm"]), 1_500),
            ),
            (
                "loop",
                with_deadline(wasip1("loop.wasm", &["loop.wasm"]), 2_000),
            ),
            (
                "loop",
                with_deadline(wasip1("loop.wasm", &["loop.wasm"]), 2_500),
            ),
            // 16 MiB of output against a 1 MiB cap.
            ("flood", wasip1("flood.wasm", &["flood.wasm", "16M"])),
            ("flood", wasip1("flood.wasm", &["flood.wasm", "16M"])),
            ("flood", wasip1("flood.wasm", &["flood.wasm", "16M"])),
        ];
        let answers: Vec<_> = stream::iter(guests)
            .map(|(what, request)| {
                let base = base.clone();
                async move { (what, run_proto(&base, &request).await) }
            })
            .buffer_unordered(9)
            .collect()
            .await;
        let mut floods_ok = 0;
        for (what, (status, response)) in answers {
            if what == "flood" {
                let r = response.unwrap_or_else(|e| panic!("flood: {status} {e}"));
                let Some(task::wasip1::response::Result::Ok(o)) = r.result else {
                    panic!("flood: {r:?}")
                };
                assert_eq!(o.status, Some(0));
                assert_eq!(o.stdout.unwrap().len(), OUTPUT_CAP);
                assert_eq!(o.stdout_truncated, Some(true));
                floods_ok += 1;
            } else {
                stopped(what, status, &response);
            }
        }
        floods_ok
    };

    let (budget, socket_good, connect_good, floods_ok, (pressure_ok, _), ()) = tokio::join!(
        async {
            let mut n = 0;
            for task in queued {
                let (tag, got) = task.await.unwrap();
                assert_eq!(got.as_deref(), Ok(hello_output(&tag).as_str()), "{tag}");
                n += 1;
            }
            n
        },
        good_over_socket(base.to_owned(), "ws", 1_000, 32),
        good_over_connect(base.to_owned(), "rpc", 150, 8),
        async {
            // The hostile guests come once the victim is gone, so that they run on the healthy
            // provider (or are refused by the refuser): its workers must come free again.
            killer.await;
            hostile_guests.await
        },
        budget_pressure(base.to_owned(), 8),
        hostile_requests(base.to_owned()),
    );

    // The chaos did happen: the refuser refused, the dier took a task and left.
    assert!(!refuser.seen.lock().await.tasks.is_empty());
    assert!(dier.messenger.is_closed());
    assert!(victim.provider.status().tasks_started >= 3);

    // The sleepers and loops let go of the healthy provider's workers (a guest blocked in a
    // host call must stop at its time limit).
    healthy.wait(|s| s.busy == 0).await;
    let (started, mut finished) = healthy.ran("sleep.wasm");
    assert!(
        !started.is_empty(),
        "no sleeper ran on the healthy provider"
    );
    finished.sort();
    let mut started = started;
    started.sort();
    assert_eq!(finished, started, "sleepers that never ended");

    // Every answered task gave its bytes back, and the broker counted each good answer once.
    let text = metrics(base).await;
    assert_eq!(metric(&text, "wasimoff_tasks_held_bytes "), 0.0, "{text}");
    let ok = metric(&text, "wasimoff_tasks_completed_total{outcome=\"ok\"} ");
    let expected = budget + socket_good + connect_good + floods_ok + pressure_ok;
    assert_eq!(ok, expected as f64, "{text}");

    // Still healthy: one more task goes through.
    let (status, response) = run_proto(base, &hello("after")).await;
    assert_eq!(ok_stdout(status, &response), Ok(hello_output("after")));
    drop(refuser);
    drop(dier);
}

/// SIGTERM (what docker, systemd and Kubernetes send) shuts the broker down gracefully: a
/// client waiting for its task gets a clear `unavailable: broker is shutting down`, not an empty
/// reply, and the process exits with success.
#[cfg(unix)]
#[tokio::test]
async fn sigterm_answers_waiting_clients_and_exits_cleanly() {
    let mut broker = BrokerChild::start(&["--provider-wait".into(), "600".into()]);
    // Once the broker says it is ready, it catches both signals: a SIGTERM sent at once must
    // stop it gracefully, not kill it with the default action.
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.child.id())).unwrap();
    let caught = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
        .unwrap();
    for (name, number) in [("SIGINT", 2), ("SIGTERM", 15)] {
        assert_ne!(
            caught & (1 << (number - 1)),
            0,
            "{name} not caught when ready"
        );
    }
    let base = broker.url.clone();
    let upload = reqwest::Client::new()
        .post(format!("{base}/api/storage/upload?name=empty.wasm"))
        .body(&b"\0asm\x01\0\0\0"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    // A task waits for a provider that never comes.
    let url = base.clone();
    let waiting = tokio::spawn(async move { run_proto(&url, &wasip1("empty.wasm", &["e"])).await });
    wait_for_queued(&base, 1).await;
    let kill = Command::new("kill")
        .args(["-TERM", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (status, response) = tokio::time::timeout(OUTER, waiting).await.unwrap().unwrap();
    assert_eq!(status, 503);
    assert!(response.unwrap_err().contains("shutting down"));
    let exit = tokio::task::spawn_blocking(move || broker.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

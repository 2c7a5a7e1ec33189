//! Tests of the provider runtime against an in-process fake broker: core's `Messenger` over
//! `MemoryTransport` pairs (a fresh pair per connect, so broker restarts can be simulated), a
//! fake executor that echoes or waits on its cancel token, and a fake fetcher. Two tests use
//! real loopback sockets: a WebSocket broker (tokio-tungstenite) and a tiny HTTP file server.
//! No test sleeps to synchronise: every wait is on a channel, a watch or a response.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::result_large_err)]

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use wasimoff_core::{
    envelope::{Codec, Envelope, Payload},
    executor::{CancellationToken, ExecError, ExecOutput, ExecTask, Executor, Termination},
    messenger::{CallError, Incoming, IncomingMessage, Messenger, MessengerConfig},
    proto::{
        self,
        envelope::MessageType,
        event::ProviderResources,
        filesystem,
        task::{Metadata, Trace, trace_event::EventType, wasip1},
    },
    store::{MemoryStore, Ref, Store},
    transport::{
        CloseReason, MemoryReceiver, MemorySender, MemoryTransport, Transport, TransportReceiver,
        TransportSender,
    },
};
use wasimoff_provider::runtime::{
    ConnectError, ConnectFailure, ConnectRequest, ConnectionState, Connector, FetchError, Fetcher,
    PYODIDE_UNSUPPORTED, Provider, ProviderConfig,
};

/// Fails the test instead of hanging when something never happens.
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---------------------------------------------------------------------------------------------
// Fakes

/// Hands the broker end of a new memory pair to the test on every connect.
struct PairConnector {
    brokers: mpsc::UnboundedSender<MemoryTransport>,
}

#[async_trait::async_trait]
impl Connector for PairConnector {
    type Transport = MemoryTransport;
    async fn connect(&self, request: &ConnectRequest) -> Result<MemoryTransport, ConnectError> {
        assert!(
            request.url.ends_with("/api/provider/ws?id=tester"),
            "{}",
            request.url
        );
        let (provider, broker) = MemoryTransport::pair(Codec::Protobuf);
        self.brokers
            .send(broker)
            .map_err(|_| ConnectError::transient("test is over"))?;
        Ok(provider)
    }
}

/// argv[1] picks the behaviour: `echo` prints the rest, `cut` prints a few bytes flagged as cut
/// at the output cap, `wait` waits for its cancel token,
/// `hold` waits for the test's release (or cancel), `linger` waits for its cancel token, reports
/// it on `stopping` and then waits for the release; anything else is an `ExecError`.
struct FakeExecutor {
    started: mpsc::UnboundedSender<ExecTask>,
    stopping: mpsc::UnboundedSender<String>,
    release: Arc<Notify>,
}

#[async_trait::async_trait]
impl Executor for FakeExecutor {
    async fn execute(
        &self,
        task: ExecTask,
        cancel: CancellationToken,
    ) -> Result<ExecOutput, ExecError> {
        let _ = self.started.send(task.clone());
        let output = |termination, stdout: String| ExecOutput {
            termination,
            stdout: stdout.into(),
            stderr: Bytes::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            artifacts: None,
            error: None,
        };
        match task.args.get(1).map(String::as_str) {
            Some("echo") => Ok(output(Termination::Exited(0), task.args[2..].join(" "))),
            Some("cut") => Ok(ExecOutput {
                stdout_truncated: true,
                ..output(Termination::Exited(0), "the first bytes".into())
            }),
            Some("wait") => {
                cancel.cancelled().await;
                Ok(output(Termination::Cancelled, String::new()))
            }
            Some("hold") => tokio::select! {
                () = self.release.notified() => Ok(output(Termination::Exited(0), "released".into())),
                () = cancel.cancelled() => Ok(output(Termination::Cancelled, String::new())),
            },
            Some("linger") => {
                cancel.cancelled().await;
                let _ = self.stopping.send(task.id.clone());
                self.release.notified().await;
                Ok(output(Termination::Cancelled, String::new()))
            }
            _ => Err(ExecError::InvalidTask("unknown mode".into())),
        }
    }

    fn concurrency(&self) -> usize {
        2
    }
}

/// Serves files from a map and counts fetches. With `hold` set, a fetch reports on `started`
/// and waits for `release` before it answers.
#[derive(Default)]
struct FakeFetcher {
    files: Mutex<HashMap<String, Bytes>>,
    fetches: AtomicUsize,
    hold: AtomicBool,
    started: Notify,
    release: Notify,
}

#[async_trait::async_trait]
impl Fetcher for FakeFetcher {
    async fn fetch(&self, name: &str) -> Result<Bytes, FetchError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.hold.load(Ordering::SeqCst) {
            self.started.notify_one();
            self.release.notified().await;
        }
        self.files
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or(FetchError::NotFound)
    }
}

/// The broker's side of one connection.
struct Broker {
    messenger: Messenger,
    incoming: Incoming,
}

impl Broker {
    fn new(transport: MemoryTransport) -> Self {
        let (messenger, incoming) = Messenger::spawn(transport, MessengerConfig::default());
        Broker {
            messenger,
            incoming,
        }
    }

    /// The next event (the provider sends no requests).
    async fn event(&mut self) -> Payload {
        match within("an event", self.incoming.next()).await {
            Some(IncomingMessage::Event(event)) => event.payload,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Skips events until a ProviderResources with these values.
    async fn resources(&mut self, concurrency: u32, tasks: u32) {
        loop {
            if let Payload::ProviderResources(r) = self.event().await
                && (r.concurrency, r.tasks) == (Some(concurrency), Some(tasks))
            {
                return;
            }
        }
    }

    async fn call(&self, payload: impl Into<Payload>) -> Result<Payload, CallError> {
        within("a response", self.messenger.call(payload)).await
    }
}

struct Harness {
    provider: Provider,
    brokers: mpsc::UnboundedReceiver<MemoryTransport>,
    started: mpsc::UnboundedReceiver<ExecTask>,
    stopping: mpsc::UnboundedReceiver<String>,
    release: Arc<Notify>,
    store: Arc<MemoryStore>,
    fetcher: Arc<FakeFetcher>,
    run: tokio::task::JoinHandle<()>,
}

impl Harness {
    /// A provider without prefetch (its slots are the executor's), unless `concurrency` says.
    fn start(concurrency: Option<usize>) -> Self {
        Self::start_with(concurrency, Some(0))
    }

    fn start_with(concurrency: Option<usize>, prefetch: Option<usize>) -> Self {
        let (broker_tx, brokers) = mpsc::unbounded_channel();
        let (started_tx, started) = mpsc::unbounded_channel();
        let (stopping_tx, stopping) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let store = Arc::new(MemoryStore::default());
        let fetcher = Arc::new(FakeFetcher::default());
        let config = ProviderConfig {
            name: "tester".into(),
            concurrency,
            prefetch,
            reconnect_min: Duration::from_millis(1),
            reconnect_max: Duration::from_millis(5),
            ..ProviderConfig::new("http://broker.invalid:4080")
        };
        let executor = FakeExecutor {
            started: started_tx,
            stopping: stopping_tx,
            release: release.clone(),
        };
        let provider = Provider::builder(config, Arc::new(executor))
            .store(store.clone())
            .fetcher(fetcher.clone())
            .connector(PairConnector { brokers: broker_tx })
            .build()
            .unwrap();
        let runner = provider.clone();
        let run = tokio::spawn(async move { runner.run().await.unwrap() });
        Harness {
            provider,
            brokers,
            started,
            stopping,
            release,
            store,
            fetcher,
            run,
        }
    }

    async fn accept(&mut self) -> Broker {
        Broker::new(within("a connection", self.brokers.recv()).await.unwrap())
    }

    /// The broker's end of the next connection as raw halves, to see the order of envelopes.
    async fn accept_raw(&mut self) -> (MemorySender, MemoryReceiver) {
        within("a connection", self.brokers.recv())
            .await
            .unwrap()
            .split()
    }
}

/// The next Response on a raw connection, skipping events.
async fn next_response(rx: &mut MemoryReceiver) -> Envelope {
    loop {
        let envelope = within("an envelope", rx.recv()).await.unwrap().unwrap();
        if envelope.kind == Some(MessageType::Response) {
            return envelope;
        }
    }
}

fn task(id: &str, binary: proto::File, args: &[&str]) -> wasip1::Request {
    wasip1::Request {
        info: Some(Metadata {
            id: Some(id.into()),
            trace: Some(Trace::default()),
            ..Metadata::default()
        }),
        qos: None,
        params: Some(wasip1::Params {
            binary: Some(binary),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..wasip1::Params::default()
        }),
    }
}

fn blob(bytes: &'static [u8]) -> proto::File {
    proto::File {
        blob: Some(Bytes::from_static(bytes)),
        ..proto::File::default()
    }
}

fn by_ref(r: &Ref) -> proto::File {
    proto::File {
        r#ref: Some(r.to_string()),
        ..proto::File::default()
    }
}

fn response(payload: Payload) -> wasip1::Response {
    wasip1::Response::try_from(payload).unwrap()
}

fn ok_stdout(response: &wasip1::Response) -> String {
    match &response.result {
        Some(wasip1::response::Result::Ok(out)) => {
            String::from_utf8_lossy(out.stdout.as_deref().unwrap_or_default()).into_owned()
        }
        other => panic!("expected ok, got {other:?}"),
    }
}

fn error_text(response: &wasip1::Response) -> String {
    match &response.result {
        Some(wasip1::response::Result::Error(e)) => e.clone(),
        other => panic!("expected an error result, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn connect_reports_resources_and_answers_file_requests() {
    let mut h = Harness::start(None);
    let stored = h
        .store
        .put(Bytes::from_static(b"\0asm stored"))
        .await
        .unwrap();
    let mut broker = h.accept().await;
    // Concurrency comes from the executor (here without prefetch).
    assert_eq!(
        broker.event().await,
        Payload::ProviderResources(ProviderResources {
            concurrency: Some(2),
            tasks: Some(0),
            workers: Some(2),
            prefetch: Some(0),
        })
    );

    let listing = broker.call(filesystem::listing::Request {}).await.unwrap();
    assert_eq!(
        listing,
        filesystem::listing::Response {
            files: vec![stored.to_string()]
        }
        .into()
    );
    for (file, ok) in [
        (stored.to_string(), true),
        (Ref::of(b"x").to_string(), false),
        ("sha256:bad".into(), false),
    ] {
        let probe = filesystem::probe::Request { file: Some(file) };
        assert_eq!(
            broker.call(probe).await.unwrap(),
            filesystem::probe::Response { ok: Some(ok) }.into()
        );
    }
    assert_eq!(
        broker.call(proto::Ping {}).await.unwrap(),
        proto::Ping {}.into()
    );

    // Upload answers the ref; a blob that does not match the ref it came with is refused.
    let upload = filesystem::upload::Request {
        upload: Some(blob(b"uploaded")),
    };
    let uploaded = Ref::of(b"uploaded");
    assert_eq!(
        broker.call(upload).await.unwrap(),
        filesystem::upload::Response {
            r#ref: Some(uploaded.to_string())
        }
        .into()
    );
    let lying = filesystem::upload::Request {
        upload: Some(proto::File {
            r#ref: Some(stored.to_string()),
            ..blob(b"other")
        }),
    };
    assert!(
        matches!(broker.call(lying).await, Err(CallError::Remote(e)) if e.contains("does not match"))
    );

    let download = filesystem::download::Request {
        file: Some(uploaded.to_string()),
    };
    let filesystem::download::Response { download, err } =
        filesystem::download::Response::try_from(broker.call(download).await.unwrap()).unwrap();
    assert_eq!(
        (download.unwrap().blob.unwrap(), err),
        (Bytes::from_static(b"uploaded"), None)
    );
    let missing = filesystem::download::Request {
        file: Some(Ref::of(b"nope").to_string()),
    };
    let missing =
        filesystem::download::Response::try_from(broker.call(missing).await.unwrap()).unwrap();
    assert!(missing.download.is_none() && missing.err.unwrap().contains("not found"));

    let pyodide = proto::task::pyodide::Request::default();
    assert_eq!(
        broker.call(pyodide).await,
        Err(CallError::Remote(PYODIDE_UNSUPPORTED.into()))
    );
    h.provider.shutdown(Duration::from_secs(5)).await;
    within("run to end", &mut h.run).await.unwrap();
}

#[tokio::test]
async fn task_runs_end_to_end_with_a_verified_fetch() {
    let mut h = Harness::start(Some(3));
    let module = Bytes::from_static(b"\0asm fetched module");
    let r = Ref::of(&module);
    h.fetcher
        .files
        .lock()
        .unwrap()
        .insert(r.to_string(), module.clone());
    let mut broker = h.accept().await;
    broker.resources(3, 0).await;

    let out = response(
        broker
            .call(task("t1", by_ref(&r), &["a.wasm", "echo", "hi", "there"]))
            .await
            .unwrap(),
    );
    assert_eq!(ok_stdout(&out), "hi there");
    let info = out.info.unwrap();
    assert_eq!(
        (info.id.as_deref(), info.provider.as_deref()),
        (Some("t1"), Some("tester"))
    );
    let events: Vec<i32> = info
        .trace
        .unwrap()
        .events
        .iter()
        .map(|e| e.event.unwrap())
        .collect();
    let expected = [
        EventType::ProviderTaskReceived,
        EventType::ProviderWorkerExecute,
        EventType::ProviderWorkerDone,
        EventType::ProviderTransmitResult,
    ];
    assert_eq!(events, expected.map(|e| e as i32));
    let executed = h.started.recv().await.unwrap();
    assert_eq!(
        (executed.binary.r#ref, executed.binary.bytes),
        (r.clone(), module)
    );

    // The fetched file was announced and cached: a second task does not fetch again.
    loop {
        if let Payload::FileSystemUpdate(update) = broker.event().await {
            assert_eq!(update.added, vec![r.to_string()]);
            break;
        }
    }
    assert!(h.store.has(r.as_str()).await.unwrap());
    let again = response(
        broker
            .call(task("t2", by_ref(&r), &["a.wasm", "echo", "2"]))
            .await
            .unwrap(),
    );
    assert_eq!(ok_stdout(&again), "2");
    assert_eq!(h.fetcher.fetches.load(Ordering::SeqCst), 1);

    // An executor error becomes result.error with a ProviderError trace event.
    let failed = response(
        broker
            .call(task("t3", by_ref(&r), &["a.wasm", "bogus"]))
            .await
            .unwrap(),
    );
    assert!(error_text(&failed).contains("unknown mode"));
    let events = failed.info.unwrap().trace.unwrap().events;
    assert!(
        events
            .iter()
            .any(|e| e.event == Some(EventType::ProviderError as i32))
    );

    // An inline blob is used as is, and checked against a ref sent with it.
    let inline = response(
        broker
            .call(task("t4", blob(b"\0asm inline"), &["a.wasm", "echo", "x"]))
            .await
            .unwrap(),
    );
    assert_eq!(ok_stdout(&inline), "x");
    let lying = proto::File {
        r#ref: Some(r.to_string()),
        ..blob(b"\0asm inline")
    };
    let lying = response(
        broker
            .call(task("t5", lying, &["a.wasm", "echo"]))
            .await
            .unwrap(),
    );
    assert!(error_text(&lying).contains("does not match its ref"));

    let status = h.provider.status();
    assert_eq!(
        (
            status.tasks_started,
            status.tasks_finished,
            status.files_fetched
        ),
        (5, 5, 1)
    );
    h.provider.shutdown(Duration::from_secs(5)).await;
    within("run to end", &mut h.run).await.unwrap();
}

#[tokio::test]
async fn a_cut_output_is_flagged_on_the_wire_and_in_the_trace() {
    let mut h = Harness::start(None);
    let mut broker = h.accept().await;
    broker.resources(2, 0).await;
    let done_details = |response: &wasip1::Response| {
        let info = response.info.as_ref().unwrap();
        let events = &info.trace.as_ref().unwrap().events;
        let done = events
            .iter()
            .find(|e| e.event == Some(EventType::ProviderWorkerDone as i32))
            .unwrap();
        done.details.clone()
    };

    let cut = response(
        broker
            .call(task("cut", blob(b"\0asm cut"), &["a.wasm", "cut"]))
            .await
            .unwrap(),
    );
    let Some(wasip1::response::Result::Ok(output)) = &cut.result else {
        panic!("{cut:?}")
    };
    assert_eq!(output.stdout.as_deref(), Some(&b"the first bytes"[..]));
    assert_eq!(output.stdout_truncated, Some(true));
    assert_eq!(output.stderr_truncated, None, "absent, not false");
    assert_eq!(
        done_details(&cut).as_deref(),
        Some("stdout truncated at the output cap")
    );

    // An output that was not cut carries neither flag nor detail.
    let whole = response(
        broker
            .call(task("whole", blob(b"\0asm cut"), &["a.wasm", "echo", "hi"]))
            .await
            .unwrap(),
    );
    let Some(wasip1::response::Result::Ok(output)) = &whole.result else {
        panic!("{whole:?}")
    };
    assert_eq!(
        (output.stdout_truncated, output.stderr_truncated),
        (None, None)
    );
    assert_eq!(done_details(&whole), None);

    h.provider.shutdown(Duration::from_secs(5)).await;
    within("run to end", &mut h.run).await.unwrap();
}

#[tokio::test]
async fn tampered_and_missing_files_are_refused() {
    let mut h = Harness::start(None);
    let r = Ref::of(b"\0asm the real module");
    h.fetcher
        .files
        .lock()
        .unwrap()
        .insert(r.to_string(), Bytes::from_static(b"\0asm evil"));
    let mut broker = h.accept().await;
    broker.resources(2, 0).await;

    let out = response(
        broker
            .call(task("t1", by_ref(&r), &["a.wasm", "echo"]))
            .await
            .unwrap(),
    );
    let error = error_text(&out);
    assert!(
        error.contains(r.as_str()) && error.contains("refused"),
        "{error}"
    );
    assert!(
        h.started.try_recv().is_err(),
        "the executor must not run a tampered file"
    );
    assert!(
        h.store.list().await.unwrap().is_empty(),
        "nothing may be cached"
    );

    let missing = Ref::of(b"missing");
    let out = response(
        broker
            .call(task("t2", by_ref(&missing), &["a.wasm", "echo"]))
            .await
            .unwrap(),
    );
    assert!(error_text(&out).contains("not found"));
    let alias = proto::File {
        r#ref: Some("tsp.wasm".into()),
        ..proto::File::default()
    };
    let out = response(
        broker
            .call(task("t3", alias, &["a.wasm", "echo"]))
            .await
            .unwrap(),
    );
    assert!(error_text(&out).contains("no sha256: ref"));
    // No task id: the request fails as a whole.
    let mut no_id = task("", blob(b"\0asm"), &["a.wasm", "echo"]);
    no_id.info = None;
    assert!(matches!(
        broker.call(no_id).await,
        Err(CallError::Remote(_))
    ));
    h.provider.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cancel_stops_a_running_task_and_is_echoed() {
    let mut h = Harness::start(Some(1));
    let mut broker = h.accept().await;
    broker.resources(1, 0).await;

    let running = {
        let messenger = broker.messenger.clone();
        tokio::spawn(async move {
            messenger
                .call(task("long", blob(b"\0asm"), &["a.wasm", "wait"]))
                .await
        })
    };
    within("the task to start", h.started.recv()).await.unwrap();
    broker.resources(1, 1).await;

    // All slots are busy: another task is refused so the broker can place it elsewhere.
    let refused = broker
        .call(task("extra", blob(b"\0asm"), &["a.wasm", "echo"]))
        .await;
    assert!(
        matches!(&refused, Err(CallError::Remote(e)) if e.contains("busy")),
        "{refused:?}"
    );
    assert_eq!(h.provider.status().tasks_refused, 1);

    let cancel = proto::task::Cancel {
        id: Some("long".into()),
        reason: Some("client gone".into()),
    };
    assert_eq!(broker.call(cancel.clone()).await.unwrap(), cancel.into());
    let out = response(
        within("the cancelled task", running)
            .await
            .unwrap()
            .unwrap(),
    );
    assert!(error_text(&out).contains("cancelled"));
    broker.resources(1, 0).await;

    // Cancelling an unknown task is still echoed; a cancel without id is an error.
    let unknown = proto::task::Cancel {
        id: Some("nope".into()),
        reason: None,
    };
    assert_eq!(broker.call(unknown.clone()).await.unwrap(), unknown.into());
    let no_id = proto::task::Cancel::default();
    assert!(matches!(
        broker.call(no_id).await,
        Err(CallError::Remote(_))
    ));
    h.provider.shutdown(Duration::from_secs(5)).await;
}

/// The echo of a Cancel means the task has stopped: its response was sent before, and its slot
/// and its id are free, so the broker may send the task again at once (even here).
#[tokio::test]
async fn cancel_is_echoed_after_the_task_has_stopped() {
    let mut h = Harness::start(Some(1));
    let (mut tx, mut rx) = h.accept_raw().await;
    tx.send(Envelope::request(
        1,
        task("slow", blob(b"\0asm"), &["a.wasm", "linger"]),
    ))
    .await
    .unwrap();
    within("the task to start", h.started.recv()).await.unwrap();
    let cancel = proto::task::Cancel {
        id: Some("slow".into()),
        reason: Some("client gone".into()),
    };
    tx.send(Envelope::request(2, cancel.clone())).await.unwrap();
    // The task has seen its cancel but does not stop yet: the Cancel is not answered, while
    // other requests are.
    let id = within("the task to see its cancel", h.stopping.recv()).await;
    assert_eq!(id.as_deref(), Some("slow"));
    tx.send(Envelope::request(3, proto::Ping {})).await.unwrap();
    assert_eq!(
        next_response(&mut rx).await,
        Envelope::response(3, proto::Ping {}),
        "no echo while the task still runs"
    );
    assert_eq!(h.provider.status().busy, 1);

    h.release.notify_one();
    let first = next_response(&mut rx).await;
    assert_eq!(first.sequence, Some(1), "the task's response comes first");
    let out = response(first.payload.unwrap());
    assert!(error_text(&out).contains("cancelled"));
    let echo = next_response(&mut rx).await;
    assert_eq!(echo, Envelope::response(2, cancel));
    assert_eq!(h.provider.status().busy, 0, "the slot is free at the echo");

    // The same task again, right after the echo: taken, not refused.
    tx.send(Envelope::request(
        4,
        task("slow", blob(b"\0asm"), &["a.wasm", "echo", "again"]),
    ))
    .await
    .unwrap();
    let again = next_response(&mut rx).await;
    assert_eq!(again.sequence, Some(4));
    assert_eq!(ok_stdout(&response(again.payload.unwrap())), "again");
    h.provider.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn reconnects_after_the_broker_restarts_and_cancels_orphaned_tasks() {
    let mut h = Harness::start(None);
    let mut watch = h.provider.watch();
    let mut first = h.accept().await;
    first.resources(2, 0).await;
    let orphan = {
        let messenger = first.messenger.clone();
        tokio::spawn(async move {
            messenger
                .call(task("orphan", blob(b"\0asm"), &["a.wasm", "wait"]))
                .await
        })
    };
    within("the task to start", h.started.recv()).await.unwrap();

    // The broker goes away: the provider cancels the task and dials again.
    first
        .messenger
        .close(CloseReason::new(CloseReason::GOING_AWAY, "restart"))
        .await;
    assert!(within("the orphan call", orphan).await.unwrap().is_err());
    let mut second = h.accept().await;
    second.resources(2, 0).await;
    within(
        "the second connection",
        watch.wait_for(|s| s.connections == 2 && s.state == ConnectionState::Connected),
    )
    .await
    .unwrap();
    let ok = response(
        second
            .call(task("t", blob(b"\0asm"), &["a.wasm", "echo", "back"]))
            .await
            .unwrap(),
    );
    assert_eq!(ok_stdout(&ok), "back");

    // A connector that keeps failing is retried too (here: the test stops accepting).
    h.provider.shutdown(Duration::from_secs(5)).await;
    within("run to end", &mut h.run).await.unwrap();
    assert_eq!(h.provider.status().state, ConnectionState::Stopped);
}

#[tokio::test]
async fn shutdown_drains_running_tasks_then_closes_normally() {
    let mut h = Harness::start(None);
    let mut broker = h.accept().await;
    broker.resources(2, 0).await;
    let held = {
        let messenger = broker.messenger.clone();
        tokio::spawn(async move {
            messenger
                .call(task("held", blob(b"\0asm"), &["a.wasm", "hold"]))
                .await
        })
    };
    within("the task to start", h.started.recv()).await.unwrap();

    let provider = h.provider.clone();
    let shutdown = tokio::spawn(async move { provider.shutdown(Duration::from_secs(60)).await });
    // Draining: concurrency 0 is reported and new tasks are refused.
    broker.resources(0, 1).await;
    let refused = broker
        .call(task("late", blob(b"\0asm"), &["a.wasm", "echo"]))
        .await;
    assert!(
        matches!(&refused, Err(CallError::Remote(e)) if e.contains("shutting down")),
        "{refused:?}"
    );

    h.release.notify_one();
    let out = response(within("the held task", held).await.unwrap().unwrap());
    assert_eq!(ok_stdout(&out), "released");
    within("shutdown", shutdown).await.unwrap();
    within("run to end", &mut h.run).await.unwrap();
    assert_eq!(
        within("the close", broker.messenger.closed()).await,
        CloseReason::normal("provider shutting down")
    );
}

#[tokio::test]
async fn shutdown_cancels_tasks_after_the_grace_period() {
    tokio::time::pause();
    let mut h = Harness::start(None);
    let mut broker = h.accept().await;
    broker.resources(2, 0).await;
    let stuck = {
        let messenger = broker.messenger.clone();
        tokio::spawn(async move {
            messenger
                .call(task("stuck", blob(b"\0asm"), &["a.wasm", "wait"]))
                .await
        })
    };
    within("the task to start", h.started.recv()).await.unwrap();
    h.provider.shutdown(Duration::from_secs(10)).await;
    let out = response(within("the stuck task", stuck).await.unwrap().unwrap());
    assert!(error_text(&out).contains("cancelled"));
    within("run to end", &mut h.run).await.unwrap();
}

#[tokio::test]
async fn set_workers_is_reported() {
    let mut h = Harness::start(None);
    let mut broker = h.accept().await;
    broker.resources(2, 0).await;
    h.provider.set_workers(5);
    broker.resources(5, 0).await;
    h.provider.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn concurrent_tasks_fetch_a_missing_file_once() {
    let mut h = Harness::start(Some(4));
    let module = Bytes::from_static(b"\0asm shared");
    let r = Ref::of(&module);
    h.fetcher
        .files
        .lock()
        .unwrap()
        .insert(r.to_string(), module);
    let mut broker = h.accept().await;
    broker.resources(4, 0).await;
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let messenger = broker.messenger.clone();
            let request = task(&format!("t{i}"), by_ref(&r), &["a.wasm", "echo", "ok"]);
            tokio::spawn(async move { messenger.call(request).await })
        })
        .collect();
    for call in calls {
        let out = response(within("a task", call).await.unwrap().unwrap());
        assert_eq!(ok_stdout(&out), "ok");
    }
    assert_eq!(h.fetcher.fetches.load(Ordering::SeqCst), 1);
    h.provider.shutdown(Duration::from_secs(5)).await;
}

/// A Cancel that comes while the task's file is still being fetched is answered at once (the
/// task stops waiting for the file), and another task waiting for the same file still gets it
/// from the one fetch.
#[tokio::test]
async fn cancel_during_a_fetch_is_answered_at_once() {
    let mut h = Harness::start(Some(2));
    let mut status = h.provider.watch();
    let module = Bytes::from_static(b"\0asm fetched slowly");
    let r = Ref::of(&module);
    h.fetcher
        .files
        .lock()
        .unwrap()
        .insert(r.to_string(), module);
    h.fetcher.hold.store(true, Ordering::SeqCst);
    let mut broker = h.accept().await;
    broker.resources(2, 0).await;

    let call = |id: &str, word: &str| {
        let messenger = broker.messenger.clone();
        let request = task(id, by_ref(&r), &["a.wasm", "echo", word]);
        tokio::spawn(async move { messenger.call(request).await })
    };
    let first = call("first", "one");
    within("the fetch to start", h.fetcher.started.notified()).await;
    let second = call("second", "two");
    within(
        "the second task to take its slot",
        status.wait_for(|s| s.busy == 2),
    )
    .await
    .unwrap();

    // The fetch is still held: the Cancel is answered anyway, and so is the task.
    let cancel = proto::task::Cancel {
        id: Some("second".into()),
        reason: Some("client gone".into()),
    };
    assert_eq!(broker.call(cancel.clone()).await.unwrap(), cancel.into());
    let out = response(within("the cancelled task", second).await.unwrap().unwrap());
    assert_eq!(error_text(&out), "cancelled");
    assert_eq!(h.provider.status().busy, 1);

    h.fetcher.release.notify_one();
    let out = response(within("the first task", first).await.unwrap().unwrap());
    assert_eq!(ok_stdout(&out), "one");
    assert_eq!(h.fetcher.fetches.load(Ordering::SeqCst), 1);
    assert!(h.store.get(r.as_str()).await.unwrap().is_some());
    h.provider.shutdown(Duration::from_secs(5)).await;
}

/// By default a provider offers one task slot per worker more than its executor runs: the
/// extra tasks wait in the executor, so the next task is at hand when a worker finishes.
#[tokio::test]
async fn prefetch_defaults_to_one_task_per_worker() {
    let mut h = Harness::start_with(None, None);
    let mut broker = h.accept().await;
    assert_eq!(
        broker.event().await,
        Payload::ProviderResources(ProviderResources {
            concurrency: Some(4),
            tasks: Some(0),
            workers: Some(2),
            prefetch: Some(2),
        })
    );
    let mut h = Harness::start_with(None, Some(1));
    let mut broker = h.accept().await;
    assert_eq!(
        broker.event().await,
        Payload::ProviderResources(ProviderResources {
            concurrency: Some(3),
            tasks: Some(0),
            workers: Some(2),
            prefetch: Some(1),
        })
    );
}

/// Fails every connect with the next of its scripted errors, counting the attempts.
struct FailingConnector {
    errors: Mutex<Vec<ConnectError>>,
    attempts: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Connector for FailingConnector {
    type Transport = MemoryTransport;
    async fn connect(&self, _: &ConnectRequest) -> Result<MemoryTransport, ConnectError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let mut errors = self.errors.lock().unwrap();
        Err(if errors.len() > 1 {
            errors.remove(0)
        } else {
            errors[0].clone()
        })
    }
}

/// Transient failures (refused, 503) are retried with backoff; the first permanent one (401)
/// ends `run` with `Refused`, which carries the advice, after exactly one attempt of its own.
#[tokio::test]
async fn permanent_connect_errors_end_the_run_and_transient_ones_are_retried() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let connector = FailingConnector {
        errors: Mutex::new(vec![
            ConnectError::transient("connection refused"),
            ConnectError::new(ConnectFailure::Status(503), "HTTP 503"),
            ConnectError::new(
                ConnectFailure::Status(401),
                "HTTP 401 (missing or wrong token)",
            ),
        ]),
        attempts: attempts.clone(),
    };
    let (started, _) = mpsc::unbounded_channel();
    let (stopping, _) = mpsc::unbounded_channel();
    let executor = FakeExecutor {
        started,
        stopping,
        release: Arc::default(),
    };
    let config = ProviderConfig {
        name: "tester".into(),
        token: Some("wrong".into()),
        reconnect_min: Duration::from_millis(1),
        reconnect_max: Duration::from_millis(2),
        ..ProviderConfig::new("http://broker.invalid:4080")
    };
    let provider = Provider::builder(config, Arc::new(executor))
        .fetcher(Arc::new(FakeFetcher::default()))
        .connector(connector)
        .build()
        .unwrap();
    let err = within("run to give up", provider.run()).await.unwrap_err();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let text = err.to_string();
    match err {
        wasimoff_provider::runtime::ProviderError::Refused { url, error } => {
            assert_eq!(url, "ws://broker.invalid:4080/api/provider/ws");
            assert_eq!(error.kind, ConnectFailure::Status(401));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        text.contains("HTTP 401") && text.contains("--token"),
        "{text}"
    );
    assert_eq!(provider.status().state, ConnectionState::Stopped);
    // A stopped provider's shutdown returns at once.
    within("shutdown", provider.shutdown(Duration::from_secs(1))).await;
}

// ---------------------------------------------------------------------------------------------
// Real sockets on loopback

#[path = "runtime/sockets.rs"]
mod sockets;

#[cfg(feature = "wasmtime")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_runs_on_wasmtime() {
    use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};
    let executor = WasmtimeExecutor::new(WasmtimeConfig {
        workers: 1,
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let (broker_tx, mut brokers) = mpsc::unbounded_channel();
    let config = ProviderConfig {
        name: "tester".into(),
        prefetch: Some(0),
        ..ProviderConfig::new("http://broker.invalid")
    };
    let provider = Provider::builder(config, Arc::new(executor))
        .fetcher(Arc::new(FakeFetcher::default()))
        .connector(PairConnector { brokers: broker_tx })
        .build()
        .unwrap();
    let runner = provider.clone();
    let run = tokio::spawn(async move { runner.run().await });
    let mut broker = Broker::new(within("a connection", brokers.recv()).await.unwrap());
    broker.resources(1, 0).await;
    let request = task(
        "hello",
        blob(wasimoff_wasi_apps::HELLO),
        &["hello.wasm", "x"],
    );
    let out = response(broker.call(request).await.unwrap());
    let stdout = ok_stdout(&out);
    assert!(stdout.starts_with("Hello, wasimoff!"), "{stdout}");
    assert!(matches!(out.result, Some(wasip1::response::Result::Ok(ref o)) if o.status == Some(0)));
    provider.shutdown(Duration::from_secs(5)).await;
    within("run to end", run).await.unwrap().unwrap();
}

/// The native provider with one worker and a 1 s task limit: a guest asleep for 1000 s is
/// stopped by the broker's Cancel while it sleeps and, in another task, by the time limit, and
/// each time the next task gets the slot.
#[cfg(feature = "wasmtime")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_guests_are_stopped_on_wasmtime() {
    use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};
    let executor = WasmtimeExecutor::new(WasmtimeConfig {
        workers: 1,
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let mut waiting = executor.watch_waiting();
    let (broker_tx, mut brokers) = mpsc::unbounded_channel();
    let config = ProviderConfig {
        name: "tester".into(),
        prefetch: Some(0),
        max_task_timeout: Duration::from_secs(1),
        ..ProviderConfig::new("http://broker.invalid")
    };
    let provider = Provider::builder(config, Arc::new(executor))
        .fetcher(Arc::new(FakeFetcher::default()))
        .connector(PairConnector { brokers: broker_tx })
        .build()
        .unwrap();
    let runner = provider.clone();
    let run = tokio::spawn(async move { runner.run().await });
    let broker = Broker::new(within("a connection", brokers.recv()).await.unwrap());
    let sleeper = |id: &str| {
        let messenger = broker.messenger.clone();
        let request = task(
            id,
            blob(wasimoff_wasi_apps::SLEEP),
            &["sleep.wasm", "1000000"],
        );
        tokio::spawn(async move { messenger.call(request).await })
    };
    let hello_runs = || async {
        let request = task("hello", blob(wasimoff_wasi_apps::HELLO), &["hello.wasm"]);
        let out = response(broker.call(request).await.unwrap());
        assert!(ok_stdout(&out).starts_with("Hello, wasimoff!"));
    };

    let cancelled = sleeper("cancelled");
    within("the guest to sleep", waiting.wait_for(|n| *n == 1))
        .await
        .unwrap();
    let cancel = proto::task::Cancel {
        id: Some("cancelled".into()),
        reason: Some("client gone".into()),
    };
    assert_eq!(broker.call(cancel.clone()).await.unwrap(), cancel.into());
    let out = response(
        within("the cancelled task", cancelled)
            .await
            .unwrap()
            .unwrap(),
    );
    assert_eq!(error_text(&out), "cancelled");
    hello_runs().await;

    let timed_out = sleeper("timed-out");
    let out = response(
        within("the timed-out task", timed_out)
            .await
            .unwrap()
            .unwrap(),
    );
    assert!(error_text(&out).starts_with("deadline exceeded"), "{out:?}");
    hello_runs().await;

    provider.shutdown(Duration::from_secs(5)).await;
    within("run to end", run).await.unwrap().unwrap();
}

//! Test support: a broker on an ephemeral port, fake providers and small clients.

use std::{sync::Arc, time::Duration};

use prost::Message as _;
use tokio::sync::{Mutex, mpsc};
use wasimoff_broker::{Broker, BrokerConfig, BrokerHandle, Limits, PingConfig};
use wasimoff_core::envelope::Payload;
use wasimoff_core::messenger::{IncomingMessage, Messenger, MessengerConfig};
use wasimoff_core::proto::{self, task};
use wasimoff_core::transport::WebSocketTransport;

/// The smallest valid WebAssembly module.
pub const EMPTY_WASM: &[u8] = b"\0asm\x01\0\0\0";

pub fn config() -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ping: PingConfig {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        },
        limits: Limits {
            task_timeout: Duration::from_secs(60),
            ..Limits::default()
        },
        ..BrokerConfig::default()
    }
}

pub async fn broker(config: BrokerConfig) -> BrokerHandle {
    Broker::builder()
        .config(config)
        .build()
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap()
}

pub fn http(handle: &BrokerHandle) -> String {
    format!("http://{}", handle.local_addr())
}

/// How a fake provider treats tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers `ok` with stdout = argv joined by spaces (after arg0) and the stdin appended.
    Echo,
    /// Like `Echo`, with a stderr unique to the task, padded with dots to at least this many
    /// bytes.
    EchoStderr(usize),
    /// Never answers tasks (but answers pings).
    Hold,
    /// Closes its connection when a task arrives.
    DieOnTask,
    /// Stops answering anything, pings included, once a task arrives.
    HangOnTask,
    /// Refuses the first task as `unavailable:` (momentarily busy), then echoes.
    RefuseFirst,
    /// Refuses every task as busy.
    RefuseAlways,
    /// Like the original TypeScript provider with a stuck guest: the first task never ends;
    /// a cancel kills the first running task with its id (its request then fails) and is
    /// echoed; later tasks are echoed.
    StuckFirstCancelById,
    /// Answers tasks with a payload of the wrong type.
    WrongPayload,
    /// Answers tasks with this `result.error`, as a provider does for a guest that trapped or
    /// ran out of time.
    ResultError(&'static str),
}

/// What a fake provider saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub tasks: Vec<String>,
    pub cancels: Vec<String>,
    /// Every task and cancel in arrival order: `task <id>`, `cancel <id>`.
    pub log: Vec<String>,
    /// The QoS deadline each task arrived with.
    pub deadlines: Vec<Option<wasimoff_core::wkt::Timestamp>>,
    /// Tasks that arrived while an earlier task with the same id still ran here.
    pub overlaps: Vec<String>,
}

pub struct FakeProvider {
    pub messenger: Messenger,
    pub seen: Arc<Mutex<Seen>>,
    /// Receives the id of each task as it arrives.
    pub arrivals: mpsc::UnboundedReceiver<String>,
    /// Receives the id of each cancel as it arrives.
    pub cancels: mpsc::UnboundedReceiver<String>,
}

pub fn echo_output(request: &task::wasip1::Request) -> task::wasip1::Output {
    let params = request.params.clone().unwrap_or_default();
    let mut stdout = params
        .args
        .iter()
        .skip(1)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(stdin) = params.stdin {
        stdout.push_str(&String::from_utf8_lossy(&stdin));
    }
    task::wasip1::Output {
        status: Some(0),
        stdout: Some(stdout.into_bytes().into()),
        stderr: Some(Default::default()),
        ..Default::default()
    }
}

pub async fn provider(
    base: &str,
    name: &str,
    concurrency: u32,
    behaviour: Behaviour,
) -> FakeProvider {
    provider_with_headers(
        base,
        name,
        concurrency,
        behaviour,
        &[("user-agent", "fake-provider/1")],
    )
    .await
}

/// [`provider`] sending these headers with its upgrade request.
pub async fn provider_with_headers(
    base: &str,
    name: &str,
    concurrency: u32,
    behaviour: Behaviour,
    headers: &[(&str, &str)],
) -> FakeProvider {
    let url = format!(
        "{}/api/provider/ws?id={name}",
        base.replacen("http", "ws", 1)
    );
    let transport = WebSocketTransport::connect(&url, headers, 1 << 24)
        .await
        .unwrap();
    let config = MessengerConfig {
        answer_pings: behaviour != Behaviour::HangOnTask,
        ..MessengerConfig::default()
    };
    let (messenger, mut incoming) = Messenger::spawn(transport, config);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (arrived_tx, arrivals) = mpsc::unbounded_channel();
    let (cancel_tx, cancels) = mpsc::unbounded_channel();
    let m = messenger.clone();
    let s = seen.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut hung = false;
        let mut refused = false;
        // Tasks held without an answer, oldest first (StuckFirstCancelById).
        let mut held: Vec<(String, wasimoff_core::messenger::IncomingRequest)> = Vec::new();
        while let Some(message) = incoming.next().await {
            let IncomingMessage::Request(request) = message else {
                continue;
            };
            if hung {
                // Swallow everything without an answer: a hung peer.
                std::mem::forget(request);
                continue;
            }
            match request.payload().clone() {
                Payload::ListingRequest(_) => {
                    let _ = request
                        .respond(Ok(
                            proto::filesystem::listing::Response { files: vec![] }.into()
                        ))
                        .await;
                }
                Payload::Cancel(cancel) => {
                    let id = cancel.id.clone().unwrap_or_default();
                    {
                        let mut seen = s.lock().await;
                        seen.cancels.push(id.clone());
                        seen.log.push(format!("cancel {id}"));
                    }
                    // The first running task with that id is killed: its request fails.
                    if let Some(at) = held.iter().position(|(h, _)| *h == id) {
                        let (_, killed) = held.remove(at);
                        let _ = killed.respond(Err("undefined".into())).await;
                    }
                    let _ = cancel_tx.send(id);
                    let _ = request.respond(Ok(cancel.into())).await;
                }
                Payload::Ping(_) => {
                    let _ = request.respond(Ok(proto::Ping {}.into())).await;
                }
                Payload::Wasip1Request(task) => {
                    let id = task
                        .info
                        .as_ref()
                        .and_then(|i| i.id.clone())
                        .unwrap_or_default();
                    assert_eq!(
                        task.info.as_ref().and_then(|i| i.provider.as_deref()),
                        Some(percent_decoded(&name).as_str())
                    );
                    {
                        let mut seen = s.lock().await;
                        seen.tasks.push(id.clone());
                        seen.log.push(format!("task {id}"));
                        seen.deadlines
                            .push(task.qos.as_ref().and_then(|q| q.deadline));
                        if held.iter().any(|(h, _)| *h == id) {
                            seen.overlaps.push(id.clone());
                        }
                    }
                    let _ = arrived_tx.send(id.clone());
                    let behaviour = match behaviour {
                        Behaviour::RefuseFirst if !refused => {
                            refused = true;
                            let _ = request
                                .respond(Err("unavailable: provider is busy".into()))
                                .await;
                            continue;
                        }
                        Behaviour::RefuseFirst => Behaviour::Echo,
                        Behaviour::StuckFirstCancelById if !refused => {
                            refused = true;
                            held.push((id, request));
                            continue;
                        }
                        Behaviour::StuckFirstCancelById => Behaviour::Echo,
                        other => other,
                    };
                    match behaviour {
                        Behaviour::Echo | Behaviour::RefuseFirst => {
                            let response = task::wasip1::Response {
                                info: task.info.clone(),
                                result: Some(task::wasip1::response::Result::Ok(echo_output(
                                    &task,
                                ))),
                                error_output: None,
                            };
                            let _ = request.respond(Ok(response.into())).await;
                        }
                        Behaviour::EchoStderr(pad) => {
                            let mut output = echo_output(&task);
                            let mut stderr = format!("stderr of task {id}");
                            let dots = pad.saturating_sub(stderr.len());
                            stderr.extend(std::iter::repeat_n('.', dots));
                            output.stderr = Some(stderr.into_bytes().into());
                            let response = task::wasip1::Response {
                                info: task.info.clone(),
                                result: Some(task::wasip1::response::Result::Ok(output)),
                                error_output: None,
                            };
                            let _ = request.respond(Ok(response.into())).await;
                        }
                        Behaviour::RefuseAlways => {
                            let _ = request
                                .respond(Err("unavailable: provider is busy".into()))
                                .await;
                        }
                        Behaviour::WrongPayload => {
                            let _ = request.respond(Ok(proto::Ping {}.into())).await;
                        }
                        Behaviour::ResultError(error) => {
                            let response = task::wasip1::Response {
                                info: task.info.clone(),
                                result: Some(task::wasip1::response::Result::Error(error.into())),
                                error_output: None,
                            };
                            let _ = request.respond(Ok(response.into())).await;
                        }
                        Behaviour::StuckFirstCancelById => unreachable!("mapped above"),
                        Behaviour::Hold => std::mem::forget(request),
                        Behaviour::DieOnTask => {
                            std::mem::forget(request);
                            m.close(wasimoff_core::transport::CloseReason::normal("dying"))
                                .await;
                            return;
                        }
                        Behaviour::HangOnTask => {
                            std::mem::forget(request);
                            hung = true;
                        }
                    }
                }
                other => {
                    let _ = request
                        .respond(Err(format!("unexpected {}", other.type_name())))
                        .await;
                }
            }
        }
    });
    messenger
        .send_event(proto::event::ProviderResources {
            concurrency: Some(concurrency),
            tasks: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    FakeProvider {
        messenger,
        seen,
        arrivals,
        cancels,
    }
}

/// The wall-clock time `ms` milliseconds from now.
pub fn in_ms(ms: i128) -> wasimoff_core::wkt::Timestamp {
    let now = i128::from(wasimoff_core::platform::unix_nanos());
    wasimoff_core::wkt::Timestamp::from_unix_nanos(now + ms * 1_000_000)
}

/// The broker's `/api/status` JSON.
pub async fn status(base: &str) -> serde_json::Value {
    let body = reqwest::get(format!("{base}/api/status"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// Polls `/api/status` until `ready` holds (the broker's books are updated asynchronously).
pub async fn wait_for_status(base: &str, what: &str, ready: impl Fn(&serde_json::Value) -> bool) {
    for _ in 0..2_000 {
        if ready(&status(base).await) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("broker never reported {what}");
}

/// Waits until the broker reports `n` providers with `workers` slots in total.
pub async fn wait_for_workers(base: &str, providers: i64, workers: i64) {
    let what = format!("{providers} providers with {workers} workers");
    wait_for_status(base, &what, |s| {
        s["providers"] == providers && s["workers"] == workers
    })
    .await;
}

/// Waits until the broker reports `n` queued tasks.
pub async fn wait_for_queued(base: &str, n: i64) {
    wait_for_status(base, &format!("{n} queued tasks"), |s| s["queued"] == n).await;
}

pub async fn upload(base: &str, bytes: &'static [u8], name: Option<&str>) -> String {
    let url = match name {
        Some(n) => format!("{base}/api/storage/upload?name={n}"),
        None => format!("{base}/api/storage/upload"),
    };
    let response = reqwest::Client::new()
        .post(url)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = response.headers()["x-wasimoff-ref"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    assert_eq!(header, body);
    body
}

pub fn wasip1(binary: &str, args: &[&str]) -> task::wasip1::Request {
    task::wasip1::Request {
        info: Some(task::Metadata {
            reference: Some("test".into()),
            ..Default::default()
        }),
        qos: None,
        params: Some(task::wasip1::Params {
            binary: Some(proto::File {
                r#ref: Some(binary.into()),
                ..Default::default()
            }),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
    }
}

/// Runs a task over Connect with the protobuf codec: (HTTP status, response or error body).
pub async fn run_proto(
    base: &str,
    request: &task::wasip1::Request,
) -> (u16, Result<task::wasip1::Response, String>) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/wasimoff.v1.Tasks/RunWasip1"))
        .header("content-type", "application/proto")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    if status == 200 {
        (status, Ok(task::wasip1::Response::decode(body).unwrap()))
    } else {
        (status, Err(String::from_utf8_lossy(&body).into_owned()))
    }
}

pub fn stdout(response: &task::wasip1::Response) -> String {
    match &response.result {
        Some(task::wasip1::response::Result::Ok(o)) => {
            String::from_utf8_lossy(o.stdout.as_deref().unwrap_or_default()).into_owned()
        }
        other => panic!("expected ok, got {other:?}"),
    }
}

/// `%XX` escapes decoded (as the broker decodes the `?id=` of a provider).
pub fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! Scale benchmark (issue 8, scenario 3): one broker with 1,000 and 10,000 provider connections
//! and 100,000 queued tasks.
//!
//! `cargo bench -p wasimoff-broker --bench scale [-- --quick]`
//!
//! The broker runs in this process; the provider emulator (connections that answer every task
//! at once) and the submitting client run in a child process (this binary with `--emulate`), so
//! the broker's memory can be read from `/proc/self/status` without the peers in it. Printed:
//! - scheduler decision cost (pick + finish) with N providers, sans-IO, and its ratio 10k/1k;
//! - broker memory per idle provider connection;
//! - broker memory per queued task, and end-to-end drain rate of the queue once the providers
//!   announce their slots (decisions/s through the whole broker).
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs
)]

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use wasimoff_broker::{Broker, BrokerConfig, Limits, PingConfig};
use wasimoff_core::scheduler::{
    LocalityScheduler, Placement, ProviderId, Scheduler, SchedulerEvent,
};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Nanoseconds per scheduling decision (a pick and the matching finish) with `n` providers.
fn decision_cost(n: u64, decisions: u64) -> f64 {
    let mut s = LocalityScheduler::default();
    for id in 0..n {
        s.handle(SchedulerEvent::ProviderJoined {
            id: ProviderId(id),
            slots: 4,
        });
        let refs = vec![format!("sha256:{:064x}", id % 16)];
        s.handle(SchedulerEvent::FilesAdded {
            id: ProviderId(id),
            refs,
        });
    }
    let binaries: Vec<String> = (0..32).map(|i| format!("sha256:{i:064x}")).collect();
    let mut running = std::collections::VecDeque::new();
    let start = Instant::now();
    for i in 0..decisions {
        let placement = Placement {
            binary: Some(&binaries[(i % 32) as usize]),
            exclude: &[],
        };
        let id = s.pick(&placement).expect("free slots remain");
        running.push_back(id);
        // Keep half of all slots busy, so picks see a realistic mix of full and free providers.
        if running.len() as u64 > n * 2 {
            let done = running.pop_front().expect("not empty");
            s.handle(SchedulerEvent::TaskFinished { id: done });
        }
    }
    start.elapsed().as_nanos() as f64 / decisions as f64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--emulate") {
        return emulate(
            &args[at + 1],
            args[at + 2].parse().expect("connection count"),
        );
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (sizes, tasks, decisions) = if quick {
        ([100u64, 1_000], 5_000u64, 200_000u64)
    } else {
        ([1_000, 10_000], 100_000, 2_000_000)
    };

    println!("# scale benchmark{}", if quick { " (quick)" } else { "" });
    println!("\n## scheduler decision cost (LocalityScheduler, pick + finish, sans-IO)");
    let costs: Vec<f64> = sizes.iter().map(|&n| decision_cost(n, decisions)).collect();
    for (n, c) in sizes.iter().zip(&costs) {
        println!(
            "{n:>6} providers: {c:>8.0} ns/decision ({:>10.0} decisions/s)",
            1e9 / c
        );
    }
    println!(
        "ratio {}/{}: {:.2}x (target: within 2x)",
        sizes[1],
        sizes[0],
        costs[1] / costs[0]
    );

    println!("\n## dispatcher decision cost (the sans-IO machine: submit, send, answer, reply)");
    let machine: Vec<f64> = sizes
        .iter()
        .map(|&n| wasimoff_broker::machine_decision_cost(n, decisions / 4))
        .collect();
    for ((n, m), c) in sizes.iter().zip(&machine).zip(&costs) {
        println!(
            "{n:>6} providers: {m:>8.0} ns/task ({:>10.0} tasks/s); scheduler alone {c:.0} ns: {:.1}x",
            1e9 / m,
            m / c
        );
    }
    println!(
        "ratio {}/{}: {:.2}x (target: within 2x)",
        sizes[1],
        sizes[0],
        machine[1] / machine[0]
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for &n in &sizes {
            broker_at_scale(n, if n == sizes[1] { tasks } else { tasks / 10 }).await;
        }
    });
}

async fn broker_at_scale(n: u64, tasks: u64) {
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        ping: PingConfig {
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(60),
        },
        limits: Limits {
            max_queue: 1_000_000,
            ..Limits::default()
        },
        ..BrokerConfig::default()
    };
    let handle = Broker::builder()
        .config(config)
        .build()
        .await
        .expect("broker")
        .spawn()
        .await
        .expect("spawn");
    let base = format!("http://{}", handle.local_addr());
    let status = |base: String| async move {
        let body = reqwest::get(format!("{base}/api/status"))
            .await
            .expect("status")
            .text()
            .await
            .expect("text");
        serde_json::from_str::<serde_json::Value>(&body).expect("json")
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = rss_bytes();

    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .args(["--emulate", &base, &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start emulator");
    let mut to_child = child.stdin.take().expect("stdin");
    let mut from_child = BufReader::new(child.stdout.take().expect("stdout")).lines();

    // All providers connected (with zero slots), idle.
    let connected = Instant::now();
    let line = from_child.next().expect("emulator line").expect("read");
    assert_eq!(line, "connected", "emulator: {line}");
    while status(base.clone()).await["providers"] != n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_time = connected.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_bytes();
    println!("\n## {n} providers");
    println!(
        "connect: {:.2}s; broker memory per idle provider connection: {:.1} KiB (target < 64 KiB)",
        connect_time.as_secs_f64(),
        (rss1.saturating_sub(rss0)) as f64 / n as f64 / 1024.0
    );

    // Queue tasks while no provider has a slot.
    writeln!(to_child, "submit {tasks}").expect("tell emulator");
    while status(base.clone()).await["queued"].as_u64().unwrap_or(0) < tasks {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss2 = rss_bytes();
    println!(
        "{tasks} queued tasks: broker memory per queued task: {:.2} KiB",
        (rss2.saturating_sub(rss1)) as f64 / tasks as f64 / 1024.0
    );

    // Open the slots and time the drain.
    let start = Instant::now();
    writeln!(to_child, "open").expect("tell emulator");
    let line = from_child.next().expect("emulator line").expect("read");
    let elapsed = start.elapsed();
    assert_eq!(line, "done", "emulator: {line}");
    println!(
        "drained {tasks} tasks through the broker in {:.2}s: {:.0} tasks/s end to end",
        elapsed.as_secs_f64(),
        tasks as f64 / elapsed.as_secs_f64()
    );
    drop(to_child);
    let _ = child.wait();
    handle.shutdown().await;
}

/// The child: `n` provider connections that answer tasks at once, and a client that submits.
fn emulate(base: &str, n: u64) {
    use wasimoff_core::envelope::Payload;
    use wasimoff_core::messenger::{IncomingMessage, Messenger, MessengerConfig};
    use wasimoff_core::proto::{self, task};
    use wasimoff_core::transport::WebSocketTransport;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ws = base.replacen("http", "ws", 1);
        let mut providers = Vec::new();
        for i in 0..n {
            let url = format!("{ws}/api/provider/ws?id=emu{i}");
            let transport =
                WebSocketTransport::connect(&url, &[("user-agent", "emulator")], 1 << 20)
                    .await
                    .expect("connect provider");
            let config = MessengerConfig {
                incoming_capacity: 16,
                outgoing_capacity: 16,
                ..Default::default()
            };
            let (messenger, mut incoming) = Messenger::spawn(transport, config);
            tokio::spawn(async move {
                while let Some(message) = incoming.next().await {
                    let IncomingMessage::Request(request) = message else {
                        continue;
                    };
                    let answer: Payload = match request.payload() {
                        Payload::ListingRequest(_) => {
                            proto::filesystem::listing::Response { files: vec![] }.into()
                        }
                        Payload::Wasip1Request(t) => task::wasip1::Response {
                            info: t.info.clone(),
                            result: Some(task::wasip1::response::Result::Ok(
                                task::wasip1::Output {
                                    status: Some(0),
                                    ..Default::default()
                                },
                            )),
                            error_output: None,
                        }
                        .into(),
                        Payload::Cancel(c) => c.clone().into(),
                        _ => continue,
                    };
                    let _ = request.respond(Ok(answer)).await;
                }
            });
            providers.push(messenger);
        }
        println!("connected");

        // Commands arrive one by one on stdin; a thread hands them over as they come.
        let (line_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let Some(submit) = lines.recv().await else {
            return;
        };
        let tasks: u64 = submit
            .strip_prefix("submit ")
            .and_then(|t| t.parse().ok())
            .expect("submit N");

        // Upload the module and submit everything over a few client sockets.
        let empty: &'static [u8] = b"\0asm\x01\0\0\0";
        let client = reqwest::Client::new();
        client
            .post(format!("{base}/api/storage/upload?name=empty.wasm"))
            .body(empty)
            .send()
            .await
            .expect("upload");
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        // The broker reads at most `socket_queue` (256) requests ahead per client socket, so
        // queueing N tasks at once takes N / 200 sockets or more.
        let sockets = tasks.div_ceil(200).clamp(1, 1_000);
        for s in 0..sockets {
            let url = format!("{ws}/api/client/ws");
            let transport = WebSocketTransport::connect(&url, &[], 1 << 20)
                .await
                .expect("client socket");
            let config = MessengerConfig {
                outgoing_capacity: 4096,
                request_timeout: Duration::from_secs(3600),
                ..Default::default()
            };
            let (client, _incoming) = Messenger::spawn(transport, config);
            let done_tx = done_tx.clone();
            let share = tasks / sockets + u64::from(s < tasks % sockets);
            tokio::spawn(async move {
                let calls = (0..share).map(|_| {
                    let client = client.clone();
                    let done_tx = done_tx.clone();
                    async move {
                        let request = task::wasip1::Request {
                            params: Some(task::wasip1::Params {
                                binary: Some(proto::File {
                                    r#ref: Some("empty.wasm".into()),
                                    ..Default::default()
                                }),
                                args: vec!["empty.wasm".into()],
                                ..Default::default()
                            }),
                            ..Default::default()
                        };
                        let ok =
                            matches!(client.call(request).await, Ok(Payload::Wasip1Response(_)));
                        let _ = done_tx.send(ok);
                    }
                });
                futures::future::join_all(calls).await;
            });
        }
        let Some(open) = lines.recv().await else {
            return;
        };
        assert_eq!(open, "open");
        for p in &providers {
            let resources = proto::event::ProviderResources {
                concurrency: Some(4),
                tasks: Some(0),
                ..Default::default()
            };
            let _ = p.send_event(resources).await;
        }
        let mut ok = 0;
        for _ in 0..tasks {
            if done_rx.recv().await == Some(true) {
                ok += 1;
            }
        }
        assert_eq!(ok, tasks, "every task succeeded");
        println!("done");
        let _ = std::io::stdout().flush();
        let _ = lines.recv().await;
    });
}

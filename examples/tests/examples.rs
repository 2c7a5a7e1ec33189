//! Runs the example programs: `demo` on its own, `offload` and `tsp_batch` against an
//! in-process broker with a native provider, and `embed_broker` as a server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use wasimoff_broker::{Broker, BrokerConfig};
use wasimoff_provider::{
    WasmtimeConfig, WasmtimeExecutor,
    runtime::{Provider, ProviderConfig},
};

#[path = "support/ffmpeg.rs"]
mod ffmpeg;
#[path = "support/zipfile.rs"]
mod zipfile;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn demo_runs_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_demo"))
        .env("DEMO_TASKS", "10")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("env GREETING=hello from the demo"),
        "{stdout}"
    );
    assert!(stdout.contains("exit status 3"), "{stdout}");
    assert!(stdout.contains("10 ok, 0 failed"), "{stdout}");
}

/// A broker on a free loopback port and a native provider (2 workers) connected to it.
async fn broker_and_provider(name: &str) -> (wasimoff_broker::BrokerHandle, Provider, String) {
    let broker = Broker::builder()
        .config(BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..BrokerConfig::default()
        })
        .build()
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap();
    let url = format!("http://{}", broker.local_addr());
    let executor = WasmtimeExecutor::new(WasmtimeConfig {
        workers: 2,
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let provider = Provider::builder(
        ProviderConfig {
            name: name.into(),
            ..ProviderConfig::new(url.clone())
        },
        Arc::new(executor),
    )
    .build()
    .unwrap();
    let runner = provider.clone();
    tokio::spawn(async move { runner.run().await });
    (broker, provider, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offload_and_tsp_batch_against_a_broker() {
    let (broker, provider, url) = broker_and_provider("examples-test").await;

    let offload = tokio::process::Command::new(env!("CARGO_BIN_EXE_offload"))
        .env("WASIMOFF_BROKER", &url)
        .output()
        .await
        .unwrap();
    let stdout = text(&offload.stdout);
    assert!(
        offload.status.success(),
        "{stdout}\n{}",
        text(&offload.stderr)
    );
    assert!(stdout.contains("this came in on stdin"), "{stdout}");

    let batch = tokio::process::Command::new(env!("CARGO_BIN_EXE_tsp_batch"))
        .args(["40", "8"])
        .env("WASIMOFF_BROKER", &url)
        .output()
        .await
        .unwrap();
    let stdout = text(&batch.stdout);
    assert!(batch.status.success(), "{stdout}\n{}", text(&batch.stderr));
    assert!(stdout.contains("40 of 40 tasks done, 0 failed"), "{stdout}");
    assert!(stdout.contains("shortest tour: "), "{stdout}");

    let later = tokio::process::Command::new(env!("CARGO_BIN_EXE_later"))
        .env("WASIMOFF_BROKER", &url)
        .output()
        .await
        .unwrap();
    let stdout = text(&later.stdout);
    assert!(later.status.success(), "{stdout}\n{}", text(&later.stderr));
    // In seed order, each seed once.
    let seeds: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("seed ")?.split(':').next())
        .map(str::trim)
        .collect();
    let expected: Vec<String> = (1..=20).map(|s| s.to_string()).collect();
    assert_eq!(seeds, expected, "{stdout}");
    assert!(text(&later.stderr).contains("20/20 done, 0 failed"));
    assert!(stdout.contains("(canceled)"), "{stdout}");
    assert!(stdout.contains("trap (trap): trapped"), "{stdout}");
    provider.shutdown(Duration::from_secs(2)).await;
    broker.shutdown().await;
}

/// FFmpeg's example tasks on a native provider (skipped without `cargo xtask ffmpeg`'s module,
/// unless `WASIMOFF_REQUIRE_FFMPEG` is set).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_example_tasks_on_a_native_provider() {
    let (broker, provider, url) = broker_and_provider("ffmpeg-test").await;
    let client = wasimoff_client::Client::new(url).unwrap();
    ffmpeg::example_tasks(&client, 10).await;
    provider.shutdown(Duration::from_secs(2)).await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_broker_serves_its_own_route_and_the_broker() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_embed_broker"))
        .env("LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first
        .trim()
        .strip_prefix("my service:")
        .unwrap()
        .trim()
        .trim_end_matches('/')
        .to_owned();
    let client = wasimoff_client::Client::new(format!("{base}/wasimoff")).unwrap();
    let status = client.status().await;
    client.health().await.unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    let status = status.unwrap();
    assert_eq!(status.providers, 0);
    assert_eq!(status.scheduler, "locality");
}

//! The whole system in one process: broker, the native provider runtime with the wasmtime
//! executor, and real guests from wasi-apps, including rootfs and artifacts.

use std::{io::Write, sync::Arc, time::Duration};

use wasimoff_core::proto::{self, task};
use wasimoff_provider::runtime::{Provider, ProviderConfig};
use wasimoff_provider::{WasmtimeConfig, WasmtimeExecutor};

use crate::support::*;

fn rootfs_zip() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("greeting.txt", options).unwrap();
    zip.write_all(b"hello from the rootfs\n").unwrap();
    zip.add_directory("data/", options).unwrap();
    zip.finish().unwrap().into_inner()
}

fn unzip(bytes: &[u8], name: &str) -> String {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut file = archive.by_name(name).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_guests_run_end_to_end() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let executor = WasmtimeExecutor::new(WasmtimeConfig {
        workers: 2,
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let provider = Provider::builder(
        ProviderConfig {
            name: "native".into(),
            ..ProviderConfig::new(base.clone())
        },
        Arc::new(executor),
    )
    .build()
    .unwrap();
    let running = tokio::spawn({
        let provider = provider.clone();
        async move { provider.run().await }
    });

    let client = reqwest::Client::new();
    let upload = |bytes: Vec<u8>, name: &str| {
        let request = client
            .post(format!("{base}/api/storage/upload?name={name}"))
            .body(bytes);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    upload(wasimoff_wasi_apps::HELLO.to_vec(), "hello.wasm").await;
    let rootfs = upload(rootfs_zip(), "rootfs.zip").await;
    assert!(rootfs.starts_with("sha256:"));

    // Args, stdin, a rootfs file changed by the guest and returned as an artifact.
    let mut request = wasip1("hello.wasm", &["hello.wasm", "file:greeting.txt", "stdin"]);
    let params = request.params.as_mut().unwrap();
    params.stdin = Some(b"piped in\n".to_vec().into());
    params.rootfs = Some(proto::File {
        r#ref: Some(rootfs),
        ..Default::default()
    });
    params.artifacts = vec!["greeting.txt".into()];
    let (status, response) = run_proto(&base, &request).await;
    assert_eq!(status, 200, "{response:?}");
    let response = response.unwrap();
    assert_eq!(
        response.info.as_ref().unwrap().provider.as_deref(),
        Some("native")
    );
    let Some(task::wasip1::response::Result::Ok(output)) = response.result else {
        panic!("{response:?}")
    };
    let stdout = String::from_utf8_lossy(output.stdout.as_deref().unwrap()).into_owned();
    assert_eq!(output.status, Some(0), "{stdout}");
    assert!(stdout.contains("hello from the rootfs"), "{stdout}");
    assert!(stdout.contains("piped in"), "{stdout}");
    let artifacts = output.artifacts.unwrap().blob.unwrap();
    let greeting = unzip(&artifacts, "greeting.txt");
    assert!(
        greeting.starts_with("hello from the rootfs\n") && greeting.len() > 22,
        "{greeting}"
    );

    // The exit status comes through; a trap is a task error with the guest's stderr.
    let (_, response) = run_proto(&base, &wasip1("hello.wasm", &["hello.wasm", "exit:3"])).await;
    match response.unwrap().result {
        Some(task::wasip1::response::Result::Ok(o)) => assert_eq!(o.status, Some(3)),
        other => panic!("{other:?}"),
    }
    let (_, response) = run_proto(&base, &wasip1("hello.wasm", &["hello.wasm", "trap"])).await;
    let response = response.unwrap();
    match &response.result {
        Some(task::wasip1::response::Result::Error(e)) => assert!(e.contains("trap"), "{e}"),
        other => panic!("{other:?}"),
    }
    // ... and keeps what the guest wrote before it, passed through by the broker.
    let kept = response.error_output.expect("error_output");
    assert!(String::from_utf8_lossy(kept.stdout()).contains("Hello, wasimoff!"));
    assert!(String::from_utf8_lossy(kept.stderr()).contains("trap requested"));

    // The exec route names the failed task's streams by their refs.
    let answer = client
        .post(format!("{base}/api/client/run/hello.wasm"))
        .header("x-args", "trap")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-wasimoff-result"], "Error");
    let refs: Vec<String> = ["x-wasimoff-stdout", "x-wasimoff-stderr"]
        .iter()
        .map(|h| answer.headers()[*h].to_str().unwrap().to_owned())
        .collect();
    assert!(answer.text().await.unwrap().starts_with("trapped"));
    let stdout = client
        .get(format!("{base}/api/storage/{}", refs[0]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(stdout.contains("Hello, wasimoff!"), "{stdout}");

    // The exec route with the real guest.
    let answer = client
        .post(format!("{base}/api/client/run/hello.wasm"))
        .header("x-args", "stdin")
        .body("via exec\n")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-wasimoff-status"], "0");
    assert!(answer.text().await.unwrap().contains("via exec"));

    provider.shutdown(Duration::from_secs(5)).await;
    running.await.unwrap().unwrap();
    broker.shutdown().await;
}

/// A guest that writes past the provider's output cap: the cut is flagged on the Connect API
/// (protobuf and JSON), in the trace and on the exec route, and absent when nothing was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_cut_at_the_cap_is_flagged() {
    const CAP: usize = 4096;
    let broker = broker(config()).await;
    let base = http(&broker);
    let executor = WasmtimeExecutor::new(WasmtimeConfig {
        workers: 1,
        default_max_output: CAP,
        ..WasmtimeConfig::default()
    })
    .unwrap();
    let provider = Provider::builder(
        ProviderConfig {
            name: "native".into(),
            ..ProviderConfig::new(base.clone())
        },
        Arc::new(executor),
    )
    .build()
    .unwrap();
    let running = tokio::spawn({
        let provider = provider.clone();
        async move { provider.run().await }
    });
    upload(&base, wasimoff_wasi_apps::FLOOD, Some("flood.wasm")).await;
    upload(&base, wasimoff_wasi_apps::HELLO, Some("hello.wasm")).await;

    // Protobuf, with a trace: 1 MiB of stdout, 4 KiB kept and flagged; stderr is whole.
    let mut request = wasip1("flood.wasm", &["flood.wasm", "1M"]);
    request.info.as_mut().unwrap().trace = Some(task::Trace::default());
    let (status, response) = run_proto(&base, &request).await;
    assert_eq!(status, 200, "{response:?}");
    let response = response.unwrap();
    let Some(task::wasip1::response::Result::Ok(output)) = &response.result else {
        panic!("{response:?}")
    };
    assert_eq!(output.status, Some(0));
    assert_eq!(output.stdout.as_ref().unwrap().len(), CAP);
    assert_eq!(output.stdout_truncated, Some(true));
    assert_eq!(output.stderr_truncated, None);
    let events = &response
        .info
        .as_ref()
        .unwrap()
        .trace
        .as_ref()
        .unwrap()
        .events;
    assert!(
        events.iter().any(|e| e.event
            == Some(task::trace_event::EventType::ProviderWorkerDone as i32)
            && e.details.as_deref() == Some("stdout truncated at the output cap")),
        "{events:?}"
    );

    // JSON: `stdoutTruncated: true` when cut, no key at all when not.
    let client = reqwest::Client::new();
    let run_json = |size: &str| {
        let body = serde_json::json!({
            "params": {"binary": {"ref": "flood.wasm"}, "args": ["flood.wasm", size]}
        });
        let request = client
            .post(format!("{base}/api/client/wasimoff.v1.Tasks/RunWasip1"))
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            serde_json::from_slice::<serde_json::Value>(&response.bytes().await.unwrap()).unwrap()
        }
    };
    let cut = run_json("1M").await;
    assert_eq!(cut["ok"]["stdoutTruncated"], true, "{cut}");
    assert!(cut["ok"].get("stderrTruncated").is_none(), "{cut}");
    let whole = run_json("1K").await;
    let ok = whole["ok"].as_object().unwrap();
    assert_eq!(ok["status"], 0, "{whole}");
    assert!(
        !ok.contains_key("stdoutTruncated") && !ok.contains_key("stderrTruncated"),
        "{whole}"
    );

    // The exec route names the cut streams in `X-Wasimoff-Truncated`.
    let exec = |wasm: &str, args: String| {
        let request = client
            .post(format!("{base}/api/client/run/{wasm}"))
            .header("x-args", args);
        async move { request.send().await.unwrap() }
    };
    let long = "x".repeat(2 * CAP);
    let cases = [
        ("flood.wasm", "1M".to_owned(), Some("stdout")),
        // Not a size: flood prints its usage with the argument on stderr.
        ("flood.wasm", long.clone(), Some("stderr")),
        // hello echoes its argv on stdout and the failed file on stderr.
        (
            "hello.wasm",
            format!("file:/{long}"),
            Some("stdout, stderr"),
        ),
        ("flood.wasm", "1K".to_owned(), None),
    ];
    for (wasm, args, expected) in cases {
        let answer = exec(wasm, args).await;
        assert_eq!(answer.headers()["x-wasimoff-result"], "Ok");
        let header = answer
            .headers()
            .get("x-wasimoff-truncated")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(header.as_deref(), expected, "{wasm}");
    }

    provider.shutdown(Duration::from_secs(5)).await;
    running.await.unwrap().unwrap();
    broker.shutdown().await;
}

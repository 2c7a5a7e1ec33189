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
    match response.unwrap().result {
        Some(task::wasip1::response::Result::Error(e)) => assert!(e.contains("trap"), "{e}"),
        other => panic!("{other:?}"),
    }

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

//! Every client route with a fake provider: Connect (proto and JSON), client WebSocket, exec,
//! storage, health, version, metrics, and the router mounted inside another application.

use futures::future::join_all;
use wasimoff_core::envelope::{Codec, Payload};
use wasimoff_core::messenger::{Messenger, MessengerConfig};
use wasimoff_core::proto::{self, task};
use wasimoff_core::transport::WebSocketTransport;

use crate::support::*;

#[tokio::test]
async fn upload_and_run_over_connect_proto_and_json() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let _p = provider(&base, "p1", 2, Behaviour::Echo).await;
    let r = upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    assert!(r.starts_with("sha256:"));

    let (status, response) = run_proto(
        &base,
        &wasip1("empty.wasm", &["empty.wasm", "hello", "proto"]),
    )
    .await;
    assert_eq!(status, 200);
    let response = response.unwrap();
    assert_eq!(stdout(&response), "hello proto");
    let info = response.info.unwrap();
    assert_eq!(info.provider.as_deref(), Some("p1"));
    assert_eq!(info.reference.as_deref(), Some("test"));

    let body = serde_json::json!({
        "@type": "wasimoff/wasimoff.v1.Task.Wasip1.Request",
        "info": {"reference": "json-task"},
        "params": {"binary": {"ref": r}, "args": ["x", "hi"], "stdin": "IGpzb24="}
    });
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/wasimoff.v1.Tasks/RunWasip1"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(value["ok"]["status"], 0, "status 0 is present in JSON");
    assert_eq!(value["ok"]["stdout"], "aGkganNvbg=="); // "hi json"
    assert_eq!(value["info"]["reference"], "json-task");
    broker.shutdown().await;
}

#[tokio::test]
async fn inline_binary_and_connect_upload() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let _p = provider(&base, "p1", 1, Behaviour::Echo).await;
    let mut request = wasip1("", &["a", "inline"]);
    request.params.as_mut().unwrap().binary = Some(proto::File {
        blob: Some(EMPTY_WASM.into()),
        ..Default::default()
    });
    let (status, response) = run_proto(&base, &request).await;
    assert_eq!(
        (status, stdout(&response.unwrap()).as_str()),
        (200, "inline")
    );

    let upload = serde_json::json!({"upload": {"ref": "up.wasm", "media": "application/wasm", "blob": "AGFzbQEAAAA="}});
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/wasimoff.v1.Tasks/Upload"))
        .header("content-type", "application/json")
        .body(upload.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let value: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert!(value["ref"].as_str().unwrap().starts_with("sha256:"));
    let download = reqwest::get(format!("{base}/api/storage/up.wasm"))
        .await
        .unwrap();
    assert_eq!(
        download.headers()["x-wasimoff-ref"].to_str().unwrap(),
        value["ref"].as_str().unwrap()
    );
    assert_eq!(download.headers()["content-type"], "application/wasm");
    assert_eq!(download.headers()["access-control-allow-origin"], "*");
    assert_eq!(download.bytes().await.unwrap().as_ref(), EMPTY_WASM);
    broker.shutdown().await;
}

#[tokio::test]
async fn client_websocket_runs_tasks_in_both_codecs() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let _p = provider(&base, "p1", 4, Behaviour::Echo).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let url = format!("ws://{}/api/client/ws", broker.local_addr());
    let transport = WebSocketTransport::connect(&url, &[], 1 << 20)
        .await
        .unwrap();
    assert_eq!(
        wasimoff_core::transport::Transport::codec(&transport),
        Codec::Protobuf
    );
    let (client, _incoming) = Messenger::spawn(transport, MessengerConfig::default());
    let calls = (0..10).map(|i| {
        let client = client.clone();
        async move {
            let i = i.to_string();
            let answer = client.call(wasip1("empty.wasm", &["e", &i])).await.unwrap();
            match answer {
                Payload::Wasip1Response(r) => assert_eq!(stdout(&r), i),
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    join_all(calls).await;
    // Something that is not a task gets an error answer, and the socket stays usable.
    let err = client
        .call(proto::filesystem::listing::Request {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid_argument"), "{err}");
    let answer = client
        .call(wasip1("missing.wasm", &["m"]))
        .await
        .unwrap_err();
    assert!(answer.to_string().contains("not_found"), "{answer}");

    // The JSON subprotocol, spoken as the TypeScript original writes it.
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "wasimoff_provider_v1_json".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let frame = r#"{"sequence":"0","type":"Request","payload":{"params":{"binary":{"ref":"empty.wasm"},"args":["e","json"]},"@type":"wasimoff/wasimoff.v1.Task.Wasip1.Request"}}"#;
    socket.send(Message::Text(frame.into())).await.unwrap();
    let Some(Ok(Message::Text(answer))) = socket.next().await else {
        panic!("no answer")
    };
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["sequence"], "0");
    assert_eq!(answer["type"], "Response");
    assert_eq!(answer["payload"]["ok"]["stdout"], "anNvbg=="); // "json"
    broker.shutdown().await;
}

#[tokio::test]
async fn exec_route_maps_headers_and_body() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let _p = provider(&base, "p1", 1, Behaviour::Echo).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/run/empty.wasm"))
        .header("x-args", r#"one "two words""#)
        .header("x-env-greeting", "hi")
        .body(" stdin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-wasimoff-result"], "Ok");
    assert_eq!(response.headers()["x-wasimoff-status"], "0");
    assert_eq!(response.headers()["x-wasimoff-provider"], "p1");
    assert_eq!(response.text().await.unwrap(), "one two words stdin");

    let bad = reqwest::Client::new()
        .post(format!("{base}/api/client/run/empty.wasm"))
        .header("x-args", r#"unterminated "quote"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let missing = reqwest::Client::new()
        .post(format!("{base}/api/client/run/nope.wasm"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    broker.shutdown().await;
}

#[tokio::test]
async fn health_version_status_and_metrics() {
    let broker = broker(config()).await;
    let base = http(&broker);
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "OK\n"
    );
    let version: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("{base}/api/version"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(version["protocol"], "wasimoff.v1");
    let _p = provider(&base, "p1", 3, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 3).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    run_proto(&base, &wasip1("empty.wasm", &["e"]))
        .await
        .1
        .unwrap();
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "wasimoff_providers 1",
        "wasimoff_workers 3",
        "wasimoff_tasks_completed_total{outcome=\"ok\"} 1",
        "wasimoff_task_duration_seconds_count 1",
        "wasimoff_tasks_queued 0",
        "wasimoff_task_retries_total 0",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle:?}:\n{metrics}"
        );
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn router_mounts_inside_another_axum_app() {
    let broker = wasimoff_broker::Broker::builder().build().await.unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "the host app" }))
        .nest("/wasimoff", broker.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://{addr}/wasimoff");
    assert_eq!(
        reqwest::get(format!("http://{addr}/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "the host app"
    );
    let _p = provider(&base, "mounted", 1, Behaviour::Echo).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let (status, response) = run_proto(&base, &wasip1("empty.wasm", &["e", "mounted"])).await;
    assert_eq!(
        (status, stdout(&response.unwrap()).as_str()),
        (200, "mounted")
    );
}

#[tokio::test]
async fn uploads_survive_a_restart_with_the_dir_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.store = wasimoff_broker::StoreConfig::Dir(dir.path().to_path_buf());
    let first = broker(cfg.clone()).await;
    let r = upload(&http(&first), EMPTY_WASM, Some("kept.wasm")).await;
    first.shutdown().await;
    let second = broker(cfg).await;
    let response = reqwest::get(format!("{}/api/storage/kept.wasm", http(&second)))
        .await
        .unwrap();
    assert_eq!(response.headers()["x-wasimoff-ref"].to_str().unwrap(), r);
    second.shutdown().await;
}

#[tokio::test]
async fn hundred_clients_twenty_tasks_each() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let _a = provider(&base, "a", 8, Behaviour::Echo).await;
    let _b = provider(&base, "b", 8, Behaviour::Echo).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let clients = (0..100).map(|c| {
        let base = base.clone();
        async move {
            for t in 0..20 {
                let word = format!("c{c}t{t}");
                let (status, response) =
                    run_proto(&base, &wasip1("empty.wasm", &["e", &word])).await;
                assert_eq!(status, 200);
                assert_eq!(stdout(&response.unwrap()), word);
            }
        }
    });
    join_all(clients).await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wasimoff_tasks_completed_total{outcome=\"ok\"} 2000"),
        "{metrics}"
    );
    broker.shutdown().await;
}

#[test]
fn task_json_examples_parse() {
    // The example task files in examples/tasks are proto3 JSON with "@type".
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tasks");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let mut value: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let ty = value.as_object_mut().unwrap().remove("@type").unwrap();
            assert_eq!(
                ty,
                "wasimoff/wasimoff.v1.Task.Wasip1.Request",
                "{}",
                path.display()
            );
            let _: task::wasip1::Request = serde_json::from_value(value).unwrap();
            n += 1;
        }
    }
    assert!(n >= 5);
}

#[tokio::test]
async fn status_and_metrics_need_a_token_when_tokens_are_set() {
    let mut cfg = config();
    cfg.client_tokens = vec!["client-secret".into()];
    cfg.provider_tokens = vec!["provider-secret".into()];
    let broker = broker(cfg).await;
    let base = http(&broker);
    let http = reqwest::Client::new();
    for route in ["/api/status", "/metrics"] {
        let open = http.get(format!("{base}{route}")).send().await.unwrap();
        assert_eq!(open.status(), 401, "{route} without a token");
        for token in ["client-secret", "provider-secret"] {
            let with = http
                .get(format!("{base}{route}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(with.status(), 200, "{route} with {token}");
        }
    }
    // Liveness and version stay open (load balancers, probes).
    for route in ["/healthz", "/api/version"] {
        let open = http.get(format!("{base}{route}")).send().await.unwrap();
        assert_eq!(open.status(), 200, "{route}");
    }
    broker.shutdown().await;
}

#[test]
fn help_never_prints_token_values() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_wasimoff-broker"))
        .arg("--help")
        .env("WASIMOFF_CLIENT_TOKENS", "very-secret-client-token")
        .env("WASIMOFF_PROVIDER_TOKENS", "very-secret-provider-token")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--client-tokens"), "{help}");
    assert!(!help.contains("very-secret"), "{help}");
}

#[tokio::test]
async fn with_no_provider_a_task_is_told_unavailable_promptly() {
    let mut cfg = config();
    cfg.limits.provider_wait = std::time::Duration::from_millis(300);
    let broker = broker(cfg).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let started = std::time::Instant::now();
    let (status, body) = run_proto(&base, &wasip1("empty.wasm", &["e"])).await;
    assert_eq!(status, 503);
    let body = body.unwrap_err();
    assert!(
        body.contains("unavailable") && body.contains("no provider"),
        "{body}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // A provider joins: the next task runs.
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 1).await;
    assert_eq!(run_proto(&base, &wasip1("empty.wasm", &["e"])).await.0, 200);
    broker.shutdown().await;
}

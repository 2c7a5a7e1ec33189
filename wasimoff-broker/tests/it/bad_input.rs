//! Every kind of malformed input gets a clear error, and the broker keeps serving a healthy
//! client running tasks at the same time.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use wasimoff_core::proto::{self, task};

use crate::support::*;

/// Runs tasks in a loop until told to stop; counts successes and asserts every one worked.
fn healthy_client(
    base: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let (status, response) =
                run_proto(&base, &wasip1("empty.wasm", &["e", "healthy"])).await;
            assert_eq!(status, 200);
            assert_eq!(stdout(&response.unwrap()), "healthy");
            done.fetch_add(1, Ordering::Relaxed);
        }
    })
}

async fn connect(base: &str, method: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/wasimoff.v1.Tasks/{method}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn malformed_requests_get_errors_while_others_are_served() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let _p = provider(&base, "p", 4, Behaviour::Echo).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let healthy = healthy_client(base.clone(), stop.clone(), done.clone());

    let json = "application/json";
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("RunWasip1", "application/proto", b"\xff\xff\xff\xff".to_vec(), 400, "invalid_argument"),
        ("RunWasip1", json, b"{not json".to_vec(), 400, "invalid_argument"),
        // Unknown fields are ignored (as the original does): this is a request without params.
        ("RunWasip1", json, br#"{"bogus": 1}"#.to_vec(), 400, "task without params"),
        ("RunWasip1", json, b"{}".to_vec(), 400, "task without params"),
        ("RunWasip1", json, br#"{"params": {}}"#.to_vec(), 400, "task without binary"),
        ("RunWasip1", json, br#"{"params": {"binary": {}}}"#.to_vec(), 400, "neither ref nor blob"),
        ("RunWasip1", json, br#"{"params": {"binary": {"ref": "nope.wasm"}}}"#.to_vec(), 404, "not_found"),
        (
            "RunWasip1",
            json,
            br#"{"params": {"binary": {"blob": "bm90IHdhc20="}}}"#.to_vec(),
            400,
            "invalid WebAssembly module",
        ),
        (
            "RunWasip1",
            json,
            br#"{"params": {"binary": {"ref": "empty.wasm"}, "envs": ["NOEQUALS"]}}"#.to_vec(),
            400,
            "KEY=value",
        ),
        (
            "RunWasip1",
            json,
            br#"{"params": {"binary": {"ref": "empty.wasm"}, "rootfs": {"ref": "sha256:0000000000000000000000000000000000000000000000000000000000000000"}}}"#.to_vec(),
            404,
            "rootfs",
        ),
        ("RunPyodide", json, br#"{"params": {}}"#.to_vec(), 400, "script or pickle"),
        ("Upload", json, b"{}".to_vec(), 400, "upload without file"),
        ("Teleport", json, b"{}".to_vec(), 404, "no such procedure"),
    ];
    for (method, content_type, body, status, needle) in cases {
        let (got, text) = connect(&base, method, content_type, body).await;
        assert_eq!(got, status, "{method} {text}");
        assert!(
            text.contains(needle),
            "{method}: {text:?} should mention {needle:?}"
        );
    }
    let (got, _) = connect(&base, "RunWasip1", "text/plain", b"hi".to_vec()).await;
    assert_eq!(got, 415);

    // Storage: a non-wasm, non-zip upload, an invalid module, a bad alias, a missing file.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/api/storage/upload"))
        .body("#!/bin/sh")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = client
        .post(format!("{base}/api/storage/upload"))
        .body(b"\0asm\x01\0\0\0\x99".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("invalid WebAssembly module")
    );
    let r = client
        .post(format!("{base}/api/storage/upload?name=sha256:abc"))
        .body(EMPTY_WASM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client
        .get(format!("{base}/api/storage/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Stdin over the limit.
    let mut big = wasip1("empty.wasm", &["e"]);
    big.params.as_mut().unwrap().stdin = Some(vec![0u8; (16 << 20) + 1].into());
    let (status, body) = run_proto(&base, &big).await;
    assert_eq!(status, 400, "{body:?}");

    stop.store(true, Ordering::Relaxed);
    healthy.await.unwrap();
    assert!(
        done.load(Ordering::Relaxed) > 0,
        "the healthy client was served throughout"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn malformed_socket_traffic_closes_only_that_socket() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let _p = provider(&base, "p", 2, Behaviour::Echo).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let healthy = healthy_client(base.clone(), stop.clone(), done.clone());
    let ws = format!("ws://{}", broker.local_addr());

    let open = |path: &str, protocol: Option<&str>| {
        let mut request = format!("{ws}{path}").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("user-agent", "raw-peer".parse().unwrap());
        if let Some(p) = protocol {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    async fn close_code(
        socket: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> u16 {
        while let Some(message) = socket.next().await {
            if let Ok(Message::Close(Some(frame))) = message {
                return frame.code.into();
            }
        }
        0
    }
    for path in ["/api/client/ws", "/api/provider/ws?id=raw"] {
        // A text frame on the protobuf subprotocol: 1003.
        let (mut socket, _) = open(path, Some("wasimoff_provider_v1_protobuf"))
            .await
            .unwrap();
        socket.send(Message::Text("{}".into())).await.unwrap();
        assert_eq!(close_code(&mut socket).await, 1003, "{path}");
        // Garbage bytes: 1007.
        let (mut socket, _) = open(path, Some("wasimoff_provider_v1_protobuf"))
            .await
            .unwrap();
        socket
            .send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
            .await
            .unwrap();
        assert_eq!(close_code(&mut socket).await, 1007, "{path}");
        // No subprotocol offered: the upgrade succeeds, then 1002 with the supported list.
        let (mut socket, _) = open(path, None).await.unwrap();
        assert_eq!(close_code(&mut socket).await, 1002, "{path}");
    }
    // A request without a sequence on the client socket gets an error answer; the socket lives.
    let (mut socket, _) = open("/api/client/ws", Some("wasimoff_provider_v1_json"))
        .await
        .unwrap();
    socket
        .send(Message::Text(
            r#"{"type":"Request","payload":{"@type":"wasimoff/wasimoff.v1.Ping"}}"#.into(),
        ))
        .await
        .unwrap();
    let Some(Ok(Message::Text(answer))) = socket.next().await else {
        panic!("expected an answer")
    };
    assert!(answer.contains("request without sequence"), "{answer}");
    // A provider without a User-Agent is refused before the upgrade.
    let plain = reqwest::Client::builder().user_agent("").build().unwrap();
    let r = plain
        .get(format!("{base}/api/provider/ws"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    stop.store(true, Ordering::Relaxed);
    healthy.await.unwrap();
    assert!(done.load(Ordering::Relaxed) > 0);
    let _ = (proto::Ping {}, task::QoS::default());
    broker.shutdown().await;
}

#[tokio::test]
async fn oversized_tasks_are_refused_before_any_provider_sees_them() {
    let mut cfg = config();
    cfg.limits.max_frame = 1 << 20;
    cfg.limits.max_args = 8;
    cfg.limits.max_args_bytes = 4 << 20;
    let broker = broker(cfg).await;
    let base = http(&broker);
    let p = provider(&base, "p", 1, Behaviour::Echo).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    // Larger than a provider frame: it would drop its connection, so the broker refuses.
    let big = "x".repeat(2 << 20);
    let (status, body) = run_proto(&base, &wasip1("empty.wasm", &["e", &big])).await;
    assert_eq!(status, 400);
    assert!(body.unwrap_err().contains("frame limit"));
    // Too many arguments, and too many bytes of them.
    let many: Vec<String> = (0..9).map(|i| i.to_string()).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let (status, body) = run_proto(&base, &wasip1("empty.wasm", &many)).await;
    assert_eq!(status, 400);
    assert!(body.unwrap_err().contains("max_args"));
    let huge = "y".repeat(5 << 20);
    let (status, body) = run_proto(&base, &wasip1("empty.wasm", &["e", &huge])).await;
    assert_eq!(status, 400);
    assert!(body.unwrap_err().contains("max_args_bytes"));
    // None of them reached the provider; a healthy task right after does.
    let (status, response) = run_proto(&base, &wasip1("empty.wasm", &["e", "fine"])).await;
    assert_eq!((status, stdout(&response.unwrap()).as_str()), (200, "fine"));
    assert_eq!(p.seen.lock().await.tasks.len(), 1);
    broker.shutdown().await;
}

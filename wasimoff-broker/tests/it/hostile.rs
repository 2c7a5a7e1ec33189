//! Hostile clients: slow sockets, silent sockets, floods of queued bytes, requests that cost
//! far more decoded than on the wire. Each is refused or cut off, and a healthy client's task
//! succeeds right after.

use std::time::Duration;

use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wasimoff_core::envelope::Payload;
use wasimoff_core::messenger::{Messenger, MessengerConfig};
use wasimoff_core::transport::WebSocketTransport;

use crate::support::*;

/// Reads until the broker closes the socket; fails the test if it never does.
async fn read_to_close(socket: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the broker kept a hostile socket open");
    seen
}

/// Uploads the empty module, connects an echo provider and runs one task.
async fn healthy_task(base: &str, words: &str) {
    let (status, response) = run_proto(base, &wasip1("empty.wasm", &["e", words])).await;
    assert_eq!((status, stdout(&response.unwrap()).as_str()), (200, words));
}

#[tokio::test]
async fn slow_headers_time_out_and_idle_sockets_make_room_at_the_cap() {
    let mut cfg = config();
    cfg.limits.max_connections = 16;
    cfg.limits.header_timeout = Duration::from_millis(500);
    let broker = broker(cfg).await;
    let base = http(&broker);
    // Slowloris: 40 sockets (more than the cap) that send half a request line and stall.
    let mut slow = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
        slow.push(s);
    }
    // The broker still answers, and a provider and a client get in and run a task.
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    healthy_task(&base, "through").await;
    // Every slow socket is closed: evicted for a newcomer, or at the header timeout.
    for s in &mut slow {
        let seen = read_to_close(s).await;
        assert!(
            seen.is_empty() || seen.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
    }
    healthy_task(&base, "after").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn slow_bodies_fail_at_the_minimum_rate() {
    let mut cfg = config();
    cfg.limits.header_timeout = Duration::from_millis(300);
    cfg.limits.min_body_rate = 4096;
    let broker = broker(cfg).await;
    let base = http(&broker);
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    s.write_all(
        b"POST /api/storage/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n\0asm",
    )
    .await
    .unwrap();
    let seen = read_to_close(&mut s).await;
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    // A body that keeps the pace is fine.
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    healthy_task(&base, "fine").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn silent_sockets_are_closed_and_answering_ones_kept() {
    let mut cfg = config();
    cfg.limits.socket_idle_timeout = Duration::from_millis(300);
    let broker = broker(cfg).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    // A client socket that never reads, so never answers the broker's pings.
    let mut silent = TcpStream::connect(broker.local_addr()).await.unwrap();
    silent
        .write_all(
            b"GET /api/client/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Protocol: wasimoff_provider_v1_protobuf\r\n\r\n",
        )
        .await
        .unwrap();
    // A client that reads (and so answers pings) while idle for several timeouts.
    let url = format!("{}/api/client/ws", base.replacen("http", "ws", 1));
    let transport = WebSocketTransport::connect(&url, &[], 1 << 20)
        .await
        .unwrap();
    let (messenger, _incoming) = Messenger::spawn(transport, MessengerConfig::default());
    let seen = read_to_close(&mut silent).await;
    assert!(seen.starts_with(b"HTTP/1.1 101"));
    // Idle for two more timeouts (the subject of the test, not synchronisation).
    tokio::time::sleep(Duration::from_millis(600)).await;
    let response = messenger
        .call(Payload::Wasip1Request(wasip1(
            "empty.wasm",
            &["e", "still here"],
        )))
        .await
        .unwrap();
    match response {
        Payload::Wasip1Response(r) => assert_eq!(stdout(&r), "still here"),
        other => panic!("{other:?}"),
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn the_byte_budget_refuses_with_429_and_frees_on_answers() {
    let mut cfg = config();
    cfg.limits.max_queue_bytes = 3 << 20 | 1 << 19; // 3.5 MiB
    cfg.limits.max_stdin = 2 << 20;
    let broker = broker(cfg).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let with_stdin = |n: usize, byte: u8| {
        let mut r = wasip1("empty.wasm", &["e"]);
        r.params.as_mut().unwrap().stdin = Some(vec![byte; n].into());
        r
    };
    // Larger than max_stdin: never.
    let (status, body) = run_proto(&base, &with_stdin(3 << 20, b'e')).await;
    assert_eq!(status, 400);
    assert!(body.unwrap_err().contains("max_stdin"));
    // Three tasks of 1 MiB each wait for a provider.
    let mut waiting = Vec::new();
    for byte in [b'a', b'b', b'c'] {
        let (url, request) = (base.clone(), with_stdin(1 << 20, byte));
        waiting.push(tokio::spawn(async move { run_proto(&url, &request).await }));
        wait_for_queued(&base, waiting.len() as i64).await;
    }
    // The fourth does not fit in the budget: retry later.
    let (status, body) = run_proto(&base, &with_stdin(1 << 20, b'd')).await;
    assert_eq!(status, 429);
    assert!(body.unwrap_err().contains("max_queue_bytes"));
    // A fifth is refused before its body is read: only its headers are sent.
    let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
    s.write_all(
        b"POST /api/client/wasimoff.v1.Tasks/RunWasip1 HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/proto\r\nContent-Length: 1048576\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 429");
    // A provider comes; every waiting task gets its own stdin back.
    let _p = provider(&base, "p", 2, Behaviour::Echo).await;
    for (task, byte) in waiting.into_iter().zip([b'a', b'b', b'c']) {
        let (status, response) = task.await.unwrap();
        assert_eq!(status, 200);
        let out = stdout(&response.unwrap());
        assert_eq!(out.len(), 1 << 20);
        assert!(out.bytes().all(|b| b == byte));
    }
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("wasimoff_tasks_held_bytes 0"), "{metrics}");
    let (status, _) = run_proto(&base, &with_stdin(1 << 20, b'f')).await;
    assert_eq!(status, 200);
    broker.shutdown().await;
}

#[tokio::test]
async fn requests_that_decode_large_are_refused_before_decoding() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    // 300,000 empty arguments: 600 kB of protobuf, 7 MB decoded.
    let mut request = wasip1("empty.wasm", &["e"]);
    request.params.as_mut().unwrap().args = vec![String::new(); 300_000];
    let proto = request.encode_to_vec();
    let json = serde_json::to_vec(&request).unwrap();
    for (content_type, body) in [("application/proto", proto), ("application/json", json)] {
        let response = reqwest::Client::new()
            .post(format!("{base}/api/client/wasimoff.v1.Tasks/RunWasip1"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{content_type}");
        let text = response.text().await.unwrap();
        assert!(text.contains("max_args"), "{content_type}: {text}");
    }
    healthy_task(&base, "fine").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn clients_cannot_take_the_providers_share_of_connections() {
    let mut cfg = config();
    cfg.limits.max_connections = 8;
    cfg.limits.provider_share = 50;
    let broker = broker(cfg).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    // Four client sockets use the clients' half.
    let url = format!("{}/api/client/ws", base.replacen("http", "ws", 1));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let transport = WebSocketTransport::connect(&url, &[], 1 << 20)
            .await
            .unwrap();
        clients.push(Messenger::spawn(transport, MessengerConfig::default()));
    }
    // Another client request is turned away; health checks and providers are not.
    let refused = reqwest::get(format!("{base}/api/version")).await.unwrap();
    assert_eq!(refused.status(), 503);
    let health = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    let response = clients[0]
        .0
        .call(Payload::Wasip1Request(wasip1("empty.wasm", &["e", "in"])))
        .await
        .unwrap();
    match response {
        Payload::Wasip1Response(r) => assert_eq!(stdout(&r), "in"),
        other => panic!("{other:?}"),
    }
    // A client socket closes: its place is free again.
    clients.pop();
    for attempt in 0.. {
        let status = reqwest::get(format!("{base}/api/version"))
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(attempt < 1000, "the closed socket's place never came back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_before_it_is_read() {
    let mut cfg = config();
    cfg.limits.max_upload = 1 << 20;
    let broker = broker(cfg).await;
    for path in [
        "/api/storage/upload",
        "/api/client/wasimoff.v1.Tasks/RunWasip1",
        "/api/client/run/x.wasm",
    ] {
        // Headers only: the broker must answer from Content-Length, without waiting for bytes
        // that never come (it would time out with 400 after the header timeout instead).
        let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\n\
             Content-Length: {}\r\n\r\n",
            3 << 20
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let seen = read_to_close(&mut s).await;
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_bodies_are_not_read() {
    let mut cfg = config();
    cfg.client_tokens = vec!["secret".into()];
    let broker = broker(cfg).await;
    for path in [
        "/api/storage/upload",
        "/api/client/run/empty.wasm",
        "/api/client/wasimoff.v1.Tasks/Upload",
    ] {
        let mut s = TcpStream::connect(broker.local_addr()).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/proto\r\n\
             Content-Length: 200000000\r\nExpect: 100-continue\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        // Answered at once, without a byte of the body.
        let mut status = [0u8; 12];
        s.read_exact(&mut status).await.unwrap();
        assert_eq!(&status, b"HTTP/1.1 401", "{path}");
    }
    let ok = reqwest::Client::new()
        .post(format!("{}/api/storage/upload", http(&broker)))
        .bearer_auth("secret")
        .body(EMPTY_WASM)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    broker.shutdown().await;
}

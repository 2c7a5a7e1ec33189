//! The runtime over real loopback sockets: the default `WebSocketConnector` against a
//! tokio-tungstenite broker that selects the protobuf subprotocol, and `HttpFetcher` against a
//! minimal HTTP/1.1 file server.

use std::sync::Arc;

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::{
    handshake::server::{Request, Response},
    http::{HeaderValue, header},
};
use wasimoff_core::{
    envelope::Codec,
    store::Ref,
    transport::{CloseReason, WebSocketTransport},
};
use wasimoff_provider::runtime::{FetchError, Fetcher, HttpFetcher, Provider, ProviderConfig};

use super::{Broker, FakeExecutor, FakeFetcher, blob, ok_stdout, response, task, within};

#[tokio::test]
async fn websocket_connector_speaks_to_a_loopback_broker() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conn_tx, mut connections) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen_tx, seen) = std::sync::mpsc::channel();
            let callback = move |request: &Request, mut reply: Response| {
                let header = |name| {
                    request
                        .headers()
                        .get(name)
                        .and_then(|v: &HeaderValue| v.to_str().ok())
                        .map(str::to_owned)
                };
                let _ = seen_tx.send((
                    request.uri().to_string(),
                    header(header::USER_AGENT),
                    header(header::AUTHORIZATION),
                    header(header::SEC_WEBSOCKET_PROTOCOL),
                ));
                reply.headers_mut().insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static("wasimoff_provider_v1_protobuf"),
                );
                Ok(reply)
            };
            let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
                .await
                .unwrap();
            let transport = WebSocketTransport::new(ws, Codec::Protobuf);
            let _ = conn_tx.send((transport, seen.recv().unwrap()));
        }
    });

    let (started, _started_rx) = mpsc::unbounded_channel();
    let (stopping, _stopping_rx) = mpsc::unbounded_channel();
    let executor = FakeExecutor {
        started,
        stopping,
        release: Arc::default(),
    };
    let config = ProviderConfig {
        name: "ws-tester".into(),
        token: Some("secret".into()),
        prefetch: Some(0),
        ..ProviderConfig::new(format!("http://{addr}"))
    };
    let provider = Provider::builder(config, Arc::new(executor))
        .fetcher(Arc::new(FakeFetcher::default()))
        .build()
        .unwrap();
    let runner = provider.clone();
    let run = tokio::spawn(async move { runner.run().await });

    let (transport, (uri, agent, auth, offered)) =
        within("a connection", connections.recv()).await.unwrap();
    assert_eq!(uri, "/api/provider/ws?id=ws-tester");
    assert!(agent.unwrap().starts_with("wasimoff-provider/"));
    assert_eq!(auth.as_deref(), Some("Bearer secret"));
    assert_eq!(
        offered.as_deref(),
        Some("wasimoff_provider_v1_protobuf, wasimoff_provider_v1_json")
    );

    let (messenger, incoming) =
        wasimoff_core::messenger::Messenger::spawn(transport, Default::default());
    let mut broker = Broker {
        messenger,
        incoming,
    };
    broker.resources(2, 0).await;
    let out = response(
        broker
            .call(task(
                "ws",
                blob(b"\0asm"),
                &["a.wasm", "echo", "over", "tcp"],
            ))
            .await
            .unwrap(),
    );
    assert_eq!(ok_stdout(&out), "over tcp");

    provider.shutdown(std::time::Duration::from_secs(5)).await;
    within("run to end", run).await.unwrap().unwrap();
    assert_eq!(
        within("the close", broker.messenger.closed()).await,
        CloseReason::normal("provider shutting down")
    );
}

/// Serves `body` at `/api/storage/<its ref>` and 404 elsewhere, one request per connection.
async fn file_server(body: Bytes) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let path = format!("/api/storage/{}", Ref::of(&body));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&head);
            let target = head.split_whitespace().nth(1).unwrap_or_default();
            let (status, payload) = if target == path {
                ("200 OK", body.clone())
            } else {
                ("404 Not Found", Bytes::new())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                payload.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.write_all(&payload).await;
            let _ = stream.shutdown().await;
        }
    });
    addr
}

#[tokio::test]
async fn http_fetcher_downloads_from_broker_storage() {
    let body = Bytes::from_static(b"\0asm served over http");
    let addr = file_server(body.clone()).await;
    let config = ProviderConfig::new(format!("http://{addr}"));
    let fetcher = HttpFetcher::new(config.storage_url().unwrap(), "test", None, 1 << 20).unwrap();
    let r = Ref::of(&body);
    assert_eq!(
        within("a fetch", fetcher.fetch(r.as_str())).await.unwrap(),
        body
    );
    assert_eq!(
        within("a fetch", fetcher.fetch(Ref::of(b"other").as_str())).await,
        Err(FetchError::NotFound)
    );
    let small = HttpFetcher::new(config.storage_url().unwrap(), "test", None, 4).unwrap();
    assert!(matches!(
        within("a fetch", small.fetch(r.as_str())).await,
        Err(FetchError::TooLarge { .. })
    ));
}

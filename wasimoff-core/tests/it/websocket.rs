//! The native WebSocket transport against a real server on 127.0.0.1:0: subprotocol
//! negotiation, a call over each codec, the frame size limit, refused upgrades, and (feature
//! `rustls`) wss:// with a self-signed certificate.
#![cfg(feature = "native")]

use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use wasimoff_core::envelope::{Codec, Payload};
use wasimoff_core::messenger::{IncomingMessage, Messenger, MessengerConfig};
use wasimoff_core::proto;
use wasimoff_core::transport::{ConnectError, WebSocketTransport};

/// Accepts one connection, selecting `select` (if any) as the subprotocol, and serves probes.
async fn serve_once(select: Option<Codec>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "ws://{}/api/provider/ws?id=test",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        // tungstenite's handshake callback signature returns its large error type.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, mut resp: Response| {
            let offered = req
                .headers()
                .get("sec-websocket-protocol")
                .unwrap()
                .to_str()
                .unwrap();
            assert_eq!(
                offered,
                "wasimoff_provider_v1_protobuf, wasimoff_provider_v1_json"
            );
            assert_eq!(req.headers().get("user-agent").unwrap(), "wasimoff-test");
            if let Some(codec) = select {
                resp.headers_mut().insert(
                    "sec-websocket-protocol",
                    HeaderValue::from_static(codec.subprotocol()),
                );
            }
            Ok(resp)
        };
        let ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
            .await
            .unwrap();
        let Some(codec) = select else { return };
        let (_m, mut incoming) = Messenger::spawn(
            WebSocketTransport::new(ws, codec),
            MessengerConfig::default(),
        );
        while let Some(IncomingMessage::Request(r)) = incoming.next().await {
            let answer = proto::filesystem::probe::Response { ok: Some(true) };
            let _ = r.respond(Ok(answer.into())).await;
        }
    });
    url
}

#[tokio::test]
async fn calls_work_over_both_subprotocols() {
    for codec in [Codec::Protobuf, Codec::Json] {
        let url = serve_once(Some(codec)).await;
        let transport =
            WebSocketTransport::connect(&url, &[("user-agent", "wasimoff-test")], 1 << 20)
                .await
                .unwrap();
        let (m, _incoming) = Messenger::spawn(transport, MessengerConfig::default());
        let probe = proto::filesystem::probe::Request {
            file: Some("sha256:00".into()),
        };
        let answer = m.call(probe).await.unwrap();
        assert_eq!(
            answer,
            Payload::ProbeResponse(proto::filesystem::probe::Response { ok: Some(true) })
        );
    }
}

#[tokio::test]
async fn a_server_that_selects_no_subprotocol_is_refused() {
    let url = serve_once(None).await;
    let err = WebSocketTransport::connect(&url, &[("user-agent", "wasimoff-test")], 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::NoSubprotocol(None)), "{err}");
}

#[tokio::test]
async fn a_refused_upgrade_reports_its_status_and_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/api/provider/ws", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        #[allow(clippy::result_large_err)]
        let callback = |_: &Request, _: Response| {
            let mut refusal = ErrorResponse::new(Some("missing or wrong token".into()));
            *refusal.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refusal)
        };
        let _ = tokio_tungstenite::accept_hdr_async(tcp, callback).await;
    });
    let err = WebSocketTransport::connect(&url, &[], 1 << 20)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("missing or wrong token"), "{err}");
}

#[cfg(feature = "rustls")]
mod tls {
    use std::sync::Arc;

    use tokio::net::TcpListener;
    use tokio_rustls::{
        TlsAcceptor,
        rustls::{
            ServerConfig,
            pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
        },
    };
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    use wasimoff_core::envelope::{Codec, Payload};
    use wasimoff_core::messenger::{IncomingMessage, Messenger, MessengerConfig};
    use wasimoff_core::proto;
    use wasimoff_core::tls::{client_config_from_pem, crypto_provider};
    use wasimoff_core::transport::{ConnectError, WebSocketTransport};

    /// A self-signed certificate for localhost and 127.0.0.1: (certificate PEM, server config).
    fn self_signed() -> (String, Arc<ServerConfig>) {
        let key =
            rcgen::generate_simple_self_signed(["localhost".into(), "127.0.0.1".into()]).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
        let config = ServerConfig::builder_with_provider(crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![key.cert.der().clone()], der)
            .unwrap();
        (key.cert.pem(), Arc::new(config))
    }

    /// Serves probes over wss:// on 127.0.0.1 for every connection; returns the URL.
    async fn serve_wss(config: Arc<ServerConfig>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("wss://{}/api/provider/ws", listener.local_addr().unwrap());
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust us aborts the handshake.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    #[allow(clippy::result_large_err)]
                    let callback = |_: &Request, mut resp: Response| {
                        resp.headers_mut().insert(
                            "sec-websocket-protocol",
                            HeaderValue::from_static(Codec::Protobuf.subprotocol()),
                        );
                        Ok(resp)
                    };
                    let ws = tokio_tungstenite::accept_hdr_async(tls, callback)
                        .await
                        .unwrap();
                    let (_m, mut incoming) = Messenger::spawn(
                        WebSocketTransport::new(ws, Codec::Protobuf),
                        MessengerConfig::default(),
                    );
                    while let Some(IncomingMessage::Request(r)) = incoming.next().await {
                        let answer = proto::filesystem::probe::Response { ok: Some(true) };
                        let _ = r.respond(Ok(answer.into())).await;
                    }
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn wss_works_with_the_brokers_ca_and_fails_without() {
        let (pem, server) = self_signed();
        let url = serve_wss(server).await;

        let trusted = client_config_from_pem(Some(pem.as_bytes())).unwrap();
        let transport = WebSocketTransport::connect_with_tls(&url, &[], 1 << 20, trusted)
            .await
            .unwrap();
        let (m, _incoming) = Messenger::spawn(transport, MessengerConfig::default());
        let probe = proto::filesystem::probe::Request {
            file: Some("sha256:00".into()),
        };
        assert!(matches!(
            m.call(probe).await.unwrap(),
            Payload::ProbeResponse(_)
        ));

        // The webpki roots alone do not know a self-signed certificate.
        let err = WebSocketTransport::connect(&url, &[], 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(&err, ConnectError::Tls(_)), "{err:?}");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    /// wss:// to a port that speaks plain HTTP (what an http:// broker answers a ClientHello).
    #[tokio::test]
    async fn wss_to_a_plain_server_is_a_tls_error() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("wss://{}/api/provider/ws", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; 512];
            let _ = tcp.read(&mut hello).await;
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let err = WebSocketTransport::connect(&url, &[], 1 << 20)
            .await
            .unwrap_err();
        assert!(matches!(&err, ConnectError::Tls(_)), "{err:?}");
    }
}

/// Without the `rustls` feature wss:// fails at once, saying why.
#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn wss_without_tls_support_says_so() {
    let err = WebSocketTransport::connect("wss://127.0.0.1:9/api/provider/ws", &[], 1 << 20)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::TlsUnsupported), "{err:?}");
}

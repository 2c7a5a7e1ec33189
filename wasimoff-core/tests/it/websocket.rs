//! The native WebSocket transport against a real server on 127.0.0.1:0: subprotocol
//! negotiation, a call over each codec, and the frame size limit.
#![cfg(feature = "native")]

use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
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

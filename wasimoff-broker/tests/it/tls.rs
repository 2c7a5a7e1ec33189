//! The broker's own TLS (`BrokerConfig::tls`): https:// with a self-signed certificate, a
//! stalled handshake dropped after its timeout (in paused time) without holding up anyone
//! else and evicted at the connection cap, plain HTTP on the TLS port told to use https://,
//! and unusable certificates refused when the broker is built.

use std::time::Duration;

use tokio::{io::AsyncReadExt, net::TcpStream, time::Instant};
use wasimoff_broker::{Broker, BrokerConfig, BrokerError, BrokerHandle, Limits, TlsConfig};

/// A certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let key = rcgen::generate_simple_self_signed(["127.0.0.1".into(), "localhost".into()]).unwrap();
    (key.cert.pem(), key.signing_key.serialize_pem())
}

async fn tls_broker(cert: &str, key: &str, limits: Limits) -> BrokerHandle {
    let config = BrokerConfig {
        limits,
        tls: Some(TlsConfig::pem(cert, key)),
        ..super::support::config()
    };
    super::support::broker(config).await
}

fn https_client(cert: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_is_dropped_after_its_timeout_and_blocks_nobody() {
    let (cert, key) = self_signed();
    let timeout = Duration::from_secs(7);
    let limits = Limits {
        tls_handshake_timeout: timeout,
        ..super::support::config().limits
    };
    let broker = tls_broker(&cert, &key, limits).await;
    assert!(broker.url().starts_with("https://"), "{}", broker.url());

    // Connects and never says a word.
    let start = Instant::now();
    let mut stalled = TcpStream::connect(broker.local_addr()).await.unwrap();

    // Meanwhile others are served over TLS.
    let health = https_client(&cert)
        .get(format!("{}/healthz", broker.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(start.elapsed() < timeout, "{:?}", start.elapsed());

    // The broker closes the stalled one when (and not before) its handshake time is up.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(timeout * 4, stalled.read(&mut buf))
        .await
        .expect("the stalled connection is still open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let waited = start.elapsed();
    assert!(
        waited >= timeout && waited < timeout * 2,
        "closed after {waited:?}"
    );
    broker.shutdown().await;
}

/// At the connection cap a connection still in its handshake is idle: a newcomer evicts it.
#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_is_evicted_at_the_cap() {
    let (cert, key) = self_signed();
    let timeout = Duration::from_secs(7);
    let limits = Limits {
        tls_handshake_timeout: timeout,
        max_connections: 1,
        ..super::support::config().limits
    };
    let broker = tls_broker(&cert, &key, limits).await;
    let start = Instant::now();
    let mut stalled = TcpStream::connect(broker.local_addr()).await.unwrap();
    let health = https_client(&cert)
        .get(format!("{}/healthz", broker.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(timeout / 2, stalled.read(&mut buf))
        .await
        .expect("the stalled connection was not evicted");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(start.elapsed() < timeout, "{:?}", start.elapsed());
    broker.shutdown().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_told_to_use_https() {
    let (cert, key) = self_signed();
    let broker = tls_broker(&cert, &key, super::support::config().limits).await;
    let answer = reqwest::get(format!("http://{}/healthz", broker.local_addr()))
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let text = answer.text().await.unwrap();
    assert!(text.contains("use https://"), "{text}");
    // And https:// works on the same port.
    let health = https_client(&cert)
        .get(format!("{}/api/version", broker.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    broker.shutdown().await;
}

#[tokio::test]
async fn unusable_certificates_stop_the_broker_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = self_signed();
    let (_, other_key) = self_signed();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert).unwrap();
    std::fs::write(&key_file, &other_key).unwrap();
    let build = |tls: TlsConfig| async move {
        let config = BrokerConfig {
            tls: Some(tls),
            ..super::support::config()
        };
        Broker::builder().config(config).build().await
    };
    let missing = build(TlsConfig::files(dir.path().join("nope.pem"), &key_file))
        .await
        .unwrap_err();
    assert!(matches!(missing, BrokerError::Tls(_)), "{missing}");
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    let mismatch = build(TlsConfig::files(&cert_file, &key_file))
        .await
        .unwrap_err();
    assert!(
        mismatch.to_string().contains("cannot be used together"),
        "{mismatch}"
    );
}

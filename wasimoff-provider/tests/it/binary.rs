//! The `wasimoff-provider` binary against a fake broker that refuses every WebSocket upgrade
//! with one HTTP status: a status retrying cannot fix ends the provider at once with exit code
//! 78 and a message naming the flag to check; it connects exactly once.
#![cfg(feature = "cli")]

use std::{
    io::{Read, Write},
    net::TcpListener,
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

/// Answers every request with `status` and a Connect-style JSON body; counts connections.
fn refusing_broker(status: &'static str, message: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = format!(r#"{{"code":"x","message":"{message}"}}"#);
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (url, connections)
}

/// Runs the provider binary until it exits (killed and failed after a minute).
fn provider(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_wasimoff-provider"))
        .args(args)
        .args(["--workers", "1", "--log-format", "text"])
        .env_remove("WASIMOFF_TOKEN")
        .env_remove("WASIMOFF_CA_CERT")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("the provider kept running: it retried what it should have given up on");
        }
    }
}

#[test]
fn a_refused_token_ends_the_provider_with_advice() {
    let (url, connections) = refusing_broker("401 Unauthorized", "missing or wrong token");
    let out = provider(&["--broker", &url, "--token", "wrong"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(stderr.contains("missing or wrong token"), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(stderr.contains("not retrying"), "{stderr}");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "{stderr}");
}

#[test]
fn no_provider_socket_at_the_url_ends_the_provider_with_advice() {
    let (url, connections) = refusing_broker("404 Not Found", "no route");
    let out = provider(&["--broker", &format!("{url}/wrong/prefix")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert!(stderr.contains("/wrong/prefix/api/provider/ws"), "{stderr}");
    assert!(stderr.contains("--broker"), "{stderr}");
    assert_eq!(connections.load(Ordering::SeqCst), 1, "{stderr}");
}

#[test]
fn an_unreadable_ca_certificate_is_a_configuration_error() {
    let missing = std::env::temp_dir().join("wasimoff-no-such-ca.pem");
    let out = provider(&[
        "--broker",
        "https://127.0.0.1:9",
        "--ca-cert",
        missing.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("--ca-cert"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("ca.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let out = provider(&[
        "--broker",
        "https://127.0.0.1:9",
        "--ca-cert",
        garbage.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("no certificate found"), "{stderr}");
}

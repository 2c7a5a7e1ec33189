//! The static files at `/` (the volunteer page): precompressed `.br`/`.gz` siblings, compression
//! on the fly for files without one, content types, `Vary`, the isolation headers; the API
//! routes are never compressed. With the feature `embedded-page`: the page built into the
//! binary, served when no static directory is given.

use std::io::{Read, Write};

use futures::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

use crate::support::*;

/// A response's status, headers and body bytes.
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or_default())
    }

    fn encoding(&self) -> &str {
        self.header("content-encoding")
    }

    /// The body decoded according to its `Content-Encoding`.
    fn decoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.encoding() {
            "" => out.clone_from(&self.body),
            "br" => {
                brotli::Decompressor::new(self.body.as_slice(), 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "gzip" => {
                flate2::read::GzDecoder::new(self.body.as_slice())
                    .read_to_end(&mut out)
                    .unwrap();
            }
            other => panic!("unexpected content-encoding {other:?}"),
        }
        out
    }
}

/// GET `url` (redirects not followed), with `Accept-Encoding` if given (reqwest sends none of
/// its own: it is built without its decompression features).
async fn get(url: &str, accept_encoding: Option<&str>) -> Got {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(accept) = accept_encoding {
        request = request.header("accept-encoding", accept);
    }
    let response = request.send().await.unwrap();
    Got {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

fn brotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
        writer.write_all(bytes).unwrap();
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut writer = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    writer.write_all(bytes).unwrap();
    writer.finish().unwrap()
}

/// A module-like file that compresses well: the wasm magic and 64 KiB of text.
fn module_bytes() -> Vec<u8> {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    while bytes.len() < 64 << 10 {
        bytes.extend_from_slice(format!("function {} of the page; ", bytes.len()).as_bytes());
    }
    bytes
}

const APP_JS: &str = "// the page's script, without precompressed siblings\n";

/// A page: `index.html`, `app.js` (no siblings) and `pkg/module.wasm` with `.br` and `.gz`
/// siblings.
fn page_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>a test page</title><script type=\"module\" src=\"app.js\"></script>\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("app.js"), APP_JS.repeat(64)).unwrap();
    let pkg = dir.path().join("pkg");
    std::fs::create_dir(&pkg).unwrap();
    let module = module_bytes();
    std::fs::write(pkg.join("module.wasm.br"), brotli(&module)).unwrap();
    std::fs::write(pkg.join("module.wasm.gz"), gzip(&module)).unwrap();
    std::fs::write(pkg.join("module.wasm"), module).unwrap();
    dir
}

/// The headers every static file carries: the isolation headers, and `Vary: Accept-Encoding`
/// whatever the encoding (a cache must not hand a brotli body to a client without brotli).
fn assert_page_headers(got: &Got) {
    assert_eq!(got.status, 200);
    assert_eq!(got.header("cross-origin-opener-policy"), "same-origin");
    assert_eq!(got.header("cross-origin-embedder-policy"), "require-corp");
    let vary: Vec<&str> = got
        .headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        vary.iter()
            .any(|v| v.to_ascii_lowercase().contains("accept-encoding")),
        "vary: {vary:?}"
    );
}

#[tokio::test]
async fn static_files_are_sent_precompressed_or_compressed_on_the_fly() {
    let page = page_dir();
    let broker = broker(wasimoff_broker::BrokerConfig {
        static_dir: Some(page.path().to_path_buf()),
        ..config()
    })
    .await;
    let base = http(&broker);
    let module = module_bytes();
    let url = format!("{base}/pkg/module.wasm");

    // A client that takes brotli gets the `.br` sibling as it is on disk.
    let br = get(&url, Some("gzip, deflate, br, zstd")).await;
    assert_page_headers(&br);
    assert_eq!(br.header("content-type"), "application/wasm");
    assert_eq!(br.encoding(), "br");
    let sibling = std::fs::read(page.path().join("pkg/module.wasm.br")).unwrap();
    assert_eq!(
        br.body, sibling,
        "the precompressed file, not a new compression"
    );
    assert_eq!(br.decoded(), module);

    // gzip only, or gzip preferred: the `.gz` sibling.
    for accept in ["gzip", "br;q=0.5, gzip;q=1.0"] {
        let gz = get(&url, Some(accept)).await;
        assert_page_headers(&gz);
        assert_eq!(gz.encoding(), "gzip", "{accept}");
        assert_eq!(
            gz.body,
            std::fs::read(page.path().join("pkg/module.wasm.gz")).unwrap()
        );
        assert_eq!(gz.decoded(), module);
    }

    // A cache that holds the brotli copy revalidates it.
    let etag = br.header("etag").to_owned();
    assert!(!etag.is_empty());
    let client = reqwest::Client::new();
    let cached = client
        .get(&url)
        .header("accept-encoding", "br")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);

    // No Accept-Encoding, or only identity: the file itself.
    for accept in [None, Some("identity")] {
        let plain = get(&url, accept).await;
        assert_page_headers(&plain);
        assert_eq!(plain.header("content-type"), "application/wasm");
        assert_eq!(plain.encoding(), "", "{accept:?}");
        assert_eq!(plain.header("content-length"), module.len().to_string());
        assert_eq!(plain.body, module);
    }

    // A file without siblings is compressed on the fly.
    let app = APP_JS.repeat(64).into_bytes();
    let js = get(&format!("{base}/app.js"), Some("br")).await;
    assert_page_headers(&js);
    assert_eq!(js.header("content-type"), "text/javascript");
    assert_eq!(js.encoding(), "br");
    assert!(js.body.len() < app.len() / 4, "{} bytes", js.body.len());
    assert_eq!(js.decoded(), app);
    let js = get(&format!("{base}/app.js"), Some("gzip")).await;
    assert_eq!((js.encoding(), js.decoded()), ("gzip", app.clone()));
    let js = get(&format!("{base}/app.js"), None).await;
    assert_eq!((js.encoding(), &js.body), ("", &app));

    // `/` is index.html.
    let index = get(&format!("{base}/"), Some("br")).await;
    assert_page_headers(&index);
    assert!(index.header("content-type").starts_with("text/html"));
    assert!(
        String::from_utf8(index.decoded())
            .unwrap()
            .contains("a test page")
    );

    assert_eq!(
        get(&format!("{base}/missing.js"), Some("br")).await.status,
        404
    );
    broker.shutdown().await;
}

/// Connect answers, sockets, downloads, `/healthz` and `/metrics` go out as they are, even to
/// clients that accept compression, while the static files next to them are compressed.
#[tokio::test]
async fn api_responses_are_never_compressed() {
    let page = page_dir();
    let broker = broker(wasimoff_broker::BrokerConfig {
        static_dir: Some(page.path().to_path_buf()),
        ..config()
    })
    .await;
    let base = http(&broker);
    let _p = provider(&base, "p1", 2, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 2).await;
    let module_ref = upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    const ACCEPT: &str = "gzip, deflate, br, zstd";

    let health = get(&format!("{base}/healthz"), Some(ACCEPT)).await;
    assert_eq!((health.status, health.encoding()), (200, ""));
    assert_eq!(health.body, b"OK\n");
    let version = get(&format!("{base}/api/version"), Some(ACCEPT)).await;
    assert_eq!((version.status, version.encoding()), (200, ""));
    let version: serde_json::Value = serde_json::from_slice(&version.body).unwrap();
    assert_eq!(version["protocol"], "wasimoff.v1");
    let metrics = get(&format!("{base}/metrics"), Some(ACCEPT)).await;
    assert_eq!((metrics.status, metrics.encoding()), (200, ""));
    assert!(
        String::from_utf8(metrics.body)
            .unwrap()
            .contains("wasimoff_providers 1")
    );
    let download = get(&format!("{base}/api/storage/{module_ref}"), Some(ACCEPT)).await;
    assert_eq!((download.status, download.encoding()), (200, ""));
    assert_eq!(download.body, EMPTY_WASM);

    // Connect unary, JSON codec.
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/wasimoff.v1.Tasks/RunWasip1"))
        .header("content-type", "application/json")
        .header("accept-encoding", ACCEPT)
        .body(r#"{"params":{"binary":{"ref":"empty.wasm"},"args":["e","plain"]}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-encoding").is_none());
    let answer: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["ok"]["stdout"], "cGxhaW4=", "{answer}"); // "plain"

    // The client socket, opened by a client that accepts compression.
    let mut request = format!("ws://{}/api/client/ws", broker.local_addr())
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("accept-encoding", ACCEPT.parse().unwrap());
    headers.insert(
        "sec-websocket-protocol",
        "wasimoff_provider_v1_json".parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert!(response.headers().get("content-encoding").is_none());
    let frame = r#"{"sequence":"1","type":"Request","payload":{"params":{"binary":{"ref":"empty.wasm"},"args":["e","socket"]},"@type":"wasimoff/wasimoff.v1.Task.Wasip1.Request"}}"#;
    socket.send(Message::Text(frame.into())).await.unwrap();
    let Some(Ok(Message::Text(answer))) = socket.next().await else {
        panic!("no answer")
    };
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["payload"]["ok"]["stdout"], "c29ja2V0", "{answer}"); // "socket"

    // Meanwhile the page is compressed.
    let index = get(&format!("{base}/"), Some(ACCEPT)).await;
    assert_eq!(index.encoding(), "br");
    broker.shutdown().await;
}

/// The page built into the binary (feature `embedded-page`) is served at `/` when no static
/// directory is given, precompressed like one; a static directory still wins.
#[cfg(feature = "embedded-page")]
#[tokio::test]
async fn embedded_page_is_served_without_a_static_dir() {
    // build.rs checked this directory and embedded what it holds.
    let dir = std::path::Path::new(env!("WASIMOFF_EMBEDDED_PAGE"));
    let embedded = broker(config()).await;
    let base = http(&embedded);

    let index = get(&format!("{base}/"), None).await;
    assert_page_headers(&index);
    assert!(index.header("content-type").starts_with("text/html"));
    assert_eq!(index.body, std::fs::read(dir.join("index.html")).unwrap());
    assert!(String::from_utf8_lossy(&index.body).contains("app.js"));

    let url = format!("{base}/pkg/wasimoff_bg.wasm");
    let module = std::fs::read(dir.join("pkg/wasimoff_bg.wasm")).unwrap();
    let plain = get(&url, None).await;
    assert_page_headers(&plain);
    assert_eq!(plain.header("content-type"), "application/wasm");
    assert_eq!(plain.encoding(), "");
    assert!(plain.body == module, "the embedded module is the built one");
    let etag = plain.header("etag");
    assert!(!etag.is_empty());
    let cached = reqwest::Client::new()
        .get(&url)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304, "revalidated by its ETag");
    for (accept, encoding, sibling) in [("br, gzip", "br", "br"), ("gzip", "gzip", "gz")] {
        let got = get(&url, Some(accept)).await;
        assert_page_headers(&got);
        assert_eq!(got.header("content-type"), "application/wasm");
        assert_eq!(got.encoding(), encoding);
        assert!(got.decoded() == module, "{encoding} decodes to the module");
        // `cargo xtask web` writes the siblings: they are sent as they are.
        let sibling = dir.join(format!("pkg/wasimoff_bg.wasm.{sibling}"));
        assert!(
            got.body == std::fs::read(&sibling).unwrap(),
            "{} is sent",
            sibling.display()
        );
    }
    let js = get(&format!("{base}/pkg/wasimoff.js"), Some("br")).await;
    assert_eq!(js.header("content-type"), "text/javascript");
    assert!(js.decoded() == std::fs::read(dir.join("pkg/wasimoff.js")).unwrap());
    assert_eq!(get(&format!("{base}/pkg"), None).await.status, 307);
    assert_eq!(get(&format!("{base}/missing.js"), None).await.status, 404);
    assert_eq!(get(&format!("{base}/pkg/"), None).await.status, 404);
    assert_eq!(
        get(&format!("{base}/%2e%2e/Cargo.toml"), None).await.status,
        404
    );
    assert_eq!(get(&format!("{base}/healthz"), None).await.body, b"OK\n");
    embedded.shutdown().await;

    // With a static directory, that directory is the page.
    let page = page_dir();
    let broker = broker(wasimoff_broker::BrokerConfig {
        static_dir: Some(page.path().to_path_buf()),
        ..config()
    })
    .await;
    let index = get(&format!("{}/", http(&broker)), None).await;
    assert!(
        String::from_utf8(index.body)
            .unwrap()
            .contains("a test page")
    );
    broker.shutdown().await;
}

//! The store's lifecycle through the broker: exec outputs expire and stay bounded, tasks in
//! flight pin their files. Every test ends with a healthy task.

use std::{sync::Arc, time::Duration};

use prost::Message as _;
use wasimoff_broker::{Broker, BrokerConfig, BrokerHandle};
use wasimoff_core::proto::task;
use wasimoff_core::store::{ManualClock, MemoryStore, Ref, Store, StoreLimits};

use crate::support::*;

/// A valid module of at least `len` bytes, distinct per `tag`: the empty module plus a custom
/// section named `tag`, padded.
fn module(tag: &str, len: usize) -> Vec<u8> {
    let mut payload = vec![u8::try_from(tag.len()).unwrap()];
    payload.extend(tag.as_bytes());
    // Header (8) + section id (1) + size (1, below 128) + payload.
    payload.resize(payload.len().max(len.saturating_sub(10)), 0);
    assert!(payload.len() < 128, "keep modules small");
    let mut bytes = EMPTY_WASM.to_vec();
    bytes.push(0);
    bytes.push(u8::try_from(payload.len()).unwrap());
    bytes.extend(payload);
    bytes
}

async fn broker_with_store(config: BrokerConfig, store: Arc<dyn Store>) -> BrokerHandle {
    Broker::builder()
        .config(config)
        .store(store)
        .build()
        .await
        .unwrap()
        .spawn()
        .await
        .unwrap()
}

fn with_token(builder: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => builder.bearer_auth(token),
        None => builder,
    }
}

/// `POST /api/storage/upload[?name=]` as `token`: (status, body).
async fn upload_as(
    base: &str,
    token: Option<&str>,
    bytes: Vec<u8>,
    name: Option<&str>,
) -> (u16, String) {
    let url = match name {
        Some(n) => format!("{base}/api/storage/upload?name={n}"),
        None => format!("{base}/api/storage/upload"),
    };
    let response = with_token(reqwest::Client::new().post(url), token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `GET /api/storage/{name}` as `token`: (status, body bytes).
async fn download_as(base: &str, token: Option<&str>, name: &str) -> (u16, Vec<u8>) {
    let response = with_token(
        reqwest::Client::new().get(format!("{base}/api/storage/{name}")),
        token,
    )
    .send()
    .await
    .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// `POST /api/client/run/{wasm}`: (status, stderr ref header).
async fn exec(base: &str, wasm: &str, arg: &str) -> (u16, Option<String>) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/run/{wasm}"))
        .header("x-args", arg)
        .send()
        .await
        .unwrap();
    let stderr = response
        .headers()
        .get("x-wasimoff-stderr")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status().as_u16(), stderr)
}

/// A task over Connect as `token` that must succeed with `hello <word>`.
async fn healthy_task(base: &str, token: Option<&str>, binary: &str, word: &str) {
    let request = wasip1(binary, &["x", "hello", word]);
    let response = with_token(
        reqwest::Client::new().post(format!("{base}/api/client/wasimoff.v1.Tasks/RunWasip1")),
        token,
    )
    .header("content-type", "application/proto")
    .body(request.encode_to_vec())
    .send()
    .await
    .unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response = task::wasip1::Response::decode(body).unwrap();
    assert_eq!(stdout(&response), format!("hello {word}"));
}

/// The bytes of every blob in the store.
async fn stored_bytes(store: &dyn Store) -> u64 {
    let mut total = 0;
    for r in store.list().await.unwrap() {
        total += store.get(r.as_str()).await.unwrap().unwrap().bytes.len() as u64;
    }
    total
}

#[tokio::test]
async fn exec_outputs_expire_after_their_ttl() {
    let time = ManualClock::new(1_000_000);
    let store = Arc::new(MemoryStore::with_clock(
        StoreLimits::default(),
        time.clock(),
    ));
    let mut cfg = config();
    cfg.limits.output_ttl = Duration::from_secs(600);
    let broker = broker_with_store(cfg, store.clone()).await;
    let base = http(&broker);
    let _p = provider(&base, "p1", 2, Behaviour::EchoStderr(100)).await;
    let hello = upload(&base, EMPTY_WASM, Some("hello.wasm")).await;

    let mut refs = Vec::new();
    for i in 0..20 {
        let (status, stderr) = exec(&base, "hello.wasm", &format!("call{i}")).await;
        assert_eq!(status, 200);
        refs.push(stderr.expect("a stderr ref"));
    }
    let (status, body) = download_as(&base, None, &refs[0]).await;
    assert_eq!(status, 200, "outputs are downloadable within their ttl");
    assert!(String::from_utf8_lossy(&body).starts_with("stderr of task"));
    assert_eq!(store.list().await.unwrap().len(), 21);

    time.advance(Duration::from_secs(600));
    for r in &refs {
        assert_eq!(download_as(&base, None, r).await.0, 404, "expired");
    }
    assert_eq!(
        store.list().await.unwrap(),
        vec![hello.parse::<Ref>().unwrap()]
    );
    // The next output's put reclaims the space of the expired ones.
    let (status, stderr) = exec(&base, "hello.wasm", "again").await;
    assert_eq!(status, 200);
    assert_eq!(store.list().await.unwrap().len(), 2);
    assert_eq!(stored_bytes(store.as_ref()).await, 8 + 100);
    assert!(stderr.is_some());
    healthy_task(&base, None, "hello.wasm", "after").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn exec_outputs_stay_within_the_store_limit() {
    let mut cfg = config();
    cfg.limits.max_store = Some(2_000);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let store = broker.broker().store();
    let _p = provider(&base, "p1", 2, Behaviour::EchoStderr(500)).await;
    upload(&base, EMPTY_WASM, Some("hello.wasm")).await;
    let mut last = None;
    for i in 0..20 {
        let (status, stderr) = exec(&base, "hello.wasm", &format!("call{i}")).await;
        assert_eq!(status, 200);
        last = stderr;
        let used = stored_bytes(store.as_ref()).await;
        assert!(used <= 2_000, "{used} bytes stored after {i} calls");
    }
    assert_eq!(download_as(&base, None, &last.unwrap()).await.0, 200);
    assert_eq!(
        download_as(&base, None, "hello.wasm").await,
        (200, EMPTY_WASM.to_vec()),
        "the aliased module is never evicted"
    );
    healthy_task(&base, None, "hello.wasm", "after").await;
    broker.shutdown().await;
}

/// A queued task's module, stored without an alias, survives uploads that need its space;
/// once the task is answered it may go.
#[tokio::test]
async fn files_of_tasks_in_flight_are_not_evicted() {
    let mut cfg = config();
    cfg.limits.max_store = Some(100);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let (status, needed) = upload_as(&base, None, module("needed", 40), None).await;
    assert_eq!(status, 200);
    let task = {
        let base = base.clone();
        let needed = needed.clone();
        tokio::spawn(async move {
            let (status, response) = run_proto(&base, &wasip1(&needed, &["x", "pinned"])).await;
            (status, response.map(|r| stdout(&r)))
        })
    };
    wait_for_queued(&base, 1).await;
    for i in 0..4 {
        let (status, _) = upload_as(&base, None, module(&format!("filler{i}"), 40), None).await;
        assert_eq!(
            status, 200,
            "fillers evict each other, not the pinned module"
        );
        assert_eq!(download_as(&base, None, &needed).await.0, 200);
    }
    let (status, body) = upload_as(&base, None, module("big", 70), None).await;
    assert_eq!(status, 507, "only 60 bytes can be freed: {body}");
    assert!(
        body.contains("held by aliases or tasks in flight"),
        "{body}"
    );

    let _p = provider(&base, "p1", 1, Behaviour::Echo).await;
    let (status, out) = task.await.unwrap();
    assert_eq!((status, out.unwrap().as_str()), (200, "pinned"));
    // Answered: the module is unpinned and the least recently used blob.
    let (status, _) = upload_as(&base, None, module("big", 70), None).await;
    assert_eq!(status, 200);
    assert_eq!(download_as(&base, None, &needed).await.0, 404);
    upload(&base, EMPTY_WASM, Some("hello.wasm")).await;
    healthy_task(&base, None, "hello.wasm", "after").await;
    broker.shutdown().await;
}

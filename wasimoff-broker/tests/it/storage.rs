//! The store's lifecycle through the broker: exec outputs expire and stay bounded, tasks in
//! flight pin their files, aliases belong to the token that set them, per-token quotas, and
//! open mode as before. Every test ends with a healthy task.

use std::{sync::Arc, time::Duration};

use prost::Message as _;
use wasimoff_broker::{Broker, BrokerConfig, BrokerHandle};
use wasimoff_core::proto::{self, task};
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

/// `DELETE /api/storage/{alias}` as `token`: (status, body).
async fn remove_as(base: &str, token: Option<&str>, alias: &str) -> (u16, String) {
    let response = with_token(
        reqwest::Client::new().delete(format!("{base}/api/storage/{alias}")),
        token,
    )
    .send()
    .await
    .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
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

fn tokens(cfg: &mut BrokerConfig) {
    cfg.client_tokens = vec!["alice-token".into(), "bob-token".into()];
}

#[tokio::test]
async fn an_alias_belongs_to_the_token_that_set_it() {
    let mut cfg = config();
    tokens(&mut cfg);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let (alice, bob) = (Some("alice-token"), Some("bob-token"));
    let _p = provider(&base, "p1", 2, Behaviour::Echo).await;
    let alices = module("alice", 20);
    let (status, alice_ref) = upload_as(&base, alice, alices.clone(), Some("hello.wasm")).await;
    assert_eq!(status, 200);

    let (status, body) = upload_as(&base, bob, module("bob", 20), Some("hello.wasm")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("belongs to another client token"), "{body}");
    assert_eq!(
        download_as(&base, bob, "hello.wasm").await,
        (200, alices.clone()),
        "the alias still names alice's module, for everyone"
    );
    // Over Connect the same, with Connect's code.
    let request = proto::filesystem::upload::Request {
        upload: Some(proto::File {
            r#ref: Some("hello.wasm".into()),
            media: None,
            blob: Some(module("bob", 20).into()),
        }),
    };
    let response = reqwest::Client::new()
        .post(format!("{base}/api/client/wasimoff.v1.Tasks/Upload"))
        .bearer_auth("bob-token")
        .header("content-type", "application/proto")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let error: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(error["code"], "permission_denied");
    assert_eq!(remove_as(&base, bob, "hello.wasm").await.0, 403);

    // Alice may re-point and remove it; then the name is free.
    let (status, _) = upload_as(&base, alice, module("alice v2", 20), Some("hello.wasm")).await;
    assert_eq!(status, 200);
    assert_eq!(remove_as(&base, alice, "hello.wasm").await.0, 204);
    assert_eq!(remove_as(&base, alice, "hello.wasm").await.0, 404);
    assert_eq!(
        remove_as(&base, alice, &alice_ref).await.0,
        400,
        "not by ref"
    );
    let (status, _) = upload_as(&base, bob, EMPTY_WASM.to_vec(), Some("hello.wasm")).await;
    assert_eq!(status, 200, "bob takes the free name");
    healthy_task(&base, alice, "hello.wasm", "alice").await;
    healthy_task(&base, bob, "hello.wasm", "bob").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_token_over_its_quota_gets_a_clear_error() {
    let mut cfg = config();
    tokens(&mut cfg);
    cfg.limits.client_quota = Some(100);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let (alice, bob) = (Some("alice-token"), Some("bob-token"));
    let _p = provider(&base, "p1", 2, Behaviour::Echo).await;
    let (status, _) = upload_as(&base, alice, module("one", 60), Some("one.wasm")).await;
    assert_eq!(status, 200);
    let (status, _) = upload_as(&base, alice, module("one", 60), Some("same.wasm")).await;
    assert_eq!(status, 200, "a second alias of the same blob costs nothing");
    let two = module("two", 60);
    let (status, body) = upload_as(&base, alice, two.clone(), Some("two.wasm")).await;
    assert_eq!(status, 507, "{body}");
    assert!(
        body.contains("quota of 100 bytes") && body.contains("client_quota"),
        "the message names the limit: {body}"
    );
    assert_eq!(download_as(&base, alice, "two.wasm").await.0, 404);
    // Uploads without an alias hold nothing, and other tokens have their own quota.
    let (status, _) = upload_as(&base, alice, two.clone(), None).await;
    assert_eq!(status, 200);
    let (status, _) = upload_as(&base, bob, two.clone(), Some("bobs.wasm")).await;
    assert_eq!(status, 200);
    // Removing aliases frees the quota.
    assert_eq!(remove_as(&base, alice, "one.wasm").await.0, 204);
    assert_eq!(remove_as(&base, alice, "same.wasm").await.0, 204);
    let (status, body) = upload_as(&base, alice, two, Some("two.wasm")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = upload_as(&base, alice, EMPTY_WASM.to_vec(), Some("hello.wasm")).await;
    assert_eq!(status, 200);
    healthy_task(&base, alice, "hello.wasm", "alice").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn open_mode_lets_anyone_re_point_an_alias_without_quota() {
    let mut cfg = config();
    cfg.limits.client_quota = Some(10);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let _p = provider(&base, "p1", 2, Behaviour::Echo).await;
    let first = module("first", 40);
    let second = module("second", 40);
    let (status, _) = upload_as(&base, None, first, Some("app.wasm")).await;
    assert_eq!(status, 200, "no quota without tokens");
    let (status, second_ref) = upload_as(&base, None, second.clone(), Some("app.wasm")).await;
    assert_eq!(status, 200);
    assert_eq!(second_ref, Ref::of(&second).to_string());
    assert_eq!(download_as(&base, None, "app.wasm").await, (200, second));
    assert_eq!(remove_as(&base, None, "app.wasm").await.0, 204);
    upload(&base, EMPTY_WASM, Some("hello.wasm")).await;
    healthy_task(&base, None, "hello.wasm", "open").await;
    broker.shutdown().await;
}

/// Ownership is kept in the store: a broker restarted on the same directory still refuses
/// another token.
#[tokio::test]
async fn alias_owners_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("wasimoff-it-owners-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = config();
    tokens(&mut cfg);
    cfg.store = wasimoff_broker::StoreConfig::Dir(dir.clone());
    let broker = broker(cfg.clone()).await;
    let base = http(&broker);
    let (status, _) = upload_as(
        &base,
        Some("alice-token"),
        EMPTY_WASM.to_vec(),
        Some("hello.wasm"),
    )
    .await;
    assert_eq!(status, 200);
    broker.shutdown().await;

    let broker = crate::support::broker(cfg).await;
    let base = http(&broker);
    let _p = provider(&base, "p1", 1, Behaviour::Echo).await;
    let (status, body) = upload_as(
        &base,
        Some("bob-token"),
        module("bob", 20),
        Some("hello.wasm"),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let on_disk = std::fs::read_to_string(dir.join("aliases/hello.wasm")).unwrap();
    assert!(
        !on_disk.contains("alice-token"),
        "tokens are not written to disk: {on_disk}"
    );
    healthy_task(&base, Some("bob-token"), "hello.wasm", "restarted").await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

//! Tasks submitted by id survive a restart of the broker on the same data directory: results
//! recorded before it are still fetched, accepted tasks run after it, and the wait route tells
//! finished, pending and unknown ids apart.

use std::time::Duration;

use serde_json::{Value, json};
use wasimoff_broker::{BrokerConfig, StoreConfig, TaskStateConfig};
use wasimoff_core::proto::task;
use wasimoff_core::transport::CloseReason;

use crate::support::{
    Behaviour, EMPTY_WASM, broker, config, http, provider, upload, wait_for_queued,
};

fn durable(dir: &std::path::Path) -> BrokerConfig {
    BrokerConfig {
        store: StoreConfig::Dir(dir.to_owned()),
        ..config()
    }
}

/// POSTs `body` to `path`: the status and the answer as JSON (`Null` if it is not JSON).
async fn post(base: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    answer(response).await
}

/// GETs `path`, as [`post`].
async fn get(base: &str, path: &str) -> (u16, Value) {
    answer(reqwest::get(format!("{base}{path}")).await.unwrap()).await
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn submit(base: &str, arg: &str) -> String {
    let task = json!({"params": {"binary": {"ref": "empty.wasm"}, "args": ["empty.wasm", arg]}});
    let (status, body) = post(
        base,
        "/api/client/tasks",
        "application/json",
        task.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// `(status, body)` of a fetch that waits up to `wait` seconds (as given: any text).
async fn fetch(base: &str, id: &str, wait: impl std::fmt::Display) -> (u16, Value) {
    get(base, &format!("/api/client/tasks/{id}?wait={wait}")).await
}

/// The stdout of a fetched result (proto3 JSON).
fn stdout(body: &Value) -> String {
    let response: task::wasip1::Response = serde_json::from_value(body.clone()).unwrap();
    crate::support::stdout(&response)
}

async fn wait_ids(base: &str, body: &str) -> (u16, Value) {
    let body = body.as_bytes().to_vec();
    post(base, "/api/client/tasks/wait", "application/json", body).await
}

#[tokio::test]
async fn tasks_by_id_and_their_results_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let first = broker(durable(dir.path())).await;
    let base = http(&first);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;

    // One task finishes before the restart ...
    let echo = provider(&base, "echo", 1, Behaviour::Echo).await;
    let done = submit(&base, "before").await;
    let (status, body) = fetch(&base, &done, 30).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stdout(&body), "before");
    echo.messenger.close(CloseReason::normal("bye")).await;
    crate::support::wait_for_workers(&base, 0, 0).await;

    // ... two are accepted with no provider, and the broker stops.
    let waiting = [
        submit(&base, "after-1").await,
        submit(&base, "after-2").await,
    ];
    wait_for_queued(&base, 2).await;
    let (status, body) = wait_ids(&base, &json!({"ids": waiting, "wait": 0}).to_string()).await;
    assert_eq!((status, &body), (200, &json!({"done": [], "unknown": []})));
    first.shutdown().await;
    assert!(dir.path().join("tasks.redb").is_file());

    // The next broker on the same directory resumes them.
    let second = broker(durable(dir.path())).await;
    let base = http(&second);
    let (status, body) = fetch(&base, &done, 0).await;
    assert_eq!(status, 200, "the result from before the restart: {body}");
    assert_eq!(stdout(&body), "before");
    wait_for_queued(&base, 2).await;
    let (status, _) = fetch(&base, &waiting[0], 0).await;
    assert_eq!(status, 202, "still pending");
    let ids = json!({"ids": [&done, &waiting[0], "nobody-1"], "wait": 5}).to_string();
    let (status, body) = wait_ids(&base, &ids).await;
    assert_eq!(status, 200);
    assert_eq!(body["done"], json!([&done]));
    assert_eq!(body["unknown"], json!(["nobody-1"]));
    assert!(body.get("results").is_none(), "only when asked: {body}");
    // With the results inline: the response a fetch would give.
    let ids = json!({"ids": [&done, &waiting[0]], "results": true}).to_string();
    let (status, body) = wait_ids(&base, &ids).await;
    assert_eq!(status, 200);
    assert_eq!(body["done"], json!([&done]));
    assert_eq!(body["results"][0]["id"], json!(&done));
    assert_eq!(stdout(&body["results"][0]["response"]), "before");

    let _echo = provider(&base, "echo-again", 2, Behaviour::Echo).await;
    for (id, arg) in waiting.iter().zip(["after-1", "after-2"]) {
        let (status, body) = fetch(&base, id, 30).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(stdout(&body), arg);
    }
    second.shutdown().await;

    // Memory only: the same directory, but nothing is journaled or resumed.
    let third = broker(BrokerConfig {
        tasks: TaskStateConfig::Memory,
        ..durable(dir.path())
    })
    .await;
    let (status, body) = fetch(&http(&third), &done, 0).await;
    assert_eq!(status, 404, "{body}");
    third.shutdown().await;
}

#[tokio::test]
async fn a_wait_needs_a_body_of_ids_within_bounds() {
    let handle = broker(config()).await;
    let base = http(&handle);
    let (status, body) = wait_ids(&base, "not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], "invalid_argument");
    assert!(body["message"].as_str().unwrap().contains("ids"), "{body}");
    let many: Vec<String> = (0..10_001).map(|i| format!("t-{i}")).collect();
    let (status, body) = wait_ids(&base, &json!({ "ids": many }).to_string()).await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("10000"),
        "{body}"
    );
    // Each id once, however often it is named.
    let (status, body) = wait_ids(&base, r#"{"ids": ["x", "x", "x"]}"#).await;
    assert_eq!((status, body), (200, json!({"done": [], "unknown": ["x"]})));
    // A wait that is not a number of seconds is no wait (and no panic).
    for wait in ["NaN", "inf", "-5"] {
        let (status, _) = fetch(&base, "nobody", wait).await;
        assert_eq!(status, 404, "?wait={wait}");
    }
    // An empty wait answers at once: the probe clients use for the route.
    let started = std::time::Instant::now();
    let (status, body) = wait_ids(&base, r#"{"ids": [], "wait": 30}"#).await;
    assert_eq!((status, body), (200, json!({"done": [], "unknown": []})));
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_batch_of_tasks_is_accepted_task_by_task() {
    use prost::Message as _;
    let handle = broker(config()).await;
    let base = http(&handle);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let batch = |content_type: &'static str, body: Vec<u8>| {
        post(&base, "/api/client/tasks/batch", content_type, body)
    };
    let mut body = Vec::new();
    for binary in ["empty.wasm", "missing.wasm", "empty.wasm"] {
        crate::support::wasip1(binary, &[binary, "x"])
            .encode_length_delimited(&mut body)
            .unwrap();
    }
    let (status, answer) = batch("application/proto", body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let submitted = answer["submitted"].as_array().unwrap();
    assert_eq!(submitted.len(), 3);
    assert!(submitted[0]["id"].is_string() && submitted[2]["id"].is_string());
    assert_ne!(submitted[0]["id"], submitted[2]["id"]);
    assert_eq!(submitted[1]["error"]["code"], "not_found", "{answer}");
    let ids = json!({"ids": [&submitted[0]["id"], &submitted[2]["id"]]}).to_string();
    let (status, found) = wait_ids(&base, &ids).await;
    assert_eq!((status, &found), (200, &json!({"done": [], "unknown": []})));
    // Refused as a whole: JSON, a cut message, a length past the end.
    let (status, _) = batch("application/json", b"[]".to_vec()).await;
    assert_eq!(status, 415);
    let (status, answer) = batch("application/proto", body[..body.len() - 3].to_vec()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("task 3"),
        "{answer}"
    );
    let (status, answer) = batch("application/proto", vec![0xff, 0xff, 0xff, 0xff, 0x0f]).await;
    assert_eq!(status, 400, "{answer}");
    // An empty batch is an empty answer.
    let (status, answer) = batch("application/proto", Vec::new()).await;
    assert_eq!((status, answer), (200, json!({"submitted": []})));
}

/// A broker whose tasks by id live in the JetStream of `nats`. The ack wait is longer than
/// any wait below: a task that moves between brokers here was handed back, not timed out.
fn clustered(nats: &wasimoff_wasi_apps::nats::NatsServer) -> BrokerConfig {
    BrokerConfig {
        tasks: TaskStateConfig::Nats(wasimoff_broker::NatsConfig {
            servers: vec![nats.url.clone()],
            ack_wait: Duration::from_secs(120),
            replicas: 1,
        }),
        limits: wasimoff_broker::Limits {
            provider_wait: Duration::from_secs(1),
            ..config().limits
        },
        ..config()
    }
}

/// The id of the next task that reaches `provider` (within 30 s).
async fn arrival(provider: &mut crate::support::FakeProvider) -> String {
    tokio::time::timeout(Duration::from_secs(30), provider.arrivals.recv())
        .await
        .expect("a task within 30 s")
        .expect("the provider is running")
}

#[tokio::test]
async fn brokers_on_jetstream_share_tasks_results_and_files() {
    let nats = wasimoff_wasi_apps::nats::NatsServer::start();
    let a = broker(clustered(&nats)).await;
    let b = broker(clustered(&nats)).await;
    let (base_a, base_b) = (http(&a), http(&b));

    // Uploaded at A, submitted at B by its ref: B fetches the file from the cluster.
    let module = upload(&base_a, EMPTY_WASM, None).await;
    let task = |arg: &str| {
        json!({"params": {"binary": {"ref": &module}, "args": ["empty.wasm", arg]}})
            .to_string()
            .into_bytes()
    };
    let (status, body) = post(&base_b, "/api/client/tasks", "application/json", task("x")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();

    // No provider anywhere: pending at both brokers (A learns it from the stream); ids the
    // cluster does not know, and ids that are not ids, are unknown.
    for base in [&base_a, &base_b] {
        let (status, body) = fetch(base, &id, 0).await;
        assert_eq!(status, 202, "{body}");
    }
    let ids = json!({"ids": [&id, "nobody-1", "wasimoff.tasks.>", "*"], "wait": 0}).to_string();
    let (status, body) = wait_ids(&base_a, &ids).await;
    assert_eq!(status, 200);
    assert_eq!(body["done"], json!([]));
    assert_eq!(
        body["unknown"],
        json!(["nobody-1", "wasimoff.tasks.>", "*"])
    );

    // A provider joins A: A takes the task submitted at B, and B answers it.
    let echo = provider(&base_a, "echo", 1, Behaviour::Echo).await;
    let (status, body) = fetch(&base_b, &id, 30).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stdout(&body), "x");
    assert_eq!(echo.seen.lock().await.tasks, [id.as_str()]);
    echo.messenger.close(CloseReason::normal("bye")).await;
    crate::support::wait_for_workers(&base_a, 0, 0).await;

    // A broker that joins later knows the result too.
    let c = broker(clustered(&nats)).await;
    let (status, body) = fetch(&http(&c), &id, 0).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stdout(&body), "x");

    // A deadline passes while no broker has a provider: answered deadline_exceeded anyway,
    // at the broker that accepted it and at another.
    let response = reqwest::Client::new()
        .post(format!("{base_a}/api/client/tasks"))
        .header("content-type", "application/json")
        .header("connect-timeout-ms", "500")
        .body(task("late"))
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(status, 202, "{body}");
    let late = body["id"].as_str().unwrap().to_owned();
    for base in [&base_a, &base_b] {
        let (status, body) = fetch(base, &late, 30).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (504, Some("deadline_exceeded")),
            "{body}"
        );
    }

    // Cancelled at B while it waits in the stream: canceled everywhere, and never run.
    let (_, body) = post(&base_a, "/api/client/tasks", "application/json", task("y")).await;
    let waiting = body["id"].as_str().unwrap().to_owned();
    let response = reqwest::Client::new()
        .delete(format!("{base_b}/api/client/tasks/{waiting}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, body) = fetch(&base_a, &waiting, 5).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (408, Some("canceled")),
        "{body}"
    );

    // A broker that shuts down hands its running task back at once: B takes it, and only
    // it (the cancelled task left the stream).
    let mut hold = provider(&base_a, "hold", 1, Behaviour::Hold).await;
    let (_, body) = post(&base_a, "/api/client/tasks", "application/json", task("z")).await;
    let handed = body["id"].as_str().unwrap().to_owned();
    assert_eq!(arrival(&mut hold).await, handed);
    a.shutdown().await;
    let late = provider(&base_b, "late", 1, Behaviour::Echo).await;
    let (status, body) = fetch(&http(&c), &handed, 30).await;
    assert_eq!((status, stdout(&body)), (200, "z".to_owned()), "{body}");
    assert_eq!(late.seen.lock().await.tasks, [handed.as_str()]);
    late.messenger.close(CloseReason::normal("bye")).await;
    crate::support::wait_for_workers(&base_b, 0, 0).await;

    // A broker whose providers all left hands its task back after `provider_wait`.
    let base_c = http(&c);
    let mut gone = provider(&base_c, "gone", 1, Behaviour::Hold).await;
    let (_, body) = post(&base_c, "/api/client/tasks", "application/json", task("w")).await;
    let orphan = body["id"].as_str().unwrap().to_owned();
    assert_eq!(arrival(&mut gone).await, orphan);
    gone.messenger.close(CloseReason::normal("bye")).await;
    crate::support::wait_for_workers(&base_c, 0, 0).await;
    let last = provider(&base_b, "last", 1, Behaviour::Echo).await;
    let (status, body) = fetch(&base_c, &orphan, 30).await;
    assert_eq!((status, stdout(&body)), (200, "w".to_owned()), "{body}");
    last.messenger.close(CloseReason::normal("bye")).await;
    crate::support::wait_for_workers(&base_b, 0, 0).await;

    // What does not fit in one NATS message (1 MiB here): a task is refused, a result
    // becomes an error that says so.
    let (status, body) = post(
        &base_b,
        "/api/client/tasks",
        "application/json",
        task(&"x".repeat(1_500_000)),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("NATS carries"),
        "{body}"
    );
    let _big = provider(&base_b, "big", 1, Behaviour::EchoStderr(1_500_000)).await;
    let (_, body) = post(&base_b, "/api/client/tasks", "application/json", task("v")).await;
    let big = body["id"].as_str().unwrap().to_owned();
    let (status, body) = fetch(&base_c, &big, 30).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("failed_precondition")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("RunWasip1"),
        "{body}"
    );
    drop((b, c));
}

//! Task lifecycle: queue limits, deadlines, immediate, retries after provider loss, cancellation
//! when clients go away, hung providers.

use std::time::Duration;

use wasimoff_core::envelope::Payload;
use wasimoff_core::messenger::{Messenger, MessengerConfig};
use wasimoff_core::proto::task;
use wasimoff_core::transport::WebSocketTransport;

use crate::support::*;

fn deadline_in(ms: i128) -> Option<task::QoS> {
    Some(task::QoS {
        deadline: Some(in_ms(ms)),
        ..Default::default()
    })
}

#[tokio::test]
async fn full_queue_answers_429_resource_exhausted() {
    let mut cfg = config();
    cfg.limits.max_queue = 2;
    let broker = broker(cfg).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    // No provider: two tasks wait, the third is refused.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { run_proto(&base, &wasip1("empty.wasm", &["e"])).await })
        })
        .collect();
    wait_for_queued(&base, 2).await;
    let (status, body) = run_proto(&base, &wasip1("empty.wasm", &["e"])).await;
    assert_eq!(status, 429);
    let body: serde_json::Value = serde_json::from_str(&body.unwrap_err()).unwrap();
    assert_eq!(body["code"], "resource_exhausted");
    // A provider arrives: the waiting tasks complete.
    let _p = provider(&base, "late", 2, Behaviour::Echo).await;
    for w in waiting {
        assert_eq!(w.await.unwrap().0, 200);
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn deadline_exceeded_while_queued() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let mut request = wasip1("empty.wasm", &["e"]);
    request.qos = deadline_in(200);
    let (status, body) = run_proto(&base, &request).await;
    assert_eq!(status, 504);
    assert!(body.unwrap_err().contains("deadline_exceeded"));
    // A deadline already in the past fails at once.
    request.qos = deadline_in(-1000);
    assert_eq!(run_proto(&base, &request).await.0, 504);
    broker.shutdown().await;
}

#[tokio::test]
async fn deadline_exceeded_while_running_cancels_on_the_provider() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let mut p = provider(&base, "slow", 1, Behaviour::Hold).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let mut request = wasip1("empty.wasm", &["e"]);
    request.qos = deadline_in(300);
    let (status, _) = run_proto(&base, &request).await;
    assert_eq!(status, 504);
    let arrived = p.arrivals.recv().await.unwrap();
    assert_eq!(
        p.cancels.recv().await.unwrap(),
        arrived,
        "the provider is told to cancel"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn immediate_fails_fast_without_a_free_slot() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let mut request = wasip1("empty.wasm", &["e"]);
    request.qos = Some(task::QoS {
        immediate: Some(true),
        ..Default::default()
    });
    let (status, body) = run_proto(&base, &request).await;
    assert_eq!(status, 503);
    assert!(body.unwrap_err().contains("unavailable"));
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 1).await;
    assert_eq!(
        run_proto(&base, &request).await.0,
        200,
        "with a free slot it runs"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn provider_killed_mid_task_completes_elsewhere_once() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let mut dying = provider(&base, "dying", 1, Behaviour::DieOnTask).await;
    wait_for_workers(&base, 1, 1).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let task = tokio::spawn({
        let base = base.clone();
        async move { run_proto(&base, &wasip1("empty.wasm", &["e", "survived"])).await }
    });
    dying.arrivals.recv().await.unwrap();
    let healthy = provider(&base, "healthy", 1, Behaviour::Echo).await;
    let (status, response) = task.await.unwrap();
    let response = response.unwrap();
    assert_eq!((status, stdout(&response).as_str()), (200, "survived"));
    assert_eq!(response.info.unwrap().provider.as_deref(), Some("healthy"));
    assert_eq!(
        healthy.seen.lock().await.tasks.len(),
        1,
        "ran exactly once on the healthy one"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wasimoff_task_retries_total 1"),
        "{metrics}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_cancels_on_the_provider() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let mut p = provider(&base, "holder", 1, Behaviour::Hold).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let url = format!("ws://{}/api/client/ws", broker.local_addr());
    let transport = WebSocketTransport::connect(&url, &[], 1 << 20)
        .await
        .unwrap();
    let (client, _incoming) = Messenger::spawn(transport, MessengerConfig::default());
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call(wasip1("empty.wasm", &["e"])).await }
    });
    let id = p.arrivals.recv().await.unwrap();
    client
        .close(wasimoff_core::transport::CloseReason::normal("bye"))
        .await;
    let _ = call.await;
    assert_eq!(p.cancels.recv().await.unwrap(), id);
    broker.shutdown().await;
}

#[tokio::test]
async fn hung_provider_is_dropped_and_its_task_requeued() {
    let mut cfg = config();
    cfg.ping = wasimoff_broker::PingConfig {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
    };
    let broker = broker(cfg).await;
    let base = http(&broker);
    let mut hung = provider(&base, "hung", 1, Behaviour::HangOnTask).await;
    wait_for_workers(&base, 1, 1).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let task = tokio::spawn({
        let base = base.clone();
        async move { run_proto(&base, &wasip1("empty.wasm", &["e", "requeued"])).await }
    });
    hung.arrivals.recv().await.unwrap();
    let _healthy = provider(&base, "healthy", 1, Behaviour::Echo).await;
    let (status, response) = task.await.unwrap();
    assert_eq!(
        (status, stdout(&response.unwrap()).as_str()),
        (200, "requeued")
    );
    // The hung provider was dropped by the broker.
    let reason = hung.messenger.closed().await;
    assert_eq!(reason.reason, "ping timeout");
    broker.shutdown().await;
}

#[tokio::test]
async fn priority_tasks_go_first() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let mut handles = Vec::new();
    for (i, priority) in [(0, false), (1, false), (2, true)] {
        let base = base.clone();
        let mut request = wasip1("empty.wasm", &["e", &i.to_string()]);
        request.qos = Some(task::QoS {
            priority: Some(priority),
            ..Default::default()
        });
        handles.push(tokio::spawn(
            async move { run_proto(&base, &request).await },
        ));
        // Each task must be queued before the next one is sent, so their order is known.
        wait_for_queued(&http(&broker), i + 1).await;
    }
    let mut p = provider(&base, "one-at-a-time", 1, Behaviour::Echo).await;
    for h in handles {
        assert_eq!(h.await.unwrap().0, 200);
    }
    let mut order = Vec::new();
    while let Ok(id) = p.arrivals.try_recv() {
        order.push(id);
    }
    let seq: Vec<u64> = order
        .iter()
        .map(|id| id.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(seq.len(), 3);
    assert!(
        seq[0] > seq[1] && seq[1] < seq[2],
        "the priority task (submitted last) ran first: {seq:?}"
    );
    let _ = Payload::Ping(Default::default());
    broker.shutdown().await;
}

#[tokio::test]
async fn an_attempt_that_times_out_is_cancelled_and_retried_elsewhere() {
    let mut cfg = config();
    cfg.limits.attempt_timeout = Duration::from_millis(300);
    cfg.limits.attempt_grace = Duration::from_millis(100);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let mut stuck = provider(&base, "stuck", 1, Behaviour::Hold).await;
    wait_for_workers(&base, 1, 1).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let task = tokio::spawn({
        let base = base.clone();
        async move { run_proto(&base, &wasip1("empty.wasm", &["e", "moved"])).await }
    });
    let id = stuck.arrivals.recv().await.unwrap();
    let _healthy = provider(&base, "healthy", 1, Behaviour::Echo).await;
    assert_eq!(
        stuck.cancels.recv().await.unwrap(),
        id,
        "the stuck attempt is cancelled"
    );
    let (status, response) = task.await.unwrap();
    let response = response.unwrap();
    assert_eq!((status, stdout(&response).as_str()), (200, "moved"));
    assert_eq!(response.info.unwrap().provider.as_deref(), Some("healthy"));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_busy_refusal_from_the_only_provider_is_placed_again_without_blame() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let mut only = provider(&base, "only", 1, Behaviour::RefuseFirst).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let (status, response) = run_proto(&base, &wasip1("empty.wasm", &["e", "second try"])).await;
    assert_eq!(
        (status, stdout(&response.unwrap()).as_str()),
        (200, "second try")
    );
    let first = only.arrivals.recv().await.unwrap();
    assert_eq!(
        only.arrivals.recv().await.unwrap(),
        first,
        "the same task, on the same provider"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wasimoff_task_retries_total 0"),
        "a refusal is no failure: {metrics}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_failed_attempt_on_the_only_provider_is_retried_there() {
    let mut cfg = config();
    cfg.limits.attempt_timeout = Duration::from_millis(200);
    cfg.limits.attempt_grace = Duration::from_millis(100);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let mut only = provider(&base, "only", 1, Behaviour::Hold).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let mut request = wasip1("empty.wasm", &["e"]);
    request.qos = deadline_in(5_000);
    let task = tokio::spawn({
        let base = base.clone();
        async move { run_proto(&base, &request).await }
    });
    // Without another provider, the retries come back here instead of waiting for the deadline.
    let first = only.arrivals.recv().await.unwrap();
    assert_eq!(only.arrivals.recv().await.unwrap(), first);
    let (status, body) = task.await.unwrap();
    assert_eq!(status, 409, "gave up after max_attempts: {body:?}");
    assert!(body.unwrap_err().contains("after 3 attempts"));
    broker.shutdown().await;
}

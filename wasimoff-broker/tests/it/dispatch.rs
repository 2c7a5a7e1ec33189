//! The dispatcher's ordering and classification rules through a real broker and fake providers
//! over WebSocket: cancels before retries, time limits told to providers, timeouts as results,
//! refusals backed off, wrong answers retried, trace events, outcome metrics.

use std::time::Duration;

use wasimoff_core::proto::task::{self, trace_event::EventType};

use crate::support::*;

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stuck_attempt_is_cancelled_before_its_retry_reaches_the_same_provider() {
    // The measured failure: one provider with two workers that cancels by task id only (as the
    // original TypeScript provider does) and a short attempt time limit. The retry must reach
    // the provider only after the cancel was confirmed, or the cancel kills the retry.
    let mut cfg = config();
    cfg.limits.attempt_timeout = Duration::from_millis(300);
    cfg.limits.attempt_grace = Duration::from_millis(100);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let p = provider(&base, "webprovider", 2, Behaviour::StuckFirstCancelById).await;
    wait_for_workers(&base, 1, 2).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let mut request = wasip1("empty.wasm", &["e", "second attempt"]);
    request.qos = Some(task::QoS {
        deadline: Some(in_ms(30_000)),
        ..Default::default()
    });
    let (status, response) = run_proto(&base, &request).await;
    assert_eq!(
        (status, stdout(&response.unwrap()).as_str()),
        (200, "second attempt")
    );
    let seen = p.seen.lock().await;
    let id = &seen.tasks[0];
    assert_eq!(
        seen.log,
        [
            format!("task {id}"),
            format!("cancel {id}"),
            format!("task {id}")
        ]
    );
    assert!(seen.overlaps.is_empty(), "a retry overtook its cancel");
    drop(seen);
    broker.shutdown().await;
}

#[tokio::test]
async fn providers_are_told_each_attempts_time_limit() {
    let mut cfg = config();
    cfg.limits.attempt_timeout = Duration::from_secs(20);
    let broker = broker(cfg).await;
    let base = http(&broker);
    let p = provider(&base, "p", 1, Behaviour::Echo).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    // No deadline from the client: the attempt timeout is the limit.
    let before = i128::from(wasimoff_core::platform::unix_nanos());
    assert_eq!(run_proto(&base, &wasip1("empty.wasm", &["e"])).await.0, 200);
    // A client deadline sooner than that: the deadline is the limit.
    let mut request = wasip1("empty.wasm", &["e"]);
    let deadline = in_ms(5_000);
    request.qos = Some(task::QoS {
        deadline: Some(deadline),
        ..Default::default()
    });
    assert_eq!(run_proto(&base, &request).await.0, 200);
    let after = i128::from(wasimoff_core::platform::unix_nanos());
    let seen = p.seen.lock().await;
    let first = seen.deadlines[0].expect("a deadline").unix_nanos();
    assert!(first >= before + 20_000_000_000 && first <= after + 20_000_000_000);
    let second = seen.deadlines[1].expect("a deadline").unix_nanos();
    // (Give or take the clock reads between the client's deadline and the send.)
    let slack = 50_000_000;
    assert!(
        (deadline.unix_nanos() - 1_000_000_000..=deadline.unix_nanos() + slack).contains(&second),
        "{second} vs {}",
        deadline.unix_nanos()
    );
    drop(seen);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_guest_timeout_is_a_result_and_is_not_retried() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let mut timing_out = provider(
        &base,
        "a",
        1,
        Behaviour::ResultError("deadline exceeded: ran longer than 1s"),
    )
    .await;
    wait_for_workers(&base, 1, 1).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let (status, response) = run_proto(&base, &wasip1("empty.wasm", &["e"])).await;
    let response = response.unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        response.result,
        Some(task::wasip1::response::Result::Error(
            "deadline exceeded: ran longer than 1s".into()
        ))
    );
    let id = timing_out.arrivals.recv().await.unwrap();
    let seen = timing_out.seen.lock().await;
    assert_eq!(seen.tasks.iter().filter(|t| **t == id).count(), 1);
    drop(seen);
    let metrics = metrics(&base).await;
    assert!(
        metrics.contains(r#"wasimoff_tasks_completed_total{outcome="timeout"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("wasimoff_task_retries_total 0"),
        "{metrics}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn outcome_metrics_tell_exits_traps_and_failures_apart() {
    let broker = broker(config()).await;
    let base = http(&broker);
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    for (name, behaviour) in [
        (
            "trap",
            Behaviour::ResultError("trapped: wasm `unreachable` instruction executed"),
        ),
        (
            "memory",
            Behaviour::ResultError("memory limit of 1048576 bytes exceeded"),
        ),
        ("failed", Behaviour::ResultError("invalid module: not wasm")),
        ("ok", Behaviour::Echo),
    ] {
        let p = provider(&base, name, 1, behaviour).await;
        wait_for_workers(&base, 1, 1).await;
        assert_eq!(run_proto(&base, &wasip1("empty.wasm", &["e"])).await.0, 200);
        p.messenger
            .close(wasimoff_core::transport::CloseReason::normal("next"))
            .await;
        wait_for_workers(&base, 0, 0).await;
    }
    let metrics = metrics(&base).await;
    for outcome in ["trap", "memory", "failed", "ok"] {
        let line = format!(r#"wasimoff_tasks_completed_total{{outcome="{outcome}"}} 1"#);
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_refusing_provider_is_backed_off_while_an_honest_one_works() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let refusing = provider(&base, "refusing", 4, Behaviour::RefuseAlways).await;
    let honest = provider(&base, "honest", 2, Behaviour::Echo).await;
    wait_for_workers(&base, 2, 6).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let base = base.clone();
            tokio::spawn(async move {
                run_proto(&base, &wasip1("empty.wasm", &["e", &i.to_string()])).await
            })
        })
        .collect();
    for t in tasks {
        let (status, response) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            response.unwrap().info.unwrap().provider.as_deref(),
            Some("honest")
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let refused = refusing.seen.lock().await.tasks.len();
    // At most its slots at first, then a probe per back-off period (from 100 ms, doubling).
    assert!(
        (refused as f64) <= 4.0 + 10.0 * elapsed + 2.0,
        "{refused} tasks sent to a provider that always refuses, in {elapsed:.2} s"
    );
    assert_eq!(honest.seen.lock().await.tasks.len(), 200);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_wrong_payload_is_retried_on_another_provider() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let wrong = provider(&base, "wrong", 1, Behaviour::WrongPayload).await;
    wait_for_workers(&base, 1, 1).await;
    let _right = provider(&base, "right", 1, Behaviour::Echo).await;
    wait_for_workers(&base, 2, 2).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    // The first provider with a free slot answers wrongly; the task moves to the other.
    let (status, response) = run_proto(&base, &wasip1("empty.wasm", &["e", "right"])).await;
    let response = response.unwrap();
    assert_eq!((status, stdout(&response).as_str()), (200, "right"));
    assert_eq!(wrong.seen.lock().await.tasks.len(), 1);
    assert_eq!(response.info.unwrap().provider.as_deref(), Some("right"));
    broker.shutdown().await;
}

#[tokio::test]
async fn a_trace_records_the_brokers_events_in_order() {
    let broker = broker(config()).await;
    let base = http(&broker);
    let _p = provider(&base, "p", 1, Behaviour::Echo).await;
    wait_for_workers(&base, 1, 1).await;
    upload(&base, EMPTY_WASM, Some("empty.wasm")).await;
    let mut request = wasip1("empty.wasm", &["e"]);
    request.info.as_mut().unwrap().trace = Some(task::Trace::default());
    let (status, response) = run_proto(&base, &request).await;
    assert_eq!(status, 200);
    let trace = response.unwrap().info.unwrap().trace.expect("a trace");
    let events: Vec<i32> = trace.events.iter().filter_map(|e| e.event).collect();
    let want = [
        EventType::BrokerReceivedClientRequest,
        EventType::BrokerQueueTask,
        EventType::BrokerScheduleTask,
        EventType::BrokerTransmitProviderTask,
        EventType::BrokerReceivedProviderResult,
        EventType::BrokerTransmitClientResponse,
    ]
    .map(|e| e as i32);
    assert_eq!(events, want);
    let times: Vec<i64> = trace.events.iter().filter_map(|e| e.unixnano).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    broker.shutdown().await;
}

//! Messenger behaviour over an in-memory transport pair: correlation, events, timeouts,
//! cancellation, closes and every kind of malformed input.

use std::time::Duration;

use wasimoff_core::envelope::{Codec, Envelope, Frame, Payload, UnknownPayload};
use wasimoff_core::messenger::{CallError, Incoming, IncomingMessage, Messenger, MessengerConfig};
use wasimoff_core::proto::{self, envelope::MessageType};
use wasimoff_core::transport::{
    CloseReason, MemoryReceiver, MemorySender, MemoryTransport, Transport, TransportError,
    TransportReceiver, TransportSender,
};

fn probe(file: &str) -> proto::filesystem::probe::Request {
    proto::filesystem::probe::Request {
        file: Some(file.into()),
    }
}

fn probe_ok(ok: bool) -> Payload {
    proto::filesystem::probe::Response { ok: Some(ok) }.into()
}

/// A messenger on one end, the raw halves of the other end for the test to play the peer.
fn messenger_and_raw(
    codec: Codec,
    config: MessengerConfig,
) -> (Messenger, Incoming, MemorySender, MemoryReceiver) {
    let (a, b) = MemoryTransport::pair(codec);
    let (messenger, incoming) = Messenger::spawn(a, config);
    let (tx, rx) = b.split();
    (messenger, incoming, tx, rx)
}

async fn next_envelope(rx: &mut MemoryReceiver) -> Envelope {
    rx.recv()
        .await
        .expect("connection open")
        .expect("valid envelope")
}

#[tokio::test]
async fn calls_resolve_out_of_order() {
    let (m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let m = m.clone();
            tokio::spawn(async move { m.call(probe(&format!("f{i}"))).await })
        })
        .collect();
    let mut requests = Vec::new();
    for _ in 0..3 {
        let env = next_envelope(&mut rx).await;
        assert_eq!(env.kind, Some(MessageType::Request));
        requests.push(env);
    }
    // Answer in reverse order; each answer says whether the file name ends in "1".
    for env in requests.iter().rev() {
        let Some(Payload::ProbeRequest(p)) = &env.payload else {
            panic!("expected probe")
        };
        let ok = p.file.as_deref().is_some_and(|f| f.ends_with('1'));
        tx.send(Envelope::response(env.sequence.unwrap(), probe_ok(ok)))
            .await
            .unwrap();
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().unwrap());
    }
    assert_eq!(
        results,
        vec![probe_ok(false), probe_ok(true), probe_ok(false)]
    );
    assert_eq!(m.pending_calls(), 0);
}

#[tokio::test]
async fn requests_and_events_have_independent_counters() {
    let (m, _incoming, _tx, mut rx) = messenger_and_raw(Codec::Json, MessengerConfig::default());
    m.send_event(proto::event::ClusterInfo { providers: Some(2) })
        .await
        .unwrap();
    let call = tokio::spawn({
        let m = m.clone();
        async move {
            m.call_with_timeout(probe("x"), Duration::from_secs(5))
                .await
        }
    });
    m.send_event(proto::event::ClusterInfo { providers: Some(3) })
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let env = next_envelope(&mut rx).await;
        seen.push((env.kind.unwrap(), env.sequence.unwrap()));
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (MessageType::Request, 1),
            (MessageType::Event, 1),
            (MessageType::Event, 2)
        ]
    );
    call.abort();
}

#[tokio::test(start_paused = true)]
async fn timeout_leaves_nothing_pending() {
    let (m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let err = m
        .call_with_timeout(probe("slow"), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::Timeout(Duration::from_secs(2)));
    assert_eq!(m.pending_calls(), 0);
    // A late answer is ignored and does not disturb the next call.
    let late = next_envelope(&mut rx).await;
    tx.send(Envelope::response(late.sequence.unwrap(), probe_ok(true)))
        .await
        .unwrap();
    let next = tokio::spawn({
        let m = m.clone();
        async move { m.call(probe("next")).await }
    });
    let env = next_envelope(&mut rx).await;
    assert_ne!(env.sequence, late.sequence);
    tx.send(Envelope::response(env.sequence.unwrap(), probe_ok(false)))
        .await
        .unwrap();
    assert_eq!(next.await.unwrap().unwrap(), probe_ok(false));
}

#[tokio::test]
async fn cancelled_call_leaves_nothing_pending() {
    let (m, _incoming, _tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let call = tokio::spawn({
        let m = m.clone();
        async move { m.call(probe("never")).await }
    });
    next_envelope(&mut rx).await;
    assert_eq!(m.pending_calls(), 1);
    call.abort();
    let _ = call.await;
    assert_eq!(m.pending_calls(), 0);
}

#[tokio::test]
async fn peer_close_mid_call_fails_the_call_with_the_reason() {
    let (m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let call = tokio::spawn({
        let m = m.clone();
        async move { m.call(probe("x")).await }
    });
    next_envelope(&mut rx).await;
    tx.close(CloseReason::new(
        CloseReason::GOING_AWAY,
        "broker restarting",
    ))
    .await
    .unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err,
        CallError::Closed(CloseReason::new(1001, "broker restarting"))
    );
    assert_eq!(m.closed().await.reason, "broker restarting");
    // New calls fail at once.
    assert!(matches!(
        m.call(probe("y")).await,
        Err(CallError::Closed(_))
    ));
}

#[tokio::test]
async fn local_close_fails_pending_calls_and_tells_the_peer() {
    let (m, _incoming, _tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let call = tokio::spawn({
        let m = m.clone();
        async move { m.call(probe("x")).await }
    });
    next_envelope(&mut rx).await;
    m.close(CloseReason::normal("shutting down")).await;
    assert_eq!(
        call.await.unwrap().unwrap_err(),
        CallError::Closed(CloseReason::normal("shutting down"))
    );
    match rx.recv().await {
        Some(Err(TransportError::Closed(reason))) => assert_eq!(reason.reason, "shutting down"),
        other => panic!("expected a close, got {other:?}"),
    }
}

#[tokio::test]
async fn requests_reach_the_application_and_get_one_answer() {
    let (_m, mut incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Json, MessengerConfig::default());
    tx.send(Envelope::request(0, probe("a"))).await.unwrap();
    tx.send(Envelope::request(1, probe("b"))).await.unwrap();
    let Some(IncomingMessage::Request(first)) = incoming.next().await else {
        panic!()
    };
    let Some(IncomingMessage::Request(second)) = incoming.next().await else {
        panic!()
    };
    assert_eq!(first.sequence(), Some(0), "sequence 0 is a real sequence");
    second.respond(Err("no such file".into())).await.unwrap();
    drop(first); // unanswered: the messenger answers with an error
    let a = next_envelope(&mut rx).await;
    let b = next_envelope(&mut rx).await;
    assert_eq!(
        (a.sequence, a.error.as_deref()),
        (Some(1), Some("no such file"))
    );
    assert_eq!(
        (b.sequence, b.error.as_deref()),
        (Some(0), Some("request dropped without an answer"))
    );
}

#[tokio::test]
async fn pings_are_answered_without_the_application() {
    let (_m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    tx.send(Envelope::request(7, proto::Ping {})).await.unwrap();
    let pong = next_envelope(&mut rx).await;
    assert_eq!(pong, Envelope::response(7, proto::Ping {}));
}

#[tokio::test]
async fn events_reach_the_application() {
    let (_m, mut incoming, mut tx, _rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    tx.send(Envelope::event(
        0,
        proto::event::Throughput {
            overall: Some(2.5),
            yours: None,
        },
    ))
    .await
    .unwrap();
    let Some(IncomingMessage::Event(event)) = incoming.next().await else {
        panic!()
    };
    assert_eq!(event.sequence, Some(0));
    assert!(matches!(event.payload, Payload::Throughput(_)));
}

#[tokio::test]
async fn unknown_payload_type_gets_an_error_answer() {
    let (_m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let unknown = Payload::Unknown(UnknownPayload {
        type_url: "wasimoff/wasimoff.v2.Teleport".into(),
        value: bytes::Bytes::from_static(b"\x08\x01"),
    });
    tx.send(Envelope::request(3, unknown)).await.unwrap();
    let answer = next_envelope(&mut rx).await;
    assert_eq!(answer.sequence, Some(3));
    assert_eq!(
        answer.error.as_deref(),
        Some("unknown payload type wasimoff.v2.Teleport")
    );
}

#[tokio::test]
async fn request_without_sequence_or_payload_gets_an_error_answer() {
    let (_m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Json, MessengerConfig::default());
    let no_sequence = Envelope {
        sequence: None,
        ..Envelope::request(0, probe("a"))
    };
    tx.send(no_sequence).await.unwrap();
    let answer = next_envelope(&mut rx).await;
    assert_eq!(
        (answer.sequence, answer.error.as_deref()),
        (None, Some("request without sequence"))
    );
    let no_payload = Envelope {
        payload: None,
        ..Envelope::request(4, probe("a"))
    };
    tx.send(no_payload).await.unwrap();
    let answer = next_envelope(&mut rx).await;
    assert_eq!(
        (answer.sequence, answer.error.as_deref()),
        (Some(4), Some("request without payload"))
    );
}

#[tokio::test]
async fn malformed_payload_in_a_request_gets_an_error_answer() {
    let (_m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Json, MessengerConfig::default());
    let bad = r#"{"sequence":"9","type":"Request","payload":{"@type":"wasimoff/wasimoff.v1.Task.Cancel","id":5}}"#;
    tx.send_frame(Frame::Text(bad.into())).await.unwrap();
    let answer = next_envelope(&mut rx).await;
    assert_eq!(answer.sequence, Some(9));
    assert!(
        answer
            .error
            .unwrap()
            .starts_with("malformed wasimoff.v1.Task.Cancel payload")
    );
}

#[tokio::test]
async fn text_frame_on_binary_protocol_closes_with_1003() {
    let (m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    tx.send_frame(Frame::Text("{}".into())).await.unwrap();
    match rx.recv().await {
        Some(Err(TransportError::Closed(reason))) => {
            assert_eq!(reason.code, CloseReason::UNSUPPORTED_DATA);
            assert!(reason.reason.contains("text frame"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(m.closed().await.code, CloseReason::UNSUPPORTED_DATA);
}

#[tokio::test]
async fn garbage_binary_frame_closes_with_1007() {
    let (m, _incoming, mut tx, _rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    tx.send_frame(Frame::Binary(bytes::Bytes::from_static(
        b"\xff\xff\xff\xff",
    )))
    .await
    .unwrap();
    assert_eq!(m.closed().await.code, CloseReason::INVALID_PAYLOAD);
}

#[tokio::test]
async fn envelope_without_type_closes_with_protocol_error() {
    let (m, _incoming, mut tx, _rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    tx.send(Envelope {
        kind: None,
        ..Envelope::request(1, probe("a"))
    })
    .await
    .unwrap();
    assert_eq!(m.closed().await.code, CloseReason::PROTOCOL_ERROR);
}

#[tokio::test]
async fn remote_error_and_empty_response_fail_the_call() {
    let (m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let call = tokio::spawn({
        let m = m.clone();
        async move { (m.call(probe("a")).await, m.call(probe("b")).await) }
    });
    let first = next_envelope(&mut rx).await;
    tx.send(Envelope::error_response(first.sequence, "Error: boom"))
        .await
        .unwrap();
    let second = next_envelope(&mut rx).await;
    tx.send(Envelope {
        payload: None,
        ..Envelope::response(second.sequence.unwrap(), proto::Ping {})
    })
    .await
    .unwrap();
    let (a, b) = call.await.unwrap();
    assert_eq!(a.unwrap_err(), CallError::Remote("Error: boom".into()));
    assert!(matches!(b.unwrap_err(), CallError::Protocol(_)));
}

#[tokio::test]
async fn two_messengers_talk_both_ways() {
    let (a, b) = MemoryTransport::pair(Codec::Json);
    let (left, left_in) = Messenger::spawn(a, MessengerConfig::default());
    let (right, right_in) = Messenger::spawn(b, MessengerConfig::default());
    for mut incoming in [left_in, right_in] {
        tokio::spawn(async move {
            while let Some(message) = incoming.next().await {
                if let IncomingMessage::Request(r) = message {
                    let ok = matches!(r.payload(), Payload::ProbeRequest(_));
                    let _ = r.respond(Ok(probe_ok(ok))).await;
                }
            }
        });
    }
    let (x, y) = tokio::join!(left.call(probe("l")), right.call(probe("r")));
    assert_eq!((x.unwrap(), y.unwrap()), (probe_ok(true), probe_ok(true)));
    drop(left);
    assert_eq!(right.closed().await.reason, "messenger dropped");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stopped_reading_cannot_hold_up_calls_or_the_close() {
    let config = MessengerConfig {
        outgoing_capacity: 4,
        ..MessengerConfig::default()
    };
    let (m, _incoming, _tx, _rx) = messenger_and_raw(Codec::Protobuf, config);
    // The peer never reads: the transport's buffer and then the messenger's queue fill up.
    let flood = tokio::spawn({
        let m = m.clone();
        async move {
            for i in 0..1_000 {
                if m.send_event(proto::event::ClusterInfo { providers: Some(i) })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    let err = m
        .call_with_timeout(probe("stuck"), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CallError::Timeout(Duration::from_secs(1)),
        "the wait for queue space is timed too"
    );
    assert_eq!(m.pending_calls(), 0);
    m.close(CloseReason::new(
        CloseReason::POLICY_VIOLATION,
        "ping timeout",
    ))
    .await;
    assert_eq!(m.closed().await.reason, "ping timeout");
    flood.await.unwrap();
}

#[tokio::test]
async fn started_calls_leave_in_order_and_resolve_separately() {
    // A small queue, so that callers often wait for space while the peer reads.
    let config = MessengerConfig {
        outgoing_capacity: 2,
        ..MessengerConfig::default()
    };
    let (m, _incoming, mut tx, mut rx) = messenger_and_raw(Codec::Protobuf, config);
    const PER_CALLER: usize = 100;
    // Two callers interleave; each alternates Cancel and Probe requests for the same name, as
    // the broker does when it cancels a task and sends it again.
    let callers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|caller| {
            let m = m.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                for i in 0..PER_CALLER {
                    let name = format!("{caller}{i}");
                    let payload: Payload = if i % 2 == 0 {
                        proto::task::Cancel {
                            id: Some(name.clone()),
                            reason: None,
                        }
                        .into()
                    } else {
                        probe(&name).into()
                    };
                    pending.push((name, m.start_call(payload).await.unwrap()));
                    tokio::task::yield_now().await;
                }
                pending
            })
        })
        .collect();
    let mut seen: Vec<Envelope> = Vec::new();
    for _ in 0..2 * PER_CALLER {
        seen.push(next_envelope(&mut rx).await);
    }
    let mut pending = Vec::new();
    for caller in callers {
        pending.extend(caller.await.unwrap());
    }
    assert_eq!(m.pending_calls(), 2 * PER_CALLER);
    let name_of = |env: &Envelope| match &env.payload {
        Some(Payload::Cancel(c)) => c.id.clone().unwrap(),
        Some(Payload::ProbeRequest(p)) => p.file.clone().unwrap(),
        other => panic!("unexpected {other:?}"),
    };
    for caller in ["a", "b"] {
        let order: Vec<String> = seen
            .iter()
            .map(name_of)
            .filter(|n| n.starts_with(caller))
            .collect();
        let expected: Vec<String> = (0..PER_CALLER).map(|i| format!("{caller}{i}")).collect();
        assert_eq!(order, expected, "caller {caller} kept its order");
    }
    // Answer in reverse: every response reaches its own call.
    for env in seen.iter().rev() {
        let ok = name_of(env).ends_with('7');
        tx.send(Envelope::response(env.sequence.unwrap(), probe_ok(ok)))
            .await
            .unwrap();
    }
    for (name, call) in pending {
        let sequence = call.sequence();
        let response = call.response_within(Duration::from_secs(5)).await;
        assert_eq!(
            response,
            Ok(probe_ok(name.ends_with('7'))),
            "{name} (sequence {sequence})"
        );
    }
    assert_eq!(m.pending_calls(), 0);
}

#[tokio::test]
async fn dropping_a_pending_call_forgets_it() {
    let (m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let first = m.start_call(probe("dropped")).await.unwrap();
    let second = m.start_call(probe("kept")).await.unwrap();
    assert_eq!(m.pending_calls(), 2);
    let dropped = first.sequence();
    drop(first);
    assert_eq!(m.pending_calls(), 1);
    // A response for the forgotten call is ignored; the other call still gets its own.
    let a = next_envelope(&mut rx).await;
    let b = next_envelope(&mut rx).await;
    assert_eq!(a.sequence, Some(dropped));
    tx.send(Envelope::response(dropped, probe_ok(true)))
        .await
        .unwrap();
    tx.send(Envelope::response(b.sequence.unwrap(), probe_ok(false)))
        .await
        .unwrap();
    assert_eq!(second.response().await, Ok(probe_ok(false)));
    assert_eq!(m.pending_calls(), 0);

    // A response() future dropped mid-wait forgets the call too.
    let third = m.start_call(probe("abandoned")).await.unwrap();
    let waiting = tokio::spawn(third.response());
    next_envelope(&mut rx).await;
    assert_eq!(m.pending_calls(), 1);
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(m.pending_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn response_within_times_out_and_forgets() {
    let (m, _incoming, _tx, _rx) = messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let call = m.start_call(probe("slow")).await.unwrap();
    assert_eq!(
        call.response_within(Duration::from_secs(2)).await,
        Err(CallError::Timeout(Duration::from_secs(2)))
    );
    assert_eq!(m.pending_calls(), 0);
}

#[tokio::test]
async fn close_fails_pending_responses_and_new_calls() {
    let (m, _incoming, mut tx, mut rx) =
        messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    assert_eq!(m.close_reason(), None);
    let call = m.start_call(probe("x")).await.unwrap();
    let waiting = tokio::spawn(call.response());
    next_envelope(&mut rx).await;
    let reason = CloseReason::new(CloseReason::GOING_AWAY, "broker restarting");
    tx.close(reason.clone()).await.unwrap();
    assert_eq!(
        waiting.await.unwrap(),
        Err(CallError::Closed(reason.clone()))
    );
    assert_eq!(m.close_reason(), Some(reason.clone()));
    assert_eq!(m.pending_calls(), 0);
    assert_eq!(
        m.start_call(probe("y")).await.unwrap_err(),
        CallError::Closed(reason)
    );
}

#[tokio::test]
async fn close_reason_is_known_while_closing() {
    let (m, _incoming, _tx, _rx) = messenger_and_raw(Codec::Protobuf, MessengerConfig::default());
    let call = m.start_call(probe("x")).await.unwrap();
    m.close(CloseReason::normal("shutting down")).await;
    // Known at once, before the driver has finished.
    assert_eq!(m.close_reason(), Some(CloseReason::normal("shutting down")));
    assert_eq!(
        call.response().await,
        Err(CallError::Closed(CloseReason::normal("shutting down")))
    );
}

#[tokio::test]
async fn a_dropped_driver_fails_pending_responses() {
    let (a, _b) = MemoryTransport::pair(Codec::Protobuf);
    let (m, _incoming, driver) = Messenger::new(a, MessengerConfig::default());
    let driving = tokio::spawn(driver);
    let call = m.start_call(probe("x")).await.unwrap();
    driving.abort();
    let _ = driving.await;
    assert!(matches!(
        call.response().await,
        Err(CallError::Closed(reason)) if reason.reason == "driver dropped"
    ));
    assert!(m.is_closed());
}

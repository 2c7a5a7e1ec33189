//! Focused tests of the machine's semantics, one scenario each, in virtual time.

use std::time::{Duration, Instant};

use wasimoff_core::envelope::Payload;
use wasimoff_core::executor::{ExecOutput, Termination};
use wasimoff_core::proto::task::wasip1;
use wasimoff_core::remote::Refusal;
use wasimoff_core::scheduler::{LocalityScheduler, ProviderId};

use super::machine::{Action, Answer, Input, Job, Machine, MachineConfig};
use crate::error::TaskError;

const P: ProviderId = ProviderId(1);
const Q: ProviderId = ProviderId(2);

struct Harness {
    m: Machine,
    now: Instant,
}

/// What an action says, in a form easy to compare.
#[derive(Debug, PartialEq, Eq)]
enum Did {
    Send(ProviderId, String, u32),
    Cancel(ProviderId, String, u32),
    Reply(String, Result<&'static str, TaskError>),
}

fn result_kind(payload: &Payload) -> &'static str {
    match payload {
        Payload::Wasip1Response(r) => match &r.result {
            Some(wasip1::response::Result::Ok(_)) => "ok",
            Some(wasip1::response::Result::Error(_)) => "error result",
            None => "empty",
        },
        _ => "other",
    }
}

fn result(termination: Termination) -> Payload {
    let output = ExecOutput {
        termination,
        stdout: Default::default(),
        stderr: Default::default(),
        stdout_truncated: false,
        stderr_truncated: false,
        artifacts: None,
        error: None,
    };
    Payload::Wasip1Response(output.into_wasip1_response(None))
}

impl Harness {
    fn new(config: MachineConfig) -> Harness {
        Harness {
            m: Machine::new(Box::new(LocalityScheduler::default()), config),
            now: Instant::now(),
        }
    }

    fn input(&mut self, input: Input) -> Vec<Did> {
        self.m.handle(self.now, input);
        self.did()
    }

    fn provider(&mut self, id: ProviderId, slots: u32) -> Vec<Did> {
        self.input(Input::ProviderJoined {
            id,
            name: format!("{id}"),
            files: Vec::new(),
        });
        self.input(Input::Resources {
            id,
            concurrency: slots,
        })
    }

    fn submit_job(&mut self, id: &str, deadline: Duration, immediate: bool) -> Vec<Did> {
        self.submit_costly(id, deadline, immediate, 1)
    }

    /// Submits a task that holds `cost` bytes of the budget.
    fn submit_costly(
        &mut self,
        id: &str,
        deadline: Duration,
        immediate: bool,
        cost: usize,
    ) -> Vec<Did> {
        let job = Job {
            id: id.into(),
            payload: Box::new(Payload::Wasip1Request(Default::default())),
            binary: None,
            priority: false,
            immediate,
            patient: false,
            resumed: false,
            trace: false,
            cost,
        };
        let deadline = self.now + deadline;
        self.input(Input::Submit { job, deadline })
    }

    /// Submits a task that waits for a provider until its deadline (submitted by id).
    fn submit_patient(&mut self, id: &str, deadline: Duration) -> Vec<Did> {
        let job = Job {
            id: id.into(),
            payload: Box::new(Payload::Wasip1Request(Default::default())),
            binary: None,
            priority: false,
            immediate: false,
            patient: true,
            resumed: false,
            trace: false,
            cost: 1,
        };
        let deadline = self.now + deadline;
        self.input(Input::Submit { job, deadline })
    }

    fn submit(&mut self, id: &str, deadline: Duration) -> Vec<Did> {
        self.submit_job(id, deadline, false)
    }

    fn answer(&mut self, id: &str, attempt: u32, provider: ProviderId, answer: Answer) -> Vec<Did> {
        self.input(Input::Answer {
            id: id.into(),
            attempt,
            provider,
            answer,
        })
    }

    fn ok(&mut self, id: &str, attempt: u32, provider: ProviderId) -> Vec<Did> {
        self.answer(
            id,
            attempt,
            provider,
            Answer::Response(Box::new(result(Termination::Exited(0)))),
        )
    }

    fn ack(&mut self, id: &str, attempt: u32, provider: ProviderId) -> Vec<Did> {
        self.input(Input::CancelAcked {
            id: id.into(),
            attempt,
            provider,
        })
    }

    /// Moves time on, firing timers on the way at their exact times.
    fn advance(&mut self, by: Duration) -> Vec<Did> {
        let until = self.now + by;
        let mut did = Vec::new();
        while let Some(at) = self.m.poll_timeout().filter(|at| *at <= until) {
            self.now = at;
            self.m.handle_timeout(at);
            did.extend(self.did());
        }
        self.now = until;
        self.m.handle_timeout(until);
        did.extend(self.did());
        did
    }

    fn did(&mut self) -> Vec<Did> {
        self.m.check();
        let mut did = Vec::new();
        while let Some(action) = self.m.poll_action() {
            did.push(match action {
                Action::Send {
                    provider,
                    id,
                    attempt,
                    ..
                } => Did::Send(provider, id, attempt),
                Action::Cancel {
                    provider,
                    id,
                    attempt,
                    ..
                } => Did::Cancel(provider, id, attempt),
                Action::Reply { id, result, .. } => Did::Reply(id, result.map(|p| result_kind(&p))),
                Action::AttemptFailed { .. } => continue,
            });
        }
        did
    }
}

fn send(p: ProviderId, id: &str, attempt: u32) -> Did {
    Did::Send(p, id.into(), attempt)
}
fn cancel(p: ProviderId, id: &str, attempt: u32) -> Did {
    Did::Cancel(p, id.into(), attempt)
}
fn reply(id: &str, result: Result<&'static str, TaskError>) -> Did {
    Did::Reply(id.into(), result)
}

fn config() -> MachineConfig {
    MachineConfig {
        attempt_timeout: Duration::from_secs(3),
        attempt_grace: Duration::from_secs(1),
        ..MachineConfig::default()
    }
}

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

#[test]
fn a_wedged_attempt_is_cancelled_before_the_task_goes_back_to_that_provider() {
    // The measured failure: one provider (2 workers) that cancels by task id, a 3 s attempt
    // timeout. The retry must not reach the provider before the cancel, nor before the
    // provider confirmed it, or the cancel kills the retry.
    let mut h = Harness::new(config());
    h.provider(P, 2);
    assert_eq!(h.submit("t", S(30)), [send(P, "t", 1)]);
    assert_eq!(
        h.advance(S(4)),
        [cancel(P, "t", 1)],
        "cancel, and no resend yet"
    );
    assert_eq!(
        h.m.reserved(P),
        Some(1),
        "the slot stays reserved until the provider stops"
    );
    assert_eq!(h.advance(S(5)), []);
    assert_eq!(h.ack("t", 1, P), [send(P, "t", 2)]);
    // The first attempt's late answer changes nothing.
    assert_eq!(h.ok("t", 1, P), []);
    assert_eq!(h.ok("t", 2, P), [reply("t", Ok("ok"))]);
    assert_eq!(h.m.reserved(P), Some(0));
}

#[test]
fn a_wedged_attempt_moves_to_another_provider_after_its_cancel() {
    let mut h = Harness::new(config());
    h.provider(P, 1);
    assert_eq!(h.submit("t", S(30)), [send(P, "t", 1)]);
    h.provider(Q, 1);
    // In this order: the cancel is sent before the task goes anywhere else.
    assert_eq!(h.advance(S(4)), [cancel(P, "t", 1), send(Q, "t", 2)]);
    // The cancelled attempt's late answer (instead of an echo) frees P's slot.
    assert_eq!(h.answer("t", 1, P, Answer::Failed("cancelled".into())), []);
    assert_eq!(h.m.reserved(P), Some(0));
    assert_eq!(h.ok("t", 2, Q), [reply("t", Ok("ok"))]);
}

#[test]
fn the_deadline_wins_when_it_meets_the_attempt_timer() {
    let mut h = Harness::new(MachineConfig {
        attempt_timeout: S(3),
        attempt_grace: Duration::ZERO,
        ..MachineConfig::default()
    });
    h.provider(P, 2);
    h.provider(Q, 2);
    assert_eq!(h.submit("t", S(3)), [send(P, "t", 1)]);
    assert_eq!(
        h.advance(S(10)),
        [
            cancel(P, "t", 1),
            reply(
                "t",
                Err(TaskError::DeadlineExceeded(
                    "the task's deadline passed while it ran on provider provider-1 (3.0 s of \
                     attempt 1; 3.0 s since it was submitted)"
                        .into()
                ))
            )
        ],
        "one cancel, no re-dispatch"
    );
}

#[test]
fn a_deadline_error_says_whether_any_provider_was_there() {
    let mut h = Harness::new(config());
    assert_eq!(h.submit("t", S(2)), []);
    assert_eq!(
        h.advance(S(2)),
        [reply(
            "t",
            Err(TaskError::DeadlineExceeded(
                "the task waited 2.0 s in the queue and never ran: no provider is connected \
                 to this broker"
                    .into()
            ))
        )]
    );
    // With a provider whose one slot is taken by another task.
    h.provider(P, 1);
    assert_eq!(h.submit("busy", S(60)), [send(P, "busy", 1)]);
    assert_eq!(h.submit("t2", S(1)), []);
    assert_eq!(
        h.advance(S(1)),
        [reply(
            "t2",
            Err(TaskError::DeadlineExceeded(
                "the task waited 1.0 s in the queue: 1 provider(s) with 1 slot(s) are \
                 connected, and none was free for it"
                    .into()
            ))
        )]
    );
}

#[test]
fn nothing_is_sent_at_the_deadline() {
    let mut h = Harness::new(config());
    assert_eq!(h.submit("t", S(2)), []);
    h.now += S(2);
    // A provider that joins exactly at the deadline gets nothing.
    let mut did = h.input(Input::ProviderJoined {
        id: P,
        name: "p".into(),
        files: Vec::new(),
    });
    did.extend(h.input(Input::Resources {
        id: P,
        concurrency: 1,
    }));
    assert!(
        matches!(
            &did[..],
            [Did::Reply(_, Err(TaskError::DeadlineExceeded(_)))]
        ),
        "{did:?}"
    );
}

#[test]
fn a_guest_that_runs_past_its_limit_is_a_result_and_not_retried() {
    let mut h = Harness::new(config());
    h.provider(P, 1);
    h.provider(Q, 1);
    assert_eq!(h.submit("t", S(30)), [send(P, "t", 1)]);
    h.advance(S(3));
    let timeout = Answer::Response(Box::new(result(Termination::TimedOut(S(3)))));
    assert_eq!(
        h.answer("t", 1, P, timeout),
        [reply("t", Ok("error result"))]
    );
    assert_eq!(h.m.stats().retries, 0);
    assert_eq!(h.advance(S(60)), []);
}

#[test]
fn each_attempt_gets_the_time_left_capped_by_the_attempt_timeout() {
    let mut h = Harness::new(config());
    h.provider(P, 1);
    let limits = |h: &mut Harness, input: Input| {
        h.m.handle(h.now, input);
        let mut limits = Vec::new();
        while let Some(action) = h.m.poll_action() {
            if let Action::Send { id, limit, .. } = action {
                limits.push((id, limit));
            }
        }
        limits
    };
    let job = |id: &str| Job {
        id: id.into(),
        payload: Box::new(Payload::Wasip1Request(Default::default())),
        binary: None,
        priority: false,
        immediate: false,
        patient: false,
        resumed: false,
        trace: false,
        cost: 1,
    };
    let long = Input::Submit {
        job: job("long"),
        deadline: h.now + S(30),
    };
    assert_eq!(limits(&mut h, long), [("long".to_owned(), S(3))]);
    let short = Input::Submit {
        job: job("short"),
        deadline: h.now + MS(1500),
    };
    assert_eq!(limits(&mut h, short), []);
    h.now += MS(500);
    let done = Input::Answer {
        id: "long".into(),
        attempt: 1,
        provider: P,
        answer: Answer::Response(Box::new(result(Termination::Exited(0)))),
    };
    assert_eq!(limits(&mut h, done), [("short".to_owned(), S(1))]);
}

#[test]
fn a_provider_that_always_refuses_is_backed_off_and_an_honest_one_is_not_slowed() {
    let mut h = Harness::new(MachineConfig {
        backoff_min: MS(100),
        backoff_max: S(10),
        ..config()
    });
    h.provider(P, 4); // refuses everything
    h.provider(Q, 1); // answers every task after 10 ms
    let mut sends_to_p = 0;
    let mut done = 0;
    let mut running_on_q: Option<(String, u32)> = None;
    for i in 0..1_000 {
        let mut did = h.submit(&format!("t{i}"), S(600));
        did.extend(h.advance(MS(10)));
        if let Some((id, attempt)) = running_on_q.take() {
            did.extend(h.ok(&id, attempt, Q));
        }
        let mut queue = did;
        while let Some(d) = queue.pop() {
            match d {
                Did::Send(p, id, attempt) if p == P => {
                    sends_to_p += 1;
                    let refusal = Answer::Refused(Refusal::Busy { slots: Some(4) });
                    queue.extend(h.answer(&id, attempt, P, refusal));
                }
                Did::Send(_, id, attempt) => running_on_q = Some((id, attempt)),
                Did::Reply(_, Ok(_)) => done += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    // 10 s of virtual time: 4 at first, then probes at 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 s.
    assert!(
        sends_to_p <= 12,
        "{sends_to_p} tasks sent to a refusing provider in 10 s"
    );
    assert!(
        done >= 990,
        "the honest provider finished only {done} of 1000"
    );
    assert_eq!(h.m.stats().retries, 0, "refusals are no failures");
}

#[test]
fn a_refusal_clears_once_a_probe_is_taken() {
    let mut h = Harness::new(MachineConfig {
        backoff_min: MS(100),
        ..config()
    });
    h.provider(P, 2);
    assert_eq!(h.submit("a", S(60)), [send(P, "a", 1)]);
    let busy = Answer::Refused(Refusal::Busy { slots: Some(2) });
    assert_eq!(
        h.answer("a", 1, P, busy),
        [],
        "backed off: not sent again at once"
    );
    h.submit("b", S(60));
    assert_eq!(
        h.advance(MS(100)),
        [send(P, "a", 2)],
        "one probe after the back-off"
    );
    assert_eq!(h.ok("a", 2, P), [reply("a", Ok("ok")), send(P, "b", 1)]);
}

#[test]
fn a_wrong_answer_is_retried_on_another_provider() {
    let mut h = Harness::new(config());
    h.provider(P, 1);
    assert_eq!(h.submit("t", S(30)), [send(P, "t", 1)]);
    h.provider(Q, 1);
    let garbage = Answer::Response(Box::new(Payload::Ping(Default::default())));
    assert_eq!(h.answer("t", 1, P, garbage), [send(Q, "t", 2)]);
    assert_eq!(h.m.stats().retries, 1);
    let error = Answer::Failed("provider exploded".into());
    assert_eq!(h.answer("t", 2, Q, error), [send(P, "t", 3)]);
    let lost = Answer::Lost("connection closed".into());
    match h.answer("t", 3, P, lost).as_slice() {
        [Did::Reply(id, Err(TaskError::ProviderFailed(why)))] => {
            assert_eq!(id, "t");
            assert!(why.contains("after 3 attempts"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_client_cancel_reaches_the_provider_and_holds_the_slot_until_confirmed() {
    let mut h = Harness::new(config());
    h.provider(P, 1);
    assert_eq!(h.submit("t", S(30)), [send(P, "t", 1)]);
    h.submit("u", S(30));
    let gone = Input::Cancel {
        id: "t".into(),
        reason: "client went away".into(),
    };
    assert_eq!(
        h.input(gone),
        [
            cancel(P, "t", 1),
            reply("t", Err(TaskError::Cancelled("client went away".into())))
        ]
    );
    assert_eq!(h.advance(S(1)), [], "u waits: the provider still runs t");
    assert_eq!(h.ack("t", 1, P), [send(P, "u", 1)]);
}

#[test]
fn a_provider_leaving_retries_its_tasks_and_frees_what_it_held() {
    let mut h = Harness::new(config());
    h.provider(P, 2);
    h.submit("a", S(30));
    h.submit("b", S(30));
    h.input(Input::Cancel {
        id: "b".into(),
        reason: "client went away".into(),
    });
    h.provider(Q, 1);
    let left = Input::ProviderLeft {
        id: P,
        reason: "connection closed".into(),
    };
    assert_eq!(h.input(left), [send(Q, "a", 2)]);
    assert_eq!(h.m.reserved(P), None);
    // Late reports from the gone provider are ignored.
    assert_eq!(h.ok("a", 1, P), []);
    assert_eq!(h.ack("b", 1, P), []);
}

#[test]
fn a_patient_task_waits_for_a_provider_until_its_deadline() {
    let mut h = Harness::new(MachineConfig {
        provider_wait: S(30),
        attempt_timeout: S(600),
        ..config()
    });
    assert_eq!(h.submit_patient("by-id", S(300)), []);
    assert_eq!(h.submit("held", S(300)), []);
    // The impatient one fails after the provider wait; the patient one goes on waiting.
    match h.advance(S(30)).as_slice() {
        [Did::Reply(id, Err(TaskError::Unavailable(_)))] => assert_eq!(id, "held"),
        other => panic!("{other:?}"),
    }
    assert_eq!(h.advance(S(200)), []);
    // A provider after 230 s: it runs.
    assert_eq!(h.provider(P, 1), [send(P, "by-id", 1)]);
    // With none again until its deadline, it ends there, not before.
    let mut h = Harness::new(MachineConfig {
        provider_wait: S(30),
        attempt_timeout: S(600),
        ..config()
    });
    h.submit_patient("late", S(100));
    assert_eq!(h.advance(S(99)), []);
    match h.advance(S(1)).as_slice() {
        [Did::Reply(id, Err(TaskError::DeadlineExceeded(_)))] => assert_eq!(id, "late"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn with_no_provider_a_task_fails_unavailable_after_the_provider_wait() {
    let mut h = Harness::new(MachineConfig {
        provider_wait: S(30),
        attempt_timeout: S(600),
        ..config()
    });
    assert_eq!(h.submit("a", S(600)), []);
    assert_eq!(h.advance(S(29)), []);
    match h.advance(S(1)).as_slice() {
        [Did::Reply(id, Err(TaskError::Unavailable(why)))] => {
            assert_eq!(id, "a");
            assert!(why.contains("no provider"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    // A provider in time: the task waits its turn however long that is.
    h.submit("b", S(600));
    h.advance(S(20));
    h.provider(P, 1);
    h.submit("c", S(600));
    assert_eq!(h.advance(S(60)), []);
    // The last provider leaves: the waiting task's clock starts again.
    let left = Input::ProviderLeft {
        id: P,
        reason: "gone".into(),
    };
    assert_eq!(h.input(left), []);
    let did = h.advance(S(30));
    assert_eq!(did.len(), 2, "b (retried) and c fail: {did:?}");
    assert!(
        did.iter()
            .all(|d| matches!(d, Did::Reply(_, Err(TaskError::Unavailable(_)))))
    );
}

#[test]
fn immediate_tasks_fail_fast_without_a_slot() {
    let mut h = Harness::new(config());
    match h.submit_job("t", S(30), true).as_slice() {
        [Did::Reply(_, Err(TaskError::Unavailable(_)))] => {}
        other => panic!("{other:?}"),
    }
    h.provider(P, 1);
    assert_eq!(h.submit_job("u", S(30), true), [send(P, "u", 1)]);
    let busy = Answer::Refused(Refusal::Busy { slots: Some(1) });
    match h.answer("u", 1, P, busy).as_slice() {
        [Did::Reply(_, Err(TaskError::Unavailable(why)))] => assert!(why.contains("refused")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn slots_never_exceed_what_the_provider_advertises() {
    let mut h = Harness::new(config());
    h.provider(P, 3);
    for i in 0..5 {
        h.submit(&format!("t{i}"), S(30));
    }
    assert_eq!(h.m.reserved(P), Some(3));
    h.input(Input::Resources {
        id: P,
        concurrency: 1,
    });
    assert_eq!(h.ok("t0", 1, P), [reply("t0", Ok("ok"))]);
    assert_eq!(h.ok("t1", 1, P), [reply("t1", Ok("ok"))]);
    assert_eq!(h.ok("t2", 1, P), [reply("t2", Ok("ok")), send(P, "t3", 1)]);
    assert_eq!(h.m.reserved(P), Some(1));
}

#[test]
fn a_full_queue_refuses_and_shutdown_answers_everyone() {
    let mut h = Harness::new(MachineConfig {
        max_queue: 1,
        ..config()
    });
    assert_eq!(h.submit("a", S(30)), []);
    assert_eq!(
        h.submit("b", S(30)),
        [reply("b", Err(TaskError::QueueFull(1)))]
    );
    h.provider(P, 1);
    assert_eq!(
        h.input(Input::Shutdown),
        [cancel(P, "a", 1), reply("a", Err(TaskError::ShuttingDown))]
    );
    assert_eq!(
        h.submit("c", S(30)),
        [reply("c", Err(TaskError::ShuttingDown))]
    );
}

#[test]
fn the_byte_budget_refuses_until_a_task_is_answered() {
    let mut h = Harness::new(MachineConfig {
        max_bytes: 1000,
        ..config()
    });
    let costly = |h: &mut Harness, id: &str, cost: usize, immediate: bool| {
        h.submit_costly(id, S(30), immediate, cost)
    };
    assert_eq!(costly(&mut h, "a", 600, false), []);
    // Over the budget with what is held: retry later; immediate tasks count too.
    for immediate in [false, true] {
        assert_eq!(
            costly(&mut h, "b", 401, immediate),
            [reply(
                "b",
                Err(TaskError::QueueBytesFull {
                    held: 600,
                    limit: 1000
                })
            )]
        );
    }
    // Larger than the whole budget: never.
    match costly(&mut h, "huge", 1001, false).as_slice() {
        [Did::Reply(id, Err(TaskError::InvalidArgument(why)))] => {
            assert_eq!(id, "huge");
            assert!(why.contains("max_queue_bytes"), "{why}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(costly(&mut h, "c", 400, false), []);
    assert_eq!(h.m.held_bytes(), 1000);
    h.provider(P, 2);
    assert_eq!(h.ok("a", 1, P), [reply("a", Ok("ok"))]);
    // The answered task's bytes are free again.
    assert_eq!(h.m.held_bytes(), 400);
    assert_eq!(costly(&mut h, "d", 600, false), [send(P, "d", 1)]);
    h.m.check();
}

/// The reply carries the time the task waited for a provider and the time its answering attempt
/// ran, in machine time; a failed attempt is reported with its provider.
#[test]
fn reply_carries_queue_wait_run_time_and_failed_attempts() {
    let mut h = Harness::new(MachineConfig::default());
    assert!(h.submit("t", Duration::from_secs(60)).is_empty());
    h.advance(Duration::from_millis(300));
    assert_eq!(h.provider(P, 1), vec![send(P, "t", 1)]);
    h.advance(Duration::from_millis(200));
    // The first attempt fails through the provider's fault: reported, then retried on Q.
    h.provider(Q, 1);
    h.m.handle(
        h.now,
        Input::Answer {
            id: "t".into(),
            attempt: 1,
            provider: P,
            answer: Answer::Failed("boom".into()),
        },
    );
    let mut failed = Vec::new();
    let mut sent = Vec::new();
    while let Some(action) = h.m.poll_action() {
        match action {
            Action::AttemptFailed {
                provider,
                id,
                reason,
            } => failed.push((provider, id, reason)),
            Action::Send { provider, .. } => sent.push(provider),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].0, failed[0].1.as_str()), (P, "t"));
    assert!(failed[0].2.contains("boom"), "{}", failed[0].2);
    assert_eq!(sent, vec![Q]);
    h.advance(Duration::from_millis(700));
    h.m.handle(
        h.now,
        Input::Answer {
            id: "t".into(),
            attempt: 2,
            provider: Q,
            answer: Answer::Response(Box::new(result(Termination::Exited(0)))),
        },
    );
    match h.m.poll_action() {
        Some(Action::Reply {
            provider,
            elapsed,
            waited,
            ran,
            attempts,
            ..
        }) => {
            assert_eq!(provider, Some(Q));
            assert_eq!(elapsed, Duration::from_millis(1200));
            // Queued 300 ms, ran 200 ms on P, then started on Q at once.
            assert_eq!(waited, Duration::from_millis(500));
            assert_eq!(ran, Some(Duration::from_millis(700)));
            assert_eq!(attempts, 2);
        }
        other => panic!("expected the reply, got {other:?}"),
    }
}

/// A task that never starts reports its whole life as queue wait and no run time.
#[test]
fn reply_of_a_task_that_never_ran() {
    let mut h = Harness::new(MachineConfig::default());
    h.submit("t", Duration::from_secs(1));
    h.m.handle(
        h.now + Duration::from_millis(400),
        Input::Cancel {
            id: "t".into(),
            reason: "client went away".into(),
        },
    );
    match h.m.poll_action() {
        Some(Action::Reply {
            waited,
            ran,
            attempts,
            ..
        }) => {
            assert_eq!(waited, Duration::from_millis(400));
            assert_eq!(ran, None);
            assert_eq!(attempts, 0);
        }
        other => panic!("expected the reply, got {other:?}"),
    }
}

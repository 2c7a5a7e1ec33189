//! Deterministic simulation of the dispatcher's machine in virtual time.
//!
//! Seeded random runs: providers join, leave, die mid-task, answer late, refuse, answer
//! garbage, ignore cancels, cancel by task id only (as the original TypeScript provider does)
//! and ignore time limits (as the original does); clients submit tasks with deadlines of every
//! length, some immediate, some priority, and cancel some. Every message travels with a
//! random latency, in order per connection, as over a WebSocket. After every step the
//! invariants of `machine.rs` are checked against what the providers and clients saw.
//!
//! A failing run prints its seed; `WASIMOFF_SIM_SEED=<seed> cargo test -p wasimoff-broker
//! dispatch::sim` replays it alone (with `WASIMOFF_SIM_TASKS=<n>` for its size).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use wasimoff_core::envelope::Payload;
use wasimoff_core::executor::Termination;
use wasimoff_core::proto::task::{self, wasip1};
use wasimoff_core::remote::Refusal;
use wasimoff_core::scheduler::{LocalityScheduler, ProviderId, RoundRobinScheduler, Scheduler};

use super::machine::{Action, Answer, Input, Job, Machine, MachineConfig};
use crate::error::TaskError;

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// How one simulated provider behaves.
#[derive(Clone, Debug)]
struct Traits {
    capacity: u32,
    /// Refuses every task ("unavailable: busy").
    refuses_always: bool,
    /// Chance to refuse a task (honestly busy or not).
    refuse: f64,
    /// Chance to answer with an error envelope, garbage payload or protocol error.
    garbage: f64,
    /// Chance to never answer a task (wedged), holding its slot.
    hang: f64,
    /// Never acknowledges nor obeys cancels (the task runs to its end and answers).
    ignores_cancels: bool,
    /// Runs guests past their time limit (the original ignores QoS deadlines).
    ignores_limits: bool,
    /// Answers the cancelled request before the cancel echo (ours), or in random order.
    answer_before_echo: bool,
}

/// An attempt a provider holds.
#[derive(Clone, Debug)]
struct Held {
    id: String,
    attempt: u32,
    /// Killed by a cancel: it stops answering normally.
    killed: bool,
    /// Hanging: never answers.
    hung: bool,
}

#[derive(Debug)]
struct SimProvider {
    traits: Traits,
    alive: bool,
    joined_at: Instant,
    left_at: Option<Instant>,
    /// Attempts running here, in arrival order (a cancel kills the first with its id).
    held: Vec<Held>,
    /// Time the machine learned the current capacity.
    capacity_known: Option<Instant>,
    /// Deliveries on the link to the broker and from it, for FIFO order.
    up_free: Instant,
    down_free: Instant,
    sends: u64,
    /// The machine was told the provider left (answers after that are ignored, rightly).
    left_seen: bool,
}

/// What the broker side knows about a task, to check the machine's actions against.
#[derive(Debug)]
struct SimTask {
    submitted: Instant,
    deadline: Instant,
    immediate: bool,
    /// Waits for providers until its deadline (submitted by id).
    patient: bool,
    /// Admitted before a restart: never refused for the queue's count.
    resumed: bool,
    /// Guest run time (None: forever).
    run: Option<Duration>,
    replied: bool,
    /// Counted attempts (sends minus refusals), per the machine's rule.
    counted: u32,
    sends: u32,
    last: Option<LastSend>,
    /// Attempts cancelled: (provider, attempt).
    cancelled: HashSet<(ProviderId, u32)>,
    /// The client cancelled (so the reply is `canceled`).
    client_cancelled: bool,
    /// A proper result reached the machine: it must be the reply, at once.
    result_delivered: bool,
}

#[derive(Debug, Clone, Copy)]
struct LastSend {
    provider: ProviderId,
    attempt: u32,
    at: Instant,
    limit: Duration,
    /// The machine has seen how this attempt ended (an answer or the provider leaving).
    ended: bool,
}

#[derive(Debug)]
enum Event {
    /// Deliver to the machine.
    ToMachine(Input),
    /// A task request arrives at a provider.
    TaskArrives {
        provider: ProviderId,
        id: String,
        attempt: u32,
        limit: Duration,
        sent_at: Instant,
    },
    /// A cancel arrives at a provider.
    CancelArrives {
        provider: ProviderId,
        id: String,
        attempt: u32,
    },
    /// A guest ends on a provider (normally or at its limit).
    GuestEnds {
        provider: ProviderId,
        id: String,
        attempt: u32,
        termination: Termination,
    },
    /// A killed attempt's late answer and the cancel's echo leave the provider.
    CancelDone {
        provider: ProviderId,
        id: String,
        attempt: u32,
    },
    Submit,
    ProviderJoins,
    ProviderDies(ProviderId),
    ClientCancels(String),
}

struct Sim {
    rng: Rng,
    seed: u64,
    now: Instant,
    start: Instant,
    config: MachineConfig,
    machine: Machine,
    events: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    providers: HashMap<ProviderId, SimProvider>,
    next_provider: u64,
    tasks: HashMap<String, SimTask>,
    next_task: u64,
    tasks_total: u64,
    submitted: u64,
    replies: HashMap<&'static str, u64>,
    steps: u64,
    /// `WASIMOFF_SIM_TRACE=<task id>`: print what happens to that task.
    trace: Option<String>,
}

fn response(id: &str, result: wasip1::response::Result) -> Payload {
    Payload::Wasip1Response(wasip1::Response {
        info: Some(task::Metadata {
            id: Some(id.to_owned()),
            ..Default::default()
        }),
        result: Some(result),
        error_output: None,
    })
}

fn output(termination: &Termination) -> wasip1::response::Result {
    wasimoff_core::executor::ExecOutput {
        termination: termination.clone(),
        stdout: Default::default(),
        stderr: Default::default(),
        stdout_truncated: false,
        stderr_truncated: false,
        artifacts: None,
        error: None,
    }
    .into_wasip1_parts()
    .0
}

impl Sim {
    fn new(seed: u64, tasks_total: u64) -> Sim {
        let mut rng = Rng::new(seed);
        let config = MachineConfig {
            max_queue: [50, 1_000, 100_000][rng.below(3) as usize],
            max_bytes: [1 << 20, 64 << 20, 1 << 30][rng.below(3) as usize],
            max_attempts: 1 + rng.below(4) as u32,
            attempt_timeout: [
                rng.millis(5, 200),
                rng.millis(500, 5_000),
                Duration::from_secs(300),
            ][rng.below(3) as usize],
            attempt_grace: [Duration::ZERO, rng.millis(1, 100), rng.millis(500, 5_000)]
                [rng.below(3) as usize],
            backoff_min: rng.millis(10, 200),
            backoff_max: rng.millis(1_000, 10_000),
            max_provider_slots: 64,
            provider_wait: [rng.millis(50, 500), rng.millis(1_000, 30_000)][rng.below(2) as usize],
        };
        let scheduler: Box<dyn Scheduler> = if rng.chance(0.5) {
            Box::new(LocalityScheduler::default())
        } else {
            Box::new(RoundRobinScheduler::default())
        };
        let start = Instant::now();
        Sim {
            rng,
            seed,
            now: start,
            start,
            machine: Machine::new(scheduler, config.clone()),
            config,
            events: BTreeMap::new(),
            seq: 0,
            providers: HashMap::new(),
            next_provider: 0,
            tasks: HashMap::new(),
            next_task: 0,
            tasks_total,
            submitted: 0,
            replies: HashMap::new(),
            steps: 0,
            trace: std::env::var("WASIMOFF_SIM_TRACE").ok(),
        }
    }

    fn at(&mut self, at: Instant, event: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    fn latency(&mut self) -> Duration {
        match self.rng.below(10) {
            0 => Duration::ZERO,
            1..=7 => Duration::from_micros(100 + self.rng.below(2_000)),
            _ => self.rng.millis(5, 80),
        }
    }

    /// Provider -> machine, in order per link.
    fn up(&mut self, provider: ProviderId, input: Input) {
        let latency = self.latency();
        let Some(p) = self.providers.get_mut(&provider) else {
            return;
        };
        if !p.alive {
            return;
        }
        let at = (self.now + latency).max(p.up_free);
        p.up_free = at;
        self.at(at, Event::ToMachine(input));
    }

    /// Machine -> provider, in order per link; dropped if the provider is gone.
    fn down(&mut self, provider: ProviderId, event: Event) {
        let latency = self.latency();
        let Some(p) = self.providers.get_mut(&provider) else {
            return;
        };
        let at = (self.now + latency).max(p.down_free);
        p.down_free = at;
        self.at(at, event);
    }

    fn run(mut self) -> String {
        for _ in 0..1 + self.rng.below(4) {
            self.at(self.now, Event::ProviderJoins);
        }
        self.at(self.now, Event::Submit);
        self.at(self.now + Duration::from_secs(1), Event::ProviderJoins);
        loop {
            let next_event = self.events.keys().next().map(|(at, _)| *at);
            let next_timer = self.machine.poll_timeout();
            match (next_event, next_timer) {
                (None, None) => break,
                // Due timers first, as the machine itself takes them before any input.
                (Some(e), Some(t)) if t <= e => self.timer(t),
                (None, Some(t)) => self.timer(t),
                (Some(_), _) => {
                    let Some(((at, _), event)) = self.events.pop_first() else {
                        break;
                    };
                    assert!(at >= self.now, "time went backwards");
                    self.now = at;
                    self.event(event);
                }
            }
            self.steps += 1;
            self.actions();
            if self.steps.is_multiple_of(97) {
                self.machine.check();
            }
            if self.submitted >= self.tasks_total && self.tasks.is_empty() {
                break;
            }
        }
        self.machine.check();
        self.finish()
    }

    fn timer(&mut self, at: Instant) {
        assert!(at >= self.now, "a timer in the past");
        self.now = at;
        self.machine.handle_timeout(at);
    }

    fn event(&mut self, event: Event) {
        if !matches!(event, Event::ToMachine(_)) {
            self.traced(&event);
        }
        match event {
            Event::ToMachine(input) => self.deliver(input),
            Event::Submit => self.submit(),
            Event::ProviderJoins => self.join(),
            Event::ProviderDies(id) => self.die(id),
            Event::ClientCancels(id) => {
                if let Some(t) = self.tasks.get_mut(&id)
                    && !t.replied
                {
                    t.client_cancelled = true;
                    self.machine.handle(
                        self.now,
                        Input::Cancel {
                            id,
                            reason: "client went away".into(),
                        },
                    );
                }
            }
            Event::TaskArrives {
                provider,
                id,
                attempt,
                limit,
                sent_at,
            } => self.task_arrives(provider, id, attempt, limit, sent_at),
            Event::CancelArrives {
                provider,
                id,
                attempt,
            } => self.cancel_arrives(provider, &id, attempt),
            Event::GuestEnds {
                provider,
                id,
                attempt,
                termination,
            } => self.guest_ends(provider, &id, attempt, termination),
            Event::CancelDone {
                provider,
                id,
                attempt,
            } => self.cancel_done(provider, id, attempt),
        }
    }

    fn traced(&self, what: &dyn std::fmt::Debug) {
        if let Some(id) = &self.trace {
            let text = format!("{what:?}");
            if text.contains(&format!("\"{id}\"")) {
                eprintln!("{:>12?} {text}", self.now - self.start);
            }
        }
    }

    fn deliver(&mut self, input: Input) {
        self.traced(&input);
        // What the machine learns, for the checks of later sends.
        match &input {
            Input::Answer {
                id,
                attempt,
                provider,
                answer,
            } => {
                let gone = self.providers.get(provider).is_none_or(|p| p.left_seen);
                if !gone
                    && let Some(t) = self.tasks.get_mut(id)
                    && let Some(last) = t.last.as_mut()
                    && last.attempt == *attempt
                    && last.provider == *provider
                    && !t.cancelled.contains(&(*provider, *attempt))
                {
                    // (A cancelled attempt's late answer only frees its slot.)
                    last.ended = true;
                    match answer {
                        Answer::Refused(_) => t.counted -= 1,
                        // (At the deadline itself the deadline wins.)
                        Answer::Response(payload)
                            if matches!(**payload, Payload::Wasip1Response(_))
                                && self.now < t.deadline =>
                        {
                            t.result_delivered = true;
                        }
                        _ => {}
                    }
                }
            }
            Input::ProviderLeft { id, .. } => {
                if let Some(p) = self.providers.get_mut(id) {
                    p.left_seen = true;
                }
                for t in self.tasks.values_mut() {
                    if let Some(last) = t.last.as_mut()
                        && last.provider == *id
                    {
                        last.ended = true;
                    }
                }
            }
            Input::Resources { id, .. } => {
                let now = self.now;
                if let Some(p) = self.providers.get_mut(id) {
                    p.capacity_known = Some(now);
                }
            }
            _ => {}
        }
        self.machine.handle(self.now, input);
    }

    fn submit(&mut self) {
        if self.submitted >= self.tasks_total {
            return;
        }
        self.submitted += 1;
        self.next_task += 1;
        let id = format!("t{}", self.next_task);
        let rng = &mut self.rng;
        let deadline = match rng.below(10) {
            0 => rng.millis(1, 20),
            1..=3 => rng.millis(20, 500),
            4..=7 => rng.millis(500, 5_000),
            8 => rng.millis(5_000, 60_000),
            _ => Duration::from_secs(600),
        };
        let run = match rng.below(20) {
            0 => None,
            1 => Some(rng.millis(1_000, 30_000)),
            2..=5 => Some(rng.millis(50, 1_000)),
            _ => Some(rng.millis(0, 50)),
        };
        let immediate = rng.chance(0.05);
        let patient = rng.chance(0.2);
        let resumed = rng.chance(0.02);
        let priority = rng.chance(0.1);
        let binary = format!("sha256:{:064x}", rng.below(4));
        let job = Job {
            id: id.clone(),
            payload: Box::new(Payload::Wasip1Request(wasip1::Request::default())),
            binary: Some(binary),
            priority,
            immediate,
            patient,
            resumed,
            trace: rng.chance(0.05),
            cost: rng.below(64 << 10) as usize + 1,
        };
        let deadline = self.now + deadline;
        self.tasks.insert(
            id.clone(),
            SimTask {
                submitted: self.now,
                deadline,
                immediate,
                patient,
                resumed,
                run,
                replied: false,
                counted: 0,
                sends: 0,
                last: None,
                cancelled: HashSet::new(),
                client_cancelled: false,
                result_delivered: false,
            },
        );
        if self.rng.chance(0.03) {
            let at = self.now + self.rng.millis(0, 2_000);
            self.at(at, Event::ClientCancels(id));
        }
        self.machine
            .handle(self.now, Input::Submit { job, deadline });
        // Bursts and lulls: mostly busy, sometimes idle.
        let gap = match self.rng.below(100) {
            0 => self.rng.millis(1_000, 20_000),
            1..=30 => Duration::ZERO,
            _ => Duration::from_micros(self.rng.below(4_000)),
        };
        self.at(self.now + gap, Event::Submit);
    }

    fn join(&mut self) {
        let rng = &mut self.rng;
        let hostile = rng.chance(0.3);
        let traits = Traits {
            capacity: 1 + rng.below(8) as u32,
            refuses_always: hostile && rng.chance(0.2),
            refuse: if rng.chance(0.2) { 0.1 } else { 0.0 },
            garbage: if hostile && rng.chance(0.4) { 0.2 } else { 0.0 },
            hang: if hostile && rng.chance(0.3) { 0.1 } else { 0.0 },
            ignores_cancels: hostile && rng.chance(0.3),
            ignores_limits: rng.chance(0.3),
            answer_before_echo: rng.chance(0.5),
        };
        self.next_provider += 1;
        let id = ProviderId(self.next_provider);
        let capacity = traits.capacity;
        self.providers.insert(
            id,
            SimProvider {
                traits,
                alive: true,
                joined_at: self.now,
                left_at: None,
                held: Vec::new(),
                capacity_known: None,
                up_free: self.now,
                down_free: self.now,
                sends: 0,
                left_seen: false,
            },
        );
        self.machine.handle(
            self.now,
            Input::ProviderJoined {
                id,
                name: format!("p{}", id.0),
                files: vec![format!("sha256:{:064x}", self.rng.below(4))],
            },
        );
        self.up(
            id,
            Input::Resources {
                id,
                concurrency: capacity,
            },
        );
        // Lifetimes from seconds to forever; another provider follows.
        if self.rng.chance(0.6) {
            let at = self.now + self.rng.millis(500, 60_000);
            self.at(at, Event::ProviderDies(id));
        }
        if self.submitted < self.tasks_total {
            let at = self.now + self.rng.millis(100, 20_000);
            self.at(at, Event::ProviderJoins);
        }
    }

    fn die(&mut self, id: ProviderId) {
        let now = self.now;
        let Some(p) = self.providers.get_mut(&id) else {
            return;
        };
        if !p.alive {
            return;
        }
        // The connection drops: pending calls fail, then the session reports the provider gone
        // (either may reach the dispatcher first).
        let held = std::mem::take(&mut p.held);
        let up_free = p.up_free;
        p.alive = false;
        p.left_at = Some(now);
        let mut at = up_free.max(now);
        for h in held {
            at += Duration::from_micros(self.rng.below(200));
            let input = Input::Answer {
                id: h.id,
                attempt: h.attempt,
                provider: id,
                answer: Answer::Lost("connection closed".into()),
            };
            self.at(at, Event::ToMachine(input));
        }
        let left = (now + self.rng.millis(0, 30)).max(if self.rng.chance(0.5) { at } else { now });
        let input = Input::ProviderLeft {
            id,
            reason: "connection closed".into(),
        };
        self.at(left, Event::ToMachine(input));
    }

    fn task_arrives(
        &mut self,
        provider: ProviderId,
        id: String,
        attempt: u32,
        limit: Duration,
        sent_at: Instant,
    ) {
        let now = self.now;
        let seed = self.seed;
        let Some(p) = self.providers.get_mut(&provider) else {
            return;
        };
        if !p.alive {
            return;
        }
        // A provider that kills by id would now kill the wrong attempt on the next cancel.
        assert!(
            !p.held.iter().any(|h| h.id == id && !h.killed),
            "seed {seed}: {id} attempt {attempt} sent to {provider} while an earlier attempt still runs there"
        );
        let running = p.held.len() as u32;
        if p.capacity_known.is_some_and(|t| t <= sent_at) {
            assert!(
                running < p.traits.capacity,
                "seed {seed}: {provider} got {id} with all {} slots taken",
                p.traits.capacity
            );
        }
        let t = p.traits.clone();
        // Refused or answered with garbage at once, or taken.
        let quick = if t.refuses_always || self.rng.chance(t.refuse) {
            Some(Answer::Refused(Refusal::Busy {
                slots: Some(t.capacity),
            }))
        } else if self.rng.chance(t.garbage) {
            Some(match self.rng.below(3) {
                0 => Answer::Failed("something broke".into()),
                1 => Answer::Malformed("undecodable payload".into()),
                _ => Answer::Response(Box::new(Payload::Ping(Default::default()))),
            })
        } else {
            None
        };
        if let Some(answer) = quick {
            let input = Input::Answer {
                id,
                attempt,
                provider,
                answer,
            };
            self.up(provider, input);
            return;
        }
        let hung = self.rng.chance(t.hang);
        let run = self.tasks.get(&id).and_then(|t| t.run);
        let p = self.providers.get_mut(&provider).expect("looked up above");
        p.held.push(Held {
            id: id.clone(),
            attempt,
            killed: false,
            hung,
        });
        if hung {
            return;
        }
        // The guest runs to its end, or to its limit where the provider enforces one.
        let ends = match (run, t.ignores_limits) {
            (Some(run), true) => Some((run, Termination::Exited(0))),
            (Some(run), false) if run <= limit => Some((run, Termination::Exited(0))),
            (_, false) => Some((limit, Termination::TimedOut(limit))),
            (None, true) => None, // runs forever: only a cancel or death ends it
        };
        if let Some((after, termination)) = ends {
            self.at(
                now + after,
                Event::GuestEnds {
                    provider,
                    id,
                    attempt,
                    termination,
                },
            );
        }
    }

    fn guest_ends(
        &mut self,
        provider: ProviderId,
        id: &str,
        attempt: u32,
        termination: Termination,
    ) {
        let Some(p) = self.providers.get_mut(&provider) else {
            return;
        };
        let Some(at) = p
            .held
            .iter()
            .position(|h| h.id == id && h.attempt == attempt && !h.killed)
        else {
            return; // killed or lost meanwhile
        };
        p.held.remove(at);
        let answer = Answer::Response(Box::new(response(id, output(&termination))));
        self.up(
            provider,
            Input::Answer {
                id: id.to_owned(),
                attempt,
                provider,
                answer,
            },
        );
    }

    fn cancel_arrives(&mut self, provider: ProviderId, id: &str, attempt: u32) {
        let seed = self.seed;
        let Some(p) = self.providers.get_mut(&provider) else {
            return;
        };
        if !p.alive || p.traits.ignores_cancels {
            return;
        }
        // Like the original: the first attempt running with that id is killed.
        let killed = p.held.iter_mut().find(|h| h.id == id && !h.killed);
        match killed {
            Some(h) => {
                assert_eq!(
                    h.attempt, attempt,
                    "seed {seed}: the cancel of {id} attempt {attempt} on {provider} hit another attempt"
                );
                h.killed = true;
                let stop = self.rng.millis(0, 20);
                let at = self.now + stop;
                self.at(
                    at,
                    Event::CancelDone {
                        provider,
                        id: id.to_owned(),
                        attempt,
                    },
                );
            }
            None => {
                // Not running (it ended meanwhile): echo at once.
                self.up(
                    provider,
                    Input::CancelAcked {
                        id: id.to_owned(),
                        attempt,
                        provider,
                    },
                );
            }
        }
    }

    fn cancel_done(&mut self, provider: ProviderId, id: String, attempt: u32) {
        let Some(p) = self.providers.get_mut(&provider) else {
            return;
        };
        let Some(at) = p
            .held
            .iter()
            .position(|h| h.id == id && h.attempt == attempt && h.killed)
        else {
            return;
        };
        let hung = p.held[at].hung;
        p.held.remove(at);
        let before = p.traits.answer_before_echo || self.rng.chance(0.5);
        let late = Input::Answer {
            id: id.clone(),
            attempt,
            provider,
            answer: if hung {
                Answer::Failed("cancelled".into())
            } else {
                Answer::Response(Box::new(response(&id, output(&Termination::Cancelled))))
            },
        };
        let echo = Input::CancelAcked {
            id,
            attempt,
            provider,
        };
        if before {
            self.up(provider, late);
            self.up(provider, echo);
        } else {
            self.up(provider, echo);
            self.up(provider, late);
        }
    }

    /// Performs and checks the machine's actions.
    fn actions(&mut self) {
        let seed = self.seed;
        let now = self.now;
        while let Some(action) = self.machine.poll_action() {
            self.traced(&action);
            match action {
                Action::Send {
                    provider,
                    id,
                    attempt,
                    limit,
                    ..
                } => {
                    let max_attempts = self.config.max_attempts;
                    let grace = self.config.attempt_grace;
                    let t = self.tasks.get_mut(&id).expect("a send for an unknown task");
                    assert!(!t.replied, "seed {seed}: {id} sent after its reply");
                    assert!(
                        now < t.deadline,
                        "seed {seed}: {id} sent at or after its deadline"
                    );
                    assert!(
                        limit <= t.deadline - now && limit <= self.config.attempt_timeout,
                        "seed {seed}: {id} sent with a limit past its deadline"
                    );
                    assert!(
                        !t.result_delivered,
                        "seed {seed}: {id} retried after a result"
                    );
                    if let Some(last) = t.last {
                        // A retry only after the machine saw the last attempt end, or after it
                        // went unanswered past its limit and grace (wedged).
                        let wedged = now >= last.at + last.limit + grace;
                        assert!(
                            last.ended
                                || wedged
                                || t.cancelled.contains(&(last.provider, last.attempt)),
                            "seed {seed}: {id} attempt {attempt} sent while attempt {} still runs",
                            last.attempt
                        );
                        assert!(attempt > last.attempt, "seed {seed}: attempt numbers go up");
                    }
                    t.sends += 1;
                    t.counted += 1;
                    assert!(
                        t.counted <= max_attempts,
                        "seed {seed}: {id} tried more than {max_attempts} times"
                    );
                    t.last = Some(LastSend {
                        provider,
                        attempt,
                        at: now,
                        limit,
                        ended: false,
                    });
                    let reserved = self.machine.reserved(provider).unwrap_or(0);
                    let p = self
                        .providers
                        .get_mut(&provider)
                        .expect("a send to an unknown provider");
                    assert!(
                        p.left_at.is_none_or(|left| left <= now),
                        "unreachable: providers do not come back"
                    );
                    assert!(
                        reserved <= p.traits.capacity.min(self.config.max_provider_slots),
                        "seed {seed}: {provider} has {reserved} slots reserved of {}",
                        p.traits.capacity
                    );
                    p.sends += 1;
                    self.down(
                        provider,
                        Event::TaskArrives {
                            provider,
                            id,
                            attempt,
                            limit,
                            sent_at: now,
                        },
                    );
                }
                Action::Cancel {
                    provider,
                    id,
                    attempt,
                    ..
                } => {
                    if let Some(t) = self.tasks.get_mut(&id) {
                        assert!(
                            t.cancelled.insert((provider, attempt)),
                            "seed {seed}: {id} attempt {attempt} cancelled twice"
                        );
                        if let Some(last) = t.last.as_mut()
                            && last.attempt == attempt
                        {
                            last.ended = true;
                        }
                    }
                    self.down(
                        provider,
                        Event::CancelArrives {
                            provider,
                            id,
                            attempt,
                        },
                    );
                }
                Action::AttemptFailed { provider, id, .. } => {
                    assert!(
                        self.tasks.contains_key(&id),
                        "seed {seed}: a failed attempt of {id} on {provider}, a task not running"
                    );
                }
                Action::Reply { id, result, .. } => {
                    let t = self
                        .tasks
                        .remove(&id)
                        .expect("a reply for an unknown or answered task");
                    assert!(!t.replied);
                    assert!(
                        now <= t.deadline,
                        "seed {seed}: {id} answered after its deadline"
                    );
                    let kind = match &result {
                        Ok(Payload::Wasip1Response(r)) => match &r.result {
                            Some(wasip1::response::Result::Ok(_)) => "ok",
                            _ => "result error",
                        },
                        Ok(_) => panic!("seed {seed}: {id} answered with a wrong payload"),
                        Err(TaskError::DeadlineExceeded(_)) => {
                            assert!(now >= t.deadline, "seed {seed}: {id} timed out early");
                            "deadline"
                        }
                        Err(TaskError::Cancelled(_)) => {
                            assert!(t.client_cancelled, "seed {seed}: {id} cancelled by nobody");
                            "cancelled"
                        }
                        Err(TaskError::Unavailable(_)) if !t.immediate => {
                            assert_eq!(
                                self.machine.advertised_slots(),
                                0,
                                "seed {seed}: {id} unavailable while providers offer slots"
                            );
                            assert!(
                                now >= t.submitted + self.config.provider_wait,
                                "seed {seed}: {id} unavailable before its wait"
                            );
                            assert!(
                                !t.patient,
                                "seed {seed}: {id} waits for providers until its deadline"
                            );
                            "no provider"
                        }
                        Err(TaskError::Unavailable(_)) => "unavailable",
                        Err(TaskError::ProviderFailed(_)) => {
                            assert!(
                                t.counted >= self.config.max_attempts || t.immediate,
                                "seed {seed}: {id} failed after {} of {} attempts",
                                t.counted,
                                self.config.max_attempts
                            );
                            "failed"
                        }
                        Err(TaskError::QueueFull(_)) => {
                            assert!(!t.resumed, "seed {seed}: {id} resumed, yet refused");
                            "queue full"
                        }
                        Err(TaskError::QueueBytesFull { held, limit }) => {
                            assert!(*held <= *limit, "seed {seed}: held {held} > {limit}");
                            "queue bytes full"
                        }
                        Err(e) => panic!("seed {seed}: {id} answered {e}"),
                    };
                    if t.result_delivered {
                        assert!(
                            result.is_ok(),
                            "seed {seed}: {id} lost its result: {result:?} at {:?}, deadline {:?}",
                            now - self.start,
                            t.deadline - self.start
                        );
                    }
                    *self.replies.entry(kind).or_default() += 1;
                }
            }
        }
    }

    fn finish(self) -> String {
        let seed = self.seed;
        assert!(
            self.tasks.is_empty(),
            "seed {seed}: {} tasks never answered",
            self.tasks.len()
        );
        assert_eq!(
            self.machine.tasks(),
            0,
            "seed {seed}: tasks left in the machine"
        );
        // A provider that refuses everything gets a few tasks a second at most.
        for (id, p) in &self.providers {
            if !p.traits.refuses_always {
                continue;
            }
            let life = p.left_at.unwrap_or(self.now) - p.joined_at;
            let allowed = u64::from(p.traits.capacity) + 10 * life.as_secs() + 10;
            assert!(
                p.sends <= allowed,
                "seed {seed}: always-refusing {id} got {} tasks in {life:?}",
                p.sends
            );
        }
        let mut kinds: Vec<_> = self.replies.iter().collect();
        kinds.sort();
        format!(
            "seed {seed}: {} tasks, {} steps, {:?} virtual, replies {kinds:?}, {:?}",
            self.submitted,
            self.steps,
            self.now - self.start,
            self.machine.stats()
        )
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs one seed, and says which seed failed if it does.
fn run_seed(seed: u64, tasks: u64) -> String {
    match std::panic::catch_unwind(|| Sim::new(seed, tasks).run()) {
        Ok(summary) => summary,
        Err(e) => {
            let what = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "simulation failed: {what}\nreplay: WASIMOFF_SIM_SEED={seed} WASIMOFF_SIM_TASKS={tasks} \
                 cargo test -p wasimoff-broker dispatch::sim"
            );
        }
    }
}

#[test]
fn simulation_keeps_every_invariant() {
    let tasks = env_u64("WASIMOFF_SIM_TASKS").unwrap_or(5_000);
    if let Some(seed) = env_u64("WASIMOFF_SIM_SEED") {
        eprintln!("{}", run_seed(seed, tasks));
        return;
    }
    let seeds = env_u64("WASIMOFF_SIM_SEEDS").unwrap_or(20);
    let base = env_u64("WASIMOFF_SIM_BASE").unwrap_or(1);
    let started = Instant::now();
    let mut total = 0;
    for seed in base..base + seeds {
        let summary = run_seed(seed, tasks);
        total += tasks;
        if seed < base + 3 {
            eprintln!("{summary}");
        }
    }
    eprintln!(
        "{seeds} seeds, {total} simulated tasks in {:?}",
        started.elapsed()
    );
}

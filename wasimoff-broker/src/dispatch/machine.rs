//! The dispatcher's decisions as a sans-IO state machine: no tokio, no clock, no channels.
//!
//! The [`Machine`] owns the task queue, the attempts in flight, retries, cancellation,
//! deadlines and the provider books; the [`Scheduler`] it holds only picks where a task goes.
//! Time and events are inputs ([`Machine::handle`], [`Machine::handle_timeout`]), decisions are
//! outputs ([`Machine::poll_action`]) that the shell in `dispatch/mod.rs` performs in the order
//! they come, and [`Machine::poll_timeout`] says when the machine next wants to be woken.
//! Because nothing here reads a clock or spawns, the simulation in `sim.rs` runs it through
//! hundreds of thousands of tasks in virtual time and checks its invariants after every step.
//!
//! Invariants (each is checked by the simulation):
//! - Every submitted task gets exactly one [`Action::Reply`], at the latest at its deadline.
//! - Nothing is sent at or after a task's deadline. When the deadline and an attempt's timer
//!   fall together the deadline wins: one cancel, the client gets `deadline_exceeded`.
//! - A provider's slot is reserved from the moment a task is sent until the provider is known
//!   to have stopped it: its answer arrives, or (after a cancel) the cancel is acknowledged or
//!   the cancelled attempt's late answer arrives, or the provider leaves. So the slots the
//!   scheduler sees free are free on the provider too, and never more than it advertised.
//! - A task is never sent to a provider that may still run the same task id (an attempt
//!   cancelled there and not yet acknowledged), and an [`Action::Cancel`] for a task is always
//!   emitted before any later [`Action::Send`] of that task to that provider.
//! - An attempt's time limit is what is left of the task's deadline, capped by
//!   `attempt_timeout`; the provider enforces it and a guest that runs past it is a *result*.
//!   The machine waits that limit plus `attempt_grace` before it calls the provider wedged.
//! - Retries (counted against `max_attempts`, never twice in a row on the same provider unless
//!   it is the only one) happen only after provider loss, a wedged provider, an error answer
//!   or a malformed answer. A refusal ("unavailable: busy") re-places the task without counting
//!   an attempt, and backs the refusing provider off exponentially (one probe task per
//!   back-off period), so a provider that always refuses gets a few tasks a second at most.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use wasimoff_core::envelope::Payload;
use wasimoff_core::proto::task::trace_event::EventType;
use wasimoff_core::remote::Refusal;
use wasimoff_core::scheduler::{Placement, ProviderId, Scheduler, SchedulerEvent};

use crate::error::{PASSED_AT_SUBMISSION, TaskError};

/// How the `unavailable` error of a task that no provider could take begins (after
/// `provider_wait` with none connected).
pub(crate) const NO_PROVIDER: &str = "no provider connected to run the task";

/// A task as the dispatcher sees it: an opaque request for a provider.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: String,
    /// The `Task.Wasip1.Request` or `Task.Pyodide.Request` to send.
    pub(crate) payload: Box<Payload>,
    /// The module's ref, for locality.
    pub(crate) binary: Option<String>,
    pub(crate) priority: bool,
    pub(crate) immediate: bool,
    /// Waits for a provider until its deadline, however long none is connected, instead of
    /// failing after `provider_wait`: a task submitted by id, whose client is not holding a
    /// connection open for it and which may have been resumed after a restart, while the
    /// providers are still reconnecting.
    pub(crate) patient: bool,
    /// Admitted before a restart of the broker: `max_queue` is not applied again (its byte
    /// cost still is).
    pub(crate) resumed: bool,
    /// The client asked for a trace: record the broker's events.
    pub(crate) trace: bool,
    /// What holding the task costs the broker, in bytes (its decoded request and books).
    pub(crate) cost: usize,
}

/// Settings of the machine.
#[derive(Clone, Debug)]
pub(crate) struct MachineConfig {
    /// Tasks waiting for a provider; more are refused.
    pub(crate) max_queue: usize,
    /// Bytes all unanswered tasks may hold together ([`Job::cost`]); more are refused.
    pub(crate) max_bytes: usize,
    /// Attempts per task (refusals do not count).
    pub(crate) max_attempts: u32,
    /// The longest one attempt may run: the time limit the provider enforces on the guest.
    pub(crate) attempt_timeout: Duration,
    /// How much longer than its limit an attempt may stay unanswered before the provider
    /// counts as wedged.
    pub(crate) attempt_grace: Duration,
    /// The first back-off after a refusal; it doubles with every refused probe.
    pub(crate) backoff_min: Duration,
    /// The longest back-off.
    pub(crate) backoff_max: Duration,
    /// Slots believed of one provider at most, whatever it advertises.
    pub(crate) max_provider_slots: u32,
    /// How long a task waits while no provider offers any slot before it fails `unavailable`.
    pub(crate) provider_wait: Duration,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            max_queue: 100_000,
            max_bytes: 1 << 30,
            max_attempts: 3,
            attempt_timeout: Duration::from_secs(300),
            attempt_grace: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            max_provider_slots: 4096,
            provider_wait: Duration::from_secs(30),
        }
    }
}

/// How a provider answered a task request, as the shell saw it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Answer {
    /// A response payload (whether it is the right kind is the machine's to judge).
    Response(Box<Payload>),
    /// `Envelope.error` with `unavailable:`: the provider did not take the task.
    Refused(Refusal),
    /// Any other `Envelope.error`: the provider took the request and failed it.
    Failed(String),
    /// Not a valid response at all.
    Malformed(String),
    /// The connection ended before an answer came.
    Lost(String),
}

/// What the machine is told.
#[derive(Debug)]
pub(crate) enum Input {
    /// A client submitted a task; it must be answered by `deadline`.
    Submit {
        job: Job,
        deadline: Instant,
    },
    /// The client gave up on a task.
    Cancel {
        id: String,
        reason: String,
    },
    ProviderJoined {
        id: ProviderId,
        name: String,
        files: Vec<String>,
    },
    ProviderLeft {
        id: ProviderId,
        reason: String,
    },
    /// The provider advertised its concurrency.
    Resources {
        id: ProviderId,
        concurrency: u32,
    },
    Files {
        id: ProviderId,
        added: Vec<String>,
        removed: Vec<String>,
    },
    /// A provider answered attempt `attempt` of task `id`.
    Answer {
        id: String,
        attempt: u32,
        provider: ProviderId,
        answer: Answer,
    },
    /// A provider acknowledged the cancel of attempt `attempt` of task `id`: it no longer runs it.
    CancelAcked {
        id: String,
        attempt: u32,
        provider: ProviderId,
    },
    /// Fail everything and take nothing more.
    Shutdown,
}

/// A broker event for the task's trace, at machine time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TraceNote {
    pub(crate) at: Instant,
    pub(crate) event: EventType,
    pub(crate) details: Option<String>,
}

/// What the shell must do, in this order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send attempt `attempt` of task `id` to a provider, telling it the guest may run `limit`.
    Send {
        provider: ProviderId,
        id: String,
        attempt: u32,
        payload: Payload,
        limit: Duration,
        /// The broker's trace events so far (empty unless the client asked for a trace).
        trace: Vec<TraceNote>,
    },
    /// Tell a provider to stop attempt `attempt` of task `id`; report the echo as
    /// [`Input::CancelAcked`].
    Cancel {
        provider: ProviderId,
        id: String,
        attempt: u32,
        reason: String,
    },
    /// Answer the client: exactly once per submitted task.
    Reply {
        id: String,
        result: Result<Payload, TaskError>,
        /// The provider that produced the result.
        provider: Option<ProviderId>,
        /// From submission to this reply.
        elapsed: Duration,
        /// From submission to the start of the task's last attempt (to this reply if it never
        /// started): the time it waited for a provider.
        waited: Duration,
        /// How long the attempt that produced the result ran (sent to answered); `None` without
        /// a provider's result.
        ran: Option<Duration>,
        /// Attempts counted against `max_attempts`.
        attempts: u32,
        /// Trace events since the last send (for the response's trace).
        trace: Vec<TraceNote>,
    },
    /// An attempt failed through its provider's fault (lost, wedged, an error or malformed
    /// answer); for the provider's books in metrics and the operator view. Nothing to perform.
    AttemptFailed {
        provider: ProviderId,
        id: String,
        reason: String,
    },
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stats {
    /// Attempts repeated after a provider failure.
    pub(crate) retries: u64,
    /// Refusals (busy providers).
    pub(crate) refusals: u64,
    /// Providers declared wedged (an attempt unanswered past its limit and grace).
    pub(crate) wedged: u64,
}

#[derive(Debug)]
struct Attempt {
    provider: ProviderId,
    number: u32,
    timer: TimerKey,
    /// When it was sent.
    sent: Instant,
}

#[derive(Debug)]
struct Task {
    job: Job,
    submitted: Instant,
    /// When its last attempt was sent.
    started: Option<Instant>,
    /// How long the attempt that answered with a result ran.
    ran: Option<Duration>,
    deadline: Instant,
    deadline_timer: TimerKey,
    /// Armed while no provider offers a slot.
    starve_timer: Option<TimerKey>,
    /// Attempts counted against `max_attempts`.
    attempts: u32,
    /// Sends so far, refused ones included: the number of the next attempt.
    sends: u32,
    running: Option<Attempt>,
    /// The provider that failed the last attempt.
    exclude: Option<ProviderId>,
    /// Providers where an attempt of this task was cancelled and may still run.
    lingering: Vec<ProviderId>,
    notes: Vec<TraceNote>,
    /// Notes already carried by a sent payload.
    notes_sent: usize,
}

impl Task {
    fn note(&mut self, at: Instant, event: EventType, details: Option<String>) {
        if self.job.trace {
            self.notes.push(TraceNote { at, event, details });
        }
    }
}

/// A provider's circuit breaker against refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breaker {
    /// Takes as many tasks as it advertises.
    Closed,
    /// Refused: nothing is sent until the back-off ends.
    Open,
    /// One probe task may go ([`Provider::probe`]); its answer closes or reopens the breaker.
    HalfOpen,
}

#[derive(Debug)]
struct Provider {
    name: String,
    advertised: u32,
    /// What the scheduler was last told the provider's slots are.
    synced: u32,
    /// Tasks running here (the current attempt of each).
    running: HashSet<String>,
    /// Cancelled attempts not yet known to have stopped: (task id, attempt).
    lingering: HashSet<(String, u32)>,
    breaker: Breaker,
    /// The task sent as the probe while half open (a task has at most one attempt here).
    probe: Option<String>,
    backoff: Duration,
}

impl Provider {
    /// Slots taken: attempts running here, or cancelled and not yet known to have stopped.
    fn reserved(&self) -> u32 {
        (self.running.len() + self.lingering.len()) as u32
    }

    /// The slots the scheduler may fill: all it advertises, none while backed off, one probe.
    fn effective(&self) -> u32 {
        let cap = match (self.breaker, &self.probe) {
            (Breaker::Closed, _) => self.advertised,
            (Breaker::HalfOpen, None) => self.reserved().saturating_add(1),
            (Breaker::Open | Breaker::HalfOpen, _) => self.reserved(),
        };
        cap.min(self.advertised)
    }
}

type TimerKey = (Instant, u64);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Timer {
    Deadline(String),
    Attempt(String, u32),
    Backoff(ProviderId),
    /// A task has waited `provider_wait` since no provider offered a slot.
    NoProvider(String),
}

/// The dispatcher's state machine; see the module docs.
pub(crate) struct Machine {
    config: MachineConfig,
    scheduler: Box<dyn Scheduler>,
    tasks: HashMap<String, Task>,
    providers: HashMap<ProviderId, Provider>,
    /// Ids of queued priority tasks (may hold ids of tasks gone meanwhile).
    high: VecDeque<String>,
    /// Ids of other queued tasks (same).
    low: VecDeque<String>,
    /// Ids of tasks waiting for another attempt (same).
    retry: VecDeque<String>,
    /// Tasks waiting for a provider.
    queued: usize,
    /// Tasks with an attempt on a provider.
    running: usize,
    /// The sum of [`Job::cost`] over unanswered tasks.
    held_bytes: usize,
    /// The sum of the slots providers advertise.
    advertised: u64,
    timers: BTreeMap<TimerKey, Timer>,
    timer_seq: u64,
    actions: VecDeque<Action>,
    stats: Stats,
    shutting_down: bool,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("scheduler", &self.scheduler.name())
            .field("tasks", &self.tasks.len())
            .field("providers", &self.providers.len())
            .field("queued", &self.queued)
            .field("running", &self.running)
            .finish()
    }
}

/// Whether `response` is the kind of answer `request` wants.
fn answers(request: &Payload, response: &Payload) -> bool {
    matches!(
        (request, response),
        (Payload::Wasip1Request(_), Payload::Wasip1Response(_))
            | (Payload::PyodideRequest(_), Payload::PyodideResponse(_))
    )
}

/// Sets `info.provider` on a task request.
fn with_provider(payload: &Payload, name: &str) -> Payload {
    let mut payload = payload.clone();
    match &mut payload {
        Payload::Wasip1Request(r) => {
            r.info.get_or_insert_with(Default::default).provider = Some(name.to_owned());
        }
        Payload::PyodideRequest(r) => {
            r.info.get_or_insert_with(Default::default).provider = Some(name.to_owned());
        }
        _ => {}
    }
    payload
}

impl Machine {
    pub(crate) fn new(scheduler: Box<dyn Scheduler>, config: MachineConfig) -> Machine {
        Machine {
            config,
            scheduler,
            tasks: HashMap::new(),
            providers: HashMap::new(),
            high: VecDeque::new(),
            low: VecDeque::new(),
            retry: VecDeque::new(),
            queued: 0,
            running: 0,
            held_bytes: 0,
            advertised: 0,
            timers: BTreeMap::new(),
            timer_seq: 0,
            actions: VecDeque::new(),
            stats: Stats::default(),
            shutting_down: false,
        }
    }

    /// Tasks waiting for a provider.
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Tasks with an attempt running on a provider.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Bytes held by unanswered tasks ([`Job::cost`]).
    pub(crate) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Tasks not yet answered.
    #[cfg(test)]
    pub(crate) fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Connected providers.
    pub(crate) fn providers(&self) -> usize {
        self.providers.len()
    }

    /// The sum of the slots providers advertise.
    pub(crate) fn advertised_slots(&self) -> u64 {
        self.advertised
    }

    /// A provider's books: (slots it advertises, as capped; tasks running there now; whether it
    /// is backed off after refusing).
    pub(crate) fn provider_books(&self, id: ProviderId) -> Option<(u32, u32, bool)> {
        self.providers.get(&id).map(|p| {
            let backed_off = p.breaker != Breaker::Closed;
            (p.advertised, p.running.len() as u32, backed_off)
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        self.stats
    }

    /// The next action for the shell.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the machine next wants [`Machine::handle_timeout`].
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Fires every timer due at `now`, then places what can be placed.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.fire_timers(now);
        self.dispatch(now);
    }

    /// Takes one input at time `now`: timers due first, then the input, then placement.
    pub(crate) fn handle(&mut self, now: Instant, input: Input) {
        self.handle_only(now, input);
        self.dispatch(now);
    }

    /// Takes one input without placing queued tasks afterwards: for batches of inputs, which
    /// end with [`Machine::handle_timeout`] (fewer, fuller placement passes).
    pub(crate) fn handle_only(&mut self, now: Instant, input: Input) {
        self.fire_timers(now);
        match input {
            Input::Submit { job, deadline } => self.submit(now, job, deadline),
            Input::Cancel { id, reason } => self.end_task(now, &id, &reason, TaskError::Cancelled),
            Input::ProviderJoined { id, name, files } => self.joined(id, name, files),
            Input::ProviderLeft { id, reason } => self.left(now, id, &reason),
            Input::Resources { id, concurrency } => {
                let max = self.config.max_provider_slots;
                if let Some(p) = self.providers.get_mut(&id) {
                    let advertised = concurrency.min(max);
                    self.advertised =
                        self.advertised - u64::from(p.advertised) + u64::from(advertised);
                    p.advertised = advertised;
                    self.sync_slots(id);
                    self.starving(now);
                }
            }
            Input::Files { id, added, removed } => {
                if self.providers.contains_key(&id) {
                    self.scheduler
                        .handle(SchedulerEvent::FilesAdded { id, refs: added });
                    self.scheduler
                        .handle(SchedulerEvent::FilesRemoved { id, refs: removed });
                }
            }
            Input::Answer {
                id,
                attempt,
                provider,
                answer,
            } => self.answer(now, id, attempt, provider, answer),
            Input::CancelAcked {
                id,
                attempt,
                provider,
            } => {
                self.stopped(&id, attempt, provider);
            }
            Input::Shutdown => self.shutdown(now),
        }
    }

    fn add_timer(&mut self, at: Instant, timer: Timer) -> TimerKey {
        self.timer_seq += 1;
        let key = (at, self.timer_seq);
        self.timers.insert(key, timer);
        key
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Timer::Deadline(id) => {
                    let what = self.missed_deadline(now, &id);
                    self.end_task(now, &id, "deadline exceeded", |_| {
                        TaskError::DeadlineExceeded(what)
                    });
                }
                Timer::Attempt(id, attempt) => self.wedged(now, &id, attempt),
                Timer::NoProvider(id) => self.starved(now, &id),
                Timer::Backoff(provider) => {
                    if let Some(p) = self.providers.get_mut(&provider)
                        && p.breaker == Breaker::Open
                    {
                        p.breaker = Breaker::HalfOpen;
                        self.sync_slots(provider);
                    }
                }
            }
        }
    }

    fn submit(&mut self, now: Instant, job: Job, deadline: Instant) {
        let reject = |machine: &mut Machine, job: Job, error: TaskError| {
            machine.actions.push_back(Action::Reply {
                id: job.id,
                result: Err(error),
                provider: None,
                elapsed: Duration::ZERO,
                waited: Duration::ZERO,
                ran: None,
                attempts: 0,
                trace: Vec::new(),
            });
        };
        if self.shutting_down {
            return reject(self, job, TaskError::ShuttingDown);
        }
        if self.tasks.contains_key(&job.id) {
            // The shell never submits an id twice; a second reply would reach the first client.
            tracing::error!(id = %job.id, "duplicate task id submitted; ignored");
            return;
        }
        if deadline <= now {
            let error = TaskError::DeadlineExceeded(PASSED_AT_SUBMISSION.into());
            return reject(self, job, error);
        }
        if !job.immediate && !job.resumed && self.queued >= self.config.max_queue {
            let queued = self.queued;
            return reject(self, job, TaskError::QueueFull(queued));
        }
        let limit = self.config.max_bytes;
        if job.cost > limit {
            let error = TaskError::InvalidArgument(format!(
                "a task of {} bytes exceeds the broker's byte budget of {limit} bytes \
                 (max_queue_bytes)",
                job.cost
            ));
            return reject(self, job, error);
        }
        if self.held_bytes.saturating_add(job.cost) > limit {
            let held = self.held_bytes;
            return reject(self, job, TaskError::QueueBytesFull { held, limit });
        }
        self.held_bytes += job.cost;
        let id = job.id.clone();
        let (priority, immediate) = (job.priority, job.immediate);
        let deadline_timer = self.add_timer(deadline, Timer::Deadline(id.clone()));
        let mut task = Task {
            job,
            submitted: now,
            started: None,
            ran: None,
            deadline,
            deadline_timer,
            starve_timer: None,
            attempts: 0,
            sends: 0,
            running: None,
            exclude: None,
            lingering: Vec::new(),
            notes: Vec::new(),
            notes_sent: 0,
        };
        task.note(now, EventType::BrokerQueueTask, None);
        self.tasks.insert(id.clone(), task);
        if immediate {
            if !self.try_place(now, &id) {
                self.reply(
                    now,
                    &id,
                    Err(TaskError::Unavailable("no free provider slot".into())),
                    None,
                );
            }
            return;
        }
        self.queued += 1;
        if self.advertised == 0 {
            self.arm_starve(now, &id);
        }
        if priority {
            self.high.push_back(id);
        } else {
            self.low.push_back(id);
        }
    }

    /// Starts a waiting task's clock for "no provider" (once; never for a patient task).
    fn arm_starve(&mut self, now: Instant, id: &str) {
        let at = now + self.config.provider_wait;
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        if task.starve_timer.is_some() || task.job.patient {
            return;
        }
        let key = self.add_timer(at, Timer::NoProvider(id.to_owned()));
        if let Some(t) = self.tasks.get_mut(id) {
            t.starve_timer = Some(key);
        }
    }

    /// No provider offers a slot any more: every waiting task starts its clock.
    fn starving(&mut self, now: Instant) {
        if self.advertised > 0 || self.queued == 0 {
            return;
        }
        let mut waiting: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.running.is_none() && t.starve_timer.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        waiting.sort_unstable(); // deterministic order for the simulation
        for id in waiting {
            self.arm_starve(now, &id);
        }
    }

    /// A task's "no provider" clock ran out: fail it if still nobody offers a slot.
    fn starved(&mut self, now: Instant, id: &str) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        task.starve_timer = None;
        if task.running.is_some() {
            return;
        }
        if self.advertised > 0 {
            return; // a provider came; the task waits its turn
        }
        let wait = self.config.provider_wait;
        self.forget_queued(id);
        let why = format!("{NO_PROVIDER} (waited {wait:?})");
        self.reply(now, id, Err(TaskError::Unavailable(why)), None);
    }

    /// Whether a queue entry is a task still waiting for a provider.
    fn waiting(&self, id: &str) -> bool {
        self.tasks.get(id).is_some_and(|t| t.running.is_none())
    }

    /// Places queued tasks while providers have free slots: retried tasks first (each is
    /// tried; one that excludes the only free provider stays), then priority, then the rest.
    fn dispatch(&mut self, now: Instant) {
        if self.queued == 0 || self.scheduler.free_slots() == 0 {
            return;
        }
        let mut still = VecDeque::new();
        while let Some(id) = self.retry.pop_front() {
            if !self.waiting(&id) {
                continue;
            }
            if self.scheduler.free_slots() > 0 && self.try_place(now, &id) {
                self.queued -= 1;
            } else {
                still.push_back(id);
            }
        }
        self.retry = still;
        // Tasks in these queues exclude nobody, so a failed pick means no slot is free; the
        // limit only guards against a scheduler that refuses for reasons of its own.
        const LOOK_PAST: usize = 16;
        for high in [true, false] {
            let mut passed = Vec::new();
            while self.scheduler.free_slots() > 0 && passed.len() < LOOK_PAST {
                let queue = if high { &mut self.high } else { &mut self.low };
                let Some(id) = queue.pop_front() else { break };
                if !self.waiting(&id) {
                    continue; // cancelled or finished meanwhile
                }
                if self.try_place(now, &id) {
                    self.queued -= 1;
                } else {
                    passed.push(id);
                }
            }
            let queue = if high { &mut self.high } else { &mut self.low };
            for id in passed.into_iter().rev() {
                queue.push_front(id);
            }
        }
    }

    /// Picks a provider for a waiting task and sends it there; false if none fits.
    fn try_place(&mut self, now: Instant, id: &str) -> bool {
        let several = self.providers.len() > 1;
        let Some(task) = self.tasks.get_mut(id) else {
            return false;
        };
        if now >= task.deadline {
            return false; // its deadline timer fires next
        }
        // Never where an attempt may still run; never the same provider twice in a row,
        // unless it is the only one there is: then a second try there beats the deadline.
        let mut exclude = task.lingering.clone();
        if let Some(p) = task.exclude.filter(|_| several) {
            exclude.push(p);
        }
        let placement = Placement {
            binary: task.job.binary.as_deref(),
            exclude: &exclude,
        };
        let Some(provider) = self.scheduler.pick(&placement) else {
            return false;
        };
        let Some(p) = self.providers.get_mut(&provider) else {
            // The scheduler knew a provider we do not: give the slot back.
            tracing::error!(%provider, "scheduler picked an unknown provider");
            self.scheduler
                .handle(SchedulerEvent::ProviderLeft { id: provider });
            return false;
        };
        task.sends += 1;
        task.attempts += 1;
        let number = task.sends;
        p.running.insert(id.to_owned());
        if p.breaker == Breaker::HalfOpen && p.probe.is_none() {
            p.probe = Some(id.to_owned());
        }
        let limit = task
            .deadline
            .saturating_duration_since(now)
            .min(self.config.attempt_timeout);
        let payload = with_provider(&task.job.payload, &p.name);
        let details = format!("{provider} ({}), attempt {}", p.name, task.attempts);
        task.note(now, EventType::BrokerScheduleTask, Some(details));
        let trace = task.notes.clone();
        task.notes_sent = task.notes.len();
        let wake = now + limit + self.config.attempt_grace;
        let timer = self.add_timer(wake, Timer::Attempt(id.to_owned(), number));
        let task = self.tasks.get_mut(id).expect("looked up above");
        task.started = Some(now);
        task.running = Some(Attempt {
            provider,
            number,
            timer,
            sent: now,
        });
        self.running += 1;
        self.actions.push_back(Action::Send {
            provider,
            id: id.to_owned(),
            attempt: number,
            payload,
            limit,
            trace,
        });
        self.sync_slots(provider);
        true
    }

    /// Tells the scheduler a provider's usable slots when they changed.
    fn sync_slots(&mut self, id: ProviderId) {
        let Some(p) = self.providers.get_mut(&id) else {
            return;
        };
        let effective = p.effective();
        if effective != p.synced {
            p.synced = effective;
            self.scheduler.handle(SchedulerEvent::ProviderResources {
                id,
                slots: effective,
            });
        }
    }

    /// Tells the scheduler a provider's slot is free (the caller has removed the attempt from
    /// the provider's books).
    fn release(&mut self, id: ProviderId) {
        if !self.providers.contains_key(&id) {
            return;
        }
        self.scheduler.handle(SchedulerEvent::TaskFinished { id });
        self.sync_slots(id);
    }

    fn joined(&mut self, id: ProviderId, name: String, files: Vec<String>) {
        if self.providers.contains_key(&id) {
            tracing::error!(%id, "provider joined twice; ignored");
            return;
        }
        tracing::info!(%id, %name, files = files.len(), "provider joined");
        self.scheduler
            .handle(SchedulerEvent::ProviderJoined { id, slots: 0 });
        self.scheduler
            .handle(SchedulerEvent::FilesAdded { id, refs: files });
        self.providers.insert(
            id,
            Provider {
                name,
                advertised: 0,
                synced: 0,
                running: HashSet::new(),
                lingering: HashSet::new(),
                breaker: Breaker::Closed,
                probe: None,
                backoff: self.config.backoff_min,
            },
        );
    }

    fn left(&mut self, now: Instant, id: ProviderId, reason: &str) {
        let Some(p) = self.providers.remove(&id) else {
            return;
        };
        self.scheduler.handle(SchedulerEvent::ProviderLeft { id });
        self.advertised -= u64::from(p.advertised);
        tracing::info!(
            %id,
            name = %p.name,
            %reason,
            running = p.running.len(),
            cancelled = p.lingering.len(),
            "provider left"
        );
        for (task, _) in &p.lingering {
            if let Some(t) = self.tasks.get_mut(task) {
                t.lingering.retain(|l| *l != id);
            }
        }
        let mut lost: Vec<String> = p.running.into_iter().collect();
        lost.sort_unstable(); // deterministic order for the simulation
        for task in lost {
            let Some(t) = self.tasks.get_mut(&task) else {
                continue;
            };
            let Some(attempt) = t.running.take_if(|a| a.provider == id) else {
                continue;
            };
            self.timers.remove(&attempt.timer);
            self.running -= 1;
            self.attempt_failed(now, &task, id, format!("provider lost: {reason}"));
        }
        self.starving(now);
    }

    fn answer(
        &mut self,
        now: Instant,
        id: String,
        attempt: u32,
        provider: ProviderId,
        answer: Answer,
    ) {
        if self.stopped(&id, attempt, provider) {
            return; // the late answer of a cancelled attempt
        }
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let Some(current) = task
            .running
            .take_if(|a| a.number == attempt && a.provider == provider)
        else {
            return; // not the attempt running now: stale
        };
        self.timers.remove(&current.timer);
        self.running -= 1;
        if let Some(p) = self.providers.get_mut(&provider) {
            p.running.remove(&id);
        }
        let refused = matches!(answer, Answer::Refused(_));
        let probe = self.breaker_answer(now, provider, &id, refused);
        self.release(provider);
        let task = self.tasks.get_mut(&id).expect("looked up above");
        task.note(now, EventType::BrokerReceivedProviderResult, None);
        match answer {
            Answer::Response(payload) if answers(&task.job.payload, &payload) => {
                task.ran = Some(now.saturating_duration_since(current.sent));
                self.reply(now, &id, Ok(*payload), Some(provider));
            }
            Answer::Response(other) => {
                let why = format!("provider answered with {}", other.type_name());
                self.attempt_failed(now, &id, provider, why);
            }
            Answer::Refused(refusal) => {
                self.stats.refusals += 1;
                tracing::debug!(%id, %provider, probe, "provider refused: {refusal}");
                task.attempts = task.attempts.saturating_sub(1);
                if task.job.immediate {
                    if !self.try_place(now, &id) {
                        let why = format!("no free provider slot ({provider} refused: {refusal})");
                        self.reply(now, &id, Err(TaskError::Unavailable(why)), None);
                    }
                } else {
                    self.retry.push_back(id);
                    self.queued += 1;
                }
            }
            Answer::Failed(e) => {
                let why = format!("provider error: {e}");
                self.attempt_failed(now, &id, provider, why);
            }
            Answer::Malformed(e) => {
                let why = format!("invalid answer from provider: {e}");
                self.attempt_failed(now, &id, provider, why);
            }
            Answer::Lost(reason) => {
                let why = format!("provider lost: {reason}");
                self.attempt_failed(now, &id, provider, why);
            }
        }
    }

    /// Updates a provider's breaker with an answer; returns whether it was the probe.
    fn breaker_answer(
        &mut self,
        now: Instant,
        provider: ProviderId,
        id: &str,
        refused: bool,
    ) -> bool {
        let max = self.config.backoff_max;
        let min = self.config.backoff_min;
        let Some(p) = self.providers.get_mut(&provider) else {
            return false;
        };
        let probe = p.breaker == Breaker::HalfOpen && p.probe.as_deref() == Some(id);
        let backoff = match (p.breaker, refused) {
            (Breaker::Closed, true) => Some(min),
            (Breaker::HalfOpen, true) if probe => Some((p.backoff * 2).min(max)),
            (Breaker::HalfOpen, false) if probe => {
                p.breaker = Breaker::Closed;
                p.probe = None;
                p.backoff = min;
                None
            }
            _ => None,
        };
        if let Some(backoff) = backoff {
            p.breaker = Breaker::Open;
            p.probe = None;
            p.backoff = backoff;
            self.add_timer(now + backoff, Timer::Backoff(provider));
        }
        probe
    }

    /// A cancelled attempt is known to have stopped (acknowledged, or its late answer came):
    /// its slot is free and the task may go there again. False if it was not a cancelled one.
    fn stopped(&mut self, id: &str, attempt: u32, provider: ProviderId) -> bool {
        let Some(p) = self.providers.get_mut(&provider) else {
            return false;
        };
        if !p.lingering.remove(&(id.to_owned(), attempt)) {
            return false;
        }
        if p.probe.as_deref() == Some(id) {
            // The probe was cancelled: it says nothing; another may go.
            p.probe = None;
        }
        if let Some(t) = self.tasks.get_mut(id) {
            t.lingering.retain(|l| *l != provider);
        }
        self.release(provider);
        true
    }

    /// Stops a task's running attempt (if any): emits the cancel and keeps the slot reserved
    /// until the provider confirms.
    fn cancel_attempt(&mut self, id: &str, reason: &str) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        let Some(attempt) = task.running.take() else {
            return;
        };
        self.timers.remove(&attempt.timer);
        self.running -= 1;
        let provider = attempt.provider;
        if let Some(p) = self.providers.get_mut(&provider) {
            p.running.remove(id);
            p.lingering.insert((id.to_owned(), attempt.number));
            task.lingering.push(provider);
            self.actions.push_back(Action::Cancel {
                provider,
                id: id.to_owned(),
                attempt: attempt.number,
                reason: reason.to_owned(),
            });
        }
    }

    /// Ends a task before it has a result (client cancel, deadline): cancel, then reply.
    /// What happened to a task whose deadline passed, for its client: queued (for how long,
    /// and whether any provider is there) or running (where, for how long, which attempt).
    fn missed_deadline(&self, now: Instant, id: &str) -> String {
        let Some(task) = self.tasks.get(id) else {
            return "the task's deadline passed".to_owned();
        };
        let waited = now.saturating_duration_since(task.submitted).as_secs_f64();
        match &task.running {
            Some(attempt) => {
                let name = self
                    .providers
                    .get(&attempt.provider)
                    .map_or("(gone)", |p| p.name.as_str());
                let ran = now.saturating_duration_since(attempt.sent).as_secs_f64();
                format!(
                    "the task's deadline passed while it ran on provider {name} ({ran:.1} s of \
                     attempt {}; {waited:.1} s since it was submitted)",
                    task.attempts.max(1)
                )
            }
            None if self.providers.is_empty() => format!(
                "the task waited {waited:.1} s in the queue and never ran: no provider is \
                 connected to this broker"
            ),
            None => {
                let slots: u64 = self
                    .providers
                    .values()
                    .map(|p| u64::from(p.advertised))
                    .sum();
                let tried = match task.attempts {
                    0 => String::new(),
                    n => format!(" after {n} failed attempt(s)"),
                };
                format!(
                    "the task waited {waited:.1} s in the queue{tried}: {} provider(s) with {slots} \
                     slot(s) are connected, and none was free for it",
                    self.providers.len()
                )
            }
        }
    }

    fn end_task(
        &mut self,
        now: Instant,
        id: &str,
        reason: &str,
        error: impl FnOnce(String) -> TaskError,
    ) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        if task.running.is_some() {
            self.cancel_attempt(id, reason);
        } else if !task.job.immediate {
            self.forget_queued(id);
        }
        self.reply(now, id, Err(error(reason.to_owned())), None);
    }

    /// A queued task is gone: its id stays in its queue and is skipped when reached, unless
    /// such leftovers pile up (tasks ending while no slot frees): then sweep.
    fn forget_queued(&mut self, gone: &str) {
        self.queued = self.queued.saturating_sub(1);
        let ids = self.high.len() + self.low.len() + self.retry.len();
        if ids > 2 * self.queued + 1024 {
            let tasks = &self.tasks;
            let live =
                |id: &String| id != gone && tasks.get(id).is_some_and(|t| t.running.is_none());
            self.high.retain(live);
            self.low.retain(live);
            self.retry.retain(live);
        }
    }

    /// An attempt's timer ran out: the provider is wedged. Cancel there, try elsewhere.
    fn wedged(&mut self, now: Instant, id: &str, attempt: u32) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        let Some(running) = task.running.as_ref().filter(|a| a.number == attempt) else {
            return;
        };
        let provider = running.provider;
        self.stats.wedged += 1;
        self.cancel_attempt(id, "no answer within the task's time limit");
        let limit = self.config.attempt_timeout;
        let why = format!(
            "provider did not answer within its time limit (at most {limit:?}) and {:?} of grace",
            self.config.attempt_grace
        );
        self.attempt_failed(now, id, provider, why);
    }

    /// An attempt failed through the provider's fault: retry or give up.
    fn attempt_failed(&mut self, now: Instant, id: &str, provider: ProviderId, why: String) {
        let max_attempts = self.config.max_attempts;
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        tracing::debug!(%id, %provider, %why, "attempt failed");
        task.note(now, EventType::BrokerError, Some(why.clone()));
        self.actions.push_back(Action::AttemptFailed {
            provider,
            id: id.to_owned(),
            reason: why.clone(),
        });
        if task.attempts >= max_attempts || task.job.immediate {
            let attempts = task.attempts;
            let error = TaskError::ProviderFailed(format!("{why} (after {attempts} attempts)"));
            self.reply(now, id, Err(error), None);
            return;
        }
        task.exclude = Some(provider);
        self.stats.retries += 1;
        // Retried tasks go first; they wait apart from the queues because their exclusion may
        // keep them from the only free provider, and must then not hold up the tasks behind.
        self.retry.push_back(id.to_owned());
        self.queued += 1;
        if self.advertised == 0 {
            self.arm_starve(now, id);
        }
    }

    /// Answers a task's client and forgets the task (its lingering attempts stay on their
    /// providers' books until they stop).
    fn reply(
        &mut self,
        now: Instant,
        id: &str,
        result: Result<Payload, TaskError>,
        provider: Option<ProviderId>,
    ) {
        let Some(mut task) = self.tasks.remove(id) else {
            return;
        };
        self.held_bytes -= task.job.cost;
        debug_assert!(task.running.is_none(), "replied while an attempt runs");
        self.timers.remove(&task.deadline_timer);
        if let Some(key) = task.starve_timer {
            self.timers.remove(&key);
        }
        let trace = task.notes.split_off(task.notes_sent.min(task.notes.len()));
        let started = task.started.unwrap_or(now);
        self.actions.push_back(Action::Reply {
            id: task.job.id,
            result,
            provider,
            elapsed: now.saturating_duration_since(task.submitted),
            waited: started.saturating_duration_since(task.submitted),
            ran: task.ran,
            attempts: task.attempts,
            trace,
        });
    }

    fn shutdown(&mut self, now: Instant) {
        self.shutting_down = true;
        let mut ids: Vec<String> = self.tasks.keys().cloned().collect();
        ids.sort_unstable();
        for id in ids {
            self.cancel_attempt(&id, "broker is shutting down");
            self.reply(now, &id, Err(TaskError::ShuttingDown), None);
        }
        self.high.clear();
        self.low.clear();
        self.retry.clear();
        self.queued = 0;
    }

    /// Checks the books against each other; for tests (O(tasks + providers)).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        let mut running = 0;
        let held: usize = self.tasks.values().map(|t| t.job.cost).sum();
        assert_eq!(held, self.held_bytes, "held bytes");
        for (id, t) in &self.tasks {
            if let Some(a) = &t.running {
                running += 1;
                let p = &self.providers[&a.provider];
                assert!(
                    p.running.contains(id),
                    "{id} runs on {} unbeknownst",
                    a.provider
                );
            }
            for l in &t.lingering {
                assert!(
                    self.providers[l].lingering.iter().any(|(i, _)| i == id),
                    "{id} lingers on {l} unbeknownst"
                );
            }
        }
        assert_eq!(running, self.running);
        let mut free = 0;
        for (pid, p) in &self.providers {
            assert_eq!(p.synced, p.effective(), "scheduler's slots of {pid}");
            free += u64::from(p.effective().saturating_sub(p.reserved()));
        }
        assert_eq!(self.scheduler.free_slots(), free, "free slots");
        let advertised: u64 = self
            .providers
            .values()
            .map(|p| u64::from(p.advertised))
            .sum();
        assert_eq!(self.advertised, advertised, "advertised slots");
        assert_eq!(self.scheduler.providers(), self.providers.len());
    }

    /// Reserved slots of a provider, for tests.
    #[cfg(test)]
    pub(crate) fn reserved(&self, id: ProviderId) -> Option<u32> {
        self.providers.get(&id).map(Provider::reserved)
    }
}

//! The dispatcher: the sans-IO [`Machine`](machine::Machine) that decides, and the small tokio
//! shell here that feeds it and performs what it decides.
//!
//! Everything that changes who runs what goes through the shell's command channel:
//! submissions, cancellations, providers joining and leaving, resource and file updates, and
//! the answers of providers. The shell turns commands into machine inputs (with the time they
//! were taken), performs the machine's actions in the order they come, and wakes the machine
//! when its next timer is due. Everything with a decision in it lives in the machine.
//!
//! Each provider has one outbox task that puts the shell's requests on that provider's
//! connection in order (so a `Task.Cancel` leaves before any later request for the same task)
//! and waits for their answers, which come back as commands.
//!
//! Architecture Invariant: the shell never decides: no timers of its own for tasks, no retry,
//! no classification beyond turning wire errors into typed [`Answer`]s.

pub(crate) mod machine;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::FuturesUnordered};
use tokio::sync::{mpsc, oneshot};
use wasimoff_core::envelope::Payload;
use wasimoff_core::messenger::{CallError, Messenger};
use wasimoff_core::proto::{self, task};
use wasimoff_core::remote::{FailureKind, RemoteError};
use wasimoff_core::scheduler::{ProviderId, Scheduler};
use wasimoff_core::transport::CloseReason;
use wasimoff_core::wkt::Timestamp;

use crate::error::TaskError;
use crate::metrics::{MAX_PROVIDER_SERIES, Metrics};
use crate::operator::{self, Dashboard, FailureView, ProviderKind, ProviderView, Totals};
use machine::{Action, Answer, Machine, TraceNote};
pub(crate) use machine::{Input, Job, MachineConfig as DispatchConfig, NO_PROVIDER};

pub(crate) type Reply = oneshot::Sender<Result<Payload, TaskError>>;

/// What the dispatcher is told.
pub(crate) enum Command {
    Submit {
        job: Job,
        deadline: Instant,
        reply: Reply,
    },
    ProviderJoined {
        id: ProviderId,
        name: String,
        messenger: Messenger,
        files: Vec<String>,
        kind: ProviderKind,
        agent: String,
        /// Unix milliseconds of the last message from the provider; its session updates it.
        last_seen: Arc<AtomicI64>,
        /// Its workers and prefetch slots; its session updates them.
        split: Arc<operator::Split>,
    },
    /// An input the machine takes as it is: `Cancel`, `ProviderLeft`, `Resources`, `Files`.
    Machine(Input),
    /// A provider's answer to a task request (from its outbox).
    Answered {
        id: String,
        attempt: u32,
        provider: ProviderId,
        result: Result<Payload, CallError>,
    },
    /// A provider's answer to a cancel (from its outbox).
    CancelAnswered {
        id: String,
        attempt: u32,
        provider: ProviderId,
        result: Result<Payload, CallError>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// A snapshot for the operator view.
    Dashboard {
        reply: oneshot::Sender<Arc<Dashboard>>,
    },
}

/// What the shell does besides performing the machine's actions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShellConfig {
    /// One info line per finished task (`task finished`).
    pub(crate) log_tasks: bool,
}

/// A handle to send commands to the dispatcher.
#[derive(Clone, Debug)]
pub(crate) struct Dispatch {
    tx: mpsc::UnboundedSender<Command>,
}

impl Dispatch {
    /// Starts the dispatcher on the current runtime.
    pub(crate) fn start(
        scheduler: Box<dyn Scheduler>,
        config: DispatchConfig,
        shell: ShellConfig,
        metrics: Arc<Metrics>,
    ) -> Dispatch {
        let (tx, rx) = mpsc::unbounded_channel();
        let shell = Shell {
            machine: Machine::new(scheduler, config),
            metrics,
            totals: Totals::default(),
            failures: VecDeque::new(),
            series: 0,
            task_log: shell.log_tasks.then(|| {
                let (tx, rx) = mpsc::channel(TASK_LOG_QUEUE);
                tokio::spawn(write_task_log(rx));
                tx
            }),
            task_lines_dropped: 0,
            snapshot: None,
            tx: tx.clone(),
            replies: HashMap::new(),
            conns: HashMap::new(),
            recent: VecDeque::new(),
            cluster_changed: false,
            retries: 0,
        };
        tokio::spawn(shell.run(rx));
        Dispatch { tx }
    }

    pub(crate) fn send(&self, command: Command) {
        // Fails only after shutdown, when nothing is listening any more.
        let _ = self.tx.send(command);
    }

    /// Submits a job and waits for its result; the dispatcher answers by `deadline`. Dropping
    /// the future (the client went away) cancels the task.
    pub(crate) async fn run(&self, job: Job, deadline: Instant) -> Result<Payload, TaskError> {
        self.submit(job, deadline).wait().await
    }

    /// Submits a job now (commands are taken in the order they are sent); [`Submitted::wait`]
    /// for its result. Dropping the handle cancels the task.
    pub(crate) fn submit(&self, job: Job, deadline: Instant) -> Submitted {
        let (reply, result) = oneshot::channel();
        let guard = CancelOnDrop {
            dispatch: self.clone(),
            id: Some(job.id.clone()),
        };
        self.send(Command::Submit {
            job,
            deadline,
            reply,
        });
        Submitted {
            guard,
            deadline,
            result,
        }
    }
}

/// A job submitted to the dispatcher, not yet answered.
pub(crate) struct Submitted {
    guard: CancelOnDrop,
    deadline: Instant,
    result: oneshot::Receiver<Result<Payload, TaskError>>,
}

impl Submitted {
    /// Its result, by its deadline.
    pub(crate) async fn wait(self) -> Result<Payload, TaskError> {
        let Submitted {
            mut guard,
            deadline,
            result,
        } = self;
        // The dispatcher answers at the deadline at the latest; this is only a backstop.
        let backstop = tokio::time::Instant::from_std(deadline) + BACKSTOP;
        let result = tokio::time::timeout_at(backstop, result).await;
        match result {
            Ok(Ok(result)) => {
                guard.id = None;
                result
            }
            Ok(Err(_)) => {
                guard.id = None;
                Err(TaskError::ShuttingDown)
            }
            Err(_) => {
                if let Some(id) = guard.id.take() {
                    tracing::error!(%id, "the dispatcher missed a deadline");
                    guard.dispatch.send(Command::Machine(Input::Cancel {
                        id,
                        reason: "deadline exceeded".into(),
                    }));
                }
                Err(TaskError::DeadlineExceeded(
                    "the task's deadline passed before the dispatcher answered".into(),
                ))
            }
        }
    }
}

/// How long past a deadline a waiting client gives up on the dispatcher.
const BACKSTOP: Duration = Duration::from_secs(1);

/// Cancels a submitted task when the waiting future is dropped early.
struct CancelOnDrop {
    dispatch: Dispatch,
    id: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.dispatch.send(Command::Machine(Input::Cancel {
                id,
                reason: "client went away".into(),
            }));
        }
    }
}

/// A request for a provider's outbox.
enum Outgoing {
    Task {
        id: String,
        attempt: u32,
        payload: Box<Payload>,
    },
    Cancel {
        id: String,
        attempt: u32,
        cancel: proto::task::Cancel,
    },
}

/// A connected provider, as the shell holds it.
struct Conn {
    messenger: Messenger,
    outbox: mpsc::UnboundedSender<Outgoing>,
    /// Completion times in the last few seconds, for `Throughput.yours`.
    recent: VecDeque<Instant>,
    name: String,
    kind: ProviderKind,
    agent: String,
    /// Unix milliseconds.
    connected_at: i64,
    last_seen: Arc<AtomicI64>,
    split: Arc<operator::Split>,
    /// Results returned and attempts failed on this connection.
    done: u64,
    failed: u64,
    /// Whether it has series of its own in the metrics (see [`MAX_PROVIDER_SERIES`]).
    series: bool,
}

struct Shell {
    machine: Machine,
    metrics: Arc<Metrics>,
    /// Cumulative figures for the operator view.
    totals: Totals,
    /// The latest failures, newest last (at most [`operator::FAILURES_KEPT`]).
    failures: VecDeque<FailureView>,
    /// Providers with series of their own in the metrics.
    series: usize,
    /// Where the per-task log lines go (with [`ShellConfig::log_tasks`]).
    task_log: Option<mpsc::Sender<TaskLine>>,
    /// Lines the log writer had no room for, not yet reported.
    task_lines_dropped: u64,
    /// The last snapshot for the operator view, reused for [`SNAPSHOT_REUSE`]: however often
    /// it is asked for, the dispatcher builds at most a few per second.
    snapshot: Option<(Instant, Arc<Dashboard>)>,
    tx: mpsc::UnboundedSender<Command>,
    replies: HashMap<String, Reply>,
    conns: HashMap<ProviderId, Conn>,
    /// Completion times in the last few seconds, for `Throughput.overall`.
    recent: VecDeque<Instant>,
    /// Providers joined or left since the last `ClusterInfo` broadcast.
    cluster_changed: bool,
    /// Retries already counted in the metrics.
    retries: u64,
}

/// The per-task log lines waiting for the writer at most (each a few hundred bytes at most: the
/// id, a provider name of at most 128 characters, figures).
const TASK_LOG_QUEUE: usize = 4096;

/// One finished task, for its log line.
struct TaskLine {
    id: String,
    provider: Option<String>,
    outcome: &'static str,
    attempts: u32,
    waited: Duration,
    ran: Option<Duration>,
}

/// Writes the per-task log lines until the dispatcher ends.
async fn write_task_log(mut lines: mpsc::Receiver<TaskLine>) {
    while let Some(line) = lines.recv().await {
        let ran = line
            .ran
            .map_or_else(|| "-".to_owned(), |r| format!("{r:?}"));
        tracing::info!(
            target: "wasimoff_broker::tasks",
            id = %line.id,
            provider = %line.provider.as_deref().unwrap_or("-"),
            outcome = %line.outcome,
            attempts = line.attempts,
            queue_wait = ?line.waited,
            run_time = %ran,
            "task finished"
        );
    }
}

/// How long a snapshot for the operator view is reused.
const SNAPSHOT_REUSE: Duration = Duration::from_millis(250);

/// The window over which throughput is averaged.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);

impl Shell {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self.machine.poll_timeout();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = rx.recv() => {
                    let Some(command) = command else { break };
                    self.command(command);
                    // Take what else is waiting before placing tasks: fewer, fuller passes.
                    while let Ok(command) = rx.try_recv() {
                        self.command(command);
                    }
                    self.machine.handle_timeout(Instant::now());
                    self.perform();
                }
                () = sleep => {
                    self.machine.handle_timeout(Instant::now());
                    self.perform();
                }
                _ = tick.tick() => {
                    if self.task_lines_dropped > 0 {
                        let dropped = std::mem::take(&mut self.task_lines_dropped);
                        tracing::warn!(
                            target: "wasimoff_broker::tasks",
                            dropped,
                            "task lines dropped: the log is slower than tasks finish"
                        );
                    }
                    if std::mem::take(&mut self.cluster_changed) {
                        self.broadcast_cluster();
                    }
                    self.broadcast_throughput();
                }
            }
        }
    }

    /// Turns a command into a machine input (without a placement pass).
    fn command(&mut self, command: Command) {
        let now = Instant::now();
        let input = match command {
            Command::Submit {
                job,
                deadline,
                reply,
            } => {
                if self.replies.contains_key(&job.id) {
                    let error = TaskError::Internal(format!("duplicate task id {}", job.id));
                    let _ = reply.send(Err(error));
                    return;
                }
                self.replies.insert(job.id.clone(), reply);
                Input::Submit { job, deadline }
            }
            Command::ProviderJoined {
                id,
                name,
                messenger,
                files,
                kind,
                agent,
                last_seen,
                split,
            } => {
                // The newcomer hears the cluster size at once, the others with the next tick:
                // a broadcast per join costs O(providers²) when many join together.
                let size = self.conns.len() as u32 + 1;
                messenger.try_send_event(proto::event::ClusterInfo {
                    providers: Some(size),
                });
                let (outbox, queue) = mpsc::unbounded_channel();
                tokio::spawn(run_outbox(id, messenger.clone(), queue, self.tx.clone()));
                let series = self.series < MAX_PROVIDER_SERIES;
                self.series += usize::from(series);
                let conn = Conn {
                    messenger,
                    outbox,
                    recent: VecDeque::new(),
                    name: name.clone(),
                    kind,
                    agent,
                    connected_at: operator::unix_millis(),
                    last_seen,
                    split,
                    done: 0,
                    failed: 0,
                    series,
                };
                self.conns.insert(id, conn);
                self.cluster_changed = true;
                Input::ProviderJoined { id, name, files }
            }
            Command::Machine(Input::ProviderLeft { id, reason }) => {
                if self.forget(id).is_none() {
                    return;
                }
                self.cluster_changed = true;
                Input::ProviderLeft { id, reason }
            }
            Command::Machine(input) => input,
            Command::Answered {
                id,
                attempt,
                provider,
                result,
            } => {
                if result.is_ok()
                    && let Some(conn) = self.conns.get(&provider)
                {
                    conn.last_seen
                        .store(operator::unix_millis(), Ordering::Relaxed);
                }
                Input::Answer {
                    id,
                    attempt,
                    provider,
                    answer: classify(result),
                }
            }
            Command::CancelAnswered {
                id,
                attempt,
                provider,
                result,
            } => match result {
                // Any answer means the provider has dealt with the cancel; a closed connection
                // is handled when the provider leaves.
                Ok(_) | Err(CallError::Remote(_) | CallError::Protocol(_)) => Input::CancelAcked {
                    id,
                    attempt,
                    provider,
                },
                Err(e) => {
                    tracing::debug!(%id, %provider, "cancel not acknowledged: {e}");
                    return;
                }
            },
            Command::Shutdown { done } => {
                self.machine.handle(now, Input::Shutdown);
                self.perform();
                let ids: Vec<ProviderId> = self.conns.keys().copied().collect();
                let conns: Vec<Conn> = ids.into_iter().filter_map(|id| self.forget(id)).collect();
                for conn in conns {
                    tokio::spawn(async move {
                        let reason =
                            CloseReason::new(CloseReason::GOING_AWAY, "broker shutting down");
                        conn.messenger.close(reason).await;
                    });
                }
                let _ = done.send(());
                return;
            }
            Command::Dashboard { reply } => {
                let snapshot = match &self.snapshot {
                    Some((at, snapshot)) if now.duration_since(*at) < SNAPSHOT_REUSE => {
                        snapshot.clone()
                    }
                    _ => {
                        let snapshot = Arc::new(self.dashboard());
                        self.snapshot = Some((now, snapshot.clone()));
                        snapshot
                    }
                };
                let _ = reply.send(snapshot);
                return;
            }
        };
        self.machine.handle_only(now, input);
    }

    /// Performs the machine's actions in order.
    fn perform(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            match action {
                Action::Send {
                    provider,
                    id,
                    attempt,
                    mut payload,
                    limit,
                    trace,
                } => {
                    let Some(conn) = self.conns.get(&provider) else {
                        continue; // cannot happen: the machine knows the providers we hold
                    };
                    if let Some(reason) = conn.messenger.close_reason() {
                        // Gone, and its ProviderLeft is still on the way: forget it now, so
                        // that no more tasks are placed there (this attempt is retried).
                        self.forget(provider);
                        self.cluster_changed = true;
                        let reason = reason.to_string();
                        // (`handle` places the task again; its actions follow in this loop.)
                        self.machine.handle(
                            Instant::now(),
                            Input::ProviderLeft {
                                id: provider,
                                reason,
                            },
                        );
                        continue;
                    }
                    prepare_request(&mut payload, limit, &trace);
                    let _ = conn.outbox.send(Outgoing::Task {
                        id,
                        attempt,
                        payload: Box::new(payload),
                    });
                }
                Action::Cancel {
                    provider,
                    id,
                    attempt,
                    reason,
                } => {
                    if let Some(conn) = self.conns.get(&provider) {
                        let cancel = proto::task::Cancel {
                            id: Some(id.clone()),
                            reason: Some(reason),
                        };
                        let _ = conn.outbox.send(Outgoing::Cancel {
                            id,
                            attempt,
                            cancel,
                        });
                    }
                }
                Action::Reply {
                    id,
                    mut result,
                    provider,
                    elapsed,
                    waited,
                    ran,
                    attempts,
                    trace,
                } => {
                    if let Ok(payload) = &mut result {
                        append_response_trace(payload, &trace);
                        let now = Instant::now();
                        self.recent.push_back(now);
                        if let Some(conn) = provider.and_then(|p| self.conns.get_mut(&p)) {
                            conn.recent.push_back(now);
                        }
                    }
                    let outcome = outcome(&result);
                    self.finished(&id, &result, provider, outcome, attempts, waited, ran);
                    self.metrics.complete(
                        outcome,
                        elapsed.as_secs_f64(),
                        waited.as_secs_f64(),
                        ran.map(|r| r.as_secs_f64()),
                    );
                    if let Some(reply) = self.replies.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
                Action::AttemptFailed {
                    provider,
                    id,
                    reason,
                } => {
                    let name = self.conns.get_mut(&provider).map(|conn| {
                        conn.failed += 1;
                        if conn.series {
                            let label = provider.to_string();
                            self.metrics.provider_task(&label, &conn.name, "failed");
                        }
                        conn.name.clone()
                    });
                    self.failure(id, name, "attempt".into(), reason);
                }
            }
        }
        self.update_metrics();
    }

    /// Forgets a provider's connection and its series in the metrics.
    fn forget(&mut self, id: ProviderId) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if conn.series {
            self.series -= 1;
            self.metrics.forget_provider(&id.to_string(), &conn.name);
        }
        Some(conn)
    }

    /// The books, metrics and log line of a finished task.
    #[allow(clippy::too_many_arguments)]
    fn finished(
        &mut self,
        id: &str,
        result: &Result<Payload, TaskError>,
        provider: Option<ProviderId>,
        outcome: &'static str,
        attempts: u32,
        waited: Duration,
        ran: Option<Duration>,
    ) {
        let name = provider.and_then(|p| {
            let conn = self.conns.get_mut(&p)?;
            conn.done += 1;
            if conn.series {
                self.metrics
                    .provider_task(&p.to_string(), &conn.name, "done");
            }
            Some(conn.name.clone())
        });
        let totals = &mut self.totals;
        totals.completed += 1;
        totals.queue_wait_seconds += waited.as_secs_f64();
        if let Some(ran) = ran {
            totals.run_seconds += ran.as_secs_f64();
            totals.run_count += 1;
        }
        if let Some(log) = &self.task_log
            && tracing::enabled!(target: "wasimoff_broker::tasks", tracing::Level::INFO)
        {
            // Written by another task: a slow log sink never holds up the dispatcher; when
            // the writer falls behind, lines are dropped and counted.
            let line = TaskLine {
                id: id.to_owned(),
                provider: name.clone(),
                outcome,
                attempts,
                waited,
                ran,
            };
            if log.try_send(line).is_err() {
                self.task_lines_dropped += 1;
            }
        }
        if outcome != "ok" {
            self.totals.failed += 1;
            self.failure(
                id.to_owned(),
                name,
                outcome.to_owned(),
                failure_text(result),
            );
        }
    }

    /// Keeps a failure for the operator view (bounded by count and bytes).
    fn failure(&mut self, task: String, provider: Option<String>, outcome: String, text: String) {
        if self.failures.len() >= operator::FAILURES_KEPT {
            self.failures.pop_front();
        }
        self.failures.push_back(FailureView {
            at: operator::unix_millis(),
            task: operator::truncate(task),
            provider,
            outcome,
            message: operator::truncate(text),
        });
    }

    fn dashboard(&self) -> Dashboard {
        let mut providers: Vec<(ProviderId, ProviderView)> = self
            .conns
            .iter()
            .map(|(id, conn)| {
                let (slots, running, backed_off) =
                    self.machine.provider_books(*id).unwrap_or_default();
                let view = ProviderView {
                    id: id.to_string(),
                    name: conn.name.clone(),
                    kind: conn.kind,
                    agent: conn.agent.clone(),
                    slots,
                    workers: conn.split.load().map(|(w, _)| w),
                    prefetch: conn.split.load().map(|(_, p)| p),
                    running,
                    backed_off,
                    done: conn.done,
                    failed: conn.failed,
                    connected_at: conn.connected_at,
                    last_seen: conn.last_seen.load(Ordering::Relaxed),
                };
                (*id, view)
            })
            .collect();
        providers.sort_unstable_by_key(|(id, _)| id.0);
        Dashboard {
            now: operator::unix_millis(),
            version: env!("CARGO_PKG_VERSION"),
            queued: self.machine.queued() as u64,
            running: self.machine.running() as u64,
            held_bytes: self.machine.held_bytes() as u64,
            slots: self.machine.advertised_slots(),
            totals: self.totals.clone(),
            providers: providers.into_iter().map(|(_, view)| view).collect(),
            failures: self.failures.iter().rev().cloned().collect(),
        }
    }

    fn update_metrics(&mut self) {
        let m = &self.metrics;
        m.queued.set(self.machine.queued() as i64);
        m.running.set(self.machine.running() as i64);
        m.held_bytes.set(self.machine.held_bytes() as i64);
        m.providers.set(self.machine.providers() as i64);
        m.workers.set(self.machine.advertised_slots() as i64);
        let retries = self.machine.stats().retries;
        m.retries.inc_by(retries - self.retries);
        self.retries = retries;
    }

    fn broadcast_cluster(&self) {
        let info = proto::event::ClusterInfo {
            providers: Some(self.conns.len() as u32),
        };
        for conn in self.conns.values() {
            conn.messenger.try_send_event(info);
        }
    }

    fn broadcast_throughput(&mut self) {
        let now = Instant::now();
        let window_start = now.checked_sub(THROUGHPUT_WINDOW);
        let expire = |q: &mut VecDeque<Instant>| {
            while q.front().is_some_and(|t| Some(*t) < window_start) {
                q.pop_front();
            }
            q.len() as f32 / THROUGHPUT_WINDOW.as_secs_f32()
        };
        let overall = expire(&mut self.recent);
        for conn in self.conns.values_mut() {
            let yours = expire(&mut conn.recent);
            let event = proto::event::Throughput {
                overall: Some(overall),
                yours: Some(yours),
            };
            conn.messenger.try_send_event(event);
        }
    }
}

/// Puts one provider's requests on its connection in the order they come, and reports their
/// answers. Ends when the shell forgets the provider (pending answers are then dropped).
async fn run_outbox(
    provider: ProviderId,
    messenger: Messenger,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    tx: mpsc::UnboundedSender<Command>,
) {
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            outgoing = queue.recv() => {
                let Some(outgoing) = outgoing else { break };
                let (id, attempt, is_task, call) = match outgoing {
                    Outgoing::Task { id, attempt, payload } => {
                        (id, attempt, true, messenger.start_call(*payload).await)
                    }
                    Outgoing::Cancel { id, attempt, cancel } => {
                        (id, attempt, false, messenger.start_call(cancel).await)
                    }
                };
                pending.push(async move {
                    let result = match call {
                        Ok(call) => call.response().await,
                        Err(e) => Err(e),
                    };
                    if is_task {
                        Command::Answered { id, attempt, provider, result }
                    } else {
                        Command::CancelAnswered { id, attempt, provider, result }
                    }
                });
            }
            Some(command) = pending.next(), if !pending.is_empty() => {
                if tx.send(command).is_err() {
                    break;
                }
            }
        }
    }
}

/// A wire failure as the machine's typed answer.
fn classify(result: Result<Payload, CallError>) -> Answer {
    match result {
        Ok(payload) => Answer::Response(Box::new(payload)),
        Err(CallError::Remote(text)) => match RemoteError::parse(&text) {
            RemoteError::Refused(refusal) => Answer::Refused(refusal),
            RemoteError::Failed(text) => Answer::Failed(text),
        },
        Err(CallError::Protocol(e)) => Answer::Malformed(e),
        Err(CallError::Closed(reason)) => Answer::Lost(reason.to_string()),
        // (No timeout is set on task calls; CallError is non-exhaustive.)
        Err(e) => Answer::Lost(e.to_string()),
    }
}

/// Unix nanoseconds of a machine instant.
fn unix_nanos_at(at: Instant) -> i64 {
    let ago = Instant::now().saturating_duration_since(at);
    wasimoff_core::platform::unix_nanos() - i64::try_from(ago.as_nanos()).unwrap_or(i64::MAX)
}

fn trace_event(note: &TraceNote) -> task::TraceEvent {
    task::TraceEvent {
        unixnano: Some(unix_nanos_at(note.at)),
        event: Some(note.event as i32),
        details: note.details.clone(),
    }
}

/// Tells the provider the attempt's time limit (as the QoS deadline it enforces) and appends
/// the broker's trace events.
fn prepare_request(payload: &mut Payload, limit: Duration, notes: &[TraceNote]) {
    let (qos, info) = match payload {
        Payload::Wasip1Request(r) => (&mut r.qos, &mut r.info),
        Payload::PyodideRequest(r) => (&mut r.qos, &mut r.info),
        _ => return,
    };
    let limit = i128::try_from(limit.as_nanos()).unwrap_or(i128::MAX);
    let deadline = i128::from(wasimoff_core::platform::unix_nanos()).saturating_add(limit);
    qos.get_or_insert_with(Default::default).deadline = Some(Timestamp::from_unix_nanos(deadline));
    if let Some(trace) = info.as_mut().and_then(|i| i.trace.as_mut()) {
        trace.events.extend(notes.iter().map(trace_event));
        trace.events.push(task::TraceEvent {
            unixnano: Some(wasimoff_core::platform::unix_nanos()),
            event: Some(task::trace_event::EventType::BrokerTransmitProviderTask as i32),
            details: None,
        });
    }
}

/// Appends the broker's events since the request left to a response's trace.
fn append_response_trace(payload: &mut Payload, notes: &[TraceNote]) {
    if notes.is_empty() {
        return;
    }
    let info = match payload {
        Payload::Wasip1Response(r) => &mut r.info,
        Payload::PyodideResponse(r) => &mut r.info,
        _ => return,
    };
    if let Some(trace) = info.as_mut().and_then(|i| i.trace.as_mut()) {
        trace.events.extend(notes.iter().map(trace_event));
    }
}

/// What went wrong with a task that did not end `ok` (for the operator view; cut later).
fn failure_text(result: &Result<Payload, TaskError>) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(Payload::Wasip1Response(r)) => match &r.result {
            Some(task::wasip1::response::Result::Ok(o)) => {
                format!("exit status {}", o.status.unwrap_or(0))
            }
            Some(task::wasip1::response::Result::Error(e)) => e.clone(),
            None => "empty result".into(),
        },
        Ok(Payload::PyodideResponse(r)) => match &r.result {
            Some(task::pyodide::response::Result::Error(e)) => e.clone(),
            Some(_) => String::new(),
            None => "empty result".into(),
        },
        Ok(other) => format!("unexpected {}", other.type_name()),
    }
}

/// The metrics label of a task's outcome: how the guest ended, or the error's Connect code.
fn outcome(result: &Result<Payload, TaskError>) -> &'static str {
    let error = match result {
        Err(e) => return e.connect_code(),
        Ok(Payload::Wasip1Response(r)) => match &r.result {
            Some(task::wasip1::response::Result::Ok(o)) => {
                return if o.status.unwrap_or(0) == 0 {
                    "ok"
                } else {
                    "exit_nonzero"
                };
            }
            Some(task::wasip1::response::Result::Error(e)) => e.as_str(),
            None => return "failed",
        },
        Ok(Payload::PyodideResponse(r)) => match &r.result {
            Some(task::pyodide::response::Result::Ok(_)) => return "ok",
            Some(task::pyodide::response::Result::Error(e)) => e.as_str(),
            None => return "failed",
        },
        Ok(_) => return "failed",
    };
    match FailureKind::classify(error) {
        FailureKind::Timeout => "timeout",
        FailureKind::Memory => "memory",
        FailureKind::Fuel => "fuel",
        FailureKind::Trap => "trap",
        FailureKind::Cancelled => "canceled",
        FailureKind::Other => "failed",
    }
}

/// Nanoseconds per task through the dispatcher's machine alone (submit, send, answer, reply)
/// with `providers` providers of 4 slots each, half of all slots busy; for the scale benchmark.
#[doc(hidden)]
pub fn machine_decision_cost(providers: u64, tasks: u64) -> f64 {
    let config = DispatchConfig {
        max_queue: usize::MAX,
        ..DispatchConfig::default()
    };
    let mut machine = Machine::new(
        Box::new(wasimoff_core::scheduler::LocalityScheduler::default()),
        config,
    );
    let now = Instant::now();
    for id in 0..providers {
        let id = ProviderId(id);
        let files = vec![format!("sha256:{:064x}", id.0 % 16)];
        let name = format!("provider-{}", id.0);
        machine.handle(now, Input::ProviderJoined { id, name, files });
        machine.handle(now, Input::Resources { id, concurrency: 4 });
    }
    let binaries: Vec<String> = (0..32).map(|i| format!("sha256:{i:064x}")).collect();
    let answer = Payload::Wasip1Response(task::wasip1::Response::default());
    let mut running = VecDeque::new();
    let started = Instant::now();
    for i in 0..tasks {
        let job = Job {
            id: format!("task-{i}"),
            payload: Box::new(Payload::Wasip1Request(task::wasip1::Request::default())),
            binary: Some(binaries[(i % 32) as usize].clone()),
            priority: false,
            immediate: false,
            patient: false,
            resumed: false,
            trace: false,
            cost: 1,
        };
        machine.handle(
            now,
            Input::Submit {
                job,
                deadline: now + Duration::from_secs(600),
            },
        );
        while let Some(action) = machine.poll_action() {
            if let Action::Send {
                provider,
                id,
                attempt,
                ..
            } = action
            {
                running.push_back((id, attempt, provider));
            }
        }
        if running.len() as u64 > providers * 2 {
            let Some((id, attempt, provider)) = running.pop_front() else {
                break;
            };
            let answer = Answer::Response(Box::new(answer.clone()));
            machine.handle(
                now,
                Input::Answer {
                    id,
                    attempt,
                    provider,
                    answer,
                },
            );
            while machine.poll_action().is_some() {}
        }
    }
    started.elapsed().as_nanos() as f64 / tasks as f64
}

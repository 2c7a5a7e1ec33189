//! The dispatcher: one task that owns the queue, the scheduler and the provider registry.
//!
//! Everything that changes who runs what goes through its command channel: submissions,
//! cancellations, providers joining and leaving, resource and file updates, and the end of each
//! attempt. That keeps the books in one place without locks; the work itself (talking to a
//! provider) happens in one spawned future per attempt, which reports back with
//! [`Command::AttemptDone`].
//!
//! Architecture Invariant: every `pick` of the scheduler is matched by exactly one
//! `TaskFinished`: when its attempt reports back, or when the task is cancelled while running
//! (then the late report of the aborted attempt is recognised by its attempt number and ignored).
//!
//! Architecture Invariant: a task is answered exactly once: with the provider's response, or
//! with a [`TaskError`]; retries happen only for provider loss, transport failure and provider
//! timeout, never twice in a row on the same provider, at most `max_attempts` times.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};
use wasimoff_core::envelope::Payload;
use wasimoff_core::messenger::{CallError, Messenger};
use wasimoff_core::proto;
use wasimoff_core::scheduler::{Placement, ProviderId, Scheduler, SchedulerEvent};
use wasimoff_core::transport::CloseReason;

use crate::error::TaskError;
use crate::metrics::Metrics;

/// A task as the dispatcher sees it: an opaque request for a provider.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: String,
    /// The `Task.Wasip1.Request` or `Task.Pyodide.Request` to send.
    pub(crate) payload: Payload,
    /// The module's ref, for locality.
    pub(crate) binary: Option<String>,
    pub(crate) priority: bool,
    pub(crate) immediate: bool,
}

pub(crate) type Reply = oneshot::Sender<Result<Payload, TaskError>>;

/// What the dispatcher is told.
pub(crate) enum Command {
    Submit {
        job: Job,
        deadline: Instant,
        reply: Reply,
    },
    Cancel {
        id: String,
        reason: String,
    },
    ProviderJoined {
        id: ProviderId,
        name: String,
        messenger: Messenger,
        files: Vec<String>,
    },
    ProviderLeft {
        id: ProviderId,
    },
    Resources {
        id: ProviderId,
        concurrency: u32,
    },
    Files {
        id: ProviderId,
        added: Vec<String>,
        removed: Vec<String>,
    },
    AttemptDone {
        id: String,
        attempt: u32,
        provider: ProviderId,
        result: Result<Payload, CallError>,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

struct ProviderEntry {
    name: String,
    messenger: Messenger,
    concurrency: u32,
    /// Completion times in the last few seconds, for `Throughput.yours`.
    recent: VecDeque<Instant>,
}

struct Running {
    provider: ProviderId,
    attempt: u32,
    abort: tokio::task::AbortHandle,
}

struct TaskState {
    job: Job,
    reply: Option<Reply>,
    submitted: Instant,
    deadline: Instant,
    attempts: u32,
    /// The provider that failed the last attempt.
    exclude: Option<ProviderId>,
    last_error: Option<String>,
    running: Option<Running>,
}

/// Settings the dispatcher needs.
#[derive(Clone, Debug)]
pub(crate) struct DispatchConfig {
    pub(crate) max_queue: usize,
    pub(crate) max_attempts: u32,
    /// The longest one attempt may take before the provider counts as failed and the task
    /// is tried elsewhere (never past the task's deadline).
    pub(crate) attempt_timeout: Duration,
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
        metrics: Arc<Metrics>,
    ) -> Dispatch {
        let (tx, rx) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher {
            scheduler,
            config,
            metrics,
            tx: tx.clone(),
            providers: HashMap::new(),
            tasks: HashMap::new(),
            high: VecDeque::new(),
            low: VecDeque::new(),
            retry: VecDeque::new(),
            queued: 0,
            recent: VecDeque::new(),
            cluster_changed: false,
            shutting_down: false,
        };
        tokio::spawn(dispatcher.run(rx));
        Dispatch { tx }
    }

    pub(crate) fn send(&self, command: Command) {
        // Fails only after shutdown, when nothing is listening any more.
        let _ = self.tx.send(command);
    }

    /// Submits a job and waits for its result, at most until `deadline`. Dropping the future
    /// (the client went away) cancels the task.
    pub(crate) async fn run(&self, job: Job, deadline: Instant) -> Result<Payload, TaskError> {
        let (reply, result) = oneshot::channel();
        let mut guard = CancelOnDrop {
            dispatch: self,
            id: Some(job.id.clone()),
        };
        self.send(Command::Submit {
            job,
            deadline,
            reply,
        });
        let result = tokio::time::timeout_at(deadline.into(), result).await;
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
                    self.send(Command::Cancel {
                        id,
                        reason: "deadline exceeded".into(),
                    });
                }
                Err(TaskError::DeadlineExceeded)
            }
        }
    }
}

/// Cancels a submitted task when the waiting future is dropped early.
struct CancelOnDrop<'a> {
    dispatch: &'a Dispatch,
    id: Option<String>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.dispatch.send(Command::Cancel {
                id,
                reason: "client went away".into(),
            });
        }
    }
}

struct Dispatcher {
    scheduler: Box<dyn Scheduler>,
    config: DispatchConfig,
    metrics: Arc<Metrics>,
    tx: mpsc::UnboundedSender<Command>,
    providers: HashMap<ProviderId, ProviderEntry>,
    tasks: HashMap<String, TaskState>,
    /// Ids of queued priority tasks (may hold ids of tasks cancelled meanwhile).
    high: VecDeque<String>,
    /// Ids of other queued tasks (same).
    low: VecDeque<String>,
    /// Ids of tasks waiting for another attempt (same).
    retry: VecDeque<String>,
    queued: usize,
    /// Completion times in the last few seconds, for `Throughput.overall`.
    recent: VecDeque<Instant>,
    /// Providers joined or left since the last `ClusterInfo` broadcast.
    cluster_changed: bool,
    shutting_down: bool,
}

/// The window over which throughput is averaged.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(5);

impl Dispatcher {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let Some(command) = command else { break };
                    if let Command::Shutdown { done } = command {
                        self.shutdown();
                        let _ = done.send(());
                        continue;
                    }
                    self.handle(command);
                    // Drain what else is waiting before placing tasks: fewer, fuller passes.
                    while let Ok(command) = rx.try_recv() {
                        if let Command::Shutdown { done } = command {
                            self.shutdown();
                            let _ = done.send(());
                            continue;
                        }
                        self.handle(command);
                    }
                    self.dispatch();
                }
                _ = tick.tick() => {
                    if std::mem::take(&mut self.cluster_changed) {
                        self.broadcast_cluster();
                    }
                    self.broadcast_throughput();
                }
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit {
                job,
                deadline,
                reply,
            } => self.submit(job, deadline, reply),
            Command::Cancel { id, reason } => self.cancel(&id, &reason),
            Command::ProviderJoined {
                id,
                name,
                messenger,
                files,
            } => {
                tracing::info!(%id, %name, files = files.len(), "provider joined");
                self.scheduler
                    .handle(SchedulerEvent::ProviderJoined { id, slots: 0 });
                self.scheduler
                    .handle(SchedulerEvent::FilesAdded { id, refs: files });
                // The newcomer hears the cluster size at once, the others with the next tick:
                // a broadcast per join costs O(providers²) when many join together.
                let size = self.providers.len() as u32 + 1;
                messenger.try_send_event(proto::event::ClusterInfo {
                    providers: Some(size),
                });
                let entry = ProviderEntry {
                    name,
                    messenger,
                    concurrency: 0,
                    recent: VecDeque::new(),
                };
                self.providers.insert(id, entry);
                self.metrics.providers.set(self.providers.len() as i64);
                self.cluster_changed = true;
            }
            Command::ProviderLeft { id } => {
                if let Some(p) = self.providers.remove(&id) {
                    tracing::info!(%id, name = %p.name, "provider left");
                    self.scheduler.handle(SchedulerEvent::ProviderLeft { id });
                    self.metrics.providers.set(self.providers.len() as i64);
                    self.update_workers();
                    self.cluster_changed = true;
                }
            }
            Command::Resources { id, concurrency } => {
                if let Some(p) = self.providers.get_mut(&id) {
                    p.concurrency = concurrency;
                    self.scheduler.handle(SchedulerEvent::ProviderResources {
                        id,
                        slots: concurrency,
                    });
                    self.update_workers();
                }
            }
            Command::Files { id, added, removed } => {
                if self.providers.contains_key(&id) {
                    self.scheduler
                        .handle(SchedulerEvent::FilesAdded { id, refs: added });
                    self.scheduler
                        .handle(SchedulerEvent::FilesRemoved { id, refs: removed });
                }
            }
            Command::AttemptDone {
                id,
                attempt,
                provider,
                result,
            } => {
                self.attempt_done(id, attempt, provider, result);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn update_workers(&self) {
        let workers: u64 = self
            .providers
            .values()
            .map(|p| u64::from(p.concurrency))
            .sum();
        self.metrics.workers.set(workers as i64);
    }

    fn submit(&mut self, job: Job, deadline: Instant, reply: Reply) {
        if self.shutting_down {
            let _ = reply.send(Err(TaskError::ShuttingDown));
            return;
        }
        if self.queued >= self.config.max_queue {
            self.metrics.complete("resource_exhausted", 0.0);
            let _ = reply.send(Err(TaskError::QueueFull(self.queued)));
            return;
        }
        if self.tasks.contains_key(&job.id) {
            let _ = reply.send(Err(TaskError::Internal(format!(
                "duplicate task id {}",
                job.id
            ))));
            return;
        }
        let id = job.id.clone();
        let (priority, immediate) = (job.priority, job.immediate);
        let state = TaskState {
            job,
            reply: Some(reply),
            submitted: Instant::now(),
            deadline,
            attempts: 0,
            exclude: None,
            last_error: None,
            running: None,
        };
        self.tasks.insert(id.clone(), state);
        if immediate {
            // Place it now or fail it now.
            let placed = self.try_place(&id);
            if !placed {
                self.finish(
                    &id,
                    Err(TaskError::Unavailable("no free provider slot".into())),
                );
            }
            return;
        }
        if priority {
            self.high.push_back(id);
        } else {
            self.low.push_back(id);
        }
        self.queued += 1;
        self.metrics.queued.set(self.queued as i64);
    }

    /// Places queued tasks while providers have free slots: retried tasks first (each is
    /// tried; one that excludes the only free provider stays), then priority, then the rest.
    fn dispatch(&mut self) {
        let mut still = VecDeque::new();
        while let Some(id) = self.retry.pop_front() {
            let waiting = self.tasks.get(&id).is_some_and(|t| t.running.is_none());
            if !waiting {
                continue;
            }
            if self.scheduler.free_slots() > 0 && self.try_place(&id) {
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
                let waiting = self.tasks.get(&id).is_some_and(|t| t.running.is_none());
                if !waiting {
                    continue; // cancelled or finished meanwhile
                }
                self.queued -= 1;
                if !self.try_place(&id) {
                    self.queued += 1;
                    passed.push(id);
                }
            }
            let queue = if high { &mut self.high } else { &mut self.low };
            for id in passed.into_iter().rev() {
                queue.push_front(id);
            }
        }
        self.metrics.queued.set(self.queued as i64);
    }

    /// Picks a provider for a task and starts an attempt there; false if none fits.
    fn try_place(&mut self, id: &str) -> bool {
        let Some(task) = self.tasks.get_mut(id) else {
            return false;
        };
        // Never the same provider twice in a row, unless it is the only one there is: then a
        // second try there beats waiting for the deadline.
        let exclude = task.exclude.filter(|_| self.providers.len() > 1);
        let placement = Placement {
            binary: task.job.binary.as_deref(),
            exclude,
        };
        let Some(provider) = self.scheduler.pick(&placement) else {
            return false;
        };
        let Some(entry) = self.providers.get(&provider) else {
            // The scheduler knew a provider we do not: give the slot back and wait.
            self.scheduler
                .handle(SchedulerEvent::TaskFinished { id: provider });
            return false;
        };
        if entry.messenger.is_closed() {
            // Gone, and its ProviderLeft is still on the way: forget it now, so that no more
            // tasks are placed there to fail.
            self.scheduler
                .handle(SchedulerEvent::ProviderLeft { id: provider });
            self.providers.remove(&provider);
            self.metrics.providers.set(self.providers.len() as i64);
            self.update_workers();
            self.cluster_changed = true;
            return false;
        }
        task.attempts += 1;
        let attempt = task.attempts;
        let payload = with_provider(task.job.payload.clone(), &entry.name);
        let messenger = entry.messenger.clone();
        let tx = self.tx.clone();
        let left = task.deadline.saturating_duration_since(Instant::now());
        let timeout = self
            .config
            .attempt_timeout
            .min(left)
            .max(Duration::from_millis(1));
        let task_id = id.to_owned();
        let handle = tokio::spawn(async move {
            let result = messenger.call_with_timeout(payload, timeout).await;
            let _ = tx.send(Command::AttemptDone {
                id: task_id,
                attempt,
                provider,
                result,
            });
        });
        task.running = Some(Running {
            provider,
            attempt,
            abort: handle.abort_handle(),
        });
        self.metrics.running.inc();
        true
    }

    fn attempt_done(
        &mut self,
        id: String,
        attempt: u32,
        provider: ProviderId,
        result: Result<Payload, CallError>,
    ) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        if task.running.as_ref().is_none_or(|r| r.attempt != attempt) {
            return; // an attempt that was cancelled; its slot was given back then
        }
        task.running = None;
        self.metrics.running.dec();
        self.scheduler
            .handle(SchedulerEvent::TaskFinished { id: provider });
        let retry = match &result {
            Ok(_) => None,
            Err(CallError::Closed(reason)) => Some(format!("provider lost: {reason}")),
            Err(CallError::Timeout(t)) => {
                if let Some(p) = self.providers.get(&provider) {
                    send_cancel(&p.messenger, &id, "provider timeout");
                }
                Some(format!("provider timed out after {t:?}"))
            }
            // The provider refused for lack of capacity: it is healthy, only busy for a moment
            // (a slot it freed has not reached our books yet, or a cancelled task is still
            // stopping there). Place the task again, without blame: no attempt is counted
            // and no provider excluded.
            Err(CallError::Remote(e)) if e.starts_with("unavailable") => {
                tracing::debug!(%id, %provider, "provider refused: {e}");
                task.attempts = task.attempts.saturating_sub(1);
                self.retry.push_back(id);
                self.queued += 1;
                return;
            }
            Err(_) => None,
        };
        match (retry, result) {
            (None, Ok(payload)) => {
                let now = Instant::now();
                self.recent.push_back(now);
                if let Some(p) = self.providers.get_mut(&provider) {
                    p.recent.push_back(now);
                }
                self.finish(&id, Ok(payload));
            }
            (None, Err(e)) => self.finish(&id, Err(TaskError::ProviderFailed(e.to_string()))),
            (Some(why), _) => {
                tracing::debug!(%id, %provider, %why, "attempt failed");
                let task = self
                    .tasks
                    .get_mut(&id)
                    .expect("checked above; nothing removed it");
                task.last_error = Some(why.clone());
                if task.attempts >= self.config.max_attempts || task.job.immediate {
                    let attempts = task.attempts;
                    let error =
                        TaskError::ProviderFailed(format!("{why} (after {attempts} attempts)"));
                    self.finish(&id, Err(error));
                } else {
                    task.exclude = Some(provider);
                    self.metrics.retries.inc();
                    // Retried tasks go first; they wait apart from the queues because their
                    // exclusion may keep them from the only free provider, and must then not
                    // hold up the tasks behind them.
                    self.retry.push_back(id);
                    self.queued += 1;
                }
            }
        }
    }

    fn cancel(&mut self, id: &str, reason: &str) {
        let task_id = id;
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        match task.running.take() {
            Some(running) => {
                running.abort.abort();
                self.metrics.running.dec();
                self.scheduler.handle(SchedulerEvent::TaskFinished {
                    id: running.provider,
                });
                if let Some(p) = self.providers.get(&running.provider) {
                    send_cancel(&p.messenger, id, reason);
                }
            }
            None => {
                // Still queued: its id stays in the queue and is skipped when reached, unless
                // such leftovers pile up (cancellations while no slot frees): then sweep.
                self.queued = self.queued.saturating_sub(1);
                self.metrics.queued.set(self.queued as i64);
                let ids = self.high.len() + self.low.len() + self.retry.len();
                if ids > 2 * self.queued + 1024 {
                    let tasks = &self.tasks;
                    let live = |id: &String| {
                        id != task_id && tasks.get(id).is_some_and(|t| t.running.is_none())
                    };
                    self.high.retain(live);
                    self.low.retain(live);
                    self.retry.retain(live);
                }
            }
        }
        let error = if reason == "deadline exceeded" {
            TaskError::DeadlineExceeded
        } else {
            TaskError::Cancelled(reason.to_owned())
        };
        self.finish(id, Err(error));
    }

    fn finish(&mut self, id: &str, result: Result<Payload, TaskError>) {
        let Some(mut task) = self.tasks.remove(id) else {
            return;
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.connect_code(),
        };
        self.metrics
            .complete(outcome, task.submitted.elapsed().as_secs_f64());
        if let Some(reply) = task.reply.take() {
            let _ = reply.send(result);
        }
    }

    fn shutdown(&mut self) {
        self.shutting_down = true;
        let ids: Vec<String> = self.tasks.keys().cloned().collect();
        for id in ids {
            if let Some(task) = self.tasks.get_mut(&id)
                && let Some(running) = task.running.take()
            {
                running.abort.abort();
                self.scheduler.handle(SchedulerEvent::TaskFinished {
                    id: running.provider,
                });
                if let Some(p) = self.providers.get(&running.provider) {
                    send_cancel(&p.messenger, &id, "broker is shutting down");
                }
            }
            self.finish(&id, Err(TaskError::ShuttingDown));
        }
        self.high.clear();
        self.low.clear();
        self.retry.clear();
        self.queued = 0;
        self.metrics.queued.set(0);
        self.metrics.running.set(0);
        for p in self.providers.values() {
            let messenger = p.messenger.clone();
            tokio::spawn(async move {
                messenger
                    .close(CloseReason::new(
                        CloseReason::GOING_AWAY,
                        "broker shutting down",
                    ))
                    .await;
            });
        }
    }

    fn broadcast_cluster(&self) {
        let info = proto::event::ClusterInfo {
            providers: Some(self.providers.len() as u32),
        };
        for p in self.providers.values() {
            p.messenger.try_send_event(info);
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
        for p in self.providers.values_mut() {
            let yours = expire(&mut p.recent);
            let event = proto::event::Throughput {
                overall: Some(overall),
                yours: Some(yours),
            };
            p.messenger.try_send_event(event);
        }
    }
}

/// Tells a provider to stop a task; the answer (an echo) does not matter.
fn send_cancel(messenger: &Messenger, id: &str, reason: &str) {
    let messenger = messenger.clone();
    let cancel = proto::task::Cancel {
        id: Some(id.to_owned()),
        reason: Some(reason.to_owned()),
    };
    tokio::spawn(async move {
        let _ = messenger
            .call_with_timeout(cancel, Duration::from_secs(10))
            .await;
    });
}

/// Sets `info.provider` on a task request.
fn with_provider(payload: Payload, name: &str) -> Payload {
    match payload {
        Payload::Wasip1Request(mut r) => {
            r.info.get_or_insert_with(Default::default).provider = Some(name.to_owned());
            Payload::Wasip1Request(r)
        }
        Payload::PyodideRequest(mut r) => {
            r.info.get_or_insert_with(Default::default).provider = Some(name.to_owned());
            Payload::PyodideRequest(r)
        }
        other => other,
    }
}

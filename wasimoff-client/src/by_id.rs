//! [`Client::run_all`]: many tasks submitted by id (`POST /api/client/tasks`) and their results
//! fetched by id, through broker restarts and broken connections.
//!
//! Tasks are submitted in batches (`POST /api/client/tasks/batch`) and each gets an id; the ids of unfinished tasks are followed with one
//! request at a time ([`Client::wait_any`]), and each finished result is fetched once. While the
//! broker cannot be reached (or answers 503 while it shuts down), every step is retried with
//! backoff for [`ClientBuilder::reconnect_for`](crate::ClientBuilder::reconnect_for). A broker
//! with durable task state keeps the accepted tasks across a restart, so the same stream goes
//! on and yields every result exactly once: an id is fetched once and then forgotten here.
//!
//! What can repeat: a submission whose answer was lost (the broker accepted it, then the
//! connection broke) is submitted again, so the task may *run* twice; its result is still
//! yielded once.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, FuturesUnordered, StreamExt};
use futures::{FutureExt, SinkExt};

use crate::client::{Client, Finished};
use crate::error::{Error, Result};
use crate::task::{Output, Task};

/// Tasks per submission (`POST /api/client/tasks/batch`).
const BATCH: usize = 64;
/// Submissions in flight at once.
const BATCHES_AT_ONCE: usize = 4;
/// Results fetched at once.
const FETCHES_AT_ONCE: usize = 16;
/// The most ids one wait names (the broker's bound).
const MAX_WAIT_IDS: usize = 10_000;
/// How long one wait lasts once everything is submitted.
const LONG_WAIT: Duration = Duration::from_secs(30);
/// How long one wait lasts while tasks are still being submitted (so that new ids join soon).
const SHORT_WAIT: Duration = Duration::from_millis(500);
/// The first and the longest pause between attempts to reach the broker.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

impl Client {
    /// Runs many tasks through the broker's submit-by-id API, at most `max_pending` (up to
    /// 10,000) accepted and unfinished at a time, and yields `(index, result)` pairs as tasks
    /// complete (`index` is the task's position in `tasks`). Every task yields exactly one
    /// item.
    ///
    /// Unlike [`Client::submit_many`], which holds one WebSocket, this survives the broker's
    /// restart: a broker with durable task state (the default with a data directory) runs the
    /// accepted tasks again after it comes back, and this stream reconnects (for up to
    /// [`ClientBuilder::reconnect_for`](crate::ClientBuilder::reconnect_for)) and goes on. A
    /// task the restarted broker no longer knows (it kept tasks in memory only) fails with
    /// [`Error::NotFound`]. A broker without the submit-by-id API (the original Go broker)
    /// gets the tasks over the WebSocket instead.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use wasimoff_client::{Client, Task};
    ///
    /// # async fn demo(client: Client) {
    /// let tasks = (0..1000).map(|i| Task::wasip1("tsp.wasm").args(["rand".into(), i.to_string()]));
    /// let mut results = client.run_all(tasks, 256);
    /// while let Some((index, result)) = results.next().await {
    ///     match result {
    ///         Ok(output) => print!("{index}: {}", output.stdout_lossy()),
    ///         Err(e) => eprintln!("{index} failed: {e}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn run_all<I>(
        &self,
        tasks: I,
        max_pending: usize,
    ) -> BoxStream<'static, (usize, Result<Output>)>
    where
        I: IntoIterator<Item = Task>,
        I::IntoIter: Send + 'static,
    {
        let client = self.clone();
        let tasks = tasks.into_iter();
        stream::once(async move {
            match client.by_id_supported().await {
                Ok(true) => client.run_all_by_id(tasks, max_pending),
                Ok(false) => client.submit_many(tasks, max_pending),
                Err(error) => stream::iter(tasks)
                    .enumerate()
                    .map(move |(index, _)| (index, Err(error.clone())))
                    .boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    /// Whether the broker has the submit-by-id API (`false`: the route is missing, as on the
    /// original broker); an error if it cannot be asked. Of several brokers
    /// ([`Client::brokers`]), the first that can be reached answers.
    pub(crate) async fn by_id_supported(&self) -> Result<bool> {
        let mut unreachable = None;
        for base in self.brokers() {
            match self.at(base).wait_any(&[], Duration::ZERO).await {
                Ok(_) => return Ok(true),
                Err(Error::EndpointNotFound(_)) => return Ok(false),
                Err(e) if !broker_answered(&e) => unreachable = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(unreachable.unwrap_or_else(|| Error::Local("no broker to ask".into())))
    }

    /// [`Client::run_all`] on a broker known to have the submit-by-id API.
    pub(crate) fn run_all_by_id<I>(
        &self,
        tasks: I,
        max_pending: usize,
    ) -> BoxStream<'static, (usize, Result<Output>)>
    where
        I: Iterator<Item = Task> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(max_pending.clamp(1, 1024));
        // Every unfinished id fits in one wait.
        let max_pending = max_pending.clamp(1, MAX_WAIT_IDS);
        tokio::spawn(drive(self.clone(), tasks, max_pending, tx));
        rx.boxed()
    }
}

/// The brokers one [`Client::run_all`] talks to ([`Client::brokers`]: one, or the brokers of a
/// cluster), and the one that answered last.
struct Brokers {
    clients: Vec<Client>,
    current: AtomicUsize,
    reconnect_for: Duration,
}

impl Brokers {
    fn new(client: &Client) -> Brokers {
        Brokers {
            clients: client.brokers().iter().map(|b| client.at(b)).collect(),
            current: AtomicUsize::new(0),
            reconnect_for: client.reconnect_for,
        }
    }

    /// Runs `step` at a broker until it succeeds, fails in a way reconnecting cannot fix, or
    /// no broker has been reachable for `reconnect_for`. It starts at broker `start` (else at
    /// the one that answered last) and tries the next one after each failure, pausing with
    /// backoff after each round of all of them.
    async fn reconnecting<T, F>(
        &self,
        start: Option<usize>,
        reachable_error: fn(&Error) -> bool,
        mut step: impl FnMut(Client) -> F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let n = self.clients.len();
        let mut at = start.unwrap_or_else(|| self.current.load(Ordering::Relaxed));
        let mut outage: Option<Instant> = None;
        let mut pause = BACKOFF_MIN;
        let mut failures = 0;
        loop {
            let client = self.clients[at % n].clone();
            match step(client).await {
                Ok(value) => {
                    if let Some(since) = outage {
                        tracing::info!(after = ?since.elapsed(), broker = %self.clients[at % n].url(), "reached a broker again");
                    }
                    self.current.store(at % n, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e) if !reachable_error(&e) => {
                    let since = *outage.get_or_insert_with(|| {
                        tracing::warn!(error = %e, broker = %self.clients[at % n].url(), "lost the broker; reconnecting");
                        Instant::now()
                    });
                    if since.elapsed() >= self.reconnect_for {
                        return Err(e);
                    }
                    at += 1;
                    failures += 1;
                    if failures % n == 0 {
                        tokio::time::sleep(jittered(pause)).await;
                        pause = (pause * 2).min(BACKOFF_MAX);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether an error came from the broker itself (so reconnecting is not what it needs): every
/// error but a transport error (a broken or refused connection, or a 502/503/504 without a
/// Connect error: a gateway, a broker at its connection limit) and `unavailable` (the broker
/// is shutting down).
fn broker_answered(e: &Error) -> bool {
    !matches!(e, Error::Transport(_) | Error::Unavailable(_))
}

/// For a fetched result, a Connect `unavailable` is the task's own outcome (nobody could run
/// it), not the broker's state: only a transport error is worth reconnecting.
fn result_answered(e: &Error) -> bool {
    !matches!(e, Error::Transport(_))
}

/// `pause`, give or take a quarter, so that many clients do not come back in step.
fn jittered(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let quarter = pause / 4;
    pause - quarter + quarter * (nanos % 2001) / 1000
}

type Item = (usize, Result<Output>);
/// What one submission gave: (index, id or why not) per task.
type Submitted = Vec<(usize, Result<String>)>;
/// What one wait round found, with the results the broker sent along.
type Waited = (Finished, Vec<(String, Result<Output>)>);

/// The loop behind [`Client::run_all_by_id`]: submits while fewer than `max_pending` are
/// unfinished, follows the unfinished ids, fetches each finished result once.
async fn drive<I>(client: Client, mut tasks: I, max_pending: usize, mut tx: mpsc::Sender<Item>)
where
    I: Iterator<Item = Task> + Send,
{
    let brokers = Arc::new(Brokers::new(&client));
    // Submissions go to the brokers in turn.
    let mut batches = 0usize;
    let mut next_index = 0;
    let mut exhausted = false;
    // Accepted and not yet yielded: id -> index.
    let mut pending: HashMap<String, usize> = HashMap::new();
    // Tasks in the submissions in flight.
    let mut in_submission = 0;
    let mut submitting: FuturesUnordered<BoxFuture<'static, Submitted>> = FuturesUnordered::new();
    let mut waiting: Option<BoxFuture<'static, Result<Waited>>> = None;
    loop {
        while !exhausted && submitting.len() < BATCHES_AT_ONCE {
            let room = max_pending.saturating_sub(pending.len() + in_submission);
            let (mut indices, mut requests) = (Vec::new(), Vec::new());
            while requests.len() < room.min(BATCH) {
                let Some(task) = tasks.next() else {
                    exhausted = true;
                    break;
                };
                indices.push(next_index);
                requests.push(task.into_request());
                next_index += 1;
            }
            if requests.is_empty() {
                break;
            }
            in_submission += requests.len();
            let brokers = brokers.clone();
            let start = batches;
            batches += 1;
            submitting.push(
                async move {
                    let requests = &requests;
                    let ids = brokers
                        .reconnecting(Some(start), broker_answered, |client| async move {
                            client.submit_batch(requests).await
                        })
                        .await;
                    match ids {
                        Ok(ids) => indices.into_iter().zip(ids).collect(),
                        Err(e) => indices.into_iter().map(|i| (i, Err(e.clone()))).collect(),
                    }
                }
                .boxed(),
            );
        }
        if pending.is_empty() && submitting.is_empty() {
            if exhausted {
                return;
            }
            continue;
        }
        if waiting.is_none() && !pending.is_empty() {
            let ids: Vec<String> = pending.keys().take(MAX_WAIT_IDS).cloned().collect();
            let wait = if exhausted && submitting.is_empty() {
                LONG_WAIT
            } else {
                SHORT_WAIT
            };
            let brokers = brokers.clone();
            waiting = Some(
                async move {
                    let ids = &ids;
                    brokers
                        .reconnecting(None, broker_answered, |client| async move {
                            client.wait_any_with_results(ids, wait).await
                        })
                        .await
                }
                .boxed(),
            );
        }
        let wait_round = async {
            match waiting.as_mut() {
                Some(round) => round.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(submitted) = submitting.next(), if !submitting.is_empty() => {
                in_submission -= submitted.len();
                for (index, id) in submitted {
                    match id {
                        Ok(id) => {
                            pending.insert(id, index);
                        }
                        Err(e) => {
                            if tx.send((index, Err(e))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            finished = wait_round => {
                waiting = None;
                let (finished, inline) = match finished {
                    Ok(finished) => finished,
                    Err(e) => {
                        // The broker stayed out of reach: every unfinished task fails with why.
                        let rest = (!exhausted).then_some(tasks);
                        fail_all(&mut tx, pending, submitting, rest, next_index, e).await;
                        return;
                    }
                };
                for id in finished.unknown {
                    if let Some(index) = pending.remove(&id) {
                        let error = Error::NotFound(format!(
                            "the broker no longer knows task {id}: its result expired, or the \
                             broker restarted without durable task state (--data-dir)"
                        ));
                        if tx.send((index, Err(error))).await.is_err() {
                            return;
                        }
                    }
                }
                for (id, result) in inline {
                    if let Some(index) = pending.remove(&id)
                        && tx.send((index, result)).await.is_err()
                    {
                        return;
                    }
                }
                let to_fetch: Vec<String> = finished
                    .done
                    .into_iter()
                    .filter(|id| pending.contains_key(id))
                    .collect();
                let mut fetches = stream::iter(to_fetch)
                    .map(|id| {
                        let brokers = brokers.clone();
                        async move {
                            let result = brokers
                                .reconnecting(None, result_answered, |client| {
                                    let id = &id;
                                    async move { client.result(id, Duration::ZERO).await }
                                })
                                .await;
                            (id, result)
                        }
                    })
                    .buffer_unordered(FETCHES_AT_ONCE);
                while let Some((id, result)) = fetches.next().await {
                    let result = match result {
                        // Done, yet pending when fetched: follow it again.
                        Ok(None) => continue,
                        Ok(Some(output)) => Ok(output),
                        Err(e) => Err(e),
                    };
                    // Removed as it is yielded: an id named twice is yielded once.
                    if let Some(index) = pending.remove(&id)
                        && tx.send((index, result)).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// Yields `error` for every task not yielded yet: accepted, being submitted, or not submitted.
async fn fail_all<I, S>(
    tx: &mut mpsc::Sender<Item>,
    pending: HashMap<String, usize>,
    submitting: S,
    // The tasks not taken yet (`None` once the iterator has ended: it may not be fused).
    tasks: Option<I>,
    next_index: usize,
    error: Error,
) where
    I: Iterator<Item = Task>,
    S: futures::Stream<Item = Submitted> + Unpin,
{
    let mut indices: Vec<usize> = pending.into_values().collect();
    // Submissions still running end by themselves (each with its own outage limit).
    let submitted: Vec<_> = submitting.collect().await;
    indices.extend(submitted.into_iter().flatten().map(|(index, _)| index));
    indices.extend(
        tasks
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, _)| next_index + i),
    );
    indices.sort_unstable();
    for index in indices {
        if tx.send((index, Err(error.clone()))).await.is_err() {
            return;
        }
    }
}

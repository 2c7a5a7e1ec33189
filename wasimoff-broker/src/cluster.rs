//! Brokers that share one NATS JetStream (`--nats`): a task submitted by id at one broker may
//! run on a provider of another, and its result is fetched at any of them.
//!
//! What JetStream holds (created by the first broker that connects, the same for all):
//! - **tasks**: the work-queue stream [`TASKS_STREAM`], one message per accepted task on
//!   `wasimoff.tasks.<id>` (a [`TaskRecord`]; `Nats-Msg-Id` is the id, so a repeated publish
//!   is dropped). Every broker pulls from one durable consumer ([`CONSUMER`]) only as many
//!   tasks as its own providers have free slots, runs each through its own dispatcher, and
//!   acknowledges it (which removes it) after its result is recorded. While a task runs its
//!   broker tells JetStream it is still working on it; a broker that dies stops doing so, and
//!   its tasks go to the other brokers after the ack wait.
//! - **results**: the KV bucket [`RESULTS_BUCKET`], key = task id, value = [`ResultRecord`],
//!   kept for the result TTL. A result is recorded with `create`, so the first one for an id
//!   wins: a task run twice (its broker died between recording and acknowledging) has one
//!   answer. Every broker watches the bucket and mirrors what it sees into its own table of
//!   kept results ([`crate::detached::Detached`], bounded by bytes), which wakes its waiting
//!   fetches.
//! - **files**: the object store [`FILES_BUCKET`], by content address. A task's files are put
//!   there when it is accepted and fetched from there by a broker whose own store misses them.
//!
//! Lookups: an id this broker's table does not know is looked up in the bucket (a result) and
//! then in the stream (pending), and remembered.
//!
//! The exactly-once argument is the journal's (see [`crate::by_id`]) with JetStream as the
//! journal: the client gets an id only after the stream acknowledged the publish; a result is
//! recorded first-wins before the task is acknowledged; a task without a result stays in the
//! stream until some broker records one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, PullConsumer, pull},
    kv,
    object_store::ObjectStore,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use tokio::io::AsyncReadExt;

use crate::error::TaskError;
use crate::journal::{ResultRecord, TaskRecord, unix_nanos};
use crate::state::{App, AppState};

/// The work-queue stream of accepted tasks.
pub(crate) const TASKS_STREAM: &str = "WASIMOFF_TASKS";
/// The subjects of [`TASKS_STREAM`]: `wasimoff.tasks.<id>`.
const TASK_SUBJECT: &str = "wasimoff.tasks";
/// The durable pull consumer that all brokers share.
pub(crate) const CONSUMER: &str = "brokers";
/// The KV bucket of results.
pub(crate) const RESULTS_BUCKET: &str = "wasimoff_results";
/// The object store of task files.
pub(crate) const FILES_BUCKET: &str = "wasimoff_files";
/// Where a cancel is announced to every broker (core NATS; payload: the task id).
const CANCEL_SUBJECT: &str = "wasimoff.cancel";
/// The longest one pull waits for tasks before it asks again.
const PULL_EXPIRES: Duration = Duration::from_millis(500);
/// How long the object store keeps a file after it was put.
const FILES_KEPT: Duration = Duration::from_secs(24 * 3600);
/// How long a broker trusts that a file it put (or found) is in the object store; then an
/// accept checks again, and puts it again if it expired. Far below [`FILES_KEPT`], so that
/// a file lives on in the store while tasks name it.
const SHARED_FOR: Duration = Duration::from_secs(3600);
/// What a NATS message carries besides its payload (headers), kept free in size checks.
const HEADROOM: usize = 4096;
/// Object-store downloads at once (each up to `max_upload` bytes in memory).
const DOWNLOADS: usize = 4;
/// How long a broker remembers a cancel it heard of, for a task it is about to run.
const CANCEL_MEMORY: Duration = Duration::from_secs(600);

/// How often a broker without free slots looks again (unless a task it took ends first).
const FULL_PAUSE: Duration = Duration::from_millis(50);

/// How brokers share tasks through NATS JetStream ([`TaskStateConfig::Nats`]).
///
/// [`TaskStateConfig::Nats`]: crate::TaskStateConfig::Nats
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// The NATS servers (`nats://host:4222`); the connection fails over between them.
    pub servers: Vec<String>,
    /// How long a task may go without a sign of life from the broker running it before
    /// JetStream hands it to another broker (the time a broker's death costs its tasks).
    pub ack_wait: Duration,
    /// Replicas of the stream, bucket and object store when a broker creates them (3 on a
    /// three-node NATS cluster; 1 on a single server).
    pub replicas: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ack_wait: Duration::from_secs(30),
            replicas: 1,
        }
    }
}

/// How the errors of [`nats_error`] begin.
const NATS_ERROR: &str = "NATS JetStream: ";

/// Why NATS could not do what was asked.
fn nats_error(what: &str, e: impl std::fmt::Display) -> TaskError {
    TaskError::Unavailable(format!("{NATS_ERROR}{what}: {e}"))
}

/// This broker's handles on the shared JetStream state.
pub(crate) struct Cluster {
    client: async_nats::Client,
    js: jetstream::Context,
    tasks: jetstream::stream::Stream,
    consumer: PullConsumer,
    results: kv::Store,
    files: ObjectStore,
    /// Refs this broker knows to be in the object store, and since when.
    shared_files: Mutex<HashMap<String, Instant>>,
    /// One download per ref at a time, and at most [`DOWNLOADS`] at once.
    downloading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    downloads: tokio::sync::Semaphore,
    /// Cancels heard of lately (id, when), for tasks taken while the cancel went by.
    cancelled: Mutex<HashMap<String, Instant>>,
    ack_wait: Duration,
    /// The largest message the servers take.
    max_payload: usize,
    /// The pull loop, awaited at shutdown.
    puller: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// A task taken from the stream has ended here: a slot may be free again.
    freed: tokio::sync::Notify,
    /// Tasks taken from the stream and not ended here.
    taken: std::sync::atomic::AtomicUsize,
    /// The deadlines (Unix ns) and owners of the unfinished tasks this broker knows (accepted
    /// here, or looked up): [`sweep_deadlines`] answers those nobody answered in time.
    deadlines: Mutex<HashMap<String, (i64, Option<String>)>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("ack_wait", &self.ack_wait)
            .finish_non_exhaustive()
    }
}

/// The limits the shared state is created with.
pub(crate) struct SharedLimits {
    pub(crate) max_queue: usize,
    pub(crate) max_queue_bytes: usize,
    pub(crate) result_ttl: Duration,
    pub(crate) max_store: Option<u64>,
}

impl Cluster {
    /// Connects and creates (or opens) the stream, consumer, bucket and object store.
    pub(crate) async fn connect(
        config: &NatsConfig,
        limits: &SharedLimits,
    ) -> Result<Cluster, String> {
        let servers: Vec<async_nats::ServerAddr> = config
            .servers
            .iter()
            .map(|s| s.parse().map_err(|e| format!("bad NATS server {s:?}: {e}")))
            .collect::<Result<_, _>>()?;
        if servers.is_empty() {
            return Err("no NATS server given".into());
        }
        let client = async_nats::ConnectOptions::new()
            .name("wasimoff-broker")
            .connection_timeout(Duration::from_secs(5))
            .connect(servers)
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to NATS at {}: {e}",
                    config.servers.join(",")
                )
            })?;
        let max_payload = client.server_info().max_payload;
        let js = jetstream::new(client.clone());
        let replicas = config.replicas.max(1);
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("cannot set up JetStream {what} (is nats-server running with -js?): {e}")
        };
        let tasks = js
            .get_or_create_stream(jetstream::stream::Config {
                name: TASKS_STREAM.into(),
                description: Some(
                    "wasimoff: accepted tasks, until their result is recorded".into(),
                ),
                subjects: vec![format!("{TASK_SUBJECT}.>")],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                num_replicas: replicas,
                max_messages: i64::try_from(limits.max_queue).unwrap_or(i64::MAX),
                max_bytes: i64::try_from(limits.max_queue_bytes).unwrap_or(i64::MAX),
                discard: DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| fail("stream", &e))?;
        let consumer: PullConsumer = tasks
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    description: Some("wasimoff: every broker pulls from here".into()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: config.ack_wait.max(Duration::from_secs(1)),
                    // The dispatcher limits attempts; a redelivery follows a broker's death.
                    max_deliver: -1,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| fail("consumer", &e))?;
        // Opened as they are when they exist: the first broker's settings hold for all.
        let results = match js.get_key_value(RESULTS_BUCKET).await {
            Ok(results) => results,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: RESULTS_BUCKET.into(),
                    description: "wasimoff: task results by id (the first one wins)".into(),
                    history: 1,
                    max_age: limits.result_ttl,
                    storage: StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| fail("result bucket", &e))?,
        };
        let files = match js.get_object_store(FILES_BUCKET).await {
            Ok(files) => files,
            Err(_) => js
                .create_object_store(jetstream::object_store::Config {
                    bucket: FILES_BUCKET.into(),
                    description: Some("wasimoff: the files tasks name, by content address".into()),
                    // Put again by the broker that accepts a task naming one (see
                    // `SHARED_FOR`): a file no task named for a day goes.
                    max_age: FILES_KEPT,
                    max_bytes: limits
                        .max_store
                        .and_then(|b| i64::try_from(b).ok())
                        .unwrap_or(-1),
                    storage: StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| fail("object store", &e))?,
        };
        // The consumer's ack wait is the one that holds (its creator's): renew by it.
        let ack_wait = consumer
            .cached_info()
            .config
            .ack_wait
            .max(Duration::from_secs(1));
        Ok(Cluster {
            client,
            js,
            tasks,
            consumer,
            results,
            files,
            shared_files: Mutex::new(HashMap::new()),
            downloading: Mutex::new(HashMap::new()),
            downloads: tokio::sync::Semaphore::new(DOWNLOADS),
            cancelled: Mutex::new(HashMap::new()),
            ack_wait,
            max_payload,
            puller: Mutex::new(None),
            freed: tokio::sync::Notify::new(),
            taken: std::sync::atomic::AtomicUsize::new(0),
            deadlines: Mutex::new(HashMap::new()),
        })
    }

    /// Publishes an accepted task; durable in JetStream when this returns.
    pub(crate) async fn accept(
        &self,
        app: &AppState,
        id: &str,
        record: TaskRecord,
    ) -> Result<(), TaskError> {
        if let Some(params) = record.request.as_ref().and_then(|r| r.params.as_ref()) {
            for file in [&params.binary, &params.rootfs].into_iter().flatten() {
                if let Some(name) = &file.r#ref {
                    self.share_file(app, name).await?;
                }
            }
        }
        let payload = record.encode_to_vec();
        if payload.len() + HEADROOM > self.max_payload {
            return Err(TaskError::InvalidArgument(format!(
                "the task takes {} bytes, more than NATS carries in one message ({} with its \
                 headers): upload its inputs as files",
                payload.len(),
                self.max_payload
            )));
        }
        let (deadline, owner) = (record.deadline_unix_ns, record.owner.clone());
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let ack = self
            .js
            .publish_with_headers(task_subject(id), headers, payload.into())
            .await
            .map_err(|e| nats_error("cannot publish a task", e))?;
        ack.await.map_err(|e| {
            let text = e.to_string();
            if text.contains("maximum") {
                TaskError::QueueFull(0)
            } else {
                nats_error("the task was not stored", text)
            }
        })?;
        self.follow(id, deadline, owner);
        Ok(())
    }

    /// Keeps an eye on the deadline of an unfinished task.
    fn follow(&self, id: &str, deadline_unix_ns: i64, owner: Option<String>) {
        locked(&self.deadlines).insert(id.to_owned(), (deadline_unix_ns, owner));
    }

    /// A task has its result: no deadline to watch any more.
    fn settled(&self, id: &str) {
        locked(&self.deadlines).remove(id);
    }

    /// Puts a stored file into the object store unless it is there.
    pub(crate) async fn share_file(&self, app: &AppState, name: &str) -> Result<(), TaskError> {
        if locked(&self.shared_files)
            .get(name)
            .is_some_and(|since| since.elapsed() < SHARED_FOR)
        {
            return Ok(());
        }
        // Put (again) unless the object store holds it and will for a while yet: a file is
        // put anew before it expires, as long as tasks name it.
        let fresh = match self.files.info(name).await {
            Ok(info) => info.modified.is_some_and(|modified| {
                let age = unix_nanos() / 1_000_000_000 - modified.unix_timestamp();
                u64::try_from(age).is_ok_and(|age| {
                    age < FILES_KEPT
                        .as_secs()
                        .saturating_sub(2 * SHARED_FOR.as_secs())
                })
            }),
            Err(_) => false,
        };
        if !fresh {
            let blob = app.store.get(name).await?.ok_or_else(|| {
                TaskError::NotFound(format!("{name} is not in this broker's store"))
            })?;
            let mut bytes: &[u8] = &blob.bytes;
            self.files
                .put(name, &mut bytes)
                .await
                .map_err(|e| nats_error(&format!("cannot share {name}"), e))?;
        }
        self.shared(name);
        Ok(())
    }

    /// `name` is in the object store now.
    fn shared(&self, name: &str) {
        let mut shared = locked(&self.shared_files);
        // Pruned once per 1,024 new entries: the cost of a prune is shared by those.
        if shared.len() % 1024 == 1023 {
            shared.retain(|_, since| since.elapsed() < SHARED_FOR);
        }
        shared.insert(name.to_owned(), Instant::now());
    }

    /// Fetches a file from the object store into this broker's store (at most `max_bytes`).
    pub(crate) async fn fetch_file(
        &self,
        app: &AppState,
        name: &str,
    ) -> Result<Option<wasimoff_core::store::Ref>, TaskError> {
        let flight = Flight::join(self, name);
        let fetched = {
            let _one = flight.lock.lock().await;
            // Fetched by another task meanwhile?
            match app.store.pin(name).await? {
                Some(stored) => Ok(Some(stored)),
                None => {
                    let _slot =
                        self.downloads.acquire().await.map_err(|e| {
                            TaskError::Internal(format!("download slots closed: {e}"))
                        })?;
                    self.download(app, name).await
                }
            }
        };
        drop(flight);
        fetched
    }

    async fn download(
        &self,
        app: &AppState,
        name: &str,
    ) -> Result<Option<wasimoff_core::store::Ref>, TaskError> {
        let mut object = match self.files.get(name).await {
            Ok(object) => object,
            Err(e) if matches!(e.kind(), jetstream::object_store::GetErrorKind::NotFound) => {
                return Ok(None);
            }
            Err(e) => return Err(nats_error(&format!("cannot fetch {name}"), e)),
        };
        let limit = app.config.limits.max_upload;
        let mut bytes = Vec::new();
        (&mut object)
            .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| nats_error(&format!("cannot read {name}"), e))?;
        if bytes.len() > limit {
            return Err(TaskError::InvalidArgument(format!(
                "{name} is larger than this broker's upload limit of {limit} bytes"
            )));
        }
        let stored = app
            .store
            .put_with(
                Bytes::from(bytes),
                wasimoff_core::store::PutOptions::durable().pinned(),
            )
            .await?;
        if stored.as_str() != name {
            app.store.unpin(&stored);
            return Err(TaskError::Internal(format!(
                "the shared file {name} holds the bytes of {stored}"
            )));
        }
        self.shared(name);
        Ok(Some(stored))
    }

    /// Records a result unless one is recorded. The result that stands for `id` is `Some` of it: this one, as recorded (a result too
    /// large for one NATS message is recorded as the error saying so), or the one recorded
    /// first; `None` if that one cannot be read now (the watch brings it).
    async fn finish(
        &self,
        id: &str,
        record: ResultRecord,
    ) -> Result<Option<ResultRecord>, TaskError> {
        let mut record = record;
        let mut payload = record.encode_to_vec();
        if payload.len() + HEADROOM > self.max_payload {
            let too_large = Err(TaskError::ResultTooLarge(format!(
                "the result of {} bytes exceeds what NATS carries in one message ({} bytes; \
                 run the task with RunWasip1 to receive it directly)",
                payload.len(),
                self.max_payload
            )));
            record = ResultRecord::new(record.owner.clone(), &too_large);
            payload = record.encode_to_vec();
        }
        match self.results.create(id, payload.into()).await {
            Ok(_) => Ok(Some(record)),
            Err(e) if matches!(e.kind(), kv::CreateErrorKind::AlreadyExists) => {
                Ok(self.result(id).await.ok().flatten())
            }
            Err(e) => Err(nats_error("cannot record a result", e)),
        }
    }

    /// The recorded result of `id`, if there is one.
    async fn result(&self, id: &str) -> Result<Option<ResultRecord>, TaskError> {
        let value = self
            .results
            .get(id)
            .await
            .map_err(|e| nats_error("cannot read a result", e))?;
        value
            .map(|v| {
                ResultRecord::decode(v)
                    .map_err(|e| TaskError::Internal(format!("unreadable result of {id}: {e}")))
            })
            .transpose()
    }

    /// The accepted task `id` while it has no result.
    async fn pending(&self, id: &str) -> Result<Option<TaskRecord>, TaskError> {
        match self
            .tasks
            .get_last_raw_message_by_subject(&task_subject(id))
            .await
        {
            Ok(message) => TaskRecord::decode(message.payload)
                .map(Some)
                .map_err(|e| TaskError::Internal(format!("unreadable task {id}: {e}"))),
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::stream::LastRawMessageErrorKind::NoMessageFound
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(nats_error("cannot look up a task", e)),
        }
    }

    /// Removes an answered task from the stream, wherever it waits.
    async fn drop_from_stream(&self, id: &str) -> Result<(), TaskError> {
        self.tasks
            .purge()
            .filter(task_subject(id))
            .await
            .map(drop)
            .map_err(|e| nats_error("cannot drop an answered task from the stream", e))
    }

    /// Cancels a task wherever it is: its result becomes `canceled` unless it has one, and
    /// the broker running it is told to stop it.
    pub(crate) async fn cancel(
        &self,
        id: &str,
        owner: Option<String>,
        reason: &str,
    ) -> Result<(), TaskError> {
        let cancelled = Err(TaskError::Cancelled(reason.to_owned()));
        self.finish(id, ResultRecord::new(owner, &cancelled))
            .await?;
        // Out of the stream, so that no broker runs it; one that runs it now is told below.
        self.drop_from_stream(id).await?;
        self.client
            .publish(CANCEL_SUBJECT, Bytes::copy_from_slice(id.as_bytes()))
            .await
            .map_err(|e| nats_error("cannot announce a cancel", e))
    }
}

/// The stream subject of task `id`.
fn task_subject(id: &str) -> String {
    format!("{TASK_SUBJECT}.{id}")
}

/// A lock whose data stays valid when a holder panicked.
fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `id` has the shape of this broker's task ids (16 hex digits of the broker's start,
/// `-`, a counter): only such ids are looked up in NATS. So nothing a client sends can address
/// other subjects, and ids that cannot exist cost no lookups.
fn plain_id(id: &str) -> bool {
    let Some((boot, n)) = id.split_once('-') else {
        return false;
    };
    boot.len() == 16
        && boot.bytes().all(|b| b.is_ascii_hexdigit())
        && (1..=20).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_digit())
}

impl AppState {
    /// Where a task id this broker's table does not know stands in the cluster: its result
    /// or its pending state are put in the table, so that the lookup that follows finds them.
    /// Ids the cluster does not know either stay unknown.
    pub(crate) async fn learn(&self, ids: &[String], owner: Option<&str>) -> Result<(), TaskError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let unknown: Vec<String> = self.with_detached(|d| {
            let now = Instant::now();
            ids.iter()
                .filter(|id| {
                    plain_id(id) && d.found(now, id, owner) == crate::detached::Found::Unknown
                })
                .cloned()
                .collect()
        });
        let looked_up: Vec<Result<Option<Learned>, TaskError>> = futures::stream::iter(unknown)
            .map(|id| {
                let cluster = cluster.clone();
                async move {
                    // Result first: a task leaves the stream only after its result is recorded.
                    if let Some(result) = cluster.result(&id).await? {
                        return Ok(Some((id, Ok(result))));
                    }
                    if let Some(task) = cluster.pending(&id).await? {
                        // Only what the table needs: not the request.
                        return Ok(Some((id, Err((task.deadline_unix_ns, task.owner)))));
                    }
                    // Finished between the two lookups?
                    Ok(cluster.result(&id).await?.map(|result| (id, Ok(result))))
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let mut found = Vec::new();
        for result in looked_up {
            // NATS could not say: not "unknown", which a client takes as final.
            found.extend(result?);
        }
        for (id, learned) in found {
            match learned {
                Ok(record) => self.mirror_record(&id, &record),
                Err((deadline, owner)) => {
                    cluster.follow(&id, deadline, owner.clone());
                    self.with_detached(|d| d.submitted(id, owner));
                }
            }
        }
        Ok(())
    }

    /// Looks up again the results of the tasks this broker holds as pending: after its
    /// watch broke, results recorded meanwhile would otherwise never reach its table. Ids
    /// whose lookup failed are looked up again (with a pause) until every one got an answer.
    async fn recheck_pending(&self) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let mut pending = self.with_detached(|d| d.pending_ids());
        while !pending.is_empty() && !self.shutdown.is_cancelled() {
            let looked_up: Vec<(String, Result<Option<ResultRecord>, TaskError>)> =
                futures::stream::iter(pending)
                    .map(|id| {
                        let cluster = cluster.clone();
                        async move {
                            let result = cluster.result(&id).await;
                            (id, result)
                        }
                    })
                    .buffer_unordered(64)
                    .collect()
                    .await;
            pending = Vec::new();
            for (id, result) in looked_up {
                match result {
                    Ok(Some(record)) => self.mirror_record(&id, &record),
                    Ok(None) => {}
                    Err(_) => pending.push(id),
                }
            }
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// A result recorded in the cluster, into this broker's table: fetches and waits see it.
    fn mirror_record(&self, id: &str, record: &ResultRecord) {
        if let Some(cluster) = &self.cluster {
            cluster.settled(id);
        }
        self.with_detached(|d| {
            let (now, now_unix) = (Instant::now(), unix_nanos());
            let at = record.recorded_at(now, now_unix);
            d.mirror(now, at, id, record.owner.clone(), record.result());
        });
        self.waiters.wake(id);
    }
}

/// What [`AppState::learn`] found of an id: its result, or the deadline and owner of the task
/// still waiting for one.
type Learned = (String, Result<ResultRecord, (i64, Option<String>)>);

/// Starts this broker's part: the result watcher, the pull loop and the cancel listener.
pub(crate) async fn start(app: &App) -> Result<(), String> {
    let Some(cluster) = &app.cluster else {
        return Ok(());
    };
    let watch = cluster
        .results
        .watch_all()
        .await
        .map_err(|e| format!("cannot watch the results in NATS: {e}"))?;
    tokio::spawn(watch_results(app.clone(), watch));
    if let Some(cluster) = &app.cluster {
        let puller = tokio::spawn(pull_loop(app.clone()));
        *locked(&cluster.puller) = Some(puller);
    }
    tokio::spawn(listen_for_cancels(app.clone()));
    tokio::spawn(sweep_deadlines(app.clone()));
    Ok(())
}

/// How long past a task's deadline a broker that knows it waits for its answer before it
/// records `deadline_exceeded` itself (the broker running it answers at the deadline).
const DEADLINE_GRACE: Duration = Duration::from_secs(2);

/// Answers `deadline_exceeded` for the tasks this broker knows whose deadline passed without
/// an answer: a task that waits in the stream while no broker has providers is taken by none,
/// and would otherwise stay pending past its deadline. The first result wins, so a broker
/// that answers at the same time changes nothing.
async fn sweep_deadlines(app: App) {
    let Some(cluster) = app.cluster.clone() else {
        return;
    };
    let grace = i64::try_from(DEADLINE_GRACE.as_nanos()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = app.shutdown.cancelled() => return,
        }
        let now = unix_nanos();
        let due: Vec<(String, Option<String>)> = {
            let mut deadlines = locked(&cluster.deadlines);
            let due: Vec<_> = deadlines
                .iter()
                .filter(|(_, (deadline, _))| deadline.saturating_add(grace) < now)
                .map(|(id, (_, owner))| (id.clone(), owner.clone()))
                .collect();
            for (id, _) in &due {
                deadlines.remove(id);
            }
            due
        };
        // Answered meanwhile (the watch may have come before the deadline was followed).
        let due: Vec<_> = app.with_detached(|d| {
            let now = Instant::now();
            due.into_iter()
                .filter(|(id, owner)| {
                    d.found(now, id, owner.as_deref()) != crate::detached::Found::Done
                })
                .collect()
        });
        futures::stream::iter(due)
            .for_each_concurrent(16, |(id, owner)| {
                let (app, cluster) = (&app, &cluster);
                async move {
                    let late = Err(TaskError::DeadlineExceeded(
                        "the task's deadline passed before a broker with a free provider took it"
                            .into(),
                    ));
                    match cluster.finish(&id, ResultRecord::new(owner.clone(), &late)).await {
                        Ok(standing) => {
                            // Out of the stream: nobody runs it any more.
                            let _ = cluster.drop_from_stream(&id).await;
                            if let Some(standing) = standing {
                                app.mirror_record(&id, &standing);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(%id, error = %e, "cannot record a missed deadline; trying again");
                            cluster.follow(&id, now, owner);
                        }
                    }
                }
            })
            .await;
    }
}

impl Cluster {
    /// After the dispatcher failed what it held (the broker is stopping): waits (up to 5 s)
    /// until every task taken here has been handed back, and sends the hand-backs, so that
    /// other brokers take them at once instead of after the ack wait.
    pub(crate) async fn drain(&self) {
        let until = Instant::now() + Duration::from_secs(5);
        while self.taken.load(std::sync::atomic::Ordering::SeqCst) > 0 && Instant::now() < until {
            let _ = tokio::time::timeout(Duration::from_millis(50), self.freed.notified()).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
    }

    /// Stops taking tasks (the broker is stopping): waits until the pull loop has ended its
    /// last pull. A pull left open would take a task that this broker hands back, and
    /// JetStream would hold it for this broker until the ack wait.
    pub(crate) async fn stop_pulling(&self) {
        let puller = locked(&self.puller).take();
        if let Some(puller) = puller {
            let _ = tokio::time::timeout(PULL_EXPIRES * 4, puller).await;
        }
    }
}

/// How many more tasks this broker takes from the stream now: four times what its providers
/// offer (slots) plus [`PULL_AHEAD`], less what it holds (queued, running, or taken and not
/// queued yet); without providers, none. The tasks waiting here hide the round trips of
/// taking one (a pull, a lookup of its result, the record of the last one's) behind the
/// running ones: with only the slots' worth, one broker ran 1,660 hello tasks/s, with twice
/// as many plus 4 2,290/s, with this 3,800/s (docs/benchmarks.md). Were they many more,
/// other brokers' providers would idle while tasks wait here; a broker that loses its
/// providers hands them back after `provider_wait`.
fn free_slots(app: &AppState, cluster: &Cluster) -> usize {
    let m = &app.metrics;
    let slots = m.workers.get();
    if slots <= 0 {
        return 0;
    }
    let taken =
        i64::try_from(cluster.taken.load(std::sync::atomic::Ordering::SeqCst)).unwrap_or(i64::MAX);
    let held = (m.running.get() + m.queued.get()).max(taken);
    usize::try_from(4 * slots + PULL_AHEAD - held).unwrap_or(0)
}

/// Tasks a broker takes beyond four times its providers' slots (see [`free_slots`]).
const PULL_AHEAD: i64 = 16;

/// Takes tasks from the stream while this broker's providers have room for them.
async fn pull_loop(app: App) {
    let Some(cluster) = app.cluster.clone() else {
        return;
    };
    let mut pause = FULL_PAUSE;
    while !app.shutdown.is_cancelled() && !app.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        let free = free_slots(&app, &cluster);
        if free == 0 {
            // Woken when a task taken here ends; a provider that joins is seen by the poll.
            tokio::select! {
                () = cluster.freed.notified() => {}
                () = tokio::time::sleep(FULL_PAUSE) => {}
                () = app.shutdown.cancelled() => return,
            }
            continue;
        }
        let batch = cluster
            .consumer
            .batch()
            .max_messages(free)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => {
                pause = FULL_PAUSE;
                batch
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull tasks from NATS; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        // To its end, even when the broker is stopping: see `Cluster::stop_pulling`.
        loop {
            match batch.next().await {
                Some(Ok(message)) => {
                    // Counted at once: the dispatcher's gauges see it only once it is queued.
                    let taking = Taking::new(&cluster);
                    let app = app.clone();
                    tokio::spawn(async move {
                        take(&app, &taking.0, message).await;
                    });
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "a pull ended early");
                    break;
                }
                None => break,
            }
        }
    }
}

/// One fetch's share in the download of a ref ([`Cluster::fetch_file`]): the last to leave
/// (done, failed or dropped) removes the ref's entry.
struct Flight<'a> {
    cluster: &'a Cluster,
    name: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Flight<'a> {
    fn join(cluster: &'a Cluster, name: &str) -> Flight<'a> {
        let lock = locked(&cluster.downloading)
            .entry(name.to_owned())
            .or_default()
            .clone();
        Flight {
            cluster,
            name: name.to_owned(),
            lock,
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut downloading = locked(&self.cluster.downloading);
        // This one and the map's: nobody else waits for this ref.
        if Arc::strong_count(&self.lock) <= 2 {
            downloading.remove(&self.name);
        }
    }
}

/// A task taken from the stream and not ended here: counted in [`Cluster::taken`] while it
/// lives, even if its task panics.
struct Taking(Arc<Cluster>);

impl Taking {
    fn new(cluster: &Arc<Cluster>) -> Taking {
        cluster
            .taken
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Taking(cluster.clone())
    }
}

impl Drop for Taking {
    fn drop(&mut self) {
        self.0
            .taken
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        self.0.freed.notify_one();
    }
}

/// Runs one task from the stream: records its result and acknowledges it.
async fn take(app: &App, cluster: &Arc<Cluster>, message: jetstream::Message) {
    let id = message
        .subject
        .as_str()
        .strip_prefix(TASK_SUBJECT)
        .and_then(|s| s.strip_prefix('.'))
        .unwrap_or_default()
        .to_owned();
    let (message, acker) = message.split();
    let record = match TaskRecord::decode(message.payload) {
        Ok(record) => record,
        Err(e) => {
            tracing::error!(%id, error = %e, "dropped an unreadable task from NATS");
            let _ = acker.ack_with(AckKind::Term).await;
            return;
        }
    };
    if app.stopping.load(std::sync::atomic::Ordering::SeqCst) {
        // Taken by the last pull of a broker that stops: another broker takes it now.
        let _ = acker.ack_with(AckKind::Nak(None)).await;
        return;
    }
    if matches!(cluster.result(&id).await, Ok(Some(_))) {
        // Cancelled while a pull brought it here, or redelivered because its broker recorded
        // the result and died before acknowledging it.
        let _ = acker.ack().await;
        return;
    }
    let owner = record.owner.clone();
    let response = match app.resume(&id, record).await {
        Ok(_) if locked(&cluster.cancelled).contains_key(&id) => {
            // Cancelled while it was being taken (the dispatcher did not know it yet).
            let _ = acker.ack().await;
            return;
        }
        Ok((mut job, deadline, pins)) => {
            // Unlike a task resumed from the journal, it may go elsewhere: if this broker
            // loses all its providers, it is handed back after `provider_wait`.
            job.patient = false;
            Ok(app.submit_prepared_wasip1(job, deadline, pins))
        }
        Err(e) => Err(e),
    };
    run_and_record(app, cluster, id, owner, acker, response).await;
}

/// The rest of [`take`]: waits for the task's result, records it and acknowledges the task.
async fn run_and_record(
    app: &App,
    cluster: &Cluster,
    id: String,
    owner: Option<String>,
    acker: jetstream::message::Acker,
    response: Result<
        impl Future<Output = Result<wasimoff_core::proto::task::wasip1::Response, TaskError>>,
        TaskError,
    >,
) {
    let result = match response {
        Ok(response) => {
            // Tell JetStream this broker is still at it, or the task goes elsewhere.
            let mut response = std::pin::pin!(response);
            let mut ticker = tokio::time::interval(cluster.ack_wait / 3);
            ticker.tick().await;
            loop {
                tokio::select! {
                    result = &mut response => break result,
                    _ = ticker.tick() => {
                        let _ = acker.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
        Err(e) => Err(e),
    };
    let result = crate::detached::bounded(result, app.config.limits.max_result_bytes);
    // Not answers: the task goes back to the stream, for another broker now or (after an
    // error of NATS itself, which may pass) for any broker a little later.
    let hand_back = match &result {
        Err(TaskError::ShuttingDown) if app.stopping.load(std::sync::atomic::Ordering::SeqCst) => {
            Some(None)
        }
        // This broker's providers all left while it waited.
        Err(TaskError::Unavailable(why)) if why.starts_with(crate::dispatch::NO_PROVIDER) => {
            Some(None)
        }
        // Its files could not be fetched from the cluster.
        Err(TaskError::Unavailable(why)) if why.starts_with(NATS_ERROR) => {
            Some(Some(Duration::from_secs(1)))
        }
        _ => None,
    };
    if let Some(delay) = hand_back {
        if let Err(e) = acker.ack_with(AckKind::Nak(delay)).await {
            tracing::debug!(%id, error = %e, "a task's hand-back was lost");
        }
        return;
    }
    let record = ResultRecord::new(owner.clone(), &result);
    drop(result);
    match cluster.finish(&id, record).await {
        Ok(standing) => {
            cluster.settled(&id);
            // What was recorded (maybe another broker's result, or a cancel, which won): the
            // answer here too; the watch brings it if it cannot be read now.
            if let Some(standing) = standing {
                app.mirror_record(&id, &standing);
            }
            // Acknowledged only once the result is recorded; if this is lost, the task is
            // delivered again and its next broker finds the result.
            if let Err(e) = acker.double_ack().await {
                tracing::debug!(%id, error = %e, "a task's acknowledgement was lost");
            }
        }
        Err(e) => {
            // Not recorded: let another broker (or this one) run it again.
            tracing::error!(%id, error = %e, "cannot record a task's result in NATS");
            let _ = acker
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

/// Mirrors every result recorded in the cluster into this broker's table and wakes who waits.
/// `watch` is the first watch, opened before the broker served anything, so that no result
/// of a task accepted here can be missed. A watch that breaks is opened again, and the
/// results recorded while it was down are looked up for every task still pending here.
async fn watch_results(app: App, mut watch: kv::Watch) {
    let Some(cluster) = app.cluster.clone() else {
        return;
    };
    loop {
        loop {
            let entry = tokio::select! {
                entry = watch.next() => entry,
                () = app.shutdown.cancelled() => return,
            };
            let Some(Ok(entry)) = entry else {
                break;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(record) = ResultRecord::decode(entry.value) else {
                continue;
            };
            app.mirror_record(&entry.key, &record);
        }
        tracing::warn!("the watch of results in NATS ended; opening it again");
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                () = app.shutdown.cancelled() => return,
            }
            match cluster.results.watch_all().await {
                Ok(again) => {
                    watch = again;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the results in NATS"),
            }
        }
        app.recheck_pending().await;
    }
}

/// Cancels here what another broker was asked to cancel.
async fn listen_for_cancels(app: App) {
    let Some(cluster) = app.cluster.clone() else {
        return;
    };
    let Ok(mut cancels) = cluster.client.subscribe(CANCEL_SUBJECT).await else {
        tracing::warn!("cannot listen for cancels in NATS");
        return;
    };
    loop {
        let message = tokio::select! {
            message = cancels.next() => message,
            () = app.shutdown.cancelled() => return,
        };
        let Some(message) = message else { return };
        let Ok(id) = std::str::from_utf8(&message.payload) else {
            continue;
        };
        {
            let mut cancelled = locked(&cluster.cancelled);
            // Pruned once per 1,024 new entries: the cost of a prune is shared by those.
            if cancelled.len() % 1024 == 1023 {
                cancelled.retain(|_, at| at.elapsed() < CANCEL_MEMORY);
            }
            cancelled.insert(id.to_owned(), Instant::now());
        }
        app.dispatch.send(crate::dispatch::Command::Machine(
            crate::dispatch::Input::Cancel {
                id: id.to_owned(),
                reason: "cancelled by the client".into(),
            },
        ));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_ids_of_the_brokers_shape_are_looked_up() {
        assert!(super::plain_id("0123456789abcdef-1"));
        assert!(super::plain_id("0123456789abcdef-18446744073709551615"));
        for bad in [
            "",
            "nobody-1",
            "0123456789abcdef",
            "0123456789abcdef-",
            "0123456789abcdef-1.x",
            "0123456789abcdeg-1",
            "wasimoff.tasks.>",
            "*",
            "0123456789abcdef-123456789012345678901",
        ] {
            assert!(!super::plain_id(bad), "{bad:?}");
        }
    }
}

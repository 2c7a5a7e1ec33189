//! [`Provider`]: the connection loop. It dials the broker through its connector, reports its
//! resources, hands every request to the [handler](super::handler), reconnects with jittered
//! exponential backoff when the connection ends, and drains gracefully on
//! [`Provider::shutdown`].
//!
//! A lost connection cancels the tasks it brought (the broker requeues them; their results
//! could not be delivered anyway); their slots come back when the executor has stopped them.
//!
//! Running tasks are registered by id with two tokens: one cancels the task, the other is
//! cancelled when its [`Registration`] drops (its result queued, its slot free), so a
//! `Task.Cancel` is answered only once the task has really stopped.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::{broadcast, watch};
use wasimoff_core::{
    envelope::Payload,
    executor::{CancellationToken, Executor},
    messenger::{IncomingMessage, Messenger},
    platform, proto,
    store::{MemoryStore, Store},
    transport::CloseReason,
};

use super::{
    backoff::Backoff,
    config::{ConfigError, ProviderConfig},
    connector::{ConnectError, ConnectRequest, Connection, Connector, DynConnector},
    fetch::{FetchError, Fetcher, HttpFetcher},
    files::Files,
    handler,
    status::{ConnectionState, ProviderStatus, Slots, TaskEvent},
};

/// Task events kept for slow subscribers before they lag (and miss some).
const TASK_EVENTS: usize = 4096;

/// Why a provider could not be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP fetcher could not be created.
    #[error("cannot create the file fetcher: {0}")]
    Fetcher(#[from] FetchError),
    /// No connector was given and this target has no default one (wasm32).
    #[error("no connector configured")]
    NoConnector,
    /// [`Provider::run`] is already running (or has finished).
    #[error("the provider is already running")]
    AlreadyRunning,
    /// The broker cannot be reached in a way that retrying cannot fix (a
    /// [permanent](ConnectError::is_permanent) [`ConnectError`]: a refused token, no provider
    /// socket at the URL, an untrusted certificate), so [`Provider::run`] gave up.
    #[error(
        "cannot connect to the broker at {url}: {}; not retrying: {}",
        .error.message,
        .error.advice().unwrap_or("check the broker URL")
    )]
    Refused {
        /// The provider socket URL, without its query.
        url: String,
        /// Why.
        error: ConnectError,
    },
}

/// The state shared by a provider's handle, its connection loop and its tasks.
pub(crate) struct Inner {
    pub(crate) config: ProviderConfig,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) files: Files,
    pub(crate) slots: Slots,
    pub(crate) task_events: broadcast::Sender<TaskEvent>,
    connector: Arc<dyn DynConnector>,
    request: ConnectRequest,
    running: Mutex<HashMap<String, Running>>,
    started: AtomicBool,
    stop: CancellationToken,
    stopped: CancellationToken,
}

/// A running task's tokens.
struct Running {
    /// Cancels the task.
    cancel: CancellationToken,
    /// Cancelled when the task's [`Registration`] drops.
    stopped: CancellationToken,
}

impl Inner {
    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a running task's token; `None` if the id already runs.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: &str,
        token: CancellationToken,
    ) -> Option<Registration> {
        let mut running = self.lock_running();
        if running.contains_key(id) {
            return None;
        }
        let stopped = CancellationToken::new();
        let task = Running {
            cancel: token,
            stopped: stopped.clone(),
        };
        running.insert(id.to_owned(), task);
        Some(Registration {
            inner: self.clone(),
            id: id.to_owned(),
            stopped,
        })
    }

    /// Cancels a running task and returns a token that is cancelled once it has stopped;
    /// `None` if no task with that id runs.
    pub(crate) fn cancel(&self, id: &str) -> Option<CancellationToken> {
        self.lock_running().get(id).map(|task| {
            task.cancel.cancel();
            task.stopped.clone()
        })
    }

    fn cancel_all(&self) {
        for task in self.lock_running().values() {
            task.cancel.cancel();
        }
    }
}

/// Removes a task from the running map when it ends, then tells those waiting for it to stop.
pub(crate) struct Registration {
    inner: Arc<Inner>,
    id: String,
    stopped: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner.lock_running().remove(&self.id);
        self.stopped.cancel();
    }
}

/// What a request handler needs: the provider, this connection, and its cancel token.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) inner: Arc<Inner>,
    pub(crate) messenger: Messenger,
    /// Cancelled when the connection ends; each task's token is a child.
    pub(crate) token: CancellationToken,
}

/// A provider: connects to a broker and runs the tasks it sends. Cheap to clone; all clones
/// drive and observe the same provider.
///
/// ```no_run
/// # async fn demo(executor: std::sync::Arc<dyn wasimoff_core::executor::Executor>) {
/// use wasimoff_provider::runtime::{Provider, ProviderConfig};
/// let provider = Provider::builder(ProviderConfig::new("http://localhost:4080"), executor)
///     .build()
///     .unwrap();
/// let runner = provider.clone();
/// tokio::spawn(async move { runner.run().await });
/// // ... later:
/// provider.shutdown(std::time::Duration::from_secs(30)).await;
/// # }
/// ```
#[derive(Clone)]
pub struct Provider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.inner.config.name)
            .field("status", &self.inner.slots.snapshot())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Provider`]; see [`Provider::builder`].
pub struct ProviderBuilder {
    config: ProviderConfig,
    executor: Arc<dyn Executor>,
    store: Option<Arc<dyn Store>>,
    connector: Option<Arc<dyn DynConnector>>,
    fetcher: Option<Arc<dyn Fetcher>>,
}

impl std::fmt::Debug for ProviderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ProviderBuilder {
    /// The file cache (default: a [`MemoryStore`]).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// How to reach the broker (default natively: [`WebSocketConnector`](super::WebSocketConnector);
    /// required on wasm32).
    pub fn connector(mut self, connector: impl Connector) -> Self {
        self.connector = Some(Arc::new(connector));
        self
    }

    /// How to fetch missing files (default: [`HttpFetcher`] on the broker's `/api/storage/`).
    pub fn fetcher(mut self, fetcher: Arc<dyn Fetcher>) -> Self {
        self.fetcher = Some(fetcher);
        self
    }

    /// Checks the configuration and builds the provider.
    // On wasm32 executors and stores are not `Send`; the provider is single-threaded there.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn build(self) -> Result<Provider, ProviderError> {
        let config = self.config;
        let url = config.ws_url()?;
        #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
        let tls = wasimoff_core::tls::client_config_from_pem(config.ca_cert_pem.as_deref())
            .map_err(|e| ConfigError::CaCert(e.to_string()))?;
        #[cfg(all(not(feature = "rustls"), not(target_arch = "wasm32")))]
        if url.scheme() == "wss" && (self.connector.is_none() || self.fetcher.is_none()) {
            return Err(ConfigError::TlsUnsupported(config.broker.clone()).into());
        }
        let fetcher = match self.fetcher {
            Some(fetcher) => fetcher,
            None => {
                let storage = config.storage_url()?;
                let (token, max_size) = (config.token.clone(), config.max_fetch_size);
                // File fetches trust what the socket trusts.
                #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
                let fetcher = {
                    let client = reqwest::Client::builder()
                        .user_agent(&config.user_agent)
                        .use_preconfigured_tls(wasimoff_core::tls::rustls::ClientConfig::clone(
                            &tls,
                        ))
                        .build()
                        .map_err(|e| FetchError::Http(e.to_string()))?;
                    HttpFetcher::with_client(storage, client, token, max_size)
                };
                #[cfg(not(all(feature = "rustls", not(target_arch = "wasm32"))))]
                let fetcher = HttpFetcher::new(storage, &config.user_agent, token, max_size)?;
                Arc::new(fetcher)
            }
        };
        let connector = match self.connector {
            Some(connector) => connector,
            #[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
            None => Arc::new(super::WebSocketConnector::with_tls(tls)),
            #[cfg(all(not(feature = "rustls"), not(target_arch = "wasm32")))]
            None => Arc::new(super::WebSocketConnector::new()),
            #[cfg(target_arch = "wasm32")]
            None => return Err(ProviderError::NoConnector),
        };
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(MemoryStore::default()));
        let workers = self.executor.concurrency();
        let concurrency = config
            .concurrency
            .unwrap_or_else(|| config.slots_for(self.executor.concurrency()));
        let request = ConnectRequest {
            url: url.into(),
            user_agent: config.user_agent.clone(),
            token: config.token.clone(),
            max_frame: config.max_frame,
        };
        Ok(Provider {
            inner: Arc::new(Inner {
                executor: self.executor,
                files: Files::new(store, fetcher),
                slots: Slots::new(concurrency, workers),
                task_events: broadcast::Sender::new(TASK_EVENTS),
                connector,
                request,
                running: Mutex::new(HashMap::new()),
                started: AtomicBool::new(false),
                stop: CancellationToken::new(),
                stopped: CancellationToken::new(),
                config,
            }),
        })
    }
}

impl Provider {
    /// Starts building a provider that runs tasks on `executor`.
    pub fn builder(config: ProviderConfig, executor: Arc<dyn Executor>) -> ProviderBuilder {
        ProviderBuilder {
            config,
            executor,
            store: None,
            connector: None,
            fetcher: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ProviderConfig {
        &self.inner.config
    }

    /// The URL the provider connects to.
    pub fn url(&self) -> &str {
        &self.inner.request.url
    }

    /// A snapshot of the provider's state.
    pub fn status(&self) -> ProviderStatus {
        self.inner.slots.snapshot()
    }

    /// Follows the provider's state: every change (connection, task start and end, worker
    /// count) is published.
    pub fn watch(&self) -> watch::Receiver<ProviderStatus> {
        self.inner.slots.subscribe()
    }

    /// Follows tasks starting and ending. A subscriber that falls more than a few thousand
    /// events behind misses the oldest (`RecvError::Lagged`); counts are in [`Provider::watch`].
    pub fn task_events(&self) -> broadcast::Receiver<TaskEvent> {
        self.inner.task_events.subscribe()
    }

    /// Changes how many tasks run at once: the provider then offers `workers` plus its
    /// [`prefetch`](ProviderConfig::prefetch) slots, and the broker hears of it at once.
    /// Lowering it below the running tasks lets them finish.
    pub fn set_workers(&self, workers: usize) {
        let slots = self.inner.config.slots_for(workers);
        self.inner.slots.update(|s| {
            s.concurrency = slots;
            s.workers = workers;
        });
    }

    /// Connects and serves the broker, reconnecting as needed, until [`Provider::shutdown`].
    /// May be called once. Ends with [`ProviderError::Refused`] when a connect fails in a way
    /// retrying cannot fix ([`ConnectError::is_permanent`]); other failures are retried with
    /// jittered backoff.
    pub async fn run(&self) -> Result<(), ProviderError> {
        let inner = &self.inner;
        if inner.started.swap(true, Ordering::SeqCst) {
            return Err(ProviderError::AlreadyRunning);
        }
        let mut backoff = Backoff::new(inner.config.reconnect_min, inner.config.reconnect_max);
        let mut refused = None;
        while !inner.stop.is_cancelled() {
            inner
                .slots
                .update(|s| s.state = ConnectionState::Connecting);
            tracing::debug!(url = %inner.request.url, "connecting");
            let opened = tokio::select! {
                opened = inner.connector.open(&inner.request, &inner.config.messenger) => opened,
                () = inner.stop.cancelled() => break,
            };
            let reason = match opened {
                Ok(connection) => {
                    backoff.reset();
                    tracing::info!(url = %inner.request.url, "connected to the broker");
                    session(inner, connection).await
                }
                Err(e) if e.is_permanent() => {
                    refused = Some(e);
                    break;
                }
                Err(e) => e.to_string(),
            };
            if inner.stop.is_cancelled() {
                break;
            }
            let delay = backoff.next_delay();
            tracing::warn!("disconnected: {reason}; reconnecting in {delay:?}");
            inner
                .slots
                .update(|s| s.state = ConnectionState::Disconnected { reason });
            tokio::select! {
                () = platform::sleep(delay) => {}
                () = inner.stop.cancelled() => break,
            }
        }
        inner.slots.update(|s| s.state = ConnectionState::Stopped);
        inner.stopped.cancel();
        match refused {
            Some(error) => {
                let mut url = inner.request.url.clone();
                url.truncate(url.find('?').unwrap_or(url.len()));
                Err(ProviderError::Refused { url, error })
            }
            None => {
                tracing::info!("provider stopped");
                Ok(())
            }
        }
    }

    /// Shuts down gracefully: takes no new tasks (reports concurrency 0), lets running tasks
    /// finish for up to `grace`, cancels the rest (waiting up to the configured `cancel_wait`
    /// for their results), then closes the connection normally and ends [`Provider::run`].
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.slots.update(|s| s.draining = true);
        tracing::info!("draining: waiting up to {grace:?} for running tasks");
        if platform::timeout(grace, inner.slots.idle()).await.is_err() {
            tracing::info!("grace period over: cancelling the remaining tasks");
            inner.cancel_all();
            let _ = platform::timeout(inner.config.cancel_wait, inner.slots.idle()).await;
        }
        inner.stop.cancel();
        if inner.started.load(Ordering::SeqCst) {
            inner.stopped.cancelled().await;
        }
    }

    /// [`Provider::shutdown`] with the configured `drain_grace`.
    pub async fn shutdown_default(&self) {
        self.shutdown(self.inner.config.drain_grace).await;
    }
}

/// How long a change of the number of busy slots alone may wait before it is reported in
/// `Event.ProviderResources`. Under load tasks start and end all the time: reporting each
/// change cost two extra frames per task (and the broker only uses the concurrency); a task
/// that starts and ends within the delay is not reported at all.
const BUSY_REPORT_DELAY: Duration = Duration::from_millis(50);

/// Serves one connection until it ends or the provider stops; returns why it ended.
async fn session(inner: &Arc<Inner>, connection: Connection) -> String {
    let (messenger, mut incoming, driver) = connection;
    platform::spawn(async move {
        let reason = driver.await;
        tracing::debug!(%reason, "connection driver finished");
    });
    let session = Session {
        inner: inner.clone(),
        messenger: messenger.clone(),
        token: CancellationToken::new(),
    };
    inner.slots.update(|s| {
        s.state = ConnectionState::Connected;
        s.connections += 1;
    });
    let mut status = inner.slots.subscribe();
    let mut reported: Option<(usize, usize)> = None;
    // A change of the busy count alone is reported after BUSY_REPORT_DELAY (`busy_due`), with
    // whatever the count is by then; a change of concurrency is reported at once.
    let mut busy_due: Option<platform::BoxFuture<'static, ()>> = None;
    let mut busy_flush = false;
    loop {
        let (advertised, workers) = {
            let status = status.borrow_and_update();
            (status.advertised(), status.workers)
        };
        if reported == Some(advertised) {
            busy_due = None;
        } else if busy_flush || reported.is_none_or(|(concurrency, _)| concurrency != advertised.0)
        {
            let (concurrency, tasks) = advertised;
            let count = |n: usize| Some(u32::try_from(n).unwrap_or(u32::MAX));
            // The split is told only while slots are offered (not while draining).
            let workers = (concurrency > 0).then_some(workers.min(concurrency));
            let resources = proto::event::ProviderResources {
                concurrency: count(concurrency),
                tasks: count(tasks),
                workers: workers.and_then(count),
                prefetch: workers.and_then(|w| count(concurrency - w)),
            };
            if messenger.send_event(resources).await.is_err() {
                break;
            }
            reported = Some(advertised);
            busy_due = None;
        } else if busy_due.is_none() {
            busy_due = Some(Box::pin(platform::sleep(BUSY_REPORT_DELAY)));
        }
        busy_flush = false;
        let busy_report = async {
            match busy_due.as_mut() {
                Some(due) => due.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = busy_report => busy_flush = true,
            message = incoming.next() => match message {
                None => break,
                Some(IncomingMessage::Request(request)) => {
                    platform::spawn(handler::handle(session.clone(), request));
                }
                Some(IncomingMessage::Event(event)) => on_event(inner, event.payload),
            },
            changed = status.changed() => if changed.is_err() { break },
            () = inner.stop.cancelled() => {
                messenger.close(CloseReason::normal("provider shutting down")).await;
                break;
            }
        }
    }
    session.token.cancel();
    messenger.closed().await.to_string()
}

/// Broker events only inform: they are logged and the cluster size is kept for UIs.
fn on_event(inner: &Inner, payload: Payload) {
    match payload {
        Payload::ClusterInfo(info) => {
            inner.slots.update(|s| s.cluster_providers = info.providers);
        }
        Payload::GenericMessage(message) => {
            tracing::info!(
                "message from the broker: {}",
                message.message.unwrap_or_default()
            );
        }
        Payload::Throughput(throughput) => {
            inner
                .slots
                .update(|s| s.cluster_throughput = throughput.overall);
        }
        other => tracing::debug!("ignoring event {}", other.type_name()),
    }
}

//! The streaming API over the client WebSocket (`GET /api/client/ws`): a [`Session`] keeps one
//! connection open and runs many tasks on it at once; [`Client::submit_many`] feeds it a
//! stream of tasks with a bounded number in flight. Native targets only.

use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use wasimoff_core::envelope::Payload;
use wasimoff_core::executor::CancellationToken;
use wasimoff_core::messenger::{CallError, Messenger, MessengerConfig};
use wasimoff_core::proto;
use wasimoff_core::store::Ref;
use wasimoff_core::transport::{CloseReason, ConnectError, DEFAULT_MAX_FRAME, WebSocketTransport};

use crate::client::{Client, RetryPolicy};
use crate::error::{Error, Result};
use crate::task::{Output, Task};

/// One open client WebSocket: run tasks on it concurrently. Cheap to clone; the connection
/// closes when the last clone is dropped (or with [`Session::close`]).
///
/// ```no_run
/// use wasimoff_client::{Client, Task};
/// # async fn demo(client: Client) -> Result<(), wasimoff_client::Error> {
/// let session = client.session().await?;
/// let (a, b) = tokio::join!(
///     session.run(Task::wasip1("hello.wasm").arg("a")),
///     session.run(Task::wasip1("hello.wasm").arg("b")),
/// );
/// println!("{} / {}", a?.stdout_lossy(), b?.stdout_lossy());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Session {
    messenger: Messenger,
    retry: RetryPolicy,
    task_timeout: Duration,
}

impl Client {
    /// The client WebSocket URL (`ws[s]://.../api/client/ws`).
    fn socket_url(&self) -> String {
        let base = self.url();
        let base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        format!("{base}/api/client/ws")
    }

    /// Opens a client WebSocket to the broker.
    pub async fn session(&self) -> Result<Session> {
        let url = self.socket_url();
        let auth = self.token().map(|t| format!("Bearer {t}"));
        let mut headers = vec![(
            "user-agent",
            concat!("wasimoff-client/", env!("CARGO_PKG_VERSION")),
        )];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        #[cfg(feature = "rustls")]
        let connected = WebSocketTransport::connect_with_tls(
            &url,
            &headers,
            DEFAULT_MAX_FRAME,
            self.tls.clone(),
        )
        .await;
        #[cfg(not(feature = "rustls"))]
        let connected = WebSocketTransport::connect(&url, &headers, DEFAULT_MAX_FRAME).await;
        let transport = connected.map_err(|e| socket_error(&url, e))?;
        let config = MessengerConfig {
            request_timeout: self.task_timeout,
            ..MessengerConfig::default()
        };
        let (messenger, _incoming) = Messenger::spawn(transport, config);
        Ok(Session {
            messenger,
            retry: self.retry_policy().clone(),
            task_timeout: self.task_timeout,
        })
    }

    /// Runs many tasks over one client WebSocket, at most `max_in_flight` at a time, and
    /// yields `(index, result)` pairs as tasks complete (in completion order; `index` is the
    /// task's position in `tasks`). Every task yields exactly one item: errors are per task
    /// (if the connection cannot be opened, every task fails with that error).
    ///
    /// Tasks are pulled from `tasks` only when a slot is free, so a huge or endless iterator
    /// costs no memory up front. A full queue is retried per the client's [`RetryPolicy`].
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use wasimoff_client::{Client, Task};
    ///
    /// # async fn demo(client: Client) {
    /// let tasks = (0..1000).map(|i| Task::wasip1("tsp.wasm").args(["rand", "8"]).reference(i.to_string()));
    /// let mut results = client.submit_many(tasks, 64);
    /// while let Some((index, result)) = results.next().await {
    ///     match result {
    ///         Ok(output) => print!("{index}: {}", output.stdout_lossy()),
    ///         Err(e) => eprintln!("{index} failed: {e}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn submit_many<I>(
        &self,
        tasks: I,
        max_in_flight: usize,
    ) -> BoxStream<'static, (usize, Result<Output>)>
    where
        I: IntoIterator<Item = Task>,
        I::IntoIter: Send + 'static,
    {
        self.submit_stream(stream::iter(tasks), max_in_flight)
    }

    /// Like [`Client::submit_many`], for an asynchronous stream of tasks.
    pub fn submit_stream<S>(
        &self,
        tasks: S,
        max_in_flight: usize,
    ) -> BoxStream<'static, (usize, Result<Output>)>
    where
        S: Stream<Item = Task> + Send + 'static,
    {
        let client = self.clone();
        stream::once(async move {
            match client.session().await {
                Ok(session) => session.submit_stream(tasks, max_in_flight),
                Err(error) => tasks
                    .enumerate()
                    .map(move |(index, _)| (index, Err(error.clone())))
                    .boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

/// The error for a client socket that could not be opened.
fn socket_error(url: &str, e: ConnectError) -> Error {
    match &e {
        ConnectError::Rejected {
            status: 401 | 403, ..
        } => Error::Unauthenticated(e.to_string()),
        ConnectError::Rejected {
            status: status @ (404 | 405),
            ..
        } => crate::client::endpoint_not_found(url, status),
        ConnectError::Rejected {
            status: 429 | 503, ..
        } => Error::Unavailable(e.to_string()),
        ConnectError::Tls(_) | ConnectError::TlsUnsupported => Error::Tls(format!("{url}: {e}")),
        _ => Error::Transport(format!("cannot open {url}: {e}")),
    }
}

impl Session {
    /// Runs one task on this connection (with retries per the client's [`RetryPolicy`]).
    pub async fn run(&self, task: impl Into<Task>) -> Result<Output> {
        self.run_request(task.into().into_request()).await
    }

    /// Runs one task that `cancel` can stop: when it fires, the broker cancels the task
    /// (also on the provider running it) and this returns an error with the code `canceled`.
    /// Other tasks on the session go on.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use wasimoff_client::{CancellationToken, Client, Task};
    /// # async fn demo(client: Client) -> Result<(), wasimoff_client::Error> {
    /// let session = client.session().await?;
    /// let cancel = CancellationToken::new();
    /// let stop = cancel.clone();
    /// tokio::spawn(async move {
    ///     tokio::time::sleep(Duration::from_secs(5)).await;
    ///     stop.cancel(); // give up after 5 s
    /// });
    /// let result = session.run_with_cancel(Task::wasip1("tsp.wasm").args(["rand", "12"]), cancel).await;
    /// # Ok(()) }
    /// ```
    pub async fn run_with_cancel(
        &self,
        task: impl Into<Task>,
        cancel: CancellationToken,
    ) -> Result<Output> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let mut request = task.into().into_request();
        // The broker knows the task by this name on this connection (its own id is another).
        let name = format!(
            "cancellable-{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        request.info.get_or_insert_with(Default::default).id = Some(name.clone());
        let run = std::pin::pin!(self.run_request(request));
        let cancelled = std::pin::pin!(cancel.cancelled());
        let run = match futures::future::select(run, cancelled).await {
            futures::future::Either::Left((result, _)) => return result,
            futures::future::Either::Right(((), run)) => run,
        };
        let stop = proto::task::Cancel {
            id: Some(name),
            reason: Some("cancelled by the client".into()),
        };
        // If the task ended meanwhile the broker does not know the name any more: its result
        // is on the way anyway.
        let _ = self.messenger.call(stop).await;
        run.await
    }

    async fn run_request(&self, request: proto::task::wasip1::Request) -> Result<Output> {
        let response = self
            .retry
            .run(|| async {
                let payload = self
                    .messenger
                    .call_with_timeout(request.clone(), self.task_timeout)
                    .await
                    .map_err(call_error)?;
                match payload {
                    Payload::Wasip1Response(response) => Ok(response),
                    other => Err(Error::InvalidResponse(format!(
                        "expected a Wasip1 response, got {}",
                        other.type_name()
                    ))),
                }
            })
            .await?;
        Output::from_response(response)
    }

    /// Runs many tasks on this connection like [`Client::submit_many`]: at most
    /// `max_in_flight` at a time, `(index, result)` pairs in completion order. Open the
    /// session first to learn at once whether the broker can be reached at all.
    pub fn submit_many<I>(
        &self,
        tasks: I,
        max_in_flight: usize,
    ) -> BoxStream<'static, (usize, Result<Output>)>
    where
        I: IntoIterator<Item = Task>,
        I::IntoIter: Send + 'static,
    {
        self.submit_stream(stream::iter(tasks), max_in_flight)
    }

    /// Like [`Session::submit_many`], for an asynchronous stream of tasks.
    pub fn submit_stream<S>(
        &self,
        tasks: S,
        max_in_flight: usize,
    ) -> BoxStream<'static, (usize, Result<Output>)>
    where
        S: Stream<Item = Task> + Send + 'static,
    {
        let session = self.clone();
        tasks
            .enumerate()
            .map(move |(index, task)| {
                let session = session.clone();
                async move { (index, session.run(task).await) }
            })
            .buffer_unordered(max_in_flight.max(1))
            .boxed()
    }

    /// Runs a task for each of `inputs` (made by `to_task`), at most `max_in_flight` at a time,
    /// and yields the results **in the order of the inputs** (a result that arrives early
    /// waits for those before it). Every input yields exactly one result.
    ///
    /// ```no_run
    /// use futures::StreamExt;
    /// use wasimoff_client::{Client, Task};
    /// # async fn demo(client: Client) -> Result<(), wasimoff_client::Error> {
    /// let session = client.session().await?;
    /// let seeds = 0..100;
    /// let results: Vec<_> = session
    ///     .map(seeds, 16, |seed| Task::wasip1("tsp.wasm").args(["rand", "8", &seed.to_string()]))
    ///     .collect()
    ///     .await;
    /// for (seed, result) in results.iter().enumerate() {
    ///     println!("seed {seed}: {}", result.as_ref().map_or("failed".into(), |o| o.stdout_lossy()));
    /// }
    /// # Ok(()) }
    /// ```
    pub fn map<T, I, F>(
        &self,
        inputs: I,
        max_in_flight: usize,
        mut to_task: F,
    ) -> BoxStream<'static, Result<Output>>
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
        F: FnMut(T) -> Task + Send + 'static,
    {
        let session = self.clone();
        stream::iter(inputs)
            .map(move |input| {
                let session = session.clone();
                let task = to_task(input);
                async move { session.run(task).await }
            })
            .buffered(max_in_flight.max(1))
            .boxed()
    }

    /// Uploads a file on this connection (`Filesystem.Upload`), optionally under an alias.
    pub async fn upload(&self, bytes: impl Into<Bytes>, alias: Option<&str>) -> Result<Ref> {
        let request = proto::filesystem::upload::Request {
            upload: Some(proto::File {
                r#ref: alias.map(str::to_owned),
                media: None,
                blob: Some(bytes.into()),
            }),
        };
        match self.messenger.call(request).await.map_err(call_error)? {
            Payload::UploadResponse(response) => {
                let text = response.r#ref.unwrap_or_default();
                text.parse::<Ref>()
                    .map_err(|e| Error::InvalidResponse(format!("upload answered {text:?}: {e}")))
            }
            other => Err(Error::InvalidResponse(format!(
                "expected an upload response, got {}",
                other.type_name()
            ))),
        }
    }

    /// Tasks waiting for their results on this connection.
    pub fn in_flight(&self) -> usize {
        self.messenger.pending_calls()
    }

    /// Closes the connection; tasks still waiting fail (and the broker cancels them).
    pub async fn close(&self) {
        self.messenger
            .close(CloseReason::normal("client done"))
            .await;
    }
}

fn call_error(e: CallError) -> Error {
    match e {
        CallError::Remote(text) => Error::from_envelope_text(&text),
        CallError::Timeout(after) => Error::Transport(format!(
            "no result within {after:?} (client-side task timeout)"
        )),
        CallError::Closed(reason) => Error::Transport(format!("connection closed: {reason}")),
        CallError::Protocol(text) => Error::InvalidResponse(text),
        other => Error::Transport(other.to_string()),
    }
}

/// How far a stream of results has got; see [`with_progress`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Results so far.
    pub done: usize,
    /// Of those, errors (the task failed or could not run).
    pub failed: usize,
    /// How many results to expect, if the caller said.
    pub total: Option<usize>,
}

/// An item of a stream of task results: `Result<Output>` ([`Session::map`]) or
/// `(index, Result<Output>)` ([`Session::submit_many`]).
pub trait TaskResult {
    /// The result in this item.
    fn result(&self) -> &Result<Output>;
}

impl TaskResult for Result<Output> {
    fn result(&self) -> &Result<Output> {
        self
    }
}

impl TaskResult for (usize, Result<Output>) {
    fn result(&self) -> &Result<Output> {
        &self.1
    }
}

/// Calls `callback` with the [`Progress`] after each result of `results` (of
/// [`Session::submit_many`], [`Session::map`], ...), passing the results on unchanged.
///
/// ```no_run
/// use futures::StreamExt;
/// use wasimoff_client::{Client, Task, with_progress};
/// # async fn demo(client: Client) {
/// let tasks = (0..1000).map(|i| Task::wasip1("hello.wasm").arg(i.to_string()));
/// let results = with_progress(client.submit_many(tasks, 64), Some(1000), |p| {
///     if p.done % 100 == 0 {
///         eprintln!("{}/{} done, {} failed", p.done, p.total.unwrap_or(0), p.failed);
///     }
/// });
/// let all: Vec<_> = results.collect().await;
/// # }
/// ```
pub fn with_progress<S, F>(
    results: S,
    total: Option<usize>,
    mut callback: F,
) -> impl Stream<Item = S::Item>
where
    S: Stream,
    S::Item: TaskResult,
    F: FnMut(Progress),
{
    let mut progress = Progress {
        total,
        ..Progress::default()
    };
    results.inspect(move |item| {
        progress.done += 1;
        if item.result().is_err() {
            progress.failed += 1;
        }
        callback(progress);
    })
}

//! Turning client requests into jobs: validation, file resolution, ids and deadlines. Shared by
//! every client entry point (Connect, client WebSocket, exec route).

use std::time::{Duration, Instant};

use bytes::Bytes;
use wasimoff_core::envelope::Payload;
use wasimoff_core::proto::{self, task};
use wasimoff_core::store::{PutOptions, Ref, media};

use crate::dispatch::Job;
use crate::error::{PASSED_AT_SUBMISSION, TaskError};
use crate::state::AppState;
use crate::storage::Pins;

/// What the broker's books cost per task beyond its request: the machine's entry, timers,
/// queue slots, the waiting client's channel.
const TASK_OVERHEAD: usize = 2 << 10;

/// What holding a task costs the broker in bytes, counted against `max_queue_bytes`: the
/// encoded request (its binary data, such as stdin, is held once), plus each decoded string's
/// header and heap copy.
fn job_cost<'a>(encoded: usize, strings: impl IntoIterator<Item = &'a String>) -> usize {
    strings
        .into_iter()
        .map(|s| s.len() + std::mem::size_of::<String>())
        .fold(encoded + TASK_OVERHEAD, usize::saturating_add)
}

/// Inline files are moved into the store; binary fields decoded without a copy (stdin) may
/// still share the request body's buffer and keep all of it alive. Copy such a field out.
fn own(bytes: &mut Option<Bytes>) {
    if let Some(b) = bytes.as_mut() {
        *b = Bytes::copy_from_slice(b);
    }
}

/// Checks that bytes are a valid WebAssembly module, on a blocking thread: validating a large
/// module takes long enough (about a second for 190 MB) to stall the async workers.
pub(crate) async fn validate_wasm(bytes: &Bytes) -> Result<(), TaskError> {
    let bytes = bytes.clone();
    tokio::task::spawn_blocking(move || {
        let mut validator =
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
        validator
            .validate_all(&bytes)
            .map(drop)
            .map_err(|e| TaskError::InvalidArgument(format!("invalid WebAssembly module: {e}")))
    })
    .await
    .map_err(|e| TaskError::Internal(format!("module validation failed: {e}")))?
}

impl AppState {
    /// Resolves a task file to a `sha256:` ref in the store: inline blobs are stored (and
    /// modules validated), refs and aliases must exist. The blob is pinned into `pins` in the
    /// same step, so it stays until the task is answered.
    async fn resolve_file(
        &self,
        file: &proto::File,
        what: &str,
        wasm: bool,
        pins: &mut Pins,
    ) -> Result<proto::File, TaskError> {
        let r = match (&file.blob, file.r#ref.as_deref()) {
            (Some(blob), declared) if !blob.is_empty() => {
                let limit = self.config.limits.max_inline_blob;
                if blob.len() > limit {
                    return Err(TaskError::InvalidArgument(format!(
                        "inline {what} of {} bytes exceeds the limit of {limit} bytes; upload it first",
                        blob.len()
                    )));
                }
                if let Some(declared) = declared.filter(|d| Ref::is_ref_like(d))
                    && Ref::of(blob).as_str() != declared
                {
                    return Err(TaskError::InvalidArgument(format!(
                        "inline {what} does not match its ref {declared}"
                    )));
                }
                if wasm {
                    validate_wasm(blob).await?;
                }
                self.store
                    .put_with(blob.clone(), PutOptions::durable().pinned())
                    .await?
            }
            (_, Some(name)) if !name.is_empty() => {
                let mut pinned = self.store.pin(name).await?;
                if pinned.is_none()
                    && Ref::is_ref_like(name)
                    && let Some(cluster) = &self.cluster
                {
                    // Uploaded at another broker of the cluster.
                    pinned = cluster.fetch_file(self, name).await?;
                }
                pinned.ok_or_else(|| {
                    TaskError::NotFound(format!("{what} {name:?} is not in storage"))
                })?
            }
            _ => {
                return Err(TaskError::InvalidArgument(format!(
                    "{what} has neither ref nor blob"
                )));
            }
        };
        pins.push(r.clone());
        let media = if wasm { media::WASM } else { media::ZIP };
        Ok(proto::File {
            r#ref: Some(r.to_string()),
            media: Some(media.into()),
            blob: None,
        })
    }

    /// A new task id: unique across restarts thanks to the random per-boot prefix.
    fn next_task_id(&self) -> String {
        let n = self
            .task_counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n}", self.boot_id)
    }

    /// Metadata the broker sets: its own id, the requester; the client's reference and trace
    /// are kept.
    fn task_info(
        &self,
        client: Option<task::Metadata>,
        requester: &str,
    ) -> (String, task::Metadata) {
        let id = self.next_task_id();
        let client = client.unwrap_or_default();
        let mut trace = client.trace;
        if let Some(trace) = trace.as_mut() {
            trace.events.push(task::TraceEvent {
                unixnano: Some(wasimoff_core::platform::unix_nanos()),
                event: Some(task::trace_event::EventType::BrokerReceivedClientRequest as i32),
                details: None,
            });
        }
        let info = task::Metadata {
            id: Some(id.clone()),
            requester: (!requester.is_empty()).then(|| requester.to_owned()),
            provider: None,
            reference: client.reference,
            trace,
        };
        (id, info)
    }

    /// When a task must have finished: its QoS deadline or the broker's task timeout.
    fn deadline(&self, qos: Option<&task::QoS>) -> Result<Instant, TaskError> {
        let limit = Instant::now() + self.config.limits.task_timeout;
        let Some(deadline) = qos.and_then(|q| q.deadline) else {
            return Ok(limit);
        };
        let now_ns = wasimoff_core::platform::unix_nanos() as i128;
        let left = deadline.unix_nanos() - now_ns;
        if left <= 0 {
            return Err(TaskError::DeadlineExceeded(PASSED_AT_SUBMISSION.into()));
        }
        let left = Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX));
        Ok(limit.min(Instant::now() + left))
    }

    /// The most list elements a client request may carry before it is decoded: room for
    /// `max_args` arguments, as many environment entries, and some artifacts and trace events.
    pub(crate) fn max_list_elements(&self) -> usize {
        self.config
            .limits
            .max_args
            .saturating_mul(2)
            .saturating_add(1024)
    }

    /// Checks argv and environment against the limits (count and bytes).
    fn check_args(&self, args: &[String], envs: &[String]) -> Result<(), TaskError> {
        let limits = &self.config.limits;
        if args.len() > limits.max_args {
            return Err(TaskError::InvalidArgument(format!(
                "{} arguments exceed the limit of {} (max_args)",
                args.len(),
                limits.max_args
            )));
        }
        let bytes: usize = args.iter().chain(envs).map(|a| a.len() + 1).sum();
        if bytes > limits.max_args_bytes {
            return Err(TaskError::InvalidArgument(format!(
                "arguments and environment of {bytes} bytes exceed the limit of {} bytes (max_args_bytes)",
                limits.max_args_bytes
            )));
        }
        Ok(())
    }

    /// Refuses a task whose request would not fit in one provider frame: a provider would
    /// drop its connection (and every task on it) rather than take it. Providers take frames
    /// up to the protocol's limit (64 MiB), so a broker configured with larger frames still
    /// sends no larger task. Returns the request's encoded size.
    fn check_frame(&self, request: &impl prost::Message) -> Result<usize, TaskError> {
        let size = request.encoded_len();
        let frame = (self.config.limits.max_frame).min(wasimoff_core::transport::DEFAULT_MAX_FRAME);
        // Room for the envelope around it and the broker's own metadata.
        let limit = frame.saturating_sub(64 << 10);
        if size > limit {
            return Err(TaskError::InvalidArgument(format!(
                "task request of {size} bytes exceeds the provider frame limit of {limit} bytes; \
                 put large inputs in a rootfs or an uploaded file"
            )));
        }
        Ok(size)
    }

    /// Checks a task's stdin against `max_stdin`.
    fn check_stdin(&self, stdin: Option<&Bytes>) -> Result<(), TaskError> {
        let size = stdin.map_or(0, Bytes::len);
        let limit = self.config.limits.max_stdin;
        if size > limit {
            return Err(TaskError::InvalidArgument(format!(
                "stdin of {size} bytes exceeds the limit of {limit} bytes (max_stdin)"
            )));
        }
        Ok(())
    }

    /// Validates a WASI task and turns it into a job with a deadline and the pins of its files
    /// (hold them until the task is answered).
    pub(crate) async fn prepare_wasip1(
        &self,
        request: task::wasip1::Request,
        requester: &str,
    ) -> Result<(Job, Instant, Pins), TaskError> {
        let task::wasip1::Request { info, qos, params } = request;
        let mut params =
            params.ok_or_else(|| TaskError::InvalidArgument("task without params".into()))?;
        let binary = params
            .binary
            .as_ref()
            .ok_or_else(|| TaskError::InvalidArgument("task without binary".into()))?;
        let binary_name = binary.r#ref.clone().unwrap_or_else(|| "module.wasm".into());
        self.check_stdin(params.stdin.as_ref())?;
        let inline = [&params.binary, &params.rootfs].iter().any(|f| {
            f.as_ref()
                .is_some_and(|f| f.blob.as_ref().is_some_and(|b| !b.is_empty()))
        });
        let mut pins = Pins::new(self.store.clone());
        params.binary = Some(self.resolve_file(binary, "binary", true, &mut pins).await?);
        if let Some(rootfs) = &params.rootfs {
            params.rootfs = Some(
                self.resolve_file(rootfs, "rootfs", false, &mut pins)
                    .await?,
            );
        }
        if inline {
            own(&mut params.stdin);
        }
        if let Some(bad) = params.envs.iter().find(|e| !e.contains('=')) {
            return Err(TaskError::InvalidArgument(format!(
                "env entry {bad:?} is not KEY=value"
            )));
        }
        if params.args.is_empty() {
            params.args.push(binary_name);
        }
        self.check_args(&params.args, &params.envs)?;
        let deadline = self.deadline(qos.as_ref())?;
        let (_, info) = self.task_info(info, requester);
        let request = task::wasip1::Request {
            info: Some(info),
            qos,
            params: Some(params),
        };
        Ok((self.wasip1_job(request)?, deadline, pins))
    }

    /// The job of a prepared WASI request (its files resolved, the broker's metadata and id
    /// set): what the dispatcher needs besides the request, and what holding it costs.
    pub(crate) fn wasip1_job(&self, request: task::wasip1::Request) -> Result<Job, TaskError> {
        let id = request
            .info
            .as_ref()
            .and_then(|i| i.id.clone())
            .ok_or_else(|| TaskError::Internal("a prepared task without an id".into()))?;
        let trace = request.info.as_ref().is_some_and(|i| i.trace.is_some());
        let qos = request.qos.as_ref();
        let priority = qos.and_then(|q| q.priority).unwrap_or(false);
        let immediate = qos.and_then(|q| q.immediate).unwrap_or(false);
        let binary = request
            .params
            .as_ref()
            .and_then(|p| p.binary.as_ref())
            .and_then(|b| b.r#ref.clone());
        let encoded = self.check_frame(&request)?;
        let params = request.params.as_ref();
        let strings = params
            .into_iter()
            .flat_map(|p| p.args.iter().chain(&p.envs).chain(&p.artifacts));
        let cost = job_cost(encoded, strings);
        Ok(Job {
            id,
            payload: Box::new(Payload::Wasip1Request(request)),
            binary,
            priority,
            immediate,
            patient: false,
            resumed: false,
            trace,
            cost,
        })
    }

    /// Validates a Python task; the broker does not look inside beyond sizes and files.
    pub(crate) async fn prepare_pyodide(
        &self,
        request: task::pyodide::Request,
        requester: &str,
    ) -> Result<(Job, Instant, Pins), TaskError> {
        let task::pyodide::Request { info, qos, params } = request;
        let mut params =
            params.ok_or_else(|| TaskError::InvalidArgument("task without params".into()))?;
        if params.run.is_none() {
            return Err(TaskError::InvalidArgument(
                "pyodide task without script or pickle".into(),
            ));
        }
        self.check_stdin(params.stdin.as_ref())?;
        let mut pins = Pins::new(self.store.clone());
        if let Some(rootfs) = &params.rootfs {
            let inline = rootfs.blob.as_ref().is_some_and(|b| !b.is_empty());
            params.rootfs = Some(
                self.resolve_file(rootfs, "rootfs", false, &mut pins)
                    .await?,
            );
            if inline {
                own(&mut params.stdin);
                if let Some(task::pyodide::params::Run::Pickle(pickle)) = params.run.as_mut() {
                    *pickle = Bytes::copy_from_slice(pickle);
                }
            }
        }
        self.check_args(&params.packages, &params.envs)?;
        let deadline = self.deadline(qos.as_ref())?;
        let (id, info) = self.task_info(info, requester);
        let trace = info.trace.is_some();
        let priority = qos.as_ref().and_then(|q| q.priority).unwrap_or(false);
        let immediate = qos.as_ref().and_then(|q| q.immediate).unwrap_or(false);
        let request = task::pyodide::Request {
            info: Some(info),
            qos,
            params: Some(params),
        };
        let encoded = self.check_frame(&request)?;
        let params = request.params.as_ref();
        let strings = params
            .into_iter()
            .flat_map(|p| p.packages.iter().chain(&p.envs).chain(&p.artifacts));
        let cost = job_cost(encoded, strings);
        let job = Job {
            id,
            payload: Box::new(Payload::PyodideRequest(request)),
            binary: None,
            priority,
            immediate,
            patient: false,
            resumed: false,
            trace,
            cost,
        };
        Ok((job, deadline, pins))
    }

    /// Runs a WASI task to its response.
    pub(crate) async fn run_wasip1(
        &self,
        request: task::wasip1::Request,
        requester: &str,
    ) -> Result<task::wasip1::Response, TaskError> {
        // The pins hold the task's files until it is answered (or its caller goes away, which
        // cancels it).
        let (job, deadline, pins) = self.prepare_wasip1(request, requester).await?;
        self.run_prepared_wasip1(job, deadline, pins).await
    }

    /// Runs a WASI task [prepared](Self::prepare_wasip1) already to its response; `pins` are
    /// held until then.
    pub(crate) async fn run_prepared_wasip1(
        &self,
        job: Job,
        deadline: Instant,
        pins: Pins,
    ) -> Result<task::wasip1::Response, TaskError> {
        self.submit_prepared_wasip1(job, deadline, pins).await
    }

    /// Submits a prepared WASI task to the dispatcher now (in the order of the calls) and
    /// returns the future of its response; `pins` are held until then.
    pub(crate) fn submit_prepared_wasip1(
        &self,
        job: Job,
        deadline: Instant,
        pins: Pins,
    ) -> impl Future<Output = Result<task::wasip1::Response, TaskError>> + Send + 'static {
        let info = job_info(&job);
        let submitted = self.dispatch.submit(job, deadline);
        async move {
            let _pins = pins;
            match submitted.wait().await? {
                Payload::Wasip1Response(mut response) => {
                    response.info = Some(merge_info(info, response.info.take()));
                    Ok(response)
                }
                other => Err(TaskError::ProviderFailed(format!(
                    "provider answered a WASI task with {}",
                    other.type_name()
                ))),
            }
        }
    }

    /// Runs a Python task to its response.
    pub(crate) async fn run_pyodide(
        &self,
        request: task::pyodide::Request,
        requester: &str,
    ) -> Result<task::pyodide::Response, TaskError> {
        let (job, deadline, _pins) = self.prepare_pyodide(request, requester).await?;
        let info = job_info(&job);
        match self.dispatch.run(job, deadline).await? {
            Payload::PyodideResponse(mut response) => {
                response.info = Some(merge_info(info, response.info.take()));
                Ok(response)
            }
            other => Err(TaskError::ProviderFailed(format!(
                "provider answered a Python task with {}",
                other.type_name()
            ))),
        }
    }

    /// Stores an uploaded file (Connect `Upload` and the client socket): wasm is validated,
    /// `ref` (if given and not a content ref) becomes an alias of `owner`.
    pub(crate) async fn upload(
        &self,
        request: proto::filesystem::upload::Request,
        owner: Option<&str>,
    ) -> Result<proto::filesystem::upload::Response, TaskError> {
        let file = request
            .upload
            .ok_or_else(|| TaskError::InvalidArgument("upload without file".into()))?;
        let blob = file.blob.unwrap_or_default();
        let r = self.store_upload(blob).await?;
        if let Some(alias) = file.r#ref.filter(|a| !a.is_empty() && !Ref::is_ref_like(a)) {
            self.set_alias_for(&alias, &r, owner).await?;
        }
        Ok(proto::filesystem::upload::Response {
            r#ref: Some(r.to_string()),
        })
    }

    /// Sniffs, validates and stores an upload.
    pub(crate) async fn store_upload(&self, bytes: Bytes) -> Result<Ref, TaskError> {
        let limit = self.config.limits.max_upload;
        if bytes.len() > limit {
            return Err(TaskError::InvalidArgument(format!(
                "upload of {} bytes exceeds the limit of {limit} bytes",
                bytes.len()
            )));
        }
        match media::sniff(&bytes) {
            media::WASM => validate_wasm(&bytes).await?,
            media::ZIP => {}
            _ => {
                return Err(TaskError::InvalidArgument(
                    "uploads must be WebAssembly modules or zip archives".into(),
                ));
            }
        }
        let r = self.store.put(bytes).await?;
        if let Some(cluster) = &self.cluster {
            // Any broker of the cluster may run the tasks that name it by its ref.
            cluster.share_file(self, r.as_str()).await?;
        }
        Ok(r)
    }
}

fn job_info(job: &Job) -> Option<task::Metadata> {
    match job.payload.as_ref() {
        Payload::Wasip1Request(r) => r.info.clone(),
        Payload::PyodideRequest(r) => r.info.clone(),
        _ => None,
    }
}

/// The response's metadata: the broker's id, reference and requester; the provider's name and
/// trace (with the broker's result event appended).
fn merge_info(request: Option<task::Metadata>, response: Option<task::Metadata>) -> task::Metadata {
    let request = request.unwrap_or_default();
    let Some(mut info) = response else {
        return request;
    };
    info.id = request.id;
    info.reference = request.reference;
    info.requester = request.requester;
    if info.trace.is_none() {
        info.trace = request.trace;
    }
    if let Some(trace) = info.trace.as_mut() {
        trace.events.push(task::TraceEvent {
            unixnano: Some(wasimoff_core::platform::unix_nanos()),
            event: Some(task::trace_event::EventType::BrokerTransmitClientResponse as i32),
            details: None,
        });
    }
    info
}

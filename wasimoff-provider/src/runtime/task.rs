//! Running one `Task.Wasip1.Request`: take a slot, resolve the files, build the [`ExecTask`],
//! execute it under a [`CancellationToken`], and answer with `Task.Wasip1.Response`.
//!
//! Two error channels, chosen by whether the task was attempted here:
//! - `Envelope.error` (no payload) when this provider did not take the task: all slots busy, the
//!   provider is draining, or the id is already running (a [`Refusal`], `unavailable: ...`), or
//!   no `info.id`. The broker may retry elsewhere.
//! - `result.error` (with `info` echoed) when the task was taken and failed: a missing, tampered
//!   or unfetchable file, a passed deadline, an [`ExecError`](wasimoff_core::executor::ExecError),
//!   a trap, a timeout or a cancellation. These are deterministic or final.
//!
//! A cancel ends the task whatever it is doing: while its files are being fetched it stops
//! waiting for them at once (a fetch other tasks wait for goes on), and an executing guest is
//! stopped by the executor.
//!
//! The response's `info` is the request's with `provider` set to this provider's name; when
//! `info.trace` is present, ProviderTaskReceived, ProviderWorkerExecute, ProviderWorkerDone,
//! ProviderTransmitResult (and ProviderError on failure) are appended with wall-clock nanos;
//! ProviderWorkerDone's details name the streams cut at the output cap, if any.

use std::time::Duration;

use wasimoff_core::{
    executor::{CancellationToken, ExecLimits, ExecOutput, ExecTask, truncated_streams},
    messenger::Responder,
    platform,
    proto::{
        self,
        task::{Metadata, QoS, TraceEvent, trace_event::EventType, wasip1},
    },
    remote::{CANCELLED, Refusal, TIMED_OUT},
    wkt::Timestamp,
};

use super::{
    files::{FileError, Resolved},
    provider::Session,
    status::{Refusal as NoSlot, TaskEvent},
};

/// Appends a trace event if the task carries a trace.
fn trace(info: &mut Metadata, event: EventType, details: Option<String>) {
    if let Some(trace) = info.trace.as_mut() {
        trace.events.push(TraceEvent {
            unixnano: Some(platform::unix_nanos()),
            event: Some(event as i32),
            details,
        });
    }
}

/// Handles one WASI task request from start to response.
pub(crate) async fn run_wasip1(session: Session, request: wasip1::Request, responder: Responder) {
    let mut info = request.info.unwrap_or_default();
    trace(&mut info, EventType::ProviderTaskReceived, None);
    let Some(id) = info.id.clone().filter(|id| !id.is_empty()) else {
        let _ = responder.respond(Err("task without info.id".into())).await;
        return;
    };
    let inner = &session.inner;
    let slot = match inner.slots.try_acquire() {
        Ok(slot) => slot,
        Err(refusal) => {
            // A refusal (`unavailable:`) tells the broker to place the task elsewhere.
            let why = match refusal {
                NoSlot::Full(n) => Refusal::Busy {
                    slots: Some(u32::try_from(n).unwrap_or(u32::MAX)),
                },
                NoSlot::Draining => Refusal::Draining,
            };
            tracing::debug!(task = %id, "refused: {why}");
            let _ = responder.respond(Err(why.into())).await;
            return;
        }
    };
    let token = session.token.child_token();
    let Some(registration) = inner.register(&id, token.clone()) else {
        let why = Refusal::AlreadyRunning { id: Some(id) };
        let _ = responder.respond(Err(why.into())).await;
        return;
    };
    info.provider = Some(inner.config.name.clone());
    tracing::debug!(task = %id, "task started");
    let started = platform::Instant::now();
    if inner.task_events.receiver_count() > 0 {
        let args = request
            .params
            .as_ref()
            .map(|p| p.args.clone())
            .unwrap_or_default();
        let _ = inner.task_events.send(TaskEvent::Started {
            id: id.clone(),
            args,
        });
    }
    let (result, error_output) =
        match execute(&session, &id, request.qos, request.params, token, &mut info).await {
            Ok(parts) => parts,
            Err(error) => {
                trace(&mut info, EventType::ProviderError, Some(error.clone()));
                (wasip1::response::Result::Error(error), None)
            }
        };
    let (status, error) = match &result {
        wasip1::response::Result::Error(e) => {
            tracing::debug!(task = %id, "task failed: {e}");
            inner.slots.update(|s| s.tasks_failed += 1);
            (None, Some(e.clone()))
        }
        wasip1::response::Result::Ok(output) => {
            tracing::debug!(task = %id, "task done");
            (output.status, None)
        }
    };
    if inner.task_events.receiver_count() > 0 {
        let _ = inner.task_events.send(TaskEvent::Finished {
            id: id.clone(),
            status,
            error,
            elapsed: started.elapsed(),
        });
    }
    trace(&mut info, EventType::ProviderTransmitResult, None);
    let mut response = wasip1::Response {
        info: Some(info),
        result: Some(result),
        error_output,
    };
    // A result larger than a frame would make the broker drop this connection (and every
    // other task on it): answer with an error instead. 64 KiB is left for the envelope.
    let size = prost::Message::encoded_len(&response);
    let limit = inner.config.max_frame.saturating_sub(64 << 10);
    if size > limit {
        let error = format!(
            "result of {size} bytes (output and artifacts) exceeds the frame limit of {limit} bytes"
        );
        tracing::debug!(task = %id, "{error}");
        response.result = Some(wasip1::response::Result::Error(error));
        response.error_output = None;
    }
    if let Err(e) = responder.respond(Ok(response.into())).await {
        tracing::debug!(task = %id, "result not delivered: {e}");
    }
    // The slot is freed only after the response is queued, so a drain that sees no busy slot
    // knows every result is on its way. The registration goes last: its drop releases the
    // answer to a `Task.Cancel` of this task, which must find the slot free.
    drop(slot);
    drop(registration);
}

/// Everything between taking the slot and the response: the result and, for a failure, the
/// guest's output (`Response.error_output`); `Err` becomes `result.error`.
async fn execute(
    session: &Session,
    id: &str,
    qos: Option<QoS>,
    params: Option<wasip1::Params>,
    token: CancellationToken,
    info: &mut Metadata,
) -> Result<(wasip1::response::Result, Option<wasip1::Output>), String> {
    let inner = &session.inner;
    let params = params.ok_or("task without params")?;
    let binary = params.binary.ok_or("task without params.binary")?;
    let rootfs = params
        .rootfs
        .filter(|file| file.r#ref.as_deref().is_some_and(|r| !r.is_empty()) || file.blob.is_some());
    // Fetching may take long: a cancel answers the task as cancelled at once, just as the
    // executor does for a cancelled guest.
    let files = token
        .run_until_cancelled(async {
            let binary = resolve(session, &binary, "binary").await?;
            let rootfs = match &rootfs {
                Some(file) => Some(resolve(session, file, "rootfs").await?),
                None => None,
            };
            Ok::<_, String>((binary, rootfs))
        })
        .await;
    let Some(files) = files else {
        return Ok((wasip1::response::Result::Error(CANCELLED.to_owned()), None));
    };
    let (binary, rootfs) = files?;
    let timeout = task_timeout(qos.and_then(|q| q.deadline), inner.config.max_task_timeout)?;
    let task = ExecTask {
        id: id.to_owned(),
        binary,
        args: params.args,
        envs: params.envs,
        stdin: params.stdin.unwrap_or_default(),
        rootfs,
        artifacts: params.artifacts,
        limits: ExecLimits {
            timeout: Some(timeout),
            ..ExecLimits::default()
        },
    };
    trace(info, EventType::ProviderWorkerExecute, None);
    let output = inner.executor.execute(task, token).await;
    // The flags travel in the output (`stdout_truncated` / `stderr_truncated`); a traced task
    // also says so in its trace, where an original peer can see it too.
    let cut = output
        .as_ref()
        .ok()
        .and_then(|out| truncated_streams(out.stdout_truncated, out.stderr_truncated))
        .map(|streams| format!("{streams} truncated at the output cap"));
    if let Some(cut) = &cut {
        tracing::debug!(task = %id, "{cut}");
    }
    trace(info, EventType::ProviderWorkerDone, cut);
    output
        .map(ExecOutput::into_wasip1_parts)
        .map_err(|e| e.to_string())
}

/// Resolves a file and announces it to the broker if it was fetched for this task.
async fn resolve(
    session: &Session,
    file: &proto::File,
    what: &'static str,
) -> Result<wasimoff_core::executor::ResolvedFile, String> {
    let Resolved { file, fetched } = session
        .inner
        .files
        .resolve(file, what)
        .await
        .map_err(|e: FileError| e.to_string())?;
    if let Some(r) = fetched {
        session.inner.slots.update(|s| s.files_fetched += 1);
        let update = proto::event::FileSystemUpdate {
            added: vec![r.to_string()],
            removed: Vec::new(),
        };
        if let Err(e) = session.messenger.send_event(update).await {
            tracing::debug!("cannot announce fetched file: {e}");
        }
    }
    Ok(file)
}

/// The time a task may run: until its deadline, but no longer than `max`.
fn task_timeout(deadline: Option<Timestamp>, max: Duration) -> Result<Duration, String> {
    let Some(deadline) = deadline else {
        return Ok(max);
    };
    let left = deadline.unix_nanos() - i128::from(platform::unix_nanos());
    if left <= 0 {
        return Err(format!("{TIMED_OUT} before the task started"));
    }
    let left = Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX));
    Ok(left.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_the_deadline() {
        let max = Duration::from_secs(60);
        assert_eq!(task_timeout(None, max), Ok(max));
        let now = i128::from(platform::unix_nanos());
        let soon = Timestamp::from_unix_nanos(now + 5_000_000_000);
        let t = task_timeout(Some(soon), max).unwrap();
        assert!(
            t <= Duration::from_secs(5) && t > Duration::from_secs(4),
            "{t:?}"
        );
        let late = Timestamp::from_unix_nanos(now + 3_600_000_000_000);
        assert_eq!(task_timeout(Some(late), max), Ok(max));
        let past = Timestamp::from_unix_nanos(now - 1);
        assert!(task_timeout(Some(past), max).is_err());
    }
}

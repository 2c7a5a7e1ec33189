//! Running tasks submitted by id (`POST /api/client/tasks`): accept (durably, when the broker
//! has a [journal](crate::journal)), run, record the result, and resume what a previous run of
//! the broker had accepted and not answered.
//!
//! The exactly-once argument: a client learns a task's id only after [`Journal::accept`]
//! returned, so every id a client holds is in the journal or has a result there. A result is
//! recorded by [`Journal::finish`], first write wins, and is what every fetch of that id
//! returns, so a task run twice (its broker died after the run and before the record) still
//! has one answer. A restart runs again exactly the accepted tasks without a result. A task
//! that fails only because this broker is shutting down gets no result: it stays accepted and
//! the next start runs it.
//!
//! [`Journal::accept`]: crate::journal::Journal::accept
//! [`Journal::finish`]: crate::journal::Journal::finish

use std::collections::HashMap;
use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use wasimoff_core::proto::task::wasip1;
use wasimoff_core::store::Ref;

use crate::detached::Detached;
use crate::dispatch::Job;
use crate::error::TaskError;
use crate::journal::{Recovered, ResultRecord, TaskRecord, unix_nanos};
use crate::state::{App, AppState};
use crate::storage::Pins;

impl AppState {
    /// Runs `f` on the detached tasks' table and hands the results it dropped (expired or
    /// evicted) to the journal. A poisoned lock (a panic elsewhere) still holds valid data.
    pub(crate) fn with_detached<T>(&self, f: impl FnOnce(&mut Detached) -> T) -> T {
        let (value, forgotten) = {
            let mut table = self
                .detached
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let value = f(&mut table);
            (value, table.take_forgotten())
        };
        if let Some(journal) = &self.journal {
            journal.forget(forgotten);
        }
        value
    }

    /// Accepts a prepared task for fetching later by id: durably first (the id is the
    /// client's only after this returns), then it runs in the background. The steps run in a
    /// task of their own, so that a request dropped halfway (its client went away) cannot
    /// leave a journaled task that nothing runs.
    pub(crate) async fn accept_by_id(
        self: &App,
        job: Job,
        deadline: Instant,
        pins: Pins,
        owner: Option<String>,
    ) -> Result<String, TaskError> {
        let app = self.clone();
        tokio::spawn(async move { app.accept_now(job, deadline, pins, owner).await })
            .await
            .map_err(|e| TaskError::Internal(format!("accepting a task failed: {e}")))?
    }

    async fn accept_now(
        self: App,
        mut job: Job,
        deadline: Instant,
        pins: Pins,
        owner: Option<String>,
    ) -> Result<String, TaskError> {
        let id = job.id.clone();
        // Nobody holds a connection open for it: it waits for providers until its deadline.
        job.patient = true;
        if self.journal.is_some() || self.cluster.is_some() {
            let request = match job.payload.as_ref() {
                wasimoff_core::envelope::Payload::Wasip1Request(request) => request,
                other => {
                    return Err(TaskError::Internal(format!(
                        "only WASI tasks are submitted by id, not {}",
                        other.type_name()
                    )));
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let record = TaskRecord {
                // Its binary fields (stdin) are shared, not copied.
                request: Some(request.clone()),
                deadline_unix_ns: unix_nanos()
                    .saturating_add(i64::try_from(left.as_nanos()).unwrap_or(i64::MAX)),
                owner: owner.clone(),
            };
            if let Some(cluster) = &self.cluster {
                // The stream holds it now, and whichever broker has a free provider runs it.
                cluster.accept(&self, &id, record).await?;
                self.with_detached(|d| d.submitted(id.clone(), owner));
                drop(pins);
                return Ok(id);
            }
            if let Some(journal) = &self.journal {
                journal.accept(&id, record).await?;
            }
        }
        self.with_detached(|d| d.submitted(id.clone(), owner.clone()));
        let response = self.submit_prepared_wasip1(job, deadline, pins);
        let app = self.clone();
        let task_id = id.clone();
        tokio::spawn(async move {
            let result = response.await;
            app.record_by_id(task_id, owner, result).await;
        });
        Ok(id)
    }

    /// Records a task's result: in the journal (first result wins), then for fetches.
    async fn record_by_id(
        &self,
        id: String,
        owner: Option<String>,
        result: Result<wasip1::Response, TaskError>,
    ) {
        let result = crate::detached::bounded(result, self.config.limits.max_result_bytes);
        if let Some(journal) = &self.journal {
            if matches!(result, Err(TaskError::ShuttingDown))
                && self.stopping.load(std::sync::atomic::Ordering::SeqCst)
            {
                // Not an answer: the task stays accepted, and the next start runs it.
                return;
            }
            if let Err(e) = journal.finish(&id, ResultRecord::new(owner, &result)).await {
                // The client still gets the result from memory; a restart would run it again.
                tracing::error!(%id, error = %e, "cannot record a task's result durably");
            }
        }
        self.with_detached(|d| d.finished(Instant::now(), &id, result));
        self.waiters.wake(&id);
    }

    /// Takes over what the journal held when it was opened: results are kept for their
    /// clients again (with the age they had), accepted tasks without a result run again. They
    /// reach the dispatcher before this returns, so before any new task: they were admitted
    /// once and keep their place.
    pub(crate) async fn recover(self: &App, mut recovered: Recovered) {
        for unreadable in &recovered.unreadable {
            tracing::error!(record = %unreadable, "dropped an unreadable task journal record");
        }
        if recovered.tasks.is_empty() && recovered.results.is_empty() {
            return;
        }
        tracing::info!(
            tasks = recovered.tasks.len(),
            results = recovered.results.len(),
            "resuming the tasks accepted before the restart"
        );
        // Oldest first: the table expires and evicts in the order results were recorded.
        recovered.results.sort_by_key(|(_, r)| r.recorded_unix_ns);
        let (now, now_unix) = (Instant::now(), unix_nanos());
        self.with_detached(|d| {
            for (id, record) in recovered.results {
                let at = record.recorded_at(now, now_unix);
                d.restore(now, at, id, record.owner.clone(), record.result());
            }
            for (id, record) in &recovered.tasks {
                d.submitted(id.clone(), record.owner.clone());
            }
        });
        for (id, record) in recovered.tasks {
            let owner = record.owner.clone();
            let response = match self.resume(&id, record).await {
                Ok((job, deadline, pins)) => Ok(self.submit_prepared_wasip1(job, deadline, pins)),
                Err(e) => Err(e),
            };
            let app = self.clone();
            tokio::spawn(async move {
                let result = match response {
                    Ok(response) => response.await,
                    Err(e) => Err(e),
                };
                app.record_by_id(id, owner, result).await;
            });
        }
    }

    /// A journaled task as a job again: its deadline carried over, its files pinned.
    pub(crate) async fn resume(
        &self,
        id: &str,
        record: TaskRecord,
    ) -> Result<(Job, Instant, Pins), TaskError> {
        let request = record
            .request
            .ok_or_else(|| TaskError::Internal(format!("journaled task {id} has no request")))?;
        let deadline = deadline_now(record.deadline_unix_ns, unix_nanos(), Instant::now())?;
        let mut pins = Pins::new(self.store.clone());
        let mut files = Vec::new();
        if let Some(params) = &request.params {
            for file in [&params.binary, &params.rootfs].into_iter().flatten() {
                files.extend(file.r#ref.clone());
            }
        }
        for name in files {
            let mut pinned: Option<Ref> = self.store.pin(&name).await?;
            if pinned.is_none()
                && let Some(cluster) = &self.cluster
            {
                // Accepted at another broker: its files are in the cluster's object store.
                pinned = cluster.fetch_file(self, &name).await?;
            }
            let pinned = pinned.ok_or_else(|| {
                TaskError::NotFound(format!(
                    "{name} is no longer in the broker's store (nor in a cluster's object store)"
                ))
            })?;
            pins.push(pinned);
        }
        let mut job = self.wasip1_job(request)?;
        job.patient = true;
        // Admitted before the restart: the queue's count limit is not applied again (the
        // tasks running then were not counted in it).
        job.resumed = true;
        if job.id != id {
            return Err(TaskError::Internal(format!(
                "journaled task {id} holds the request of {}",
                job.id
            )));
        }
        Ok((job, deadline, pins))
    }
}

/// The requests waiting for particular tasks to finish (fetches and waits that long-poll), so
/// that a result wakes only those that named its id: a waiter costs nothing when other tasks
/// finish, however many ids the others follow.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    by_id: Mutex<WaiterMap>,
    next: AtomicU64,
}

impl Waiters {
    /// Registers interest in `ids`; register before looking at their states, so that a
    /// result recorded in between is not missed.
    pub(crate) fn register<'a>(&'a self, ids: &[String]) -> Registration<'a> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let mut map = self.lock();
        for id in ids {
            map.entry(id.clone())
                .or_default()
                .push((token, notify.clone()));
        }
        Registration {
            waiters: self,
            token,
            ids: ids.to_vec(),
            notify,
        }
    }

    /// Task `id` finished: wakes who waits for it.
    pub(crate) fn wake(&self, id: &str) {
        let woken = self.lock().remove(id);
        for (_, notify) in woken.into_iter().flatten() {
            // Stores a permit if the waiter is between its check and its await.
            notify.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WaiterMap> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Task id -> (registration token, its waker) of each request waiting for it.
type WaiterMap = HashMap<String, Vec<(u64, Arc<Notify>)>>;

/// One request's interest in some ids; dropping it unregisters.
pub(crate) struct Registration<'a> {
    waiters: &'a Waiters,
    token: u64,
    ids: Vec<String>,
    notify: Arc<Notify>,
}

impl Registration<'_> {
    /// Until one of the ids finishes (at once if one did since the registration).
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut map = self.waiters.lock();
        for id in &self.ids {
            if let Some(list) = map.get_mut(id) {
                list.retain(|(token, _)| *token != self.token);
                if list.is_empty() {
                    map.remove(id);
                }
            }
        }
    }
}

/// A journaled wall-clock deadline as an [`Instant`] of this process (`now_unix_ns` and `now`
/// are the same moment); one that has passed is the task's result.
fn deadline_now(
    deadline_unix_ns: i64,
    now_unix_ns: i64,
    now: Instant,
) -> Result<Instant, TaskError> {
    let left = deadline_unix_ns.saturating_sub(now_unix_ns);
    if left <= 0 {
        return Err(TaskError::DeadlineExceeded(
            "the task's deadline passed while the broker was down".into(),
        ));
    }
    let left = Duration::from_nanos(left.unsigned_abs());
    Ok(now
        .checked_add(left)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_result_wakes_only_who_waits_for_it_and_none_is_missed() {
        let waiters = Waiters::default();
        let ids = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let a = waiters.register(&ids(&["t1", "t2"]));
        let b = waiters.register(&ids(&["t3"]));
        // Recorded after the registration, before the await: the permit is kept.
        waiters.wake("t2");
        tokio::time::timeout(Duration::from_secs(5), a.notified())
            .await
            .expect("woken");
        // b was not woken by t2.
        assert!(
            tokio::time::timeout(Duration::ZERO, b.notified())
                .await
                .is_err()
        );
        drop(a);
        drop(b);
        assert_eq!(
            waiters.len(),
            0,
            "dropped registrations leave nothing behind"
        );
        waiters.wake("nobody");
    }

    #[test]
    fn a_deadline_keeps_its_wall_clock_time_across_a_restart() {
        let now = Instant::now();
        let second = 1_000_000_000;
        assert_eq!(
            deadline_now(10 * second, 7 * second, now),
            Ok(now + Duration::from_secs(3))
        );
        for passed in [7 * second, 6 * second, i64::MIN] {
            assert!(matches!(
                deadline_now(passed, 7 * second, now),
                Err(TaskError::DeadlineExceeded(m)) if m.contains("while the broker was down")
            ));
        }
        // Far future: no overflow.
        assert!(deadline_now(i64::MAX, i64::MIN, now).is_ok());
    }
}

//! The durable state of tasks submitted by id (`POST /api/client/tasks`): the tasks accepted and
//! not yet answered, and the results recorded and not yet forgotten.
//!
//! [`Journal`] is the interface; [`RedbJournal`] keeps it in one `redb` file beside the store's
//! files (`--data-dir`). The dispatcher's queue, attempts and provider books stay in memory: on
//! a restart every accepted task without a result is queued again, so execution is at least
//! once, while a task's result is recorded at most once (the first [`Journal::finish`] for an
//! id wins) and the client fetches it by id, so it is answered exactly once.
//!
//! Why redb: an embedded, pure-Rust B-tree with ACID transactions whose commit is durable
//! (fsync) by default, one file, no background threads or compaction to tune, a stable file
//! format since 1.0. The journal's load is small keyed records written once and deleted once,
//! which a B-tree serves well; an LSM store (fjall) would add compaction for no gain here.
//!
//! Writes go through one writer thread that commits everything queued since its last commit in
//! one transaction (group commit): one fsync serves many accepts and results at once.

use std::{
    path::Path,
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;
pub(crate) use wasimoff_core::platform::unix_nanos;
use wasimoff_core::proto::task::wasip1;

use crate::error::TaskError;

/// Accepted tasks without a result: id -> [`TaskRecord`].
const TASKS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("tasks");
/// Recorded results: id -> [`ResultRecord`].
const RESULTS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("results");

/// The journal file's name in the data directory.
pub(crate) const FILE_NAME: &str = "tasks.redb";

/// Why the journal could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[error("task journal: {0}")]
pub(crate) struct JournalError(String);

/// The text of a journal that was closed (the broker is shutting down).
const CLOSED: &str = "closed";

impl From<JournalError> for TaskError {
    fn from(e: JournalError) -> Self {
        if e.0 == CLOSED {
            // Worth retrying at the next start, not the task's fault.
            TaskError::ShuttingDown
        } else {
            TaskError::Internal(e.to_string())
        }
    }
}

/// An accepted task as the journal keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TaskRecord {
    /// The prepared `Task.Wasip1.Request` (files resolved to refs, the broker's metadata set).
    #[prost(message, optional, tag = "1")]
    pub(crate) request: Option<wasip1::Request>,
    /// When the task must have been answered, in Unix nanoseconds.
    #[prost(int64, tag = "2")]
    pub(crate) deadline_unix_ns: i64,
    /// The submitting token's owner id.
    #[prost(string, optional, tag = "3")]
    pub(crate) owner: Option<String>,
}

/// A recorded result as the journal keeps it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResultRecord {
    #[prost(string, optional, tag = "1")]
    pub(crate) owner: Option<String>,
    /// When it was recorded, in Unix nanoseconds (results expire `result_ttl` later).
    #[prost(int64, tag = "2")]
    pub(crate) recorded_unix_ns: i64,
    /// The `Task.Wasip1.Response`.
    #[prost(message, optional, tag = "3")]
    pub(crate) response: Option<wasip1::Response>,
    /// Or why there is none: a [`TaskError`] as JSON.
    #[prost(string, optional, tag = "4")]
    pub(crate) error: Option<String>,
}

impl ResultRecord {
    pub(crate) fn new(
        owner: Option<String>,
        result: &Result<wasip1::Response, TaskError>,
    ) -> ResultRecord {
        let (response, error) = match result {
            // Its binary fields are shared, not copied.
            Ok(response) => (Some(response.clone()), None),
            Err(e) => (
                None,
                Some(
                    serde_json::to_string(e)
                        .unwrap_or_else(|_| format!("{{\"Internal\":{:?}}}", e.to_string())),
                ),
            ),
        };
        ResultRecord {
            owner,
            recorded_unix_ns: unix_nanos(),
            response,
            error,
        }
    }

    /// The result it holds; a record that cannot be read is an internal error of its task.
    pub(crate) fn result(&self) -> Result<wasip1::Response, TaskError> {
        match (&self.response, &self.error) {
            (Some(response), _) => Ok(response.clone()),
            (None, Some(json)) => Err(serde_json::from_str(json).unwrap_or_else(|e| {
                TaskError::Internal(format!("unreadable recorded error ({e}): {json}"))
            })),
            (None, None) => Err(TaskError::Internal("empty recorded result".into())),
        }
    }

    /// When it was recorded, as an [`Instant`] of this process (`now` is the same moment).
    pub(crate) fn recorded_at(&self, now: Instant, now_unix_ns: i64) -> Instant {
        let age = u64::try_from(now_unix_ns.saturating_sub(self.recorded_unix_ns)).unwrap_or(0);
        now.checked_sub(Duration::from_nanos(age)).unwrap_or(now)
    }
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Accepted tasks without a result: run them again.
    pub(crate) tasks: Vec<(String, TaskRecord)>,
    /// Results not yet forgotten: keep them for their clients.
    pub(crate) results: Vec<(String, ResultRecord)>,
    /// Records that could not be decoded (and were dropped), with why.
    pub(crate) unreadable: Vec<String>,
}

/// The durable state of tasks submitted by id.
///
/// Implementations make [`accept`](Journal::accept) and [`finish`](Journal::finish) durable
/// before they return: a task whose id the client received survives a crash of the broker,
/// and so does its result.
#[async_trait::async_trait]
pub(crate) trait Journal: Send + Sync + std::fmt::Debug {
    /// Records an accepted task.
    async fn accept(&self, id: &str, task: TaskRecord) -> Result<(), JournalError>;
    /// Records a task's result and drops the task; the first result for an id wins. Returns
    /// whether this call recorded it.
    async fn finish(&self, id: &str, result: ResultRecord) -> Result<bool, JournalError>;
    /// Drops results (and tasks) nobody will fetch any more; not waited for.
    fn forget(&self, ids: Vec<String>);
    /// Writes what is queued and lets go of the storage (the broker shuts down): later calls
    /// fail. Another broker may open the same storage once this returns.
    async fn close(&self);
}

enum Op {
    Accept {
        id: String,
        record: Vec<u8>,
        done: oneshot::Sender<Result<(), JournalError>>,
    },
    Finish {
        id: String,
        record: Vec<u8>,
        done: oneshot::Sender<Result<bool, JournalError>>,
    },
    Forget {
        ids: Vec<String>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// The journal in a redb file, written by one thread with group commits.
#[derive(Debug)]
pub(crate) struct RedbJournal {
    ops: std_mpsc::Sender<Op>,
}

/// The most operations one transaction takes (a bound on the latency of the first of them).
const MAX_BATCH: usize = 4096;

impl RedbJournal {
    /// Opens (or creates) the journal at `path` and reads what it holds. Blocking: call it on
    /// a blocking thread.
    pub(crate) fn open(path: &Path) -> Result<(RedbJournal, Recovered), JournalError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            JournalError(format!("{what} {}: {e}", path.display()))
        };
        let db = Database::create(path).map_err(|e| {
            JournalError(format!(
                "cannot open {}: {e} (another broker may hold it; if the file is damaged, move \
                 it away to start without the tasks it holds)",
                path.display()
            ))
        })?;
        // Create both tables, so that reading never meets a missing one.
        let txn = db.begin_write().map_err(|e| err("cannot write", &e))?;
        txn.open_table(TASKS).map_err(|e| err("cannot write", &e))?;
        txn.open_table(RESULTS)
            .map_err(|e| err("cannot write", &e))?;
        txn.commit().map_err(|e| err("cannot write", &e))?;
        let recovered = read_all(&db).map_err(|e| err("cannot read", &e))?;
        let (ops, rx) = std_mpsc::channel();
        let name = path.display().to_string();
        std::thread::Builder::new()
            .name("wasimoff-journal".into())
            .spawn(move || writer(db, rx, name))
            .map_err(|e| err("cannot start the writer of", &e))?;
        Ok((RedbJournal { ops }, recovered))
    }

    fn send(&self, op: Op) -> Result<(), JournalError> {
        self.ops.send(op).map_err(|_| JournalError(CLOSED.into()))
    }

    /// Queues the operation `op` makes and waits for the writer's answer.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Op,
    ) -> Result<T, JournalError> {
        let (done, rx) = oneshot::channel();
        self.send(op(done))?;
        rx.await.map_err(|_| JournalError(CLOSED.into()))?
    }
}

#[async_trait::async_trait]
impl Journal for RedbJournal {
    async fn accept(&self, id: &str, task: TaskRecord) -> Result<(), JournalError> {
        let record = prost::Message::encode_to_vec(&task);
        self.ask(|done| Op::Accept {
            id: id.to_owned(),
            record,
            done,
        })
        .await
    }

    async fn finish(&self, id: &str, result: ResultRecord) -> Result<bool, JournalError> {
        let record = prost::Message::encode_to_vec(&result);
        self.ask(|done| Op::Finish {
            id: id.to_owned(),
            record,
            done,
        })
        .await
    }

    fn forget(&self, ids: Vec<String>) {
        if !ids.is_empty() {
            let _ = self.send(Op::Forget { ids });
        }
    }

    async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.send(Op::Close { done }).is_ok() {
            // An error: the writer had stopped already.
            let _ = rx.await;
        }
    }
}

fn read_all(db: &Database) -> Result<Recovered, redb::Error> {
    let txn = db.begin_read()?;
    let mut recovered = Recovered::default();
    for entry in txn.open_table(TASKS)?.iter()? {
        let (id, value) = entry?;
        match <TaskRecord as prost::Message>::decode(value.value()) {
            Ok(record) => recovered.tasks.push((id.value().to_owned(), record)),
            Err(e) => recovered
                .unreadable
                .push(format!("task {}: {e}", id.value())),
        }
    }
    for entry in txn.open_table(RESULTS)?.iter()? {
        let (id, value) = entry?;
        match <ResultRecord as prost::Message>::decode(value.value()) {
            Ok(record) => recovered.results.push((id.value().to_owned(), record)),
            Err(e) => recovered
                .unreadable
                .push(format!("result {}: {e}", id.value())),
        }
    }
    Ok(recovered)
}

/// The writer thread: takes every queued operation, applies them in one transaction, commits
/// (durably), then answers them. Ends when the journal is dropped.
fn writer(db: Database, ops: std_mpsc::Receiver<Op>, name: String) {
    let mut closed = None;
    while let Ok(first) = ops.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        if let Some(at) = batch.iter().position(|op| matches!(op, Op::Close { .. })) {
            // What came after the close is dropped: its callers see the writer gone.
            batch.truncate(at + 1);
            if let Some(Op::Close { done }) = batch.pop() {
                closed = Some(done);
            }
        }
        match apply(&db, &batch) {
            Ok(recorded) => {
                for (op, first) in batch.into_iter().zip(recorded) {
                    match op {
                        Op::Accept { done, .. } => {
                            let _ = done.send(Ok(()));
                        }
                        Op::Finish { done, .. } => {
                            let _ = done.send(Ok(first));
                        }
                        Op::Forget { .. } | Op::Close { .. } => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(journal = %name, error = %e, "task journal write failed");
                let error = || JournalError(format!("cannot write {name}: {e}"));
                for op in batch {
                    match op {
                        Op::Accept { done, .. } => {
                            let _ = done.send(Err(error()));
                        }
                        Op::Finish { done, .. } => {
                            let _ = done.send(Err(error()));
                        }
                        Op::Forget { .. } | Op::Close { .. } => {}
                    }
                }
            }
        }
        if let Some(done) = closed {
            drop(db);
            let _ = done.send(());
            return;
        }
    }
}

/// Applies a batch in one durable transaction; for each op, whether it recorded a first result.
fn apply(db: &Database, batch: &[Op]) -> Result<Vec<bool>, redb::Error> {
    let txn = db.begin_write()?;
    let mut recorded = Vec::with_capacity(batch.len());
    {
        let mut tasks = txn.open_table(TASKS)?;
        let mut results = txn.open_table(RESULTS)?;
        for op in batch {
            match op {
                Op::Accept { id, record, .. } => {
                    tasks.insert(id.as_str(), record.as_slice())?;
                    recorded.push(false);
                }
                Op::Finish { id, record, .. } => {
                    let first = results.get(id.as_str())?.is_none();
                    if first {
                        results.insert(id.as_str(), record.as_slice())?;
                    }
                    tasks.remove(id.as_str())?;
                    recorded.push(first);
                }
                Op::Forget { ids } => {
                    for id in ids {
                        results.remove(id.as_str())?;
                        tasks.remove(id.as_str())?;
                    }
                    recorded.push(false);
                }
                Op::Close { .. } => recorded.push(false),
            }
        }
    }
    txn.commit()?;
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn task(n: u8) -> TaskRecord {
        TaskRecord {
            request: Some(wasip1::Request {
                info: Some(wasimoff_core::proto::task::Metadata {
                    id: Some(format!("t{n}")),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            deadline_unix_ns: 1_000 + i64::from(n),
            owner: Some(format!("owner-{n}")),
        }
    }

    fn ok(stdout: &str) -> Result<wasip1::Response, TaskError> {
        Ok(wasip1::Response {
            info: None,
            result: Some(wasip1::response::Result::Ok(wasip1::Output {
                stdout: Some(Bytes::from(stdout.to_owned())),
                ..Default::default()
            })),
            error_output: None,
        })
    }

    #[tokio::test]
    async fn tasks_and_results_survive_a_reopen_and_the_first_result_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        {
            let (journal, recovered) = RedbJournal::open(&path).unwrap();
            assert!(recovered.tasks.is_empty() && recovered.results.is_empty());
            // Accepted concurrently, so that they share commits.
            let accepts = (0..50u8).map(|n| {
                let journal = &journal;
                async move { journal.accept(&format!("t{n}"), task(n)).await }
            });
            for r in futures::future::join_all(accepts).await {
                r.unwrap();
            }
            assert!(
                journal
                    .finish("t1", ResultRecord::new(None, &ok("first")))
                    .await
                    .unwrap()
            );
            assert!(
                !journal
                    .finish("t1", ResultRecord::new(None, &ok("second")))
                    .await
                    .unwrap()
            );
            let error = TaskError::DeadlineExceeded("queued for 5 s".into());
            journal
                .finish("t2", ResultRecord::new(Some("o".into()), &Err(error)))
                .await
                .unwrap();
            journal
                .finish("t3", ResultRecord::new(None, &ok("gone")))
                .await
                .unwrap();
            journal.forget(vec!["t3".into(), "t4".into()]);
            journal
                .finish("t5", ResultRecord::new(None, &ok("five")))
                .await
                .unwrap();
            // Open twice at once: refused.
            let e = RedbJournal::open(&path).unwrap_err();
            assert!(e.to_string().contains("cannot open"), "{e}");
            journal.close().await;
            let e = journal.accept("late", task(99)).await.unwrap_err();
            assert_eq!(TaskError::from(e), TaskError::ShuttingDown);
        }
        let (_journal, recovered) = RedbJournal::open(&path).unwrap();
        let mut tasks: Vec<_> = recovered.tasks.iter().map(|(id, _)| id.clone()).collect();
        tasks.sort();
        let mut expected: Vec<_> = (0..50u8)
            .filter(|n| ![1, 2, 3, 4, 5].contains(n))
            .map(|n| format!("t{n}"))
            .collect();
        expected.sort();
        assert_eq!(tasks, expected);
        let t7 = recovered.tasks.iter().find(|(id, _)| id == "t7").unwrap();
        assert_eq!(t7.1, task(7));
        let results: std::collections::HashMap<_, _> = recovered.results.into_iter().collect();
        assert_eq!(results.len(), 3, "t1, t2 and t5: t3 was forgotten");
        assert_eq!(results["t1"].result(), ok("first"));
        assert_eq!(results["t5"].result(), ok("five"));
        assert_eq!(
            results["t2"].result(),
            Err(TaskError::DeadlineExceeded("queued for 5 s".into()))
        );
        assert_eq!(results["t2"].owner.as_deref(), Some("o"));
        assert!(recovered.unreadable.is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"not a database at all, not at all").unwrap();
        let e = RedbJournal::open(&path).unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
    }

    #[test]
    fn the_age_of_a_result_carries_over() {
        let now = Instant::now();
        let record = ResultRecord {
            recorded_unix_ns: 5_000_000_000,
            ..ResultRecord::default()
        };
        let at = record.recorded_at(now, 8_000_000_000);
        assert_eq!(now.duration_since(at), Duration::from_secs(3));
        // A clock that went back makes it new, never in the future.
        assert_eq!(record.recorded_at(now, 1), now);
    }
}

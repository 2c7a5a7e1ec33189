//! Tasks submitted now and fetched later by id (`POST /api/client/tasks`,
//! `GET|DELETE /api/client/tasks/{id}`): the table of their states and kept results.
//!
//! [`Detached`] decides without I/O and reads no clock: every call takes `now`. A result is
//! kept for `ttl` after it is recorded, and the kept results together hold at most
//! `max_bytes` (each charged its encoded size): the oldest go first. A task that is still
//! pending holds nothing here beyond its id (its request is in the dispatcher, charged to the
//! queue's byte budget), and pending entries are bounded by the dispatcher's queue; with
//! brokers on NATS (`cluster.rs`), by the shared stream's (the tasks accepted here or looked
//! up here, until their results arrive).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use wasimoff_core::proto::task::wasip1;

use crate::error::TaskError;

/// What a task's client finds under its id.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Lookup {
    /// Not finished yet.
    Pending,
    /// Its result: the response, or why there is none.
    Done(Box<Result<wasip1::Response, TaskError>>),
    /// No such task for this client: never submitted, another token's, or expired.
    Unknown,
}

#[derive(Debug)]
enum State {
    Pending,
    Done {
        result: Box<Result<wasip1::Response, TaskError>>,
        bytes: usize,
        at: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    /// The submitting token's owner id (`None` without client tokens).
    owner: Option<String>,
    state: State,
}

/// The detached tasks and their kept results.
#[derive(Debug)]
pub(crate) struct Detached {
    ttl: Duration,
    max_bytes: usize,
    entries: HashMap<String, Entry>,
    /// Finished ids in the order their results were recorded (the eviction order).
    finished: VecDeque<String>,
    bytes: usize,
    /// Ids whose results were dropped (expired or evicted) since the last
    /// [`take_forgotten`](Detached::take_forgotten), for the durable journal to drop too.
    forgotten: Vec<String>,
}

/// What a client finds under an id, without the result itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    Pending,
    Done,
    Unknown,
}

impl Detached {
    pub(crate) fn new(ttl: Duration, max_bytes: usize) -> Self {
        Detached {
            ttl,
            max_bytes,
            entries: HashMap::new(),
            finished: VecDeque::new(),
            bytes: 0,
            forgotten: Vec::new(),
        }
    }

    /// A task was accepted for `owner`. An entry the id has already (with brokers on NATS,
    /// its result may come before its accept returns) is kept.
    pub(crate) fn submitted(&mut self, id: String, owner: Option<String>) {
        self.entries.entry(id).or_insert(Entry {
            owner,
            state: State::Pending,
        });
    }

    /// A result recorded before a restart, at `at`: kept as if it had just been recorded then.
    pub(crate) fn restore(
        &mut self,
        now: Instant,
        at: Instant,
        id: String,
        owner: Option<String>,
        result: Result<wasip1::Response, TaskError>,
    ) {
        self.submitted(id.clone(), owner);
        self.finished(at, &id, result);
        self.expire(now);
    }

    /// A result recorded at `at` by some broker of the cluster: kept unless this table has
    /// one for the id already (the first result wins everywhere, so it is the same).
    pub(crate) fn mirror(
        &mut self,
        now: Instant,
        at: Instant,
        id: &str,
        owner: Option<String>,
        result: Result<wasip1::Response, TaskError>,
    ) {
        match self.entries.get(id) {
            Some(Entry {
                state: State::Done { .. },
                ..
            }) => return,
            Some(_) => {}
            None => self.submitted(id.to_owned(), owner),
        }
        self.finished(at, id, result);
        self.expire(now);
    }

    /// A task's result arrived: keep it (evicting the oldest kept results if needed; a
    /// result larger than the whole budget is replaced by an error saying so).
    pub(crate) fn finished(
        &mut self,
        now: Instant,
        id: &str,
        result: Result<wasip1::Response, TaskError>,
    ) {
        self.expire(now);
        let result = bounded(result, self.max_bytes);
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if !matches!(entry.state, State::Pending) {
            return;
        }
        let bytes = result.as_ref().map_or(0, prost::Message::encoded_len);
        entry.state = State::Done {
            result: Box::new(result),
            bytes,
            at: now,
        };
        self.bytes += bytes;
        self.finished.push_back(id.to_owned());
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.finished.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
    }

    /// Whether `owner` finds `id` pending, done or not at all (without copying a result).
    pub(crate) fn found(&mut self, now: Instant, id: &str, owner: Option<&str>) -> Found {
        match self.visible(now, id, owner) {
            Some(State::Pending) => Found::Pending,
            Some(State::Done { .. }) => Found::Done,
            None => Found::Unknown,
        }
    }

    /// The state of `id` if `owner` may see it (after expiring what is due).
    fn visible(&mut self, now: Instant, id: &str, owner: Option<&str>) -> Option<&State> {
        self.expire(now);
        self.entries
            .get(id)
            .filter(|entry| entry.owner.as_deref() == owner)
            .map(|entry| &entry.state)
    }

    /// The ids of the tasks still pending.
    pub(crate) fn pending_ids(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, entry)| matches!(entry.state, State::Pending))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The ids whose results were dropped since the last call.
    pub(crate) fn take_forgotten(&mut self) -> Vec<String> {
        std::mem::take(&mut self.forgotten)
    }

    /// What `owner` finds under `id`.
    pub(crate) fn lookup(&mut self, now: Instant, id: &str, owner: Option<&str>) -> Lookup {
        match self.visible(now, id, owner) {
            Some(State::Pending) => Lookup::Pending,
            Some(State::Done { result, .. }) => Lookup::Done(result.clone()),
            None => Lookup::Unknown,
        }
    }

    /// Drops the results kept longer than `ttl`.
    fn expire(&mut self, now: Instant) {
        while let Some(oldest) = self.finished.front() {
            let expired = match self.entries.get(oldest) {
                Some(Entry {
                    state: State::Done { at, .. },
                    ..
                }) => now.saturating_duration_since(*at) >= self.ttl,
                _ => true,
            };
            if !expired {
                break;
            }
            if let Some(id) = self.finished.pop_front() {
                self.remove(&id);
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if let Some(Entry {
            state: State::Done { bytes, .. },
            ..
        }) = self.entries.remove(id)
        {
            self.bytes -= bytes;
            self.forgotten.push(id.to_owned());
        }
    }

    /// Results kept now, and their bytes.
    #[cfg(test)]
    fn kept(&self) -> (usize, usize) {
        (self.finished.len(), self.bytes)
    }
}

/// A result as it is kept: one larger than `max_bytes` (the whole budget of kept results)
/// becomes an error saying so, and that is also what the journal records.
pub(crate) fn bounded(
    result: Result<wasip1::Response, TaskError>,
    max_bytes: usize,
) -> Result<wasip1::Response, TaskError> {
    match result {
        Ok(response) => {
            let bytes = prost::Message::encoded_len(&response);
            if bytes > max_bytes {
                Err(TaskError::ResultTooLarge(format!(
                    "the result of {bytes} bytes exceeds the broker's budget of {max_bytes} bytes \
                     for kept results (run the task with RunWasip1 to receive it directly)"
                )))
            } else {
                Ok(response)
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(stdout: usize) -> wasip1::Response {
        wasip1::Response {
            info: None,
            result: Some(wasip1::response::Result::Ok(wasip1::Output {
                stdout: Some(vec![b'x'; stdout].into()),
                ..Default::default()
            })),
            error_output: None,
        }
    }

    #[test]
    fn a_result_is_kept_for_its_owner_until_the_ttl() {
        let t0 = Instant::now();
        let mut d = Detached::new(Duration::from_secs(10), 1 << 20);
        d.submitted("t".into(), Some("alice".into()));
        assert_eq!(d.lookup(t0, "t", Some("alice")), Lookup::Pending);
        assert_eq!(d.lookup(t0, "t", Some("bob")), Lookup::Unknown);
        assert_eq!(d.lookup(t0, "t", None), Lookup::Unknown);
        d.finished(t0, "t", Ok(response(5)));
        assert_eq!(
            d.lookup(t0 + Duration::from_secs(9), "t", Some("alice")),
            Lookup::Done(Box::new(Ok(response(5))))
        );
        assert_eq!(
            d.lookup(t0 + Duration::from_secs(10), "t", Some("alice")),
            Lookup::Unknown
        );
        assert_eq!(d.kept(), (0, 0));
    }

    #[test]
    fn the_oldest_results_go_first_when_the_bytes_run_out() {
        let t0 = Instant::now();
        let size = prost::Message::encoded_len(&response(100));
        let mut d = Detached::new(Duration::from_secs(60), 2 * size + size / 2);
        for id in ["a", "b", "c"] {
            d.submitted(id.into(), None);
            d.finished(t0, id, Ok(response(100)));
        }
        assert_eq!(d.lookup(t0, "a", None), Lookup::Unknown);
        assert!(matches!(d.lookup(t0, "b", None), Lookup::Done(r) if r.is_ok()));
        assert!(matches!(d.lookup(t0, "c", None), Lookup::Done(r) if r.is_ok()));
        assert_eq!(d.kept(), (2, 2 * size));
        // A result larger than the whole budget is an error, not an eviction of everything.
        d.submitted("huge".into(), None);
        d.finished(t0, "huge", Ok(response(10 * size)));
        assert!(matches!(
            d.lookup(t0, "huge", None),
            Lookup::Done(r) if matches!(*r, Err(TaskError::ResultTooLarge(_)))
        ));
        assert_eq!(d.kept(), (3, 2 * size));
    }

    #[test]
    fn a_second_result_for_the_same_task_is_ignored() {
        let t0 = Instant::now();
        let mut d = Detached::new(Duration::from_secs(60), 1 << 20);
        d.submitted("t".into(), None);
        d.finished(t0, "t", Err(TaskError::Cancelled("by the client".into())));
        d.finished(t0, "t", Ok(response(1)));
        assert_eq!(
            d.lookup(t0, "t", None),
            Lookup::Done(Box::new(Err(TaskError::Cancelled("by the client".into()))))
        );
        // Unknown ids are ignored too.
        d.finished(t0, "nobody", Ok(response(1)));
        assert_eq!(d.kept(), (1, 0));
    }
}

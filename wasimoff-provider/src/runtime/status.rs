//! [`ProviderStatus`]: what a provider is doing, published through a `tokio::sync::watch`
//! channel so that UIs (the browser page, logs) can follow it.
//!
//! The same value is the provider's single source of truth for its slots: taking a slot for a
//! task is a compare-and-increment of `busy` under the watch's lock ([`Slots::try_acquire`]),
//! releasing it happens when the [`SlotGuard`] drops, so the count can never leak. Every change
//! of the advertised `(concurrency, busy)` pair wakes the connection, which reports it to the
//! broker as `Event.ProviderResources`: a new concurrency at once, a new busy count alone after
//! a short delay (coalescing the starts and ends of tasks in between).

use std::sync::Arc;

use tokio::sync::watch;

/// The state of the connection to the broker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// [`Provider::run`](super::Provider::run) has not been called yet.
    #[default]
    Idle,
    /// Dialling the broker.
    Connecting,
    /// Connected; tasks are accepted.
    Connected,
    /// The connection was lost or could not be made; a reconnect follows.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The provider has shut down.
    Stopped,
}

/// A snapshot of a provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderStatus {
    /// The connection.
    pub state: ConnectionState,
    /// Task slots the provider offers: the tasks it runs at once plus those it accepts to
    /// wait for a worker (prefetch).
    pub concurrency: usize,
    /// Tasks the executor runs at once; the rest of [`concurrency`](Self::concurrency) is
    /// prefetch (tasks accepted to wait for a worker).
    pub workers: usize,
    /// Tasks running now.
    pub busy: usize,
    /// The provider is shutting down and takes no new tasks.
    pub draining: bool,
    /// Tasks started since the provider was created.
    pub tasks_started: u64,
    /// Tasks finished (whatever the outcome) since the provider was created.
    pub tasks_finished: u64,
    /// Tasks that ended with an error result (a trap, a timeout, a bad file...); a guest that
    /// exits non-zero is not counted.
    pub tasks_failed: u64,
    /// Tasks refused because every slot was busy or the provider was draining.
    pub tasks_refused: u64,
    /// Successful connections since the provider was created.
    pub connections: u64,
    /// Files fetched from the broker and cached.
    pub files_fetched: u64,
    /// Providers connected to the broker, as it last announced (`Event.ClusterInfo`).
    pub cluster_providers: Option<u32>,
    /// Tasks per second the whole cluster finishes, as the broker last announced
    /// (`Event.Throughput`).
    pub cluster_throughput: Option<f32>,
}

/// A task starting or ending on this provider, for UIs and logs; see
/// [`Provider::task_events`](super::Provider::task_events).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum TaskEvent {
    /// A task took a slot and is about to run.
    Started {
        /// The task id.
        id: String,
        /// Its argv.
        args: Vec<String>,
    },
    /// A task ended; its result is on its way to the broker.
    Finished {
        /// The task id.
        id: String,
        /// The exit status, if the guest exited.
        status: Option<i32>,
        /// Why it failed, if it did not exit.
        error: Option<String>,
        /// From taking the slot to the result.
        elapsed: std::time::Duration,
    },
}

impl ProviderStatus {
    /// The `(concurrency, tasks)` pair reported in `Event.ProviderResources`: concurrency is 0
    /// while draining so the broker sends nothing more.
    pub fn advertised(&self) -> (usize, usize) {
        let concurrency = if self.draining { 0 } else { self.concurrency };
        (concurrency, self.busy)
    }
}

/// The slot counter and status channel shared by a provider's tasks.
#[derive(Clone, Debug)]
pub(crate) struct Slots {
    tx: Arc<watch::Sender<ProviderStatus>>,
}

/// Why [`Slots::try_acquire`] gave no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot is busy.
    Full(usize),
    /// The provider is shutting down.
    Draining,
}

impl Slots {
    pub(crate) fn new(concurrency: usize, workers: usize) -> Self {
        let status = ProviderStatus {
            concurrency,
            workers,
            ..ProviderStatus::default()
        };
        Slots {
            tx: Arc::new(watch::Sender::new(status)),
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<ProviderStatus> {
        self.tx.subscribe()
    }

    pub(crate) fn snapshot(&self) -> ProviderStatus {
        self.tx.borrow().clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut ProviderStatus)) {
        self.tx.send_modify(f);
    }

    /// Takes a slot unless all are busy or the provider drains.
    pub(crate) fn try_acquire(&self) -> Result<SlotGuard, Refusal> {
        let mut outcome = Err(Refusal::Draining);
        self.tx.send_modify(|s| {
            if s.draining {
                outcome = Err(Refusal::Draining);
                s.tasks_refused += 1;
            } else if s.busy >= s.concurrency {
                outcome = Err(Refusal::Full(s.concurrency));
                s.tasks_refused += 1;
            } else {
                s.busy += 1;
                s.tasks_started += 1;
                outcome = Ok(());
            }
        });
        outcome.map(|()| SlotGuard {
            slots: self.clone(),
        })
    }

    /// Waits until no task runs.
    pub(crate) async fn idle(&self) {
        let mut rx = self.tx.subscribe();
        // `wait_for` only fails when the sender is gone, and `self` holds it.
        let _ = rx.wait_for(|s| s.busy == 0).await;
    }
}

/// A taken slot; dropping it frees the slot and counts the task as finished.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    slots: Slots,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.update(|s| {
            s.busy = s.busy.saturating_sub(1);
            s.tasks_finished += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_released() {
        let slots = Slots::new(2, 2);
        let a = slots.try_acquire().unwrap();
        let _b = slots.try_acquire().unwrap();
        assert_eq!(slots.try_acquire().unwrap_err(), Refusal::Full(2));
        assert_eq!(slots.snapshot().advertised(), (2, 2));
        drop(a);
        let s = slots.snapshot();
        assert_eq!(
            (s.busy, s.tasks_started, s.tasks_finished, s.tasks_refused),
            (1, 2, 1, 1)
        );
        slots.update(|s| s.draining = true);
        assert_eq!(slots.try_acquire().unwrap_err(), Refusal::Draining);
        assert_eq!(slots.snapshot().advertised(), (0, 1));
    }
}

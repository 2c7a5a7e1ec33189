//! The [`Scheduler`] trait: pick a provider for a task, as a sans-IO state machine.
//!
//! The broker feeds a scheduler [`SchedulerEvent`]s (providers joining, leaving, reporting
//! their worker count and cached files, tasks finishing) and asks it to [`pick`](Scheduler::pick)
//! a provider for each task. A scheduler owns no sockets, clocks or tasks, so it is
//! deterministic and can be simulated with thousands of fake providers.
//!
//! Architecture Invariant: a successful `pick` reserves one slot on the provider; the broker
//! gives it back with [`SchedulerEvent::TaskFinished`] exactly once per pick.
//!
//! Implementations: [`RoundRobinScheduler`] (here). The broker adds a locality-aware default.

use std::collections::{HashMap, HashSet, VecDeque};

/// The broker's identifier for one provider connection (never reused while the broker runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProviderId(pub u64);

impl std::fmt::Display for ProviderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "provider-{}", self.0)
    }
}

/// Something the scheduler must know about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchedulerEvent {
    /// A provider connected and may run `slots` tasks at once (0 until it says otherwise).
    ProviderJoined {
        /// The provider.
        id: ProviderId,
        /// Its concurrency.
        slots: u32,
    },
    /// A provider changed its concurrency (`Event.ProviderResources`).
    ProviderResources {
        /// The provider.
        id: ProviderId,
        /// Its new concurrency.
        slots: u32,
    },
    /// A provider disconnected or was dropped; its reservations are void.
    ProviderLeft {
        /// The provider.
        id: ProviderId,
    },
    /// A provider cached files (refs).
    FilesAdded {
        /// The provider.
        id: ProviderId,
        /// The refs it added.
        refs: Vec<String>,
    },
    /// A provider evicted files.
    FilesRemoved {
        /// The provider.
        id: ProviderId,
        /// The refs it removed.
        refs: Vec<String>,
    },
    /// A task picked for this provider ended (whatever the outcome): its slot is free.
    TaskFinished {
        /// The provider.
        id: ProviderId,
    },
}

/// What a task needs from its provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement<'a> {
    /// The ref of the task's module, for locality-aware schedulers.
    pub binary: Option<&'a str>,
    /// A provider not to use (the one that just failed this task).
    pub exclude: Option<ProviderId>,
}

/// Picks providers for tasks; see the module docs.
///
/// ```
/// use wasimoff_core::scheduler::*;
///
/// let mut s = RoundRobinScheduler::default();
/// s.handle(SchedulerEvent::ProviderJoined { id: ProviderId(1), slots: 1 });
/// s.handle(SchedulerEvent::ProviderJoined { id: ProviderId(2), slots: 1 });
/// let first = s.pick(&Placement::default()).unwrap();
/// let second = s.pick(&Placement::default()).unwrap();
/// assert_ne!(first, second);
/// assert_eq!(s.pick(&Placement::default()), None, "all slots taken");
/// s.handle(SchedulerEvent::TaskFinished { id: first });
/// assert_eq!(s.pick(&Placement::default()), Some(first));
/// ```
pub trait Scheduler: Send {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;

    /// Updates the scheduler's view of the cluster.
    fn handle(&mut self, event: SchedulerEvent);

    /// Picks a provider with a free slot for the task and reserves the slot, or `None` if no
    /// suitable provider has one (the task waits).
    fn pick(&mut self, placement: &Placement<'_>) -> Option<ProviderId>;

    /// Free slots over all providers.
    fn free_slots(&self) -> u64;

    /// Connected providers.
    fn providers(&self) -> usize;
}

#[derive(Debug, Default)]
struct Slots {
    total: u32,
    busy: u32,
    queued: bool,
    files: HashSet<String>,
}

impl Slots {
    fn free(&self) -> bool {
        self.busy < self.total
    }

    fn free_count(&self) -> u64 {
        u64::from(self.total.saturating_sub(self.busy))
    }
}

/// Hands tasks to providers with free slots in turn.
///
/// Providers with a free slot wait in a ring; a pick takes the first usable one and puts it
/// back at the end if it still has room. Each pick is O(1) amortised, whatever the number of
/// providers; stale ring entries (providers that left or filled up) are dropped lazily.
#[derive(Debug, Default)]
pub struct RoundRobinScheduler {
    providers: HashMap<ProviderId, Slots>,
    ring: VecDeque<ProviderId>,
    free: u64,
}

impl RoundRobinScheduler {
    fn enqueue(&mut self, id: ProviderId) {
        if let Some(p) = self.providers.get_mut(&id) {
            if p.free() && !p.queued {
                p.queued = true;
                self.ring.push_back(id);
            }
        }
    }

    fn set_slots(&mut self, id: ProviderId, slots: u32) {
        let p = self.providers.entry(id).or_default();
        let before = p.free_count();
        p.total = slots;
        self.free = self.free - before + p.free_count();
        self.enqueue(id);
    }
}

impl Scheduler for RoundRobinScheduler {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn handle(&mut self, event: SchedulerEvent) {
        match event {
            SchedulerEvent::ProviderJoined { id, slots }
            | SchedulerEvent::ProviderResources { id, slots } => {
                self.set_slots(id, slots);
            }
            SchedulerEvent::ProviderLeft { id } => {
                if let Some(p) = self.providers.remove(&id) {
                    self.free -= p.free_count();
                }
            }
            SchedulerEvent::FilesAdded { id, refs } => {
                if let Some(p) = self.providers.get_mut(&id) {
                    p.files.extend(refs);
                }
            }
            SchedulerEvent::FilesRemoved { id, refs } => {
                if let Some(p) = self.providers.get_mut(&id) {
                    for r in &refs {
                        p.files.remove(r);
                    }
                }
            }
            SchedulerEvent::TaskFinished { id } => {
                if let Some(p) = self.providers.get_mut(&id) {
                    let before = p.free_count();
                    p.busy = p.busy.saturating_sub(1);
                    self.free = self.free - before + p.free_count();
                }
                self.enqueue(id);
            }
        }
    }

    fn pick(&mut self, placement: &Placement<'_>) -> Option<ProviderId> {
        let mut skipped = None;
        let mut result = None;
        for _ in 0..self.ring.len() {
            let id = self.ring.pop_front()?;
            let Some(p) = self.providers.get_mut(&id) else {
                continue;
            };
            p.queued = false;
            if !p.free() {
                continue;
            }
            if placement.exclude == Some(id) {
                skipped = Some(id);
                continue;
            }
            p.busy += 1;
            self.free -= 1;
            result = Some(id);
            break;
        }
        if let Some(id) = result {
            self.enqueue(id);
        }
        if let Some(id) = skipped {
            self.enqueue(id);
        }
        result
    }

    fn free_slots(&self) -> u64 {
        self.free
    }

    fn providers(&self) -> usize {
        self.providers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic simulation: thousands of providers joining, leaving, resizing and
    /// finishing tasks in a pseudo-random order, checking the scheduler's books after each step.
    #[test]
    fn simulation_keeps_books_straight() {
        let mut s = RoundRobinScheduler::default();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut model: HashMap<ProviderId, (u32, u32)> = HashMap::new(); // (slots, busy)
        let mut running: Vec<ProviderId> = Vec::new();
        let mut next_id = 0;
        for step in 0..50_000 {
            match next() % 10 {
                0 | 1 if model.len() < 3_000 => {
                    next_id += 1;
                    let slots = (next() % 4) as u32;
                    s.handle(SchedulerEvent::ProviderJoined {
                        id: ProviderId(next_id),
                        slots,
                    });
                    model.insert(ProviderId(next_id), (slots, 0));
                }
                2 if !model.is_empty() && step % 3 == 0 => {
                    let id = *model.keys().nth((next() as usize) % model.len()).unwrap();
                    s.handle(SchedulerEvent::ProviderLeft { id });
                    model.remove(&id);
                    running.retain(|r| *r != id);
                }
                3 if !model.is_empty() => {
                    let id = *model.keys().nth((next() as usize) % model.len()).unwrap();
                    let slots = (next() % 4) as u32;
                    s.handle(SchedulerEvent::ProviderResources { id, slots });
                    model.get_mut(&id).unwrap().0 = slots;
                }
                4 | 5 if !running.is_empty() => {
                    let id = running.swap_remove((next() as usize) % running.len());
                    s.handle(SchedulerEvent::TaskFinished { id });
                    let m = model.get_mut(&id).unwrap();
                    m.1 -= 1;
                }
                _ => {
                    let exclude = running.first().copied();
                    match s.pick(&Placement {
                        binary: None,
                        exclude,
                    }) {
                        Some(id) => {
                            assert_ne!(Some(id), exclude, "picked the excluded provider");
                            let m = model.get_mut(&id).expect("picked a provider that left");
                            assert!(m.1 < m.0, "picked a full provider");
                            m.1 += 1;
                            running.push(id);
                        }
                        None => {
                            let usable = model
                                .iter()
                                .filter(|(id, (slots, busy))| busy < slots && Some(**id) != exclude)
                                .count();
                            assert_eq!(usable, 0, "a free provider was overlooked");
                        }
                    }
                }
            }
            let free: u64 = model
                .values()
                .map(|(slots, busy)| u64::from(slots.saturating_sub(*busy)))
                .sum();
            assert_eq!(s.free_slots(), free, "free slot count at step {step}");
            assert_eq!(s.providers(), model.len());
        }
    }

    #[test]
    fn turns_rotate_between_providers() {
        let mut s = RoundRobinScheduler::default();
        for id in 1..=3 {
            s.handle(SchedulerEvent::ProviderJoined {
                id: ProviderId(id),
                slots: 10,
            });
        }
        let picks: Vec<u64> = (0..6)
            .map(|_| s.pick(&Placement::default()).unwrap().0)
            .collect();
        assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
    }
}

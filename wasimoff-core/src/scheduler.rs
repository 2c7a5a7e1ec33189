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
//! Implementations: [`LocalityScheduler`] (the default) and [`RoundRobinScheduler`].

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

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
    /// Providers not to use (the one that just failed this task, those that may still run
    /// an earlier attempt of it).
    pub exclude: &'a [ProviderId],
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

/// The slot books both schedulers keep: every provider's slots and a ring of providers that
/// have a free slot. Stale ring entries (providers that left or filled up) are dropped lazily,
/// so every operation is O(1) amortised, whatever the number of providers.
#[derive(Debug, Default)]
struct Book {
    providers: HashMap<ProviderId, Slots>,
    ring: VecDeque<ProviderId>,
    free: u64,
}

/// How an event changed a provider's ability to take tasks, for indexes kept on top.
enum Change {
    None,
    /// The provider went from full (or unknown) to having a free slot.
    BecameFree(ProviderId),
    /// The provider went from having a free slot to full (or gone).
    BecameFull(ProviderId),
}

impl Book {
    fn enqueue(&mut self, id: ProviderId) {
        if let Some(p) = self.providers.get_mut(&id)
            && p.free()
            && !p.queued
        {
            p.queued = true;
            self.ring.push_back(id);
        }
    }

    fn is_free(&self, id: ProviderId) -> bool {
        self.providers.get(&id).is_some_and(Slots::free)
    }

    /// Applies `f` to a provider and reports whether it became free or full.
    fn update(&mut self, id: ProviderId, f: impl FnOnce(&mut Slots)) -> Change {
        let Some(p) = self.providers.get_mut(&id) else {
            return Change::None;
        };
        let (was_free, before) = (p.free(), p.free_count());
        f(p);
        let (is_free, after) = (p.free(), p.free_count());
        self.free = self.free - before + after;
        self.enqueue(id);
        match (was_free, is_free) {
            (false, true) => Change::BecameFree(id),
            (true, false) => Change::BecameFull(id),
            _ => Change::None,
        }
    }

    fn handle(&mut self, event: SchedulerEvent) -> Change {
        match event {
            SchedulerEvent::ProviderJoined { id, slots }
            | SchedulerEvent::ProviderResources { id, slots } => {
                self.providers.entry(id).or_default();
                self.update(id, |p| p.total = slots)
            }
            SchedulerEvent::ProviderLeft { id } => match self.providers.remove(&id) {
                Some(p) => {
                    self.free -= p.free_count();
                    if p.free() {
                        Change::BecameFull(id)
                    } else {
                        Change::None
                    }
                }
                None => Change::None,
            },
            SchedulerEvent::FilesAdded { id, refs } => {
                if let Some(p) = self.providers.get_mut(&id) {
                    p.files.extend(refs);
                }
                Change::None
            }
            SchedulerEvent::FilesRemoved { id, refs } => {
                if let Some(p) = self.providers.get_mut(&id) {
                    for r in &refs {
                        p.files.remove(r);
                    }
                }
                Change::None
            }
            SchedulerEvent::TaskFinished { id } => {
                self.update(id, |p| p.busy = p.busy.saturating_sub(1))
            }
        }
    }

    /// Reserves a slot on a provider known to have one.
    fn reserve(&mut self, id: ProviderId) -> Change {
        self.update(id, |p| p.busy += 1)
    }

    /// The next provider in the ring with a free slot that is not excluded.
    fn next_free(&mut self, exclude: &[ProviderId]) -> Option<ProviderId> {
        let mut skipped = Vec::new();
        let mut found = None;
        for _ in 0..self.ring.len() {
            let Some(id) = self.ring.pop_front() else {
                break;
            };
            let Some(p) = self.providers.get_mut(&id) else {
                continue;
            };
            p.queued = false;
            if !p.free() {
                continue;
            }
            if exclude.contains(&id) {
                skipped.push(id);
                continue;
            }
            found = Some(id);
            break;
        }
        // Both go back to the end of the ring (found is re-queued by `reserve` if still free).
        for id in skipped {
            self.enqueue(id);
        }
        found
    }
}

/// Hands tasks to providers with free slots in turn; O(1) amortised per pick.
#[derive(Debug, Default)]
pub struct RoundRobinScheduler {
    book: Book,
}

impl Scheduler for RoundRobinScheduler {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn handle(&mut self, event: SchedulerEvent) {
        self.book.handle(event);
    }

    fn pick(&mut self, placement: &Placement<'_>) -> Option<ProviderId> {
        let id = self.book.next_free(placement.exclude)?;
        self.book.reserve(id);
        Some(id)
    }

    fn free_slots(&self) -> u64 {
        self.book.free
    }

    fn providers(&self) -> usize {
        self.book.providers.len()
    }
}

/// Prefers a free provider that already holds the task's module (no download, likely a warm
/// compile cache), else any free provider in turn, else none (the task waits).
///
/// An index from each file ref to the *free* providers holding it keeps a pick at O(log n):
/// it is updated when a provider fills up or frees a slot, in O(files held by that provider).
///
/// ```
/// use wasimoff_core::scheduler::*;
///
/// let mut s = LocalityScheduler::default();
/// for id in 1..=3 {
///     s.handle(SchedulerEvent::ProviderJoined { id: ProviderId(id), slots: 1 });
/// }
/// s.handle(SchedulerEvent::FilesAdded { id: ProviderId(3), refs: vec!["sha256:aa".into()] });
/// let wants_aa = Placement { binary: Some("sha256:aa"), exclude: &[] };
/// assert_eq!(s.pick(&wants_aa), Some(ProviderId(3)));
/// assert!(s.pick(&wants_aa).is_some(), "falls back to any free provider");
/// ```
#[derive(Debug, Default)]
pub struct LocalityScheduler {
    book: Book,
    free_with_file: HashMap<String, BTreeSet<ProviderId>>,
}

impl LocalityScheduler {
    fn index(&mut self, change: Change) {
        match change {
            Change::None => {}
            Change::BecameFree(id) => {
                if let Some(p) = self.book.providers.get(&id) {
                    for file in &p.files {
                        self.free_with_file
                            .entry(file.clone())
                            .or_default()
                            .insert(id);
                    }
                }
            }
            Change::BecameFull(id) => self.unindex(id),
        }
    }

    /// Removes a provider from every file's free set (files of a departed provider are gone
    /// from the book, so the sets are swept; departures are rare next to picks).
    fn unindex(&mut self, id: ProviderId) {
        match self.book.providers.get(&id) {
            Some(p) => {
                for file in &p.files {
                    if let Some(set) = self.free_with_file.get_mut(file) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.free_with_file.remove(file);
                        }
                    }
                }
            }
            None => self.free_with_file.retain(|_, set| {
                set.remove(&id);
                !set.is_empty()
            }),
        }
    }
}

impl Scheduler for LocalityScheduler {
    fn name(&self) -> &'static str {
        "locality"
    }

    fn handle(&mut self, event: SchedulerEvent) {
        match &event {
            SchedulerEvent::ProviderLeft { id } => {
                let id = *id;
                self.unindex(id);
                self.book.handle(event);
            }
            SchedulerEvent::FilesAdded { id, refs } => {
                if self.book.is_free(*id) {
                    for r in refs {
                        self.free_with_file
                            .entry(r.clone())
                            .or_default()
                            .insert(*id);
                    }
                }
                self.book.handle(event);
            }
            SchedulerEvent::FilesRemoved { id, refs } => {
                for r in refs {
                    if let Some(set) = self.free_with_file.get_mut(r) {
                        set.remove(id);
                        if set.is_empty() {
                            self.free_with_file.remove(r);
                        }
                    }
                }
                self.book.handle(event);
            }
            _ => {
                let change = self.book.handle(event);
                self.index(change);
            }
        }
    }

    fn pick(&mut self, placement: &Placement<'_>) -> Option<ProviderId> {
        let local = placement.binary.and_then(|file| {
            let set = self.free_with_file.get(file)?;
            set.iter()
                .copied()
                .find(|id| !placement.exclude.contains(id))
        });
        let id = match local {
            Some(id) => id,
            None => self.book.next_free(placement.exclude)?,
        };
        let change = self.book.reserve(id);
        self.index(change);
        Some(id)
    }

    fn free_slots(&self) -> u64 {
        self.book.free
    }

    fn providers(&self) -> usize {
        self.book.providers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulation_keeps_books_straight_round_robin() {
        simulate(&mut RoundRobinScheduler::default(), false);
    }

    #[test]
    fn simulation_keeps_books_straight_locality() {
        simulate(&mut LocalityScheduler::default(), true);
    }

    /// A deterministic simulation: thousands of providers joining, leaving, resizing, caching
    /// files and finishing tasks in a pseudo-random order, checking the books after each step.
    fn simulate(s: &mut dyn Scheduler, locality: bool) {
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut model: HashMap<ProviderId, (u32, u32)> = HashMap::new(); // (slots, busy)
        let mut files: HashMap<ProviderId, HashSet<String>> = HashMap::new();
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
                    files.remove(&id);
                    running.retain(|r| *r != id);
                }
                6 if !model.is_empty() => {
                    let id = *model.keys().nth((next() as usize) % model.len()).unwrap();
                    let file = format!("f{}", next() % 8);
                    let held = files.entry(id).or_default();
                    if held.remove(&file) {
                        s.handle(SchedulerEvent::FilesRemoved {
                            id,
                            refs: vec![file],
                        });
                    } else {
                        held.insert(file.clone());
                        s.handle(SchedulerEvent::FilesAdded {
                            id,
                            refs: vec![file],
                        });
                    }
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
                    let exclude: Vec<ProviderId> = running.iter().take(2).copied().collect();
                    let file = format!("f{}", next() % 8);
                    match s.pick(&Placement {
                        binary: Some(&file),
                        exclude: &exclude,
                    }) {
                        Some(id) => {
                            assert!(!exclude.contains(&id), "picked an excluded provider");
                            let holds =
                                |p: &ProviderId| files.get(p).is_some_and(|f| f.contains(&file));
                            if locality && !holds(&id) {
                                let local = model.iter().any(|(p, (slots, busy))| {
                                    busy < slots && !exclude.contains(p) && holds(p)
                                });
                                assert!(!local, "a free provider holding {file} was passed over");
                            }
                            let m = model.get_mut(&id).expect("picked a provider that left");
                            assert!(m.1 < m.0, "picked a full provider");
                            m.1 += 1;
                            running.push(id);
                        }
                        None => {
                            let usable = model
                                .iter()
                                .filter(|(id, (slots, busy))| busy < slots && !exclude.contains(id))
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

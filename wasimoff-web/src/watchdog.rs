//! [`Watchdog`]: many deadlines on one timer. The pool kills a worker whose task overran its
//! deadline; a `setTimeout` armed and cleared for every task cost the page's main thread about
//! 4 % of its time at full speed (its profile in the browser benchmark). Here one timer waits
//! for the earliest deadline and is re-armed only when it fires or an earlier deadline comes;
//! a deadline that is dropped (its task ended) is just forgotten.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use futures::FutureExt;
use futures::channel::oneshot;
use tokio::sync::Notify;
use wasimoff_core::platform::{self, Instant};

#[derive(Default)]
struct State {
    deadlines: RefCell<BTreeMap<(Instant, u64), oneshot::Sender<()>>>,
    next_id: Cell<u64>,
    /// A loop is waiting for the earliest deadline.
    running: Cell<bool>,
    /// A deadline earlier than the one the loop waits for was added.
    earlier: Notify,
}

/// Deadlines sharing one timer. Cheap to clone; clones share the deadlines.
#[derive(Clone, Default)]
pub(crate) struct Watchdog {
    state: Rc<State>,
}

/// A deadline of a [`Watchdog`]: `fired` resolves when it passes; dropping it forgets it.
pub(crate) struct Deadline {
    state: Rc<State>,
    key: (Instant, u64),
    /// Resolves when the deadline passes.
    pub(crate) fired: oneshot::Receiver<()>,
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.state.deadlines.borrow_mut().remove(&self.key);
    }
}

impl Watchdog {
    /// A deadline at `at`.
    pub(crate) fn at(&self, at: Instant) -> Deadline {
        let state = &self.state;
        let id = state.next_id.get();
        state.next_id.set(id + 1);
        let (tx, fired) = oneshot::channel();
        let key = (at, id);
        let earliest = {
            let mut deadlines = state.deadlines.borrow_mut();
            deadlines.insert(key, tx);
            deadlines.first_key_value().map(|(k, _)| *k) == Some(key)
        };
        if !state.running.get() {
            state.running.set(true);
            platform::spawn(run(state.clone()));
        } else if earliest {
            state.earlier.notify_one();
        }
        Deadline {
            state: state.clone(),
            key,
            fired,
        }
    }
}

/// Fires deadlines as they pass, until there are none left.
async fn run(state: Rc<State>) {
    loop {
        let now = Instant::now();
        let next = {
            let mut deadlines = state.deadlines.borrow_mut();
            while let Some(entry) = deadlines.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                let _ = entry.remove().send(());
            }
            deadlines.first_key_value().map(|(k, _)| k.0)
        };
        let Some(next) = next else {
            state.running.set(false);
            return;
        };
        futures::select! {
            () = platform::sleep(next.saturating_duration_since(now)).fuse() => {}
            () = state.earlier.notified().fuse() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    #[wasm_bindgen_test]
    async fn deadlines_fire_in_order_and_dropped_ones_never() {
        let dog = Watchdog::default();
        let now = Instant::now();
        let mut late = dog.at(now + Duration::from_millis(60));
        let dropped = dog.at(now + Duration::from_millis(5));
        let mut early = dog.at(now + Duration::from_millis(20));
        drop(dropped);
        assert_eq!(dog.state.deadlines.borrow().len(), 2);
        (&mut early.fired).await.unwrap();
        assert!(now.elapsed() >= Duration::from_millis(19));
        assert!(now.elapsed() < Duration::from_millis(60));
        (&mut late.fired).await.unwrap();
        assert!(now.elapsed() >= Duration::from_millis(59));
        // With nothing left, the loop ends; a new deadline starts it again.
        platform::sleep(Duration::from_millis(5)).await;
        assert!(!dog.state.running.get());
        let mut again = dog.at(Instant::now() + Duration::from_millis(1));
        (&mut again.fired).await.unwrap();
    }

    #[wasm_bindgen_test]
    async fn an_earlier_deadline_rearms_the_timer() {
        let dog = Watchdog::default();
        let now = Instant::now();
        let _far = dog.at(now + Duration::from_secs(3600));
        platform::sleep(Duration::from_millis(1)).await;
        let mut near = dog.at(now + Duration::from_millis(10));
        (&mut near.fired).await.unwrap();
        assert!(now.elapsed() < Duration::from_secs(60));
    }
}

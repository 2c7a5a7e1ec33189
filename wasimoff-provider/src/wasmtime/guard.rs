//! [`TaskGuard`]: when a task must stop (its wall-clock deadline, its cancellation token) and
//! the two ways that is enforced: [`TaskGuard::check`] from the epoch callback while the guest
//! computes, and [`TaskGuard::sleep_until`] / [`TaskGuard::bound`] while it waits inside a host
//! call. Both end the guest with the same [`Interrupt`], so a sleeping guest is reported exactly
//! like a spinning one.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::Instant;

use tokio::sync::watch;
use wasimoff_core::executor::CancellationToken;

/// Why a guest was stopped: the error its run ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Interrupt {
    #[error("the task ran past its deadline")]
    TimedOut,
    #[error("the task was cancelled")]
    Cancelled,
}

/// A task's deadline (`None`: none) and cancellation token, and the executor's count of guests
/// waiting in a host call, which the waits keep.
#[derive(Clone, Debug)]
pub(crate) struct TaskGuard {
    deadline: Option<Instant>,
    cancel: CancellationToken,
    waiting: Arc<watch::Sender<u64>>,
}

impl TaskGuard {
    pub(crate) fn new(
        deadline: Option<Instant>,
        cancel: CancellationToken,
        waiting: Arc<watch::Sender<u64>>,
    ) -> Self {
        TaskGuard {
            deadline,
            cancel,
            waiting,
        }
    }

    /// `Err` if the task must stop now (a cancel wins over a passed deadline).
    pub(crate) fn check(&self) -> Result<(), Interrupt> {
        if self.cancel.is_cancelled() {
            Err(Interrupt::Cancelled)
        } else if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            Err(Interrupt::TimedOut)
        } else {
            Ok(())
        }
    }

    /// Blocks this thread until `until` (`None`: until the task must stop). Returns early with
    /// the [`Interrupt`] when the deadline passes first or the token is cancelled: a cancel
    /// wakes the thread at once (the token holds a waker that unparks it), the deadline is a
    /// timed park, so both are as precise as `std::thread::sleep`.
    pub(crate) fn sleep_until(&self, until: Option<Instant>) -> Result<(), Interrupt> {
        let _waiting = Waiting::enter(&self.waiting);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut context = Context::from_waker(&waker);
        let mut cancelled = pin!(self.cancel.cancelled());
        loop {
            if cancelled.as_mut().poll(&mut context).is_ready() {
                return Err(Interrupt::Cancelled);
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|deadline| now >= deadline) {
                return Err(Interrupt::TimedOut);
            }
            let wake = match (until, self.deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match wake {
                // Only `until` can have passed here: the deadline was checked above.
                Some(wake) if now >= wake => return Ok(()),
                Some(wake) => std::thread::park_timeout(wake - now),
                None => std::thread::park(),
            }
            // Woken by the token, by the timeout, or spuriously: look again.
        }
    }

    /// Runs `future` until it is done, or until the task must stop, whichever comes first; the
    /// future is dropped then. A future that is ready at once is not timed (needs the tokio
    /// runtime's timer otherwise); a task that must stop is then stopped by the epoch callback.
    pub(crate) async fn bound<F: Future>(&self, future: F) -> Result<F::Output, Interrupt> {
        let _waiting = Waiting::enter(&self.waiting);
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            output = future => Ok(output),
            () = self.cancel.cancelled() => Err(Interrupt::Cancelled),
            () = deadline => Err(Interrupt::TimedOut),
        }
    }
}

/// Counts a guest as waiting while it lives.
struct Waiting<'a>(&'a watch::Sender<u64>);

impl<'a> Waiting<'a> {
    fn enter(count: &'a watch::Sender<u64>) -> Self {
        count.send_modify(|n| *n += 1);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A waker that unparks the thread it was made on.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;
    use std::time::Duration;

    use super::*;

    /// The output of a future that is ready on its first poll.
    fn poll_once<F: Future>(future: F) -> Option<F::Output> {
        let mut context = Context::from_waker(Waker::noop());
        match pin!(future).poll(&mut context) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    fn make(deadline: Option<Instant>, cancel: CancellationToken) -> TaskGuard {
        TaskGuard::new(deadline, cancel, Arc::new(watch::Sender::new(0)))
    }

    fn far() -> Option<Instant> {
        Instant::now().checked_add(Duration::from_secs(3600))
    }

    #[test]
    fn check_prefers_cancel_over_deadline() {
        let token = CancellationToken::new();
        let past = Some(Instant::now());
        assert_eq!(make(far(), token.clone()).check(), Ok(()));
        assert_eq!(make(past, token.clone()).check(), Err(Interrupt::TimedOut));
        token.cancel();
        assert_eq!(make(past, token).check(), Err(Interrupt::Cancelled));
    }

    #[test]
    fn sleep_ends_at_until_or_deadline() {
        let guard = make(far(), CancellationToken::new());
        let until = Instant::now() + Duration::from_millis(20);
        assert_eq!(guard.sleep_until(Some(until)), Ok(()));
        assert!(Instant::now() >= until);

        let deadline = Instant::now() + Duration::from_millis(20);
        let guard = make(Some(deadline), CancellationToken::new());
        assert_eq!(guard.sleep_until(far()), Err(Interrupt::TimedOut));
        assert_eq!(guard.sleep_until(None), Err(Interrupt::TimedOut));
        assert!(Instant::now() >= deadline);
    }

    /// A cancel from another thread wakes a thread sleeping without any deadline, and the
    /// waiting count says when it sleeps and when it is done.
    #[test]
    fn cancel_wakes_a_sleeper() {
        let token = CancellationToken::new();
        let waiting = Arc::new(watch::Sender::new(0));
        let guard = TaskGuard::new(None, token.clone(), waiting.clone());
        let sleeper = std::thread::spawn(move || guard.sleep_until(None));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut count = waiting.subscribe();
        runtime.block_on(count.wait_for(|n| *n == 1)).unwrap();
        token.cancel();
        assert_eq!(sleeper.join().unwrap(), Err(Interrupt::Cancelled));
        assert_eq!(*waiting.borrow(), 0);
    }

    #[test]
    fn bound_drops_the_future_when_stopped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(20);
        let guard = make(Some(deadline), CancellationToken::new());
        let pending = std::future::pending::<()>();
        assert_eq!(
            runtime.block_on(guard.bound(pending)),
            Err(Interrupt::TimedOut)
        );
        let token = CancellationToken::new();
        token.cancel();
        let guard = make(far(), token);
        assert_eq!(
            runtime.block_on(guard.bound(std::future::pending::<()>())),
            Err(Interrupt::Cancelled)
        );
        // Ready at once: no timer (no runtime) needed, and it wins over a cancel.
        let token = CancellationToken::new();
        token.cancel();
        let guard = make(far(), token);
        assert_eq!(poll_once(guard.bound(async { 7 })), Some(Ok(7)));
    }
}

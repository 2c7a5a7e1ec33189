//! The few things that differ between native targets and `wasm32-unknown-unknown`: spawning,
//! sleeping, the clock and `Send` bounds. Everything else in the crate is target-independent;
//! core code never calls `tokio::spawn` or `std::time::Instant::now` directly (the latter panics
//! in browsers).

use std::{future::Future, pin::Pin, time::Duration};

pub use web_time::{Instant, SystemTime, UNIX_EPOCH};

/// `Send` on native targets, nothing on wasm32 where JS values are not `Send`.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSend: Send {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Send + ?Sized> MaybeSend for T {}

/// `Send` on native targets, nothing on wasm32 where JS values are not `Send`.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSend {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSend for T {}

/// `Sync` on native targets, nothing on wasm32.
#[cfg(not(target_arch = "wasm32"))]
pub trait MaybeSync: Sync {}
#[cfg(not(target_arch = "wasm32"))]
impl<T: Sync + ?Sized> MaybeSync for T {}

/// `Sync` on native targets, nothing on wasm32.
#[cfg(target_arch = "wasm32")]
pub trait MaybeSync {}
#[cfg(target_arch = "wasm32")]
impl<T: ?Sized> MaybeSync for T {}

/// A boxed future that is `Send` where the target allows it.
#[cfg(not(target_arch = "wasm32"))]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed future that is `Send` where the target allows it.
#[cfg(target_arch = "wasm32")]
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Runs a future in the background on the current runtime (tokio natively, the browser's
/// microtask queue on wasm32). Natively this must be called from within a tokio runtime.
pub fn spawn<F>(future: F)
where
    F: Future<Output = ()> + MaybeSend + 'static,
{
    #[cfg(not(target_arch = "wasm32"))]
    drop(tokio::spawn(future));
    #[cfg(target_arch = "wasm32")]
    wasm_bindgen_futures::spawn_local(future);
}

/// Runs CPU-heavy work (hashing a large blob) where it does not stall the async workers:
/// natively on tokio's blocking pool when called inside a runtime, else (and in browsers)
/// right here.
pub async fn blocking<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    #[cfg(not(target_arch = "wasm32"))]
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        return match runtime.spawn_blocking(work).await {
            Ok(value) => value,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
    }
    work()
}

/// Ctrl-C (SIGINT) and SIGTERM (what docker, systemd and Kubernetes send to stop a service):
/// the signals the native binaries shut down gracefully on.
///
/// The handlers are installed by [`StopSignal::install`], not when [`StopSignal::recv`] is
/// first polled: install before announcing readiness, or a signal sent right after the
/// announcement still kills the process at once (the default action) instead of stopping it
/// gracefully.
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
#[derive(Debug)]
pub struct StopSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
impl StopSignal {
    /// Installs the handlers; from now on SIGINT and SIGTERM no longer end the process.
    /// Must be called within a tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next SIGINT or SIGTERM (signals that arrived since [`install`] or the
    /// last call count).
    ///
    /// [`install`]: StopSignal::install
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Waits for `duration` (tokio's timer natively, so `tokio::time::pause` works in tests).
pub async fn sleep(duration: Duration) {
    #[cfg(not(target_arch = "wasm32"))]
    tokio::time::sleep(duration).await;
    #[cfg(target_arch = "wasm32")]
    gloo_timers::future::sleep(duration).await;
}

/// The error of [`timeout`]: the time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Elapsed(pub Duration);

/// Runs `future` for at most `duration`.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        tokio::time::timeout(duration, future)
            .await
            .map_err(|_| Elapsed(duration))
    }
    #[cfg(target_arch = "wasm32")]
    {
        use futures::future::{Either, select};
        let sleep = std::pin::pin!(sleep(duration));
        let future = std::pin::pin!(future);
        match select(future, sleep).await {
            Either::Left((out, _)) => Ok(out),
            Either::Right(((), _)) => Err(Elapsed(duration)),
        }
    }
}

/// Wall-clock time as Unix nanoseconds, for trace events.
pub fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

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

/// Waits for Ctrl-C, or SIGTERM (what docker, systemd and Kubernetes send to stop a service):
/// the signal the native binaries shut down gracefully on.
#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
pub async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            signal = tokio::signal::ctrl_c() => signal,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await
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

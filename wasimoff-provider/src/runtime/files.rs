//! [`Files`]: turns a task's `File{ref, blob}` into bytes the executor can run.
//!
//! An inline `blob` is used as is (checked against `ref` when that is a `sha256:` ref). A bare
//! ref or alias is looked up in the provider's [`Store`]; on a miss a `sha256:` ref is fetched
//! from the broker through the [`Fetcher`], its hash is checked against the ref (a mismatch is
//! refused and nothing is cached), and it is stored so that the caller can announce it with
//! `Event.FileSystemUpdate{added}` (one of the tasks that waited for it does).
//!
//! Concurrent tasks needing the same missing file fetch it once: the fetch is one shared future
//! in an in-flight map, which every task waiting for that ref polls. A task may stop waiting at
//! any time (it was cancelled: its resolve future is dropped) without harm to the others: the
//! fetch goes on as long as one task still waits, and the last one to leave removes the entry
//! (dropping an unfinished fetch nobody needs any more), so no entry outlives its waiters.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use futures::future::{FutureExt, Shared};
use wasimoff_core::{
    executor::ResolvedFile,
    platform::BoxFuture,
    proto,
    store::{Ref, Store, StoreError},
};

use super::fetch::{FetchError, Fetcher};

/// Why a task's file could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file has neither a ref nor a blob.
    #[error("{0} has neither ref nor blob")]
    Empty(&'static str),
    /// An inline blob does not hash to the ref sent with it.
    #[error("{what} blob does not match its ref {expected} (it hashes to {actual})")]
    BlobMismatch {
        /// Which file (binary, rootfs).
        what: &'static str,
        /// The ref sent.
        expected: String,
        /// The blob's real ref.
        actual: String,
    },
    /// A fetched file does not hash to the ref it was fetched for: refused, not cached.
    #[error("file fetched for {expected} hashes to {actual}: refused")]
    Tampered {
        /// The ref requested.
        expected: String,
        /// The received bytes' ref.
        actual: String,
    },
    /// The name is not cached and is no `sha256:` ref, so a fetched copy could not be checked.
    #[error("{0} is not cached and is no sha256: ref")]
    NotARef(String),
    /// The fetch failed.
    #[error("cannot fetch {name}: {source}")]
    Fetch {
        /// The ref.
        name: String,
        /// Why.
        source: FetchError,
    },
    /// The local store failed.
    #[error("file cache failed: {0}")]
    Store(#[from] StoreError),
}

/// A resolved file, and whether it had to be fetched (and was cached) for this task.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) file: ResolvedFile,
    pub(crate) fetched: Option<Ref>,
}

/// What a shared fetch ends with: the file, and whether it was fetched and cached (`false`:
/// the store had it after all).
#[derive(Clone, Debug)]
struct Fetched {
    file: ResolvedFile,
    cached: bool,
}

type SharedFetch = Shared<BoxFuture<'static, Result<Fetched, FileError>>>;

/// A fetch in flight: its shared future, and whether one of its waiters has announced the file.
struct Inflight {
    fetch: SharedFetch,
    announced: Arc<AtomicBool>,
}

/// The provider's file cache with its fetcher.
pub(crate) struct Files {
    store: Arc<dyn Store>,
    fetcher: Arc<dyn Fetcher>,
    inflight: Mutex<HashMap<Ref, Inflight>>,
}

impl std::fmt::Debug for Files {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Files").finish_non_exhaustive()
    }
}

impl Files {
    pub(crate) fn new(store: Arc<dyn Store>, fetcher: Arc<dyn Fetcher>) -> Self {
        Files {
            store,
            fetcher,
            inflight: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// Resolves one of a task's files; `what` names it in errors.
    pub(crate) async fn resolve(
        &self,
        file: &proto::File,
        what: &'static str,
    ) -> Result<Resolved, FileError> {
        let name = file.r#ref.as_deref().filter(|r| !r.is_empty());
        if let Some(blob) = &file.blob {
            let resolved = ResolvedFile::from_bytes(blob.clone());
            if let Some(expected) = name.filter(|n| Ref::is_ref_like(n))
                && resolved.r#ref.as_str() != expected
            {
                return Err(FileError::BlobMismatch {
                    what,
                    expected: expected.to_owned(),
                    actual: resolved.r#ref.to_string(),
                });
            }
            return Ok(Resolved {
                file: resolved,
                fetched: None,
            });
        }
        let name = name.ok_or(FileError::Empty(what))?;
        if let Some(blob) = self.store.get(name).await? {
            return Ok(cached(blob.r#ref, blob.bytes));
        }
        let r: Ref = name
            .parse()
            .map_err(|_| FileError::NotARef(name.to_owned()))?;
        self.fetch_once(r).await
    }

    /// Fetches a missing ref, once for all concurrent callers.
    async fn fetch_once(&self, r: Ref) -> Result<Resolved, FileError> {
        let (fetch, announced) = {
            let mut inflight = self.lock_inflight();
            let entry = inflight.entry(r.clone()).or_insert_with(|| {
                // `Send` natively only (the platform's `BoxFuture`).
                let fetch: BoxFuture<'static, _> = Box::pin(fetch_verified(
                    self.store.clone(),
                    self.fetcher.clone(),
                    r.clone(),
                ));
                Inflight {
                    fetch: fetch.shared(),
                    announced: Arc::default(),
                }
            });
            (entry.fetch.clone(), entry.announced.clone())
        };
        let mut waiter = Waiter {
            files: self,
            r,
            fetch: Some(fetch),
        };
        let fetched = waiter
            .fetch
            .as_mut()
            .expect("only the waiter's drop takes its fetch")
            .await?;
        // The first waiter to see the file cached announces it.
        let fetched_ref =
            (fetched.cached && !announced.swap(true, Ordering::Relaxed)).then(|| waiter.r.clone());
        Ok(Resolved {
            file: fetched.file,
            fetched: fetched_ref,
        })
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Ref, Inflight>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A task waiting for an in-flight fetch. When it leaves (done, failed or cancelled), the entry
/// goes if the fetch is over or nobody else waits for it.
struct Waiter<'a> {
    files: &'a Files,
    r: Ref,
    fetch: Option<SharedFetch>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut inflight = self.files.lock_inflight();
        // Dropped under the lock, so that of several waiters leaving at once the last one sees
        // that it was the last.
        drop(self.fetch.take());
        let over = inflight.get(&self.r).is_some_and(|entry| {
            entry.fetch.peek().is_some() || entry.fetch.strong_count() == Some(1)
        });
        if over {
            inflight.remove(&self.r);
        }
    }
}

/// Fetches `r` unless the store has it by now, checks it against the ref and caches it.
async fn fetch_verified(
    store: Arc<dyn Store>,
    fetcher: Arc<dyn Fetcher>,
    r: Ref,
) -> Result<Fetched, FileError> {
    // Another task may have fetched it since this one looked.
    if let Some(blob) = store.get(r.as_str()).await? {
        return Ok(Fetched {
            file: ResolvedFile {
                r#ref: blob.r#ref,
                bytes: blob.bytes,
            },
            cached: false,
        });
    }
    let bytes = fetcher
        .fetch(r.as_str())
        .await
        .map_err(|source| FileError::Fetch {
            name: r.to_string(),
            source,
        })?;
    let actual = Ref::of(&bytes);
    if actual != r {
        return Err(FileError::Tampered {
            expected: r.to_string(),
            actual: actual.to_string(),
        });
    }
    // A full cache is no reason to fail the task: run it from the fetched bytes.
    let cached = match store.put(bytes.clone()).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(file = %r, "cannot cache fetched file: {e}");
            false
        }
    };
    Ok(Fetched {
        file: ResolvedFile {
            r#ref: actual,
            bytes,
        },
        cached,
    })
}

fn cached(r: Ref, bytes: Bytes) -> Resolved {
    Resolved {
        file: ResolvedFile { r#ref: r, bytes },
        fetched: None,
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::poll;
    use tokio::sync::Semaphore;
    use wasimoff_core::store::MemoryStore;

    use super::*;

    /// Serves one file, but each fetch first waits for a permit of `gate`; counts the fetches
    /// started and those dropped before they ended.
    struct GatedFetcher {
        bytes: Bytes,
        gate: Semaphore,
        fetches: AtomicUsize,
        abandoned: Arc<AtomicUsize>,
    }

    /// Counts a fetch as abandoned unless it is disarmed.
    struct Abandoned(Option<Arc<AtomicUsize>>);

    impl Drop for Abandoned {
        fn drop(&mut self) {
            if let Some(count) = self.0.take() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[async_trait::async_trait]
    impl Fetcher for GatedFetcher {
        async fn fetch(&self, _name: &str) -> Result<Bytes, FetchError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let mut abandoned = Abandoned(Some(self.abandoned.clone()));
            let _permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| FetchError::Http(e.to_string()))?;
            abandoned.0 = None;
            Ok(self.bytes.clone())
        }
    }

    fn setup() -> (Files, Arc<GatedFetcher>, proto::File, Ref) {
        let bytes = Bytes::from_static(b"\0asm shared by several tasks");
        let r = Ref::of(&bytes);
        let fetcher = Arc::new(GatedFetcher {
            bytes,
            gate: Semaphore::new(0),
            fetches: AtomicUsize::new(0),
            abandoned: Arc::default(),
        });
        let files = Files::new(Arc::new(MemoryStore::default()), fetcher.clone());
        let file = proto::File {
            r#ref: Some(r.to_string()),
            ..proto::File::default()
        };
        (files, fetcher, file, r)
    }

    /// Holders of the in-flight fetch of `r`: the map's own and one per waiting task.
    fn holders(files: &Files, r: &Ref) -> Option<usize> {
        files
            .lock_inflight()
            .get(r)
            .and_then(|entry| entry.fetch.strong_count())
    }

    #[tokio::test]
    async fn a_task_that_stops_waiting_leaves_the_fetch_to_the_others() {
        let (files, fetcher, file, r) = setup();
        let mut first = Box::pin(files.resolve(&file, "binary"));
        let mut second = Box::pin(files.resolve(&file, "binary"));
        assert!(
            poll!(first.as_mut()).is_pending(),
            "the first starts the fetch"
        );
        assert!(poll!(second.as_mut()).is_pending(), "the second joins it");
        assert_eq!(holders(&files, &r), Some(3));

        drop(first); // cancelled
        assert_eq!(holders(&files, &r), Some(2));
        fetcher.gate.add_permits(1);
        let resolved = second.await.unwrap();
        assert_eq!(resolved.file.bytes, fetcher.bytes);
        assert_eq!(resolved.fetched, Some(r.clone()), "it announces the file");
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(fetcher.abandoned.load(Ordering::SeqCst), 0);
        assert!(files.lock_inflight().is_empty());

        // Later tasks find it in the store.
        let cached = files.resolve(&file, "binary").await.unwrap();
        assert_eq!(cached.fetched, None);
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_last_task_to_stop_waiting_drops_the_fetch() {
        let (files, fetcher, file, r) = setup();
        let mut first = Box::pin(files.resolve(&file, "binary"));
        let mut second = Box::pin(files.resolve(&file, "rootfs"));
        assert!(poll!(first.as_mut()).is_pending());
        assert!(poll!(second.as_mut()).is_pending());
        drop(second);
        assert_eq!(
            fetcher.abandoned.load(Ordering::SeqCst),
            0,
            "one still waits"
        );
        drop(first);
        assert_eq!(fetcher.abandoned.load(Ordering::SeqCst), 1);
        assert!(
            files.lock_inflight().is_empty(),
            "no entry outlives its waiters"
        );
        assert_eq!(holders(&files, &r), None);

        // The next task starts a fetch of its own, and gets the file.
        fetcher.gate.add_permits(1);
        let resolved = files.resolve(&file, "binary").await.unwrap();
        assert_eq!(resolved.fetched, Some(r));
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 2);
        assert!(files.lock_inflight().is_empty());
    }

    #[tokio::test]
    async fn every_waiter_gets_a_failed_fetch_and_the_entry_goes() {
        let (files, fetcher, file, _) = setup();
        let mut first = Box::pin(files.resolve(&file, "binary"));
        let mut second = Box::pin(files.resolve(&file, "binary"));
        assert!(poll!(first.as_mut()).is_pending());
        assert!(poll!(second.as_mut()).is_pending());
        fetcher.gate.close();
        for resolve in [first, second] {
            assert!(matches!(resolve.await, Err(FileError::Fetch { .. })));
        }
        assert!(files.lock_inflight().is_empty());
        assert_eq!(fetcher.fetches.load(Ordering::SeqCst), 1);
    }
}

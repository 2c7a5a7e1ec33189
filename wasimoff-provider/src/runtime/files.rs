//! [`Files`]: turns a task's `File{ref, blob}` into bytes the executor can run.
//!
//! An inline `blob` is used as is (checked against `ref` when that is a `sha256:` ref). A bare
//! ref or alias is looked up in the provider's [`Store`]; on a miss a `sha256:` ref is fetched
//! from the broker through the [`Fetcher`], its hash is checked against the ref (a mismatch is
//! refused and nothing is cached), and it is stored so that the caller can announce it with
//! `Event.FileSystemUpdate{added}`. Concurrent tasks needing the same missing file fetch it once:
//! each ref has a lock, the first holder fetches, the others find it in the store afterwards.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tokio::sync::Mutex as AsyncMutex;
use wasimoff_core::{
    executor::ResolvedFile,
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

/// The provider's file cache with its fetcher.
pub(crate) struct Files {
    store: Arc<dyn Store>,
    fetcher: Arc<dyn Fetcher>,
    inflight: Mutex<HashMap<Ref, Arc<AsyncMutex<()>>>>,
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
        let lock = self.lock_inflight().entry(r.clone()).or_default().clone();
        let result = {
            let _guard = lock.lock().await;
            match self.store.get(r.as_str()).await {
                Ok(Some(blob)) => Ok(cached(blob.r#ref, blob.bytes)),
                Ok(None) => self.fetch_verified(&r).await,
                Err(e) => Err(e.into()),
            }
        };
        drop(lock);
        let mut inflight = self.lock_inflight();
        if inflight.get(&r).is_some_and(|l| Arc::strong_count(l) == 1) {
            inflight.remove(&r);
        }
        result
    }

    async fn fetch_verified(&self, r: &Ref) -> Result<Resolved, FileError> {
        let bytes = self
            .fetcher
            .fetch(r.as_str())
            .await
            .map_err(|source| FileError::Fetch {
                name: r.to_string(),
                source,
            })?;
        let actual = Ref::of(&bytes);
        if actual != *r {
            return Err(FileError::Tampered {
                expected: r.to_string(),
                actual: actual.to_string(),
            });
        }
        // A full cache is no reason to fail the task: run it from the fetched bytes.
        let fetched = match self.store.put(bytes.clone()).await {
            Ok(_) => Some(r.clone()),
            Err(e) => {
                tracing::warn!(file = %r, "cannot cache fetched file: {e}");
                None
            }
        };
        Ok(Resolved {
            file: ResolvedFile {
                r#ref: actual,
                bytes,
            },
            fetched,
        })
    }

    fn lock_inflight(&self) -> std::sync::MutexGuard<'_, HashMap<Ref, Arc<AsyncMutex<()>>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn cached(r: Ref, bytes: Bytes) -> Resolved {
    Resolved {
        file: ResolvedFile { r#ref: r, bytes },
        fetched: None,
    }
}

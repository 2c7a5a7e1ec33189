//! [`DirStore`]: a persistent [`Store`] in a directory (feature `native`).
//!
//! Layout: `blobs/<64 hex>` holds each blob, `aliases/<name>` holds the ref an alias points at.
//! Every write goes to a temporary file in `tmp/` first and is renamed into place, so a crash
//! never leaves a half-written blob or alias behind and readers never see one; leftovers in
//! `tmp/` are removed on open. The media type is sniffed from the bytes on read, so nothing else
//! needs to be stored. Byte totals are rebuilt by scanning `blobs/` on open.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;

use super::{Blob, Ref, Store, StoreError, StoreLimits, media, validate_alias};

/// Blobs and aliases in a directory; they survive restarts.
#[derive(Debug, Clone)]
pub struct DirStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    limits: StoreLimits,
    total: AtomicU64,
    /// Serialises the check-then-write of size accounting and alias counting.
    write_lock: Mutex<()>,
    tmp_counter: AtomicU64,
    /// A random number naming this instance's temporary files.
    instance: u64,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl DirStore {
    /// Opens (creating if needed) a store in `root`.
    pub fn open(root: impl Into<PathBuf>, limits: StoreLimits) -> Result<DirStore, StoreError> {
        let root = root.into();
        for sub in ["blobs", "aliases", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).map_err(backend)?;
        }
        for entry in std::fs::read_dir(root.join("tmp")).map_err(backend)? {
            let _ = std::fs::remove_file(entry.map_err(backend)?.path());
        }
        let mut total = 0;
        for entry in std::fs::read_dir(root.join("blobs")).map_err(backend)? {
            total += entry.map_err(backend)?.metadata().map_err(backend)?.len();
        }
        Ok(DirStore {
            inner: Arc::new(Inner {
                root,
                limits,
                total: AtomicU64::new(total),
                write_lock: Mutex::new(()),
                tmp_counter: AtomicU64::new(0),
                instance: {
                    use std::hash::{BuildHasher, Hasher};
                    // RandomState is seeded from the OS: a random number without another crate.
                    std::collections::hash_map::RandomState::new()
                        .build_hasher()
                        .finish()
                },
            }),
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(backend)?
    }
}

impl Inner {
    fn blob_path(&self, r: &Ref) -> PathBuf {
        self.root
            .join("blobs")
            .join(&r.as_str()[Ref::PREFIX.len()..])
    }

    fn alias_path(&self, alias: &str) -> PathBuf {
        self.root.join("aliases").join(alias)
    }

    /// Writes `bytes` to `dest` atomically (temp file, fsync, rename).
    fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        // Random per store instance, so two instances on one directory never share a name.
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:016x}-{n}", self.instance));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, dest)?;
            // The rename itself is durable only once the directory is synced.
            if let Some(dir) = dest.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok::<(), std::io::Error>(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(backend)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is on disk; a panic elsewhere cannot leave it inconsistent.
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn resolve(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        let r = if Ref::is_ref_like(name) {
            match name.parse::<Ref>() {
                Ok(r) => r,
                Err(_) => return Ok(None),
            }
        } else {
            if validate_alias(name).is_err() {
                return Ok(None);
            }
            match std::fs::read_to_string(self.alias_path(name)) {
                Ok(text) => match text.trim().parse::<Ref>() {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(backend(e)),
            }
        };
        Ok(self.blob_path(&r).is_file().then_some(r))
    }
}

#[async_trait::async_trait]
impl Store for DirStore {
    async fn put(&self, bytes: Bytes) -> Result<Ref, StoreError> {
        let size = bytes.len() as u64;
        let limit = self.inner.limits.max_blob_size;
        if size > limit {
            return Err(StoreError::TooLarge { size, limit });
        }
        self.blocking(move |inner| {
            let r = Ref::of(&bytes);
            let path = inner.blob_path(&r);
            let _guard = inner.lock();
            if path.is_file() {
                return Ok(r);
            }
            let total = inner.total.load(Ordering::Relaxed);
            if let Some(max) = inner.limits.max_total_size
                && total + size > max
            {
                return Err(StoreError::Full(format!(
                    "{total} of {max} bytes used, {size} more do not fit"
                )));
            }
            inner.write_atomically(&path, &bytes)?;
            inner.total.fetch_add(size, Ordering::Relaxed);
            Ok(r)
        })
        .await
    }

    async fn get(&self, name: &str) -> Result<Option<Blob>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            let Some(r) = inner.resolve(&name)? else {
                return Ok(None);
            };
            match std::fs::read(inner.blob_path(&r)) {
                Ok(bytes) => Ok(Some(Blob {
                    media: media::sniff(&bytes).to_owned(),
                    r#ref: r,
                    bytes: bytes.into(),
                })),
                // Deleted between resolve and read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn resolve(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| inner.resolve(&name)).await
    }

    async fn set_alias(&self, alias: &str, target: &Ref) -> Result<(), StoreError> {
        validate_alias(alias)?;
        let (alias, target) = (alias.to_owned(), target.clone());
        self.blocking(move |inner| {
            let _guard = inner.lock();
            if !inner.blob_path(&target).is_file() {
                return Err(StoreError::NotFound(target.to_string()));
            }
            let path = inner.alias_path(&alias);
            if !path.exists() {
                let count = std::fs::read_dir(inner.root.join("aliases"))
                    .map_err(backend)?
                    .count();
                if count >= inner.limits.max_aliases {
                    return Err(StoreError::Full(format!(
                        "{} aliases",
                        inner.limits.max_aliases
                    )));
                }
            }
            inner.write_atomically(&path, target.as_str().as_bytes())
        })
        .await
    }

    async fn delete(&self, r: &Ref) -> Result<bool, StoreError> {
        let r = r.clone();
        self.blocking(move |inner| {
            let _guard = inner.lock();
            let path = inner.blob_path(&r);
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(backend(e)),
            };
            std::fs::remove_file(&path).map_err(backend)?;
            inner.total.fetch_sub(size, Ordering::Relaxed);
            for entry in std::fs::read_dir(inner.root.join("aliases")).map_err(backend)? {
                let entry = entry.map_err(backend)?;
                if std::fs::read_to_string(entry.path()).is_ok_and(|t| t.trim() == r.as_str()) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            Ok(true)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Ref>, StoreError> {
        self.blocking(|inner| {
            let mut refs = Vec::new();
            for entry in std::fs::read_dir(inner.root.join("blobs")).map_err(backend)? {
                let name = entry.map_err(backend)?.file_name();
                if let Some(r) = name
                    .to_str()
                    .and_then(|n| format!("{}{n}", Ref::PREFIX).parse().ok())
                {
                    refs.push(r);
                }
            }
            Ok(refs)
        })
        .await
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(limits: StoreLimits) -> DirStore {
        // Each store gets its own directory; it is left for the OS to clean in /tmp.
        let dir = std::env::temp_dir().join(format!(
            "wasimoff-dirstore-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        DirStore::open(dir, limits).expect("open temp store")
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);

    crate::store_conformance_tests!(temp_store);

    #[tokio::test]
    async fn blobs_and_aliases_survive_a_reopen() {
        let store = temp_store(StoreLimits {
            max_total_size: Some(100),
            ..StoreLimits::default()
        });
        let r = store
            .put(Bytes::from_static(b"\0asm\x01\0\0\0"))
            .await
            .unwrap();
        store.set_alias("app.wasm", &r).await.unwrap();
        let root = store.root().to_path_buf();
        std::fs::write(root.join("tmp/leftover"), b"half a blob").unwrap();
        drop(store);

        let reopened = DirStore::open(
            &root,
            StoreLimits {
                max_total_size: Some(100),
                ..StoreLimits::default()
            },
        )
        .unwrap();
        let blob = reopened.get("app.wasm").await.unwrap().unwrap();
        assert_eq!((blob.r#ref, blob.media.as_str()), (r, media::WASM));
        assert!(
            !root.join("tmp/leftover").exists(),
            "temp leftovers are cleaned on open"
        );
        // The byte total was rebuilt: 8 bytes used, so 93 more do not fit.
        assert!(matches!(
            reopened.put(Bytes::from(vec![1; 93])).await,
            Err(StoreError::Full(_))
        ));
        let _ = std::fs::remove_dir_all(root);
    }
}

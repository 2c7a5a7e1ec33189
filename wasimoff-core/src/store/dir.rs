//! [`DirStore`]: a persistent [`Store`] in a directory (feature `native`).
//!
//! Layout: `blobs/<64 hex>` holds each blob, `aliases/<name>` holds the ref an alias points at
//! (first line) and, if it has one, its owner (a line `owner <id>`), `expires/<64 hex>` holds the
//! expiry (Unix milliseconds) of an ephemeral blob. Every write goes to a temporary file in
//! `tmp/` first and is renamed into place, so a crash never leaves a half-written blob or alias
//! behind and readers never see one; leftovers in `tmp/` are removed on open. The media type is
//! sniffed from the bytes on read, so nothing else needs to be stored.
//!
//! The lifecycle ([`StoreIndex`]: sizes, recency, expiry, aliases, owners) is kept in memory and
//! rebuilt on open: recency from each blob's modification time, which the store sets when it
//! writes a blob and, at most once a minute per blob, when a blob is used. On open, expired
//! blobs are deleted, aliases whose blob is gone are dropped, and if the store is over its total
//! limit (it was lowered) it evicts down to it. Pins live in memory only.
//!
//! One store instance per directory: another instance's writes are seen after a reopen.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, UNIX_EPOCH},
};

use bytes::Bytes;

use super::{
    AliasOptions, Blob, Clock, PutOptions, Ref, Store, StoreError, StoreIndex, StoreLimits, media,
    memory::expiry, validate_alias,
};

/// Blobs and aliases in a directory; they survive restarts.
#[derive(Debug, Clone)]
pub struct DirStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    limits: StoreLimits,
    clock: Clock,
    index: Mutex<StoreIndex>,
    /// Serialises writers (puts, aliases, deletions), so that a decision taken on the index
    /// still holds when its files are written.
    write_lock: Mutex<()>,
    tmp_counter: AtomicU64,
    /// A random number naming this instance's temporary files.
    instance: u64,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// The ref a file in `blobs/` or `expires/` is named after.
fn ref_of_name(name: &std::ffi::OsStr) -> Option<Ref> {
    format!("{}{}", Ref::PREFIX, name.to_str()?).parse().ok()
}

fn mtime_ms(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn system_time(ms: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// An alias file: the ref, then optionally `owner <id>`.
fn parse_alias(text: &str) -> Option<(Ref, Option<String>)> {
    let mut lines = text.lines();
    let target = lines.next()?.trim().parse().ok()?;
    let owner = lines
        .filter_map(|l| l.strip_prefix("owner "))
        .map(|o| o.trim().to_owned())
        .find(|o| !o.is_empty());
    Some((target, owner))
}

fn alias_text(target: &Ref, owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!("{target}\nowner {owner}\n"),
        None => format!("{target}\n"),
    }
}

/// Hands a pin taken inside a blocking put to the caller, or releases it when the caller has
/// gone away (its future was dropped), so that a cancelled put never leaks a pin.
#[derive(Debug)]
enum Handoff {
    Pending,
    Abandoned,
    Ready(Ref),
    Taken,
}

struct HandoffGuard {
    store: Arc<Inner>,
    state: Arc<Mutex<Handoff>>,
}

impl Drop for HandoffGuard {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *state, Handoff::Abandoned) {
            Handoff::Ready(r) => self.store.index().unpin(&r),
            Handoff::Taken => *state = Handoff::Taken,
            Handoff::Pending | Handoff::Abandoned => {}
        }
    }
}

impl DirStore {
    /// Opens (creating if needed) a store in `root`.
    pub fn open(root: impl Into<PathBuf>, limits: StoreLimits) -> Result<DirStore, StoreError> {
        DirStore::open_with_clock(root, limits, Clock::system())
    }

    /// Opens (creating if needed) a store in `root` that reads time (for recency and expiry)
    /// from `clock`.
    pub fn open_with_clock(
        root: impl Into<PathBuf>,
        limits: StoreLimits,
        clock: Clock,
    ) -> Result<DirStore, StoreError> {
        let root = root.into();
        for sub in ["blobs", "aliases", "expires", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).map_err(backend)?;
        }
        for entry in std::fs::read_dir(root.join("tmp")).map_err(backend)? {
            let _ = std::fs::remove_file(entry.map_err(backend)?.path());
        }
        let inner = Inner {
            root,
            limits,
            clock,
            index: Mutex::new(StoreIndex::new()),
            write_lock: Mutex::new(()),
            tmp_counter: AtomicU64::new(0),
            instance: {
                use std::hash::{BuildHasher, Hasher};
                // RandomState is seeded from the OS: a random number without another crate.
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            },
        };
        inner.load()?;
        Ok(DirStore {
            inner: Arc::new(inner),
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

    fn expiry_path(&self, r: &Ref) -> PathBuf {
        self.root
            .join("expires")
            .join(&r.as_str()[Ref::PREFIX.len()..])
    }

    fn alias_path(&self, alias: &str) -> PathBuf {
        self.root.join("aliases").join(alias)
    }

    fn index(&self) -> MutexGuard<'_, StoreIndex> {
        // Index operations cannot panic halfway; a poisoned lock still guards consistent data.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is on disk; a panic elsewhere cannot leave it inconsistent.
        self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the index from the directory, then deletes what expired and evicts down to the
    /// total limit.
    fn load(&self) -> Result<(), StoreError> {
        let mut expiries = HashMap::new();
        for entry in std::fs::read_dir(self.root.join("expires")).map_err(backend)? {
            let entry = entry.map_err(backend)?;
            let at = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok());
            match (ref_of_name(&entry.file_name()), at) {
                (Some(r), Some(at)) => {
                    expiries.insert(r, at);
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut index = self.index();
        for entry in std::fs::read_dir(self.root.join("blobs")).map_err(backend)? {
            let entry = entry.map_err(backend)?;
            let Some(r) = ref_of_name(&entry.file_name()) else {
                continue;
            };
            let meta = entry.metadata().map_err(backend)?;
            let expires = expiries.remove(&r);
            index.load(r, meta.len(), mtime_ms(&meta), expires);
        }
        // Markers whose blob is gone.
        for r in expiries.keys() {
            let _ = std::fs::remove_file(self.expiry_path(r));
        }
        for entry in std::fs::read_dir(self.root.join("aliases")).map_err(backend)? {
            let entry = entry.map_err(backend)?;
            let name = entry.file_name();
            let parsed = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| parse_alias(&t));
            let loaded = match (name.to_str(), parsed) {
                (Some(name), Some((target, owner))) if validate_alias(name).is_ok() => {
                    let was_ephemeral = index.expires(&target).is_some();
                    let loaded = index.load_alias(name, &target, owner.as_deref());
                    if loaded && was_ephemeral {
                        let _ = std::fs::remove_file(self.expiry_path(&target));
                    }
                    loaded
                }
                _ => false,
            };
            if !loaded {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let now = self.clock.now_ms();
        let mut gone = index.expire(now);
        match index.make_room(0, self.limits.max_total_size) {
            Ok(victims) => gone.extend(victims),
            Err(e) => tracing::warn!(root = %self.root.display(), "store over its limit: {e}"),
        }
        drop(index);
        self.remove_files(&gone);
        Ok(())
    }

    /// Deletes the files of blobs the index gave up.
    fn remove_files(&self, gone: &[(Ref, u64)]) {
        for (r, _) in gone {
            for path in [self.blob_path(r), self.expiry_path(r)] {
                if let Err(e) = std::fs::remove_file(&path)
                    && !not_found(&e)
                {
                    tracing::warn!(path = %path.display(), "cannot remove: {e}");
                }
            }
        }
    }

    /// Writes `bytes` to `dest` atomically (temp file, fsync, rename), with the modification
    /// time `mtime` if given.
    fn write_atomically(
        &self,
        dest: &Path,
        bytes: &[u8],
        mtime: Option<u64>,
    ) -> Result<(), StoreError> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        // Random per store instance, so two instances on one directory never share a name.
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:016x}-{n}", self.instance));
        let result = (|| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            if let Some(ms) = mtime {
                file.set_modified(system_time(ms))?;
            }
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

    /// Records a use on disk (the blob's modification time), best effort.
    fn persist_use(&self, r: &Ref, ms: u64) {
        let result = std::fs::File::options()
            .write(true)
            .open(self.blob_path(r))
            .and_then(|f| f.set_modified(system_time(ms)));
        if let Err(e) = result
            && !not_found(&e)
        {
            tracing::debug!(%r, "cannot record the use of a blob: {e}");
        }
    }

    /// Writes or removes the expiry marker after a change of a blob's expiry.
    fn sync_expiry(&self, r: &Ref, expires: Option<u64>) -> Result<(), StoreError> {
        match expires {
            Some(at) => {
                self.write_atomically(&self.expiry_path(r), at.to_string().as_bytes(), None)
            }
            None => match std::fs::remove_file(self.expiry_path(r)) {
                Err(e) if !not_found(&e) => Err(backend(e)),
                _ => Ok(()),
            },
        }
    }

    fn put(&self, bytes: &Bytes, options: PutOptions) -> Result<Ref, StoreError> {
        let size = bytes.len() as u64;
        let r = Ref::of(bytes);
        let _guard = self.lock();
        let now = self.clock.now_ms();
        let expires = expiry(now, &options);
        let existing = self.index().put_existing(&r, now, expires, options.pin);
        if let Some(restored) = existing {
            if restored.before != restored.after {
                self.sync_expiry(&r, restored.after)?;
            }
            self.persist_use(&r, now);
            return Ok(r);
        }
        let (expired, room) = {
            let mut index = self.index();
            let expired = index.expire(now);
            (expired, index.make_room(size, self.limits.max_total_size))
        };
        self.remove_files(&expired);
        let victims = room?;
        if !victims.is_empty() {
            tracing::debug!(count = victims.len(), "evicted blobs to make room");
        }
        self.remove_files(&victims);
        // The marker first: a crash in between leaves a marker without its blob (dropped on
        // open), never an ephemeral blob without its expiry.
        if let Some(at) = expires {
            self.sync_expiry(&r, Some(at))?;
        }
        if let Err(e) = self.write_atomically(&self.blob_path(&r), bytes, Some(now)) {
            let _ = std::fs::remove_file(self.expiry_path(&r));
            return Err(e);
        }
        self.index()
            .insert(r.clone(), size, now, expires, options.pin);
        Ok(r)
    }
}

#[async_trait::async_trait]
impl Store for DirStore {
    async fn put(&self, bytes: Bytes) -> Result<Ref, StoreError> {
        self.put_with(bytes, PutOptions::durable()).await
    }

    async fn put_with(&self, bytes: Bytes, options: PutOptions) -> Result<Ref, StoreError> {
        let size = bytes.len() as u64;
        let limit = self.inner.limits.max_blob_size;
        if size > limit {
            return Err(StoreError::TooLarge { size, limit });
        }
        if !options.pin {
            return self.blocking(move |inner| inner.put(&bytes, options)).await;
        }
        // The pin is taken in the blocking write; if this future is dropped before it ends,
        // the guard (or the write, if it ends later) releases it.
        let state = Arc::new(Mutex::new(Handoff::Pending));
        let guard = HandoffGuard {
            store: self.inner.clone(),
            state: state.clone(),
        };
        let handoff = state.clone();
        let result = self
            .blocking(move |inner| {
                let r = inner.put(&bytes, options)?;
                let mut state = handoff.lock().unwrap_or_else(|p| p.into_inner());
                match *state {
                    Handoff::Abandoned => inner.index().unpin(&r),
                    _ => *state = Handoff::Ready(r.clone()),
                }
                Ok(r)
            })
            .await;
        *state.lock().unwrap_or_else(|p| p.into_inner()) = Handoff::Taken;
        drop(guard);
        result
    }

    async fn get(&self, name: &str) -> Result<Option<Blob>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            let now = inner.clock.now_ms();
            let (r, due) = {
                let mut index = inner.index();
                let Some(r) = index.resolve(&name, now) else {
                    return Ok(None);
                };
                let due = index.touch(&r, now).unwrap_or(false);
                (r, due)
            };
            match std::fs::read(inner.blob_path(&r)) {
                Ok(bytes) => {
                    if due {
                        inner.persist_use(&r, now);
                    }
                    Ok(Some(Blob {
                        media: media::sniff(&bytes).to_owned(),
                        r#ref: r,
                        bytes: bytes.into(),
                    }))
                }
                // Deleted between resolve and read, or by someone else: forget it, so that
                // `has` agrees and the blob can be stored again.
                Err(e) if not_found(&e) => {
                    let _guard = inner.lock();
                    if !inner.blob_path(&r).exists() {
                        for name in inner.index().remove(&r).into_iter().flat_map(|(_, n)| n) {
                            let _ = std::fs::remove_file(inner.alias_path(&name));
                        }
                        let _ = std::fs::remove_file(inner.expiry_path(&r));
                    }
                    Ok(None)
                }
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn resolve(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        let now = self.inner.clock.now_ms();
        Ok(self.inner.index().resolve(name, now))
    }

    async fn pin(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        let now = self.inner.clock.now_ms();
        let pinned = self.inner.index().pin(name, now);
        Ok(pinned.map(|(r, due)| {
            if due {
                // Recency on disk is best effort: not awaited, so the pin cannot leak.
                let (inner, r) = (self.inner.clone(), r.clone());
                drop(tokio::task::spawn_blocking(move || {
                    inner.persist_use(&r, now);
                }));
            }
            r
        }))
    }

    fn unpin(&self, r: &Ref) {
        self.inner.index().unpin(r);
    }

    async fn set_alias(&self, alias: &str, target: &Ref) -> Result<(), StoreError> {
        self.set_alias_with(alias, target, AliasOptions::default())
            .await
    }

    async fn set_alias_with(
        &self,
        alias: &str,
        target: &Ref,
        options: AliasOptions<'_>,
    ) -> Result<(), StoreError> {
        let (alias, target) = (alias.to_owned(), target.clone());
        let (owner, quota) = (options.owner.map(str::to_owned), options.quota);
        self.blocking(move |inner| {
            let _guard = inner.lock();
            let now = inner.clock.now_ms();
            let max = inner.limits.max_aliases;
            let owner = owner.as_deref();
            inner
                .index()
                .check_alias(&alias, &target, owner, quota, max, now)?;
            inner.write_atomically(
                &inner.alias_path(&alias),
                alias_text(&target, owner).as_bytes(),
                None,
            )?;
            // Writers are serialised and `now` is the same: the check above still holds.
            let change = inner
                .index()
                .set_alias(&alias, &target, owner, quota, max, now)?;
            if change.made_durable {
                inner.sync_expiry(&target, None)?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_alias(&self, alias: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let (alias, owner) = (alias.to_owned(), owner.map(str::to_owned));
        self.blocking(move |inner| {
            let _guard = inner.lock();
            if !inner.index().check_remove_alias(&alias, owner.as_deref())? {
                return Ok(false);
            }
            match std::fs::remove_file(inner.alias_path(&alias)) {
                Err(e) if !not_found(&e) => return Err(backend(e)),
                _ => {}
            }
            inner.index().remove_alias(&alias, owner.as_deref())
        })
        .await
    }

    async fn delete(&self, r: &Ref) -> Result<bool, StoreError> {
        let r = r.clone();
        self.blocking(move |inner| {
            let _guard = inner.lock();
            let removed = inner.index().remove(&r);
            for name in removed.iter().flat_map(|(_, names)| names) {
                let _ = std::fs::remove_file(inner.alias_path(name));
            }
            let _ = std::fs::remove_file(inner.expiry_path(&r));
            match std::fs::remove_file(inner.blob_path(&r)) {
                Ok(()) => Ok(true),
                Err(e) if not_found(&e) => Ok(removed.is_some()),
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Ref>, StoreError> {
        let now = self.inner.clock.now_ms();
        Ok(self.inner.index().refs(now))
    }

    fn limits(&self) -> StoreLimits {
        self.inner.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ManualClock;

    static NEXT: AtomicU64 = AtomicU64::new(0);

    fn temp_dir() -> PathBuf {
        // Each store gets its own directory; it is left for the OS to clean in /tmp.
        let dir = std::env::temp_dir().join(format!(
            "wasimoff-dirstore-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn temp_store(limits: StoreLimits, clock: Clock) -> DirStore {
        DirStore::open_with_clock(temp_dir(), limits, clock).expect("open temp store")
    }

    crate::store_conformance_tests!(temp_store);

    #[tokio::test]
    async fn blobs_and_aliases_survive_a_reopen() {
        let store = temp_store(
            StoreLimits {
                max_total_size: Some(100),
                ..StoreLimits::default()
            },
            Clock::system(),
        );
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
        // The byte total was rebuilt: 8 bytes used by an aliased blob, so 93 more do not fit.
        assert!(matches!(
            reopened.put(Bytes::from(vec![1; 93])).await,
            Err(StoreError::Full(_))
        ));
        let _ = std::fs::remove_dir_all(root);
    }

    /// Recency, expiry and alias owners are rebuilt from the directory.
    #[tokio::test]
    async fn lifecycle_survives_a_reopen() {
        let time = ManualClock::new(1_000_000);
        let limits = StoreLimits {
            max_total_size: Some(40),
            ..StoreLimits::default()
        };
        let dir = temp_dir();
        let store = DirStore::open_with_clock(&dir, limits, time.clock()).unwrap();
        let old = store.put(Bytes::from(vec![1; 10])).await.unwrap();
        time.advance(Duration::from_secs(1));
        let newer = store.put(Bytes::from(vec![2; 10])).await.unwrap();
        time.advance(Duration::from_secs(1));
        let owned = store.put(Bytes::from(vec![3; 10])).await.unwrap();
        store
            .set_alias_with(
                "owned",
                &owned,
                AliasOptions {
                    owner: Some("alice"),
                    quota: None,
                },
            )
            .await
            .unwrap();
        // A use of the oldest blob long enough later is written down.
        time.advance(Duration::from_secs(120));
        assert!(store.get(old.as_str()).await.unwrap().is_some());
        let output = store
            .put_with(
                Bytes::from(vec![4; 5]),
                PutOptions::ephemeral(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        drop(store);

        let store = DirStore::open_with_clock(&dir, limits, time.clock()).unwrap();
        let bob = AliasOptions {
            owner: Some("bob"),
            quota: None,
        };
        assert!(matches!(
            store.set_alias_with("owned", &old, bob).await,
            Err(StoreError::Forbidden(_))
        ));
        assert!(matches!(
            store.remove_alias("owned", Some("bob")).await,
            Err(StoreError::Forbidden(_))
        ));
        assert_eq!(
            store.resolve(output.as_str()).await.unwrap(),
            Some(output.clone())
        );
        // 35 of 40 bytes: 15 more evict the ephemeral output first, then the least recently
        // used durable blob, which is `newer` because the use of `old` was recorded.
        store.put(Bytes::from(vec![5; 15])).await.unwrap();
        let mut left = store.list().await.unwrap();
        left.sort();
        let mut want = vec![old.clone(), owned.clone(), Ref::of(&[5; 15])];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(store.resolve(newer.as_str()).await.unwrap(), None);
        assert!(!dir.join("expires").join(&output.as_str()[7..]).exists());
        drop(store);

        // An ephemeral blob that expired while the store was closed is deleted on open.
        let store = DirStore::open_with_clock(&dir, limits, time.clock()).unwrap();
        let output = store
            .put_with(
                Bytes::from(vec![6; 2]),
                PutOptions::ephemeral(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        drop(store);
        time.advance(Duration::from_secs(60));
        let store = DirStore::open_with_clock(&dir, limits, time.clock()).unwrap();
        assert_eq!(store.resolve(output.as_str()).await.unwrap(), None);
        assert!(!dir.join("blobs").join(&output.as_str()[7..]).exists());
        assert!(!dir.join("expires").join(&output.as_str()[7..]).exists());
        // Alice still owns her alias and may re-point it.
        store
            .set_alias_with(
                "owned",
                &old,
                AliasOptions {
                    owner: Some("alice"),
                    quota: None,
                },
            )
            .await
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A blob file removed behind the store's back is forgotten at the next read.
    #[tokio::test]
    async fn a_vanished_file_is_forgotten() {
        let store = temp_store(StoreLimits::default(), Clock::system());
        let r = store.put(Bytes::from_static(b"gone")).await.unwrap();
        std::fs::remove_file(store.inner.blob_path(&r)).unwrap();
        assert!(store.has(r.as_str()).await.unwrap(), "not noticed yet");
        assert_eq!(store.get(r.as_str()).await.unwrap(), None);
        assert!(!store.has(r.as_str()).await.unwrap());
        assert_eq!(store.put(Bytes::from_static(b"gone")).await.unwrap(), r);
        assert!(
            store.get(r.as_str()).await.unwrap().is_some(),
            "stored again"
        );
        let _ = std::fs::remove_dir_all(store.root());
    }

    /// A lowered limit is applied on open by evicting what nothing holds.
    #[tokio::test]
    async fn a_lowered_limit_evicts_on_open() {
        let time = ManualClock::new(5_000_000);
        let dir = temp_dir();
        let store = DirStore::open_with_clock(&dir, StoreLimits::default(), time.clock()).unwrap();
        let kept = store.put(Bytes::from(vec![1; 10])).await.unwrap();
        store.set_alias("kept", &kept).await.unwrap();
        store.put(Bytes::from(vec![2; 10])).await.unwrap();
        time.advance(Duration::from_secs(1));
        let recent = store.put(Bytes::from(vec![3; 10])).await.unwrap();
        drop(store);
        let lowered = StoreLimits {
            max_total_size: Some(20),
            ..StoreLimits::default()
        };
        let store = DirStore::open_with_clock(&dir, lowered, time.clock()).unwrap();
        let mut left = store.list().await.unwrap();
        left.sort();
        let mut want = vec![kept, recent];
        want.sort();
        assert_eq!(left, want);
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! [`BrowserStore`]: core's [`Store`] for browsers, a verified file cache in the Origin Private
//! File System (OPFS) with an in-memory fallback.
//!
//! # Backends
//!
//! [`BrowserStore::open`] asks `navigator.storage.getDirectory()` of the current global (a
//! `Window` or a worker; `window` is never assumed) for the OPFS root, opens (creating) the
//! subdirectory [`BrowserStoreOptions::directory`] (default `wasimoff-files`) and writes,
//! renames and removes a small probe file there. When any of that is missing or fails (Firefox
//! private mode, a non-secure context, Node.js, a browser without `createWritable`), or getting
//! the directory takes longer than [`OPEN_TIMEOUT`], the store falls back to keeping blobs in
//! memory and says why ([`BrowserStore::fallback_reason`]). [`BrowserStore::backend`] is
//! `"opfs"` or `"memory"`; [`BrowserStoreOptions::force_memory`] (or [`BrowserStore::memory`])
//! skips OPFS.
//!
//! # Files
//!
//! One file per blob, named by the 64 hex digits of its `sha256:` ref. A blob is written with
//! `createWritable()` to a unique temporary name (`.tmp-…`) and then renamed with
//! `FileSystemHandle.move()`; where the probe found no working `move()`, it is written under its
//! final name directly (`createWritable()` commits on `close()`, and every read is verified
//! anyway). Temporary files left by an interrupted write (older than a minute) are removed at
//! the next open.
//!
//! **Every read from OPFS is verified**: bytes whose sha256 is not the ref (a torn write,
//! another program, a malicious extension) are logged, their file is deleted and the read
//! answers `Ok(None)`, so the provider fetches the blob again.
//!
//! # Index, budget and read cache
//!
//! The directory is listed **eagerly** in [`BrowserStore::open`]: every file whose name is a
//! valid lowercase hex sha256 enters the in-memory index (ref → size, media type sniffed from
//! the first bytes, recency), so the cache survives a page reload; other names are ignored (and
//! left alone). Files are not hashed at open; they are verified when read. The index is the
//! store's view: `resolve`, `has` and `list` never touch OPFS.
//!
//! [`BrowserStoreOptions::max_bytes`] (default 512 MiB) is a budget: a `put` that does not fit
//! evicts the least recently used blobs (with their aliases) first; a blob larger than the
//! whole budget is [`StoreError::TooLarge`]. At open, files found beyond the budget are evicted
//! oldest (`lastModified`) first. [`StoreLimits::max_total_size`], if set, stays a hard limit
//! here (`Full`, no eviction; core's backends evict for it instead, since they have no separate
//! budget). Pins, ephemeral puts and alias owners take the `Store` trait's defaults: a provider
//! cache needs none of them. Recently **read** blobs are kept in a
//! small in-memory LRU ([`BrowserStoreOptions::read_cache_bytes`], default 64 MiB) so tasks
//! that reuse a module do not reread OPFS; those bytes were verified when they were read.
//!
//! Aliases live in memory only and are lost on reload (a provider re-learns them from tasks).
//!
//! # Concurrency
//!
//! Writes and deletions are serialised by an async lock; reads run concurrently with them and
//! only see blobs whose file is complete. Several instances (workers, tabs) may open the same
//! directory: content addressing and verification keep that safe, but each has its own index
//! and budget, and a blob another instance evicted reads as `None` here (and leaves the index).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use js_sys::{Array, ArrayBuffer, Function, Object, Promise, Reflect, Uint8Array};
use wasimoff_core::store::{Blob, Ref, Store, StoreError, StoreLimits, media, validate_alias};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    File, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions,
    FileSystemGetFileOptions, FileSystemWritableFileStream,
};

/// The default OPFS subdirectory.
pub const DEFAULT_DIRECTORY: &str = "wasimoff-files";

/// How long [`BrowserStore::open`] waits for OPFS before falling back to memory.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The prefix of temporary files (never a valid hex name, so never indexed).
const TEMP_PREFIX: &str = ".tmp-";

/// The prefix of the file [`BrowserStore::open`] renames its probe to.
const PROBE_PREFIX: &str = ".probe-";

/// Temporary files older than this are leftovers of an interrupted write.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Settings of a [`BrowserStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserStoreOptions {
    /// The OPFS subdirectory holding the files (default [`DEFAULT_DIRECTORY`]). A name OPFS
    /// rejects (empty, `..`, containing `/`) makes [`BrowserStore::open`] fall back to memory.
    pub directory: String,
    /// The byte budget of stored blobs; least recently used blobs are evicted to stay within
    /// it (default 512 MiB). Applies to the memory backend too.
    pub max_bytes: u64,
    /// Bytes of recently read blobs kept in memory (OPFS backend; default 64 MiB, 0: none).
    pub read_cache_bytes: u64,
    /// Core's limits: largest blob, a hard total (refusing instead of evicting), most aliases.
    pub limits: StoreLimits,
    /// Keep blobs in memory even where OPFS works.
    pub force_memory: bool,
}

impl Default for BrowserStoreOptions {
    fn default() -> Self {
        BrowserStoreOptions {
            directory: DEFAULT_DIRECTORY.to_owned(),
            max_bytes: 512 << 20,
            read_cache_bytes: 64 << 20,
            limits: StoreLimits::default(),
            force_memory: false,
        }
    }
}

/// A content-addressed blob cache in OPFS (verified on every read) or, where OPFS is not
/// available, in memory. See the [module docs](self).
pub struct BrowserStore {
    options: BrowserStoreOptions,
    backend: Backend,
    state: RefCell<State>,
    /// Serialises puts, deletions and evictions (never held by reads).
    write_lock: tokio::sync::Mutex<()>,
    /// Numbers temporary file names.
    temp_counter: Cell<u64>,
}

enum Backend {
    Opfs(Opfs),
    Memory { reason: String },
}

struct Opfs {
    dir: FileSystemDirectoryHandle,
    /// Whether `FileSystemHandle.move()` worked in the probe.
    can_move: bool,
}

#[derive(Default)]
struct State {
    entries: HashMap<Ref, Entry>,
    aliases: HashMap<String, Ref>,
    /// Sum of the sizes in `entries`.
    used: u64,
    /// Recency clock: every index touch takes the next tick.
    clock: u64,
    /// The bytes of the memory backend.
    memory: HashMap<Ref, Bytes>,
    /// Recently read blobs (OPFS backend).
    read_cache: ReadCache,
}

struct Entry {
    size: u64,
    media: &'static str,
    last_used: u64,
    /// Tells this entry from a later one for the same ref (delete + put in between).
    id: u64,
}

#[derive(Default)]
struct ReadCache {
    blobs: HashMap<Ref, (Bytes, u64)>,
    bytes: u64,
}

impl fmt::Debug for BrowserStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut f = f.debug_struct("BrowserStore");
        f.field("backend", &self.backend())
            .field("directory", &self.options.directory)
            .field("max_bytes", &self.options.max_bytes);
        if let Ok(state) = self.state.try_borrow() {
            f.field("blobs", &state.entries.len())
                .field("used", &state.used)
                .field("aliases", &state.aliases.len());
        }
        f.finish_non_exhaustive()
    }
}

impl BrowserStore {
    /// Opens the store in OPFS, or in memory if OPFS is unavailable, fails or
    /// [`force_memory`](BrowserStoreOptions::force_memory) is set. Never fails: check
    /// [`backend`](Self::backend) and [`fallback_reason`](Self::fallback_reason).
    pub async fn open(options: BrowserStoreOptions) -> BrowserStore {
        if options.force_memory {
            return BrowserStore::memory(options);
        }
        match open_opfs(&options.directory).await {
            Ok((opfs, found)) => {
                let store = BrowserStore::new(options, Backend::Opfs(opfs));
                store.adopt(found).await;
                tracing::debug!(
                    directory = %store.options.directory,
                    blobs = store.blob_count(),
                    bytes = store.used_bytes(),
                    "opened the OPFS file cache"
                );
                store
            }
            Err(reason) => {
                tracing::warn!("OPFS unavailable, caching files in memory: {reason}");
                BrowserStore::new(options, Backend::Memory { reason })
            }
        }
    }

    /// A store that keeps blobs in memory (with the same budget and aliases), without
    /// touching OPFS.
    pub fn memory(options: BrowserStoreOptions) -> BrowserStore {
        BrowserStore::new(
            options,
            Backend::Memory {
                reason: "memory was requested".to_owned(),
            },
        )
    }

    fn new(options: BrowserStoreOptions, backend: Backend) -> BrowserStore {
        BrowserStore {
            options,
            backend,
            state: RefCell::new(State::default()),
            write_lock: tokio::sync::Mutex::new(()),
            temp_counter: Cell::new(0),
        }
    }

    /// The active backend: `"opfs"` or `"memory"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Opfs(_) => "opfs",
            Backend::Memory { .. } => "memory",
        }
    }

    /// Why blobs are kept in memory (`None` on OPFS).
    pub fn fallback_reason(&self) -> Option<&str> {
        match &self.backend {
            Backend::Opfs(_) => None,
            Backend::Memory { reason } => Some(reason),
        }
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &BrowserStoreOptions {
        &self.options
    }

    /// Bytes of all stored blobs (at most [`BrowserStoreOptions::max_bytes`] after a put).
    pub fn used_bytes(&self) -> u64 {
        self.state.borrow().used
    }

    /// How many blobs are stored.
    pub fn blob_count(&self) -> usize {
        self.state.borrow().entries.len()
    }

    /// Removes every blob and alias (their files too).
    pub async fn clear(&self) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        let refs: Vec<Ref> = self.state.borrow().entries.keys().cloned().collect();
        let mut first_error = None;
        for r in refs {
            self.forget(&r, None);
            if let Err(e) = self.remove_file(&r).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The largest blob accepted: core's limit, or the whole budget if that is smaller.
    fn max_blob_size(&self) -> u64 {
        self.options
            .limits
            .max_blob_size
            .min(self.options.max_bytes)
    }

    /// Puts the files found at open into the index, oldest first, and evicts beyond the
    /// budget.
    async fn adopt(&self, mut found: Vec<Found>) {
        found.sort_by(|a, b| a.modified.total_cmp(&b.modified));
        {
            let mut state = self.state.borrow_mut();
            for file in found {
                let tick = state.tick();
                state.used += file.size;
                state.entries.insert(
                    file.r#ref,
                    Entry {
                        size: file.size,
                        media: file.media,
                        last_used: tick,
                        id: tick,
                    },
                );
            }
        }
        let _guard = self.write_lock.lock().await;
        self.make_room(0).await;
    }

    /// Evicts least recently used blobs until `extra` more bytes fit the budget. Call with
    /// the write lock held.
    async fn make_room(&self, extra: u64) {
        loop {
            let victim = {
                let state = self.state.borrow();
                if state.used.saturating_add(extra) <= self.options.max_bytes {
                    return;
                }
                state
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(r, _)| r.clone())
            };
            let Some(victim) = victim else { return };
            tracing::debug!(blob = %victim, "evicting the least recently used blob");
            self.forget(&victim, None);
            if let Err(e) = self.remove_file(&victim).await {
                tracing::warn!(blob = %victim, "cannot remove an evicted file: {e}");
            }
        }
    }

    /// Drops a blob from the index, its aliases and cached bytes (only the entry `id` if
    /// given). Returns whether it was there.
    fn forget(&self, r: &Ref, id: Option<u64>) -> bool {
        let mut state = self.state.borrow_mut();
        match state.entries.get(r) {
            Some(entry) if id.is_none_or(|id| id == entry.id) => {}
            _ => return false,
        }
        if let Some(entry) = state.entries.remove(r) {
            state.used = state.used.saturating_sub(entry.size);
        }
        state.aliases.retain(|_, target| target != r);
        state.memory.remove(r);
        state.read_cache.remove(r);
        true
    }

    /// Removes a blob's file (a missing file is fine).
    async fn remove_file(&self, r: &Ref) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Opfs(opfs) => remove_entry(&opfs.dir, file_name(r))
                .await
                .map_err(|e| js_store_error("cannot remove the file", &e)),
            Backend::Memory { .. } => Ok(()),
        }
    }

    /// Writes a blob's file (OPFS) or keeps its bytes (memory). Call with the write lock held.
    async fn write_blob(&self, r: &Ref, bytes: &Bytes) -> Result<(), StoreError> {
        let opfs = match &self.backend {
            Backend::Opfs(opfs) => opfs,
            Backend::Memory { .. } => {
                self.state
                    .borrow_mut()
                    .memory
                    .insert(r.clone(), bytes.clone());
                return Ok(());
            }
        };
        let name = file_name(r);
        if opfs.can_move {
            let n = self.temp_counter.get().wrapping_add(1);
            self.temp_counter.set(n);
            let temp = temp_name(n);
            let moved = async {
                let handle = write_file(&opfs.dir, &temp, bytes).await?;
                if let Err(e) = move_file(&handle, name).await {
                    // Some implementations refuse to replace an existing file.
                    remove_entry(&opfs.dir, name).await?;
                    move_file(&handle, name).await.map_err(|_| e)?;
                }
                Ok::<(), JsValue>(())
            }
            .await;
            match moved {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Err(e) = remove_entry(&opfs.dir, &temp).await {
                        tracing::debug!("cannot remove {temp}: {}", js_text(&e));
                    }
                    if is_quota_error(&e) {
                        return Err(js_store_error("cannot write the file", &e));
                    }
                    tracing::warn!(
                        blob = %r,
                        "writing through a temporary file failed ({}), writing directly",
                        js_text(&e)
                    );
                }
            }
        }
        write_file(&opfs.dir, name, bytes)
            .await
            .map(drop)
            .map_err(|e| js_store_error("cannot write the file", &e))
    }

    /// Reads and verifies a blob's file; `None` if it is gone or does not match its ref (then
    /// the entry `id` is forgotten and the file removed).
    async fn read_verified(
        &self,
        opfs: &Opfs,
        r: &Ref,
        id: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        let bytes = match read_file(&opfs.dir, file_name(r)).await {
            Ok(bytes) => bytes,
            Err(e) if is_not_found(&e) => {
                // Removed by another instance sharing the directory, or by the user.
                if self.forget(r, Some(id)) {
                    tracing::warn!(blob = %r, "cached file disappeared");
                }
                return Ok(None);
            }
            Err(e) => return Err(js_store_error("cannot read the file", &e)),
        };
        if r.verify(&bytes) {
            return Ok(Some(bytes));
        }
        tracing::warn!(
            blob = %r,
            actual = %Ref::of(&bytes),
            size = bytes.len(),
            "cached file does not match its ref; deleting it"
        );
        let _guard = self.write_lock.lock().await;
        if self.forget(r, Some(id))
            && let Err(e) = self.remove_file(r).await
        {
            tracing::warn!(blob = %r, "cannot remove the corrupt file: {e}");
        }
        Ok(None)
    }
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The ref a name stands for, if that blob is stored.
    fn resolve(&self, name: &str) -> Option<Ref> {
        let r = if Ref::is_ref_like(name) {
            name.parse::<Ref>().ok()?
        } else {
            self.aliases.get(name)?.clone()
        };
        self.entries.contains_key(&r).then_some(r)
    }

    /// Marks a stored blob as used now; returns its media type and entry id.
    fn touch(&mut self, r: &Ref) -> Option<(&'static str, u64)> {
        let tick = self.tick();
        let entry = self.entries.get_mut(r)?;
        entry.last_used = tick;
        Some((entry.media, entry.id))
    }
}

impl ReadCache {
    fn get(&mut self, r: &Ref, tick: u64) -> Option<Bytes> {
        let (bytes, used) = self.blobs.get_mut(r)?;
        *used = tick;
        Some(bytes.clone())
    }

    fn insert(&mut self, r: Ref, bytes: Bytes, tick: u64, max: u64) {
        let size = bytes.len() as u64;
        if size > max || self.blobs.contains_key(&r) {
            return;
        }
        while self.bytes + size > max {
            let Some(oldest) = self
                .blobs
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(r, _)| r.clone())
            else {
                break;
            };
            self.remove(&oldest);
        }
        self.bytes += size;
        self.blobs.insert(r, (bytes, tick));
    }

    fn remove(&mut self, r: &Ref) {
        if let Some((bytes, _)) = self.blobs.remove(r) {
            self.bytes = self.bytes.saturating_sub(bytes.len() as u64);
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Store for BrowserStore {
    async fn put(&self, bytes: Bytes) -> Result<Ref, StoreError> {
        let size = bytes.len() as u64;
        let limit = self.max_blob_size();
        if size > limit {
            return Err(StoreError::TooLarge { size, limit });
        }
        let r = Ref::of(&bytes);
        if self.state.borrow_mut().touch(&r).is_some() {
            return Ok(r);
        }
        let _guard = self.write_lock.lock().await;
        // Another put may have stored it while this one waited.
        if self.state.borrow_mut().touch(&r).is_some() {
            return Ok(r);
        }
        if let Some(max) = self.options.limits.max_total_size {
            let used = self.state.borrow().used;
            if used.saturating_add(size) > max {
                return Err(StoreError::Full(format!(
                    "{used} of {max} bytes used, {size} more do not fit"
                )));
            }
        }
        self.make_room(size).await;
        self.write_blob(&r, &bytes).await?;
        let mut state = self.state.borrow_mut();
        let tick = state.tick();
        state.used += size;
        state.entries.insert(
            r.clone(),
            Entry {
                size,
                media: media::sniff(&bytes),
                last_used: tick,
                id: tick,
            },
        );
        Ok(r)
    }

    async fn get(&self, name: &str) -> Result<Option<Blob>, StoreError> {
        let (r, media, id, cached) = {
            let mut state = self.state.borrow_mut();
            let Some(r) = state.resolve(name) else {
                return Ok(None);
            };
            let Some((media, id)) = state.touch(&r) else {
                return Ok(None);
            };
            let tick = state.clock;
            let cached = match self.backend {
                Backend::Memory { .. } => state.memory.get(&r).cloned(),
                Backend::Opfs(_) => state.read_cache.get(&r, tick),
            };
            (r, media, id, cached)
        };
        let blob = |bytes| Blob {
            r#ref: r.clone(),
            media: media.to_owned(),
            bytes,
        };
        if let Some(bytes) = cached {
            return Ok(Some(blob(bytes)));
        }
        let Backend::Opfs(opfs) = &self.backend else {
            return Ok(None);
        };
        let Some(bytes) = self.read_verified(opfs, &r, id).await? else {
            return Ok(None);
        };
        {
            let mut state = self.state.borrow_mut();
            // Only while the entry read is still the stored one.
            if state.entries.get(&r).is_some_and(|e| e.id == id) {
                let tick = state.tick();
                state.read_cache.insert(
                    r.clone(),
                    bytes.clone(),
                    tick,
                    self.options.read_cache_bytes,
                );
            }
        }
        Ok(Some(blob(bytes)))
    }

    async fn resolve(&self, name: &str) -> Result<Option<Ref>, StoreError> {
        Ok(self.state.borrow().resolve(name))
    }

    async fn set_alias(&self, alias: &str, target: &Ref) -> Result<(), StoreError> {
        validate_alias(alias)?;
        let mut state = self.state.borrow_mut();
        if !state.entries.contains_key(target) {
            return Err(StoreError::NotFound(target.to_string()));
        }
        let max = self.options.limits.max_aliases;
        if !state.aliases.contains_key(alias) && state.aliases.len() >= max {
            return Err(StoreError::Full(format!("{max} aliases")));
        }
        state.aliases.insert(alias.to_owned(), target.clone());
        Ok(())
    }

    async fn delete(&self, r: &Ref) -> Result<bool, StoreError> {
        let _guard = self.write_lock.lock().await;
        if !self.forget(r, None) {
            return Ok(false);
        }
        self.remove_file(r).await?;
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<Ref>, StoreError> {
        Ok(self.state.borrow().entries.keys().cloned().collect())
    }

    fn limits(&self) -> StoreLimits {
        StoreLimits {
            max_blob_size: self.max_blob_size(),
            ..self.options.limits
        }
    }
}

/// A blob file found when opening the directory.
struct Found {
    r#ref: Ref,
    size: u64,
    media: &'static str,
    modified: f64,
}

/// Opens the OPFS subdirectory, probes that files can be written there and lists it.
async fn open_opfs(directory: &str) -> Result<(Opfs, Vec<Found>), String> {
    // Only getting the handles may hang (permission prompts, a stuck storage backend); the
    // listing below takes as long as the cache is large.
    let dir = wasimoff_core::platform::timeout(OPEN_TIMEOUT, async {
        let root = opfs_root().await?;
        let options = FileSystemGetDirectoryOptions::new();
        options.set_create(true);
        await_as::<FileSystemDirectoryHandle>(
            root.get_directory_handle_with_options(directory, &options),
        )
        .await
        .map_err(|e| format!("cannot open the directory {directory:?}: {}", js_text(&e)))
    })
    .await
    .map_err(|elapsed| format!("OPFS did not answer: {elapsed}"))??;
    let can_move = probe(&dir).await?;
    let found = list_blobs(&dir)
        .await
        .map_err(|e| format!("cannot list the directory {directory:?}: {}", js_text(&e)))?;
    Ok((Opfs { dir, can_move }, found))
}

/// `navigator.storage.getDirectory()` of the current global, checked step by step.
async fn opfs_root() -> Result<FileSystemDirectoryHandle, String> {
    let global = js_sys::global();
    let navigator = Reflect::get(&global, &"navigator".into())
        .ok()
        .filter(|n| n.is_object())
        .ok_or("no navigator in this global scope")?;
    let storage = Reflect::get(&navigator, &"storage".into())
        .ok()
        .filter(|s| s.is_object())
        .ok_or("no navigator.storage (not a secure context?)")?;
    let get_directory = Reflect::get(&storage, &"getDirectory".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok())
        .ok_or("no navigator.storage.getDirectory (no OPFS in this browser)")?;
    let promise = get_directory
        .call0(&storage)
        .map_err(|e| format!("navigator.storage.getDirectory() threw: {}", js_text(&e)))?;
    let promise = promise
        .dyn_into::<Promise>()
        .map_err(|_| "navigator.storage.getDirectory() returned no promise".to_owned())?;
    await_as(promise)
        .await
        .map_err(|e| format!("navigator.storage.getDirectory() failed: {}", js_text(&e)))
}

/// Writes, renames, reads back and removes a probe file. Returns whether `move()` works.
async fn probe(dir: &FileSystemDirectoryHandle) -> Result<bool, String> {
    let temp = format!("{TEMP_PREFIX}probe-{}", random_suffix());
    let target = format!("{PROBE_PREFIX}{}", random_suffix());
    let content = Bytes::from_static(b"wasimoff probe");
    let handle = write_file(dir, &temp, &content)
        .await
        .map_err(|e| format!("cannot write a file: {}", js_text(&e)))?;
    let can_move = match move_file(&handle, &target).await {
        Ok(()) => match read_file(dir, &target).await {
            Ok(back) => back == content,
            Err(_) => false,
        },
        Err(e) => {
            tracing::debug!(
                "OPFS move() unavailable, writing files directly: {}",
                js_text(&e)
            );
            false
        }
    };
    if !can_move {
        let back = read_file(dir, &temp)
            .await
            .map_err(|e| format!("cannot read a written file: {}", js_text(&e)))?;
        if back != content {
            return Err("a written file reads back different bytes".to_owned());
        }
    }
    for name in [&temp, &target] {
        remove_entry(dir, name)
            .await
            .map_err(|e| format!("cannot remove a file: {}", js_text(&e)))?;
    }
    Ok(can_move)
}

/// Lists the blob files of `dir` (names that are hex sha256) and removes stale temporary
/// files; other names are left alone.
async fn list_blobs(dir: &FileSystemDirectoryHandle) -> Result<Vec<Found>, JsValue> {
    let entries = dir.entries();
    let mut files = Vec::new();
    let mut stale = Vec::new();
    loop {
        let step = JsFuture::from(entries.next()?).await?;
        if Reflect::get(&step, &"done".into())?.is_truthy() {
            break;
        }
        let pair: Array = Reflect::get(&step, &"value".into())?.unchecked_into();
        let Some(name) = pair.get(0).as_string() else {
            continue;
        };
        if name.starts_with(TEMP_PREFIX) || name.starts_with(PROBE_PREFIX) {
            if let Ok(handle) = pair.get(1).dyn_into::<FileSystemFileHandle>() {
                stale.push((name, handle));
            }
            continue;
        }
        let Ok(r) = format!("{}{name}", Ref::PREFIX).parse::<Ref>() else {
            continue;
        };
        if let Ok(handle) = pair.get(1).dyn_into::<FileSystemFileHandle>() {
            files.push((r, handle));
        }
    }
    let now = js_sys::Date::now();
    for (name, handle) in stale {
        // A young one may be another instance's write in progress.
        let Ok(file) = await_as::<File>(handle.get_file()).await else {
            continue;
        };
        if now - file.last_modified() < STALE_AFTER.as_millis() as f64 {
            continue;
        }
        if let Err(e) = remove_entry(dir, &name).await {
            tracing::debug!("cannot remove the stale {name}: {}", js_text(&e));
        }
    }
    let mut found = Vec::with_capacity(files.len());
    for (r, handle) in files {
        let file: File = await_as(handle.get_file()).await?;
        let head = file.slice_with_f64_and_f64(0.0, 8.0)?;
        let head: ArrayBuffer = await_as(head.array_buffer()).await?;
        let head = Uint8Array::new(&head).to_vec();
        found.push(Found {
            r#ref: r,
            size: file.size() as u64,
            media: media::sniff(&head),
            modified: file.last_modified(),
        });
    }
    Ok(found)
}

/// Writes `bytes` to the file `name` (created or truncated) and closes it.
async fn write_file(
    dir: &FileSystemDirectoryHandle,
    name: &str,
    bytes: &Bytes,
) -> Result<FileSystemFileHandle, JsValue> {
    let options = FileSystemGetFileOptions::new();
    options.set_create(true);
    let handle: FileSystemFileHandle =
        await_as(dir.get_file_handle_with_options(name, &options)).await?;
    let stream: FileSystemWritableFileStream = await_as(handle.create_writable()).await?;
    let written = async {
        if !bytes.is_empty() {
            // A copy owned by JS: the stream may consume it after wasm memory has moved.
            let chunk = Uint8Array::from(bytes.as_ref());
            JsFuture::from(stream.write_with_js_u8_array(&chunk)?).await?;
        }
        JsFuture::from(stream.close()).await
    }
    .await;
    if let Err(e) = written {
        // Discards the swap file; the error that matters is the write's.
        drop(JsFuture::from(stream.abort()).await);
        return Err(e);
    }
    Ok(handle)
}

/// The contents of the file `name`.
async fn read_file(dir: &FileSystemDirectoryHandle, name: &str) -> Result<Bytes, JsValue> {
    let handle: FileSystemFileHandle = await_as(dir.get_file_handle(name)).await?;
    let file: File = await_as(handle.get_file()).await?;
    let buffer: ArrayBuffer = await_as(file.array_buffer()).await?;
    Ok(Bytes::from(Uint8Array::new(&buffer).to_vec()))
}

/// Renames a file within its directory with `FileSystemHandle.move(name)`.
async fn move_file(handle: &FileSystemFileHandle, name: &str) -> Result<(), JsValue> {
    let move_fn: Function = Reflect::get(handle, &"move".into())?
        .dyn_into()
        .map_err(|_| JsValue::from_str("FileSystemHandle.move() is not supported"))?;
    let promise: Promise = move_fn.call1(handle, &name.into())?.dyn_into()?;
    JsFuture::from(promise).await.map(drop)
}

/// Removes the entry `name`; a missing one is not an error.
async fn remove_entry(dir: &FileSystemDirectoryHandle, name: &str) -> Result<(), JsValue> {
    match JsFuture::from(dir.remove_entry(name)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Awaits a promise and casts its value.
async fn await_as<T: JsCast>(promise: Promise) -> Result<T, JsValue> {
    let value = JsFuture::from(promise).await?;
    value
        .dyn_into::<T>()
        .map_err(|v| JsValue::from_str(&format!("unexpected value {v:?}")))
}

/// A blob's file name: the hex digits of its ref.
fn file_name(r: &Ref) -> &str {
    r.as_str().strip_prefix(Ref::PREFIX).unwrap_or(r.as_str())
}

/// A temporary file name unique across instances sharing the directory.
fn temp_name(n: u64) -> String {
    format!("{TEMP_PREFIX}{}-{n}", random_suffix())
}

fn random_suffix() -> String {
    format!("{:012x}", (js_sys::Math::random() * 2f64.powi(48)) as u64)
}

/// A `DOMException`'s (or any error's) `name`.
fn error_name(e: &JsValue) -> Option<String> {
    e.is_object()
        .then(|| Reflect::get(e, &"name".into()).ok()?.as_string())
        .flatten()
}

fn is_not_found(e: &JsValue) -> bool {
    error_name(e).as_deref() == Some("NotFoundError")
}

fn is_quota_error(e: &JsValue) -> bool {
    error_name(e).as_deref() == Some("QuotaExceededError")
}

/// `Name: message` of a JS error, or the value's text.
fn js_text(e: &JsValue) -> String {
    if let Some(text) = e.as_string() {
        return text;
    }
    if e.is_object() {
        let message = Reflect::get(e, &"message".into())
            .ok()
            .and_then(|m| m.as_string());
        if let Some(message) = message {
            return match error_name(e) {
                Some(name) => format!("{name}: {message}"),
                None => message,
            };
        }
        if let Some(text) = Object::from(e.clone()).to_string().as_string() {
            return text;
        }
    }
    format!("{e:?}")
}

/// A JS failure as a [`StoreError`]: a full quota is [`StoreError::Full`].
fn js_store_error(what: &str, e: &JsValue) -> StoreError {
    if is_quota_error(e) {
        StoreError::Full(format!("browser storage quota exceeded: {}", js_text(e)))
    } else {
        StoreError::Backend(format!("OPFS: {what}: {}", js_text(e)))
    }
}

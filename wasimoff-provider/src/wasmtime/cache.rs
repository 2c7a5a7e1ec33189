//! Compiled modules, cached by content ref: in memory in a small LRU bounded by the size of the
//! compiled code, and optionally on disk as serialized modules.
//!
//! Each entry keeps the [`Module`] and its [`InstancePre`] (imports resolved against the
//! executor's linker), so a warm task only instantiates. Disk files are named by the module's
//! ref and the engine's [`Engine::precompile_compatibility_hash`], so engines with different
//! settings or wasmtime versions never share files; a file that fails to load is recompiled and
//! overwritten. Concurrent requests for the same uncached ref compile it once. The module bytes
//! are trusted to match their ref (the provider's store verified them).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};
use wasimoff_core::executor::{ExecError, ResolvedFile};
use wasimoff_core::store::Ref;
use wasmtime::{Engine, InstancePre, Module};

use super::engine::{EngineHandle, Host};

/// Counters of an executor, for tests, benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutorStats {
    /// Modules compiled from wasm.
    pub compiles: u64,
    /// Modules found in the memory cache.
    pub memory_hits: u64,
    /// Modules loaded from the disk cache.
    pub disk_hits: u64,
    /// Tasks that were run (instantiated), whatever their result.
    pub tasks: u64,
    /// Guests waiting in `poll_oneoff` right now (e.g. asleep); see
    /// [`WasmtimeExecutor::watch_waiting`](super::WasmtimeExecutor::watch_waiting).
    pub waiting: u64,
}

/// A compiled module ready to instantiate.
pub(crate) struct Compiled {
    pub(crate) pre: InstancePre<Host>,
    /// Bytes charged against the memory cache.
    size: usize,
}

#[derive(Default)]
struct Counters {
    compiles: AtomicU64,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
}

/// Both cache levels and the compile step.
pub(crate) struct ModuleCache {
    memory: Mutex<Lru>,
    /// One lock per ref being compiled, so concurrent misses compile once.
    inflight: Mutex<HashMap<Ref, Arc<Mutex<()>>>>,
    disk: Option<DiskCache>,
    counters: Counters,
}

impl std::fmt::Debug for ModuleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleCache")
            .field("disk", &self.disk.as_ref().map(|disk| &disk.dir))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ModuleCache {
    /// A cache holding up to `memory_bytes` of compiled code, and files in `dir` if given.
    pub(crate) fn new(
        engine: &Engine,
        memory_bytes: usize,
        dir: Option<&Path>,
    ) -> Result<Self, ExecError> {
        let disk = dir.map(|dir| DiskCache::open(engine, dir)).transpose()?;
        Ok(ModuleCache {
            memory: Mutex::new(Lru::new(memory_bytes)),
            inflight: Mutex::default(),
            disk,
            counters: Counters::default(),
        })
    }

    /// The counters so far (`tasks` and `waiting` are left 0 for the executor to fill in).
    pub(crate) fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            compiles: self.counters.compiles.load(Ordering::Relaxed),
            memory_hits: self.counters.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.counters.disk_hits.load(Ordering::Relaxed),
            tasks: 0,
            waiting: 0,
        }
    }

    /// The compiled module for `file`, from a cache or freshly compiled.
    pub(crate) fn get(
        &self,
        engine: &EngineHandle,
        file: &ResolvedFile,
    ) -> Result<Arc<Compiled>, ExecError> {
        if let Some(hit) = lock(&self.memory).get(&file.r#ref) {
            self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        let gate = lock(&self.inflight)
            .entry(file.r#ref.clone())
            .or_default()
            .clone();
        let result = {
            let _compiling = lock(&gate);
            // Someone else may have compiled it while we waited.
            if let Some(hit) = lock(&self.memory).get(&file.r#ref) {
                self.counters.memory_hits.fetch_add(1, Ordering::Relaxed);
                Ok(hit)
            } else {
                self.load_or_compile(engine, file)
            }
        };
        lock(&self.inflight).remove(&file.r#ref);
        result
    }

    fn load_or_compile(
        &self,
        engine: &EngineHandle,
        file: &ResolvedFile,
    ) -> Result<Arc<Compiled>, ExecError> {
        let from_disk = self
            .disk
            .as_ref()
            .and_then(|disk| disk.load(&engine.engine, &file.r#ref));
        let module = match from_disk {
            Some(module) => {
                self.counters.disk_hits.fetch_add(1, Ordering::Relaxed);
                module
            }
            None => {
                let module = Module::new(&engine.engine, &file.bytes)
                    .map_err(|e| ExecError::InvalidModule(format!("{e:#}")))?;
                self.counters.compiles.fetch_add(1, Ordering::Relaxed);
                if let Some(disk) = &self.disk {
                    disk.store(&module, &file.r#ref);
                }
                module
            }
        };
        if module.get_export("_start").is_none() {
            return Err(ExecError::InvalidModule(
                "the module exports no `_start` function (not a WASI command)".into(),
            ));
        }
        let pre = engine
            .linker
            .instantiate_pre(&module)
            .map_err(|e| ExecError::InvalidModule(format!("{e:#}")))?;
        let range = module.image_range();
        let size = (range.end as usize).saturating_sub(range.start as usize);
        let compiled = Arc::new(Compiled { pre, size });
        lock(&self.memory).insert(file.r#ref.clone(), compiled.clone());
        Ok(compiled)
    }
}

/// A least-recently-used map bounded by the summed size of its entries.
struct Lru {
    capacity: usize,
    used: usize,
    clock: u64,
    entries: HashMap<Ref, (Arc<Compiled>, u64)>,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            used: 0,
            clock: 0,
            entries: HashMap::new(),
        }
    }

    fn get(&mut self, key: &Ref) -> Option<Arc<Compiled>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = clock;
            value.clone()
        })
    }

    fn insert(&mut self, key: Ref, value: Arc<Compiled>) {
        if value.size > self.capacity {
            return;
        }
        if let Some((old, _)) = self.entries.remove(&key) {
            self.used -= old.size;
        }
        while self.used + value.size > self.capacity {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((evicted, _)) = self.entries.remove(&oldest) {
                self.used -= evicted.size;
            }
        }
        self.clock += 1;
        self.used += value.size;
        self.entries.insert(key, (value, self.clock));
    }
}

/// Serialized modules in a directory.
struct DiskCache {
    dir: PathBuf,
    /// Hex digest of the engine's compatibility hash, part of every file name.
    engine_tag: String,
}

/// Feeds a [`Hash`] into SHA-256, for a digest that is stable across builds (unlike
/// `DefaultHasher`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl DiskCache {
    fn open(engine: &Engine, dir: &Path) -> Result<Self, ExecError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ExecError::Host(format!("creating module cache {}: {e}", dir.display()))
        })?;
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let digest = hasher.0.finalize();
        Ok(DiskCache {
            dir: dir.to_owned(),
            engine_tag: hex::encode(&digest[..8]),
        })
    }

    fn path(&self, r#ref: &Ref) -> PathBuf {
        let digest = r#ref
            .as_str()
            .strip_prefix(Ref::PREFIX)
            .unwrap_or(r#ref.as_str());
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_tag))
    }

    /// The cached module, or `None` if it is missing or unusable.
    fn load(&self, engine: &Engine, r#ref: &Ref) -> Option<Module> {
        let path = self.path(r#ref);
        if !path.is_file() {
            return None;
        }
        match deserialize_own_file(engine, &path) {
            Ok(module) => Some(module),
            Err(e) => {
                tracing::warn!(path = %path.display(), "recompiling: cached module unusable: {e:#}");
                None
            }
        }
    }

    /// Writes the module atomically (temporary file, then rename); failures are only logged.
    fn store(&self, module: &Module, r#ref: &Ref) {
        let path = self.path(r#ref);
        let written = module
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|bytes| {
                let mut file =
                    tempfile::NamedTempFile::new_in(&self.dir).map_err(|e| e.to_string())?;
                std::io::Write::write_all(&mut file, &bytes).map_err(|e| e.to_string())?;
                file.persist(&path).map_err(|e| e.to_string())?;
                Ok(())
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "could not cache compiled module: {e}");
        }
    }
}

/// Loads a module file this cache wrote.
#[allow(unsafe_code)]
fn deserialize_own_file(engine: &Engine, path: &Path) -> wasmtime::Result<Module> {
    // Cheap pre-check: it must at least be a precompiled module, not a component or junk.
    if !matches!(
        Engine::detect_precompiled_file(path)?,
        Some(wasmtime::Precompiled::Module)
    ) {
        wasmtime::bail!("not a precompiled module");
    }
    // SAFETY: the file lives in the executor's private cache directory and was written by
    // `DiskCache::store` from `Module::serialize` (atomically, via rename), for an engine whose
    // `precompile_compatibility_hash` is part of the file name. Wasmtime additionally checks
    // the header, version and engine settings on load and returns an error on mismatch, in
    // which case we recompile and overwrite. The remaining trust assumption of
    // `deserialize_file` — nobody else writes native code into that directory — is the
    // operator's to keep.
    unsafe { Module::deserialize_file(engine, path) }
}

//! [`WasmtimeConfig`]: the plain-data configuration of a [`WasmtimeExecutor`]
//! (worker count, caches, default limits for tasks, rootfs and artifact limits).
//!
//! [`WasmtimeExecutor`]: super::WasmtimeExecutor

use std::path::PathBuf;
use std::time::Duration;
use wasimoff_core::executor;
use wasimoff_wasi::fs::RootfsLimits;

/// How a [`WasmtimeExecutor`](super::WasmtimeExecutor) runs tasks.
///
/// A task's own [`ExecLimits`](wasimoff_core::executor::ExecLimits) override the `default_*`
/// limits here field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WasmtimeConfig {
    /// Tasks run at once; `0` means one per available core.
    pub workers: usize,
    /// Directory for compiled modules (created if missing); `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Bytes of compiled code kept in memory (least recently used evicted first); `0` disables
    /// the memory cache.
    pub memory_cache_bytes: usize,
    /// Wall-clock time a task may run unless it says otherwise; `None` means no limit.
    pub default_timeout: Option<Duration>,
    /// Linear memory a task may grow to unless it says otherwise; `None` means no limit
    /// (beyond wasm32's 4 GiB).
    pub default_max_memory: Option<u64>,
    /// Fuel a task may burn unless it says otherwise (only with [`Self::enable_fuel`]).
    pub default_fuel: Option<u64>,
    /// Bytes of stdout and of stderr kept per task unless it says otherwise.
    pub default_max_output: usize,
    /// Largest total size a rootfs may unpack to (bytes actually written are counted).
    pub max_rootfs_bytes: u64,
    /// Most entries (files and directories) a rootfs zip may have.
    pub max_rootfs_entries: usize,
    /// Largest total (uncompressed) size of a task's artifacts.
    pub max_artifacts_bytes: u64,
    /// Compile with fuel metering so tasks can have a fuel limit. Costs some speed; without it
    /// a task's fuel limit is ignored (its timeout still applies).
    pub enable_fuel: bool,
    /// How often the epoch ticker checks deadlines and cancellation.
    pub epoch_tick: Duration,
    /// Where per-task root directories are created; `None` means the system temp directory.
    pub work_dir: Option<PathBuf>,
    /// Instances kept ready by wasmtime's pooling allocator, so that a task's linear memory is
    /// reused (reset in place) instead of mapped and unmapped per task; `0` allocates on
    /// demand. Never fewer than [`Self::workers`] are kept (tasks run through
    /// [`Executor::execute`] need no more); each reserves address space, not memory.
    ///
    /// [`Executor::execute`]: wasimoff_core::executor::Executor::execute
    pub pooled_instances: u32,
}

impl Default for WasmtimeConfig {
    fn default() -> Self {
        WasmtimeConfig {
            workers: 0,
            cache_dir: None,
            memory_cache_bytes: 256 << 20,
            default_timeout: Some(executor::DEFAULT_TIMEOUT),
            default_max_memory: Some(executor::DEFAULT_MAX_MEMORY),
            default_fuel: None,
            default_max_output: executor::DEFAULT_MAX_OUTPUT,
            max_rootfs_bytes: RootfsLimits::default().max_bytes,
            max_rootfs_entries: RootfsLimits::default().max_entries,
            max_artifacts_bytes: executor::DEFAULT_MAX_ARTIFACTS_BYTES,
            enable_fuel: false,
            epoch_tick: Duration::from_millis(10),
            work_dir: None,
            pooled_instances: 16,
        }
    }
}

impl WasmtimeConfig {
    /// The number of tasks run at once: [`Self::workers`], or the available cores if that is 0.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }
    }
}

//! The wasmtime [`Engine`] of an executor with its epoch ticker thread, the [`Linker`] offering
//! WASI preview 1 under both `wasi_snapshot_preview1` and the legacy `wasi_unstable`, and the
//! per-task store data [`Host`] with its memory [`Limiter`].
//!
//! Epoch interruption is always on: a background thread increments the engine's epoch every
//! [`WasmtimeConfig::epoch_tick`], and every task's store gets a deadline of one tick with a
//! callback that checks the task's wall-clock deadline and cancellation token, so a spinning
//! guest is stopped within about one tick. A guest waiting in `poll_oneoff` is stopped by the
//! linker's own `poll_oneoff` ([`super::poll`]), which waits on the same [`TaskGuard`]. Fuel
//! metering is compiled in only when configured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use wasimoff_core::executor::ExecError;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig,
    ResourceLimiter,
};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::WasmtimeConfig;
use super::guard::TaskGuard;

/// Most table elements a guest may grow a table to (function tables of real programs are far
/// smaller; this only stops a guest from exhausting host memory through tables).
const MAX_TABLE_ELEMENTS: usize = 10_000_000;

/// The store data of one task.
pub(crate) struct Host {
    /// The WASI preview 1 context (args, envs, stdio, preopens).
    pub(crate) wasi: WasiP1Ctx,
    /// The memory limiter.
    pub(crate) limiter: Limiter,
    /// When the task must stop, for host calls that wait.
    pub(crate) guard: TaskGuard,
}

/// Caps linear memory growth and records whether it ever refused growth, so that a guest that
/// traps after a failed allocation is reported as having exceeded its memory limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    max_memory: Option<usize>,
    refused: bool,
}

impl Limiter {
    /// A limiter allowing `max_memory` bytes per linear memory (`None`: no limit).
    pub(crate) fn new(max_memory: Option<u64>) -> Self {
        Limiter {
            max_memory: max_memory.map(|max| usize::try_from(max).unwrap_or(usize::MAX)),
            refused: false,
        }
    }

    /// Whether a `memory.grow` (or an initial memory) was refused.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.max_memory.is_none_or(|max| desired <= max);
        if !allowed {
            self.refused = true;
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Instance slots of the pooling allocator (0: none): never fewer than the workers.
fn pool_slots(config: &WasmtimeConfig) -> u32 {
    if config.pooled_instances == 0 {
        return 0;
    }
    let workers = u32::try_from(config.effective_workers()).unwrap_or(u32::MAX);
    config.pooled_instances.max(workers)
}

/// Linear memory bytes reset in place (`memset`) when a slot is freed, instead of being
/// decommitted (`madvise`) and faulted in again by the next task; with Linux's `PAGEMAP_SCAN`
/// (6.7+) only pages the task dirtied are reset.
const MEMORY_KEEP_RESIDENT: usize = 1 << 20;

/// The pooling allocator's settings: `slots` instances, each with up to 2 memories and 4
/// tables of up to [`MAX_TABLE_ELEMENTS`] elements, so that modules that ran on the on-demand
/// allocator still fit (memory limits are the [`Limiter`]'s business, as before).
fn pooling(slots: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(slots)
        .total_memories(slots.saturating_mul(2))
        .max_memories_per_module(2)
        .total_tables(slots.saturating_mul(4))
        .max_tables_per_module(4)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_core_instance_size(16 << 20)
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto);
    pool
}

/// The engine, its linker and the ticker thread driving epoch interruption.
pub(crate) struct EngineHandle {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<Host>,
    pub(crate) fuel: bool,
    ticker: Ticker,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("fuel", &self.fuel)
            .field("ticker", &self.ticker)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// Builds the engine and linker and starts the ticker.
    pub(crate) fn new(config: &WasmtimeConfig) -> Result<Self, ExecError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        wasm.consume_fuel(config.enable_fuel);
        let on_demand = wasm.clone();
        let slots = pool_slots(config);
        if slots > 0 {
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(slots)));
        }
        let engine = match Engine::new(&wasm) {
            Ok(engine) => Ok(engine),
            // The pool reserves address space up front (4 GiB and a guard per memory slot),
            // which a `ulimit -v` may refuse: run without it then.
            Err(e) if slots > 0 => {
                tracing::warn!("no pooling allocator ({e:#}); allocating instances on demand");
                Engine::new(&on_demand)
            }
            Err(e) => Err(e),
        }
        .map_err(|e| ExecError::Host(format!("creating the wasmtime engine: {e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |host: &mut Host| &mut host.wasi)
            .map_err(|e| ExecError::Host(format!("linking wasi_snapshot_preview1: {e:#}")))?;
        wasmtime_wasi::p0::add_to_linker_sync(&mut linker, |host: &mut Host| &mut host.wasi)
            .map_err(|e| ExecError::Host(format!("linking wasi_unstable: {e:#}")))?;
        super::poll::add_to_linker(&mut linker)
            .map_err(|e| ExecError::Host(format!("linking poll_oneoff: {e:#}")))?;

        let ticker = Ticker::start(engine.clone(), config.epoch_tick)?;
        Ok(EngineHandle {
            engine,
            linker,
            fuel: config.enable_fuel,
            ticker,
        })
    }
}

/// A thread incrementing the engine's epoch every tick until dropped.
#[derive(Debug)]
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> Result<Self, ExecError> {
        let tick = tick.max(Duration::from_millis(1));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("wasimoff-epoch".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::park_timeout(tick);
                        engine.increment_epoch();
                    }
                }
            })
            .map_err(|e| ExecError::Host(format!("starting the epoch ticker: {e}")))?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_records_refusals() {
        let mut limiter = Limiter::new(Some(1 << 20));
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap_or(false));
        assert!(!limiter.refused());
        assert!(
            !limiter
                .memory_growing(1 << 20, 2 << 20, None)
                .unwrap_or(true)
        );
        assert!(limiter.refused());
        let mut unlimited = Limiter::new(None);
        assert!(
            unlimited
                .memory_growing(0, usize::MAX, None)
                .unwrap_or(false)
        );
    }
}

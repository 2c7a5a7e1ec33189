//! [`WasmtimeExecutor`]: runs WASI preview 1 tasks natively on wasmtime + wasmtime-wasi.
//!
//! One concept per file: [`config`] holds the plain-data [`WasmtimeConfig`]; `engine` builds
//! the wasmtime engine with epoch interruption, its ticker thread, the linker for both
//! `wasi_snapshot_preview1` and `wasi_unstable`, and the per-store data with its memory
//! limiter; `guard` is a task's deadline and cancellation, checked by the epoch callback and
//! waited on by host calls; `poll` links a `poll_oneoff` that waits on the guard, so a sleeping
//! guest stops at its deadline or cancel too; `cache` keeps compiled modules (with their `InstancePre`) in a bytes-bounded LRU in
//! memory and serialized on disk; `rootfs` unpacks a task's rootfs zip into a fresh temporary
//! directory with limits and collects artifacts back into a zip; `output` captures stdout and
//! stderr up to a cap, discarding the rest; `executor` ties it together and implements core's
//! [`Executor`](wasimoff_core::executor::Executor) trait. See `docs/executor.md` for the
//! behaviour in detail.

mod cache;
pub mod config;
mod engine;
mod executor;
mod guard;
mod output;
mod poll;
mod rootfs;

pub use cache::ExecutorStats;
pub use config::WasmtimeConfig;
pub use executor::WasmtimeExecutor;

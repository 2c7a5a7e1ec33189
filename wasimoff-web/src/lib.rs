//! wasimoff-web: the browser engine of wasimoff, for Rust apps that run WebAssembly (WASI
//! preview 1) tasks in browsers — the pieces of the `wasimoff` npm package (`wasimoff-js`)
//! without its JS API.
//!
//! - [`archive`]: zip archives packed from and unpacked into files (every target).
//! - [`memcap`]: memory caps, by lowering the maximum a module's memory declares (every target).
//! - `host` (wasm32): instantiates a guest through the JS `WebAssembly` API with the functions
//!   of the WASI host [`wasimoff_wasi`] as imports (`wasi_snapshot_preview1` and
//!   `wasi_unstable`).
//! - `executor` (wasm32): `BrowserExecutor`, core's `Executor` on the current thread.
//! - `pool` + `worker` (wasm32): `WorkerPool`, the `Executor` of the browser provider: one
//!   dedicated worker (or Node.js `worker_threads` worker) per running task, terminated on a
//!   cancel or a deadline. The workers import the final package's glue (`wasimoff.js` next to
//!   the snippets by default: `pool::PoolConfig::glue_url`) and call its `workerMain`
//!   export, which this crate defines.
//! - `watchdog` (wasm32, internal): the pool's kill deadlines on one timer.
//! - `store` (wasm32): `BrowserStore`, core's `Store` on OPFS (verified on read) or memory.
//! - `connector` (wasm32): `WebSysConnector`, the provider runtime's broker connection.
//! - `jsmsg` (wasm32): the messages between the pool and its workers, and small helpers to read
//!   and build JS objects.
//!
//! See `docs/browser.md`.

pub mod archive;
pub mod memcap;
/// The WASI preview 1 host (the `wasimoff-wasi` crate).
pub use wasimoff_wasi as wasi;

#[cfg(target_arch = "wasm32")]
pub mod connector;
#[cfg(target_arch = "wasm32")]
pub mod executor;
#[cfg(target_arch = "wasm32")]
pub mod host;
#[cfg(target_arch = "wasm32")]
pub mod jsmsg;
#[cfg(target_arch = "wasm32")]
pub mod pool;
#[cfg(target_arch = "wasm32")]
pub mod store;
#[cfg(target_arch = "wasm32")]
mod watchdog;
#[cfg(target_arch = "wasm32")]
pub mod worker;

#[cfg(target_arch = "wasm32")]
pub use connector::WebSysConnector;
#[cfg(target_arch = "wasm32")]
pub use executor::BrowserExecutor;
#[cfg(target_arch = "wasm32")]
pub use pool::WorkerPool;
#[cfg(target_arch = "wasm32")]
pub use store::{BrowserStore, BrowserStoreOptions};

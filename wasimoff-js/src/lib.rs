//! wasimoff-js: the browser side of wasimoff.
//!
//! - `host` (wasm32 only): instantiates a guest through the JS `WebAssembly` API with the
//!   functions of the WASI host [`wasimoff_wasi`] as imports (`wasi_snapshot_preview1` and
//!   `wasi_unstable`).
//! - `executor` (wasm32 only): `BrowserExecutor`, core's `Executor` on top of `host`.
//!
//! See `docs/browser.md`.

pub mod memcap;
/// The WASI preview 1 host (the `wasimoff-wasi` crate), re-exported under its old path.
pub use wasimoff_wasi as wasi;

#[cfg(target_arch = "wasm32")]
pub mod host;

#[cfg(target_arch = "wasm32")]
pub mod executor;
#[cfg(target_arch = "wasm32")]
pub use executor::BrowserExecutor;
#[cfg(target_arch = "wasm32")]
pub mod api;
#[cfg(target_arch = "wasm32")]
mod jsmsg;
#[cfg(target_arch = "wasm32")]
mod logging;
#[cfg(target_arch = "wasm32")]
pub mod pool;
#[cfg(target_arch = "wasm32")]
pub mod store;
#[cfg(target_arch = "wasm32")]
pub mod types;
#[cfg(target_arch = "wasm32")]
pub mod worker;

/// The README, checked as a doc test (its examples are JavaScript and shell).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

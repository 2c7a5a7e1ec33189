//! wasimoff-js: the JS API of the `wasimoff` npm package (built by wasm-pack), over the browser
//! engine of [`wasimoff_web`].
//!
//! - `api` (wasm32): the JS classes `Provider`, `Client` and `Executor` (docs/browser-api.md).
//! - `types` (wasm32): their TypeScript declarations, checked with `tsc` in CI.
//! - `logging` (wasm32): `tracing` to the console and to `"log"` listeners.
//!
//! The worker entry (`workerMain`) comes with [`wasimoff_web`]; the package exports it.

#[cfg(target_arch = "wasm32")]
pub mod api;
#[cfg(target_arch = "wasm32")]
mod logging;
#[cfg(target_arch = "wasm32")]
pub mod types;

/// The README, checked as a doc test (its examples are JavaScript and shell).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

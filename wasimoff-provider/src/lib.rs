//! The wasimoff provider: it takes offloaded tasks from a broker and runs them.
//!
//! Natively the [`wasmtime`] module (feature `wasmtime`, on by default) provides
//! [`WasmtimeExecutor`], an implementation of core's
//! [`Executor`](wasimoff_core::executor::Executor) trait for WASI preview 1 tasks on wasmtime.
//! Without that feature the crate builds for `wasm32-unknown-unknown`, where the browser brings
//! its own executor. Every executor passes the executor conformance suite, which lives with the
//! guest programs in the (unpublished) `wasimoff-wasi-apps` crate of the repository.

#[cfg(all(feature = "wasmtime", not(target_arch = "wasm32")))]
pub mod wasmtime;

#[cfg(all(feature = "wasmtime", not(target_arch = "wasm32")))]
pub use crate::wasmtime::{ExecutorStats, WasmtimeConfig, WasmtimeExecutor};

// The provider runtime: broker connection, requests, tasks, reconnects and drain (all targets).
pub mod runtime;

/// The README's example, compiled (and run where it needs no broker) as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

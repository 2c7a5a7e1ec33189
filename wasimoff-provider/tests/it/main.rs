//! Integration tests of the native provider: the executor conformance suite on
//! `WasmtimeExecutor` (`conformance`) and the wasmtime-specific behaviour (`wasmtime`: caches,
//! fuel, limits from the executor configuration, rootfs limits).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod conformance;
mod wasmtime;

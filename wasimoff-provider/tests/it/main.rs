//! Integration tests of the native provider: the executor conformance suite on
//! `WasmtimeExecutor` (`conformance`), the wasmtime-specific behaviour (`wasmtime`: caches,
//! fuel, limits from the executor configuration, rootfs limits) and guests stopped while they
//! wait in `poll_oneoff` (`waiting`), and the binary giving up on a broker that refuses it
//! (`binary`).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod binary;
mod conformance;
mod waiting;
mod wasmtime;

//! A WASI preview 1 host in plain Rust, independent of the engine.
//!
//! - [`abi`]: the constants, errnos, rights and struct layouts of preview 1 (and the
//!   `wasi_unstable` differences), and the table of functions with their signatures.
//! - [`fs`]: the guest's in-memory file system: rootfs zips unpacked into it (bounded), path
//!   resolution confined to the tree, artifacts zipped out of it.
//! - [`ctx`]: one guest's state ([`ctx::WasiCtx`]: argv, environment, stdio capture,
//!   descriptors, file system) and the system calls over a guest [`ctx::Memory`] and a
//!   [`ctx::Platform`] (clocks, randomness, sleeping).
//!
//! Nothing here depends on an engine or on JS, so it builds and is unit-tested on every target.
//! The browser provider (`wasimoff-js`) binds it to the JS `WebAssembly` API.
//!
//! ```
//! use wasimoff_wasi::{abi, ctx::WasiCtx, fs::Fs};
//!
//! let mut ctx = WasiCtx::new(vec!["hello.wasm".into()], vec![], Vec::new(), Fs::new(), 1 << 20);
//! let mut memory = vec![0u8; 64];
//! # struct Clock;
//! # impl wasimoff_wasi::ctx::Platform for Clock {
//! #     fn realtime_ns(&self) -> u64 { 0 }
//! #     fn monotonic_ns(&self) -> u64 { 0 }
//! #     fn resolution_ns(&self) -> u64 { 1 }
//! #     fn random(&self, buf: &mut [u8]) { buf.fill(4) }
//! #     fn sleep_ns(&self, _ns: u64) {}
//! # }
//! // args_sizes_get(argc_ptr = 0, buf_size_ptr = 4)
//! let func = wasimoff_wasi::ctx::function_index("args_sizes_get").unwrap();
//! let result = ctx.call(&Clock, &mut memory, func, &[0, 4], false);
//! assert_eq!(result, Ok(i32::from(abi::errno::SUCCESS)));
//! assert_eq!(memory[0], 1); // one argument
//! ```

pub mod abi;
pub mod ctx;
pub mod fs;

#[cfg(test)]
mod tests;

/// The README's example, checked as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! Integration tests of wasimoff-core: one binary, a module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod messenger;
#[cfg(feature = "conformance")]
mod mutations;
mod truncation;
mod vectors;
mod websocket;

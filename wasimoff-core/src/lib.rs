//! The core of wasimoff: the `wasimoff.v1` protocol and the traits every other crate builds on.
//!
//! - [`proto`]: the generated `wasimoff.v1` messages (prost + proto3 JSON via pbjson).
//! - [`envelope`]: typed envelopes, the payload enum and both wire codecs.
//! - [`messenger`]: request/response correlation and events over any [`transport::Transport`].
//! - [`transport`]: the `Transport` trait, an in-memory pair, and WebSocket transports behind the
//!   `native` and `web` features.
//! - [`remote`]: typed reasons for the error texts peers send (refusals, task failures).
//! - [`executor`], [`scheduler`], [`store`]: the traits that providers and brokers implement.
//! - [`platform`]: spawning, sleeping and `Send` bounds that differ between native and wasm32.
//! - `tls` (feature `rustls`, native only): the rustls client config native peers trust a
//!   broker with (webpki roots plus optional CA certificates, the ring provider).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bounds;
#[cfg(any(test, feature = "conformance"))]
pub mod decode_check;
pub mod envelope;
pub mod executor;
pub mod messenger;
pub mod platform;
pub mod proto;
pub mod remote;
pub mod scheduler;
pub mod store;
#[cfg(all(feature = "rustls", not(target_arch = "wasm32")))]
pub mod tls;
pub mod transport;
pub mod wkt;

/// The README's example, compiled (and run where it needs no broker) as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! The core of wasimoff: the `wasimoff.v1` protocol and the traits every other crate builds on.
pub mod envelope;
pub mod messenger;
pub mod platform;
pub mod proto;
pub mod transport;
pub mod wkt;

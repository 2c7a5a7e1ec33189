//! The core of wasimoff: the `wasimoff.v1` protocol and the traits every other crate builds on.
pub mod envelope;
pub mod proto;
pub mod wkt;

//! Generated wasimoff.v1 types.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]
include!(concat!(env!("OUT_DIR"), "/wasimoff.v1.rs"));
include!(concat!(env!("OUT_DIR"), "/wasimoff.v1.serde.rs"));

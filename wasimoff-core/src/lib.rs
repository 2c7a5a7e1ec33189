//! wasimoff-core
pub mod proto;

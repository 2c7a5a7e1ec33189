//! wasimoff-examples
//!
//! Besides the example binaries, this crate checks the repository README's Rust examples.

/// The repository README's usage examples, compiled (and run where they need no broker) as doc
/// tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

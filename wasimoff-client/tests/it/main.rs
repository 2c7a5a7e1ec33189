//! End-to-end tests of the `wasimoff` CLI and the client library against an in-process broker
//! with native (wasmtime) providers from `wasimoff-provider`.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

mod batch;
mod cli;
mod cluster;
mod curl;
mod durable;
mod library;
mod queue;
mod tls;
mod truncation;

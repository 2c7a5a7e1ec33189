//! The wasimoff client: offload WebAssembly (WASI preview 1) tasks to a wasimoff broker.
//!
//! - [`Client`]: upload modules and zips ([`Client::upload`]), run one task over Connect RPC
//!   ([`Client::run`]), query the broker ([`Client::status`], [`Client::health`]).
//! - [`Task`]: a typed builder for task requests (`args`, `env`, `stdin`, `rootfs`,
//!   `artifacts`, `deadline`, `priority`, `immediate`); [`Output`]: what a task produced.
//! - [`Client::submit_many`] / [`Session`] (native targets): many tasks in flight over one
//!   client WebSocket, results yielded as they complete, with a bound on tasks in flight;
//!   [`Session::map`] yields them in the order of the inputs; [`with_progress`] reports
//!   [`Progress`] after each result.
//! - [`Client::run_all`] (native targets): many tasks submitted by id and their results
//!   fetched by id, so that a broker restart (with durable task state) or a broken connection
//!   loses nothing: it reconnects and still yields every result exactly once.
//! - [`Error`]: typed errors that tell "queue full, retry later" from "bad request", "not
//!   found", "deadline", "unavailable", "provider failed", "unauthenticated", a failed task
//!   ([`TaskFailure`]: its kind and the output the guest wrote before it failed) and transport
//!   failures; [`RetryPolicy`] retries on a full queue when asked to.
//!
//! The library builds for `wasm32-unknown-unknown` too (over the browser's `fetch`), without
//! the WebSocket API. The `wasimoff` command-line tool lives in this crate behind the default
//! `cli` feature; `rustls` adds HTTPS.
//!
//! ```no_run
//! use wasimoff_client::{Client, Task};
//!
//! # async fn demo() -> Result<(), wasimoff_client::Error> {
//! let client = Client::new("http://localhost:4080")?;
//! client.upload(std::fs::read("hello.wasm").unwrap_or_default(), Some("hello.wasm")).await?;
//! let output = client
//!     .run(Task::wasip1("hello.wasm").args(["print_envs"]).env("GREETING", "hi"))
//!     .await?;
//! println!("exit {}: {}", output.status, output.stdout_lossy());
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(target_arch = "wasm32"))]
mod by_id;
mod client;
mod error;
#[cfg(not(target_arch = "wasm32"))]
mod stream;
mod task;

pub use client::{
    Client, ClientBuilder, DEFAULT_BROKER, Finished, ProviderInfo, RetryPolicy, Status,
};
pub use error::{Error, FailureKind, Result, TaskFailure};
#[cfg(not(target_arch = "wasm32"))]
pub use stream::{Progress, Session, TaskResult, with_progress};
pub use task::{Output, Source, Task};

/// Stops a task started with [`Session::run_with_cancel`] (tokio-util's token, re-exported).
#[cfg(not(target_arch = "wasm32"))]
pub use wasimoff_core::executor::CancellationToken;

/// The wasimoff protocol types (`wasimoff_core::proto`) and store refs, re-exported.
pub use wasimoff_core::{proto, store::Ref};

/// The README's example, compiled (and run where it needs no broker) as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! The provider runtime: everything between a broker connection and an
//! [`Executor`](wasimoff_core::executor::Executor), written against core's traits only so that
//! the native binary and the browser provider (wasm32) share it.
//!
//! A [`Provider`] dials the broker through a [`Connector`] (natively [`WebSocketConnector`]),
//! reports `Event.ProviderResources`, answers the filesystem requests from its
//! [`Store`](wasimoff_core::store::Store), runs `Task.Wasip1` requests on the executor up to its
//! concurrency (fetching missing files through a [`Fetcher`] and checking their hashes),
//! cancels tasks on `Task.Cancel` (answering once they have stopped), reconnects with backoff
//! (or stops, when the [`ConnectError`] is one retrying cannot fix) and drains on shutdown. Its state is observable as a [`ProviderStatus`] watch channel.
//!
//! One concept per file: [`config`] (settings and URLs), `status` (the status and slot count),
//! `connector`, `fetch`, `files` (resolving a task's files), `backoff`, `handler` (requests),
//! `task` (one WASI task) and `provider` (the connection loop and shutdown).

mod backoff;
pub mod config;
mod connector;
mod fetch;
mod files;
mod handler;
mod provider;
mod status;
mod task;

pub use config::{ConfigError, ProviderConfig};
#[cfg(not(target_arch = "wasm32"))]
pub use connector::WebSocketConnector;
pub use connector::{ConnectError, ConnectFailure, ConnectRequest, Connector};
pub use fetch::{FetchError, Fetcher, HttpFetcher};
pub use files::FileError;
pub use handler::PYODIDE_UNSUPPORTED;
pub use provider::{Provider, ProviderBuilder, ProviderError};
pub use status::{ConnectionState, ProviderStatus, TaskEvent};

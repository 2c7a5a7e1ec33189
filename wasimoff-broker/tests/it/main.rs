//! End-to-end tests of the broker in one process: broker on 127.0.0.1:0, fake providers built
//! from core's messenger, raw HTTP and WebSocket clients.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod support;

mod bad_input;
#[cfg(target_os = "linux")] // reads the broker child's memory from /proc
mod chaos;
mod dispatch;
mod durable;
mod hostile;
mod lifecycle;
mod native;
mod operator;
mod page;
mod routes;
mod storage;
mod tls;

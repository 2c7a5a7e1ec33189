//! Embed the broker in an axum service of your own: your routes, plus the whole broker nested
//! under `/wasimoff`.
//!
//! ```text
//! cargo run -p wasimoff-examples --bin embed_broker          # listens on 127.0.0.1:8080
//! curl http://127.0.0.1:8080/                                # your route
//! curl http://127.0.0.1:8080/wasimoff/api/status             # the broker's
//! wasimoff --broker http://127.0.0.1:8080/wasimoff status    # clients take the prefix as base
//! ```
//!
//! Providers connect to the full socket URL, `ws://127.0.0.1:8080/wasimoff/api/provider/ws`.
//! The address is `$LISTEN` (default `127.0.0.1:8080`); stop with Ctrl-C.
#![allow(
    clippy::print_stdout,
    reason = "an example program: it prints where it listens"
)]

use std::net::SocketAddr;

use axum::{Router, routing::get};
use wasimoff_broker::Broker;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::var("LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:8080".to_owned())
        .parse()?;

    // A broker with the default configuration (memory store); it is not spawned on its own
    // port, only its router is used.
    let broker = Broker::builder().build().await?;

    let app = Router::new()
        .route("/", get(|| async { "Hello from my own service!\n" }))
        .route("/health", get(|| async { "fine\n" }))
        .nest("/wasimoff", broker.router());

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("my service:  http://{}/", listener.local_addr()?);
    println!(
        "the broker:  http://{}/wasimoff/api/status",
        listener.local_addr()?
    );
    // Connect info lets the broker record client and provider addresses.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

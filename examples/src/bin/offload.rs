//! Offload one task: upload the `hello` guest and run it on a broker's providers.
//!
//! ```text
//! cargo run -p wasimoff-broker &                                  # a broker on :4080
//! cargo run -p wasimoff-provider -- --broker http://localhost:4080 &
//! cargo run -p wasimoff-examples --bin offload
//! ```
//!
//! The broker is `$WASIMOFF_BROKER` (default `http://localhost:4080`).
#![allow(
    clippy::print_stdout,
    reason = "an example program: it prints its result"
)]

use wasimoff_client::{Client, DEFAULT_BROKER, Task};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let broker = std::env::var("WASIMOFF_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.to_owned());
    let client = Client::new(broker)?;

    // Store the module once under an alias; tasks then name it instead of carrying the bytes.
    let r = client
        .upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm"))
        .await?;
    println!("uploaded hello.wasm as {r}");

    let output = client
        .run(
            Task::wasip1("hello.wasm")
                .args(["print_envs", "stdin"])
                .env("GREETING", "hello from offload.rs")
                .stdin("this came in on stdin\n"),
        )
        .await?;
    println!(
        "--- exit status {} on provider {} ---",
        output.status,
        output.provider.as_deref().unwrap_or("?")
    );
    print!("{}", output.stdout_lossy());
    Ok(())
}

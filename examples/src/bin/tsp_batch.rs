//! Run many travelling-salesman tasks (`tsp rand 8`) through the streaming API and print how
//! many finished and the shortest tour found.
//!
//! ```text
//! cargo run --release -p wasimoff-examples --bin tsp_batch -- [N] [IN_FLIGHT]
//! ```
//!
//! `N` tasks (default 1000), at most `IN_FLIGHT` at once (default 64), on the broker at
//! `$WASIMOFF_BROKER` (default `http://localhost:4080`), which needs at least one provider.
#![allow(
    clippy::print_stdout,
    reason = "an example program: it prints its result"
)]

use std::time::Instant;

use futures::StreamExt;
use wasimoff_client::{Client, DEFAULT_BROKER, Task};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let in_flight: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let broker = std::env::var("WASIMOFF_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.to_owned());
    let client = Client::new(broker)?;
    client
        .upload(wasimoff_wasi_apps::TSP, Some("tsp.wasm"))
        .await?;

    let started = Instant::now();
    // Tasks are created lazily: only `in_flight` exist at any time.
    let tasks = (0..n).map(|_| Task::wasip1("tsp.wasm").args(["rand", "8"]));
    let mut results = client.submit_many(tasks, in_flight);
    let (mut done, mut failed) = (0usize, 0usize);
    let mut shortest: Option<(f64, usize)> = None;
    while let Some((index, result)) = results.next().await {
        match result {
            Ok(output) if output.success() => {
                done += 1;
                let distance = output
                    .stdout_lossy()
                    .trim()
                    .strip_prefix("distance = ")
                    .and_then(|d| d.parse::<f64>().ok());
                if let Some(d) = distance
                    && shortest.is_none_or(|(best, _)| d < best)
                {
                    shortest = Some((d, index));
                }
            }
            Ok(output) => {
                failed += 1;
                eprintln!(
                    "task {index} exited {}: {}",
                    output.status,
                    output.stderr_lossy()
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("task {index} failed: {e}");
            }
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{done} of {n} tasks done, {failed} failed, in {:.2} s ({:.0} tasks/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    match shortest {
        Some((distance, index)) => println!("shortest tour: {distance:.3} (task {index})"),
        None => println!("no tour found"),
    }
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

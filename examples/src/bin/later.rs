//! The client's batch tools: results in input order with a progress callback
//! (`Session::map` + `with_progress`), a task submitted now and fetched later by id
//! (`Client::submit` / `Client::result` / `Client::wait`), and one cancelled by id
//! (`Client::cancel`), with a failed task's kept output.
//!
//! ```text
//! cargo run -p wasimoff-examples --bin later
//! ```
//!
//! Uses the broker at `$WASIMOFF_BROKER` (default `http://localhost:4080`), which needs at
//! least one provider.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "an example program: it prints what happens"
)]

use std::time::Duration;

use futures::StreamExt;
use wasimoff_client::{Client, DEFAULT_BROKER, Error, Task, with_progress};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let broker = std::env::var("WASIMOFF_BROKER").unwrap_or_else(|_| DEFAULT_BROKER.to_owned());
    let client = Client::new(broker)?;
    client
        .upload(wasimoff_wasi_apps::TSP, Some("tsp.wasm"))
        .await?;
    client
        .upload(wasimoff_wasi_apps::HELLO, Some("hello.wasm"))
        .await?;

    // 1. One task per seed, results in seed order, with progress on stderr.
    let session = client.session().await?;
    let seeds: Vec<u32> = (1..=20).collect();
    let results = session.map(seeds.clone(), 8, |seed| {
        Task::wasip1("tsp.wasm").args(["rand".to_owned(), "8".to_owned(), seed.to_string()])
    });
    let results: Vec<_> = with_progress(results, Some(seeds.len()), |p| {
        if p.done % 5 == 0 {
            eprintln!(
                "  {}/{} done, {} failed",
                p.done,
                p.total.unwrap_or(0),
                p.failed
            );
        }
    })
    .collect()
    .await;
    for (seed, result) in seeds.iter().zip(&results) {
        match result {
            Ok(output) => println!("seed {seed:>2}: {}", output.stdout_lossy().trim()),
            Err(e) => println!("seed {seed:>2}: failed: {e}"),
        }
    }

    // 2. Submit now, fetch later: the id is all a client needs to come back.
    let id = client
        .submit(Task::wasip1("tsp.wasm").args(["rand", "9", "7"]))
        .await?;
    println!("submitted {id}");
    let output = client.wait(&id).await?;
    println!("{id}: {}", output.stdout_lossy().trim());

    // 3. Cancel one that takes too long.
    let id = client
        .submit(Task::wasip1("hello.wasm").arg("sleep:60000"))
        .await?;
    if client
        .result(&id, Duration::from_millis(500))
        .await?
        .is_none()
    {
        client.cancel(&id).await?;
    }
    match client.wait(&id).await {
        Err(e) => println!("{id}: {} ({})", e, e.code()),
        Ok(output) => println!("{id}: finished anyway: {}", output.stdout_lossy()),
    }

    // 4. A failed task keeps what it wrote.
    if let Err(Error::Task(failure)) = client.run(Task::wasip1("hello.wasm").arg("trap")).await {
        println!(
            "trap ({}): {}; its stdout was {:?}",
            failure.kind,
            failure.reason(),
            failure
                .output
                .stdout_lossy()
                .lines()
                .next()
                .unwrap_or_default()
        );
    }
    Ok(())
}

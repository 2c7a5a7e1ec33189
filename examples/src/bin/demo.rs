//! The wasimoff demo: a broker, a native provider and a client in one process.
//!
//! ```text
//! cargo run --release -p wasimoff-examples --bin demo
//! ```
//!
//! It starts a broker on `127.0.0.1:0` (memory store), a provider with the wasmtime executor,
//! uploads the `hello` and `tsp` guests, runs a `hello` task with arguments, environment and
//! stdin, shows how exit codes and traps come back, runs a batch of `tsp rand 9` tasks through
//! the streaming API, and shuts everything down. Set `DEMO_TASKS` to change the batch size
//! (default 50).
#![allow(
    clippy::print_stdout,
    reason = "a demo program: it prints what it does"
)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt;
use wasimoff_broker::{Broker, BrokerConfig};
use wasimoff_client::{Client, Error, Task};
use wasimoff_provider::{
    WasmtimeConfig, WasmtimeExecutor,
    runtime::{Provider, ProviderConfig},
};

/// Prints a step: a label, what happened, how long it took.
fn step(label: &str, what: impl std::fmt::Display, took: Duration) {
    println!("  {label:<9} {what}  ({})", ms(took));
}

fn ms(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("            │ {l}\n"))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let total = Instant::now();
    let batch: usize = match std::env::var("DEMO_TASKS") {
        Ok(n) => n.parse().context("DEMO_TASKS must be a number")?,
        Err(_) => 50,
    };
    println!("wasimoff demo: a broker, a provider and a client in one process\n");

    // 1. The broker, on a free port, with its default in-memory store.
    let t = Instant::now();
    let broker = Broker::builder()
        .config(BrokerConfig {
            listen: "127.0.0.1:0".parse()?,
            ..BrokerConfig::default()
        })
        .build()
        .await?
        .spawn()
        .await?;
    let url = format!("http://{}", broker.local_addr());
    step(
        "broker",
        format!("listening on {url} (memory store)"),
        t.elapsed(),
    );

    // 2. A native provider: the provider runtime around the wasmtime executor.
    let t = Instant::now();
    let executor = WasmtimeExecutor::new(WasmtimeConfig::default())?;
    let config = ProviderConfig {
        name: "demo-provider".into(),
        ..ProviderConfig::new(url.clone())
    };
    let provider = Provider::builder(config, Arc::new(executor)).build()?;
    let runner = provider.clone();
    let running = tokio::spawn(async move { runner.run().await });
    let client = Client::new(&url)?;
    let status = loop {
        let status = client.status().await?;
        if status.providers >= 1 && status.slots() > 0 {
            break status;
        }
        if t.elapsed() > Duration::from_secs(20) {
            anyhow::bail!("the provider did not connect within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    step(
        "provider",
        format!(
            "\"demo-provider\" connected with {} slots (wasmtime workers + prefetch)",
            status.slots()
        ),
        t.elapsed(),
    );

    // 3. Upload the guests under aliases.
    for (alias, bytes) in [
        ("hello.wasm", wasimoff_wasi_apps::HELLO),
        ("tsp.wasm", wasimoff_wasi_apps::TSP),
    ] {
        let t = Instant::now();
        let r = client.upload(bytes, Some(alias)).await?;
        let short = &r.as_str()[..19];
        step(
            "upload",
            format!("{alias:<10} {short}…  {} KiB", bytes.len() / 1024),
            t.elapsed(),
        );
    }

    // 4. One task with arguments, environment and stdin, over Connect RPC.
    println!();
    let t = Instant::now();
    let output = client
        .run(
            Task::wasip1("hello.wasm")
                .args(["print_envs", "stdin"])
                .env("GREETING", "hello from the demo")
                .env("LANG", "C")
                .stdin("and this line came in on stdin\n")
                .reference("demo-hello"),
        )
        .await?;
    step(
        "hello",
        format!(
            "hello.wasm print_envs stdin → exit {} on {}",
            output.status,
            output.provider.as_deref().unwrap_or("?")
        ),
        t.elapsed(),
    );
    print!("{}", indent(&output.stdout_lossy()));

    // 5. Exit codes are results; traps are errors.
    let t = Instant::now();
    let exit = client.run(Task::wasip1("hello.wasm").arg("exit:3")).await?;
    step(
        "exit",
        format!("hello.wasm exit:3 → exit status {}", exit.status),
        t.elapsed(),
    );
    let t = Instant::now();
    match client.run(Task::wasip1("hello.wasm").arg("trap")).await {
        Err(Error::Task(failure)) => {
            let kept = failure.output.stdout.len() + failure.output.stderr.len();
            step(
                "trap",
                format!(
                    "hello.wasm trap → task failed ({}): {}; {kept} bytes of its output kept",
                    failure.kind,
                    failure.reason()
                ),
                t.elapsed(),
            );
        }
        other => anyhow::bail!("expected a trap, got {other:?}"),
    }

    // 6. A batch over the client WebSocket: many tasks in flight, results as they complete.
    println!();
    let in_flight = (status.slots() as usize * 2).max(2);
    println!(
        "  batch     {batch} × tsp rand 9 (8! = 40320 tours each), {in_flight} in flight over one WebSocket"
    );
    let t = Instant::now();
    let tasks = (0..batch).map(|i| {
        Task::wasip1("tsp.wasm")
            .args(["rand", "9"])
            .reference(format!("tsp-{i}"))
    });
    let mut results = client.submit_many(tasks, in_flight);
    let (mut ok, mut failed, mut done) = (0usize, 0usize, 0usize);
    let mut distances = Vec::new();
    let mut providers = std::collections::BTreeMap::<String, usize>::new();
    while let Some((index, result)) = results.next().await {
        done += 1;
        match result {
            Ok(output) if output.success() => {
                ok += 1;
                *providers
                    .entry(output.provider.clone().unwrap_or_default())
                    .or_default() += 1;
                if let Some(d) = output
                    .stdout_lossy()
                    .trim()
                    .strip_prefix("distance = ")
                    .and_then(|d| d.parse::<f64>().ok())
                {
                    distances.push((d, index));
                }
            }
            Ok(output) => {
                failed += 1;
                println!("            task {index} exited {}", output.status);
            }
            Err(e) => {
                failed += 1;
                println!("            task {index} failed: {e}");
            }
        }
        if done % (batch / 5).max(1) == 0 || done == batch {
            println!(
                "            {done:>4}/{batch} done after {}",
                ms(t.elapsed())
            );
        }
    }
    let elapsed = t.elapsed();
    distances.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "            {ok} ok, {failed} failed in {} ({:.1} tasks/s)",
        ms(elapsed),
        batch as f64 / elapsed.as_secs_f64()
    );
    if let (Some(best), Some(worst)) = (distances.first(), distances.last()) {
        println!(
            "            shortest tour {:.2} (task {}), longest {:.2} (task {})",
            best.0, best.1, worst.0, worst.1
        );
    }
    for (name, n) in &providers {
        println!("            {n} tasks ran on {name}");
    }

    // 7. The broker's view, then shut down: drain the provider, stop the broker.
    println!();
    let status = client.status().await?;
    println!(
        "  status    providers {}, slots {}, queued {}, running {}, scheduler {}",
        status.providers,
        status.slots(),
        status.queued,
        status.running,
        status.scheduler
    );
    let t = Instant::now();
    provider.shutdown(Duration::from_secs(5)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
    broker.shutdown().await;
    step("shutdown", "provider drained, broker stopped", t.elapsed());
    println!("\ndone in {}", ms(total.elapsed()));
    if failed > 0 {
        anyhow::bail!("{failed} batch tasks failed");
    }
    Ok(())
}

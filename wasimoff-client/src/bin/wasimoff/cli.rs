//! The native command-line tool; see the binary's documentation in `main.rs`.
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool: results go to stdout"
)]

mod archive;
mod batch;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wasimoff_client::{Client, DEFAULT_BROKER, Error, Output, RetryPolicy};

/// The exit codes of `wasimoff` (besides a task's own status, which `run` passes on).
pub(crate) mod exit {
    /// Some tasks of `task`/`batch` failed, or a local error (unreadable file, bad URL,
    /// unreachable broker, broker error).
    pub(crate) const FAILURE: u8 = 1;
    /// Bad command-line usage (clap's code) or a request the broker rejected as invalid.
    pub(crate) const USAGE: u8 = 2;
    /// `run`: the task exited 0 but the provider cut its stdout or stderr at its output cap,
    /// so what was printed is incomplete (a warning says which stream). `EX_IOERR`. A task that
    /// exited non-zero keeps its own status; `--allow-truncated` keeps 0.
    pub(crate) const OUTPUT_TRUNCATED: u8 = 74;
    /// The broker's queue is full: try again later (or pass `--retry`). `EX_TEMPFAIL`.
    pub(crate) const QUEUE_FULL: u8 = 75;
    /// `run`: the task did not finish normally (trap, resource limit, provider failure,
    /// deadline); the error is printed on stderr. 128 + SIGABRT, as `wasmtime run` on a trap.
    pub(crate) const TASK_FAILED: u8 = 134;
}

/// Offload WebAssembly (WASI preview 1) tasks to a wasimoff broker.
#[derive(Debug, Parser)]
#[command(name = "wasimoff", version, about, long_about = None)]
pub(crate) struct Cli {
    /// The broker's URL.
    #[arg(long, short = 'b', global = true, env = "WASIMOFF_BROKER", default_value = DEFAULT_BROKER)]
    broker: String,
    /// A client token, for brokers that require one.
    #[arg(long, global = true, env = "WASIMOFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Retry with backoff when the broker's queue is full (HTTP 429), instead of failing.
    #[arg(long, global = true)]
    retry: bool,
    /// Do not fail when a provider cut a task's stdout or stderr at its output cap (the warning
    /// is still printed).
    #[arg(long, global = true)]
    allow_truncated: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload a module (.wasm) or zip archive; prints its `sha256:` ref.
    Upload {
        /// The file to upload.
        file: std::path::PathBuf,
        /// An alias that tasks can use instead of the ref.
        #[arg(long, short = 'n')]
        name: Option<String>,
    },
    /// Run one task, like `wasmtime run`: stdout and stderr are passed on, and the task's exit
    /// status becomes wasimoff's.
    Run(run::RunArgs),
    /// Run tasks from JSON files (proto3 JSON of `wasimoff.v1.Task.Wasip1.Request`; a file holds
    /// one object, an array, or JSON lines); prints one JSON line per result.
    Task(batch::TaskArgs),
    /// Run many tasks (JSON lines, or a template with a range); prints one JSON line per
    /// result, a progress bar and a summary on stderr.
    Batch(batch::BatchArgs),
    /// Show the broker's health, providers, workers and queue.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wasimoff: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("wasimoff: {e}");
            ExitCode::from(error_code(&e))
        }
    }
}

/// The exit code for an error that stops the command.
pub(crate) fn error_code(e: &Error) -> u8 {
    match e {
        Error::QueueFull { .. } => exit::QUEUE_FULL,
        Error::BadRequest(_) => exit::USAGE,
        Error::Task(_) | Error::ProviderFailed(_) | Error::DeadlineExceeded(_) => exit::TASK_FAILED,
        _ => exit::FAILURE,
    }
}

/// The warning for a task whose output a provider cut, one line per stream; `None` if nothing
/// was cut.
pub(crate) fn truncation_warning(output: &Output) -> Option<String> {
    let line = |name: &str, kept: usize| {
        format!(
            "wasimoff: warning: {name} was truncated at the provider's output limit: only its \
             first {kept} bytes were returned, the task wrote more"
        )
    };
    let mut lines = Vec::new();
    if output.stdout_truncated {
        lines.push(line("stdout", output.stdout.len()));
    }
    if output.stderr_truncated {
        lines.push(line("stderr", output.stderr.len()));
    }
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn client(cli: &Cli) -> Result<Client, Error> {
    let mut builder = Client::builder(&cli.broker);
    if let Some(token) = &cli.token {
        builder = builder.token(token);
    }
    if cli.retry {
        builder = builder.retry(RetryPolicy::queue_full());
    }
    builder.build()
}

async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let client = client(&cli)?;
    match cli.command {
        Command::Upload { file, name } => {
            let r = client.upload_file(&file, name.as_deref()).await?;
            println!("{r}");
            Ok(0)
        }
        Command::Run(args) => run::run(&client, args, cli.allow_truncated).await,
        Command::Task(args) => batch::task(&client, args, cli.allow_truncated).await,
        Command::Batch(args) => batch::batch(&client, args, cli.allow_truncated).await,
        Command::Status { json } => status(&client, json).await,
    }
}

async fn status(client: &Client, json: bool) -> Result<u8, Error> {
    let health = client.health().await;
    let status = client.status().await?;
    if json {
        let value = serde_json::json!({
            "broker": client.url(),
            "healthy": health.is_ok(),
            "providers": status.providers,
            "workers": status.workers,
            "queued": status.queued,
            "running": status.running,
            "scheduler": status.scheduler,
        });
        println!("{value}");
    } else {
        let healthy = match &health {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("failing ({e})"),
        };
        println!("broker     {}", client.url());
        println!("health     {healthy}");
        println!("providers  {}", status.providers);
        println!("workers    {}", status.workers);
        println!("queued     {}", status.queued);
        println!("running    {}", status.running);
        println!("scheduler  {}", status.scheduler);
    }
    Ok(if health.is_ok() { 0 } else { exit::FAILURE })
}

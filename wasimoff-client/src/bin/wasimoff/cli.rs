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
    /// The setup is wrong and retrying cannot help: TLS failed (untrusted certificate, no TLS
    /// on that port), the token was refused (401, 403), or the URL has no broker API (404).
    /// `EX_CONFIG`. The message on stderr says what to check.
    pub(crate) const CONFIG: u8 = 78;
    /// `run`: the task did not finish normally (trap, resource limit, provider failure,
    /// deadline); the error is printed on stderr. 128 + SIGABRT, as `wasmtime run` on a trap.
    pub(crate) const TASK_FAILED: u8 = 134;
}

/// Offload WebAssembly (WASI preview 1) tasks to a wasimoff broker.
#[derive(Debug, Parser)]
#[command(name = "wasimoff", version, about, long_about = None)]
pub(crate) struct Cli {
    /// The broker's URL; or, comma-separated, the brokers of a cluster (brokers that share NATS
    /// JetStream): `run`, `task` and `batch` submit to them in turn and go on at another when
    /// one cannot be reached, the other commands use the first.
    #[arg(long, short = 'b', global = true, env = "WASIMOFF_BROKER", default_value = DEFAULT_BROKER)]
    broker: String,
    /// A client token, for brokers that require one.
    #[arg(long, global = true, env = "WASIMOFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Also trust the CA certificate(s) in this PEM file for https:// and wss://: for a broker
    /// with a self-signed certificate or one from a private CA (public CAs are always trusted).
    #[arg(long, global = true, env = "WASIMOFF_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// Retry with backoff when the broker's queue is full (HTTP 429), instead of failing.
    #[arg(long, global = true)]
    retry: bool,
    /// Do not fail when a provider cut a task's stdout or stderr at its output cap (the warning
    /// is still printed).
    #[arg(long, global = true)]
    allow_truncated: bool,
    /// `task` and `batch`: how long to keep reconnecting to a broker that went away (it
    /// restarts, or the network broke) before the unfinished tasks fail. A broker with a data
    /// directory keeps the accepted tasks meanwhile and the batch goes on where it was.
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = 300)]
    reconnect_for: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Upload a module (.wasm) or zip archive under its file name; prints its `sha256:` ref.
    Upload {
        /// The file to upload.
        file: std::path::PathBuf,
        /// The alias that tasks can use instead of the ref (default: the file's name).
        #[arg(long, short = 'n', conflicts_with = "no_name")]
        name: Option<String>,
        /// Store the file under its ref only, without an alias.
        #[arg(long)]
        no_name: bool,
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
    /// Show the broker's health, slots (workers + prefetch), queue and providers.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the providers connected to the broker: kind, slots, running, done, failed, last
    /// seen.
    Providers {
        /// Print the broker's list as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let setup = Setup {
        broker: cli.broker.clone(),
        token: cli.token.as_deref().is_some_and(|t| !t.is_empty()),
        ca_cert: cli.ca_cert.clone(),
    };
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
            match advice(&e, &setup) {
                Some(advice) => eprintln!("wasimoff: {e}; {advice}"),
                None => eprintln!("wasimoff: {e}"),
            }
            ExitCode::from(error_code(&e))
        }
    }
}

/// What the command line said about reaching the broker, for the advice on setup errors.
#[derive(Debug)]
pub(crate) struct Setup {
    broker: String,
    token: bool,
    ca_cert: Option<std::path::PathBuf>,
}

/// What to check after a [permanent](Error::is_permanent) error: the flags involved.
pub(crate) fn advice(e: &Error, setup: &Setup) -> Option<String> {
    let broker = &setup.broker;
    Some(match e {
        Error::Tls(text) if text.contains("lacks") => {
            "rebuild wasimoff with its default `rustls` feature, or use http://".to_owned()
        }
        Error::Tls(text) if text.contains("CaUsedAsEndEntity") => {
            "the broker's certificate is a CA certificate (basicConstraints CA:TRUE), which is \
             refused as a server's own: make it with CA:FALSE (openssl req -x509 ... -addext \
             basicConstraints=critical,CA:FALSE), or sign a server certificate with that CA and \
             pass the CA with --ca-cert"
                .to_owned()
        }
        Error::Tls(_) => {
            let trust = match &setup.ca_cert {
                Some(file) => format!(
                    "check that --ca-cert {} holds the CA that signed the broker's certificate \
                     (or that certificate itself, if it is self-signed)",
                    file.display()
                ),
                None => "if the broker's certificate is self-signed or from a private CA, pass \
                         that certificate with --ca-cert FILE (or WASIMOFF_CA_CERT)"
                    .to_owned(),
            };
            format!(
                "{trust}; also check that the host in --broker {broker} is a name the \
                 certificate is valid for, and that the broker serves TLS on that port"
            )
        }
        Error::Unauthenticated(_) if setup.token => {
            "check --token (or WASIMOFF_TOKEN): it must be one of the broker's client tokens \
             (a 403 on an alias: the alias belongs to another token)"
                .to_owned()
        }
        Error::Unauthenticated(_) => {
            "the broker requires a client token: pass --token TOKEN (or WASIMOFF_TOKEN)".to_owned()
        }
        Error::EndpointNotFound(_) => format!(
            "check --broker {broker} (or WASIMOFF_BROKER): the scheme, host and port of the \
             broker, plus the path prefix if it is mounted under one"
        ),
        _ => return None,
    })
}

/// The exit code for an error that stops the command.
pub(crate) fn error_code(e: &Error) -> u8 {
    match e {
        e if e.is_permanent() => exit::CONFIG,
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

/// Warns on stderr when no provider is connected to the broker: the tasks about to be sent
/// would wait in the queue, silently, until one connects or the broker gives up on them.
/// Anything but a clear "no provider" (an error, a broker that hides its status, a broker that
/// shares its tasks with others, whose providers may run them) says nothing.
pub(crate) async fn warn_if_no_provider(client: &Client) {
    if let Ok(status) = client.status().await
        && status.providers == 0
        && !status.shared
    {
        eprintln!(
            "wasimoff: warning: no provider is connected to {}; tasks wait in its queue until \
             one connects (open its page in a browser, or start wasimoff-provider)",
            client.url()
        );
    }
}

fn client(cli: &Cli) -> Result<Client, Error> {
    let mut brokers = cli
        .broker
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty());
    let mut builder = Client::builder(brokers.next().unwrap_or(DEFAULT_BROKER));
    for other in brokers {
        builder = builder.also_broker(other);
    }
    if let Some(token) = &cli.token {
        builder = builder.token(token);
    }
    if cli.retry {
        builder = builder.retry(RetryPolicy::queue_full());
    }
    builder = builder.reconnect_for(std::time::Duration::from_secs(cli.reconnect_for));
    if let Some(file) = &cli.ca_cert {
        let pem = std::fs::read(file)
            .map_err(|e| Error::Local(format!("cannot read --ca-cert {}: {e}", file.display())))?;
        builder = builder.add_root_certificate(pem);
    }
    builder.build().map_err(|e| match (&cli.ca_cert, e) {
        (Some(file), Error::Local(text)) if text.starts_with("invalid CA certificate") => {
            Error::Local(format!("--ca-cert {}: {text}", file.display()))
        }
        (_, e) => e,
    })
}

async fn dispatch(cli: Cli) -> Result<u8, Error> {
    let client = client(&cli)?;
    match cli.command {
        Command::Upload {
            file,
            name,
            no_name,
        } => {
            // As the original's CLI: the file's name is the alias unless told otherwise.
            let name = match (name, no_name) {
                (_, true) => None,
                (Some(name), false) => Some(name),
                (None, false) => file.file_name().and_then(|n| n.to_str()).map(str::to_owned),
            };
            let r = client.upload_file(&file, name.as_deref()).await?;
            println!("{r}");
            if let Some(name) = name {
                eprintln!("wasimoff: stored as {name}");
            }
            Ok(0)
        }
        Command::Run(args) => run::run(&client, args, cli.allow_truncated).await,
        Command::Task(args) => batch::task(&client, args, cli.allow_truncated).await,
        Command::Batch(args) => batch::batch(&client, args, cli.allow_truncated).await,
        Command::Status { json } => status(&client, json).await,
        Command::Providers { json } => providers(&client, json).await,
    }
}

async fn providers(client: &Client, json: bool) -> Result<u8, Error> {
    let providers = client.providers().await?;
    if json {
        let text =
            serde_json::to_string(&providers).map_err(|e| Error::InvalidResponse(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", provider_table(&providers, now_millis()));
    }
    Ok(0)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The providers as a table, one line each (a line saying so when there are none).
fn provider_table(providers: &[wasimoff_client::ProviderInfo], now: i64) -> String {
    if providers.is_empty() {
        return "no providers connected\n".to_owned();
    }
    let dash = |v: Option<u32>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut rows = vec![
        [
            "NAME",
            "KIND",
            "WORKERS",
            "PREFETCH",
            "SLOTS",
            "RUNNING",
            "DONE",
            "FAILED",
            "LAST SEEN",
        ]
        .map(str::to_owned),
    ];
    for p in providers {
        let seen = (now - p.last_seen).max(0) / 1000;
        rows.push([
            p.name.clone(),
            p.kind.clone(),
            dash(p.workers),
            dash(p.prefetch),
            if p.backed_off {
                format!("{} (backed off)", p.slots)
            } else {
                p.slots.to_string()
            },
            p.running.to_string(),
            p.done.to_string(),
            p.failed.to_string(),
            format!("{seen}s ago"),
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

async fn status(client: &Client, json: bool) -> Result<u8, Error> {
    let health = client.health().await;
    if let Err(e) = &health
        && e.is_permanent()
    {
        return Err(e.clone());
    }
    let status = client.status().await?;
    // A broker without the provider list (older) still has its status.
    let providers = client.providers().await.ok();
    // Workers and prefetch apart, when every provider that offers slots tells them.
    let (workers, prefetch) = providers
        .as_deref()
        .and_then(|list| {
            list.iter()
                .filter(|p| p.slots > 0)
                .try_fold((0u64, 0u64), |(w, f), p| {
                    Some((w + u64::from(p.workers?), f + u64::from(p.prefetch?)))
                })
        })
        .filter(|_| status.slots() > 0)
        .unzip();
    if json {
        let value = serde_json::json!({
            "broker": client.url(),
            "healthy": health.is_ok(),
            "providers": status.providers,
            "slots": status.slots(),
            "workers": workers,
            "prefetch": prefetch,
            "queued": status.queued,
            "running": status.running,
            "scheduler": status.scheduler,
            "provider_list": providers,
        });
        println!("{value}");
    } else {
        let healthy = match &health {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("failing ({e})"),
        };
        let apart = match (workers, prefetch) {
            (Some(w), Some(p)) => format!(" ({w} workers + {p} prefetch)"),
            _ => " (workers + prefetch)".to_owned(),
        };
        println!("broker     {}", client.url());
        println!("health     {healthy}");
        println!("providers  {}", status.providers);
        println!("slots      {}{apart}", status.slots());
        println!("queued     {}", status.queued);
        println!("running    {}", status.running);
        println!("scheduler  {}", status.scheduler);
        if let Some(providers) = providers.filter(|p| !p.is_empty()) {
            println!();
            print!("{}", provider_table(&providers, now_millis()));
        }
    }
    Ok(if health.is_ok() { 0 } else { exit::FAILURE })
}

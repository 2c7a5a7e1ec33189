//! `wasimoff task` and `wasimoff batch`: many tasks by id (`Client::run_all`, which reconnects
//! through a broker restart) or, on brokers without that API, over the client WebSocket; one
//! JSON line per result on stdout.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use base64::Engine as _;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use wasimoff_client::{Client, Error, Output, Session, Task};

use super::exit;

#[derive(Debug, clap::Args)]
pub(crate) struct TaskArgs {
    /// Task files: proto3 JSON of `wasimoff.v1.Task.Wasip1.Request` (with or without
    /// `"@type"`); one object, an array, or JSON lines per file; `-` reads stdin.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Tasks in flight at once.
    #[arg(long, short = 'j', default_value_t = 32)]
    concurrency: usize,
    /// Include the artifacts zip (base64) in the JSON results.
    #[arg(long)]
    with_artifacts: bool,
}

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["file", "template"]))]
pub(crate) struct BatchArgs {
    /// Tasks as JSON lines (or arrays), `-` for stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// One task (a JSON file) run once per number of `--range`; `{}` and `{i}` in its strings
    /// (args, envs, reference, ...) are replaced by the number.
    #[arg(long, short = 't', requires = "range")]
    template: Option<PathBuf>,
    /// The numbers for `--template`: `A..B` (B excluded), `A..=B`, or `N` (0..N).
    #[arg(long, short = 'r', value_parser = parse_range)]
    range: Option<(u64, u64)>,
    /// Tasks in flight at once.
    #[arg(long, short = 'j', default_value_t = 64)]
    concurrency: usize,
    /// Show progress even when stderr is not a terminal: there, one plain line every few
    /// seconds and at each tenth of the tasks (a bar on a terminal).
    #[arg(long, conflicts_with = "no_progress")]
    progress: bool,
    /// Never show the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Include the artifacts zip (base64) in the JSON results.
    #[arg(long)]
    with_artifacts: bool,
}

/// `A..B`, `A..=B` or `N`, as a half-open range `(start, end)`.
fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|e| format!("{s:?} is not a number: {e}"))
    };
    let (start, end) = if let Some((a, b)) = text.split_once("..=") {
        (number(a)?, number(b)?.saturating_add(1))
    } else if let Some((a, b)) = text.split_once("..") {
        (number(a)?, number(b)?)
    } else {
        (0, number(text)?)
    };
    if end < start {
        return Err(format!("the range {text} is empty backwards"));
    }
    Ok((start, end))
}

fn read_text(path: &Path) -> Result<String, Error> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::Local(format!("cannot read stdin: {e}")));
    }
    std::fs::read_to_string(path)
        .map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))
}

/// The JSON values of a file: one object, an array of them, or several (JSON lines).
fn json_values(path: &Path) -> Result<Vec<Value>, Error> {
    let text = read_text(path)?;
    let mut values = Vec::new();
    for value in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        match value.map_err(|e| Error::Local(format!("{}: {e}", path.display())))? {
            Value::Array(items) => values.extend(items),
            value => values.push(value),
        }
    }
    Ok(values)
}

fn tasks_of(path: &Path) -> Result<Vec<Task>, Error> {
    json_values(path)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            Task::from_json_value(value)
                .map_err(|e| Error::Local(format!("{} (task {}): {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Replaces `{}` and `{i}` in every string of a JSON value.
fn substitute(value: &Value, number: &str) -> Value {
    match value {
        Value::String(s) => Value::String(s.replace("{i}", number).replace("{}", number)),
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, number)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, number)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// One result line for a task that ran.
pub(crate) fn output_json(index: Option<usize>, output: &Output) -> Value {
    output_json_with(index, output, false)
}

fn output_json_with(index: Option<usize>, output: &Output, artifacts: bool) -> Value {
    let mut value = json!({
        "index": index,
        "reference": output.reference,
        "id": output.id,
        "provider": output.provider,
        "status": output.status,
        "stdout": output.stdout_lossy(),
        "stderr": output.stderr_lossy(),
    });
    // Only when set, as on the wire: results that were not cut look as they always did.
    for (key, cut) in [
        ("stdout_truncated", output.stdout_truncated),
        ("stderr_truncated", output.stderr_truncated),
    ] {
        if let (true, Some(map)) = (cut, value.as_object_mut()) {
            map.insert(key.into(), true.into());
        }
    }
    if let (Some(zip), Some(map)) = (&output.artifacts, value.as_object_mut()) {
        map.insert("artifacts_bytes".into(), zip.len().into());
        if artifacts {
            map.insert(
                "artifacts".into(),
                base64::engine::general_purpose::STANDARD.encode(zip).into(),
            );
        }
    }
    if index.is_none()
        && let Some(map) = value.as_object_mut()
    {
        map.remove("index");
    }
    value
}

/// One result line for a task that did not produce an output. A task that ran and failed
/// also has its `kind` (`trap`, `timeout`, `memory`, ...) and whatever it wrote (`stdout`,
/// `stderr`, the truncation flags, `id`, `provider`, `reference`).
pub(crate) fn error_json(index: Option<usize>, error: &Error) -> Value {
    let mut value = json!({ "index": index, "error": error.to_string(), "code": error.code() });
    if let (Error::Task(failure), Some(map)) = (error, value.as_object_mut()) {
        map.insert("kind".into(), failure.kind.as_str().into());
        if let Value::Object(output) = output_json_with(None, &failure.output, false) {
            for (key, field) in output {
                if key != "status" {
                    map.insert(key, field);
                }
            }
        }
    }
    if index.is_none()
        && let Some(map) = value.as_object_mut()
    {
        map.remove("index");
    }
    value
}

/// Counts results and remembers a few failures for the summary.
#[derive(Default)]
struct Tally {
    ok: usize,
    nonzero: usize,
    /// Tasks (of those that ran) whose stdout or stderr a provider cut at its output cap.
    truncated: usize,
    /// Whether truncated outputs still count as success (`--allow-truncated`).
    allow_truncated: bool,
    errors: BTreeMap<String, (usize, Vec<String>)>,
}

impl Tally {
    fn add(&mut self, index: usize, result: &Result<Output, Error>) {
        if let Ok(output) = result
            && output.truncated().is_some()
        {
            self.truncated += 1;
        }
        match result {
            Ok(o) if o.success() => self.ok += 1,
            Ok(_) => self.nonzero += 1,
            Err(e) => {
                let entry = self.errors.entry(e.code().to_owned()).or_default();
                entry.0 += 1;
                if entry.1.len() < 3 {
                    entry.1.push(format!("task {index}: {e}"));
                }
            }
        }
    }

    fn failed(&self) -> usize {
        self.errors.values().map(|(n, _)| n).sum()
    }

    fn summary(&self, total: usize, elapsed: Duration) -> String {
        let rate = total as f64 / elapsed.as_secs_f64().max(1e-9);
        let mut text = format!(
            "{total} tasks in {:.2} s ({rate:.1}/s): {} exited 0, {} exited non-zero, {} failed",
            elapsed.as_secs_f64(),
            self.ok,
            self.nonzero,
            self.failed()
        );
        if self.truncated > 0 {
            text.push_str(&format!(
                ", {} with output truncated at the provider's output limit (see \
                 stdout_truncated/stderr_truncated)",
                self.truncated
            ));
        }
        for (code, (n, examples)) in &self.errors {
            text.push_str(&format!("\n  {n} × {code}"));
            for example in examples {
                text.push_str(&format!("\n    {example}"));
            }
        }
        text
    }

    /// 0 when every task ran and exited 0 with its whole output (or `--allow-truncated`).
    fn exit_code(&self) -> u8 {
        let cut = self.truncated > 0 && !self.allow_truncated;
        if self.failed() == 0 && self.nonzero == 0 && !cut {
            0
        } else {
            exit::FAILURE
        }
    }
}

/// Where a batch's tasks go.
enum Runner {
    /// Submitted by id and fetched by id: survives a restart of the broker.
    ById(Client),
    /// Over one client WebSocket (brokers without the submit-by-id API).
    Socket(Session),
}

impl Runner {
    /// Asks the broker which it supports; fails once if it cannot be reached. Brokers of a
    /// cluster (`--broker a,b,c`) all have the submit-by-id API: when the first cannot be
    /// reached, `run_all` goes on at the others.
    async fn connect(client: &Client) -> Result<Runner, Error> {
        let runner = match client.wait_any(&[], Duration::ZERO).await {
            Ok(_) => Runner::ById(client.clone()),
            Err(Error::EndpointNotFound(_)) => Runner::Socket(client.session().await?),
            Err(Error::Transport(_) | Error::Unavailable(_)) if client.brokers().len() > 1 => {
                return Ok(Runner::ById(client.clone()));
            }
            Err(e) => return Err(e),
        };
        super::warn_if_no_provider(client).await;
        Ok(runner)
    }
}

async fn run_all<I>(
    runner: &Runner,
    tasks: I,
    total: usize,
    concurrency: usize,
    progress: Progress,
    artifacts: bool,
    allow_truncated: bool,
) -> Tally
where
    I: IntoIterator<Item = Task>,
    I::IntoIter: Send + 'static,
{
    let mut results = match runner {
        Runner::ById(client) => client.run_all(tasks, concurrency),
        Runner::Socket(session) => session.submit_many(tasks, concurrency),
    };
    let mut tally = Tally {
        allow_truncated,
        ..Tally::default()
    };
    let mut seen = 0;
    let mut ticks = tokio::time::interval(PLAIN_PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let (index, result) = tokio::select! {
            next = results.next() => match next {
                Some(next) => next,
                None => break,
            },
            _ = ticks.tick() => {
                progress.line(seen, &tally);
                continue;
            }
        };
        let line = match &result {
            Ok(output) => output_json_with(Some(index), output, artifacts),
            Err(e) => error_json(Some(index), e),
        };
        progress.suspend(|| println!("{line}"));
        tally.add(index, &result);
        seen += 1;
        progress.inc(seen, &tally);
    }
    progress.finish();
    if seen != total {
        eprintln!("wasimoff: expected {total} results, got {seen}");
    }
    tally
}

/// How often `--progress` prints a plain line when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How a batch shows its progress on stderr.
enum Progress {
    /// Nothing.
    Hidden,
    /// A bar, on a terminal.
    Bar(ProgressBar),
    /// Plain lines (stderr is a file or a pipe): every [`PLAIN_PROGRESS_EVERY`] and at each
    /// tenth of the tasks.
    Lines { total: usize, started: Instant },
}

impl Progress {
    fn new(total: usize, show: bool) -> Progress {
        if !show {
            return Progress::Hidden;
        }
        if !std::io::stderr().is_terminal() {
            return Progress::Lines {
                total,
                started: Instant::now(),
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} ETA {eta}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar(bar)
    }

    /// Runs `print` (which writes a result line) without tearing the bar.
    fn suspend(&self, print: impl FnOnce()) {
        match self {
            Progress::Bar(bar) => bar.suspend(print),
            _ => print(),
        }
    }

    /// One more result (`done` so far).
    fn inc(&self, done: usize, tally: &Tally) {
        match self {
            Progress::Bar(bar) => bar.inc(1),
            Progress::Lines { total, .. } => {
                let tenth = (*total / 10).max(1);
                if done.is_multiple_of(tenth) || done == *total {
                    self.line(done, tally);
                }
            }
            Progress::Hidden => {}
        }
    }

    /// A plain progress line: `wasimoff: 500/1000 results (3 failed) after 2.1 s, 238.1/s`.
    fn line(&self, done: usize, tally: &Tally) {
        if let Progress::Lines { total, started } = self {
            let seconds = started.elapsed().as_secs_f64();
            let rate = if seconds > 0.0 {
                done as f64 / seconds
            } else {
                0.0
            };
            eprintln!(
                "wasimoff: {done}/{total} results ({} failed) after {seconds:.1} s, {rate:.1}/s",
                tally.failed()
            );
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// `wasimoff task FILE...`
pub(crate) async fn task(
    client: &Client,
    args: TaskArgs,
    allow_truncated: bool,
) -> Result<u8, Error> {
    let mut tasks = Vec::new();
    for file in &args.files {
        tasks.extend(tasks_of(file)?);
    }
    let total = tasks.len();
    let started = Instant::now();
    // A broker that cannot be reached fails the command once.
    let runner = Runner::connect(client).await?;
    let tally = run_all(
        &runner,
        tasks,
        total,
        args.concurrency,
        Progress::Hidden,
        args.with_artifacts,
        allow_truncated,
    )
    .await;
    if tally.exit_code() != 0 {
        eprintln!("wasimoff: {}", tally.summary(total, started.elapsed()));
    }
    Ok(tally.exit_code())
}

/// `wasimoff batch`
pub(crate) async fn batch(
    client: &Client,
    args: BatchArgs,
    allow_truncated: bool,
) -> Result<u8, Error> {
    let show = !args.no_progress && (args.progress || std::io::stderr().is_terminal());
    let started = Instant::now();
    let (tally, total) = match (&args.file, &args.template) {
        (Some(file), _) => {
            let tasks = tasks_of(file)?;
            let total = tasks.len();
            let runner = Runner::connect(client).await?;
            let bar = Progress::new(total, show);
            let tally = run_all(
                &runner,
                tasks,
                total,
                args.concurrency,
                bar,
                args.with_artifacts,
                allow_truncated,
            )
            .await;
            (tally, total)
        }
        (None, Some(template)) => {
            let mut values = json_values(template)?;
            if values.len() != 1 {
                return Err(Error::Local(format!(
                    "{}: a template holds exactly one task, found {}",
                    template.display(),
                    values.len()
                )));
            }
            let template_value = values.remove(0);
            // Check the template once, so that errors show before any task runs.
            Task::from_json_value(template_value.clone())?;
            if substitute(&template_value, "0") == substitute(&template_value, "1") {
                eprintln!(
                    "wasimoff: warning: {} has no {{}} or {{i}} in its strings, so every task \
                     of the range is the same task",
                    template.display()
                );
            }
            let (start, end) = args.range.unwrap_or((0, 0));
            let total = usize::try_from(end - start)
                .map_err(|_| Error::Local("the range is too large".into()))?;
            let tasks = (start..end).map(move |i| {
                let value = substitute(&template_value, &i.to_string());
                // Substitution only changes strings, so the template's check still holds.
                Task::from_json_value(value).unwrap_or_else(|_| Task::wasip1("invalid-template"))
            });
            let runner = Runner::connect(client).await?;
            let bar = Progress::new(total, show);
            let tally = run_all(
                &runner,
                tasks,
                total,
                args.concurrency,
                bar,
                args.with_artifacts,
                allow_truncated,
            )
            .await;
            (tally, total)
        }
        (None, None) => return Err(Error::Local("give --file or --template".into())),
    };
    eprintln!("wasimoff: {}", tally.summary(total, started.elapsed()));
    Ok(tally.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("1..1000"), Ok((1, 1000)));
        assert_eq!(parse_range("1..=1000"), Ok((1, 1001)));
        assert_eq!(parse_range("50"), Ok((0, 50)));
        assert!(parse_range("5..1").is_err());
        assert!(parse_range("x..1").is_err());
    }

    #[test]
    fn substitution() {
        let v = json!({"params": {"args": ["tsp.wasm", "rand", "{}"], "envs": ["N={i}"]}, "x": {}});
        let s = substitute(&v, "7");
        assert_eq!(
            s,
            json!({"params": {"args": ["tsp.wasm", "rand", "7"], "envs": ["N=7"]}, "x": {}})
        );
    }
}

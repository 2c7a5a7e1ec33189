//! `wasimoff run`: one task, shaped like `wasmtime run`.

use std::{
    io::{IsTerminal, Read, Write},
    path::{Path, PathBuf},
};

use futures::StreamExt as _;
use wasimoff_client::{Client, Error, Source, Task};

use super::{archive, exit};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Like `wasmtime run`: the words after the module are the task's arguments (`--` before them \
is optional; it is needed only when the first one starts with `-`), piped stdin is passed \
on, and the task's exit status becomes wasimoff's.

Unlike wasmtime's `--dir`, which shares a host directory with the guest, `--rootfs DIR` \
sends a copy: the directory is zipped and unpacked on the provider, the guest's changes \
stay there, and only the paths named with `--artifact` come back (into `--out DIR`).")]
pub(crate) struct RunArgs {
    /// A local module (uploaded first) or the ref/alias of a module in the broker's storage.
    module: String,
    /// The task's standard input: a file, or `-` for wasimoff's own stdin. Without it,
    /// wasimoff's stdin is passed on when it is not a terminal (read to its end first; use
    /// `--stdin /dev/null` for none).
    #[arg(long, value_name = "FILE|-")]
    stdin: Option<String>,
    /// An environment variable: `KEY=value`, or `KEY` to pass on wasimoff's own value
    /// (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY[=VALUE]")]
    envs: Vec<String>,
    /// The root filesystem, sent as a copy: a directory (zipped on the fly), a zip file, or
    /// the ref/alias of a stored zip.
    #[arg(long, value_name = "DIR|ZIP|REF")]
    rootfs: Option<String>,
    /// A path in the task's filesystem to return (repeatable).
    #[arg(long = "artifact", short = 'a', value_name = "PATH")]
    artifacts: Vec<String>,
    /// Extract the returned artifacts into this directory.
    #[arg(long, short = 'o', value_name = "DIR")]
    out: Option<PathBuf>,
    /// Give up after this many seconds (the task's deadline).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Print the result as one JSON line instead of passing stdout/stderr on.
    #[arg(long)]
    json: bool,
    /// Arguments for the task; `argv[0]` is the module's name.
    #[arg(trailing_var_arg = true, value_name = "ARGS")]
    args: Vec<String>,
}

/// The largest stdin passed on (the broker's default limit for a task's stdin).
const MAX_STDIN: u64 = 16 << 20;

/// Where a module or rootfs argument points.
enum Place<'a> {
    /// A file or directory here.
    Local(&'a Path),
    /// A name for the broker's storage (an alias or `sha256:` ref).
    Stored(&'a str),
}

/// `text` as a local path if one exists, else as a stored name; a path that does not exist
/// and cannot be a stored name (it has a directory part, or starts with `.` or `~`) is "no
/// such file".
fn place<'a>(text: &'a str, what: &str) -> Result<Place<'a>, Error> {
    let path = Path::new(text);
    if path.exists() {
        return Ok(Place::Local(path));
    }
    if text.contains('/')
        || text.contains(std::path::MAIN_SEPARATOR)
        || text.starts_with(['.', '~'])
    {
        return Err(Error::Local(format!(
            "{what} {text}: no such file or directory"
        )));
    }
    Ok(Place::Stored(text))
}

/// A stored name the broker does not know (one of `stored`, the names given that are not
/// local files): say that it is not a local file either.
fn not_found(e: Error, stored: &[&str]) -> Error {
    match e {
        Error::NotFound(message) => {
            let name = stored
                .iter()
                .find(|name| message.contains(&format!("{name:?}")))
                .or(stored.first());
            match name {
                Some(name) => {
                    Error::NotFound(format!("{message} (and there is no file {name:?} here)"))
                }
                None => Error::NotFound(message),
            }
        }
        other => other,
    }
}

/// `KEY=value` as given; `KEY` alone takes wasimoff's own value.
fn env_entry(entry: &str) -> Result<String, Error> {
    if entry.contains('=') {
        return Ok(entry.to_owned());
    }
    if entry.is_empty() {
        return Err(Error::Local("--env: expected KEY=VALUE or KEY".into()));
    }
    match std::env::var(entry) {
        Ok(value) => Ok(format!("{entry}={value}")),
        Err(std::env::VarError::NotPresent) => Err(Error::Local(format!(
            "--env {entry}: {entry} is not set here (pass {entry}=VALUE)"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Local(format!(
            "--env {entry}: its value here is not UTF-8"
        ))),
    }
}

/// Reads `reader` to its end, refusing more than [`MAX_STDIN`] bytes.
fn read_stdin(reader: impl Read, what: &str) -> Result<Vec<u8>, Error> {
    let mut buffer = Vec::new();
    reader
        .take(MAX_STDIN + 1)
        .read_to_end(&mut buffer)
        .map_err(|e| Error::Local(format!("cannot read {what}: {e}")))?;
    if buffer.len() as u64 > MAX_STDIN {
        return Err(Error::Local(format!(
            "{what} is larger than {MAX_STDIN} bytes, the broker's limit for a task's stdin \
             (put large inputs in --rootfs)"
        )));
    }
    Ok(buffer)
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Local(format!("cannot read {}: {e}", path.display())))
}

/// Runs the task; the exit code is the task's status, or [`exit::OUTPUT_TRUNCATED`] for a task
/// that exited 0 with its output cut (unless `allow_truncated`).
pub(crate) async fn run(
    client: &Client,
    args: RunArgs,
    allow_truncated: bool,
) -> Result<u8, Error> {
    // The names given that are not local files, for a "not found" that says so.
    let mut stored = vec![];
    let (binary, argv0): (Source, String) = match place(&args.module, "module")? {
        Place::Local(path) if path.is_file() => {
            let r = client.upload_file(path, None).await?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| args.module.clone());
            (r.into(), name)
        }
        Place::Local(path) => {
            return Err(Error::Local(format!("{} is not a file", path.display())));
        }
        Place::Stored(name) => {
            stored.push(name);
            (Source::Ref(name.to_owned()), name.to_owned())
        }
    };
    let envs = args
        .envs
        .iter()
        .map(|e| env_entry(e))
        .collect::<Result<Vec<_>, _>>()?;
    let mut task = Task::wasip1(binary)
        .argv0(argv0)
        .args(args.args)
        .artifacts(args.artifacts)
        .envs(envs);
    let stdin = match args.stdin.as_deref() {
        Some("-") => Some(read_stdin(std::io::stdin().lock(), "stdin")?),
        Some(file) => Some(read(Path::new(file))?),
        // Like `wasmtime run`: a pipe or a file on stdin is the task's.
        None if !std::io::stdin().is_terminal() => {
            Some(read_stdin(std::io::stdin().lock(), "stdin")?)
        }
        None => None,
    };
    if let Some(bytes) = stdin.filter(|b| !b.is_empty()) {
        task = task.stdin(bytes);
    }
    if let Some(rootfs) = &args.rootfs {
        let source: Source = match place(rootfs, "--rootfs")? {
            Place::Local(dir) if dir.is_dir() => archive::zip_dir(dir)?.into(),
            Place::Local(file) => {
                let r = client.upload(read(file)?, None).await?;
                r.into()
            }
            Place::Stored(name) => {
                stored.push(name);
                Source::Ref(name.to_owned())
            }
        };
        task = task.rootfs(source);
    }
    if let Some(seconds) = args.timeout {
        task = task.timeout(std::time::Duration::from_secs(seconds));
    }

    super::warn_if_no_provider(client).await;
    // By id where the broker can (a broker restart does not lose it), else over its socket.
    let result = client
        .run_all(std::iter::once(task), 1)
        .next()
        .await
        .map_or_else(
            || Err(Error::Local("the task yielded no result".into())),
            |(_, r)| r,
        );
    let output = match result.map_err(|e| not_found(e, &stored)) {
        Ok(output) => output,
        // Setup errors are not the task's: they go to stderr with their advice.
        Err(e) if args.json && !e.is_permanent() => {
            println!("{}", super::batch::error_json(None, &e));
            return Ok(super::error_code(&e));
        }
        // Like `wasmtime run`: what the guest wrote, then why it failed.
        Err(Error::Task(failure)) => {
            pass_on(&failure.output);
            if let Some(warning) = super::truncation_warning(&failure.output) {
                eprintln!("{warning}");
            }
            eprintln!("wasimoff: task failed: {}", failure.reason());
            return Ok(exit::TASK_FAILED);
        }
        Err(e) => return Err(e),
    };
    if args.json {
        println!("{}", super::batch::output_json(None, &output));
    } else {
        pass_on(&output);
    }
    match (&output.artifacts, &args.out) {
        (Some(zip), Some(dir)) => {
            let files = archive::extract(zip, dir)?;
            if !args.json {
                eprintln!(
                    "wasimoff: wrote {} artifact file(s) to {}",
                    files.len(),
                    dir.display()
                );
            }
        }
        (Some(zip), None) if !args.json => eprintln!(
            "wasimoff: the task returned {} bytes of artifacts (pass --out DIR to extract them)",
            zip.len()
        ),
        (None, Some(_)) if !args.json => {
            eprintln!("wasimoff: the task returned no artifacts")
        }
        _ => {}
    }
    // Last, so that it is not lost above the artifact messages.
    if let Some(warning) = super::truncation_warning(&output) {
        eprintln!("{warning}");
        if output.success() && !allow_truncated {
            return Ok(exit::OUTPUT_TRUNCATED);
        }
    }
    // Exit statuses outside 0..=255 (negative, huge) are reported as a failure.
    Ok(u8::try_from(output.status).unwrap_or(exit::FAILURE))
}

/// Writes the guest's stdout and stderr to ours. Errors writing them (a closed pipe) are not
/// worth failing over.
fn pass_on(output: &wasimoff_client::Output) {
    let _ = std::io::stdout().write_all(&output.stdout);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(&output.stderr);
}

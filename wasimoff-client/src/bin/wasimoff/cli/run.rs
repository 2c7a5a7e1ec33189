//! `wasimoff run`: one task, shaped like `wasmtime run`.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
};

use wasimoff_client::{Client, Error, Source, Task};

use super::{archive, exit};

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// A local module (uploaded first) or the ref/alias of a module in the broker's storage.
    module: String,
    /// The task's standard input: a file, or `-` for wasimoff's own stdin.
    #[arg(long, value_name = "FILE|-")]
    stdin: Option<String>,
    /// An environment variable `KEY=value` (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    envs: Vec<String>,
    /// The root filesystem: a directory (zipped on the fly), a zip file, or the ref/alias of a
    /// stored zip.
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
    /// Arguments for the task (after `--`); `argv[0]` is the module's name.
    #[arg(last = true)]
    args: Vec<String>,
}

fn local(text: &str) -> Option<&Path> {
    let path = Path::new(text);
    path.exists().then_some(path)
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
    let (binary, argv0): (Source, String) = match local(&args.module) {
        Some(path) if path.is_file() => {
            let r = client.upload_file(path, None).await?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| args.module.clone());
            (r.into(), name)
        }
        Some(path) => {
            return Err(Error::Local(format!("{} is not a file", path.display())));
        }
        None => (Source::Ref(args.module.clone()), args.module.clone()),
    };
    let mut task = Task::wasip1(binary)
        .argv0(argv0)
        .args(args.args)
        .artifacts(args.artifacts);
    for env in &args.envs {
        if !env.contains('=') {
            return Err(Error::Local(format!("--env {env:?}: expected KEY=VALUE")));
        }
    }
    task = task.envs(args.envs);
    if let Some(stdin) = &args.stdin {
        let bytes = if stdin == "-" {
            let mut buffer = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buffer)
                .map_err(|e| Error::Local(format!("cannot read stdin: {e}")))?;
            buffer
        } else {
            read(Path::new(stdin))?
        };
        task = task.stdin(bytes);
    }
    if let Some(rootfs) = &args.rootfs {
        let source: Source = match local(rootfs) {
            Some(dir) if dir.is_dir() => archive::zip_dir(dir)?.into(),
            Some(file) => {
                let r = client.upload(read(file)?, None).await?;
                r.into()
            }
            None => Source::Ref(rootfs.clone()),
        };
        task = task.rootfs(source);
    }
    if let Some(seconds) = args.timeout {
        task = task.timeout(std::time::Duration::from_secs(seconds));
    }

    let output = match client.run(task).await {
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

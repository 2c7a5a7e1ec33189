//! `hello`: the reference WASI guest of wasimoff.
//!
//! It prints a fixed greeting and its argv, then goes through its arguments (after argv\[0\])
//! in order; these words switch on extra behaviour, anything else is only echoed:
//!
//! - `print_envs`: print every environment variable as `env <KEY>=<VALUE>`
//! - `print_rootfs`: list the files under `/` recursively (needs a preopened `/`)
//! - `file:<path>`: print the file's size (or that it does not exist), append the line
//!   [`APPENDED_LINE`] to it and print its new contents
//! - `stdin`: copy stdin to stdout
//! - `exit:<n>`: exit right away with status `n`
//! - `trap`: panic, which ends in a wasm trap (the release profile uses `panic = "abort"`)
//! - `sleep:<ms>`: sleep for `ms` milliseconds (`poll_oneoff` with a clock subscription)
//!
//! Failures (unreadable file, bad number, ...) are reported on stderr and exit with status 1.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The first line every run prints.
const GREETING: &str = "Hello, wasimoff! This is the hello guest.";

/// The line `file:<path>` appends to the file.
const APPENDED_LINE: &str = "appended by the wasimoff hello guest";

fn main() -> ExitCode {
    println!("{GREETING}");
    let args: Vec<String> = std::env::args().collect();
    println!("args = {args:?}");
    for arg in args.iter().skip(1) {
        if let Err(message) = run_word(arg) {
            let _ = io::stdout().flush();
            eprintln!("hello: {arg}: {message}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Performs the behaviour one argument word asks for.
fn run_word(arg: &str) -> Result<(), String> {
    match arg {
        "print_envs" => {
            for (key, value) in std::env::vars_os() {
                println!("env {}={}", key.to_string_lossy(), value.to_string_lossy());
            }
            Ok(())
        }
        "print_rootfs" => list_tree(Path::new("/")),
        "stdin" => {
            let mut stdout = io::stdout().lock();
            io::copy(&mut io::stdin().lock(), &mut stdout)
                .and_then(|_| stdout.flush())
                .map_err(|e| format!("copying stdin to stdout: {e}"))
        }
        "trap" => panic!("trap requested by the `trap` argument"),
        _ => {
            if let Some(path) = arg.strip_prefix("file:") {
                touch_file(path)
            } else if let Some(code) = arg.strip_prefix("exit:") {
                let code: i32 = code
                    .parse()
                    .map_err(|e| format!("not an exit status: {e}"))?;
                let _ = io::stdout().flush();
                std::process::exit(code)
            } else if let Some(ms) = arg.strip_prefix("sleep:") {
                let ms: u64 = ms
                    .parse()
                    .map_err(|e| format!("not a number of milliseconds: {e}"))?;
                std::thread::sleep(Duration::from_millis(ms));
                println!("slept {ms} ms");
                Ok(())
            } else {
                Ok(())
            }
        }
    }
}

/// Prints every entry below `dir`, depth first and sorted by name, one per line:
/// `rootfs: /a/b (12 bytes)` for files and `rootfs: /a/ (dir)` for directories.
fn list_tree(dir: &Path) -> Result<(), String> {
    let mut entries = fs::read_dir(dir)
        .map_err(|e| format!("reading directory {}: {e}", dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading directory {}: {e}", dir.display()))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = entry
            .metadata()
            .map_err(|e| format!("stat {}: {e}", path.display()))?;
        if meta.is_dir() {
            println!("rootfs: {}/ (dir)", path.display());
            list_tree(&path)?;
        } else {
            println!("rootfs: {} ({} bytes)", path.display(), meta.len());
        }
    }
    Ok(())
}

/// Prints the size of the file at `path`, appends [`APPENDED_LINE`] (creating the file if
/// needed) and prints the new contents.
fn touch_file(path: &str) -> Result<(), String> {
    match fs::metadata(path) {
        Ok(meta) => println!("file {path}: {} bytes", meta.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            println!("file {path}: does not exist, creating it");
        }
        Err(e) => return Err(format!("stat {path}: {e}")),
    }
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("opening {path} for appending: {e}"))?;
    writeln!(file, "{APPENDED_LINE}").map_err(|e| format!("appending to {path}: {e}"))?;
    drop(file);
    let contents = fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    println!("file {path}: now {} bytes:", contents.len());
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(&contents)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("printing {path}: {e}"))
}

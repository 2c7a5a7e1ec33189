//! `cargo xtask docs`: every shell command in the README and docs is run or checked, so the
//! docs cannot drift from the programs again.
//!
//! The shell blocks (```` ```sh ````, `bash`, `console`, `shell`) of every Markdown file in
//! [`DOCUMENTS`] are split into commands (continuation lines joined, comments dropped) and
//! each command into parts (at `&&` and `;`). Every part is one of:
//!
//! - **run**: `wasimoff` commands (also as `cargo run -p wasimoff-client -- ...`), `curl`
//!   and the scripts of `examples/curl`, and small shell helpers (`echo`, `mkdir`, ...) run for
//!   real, in the document's order, with `bash -o pipefail`, in a scratch directory that has
//!   `target/wasi-apps` (the guests) and `examples`, against a broker and a native provider
//!   started for the session (the debug builds the tests use; `localhost:4080` is rewritten
//!   to the session broker's ephemeral port). A part that exits non-zero fails the check
//!   (curl gets `--fail-with-body`, so an HTTP error counts).
//! - **checked**: what cannot run here is checked as far as it can be: the server binaries
//!   (`wasimoff-broker`, `wasimoff-provider`, and `wasimoff` against a remote broker) parse
//!   their flags (the command with `--help`, which clap answers only when every flag before it
//!   is valid); `cargo xtask` commands parse with xtask's own CLI; `cargo run/build/test/
//!   install/add` name workspace packages, binaries, tests and features that exist (and
//!   published crates for `add`/`install`); pinned versions match the lockfile.
//! - **excused**: a fixed list of prefixes, each with the reason and where else it runs
//!   (container engines, systemd, package installs).
//!
//! A command that fits none of these fails the check: a new kind of command must be taught
//! here.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use wait_timeout::ChildExt as _;

use crate::tools::{self, root, target_dir};

/// The Markdown files (and directories of them) whose shell blocks are checked, in the order
/// they run: the quickstart first, since later documents assume its uploads.
const DOCUMENTS: &[&str] = &[
    "docs/quickstart.md",
    "README.md",
    "docs",
    "examples",
    "examples/node-provider",
    "examples/tasks",
    "examples/web-demo",
    "wasimoff-broker/README.md",
    "wasimoff-client/README.md",
    "wasimoff-core/README.md",
    "wasimoff-js/README.md",
    "wasimoff-js/README.npm.md",
    "wasimoff-provider/README.md",
    "wasimoff-wasi/README.md",
    "wasimoff-web/README.md",
];

/// Commands that do not run here, by prefix, with the reason.
const EXCUSED: &[(&str, &str)] = &[
    (
        "podman",
        "needs a container engine: `cargo xtask image --test` (CI) runs the images and the \
         compose file the same way",
    ),
    ("cd examples/deploy", "the compose file: see podman"),
    (
        "install -D",
        "the systemd units: `cargo xtask image --test` verifies them the same way",
    ),
    ("root=", "the systemd units: see install -D"),
    ("mkdir -p $root", "the systemd units: see install -D"),
    (
        "cp -r target/web $root",
        "the systemd units: see install -D",
    ),
    (
        "cp -a /lib/systemd/system $root",
        "the systemd units: see install -D",
    ),
    ("systemd-analyze", "the systemd units: see install -D"),
    (
        "cargo build --release --target x86_64-unknown-linux-musl",
        "`cargo xtask image` builds the same static binaries",
    ),
    (
        "apt-get",
        "installs Debian packages: xtask installs what it needs itself",
    ),
    (
        "rustup target add",
        "xtask adds the targets it needs itself",
    ),
    (
        "openssl req",
        "a certificate for a real host name: the TLS tests make their own (rcgen)",
    ),
    (
        "python3 -m http.server",
        "serves until stopped: the browser end-to-end test serves the web demo itself",
    ),
    (
        "node --experimental-websocket examples/node-provider/provider.mjs",
        "provides until stopped: the browser end-to-end test runs it the same way",
    ),
    (
        "wasm-pack build",
        "`cargo xtask web` runs wasm-pack (with these flags)",
    ),
];

/// The npm package's name (`web::write_package_json`).
const NPM_NAME: &str = crate::web::NPM_NAME;

/// Programs whose commands run as they are written.
const RUNNABLE: &[&str] = &[
    "wasimoff", "curl", "echo", "mkdir", "cat", "ls", "head", "tail", "wc", "jq", "true",
];

/// One shell command of a document.
#[derive(Clone, Debug, PartialEq)]
struct DocCommand {
    line: usize,
    text: String,
}

/// The commands in the shell blocks of `markdown`, continuation lines joined and comments
/// dropped.
fn commands(markdown: &str) -> Vec<DocCommand> {
    let mut found = Vec::new();
    let mut in_shell = false;
    let mut pending = String::new();
    let mut start = 0;
    for (number, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            in_shell = !in_shell && matches!(info.trim(), "sh" | "bash" | "console" | "shell");
            continue;
        }
        if !in_shell {
            continue;
        }
        if pending.is_empty() {
            start = number + 1;
        }
        let line = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let text = strip_comment(&whole).trim().to_owned();
        if !text.is_empty() {
            found.push(DocCommand { line: start, text });
        }
    }
    found
}

/// `text` up to a `#` that starts a shell comment (outside quotes, after a blank).
fn strip_comment(text: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && previous.is_whitespace() => return &text[..i],
            _ => {}
        }
        previous = c;
    }
    text
}

/// Splits a command at the top-level `&&`, `||` and `;` (outside quotes).
fn parts(text: &str) -> Vec<String> {
    let (mut single, mut double) = (false, false);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            ';' if !single && !double => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            '&' | '|' if !single && !double && chars.peek() == Some(&c) => {
                chars.next();
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current);
    out.into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// What the check does with one part of a command.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Run this shell text.
    Run(String),
    /// Checked without running; the text says what was checked.
    Checked(String),
    /// Not run here, for this reason.
    Excused(&'static str),
}

/// What the checks need to know about the workspace.
struct Workspace {
    /// Package name to (manifest directory, published, binaries, tests, benches, features).
    packages: BTreeMap<String, Package>,
    /// The workspace's version (of the published crates).
    version: String,
    /// The `wasm-bindgen` version in Cargo.lock.
    wasm_bindgen: String,
    /// The debug binaries: `wasimoff`, `wasimoff-broker`, `wasimoff-provider`.
    bin_dir: PathBuf,
}

#[derive(Debug, Default)]
struct Package {
    dir: PathBuf,
    published: bool,
    bins: Vec<String>,
    tests: Vec<String>,
    features: Vec<String>,
}

impl Workspace {
    fn load(bin_dir: PathBuf) -> Result<Workspace> {
        let output = tools::cargo(&["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .context("running cargo metadata")?;
        if !output.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
        let mut packages = BTreeMap::new();
        let mut version = String::new();
        for package in metadata["packages"].as_array().into_iter().flatten() {
            let name = package["name"].as_str().unwrap_or_default().to_owned();
            let manifest = PathBuf::from(package["manifest_path"].as_str().unwrap_or_default());
            let targets = package["targets"].as_array().cloned().unwrap_or_default();
            let of_kind = |kind: &str| -> Vec<String> {
                targets
                    .iter()
                    .filter(|t| {
                        t["kind"]
                            .as_array()
                            .is_some_and(|k| k.iter().any(|k| k == kind))
                    })
                    .filter_map(|t| t["name"].as_str().map(str::to_owned))
                    .collect()
            };
            // `publish = false` is an empty list; absent (null) means crates.io.
            let published = !package["publish"].as_array().is_some_and(Vec::is_empty);
            if name == "wasimoff-client" {
                version = package["version"].as_str().unwrap_or_default().to_owned();
            }
            packages.insert(
                name,
                Package {
                    dir: manifest.parent().unwrap_or(Path::new("")).to_path_buf(),
                    published,
                    bins: of_kind("bin"),
                    tests: of_kind("test"),
                    features: package["features"]
                        .as_object()
                        .map(|f| f.keys().cloned().collect())
                        .unwrap_or_default(),
                },
            );
        }
        Ok(Workspace {
            packages,
            version,
            wasm_bindgen: tools::locked_wasm_bindgen_version()?,
            bin_dir,
        })
    }

    fn package(&self, name: &str) -> Result<&Package> {
        self.packages
            .get(name)
            .ok_or_else(|| anyhow!("no package {name:?} in the workspace"))
    }
}

/// Words of a shell command (quotes removed), without leading `NAME=value` assignments.
fn words(text: &str) -> Result<Vec<String>> {
    let words = split(text)?;
    Ok(words.into_iter().skip_while(|w| is_assignment(w)).collect())
}

fn split(text: &str) -> Result<Vec<String>> {
    shlex::split(text).ok_or_else(|| anyhow!("cannot split {text:?} into words"))
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The words with `--help` inserted before a `--` (clap would pass it on as an argument
/// after one).
fn with_help(argv: &[String]) -> Vec<String> {
    let mut argv = argv.to_vec();
    let at = argv.iter().position(|w| w == "--").unwrap_or(argv.len());
    argv.insert(at, "--help".into());
    argv
}

/// Checks that `program argv` parses: `--help` appended must print the help (exit 0).
fn check_flags(workspace: &Workspace, program: &str, argv: &[String]) -> Result<String> {
    let output = Command::new(workspace.bin_dir.join(program))
        .args(with_help(argv))
        .env_remove("WASIMOFF_BROKER")
        .env_remove("WASIMOFF_TOKEN")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        bail!(
            "`{program} {}` does not parse:\n{}",
            argv.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(format!("{program}: flags parse"))
}

/// Whether a `wasimoff` command names a broker other than the local one.
fn remote_broker(argv: &[String]) -> bool {
    let local = |url: &str| {
        ["http://localhost:", "http://127.0.0.1:"]
            .iter()
            .any(|p| url.starts_with(p))
    };
    argv.iter().enumerate().any(|(i, word)| {
        let url = match word.strip_prefix("--broker=") {
            Some(url) => Some(url),
            None if word == "--broker" => argv.get(i + 1).map(String::as_str),
            None => None,
        };
        url.is_some_and(|url| !local(url))
    })
}

/// Classifies one part of a command.
fn classify(workspace: &Workspace, part: &str) -> Result<Verdict> {
    if let Some((_, reason)) = EXCUSED.iter().find(|(prefix, _)| part.starts_with(prefix)) {
        return Ok(Verdict::Excused(reason));
    }
    let all = words(part)?;
    let Some(program) = all.first() else {
        // Only assignments: a shell variable for what follows.
        return Ok(Verdict::Run(part.to_owned()));
    };
    let argv = &all[1..];
    match program.as_str() {
        "cargo" => cargo_command(workspace, argv),
        "wasimoff" if remote_broker(argv) => {
            check_flags(workspace, "wasimoff", argv).map(Verdict::Checked)
        }
        "wasimoff-broker" | "wasimoff-provider" => {
            check_flags(workspace, program, argv).map(Verdict::Checked)
        }
        p if p.starts_with("./target/") && p.ends_with("/wasimoff-broker") => {
            check_flags(workspace, "wasimoff-broker", argv).map(Verdict::Checked)
        }
        "npm" => npm_command(workspace, argv),
        p if RUNNABLE.contains(&p)
            || p.starts_with("examples/curl/")
            || p.starts_with("target/wasi-apps/") =>
        {
            pipeline(workspace, part)
        }
        other => bail!("`{other}`: no rule to run or check this program (teach xtask/src/docs.rs)"),
    }
}

/// A part with pipes runs when every stage does.
fn pipeline(workspace: &Workspace, part: &str) -> Result<Verdict> {
    let stages: Vec<&str> = part.split(" | ").collect();
    if stages.len() > 1 {
        for stage in &stages {
            match classify(workspace, stage.trim())? {
                Verdict::Run(_) => {}
                other => bail!("`{stage}` in a pipeline cannot run: {other:?}"),
            }
        }
    }
    Ok(Verdict::Run(part.to_owned()))
}

/// `cargo <sub> ...`: xtask commands parse; run/build/test/install/add name what exists.
fn cargo_command(workspace: &Workspace, argv: &[String]) -> Result<Verdict> {
    let Some(sub) = argv.first() else {
        bail!("a bare `cargo`");
    };
    let rest = &argv[1..];
    let (own, after): (&[String], &[String]) = match rest.iter().position(|w| w == "--") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[]),
    };
    let value = |flag: &str| -> Vec<&str> {
        own.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    };
    if sub == "build"
        && let Some(manifest) = value("--manifest-path").first()
    {
        // The guests' own workspace: builds natively, as the document says.
        if !root().join(manifest).is_file() {
            bail!("no manifest {manifest}");
        }
        return Ok(Verdict::Run(format!("cargo {}", join(argv)?)));
    }
    let packages = value("-p");
    for name in &packages {
        workspace.package(name)?;
    }
    for feature in value("--features") {
        let [name] = packages[..] else {
            bail!("--features needs exactly one -p");
        };
        if !workspace
            .package(name)?
            .features
            .iter()
            .any(|f| f == feature)
        {
            bail!("package {name} has no feature {feature:?}");
        }
    }
    match sub.as_str() {
        "xtask" => {
            let mut args = vec!["xtask".to_owned()];
            args.extend(rest.iter().cloned());
            crate::Cli::try_parse_from(&args).map_err(|e| anyhow!("`cargo xtask`: {e}"))?;
            Ok(Verdict::Checked("xtask: parses".into()))
        }
        "run" => {
            let [name] = packages[..] else {
                bail!("`cargo run` without exactly one -p");
            };
            let package = workspace.package(name)?;
            let bin = match value("--bin")[..] {
                [bin] => bin.to_owned(),
                [] if package.bins.len() == 1 => package.bins[0].clone(),
                _ => bail!("`cargo run -p {name}` does not say which binary"),
            };
            if !package.bins.contains(&bin) {
                bail!("package {name} has no binary {bin:?}");
            }
            match bin.as_str() {
                // The CLI runs, as the binary the tests built.
                "wasimoff" => {
                    let line = shlex::try_join(after.iter().map(String::as_str))
                        .map_err(|e| anyhow!("{e}"))?;
                    Ok(Verdict::Run(format!("wasimoff {line}")))
                }
                "wasimoff-broker" | "wasimoff-provider" => {
                    check_flags(workspace, &bin, after).map(Verdict::Checked)
                }
                "demo" => Ok(Verdict::Checked(
                    "demo: exists (CI runs it: `cargo xtask demo --dev`)".into(),
                )),
                other => bail!("no rule for the binary {other}"),
            }
        }
        "build" => {
            if packages.is_empty() {
                bail!("`cargo build` without -p");
            }
            Ok(Verdict::Checked(format!(
                "build: {} exist",
                packages.join(", ")
            )))
        }
        "test" => {
            let [name] = packages[..] else {
                bail!("`cargo test` without exactly one -p");
            };
            for test in value("--test") {
                if !workspace.package(name)?.tests.iter().any(|t| t == test) {
                    bail!("package {name} has no test target {test:?}");
                }
            }
            Ok(Verdict::Checked(format!(
                "test: {name} (CI runs its tests)"
            )))
        }
        "install" | "add" => install_command(workspace, sub, own),
        other => bail!("no rule for `cargo {other}`"),
    }
}

fn join(words: &[String]) -> Result<String> {
    shlex::try_join(words.iter().map(String::as_str)).map_err(|e| anyhow!("{e}"))
}

/// `cargo install/add`: published workspace crates (with binaries to install), a path of one,
/// or a pinned tool at the lockfile's version.
fn install_command(workspace: &Workspace, sub: &str, args: &[String]) -> Result<Verdict> {
    let mut names = Vec::new();
    let mut checked = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        match word.as_str() {
            "--path" => {
                let path = words.next().context("--path without a value")?;
                let dir = root().join(path);
                let found = workspace
                    .packages
                    .values()
                    .find(|p| p.dir == dir)
                    .with_context(|| format!("no workspace package at {path}"))?;
                if found.bins.is_empty() {
                    bail!("{path} has no binary to install");
                }
                checked.push(format!("{path} has binaries"));
            }
            "--version" => {
                let version = words.next().context("--version without a value")?;
                if names.as_slice() != ["wasm-bindgen-cli"] {
                    bail!("no rule for --version of {names:?}");
                }
                if *version != workspace.wasm_bindgen {
                    bail!(
                        "wasm-bindgen-cli {version}, but Cargo.lock pins wasm-bindgen {}",
                        workspace.wasm_bindgen
                    );
                }
                names.clear();
                checked.push(format!("wasm-bindgen-cli {version} is the locked version"));
            }
            w if w.starts_with('-') => {}
            name => names.push(name.to_owned()),
        }
    }
    for name in &names {
        let package = workspace.package(name)?;
        if !package.published {
            bail!("{name} is not published (publish = false)");
        }
        if sub == "install" && package.bins.is_empty() {
            bail!("{name} has no binary to install");
        }
        checked.push(format!("{name} {} is published", workspace.version));
    }
    Ok(Verdict::Checked(format!("{sub}: {}", checked.join(", "))))
}

/// `npm install <tarball>` names the tarball of the workspace's version; `npm install
/// <name>` the package's name.
fn npm_command(workspace: &Workspace, argv: &[String]) -> Result<Verdict> {
    let [install, what] = argv else {
        bail!("no rule for `npm {}`", argv.join(" "));
    };
    if install != "install" {
        bail!("no rule for `npm {install}`");
    }
    if what.ends_with(".tgz") {
        let expected = format!("{NPM_NAME}-{}.tgz", workspace.version);
        if !what.ends_with(&expected) {
            bail!("the tarball is {expected}, not {what}");
        }
        return Ok(Verdict::Checked(format!("npm: {expected}")));
    }
    if what != NPM_NAME {
        bail!("the npm package is {NPM_NAME}, not {what}");
    }
    Ok(Verdict::Checked(format!("npm: the package is {NPM_NAME}")))
}

/// The Markdown files of [`DOCUMENTS`], each once, in order.
fn documents() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in DOCUMENTS {
        let path = root().join(entry);
        let mut found = if path.is_dir() {
            std::fs::read_dir(&path)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "md"))
                .collect()
        } else if path.is_file() {
            vec![path]
        } else {
            bail!("{entry} is listed in DOCUMENTS but does not exist");
        };
        found.sort();
        for file in found {
            if !files.contains(&file) {
                files.push(file);
            }
        }
    }
    Ok(files)
}

/// A broker and a native provider for the session, killed on drop.
struct Session {
    dir: PathBuf,
    url: String,
    children: Vec<Child>,
}

impl Drop for Session {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Session {
    /// A scratch directory with `target/wasi-apps` and `examples`, a broker on an ephemeral
    /// port and a provider with 2 workers.
    fn start(workspace: &Workspace, guests: &Path) -> Result<Session> {
        let dir = target_dir().join("docs-session");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.join("target"))?;
        symlink(guests, &dir.join("target/wasi-apps"))?;
        symlink(&root().join("examples"), &dir.join("examples"))?;
        symlink(&root().join("wasi-apps"), &dir.join("wasi-apps"))?;
        let mut session = Session {
            dir: dir.clone(),
            url: String::new(),
            children: Vec::new(),
        };
        let mut broker = Command::new(workspace.bin_dir.join("wasimoff-broker"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("broker-data"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting wasimoff-broker")?;
        let stdout = broker.stdout.take().context("no broker stdout")?;
        let stderr = broker.stderr.take().context("no broker stderr")?;
        session.children.push(broker);
        // The broker logs `broker listening local_addr=127.0.0.1:PORT` once it is bound.
        let log = dir.join("broker.log");
        std::fs::File::create(&log)?;
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                use std::io::Write as _;
                let mut file = std::fs::OpenOptions::new().append(true).open(log).ok();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("local_addr=").nth(1) {
                        let addr: String = rest
                            .chars()
                            .take_while(|c| !c.is_whitespace() && *c != ',')
                            .collect();
                        let _ = tx.send(addr);
                    }
                    if let Some(file) = &mut file {
                        let _ = writeln!(file, "{line}");
                    }
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .context("the session broker never said where it listens (see broker.log)")?;
        session.url = format!("http://{addr}");
        let provider = Command::new(workspace.bin_dir.join("wasimoff-provider"))
            .args(["--broker", &session.url, "--workers", "2", "--name", "docs"])
            .arg("--cache-dir")
            .arg(dir.join("provider-cache"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("provider.log"))?)
            .spawn()
            .context("starting wasimoff-provider")?;
        session.children.push(provider);
        Ok(session)
    }

    /// Runs one shell text in the session; returns its output when it fails.
    fn run(&self, workspace: &Workspace, text: &str) -> Result<(), String> {
        let local = ["http://localhost:4080", "http://127.0.0.1:4080"];
        let mut text = text.to_owned();
        for url in local {
            text = text.replace(url, &self.url);
        }
        let path = format!(
            "{}:{}",
            workspace.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let script = format!(
            "curl() {{ command curl --fail-with-body --silent --show-error --max-time 120 \"$@\"; }}\n{text}\n"
        );
        let mut child = Command::new("bash")
            .args(["-o", "pipefail", "-c", &script])
            .current_dir(&self.dir)
            .env("PATH", path)
            .env("WASIMOFF_BROKER", &self.url)
            .env_remove("WASIMOFF_TOKEN")
            .env_remove("WASIMOFF_CA_CERT")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start bash: {e}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let read = |stream: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut stream) = stream {
                    let _ = std::io::Read::read_to_end(&mut stream, &mut bytes);
                }
                bytes
            })
        };
        let out = read(stdout.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let err = read(stderr.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
        let status = match child.wait_timeout(COMMAND_TIMEOUT) {
            Ok(Some(status)) => Some(status),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
            Err(e) => return Err(e.to_string()),
        };
        let tail = |bytes: Vec<u8>| {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        let (out, err) = (
            tail(out.join().unwrap_or_default()),
            tail(err.join().unwrap_or_default()),
        );
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("{status}\nstdout:\n{out}\nstderr:\n{err}")),
            None => Err(format!(
                "still running after {COMMAND_TIMEOUT:?}\nstdout:\n{out}\nstderr:\n{err}"
            )),
        }
    }
}

/// How long one documented command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

fn symlink(from: &Path, to: &Path) -> Result<()> {
    #[cfg(unix)]
    return std::os::unix::fs::symlink(from, to)
        .with_context(|| format!("linking {} to {}", to.display(), from.display()));
    #[cfg(not(unix))]
    return tools::copy_tree(from, to);
}

/// The debug binaries of the CLI, the broker and the provider ([`tools::test_binaries`]).
fn build_binaries() -> Result<PathBuf> {
    tools::test_binaries(
        "the docs",
        &["wasimoff", "wasimoff-broker", "wasimoff-provider"],
    )
}

/// Runs or checks every command of the docs (see the module's documentation).
pub(crate) fn check() -> Result<()> {
    let bin_dir = build_binaries()?;
    let guests = crate::guests::build_guests(None)?;
    let guests = guests
        .first()
        .and_then(|p| p.parent())
        .context("no guests were built")?
        .to_path_buf();
    let workspace = Workspace::load(bin_dir)?;
    println!("\n==> docs: every shell command of the README and docs");
    let started = Instant::now();
    let session = Session::start(&workspace, &guests)?;
    // What later documents assume uploaded (the quickstart uploads them too).
    session
        .run(&workspace, "wasimoff upload target/wasi-apps/hello.wasm && wasimoff upload target/wasi-apps/tsp.wasm")
        .map_err(|e| anyhow!("uploading the guests for the session: {e}"))?;
    let (mut ran, mut checked, mut excused) = (0, 0, 0);
    let mut failures = Vec::new();
    for file in documents()? {
        let name = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        let markdown = std::fs::read_to_string(&file)?;
        for command in commands(&markdown) {
            let at = format!("{name}:{}", command.line);
            let mut run = Vec::new();
            let mut broken = false;
            for part in parts(&command.text) {
                match classify(&workspace, &part) {
                    Ok(Verdict::Run(text)) => run.push(text),
                    Ok(Verdict::Checked(what)) => {
                        checked += 1;
                        println!("checked  {at}  {part}  ({what})");
                    }
                    Ok(Verdict::Excused(reason)) => {
                        excused += 1;
                        println!("excused  {at}  {part}  ({reason})");
                    }
                    Err(e) => {
                        broken = true;
                        failures.push(format!("{at}: `{part}`: {e:#}"));
                    }
                }
            }
            if run.is_empty() || broken {
                continue;
            }
            // The runnable parts together, as the document chains them (`a; echo $?` keeps
            // its meaning when every part runs).
            let all_run = run.len() == parts(&command.text).len();
            let text = if all_run {
                let mut text = command.text.clone();
                // `cargo run -p wasimoff-client -- ...` runs the built CLI.
                for (from, to) in cli_rewrites() {
                    text = text.replace(&from, &to);
                }
                text
            } else {
                run.join(" && ")
            };
            let start = Instant::now();
            match session.run(&workspace, &text) {
                Ok(()) => {
                    ran += 1;
                    println!(
                        "ran      {at}  {text}  ({:.1}s)",
                        start.elapsed().as_secs_f64()
                    );
                }
                Err(e) => failures.push(format!("{at}: `{text}` failed: {e}")),
            }
        }
    }
    drop(session);
    println!(
        "==> docs: {ran} commands ran, {checked} parts checked, {excused} excused, {} failed in {:.1}s",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("\n{failure}");
        }
        bail!("{} documented commands are wrong", failures.len());
    }
    if ran < 20 {
        bail!("only {ran} documented commands ran: is the extractor broken?");
    }
    Ok(())
}

/// The documented ways to run the CLI through cargo, as the built binary.
fn cli_rewrites() -> Vec<(String, String)> {
    [
        "cargo run -p wasimoff-client -- ",
        "cargo run --release -p wasimoff-client -- ",
    ]
    .into_iter()
    .map(|from| (from.to_owned(), "wasimoff ".to_owned()))
    .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn commands_are_joined_and_comments_dropped() {
        let markdown = "text\n```sh\n# a comment\nwasimoff run a.wasm --env K=v x  # note\n\
            echo '# not a comment' | wasimoff run b.wasm stdin > out.txt\nwasimoff run c.wasm \\\n    --timeout 5 y\n\
            ```\n```rust\nwasimoff not shell\n```\n";
        let found = commands(markdown);
        let texts: Vec<&str> = found.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "wasimoff run a.wasm --env K=v x",
                "echo '# not a comment' | wasimoff run b.wasm stdin > out.txt",
                "wasimoff run c.wasm --timeout 5 y",
            ]
        );
        assert_eq!(found[2].line, 6);
    }

    #[test]
    fn parts_split_at_and_or_and_semicolons_outside_quotes() {
        assert_eq!(
            parts("a x && b 'y && z'; c \"d;e\" || f | g"),
            ["a x", "b 'y && z'", "c \"d;e\"", "f | g"]
        );
    }

    fn workspace() -> Workspace {
        let mut packages = BTreeMap::new();
        packages.insert(
            "wasimoff-client".to_owned(),
            Package {
                dir: root().join("wasimoff-client"),
                published: true,
                bins: vec!["wasimoff".into()],
                tests: vec!["it".into()],
                features: vec!["cli".into()],
            },
        );
        packages.insert(
            "wasimoff-examples".to_owned(),
            Package {
                dir: root().join("examples"),
                published: false,
                bins: vec!["demo".into()],
                tests: vec!["browser".into()],
                ..Package::default()
            },
        );
        Workspace {
            packages,
            version: "1.2.3".into(),
            wasm_bindgen: "0.2.130".into(),
            bin_dir: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn each_kind_of_command_is_classified_and_wrong_names_fail() {
        let ws = workspace();
        let verdict = |text: &str| classify(&ws, text);
        assert_eq!(
            verdict("cargo run -p wasimoff-client -- run hello.wasm -- -x").unwrap(),
            Verdict::Run("wasimoff run hello.wasm -- -x".into())
        );
        assert_eq!(
            verdict("echo hi | wasimoff run hello.wasm stdin").unwrap(),
            Verdict::Run("echo hi | wasimoff run hello.wasm stdin".into())
        );
        assert!(matches!(verdict("podman ps").unwrap(), Verdict::Excused(_)));
        for good in [
            "cargo xtask web --dev",
            "cargo add wasimoff-client --no-default-features",
            "cargo install --path wasimoff-client",
            "cargo install wasm-bindgen-cli --version 0.2.130",
            "X=1 cargo test -p wasimoff-examples --test browser -- --nocapture",
            "cargo build -p wasimoff-client --features cli",
            "npm install /p/wasimoff-1.2.3.tgz",
            "npm install wasimoff",
        ] {
            assert!(
                matches!(verdict(good).unwrap(), Verdict::Checked(_)),
                "{good}"
            );
        }
        for bad in [
            "cargo xtask demoo",
            "cargo xtask web --release",
            "cargo add wasimoff-clinet",
            "cargo install wasimoff-examples",
            "cargo install wasm-bindgen-cli --version 0.2.99",
            "cargo test -p wasimoff-examples --test browsers",
            "cargo build -p wasimoff-client --features nope",
            "cargo run -p wasimoff-examples --bin demos",
            "npm install /p/wasimoff-1.2.2.tgz",
            "make install",
            "echo hi | sudo tee /x",
        ] {
            assert!(verdict(bad).is_err(), "{bad} passed");
        }
    }

    #[test]
    fn help_goes_before_a_double_dash() {
        let argv: Vec<String> = ["run", "m.wasm", "--", "-x"].map(String::from).to_vec();
        assert_eq!(with_help(&argv), ["run", "m.wasm", "--help", "--", "-x"]);
        assert!(is_assignment("WASIMOFF_WEB_DIR=$PWD/target/web"));
        assert!(!is_assignment("--env=K=v"));
        assert!(remote_broker(&["--broker".into(), "https://b:4080".into()]));
        assert!(!remote_broker(&[
            "--broker".into(),
            "http://localhost:4080".into()
        ]));
    }
}

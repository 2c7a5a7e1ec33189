//! Build script of `wasimoff-wasi-apps`: builds every guest program into `OUT_DIR` for
//! `src/lib.rs` to `include_bytes!`.
//!
//! The Rust guests are built by a nested `cargo build --release --locked --target
//! wasm32-wasip1` on the separate workspace `guests/` (see `build/shared.rs`, which `cargo
//! xtask` shares). Its target directory is `<outer target dir>/wasi-apps` so that it survives
//! across profiles, `cargo clippy`/`cargo test` and `cargo xtask` (override it with
//! `WASIMOFF_GUESTS_TARGET_DIR`). The WAT guests are compiled with the `wat` crate. The C guest
//! is compiled when a wasm32-capable clang with wasi-libc is around; otherwise it is skipped
//! with a warning and `HELLO_C` is `None`.

#![allow(clippy::print_stdout)] // cargo reads its instructions from stdout

#[path = "build/shared.rs"]
mod shared;

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("no CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("no OUT_DIR")?);
    let guests_dir = manifest_dir.join("guests");

    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "wat",
        "c",
        "go/hello/main.go",
        "go/hello/go.mod",
    ]
    .iter()
    .chain(shared::RUST_PACKAGES)
    {
        println!(
            "cargo::rerun-if-changed={}",
            guests_dir.join(path).display()
        );
    }
    println!("cargo::rerun-if-env-changed=WASIMOFF_GUESTS_TARGET_DIR");
    for name in shared::C_ENV {
        println!("cargo::rerun-if-env-changed={name}");
    }
    println!("cargo::rustc-check-cfg=cfg(wasimoff_hello_c)");

    // Rust guests.
    let target_dir = guest_target_dir(&out_dir);
    // Where `cargo xtask ffmpeg` hands out FFmpeg (read at run time: it is not built here).
    println!(
        "cargo::rustc-env=WASIMOFF_FFMPEG_BUILT={}",
        target_dir.join("ffmpeg.wasm").display()
    );
    let jobs = env::var("NUM_JOBS").ok();
    for (name, path) in shared::build_rust_guests(&guests_dir, &target_dir, jobs.as_deref())? {
        let dest = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&path, &dest)
            .map_err(|e| format!("copying {} to {}: {e}", path.display(), dest.display()))?;
    }

    // WAT guests.
    for name in shared::WAT_GUESTS {
        let source = guests_dir.join("wat").join(format!("{name}.wat"));
        shared::compile_wat(&source, &out_dir.join(format!("{name}.wasm")))?;
    }

    // The Go guests, if there is a Go (`cargo xtask` installs one).
    println!("cargo::rerun-if-env-changed={}", shared::GO_ENV);
    println!("cargo::rustc-check-cfg=cfg(wasimoff_hello_go)");
    let outer_target = target_dir.parent().unwrap_or(&target_dir).to_path_buf();
    let go = shared::go_program(&outer_target);
    if let Some(go) = &go
        && go.is_file()
    {
        // A Go installed (or replaced) later builds them then.
        println!("cargo::rerun-if-changed={}", go.display());
    }
    let go_result = go
        .ok_or_else(|| "no Go (run any `cargo xtask` command, or set WASIMOFF_GO)".to_owned())
        .and_then(|go| {
            shared::compile_go_guests(&go, &guests_dir, &out_dir, &target_dir.join("go-cache"))
        });
    match go_result {
        Ok(()) => println!("cargo::rustc-cfg=wasimoff_hello_go"),
        Err(reason) => {
            let reason = reason.replace(['\n', '\r'], " ");
            println!("cargo::warning=skipping the Go guests: {reason}");
            println!("cargo::rustc-env=WASIMOFF_HELLO_GO_SKIPPED={reason}");
        }
    }

    // The C guests, if a suitable clang is available.
    match shared::compile_c_guests(&guests_dir, &out_dir) {
        Ok(()) => println!("cargo::rustc-cfg=wasimoff_hello_c"),
        Err(reason) => {
            let reason = reason.replace(['\n', '\r'], " ");
            println!("cargo::warning=skipping the C guests: {reason}");
            println!("cargo::rustc-env=WASIMOFF_HELLO_C_SKIPPED={reason}");
        }
    }
    Ok(())
}

/// Where the nested cargo keeps its build: `$WASIMOFF_GUESTS_TARGET_DIR`, else `wasi-apps/` in
/// the outer target directory (the nearest ancestor of `OUT_DIR` that cargo tagged with
/// `CACHEDIR.TAG`), else a directory inside `OUT_DIR`.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    if let Some(dir) = env::var_os("WASIMOFF_GUESTS_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    out_dir
        .ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(
            || out_dir.join("guests-target"),
            |dir| dir.join("wasi-apps"),
        )
}

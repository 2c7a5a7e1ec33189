//! `cargo xtask web`: the npm package and the pages around it.
//!
//! - `<target>/web/pkg/`: the `wasimoff` npm package, built by wasm-pack from `wasimoff-js`
//!   (`--target web`, out-name `wasimoff`; wasm-opt off: the machine has none to download).
//! - `<target>/web/`: the volunteer page (`wasimoff-js/www/`) with the package next to it; the
//!   broker serves this directory at `/` (`--static-dir`).
//! - `<target>/web-demo/`: `examples/web-demo/` with the package and the `hello` guest.
//!
//! `<target>` is `$CARGO_TARGET_DIR`, else `<root>/target`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::tools::{self, Step, root};

/// The wasm-pack release the build is tested with (installed with `--locked`).
const WASM_PACK_VERSION: &str = "0.15.1";

/// The cargo target directory.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// Where the volunteer page is assembled.
pub(crate) fn web_dir() -> PathBuf {
    target_dir().join("web")
}

fn ensure_wasm_pack() -> Result<()> {
    let installed = std::process::Command::new("wasm-pack")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("wasm-pack {WASM_PACK_VERSION}")
        });
    if installed {
        return Ok(());
    }
    Step::new(&format!("install wasm-pack {WASM_PACK_VERSION}")).run(tools::cargo(&[
        "install",
        "wasm-pack",
        "--version",
        WASM_PACK_VERSION,
        "--locked",
        "--force",
    ]))
}

/// Copies the files of `from` (recursively) into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_tree(&source, &dest)?;
        } else {
            std::fs::copy(&source, &dest)
                .with_context(|| format!("copying {} to {}", source.display(), dest.display()))?;
        }
    }
    Ok(())
}

/// Names the package `wasimoff` (wasm-pack takes the crate's name) and describes it.
fn patch_package_json(pkg: &Path) -> Result<()> {
    let path = pkg.join("package.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).context("parsing package.json")?;
    if let Some(object) = json.as_object_mut() {
        object.insert("name".into(), "wasimoff".into());
        object.insert(
            "description".into(),
            "Turn a web page into a wasimoff provider: run offloaded WebAssembly (WASI) tasks in Web Workers".into(),
        );
        object.insert(
            "keywords".into(),
            serde_json::json!(["wasimoff", "webassembly", "wasi", "volunteer-computing"]),
        );
    }
    std::fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    // wasm-pack writes a `.gitignore` of `*` into the package; the pages are not in git anyway.
    let _ = std::fs::remove_file(pkg.join(".gitignore"));
    Ok(())
}

/// Builds the package, the volunteer page and the web demo; `dev` builds the package without
/// optimisations (fast to build, slow to run: for tests). Returns the volunteer page's directory.
pub(crate) fn build(dev: bool) -> Result<PathBuf> {
    tools::ensure_rustup_targets(&["wasm32-unknown-unknown"])?;
    tools::ensure_wasm_bindgen_cli(&tools::locked_wasm_bindgen_version()?)?;
    ensure_wasm_pack()?;
    let web = web_dir();
    let pkg = web.join("pkg");
    let pkg_arg = pkg.to_str().context("the target directory is not UTF-8")?;
    let profile = if dev { "--dev" } else { "--release" };
    Step::new(&format!("wasm-pack build wasimoff-js ({})", &profile[2..])).run({
        let mut command = std::process::Command::new("wasm-pack");
        command.current_dir(root()).args([
            "build",
            "wasimoff-js",
            profile,
            "--target",
            "web",
            "--out-name",
            "wasimoff",
            "--out-dir",
            pkg_arg,
            "--no-opt",
            "--mode",
            "no-install",
        ]);
        command
    })?;
    patch_package_json(&pkg)?;
    copy_tree(&root().join("wasimoff-js/www"), &web)?;

    let demo = target_dir().join("web-demo");
    copy_tree(&root().join("examples/web-demo"), &demo)?;
    copy_tree(&pkg, &demo.join("pkg"))?;
    let guests = crate::guests::build_guests(None)?;
    let hello = guests
        .iter()
        .find(|p| p.file_name().is_some_and(|n| n == "hello.wasm"))
        .context("the hello guest was not built")?;
    std::fs::copy(hello, demo.join("hello.wasm")).context("copying hello.wasm")?;
    println!("volunteer page: {}", web.display());
    println!("web demo:       {}", demo.display());
    Ok(web)
}

//! `cargo xtask web`: the npm package and the pages around it.
//!
//! - `<target>/web/pkg/`: the `wasimoff` npm package, built by wasm-pack from `wasimoff-js`
//!   (`--target web`, out-name `wasimoff`, `--no-opt`); release builds are then optimised
//!   with binaryen's `wasm-opt` from Debian (skipped with a note when it is missing). Its
//!   `package.json` is rewritten for publishing and `wasimoff-js/README.npm.md` becomes its
//!   README.
//! - `<target>/npm/wasimoff-<version>.tgz`: the package as `npm pack` makes it, i.e. what would
//!   be published; the browser end-to-end tests install the page's package from it.
//! - `<target>/web/`: the volunteer page (`wasimoff-js/www/`) with the package next to it; the
//!   broker serves this directory at `/` (`--static-dir`), or builds it into the binary
//!   (feature `embedded-page`).
//! - `<target>/web-demo/`: `examples/web-demo/` with the package and the `hello` guest.
//!
//! Every file a browser fetches from the two pages gets precompressed siblings (`.br`, `.gz`),
//! which the broker sends to clients that accept them.
//!
//! `<target>` is `$CARGO_TARGET_DIR`, else `<root>/target`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::tools::{self, Step, copy_tree, files_under, root, target_dir};

/// The wasm-pack release the build is tested with (installed with `--locked`).
const WASM_PACK_VERSION: &str = "0.15.1";

/// The WebAssembly features rustc enables by default for `wasm32-unknown-unknown` (Rust 1.95:
/// `rustc --print cfg --target wasm32-unknown-unknown`), as binaryen 108 (Debian bookworm)
/// spells them. wasm-opt must accept every instruction the module uses.
const WASM_FEATURES: &[&str] = &[
    "--enable-bulk-memory",
    "--enable-multivalue",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-reference-types",
    "--enable-sign-ext",
];

/// The files of the package, besides `package.json` and `README.md` (which npm always packs):
/// the glue, its types, the module and the glue's JS snippets (the worker bootstrap; a glob,
/// since the page's copy of the package gets `.br`/`.gz` siblings).
const PACKAGE_FILES: &[&str] = &[
    "wasimoff.js",
    "wasimoff.d.ts",
    "wasimoff_bg.wasm",
    "snippets/**/*.js",
    // The licence texts (wasm-pack copies the crate's; npm itself only adds files named
    // exactly LICENSE/LICENCE).
    "LICENSE-MIT",
    "LICENSE-APACHE",
];

/// The extensions of the files a browser fetches, which get precompressed siblings.
const COMPRESSIBLE: &[&str] = &["html", "js", "mjs", "css", "wasm", "json", "svg", "txt"];

/// Where the volunteer page is assembled.
pub(crate) fn web_dir() -> PathBuf {
    target_dir().join("web")
}

fn ensure_wasm_pack() -> Result<()> {
    let installed = Command::new("wasm-pack")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("wasm-pack {WASM_PACK_VERSION}")
        });
    if installed {
        return Ok(());
    }
    // A debug build: wasm-pack only runs cargo and wasm-bindgen, so its own speed does not
    // matter, and the debug build takes a fraction of the release build's time (12.6 min
    // on a busy 2-core machine for the release build).
    Step::new(&format!("install wasm-pack {WASM_PACK_VERSION}")).run(tools::cargo(&[
        "install",
        "wasm-pack",
        "--version",
        WASM_PACK_VERSION,
        "--locked",
        "--force",
        "--debug",
    ]))
}

/// The files of `pkg` that `PACKAGE_FILES` names (relative paths).
fn package_files(pkg: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for file in PACKAGE_FILES {
        if let Some(dir) = file.strip_suffix("/**/*.js") {
            let dir = pkg.join(dir);
            if !dir.is_dir() {
                continue;
            }
            for inner in files_under(&dir)? {
                if inner.extension().is_some_and(|e| e == "js") {
                    let relative = inner
                        .strip_prefix(pkg)?
                        .to_str()
                        .context("non-UTF-8 path")?;
                    found.push(relative.to_owned());
                }
            }
        } else if pkg.join(file).is_file() {
            found.push((*file).to_owned());
        }
    }
    Ok(found)
}

/// The npm package's name.
pub(crate) const NPM_NAME: &str = "wasimoff";

/// Makes wasm-pack's `package.json` publishable (wasm-pack takes the crate's name and lists
/// what it wrote) and puts the npm README next to it.
fn write_package_json(pkg: &Path) -> Result<()> {
    let path = pkg.join("package.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let generated: serde_json::Value =
        serde_json::from_str(&text).context("parsing package.json")?;
    // wasm-pack writes the crate's version (the workspace's).
    let version = generated["version"]
        .as_str()
        .context("wasm-pack wrote no version into package.json")?;
    let found = package_files(pkg)?;
    for file in PACKAGE_FILES {
        let prefix = file.split('*').next().unwrap_or(file);
        if !found.iter().any(|f| f.starts_with(prefix)) {
            bail!("wasm-pack wrote no {file} into {}", pkg.display());
        }
    }
    use serde_json::json;
    // In the customary order (serde_json's maps would sort the keys).
    let fields = [
        ("name", json!(NPM_NAME)),
        ("version", json!(version)),
        (
            "description",
            json!(
                "WebAssembly (WASI preview 1) tasks in browsers and Node.js: contribute a page's \
                 CPU to a wasimoff broker, offload tasks to it, or run them locally in Web Workers"
            ),
        ),
        (
            "keywords",
            json!([
                "wasimoff",
                "webassembly",
                "wasm",
                "wasi",
                "offloading",
                "volunteer-computing",
                "web-workers"
            ]),
        ),
        ("license", json!("MIT OR Apache-2.0")),
        (
            "repository",
            json!({
                "type": "git",
                "url": "git+https://github.com/wasimoff/wasimoff-rs.git",
                "directory": "wasimoff-js",
            }),
        ),
        ("type", json!("module")),
        ("main", json!("wasimoff.js")),
        ("module", json!("wasimoff.js")),
        // No conditions: TypeScript finds `wasimoff.d.ts` next to `wasimoff.js`.
        (
            "exports",
            json!({
                ".": "./wasimoff.js",
                "./wasimoff_bg.wasm": "./wasimoff_bg.wasm",
                "./package.json": "./package.json",
            }),
        ),
        ("types", json!("wasimoff.d.ts")),
        ("files", json!(PACKAGE_FILES)),
        // Importing the glue or its snippet does nothing until `init()` is called.
        ("sideEffects", json!(false)),
        ("engines", json!({ "node": ">=20" })),
    ];
    let mut text = String::from("{\n");
    for (i, (key, value)) in fields.iter().enumerate() {
        let value = serde_json::to_string_pretty(value)?.replace('\n', "\n  ");
        let comma = if i + 1 < fields.len() { "," } else { "" };
        text.push_str(&format!("  {}: {value}{comma}\n", json!(key)));
    }
    text.push_str("}\n");
    serde_json::from_str::<serde_json::Value>(&text).context("writing valid JSON")?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::copy(
        root().join("wasimoff-js/README.npm.md"),
        pkg.join("README.md"),
    )
    .context("copying wasimoff-js/README.npm.md")?;
    // wasm-pack writes a `.gitignore` of `*` into the package; the pages are not in git anyway.
    let _ = std::fs::remove_file(pkg.join(".gitignore"));
    Ok(())
}

/// Optimises the package's module in place with `wasm-opt -O` (binaryen), when there is one.
fn optimise(wasm: &Path) -> Result<()> {
    let wasm_opt_version = || Command::new("wasm-opt").arg("--version").output();
    if wasm_opt_version().is_err() {
        tools::ensure_apt(&["binaryen"])?;
    }
    let Ok(version) = wasm_opt_version() else {
        println!(
            "note: wasm-opt is missing (Debian package binaryen): {} stays unoptimised",
            wasm.display()
        );
        return Ok(());
    };
    let original = std::fs::read(wasm)?;
    let before = original.len();
    let optimised = wasm.with_extension("opt.wasm");
    let start = Instant::now();
    Step::new(&format!(
        "wasm-opt -O ({})",
        String::from_utf8_lossy(&version.stdout).trim()
    ))
    .run({
        let mut command = Command::new("wasm-opt");
        command
            .arg("-O")
            .args(WASM_FEATURES)
            .arg(wasm)
            .arg("-o")
            .arg(&optimised);
        command
    })?;
    let mut output = std::fs::read(&optimised)?;
    std::fs::remove_file(&optimised)?;
    let fixed = fix_table_exports(&original, &mut output)?;
    if fixed > 0 {
        println!(
            "wasm-opt pointed {fixed} table export(s) at the wrong table (a binaryen bug): fixed"
        );
    }
    wasmparser::Validator::new()
        .validate_all(&output)
        .context("the optimised module does not validate")?;
    std::fs::write(wasm, &output)?;
    let after = output.len();
    println!(
        "wasm-opt: {before} -> {after} bytes ({:.1} %) in {:.1} s",
        after as f64 * 100.0 / before as f64,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A table export: its name, the position and length of its index's LEB128, and the index.
type TableExport = (String, usize, usize, u32);

/// The element types of a module's tables (imported ones first, as indexed) and its table
/// exports.
fn tables_and_exports(module: &[u8]) -> Result<(Vec<wasmparser::RefType>, Vec<TableExport>)> {
    let mut tables = Vec::new();
    let mut exports = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        match payload? {
            wasmparser::Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    if let wasmparser::TypeRef::Table(table) = import?.ty {
                        tables.push(table.element_type);
                    }
                }
            }
            wasmparser::Payload::TableSection(reader) => {
                for table in reader {
                    tables.push(table?.ty.element_type);
                }
            }
            wasmparser::Payload::ExportSection(reader) => {
                for export in reader.into_iter_with_offsets() {
                    let (offset, export) = export?;
                    if export.kind != wasmparser::ExternalKind::Table {
                        continue;
                    }
                    // Read the export again for where its index is (wasmparser gives only
                    // its value): name, kind, then the index's LEB128.
                    let mut reader = wasmparser::BinaryReader::new(
                        module.get(offset..).context("export out of bounds")?,
                        offset,
                    );
                    reader.read_string()?;
                    reader.read_u8()?;
                    let at = reader.original_position();
                    let index = reader.read_var_u32()?;
                    let len = reader.original_position() - at;
                    exports.push((export.name.to_owned(), at, len, index));
                }
            }
            _ => {}
        }
    }
    Ok((tables, exports))
}

/// binaryen 108 (Debian bookworm's) writes every table export as table 0. wasm-bindgen
/// exports its `externref` table (`__wbindgen_externrefs`, table 1 after the function table),
/// so the optimised package would fail in `__wbindgen_init_externref_table`. Points each
/// table export of `optimised` back at the one table with the element type it had in
/// `original`, in place (the index's LEB128 keeps its length); returns how many were wrong.
fn fix_table_exports(original: &[u8], optimised: &mut [u8]) -> Result<usize> {
    let (before_tables, before) = tables_and_exports(original)?;
    let (after_tables, after) = tables_and_exports(optimised)?;
    let mut fixed = 0;
    for (name, at, len, index) in after {
        let Some((_, _, _, was)) = before.iter().find(|(n, ..)| *n == name) else {
            bail!("wasm-opt added the table export {name}");
        };
        let wanted = before_tables[*was as usize];
        if after_tables.get(index as usize) == Some(&wanted) {
            continue;
        }
        let candidates: Vec<usize> = (0..after_tables.len())
            .filter(|&i| after_tables[i] == wanted)
            .collect();
        let [right] = candidates.as_slice() else {
            bail!("cannot tell which table the export {name} should be ({candidates:?})");
        };
        // A padded LEB128 of the same length.
        let mut value = u32::try_from(*right)?;
        for (i, byte) in optimised[at..at + len].iter_mut().enumerate() {
            let more = if i + 1 < len { 0x80 } else { 0 };
            *byte = u8::try_from(value & 0x7f)? | more;
            value >>= 7;
        }
        if value != 0 {
            bail!("table index {right} does not fit the export's {len} byte(s)");
        }
        fixed += 1;
    }
    Ok(fixed)
}

/// Packs the package with `npm pack` into `<target>/npm/` (offline: it has no dependencies),
/// checks that it holds exactly the intended files, and returns the tarball's path. `None`
/// when npm is missing.
fn pack(pkg: &Path) -> Result<Option<PathBuf>> {
    if Command::new("npm").arg("--version").output().is_err() {
        println!("note: npm is missing: no tarball (the browser tests need one)");
        return Ok(None);
    }
    let out = target_dir().join("npm");
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("emptying {}", out.display()))?;
    }
    std::fs::create_dir_all(&out)?;
    println!("\n==> npm pack");
    let output = Command::new("npm")
        .current_dir(pkg)
        .args(["pack", "--offline", "--json", "--pack-destination"])
        .arg(&out)
        .output()
        .context("running npm pack")?;
    std::io::stderr().write_all(&output.stderr)?;
    if !output.status.success() {
        bail!("npm pack failed ({})", output.status);
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("parsing the output of npm pack --json")?;
    let report = &report[0];
    let mut packed: Vec<&str> = report["files"]
        .as_array()
        .context("npm pack listed no files")?
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    packed.sort_unstable();
    let mut expected = package_files(pkg)?;
    expected.extend(["README.md".into(), "package.json".into()]);
    expected.sort_unstable();
    if packed != expected {
        bail!("npm pack packed {packed:?}, expected exactly {expected:?}");
    }
    let tarball = out.join(
        report["filename"]
            .as_str()
            .context("npm pack named no tarball")?,
    );
    println!(
        "npm package: {} ({} bytes, {} unpacked, {} files)",
        tarball.display(),
        std::fs::metadata(&tarball)?.len(),
        report["unpackedSize"],
        packed.len()
    );
    Ok(Some(tarball))
}

/// Writes `<file>.br` and `<file>.gz` next to every file of `dir` a browser fetches (replacing
/// older ones), when smaller than the file. Brotli at its best (11) for release builds; dev
/// builds (4 MB of unoptimised module, for tests) at 5, which is much faster.
fn precompress(dir: &Path, dev: bool) -> Result<()> {
    let quality = if dev { 5 } else { 11 };
    let start = Instant::now();
    let files = files_under(dir)?;
    for file in &files {
        let extension = file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if matches!(extension, "br" | "gz") {
            std::fs::remove_file(file)?;
        }
    }
    for file in &files {
        let extension = file
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if !COMPRESSIBLE.contains(&extension) {
            continue;
        }
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        for (suffix, packed) in [("br", brotli(&bytes, quality)?), ("gz", gzip(&bytes)?)] {
            if packed.len() < bytes.len() {
                let mut name = file.as_os_str().to_owned();
                name.push(".");
                name.push(suffix);
                std::fs::write(&name, packed)?;
            }
        }
    }
    println!(
        "precompressed {} in {:.1} s",
        dir.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn brotli(bytes: &[u8], quality: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        // 4 MiB window: the whole module is one context.
        let mut writer = brotli::CompressorWriter::new(&mut out, 1 << 16, quality, 22);
        writer.write_all(bytes)?;
    }
    Ok(out)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut writer = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    writer.write_all(bytes)?;
    Ok(writer.finish()?)
}

/// The size of `file` and of its siblings.
fn sizes(file: &Path) -> String {
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    let sibling = |suffix: &str| {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        size(Path::new(&name))
    };
    format!(
        "{} bytes, gzip {}, brotli {}",
        size(file),
        sibling(".gz"),
        sibling(".br")
    )
}

/// Builds the package, packs it, and assembles the volunteer page and the web demo; `dev`
/// builds the package without optimisations (fast to build, slow to run: for tests). Returns
/// the volunteer page's directory.
pub(crate) fn build(dev: bool) -> Result<PathBuf> {
    tools::ensure_rustup_targets(&["wasm32-unknown-unknown"])?;
    tools::ensure_wasm_bindgen_cli(&tools::locked_wasm_bindgen_version()?)?;
    ensure_wasm_pack()?;
    let web = web_dir();
    let pkg = web.join("pkg");
    // Nothing from an older build may end up in the package.
    if pkg.exists() {
        std::fs::remove_dir_all(&pkg).with_context(|| format!("emptying {}", pkg.display()))?;
    }
    let pkg_arg = pkg.to_str().context("the target directory is not UTF-8")?;
    let profile = if dev { "--dev" } else { "--release" };
    Step::new(&format!("wasm-pack build wasimoff-js ({})", &profile[2..])).run({
        let mut command = Command::new("wasm-pack");
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
            // wasm-opt runs below, with the features the module needs: wasm-pack would
            // download a binaryen of its own.
            "--no-opt",
            "--mode",
            "no-install",
        ]);
        tools::lint_env(&mut command);
        command
    })?;
    let wasm = pkg.join("wasimoff_bg.wasm");
    if !dev {
        optimise(&wasm)?;
    }
    write_package_json(&pkg)?;
    let tarball = pack(&pkg)?;
    copy_tree(&root().join("wasimoff-js/www"), &web)?;
    precompress(&web, dev)?;

    let demo = target_dir().join("web-demo");
    let demo_pkg = demo.join("pkg");
    if demo_pkg.exists() {
        std::fs::remove_dir_all(&demo_pkg)
            .with_context(|| format!("emptying {}", demo_pkg.display()))?;
    }
    copy_tree(&root().join("examples/web-demo"), &demo)?;
    let hello = crate::guests::hello()?;
    std::fs::copy(hello, demo.join("hello.wasm")).context("copying hello.wasm")?;
    // The transcoding page's FFmpeg, if `cargo xtask ffmpeg` has built it (which copies it
    // here itself when it runs later).
    let ffmpeg = target_dir().join("wasi-apps/ffmpeg.wasm");
    if ffmpeg.is_file() {
        std::fs::copy(&ffmpeg, demo.join("ffmpeg.wasm")).context("copying ffmpeg.wasm")?;
    }
    precompress(&demo, dev)?;
    // The package with its siblings, compressed once.
    copy_tree(&pkg, &demo_pkg)?;

    println!("\nmodule:         {}", sizes(&wasm));
    if let Some(tarball) = tarball {
        println!("npm package:    {}", tarball.display());
    }
    println!("volunteer page: {}", web.display());
    println!("web demo:       {}", demo.display());
    println!(
        "a broker with this page built in (served at / without --static-dir):\n  \
         WASIMOFF_WEB_DIR={} cargo build --release -p wasimoff-broker --features embedded-page",
        web.display()
    );
    Ok(web)
}

/// The TypeScript compiler `check_types` runs (an exact version: its checks change between
/// releases).
const TYPESCRIPT_VERSION: &str = "5.9.3";

/// Compiles `wasimoff-js/types/check.ts` with `tsc --noEmit` against the package as npm
/// would install it (the tarball `build` packed, unpacked into `node_modules/wasimoff`): the
/// declarations must accept the documented uses and reject the misuses the example marks
/// `@ts-expect-error`. Installs TypeScript into the target directory the first time.
pub(crate) fn check_types() -> Result<()> {
    if Command::new("npm").arg("--version").output().is_err() {
        println!("note: npm is missing: the TypeScript declarations are not checked");
        return Ok(());
    }
    let tarball = std::fs::read_dir(target_dir().join("npm"))
        .context("no npm package: run `cargo xtask web` first")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .context("no npm package: run `cargo xtask web` first")?;
    let typescript = target_dir().join(format!("tools/typescript-{TYPESCRIPT_VERSION}"));
    let tsc = typescript.join("node_modules/typescript/bin/tsc");
    if !tsc.is_file() {
        std::fs::create_dir_all(&typescript)?;
        Step::new(&format!("install typescript {TYPESCRIPT_VERSION} (npm)")).run({
            let mut command = Command::new("npm");
            command
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&typescript)
                .arg(format!("typescript@{TYPESCRIPT_VERSION}"));
            command
        })?;
    }
    let project = target_dir().join("types-check");
    if project.exists() {
        std::fs::remove_dir_all(&project)
            .with_context(|| format!("emptying {}", project.display()))?;
    }
    copy_tree(&root().join("wasimoff-js/types"), &project)?;
    let installed = project.join("node_modules/wasimoff");
    std::fs::create_dir_all(&installed)?;
    let mut untar = Command::new("tar");
    untar
        .args(["-xzf"])
        .arg(&tarball)
        .args(["--strip-components=1", "-C"])
        .arg(&installed);
    Step::new("unpack the npm package for tsc").run(untar)?;
    let mut command = Command::new("node");
    command.arg(&tsc).arg("--project").arg(&project);
    Step::new("typescript declarations (tsc --noEmit)").run(command)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A function table and an exported `externref` table, as wasm-bindgen leaves them.
    const MODULE: &str = r#"(module
        (table $functions 2 2 funcref)
        (table $externrefs 4 externref)
        (func $f)
        (elem (table $functions) (i32.const 0) func $f)
        (export "f" (func $f))
        (export "__wbindgen_externrefs" (table $externrefs)))"#;

    fn exported_table(module: &[u8]) -> u32 {
        let (_, exports) = tables_and_exports(module).unwrap();
        assert_eq!(exports.len(), 1);
        exports[0].3
    }

    #[test]
    fn a_table_export_binaryen_moved_to_table_0_is_moved_back() {
        let original = wat::parse_str(MODULE).unwrap();
        assert_eq!(exported_table(&original), 1);
        // What binaryen 108 writes: the same module with the export at table 0.
        let mut broken = original.clone();
        let (_, exports) = tables_and_exports(&broken).unwrap();
        let (_, at, _, _) = exports[0].clone();
        broken[at] = 0;
        assert_eq!(exported_table(&broken), 0);
        assert_eq!(fix_table_exports(&original, &mut broken).unwrap(), 1);
        assert_eq!(broken, original);
        // A right module stays as it is.
        let mut right = original.clone();
        assert_eq!(fix_table_exports(&original, &mut right).unwrap(), 0);
        assert_eq!(right, original);
    }
}

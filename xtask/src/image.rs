//! `cargo xtask image`: container images of the broker (with the volunteer page) and of the
//! native provider, and their end-to-end test.
//!
//! No registry is reachable from the machines this project runs on, so the images have no base
//! image: `FROM scratch` with statically linked binaries (`x86_64-unknown-linux-musl`). The
//! container files live in `examples/deploy/`; this module builds what they copy and assembles
//! the build context under `<target>/image/context`:
//!
//! ```text
//! broker.Containerfile, provider.Containerfile  from examples/deploy/
//! bin/wasimoff-broker, bin/wasimoff-provider    static binaries (checked: no loader, no shared
//!                                               library, no crate that reads system CA files)
//! www/                                          the volunteer page (`cargo xtask web`)
//! data/, cache/                                 empty mount points, owned by the image's user
//! provider-fs/tmp/                              empty, mode 1777 (the provider's /tmp)
//! ```
//!
//! Engines: podman (preferred) or docker, whichever works (`<engine> info`); as root on Debian
//! with neither, podman and runc are installed. Podman runs containers with `--runtime runc` and
//! explicit `--ulimit`s (Debian's podman 4.3 fails otherwise on these machines: its default
//! runtime does not start on the host's cgroups, and its default open-file limit is above the
//! host's hard limit).
//!
//! `--test` runs the images: a broker container (published on a free loopback port, data in a
//! named volume) and a provider container, a task through them with the host's `wasimoff` CLI,
//! SIGTERM (`stop`) with a check of the exit code, a restart that must find the upload again,
//! and, when `podman-compose` drives podman, `examples/deploy/compose.yaml`; then the systemd
//! units of `examples/deploy` with `systemd-analyze verify`. Containers and volumes are removed
//! on every way out.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use crate::tools::{self, Step, copy_file, copy_tree, root, target_dir};

/// The static target of the binaries in the images.
const MUSL: &str = "x86_64-unknown-linux-musl";

/// The user the images run as (numeric: the images have no user database).
const IMAGE_USER: &str = "65532:65532";

/// Printed first by every run of the hello guest.
const HELLO_GREETING: &str = "Hello, wasimoff! This is the hello guest.";

/// How long the test waits for a container to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The stop timeout given to the engine for the broker: it must exit by itself well within it.
const BROKER_STOP_GRACE: Duration = Duration::from_secs(15);

/// The stop timeout for the provider (its drain grace is 30 s; an idle provider leaves at once).
const PROVIDER_STOP_GRACE: Duration = Duration::from_secs(40);

/// A container engine's command-line tool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EngineKind {
    Podman,
    Docker,
}

impl EngineKind {
    fn program(self) -> &'static str {
        match self {
            EngineKind::Podman => "podman",
            EngineKind::Docker => "docker",
        }
    }
}

/// The options of `cargo xtask image`.
#[derive(Debug)]
pub(crate) struct Options {
    /// Debug builds of the binaries and the page (quick to build, for CI).
    pub(crate) debug: bool,
    /// The engine to use; `None`: the first of podman, docker that works.
    pub(crate) engine: Option<EngineKind>,
    /// Run the images after building them.
    pub(crate) test: bool,
    /// The volunteer page, if it is built already (with the same profile); `None`: build it.
    pub(crate) web: Option<PathBuf>,
    /// The tests' debug binaries (`x86_64-unknown-linux-gnu`, dynamically linked) with the
    /// loader and the shared libraries they need copied into the images, instead of a static
    /// build: CI's image test, where the musl build of every dependency cost 6 of a cold
    /// run's minutes. Implies `debug`.
    pub(crate) from_tests: bool,
}

/// `cargo xtask image`: builds the images and, with `--test`, tests them.
pub(crate) fn run(options: &Options) -> Result<()> {
    let Some(engine) = Engine::detect(options.engine)? else {
        let note = "neither podman nor docker can be used (`podman info` and `docker info` fail, \
                    and podman cannot be installed here)";
        if options.test {
            println!("note: skipping the container image test: {note}");
            return Ok(());
        }
        bail!("cannot build the images: {note}");
    };
    let started = Instant::now();
    let images = build(options, &engine)?;
    println!("\nimages built in {:.1}s", started.elapsed().as_secs_f64());
    if options.test {
        let started = Instant::now();
        test(&engine, &images)?;
        println!(
            "container image test passed in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The engine

/// A container engine that answered `info`.
#[derive(Debug)]
struct Engine {
    kind: EngineKind,
    /// `podman --runtime runc` where runc is installed.
    runc: bool,
    /// The containers' open-file limit (soft and hard).
    nofile: u64,
    /// The containers' process limit (soft and hard).
    nproc: u64,
}

impl Engine {
    /// The chosen engine, or the first that works; installs podman and runc (as root on Debian)
    /// when neither works. `None` when none can be used and none was asked for.
    fn detect(choice: Option<EngineKind>) -> Result<Option<Engine>> {
        let kind = match choice {
            Some(kind) => {
                if kind == EngineKind::Podman {
                    ensure_podman()?;
                }
                ensure!(
                    engine_works(kind),
                    "`{} info` fails: the engine cannot be used",
                    kind.program()
                );
                kind
            }
            None if engine_works(EngineKind::Podman) => {
                ensure_podman()?;
                EngineKind::Podman
            }
            None if engine_works(EngineKind::Docker) => EngineKind::Docker,
            None => {
                ensure_podman()?;
                if !engine_works(EngineKind::Podman) {
                    return Ok(None);
                }
                EngineKind::Podman
            }
        };
        let (nofile, nproc) = hard_limits();
        let engine = Engine {
            kind,
            runc: kind == EngineKind::Podman && find_program("runc").is_some(),
            nofile,
            nproc,
        };
        println!("container engine: {}", engine.describe());
        Ok(Some(engine))
    }

    fn describe(&self) -> String {
        let mut text = self.kind.program().to_owned();
        if self.runc {
            text.push_str(" --runtime runc");
        }
        text
    }

    /// `--ulimit nofile=N:N --ulimit nproc=M:M`, for `run` and `create`: podman asks for more
    /// open files than the host allows unless told.
    fn ulimit_args(&self) -> [String; 4] {
        [
            "--ulimit".into(),
            format!("nofile={0}:{0}", self.nofile),
            "--ulimit".into(),
            format!("nproc={0}:{0}", self.nproc),
        ]
    }

    /// `<engine> <args>`.
    fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(self.kind.program());
        if self.runc {
            command.args(["--runtime", "runc"]);
        }
        command.args(args);
        command
    }

    /// Runs `<engine> <args>` and returns its trimmed stdout; fails with its stderr.
    fn output(&self, args: &[&str]) -> Result<String> {
        let output = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", self.kind.program()))?;
        if !output.status.success() {
            bail!(
                "`{} {}` failed ({}): {}",
                self.kind.program(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// `<engine> run -d --name <name> <ulimits> <args>`.
    fn run_detached(&self, name: &str, args: &[&str]) -> Result<()> {
        let ulimits = self.ulimit_args();
        let mut all = vec!["run", "-d", "--name", name];
        all.extend(ulimits.iter().map(String::as_str));
        all.extend(args);
        self.output(&all).map(drop)
    }

    /// An image's size in bytes.
    fn image_size(&self, image: &str) -> Result<u64> {
        let size = self.output(&["image", "inspect", "--format", "{{.Size}}", image])?;
        size.parse()
            .with_context(|| format!("unexpected image size {size:?}"))
    }

    /// The id of an image, if there is one of that name.
    fn image_id(&self, image: &str) -> Option<String> {
        self.output(&["image", "inspect", "--format", "{{.Id}}", image])
            .ok()
            .filter(|id| !id.is_empty())
    }

    /// Whether a container is running.
    fn running(&self, container: &str) -> bool {
        self.output(&["inspect", "--format", "{{.State.Running}}", container])
            .is_ok_and(|s| s == "true")
    }

    /// Stops a container with SIGTERM (its STOPSIGNAL) and `grace` before SIGKILL; fails unless
    /// it exited 0 by itself. Returns how long it took.
    fn stop_cleanly(&self, container: &str, grace: Duration) -> Result<Duration> {
        let started = Instant::now();
        let seconds = grace.as_secs().to_string();
        self.output(&["stop", "--time", &seconds, container])?;
        let took = started.elapsed();
        let code = self.output(&["inspect", "--format", "{{.State.ExitCode}}", container])?;
        ensure!(
            code == "0",
            "{container} exited with {code} after SIGTERM (in {:.1}s; 137 means it was killed \
             at the end of the {}s grace)",
            took.as_secs_f64(),
            grace.as_secs()
        );
        ensure!(
            took < grace,
            "{container} took {:.1}s to stop, not within its {}s grace",
            took.as_secs_f64(),
            grace.as_secs()
        );
        println!(
            "{container}: stopped by SIGTERM in {:.2}s, exit code 0",
            took.as_secs_f64()
        );
        Ok(took)
    }
}

fn engine_works(kind: EngineKind) -> bool {
    Command::new(kind.program())
        .arg("info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the Debian packages of podman and runc whose programs are missing (as root on
/// Debian; elsewhere `ensure_apt` says what is missing).
fn ensure_podman() -> Result<()> {
    let missing: Vec<&str> = ["podman", "runc"]
        .into_iter()
        .filter(|p| find_program(p).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    tools::ensure_apt(&missing)
}

/// `program` on `$PATH` or in the sbin directories (runc is in /usr/sbin on Debian).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// This process's hard limits of open files and of processes (capped), for the containers.
fn hard_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let hard = |name: &str, fallback: u64, cap: u64| {
        limits
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().nth(1).map(str::to_owned))
            .map_or(fallback, |v| v.parse().unwrap_or(cap))
            .min(cap)
    };
    (
        hard("Max open files", 1024, 65536),
        hard("Max processes", 4096, 32768),
    )
}

// ---------------------------------------------------------------------------------------------
// Building

/// The images built, by reference.
#[derive(Debug)]
struct Images {
    broker: String,
    provider: String,
    /// The build context (with the binaries in `bin/`).
    context: PathBuf,
}

/// Builds the binaries (static, unless `from_tests`) and the page (unless `web` is the page
/// built already), assembles the context and builds both images.
fn build(options: &Options, engine: &Engine) -> Result<Images> {
    let debug = options.debug || options.from_tests;
    let started = Instant::now();
    let (bin_dir, runtime) = if options.from_tests {
        let bin_dir =
            tools::test_binaries("the images", &["wasimoff-broker", "wasimoff-provider"])?;
        (bin_dir, true)
    } else {
        (build_static(debug)?, false)
    };
    let binaries_took = started.elapsed();
    let profile = if debug { "debug" } else { "release" };

    let started = Instant::now();
    let web = options
        .web
        .as_deref()
        .map_or_else(|| crate::web::build(debug), |web| Ok(web.to_path_buf()))?;
    let page_took = started.elapsed();

    let context = target_dir().join("image/context");
    if context.exists() {
        std::fs::remove_dir_all(&context)
            .with_context(|| format!("removing {}", context.display()))?;
    }
    std::fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    let deploy = root().join("examples/deploy");
    for file in ["broker.Containerfile", "provider.Containerfile"] {
        let mut containerfile = std::fs::read_to_string(deploy.join(file))
            .with_context(|| format!("reading {file}"))?;
        if runtime {
            // The loader and libraries of the dynamically linked binaries, right after FROM.
            containerfile =
                containerfile.replacen("\nFROM scratch\n", "\nFROM scratch\nCOPY runtime/ /\n", 1);
            ensure!(
                containerfile.contains("COPY runtime/"),
                "{file} does not start its image with `FROM scratch`"
            );
        }
        std::fs::write(context.join(file), containerfile)
            .with_context(|| format!("writing {file} into the context"))?;
    }
    for name in ["wasimoff-broker", "wasimoff-provider"] {
        let binary = bin_dir.join(name);
        if runtime {
            copy_runtime(&binary, &context.join("runtime"))?;
        } else {
            check_static(&binary)?;
        }
        copy_file(&binary, &context.join("bin").join(name))?;
    }
    copy_tree(&web, &context.join("www"))?;
    for dir in ["data", "cache", "provider-fs/tmp"] {
        std::fs::create_dir_all(context.join(dir))?;
    }
    set_mode(&context.join("provider-fs/tmp"), 0o1777)?;

    let version = env!("CARGO_PKG_VERSION");
    let mut built = Vec::new();
    for (name, containerfile) in [
        ("wasimoff-broker", "broker.Containerfile"),
        ("wasimoff-provider", "provider.Containerfile"),
    ] {
        let containerfile = context.join(containerfile);
        let tagged = format!("{name}:{version}");
        let latest = format!("{name}:latest");
        let version_arg = format!("VERSION={version}");
        let previous = engine.image_id(&tagged);
        let started = Instant::now();
        let mut build = engine.command([
            "build".as_ref(),
            "--file".as_ref(),
            containerfile.as_os_str(),
            "--tag".as_ref(),
            tagged.as_ref(),
            "--tag".as_ref(),
            latest.as_ref(),
            "--build-arg".as_ref(),
            version_arg.as_ref(),
        ]);
        if engine.kind == EngineKind::Podman {
            // No image per instruction: every build copies new binaries, so cached layers
            // would only pile up.
            build.arg("--layers=false");
        }
        build.arg(&context);
        Step::new(&format!("image {tagged}")).run(build)?;
        built.push((tagged.clone(), started.elapsed()));
        // The image these tags named before is left without a name: remove it (unless a
        // container still uses it), so that rebuilding does not fill the disk.
        if let Some(previous) = previous
            && engine.image_id(&tagged).is_some_and(|id| id != previous)
        {
            let _ = engine.output(&["image", "rm", &previous]);
        }
    }

    println!("\n{profile} images ({}):", engine.describe());
    println!(
        "  {} binaries built in {:.1}s, page in {:.1}s",
        if runtime {
            "the tests' (dynamically linked)"
        } else {
            "static"
        },
        binaries_took.as_secs_f64(),
        page_took.as_secs_f64()
    );
    for (name, took) in &built {
        let binary = context
            .join("bin")
            .join(name.split(':').next().unwrap_or(name));
        println!(
            "  {name:<26} {:>6.1} MB  (binary {:.1} MB, image built in {:.1}s)",
            engine.image_size(name)? as f64 / 1e6,
            std::fs::metadata(&binary)?.len() as f64 / 1e6,
            took.as_secs_f64()
        );
    }
    let [(broker, _), (provider, _)] =
        <[_; 2]>::try_from(built).map_err(|_| anyhow::anyhow!("expected two images"))?;
    Ok(Images {
        broker,
        provider,
        context,
    })
}

/// Builds the broker and the provider for [`MUSL`]; returns the directory they are in.
fn build_static(debug: bool) -> Result<PathBuf> {
    tools::ensure_rustup_targets(&[MUSL])?;
    // musl-gcc, for dependencies that compile C.
    tools::ensure_apt(&["musl-tools"])?;
    let profile = if debug { "debug" } else { "release" };
    let mut args = vec![
        "build",
        "--target",
        MUSL,
        "-p",
        "wasimoff-broker",
        "-p",
        "wasimoff-provider",
        "--bins",
    ];
    if debug {
        // Debug images only need to start and run a hello task: their dependencies built
        // without optimisation or debug info take about a third less time (this build shares
        // nothing with the tests' build, being for another target).
        args.extend([
            "--config",
            "profile.dev.package.\"*\".opt-level=0",
            "--config",
            "profile.dev.debug=false",
        ]);
    } else {
        args.push("--release");
    }
    Step::new(&format!("static binaries ({MUSL}, {profile})")).run(tools::cargo(&args))?;
    check_no_system_roots(&args)?;
    Ok(target_dir().join(MUSL).join(profile))
}

/// Copies the dynamic loader and every shared library that the executable `binary` loads (as
/// `ldd` resolves them on this host) into `runtime`, at their absolute paths: the root of an
/// image that has nothing else.
fn copy_runtime(binary: &Path, runtime: &Path) -> Result<()> {
    let output = Command::new("ldd")
        .arg(binary)
        .stdin(Stdio::null())
        .output()
        .context("running ldd (the tests' binaries are dynamically linked)")?;
    let listing = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "ldd {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let libraries = ldd_paths(&listing).with_context(|| format!("ldd {}", binary.display()))?;
    ensure!(
        !libraries.is_empty(),
        "ldd found no loader for {}",
        binary.display()
    );
    for library in libraries {
        let relative = library.strip_prefix("/").unwrap_or(&library);
        // `copy` follows symbolic links: the image gets the file under the name the binary
        // asks for.
        copy_file(&library, &runtime.join(relative))?;
    }
    Ok(())
}

/// The absolute paths in `ldd`'s listing: every `name => /path (address)` and the loader's
/// `/path (address)`; the vDSO has no file. A library ldd cannot find is an error.
fn ldd_paths(listing: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, target)) => {
                let target = target.trim();
                ensure!(
                    !target.starts_with("not found"),
                    "{} is not found",
                    name.trim()
                );
                target
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    Ok(paths)
}

/// Fails unless `path` is an ELF executable that needs no dynamic loader and no shared library
/// (no `PT_INTERP`, no `DT_NEEDED`): the images have neither.
fn check_static(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let needs = elf_dynamic_needs(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    ensure!(
        needs.is_empty(),
        "{} is not statically linked: it needs {}",
        path.display(),
        needs.join(", ")
    );
    Ok(())
}

/// What an ELF64 executable needs at run time: its interpreter (`PT_INTERP`) and its libraries
/// (`DT_NEEDED`, not named: their names are string table offsets).
fn elf_dynamic_needs(elf: &[u8]) -> Result<Vec<String>> {
    use object::elf;
    use object::read::elf::{Dyn as _, ElfFile64, ProgramHeader as _};

    let file = ElfFile64::<object::Endianness>::parse(elf).context("not an ELF64 file")?;
    let endian = file.endian();
    let mut needs = Vec::new();
    for header in file.elf_program_headers() {
        // PT_INTERP: the path of the dynamic loader.
        if let Some(interp) = header.interpreter(endian, elf)? {
            needs.push(format!("the loader {}", String::from_utf8_lossy(interp)));
        }
        // PT_DYNAMIC: (tag, value) pairs up to DT_NULL; DT_NEEDED names a library.
        if let Some(dynamic) = header.dynamic(endian, elf)? {
            for entry in dynamic {
                match entry.tag(endian) {
                    elf::DT_NULL => break,
                    elf::DT_NEEDED => needs.push("a shared library (DT_NEEDED)".to_owned()),
                    _ => {}
                }
            }
        }
    }
    Ok(needs)
}

/// Crates that make a binary read the system's CA certificates (`/etc/ssl/...`), which the
/// images do not have.
const SYSTEM_ROOTS_CRATES: &[&str] = &[
    "rustls-native-certs",
    "openssl-probe",
    "openssl-sys",
    "native-tls",
];

/// Fails if the binaries of the build (`cargo_args`: its packages, target and profile) depend
/// on a crate that loads the system's CA certificates: TLS in the images must use roots
/// compiled into the binary (webpki roots).
fn check_no_system_roots(cargo_args: &[&str]) -> Result<()> {
    let mut args = vec![
        "tree", "--edges", "normal", "--prefix", "none", "--format", "{p}",
    ];
    // The build's packages, target and features; `tree` has no `--bins` and no `--release`.
    args.extend(
        cargo_args
            .iter()
            .filter(|a| !matches!(**a, "build" | "--bins" | "--release")),
    );
    let output = tools::cargo(&args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo tree")?;
    ensure!(
        output.status.success(),
        "cargo tree failed ({})",
        output.status
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let found: Vec<&str> = SYSTEM_ROOTS_CRATES
        .iter()
        .copied()
        .filter(|krate| {
            tree.lines()
                .any(|l| l.split_whitespace().next() == Some(krate))
        })
        .collect();
    ensure!(
        found.is_empty(),
        "the static binaries depend on {}, which read the system's CA certificates: the images \
         have none (use compiled-in webpki roots)",
        found.join(", ")
    );
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<()> {
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Testing

/// Containers and volumes a test created: removed when dropped, also when the test failed.
struct Cleanup<'a> {
    engine: &'a Engine,
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl<'a> Cleanup<'a> {
    fn new(engine: &'a Engine) -> Self {
        Cleanup {
            engine,
            containers: Vec::new(),
            volumes: Vec::new(),
        }
    }

    /// Prints the last lines of every container's log (after a failure).
    fn print_logs(&self) {
        for container in &self.containers {
            println!("--- last log lines of {container}:");
            let _ = self
                .engine
                .command(["logs", "--tail", "40", container])
                .stdin(Stdio::null())
                .status();
        }
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let quiet = |mut command: Command| {
            let _ = command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        for container in self.containers.iter().rev() {
            quiet(
                self.engine
                    .command(["rm", "--force", "--volumes", container]),
            );
        }
        for volume in &self.volumes {
            quiet(self.engine.command(["volume", "rm", "--force", volume]));
        }
    }
}

/// What the test runs on the host: the `wasimoff` CLI and the guests.
#[derive(Debug)]
struct HostTools {
    cli: PathBuf,
    hello: PathBuf,
    rootfs: PathBuf,
}

/// Runs the images (see the module's documentation); then the compose file if podman-compose
/// can drive the engine.
fn test(engine: &Engine, images: &Images) -> Result<()> {
    let bin_dir = tools::test_binaries("the image test (the CLI)", &["wasimoff"])?;
    let host = HostTools {
        cli: bin_dir.join("wasimoff"),
        hello: crate::guests::hello()?,
        rootfs: root().join("examples/tasks/hello-rootfs.zip"),
    };

    println!("\n==> container image test ({})", engine.describe());
    for image in [&images.broker, &images.provider] {
        let user = engine.output(&["image", "inspect", "--format", "{{.Config.User}}", image])?;
        ensure!(
            user == IMAGE_USER,
            "{image} runs as {user:?}, not as {IMAGE_USER}"
        );
    }
    let started = Instant::now();
    let mut cleanup = Cleanup::new(engine);
    let result = test_containers(engine, images, &host, &mut cleanup);
    if result.is_err() {
        cleanup.print_logs();
    }
    drop(cleanup);
    result?;
    println!(
        "==> containers: passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    test_compose(engine, &host)?;
    verify_units(&images.context.join("bin"))
}

/// Checks the systemd units of `examples/deploy` with `systemd-analyze verify`, in a root that
/// has the binaries where the units expect them and the system's own units (the targets the
/// units depend on). Any complaint fails. Skipped with a note without systemd-analyze.
fn verify_units(bin_dir: &Path) -> Result<()> {
    const UNITS: [&str; 2] = ["wasimoff-broker.service", "wasimoff-provider.service"];
    if find_program("systemd-analyze").is_none() {
        println!("note: not checking the systemd units: systemd-analyze is not installed");
        return Ok(());
    }
    let system_units = Path::new("/lib/systemd/system");
    if !system_units.is_dir() {
        println!("note: not checking the systemd units: /lib/systemd/system is missing");
        return Ok(());
    }
    let unit_root = target_dir().join("image/unit-root");
    if unit_root.exists() {
        std::fs::remove_dir_all(&unit_root)
            .with_context(|| format!("removing {}", unit_root.display()))?;
    }
    let (bin, units, lib) = (
        unit_root.join("usr/local/bin"),
        unit_root.join("etc/systemd/system"),
        unit_root.join("lib/systemd"),
    );
    for dir in [&bin, &units, &lib] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for name in ["wasimoff-broker", "wasimoff-provider"] {
        let (from, to) = (bin_dir.join(name), bin.join(name));
        if std::fs::hard_link(&from, &to).is_err() {
            copy_file(&from, &to)?;
        }
    }
    // `cp -a`: the system's units include symbolic links (aliases, masked units).
    let copied = Command::new("cp")
        .arg("-a")
        .arg(system_units)
        .arg(&lib)
        .status()
        .context("cannot run cp")?;
    ensure!(
        copied.success(),
        "copying {} failed",
        system_units.display()
    );
    let mut verify = Command::new("systemd-analyze");
    verify
        .arg("verify")
        .arg(format!("--root={}", unit_root.display()));
    for unit in UNITS {
        copy_file(
            &root().join("examples/deploy").join(unit),
            &units.join(unit),
        )?;
        verify.arg(units.join(unit));
    }
    let output = verify
        .stdin(Stdio::null())
        .output()
        .context("cannot run systemd-analyze")?;
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify found problems in the units:\n{complaints}"
    );
    println!("systemd units verified: {}", UNITS.join(", "));
    Ok(())
}

/// The broker and provider containers end to end.
fn test_containers(
    engine: &Engine,
    images: &Images,
    host: &HostTools,
    cleanup: &mut Cleanup<'_>,
) -> Result<()> {
    // The binaries start in the empty images.
    for (image, program) in [
        (&images.broker, "wasimoff-broker"),
        (&images.provider, "wasimoff-provider"),
    ] {
        let ulimits = engine.ulimit_args();
        let mut args = vec!["run", "--rm"];
        args.extend(ulimits.iter().map(String::as_str));
        args.extend([image.as_str(), "--version"]);
        let version = engine.output(&args)?;
        ensure!(
            version.starts_with(program),
            "`{program} --version` in {image} printed {version:?}"
        );
    }

    let tag = std::process::id();
    let (broker, provider, volume) = (
        format!("wasimoff-test-broker-{tag}"),
        format!("wasimoff-test-provider-{tag}"),
        format!("wasimoff-test-data-{tag}"),
    );
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");

    // The broker with the image's defaults (0.0.0.0:4080, /data), published on loopback.
    cleanup.volumes.push(volume.clone());
    cleanup.containers.push(broker.clone());
    let publish = format!("127.0.0.1:{port}:4080");
    let mount = format!("{volume}:/data");
    engine.run_detached(
        &broker,
        &["--publish", &publish, "--volume", &mount, &images.broker],
    )?;
    wait_ready(engine, &broker, port)?;

    // The volunteer page and its package are served at /.
    let (status, page) = http_get(port, "/")?;
    ensure!(
        status == 200 && String::from_utf8_lossy(&page).contains("<title>wasimoff"),
        "GET / answered {status}, not the volunteer page"
    );
    let (status, _) = http_get(port, "/pkg/wasimoff.js")?;
    ensure!(status == 200, "GET /pkg/wasimoff.js answered {status}");

    // A provider on the host's network reaches the broker through the published port, like a
    // provider on another machine.
    cleanup.containers.push(provider.clone());
    let broker_env = format!("WASIMOFF_BROKER={url}");
    engine.run_detached(
        &provider,
        &[
            "--network",
            "host",
            "--env",
            &broker_env,
            "--env",
            "WASIMOFF_NAME=container-test",
            &images.provider,
        ],
    )?;
    wait_providers(engine, &[&broker, &provider], port, 1)?;

    // Tasks through both, with the host's CLI: an upload under an alias (written to the data
    // volume by the non-root user), a run, and a run with a root filesystem (unpacked into the
    // provider's /tmp).
    let hello = host.hello.to_str().context("non-UTF-8 path")?;
    cli(host, &url, &["upload", hello, "--name", "hello.wasm"])?;
    let out = cli(host, &url, &["run", "hello.wasm", "--", "from-a-container"])?;
    ensure!(
        out.contains(HELLO_GREETING) && out.contains("from-a-container"),
        "unexpected output of the hello task: {out:?}"
    );
    let rootfs = host.rootfs.to_str().context("non-UTF-8 path")?;
    let out = cli(
        host,
        &url,
        &[
            "run",
            "hello.wasm",
            "--rootfs",
            rootfs,
            "--",
            "file:/greeting.txt",
        ],
    )?;
    ensure!(
        out.contains("appended by the wasimoff hello guest"),
        "unexpected output of the rootfs task: {out:?}"
    );
    println!("tasks ran through the broker and provider containers");

    // SIGTERM with a provider connected: the broker closes its socket and exits 0.
    engine.stop_cleanly(&broker, BROKER_STOP_GRACE)?;
    // Started again on the same volume, it still has the upload; the provider reconnects.
    engine.output(&["start", &broker])?;
    wait_ready(engine, &broker, port)?;
    let (status, stored) = http_get(port, "/api/storage/hello.wasm")?;
    let original = std::fs::read(&host.hello)?;
    ensure!(
        status == 200 && stored == original,
        "after a restart GET /api/storage/hello.wasm answered {status} with {} bytes, not the \
         upload's {} bytes",
        stored.len(),
        original.len()
    );
    wait_providers(engine, &[&broker, &provider], port, 1)?;
    let out = cli(host, &url, &["run", "hello.wasm", "--", "after-restart"])?;
    ensure!(
        out.contains("after-restart"),
        "unexpected output after the restart: {out:?}"
    );
    println!("the data volume kept the upload across a restart; the provider reconnected");

    engine.stop_cleanly(&provider, PROVIDER_STOP_GRACE)?;
    engine.stop_cleanly(&broker, BROKER_STOP_GRACE)?;
    Ok(())
}

/// Runs the host's `wasimoff` CLI against `url`; fails unless it exits 0. Returns stdout.
fn cli(host: &HostTools, url: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(&host.cli)
        .args(["--broker", url])
        .args(args)
        .env_remove("WASIMOFF_TOKEN")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", host.cli.display()))?;
    ensure!(
        output.status.success(),
        "`wasimoff {}` failed ({}): {}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A TCP port that is free on loopback now.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `GET path` on `127.0.0.1:port` over HTTP/1.0 (no chunked answers): status and body.
fn http_get(port: u16, path: &str) -> Result<(u16, Vec<u8>)> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the HTTP head")?;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {head:?}"))?;
    Ok((status, answer[head_end + 4..].to_vec()))
}

/// Polls until `check` says yes, failing at `timeout` or as soon as one of `containers` is
/// not running any more.
fn poll(
    engine: &Engine,
    containers: &[&str],
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if check() {
            return Ok(started.elapsed());
        }
        for container in containers {
            ensure!(
                engine.running(container),
                "{container} stopped while waiting for {what}"
            );
        }
        ensure!(
            started.elapsed() < timeout,
            "no {what} within {}s",
            timeout.as_secs()
        );
        // The pace of the polling, not a wait for anything.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the broker answers `/healthz`.
fn wait_ready(engine: &Engine, container: &str, port: u16) -> Result<()> {
    let took = poll(engine, &[container], "/healthz", READY_TIMEOUT, || {
        http_get(port, "/healthz").is_ok_and(|(status, _)| status == 200)
    })?;
    println!("{container}: healthy after {:.2}s", took.as_secs_f64());
    Ok(())
}

/// Waits until the broker's status counts at least `count` providers.
fn wait_providers(engine: &Engine, containers: &[&str], port: u16, count: u64) -> Result<()> {
    let took = poll(
        engine,
        containers,
        &format!("{count} connected provider(s)"),
        READY_TIMEOUT,
        || {
            http_get(port, "/api/status")
                .ok()
                .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .and_then(|status| status["providers"].as_u64())
                .is_some_and(|n| n >= count)
        },
    )?;
    println!(
        "{count} provider(s) connected after {:.2}s",
        took.as_secs_f64()
    );
    Ok(())
}

/// Debian packages for the compose test with podman: podman-compose, and the CNI plugin that
/// lets containers find each other by service name.
const COMPOSE_PACKAGES: &[&str] = &[
    "podman-compose",
    "golang-github-containernetworking-plugin-dnsname",
];

/// `examples/deploy/compose.yaml` with podman-compose: a broker and two providers, a task
/// through them. Skipped with a note when podman-compose cannot be had (or with docker).
fn test_compose(engine: &Engine, host: &HostTools) -> Result<()> {
    if engine.kind != EngineKind::Podman {
        println!("note: the compose file is tested with podman-compose only; not with docker");
        return Ok(());
    }
    tools::ensure_apt(COMPOSE_PACKAGES)?;
    if find_program("podman-compose").is_none() {
        println!("note: skipping the compose test: podman-compose is not installed");
        return Ok(());
    }
    println!("\n==> compose test (podman-compose, examples/deploy/compose.yaml)");
    let started = Instant::now();
    let compose = Compose {
        engine,
        project: format!("wasimoff-test-{}", std::process::id()),
        port: free_port()?,
    };
    let result = test_compose_project(engine, host, &compose);
    if result.is_err() {
        let _ = compose.command(&["logs"]).status();
    }
    drop(compose);
    result?;
    println!(
        "==> compose: passed in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A compose project of the test; taken down (with its volumes) when dropped.
struct Compose<'a> {
    engine: &'a Engine,
    project: String,
    port: u16,
}

impl Compose<'_> {
    /// `podman-compose -p <project> -f compose.yaml <args>` with the test's variables.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman-compose");
        if self.engine.runc {
            command.arg("--podman-args=--runtime runc");
        }
        let file = root().join("examples/deploy/compose.yaml");
        command
            .args(["--project-name", &self.project, "--file"])
            .arg(file)
            .args(args)
            .stdin(Stdio::null())
            .env("WASIMOFF_TAG", env!("CARGO_PKG_VERSION"))
            .env("WASIMOFF_PORT", self.port.to_string())
            .env_remove("WASIMOFF_CLIENT_TOKENS")
            .env_remove("WASIMOFF_PROVIDER_TOKENS")
            // The containers' open-file limit: the one the engine is given elsewhere.
            .env("WASIMOFF_NOFILE", self.engine.nofile.to_string());
        command
    }

    /// Runs a compose command, its output shown only when it fails.
    fn run(&self, args: &[&str]) -> Result<()> {
        let output = self
            .command(args)
            .output()
            .context("cannot run podman-compose")?;
        ensure!(
            output.status.success(),
            "`podman-compose {}` failed ({}):\n{}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// The container of a service (podman-compose names them `<project>_<service>_1`).
    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }
}

impl Drop for Compose<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--volumes", "--timeout", "5"]);
        // What `down` may have left behind (a half-started project).
        let label = format!("label=io.podman.compose.project={}", self.project);
        if let Ok(ids) = self
            .engine
            .output(&["ps", "--all", "--quiet", "--filter", &label])
        {
            for id in ids.split_whitespace() {
                let _ = self.engine.output(&["rm", "--force", "--volumes", id]);
            }
        }
        let volume = format!("{}_broker-data", self.project);
        let _ = self.engine.output(&["volume", "rm", "--force", &volume]);
        let network = format!("{}_default", self.project);
        let _ = self.engine.output(&["network", "rm", "--force", &network]);
    }
}

fn test_compose_project(engine: &Engine, host: &HostTools, compose: &Compose<'_>) -> Result<()> {
    compose.run(&["up", "-d"])?;
    let broker = compose.container("broker");
    let providers = [
        compose.container("provider-1"),
        compose.container("provider-2"),
    ];
    wait_ready(engine, &broker, compose.port)?;
    // The providers find the broker by its service name.
    let mut containers = vec![broker.as_str()];
    containers.extend(providers.iter().map(String::as_str));
    wait_providers(engine, &containers, compose.port, 2)?;
    let url = format!("http://127.0.0.1:{}", compose.port);
    let hello = host.hello.to_str().context("non-UTF-8 path")?;
    let out = cli(host, &url, &["run", hello, "--", "from-compose"])?;
    ensure!(
        out.contains(HELLO_GREETING) && out.contains("from-compose"),
        "unexpected output of the hello task: {out:?}"
    );
    println!("a task ran through the compose project");
    engine.stop_cleanly(&broker, BROKER_STOP_GRACE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamically_linked_executable_is_not_static() {
        // This test binary is linked against the C library dynamically (glibc target).
        let exe = std::env::current_exe().expect("the test binary");
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            let needs = elf_dynamic_needs(&std::fs::read(&exe).expect("readable")).expect("ELF");
            assert!(
                needs.iter().any(|n| n.starts_with("the loader /")),
                "{needs:?}"
            );
            assert!(check_static(&exe).is_err());
        }
    }

    #[test]
    fn ldd_listings_give_the_loader_and_the_libraries() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                       \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f01)\n\
                       \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\
                       \t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n";
        let paths = ldd_paths(listing).unwrap();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        let missing = "\tlibfoo.so.1 => not found\n";
        assert!(ldd_paths(missing).is_err());
    }

    #[test]
    fn a_truncated_file_is_an_error() {
        assert!(elf_dynamic_needs(b"\x7fELF\x02\x01").is_err());
        assert!(elf_dynamic_needs(b"#!/bin/sh\n").is_err());
    }
}

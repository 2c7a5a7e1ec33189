//! Runs every guest of `wasimoff-wasi-apps` natively through wasmtime + wasmtime-wasi
//! (WASI preview 1, plus the legacy `wasi_unstable` namespace) and checks what it prints,
//! its exit status or trap, and its effect on a preopened root filesystem. The example tasks
//! in `examples/tasks/` are checked and run the same way.
//!
//! Everything is hermetic: in-memory stdio, temporary directories, no network. Runaway guests
//! are stopped by fuel, epoch interruption or a memory cap; only `sleep` and `poll` take wall-clock
//! time.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use wasimoff_wasi_apps::{self as apps, Guest};
use wasmtime::{Config, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

// ------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------

/// Store data: the WASI context and the resource limits.
struct Host {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
}

/// One run's inputs. `args` includes argv\[0\].
#[derive(Default)]
struct Run<'a> {
    args: Vec<&'a str>,
    envs: Vec<(&'a str, &'a str)>,
    stdin: Vec<u8>,
    /// Host directory preopened as `/`.
    rootfs: Option<&'a Path>,
    /// Capacity of the stdout pipe (default 256 MiB).
    stdout_cap: Option<usize>,
    /// Maximum linear memory in bytes.
    memory_cap: Option<usize>,
    /// Fuel for the run (default: practically unlimited).
    fuel: Option<u64>,
    /// Epoch ticks until interruption (default: practically never); a ticker thread
    /// increments the epoch every few milliseconds while such a run executes.
    epoch_ticks: Option<u64>,
    /// Link only `wasi_snapshot_preview1`, not `wasi_unstable`.
    p1_only: bool,
    /// Use an engine without fuel and epoch instrumentation (for measurements); `fuel` and
    /// `epoch_ticks` are ignored then.
    uninstrumented: bool,
}

/// One run's results.
struct Outcome {
    /// `Ok(status)` when the guest returned (0) or called `proc_exit`; `Err` for traps and
    /// instantiation errors.
    status: Result<i32, wasmtime::Error>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

impl Outcome {
    fn stdout(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The exit status, panicking with the outputs if the guest trapped.
    fn code(&self) -> i32 {
        match &self.status {
            Ok(code) => *code,
            Err(e) => panic!(
                "guest failed: {e:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&self.stdout),
                self.stderr()
            ),
        }
    }

    /// The trap, panicking if the guest did not trap.
    fn trap(&self) -> Trap {
        match &self.status {
            Ok(code) => panic!("expected a trap, got exit status {code}; {}", self.stderr()),
            Err(e) => *e
                .downcast_ref::<Trap>()
                .unwrap_or_else(|| panic!("expected a trap, got {e:?}")),
        }
    }
}

/// The engine of the tests: fuel and epoch interruption are on, but only limiting where a test
/// asks for it. With `instrumented == false`: a default engine without either.
fn engine(instrumented: bool) -> &'static Engine {
    static INSTRUMENTED: OnceLock<Engine> = OnceLock::new();
    static PLAIN: OnceLock<Engine> = OnceLock::new();
    let cell = if instrumented { &INSTRUMENTED } else { &PLAIN };
    cell.get_or_init(|| {
        let mut config = Config::new();
        config
            .consume_fuel(instrumented)
            .epoch_interruption(instrumented);
        Engine::new(&config).unwrap()
    })
}

/// Compiles each module once per engine for all tests.
fn module(guest: Guest, instrumented: bool) -> Module {
    static MODULES: OnceLock<Mutex<HashMap<(Guest, bool), Module>>> = OnceLock::new();
    let modules = MODULES.get_or_init(Mutex::default);
    if let Some(module) = modules.lock().unwrap().get(&(guest, instrumented)) {
        return module.clone();
    }
    let bytes = guest
        .bytes()
        .unwrap_or_else(|| panic!("{guest:?} was not built"));
    let module = Module::new(engine(instrumented), bytes).unwrap();
    modules
        .lock()
        .unwrap()
        .insert((guest, instrumented), module.clone());
    module
}

fn run(guest: Guest, run: Run<'_>) -> Outcome {
    let stdout = MemoryOutputPipe::new(run.stdout_cap.unwrap_or(256 << 20));
    let stderr = MemoryOutputPipe::new(1 << 20);
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(&run.args)
        .envs(&run.envs)
        .stdin(MemoryInputPipe::new(run.stdin))
        .stdout(stdout.clone())
        .stderr(stderr.clone());
    if let Some(dir) = run.rootfs {
        wasi.preopened_dir(dir, "/", FsPerms::ReadWrite).unwrap();
    }
    let mut limits = StoreLimitsBuilder::new();
    if let Some(cap) = run.memory_cap {
        limits = limits.memory_size(cap);
    }
    let host = Host {
        wasi: wasi.build_p1(),
        limits: limits.build(),
    };
    let instrumented = !run.uninstrumented;
    let engine = engine(instrumented);
    let module = module(guest, instrumented);
    let mut store = Store::new(engine, host);
    store.limiter(|host| &mut host.limits);
    if instrumented {
        store.set_fuel(run.fuel.unwrap_or(u64::MAX / 2)).unwrap();
    }

    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |host: &mut Host| &mut host.wasi).unwrap();
    if !run.p1_only {
        wasmtime_wasi::p0::add_to_linker_sync(&mut linker, |host: &mut Host| &mut host.wasi)
            .unwrap();
    }
    let start = match linker
        .instantiate(&mut store, &module)
        .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
    {
        Ok(start) => start,
        Err(e) => {
            return Outcome {
                status: Err(e),
                stdout: Vec::new(),
                stderr: Vec::new(),
                elapsed: Duration::ZERO,
            };
        }
    };

    // The epoch deadline counts from now; a ticker advances the epoch while the guest runs.
    if instrumented {
        store.set_epoch_deadline(run.epoch_ticks.unwrap_or(1 << 40));
    }
    let done = Arc::new(AtomicBool::new(false));
    let ticker = run.epoch_ticks.filter(|_| instrumented).map(|_| {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                engine.increment_epoch();
            }
        })
    });

    let started = Instant::now();
    let status = start.call(&mut store, ());
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    if let Some(ticker) = ticker {
        ticker.join().unwrap();
    }
    let status = match status {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(e),
        },
    };
    drop(store);
    Outcome {
        status,
        stdout: stdout.contents().to_vec(),
        stderr: stderr.contents().to_vec(),
        elapsed,
    }
}

/// Shorthand for a run with just these arguments.
fn args<'a>(args: &[&'a str]) -> Run<'a> {
    Run {
        args: args.to_vec(),
        ..Run::default()
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "wasimoff-wasi-apps-test-{}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GREETING: &str = "Hello, wasimoff! This is the hello guest.";
const APPENDED: &str = "appended by the wasimoff hello guest\n";

// ------------------------------------------------------------------------------------------
// hello
// ------------------------------------------------------------------------------------------

#[test]
fn hello_greets_and_prints_argv() {
    let out = run(
        Guest::Hello,
        args(&["hello.wasm", "one", "two words", "ünï"]),
    );
    assert_eq!(out.code(), 0);
    assert_eq!(
        out.stdout(),
        format!("{GREETING}\nargs = [\"hello.wasm\", \"one\", \"two words\", \"ünï\"]\n")
    );
    assert_eq!(out.stderr(), "");
}

#[test]
fn hello_prints_envs() {
    let out = run(
        Guest::Hello,
        Run {
            envs: vec![("A", "1"), ("GREETING", "hi there"), ("EMPTY", "")],
            ..args(&["hello.wasm", "print_envs"])
        },
    );
    assert_eq!(out.code(), 0);
    let envs: Vec<String> = out
        .stdout()
        .lines()
        .filter(|l| l.starts_with("env "))
        .map(str::to_owned)
        .collect();
    assert_eq!(envs, ["env A=1", "env GREETING=hi there", "env EMPTY="]);
}

#[test]
fn hello_echoes_stdin() {
    let input: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let out = run(
        Guest::Hello,
        Run {
            stdin: input.clone(),
            ..args(&["hello.wasm", "stdin"])
        },
    );
    assert_eq!(out.code(), 0);
    let header = format!("{GREETING}\nargs = [\"hello.wasm\", \"stdin\"]\n");
    assert_eq!(&out.stdout[..header.len()], header.as_bytes());
    assert_eq!(&out.stdout[header.len()..], &input[..]);
}

#[test]
fn hello_exits_with_the_requested_status() {
    for (word, code) in [("exit:0", 0), ("exit:3", 3), ("exit:125", 125)] {
        let out = run(Guest::Hello, args(&["hello.wasm", word, "print_envs"]));
        assert_eq!(out.code(), code, "{word}");
        // Nothing after the exit word runs.
        assert_eq!(out.stdout().lines().count(), 2, "{word}");
    }
    let out = run(Guest::Hello, args(&["hello.wasm", "exit:nope"]));
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("not an exit status"),
        "{}",
        out.stderr()
    );
}

#[test]
fn hello_traps_on_request() {
    let out = run(Guest::Hello, args(&["hello.wasm", "trap", "exit:7"]));
    assert_eq!(out.trap(), Trap::UnreachableCodeReached);
    assert!(out.stderr().contains("trap requested"), "{}", out.stderr());
}

#[test]
fn hello_sleeps() {
    let out = run(Guest::Hello, args(&["hello.wasm", "sleep:40"]));
    assert_eq!(out.code(), 0);
    assert!(out.stdout().ends_with("slept 40 ms\n"));
    assert!(
        out.elapsed >= Duration::from_millis(40),
        "{:?}",
        out.elapsed
    );
}

#[test]
fn hello_lists_the_rootfs_and_appends_to_files() {
    let root = TempDir::new();
    std::fs::write(root.0.join("greeting.txt"), "hi\n").unwrap();
    std::fs::create_dir(root.0.join("data")).unwrap();
    std::fs::write(root.0.join("data/numbers.txt"), "1\n2\n").unwrap();
    let out = run(
        Guest::Hello,
        Run {
            rootfs: Some(&root.0),
            ..args(&[
                "hello.wasm",
                "print_rootfs",
                "file:/greeting.txt",
                "file:new.txt",
            ])
        },
    );
    assert_eq!(out.code(), 0, "{}", out.stderr());
    let expected = format!(
        "{GREETING}\n\
         args = [\"hello.wasm\", \"print_rootfs\", \"file:/greeting.txt\", \"file:new.txt\"]\n\
         rootfs: /data/ (dir)\n\
         rootfs: /data/numbers.txt (4 bytes)\n\
         rootfs: /greeting.txt (3 bytes)\n\
         file /greeting.txt: 3 bytes\n\
         file /greeting.txt: now 40 bytes:\n\
         hi\n{APPENDED}\
         file new.txt: does not exist, creating it\n\
         file new.txt: now 37 bytes:\n\
         {APPENDED}"
    );
    assert_eq!(out.stdout(), expected);
    // The changes are visible on the host: this is how artifacts come back.
    let greeting = std::fs::read_to_string(root.0.join("greeting.txt")).unwrap();
    assert_eq!(greeting, format!("hi\n{APPENDED}"));
    assert_eq!(
        std::fs::read_to_string(root.0.join("new.txt")).unwrap(),
        APPENDED
    );
}

#[test]
fn hello_without_rootfs_fails_cleanly() {
    let out = run(Guest::Hello, args(&["hello.wasm", "print_rootfs"]));
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("reading directory /"),
        "{}",
        out.stderr()
    );
    let out = run(Guest::Hello, args(&["hello.wasm", "file:/x.txt"]));
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr().contains("hello: file:/x.txt:"),
        "{}",
        out.stderr()
    );
}

#[test]
fn hello_c_prints_args_envs_and_exits() {
    let Some(_) = apps::HELLO_C else {
        println!(
            "note: skipping hello-c, it was not built: {}",
            apps::HELLO_C_SKIPPED.unwrap_or("unknown reason")
        );
        return;
    };
    let out = run(
        Guest::HelloC,
        Run {
            envs: vec![("A", "1")],
            ..args(&["hello-c.wasm", "x y", "print_envs", "exit:7", "print_envs"])
        },
    );
    assert_eq!(out.code(), 7);
    assert_eq!(
        out.stdout(),
        "Hello, wasimoff! This is the hello-c guest.\nargc = 5\nargv[0] = hello-c.wasm\n\
         argv[1] = x y\nargv[2] = print_envs\nargv[3] = exit:7\nargv[4] = print_envs\nenv A=1\n"
    );
}

#[test]
fn hello_go_prints_args_envs_stdin_and_exits() {
    let Some(_) = apps::HELLO_GO else {
        println!(
            "note: skipping hello-go, it was not built: {}",
            apps::HELLO_GO_SKIPPED.unwrap_or("unknown reason")
        );
        return;
    };
    let out = run(
        Guest::HelloGo,
        Run {
            envs: vec![("A", "1")],
            stdin: b"some input\n".to_vec(),
            ..args(&[
                "hello-go.wasm",
                "x y",
                "print_envs",
                "stdin",
                "exit:7",
                "print_envs",
            ])
        },
    );
    assert_eq!(out.code(), 7, "{}", out.stderr());
    assert_eq!(
        out.stdout(),
        "Hello, wasimoff! This is the hello-go guest.\nargc = 6\nargv[0] = hello-go.wasm\n\
         argv[1] = x y\nargv[2] = print_envs\nargv[3] = stdin\nargv[4] = exit:7\n\
         argv[5] = print_envs\nenv A=1\nstdin: some input\n"
    );
}

// ------------------------------------------------------------------------------------------
// hello-unstable (WAT, legacy namespace)
// ------------------------------------------------------------------------------------------

#[test]
fn hello_unstable_prints_through_the_legacy_namespace() {
    let imports: Vec<(String, String)> = module(Guest::HelloUnstable, true)
        .imports()
        .map(|i| (i.module().to_owned(), i.name().to_owned()))
        .collect();
    assert_eq!(
        imports,
        [("wasi_unstable".to_owned(), "fd_write".to_owned())]
    );

    let out = run(Guest::HelloUnstable, args(&["hello-unstable.wasm"]));
    assert_eq!(out.code(), 0);
    assert_eq!(out.stdout(), "hello world\n");

    // Without the wasi_unstable functions it cannot even be instantiated.
    let out = run(
        Guest::HelloUnstable,
        Run {
            p1_only: true,
            ..args(&["hello-unstable.wasm"])
        },
    );
    let error = format!("{:?}", out.status.unwrap_err());
    assert!(error.contains("wasi_unstable"), "{error}");
}

// ------------------------------------------------------------------------------------------
// loop, membomb, flood, sleep
// ------------------------------------------------------------------------------------------

#[test]
fn loop_is_stopped_by_fuel() {
    let out = run(
        Guest::Loop,
        Run {
            fuel: Some(5_000_000),
            ..args(&["loop.wasm"])
        },
    );
    assert_eq!(out.trap(), Trap::OutOfFuel);
    assert_eq!(out.stdout(), "loop: spinning forever\n");
}

#[test]
fn loop_is_stopped_by_epoch_interruption() {
    let out = run(
        Guest::Loop,
        Run {
            epoch_ticks: Some(10),
            ..args(&["loop.wasm"])
        },
    );
    assert_eq!(out.trap(), Trap::Interrupt);
    assert_eq!(out.stdout(), "loop: spinning forever\n");
}

/// Parses the number in `"... <n> MiB"`.
fn mib(line: &str) -> usize {
    line.trim_end()
        .trim_end_matches(" MiB")
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn membomb_traps_at_the_memory_cap() {
    let out = run(
        Guest::Membomb,
        Run {
            memory_cap: Some(32 << 20),
            ..args(&["membomb.wasm"])
        },
    );
    assert_eq!(out.trap(), Trap::UnreachableCodeReached);
    let stderr = out.stderr();
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("membomb: allocation failed after "),
        "{stderr}"
    );
    let got = mib(last);
    assert!((16..32).contains(&got), "{got} MiB");
}

#[test]
fn membomb_reports_what_it_got() {
    let out = run(
        Guest::Membomb,
        Run {
            memory_cap: Some(48 << 20),
            ..args(&["membomb.wasm", "report", "4"])
        },
    );
    assert_eq!(out.code(), 0);
    let stdout = out.stdout();
    assert!(stdout.starts_with("membomb: got "), "{stdout}");
    let got = mib(&stdout);
    assert!(
        got.is_multiple_of(4) && (32..48).contains(&got),
        "{got} MiB"
    );

    let out = run(Guest::Membomb, args(&["membomb.wasm", "lots"]));
    assert_eq!(out.code(), 1);
    assert!(out.stderr().starts_with("usage: membomb"));
}

/// The 64-byte line `flood` repeats.
const FLOOD_LINE: &[u8; 64] = b"wasimoff flood: 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHI\n";

fn assert_flood_pattern(bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(64).enumerate() {
        assert_eq!(chunk, &FLOOD_LINE[..chunk.len()], "line {i}");
    }
}

#[test]
fn flood_writes_exactly_the_requested_size() {
    for (arg, size) in [("1000", 1000), ("1M", 1 << 20), ("70001", 70001)] {
        let out = run(Guest::Flood, args(&["flood.wasm", arg]));
        assert_eq!(out.code(), 0, "{arg}");
        assert_eq!(out.stdout.len(), size, "{arg}");
        assert_flood_pattern(&out.stdout);
        assert_eq!(out.stderr(), format!("flood: wrote {size} bytes\n"));
    }
    let out = run(Guest::Flood, args(&["flood.wasm", "lots"]));
    assert_eq!(out.code(), 1);
    assert!(out.stderr().starts_with("usage: flood"));
}

#[test]
fn flood_writes_100_mib_by_default() {
    let out = run(Guest::Flood, args(&["flood.wasm"]));
    assert_eq!(out.code(), 0);
    assert_eq!(out.stdout.len(), 100 << 20);
    assert_flood_pattern(&out.stdout[..1 << 20]);
    assert_flood_pattern(&out.stdout[(100 << 20) - 4096..]);
}

#[test]
fn flood_stops_at_the_output_cap() {
    let cap = 100_000;
    let out = run(
        Guest::Flood,
        Run {
            stdout_cap: Some(cap),
            ..args(&["flood.wasm", "1M"])
        },
    );
    // The host stops accepting output at the cap; the guest sees a failing write.
    assert_eq!(out.code(), 1);
    assert_eq!(out.stdout.len(), cap);
    assert_flood_pattern(&out.stdout);
    assert!(
        out.stderr()
            .starts_with("flood: write failed after 65536 bytes"),
        "{}",
        out.stderr()
    );
}

#[test]
fn sleep_really_sleeps() {
    let out = run(Guest::Sleep, args(&["sleep.wasm", "120"]));
    assert_eq!(out.code(), 0);
    assert!(
        out.elapsed >= Duration::from_millis(120),
        "{:?}",
        out.elapsed
    );
    let stdout = out.stdout();
    let slept: f64 = stdout
        .strip_prefix("requested 120 ms, slept ")
        .and_then(|rest| rest.strip_suffix(" ms\n"))
        .unwrap_or_else(|| panic!("{stdout}"))
        .parse()
        .unwrap();
    assert!(slept >= 120.0, "{slept}");

    let out = run(Guest::Sleep, args(&["sleep.wasm", "soon"]));
    assert_eq!(out.code(), 1);
    assert!(out.stderr().starts_with("usage: sleep"));
}

// ------------------------------------------------------------------------------------------
// poll (WAT, poll_oneoff in every shape)
// ------------------------------------------------------------------------------------------

#[test]
fn poll_waits_on_every_kind_of_clock_and_reports_events() {
    for (mode, expected) in [
        ("rel", "poll: n=1 u=1 t=0 e=0\n"),
        ("abs", "poll: n=1 u=1 t=0 e=0\n"),
        ("wall", "poll: n=1 u=1 t=0 e=0\n"),
        ("unstable", "poll: n=1 u=1 t=0 e=0\n"),
        // The earlier of two clocks fires alone.
        ("two", "poll: n=1 u=2 t=0 e=0\n"),
    ] {
        let out = run(Guest::Poll, args(&["poll.wasm", mode, "30"]));
        assert_eq!(out.code(), 0, "{mode}: {}", out.stderr());
        assert_eq!(out.stdout(), expected, "{mode}");
        assert!(
            out.elapsed >= Duration::from_millis(25),
            "{mode}: {:?}",
            out.elapsed
        );
    }
    // stdin is ready at once: its event comes, the long clock does not.
    let out = run(Guest::Poll, args(&["poll.wasm", "mixed", "1000000"]));
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout(), "poll: n=1 u=2 t=1 e=0\n");
    // stdin ends and stays at its end.
    let out = run(
        Guest::Poll,
        Run {
            stdin: b"twelve bytes".to_vec(),
            ..args(&["poll.wasm", "stdin"])
        },
    );
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout(), "stdin: 12 bytes\n");
    // `loop` polls forever; fuel stops it.
    let out = run(
        Guest::Poll,
        Run {
            fuel: Some(1_000_000),
            ..args(&["poll.wasm", "loop", "1000000"])
        },
    );
    assert_eq!(out.trap(), Trap::OutOfFuel);
    assert_eq!(out.stdout(), "poll: looping\n");
    let out = run(Guest::Poll, args(&["poll.wasm", "nope"]));
    assert_eq!(out.code(), 2);
    assert!(out.stdout().starts_with("usage: poll"), "{}", out.stdout());
}

// ------------------------------------------------------------------------------------------
// load
// ------------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn load_prints_the_hash_chain_digest() {
    // The same chain computed here: SHA-256(seed), then `i` times SHA-256(state).
    let chain = |seed: &str, iterations: usize| {
        let mut state: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
        for _ in 0..iterations {
            state = Sha256::digest(state).into();
        }
        format!("digest = {}\n", hex(&state))
    };
    for (argv, expected) in [
        (vec!["load.wasm", "-i", "0"], chain("wasimoff", 0)),
        (vec!["load.wasm", "-i", "1000"], chain("wasimoff", 1000)),
        (
            vec!["load.wasm", "-s", "other", "-i", "3"],
            chain("other", 3),
        ),
        (vec!["load.wasm"], chain("wasimoff", 100_000)),
    ] {
        let out = run(Guest::Load, args(&argv));
        assert_eq!(out.code(), 0, "{argv:?}");
        assert_eq!(out.stdout(), expected, "{argv:?}");
        assert!(out.stderr().starts_with("load: "), "{}", out.stderr());
    }
}

#[test]
fn load_with_memory_is_deterministic() {
    let digests: Vec<String> = (0..2)
        .map(|_| {
            let out = run(Guest::Load, args(&["load.wasm", "-i", "5000", "-m", "2"]));
            assert_eq!(out.code(), 0);
            out.stdout()
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    // Pinned: the memory mode's definition must not change unnoticed.
    assert_eq!(
        digests[0],
        "digest = b4b6085602619a4872d6320259028bb7a9b9b8e4312dba69f47b568ac80dcc8b\n"
    );
    let out = run(Guest::Load, args(&["load.wasm", "-i", "5000", "-m", "3"]));
    assert_ne!(out.stdout(), digests[0]);
}

#[test]
fn load_rejects_bad_arguments() {
    for argv in [
        vec!["load.wasm", "-i"],
        vec!["load.wasm", "-i", "many"],
        vec!["load.wasm", "-m", "5000"],
        vec!["load.wasm", "--bogus"],
    ] {
        let out = run(Guest::Load, args(&argv));
        assert_eq!(out.code(), 1, "{argv:?}");
        assert!(out.stderr().contains("usage: load"), "{}", out.stderr());
        assert_eq!(out.stdout(), "");
    }
}

// ------------------------------------------------------------------------------------------
// tsp
// ------------------------------------------------------------------------------------------

const CITIES8: &str = include_str!("../testdata/cities8.csv");

/// Parses `path = ["a", "b"]` from stderr.
fn tsp_path(stderr: &str) -> Vec<String> {
    let list = stderr
        .trim_end()
        .strip_prefix("path = [")
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("no path in {stderr:?}"));
    list.split(", ")
        .map(|name| name.trim_matches('"').to_owned())
        .collect()
}

#[test]
fn tsp_read_solves_the_fixed_cities() {
    let out = run(
        Guest::Tsp,
        Run {
            stdin: CITIES8.as_bytes().to_vec(),
            ..args(&["tsp.wasm", "read"])
        },
    );
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert_eq!(out.stdout(), "distance = 2904.4335452646787\n");
    let path = tsp_path(&out.stderr());
    assert_eq!(
        path,
        [
            "Aachen", "Gießen", "Fulda", "Erfurt", "Dessau", "Coburg", "Hamm", "Bonn"
        ]
    );

    // The printed distance is the length of the printed path, summed in the same order.
    let coordinates: HashMap<&str, (f64, f64)> = CITIES8
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let mut f = l.splitn(3, ',');
            let x = f.next().unwrap().parse().unwrap();
            let y = f.next().unwrap().parse().unwrap();
            (f.next().unwrap(), (x, y))
        })
        .collect();
    let mut total = 0.0;
    for i in 0..path.len() {
        let (ax, ay) = coordinates[path[i].as_str()];
        let (bx, by) = coordinates[path[(i + 1) % path.len()].as_str()];
        let (dx, dy): (f64, f64) = (ax - bx, ay - by);
        total += (dx * dx + dy * dy).sqrt();
    }
    assert_eq!(format!("distance = {total}\n"), out.stdout());
}

#[test]
fn tsp_rand_solves_a_random_pick() {
    let out = run(Guest::Tsp, args(&["tsp.wasm", "rand", "5"]));
    assert_eq!(out.code(), 0, "{}", out.stderr());
    assert!(out.stdout().starts_with("distance = "), "{}", out.stdout());
    assert!(out.stderr().starts_with("path = ["), "{}", out.stderr());
    assert_eq!(tsp_path(&out.stderr()).len(), 5);
}

#[test]
fn tsp_with_a_seed_is_reproducible_and_write_feeds_read() {
    let solved = run(Guest::Tsp, args(&["tsp.wasm", "rand", "7", "42"]));
    let again = run(Guest::Tsp, args(&["tsp.wasm", "rand", "7", "42"]));
    assert_eq!(solved.code(), 0);
    assert_eq!(solved.stdout, again.stdout);
    assert_eq!(solved.stderr, again.stderr);

    let written = run(Guest::Tsp, args(&["tsp.wasm", "write", "7", "42"]));
    assert_eq!(written.code(), 0);
    assert_eq!(written.stdout().lines().count(), 7);
    let read = run(
        Guest::Tsp,
        Run {
            stdin: written.stdout.clone(),
            ..args(&["tsp.wasm", "read"])
        },
    );
    assert_eq!(read.code(), 0);
    assert_eq!(read.stdout, solved.stdout);
    assert_eq!(read.stderr, solved.stderr);
}

#[test]
fn tsp_rejects_bad_arguments() {
    for argv in [
        vec!["tsp.wasm"],
        vec!["tsp.wasm", "rand"],
        vec!["tsp.wasm", "rand", "0"],
        vec!["tsp.wasm", "rand", "60"],
        vec!["tsp.wasm", "rand", "x"],
        vec!["tsp.wasm", "rand", "5", "-1"],
        vec!["tsp.wasm", "rand", "5", "1", "2"],
        vec!["tsp.wasm", "solve"],
    ] {
        let out = run(Guest::Tsp, args(&argv));
        assert_eq!(out.code(), 1, "{argv:?}");
        assert!(out.stderr().contains("usage: tsp"), "{}", out.stderr());
        assert_eq!(out.stdout(), "", "{argv:?}");
    }
    for stdin in ["", "# nothing\n", "1,2,a\nnope,3,b\n"] {
        let out = run(
            Guest::Tsp,
            Run {
                stdin: stdin.as_bytes().to_vec(),
                ..args(&["tsp.wasm", "read"])
            },
        );
        assert_eq!(out.code(), 1, "{stdin:?}");
    }
}

// ------------------------------------------------------------------------------------------
// examples/tasks
// ------------------------------------------------------------------------------------------

/// How each example task is expected to end when run here.
enum Expect {
    Status(i32),
    Trap(Trap),
    /// Needs a guest that may not be built on this machine.
    StatusIfBuilt(i32),
    /// FFmpeg (`cargo xtask ffmpeg`): checked here, run by examples/tests.
    Ffmpeg,
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tasks")
}

/// Unpacks `zip` into `dir` (directories and regular files only).
fn unzip(zip: &Path, dir: &Path) {
    let file = std::fs::File::open(zip).unwrap();
    let mut archive = zip::ZipArchive::new(file).unwrap();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let relative = entry.enclosed_name().unwrap();
        let path = dir.join(relative);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).unwrap();
        } else {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut out = std::fs::File::create(&path).unwrap();
            std::io::copy(&mut entry, &mut out).unwrap();
        }
    }
}

#[test]
fn example_tasks_are_valid_and_run() {
    let expectations: HashMap<&str, Expect> = HashMap::from([
        ("hello-args.json", Expect::Status(0)),
        ("hello-rootfs.json", Expect::Status(0)),
        ("hello-exit.json", Expect::Status(3)),
        (
            "hello-trap.json",
            Expect::Trap(Trap::UnreachableCodeReached),
        ),
        ("hello-unstable.json", Expect::Status(0)),
        ("hello-c.json", Expect::StatusIfBuilt(0)),
        ("hello-go.json", Expect::StatusIfBuilt(0)),
        ("tsp-rand.json", Expect::Status(0)),
        ("tsp-read.json", Expect::Status(0)),
        ("load.json", Expect::Status(0)),
        ("loop.json", Expect::Trap(Trap::OutOfFuel)),
        ("membomb.json", Expect::Trap(Trap::UnreachableCodeReached)),
        ("flood.json", Expect::Status(0)),
        ("sleep.json", Expect::Status(0)),
        ("ffmpeg-version.json", Expect::Ffmpeg),
        ("ffmpeg-make-clip.json", Expect::Ffmpeg),
        ("ffmpeg-screenshot.json", Expect::Ffmpeg),
        ("ffmpeg-recode.json", Expect::Ffmpeg),
    ]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let expect = expectations
            .get(file.as_str())
            .unwrap_or_else(|| panic!("add {file} to the expectations of this test"));
        seen.push(file.clone());

        let task: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            task["@type"], "wasimoff/wasimoff.v1.Task.Wasip1.Request",
            "{file}"
        );
        assert!(task["info"]["reference"].is_string(), "{file}");
        let params = &task["params"];
        let binary = params["binary"]["ref"].as_str().unwrap();
        if matches!(expect, Expect::Ffmpeg) {
            // FFmpeg's tasks run end to end in examples/tests (the native provider and the
            // page), one after the other: the clip one makes is the others' rootfs.
            assert_eq!(binary, "ffmpeg.wasm", "{file}");
            assert_eq!(params["args"][0], "ffmpeg.wasm", "{file}");
            if let Some(rootfs) = params["rootfs"]["ref"].as_str() {
                assert_eq!(rootfs, "ffmpeg-clip.zip", "{file}");
            }
            continue;
        }
        let guest = Guest::from_name(binary.strip_suffix(".wasm").unwrap())
            .unwrap_or_else(|| panic!("{file}: unknown binary {binary}"));
        let argv: Vec<&str> = params["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(argv.first(), Some(&binary), "{file}: argv[0] is the binary");
        let envs: Vec<(&str, &str)> = params["envs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|e| e.as_str().unwrap().split_once('=').unwrap())
            .collect();
        let stdin = params["stdin"]
            .as_str()
            .map(|s| b64.decode(s).unwrap())
            .unwrap_or_default();
        if file == "tsp-read.json" {
            assert_eq!(
                stdin,
                CITIES8.as_bytes(),
                "{file}: stdin is testdata/cities8.csv"
            );
        }
        let root = TempDir::new();
        if let Some(zip) = params["rootfs"]["ref"].as_str() {
            unzip(&examples_dir().join(zip), &root.0);
        }

        if matches!(expect, Expect::StatusIfBuilt(_)) && guest.bytes().is_none() {
            println!("note: not running {file}, {} was not built", guest.name());
            continue;
        }
        let out = run(
            guest,
            Run {
                args: argv,
                envs,
                stdin,
                rootfs: params["rootfs"].is_object().then_some(root.0.as_path()),
                memory_cap: Some(64 << 20),
                fuel: Some(if guest == Guest::Loop {
                    10_000_000
                } else {
                    u64::MAX / 2
                }),
                ..Run::default()
            },
        );
        match expect {
            Expect::Status(code) | Expect::StatusIfBuilt(code) => {
                assert_eq!(out.code(), *code, "{file}: {}", out.stderr());
            }
            Expect::Trap(trap) => assert_eq!(out.trap(), *trap, "{file}"),
            Expect::Ffmpeg => unreachable!("checked above"),
        }
        for artifact in params["artifacts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let artifact = artifact.as_str().unwrap().trim_start_matches('/');
            assert!(
                root.0.join(artifact).is_file(),
                "{file}: artifact {artifact} missing"
            );
        }
        if file == "hello-rootfs.json" {
            let greeting = std::fs::read_to_string(root.0.join("greeting.txt")).unwrap();
            assert_eq!(
                greeting,
                format!("Hello from the rootfs of the hello example task!\n{APPENDED}")
            );
        }
    }
    seen.sort();
    let mut expected: Vec<&str> = expectations.keys().copied().collect();
    expected.sort_unstable();
    assert_eq!(seen, expected, "every expected example task exists");
}

// ------------------------------------------------------------------------------------------
// Cost measurements (not a test; run with `--ignored --nocapture`, see docs/workloads.md)
// ------------------------------------------------------------------------------------------

#[test]
#[ignore = "measurement for docs/workloads.md, takes half a minute"]
fn measure_workload_costs() {
    let cases: &[&[&str]] = &[
        &["hello.wasm"],
        &["flood.wasm"],
        &["load.wasm", "-i", "0", "-m", "256"],
        &["tsp.wasm", "rand", "9", "1"],
        &["tsp.wasm", "rand", "10", "1"],
        &["tsp.wasm", "rand", "11", "1"],
        &["tsp.wasm", "rand", "12", "1"],
        &["load.wasm", "-i", "100000"],
        &["load.wasm", "-i", "1000000"],
        &["load.wasm", "-i", "1000000", "-m", "1"],
        &["load.wasm", "-i", "1000000", "-m", "256"],
    ];
    for case in cases {
        let guest = Guest::from_name(case[0].trim_end_matches(".wasm")).unwrap();
        // Only the call of `_start` is timed (compilation is cached); best of three, without
        // and with the fuel + epoch instrumentation the other tests use.
        let best = |uninstrumented: bool| {
            (0..3)
                .map(|_| {
                    let out = run(
                        guest,
                        Run {
                            uninstrumented,
                            ..args(case)
                        },
                    );
                    assert_eq!(out.code(), 0, "{case:?}: {}", out.stderr());
                    out.elapsed.as_secs_f64() * 1000.0
                })
                .fold(f64::INFINITY, f64::min)
        };
        println!(
            "{:<34} {:>9.1} ms plain {:>9.1} ms with fuel + epochs",
            case.join(" "),
            best(true),
            best(false)
        );
    }
}

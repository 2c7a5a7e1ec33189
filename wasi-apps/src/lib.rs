//! The guest programs of wasimoff as WebAssembly bytes, for tests, benchmarks and demos.
//!
//! The build script compiles them (see `build.rs` and `docs/workloads.md`): the Rust guests
//! in `guests/` for `wasm32-wasip1` in release mode, the WAT module from its text, and the C
//! guest when a wasm32-capable clang with wasi-libc is installed. Each constant holds one
//! module; [`Guest`] lists them all with their names.
//!
//! | guest | what it does |
//! |---|---|
//! | [`HELLO`] | greeting + argv; words switch on envs, rootfs listing, files, stdin, exit, trap, sleep |
//! | [`TSP`] | brute-force travelling salesman, `tsp rand <n>` / `tsp read` (benchmark) |
//! | [`LOOP`] | spins forever |
//! | [`MEMBOMB`] | grows memory until allocation fails, then traps (or reports) |
//! | [`FLOOD`] | writes 100 MiB (or the given size) to stdout |
//! | [`SLEEP`] | sleeps through `poll_oneoff` and prints the measured time |
//! | [`LOAD`] | iterated SHA-256 with tunable cost, prints a digest |
//! | [`HELLO_UNSTABLE`] | WAT module printing `hello world` via the legacy `wasi_unstable` |
//! | [`POLL`] | WAT module waiting in `poll_oneoff`: relative, absolute and realtime clocks, two clocks, a clock with an fd, `wasi_unstable`; reads stdin past its end |
//! | [`HELLO_C`] | the C hello guest, `None` if it could not be built |
//! | [`HELLO_GO`] | the Go hello guest (argv, envs, stdin, exit), `None` if it could not be built |
//! | [`ffmpeg()`] | FFmpeg, built apart by `cargo xtask ffmpeg` (not by the build script: it takes minutes) |
//!
//! With the feature `conformance`, the `conformance` module is the executor conformance suite
//! over these guests that every `wasimoff_core::executor::Executor` runs. The [`nats`] module
//! starts a `nats-server` for the tests of brokers that share NATS JetStream.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod nats;

/// `hello`: the reference guest (argv, envs, stdin, exit codes, traps, rootfs, artifacts).
pub const HELLO: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello.wasm"));

/// `tsp`: brute-force travelling salesman over (N-1)! tours.
pub const TSP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tsp.wasm"));

/// `loop`: prints one line and never returns.
pub const LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/loop.wasm"));

/// `membomb`: allocates 1 MiB chunks until allocation fails.
pub const MEMBOMB: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/membomb.wasm"));

/// `flood`: writes a repeated 64-byte line to stdout, 100 MiB unless told otherwise.
pub const FLOOD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flood.wasm"));

/// `sleep`: sleeps for the given milliseconds and prints how long it took.
pub const SLEEP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sleep.wasm"));

/// `load`: `-i <iterations>` of SHA-256, prints `digest = <hex>`.
pub const LOAD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/load.wasm"));

/// `wasiprobe`: calls every WASI preview 1 function (edge cases included) and prints what each
/// returned; the differential tests of `wasimoff-wasi` against wasmtime-wasi run it.
pub const PROBE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/wasiprobe.wasm"));

/// What [`PROBE`] prints under wasmtime-wasi when run as `wasiprobe "first arg" ünïcode` with
/// an empty preopened `/` (kept true by `wasimoff-wasi`'s differential test): every executor
/// must print the same.
pub const PROBE_EXPECTED: &str = include_str!("../guests/probe/expected.txt");

/// `hello-unstable`: prints `hello world` through `wasi_unstable.fd_write`.
pub const HELLO_UNSTABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello-unstable.wasm"));

/// `poll`: `poll <mode> [<ms>]` waits in `poll_oneoff` (modes `rel`, `abs`, `wall`, `two`,
/// `mixed`, `loop`, `unstable`) and prints `poll: n=<events> u=<userdata> t=<type> e=<errno>`,
/// or reads stdin to its end twice (`stdin`); see `guests/wat/poll.wat`.
pub const POLL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/poll.wasm"));

/// `hello-c`: the C hello guest, if clang could build it on this machine.
#[cfg(wasimoff_hello_c)]
pub const HELLO_C: Option<&[u8]> = Some(include_bytes!(concat!(env!("OUT_DIR"), "/hello-c.wasm")));

/// `hello-c`: the C hello guest, if clang could build it on this machine.
#[cfg(not(wasimoff_hello_c))]
pub const HELLO_C: Option<&[u8]> = None;

/// `wasiprobe-c`: the C counterpart of [`PROBE`] (stdio, POSIX file calls, directories,
/// links, times and the current directory through wasi-libc), if clang could build it.
#[cfg(wasimoff_hello_c)]
pub const PROBE_C: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/wasiprobe-c.wasm"
)));

/// `wasiprobe-c`: the C counterpart of [`PROBE`], if clang could build it.
#[cfg(not(wasimoff_hello_c))]
pub const PROBE_C: Option<&[u8]> = None;

/// Why [`HELLO_C`] and [`PROBE_C`] are `None` (`None` if they were built).
pub const HELLO_C_SKIPPED: Option<&str> = option_env!("WASIMOFF_HELLO_C_SKIPPED");

/// `hello-go`: the Go hello guest (Go's `wasip1` port), if a Go could build it here
/// (`cargo xtask` installs one).
#[cfg(wasimoff_hello_go)]
pub const HELLO_GO: Option<&[u8]> =
    Some(include_bytes!(concat!(env!("OUT_DIR"), "/hello-go.wasm")));

/// `hello-go`: the Go hello guest, if a Go could build it here.
#[cfg(not(wasimoff_hello_go))]
pub const HELLO_GO: Option<&[u8]> = None;

/// Why [`HELLO_GO`] is `None` (`None` if it was built).
pub const HELLO_GO_SKIPPED: Option<&str> = option_env!("WASIMOFF_HELLO_GO_SKIPPED");

/// The guest workspace's directory, e.g. to build `tsp` natively for comparisons:
/// `cargo build --release --manifest-path <GUESTS_DIR>/Cargo.toml -p tsp`.
pub const GUESTS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/guests");

/// Where FFmpeg's module is looked for: `$WASIMOFF_FFMPEG`, else where `cargo xtask ffmpeg`
/// puts it (`<target>/wasi-apps/ffmpeg.wasm`).
#[cfg(not(target_arch = "wasm32"))]
pub fn ffmpeg_path() -> std::path::PathBuf {
    std::env::var_os("WASIMOFF_FFMPEG").map_or_else(
        || std::path::PathBuf::from(env!("WASIMOFF_FFMPEG_BUILT")),
        std::path::PathBuf::from,
    )
}

/// FFmpeg as a `wasm32-wasip1` module (`cargo xtask ffmpeg`, see docs/workloads.md), read from
/// [`ffmpeg_path`]: `Err` says why there is none. A test that needs it skips with a note when
/// it is missing, unless `WASIMOFF_REQUIRE_FFMPEG` is set (`cargo xtask ci` sets it), and
/// then fails: CI must not pass by skipping.
#[cfg(not(target_arch = "wasm32"))]
pub fn ffmpeg() -> Result<Vec<u8>, String> {
    let path = ffmpeg_path();
    let missing = |why: String| {
        let why = format!(
            "no FFmpeg at {} ({why}): run `cargo xtask ffmpeg`",
            path.display()
        );
        if std::env::var_os("WASIMOFF_REQUIRE_FFMPEG").is_some() {
            panic!("{why} (WASIMOFF_REQUIRE_FFMPEG is set)");
        }
        why
    };
    let bytes = std::fs::read(&path).map_err(|e| missing(e.to_string()))?;
    if !bytes.starts_with(b"\0asm") {
        return Err(missing("not a wasm module".into()));
    }
    Ok(bytes)
}

/// One of the guest programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Guest {
    /// [`HELLO`]
    Hello,
    /// [`TSP`]
    Tsp,
    /// [`LOOP`]
    Loop,
    /// [`MEMBOMB`]
    Membomb,
    /// [`FLOOD`]
    Flood,
    /// [`SLEEP`]
    Sleep,
    /// [`LOAD`]
    Load,
    /// [`HELLO_UNSTABLE`]
    HelloUnstable,
    /// [`POLL`]
    Poll,
    /// [`HELLO_C`]
    HelloC,
    /// [`PROBE`]
    Probe,
    /// [`PROBE_C`]
    ProbeC,
    /// [`HELLO_GO`]
    HelloGo,
}

impl Guest {
    /// Every guest, including the C guests [`Guest::HelloC`] and [`Guest::ProbeC`] and the Go
    /// guest [`Guest::HelloGo`] (which may be unavailable).
    pub const ALL: [Guest; 13] = [
        Guest::Hello,
        Guest::Tsp,
        Guest::Loop,
        Guest::Membomb,
        Guest::Flood,
        Guest::Sleep,
        Guest::Load,
        Guest::HelloUnstable,
        Guest::Poll,
        Guest::HelloC,
        Guest::Probe,
        Guest::ProbeC,
        Guest::HelloGo,
    ];

    /// The guest's name, e.g. `hello-unstable`; the module is `<name>.wasm` (see
    /// [`Guest::file_name`]), which is also what the example tasks call it.
    pub const fn name(self) -> &'static str {
        match self {
            Guest::Hello => "hello",
            Guest::Tsp => "tsp",
            Guest::Loop => "loop",
            Guest::Membomb => "membomb",
            Guest::Flood => "flood",
            Guest::Sleep => "sleep",
            Guest::Load => "load",
            Guest::HelloUnstable => "hello-unstable",
            Guest::Poll => "poll",
            Guest::HelloC => "hello-c",
            Guest::Probe => "wasiprobe",
            Guest::ProbeC => "wasiprobe-c",
            Guest::HelloGo => "hello-go",
        }
    }

    /// `<name>.wasm`.
    pub fn file_name(self) -> String {
        format!("{}.wasm", self.name())
    }

    /// The guest with this [name](Guest::name), if any.
    pub fn from_name(name: &str) -> Option<Guest> {
        Guest::ALL.into_iter().find(|guest| guest.name() == name)
    }

    /// The module's bytes; `None` only for the C and Go guests when they could not be built.
    pub const fn bytes(self) -> Option<&'static [u8]> {
        match self {
            Guest::Hello => Some(HELLO),
            Guest::Tsp => Some(TSP),
            Guest::Loop => Some(LOOP),
            Guest::Membomb => Some(MEMBOMB),
            Guest::Flood => Some(FLOOD),
            Guest::Sleep => Some(SLEEP),
            Guest::Load => Some(LOAD),
            Guest::HelloUnstable => Some(HELLO_UNSTABLE),
            Guest::Poll => Some(POLL),
            Guest::HelloC => HELLO_C,
            Guest::Probe => Some(PROBE),
            Guest::ProbeC => PROBE_C,
            Guest::HelloGo => HELLO_GO,
        }
    }
}

/// Every guest that was built, with its bytes.
pub fn available() -> impl Iterator<Item = (Guest, &'static [u8])> {
    Guest::ALL
        .into_iter()
        .filter_map(|guest| guest.bytes().map(|bytes| (guest, bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_modules_look_like_wasm() {
        for guest in Guest::ALL {
            assert_eq!(Guest::from_name(guest.name()), Some(guest));
        }
        assert_eq!(Guest::from_name("nope"), None);
        for (guest, bytes) in available() {
            assert!(bytes.starts_with(b"\0asm\x01\0\0\0"), "{guest:?}");
        }
        assert_eq!(HELLO_C.is_none(), HELLO_C_SKIPPED.is_some());
        assert_eq!(HELLO_GO.is_none(), HELLO_GO_SKIPPED.is_some());
    }
}

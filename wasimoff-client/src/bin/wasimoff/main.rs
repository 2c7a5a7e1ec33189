//! `wasimoff`: the command-line client of a wasimoff broker.
//!
//! ```text
//! wasimoff upload hello.wasm --name hello.wasm
//! wasimoff run hello.wasm -- print_envs          # uploads the local file, runs it
//! wasimoff task examples/tasks/hello-args.json   # task files (proto3 JSON), results as JSON lines
//! wasimoff batch --template tsp.json --range 0..1000
//! wasimoff status                                # health, slots (workers + prefetch), providers
//! wasimoff providers --json                       # the connected providers
//! ```
//!
//! Exit codes: `run` exits with the task's exit status (0-255). Otherwise: 1 for local,
//! transport and broker errors and for `task`/`batch` runs where some task failed, exited
//! non-zero or had its output truncated; 2 for usage errors and requests the broker rejects as
//! invalid; 74 when `run`'s task exited 0 but a provider cut its stdout or stderr at its output
//! cap (a warning on stderr says which; `--allow-truncated` keeps 0); 75 when the broker's queue
//! is full (retry later, or pass `--retry`); 134 when `run`'s task did not finish normally
//! (trap, resource limit, provider failure, deadline).
//!
//! `run`, `task` and `batch` submit their tasks by id and follow them: when the broker goes away
//! (a restart, even `kill -9` of a broker with a data directory), they reconnect for
//! `--reconnect-for` seconds (300) and go on, and every result is printed exactly once.
//!
//! The tool is native only: on `wasm32` targets (where the library alone is useful) this binary
//! is an empty stub, so that the crate's default features still build there.

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}

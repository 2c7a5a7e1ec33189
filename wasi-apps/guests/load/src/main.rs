//! `load`: a CPU (and optionally memory) load with a tunable cost, for open-loop load tests.
//!
//! ```text
//! load [-i <iterations>] [-m <MiB>] [-s <seed>]     defaults: -i 100000 -m 0 -s wasimoff
//! ```
//!
//! The state starts as SHA-256(seed). Without `-m`, every iteration replaces the state by
//! SHA-256(state), one compression of the hash function. With `-m <MiB>` a buffer of that size
//! is filled from the seed first, and every iteration hashes the state together with a
//! 32-byte cell of the buffer that the state picks, then XORs the new state into another cell
//! it picks (two compressions plus two random memory accesses), which makes large buffers
//! memory-bound. The final state is printed as `digest = <64 hex digits>` on stdout, so the
//! output only depends on the arguments; the measured time goes to stderr as
//! `load: <i> iterations over <m> MiB in <t> ms`. Errors print the usage and exit with 1.

use std::process::ExitCode;
use std::time::Instant;

use sha2::{Digest, Sha256};

const USAGE: &str = "usage: load [-i <iterations>] [-m <MiB>] [-s <seed>]";

/// Parsed command line.
#[derive(Debug)]
struct Options {
    iterations: u64,
    mib: usize,
    seed: String,
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("load: {message}\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    let Some(digest) = run(&options) else {
        eprintln!("load: cannot allocate {} MiB", options.mib);
        return ExitCode::FAILURE;
    };
    let elapsed = start.elapsed();
    println!("digest = {}", hex(&digest));
    eprintln!(
        "load: {} iterations over {} MiB in {:.3} ms",
        options.iterations,
        options.mib,
        elapsed.as_secs_f64() * 1000.0
    );
    ExitCode::SUCCESS
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        iterations: 100_000,
        mib: 0,
        seed: "wasimoff".to_owned(),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-i" => {
                let v = value()?;
                options.iterations = v
                    .parse()
                    .map_err(|e| format!("-i {v:?}: not a number of iterations: {e}"))?;
            }
            "-m" => {
                let v = value()?;
                options.mib = match v.parse() {
                    Ok(mib) if mib <= 4095 => mib,
                    Ok(_) => return Err(format!("-m {v}: at most 4095 MiB fit into wasm32")),
                    Err(e) => return Err(format!("-m {v:?}: not a number of MiB: {e}")),
                };
            }
            "-s" => options.seed = value()?,
            "-h" | "--help" => return Err("help requested".to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}

/// Runs the hash chain; `None` if the buffer cannot be allocated.
fn run(options: &Options) -> Option<[u8; 32]> {
    let mut state: [u8; 32] = Sha256::digest(options.seed.as_bytes()).into();
    if options.mib == 0 {
        for _ in 0..options.iterations {
            state = Sha256::digest(state).into();
        }
        return Some(state);
    }

    let cells = options.mib * (1 << 20) / 32;
    let mut buffer: Vec<[u8; 32]> = Vec::new();
    buffer.try_reserve_exact(cells).ok()?;
    // Fill deterministically and cheaply from the state (SplitMix64).
    let mut x = u64::from_le_bytes(word(&state, 0));
    buffer.extend((0..cells).map(|_| {
        let mut cell = [0u8; 32];
        for part in cell.chunks_exact_mut(8) {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            part.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        cell
    }));
    for _ in 0..options.iterations {
        let read = (u64::from_le_bytes(word(&state, 0)) % cells as u64) as usize;
        let mut hasher = Sha256::new();
        hasher.update(state);
        hasher.update(buffer[read]);
        state = hasher.finalize().into();
        let write = (u64::from_le_bytes(word(&state, 8)) % cells as u64) as usize;
        for (b, s) in buffer[write].iter_mut().zip(state) {
            *b ^= s;
        }
    }
    Some(state)
}

/// The 8 bytes of `state` at `offset`.
fn word(state: &[u8; 32], offset: usize) -> [u8; 8] {
    let mut w = [0u8; 8];
    w.copy_from_slice(&state[offset..offset + 8]);
    w
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

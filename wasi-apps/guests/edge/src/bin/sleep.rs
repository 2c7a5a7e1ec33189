//! `sleep`: sleeps for the given number of milliseconds (default 1000) with
//! `std::thread::sleep`, which is a `poll_oneoff` clock subscription in WASI, and prints the
//! elapsed time it measured on the monotonic clock:
//!
//! ```text
//! $ sleep 250
//! requested 250 ms, slept 250.117 ms
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let ms: u64 = match std::env::args().nth(1).map(|arg| arg.parse()) {
        None => 1000,
        Some(Ok(ms)) => ms,
        Some(Err(e)) => {
            eprintln!("usage: sleep [<milliseconds>]  ({e})");
            return ExitCode::FAILURE;
        }
    };
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    let elapsed = start.elapsed();
    println!(
        "requested {ms} ms, slept {:.3} ms",
        elapsed.as_secs_f64() * 1000.0
    );
    ExitCode::SUCCESS
}

//! `flood`: writes a lot of output to stdout, by default 100 MiB, for testing output caps.
//!
//! ```text
//! flood [<bytes>[K|M|G]]       (binary units: 1K = 1024)
//! ```
//!
//! The output repeats the 64-byte line [`LINE`] and is cut off after exactly the requested
//! number of bytes. When all is written it prints `flood: wrote <n> bytes` on stderr; if a write
//! fails (e.g. the host's output cap is reached) it prints `flood: write failed after <n>
//! bytes: <error>` on stderr (counting whole chunks of 64 KiB) and exits with status 1.

use std::io::{self, Write};
use std::process::ExitCode;

/// The repeated pattern, 64 bytes including the newline.
const LINE: &[u8; 64] = b"wasimoff flood: 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHI\n";

/// Bytes per write call.
const CHUNK: usize = 64 * 1024;

fn main() -> ExitCode {
    let total = match std::env::args().nth(1) {
        None => 100 << 20,
        Some(arg) => match parse_size(&arg) {
            Some(n) => n,
            None => {
                eprintln!("usage: flood [<bytes>[K|M|G]]  (not a size: {arg:?})");
                return ExitCode::FAILURE;
            }
        },
    };

    let buffer: Vec<u8> = LINE.iter().copied().cycle().take(CHUNK).collect();
    let mut out = io::stdout().lock();
    let mut written: u64 = 0;
    while written < total {
        // Every chunk starts at a multiple of 64 bytes, so the pattern continues seamlessly.
        let n = (total - written).min(CHUNK as u64) as usize;
        if let Err(e) = out.write_all(&buffer[..n]) {
            eprintln!("flood: write failed after {written} bytes: {e}");
            return ExitCode::FAILURE;
        }
        written += n as u64;
    }
    if let Err(e) = out.flush() {
        eprintln!("flood: flush failed after {written} bytes: {e}");
        return ExitCode::FAILURE;
    }
    eprintln!("flood: wrote {written} bytes");
    ExitCode::SUCCESS
}

/// Parses `123`, `4K`, `100M` or `1G` (binary units).
fn parse_size(arg: &str) -> Option<u64> {
    let (digits, shift) = match arg.as_bytes().last()? {
        b'K' | b'k' => (&arg[..arg.len() - 1], 10),
        b'M' | b'm' => (&arg[..arg.len() - 1], 20),
        b'G' | b'g' => (&arg[..arg.len() - 1], 30),
        _ => (arg, 0),
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

//! `membomb`: grows its memory in chunks (default 1 MiB, each written to so that it is really
//! used) until an allocation fails, i.e. until the host refuses `memory.grow` or the 4 GiB of
//! wasm32 are used up.
//!
//! ```text
//! membomb [report] [<chunk MiB>]
//! ```
//!
//! By default it then prints `membomb: allocation failed after <n> MiB` on stderr and aborts,
//! which is a wasm trap. With `report` it prints `membomb: got <n> MiB` on stdout and exits 0.
//! Progress goes to stderr every 64 chunks. Without a host memory cap this really takes 4 GiB.

use std::process::ExitCode;

const MIB: usize = 1 << 20;

fn main() -> ExitCode {
    let mut report = false;
    let mut chunk_mib: usize = 1;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "report" => report = true,
            number => match number.parse::<usize>() {
                Ok(n) if (1..=1024).contains(&n) => chunk_mib = n,
                _ => {
                    eprintln!("usage: membomb [report] [<chunk MiB, 1..=1024>]");
                    return ExitCode::FAILURE;
                }
            },
        }
    }

    let chunk = chunk_mib * MIB;
    // Room for every chunk that could fit in 4 GiB, so that this list never needs to grow.
    let mut chunks: Vec<Vec<u8>> = Vec::with_capacity(4096 / chunk_mib + 1);
    loop {
        let mut block = Vec::new();
        if block.try_reserve_exact(chunk).is_err() {
            break;
        }
        // Write every byte so the memory is really touched, not only reserved.
        block.resize(chunk, 0xa5);
        chunks.push(block);
        if chunks.len() % 64 == 0 {
            eprintln!("membomb: {} MiB so far", chunks.len() * chunk_mib);
        }
    }

    let total = chunks.len() * chunk_mib;
    if report {
        println!("membomb: got {total} MiB");
        ExitCode::SUCCESS
    } else {
        eprintln!("membomb: allocation failed after {total} MiB");
        std::process::abort()
    }
}

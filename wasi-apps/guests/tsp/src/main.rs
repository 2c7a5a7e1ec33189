//! `tsp`: the brute-force travelling salesman benchmark (see the `tsp` library for the solver).
//!
//! ```text
//! tsp rand <n> [seed]    solve n cities picked at random from the 59 built-in ones
//! tsp write <n> [seed]   print such a pick as `x,y,name` CSV (input for `tsp read`)
//! tsp read               solve the `x,y,name` CSV read from stdin
//! ```
//!
//! Solving prints `distance = <f64>` on stdout and `path = ["name", ...]` on stderr. The pick
//! is random (WASI `random_get`) unless a seed is given. Usage errors print the usage on stderr
//! and exit with status 1. The cost is (n-1)! tour evaluations: see docs/workloads.md.

use std::io::Read;
use std::process::ExitCode;

use tsp::{BUILTIN_LEN, City, Rng};

const USAGE: &str =
    "usage: tsp rand <n> [seed]    solve n of the 59 built-in cities, picked at random
       tsp write <n> [seed]   print such a pick as x,y,name CSV
       tsp read               solve the x,y,name CSV read from stdin";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["rand", n, seed @ ..] if seed.len() <= 1 => pick(n, seed.first()).map(|c| solve(&c)),
        ["write", n, seed @ ..] if seed.len() <= 1 => {
            pick(n, seed.first()).map(|c| print!("{}", tsp::to_csv(&c)))
        }
        ["read"] => read_stdin().map(|c| solve(&c)),
        _ => Err(format!("unknown arguments {args:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tsp: {message}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}

/// Picks `n` of the built-in cities, seeded with `seed` or from the system's randomness.
fn pick(n: &str, seed: Option<&&str>) -> Result<Vec<City>, String> {
    let n: usize = n
        .parse()
        .map_err(|e| format!("n must be a number of cities: {n:?}: {e}"))?;
    if n == 0 || n > BUILTIN_LEN {
        return Err(format!("n must be between 1 and {BUILTIN_LEN}, not {n}"));
    }
    let mut rng = match seed {
        Some(seed) => Rng::from_seed(
            seed.parse()
                .map_err(|e| format!("seed must be an unsigned 64-bit number: {seed:?}: {e}"))?,
        ),
        None => Rng::from_entropy().map_err(|e| format!("no randomness available: {e}"))?,
    };
    tsp::pick(&tsp::builtin_cities(), n, &mut rng)
        .ok_or_else(|| format!("cannot pick {n} of {BUILTIN_LEN} cities"))
}

/// Reads `x,y,name` CSV from stdin.
fn read_stdin() -> Result<Vec<City>, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("reading stdin: {e}"))?;
    let cities = tsp::parse_csv(&text).map_err(|e| format!("stdin: {e}"))?;
    if cities.is_empty() {
        return Err("read no cities from stdin".to_owned());
    }
    Ok(cities)
}

/// Solves and prints the result.
fn solve(cities: &[City]) {
    let tour = tsp::solve(cities);
    let names: Vec<&str> = tour
        .order
        .iter()
        .map(|&i| cities[i].name.as_str())
        .collect();
    println!("distance = {}", tour.distance);
    eprintln!("path = {names:?}");
}

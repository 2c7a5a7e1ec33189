//! Project automation: `cargo xtask <command>` (see `cargo xtask --help`).

fn main() {}

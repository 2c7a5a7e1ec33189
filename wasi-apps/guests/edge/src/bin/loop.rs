//! `loop`: prints one line and then spins forever, for testing that the host can stop a task
//! that never returns (epoch interruption, fuel, or a provider's task timeout).

use std::hint::black_box;

fn main() {
    println!("loop: spinning forever");
    let mut counter: u64 = 0;
    loop {
        // black_box keeps the loop body from being optimised into something else.
        counter = black_box(counter.wrapping_add(1));
    }
}

//! [`Backoff`]: jittered exponential delays between reconnect attempts.
//!
//! Each delay is drawn uniformly from the upper half of the current step (so many providers that
//! lost the same broker do not reconnect in lockstep); the step doubles after every attempt up to
//! the maximum and starts over after a connection that worked. The randomness is a small
//! xorshift seeded from the clock: no `getrandom`, which would need extra setup on wasm32.

use std::time::Duration;

use wasimoff_core::platform;

/// Reconnect delays.
#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        // Any non-zero seed works for xorshift.
        let seed = platform::unix_nanos().unsigned_abs() | 1;
        Backoff {
            min,
            max,
            step: min,
            rng: seed,
        }
    }

    /// Starts over at the minimum (after a successful connection).
    pub(crate) fn reset(&mut self) {
        self.step = self.min;
    }

    /// The next delay: uniform in `[step/2, step]`; then the step doubles (up to the maximum).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = step.saturating_mul(2).min(self.max);
        let half = step / 2;
        let span = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 { 0 } else { self.next_u64() % span };
        half + Duration::from_nanos(jitter)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_within_bounds_and_reset() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let mut b = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(max);
        }
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn zero_minimum_is_fine() {
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}

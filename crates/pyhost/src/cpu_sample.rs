//! Which requests read their thread's CPU clock, for the admission controller's busy share.
//!
//! The controller needs the CPU time request threads use while admitted (`stats::Field::CpuNs`)
//! against the time they are admitted, to tell an app that computes from one that waits
//! (`control.rs`). `CLOCK_THREAD_CPUTIME_ID` has no vDSO path: each read is a system call
//! (0.4-0.5 us on this VM, against 0.04 us for the monotonic clock), and a request takes two.
//! For a hello-world request in nginx embedded mode (10 system calls, 9-15 us of CPU) that was a
//! fifth of its system calls and several percent of its CPU, spent on a statistic.
//!
//! So a thread reads the clock for every request after a long one (admitted for
//! [`LONG`] or more: two reads are then under 1% of the request) and otherwise for one request in
//! [`EVERY`], chosen at random, whose CPU then counts [`EVERY`] times. Each request's expected
//! contribution is its own CPU time whatever the mix of short and long requests, so the sums the
//! controller reads per window stay unbiased. A window lasts 50 ms at least (`control.rs`): under
//! load that is hundreds to thousands of short requests, tens to hundreds of samples, enough for
//! a busy share that the controller compares against thresholds far apart (a compute-bound
//! probe halves it, a blocked one keeps it). The random choice, not a count, keeps a periodic
//! pattern of requests (every eighth one slow, say) from always landing on or beside the
//! sample.

use std::cell::Cell;
use std::time::Duration;

/// A request admitted at least this long makes its thread measure the next one too.
pub(crate) const LONG: Duration = Duration::from_micros(200);

/// One short request in this many reads the clock (a power of two: the draw is a mask).
pub(crate) const EVERY: u64 = 8;

/// Per thread: whether its last request was long, and the state of its random draw.
#[derive(Clone, Copy)]
pub(crate) struct Sampler {
    last_long: bool,
    /// xorshift64 state; 0 until the thread's first request seeds it.
    rng: u64,
}

impl Sampler {
    /// A sampler whose draw starts from `seed`; 0 means "not seeded yet" ([`start`] seeds it
    /// on the thread's first request), as xorshift would draw zeros from it forever.
    pub(crate) const fn new(seed: u64) -> Sampler {
        Sampler {
            last_long: false,
            rng: seed,
        }
    }

    /// Whether the request starting now reads the CPU clock, and how many times its CPU counts.
    pub(crate) fn start(&mut self) -> Option<u64> {
        if self.last_long {
            return Some(1);
        }
        debug_assert_ne!(
            self.rng, 0,
            "an unseeded sampler would sample every request"
        );
        // xorshift64: a few instructions, and no relation to the app's pattern of requests
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        ((x >> 32) & (EVERY - 1) == 0).then_some(EVERY)
    }

    /// The request ended after being admitted for `admitted`.
    pub(crate) fn end(&mut self, admitted: Duration) {
        self.last_long = admitted >= LONG;
    }
}

thread_local! {
    static SAMPLER: Cell<Sampler> = const { Cell::new(Sampler::new(0)) };
}

/// [`Sampler::start`] for this thread. A thread's first request seeds its draw from where the
/// thread's sampler lives (its thread-local block), so threads that start together do not draw
/// alike; xorshift's state must not be zero.
pub(crate) fn start() -> Option<u64> {
    SAMPLER.with(|cell| {
        let mut s = cell.get();
        if s.rng == 0 {
            let here = cell as *const Cell<Sampler> as u64;
            s.rng = (here.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15) | 1;
        }
        let weight = s.start();
        cell.set(s);
        weight
    })
}

/// [`Sampler::end`] for this thread.
pub(crate) fn end(admitted: Duration) {
    SAMPLER.with(|cell| {
        let mut s = cell.get();
        s.end(admitted);
        cell.set(s);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `pattern` (CPU us per request, admitted as long as it computes) `rounds` times
    /// through one sampler; returns (estimated CPU, true CPU, clock reads).
    fn run(pattern: &[u64], rounds: usize) -> (u64, u64, u64) {
        let mut s = Sampler::new(12345);
        let (mut est, mut truth, mut reads) = (0, 0, 0);
        for _ in 0..rounds {
            for &us in pattern {
                if let Some(w) = s.start() {
                    est += us * w;
                    reads += 1;
                }
                truth += us;
                s.end(Duration::from_micros(us));
            }
        }
        (est, truth, reads)
    }

    #[test]
    fn short_requests_read_the_clock_one_time_in_every() {
        let (est, truth, reads) = run(&[10], 80_000);
        let share = reads as f64 / 80_000.0;
        assert!((share - 1.0 / EVERY as f64).abs() < 0.01, "share {share}");
        let err = (est as f64 / truth as f64 - 1.0).abs();
        assert!(err < 0.03, "estimate off by {err}");
    }

    #[test]
    fn long_requests_are_all_measured() {
        let (est, truth, reads) = run(&[1000], 1000);
        // the first one may be missed: nothing before it was long
        assert!(reads >= 999, "{reads} reads");
        assert!(est >= truth - 1000 * EVERY && est <= truth + 1000 * EVERY);
    }

    /// A short request after each long one is always measured at weight 1, the long ones at
    /// random: the total stays right (a count-based choice reset by the long rule would miss
    /// every long request of this pattern and report a tenth of the CPU).
    #[test]
    fn a_mix_of_long_and_short_requests_is_estimated_without_bias() {
        for pattern in [
            &[1000, 10][..],
            &[10, 10, 10, 10, 10, 10, 10, 2000],
            &[300, 5, 5],
        ] {
            let (est, truth, _) = run(pattern, 20_000);
            let err = (est as f64 / truth as f64 - 1.0).abs();
            assert!(err < 0.05, "pattern {pattern:?}: estimate off by {err}");
        }
    }
}

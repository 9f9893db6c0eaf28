//! The buckets of the duration histograms (request duration, time queued for a Python thread).
//!
//! One fixed set for both: from half a millisecond (a hello-world request through nginx takes
//! less than one) to 30 seconds, roughly 1-2.5-5 per decade like Prometheus' default buckets,
//! which start at 5 ms and would put every fast request into the first bucket.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::layout::Hist;

/// Upper bounds in seconds, as printed in `le`; the +Inf bucket follows.
pub const BOUNDS_TEXT: [&str; BUCKETS - 1] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10", "30",
];

/// The same bounds in nanoseconds.
const BOUNDS_NS: [u64; BUCKETS - 1] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Buckets including +Inf.
pub const BUCKETS: usize = 16;

/// The bucket an observation of `ns` nanoseconds falls in (`le` is inclusive).
pub(crate) fn bucket(ns: u64) -> usize {
    BOUNDS_NS
        .iter()
        .position(|&b| ns <= b)
        .unwrap_or(BUCKETS - 1)
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Hist {
    pub(crate) fn observe(&self, d: Duration) {
        let ns = nanos(d);
        self.buckets[bucket(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// A histogram read out of the region: per-bucket counts (not cumulative) and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistSnapshot {
    pub buckets: [u64; BUCKETS],
    pub sum_seconds: f64,
}

impl HistSnapshot {
    pub(crate) fn add(&mut self, h: &Hist) {
        for (total, b) in self.buckets.iter_mut().zip(&h.buckets) {
            *total += b.load(Ordering::Relaxed);
        }
        self.sum_seconds += h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
    }

    /// Observations in total.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Cumulative counts, as the exposition formats want them (`le` bucket i counts all
    /// observations up to bound i).
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut out = [0; BUCKETS];
        let mut running = 0;
        for (o, b) in out.iter_mut().zip(&self.buckets) {
            running += b;
            *o = running;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_and_rise() {
        for (text, ns) in BOUNDS_TEXT.iter().zip(BOUNDS_NS) {
            let secs: f64 = text.parse().unwrap();
            assert_eq!((secs * 1e9).round() as u64, ns, "{text}");
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(500_000), 0);
        assert_eq!(bucket(500_001), 1);
        assert_eq!(bucket(1_000_000_000), 10);
        assert_eq!(bucket(30_000_000_001), BUCKETS - 1);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn cumulative_counts() {
        let mut h = HistSnapshot::default();
        h.buckets[0] = 2;
        h.buckets[3] = 1;
        h.buckets[BUCKETS - 1] = 4;
        let c = h.cumulative();
        assert_eq!(
            (c[0], c[2], c[3], c[BUCKETS - 2], c[BUCKETS - 1]),
            (2, 2, 3, 3, 7)
        );
        assert_eq!(h.count(), 7);
    }
}

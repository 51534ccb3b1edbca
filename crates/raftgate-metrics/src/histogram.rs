//! A latency histogram that records without a lock.
//!
//! prometheus-client's own `Histogram` takes a write lock on every observation. Per proxied
//! request that lock would be shared by every core serving the same route, so the proxy uses
//! this one instead: one relaxed `fetch_add` on the bucket the duration falls in and one on the
//! sum (kept in whole nanoseconds, so no float compare-and-swap loop), found by a binary search
//! over integer bounds. The count is not stored: a scrape adds up the buckets, so `_count` and
//! the `+Inf` bucket always agree even while requests are being recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
// The bounds in nanoseconds, compared with an observation without converting it to a float:
// those of the cluster's traffic analytics, so the two agree.
use raftgate_model::analytics::{LATENCY_BOUNDS_NS as BOUNDS_NS, latency_bucket};

/// Upper bounds of the buckets, in seconds: from 100 µs, where a proxy's own work lies, to a
/// minute, past which an upstream is broken rather than slow.
const BOUNDS_S: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// One bucket per bound, and one above the last.
const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// The cells of one histogram, shared by every clone of its handle.
#[derive(Debug)]
struct Cells {
    /// Observations per bucket (not cumulative): bucket `i` holds those above bound `i - 1`
    /// and at most bound `i`.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of the observations, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Default for Cells {
    fn default() -> Cells {
        Cells {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

/// A histogram of durations in seconds; cloning the handle shares the histogram.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram(Arc<Cells>);

impl LatencyHistogram {
    /// Records one duration: two relaxed atomic additions, no lock, no allocation.
    pub fn observe(&self, duration: Duration) {
        let ns = nanos(duration);
        self.observe_in(latency_bucket(ns), ns);
    }

    /// Records one duration of `ns` nanoseconds whose bucket the caller already found.
    pub(crate) fn observe_in(&self, bucket: usize, ns: u64) {
        if let Some(cell) = self.0.buckets.get(bucket) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// A duration in whole nanoseconds, saturating (at 584 years).
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(f64::INFINITY, 0u64); BUCKETS];
        let mut count = 0;
        for (i, (slot, cell)) in buckets.iter_mut().zip(&self.0.buckets).enumerate() {
            let n = cell.load(Ordering::Relaxed);
            *slot = (BOUNDS_S.get(i).copied().unwrap_or(f64::INFINITY), n);
            count += n;
        }
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for (s, ns) in BOUNDS_S.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn observations_land_in_their_bucket() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(100)); // on a bound: that bucket (le is inclusive)
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(120));
        let counts: Vec<u64> =
            h.0.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
        assert_eq!(counts[0], 1);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[BUCKETS - 1], 1);
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert_eq!(h.0.sum_ns.load(Ordering::Relaxed), 120_000_201_000);
    }
}

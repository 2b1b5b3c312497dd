//! A Prometheus histogram of durations that takes no lock to observe (`metrics.rs`'s times).

use super::SECONDS_BUCKETS;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A histogram of durations with fixed buckets ([`SECONDS_BUCKETS`]), an atomic counter each and
/// the sum in nanoseconds: observing takes no lock. A scrape reads the buckets one by one, so it
/// may see an observation in the count and not yet in the sum; the next scrape has both.
#[derive(Clone, Debug, Default)]
pub struct DurationHistogram(Arc<HistogramCounts>);

#[derive(Debug, Default)]
struct HistogramCounts {
    /// Observations per bucket (not cumulative); the last is above every bound (`+Inf`).
    buckets: [AtomicU64; SECONDS_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// Observations per bucket (not cumulative) and the sum in nanoseconds, as they are now.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (Vec<u64>, u64) {
        let buckets = self.0.buckets.iter();
        let counts = buckets.map(|count| count.load(Ordering::Relaxed)).collect();
        (counts, self.0.sum_nanos.load(Ordering::Relaxed))
    }

    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = SECONDS_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(SECONDS_BUCKETS.len());
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for DurationHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = SECONDS_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.0.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

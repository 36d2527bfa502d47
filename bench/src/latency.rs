//! Send→receive latency in an HDR histogram, summarised as the percentiles the report prints.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Records latencies in nanoseconds from 1 µs to 60 s at 3 significant digits (0.1 % error).
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    hist: Histogram<u64>,
}

/// Percentiles of one run, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples recorded.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Adds one sample; values outside the bounds are clamped (a negative latency from clock
    /// skew counts as the lowest bucket, one over 60 s as 60 s).
    pub fn record_ns(&mut self, ns: i128) {
        let v = ns.clamp(1_000, 60_000_000_000) as u64;
        self.hist.saturating_record(v);
    }

    /// Adds every sample of `other` (one recorder per consumer task, merged at the end).
    pub fn merge(&mut self, other: &LatencyRecorder) {
        let _ = self.hist.add(&other.hist);
    }

    /// The percentiles so far; all zero when nothing was recorded.
    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1_000.0;
        LatencySummary {
            samples: self.hist.len(),
            p50_us: us(self.hist.value_at_quantile(0.5)),
            p99_us: us(self.hist.value_at_quantile(0.99)),
            p999_us: us(self.hist.value_at_quantile(0.999)),
            max_us: us(self.hist.max()),
            mean_us: self.hist.mean() / 1_000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut r = LatencyRecorder::new();
        for i in 1..=1000u64 {
            r.record_ns(i as i128 * 1_000_000); // 1 ms .. 1000 ms
        }
        let s = r.summary();
        assert_eq!(s.samples, 1000);
        assert!((s.p50_us - 500_000.0).abs() / 500_000.0 < 0.002, "{s:?}");
        assert!((s.p99_us - 990_000.0).abs() / 990_000.0 < 0.002, "{s:?}");
        assert!(
            (s.max_us - 1_000_000.0).abs() / 1_000_000.0 < 0.002,
            "{s:?}"
        );
    }

    #[test]
    fn clamps_skewed_and_huge_samples() {
        let mut r = LatencyRecorder::new();
        r.record_ns(-5);
        r.record_ns(10i128.pow(15));
        let s = r.summary();
        assert_eq!(s.samples, 2);
        assert!(s.max_us <= 60_000_000.0 * 1.001);
    }

    #[test]
    fn merge_adds_samples() {
        let mut a = LatencyRecorder::new();
        let mut b = LatencyRecorder::new();
        a.record_ns(2_000);
        b.record_ns(4_000);
        a.merge(&b);
        assert_eq!(a.summary().samples, 2);
    }
}

//! A fixed-size, log-linear latency histogram (HdrHistogram's idea, 3% resolution) that never
//! allocates after creation, plus the percentile summary every benchmark reports.
//! Pure logic: no I/O, no clocks.

use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two: values are kept to 1/32 (about 3%) of their size.
const SUB_BITS: u32 = 5;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// Values below `SUB_BUCKETS` are exact; each power of two above gets `SUB_BUCKETS` buckets, up to
/// 2^63, so the table has a fixed bound of 60 * 32 = 1920 counters (15 KiB).
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB_BUCKETS;

/// Counts of nanosecond latencies. Exact count, sum, min and max; percentiles to within 3%.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    count: u64,
    sum_nanos: u128,
    min_nanos: u64,
    max_nanos: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB_BUCKETS as u64 {
        return nanos as usize;
    }
    let exp = 63 - nanos.leading_zeros(); // >= SUB_BITS
    let sub = (nanos >> (exp - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
    (exp - SUB_BITS + 1) as usize * SUB_BUCKETS + sub
}

/// The smallest value that falls in `bucket`, and the bucket's width.
fn bucket_range(bucket: usize) -> (u64, u64) {
    if bucket < SUB_BUCKETS {
        return (bucket as u64, 1);
    }
    let exp = (bucket / SUB_BUCKETS) as u32 + SUB_BITS - 1;
    let sub = (bucket % SUB_BUCKETS) as u64;
    let shift = exp - SUB_BITS;
    ((SUB_BUCKETS as u64 + sub) << shift, 1 << shift)
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        LatencyHistogram { counts: vec![0; BUCKETS], count: 0, sum_nanos: 0, min_nanos: u64::MAX, max_nanos: 0 }
    }

    pub fn record(&mut self, latency: Duration) {
        // Saturates after 584 years.
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.record_nanos(nanos);
    }

    pub fn record_nanos(&mut self, nanos: u64) {
        self.counts[bucket_of(nanos)] += 1;
        self.count += 1;
        self.sum_nanos += u128::from(nanos);
        self.min_nanos = self.min_nanos.min(nanos);
        self.max_nanos = self.max_nanos.max(nanos);
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
        self.min_nanos = self.min_nanos.min(other.min_nanos);
        self.max_nanos = self.max_nanos.max(other.max_nanos);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_nanos(&self) -> u64 {
        self.max_nanos
    }

    /// The value at quantile `q` (0.0..=1.0): the upper end of the bucket holding the
    /// `ceil(q * count)`-th smallest value, clamped to the exact min and max (so quantile 0 is
    /// the min and quantile 1 the max). 0 when empty.
    pub fn quantile_nanos(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q <= 0.0 {
            return self.min_nanos;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_range(bucket);
                let high = low.saturating_add(width - 1);
                return high.clamp(self.min_nanos, self.max_nanos);
            }
        }
        self.max_nanos
    }

    pub fn mean_nanos(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_nanos as f64 / self.count as f64
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let us = |nanos: u64| nanos as f64 / 1e3;
        LatencySummary {
            count: self.count,
            mean_us: self.mean_nanos() / 1e3,
            min_us: if self.count == 0 { 0.0 } else { us(self.min_nanos) },
            p50_us: us(self.quantile_nanos(0.50)),
            p90_us: us(self.quantile_nanos(0.90)),
            p99_us: us(self.quantile_nanos(0.99)),
            p999_us: us(self.quantile_nanos(0.999)),
            max_us: us(self.max_nanos),
        }
    }
}

/// Percentiles of a latency distribution, in microseconds (JSON reports use this shape).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// "850 us", "3.21 ms", "1.50 s": a latency in the unit that reads best.
pub fn format_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} us")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_with_three_percent_resolution() {
        let mut previous = 0;
        for nanos in (0..100_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket_of(nanos);
            assert!(b < BUCKETS, "{nanos} -> bucket {b}");
            assert!(b >= previous, "buckets rise with values");
            previous = b;
            let (low, width) = bucket_range(b);
            assert!(low <= nanos && nanos - low < width, "{nanos} not in [{low}, +{width})");
            assert!(width == 1 || (width as f64) <= low as f64 / 31.0, "bucket too wide at {nanos}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_run_are_within_resolution() {
        let mut h = LatencyHistogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let close = |got: u64, want: u64| {
            let err = (got as f64 - want as f64).abs() / want as f64;
            assert!(err <= 0.035, "got {got}, want {want}");
        };
        close(h.quantile_nanos(0.5), 5_000_000);
        close(h.quantile_nanos(0.99), 9_900_000);
        assert_eq!(h.quantile_nanos(1.0), 10_000_000, "the top is the exact max");
        assert_eq!(h.quantile_nanos(0.0), 1_000, "the bottom is the exact min");
        assert_eq!(h.count(), 10_000);
        assert!((h.mean_nanos() - 5_000_500.0).abs() < 1.0);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (LatencyHistogram::new(), LatencyHistogram::new(), LatencyHistogram::new());
        for i in 0..5_000u64 {
            let v = i * i % 7_919 * 1_000 + 17;
            if i % 3 == 0 { &mut a } else { &mut b }.record_nanos(v);
            all.record_nanos(v);
        }
        a.merge(&b);
        assert_eq!(a.summary(), all.summary());
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
    }
}

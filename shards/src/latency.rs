//! A small, fixed-size latency histogram for per-table counters (`nodetool tablestats`
//! latencies): log-scale buckets, four per power of two, so a percentile read from it is
//! within 25% of the truth. Pure: recording is a few integer operations and never allocates.

use std::time::Duration;

/// Buckets per power of two: each bucket spans a quarter of its octave.
const SUB_BUCKETS: usize = 4;
/// Nanoseconds per unit of the first bucket (about one microsecond; shifting is cheaper than
/// dividing by 1000).
const UNIT_SHIFT: u32 = 10;
/// Octaves above the first: the last octave starts at 2^29 units (about 9 minutes) and its
/// last bucket at 1.75 * 2^29 units (about 16 minutes); slower observations are counted there.
const OCTAVES: usize = 28;
/// Buckets of one histogram: `SUB_BUCKETS` of single units, then `SUB_BUCKETS` per octave.
pub const LATENCY_BUCKETS: usize = SUB_BUCKETS * (OCTAVES + 1);

/// Observations per bucket and their sum. 8 bytes per bucket: about 0.9 KiB each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u64; LATENCY_BUCKETS],
    sum_nanos: u64,
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram { buckets: [0; LATENCY_BUCKETS], sum_nanos: 0 }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(nanos)] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos)
    }

    /// Adds `other`'s observations (another shard's, for a node-wide figure).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
    }

    /// The `q` quantile (0..=1) as the upper bound of the bucket that holds it (an estimate
    /// never below the true value, as Cassandra's EstimatedHistogram answers); None when
    /// nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the observation asked for, 1-based: at least the first, at most the last.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_nanos(upper_bound(i)));
            }
        }
        unreachable!("rank {rank} is at most the count {count}")
    }
}

/// Index of the bucket that counts `nanos`.
fn bucket_of(nanos: u64) -> usize {
    let units = nanos >> UNIT_SHIFT;
    if units < SUB_BUCKETS as u64 {
        return units as usize;
    }
    // Octave k (>= 2) holds units in [2^k, 2^(k+1)), split by the two bits below the top one.
    let top = 63 - units.leading_zeros() as usize;
    let sub = ((units >> (top - 2)) & 3) as usize;
    ((top - 1) * SUB_BUCKETS + sub).min(LATENCY_BUCKETS - 1)
}

/// The first nanosecond value of bucket `i`.
fn lower_bound(i: usize) -> u64 {
    let units = if i < SUB_BUCKETS {
        i as u64
    } else {
        let (top, sub) = (i / SUB_BUCKETS + 1, (i % SUB_BUCKETS) as u64);
        (SUB_BUCKETS as u64 + sub) << (top - 2)
    };
    units << UNIT_SHIFT
}

/// The largest nanosecond value bucket `i` counts (the last bucket: every larger value).
fn upper_bound(i: usize) -> u64 {
    match i + 1 {
        LATENCY_BUCKETS => u64::MAX,
        next => lower_bound(next) - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(lower_bound(0), 0);
        for i in 1..LATENCY_BUCKETS {
            assert_eq!(upper_bound(i - 1) + 1, lower_bound(i), "bucket {i}");
            assert_eq!(bucket_of(lower_bound(i)), i);
            assert_eq!(bucket_of(lower_bound(i) - 1), i - 1);
        }
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        // The last bucket starts at 1.75 * 2^29 units of 1024 ns: about 16 minutes.
        let last = Duration::from_nanos(lower_bound(LATENCY_BUCKETS - 1));
        assert_eq!(last, Duration::from_nanos(7 << (29 - 2 + UNIT_SHIFT)), "{last:?}");
    }

    #[test]
    fn quantiles_of_a_known_distribution() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        // 98 fast reads of 50 us and two slow ones of 20 ms.
        for _ in 0..98 {
            h.record(Duration::from_micros(50));
        }
        h.record(Duration::from_millis(20));
        h.record(Duration::from_millis(20));
        assert_eq!(h.count(), 100);
        assert_eq!(h.sum(), Duration::from_micros(98 * 50 + 40_000));
        let p50 = h.quantile(0.5).unwrap();
        assert!(p50 >= Duration::from_micros(50) && p50 < Duration::from_micros(63), "{p50:?}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99 >= Duration::from_millis(20) && p99 < Duration::from_millis(25), "{p99:?}");
        assert_eq!(h.quantile(0.98), h.quantile(0.5), "the 98th observation is still fast");
        assert_eq!(h.quantile(0.0), h.quantile(0.01));
        assert_eq!(h.quantile(1.0), h.quantile(0.99));
    }

    #[test]
    fn merging_adds_every_observation() {
        let (mut a, mut b) = (LatencyHistogram::default(), LatencyHistogram::default());
        a.record(Duration::from_micros(10));
        b.record(Duration::from_secs(3));
        b.record(Duration::from_secs(3));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!(a.quantile(0.5).unwrap() >= Duration::from_secs(3));
        assert!(a.quantile(0.1).unwrap() < Duration::from_micros(12));
    }

    proptest! {
        /// The estimate is never below the true quantile and at most 25% (plus one unit) above.
        #[test]
        fn quantiles_are_upper_bounds_within_a_quarter(
            mut nanos in proptest::collection::vec(0u64..50_000_000_000, 1..200),
            q in 0.0f64..=1.0,
        ) {
            let mut h = LatencyHistogram::default();
            nanos.iter().for_each(|&n| h.record(Duration::from_nanos(n)));
            nanos.sort_unstable();
            let rank = ((q * nanos.len() as f64).ceil() as usize).clamp(1, nanos.len());
            let truth = nanos[rank - 1];
            let estimate = h.quantile(q).unwrap().as_nanos() as u64;
            prop_assert!(estimate >= truth, "{estimate} < {truth}");
            prop_assert!(estimate <= truth + truth / 4 + (1 << UNIT_SHIFT), "{estimate} vs {truth}");
        }
    }
}

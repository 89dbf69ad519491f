//! What a stress run asks of the store: which key each operation touches (sequential, uniform
//! or zipfian over a fixed population, laid out as partitions of `rows_per_partition` rows),
//! whether it reads or writes, and the value bytes a key holds. Pure logic: no I/O, no clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// How keys are drawn from the population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// 0, 1, 2, ... shared by all connections (each key once per pass), wrapping around.
    Sequential,
    /// Every key equally likely.
    Uniform,
    /// A few hot keys (YCSB's zipfian, theta 0.99): key 0 is the hottest.
    Zipfian,
}

/// YCSB's skew constant: the hottest 1% of 1M keys takes about 60% of the operations.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// Largest key population (bounds the zipfian set-up, which is linear in it).
pub const MAX_POPULATION: u64 = 1 << 32;

/// Largest value size.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Random bytes values are cut from (one window per key): twice the largest value, so that
/// windows of any size start at many different offsets.
const VALUE_POOL_BYTES: usize = 2 * MAX_VALUE_BYTES;

/// 2^64 / golden ratio: multiplying by it scatters consecutive numbers (Fibonacci hashing).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkloadError {
    #[error("the key population must be between 1 and {MAX_POPULATION}, got {0}")]
    Population(u64),
    #[error("rows per partition must be between 1 and the population ({population}), got {rows}")]
    RowsPerPartition { rows: u64, population: u64 },
    #[error("the read percentage must be between 0 and 100, got {0}")]
    ReadPercent(u8),
    #[error("the value size must be between 1 and {max} bytes, got {got}")]
    ValueSize { got: usize, max: usize },
}

/// Keys `0..population`; key `k` is row `k % rows_per_partition` of partition
/// `k / rows_per_partition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyShape {
    population: u64,
    rows_per_partition: u64,
}

impl KeyShape {
    pub fn new(population: u64, rows_per_partition: u64) -> Result<KeyShape, WorkloadError> {
        if population == 0 || population > MAX_POPULATION {
            return Err(WorkloadError::Population(population));
        }
        if rows_per_partition == 0 || rows_per_partition > population {
            return Err(WorkloadError::RowsPerPartition { rows: rows_per_partition, population });
        }
        Ok(KeyShape { population, rows_per_partition })
    }

    pub fn population(&self) -> u64 {
        self.population
    }

    /// The partition key bytes of key `k`: the partition number, 8 bytes big-endian (the
    /// store's token hash spreads them over the ring).
    pub fn partition_key(&self, k: u64) -> Vec<u8> {
        (k / self.rows_per_partition).to_be_bytes().to_vec()
    }

    /// The clustering value of key `k` within its partition.
    pub fn clustering(&self, k: u64) -> i64 {
        // k % rows_per_partition < rows_per_partition <= MAX_POPULATION < i64::MAX.
        (k % self.rows_per_partition) as i64
    }

    /// One flat key for stores without clustering (Redis): the partition key, then the
    /// clustering value (big-endian) when partitions hold more than one row.
    pub fn flat_key(&self, k: u64) -> Vec<u8> {
        let mut key = self.partition_key(k);
        if self.rows_per_partition > 1 {
            key.extend_from_slice(&self.clustering(k).to_be_bytes());
        }
        key
    }
}

/// YCSB's zipfian generator over `0..n` (Gray et al., "Quickly generating billion-record
/// synthetic databases", SIGMOD 1994): set-up is linear in `n`, each draw is constant time.
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    pub fn new(n: u64, theta: f64) -> Zipfian {
        let zeta = |count: u64| (1..=count).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2.min(n));
        Zipfian {
            n,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
            half_pow_theta: 1.0 + 0.5f64.powf(theta),
        }
    }

    /// The rank drawn for a uniform `u` in `[0, 1)`; always below `n`.
    pub fn sample(&self, u: f64) -> u64 {
        let uz = u * self.zeta_n;
        if uz < 1.0 || self.n == 1 {
            return 0;
        }
        if uz < self.half_pow_theta {
            return 1;
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }
}

/// Reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Write,
    Read,
}

/// One operation: its kind and its key (`0..population`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub key: u64,
}

/// Everything that decides the operations of a run; shared by the connections.
#[derive(Debug, Clone)]
pub struct Workload {
    pub shape: KeyShape,
    pub distribution: Distribution,
    /// Share of reads, in percent (0: writes only, 100: reads only).
    pub read_percent: u8,
    zipfian: Option<Arc<Zipfian>>,
    /// The next key of the sequential distribution, shared by every connection.
    sequential: Arc<AtomicU64>,
    value_size: usize,
    /// [`VALUE_POOL_BYTES`] random bytes from the seed.
    values: Arc<Vec<u8>>,
}

impl Workload {
    pub fn new(
        shape: KeyShape,
        distribution: Distribution,
        read_percent: u8,
        value_size: usize,
        seed: u64,
    ) -> Result<Workload, WorkloadError> {
        if read_percent > 100 {
            return Err(WorkloadError::ReadPercent(read_percent));
        }
        if value_size == 0 || value_size > MAX_VALUE_BYTES {
            return Err(WorkloadError::ValueSize { got: value_size, max: MAX_VALUE_BYTES });
        }
        let mut values = vec![0u8; VALUE_POOL_BYTES];
        StdRng::seed_from_u64(seed).fill_bytes(&mut values);
        let zipfian =
            (distribution == Distribution::Zipfian).then(|| Arc::new(Zipfian::new(shape.population(), ZIPFIAN_THETA)));
        Ok(Workload {
            shape,
            distribution,
            read_percent,
            zipfian,
            sequential: Arc::new(AtomicU64::new(0)),
            value_size,
            values: Arc::new(values),
        })
    }

    /// The value key `k` holds once written (a function of the key and the seed, so reads can
    /// check what they get back, whichever write came last).
    pub fn value(&self, k: u64) -> &[u8] {
        let windows = (VALUE_POOL_BYTES - self.value_size + 1) as u64;
        // The offset is below `windows`, itself at most VALUE_POOL_BYTES: it fits usize.
        let offset = (k.wrapping_mul(GOLDEN_GAMMA) % windows) as usize;
        &self.values[offset..offset + self.value_size]
    }

    /// The operations of connection `index`: its own random stream from the run's seed.
    pub fn ops(&self, seed: u64, index: usize) -> OpStream {
        let stream_seed = seed ^ (index as u64 + 1).wrapping_mul(GOLDEN_GAMMA);
        OpStream { workload: self.clone(), rng: StdRng::seed_from_u64(stream_seed) }
    }
}

/// One connection's sequence of operations.
pub struct OpStream {
    workload: Workload,
    rng: StdRng,
}

impl OpStream {
    pub fn next_op(&mut self) -> Op {
        let w = &self.workload;
        let kind = if self.rng.gen_range(0..100) < w.read_percent { OpKind::Read } else { OpKind::Write };
        let population = w.shape.population();
        let key = match (&w.zipfian, w.distribution) {
            (Some(zipfian), _) => zipfian.sample(self.rng.gen::<f64>()),
            (None, Distribution::Uniform) => self.rng.gen_range(0..population),
            _ => w.sequential.fetch_add(1, Ordering::Relaxed) % population,
        };
        Op { kind, key }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn workload(distribution: Distribution, population: u64, read_percent: u8) -> Workload {
        Workload::new(KeyShape::new(population, 1).unwrap(), distribution, read_percent, 100, 7).unwrap()
    }

    #[test]
    fn sequential_keys_are_shared_by_connections_and_wrap() {
        let w = workload(Distribution::Sequential, 5, 0);
        let (mut a, mut b) = (w.ops(1, 0), w.ops(1, 1));
        let keys: Vec<u64> = (0..6).map(|i| if i % 2 == 0 { a.next_op().key } else { b.next_op().key }).collect();
        assert_eq!(keys, vec![0, 1, 2, 3, 4, 0]);
    }

    #[test]
    fn uniform_keys_cover_the_population_evenly() {
        let w = workload(Distribution::Uniform, 10, 0);
        let mut ops = w.ops(3, 0);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[ops.next_op().key as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn zipfian_keys_are_skewed_towards_the_first_ranks() {
        let w = workload(Distribution::Zipfian, 1000, 0);
        let mut ops = w.ops(5, 0);
        let mut counts = vec![0u32; 1000];
        for _ in 0..200_000 {
            counts[ops.next_op().key as usize] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500], "{:?}", &counts[..12]);
        // Theta 0.99 over 1000 keys: rank 0 takes 1/zeta(1000) of the draws, about 13%.
        let share = f64::from(counts[0]) / 200_000.0;
        assert!((0.11..0.15).contains(&share), "rank 0 share {share}");
    }

    #[test]
    fn the_read_share_follows_the_percentage() {
        for (percent, low, high) in [(0, 0, 0), (50, 4_700, 5_300), (100, 10_000, 10_000)] {
            let mut ops = workload(Distribution::Uniform, 100, percent).ops(9, 0);
            let reads = (0..10_000).filter(|_| ops.next_op().kind == OpKind::Read).count();
            assert!((low..=high).contains(&reads), "{percent}%: {reads} reads");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_operations() {
        let w = workload(Distribution::Uniform, 1_000_000, 50);
        let (mut a, mut b) = (w.ops(11, 2), w.ops(11, 2));
        for _ in 0..100 {
            assert_eq!(a.next_op(), b.next_op());
        }
    }

    #[test]
    fn partitions_hold_their_rows_in_order() {
        let shape = KeyShape::new(100, 10).unwrap();
        assert_eq!(shape.partition_key(0), shape.partition_key(9));
        assert_ne!(shape.partition_key(9), shape.partition_key(10));
        assert_eq!((shape.clustering(0), shape.clustering(9), shape.clustering(10)), (0, 9, 0));
        assert_eq!(shape.flat_key(3).len(), 16);
        assert_eq!(KeyShape::new(100, 1).unwrap().flat_key(3).len(), 8);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert_eq!(KeyShape::new(0, 1), Err(WorkloadError::Population(0)));
        assert_eq!(KeyShape::new(10, 11), Err(WorkloadError::RowsPerPartition { rows: 11, population: 10 }));
        let shape = KeyShape::new(10, 1).unwrap();
        assert!(matches!(
            Workload::new(shape, Distribution::Uniform, 101, 100, 1),
            Err(WorkloadError::ReadPercent(101))
        ));
        assert!(matches!(Workload::new(shape, Distribution::Uniform, 0, 0, 1), Err(WorkloadError::ValueSize { .. })));
    }

    proptest! {
        #[test]
        fn zipfian_draws_stay_in_range(n in 1u64..100_000, u in 0.0f64..1.0) {
            let z = Zipfian::new(n, ZIPFIAN_THETA);
            prop_assert!(z.sample(u) < n);
        }

        #[test]
        fn flat_keys_are_distinct_per_key(rows in 1u64..50, a in 0u64..10_000, b in 0u64..10_000) {
            let shape = KeyShape::new(10_000, rows).unwrap();
            prop_assert_eq!(shape.flat_key(a) == shape.flat_key(b), a == b);
        }
    }
}

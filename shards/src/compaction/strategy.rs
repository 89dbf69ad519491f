//! Which SSTables of one table to compact next. Pure: it sees sizes and generations, never files.
//!
//! [`SizeTiered`] is Cassandra's SizeTieredCompactionStrategy: SSTables of similar size go into
//! one bucket (and every SSTable below `min_sstable_size` into the same small bucket); a bucket
//! holding at least `min_threshold` SSTables is compacted, at most `max_threshold` of them at a
//! time. Merging N similar files into one keeps the number of SSTables logarithmic in the data
//! size, which bounds read amplification.

use super::CompactionConfig;

/// What a strategy knows of one live SSTable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SstableSummary {
    pub generation: u64,
    /// File size in bytes.
    pub size: u64,
}

/// Picks compactions among the live SSTables of one table (a seam for leveled compaction).
pub trait CompactionStrategy {
    /// Generations of the SSTables to merge now (at least two), or None.
    fn pick(&self, sstables: &[SstableSummary]) -> Option<Vec<u64>>;
    /// Estimated compactions needed before the strategy has nothing left to do.
    fn pending(&self, sstables: &[SstableSummary]) -> usize;
}

#[derive(Debug, Clone, PartialEq)]
pub struct SizeTiered {
    pub min_threshold: usize,
    pub max_threshold: usize,
    pub bucket_low: f64,
    pub bucket_high: f64,
    pub min_sstable_size: u64,
}

impl SizeTiered {
    pub fn from_config(c: &CompactionConfig) -> SizeTiered {
        SizeTiered {
            min_threshold: c.min_threshold,
            max_threshold: c.max_threshold,
            bucket_low: c.bucket_low,
            bucket_high: c.bucket_high,
            min_sstable_size: c.min_sstable_size,
        }
    }

    /// Groups SSTables into buckets of similar size, each sorted smallest first (Cassandra's
    /// `getBuckets`: files are visited by increasing size and join the first bucket whose
    /// running average they are close to).
    pub fn buckets(&self, sstables: &[SstableSummary]) -> Vec<Vec<SstableSummary>> {
        let mut sorted = sstables.to_vec();
        sorted.sort_by_key(|s| (s.size, s.generation));
        // (average size, members)
        let mut buckets: Vec<(f64, Vec<SstableSummary>)> = Vec::new();
        let min = self.min_sstable_size as f64;
        for s in sorted {
            let size = s.size as f64;
            let home = buckets.iter_mut().find(|(avg, _)| {
                (size > avg * self.bucket_low && size < avg * self.bucket_high) || (size < min && *avg < min)
            });
            match home {
                Some((avg, members)) => {
                    let n = members.len() as f64;
                    *avg = (*avg * n + size) / (n + 1.0);
                    members.push(s);
                }
                None => buckets.push((size, vec![s])),
            }
        }
        buckets.into_iter().map(|(_, members)| members).collect()
    }
}

impl CompactionStrategy for SizeTiered {
    /// Among the buckets with at least `min_threshold` SSTables, the one with the smallest
    /// average size (cheapest to merge, and it removes as many files as any other), trimmed to
    /// its `max_threshold` smallest members.
    fn pick(&self, sstables: &[SstableSummary]) -> Option<Vec<u64>> {
        let average = |b: &[SstableSummary]| b.iter().map(|s| s.size as f64).sum::<f64>() / b.len() as f64;
        self.buckets(sstables)
            .into_iter()
            .filter(|b| b.len() >= self.min_threshold)
            .map(|mut b| {
                b.truncate(self.max_threshold);
                b
            })
            .min_by(|a, b| average(a).total_cmp(&average(b)))
            .map(|b| b.iter().map(|s| s.generation).collect())
    }

    /// Cassandra's estimate: every eligible bucket needs ceil(len / max_threshold) compactions.
    fn pending(&self, sstables: &[SstableSummary]) -> usize {
        self.buckets(sstables)
            .iter()
            .filter(|b| b.len() >= self.min_threshold)
            .map(|b| b.len().div_ceil(self.max_threshold))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stcs() -> SizeTiered {
        SizeTiered::from_config(&CompactionConfig::default())
    }

    fn files(sizes: &[u64]) -> Vec<SstableSummary> {
        sizes.iter().enumerate().map(|(i, &size)| SstableSummary { generation: i as u64 + 1, size }).collect()
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_files_share_one_bucket_and_compact_at_min_threshold() {
        let s = stcs();
        assert_eq!(s.pick(&files(&[MIB, 2 * MIB, 3 * MIB])), None, "three are below min_threshold");
        let four = files(&[MIB, 2 * MIB, 3 * MIB, 40 * MIB]);
        assert_eq!(s.pick(&four), Some(vec![1, 2, 3, 4]));
        assert_eq!(s.pending(&four), 1);
    }

    #[test]
    fn files_of_different_sizes_land_in_different_buckets() {
        let s = stcs();
        // Three 100 MiB files and three 1 GiB files: no bucket reaches 4.
        let sizes = [100 * MIB, 110 * MIB, 95 * MIB, 1024 * MIB, 1000 * MIB, 1100 * MIB];
        assert_eq!(s.buckets(&files(&sizes)).len(), 2);
        assert_eq!(s.pick(&files(&sizes)), None);
        // A fourth 100 MiB file makes that bucket eligible; the big ones stay out.
        let mut with_fourth = sizes.to_vec();
        with_fourth.push(105 * MIB);
        let mut picked = s.pick(&files(&with_fourth)).unwrap();
        picked.sort();
        assert_eq!(picked, vec![1, 2, 3, 7]);
    }

    #[test]
    fn a_bucket_is_trimmed_to_max_threshold_smallest_first() {
        let s = SizeTiered { max_threshold: 4, ..stcs() };
        let sizes: Vec<u64> = (0..10).map(|i| MIB + i).collect();
        assert_eq!(s.pick(&files(&sizes)), Some(vec![1, 2, 3, 4]));
        assert_eq!(s.pending(&files(&sizes)), 3);
    }

    #[test]
    fn the_smallest_eligible_bucket_goes_first() {
        let s = stcs();
        let mut sizes = vec![200 * MIB; 4];
        sizes.extend([MIB; 4]);
        let mut picked = s.pick(&files(&sizes)).unwrap();
        picked.sort();
        assert_eq!(picked, vec![5, 6, 7, 8]);
        assert_eq!(s.pending(&files(&sizes)), 2);
    }

    proptest! {
        #[test]
        fn buckets_partition_the_input_and_picks_are_valid(
            sizes in proptest::collection::vec(1u64..(4 << 30), 0..60),
            min_threshold in 2usize..6,
            extra in 0usize..10,
        ) {
            let s = SizeTiered { min_threshold, max_threshold: min_threshold + extra, ..stcs() };
            let input = files(&sizes);
            let mut seen: Vec<u64> = s.buckets(&input).into_iter().flatten().map(|f| f.generation).collect();
            seen.sort();
            prop_assert_eq!(seen, (1..=sizes.len() as u64).collect::<Vec<_>>());
            match s.pick(&input) {
                Some(picked) => {
                    prop_assert!(picked.len() >= s.min_threshold && picked.len() <= s.max_threshold);
                    prop_assert!(s.pending(&input) >= 1);
                    let mut dedup = picked.clone();
                    dedup.sort();
                    dedup.dedup();
                    prop_assert_eq!(dedup.len(), picked.len());
                }
                None => prop_assert_eq!(s.pending(&input), 0),
            }
        }
    }
}

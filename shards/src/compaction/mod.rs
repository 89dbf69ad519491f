//! Compaction of one shard's SSTables: which SSTables to merge (the [`strategy`]), what a merge
//! may drop ([`purge`]), how fast it may go ([`throttle`]), and the streaming merge itself
//! ([`merge`], [`run`]); a cleanup is the same merge of one SSTable keeping only the tokens the
//! shard owns ([`cleanup`]). The shard decides when to compact and publishes the result through one
//! manifest edit; this module never touches the manifest, never deletes an input file and never
//! merges SSTables of different tables.
//!
//! `strategy`, `purge` and `throttle` are pure (plain `#[test]`s and proptests); `merge` and
//! `run` are the glommio edge (SSTable scans and the SSTable writer).

pub mod cleanup;
pub mod merge;
pub mod purge;
pub mod run;
pub mod strategy;
pub mod throttle;

pub use cleanup::{OwnedRanges, OwnedRangesError};
pub use purge::{PurgeCounts, Purger};
pub use run::CompactionReport;
pub use strategy::{CompactionStrategy, SizeTiered, SstableSummary};
pub use throttle::Throttle;

/// Which strategy picks the SSTables to compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategyKind {
    /// Cassandra's SizeTieredCompactionStrategy (the default).
    SizeTiered,
    /// No background compaction (a manual major compaction still runs).
    None,
}

/// Compaction settings of a shard, with Cassandra's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionConfig {
    pub strategy: StrategyKind,
    /// Fewest similar-sized SSTables that make a size-tiered compaction (Cassandra: 4).
    pub min_threshold: usize,
    /// Most SSTables merged by one size-tiered compaction (Cassandra: 32); also bounds the
    /// blocks held in memory by one merge (one per input).
    pub max_threshold: usize,
    /// An SSTable joins a bucket when its size is above `bucket_low` x the bucket's average...
    pub bucket_low: f64,
    /// ...and below `bucket_high` x the average (Cassandra: 0.5 and 1.5).
    pub bucket_high: f64,
    /// SSTables smaller than this all share one bucket (Cassandra: 50 MiB).
    pub min_sstable_size: u64,
    /// Bytes written per second by one shard's compactions, in MiB (Cassandra's
    /// compaction_throughput: 64); 0 = unlimited. Per shard: a node of N shards may write N
    /// times this.
    pub throughput_mib: u64,
    /// Shares of the compaction task queue (foreground work has 1000, flushes 250), so a
    /// compaction yields the CPU to reads and writes.
    pub shares: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            strategy: StrategyKind::SizeTiered,
            min_threshold: 4,
            max_threshold: 32,
            bucket_low: 0.5,
            bucket_high: 1.5,
            min_sstable_size: 50 << 20,
            throughput_mib: 64,
            shares: 100,
        }
    }
}

/// Bounds of [`CompactionConfig::max_threshold`]: a merge holds one block per input.
pub const MAX_THRESHOLD_LIMIT: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("invalid compaction setting: {0}")]
pub struct InvalidCompactionConfig(pub String);

impl CompactionConfig {
    pub fn validate(&self) -> Result<(), InvalidCompactionConfig> {
        let bad = |s: String| Err(InvalidCompactionConfig(s));
        if self.min_threshold < 2 {
            return bad(format!("min_threshold {} must be at least 2", self.min_threshold));
        }
        if self.max_threshold < self.min_threshold || self.max_threshold > MAX_THRESHOLD_LIMIT {
            return bad(format!(
                "max_threshold {} must be in min_threshold ({})..={MAX_THRESHOLD_LIMIT}",
                self.max_threshold, self.min_threshold
            ));
        }
        let low_ok = self.bucket_low > 0.0 && self.bucket_low < 1.0;
        let high_ok = self.bucket_high > 1.0 && self.bucket_high.is_finite();
        if !low_ok || !high_ok {
            return bad(format!(
                "bucket_low {} must be in (0, 1) and bucket_high {} above 1",
                self.bucket_low, self.bucket_high
            ));
        }
        if self.shares == 0 || self.shares > 1000 {
            return bad(format!("shares {} must be in 1..=1000", self.shares));
        }
        Ok(())
    }

    /// The strategy that picks background compactions, or None when they are off.
    pub fn strategy(&self) -> Option<Box<dyn CompactionStrategy>> {
        match self.strategy {
            StrategyKind::SizeTiered => Some(Box::new(SizeTiered::from_config(self))),
            StrategyKind::None => None,
        }
    }

    /// The throughput limit in bytes per second (0 = unlimited).
    pub fn throughput_bytes(&self) -> u64 {
        self.throughput_mib.saturating_mul(1 << 20)
    }
}

/// Compaction counters of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Compactions whose result was published.
    pub completed: u64,
    pub sstables_in: u64,
    pub sstables_out: u64,
    /// Bytes of the input SSTables (each read once by its compaction).
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub purged: PurgeCounts,
    /// Compactions the strategy would run now (Cassandra's pending compactions estimate).
    pub pending: usize,
    pub running: bool,
    /// The last failure (cleared by the next success); a failed compaction changes nothing.
    pub last_error: Option<String>,
}

impl CompactionStats {
    pub fn record(&mut self, report: &CompactionReport) {
        self.completed += 1;
        self.sstables_in += report.sstables_in as u64;
        self.sstables_out += report.sstables_out as u64;
        self.bytes_read += report.bytes_in;
        self.bytes_written += report.bytes_out;
        self.purged.add(&report.purged);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_cassandras_and_bad_settings_are_refused() {
        let c = CompactionConfig::default();
        c.validate().unwrap();
        assert_eq!((c.min_threshold, c.max_threshold, c.min_sstable_size, c.throughput_mib), (4, 32, 50 << 20, 64));
        for bad in [
            CompactionConfig { min_threshold: 1, ..c.clone() },
            CompactionConfig { max_threshold: 3, ..c.clone() },
            CompactionConfig { max_threshold: MAX_THRESHOLD_LIMIT + 1, ..c.clone() },
            CompactionConfig { bucket_low: 1.0, ..c.clone() },
            CompactionConfig { bucket_high: f64::NAN, ..c.clone() },
            CompactionConfig { shares: 0, ..c.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(CompactionConfig { strategy: StrategyKind::None, ..c }.strategy().is_none());
    }
}

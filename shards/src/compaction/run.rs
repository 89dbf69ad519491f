//! One compaction: a streaming k-way merge of input SSTables of one table into one new SSTable,
//! purging on the way what [`Purger`] allows (and, for a cleanup, dropping the partitions whose
//! token the shard does not own) and pacing writes with a [`Throttle`]. Memory is
//! bounded by one block and one partition per input plus the writer's buffers, whatever the
//! file sizes. It writes only its own output file (removed again on any failure) and never
//! touches the manifest or the inputs.

use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use wire::schema::TableId;

use super::cleanup::OwnedRanges;
use super::merge::{PartitionMerge, MERGE_CHUNK_ROWS};
use super::purge::{PurgeCounts, Purger};
use super::throttle::Throttle;
use crate::cell::Timestamp;
use crate::key::PartitionKey;
use crate::row::Partition;
use crate::sstable::{Sstable, SstableConfig, SstableError, SstableMeta, SstableWriter};

#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    #[error(transparent)]
    Sstable(#[from] SstableError),
    #[error("compaction cancelled: the shard is closing")]
    Cancelled,
}

/// What one or more compactions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Compactions whose result was published.
    pub compactions: u64,
    pub sstables_in: usize,
    pub sstables_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Distinct partitions read (versions of one partition in several inputs count once).
    pub partitions_in: u64,
    pub partitions_out: u64,
    /// Partitions a cleanup dropped because the shard does not own their token.
    pub partitions_not_owned: u64,
    pub purged: PurgeCounts,
}

impl CompactionReport {
    pub fn add(&mut self, other: &CompactionReport) {
        self.compactions += other.compactions;
        self.sstables_in += other.sstables_in;
        self.sstables_out += other.sstables_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.partitions_in += other.partitions_in;
        self.partitions_out += other.partitions_out;
        self.partitions_not_owned += other.partitions_not_owned;
        self.purged.add(&other.purged);
    }
}

/// The inputs and output of one compaction.
pub struct MergeJob<'a> {
    pub inputs: &'a [Rc<Sstable>],
    /// The output file (must not exist).
    pub output: &'a Path,
    pub table: TableId,
    pub shard: u16,
    pub generation: u64,
    pub sstable: &'a SstableConfig,
    pub purger: Purger,
    /// A cleanup: only partitions whose token is in these ranges are kept.
    pub owned: Option<&'a OwnedRanges>,
}

/// Merges the inputs into `job.output`. `oldest_outside(key)` is the smallest timestamp any
/// version of the partition outside the inputs may have (`i64::MAX` when none);
/// `cancelled()` is checked after every partition. Returns the output's metadata (None when
/// everything was purged and no file was written) and the counts (with `compactions` 0: the
/// caller counts a compaction once it is published).
pub async fn merge_sstables(
    job: MergeJob<'_>,
    throttle: &mut Throttle,
    oldest_outside: impl Fn(&PartitionKey) -> Timestamp,
    cancelled: impl Fn() -> bool,
) -> Result<(Option<SstableMeta>, CompactionReport), CompactionError> {
    let mut report = CompactionReport {
        sstables_in: job.inputs.len(),
        bytes_in: job.inputs.iter().map(|s| s.file_size()).sum(),
        ..CompactionReport::default()
    };
    let expected: u64 = job.inputs.iter().map(|s| s.meta().partitions).sum();
    let mut merge = PartitionMerge::new();
    for sst in job.inputs {
        // The minimum token holds no real key, so (MIN, MAX] covers every partition. Blocks
        // read once by a compaction would only evict the blocks reads need from the cache.
        merge.push_scan(sst.scan(i64::MIN, i64::MAX, None).without_cache_fill()).await?;
    }
    let mut writer = SstableWriter::create(
        job.output,
        job.table,
        job.shard,
        job.generation,
        expected.min(usize::MAX as u64) as usize,
        job.sstable,
    )
    .await?;
    let mut written = 0u64;
    loop {
        if cancelled() {
            writer.abort().await;
            return Err(CompactionError::Cancelled);
        }
        let next = match merge.next().await {
            Ok(next) => next,
            Err(e) => {
                writer.abort().await;
                return Err(e.into());
            }
        };
        let Some((key, partition)) = next else { break };
        report.partitions_in += 1;
        if job.owned.is_some_and(|owned| !owned.contains(key.token())) {
            report.partitions_not_owned += 1;
            drop_yielding(partition).await;
            glommio::yield_if_needed().await;
            continue;
        }
        let (kept, purged) = purge_yielding(&job.purger, partition, oldest_outside(&key)).await;
        report.purged.add(&purged);
        if let Some(partition) = kept {
            let added = writer.add(&key, &partition).await;
            drop_yielding(partition).await;
            if let Err(e) = added {
                writer.abort().await;
                return Err(e.into());
            }
            report.partitions_out += 1;
        }
        let moved = writer.bytes_written();
        let pause = throttle.admit(moved - written, Instant::now());
        written = moved;
        if !pause.is_zero() {
            glommio::timer::sleep(pause).await;
        }
        glommio::yield_if_needed().await;
    }
    if report.partitions_out == 0 {
        writer.abort().await;
        return Ok((None, report));
    }
    let meta = writer.finish().await?;
    report.sstables_out = 1;
    report.bytes_out = meta.file_size;
    Ok((Some(meta), report))
}

/// [`Purger::purge`] a chunk of rows at a time, letting the shard's other tasks run between
/// chunks: purging (and freeing) a partition of a million rows in one go held every read of
/// the shard for a third of a second.
async fn purge_yielding(
    purger: &Purger,
    mut partition: Partition,
    oldest_outside: Timestamp,
) -> (Option<Partition>, PurgeCounts) {
    if partition.rows.len() <= MERGE_CHUNK_ROWS {
        return purger.purge(partition, oldest_outside);
    }
    let mut counts = PurgeCounts::default();
    let deletion = partition.deletion;
    let mut kept = Vec::with_capacity(partition.rows.len());
    for (n, (key, mut row)) in std::mem::take(&mut partition.rows).into_iter().enumerate() {
        if purger.keeps_row(&mut row, deletion, oldest_outside, &mut counts) {
            kept.push((key, row));
        }
        if n % MERGE_CHUNK_ROWS == MERGE_CHUNK_ROWS - 1 {
            glommio::yield_if_needed().await;
        }
    }
    // In order, a chunk at a time: building the map of a million rows in one go (a sort
    // check and a bulk build) held every read of the shard for 0.1 to 0.7 s.
    for (n, (key, row)) in kept.into_iter().enumerate() {
        partition.rows.insert(key, row);
        if n % MERGE_CHUNK_ROWS == MERGE_CHUNK_ROWS - 1 {
            glommio::yield_if_needed().await;
        }
    }
    purger.finish(partition, oldest_outside, counts)
}

/// Frees a partition a chunk of rows at a time (freeing a million rows takes tens of
/// milliseconds), letting the shard's other tasks run in between.
async fn drop_yielding(mut partition: Partition) {
    while partition.rows.len() > MERGE_CHUNK_ROWS {
        for _ in 0..MERGE_CHUNK_ROWS {
            partition.rows.pop_last();
        }
        glommio::yield_if_needed().await;
    }
}

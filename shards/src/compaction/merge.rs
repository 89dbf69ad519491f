//! A k-way merge of sorted partition streams (a page copied out of a MemTable, or a streaming
//! SSTable scan), yielding each partition once with its versions merged by last-write-wins.
//! Used by token-range scans and by compaction. Holds one head partition per source (and, for
//! a scan, the one block it is reading); never reads ahead further.

use std::collections::VecDeque;

use crate::key::PartitionKey;
use crate::row::Partition;
use crate::sstable::{SstableError, SstableScan};

/// Rows of one source merged between two chances for the shard's other tasks to run.
pub(super) const MERGE_CHUNK_ROWS: usize = 4096;

enum Source {
    Memory(VecDeque<(PartitionKey, Partition)>),
    Disk { scan: SstableScan, head: Option<(PartitionKey, Partition)> },
}

impl Source {
    fn head_key(&self) -> Option<&PartitionKey> {
        match self {
            Source::Memory(page) => page.front().map(|(k, _)| k),
            Source::Disk { head, .. } => head.as_ref().map(|(k, _)| k),
        }
    }

    /// Takes the head partition and advances. Only called when there is a head.
    async fn pop(&mut self) -> Result<Partition, SstableError> {
        match self {
            Source::Memory(page) => Ok(page.pop_front().map(|(_, p)| p).unwrap_or_default()),
            Source::Disk { scan, head } => {
                let taken = head.take().map(|(_, p)| p).unwrap_or_default();
                *head = scan.next().await?;
                Ok(taken)
            }
        }
    }
}

/// Merges sources that each yield partitions in strictly increasing key order.
#[derive(Default)]
pub struct PartitionMerge {
    sources: Vec<Source>,
}

impl PartitionMerge {
    pub fn new() -> PartitionMerge {
        PartitionMerge::default()
    }

    /// Adds partitions already in memory, in key order.
    pub fn push_memory(&mut self, page: VecDeque<(PartitionKey, Partition)>) {
        debug_assert!(page.iter().zip(page.iter().skip(1)).all(|(a, b)| a.0 < b.0));
        self.sources.push(Source::Memory(page));
    }

    /// Adds an SSTable scan (reads its first partition).
    pub async fn push_scan(&mut self, mut scan: SstableScan) -> Result<(), SstableError> {
        let head = scan.next().await?;
        self.sources.push(Source::Disk { scan, head });
        Ok(())
    }

    /// The next partition in key order, merged over every source holding it.
    pub async fn next(&mut self) -> Result<Option<(PartitionKey, Partition)>, SstableError> {
        let Some(min) = self.sources.iter().filter_map(Source::head_key).min().cloned() else { return Ok(None) };
        let mut merged: Option<Partition> = None;
        for source in &mut self.sources {
            if source.head_key() == Some(&min) {
                let p = source.pop().await?;
                match &mut merged {
                    Some(m) => {
                        // A wide partition merges in chunks, letting the shard's other tasks
                        // run in between.
                        m.merge_deletion(p.deletion);
                        let mut rows = p.rows.into_iter();
                        while rows.len() > 0 {
                            m.merge_rows(rows.by_ref().take(MERGE_CHUNK_ROWS));
                            glommio::yield_if_needed().await;
                        }
                    }
                    None => merged = Some(p),
                }
            }
        }
        Ok(merged.map(|p| (min, p)))
    }
}

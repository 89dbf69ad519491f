//! Bounded token-range scans: a scan answer (a page of partitions in storage order) ends
//! after a number of partitions, stored rows or stored bytes, whichever comes first, and may
//! end inside a partition; it then says where the next page resumes (after a clustering key
//! of its last partition). So a wide partition is read a page at a time, never whole. Pure
//! logic: the shard reads, this module counts and cuts.

use std::cmp::Ordering;

use crate::cell::Cell;
use crate::key::{ClusteringKey, PartitionKey};
use crate::row::{Partition, Row};

/// What a row costs beyond its clustering key and its cells, when answers are sized: at
/// least what its encoding in a SCAN_RESULT adds (key length, flags, marker, deletion, count).
pub const ROW_OVERHEAD_BYTES: usize = 48;
/// What a cell costs beyond its value (column id, kind, timestamp, length, TTL), at least.
pub const CELL_OVERHEAD_BYTES: usize = 24;
/// What a partition costs beyond its key's bytes (key length, deletion, row count), at least.
pub const PARTITION_OVERHEAD_BYTES: usize = 24;

/// How much one scan answer may hold beyond its partition count: stored rows (tombstones
/// included) and stored bytes ([`row_bytes`]). An answer holds at least one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanBound {
    pub rows: usize,
    pub bytes: usize,
}

impl ScanBound {
    /// Whole partitions, bounded by their count only (what repair and batchlog replay read).
    pub const WHOLE: ScanBound = ScanBound { rows: usize::MAX, bytes: usize::MAX };

    pub fn new(rows: usize, bytes: usize) -> ScanBound {
        ScanBound { rows: rows.max(1), bytes: bytes.max(1) }
    }
}

/// Where a scan answer stopped and the next one resumes: after partition `key`, or inside it
/// after the row `after` (the rows up to it were sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanResume {
    pub key: PartitionKey,
    pub after: Option<ClusteringKey>,
}

impl ScanResume {
    pub fn after_partition(key: PartitionKey) -> ScanResume {
        ScanResume { key, after: None }
    }

    /// Order of positions in a scan: inside a partition comes before its end.
    pub fn cmp_position(&self, other: &ScanResume) -> Ordering {
        self.key.cmp(&other.key).then_with(|| match (&self.after, &other.after) {
            (Some(a), Some(b)) => a.cmp(b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
    }
}

/// One scan answer: partitions in storage order (only the last may be cut, see `resume`),
/// and where the next answer resumes; `resume` is None only when the range is exhausted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanPage {
    pub partitions: Vec<(PartitionKey, Partition)>,
    pub resume: Option<ScanResume>,
}

impl ScanPage {
    /// The clustering key the last partition was cut after, when it was.
    pub fn cut(&self) -> Option<&ClusteringKey> {
        let resume = self.resume.as_ref()?;
        let (last, _) = self.partitions.last()?;
        (*last == resume.key).then_some(resume.after.as_ref()).flatten()
    }
}

/// Bytes of one row as answers count it: its key, its cells' values and fixed overheads, at
/// least the size of its encoding in a SCAN_RESULT (so a byte bound bounds the frame).
pub fn row_bytes(key: &ClusteringKey, row: &Row) -> usize {
    let value = |c: &Cell| match c {
        Cell::Live { value, .. } | Cell::Expiring { value, .. } => value.len(),
        Cell::Tombstone { .. } => 0,
    };
    let cells: usize = row.cells.iter().map(|(_, c)| value(c) + CELL_OVERHEAD_BYTES).sum();
    let marker = row.marker.as_ref().map_or(0, |m| value(m) + CELL_OVERHEAD_BYTES);
    key.as_bytes().len() + ROW_OVERHEAD_BYTES + cells + marker
}

/// Stored bytes of a partition's rows ([`row_bytes`] summed).
pub fn partition_bytes(partition: &Partition) -> usize {
    partition.rows.iter().map(|(k, r)| row_bytes(k, r)).sum()
}

/// Rows and bytes an answer has taken against its [`ScanBound`].
#[derive(Debug, Clone)]
pub struct PageBudget {
    bound: ScanBound,
    rows: usize,
    bytes: usize,
}

impl PageBudget {
    pub fn new(bound: ScanBound) -> PageBudget {
        PageBudget { bound, rows: 0, bytes: 0 }
    }

    pub fn is_spent(&self) -> bool {
        self.rows >= self.bound.rows || self.bytes >= self.bound.bytes
    }

    /// What is left, as the bound of a read (at least one row).
    pub fn left(&self) -> ScanBound {
        ScanBound::new(self.bound.rows.saturating_sub(self.rows), self.bound.bytes.saturating_sub(self.bytes))
    }

    /// Takes partition `key` and its rows in order until the budget is spent; the rows after
    /// the one that spent it are dropped and that row's key is returned (the answer is cut
    /// there).
    pub fn take(&mut self, key: &PartitionKey, partition: &mut Partition) -> Option<ClusteringKey> {
        self.bytes = self.bytes.saturating_add(key.bytes().len() + PARTITION_OVERHEAD_BYTES);
        let mut cut = None;
        let mut rows = partition.rows.iter().peekable();
        while let Some((key, row)) = rows.next() {
            self.rows += 1;
            self.bytes = self.bytes.saturating_add(row_bytes(key, row));
            if self.is_spent() && rows.peek().is_some() {
                cut = Some(key.clone());
                break;
            }
        }
        if let Some(after) = &cut {
            partition.truncate_after(after);
        }
        cut
    }
}

/// Merges answers for disjoint sets of keys of one range (one per shard) into one answer of
/// at most `limit` partitions within `bound`: a part that stopped early only vouches for
/// keys up to where it stopped, so the result ends at the earliest such position.
pub fn merge_disjoint(pages: Vec<ScanPage>, limit: usize, bound: ScanBound) -> ScanPage {
    let cutoff = pages.iter().filter_map(|p| p.resume.clone()).min_by(|a, b| a.cmp_position(b));
    let mut all: Vec<(PartitionKey, Partition)> = pages
        .into_iter()
        .flat_map(|p| p.partitions)
        .filter(|(key, _)| cutoff.as_ref().is_none_or(|c| *key <= c.key))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = ScanPage::default();
    let mut budget = PageBudget::new(bound);
    for (key, mut partition) in all {
        if out.partitions.len() >= limit || budget.is_spent() {
            out.resume = out.partitions.last().map(|(k, _)| ScanResume::after_partition(k.clone()));
            return out;
        }
        let cut = budget.take(&key, &mut partition);
        out.partitions.push((key.clone(), partition));
        if let Some(after) = cut {
            out.resume = Some(ScanResume { key, after: Some(after) });
            return out;
        }
    }
    out.resume = cutoff;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> PartitionKey {
        PartitionKey::from_serialized(n.to_be_bytes().to_vec())
    }

    fn ck(i: u32) -> ClusteringKey {
        ClusteringKey::from_encoded(i.to_be_bytes().to_vec())
    }

    fn partition(rows: u32, value_len: usize) -> Partition {
        let row =
            |_| Row { marker: None, deletion: None, cells: vec![(0, Cell::Live { ts: 1, value: vec![7; value_len] })] };
        Partition { deletion: None, rows: (0..rows).map(|i| (ck(i), row(i))).collect() }
    }

    #[test]
    fn a_budget_cuts_a_partition_after_the_row_that_spends_it() {
        let mut budget = PageBudget::new(ScanBound::new(10, usize::MAX));
        let mut p = partition(25, 4);
        assert_eq!(budget.take(&key(1), &mut p), Some(ck(9)));
        assert_eq!(p.rows.len(), 10);
        assert!(budget.is_spent());
        // By bytes: the partition's key, then rows of a 4-byte key and a 4-byte value each; a
        // bound of 2.5 rows keeps 3.
        let header = 4 + PARTITION_OVERHEAD_BYTES;
        let per_row = 4 + ROW_OVERHEAD_BYTES + 4 + CELL_OVERHEAD_BYTES;
        let mut budget = PageBudget::new(ScanBound::new(usize::MAX, header + per_row * 5 / 2));
        let mut p = partition(10, 4);
        assert_eq!(budget.take(&key(1), &mut p), Some(ck(2)));
        assert_eq!(p.rows.len(), 3);
        // A partition that ends exactly where the budget does is whole: nothing is cut.
        let mut budget = PageBudget::new(ScanBound::new(3, usize::MAX));
        let mut p = partition(3, 4);
        assert_eq!(budget.take(&key(1), &mut p), None);
        assert!(budget.is_spent());
    }

    #[test]
    fn a_row_larger_than_the_byte_bound_is_an_answer_of_its_own() {
        let mut budget = PageBudget::new(ScanBound::new(100, 10));
        let mut p = partition(3, 1000);
        assert_eq!(budget.take(&key(1), &mut p), Some(ck(0)));
        assert_eq!(p.rows.len(), 1);
    }

    #[test]
    fn disjoint_answers_end_at_the_earliest_place_one_stopped() {
        let mut keys: Vec<PartitionKey> = (0..6).map(key).collect();
        keys.sort();
        // Shard A stopped inside keys[2]; shard B has keys[1], keys[3], keys[5] and is done.
        let a = ScanPage {
            partitions: vec![(keys[0].clone(), partition(2, 1)), (keys[2].clone(), partition(3, 1))],
            resume: Some(ScanResume { key: keys[2].clone(), after: Some(ck(2)) }),
        };
        let b = ScanPage {
            partitions: [1, 3, 5].iter().map(|&i| (keys[i].clone(), partition(1, 1))).collect(),
            resume: None,
        };
        let merged = merge_disjoint(vec![a.clone(), b.clone()], 100, ScanBound::WHOLE);
        let got: Vec<&PartitionKey> = merged.partitions.iter().map(|(k, _)| k).collect();
        assert_eq!(got, [&keys[0], &keys[1], &keys[2]]);
        assert_eq!(merged.resume, Some(ScanResume { key: keys[2].clone(), after: Some(ck(2)) }));
        assert_eq!(merged.cut(), Some(&ck(2)));
        // The bound applies to the merge as well: 3 rows end it inside keys[1]'s successor.
        let merged = merge_disjoint(vec![a.clone(), b.clone()], 100, ScanBound::new(4, usize::MAX));
        assert_eq!(merged.partitions.len(), 3);
        assert_eq!(merged.resume, Some(ScanResume { key: keys[2].clone(), after: Some(ck(0)) }));
        // The partition count ends it after a whole partition.
        let merged = merge_disjoint(vec![a, b], 2, ScanBound::WHOLE);
        assert_eq!(merged.resume, Some(ScanResume::after_partition(keys[1].clone())));
    }

    #[test]
    fn positions_inside_a_partition_come_before_its_end() {
        let inside = ScanResume { key: key(1), after: Some(ck(5)) };
        let end = ScanResume::after_partition(key(1));
        assert_eq!(inside.cmp_position(&end), Ordering::Less);
        assert_eq!(end.cmp_position(&inside), Ordering::Greater);
        let earlier = ScanResume { key: key(1), after: Some(ck(4)) };
        assert_eq!(earlier.cmp_position(&inside), Ordering::Less);
    }
}

//! The MemTable of one table in one shard: rows in storage order in one flat sorted map keyed by
//! (partition key, clustering key), plus partition deletions, each version merged in by per-cell
//! last-write-wins, with memory accounted in bytes.
//!
//! Flat rather than a map of partitions each holding a map of rows: a B-tree node per
//! single-row partition costs over a kilobyte, a shared node a few dozen bytes per row.
//! Owned by exactly one shard (no locks). It never decides when it is full: the shard compares
//! [`MemTable::bytes`] with its budget and turns "full" into a flush.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

use wire::Token;

use crate::cell::Deletion;
use crate::key::{ClusteringKey, PartitionKey};
use crate::mutation::PartitionUpdate;
use crate::row::{ClusteringSlice, Partition, PartitionRows, Row};
use crate::slice::{chunk_of, SourceChunk};

/// Bytes charged per stored row on top of its keys and cells: its share of B-tree nodes.
const ROW_OVERHEAD: usize = 64;

/// Where a row sits: storage order is partition key, then clustering key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    partition: PartitionKey,
    clustering: ClusteringKey,
}

#[derive(Debug)]
pub struct MemTable {
    rows: BTreeMap<RowKey, Row>,
    deletions: BTreeMap<PartitionKey, Deletion>,
    /// Approximate bytes held; only ever grows (merges may free memory, which is not credited
    /// back, so accounting is conservative).
    bytes: usize,
    updates: u64,
    min_timestamp: i64,
    max_timestamp: i64,
}

impl Default for MemTable {
    fn default() -> Self {
        MemTable::new()
    }
}

impl MemTable {
    pub fn new() -> MemTable {
        MemTable {
            rows: BTreeMap::new(),
            deletions: BTreeMap::new(),
            bytes: 0,
            updates: 0,
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
        }
    }

    /// Merges one stamped update.
    pub fn apply(&mut self, update: PartitionUpdate) {
        if let Some(ts) = update.max_timestamp() {
            self.max_timestamp = self.max_timestamp.max(ts);
            self.min_timestamp = self.min_timestamp.min(ts);
        }
        self.updates += 1;
        let PartitionUpdate { key, deletion, rows, .. } = update;
        let deletion = self.merge_partition_deletion(&key, deletion);
        let mut rows = rows.into_iter().peekable();
        let mut key = Some(key);
        while let Some((clustering, row)) = rows.next() {
            // The last row takes the key itself; earlier ones clone it.
            let partition = if rows.peek().is_some() { key.clone() } else { key.take() };
            let Some(partition) = partition else { break };
            let size = row.heap_size() + clustering.heap_size() + partition.heap_size() + ROW_OVERHEAD;
            match self.rows.entry(RowKey { partition, clustering }) {
                Entry::Occupied(mut e) => {
                    self.bytes += row.heap_size();
                    e.get_mut().merge(row, deletion);
                    if e.get().is_empty() {
                        e.remove();
                    }
                }
                Entry::Vacant(e) => {
                    let mut row = row;
                    row.purge(deletion);
                    if !row.is_empty() {
                        self.bytes += size;
                        e.insert(row);
                    }
                }
            }
        }
    }

    /// Records a partition deletion and drops the rows it shadows; returns the partition's
    /// deletion after the merge.
    fn merge_partition_deletion(&mut self, key: &PartitionKey, deletion: Option<Deletion>) -> Option<Deletion> {
        let Some(new) = deletion else { return self.deletions.get(key).copied() };
        let merged = match self.deletions.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                if new <= *e.get() {
                    return Some(*e.get());
                }
                e.insert(new);
                new
            }
            Entry::Vacant(e) => {
                self.bytes += key.heap_size() + ROW_OVERHEAD;
                *e.insert(new)
            }
        };
        let keys: Vec<RowKey> = self.partition_rows(key).map(|(k, _)| k.clone()).collect();
        for k in keys {
            if let Entry::Occupied(mut e) = self.rows.entry(k) {
                e.get_mut().purge(Some(merged));
                if e.get().is_empty() {
                    e.remove();
                }
            }
        }
        Some(merged)
    }

    fn partition_rows<'a>(&'a self, key: &'a PartitionKey) -> impl Iterator<Item = (&'a RowKey, &'a Row)> + 'a {
        let start = RowKey { partition: key.clone(), clustering: ClusteringKey::default() };
        self.rows.range(start..).take_while(move |(k, _)| k.partition == *key)
    }

    /// The stored versions of one partition's rows inside `slice` (not yet resolved against
    /// the clock: expired cells and tombstones are included, for merging with SSTables).
    pub fn get(&self, key: &PartitionKey, slice: &ClusteringSlice) -> Option<Partition> {
        let deletion = self.deletions.get(key).copied();
        let rows: BTreeMap<ClusteringKey, Row> = self.slice_rows(key, slice).collect();
        (deletion.is_some() || !rows.is_empty()).then_some(Partition { deletion, rows })
    }

    /// At most `max_rows` of the rows [`MemTable::get`] returns, from the slice's start: one
    /// source's chunk of a bounded read (`slice` module). Seeks to the start; copies only the
    /// rows it returns.
    pub fn get_chunk(&self, key: &PartitionKey, slice: &ClusteringSlice, max_rows: usize) -> SourceChunk {
        chunk_of(self.deletions.get(key).copied(), self.slice_rows(key, slice), max_rows)
    }

    /// The partition's rows inside `slice`, in clustering order, copied as they are taken.
    fn slice_rows<'a>(
        &'a self,
        key: &'a PartitionKey,
        slice: &'a ClusteringSlice,
    ) -> impl Iterator<Item = (ClusteringKey, Row)> + 'a {
        let lower = match &slice.start {
            Bound::Unbounded => ClusteringKey::default(),
            Bound::Included(c) | Bound::Excluded(c) => c.clone(),
        };
        let start = RowKey { partition: key.clone(), clustering: lower };
        self.rows
            .range(start..)
            .take_while(move |(k, _)| k.partition == *key && slice.before_end(&k.clustering))
            .filter(move |(k, _)| slice.contains(&k.clustering))
            .map(|(k, r)| (k.clustering.clone(), r.clone()))
    }

    /// Partitions whose token lies in (start, end] and, when `after` is given, whose key sorts
    /// after it (paging), in storage order. Token ranges are start-exclusive and end-inclusive,
    /// as Cassandra's.
    pub fn range(&self, start: Token, end: Token, after: Option<&PartitionKey>) -> PartitionRange<'_> {
        // The smallest possible key with a token above `start`; none when start is the maximum.
        let first = start.checked_add(1).map(PartitionKey::with_token_lower_bound);
        let lower = match (&first, after) {
            (Some(f), Some(a)) if a >= f => Bound::Excluded(a.clone()),
            (Some(f), _) => Bound::Included(f.clone()),
            (None, _) => Bound::Excluded(PartitionKey::with_token_lower_bound(i64::MAX)),
        };
        let empty = first.is_none();
        let row_lower = match &lower {
            // Rows of the `after` partition itself are skipped by the iterator.
            Bound::Excluded(k) | Bound::Included(k) => {
                Bound::Included(RowKey { partition: k.clone(), clustering: ClusteringKey::default() })
            }
            Bound::Unbounded => Bound::Unbounded,
        };
        PartitionRange {
            rows: self.rows.range((row_lower, Bound::Unbounded)).peekable(),
            deletions: self.deletions.range((lower.clone(), Bound::Unbounded)).peekable(),
            lower,
            end: if empty { None } else { Some(end) },
            max_rows: usize::MAX,
        }
    }

    /// Every partition in storage order, borrowed: what a flush writes, without copying a row.
    pub fn sorted_partitions(&self) -> SortedPartitions<'_> {
        SortedPartitions { rows: self.rows.iter().peekable(), deletions: self.deletions.iter().peekable() }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Distinct partitions (with rows or a partition deletion). Counted on demand (flushes and
    /// statistics), keeping the write path free of the extra lookups: a walk over the keys of
    /// both sorted maps that copies no row (the node's statistics ask every gossip round).
    pub fn partitions(&self) -> usize {
        let mut deletions = self.deletions.keys().peekable();
        let mut count = 0;
        let mut last: Option<&PartitionKey> = None;
        for key in self.rows.keys().map(|k| &k.partition) {
            if last == Some(key) {
                continue;
            }
            // Deleted partitions sorting before this one hold no rows: each counts once.
            while deletions.next_if(|d| *d < key).is_some() {
                count += 1;
            }
            deletions.next_if(|d| *d == key);
            count += 1;
            last = Some(key);
        }
        count + deletions.count()
    }

    /// Frees up to `n` rows (first in storage order) and, once no row is left, the partition
    /// deletions; true when nothing is left. Dropping a full MemTable at once takes tens of
    /// milliseconds (a free per key, clustering key and cell): a shard retires a flushed one
    /// a chunk at a time between other work.
    pub fn release_some(&mut self, n: usize) -> bool {
        for _ in 0..n {
            if self.rows.pop_first().is_none() {
                break;
            }
        }
        if self.rows.is_empty() {
            self.deletions.clear();
        }
        self.is_empty()
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.deletions.is_empty()
    }

    /// (min, max) timestamp of everything applied, None when empty.
    pub fn timestamp_range(&self) -> Option<(i64, i64)> {
        (self.min_timestamp <= self.max_timestamp).then_some((self.min_timestamp, self.max_timestamp))
    }
}

/// Every partition of a MemTable in storage order, each borrowed from the flat row map and the
/// partition deletions ([`MemTable::sorted_partitions`]).
pub struct SortedPartitions<'a> {
    rows: Peekable<std::collections::btree_map::Iter<'a, RowKey, Row>>,
    deletions: Peekable<std::collections::btree_map::Iter<'a, PartitionKey, Deletion>>,
}

/// One partition of a MemTable, borrowed: its deletion and its run of rows in the row map.
pub struct BorrowedPartition<'a> {
    deletion: Option<Deletion>,
    /// Positioned at the partition's first row; the partition has the next `len` rows.
    rows: Peekable<std::collections::btree_map::Iter<'a, RowKey, Row>>,
    len: usize,
}

impl PartitionRows for BorrowedPartition<'_> {
    fn deletion(&self) -> Option<Deletion> {
        self.deletion
    }

    fn rows(&self) -> impl Iterator<Item = (&ClusteringKey, &Row)> {
        self.rows.clone().take(self.len).map(|(k, r)| (&k.clustering, r))
    }
}

impl<'a> Iterator for SortedPartitions<'a> {
    type Item = (&'a PartitionKey, BorrowedPartition<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let next_row = self.rows.peek().map(|(k, _)| &k.partition);
        let next_deletion = self.deletions.peek().map(|(k, _)| *k);
        let key: &'a PartitionKey = match (next_row, next_deletion) {
            (Some(r), Some(d)) => r.min(d),
            (Some(r), None) => r,
            (None, Some(d)) => d,
            (None, None) => return None,
        };
        let deletion = self.deletions.next_if(|(k, _)| *k == key).map(|(_, d)| *d);
        let first = self.rows.clone();
        let mut len = 0;
        while self.rows.next_if(|(k, _)| k.partition == *key).is_some() {
            len += 1;
        }
        Some((key, BorrowedPartition { deletion, rows: first, len }))
    }
}

/// Partitions of a MemTable in storage order, assembled from the flat row map and the
/// partition deletions.
pub struct PartitionRange<'a> {
    rows: Peekable<std::collections::btree_map::Range<'a, RowKey, Row>>,
    deletions: Peekable<std::collections::btree_map::Range<'a, PartitionKey, Deletion>>,
    lower: Bound<PartitionKey>,
    end: Option<Token>,
    /// Rows of one partition copied at most; the rest of a wider one is skipped.
    max_rows: usize,
}

impl PartitionRange<'_> {
    /// Each partition with at most its first `max_rows` rows (a bounded scan, `crate::scan`):
    /// a partition with `max_rows` rows may have been cut.
    pub fn with_max_rows(mut self, max_rows: usize) -> Self {
        self.max_rows = max_rows.max(1);
        self
    }
}

impl Iterator for PartitionRange<'_> {
    type Item = (PartitionKey, Partition);

    fn next(&mut self) -> Option<(PartitionKey, Partition)> {
        let end = self.end?;
        // Skip rows of a partition at or below an excluded lower bound.
        while let (Some((k, _)), Bound::Excluded(lower)) = (self.rows.peek(), &self.lower) {
            if k.partition <= *lower {
                self.rows.next();
            } else {
                break;
            }
        }
        let next_row = self.rows.peek().map(|(k, _)| &k.partition);
        let next_deletion = self.deletions.peek().map(|(k, _)| *k);
        let key = match (next_row, next_deletion) {
            (Some(r), Some(d)) => r.min(d).clone(),
            (Some(r), None) => r.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => return None,
        };
        if key.token() > end {
            self.end = None;
            return None;
        }
        let deletion = match self.deletions.peek() {
            Some((k, d)) if **k == key => {
                let d = **d;
                self.deletions.next();
                Some(d)
            }
            _ => None,
        };
        let mut rows = BTreeMap::new();
        while let Some((k, r)) = self.rows.peek() {
            if k.partition != key {
                break;
            }
            if rows.len() < self.max_rows {
                rows.insert(k.clustering.clone(), (*r).clone());
            }
            self.rows.next();
        }
        Some((key, Partition { deletion, rows }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::events_schema;
    use crate::mutation::Write;
    use proptest::prelude::*;
    use wire::Value;

    fn put(mt: &mut MemTable, tenant: &str, at: i64, body: &str, ts: i64) {
        let s = events_schema();
        let w = Write::upsert(
            &s,
            &[Value::Text(tenant.into()), Value::Int(1)],
            &[Value::BigInt(at), Value::Int(0)],
            &[("body", Some(Value::Text(body.into())))],
            0,
            true,
        )
        .unwrap();
        mt.apply(w.stamp(ts, 0));
    }

    fn key(tenant: &str) -> PartitionKey {
        PartitionKey::from_values(&events_schema(), &[Value::Text(tenant.into()), Value::Int(1)]).unwrap()
    }

    #[test]
    fn reads_merge_versions_by_timestamp_not_arrival() {
        let mut mt = MemTable::new();
        put(&mut mt, "a", 1, "newer", 20);
        put(&mut mt, "a", 1, "older", 10);
        let p = mt.get(&key("a"), &ClusteringSlice::ALL).unwrap();
        let row = p.rows.values().next().unwrap();
        assert_eq!(row.live_cells(0), Some(vec![(0, b"newer".to_vec())]));
        assert_eq!(mt.timestamp_range(), Some((10, 20)));
        assert_eq!(mt.partitions(), 1);
    }

    #[test]
    fn partition_delete_hides_earlier_rows() {
        let mut mt = MemTable::new();
        put(&mut mt, "a", 1, "x", 10);
        put(&mut mt, "a", 2, "y", 30);
        let s = events_schema();
        let del = Write::delete(&s, &[Value::Text("a".into()), Value::Int(1)], &[], &[]).unwrap();
        mt.apply(del.stamp(20, 0));
        let p = mt.get(&key("a"), &ClusteringSlice::ALL).unwrap();
        assert_eq!(p.rows.len(), 1, "only the row written after the delete survives");
        assert_eq!(p.deletion.map(|d| d.ts), Some(20));
        put(&mut mt, "a", 3, "old", 15);
        assert_eq!(mt.get(&key("a"), &ClusteringSlice::ALL).unwrap().rows.len(), 1, "an older write stays hidden");
        assert_eq!(mt.partitions(), 1);
    }

    #[test]
    fn memory_is_accounted_per_row() {
        let mut mt = MemTable::new();
        for n in 0..100 {
            put(&mut mt, &format!("t{n}"), 1, &"v".repeat(100), 1);
        }
        let per_row = mt.bytes() / 100;
        assert!((200..600).contains(&per_row), "{per_row} bytes per ~100-byte row");
        assert_eq!(mt.partitions(), 100);
    }

    #[test]
    fn token_ranges_are_start_exclusive_end_inclusive_sorted_and_resumable() {
        let mut mt = MemTable::new();
        for i in 0..50 {
            put(&mut mt, &format!("k{i}"), 1, "v", 1);
            put(&mut mt, &format!("k{i}"), 2, "v", 1);
        }
        let s = events_schema();
        // A partition holding only a deletion is still a partition of the range.
        mt.apply(Write::delete(&s, &[Value::Text("gone".into()), Value::Int(1)], &[], &[]).unwrap().stamp(5, 0));
        let all: Vec<(PartitionKey, Partition)> = mt.range(i64::MIN, i64::MAX, None).collect();
        assert_eq!(all.len(), 51);
        assert_eq!(mt.partitions(), 51, "a partition holding only a deletion counts once");
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(all.iter().filter(|(_, p)| p.deletion.is_none()).all(|(_, p)| p.rows.len() == 2));
        let tokens: Vec<Token> = all.iter().map(|(k, _)| k.token()).collect();
        let (lo, hi) = (tokens[10], tokens[20]);
        let some: Vec<Token> = mt.range(lo, hi, None).map(|(k, _)| k.token()).collect();
        assert_eq!(some, tokens[11..=20].to_vec());
        assert_eq!(mt.range(i64::MAX, i64::MAX, None).count(), 0);
        let rest: Vec<Token> = mt.range(lo, hi, Some(&all[15].0)).map(|(k, _)| k.token()).collect();
        assert_eq!(rest, tokens[16..=20].to_vec());
    }

    proptest! {
        /// The flat MemTable answers exactly as merging the same updates into one partition map.
        #[test]
        fn behaves_like_merging_partitions(ops in proptest::collection::vec((0u8..4, 0i64..3, 0i64..6, any::<bool>()), 1..40)) {
            let s = events_schema();
            let mut mt = MemTable::new();
            let mut model: BTreeMap<PartitionKey, Partition> = BTreeMap::new();
            for (tenant, at, ts, delete) in ops {
                let pk = [Value::Text(format!("t{tenant}")), Value::Int(1)];
                let w = if delete && at == 0 {
                    Write::delete(&s, &pk, &[], &[]).unwrap()
                } else if delete {
                    Write::delete(&s, &pk, &[Value::BigInt(at), Value::Int(0)], &[]).unwrap()
                } else {
                    Write::upsert(&s, &pk, &[Value::BigInt(at), Value::Int(0)], &[("body", Some(Value::Text(format!("{ts}"))))], 0, true).unwrap()
                };
                let u = w.stamp(ts, 0);
                model.entry(u.key.clone()).or_default().merge(u.clone().into_partition());
                mt.apply(u);
            }
            model.retain(|_, p| !p.is_empty());
            let got: BTreeMap<PartitionKey, Partition> = mt.range(i64::MIN, i64::MAX, None).collect();
            prop_assert_eq!(&got, &model);
            // The borrowed walk a flush writes from sees the same partitions, rows and deletions.
            let borrowed: BTreeMap<PartitionKey, Partition> = mt
                .sorted_partitions()
                .map(|(k, p)| {
                    let rows = p.rows().map(|(c, r)| (c.clone(), r.clone())).collect();
                    (k.clone(), Partition { deletion: p.deletion(), rows })
                })
                .collect();
            prop_assert_eq!(&borrowed, &model);
            for (k, p) in &model {
                let found = mt.get(k, &ClusteringSlice::ALL);
                prop_assert_eq!(found.as_ref(), Some(p));
            }
            prop_assert_eq!(mt.partitions(), model.len());
            // Released a chunk at a time, it ends empty, partition deletions included.
            let mut rounds = 0;
            while !mt.release_some(3) {
                rounds += 1;
                prop_assert!(rounds <= model.values().map(|p| p.rows.len()).sum::<usize>() / 3 + 1);
            }
            prop_assert_eq!(mt.partitions(), 0);
        }
    }
}

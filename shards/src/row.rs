//! Rows and partitions as the storage engine holds them: every cell keeps its timestamp, rows and
//! partitions keep their deletions, and merging two versions is per-cell last-write-wins.
//!
//! Merging also drops what a deletion of the merged result shadows. That keeps memory bounded
//! by live data and never changes what a reader sees, because deletions only ever grow.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::cell::{Cell, Deletion, DeletionTime};
use crate::key::ClusteringKey;

/// A partition as an SSTable writer reads it: its deletion and its rows in clustering order,
/// borrowed from wherever they live (a merged [`Partition`], or a frozen MemTable's row map
/// while it is flushed, so a flush copies no row).
pub trait PartitionRows {
    fn deletion(&self) -> Option<Deletion>;
    fn rows(&self) -> impl Iterator<Item = (&ClusteringKey, &Row)>;
}

impl PartitionRows for Partition {
    fn deletion(&self) -> Option<Deletion> {
        self.deletion
    }

    fn rows(&self) -> impl Iterator<Item = (&ClusteringKey, &Row)> {
        self.rows.iter()
    }
}

/// Position of a regular column in its table's schema.
pub type ColumnId = u16;

/// One row of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    /// The row's own liveness (what CQL's INSERT writes): with an empty value it keeps a row
    /// alive even when all its regular columns are null.
    pub marker: Option<Cell>,
    pub deletion: Option<Deletion>,
    /// Sorted by column id, one cell per column.
    pub cells: Vec<(ColumnId, Cell)>,
}

impl Row {
    /// Merges `other` into `self`, cell by cell, then drops what `outer` (the partition's
    /// deletion) or the row's own deletion shadows.
    pub fn merge(&mut self, other: Row, outer: Option<Deletion>) {
        self.marker = match (self.marker.take(), other.marker) {
            (Some(a), Some(b)) => Some(a.reconcile(b)),
            (a, b) => a.or(b),
        };
        self.deletion = Deletion::merge(self.deletion, other.deletion);
        if !other.cells.is_empty() {
            self.cells = merge_sorted_cells(std::mem::take(&mut self.cells), other.cells);
        }
        self.purge(outer);
    }

    /// Drops the marker, cells and row deletion that a deletion hides.
    pub fn purge(&mut self, outer: Option<Deletion>) {
        if let (Some(o), Some(d)) = (outer, self.deletion) {
            if o.ts >= d.ts {
                self.deletion = None;
            }
        }
        let Some(effective) = Deletion::merge(outer, self.deletion) else { return };
        if self.marker.as_ref().is_some_and(|m| effective.shadows(m.ts())) {
            self.marker = None;
        }
        self.cells.retain(|(_, c)| !effective.shadows(c.ts()));
    }

    pub fn is_empty(&self) -> bool {
        self.marker.is_none() && self.deletion.is_none() && self.cells.is_empty()
    }

    /// The row's live column values at `now_secs`, or None when the row does not exist for a
    /// reader (no live marker and no live cell).
    pub fn live_cells(&self, now_secs: DeletionTime) -> Option<Vec<(ColumnId, Vec<u8>)>> {
        let cells: Vec<_> =
            self.cells.iter().filter_map(|(id, c)| c.live_value(now_secs).map(|v| (*id, v.to_vec()))).collect();
        let marker_live = self.marker.as_ref().is_some_and(|m| m.live_value(now_secs).is_some());
        (marker_live || !cells.is_empty()).then_some(cells)
    }

    /// Whether a reader at `now_secs` sees this row under the partition's deletion `outer`: a
    /// live marker or a live cell that no deletion shadows (what [`Row::live_cells`] finds,
    /// without copying a value).
    pub fn is_live(&self, outer: Option<Deletion>, now_secs: DeletionTime) -> bool {
        let effective = Deletion::merge(outer, self.deletion);
        let alive = |c: &Cell| !effective.is_some_and(|d| d.shadows(c.ts())) && c.live_value(now_secs).is_some();
        self.marker.as_ref().is_some_and(alive) || self.cells.iter().any(|(_, c)| alive(c))
    }

    /// Every timestamp in the row (for the HLC at replay and for metadata).
    pub fn max_timestamp(&self) -> Option<i64> {
        let cells = self.cells.iter().map(|(_, c)| c.ts());
        let marker = self.marker.iter().map(Cell::ts);
        let deletion = self.deletion.iter().map(|d| d.ts);
        cells.chain(marker).chain(deletion).max()
    }

    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Row>()
            + self.marker.as_ref().map_or(0, Cell::heap_size)
            + self.cells.iter().map(|(_, c)| 2 + c.heap_size()).sum::<usize>()
    }
}

fn merge_sorted_cells(a: Vec<(ColumnId, Cell)>, b: Vec<(ColumnId, Cell)>) -> Vec<(ColumnId, Cell)> {
    debug_assert!(a.windows(2).all(|w| w[0].0 < w[1].0) && b.windows(2).all(|w| w[0].0 < w[1].0));
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                let (id, cx) = a.next().unwrap_or_else(|| unreachable!("peeked"));
                let (_, cy) = b.next().unwrap_or_else(|| unreachable!("peeked"));
                (id, cx.reconcile(cy))
            }
            (Some(x), Some(y)) if x.0 < y.0 => a.next().unwrap_or_else(|| unreachable!("peeked")),
            (Some(_), Some(_)) | (None, Some(_)) => b.next().unwrap_or_else(|| unreachable!("peeked")),
            (Some(_), None) => a.next().unwrap_or_else(|| unreachable!("peeked")),
            (None, None) => break,
        };
        out.push(next);
    }
    out
}

/// One partition's rows, in clustering order, and its deletion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partition {
    pub deletion: Option<Deletion>,
    pub rows: BTreeMap<ClusteringKey, Row>,
}

impl Partition {
    /// Merges another version of the partition into this one.
    pub fn merge(&mut self, other: Partition) {
        self.merge_deletion(other.deletion);
        self.merge_rows(other.rows);
    }

    /// The first half of [`Partition::merge`]: another version's partition deletion (dropping
    /// the rows it shadows). Its rows follow with [`Partition::merge_rows`], in as many calls
    /// as the caller likes (an async caller yields between chunks of a wide partition).
    pub fn merge_deletion(&mut self, deletion: Option<Deletion>) {
        let newer_deletion = deletion > self.deletion;
        self.deletion = Deletion::merge(self.deletion, deletion);
        if newer_deletion {
            let deletion = self.deletion;
            self.rows.retain(|_, row| {
                row.purge(deletion);
                !row.is_empty()
            });
        }
    }

    /// The second half of [`Partition::merge`]: rows of a version whose deletion went through
    /// [`Partition::merge_deletion`].
    pub fn merge_rows(&mut self, rows: impl IntoIterator<Item = (ClusteringKey, Row)>) {
        for (key, row) in rows {
            match self.rows.entry(key) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    e.get_mut().merge(row, self.deletion);
                    if e.get().is_empty() {
                        e.remove();
                    }
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    let mut row = row;
                    row.purge(self.deletion);
                    if !row.is_empty() {
                        e.insert(row);
                    }
                }
            }
        }
    }

    /// The rows of this partition inside `slice`, with the partition's deletion.
    pub fn slice(&self, slice: &ClusteringSlice) -> Partition {
        let rows = self
            .rows
            .range((slice.start.clone(), Bound::Unbounded))
            .take_while(|(k, _)| slice.before_end(k))
            .filter(|(k, _)| slice.contains(k))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        Partition { deletion: self.deletion, rows }
    }

    pub fn is_empty(&self) -> bool {
        self.deletion.is_none() && self.rows.is_empty()
    }

    /// Drops every row after `last` (keeps `last` itself).
    pub fn truncate_after(&mut self, last: &ClusteringKey) {
        let mut tail = self.rows.split_off(last);
        if let Some((key, row)) = tail.pop_first().filter(|(k, _)| k == last) {
            self.rows.insert(key, row);
        }
    }

    pub fn max_timestamp(&self) -> Option<i64> {
        let rows = self.rows.values().filter_map(Row::max_timestamp);
        rows.chain(self.deletion.map(|d| d.ts)).max()
    }

    /// Deletions held: cell tombstones (the row marker's too), row deletions and the
    /// partition deletion, counted as SSTable metadata counts them.
    pub fn tombstones(&self) -> u64 {
        let row = |r: &Row| {
            let cells = r.cells.iter().filter(|(_, c)| c.is_tombstone()).count();
            let marker = r.marker.as_ref().is_some_and(Cell::is_tombstone);
            cells as u64 + u64::from(marker) + u64::from(r.deletion.is_some())
        };
        u64::from(self.deletion.is_some()) + self.rows.values().map(row).sum::<u64>()
    }
}

/// How much of a slice a bounded read returns: the stored rows from the slice's start up to
/// the `rows`-th row live now, and no more once the stored bytes of its rows
/// ([`crate::scan::row_bytes`], summed) reach `bytes` (it stops after the row that reaches
/// them; `usize::MAX`: no byte bound). At least one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceLimit {
    pub rows: usize,
    pub bytes: usize,
}

impl SliceLimit {
    /// Up to the `rows`-th live row, whatever their size.
    pub fn rows(rows: usize) -> SliceLimit {
        SliceLimit { rows, bytes: usize::MAX }
    }
}

/// Where a read bounded by `limit` may have stopped before its slice's end: after its last
/// row, when it holds `limit.rows` rows or more (a bounded read stops after that many live
/// rows, or after more rows than that when many are dead, never before), or when its rows
/// hold `limit.bytes` stored bytes or more (it stops after the row that reaches them, never
/// before). None when the read holds every row of its slice, or had no limit. The same rule
/// serves the replica that answers and the coordinator that compares answers, so no answer
/// needs to say where it stopped.
pub fn limited_cut(partition: Option<&Partition>, limit: Option<SliceLimit>) -> Option<ClusteringKey> {
    let (partition, limit) = (partition?, limit?);
    let stopped = partition.rows.len() >= limit.rows
        || (limit.bytes != usize::MAX && crate::scan::partition_bytes(partition) >= limit.bytes);
    stopped.then(|| partition.rows.keys().next_back().cloned()).flatten()
}

/// A range of clustering keys. Bounds may be prefixes: `Included(p)` as an end includes every
/// key that starts with `p`, `Excluded(p)` as a start excludes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusteringSlice {
    pub start: Bound<ClusteringKey>,
    pub end: Bound<ClusteringKey>,
}

impl ClusteringSlice {
    pub const ALL: ClusteringSlice = ClusteringSlice { start: Bound::Unbounded, end: Bound::Unbounded };

    /// Every row whose key starts with `prefix` (a full key selects one row).
    pub fn prefix(prefix: ClusteringKey) -> ClusteringSlice {
        ClusteringSlice { start: Bound::Included(prefix.clone()), end: Bound::Included(prefix) }
    }

    pub fn before_end(&self, key: &ClusteringKey) -> bool {
        self.encoded_before_end(key.as_bytes())
    }

    /// [`ClusteringSlice::before_end`] on an encoded clustering key. Monotone: once false for a
    /// key, false for every later key.
    pub fn encoded_before_end(&self, k: &[u8]) -> bool {
        match &self.end {
            Bound::Unbounded => true,
            Bound::Included(p) => k <= p.as_bytes() || k.starts_with(p.as_bytes()),
            Bound::Excluded(p) => k < p.as_bytes(),
        }
    }

    pub fn contains(&self, key: &ClusteringKey) -> bool {
        let k = key.as_bytes();
        let after_start = match &self.start {
            Bound::Unbounded => true,
            Bound::Included(p) => k >= p.as_bytes(),
            Bound::Excluded(p) => k > p.as_bytes() && !k.starts_with(p.as_bytes()),
        };
        after_start && self.before_end(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::tests::any_cell;
    use proptest::prelude::*;

    fn ck(b: &[u8]) -> ClusteringKey {
        ClusteringKey::from_encoded(b.to_vec())
    }

    fn any_deletion() -> impl Strategy<Value = Option<Deletion>> {
        proptest::option::of((0i64..4, 0u32..2).prop_map(|(ts, deleted_at)| Deletion { ts, deleted_at }))
    }

    fn any_row() -> impl Strategy<Value = Row> {
        let cells =
            proptest::collection::btree_map(0u16..3, any_cell(), 0..3).prop_map(|m| m.into_iter().collect::<Vec<_>>());
        (proptest::option::of(any_cell()), any_deletion(), cells).prop_map(|(marker, deletion, cells)| Row {
            marker,
            deletion,
            cells,
        })
    }

    fn any_partition() -> impl Strategy<Value = Partition> {
        let rows = proptest::collection::btree_map((0u8..3).prop_map(|b| ck(&[b])), any_row(), 0..3);
        (any_deletion(), rows).prop_map(|(deletion, rows)| {
            // Normalize through a merge into an empty partition, as the MemTable stores them.
            let mut p = Partition::default();
            p.merge(Partition { deletion, rows });
            p
        })
    }

    fn merged(a: &Partition, b: &Partition) -> Partition {
        let mut out = a.clone();
        out.merge(b.clone());
        out
    }

    proptest! {
        #[test]
        fn partition_merge_is_commutative(a in any_partition(), b in any_partition()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn partition_merge_is_associative(a in any_partition(), b in any_partition(), c in any_partition()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn partition_merge_is_idempotent(a in any_partition()) {
            prop_assert_eq!(merged(&a, &a), a);
        }
    }

    #[test]
    fn row_deletion_hides_older_cells_but_not_newer_ones() {
        let mut row = Row {
            marker: Some(Cell::Live { ts: 1, value: vec![] }),
            deletion: None,
            cells: vec![(0, Cell::Live { ts: 1, value: b"old".to_vec() })],
        };
        row.merge(Row { deletion: Some(Deletion { ts: 2, deleted_at: 0 }), ..Row::default() }, None);
        assert_eq!(row.live_cells(0), None);
        row.merge(Row { cells: vec![(1, Cell::Live { ts: 3, value: b"new".to_vec() })], ..Row::default() }, None);
        assert_eq!(row.live_cells(0), Some(vec![(1, b"new".to_vec())]));
    }

    #[test]
    fn tombstones_count_cell_row_and_partition_deletions() {
        let deleted = Deletion { ts: 1, deleted_at: 0 };
        let tombstone = Cell::Tombstone { ts: 2, deleted_at: 0 };
        let row = Row {
            marker: Some(tombstone.clone()),
            deletion: Some(deleted),
            cells: vec![(0, tombstone.clone()), (1, Cell::Live { ts: 2, value: b"v".to_vec() }), (2, tombstone)],
        };
        let live = Row { marker: Some(Cell::Live { ts: 2, value: vec![] }), ..Row::default() };
        let p = Partition { deletion: Some(deleted), rows: [(ck(b"a"), row), (ck(b"b"), live)].into() };
        // Partition deletion 1, row deletion 1, marker 1, cells 2.
        assert_eq!(p.tombstones(), 5);
        assert_eq!(Partition::default().tombstones(), 0);
    }

    #[test]
    fn partition_deletion_drops_shadowed_rows() {
        let mut p = Partition::default();
        let row = Row { marker: Some(Cell::Live { ts: 5, value: vec![] }), ..Row::default() };
        p.merge(Partition { deletion: None, rows: [(ck(b"a"), row)].into() });
        p.merge(Partition { deletion: Some(Deletion { ts: 5, deleted_at: 0 }), rows: BTreeMap::new() });
        assert!(p.rows.is_empty());
        assert_eq!(p.deletion.map(|d| d.ts), Some(5));
    }

    #[test]
    fn slices_honour_prefix_bounds() {
        let keys = [&b"a"[..], b"ab", b"b", b"ba", b"c"];
        let mut p = Partition::default();
        for k in keys {
            let row = Row { marker: Some(Cell::Live { ts: 1, value: vec![] }), ..Row::default() };
            p.rows.insert(ck(k), row);
        }
        let got = |s: ClusteringSlice| p.slice(&s).rows.keys().map(|k| k.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(got(ClusteringSlice::prefix(ck(b"b"))), vec![b"b".to_vec(), b"ba".to_vec()]);
        let excl = ClusteringSlice { start: Bound::Excluded(ck(b"a")), end: Bound::Excluded(ck(b"c")) };
        assert_eq!(got(excl), vec![b"b".to_vec(), b"ba".to_vec()]);
        assert_eq!(got(ClusteringSlice::ALL).len(), 5);
    }
}

//! What a compaction may drop from a merged partition: tombstones (cell, row and partition
//! deletions) and expired TTL cells, but only once they are older than the table's
//! `gc_grace_seconds` AND older than any version of the partition outside the compaction
//! (other SSTables, the MemTables). A tombstone that may still shadow such a version is kept,
//! whatever its age: dropping it would resurrect deleted data. Pure: the caller supplies the
//! clock and the oldest outside timestamp.

use crate::cell::{Cell, Deletion, DeletionTime, Timestamp};
use crate::row::{Partition, Row};

/// Counts of what a purge dropped or had to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeCounts {
    /// Cell tombstones, row deletions and partition deletions dropped.
    pub tombstones: u64,
    /// Expired TTL cells (and row markers) dropped.
    pub expired: u64,
    /// Tombstones and expired cells past gc grace kept because a version of their partition
    /// outside the compaction is not newer than them.
    pub kept_for_older_data: u64,
}

impl PurgeCounts {
    pub fn add(&mut self, other: &PurgeCounts) {
        self.tombstones += other.tombstones;
        self.expired += other.expired;
        self.kept_for_older_data += other.kept_for_older_data;
    }
}

/// The purge rules of one compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purger {
    /// Tombstones written before this (seconds) and cells expired before it are past gc grace.
    pub gc_before: DeletionTime,
}

impl Purger {
    /// Rules for a compaction running at `now_secs` on a table with `gc_grace_seconds`.
    pub fn new(now_secs: DeletionTime, gc_grace_seconds: u32) -> Purger {
        Purger { gc_before: now_secs.saturating_sub(gc_grace_seconds) }
    }

    /// Drops from `partition` what these rules allow. `oldest_outside` is the smallest
    /// timestamp any version of this partition outside the compaction may have (`i64::MAX`
    /// when there is none): only tombstones strictly older than it can shadow nothing there.
    /// Returns the partition (None when nothing is left) and what was dropped.
    pub fn purge(&self, mut partition: Partition, oldest_outside: Timestamp) -> (Option<Partition>, PurgeCounts) {
        let mut counts = PurgeCounts::default();
        let deletion = partition.deletion;
        partition.rows.retain(|_, row| self.keeps_row(row, deletion, oldest_outside, &mut counts));
        self.finish(partition, oldest_outside, counts)
    }

    /// Purges one row of a partition whose deletion is `deletion`; false when nothing is left
    /// of it. [`Purger::purge`] is this for every row, then [`Purger::finish`].
    pub fn keeps_row(
        &self,
        row: &mut Row,
        deletion: Option<Deletion>,
        oldest_outside: Timestamp,
        counts: &mut PurgeCounts,
    ) -> bool {
        // Apply the partition deletion first, so nothing it shadows survives its removal.
        row.purge(deletion);
        self.purge_row(row, oldest_outside, counts);
        !row.is_empty()
    }

    /// Drops the partition deletion of a partition whose rows were purged (`keeps_row`) when
    /// the rules allow, and returns what is left.
    pub fn finish(
        &self,
        mut partition: Partition,
        oldest_outside: Timestamp,
        mut counts: PurgeCounts,
    ) -> (Option<Partition>, PurgeCounts) {
        if let Some(d) = partition.deletion {
            if self.drops_deletion(d, oldest_outside, &mut counts) {
                partition.deletion = None;
            }
        }
        ((!partition.is_empty()).then_some(partition), counts)
    }

    fn purge_row(&self, row: &mut Row, oldest_outside: Timestamp, counts: &mut PurgeCounts) {
        if let Some(d) = row.deletion {
            if self.drops_deletion(d, oldest_outside, counts) {
                row.deletion = None;
            }
        }
        if row.marker.as_ref().is_some_and(|m| self.drops_cell(m, oldest_outside, counts)) {
            row.marker = None;
        }
        row.cells.retain(|(_, c)| !self.drops_cell(c, oldest_outside, counts));
    }

    fn drops_deletion(&self, d: Deletion, oldest_outside: Timestamp, counts: &mut PurgeCounts) -> bool {
        if d.deleted_at >= self.gc_before {
            return false;
        }
        if d.ts >= oldest_outside {
            counts.kept_for_older_data += 1;
            return false;
        }
        counts.tombstones += 1;
        true
    }

    fn drops_cell(&self, cell: &Cell, oldest_outside: Timestamp, counts: &mut PurgeCounts) -> bool {
        let (dead_since, is_tombstone) = match cell {
            Cell::Live { .. } => return false,
            Cell::Tombstone { deleted_at, .. } => (*deleted_at, true),
            Cell::Expiring { expires_at, .. } => (*expires_at, false),
        };
        if dead_since >= self.gc_before {
            return false;
        }
        if cell.ts() >= oldest_outside {
            counts.kept_for_older_data += 1;
            return false;
        }
        if is_tombstone {
            counts.tombstones += 1;
        } else {
            counts.expired += 1;
        }
        true
    }
}

/// The smallest timestamp stored in a partition (cells, markers, deletions), or None.
pub fn min_timestamp(partition: &Partition) -> Option<Timestamp> {
    let rows = partition.rows.values().flat_map(|r| {
        let cells = r.cells.iter().map(|(_, c)| c.ts());
        cells.chain(r.marker.iter().map(Cell::ts)).chain(r.deletion.iter().map(|d| d.ts))
    });
    rows.chain(partition.deletion.map(|d| d.ts)).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ClusteringKey;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const NOW: DeletionTime = 1_000_000;
    const GRACE: u32 = 100;

    fn ck(b: u8) -> ClusteringKey {
        ClusteringKey::from_encoded(vec![b])
    }

    fn row(cells: Vec<(u16, Cell)>) -> Row {
        Row { marker: None, deletion: None, cells }
    }

    fn live(ts: i64) -> Cell {
        Cell::Live { ts, value: b"v".to_vec() }
    }

    fn tomb(ts: i64, deleted_at: DeletionTime) -> Cell {
        Cell::Tombstone { ts, deleted_at }
    }

    #[test]
    fn old_tombstones_are_dropped_young_ones_kept() {
        let p = Purger::new(NOW, GRACE);
        let partition = Partition {
            deletion: None,
            rows: [(ck(1), row(vec![(0, tomb(5, NOW - GRACE - 1)), (1, tomb(6, NOW - GRACE)), (2, live(7))]))].into(),
        };
        let (out, counts) = p.purge(partition, i64::MAX);
        let cells = &out.unwrap().rows[&ck(1)].cells;
        assert_eq!(cells.len(), 2, "the tombstone inside gc grace stays: {cells:?}");
        assert_eq!(counts, PurgeCounts { tombstones: 1, expired: 0, kept_for_older_data: 0 });
    }

    #[test]
    fn a_tombstone_that_may_shadow_data_outside_is_kept_whatever_its_age() {
        let p = Purger::new(NOW, GRACE);
        let old = NOW - 10 * GRACE;
        let partition = Partition { deletion: Some(Deletion { ts: 50, deleted_at: old }), rows: Default::default() };
        // Outside data written at ts 40 (older than the deletion): the deletion must stay.
        let (out, counts) = p.purge(partition.clone(), 40);
        assert_eq!(out, Some(partition.clone()));
        assert_eq!(counts.kept_for_older_data, 1);
        // A tie is shadowed too (a deletion hides versions with ts <= its own).
        assert!(p.purge(partition.clone(), 50).0.is_some());
        // Outside data only newer than the deletion: it shadows nothing there and goes.
        let (out, counts) = p.purge(partition, 51);
        assert_eq!(out, None);
        assert_eq!(counts.tombstones, 1);
    }

    #[test]
    fn expired_cells_go_only_after_gc_grace() {
        let p = Purger::new(NOW, GRACE);
        let expired_long_ago = Cell::Expiring { ts: 1, value: b"x".to_vec(), ttl: 10, expires_at: NOW - GRACE - 5 };
        let expired_recently = Cell::Expiring { ts: 2, value: b"y".to_vec(), ttl: 10, expires_at: NOW - 5 };
        let partition = Partition {
            deletion: None,
            rows: [(ck(1), row(vec![(0, expired_long_ago), (1, expired_recently)]))].into(),
        };
        let (out, counts) = p.purge(partition, i64::MAX);
        assert_eq!(out.unwrap().rows[&ck(1)].cells.len(), 1);
        assert_eq!(counts.expired, 1);
    }

    #[test]
    fn a_dropped_partition_deletion_takes_what_it_shadowed_with_it() {
        let p = Purger::new(NOW, GRACE);
        let partition = Partition {
            deletion: Some(Deletion { ts: 10, deleted_at: 0 }),
            rows: [(ck(1), row(vec![(0, live(9))])), (ck(2), row(vec![(0, live(11))]))].into(),
        };
        let (out, _) = p.purge(partition, i64::MAX);
        let out = out.unwrap();
        assert_eq!(out.deletion, None);
        assert_eq!(out.rows.keys().cloned().collect::<Vec<_>>(), vec![ck(2)], "the shadowed row must not come back");
    }

    #[test]
    fn min_timestamp_spans_cells_markers_and_deletions() {
        let mut r = row(vec![(0, live(9))]);
        r.marker = Some(live(4));
        let partition = Partition { deletion: Some(Deletion { ts: 7, deleted_at: 0 }), rows: [(ck(1), r)].into() };
        assert_eq!(min_timestamp(&partition), Some(4));
        assert_eq!(min_timestamp(&Partition::default()), None);
    }

    type Visible = BTreeMap<ClusteringKey, Vec<(u16, Vec<u8>)>>;

    /// What a reader at `now` sees of a partition: each existing row's live values.
    fn visible(partition: &Partition, now: DeletionTime) -> Visible {
        let mut out = BTreeMap::new();
        for (k, r) in &partition.rows {
            let mut r = r.clone();
            r.purge(partition.deletion);
            if let Some(cells) = r.live_cells(now) {
                out.insert(k.clone(), cells);
            }
        }
        out
    }

    fn any_cell() -> impl Strategy<Value = Cell> {
        let ts = 0i64..20;
        let at = (NOW - 3 * GRACE)..(NOW + 10);
        prop_oneof![
            ts.clone().prop_map(live),
            (ts.clone(), at.clone()).prop_map(|(ts, deleted_at)| tomb(ts, deleted_at)),
            (ts, at).prop_map(|(ts, expires_at)| Cell::Expiring { ts, value: b"e".to_vec(), ttl: 5, expires_at }),
        ]
    }

    fn any_partition() -> impl Strategy<Value = Partition> {
        let cells = proptest::collection::btree_map(0u16..3, any_cell(), 0..3).prop_map(|m| m.into_iter().collect());
        let deletion =
            proptest::option::of((0i64..20, (NOW - 3 * GRACE)..NOW).prop_map(|(ts, d)| Deletion { ts, deleted_at: d }));
        let rows = proptest::collection::btree_map((0u8..3).prop_map(ck), cells.prop_map(row), 0..3);
        (deletion.clone(), rows).prop_map(|(deletion, rows)| {
            let mut p = Partition::default();
            p.merge(Partition { deletion, rows });
            p
        })
    }

    proptest! {
        /// Whatever older data exists outside the compaction, merging it with the purged
        /// partition reads exactly as merging it with the unpurged one: no deleted value comes
        /// back, and no live value disappears.
        #[test]
        fn purging_never_changes_what_a_reader_sees(inside in any_partition(), outside in any_partition()) {
            let p = Purger::new(NOW, GRACE);
            let oldest_outside = min_timestamp(&outside).unwrap_or(i64::MAX);
            let (purged, _) = p.purge(inside.clone(), oldest_outside);
            let mut expected = inside;
            expected.merge(outside.clone());
            let mut got = purged.unwrap_or_default();
            got.merge(outside);
            prop_assert_eq!(visible(&got, NOW), visible(&expected, NOW));
        }
    }
}

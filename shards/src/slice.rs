//! Bounded slice reads: the stored rows of one partition's clustering slice from its start up
//! to the N-th row a reader sees, merged from every source (MemTables, SSTables), without
//! reading the rest of the partition. Pure logic: the shard asks its sources for chunks and
//! feeds them here, awaiting (and yielding) between chunks.
//!
//! Each round asks every source for at most [`BoundedRead::chunk_rows`] stored rows of the
//! slice from the current start. A source that returned that many may hold more after its last
//! row; the merge of the round is exact only up to the smallest such last row (the round's
//! cover), so rows after it are dropped and read again next round, starting after the cover.
//! The sources of a round are read one after another, each only up to the cover so far (rows
//! past it would be dropped): a partition spread over many SSTables, each holding another
//! part of it, costs about one chunk per round, not one per source.
//! Rows are counted live after the merge, under the merged partition deletion, so a row
//! deletion, a cell tombstone or a partition deletion in any source shadows correctly whatever
//! the start and the limit.

use std::ops::Bound;

use crate::cell::{Deletion, DeletionTime};
use crate::key::ClusteringKey;
use crate::row::{ClusteringSlice, Partition};

/// Most stored rows asked of one source per round: bounds the work between two yields.
pub const MAX_CHUNK_ROWS: usize = 1024;
/// Stored rows asked of each source in the first round of a byte-bounded read, before the
/// size of its rows is known.
pub const FIRST_BYTE_BOUNDED_CHUNK_ROWS: usize = 16;
/// Dead rows (tombstones, expired) a bounded read returns beyond its live rows at most; past
/// that it stops early, with at least `limit` rows, so that `row::limited_cut` still sees it
/// may have stopped. Keeps an answer bounded in a partition of tombstones.
pub const MAX_DEAD_ROWS: usize = 10_000;

/// How much a bounded read returns: stored rows up to and including the `live_rows`-th row
/// live at `now_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLimit {
    pub live_rows: usize,
    pub now_secs: DeletionTime,
}

/// One source's answer to one round: its stored rows of the round's slice (at most the rows
/// asked), with its partition deletion; None when it holds nothing of the partition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceChunk {
    pub partition: Option<Partition>,
    /// It returned as many rows as asked: it may hold more after its last one.
    pub truncated: bool,
}

/// A bounded read in progress (see the module docs).
#[derive(Debug, Clone)]
pub struct BoundedRead {
    end: Bound<ClusteringKey>,
    /// Where the next round starts; None once the read is done.
    next_start: Option<Bound<ClusteringKey>>,
    limit: RowLimit,
    max_rows: usize,
    /// Stored bytes (`scan::row_bytes`) after which the read stops, at least one row in.
    max_bytes: usize,
    bytes: usize,
    /// It stopped at a bound, before the slice's end (rows may follow its last one).
    stopped: bool,
    out: Partition,
    found: bool,
    live: usize,
    /// The sources' chunks of the round in progress.
    round: Round,
}

/// The chunks of one round merged so far, and its cover: the smallest last row of a chunk
/// that may have stopped before the round's end (past it the merge is not exact).
#[derive(Debug, Clone, Default)]
struct Round {
    merged: Option<Partition>,
    cover: Option<ClusteringKey>,
}

impl BoundedRead {
    pub fn new(slice: &ClusteringSlice, limit: RowLimit) -> BoundedRead {
        let live_rows = limit.live_rows.max(1);
        BoundedRead {
            end: slice.end.clone(),
            next_start: Some(slice.start.clone()),
            limit: RowLimit { live_rows, ..limit },
            max_rows: live_rows.saturating_add(MAX_DEAD_ROWS),
            max_bytes: usize::MAX,
            bytes: 0,
            stopped: false,
            out: Partition::default(),
            found: false,
            live: 0,
            round: Round::default(),
        }
    }

    /// Stops the read also once its rows hold `max_bytes` stored bytes (`scan::row_bytes`).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> BoundedRead {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// The slice the next round reads; None once the read is done.
    pub fn next_slice(&self) -> Option<ClusteringSlice> {
        let start = self.next_start.clone()?;
        Some(ClusteringSlice { start, end: self.end.clone() })
    }

    /// Stored rows to ask of each source in the next round: the live rows still wanted and a
    /// little room for dead ones, at most [`MAX_CHUNK_ROWS`].
    /// With a byte bound, no more rows than the bytes left hold at the size of the rows read
    /// so far (a few, to learn it, before any).
    pub fn chunk_rows(&self) -> usize {
        let wanted = self.limit.live_rows - self.live;
        let by_rows = wanted.saturating_add(wanted / 8).saturating_add(8).min(MAX_CHUNK_ROWS);
        if self.max_bytes == usize::MAX {
            return by_rows;
        }
        let by_bytes = match self.out.rows.len() {
            0 => FIRST_BYTE_BOUNDED_CHUNK_ROWS,
            n => (self.max_bytes.saturating_sub(self.bytes) / (self.bytes / n).max(1)).saturating_add(8),
        };
        by_rows.min(by_bytes).max(1)
    }

    /// The slice the next source of the current round reads: from the round's start up to
    /// the round's cover so far (the last row of a source that may hold more), since rows
    /// past it are dropped this round whatever the other sources hold. Reading the sources
    /// one by one with it, a source whose rows lie past another's chunk returns none of them.
    /// None once the read is done.
    pub fn source_slice(&self) -> Option<ClusteringSlice> {
        let start = self.next_start.clone()?;
        let end = match &self.round.cover {
            Some(cover) => Bound::Included(cover.clone()),
            None => self.end.clone(),
        };
        Some(ClusteringSlice { start, end })
    }

    /// Adds one source's answer to [`BoundedRead::source_slice`] to the current round.
    pub fn add(&mut self, chunk: SourceChunk) {
        if self.next_start.is_none() {
            return;
        }
        let Some(partition) = chunk.partition else { return };
        let round = &mut self.round;
        if chunk.truncated {
            if let Some(last) = partition.rows.keys().next_back() {
                if round.cover.as_ref().is_none_or(|c| last < c) {
                    round.cover = Some(last.clone());
                }
            }
        }
        match &mut round.merged {
            Some(m) => m.merge(partition),
            None => round.merged = Some(partition),
        }
    }

    /// Ends the current round: its merge is exact up to its cover, so the rows after it are
    /// dropped (and read again next round, from just after it).
    pub fn end_round(&mut self) {
        if self.next_start.is_none() {
            return;
        }
        let Round { merged, cover } = std::mem::take(&mut self.round);
        self.next_start = None;
        let Some(mut merged) = merged else { return };
        self.found = true;
        if let Some(cover) = &cover {
            merged.truncate_after(cover);
        }
        let deletion: Option<Deletion> = Deletion::merge(self.out.deletion, merged.deletion);
        self.out.deletion = deletion;
        for (key, row) in merged.rows {
            if row.is_live(deletion, self.limit.now_secs) {
                self.live += 1;
            }
            self.bytes = self.bytes.saturating_add(crate::scan::row_bytes(&key, &row));
            self.out.rows.insert(key, row);
            if self.live >= self.limit.live_rows || self.out.rows.len() >= self.max_rows || self.bytes >= self.max_bytes
            {
                self.stopped = true;
                return;
            }
        }
        self.next_start = cover.map(Bound::Excluded);
    }

    pub fn is_done(&self) -> bool {
        self.next_start.is_none()
    }

    /// The stored rows read (None when no source held the partition).
    pub fn finish(self) -> Option<Partition> {
        self.finish_with_stop().0
    }

    /// [`BoundedRead::finish`], and whether the read stopped at a bound: then rows may follow
    /// its last one (it may also have been the slice's last).
    pub fn finish_with_stop(self) -> (Option<Partition>, bool) {
        (self.found.then_some(self.out), self.stopped)
    }
}

/// A source's chunk taken from rows it holds in memory (`rows`: its rows of the round's
/// slice in clustering order), at most `max_rows` of them.
pub fn chunk_of(
    deletion: Option<Deletion>,
    rows: impl Iterator<Item = (ClusteringKey, crate::row::Row)>,
    max_rows: usize,
) -> SourceChunk {
    let rows: std::collections::BTreeMap<_, _> = rows.take(max_rows).collect();
    let truncated = rows.len() >= max_rows;
    let partition = (deletion.is_some() || !rows.is_empty()).then_some(Partition { deletion, rows });
    SourceChunk { partition, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Cell;
    use crate::row::{limited_cut, Row, SliceLimit};
    use proptest::prelude::*;

    fn ck(i: u8) -> ClusteringKey {
        ClusteringKey::from_encoded(vec![i])
    }

    /// A source as a whole partition; chunks cut from it as a MemTable or SSTable would.
    fn chunk(source: &Partition, slice: &ClusteringSlice, max_rows: usize) -> SourceChunk {
        let sliced = source.slice(slice);
        let c = chunk_of(sliced.deletion, sliced.rows.into_iter(), max_rows);
        if source.is_empty() {
            return SourceChunk::default();
        }
        c
    }

    fn read(sources: &[Partition], slice: &ClusteringSlice, limit: RowLimit) -> (Option<Partition>, usize) {
        read_within(sources, slice, limit, usize::MAX)
    }

    /// [`read`] that also stops at `max_bytes` stored bytes.
    fn read_within(
        sources: &[Partition],
        slice: &ClusteringSlice,
        limit: RowLimit,
        max_bytes: usize,
    ) -> (Option<Partition>, usize) {
        let mut bounded = BoundedRead::new(slice, limit).with_max_bytes(max_bytes);
        let mut rounds = 0;
        while let Some(s) = bounded.next_slice() {
            let n = bounded.chunk_rows();
            // As the shard reads: source by source, each up to the round's cover so far.
            for source in sources {
                let narrowed = bounded.source_slice().expect("a round in progress");
                assert_eq!(narrowed.start, s.start, "every source of a round starts where it does");
                bounded.add(chunk(source, &narrowed, n));
            }
            bounded.end_round();
            rounds += 1;
            assert!(rounds < 10_000, "a bounded read always progresses");
        }
        (bounded.finish(), rounds)
    }

    fn merged(sources: &[Partition]) -> Partition {
        let mut all = Partition::default();
        for p in sources {
            all.merge(p.clone());
        }
        all
    }

    /// The reference: the full merge, sliced, cut after the limit-th live row.
    fn expected(sources: &[Partition], slice: &ClusteringSlice, limit: RowLimit) -> Vec<(ClusteringKey, bool)> {
        let all = merged(sources).slice(slice);
        let mut out = Vec::new();
        let mut live = 0;
        for (k, row) in &all.rows {
            let is_live = row.is_live(all.deletion, limit.now_secs);
            out.push((k.clone(), is_live));
            live += usize::from(is_live);
            if live == limit.live_rows {
                break;
            }
        }
        out
    }

    fn any_cell() -> impl Strategy<Value = Cell> {
        prop_oneof![
            (1i64..20).prop_map(|ts| Cell::Live { ts, value: vec![ts as u8] }),
            (1i64..20).prop_map(|ts| Cell::Tombstone { ts, deleted_at: 0 }),
            (1i64..20, 0u32..3).prop_map(|(ts, e)| Cell::Expiring { ts, value: vec![1], expires_at: e, ttl: 1 }),
        ]
    }

    fn any_row() -> impl Strategy<Value = Row> {
        let deletion = proptest::option::weighted(0.2, (1i64..20).prop_map(|ts| Deletion { ts, deleted_at: 0 }));
        (proptest::option::of(any_cell()), deletion, proptest::option::of(any_cell())).prop_map(|(m, d, c)| Row {
            marker: m,
            deletion: d,
            cells: c.into_iter().map(|c| (0, c)).collect(),
        })
    }

    fn any_source() -> impl Strategy<Value = Partition> {
        let deletion = proptest::option::weighted(0.15, (1i64..20).prop_map(|ts| Deletion { ts, deleted_at: 0 }));
        let rows = proptest::collection::btree_map((0u8..60).prop_map(ck), any_row(), 0..40);
        (deletion, rows).prop_map(|(deletion, rows)| {
            let mut p = Partition::default();
            p.merge(Partition { deletion, rows });
            p
        })
    }

    fn any_bound() -> impl Strategy<Value = Bound<ClusteringKey>> {
        prop_oneof![
            Just(Bound::Unbounded),
            (0u8..60).prop_map(|i| Bound::Included(ck(i))),
            (0u8..60).prop_map(|i| Bound::Excluded(ck(i))),
        ]
    }

    proptest! {
        /// Sources with row and partition deletions, cell tombstones and expired cells: a read
        /// from any start with any row limit returns exactly the full merge's rows from that
        /// start up to its limit-th live row, and the live rows a reader sees are the same.
        #[test]
        fn a_bounded_read_is_the_matching_part_of_the_full_read(
            sources in proptest::collection::vec(any_source(), 1..5),
            start in any_bound(),
            end in any_bound(),
            limit in 1usize..30,
            now in 0u32..3,
        ) {
            let slice = ClusteringSlice { start, end };
            let limit = RowLimit { live_rows: limit, now_secs: now };
            let (got, _) = read(&sources, &slice, limit);
            let want = expected(&sources, &slice, limit);
            let got_rows: Vec<(ClusteringKey, bool)> = got.iter().flat_map(|p| {
                p.rows.iter().map(|(k, r)| (k.clone(), r.is_live(p.deletion, now)))
            }).collect();
            prop_assert_eq!(&got_rows, &want);
            let full = merged(&sources).slice(&slice);
            if let Some(p) = &got {
                prop_assert_eq!(p.deletion, full.deletion);
                for (k, row) in &p.rows {
                    prop_assert_eq!(Some(row), full.rows.get(k), "row {:?} as the full merge has it", k);
                }
            }
            // A read that does not say it may have stopped early holds the whole slice.
            if limited_cut(got.as_ref(), Some(SliceLimit::rows(limit.live_rows))).is_none() {
                prop_assert_eq!(want.len(), full.rows.len());
            }
        }

        /// Paging a slice with bounded reads (in rows, and in bytes or not), each starting
        /// after the last row of the one before where `limited_cut` says it may have stopped,
        /// visits every live row of the full read exactly once, in order.
        #[test]
        fn bounded_reads_page_through_every_live_row_once(
            sources in proptest::collection::vec(any_source(), 1..5),
            limit in 1usize..7,
            bytes in prop_oneof![Just(usize::MAX), 1usize..400],
        ) {
            let now = 1;
            let all = merged(&sources);
            let want: Vec<ClusteringKey> =
                all.rows.iter().filter(|(_, r)| r.is_live(all.deletion, now)).map(|(k, _)| k.clone()).collect();
            let mut got = Vec::new();
            let mut slice = ClusteringSlice::ALL;
            loop {
                let (page, _) = read_within(&sources, &slice, RowLimit { live_rows: limit, now_secs: now }, bytes);
                let Some(page) = page else { break };
                got.extend(page.rows.iter().filter(|(_, r)| r.is_live(page.deletion, now)).map(|(k, _)| k.clone()));
                match limited_cut(Some(&page), Some(SliceLimit { rows: limit, bytes })) {
                    Some(after) => slice = ClusteringSlice { start: Bound::Excluded(after), end: Bound::Unbounded },
                    None => break,
                }
            }
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn a_partition_deletion_in_one_source_shadows_rows_of_another_across_rounds() {
        let live = |ts| Row { marker: Some(Cell::Live { ts, value: vec![] }), ..Row::default() };
        // Old rows 0..100 in one source, a newer partition deletion in another, new rows 50..60
        // after it: the read skips 50 shadowed rows (over several rounds) and stops after 5.
        let old = Partition { deletion: None, rows: (0..100).map(|i| (ck(i), live(1))).collect() };
        let deleted = Partition { deletion: Some(Deletion { ts: 5, deleted_at: 0 }), rows: Default::default() };
        let new = Partition { deletion: None, rows: (50..60).map(|i| (ck(i), live(9))).collect() };
        let sources = [old, deleted, new];
        let limit = RowLimit { live_rows: 5, now_secs: 0 };
        let (got, rounds) = read(&sources, &ClusteringSlice::ALL, limit);
        let got = got.expect("the partition exists");
        assert_eq!(got.deletion.map(|d| d.ts), Some(5));
        let keys: Vec<_> = got.rows.keys().cloned().collect();
        assert_eq!(keys, (50..55).map(ck).collect::<Vec<_>>(), "shadowed rows are dropped by the merge");
        assert!(rounds >= 2, "the first chunks held only shadowed rows");
    }

    #[test]
    fn a_read_of_tombstones_stops_after_a_bounded_number_of_them() {
        let dead = Row { deletion: Some(Deletion { ts: 3, deleted_at: 0 }), ..Row::default() };
        let mut rows = std::collections::BTreeMap::new();
        for i in 0..(MAX_DEAD_ROWS as u32 + 500) {
            rows.insert(ClusteringKey::from_encoded(i.to_be_bytes().to_vec()), dead.clone());
        }
        let source = Partition { deletion: None, rows };
        let limit = RowLimit { live_rows: 10, now_secs: 0 };
        let (got, _) = read(std::slice::from_ref(&source), &ClusteringSlice::ALL, limit);
        let got = got.unwrap();
        assert_eq!(got.rows.len(), 10 + MAX_DEAD_ROWS);
        assert!(limited_cut(Some(&got), Some(SliceLimit::rows(10))).is_some(), "it says it may have stopped early");
    }
}

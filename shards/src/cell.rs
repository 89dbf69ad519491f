//! Cells and deletions, and last-write-wins reconciliation between two versions of a cell.
//!
//! Reconciliation is a total order (see [`Cell::reconcile`]), so merging is commutative,
//! associative and idempotent, and independent of the time at which it runs: replicas and
//! compactions that merge the same versions in any order reach the same cell.

use std::cmp::Ordering;

pub use crate::hlc::Timestamp;

/// Seconds since the Unix epoch, as Cassandra's `localDeletionTime`: when a tombstone was written
/// or when an expiring cell expires. u32 seconds last until 2106.
pub type DeletionTime = u32;

/// Bound on a TTL, as Cassandra's (20 years).
pub const MAX_TTL_SECONDS: u32 = 20 * 365 * 24 * 3600;

/// The lowest timestamp a write may carry. Timestamps are microseconds since the Unix epoch;
/// the clock never issues a negative one, and the engine uses `i64::MIN` as "no timestamp"
/// (SSTable metadata of an empty table, the clock before its first reading), so a write below
/// 0 is refused: from a client (`Invalid`) as from a peer.
pub const MIN_WRITE_TIMESTAMP: Timestamp = 0;

/// One version of a column's value (or of a row's liveness marker, whose value is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    Live {
        ts: Timestamp,
        value: Vec<u8>,
    },
    /// Reads as `value` until `expires_at` (seconds), then as absent, shadowing older versions.
    Expiring {
        ts: Timestamp,
        value: Vec<u8>,
        ttl: u32,
        expires_at: DeletionTime,
    },
    /// A deletion of this cell, written at local time `deleted_at`.
    Tombstone {
        ts: Timestamp,
        deleted_at: DeletionTime,
    },
}

/// A deletion of a whole row or partition: hides every cell with a timestamp <= `ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deletion {
    pub ts: Timestamp,
    pub deleted_at: DeletionTime,
}

impl Deletion {
    /// True when this deletion hides a version written at `ts` (a tie deletes, as in Cassandra).
    pub fn shadows(&self, ts: Timestamp) -> bool {
        ts <= self.ts
    }

    /// The later of two optional deletions.
    pub fn merge(a: Option<Deletion>, b: Option<Deletion>) -> Option<Deletion> {
        a.max(b)
    }
}

impl Cell {
    pub fn ts(&self) -> Timestamp {
        match self {
            Cell::Live { ts, .. } | Cell::Expiring { ts, .. } | Cell::Tombstone { ts, .. } => *ts,
        }
    }

    /// A live or expiring cell with `ttl` seconds to live (0 = no expiry) written at `now_secs`.
    pub fn write(ts: Timestamp, value: Vec<u8>, ttl: u32, now_secs: DeletionTime) -> Cell {
        if ttl == 0 {
            Cell::Live { ts, value }
        } else {
            Cell::Expiring { ts, value, ttl, expires_at: now_secs.saturating_add(ttl) }
        }
    }

    /// The value as a reader at `now_secs` sees it: None for tombstones and expired cells.
    pub fn live_value(&self, now_secs: DeletionTime) -> Option<&[u8]> {
        match self {
            Cell::Live { value, .. } => Some(value),
            Cell::Expiring { value, expires_at, .. } if now_secs < *expires_at => Some(value),
            _ => None,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        matches!(self, Cell::Tombstone { .. })
    }

    /// Rank of the cell's kind on a timestamp tie: a deletion beats an expiring value beats a
    /// live value (Cassandra, CASSANDRA-14592: tombstones win ties whatever the time of merge).
    fn kind_rank(&self) -> u8 {
        match self {
            Cell::Live { .. } => 0,
            Cell::Expiring { .. } => 1,
            Cell::Tombstone { .. } => 2,
        }
    }

    fn deletion_time(&self) -> DeletionTime {
        match self {
            Cell::Live { .. } => 0,
            Cell::Expiring { expires_at, .. } => *expires_at,
            Cell::Tombstone { deleted_at, .. } => *deleted_at,
        }
    }

    fn value_bytes(&self) -> &[u8] {
        match self {
            Cell::Live { value, .. } | Cell::Expiring { value, .. } => value,
            Cell::Tombstone { .. } => &[],
        }
    }

    fn ttl(&self) -> u32 {
        match self {
            Cell::Expiring { ttl, .. } => *ttl,
            _ => 0,
        }
    }

    /// The total order behind last-write-wins: higher timestamp; on a tie tombstone, then
    /// expiring, then live; then the later deletion/expiry time; then the larger value bytes;
    /// then the larger TTL. Two cells that compare equal are identical.
    pub fn precedence(&self, other: &Cell) -> Ordering {
        self.ts()
            .cmp(&other.ts())
            .then_with(|| self.kind_rank().cmp(&other.kind_rank()))
            .then_with(|| self.deletion_time().cmp(&other.deletion_time()))
            .then_with(|| self.value_bytes().cmp(other.value_bytes()))
            .then_with(|| self.ttl().cmp(&other.ttl()))
    }

    /// Last-write-wins: the version that survives when `self` and `other` meet.
    pub fn reconcile(self, other: Cell) -> Cell {
        if self.precedence(&other) == Ordering::Less {
            other
        } else {
            self
        }
    }

    /// Approximate memory footprint, for MemTable accounting.
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Cell>() + self.value_bytes().len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn any_cell() -> impl Strategy<Value = Cell> {
        // Small domains so that ties on every field actually happen.
        let ts = 0i64..4;
        let value = proptest::collection::vec(0u8..3, 0..3);
        prop_oneof![
            (ts.clone(), value.clone()).prop_map(|(ts, value)| Cell::Live { ts, value }),
            (ts.clone(), value, 1u32..3, 0u32..3).prop_map(|(ts, value, ttl, expires_at)| Cell::Expiring {
                ts,
                value,
                ttl,
                expires_at
            }),
            (ts, 0u32..3).prop_map(|(ts, deleted_at)| Cell::Tombstone { ts, deleted_at }),
        ]
    }

    proptest! {
        #[test]
        fn reconcile_is_commutative(a in any_cell(), b in any_cell()) {
            prop_assert_eq!(a.clone().reconcile(b.clone()), b.reconcile(a));
        }

        #[test]
        fn reconcile_is_associative(a in any_cell(), b in any_cell(), c in any_cell()) {
            let left = a.clone().reconcile(b.clone()).reconcile(c.clone());
            let right = a.reconcile(b.reconcile(c));
            prop_assert_eq!(left, right);
        }

        #[test]
        fn reconcile_is_idempotent(a in any_cell()) {
            prop_assert_eq!(a.clone().reconcile(a.clone()), a);
        }

        #[test]
        fn precedence_equal_means_identical(a in any_cell(), b in any_cell()) {
            if a.precedence(&b) == Ordering::Equal {
                prop_assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn newer_timestamp_wins_whatever_the_kind() {
        let old_tomb = Cell::Tombstone { ts: 5, deleted_at: 100 };
        let new_live = Cell::Live { ts: 6, value: b"a".to_vec() };
        assert_eq!(old_tomb.reconcile(new_live.clone()), new_live);
    }

    #[test]
    fn tombstone_wins_a_timestamp_tie_then_larger_value() {
        let live = Cell::Live { ts: 5, value: b"zzz".to_vec() };
        let tomb = Cell::Tombstone { ts: 5, deleted_at: 1 };
        assert_eq!(live.clone().reconcile(tomb.clone()), tomb);
        let small = Cell::Live { ts: 5, value: b"abc".to_vec() };
        assert_eq!(small.reconcile(live.clone()), live);
    }

    #[test]
    fn expiring_cell_reads_as_absent_once_expired() {
        let cell = Cell::write(1, b"v".to_vec(), 10, 1000);
        assert_eq!(cell.live_value(1009), Some(&b"v"[..]));
        assert_eq!(cell.live_value(1010), None);
        assert_eq!(Cell::write(1, b"v".to_vec(), 0, 1000).live_value(u32::MAX), Some(&b"v"[..]));
    }

    #[test]
    fn deletion_shadows_ties_and_older_versions_only() {
        let d = Deletion { ts: 10, deleted_at: 0 };
        assert!(d.shadows(9) && d.shadows(10) && !d.shadows(11));
    }
}

//! The MemTable of one table in one shard: partitions in storage order, each version merged in
//! by per-cell last-write-wins, with memory accounted in bytes against a budget.
//!
//! Owned by exactly one shard (no locks). It never decides what to do when full: the shard
//! reads [`MemTable::is_full`] and (with the flush issue) turns "full" into a flush.

use std::collections::BTreeMap;
use std::ops::Bound;

use wire::Token;

use crate::key::PartitionKey;
use crate::mutation::PartitionUpdate;
use crate::row::{ClusteringSlice, Partition};

/// Fixed per-partition overhead charged on top of key and row sizes (B-tree node share, maps).
const PARTITION_OVERHEAD: usize = 64;

#[derive(Debug)]
pub struct MemTable {
    partitions: BTreeMap<PartitionKey, Partition>,
    /// Approximate bytes held; only ever grows (merges may free memory, which is not credited
    /// back, so the budget is conservative).
    bytes: usize,
    budget: usize,
    updates: u64,
    min_timestamp: i64,
    max_timestamp: i64,
}

impl MemTable {
    pub fn new(budget: usize) -> MemTable {
        MemTable {
            partitions: BTreeMap::new(),
            bytes: 0,
            budget,
            updates: 0,
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
        }
    }

    /// Merges one stamped update.
    pub fn apply(&mut self, update: PartitionUpdate) {
        let size = update.partition.rows.iter().map(|(k, r)| k.heap_size() + r.heap_size()).sum::<usize>();
        if let Some(ts) = update.partition.max_timestamp() {
            self.max_timestamp = self.max_timestamp.max(ts);
            self.min_timestamp = self.min_timestamp.min(ts);
        }
        self.updates += 1;
        self.bytes += size;
        match self.partitions.get_mut(&update.key) {
            Some(existing) => existing.merge(update.partition),
            None => {
                self.bytes += update.key.heap_size() + PARTITION_OVERHEAD;
                let mut fresh = Partition::default();
                fresh.merge(update.partition);
                self.partitions.insert(update.key, fresh);
            }
        }
    }

    /// The stored versions of one partition's rows inside `slice` (not yet resolved against
    /// the clock: expired cells and tombstones are included, for merging with SSTables).
    pub fn get(&self, key: &PartitionKey, slice: &ClusteringSlice) -> Option<Partition> {
        self.partitions.get(key).map(|p| p.slice(slice))
    }

    /// Partitions whose token lies in (start, end], in storage order, as Cassandra's token
    /// ranges are start-exclusive and end-inclusive.
    pub fn token_range(&self, start: Token, end: Token) -> impl Iterator<Item = (&PartitionKey, &Partition)> {
        let from = if start == i64::MAX { None } else { Some(start + 1) };
        let lower = match from {
            // The smallest possible key with token >= start + 1.
            Some(t) => Bound::Included(PartitionKey::with_token_lower_bound(t)),
            None => Bound::Excluded(PartitionKey::with_token_lower_bound(i64::MAX)),
        };
        self.partitions.range((lower, Bound::Unbounded)).take_while(move |(k, _)| from.is_some() && k.token() <= end)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn is_full(&self) -> bool {
        self.bytes >= self.budget
    }

    pub fn partitions(&self) -> usize {
        self.partitions.len()
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// (min, max) timestamp of everything applied, None when empty.
    pub fn timestamp_range(&self) -> Option<(i64, i64)> {
        (self.min_timestamp <= self.max_timestamp).then_some((self.min_timestamp, self.max_timestamp))
    }

    /// Every partition in storage order.
    pub fn iter(&self) -> impl Iterator<Item = (&PartitionKey, &Partition)> {
        self.partitions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::events_schema;
    use crate::mutation::Write;
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
        let mut mt = MemTable::new(1 << 20);
        put(&mut mt, "a", 1, "newer", 20);
        put(&mut mt, "a", 1, "older", 10);
        let p = mt.get(&key("a"), &ClusteringSlice::ALL).unwrap();
        let row = p.rows.values().next().unwrap();
        assert_eq!(row.live_cells(0), Some(vec![(0, b"newer".to_vec())]));
        assert_eq!(mt.timestamp_range(), Some((10, 20)));
    }

    #[test]
    fn partition_delete_hides_earlier_rows() {
        let mut mt = MemTable::new(1 << 20);
        put(&mut mt, "a", 1, "x", 10);
        put(&mut mt, "a", 2, "y", 30);
        let s = events_schema();
        let del = Write::delete(&s, &[Value::Text("a".into()), Value::Int(1)], &[], &[]).unwrap();
        mt.apply(del.stamp(20, 0));
        let p = mt.get(&key("a"), &ClusteringSlice::ALL).unwrap();
        assert_eq!(p.rows.len(), 1, "only the row written after the delete survives");
    }

    #[test]
    fn memory_is_accounted_against_the_budget() {
        let mut mt = MemTable::new(4096);
        let mut n = 0;
        while !mt.is_full() {
            put(&mut mt, &format!("t{n}"), 1, &"v".repeat(100), 1);
            n += 1;
        }
        assert!(n > 5 && n < 40, "{n} rows of ~100 bytes filled 4 KiB");
        assert_eq!(mt.partitions(), n);
    }

    #[test]
    fn token_ranges_are_start_exclusive_end_inclusive_and_sorted() {
        let mut mt = MemTable::new(1 << 20);
        for i in 0..50 {
            put(&mut mt, &format!("k{i}"), 1, "v", 1);
        }
        let all: Vec<Token> = mt.token_range(i64::MIN, i64::MAX).map(|(k, _)| k.token()).collect();
        assert_eq!(all.len(), 50);
        assert!(all.windows(2).all(|w| w[0] <= w[1]));
        let (lo, hi) = (all[10], all[20]);
        let some: Vec<Token> = mt.token_range(lo, hi).map(|(k, _)| k.token()).collect();
        assert_eq!(some, all[11..=20].to_vec());
        assert_eq!(mt.token_range(i64::MAX, i64::MAX).count(), 0);
    }
}

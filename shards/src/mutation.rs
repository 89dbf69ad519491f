//! Writes as a client states them ([`Write`]: insert, update, delete of cells, rows or
//! partitions) and as the engine stores them once stamped with a timestamp
//! ([`PartitionUpdate`]), plus the versioned binary encoding of a batch of updates (the payload of
//! a WAL record).

use wire::codec::{DecodeError, Reader, Writer};
use wire::schema::{TableId, TableSchema};
use wire::Value;

use crate::cell::{Cell, Deletion, DeletionTime, Timestamp, MAX_TTL_SECONDS};
use crate::key::{column_value_bytes, ClusteringKey, KeyError, PartitionKey};
use crate::row::{ColumnId, Partition, Row};
use crate::row_codec::{decode_deletion, decode_row, encode_deletion, encode_row};

/// Version of the batch encoding ([`encode_batch`]).
pub const BATCH_ENCODING_VERSION: u8 = 1;

/// Bound on the number of writes in one batch.
pub const MAX_BATCH_WRITES: usize = 65_536;

/// Largest value of one cell (Cassandra recommends far less; this is a hard bound).
pub const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;

/// A write to one partition, not yet stamped with a timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub table: TableId,
    pub key: PartitionKey,
    pub op: WriteOp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// CQL INSERT: writes the row's liveness marker and the given columns (None = null, which
    /// deletes the cell). `ttl` 0 = no expiry.
    Insert {
        clustering: ClusteringKey,
        columns: Vec<(ColumnId, Option<Vec<u8>>)>,
        ttl: u32,
    },
    /// CQL UPDATE: writes only the given columns.
    Update {
        clustering: ClusteringKey,
        columns: Vec<(ColumnId, Option<Vec<u8>>)>,
        ttl: u32,
    },
    DeleteColumns {
        clustering: ClusteringKey,
        columns: Vec<ColumnId>,
    },
    DeleteRow {
        clustering: ClusteringKey,
    },
    DeletePartition,
}

/// A write that does not fit its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("table '{table}' has no column '{column}'")]
    UnknownColumn { table: String, column: String },
    #[error("column '{0}' is set twice in one write")]
    DuplicateColumn(String),
    #[error("TTL {0} s is above the limit of {MAX_TTL_SECONDS} s")]
    TtlTooLarge(u32),
    #[error("value of column '{column}' is {len} bytes, above the limit of {MAX_VALUE_LEN}")]
    ValueTooLarge { column: String, len: usize },
    #[error("a batch needs at least one write")]
    EmptyBatch,
}

impl Write {
    /// An INSERT (`marker` = true) or UPDATE of one row from column names and values.
    pub fn upsert(
        schema: &TableSchema,
        partition: &[Value],
        clustering: &[Value],
        columns: &[(&str, Option<Value>)],
        ttl: u32,
        marker: bool,
    ) -> Result<Write, WriteError> {
        if ttl > MAX_TTL_SECONDS {
            return Err(WriteError::TtlTooLarge(ttl));
        }
        let key = PartitionKey::from_values(schema, partition)?;
        let clustering = ClusteringKey::from_values(schema, clustering, true)?;
        let mut cols = Vec::with_capacity(columns.len());
        for (name, value) in columns {
            let id = column_id(schema, name)?;
            let bytes = match value {
                Some(v) => {
                    let def = &schema.columns[id as usize];
                    let bytes = column_value_bytes(&def.name, def.ty, v)?;
                    if bytes.len() > MAX_VALUE_LEN {
                        return Err(WriteError::ValueTooLarge { column: def.name.clone(), len: bytes.len() });
                    }
                    Some(bytes)
                }
                None => None,
            };
            cols.push((id, bytes));
        }
        sort_unique(schema, &mut cols, |c| c.0)?;
        let op = if marker {
            WriteOp::Insert { clustering, columns: cols, ttl }
        } else {
            WriteOp::Update { clustering, columns: cols, ttl }
        };
        Ok(Write { table: schema.id, key, op })
    }

    /// A DELETE of a whole partition (no clustering values), of one row, or of some of a row's
    /// columns.
    pub fn delete(
        schema: &TableSchema,
        partition: &[Value],
        clustering: &[Value],
        columns: &[&str],
    ) -> Result<Write, WriteError> {
        let key = PartitionKey::from_values(schema, partition)?;
        let op = if clustering.is_empty() && columns.is_empty() && !schema.clustering.is_empty() {
            WriteOp::DeletePartition
        } else {
            let clustering = ClusteringKey::from_values(schema, clustering, true)?;
            if columns.is_empty() {
                if schema.clustering.is_empty() {
                    // A table without clustering columns has one row per partition: deleting
                    // the row is deleting the partition, as Cassandra does.
                    WriteOp::DeletePartition
                } else {
                    WriteOp::DeleteRow { clustering }
                }
            } else {
                let mut ids = columns.iter().map(|c| column_id(schema, c)).collect::<Result<Vec<_>, _>>()?;
                sort_unique(schema, &mut ids, |id| *id)?;
                WriteOp::DeleteColumns { clustering, columns: ids }
            }
        };
        Ok(Write { table: schema.id, key, op })
    }

    /// The stored form of this write, every cell and deletion stamped with `ts`, TTLs counted
    /// from `now_secs`.
    pub fn stamp(self, ts: Timestamp, now_secs: DeletionTime) -> PartitionUpdate {
        let deletion = Deletion { ts, deleted_at: now_secs };
        let tombstone = || Cell::Tombstone { ts, deleted_at: now_secs };
        let to_cells = |columns: Vec<(ColumnId, Option<Vec<u8>>)>, ttl: u32| {
            columns
                .into_iter()
                .map(|(id, v)| (id, v.map_or_else(tombstone, |v| Cell::write(ts, v, ttl, now_secs))))
                .collect()
        };
        let (clustering, row, partition_deletion) = match self.op {
            WriteOp::Insert { clustering, columns, ttl } => {
                let marker = Some(Cell::write(ts, Vec::new(), ttl, now_secs));
                (Some(clustering), Row { marker, deletion: None, cells: to_cells(columns, ttl) }, None)
            }
            WriteOp::Update { clustering, columns, ttl } => {
                (Some(clustering), Row { cells: to_cells(columns, ttl), ..Row::default() }, None)
            }
            WriteOp::DeleteColumns { clustering, columns } => {
                let cells = columns.into_iter().map(|id| (id, tombstone())).collect();
                (Some(clustering), Row { cells, ..Row::default() }, None)
            }
            WriteOp::DeleteRow { clustering } => {
                (Some(clustering), Row { deletion: Some(deletion), ..Row::default() }, None)
            }
            WriteOp::DeletePartition => (None, Row::default(), Some(deletion)),
        };
        let rows = clustering.map(|c| (c, row)).into_iter().collect();
        PartitionUpdate { table: self.table, key: self.key, deletion: partition_deletion, rows }
    }
}

fn column_id(schema: &TableSchema, name: &str) -> Result<ColumnId, WriteError> {
    schema
        .column_id(name)
        .ok_or_else(|| WriteError::UnknownColumn { table: schema.name.clone(), column: name.to_owned() })
}

fn sort_unique<T>(schema: &TableSchema, items: &mut [T], id: impl Fn(&T) -> ColumnId) -> Result<(), WriteError> {
    items.sort_by_key(&id);
    match items.windows(2).find(|w| id(&w[0]) == id(&w[1])) {
        Some(w) => Err(WriteError::DuplicateColumn(schema.columns[id(&w[0]) as usize].name.clone())),
        None => Ok(()),
    }
}

/// A stamped write to one partition: what the WAL records and the MemTable merges. Rows are
/// a vector sorted by clustering key with no duplicates (a write usually holds one row; a map
/// per write would cost a B-tree node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionUpdate {
    pub table: TableId,
    pub key: PartitionKey,
    pub deletion: Option<Deletion>,
    pub rows: Vec<(ClusteringKey, Row)>,
}

impl PartitionUpdate {
    /// The newest timestamp in the update.
    pub fn max_timestamp(&self) -> Option<i64> {
        let rows = self.rows.iter().filter_map(|(_, r)| r.max_timestamp());
        rows.chain(self.deletion.map(|d| d.ts)).max()
    }

    /// The update as a partition version (for merging with other versions).
    pub fn into_partition(self) -> Partition {
        Partition { deletion: self.deletion, rows: self.rows.into_iter().collect() }
    }
}

/// Encodes a batch of updates (docs/FORMAT.md, "Mutation batch").
pub fn encode_batch(updates: &[PartitionUpdate], out: &mut Vec<u8>) {
    let mut w = Writer::with_buffer(std::mem::take(out));
    w.u8(BATCH_ENCODING_VERSION).u32(updates.len() as u32);
    for u in updates {
        w.u32(u.table).bytes(u.key.bytes());
        debug_assert!(u.rows.windows(2).all(|w| w[0].0 < w[1].0), "rows sorted and unique");
        encode_deletion(&mut w, u.deletion);
        w.u32(u.rows.len() as u32);
        for (clustering, row) in &u.rows {
            w.bytes(clustering.as_bytes());
            encode_row(&mut w, row);
        }
    }
    *out = w.into_bytes();
}

/// Decodes a batch written by [`encode_batch`], validating versions, bounds and ordering.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<PartitionUpdate>, DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != BATCH_ENCODING_VERSION {
        return Err(r.invalid("batch version", format!("unsupported version {version}")));
    }
    let n = r.count(13)?;
    if n > MAX_BATCH_WRITES {
        return Err(DecodeError::TooLong { offset: 1, len: n, limit: MAX_BATCH_WRITES });
    }
    let mut updates = Vec::with_capacity(n);
    for _ in 0..n {
        let table = r.u32()?;
        let key = PartitionKey::from_serialized(r.bytes()?.to_vec());
        let deletion = decode_deletion(&mut r)?;
        let mut rows: Vec<(ClusteringKey, Row)> = Vec::new();
        for _ in 0..r.count(9)? {
            let clustering = ClusteringKey::from_encoded(r.bytes()?.to_vec());
            if rows.last().is_some_and(|(l, _)| *l >= clustering) {
                return Err(r.invalid("row order", "clustering keys not strictly increasing"));
            }
            rows.push((clustering, decode_row(&mut r)?));
        }
        updates.push(PartitionUpdate { table, key, deletion, rows });
    }
    r.finish()?;
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::tests::any_cell;
    use crate::key::tests::events_schema;
    use proptest::prelude::*;

    fn any_update() -> impl Strategy<Value = PartitionUpdate> {
        let row = (
            proptest::option::of(any_cell()),
            proptest::option::of((any::<i64>(), any::<u32>()).prop_map(|(ts, deleted_at)| Deletion { ts, deleted_at })),
            proptest::collection::btree_map(any::<u16>(), any_cell(), 0..4),
        )
            .prop_map(|(marker, deletion, cells)| Row { marker, deletion, cells: cells.into_iter().collect() });
        let rows = proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(ClusteringKey::from_encoded),
            row,
            0..4,
        );
        (
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..20),
            proptest::option::of((any::<i64>(), any::<u32>()).prop_map(|(ts, deleted_at)| Deletion { ts, deleted_at })),
            rows,
        )
            .prop_map(|(table, key, deletion, rows)| PartitionUpdate {
                table,
                key: PartitionKey::from_serialized(key),
                deletion,
                rows: rows.into_iter().collect(),
            })
    }

    proptest! {
        #[test]
        fn batches_round_trip(updates in proptest::collection::vec(any_update(), 0..4)) {
            let mut bytes = Vec::new();
            encode_batch(&updates, &mut bytes);
            prop_assert_eq!(decode_batch(&bytes).unwrap(), updates);
        }

        #[test]
        fn damaged_batches_never_panic(updates in proptest::collection::vec(any_update(), 1..3), at in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = Vec::new();
            encode_batch(&updates, &mut bytes);
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = decode_batch(&bytes);
            let _ = decode_batch(&bytes[..at]);
        }
    }

    #[test]
    fn every_truncation_of_a_batch_is_an_error() {
        let s = events_schema();
        let w = Write::upsert(
            &s,
            &[Value::Text("t".into()), Value::Int(1)],
            &[Value::BigInt(9), Value::Int(1)],
            &[("body", Some(Value::Text("hello".into())))],
            60,
            true,
        )
        .unwrap();
        let mut bytes = Vec::new();
        encode_batch(&[w.stamp(100, 5)], &mut bytes);
        for cut in 0..bytes.len() {
            assert!(decode_batch(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn insert_writes_marker_and_ttl_cells() {
        let s = events_schema();
        let w = Write::upsert(
            &s,
            &[Value::Text("t".into()), Value::Int(1)],
            &[Value::BigInt(9), Value::Int(1)],
            &[("body", Some(Value::Text("x".into())))],
            10,
            true,
        )
        .unwrap();
        let u = w.stamp(42, 1000);
        let row = &u.rows[0].1;
        assert!(matches!(row.marker, Some(Cell::Expiring { ts: 42, expires_at: 1010, .. })));
        assert_eq!(row.live_cells(1009), Some(vec![(0, b"x".to_vec())]));
        assert_eq!(row.live_cells(1010), None);
    }

    #[test]
    fn deletes_choose_partition_row_or_cells() {
        let s = events_schema();
        let pk = [Value::Text("t".into()), Value::Int(1)];
        let ck = [Value::BigInt(1), Value::Int(2)];
        assert_eq!(Write::delete(&s, &pk, &[], &[]).unwrap().op, WriteOp::DeletePartition);
        assert!(matches!(Write::delete(&s, &pk, &ck, &[]).unwrap().op, WriteOp::DeleteRow { .. }));
        assert!(matches!(Write::delete(&s, &pk, &ck, &["body"]).unwrap().op, WriteOp::DeleteColumns { .. }));
        assert!(matches!(Write::delete(&s, &pk, &ck, &["nope"]), Err(WriteError::UnknownColumn { .. })));
    }

    #[test]
    fn bad_writes_are_typed_errors() {
        let s = events_schema();
        let pk = [Value::Text("t".into()), Value::Int(1)];
        let ck = [Value::BigInt(1), Value::Int(2)];
        let dup = [("body", None), ("BODY", None)];
        assert!(matches!(Write::upsert(&s, &pk, &ck, &dup, 0, true), Err(WriteError::DuplicateColumn(_))));
        let wrong_type = [("body", Some(Value::Int(3)))];
        assert!(matches!(Write::upsert(&s, &pk, &ck, &wrong_type, 0, true), Err(WriteError::Key(_))));
        assert!(matches!(Write::upsert(&s, &pk, &ck, &[], MAX_TTL_SECONDS + 1, true), Err(WriteError::TtlTooLarge(_))));
    }
}

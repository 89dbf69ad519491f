//! Writes as a client states them ([`Write`]: insert, update, delete of cells, rows or
//! partitions) and as the engine stores them once stamped with a timestamp
//! ([`PartitionUpdate`]), plus the versioned binary encoding of a batch of updates (the payload of
//! a WAL record).

use wire::codec::{DecodeError, Reader, Writer};
use wire::schema::{TableId, TableSchema};
use wire::Value;

use crate::cell::{Cell, Deletion, DeletionTime, Timestamp, MAX_TTL_SECONDS, MIN_WRITE_TIMESTAMP};
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

/// A stamped update that does not fit its table's schema (from a peer, a hint or the
/// batchlog): refused where it would be applied, before it is logged, so that nothing stored
/// can fail to decode later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    #[error("table '{table}': partition key {key}: {source}")]
    PartitionKey { table: String, key: String, source: KeyError },
    #[error("table '{table}': clustering key {key}: {source}")]
    ClusteringKey { table: String, key: String, source: KeyError },
    #[error("table '{table}' has no column with id {id} (it has {columns})")]
    UnknownColumn { table: String, id: ColumnId, columns: usize },
    #[error("table '{table}', column '{column}': {source}")]
    BadValue { table: String, column: String, source: wire::ValueError },
    #[error("table '{table}': a row marker carries a {len}-byte value; markers are empty")]
    MarkerValue { table: String, len: usize },
    #[error("table '{table}': TTL {ttl} s is outside 1..={MAX_TTL_SECONDS} s")]
    Ttl { table: String, ttl: u32 },
    #[error("table '{table}': timestamp {ts} is below the lowest valid write timestamp {MIN_WRITE_TIMESTAMP}")]
    Timestamp { table: String, ts: Timestamp },
}

/// The key bytes of an error message, in hex, cut after 64 bytes.
fn hex_key(bytes: &[u8]) -> String {
    let mut out = String::from("0x");
    for b in bytes.iter().take(64) {
        out.push_str(&format!("{b:02x}"));
    }
    if bytes.len() > 64 {
        out.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    out
}

impl PartitionUpdate {
    /// Checks the update against its table's schema: the keys decode under it, every cell
    /// names one of its columns and holds a value of that column's type, TTLs and timestamps
    /// are in range. One pass over the cells, allocating only for the error.
    pub fn check(&self, schema: &TableSchema) -> Result<(), UpdateError> {
        debug_assert_eq!(self.table, schema.id);
        let table = || schema.name.clone();
        self.key.check(schema).map_err(|source| UpdateError::PartitionKey {
            table: table(),
            key: hex_key(self.key.bytes()),
            source,
        })?;
        let timestamp = |ts: Timestamp| match ts < MIN_WRITE_TIMESTAMP {
            true => Err(UpdateError::Timestamp { table: table(), ts }),
            false => Ok(()),
        };
        let cell_ok = |cell: &Cell| -> Result<(), UpdateError> {
            timestamp(cell.ts())?;
            match cell {
                Cell::Expiring { ttl, .. } if *ttl == 0 || *ttl > MAX_TTL_SECONDS => {
                    Err(UpdateError::Ttl { table: table(), ttl: *ttl })
                }
                _ => Ok(()),
            }
        };
        if let Some(d) = self.deletion {
            timestamp(d.ts)?;
        }
        for (clustering, row) in &self.rows {
            clustering.check_full(schema).map_err(|source| UpdateError::ClusteringKey {
                table: table(),
                key: hex_key(clustering.as_bytes()),
                source,
            })?;
            if let Some(marker) = &row.marker {
                cell_ok(marker)?;
                if let Cell::Live { value, .. } | Cell::Expiring { value, .. } = marker {
                    if !value.is_empty() {
                        return Err(UpdateError::MarkerValue { table: table(), len: value.len() });
                    }
                }
            }
            if let Some(d) = row.deletion {
                timestamp(d.ts)?;
            }
            for (id, cell) in &row.cells {
                let def = schema.columns.get(*id as usize).ok_or_else(|| UpdateError::UnknownColumn {
                    table: table(),
                    id: *id,
                    columns: schema.columns.len(),
                })?;
                cell_ok(cell)?;
                if let Cell::Live { value, .. } | Cell::Expiring { value, .. } = cell {
                    def.ty.check_bytes(value).map_err(|source| UpdateError::BadValue {
                        table: table(),
                        column: def.name.clone(),
                        source,
                    })?;
                }
            }
        }
        Ok(())
    }

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

    fn valid_update() -> PartitionUpdate {
        let s = events_schema();
        let pk = [Value::Text("t".into()), Value::Int(1)];
        let ck = [Value::BigInt(9), Value::Int(1)];
        Write::upsert(&s, &pk, &ck, &[("body", Some(Value::Text("hello".into())))], 60, true).unwrap().stamp(100, 5)
    }

    #[test]
    fn an_update_written_by_the_coordinator_passes_its_check() {
        let s = events_schema();
        valid_update().check(&s).unwrap();
        let pk = [Value::Text("t".into()), Value::Int(1)];
        for write in [
            Write::delete(&s, &pk, &[], &[]).unwrap(),
            Write::delete(&s, &pk, &[Value::BigInt(1), Value::Int(2)], &["body"]).unwrap(),
        ] {
            write.stamp(0, 5).check(&s).unwrap();
        }
    }

    #[test]
    fn an_update_that_does_not_fit_its_schema_is_refused_by_its_check() {
        let s = events_schema();
        let with = |change: &dyn Fn(&mut PartitionUpdate)| {
            let mut u = valid_update();
            change(&mut u);
            u.check(&s).unwrap_err()
        };
        // A 3-byte int in the composite partition key.
        let err = with(&|u| u.key = PartitionKey::from_serialized(vec![0, 1, b't', 0, 0, 3, 1, 2, 3, 0]));
        assert!(
            matches!(&err, UpdateError::PartitionKey { source: KeyError::BadValue { column, .. }, .. } if column == "day"),
            "{err}"
        );
        assert!(err.to_string().contains("0x0001740000030102030"), "the message names the key: {err}");
        let err = with(&|u| u.key = PartitionKey::from_serialized(vec![1, 2, 3]));
        assert!(matches!(err, UpdateError::PartitionKey { source: KeyError::Undecodable, .. }), "{err}");
        // Clustering keys: short, long, of a wrong type.
        let err = with(&|u| u.rows[0].0 = ClusteringKey::from_encoded(vec![0; 8]));
        assert!(matches!(err, UpdateError::ClusteringKey { source: KeyError::WrongArity { got: 1, .. }, .. }), "{err}");
        let err = with(&|u| u.rows[0].0 = ClusteringKey::from_encoded(vec![0; 13]));
        assert!(matches!(err, UpdateError::ClusteringKey { source: KeyError::Undecodable, .. }), "{err}");
        // Cells: unknown column, non-UTF-8 text, bad TTL, negative timestamp; a marker with a value.
        let err = with(&|u| u.rows[0].1.cells[0].0 = 7);
        assert!(matches!(err, UpdateError::UnknownColumn { id: 7, columns: 1, .. }), "{err}");
        let err = with(&|u| u.rows[0].1.cells[0].1 = Cell::Live { ts: 1, value: vec![0xC3, 0x28] });
        assert!(
            matches!(&err, UpdateError::BadValue { column, source: wire::ValueError::NotUtf8, .. } if column == "body"),
            "{err}"
        );
        let err = with(&|u| u.rows[0].1.cells[0].1 = Cell::Expiring { ts: 1, value: vec![], ttl: 0, expires_at: 9 });
        assert!(matches!(err, UpdateError::Ttl { ttl: 0, .. }), "{err}");
        let err = with(&|u| u.rows[0].1.cells[0].1 = Cell::Tombstone { ts: i64::MIN, deleted_at: 9 });
        assert!(matches!(err, UpdateError::Timestamp { ts: i64::MIN, .. }), "{err}");
        let err = with(&|u| u.deletion = Some(Deletion { ts: -1, deleted_at: 0 }));
        assert!(matches!(err, UpdateError::Timestamp { ts: -1, .. }), "{err}");
        let err = with(&|u| u.rows[0].1.marker = Some(Cell::Live { ts: 1, value: vec![1] }));
        assert!(matches!(err, UpdateError::MarkerValue { len: 1, .. }), "{err}");
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

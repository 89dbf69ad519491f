//! Turns stored partition versions into what a reader sees at a given time: rows with their
//! column values decoded under the schema, tombstones and expired cells applied.

use wire::schema::TableSchema;
use wire::Value;

use crate::cell::{Cell, Deletion, DeletionTime};
use crate::key::{ClusteringKey, KeyError, PartitionKey};
use crate::row::{Partition, Row};

/// One visible row.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub partition_key: Vec<Value>,
    pub clustering: Vec<Value>,
    /// Every regular column in schema order; None where the cell is null, deleted or expired.
    pub columns: Vec<Option<Value>>,
    /// Beside each column's value: when it was written and how long it has left to live
    /// (CQL's `writetime(c)` and `ttl(c)`).
    pub cells: Vec<Option<CellInfo>>,
}

/// What CQL shows of a live cell besides its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellInfo {
    /// The cell's timestamp, microseconds.
    pub writetime: i64,
    /// Seconds until an expiring cell expires; None for a cell without TTL.
    pub ttl_left: Option<u32>,
}

/// A stored row that does not decode under its table's schema (written before replicas
/// checked writes, or by a buggy build): a reader skips it and reports it with its key, so
/// that one bad row never fails a whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodableRow {
    pub partition_key: Vec<u8>,
    /// None when the partition key itself does not decode (every row of it is skipped).
    pub clustering: Option<Vec<u8>>,
    pub error: KeyError,
}

impl std::fmt::Display for UndecodableRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |bytes: &[u8]| bytes.iter().take(64).map(|b| format!("{b:02x}")).collect::<String>();
        write!(f, "partition key 0x{}", hex(&self.partition_key))?;
        if let Some(clustering) = &self.clustering {
            write!(f, ", clustering key 0x{}", hex(clustering))?;
        }
        write!(f, ": {}", self.error)
    }
}

/// The rows of `partition` a reader at `now_secs` sees; fails on the first row that does not
/// decode under `schema`.
pub fn visible_rows(
    schema: &TableSchema,
    key: &PartitionKey,
    partition: &Partition,
    now_secs: DeletionTime,
) -> Result<Vec<ResultRow>, KeyError> {
    let mut first_error = None;
    let rows = visible_rows_skipping(schema, key, partition, now_secs, &mut |bad| {
        first_error.get_or_insert(bad.error);
    });
    match first_error {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}

/// The rows of `partition` a reader at `now_secs` sees, skipping every row that does not
/// decode under `schema` (all of them when the partition key does not): each is handed to
/// `skipped`, and the read goes on.
pub fn visible_rows_skipping(
    schema: &TableSchema,
    key: &PartitionKey,
    partition: &Partition,
    now_secs: DeletionTime,
    skipped: &mut dyn FnMut(UndecodableRow),
) -> Vec<ResultRow> {
    let partition_key = match key.to_values(schema) {
        Ok(values) => values,
        Err(error) => {
            skipped(UndecodableRow { partition_key: key.bytes().to_vec(), clustering: None, error });
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (clustering, row) in &partition.rows {
        match visible_row(schema, &partition_key, clustering, row, partition.deletion, now_secs) {
            Ok(Some(row)) => out.push(row),
            Ok(None) => {}
            Err(error) => skipped(UndecodableRow {
                partition_key: key.bytes().to_vec(),
                clustering: Some(clustering.as_bytes().to_vec()),
                error,
            }),
        }
    }
    out
}

/// One row as a reader at `now_secs` sees it; None when it does not exist for the reader.
fn visible_row(
    schema: &TableSchema,
    partition_key: &[Value],
    clustering: &ClusteringKey,
    row: &Row,
    partition_deletion: Option<Deletion>,
    now_secs: DeletionTime,
) -> Result<Option<ResultRow>, KeyError> {
    let mut row = row.clone();
    row.purge(partition_deletion);
    let mut columns = vec![None; schema.columns.len()];
    let mut infos = vec![None; schema.columns.len()];
    for (id, cell) in &row.cells {
        let Some(bytes) = cell.live_value(now_secs) else { continue };
        // Cells of columns this schema does not know cannot be shown; they are skipped.
        let Some(def) = schema.columns.get(*id as usize) else { continue };
        let value = Value::from_bytes(def.ty, bytes)
            .map_err(|source| KeyError::BadValue { column: def.name.clone(), source })?;
        columns[*id as usize] = Some(value);
        let ttl_left = match cell {
            Cell::Expiring { expires_at, .. } => Some(expires_at.saturating_sub(now_secs)),
            _ => None,
        };
        infos[*id as usize] = Some(CellInfo { writetime: cell.ts(), ttl_left });
    }
    // A row exists for a reader with a live marker (INSERT) or at least one live cell.
    let marker_live = row.marker.as_ref().is_some_and(|m| m.live_value(now_secs).is_some());
    if !marker_live && columns.iter().all(Option::is_none) {
        return Ok(None);
    }
    Ok(Some(ResultRow {
        partition_key: partition_key.to_vec(),
        clustering: clustering.to_values(schema)?,
        columns,
        cells: infos,
    }))
}

/// Seconds since the Unix epoch, the unit of deletion and expiry times.
pub fn now_secs() -> DeletionTime {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    secs.min(u64::from(u32::MAX)) as DeletionTime
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::events_schema;
    use crate::mutation::Write;

    #[test]
    fn a_row_that_does_not_decode_is_skipped_and_reported_with_its_key() {
        let s = events_schema();
        let pk = [Value::Text("t".into()), Value::Int(1)];
        let mut partition = Partition::default();
        for (seq, body) in [(1, Some("one")), (2, None), (3, Some("three"))] {
            let columns = [("body", body.map(|b| Value::Text(b.into())))];
            let write = Write::upsert(&s, &pk, &[Value::BigInt(9), Value::Int(seq)], &columns, 0, true).unwrap();
            let (clustering, mut row) = write.stamp(100, 5).rows.remove(0);
            if seq == 2 {
                row.cells = vec![(0, Cell::Live { ts: 100, value: vec![0xC3, 0x28] })];
            }
            partition.rows.insert(clustering, row);
        }
        let key = PartitionKey::from_values(&s, &pk).unwrap();
        let mut skipped = Vec::new();
        let rows = visible_rows_skipping(&s, &key, &partition, 10, &mut |bad| skipped.push(bad));
        let seqs: Vec<_> = rows.iter().map(|r| r.clustering[1].clone()).collect();
        assert_eq!(seqs, [Value::Int(1), Value::Int(3)], "the rows around the bad one are read");
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].partition_key, key.bytes());
        assert!(skipped[0].to_string().contains("text value is not valid UTF-8"), "{}", skipped[0]);
        assert!(visible_rows(&s, &key, &partition, 10).is_err(), "the strict reader still fails");

        let bad_key = PartitionKey::from_serialized(vec![1, 2, 3]);
        let mut skipped = Vec::new();
        assert!(visible_rows_skipping(&s, &bad_key, &partition, 10, &mut |bad| skipped.push(bad)).is_empty());
        assert_eq!(
            skipped,
            [UndecodableRow { partition_key: vec![1, 2, 3], clustering: None, error: KeyError::Undecodable }]
        );
    }
}

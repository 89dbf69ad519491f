//! Turns stored partition versions into what a reader sees at a given time: rows with their
//! column values decoded under the schema, tombstones and expired cells applied.

use wire::schema::TableSchema;
use wire::Value;

use crate::cell::{Cell, DeletionTime};
use crate::key::{KeyError, PartitionKey};
use crate::row::Partition;

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

/// The rows of `partition` a reader at `now_secs` sees.
pub fn visible_rows(
    schema: &TableSchema,
    key: &PartitionKey,
    partition: &Partition,
    now_secs: DeletionTime,
) -> Result<Vec<ResultRow>, KeyError> {
    let partition_key = key.to_values(schema)?;
    let mut out = Vec::new();
    for (clustering, row) in &partition.rows {
        let mut row = row.clone();
        row.purge(partition.deletion);
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
            continue;
        }
        out.push(ResultRow {
            partition_key: partition_key.clone(),
            clustering: clustering.to_values(schema)?,
            columns,
            cells: infos,
        });
    }
    Ok(out)
}

/// Seconds since the Unix epoch, the unit of deletion and expiry times.
pub fn now_secs() -> DeletionTime {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    secs.min(u64::from(u32::MAX)) as DeletionTime
}

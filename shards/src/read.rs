//! Turns stored partition versions into what a reader sees at a given time: rows with their
//! column values decoded under the schema, tombstones and expired cells applied.

use wire::schema::TableSchema;
use wire::Value;

use crate::cell::DeletionTime;
use crate::key::{KeyError, PartitionKey};
use crate::row::Partition;

/// One visible row.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    pub partition_key: Vec<Value>,
    pub clustering: Vec<Value>,
    /// Every regular column in schema order; None where the cell is null, deleted or expired.
    pub columns: Vec<Option<Value>>,
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
        let Some(cells) = row.live_cells(now_secs) else { continue };
        let mut columns = vec![None; schema.columns.len()];
        for (id, bytes) in cells {
            // Cells of columns this schema does not know cannot be shown; they are skipped.
            let Some(def) = schema.columns.get(id as usize) else { continue };
            let value = Value::from_bytes(def.ty, &bytes)
                .map_err(|source| KeyError::BadValue { column: def.name.clone(), source })?;
            columns[id as usize] = Some(value);
        }
        out.push(ResultRow {
            partition_key: partition_key.clone(),
            clustering: clustering.to_values(schema)?,
            columns,
        });
    }
    Ok(out)
}

/// Seconds since the Unix epoch, the unit of deletion and expiry times.
pub fn now_secs() -> DeletionTime {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    secs.min(u64::from(u32::MAX)) as DeletionTime
}

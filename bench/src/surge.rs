//! The write-surge workload, shared by the programs that drive it: the table
//! `surge (key blob PRIMARY KEY, value blob)`, distinct 16-byte keys spread over the ring,
//! pseudo-random values cut from a pre-generated pool (so generating data costs next to no CPU),
//! and the concurrent writer tasks that load rows into a shard ([`write_rows`]).

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use rand::{RngCore, SeedableRng};
use shards::key::{KeyError, PartitionKey};
use shards::mutation::{Write, WriteError};
use shards::shard::Shard;
use wire::{ColumnDef, ColumnType, SchemaError, TableOptions, TableSchema, Value};

use crate::latency::LatencyHistogram;

/// Key size the issue fixes: 8 scrambled bytes, then the 8 bytes of the row number (so keys are
/// distinct and spread over the ring).
pub const KEY_BYTES: usize = 16;

/// Bytes values are cut from: one window per row.
pub const VALUE_POOL_BYTES: usize = 1 << 20;

/// `surge (key blob PRIMARY KEY, value blob)` with table id `id`.
pub fn surge_schema(id: u32) -> Result<TableSchema, SchemaError> {
    let schema = TableSchema {
        id,
        name: "surge".into(),
        partition_key: vec![ColumnDef { name: "key".into(), ty: ColumnType::Blob }],
        clustering: Vec::new(),
        columns: vec![ColumnDef { name: "value".into(), ty: ColumnType::Blob }],
        options: TableOptions::default(),
    };
    schema.validate()?;
    Ok(schema)
}

/// SplitMix64's finaliser: a bijection on u64 that scatters consecutive row numbers.
pub fn scramble(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The key of row `row`: distinct per row (the row number is in it).
pub fn row_key(row: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(KEY_BYTES);
    key.extend_from_slice(&scramble(row).to_be_bytes());
    key.extend_from_slice(&row.to_be_bytes());
    key
}

/// The row number of a key made by [`row_key`] (its last 8 bytes), if it is one.
pub fn row_of_key(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(KEY_BYTES - 8..KEY_BYTES).filter(|_| key.len() == KEY_BYTES)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The partition key of row `row` in the surge table (what a point read looks up).
pub fn partition_key(schema: &TableSchema, row: u64) -> Result<PartitionKey, KeyError> {
    PartitionKey::from_values(schema, &[Value::Blob(row_key(row))])
}

/// Pseudo-random value bytes, generated once from a seed.
#[derive(Clone, Debug)]
pub struct ValuePool {
    bytes: Vec<u8>,
    value_bytes: usize,
}

impl ValuePool {
    /// A pool for values of `value_bytes` (1..=[`VALUE_POOL_BYTES`]) bytes.
    pub fn new(seed: u64, value_bytes: usize) -> Option<ValuePool> {
        if value_bytes == 0 || value_bytes > VALUE_POOL_BYTES {
            return None;
        }
        let mut bytes = vec![0u8; VALUE_POOL_BYTES];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
        Some(ValuePool { bytes, value_bytes })
    }

    pub fn value_bytes(&self) -> usize {
        self.value_bytes
    }

    /// The value of row `row`: a window of the pool chosen by the row.
    pub fn value(&self, row: u64) -> Vec<u8> {
        self.value_ref(row).to_vec()
    }

    /// [`ValuePool::value`] without the copy (to check what a read returned).
    pub fn value_ref(&self, row: u64) -> &[u8] {
        let windows = (self.bytes.len() - self.value_bytes + 1) as u64;
        let at = (scramble(!row) % windows) as usize;
        &self.bytes[at..at + self.value_bytes]
    }
}

/// The INSERT of row `row` (a CQL `INSERT INTO surge (key, value) VALUES (?, ?)`).
pub fn insert(schema: &TableSchema, values: &ValuePool, row: u64) -> Result<Write, WriteError> {
    insert_as(schema, values, row, row)
}

/// The INSERT of the key of row `key_row` with the value of row `value_row` (an overwrite when
/// that key was written before).
pub fn insert_as(schema: &TableSchema, values: &ValuePool, key_row: u64, value_row: u64) -> Result<Write, WriteError> {
    Write::upsert(
        schema,
        &[Value::Blob(row_key(key_row))],
        &[],
        &[("value", Some(Value::Blob(values.value(value_row))))],
        0,
        true,
    )
}

/// The rows still to be written, handed out one at a time to the writer tasks.
struct RowSource {
    next: Cell<u64>,
    end: u64,
}

impl RowSource {
    fn take(&self) -> Option<u64> {
        let row = self.next.get();
        (row < self.end).then(|| {
            self.next.set(row + 1);
            row
        })
    }
}

/// Writes rows `rows` of the surge table into `shard` with `writers` concurrent tasks on the
/// calling glommio executor, as clients would: each task takes the next row number, builds its
/// INSERT and awaits `shard.apply(vec![write], None)`, one row at a time, until none are left.
/// Returns the latency of every write (`apply` to its acknowledgement). On an error the other
/// tasks still finish their rows, and the first error is returned.
pub async fn write_rows(
    shard: &Rc<Shard>,
    schema: &Rc<TableSchema>,
    values: &Arc<ValuePool>,
    rows: Range<u64>,
    writers: usize,
) -> anyhow::Result<LatencyHistogram> {
    let (schema, values) = (schema.clone(), values.clone());
    write_rows_with(shard, rows, writers, move |row| insert(&schema, &values, row)).await
}

/// [`write_rows`] with the write of each row number built by `make` (for example an overwrite
/// of one of a few keys).
pub async fn write_rows_with(
    shard: &Rc<Shard>,
    rows: Range<u64>,
    writers: usize,
    make: impl Fn(u64) -> Result<Write, WriteError> + 'static,
) -> anyhow::Result<LatencyHistogram> {
    let source = Rc::new(RowSource { next: Cell::new(rows.start), end: rows.end });
    let latency = Rc::new(RefCell::new(LatencyHistogram::new()));
    let make = Rc::new(make);
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (shard, make) = (shard.clone(), make.clone());
            let (source, latency) = (source.clone(), latency.clone());
            glommio::spawn_local(async move {
                while let Some(row) = source.take() {
                    let write = make(row)?;
                    let sent = Instant::now();
                    shard.apply(vec![write], None).await?;
                    latency.borrow_mut().record(sent.elapsed());
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let mut first_error = None;
    for task in tasks {
        if let Err(e) = task.await {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(latency.take()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_are_distinct_and_sixteen_bytes() {
        let keys: std::collections::HashSet<Vec<u8>> = (0..10_000).map(row_key).collect();
        assert_eq!(keys.len(), 10_000);
        assert!(keys.iter().all(|k| k.len() == KEY_BYTES));
    }

    #[test]
    fn row_numbers_come_back_out_of_keys() {
        for row in [0, 1, 4_999_999, u64::MAX] {
            assert_eq!(row_of_key(&row_key(row)), Some(row));
        }
        assert_eq!(row_of_key(b"short"), None);
        let s = surge_schema(1).unwrap();
        assert_eq!(partition_key(&s, 7).unwrap().bytes(), row_key(7).as_slice(), "one blob component: its bytes");
    }

    #[test]
    fn the_surge_table_is_a_valid_schema_and_takes_inserts() {
        let s = surge_schema(1).unwrap();
        assert_eq!((s.partition_key.len(), s.clustering.len(), s.columns.len()), (1, 0, 1));
        let pool = ValuePool::new(7, 100).unwrap();
        assert_eq!(pool.value(3).len(), 100);
        assert_eq!(pool.value(3), pool.value_ref(3));
        assert_eq!(pool.value(3), ValuePool::new(7, 100).unwrap().value(3), "seeded");
        insert(&s, &pool, 3).unwrap();
        assert!(ValuePool::new(7, 0).is_none());
    }
}

/// The WAL sync mode a scenario runs, as the programs' `--modes` flags take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Batch,
    Periodic,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Batch => "batch",
            Mode::Periodic => "periodic",
        }
    }

    pub fn sync_mode(self) -> shards::wal::SyncMode {
        match self {
            Mode::Batch => shards::wal::SyncMode::Batch,
            Mode::Periodic => shards::wal::SyncMode::Periodic,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

//! The write-surge workload, shared by the programs that drive it: the table
//! `surge (key blob PRIMARY KEY, value blob)`, distinct 16-byte keys spread over the ring, and
//! pseudo-random values cut from a pre-generated pool (so generating data costs next to no CPU).

use rand::{RngCore, SeedableRng};
use shards::mutation::{Write, WriteError};
use wire::{ColumnDef, ColumnType, SchemaError, TableOptions, TableSchema, Value};

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
        let windows = (self.bytes.len() - self.value_bytes + 1) as u64;
        let at = (scramble(!row) % windows) as usize;
        self.bytes[at..at + self.value_bytes].to_vec()
    }
}

/// The INSERT of row `row` (a CQL `INSERT INTO surge (key, value) VALUES (?, ?)`).
pub fn insert(schema: &TableSchema, values: &ValuePool, row: u64) -> Result<Write, WriteError> {
    Write::upsert(
        schema,
        &[Value::Blob(row_key(row))],
        &[],
        &[("value", Some(Value::Blob(values.value(row))))],
        0,
        true,
    )
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
    fn the_surge_table_is_a_valid_schema_and_takes_inserts() {
        let s = surge_schema(1).unwrap();
        assert_eq!((s.partition_key.len(), s.clustering.len(), s.columns.len()), (1, 0, 1));
        let pool = ValuePool::new(7, 100).unwrap();
        assert_eq!(pool.value(3).len(), 100);
        assert_eq!(pool.value(3), ValuePool::new(7, 100).unwrap().value(3), "seeded");
        insert(&s, &pool, 3).unwrap();
        assert!(ValuePool::new(7, 0).is_none());
    }
}

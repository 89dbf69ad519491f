//! Keys in storage order: a partition is placed by (token, serialized partition key), a row
//! inside it by its clustering key in order-preserving ("memcomparable") form, so that
//! comparing keys as bytes is comparing them as the schema orders them.

use std::fmt;

use wire::schema::{ClusteringOrder, TableSchema};
use wire::token::{serialize_partition_key, token_of, MAX_KEY_COMPONENT_LEN};
use wire::{ColumnType, Token, Value, ValueError};

/// A partition's place on the ring and its identity: Cassandra's serialized partition key and
/// its token. Ordered by (token, key bytes): the storage order of partitions.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    token: Token,
    key: Vec<u8>,
}

/// A row's clustering key in order-preserving form; empty for tables without clustering columns.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusteringKey(Vec<u8>);

/// A key that does not fit its table's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("table '{table}' has {expected} {what} columns, {got} values given")]
    WrongArity { table: String, what: &'static str, expected: usize, got: usize },
    #[error("column '{column}': {source}")]
    BadValue { column: String, source: ValueError },
    #[error("partition key component '{column}' is {len} bytes, more than the limit of {MAX_KEY_COMPONENT_LEN}")]
    ComponentTooLong { column: String, len: usize },
    #[error("stored key does not decode under the table's schema")]
    Undecodable,
}

impl PartitionKey {
    /// Builds the key of a partition from one value per partition key column.
    pub fn from_values(schema: &TableSchema, values: &[Value]) -> Result<PartitionKey, KeyError> {
        check_arity(schema, "partition key", schema.partition_key.len(), values.len())?;
        for (col, value) in schema.partition_key.iter().zip(values) {
            value.check_type(col.ty).map_err(|source| KeyError::BadValue { column: col.name.clone(), source })?;
            let len = value.to_bytes().len();
            if len > MAX_KEY_COMPONENT_LEN {
                return Err(KeyError::ComponentTooLong { column: col.name.clone(), len });
            }
        }
        Ok(PartitionKey::from_serialized(serialize_partition_key(values)))
    }

    /// A key from Cassandra's serialized form (the bytes the token is computed from).
    pub fn from_serialized(key: Vec<u8>) -> PartitionKey {
        PartitionKey { token: token_of(&key), key }
    }

    pub fn token(&self) -> Token {
        self.token
    }

    /// A key that sorts before every real key with token `token` (an empty key byte string):
    /// the lower bound of a token-range lookup.
    pub fn with_token_lower_bound(token: Token) -> PartitionKey {
        PartitionKey { token, key: Vec::new() }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.key
    }

    /// The partition key's column values.
    pub fn to_values(&self, schema: &TableSchema) -> Result<Vec<Value>, KeyError> {
        let cols = &schema.partition_key;
        if let [col] = cols.as_slice() {
            let v = Value::from_bytes(col.ty, &self.key)
                .map_err(|source| KeyError::BadValue { column: col.name.clone(), source })?;
            return Ok(vec![v]);
        }
        let mut rest = self.key.as_slice();
        let mut out = Vec::with_capacity(cols.len());
        for col in cols {
            let (len, tail) = rest.split_first_chunk::<2>().ok_or(KeyError::Undecodable)?;
            let len = u16::from_be_bytes(*len) as usize;
            let (raw, tail) = (tail.get(..len).ok_or(KeyError::Undecodable)?, &tail[len..]);
            let v = Value::from_bytes(col.ty, raw)
                .map_err(|source| KeyError::BadValue { column: col.name.clone(), source })?;
            out.push(v);
            rest = tail.strip_prefix(&[0u8][..]).ok_or(KeyError::Undecodable)?;
        }
        if !rest.is_empty() {
            return Err(KeyError::Undecodable);
        }
        Ok(out)
    }

    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<PartitionKey>() + self.key.len()
    }

    /// Checks that the key decodes under `schema` (what [`PartitionKey::to_values`] accepts,
    /// plus the component length bound of [`PartitionKey::from_values`]) without building
    /// the values.
    pub fn check(&self, schema: &TableSchema) -> Result<(), KeyError> {
        fn bad(col: &wire::schema::ColumnDef) -> impl FnOnce(ValueError) -> KeyError + '_ {
            move |source| KeyError::BadValue { column: col.name.clone(), source }
        }
        let too_long = |col: &wire::schema::ColumnDef, len: usize| match len > MAX_KEY_COMPONENT_LEN {
            true => Err(KeyError::ComponentTooLong { column: col.name.clone(), len }),
            false => Ok(()),
        };
        if let [col] = schema.partition_key.as_slice() {
            too_long(col, self.key.len())?;
            return col.ty.check_bytes(&self.key).map_err(bad(col));
        }
        let mut rest = self.key.as_slice();
        for col in &schema.partition_key {
            let (len, tail) = rest.split_first_chunk::<2>().ok_or(KeyError::Undecodable)?;
            let len = u16::from_be_bytes(*len) as usize;
            let raw = tail.get(..len).ok_or(KeyError::Undecodable)?;
            col.ty.check_bytes(raw).map_err(bad(col))?;
            rest = tail[len..].strip_prefix(&[0u8][..]).ok_or(KeyError::Undecodable)?;
        }
        match rest.is_empty() {
            true => Ok(()),
            false => Err(KeyError::Undecodable),
        }
    }
}

impl fmt::Debug for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartitionKey({}, 0x", self.token)?;
        self.key.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str(")")
    }
}

impl ClusteringKey {
    /// Builds a clustering key, or a prefix of one, from the leading clustering column values.
    /// `full` requires a value for every clustering column (rows are written with full keys).
    pub fn from_values(schema: &TableSchema, values: &[Value], full: bool) -> Result<ClusteringKey, KeyError> {
        let expected = schema.clustering.len();
        if values.len() > expected || (full && values.len() != expected) {
            check_arity(schema, "clustering", expected, values.len())?;
        }
        let mut out = Vec::new();
        for (col, value) in schema.clustering.iter().zip(values) {
            value
                .check_type(col.column.ty)
                .map_err(|source| KeyError::BadValue { column: col.column.name.clone(), source })?;
            value.write_ordered(col.order == ClusteringOrder::Desc, &mut out);
        }
        Ok(ClusteringKey(out))
    }

    pub fn from_encoded(bytes: Vec<u8>) -> ClusteringKey {
        ClusteringKey(bytes)
    }

    /// Checks that this is a row's full key under `schema`: one value of each clustering
    /// column's type, nothing after (empty for a table without clustering columns).
    pub fn check_full(&self, schema: &TableSchema) -> Result<(), KeyError> {
        let mut rest = self.0.as_slice();
        for (got, col) in schema.clustering.iter().enumerate() {
            if rest.is_empty() {
                return check_arity(schema, "clustering", schema.clustering.len(), got);
            }
            let desc = col.order == ClusteringOrder::Desc;
            let used = col
                .column
                .ty
                .check_ordered(desc, rest)
                .map_err(|source| KeyError::BadValue { column: col.column.name.clone(), source })?;
            rest = &rest[used..];
        }
        match rest.is_empty() {
            true => Ok(()),
            false => Err(KeyError::Undecodable),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The clustering column values encoded in this key (all of them, or a prefix).
    pub fn to_values(&self, schema: &TableSchema) -> Result<Vec<Value>, KeyError> {
        let mut rest = self.0.as_slice();
        let mut out = Vec::new();
        for col in &schema.clustering {
            if rest.is_empty() {
                break;
            }
            let desc = col.order == ClusteringOrder::Desc;
            let (v, used) = Value::read_ordered(col.column.ty, desc, rest)
                .map_err(|source| KeyError::BadValue { column: col.column.name.clone(), source })?;
            out.push(v);
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err(KeyError::Undecodable);
        }
        Ok(out)
    }

    pub fn heap_size(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for ClusteringKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusteringKey(0x")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str(")")
    }
}

fn check_arity(schema: &TableSchema, what: &'static str, expected: usize, got: usize) -> Result<(), KeyError> {
    if expected == got {
        Ok(())
    } else {
        Err(KeyError::WrongArity { table: schema.name.clone(), what, expected, got })
    }
}

/// The serialized value of a regular column, checked against the column's type.
pub fn column_value_bytes(column: &str, ty: ColumnType, value: &Value) -> Result<Vec<u8>, KeyError> {
    value.check_type(ty).map_err(|source| KeyError::BadValue { column: column.to_owned(), source })?;
    Ok(value.to_bytes())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wire::schema::{ClusteringColumn, ColumnDef, TableOptions};

    pub fn events_schema() -> TableSchema {
        TableSchema {
            id: 1,
            name: "events".into(),
            partition_key: vec![
                ColumnDef { name: "tenant".into(), ty: ColumnType::Text },
                ColumnDef { name: "day".into(), ty: ColumnType::Int },
            ],
            clustering: vec![
                ClusteringColumn {
                    column: ColumnDef { name: "at".into(), ty: ColumnType::BigInt },
                    order: ClusteringOrder::Desc,
                },
                ClusteringColumn {
                    column: ColumnDef { name: "seq".into(), ty: ColumnType::Int },
                    order: ClusteringOrder::Asc,
                },
            ],
            columns: vec![ColumnDef { name: "body".into(), ty: ColumnType::Text }],
            options: TableOptions::default(),
        }
    }

    #[test]
    fn partition_keys_round_trip_and_order_by_token() {
        let s = events_schema();
        let vals = vec![Value::Text("acme".into()), Value::Int(20)];
        let k = PartitionKey::from_values(&s, &vals).unwrap();
        assert_eq!(k.to_values(&s).unwrap(), vals);
        assert_eq!(k.token(), token_of(&serialize_partition_key(&vals)));
        let other = PartitionKey::from_values(&s, &[Value::Text("acme".into()), Value::Int(21)]).unwrap();
        assert_eq!(k.cmp(&other), k.token().cmp(&other.token()));
    }

    #[test]
    fn clustering_keys_sort_by_schema_order_including_desc() {
        let s = events_schema();
        let key =
            |at: i64, seq: i32| ClusteringKey::from_values(&s, &[Value::BigInt(at), Value::Int(seq)], true).unwrap();
        // `at` is DESC: later first; `seq` ASC breaks ties.
        assert!(key(10, 0) < key(5, 0));
        assert!(key(5, 1) < key(5, 2));
        assert_eq!(key(5, -3).to_values(&s).unwrap(), vec![Value::BigInt(5), Value::Int(-3)]);
        let prefix = ClusteringKey::from_values(&s, &[Value::BigInt(5)], false).unwrap();
        assert!(key(5, 7).as_bytes().starts_with(prefix.as_bytes()));
    }

    #[test]
    fn wrong_values_are_typed_errors() {
        let s = events_schema();
        assert!(matches!(
            PartitionKey::from_values(&s, &[Value::Text("a".into())]),
            Err(KeyError::WrongArity { expected: 2, got: 1, .. })
        ));
        assert!(matches!(
            PartitionKey::from_values(&s, &[Value::Int(1), Value::Int(2)]),
            Err(KeyError::BadValue { .. })
        ));
        assert!(ClusteringKey::from_values(&s, &[Value::BigInt(1)], true).is_err());
        let too_long = Value::Text("x".repeat(MAX_KEY_COMPONENT_LEN + 1));
        assert!(matches!(
            PartitionKey::from_values(&s, &[too_long, Value::Int(1)]),
            Err(KeyError::ComponentTooLong { .. })
        ));
    }
}

//! Table schemas: a partition key (one or more columns), optional clustering columns that sort
//! the rows of a partition, and named, typed regular columns, plus table options.
//!
//! A regular column is addressed by its position in `columns` (its column id), so ids stay
//! stable as long as columns are only ever appended. The binary encoding is versioned.

use crate::codec::{DecodeError, Reader, Writer};
use crate::value::ColumnType;

/// Identifies a table inside a node; assigned when the table is created, never reused.
pub type TableId = u32;

/// Longest table or column name (Cassandra's limit for table names).
pub const MAX_NAME_LEN: usize = 48;
/// Bound on the number of columns of one table (all kinds together).
pub const MAX_COLUMNS: usize = 1024;

/// Version of [`TableSchema::encode`]'s layout. Version 2 added `read_repair`; version 1 is
/// still read (as `read_repair = 'BLOCKING'`).
pub const SCHEMA_ENCODING_VERSION: u8 = 2;
const OLDEST_SCHEMA_ENCODING_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusteringOrder {
    Asc,
    Desc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusteringColumn {
    pub column: ColumnDef,
    pub order: ClusteringOrder,
}

/// Per-table options, with Cassandra's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptions {
    pub replication_factor: u8,
    /// How long a tombstone must be kept before compaction may drop it (Cassandra: 10 days).
    pub gc_grace_seconds: u32,
    /// TTL applied to writes that give none; 0 = no expiry.
    pub default_ttl_seconds: u32,
    /// What a read above ONE does with the replicas it found stale.
    pub read_repair: ReadRepair,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            replication_factor: 1,
            gc_grace_seconds: 864_000,
            default_ttl_seconds: 0,
            read_repair: ReadRepair::Blocking,
        }
    }
}

/// The `read_repair` table option (Cassandra 4's names, plus `BACKGROUND`): what a read at a
/// level above ONE does when its replicas disagree, after merging their answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ReadRepair {
    /// The merged result is written to the stale replicas and acknowledged (bounded by the
    /// write timeout) before the read answers: a later read at the same level never returns
    /// older data (monotonic quorum reads). Cassandra 4's default.
    #[default]
    Blocking,
    /// The read answers at once and the repair writes go out alongside, unawaited (the
    /// pre-4.0 behaviour; an EnigmaDB extension, not a Cassandra 4 name).
    Background,
    /// No repair writes: the merged result is answered; hints and anti-entropy repair converge
    /// the replicas.
    None,
}

impl ReadRepair {
    pub const ALL: [ReadRepair; 3] = [ReadRepair::Blocking, ReadRepair::Background, ReadRepair::None];

    /// The name in CQL (`WITH read_repair = 'BLOCKING'`).
    pub fn name(self) -> &'static str {
        match self {
            ReadRepair::Blocking => "BLOCKING",
            ReadRepair::Background => "BACKGROUND",
            ReadRepair::None => "NONE",
        }
    }

    /// The mode named `name`, in any case.
    pub fn from_name(name: &str) -> Option<ReadRepair> {
        ReadRepair::ALL.into_iter().find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// The byte of the schema encoding.
    pub fn code(self) -> u8 {
        match self {
            ReadRepair::Blocking => 0,
            ReadRepair::Background => 1,
            ReadRepair::None => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<ReadRepair> {
        ReadRepair::ALL.into_iter().find(|m| m.code() == code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub id: TableId,
    pub name: String,
    pub partition_key: Vec<ColumnDef>,
    pub clustering: Vec<ClusteringColumn>,
    pub columns: Vec<ColumnDef>,
    pub options: TableOptions,
}

/// A schema that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("invalid name '{0}': names are 1-48 characters of letters, digits and '_', starting with a letter")]
    InvalidName(String),
    #[error("table '{0}' needs at least one partition key column")]
    NoPartitionKey(String),
    #[error("column '{column}' is declared twice in table '{table}'")]
    DuplicateColumn { table: String, column: String },
    #[error("table '{table}' has {count} columns, more than the limit of {limit}")]
    TooManyColumns { table: String, count: usize, limit: usize },
    #[error("replication factor must be at least 1")]
    ZeroReplicationFactor,
    #[error("undecodable schema: {0}")]
    Decode(#[from] DecodeError),
    #[error("schema encoding version {0} is not supported (this build reads versions {OLDEST_SCHEMA_ENCODING_VERSION} to {SCHEMA_ENCODING_VERSION})")]
    UnsupportedVersion(u8),
}

/// True for names Cassandra accepts unquoted: a letter, then letters, digits or '_'.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_LEN
}

impl TableSchema {
    /// Checks names, uniqueness and bounds.
    pub fn validate(&self) -> Result<(), SchemaError> {
        if !is_valid_name(&self.name) {
            return Err(SchemaError::InvalidName(self.name.clone()));
        }
        if self.partition_key.is_empty() {
            return Err(SchemaError::NoPartitionKey(self.name.clone()));
        }
        if self.options.replication_factor == 0 {
            return Err(SchemaError::ZeroReplicationFactor);
        }
        let count = self.partition_key.len() + self.clustering.len() + self.columns.len();
        if count > MAX_COLUMNS {
            return Err(SchemaError::TooManyColumns { table: self.name.clone(), count, limit: MAX_COLUMNS });
        }
        let mut seen = std::collections::HashSet::new();
        for col in self.all_columns() {
            if !is_valid_name(&col.name) {
                return Err(SchemaError::InvalidName(col.name.clone()));
            }
            if !seen.insert(col.name.to_ascii_lowercase()) {
                return Err(SchemaError::DuplicateColumn { table: self.name.clone(), column: col.name.clone() });
            }
        }
        Ok(())
    }

    /// Partition key, then clustering, then regular columns.
    pub fn all_columns(&self) -> impl Iterator<Item = &ColumnDef> {
        self.partition_key.iter().chain(self.clustering.iter().map(|c| &c.column)).chain(self.columns.iter())
    }

    /// The column id of a regular column.
    pub fn column_id(&self, name: &str) -> Option<u16> {
        self.columns.iter().position(|c| c.name.eq_ignore_ascii_case(name)).map(|i| i as u16)
    }

    pub fn encode(&self, w: &mut Writer) {
        w.u8(SCHEMA_ENCODING_VERSION).u32(self.id).str(&self.name);
        let put_cols = |w: &mut Writer, cols: &mut dyn Iterator<Item = (&ColumnDef, u8)>, n: usize| {
            w.u32(n as u32);
            for (c, extra) in cols {
                w.str(&c.name).u8(c.ty.code()).u8(extra);
            }
        };
        put_cols(w, &mut self.partition_key.iter().map(|c| (c, 0)), self.partition_key.len());
        put_cols(
            w,
            &mut self.clustering.iter().map(|c| (&c.column, u8::from(c.order == ClusteringOrder::Desc))),
            self.clustering.len(),
        );
        put_cols(w, &mut self.columns.iter().map(|c| (c, 0)), self.columns.len());
        w.u8(self.options.replication_factor).u32(self.options.gc_grace_seconds).u32(self.options.default_ttl_seconds);
        w.u8(self.options.read_repair.code());
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<TableSchema, SchemaError> {
        let version = r.u8()?;
        if !(OLDEST_SCHEMA_ENCODING_VERSION..=SCHEMA_ENCODING_VERSION).contains(&version) {
            return Err(SchemaError::UnsupportedVersion(version));
        }
        let id = r.u32()?;
        let name = r.str()?.to_owned();
        let cols = |r: &mut Reader<'_>| -> Result<Vec<(ColumnDef, u8)>, DecodeError> {
            let n = r.count(7)?;
            (0..n)
                .map(|_| {
                    let name = r.str()?.to_owned();
                    let code = r.u8()?;
                    let ty = ColumnType::from_code(code)
                        .ok_or_else(|| r.invalid("column type", format!("unknown type code {code}")))?;
                    let extra = r.u8()?;
                    Ok((ColumnDef { name, ty }, extra))
                })
                .collect()
        };
        let partition_key = cols(r)?.into_iter().map(|(c, _)| c).collect();
        let clustering = cols(r)?
            .into_iter()
            .map(|(column, desc)| ClusteringColumn {
                column,
                order: if desc == 1 { ClusteringOrder::Desc } else { ClusteringOrder::Asc },
            })
            .collect();
        let columns = cols(r)?.into_iter().map(|(c, _)| c).collect();
        let (replication_factor, gc_grace_seconds, default_ttl_seconds) = (r.u8()?, r.u32()?, r.u32()?);
        let read_repair = match version {
            1 => ReadRepair::Blocking,
            _ => {
                let code = r.u8()?;
                ReadRepair::from_code(code)
                    .ok_or_else(|| r.invalid("read_repair", format!("unknown read repair mode {code}")))?
            }
        };
        let options = TableOptions { replication_factor, gc_grace_seconds, default_ttl_seconds, read_repair };
        let schema = TableSchema { id, name, partition_key, clustering, columns, options };
        schema.validate()?;
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> TableSchema {
        TableSchema {
            id: 7,
            name: "events".into(),
            partition_key: vec![
                ColumnDef { name: "tenant".into(), ty: ColumnType::Text },
                ColumnDef { name: "day".into(), ty: ColumnType::Int },
            ],
            clustering: vec![ClusteringColumn {
                column: ColumnDef { name: "at".into(), ty: ColumnType::Timestamp },
                order: ClusteringOrder::Desc,
            }],
            columns: vec![
                ColumnDef { name: "payload".into(), ty: ColumnType::Blob },
                ColumnDef { name: "score".into(), ty: ColumnType::Double },
            ],
            options: TableOptions {
                replication_factor: 3,
                gc_grace_seconds: 60,
                default_ttl_seconds: 0,
                read_repair: ReadRepair::None,
            },
        }
    }

    #[test]
    fn schema_round_trips_and_every_truncation_is_an_error() {
        let schema = sample();
        let mut w = Writer::new();
        schema.encode(&mut w);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(TableSchema::decode(&mut r).unwrap(), schema);
        r.finish().unwrap();
        for cut in 0..bytes.len() {
            assert!(TableSchema::decode(&mut Reader::new(&bytes[..cut])).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn version_1_schemas_read_as_blocking_read_repair() {
        let schema = sample();
        let mut w = Writer::new();
        schema.encode(&mut w);
        let mut bytes = w.into_bytes();
        // Version 1 is version 2 without the trailing read repair byte.
        bytes[0] = 1;
        bytes.pop();
        let old = TableSchema::decode(&mut Reader::new(&bytes)).unwrap();
        let options = TableOptions { read_repair: ReadRepair::Blocking, ..schema.options.clone() };
        assert_eq!(old, TableSchema { options, ..schema });
    }

    #[test]
    fn every_read_repair_mode_round_trips_and_unknown_codes_are_refused() {
        for mode in ReadRepair::ALL {
            assert_eq!(ReadRepair::from_name(&mode.name().to_ascii_lowercase()), Some(mode));
            let mut schema = sample();
            schema.options.read_repair = mode;
            let mut w = Writer::new();
            schema.encode(&mut w);
            assert_eq!(TableSchema::decode(&mut Reader::new(&w.into_bytes())).unwrap(), schema);
        }
        let mut w = Writer::new();
        sample().encode(&mut w);
        let mut bytes = w.into_bytes();
        *bytes.last_mut().unwrap() = 9;
        assert!(matches!(TableSchema::decode(&mut Reader::new(&bytes)), Err(SchemaError::Decode(_))));
        assert_eq!(ReadRepair::from_name("sometimes"), None);
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut w = Writer::new();
        sample().encode(&mut w);
        let mut bytes = w.into_bytes();
        bytes[0] = 99;
        assert_eq!(TableSchema::decode(&mut Reader::new(&bytes)), Err(SchemaError::UnsupportedVersion(99)));
    }

    #[test]
    fn invalid_schemas_are_rejected_with_reasons() {
        let mut s = sample();
        s.name = "1bad".into();
        assert!(matches!(s.validate(), Err(SchemaError::InvalidName(_))));
        let mut s = sample();
        s.partition_key.clear();
        assert!(matches!(s.validate(), Err(SchemaError::NoPartitionKey(_))));
        let mut s = sample();
        s.columns.push(ColumnDef { name: "Tenant".into(), ty: ColumnType::Int });
        assert!(matches!(s.validate(), Err(SchemaError::DuplicateColumn { .. })));
        assert_eq!(sample().column_id("score"), Some(1));
        assert_eq!(sample().column_id("nope"), None);
    }
}

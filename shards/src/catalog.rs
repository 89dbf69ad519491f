//! The node's schema catalog: every table's schema and the next table id, persisted in
//! `schema.cat` (a [`durable_file`](crate::durable_file)) so schemas survive restart.
//!
//! The catalog is control-plane state: it is changed only by DDL and read at start-up; shards
//! get their own copy of each schema through their channels and never read this file.
//! Table ids are never reused: `next_id` only grows, so a table id below it that the catalog
//! does not list belongs to a dropped table, whose leftover data shards discard.

use std::path::{Path, PathBuf};

use wire::codec::{Reader, Writer};
use wire::schema::{SchemaError, TableId, TableSchema};

use crate::durable_file::{self, DurableFileError, FileKind};

pub const CATALOG_FILE: &str = "schema.cat";
const KIND: FileKind = FileKind { name: "schema catalog", magic: *b"ENIGSCHM", version: 1 };

/// Bound on the number of tables of a node.
pub const MAX_TABLES: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    File(#[from] DurableFileError),
    #[error("{path}: {source}")]
    Schema { path: PathBuf, source: SchemaError },
    #[error("table '{0}' already exists")]
    TableExists(String),
    #[error("unknown table '{0}'")]
    UnknownTable(String),
    #[error("a node holds at most {MAX_TABLES} tables")]
    TooManyTables,
    #[error(transparent)]
    Invalid(#[from] SchemaError),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    next_id: TableId,
    tables: Vec<TableSchema>,
}

impl Catalog {
    /// Loads the catalog of a node directory (empty when the directory is new).
    pub fn load(dir: &Path) -> Result<Catalog, CatalogError> {
        let path = dir.join(CATALOG_FILE);
        let Some(bytes) = durable_file::read(&path, KIND)? else {
            return Ok(Catalog { next_id: 1, tables: Vec::new() });
        };
        let schema_err = |source: SchemaError| CatalogError::Schema { path: path.clone(), source };
        let mut r = Reader::new(&bytes);
        let next_id = r.u32().map_err(|e| schema_err(e.into()))?;
        let n = r.count(1).map_err(|e| schema_err(e.into()))?;
        let tables = (0..n).map(|_| TableSchema::decode(&mut r)).collect::<Result<Vec<_>, _>>().map_err(schema_err)?;
        r.finish().map_err(|e| schema_err(e.into()))?;
        Ok(Catalog { next_id, tables })
    }

    fn save(&self, dir: &Path) -> Result<(), CatalogError> {
        let mut w = Writer::new();
        w.u32(self.next_id).u32(self.tables.len() as u32);
        for t in &self.tables {
            t.encode(&mut w);
        }
        durable_file::write(&dir.join(CATALOG_FILE), KIND, &w.into_bytes())?;
        Ok(())
    }

    /// Adds a table (its `id` is assigned here) and persists the catalog before returning.
    pub fn create_table(&mut self, dir: &Path, mut schema: TableSchema) -> Result<TableSchema, CatalogError> {
        if self.table(&schema.name).is_some() {
            return Err(CatalogError::TableExists(schema.name));
        }
        if self.tables.len() >= MAX_TABLES {
            return Err(CatalogError::TooManyTables);
        }
        schema.id = self.next_id;
        schema.validate()?;
        let mut next = self.clone();
        next.next_id += 1;
        next.tables.push(schema.clone());
        next.save(dir)?;
        *self = next;
        Ok(schema)
    }

    /// Removes a table and persists the catalog before returning the removed schema. Its id is
    /// never handed out again.
    pub fn drop_table(&mut self, dir: &Path, name: &str) -> Result<TableSchema, CatalogError> {
        let Some(at) = self.tables.iter().position(|t| t.name.eq_ignore_ascii_case(name)) else {
            return Err(CatalogError::UnknownTable(name.to_owned()));
        };
        let mut next = self.clone();
        let dropped = next.tables.remove(at);
        next.save(dir)?;
        *self = next;
        Ok(dropped)
    }

    /// Every table id below this was handed out (listed tables and dropped ones).
    pub fn next_id(&self) -> TableId {
        self.next_id
    }

    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.tables.iter().find(|t| t.name.eq_ignore_ascii_case(name))
    }

    pub fn tables(&self) -> &[TableSchema] {
        &self.tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::schema::{ColumnDef, TableOptions};
    use wire::ColumnType;

    fn kv(name: &str) -> TableSchema {
        TableSchema {
            id: 0,
            name: name.into(),
            partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Text }],
            clustering: vec![],
            columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Blob }],
            options: TableOptions::default(),
        }
    }

    #[test]
    fn tables_survive_reload_with_stable_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::load(dir.path()).unwrap();
        let a = c.create_table(dir.path(), kv("a")).unwrap();
        let b = c.create_table(dir.path(), kv("b")).unwrap();
        assert_ne!(a.id, b.id);
        let reloaded = Catalog::load(dir.path()).unwrap();
        assert_eq!(reloaded, c);
        assert_eq!(reloaded.table("B").unwrap().id, b.id);
    }

    #[test]
    fn dropped_tables_are_gone_after_reload_and_their_ids_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::load(dir.path()).unwrap();
        let a = c.create_table(dir.path(), kv("a")).unwrap();
        assert_eq!(c.drop_table(dir.path(), "A").unwrap().id, a.id);
        assert!(matches!(c.drop_table(dir.path(), "a"), Err(CatalogError::UnknownTable(_))));
        let mut reloaded = Catalog::load(dir.path()).unwrap();
        assert!(reloaded.table("a").is_none());
        assert!(reloaded.next_id() > a.id);
        let again = reloaded.create_table(dir.path(), kv("a")).unwrap();
        assert!(again.id > a.id, "a re-created table gets a new id");
    }

    #[test]
    fn duplicate_and_invalid_tables_are_refused_and_not_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::load(dir.path()).unwrap();
        c.create_table(dir.path(), kv("a")).unwrap();
        assert!(matches!(c.create_table(dir.path(), kv("a")), Err(CatalogError::TableExists(_))));
        assert!(matches!(c.create_table(dir.path(), kv("9bad")), Err(CatalogError::Invalid(_))));
        assert_eq!(Catalog::load(dir.path()).unwrap().tables().len(), 1);
    }
}

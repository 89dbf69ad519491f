//! The node's schema catalog: every live table with the timestamp of its creation, and a bounded
//! list of drop records, persisted in `schema.cat` (a [`durable_file`](crate::durable_file)) and
//! merged with peers' catalogs so that every node of a cluster ends with the same tables and ids.
//!
//! The catalog is control-plane state: it is changed only by DDL and merges and read at start-up;
//! shards get their own copy of each schema through their channels and never read this file. It
//! must never hand out a table id that is live or remembered as dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rand::Rng;
use wire::codec::{Reader, Writer};
use wire::schema::{is_valid_name, SchemaError, TableId, TableSchema};

use crate::durable_file::{self, DurableFileError, FileKind};
use crate::hlc::Timestamp;

pub const CATALOG_FILE: &str = "schema.cat";
/// Version 2 added creation timestamps and drop records; version 3 stores schemas in their
/// encoding version 2 (with `read_repair`). Versions 1 and 2 are still read (their schemas in
/// encoding version 1, read as `read_repair = 'BLOCKING'`).
const KIND: FileKind = FileKind { name: "schema catalog", magic: *b"ENIGSCHM", version: 3 };
const OLDEST_READABLE_VERSION: u16 = 1;

/// Bound on the live tables of a node (node-local tables included).
pub const MAX_TABLES: usize = 1024;
/// Bound on the drop records kept. Past it the oldest (by drop timestamp, then id) is forgotten:
/// its id may then, with odds of about one in four billion per new table, be chosen again, and a
/// peer that was cut off for longer than those drops still listing the table could bring it
/// back on merge (as a Cassandra tombstone purged after gc_grace can).
pub const MAX_DROP_RECORDS: usize = 4096;
/// Random ids drawn before giving up on finding an unused one. With at most
/// MAX_TABLES + MAX_DROP_RECORDS of 2^32 ids in use, 64 misses in a row cannot happen in practice.
const MAX_ID_ATTEMPTS: usize = 64;
/// Table ids a node never draws at random: kept for tables every node creates alike, with the
/// same id and creation timestamp (the auth tables), so that their creations on several nodes
/// are one and the same creation when catalogs merge.
pub const FIXED_TABLE_IDS: std::ops::RangeInclusive<TableId> = 0xFFFF_FF00..=TableId::MAX;
/// Tables named with this prefix belong to one node (the batchlog): they are never merged with
/// peers and are left out of the schema version and of snapshots.
pub const LOCAL_TABLE_PREFIX: &str = "system_";

/// True for a node-local table (see [`LOCAL_TABLE_PREFIX`]).
pub fn is_local_table(name: &str) -> bool {
    name.len() >= LOCAL_TABLE_PREFIX.len() && name[..LOCAL_TABLE_PREFIX.len()].eq_ignore_ascii_case(LOCAL_TABLE_PREFIX)
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    File(#[from] DurableFileError),
    #[error("{path}: {source}")]
    Schema { path: PathBuf, source: SchemaError },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("table '{0}' already exists")]
    TableExists(String),
    #[error("unknown table '{0}'")]
    UnknownTable(String),
    #[error("a node holds at most {MAX_TABLES} tables")]
    TooManyTables,
    #[error("no unused table id found in {MAX_ID_ATTEMPTS} random draws")]
    IdsExhausted,
    #[error("table id {0:#x} cannot be given: only an unused one of the fixed ids may")]
    FixedId(TableId),
    #[error("a peer's schema is invalid: {0}")]
    InvalidRemote(String),
    #[error(transparent)]
    Invalid(#[from] SchemaError),
}

/// A live table and the timestamp (microseconds, HLC) of the CREATE TABLE that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    pub schema: TableSchema,
    pub created: Timestamp,
}

/// A table that is gone: its id is never handed out again and its data is discarded. Recorded
/// by DROP TABLE, and by a merge for a table that lost to a newer one of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropRecord {
    pub id: TableId,
    pub name: String,
    pub dropped: Timestamp,
}

/// What a merge changed: tables to create on the shards (with their ids) and to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaChanges {
    pub created: Vec<TableSchema>,
    pub dropped: Vec<TableSchema>,
}

impl SchemaChanges {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.dropped.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Every id below this was handed out by a version-1 catalog (ids were sequential then): one
    /// that is not live belongs to a dropped table. New ids are drawn at or above it.
    legacy_floor: TableId,
    /// Sorted by id.
    entries: Vec<TableEntry>,
    /// Sorted by id, one per id, at most MAX_DROP_RECORDS.
    drops: Vec<DropRecord>,
}

impl Catalog {
    /// Loads the catalog of a node directory (empty when the directory is new).
    pub fn load(dir: &Path) -> Result<Catalog, CatalogError> {
        let path = dir.join(CATALOG_FILE);
        let Some((version, bytes)) = durable_file::read_versions(&path, KIND, OLDEST_READABLE_VERSION)? else {
            return Ok(Catalog { legacy_floor: 1, ..Catalog::default() });
        };
        let schema_err = |source: SchemaError| CatalogError::Schema { path: path.clone(), source };
        let mut r = Reader::new(&bytes);
        let legacy_floor = r.u32().map_err(|e| schema_err(e.into()))?;
        let (entries, drops) = if version == 1 {
            // Version 1: the next id, then the schemas; no timestamps, drops implied by the ids.
            let n = r.count(1).map_err(|e| schema_err(e.into()))?;
            let schemas = (0..n).map(|_| TableSchema::decode(&mut r)).collect::<Result<Vec<_>, _>>();
            let entries = schemas.map_err(schema_err)?.into_iter().map(|schema| TableEntry { schema, created: 0 });
            (entries.collect(), Vec::new())
        } else {
            decode_schema(&mut r).map_err(schema_err)?
        };
        r.finish().map_err(|e| schema_err(e.into()))?;
        let mut catalog = Catalog { legacy_floor: legacy_floor.max(1), entries, drops };
        catalog.normalize().map_err(|reason| CatalogError::Corrupt { path: path.clone(), reason })?;
        Ok(catalog)
    }

    fn save(&self, dir: &Path) -> Result<(), CatalogError> {
        let mut w = Writer::new();
        w.u32(self.legacy_floor);
        encode_schema(&mut w, &self.entries, &self.drops);
        durable_file::write(&dir.join(CATALOG_FILE), KIND, &w.into_bytes())?;
        Ok(())
    }

    /// Sorts entries and drops by id and checks what every stored catalog holds: ids never 0
    /// and listed once, one live table per name, and the bounds.
    fn normalize(&mut self) -> Result<(), String> {
        self.entries.sort_by_key(|e| e.schema.id);
        self.drops.sort_by_key(|d| d.id);
        if self.entries.len() > MAX_TABLES || self.drops.len() > MAX_DROP_RECORDS {
            return Err(format!(
                "{} tables and {} drop records exceed the bounds",
                self.entries.len(),
                self.drops.len()
            ));
        }
        let mut names = std::collections::HashSet::new();
        if let Some(e) =
            self.entries.iter().find(|e| e.schema.id == 0 || !names.insert(e.schema.name.to_ascii_lowercase()))
        {
            return Err(format!("table '{}' is listed twice or has id 0", e.schema.name));
        }
        let ids_rise = |ids: Vec<TableId>| ids.first() != Some(&0) && ids.windows(2).all(|w| w[0] < w[1]);
        if !ids_rise(self.entries.iter().map(|e| e.schema.id).collect())
            || !ids_rise(self.drops.iter().map(|d| d.id).collect())
        {
            return Err("a table id is listed twice or is 0".into());
        }
        Ok(())
    }

    /// Adds a table created at `ts` and persists the catalog before returning. Its `id` is
    /// assigned here, at random among ids never used, unless the schema names one of
    /// [`FIXED_TABLE_IDS`] (a table every node creates alike; refused when that id was ever
    /// used). The creation is stamped after every
    /// earlier drop of the same name, so that it wins over them on every node.
    pub fn create_table(
        &mut self,
        dir: &Path,
        mut schema: TableSchema,
        ts: Timestamp,
    ) -> Result<TableSchema, CatalogError> {
        if self.table(&schema.name).is_some() {
            return Err(CatalogError::TableExists(schema.name));
        }
        if self.entries.len() >= MAX_TABLES {
            return Err(CatalogError::TooManyTables);
        }
        schema.id = match schema.id {
            0 => self.choose_id(&mut rand::thread_rng())?,
            id if FIXED_TABLE_IDS.contains(&id) && !self.id_used(id) => id,
            id => return Err(CatalogError::FixedId(id)),
        };
        schema.validate()?;
        let last_drop =
            self.drops.iter().filter(|d| d.name.eq_ignore_ascii_case(&schema.name)).map(|d| d.dropped).max();
        let created = last_drop.map_or(ts, |last| ts.max(last.saturating_add(1)));
        let mut next = self.clone();
        next.entries.push(TableEntry { schema: schema.clone(), created });
        next.entries.sort_by_key(|e| e.schema.id);
        next.save(dir)?;
        *self = next;
        Ok(schema)
    }

    /// Removes a table at `ts` (stamped after its creation) and persists the catalog before
    /// returning the removed schema. Its id is never handed out again.
    pub fn drop_table(&mut self, dir: &Path, name: &str, ts: Timestamp) -> Result<TableSchema, CatalogError> {
        let Some(at) = self.entries.iter().position(|e| e.schema.name.eq_ignore_ascii_case(name)) else {
            return Err(CatalogError::UnknownTable(name.to_owned()));
        };
        let mut next = self.clone();
        let entry = next.entries.remove(at);
        let dropped = ts.max(entry.created.saturating_add(1));
        next.add_drop(DropRecord { id: entry.schema.id, name: entry.schema.name.clone(), dropped });
        next.bound_drops();
        next.save(dir)?;
        *self = next;
        Ok(entry.schema)
    }

    /// Merges a peer's table entries and drop records into this catalog, in memory: per table
    /// name the newest event wins, a creation or a drop, ordered by (timestamp, table id, drop
    /// after creation), so every node reaches the same tables whatever order it merges in. A
    /// table that loses to a newer one of its name leaves a drop record stamped with its own
    /// creation. Node-local tables are never merged. Returns what changed.
    pub fn merge(&mut self, entries: &[TableEntry], drops: &[DropRecord]) -> Result<SchemaChanges, CatalogError> {
        for e in entries {
            e.schema.validate().map_err(|err| CatalogError::InvalidRemote(err.to_string()))?;
            if e.schema.id == 0 {
                return Err(CatalogError::InvalidRemote(format!("table '{}' has id 0", e.schema.name)));
            }
        }
        if let Some(d) = drops.iter().find(|d| d.id == 0 || !is_valid_name(&d.name)) {
            return Err(CatalogError::InvalidRemote(format!("drop record of '{}' (id {})", d.name, d.id)));
        }
        let before = self.clone();
        // Every creation known to either side, one per id (the same creation seen twice).
        let mut creates: BTreeMap<TableId, TableEntry> = BTreeMap::new();
        let remote = entries.iter().filter(|e| !is_local_table(&e.schema.name));
        for e in self.entries.iter().chain(remote) {
            let keep = match creates.get(&e.schema.id) {
                Some(known) => (e.created, &e.schema.name) > (known.created, &known.schema.name),
                None => true,
            };
            if keep {
                creates.insert(e.schema.id, e.clone());
            }
        }
        let mut next = Catalog { legacy_floor: self.legacy_floor, entries: Vec::new(), drops: self.drops.clone() };
        for d in drops.iter().filter(|d| !is_local_table(&d.name)) {
            next.add_drop(d.clone());
        }
        // The newest event per name: (timestamp, id, is a drop).
        let mut newest: HashMap<String, (Timestamp, TableId, bool)> = HashMap::new();
        let events = creates
            .values()
            .map(|e| (&e.schema.name, (e.created, e.schema.id, false)))
            .chain(next.drops.iter().map(|d| (&d.name, (d.dropped, d.id, true))));
        for (name, event) in events {
            let slot = newest.entry(name.to_ascii_lowercase()).or_insert(event);
            *slot = (*slot).max(event);
        }
        for (id, entry) in creates {
            // Every creation's name got an event in `newest` above: indexing cannot fail.
            if newest[&entry.schema.name.to_ascii_lowercase()] == (entry.created, id, false) {
                next.entries.push(entry);
            } else {
                next.add_drop(DropRecord { id, name: entry.schema.name.clone(), dropped: entry.created });
            }
        }
        next.bound_drops();
        if next.entries.len() > MAX_TABLES {
            return Err(CatalogError::TooManyTables);
        }
        // Creations came out of a map by id, at most one per name: sorted, unique.
        debug_assert!(next.clone().normalize().is_ok());
        let live = |c: &Catalog, id: TableId| c.entries.iter().any(|e| e.schema.id == id);
        let changes = SchemaChanges {
            created: next.entries.iter().filter(|e| !live(&before, e.schema.id)).map(|e| e.schema.clone()).collect(),
            dropped: before.entries.iter().filter(|e| !live(&next, e.schema.id)).map(|e| e.schema.clone()).collect(),
        };
        *self = next;
        Ok(changes)
    }

    /// [`merge`](Self::merge), persisted before returning when it changed anything; on error
    /// the catalog is unchanged.
    pub fn adopt(
        &mut self,
        dir: &Path,
        entries: &[TableEntry],
        drops: &[DropRecord],
    ) -> Result<SchemaChanges, CatalogError> {
        let mut next = self.clone();
        let changes = next.merge(entries, drops)?;
        if next != *self {
            next.save(dir)?;
            *self = next;
        }
        Ok(changes)
    }

    /// Digest of the tables and drop records peers see (node-local tables left out): equal
    /// catalogs give equal versions on every node.
    pub fn version(&self) -> u64 {
        let (entries, drops) = self.snapshot();
        let mut w = Writer::new();
        encode_schema(&mut w, &entries, &drops);
        wire::token::murmur3_x64_128_cassandra(&w.into_bytes(), 0).0
    }

    /// The entries and drop records peers see (node-local tables left out), sorted by id.
    pub fn snapshot(&self) -> (Vec<TableEntry>, Vec<DropRecord>) {
        let entries = self.entries.iter().filter(|e| !is_local_table(&e.schema.name)).cloned().collect();
        let drops = self.drops.iter().filter(|d| !is_local_table(&d.name)).cloned().collect();
        (entries, drops)
    }

    /// Whether data of table `id` belongs to a dropped table (and is to be discarded).
    pub fn is_dropped(&self, id: TableId) -> bool {
        !self.entries.iter().any(|e| e.schema.id == id)
            && (id < self.legacy_floor || self.drops.binary_search_by_key(&id, |d| d.id).is_ok())
    }

    pub fn table(&self, name: &str) -> Option<&TableSchema> {
        self.entries.iter().map(|e| &e.schema).find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// The live tables, sorted by id.
    pub fn tables(&self) -> Vec<TableSchema> {
        self.entries.iter().map(|e| e.schema.clone()).collect()
    }

    pub fn entries(&self) -> &[TableEntry] {
        &self.entries
    }

    pub fn drops(&self) -> &[DropRecord] {
        &self.drops
    }

    /// A random id that is not live, not remembered as dropped and not below the legacy floor.
    fn choose_id(&self, rng: &mut impl Rng) -> Result<TableId, CatalogError> {
        (0..MAX_ID_ATTEMPTS)
            .map(|_| rng.gen_range(self.legacy_floor.max(1)..*FIXED_TABLE_IDS.start()))
            .find(|id| !self.id_used(*id))
            .ok_or(CatalogError::IdsExhausted)
    }

    /// The id is a live table's or remembered as dropped.
    fn id_used(&self, id: TableId) -> bool {
        self.entries.iter().any(|e| e.schema.id == id) || self.drops.binary_search_by_key(&id, |d| d.id).is_ok()
    }

    /// Records a drop, keeping one record per id (the newest), sorted by id.
    fn add_drop(&mut self, record: DropRecord) {
        match self.drops.binary_search_by_key(&record.id, |d| d.id) {
            Ok(at) => {
                let known = &mut self.drops[at];
                if (record.dropped, &record.name) > (known.dropped, &known.name) {
                    *known = record;
                }
            }
            Err(at) => self.drops.insert(at, record),
        }
    }

    /// Forgets the oldest drop records beyond MAX_DROP_RECORDS (see there).
    fn bound_drops(&mut self) {
        if self.drops.len() <= MAX_DROP_RECORDS {
            return;
        }
        self.drops.sort_by_key(|d| std::cmp::Reverse((d.dropped, d.id)));
        self.drops.truncate(MAX_DROP_RECORDS);
        self.drops.sort_by_key(|d| d.id);
    }
}

/// Writes table entries and drop records (docs/FORMAT.md, "schema.cat"): the catalog file's
/// body and the peer protocol's SCHEMA and SCHEMA_PUSH bodies.
pub fn encode_schema(w: &mut Writer, entries: &[TableEntry], drops: &[DropRecord]) {
    w.u32(entries.len() as u32);
    for e in entries {
        w.i64(e.created);
        e.schema.encode(w);
    }
    w.u32(drops.len() as u32);
    for d in drops {
        w.u32(d.id).i64(d.dropped).str(&d.name);
    }
}

/// Reads what [`encode_schema`] wrote, refusing more than MAX_TABLES entries or
/// MAX_DROP_RECORDS drop records.
pub fn decode_schema(r: &mut Reader<'_>) -> Result<(Vec<TableEntry>, Vec<DropRecord>), SchemaError> {
    // Smallest encodings: an entry is a timestamp and a schema of at least 30 bytes; a drop
    // record 16 bytes.
    let n = r.count(8 + 30)?;
    if n > MAX_TABLES {
        return Err(r.invalid("table count", format!("{n} tables, more than {MAX_TABLES}")).into());
    }
    let entries = (0..n)
        .map(|_| Ok(TableEntry { created: r.i64()?, schema: TableSchema::decode(r)? }))
        .collect::<Result<Vec<_>, SchemaError>>()?;
    let n = r.count(16)?;
    if n > MAX_DROP_RECORDS {
        return Err(r.invalid("drop record count", format!("{n} drop records, more than {MAX_DROP_RECORDS}")).into());
    }
    let drops = (0..n)
        .map(|_| Ok(DropRecord { id: r.u32()?, dropped: r.i64()?, name: r.str()?.to_owned() }))
        .collect::<Result<Vec<_>, wire::DecodeError>>()?;
    Ok((entries, drops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
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

    fn entry(name: &str, id: TableId, created: Timestamp) -> TableEntry {
        TableEntry { schema: TableSchema { id, ..kv(name) }, created }
    }

    fn drop_of(name: &str, id: TableId, dropped: Timestamp) -> DropRecord {
        DropRecord { id, name: name.into(), dropped }
    }

    /// A catalog holding exactly these entries and drops, as a merge into an empty one makes it.
    fn catalog(entries: &[TableEntry], drops: &[DropRecord]) -> Catalog {
        let mut c = Catalog { legacy_floor: 1, ..Catalog::default() };
        c.merge(entries, drops).unwrap();
        c
    }

    /// Merges b into a (as a node that pulled b's schema does).
    fn merged(a: &Catalog, b: &Catalog) -> Catalog {
        let mut out = a.clone();
        let (entries, drops) = b.snapshot();
        out.merge(&entries, &drops).unwrap();
        out
    }

    fn live_ids(c: &Catalog) -> Vec<TableId> {
        c.entries().iter().map(|e| e.schema.id).collect()
    }

    #[test]
    fn tables_survive_reload_with_stable_ids_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::load(dir.path()).unwrap();
        let a = c.create_table(dir.path(), kv("a"), 10).unwrap();
        let b = c.create_table(dir.path(), kv("b"), 20).unwrap();
        assert_ne!(a.id, b.id);
        let reloaded = Catalog::load(dir.path()).unwrap();
        assert_eq!(reloaded, c);
        assert_eq!(reloaded.table("B").unwrap().id, b.id);
        assert_eq!(reloaded.version(), c.version());
    }

    #[test]
    fn dropped_tables_are_gone_after_reload_and_their_ids_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::load(dir.path()).unwrap();
        let a = c.create_table(dir.path(), kv("a"), 10).unwrap();
        assert_eq!(c.drop_table(dir.path(), "A", 20).unwrap().id, a.id);
        assert!(matches!(c.drop_table(dir.path(), "a", 30), Err(CatalogError::UnknownTable(_))));
        let mut reloaded = Catalog::load(dir.path()).unwrap();
        assert!(reloaded.table("a").is_none());
        assert!(reloaded.is_dropped(a.id));
        let again = reloaded.create_table(dir.path(), kv("a"), 15).unwrap();
        assert_ne!(again.id, a.id, "a re-created table gets a new id");
        let created = reloaded.entries().iter().find(|e| e.schema.id == again.id).unwrap().created;
        assert!(created > 20, "the creation is stamped after the drop of its name, got {created}");
    }

    #[test]
    fn ids_are_never_reused_even_when_the_random_draw_hits_used_ones() {
        use rand::SeedableRng;
        let seed = 7;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // Four ids can be drawn, three are live or dropped: the free one is found (missing it
        // in 64 draws has odds of (3/4)^64), and with all four used the error is typed. The
        // fixed ids above are never drawn.
        let top = *FIXED_TABLE_IDS.start() - 1;
        let mut c = catalog(&[entry("a", top - 3, 1), entry("b", top - 2, 1)], &[drop_of("c", top - 1, 2)]);
        c.legacy_floor = top - 3;
        assert_eq!(c.choose_id(&mut rng).unwrap(), top, "seed {seed}");
        c.merge(&[entry("d", top, 3)], &[]).unwrap();
        assert!(matches!(c.choose_id(&mut rng), Err(CatalogError::IdsExhausted)), "seed {seed}");
    }

    #[test]
    fn a_fixed_id_is_kept_once_and_other_given_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog { legacy_floor: 1, ..Catalog::default() };
        let fixed = *FIXED_TABLE_IDS.start();
        let schema = |name: &str, id| TableSchema { id, ..kv(name) };
        assert_eq!(c.create_table(dir.path(), schema("auth", fixed), 1).unwrap().id, fixed);
        assert!(matches!(c.create_table(dir.path(), schema("other", fixed), 1), Err(CatalogError::FixedId(_))));
        assert!(matches!(c.create_table(dir.path(), schema("low", 42), 1), Err(CatalogError::FixedId(42))));
        let drawn = c.create_table(dir.path(), schema("drawn", 0), 1).unwrap().id;
        assert!(!FIXED_TABLE_IDS.contains(&drawn));
    }

    #[test]
    fn merge_is_commutative_in_version() {
        let a = catalog(&[entry("t", 11, 100), entry("u", 12, 50)], &[drop_of("old", 3, 40)]);
        let b = catalog(&[entry("t", 21, 200), entry("v", 22, 60)], &[drop_of("u", 12, 70)]);
        let ab = merged(&a, &b);
        let ba = merged(&b, &a);
        assert_eq!(ab.version(), ba.version());
        assert_eq!(ab.snapshot(), ba.snapshot());
        assert_eq!(live_ids(&ab), vec![21, 22], "t: the newer creation; u: dropped after creation");
        assert!(ab.is_dropped(11) && ab.is_dropped(12) && ab.is_dropped(3));
    }

    #[test]
    fn a_drop_beats_an_older_create_and_not_a_newer_one() {
        let created = catalog(&[entry("t", 7, 100)], &[]);
        let dropped = catalog(&[], &[drop_of("t", 7, 150)]);
        let mut c = created.clone();
        let changes = c.merge(&[], dropped.drops()).unwrap();
        assert_eq!(changes.dropped.iter().map(|s| s.id).collect::<Vec<_>>(), vec![7]);
        assert!(c.table("t").is_none());
        // Merging the creation again does not bring it back.
        assert!(c.merge(created.entries(), &[]).unwrap().is_empty());
        assert!(c.table("t").is_none());
        // A re-creation after the drop, with a newer timestamp, wins.
        let changes = c.merge(&[entry("t", 9, 160)], &[]).unwrap();
        assert_eq!(changes.created.iter().map(|s| s.id).collect::<Vec<_>>(), vec![9]);
        assert_eq!(c.table("t").unwrap().id, 9);
        // And the old drop arriving late changes nothing.
        assert!(c.merge(&[], dropped.drops()).unwrap().is_empty());
    }

    #[test]
    fn equal_timestamps_are_resolved_by_id_on_every_node() {
        let a = catalog(&[entry("t", 30, 100)], &[]);
        let b = catalog(&[entry("t", 40, 100)], &[]);
        assert_eq!(merged(&a, &b).table("t").unwrap().id, 40);
        assert_eq!(merged(&b, &a).table("t").unwrap().id, 40);
        assert!(merged(&a, &b).is_dropped(30));
    }

    #[test]
    fn node_local_tables_are_never_merged_nor_in_the_version() {
        let a = catalog(&[entry("t", 1, 10)], &[]);
        let mut b = a.clone();
        b.entries.push(entry("system_batchlog", 99, 5));
        assert_eq!(a.version(), b.version());
        let mut c = a.clone();
        c.merge(&[entry("system_batchlog", 98, 6)], &[drop_of("system_other", 97, 7)]).unwrap();
        assert_eq!(c, a);
        // A merge keeps the node's own local tables.
        let mut d = b.clone();
        d.merge(a.entries(), a.drops()).unwrap();
        assert!(d.table("system_batchlog").is_some());
    }

    #[test]
    fn invalid_remote_entries_are_refused_and_change_nothing() {
        let mut c = catalog(&[entry("t", 1, 10)], &[]);
        let before = c.clone();
        assert!(matches!(c.merge(&[entry("t", 0, 20)], &[]), Err(CatalogError::InvalidRemote(_))));
        assert!(matches!(c.merge(&[entry("9bad", 5, 20)], &[]), Err(CatalogError::InvalidRemote(_))));
        assert!(matches!(c.merge(&[], &[drop_of("t", 0, 20)]), Err(CatalogError::InvalidRemote(_))));
        assert_eq!(c, before);
    }

    #[test]
    fn drop_records_are_bounded_keeping_the_newest() {
        let drops: Vec<DropRecord> =
            (1..=MAX_DROP_RECORDS as u32 + 10).map(|i| drop_of("t", i, i as Timestamp)).collect();
        let c = catalog(&[], &drops);
        assert_eq!(c.drops().len(), MAX_DROP_RECORDS);
        assert!(!c.is_dropped(10) && c.is_dropped(11), "the ten oldest are forgotten");
    }

    #[test]
    fn version_1_catalogs_are_read_with_timestamp_0_and_their_dropped_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new();
        let (a, b) = (TableSchema { id: 1, ..kv("a") }, TableSchema { id: 3, ..kv("b") });
        w.u32(4).u32(2);
        a.encode(&mut w);
        b.encode(&mut w);
        let v1 = FileKind { version: 1, ..KIND };
        durable_file::write(&dir.path().join(CATALOG_FILE), v1, &w.into_bytes()).unwrap();
        let mut c = Catalog::load(dir.path()).unwrap();
        assert_eq!(c.entries(), &[TableEntry { schema: a, created: 0 }, TableEntry { schema: b, created: 0 }]);
        assert!(c.is_dropped(2) && !c.is_dropped(3) && !c.is_dropped(4));
        let new = c.create_table(dir.path(), kv("c"), 1).unwrap();
        assert!(new.id >= 4, "ids of the version-1 era are never handed out again: {}", new.id);
        assert_eq!(Catalog::load(dir.path()).unwrap(), c, "saved as version 3");
    }

    #[test]
    fn version_2_catalogs_are_read_with_blocking_read_repair() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (TableSchema { id: 5, ..kv("a") }, TableSchema { id: 9, ..kv("b") });
        // Version 2: legacy floor, entries with their schema in encoding version 1 (version 2
        // without its last byte, the read repair mode), drop records.
        let mut w = Writer::new();
        w.u32(1).u32(2);
        for (created, schema) in [(10, &a), (20, &b)] {
            let mut s = Writer::new();
            schema.encode(&mut s);
            let mut bytes = s.into_bytes();
            bytes[0] = 1;
            bytes.pop();
            w.i64(created).raw(&bytes);
        }
        w.u32(1).u32(3).i64(15).str("gone");
        let v2 = FileKind { version: 2, ..KIND };
        durable_file::write(&dir.path().join(CATALOG_FILE), v2, &w.into_bytes()).unwrap();
        let c = Catalog::load(dir.path()).unwrap();
        assert_eq!(c.entries(), &[TableEntry { schema: a, created: 10 }, TableEntry { schema: b, created: 20 }]);
        assert!(c.tables().iter().all(|t| t.options.read_repair == wire::ReadRepair::Blocking));
        assert!(c.is_dropped(3) && !c.is_dropped(4));
    }

    #[test]
    fn duplicate_and_invalid_tables_are_refused_and_not_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::load(dir.path()).unwrap();
        c.create_table(dir.path(), kv("a"), 1).unwrap();
        assert!(matches!(c.create_table(dir.path(), kv("a"), 2), Err(CatalogError::TableExists(_))));
        assert!(matches!(c.create_table(dir.path(), kv("9bad"), 3), Err(CatalogError::Invalid(_))));
        assert_eq!(Catalog::load(dir.path()).unwrap().tables().len(), 1);
    }

    /// What some node learned: creations and drops of three names. As in a cluster, an id
    /// names one creation everywhere (its name and timestamp derive from the id, with ties
    /// between ids of one name), and a table is dropped after its creation.
    fn events() -> impl Strategy<Value = (Vec<TableEntry>, Vec<DropRecord>)> {
        const NAMES: [&str; 3] = ["t", "u", "w"];
        let created = |id: TableId| Timestamp::from(id * 7 % 5);
        let ids = prop::collection::btree_set(1u32..30, 0..8);
        let drops = prop::collection::vec((1u32..30, 1i64..10), 0..5);
        (ids, drops).prop_map(move |(ids, drops)| {
            let entries = ids.into_iter().map(|id| entry(NAMES[id as usize % 3], id, created(id))).collect();
            let drops =
                drops.into_iter().map(|(id, after)| drop_of(NAMES[id as usize % 3], id, created(id) + after)).collect();
            (entries, drops)
        })
    }

    proptest! {
        /// Three nodes that learned different events reach the same catalog whatever the order
        /// of their merges, and merging again changes nothing.
        #[test]
        fn merges_converge_in_any_order(a in events(), b in events(), c in events()) {
            let (a, b, c) = (catalog(&a.0, &a.1), catalog(&b.0, &b.1), catalog(&c.0, &c.1));
            let abc = merged(&merged(&a, &b), &c);
            let cba = merged(&merged(&c, &b), &a);
            let bca = merged(&b, &merged(&c, &a));
            prop_assert_eq!(abc.snapshot(), cba.snapshot());
            prop_assert_eq!(abc.version(), bca.version());
            prop_assert_eq!(merged(&abc, &a), abc.clone());
            // At most one live table per name.
            let names: std::collections::HashSet<String> = abc.tables().iter().map(|t| t.name.clone()).collect();
            prop_assert_eq!(names.len(), abc.tables().len());
        }

        #[test]
        fn schema_encoding_round_trips((entries, drops) in events()) {
            let c = catalog(&entries, &drops);
            let mut w = Writer::new();
            encode_schema(&mut w, c.entries(), c.drops());
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            let decoded = decode_schema(&mut r).unwrap();
            r.finish().unwrap();
            prop_assert_eq!(decoded, (c.entries().to_vec(), c.drops().to_vec()));
        }
    }
}

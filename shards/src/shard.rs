//! One shard: the WAL, the MemTables of every table and the HLC of one core, owned outright by
//! that core's glommio executor (`Rc`/`RefCell` inside, no locks).
//!
//! A write is acknowledged only once its WAL record is durable under the sync mode; only then
//! is it applied to the MemTable, so a reader never sees a write that a crash could take back.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ahash::AHashMap;
use wire::schema::{TableId, TableSchema};
use wire::Token;

use crate::cell::Timestamp;
use crate::hlc::{Hlc, HlcError, SystemClock};
use crate::key::PartitionKey;
use crate::memtable::MemTable;
use crate::mutation::{decode_batch, encode_batch, PartitionUpdate, Write};
use crate::read::now_secs;
use crate::row::{ClusteringSlice, Partition};
use crate::wal::{ReplayReport, Wal, WalConfig, WalError, WalStats};

/// A shard's settings.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub wal: WalConfig,
    /// Bytes of MemTable the shard may hold (all tables together) before writes are refused;
    /// with the flush issue, "full" becomes a flush instead.
    pub memtable_budget: usize,
    /// How far ahead of the wall clock a client-supplied timestamp may be.
    pub max_clock_drift: std::time::Duration,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            wal: WalConfig::default(),
            memtable_budget: 256 * 1024 * 1024,
            max_clock_drift: crate::hlc::DEFAULT_MAX_DRIFT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("unknown table id {0}")]
    UnknownTable(TableId),
    #[error("write log: {0}")]
    Wal(#[from] WalError),
    #[error("timestamp: {0}")]
    Clock(#[from] HlcError),
    #[error("shard {shard} is overloaded: MemTables hold {bytes} bytes of a {budget}-byte budget (flushing to SSTables is not built yet)")]
    MemTableFull { shard: u16, bytes: usize, budget: usize },
    #[error("replaying WAL record {lsn}: {reason}")]
    Replay { lsn: u64, reason: String },
}

/// Counters of one shard.
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub shard: u16,
    pub tables: usize,
    pub memtable_bytes: usize,
    pub partitions: usize,
    pub writes: u64,
    pub wal: WalStats,
}

struct Table {
    schema: Rc<TableSchema>,
    memtable: MemTable,
}

pub struct Shard {
    id: u16,
    dir: PathBuf,
    config: ShardConfig,
    wal: Wal,
    hlc: RefCell<Hlc<SystemClock>>,
    tables: RefCell<AHashMap<TableId, Table>>,
    writes: std::cell::Cell<u64>,
}

impl Shard {
    /// Opens the shard in `dir` with the node's tables, replaying its WAL into fresh MemTables.
    /// Must run on the shard's executor after [`crate::io::prepare_executor_io`].
    pub async fn open(
        id: u16,
        dir: &Path,
        config: ShardConfig,
        schemas: &[TableSchema],
    ) -> Result<(Shard, ReplayReport), ShardError> {
        let mut tables: AHashMap<TableId, Table> =
            schemas.iter().map(|s| (s.id, Table { schema: Rc::new(s.clone()), memtable: MemTable::new() })).collect();
        let mut hlc = Hlc::new(SystemClock, config.max_clock_drift);
        let mut max_seen = i64::MIN;
        let (wal, report) = Wal::open(&dir.join("wal"), config.wal.clone(), |lsn, payload| {
            let updates = decode_batch(payload).map_err(|e| WalError::Apply(format!("record {lsn}: {e}")))?;
            for update in updates {
                let table = tables
                    .get_mut(&update.table)
                    .ok_or_else(|| WalError::Apply(format!("record {lsn}: unknown table id {}", update.table)))?;
                if let Some(ts) = update.max_timestamp() {
                    max_seen = max_seen.max(ts);
                }
                table.memtable.apply(update);
            }
            Ok(())
        })
        .await?;
        if max_seen > i64::MIN && hlc.advance_past(max_seen) {
            tracing::warn!(shard = id, max_seen, "WAL holds timestamps ahead of the wall clock beyond the drift bound");
        }
        let shard = Shard {
            id,
            dir: dir.to_path_buf(),
            config,
            wal,
            hlc: RefCell::new(hlc),
            tables: RefCell::new(tables),
            writes: std::cell::Cell::new(0),
        };
        Ok((shard, report))
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes a new table known to this shard.
    pub fn add_table(&self, schema: TableSchema) {
        self.tables
            .borrow_mut()
            .entry(schema.id)
            .or_insert_with(|| Table { schema: Rc::new(schema), memtable: MemTable::new() });
    }

    /// Applies a batch of writes to partitions this shard owns, all stamped with one timestamp:
    /// `ts` when the client gave one (the HLC observes it), else the next HLC timestamp.
    /// Resolves once the batch is durable under the sync mode; returns the timestamp used.
    pub async fn apply(&self, writes: Vec<Write>, ts: Option<Timestamp>) -> Result<Timestamp, ShardError> {
        let (ts, updates) = self.stamp(writes, ts)?;
        if updates.is_empty() {
            return Ok(ts);
        }
        let mut payload = Vec::new();
        encode_batch(&updates, &mut payload);
        // The record is placed in the log now, in call order; the await is for durability.
        let durable = self.wal.append(&payload);
        durable.await?;
        let mut tables = self.tables.borrow_mut();
        for update in updates {
            // Tables are never removed, and stamp() checked this one exists.
            if let Some(table) = tables.get_mut(&update.table) {
                table.memtable.apply(update);
            }
        }
        self.writes.set(self.writes.get() + 1);
        Ok(ts)
    }

    fn stamp(
        &self,
        writes: Vec<Write>,
        ts: Option<Timestamp>,
    ) -> Result<(Timestamp, Vec<PartitionUpdate>), ShardError> {
        let tables = self.tables.borrow();
        for w in &writes {
            if !tables.contains_key(&w.table) {
                return Err(ShardError::UnknownTable(w.table));
            }
        }
        let bytes: usize = tables.values().map(|t| t.memtable.bytes()).sum();
        if bytes >= self.config.memtable_budget {
            return Err(ShardError::MemTableFull { shard: self.id, bytes, budget: self.config.memtable_budget });
        }
        let ts = match ts {
            Some(ts) => {
                self.hlc.borrow_mut().observe(ts)?;
                ts
            }
            None => self.hlc.borrow_mut().now()?,
        };
        let now = now_secs();
        Ok((ts, writes.into_iter().map(|w| w.stamp(ts, now)).collect()))
    }

    /// The stored versions of one partition's rows in `slice` (tombstones included).
    pub fn read(
        &self,
        table: TableId,
        key: &PartitionKey,
        slice: &ClusteringSlice,
    ) -> Result<Option<Partition>, ShardError> {
        let tables = self.tables.borrow();
        let t = tables.get(&table).ok_or(ShardError::UnknownTable(table))?;
        Ok(t.memtable.get(key, slice))
    }

    pub fn schema(&self, table: TableId) -> Option<Rc<TableSchema>> {
        self.tables.borrow().get(&table).map(|t| t.schema.clone())
    }

    /// Up to `limit` partitions with tokens in (start, end], in storage order.
    pub fn scan(
        &self,
        table: TableId,
        start: Token,
        end: Token,
        limit: usize,
    ) -> Result<Vec<(PartitionKey, Partition)>, ShardError> {
        let tables = self.tables.borrow();
        let t = tables.get(&table).ok_or(ShardError::UnknownTable(table))?;
        Ok(t.memtable.range(start, end, None).take(limit).collect())
    }

    pub fn stats(&self) -> ShardStats {
        let tables = self.tables.borrow();
        ShardStats {
            shard: self.id,
            tables: tables.len(),
            memtable_bytes: tables.values().map(|t| t.memtable.bytes()).sum(),
            partitions: tables.values().map(|t| t.memtable.partitions()).sum(),
            writes: self.writes.get(),
            wal: self.wal.stats(),
        }
    }

    /// Makes everything acknowledged so far durable (fdatasync), whatever the sync mode.
    pub async fn sync(&self) -> Result<(), ShardError> {
        Ok(self.wal.sync().await?)
    }

    /// Syncs and closes the WAL.
    pub async fn close(self) -> Result<(), ShardError> {
        Ok(self.wal.close().await?)
    }
}

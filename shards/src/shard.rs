//! One shard: the WAL, MemTables, SSTables, block cache and HLC of one core, owned outright by
//! that core's glommio executor (`Rc`/`RefCell` inside, no locks).
//!
//! Writes: a write is acknowledged only once its WAL record is durable under the sync mode, and
//! only then applied to the MemTable generation that was active when it was logged, so a reader
//! never sees a write that a crash could take back.
//!
//! Flush: when the active generation passes its budget it becomes immutable (with the WAL
//! position it covers) and a fresh one takes writes at once. A background task (a task queue
//! with fewer shares than foreground work) writes it out as one SSTable per table, records
//! them and the new WAL position in the manifest, publishes them and only then drops the
//! MemTable and the WAL segments it covered. Writes wait (back-pressure) while a bounded number
//! of generations is waiting to be flushed.
//!
//! Compaction: after each flush (and when asked) a background task in its own, lower-share
//! task queue lets the strategy pick SSTables of one table, merges them into one, and replaces
//! them in one manifest edit; the inputs are deleted once no read holds them any more.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::VecDeque;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use glommio::{Latency, Shares, TaskQueueHandle};
use wire::schema::{TableId, TableSchema};
use wire::Token;

use crate::catalog::CATALOG_FILE;
use crate::cell::Timestamp;
use crate::compaction::merge::PartitionMerge;
use crate::compaction::purge::min_timestamp;
use crate::compaction::run::{merge_sstables, CompactionError, MergeJob};
use crate::compaction::{
    CompactionConfig, CompactionReport, CompactionStats, CompactionStrategy, InvalidCompactionConfig, OwnedRanges,
    Purger, SstableSummary, Throttle,
};
use crate::hlc::{Hlc, HlcError, SystemClock};
use crate::key::PartitionKey;
use crate::latency::LatencyHistogram;
use crate::manifest::{sstable_file_name, Manifest, ManifestError, SstableEntry, SSTABLE_DIR};
use crate::memtable::MemTable;
use crate::mutation::{decode_batch, encode_batch, PartitionUpdate, Write};
use crate::read::now_secs;
use crate::row::{ClusteringSlice, Partition};
use crate::scan::{PageBudget, ScanBound, ScanPage, ScanResume};
use crate::signal::Signal;
use crate::slice::{BoundedRead, RowLimit};
use crate::sstable::{
    BlockCache, BloomHash, CacheStats, Sstable, SstableConfig, SstableError, SstableReadStats, SstableWriter,
};
use crate::wal::{Lsn, ReplayReport, Wal, WalConfig, WalError, WalStats};

/// A shard's settings.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub wal: WalConfig,
    /// Bytes the active MemTables (all tables together) may hold before they are flushed.
    pub memtable_budget: usize,
    /// Generations waiting to be flushed before writes wait for a flush (back-pressure).
    pub max_immutable_memtables: usize,
    /// Memory for cached SSTable blocks (there is no page cache under direct I/O).
    pub block_cache_bytes: usize,
    pub sstable: SstableConfig,
    /// How far ahead of the wall clock a client-supplied timestamp may be.
    pub max_clock_drift: Duration,
    /// Shares of the flush task queue (foreground work has 1000).
    pub flush_shares: usize,
    /// At start, move an SSTable that fails its checksums to `quarantine/` and drop it from
    /// the manifest (losing its rows on this node) instead of refusing to start.
    pub quarantine_corrupt_sstables: bool,
    /// At start, a shard whose `MANIFEST` is missing while SSTables are present rebuilds it
    /// from the SSTables found (each checked whole) instead of refusing to start.
    pub rebuild_missing_manifest: bool,
    pub compaction: CompactionConfig,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            wal: WalConfig::default(),
            memtable_budget: 64 * 1024 * 1024,
            max_immutable_memtables: 2,
            block_cache_bytes: 64 * 1024 * 1024,
            sstable: SstableConfig::default(),
            max_clock_drift: crate::hlc::DEFAULT_MAX_DRIFT,
            flush_shares: 250,
            quarantine_corrupt_sstables: false,
            rebuild_missing_manifest: false,
            compaction: CompactionConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("unknown table id {0}")]
    UnknownTable(TableId),
    /// Data on disk of a table the node's catalog neither lists nor records as dropped: the
    /// catalog file was lost or replaced, and starting would hide the data.
    #[error("{found} holds rows of table id {table}, {}", catalog_note(catalog))]
    UnknownTableData { found: String, table: TableId, catalog: PathBuf },
    #[error("write log: {0}")]
    Wal(#[from] WalError),
    #[error("timestamp: {0}")]
    Clock(#[from] HlcError),
    #[error("sstable: {0}")]
    Sstable(#[from] SstableError),
    #[error("manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("shard {shard} cannot take writes: flushing MemTables failed ({reason}) and {waiting} are waiting")]
    FlushFailed { shard: u16, reason: String, waiting: usize },
    /// The disk is full: a write to the WAL or a flush found no space. Writes are refused
    /// until space is freed; the shard retries by itself (nothing acknowledged is lost).
    #[error("shard {shard} cannot take writes: the disk is full ({during}: {reason}); retrying until space is freed")]
    DiskFull { shard: u16, during: &'static str, reason: String },
    #[error("shard {0} is closing")]
    Closing(u16),
    #[error("quarantining {path}: {source}")]
    Quarantine { path: PathBuf, source: std::io::Error },
    #[error("compaction: {0}")]
    Compaction(#[from] CompactionError),
    #[error(transparent)]
    CompactionConfig(#[from] InvalidCompactionConfig),
    #[error("shard {shard}: starting a background task: {reason}")]
    Task { shard: u16, reason: String },
    #[error(
        "shard {shard}: {dir} holds {sstables} SSTable file(s) but no MANIFEST; refusing to start rather \
         than drop them as crash leftovers. Restore the MANIFEST, or start once with \
         --rebuild-missing-manifest to rebuild it from the SSTables found (each is checked)"
    )]
    ManifestMissing { shard: u16, dir: PathBuf, sstables: usize },
}

/// What the node's schema catalog `catalog` says of a table id it does not know.
fn catalog_note(catalog: &Path) -> String {
    match catalog.exists() {
        false => format!(
            "but the schema catalog {} is missing: restore it (from a backup, or a peer's copy of the same cluster) before starting the node",
            catalog.display()
        ),
        true => format!("which the schema catalog {} does not list", catalog.display()),
    }
}

/// Where corrupt SSTables are moved (inside the shard directory, outside `sstables/`).
pub const QUARANTINE_DIR: &str = "quarantine";

/// What a shard found when it opened.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    pub wal: ReplayReport,
    /// WAL records applied to the MemTable (records already in SSTables are skipped).
    pub applied_records: u64,
    pub sstables: usize,
    /// Corrupt SSTables moved to quarantine (only with `quarantine_corrupt_sstables`).
    pub quarantined: Vec<PathBuf>,
    /// The largest write timestamp the shard holds (SSTable metadata and replayed WAL
    /// records), if any: clocks that stamp writes for it must start above it.
    pub max_timestamp: Option<Timestamp>,
}

/// Counters of one shard.
#[derive(Debug, Clone, Default)]
pub struct ShardStats {
    pub shard: u16,
    pub tables: usize,
    /// Bytes in the active and the immutable MemTables.
    pub memtable_bytes: usize,
    pub immutable_memtables: usize,
    /// Partitions in the MemTables (a partition also in SSTables counts once per place).
    pub memtable_partitions: usize,
    pub writes: u64,
    /// Data requests (writes, reads, scans) this shard received from another shard's
    /// executor over its channel: the cross-core hops a shard-aware client avoids.
    pub cross_shard_requests: u64,
    pub flushes: u64,
    pub sstables: usize,
    pub sstable_bytes: u64,
    pub wal: WalStats,
    pub cache: CacheStats,
    /// Read counters summed over the live SSTables.
    pub sstable_reads: SstableReadStats,
    pub flush_error: Option<String>,
    pub compaction: CompactionStats,
    /// Per table the shard knows, in table id order (`nodetool tablestats`).
    pub table_counters: Vec<TableCounters>,
    /// The live SSTables of each table that has any, in table id order.
    pub table_sstables: Vec<TableSstables>,
}

/// One table's live SSTables on one shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableSstables {
    pub table: TableId,
    pub sstables: usize,
    pub bytes: u64,
}

/// One table's activity on one shard: requests served since the shard opened, what its
/// MemTables hold, and what its live SSTables store and counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounters {
    pub table: TableId,
    /// Partition reads served ([`Shard::read`]).
    pub reads: u64,
    /// Token-range scans served ([`Shard::scan`]).
    pub range_scans: u64,
    /// Partition updates applied.
    pub writes: u64,
    pub memtable_bytes: usize,
    pub memtable_partitions: usize,
    /// Tombstones stored in the live SSTables (from their metadata).
    pub sstable_tombstones: u64,
    /// Read counters of the live SSTables (bloom filter, blocks).
    pub sstable_reads: SstableReadStats,
    /// Tombstones met by reads and scans: deletions in the partitions they merged (cell,
    /// row and partition deletions that were not purged by a newer deletion).
    pub tombstones_scanned: u64,
    /// Time [`Shard::read`] took, per read.
    pub read_latency: LatencyHistogram,
    /// Time a write batch took to be logged (appended, and durable under the sync mode; the
    /// MemTable apply after it is not included), once per partition update of the table.
    pub write_latency: LatencyHistogram,
}

impl TableCounters {
    /// Adds another shard's counters of the same table (node-wide figures).
    pub fn add(&mut self, other: &TableCounters) {
        debug_assert_eq!(self.table, other.table);
        self.reads += other.reads;
        self.range_scans += other.range_scans;
        self.writes += other.writes;
        self.memtable_bytes += other.memtable_bytes;
        self.memtable_partitions += other.memtable_partitions;
        self.sstable_tombstones += other.sstable_tombstones;
        self.sstable_reads.add(&other.sstable_reads);
        self.tombstones_scanned += other.tombstones_scanned;
        self.read_latency.merge(&other.read_latency);
        self.write_latency.merge(&other.write_latency);
    }
}

/// Every table's counters summed over `shards` (a node's figures), in table id order.
pub fn node_table_counters(shards: &[ShardStats]) -> Vec<TableCounters> {
    let mut totals: Vec<TableCounters> = Vec::new();
    for c in shards.iter().flat_map(|s| s.table_counters.iter()) {
        match totals.binary_search_by_key(&c.table, |t| t.table) {
            Ok(i) => totals[i].add(c),
            Err(i) => totals.insert(i, c.clone()),
        }
    }
    totals
}

/// Requests served for one table (plain counters bumped on the shard's own thread).
#[derive(Debug, Clone, Default)]
struct TableActivity {
    reads: u64,
    range_scans: u64,
    writes: u64,
    tombstones_scanned: u64,
    read_latency: LatencyHistogram,
    write_latency: LatencyHistogram,
}

/// The MemTables that take the writes logged between two flush points.
#[derive(Default)]
struct Generation {
    /// Shared (`Rc`) so that a flush walks a frozen MemTable without holding this borrow
    /// across its writes; only the flush takes such a handle, and only once the generation is
    /// frozen and drained, when nothing applies to it any more.
    tables: RefCell<AHashMap<TableId, Rc<MemTable>>>,
    /// Writes logged into this generation whose acknowledgement has not applied them yet.
    in_flight: Cell<usize>,
    drained: Signal,
}

impl Generation {
    fn bytes(&self) -> usize {
        self.tables.borrow().values().map(|m| m.bytes()).sum()
    }

    fn apply(&self, updates: Vec<PartitionUpdate>) {
        let mut tables = self.tables.borrow_mut();
        for update in updates {
            let memtable = tables.entry(update.table).or_default();
            // Writes apply to the active generation, or to a frozen one before it is drained:
            // never to one a flush holds (`Generation::tables`).
            Rc::get_mut(memtable).expect("a MemTable being written is not being flushed").apply(update);
        }
    }

    fn merge_into(&self, table: TableId, key: &PartitionKey, slice: &ClusteringSlice, into: &mut Option<Partition>) {
        if let Some(found) = self.tables.borrow().get(&table).and_then(|m| m.get(key, slice)) {
            merge_found(into, found);
        }
    }
}

/// Keeps a generation's in-flight count right even if the write's future is dropped.
struct InFlight(Rc<Generation>);

impl InFlight {
    fn enter(generation: Rc<Generation>) -> InFlight {
        generation.in_flight.set(generation.in_flight.get() + 1);
        InFlight(generation)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let n = self.0.in_flight.get() - 1;
        self.0.in_flight.set(n);
        if n == 0 {
            self.0.drained.notify_all();
        }
    }
}

/// Why the last flush failed; cleared by the next one that succeeds.
#[derive(Clone)]
struct FlushError {
    reason: String,
    disk_full: bool,
}

impl FlushError {
    /// The error a write or a manual flush gets while flushing fails.
    fn refusal(&self, shard: u16, waiting: usize) -> ShardError {
        if self.disk_full {
            ShardError::DiskFull { shard, during: "flushing MemTables", reason: self.reason.clone() }
        } else {
            ShardError::FlushFailed { shard, reason: self.reason.clone(), waiting }
        }
    }
}

struct Immutable {
    generation: Rc<Generation>,
    /// Every WAL record up to here was logged into this generation or an older one.
    flushed_through: Lsn,
}

/// Frees a flushed generation's MemTables a chunk of rows at a time, letting other tasks run
/// between chunks (dropping a full MemTable at once stalled the shard for tens of ms). A
/// generation a reader still holds is freed by that reader, at once.
async fn release_gradually(generation: Rc<Generation>) {
    /// Rows freed between two chances for other tasks to run.
    const ROWS_PER_CHUNK: usize = 4096;
    let Ok(generation) = Rc::try_unwrap(generation) else { return };
    for (_, memtable) in generation.tables.into_inner() {
        let Ok(mut memtable) = Rc::try_unwrap(memtable) else { continue };
        while !memtable.release_some(ROWS_PER_CHUNK) {
            glommio::yield_if_needed().await;
        }
    }
}

fn merge_found(into: &mut Option<Partition>, found: Partition) {
    match into {
        Some(p) => p.merge(found),
        None => *into = Some(found),
    }
}

pub struct Shard {
    id: u16,
    dir: PathBuf,
    config: ShardConfig,
    wal: Wal,
    hlc: RefCell<Hlc<SystemClock>>,
    schemas: RefCell<AHashMap<TableId, Rc<TableSchema>>>,
    active: RefCell<Rc<Generation>>,
    /// Oldest first; flushed in this order.
    immutables: RefCell<VecDeque<Immutable>>,
    /// Per table, newest first.
    sstables: RefCell<AHashMap<TableId, Vec<Rc<Sstable>>>>,
    manifest: RefCell<Manifest>,
    cache: Rc<BlockCache>,
    /// Notified when a generation becomes immutable, when a flush ends and when closing.
    flush_state: Signal,
    flush_error: RefCell<Option<FlushError>>,
    flushes: Cell<u64>,
    closing: Cell<bool>,
    flush_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
    writes: Cell<u64>,
    /// See [`ShardStats::cross_shard_requests`]; counted by the node's request loop.
    cross_shard_requests: Cell<u64>,
    /// Per table; an entry lives until the table is dropped (bounded by the catalog's tables).
    table_activity: RefCell<AHashMap<TableId, TableActivity>>,
    /// The next SSTable generation to hand out (flushes and compactions both take from it;
    /// every manifest edit records it).
    next_generation: Cell<u64>,
    /// None when background compaction is off.
    strategy: Option<Box<dyn CompactionStrategy>>,
    compaction_queue: TaskQueueHandle,
    /// Notified when compaction is requested, when a compaction ends and when closing.
    compaction_wake: Signal,
    /// Bumped by every request for a background compaction (after a flush, at start).
    compaction_requests: Cell<u64>,
    /// A compaction is running (one at a time per shard).
    compacting: Cell<bool>,
    compaction_stats: RefCell<CompactionStats>,
    compaction_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
}

/// Holds the shard's one compaction slot; releasing it wakes the next waiter.
struct CompactionSlot<'a>(&'a Shard);

impl Drop for CompactionSlot<'_> {
    fn drop(&mut self) {
        self.0.compacting.set(false);
        self.0.compaction_wake.notify_all();
    }
}

impl Shard {
    /// Opens the shard in `dir` with the node's tables: loads the manifest, removes crash
    /// leftovers, opens the live SSTables, replays the WAL records not yet flushed, and starts
    /// the background flush task. Must run on the shard's executor after
    /// [`crate::io::prepare_executor_io`].
    pub async fn open(
        id: u16,
        dir: &Path,
        config: ShardConfig,
        schemas: &[TableSchema],
    ) -> Result<(Rc<Shard>, OpenReport), ShardError> {
        Shard::open_in_node(id, dir, config, schemas, |_| false).await
    }

    /// [`Shard::open`] for a shard of a node whose catalog says which table ids were dropped
    /// (`is_dropped`): data of such a table that `schemas` does not list is discarded (a crash
    /// may have stopped the drop before this shard saw it). Its SSTables leave the manifest and
    /// the disk, and its WAL updates are skipped.
    pub async fn open_in_node(
        id: u16,
        dir: &Path,
        config: ShardConfig,
        schemas: &[TableSchema],
        is_dropped: impl Fn(TableId) -> bool,
    ) -> Result<(Rc<Shard>, OpenReport), ShardError> {
        config.compaction.validate()?;
        let dropped = |table: TableId| is_dropped(table) && !schemas.iter().any(|s| s.id == table);
        let (mut manifest, needed_from) = match Manifest::read(dir)? {
            // Replay must find every record after the manifest's WAL boundary.
            Some(manifest) => {
                let needed_from = manifest.flushed_through + 1;
                (manifest, Some(needed_from))
            }
            None => {
                let found = Manifest::sstable_files(dir)?;
                if found.is_empty() {
                    // A new shard (or one an older version made that never flushed): its WAL
                    // holds everything. Its empty manifest is saved at once, so that from now
                    // on SSTables without a manifest (even the first flush's, left by a crash)
                    // always mean a lost manifest.
                    let manifest = Manifest::default();
                    manifest.save(dir)?;
                    (manifest, Some(1))
                } else if config.rebuild_missing_manifest {
                    // Which WAL records the lost manifest covered is unknown: replay them all
                    // (merging is idempotent) and accept a log that starts anywhere.
                    (rebuild_manifest(id, dir, found, schemas, &dropped)?, None)
                } else {
                    return Err(ShardError::ManifestMissing {
                        shard: id,
                        dir: dir.to_path_buf(),
                        sstables: found.len(),
                    });
                }
            }
        };
        let listed = manifest.sstables.len();
        manifest.sstables.retain(|s| !dropped(s.table));
        if manifest.sstables.len() != listed {
            tracing::info!(shard = id, files = listed - manifest.sstables.len(), "removing SSTables of dropped tables");
            manifest.version += 1;
            manifest.save(dir)?;
        }
        manifest.remove_leftovers(dir)?;
        // The node's catalog sits beside its shard directories.
        let catalog = dir.parent().unwrap_or(dir).join(CATALOG_FILE);
        if let Some(entry) = manifest.sstables.iter().find(|s| !schemas.iter().any(|t| t.id == s.table)) {
            let found = dir.join(SSTABLE_DIR).join(entry.file_name()).display().to_string();
            return Err(ShardError::UnknownTableData { found, table: entry.table, catalog });
        }
        let cache = BlockCache::new(config.block_cache_bytes);
        let mut hlc = Hlc::new(SystemClock, config.max_clock_drift);
        let mut max_seen = i64::MIN;
        let mut sstables: AHashMap<TableId, Vec<Rc<Sstable>>> = AHashMap::new();
        let mut quarantined = Vec::new();
        for entry in manifest.sstables.clone() {
            let path = dir.join(SSTABLE_DIR).join(entry.file_name());
            match Sstable::open(&path, entry.generation, cache.clone()).await {
                Ok(sst) => {
                    max_seen = max_seen.max(sst.meta().max_timestamp);
                    sstables.entry(entry.table).or_default().push(Rc::new(sst));
                }
                Err(e @ (SstableError::Corrupt { .. } | SstableError::UnsupportedVersion { .. }))
                    if config.quarantine_corrupt_sstables =>
                {
                    quarantine_sstable(dir, &path, &e)?;
                    quarantined.push((entry.generation, path));
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !quarantined.is_empty() {
            // The operator chose to lose these files' rows (other replicas or a backup may hold
            // them) rather than keep the shard down.
            manifest.sstables.retain(|s| !quarantined.iter().any(|(g, _)| *g == s.generation));
            manifest.version += 1;
            manifest.save(dir)?;
        }
        for list in sstables.values_mut() {
            list.sort_by_key(|s| std::cmp::Reverse(s.meta().generation));
        }
        let known: AHashMap<TableId, Rc<TableSchema>> = schemas.iter().map(|s| (s.id, Rc::new(s.clone()))).collect();
        let active = Generation::default();
        let flushed_through = manifest.flushed_through;
        let mut applied_records = 0;
        let (wal, replay) = Wal::open_needing(&dir.join("wal"), config.wal.clone(), needed_from, |lsn, payload| {
            if lsn <= flushed_through {
                return Ok(()); // already in an SSTable; the segment outlived its flush
            }
            let mut updates = decode_batch(payload).map_err(|e| WalError::Apply(format!("record {lsn}: {e}")))?;
            updates.retain(|u| !dropped(u.table));
            for update in &updates {
                if !known.contains_key(&update.table) {
                    let (table, note) = (update.table, catalog_note(&catalog));
                    return Err(WalError::Apply(format!("record {lsn} holds rows of table id {table}, {note}")));
                }
                if let Some(ts) = update.max_timestamp() {
                    max_seen = max_seen.max(ts);
                }
            }
            active.apply(updates);
            applied_records += 1;
            Ok(())
        })
        .await?;
        let manifest_next_generation = manifest.next_generation;
        let config_strategy = config.compaction.strategy();
        let report = OpenReport {
            wal: replay,
            applied_records,
            sstables: sstables.values().map(Vec::len).sum(),
            quarantined: quarantined.into_iter().map(|(_, p)| p).collect(),
            max_timestamp: (max_seen > i64::MIN).then_some(max_seen),
        };
        if max_seen > i64::MIN && hlc.advance_past(max_seen) {
            tracing::warn!(
                shard = id,
                max_seen,
                "stored timestamps are ahead of the wall clock beyond the drift bound"
            );
        }
        let compaction_queue = glommio::executor().create_task_queue(
            Shares::Static(config.compaction.shares),
            Latency::NotImportant,
            &format!("compaction-{id}"),
        );
        let shard = Rc::new(Shard {
            id,
            dir: dir.to_path_buf(),
            config,
            wal,
            hlc: RefCell::new(hlc),
            schemas: RefCell::new(known),
            active: RefCell::new(Rc::new(active)),
            immutables: RefCell::new(VecDeque::new()),
            sstables: RefCell::new(sstables),
            manifest: RefCell::new(manifest),
            cache,
            flush_state: Signal::default(),
            flush_error: RefCell::new(None),
            flushes: Cell::new(0),
            closing: Cell::new(false),
            flush_task: RefCell::new(None),
            writes: Cell::new(0),
            cross_shard_requests: Cell::new(0),
            table_activity: RefCell::new(AHashMap::new()),
            next_generation: Cell::new(manifest_next_generation),
            strategy: config_strategy,
            compaction_queue,
            compaction_wake: Signal::default(),
            compaction_requests: Cell::new(0),
            compacting: Cell::new(false),
            compaction_stats: RefCell::new(CompactionStats::default()),
            compaction_task: RefCell::new(None),
        });
        let queue = glommio::executor().create_task_queue(
            Shares::Static(shard.config.flush_shares),
            Latency::NotImportant,
            &format!("flush-{id}"),
        );
        let flusher = shard.clone();
        let task = glommio::spawn_local_into(async move { flusher.flush_loop().await }, queue)
            .map_err(|e| ShardError::FlushFailed { shard: id, reason: e.to_string(), waiting: 0 })?;
        *shard.flush_task.borrow_mut() = Some(task.detach());
        let compactor = shard.clone();
        let task = glommio::spawn_local_into(async move { compactor.compaction_loop().await }, compaction_queue)
            .map_err(|e| ShardError::Task { shard: id, reason: e.to_string() })?;
        *shard.compaction_task.borrow_mut() = Some(task.detach());
        // SSTables left by an earlier run may already call for a compaction.
        shard.request_compaction();
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
        self.schemas.borrow_mut().entry(schema.id).or_insert_with(|| Rc::new(schema));
    }

    pub fn schema(&self, table: TableId) -> Option<Rc<TableSchema>> {
        self.schemas.borrow().get(&table).cloned()
    }

    /// Applies a batch of writes to partitions this shard owns, all stamped with one timestamp:
    /// `ts` when the client gave one (the HLC observes it), else the next HLC timestamp.
    /// Resolves once the batch is durable under the sync mode; returns the timestamp used.
    pub async fn apply(&self, writes: Vec<Write>, ts: Option<Timestamp>) -> Result<Timestamp, ShardError> {
        let (ts, updates) = self.stamp(writes, ts)?;
        self.log_and_apply(updates, None).await?;
        Ok(ts)
    }

    /// Applies updates stamped elsewhere (a logged batch replayed from the batchlog), exactly
    /// as [`Shard::apply`] applies its own: one WAL record, atomic. Their timestamps advance
    /// this shard's clock.
    /// Applies updates already stamped with their timestamps, atomically (one WAL record).
    /// `encoded`, when given, is these updates in the mutation batch encoding (`encode_batch`),
    /// as they arrived (a peer's MUTATE): it becomes the WAL record as it is, instead of
    /// encoding the updates a second time.
    pub async fn apply_stamped(
        &self,
        updates: Vec<PartitionUpdate>,
        encoded: Option<Vec<u8>>,
    ) -> Result<(), ShardError> {
        {
            let schemas = self.schemas.borrow();
            if let Some(u) = updates.iter().find(|u| !schemas.contains_key(&u.table)) {
                return Err(ShardError::UnknownTable(u.table));
            }
        }
        if let Some(ts) = updates.iter().filter_map(PartitionUpdate::max_timestamp).max() {
            self.hlc.borrow_mut().observe(ts)?;
        }
        self.log_and_apply(updates, encoded).await
    }

    async fn log_and_apply(&self, updates: Vec<PartitionUpdate>, encoded: Option<Vec<u8>>) -> Result<(), ShardError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.make_room().await?;
        let payload = encoded.unwrap_or_else(|| {
            let mut payload = Vec::new();
            encode_batch(&updates, &mut payload);
            payload
        });
        // The record gets its LSN now, in call order, in the generation active now; the await
        // is for durability, after which the write is applied to that same generation.
        let in_flight = InFlight::enter(self.active.borrow().clone());
        let started = Instant::now();
        self.wal.append(&payload).await.map_err(|e| {
            if e.is_disk_full() {
                ShardError::DiskFull { shard: self.id, during: "writing the WAL", reason: e.to_string() }
            } else {
                ShardError::Wal(e)
            }
        })?;
        {
            let elapsed = started.elapsed();
            let mut activities = self.table_activity.borrow_mut();
            for update in &updates {
                let activity = activities.entry(update.table).or_default();
                activity.writes += 1;
                activity.write_latency.record(elapsed);
            }
        }
        in_flight.0.apply(updates);
        drop(in_flight);
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }

    fn stamp(
        &self,
        writes: Vec<Write>,
        ts: Option<Timestamp>,
    ) -> Result<(Timestamp, Vec<PartitionUpdate>), ShardError> {
        {
            let schemas = self.schemas.borrow();
            if let Some(w) = writes.iter().find(|w| !schemas.contains_key(&w.table)) {
                return Err(ShardError::UnknownTable(w.table));
            }
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

    /// Turns a full active generation into an immutable one, waiting while too many are
    /// already waiting for their flush.
    async fn make_room(&self) -> Result<(), ShardError> {
        loop {
            if self.closing.get() {
                return Err(ShardError::Closing(self.id));
            }
            if self.active.borrow().bytes() < self.config.memtable_budget {
                return Ok(());
            }
            let waiting = self.immutables.borrow().len();
            if waiting < self.config.max_immutable_memtables {
                self.switch_active();
                return Ok(());
            }
            if let Some(error) = self.flush_error.borrow().as_ref() {
                return Err(error.refusal(self.id, waiting));
            }
            let max = self.config.max_immutable_memtables;
            self.flush_state
                .wait_until(|| {
                    self.immutables.borrow().len() < max || self.flush_error.borrow().is_some() || self.closing.get()
                })
                .await;
        }
    }

    fn switch_active(&self) {
        let flushed_through = self.wal.stats().last_lsn;
        let old = std::mem::replace(&mut *self.active.borrow_mut(), Rc::new(Generation::default()));
        self.immutables.borrow_mut().push_back(Immutable { generation: old, flushed_through });
        self.flush_state.notify_all();
    }

    /// Flushes everything written so far (the active generation, if not empty) and waits until
    /// it is in SSTables recorded by the manifest.
    pub async fn flush(&self) -> Result<(), ShardError> {
        if self.active.borrow().bytes() > 0 {
            // Ignore the budget: a manual flush goes through even when the queue is full.
            self.switch_active();
        }
        let target = self.flushes.get() + self.immutables.borrow().len() as u64;
        self.flush_state
            .wait_until(|| self.flushes.get() >= target || self.flush_error.borrow().is_some() || self.closing.get())
            .await;
        match self.flush_error.borrow().clone() {
            Some(error) if self.flushes.get() < target => Err(error.refusal(self.id, self.immutables.borrow().len())),
            _ if self.flushes.get() < target => Err(ShardError::Closing(self.id)),
            _ => Ok(()),
        }
    }

    /// The background flush task: flushes immutable generations oldest first; on failure
    /// keeps the generation (its data is still in the WAL), records the error and retries.
    async fn flush_loop(self: Rc<Self>) {
        const RETRY_AFTER: Duration = Duration::from_secs(1);
        loop {
            self.flush_state.wait_until(|| !self.immutables.borrow().is_empty() || self.closing.get()).await;
            if self.closing.get() {
                return;
            }
            let (generation, flushed_through) = {
                let immutables = self.immutables.borrow();
                let Some(front) = immutables.front() else { continue };
                (front.generation.clone(), front.flushed_through)
            };
            generation.drained.wait_until(|| generation.in_flight.get() == 0).await;
            match self.flush_generation(&generation, flushed_through).await {
                Ok(()) => {
                    self.flush_error.borrow_mut().take();
                }
                Err(e) => {
                    let disk_full = crate::io::caused_by_full_disk(&e);
                    tracing::error!(shard = self.id, error = %e, disk_full, "flush failed; retrying");
                    *self.flush_error.borrow_mut() = Some(FlushError { reason: e.to_string(), disk_full });
                    self.flush_state.notify_all();
                    glommio::timer::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    async fn flush_generation(&self, generation: &Generation, flushed_through: Lsn) -> Result<(), ShardError> {
        let mut tables: Vec<TableId> = generation.tables.borrow().keys().copied().collect();
        // Data of dropped tables is not written; the WAL boundary still moves past it.
        tables.retain(|t| self.schemas.borrow().contains_key(t));
        tables.sort_unstable();
        let mut written: Vec<(SstableEntry, Rc<Sstable>)> = Vec::new();
        for table in tables {
            let result = self.write_sstable(generation, table, self.allocate_generation()).await;
            match result {
                Ok(Some(done)) => written.push(done),
                Ok(None) => {}
                Err(e) => {
                    // Files not in the manifest are removed at the next start; remove now too.
                    for (entry, _) in &written {
                        let _ = glommio::io::remove(self.dir.join(SSTABLE_DIR).join(entry.file_name())).await;
                    }
                    return Err(e);
                }
            }
        }
        // A table dropped while its SSTable was being written: the file is not published.
        let (written, orphans): (Vec<_>, Vec<_>) =
            written.into_iter().partition(|(entry, _)| self.schemas.borrow().contains_key(&entry.table));
        for (entry, sst) in orphans {
            drop(sst);
            let _ = std::fs::remove_file(self.dir.join(SSTABLE_DIR).join(entry.file_name()));
        }
        let mut next = self.manifest.borrow().clone();
        next.version += 1;
        next.flushed_through = next.flushed_through.max(flushed_through);
        next.next_generation = self.next_generation.get();
        next.sstables.extend(written.iter().map(|(entry, _)| *entry));
        next.save(&self.dir)?;
        let files = written.len();
        // Published in one step with dropping the generation: readers see the rows in exactly
        // one of the two places.
        {
            let mut sstables = self.sstables.borrow_mut();
            for (entry, sst) in written {
                sstables.entry(entry.table).or_default().insert(0, sst);
            }
            *self.manifest.borrow_mut() = next;
            if let Some(flushed) = self.immutables.borrow_mut().pop_front() {
                glommio::spawn_local(release_gradually(flushed.generation)).detach();
            }
            self.flushes.set(self.flushes.get() + 1);
        }
        self.flush_state.notify_all();
        self.request_compaction();
        let released = self.wal.release_through(flushed_through).await?;
        // One line per flush (a notable event, at most one per MemTable budget of writes).
        tracing::info!(shard = self.id, sstables = files, flushed_through, wal_segments_released = released, "flushed");
        Ok(())
    }

    /// Writes one table's MemTable of a frozen generation as SSTable `sst_generation`.
    async fn write_sstable(
        &self,
        generation: &Generation,
        table: TableId,
        sst_generation: u64,
    ) -> Result<Option<(SstableEntry, Rc<Sstable>)>, ShardError> {
        /// Partitions written between two chances for other tasks to run.
        const CHUNK: usize = 256;
        let Some(memtable) = generation.tables.borrow().get(&table).cloned() else { return Ok(None) };
        // Counted here rather than with `MemTable::partitions`, with room for other tasks: a walk
        // over a full MemTable's keys takes milliseconds.
        let mut partitions = 0;
        for _ in memtable.sorted_partitions() {
            partitions += 1;
            if partitions % (16 * CHUNK) == 0 {
                glommio::yield_if_needed().await;
            }
        }
        if partitions == 0 {
            return Ok(None);
        }
        let path = self.dir.join(SSTABLE_DIR).join(sstable_file_name(table, sst_generation));
        let mut writer =
            SstableWriter::create(&path, table, self.id, sst_generation, partitions, &self.config.sstable).await?;
        // Rows are written from where they are in the frozen MemTable: none is copied.
        for (n, (key, partition)) in memtable.sorted_partitions().enumerate() {
            if let Err(e) = writer.add(key, &partition).await {
                writer.abort().await;
                return Err(e.into());
            }
            if n % CHUNK == CHUNK - 1 {
                glommio::yield_if_needed().await;
            }
        }
        let meta = writer.finish().await?;
        let sst = Sstable::open(&path, sst_generation, self.cache.clone()).await?;
        let entry = SstableEntry { table, generation: sst_generation, file_size: meta.file_size };
        Ok(Some((entry, Rc::new(sst))))
    }

    /// The stored versions of one partition's rows in `slice` (tombstones included), merged
    /// from the MemTables and every SSTable that may hold the key.
    pub async fn read(
        &self,
        table: TableId,
        key: &PartitionKey,
        slice: &ClusteringSlice,
    ) -> Result<Option<Partition>, ShardError> {
        if !self.schemas.borrow().contains_key(&table) {
            return Err(ShardError::UnknownTable(table));
        }
        let started = Instant::now();
        let mut found = None;
        self.active.borrow().merge_into(table, key, slice, &mut found);
        for imm in self.immutables.borrow().iter() {
            imm.generation.merge_into(table, key, slice, &mut found);
        }
        let sstables: Vec<Rc<Sstable>> = self.sstables.borrow().get(&table).cloned().unwrap_or_default();
        // read_partition checks the token range and the bloom filter first (and counts both);
        // the key is hashed once for all of them.
        let hash = BloomHash::of(key.bytes());
        for sst in &sstables {
            if let Some(p) = sst.read_partition(key, hash, slice).await? {
                merge_found(&mut found, p);
            }
        }
        let mut activities = self.table_activity.borrow_mut();
        let activity = activities.entry(table).or_default();
        activity.reads += 1;
        activity.tombstones_scanned += found.as_ref().map_or(0, Partition::tombstones);
        activity.read_latency.record(started.elapsed());
        Ok(found)
    }

    /// The stored versions of one partition's rows in `slice` from its start up to the
    /// `limit.live_rows`-th row live at `limit.now_secs` (tombstones and dead rows on the way
    /// included, at most `slice::MAX_DEAD_ROWS` of them), merged from the MemTables and every
    /// SSTable that may hold the key. Reads in rounds of at most `slice::MAX_CHUNK_ROWS` rows
    /// per source, each seeking to where the last one stopped, and lets the shard's other
    /// tasks run between rounds: a page deep in a wide partition reads about a page of rows,
    /// not the partition (see `crate::slice`).
    pub async fn read_limited(
        &self,
        table: TableId,
        key: &PartitionKey,
        slice: &ClusteringSlice,
        limit: RowLimit,
    ) -> Result<Option<Partition>, ShardError> {
        Ok(self.read_bounded(table, key, slice, limit, usize::MAX).await?.0)
    }

    /// [`Shard::read_limited`] that also stops once its rows hold `max_bytes` stored bytes
    /// (`scan::row_bytes`, at least one row), and says whether it stopped at a bound.
    pub(crate) async fn read_bounded(
        &self,
        table: TableId,
        key: &PartitionKey,
        slice: &ClusteringSlice,
        limit: RowLimit,
        max_bytes: usize,
    ) -> Result<(Option<Partition>, bool), ShardError> {
        if !self.schemas.borrow().contains_key(&table) {
            return Err(ShardError::UnknownTable(table));
        }
        let started = Instant::now();
        let mut bounded = BoundedRead::new(slice, limit).with_max_bytes(max_bytes);
        let hash = BloomHash::of(key.bytes());
        while bounded.next_slice().is_some() {
            let rows = bounded.chunk_rows();
            // The MemTables (read first, with nothing awaited in between) and SSTables of one
            // instant: a flush during the round moves rows from the one to the other, never
            // out of sight.
            let generations: Vec<Rc<Generation>> = std::iter::once(self.active.borrow().clone())
                .chain(self.immutables.borrow().iter().map(|i| i.generation.clone()))
                .collect();
            for g in &generations {
                if let (Some(memtable), Some(round)) = (g.tables.borrow().get(&table), bounded.source_slice()) {
                    bounded.add(memtable.get_chunk(key, &round, rows));
                }
            }
            let sstables: Vec<Rc<Sstable>> = self.sstables.borrow().get(&table).cloned().unwrap_or_default();
            for sst in &sstables {
                // Each source reads up to the round's cover so far; a partition spread over
                // many SSTables costs a chunk of each per round, so the shard's other tasks
                // run between them.
                let Some(round) = bounded.source_slice() else { break };
                bounded.add(sst.read_chunk(key, hash, &round, rows).await?);
                glommio::yield_if_needed().await;
            }
            bounded.end_round();
            if !bounded.is_done() {
                glommio::yield_if_needed().await;
            }
        }
        let (found, stopped) = bounded.finish_with_stop();
        let mut activities = self.table_activity.borrow_mut();
        let activity = activities.entry(table).or_default();
        activity.reads += 1;
        activity.tombstones_scanned += found.as_ref().map_or(0, Partition::tombstones);
        activity.read_latency.record(started.elapsed());
        Ok((found, stopped))
    }

    /// Up to `limit` partitions with tokens in (start, end] from `resume` on (after its
    /// partition, or inside it after its row), in storage order, merged from the MemTables
    /// and SSTables, within `bound` (stored rows and bytes, at least one row): the answer may
    /// end inside a partition and says where the next one resumes. Each source gives at most
    /// `bound.rows` rows of a partition; a partition that may be wider is read with a bounded
    /// read, so a wide partition is never held whole. Yields between partitions and rounds.
    pub async fn scan(
        &self,
        table: TableId,
        start: Token,
        end: Token,
        resume: Option<ScanResume>,
        limit: usize,
        bound: ScanBound,
    ) -> Result<ScanPage, ShardError> {
        if !self.schemas.borrow().contains_key(&table) {
            return Err(ShardError::UnknownTable(table));
        }
        let mut page = ScanPage::default();
        let mut budget = PageBudget::new(bound);
        let mut after = None;
        if let Some(resume) = resume {
            if let Some(row) = &resume.after {
                // Finish the partition the last answer ended in.
                let slice = ClusteringSlice { start: Bound::Excluded(row.clone()), end: Bound::Unbounded };
                if let Some(cut) = self.scan_partition(table, &resume.key, &slice, &mut budget, &mut page).await? {
                    page.resume = Some(cut);
                    return Ok(self.count_scan(table, page));
                }
            }
            after = Some(resume.key);
        }
        let mut merge = PartitionMerge::new();
        let generations: Vec<Rc<Generation>> = std::iter::once(self.active.borrow().clone())
            .chain(self.immutables.borrow().iter().map(|i| i.generation.clone()))
            .collect();
        for g in generations {
            let tables = g.tables.borrow();
            let Some(memtable) = tables.get(&table) else { continue };
            let range = memtable.range(start, end, after.as_ref()).with_max_rows(bound.rows);
            merge.push_memory(range.take(limit).collect());
        }
        let sstables: Vec<Rc<Sstable>> = self.sstables.borrow().get(&table).cloned().unwrap_or_default();
        for sst in sstables {
            merge.push_scan(sst.scan(start, end, after.clone()).with_max_rows(bound.rows)).await?;
        }
        loop {
            if page.partitions.len() >= limit || budget.is_spent() {
                page.resume = page.partitions.last().map(|(k, _)| k.clone()).or(after).map(ScanResume::after_partition);
                break;
            }
            let Some((key, mut partition)) = merge.next().await? else { break };
            if partition.rows.len() >= bound.rows {
                // A source may have cut it: read it bounded, from every source.
                if let Some(cut) =
                    self.scan_partition(table, &key, &ClusteringSlice::ALL, &mut budget, &mut page).await?
                {
                    page.resume = Some(cut);
                    break;
                }
            } else {
                let cut = budget.take(&key, &mut partition);
                page.partitions.push((key.clone(), partition));
                if let Some(row) = cut {
                    page.resume = Some(ScanResume { key, after: Some(row) });
                    break;
                }
            }
            after = Some(key);
            // Merging many (or wide) partitions must not hold the shard's other requests.
            glommio::yield_if_needed().await;
        }
        Ok(self.count_scan(table, page))
    }

    /// Adds partition `key`'s rows in `slice`, read bounded by what `budget` has left, to
    /// `page`; where the next answer resumes when the read stopped inside the partition.
    async fn scan_partition(
        &self,
        table: TableId,
        key: &PartitionKey,
        slice: &ClusteringSlice,
        budget: &mut PageBudget,
        page: &mut ScanPage,
    ) -> Result<Option<ScanResume>, ShardError> {
        let left = budget.left();
        let limit = RowLimit { live_rows: left.rows, now_secs: now_secs() };
        let (found, stopped) = self.read_bounded(table, key, slice, limit, left.bytes).await?;
        let Some(mut partition) = found else { return Ok(None) };
        let cut = budget
            .take(key, &mut partition)
            .or_else(|| stopped.then(|| partition.rows.keys().next_back().cloned()).flatten());
        page.partitions.push((key.clone(), partition));
        Ok(cut.map(|row| ScanResume { key: key.clone(), after: Some(row) }))
    }

    fn count_scan(&self, table: TableId, page: ScanPage) -> ScanPage {
        let mut activities = self.table_activity.borrow_mut();
        let activity = activities.entry(table).or_default();
        activity.range_scans += 1;
        activity.tombstones_scanned += page.partitions.iter().map(|(_, p)| p.tombstones()).sum::<u64>();
        page
    }

    fn allocate_generation(&self) -> u64 {
        let generation = self.next_generation.get();
        self.next_generation.set(generation + 1);
        generation
    }

    /// Asks the background compaction task to look for work.
    fn request_compaction(&self) {
        self.compaction_requests.set(self.compaction_requests.get() + 1);
        self.compaction_wake.notify_all();
    }

    /// Waits for the shard's one compaction slot.
    async fn compaction_slot(&self) -> CompactionSlot<'_> {
        self.compaction_wake.wait_until(|| !self.compacting.get()).await;
        self.compacting.set(true);
        CompactionSlot(self)
    }

    /// The background compaction task: on each request, runs what the strategy picks until it
    /// finds nothing. A failure (logged, kept in the counters; it changed nothing) waits for
    /// the next request rather than retrying the same inputs in a loop.
    async fn compaction_loop(self: Rc<Self>) {
        let Some(strategy) = self.strategy.as_deref() else { return };
        let mut seen = 0;
        loop {
            self.compaction_wake.wait_until(|| self.compaction_requests.get() != seen || self.closing.get()).await;
            seen = self.compaction_requests.get();
            loop {
                let _slot = self.compaction_slot().await;
                if self.closing.get() {
                    return;
                }
                let picked = self.pick_compaction(strategy);
                let Some((table, inputs)) = picked else { break };
                if self.run_compaction(table, inputs, None).await.is_err() {
                    break;
                }
            }
        }
    }

    /// The first table (by id) for which the strategy picks SSTables to merge.
    fn pick_compaction(&self, strategy: &dyn CompactionStrategy) -> Option<(TableId, Vec<Rc<Sstable>>)> {
        let sstables = self.sstables.borrow();
        let mut tables: Vec<TableId> = sstables.keys().copied().collect();
        tables.sort_unstable();
        tables.into_iter().find_map(|table| {
            let list = &sstables[&table];
            let picked = strategy.pick(&summaries(list))?;
            let inputs = list.iter().filter(|s| picked.contains(&s.meta().generation)).cloned().collect();
            Some((table, inputs))
        })
    }

    /// Runs one compaction and keeps the counters; the caller holds the compaction slot.
    async fn run_compaction(
        &self,
        table: TableId,
        inputs: Vec<Rc<Sstable>>,
        owned: Option<&OwnedRanges>,
    ) -> Result<CompactionReport, ShardError> {
        let result = self.compact(table, inputs, owned).await;
        match &result {
            Ok(report) => {
                let mut stats = self.compaction_stats.borrow_mut();
                if report.compactions > 0 {
                    stats.record(report);
                }
                stats.last_error = None;
            }
            Err(ShardError::Compaction(CompactionError::Cancelled)) => {}
            Err(e) => {
                tracing::error!(shard = self.id, table, error = %e, "compaction failed; the SSTables stay as they were");
                self.compaction_stats.borrow_mut().last_error = Some(e.to_string());
            }
        }
        result
    }

    /// Merges `inputs` (SSTables of `table`) into one new SSTable and replaces them with it in
    /// one manifest edit. A crash before the edit leaves the old set (the new file is a
    /// leftover), after it the new set (the old files are leftovers). If the inputs left the
    /// live set meanwhile (truncate, drop), the result is thrown away. A cleanup (`owned`)
    /// keeps only the partitions whose token is in it; when it dropped none, its output is
    /// thrown away and the inputs stay (nothing to gain from rewriting them).
    async fn compact(
        &self,
        table: TableId,
        inputs: Vec<Rc<Sstable>>,
        owned: Option<&OwnedRanges>,
    ) -> Result<CompactionReport, ShardError> {
        let Some(schema) = self.schema(table) else { return Ok(CompactionReport::default()) };
        let generation = self.allocate_generation();
        let path = self.dir.join(SSTABLE_DIR).join(sstable_file_name(table, generation));
        let input_generations: Vec<u64> = inputs.iter().map(|s| s.meta().generation).collect();
        let job = MergeJob {
            inputs: &inputs,
            output: &path,
            table,
            shard: self.id,
            generation,
            sstable: &self.config.sstable,
            purger: Purger::new(now_secs(), schema.options.gc_grace_seconds),
            owned,
        };
        let mut throttle = Throttle::new(self.config.compaction.throughput_bytes());
        let (meta, mut report) = merge_sstables(
            job,
            &mut throttle,
            |key| self.oldest_outside(table, key, &input_generations),
            || self.closing.get(),
        )
        .await?;
        if owned.is_some() && report.partitions_not_owned == 0 {
            let _ = std::fs::remove_file(&path);
            return Ok(CompactionReport { partitions_in: report.partitions_in, ..CompactionReport::default() });
        }
        let output = match meta {
            Some(meta) => match Sstable::open(&path, generation, self.cache.clone()).await {
                Ok(sst) => Some((SstableEntry { table, generation, file_size: meta.file_size }, Rc::new(sst))),
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e.into());
                }
            },
            None => None,
        };
        // From here to the publication below nothing awaits: no flush, truncate or drop can
        // change the live set in between.
        let inputs_live = {
            let sstables = self.sstables.borrow();
            let live = sstables.get(&table).map(Vec::as_slice).unwrap_or_default();
            input_generations.iter().all(|g| live.iter().any(|s| s.meta().generation == *g))
        };
        if !inputs_live || self.schema(table).is_none() {
            drop(output);
            let _ = std::fs::remove_file(&path);
            tracing::info!(shard = self.id, table, "compaction result discarded: its inputs were removed meanwhile");
            return Ok(CompactionReport::default());
        }
        let mut next = self.manifest.borrow().clone();
        next.version += 1;
        next.next_generation = self.next_generation.get();
        next.sstables.retain(|e| !input_generations.contains(&e.generation));
        next.sstables.extend(output.as_ref().map(|(entry, _)| *entry));
        // On failure the output file stays: whichever manifest is on disk, the next start
        // keeps the files it names and removes the others.
        next.save(&self.dir)?;
        {
            let mut sstables = self.sstables.borrow_mut();
            let list = sstables.entry(table).or_default();
            list.retain(|s| !input_generations.contains(&s.meta().generation));
            list.extend(output.map(|(_, sst)| sst));
            list.sort_by_key(|s| Reverse(s.meta().generation));
            *self.manifest.borrow_mut() = next;
        }
        report.compactions = 1;
        tracing::info!(
            shard = self.id,
            table,
            sstables_in = report.sstables_in,
            sstables_out = report.sstables_out,
            bytes_in = report.bytes_in,
            bytes_out = report.bytes_out,
            "compacted"
        );
        self.retire(inputs).await;
        Ok(report)
    }

    /// The smallest timestamp any version of `key` outside the SSTables `compacting` may have:
    /// in the other SSTables that may hold it (their minimum timestamp) and in the MemTables.
    fn oldest_outside(&self, table: TableId, key: &PartitionKey, compacting: &[u64]) -> Timestamp {
        let mut oldest = i64::MAX;
        if let Some(list) = self.sstables.borrow().get(&table) {
            let hash = BloomHash::of(key.bytes());
            for sst in list.iter().filter(|s| !compacting.contains(&s.meta().generation)) {
                if sst.may_contain(key, hash) {
                    oldest = oldest.min(sst.meta().min_timestamp);
                }
            }
        }
        let generations = std::iter::once(self.active.borrow().clone())
            .chain(self.immutables.borrow().iter().map(|i| i.generation.clone()))
            .collect::<Vec<_>>();
        for generation in generations {
            let tables = generation.tables.borrow();
            let found = tables.get(&table).and_then(|m| m.get(key, &ClusteringSlice::ALL));
            if let Some(ts) = found.as_ref().and_then(min_timestamp) {
                oldest = oldest.min(ts);
            }
        }
        oldest
    }

    /// Deletes the files of SSTables that left the live set, each once no read holds it any
    /// more. Stops early when the shard closes (the next start removes what is left).
    async fn retire(&self, retired: Vec<Rc<Sstable>>) {
        /// How often to look again at SSTables a read still holds.
        const POLL: Duration = Duration::from_millis(10);
        let mut held = retired;
        let dir = self.dir.join(SSTABLE_DIR);
        loop {
            let (free, still_held): (Vec<_>, Vec<_>) = held.into_iter().partition(|s| Rc::strong_count(s) == 1);
            for sst in free {
                self.cache.forget_sstable(sst.id());
                let path = sst.path().to_path_buf();
                drop(sst);
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "could not delete a replaced SSTable");
                }
            }
            if let Err(e) = crate::io::sync_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "syncing the SSTable directory");
            }
            held = still_held;
            if held.is_empty() || self.closing.get() {
                return;
            }
            glommio::timer::sleep(POLL).await;
        }
    }

    /// Manual major compaction (`nodetool compact [T]`): flushes the MemTables (they are
    /// shared by all tables), then merges all SSTables of `table` (of each table when `None`)
    /// into one (a table with one SSTable is rewritten only if it holds tombstones or TTL cells
    /// to purge). Runs in the compaction task queue, after the background compaction in
    /// progress, if any.
    pub async fn compact_major(self: &Rc<Self>, table: Option<TableId>) -> Result<CompactionReport, ShardError> {
        if let Some(t) = table {
            if !self.schemas.borrow().contains_key(&t) {
                return Err(ShardError::UnknownTable(t));
            }
        }
        self.flush().await?;
        let shard = self.clone();
        let task = glommio::spawn_local_into(async move { shard.compact_tables(table).await }, self.compaction_queue)
            .map_err(|e| ShardError::Task { shard: self.id, reason: e.to_string() })?;
        task.await
    }

    async fn compact_tables(&self, only: Option<TableId>) -> Result<CompactionReport, ShardError> {
        let _slot = self.compaction_slot().await;
        let mut tables: Vec<TableId> = self.sstables.borrow().keys().copied().collect();
        tables.retain(|t| only.is_none_or(|only| only == *t));
        tables.sort_unstable();
        let mut total = CompactionReport::default();
        for table in tables {
            if self.closing.get() {
                return Err(ShardError::Closing(self.id));
            }
            let inputs: Vec<Rc<Sstable>> = self.sstables.borrow().get(&table).cloned().unwrap_or_default();
            let purgeable = |s: &Rc<Sstable>| s.meta().tombstones > 0 || s.meta().expiring_cells > 0;
            if inputs.len() >= 2 || inputs.iter().any(purgeable) {
                total.add(&self.run_compaction(table, inputs, None).await?);
            }
        }
        Ok(total)
    }

    /// Cleanup (`nodetool cleanup`): flushes the MemTables (so what they hold is filtered
    /// too), then rewrites each SSTable of `table` alone, keeping only the partitions whose
    /// token is in `owned` (the ranges this shard replicates under the current ring); an
    /// SSTable holding nothing else is left as it is. Each rewrite is one compaction (one
    /// manifest edit) in the compaction task queue, one at a time with the others.
    pub async fn cleanup(self: &Rc<Self>, table: TableId, owned: OwnedRanges) -> Result<CompactionReport, ShardError> {
        if !self.schemas.borrow().contains_key(&table) {
            return Err(ShardError::UnknownTable(table));
        }
        self.flush().await?;
        let shard = self.clone();
        let task = glommio::spawn_local_into(
            async move {
                let inputs: Vec<Rc<Sstable>> = shard.sstables.borrow().get(&table).cloned().unwrap_or_default();
                let mut total = CompactionReport::default();
                for sst in inputs {
                    let _slot = shard.compaction_slot().await;
                    if shard.closing.get() {
                        return Err(ShardError::Closing(shard.id));
                    }
                    let live =
                        shard.sstables.borrow().get(&table).is_some_and(|l| l.iter().any(|s| Rc::ptr_eq(s, &sst)));
                    if live {
                        total.add(&shard.run_compaction(table, vec![sst], Some(&owned)).await?);
                    }
                }
                Ok(total)
            },
            self.compaction_queue,
        )
        .map_err(|e| ShardError::Task { shard: self.id, reason: e.to_string() })?;
        task.await
    }

    /// DROP TABLE on this shard (after the node's catalog dropped it): the table becomes
    /// unknown at once, its MemTable data is discarded (skipped by the flushes to come, which
    /// move the WAL boundary past it), and its SSTables leave the live set in one manifest edit
    /// and are deleted once no read holds them.
    pub async fn drop_table(&self, table: TableId) -> Result<(), ShardError> {
        self.schemas.borrow_mut().remove(&table);
        self.table_activity.borrow_mut().remove(&table);
        self.active.borrow().tables.borrow_mut().remove(&table);
        self.remove_sstables_of(table).await
    }

    /// TRUNCATE: removes every row of `table` written before the call. The MemTables are
    /// flushed first (so the WAL no longer replays those rows), then the table's SSTables leave
    /// the live set in one manifest edit. Writes that arrive later are kept.
    pub async fn truncate(&self, table: TableId) -> Result<(), ShardError> {
        if !self.schemas.borrow().contains_key(&table) {
            return Err(ShardError::UnknownTable(table));
        }
        self.flush().await?;
        // Nothing awaits between the flush and the manifest edit: every SSTable of the table
        // now holds only rows written before the truncate.
        self.remove_sstables_of(table).await
    }

    async fn remove_sstables_of(&self, table: TableId) -> Result<(), ShardError> {
        let removed: Vec<Rc<Sstable>> = self.sstables.borrow().get(&table).cloned().unwrap_or_default();
        if removed.is_empty() {
            return Ok(());
        }
        let mut next = self.manifest.borrow().clone();
        next.version += 1;
        next.sstables.retain(|e| e.table != table);
        next.save(&self.dir)?;
        self.sstables.borrow_mut().remove(&table);
        *self.manifest.borrow_mut() = next;
        self.retire(removed).await;
        Ok(())
    }

    /// Counts a data request that came over the channel from another shard's executor.
    pub fn count_cross_shard_request(&self) {
        self.cross_shard_requests.set(self.cross_shard_requests.get() + 1);
    }

    pub fn stats(&self) -> ShardStats {
        let sstables = self.sstables.borrow();
        let immutables = self.immutables.borrow();
        let generations = std::iter::once(self.active.borrow().clone())
            .chain(immutables.iter().map(|i| i.generation.clone()))
            .collect::<Vec<_>>();
        ShardStats {
            shard: self.id,
            tables: self.schemas.borrow().len(),
            memtable_bytes: generations.iter().map(|g| g.bytes()).sum(),
            immutable_memtables: immutables.len(),
            memtable_partitions: generations
                .iter()
                .map(|g| g.tables.borrow().values().map(|m| m.partitions()).sum::<usize>())
                .sum(),
            writes: self.writes.get(),
            cross_shard_requests: self.cross_shard_requests.get(),
            flushes: self.flushes.get(),
            sstables: sstables.values().map(Vec::len).sum(),
            sstable_bytes: sstables.values().flatten().map(|s| s.file_size()).sum(),
            wal: self.wal.stats(),
            cache: self.cache.stats(),
            sstable_reads: sstables.values().flatten().fold(SstableReadStats::default(), |mut total, s| {
                total.add(&s.stats());
                total
            }),
            flush_error: self.flush_error.borrow().as_ref().map(|e| e.reason.clone()),
            compaction: CompactionStats {
                pending: self
                    .strategy
                    .as_ref()
                    .map_or(0, |strategy| sstables.values().map(|list| strategy.pending(&summaries(list))).sum()),
                running: self.compacting.get(),
                ..self.compaction_stats.borrow().clone()
            },
            table_counters: self.table_counters(&generations, &sstables),
            table_sstables: {
                let mut tables: Vec<TableSstables> = sstables
                    .iter()
                    .filter(|(_, list)| !list.is_empty())
                    .map(|(&table, list)| TableSstables {
                        table,
                        sstables: list.len(),
                        bytes: list.iter().map(|s| s.file_size()).sum(),
                    })
                    .collect();
                tables.sort_by_key(|t| t.table);
                tables
            },
        }
    }

    /// [`TableCounters`] of every table this shard knows, in table id order.
    fn table_counters(
        &self,
        generations: &[Rc<Generation>],
        sstables: &AHashMap<TableId, Vec<Rc<Sstable>>>,
    ) -> Vec<TableCounters> {
        let activity = self.table_activity.borrow();
        let mut ids: Vec<TableId> = self.schemas.borrow().keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|table| {
                let done = activity.get(&table).cloned().unwrap_or_default();
                let mut counters = TableCounters {
                    table,
                    reads: done.reads,
                    range_scans: done.range_scans,
                    writes: done.writes,
                    tombstones_scanned: done.tombstones_scanned,
                    read_latency: done.read_latency,
                    write_latency: done.write_latency,
                    ..TableCounters::default()
                };
                for g in generations {
                    if let Some(memtable) = g.tables.borrow().get(&table) {
                        counters.memtable_bytes += memtable.bytes();
                        counters.memtable_partitions += memtable.partitions();
                    }
                }
                for sst in sstables.get(&table).into_iter().flatten() {
                    counters.sstable_tombstones += sst.meta().tombstones;
                    counters.sstable_reads.add(&sst.stats());
                }
                counters
            })
            .collect()
    }

    /// Makes everything acknowledged so far durable (fdatasync), whatever the sync mode.
    pub async fn sync(&self) -> Result<(), ShardError> {
        Ok(self.wal.sync().await?)
    }

    /// Stops the flush task and closes the WAL (synced). MemTables are not flushed: the WAL
    /// holds their data and is replayed at the next start.
    pub async fn close(self: Rc<Self>) -> Result<(), ShardError> {
        self.closing.set(true);
        self.flush_state.notify_all();
        self.compaction_wake.notify_all();
        let tasks = [self.flush_task.borrow_mut().take(), self.compaction_task.borrow_mut().take()];
        for task in tasks.into_iter().flatten() {
            task.await;
        }
        match Rc::try_unwrap(self) {
            Ok(shard) => Ok(shard.wal.close().await?),
            // Someone still holds the shard (a request in flight): sync what is logged.
            Err(shard) => shard.sync().await,
        }
    }
}

/// A manifest for a shard whose `MANIFEST` is gone, listing the SSTables `found` that pass a
/// full check (every block's checksum and structure, as `enigmadb sstable check` does) and
/// belong to a table of the node. A file that fails (an interrupted flush or compaction leaves
/// one) or whose table the node does not know is moved to quarantine, never deleted. The WAL
/// boundary is 0: replay applies every record still logged. Saved before it is returned.
fn rebuild_manifest(
    shard: u16,
    dir: &Path,
    found: Vec<(SstableEntry, PathBuf)>,
    schemas: &[TableSchema],
    dropped: &impl Fn(TableId) -> bool,
) -> Result<Manifest, ShardError> {
    let mut manifest = Manifest::default();
    for (entry, path) in found {
        manifest.next_generation = manifest.next_generation.max(entry.generation + 1);
        if dropped(entry.table) {
            continue; // removed below as a leftover, as the drop would have done
        }
        let checked = if schemas.iter().any(|s| s.id == entry.table) {
            crate::sstable::inspect::InspectedSstable::open(&path)
                .map_err(|e| e.to_string())
                .and_then(|sst| sst.check().map(|_| ()).map_err(|e| e.to_string()))
        } else {
            Err(format!("table id {} is not in the node's catalog", entry.table))
        };
        match checked {
            Ok(()) => manifest.sstables.push(entry),
            Err(reason) => quarantine_sstable(dir, &path, &reason)?,
        }
    }
    manifest.version = 1;
    manifest.save(dir)?;
    tracing::warn!(
        shard,
        sstables = manifest.sstables.len(),
        next_generation = manifest.next_generation,
        "MANIFEST was missing: rebuilt from the SSTables found (--rebuild-missing-manifest); the whole WAL is replayed"
    );
    Ok(manifest)
}

/// Moves a corrupt SSTable out of the live set into `<shard>/quarantine/`, never deleting it.
fn quarantine_sstable(shard_dir: &Path, path: &Path, why: &dyn std::fmt::Display) -> Result<(), ShardError> {
    let target_dir = shard_dir.join(QUARANTINE_DIR);
    let io = |source| ShardError::Quarantine { path: path.to_path_buf(), source };
    std::fs::create_dir_all(&target_dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
    std::fs::rename(path, target_dir.join(name)).map_err(io)?;
    crate::io::sync_dir(&target_dir).map_err(io)?;
    crate::io::sync_dir(path.parent().unwrap_or(shard_dir)).map_err(io)?;
    tracing::error!(file = %path.display(), error = %why, "corrupt SSTable quarantined; its rows are no longer served");
    Ok(())
}

fn summaries(list: &[Rc<Sstable>]) -> Vec<SstableSummary> {
    list.iter().map(|s| SstableSummary { generation: s.meta().generation, size: s.file_size() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{Cell, Deletion};
    use crate::compaction::StrategyKind;
    use crate::key::ClusteringKey;
    use crate::read::visible_rows;
    use crate::row::Row;
    use crate::test_support::on_executor;
    use std::ops::Bound;
    use wire::schema::{ColumnDef, TableOptions};
    use wire::{ColumnType, Value};

    fn kv(gc_grace_seconds: u32) -> TableSchema {
        TableSchema {
            id: 1,
            name: "kv".into(),
            partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Text }],
            clustering: vec![],
            columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Text }],
            options: TableOptions { gc_grace_seconds, ..TableOptions::default() },
        }
    }

    fn manual_compaction() -> ShardConfig {
        let compaction = CompactionConfig { strategy: StrategyKind::None, ..CompactionConfig::default() };
        ShardConfig { compaction, ..ShardConfig::default() }
    }

    async fn put(shard: &Shard, schema: &TableSchema, k: &str, v: &str, ts: Timestamp) {
        let columns = [("v", Some(Value::Text(v.into())))];
        let write = Write::upsert(schema, &[Value::Text(k.into())], &[], &columns, 0, true).unwrap();
        shard.apply(vec![write], Some(ts)).await.unwrap();
    }

    async fn delete(shard: &Shard, schema: &TableSchema, k: &str, ts: Timestamp) {
        let write = Write::delete(schema, &[Value::Text(k.into())], &[], &[]).unwrap();
        shard.apply(vec![write], Some(ts)).await.unwrap();
    }

    async fn visible(shard: &Shard, schema: &TableSchema, k: &str) -> usize {
        let key = PartitionKey::from_values(schema, &[Value::Text(k.into())]).unwrap();
        match shard.read(schema.id, &key, &ClusteringSlice::ALL).await.unwrap() {
            Some(p) => visible_rows(schema, &key, &p, now_secs()).unwrap().len(),
            None => 0,
        }
    }

    fn live(shard: &Shard, table: TableId) -> Vec<Rc<Sstable>> {
        shard.sstables.borrow().get(&table).cloned().unwrap_or_default()
    }

    fn wide() -> TableSchema {
        use wire::schema::{ClusteringColumn, ClusteringOrder};
        TableSchema {
            id: 1,
            name: "wide".into(),
            partition_key: vec![ColumnDef { name: "p".into(), ty: ColumnType::Int }],
            clustering: vec![ClusteringColumn {
                column: ColumnDef { name: "c".into(), ty: ColumnType::Int },
                order: ClusteringOrder::Asc,
            }],
            columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Text }],
            options: TableOptions::default(),
        }
    }

    fn wide_key(schema: &TableSchema, p: i32) -> PartitionKey {
        PartitionKey::from_values(schema, &[Value::Int(p)]).unwrap()
    }

    fn wide_ck(schema: &TableSchema, c: i32) -> ClusteringKey {
        ClusteringKey::from_values(schema, &[Value::Int(c)], true).unwrap()
    }

    /// The reference for a bounded read: the whole partition read, cut at the `limit`-th live
    /// row of `slice`.
    fn cut_reference(full: Option<Partition>, slice: &ClusteringSlice, limit: RowLimit) -> Option<Partition> {
        let mut want = full?.slice(slice);
        let mut live = 0;
        let last = want.rows.iter().find_map(|(k, r)| {
            live += usize::from(r.is_live(want.deletion, limit.now_secs));
            (live == limit.live_rows).then(|| k.clone())
        });
        if let Some(last) = last {
            want.truncate_after(&last);
        }
        Some(want)
    }

    /// A shard with small blocks holding [`fill_wide`]'s partition 7 of table 1 (`wide()`),
    /// with the schema and the key.
    async fn open_filled_wide(dir: &Path) -> (Rc<Shard>, TableSchema, PartitionKey) {
        let schema = wide();
        let mut config = manual_compaction();
        config.sstable.block_size = 256;
        let (shard, _) = Shard::open(0, dir, config, std::slice::from_ref(&schema)).await.unwrap();
        let key = wide_key(&schema, 7);
        fill_wide(&shard, &schema, &key).await;
        (shard, schema, key)
    }

    /// Writes partition `key` of `wide()` (and rows of its neighbours 6 and 8) over three
    /// SSTables and the MemTable: row deletions, cell tombstones and a partition deletion.
    async fn fill_wide(shard: &Shard, schema: &TableSchema, key: &PartitionKey) {
        // A fixed pseudo-random sequence (a 64-bit LCG): the test is the same every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut ts = 1_000i64;
        for round in 0..4 {
            let mut updates = Vec::new();
            for _ in 0..400 {
                ts += 1;
                let c = next(800) as i32;
                let row = match next(10) {
                    0 => Row { deletion: Some(Deletion { ts, deleted_at: 1 }), ..Row::default() },
                    1 => Row { cells: vec![(0, Cell::Tombstone { ts, deleted_at: 1 })], ..Row::default() },
                    _ => Row {
                        marker: Some(Cell::Live { ts, value: Vec::new() }),
                        deletion: None,
                        cells: vec![(0, Cell::Live { ts, value: format!("r{round}c{c}").into_bytes() })],
                    },
                };
                updates.push(PartitionUpdate {
                    table: 1,
                    key: key.clone(),
                    deletion: None,
                    rows: vec![(wide_ck(schema, c), row)],
                });
                // Another partition on either side in the same files.
                for p in [6, 8] {
                    let other = Row { marker: Some(Cell::Live { ts, value: Vec::new() }), ..Row::default() };
                    let rows = vec![(wide_ck(schema, c), other)];
                    updates.push(PartitionUpdate { table: 1, key: wide_key(schema, p), deletion: None, rows });
                }
            }
            if round == 2 {
                // Hides everything written before it, in the older SSTables too.
                let deletion = Some(Deletion { ts: ts - 200, deleted_at: 1 });
                updates.push(PartitionUpdate { table: 1, key: key.clone(), deletion, rows: Vec::new() });
            }
            shard.apply_stamped(updates, None).await.unwrap();
            if round < 3 {
                shard.flush().await.unwrap();
            }
        }
    }

    /// A wide partition spread over a MemTable and several SSTables of small blocks, with row
    /// deletions, cell tombstones and a partition deletion between them: a bounded read from
    /// any start with any limit returns exactly the matching part of the full read.
    #[test]
    fn bounded_reads_match_the_full_read_across_memtable_and_sstables() {
        let dir = tempfile::tempdir().unwrap();
        on_executor(dir.path(), |dir| async move {
            let (shard, schema, key) = open_filled_wide(&dir).await;
            assert_eq!(live(&shard, 1).len(), 3, "three SSTables and a MemTable");
            let full = shard.read(1, &key, &ClusteringSlice::ALL).await.unwrap();
            let now = now_secs();
            let live_rows = full
                .as_ref()
                .unwrap()
                .rows
                .values()
                .filter(|r| r.is_live(full.as_ref().unwrap().deletion, now))
                .count();
            assert!(live_rows > 100, "{live_rows} live rows");
            let bounds =
                |c: i32| [Bound::Unbounded, Bound::Included(wide_ck(&schema, c)), Bound::Excluded(wide_ck(&schema, c))];
            for start_at in [0, 1, 250, 399, 400, 777, 799, 900] {
                for start in bounds(start_at) {
                    for end in [Bound::Unbounded, Bound::Excluded(wide_ck(&schema, 600))] {
                        let slice = ClusteringSlice { start: start.clone(), end };
                        for live_rows in [1, 2, 7, 50, 1500, 5000] {
                            let limit = RowLimit { live_rows, now_secs: now };
                            let got = shard.read_limited(1, &key, &slice, limit).await.unwrap();
                            assert_eq!(got, cut_reference(full.clone(), &slice, limit), "{slice:?} limit {live_rows}");
                        }
                    }
                }
            }
            // Paging with bounded reads, each after where the last stopped, sees every live row once.
            let mut seen = Vec::new();
            let mut slice = ClusteringSlice::ALL;
            loop {
                let limit = RowLimit { live_rows: 13, now_secs: now };
                let page = shard.read_limited(1, &key, &slice, limit).await.unwrap();
                let Some(page) = page else { break };
                seen.extend(page.rows.iter().filter(|(_, r)| r.is_live(page.deletion, now)).map(|(k, _)| k.clone()));
                match crate::row::limited_cut(Some(&page), Some(crate::row::SliceLimit::rows(13))) {
                    Some(after) => slice = ClusteringSlice { start: Bound::Excluded(after), end: Bound::Unbounded },
                    None => break,
                }
            }
            let full = full.unwrap();
            let want: Vec<_> =
                full.rows.iter().filter(|(_, r)| r.is_live(full.deletion, now)).map(|(k, _)| k.clone()).collect();
            assert_eq!(seen, want);
            shard.close().await.unwrap();
        });
    }

    /// Token scans bounded to a few rows page through wide partitions spread over a MemTable
    /// and SSTables: no answer holds more rows than its bound, each resumes where the last
    /// stopped (inside a partition too), and together they hold exactly the whole scan.
    #[test]
    fn bounded_scans_page_inside_wide_partitions() {
        let dir = tempfile::tempdir().unwrap();
        on_executor(dir.path(), |dir| async move {
            let (shard, _, _) = open_filled_wide(&dir).await;
            let whole = shard.scan(1, i64::MIN, i64::MAX, None, 100, ScanBound::WHOLE).await.unwrap();
            assert_eq!(whole.resume, None, "three partitions, all of them");
            assert!(whole.partitions.iter().any(|(_, p)| p.rows.len() > 500), "a wide partition");
            for (rows, bytes) in [(37, usize::MAX), (1, usize::MAX), (1000, 2000), (usize::MAX, 1)] {
                let bound = ScanBound::new(rows, bytes);
                let mut got: Vec<(PartitionKey, Partition)> = Vec::new();
                let mut resume = None;
                let mut answers = 0;
                loop {
                    let page = shard.scan(1, i64::MIN, i64::MAX, resume.clone(), 2, bound).await.unwrap();
                    let stored: usize = page.partitions.iter().map(|(_, p)| p.rows.len()).sum();
                    assert!(stored <= rows.max(1), "{stored} rows in an answer bounded to {rows}");
                    assert!(page.partitions.len() <= 2);
                    for (k, p) in page.partitions {
                        match got.last_mut() {
                            Some((last, merged)) if *last == k => merged.merge(p),
                            _ => got.push((k, p)),
                        }
                    }
                    answers += 1;
                    assert!(answers < 100_000, "bounded scans progress");
                    match page.resume {
                        Some(r) => resume = Some(r),
                        None => break,
                    }
                }
                assert_eq!(got, whole.partitions, "bound {rows} rows, {bytes} bytes");
                assert!(answers > 2, "the wide partition took several answers");
            }
            shard.close().await.unwrap();
        });
    }

    /// A page deep in a wide partition of one SSTable reads the partition's header block and
    /// the few blocks the page needs, not the blocks before it.
    #[test]
    fn a_bounded_read_deep_in_a_wide_partition_reads_a_few_blocks() {
        let dir = tempfile::tempdir().unwrap();
        on_executor(dir.path(), |dir| async move {
            let schema = wide();
            let mut config = manual_compaction();
            config.sstable.block_size = 512;
            let (shard, _) = Shard::open(0, &dir, config, std::slice::from_ref(&schema)).await.unwrap();
            let key = wide_key(&schema, 1);
            let rows = (0..5000)
                .map(|c| {
                    let row = Row { marker: Some(Cell::Live { ts: 10, value: Vec::new() }), ..Row::default() };
                    (wide_ck(&schema, c), row)
                })
                .collect();
            shard
                .apply_stamped(vec![PartitionUpdate { table: 1, key: key.clone(), deletion: None, rows }], None)
                .await
                .unwrap();
            shard.flush().await.unwrap();
            let sst = live(&shard, 1)[0].clone();
            assert!(sst.meta().data_blocks > 100, "{} blocks", sst.meta().data_blocks);
            let touched = |s: SstableReadStats| s.blocks_read + s.cache_hits;
            let before = touched(sst.stats());
            let slice = ClusteringSlice { start: Bound::Excluded(wide_ck(&schema, 4000)), end: Bound::Unbounded };
            let limit = RowLimit { live_rows: 10, now_secs: now_secs() };
            let page = shard.read_limited(1, &key, &slice, limit).await.unwrap().unwrap();
            let keys: Vec<_> = page.rows.keys().cloned().collect();
            assert_eq!(keys, (4001..4011).map(|c| wide_ck(&schema, c)).collect::<Vec<_>>());
            let blocks = touched(sst.stats()) - before;
            assert!(blocks <= 3, "the page touched {blocks} blocks");
            shard.close().await.unwrap();
        });
    }

    /// Old live data in an SSTable outside the compaction keeps an expired (past gc grace)
    /// tombstone alive; once that SSTable takes part, the tombstone and the data go together.
    #[test]
    fn a_tombstone_shadowing_data_outside_the_compaction_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        on_executor(dir.path(), |dir| async move {
            let schema = kv(0);
            let (shard, _) = Shard::open(0, &dir, manual_compaction(), std::slice::from_ref(&schema)).await.unwrap();
            put(&shard, &schema, "x", "old", 100).await;
            shard.flush().await.unwrap(); // SSTable A: x = old @100
            delete(&shard, &schema, "x", 200).await;
            put(&shard, &schema, "y", "other", 200).await;
            shard.flush().await.unwrap(); // SSTable B: x deleted @200, y
                                          // gc grace 0: the tombstone is purgeable once its second has passed.
            glommio::timer::sleep(Duration::from_millis(1100)).await;
            let newest = live(&shard, 1)[0].clone();
            assert!(newest.meta().tombstones > 0);

            let report = shard.run_compaction(1, vec![newest], None).await.unwrap();
            assert_eq!(report.purged.tombstones, 0, "{report:?}");
            assert_eq!(report.purged.kept_for_older_data, 1, "{report:?}");
            assert_eq!(visible(&shard, &schema, "x").await, 0, "the deleted value must not come back");

            let report = shard.run_compaction(1, live(&shard, 1), None).await.unwrap();
            assert_eq!((report.purged.tombstones, report.purged.kept_for_older_data), (1, 0), "{report:?}");
            assert_eq!((report.sstables_in, report.sstables_out, report.partitions_out), (2, 1, 1), "{report:?}");
            assert_eq!(visible(&shard, &schema, "x").await, 0);
            assert_eq!(visible(&shard, &schema, "y").await, 1);
            let out = live(&shard, 1);
            assert_eq!(out.len(), 1);
            assert_eq!((out[0].meta().tombstones, out[0].meta().partitions), (0, 1), "only y is left on disk");
            shard.close().await.unwrap();
        });
    }

    /// A cleanup keeps exactly the partitions whose token is owned, drops the others from the
    /// SSTables (the MemTable is flushed first), and leaves an SSTable holding nothing else as
    /// it was.
    #[test]
    fn cleanup_drops_the_partitions_whose_token_is_not_owned() {
        let dir = tempfile::tempdir().unwrap();
        on_executor(dir.path(), |dir| async move {
            let schema = kv(864_000);
            let (shard, _) = Shard::open(0, &dir, manual_compaction(), std::slice::from_ref(&schema)).await.unwrap();
            let names: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
            for name in &names[..40] {
                put(&shard, &schema, name, "v", 100).await;
            }
            shard.flush().await.unwrap();
            for name in &names[40..] {
                put(&shard, &schema, name, "v", 100).await; // still in the MemTable
            }
            let token = |name: &str| PartitionKey::from_values(&schema, &[Value::Text(name.into())]).unwrap().token();
            let owned = OwnedRanges::new(vec![(i64::MIN + 1, 0)]).unwrap();
            let kept = names.iter().filter(|n| owned.contains(token(n))).count();
            assert!(kept > 10 && kept < 54, "{kept} of 64 owned");
            let report = shard.cleanup(1, owned.clone()).await.unwrap();
            assert_eq!(report.partitions_not_owned as usize, 64 - kept, "{report:?}");
            assert_eq!(report.partitions_out as usize, kept, "{report:?}");
            assert_eq!((report.sstables_in, report.compactions), (2, 2), "{report:?}");
            // Files are written in whole blocks: a few dropped partitions need not shrink them.
            assert!(report.bytes_out <= report.bytes_in, "{report:?}");
            for name in &names {
                assert_eq!(visible(&shard, &schema, name).await, usize::from(owned.contains(token(name))), "{name}");
            }
            let on_disk: u64 = live(&shard, 1).iter().map(|s| s.meta().partitions).sum();
            assert_eq!(on_disk as usize, kept);
            // A second cleanup finds nothing to drop: the SSTables stay as they are.
            let generations: Vec<u64> = live(&shard, 1).iter().map(|s| s.meta().generation).collect();
            let report = shard.cleanup(1, owned).await.unwrap();
            assert_eq!((report.compactions, report.partitions_not_owned), (0, 0), "{report:?}");
            assert_eq!(live(&shard, 1).iter().map(|s| s.meta().generation).collect::<Vec<_>>(), generations);
            assert!(matches!(shard.cleanup(9, OwnedRanges::default()).await, Err(ShardError::UnknownTable(9))));
            shard.close().await.unwrap();
        });
    }

    /// The same with the older data in the MemTable (a late write with an old timestamp).
    #[test]
    fn a_tombstone_shadowing_memtable_data_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        on_executor(dir.path(), |dir| async move {
            let schema = kv(0);
            let (shard, _) = Shard::open(0, &dir, manual_compaction(), std::slice::from_ref(&schema)).await.unwrap();
            delete(&shard, &schema, "x", 200).await;
            shard.flush().await.unwrap();
            put(&shard, &schema, "x", "late", 100).await; // older than the deletion: hidden
            glommio::timer::sleep(Duration::from_millis(1100)).await;
            let report = shard.run_compaction(1, live(&shard, 1), None).await.unwrap();
            assert_eq!(report.purged.kept_for_older_data, 1, "{report:?}");
            assert_eq!(visible(&shard, &schema, "x").await, 0);
            shard.flush().await.unwrap();
            assert_eq!(visible(&shard, &schema, "x").await, 0);
            // Everything of x is now inside one compaction: nothing is left of it.
            let report = shard.run_compaction(1, live(&shard, 1), None).await.unwrap();
            assert_eq!((report.purged.tombstones, report.partitions_out, report.sstables_out), (1, 0, 0), "{report:?}");
            assert!(live(&shard, 1).is_empty());
            assert_eq!(visible(&shard, &schema, "x").await, 0);
            shard.close().await.unwrap();
        });
    }

    /// Inside gc grace nothing is purged, even with nothing outside the compaction.
    #[test]
    fn tombstones_within_gc_grace_survive_major_compaction() {
        let dir = tempfile::tempdir().unwrap();
        on_executor(dir.path(), |dir| async move {
            let schema = kv(864_000);
            let (shard, _) = Shard::open(0, &dir, manual_compaction(), std::slice::from_ref(&schema)).await.unwrap();
            put(&shard, &schema, "x", "old", 100).await;
            shard.flush().await.unwrap();
            delete(&shard, &schema, "x", 200).await;
            let report = shard.compact_major(None).await.unwrap();
            assert_eq!((report.sstables_in, report.sstables_out, report.purged.tombstones), (2, 1, 0), "{report:?}");
            assert_eq!(live(&shard, 1)[0].meta().tombstones, 1);
            assert_eq!(visible(&shard, &schema, "x").await, 0);
            let stats = shard.stats().compaction;
            assert_eq!((stats.completed, stats.sstables_in, stats.sstables_out), (1, 2, 1), "{stats:?}");
            shard.close().await.unwrap();
        });
    }
}

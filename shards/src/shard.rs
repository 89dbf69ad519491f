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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use glommio::{Latency, Shares};
use wire::schema::{TableId, TableSchema};
use wire::Token;

use crate::cell::Timestamp;
use crate::hlc::{Hlc, HlcError, SystemClock};
use crate::key::PartitionKey;
use crate::manifest::{sstable_file_name, Manifest, ManifestError, SstableEntry, SSTABLE_DIR};
use crate::memtable::MemTable;
use crate::mutation::{decode_batch, encode_batch, PartitionUpdate, Write};
use crate::read::now_secs;
use crate::row::{ClusteringSlice, Partition};
use crate::signal::Signal;
use crate::sstable::{
    BlockCache, CacheStats, Sstable, SstableConfig, SstableError, SstableReadStats, SstableScan, SstableWriter,
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
    #[error("sstable: {0}")]
    Sstable(#[from] SstableError),
    #[error("manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("shard {shard} cannot take writes: flushing MemTables failed ({reason}) and {waiting} are waiting")]
    FlushFailed { shard: u16, reason: String, waiting: usize },
    #[error("shard {0} is closing")]
    Closing(u16),
    #[error("quarantining {path}: {source}")]
    Quarantine { path: PathBuf, source: std::io::Error },
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
    pub flushes: u64,
    pub sstables: usize,
    pub sstable_bytes: u64,
    pub wal: WalStats,
    pub cache: CacheStats,
    /// Read counters summed over the live SSTables.
    pub sstable_reads: SstableReadStats,
    pub flush_error: Option<String>,
}

/// The MemTables that take the writes logged between two flush points.
#[derive(Default)]
struct Generation {
    tables: RefCell<AHashMap<TableId, MemTable>>,
    /// Writes logged into this generation whose acknowledgement has not applied them yet.
    in_flight: Cell<usize>,
    drained: Signal,
}

impl Generation {
    fn bytes(&self) -> usize {
        self.tables.borrow().values().map(MemTable::bytes).sum()
    }

    fn apply(&self, updates: Vec<PartitionUpdate>) {
        let mut tables = self.tables.borrow_mut();
        for update in updates {
            tables.entry(update.table).or_default().apply(update);
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

struct Immutable {
    generation: Rc<Generation>,
    /// Every WAL record up to here was logged into this generation or an older one.
    flushed_through: Lsn,
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
    flush_error: RefCell<Option<String>>,
    flushes: Cell<u64>,
    closing: Cell<bool>,
    flush_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
    writes: Cell<u64>,
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
        let mut manifest = Manifest::load(dir)?;
        manifest.remove_leftovers(dir)?;
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
        let (wal, replay) = Wal::open(&dir.join("wal"), config.wal.clone(), |lsn, payload| {
            if lsn <= flushed_through {
                return Ok(()); // already in an SSTable; the segment outlived its flush
            }
            let updates = decode_batch(payload).map_err(|e| WalError::Apply(format!("record {lsn}: {e}")))?;
            for update in &updates {
                if !known.contains_key(&update.table) {
                    return Err(WalError::Apply(format!("record {lsn}: unknown table id {}", update.table)));
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
        let report = OpenReport {
            wal: replay,
            applied_records,
            sstables: sstables.values().map(Vec::len).sum(),
            quarantined: quarantined.into_iter().map(|(_, p)| p).collect(),
        };
        if max_seen > i64::MIN && hlc.advance_past(max_seen) {
            tracing::warn!(
                shard = id,
                max_seen,
                "stored timestamps are ahead of the wall clock beyond the drift bound"
            );
        }
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
        if updates.is_empty() {
            return Ok(ts);
        }
        self.make_room().await?;
        let mut payload = Vec::new();
        encode_batch(&updates, &mut payload);
        // The record gets its LSN now, in call order, in the generation active now; the await
        // is for durability, after which the write is applied to that same generation.
        let in_flight = InFlight::enter(self.active.borrow().clone());
        self.wal.append(&payload).await?;
        in_flight.0.apply(updates);
        drop(in_flight);
        self.writes.set(self.writes.get() + 1);
        Ok(ts)
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
            if let Some(reason) = self.flush_error.borrow().clone() {
                return Err(ShardError::FlushFailed { shard: self.id, reason, waiting });
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
            Some(reason) if self.flushes.get() < target => {
                Err(ShardError::FlushFailed { shard: self.id, reason, waiting: self.immutables.borrow().len() })
            }
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
                    tracing::error!(shard = self.id, error = %e, "flush failed; retrying");
                    *self.flush_error.borrow_mut() = Some(e.to_string());
                    self.flush_state.notify_all();
                    glommio::timer::sleep(RETRY_AFTER).await;
                }
            }
        }
    }

    async fn flush_generation(&self, generation: &Generation, flushed_through: Lsn) -> Result<(), ShardError> {
        let mut tables: Vec<TableId> = generation.tables.borrow().keys().copied().collect();
        tables.sort_unstable();
        let mut written: Vec<(SstableEntry, Rc<Sstable>)> = Vec::new();
        let mut next_generation = self.manifest.borrow().next_generation;
        for table in tables {
            let result = self.write_sstable(generation, table, next_generation).await;
            next_generation += 1;
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
        let mut next = self.manifest.borrow().clone();
        next.version += 1;
        next.flushed_through = next.flushed_through.max(flushed_through);
        next.next_generation = next_generation;
        next.sstables.extend(written.iter().map(|(entry, _)| *entry));
        next.save(&self.dir)?;
        // Published in one step with dropping the generation: readers see the rows in exactly
        // one of the two places.
        {
            let mut sstables = self.sstables.borrow_mut();
            for (entry, sst) in written {
                sstables.entry(entry.table).or_default().insert(0, sst);
            }
            *self.manifest.borrow_mut() = next;
            self.immutables.borrow_mut().pop_front();
            self.flushes.set(self.flushes.get() + 1);
        }
        self.flush_state.notify_all();
        let released = self.wal.release_through(flushed_through).await?;
        tracing::debug!(shard = self.id, flushed_through, released, "flushed a MemTable generation");
        Ok(())
    }

    /// Writes one table's MemTable of a frozen generation as SSTable `sst_generation`.
    async fn write_sstable(
        &self,
        generation: &Generation,
        table: TableId,
        sst_generation: u64,
    ) -> Result<Option<(SstableEntry, Rc<Sstable>)>, ShardError> {
        /// Partitions copied out of the MemTable per step, so no borrow is held across I/O.
        const CHUNK: usize = 256;
        let partitions = generation.tables.borrow().get(&table).map_or(0, MemTable::partitions);
        if partitions == 0 {
            return Ok(None);
        }
        let path = self.dir.join(SSTABLE_DIR).join(sstable_file_name(table, sst_generation));
        let mut writer =
            SstableWriter::create(&path, table, self.id, sst_generation, partitions, &self.config.sstable).await?;
        let mut after: Option<PartitionKey> = None;
        loop {
            let chunk: Vec<(PartitionKey, Partition)> = {
                let tables = generation.tables.borrow();
                let Some(memtable) = tables.get(&table) else { break };
                memtable.range(i64::MIN, i64::MAX, after.as_ref()).take(CHUNK).collect()
            };
            // The minimum token holds no real key, so (MIN, MAX] covers every partition.
            let Some((last, _)) = chunk.last() else { break };
            after = Some(last.clone());
            for (key, partition) in &chunk {
                if let Err(e) = writer.add(key, partition).await {
                    writer.abort().await;
                    return Err(e.into());
                }
            }
            glommio::yield_if_needed().await;
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
        let mut found = None;
        self.active.borrow().merge_into(table, key, slice, &mut found);
        for imm in self.immutables.borrow().iter() {
            imm.generation.merge_into(table, key, slice, &mut found);
        }
        let sstables: Vec<Rc<Sstable>> = self.sstables.borrow().get(&table).cloned().unwrap_or_default();
        // read_partition checks the token range and the bloom filter first (and counts both).
        for sst in &sstables {
            if let Some(p) = sst.read_partition(key, slice).await? {
                merge_found(&mut found, p);
            }
        }
        Ok(found)
    }

    /// Up to `limit` partitions with tokens in (start, end] and keys after `after` (paging),
    /// in storage order, merged from the MemTables and SSTables. Streams the SSTables: memory
    /// is bounded by `limit` partitions per source.
    pub async fn scan(
        &self,
        table: TableId,
        start: Token,
        end: Token,
        after: Option<PartitionKey>,
        limit: usize,
    ) -> Result<Vec<(PartitionKey, Partition)>, ShardError> {
        if !self.schemas.borrow().contains_key(&table) {
            return Err(ShardError::UnknownTable(table));
        }
        let mut sources: Vec<ScanSource> = Vec::new();
        let generations: Vec<Rc<Generation>> = std::iter::once(self.active.borrow().clone())
            .chain(self.immutables.borrow().iter().map(|i| i.generation.clone()))
            .collect();
        for g in generations {
            let tables = g.tables.borrow();
            let Some(memtable) = tables.get(&table) else { continue };
            let page: VecDeque<_> = memtable.range(start, end, after.as_ref()).take(limit).collect();
            sources.push(ScanSource::Memory(page));
        }
        let sstables: Vec<Rc<Sstable>> = self.sstables.borrow().get(&table).cloned().unwrap_or_default();
        for sst in sstables {
            let mut scan = sst.scan(start, end, after.clone());
            let head = scan.next().await?;
            sources.push(ScanSource::Disk { scan, head });
        }
        let mut out: Vec<(PartitionKey, Partition)> = Vec::new();
        while out.len() < limit {
            let Some(min) = sources.iter().filter_map(ScanSource::head_key).min().cloned() else { break };
            let mut merged: Option<Partition> = None;
            for source in &mut sources {
                if source.head_key() == Some(&min) {
                    merge_found(&mut merged, source.pop().await?);
                }
            }
            if let Some(partition) = merged {
                out.push((min, partition));
            }
        }
        Ok(out)
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
                .map(|g| g.tables.borrow().values().map(MemTable::partitions).sum::<usize>())
                .sum(),
            writes: self.writes.get(),
            flushes: self.flushes.get(),
            sstables: sstables.values().map(Vec::len).sum(),
            sstable_bytes: sstables.values().flatten().map(|s| s.file_size()).sum(),
            wal: self.wal.stats(),
            cache: self.cache.stats(),
            sstable_reads: sstables.values().flatten().fold(SstableReadStats::default(), |mut total, s| {
                total.add(&s.stats());
                total
            }),
            flush_error: self.flush_error.borrow().clone(),
        }
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
        let task = self.flush_task.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
        match Rc::try_unwrap(self) {
            Ok(shard) => Ok(shard.wal.close().await?),
            // Someone still holds the shard (a request in flight): sync what is logged.
            Err(shard) => shard.sync().await,
        }
    }
}

/// Moves a corrupt SSTable out of the live set into `<shard>/quarantine/`, never deleting it.
fn quarantine_sstable(shard_dir: &Path, path: &Path, why: &SstableError) -> Result<(), ShardError> {
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

enum ScanSource {
    Memory(VecDeque<(PartitionKey, Partition)>),
    Disk { scan: SstableScan, head: Option<(PartitionKey, Partition)> },
}

impl ScanSource {
    fn head_key(&self) -> Option<&PartitionKey> {
        match self {
            ScanSource::Memory(page) => page.front().map(|(k, _)| k),
            ScanSource::Disk { head, .. } => head.as_ref().map(|(k, _)| k),
        }
    }

    /// Takes the head partition and advances. Only called when there is a head.
    async fn pop(&mut self) -> Result<Partition, ShardError> {
        match self {
            ScanSource::Memory(page) => Ok(page.pop_front().map(|(_, p)| p).unwrap_or_default()),
            ScanSource::Disk { scan, head } => {
                let taken = head.take().map(|(_, p)| p).unwrap_or_default();
                *head = scan.next().await?;
                Ok(taken)
            }
        }
    }
}

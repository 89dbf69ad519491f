//! The embedded node: one glommio executor per shard in this process, each owning its shard
//! outright, and a thread-safe handle that routes each partition's work to its shard by token
//! over flume channels. The server's coordinator builds on the same handle.
//!
//! Shards never share memory: they are reached only through their request channels, whose
//! capacity bounds the work queued at each shard. Code running on a shard's own executor (the
//! server's coordinator on shard 0) reaches that shard directly, without a channel hop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use wire::ring::Ring;
use wire::schema::{TableId, TableSchema};
use wire::{Token, Value};

use crate::catalog::{Catalog, CatalogError, DropRecord, SchemaChanges, TableEntry};
use crate::cell::Timestamp;
use crate::compaction::{CompactionReport, OwnedRanges};
use crate::hlc::{SystemClock, WallClock};
use crate::key::{ClusteringKey, KeyError, PartitionKey};
use crate::mutation::{PartitionUpdate, UpdateError, Write, WriteError};
use crate::node_meta::{NodeMeta, NodeMetaError};
use crate::read::{now_secs, visible_rows, ResultRow};
use crate::row::{ClusteringSlice, Partition, SliceLimit};
use crate::scan::{merge_disjoint, ScanBound, ScanPage, ScanResume};
use crate::shard::{self, Shard, ShardConfig, ShardError, ShardStats};
use crate::slice::RowLimit;

/// Settings of an embedded node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// Shard (executor) count; fixed when the data directory is created.
    pub shards: usize,
    /// Vnode tokens per shard, chosen at random when the directory is created.
    pub num_tokens: usize,
    /// Pin shard i to CPU i (production); unpinned for local clusters and tests.
    pub pin_shards: bool,
    /// Memory each executor registers with io_uring (bounded by `ulimit -l`; docs/GLOMMIO.md, memory).
    pub io_memory: usize,
    /// Busy-wait before parking an idle executor: trades CPU for cross-core wake-up latency
    /// (docs/GLOMMIO.md, pitfall 4). None parks at once.
    pub spin_before_park: Option<Duration>,
    /// Bound on requests queued at each shard.
    pub channel_capacity: usize,
    /// How long a task queue runs before the executor polls for I/O and lets the other queues
    /// run: the longest a flush or compaction step (which yields when asked) holds the CPU
    /// from requests. glommio's default is 100 ms (docs/GLOMMIO.md, pitfall 6).
    pub task_quota: Duration,
    pub shard: ShardConfig,
}

/// Default [`NodeConfig::task_quota`]: 0.5 ms, as ScyllaDB's task quota.
pub const DEFAULT_TASK_QUOTA: Duration = Duration::from_micros(500);

impl NodeConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            num_tokens: 8,
            pin_shards: false,
            io_memory: 512 * 1024,
            spin_before_park: None,
            channel_capacity: 1024,
            task_quota: DEFAULT_TASK_QUOTA,
            shard: ShardConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("data directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error(transparent)]
    Meta(#[from] NodeMetaError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("unknown table '{0}'")]
    UnknownTable(String),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("invalid write: {0}")]
    InvalidUpdate(#[from] UpdateError),
    #[error("shard {shard}: {source}")]
    Shard { shard: u16, source: ShardError },
    #[error("shard {shard} failed to start: {reason}")]
    ShardStart { shard: u16, reason: String },
    #[error("shard {0} has stopped")]
    ShardStopped(u16),
    #[error("the node is drained: it takes no writes until it restarts")]
    Drained,
    #[error(
        "data directory {dir} holds data ({evidence}) but no node.meta: starting would give this node a \
         new host id and tokens and hide its rows. Restore node.meta from a backup; to start a new node \
         here, move the old data away first"
    )]
    IdentityMissing { dir: PathBuf, evidence: String },
    #[error(
        "data directory {dir} has no {missing} although its other shards hold data: shard {shard}'s rows \
         on this node would be gone. Restore the directory from a backup; to start with that shard empty \
         (repair brings back replicated rows), create the empty directory {missing} first"
    )]
    ShardDirMissing { dir: PathBuf, shard: u16, missing: PathBuf },
    #[error("the disk holding {dir} is full, so the node did not start ({reason}); free space and start it again")]
    DiskFull { dir: PathBuf, reason: String },
}

/// How a shard that failed to open on a full disk says so across its start-up channel.
const DISK_FULL_MARK: &str = "the disk is full";

/// The directory of shard `shard` inside a node directory.
pub fn shard_dir(node_dir: &Path, shard: usize) -> PathBuf {
    node_dir.join(format!("shard-{shard:03}"))
}

/// What a node directory holds that only a node that ran can have written, if anything: the
/// catalog, or a shard directory (of any number) with a manifest, an SSTable or a WAL segment.
/// None for a new directory.
fn data_evidence(dir: &Path) -> Option<String> {
    if dir.join(crate::catalog::CATALOG_FILE).exists() {
        return Some(crate::catalog::CATALOG_FILE.to_owned());
    }
    let entries = std::fs::read_dir(dir).ok()?;
    entries.filter_map(Result::ok).find_map(|entry| {
        let name = entry.file_name().into_string().ok()?;
        let what = name.starts_with("shard-").then(|| shard_data(&entry.path())).flatten()?;
        Some(format!("{name}/{what}"))
    })
}

/// The first thing in a shard directory that only a running shard writes.
fn shard_data(shard_dir: &Path) -> Option<&'static str> {
    let non_empty = |sub: &str| std::fs::read_dir(shard_dir.join(sub)).is_ok_and(|mut d| d.next().is_some());
    // A manifest never edited (version 0) is the one every new shard saves at once.
    let edited = |m: &crate::manifest::Manifest| m.version > 0;
    if crate::manifest::Manifest::read(shard_dir).map_or(true, |m| m.is_some_and(|m| edited(&m))) {
        Some(crate::manifest::MANIFEST_FILE)
    } else if non_empty(crate::manifest::SSTABLE_DIR) {
        Some(crate::manifest::SSTABLE_DIR)
    } else if non_empty("wal") {
        Some("wal")
    } else {
        None
    }
}

/// Whether opening `dir` would create a new identity (host id and tokens): it has no
/// `node.meta`. Makes the checks `Node::open` makes first, so a directory that holds data
/// without `node.meta` is refused here as there. The server asks before opening: a node's
/// first boot into a cluster checks with the seeds that its address is not a member's.
pub fn needs_new_identity(dir: &Path) -> Result<bool, NodeError> {
    check_complete(dir)?;
    Ok(NodeMeta::existing_shard_count(dir)?.is_none())
}

/// Refuses a node directory that lost its identity or a shard while it holds data. Data is
/// written only once every shard has opened, and the first open writes `node.meta` before
/// any shard directory exists, so a directory with data always had both: their absence is
/// an operator's slip or a disk fault, never a crash during the first start.
fn check_complete(dir: &Path) -> Result<(), NodeError> {
    let existing = NodeMeta::existing_shard_count(dir)?;
    let Some(count) = existing else {
        return match data_evidence(dir) {
            Some(evidence) => Err(NodeError::IdentityMissing { dir: dir.to_path_buf(), evidence }),
            None => Ok(()),
        };
    };
    let holds_data = (0..count).any(|shard| shard_data(&shard_dir(dir, shard)).is_some());
    if let Some(shard) = (0..count).find(|shard| !shard_dir(dir, *shard).is_dir()).filter(|_| holds_data) {
        return Err(NodeError::ShardDirMissing {
            dir: dir.to_path_buf(),
            shard: shard as u16,
            missing: shard_dir(dir, shard),
        });
    }
    Ok(())
}

enum Request {
    Apply {
        writes: Vec<Write>,
        ts: Option<Timestamp>,
        reply: flume::Sender<Result<Timestamp, ShardError>>,
    },
    ApplyStamped {
        updates: Vec<PartitionUpdate>,
        /// The updates as encoded on arrival, logged as they are (see `Shard::apply_stamped`).
        encoded: Option<Vec<u8>>,
        reply: flume::Sender<Result<(), ShardError>>,
    },
    Read {
        table: TableId,
        key: PartitionKey,
        slice: ClusteringSlice,
        /// Stop after this many live rows or stored bytes (`Shard::read_limited`); None: the
        /// whole slice.
        limit: Option<SliceLimit>,
        reply: flume::Sender<Result<Option<Partition>, ShardError>>,
    },
    Scan {
        table: TableId,
        start: Token,
        end: Token,
        resume: Option<ScanResume>,
        limit: usize,
        bound: ScanBound,
        reply: flume::Sender<Result<ScanPage, ShardError>>,
    },
    Flush {
        reply: flume::Sender<Result<(), ShardError>>,
    },
    Compact {
        /// One table, or every table.
        table: Option<TableId>,
        reply: flume::Sender<Result<CompactionReport, ShardError>>,
    },
    Cleanup {
        table: TableId,
        /// The token ranges the shard keeps.
        owned: OwnedRanges,
        reply: flume::Sender<Result<CompactionReport, ShardError>>,
    },
    DropTable {
        table: TableId,
        reply: flume::Sender<Result<(), ShardError>>,
    },
    Truncate {
        table: TableId,
        reply: flume::Sender<Result<(), ShardError>>,
    },
    AddTable {
        schema: TableSchema,
        reply: flume::Sender<()>,
    },
    Stats {
        reply: flume::Sender<ShardStats>,
    },
    Sync {
        reply: flume::Sender<Result<(), ShardError>>,
    },
    Shutdown {
        reply: flume::Sender<Result<(), ShardError>>,
    },
    /// Several requests from one executor's round of tasks, in one message.
    Many(Vec<Request>),
}

/// Work a caller runs on one shard's executor next to that shard (the server's coordinator):
/// built on the executor thread from the node's handle once every shard has opened.
pub type LocalService = Box<dyn FnOnce(Node) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// Tells nodes of one process apart (tests open several), so that a shard is only ever
/// reached directly by handles of its own node.
static NEXT_NODE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The shard this executor thread runs, with its node's id; None on other threads.
    static LOCAL_SHARD: RefCell<Option<(u64, Rc<Shard>)>> = const { RefCell::new(None) };
    /// Requests a shard's executor has queued for other shards in the current round of tasks,
    /// per destination channel. They leave as one channel message per destination when the
    /// round ends, so a burst of requests costs one cross-core wake-up, not one each. Bounded
    /// by what the executor's tasks issue in one round (their own limits bound them).
    static OUTBOX: RefCell<Vec<(flume::Sender<Request>, Vec<Request>)>> = const { RefCell::new(Vec::new()) };
}

struct Inner {
    /// From NEXT_NODE_ID.
    id: u64,
    dir: PathBuf,
    /// From the directory's `node.meta`.
    host_id: u128,
    /// This start's generation (`node.meta`), above every earlier start's.
    generation: u64,
    /// The largest write timestamp any shard held when the node opened.
    max_stored_timestamp: Option<Timestamp>,
    ring: Ring<u16>,
    /// Set by [`Node::drain`]; writes are refused from then on.
    drained: AtomicBool,
    /// Stored rows readers skipped because they do not decode under their table's schema
    /// (see `read::visible_rows_skipping`), since the node started.
    undecodable_rows: AtomicU64,
    senders: Vec<flume::Sender<Request>>,
    /// DDL only: serializes catalog changes and their persistence.
    catalog: Mutex<Catalog>,
    /// `catalog.version()` as of the last finished DDL or schema merge. The coordinator reads
    /// it on every EXECUTE (to re-plan prepared statements after a schema change), so it is
    /// computed once per change, not per read (hashing the catalog costs a few microseconds).
    schema_version: AtomicU64,
    /// Held by each DDL and schema merge from its catalog change until every shard applied it.
    ddl: DdlLock,
    /// Read per request to resolve names; written only by DDL.
    tables: RwLock<HashMap<String, Arc<TableSchema>>>,
    threads: Mutex<Vec<glommio::ExecutorJoinHandle<()>>>,
    /// Held (flock) from open until shutdown has stopped every shard.
    lock: Mutex<Option<std::fs::File>>,
}

impl Drop for Inner {
    /// The last handle is gone without a shutdown: closing the channels ends every shard's
    /// loop (which syncs and closes its WAL); wait for that before the LOCK is released.
    fn drop(&mut self) {
        self.senders.clear();
        for t in std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner())) {
            let _ = t.join();
        }
    }
}

/// A handle to an embedded node; cheap to clone and usable from any thread or executor.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// What opening a node found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    pub shards: usize,
    /// One per shard, in shard order.
    pub shard_reports: Vec<shard::OpenReport>,
}

impl Node {
    /// Opens (creating if needed) the node directory and starts one executor per shard; each
    /// replays its WAL before this returns. Blocks the calling thread.
    pub fn open(config: NodeConfig) -> Result<(Node, OpenReport), NodeError> {
        Node::open_with_service(config, None)
    }

    /// [`Node::open`], and once every shard is open, runs `service` on the executor of shard
    /// `.0` (as a task beside the shard's request loop). The service ends with that executor,
    /// when the node shuts down; it should stop its own work first.
    pub fn open_with_service(
        config: NodeConfig,
        service: Option<(u16, LocalService)>,
    ) -> Result<(Node, OpenReport), NodeError> {
        let mut service = service;
        Node::open_with_services(config, &mut |shard, _| service.take_if(|(at, _)| *at == shard).map(|(_, s)| s))
    }

    /// [`Node::open`], and once every shard is open, runs on each shard's executor the service
    /// `services(shard, shard_count)` returns for it, if any (the server's front door on every
    /// shard). `services` is called on this thread once per shard, in shard order, before that
    /// shard's executor starts; each service ends with its executor, when the node shuts down.
    pub fn open_with_services(
        config: NodeConfig,
        services: &mut dyn FnMut(u16, usize) -> Option<LocalService>,
    ) -> Result<(Node, OpenReport), NodeError> {
        let dir = config.data_dir.clone();
        Node::open_all(config, services).map_err(|e| match e {
            e @ NodeError::ShardStart { .. } if e.to_string().contains(DISK_FULL_MARK) => {
                NodeError::DiskFull { dir, reason: e.to_string() }
            }
            e if crate::io::caused_by_full_disk(&e) => NodeError::DiskFull { dir, reason: e.to_string() },
            e => e,
        })
    }

    fn open_all(
        config: NodeConfig,
        services: &mut dyn FnMut(u16, usize) -> Option<LocalService>,
    ) -> Result<(Node, OpenReport), NodeError> {
        let node_id = NEXT_NODE_ID.fetch_add(1, Ordering::Relaxed);
        let dir = config.data_dir.clone();
        let dir_err = |source| NodeError::DataDir { path: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(dir_err)?;
        let lock = std::fs::File::create(dir.join("LOCK")).map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(NodeError::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        check_complete(&dir)?;
        let meta = NodeMeta::load_or_create(&dir, config.shards, config.num_tokens)?;
        let catalog = Catalog::load(&dir)?;
        let schemas = catalog.tables();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut senders = Vec::new();
        let mut threads = Vec::new();
        let (node_tx, node_rx) = flume::bounded::<Node>(meta.shards());
        let mut with_service = 0;
        for shard in 0..meta.shards() {
            let (tx, rx) = flume::bounded(config.channel_capacity);
            senders.push(tx);
            let placement = if config.pin_shards { Placement::Fixed(shard) } else { Placement::Unbound };
            let mut builder = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{shard}"))
                .io_memory(config.io_memory)
                .preempt_timer(config.task_quota);
            if let Some(spin) = config.spin_before_park {
                builder = builder.spin_before_park(spin);
            }
            let shard_dir = shard_dir(&dir, shard);
            let (shard_config, ready) = (config.shard.clone(), ready_tx.clone());
            let tables = catalog.clone();
            let local_service = services(shard as u16, meta.shards()).map(|start| (node_rx.clone(), start));
            with_service += usize::from(local_service.is_some());
            let ids = (node_id, shard as u16);
            let handle = builder
                .spawn(move || run_shard(ids, shard_dir, shard_config, tables, rx, ready, local_service))
                .map_err(|e| NodeError::ShardStart { shard: shard as u16, reason: e.to_string() })?;
            threads.push(handle);
        }
        drop(ready_tx);
        let mut replay = vec![None; meta.shards()];
        let mut failure = None;
        for _ in 0..meta.shards() {
            match ready_rx.recv() {
                Ok((shard, Ok(report))) => replay[shard as usize] = Some(report),
                Ok((shard, Err(reason))) => {
                    failure.get_or_insert(NodeError::ShardStart { shard, reason });
                }
                Err(_) => {
                    failure.get_or_insert(NodeError::ShardStart { shard: 0, reason: "executor exited".into() });
                    break;
                }
            }
        }
        if let Some(err) = failure {
            // Closing the channels stops the shards that did start (each closes its WAL);
            // no request was ever queued, so none can be left waiting for an answer.
            drop(senders);
            for t in threads {
                let _ = t.join();
            }
            return Err(err);
        }
        let tables = schemas.iter().map(|s| (s.name.to_ascii_lowercase(), Arc::new(s.clone()))).collect();
        let schema_version = AtomicU64::new(catalog.version());
        let max_stored_timestamp = replay.iter().flatten().filter_map(|r| r.max_timestamp).max();
        let node = Node {
            inner: Arc::new(Inner {
                id: node_id,
                dir,
                host_id: meta.host_id,
                generation: meta.generation,
                max_stored_timestamp,
                ring: meta.local_ring(),
                drained: AtomicBool::new(false),
                undecodable_rows: AtomicU64::new(0),
                senders,
                catalog: Mutex::new(catalog),
                schema_version,
                ddl: DdlLock::new(),
                tables: RwLock::new(tables),
                threads: Mutex::new(threads),
                lock: Mutex::new(Some(lock)),
            }),
        };
        // One handle for each shard that runs a service (the channel has room for all).
        for _ in 0..with_service {
            let _ = node_tx.try_send(node.clone());
        }
        let shards = replay.len();
        Ok((node, OpenReport { shards, shard_reports: replay.into_iter().flatten().collect() }))
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn shard_count(&self) -> usize {
        self.inner.senders.len()
    }

    /// The identity of the node's data directory, fixed when it was created.
    pub fn host_id(&self) -> u128 {
        self.inner.host_id
    }

    /// This start's generation: seconds since the Unix epoch at start, above every earlier
    /// start's (durable in `node.meta` before the node was opened).
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// The largest write timestamp the node's shards held when it opened (SSTables and WAL).
    /// A clock that stamps writes for this node starts above it ([`crate::hlc::Hlc::advance_past`]),
    /// so a new write wins over every stored one even if the wall clock went back across the
    /// restart.
    pub fn max_stored_timestamp(&self) -> Option<Timestamp> {
        self.inner.max_stored_timestamp
    }

    /// Vnode tokens of every shard together.
    pub fn token_count(&self) -> usize {
        self.inner.ring.vnodes().len()
    }

    /// The vnode tokens of each shard (`tokens()[s]` are shard `s`'s), as gossiped to peers.
    pub fn tokens(&self) -> Vec<Vec<Token>> {
        let mut tokens = vec![Vec::new(); self.shard_count()];
        for (token, shard) in self.inner.ring.vnodes() {
            tokens[*shard as usize].push(*token);
        }
        tokens
    }

    /// The shard that owns `token`.
    pub fn shard_of(&self, token: Token) -> u16 {
        *self.inner.ring.owner(token)
    }

    /// Creates a table on every shard, stamped `ts` (the coordinator's clock; None: this
    /// node's wall clock). The catalog assigns its id, random among ids never used.
    pub async fn create_table(
        &self,
        schema: TableSchema,
        ts: Option<Timestamp>,
    ) -> Result<Arc<TableSchema>, NodeError> {
        let _ddl = self.inner.ddl.acquire().await;
        let _version = SchemaVersionUpdate(self);
        let created =
            self.catalog().create_table(&self.inner.dir, schema, ts.unwrap_or_else(|| SystemClock.now_micros()))?;
        self.add_table_on_shards(created).await
    }

    /// Merges a peer's table entries and drop records into the catalog (durably, before any
    /// shard changes), then makes the shards match: a table the merge dropped loses its data
    /// as with DROP TABLE, a table learned is created with the peer's id. Returns the changes.
    pub async fn adopt_schema(&self, entries: &[TableEntry], drops: &[DropRecord]) -> Result<SchemaChanges, NodeError> {
        let _ddl = self.inner.ddl.acquire().await;
        let _version = SchemaVersionUpdate(self);
        let changes = self.catalog().adopt(&self.inner.dir, entries, drops)?;
        for dropped in &changes.dropped {
            self.drop_table_on_shards(dropped).await?;
        }
        for created in &changes.created {
            self.add_table_on_shards(created.clone()).await?;
        }
        Ok(changes)
    }

    /// Digest of the catalog peers see (node-local tables left out); equal on every node
    /// whose catalogs hold the same tables and drop records. It changes when a DDL or schema
    /// merge has finished (name lookups included), so a caller that sees a new version and
    /// then looks tables up sees the new tables.
    pub fn schema_version(&self) -> u64 {
        self.inner.schema_version.load(Ordering::Acquire)
    }

    /// Every table entry and drop record peers see (node-local tables left out), sorted by id.
    pub fn schema_snapshot(&self) -> (Vec<TableEntry>, Vec<DropRecord>) {
        self.catalog().snapshot()
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.inner.catalog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes a table the catalog lists known to every shard, then to name lookups.
    async fn add_table_on_shards(&self, schema: TableSchema) -> Result<Arc<TableSchema>, NodeError> {
        for shard in 0..self.shard_count() as u16 {
            self.call(shard, |reply| Request::AddTable { schema: schema.clone(), reply }).await?;
        }
        let schema = Arc::new(schema);
        let mut tables = self.inner.tables.write().unwrap_or_else(|p| p.into_inner());
        tables.insert(schema.name.to_ascii_lowercase(), schema.clone());
        Ok(schema)
    }

    /// Removes a table the catalog dropped from name lookups, then every shard discards its data.
    async fn drop_table_on_shards(&self, dropped: &TableSchema) -> Result<(), NodeError> {
        {
            let mut tables = self.inner.tables.write().unwrap_or_else(|p| p.into_inner());
            let name = dropped.name.to_ascii_lowercase();
            if tables.get(&name).is_some_and(|t| t.id == dropped.id) {
                tables.remove(&name);
            }
        }
        for shard in 0..self.shard_count() as u16 {
            self.call(shard, |reply| Request::DropTable { table: dropped.id, reply })
                .await?
                .map_err(|source| NodeError::Shard { shard, source })?;
        }
        Ok(())
    }

    pub fn table(&self, name: &str) -> Result<Arc<TableSchema>, NodeError> {
        let tables = self.inner.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.get(&name.to_ascii_lowercase()).cloned().ok_or_else(|| NodeError::UnknownTable(name.to_owned()))
    }

    /// The live table with catalog id `id`.
    pub fn table_by_id(&self, id: TableId) -> Option<Arc<TableSchema>> {
        let tables = self.inner.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.values().find(|t| t.id == id).cloned()
    }

    pub fn tables(&self) -> Vec<Arc<TableSchema>> {
        let tables = self.inner.tables.read().unwrap_or_else(|p| p.into_inner());
        tables.values().cloned().collect()
    }

    /// Applies writes (a batch) with one timestamp: `ts` if given, else one issued by the HLC
    /// of the shard of the first write. Atomic per shard; a batch spanning shards is applied
    /// shard by shard (an unlogged batch in Cassandra's terms).
    pub async fn write(&self, writes: Vec<Write>, ts: Option<Timestamp>) -> Result<Timestamp, NodeError> {
        self.check_not_drained()?;
        let mut groups = self.group_by_shard(writes, |w| w.key.token()).into_iter();
        let Some((first_shard, first)) = groups.next() else {
            return Err(NodeError::Write(WriteError::EmptyBatch));
        };
        let ts = self.apply_on(first_shard, first, ts).await?;
        let rest: Vec<_> = groups.map(|(shard, g)| self.apply_on(shard, g, Some(ts))).collect();
        for pending in rest {
            pending.await?;
        }
        Ok(ts)
    }

    /// `items` grouped by the shard owning each one's token, in order of first appearance.
    fn group_by_shard<T>(&self, items: Vec<T>, token: impl Fn(&T) -> Token) -> Vec<(u16, Vec<T>)> {
        let mut groups: Vec<(u16, Vec<T>)> = Vec::new();
        for item in items {
            let shard = self.shard_of(token(&item));
            match groups.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, g)) => g.push(item),
                None => groups.push((shard, vec![item])),
            }
        }
        groups
    }

    fn apply_on(
        &self,
        shard: u16,
        writes: Vec<Write>,
        ts: Option<Timestamp>,
    ) -> impl std::future::Future<Output = Result<Timestamp, NodeError>> + '_ {
        let reply = self.send(shard, |reply| Request::Apply { writes, ts, reply });
        async move {
            reply?
                .recv_async()
                .await
                .map_err(|_| NodeError::ShardStopped(shard))?
                .map_err(|source| NodeError::Shard { shard, source })
        }
    }

    /// Applies updates already stamped with their timestamps (a logged batch replayed from
    /// the batchlog), each shard's part atomically, as [`Node::write`] does.
    pub async fn apply_stamped(&self, updates: Vec<PartitionUpdate>) -> Result<(), NodeError> {
        self.apply_stamped_with(updates, None).await
    }

    /// [`Node::apply_stamped`] of updates that arrived encoded: `encoded` is exactly their
    /// mutation batch encoding (`mutation::encode_batch`; a peer's MUTATE body after its
    /// version byte). When they all belong to one shard (the usual replica write), that shard
    /// logs these bytes as its WAL record rather than encoding the updates again.
    pub async fn apply_stamped_encoded(
        &self,
        updates: Vec<PartitionUpdate>,
        encoded: Vec<u8>,
    ) -> Result<(), NodeError> {
        self.apply_stamped_with(updates, Some(encoded)).await
    }

    async fn apply_stamped_with(
        &self,
        updates: Vec<PartitionUpdate>,
        encoded: Option<Vec<u8>>,
    ) -> Result<(), NodeError> {
        self.check_not_drained()?;
        self.check_stamped(&updates)?;
        let mut groups = self.group_by_shard(updates, |u| u.key.token());
        // Bytes of the whole batch are one shard's record only when one shard owns all of it.
        let mut encoded = encoded.filter(|_| groups.len() == 1);
        if let [(shard, _)] = groups[..] {
            if let Some(local) = self.local_shard(shard) {
                // All of it belongs to the shard this executor runs (one partition, on the
                // coordinator's shard): its own task, as through the channel, so that it runs to
                // the end even if the caller stops waiting, but with no reply channel.
                let (_, updates) = groups.swap_remove(0);
                let applied = glommio::spawn_local(async move { local.apply_stamped(updates, encoded).await }).detach();
                return applied
                    .await
                    .ok_or(NodeError::ShardStopped(shard))?
                    .map_err(|source| NodeError::Shard { shard, source });
            }
        }
        let pending: Vec<_> = groups
            .into_iter()
            .map(|(shard, updates)| {
                let encoded = encoded.take();
                (shard, self.send(shard, |reply| Request::ApplyStamped { updates, encoded, reply }))
            })
            .collect();
        for (shard, reply) in pending {
            reply?
                .recv_async()
                .await
                .map_err(|_| NodeError::ShardStopped(shard))?
                .map_err(|source| NodeError::Shard { shard, source })?;
        }
        Ok(())
    }

    /// Checks updates stamped elsewhere (a peer's MUTATE, the batchlog) against their tables'
    /// schemas, all of them before any shard applies one: a batch that does not fit is refused
    /// whole, before it is logged, so that nothing stored fails to decode later.
    fn check_stamped(&self, updates: &[PartitionUpdate]) -> Result<(), NodeError> {
        let mut schema: Option<Arc<TableSchema>> = None;
        for update in updates {
            let table = match schema.take() {
                Some(s) if s.id == update.table => s,
                _ => self
                    .table_by_id(update.table)
                    .ok_or_else(|| NodeError::UnknownTable(format!("id {}", update.table)))?,
            };
            update.check(&table)?;
            schema = Some(table);
        }
        Ok(())
    }

    /// INSERT of one row (`columns` by name; None is null).
    pub async fn insert(
        &self,
        table: &str,
        partition: &[Value],
        clustering: &[Value],
        columns: &[(&str, Option<Value>)],
        ttl: u32,
    ) -> Result<Timestamp, NodeError> {
        let schema = self.table(table)?;
        let ttl = if ttl == 0 { schema.options.default_ttl_seconds } else { ttl };
        let write = Write::upsert(&schema, partition, clustering, columns, ttl, true)?;
        self.write(vec![write], None).await
    }

    /// DELETE of a partition, a row, or some columns of a row.
    pub async fn delete(
        &self,
        table: &str,
        partition: &[Value],
        clustering: &[Value],
        columns: &[&str],
    ) -> Result<Timestamp, NodeError> {
        let schema = self.table(table)?;
        let write = Write::delete(&schema, partition, clustering, columns)?;
        self.write(vec![write], None).await
    }

    /// The visible rows of one partition whose clustering key starts with `clustering` (all
    /// rows when empty).
    pub async fn get(
        &self,
        table: &str,
        partition: &[Value],
        clustering: &[Value],
    ) -> Result<Vec<ResultRow>, NodeError> {
        let schema = self.table(table)?;
        let key = PartitionKey::from_values(&schema, partition)?;
        let slice = if clustering.is_empty() {
            ClusteringSlice::ALL
        } else {
            ClusteringSlice::prefix(ClusteringKey::from_values(&schema, clustering, false)?)
        };
        let Some(stored) = self.read_partition(schema.id, key.clone(), slice).await? else {
            return Ok(Vec::new());
        };
        Ok(visible_rows(&schema, &key, &stored, now_secs())?)
    }

    /// The stored versions (tombstones included) of one partition's rows in `slice`.
    pub async fn read_partition(
        &self,
        table: TableId,
        key: PartitionKey,
        slice: ClusteringSlice,
    ) -> Result<Option<Partition>, NodeError> {
        self.read_partition_limited(table, key, slice, None).await
    }

    /// [`Node::read_partition`] from the slice's start up to the `limit.rows`-th row live now
    /// or `limit.bytes` stored bytes (`Shard::read_limited`; dead rows on the way included;
    /// `row::limited_cut` says where it may have stopped), or the whole slice without one.
    pub async fn read_partition_limited(
        &self,
        table: TableId,
        key: PartitionKey,
        slice: ClusteringSlice,
        limit: Option<SliceLimit>,
    ) -> Result<Option<Partition>, NodeError> {
        let shard = self.shard_of(key.token());
        let read = match self.local_shard(shard) {
            // On the owning shard's executor: read in place, without a reply channel (a read
            // has no effect a dropped caller could leave half done, unlike a write).
            Some(local) => read_on(&local, table, &key, &slice, limit).await,
            None => self.call(shard, |reply| Request::Read { table, key, slice, limit, reply }).await?,
        };
        read.map_err(|source| NodeError::Shard { shard, source })
    }

    /// Up to `limit` partitions with tokens in (start, end] and keys after `after`, in storage
    /// order, from every shard, each whole. Pass the last key of a page as `after` to get the
    /// next page.
    pub async fn scan(
        &self,
        table: TableId,
        start: Token,
        end: Token,
        after: Option<PartitionKey>,
        limit: usize,
    ) -> Result<Vec<(PartitionKey, Partition)>, NodeError> {
        let resume = after.map(ScanResume::after_partition);
        Ok(self.scan_bounded(table, start, end, resume, limit, ScanBound::WHOLE).await?.partitions)
    }

    /// Up to `limit` partitions with tokens in (start, end] from `resume` on, in storage
    /// order, from every shard, within `bound` (`Shard::scan`): the answer may end inside a
    /// partition, and says where the next one resumes (None: the range is exhausted).
    pub async fn scan_bounded(
        &self,
        table: TableId,
        start: Token,
        end: Token,
        resume: Option<ScanResume>,
        limit: usize,
        bound: ScanBound,
    ) -> Result<ScanPage, NodeError> {
        let mut pending = Vec::new();
        for shard in 0..self.shard_count() as u16 {
            // Only the shard that owns the partition an answer ended in resumes inside it.
            let resume = resume.clone().map(|r| match self.shard_of(r.key.token()) == shard {
                true => r,
                false => ScanResume::after_partition(r.key),
            });
            pending.push(self.send(shard, |reply| Request::Scan { table, start, end, resume, limit, bound, reply })?);
        }
        let mut pages = Vec::new();
        for (shard, page) in pending.into_iter().enumerate() {
            let shard = shard as u16;
            let page = page.recv_async().await.map_err(|_| NodeError::ShardStopped(shard))?;
            pages.push(page.map_err(|source| NodeError::Shard { shard, source })?);
        }
        // Shards own disjoint partitions.
        Ok(merge_disjoint(pages, limit, bound))
    }

    /// Flushes every shard's MemTables to SSTables and waits for it.
    pub async fn flush(&self) -> Result<(), NodeError> {
        for shard in 0..self.shard_count() as u16 {
            self.call(shard, |reply| Request::Flush { reply })
                .await?
                .map_err(|source| NodeError::Shard { shard, source })?;
        }
        Ok(())
    }

    /// Prepares a clean shutdown (`nodetool drain`): from now on every write is refused with
    /// [`NodeError::Drained`] until the node restarts, then every shard flushes its MemTables.
    /// Every write acknowledged before the call is in SSTables when this returns; a write that
    /// was in progress during the call may be only in the WAL (replayed at the next start).
    pub async fn drain(&self) -> Result<(), NodeError> {
        self.inner.drained.store(true, Ordering::SeqCst);
        self.flush().await
    }

    /// Counts a stored row a reader skipped because it does not decode under its schema.
    pub fn note_undecodable_row(&self) {
        self.inner.undecodable_rows.fetch_add(1, Ordering::Relaxed);
    }

    /// Stored rows readers skipped as undecodable since the node started.
    pub fn undecodable_rows(&self) -> u64 {
        self.inner.undecodable_rows.load(Ordering::Relaxed)
    }

    pub fn is_drained(&self) -> bool {
        self.inner.drained.load(Ordering::SeqCst)
    }

    fn check_not_drained(&self) -> Result<(), NodeError> {
        match self.is_drained() {
            true => Err(NodeError::Drained),
            false => Ok(()),
        }
    }

    /// DROP TABLE at `ts` (the coordinator's clock; None: this node's wall clock): the catalog
    /// replaces the table with a drop record first (durably; its id is never reused), then every
    /// shard discards its data. A crash in between is finished at the next start: shards
    /// discard data of table ids the catalog records as dropped.
    pub async fn drop_table(&self, name: &str, ts: Option<Timestamp>) -> Result<(), NodeError> {
        let _ddl = self.inner.ddl.acquire().await;
        let _version = SchemaVersionUpdate(self);
        let dropped =
            self.catalog().drop_table(&self.inner.dir, name, ts.unwrap_or_else(|| SystemClock.now_micros()))?;
        self.drop_table_on_shards(&dropped).await
    }

    /// TRUNCATE: every shard removes all rows of the table written before this call; writes
    /// after it are kept.
    pub async fn truncate(&self, name: &str) -> Result<(), NodeError> {
        let table = self.table(name)?.id;
        for shard in 0..self.shard_count() as u16 {
            self.call(shard, |reply| Request::Truncate { table, reply })
                .await?
                .map_err(|source| NodeError::Shard { shard, source })?;
        }
        Ok(())
    }

    /// Manual major compaction: every shard flushes, then merges the SSTables of `table` (of
    /// each table when `None`) into one. Returns what each shard did, in shard order.
    pub async fn compact(&self, table: Option<TableId>) -> Result<Vec<CompactionReport>, NodeError> {
        let mut out = Vec::new();
        for shard in 0..self.shard_count() as u16 {
            let report = self.call(shard, |reply| Request::Compact { table, reply }).await?;
            out.push(report.map_err(|source| NodeError::Shard { shard, source })?);
        }
        Ok(out)
    }

    /// Cleanup of `table`: shard `s` keeps only the partitions whose token is in `owned[s]`
    /// (`Shard::cleanup`). Returns what each shard did, in shard order.
    pub async fn cleanup(&self, table: TableId, owned: Vec<OwnedRanges>) -> Result<Vec<CompactionReport>, NodeError> {
        assert_eq!(owned.len(), self.shard_count(), "one set of owned ranges per shard");
        let mut out = Vec::new();
        for (shard, owned) in (0..self.shard_count() as u16).zip(owned) {
            let report = self.call(shard, |reply| Request::Cleanup { table, owned, reply }).await?;
            out.push(report.map_err(|source| NodeError::Shard { shard, source })?);
        }
        Ok(out)
    }

    pub async fn stats(&self) -> Result<Vec<ShardStats>, NodeError> {
        let mut out = Vec::new();
        for shard in 0..self.shard_count() as u16 {
            out.push(self.call(shard, |reply| Request::Stats { reply }).await?);
        }
        Ok(out)
    }

    /// fdatasync every shard's WAL.
    pub async fn sync(&self) -> Result<(), NodeError> {
        for shard in 0..self.shard_count() as u16 {
            self.call(shard, |reply| Request::Sync { reply })
                .await?
                .map_err(|source| NodeError::Shard { shard, source })?;
        }
        Ok(())
    }

    /// Stops every shard: in-flight writes finish, WALs are synced and closed, executors exit.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let mut first_err = None;
        for shard in 0..self.shard_count() as u16 {
            match self.call(shard, |reply| Request::Shutdown { reply }).await {
                Ok(Ok(())) | Err(NodeError::ShardStopped(_)) => {}
                Ok(Err(source)) => {
                    first_err.get_or_insert(NodeError::Shard { shard, source });
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let threads = std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            // An executor that panicked has already lost its in-memory state; its WAL is intact.
            if t.join().is_err() {
                tracing::error!("a shard executor panicked");
            }
        }
        // Every shard has stopped: the directory may be opened again, by us or another process.
        self.inner.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
        first_err.map_or(Ok(()), Err)
    }

    /// The shard `shard` of this node, if the calling thread is its executor.
    fn local_shard(&self, shard: u16) -> Option<Rc<Shard>> {
        LOCAL_SHARD.with(|local| match &*local.borrow() {
            Some((node, s)) if *node == self.inner.id && s.id() == shard => Some(s.clone()),
            _ => None,
        })
    }

    /// Queues a request at `shard` (served in place, as a task of this executor, when the
    /// caller runs on that shard's executor) and returns where its answer arrives.
    fn send<T>(
        &self,
        shard: u16,
        make: impl FnOnce(flume::Sender<T>) -> Request,
    ) -> Result<flume::Receiver<T>, NodeError> {
        let (tx, rx) = flume::bounded(1);
        let request = make(tx);
        if let Some(local) = self.local_shard(shard).filter(|_| request.is_data()) {
            glommio::spawn_local(serve(local, request)).detach();
            return Ok(rx);
        }
        let sender = &self.inner.senders[shard as usize];
        if request.is_data() && on_shard_executor() {
            enqueue(sender, request);
        } else {
            sender.send(request).map_err(|_| NodeError::ShardStopped(shard))?;
        }
        Ok(rx)
    }

    async fn call<T>(&self, shard: u16, make: impl FnOnce(flume::Sender<T>) -> Request) -> Result<T, NodeError> {
        let (tx, rx) = flume::bounded(1);
        let request = make(tx);
        if let Some(local) = self.local_shard(shard).filter(|_| request.is_data()) {
            serve(local, request).await;
        } else if request.is_data() && on_shard_executor() {
            enqueue(&self.inner.senders[shard as usize], request);
        } else {
            let sender = &self.inner.senders[shard as usize];
            sender.send_async(request).await.map_err(|_| NodeError::ShardStopped(shard))?;
        }
        rx.recv_async().await.map_err(|_| NodeError::ShardStopped(shard))
    }
}

impl Request {
    /// Work on the shard's data, which a caller on the shard's own executor may run in place.
    /// The others (shutdown) change the shard's request loop and always go through it.
    fn is_data(&self) -> bool {
        !matches!(self, Request::Shutdown { .. } | Request::Many(_))
    }

    /// Client data (a write, a read or a scan) that reached the shard over its channel: what
    /// a shard-aware client keeps on the shard that owns it.
    fn is_cross_shard_data(&self) -> bool {
        matches!(
            self,
            Request::Apply { .. } | Request::ApplyStamped { .. } | Request::Read { .. } | Request::Scan { .. }
        )
    }
}

/// A read of one partition on `shard`, whole or up to `limit` ([`Node::read_partition_limited`]).
async fn read_on(
    shard: &Shard,
    table: TableId,
    key: &PartitionKey,
    slice: &ClusteringSlice,
    limit: Option<SliceLimit>,
) -> Result<Option<Partition>, ShardError> {
    match limit {
        None => shard.read(table, key, slice).await,
        Some(SliceLimit { rows, bytes }) => {
            let limit = RowLimit { live_rows: rows, now_secs: now_secs() };
            Ok(shard.read_bounded(table, key, slice, limit, bytes).await?.0)
        }
    }
}

fn on_shard_executor() -> bool {
    LOCAL_SHARD.with(|local| local.borrow().is_some())
}

/// Queues `request` for `sender`'s shard in this executor's outbox; the first request of a
/// round starts the task that sends the outbox once the tasks runnable now have run.
fn enqueue(sender: &flume::Sender<Request>, request: Request) {
    let first = OUTBOX.with(|outbox| {
        let mut outbox = outbox.borrow_mut();
        let first = outbox.is_empty();
        match outbox.iter_mut().find(|(s, _)| s.same_channel(sender)) {
            Some((_, queued)) => queued.push(request),
            None => outbox.push((sender.clone(), vec![request])),
        }
        first
    });
    if first {
        glommio::spawn_local(async {
            let queued = OUTBOX.with(|outbox| std::mem::take(&mut *outbox.borrow_mut()));
            for (sender, mut requests) in queued {
                let message = match requests.len() {
                    1 => requests.pop().unwrap_or_else(|| unreachable!("one request")),
                    _ => Request::Many(requests),
                };
                // A stopped shard drops the requests: their callers see it stopped.
                let _ = sender.send_async(message).await;
            }
        })
        .detach();
    }
}

/// Publishes the catalog's version when dropped: at the end of a DDL or schema merge, after
/// the shards and the name lookups changed, whether it succeeded or failed midway (the catalog
/// may have changed either way). Dropped while the DDL lock is still held.
struct SchemaVersionUpdate<'a>(&'a Node);

impl Drop for SchemaVersionUpdate<'_> {
    fn drop(&mut self) {
        let version = self.0.catalog().version();
        self.0.inner.schema_version.store(version, Ordering::Release);
    }
}

/// Serializes DDL and schema merges: each holds it from its catalog change until every shard
/// has applied it, so two never interleave on the shards (a table created and dropped at once
/// would otherwise end up on a shard after its drop). One permit in a channel of capacity one:
/// an async mutex that works from any thread or executor.
struct DdlLock {
    permit: flume::Sender<()>,
    waiting: flume::Receiver<()>,
}

/// Gives the permit back when dropped (also when its DDL's future is dropped midway).
struct DdlGuard<'a>(&'a flume::Sender<()>);

impl DdlLock {
    fn new() -> DdlLock {
        let (permit, waiting) = flume::bounded(1);
        // The channel is empty with room for one: this cannot fail.
        let _ = permit.try_send(());
        DdlLock { permit, waiting }
    }

    async fn acquire(&self) -> DdlGuard<'_> {
        // Both ends live in `self`: the channel never disconnects, so this only waits.
        let _ = self.waiting.recv_async().await;
        DdlGuard(&self.permit)
    }
}

impl Drop for DdlGuard<'_> {
    fn drop(&mut self) {
        // The permit taken by `acquire` left room for exactly this one.
        let _ = self.0.try_send(());
    }
}

type Ready = std::sync::mpsc::Sender<(u16, Result<shard::OpenReport, String>)>;

/// The life of one shard's executor: prepare I/O, open (replay), then serve requests until
/// told to shut down or every handle is gone.
async fn run_shard(
    (node_id, id): (u64, u16),
    dir: PathBuf,
    config: ShardConfig,
    catalog: Catalog,
    requests: flume::Receiver<Request>,
    ready: Ready,
    service: Option<(flume::Receiver<Node>, LocalService)>,
) {
    if let Err(e) = crate::io::prepare_executor_io(&dir).await {
        let mark = if crate::io::is_disk_full(&e) { format!("{DISK_FULL_MARK}: ") } else { String::new() };
        let _ = ready.send((id, Err(format!("{mark}preparing I/O in {}: {e}", dir.display()))));
        return;
    }
    let shard = match Shard::open_in_node(id, &dir, config, &catalog.tables(), |t| catalog.is_dropped(t)).await {
        Ok((shard, report)) => {
            let _ = ready.send((id, Ok(report)));
            shard
        }
        Err(e) if crate::io::caused_by_full_disk(&e) => {
            let _ = ready.send((id, Err(format!("{DISK_FULL_MARK}: {e}"))));
            return;
        }
        Err(e) => {
            let _ = ready.send((id, Err(e.to_string())));
            return;
        }
    };
    drop(ready);
    LOCAL_SHARD.with(|local| *local.borrow_mut() = Some((node_id, shard.clone())));
    if let Some((node, start)) = service {
        glommio::spawn_local(async move {
            if let Ok(node) = node.recv_async().await {
                start(node).await;
            }
        })
        .detach();
    }
    let in_flight = glommio::sync::Gate::new();
    let mut shutdown_reply = None;
    while let Ok(request) = requests.recv_async().await {
        let batch = match request {
            Request::Shutdown { reply } => {
                shutdown_reply = Some(reply);
                break;
            }
            Request::Many(batch) => batch,
            request => vec![request],
        };
        // Requests run as tasks, so one that waits (on the disk, the WAL or a flush) never
        // holds up the others; the gate lets shutdown wait for them. It is open until
        // shutdown, which ends this loop first.
        for request in batch {
            if request.is_cross_shard_data() {
                shard.count_cross_shard_request();
            }
            if let Ok(task) = in_flight.spawn(serve(shard.clone(), request)) {
                task.detach();
            }
        }
    }
    LOCAL_SHARD.with(|local| local.borrow_mut().take());
    // Requests queued behind the shutdown get no answer: drop them now so their callers see
    // the shard as stopped instead of waiting on a reply channel kept alive by the queue.
    drop(requests.drain());
    let _ = in_flight.close().await;
    let result = shard.close().await;
    if let Err(e) = &result {
        tracing::error!(shard = id, error = %e, "closing shard");
    }
    if let Some(reply) = shutdown_reply {
        let _ = reply.send(result);
    }
}

/// Serves one data request on `shard` and sends the answer to its reply channel.
async fn serve(shard: Rc<Shard>, request: Request) {
    match request {
        Request::Apply { writes, ts, reply } => {
            let _ = reply.send(shard.apply(writes, ts).await);
        }
        Request::ApplyStamped { updates, encoded, reply } => {
            let _ = reply.send(shard.apply_stamped(updates, encoded).await);
        }
        Request::Read { table, key, slice, limit, reply } => {
            let _ = reply.send(read_on(&shard, table, &key, &slice, limit).await);
        }
        Request::Scan { table, start, end, resume, limit, bound, reply } => {
            let _ = reply.send(shard.scan(table, start, end, resume, limit, bound).await);
        }
        Request::Flush { reply } => {
            let _ = reply.send(shard.flush().await);
        }
        Request::Compact { table, reply } => {
            let _ = reply.send(shard.compact_major(table).await);
        }
        Request::Cleanup { table, owned, reply } => {
            let _ = reply.send(shard.cleanup(table, owned).await);
        }
        Request::DropTable { table, reply } => {
            let _ = reply.send(shard.drop_table(table).await);
        }
        Request::Truncate { table, reply } => {
            let _ = reply.send(shard.truncate(table).await);
        }
        Request::Sync { reply } => {
            let _ = reply.send(shard.sync().await);
        }
        Request::AddTable { schema, reply } => {
            shard.add_table(schema);
            let _ = reply.send(());
        }
        Request::Stats { reply } => {
            let _ = reply.send(shard.stats());
        }
        Request::Shutdown { reply } => {
            // Never routed here (`Request::is_data`); answering keeps the caller from hanging.
            let _ = reply.send(Err(ShardError::Closing(shard.id())));
        }
        Request::Many(batch) => {
            for request in batch {
                glommio::spawn_local(serve(shard.clone(), request)).detach();
            }
        }
    }
}

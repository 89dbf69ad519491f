//! ADMIN: the operator's commands (`enigmadb admin ...`, in the spirit of nodetool) sent over
//! the client protocol, and the typed results a server answers them with. Pure encode/decode:
//! what a command does is the server's business, how a result is shown is the CLI's.
//! Layout: docs/PROTOCOL.md, "ADMIN".

use super::repair::{RepairRequest, RepairResult};
use super::{read_bool, read_list, read_text, MAX_NAME_BYTES};
use crate::codec::{DecodeError, Reader, Writer, MAX_FIELD_LEN};

/// Most items (nodes, shards, tables) one admin result may list; also bounded by the frame.
pub const MAX_ADMIN_ITEMS: usize = 1 << 16;

/// One admin command. A table name, where one is allowed, limits the command to that table;
/// a name the node does not know is answered with an `Invalid` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// One row per node: address, state, load, tokens, ownership, host id.
    Status,
    /// This node: uptime, load, and per shard MemTables, cache, flushes, compactions, WAL.
    Info,
    /// Per table: SSTables, space used, read and write counts, bloom filter counters.
    TableStats { table: Option<String> },
    /// Writes MemTables out to SSTables and waits for it.
    Flush { table: Option<String> },
    /// Major compaction: merges each table's SSTables into one and waits for it.
    Compact { table: Option<String> },
    /// Flushes everything, then refuses writes until the node restarts.
    Drain,
    /// The token ring as the node sees it: one entry per vnode token, in ring order.
    Ring,
    /// Anti-entropy repair: a plan, or one range of it (`protocol::repair`).
    Repair(RepairRequest),
    /// The node's streams: its bootstrap's phase and what it received from each peer.
    Netstats,
    /// The node streams every range it replicates to the nodes that take it over, leaves the
    /// ring (LEFT) and stops.
    Decommission,
    /// The dead node `host_id` is taken out of the ring: the surviving replicas of its ranges
    /// stream them to the nodes that take them over.
    RemoveNode { host_id: u128 },
    /// Drops the partitions the node no longer replicates from the SSTables of the table (of
    /// every table when absent), and waits for it.
    Cleanup { table: Option<String> },
}

const COMMAND_STATUS: u8 = 1;
const COMMAND_INFO: u8 = 2;
const COMMAND_TABLESTATS: u8 = 3;
const COMMAND_FLUSH: u8 = 4;
const COMMAND_COMPACT: u8 = 5;
const COMMAND_DRAIN: u8 = 6;
const COMMAND_RING: u8 = 7;
const COMMAND_REPAIR: u8 = 8;
const COMMAND_NETSTATS: u8 = 9;
const COMMAND_DECOMMISSION: u8 = 10;
const COMMAND_REMOVENODE: u8 = 11;
const COMMAND_CLEANUP: u8 = 12;

impl AdminRequest {
    /// The command's name on the command line (`enigmadb admin <name>`).
    pub fn name(&self) -> &'static str {
        match self {
            AdminRequest::Status => "status",
            AdminRequest::Info => "info",
            AdminRequest::TableStats { .. } => "tablestats",
            AdminRequest::Flush { .. } => "flush",
            AdminRequest::Compact { .. } => "compact",
            AdminRequest::Drain => "drain",
            AdminRequest::Ring => "ring",
            AdminRequest::Repair(_) => "repair",
            AdminRequest::Netstats => "netstats",
            AdminRequest::Decommission => "decommission",
            AdminRequest::RemoveNode { .. } => "removenode",
            AdminRequest::Cleanup { .. } => "cleanup",
        }
    }

    pub(super) fn write(&self, w: &mut Writer) {
        match self {
            AdminRequest::Status => {
                w.u8(COMMAND_STATUS);
            }
            AdminRequest::Info => {
                w.u8(COMMAND_INFO);
            }
            AdminRequest::TableStats { table } => write_opt_text(w.u8(COMMAND_TABLESTATS), table.as_deref()),
            AdminRequest::Flush { table } => write_opt_text(w.u8(COMMAND_FLUSH), table.as_deref()),
            AdminRequest::Compact { table } => write_opt_text(w.u8(COMMAND_COMPACT), table.as_deref()),
            AdminRequest::Drain => {
                w.u8(COMMAND_DRAIN);
            }
            AdminRequest::Ring => {
                w.u8(COMMAND_RING);
            }
            AdminRequest::Repair(repair) => repair.write(w.u8(COMMAND_REPAIR)),
            AdminRequest::Netstats => {
                w.u8(COMMAND_NETSTATS);
            }
            AdminRequest::Decommission => {
                w.u8(COMMAND_DECOMMISSION);
            }
            AdminRequest::RemoveNode { host_id } => write_host_id(w.u8(COMMAND_REMOVENODE), *host_id),
            AdminRequest::Cleanup { table } => write_opt_text(w.u8(COMMAND_CLEANUP), table.as_deref()),
        }
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<AdminRequest, DecodeError> {
        Ok(match r.u8()? {
            COMMAND_STATUS => AdminRequest::Status,
            COMMAND_INFO => AdminRequest::Info,
            COMMAND_TABLESTATS => AdminRequest::TableStats { table: read_opt_text(r)? },
            COMMAND_FLUSH => AdminRequest::Flush { table: read_opt_text(r)? },
            COMMAND_COMPACT => AdminRequest::Compact { table: read_opt_text(r)? },
            COMMAND_DRAIN => AdminRequest::Drain,
            COMMAND_RING => AdminRequest::Ring,
            COMMAND_REPAIR => AdminRequest::Repair(RepairRequest::read(r)?),
            COMMAND_NETSTATS => AdminRequest::Netstats,
            COMMAND_DECOMMISSION => AdminRequest::Decommission,
            COMMAND_REMOVENODE => AdminRequest::RemoveNode { host_id: read_host_id(r)? },
            COMMAND_CLEANUP => AdminRequest::Cleanup { table: read_opt_text(r)? },
            other => return Err(r.invalid("admin command", format!("unknown command {other}"))),
        })
    }
}

/// Whether the node answers (Cassandra's Up/Down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Up,
    Down,
}

/// The node's place in the ring (Cassandra's Normal/Joining/Leaving/Moving).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingState {
    Normal,
    Joining,
    Leaving,
    Moving,
}

/// One row of `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// The node's client address (`host:port`).
    pub address: String,
    pub liveness: Liveness,
    pub state: RingState,
    /// Bytes of live SSTables (Cassandra's "Load").
    pub load_bytes: u64,
    /// Vnode tokens the node owns.
    pub tokens: u32,
    /// Fraction of the token ring whose first replica the node is, in 0..=1 (they add up to 1).
    pub owns: f64,
    pub host_id: u128,
    /// Its effective ownership (protocol version 3): the share of the token ring it holds a
    /// replica of at the replication factor of the tables (they add up to RF, or to the node
    /// count when smaller). `None` when the tables do not share one replication factor (or
    /// there is none).
    pub effective: Option<EffectiveOwnership>,
}

/// nodetool's "Owns (effective)": a node's replicated share at a replication factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EffectiveOwnership {
    pub replication_factor: u32,
    /// In 0..=1.
    pub owns: f64,
}

impl NodeStatus {
    /// What `status` prints as "Owns": the effective ownership when it is known, else the
    /// first-replica share.
    pub fn shown_owns(&self) -> f64 {
        self.effective.map_or(self.owns, |e| e.owns)
    }
    /// nodetool's two letters: `U`/`D`, then `N`/`J`/`L`/`M`.
    pub fn code(&self) -> String {
        state_code(self.liveness, self.state)
    }
}

fn state_code(liveness: Liveness, state: RingState) -> String {
    let liveness = match liveness {
        Liveness::Up => 'U',
        Liveness::Down => 'D',
    };
    let state = match state {
        RingState::Normal => 'N',
        RingState::Joining => 'J',
        RingState::Leaving => 'L',
        RingState::Moving => 'M',
    };
    format!("{liveness}{state}")
}

/// What `info` reports about one shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShardInfo {
    pub shard: u16,
    /// Bytes in the active and the immutable MemTables.
    pub memtable_bytes: u64,
    /// Immutable MemTables waiting for their flush.
    pub pending_flushes: u32,
    pub flushes: u64,
    /// Write batches applied.
    pub writes: u64,
    pub sstables: u32,
    pub sstable_bytes: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
    /// Compactions the strategy would run now.
    pub pending_compactions: u32,
    pub compaction_running: bool,
    pub compactions_completed: u64,
    pub wal_records: u64,
    pub wal_bytes_written: u64,
    pub wal_syncs: u64,
    /// The last failed flush, while flushing fails.
    pub flush_error: Option<String>,
    /// The last failed compaction, until one succeeds.
    pub compaction_error: Option<String>,
}

/// What `info` reports about the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub host_id: u128,
    pub uptime_ms: u64,
    /// Bytes of live SSTables.
    pub load_bytes: u64,
    /// `drain` ran: the node refuses writes until it restarts.
    pub drained: bool,
    pub shards: Vec<ShardInfo>,
    /// Hints this node keeps for replicas that missed writes, not yet delivered.
    pub hints_pending: u64,
    /// The memory budgets the shards were given and why (protocol version 3); `None` when
    /// the node does not report them.
    pub memory: Option<MemoryBudgets>,
}

/// What every shard of a node may hold in MemTables and in its block cache, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBudgets {
    pub memtable_budget: u64,
    pub cache_budget: u64,
    /// The settings, or how `auto` sized them from the machine's memory.
    pub why: String,
}

impl NodeInfo {
    /// Block cache hits over lookups on every shard; `None` before the first lookup.
    pub fn cache_hit_rate(&self) -> Option<f64> {
        let hits: u64 = self.shards.iter().map(|s| s.cache_hits).sum();
        let lookups = hits + self.shards.iter().map(|s| s.cache_misses).sum::<u64>();
        (lookups > 0).then(|| hits as f64 / lookups as f64)
    }
}

/// What `tablestats` reports about one table, summed over the node's shards.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableStats {
    pub table: String,
    pub sstables: u32,
    /// Bytes of the table's live SSTables.
    pub space_used_bytes: u64,
    pub memtable_bytes: u64,
    pub memtable_partitions: u64,
    /// Partition reads served by the shards since they started.
    pub reads: u64,
    /// Token-range scans served by the shards since they started.
    pub range_scans: u64,
    /// Partition updates written since the shards started.
    pub writes: u64,
    /// Tombstones stored in the live SSTables (as their metadata counts them).
    pub sstable_tombstones: u64,
    /// Point reads the bloom filters let through, over the live SSTables.
    pub bloom_positives: u64,
    /// Of those, reads that did not find the partition.
    pub bloom_false_positives: u64,
    /// Tombstones (cell, row and partition deletions) the reads and scans met.
    pub tombstones_scanned: u64,
    /// Local partition read latency on the shards, median and 99th percentile, in
    /// nanoseconds (upper bounds of histogram buckets; 0 before the first read).
    pub read_p50_nanos: u64,
    pub read_p99_nanos: u64,
    /// Local write latency (the WAL append and its sync under the sync mode) per partition
    /// update, in nanoseconds (0 before the first write).
    pub write_p50_nanos: u64,
    pub write_p99_nanos: u64,
}

/// One vnode of `ring`: its token and the node and shard that own it.
#[derive(Debug, Clone, PartialEq)]
pub struct RingEntry {
    pub token: i64,
    /// The owning node's client address (`host:port`).
    pub address: String,
    pub liveness: Liveness,
    pub state: RingState,
    /// The shard of the owning node that holds the vnode.
    pub shard: u16,
    /// The owning node's load (bytes of live SSTables).
    pub load_bytes: u64,
    /// Fraction of the token space this vnode's range covers (from the previous token,
    /// exclusive, to its own, inclusive), in 0..=1.
    pub owns: f64,
    pub host_id: u128,
}

impl RingEntry {
    /// The owning node's state letters, as [`NodeStatus::code`].
    pub fn code(&self) -> String {
        state_code(self.liveness, self.state)
    }
}

/// What a command that changes the node did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AdminDone {
    /// Shards that did the work.
    pub shards: u32,
    /// MemTable bytes just before the command (what a flush or drain wrote out).
    pub memtable_bytes: u64,
    /// Compactions run (compact only).
    pub compactions: u64,
    pub sstables_in: u64,
    pub sstables_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// What a node received from one peer while bootstrapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPeer {
    pub host_id: u128,
    /// Its peer address (`host:port`).
    pub address: String,
    /// Token ranges (of one table each) it completed.
    pub ranges_done: u64,
    pub partitions: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Streams from it that failed (and went to another replica).
    pub failures: u64,
}

/// The answer to `netstats` (nodetool's): the bootstrap's phase and its streams.
#[derive(Debug, Clone, PartialEq)]
pub struct Netstats {
    /// `NORMAL`, or where the bootstrap is (`JOINING: streaming`...).
    pub mode: String,
    /// Streams (one table's token range each) planned, and completed.
    pub ranges_total: u64,
    pub ranges_done: u64,
    /// Seconds spent streaming.
    pub seconds: f64,
    /// The throttle in bytes per second; 0 = unthrottled.
    pub throughput_limit: u64,
    /// Why the bootstrap failed, when it did.
    pub error: Option<String>,
    pub peers: Vec<StreamPeer>,
}

const MIN_STREAM_PEER_BYTES: usize = 16 + 4 + 8 * 5;

impl Netstats {
    /// Whether the node sends its streams (the modes of decommission, `LEAVING: ...` and
    /// `DECOMMISSIONED`, and of removenode, `NORMAL: removenode ...`) rather than receives
    /// them (bootstrap): `peers` are then the nodes streamed to.
    pub fn sending(&self) -> bool {
        self.mode.starts_with("LEAVING") || self.mode.starts_with("DECOMMISSIONED") || self.mode.contains("removenode")
    }

    fn write(&self, w: &mut Writer) {
        w.str(&self.mode).u64(self.ranges_total).u64(self.ranges_done).u64(self.seconds.to_bits());
        w.u64(self.throughput_limit);
        write_opt_text(w, self.error.as_deref());
        w.u32(self.peers.len() as u32);
        for p in &self.peers {
            write_host_id(w, p.host_id);
            w.str(&p.address).u64(p.ranges_done).u64(p.partitions).u64(p.rows).u64(p.bytes).u64(p.failures);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Netstats, DecodeError> {
        let mode = read_text(r, MAX_NAME_BYTES)?;
        let (ranges_total, ranges_done, seconds, throughput_limit) =
            (r.u64()?, r.u64()?, f64::from_bits(r.u64()?), r.u64()?);
        let error = read_opt_message(r)?;
        let n = read_count(r, MIN_STREAM_PEER_BYTES)?;
        let peers = read_list(r, n, |r, _| {
            Ok(StreamPeer {
                host_id: read_host_id(r)?,
                address: read_text(r, MAX_NAME_BYTES)?,
                ranges_done: r.u64()?,
                partitions: r.u64()?,
                rows: r.u64()?,
                bytes: r.u64()?,
                failures: r.u64()?,
            })
        })?;
        Ok(Netstats { mode, ranges_total, ranges_done, seconds, throughput_limit, error, peers })
    }
}

/// What a cleanup did to one table on one node (summed over its shards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanedTable {
    pub table: String,
    /// SSTables rewritten (each one alone), and what they became (an SSTable left with
    /// nothing is removed, not rewritten).
    pub sstables_in: u64,
    pub sstables_out: u64,
    /// Bytes of the SSTables rewritten, and of what they became.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Partitions read from every SSTable of the table, and those dropped (not owned).
    pub partitions_in: u64,
    pub partitions_dropped: u64,
}

const MIN_CLEANED_TABLE_BYTES: usize = 4 + 8 * 6;

impl CleanedTable {
    /// Bytes the cleanup freed on disk.
    pub fn bytes_dropped(&self) -> u64 {
        self.bytes_in.saturating_sub(self.bytes_out)
    }

    fn write(&self, w: &mut Writer) {
        w.str(&self.table).u64(self.sstables_in).u64(self.sstables_out).u64(self.bytes_in).u64(self.bytes_out);
        w.u64(self.partitions_in).u64(self.partitions_dropped);
    }

    fn read(r: &mut Reader<'_>) -> Result<CleanedTable, DecodeError> {
        Ok(CleanedTable {
            table: read_text(r, MAX_NAME_BYTES)?,
            sstables_in: r.u64()?,
            sstables_out: r.u64()?,
            bytes_in: r.u64()?,
            bytes_out: r.u64()?,
            partitions_in: r.u64()?,
            partitions_dropped: r.u64()?,
        })
    }
}

/// The answer to an [`AdminRequest`] (sent as a RESULT of kind admin).
#[derive(Debug, Clone, PartialEq)]
pub enum AdminResult {
    Status(Vec<NodeStatus>),
    Info(NodeInfo),
    TableStats(Vec<TableStats>),
    Flushed(AdminDone),
    Compacted(AdminDone),
    Drained(AdminDone),
    Ring(Vec<RingEntry>),
    Repair(RepairResult),
    Netstats(Netstats),
    /// Per table cleaned, by name.
    Cleaned(Vec<CleanedTable>),
    Decommissioned(LeaveDone),
    Removed(LeaveDone),
}

/// What a decommission or a removenode streamed, once it completed.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaveDone {
    /// The node that left the ring.
    pub host_id: u128,
    /// Streams (one table's token range to one node each) completed.
    pub ranges: u64,
    pub partitions: u64,
    pub rows: u64,
    /// The MUTATE bodies sent.
    pub bytes: u64,
    pub seconds: f64,
    /// Hints this node still held when it left, for nodes that were down (decommission).
    pub hints_left: u64,
}

impl LeaveDone {
    fn write(&self, w: &mut Writer) {
        write_host_id(w, self.host_id);
        w.u64(self.ranges).u64(self.partitions).u64(self.rows).u64(self.bytes).u64(self.seconds.to_bits());
        w.u64(self.hints_left);
    }

    fn read(r: &mut Reader<'_>) -> Result<LeaveDone, DecodeError> {
        Ok(LeaveDone {
            host_id: read_host_id(r)?,
            ranges: r.u64()?,
            partitions: r.u64()?,
            rows: r.u64()?,
            bytes: r.u64()?,
            seconds: f64::from_bits(r.u64()?),
            hints_left: r.u64()?,
        })
    }
}

const RESULT_STATUS: u8 = 1;
const RESULT_INFO: u8 = 2;
const RESULT_TABLESTATS: u8 = 3;
const RESULT_FLUSHED: u8 = 4;
const RESULT_COMPACTED: u8 = 5;
const RESULT_DRAINED: u8 = 6;
const RESULT_RING: u8 = 7;
const RESULT_REPAIR: u8 = 8;
const RESULT_NETSTATS: u8 = 9;
const RESULT_DECOMMISSIONED: u8 = 10;
const RESULT_REMOVED: u8 = 11;
const RESULT_CLEANED: u8 = 12;

/// Smallest encodings, which bound a list's count by the input left (`Reader::count`).
const MIN_NODE_STATUS_BYTES: usize = 4 + 1 + 1 + 8 + 4 + 8 + 16 + 1;
const MIN_SHARD_INFO_BYTES: usize = 2 + 8 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 1 + 8 + 8 + 8 + 8 + 1 + 1;
const MIN_TABLE_STATS_BYTES: usize = 4 + 4 + 8 * 14;
const MIN_RING_ENTRY_BYTES: usize = 8 + 4 + 1 + 1 + 2 + 8 + 8 + 16;

impl AdminResult {
    pub(super) fn write(&self, w: &mut Writer) {
        match self {
            AdminResult::Status(nodes) => {
                w.u8(RESULT_STATUS).u32(nodes.len() as u32);
                nodes.iter().for_each(|n| n.write(w));
            }
            AdminResult::Info(info) => {
                w.u8(RESULT_INFO);
                info.write(w);
            }
            AdminResult::TableStats(tables) => {
                w.u8(RESULT_TABLESTATS).u32(tables.len() as u32);
                tables.iter().for_each(|t| t.write(w));
            }
            AdminResult::Flushed(done) => done.write(w.u8(RESULT_FLUSHED)),
            AdminResult::Compacted(done) => done.write(w.u8(RESULT_COMPACTED)),
            AdminResult::Drained(done) => done.write(w.u8(RESULT_DRAINED)),
            AdminResult::Ring(entries) => {
                w.u8(RESULT_RING).u32(entries.len() as u32);
                entries.iter().for_each(|e| e.write(w));
            }
            AdminResult::Repair(repair) => repair.write(w.u8(RESULT_REPAIR)),
            AdminResult::Netstats(netstats) => netstats.write(w.u8(RESULT_NETSTATS)),
            AdminResult::Decommissioned(done) => done.write(w.u8(RESULT_DECOMMISSIONED)),
            AdminResult::Removed(done) => done.write(w.u8(RESULT_REMOVED)),
            AdminResult::Cleaned(tables) => {
                w.u8(RESULT_CLEANED).u32(tables.len() as u32);
                tables.iter().for_each(|t| t.write(w));
            }
        }
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<AdminResult, DecodeError> {
        Ok(match r.u8()? {
            RESULT_STATUS => {
                let n = read_count(r, MIN_NODE_STATUS_BYTES)?;
                AdminResult::Status(read_list(r, n, |r, _| NodeStatus::read(r))?)
            }
            RESULT_INFO => AdminResult::Info(NodeInfo::read(r)?),
            RESULT_TABLESTATS => {
                let n = read_count(r, MIN_TABLE_STATS_BYTES)?;
                AdminResult::TableStats(read_list(r, n, |r, _| TableStats::read(r))?)
            }
            RESULT_FLUSHED => AdminResult::Flushed(AdminDone::read(r)?),
            RESULT_COMPACTED => AdminResult::Compacted(AdminDone::read(r)?),
            RESULT_DRAINED => AdminResult::Drained(AdminDone::read(r)?),
            RESULT_RING => {
                let n = read_count(r, MIN_RING_ENTRY_BYTES)?;
                AdminResult::Ring(read_list(r, n, |r, _| RingEntry::read(r))?)
            }
            RESULT_REPAIR => AdminResult::Repair(RepairResult::read(r)?),
            RESULT_NETSTATS => AdminResult::Netstats(Netstats::read(r)?),
            RESULT_DECOMMISSIONED => AdminResult::Decommissioned(LeaveDone::read(r)?),
            RESULT_REMOVED => AdminResult::Removed(LeaveDone::read(r)?),
            RESULT_CLEANED => {
                let n = read_count(r, MIN_CLEANED_TABLE_BYTES)?;
                AdminResult::Cleaned(read_list(r, n, |r, _| CleanedTable::read(r))?)
            }
            other => return Err(r.invalid("admin result", format!("unknown result {other}"))),
        })
    }
}

impl NodeStatus {
    fn write(&self, w: &mut Writer) {
        w.str(&self.address);
        write_liveness_and_state(w, self.liveness, self.state);
        w.u64(self.load_bytes).u32(self.tokens).u64(self.owns.to_bits());
        write_host_id(w, self.host_id);
        match self.effective {
            None => {
                w.u8(0);
            }
            Some(e) => {
                w.u8(1).u32(e.replication_factor).u64(e.owns.to_bits());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<NodeStatus, DecodeError> {
        let address = read_text(r, MAX_NAME_BYTES)?;
        let (liveness, state) = read_liveness_and_state(r)?;
        let (load_bytes, tokens) = (r.u64()?, r.u32()?);
        let owns = read_fraction(r)?;
        let host_id = read_host_id(r)?;
        let effective = match read_bool(r, "effective ownership present")? {
            false => None,
            true => Some(EffectiveOwnership { replication_factor: r.u32()?, owns: read_fraction(r)? }),
        };
        Ok(NodeStatus { address, liveness, state, load_bytes, tokens, owns, host_id, effective })
    }
}

impl RingEntry {
    fn write(&self, w: &mut Writer) {
        w.i64(self.token).str(&self.address);
        write_liveness_and_state(w, self.liveness, self.state);
        w.u16(self.shard).u64(self.load_bytes).u64(self.owns.to_bits());
        write_host_id(w, self.host_id);
    }

    fn read(r: &mut Reader<'_>) -> Result<RingEntry, DecodeError> {
        let (token, address) = (r.i64()?, read_text(r, MAX_NAME_BYTES)?);
        let (liveness, state) = read_liveness_and_state(r)?;
        let (shard, load_bytes, owns) = (r.u16()?, r.u64()?, read_fraction(r)?);
        Ok(RingEntry { token, address, liveness, state, shard, load_bytes, owns, host_id: read_host_id(r)? })
    }
}

fn write_liveness_and_state(w: &mut Writer, liveness: Liveness, state: RingState) {
    w.u8(match liveness {
        Liveness::Up => 1,
        Liveness::Down => 2,
    });
    w.u8(match state {
        RingState::Normal => 1,
        RingState::Joining => 2,
        RingState::Leaving => 3,
        RingState::Moving => 4,
    });
}

fn read_liveness_and_state(r: &mut Reader<'_>) -> Result<(Liveness, RingState), DecodeError> {
    let liveness = match r.u8()? {
        1 => Liveness::Up,
        2 => Liveness::Down,
        other => return Err(r.invalid("node liveness", format!("unknown code {other}"))),
    };
    let state = match r.u8()? {
        1 => RingState::Normal,
        2 => RingState::Joining,
        3 => RingState::Leaving,
        4 => RingState::Moving,
        other => return Err(r.invalid("node state", format!("unknown code {other}"))),
    };
    Ok((liveness, state))
}

/// An ownership share: the bits of an f64 in 0..=1.
fn read_fraction(r: &mut Reader<'_>) -> Result<f64, DecodeError> {
    let owns = f64::from_bits(r.u64()?);
    if !(0.0..=1.0).contains(&owns) {
        return Err(r.invalid("ownership", format!("{owns} is not a fraction in 0..=1")));
    }
    Ok(owns)
}

impl ShardInfo {
    fn write(&self, w: &mut Writer) {
        w.u16(self.shard).u64(self.memtable_bytes).u32(self.pending_flushes).u64(self.flushes).u64(self.writes);
        w.u32(self.sstables).u64(self.sstable_bytes);
        w.u64(self.cache_hits).u64(self.cache_misses).u64(self.cache_bytes);
        w.u32(self.pending_compactions).u8(u8::from(self.compaction_running)).u64(self.compactions_completed);
        w.u64(self.wal_records).u64(self.wal_bytes_written).u64(self.wal_syncs);
        write_opt_text(w, self.flush_error.as_deref());
        write_opt_text(w, self.compaction_error.as_deref());
    }

    fn read(r: &mut Reader<'_>) -> Result<ShardInfo, DecodeError> {
        Ok(ShardInfo {
            shard: r.u16()?,
            memtable_bytes: r.u64()?,
            pending_flushes: r.u32()?,
            flushes: r.u64()?,
            writes: r.u64()?,
            sstables: r.u32()?,
            sstable_bytes: r.u64()?,
            cache_hits: r.u64()?,
            cache_misses: r.u64()?,
            cache_bytes: r.u64()?,
            pending_compactions: r.u32()?,
            compaction_running: read_bool(r, "compaction running")?,
            compactions_completed: r.u64()?,
            wal_records: r.u64()?,
            wal_bytes_written: r.u64()?,
            wal_syncs: r.u64()?,
            flush_error: read_opt_message(r)?,
            compaction_error: read_opt_message(r)?,
        })
    }
}

impl NodeInfo {
    fn write(&self, w: &mut Writer) {
        write_host_id(w, self.host_id);
        w.u64(self.uptime_ms).u64(self.load_bytes).u8(u8::from(self.drained));
        w.u32(self.shards.len() as u32);
        self.shards.iter().for_each(|s| s.write(w));
        w.u64(self.hints_pending);
        match &self.memory {
            None => {
                w.u8(0);
            }
            Some(m) => {
                w.u8(1).u64(m.memtable_budget).u64(m.cache_budget).str(&m.why);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<NodeInfo, DecodeError> {
        let host_id = read_host_id(r)?;
        let (uptime_ms, load_bytes, drained) = (r.u64()?, r.u64()?, read_bool(r, "drained")?);
        let n = read_count(r, MIN_SHARD_INFO_BYTES)?;
        let shards = read_list(r, n, |r, _| ShardInfo::read(r))?;
        let hints_pending = r.u64()?;
        let memory = match read_bool(r, "memory budgets present")? {
            false => None,
            true => Some(MemoryBudgets {
                memtable_budget: r.u64()?,
                cache_budget: r.u64()?,
                why: read_text(r, MAX_NAME_BYTES)?,
            }),
        };
        Ok(NodeInfo { host_id, uptime_ms, load_bytes, drained, shards, hints_pending, memory })
    }
}

impl TableStats {
    fn write(&self, w: &mut Writer) {
        w.str(&self.table).u32(self.sstables).u64(self.space_used_bytes);
        w.u64(self.memtable_bytes).u64(self.memtable_partitions);
        w.u64(self.reads).u64(self.range_scans).u64(self.writes).u64(self.sstable_tombstones);
        w.u64(self.bloom_positives).u64(self.bloom_false_positives).u64(self.tombstones_scanned);
        w.u64(self.read_p50_nanos).u64(self.read_p99_nanos).u64(self.write_p50_nanos).u64(self.write_p99_nanos);
    }

    fn read(r: &mut Reader<'_>) -> Result<TableStats, DecodeError> {
        Ok(TableStats {
            table: read_text(r, MAX_NAME_BYTES)?,
            sstables: r.u32()?,
            space_used_bytes: r.u64()?,
            memtable_bytes: r.u64()?,
            memtable_partitions: r.u64()?,
            reads: r.u64()?,
            range_scans: r.u64()?,
            writes: r.u64()?,
            sstable_tombstones: r.u64()?,
            bloom_positives: r.u64()?,
            bloom_false_positives: r.u64()?,
            tombstones_scanned: r.u64()?,
            read_p50_nanos: r.u64()?,
            read_p99_nanos: r.u64()?,
            write_p50_nanos: r.u64()?,
            write_p99_nanos: r.u64()?,
        })
    }
}

impl AdminDone {
    fn write(&self, w: &mut Writer) {
        w.u32(self.shards).u64(self.memtable_bytes).u64(self.compactions);
        w.u64(self.sstables_in).u64(self.sstables_out).u64(self.bytes_in).u64(self.bytes_out);
    }

    fn read(r: &mut Reader<'_>) -> Result<AdminDone, DecodeError> {
        Ok(AdminDone {
            shards: r.u32()?,
            memtable_bytes: r.u64()?,
            compactions: r.u64()?,
            sstables_in: r.u64()?,
            sstables_out: r.u64()?,
            bytes_in: r.u64()?,
            bytes_out: r.u64()?,
        })
    }
}

/// A list count, refused beyond [`MAX_ADMIN_ITEMS`] or the input left.
pub(super) fn read_count(r: &mut Reader<'_>, min_item_bytes: usize) -> Result<usize, DecodeError> {
    let at = r.offset();
    let n = r.count(min_item_bytes)?;
    if n > MAX_ADMIN_ITEMS {
        return Err(DecodeError::TooLong { offset: at, len: n, limit: MAX_ADMIN_ITEMS });
    }
    Ok(n)
}

/// A host id in the UUID layout operators know from Cassandra (8-4-4-4-12 hex digits): how
/// the admin tool, the metrics and the logs name a node.
pub fn display_host_id(id: u128) -> String {
    let hex = format!("{id:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

pub(super) fn write_host_id(w: &mut Writer, id: u128) {
    w.raw(&id.to_le_bytes());
}

pub(super) fn read_host_id(r: &mut Reader<'_>) -> Result<u128, DecodeError> {
    let mut id = [0u8; 16];
    id.copy_from_slice(r.take(16)?);
    Ok(u128::from_le_bytes(id))
}

/// bool presence, then the text if present.
pub(super) fn write_opt_text(w: &mut Writer, text: Option<&str>) {
    match text {
        None => {
            w.u8(0);
        }
        Some(text) => {
            w.u8(1).str(text);
        }
    }
}

pub(super) fn read_opt_text(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    read_opt_limited(r, MAX_NAME_BYTES)
}

/// An optional error message (longer than a name).
fn read_opt_message(r: &mut Reader<'_>) -> Result<Option<String>, DecodeError> {
    read_opt_limited(r, MAX_FIELD_LEN)
}

fn read_opt_limited(r: &mut Reader<'_>, limit: usize) -> Result<Option<String>, DecodeError> {
    match read_bool(r, "text presence")? {
        true => read_text(r, limit).map(Some),
        false => Ok(None),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn any_table() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-z_]{1,12}")
    }

    pub fn any_admin_request() -> impl Strategy<Value = AdminRequest> {
        prop_oneof![
            Just(AdminRequest::Status),
            Just(AdminRequest::Info),
            any_table().prop_map(|table| AdminRequest::TableStats { table }),
            any_table().prop_map(|table| AdminRequest::Flush { table }),
            any_table().prop_map(|table| AdminRequest::Compact { table }),
            Just(AdminRequest::Drain),
            Just(AdminRequest::Ring),
            super::super::repair::tests::any_repair_request().prop_map(AdminRequest::Repair),
            Just(AdminRequest::Netstats),
            Just(AdminRequest::Decommission),
            any::<u128>().prop_map(|host_id| AdminRequest::RemoveNode { host_id }),
            any_table().prop_map(|table| AdminRequest::Cleanup { table }),
        ]
    }

    fn any_node_status() -> impl Strategy<Value = NodeStatus> {
        let liveness = prop_oneof![Just(Liveness::Up), Just(Liveness::Down)];
        let state = prop_oneof![
            Just(RingState::Normal),
            Just(RingState::Joining),
            Just(RingState::Leaving),
            Just(RingState::Moving)
        ];
        let effective = proptest::option::of(
            (1..=16u32, 0.0..=1.0f64)
                .prop_map(|(replication_factor, owns)| EffectiveOwnership { replication_factor, owns }),
        );
        ("[0-9.:]{0,21}", liveness, state, any::<u64>(), any::<u32>(), 0.0..=1.0f64, any::<u128>(), effective).prop_map(
            |(address, liveness, state, load_bytes, tokens, owns, host_id, effective)| NodeStatus {
                address,
                liveness,
                state,
                load_bytes,
                tokens,
                owns,
                host_id,
                effective,
            },
        )
    }

    fn any_shard_info() -> impl Strategy<Value = ShardInfo> {
        (
            (any::<u16>(), any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<u64>()),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>(), any::<u64>()),
            (any::<u64>(), any::<u64>(), any::<u64>()),
            (proptest::option::of(".{0,20}"), proptest::option::of(".{0,20}")),
        )
            .prop_map(|(a, b, c, d)| ShardInfo {
                shard: a.0,
                memtable_bytes: a.1,
                pending_flushes: a.2,
                flushes: a.3,
                writes: a.4,
                sstables: a.5,
                sstable_bytes: a.6,
                cache_hits: b.0,
                cache_misses: b.1,
                cache_bytes: b.2,
                pending_compactions: b.3,
                compaction_running: b.4,
                compactions_completed: b.5,
                wal_records: c.0,
                wal_bytes_written: c.1,
                wal_syncs: c.2,
                flush_error: d.0,
                compaction_error: d.1,
            })
    }

    fn any_table_stats() -> impl Strategy<Value = TableStats> {
        ("[a-z_]{1,12}", any::<u32>(), proptest::array::uniform14(any::<u64>())).prop_map(|(table, sstables, n)| {
            TableStats {
                table,
                sstables,
                space_used_bytes: n[0],
                memtable_bytes: n[1],
                memtable_partitions: n[2],
                reads: n[3],
                range_scans: n[4],
                writes: n[5],
                sstable_tombstones: n[6],
                bloom_positives: n[7],
                bloom_false_positives: n[8],
                tombstones_scanned: n[9],
                read_p50_nanos: n[10],
                read_p99_nanos: n[11],
                write_p50_nanos: n[12],
                write_p99_nanos: n[13],
            }
        })
    }

    fn any_ring_entry() -> impl Strategy<Value = RingEntry> {
        let liveness = prop_oneof![Just(Liveness::Up), Just(Liveness::Down)];
        let state = prop_oneof![Just(RingState::Normal), Just(RingState::Joining), Just(RingState::Leaving)];
        (any::<i64>(), "[0-9.:]{0,21}", liveness, state, any::<u16>(), any::<u64>(), 0.0..=1.0f64, any::<u128>())
            .prop_map(|(token, address, liveness, state, shard, load_bytes, owns, host_id)| RingEntry {
                token,
                address,
                liveness,
                state,
                shard,
                load_bytes,
                owns,
                host_id,
            })
    }

    fn any_done() -> impl Strategy<Value = AdminDone> {
        (any::<u32>(), proptest::array::uniform6(any::<u64>())).prop_map(|(shards, n)| AdminDone {
            shards,
            memtable_bytes: n[0],
            compactions: n[1],
            sstables_in: n[2],
            sstables_out: n[3],
            bytes_in: n[4],
            bytes_out: n[5],
        })
    }

    fn any_netstats() -> impl Strategy<Value = Netstats> {
        let peer = (any::<u128>(), "[0-9.:]{1,21}", proptest::array::uniform5(any::<u64>())).prop_map(
            |(host_id, address, n)| StreamPeer {
                host_id,
                address,
                ranges_done: n[0],
                partitions: n[1],
                rows: n[2],
                bytes: n[3],
                failures: n[4],
            },
        );
        (
            "[A-Z: a-z]{1,30}",
            any::<u64>(),
            any::<u64>(),
            0.0..1e6f64,
            any::<u64>(),
            proptest::option::of("[a-z ]{0,40}"),
            proptest::collection::vec(peer, 0..3),
        )
            .prop_map(|(mode, ranges_total, ranges_done, seconds, throughput_limit, error, peers)| Netstats {
                mode,
                ranges_total,
                ranges_done,
                seconds,
                throughput_limit,
                error,
                peers,
            })
    }

    fn any_leave_done() -> impl Strategy<Value = LeaveDone> {
        (any::<u128>(), proptest::array::uniform5(any::<u64>()), 0.0..1e6f64).prop_map(|(host_id, n, seconds)| {
            LeaveDone { host_id, ranges: n[0], partitions: n[1], rows: n[2], bytes: n[3], seconds, hints_left: n[4] }
        })
    }

    pub fn any_admin_result() -> impl Strategy<Value = AdminResult> {
        prop_oneof![
            proptest::collection::vec(any_node_status(), 0..3).prop_map(AdminResult::Status),
            (
                any::<u128>(),
                any::<u64>(),
                any::<u64>(),
                any::<bool>(),
                proptest::collection::vec(any_shard_info(), 0..3),
                any::<u64>(),
                proptest::option::of((any::<u64>(), any::<u64>(), "[ -~]{0,40}")),
            )
                .prop_map(|(host_id, uptime_ms, load_bytes, drained, shards, hints_pending, memory)| {
                    let memory = memory.map(|(memtable_budget, cache_budget, why)| MemoryBudgets {
                        memtable_budget,
                        cache_budget,
                        why,
                    });
                    AdminResult::Info(NodeInfo {
                        host_id,
                        uptime_ms,
                        load_bytes,
                        drained,
                        shards,
                        hints_pending,
                        memory,
                    })
                }),
            proptest::collection::vec(any_table_stats(), 0..3).prop_map(AdminResult::TableStats),
            any_done().prop_map(AdminResult::Flushed),
            any_done().prop_map(AdminResult::Compacted),
            any_done().prop_map(AdminResult::Drained),
            proptest::collection::vec(any_ring_entry(), 0..3).prop_map(AdminResult::Ring),
            super::super::repair::tests::any_repair_result().prop_map(AdminResult::Repair),
            any_netstats().prop_map(AdminResult::Netstats),
            any_leave_done().prop_map(AdminResult::Decommissioned),
            any_leave_done().prop_map(AdminResult::Removed),
            proptest::collection::vec(
                ("[a-z_]{1,12}", any::<[u64; 6]>()).prop_map(|(table, n)| CleanedTable {
                    table,
                    sstables_in: n[0],
                    sstables_out: n[1],
                    bytes_in: n[2],
                    bytes_out: n[3],
                    partitions_in: n[4],
                    partitions_dropped: n[5],
                }),
                0..3
            )
            .prop_map(AdminResult::Cleaned),
        ]
    }

    #[test]
    fn status_codes_are_nodetools_letters() {
        let mut node = NodeStatus {
            address: "127.0.0.1:9470".into(),
            liveness: Liveness::Up,
            state: RingState::Normal,
            load_bytes: 0,
            tokens: 8,
            owns: 1.0,
            host_id: 7,
            effective: None,
        };
        assert_eq!(node.code(), "UN");
        node.liveness = Liveness::Down;
        node.state = RingState::Leaving;
        assert_eq!(node.code(), "DL");
    }

    #[test]
    fn ownership_outside_zero_to_one_is_refused() {
        let node = NodeStatus {
            address: "a".into(),
            liveness: Liveness::Up,
            state: RingState::Normal,
            load_bytes: 1,
            tokens: 1,
            owns: 0.5,
            host_id: 1,
            effective: Some(EffectiveOwnership { replication_factor: 3, owns: 0.75 }),
        };
        let mut w = Writer::new();
        node.write(&mut w);
        let mut bytes = w.into_bytes();
        // address (4 + 1), liveness, state, load (8), tokens (4): then the ownership bits.
        let at = 4 + 1 + 1 + 1 + 8 + 4;
        assert_eq!(bytes[at..at + 8], 0.5f64.to_bits().to_le_bytes());
        for bad in [f64::NAN, 1.5, -0.1] {
            bytes[at..at + 8].copy_from_slice(&bad.to_bits().to_le_bytes());
            let err = NodeStatus::read(&mut Reader::new(&bytes)).unwrap_err();
            assert!(err.to_string().contains("ownership"), "{err}");
        }
    }

    #[test]
    fn cache_hit_rate_sums_every_shard() {
        let shard = |hits, misses| ShardInfo { cache_hits: hits, cache_misses: misses, ..ShardInfo::default() };
        let mut info = NodeInfo {
            host_id: 1,
            uptime_ms: 0,
            load_bytes: 0,
            drained: false,
            shards: vec![],
            hints_pending: 0,
            memory: None,
        };
        assert_eq!(info.cache_hit_rate(), None);
        info.shards = vec![shard(3, 1), shard(0, 0), shard(1, 3)];
        assert_eq!(info.cache_hit_rate(), Some(0.5));
    }

    #[test]
    fn unknown_commands_and_results_are_typed_errors() {
        let err = AdminRequest::read(&mut Reader::new(&[200])).unwrap_err();
        assert!(err.to_string().contains("unknown command 200"), "{err}");
        let err = AdminResult::read(&mut Reader::new(&[0])).unwrap_err();
        assert!(err.to_string().contains("unknown result 0"), "{err}");
    }
}

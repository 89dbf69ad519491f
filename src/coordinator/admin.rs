//! The server side of `enigmadb admin` (nodetool's commands): answers an ADMIN request from
//! the node's counters (`Node::stats`) and operations (`flush`, `compact`, `drain`, `cleanup`). It reads
//! counters and calls node operations only; it never reaches into a shard or the query path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use shards::latency::LatencyHistogram;
use shards::shard::{node_table_counters, ShardStats, TableCounters};
use wire::protocol::{
    AdminDone, AdminRequest, AdminResult, EffectiveOwnership, ErrorCode, ErrorResponse, Liveness, MemoryBudgets,
    Netstats, NodeInfo, NodeStatus, Response, RingEntry, RingState, ShardInfo, StreamPeer, TableStats, MAX_ADMIN_ITEMS,
};

use super::proxy::replication_factor;
use super::{node_error, Coordinator};
use crate::cluster::gossip::Status;
use crate::cluster::service::MemberStatus;
use crate::cluster::HostId;

/// What the admin commands know beyond the node: when the coordinator started and where
/// clients reach it.
pub(super) struct AdminState {
    started: Instant,
    client_address: SocketAddr,
    /// What the shards were given for MemTables and cache, for `info`.
    pub(super) memory: Option<MemoryBudgets>,
}

impl AdminState {
    pub(super) fn new(client_address: SocketAddr) -> AdminState {
        AdminState { started: Instant::now(), client_address, memory: None }
    }
}

impl Coordinator {
    /// This node's name in traces and status: its client address.
    pub(super) fn node_name(&self) -> String {
        self.admin.client_address.to_string()
    }

    /// Answers one admin command: a RESULT of kind admin, or a typed error (`Invalid` for a
    /// table the node does not know).
    pub(super) async fn admin(&self, command: AdminRequest) -> Response {
        match self.run_admin(command).await {
            Ok(result) => Response::Admin(result),
            Err(e) => Response::Error(e),
        }
    }

    async fn run_admin(&self, command: AdminRequest) -> Result<AdminResult, ErrorResponse> {
        let table = match &command {
            AdminRequest::TableStats { table }
            | AdminRequest::Flush { table }
            | AdminRequest::Compact { table }
            | AdminRequest::Cleanup { table } => table.as_deref().map(|name| self.admin_table(name)).transpose()?,
            AdminRequest::Status
            | AdminRequest::Info
            | AdminRequest::Drain
            | AdminRequest::Repair(_)
            | AdminRequest::Netstats
            | AdminRequest::Ring => None,
            // Range movements answer once they complete (or fail).
            AdminRequest::Decommission => return self.decommission().await,
            AdminRequest::RemoveNode { host_id } => return self.removenode(*host_id).await,
        };
        let stats = self.node.stats().await.map_err(node_error)?;
        let shards = stats.len() as u32;
        let memtable_bytes = stats.iter().map(|s| s.memtable_bytes as u64).sum();
        Ok(match command {
            AdminRequest::Status => AdminResult::Status(self.status(&stats)),
            AdminRequest::Info => AdminResult::Info(self.info(&stats)),
            AdminRequest::Netstats => AdminResult::Netstats(self.netstats()),
            AdminRequest::TableStats { .. } => AdminResult::TableStats(self.table_stats(&stats, table)),
            AdminRequest::Ring => AdminResult::Ring(self.ring(&stats)?),
            AdminRequest::Flush { .. } => {
                // MemTables of all tables of a shard share one WAL generation, so a flush
                // writes out every table's MemTable (the name is checked above).
                self.node.flush().await.map_err(node_error)?;
                AdminResult::Flushed(AdminDone { shards, memtable_bytes, ..AdminDone::default() })
            }
            AdminRequest::Compact { .. } => {
                let reports = self.node.compact(table).await.map_err(node_error)?;
                let mut done = AdminDone { shards, memtable_bytes, ..AdminDone::default() };
                for r in &reports {
                    done.compactions += r.compactions;
                    done.sstables_in += r.sstables_in as u64;
                    done.sstables_out += r.sstables_out as u64;
                    done.bytes_in += r.bytes_in;
                    done.bytes_out += r.bytes_out;
                }
                AdminResult::Compacted(done)
            }
            AdminRequest::Cleanup { .. } => AdminResult::Cleaned(self.cleanup(table).await?),
            AdminRequest::Repair(request) => AdminResult::Repair(self.repair(request).await?),
            AdminRequest::Decommission | AdminRequest::RemoveNode { .. } => {
                unreachable!("answered above")
            }
            AdminRequest::Drain => {
                self.node.drain().await.map_err(node_error)?;
                tracing::info!(memtable_bytes, "drained: MemTables flushed, writes refused until restart");
                AdminResult::Drained(AdminDone { shards, memtable_bytes, ..AdminDone::default() })
            }
        })
    }

    /// The table named `name` as clients see it (the node's own tables are hidden).
    fn admin_table(&self, name: &str) -> Result<wire::TableId, ErrorResponse> {
        (self.schemas())(name)
            .map(|schema| schema.id)
            .ok_or_else(|| ErrorResponse::new(ErrorCode::Invalid, format!("Table '{name}' doesn't exist")))
    }

    /// `netstats`: this node's bootstrap streams (a node without the cluster service, or that
    /// never bootstrapped, is NORMAL with none).
    fn netstats(&self) -> Netstats {
        let progress = self.cluster().map(|c| c.progress()).unwrap_or_default();
        Netstats {
            mode: progress.phase.name().to_owned(),
            ranges_total: progress.ranges_total,
            ranges_done: progress.ranges_done,
            seconds: progress.seconds,
            throughput_limit: progress.throughput_limit.unwrap_or(0),
            error: progress.error.clone(),
            peers: progress
                .peers
                .iter()
                .map(|p| StreamPeer {
                    host_id: p.host,
                    address: p.peer.clone(),
                    ranges_done: p.ranges_done,
                    partitions: p.partitions,
                    rows: p.rows,
                    bytes: p.bytes,
                    failures: p.failures,
                })
                .collect(),
        }
    }

    /// Every node of the cluster as `status` lists it, with its effective ownership when the
    /// user tables share one replication factor.
    fn status(&self, stats: &[ShardStats]) -> Vec<NodeStatus> {
        let rf = common_replication_factor(&self.node.tables());
        let Some(cluster) = self.cluster() else {
            let mut local = self.local_status(stats);
            // A single node holds a replica of every token.
            local.effective = rf.map(|rf| EffectiveOwnership { replication_factor: rf as u32, owns: 1.0 });
            return vec![local];
        };
        let view = self.proxy.view();
        let effective = rf.map(|rf| (rf, view.ring().replica_ownership(rf, |(host, _)| *host)));
        let mut nodes: Vec<NodeStatus> = cluster.status().iter().filter_map(member_status).collect();
        for node in &mut nodes {
            // Peers' load is what they gossiped last; this node's is current.
            if node.host_id == cluster.local() {
                node.load_bytes = load(stats);
            }
            node.effective = effective.as_ref().map(|(rf, shares)| EffectiveOwnership {
                replication_factor: *rf as u32,
                // A share computed in floating point may pass 1 by a rounding error.
                owns: shares.get(&node.host_id).copied().unwrap_or(0.0).clamp(0.0, 1.0),
            });
        }
        nodes
    }

    fn local_status(&self, stats: &[ShardStats]) -> NodeStatus {
        NodeStatus {
            address: self.node_name(),
            // This node is answering, and it neither joins nor leaves a ring yet.
            liveness: Liveness::Up,
            state: RingState::Normal,
            load_bytes: load(stats),
            tokens: self.node.token_count() as u32,
            // A single node owns every token of its ring; the cluster layer computes shares.
            owns: 1.0,
            host_id: self.node.host_id(),
            effective: None,
        }
    }

    fn info(&self, stats: &[ShardStats]) -> NodeInfo {
        let shards = stats
            .iter()
            .map(|s| ShardInfo {
                shard: s.shard,
                memtable_bytes: s.memtable_bytes as u64,
                pending_flushes: s.immutable_memtables as u32,
                flushes: s.flushes,
                writes: s.writes,
                sstables: s.sstables as u32,
                sstable_bytes: s.sstable_bytes,
                cache_hits: s.cache.hits,
                cache_misses: s.cache.misses,
                cache_bytes: s.cache.bytes as u64,
                pending_compactions: s.compaction.pending as u32,
                compaction_running: s.compaction.running,
                compactions_completed: s.compaction.completed,
                wal_records: s.wal.records,
                wal_bytes_written: s.wal.bytes_written,
                wal_syncs: s.wal.syncs,
                flush_error: s.flush_error.clone(),
                compaction_error: s.compaction.last_error.clone(),
            })
            .collect();
        NodeInfo {
            host_id: self.node.host_id(),
            uptime_ms: self.admin.started.elapsed().as_millis() as u64,
            load_bytes: load(stats),
            drained: self.node.is_drained(),
            shards,
            hints_pending: self.hint_store().map_or(0, |h| h.counts().pending_total()),
            memory: self.admin.memory.clone(),
        }
    }

    /// Per table (only `only`, if given), summed over the shards, sorted by name.
    fn table_stats(&self, stats: &[ShardStats], only: Option<wire::TableId>) -> Vec<TableStats> {
        let mut tables = Vec::new();
        let totals = node_table_counters(stats);
        let mut schemas = self.node.tables();
        schemas.retain(|t| (only.is_none() || only == Some(t.id)) && (self.schemas())(&t.name).is_some());
        schemas.sort_by(|a, b| a.name.cmp(&b.name));
        for schema in schemas {
            let mut out = TableStats { table: schema.name.clone(), ..TableStats::default() };
            for t in stats.iter().flat_map(|s| s.table_sstables.iter()).filter(|t| t.table == schema.id) {
                out.sstables += t.sstables as u32;
                out.space_used_bytes += t.bytes;
            }
            let empty = TableCounters::default();
            let c = totals.binary_search_by_key(&schema.id, |c| c.table).map_or(&empty, |at| &totals[at]);
            out.memtable_bytes = c.memtable_bytes as u64;
            out.memtable_partitions = c.memtable_partitions as u64;
            out.reads = c.reads;
            out.range_scans = c.range_scans;
            out.writes = c.writes;
            out.sstable_tombstones = c.sstable_tombstones;
            out.bloom_positives = c.sstable_reads.bloom_positives;
            out.bloom_false_positives = c.sstable_reads.bloom_false_positives;
            out.tombstones_scanned = c.tombstones_scanned;
            let nanos = |h: &LatencyHistogram, q| h.quantile(q).map_or(0, |d| d.as_nanos() as u64);
            out.read_p50_nanos = nanos(&c.read_latency, 0.5);
            out.read_p99_nanos = nanos(&c.read_latency, 0.99);
            out.write_p50_nanos = nanos(&c.write_latency, 0.5);
            out.write_p99_nanos = nanos(&c.write_latency, 0.99);
            tables.push(out);
        }
        tables
    }

    /// Every vnode of the ring this node routes by, in token order, with its owner as this
    /// node knows it (liveness from the failure detector, state and load from gossip).
    fn ring(&self, stats: &[ShardStats]) -> Result<Vec<RingEntry>, ErrorResponse> {
        let view = self.proxy.view();
        let vnodes = view.ring().vnodes();
        if vnodes.len() > MAX_ADMIN_ITEMS {
            return Err(ErrorResponse::new(
                ErrorCode::Invalid,
                format!("the ring has {} vnodes, more than one admin answer lists ({MAX_ADMIN_ITEMS})", vnodes.len()),
            ));
        }
        let members: HashMap<HostId, MemberStatus> =
            self.cluster().map(|c| c.status().into_iter().map(|m| (m.host, m)).collect()).unwrap_or_default();
        let entries = vnodes.iter().zip(view.ring().vnode_shares()).map(|(&(token, (host, shard)), owns)| {
            let member = view.member(host);
            let gossiped = members.get(&host);
            RingEntry {
                token,
                address: member.map_or_else(|| "unknown".to_owned(), |m| m.client.to_string()),
                liveness: if member.is_some_and(|m| m.alive) { Liveness::Up } else { Liveness::Down },
                // Every vnode's node is in the view, which leaves out nodes gone from the ring.
                state: ring_state(gossiped.and_then(|m| m.status)).unwrap_or(RingState::Normal),
                shard,
                load_bytes: match host == view.local() {
                    true => load(stats),
                    false => gossiped.and_then(|m| m.load).unwrap_or(0),
                },
                // A share computed in floating point may pass 1 by a rounding error.
                owns: owns.clamp(0.0, 1.0),
                host_id: host,
            }
        });
        Ok(entries.collect())
    }
}

/// Bytes of live SSTables on every shard (Cassandra's "Load").
fn load(stats: &[ShardStats]) -> u64 {
    stats.iter().map(|s| s.sstable_bytes).sum()
}

/// A gossiped status as nodetool's state letter shows it; `None` for a node out of the ring
/// (left or removed), which `status` does not list, as nodetool does not. A node shut down is
/// Normal (and down: its liveness says so); no status makes Moving (there is no move).
fn ring_state(status: Option<Status>) -> Option<RingState> {
    match status {
        // No status yet: not in the ring yet (a bootstrapping node gossips none until it
        // announces JOINING with its tokens).
        Some(Status::Joining) | None => Some(RingState::Joining),
        Some(Status::Leaving) => Some(RingState::Leaving),
        Some(Status::Normal) | Some(Status::Shutdown) => Some(RingState::Normal),
        Some(Status::Left { .. }) | Some(Status::Removed { .. }) => None,
    }
}

/// A node as the cluster service knows it, as `status` shows it; `None` for a node that left
/// the ring.
fn member_status(m: &MemberStatus) -> Option<NodeStatus> {
    Some(NodeStatus {
        address: m.client.map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
        liveness: if m.up { Liveness::Up } else { Liveness::Down },
        state: ring_state(m.status)?,
        load_bytes: m.load.unwrap_or(0),
        tokens: m.tokens as u32,
        // Summed floating-point shares may pass 1 by a rounding error.
        owns: m.owns.clamp(0.0, 1.0),
        host_id: m.host,
        effective: None,
    })
}

/// The replication factor every user table has, if they share one (Cassandra shows effective
/// ownership only when the keyspaces agree on their replication); None without user tables.
fn common_replication_factor(tables: &[std::sync::Arc<wire::schema::TableSchema>]) -> Option<usize> {
    let mut rfs = tables.iter().filter(|t| !shards::catalog::is_local_table(&t.name)).map(|t| replication_factor(t));
    let first = rfs.next()?;
    rfs.all(|rf| rf == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(up: bool, status: Option<Status>) -> MemberStatus {
        MemberStatus {
            host: 7,
            client: Some(SocketAddr::from(([127, 0, 0, 7], 9470))),
            peer: None,
            up,
            status,
            load: Some(10),
            tokens: 16,
            owns: 0.25,
            schema_version: None,
            generation: 1,
            heartbeat_version: 1,
            phi: None,
        }
    }

    #[test]
    fn status_shows_nodetools_letters_and_leaves_out_nodes_gone_from_the_ring() {
        let code = |up, status| member_status(&member(up, status)).map(|n| n.code());
        assert_eq!(code(true, Some(Status::Normal)).as_deref(), Some("UN"));
        assert_eq!(code(true, Some(Status::Joining)).as_deref(), Some("UJ"));
        assert_eq!(code(true, Some(Status::Leaving)).as_deref(), Some("UL"));
        assert_eq!(code(false, Some(Status::Leaving)).as_deref(), Some("DL"));
        assert_eq!(code(false, Some(Status::Shutdown)).as_deref(), Some("DN"));
        assert_eq!(code(false, None).as_deref(), Some("DJ"), "a node not in the ring yet");
        assert_eq!(code(true, Some(Status::Left { expires_at_ms: 1 })), None);
        assert_eq!(code(false, Some(Status::Removed { expires_at_ms: 1 })), None);
    }
}

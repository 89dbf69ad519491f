//! Anti-entropy repair (Cassandra's repair session, with this node as the hub): for one token
//! range of one table, Merkle trees from this node and every live replica, the differing
//! sub-ranges pulled from the replicas (SCAN) and pushed back to those still differing
//! (MUTATE), original timestamps kept so last-write-wins settles every cell. It never decides
//! placement (the cluster view does) and never touches a shard except through `Node`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::key::PartitionKey;
use shards::mutation::PartitionUpdate;
use shards::node::{Node, NodeError};
use shards::row::Partition;
use shards::scan::ScanBound;
use wire::protocol::{
    ErrorCode, ErrorResponse, RangeRepaired, RangeRequest, RepairRange, RepairRequest, RepairResult, MAX_ADMIN_ITEMS,
};
use wire::schema::TableId;

use super::proxy::replication_factor;
use super::stream::{local_page, peer_page, STREAM_TIMEOUT};
use super::{node_error, Coordinator};
use crate::cluster::merkle::{MerkleTree, RangePager, TokenRange, TreeBuilder, TreeRequest, DEFAULT_TREE_DEPTH};
use crate::cluster::messages;
use crate::cluster::transport::{PeerAnswer, PeerRequest, Peers};
use crate::cluster::verbs::MutateBody;
use crate::cluster::view::{ClusterView, Replica};
use crate::metrics::{Exposition, Kind, MetricsSource};

/// Partitions per page of the scans that build trees and stream sub-ranges, and so per MUTATE
/// a repair sends (a page is held in memory, and a MUTATE must fit in a frame).
pub const REPAIR_PAGE_PARTITIONS: usize = 64;
/// How long a replica may take to build and send its tree of one range.
const TREE_TIMEOUT: Duration = Duration::from_secs(60);
/// Sessions whose totals are kept until their last range; past it the oldest is forgotten
/// (a client that gave up halfway), and its end is not logged.
const MAX_OPEN_SESSIONS: usize = 16;

/// The repair sessions of this coordinator and their counters.
pub(super) struct Repairs {
    metrics: Rc<RepairMetrics>,
    sessions: RefCell<VecDeque<Session>>,
    next_session: Cell<u64>,
}

struct Session {
    id: u64,
    started: Instant,
    ranges: usize,
    done: usize,
    totals: RangeRepaired,
}

impl Repairs {
    pub(super) fn new() -> Repairs {
        // Session ids need only differ between the sessions of one process run.
        let first = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs());
        Repairs { metrics: Rc::default(), sessions: RefCell::default(), next_session: Cell::new(first << 16) }
    }

    fn open(&self, tables: usize, ranges: usize, primary_only: bool) -> u64 {
        let id = self.next_session.get();
        self.next_session.set(id + 1);
        bump(&self.metrics.sessions_started, 1);
        tracing::info!(session = id, tables, ranges, primary_only, "repair session started");
        if ranges == 0 {
            self.finish(Session { id, started: Instant::now(), ranges, done: 0, totals: RangeRepaired::default() });
            return id;
        }
        let mut sessions = self.sessions.borrow_mut();
        if sessions.len() == MAX_OPEN_SESSIONS {
            if let Some(old) = sessions.pop_front() {
                tracing::debug!(session = old.id, done = old.done, ranges = old.ranges, "repair session forgotten");
            }
        }
        sessions.push_back(Session { id, started: Instant::now(), ranges, done: 0, totals: RangeRepaired::default() });
        id
    }

    fn range_done(&self, session: u64, done: &RangeRepaired) {
        self.metrics.count(done);
        let finished = {
            let mut sessions = self.sessions.borrow_mut();
            let Some(at) = sessions.iter().position(|s| s.id == session) else { return };
            let s = &mut sessions[at];
            s.done += 1;
            add(&mut s.totals, done);
            if s.done < s.ranges {
                return;
            }
            sessions.remove(at)
        };
        if let Some(session) = finished {
            self.finish(session);
        }
    }

    fn finish(&self, s: Session) {
        bump(&self.metrics.sessions_finished, 1);
        let t = &s.totals;
        tracing::info!(
            session = s.id,
            ranges = s.ranges,
            subranges_streamed = t.subranges_streamed,
            rows_received = t.rows_received,
            rows_sent = t.rows_sent,
            bytes_received = t.bytes_received,
            bytes_sent = t.bytes_sent,
            replicas_skipped = t.replicas_skipped,
            seconds = s.started.elapsed().as_secs_f64(),
            "repair session finished"
        );
    }
}

/// Adds what one range did to a session's totals.
fn add(totals: &mut RangeRepaired, done: &RangeRepaired) {
    totals.replicas_compared += done.replicas_compared;
    totals.replicas_skipped += done.replicas_skipped;
    totals.subranges_streamed += done.subranges_streamed;
    totals.partitions_received += done.partitions_received;
    totals.partitions_sent += done.partitions_sent;
    totals.rows_received += done.rows_received;
    totals.rows_sent += done.rows_sent;
    totals.bytes_received += done.bytes_received;
    totals.bytes_sent += done.bytes_sent;
}

fn bump(counter: &Cell<u64>, by: u64) {
    counter.set(counter.get() + by);
}

/// Repair counters since the node started (`enigmadb_repair_*`).
#[derive(Default)]
pub struct RepairMetrics {
    sessions_started: Cell<u64>,
    sessions_finished: Cell<u64>,
    ranges_compared: Cell<u64>,
    ranges_differing: Cell<u64>,
    replicas_skipped: Cell<u64>,
    /// [received, sent]
    partitions: [Cell<u64>; 2],
    rows: [Cell<u64>; 2],
    bytes: [Cell<u64>; 2],
}

impl RepairMetrics {
    fn count(&self, done: &RangeRepaired) {
        bump(&self.ranges_compared, u64::from(done.replicas_compared > 0));
        bump(&self.ranges_differing, u64::from(done.subranges_streamed > 0));
        bump(&self.replicas_skipped, u64::from(done.replicas_skipped));
        for (cells, (received, sent)) in [
            (&self.partitions, (done.partitions_received, done.partitions_sent)),
            (&self.rows, (done.rows_received, done.rows_sent)),
            (&self.bytes, (done.bytes_received, done.bytes_sent)),
        ] {
            bump(&cells[0], received);
            bump(&cells[1], sent);
        }
    }
}

impl MetricsSource for RepairMetrics {
    fn collect(&self, out: &mut Exposition) {
        let counters = [
            ("enigmadb_repair_sessions_started_total", "Repair sessions started on this node.", &self.sessions_started),
            (
                "enigmadb_repair_sessions_finished_total",
                "Repair sessions whose every range was repaired.",
                &self.sessions_finished,
            ),
            (
                "enigmadb_repair_ranges_compared_total",
                "Token ranges whose Merkle trees were compared with another replica's.",
                &self.ranges_compared,
            ),
            (
                "enigmadb_repair_ranges_differing_total",
                "Compared token ranges where replicas differed.",
                &self.ranges_differing,
            ),
            (
                "enigmadb_repair_replicas_skipped_total",
                "Replicas left out of a range's repair: down or failing.",
                &self.replicas_skipped,
            ),
        ];
        for (name, help, value) in counters {
            out.family(name, Kind::Counter, help);
            out.sample(name, &[], value.get() as f64);
        }
        let streamed = [
            ("enigmadb_repair_partitions_streamed_total", "Partitions streamed by repair.", &self.partitions),
            ("enigmadb_repair_rows_streamed_total", "Rows streamed by repair.", &self.rows),
            ("enigmadb_repair_bytes_streamed_total", "Bytes of partitions streamed by repair.", &self.bytes),
        ];
        for (name, help, cells) in streamed {
            out.family(name, Kind::Counter, help);
            out.sample(name, &[("direction", "received")], cells[0].get() as f64);
            out.sample(name, &[("direction", "sent")], cells[1].get() as f64);
        }
    }
}

/// The vnode ranges of the ring whose replicas at `rf` are this node and at least one other
/// (only those this node is the first replica of when `primary_only`), in ring order, each cut
/// where its pending replicas change while ranges move. Every token of a returned range has
/// the same natural and pending replicas ([`replicas_to_repair`]).
pub fn ranges_to_repair(view: &ClusterView, rf: usize, primary_only: bool) -> Vec<TokenRange> {
    let vnodes = view.ring().vnodes();
    let boundaries = view.pending_boundaries(rf);
    // A ring is never empty.
    let mut previous = vnodes[vnodes.len() - 1].0;
    let mut ranges = Vec::new();
    for &(token, _) in vnodes {
        let range = TokenRange::new(previous, token);
        previous = token;
        let replicas = view.replicas(token, rf);
        let natural_shared = replicas.len() > 1;
        let keep = match replicas.iter().position(|r| r.local) {
            Some(0) => true,
            Some(_) => !primary_only,
            None => false,
        };
        if !keep {
            continue;
        }
        for piece in range.split_at(boundaries.iter().copied()) {
            // A range this node alone replicates is still repaired towards a future replica.
            if natural_shared || !view.pending_replicas(piece.end, rf).is_empty() {
                ranges.push(piece);
            }
        }
    }
    ranges
}

/// The replicas a repair of `range` (one of [`ranges_to_repair`]) compares: the natural ones
/// and, while ranges move, the pending ones (Cassandra repairs pending ranges too, so that a
/// joining node does not miss what its streams missed).
pub fn replicas_to_repair(view: &ClusterView, range: TokenRange, rf: usize) -> Vec<Replica> {
    let mut replicas = view.replicas(range.end, rf);
    replicas.extend(view.pending_replicas(range.end, rf));
    replicas
}

/// The tree of this node's partitions of `request.table` in `request.range` (the MERKLE_TREE
/// request of a peer, or this node's own side of a repair).
pub async fn build_tree(node: &Node, request: &TreeRequest) -> Result<MerkleTree, NodeError> {
    let mut builder = TreeBuilder::new(request.range, request.max_depth);
    let mut pager = RangePager::new(request.range, REPAIR_PAGE_PARTITIONS);
    while let Some((start, end, resume)) = pager.next_scan() {
        // Whole partitions: a leaf hashes a partition's digest, which needs all of it.
        let scan = node.scan_bounded(request.table, start, end, resume, pager.page_size(), ScanBound::WHOLE);
        let page = scan.await?;
        pager.advance(&page);
        for (key, partition) in &page.partitions {
            builder.add(key, partition);
        }
    }
    Ok(builder.finish())
}

impl Coordinator {
    /// What the metrics endpoint reports about repair.
    pub fn repair_metrics(&self) -> Rc<dyn MetricsSource> {
        self.repairs.metrics.clone()
    }

    /// ADMIN repair: a plan, or one range of it.
    pub(super) async fn repair(&self, request: RepairRequest) -> Result<RepairResult, ErrorResponse> {
        match request {
            RepairRequest::Plan { table, primary_only } => self.repair_plan(table.as_deref(), primary_only),
            RepairRequest::Range(range) => self.repair_range(range).await.map(RepairResult::Range),
        }
    }

    fn repair_plan(&self, table: Option<&str>, primary_only: bool) -> Result<RepairResult, ErrorResponse> {
        let (tables, ranges) = self.ranges_of(table, primary_only)?;
        let session = self.repairs.open(tables, ranges.len(), primary_only);
        Ok(RepairResult::Plan { session, ranges })
    }

    /// One scheduled repair (`repair_interval_ms`): every range of every table this node is
    /// the first replica of, one after another, as `enigmadb admin repair --pr` would; each
    /// node repairing its primary ranges covers the whole ring once. Failed ranges are logged
    /// and left for the next round. Nothing is logged when there is nothing to repair (a
    /// single node, or RF 1).
    pub async fn repair_primary_ranges(&self) {
        let (tables, ranges) = match self.ranges_of(None, true) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(error = %e.message, "scheduled repair: no plan");
                return;
            }
        };
        if ranges.is_empty() {
            return;
        }
        let session = self.repairs.open(tables, ranges.len(), true);
        for RepairRange { table, start, end } in ranges {
            let request = RangeRequest { session, table: table.clone(), start, end, max_depth: DEFAULT_TREE_DEPTH };
            if let Err(e) = self.repair_range(request).await {
                tracing::warn!(session, %table, start, end, error = %e.message, "scheduled repair of a range failed");
            }
        }
    }

    /// The tables a repair covers, by name: every replicated table, the clients' and the auth
    /// tables (hidden from clients, but replicated like theirs and as much in need of repair:
    /// a role written while a replica was away reaches it by hints, read repair or this);
    /// never the node's own local tables.
    fn repairable(&self) -> impl Fn(&str) -> Option<std::sync::Arc<wire::schema::TableSchema>> + '_ {
        |name: &str| match shards::catalog::is_local_table(name) {
            true => None,
            false => self.node.table(name).ok(),
        }
    }

    /// The number of tables and the ranges a repair of `table` (else of every table) covers.
    fn ranges_of(&self, table: Option<&str>, primary_only: bool) -> Result<(usize, Vec<RepairRange>), ErrorResponse> {
        let mut tables = match table {
            Some(name) => vec![(self.repairable())(name).ok_or_else(|| unknown_table(name))?],
            None => self.node.tables().into_iter().filter(|t| (self.repairable())(&t.name).is_some()).collect(),
        };
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        let view = self.proxy.view();
        let mut ranges = Vec::new();
        for t in &tables {
            for r in ranges_to_repair(&view, replication_factor(t), primary_only) {
                ranges.push(RepairRange { table: t.name.clone(), start: r.start, end: r.end });
            }
            if ranges.len() > MAX_ADMIN_ITEMS {
                return Err(ErrorResponse::new(
                    ErrorCode::Invalid,
                    format!("more than {MAX_ADMIN_ITEMS} ranges to repair: repair one table at a time"),
                ));
            }
        }
        Ok((tables.len(), ranges))
    }

    async fn repair_range(&self, request: RangeRequest) -> Result<RangeRepaired, ErrorResponse> {
        let schema = (self.repairable())(&request.table).ok_or_else(|| unknown_table(&request.table))?;
        let range = TokenRange::new(request.start, request.end);
        let view = self.proxy.view();
        let replicas = replicas_to_repair(&view, range, replication_factor(&schema));
        if !replicas.iter().any(|r| r.local) {
            return Err(ErrorResponse::new(
                ErrorCode::Invalid,
                format!("this node holds no replica of table {} in the token range {range}", schema.name),
            ));
        }
        let peers: Option<Rc<dyn Peers>> = self.cluster().map(|c| c.transport().clone() as Rc<dyn Peers>);
        let tree = TreeRequest { table: schema.id, range, max_depth: request.max_depth };
        let repair = RangeRepair { node: &self.node, clock: self.proxy.clock(), peers: peers.as_deref(), tree };
        let done = repair.run(&replicas).await.map_err(|e| match e {
            StreamError::Node(e) => node_error(e),
            StreamError::Peer(why) => ErrorResponse::new(ErrorCode::Server, why),
        })?;
        self.repairs.range_done(request.session, &done);
        Ok(done)
    }
}

/// Repairs this node's primary ranges every `interval` (after each round ends), until the task
/// is dropped.
pub async fn repair_every(coordinator: Rc<Coordinator>, interval: Duration) {
    loop {
        glommio::timer::sleep(interval).await;
        coordinator.repair_primary_ranges().await;
    }
}

fn unknown_table(name: &str) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Invalid, format!("Table '{name}' doesn't exist"))
}

/// Why streaming a sub-range stopped: this node's storage failed (the range fails), or a
/// peer did (that peer is skipped).
enum StreamError {
    Node(NodeError),
    Peer(String),
}

/// The repair of one range of one table.
struct RangeRepair<'a> {
    node: &'a Node,
    clock: &'a Rc<RefCell<shards::hlc::Hlc>>,
    peers: Option<&'a dyn Peers>,
    tree: TreeRequest,
}

impl RangeRepair<'_> {
    async fn run(&self, replicas: &[Replica]) -> Result<RangeRepaired, StreamError> {
        let mut done = RangeRepaired::default();
        let skip = |done: &mut RangeRepaired, why: String| {
            done.replicas_skipped += 1;
            done.failure.get_or_insert(why);
        };
        let mut live = Vec::new();
        for r in replicas.iter().filter(|r| !r.local) {
            match r.alive {
                true => live.push(*r),
                false => skip(&mut done, format!("{} is down", r.peer)),
            }
        }
        let Some(peers) = self.peers.filter(|_| !live.is_empty()) else {
            if !live.is_empty() {
                return Err(StreamError::Peer("this node has no peer transport".into()));
            }
            return Ok(done);
        };
        let local = build_tree(self.node, &self.tree).await.map_err(StreamError::Node)?;
        let calls = live.iter().map(|r| peers.call(r.peer, PeerRequest::MerkleTree(self.tree), TREE_TIMEOUT));
        let answers = futures_util::future::join_all(calls).await;
        let mut trees: Vec<(SocketAddr, MerkleTree)> = Vec::with_capacity(live.len());
        for (replica, answer) in live.iter().zip(answers) {
            let tree = match answer {
                Ok(PeerAnswer::MerkleTree(tree)) => Ok(tree),
                Ok(_) => unreachable!("a call answers with the request's kind"),
                Err(e) => Err(e.to_string()),
            };
            match tree {
                Ok(tree) if tree.range() == self.tree.range => trees.push((replica.peer, tree)),
                Ok(tree) => {
                    skip(&mut done, format!("{}: a tree of {}, not {}", replica.peer, tree.range(), self.tree.range))
                }
                Err(why) => skip(&mut done, format!("{}: {why}", replica.peer)),
            }
        }
        done.replicas_compared = trees.len() as u32;

        // Pull what differs from this node, once per distinct version of a leaf: replicas
        // that agree with each other send it once.
        let depth = trees.iter().map(|(_, t)| t.depth()).fold(local.depth(), u8::min);
        let mut pulled = false;
        let mut failed = vec![false; trees.len()];
        for (j, (peer, tree)) in trees.iter().enumerate() {
            let theirs = tree.level(depth);
            let leaves: Vec<usize> = local
                .differing_nodes(tree, depth)
                .unwrap_or_default()
                .into_iter()
                .filter(|&i| {
                    let pulled_alike = |m: usize| !failed[m] && trees[m].1.level(depth)[i] == theirs[i];
                    !(0..j).any(pulled_alike)
                })
                .collect();
            for range in local.ranges_of(depth, &leaves) {
                done.subranges_streamed += 1;
                pulled = true;
                match self.pull(peers, *peer, range, &mut done).await {
                    Ok(()) => {}
                    Err(StreamError::Peer(why)) => {
                        failed[j] = true;
                        skip(&mut done, why);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }

        // Push this node's merged version to every replica that still differs from it.
        let local = match pulled {
            true => build_tree(self.node, &self.tree).await.map_err(StreamError::Node)?,
            false => local,
        };
        for (j, (peer, tree)) in trees.iter().enumerate() {
            if failed[j] {
                continue;
            }
            for range in local.differences(tree).unwrap_or_default() {
                done.subranges_streamed += 1;
                match self.push(peers, *peer, range, &mut done).await {
                    Ok(()) => {}
                    Err(StreamError::Peer(why)) => {
                        skip(&mut done, why);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(done)
    }

    /// Copies `peer`'s partitions in `range` to this node, page by page.
    async fn pull(
        &self,
        peers: &dyn Peers,
        peer: SocketAddr,
        range: TokenRange,
        done: &mut RangeRepaired,
    ) -> Result<(), StreamError> {
        let mut pager = RangePager::new(range, REPAIR_PAGE_PARTITIONS);
        while let Some((start, end, resume)) = pager.next_scan() {
            let page = peer_page(peers, peer, self.tree.table, (start, end), resume, pager.page_size());
            let page = page.await.map_err(|e| peer_error(peer, e))?;
            if !page.partitions.is_empty() {
                // The answer arrives decoded; its size on the wire is measured again.
                done.bytes_received += messages::encode_scan_result(&page).len() as u64;
            }
            pager.advance(&page);
            let (updates, rows) = updates(self.tree.table, page.partitions);
            if let Some(ts) = updates.iter().filter_map(PartitionUpdate::max_timestamp).max() {
                // A timestamp too far ahead is refused by the shard below, with its reason.
                let _ = self.clock.borrow_mut().observe(ts);
            }
            done.partitions_received += updates.len() as u64;
            done.rows_received += rows;
            if !updates.is_empty() {
                self.node.apply_stamped(updates).await.map_err(StreamError::Node)?;
            }
        }
        Ok(())
    }

    /// Copies this node's partitions in `range` to `peer`, one MUTATE per page.
    async fn push(
        &self,
        peers: &dyn Peers,
        peer: SocketAddr,
        range: TokenRange,
        done: &mut RangeRepaired,
    ) -> Result<(), StreamError> {
        let mut pager = RangePager::new(range, REPAIR_PAGE_PARTITIONS);
        while let Some((start, end, resume)) = pager.next_scan() {
            let page = local_page(self.node, self.tree.table, start, end, resume, pager.page_size());
            let page = page.await.map_err(StreamError::Node)?;
            pager.advance(&page);
            let (updates, rows) = updates(self.tree.table, page.partitions);
            if updates.is_empty() {
                continue;
            }
            let body = MutateBody::encode(&updates);
            let bytes = body.bytes().len() as u64;
            if let Err(e) = peers.call(peer, PeerRequest::Mutate(body), STREAM_TIMEOUT).await {
                return Err(peer_error(peer, e));
            }
            done.partitions_sent += updates.len() as u64;
            done.rows_sent += rows;
            done.bytes_sent += bytes;
        }
        Ok(())
    }
}

fn peer_error(peer: SocketAddr, e: impl std::fmt::Display) -> StreamError {
    StreamError::Peer(format!("{peer}: {e}"))
}

/// The non-empty partitions of a page as updates carrying their stored versions (timestamps,
/// tombstones and TTLs as they are), and how many rows they hold.
pub(super) fn updates(table: TableId, page: Vec<(PartitionKey, Partition)>) -> (Vec<PartitionUpdate>, u64) {
    let mut rows = 0;
    let updates = page
        .into_iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(key, p)| {
            rows += p.rows.len() as u64;
            PartitionUpdate { table, key, deletion: p.deletion, rows: p.rows.into_iter().collect() }
        })
        .collect();
    (updates, rows)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use crate::cluster::view::Member;

    use super::*;

    fn view(local: u128, nodes: u128) -> ClusterView {
        let members = (1..=nodes)
            .map(|host| Member {
                host,
                peer: SocketAddr::from(([127, 0, 0, host as u8], 7470)),
                client: SocketAddr::from(([127, 0, 0, host as u8], 9470)),
                // Interleaved tokens: node h owns h*10, h*10 + 1000, ...
                tokens: vec![(0..4).map(|v| host as i64 * 10 + v * 1000).collect()],
                shard_aware: None,
                alive: true,
                generation: 1,
                joining: false,
                replaces: None,
                leaving: false,
            })
            .collect();
        ClusterView::new(local, members).unwrap()
    }

    #[test]
    fn every_range_of_the_ring_is_repaired_where_replicas_are_shared() {
        // RF 3 on 3 nodes: every node holds every range.
        for local in 1..=3 {
            let ranges = ranges_to_repair(&view(local, 3), 3, false);
            assert_eq!(ranges.len(), 12, "node {local}");
            let width: u128 = ranges.iter().map(TokenRange::width).sum();
            assert_eq!(width, 1 << 64, "the ranges tile the ring");
        }
        // The first-replica ranges of all nodes tile the ring once.
        let mut primary: Vec<TokenRange> = (1..=3).flat_map(|l| ranges_to_repair(&view(l, 3), 2, true)).collect();
        primary.sort_by_key(|r| r.end);
        assert_eq!(primary.len(), 12);
        assert_eq!(primary.iter().map(TokenRange::width).sum::<u128>(), 1 << 64);
        // RF 2 of 3 nodes: each node holds two thirds of the ranges.
        assert_eq!(ranges_to_repair(&view(2, 3), 2, false).len(), 8);
        // Nothing shared: RF 1, or a node alone.
        assert!(ranges_to_repair(&view(1, 3), 1, false).is_empty());
        assert!(ranges_to_repair(&view(1, 1), 3, false).is_empty());
    }

    #[test]
    fn ranges_moving_to_a_joining_node_are_cut_where_pending_replicas_change_and_include_them() {
        let mut members = view(1, 3).members().to_vec();
        members.push(Member {
            host: 4,
            peer: SocketAddr::from(([127, 0, 0, 4], 7470)),
            client: SocketAddr::from(([127, 0, 0, 4], 9470)),
            // Inside node 1's first ranges: it takes part of ranges the others hold.
            tokens: vec![vec![15, 2015]],
            shard_aware: None,
            alive: true,
            generation: 1,
            joining: true,
            replaces: None,
            leaving: false,
        });
        let joining = ClusterView::new(1, members).unwrap();
        let before = ranges_to_repair(&view(1, 3), 2, false);
        let ranges = ranges_to_repair(&joining, 2, false);
        assert!(ranges.len() > before.len(), "cut at the pending boundaries: {ranges:?}");
        assert_eq!(
            ranges.iter().map(TokenRange::width).sum::<u128>(),
            before.iter().map(TokenRange::width).sum::<u128>(),
            "the same tokens, cut"
        );
        let mut with_pending = 0;
        for r in &ranges {
            let first = r.start.wrapping_add(1);
            let pending = joining.pending_replicas(r.end, 2);
            let hosts = |v: Vec<Replica>| v.iter().map(|r| r.host).collect::<Vec<_>>();
            assert_eq!(hosts(joining.pending_replicas(first, 2)), hosts(pending.clone()), "one set over {r:?}");
            let replicas = replicas_to_repair(&joining, *r, 2);
            assert!(replicas.iter().any(|r| r.local));
            if !pending.is_empty() {
                with_pending += 1;
                assert!(replicas.iter().any(|r| r.host == 4), "the joining node is repaired too: {r:?}");
            }
        }
        assert!(with_pending > 0, "some of node 1's ranges move to node 4");
    }

    #[test]
    fn updates_keep_stored_versions_and_skip_empty_partitions() {
        use shards::cell::{Cell as StoredCell, Deletion};
        use shards::key::ClusteringKey;
        use shards::row::Row;
        let mut rows = std::collections::BTreeMap::new();
        let cells = vec![(1, StoredCell::Live { ts: 42, value: b"v".to_vec() })];
        rows.insert(ClusteringKey::default(), Row { marker: None, deletion: None, cells });
        let full = Partition { deletion: Some(Deletion { ts: 7, deleted_at: 1 }), rows };
        let key = |b: u8| PartitionKey::from_serialized(vec![b]);
        let (out, count) = updates(5, vec![(key(1), full.clone()), (key(2), Partition::default())]);
        assert_eq!(count, 1);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].table, &out[0].key, out[0].max_timestamp()), (5, &key(1), Some(42)));
        assert_eq!(out[0].clone().into_partition(), full);
    }

    #[test]
    fn metrics_count_ranges_and_streams_by_direction() {
        let metrics = RepairMetrics::default();
        let done = RangeRepaired {
            replicas_compared: 2,
            subranges_streamed: 1,
            rows_received: 3,
            bytes_received: 100,
            bytes_sent: 7,
            ..Default::default()
        };
        metrics.count(&done);
        metrics.count(&RangeRepaired { replicas_compared: 2, replicas_skipped: 1, ..Default::default() });
        let mut out = Exposition::new();
        metrics.collect(&mut out);
        let scrape = crate::metrics::text::parse(&out.finish()).unwrap();
        let received = [("direction", "received")];
        assert_eq!(scrape.sum("enigmadb_repair_ranges_compared_total", &[]), 2.0);
        assert_eq!(scrape.sum("enigmadb_repair_ranges_differing_total", &[]), 1.0);
        assert_eq!(scrape.sum("enigmadb_repair_replicas_skipped_total", &[]), 1.0);
        assert_eq!(scrape.sum("enigmadb_repair_rows_streamed_total", &received), 3.0);
        assert_eq!(scrape.sum("enigmadb_repair_bytes_streamed_total", &received), 100.0);
        assert_eq!(scrape.sum("enigmadb_repair_bytes_streamed_total", &[("direction", "sent")]), 7.0);
    }

    #[test]
    fn sessions_log_their_end_once_every_range_is_done() {
        let repairs = Repairs::new();
        let empty = repairs.open(1, 0, false);
        let session = repairs.open(1, 2, false);
        assert_ne!(empty, session);
        assert_eq!(repairs.metrics.sessions_finished.get(), 1, "a plan with nothing to repair ends at once");
        let done = RangeRepaired { replicas_compared: 2, subranges_streamed: 1, bytes_sent: 10, ..Default::default() };
        repairs.range_done(session, &done);
        assert_eq!(repairs.metrics.sessions_finished.get(), 1);
        repairs.range_done(session, &RangeRepaired { replicas_compared: 2, ..Default::default() });
        assert_eq!(repairs.metrics.sessions_finished.get(), 2);
        assert!(repairs.sessions.borrow().is_empty());
        assert_eq!((repairs.metrics.ranges_compared.get(), repairs.metrics.ranges_differing.get()), (2, 1));
        assert_eq!(repairs.metrics.bytes[1].get(), 10);
        // Bounded: sessions nobody finishes are forgotten, oldest first.
        for _ in 0..MAX_OPEN_SESSIONS + 3 {
            repairs.open(1, 5, false);
        }
        assert_eq!(repairs.sessions.borrow().len(), MAX_OPEN_SESSIONS);
    }
}

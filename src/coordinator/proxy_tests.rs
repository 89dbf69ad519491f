//! The storage proxy against real nodes of one process: three nodes (one shard each) form a
//! cluster view; "remote" calls go through an in-process stand-in for the transport that runs
//! the replica side (`handle_data`) of the target node, and can make a node unreachable or
//! silent. What a client would check: acknowledged writes are read back at the levels that
//! promise it, failures are typed with their counts, stale replicas are repaired.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use shards::hlc::Hlc;
use shards::key::PartitionKey;
use shards::mutation::Write;
use shards::node::{Node, NodeConfig};
use shards::read::{now_secs, visible_rows};
use shards::row::{ClusteringSlice, SliceLimit};
use wire::protocol::{Consistency, ErrorCode, ErrorResponse};
use wire::schema::{ColumnDef, TableOptions, TableSchema};
use wire::{ColumnType, Value};

use super::{HintSink, StorageProxy, Timeouts};
use crate::cluster::transport::{codes, PeerError};
use crate::cluster::transport::{PeerCall, PeerRequest, Peers};
use crate::cluster::view::{ClusterView, Member};
use crate::coordinator::handle_data;
use crate::hints::{HintSettings, HintStore};

/// Short, so the timeout tests are quick; far above an in-process round trip.
const TEST_TIMEOUTS: Timeouts = Timeouts { write: Duration::from_millis(300), read: Duration::from_millis(300) };

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Calls fail at once, as with a refused connection.
    Unreachable,
    /// Calls get no answer until their timeout, as with a paused process.
    Silent,
    /// A node of the release before READ row limits: it refuses a READ with one as malformed.
    RefusesLimits,
    /// A node of the release before READ byte bounds: it refuses a READ with one as malformed.
    RefusesByteBounds,
}

struct Target {
    node: Node,
    clock: Rc<RefCell<Hlc>>,
    fault: Cell<Fault>,
    /// Calls that met a fault.
    faulted_calls: Cell<usize>,
}

/// The transport's stand-in: a call runs the target node's replica side in this process.
#[derive(Default)]
struct LocalPeers {
    targets: RefCell<HashMap<SocketAddr, Rc<Target>>>,
}

impl Peers for LocalPeers {
    fn call_shard(&self, peer: SocketAddr, _shard: u16, request: PeerRequest, timeout: Duration) -> PeerCall<'_> {
        let target = self.targets.borrow().get(&peer).cloned();
        Box::pin(async move {
            let Some(target) = target else {
                return Err(PeerError::Unreachable { peer, reason: "no such test node".into() });
            };
            if !matches!(target.fault.get(), Fault::None | Fault::RefusesLimits | Fault::RefusesByteBounds) {
                target.faulted_calls.set(target.faulted_calls.get() + 1);
            }
            match target.fault.get() {
                Fault::Unreachable => Err(PeerError::Unreachable { peer, reason: "test fault".into() }),
                Fault::Silent => {
                    glommio::timer::sleep(timeout).await;
                    Err(PeerError::Timeout { peer, timeout })
                }
                Fault::RefusesLimits if matches!(&request, PeerRequest::Read(r) if r.limit.is_some()) => {
                    let message = "malformed READ body: unknown flags 0x02".into();
                    Err(PeerError::Remote { peer, code: codes::PROTOCOL, message })
                }
                Fault::RefusesByteBounds if matches!(&request, PeerRequest::Read(r) if r.max_bytes.is_some()) => {
                    let message = "malformed READ body: unknown flags 0x06".into();
                    Err(PeerError::Remote { peer, code: codes::PROTOCOL, message })
                }
                Fault::None | Fault::RefusesLimits | Fault::RefusesByteBounds => {
                    let opcode = request.opcode();
                    handle_data(&target.node, &target.clock, request).await.check(peer, opcode)
                }
            }
        })
    }
}

struct TestCluster {
    nodes: Vec<Node>,
    members: Vec<Member>,
    /// What every coordinator's failure detector says of each node.
    alive: RefCell<Vec<bool>>,
    proxies: Vec<StorageProxy>,
    peers: Rc<LocalPeers>,
    /// Node 0's hint store, when its proxy keeps hints.
    hints: Option<Rc<HintStore>>,
    table: Arc<TableSchema>,
}

impl TestCluster {
    /// `nodes` nodes with a kv table of these options on each (same id everywhere); node 0's
    /// proxy keeps hints in a store of these settings when given.
    async fn start(nodes: Vec<Node>, options: TableOptions, hint_settings: Option<HintSettings>) -> TestCluster {
        // Eight vnodes per node, interleaved around the ring, so the order of replicas varies
        // from key to key.
        let n = nodes.len();
        let members: Vec<Member> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let ip = [127, 0, 0, i as u8 + 1];
                let (peer, client) = (SocketAddr::from((ip, 7470)), SocketAddr::from((ip, 9470)));
                let tokens = (0..8).map(|j| i64::MIN / 2 + ((j * n + i) as i64) * (i64::MAX / 32)).collect();
                Member {
                    host: node.host_id(),
                    peer,
                    client,
                    shard_aware: None,
                    tokens: vec![tokens],
                    alive: true,
                    generation: 1,
                    joining: false,
                    replaces: None,
                    leaving: false,
                }
            })
            .collect();
        let peers = Rc::new(LocalPeers::default());
        let mut proxies = Vec::new();
        let mut hints = None;
        for (i, (node, member)) in nodes.iter().zip(&members).enumerate() {
            let view = ClusterView::new(member.host, members.clone()).expect("view");
            let view = Rc::new(RefCell::new(Rc::new(view)));
            let sink: Option<Rc<dyn HintSink>> = match hint_settings.filter(|_| i == 0) {
                None => None,
                Some(settings) => {
                    let store =
                        HintStore::open(node.clone(), settings, view.clone(), peers.clone(), TEST_TIMEOUTS.write)
                            .await
                            .expect("open the hints");
                    hints = Some(store.clone());
                    Some(store)
                }
            };
            let proxy = StorageProxy::new(node.clone(), view, peers.clone(), sink, TEST_TIMEOUTS);
            let target = Target {
                node: node.clone(),
                clock: proxy.clock().clone(),
                fault: Cell::new(Fault::None),
                faulted_calls: Cell::new(0),
            };
            peers.targets.borrow_mut().insert(member.peer, Rc::new(target));
            proxies.push(proxy);
        }
        let schema = TableSchema {
            id: 0,
            name: "kv".into(),
            partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Int }],
            clustering: Vec::new(),
            columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Text }],
            options,
        };
        let table = nodes[0].create_table(schema, None).await.expect("create the table");
        let (entries, drops) = nodes[0].schema_snapshot();
        for node in &nodes[1..] {
            node.adopt_schema(&entries, &drops).await.expect("adopt the schema");
        }
        let alive = RefCell::new(vec![true; nodes.len()]);
        TestCluster { nodes, members, alive, proxies, peers, hints, table }
    }

    fn set_fault(&self, node: usize, fault: Fault) {
        self.peers.targets.borrow()[&self.members[node].peer].fault.set(fault);
    }

    fn faulted_calls(&self, node: usize) -> usize {
        self.peers.targets.borrow()[&self.members[node].peer].faulted_calls.get()
    }

    /// Every coordinator's failure detector now holds `node` down (or up again).
    fn set_alive(&self, node: usize, alive: bool) {
        self.alive.borrow_mut()[node] = alive;
        let mut members = self.members.clone();
        for (member, alive) in members.iter_mut().zip(self.alive.borrow().iter()) {
            member.alive = *alive;
        }
        for (proxy, me) in self.proxies.iter().zip(&self.members) {
            let view = ClusterView::new(me.host, members.clone()).expect("view");
            *proxy.view_cell().borrow_mut() = Rc::new(view);
        }
    }

    async fn write(&self, via: usize, k: i32, v: &str, consistency: Consistency) -> Result<(), ErrorResponse> {
        let write = Write::upsert(&self.table, &[Value::Int(k)], &[], &[("v", Some(Value::Text(v.into())))], 0, true)
            .expect("a valid write");
        let proxy = &self.proxies[via];
        let ts = proxy.timestamp(None)?;
        let groups = proxy.place(vec![write], ts, consistency)?;
        proxy.replicate(groups, consistency).await
    }

    async fn read(&self, via: usize, k: i32, consistency: Consistency) -> Result<Option<String>, ErrorResponse> {
        let key = PartitionKey::from_values(&self.table, &[Value::Int(k)]).expect("a valid key");
        let stored = self.proxies[via].read(&self.table, key.clone(), ClusteringSlice::ALL, consistency, None).await?;
        Ok(stored.partition.and_then(|p| value_of(&self.table, &key, &p)))
    }

    /// What node `node` itself stores for `k` (no coordinator involved).
    async fn stored_on(&self, node: usize, k: i32) -> Option<String> {
        let key = PartitionKey::from_values(&self.table, &[Value::Int(k)]).expect("a valid key");
        let stored = self.nodes[node].read_partition(self.table.id, key.clone(), ClusteringSlice::ALL).await;
        stored.expect("a local read").and_then(|p| value_of(&self.table, &key, &p))
    }
}

fn value_of(table: &TableSchema, key: &PartitionKey, p: &shards::row::Partition) -> Option<String> {
    let rows = visible_rows(table, key, p, now_secs()).expect("stored rows decode");
    match rows.first().and_then(|r| r.columns[0].clone()) {
        Some(Value::Text(v)) => Some(v),
        _ => None,
    }
}

/// Opens `n` one-shard nodes, runs `body` on a fresh executor (where the proxies live), then
/// shuts the nodes down.
fn with_cluster<F, Fut>(n: usize, rf: u8, body: F)
where
    F: FnOnce(TestCluster) -> Fut + Send + 'static,
    Fut: Future<Output = TestCluster> + 'static,
{
    with_cluster_options(n, TableOptions { replication_factor: rf, ..TableOptions::default() }, body)
}

/// [`with_cluster`] with the kv table's options.
fn with_cluster_options<F, Fut>(n: usize, options: TableOptions, body: F)
where
    F: FnOnce(TestCluster) -> Fut + Send + 'static,
    Fut: Future<Output = TestCluster> + 'static,
{
    run_cluster(n, options, None, body)
}

/// [`with_cluster`] where node 0's proxy keeps hints in a store of `settings`.
fn with_hinted_cluster<F, Fut>(n: usize, rf: u8, settings: HintSettings, body: F)
where
    F: FnOnce(TestCluster) -> Fut + Send + 'static,
    Fut: Future<Output = TestCluster> + 'static,
{
    run_cluster(n, TableOptions { replication_factor: rf, ..TableOptions::default() }, Some(settings), body)
}

fn run_cluster<F, Fut>(n: usize, options: TableOptions, hint_settings: Option<HintSettings>, body: F)
where
    F: FnOnce(TestCluster) -> Fut + Send + 'static,
    Fut: Future<Output = TestCluster> + 'static,
{
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().expect("a temporary directory")).collect();
    let nodes: Vec<Node> = dirs
        .iter()
        .map(|dir| {
            let mut config = NodeConfig::new(dir.path());
            config.shards = 1;
            Node::open(config).expect("open a node").0
        })
        .collect();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let cluster = body(TestCluster::start(nodes, options, hint_settings).await).await;
            for node in &cluster.nodes {
                node.shutdown().await.expect("shut a node down");
            }
        })
        .expect("spawn an executor")
        .join()
        .expect("the test body panicked");
}

fn code(result: Result<impl std::fmt::Debug, ErrorResponse>) -> ErrorCode {
    match result {
        Err(e) => e.code,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn quorum_writes_are_read_back_at_quorum_and_all_from_every_node() {
    with_cluster(3, 3, |c| async move {
        for k in 0..30 {
            c.write(k as usize % 3, k, &format!("v{k}"), Consistency::Quorum).await.expect("QUORUM write");
        }
        for via in 0..3 {
            for k in 0..30 {
                let want = Some(format!("v{k}"));
                assert_eq!(c.read(via, k, Consistency::Quorum).await.expect("QUORUM read"), want, "k {k} via {via}");
                assert_eq!(c.read(via, k, Consistency::All).await.expect("ALL read"), want, "k {k} via {via}");
            }
        }
        // RF 3 on three nodes: every node holds every key (the write reached all live replicas).
        glommio::timer::sleep(Duration::from_millis(50)).await;
        for node in 0..3 {
            assert_eq!(c.stored_on(node, 7).await, Some("v7".into()), "node {node}");
        }
        c
    });
}

#[test]
fn with_one_node_down_quorum_succeeds_and_all_is_unavailable_with_counts() {
    with_cluster(3, 3, |c| async move {
        c.set_fault(2, Fault::Unreachable);
        c.set_alive(2, false);
        c.write(0, 1, "a", Consistency::Quorum).await.expect("QUORUM write with one node down");
        assert_eq!(c.read(1, 1, Consistency::Quorum).await.expect("QUORUM read"), Some("a".into()));
        let all = ErrorCode::Unavailable { consistency: Consistency::All, required: 3, alive: 2 };
        assert_eq!(code(c.write(0, 2, "b", Consistency::All).await), all);
        assert_eq!(code(c.read(0, 1, Consistency::All).await), all);
        // Back up: ALL works again.
        c.set_fault(2, Fault::None);
        c.set_alive(2, true);
        c.write(0, 2, "b", Consistency::All).await.expect("ALL write once every node is up");
        assert_eq!(c.read(2, 2, Consistency::All).await.expect("ALL read"), Some("b".into()));
        c
    });
}

#[test]
fn with_two_nodes_down_quorum_is_unavailable_and_one_succeeds() {
    with_cluster(3, 3, |c| async move {
        for node in [1, 2] {
            c.set_fault(node, Fault::Unreachable);
            c.set_alive(node, false);
        }
        let quorum = ErrorCode::Unavailable { consistency: Consistency::Quorum, required: 2, alive: 1 };
        assert_eq!(code(c.write(0, 1, "a", Consistency::Quorum).await), quorum);
        assert_eq!(code(c.read(0, 1, Consistency::Quorum).await), quorum);
        c.write(0, 1, "a", Consistency::One).await.expect("ONE write on the last node");
        assert_eq!(c.read(0, 1, Consistency::One).await.expect("ONE read"), Some("a".into()));
        c
    });
}

#[test]
fn a_silent_replica_times_the_write_out_with_received_and_required() {
    with_cluster(3, 3, |c| async move {
        c.set_fault(1, Fault::Silent);
        let started = std::time::Instant::now();
        let timeout = ErrorCode::WriteTimeout { consistency: Consistency::All, received: 2, required: 3 };
        assert_eq!(code(c.write(0, 1, "a", Consistency::All).await), timeout);
        assert!(started.elapsed() >= TEST_TIMEOUTS.write, "answered before the timeout");
        // QUORUM does not wait for the silent one.
        c.write(0, 2, "b", Consistency::Quorum).await.expect("QUORUM write");
        c
    });
}

#[test]
fn a_replica_failing_fast_fails_an_all_write_at_once_and_quorum_reads_retry_elsewhere() {
    with_cluster(3, 3, |c| async move {
        for k in 0..20 {
            c.write(0, k, "a", Consistency::All).await.expect("ALL write");
        }
        c.set_fault(2, Fault::Unreachable);
        let started = std::time::Instant::now();
        match code(c.write(0, 100, "b", Consistency::All).await) {
            // Failed as soon as the level could not be met: the others may not have answered yet.
            ErrorCode::WriteTimeout { consistency: Consistency::All, received, required: 3 } => assert!(received <= 2),
            other => panic!("expected WRITE_TIMEOUT, got {other:?}"),
        }
        assert!(started.elapsed() < TEST_TIMEOUTS.write, "a failed replica must not wait for the timeout");
        // The failure detector has not noticed: node 2 is still a candidate; when it is asked
        // (for keys where the ring puts it before the other remote replica) it fails and the
        // read goes to the spare replica instead.
        let before = c.faulted_calls(2);
        for via in [0, 1] {
            for k in 0..20 {
                assert_eq!(c.read(via, k, Consistency::Quorum).await.expect("QUORUM read"), Some("a".into()));
            }
        }
        assert!(c.faulted_calls(2) > before, "no read ever tried the failing replica");
        c
    });
}

#[test]
fn a_silent_replica_times_a_read_out_with_counts_when_no_spare_is_left() {
    with_cluster(3, 3, |c| async move {
        c.write(0, 1, "a", Consistency::All).await.expect("ALL write");
        c.set_fault(2, Fault::Silent);
        match code(c.read(0, 1, Consistency::All).await) {
            ErrorCode::ReadTimeout { consistency: Consistency::All, received: 2, required: 3, .. } => {}
            other => panic!("expected READ_TIMEOUT 2/3, got {other:?}"),
        }
        c
    });
}

#[test]
fn a_read_merges_the_newest_cells_and_repairs_the_stale_replicas() {
    with_cluster(3, 3, |c| async move {
        c.write(0, 1, "old", Consistency::All).await.expect("ALL write");
        // Node 2 misses the newer write (down for it, and seen down by the coordinator).
        c.set_fault(2, Fault::Unreachable);
        c.set_alive(2, false);
        c.write(0, 1, "new", Consistency::Quorum).await.expect("QUORUM write");
        c.set_fault(2, Fault::None);
        c.set_alive(2, true);
        assert_eq!(c.stored_on(2, 1).await, Some("old".into()));
        // Coordinated by node 2: its own (stale) data first, digests from the others disagree.
        assert_eq!(c.read(2, 1, Consistency::All).await.expect("ALL read"), Some("new".into()));
        // Read repair is blocking by default: done before the read answered.
        assert_eq!(c.stored_on(2, 1).await, Some("new".into()), "read repair reached the stale replica");
        c
    });
}

#[test]
fn rf_above_the_node_count_is_unavailable_at_every_level() {
    with_cluster(2, 3, |c| async move {
        for level in Consistency::ALL {
            match code(c.write(0, 1, "a", level).await) {
                ErrorCode::Unavailable { .. } => {}
                other => panic!("{level}: expected UNAVAILABLE, got {other:?}"),
            }
        }
        c
    });
}

#[test]
fn peer_timestamps_advance_the_replica_coordinators_clock() {
    with_cluster(2, 2, |c| async move {
        // Node 0's clock runs half a second ahead (within the drift bound) of node 1's.
        let ahead = c.proxies[0].timestamp(None).expect("a timestamp") + 500_000;
        c.proxies[0].timestamp(Some(ahead)).expect("observe");
        c.write(0, 1, "a", Consistency::All).await.expect("ALL write");
        let next = c.proxies[1].timestamp(None).expect("a timestamp");
        assert!(next > ahead, "node 1's next timestamp {next} must follow node 0's write at {ahead}+");
        c
    });
}

/// Hinted handoff through the write path: a replica that cannot be reached, then one the
/// view holds down, misses QUORUM writes; the coordinator keeps hints for it and replays them
/// once it is up, after which the replica holds every write on its own.
#[test]
fn a_replica_that_missed_writes_gets_them_from_the_hints_when_it_is_back() {
    let settings = HintSettings { throttle_kib: 0, ..Default::default() };
    with_hinted_cluster(3, 3, settings, |c| async move {
        let hints = c.hints.clone().expect("node 0's hints");
        // Up in the view but unreachable: hinted once its send has failed.
        c.set_fault(2, Fault::Unreachable);
        for k in 0..20 {
            c.write(0, k, &format!("v{k}"), Consistency::Quorum).await.expect("QUORUM write");
        }
        // Down in the view: hinted without a send.
        c.set_alive(2, false);
        for k in 20..40 {
            c.write(0, k, &format!("v{k}"), Consistency::Quorum).await.expect("QUORUM write");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while hints.counts().stored < 40 {
            assert!(std::time::Instant::now() < deadline, "hints stored: {:?}", hints.counts());
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        let target = c.members[2].host;
        assert_eq!(hints.counts().pending, vec![(target, 40)]);
        for k in 0..40 {
            assert_eq!(c.stored_on(2, k).await, None, "node 2 missed k {k}");
        }
        c.set_fault(2, Fault::None);
        c.set_alive(2, true);
        hints.peer_up(target);
        while hints.counts().pending_total() > 0 {
            assert!(std::time::Instant::now() < deadline, "hints left: {:?}", hints.counts());
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hints.counts().replayed, 40);
        for k in 0..40 {
            assert_eq!(c.stored_on(2, k).await, Some(format!("v{k}")), "node 2 got k {k} from the hints");
        }
        c
    });
}

#[path = "range_tests.rs"]
mod range_tests;

/// A clustered table `wide (k int, c int, v text, PRIMARY KEY (k, c))` on every node of `c`.
async fn wide_table(c: &TestCluster) -> Arc<TableSchema> {
    use wire::schema::{ClusteringColumn, ClusteringOrder};
    let schema = TableSchema {
        id: 0,
        name: "wide".into(),
        partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Int }],
        clustering: vec![ClusteringColumn {
            column: ColumnDef { name: "c".into(), ty: ColumnType::Int },
            order: ClusteringOrder::Asc,
        }],
        columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Text }],
        options: c.table.options.clone(),
    };
    let table = c.nodes[0].create_table(schema, None).await.expect("create the table");
    let (entries, drops) = c.nodes[0].schema_snapshot();
    for node in &c.nodes[1..] {
        node.adopt_schema(&entries, &drops).await.expect("adopt the schema");
    }
    table
}

/// Row `c` of partition 1 with `v` (None: a row deletion) at `ts`, written to `node` alone.
async fn put_row(c: &TestCluster, table: &TableSchema, node: usize, ck: i32, v: Option<&str>, ts: i64) {
    let write = match v {
        Some(v) => {
            Write::upsert(table, &[Value::Int(1)], &[Value::Int(ck)], &[("v", Some(Value::Text(v.into())))], 0, true)
        }
        None => Write::delete(table, &[Value::Int(1)], &[Value::Int(ck)], &[]),
    };
    let update = write.expect("a valid write").stamp(ts, now_secs());
    c.nodes[node].apply_stamped(vec![update]).await.expect("apply on one node");
}

/// Pages through partition 1 of `table` with reads bounded by `limit` coordinated by `via` at
/// ALL, each after where the last stopped; the (c, v) of every visible row.
async fn page_through(c: &TestCluster, table: &TableSchema, via: usize, limit: SliceLimit) -> Vec<(i32, String)> {
    let key = PartitionKey::from_values(table, &[Value::Int(1)]).expect("a valid key");
    let mut slice = ClusteringSlice::ALL;
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let read = c.proxies[via].read(table, key.clone(), slice.clone(), Consistency::All, Some(limit)).await;
        let read = read.expect("ALL read");
        if let Some(p) = &read.partition {
            for row in visible_rows(table, &key, p, now_secs()).expect("rows decode") {
                let (Value::Int(ck), Some(Value::Text(v))) = (&row.clustering[0], &row.columns[0]) else {
                    panic!("unexpected row {row:?}")
                };
                seen.push((*ck, v.clone()));
            }
        }
        match read.cut {
            Some(after) => {
                slice = ClusteringSlice { start: std::ops::Bound::Excluded(after), end: std::ops::Bound::Unbounded }
            }
            None => return seen,
        }
    }
    panic!("paging did not end");
}

/// Replicas that differ row by row: paging with a row limit at ALL compares digests of the
/// same limited slice, merges the limited answers (no row twice, none lost, deletions
/// honoured), and read-repairs each stale replica for the rows the pages covered; the same
/// with byte bounds, and with one replica of the release before limits (it is asked for the
/// whole slice) or before byte bounds (asked for the rows only).
#[test]
fn paging_with_a_row_limit_merges_and_repairs_replicas_that_differ() {
    with_cluster(3, 3, |c| async move {
        let table = wide_table(&c).await;
        for node in 0..3 {
            for ck in 0..40 {
                put_row(&c, &table, node, ck, Some(&format!("v{ck}")), 10).await;
            }
        }
        // Node 0 alone: row 5 deleted, row 7 rewritten, row 50 added. Node 1 alone: row 3
        // deleted, rows 20..=30 rewritten. Node 2: none of it.
        put_row(&c, &table, 0, 5, None, 20).await;
        put_row(&c, &table, 0, 7, Some("new7"), 20).await;
        put_row(&c, &table, 0, 50, Some("v50"), 20).await;
        put_row(&c, &table, 1, 3, None, 20).await;
        for ck in 20..=30 {
            put_row(&c, &table, 1, ck, Some(&format!("new{ck}")), 20).await;
        }
        let want: Vec<(i32, String)> = (0..40)
            .filter(|ck| *ck != 5 && *ck != 3)
            .map(|ck| match ck {
                7 => (7, "new7".to_owned()),
                20..=30 => (ck, format!("new{ck}")),
                _ => (ck, format!("v{ck}")),
            })
            .chain([(50, "v50".to_owned())])
            .collect();
        // A row here is about 110 stored bytes (`scan::row_bytes`): bounds of 1 to 9 rows.
        let bounded = |rows, bytes| SliceLimit { rows, bytes };
        c.set_fault(1, Fault::RefusesLimits);
        let limit = bounded(4, 300);
        assert_eq!(page_through(&c, &table, 2, limit).await, want, "with a replica of the release before limits");
        c.set_fault(1, Fault::RefusesByteBounds);
        assert_eq!(page_through(&c, &table, 2, limit).await, want, "with a replica of the release before bounds");
        c.set_fault(1, Fault::None);
        for rows in [1, 3, 4, 7, 100] {
            assert_eq!(page_through(&c, &table, 2, SliceLimit::rows(rows)).await, want, "limit {rows}");
        }
        for bytes in [1, 150, 300, 1000] {
            assert_eq!(page_through(&c, &table, 2, bounded(100, bytes)).await, want, "byte bound {bytes}");
        }
        // Read repair wrote what the pages covered (all of it) to every replica.
        let key = PartitionKey::from_values(&table, &[Value::Int(1)]).expect("a valid key");
        for node in 0..3 {
            let stored = c.nodes[node].read_partition(table.id, key.clone(), ClusteringSlice::ALL).await;
            let stored = stored.expect("a local read").expect("rows");
            let rows = visible_rows(&table, &key, &stored, now_secs()).expect("rows decode");
            assert_eq!(rows.len(), want.len(), "node {node} was repaired");
        }
        c
    });
}

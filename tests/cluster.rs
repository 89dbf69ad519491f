//! Cluster mode with real `enigmadb server` processes, each on its own loopback address:
//! replication at every consistency level, typed UNAVAILABLE answers when too few replicas
//! are up, failure detection down and up again, schema propagation, and a restarted node
//! keeping its tokens with every node agreeing on the ring.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{connect, query_at, Server};
use wire::client::Client;
use wire::protocol::{ErrorCode, QueryResult};
use wire::{Consistency, Value};

/// Phi threshold for these tests: convicts a silent peer after about 6 s of silence instead of
/// Cassandra's 18 s at 8, so the test waits less (the detector's math is unit-tested).
const PHI: &str = "2.5";
/// Longest wait for the cluster to notice a change (a node down, up, a schema).
const CONVERGE: Duration = Duration::from_secs(40);

/// A loopback network of its own for this test process: 127.1.X.i for node i.
fn node_host(i: usize) -> String {
    format!("127.1.{}.{}", std::process::id() % 250, i)
}

struct TestCluster {
    dir: PathBuf,
    nodes: Vec<Option<Server>>,
    seed: SocketAddr,
}

impl TestCluster {
    fn start(name: &str, n: usize) -> TestCluster {
        let dir = common::scratch_dir(name);
        let mut cluster = TestCluster { dir, nodes: Vec::new(), seed: SocketAddr::from(([0, 0, 0, 0], 0)) };
        for i in 1..=n {
            let server = cluster.launch(i);
            if i == 1 {
                cluster.seed = server.peer.expect("the ready line names the peer address");
            }
            cluster.nodes.push(Some(server));
        }
        cluster.await_up(n);
        cluster
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{i}"))
    }

    /// Starts node `i` (1-based) on its own address with node 1 as the seed.
    fn launch(&self, i: usize) -> Server {
        let seeds = if i == 1 { String::new() } else { self.seed.to_string() };
        let mut extra = vec!["--phi-convict-threshold", PHI];
        if !seeds.is_empty() {
            extra.extend(["--seeds", &seeds]);
        }
        Server::start_on(&node_host(i), &self.node_dir(i), 1, &extra)
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i - 1].as_ref().expect("node is running").addr
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.nodes[i - 1].take() {
            server.kill();
        }
    }

    fn restart(&mut self, i: usize) {
        self.kill(i);
        self.nodes[i - 1] = Some(self.launch(i));
    }

    /// Waits until every running node reports `up` nodes up (UN) in `admin status`.
    fn await_up(&self, up: usize) {
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            await_until(&format!("node {} sees {up} nodes up", i + 1), || count_up(node.addr) == up);
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 1..=self.nodes.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn await_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {CONVERGE:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `enigmadb admin status --host ADDR --json`, parsed.
fn admin_status(addr: SocketAddr) -> Option<serde_json::Value> {
    let out = common::enigmadb().args(["admin", "status", "--host", &addr.to_string(), "--json"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn count_up(addr: SocketAddr) -> usize {
    let Some(status) = admin_status(addr) else { return 0 };
    rows(&status).iter().filter(|row| row["state"] == "UN").count()
}

/// The nodes of `admin status --json`.
fn rows(output: &serde_json::Value) -> Vec<serde_json::Value> {
    output["nodes"].as_array().cloned().unwrap_or_default()
}

/// The ring as one node sees it: each node's host id, vnode count and share of the token
/// space (computed from every vnode token, so two nodes agree only if their rings do).
fn ring(addr: SocketAddr) -> Vec<(String, u64, String)> {
    let status = admin_status(addr).expect("admin status answers");
    let mut ring: Vec<_> = rows(&status)
        .iter()
        .map(|r| {
            (
                r["host_id"].to_string(),
                r["tokens"].as_u64().unwrap_or(0),
                format!("{:.9}", r["owns"].as_f64().unwrap_or(-1.0)),
            )
        })
        .collect();
    ring.sort();
    ring
}

fn write(client: &mut Client, key: &str, value: i32, consistency: Consistency) -> Result<(), ErrorCode> {
    query_at(client, &format!("INSERT INTO kv (k, v) VALUES ('{key}', {value})"), consistency)
        .map(|_| ())
        .map_err(|e| e.code)
}

fn read(client: &mut Client, key: &str, consistency: Consistency) -> Result<Option<i32>, ErrorCode> {
    match query_at(client, &format!("SELECT v FROM kv WHERE k = '{key}'"), consistency).map_err(|e| e.code)? {
        QueryResult::Rows(rows) => Ok(rows.rows.first().and_then(|row| match row[0] {
            Some(Value::Int(v)) => Some(v),
            _ => None,
        })),
        other => panic!("a SELECT answered {other:?}"),
    }
}

fn assert_unavailable(result: Result<impl std::fmt::Debug, ErrorCode>, required: u32, alive: u32) {
    match result {
        Err(ErrorCode::Unavailable { required: r, alive: a, .. }) => {
            assert_eq!((r, a), (required, alive), "UNAVAILABLE counts")
        }
        other => panic!("expected UNAVAILABLE (required {required}, alive {alive}), got {other:?}"),
    }
}

#[test]
fn three_nodes_replicate_and_answer_at_every_level_through_failures() {
    let mut cluster = TestCluster::start("cluster-rf3", 3);
    let mut first = connect(cluster.addr(1));
    query_at(&mut first, "CREATE TABLE kv (k text PRIMARY KEY, v int) WITH replication_factor = 3", Consistency::One)
        .expect("CREATE TABLE");
    // The schema made on node 1 is usable on the others within seconds.
    for i in 2..=3 {
        let mut client = connect(cluster.addr(i));
        await_until(&format!("node {i} knows table kv"), || read(&mut client, "absent", Consistency::One).is_ok());
    }

    for n in 0..50 {
        write(&mut first, &format!("k{n}"), n, Consistency::Quorum).expect("QUORUM write with all nodes up");
    }
    for i in 1..=3 {
        let mut client = connect(cluster.addr(i));
        for n in 0..50 {
            assert_eq!(
                read(&mut client, &format!("k{n}"), Consistency::Quorum),
                Ok(Some(n)),
                "QUORUM read on node {i}"
            );
            assert_eq!(read(&mut client, &format!("k{n}"), Consistency::All), Ok(Some(n)), "ALL read on node {i}");
        }
    }

    // One node down: QUORUM keeps working; once it is detected, ALL is refused up front.
    cluster.kill(3);
    for n in 50..80 {
        write(&mut first, &format!("k{n}"), n, Consistency::Quorum).expect("QUORUM write with one node down");
    }
    let mut second = connect(cluster.addr(2));
    for n in 0..80 {
        assert_eq!(read(&mut second, &format!("k{n}"), Consistency::Quorum), Ok(Some(n)), "QUORUM read, one node down");
    }
    cluster.await_up(2);
    assert_unavailable(write(&mut first, "all", 1, Consistency::All), 3, 2);
    assert_unavailable(read(&mut second, "k1", Consistency::All), 3, 2);

    // Restarted, it is marked up again within seconds, keeps its tokens, and the ring agrees.
    let ring_before = ring(cluster.addr(1));
    cluster.restart(3);
    cluster.await_up(3);
    for i in 1..=3 {
        assert_eq!(ring(cluster.addr(i)), ring_before, "node {i}'s ring after the restart");
    }
    write(&mut first, "all", 1, Consistency::All).expect("ALL write with every node back");
    let mut third = connect(cluster.addr(3));
    assert_eq!(read(&mut third, "all", Consistency::All), Ok(Some(1)));

    // Two of three down: QUORUM is unavailable, ONE still works.
    cluster.kill(2);
    cluster.kill(3);
    cluster.await_up(1);
    assert_unavailable(write(&mut first, "k1", 1, Consistency::Quorum), 2, 1);
    assert_unavailable(read(&mut first, "k1", Consistency::Quorum), 2, 1);
    write(&mut first, "one", 7, Consistency::One).expect("ONE write with one node up");
    assert_eq!(read(&mut first, "one", Consistency::One), Ok(Some(7)));
    assert_eq!(read(&mut first, "k79", Consistency::One), Ok(Some(79)));
}

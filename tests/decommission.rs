//! Nodes leaving the ring, with real processes. Decommission: a node of a 4-node RF 3 cluster
//! leaves while a writer keeps writing at QUORUM; no acknowledged write is lost, every other
//! node holds every row in its own data (3 nodes left at RF 3: reads at ONE through each are
//! answered from its own copy), and the leaving
//! process exits and refuses to start again on its directory. removenode: a killed node is
//! taken out; reads at ALL work again and every remaining node holds every row.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::cluster::{
    admin_status, assert_reads_back, await_streaming, await_until, check_all, load_kv, load_wide, netstats, rows,
    state_of, wrong_wide, QuorumWriter, TestCluster, THROTTLED,
};
use common::{enigmadb, refused_start, text};
use wire::Consistency;

/// Rows loaded before a node leaves.
const ROWS: usize = 5_000;
/// Flags of every node: a short ring delay (LEAVING is seen for at least that long).
const FLAGS: [&str; 2] = ["--ring-delay-ms", "2000"];

/// `enigmadb admin ARGS --host ADDR`: its exit status success, stdout and stderr.
fn admin(addr: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let out = enigmadb().arg("admin").args(args).args(["--host", &addr.to_string()]).output().expect("enigmadb admin");
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The host id `observer` lists for the node at client address `node`.
fn host_id(observer: SocketAddr, node: SocketAddr) -> String {
    let status = admin_status(observer).expect("admin status");
    let row = rows(&status).into_iter().find(|r| r["address"] == node.to_string()).expect("the node is listed");
    row["host_id"].as_str().expect("a host id").to_owned()
}

/// Asserts that each of `nodes` holds every row of `acked` in its own data: with 3 nodes at
/// RF 3 every node replicates every token, and a read at ONE through a replica is answered from
/// its own data (no other replica is asked, nothing is repaired). Before any read at ALL,
/// which would repair what a replica lacks.
fn assert_every_node_holds_every_row(cluster: &TestCluster, nodes: &[usize], acked: &BTreeMap<String, i32>) {
    for &i in nodes {
        assert_reads_back(cluster.addr(i), acked, Consistency::One, &format!("node {i}'s own data"));
    }
}

#[test]
fn a_decommissioned_node_hands_its_ranges_over_and_no_acknowledged_write_is_lost() {
    let mut cluster = TestCluster::start_with("decommission", 4, &FLAGS);
    cluster.create_kv_table(3);
    let mut acked = load_kv(cluster.addr(1), ROWS);
    let leaving = cluster.addr(4);
    // `admin status` shows effective ownership at the tables' RF: 4 nodes at RF 3 hold 300%
    // of the ring between them, each less than all of it; the first-replica shares add up to
    // 100%.
    let status = admin_status(cluster.addr(1)).expect("admin status");
    let listed = rows(&status);
    let sum = |key: &str| listed.iter().map(|r| r[key].as_f64().unwrap()).sum::<f64>();
    assert!((sum("owns") - 3.0).abs() < 1e-9 && (sum("owns_primary") - 1.0).abs() < 1e-9, "{status}");
    assert!(listed.iter().all(|r| r["replication_factor"] == 3 && r["owns"].as_f64().unwrap() < 1.0), "{status}");

    let stop = Arc::new(AtomicBool::new(false));
    let writer = QuorumWriter::start(cluster.addr(1), stop.clone());
    await_until("the writer has acknowledged writes", || writer.acked() > 100);
    let command = std::thread::spawn(move || admin(leaving, &["decommission"]));
    // While it streams, the others list it as UL (up, leaving), as nodetool does.
    await_until("node 1 lists the leaving node as UL", || state_of(cluster.addr(1), leaving).as_deref() == Some("UL"));
    let (ok, out, err) = command.join().expect("admin decommission");
    assert!(ok, "admin decommission failed: {err}");
    assert!(out.starts_with("Decommissioned: streamed "), "{out}");
    eprintln!("{out}");

    // The process exits by itself, saying why.
    let mut node = cluster.take(4);
    let (status, lines) = node.wait_exit("its decommission");
    assert!(status.success(), "the decommissioned node exited with {status}");
    assert!(lines.iter().any(|l| l.starts_with("enigmadb decommissioned; ")), "{lines:?}");
    for i in 1..=3 {
        await_until(&format!("node {i} no longer lists the decommissioned node"), || {
            admin_status(cluster.addr(i)).is_some_and(|s| {
                let listed = rows(&s);
                listed.len() == 3 && listed.iter().all(|r| r["address"] != leaving.to_string() && r["state"] == "UN")
            })
        });
    }
    // Keep writing a little on the three nodes left.
    let after = writer.acked();
    await_until("the writer goes on after the decommission", || writer.acked() > after + 200);
    stop.store(true, Ordering::Relaxed);
    let (during, failed) = writer.finish();
    eprintln!("during the decommission: {} writes acknowledged, {failed} not", during.len());
    acked.extend(during);

    // The data dir is no longer used: the node does not start on it again.
    let refusal = refused_start(&cluster.node_dir(4), &[]);
    assert!(refusal.contains("this node was decommissioned"), "{refusal}");
    assert_every_node_holds_every_row(&cluster, &[1, 2, 3], &acked);
    assert_reads_back(cluster.addr(2), &acked, Consistency::All, "after the decommission");
}

#[test]
fn a_dead_node_is_removed_and_its_ranges_get_their_copies_back() {
    let mut cluster = TestCluster::start_with("removenode", 4, &FLAGS);
    cluster.create_kv_table(3);
    let acked = load_kv(cluster.addr(1), ROWS);
    let dead = cluster.addr(4);
    let dead_id = host_id(cluster.addr(1), dead);
    // Refused for a live node, and a decommission leaving fewer nodes than RF is refused.
    let live_id = host_id(cluster.addr(1), cluster.addr(2));
    let (ok, _, err) = admin(cluster.addr(1), &["removenode", &live_id]);
    assert!(!ok && err.contains("is alive; decommission it instead"), "{err}");

    cluster.kill(4);
    await_until("node 1 sees the killed node down", || state_of(cluster.addr(1), dead).as_deref() == Some("DN"));
    let unavailable = check_all(cluster.addr(1), &acked, Consistency::All);
    assert!(!unavailable.is_empty(), "reads at ALL cannot all work with a replica down");

    let (ok, out, err) = admin(cluster.addr(1), &["removenode", &dead_id]);
    assert!(ok, "admin removenode failed: {err}");
    assert!(out.starts_with(&format!("Removed {dead_id} from the ring: streamed ")), "{out}");
    eprintln!("{out}");
    let progress = netstats(cluster.addr(1));
    assert_eq!(progress["mode"], "NORMAL: removenode completed", "{progress}");
    // Three nodes at RF 3: each holds a replica of the whole ring; the first-replica shares
    // still add up to the ring.
    let status = admin_status(cluster.addr(1)).expect("admin status");
    let listed = rows(&status);
    let whole = |r: &serde_json::Value| (r["owns"].as_f64().unwrap() - 1.0).abs() < 1e-9;
    assert!(listed.iter().all(|r| r["replication_factor"] == 3 && whole(r)), "{status}");
    let primary: f64 = listed.iter().map(|r| r["owns_primary"].as_f64().unwrap()).sum();
    assert!((primary - 1.0).abs() < 1e-9, "{status}");
    assert_eq!(progress["ranges_done"], progress["ranges_total"], "{progress}");
    assert_eq!(progress["sending"], true, "{progress}");
    for i in 1..=3 {
        await_until(&format!("node {i} no longer lists the removed node"), || {
            admin_status(cluster.addr(i)).is_some_and(|s| {
                let listed = rows(&s);
                listed.len() == 3 && listed.iter().all(|r| r["state"] == "UN")
            })
        });
    }
    // Three nodes at RF 3: none may leave now.
    let (ok, _, err) = admin(cluster.addr(1), &["decommission"]);
    assert!(
        !ok && err.contains("not enough nodes to maintain the replication factor of table kv (RF = 3, N = 3)"),
        "{err}"
    );
    assert_every_node_holds_every_row(&cluster, &[1, 2, 3], &acked);
    assert_reads_back(cluster.addr(1), &acked, Consistency::All, "after the removenode");
}

/// kill -9 of a node mid-decommission (LEAVING, streaming) while a writer writes at QUORUM:
/// restarted on its directory it comes back NORMAL (UN everywhere) and says so; `admin
/// decommission` run again completes; every acknowledged write reads back at QUORUM and ALL.
#[test]
fn a_leaving_node_killed_mid_stream_comes_back_normal_and_decommissions_again() {
    let mut cluster = TestCluster::start_with("decommission-crash", 4, &THROTTLED);
    let wide = load_wide(&cluster);
    cluster.create_kv_table(3);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = QuorumWriter::start(cluster.addr(1), stop.clone());
    await_until("the writer has acknowledged writes", || writer.acked() > 100);
    let leaving = cluster.addr(4);
    let command = std::thread::spawn(move || admin(leaving, &["decommission"]));
    let at_kill = await_streaming(leaving, "LEAVING: streaming");
    cluster.kill(4);
    eprintln!("killed the leaving node at {at_kill}");
    let (ok, _, err) = command.join().expect("admin decommission");
    assert!(!ok, "the decommission of a killed node did not fail: {err}");

    cluster.restart(4);
    let restarted = cluster.addr(4);
    let progress = netstats(restarted);
    assert_eq!(progress["mode"], "NORMAL: decommission interrupted by a restart", "{progress}");
    for i in 1..=4 {
        await_until(&format!("node {i} lists the restarted node UN"), || {
            state_of(cluster.addr(i), restarted).as_deref() == Some("UN")
        });
    }
    let (ok, out, err) = admin(restarted, &["decommission"]);
    assert!(ok, "admin decommission run again failed: {err}");
    assert!(out.starts_with("Decommissioned: streamed "), "{out}");
    let mut node = cluster.take(4);
    let (status, _) = node.wait_exit("its decommission");
    assert!(status.success(), "the decommissioned node exited with {status}");
    for i in 1..=3 {
        await_until(&format!("node {i} lists three nodes, all UN"), || {
            admin_status(cluster.addr(i)).is_some_and(|s| {
                let listed = rows(&s);
                listed.len() == 3 && listed.iter().all(|r| r["state"] == "UN")
            })
        });
    }
    let after = writer.acked();
    await_until("the writer goes on after the decommission", || writer.acked() > after + 100);
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.finish();
    eprintln!("during the decommissions: {} writes acknowledged, {failed} not", acked.len());
    let acked: BTreeMap<String, i32> = acked.into_iter().collect();
    assert_every_node_holds_every_row(&cluster, &[1, 2, 3], &acked);
    assert_reads_back(cluster.addr(1), &acked, Consistency::Quorum, "after the decommission");
    assert_reads_back(cluster.addr(2), &acked, Consistency::All, "after the decommission");
    for i in 1..=3 {
        let wrong = wrong_wide(cluster.addr(i), &wide, Consistency::One);
        assert!(wrong.is_empty(), "{} rows of table wide missing from node {i}'s own data", wrong.len());
    }
}

/// A node taken out by removenode and restarted on its old directory is refused, saying why,
/// and once its gossip state expired (`--left-state-retention-ms`) no node knows it any more.
#[test]
fn a_removed_node_is_refused_at_restart_and_forgotten_once_its_state_expires() {
    const RETENTION: &str = "20000";
    let mut cluster = TestCluster::start_with(
        "removed-rejoin",
        4,
        &["--ring-delay-ms", "1000", "--left-state-retention-ms", RETENTION],
    );
    cluster.create_kv_table(3);
    let acked = load_kv(cluster.addr(1), 500);
    let dead = cluster.addr(4);
    let dead_id = host_id(cluster.addr(1), dead);
    let metrics = cluster.server(1).metrics.expect("node 1's ready line names its metrics address");
    let peers_known = || common::scrape(metrics).sum("enigmadb_gossip_peers", &[]);
    assert_eq!(peers_known(), 3.0);
    cluster.kill(4);
    await_until("node 1 sees the killed node down", || state_of(cluster.addr(1), dead).as_deref() == Some("DN"));
    let (ok, _, err) = admin(cluster.addr(1), &["removenode", &dead_id]);
    assert!(ok, "admin removenode failed: {err}");

    // Its old directory, with the cluster's seed: the seed says it was removed.
    let seed = cluster.server(1).peer.expect("node 1's peer address").to_string();
    let at = format!("{}:0", common::cluster::node_host(4));
    let refusal = refused_start(&cluster.node_dir(4), &["--seeds", &seed, "--listen", &at, "--peer-listen", &at]);
    assert!(refusal.contains(&format!("this node (host id {dead_id}) was removed from the cluster")), "{refusal}");
    assert!(refusal.contains("Remove the data directory to join the cluster as a new node"), "{refusal}");

    // Kept in gossip (quarantined) until it expires, then forgotten.
    assert_eq!(peers_known(), 3.0, "the removed node's state is kept until it expires");
    await_until("node 1 forgets the removed node", || peers_known() == 2.0);
    for i in 1..=3 {
        await_until(&format!("node {i} lists three nodes, all UN"), || {
            admin_status(cluster.addr(i))
                .is_some_and(|s| rows(&s).len() == 3 && rows(&s).iter().all(|r| r["state"] == "UN"))
        });
    }
    assert_reads_back(cluster.addr(2), &acked, Consistency::All, "after the removed node expired");
}

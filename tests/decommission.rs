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
    admin_status, assert_reads_back, await_until, check_all, load_kv, netstats, rows, state_of, QuorumWriter,
    TestCluster,
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

//! Replacing a dead node with real processes (`enigmadb server --replace`): a 3-node RF 2
//! cluster holds rows written at QUORUM, one node is killed with SIGKILL, and a new node
//! started with `--replace` (on the dead node's address) takes its tokens, streams its ranges
//! from the survivors and turns NORMAL: the ring lists it with the dead node's tokens and no
//! longer lists the dead node, and with the other nodes down it answers at ONE, from its own
//! copy, every row of the ranges the dead node had. The replacement is killed once while it is
//! joining and restarted without the flag: it resumes. A live node cannot be replaced.

mod common;

use common::cluster::{admin_status, await_until, count_up, ring, rows, RingVnode, TestCluster};
use common::{connect, refused_start, text};
use wire::protocol::{ErrorCode, QueryParams, QueryResult};
use wire::{Consistency, Value};

const ROWS: usize = 3_000;
const RF: usize = 2;

fn at(consistency: Consistency) -> QueryParams {
    QueryParams { consistency, ..QueryParams::default() }
}

/// The vnode tokens of `host` in a ring listing, sorted.
fn tokens_of(ring: &[RingVnode], host: &str) -> Vec<i64> {
    ring.iter().filter(|v| v.host_id == host).map(|v| v.token).collect()
}

#[test]
fn a_replacement_takes_the_dead_nodes_tokens_and_serves_its_ranges() {
    let mut cluster = TestCluster::start_with("replace", 3, &["--ring-delay-ms", "3000"]);
    let acked = cluster.load_kv(RF, ROWS);
    let dead = cluster.host_id(3);
    let before = ring(cluster.addr(1));
    let dead_tokens = tokens_of(&before, &dead);
    assert_eq!(dead_tokens.len(), 8, "{before:?}");

    // A live node cannot be replaced: the start is refused, naming it, before the directory
    // gets an identity.
    let refused_dir = cluster.dir.join("refused");
    let host = common::cluster::node_host(5);
    let (listen, peer) = (format!("{host}:0"), format!("{host}:0"));
    let live = cluster.host_id(2);
    let flags = cluster.flags(5, &["--replace", &live, "--listen", &listen, "--peer-listen", &peer]);
    let stderr = refused_start(&refused_dir, &flags);
    assert!(stderr.contains("is alive") && stderr.contains(&live), "{stderr}");
    assert!(!refused_dir.join("node.meta").exists(), "a refused replacement creates no identity");
    let unknown = refused_start(&refused_dir, &cluster.flags(5, &["--replace", "127.9.9.9:1", "--listen", &listen]));
    assert!(unknown.contains("no member of the cluster has peer address 127.9.9.9:1"), "{unknown}");

    let dead_peer = cluster.server(3).peer.expect("a peer address").to_string();
    cluster.kill(3);
    for i in [1, 2] {
        await_until(&format!("node {i} sees node 3 down"), || count_up(cluster.addr(i)) == 2);
    }
    // A directory that holds a node's data is no place for a replacement.
    let held = refused_start(&cluster.node_dir(3), &cluster.flags(5, &["--replace", &dead, "--listen", &listen]));
    assert!(held.contains("already holds data"), "{held}");
    // The replacement, naming the dead node by its peer address, takes the dead node's
    // address (a new port: the test nodes' ports are the kernel's choice).
    let new = cluster.add_on(3, &["--replace", &dead_peer]);
    let new_host = cluster.host_id(new);
    assert_ne!(new_host, dead);
    await_until("node 1 lists the replacement joining with the dead node's tokens", || {
        let Some(status) = admin_status(cluster.addr(1)) else { return false };
        rows(&status).iter().any(|n| n["host_id"] == new_host && n["state"] == "UJ" && n["tokens"] == 8)
    });
    // Killed mid-replace and started again (on its own address, without --replace): it
    // resumes from its bootstrap.state; `restart` returns once every node lists it UN.
    cluster.restart(new);
    assert_eq!(cluster.host_id(new), new_host);
    for i in [1, 2, new] {
        await_until(&format!("node {i} lists the replacement UN and not the dead node"), || {
            let Some(status) = admin_status(cluster.addr(i)) else { return false };
            let nodes = rows(&status);
            nodes.len() == 3 && !nodes.iter().any(|n| n["host_id"] == dead) && nodes.iter().all(|n| n["state"] == "UN")
        });
        let after = ring(cluster.addr(i));
        assert_eq!(tokens_of(&after, &new_host), dead_tokens, "node {i}: the replacement has the dead node's tokens");
        assert!(tokens_of(&after, &dead).is_empty(), "node {i} still lists the dead node: {after:?}");
        let owners: Vec<(i64, String)> = after.iter().map(|v| (v.token, v.host_id.replace(&new_host, &dead))).collect();
        let was: Vec<(i64, String)> = before.iter().map(|v| (v.token, v.host_id.clone())).collect();
        assert_eq!(owners, was, "node {i}: no other ownership change");
    }

    // With the others down, the replacement answers at ONE from its own copy: every key of a
    // range it (and so the dead node) replicates reads back; the others are unavailable.
    let new_addr = cluster.addr(new);
    cluster.kill(1);
    cluster.kill(2);
    await_until("the replacement sees the others down", || count_up(new_addr) == 1);
    let mut client = connect(new_addr);
    let select = client.prepare("SELECT v FROM kv WHERE k = ?").expect("prepare");
    let (mut served, mut wrong) = (0, Vec::new());
    for (key, value) in &acked {
        match client.execute(&select, &[Some(Value::Text(key.clone()))], at(Consistency::One)) {
            Ok(QueryResult::Rows(r)) if r.rows.first().map(|row| &row[0]) == Some(&Some(Value::Int(*value))) => {
                served += 1
            }
            Err(wire::client::ClientError::Server(e)) if matches!(e.code, ErrorCode::Unavailable { .. }) => {}
            other => wrong.push(format!("{key}: {other:?}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} keys read wrong at ONE on the replacement: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    // RF 2 of 3 nodes: the dead node replicated about two thirds of the keys.
    assert!(served > ROWS / 3 && served < ROWS, "served {served} of {ROWS}");
    let netstats = common::enigmadb().args(["admin", "netstats", "--host", &new_addr.to_string()]).output().unwrap();
    let netstats = text(&netstats.stdout);
    assert!(netstats.contains("bootstrap completed"), "{netstats}");
}

//! Anti-entropy repair with real `enigmadb server` processes: a node that was down while the
//! others took writes is brought up to date by `enigmadb admin repair` (and then answers every
//! row alone), and repairing a consistent cluster streams nothing; with `--repair-interval-ms`
//! the nodes do the same on their own.

mod common;

use std::net::SocketAddr;

use common::cluster::{admin_status, await_until, node_host, rows, sees_up, TestCluster, PHI};
use common::{connect, enigmadb, query_at, text, Server};
use wire::client::Client;
use wire::protocol::QueryResult;
use wire::{Consistency, Value};

/// Hinted handoff would hand the missed writes over on its own; the test is about repair.
const NO_HINTS: [&str; 2] = ["--hinted-handoff-enabled", "false"];

fn write(client: &mut Client, key: &str, value: i32, consistency: Consistency) {
    let statement = format!("INSERT INTO kv (k, v) VALUES ('{key}', {value})");
    query_at(client, &statement, consistency).unwrap_or_else(|e| panic!("{statement} at {consistency}: {e}"));
}

fn read(client: &mut Client, key: &str) -> Option<i32> {
    let statement = format!("SELECT v FROM kv WHERE k = '{key}'");
    match query_at(client, &statement, Consistency::One) {
        Ok(QueryResult::Rows(rows)) => rows.rows.first().and_then(|row| match row[0] {
            Some(Value::Int(v)) => Some(v),
            _ => None,
        }),
        other => panic!("{statement}: {other:?}"),
    }
}

/// `enigmadb admin repair --host ADDR --json [extra]`: the summary object (progress goes to
/// stderr).
fn repair(addr: SocketAddr, extra: &[&str]) -> serde_json::Value {
    let out = enigmadb()
        .args(["admin", "repair", "--host", &addr.to_string(), "--json"])
        .args(extra)
        .output()
        .expect("running enigmadb admin repair");
    assert!(out.status.success(), "repair failed: {}\n{}", text(&out.stderr), text(&out.stdout));
    let progress = text(&out.stderr);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("repair printed no JSON summary ({e}): {}", text(&out.stdout)));
    let ranges = summary["ranges"].as_u64().expect("a range count");
    // One progress line per range, counting up to the total.
    assert!(
        ranges == 0 || progress.contains(&format!("[{ranges}/{ranges}]")),
        "no progress up to {ranges} ranges: {progress}"
    );
    summary
}

fn count(summary: &serde_json::Value, field: &str) -> u64 {
    summary[field].as_u64().unwrap_or_else(|| panic!("no {field} in {summary}"))
}

#[test]
fn repair_brings_back_a_node_that_missed_writes_and_a_consistent_cluster_streams_nothing() {
    let mut cluster = TestCluster::start_with("repair-rf3", 3, &NO_HINTS);
    let mut first = cluster.create_kv_table(3);
    let mut expected: Vec<i32> = (0..40).collect();
    for (n, v) in expected.iter().enumerate() {
        write(&mut first, &format!("k{n}"), *v, Consistency::All);
    }

    // Every replica holds the same rows: the trees agree, nothing is streamed.
    let consistent = repair(cluster.addr(1), &[]);
    let ranges = count(&consistent, "ranges");
    assert!(ranges > 0, "RF 3 on 3 nodes: node 1 shares every range: {consistent}");
    assert_eq!(count(&consistent, "ranges_compared"), ranges, "{consistent}");
    assert_eq!(count(&consistent, "ranges_differing"), 0, "{consistent}");
    assert_eq!(count(&consistent, "bytes_streamed"), 0, "{consistent}");

    // Node 3 misses new rows and overwrites of old ones.
    cluster.kill(3);
    expected.extend(40..300);
    for (n, v) in expected.iter_mut().enumerate() {
        if n % 7 == 0 {
            *v += 1000;
        }
        if n >= 40 || n % 7 == 0 {
            write(&mut first, &format!("k{n}"), *v, Consistency::Quorum);
        }
    }
    cluster.restart(3);
    cluster.await_up(3);

    let repaired = repair(cluster.addr(3), &["--table", "kv"]);
    assert!(count(&repaired, "ranges_differing") > 0, "{repaired}");
    assert!(count(&repaired, "rows_received") >= 260 + 40 / 7, "node 3 pulls every missed row: {repaired}");
    assert!(count(&repaired, "bytes_received") > 0, "{repaired}");
    assert_eq!(count(&repaired, "replicas_skipped"), 0, "{repaired}");

    // Converged: a second repair from any node finds nothing to do.
    let again = repair(cluster.addr(2), &[]);
    assert_eq!(count(&again, "ranges_differing"), 0, "{again}");
    assert_eq!(count(&again, "bytes_streamed"), 0, "{again}");

    // Alone, node 3 answers every row at ONE with its latest value.
    cluster.kill(1);
    cluster.kill(2);
    let mut third = connect(cluster.addr(3));
    for (n, v) in expected.iter().enumerate() {
        assert_eq!(read(&mut third, &format!("k{n}")), Some(*v), "k{n} on node 3 alone");
    }
}

#[test]
fn repair_refuses_an_unknown_table_and_a_single_node_has_nothing_to_repair() {
    let cluster = TestCluster::start_with("repair-single", 1, &NO_HINTS);
    let addr = cluster.addr(1);
    let mut client = connect(addr);
    query_at(&mut client, "CREATE TABLE kv (k text PRIMARY KEY, v int)", Consistency::One).expect("CREATE TABLE");
    write(&mut client, "a", 1, Consistency::One);
    let summary = repair(addr, &[]);
    assert_eq!((count(&summary, "ranges"), count(&summary, "bytes_streamed")), (0, 0), "{summary}");

    let out = enigmadb()
        .args(["admin", "repair", "--host", &addr.to_string(), "--table", "nope"])
        .output()
        .expect("running enigmadb admin repair");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("Table 'nope' doesn't exist"), "{}", text(&out.stderr));
}

/// With `--repair-interval-ms`, the nodes repair their primary ranges on their own: a node
/// that missed writes while down (hints off) comes to hold every row without any command.
#[test]
fn scheduled_repair_brings_back_a_node_that_missed_writes_without_a_command() {
    let flags = [&NO_HINTS[..], &["--repair-interval-ms", "500"]].concat();
    let mut cluster = TestCluster::start_with("repair-scheduled", 3, &flags);
    let mut first = cluster.create_kv_table(3);
    cluster.kill(3);
    for n in 0..100 {
        write(&mut first, &format!("k{n}"), n, Consistency::Quorum);
    }
    cluster.restart(3);
    // At ONE, node 3 as coordinator reads its own copy: the rows arrive only through repair.
    let mut third = connect(cluster.addr(3));
    await_until("node 3 holds every row", || (0..100).all(|n| read(&mut third, &format!("k{n}")) == Some(n)));
    cluster.kill(1);
    cluster.kill(2);
    for n in 0..100 {
        assert_eq!(read(&mut third, &format!("k{n}")), Some(n), "k{n} on node 3 alone");
    }
}

/// A repair right after a peer came back reaches it, though the node's earlier connection
/// attempts to the peer's address failed and started a backoff (up to 5 s): gossip hearing the
/// peer again resets that backoff, so no replica is skipped.
#[test]
fn repair_right_after_a_peer_restart_reaches_it_despite_the_connection_backoff() {
    let mut cluster = TestCluster::start_with("repair-backoff", 1, &NO_HINTS);
    let seed = cluster.server(1).peer.expect("the ready line names the peer address").to_string();
    let flags = [&NO_HINTS[..], &["--phi-convict-threshold", PHI, "--seeds", &seed]].concat();
    let (host, dir) = (node_host(2), cluster.dir.join("node-2"));
    let launch =
        |peer_listen: &str| Server::start_command(enigmadb(), &format!("{host}:0"), peer_listen, &dir, 1, &flags);
    let second = launch(&format!("{host}:0"));
    // Restarted on the same peer address, which node 1 has been failing to connect to.
    let peer_listen = second.peer.expect("the ready line names the peer address").to_string();
    await_until("node 1 sees node 2 up", || sees_up(cluster.addr(1), second.addr));
    let mut first = cluster.create_kv_table(2);
    let mut client = connect(second.addr);
    await_until("node 2 knows table kv", || {
        query_at(&mut client, "SELECT v FROM kv WHERE k = 'absent'", Consistency::One).is_ok()
    });
    drop(client);
    let old_addr = second.addr;
    drop(second); // SIGKILL
    for n in 0..20 {
        write(&mut first, &format!("k{n}"), n, Consistency::One);
    }
    // Node 1 convicts node 2 after its gossip rounds (one a second) kept failing to connect:
    // by then its backoff before the next attempt is at the maximum.
    await_until("node 1 sees node 2 down", || {
        admin_status(cluster.addr(1)).is_some_and(|status| {
            rows(&status).iter().any(|r| r["address"] == old_addr.to_string() && r["state"] == "DN")
        })
    });
    let second = launch(&peer_listen);
    await_until("node 1 sees node 2 up again", || sees_up(cluster.addr(1), second.addr));

    let repaired = repair(cluster.addr(1), &["--table", "kv"]);
    assert_eq!(count(&repaired, "replicas_skipped"), 0, "{repaired}");
    assert!(count(&repaired, "rows_sent") >= 20, "node 2 gets the rows it missed: {repaired}");
    cluster.kill(1);
    drop(second);
}

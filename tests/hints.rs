//! Hinted handoff with real `enigmadb server` processes: a replica that was down while QUORUM
//! writes went on gets every one of them once it is back, from the hints its coordinators kept,
//! also when a coordinator was killed (SIGKILL) with hints pending and restarted. The check is
//! what a user would do: read every row at ONE from that replica alone, the others killed.

mod common;

use std::net::SocketAddr;

use common::cluster::{await_until, TestCluster};
use common::{connect, enigmadb, query_at};
use wire::client::Client;
use wire::protocol::QueryResult;
use wire::{Consistency, Value};

/// Rows written while node 3 is down, per phase.
const ROWS: i32 = 150;

fn write(client: &mut Client, k: i32) {
    query_at(client, &format!("INSERT INTO kv (k, v) VALUES ('k{k}', {k})"), Consistency::Quorum)
        .unwrap_or_else(|e| panic!("QUORUM write of k{k} with two of three replicas up: {e:?}"));
}

fn read_one(client: &mut Client, k: i32) -> Option<i32> {
    match query_at(client, &format!("SELECT v FROM kv WHERE k = 'k{k}'"), Consistency::One) {
        Ok(QueryResult::Rows(rows)) => rows.rows.first().and_then(|row| match row[0] {
            Some(Value::Int(v)) => Some(v),
            _ => None,
        }),
        other => panic!("reading k{k} at ONE: {other:?}"),
    }
}

/// `hints_pending` of `enigmadb admin info --json` on the node at `addr`.
fn hints_pending(addr: SocketAddr) -> Option<u64> {
    let out = enigmadb().args(["admin", "info", "--host", &addr.to_string(), "--json"]).output().ok()?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    info["hints_pending"].as_u64()
}

#[test]
fn a_restarted_replica_gets_every_write_it_missed_from_the_hints() {
    let mut cluster = TestCluster::start("hints-rf3", 3);
    let mut first = cluster.create_kv_table(3);

    // Node 3 down: node 1 coordinates QUORUM writes and keeps a hint for each.
    cluster.kill(3);
    for k in 0..ROWS {
        write(&mut first, k);
    }
    await_until("node 1 keeps a hint per write", || hints_pending(cluster.addr(1)) == Some(ROWS as u64));
    cluster.restart(3);
    await_until("node 1 replayed its hints to node 3", || hints_pending(cluster.addr(1)) == Some(0));

    // Node 3 down again: node 2 coordinates, is killed with its hints pending and restarted.
    cluster.kill(3);
    let mut second = connect(cluster.addr(2));
    for k in ROWS..2 * ROWS {
        write(&mut second, k);
    }
    drop(second);
    await_until("node 2 keeps a hint per write", || hints_pending(cluster.addr(2)) == Some(ROWS as u64));
    // Hints are written and synced right after their write is answered: kill once they are.
    let metrics = cluster.server(2).metrics.expect("node 2's metrics endpoint");
    await_until("node 2 synced its hints", || {
        common::scrape(metrics).sum("enigmadb_hints_stored_total", &[]) >= ROWS as f64
    });
    cluster.restart(2);
    assert_eq!(hints_pending(cluster.addr(2)), Some(ROWS as u64), "node 2's hints survive its SIGKILL");
    cluster.restart(3);
    await_until("node 2 replayed its hints to node 3", || hints_pending(cluster.addr(2)) == Some(0));

    // Node 3 alone holds every row.
    cluster.kill(1);
    cluster.kill(2);
    let mut third = connect(cluster.addr(3));
    let missing: Vec<i32> = (0..2 * ROWS).filter(|&k| read_one(&mut third, k) != Some(k)).collect();
    assert!(
        missing.is_empty(),
        "node 3 lacks {} rows, first ones {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

//! `enigmadb admin cleanup` with real processes: a 4th node joins a 3-node RF 2 cluster holding
//! rows written at QUORUM. While it is joining, cleanup is refused on the old nodes (a range
//! movement involves them); once it is NORMAL, cleanup on each old node drops from its own
//! SSTables exactly the partitions it no longer replicates (checked with the SSTable
//! inspector against the ring), and every row still reads back at ALL and QUORUM.

mod common;

use std::collections::BTreeSet;

use common::cluster::{admin_status, await_until, replicas_of, ring, rows, sstable_tokens, TestCluster};
use common::{connect, enigmadb, text};
use wire::protocol::{QueryParams, QueryResult};
use wire::token::{serialize_partition_key, token_of};
use wire::{Consistency, Value};

const ROWS: usize = 3_000;
const RF: usize = 2;

fn at(consistency: Consistency) -> QueryParams {
    QueryParams { consistency, ..QueryParams::default() }
}

fn token(key: &str) -> i64 {
    token_of(&serialize_partition_key(&[Value::Text(key.to_owned())]))
}

/// `enigmadb admin cleanup kv --json` on `addr`: Ok(report) or Err(stderr).
fn cleanup(addr: std::net::SocketAddr) -> Result<serde_json::Value, String> {
    let out = enigmadb().args(["admin", "cleanup", "kv", "--json", "--host", &addr.to_string()]).output().unwrap();
    match out.status.success() {
        true => Ok(serde_json::from_slice(&out.stdout).expect("admin cleanup prints JSON")),
        false => Err(text(&out.stderr)),
    }
}

#[test]
fn cleanup_after_a_join_drops_exactly_what_each_node_no_longer_replicates() {
    // A ring delay long enough to see the join in progress.
    let mut cluster = TestCluster::start_with("cleanup", 3, &["--ring-delay-ms", "8000"]);
    let acked = cluster.load_kv(RF, ROWS);
    let tokens: BTreeSet<i64> = acked.keys().map(|k| token(k)).collect();

    let new = cluster.join();
    let new_addr = cluster.addr(new);
    await_until("node 1 lists the new node joining with its tokens", || {
        let Some(status) = admin_status(cluster.addr(1)) else { return false };
        rows(&status).iter().any(|n| n["address"] == new_addr.to_string() && n["state"] == "UJ" && n["tokens"] != 0)
    });
    for i in 1..=3 {
        let refused = cleanup(cluster.addr(i)).expect_err("cleanup during a join");
        assert!(refused.contains("cleanup refused") && refused.contains("range movement"), "node {i}: {refused}");
    }
    cluster.await_up(4);

    let ring = ring(cluster.addr(1));
    for i in 1..=3 {
        let host = cluster.host_id(i);
        let addr = cluster.addr(i);
        let out = enigmadb().args(["admin", "flush", "--host", &addr.to_string()]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let before: BTreeSet<i64> = sstable_tokens(&cluster.node_dir(i)).into_iter().collect();
        let owned: BTreeSet<i64> =
            tokens.iter().copied().filter(|t| replicas_of(&ring, *t, RF).contains(&host)).collect();
        assert!(owned.is_subset(&before), "node {i} lacks keys it replicates before the cleanup");
        let lost = before.len() - owned.len();
        assert!(lost > 0, "node {i} gave no range to the new node");

        let report = cleanup(addr).unwrap_or_else(|e| panic!("node {i}: {e}"));
        let table = &report["tables"][0];
        assert_eq!(table["table"], "kv", "{report}");
        // A partition in two SSTables is dropped from each.
        assert!(table["partitions_dropped"].as_u64() >= Some(lost as u64), "node {i}: {report}");
        assert!(table["bytes_out"].as_u64() < table["bytes_in"].as_u64(), "node {i}: {report}");
        let after: BTreeSet<i64> = sstable_tokens(&cluster.node_dir(i)).into_iter().collect();
        assert_eq!(after, owned, "node {i} keeps exactly the tokens it replicates");
        // A second cleanup has nothing left to drop.
        let again = cleanup(addr).unwrap_or_else(|e| panic!("node {i}: {e}"));
        assert_eq!(again["tables"][0]["partitions_dropped"], 0, "node {i}: {again}");
    }

    for consistency in [Consistency::All, Consistency::Quorum] {
        for node in 1..=4 {
            let mut client = connect(cluster.addr(node));
            let select = client.prepare("SELECT v FROM kv WHERE k = ?").expect("prepare");
            let wrong: Vec<String> = acked
                .iter()
                .filter(|(key, value)| {
                    let got = client.execute(&select, &[Some(Value::Text((*key).clone()))], at(consistency));
                    !matches!(got, Ok(QueryResult::Rows(r)) if r.rows.first().map(|row| &row[0]) == Some(&Some(Value::Int(**value))))
                })
                .map(|(key, _)| key.clone())
                .collect();
            assert!(
                wrong.is_empty(),
                "{} rows wrong at {consistency:?} through node {node}: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(10)]
            );
        }
    }
}

//! Replicated range scans with real `enigmadb server` processes: on three nodes, a full
//! `SELECT` (paged) and `count(*)` asked of any node return every row exactly once, in token
//! order, at QUORUM and ALL; with one node killed, QUORUM scans keep answering in full where
//! enough replicas are left and are a typed UNAVAILABLE where they are not.

mod common;

use std::collections::HashSet;

use common::cluster::{await_until, TestCluster};
use common::{connect, query_at, server_error};
use wire::client::Client;
use wire::protocol::{ErrorCode, QueryParams, QueryResult};
use wire::{Consistency, Value};

const ROWS: i32 = 300;
/// Small pages, so a scan's pages end inside and across the ranges of many vnodes.
const PAGE: u32 = 37;

/// `SELECT token(k), k, v FROM table` through every page: (token, k, v) per row, in the order
/// returned.
fn scan(client: &mut Client, table: &str, consistency: Consistency) -> Result<Vec<(i64, i32, i32)>, ErrorCode> {
    let params = QueryParams { consistency, page_size: Some(PAGE), ..QueryParams::default() };
    let text = format!("SELECT token(k), k, v FROM {table}");
    let pages = client.query_paged_with(&text, params).map_err(|e| server_error(e).code)?;
    let mut out = Vec::new();
    for row in pages {
        let row = row.map_err(|e| server_error(e).code)?;
        match &row[..] {
            [Some(Value::BigInt(t)), Some(Value::Int(k)), Some(Value::Int(v))] => out.push((*t, *k, *v)),
            other => panic!("a row of token, k, v: {other:?}"),
        }
    }
    Ok(out)
}

fn count(client: &mut Client, table: &str, consistency: Consistency) -> Result<i64, ErrorCode> {
    match query_at(client, &format!("SELECT count(*) FROM {table}"), consistency).map_err(|e| e.code)? {
        QueryResult::Rows(rows) => match rows.rows.first().map(|r| &r[..]) {
            Some([Some(Value::BigInt(n))]) => Ok(*n),
            other => panic!("count(*) answered {other:?}"),
        },
        other => panic!("count(*) answered {other:?}"),
    }
}

/// Every key 0..ROWS once, with v = 10 k, in strictly increasing token order.
fn assert_complete(rows: &[(i64, i32, i32)], what: &str) {
    assert_eq!(rows.len(), ROWS as usize, "{what}: row count");
    let keys: HashSet<i32> = rows.iter().map(|r| r.1).collect();
    assert_eq!(keys, (0..ROWS).collect::<HashSet<_>>(), "{what}: every key exactly once");
    assert!(rows.iter().all(|(_, k, v)| *v == 10 * k), "{what}: the written values");
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "{what}: token order");
}

#[test]
fn full_scans_and_counts_return_every_row_once_in_token_order_from_every_node_and_with_one_node_down() {
    let mut cluster = TestCluster::start("cluster-scan", 3);
    let mut first = connect(cluster.addr(1));
    for (table, rf) in [("kv2", 2), ("kv3", 3)] {
        let create = format!("CREATE TABLE {table} (k int PRIMARY KEY, v int) WITH replication_factor = {rf}");
        query_at(&mut first, &create, Consistency::One).expect("CREATE TABLE");
    }
    for i in 2..=3 {
        let mut client = connect(cluster.addr(i));
        await_until(&format!("node {i} knows the tables"), || count(&mut client, "kv3", Consistency::One).is_ok());
    }
    for table in ["kv2", "kv3"] {
        for k in 0..ROWS {
            let insert = format!("INSERT INTO {table} (k, v) VALUES ({k}, {})", 10 * k);
            query_at(&mut first, &insert, Consistency::Quorum).expect("QUORUM write");
        }
    }
    for i in 1..=3 {
        let mut client = connect(cluster.addr(i));
        for table in ["kv2", "kv3"] {
            for level in [Consistency::Quorum, Consistency::All] {
                let what = format!("{table} at {level} on node {i}");
                assert_complete(&scan(&mut client, table, level).expect("a scan"), &what);
                assert_eq!(count(&mut client, table, level), Ok(i64::from(ROWS)), "count(*) of {what}");
            }
        }
    }

    cluster.kill(3);
    cluster.await_up(2);
    for i in 1..=2 {
        let mut client = connect(cluster.addr(i));
        let what = format!("kv3 at QUORUM on node {i}, node 3 down");
        assert_complete(&scan(&mut client, "kv3", Consistency::Quorum).expect("a QUORUM scan"), &what);
        assert_eq!(count(&mut client, "kv3", Consistency::Quorum), Ok(i64::from(ROWS)), "count(*) of {what}");
        // RF 2: the ranges node 3 replicates have one live replica of the two QUORUM needs.
        match scan(&mut client, "kv2", Consistency::Quorum) {
            Err(ErrorCode::Unavailable { consistency: Consistency::Quorum, required: 2, alive: 1 }) => {}
            other => panic!("kv2 at QUORUM with node 3 down: expected UNAVAILABLE 2/1, got {other:?}"),
        }
        let what = format!("kv2 at ONE on node {i}, node 3 down");
        assert_complete(&scan(&mut client, "kv2", Consistency::One).expect("a ONE scan"), &what);
    }
}

//! No peer message outgrows a frame, with real processes and a frame limit of 8 MiB on every
//! node: a partition of 1 MiB rows read through a coordinator that is not its replica comes
//! back whole, a page at a time (each replica READ answer bounded in bytes as well as rows),
//! and removenode streams such a partition, and a wide one of small rows, in bounded pieces.
//! Before, a replica answered a page's READ with up to 5001 rows, and a stream's SCAN with
//! whole partitions: 24 MiB frames, refused, so the read and the removenode failed.

mod common;

use std::collections::BTreeMap;

use common::cluster::{await_until, netstats, replicas_of, ring, state_of, TestCluster};
use common::{batch_ok, connect, query_at};
use wire::client::{Client, ClientOptions};
use wire::protocol::{BatchKind, BatchRequest, BatchStatement, QueryParams, QueryResult};
use wire::token::{serialize_partition_key, token_of};
use wire::{Consistency, Value};

const MIB: usize = 1 << 20;
/// The frame limit of every node (client and peer frames) and of the reading client.
const FRAME: usize = 8 * MIB;
/// Rows of 1 MiB in the partition of large rows: 24 MiB, three frames.
const LARGE_ROWS: i32 = 24;
/// Rows in the wide partition: more than a stream page holds (16,384 rows).
const WIDE_ROWS: i32 = 40_000;

/// A blob of `len` bytes that says which row it belongs to.
fn blob(ck: i32, len: usize) -> Vec<u8> {
    let mut v = vec![(ck % 251) as u8; len];
    v[..4].copy_from_slice(&ck.to_be_bytes());
    v
}

/// Creates `big (pk int, ck int, v blob, PRIMARY KEY (pk, ck))` at replication factor `rf`
/// through node 1, and waits until every node of `nodes` knows it.
fn create_big(cluster: &TestCluster, nodes: usize, rf: usize) {
    let mut first = connect(cluster.addr(1));
    let ddl = format!("CREATE TABLE big (pk int, ck int, v blob, PRIMARY KEY (pk, ck)) WITH replication_factor = {rf}");
    query_at(&mut first, &ddl, Consistency::One).expect("CREATE TABLE big");
    for i in 1..=nodes {
        let mut client = connect(cluster.addr(i));
        await_until(&format!("node {i} knows table big"), || {
            query_at(&mut client, "SELECT ck FROM big WHERE pk = -1", Consistency::One).is_ok()
        });
    }
}

/// Writes the LARGE_ROWS rows of 1 MiB of partition `pk` through `client`.
fn write_large_rows(client: &mut Client, pk: i32) {
    let insert = client.prepare("INSERT INTO big (pk, ck, v) VALUES (?, ?, ?)").expect("prepare");
    for ck in 0..LARGE_ROWS {
        let values = [Some(Value::Int(pk)), Some(Value::Int(ck)), Some(Value::Blob(blob(ck, MIB)))];
        client.execute(&insert, &values, QueryParams::default()).expect("insert a 1 MiB row");
    }
}

/// Pages through `query` (rows `ck, v`) at ONE with a client that refuses frames over FRAME:
/// the blob length of each clustering key (each checked against its key) and the pages.
fn page_through(client: &mut Client, query: &str) -> (BTreeMap<i32, usize>, usize) {
    let params = QueryParams { consistency: Consistency::One, ..QueryParams::default() };
    let mut pages = client.query_paged_with(query, params).expect("the first page");
    let mut seen = BTreeMap::new();
    for row in pages.by_ref() {
        let row = row.expect("a page under the frame limit");
        let (Some(Value::Int(ck)), Some(Value::Blob(v))) = (&row[0], &row[1]) else { panic!("row shape {row:?}") };
        assert!(*v == blob(*ck, v.len()), "row {ck} intact");
        assert!(seen.insert(*ck, v.len()).is_none(), "row {ck} once");
    }
    let fetched = pages.pages_fetched();
    (seen, fetched)
}

fn reader(addr: std::net::SocketAddr) -> Client {
    Client::connect_with(addr, ClientOptions { max_frame_bytes: FRAME, ..ClientOptions::default() }).expect("connect")
}

fn count(client: &mut Client, query: &str) -> i64 {
    match query_at(client, query, Consistency::One) {
        Ok(QueryResult::Rows(rows)) => match rows.rows[..] {
            [ref row] => match row[..] {
                [Some(Value::BigInt(n))] => n,
                _ => panic!("{query}: {row:?}"),
            },
            _ => panic!("{query}: {:?}", rows.rows),
        },
        other => panic!("{query}: {other:?}"),
    }
}

#[test]
fn large_rows_read_through_a_coordinator_that_is_not_their_replica_come_back_a_page_at_a_time() {
    let frame = FRAME.to_string();
    let cluster =
        TestCluster::start_with("peer-read-large-rows", 2, &["--max-frame-bytes", &frame, "--sync-mode", "periodic"]);
    create_big(&cluster, 2, 1);
    // A partition whose one replica is node 2, read through node 1.
    let pk = partitions_of(&cluster, &[cluster.host_id(2)], 1, 1)[0];
    write_large_rows(&mut connect(cluster.addr(2)), pk);

    let mut client = reader(cluster.addr(1));
    let (seen, pages) = page_through(&mut client, &format!("SELECT ck, v FROM big WHERE pk = {pk}"));
    let want: BTreeMap<i32, usize> = (0..LARGE_ROWS).map(|ck| (ck, MIB)).collect();
    assert_eq!(seen, want, "every row of the partition once, whole");
    // A page ends once its values reach 1 MiB: one large row each.
    assert!(pages >= LARGE_ROWS as usize, "{pages} pages for {LARGE_ROWS} rows of 1 MiB");
    // A token scan meets the partition through the same replica reads; count(*) reads it in
    // internal pages.
    let (scanned, scan_pages) = page_through(&mut client, "SELECT ck, v FROM big");
    assert_eq!(scanned, want, "the token scan returns every row once, whole");
    assert_eq!(count(&mut client, &format!("SELECT count(*) FROM big WHERE pk = {pk}")), i64::from(LARGE_ROWS));
    eprintln!("{pages} pages through the partition, {scan_pages} through the token scan");
}

/// Partitions (keys from 0) whose replicas at RF `rf` are exactly the nodes `hosts`, the first `n`.
fn partitions_of(cluster: &TestCluster, hosts: &[String], rf: usize, n: usize) -> Vec<i32> {
    let vnodes = ring(cluster.addr(1));
    let mut want = hosts.to_vec();
    want.sort();
    (0..10_000)
        .filter(|pk| {
            let token = token_of(&serialize_partition_key(&[Value::Int(*pk)]));
            let mut replicas = replicas_of(&vnodes, token, rf);
            replicas.sort();
            replicas == want
        })
        .take(n)
        .collect()
}

#[test]
fn removenode_streams_large_rows_and_a_wide_partition_in_bounded_pieces() {
    let frame = FRAME.to_string();
    let flags = ["--max-frame-bytes", frame.as_str(), "--sync-mode", "periodic", "--ring-delay-ms", "1000"];
    let mut cluster = TestCluster::start_with("peer-stream-large-rows", 3, &flags);
    create_big(&cluster, 3, 2);
    // Two partitions held by nodes 2 and 3 only: once node 3 is removed, node 1 gets its copy
    // of them streamed from node 2 (SCAN pages from node 2, applied on node 1).
    let [large, wide] = partitions_of(&cluster, &[cluster.host_id(2), cluster.host_id(3)], 2, 2)[..] else {
        panic!("two partitions of nodes 2 and 3")
    };
    let mut client = connect(cluster.addr(2));
    write_large_rows(&mut client, large);
    let insert = client.prepare("INSERT INTO big (pk, ck, v) VALUES (?, ?, ?)").expect("prepare");
    for first in (0..WIDE_ROWS).step_by(1000) {
        let statements = (first..first + 1000)
            .map(|ck| {
                let values = vec![Some(Value::Int(wide)), Some(Value::Int(ck)), Some(Value::Blob(blob(ck, 8)))];
                BatchStatement::Prepared(insert.id, values)
            })
            .collect();
        let batch =
            BatchRequest { kind: BatchKind::Unlogged, statements, consistency: Consistency::All, timestamp: None };
        batch_ok(&mut client, batch);
    }

    let dead = cluster.addr(3);
    let dead_id = cluster.host_id(3);
    cluster.kill(3);
    await_until("node 1 sees node 3 down", || state_of(cluster.addr(1), dead).as_deref() == Some("DN"));
    let out = common::enigmadb()
        .args(["admin", "removenode", &dead_id, "--host", &cluster.addr(1).to_string()])
        .output()
        .expect("enigmadb admin removenode");
    assert!(out.status.success(), "admin removenode: {}", common::text(&out.stderr));
    let stats = netstats(cluster.addr(1));
    assert_eq!(stats["mode"], "NORMAL: removenode completed", "{stats}");
    let moved =
        |what: &str| -> u64 { stats["receiving"].as_array().unwrap().iter().map(|p| p[what].as_u64().unwrap()).sum() };
    assert_eq!(moved("rows"), (LARGE_ROWS + WIDE_ROWS) as u64, "{stats}");
    assert_eq!(moved("partitions"), 2, "a partition streamed in pieces counts once: {stats}");
    eprintln!("netstats after the removenode: {stats}");

    // Two nodes at RF 2: node 1 answers reads at ONE from its own copy (a replica reads in
    // place), which the stream brought whole.
    let mut client = reader(cluster.addr(1));
    let (seen, _) = page_through(&mut client, &format!("SELECT ck, v FROM big WHERE pk = {large}"));
    assert_eq!(seen, (0..LARGE_ROWS).map(|ck| (ck, MIB)).collect::<BTreeMap<_, _>>());
    let (seen, _) = page_through(&mut client, &format!("SELECT ck, v FROM big WHERE pk = {wide}"));
    assert_eq!(seen, (0..WIDE_ROWS).map(|ck| (ck, 8)).collect::<BTreeMap<_, _>>());
}

//! Cluster mode with real `enigmadb server` processes, each on its own loopback address:
//! replication at every consistency level, typed UNAVAILABLE answers when too few replicas
//! are up, failure detection down and up again, schema propagation, and a restarted node
//! keeping its tokens with every node agreeing on the ring.

mod common;

use common::cluster::{node_host, ring, RingVnode, TestCluster};
use common::{connect, query_at};
use wire::client::Client;
use wire::protocol::{ErrorCode, QueryParams, QueryResult};
use wire::{Consistency, Value};

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
    // The schema made on node 1 is usable on the others within seconds (the helper waits for
    // each node to answer a read of it, at most common::cluster::CONVERGE).
    let mut first = cluster.create_kv_table(3);

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

    // A traced ALL write and read through node 1 show the other replicas' answers.
    let traced = |client: &mut Client, text: &str| {
        let params = QueryParams { consistency: Consistency::All, trace: true, ..QueryParams::default() };
        match client.query_with(text, params) {
            Ok(QueryResult::Traced(t)) => t.events.into_iter().map(|e| e.activity).collect::<Vec<_>>().join("\n"),
            other => panic!("{text} with a trace asked: {other:?}"),
        }
    };
    let write_trace = traced(&mut first, "INSERT INTO kv (k, v) VALUES ('traced', 1)");
    let read_trace = traced(&mut first, "SELECT v FROM kv WHERE k = 'traced'");
    for i in 2..=3 {
        let peer = format!("{}:", node_host(i));
        assert!(write_trace.contains(&format!("Sending the mutation to {peer}")), "{write_trace}");
        assert!(write_trace.lines().any(|l| l.starts_with(&peer) && l.ends_with(" acknowledged")), "{write_trace}");
        assert!(read_trace.contains(&format!("Asking {peer}")), "{read_trace}");
    }
    assert!(write_trace.contains("Consistency level ALL met"), "{write_trace}");
    assert!(read_trace.contains("Resolved: 1 row(s)"), "{read_trace}");

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

    // Restarted, it is marked up again within seconds, keeps its tokens, and every node
    // prints the same ring (tokens, owners, shards), all up.
    // (The restarted node's client port is chosen anew: addresses are not compared.)
    let owners = |ring: Vec<RingVnode>| -> Vec<(i64, String, u64)> {
        ring.into_iter().map(|v| (v.token, v.host_id, v.shard)).collect()
    };
    let ring_before = ring(cluster.addr(1));
    assert_eq!(ring_before.len(), 3 * 8, "three one-shard nodes of 8 vnodes: {ring_before:?}");
    assert!(ring_before.windows(2).all(|w| w[0].token < w[1].token), "ring order: {ring_before:?}");
    let node3 = format!("{}:", node_host(3));
    let (down, up): (Vec<&RingVnode>, Vec<&RingVnode>) =
        ring_before.iter().partition(|v| v.address.starts_with(&node3));
    assert_eq!(down.len(), 8, "{ring_before:?}");
    assert!(down.iter().all(|v| v.state == "DN") && up.iter().all(|v| v.state == "UN"), "{ring_before:?}");
    let ring_before = owners(ring_before);
    cluster.restart(3);
    cluster.await_up(3);
    for i in 1..=3 {
        let now = ring(cluster.addr(i));
        assert!(now.iter().all(|v| v.state == "UN"), "node {i}'s ring after the restart: {now:?}");
        assert_eq!(owners(now), ring_before, "node {i}'s ring after the restart");
    }
    write(&mut first, "all", 1, Consistency::All).expect("ALL write with every node back");
    let mut third = connect(cluster.addr(3));
    assert_eq!(read(&mut third, "all", Consistency::All), Ok(Some(1)));

    // TRUNCATE through node 3 empties every node's copy: each node, a replica of every key,
    // reads its own copy at ONE.
    query_at(&mut third, "TRUNCATE kv", Consistency::One).expect("TRUNCATE with every node up");
    for i in 1..=3 {
        let mut client = connect(cluster.addr(i));
        for key in ["k5", "k79", "all"] {
            assert_eq!(read(&mut client, key, Consistency::One), Ok(None), "{key} on node {i} after TRUNCATE");
        }
    }
    write(&mut first, "k79", 79, Consistency::All).expect("ALL write after TRUNCATE");

    // Two of three down: QUORUM is unavailable, ONE still works.
    cluster.kill(2);
    cluster.kill(3);
    cluster.await_up(1);
    assert_unavailable(write(&mut first, "k1", 1, Consistency::Quorum), 2, 1);
    assert_unavailable(read(&mut first, "k1", Consistency::Quorum), 2, 1);
    write(&mut first, "one", 7, Consistency::One).expect("ONE write with one node up");
    assert_eq!(read(&mut first, "one", Consistency::One), Ok(Some(7)));
    assert_eq!(read(&mut first, "k79", Consistency::One), Ok(Some(79)));
    // TRUNCATE needs every node.
    assert_unavailable(query_at(&mut first, "TRUNCATE kv", Consistency::One).map_err(|e| e.code), 3, 1);
    assert_eq!(read(&mut first, "k79", Consistency::One), Ok(Some(79)), "a refused TRUNCATE removes nothing");
}

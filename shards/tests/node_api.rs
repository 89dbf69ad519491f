//! The embedded API as a program uses it: create a table, insert, update, delete cells, rows
//! and partitions, batch across shards, restart, and read back what a Cassandra user expects.

use std::time::Duration;

use futures_lite::future::block_on;
use shards::mutation::Write;
use shards::node::{Node, NodeConfig, NodeError};
use shards::shard::ShardError;
use wire::schema::{ClusteringColumn, ClusteringOrder, ColumnDef, TableOptions, TableSchema};
use wire::{ColumnType, Value};

fn events() -> TableSchema {
    TableSchema {
        id: 0,
        name: "events".into(),
        partition_key: vec![ColumnDef { name: "tenant".into(), ty: ColumnType::Text }],
        clustering: vec![ClusteringColumn {
            column: ColumnDef { name: "seq".into(), ty: ColumnType::Int },
            order: ClusteringOrder::Desc,
        }],
        columns: vec![
            ColumnDef { name: "body".into(), ty: ColumnType::Text },
            ColumnDef { name: "score".into(), ty: ColumnType::Double },
        ],
        options: TableOptions::default(),
    }
}

fn open(dir: &std::path::Path) -> Node {
    let mut config = NodeConfig::new(dir);
    config.shards = 2;
    Node::open(config).expect("open node").0
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

/// (seq, body, score) of every visible row of a tenant, in clustering order.
fn rows(node: &Node, tenant: &str) -> Vec<(i32, Option<Value>, Option<Value>)> {
    block_on(node.get("events", &[t(tenant)], &[]))
        .unwrap()
        .into_iter()
        .map(|r| {
            let Value::Int(seq) = r.clustering[0] else { panic!("int clustering") };
            (seq, r.columns[0].clone(), r.columns[1].clone())
        })
        .collect()
}

#[test]
fn writes_deletes_and_batches_read_back_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    block_on(node.create_table(events(), None)).unwrap();
    for seq in 1..=3 {
        let cols = [("body", Some(t(&format!("b{seq}")))), ("score", Some(Value::Double(seq as f64)))];
        block_on(node.insert("events", &[t("acme")], &[Value::Int(seq)], &cols, 0)).unwrap();
    }
    // DESC clustering: newest first.
    let seqs: Vec<i32> = rows(&node, "acme").iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![3, 2, 1]);

    // Delete one cell, then one row.
    block_on(node.delete("events", &[t("acme")], &[Value::Int(2)], &["score"])).unwrap();
    block_on(node.delete("events", &[t("acme")], &[Value::Int(1)], &[])).unwrap();
    assert_eq!(rows(&node, "acme"), vec![(3, Some(t("b3")), Some(Value::Double(3.0))), (2, Some(t("b2")), None)]);

    // A batch across many partitions (and so both shards), one timestamp for all.
    let schema = node.table("events").unwrap();
    let batch: Vec<Write> = (0..20)
        .map(|i| Write::upsert(&schema, &[t(&format!("p{i}"))], &[Value::Int(0)], &[("body", Some(t("x")))], 0, true))
        .collect::<Result<_, _>>()
        .unwrap();
    let ts = block_on(node.write(batch, None)).unwrap();
    assert!(ts > 0);
    let stats = block_on(node.stats()).unwrap();
    assert!(stats.iter().all(|s| s.memtable_partitions > 0), "partitions spread over both shards: {stats:?}");

    // A partition deletion hides everything written before it.
    block_on(node.delete("events", &[t("p3")], &[], &[])).unwrap();
    assert!(rows(&node, "p3").is_empty());

    block_on(node.shutdown()).unwrap();
    drop(node);
    let node = open(dir.path());
    assert_eq!(rows(&node, "acme"), vec![(3, Some(t("b3")), Some(Value::Double(3.0))), (2, Some(t("b2")), None)]);
    assert!(rows(&node, "p3").is_empty());
    assert_eq!(rows(&node, "p4"), vec![(0, Some(t("x")), None)]);
    // Written after restart, a row in p3 is visible again (newer than the deletion).
    block_on(node.insert("events", &[t("p3")], &[Value::Int(9)], &[], 0)).unwrap();
    assert_eq!(rows(&node, "p3"), vec![(9, None, None)], "an INSERT with no columns still makes the row exist");
    block_on(node.shutdown()).unwrap();
}

#[test]
fn client_timestamps_decide_last_write_wins_and_far_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    let schema = block_on(node.create_table(events(), None)).unwrap();
    let write =
        |body: &str| Write::upsert(&schema, &[t("k")], &[Value::Int(1)], &[("body", Some(t(body)))], 0, true).unwrap();
    let now = block_on(node.write(vec![write("first")], None)).unwrap();
    // An older client timestamp loses to the newer write, whatever the arrival order.
    block_on(node.write(vec![write("older")], Some(now - 1_000))).unwrap();
    assert_eq!(rows(&node, "k")[0].1, Some(t("first")));
    // Far in the future: refused with a typed error, nothing written.
    let err = block_on(node.write(vec![write("future")], Some(now + 3_600_000_000))).unwrap_err();
    assert!(matches!(err, NodeError::Shard { source: ShardError::Clock(_), .. }), "{err}");
    assert_eq!(rows(&node, "k")[0].1, Some(t("first")));
    block_on(node.shutdown()).unwrap();

    // After a restart the clock is past everything in the log: a new write wins.
    let node = open(dir.path());
    let later = block_on(node.write(vec![write("after restart")], None)).unwrap();
    assert!(later > now);
    assert_eq!(rows(&node, "k")[0].1, Some(t("after restart")));
    block_on(node.shutdown()).unwrap();
}

#[test]
fn ttl_cells_expire_and_unknown_tables_and_bad_values_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    block_on(node.create_table(events(), None)).unwrap();
    // Expiry is kept in whole seconds: a 2 s TTL is live for at least one second after the
    // write, and gone within three.
    let written = std::time::Instant::now();
    block_on(node.insert("events", &[t("ttl")], &[Value::Int(1)], &[("body", Some(t("brief")))], 2)).unwrap();
    assert_eq!(rows(&node, "ttl").len(), 1, "live right after the write");
    while !rows(&node, "ttl").is_empty() {
        assert!(written.elapsed() < Duration::from_secs(4), "still live after its 2 s TTL");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(written.elapsed() >= Duration::from_secs(1), "expired before its TTL: {:?}", written.elapsed());

    assert!(matches!(block_on(node.get("nope", &[t("x")], &[])), Err(NodeError::UnknownTable(_))));
    let wrong_type = block_on(node.insert("events", &[Value::Int(1)], &[Value::Int(1)], &[], 0));
    assert!(matches!(wrong_type, Err(NodeError::Write(_))), "{wrong_type:?}");
    let dup = block_on(node.create_table(events(), None));
    assert!(dup.is_err());
    block_on(node.shutdown()).unwrap();
}

#[test]
fn schemas_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    let created = block_on(node.create_table(events(), None)).unwrap();
    block_on(node.shutdown()).unwrap();
    let node = open(dir.path());
    assert_eq!(*node.table("EVENTS").unwrap(), *created);
    block_on(node.shutdown()).unwrap();
}

/// A service run on shard 0's executor (how the server's coordinator runs) reaches every
/// shard through the node handle: its own shard in place, the others over their channels.
#[test]
fn service_on_a_shard_executor_reads_and_writes_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.shards = 2;
    let (done_tx, done_rx) = flume::bounded(1);
    let service: shards::node::LocalService = Box::new(move |node: Node| {
        Box::pin(async move {
            let result: Result<Vec<(u16, usize)>, NodeError> = async {
                node.create_table(events(), None).await?;
                let mut seen = Vec::new();
                for i in 0..32 {
                    let tenant = format!("tenant-{i}");
                    let cols = [("body", Some(t("b"))), ("score", None)];
                    node.insert("events", &[t(&tenant)], &[Value::Int(1)], &cols, 0).await?;
                    let found = node.get("events", &[t(&tenant)], &[]).await?.len();
                    let key = shards::key::PartitionKey::from_values(&events(), &[t(&tenant)])?;
                    seen.push((node.shard_of(key.token()), found));
                }
                node.flush().await?;
                Ok(seen)
            }
            .await;
            let _ = done_tx.send(result.map_err(|e| e.to_string()));
        })
    });
    let (node, _) = Node::open_with_service(config, Some((0, service))).expect("open node");
    let seen = done_rx.recv_timeout(Duration::from_secs(60)).expect("the service finished").expect("no error");
    assert!(seen.iter().all(|(_, found)| *found == 1), "{seen:?}");
    assert!(seen.iter().any(|(s, _)| *s == 0) && seen.iter().any(|(s, _)| *s == 1), "keys on both shards: {seen:?}");
    for i in 0..32 {
        assert_eq!(rows(&node, &format!("tenant-{i}")).len(), 1);
    }
    block_on(node.shutdown()).unwrap();
}

/// Updates that arrive encoded (a peer's MUTATE) are logged as those bytes, not encoded again:
/// the MemTable gets `updates`, the WAL the bytes, so after a restart (replay, nothing flushed)
/// the node holds what the bytes say. Here the bytes carry one more row of the same partition
/// than the updates, which only a WAL written from the bytes brings back.
#[test]
fn updates_that_arrive_encoded_are_logged_as_those_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    block_on(node.create_table(events(), None)).unwrap();
    let schema = node.table("events").unwrap();
    let row = |seq: i32, body: &str| {
        Write::upsert(&schema, &[t("acme")], &[Value::Int(seq)], &[("body", Some(t(body)))], 0, true)
            .unwrap()
            .stamp(1_000, 0)
    };
    let mut encoded = Vec::new();
    shards::mutation::encode_batch(&[row(1, "one"), row(2, "two")], &mut encoded);
    block_on(node.apply_stamped_encoded(vec![row(1, "one")], encoded)).unwrap();
    assert_eq!(rows(&node, "acme"), vec![(1, Some(t("one")), None)], "the MemTable holds the updates");
    block_on(node.shutdown()).unwrap();
    drop(node);

    let node = open(dir.path());
    assert_eq!(
        rows(&node, "acme"),
        vec![(2, Some(t("two")), None), (1, Some(t("one")), None)],
        "replay applies the logged bytes"
    );
    block_on(node.shutdown()).unwrap();
}

//! A shard holding more than its MemTable budget: flushes to SSTables, restarts from its
//! manifest, and serves point reads and paged token-range scans that merge MemTables with
//! every SSTable.

mod common;

use std::collections::BTreeMap;

use common::kv;
use futures_lite::future::block_on;
use shards::manifest::SSTABLE_DIR;
use shards::node::{Node, NodeConfig};
use shards::read::{now_secs, visible_rows};
use wire::Value;

fn open(dir: &std::path::Path) -> Node {
    open_counting_replay(dir).0
}

/// Opens the node and returns how many WAL records its shards replayed.
fn open_counting_replay(dir: &std::path::Path) -> (Node, u64) {
    let mut config = NodeConfig::new(dir);
    config.shards = 2;
    config.shard.memtable_budget = 64 * 1024;
    config.shard.wal.segment_size = 64 * 1024;
    // This test counts the SSTables that flushes leave; compaction has its own tests.
    config.shard.compaction.strategy = shards::compaction::StrategyKind::None;
    let (node, report) = Node::open(config).expect("open node");
    (node, report.shard_reports.iter().map(|r| r.applied_records).sum())
}

fn put(node: &Node, k: &str, v: &str) {
    block_on(node.insert("kv", &[Value::Text(k.into())], &[], &[("v", Some(Value::Text(v.into())))], 0)).unwrap();
}

fn get(node: &Node, k: &str) -> Option<String> {
    let rows = block_on(node.get("kv", &[Value::Text(k.into())], &[])).unwrap();
    match rows.first().map(|r| r.columns[0].clone()) {
        Some(Some(Value::Text(v))) => Some(v),
        _ => None,
    }
}

/// Every visible (k, v), read through paged scans of `page` partitions.
fn scan_all(node: &Node, page: usize) -> BTreeMap<String, String> {
    let schema = node.table("kv").unwrap();
    let mut out = BTreeMap::new();
    let mut after = None;
    let mut last_token = i64::MIN;
    loop {
        let got = block_on(node.scan(schema.id, i64::MIN, i64::MAX, after.clone(), page)).unwrap();
        assert!(got.len() <= page);
        for (key, partition) in &got {
            assert!(key.token() >= last_token, "scan pages come in token order");
            last_token = key.token();
            for row in visible_rows(&schema, key, partition, now_secs()).unwrap() {
                let (Value::Text(k), Some(Value::Text(v))) = (&row.partition_key[0], &row.columns[0]) else {
                    panic!("row shape")
                };
                out.insert(k.clone(), v.clone());
            }
        }
        match got.last() {
            Some((k, _)) if got.len() == page => after = Some(k.clone()),
            _ => break,
        }
    }
    out
}

#[test]
fn data_beyond_the_memtable_budget_is_flushed_merged_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    block_on(node.create_table(kv(), None)).unwrap();
    let mut model = BTreeMap::new();
    // ~3,000 rows of ~150 bytes: several times the 64 KiB budget of each shard.
    for i in 0..3000 {
        let (k, v) = (format!("k{i:05}"), format!("v{i}-{}", "x".repeat(100)));
        put(&node, &k, &v);
        model.insert(k, v);
    }
    // Overwrites and deletes land in the MemTable while older versions sit in SSTables.
    for i in (0..3000).step_by(7) {
        let (k, v) = (format!("k{i:05}"), format!("new{i}"));
        put(&node, &k, &v);
        model.insert(k, v);
    }
    for i in (0..3000).step_by(11) {
        let k = format!("k{i:05}");
        block_on(node.delete("kv", &[Value::Text(k.clone())], &[], &[])).unwrap();
        model.remove(&k);
    }
    let stats = block_on(node.stats()).unwrap();
    let flushes: u64 = stats.iter().map(|s| s.flushes).sum();
    let sstables: usize = stats.iter().map(|s| s.sstables).sum();
    assert!(flushes >= 4 && sstables >= 4, "{stats:?}");
    for s in &stats {
        // One table here: its per-table line is the shard's whole SSTable set.
        let kv = node.table("kv").unwrap().id;
        let per_table: Vec<_> = s.table_sstables.iter().map(|t| (t.table, t.sstables, t.bytes)).collect();
        let expected = if s.sstables > 0 { vec![(kv, s.sstables, s.sstable_bytes)] } else { Vec::new() };
        assert_eq!(per_table, expected, "{s:?}");
    }
    assert!(stats.iter().all(|s| s.memtable_bytes < 3 * 64 * 1024), "MemTables stay near their budget: {stats:?}");
    assert!(stats.iter().map(|s| s.wal.segments_deleted).sum::<u64>() > 0, "flushed WAL segments are deleted");
    for (k, v) in model.iter().step_by(13) {
        assert_eq!(get(&node, k).as_ref(), Some(v), "{k}");
    }
    assert_eq!(get(&node, "k00011"), None, "deleted");
    assert_eq!(scan_all(&node, 97), model);
    block_on(node.shutdown()).unwrap();

    // Restart: SSTables come back from the manifest, only the unflushed WAL tail is replayed.
    let (node, replayed) = open_counting_replay(dir.path());
    assert!(replayed > 0 && replayed < 1500, "replayed {replayed} of ~3,700 logged writes");
    assert_eq!(scan_all(&node, 500), model);
    for (k, v) in model.iter().step_by(17) {
        assert_eq!(get(&node, k).as_ref(), Some(v), "{k}");
    }
    // A manual flush empties the MemTables into SSTables.
    block_on(node.flush()).unwrap();
    let stats = block_on(node.stats()).unwrap();
    assert!(stats.iter().all(|s| s.memtable_partitions == 0 && s.immutable_memtables == 0), "{stats:?}");
    assert_eq!(scan_all(&node, 1000), model);
    block_on(node.shutdown()).unwrap();

    // After a full flush nothing is left to replay, and every file on disk is in a manifest.
    let (node, replayed) = open_counting_replay(dir.path());
    assert_eq!(replayed, 0);
    assert_eq!(scan_all(&node, 1000), model);
    block_on(node.shutdown()).unwrap();
    for shard in ["shard-000", "shard-001"] {
        common::assert_sstables_match_manifest(&dir.path().join(shard));
    }
}

#[test]
fn files_the_manifest_does_not_name_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    block_on(node.create_table(kv(), None)).unwrap();
    put(&node, "a", "1");
    block_on(node.flush()).unwrap();
    block_on(node.shutdown()).unwrap();
    let leftover = dir.path().join("shard-000").join(SSTABLE_DIR).join("t0000000001-g00000000000000000999.sst");
    std::fs::write(&leftover, vec![0u8; 8192]).unwrap();
    let node = open(dir.path());
    assert!(!leftover.exists(), "a crash leftover is removed");
    assert_eq!(get(&node, "a").as_deref(), Some("1"));
    block_on(node.shutdown()).unwrap();
}

//! Background size-tiered compaction on a node under a stream of small flushes: the SSTable
//! count stays bounded, every row (overwrites and deletes included) reads the same during and
//! after compactions and across a restart, no replaced file is left behind, and a manual major
//! compaction leaves one SSTable per shard.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::kv;
use futures_lite::future::block_on;
use rand::{Rng, SeedableRng};
use shards::node::{Node, NodeConfig};
use shards::read::{now_secs, visible_rows};
use shards::shard::ShardStats;
use wire::Value;

const SHARDS: usize = 2;

fn open(dir: &std::path::Path) -> Node {
    let mut config = NodeConfig::new(dir);
    config.shards = SHARDS;
    config.shard.memtable_budget = 32 * 1024;
    // Cassandra's defaults otherwise: every file is below min_sstable_size, so they all share
    // one bucket and every 4 flushes make a compaction.
    Node::open(config).expect("open node").0
}

fn value_of(node: &Node, k: &str) -> Option<String> {
    let rows = block_on(node.get("kv", &[Value::Text(k.into())], &[])).expect("read");
    rows.first().and_then(|r| match &r.columns[0] {
        Some(Value::Text(v)) => Some(v.clone()),
        _ => None,
    })
}

/// Every visible (k, v) through a paged scan.
fn dump(node: &Node) -> BTreeMap<String, String> {
    let schema = node.table("kv").unwrap();
    let (mut out, mut after) = (BTreeMap::new(), None);
    loop {
        let page = block_on(node.scan(schema.id, i64::MIN, i64::MAX, after.clone(), 500)).expect("scan");
        let Some((last, _)) = page.last() else { return out };
        after = Some(last.clone());
        for (key, partition) in &page {
            for row in visible_rows(&schema, key, partition, now_secs()).unwrap() {
                if let (Value::Text(k), Some(Value::Text(v))) = (&row.partition_key[0], &row.columns[0]) {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// Waits until no shard runs or wants a compaction.
fn settle(node: &Node) -> Vec<ShardStats> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = block_on(node.stats()).unwrap();
        if stats.iter().all(|s| s.compaction.pending == 0 && !s.compaction.running) {
            return stats;
        }
        assert!(Instant::now() < deadline, "compactions did not settle: {stats:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every shard's SSTable files are the ones its manifest names (replaced files are deleted a
/// moment after a compaction is published, once no read holds them: wait up to 10 s for that).
fn assert_files_match_manifests(dir: &std::path::Path) {
    for shard in 0..SHARDS {
        common::await_sstables_match_manifest(&dir.join(format!("shard-{shard:03}")), Duration::from_secs(10));
    }
}

#[test]
fn background_compaction_bounds_sstables_and_keeps_every_row() {
    let seed: u64 = std::env::var("ENIGMADB_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("ENIGMADB_TEST_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    block_on(node.create_table(kv(), None)).unwrap();
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..6000u32 {
        let k = format!("k{:05}", rng.gen_range(0..2500));
        if rng.gen_ratio(1, 10) {
            block_on(node.delete("kv", &[Value::Text(k.clone())], &[], &[])).unwrap();
            model.remove(&k);
        } else {
            let v = format!("v{i}-{}", "x".repeat(80));
            let columns = [("v", Some(Value::Text(v.clone())))];
            block_on(node.insert("kv", &[Value::Text(k.clone())], &[], &columns, 0)).unwrap();
            model.insert(k, v);
        }
        // Reads run while flushes and compactions replace SSTables underneath them.
        if i % 50 == 0 {
            let probe = format!("k{:05}", rng.gen_range(0..2500));
            assert_eq!(value_of(&node, &probe), model.get(&probe).cloned(), "{probe} (seed {seed})");
        }
    }
    let stats = settle(&node);
    let flushes: u64 = stats.iter().map(|s| s.flushes).sum();
    let compactions: u64 = stats.iter().map(|s| s.compaction.completed).sum();
    assert!(flushes >= 20 && compactions >= 4, "{stats:?}");
    for s in &stats {
        assert!(s.sstables < 4, "settled size-tiered leaves fewer than min_threshold files: {s:?}");
        assert!(s.compaction.bytes_written > 0 && s.compaction.sstables_in > s.compaction.sstables_out, "{s:?}");
        assert_eq!(s.compaction.last_error, None);
    }
    assert_eq!(dump(&node), model, "seed {seed}");
    assert_files_match_manifests(dir.path());
    block_on(node.shutdown()).unwrap();

    let node = open(dir.path());
    assert_eq!(dump(&node), model, "after restart, seed {seed}");
    let reports = block_on(node.compact(None)).unwrap();
    assert_eq!(reports.len(), SHARDS);
    let stats = block_on(node.stats()).unwrap();
    assert!(stats.iter().all(|s| s.sstables == 1 && s.memtable_partitions == 0), "{stats:?} {reports:?}");
    assert_eq!(dump(&node), model, "after major compaction, seed {seed}");
    for (k, v) in model.iter().step_by(37) {
        assert_eq!(value_of(&node, k).as_ref(), Some(v));
    }
    block_on(node.shutdown()).unwrap();
    assert_files_match_manifests(dir.path());
}

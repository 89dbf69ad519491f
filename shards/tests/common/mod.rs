//! Helpers shared by the storage engine's integration tests: the small `kv` table, a small
//! two-shard node that flushes often with text rows put and read by key, and the check that a
//! shard directory holds exactly the SSTables its manifest names.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use futures_lite::future::block_on;
use shards::manifest::{Manifest, SSTABLE_DIR};
use shards::node::{Node, NodeConfig};
use wire::schema::{ColumnDef, TableOptions, TableSchema};
use wire::{ColumnType, Value};

/// `kv (k text PRIMARY KEY, v text)`.
pub fn kv() -> TableSchema {
    TableSchema {
        id: 0,
        name: "kv".into(),
        partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Text }],
        clustering: vec![],
        columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Text }],
        options: TableOptions::default(),
    }
}

/// The `kv` table's columns under another name.
pub fn kv_named(name: &str) -> TableSchema {
    TableSchema { name: name.into(), ..kv() }
}

/// Shards of the node [`open_small`] opens.
pub const SMALL_NODE_SHARDS: usize = 2;

/// A node of [`SMALL_NODE_SHARDS`] shards with 32 KiB MemTables, so a few hundred rows flush.
pub fn open_small(dir: &Path) -> Node {
    let mut config = NodeConfig::new(dir);
    config.shards = SMALL_NODE_SHARDS;
    config.shard.memtable_budget = 32 * 1024;
    Node::open(config).expect("open node").0
}

pub fn put(node: &Node, table: &str, k: &str, v: &str) {
    let columns = [("v", Some(Value::Text(v.into())))];
    block_on(node.insert(table, &[Value::Text(k.into())], &[], &columns, 0)).expect("insert");
}

pub fn get(node: &Node, table: &str, k: &str) -> Option<String> {
    let rows = block_on(node.get(table, &[Value::Text(k.into())], &[])).expect("read");
    rows.first().and_then(|r| match &r.columns[0] {
        Some(Value::Text(v)) => Some(v.clone()),
        _ => None,
    })
}

/// Rows 0..n of `table`, enough for several flushes; the last ones stay in the MemTable.
pub fn fill(node: &Node, table: &str, tag: &str, n: usize) {
    for i in 0..n {
        put(node, table, &format!("k{i:04}"), &format!("{tag}-{i}-{}", "x".repeat(60)));
    }
}

/// How many of the rows [`fill`] writes are readable.
pub fn count(node: &Node, table: &str, n: usize) -> usize {
    (0..n).filter(|i| get(node, table, &format!("k{i:04}")).is_some()).count()
}

/// SSTables of `table` in a [`open_small`] node directory, checking on the way that each
/// shard's files are exactly the ones its manifest names (on a running node, once a flush or
/// compaction in flight has published its file or removed the ones it replaced).
pub fn sstables_of(dir: &Path, table: u32) -> usize {
    (0..SMALL_NODE_SHARDS)
        .map(|s| await_sstables_match_manifest(&dir.join(format!("shard-{s:03}")), Duration::from_secs(10)))
        .map(|m| m.sstables.iter().filter(|s| s.table == table).count())
        .sum()
}

/// Asserts that the SSTable files in `shard_dir` are exactly the ones its manifest lists (no
/// leftover, none missing) and returns the manifest.
pub fn assert_sstables_match_manifest(shard_dir: &Path) -> Manifest {
    let (manifest, listed, on_disk) = sstables_and_manifest(shard_dir);
    assert_eq!(listed, on_disk, "{}: files on disk vs manifest", shard_dir.display());
    manifest
}

/// On a running node, files a compaction replaced are deleted once no read holds them, a
/// moment after the compaction is published: waits (up to `patience`) for that, then asserts
/// as [`assert_sstables_match_manifest`] does.
pub fn await_sstables_match_manifest(shard_dir: &Path, patience: Duration) -> Manifest {
    let deadline = Instant::now() + patience;
    loop {
        let (_, listed, on_disk) = sstables_and_manifest(shard_dir);
        if listed == on_disk || Instant::now() >= deadline {
            return assert_sstables_match_manifest(shard_dir);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The manifest, the SSTable file names it lists and those on disk, both sorted.
fn sstables_and_manifest(shard_dir: &Path) -> (Manifest, Vec<String>, Vec<String>) {
    let manifest = Manifest::load(shard_dir).unwrap();
    let mut listed: Vec<String> = manifest.sstables.iter().map(|s| s.file_name()).collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(shard_dir.join(SSTABLE_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    on_disk.sort();
    (manifest, listed, on_disk)
}

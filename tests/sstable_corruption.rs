//! Damaged SSTables: a corrupt data block fails only the reads that touch it (typed error
//! naming the file) while the shard keeps serving everything else; a corrupt footer, index,
//! bloom filter or metadata stops the node from starting with an error naming the file, unless
//! the operator asks to quarantine the file.

mod common;

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use shards::node::{Node, NodeConfig, NodeError};
use wire::Value;

const ROWS: u64 = 2000;

/// A one-shard node whose `demo` rows sit in several SSTables (32 KiB MemTable budget).
fn node_with_sstables(name: &str) -> (PathBuf, Vec<PathBuf>) {
    let dir = common::scratch_dir(name);
    // No compaction while writing: the test needs the rows spread over several files.
    let args = ["--shards", "1", "--memtable-budget", "32KiB", "--compaction-strategy", "none", "demo", "--rows"];
    let out = common::embedded(&dir, &[&args[..], &[&ROWS.to_string()]].concat());
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let mut ssts: Vec<PathBuf> =
        std::fs::read_dir(dir.join("shard-000").join("sstables")).unwrap().map(|e| e.unwrap().path()).collect();
    ssts.sort();
    assert!(ssts.len() >= 3, "expected several SSTables, got {ssts:?}");
    (dir, ssts)
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x5A;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupt_data_block_fails_only_the_reads_that_touch_it() {
    let (dir, ssts) = node_with_sstables("sst-block");
    flip(&ssts[0], 100); // inside the first data block
    let mut config = NodeConfig::new(&dir);
    config.shards = 1;
    let (node, _) = Node::open(config).expect("data blocks are not read at open");
    let (mut ok, mut failed) = (0, 0);
    for n in 0..ROWS {
        match block_on(node.get("demo", &[Value::Text(format!("k{n:012}"))], &[])) {
            Ok(_) => ok += 1,
            Err(NodeError::Shard { source, .. }) => {
                let message = source.to_string();
                assert!(message.contains(&*ssts[0].to_string_lossy()), "{message}");
                assert!(message.contains("data block"), "{message}");
                failed += 1;
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(failed > 0 && ok > failed, "{failed} reads failed, {ok} succeeded");
    // The shard is still up and takes writes.
    block_on(node.insert("demo", &[Value::Text("after".into())], &[], &[("value", Some(Value::Text("x".into())))], 0))
        .unwrap();
    block_on(node.shutdown()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn corrupt_metadata_sections_stop_the_start_unless_quarantine_is_asked_for() {
    let (dir, ssts) = node_with_sstables("sst-footer");
    let len = std::fs::metadata(&ssts[1]).unwrap().len() as usize;
    flip(&ssts[1], len - 10); // inside the footer
    let out = common::embedded(&dir, &["info"]);
    let stderr = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&*ssts[1].to_string_lossy()) && stderr.contains("footer"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = common::embedded(&dir, &["--quarantine-corrupt-sstables", "info"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let name = ssts[1].file_name().unwrap();
    assert!(dir.join("shard-000").join("quarantine").join(name).exists(), "moved, not deleted");
    assert!(!ssts[1].exists());
    // The other SSTables and the WAL tail still serve their rows.
    let rows = common::dump_key_value_table(&dir, 1, "demo");
    assert!(rows.len() > ROWS as usize / 3 && rows.len() < ROWS as usize, "{} rows left", rows.len());
    std::fs::remove_dir_all(&dir).ok();
}

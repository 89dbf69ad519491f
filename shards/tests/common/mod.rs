//! Helpers shared by the storage engine's integration tests: the small `kv` table and the
//! check that a shard directory holds exactly the SSTables its manifest names.

#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use shards::manifest::{Manifest, SSTABLE_DIR};
use wire::schema::{ColumnDef, TableOptions, TableSchema};
use wire::ColumnType;

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

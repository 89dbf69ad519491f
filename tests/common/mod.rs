//! Helpers shared by the multi-process tests: the `enigmadb` binary, scratch directories, and
//! reading a node directory back in-process.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shards::node::{Node, NodeConfig};
use shards::read::{now_secs, visible_rows};
use wire::Value;

pub fn enigmadb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_enigmadb"))
}

/// Runs `enigmadb embedded --data-dir DIR ARGS...` to completion.
pub fn embedded(dir: &Path, args: &[&str]) -> Output {
    enigmadb().arg("embedded").arg("--data-dir").arg(dir).args(args).output().expect("running enigmadb")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory under the target dir (kept on failure for inspection, removed on success
/// by the caller).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating scratch dir");
    dir
}

/// Every visible (key, value) of a two-column text table, read by opening the node directory
/// in this process (which replays the WAL, as a restarted server would). Empty when the table
/// does not exist (a writer killed before it created it).
pub fn dump_key_value_table(dir: &Path, shards: usize, table: &str) -> HashMap<String, String> {
    let mut config = NodeConfig::new(dir);
    config.shards = shards;
    let (node, _) = Node::open(config).expect("reopening the node directory");
    let mut out = HashMap::new();
    let Ok(schema) = node.table(table) else {
        futures_lite::future::block_on(node.shutdown()).expect("clean shutdown");
        return out;
    };
    let mut after = None;
    loop {
        let page = futures_lite::future::block_on(node.scan(schema.id, i64::MIN, i64::MAX, after.clone(), 1000))
            .expect("scanning the table");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, partition) in page {
            for row in visible_rows(&schema, &key, &partition, now_secs()).expect("decodable rows") {
                let (Value::Text(k), Some(Value::Text(v))) = (&row.partition_key[0], &row.columns[0]) else {
                    panic!("unexpected row shape {row:?}");
                };
                out.insert(k.clone(), v.clone());
            }
        }
    }
    futures_lite::future::block_on(node.shutdown()).expect("clean shutdown");
    out
}

/// Every SSTable file of every shard is named by that shard's manifest (the node was opened
/// and closed since the last crash, which removes leftovers).
pub fn assert_no_leftover_files(dir: &Path, shards: usize) {
    for shard in 0..shards {
        let shard_dir = dir.join(format!("shard-{shard:03}"));
        let manifest = shards::manifest::Manifest::load(&shard_dir).expect("manifest");
        let mut listed: Vec<String> = manifest.sstables.iter().map(|s| s.file_name()).collect();
        let mut on_disk: Vec<String> = match std::fs::read_dir(shard_dir.join(shards::manifest::SSTABLE_DIR)) {
            Ok(entries) => entries.map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        listed.sort();
        on_disk.sort();
        assert_eq!(listed, on_disk, "shard {shard}: files on disk vs manifest");
    }
}

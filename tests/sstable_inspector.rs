//! `enigmadb sstable dump|meta|check` on real SSTables written by a node: values, TTLs and
//! tombstones as written, metadata and footer, a clean check; and on damaged copies (a changed
//! byte in each section, truncations): a clear error naming the file and section and exit code 1
//! from every command, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use futures_lite::future::block_on;
use serde_json::Value as Json;
use shards::node::{Node, NodeConfig};
use wire::schema::{ClusteringColumn, ClusteringOrder, ColumnDef, TableOptions, TableSchema};
use wire::{ColumnType, Value};

const TTL: u32 = 3600;

/// A one-shard node whose table `inspect (id text, seq int, v text, n bigint, PRIMARY KEY (id,
/// seq))` was flushed to one SSTable holding: live rows (alpha), a TTL cell (alpha, 2), a deleted
/// row (beta, 1), a deleted partition (gamma) and a deleted cell (delta, 1, n).
fn node_with_one_sstable(name: &str) -> (PathBuf, PathBuf) {
    let dir = common::scratch_dir(name);
    let mut config = NodeConfig::new(&dir);
    config.shards = 1;
    let (node, _) = Node::open(config).expect("open node");
    let schema = TableSchema {
        id: 0,
        name: "inspect".into(),
        partition_key: vec![ColumnDef { name: "id".into(), ty: ColumnType::Text }],
        clustering: vec![ClusteringColumn {
            column: ColumnDef { name: "seq".into(), ty: ColumnType::Int },
            order: ClusteringOrder::Asc,
        }],
        columns: vec![
            ColumnDef { name: "v".into(), ty: ColumnType::Text },
            ColumnDef { name: "n".into(), ty: ColumnType::BigInt },
        ],
        options: TableOptions::default(),
    };
    block_on(node.create_table(schema, None)).expect("create table");
    let insert = |id: &str, seq: i32, v: &str, n: i64, ttl: u32| {
        let columns = [("v", Some(Value::Text(v.into()))), ("n", Some(Value::BigInt(n)))];
        block_on(node.insert("inspect", &[Value::Text(id.into())], &[Value::Int(seq)], &columns, ttl)).expect("insert");
    };
    insert("alpha", 1, "one", 1, 0);
    insert("alpha", 2, "two", 2, TTL);
    insert("beta", 1, "gone", 3, 0);
    insert("gamma", 1, "gone too", 4, 0);
    insert("delta", 1, "kept", 5, 0);
    let delete = |id: &str, clustering: &[Value], columns: &[&str]| {
        block_on(node.delete("inspect", &[Value::Text(id.into())], clustering, columns)).expect("delete");
    };
    delete("beta", &[Value::Int(1)], &[]);
    delete("gamma", &[], &[]);
    delete("delta", &[Value::Int(1)], &["n"]);
    block_on(node.flush()).expect("flush");
    block_on(node.shutdown()).expect("shutdown");
    let ssts = sstables(&dir);
    assert_eq!(ssts.len(), 1, "{ssts:?}");
    (dir, ssts[0].clone())
}

fn sstables(dir: &Path) -> Vec<PathBuf> {
    let mut ssts: Vec<PathBuf> = std::fs::read_dir(dir.join("shard-000").join("sstables"))
        .expect("sstables dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    ssts.sort();
    ssts
}

fn sstable(args: &[&str], file: &Path) -> Output {
    common::enigmadb().arg("sstable").args(args).arg(file).output().expect("running enigmadb")
}

fn json_of(out: &Output) -> Json {
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", common::text(&out.stdout)))
}

/// The one row line of a text dump that starts with the partition `[key]`.
fn row_line<'a>(dump: &'a str, key: &str) -> &'a str {
    let prefix = format!("[{key}] Row[");
    let lines: Vec<&str> = dump.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "rows of {key} in:\n{dump}");
    lines[0]
}

#[test]
fn dump_shows_values_ttls_and_tombstones_as_text() {
    let (dir, sst) = node_with_one_sstable("inspect-text");
    let out = sstable(&["dump"], &sst);
    let dump = common::text(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let catalog = shards::catalog::Catalog::load(&dir).expect("catalog");
    let id = catalog.table("inspect").expect("the table is in the catalog").id;
    assert!(dump.contains(&format!("table {id} 'inspect' (schema from")), "{dump}");
    let alpha: Vec<&str> = dump.lines().filter(|l| l.starts_with("['alpha'] Row[")).collect();
    assert_eq!(alpha.len(), 2, "{dump}");
    assert!(alpha[0].contains(": 1 | [v='one' ts=") && alpha[0].contains("[n=1 ts="), "{}", alpha[0]);
    assert!(
        alpha[1].contains(": 2 | [v='two' ts=") && alpha[1].contains(&format!("ttl={TTL} expires_at=")),
        "{}",
        alpha[1]
    );
    // The row deletion shadows the cells written before it: only the tombstone is left.
    let beta = row_line(&dump, "'beta'");
    assert!(beta.contains("del=[ts=") && beta.contains("local_delete_time="), "{beta}");
    assert!(!beta.contains("gone"), "{beta}");
    let gamma = dump.lines().find(|l| l.starts_with("['gamma']@")).expect("gamma's partition line");
    assert!(gamma.contains("deletion=[ts="), "{gamma}");
    let delta = row_line(&dump, "'delta'");
    assert!(delta.contains("[v='kept' ts=") && delta.contains("[n=<tombstone> ts="), "{delta}");
    assert!(dump.trim_end().ends_with("tombstones"), "{dump}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn dump_json_is_one_document_with_the_rows_as_written() {
    let (dir, sst) = node_with_one_sstable("inspect-json");
    let doc = json_of(&sstable(&["dump", "--json"], &sst));
    assert_eq!(doc["table"]["name"], "inspect");
    let partitions = doc["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 4, "{doc:#}");
    let partition = |id: &str| {
        partitions.iter().find(|p| p["partition"]["key"][0] == id).unwrap_or_else(|| panic!("{id} in {doc:#}"))
    };
    let alpha = &partition("alpha")["rows"];
    assert_eq!(alpha[0]["clustering"][0], 1);
    assert_eq!(alpha[0]["cells"][0]["name"], "v");
    assert_eq!(alpha[0]["cells"][0]["value"], "one");
    assert_eq!(alpha[0]["cells"][1]["value"], 1);
    assert_eq!(alpha[1]["cells"][0]["value"], "two");
    assert_eq!(alpha[1]["cells"][0]["ttl"], TTL);
    assert!(alpha[1]["cells"][0]["expires_at"].as_u64().is_some());
    assert!(alpha[1]["liveness_info"]["ttl"] == TTL, "the row marker expires too: {alpha:#}");
    let beta = &partition("beta")["rows"][0];
    assert!(beta["deletion_info"]["marked_deleted"].as_i64().is_some(), "{beta:#}");
    assert_eq!(beta["cells"].as_array().map(Vec::len), Some(0), "{beta:#}");
    let gamma = partition("gamma");
    assert!(gamma["partition"]["deletion_info"]["local_delete_time"].as_u64().is_some(), "{gamma:#}");
    let delta = &partition("delta")["rows"][0]["cells"];
    assert_eq!(delta[0]["value"], "kept");
    assert_eq!(delta[1]["name"], "n");
    assert!(delta[1]["deletion_info"]["local_delete_time"].as_u64().is_some() && delta[1].get("value").is_none());
    assert_eq!(doc["summary"]["partitions"], 4);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn without_a_schema_keys_and_values_are_hex_and_the_output_says_so() {
    let (dir, sst) = node_with_one_sstable("inspect-noschema");
    let alone = common::scratch_dir("inspect-alone").join("t.sst");
    std::fs::copy(&sst, &alone).unwrap();
    let out = sstable(&["dump"], &alone);
    let dump = common::text(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(dump.contains("shown as hex"), "{dump}");
    // 'alpha' is 0x616c706861; the value 'one' is 0x6f6e65.
    assert!(dump.contains("[0x616c706861]") && dump.contains("[#0=0x6f6e65 ts="), "{dump}");
    // --data-dir points at the node's catalog again.
    let out = common::enigmadb().arg("sstable").arg("dump").arg(&alone).arg("--data-dir").arg(&dir).output().unwrap();
    assert!(common::text(&out.stdout).contains("[v='one' ts="), "{}", common::text(&out.stderr));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(alone.parent().unwrap()).ok();
}

#[test]
fn meta_prints_the_metadata_and_the_footer() {
    let (dir, sst) = node_with_one_sstable("inspect-meta");
    let size = std::fs::metadata(&sst).unwrap().len();
    let out = sstable(&["meta"], &sst);
    let text = common::text(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(text.contains("Format version: 1") && text.contains(&format!("file size: {size} bytes")), "{text}");
    assert!(text.contains("Counts: 4 partitions, 4 rows"), "{text}");
    assert!(text.contains(&format!("footer       offset {}, 64 bytes", size - 64)), "{text}");
    let meta = json_of(&sstable(&["meta", "--json"], &sst));
    assert_eq!(meta["partitions"], 4);
    assert_eq!(meta["rows"], 4);
    assert_eq!(meta["expiring_cells"], 3, "v, n and the marker of (alpha, 2): {meta:#}");
    // Cell tombstone, row deletion, partition deletion.
    assert_eq!(meta["tombstones"], 3, "{meta:#}");
    assert_eq!(meta["footer"]["offset"], size - 64);
    assert_eq!(meta["table"]["name"], "inspect");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_passes_every_sstable_of_a_node() {
    let dir = common::scratch_dir("inspect-demo");
    // No background compaction: every flush stays its own SSTable (how many remain otherwise
    // depends on how far compaction got before the process exited).
    let args =
        ["--shards", "1", "--memtable-budget", "32KiB", "--compaction-strategy", "none", "demo", "--rows", "2000"];
    let out = common::embedded(&dir, &args);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let ssts = sstables(&dir);
    assert!(ssts.len() >= 3, "{ssts:?}");
    let out = common::enigmadb().arg("sstable").arg("check").args(&ssts).output().unwrap();
    let text = common::text(&out.stdout);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(text.lines().filter(|l| l.contains(": OK: ")).count(), ssts.len(), "{text}");
    // Dump and metadata agree on every file.
    for sst in &ssts {
        let dump = json_of(&sstable(&["dump", "--json"], sst));
        let meta = json_of(&sstable(&["meta", "--json"], sst));
        assert_eq!(dump["summary"]["rows"], meta["rows"]);
        assert_eq!(dump["partitions"].as_array().map(|p| p.len() as u64), meta["partitions"].as_u64());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs every command on `file` and returns (command, exit code, stderr).
fn run_all(file: &Path) -> Vec<(&'static str, Option<i32>, String)> {
    ["check", "dump", "meta"]
        .into_iter()
        .map(|cmd| {
            let out = sstable(&[cmd], file);
            (cmd, out.status.code(), common::text(&out.stderr))
        })
        .collect()
}

/// A failed command: exit code 1 (101 would be a panic) and one clear line naming the file.
fn assert_clear_failure(cmd: &str, code: Option<i32>, stderr: &str, file: &Path, what: &str) {
    assert_eq!(code, Some(1), "{cmd} on {what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{cmd} on {what}: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains(&*file.to_string_lossy()), "{cmd} on {what}: {stderr}");
}

#[test]
fn a_changed_byte_in_any_section_is_reported_by_every_command_that_reads_it() {
    let (dir, sst) = node_with_one_sstable("inspect-flip");
    let meta = json_of(&sstable(&["meta", "--json"], &sst));
    let at = |section: &str, plus: u64| meta[section]["offset"].as_u64().expect("offset") + plus;
    let meta_end = at("metadata", 0) + meta["metadata"]["length"].as_u64().unwrap();
    assert!(meta_end + 1 < at("footer", 0), "zero padding between the metadata and the footer");
    let good = std::fs::read(&sst).unwrap();
    // (where, section named in the error, does `meta` read it)
    let cases = [
        (20, "data block", false),
        (at("index", 10), "index", true),
        (at("bloom", 14), "bloom", true),
        (at("metadata", 10), "metadata", true),
        (meta_end + 1, "padding", false),
        (at("footer", 30), "footer", true),
    ];
    let copy = dir.join("damaged.sst");
    for (offset, section, meta_reads_it) in cases {
        let mut bytes = good.clone();
        bytes[offset as usize] ^= 0x5A;
        std::fs::write(&copy, &bytes).unwrap();
        for (cmd, code, stderr) in run_all(&copy) {
            let what = format!("a byte changed at {offset} ({section})");
            if cmd == "meta" && !meta_reads_it {
                assert_eq!(code, Some(0), "meta does not read the {section}: {stderr}");
                continue;
            }
            assert_clear_failure(cmd, code, &stderr, &copy, &what);
            assert!(stderr.contains(section), "{cmd} on {what}: {stderr}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_truncated_file_is_reported_by_every_command() {
    let (dir, sst) = node_with_one_sstable("inspect-cut");
    let good = std::fs::read(&sst).unwrap();
    let len = good.len();
    let copy = dir.join("truncated.sst");
    let mut cuts = vec![0, 1, 100, 4095, 4096, len - 4096, len - 64, len - 1];
    cuts.retain(|c| *c < len);
    for cut in cuts {
        std::fs::write(&copy, &good[..cut]).unwrap();
        for (cmd, code, stderr) in run_all(&copy) {
            let what = format!("the file cut to {cut} of {len} bytes");
            assert_clear_failure(cmd, code, &stderr, &copy, &what);
            assert!(stderr.contains("footer"), "{cmd} on {what}: {stderr}");
        }
    }
    // A missing file is an I/O error, not a panic.
    for (cmd, code, stderr) in run_all(&dir.join("missing.sst")) {
        assert_clear_failure(cmd, code, &stderr, &dir.join("missing.sst"), "a missing file");
    }
    std::fs::remove_dir_all(&dir).ok();
}

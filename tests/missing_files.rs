//! An operator's slip or a disk fault removes a file a node needs, or its clock goes back
//! across a restart: a real `enigmadb server` must refuse to start with a message that names
//! what is missing (and the operator's way out), never come up having dropped acknowledged
//! rows; and a new write must win over every stored one whatever the wall clock says.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use wire::protocol::QueryResult;
use wire::Value;

/// Runs `enigmadb server` on `dir` with `shards` shards, expecting it to refuse to start:
/// returns its stderr.
fn refused_start(dir: &Path, shards: usize, extra: &[&str]) -> String {
    let (listen, shards) = (format!("{}:0", common::loopback_host()), shards.to_string());
    let args = [&["--shards", &shards, "--listen", &listen, "--peer-listen", &listen][..], extra].concat();
    common::refused_start(dir, &args)
}

fn create_table(addr: SocketAddr) {
    common::run_ok(addr, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
}

/// Writes `k{from}..k{to}` with values `v{n}` padded to `pad` bytes.
fn write_rows(addr: SocketAddr, range: std::ops::Range<u32>, pad: usize) {
    let mut client = common::connect(addr);
    let filler = "x".repeat(pad);
    for n in range {
        common::query_ok(&mut client, &format!("INSERT INTO kv (k, v) VALUES ('k{n}', 'v{n}{filler}')"));
    }
}

/// Every row written by [`write_rows`] over `range` reads back.
fn assert_rows(addr: SocketAddr, range: std::ops::Range<u32>, pad: usize) {
    let stored = common::key_values(addr, "kv");
    let filler = "x".repeat(pad);
    for n in range.clone() {
        assert_eq!(stored.get(&format!("k{n}")), Some(&format!("v{n}{filler}")), "row k{n}");
    }
    assert_eq!(stored.len(), range.len());
}

fn admin_flush(addr: SocketAddr) {
    let out = common::enigmadb().args(["admin", "--host", &addr.to_string(), "flush"]).output().expect("admin flush");
    assert!(out.status.success(), "{}", common::text(&out.stderr));
}

fn files_in(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == extension)).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn deleted_manifest_is_refused_naming_the_shard_and_rebuilt_on_request() {
    let dir = common::scratch_dir("missing-manifest");
    let server = common::Server::start(&dir, 2, &[]);
    create_table(server.addr);
    write_rows(server.addr, 0..300, 10);
    admin_flush(server.addr);
    write_rows(server.addr, 300..400, 10); // only in the WAL
    common::stop_cleanly(server);
    let shard = dir.join("shard-001");
    let sstables = files_in(&shard.join("sstables"), "sst");
    assert!(!sstables.is_empty(), "the flush wrote SSTables");
    std::fs::remove_file(shard.join("MANIFEST")).unwrap();

    let stderr = refused_start(&dir, 2, &[]);
    assert!(stderr.contains("shard 1") && stderr.contains("no MANIFEST"), "{stderr}");
    assert!(stderr.contains("--rebuild-missing-manifest"), "{stderr}");
    assert_eq!(files_in(&shard.join("sstables"), "sst"), sstables, "nothing was deleted");

    let server = common::Server::start(&dir, 2, &["--rebuild-missing-manifest"]);
    assert_rows(server.addr, 0..400, 10);
    common::stop_cleanly(server);
    // Rebuilt for good: the next start needs no flag.
    let server = common::Server::start(&dir, 2, &[]);
    assert_rows(server.addr, 0..400, 10);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn deleted_oldest_wal_segment_is_refused_naming_it() {
    let dir = common::scratch_dir("missing-oldest-segment");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.with_extension("toml");
    std::fs::write(&config, "wal_segment_bytes = \"64KiB\"\n").unwrap();
    let config_arg = config.to_str().unwrap();
    let server = common::Server::start(&dir, 1, &["--config", config_arg]);
    create_table(server.addr);
    write_rows(server.addr, 0..200, 1000);
    common::stop_cleanly(server);
    let segments = files_in(&dir.join("shard-000").join("wal"), "wal");
    assert!(segments.len() >= 3, "{segments:?}");
    std::fs::remove_file(&segments[0]).unwrap();

    let stderr = refused_start(&dir, 1, &["--config", config_arg]);
    assert!(stderr.contains(&*segments[1].to_string_lossy()), "{stderr}");
    assert!(stderr.contains("oldest segment(s) of the log are missing"), "{stderr}");

    // The operator accepts the loss: the rows of the other segments are there.
    let server = common::Server::start(&dir, 1, &["--config", config_arg, "--wal-truncate-corrupt"]);
    let kept = common::key_values(server.addr, "kv").len();
    assert!(kept > 0 && kept < 200, "{kept} rows kept");
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&config).ok();
}

#[test]
fn deleted_node_meta_or_shard_directory_is_refused() {
    let dir = common::scratch_dir("missing-identity");
    let server = common::Server::start(&dir, 2, &[]);
    create_table(server.addr);
    write_rows(server.addr, 0..200, 10);
    common::stop_cleanly(server);

    let meta = dir.join("node.meta");
    let saved = std::fs::read(&meta).unwrap();
    std::fs::remove_file(&meta).unwrap();
    let stderr = refused_start(&dir, 2, &[]);
    assert!(stderr.contains("no node.meta") && stderr.contains("new host id"), "{stderr}");
    std::fs::write(&meta, saved).unwrap();

    let shard = dir.join("shard-001");
    let moved = dir.join("shard-001.moved");
    std::fs::rename(&shard, &moved).unwrap();
    let stderr = refused_start(&dir, 2, &[]);
    assert!(stderr.contains(&*shard.to_string_lossy()) && stderr.contains("shard 1's rows"), "{stderr}");
    // Restored: everything is back.
    std::fs::rename(&moved, &shard).unwrap();
    let server = common::Server::start(&dir, 2, &[]);
    assert_rows(server.addr, 0..200, 10);
    common::stop_cleanly(server);
    // The operator's explicit choice: an empty directory starts that shard empty.
    std::fs::remove_dir_all(&shard).unwrap();
    std::fs::create_dir(&shard).unwrap();
    let server = common::Server::start(&dir, 2, &[]);
    let kept = common::key_values(server.addr, "kv").len();
    assert!(kept > 0 && kept < 200, "{kept} rows");
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

fn value_of(addr: SocketAddr, key: &str) -> Option<String> {
    match common::query(&mut common::connect(addr), &format!("SELECT v FROM kv WHERE k = '{key}'")) {
        Ok(QueryResult::Rows(rows)) => rows.rows.first().and_then(|row| match &row[0] {
            Some(Value::Text(v)) => Some(v.clone()),
            _ => None,
        }),
        other => panic!("SELECT {key}: {other:?}"),
    }
}

/// The node ran with its clock 60 s ahead, then restarts on the right time: overwrites of
/// rows held in SSTables and in the WAL must win over the stored values.
#[test]
fn a_clock_stepped_back_across_a_restart_lets_new_writes_win() {
    let dir = common::scratch_dir("clock-stepped-back");
    let server = common::Server::start(&dir, 2, &["--clock-offset-ms", "60000"]);
    create_table(server.addr);
    let keys: Vec<String> = (0..20).map(|n| format!("k{n}")).collect();
    let mut client = common::connect(server.addr);
    for key in &keys[..10] {
        common::query_ok(&mut client, &format!("INSERT INTO kv (k, v) VALUES ('{key}', 'old')"));
    }
    admin_flush(server.addr);
    for key in &keys[10..] {
        common::query_ok(&mut client, &format!("INSERT INTO kv (k, v) VALUES ('{key}', 'old')"));
    }
    drop(client);
    common::stop_cleanly(server);

    let server = common::Server::start(&dir, 2, &[]);
    let mut client = common::connect(server.addr);
    for key in &keys {
        common::query_ok(&mut client, &format!("UPDATE kv SET v = 'new' WHERE k = '{key}'"));
    }
    for key in &keys {
        assert_eq!(value_of(server.addr, key).as_deref(), Some("new"), "{key}: the acknowledged overwrite lost");
    }
    drop(client);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

//! `enigmadb admin` against a real `enigmadb server`: every command's text and `--json` output
//! checked against what the test wrote, typed errors for unknown tables, a failing exit status
//! when the node cannot be reached, and `drain` refusing writes until the node restarts.

mod common;

use std::net::SocketAddr;
use std::process::Output;

use common::Server;
use serde_json::Value as Json;
use wire::ErrorCode;

const SHARDS: usize = 2;
/// Vnode tokens per shard of a server started with the default configuration.
const TOKENS_PER_SHARD: usize = 8;

fn admin(addr: SocketAddr, args: &[&str]) -> Output {
    common::enigmadb().args(["admin", "--host", &addr.to_string()]).args(args).output().expect("running enigmadb admin")
}

/// The command's stdout; panics with its stderr if it failed.
fn admin_ok(addr: SocketAddr, args: &[&str]) -> String {
    let out = admin(addr, args);
    assert!(out.status.success(), "admin {args:?} failed: {}", common::text(&out.stderr));
    common::text(&out.stdout)
}

fn admin_json(addr: SocketAddr, args: &[&str]) -> Json {
    let mut args = args.to_vec();
    args.push("--json");
    let text = admin_ok(addr, &args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("admin {args:?} printed invalid JSON ({e}): {text}"))
}

/// The cells of the table row whose first cell is `first`, in a text table as the shell prints
/// them (` a | b | c`).
fn row_cells(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('|').map(|cell| cell.trim().to_owned()).collect::<Vec<_>>())
        .find(|cells| cells.len() > 1 && cells[0] == first)
        .unwrap_or_else(|| panic!("no row starting with {first} in:\n{text}"))
}

/// The value of `column` in the row starting with `first`.
fn cell(text: &str, first: &str, column: &str) -> String {
    let header = text
        .lines()
        .map(|line| line.split('|').map(|cell| cell.trim().to_owned()).collect::<Vec<_>>())
        .find(|cells| cells.iter().any(|c| c == column))
        .unwrap_or_else(|| panic!("no header with column {column} in:\n{text}"));
    let at = header.iter().position(|c| c == column).expect("found above");
    row_cells(text, first)[at].clone()
}

fn table_json<'a>(stats: &'a Json, table: &str) -> &'a Json {
    stats["tables"]
        .as_array()
        .expect("a table list")
        .iter()
        .find(|t| t["table"] == table)
        .unwrap_or_else(|| panic!("no table {table} in {stats}"))
}

fn insert_rows(addr: SocketAddr, table: &str, keys: std::ops::Range<u32>) {
    let mut client = common::connect(addr);
    for k in keys {
        common::query_ok(&mut client, &format!("INSERT INTO {table} (k, v) VALUES ('key{k}', 'value {k}')"));
    }
}

#[test]
fn status_and_info_describe_the_node_in_text_and_json() {
    let dir = common::scratch_dir("admin-status");
    let server = Server::start(&dir, SHARDS, &[]);
    let addr = server.addr.to_string();

    let text = admin_ok(server.addr, &["status"]);
    assert!(text.starts_with("Status=Up/Down\n"), "{text}");
    let row = row_cells(&text, "UN");
    assert_eq!(row[1], addr, "{text}");
    assert_eq!(row[3], (SHARDS * TOKENS_PER_SHARD).to_string(), "{text}");
    assert_eq!(row[4], "100.0%", "{text}");
    let host_id = row[5].clone();
    assert_eq!(host_id.len(), 36, "a UUID: {host_id}");

    let status = admin_json(server.addr, &["status"]);
    let nodes = status["nodes"].as_array().expect("a node list");
    assert_eq!(nodes.len(), 1, "{status}");
    assert_eq!(nodes[0]["state"], "UN");
    assert_eq!(nodes[0]["address"], addr.as_str());
    assert_eq!(nodes[0]["tokens"], SHARDS * TOKENS_PER_SHARD);
    assert_eq!(nodes[0]["host_id"], host_id.as_str());
    assert_eq!(nodes[0]["load_bytes"], 0, "nothing flushed yet");

    let text = admin_ok(server.addr, &["info"]);
    assert!(text.contains(&format!("ID                  : {host_id}")), "{text}");
    assert!(text.contains(&format!("Shards              : {SHARDS}")), "{text}");
    assert!(text.contains("Drained             : false"), "{text}");
    for shard in 0..SHARDS {
        row_cells(&text, &shard.to_string());
    }
    let info = admin_json(server.addr, &["info"]);
    assert_eq!(info["host_id"], host_id.as_str());
    assert_eq!(info["drained"], false);
    let shards = info["shards"].as_array().expect("a shard list");
    assert_eq!(shards.iter().map(|s| s["shard"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1]);
    assert!(info["uptime_ms"].as_u64().is_some(), "{info}");
    // Nothing was flushed yet.
    assert!(shards.iter().all(|s| s["sstables"] == 0), "{info}");
    // The memory budgets the test set, and that they were set.
    let budget = common::TEST_BUDGET_BYTES;
    assert_eq!(info["memory"]["memtable_budget"], budget, "{info}");
    assert_eq!(info["memory"]["cache_budget"], budget, "{info}");
    assert!(info["memory"]["why"].as_str().unwrap().contains("cache_budget setting"), "{info}");

    // The same host id after a restart: it is the data directory's identity. The cache left
    // at auto is sized from the machine's memory, and info says so.
    common::stop_cleanly(server);
    let server = Server::start(&dir, SHARDS, &["--cache-budget", "auto"]);
    assert_eq!(admin_json(server.addr, &["status"])["nodes"][0]["host_id"], host_id.as_str());
    let memory = admin_json(server.addr, &["info"])["memory"].clone();
    assert!(
        memory["why"].as_str().unwrap().contains("block cache") && memory["why"].as_str().unwrap().contains("auto")
    );
    assert!(memory["cache_budget"].as_u64().unwrap() >= 8 << 20, "{memory}");
    assert!(admin_ok(server.addr, &["info"]).contains("Memory sizing       : per shard"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tablestats_flush_and_compact_report_what_was_written() {
    const ROWS: u32 = 200;
    let dir = common::scratch_dir("admin-tablestats");
    let server = Server::start(&dir, SHARDS, &[]);
    common::run_ok(server.addr, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
    common::run_ok(server.addr, "CREATE TABLE other (k text PRIMARY KEY, v text)");
    insert_rows(server.addr, "kv", 0..ROWS);

    let before = admin_json(server.addr, &["tablestats"]);
    let kv = table_json(&before, "kv");
    assert_eq!(kv["sstables"], 0, "{before}");
    assert_eq!(kv["writes"], ROWS, "one partition update per INSERT: {before}");
    assert_eq!(kv["memtable_partitions"], ROWS, "{before}");
    assert!(kv["memtable_bytes"].as_u64().unwrap() > 0, "{before}");
    assert_eq!(table_json(&before, "other")["writes"], 0, "{before}");
    let names: Vec<&str> = before["tables"].as_array().unwrap().iter().map(|t| t["table"].as_str().unwrap()).collect();
    assert_eq!(names, ["kv", "other"], "the node's own tables are hidden");

    let text = admin_ok(server.addr, &["flush"]);
    assert!(text.starts_with("Flushed ") && text.contains(&format!("on {SHARDS} shards")), "{text}");
    let text = admin_ok(server.addr, &["tablestats", "kv"]);
    let sstables: u32 = cell(&text, "kv", "SSTables").parse().expect("a count");
    assert!(sstables >= 1, "{text}");
    assert_ne!(cell(&text, "kv", "Space used"), "0 B", "{text}");
    assert_eq!(cell(&text, "kv", "MemTable"), "0 B", "{text}");
    assert!(!text.contains("other"), "only the table asked for: {text}");

    // A second flush adds SSTables; a major compaction merges them back to one per shard.
    insert_rows(server.addr, "kv", ROWS..2 * ROWS);
    let flushed = admin_json(server.addr, &["flush", "kv"]);
    assert_eq!(flushed["command"], "flush");
    assert!(flushed["memtable_bytes"].as_u64().unwrap() > 0, "{flushed}");
    let kv = admin_json(server.addr, &["tablestats", "kv"]);
    let before_compaction = table_json(&kv, "kv")["sstables"].as_u64().unwrap();
    assert!(before_compaction > sstables as u64, "{kv}");
    // Table other gets two SSTables per shard too (two flushes; kv has nothing new to flush).
    for round in 0..2 {
        insert_rows(server.addr, "other", round * ROWS..(round + 1) * ROWS);
        admin_ok(server.addr, &["flush"]);
    }
    let other_sstables = |addr| table_json(&admin_json(addr, &["tablestats", "other"]), "other")["sstables"].clone();
    assert_eq!(other_sstables(server.addr), 2 * SHARDS, "two flushes of other");

    // `compact kv` merges each shard's two or more SSTables of kv, and leaves other alone.
    let compacted = admin_json(server.addr, &["compact", "kv"]);
    assert_eq!(compacted["command"], "compact");
    assert_eq!(compacted["sstables_in"], before_compaction, "{compacted}");
    assert_eq!(compacted["compactions"], SHARDS, "{compacted}");
    let after = admin_json(server.addr, &["tablestats", "kv"]);
    let kv = table_json(&after, "kv");
    assert!(kv["sstables"].as_u64().unwrap() <= SHARDS as u64, "{after}");
    assert_eq!(kv["sstables"], compacted["sstables_out"], "{after} {compacted}");
    assert!(kv["space_used_bytes"].as_u64().unwrap() > 0, "{after}");
    assert_eq!(other_sstables(server.addr), 2 * SHARDS, "compact kv left other alone");
    // `compact` with no table merges every table: other's turn (kv has one per shard already).
    let everything = admin_json(server.addr, &["compact"]);
    assert_eq!(everything["sstables_in"], 2 * SHARDS, "{everything}");
    assert_eq!(other_sstables(server.addr), SHARDS, "compact merged other");

    // Reads are counted per table: point reads of keys that exist, and a range scan.
    let mut client = common::connect(server.addr);
    for k in 0..10 {
        let (_, rows, _) = common::select_all(&mut client, &format!("SELECT v FROM kv WHERE k = 'key{k}'"), 100);
        assert_eq!(rows.len(), 1);
    }
    assert_eq!(common::key_values(server.addr, "kv").len(), 2 * ROWS as usize);
    let read = admin_json(server.addr, &["tablestats", "kv"]);
    let kv = table_json(&read, "kv");
    assert_eq!(kv["reads"], 10, "{read}");
    assert!(kv["range_scans"].as_u64().unwrap() >= SHARDS as u64, "each shard scanned: {read}");
    assert!(kv["bloom_positives"].as_u64().unwrap() >= 10, "{read}");
    assert_eq!(kv["tombstones_scanned"], 0, "nothing was deleted: {read}");
    // Latency percentiles: present once something was measured, p50 <= p99, sane magnitudes.
    for op in ["read", "write"] {
        let p50 = kv[format!("{op}_latency_p50_ms")].as_f64().unwrap_or_else(|| panic!("{op} p50: {read}"));
        let p99 = kv[format!("{op}_latency_p99_ms")].as_f64().unwrap_or_else(|| panic!("{op} p99: {read}"));
        assert!(p50 > 0.0 && p50 <= p99 && p99 < 10_000.0, "{op}: {read}");
    }
    let every = admin_json(server.addr, &["tablestats"]);
    let other = table_json(&every, "other");
    assert_eq!(other["read_latency_p50_ms"], Json::Null, "no reads of other: {every}");

    // Deleted keys, read back: each read meets the deletion.
    let mut client = common::connect(server.addr);
    for k in 0..5 {
        common::query_ok(&mut client, &format!("DELETE FROM kv WHERE k = 'key{k}'"));
        let (_, rows, _) = common::select_all(&mut client, &format!("SELECT v FROM kv WHERE k = 'key{k}'"), 100);
        assert!(rows.is_empty());
    }
    let text = admin_ok(server.addr, &["tablestats"]);
    assert_eq!(cell(&text, "kv", "Reads"), "15", "{text}");
    assert_eq!(cell(&text, "kv", "Tombstones scanned"), "5", "{text}");
    let p99: f64 = cell(&text, "kv", "Read p99 ms").parse().unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(p99 > 0.0, "{text}");
    assert_eq!(cell(&text, "other", "Read p50 ms"), "n/a", "{text}");

    let status = admin_json(server.addr, &["status"]);
    let every = admin_json(server.addr, &["tablestats"]);
    let space = |t| table_json(&every, t)["space_used_bytes"].as_u64().expect("a size");
    assert_eq!(status["nodes"][0]["load_bytes"], space("kv") + space("other"), "the tables hold every byte: {every}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ring_lists_every_vnode_of_a_single_node_in_token_order() {
    let dir = common::scratch_dir("admin-ring");
    let server = Server::start(&dir, SHARDS, &[]);
    let addr = server.addr.to_string();
    let host_id = admin_json(server.addr, &["status"])["nodes"][0]["host_id"].clone();

    let ring = admin_json(server.addr, &["ring"]);
    let vnodes = ring["ring"].as_array().expect("a vnode list");
    assert_eq!(vnodes.len(), SHARDS * TOKENS_PER_SHARD, "{ring}");
    let tokens: Vec<i64> = vnodes.iter().map(|v| v["token"].as_str().unwrap().parse().unwrap()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "ring order: {tokens:?}");
    for v in vnodes {
        assert_eq!(
            (&v["address"], &v["state"], &v["host_id"]),
            (&Json::from(addr.as_str()), &Json::from("UN"), &host_id)
        );
    }
    for shard in 0..SHARDS {
        let owned = vnodes.iter().filter(|v| v["shard"] == shard).count();
        assert_eq!(owned, TOKENS_PER_SHARD, "shard {shard}: {ring}");
    }
    // Each vnode's range runs from the previous token: the shares cover the ring once.
    let shares: f64 = vnodes.iter().map(|v| v["owns"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    let first = vnodes[0]["owns"].as_f64().unwrap();
    let wrapped = (tokens[0] as i128 - tokens[tokens.len() - 1] as i128 + (1i128 << 64)) as f64 / 2f64.powi(64);
    assert!((first - wrapped).abs() < 1e-12, "the first range wraps from the last token: {first} vs {wrapped}");

    let text = admin_ok(server.addr, &["ring"]);
    assert!(text.starts_with("Status=Up/Down\n"), "{text}");
    let rows: Vec<Vec<String>> = text
        .lines()
        .map(|line| line.split('|').map(|cell| cell.trim().to_owned()).collect::<Vec<_>>())
        .filter(|cells| cells.len() == 6 && cells[0] == addr)
        .collect();
    assert_eq!(rows.len(), SHARDS * TOKENS_PER_SHARD, "{text}");
    let printed: Vec<i64> = rows.iter().map(|r| r[5].parse().expect("a token")).collect();
    assert_eq!(printed, tokens, "{text}");
    assert!(rows.iter().all(|r| r[1] == "UN" && r[4].ends_with('%')), "{text}");

    // A restart keeps the tokens.
    common::stop_cleanly(server);
    let server = Server::start(&dir, SHARDS, &[]);
    assert_eq!(admin_json(server.addr, &["ring"])["ring"].as_array().unwrap().len(), tokens.len());
    let again: Vec<i64> = admin_json(server.addr, &["ring"])["ring"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["token"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(again, tokens);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_tables_are_typed_errors_and_an_unreachable_node_fails() {
    let dir = common::scratch_dir("admin-errors");
    let server = Server::start(&dir, 1, &[]);
    for command in ["tablestats", "flush", "compact"] {
        let out = admin(server.addr, &[command, "nope"]);
        assert!(!out.status.success(), "{command} nope succeeded");
        let stderr = common::text(&out.stderr);
        assert!(stderr.contains("invalid request") && stderr.contains("'nope' doesn't exist"), "{stderr}");
        assert_eq!(common::text(&out.stdout), "");
    }
    // The node's own tables are not the operator's.
    let out = admin(server.addr, &["flush", "system_batchlog"]);
    assert!(!out.status.success(), "{}", common::text(&out.stdout));

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        listener.local_addr().expect("its address")
    };
    let out = admin(closed, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = common::text(&out.stderr);
    assert!(stderr.contains(&format!("cannot reach the node at {closed}")), "{stderr}");
    assert_eq!(common::text(&out.stdout), "");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drain_flushes_then_refuses_writes_until_restart() {
    let dir = common::scratch_dir("admin-drain");
    let server = Server::start(&dir, SHARDS, &[]);
    common::run_ok(server.addr, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
    insert_rows(server.addr, "kv", 0..50);

    let text = admin_ok(server.addr, &["drain"]);
    assert!(text.starts_with("Drained: flushed ") && text.contains("writes are refused"), "{text}");
    let info = admin_json(server.addr, &["info"]);
    assert_eq!(info["drained"], true, "{info}");
    assert!(info["shards"].as_array().unwrap().iter().all(|s| s["memtable_bytes"] == 0), "{info}");
    let stats = admin_json(server.addr, &["tablestats", "kv"]);
    assert!(table_json(&stats, "kv")["sstables"].as_u64().unwrap() >= 1, "{stats}");

    let mut client = common::connect(server.addr);
    let err = common::query(&mut client, "INSERT INTO kv (k, v) VALUES ('late', 'x')").unwrap_err();
    assert_eq!(err.code, ErrorCode::Overloaded, "{err}");
    assert!(err.message.contains("drained"), "{err}");
    // Reads still work, and every row written before the drain is there.
    assert_eq!(common::key_values(server.addr, "kv").len(), 50);
    drop(client);

    // A restart takes writes again.
    common::stop_cleanly(server);
    let server = Server::start(&dir, SHARDS, &[]);
    common::run_ok(server.addr, "INSERT INTO kv (k, v) VALUES ('late', 'x')");
    assert_eq!(common::key_values(server.addr, "kv").len(), 51);
    assert_eq!(admin_json(server.addr, &["info"])["drained"], false);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

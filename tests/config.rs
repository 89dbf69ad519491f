//! `enigmadb server` configuration and logs, through the real binary: `--print-config` prints
//! TOML that `--config` reads back to the same settings, bad files are refused before anything
//! is touched with a message naming the key, and `--log-format json` writes one JSON object per
//! line for each notable event (start, ready, stop), none per request.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn print_config(args: &[&str]) -> String {
    let out = enigmadb().arg("server").arg("--print-config").args(args).output().expect("running enigmadb");
    assert!(out.status.success(), "--print-config {args:?} failed: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn printed_configuration_is_accepted_back_unchanged() {
    let dir = scratch_dir("config-print");
    let data_dir = dir.join("data");
    let data = data_dir.to_str().expect("a UTF-8 scratch path");
    let printed = print_config(&[
        "--data-dir",
        data,
        "--shards",
        "3",
        "--memtable-budget",
        "8MiB",
        "--sync-mode",
        "periodic",
        "--metrics-listen",
        "off",
        "--log-format",
        "json",
        "--log-level",
        "warn,shards=debug",
    ]);
    for line in [
        "shards = 3",
        "memtable_budget = \"8MiB\"",
        "sync_mode = \"periodic\"",
        "metrics_listen = \"off\"",
        "log_format = \"json\"",
        "log_level = \"warn,shards=debug\"",
        "cache_budget = \"auto\"",
    ] {
        assert!(printed.lines().any(|l| l == line), "missing {line:?} in\n{printed}");
    }
    // What auto chose, and why, for the budget left at auto.
    let memory = printed.lines().find(|l| l.starts_with("# memory: ")).expect("a memory line");
    assert!(memory.contains("MemTables 8MiB (memtable_budget setting)") && memory.contains("block cache"), "{memory}");
    let file = dir.join("printed.toml");
    std::fs::write(&file, &printed).expect("writing the printed configuration");
    let again = print_config(&["--config", file.to_str().expect("UTF-8 path")]);
    assert_eq!(again, printed);
    // Printing touches nothing.
    assert!(!data_dir.exists());
    // Flags still override the file.
    let overridden = print_config(&["--config", file.to_str().expect("UTF-8 path"), "--shards", "1"]);
    assert!(overridden.lines().any(|l| l == "shards = 1"), "{overridden}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_flag_moves_the_other_listeners_unless_they_are_set() {
    let printed = print_config(&["--listen", "127.0.0.9:9000"]);
    assert!(printed.contains("peer_listen = \"127.0.0.9:7470\""), "{printed}");
    assert!(printed.contains("metrics_listen = \"127.0.0.9:9471\""), "{printed}");
    let printed = print_config(&["--listen", "127.0.0.9:0"]);
    assert!(printed.contains("metrics_listen = \"127.0.0.9:0\""), "{printed}");
    let dir = scratch_dir("config-listen");
    let file = dir.join("c.toml");
    std::fs::write(&file, "metrics_listen = \"127.0.0.1:9999\"\n").expect("writing the file");
    let printed = print_config(&["--config", file.to_str().expect("UTF-8 path"), "--listen", "127.0.0.9:9000"]);
    assert!(printed.contains("metrics_listen = \"127.0.0.1:9999\""), "the file's setting stays: {printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts a server on `file` and expects a refusal naming `key` before the data directory is
/// created.
fn assert_refused(dir: &Path, name: &str, contents: &str, key: &str) {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, contents).expect("writing the file");
    let data_dir = dir.join(format!("{name}-data"));
    let out = enigmadb()
        .arg("server")
        .arg("--config")
        .arg(&file)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", &format!("{}:0", loopback_host())])
        .stdin(Stdio::null())
        .output()
        .expect("running enigmadb");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    assert!(stderr.starts_with("error: "), "{name}: {stderr}");
    assert!(stderr.contains(&format!("'{key}'")) || stderr.contains(&format!("`{key}`")), "{name}: {stderr}");
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    assert!(!data_dir.exists(), "{name}: the data directory was created");
}

#[test]
fn bad_configuration_files_are_refused_naming_the_key() {
    let dir = scratch_dir("config-bad");
    assert_refused(&dir, "typo", "memtable_budgte = \"8MiB\"\n", "memtable_budgte");
    assert_refused(&dir, "negative-size", "shards = 1\nmemtable_budget = -5\n", "memtable_budget");
    assert_refused(&dir, "size-unit", "cache_budget = \"12 parsecs\"\n", "cache_budget");
    assert_refused(&dir, "sync-mode", "sync_mode = \"sometimes\"\n", "sync_mode");
    assert_refused(&dir, "address", "listen = \"localhost\"\n", "listen");
    assert_refused(&dir, "metrics", "metrics_listen = \"on\"\n", "metrics_listen");
    assert_refused(&dir, "log-format", "log_format = \"xml\"\n", "log_format");
    assert_refused(&dir, "log-level", "log_level = \"chatty\"\n", "log_level");
    assert_refused(&dir, "type", "pin_shards = \"yes\"\n", "pin_shards");
    assert_refused(&dir, "range", "shards = 0\n", "shards");
    assert_refused(&dir, "segment", "wal_segment_bytes = 1000\n", "wal_segment_bytes");
    assert_refused(&dir, "cluster-name", "cluster_name = \"\"\n", "cluster_name");
    assert_refused(&dir, "task-quota", "task_quota_us = 5\n", "task_quota_us");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_logs_have_one_line_per_notable_event_and_none_per_request() {
    let dir = scratch_dir("config-json-logs");
    let host = loopback_host();
    let mut child = enigmadb()
        .arg("server")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--shards", "1", "--pin-shards", "false", "--log-format", "json", "--log-level", "info"])
        .args(["--listen", &format!("{host}:0"), "--peer-listen", &format!("{host}:0")])
        .env_remove("ENIGMADB_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting enigmadb server");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    let addr = loop {
        line.clear();
        assert!(stdout.read_line(&mut line).expect("reading stdout") > 0, "the server exited before it was ready");
        if let Some(addr) = ready_address(&line) {
            break addr;
        }
        assert!(Instant::now() < deadline, "not ready in time");
    };
    let mut client = connect(addr);
    query_ok(&mut client, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
    for i in 0..100 {
        query_ok(&mut client, &format!("INSERT INTO kv (k, v) VALUES ('k{i}', 'v')"));
    }
    drop(client);
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            break status;
        }
        assert!(Instant::now() < deadline + SERVER_STOP_TIMEOUT, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut stderr = String::new();
    child.stderr.take().expect("piped stderr").read_to_string(&mut stderr).expect("reading stderr");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = events.iter().filter_map(|e| e["message"].as_str()).collect();
    for expected in ["starting", "ready", "stopped: WALs synced"] {
        assert!(messages.contains(&expected), "no {expected:?} event in {messages:?}");
    }
    assert!(events.iter().all(|e| e["level"].is_string() && e["timestamp"].is_string()), "{stderr}");
    let ready = events.iter().find(|e| e["message"] == "ready").expect("ready event");
    assert_eq!(ready["listen"].as_str(), Some(addr.to_string().as_str()));
    // 101 requests, a handful of lines: nothing is logged per request at info.
    assert!(events.len() < 10, "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

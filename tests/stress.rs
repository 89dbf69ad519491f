//! `enigmadb stress` against a real two-shard server: a write run and a read run of the same
//! keys report exact counts in their JSON reports, reads find every value written, `compare`
//! tables both runs, and a run against a table that does not exist fails with a clear error.

mod common;

use std::path::Path;

use common::{enigmadb, scratch_dir, text, Server};

fn stress(addr: &str, args: &[&str]) -> std::process::Output {
    enigmadb().arg("stress").args(args).args(["--host", addr]).output().expect("running enigmadb stress")
}

fn report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the report is JSON")
}

#[test]
fn write_then_read_reports_exact_counts_and_reads_find_every_value() {
    let dir = scratch_dir("stress");
    let mut server = Server::start(&dir.join("data"), 2, &[]);
    let addr = server.addr.to_string();
    let shape = ["--population", "2000", "--concurrency", "16", "--connections", "2", "--seed", "7"];

    let write_report = dir.join("write.json");
    let out =
        stress(&addr, &[&["write", "-n", "2000", "--report", write_report.to_str().unwrap()], &shape[..]].concat());
    assert!(out.status.success(), "stress write failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    let w = report(&write_report);
    assert_eq!(w["command"], "write");
    assert_eq!(w["target"], "enigmadb");
    assert!(w["server"]["version"].as_str().unwrap().starts_with("enigmadb "), "{}", w["server"]);
    assert_eq!(w["settings"]["operations"], 2000);
    assert_eq!(w["settings"]["seed"], 7);
    assert_eq!(w["summary"]["operations"], 2000);
    assert_eq!(w["summary"]["ok"], 2000);
    assert_eq!(w["summary"]["errors"], serde_json::json!({}));
    assert_eq!(w["summary"]["latency_us"]["count"], 2000);
    // Shard-aware by default: every request is counted, sent to its owning shard or not.
    assert_eq!(w["settings"]["shard_aware"], true);
    assert_eq!(w["summary"]["shard_aware"]["requests"], 2000, "{}", w["summary"]);
    assert!(w["summary"]["latency_us"]["p99"].as_u64().unwrap() > 0);
    let series = w["series"].as_array().expect("a per-second series");
    let in_series: u64 = series.iter().map(|s| s["operations"].as_u64().unwrap()).sum();
    assert_eq!(in_series, 2000, "every operation is in exactly one second of the series");

    // Sequential reads of the same 2000 keys with the same seed: every value is there and right.
    let read_report = dir.join("read.json");
    let read_args = ["read", "-n", "2000", "--distribution", "sequential", "--report", read_report.to_str().unwrap()];
    let out = stress(&addr, &[&read_args[..], &shape[..]].concat());
    assert!(out.status.success(), "stress read failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
    let r = report(&read_report);
    assert_eq!(
        (r["summary"]["ok"].as_u64(), r["summary"]["missing"].as_u64()),
        (Some(2000), Some(0)),
        "{}",
        r["summary"]
    );

    let out = enigmadb()
        .args(["stress", "compare", "--name", "smoke", "--date", "test", "--out-dir"])
        .arg(&dir)
        .arg(&write_report)
        .arg(&read_report)
        .output()
        .expect("running enigmadb stress compare");
    assert!(out.status.success(), "compare failed:\n{}", text(&out.stderr));
    let table = std::fs::read_to_string(dir.join("test-smoke.md")).expect("the Markdown table");
    assert!(table.contains("| write |") && table.contains("| read |"), "{table}");

    let out = stress(&addr, &["read", "-n", "10", "--table", "never_created"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("never_created"), "{}", text(&out.stderr));

    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

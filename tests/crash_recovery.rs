//! Kill -9 in the middle of a write surge, restart, and check that every acknowledged write is
//! there with its value (sync mode `batch`). Cycles overlap their key ranges, so later cycles
//! overwrite earlier rows: an acknowledged overwrite must win after every restart.
//!
//! ENIGMADB_CRASH_CYCLES (default 20) sets the number of kill cycles; ENIGMADB_CRASH_SEED
//! replays a failing run.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

const SHARDS: usize = 2;
/// Each cycle starts this many keys after the previous one, so it overwrites the tail of
/// what earlier cycles wrote.
const STRIDE: u64 = 300;

#[test]
fn every_acknowledged_write_survives_kill_9_during_a_surge() {
    let dir = kill_cycles("crash-surge", "64MiB", &[]);
    std::fs::remove_dir_all(&dir).ok();
}

/// With a 32 KiB MemTable budget the shards flush every few hundred rows, so kills land during
/// SSTable writes and manifest updates too; after every restart no leftover file remains.
#[test]
fn every_acknowledged_write_survives_kill_9_during_flushes() {
    let dir = kill_cycles("crash-flush", "32KiB", &["--compaction-strategy", "none"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// Flushes every few hundred rows and a compaction after every second flush (all files share
/// one size tier below 1 MiB), unthrottled: kills land while compactions merge, publish their
/// manifest edit and delete the replaced files. After every restart no file is left over, and
/// compaction keeps the SSTable count far below the flush count.
#[test]
fn every_acknowledged_write_survives_kill_9_during_compactions() {
    let compaction = ["--compaction-min-threshold", "2", "--compaction-min-sstable-size", "1MiB"];
    let dir =
        kill_cycles("crash-compaction", "32KiB", &[&compaction[..], &["--compaction-throughput-mib", "0"]].concat());
    for shard in 0..SHARDS {
        let manifest = shards::manifest::Manifest::load(&dir.join(format!("shard-{shard:03}"))).expect("manifest");
        assert!(
            manifest.sstables.len() <= 8 && manifest.next_generation > 3 * manifest.sstables.len() as u64,
            "shard {shard}: compaction kept up with the flushes: {manifest:?}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs the kill cycles and returns the data directory (removed by the caller).
fn kill_cycles(name: &str, memtable_budget: &str, extra: &[&str]) -> std::path::PathBuf {
    let cycles: u64 = std::env::var("ENIGMADB_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("ENIGMADB_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash test: {cycles} cycles, seed {seed} (ENIGMADB_CRASH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = common::scratch_dir(name);

    // key -> (value of the last acknowledged write, cycle of that ack)
    let mut acked: HashMap<String, (String, u64)> = HashMap::new();
    let mut total_acks = 0usize;
    let mut kills_before_first_ack = 0;
    for cycle in 0..cycles {
        let start = cycle * STRIDE;
        let tag = format!("c{cycle}");
        let mut child = common::enigmadb()
            .args(["embedded", "--data-dir"])
            .arg(&dir)
            .args(["--shards", &SHARDS.to_string(), "--sync-mode", "batch"])
            // Small segments, so kills also land during rotation and replay crosses segments.
            .args(["--wal-segment-bytes", "262144", "--memtable-budget", memtable_budget])
            .args(extra)
            .args(["surge", "--writers", "16"])
            .args(["--start", &start.to_string(), "--rows", "10000000", "--tag", &tag])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<String>>());
        // Kill at a random moment: sometimes during start-up and replay, mostly mid-surge.
        let delay = Duration::from_millis(rng.gen_range(5..600));
        let started = Instant::now();
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("reaping the writer");
        assert!(
            status.code().is_none(),
            "writer exited by itself ({status}) before the kill, cycle {cycle} seed {seed}"
        );
        let lines = reader.join().expect("reader thread");
        if lines.is_empty() {
            kills_before_first_ack += 1;
        }
        for line in &lines {
            let mut parts = line.splitn(3, ' ');
            let (Some("ack"), Some(key), Some(value)) = (parts.next(), parts.next(), parts.next()) else {
                panic!("unexpected writer output {line:?}");
            };
            acked.insert(key.to_owned(), (value.to_owned(), cycle));
        }
        total_acks += lines.len();
        eprintln!("cycle {cycle}: killed after {:?}, {} acks", started.elapsed(), lines.len());

        let stored = common::dump_key_value_table(&dir, SHARDS, "surge");
        check(&acked, &stored, cycle, seed);
        common::assert_no_leftover_files(&dir, SHARDS);
    }
    assert!(total_acks > 0, "no write was ever acknowledged (seed {seed})");
    eprintln!(
        "{total_acks} acknowledged writes over {cycles} cycles ({kills_before_first_ack} kills before the first ack)"
    );
    dir
}

/// Every acknowledged key must hold its acknowledged value, or the value of a later cycle's
/// write to the same key (written, maybe durable, but killed before its ack). Nothing may hold
/// a value that was never written.
fn check(acked: &HashMap<String, (String, u64)>, stored: &HashMap<String, String>, cycle: u64, seed: u64) {
    for (key, (value, acked_in)) in acked {
        let Some(found) = stored.get(key) else {
            panic!("acknowledged key {key} (cycle {acked_in}) is missing after restart {cycle}, seed {seed}");
        };
        if found != value {
            let found_cycle = parse_value(key, found).unwrap_or_else(|| panic!("{key} holds foreign value {found:?}"));
            assert!(
                found_cycle > *acked_in,
                "key {key}: acknowledged {value:?} in cycle {acked_in} but found {found:?} after restart {cycle}, seed {seed}"
            );
        }
    }
    for (key, value) in stored {
        assert!(parse_value(key, value).is_some(), "key {key} holds a value never written: {value:?} (seed {seed})");
    }
}

/// The cycle that wrote `value` for `key`, if the value is one the writer would write for it.
fn parse_value(key: &str, value: &str) -> Option<u64> {
    let n: u64 = key.strip_prefix('k')?.parse().ok()?;
    let mut parts = value.splitn(3, '-');
    let cycle = parts.next()?.strip_prefix('c')?.parse().ok()?;
    (parts.next()?.parse::<u64>().ok()? == n && parts.next()? == "v".repeat(64)).then_some(cycle)
}

//! Kill -9 of a real `enigmadb server` while a client pipelines writes (consistency ONE, sync
//! mode `batch`, and `periodic`, whose acknowledged writes are in the page cache, which a
//! killed process does not take with it), restart, and read every acknowledged write back
//! through the client protocol, cycle after cycle. Cycles overlap their key ranges, so an acknowledged overwrite must win
//! after every restart.
//!
//! ENIGMADB_CRASH_CYCLES (default 20) sets the number of kill cycles; ENIGMADB_CRASH_SEED
//! replays a failing run.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use wire::client::Client;
use wire::protocol::{QueryParams, QueryResult, Request, Response};
use wire::Consistency;

const SHARDS: usize = 2;
/// Each cycle starts this many keys after the previous one, so it overwrites the tail of what
/// earlier cycles wrote.
const STRIDE: u64 = 1_000;
/// Most writes one cycle sends (bounds the table, and so the time of each check).
const MAX_WRITES_PER_CYCLE: u64 = 4_000;
/// Writes in flight on the connection at once.
const PIPELINE_DEPTH: usize = 64;
const TABLE: &str = "crash";

#[test]
fn every_acknowledged_write_survives_kill_9_of_the_server() {
    survives_kill_9("batch");
}

#[test]
fn every_acknowledged_write_survives_kill_9_in_periodic_mode() {
    survives_kill_9("periodic");
}

fn survives_kill_9(sync_mode: &str) {
    let cycles: u64 = std::env::var("ENIGMADB_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("ENIGMADB_CRASH_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("server crash test ({sync_mode}): {cycles} cycles, seed {seed} (ENIGMADB_CRASH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = common::scratch_dir(&format!("server-crash-{sync_mode}"));
    // A small MemTable, so that kills also land during flushes.
    let flags = ["--sync-mode", sync_mode, "--memtable-budget", "1MiB"];
    let started = Instant::now();

    // key -> (value of the last acknowledged write, cycle of that ack)
    let mut acked: HashMap<String, (String, u64)> = HashMap::new();
    let mut total_acks = 0usize;
    for cycle in 0..=cycles {
        let mut server = common::Server::start(&dir, SHARDS, &flags);
        if cycle == 0 {
            common::run_ok(server.addr, &format!("CREATE TABLE {TABLE} (k text PRIMARY KEY, v text)"));
        }
        let stored = common::key_values(server.addr, TABLE);
        common::check_acknowledged(&acked, &stored, cycle, seed);
        if cycle == cycles {
            break;
        }
        let start = cycle * STRIDE;
        let addr = server.addr;
        let writer = std::thread::spawn(move || write_until_cut_off(addr, cycle, start));
        // Kill at a random moment: mostly mid-stream, sometimes before the first write lands.
        let delay = Duration::from_millis(rng.gen_range(10..500));
        std::thread::sleep(delay);
        server.kill();
        let acks = writer.join().expect("writer thread");
        eprintln!("cycle {cycle}: killed after {delay:?}, {} acks", acks.len());
        total_acks += acks.len();
        for (key, value) in acks {
            acked.insert(key, (value, cycle));
        }
    }
    assert!(total_acks > 0, "no write was ever acknowledged (seed {seed})");
    eprintln!("{total_acks} acknowledged writes over {cycles} kills in {:?}", started.elapsed());
    std::fs::remove_dir_all(&dir).ok();
}

/// Pipelines INSERTs at consistency ONE on one connection until the server goes away (or the
/// cycle's writes are done); returns the acknowledged (key, value) pairs.
fn write_until_cut_off(addr: SocketAddr, cycle: u64, start: u64) -> Vec<(String, String)> {
    let mut acks = Vec::new();
    let Ok(mut client) = Client::connect(addr) else { return acks };
    // stream id -> the write it carries
    let mut in_flight: HashMap<u16, (String, String)> = HashMap::new();
    let mut next = start;
    let params = QueryParams::with_consistency(Consistency::One);
    loop {
        while in_flight.len() < PIPELINE_DEPTH && next < start + MAX_WRITES_PER_CYCLE {
            let key = format!("k{next}");
            let value = common::written_value(cycle, next);
            let text = format!("INSERT INTO {TABLE} (k, v) VALUES ('{key}', '{value}')");
            let Ok(stream) = client.send(&Request::Query { text, params: params.clone() }) else { return acks };
            in_flight.insert(stream, (key, value));
            next += 1;
        }
        if in_flight.is_empty() {
            return acks;
        }
        match client.recv() {
            Ok((stream, Response::Result(QueryResult::Void))) => {
                let write = in_flight.remove(&stream).unwrap_or_else(|| panic!("answer on unknown stream {stream}"));
                acks.push(write);
            }
            Ok((stream, other)) => panic!("write on stream {stream} answered with {other:?}"),
            // Killed: whatever was not answered was not acknowledged.
            Err(_) => return acks,
        }
    }
}

//! Bootstrap with real processes: a 4th node joins a 3-node RF 3 cluster holding data while a
//! writer keeps writing at QUORUM and a reader keeps reading acknowledged rows at QUORUM.
//! Nothing acknowledged is ever missing, and once the node is UN everywhere every acknowledged
//! row reads back at QUORUM and ALL, and at ONE through the new node (which answers from its
//! own copy for the ranges it replicates: it streamed them).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::cluster::{admin_status, await_until, rows, TestCluster};
use common::{connect, enigmadb};
use wire::client::{Client, Prepared};
use wire::protocol::{QueryParams, QueryResult};
use wire::{Consistency, Value};

/// Rows written before the join (a debug build writes them in a few seconds).
const ROWS: usize = 20_000;
/// Writer threads loading them.
const LOADERS: usize = 4;

fn at(consistency: Consistency) -> QueryParams {
    QueryParams { consistency, ..QueryParams::default() }
}

fn insert(client: &mut Client, prepared: &Prepared, key: &str, value: i32) -> bool {
    let values = [Some(Value::Text(key.to_owned())), Some(Value::Int(value))];
    client.execute(prepared, &values, at(Consistency::Quorum)).is_ok()
}

/// The value of `key` at `consistency`; Err when the read itself failed.
fn read(client: &mut Client, prepared: &Prepared, key: &str, consistency: Consistency) -> Result<Option<i32>, String> {
    match client.execute(prepared, &[Some(Value::Text(key.to_owned()))], at(consistency)) {
        Ok(QueryResult::Rows(rows)) => Ok(rows.rows.first().and_then(|row| match row[0] {
            Some(Value::Int(v)) => Some(v),
            _ => None,
        })),
        Ok(other) => Err(format!("a SELECT answered {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads every key of `acked` at `consistency` through `addr` with a few clients; returns the
/// keys whose read did not give the acknowledged value.
fn check_all(addr: std::net::SocketAddr, acked: &BTreeMap<String, i32>, consistency: Consistency) -> Vec<String> {
    let keys: Vec<(String, i32)> = acked.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let chunk = keys.len().div_ceil(LOADERS);
    let threads: Vec<_> = keys
        .chunks(chunk)
        .map(|part| {
            let part = part.to_vec();
            std::thread::spawn(move || {
                let mut client = connect(addr);
                let select = client.prepare("SELECT v FROM kv WHERE k = ?").expect("prepare");
                let mut wrong = Vec::new();
                for (key, value) in part {
                    match read(&mut client, &select, &key, consistency) {
                        Ok(Some(v)) if v == value => {}
                        other => wrong.push(format!("{key}: {other:?}")),
                    }
                }
                wrong
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().expect("reader thread")).collect()
}

/// `enigmadb admin netstats --json` of the node at `addr`.
fn netstats(addr: std::net::SocketAddr) -> serde_json::Value {
    let out = enigmadb().args(["admin", "netstats", "--host", &addr.to_string(), "--json"]).output().unwrap();
    assert!(out.status.success(), "admin netstats: {}", common::text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("admin netstats prints JSON")
}

#[test]
fn a_joining_node_streams_its_ranges_and_no_acknowledged_write_goes_missing() {
    let mut cluster = TestCluster::start_with("bootstrap-join", 3, &["--ring-delay-ms", "3000"]);
    cluster.create_kv_table(3);

    // Load: ROWS keys at QUORUM through node 1.
    let loaded = Instant::now();
    let loaders: Vec<_> = (0..LOADERS)
        .map(|t| {
            let addr = cluster.addr(1);
            std::thread::spawn(move || {
                let mut client = connect(addr);
                let prepared = client.prepare("INSERT INTO kv (k, v) VALUES (?, ?)").expect("prepare");
                (t..ROWS).step_by(LOADERS).for_each(|n| {
                    assert!(insert(&mut client, &prepared, &format!("k{n}"), n as i32), "loading k{n}");
                });
            })
        })
        .collect();
    loaders.into_iter().for_each(|t| t.join().expect("loader"));
    let mut acked: BTreeMap<String, i32> = (0..ROWS).map(|n| (format!("k{n}"), n as i32)).collect();
    eprintln!("loaded {ROWS} rows at QUORUM in {:?}", loaded.elapsed());

    // A writer through node 2 and a reader through node 3, both at QUORUM, during the join.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(Mutex::new(Vec::<(String, i32)>::new()));
    let writer = {
        let (stop, written, addr) = (stop.clone(), written.clone(), cluster.addr(2));
        std::thread::spawn(move || {
            let mut client = connect(addr);
            let prepared = client.prepare("INSERT INTO kv (k, v) VALUES (?, ?)").expect("prepare");
            let mut n = 0;
            let mut failed = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{n}");
                match insert(&mut client, &prepared, &key, n) {
                    true => written.lock().unwrap().push((key, n)),
                    false => failed += 1,
                }
                n += 1;
            }
            failed
        })
    };
    let reader = {
        let (stop, written, addr) = (stop.clone(), written.clone(), cluster.addr(3));
        std::thread::spawn(move || {
            let mut client = connect(addr);
            let select = client.prepare("SELECT v FROM kv WHERE k = ?").expect("prepare");
            let (mut reads, mut missing, mut errors) = (0u64, Vec::new(), 0u64);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // Alternately a loaded key (spread over the ring) and one the writer had
                // acknowledged before this read started.
                let (key, value) = match i % 2 {
                    0 => (format!("k{}", (i * 7919) % ROWS), ((i * 7919) % ROWS) as i32),
                    _ => match written.lock().unwrap().iter().rev().nth(i % 50).cloned() {
                        Some(acked) => acked,
                        None => (format!("k{}", i % ROWS), (i % ROWS) as i32),
                    },
                };
                i += 1;
                match read(&mut client, &select, &key, Consistency::Quorum) {
                    Ok(Some(v)) if v == value => {}
                    Ok(other) => missing.push(format!("{key}: {other:?}")),
                    Err(_) => errors += 1,
                }
                reads += 1;
            }
            (reads, missing, errors)
        })
    };
    await_until("the writer has acknowledged writes", || written.lock().unwrap().len() > 100);

    let joined = cluster.join();
    assert_eq!(joined, 4);
    let new = cluster.addr(4);
    // While it streams, the others list it as UJ (up, joining), as nodetool does.
    await_until("node 1 lists the new node as UJ", || {
        admin_status(cluster.addr(1))
            .is_some_and(|s| rows(&s).iter().any(|r| r["address"] == new.to_string() && r["state"] == "UJ"))
    });
    cluster.await_up(4);
    let netstats = netstats(new);
    assert_eq!(netstats["mode"], "NORMAL: bootstrap completed", "{netstats}");
    let (total, done) = (netstats["ranges_total"].as_u64().unwrap(), netstats["ranges_done"].as_u64().unwrap());
    assert!(total > 0 && done == total, "{netstats}");
    let received: u64 = netstats["receiving"].as_array().unwrap().iter().map(|p| p["rows"].as_u64().unwrap()).sum();
    assert!(received > ROWS as u64 / 2, "at RF 3 on 4 nodes the new node replicates about 3/4 of the rows: {netstats}");
    eprintln!("netstats of the new node: {netstats}");
    // Keep going a little with the new node NORMAL everywhere.
    let after = written.lock().unwrap().len();
    await_until("the writer goes on after the join", || written.lock().unwrap().len() > after + 200);
    stop.store(true, Ordering::Relaxed);
    let failed_writes = writer.join().expect("writer");
    let (reads, missing, read_errors) = reader.join().expect("reader");
    let during: Vec<(String, i32)> = written.lock().unwrap().clone();
    eprintln!(
        "during the join: {} writes acknowledged ({failed_writes} failed), {reads} QUORUM reads ({read_errors} failed)",
        during.len()
    );
    assert!(missing.is_empty(), "acknowledged rows missing at QUORUM during the join: {missing:?}");
    acked.extend(during);

    for (consistency, node) in [(Consistency::Quorum, 1), (Consistency::All, 2), (Consistency::One, 4)] {
        let wrong = check_all(cluster.addr(node), &acked, consistency);
        assert!(
            wrong.is_empty(),
            "{} of {} acknowledged rows wrong at {consistency} through node {node}, e.g. {:?}",
            wrong.len(),
            acked.len(),
            &wrong[..wrong.len().min(10)]
        );
    }
}

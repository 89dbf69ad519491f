//! Bootstrap with real processes: a 4th and then a 5th node join a 3-node RF 3 cluster holding
//! 100,000 rows while a writer keeps writing at QUORUM and a reader keeps reading acknowledged
//! rows at QUORUM. Nothing acknowledged is ever missing, and once each new node is UN
//! everywhere every acknowledged row reads back at QUORUM and ALL, and at ONE through the new
//! node (which answers from its own copy for the ranges it replicates: it streamed them).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::cluster::{
    admin_status, assert_reads_back, await_streaming, await_until, load_kv, load_wide, netstats, read, rows,
    wrong_wide, QuorumWriter, TestCluster, THROTTLED,
};
use common::connect;
use wire::{Consistency, Value};

/// Rows written at QUORUM before the joins.
const ROWS: usize = 100_000;

/// What the continuous QUORUM reader found so far.
#[derive(Default)]
struct ReaderLog {
    reads: AtomicU64,
    errors: AtomicU64,
    /// Acknowledged rows a read did not give back, each with what it got.
    missing: Mutex<Vec<String>>,
}

/// Reads at QUORUM through `addr` until `stop`, alternately a loaded key (spread over the
/// ring) and one the writer had acknowledged before the read started; logs into `log`.
fn continuous_reader(
    addr: SocketAddr,
    written: Arc<Mutex<Vec<(String, i32)>>>,
    stop: Arc<AtomicBool>,
    log: Arc<ReaderLog>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut client = connect(addr);
        let select = client.prepare("SELECT v FROM kv WHERE k = ?").expect("prepare");
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
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
                Ok(other) => log.missing.lock().unwrap().push(format!("{key}: {other:?}")),
                Err(_) => {
                    log.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            log.reads.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Starts the next node into `cluster`, which bootstraps: checks that the others list it UJ
/// while it joins, that it turns UN everywhere with every stream completed, and that it
/// received about its share of the rows. Returns its number.
fn join_and_check_streams(cluster: &mut TestCluster) -> usize {
    let joined = cluster.join();
    let new = cluster.addr(joined);
    // While it streams, the others list it as UJ (up, joining), as nodetool does.
    await_until(&format!("node 1 lists node {joined} as UJ"), || {
        admin_status(cluster.addr(1))
            .is_some_and(|s| rows(&s).iter().any(|r| r["address"] == new.to_string() && r["state"] == "UJ"))
    });
    cluster.await_up(joined);
    let netstats = netstats(new);
    assert_eq!(netstats["mode"], "NORMAL: bootstrap completed", "node {joined}: {netstats}");
    let (total, done) = (netstats["ranges_total"].as_u64().unwrap(), netstats["ranges_done"].as_u64().unwrap());
    assert!(total > 0 && done == total, "node {joined}: {netstats}");
    let received: u64 = netstats["receiving"].as_array().unwrap().iter().map(|p| p["rows"].as_u64().unwrap()).sum();
    // At RF 3 on n nodes a node replicates 3/n of the rows; allow a third less.
    let share = 2 * ROWS as u64 / joined as u64;
    assert!(
        received > share,
        "at RF 3 on {joined} nodes node {joined} replicates about 3/{joined} of the rows: {netstats}"
    );
    eprintln!("netstats of node {joined}: {netstats}");
    joined
}

#[test]
fn a_4th_then_a_5th_node_join_under_load_and_no_acknowledged_write_goes_missing() {
    let started = Instant::now();
    let mut cluster = TestCluster::start_with("bootstrap-join", 3, &["--ring-delay-ms", "3000"]);
    cluster.create_kv_table(3);

    // Load: ROWS keys at QUORUM through node 1.
    let loaded = Instant::now();
    let acked = load_kv(cluster.addr(1), ROWS);
    eprintln!("loaded {ROWS} rows at QUORUM in {:?}", loaded.elapsed());

    // A writer through node 2 and a reader through node 3, both at QUORUM, through both joins.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writer = Some(QuorumWriter::start(cluster.addr(2), stop.clone()));
    let written = writer.as_ref().unwrap().written.clone();
    let log = Arc::new(ReaderLog::default());
    let mut reader = Some(continuous_reader(cluster.addr(3), written.clone(), stop.clone(), log.clone()));
    await_until("the writer has acknowledged writes", || written.lock().unwrap().len() > 100);

    // Through which node each check after a join reads, at which level.
    let checks = [
        [(Consistency::Quorum, 1), (Consistency::All, 2), (Consistency::One, 4)],
        [(Consistency::Quorum, 3), (Consistency::All, 4), (Consistency::One, 5)],
    ];
    for (expected, checks) in [4, 5].into_iter().zip(checks) {
        let join = Instant::now();
        let (reads, writes) = (log.reads.load(Ordering::Relaxed), written.lock().unwrap().len());
        let joined = join_and_check_streams(&mut cluster);
        assert_eq!(joined, expected);
        let (reads, writes) = (log.reads.load(Ordering::Relaxed) - reads, written.lock().unwrap().len() - writes);
        eprintln!(
            "node {joined} joined in {:?}: {writes} writes acknowledged, {reads} reads meanwhile",
            join.elapsed()
        );
        assert!(reads > 0 && writes > 0, "the reader and the writer went on during the join of node {joined}");
        {
            let missing = log.missing.lock().unwrap();
            assert!(missing.is_empty(), "acknowledged rows missing at QUORUM until node {joined} joined: {missing:?}");
        }
        // Keep going a little with the new node NORMAL everywhere.
        let after = written.lock().unwrap().len();
        await_until("the writer goes on after the join", || written.lock().unwrap().len() > after + 200);
        // After the last join the writer and the reader stop, so that every acknowledged
        // write is checked; after the others they go on through the checks and the next join.
        let mut acked = acked.clone();
        if joined == 5 {
            stop.store(true, Ordering::Relaxed);
            let (during, failed_writes) = writer.take().unwrap().finish();
            reader.take().unwrap().join().expect("reader");
            eprintln!(
                "during the joins: {} writes acknowledged ({failed_writes} failed), {} QUORUM reads ({} failed)",
                during.len(),
                log.reads.load(Ordering::Relaxed),
                log.errors.load(Ordering::Relaxed),
            );
            let missing = log.missing.lock().unwrap();
            assert!(missing.is_empty(), "acknowledged rows missing at QUORUM during the joins: {missing:?}");
        }
        acked.extend(written.lock().unwrap().iter().cloned());
        let checking = Instant::now();
        for (consistency, node) in checks {
            assert_reads_back(
                cluster.addr(node),
                &acked,
                consistency,
                &format!("after node {joined} joined, node {node}"),
            );
        }
        eprintln!("checked {} acknowledged rows 3 times in {:?}", acked.len(), checking.elapsed());
    }
    eprintln!("test took {:?}", started.elapsed());
}

#[test]
fn a_joining_node_killed_mid_stream_bootstraps_again_when_restarted() {
    let mut cluster = TestCluster::start_with("bootstrap-crash", 3, &THROTTLED);
    let wide = load_wide(&cluster);
    cluster.join();
    let at_kill = await_streaming(cluster.addr(4), "JOINING: streaming");
    let at_kill_addr = cluster.addr(4);
    cluster.kill(4);
    eprintln!("killed the joining node at {at_kill}");
    // It is not NORMAL anywhere: peers keep it JOINING (down), never a natural replica.
    for i in 1..=3 {
        let status = admin_status(cluster.addr(i)).expect("admin status");
        let killed = at_kill_addr.to_string();
        assert!(!rows(&status).iter().any(|r| r["state"] == "UN" && r["address"] == killed), "node {i}: {status}");
    }
    cluster.restart(4);
    let done = netstats(cluster.addr(4));
    assert_eq!(done["mode"], "NORMAL: bootstrap completed", "{done}");
    assert_eq!(done["ranges_done"], done["ranges_total"], "{done}");
    let wrong = wrong_wide(cluster.addr(4), &wide, Consistency::One);
    assert!(
        wrong.is_empty(),
        "{} rows wrong at ONE through the restarted node, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// kill -9 of a streaming source while a writer writes at QUORUM: the join goes on from the
/// other replicas and completes; the source comes back; every acknowledged write reads back at
/// QUORUM and ALL, every streamed row at ONE through the new node, and a scan of the streamed
/// table through the new node lists every row exactly once (a range pulled again from another
/// source duplicates nothing a reader sees).
#[test]
fn a_source_killed_mid_stream_is_replaced_by_another_replica() {
    let mut cluster = TestCluster::start_with("bootstrap-source", 3, &THROTTLED);
    let wide = load_wide(&cluster);
    cluster.create_kv_table(3);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = QuorumWriter::start(cluster.addr(1), stop.clone());
    cluster.join();
    let at_kill = await_streaming(cluster.addr(4), "JOINING: streaming");
    // Node 2 replicates every range at RF 3: a source of the join, streaming now or later.
    cluster.kill(2);
    eprintln!("killed source node 2 at {at_kill}");
    let new = cluster.addr(4);
    for i in [1, 3, 4] {
        await_until(&format!("node {i} lists the new node UN"), || {
            admin_status(cluster.addr(i))
                .is_some_and(|s| rows(&s).iter().any(|r| r["address"] == new.to_string() && r["state"] == "UN"))
        });
    }
    let done = netstats(new);
    assert_eq!(done["ranges_done"], done["ranges_total"], "{done}");
    eprintln!("netstats after a source was killed: {done}");
    // The source comes back; the writer goes on a little with every node up.
    cluster.restart(2);
    let after = writer.acked();
    await_until("the writer goes on with the source back", || writer.acked() > after + 100);
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = writer.finish();
    eprintln!("during the join: {} writes acknowledged, {failed} not", acked.len());
    let acked: std::collections::BTreeMap<String, i32> = acked.into_iter().collect();
    assert_reads_back(cluster.addr(3), &acked, Consistency::Quorum, "after the join");
    assert_reads_back(cluster.addr(2), &acked, Consistency::All, "after the join");
    let wrong = wrong_wide(new, &wide, Consistency::One);
    assert!(
        wrong.is_empty(),
        "{} rows wrong at ONE through the new node, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    let (_, scanned, _) = common::select_all(&mut connect(new), "SELECT k FROM wide", 1_000);
    let keys: Vec<String> = scanned
        .into_iter()
        .map(|row| match &row[..] {
            [Some(Value::Text(k))] => k.clone(),
            other => panic!("unexpected row {other:?}"),
        })
        .collect();
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(keys.len(), distinct.len(), "a scan through the new node lists some row twice");
    assert!(distinct.into_iter().eq(wide.keys()), "a scan through the new node lists other rows than were written");
}

#[test]
fn a_second_join_overlapping_one_in_progress_is_refused() {
    let mut cluster = TestCluster::start_with("bootstrap-overlap", 3, &THROTTLED);
    let wide = load_wide(&cluster);
    cluster.join();
    await_streaming(cluster.addr(4), "JOINING: streaming");
    // Node 5 starts while node 4 streams: with vnodes at RF 3 their ranges overlap, so node 5
    // stops before it announces anything (its next start would try again).
    let mut fifth = cluster.launch(5);
    let fifth_addr = fifth.addr.to_string();
    await_until("the fifth node refuses to join and exits", || !fifth.is_running());
    for i in 1..=3 {
        let status = admin_status(cluster.addr(i)).expect("admin status");
        assert!(
            !rows(&status).iter().any(|r| r["address"] == fifth_addr && r["tokens"].as_u64() != Some(0)),
            "node {i} knows the refused node's tokens: {status}"
        );
    }
    let new = cluster.addr(4);
    await_until("node 1 lists node 4 UN", || {
        admin_status(cluster.addr(1))
            .is_some_and(|s| rows(&s).iter().any(|r| r["address"] == new.to_string() && r["state"] == "UN"))
    });
    let wrong = wrong_wide(new, &wide, Consistency::One);
    assert!(wrong.is_empty(), "{} rows wrong at ONE through node 4", wrong.len());
}

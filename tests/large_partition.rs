//! One partition of 200,000 rows on a one-shard server (in several SSTables and the MemTable,
//! with deleted rows among them): paging through it a few hundred rows at a time returns every
//! live row exactly once, in order, and `count(*)` counts them, while another client reading
//! an unrelated key of the same shard keeps its latency; and so does a token scan of the
//! table (a SELECT and a `count(*)` without the partition key). Before pages were read from where they
//! stopped, every page re-read the partition from its start bound to its end, and that read
//! held the shard: the other client waited for each one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{batch_ok, connect, query_ok, scratch_dir, Server};
use wire::protocol::{BatchKind, BatchRequest, BatchStatement, Consistency, QueryParams, QueryResult};
use wire::Value;

const ROWS: i32 = 200_000;
const PAGE: u32 = 500;
/// Rows deleted: every DELETED_EVERY-th one.
const DELETED_EVERY: i32 = 997;
/// The worst latency the unrelated key may see. A page of the old code read (and decoded) the
/// partition from where it started to its end: a few hundred ms for the early pages of these
/// 200,000 rows in this build, seconds for the old `count(*)`'s internal pages. A page now
/// reads about its own rows, a few ms, so this leaves room for a busy shared machine.
const WORST_UNRELATED: Duration = Duration::from_millis(150);
/// Paging through the whole partition must end within this (it took minutes before).
const PAGING_DEADLINE: Duration = Duration::from_secs(40);

/// Reads the unrelated key until `stop`; its worst latency and the number of reads.
fn unrelated_reads(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (Duration, usize) {
    let mut client = connect(addr);
    let (mut worst, mut reads) = (Duration::ZERO, 0);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let rows = match client.query("SELECT v FROM big WHERE pk = 1 AND ck = 0") {
            Ok(QueryResult::Rows(rows)) => rows.rows,
            other => panic!("unrelated read: {other:?}"),
        };
        worst = worst.max(started.elapsed());
        reads += 1;
        assert_eq!(rows, vec![vec![Some(Value::Text("other".into()))]]);
    }
    (worst, reads)
}

/// Pages through `query` (`ck, v` rows) PAGE rows at a time until its end or PAGING_DEADLINE
/// after `started`: the clustering keys of partition 0's rows (each checked against its
/// value; partition 1's one row, `other`, is left out) and the number of pages.
fn page_through(client: &mut wire::Client, query: &str, started: Instant) -> (Vec<i32>, usize) {
    let mut seen = Vec::with_capacity(ROWS as usize);
    let mut params = QueryParams { page_size: Some(PAGE), ..QueryParams::default() };
    let mut pages = 0;
    loop {
        let rows = match client.query_with(query, params.clone()) {
            Ok(QueryResult::Rows(rows)) => rows,
            other => panic!("{query}: page {pages}: {other:?}"),
        };
        pages += 1;
        assert!(rows.rows.len() <= PAGE as usize);
        for row in &rows.rows {
            let [Some(Value::Int(ck)), Some(Value::Text(v))] = &row[..] else { panic!("unexpected row {row:?}") };
            if v == "other" {
                continue;
            }
            assert_eq!(*v, format!("v{ck}"));
            seen.push(*ck);
        }
        match rows.paging_state {
            // Past the deadline the latency is checked first, then the missing rows fail.
            Some(_) if started.elapsed() > PAGING_DEADLINE => break,
            Some(state) => params.paging_state = Some(state),
            None => break,
        }
    }
    (seen, pages)
}

#[test]
fn paging_a_large_partition_reads_each_row_once_and_does_not_stall_the_shard() {
    let dir = scratch_dir("large-partition");
    // A small MemTable budget: the partition ends up in several SSTables and the MemTable.
    let server = Server::start(&dir, 1, &["--memtable-budget", "4MiB"]);
    let mut client = connect(server.addr);
    query_ok(&mut client, "CREATE TABLE big (pk int, ck int, v text, PRIMARY KEY (pk, ck))");
    let insert = client.prepare("INSERT INTO big (pk, ck, v) VALUES (?, ?, ?)").expect("prepare");
    for first in (0..ROWS).step_by(1000) {
        let statements = (first..first + 1000)
            .map(|ck| {
                let values = vec![Some(Value::Int(0)), Some(Value::Int(ck)), Some(Value::Text(format!("v{ck}")))];
                BatchStatement::Prepared(insert.id, values)
            })
            .collect();
        batch_ok(
            &mut client,
            BatchRequest { kind: BatchKind::Unlogged, statements, consistency: Consistency::One, timestamp: None },
        );
    }
    for ck in (0..ROWS).step_by(DELETED_EVERY as usize) {
        query_ok(&mut client, &format!("DELETE FROM big WHERE pk = 0 AND ck = {ck}"));
    }
    query_ok(&mut client, "INSERT INTO big (pk, ck, v) VALUES (1, 0, 'other')");
    let want: Vec<i32> = (0..ROWS).filter(|ck| ck % DELETED_EVERY != 0).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (addr, stop) = (server.addr, stop.clone());
        std::thread::spawn(move || unrelated_reads(addr, stop))
    };
    // Every live row once, in order, a page at a time: inside the partition, and in a token
    // scan of the table (which meets the wide partition and the one-row partition 1).
    let started = Instant::now();
    let (seen, pages) = page_through(&mut client, "SELECT ck, v FROM big WHERE pk = 0", started);
    let paging = started.elapsed();
    // count(*) reads the partition in internal pages, between which the shard serves others.
    let counted = match (paging < PAGING_DEADLINE).then(|| client.query("SELECT count(*) FROM big WHERE pk = 0")) {
        Some(Ok(QueryResult::Rows(rows))) => Some(rows.rows),
        None => None,
        Some(other) => panic!("count(*): {other:?}"),
    };
    // A token scan reads the wide partition a page at a time too (it read it whole, once per
    // page that reached it, before).
    let scan_started = Instant::now();
    let (scanned, scan_pages) = page_through(&mut client, "SELECT ck, v FROM big", scan_started);
    let scanning = scan_started.elapsed();
    let counted_table = match (scanning < PAGING_DEADLINE).then(|| client.query("SELECT count(*) FROM big")) {
        Some(Ok(QueryResult::Rows(rows))) => Some(rows.rows),
        None => None,
        Some(other) => panic!("count(*) of the table: {other:?}"),
    };
    stop.store(true, Ordering::Relaxed);
    let (worst, reads) = reader.join().expect("the unrelated reader");
    eprintln!(
        "{pages} pages ({} rows) in {paging:?}; token scan: {scan_pages} pages ({} rows) in {scanning:?}; unrelated \
         key: {reads} reads, worst {worst:?}",
        seen.len(),
        scanned.len()
    );
    assert!(reads > 10, "the unrelated key was read {reads} times");
    assert!(worst <= WORST_UNRELATED, "an unrelated read waited {worst:?} (bound {WORST_UNRELATED:?})");
    assert!(paging < PAGING_DEADLINE, "{pages} pages took {paging:?}, over {PAGING_DEADLINE:?}");
    assert_eq!(seen.len(), want.len(), "rows returned");
    assert!(seen == want, "every live row exactly once, in clustering order");
    assert_eq!(counted, Some(vec![vec![Some(Value::BigInt(want.len() as i64))]]));
    assert!(scanning < PAGING_DEADLINE, "{scan_pages} pages of the token scan took {scanning:?}");
    assert!(scanned == want, "the token scan returns every live row of the partition exactly once, in order");
    assert_eq!(counted_table, Some(vec![vec![Some(Value::BigInt(want.len() as i64 + 1))]]));
    common::stop_cleanly(server);
}

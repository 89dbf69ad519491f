//! One client must not take the node from the others: answers bigger than the frame limit are
//! paged by bytes, silent and idle connections are closed and leave room for `enigmadb admin`,
//! and a client that pipelines large reads and vanishes leaves the server's memory bounded.
//! Each test starts a real `enigmadb server` and watches its memory in /proc/PID/status.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, query_ok, scratch_dir, RawConnection, Server};
use wire::client::{Client, ClientError, ClientOptions};
use wire::frame::{encode_frame, DEFAULT_MAX_FRAME_BYTES};
use wire::protocol::{ErrorCode, QueryParams, QueryResult, Request};
use wire::Value;

const MIB: usize = 1 << 20;

/// Resident memory of process `pid`, bytes (VmRSS of /proc/PID/status).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
    kib * 1024
}

/// Samples the resident memory of `pid` every few milliseconds until dropped; `peak` is the
/// largest seen.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let (peak, stop) = (Arc::new(AtomicU64::new(rss(pid))), Arc::new(AtomicBool::new(false)));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssWatch { peak, stop, thread: Some(thread) }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `check` every 50 ms until it holds or `within` passes; false on timeout.
fn poll_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A blob of `len` bytes that says which key it belongs to.
fn blob(key: i32, len: usize) -> Vec<u8> {
    let mut v = vec![(key % 251) as u8; len];
    v[..4].copy_from_slice(&key.to_be_bytes());
    v
}

/// Creates `big (k int PRIMARY KEY, v blob)` with `rows` rows of `len`-byte blobs.
fn write_big_rows(client: &mut Client, rows: i32, len: usize) {
    query_ok(client, "CREATE TABLE big (k int PRIMARY KEY, v blob)");
    let insert = client.prepare("INSERT INTO big (k, v) VALUES (?, ?)").expect("prepare");
    for k in 0..rows {
        let values = [Some(Value::Int(k)), Some(Value::Blob(blob(k, len)))];
        client.execute(&insert, &values, QueryParams::default()).expect("insert a large row");
    }
}

#[test]
fn select_star_over_200_rows_of_one_mib_pages_by_bytes_under_the_frame_limit() {
    let dir = scratch_dir("limits-big-answer");
    let server = Server::start(&dir, 2, &["--sync-mode", "periodic"]);
    let mut client = connect(server.addr);
    write_big_rows(&mut client, 200, MIB);
    let before = rss(server.pid());
    let watch = RssWatch::start(server.pid());
    // The client refuses any frame over its limit, the server's default: a page that made it
    // here was under it.
    let options = ClientOptions { max_frame_bytes: DEFAULT_MAX_FRAME_BYTES, ..ClientOptions::default() };
    let mut reader = Client::connect_with(server.addr, options).expect("connect");
    let mut pages = reader.query_paged_with("SELECT * FROM big", QueryParams::default()).expect("first page");
    let mut seen = std::collections::BTreeSet::new();
    for row in pages.by_ref() {
        let row = row.expect("a page under the frame limit");
        let (Some(Value::Int(k)), Some(Value::Blob(v))) = (&row[0], &row[1]) else { panic!("row shape") };
        assert!(*v == blob(*k, MIB), "row {k} intact");
        assert!(seen.insert(*k), "row {k} once");
    }
    let fetched = pages.pages_fetched();
    assert_eq!(seen.len(), 200, "every row");
    // 1 MiB of values per page: one large row each.
    assert!(fetched >= 100, "{fetched} pages for 200 MiB of values");
    let growth = watch.peak().saturating_sub(before);
    drop(watch);
    println!(
        "SELECT * of 200 x 1 MiB: {fetched} pages, server RSS {} MiB, +{} MiB at peak",
        before >> 20,
        growth >> 20
    );
    assert!(growth < 160 * MIB as u64, "server RSS grew by {} MiB while paging", growth >> 20);
    // The shell pages through such an answer too (17 MiB of values: over the frame limit).
    let out = common::enigmadb()
        .args([
            "shell",
            "--host",
            &server.addr.to_string(),
            "-e",
            "SELECT k, v FROM big WHERE k IN (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)",
        ])
        .output()
        .expect("running the shell");
    let stdout = common::text(&out.stdout);
    assert!(out.status.success(), "shell: {}", common::text(&out.stderr));
    assert!(stdout.contains("(17 rows)"), "shell printed: {}", &stdout[stdout.len().saturating_sub(300)..]);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_row_larger_than_the_frame_limit_is_a_typed_error_not_a_giant_frame() {
    let dir = scratch_dir("limits-huge-row");
    let server = Server::start(&dir, 1, &["--sync-mode", "periodic", "--max-frame-bytes", "4MiB"]);
    let mut client = connect(server.addr);
    query_ok(&mut client, "CREATE TABLE wide (k int PRIMARY KEY, a blob, b blob)");
    let set_a = client.prepare("UPDATE wide SET a = ? WHERE k = 1").expect("prepare");
    let set_b = client.prepare("UPDATE wide SET b = ? WHERE k = 1").expect("prepare");
    // Each write fits a frame; the row they make (6 MiB of values) does not.
    client.execute(&set_a, &[Some(Value::Blob(vec![1; 3 * MIB]))], QueryParams::default()).expect("a");
    client.execute(&set_b, &[Some(Value::Blob(vec![2; 3 * MIB]))], QueryParams::default()).expect("b");
    let options = ClientOptions { max_frame_bytes: 4 * MIB, ..ClientOptions::default() };
    let mut reader = Client::connect_with(server.addr, options).expect("connect");
    match reader.query("SELECT * FROM wide") {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::Invalid, "{e:?}");
            assert!(e.message.contains("frame limit"), "{}", e.message);
        }
        other => panic!("a 6 MiB row under a 4 MiB frame limit answered {other:?}"),
    }
    // The connection is still good, and a column that fits is readable.
    let Ok(QueryResult::Rows(rows)) = reader.query("SELECT a FROM wide WHERE k = 1") else { panic!("rows") };
    assert_eq!(rows.rows.len(), 1);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `enigmadb admin --host ADDR status` run to completion.
fn admin_status(addr: SocketAddr) -> std::process::Output {
    common::enigmadb()
        .args(["admin", "--host", &addr.to_string(), "--timeout-secs", "30", "status"])
        .output()
        .expect("running enigmadb admin")
}

/// A connection attempt answered with an OVERLOADED error (over a connection bound).
fn refused(addr: SocketAddr) -> bool {
    match Client::connect(addr) {
        Err(ClientError::Server(e)) => e.code == ErrorCode::Overloaded,
        Err(_) => false,
        Ok(_) => false,
    }
}

#[test]
fn a_thousand_silent_connections_lock_out_clients_but_not_admin() {
    let dir = scratch_dir("limits-silent");
    // The handshake timeout is long here: the silent connections stay for the whole test.
    let server = Server::start(&dir, 2, &["--handshake-timeout-ms", "120000"]);
    let silent: Vec<TcpStream> =
        (0..1024).map(|_| TcpStream::connect(server.addr).expect("a silent connection")).collect();
    assert!(poll_until(Duration::from_secs(30), || refused(server.addr)), "the node never filled up");
    let out = admin_status(server.addr);
    assert!(
        out.status.success(),
        "admin status with 1,024 silent connections: {}{}",
        common::text(&out.stdout),
        common::text(&out.stderr)
    );
    assert!(common::text(&out.stdout).contains("UN"), "{}", common::text(&out.stdout));
    // A client that claims nothing gets no reserved place.
    assert!(refused(server.addr), "an ordinary client took a place reserved for admin");
    drop(silent);
    assert!(poll_until(Duration::from_secs(30), || Client::connect(server.addr).is_ok()), "places come back");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// True once the server has closed `stream` (a read sees the end or a reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // An error answer before the close is fine; keep reading.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_half_sent_header_is_closed_after_the_handshake_timeout_and_an_idle_one_after_the_idle_timeout() {
    let dir = scratch_dir("limits-timeouts");
    let server = Server::start(&dir, 1, &["--handshake-timeout-ms", "300", "--idle-timeout-ms", "600"]);
    let mut half = TcpStream::connect(server.addr).expect("connect");
    let mut startup = Vec::new();
    encode_frame(
        &Request::Startup { version: wire::frame::PROTOCOL_VERSION, client: "slow".into() }.to_frame(0),
        &mut startup,
    );
    half.write_all(&startup[..10]).expect("half a header");
    let started = Instant::now();
    assert!(poll_until(Duration::from_secs(20), || closed_by_server(&mut half)), "a half-sent header stayed open");
    println!("half-sent header closed after {:?}", started.elapsed());
    // A started connection that sends nothing is closed after the idle timeout...
    let mut idle = RawConnection::connect(server.addr).expect("connect");
    assert!(idle.startup());
    let started = Instant::now();
    assert!(poll_until(Duration::from_secs(20), || closed_by_server(&mut idle.stream)), "an idle connection stayed");
    assert!(started.elapsed() >= Duration::from_millis(300), "closed before its idle timeout");
    // ...and one that keeps asking stays.
    let mut busy = connect(server.addr);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        busy.options().expect("a connection in use stays open");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connections_from_one_address_are_bounded_and_the_bound_frees_up() {
    let dir = scratch_dir("limits-per-address");
    let server = Server::start(&dir, 1, &["--max-connections-per-address", "4"]);
    let mut four: Vec<Client> = (0..4).map(|_| connect(server.addr)).collect();
    match Client::connect(server.addr) {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::Overloaded);
            assert!(e.message.contains("per address"), "{}", e.message);
        }
        other => panic!("a fifth connection from one address: {:?}", other.map(|_| ())),
    }
    four.pop();
    assert!(poll_until(Duration::from_secs(20), || Client::connect(server.addr).is_ok()), "a place came back");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends `requests` reads of a 1 MiB row without reading one answer, waits until answers pile
/// up unread on its side, then vanishes (closes with answers unread, which resets the
/// connection).
fn greedy_client(addr: SocketAddr, requests: u16) {
    let mut raw = RawConnection::connect(addr).expect("connect");
    assert!(raw.startup());
    let mut bytes = Vec::new();
    for stream in 1..=requests {
        let text = format!("SELECT v FROM big WHERE k = {}", stream % 16);
        let request = Request::Query { text, params: QueryParams::default() };
        encode_frame(&request.to_frame(stream), &mut bytes);
    }
    // A server that stops reading makes this block: give up after a while, as a client that
    // vanishes does.
    raw.stream.set_write_timeout(Some(Duration::from_secs(2))).expect("write timeout");
    let _ = raw.stream.write_all(&bytes);
    // Vanish only once the server is busy answering: a few answers wait unread here.
    raw.stream.set_read_timeout(Some(Duration::from_millis(50))).expect("read timeout");
    let mut peeked = vec![0u8; 4 * MIB];
    let piled_up = poll_until(Duration::from_secs(30), || raw.stream.peek(&mut peeked).is_ok_and(|n| n >= 64 * 1024));
    assert!(piled_up, "the server never answered the greedy client");
}

#[test]
fn greedy_clients_that_vanish_leave_the_server_memory_bounded() {
    let dir = scratch_dir("limits-greedy");
    let server = Server::start(&dir, 2, &["--sync-mode", "periodic"]);
    let mut client = connect(server.addr);
    write_big_rows(&mut client, 16, MIB);
    // Warm up: every row read once, so caches are as full as they get.
    let Ok(QueryResult::Rows(_)) = client.query("SELECT k FROM big") else { panic!("rows") };
    let baseline = rss(server.pid());
    let watch = RssWatch::start(server.pid());
    let clients: Vec<_> = (0..16).map(|_| std::thread::spawn(move || greedy_client(server.addr, 512))).collect();
    for c in clients {
        c.join().expect("greedy client");
    }
    // The server is still answering others.
    let started = Instant::now();
    match client.query("SELECT k FROM big WHERE k = 3") {
        Ok(QueryResult::Rows(rows)) => assert_eq!(rows.rows.len(), 1),
        other => panic!("another client's read after {:?}: {other:?}", started.elapsed()),
    }
    let peak = watch.peak();
    drop(watch);
    let bound = baseline + 48 * MIB as u64;
    let mut last = 0;
    let vanished = Instant::now();
    let settled = poll_until(Duration::from_secs(30), || {
        last = rss(server.pid());
        last < bound
    });
    println!(
        "greedy clients: RSS {} MiB before, {} MiB at peak, {} MiB {:?} after they vanished",
        baseline >> 20,
        peak >> 20,
        last >> 20,
        vanished.elapsed()
    );
    assert!(peak < baseline + 512 * MIB as u64, "peak RSS {} MiB from {} MiB", peak >> 20, baseline >> 20);
    assert!(settled, "RSS stayed at {} MiB after the clients vanished (from {} MiB)", last >> 20, baseline >> 20);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pipelines `rounds` batches of 64 reads of 1 MiB rows and reads every answer; returns how
/// many were answered OVERLOADED.
fn greedy_reader(addr: SocketAddr, rounds: u16) -> usize {
    let mut raw = RawConnection::connect(addr).expect("connect");
    assert!(raw.startup());
    let mut overloaded = 0;
    for round in 0..rounds {
        let mut bytes = Vec::new();
        for stream in 1..=64u16 {
            let text = format!("SELECT v FROM big WHERE k = {}", (stream + round) % 16);
            encode_frame(&Request::Query { text, params: QueryParams::default() }.to_frame(stream), &mut bytes);
        }
        assert!(raw.send_bytes(&bytes), "sending a batch of reads");
        for _ in 0..64 {
            match raw.receive() {
                Some((_, wire::protocol::Response::Result(_))) => {}
                Some((_, wire::protocol::Response::Error(e))) if e.code == ErrorCode::Overloaded => overloaded += 1,
                other => panic!("a greedy read answered {other:?}"),
            }
        }
    }
    overloaded
}

#[test]
fn many_greedy_clients_share_one_answer_budget_while_another_client_is_served() {
    let dir = scratch_dir("limits-answer-budget");
    let flags = ["--sync-mode", "periodic", "--max-answer-bytes-per-shard", "8MiB"];
    let server = Server::start(&dir, 1, &flags);
    let mut client = connect(server.addr);
    write_big_rows(&mut client, 16, MIB);
    let Ok(QueryResult::Rows(_)) = client.query("SELECT k FROM big") else { panic!("rows") };
    let baseline = rss(server.pid());
    let watch = RssWatch::start(server.pid());
    let greedy: Vec<_> = (0..12).map(|_| std::thread::spawn(move || greedy_reader(server.addr, 6))).collect();
    // Another client keeps reading a small value meanwhile: every read is answered, in
    // order, with rows or a typed OVERLOADED, never left hanging.
    let (mut served, mut slowest) = (0, Duration::ZERO);
    while !greedy.iter().all(|g| g.is_finished()) {
        let started = Instant::now();
        match client.query("SELECT k FROM big WHERE k = 3") {
            Ok(QueryResult::Rows(rows)) => {
                assert_eq!(rows.rows.len(), 1);
                served += 1;
            }
            Err(ClientError::Server(e)) if e.code == ErrorCode::Overloaded => {}
            other => panic!("another client's read after {:?}: {other:?}", started.elapsed()),
        }
        slowest = slowest.max(started.elapsed());
    }
    let overloaded: usize = greedy.into_iter().map(|g| g.join().expect("greedy reader")).sum();
    let peak = watch.peak();
    drop(watch);
    println!(
        "12 greedy readers under an 8 MiB answer budget: RSS {} MiB before, {} MiB at peak; {overloaded} of their \
         reads overloaded; the other client served {served} reads, slowest {slowest:?}",
        baseline >> 20,
        peak >> 20
    );
    assert!(served > 0, "the other client was never served");
    // 12 connections x (8 MiB of answers in progress + 4 MiB waiting for the socket) would be
    // about 150 MiB of answers alone, with copies on the way several times that.
    assert!(peak < baseline + 128 * MIB as u64, "peak RSS {} MiB from {} MiB", peak >> 20, baseline >> 20);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The metrics endpoint of a running `enigmadb server`, scraped over HTTP and read back with the
//! text-format reader: request counters match what the test sent, histograms are cumulative,
//! every shard reports its gauges, SSTables are counted per table, and garbage HTTP is refused
//! while the server keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use enigmadb::metrics::text::{self, Kind, Scrape};
use rand::{Rng, SeedableRng};
use wire::Consistency;

/// An HTTP exchange: sends `request` as is and reads until the server closes. Returns the
/// status code (0 when the server closed without answering), the head and the body.
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).expect("read timeout");
    // The server may answer and close before reading everything of a large request. Closing
    // our side tells it no more is coming (it closes without an answer if the head is cut).
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let Some((head, body)) = answer.split_once("\r\n\r\n") else { return (0, answer, String::new()) };
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn scrape(server: &Server) -> Scrape {
    let addr = server.metrics.expect("the server's ready line names its metrics address");
    let (status, head, body) = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(head.contains("Content-Type: text/plain; version=0.0.4"), "{head}");
    text::parse(&body).unwrap_or_else(|e| panic!("scrape does not parse: {e}\n{body}"))
}

/// Requests of statement kind `op` sent with `opcode` at `consistency`.
fn requests(scrape: &Scrape, op: &str, opcode: &str, consistency: Consistency) -> f64 {
    scrape.sum("enigmadb_requests_total", &[("op", op), ("opcode", opcode), ("consistency", consistency.name())])
}

/// Each histogram series' buckets never decrease with `le`, and `+Inf` equals `_count`.
fn assert_histograms_are_cumulative(scrape: &Scrape, name: &str) {
    let (count_name, bucket_name) = (format!("{name}_count"), format!("{name}_bucket"));
    let counts: Vec<_> = scrape.select(&count_name, &[]).collect();
    assert!(!counts.is_empty(), "no {name} series");
    for count in counts {
        let labels: Vec<(&str, &str)> = count.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut buckets: Vec<(f64, f64)> = scrape
            .select(&bucket_name, &labels)
            .filter(|b| b.labels.len() == labels.len() + 1)
            .map(|b| (text_bound(b.label("le").expect("le label")), b.value))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{labels:?}: {buckets:?}");
        assert_eq!(buckets.last().map(|b| (b.0, b.1)), Some((f64::INFINITY, count.value)), "{labels:?}");
    }
}

fn text_bound(le: &str) -> f64 {
    if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().unwrap_or_else(|_| panic!("bad le {le}"))
    }
}

#[test]
fn scrape_counts_requests_latencies_and_every_shards_state() {
    const SHARDS: usize = 2;
    let dir = scratch_dir("metrics-scrape");
    // A first run writes rows that an in-process flush turns into SSTables.
    let server = Server::start(&dir, SHARDS, &[]);
    run_ok(server.addr, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
    let mut client = connect(server.addr);
    for i in 0..200 {
        query_ok(&mut client, &format!("INSERT INTO kv (k, v) VALUES ('old{i}', 'v')"));
    }
    drop(client);
    stop_cleanly(server);
    flush_node(&dir, SHARDS);

    let server = Server::start(&dir, SHARDS, &[]);
    let before = scrape(&server);
    assert_eq!(before.types["enigmadb_requests_total"], Kind::Counter);
    assert_eq!(before.types["enigmadb_request_duration_seconds"], Kind::Histogram);
    let mut client = connect(server.addr);
    let (writes, reads, syntax_errors, executes) = (120, 30, 3, 25);
    for i in 0..writes {
        query_ok(&mut client, &format!("INSERT INTO kv (k, v) VALUES ('k{i}', 'v{i}')"));
    }
    for i in 0..reads {
        query_at(&mut client, &format!("SELECT v FROM kv WHERE k = 'k{i}'"), Consistency::Quorum).expect("read");
    }
    for _ in 0..syntax_errors {
        assert!(query(&mut client, "INSERT INTO").is_err());
    }
    let prepared = client.prepare("SELECT v FROM kv WHERE k = ?").expect("prepare");
    for i in 0..executes {
        execute_rows(&mut client, &prepared, &[Some(wire::Value::Text(format!("k{i}")))]);
    }
    let after = scrape(&server);

    let delta = |op, opcode, consistency| {
        requests(&after, op, opcode, consistency) - requests(&before, op, opcode, consistency)
    };
    // The `op` label is what the statement does; the opcode stays a label of its own. The
    // malformed INSERTs start like writes, so they count as writes.
    assert_eq!(delta("write", "query", Consistency::One), (writes + syntax_errors) as f64);
    assert_eq!(delta("read", "query", Consistency::Quorum), reads as f64);
    assert_eq!(delta("read", "execute", Consistency::One), executes as f64);
    assert_eq!(delta("read", "query", Consistency::One), 0.0);
    let prepares = after.sum("enigmadb_requests_total", &[("op", "other"), ("opcode", "prepare")]);
    assert_eq!(prepares, 1.0, "prepare requests carry no consistency label");
    let prepare_series = || after.select("enigmadb_requests_total", &[("opcode", "prepare")]);
    assert!(prepare_series().all(|s| s.label("consistency").is_none()));
    let errors = |s: &Scrape| {
        s.sum("enigmadb_request_errors_total", &[("op", "write"), ("opcode", "query"), ("error", "syntax_error")])
    };
    assert_eq!(errors(&after) - errors(&before), syntax_errors as f64);
    assert_histograms_are_cumulative(&after, "enigmadb_request_duration_seconds");
    let quorum_latencies = after.sum(
        "enigmadb_request_duration_seconds_count",
        &[("op", "read"), ("opcode", "query"), ("consistency", "QUORUM")],
    );
    assert_eq!(quorum_latencies, reads as f64);

    // Per table: reads (point reads of QUERY and EXECUTE), writes, and latency summaries.
    let table = |s: &Scrape, name: &str| s.sum(name, &[("table", "kv")]);
    let table_delta = |name| table(&after, name) - table(&before, name);
    assert_eq!(table_delta("enigmadb_table_reads_total"), (reads + executes) as f64);
    assert_eq!(table_delta("enigmadb_table_writes_total"), writes as f64);
    assert_eq!(table(&after, "enigmadb_table_tombstones_scanned_total"), 0.0, "nothing deleted");
    for name in ["enigmadb_table_read_latency_seconds", "enigmadb_table_write_latency_seconds"] {
        assert_eq!(after.types[name], Kind::Summary, "{name}");
        let count = table(&after, &format!("{name}_count"));
        assert!(count > 0.0, "{name}");
        let quantile = |q| after.sum(name, &[("table", "kv"), ("quantile", q)]);
        let (p50, p99) = (quantile("0.5"), quantile("0.99"));
        assert!(p50 > 0.0 && p50 <= p99 && p99 < 10.0, "{name}: p50 {p50} p99 {p99}");
    }
    assert_eq!(table(&after, "enigmadb_table_read_latency_seconds_count"), table(&after, "enigmadb_table_reads_total"));
    // A single node gossips with nobody.
    assert_eq!(after.types["enigmadb_gossip_peers"], Kind::Gauge);
    assert_eq!(after.sum("enigmadb_gossip_peers", &[]), 0.0);
    assert_eq!(after.select("enigmadb_gossip_peer_up", &[]).count(), 0);
    assert!(after.sum("enigmadb_gossip_generation", &[]) >= 1.0);
    assert!(after.sum("enigmadb_client_connections", &[]) >= 1.0);

    for name in [
        "enigmadb_memtable_bytes",
        "enigmadb_flushes_total",
        "enigmadb_wal_syncs_total",
        "enigmadb_wal_writebacks_total",
        "enigmadb_wal_written_bytes_total",
        "enigmadb_compactions_pending",
        "enigmadb_block_cache_hits_total",
        "enigmadb_block_cache_misses_total",
    ] {
        let mut shards: Vec<String> = after.select(name, &[]).map(|s| s.label("shard").unwrap().to_owned()).collect();
        shards.sort();
        assert_eq!(shards, ["0", "1"], "{name}");
    }
    assert_eq!(after.sum("enigmadb_shards", &[]), SHARDS as f64);
    assert!(after.sum("enigmadb_wal_records_total", &[]) >= writes as f64);
    assert!(after.sum("enigmadb_memtable_bytes", &[]) > 0.0, "the writes sit in MemTables");
    // The first run's rows were flushed before this run: the table has SSTables on disk.
    assert!(after.sum("enigmadb_sstables", &[("table", "kv")]) >= 1.0);
    assert!(after.sum("enigmadb_sstable_bytes", &[("table", "kv")]) > 0.0);
    drop(client);
    stop_cleanly(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn garbage_http_is_refused_and_the_server_keeps_serving() {
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = scratch_dir("metrics-garbage");
    let server = Server::start(&dir, 1, &[]);
    let addr = server.metrics.expect("metrics address");
    let status = |request: &[u8]| http(addr, request).0;
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 404);
    assert_eq!(status(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 405);
    assert_eq!(status(b"GET /metrics HTTP/3\r\n\r\n"), 505);
    assert_eq!(status(b"GET /metrics\r\n\r\n"), 400);
    assert_eq!(status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"), 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(64 * 1024));
    assert_eq!(status(huge.as_bytes()), 431);
    let (code, head, _) = http(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(code, 200, "{head}");
    for _ in 0..50 {
        let len = rng.gen_range(1..2048);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if rng.gen_bool(0.5) {
            bytes.extend_from_slice(b"\r\n\r\n");
        }
        // Answered 400/431 or closed; either way the server must not fall over.
        let code = status(&bytes);
        assert!(matches!(code, 0 | 400 | 431 | 505), "seed {seed}: {code}");
    }
    // Half a request, then the peer goes away.
    let mut half = TcpStream::connect(addr).expect("connect");
    half.write_all(b"GET /metr").expect("write");
    drop(half);
    // Clients keep being served and the endpoint keeps answering.
    run_ok(server.addr, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
    run_ok(server.addr, "INSERT INTO kv (k, v) VALUES ('a', 'b')");
    let scraped = scrape(&server);
    assert!(requests(&scraped, "schema", "query", Consistency::One) >= 1.0);
    assert!(requests(&scraped, "write", "query", Consistency::One) >= 1.0);
    stop_cleanly(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_can_be_turned_off() {
    let dir = scratch_dir("metrics-off");
    let server = Server::start(&dir, 1, &["--metrics-listen", "off"]);
    assert_eq!(server.metrics, None);
    run_ok(server.addr, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
    stop_cleanly(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_slow_scraper_is_dropped_after_the_deadline() {
    const DEADLINE: Duration = Duration::from_millis(1500);
    let dir = scratch_dir("metrics-slow");
    let config = dir.join("metrics.toml");
    std::fs::write(&config, format!("metrics_timeout_ms = {}\n", DEADLINE.as_millis())).expect("config file");
    let server = Server::start(&dir.join("data"), 1, &["--config", config.to_str().expect("a UTF-8 path")]);
    let addr = server.metrics.expect("metrics address");
    let mut idle = TcpStream::connect(addr).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let started = std::time::Instant::now();
    // Half a request head, then silence: the deadline covers the whole connection.
    idle.write_all(b"GET /metrics HTTP/1.1\r\n").expect("write");
    let mut buf = [0u8; 16];
    // The server closes the connection (read returns 0) without an answer, at the deadline:
    // not before it, and well before a scraper's own timeout.
    assert_eq!(idle.read(&mut buf).expect("closed, not timed out"), 0);
    let waited = started.elapsed();
    assert!(waited >= DEADLINE - Duration::from_millis(100), "dropped early, after {waited:?}");
    assert!(waited < DEADLINE * 4, "dropped late, after {waited:?}");
    // The endpoint keeps answering other scrapes.
    assert_eq!(http(addr, b"GET /metrics HTTP/1.1\r\n\r\n").0, 200);
    stop_cleanly(server);
    let _ = std::fs::remove_dir_all(&dir);
}

//! End to end through a real `enigmadb server` process on 127.0.0.x, driven with the client
//! library (and raw frames where a well-behaved client cannot go): every statement kind, typed
//! errors, paging across a 100,000-row scan, batches, routing on two shards, and hostile
//! connections next to a good client.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use shards::sstable::inspect::{Event, InspectedSstable};
use wire::client::ClientError;
use wire::frame::{encode_frame, Frame, HEADER_BYTES};
use wire::protocol::{BatchKind, BatchRequest, BatchStatement, ErrorCode, QueryParams, QueryResult, Request, Response};
use wire::{token_of, Consistency, Value};

use common::Server;

fn text(s: &str) -> Option<Value> {
    Some(Value::Text(s.to_owned()))
}

fn int(v: i32) -> Option<Value> {
    Some(Value::Int(v))
}

#[test]
fn every_statement_kind_answers_through_the_client_library() {
    let dir = common::scratch_dir("e2e-statements");
    let server = Server::start(&dir, 1, &[]);
    let mut client = common::connect(server.addr);

    let created = common::query(
        &mut client,
        "CREATE TABLE events (tenant text, day int, at timestamp, body blob, score double, ok boolean, n bigint, \
         PRIMARY KEY (tenant, day, at)) WITH CLUSTERING ORDER BY (day DESC, at ASC) AND gc_grace_seconds = 60",
    );
    assert_eq!(created, Ok(QueryResult::SchemaChange { change: "CREATED".into(), table: "events".into() }));
    let again = common::query(&mut client, "CREATE TABLE IF NOT EXISTS events (k text PRIMARY KEY)");
    assert_eq!(again, Ok(QueryResult::Void));

    for day in 1..=3 {
        common::query_ok(
            &mut client,
            &format!(
                "INSERT INTO events (tenant, day, at, body, score, ok, n) \
                 VALUES ('acme', {day}, '2024-01-0{day}T03:04:05.678Z', 0xcafe0{day}, {day}.5, true, {day}000000000)"
            ),
        );
    }
    common::query_ok(&mut client, "UPDATE events SET ok = false, body = null WHERE tenant = 'acme' AND day = 2 AND at = '2024-01-02T03:04:05.678Z'");
    common::query_ok(&mut client, "INSERT INTO events (tenant, day, at, n) VALUES ('other', 1, 0, 7) USING TTL 3600");

    // Clustering order DESC on day; every type comes back as it was written.
    let (columns, rows, _) =
        common::select_all(&mut client, "SELECT day, at, body, score, ok, n FROM events WHERE tenant = 'acme'", 100);
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["day", "at", "body", "score", "ok", "n"]);
    let days: Vec<_> = rows.iter().map(|r| r[0].clone()).collect();
    assert_eq!(days, [int(3), int(2), int(1)]);
    assert_eq!(
        rows[1],
        vec![
            int(2),
            Some(Value::Timestamp(1_704_164_645_678)),
            None,
            Some(Value::Double(2.5)),
            Some(Value::Boolean(false)),
            Some(Value::BigInt(2_000_000_000))
        ]
    );
    assert_eq!(rows[2][2], Some(Value::Blob(vec![0xca, 0xfe, 0x01])));

    // Restrictions on clustering columns, LIMIT, count(*), TTL() of the expiring row.
    let (_, rows, _) =
        common::select_all(&mut client, "SELECT day FROM events WHERE tenant = 'acme' AND day >= 2 LIMIT 1", 100);
    assert_eq!(rows, vec![vec![int(3)]]);
    let (_, rows, _) = common::select_all(&mut client, "SELECT count(*) FROM events", 100);
    assert_eq!(rows, vec![vec![Some(Value::BigInt(4))]]);
    let (_, rows, _) = common::select_all(&mut client, "SELECT TTL(n) FROM events WHERE tenant = 'other'", 100);
    let Some(Value::Int(ttl)) = rows[0][0] else { panic!("TTL() gave {rows:?}") };
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");

    // DELETE of a column, a row, and a whole partition.
    common::query_ok(
        &mut client,
        "DELETE score FROM events WHERE tenant = 'acme' AND day = 3 AND at = '2024-01-03T03:04:05.678Z'",
    );
    common::query_ok(
        &mut client,
        "DELETE FROM events WHERE tenant = 'acme' AND day = 1 AND at = '2024-01-01T03:04:05.678Z'",
    );
    common::query_ok(&mut client, "DELETE FROM events WHERE tenant = 'other'");
    let (_, rows, _) = common::select_all(&mut client, "SELECT tenant, day, score FROM events", 100);
    assert_eq!(rows, vec![vec![text("acme"), int(3), None], vec![text("acme"), int(2), Some(Value::Double(2.5))]]);

    // A CQL batch, and prepared statements with bound values.
    common::query_ok(
        &mut client,
        "BEGIN BATCH INSERT INTO events (tenant, day, at) VALUES ('b', 1, 1); \
         UPDATE events SET n = 5 WHERE tenant = 'b' AND day = 1 AND at = 1; APPLY BATCH",
    );
    let prepared = client.prepare("SELECT n FROM events WHERE tenant = ? AND day = ?").expect("PREPARE");
    let rows = common::execute_rows(&mut client, &prepared, &[text("b"), int(1)]);
    assert_eq!(rows, vec![vec![Some(Value::BigInt(5))]]);

    // DESCRIBE.
    let (_, rows, _) = common::select_all(&mut client, "DESCRIBE TABLES", 100);
    assert_eq!(rows, vec![vec![text("events")]]);
    let (_, rows, _) = common::select_all(&mut client, "DESCRIBE TABLE events", 100);
    let Some(Value::Text(create)) = &rows[0][0] else { panic!("DESCRIBE TABLE gave {rows:?}") };
    assert!(
        create.starts_with("CREATE TABLE events (") && create.contains("CLUSTERING ORDER BY (day DESC, at ASC)"),
        "{create}"
    );
    assert!(create.contains("gc_grace_seconds = 60"), "{create}");

    // DROP TABLE IF EXISTS of a table that does not exist is not an error; DROP of one is.
    assert_eq!(common::query(&mut client, "DROP TABLE IF EXISTS nothing"), Ok(QueryResult::Void));
    let err = common::query(&mut client, "DROP TABLE nothing").unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid, "{err}");
    drop(client);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// Clients tell "exists" from "malformed": Cassandra answers AlreadyExists (0x2400).
#[test]
fn creating_an_existing_table_answers_already_exists() {
    let dir = common::scratch_dir("e2e-exists");
    let server = Server::start(&dir, 1, &[]);
    let mut client = common::connect(server.addr);
    common::query_ok(&mut client, "CREATE TABLE kv (k text PRIMARY KEY, v int)");
    let err = common::query(&mut client, "CREATE TABLE kv (k text PRIMARY KEY)").unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists, "{err}");
    assert_eq!(common::query(&mut client, "CREATE TABLE IF NOT EXISTS kv (k text PRIMARY KEY)"), Ok(QueryResult::Void));
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn errors_are_typed_and_the_connection_survives_them() {
    let dir = common::scratch_dir("e2e-errors");
    let server = Server::start(&dir, 1, &["--max-frame-bytes", "64KiB"]);
    let mut client = common::connect(server.addr);
    common::query_ok(&mut client, "CREATE TABLE kv (k text PRIMARY KEY, v int)");

    let err = common::query(&mut client, "SELECT * FORM kv").unwrap_err();
    assert_eq!(err.code, ErrorCode::Syntax);
    assert_eq!(err.message, "line 1:10 mismatched input 'FORM' expecting 'FROM'");
    let err = common::query(&mut client, "INSERT INTO kv (k, v)\nVALUES ('a', 1").unwrap_err();
    assert_eq!(err.code, ErrorCode::Syntax);
    assert!(err.message.starts_with("line 2:"), "{err}");

    let err = common::query(&mut client, "SELECT * FROM nope").unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid);
    assert!(err.message.contains("nope"), "{err}");
    let err = common::query(&mut client, "INSERT INTO kv (k, v) VALUES ('a', 'one')").unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid);
    assert!(err.message.contains("Invalid STRING constant ('one') for \"v\" of type int"), "{err}");
    let err = common::query(&mut client, "INSERT INTO kv (k, w) VALUES ('a', 1)").unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid, "{err}");
    let err = common::query_at(&mut client, "SELECT * FROM kv", Consistency::Two).unwrap_err();
    assert!(matches!(err.code, ErrorCode::Unavailable { required: 2, alive: 1, .. }), "{err}");

    // A statement larger than the server's frame limit: a typed error, not a hang.
    let huge = format!("INSERT INTO kv (k, v) VALUES ('{}', 1)", "x".repeat(100 << 10));
    match client.query(&huge) {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::Protocol);
            assert!(e.message.contains("exceeds the frame limit"), "{e}");
        }
        // The server closes the connection after the error; with the rest of the frame unread
        // the close may arrive as a reset before the error does.
        Err(ClientError::Io(_) | ClientError::Closed) => {}
        other => panic!("a 100 KiB frame against a 64 KiB limit: {other:?}"),
    }

    // The same connection (or a fresh one, if the client had to drop it) still works.
    let mut client = common::connect(server.addr);
    common::query_ok(&mut client, "INSERT INTO kv (k, v) VALUES ('a', 1)");
    let (_, rows, _) = common::select_all(&mut client, "SELECT v FROM kv WHERE k = 'a'", 10);
    assert_eq!(rows, vec![vec![int(1)]]);

    // On the wire: an oversized frame gets a protocol error on its stream, then the server
    // closes the connection (the byte stream can no longer be delimited).
    let mut raw = common::RawConnection::connect(server.addr).expect("raw connection");
    assert!(raw.startup());
    let mut header = Vec::new();
    encode_frame(&Frame::new(wire::Opcode::Query, 9, vec![0; 1 << 20]), &mut header);
    assert!(raw.send_bytes(&header[..HEADER_BYTES]));
    match raw.receive() {
        Some((9, Response::Error(e))) => {
            assert_eq!(e.code, ErrorCode::Protocol);
            assert!(e.message.contains("exceeds the frame limit of 65536 bytes"), "{e}");
        }
        other => panic!("oversized frame answered with {other:?}"),
    }
    assert_eq!(raw.receive(), None, "the connection is closed after a fatal framing error");

    // A request before STARTUP, and a body that does not decode: protocol errors, and the
    // connection goes on.
    let mut raw = common::RawConnection::connect(server.addr).expect("raw connection");
    assert!(raw.send(&Request::Query { text: "SELECT * FROM kv".into(), params: QueryParams::default() }, 3));
    assert!(
        matches!(raw.receive(), Some((3, Response::Error(e))) if e.code == ErrorCode::Protocol && e.message.contains("STARTUP"))
    );
    assert!(raw.startup());
    let mut bad_body = Vec::new();
    encode_frame(&Frame::new(wire::Opcode::Query, 4, vec![1, 2, 3]), &mut bad_body);
    assert!(raw.send_bytes(&bad_body));
    assert!(matches!(raw.receive(), Some((4, Response::Error(e))) if e.code == ErrorCode::Protocol));
    assert!(
        raw.send(&Request::Query { text: "SELECT v FROM kv WHERE k = 'a'".into(), params: QueryParams::default() }, 5)
    );
    assert!(matches!(raw.receive(), Some((5, Response::Result(QueryResult::Rows(r)))) if r.rows == vec![vec![int(1)]]));
    drop(client);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// 1,000 partitions of 100 rows, flushed through a small MemTable into several SSTables, read
/// back with a full-table SELECT in pages: every row exactly once, partitions in token order,
/// rows in clustering order; and the shell pages through the same scan.
#[test]
fn paging_walks_a_100000_row_scan_once_in_token_order() {
    const PARTITIONS: i32 = 1_000;
    const ROWS_PER_PARTITION: i32 = 100;
    let dir = common::scratch_dir("e2e-paging");
    let server = Server::start(&dir, 2, &["--memtable-budget", "1MiB"]);
    let mut client = common::connect(server.addr);
    common::query_ok(&mut client, "CREATE TABLE big (p text, c int, v text, PRIMARY KEY (p, c))");
    let started = Instant::now();
    for p in 0..PARTITIONS {
        // One partition per batch: one shard, applied atomically.
        let statements = (0..ROWS_PER_PARTITION)
            .map(|c| {
                BatchStatement::Query(
                    "INSERT INTO big (p, c, v) VALUES (?, ?, ?)".into(),
                    vec![text(&format!("p{p}")), int(c), text(&format!("value-{p}-{c}"))],
                )
            })
            .collect();
        common::batch_ok(
            &mut client,
            BatchRequest { kind: BatchKind::Logged, statements, consistency: Consistency::One, timestamp: None },
        );
    }
    eprintln!("inserted {} rows in {:?}", PARTITIONS * ROWS_PER_PARTITION, started.elapsed());

    let started = Instant::now();
    let (_, rows, pages) = common::select_all(&mut client, "SELECT p, c, v FROM big", 1_000);
    eprintln!("scanned {} rows in {pages} pages in {:?}", rows.len(), started.elapsed());
    assert_eq!(rows.len(), (PARTITIONS * ROWS_PER_PARTITION) as usize);
    assert!(pages >= 100, "{pages} pages of at most 1000 rows");
    let mut seen = HashSet::new();
    let mut last: Option<(i64, String, i32)> = None;
    for row in &rows {
        let [Some(Value::Text(p)), Some(Value::Int(c)), Some(Value::Text(v))] = &row[..] else { panic!("row {row:?}") };
        assert_eq!(v, &format!("value-{}-{c}", &p[1..]));
        assert!(seen.insert((p.clone(), *c)), "row ({p}, {c}) returned twice");
        let here = (token_of(p.as_bytes()), p.clone(), *c);
        if let Some(before) = &last {
            assert!(*before < here, "{before:?} came before {here:?}: not in token, clustering order");
        }
        last = Some(here);
    }

    // A page size that does not divide the partition, through one partition.
    let (_, rows, pages) = common::select_all(&mut client, "SELECT c FROM big WHERE p = 'p7'", 7);
    assert_eq!(rows, (0..ROWS_PER_PARTITION).map(|c| vec![int(c)]).collect::<Vec<_>>());
    assert_eq!(pages, (ROWS_PER_PARTITION as usize).div_ceil(7));

    // The shell fetches page after page and counts them all.
    let out = common::enigmadb()
        .args(["shell", "--host", &server.addr.to_string(), "-e", "PAGING 5000; SELECT p, c FROM big;"])
        .output()
        .expect("running the shell");
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let stdout = common::text(&out.stdout);
    assert!(stdout.trim_end().ends_with("(100000 rows)"), "{}", &stdout[stdout.len().saturating_sub(300)..]);
    // Data lines are `pNNN | c`; headers (`p | c`) do not have a number after the bar.
    let data_lines =
        stdout.lines().filter(|l| l.split('|').nth(1).is_some_and(|c| c.trim().parse::<i32>().is_ok())).count();
    assert_eq!(data_lines, 100_000);
    drop(client);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn batches_apply_every_statement_or_none() {
    let dir = common::scratch_dir("e2e-batches");
    let server = Server::start(&dir, 1, &[]);
    let mut client = common::connect(server.addr);
    common::query_ok(&mut client, "CREATE TABLE kv (k text PRIMARY KEY, v int)");

    // A protocol batch mixing text and prepared statements with bound values, and a
    // client-given timestamp.
    let prepared = client.prepare("INSERT INTO kv (k, v) VALUES (?, ?)").expect("PREPARE");
    let batch = BatchRequest {
        kind: BatchKind::Logged,
        statements: vec![
            BatchStatement::Query("INSERT INTO kv (k, v) VALUES ('a', 1)".into(), vec![]),
            BatchStatement::Prepared(prepared.id, vec![text("b"), int(2)]),
            BatchStatement::Query("UPDATE kv SET v = ? WHERE k = ?".into(), vec![int(3), text("c")]),
        ],
        consistency: Consistency::One,
        timestamp: Some(1_000),
    };
    common::batch_ok(&mut client, batch);
    assert_eq!(
        common::key_ints(&mut client, "kv"),
        BTreeMap::from([("a".into(), 1), ("b".into(), 2), ("c".into(), 3)])
    );
    let (_, rows, _) = common::select_all(&mut client, "SELECT writetime(v) FROM kv WHERE k = 'b'", 10);
    assert_eq!(rows, vec![vec![Some(Value::BigInt(1_000))]]);

    // One bad statement (unknown column) fails the whole batch: nothing of it is applied.
    let batch = BatchRequest {
        kind: BatchKind::Unlogged,
        statements: vec![
            BatchStatement::Query("INSERT INTO kv (k, v) VALUES ('d', 4)".into(), vec![]),
            BatchStatement::Query("INSERT INTO kv (k, nope) VALUES ('e', 5)".into(), vec![]),
        ],
        consistency: Consistency::One,
        timestamp: None,
    };
    let err = client.batch(batch).expect_err("a batch with an unknown column");
    assert_eq!(common::server_error(err).code, ErrorCode::Invalid);
    // A SELECT is not allowed in a batch.
    let batch = BatchRequest {
        kind: BatchKind::Logged,
        statements: vec![BatchStatement::Query("SELECT * FROM kv".into(), vec![])],
        consistency: Consistency::One,
        timestamp: None,
    };
    assert_eq!(common::server_error(client.batch(batch).expect_err("SELECT in a batch")).code, ErrorCode::Invalid);
    // A CQL batch with a bad value: nothing applied either.
    let err = common::query(
        &mut client,
        "BEGIN BATCH INSERT INTO kv (k, v) VALUES ('f', 6); INSERT INTO kv (k, v) VALUES ('g', 'x'); APPLY BATCH",
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::Invalid);
    assert_eq!(common::key_ints(&mut client, "kv").len(), 3, "no statement of a failed batch is applied");

    // An older timestamp loses to the newer write, whatever the order they arrive in.
    common::query_ok(&mut client, "INSERT INTO kv (k, v) VALUES ('b', 20) USING TIMESTAMP 500");
    assert_eq!(common::key_ints(&mut client, "kv")["b"], 2);
    drop(client);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// On two shards, every row is stored by the shard whose vnodes own its token (read back from
/// each shard's SSTables after the server stopped), and a full scan through the server returns
/// every row once, in token order.
#[test]
fn two_shards_route_rows_by_token_and_scan_each_once_in_token_order() {
    const KEYS: usize = 2_000;
    let dir = common::scratch_dir("e2e-routing");
    let server = Server::start(&dir, 2, &[]);
    let mut client = common::connect(server.addr);
    common::query_ok(&mut client, "CREATE TABLE routed (k text PRIMARY KEY, v int)");
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100) {
        let statements = chunk
            .iter()
            .map(|&i| {
                BatchStatement::Query(
                    "INSERT INTO routed (k, v) VALUES (?, ?)".into(),
                    vec![text(&format!("key{i}")), int(i as i32)],
                )
            })
            .collect();
        common::batch_ok(
            &mut client,
            BatchRequest { kind: BatchKind::Unlogged, statements, consistency: Consistency::One, timestamp: None },
        );
    }
    let (_, rows, _) = common::select_all(&mut client, "SELECT k, token(k) FROM routed", 300);
    assert_eq!(rows.len(), KEYS);
    let mut tokens = Vec::new();
    let mut keys = HashSet::new();
    for row in &rows {
        let [Some(Value::Text(k)), Some(Value::BigInt(t))] = &row[..] else { panic!("row {row:?}") };
        assert_eq!(*t, token_of(k.as_bytes()), "token({k})");
        assert!(keys.insert(k.clone()), "{k} returned twice");
        tokens.push(*t);
    }
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "scan not in token order");
    drop(client);
    common::stop_cleanly(server);

    // Each shard's SSTables hold only keys whose token that shard owns, and together all keys.
    let ring = shards::node_meta::NodeMeta::load_or_create(&dir, 2, 8).expect("node.meta").local_ring();
    common::flush_node(&dir, 2);
    let mut found = HashSet::new();
    for shard in 0..2u16 {
        let sstables = dir.join(format!("shard-{shard:03}")).join(shards::manifest::SSTABLE_DIR);
        let mut partitions = 0;
        for file in std::fs::read_dir(&sstables).expect("sstable dir") {
            let sstable = InspectedSstable::open(&file.expect("dir entry").path()).expect("an SSTable");
            sstable
                .walk(|event| {
                    if let Event::Partition { key, .. } = event {
                        assert_eq!(
                            *ring.owner(key.token()),
                            shard,
                            "a key of token {} stored by shard {shard}",
                            key.token()
                        );
                        assert!(found.insert(key.token()), "token {} stored twice", key.token());
                        partitions += 1;
                    }
                    Ok(())
                })
                .expect("walking an SSTable");
        }
        eprintln!("shard {shard}: {partitions} partitions");
        assert!(partitions > 0, "shard {shard} owns no key of {KEYS}: the ring is lopsided or routing is broken");
    }
    assert_eq!(found.len(), KEYS);
    std::fs::remove_dir_all(&dir).ok();
}

/// 1,000 connections open at once, each sending garbage of one kind or another; meanwhile a
/// good client writes and reads and gets every answer right. Afterwards the server still
/// serves and stops cleanly.
#[test]
fn a_thousand_garbage_connections_leave_a_good_client_working() {
    const CONNECTIONS: usize = 1_000;
    let seed: u64 =
        std::env::var("ENIGMADB_GARBAGE_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("garbage connections: seed {seed} (ENIGMADB_GARBAGE_SEED={seed} replays it)");
    let dir = common::scratch_dir("e2e-garbage");
    let server = Server::start(&dir, 1, &[]);
    let addr = server.addr;
    let mut client = common::connect(addr);
    common::query_ok(&mut client, "CREATE TABLE kv (k text PRIMARY KEY, v int)");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let good = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n < 50 {
                common::query_ok(&mut client, &format!("INSERT INTO kv (k, v) VALUES ('k{n}', {n})"));
                let (_, rows, _) = common::select_all(&mut client, &format!("SELECT v FROM kv WHERE k = 'k{n}'"), 10);
                assert_eq!(rows, vec![vec![int(n)]], "good client, write {n}");
                n += 1;
            }
            n
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut connections: Vec<common::RawConnection> =
        (0..CONNECTIONS).map(|_| common::RawConnection::connect(addr).expect("opening a connection")).collect();
    let mut kinds = [0usize; 6];
    for conn in &mut connections {
        let kind = rng.gen_range(0..kinds.len());
        kinds[kind] += 1;
        // A send may fail once the server has closed the connection: that is an answer too.
        let _ = conn.send_bytes(&garbage(kind, &mut rng));
    }
    // Every connection gets a protocol error or is closed; none is left hanging.
    let deadline = Instant::now() + Duration::from_secs(120);
    for conn in &mut connections {
        conn.stream
            .set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .ok();
        match conn.receive() {
            None => {}
            Some((_, Response::Error(e))) => assert_eq!(e.code, ErrorCode::Protocol, "{e}"),
            Some(other) => panic!("garbage answered with {other:?}"),
        }
    }
    drop(connections);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let good_writes = good.join().expect("the good client");
    eprintln!("garbage kinds {kinds:?}; the good client did {good_writes} writes and reads meanwhile");

    let mut client = common::connect(addr);
    assert_eq!(common::key_ints(&mut client, "kv").len(), good_writes as usize);
    drop(client);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

/// Offsets in the frame header (docs/PROTOCOL.md, "Frames").
const OPCODE_AT: usize = 5;
const BODY_LEN_AT: usize = 12;
const HEADER_CRC_AT: usize = 20;

/// Recomputes the header checksum after a test edited header bytes, so the edit itself is what
/// the server sees.
fn reseal_header(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[..HEADER_CRC_AT]);
    bytes[HEADER_CRC_AT..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// One kind of bad input: random bytes, a foreign protocol, a header with a broken checksum,
/// an oversized declared length, a valid header with an unknown opcode, or a good frame whose
/// body is random.
fn garbage(kind: usize, rng: &mut impl Rng) -> Vec<u8> {
    let len = rng.gen_range(1..1024);
    let mut random = |n: usize| (0..n).map(|_| rng.gen()).collect::<Vec<u8>>();
    let frame = |opcode: wire::Opcode, body: Vec<u8>| {
        let mut out = Vec::new();
        encode_frame(&Frame::new(opcode, 1, body), &mut out);
        out
    };
    match kind {
        0 => random(len),
        1 => b"GET / HTTP/1.1\r\nHost: enigmadb\r\n\r\n".to_vec(),
        2 => {
            let mut bytes = frame(wire::Opcode::Options, Vec::new());
            bytes[HEADER_CRC_AT] ^= 0xFF;
            bytes
        }
        3 => {
            let mut bytes = frame(wire::Opcode::Query, Vec::new());
            bytes[BODY_LEN_AT..BODY_LEN_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            reseal_header(&mut bytes);
            bytes
        }
        4 => {
            let mut bytes = frame(wire::Opcode::Query, random(16));
            bytes[OPCODE_AT] = 0x3F;
            reseal_header(&mut bytes);
            bytes
        }
        _ => {
            let body = random(64);
            frame(wire::Opcode::Query, body)
        }
    }
}

/// Clients that vanish while big answers are still being written (the socket reset under the
/// server's write) cost the server only those connections: the write fails with EPIPE or
/// ECONNRESET, never a SIGPIPE that would kill the process.
#[test]
fn clients_vanishing_mid_answer_leave_the_server_running() {
    const ROWS: usize = 1_000;
    const VANISHING: usize = 10;
    const QUERIES_EACH: u16 = 20;
    let dir = common::scratch_dir("e2e-vanishing");
    let mut server = Server::start(&dir, 1, &[]);
    let mut client = common::connect(server.addr);
    common::query_ok(&mut client, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
    let value = "x".repeat(200);
    for n in 0..ROWS {
        common::query_ok(&mut client, &format!("INSERT INTO kv (k, v) VALUES ('k{n}', '{value}')"));
    }
    let params = QueryParams { page_size: Some(ROWS as u32), ..QueryParams::default() };
    for _ in 0..VANISHING {
        let mut raw = common::RawConnection::connect(server.addr).expect("raw connection");
        assert!(raw.startup(), "STARTUP answered (no answer: the server died)");
        for stream in 1..=QUERIES_EACH {
            // A send may fail once the server noticed the reset: that is fine here.
            let _ = raw.send(&Request::Query { text: "SELECT * FROM kv".into(), params: params.clone() }, stream);
        }
        // Closing with unread answers in the receive buffer resets the connection.
        drop(raw);
    }
    // Wait until the server has noticed every vanished client: only `client` is left.
    let metrics = server.metrics.expect("the metrics endpoint");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while common::scrape(metrics).sum("enigmadb_client_connections", &[]) > 1.0 {
        assert!(server.is_running(), "the server died after clients vanished mid-answer");
        assert!(std::time::Instant::now() < deadline, "the vanished clients' connections are still served");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.is_running(), "the server died after clients vanished mid-answer");
    let stored = common::key_values(server.addr, "kv");
    assert_eq!(stored.len(), ROWS, "every row still served");
    assert!(stored.values().all(|v| *v == value));
    drop(client);
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

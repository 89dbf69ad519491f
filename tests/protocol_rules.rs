//! docs/PROTOCOL.md against a real server, on the details a client may get wrong: stream 0 and
//! a stream id still in flight are connection-level errors, STARTUP is answered once, write
//! timestamps below 0 are refused, a length past the end of a message is reported as such
//! (not against an internal bound), the replication factor's error states its real range,
//! and a node whose schema catalog is missing names the file instead of starting.

mod common;

use common::*;
use wire::frame::{encode_frame, Frame, PROTOCOL_VERSION};
use wire::protocol::{AdminRequest, ErrorCode, ErrorResponse, QueryParams, QueryResult, Request, Response};
use wire::Opcode;

fn query(text: &str) -> Request {
    Request::Query { text: text.into(), params: QueryParams::default() }
}

fn frame_bytes(request: &Request, stream: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_frame(&request.to_frame(stream), &mut bytes);
    bytes
}

/// Every answer until the server closes the connection.
fn answers_until_closed(raw: &mut RawConnection) -> Vec<(u16, Response)> {
    std::iter::from_fn(|| raw.receive()).collect()
}

fn protocol_error(answer: &(u16, Response)) -> Option<(u16, &ErrorResponse)> {
    match answer {
        (stream, Response::Error(e)) if e.code == ErrorCode::Protocol => Some((*stream, e)),
        _ => None,
    }
}

#[test]
fn stream_0_and_a_stream_in_flight_are_connection_errors() {
    let dir = scratch_dir("protocol-streams");
    let server = Server::start(&dir, 1, &[]);

    let mut raw = RawConnection::connect(server.addr).expect("raw connection");
    assert!(raw.startup());
    assert!(raw.send(&query("SELECT now() FROM nowhere"), 0));
    let answers = answers_until_closed(&mut raw);
    match answers.as_slice() {
        [answer] => {
            let (stream, e) = protocol_error(answer).unwrap_or_else(|| panic!("{answer:?}"));
            assert_eq!(stream, 0);
            assert!(e.message.contains("stream 0 is reserved"), "{e}");
        }
        other => panic!("a request on stream 0 answered {other:?}"),
    }

    // Two requests on stream 7 in one write: the second arrives while the first (a flush and
    // major compaction, which waits for the disk) is in flight.
    run_ok(server.addr, "CREATE TABLE kv (k int PRIMARY KEY, v int)");
    run_ok(server.addr, "INSERT INTO kv (k, v) VALUES (1, 1)");
    let mut raw = RawConnection::connect(server.addr).expect("raw connection");
    assert!(raw.startup());
    let compact = Request::Admin(AdminRequest::Compact { table: None });
    let bytes = [frame_bytes(&compact, 7), frame_bytes(&Request::Topology { known_version: 0 }, 7)].concat();
    assert!(raw.send_bytes(&bytes));
    let answers = answers_until_closed(&mut raw);
    let errors: Vec<_> = answers.iter().filter_map(protocol_error).collect();
    assert!(
        matches!(errors.as_slice(), [(0, e)] if e.message.contains("stream 7 is already in use")),
        "answers: {answers:?}"
    );
    assert!(
        answers.iter().any(|(s, r)| *s == 7 && matches!(r, Response::Admin(_))),
        "the first is answered: {answers:?}"
    );

    // The client library never does either: it keeps working.
    let mut client = connect(server.addr);
    assert!(client.query("SELECT v FROM nowhere").is_err());
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn startup_is_answered_once_and_timestamps_below_0_are_refused() {
    let dir = scratch_dir("protocol-startup");
    let server = Server::start(&dir, 1, &[]);
    run_ok(server.addr, "CREATE TABLE kv (k int PRIMARY KEY, v int)");

    let mut raw = RawConnection::connect(server.addr).expect("raw connection");
    assert!(raw.startup());
    assert!(raw.send(&Request::Startup { version: PROTOCOL_VERSION, client: "again".into() }, 2));
    match raw.receive() {
        Some((2, Response::Error(e))) if e.code == ErrorCode::Protocol => {
            assert!(e.message.contains("already answered"), "{e}")
        }
        other => panic!("a second STARTUP answered {other:?}"),
    }
    assert!(raw.send(&query("INSERT INTO kv (k, v) VALUES (1, 1)"), 3));
    assert!(matches!(raw.receive(), Some((3, Response::Result(QueryResult::Void)))), "the connection goes on");

    let mut client = connect(server.addr);
    for ts in [i64::MIN, -1] {
        let params = QueryParams { timestamp: Some(ts), ..QueryParams::default() };
        let e = server_error(client.query_with("INSERT INTO kv (k, v) VALUES (2, 2)", params).unwrap_err());
        assert_eq!(e.code, ErrorCode::Invalid, "timestamp {ts}: {e}");
        assert!(e.message.contains("out of range"), "{e}");
    }
    let e = server_error(client.query("INSERT INTO kv (k, v) VALUES (2, 2) USING TIMESTAMP -5").unwrap_err());
    assert_eq!(e.code, ErrorCode::Invalid, "{e}");
    query_ok(&mut client, "INSERT INTO kv (k, v) VALUES (2, 2) USING TIMESTAMP 0");
    assert_eq!(key_count(&mut client), 2, "no refused write was stored");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

fn key_count(client: &mut wire::client::Client) -> usize {
    let (_, rows, _) = select_all(client, "SELECT k FROM kv", 100);
    rows.len()
}

#[test]
fn length_and_replication_factor_errors_state_the_documented_limits() {
    let dir = scratch_dir("protocol-limits");
    let server = Server::start(&dir, 1, &[]);
    let mut raw = RawConnection::connect(server.addr).expect("raw connection");
    assert!(raw.startup());
    // A QUERY whose statement claims 2 GiB in a 4-byte body.
    let mut bad = Vec::new();
    encode_frame(&Frame::new(Opcode::Query, 4, u32::MAX.to_le_bytes().to_vec()), &mut bad);
    assert!(raw.send_bytes(&bad));
    match raw.receive() {
        Some((4, Response::Error(e))) if e.code == ErrorCode::Protocol => {
            assert!(e.message.contains("truncated"), "{e}");
            assert!(!e.message.contains("268435456"), "no internal bound is cited: {e}");
        }
        other => panic!("an impossible length answered {other:?}"),
    }

    let mut client = connect(server.addr);
    for rf in [0, 256] {
        let ddl = format!("CREATE TABLE t{rf} (k int PRIMARY KEY) WITH replication_factor = {rf}");
        let e = server_error(client.query(&ddl).unwrap_err());
        assert_eq!(e.code, ErrorCode::Invalid);
        assert!(e.message.contains("expected an integer from 1 to 255"), "{e}");
    }
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_node_whose_schema_catalog_is_missing_names_the_file_and_does_not_start() {
    for flushed in [false, true] {
        let dir = scratch_dir(&format!("protocol-catalog-{flushed}"));
        let ok = embedded(&dir, &["--shards", "1", "demo", "--rows", "50"]);
        assert!(ok.status.success(), "{}", text(&ok.stderr));
        if flushed {
            flush_node(&dir, 1);
        }
        std::fs::remove_file(dir.join("schema.cat")).expect("removing schema.cat");
        let out = embedded(&dir, &["--shards", "1", "info"]);
        assert!(!out.status.success(), "flushed {flushed}: the node started without its catalog");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("schema.cat is missing"), "flushed {flushed}: {stderr}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

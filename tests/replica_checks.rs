//! Writes checked where they are applied: a real node sent hand-built peer MUTATE frames that
//! do not fit the table's schema (a 3-byte int key, an unknown column, non-UTF-8 text, a
//! negative timestamp) or that target its hidden batchlog answers each with PEER_ERROR
//! `INVALID` and stores nothing; and a table holding a row stored before these checks (written
//! in-process, unchecked) stays readable: SELECT and count(*) skip that row and count it.

mod common;

use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpStream};

use common::*;
use enigmadb::cluster::messages::encode_mutate;
use enigmadb::cluster::opcodes::{MUTATE, MUTATE_OK, PEER_ERROR, PEER_HELLO, PEER_HELLO_OK};
use enigmadb::cluster::transport::{codes, Hello, RemoteError, DEFAULT_CLUSTER_NAME};
use shards::catalog::Catalog;
use shards::cell::Cell;
use shards::key::{ClusteringKey, PartitionKey};
use shards::mutation::{PartitionUpdate, Write, WriteOp};
use shards::node::{Node, NodeConfig};
use shards::row::Row;
use wire::frame::{encode_peer_frame, FrameDecoder, PeerFrame};
use wire::protocol::QueryResult;
use wire::schema::TableSchema;
use wire::Value;

/// A peer connection after its HELLO, sending frames by hand.
struct RawPeer {
    stream: TcpStream,
    decoder: FrameDecoder,
    received: Vec<u8>,
}

impl RawPeer {
    fn connect(peer: SocketAddr) -> RawPeer {
        let stream = TcpStream::connect(peer).expect("connecting to the peer port");
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).expect("read timeout");
        let mut raw = RawPeer { stream, decoder: FrameDecoder::default(), received: Vec::new() };
        let from: SocketAddr = "127.0.0.1:1".parse().expect("an address");
        raw.send(PEER_HELLO, 0, Hello::new(from, DEFAULT_CLUSTER_NAME, 0).encode());
        let (opcode, stream, _) = raw.receive();
        assert_eq!((opcode, stream), (PEER_HELLO_OK, 0), "the node accepts the HELLO");
        raw
    }

    fn send(&mut self, opcode: u8, stream: u16, body: Vec<u8>) {
        let mut bytes = Vec::new();
        encode_peer_frame(&PeerFrame { opcode, stream, body }, &mut bytes);
        self.stream.write_all(&bytes).expect("sending a peer frame");
    }

    fn receive(&mut self) -> (u8, u16, Vec<u8>) {
        loop {
            if let Some((frame, used)) = self.decoder.decode_peer(&self.received).expect("a well-formed answer") {
                self.received.drain(..used);
                return (frame.opcode, frame.stream, frame.body);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("reading an answer");
            assert!(n > 0, "the node closed the peer connection");
            self.received.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one MUTATE of `updates` and returns its answer: Ok for MUTATE_OK, else the
    /// PEER_ERROR.
    fn mutate(&mut self, stream: u16, updates: &[PartitionUpdate]) -> Result<(), RemoteError> {
        let mut body = Vec::new();
        encode_mutate(updates, &mut body);
        self.send(MUTATE, stream, body);
        let (opcode, answered, body) = self.receive();
        assert_eq!(answered, stream);
        match opcode {
            MUTATE_OK => Ok(()),
            PEER_ERROR => Err(RemoteError::decode(&body).expect("a PEER_ERROR body")),
            other => panic!("unexpected answer {other:#04x} to MUTATE"),
        }
    }
}

fn table(dir: &std::path::Path, name: &str) -> TableSchema {
    let catalog = Catalog::load(dir).expect("reading the node's schema catalog");
    catalog.table(name).unwrap_or_else(|| panic!("table {name} in the catalog")).clone()
}

/// One row of `kv (k int PRIMARY KEY, v text)`, stamped `ts`, with `key` and `cells` as given.
fn row(table: &TableSchema, key: Vec<u8>, cells: Vec<(u16, Cell)>, ts: i64) -> PartitionUpdate {
    let row = Row { marker: Some(Cell::Live { ts, value: Vec::new() }), deletion: None, cells };
    PartitionUpdate {
        table: table.id,
        key: PartitionKey::from_serialized(key),
        deletion: None,
        rows: vec![(ClusteringKey::default(), row)],
    }
}

fn count(client: &mut wire::client::Client) -> i64 {
    match query(client, "SELECT count(*) FROM kv").expect("count(*) answers") {
        QueryResult::Rows(rows) => match rows.rows[0][0] {
            Some(Value::BigInt(n)) => n,
            ref other => panic!("count(*) answered {other:?}"),
        },
        other => panic!("count(*) answered {other:?}"),
    }
}

#[test]
fn malformed_peer_mutates_are_refused_and_never_stored() {
    let dir = scratch_dir("replica-checks-mutate");
    let server = Server::start(&dir, 2, &[]);
    run_ok(server.addr, "CREATE TABLE kv (k int PRIMARY KEY, v text)");
    run_ok(server.addr, "INSERT INTO kv (k, v) VALUES (1, 'one')");
    let kv = table(&dir, "kv");
    let batchlog = table(&dir, "system_batchlog");
    let ts = 1_700_000_000_000_000;
    let text = |s: &[u8]| Cell::Live { ts, value: s.to_vec() };
    let int = |k: i32| k.to_be_bytes().to_vec();

    let mut peer = RawPeer::connect(server.peer.expect("the ready line names the peer address"));
    let bad: [(&str, Vec<PartitionUpdate>, &str); 6] = [
        ("a 3-byte key for an int column", vec![row(&kv, vec![0, 0, 7], vec![(0, text(b"x"))], ts)], "must be 4 bytes"),
        ("an unknown column", vec![row(&kv, int(2), vec![(5, text(b"x"))], ts)], "no column with id 5"),
        ("non-UTF-8 text", vec![row(&kv, int(3), vec![(0, text(&[0xC3, 0x28]))], ts)], "not valid UTF-8"),
        (
            "a negative timestamp",
            vec![row(&kv, int(4), vec![(0, Cell::Tombstone { ts: i64::MIN, deleted_at: 1 })], ts)],
            "timestamp",
        ),
        ("the hidden batchlog", vec![row(&batchlog, vec![1; 16], vec![(0, text(b"x"))], ts)], "this node's own"),
        (
            "a valid update beside an invalid one",
            vec![row(&kv, int(5), vec![(0, text(b"five"))], ts), row(&kv, vec![9], Vec::new(), ts)],
            "must be 4 bytes",
        ),
    ];
    for (n, (what, updates, says)) in bad.iter().enumerate() {
        let error = peer.mutate(n as u16 + 1, updates).expect_err(what);
        assert_eq!(error.code, codes::INVALID, "{what}: {error:?}");
        assert!(error.message.contains(says), "{what}: {}", error.message);
    }
    peer.mutate(100, &[row(&kv, int(6), vec![(0, text(b"six"))], ts)]).expect("a valid MUTATE is applied");

    let mut client = connect(server.addr);
    let (_, rows, _) = select_all(&mut client, "SELECT k, v FROM kv", 1000);
    let mut keys: Vec<_> = rows.iter().map(|r| r[0].clone()).collect();
    keys.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(keys, [Some(Value::Int(1)), Some(Value::Int(6))], "nothing refused was stored: {rows:?}");
    assert_eq!(count(&mut client), 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_stored_row_that_does_not_decode_is_skipped_and_counted() {
    let dir = scratch_dir("replica-checks-scan");
    let server = Server::start(&dir, 1, &[]);
    run_ok(server.addr, "CREATE TABLE kv (k int PRIMARY KEY, v text)");
    for k in 1..=3 {
        run_ok(server.addr, &format!("INSERT INTO kv (k, v) VALUES ({k}, 'v{k}')"));
    }
    stop_cleanly(server);
    // What unchecked replicas stored: a 3-byte key for an int column and a non-UTF-8 text.
    {
        let mut config = NodeConfig::new(&dir);
        config.shards = 1;
        let (node, _) = Node::open(config).expect("opening the node directory");
        let kv = node.table("kv").expect("table kv");
        let bad = |key: Vec<u8>, value: Vec<u8>| Write {
            table: kv.id,
            key: PartitionKey::from_serialized(key),
            op: WriteOp::Insert { clustering: ClusteringKey::default(), columns: vec![(0, Some(value))], ttl: 0 },
        };
        let writes = vec![bad(vec![0, 0, 7], b"x".to_vec()), bad(9i32.to_be_bytes().to_vec(), vec![0xC3, 0x28])];
        futures_lite::future::block_on(node.write(writes, None)).expect("unchecked writes");
        futures_lite::future::block_on(node.shutdown()).expect("clean shutdown");
    }

    let server = Server::start(&dir, 1, &[]);
    let mut client = connect(server.addr);
    let (_, rows, _) = select_all(&mut client, "SELECT k, v FROM kv", 1000);
    assert_eq!(rows.len(), 3, "the three good rows are read around the bad ones: {rows:?}");
    assert_eq!(count(&mut client), 3);
    let scrape = scrape(server.metrics.expect("the ready line names the metrics address"));
    assert_eq!(scrape.sum("enigmadb_undecodable_rows_total", &[]), 4.0, "two bad rows, met by two reads");
    drop(server);
    std::fs::remove_dir_all(&dir).ok();
}

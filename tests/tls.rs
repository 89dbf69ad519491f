//! TLS on real `enigmadb server` processes, with a CA and certificates made when the test runs:
//! a client trusting the node's CA reads and writes on both client ports; a plaintext client
//! is refused with a typed error when TLS is required; a client that does not trust the
//! node's certificate, or shows none when asked, fails the handshake; a rogue without the
//! cluster's certificate cannot send HELLO or MUTATE on the peer port (nothing is stored);
//! nodes with another CA's certificate, or none, are refused; a cluster with mutual TLS
//! between its nodes works at QUORUM, and a replicated write sent to its owning shard crosses
//! no core on any replica over TLS either (the TLS server name steers peer connections).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;

use common::cluster::{count_up, node_host, TestCluster};
use common::tls::{Identity, TestCa};
use common::*;
use enigmadb::cluster::messages::encode_mutate;
use enigmadb::cluster::opcodes::{MUTATE, PEER_ERROR, PEER_HELLO, PEER_HELLO_OK};
use enigmadb::cluster::transport::{codes, Hello, RemoteError, DEFAULT_CLUSTER_NAME};
use shards::catalog::Catalog;
use shards::cell::Cell;
use shards::key::{ClusteringKey, PartitionKey};
use shards::mutation::PartitionUpdate;
use shards::row::Row;
use wire::client::{Client, ClientError, ClientOptions};
use wire::frame::{encode_peer_frame, FrameDecoder, PeerFrame};
use wire::protocol::{ErrorCode, QueryResult};
use wire::tls::{ClientStream, ClientTls};
use wire::{Consistency, Value};

/// Every address a node of these tests listens on: this process's loopback host and the
/// cluster hosts 127.1.X.i.
fn test_ips() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = vec![loopback_host().parse().expect("an address")];
    ips.extend((1..=4).map(|i| node_host(i).parse::<IpAddr>().expect("an address")));
    ips
}

fn tls_options(ca: &TestCa, identity: Option<&Identity>) -> ClientOptions {
    let identity = identity.map(|id| (id.cert.as_path(), id.key.as_path()));
    let tls = ClientTls::from_files(&ca.cert, identity).expect("the test CA and certificate load");
    ClientOptions { tls: Some(tls), ..ClientOptions::default() }
}

fn client_tls_flags<'a>(node: &'a Identity, more: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--client-tls-cert", node.cert(), "--client-tls-key", node.key()];
    flags.extend(more);
    flags
}

fn internode_flags<'a>(ca: &'a TestCa, node: &'a Identity) -> Vec<&'a str> {
    vec!["--internode-tls-cert", node.cert(), "--internode-tls-key", node.key(), "--internode-tls-ca", ca.cert()]
}

fn count(client: &mut Client, table: &str) -> i64 {
    match query(client, &format!("SELECT count(*) FROM {table}")).expect("count(*) answers") {
        QueryResult::Rows(rows) => match rows.rows[0][0] {
            Some(Value::BigInt(n)) => n,
            ref other => panic!("count(*) answered {other:?}"),
        },
        other => panic!("count(*) answered {other:?}"),
    }
}

fn value_of(client: &mut Client, k: i32) -> Option<String> {
    match query(client, &format!("SELECT v FROM kv WHERE k = {k}")).expect("a SELECT") {
        QueryResult::Rows(rows) => rows.rows.first().and_then(|r| match &r[0] {
            Some(Value::Text(v)) => Some(v.clone()),
            _ => None,
        }),
        other => panic!("SELECT answered {other:?}"),
    }
}

#[test]
fn a_client_with_the_ca_reads_and_writes_and_a_plaintext_client_is_refused_when_tls_is_required() {
    let dir = scratch_dir("tls-client-required");
    let ca = TestCa::new(&dir.join("certs"), "cluster");
    let node = ca.issue("node", &test_ips());
    let server = Server::start(&dir.join("data"), 2, &client_tls_flags(&node, &["--client-tls-required"]));

    let mut client = Client::connect_with(server.addr, tls_options(&ca, None)).expect("a TLS client with the CA");
    query_ok(&mut client, "CREATE TABLE kv (k int PRIMARY KEY, v text)");
    query_ok(&mut client, "INSERT INTO kv (k, v) VALUES (1, 'over tls')");
    assert_eq!(value_of(&mut client, 1).as_deref(), Some("over tls"));
    // The shard-aware port speaks TLS too, on every shard.
    let shard_aware = server.shard_aware.expect("the ready line names the shard-aware port");
    for shard in 0..2 {
        let mut on_shard = Client::connect_to_shard(shard_aware, shard, 2, tls_options(&ca, None))
            .unwrap_or_else(|e| panic!("a TLS connection to shard {shard}: {e}"));
        assert_eq!(value_of(&mut on_shard, 1).as_deref(), Some("over tls"), "shard {shard}");
    }

    for port in [server.addr, shard_aware] {
        match Client::connect(port) {
            Err(ClientError::Server(e)) => {
                assert_eq!(e.code, ErrorCode::Protocol, "{e:?}");
                assert!(e.message.contains("requires TLS"), "{}", e.message);
            }
            Err(other) => panic!("a plaintext client on {port}: expected the node's typed refusal, got {other}"),
            Ok(_) => panic!("a plaintext client was served on {port} though TLS is required"),
        }
    }
    // A handcrafted plaintext write gets the same answer and stores nothing.
    let mut raw = RawConnection::connect(server.addr).expect("connecting");
    raw.send_bytes(&startup_and_insert());
    let mut answers = Vec::new();
    while let Some((stream, response)) = raw.receive() {
        answers.push((stream, response));
    }
    assert!(
        matches!(answers.as_slice(), [(0, wire::Response::Error(e))] if e.code == ErrorCode::Protocol),
        "{answers:?}"
    );
    assert_eq!(count(&mut client, "kv"), 1, "the plaintext INSERT was not applied");
    stop_cleanly(server);
}

/// A STARTUP and an INSERT of k = 2, sent without waiting.
fn startup_and_insert() -> Vec<u8> {
    use wire::protocol::{QueryParams, Request};
    let mut bytes = Vec::new();
    let startup = Request::Startup { version: wire::frame::PROTOCOL_VERSION, client: "plaintext".into() };
    wire::frame::encode_frame(&startup.to_frame(1), &mut bytes);
    let insert =
        Request::Query { text: "INSERT INTO kv (k, v) VALUES (2, 'plain')".into(), params: QueryParams::default() };
    wire::frame::encode_frame(&insert.to_frame(2), &mut bytes);
    bytes
}

#[test]
fn a_client_that_does_not_trust_the_node_certificate_fails_the_handshake() {
    let dir = scratch_dir("tls-client-untrusted");
    let ca = TestCa::new(&dir.join("certs"), "cluster");
    let stranger = TestCa::new(&dir.join("certs"), "stranger");
    let node = ca.issue("node", &test_ips());
    // TLS not required: the port serves TLS and plaintext clients side by side.
    let server = Server::start(&dir.join("data"), 1, &client_tls_flags(&node, &[]));

    match Client::connect_with(server.addr, tls_options(&stranger, None)) {
        Err(ClientError::Tls(why)) => assert!(why.contains("certificate"), "{why}"),
        Err(other) => panic!("expected a failed TLS handshake, got {other}"),
        Ok(_) => panic!("a client trusting another CA accepted the node's certificate"),
    }
    let mut tls = Client::connect_with(server.addr, tls_options(&ca, None)).expect("a TLS client with the CA");
    query_ok(&mut tls, "CREATE TABLE kv (k int PRIMARY KEY, v text)");
    let mut plain = connect(server.addr);
    query_ok(&mut plain, "INSERT INTO kv (k, v) VALUES (1, 'plain')");
    assert_eq!(value_of(&mut tls, 1).as_deref(), Some("plain"), "both kinds of client share the port");
    stop_cleanly(server);
}

#[test]
fn a_node_that_asks_for_client_certificates_refuses_clients_without_one_signed_by_its_ca() {
    let dir = scratch_dir("tls-client-mutual");
    let ca = TestCa::new(&dir.join("certs"), "cluster");
    let stranger = TestCa::new(&dir.join("certs"), "stranger");
    let node = ca.issue("node", &test_ips());
    let (alice, mallory) = (ca.issue("alice", &[]), stranger.issue("mallory", &[]));
    let flags = client_tls_flags(&node, &["--client-tls-required", "--client-tls-ca", ca.cert()]);
    let server = Server::start(&dir.join("data"), 1, &flags);

    let mut client = Client::connect_with(server.addr, tls_options(&ca, Some(&alice))).expect("alice's certificate");
    query_ok(&mut client, "CREATE TABLE kv (k int PRIMARY KEY, v text)");
    for (who, identity) in [("no certificate", None), ("another CA's certificate", Some(&mallory))] {
        match Client::connect_with(server.addr, tls_options(&ca, identity)) {
            Err(ClientError::Tls(_)) => {}
            Err(other) => panic!("{who}: expected a failed TLS handshake, got {other}"),
            Ok(_) => panic!("{who}: the client was served"),
        }
    }
    stop_cleanly(server);
}

/// What a rogue gets back on the peer port after sending HELLO and a MUTATE of k = 7 at
/// once: the frames decoded until the node closed the connection (or the bytes stopped
/// making frames).
fn rogue_answers(mut stream: impl Read + Write, mutate: &[u8]) -> Vec<PeerFrame> {
    let from: SocketAddr = "127.0.0.1:1".parse().expect("an address");
    let mut bytes = Vec::new();
    let hello = Hello::new(from, DEFAULT_CLUSTER_NAME, 0).encode();
    encode_peer_frame(&PeerFrame { opcode: PEER_HELLO, stream: 0, body: hello }, &mut bytes);
    encode_peer_frame(&PeerFrame { opcode: MUTATE, stream: 1, body: mutate.to_vec() }, &mut bytes);
    // A refused handshake may fail the write already.
    let _ = stream.write_all(&bytes).and_then(|()| stream.flush());
    let (mut received, mut frames, mut decoder) = (Vec::new(), Vec::new(), FrameDecoder::default());
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut chunk) {
        received.extend_from_slice(&chunk[..n]);
        while let Ok(Some((frame, used))) = decoder.decode_peer(&received) {
            received.drain(..used);
            frames.push(frame);
        }
    }
    frames
}

fn peer_socket(peer: SocketAddr) -> TcpStream {
    let socket = TcpStream::connect(peer).expect("connecting to the peer port");
    socket.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("a read timeout");
    socket
}

/// A MUTATE body storing kv row k = 7 on the node whose data directory is `dir`.
fn mutate_body(dir: &Path) -> Vec<u8> {
    let catalog = Catalog::load(dir).expect("reading the node's schema catalog");
    let kv = catalog.table("kv").expect("table kv").clone();
    let ts = 1_700_000_000_000_000;
    let row = Row {
        marker: Some(Cell::Live { ts, value: Vec::new() }),
        deletion: None,
        cells: vec![(0, Cell::Live { ts, value: b"rogue".to_vec() })],
    };
    let update = PartitionUpdate {
        table: kv.id,
        key: PartitionKey::from_serialized(7i32.to_be_bytes().to_vec()),
        deletion: None,
        rows: vec![(ClusteringKey::default(), row)],
    };
    let mut body = Vec::new();
    encode_mutate(&[update], &mut body);
    body
}

#[test]
fn a_rogue_without_the_cluster_certificate_cannot_send_hello_or_mutate() {
    let dir = scratch_dir("tls-peer-rogue");
    let ca = TestCa::new(&dir.join("certs"), "cluster");
    let stranger = TestCa::new(&dir.join("certs"), "stranger");
    let node = ca.issue("node", &test_ips());
    let data = dir.join("data");
    let server = Server::start(&data, 2, &internode_flags(&ca, &node));
    run_ok(server.addr, "CREATE TABLE kv (k int PRIMARY KEY, v text)");
    let peer = server.peer.expect("the ready line names the peer address");
    let mutate = mutate_body(&data);

    // Plaintext: refused before its HELLO, with a typed PEER_ERROR saying why.
    let frames = rogue_answers(peer_socket(peer), &mutate);
    match frames.as_slice() {
        [PeerFrame { opcode: PEER_ERROR, stream: 0, body }] => {
            let error = RemoteError::decode(body).expect("a PEER_ERROR body");
            assert_eq!(error.code, codes::TLS, "{error:?}");
            assert!(error.message.contains("requires internode TLS"), "{}", error.message);
        }
        other => panic!("a plaintext rogue got {other:?}"),
    }
    // TLS trusting the node, but with no certificate, or one of another CA: the handshake is
    // refused; nothing, HELLO_OK least of all, comes back.
    let mallory = stranger.issue("mallory", &test_ips());
    for (who, identity) in [("no certificate", None), ("another CA's certificate", Some(&mallory))] {
        let identity = identity.map(|id| (id.cert.as_path(), id.key.as_path()));
        let tls = ClientTls::from_files(&ca.cert, identity).expect("TLS settings");
        let frames = match ClientStream::handshake(peer_socket(peer), &tls) {
            Ok(stream) => rogue_answers(stream, &mutate),
            Err(_) => Vec::new(),
        };
        assert!(frames.iter().all(|f| f.opcode != PEER_HELLO_OK), "{who}: the node answered HELLO: {frames:?}");
        assert!(frames.is_empty(), "{who}: {frames:?}");
    }
    let mut client = connect(server.addr);
    assert_eq!(count(&mut client, "kv"), 0, "no rogue MUTATE was stored");
    stop_cleanly(server);
}

#[test]
fn a_cluster_with_internode_tls_works_at_quorum_and_refuses_nodes_without_its_certificate() {
    let certs = scratch_dir("tls-peer-cluster-certs");
    let ca = TestCa::new(&certs, "cluster");
    let node = ca.issue("node", &test_ips());
    let flags = internode_flags(&ca, &node);
    // Two shards per node: a peer connection's TLS server name and HELLO name a shard.
    let cluster = TestCluster::start_sharded("tls-peer-cluster", 3, 2, &flags);
    let acked = cluster.load_kv(3, 50);
    for i in 1..=3 {
        common::cluster::assert_reads_back(cluster.addr(i), &acked, Consistency::Quorum, &format!("node {i}"));
    }

    // A node with another CA's certificate (trusting the cluster's CA), and a plaintext node:
    // neither may join.
    let stranger = TestCa::new(&certs, "stranger");
    let other = stranger.issue("other", &test_ips());
    let seed = cluster.server(1).peer.expect("node 1's peer address").to_string();
    let host = node_host(4);
    let (listen, peer_listen) = (format!("{host}:0"), format!("{host}:0"));
    let base =
        ["--listen", &listen, "--peer-listen", &peer_listen, "--seeds", &seed, "--shadow-round-timeout-ms", "3000"];
    let wrong_ca =
        ["--internode-tls-cert", other.cert(), "--internode-tls-key", other.key(), "--internode-tls-ca", ca.cert()];
    let refused = refused_start(&cluster.dir.join("wrong-ca"), &[&base[..], &wrong_ca[..]].concat());
    assert!(refused.contains("certificate"), "{refused}");
    let refused = refused_start(&cluster.dir.join("plaintext"), &base);
    assert!(refused.contains("requires internode TLS"), "{refused}");
    assert_eq!(count_up(cluster.addr(1)), 3, "nobody joined");
    let _ = std::fs::remove_dir_all(&certs);
}

/// The sum over shards of `enigmadb_cross_shard_requests_total`.
fn cross_shard_requests(server: &Server) -> f64 {
    let scrape = common::scrape(server.metrics.expect("the ready line names the metrics address"));
    assert!(scrape.select("enigmadb_cross_shard_requests_total", &[]).count() > 0, "no cross-shard counter");
    scrape.sum("enigmadb_cross_shard_requests_total", &[])
}

#[test]
fn a_replicated_write_to_the_owning_shard_crosses_no_core_on_any_replica_over_internode_tls() {
    let certs = scratch_dir("tls-peer-shards-certs");
    let ca = TestCa::new(&certs, "cluster");
    // The certificate names the nodes' addresses only, not the server names that steer.
    let node = ca.issue("node", &test_ips());
    let cluster = TestCluster::start_sharded("tls-peer-shards", 2, 2, &internode_flags(&ca, &node));
    let nodes = [1, 2];
    let at_start: Vec<f64> = nodes.iter().map(|&i| cross_shard_requests(cluster.server(i))).collect();
    let report = cluster.dir.join("replicated.json");
    let out = enigmadb()
        .args(["stress", "write", "-n", "4000", "--population", "4000", "--replication-factor", "2"])
        .args(["--consistency", "ALL", "--concurrency", "16", "--connections", "2", "--seed", "5"])
        .args(["--host", &cluster.addr(1).to_string(), "--report", report.to_str().expect("UTF-8")])
        .output()
        .expect("running enigmadb stress");
    assert!(out.status.success(), "stress failed:\n{}\n{}", common::text(&out.stdout), common::text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report")).expect("JSON");
    assert_eq!(report["summary"]["ok"], 4000, "{}", report["summary"]);
    let routed = &report["summary"]["shard_aware"];
    assert_eq!(routed["requests"], routed["to_owner"], "every write went to its owning shard: {routed}");
    // At ALL both replicas applied each write before it was acknowledged: all are counted.
    for (&i, before) in nodes.iter().zip(at_start) {
        assert_eq!(cross_shard_requests(cluster.server(i)), before, "node {i}: a replica write crossed a core");
    }
    let _ = std::fs::remove_dir_all(&certs);
}

/// One HTTPS request for /metrics with `authorization` (a header value), and the answer.
fn scrape_over_tls(addr: SocketAddr, tls: &ClientTls, authorization: Option<&str>) -> String {
    let socket = TcpStream::connect(addr).expect("connecting to the metrics port");
    socket.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("a read timeout");
    let mut stream = ClientStream::handshake(socket, tls).expect("a TLS handshake with the metrics port");
    let auth = authorization.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: enigmadb\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).and_then(|()| stream.flush()).expect("sending the request");
    let mut answer = Vec::new();
    // The node closes after its answer (without close_notify at worst: the bytes read count).
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn the_metrics_port_serves_https_and_asks_for_basic_authentication() {
    let dir = scratch_dir("tls-metrics");
    let ca = TestCa::new(&dir.join("certs"), "cluster");
    let node = ca.issue("node", &test_ips());
    let auth_file = dir.join("metrics-auth");
    std::fs::write(&auth_file, "prometheus:scrape-pw\n").expect("writing the metrics credentials");
    let flags =
        client_tls_flags(&node, &["--metrics-tls", "--metrics-basic-auth-file", auth_file.to_str().expect("UTF-8")]);
    let server = Server::start(&dir.join("data"), 1, &flags);
    let metrics = server.metrics.expect("the ready line names the metrics port");
    let tls = ClientTls::from_files(&ca.cert, None).expect("TLS settings");

    // base64("prometheus:scrape-pw")
    let good = scrape_over_tls(metrics, &tls, Some("Basic cHJvbWV0aGV1czpzY3JhcGUtcHc="));
    assert!(good.starts_with("HTTP/1.1 200 OK"), "{good}");
    assert!(good.contains("enigmadb_"), "the answer holds the metrics: {good}");
    for wrong in [None, Some("Basic cHJvbWV0aGV1czp3cm9uZw==")] {
        let refused = scrape_over_tls(metrics, &tls, wrong);
        assert!(refused.starts_with("HTTP/1.1 401 Unauthorized"), "{wrong:?}: {refused}");
        assert!(!refused.contains("enigmadb_"), "{wrong:?}: no metrics without the password: {refused}");
    }
    // Plain HTTP gets no answer from an HTTPS port.
    let mut plain = TcpStream::connect(metrics).expect("connecting");
    plain.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("a read timeout");
    let _ = plain.write_all(b"GET /metrics HTTP/1.1\r\nAuthorization: Basic cHJvbWV0aGV1czpzY3JhcGUtcHc=\r\n\r\n");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"), "plain HTTP was answered");
    stop_cleanly(server);
}

//! Every shard a front door, against real servers: a connection to the shard-aware port is
//! served by the shard its source port names (the server says which in READY), the ordinary
//! port spreads its connections over every shard, a shard-aware client's writes cross no core
//! (the cross-shard counter stays at 0) while an ordinary client's do, on the replicas too
//! (a replicated write reaches the owning shard of every replica), and a shard-aware client
//! follows the cluster: a node that joins gets requests, a node that dies is avoided.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{await_until, count_up, TestCluster};
use common::*;
use enigmadb::metrics::text;
use wire::client::{Client, ClientOptions};

fn options() -> ClientOptions {
    ClientOptions { timeout: Some(ANSWER_TIMEOUT), ..ClientOptions::default() }
}

/// The sum over shards of `enigmadb_cross_shard_requests_total`.
fn cross_shard_requests(server: &Server) -> f64 {
    let scrape = scrape(server);
    assert!(scrape.select("enigmadb_cross_shard_requests_total", &[]).count() > 0, "no cross-shard counter");
    scrape.sum("enigmadb_cross_shard_requests_total", &[])
}

fn scrape(server: &Server) -> text::Scrape {
    common::scrape(server.metrics.expect("the ready line names the metrics address"))
}

fn stress(addr: SocketAddr, args: &[&str]) {
    let out = enigmadb()
        .arg("stress")
        .args(args)
        .args(["--host", &addr.to_string()])
        .output()
        .expect("running enigmadb stress");
    assert!(out.status.success(), "stress failed:\n{}\n{}", common::text(&out.stdout), common::text(&out.stderr));
}

#[test]
fn the_shard_aware_port_serves_each_connection_on_the_shard_its_source_port_names() {
    let dir = scratch_dir("front-door-steering");
    let server = Server::start(&dir, 3, &[]);
    let at = server.shard_aware.expect("the ready line names the shard-aware port");
    for shard in 0..3u16 {
        for _ in 0..3 {
            let mut client = Client::connect_to_shard(at, shard, 3, options())
                .unwrap_or_else(|e| panic!("a connection to shard {shard}: {e}"));
            let port = client.local_addr().expect("the connection's own address").port();
            assert_eq!(port % 3, shard, "the client chose its source port for shard {shard}");
            assert_eq!((client.shard(), client.shards()), (shard, 3), "READY names the serving shard");
            let info = client.options().expect("OPTIONS");
            assert_eq!((info.shard, info.shards, info.shard_aware_port), (shard, 3, at.port()));
            client.query("SELECT * FROM system_nothing").expect_err("a request is served (and refused)");
        }
    }
}

#[test]
fn the_ordinary_port_spreads_its_connections_over_every_shard() {
    let dir = scratch_dir("front-door-spread");
    let server = Server::start(&dir, 3, &[]);
    let mut served: BTreeMap<u16, usize> = BTreeMap::new();
    let mut clients = Vec::new();
    for _ in 0..100 {
        let client = Client::connect_with(server.addr, options()).expect("connecting");
        assert_eq!(client.shards(), 3);
        *served.entry(client.shard()).or_default() += 1;
        clients.push(client);
    }
    assert_eq!(served.keys().copied().collect::<Vec<_>>(), [0, 1, 2], "every shard serves some: {served:?}");
    let (least, most) = (served.values().min().unwrap(), served.values().max().unwrap());
    assert!(most - least <= 1, "connections are handed out in turn: {served:?}");
}

#[test]
fn a_shard_aware_client_writes_cross_no_core_and_an_ordinary_one_does() {
    let dir = scratch_dir("front-door-cross-core");
    let server = Server::start(&dir.join("data"), 2, &[]);
    let shape = ["--population", "10000", "--concurrency", "32", "--connections", "2", "--seed", "3"];
    let report = dir.join("aware.json");
    let aware = [&["write", "-n", "10000", "--report", report.to_str().unwrap()], &shape[..]].concat();
    // The start's own work (the batchlog replay scans every shard) is not the client's.
    let at_start = cross_shard_requests(&server);
    stress(server.addr, &aware);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report")).expect("JSON");
    assert_eq!(report["summary"]["ok"], 10000, "{}", report["summary"]);
    let routed = &report["summary"]["shard_aware"];
    assert_eq!((routed["requests"].as_u64(), routed["to_owner"].as_u64()), (Some(10000), Some(10000)), "{routed}");
    assert_eq!(cross_shard_requests(&server), at_start, "every write went to the shard that owns it");

    let plain = [&["write", "-n", "2000", "--shard-aware", "false"], &shape[..]].concat();
    stress(server.addr, &plain);
    assert!(cross_shard_requests(&server) > at_start, "an ordinary connection hands other shards' writes over");
}

#[test]
fn a_replicated_write_to_the_owning_shard_crosses_no_core_on_any_replica() {
    let cluster = TestCluster::start_sharded("front-door-replicas", 3, 2, &[]);
    let nodes = [1, 2, 3];
    let at_start: Vec<f64> = nodes.iter().map(|&i| cross_shard_requests(cluster.server(i))).collect();
    let report = cluster.dir.join("replicated.json");
    let args = ["write", "-n", "5000", "--population", "5000", "--replication-factor", "3", "--consistency", "ALL"];
    let shape = ["--concurrency", "16", "--connections", "2", "--seed", "5", "--report", report.to_str().unwrap()];
    stress(cluster.addr(1), &[&args[..], &shape[..]].concat());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report")).expect("JSON");
    assert_eq!(report["summary"]["ok"], 5000, "{}", report["summary"]);
    // At ALL every replica applied each write before it was acknowledged: all are counted.
    for (&i, before) in nodes.iter().zip(at_start) {
        assert_eq!(cross_shard_requests(cluster.server(i)), before, "node {i}: a replica write crossed a core");
    }
}

/// How long the stress run of the topology test lasts: long enough for a node to join, another
/// to die and be convicted (about 6 s at the test clusters' phi), and several seconds after.
const FOLLOW_RUN: Duration = Duration::from_secs(40);

/// Answers that may still fail after the dead node's conviction: the client asks for the
/// topology every second and reconnects 200 ms after a lost connection.
const FOLLOW_GRACE: Duration = Duration::from_secs(3);

#[test]
fn a_shard_aware_client_sends_to_a_node_that_joins_and_avoids_one_that_died() {
    let mut cluster = TestCluster::start("front-door-follow", 3);
    let report = cluster.dir.join("follow.json");
    let seconds = format!("{}s", FOLLOW_RUN.as_secs());
    let mut stress = enigmadb()
        .args(["stress", "write", "--rate", "500", "--duration", &seconds, "--population", "100000"])
        .args(["--replication-factor", "3", "--consistency", "ONE", "--connections", "2", "--concurrency", "8"])
        .args(["--host", &cluster.addr(1).to_string(), "--report", report.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting enigmadb stress");
    let started = Instant::now();

    let joined = cluster.join();
    cluster.await_up(4);
    let requests = |server: &Server| scrape(server).sum("enigmadb_requests_total", &[("opcode", "execute")]);
    await_until("the new node serves the client's writes", || requests(cluster.server(joined)) > 0.0);

    cluster.kill(2);
    await_until("node 1 sees node 2 down", || count_up(cluster.addr(1)) == 3);
    let convicted = started.elapsed();
    assert!(convicted + FOLLOW_GRACE + Duration::from_secs(5) < FOLLOW_RUN, "the run left too little time after");
    let before = requests(cluster.server(joined));
    let status = stress.wait().expect("waiting for enigmadb stress");
    assert!(status.success(), "stress failed: {status}");
    assert!(requests(cluster.server(joined)) > before, "the joined node kept getting requests");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report")).expect("JSON");
    let after: Vec<&serde_json::Value> = report["series"]
        .as_array()
        .expect("a per-second series")
        .iter()
        .filter(|s| s["t"].as_f64().unwrap() > (convicted + FOLLOW_GRACE).as_secs_f64() && !s["step"].is_null())
        .collect();
    assert!(after.len() >= 5, "seconds after the conviction: {}", after.len());
    for second in after {
        assert!(second["operations"].as_u64().unwrap() > 0, "writes go on: {second}");
        assert_eq!(second["errors"], serde_json::json!({}), "no write fails once node 2 is convicted: {second}");
    }
}

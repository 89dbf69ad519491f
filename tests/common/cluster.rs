//! A local cluster of real `enigmadb server` processes for the multi-node tests: node i on
//! 127.1.X.i (X from the test process id, so concurrent tests never share addresses), node 1
//! the seed, every process killed and its directory removed when the guard drops.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wire::client::{Client, Prepared};
use wire::protocol::{QueryParams, QueryResult, Request, Response};
use wire::{Consistency, Value};

use super::{connect, Server};

/// Phi threshold for these tests: convicts a silent peer after about 6 s of silence instead of
/// Cassandra's 18 s at 8, so the test waits less (the detector's math is unit-tested).
pub const PHI: &str = "2.5";
/// Longest wait for the cluster to notice a change (a node down, up, a schema).
pub const CONVERGE: Duration = Duration::from_secs(40);

/// A loopback network of its own for this test process: 127.1.X.i for node i.
pub fn node_host(i: usize) -> String {
    format!("127.1.{}.{}", std::process::id() % 250, i)
}

pub struct TestCluster {
    pub dir: PathBuf,
    nodes: Vec<Option<Server>>,
    /// Node 1's peer address, as the --seeds flag takes it.
    seed_text: String,
    /// Flags every node starts with, after the cluster's own.
    extra: Vec<String>,
    /// Shards of every node.
    shards: usize,
    /// Environment variables of node i (index i - 1), at every start of it.
    env: Vec<Vec<(String, String)>>,
    /// Flags of the `enigmadb admin` commands the cluster runs (a superuser's credentials on
    /// nodes with authentication on).
    admin: Vec<String>,
}

/// How [`TestCluster::start_configured`] starts its nodes.
#[derive(Default)]
pub struct Setup<'a> {
    /// Shards of every node (0: one).
    pub shards: usize,
    /// Flags every node starts with, after the cluster's own.
    pub extra: &'a [&'a str],
    /// Environment variables of node i, at every start of it.
    pub env: Option<&'a dyn Fn(usize) -> Vec<(String, String)>>,
    /// Flags of the `enigmadb admin` commands the cluster runs (`-u`, `-p`).
    pub admin: &'a [&'a str],
    /// Start each node once the ones before it all see it up (NORMAL): needed when the nodes
    /// after the first bootstrap (the cluster has tables, the auth tables included), since
    /// two joins at once are refused (one range movement at a time).
    pub one_at_a_time: bool,
}

impl TestCluster {
    /// Starts `n` one-shard nodes and waits until every one sees all `n` up.
    pub fn start(name: &str, n: usize) -> TestCluster {
        TestCluster::start_with(name, n, &[])
    }

    /// As [`TestCluster::start`], every node also given `extra` flags.
    pub fn start_with(name: &str, n: usize, extra: &[&str]) -> TestCluster {
        TestCluster::start_sharded(name, n, 1, extra)
    }

    /// As [`TestCluster::start_with`], with `shards` shards on every node.
    pub fn start_sharded(name: &str, n: usize, shards: usize, extra: &[&str]) -> TestCluster {
        TestCluster::start_configured(name, n, Setup { shards, extra, ..Setup::default() })
    }

    /// Starts `n` nodes as `setup` says and waits until every one sees all `n` up.
    pub fn start_configured(name: &str, n: usize, setup: Setup) -> TestCluster {
        let dir = super::scratch_dir(name);
        let owned = |flags: &[&str]| flags.iter().map(|s| s.to_string()).collect();
        let env = (1..=n).map(|i| setup.env.map(|env| env(i)).unwrap_or_default()).collect();
        let mut cluster = TestCluster {
            dir,
            nodes: Vec::new(),
            seed_text: String::new(),
            extra: owned(setup.extra),
            shards: setup.shards.max(1),
            env,
            admin: owned(setup.admin),
        };
        for i in 1..=n {
            let server = cluster.launch(i);
            if i == 1 {
                cluster.seed_text = server.peer.expect("the ready line names the peer address").to_string();
            }
            cluster.nodes.push(Some(server));
            if setup.one_at_a_time {
                cluster.await_up(i);
            }
        }
        cluster.await_up(n);
        cluster
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{i}"))
    }

    /// Starts node `i` (1-based) on its own address with node 1 as the seed.
    pub fn launch(&self, i: usize) -> Server {
        let mut command = super::enigmadb();
        command.envs(self.env.get(i - 1).into_iter().flatten().map(|(k, v)| (k, v)));
        let (listen, peer_listen) = (format!("{}:0", node_host(i)), format!("{}:0", node_host(i)));
        Server::start_command(command, &listen, &peer_listen, &self.node_dir(i), self.shards, &self.flags(i, &[]))
    }

    /// The flags node `i` starts with: the cluster's, node 1 as its seed (but for node 1), then
    /// `more`.
    pub fn flags<'a>(&'a self, i: usize, more: &[&'a str]) -> Vec<&'a str> {
        let mut flags = vec!["--phi-convict-threshold", PHI];
        if i != 1 {
            flags.extend(["--seeds", self.seed_text.as_str()]);
        }
        flags.extend(self.extra.iter().map(String::as_str));
        flags.extend(more);
        flags
    }

    /// Starts one more node (the next number, its own directory) on the address of node `at`
    /// with `more` flags after the cluster's (a replacement may take a dead node's address);
    /// returns its number.
    pub fn add_on(&mut self, at: usize, more: &[&str]) -> usize {
        let i = self.nodes.len() + 1;
        let server = Server::start_on(&node_host(at), &self.node_dir(i), self.shards, &self.flags(i, more));
        self.nodes.push(Some(server));
        i
    }

    /// Node `i`'s host id as it lists itself in `admin status`.
    pub fn host_id(&self, i: usize) -> String {
        let status = admin_status_as(self.addr(i), &self.admin).expect("admin status");
        let me = rows(&status).into_iter().find(|r| r["address"] == self.addr(i).to_string()).expect("itself");
        me["host_id"].as_str().expect("a host id").to_owned()
    }

    /// Starts one more node (the next number) with node 1 as its seed; returns its number.
    pub fn join(&mut self) -> usize {
        let i = self.nodes.len() + 1;
        let server = self.launch(i);
        self.nodes.push(Some(server));
        i
    }

    /// The running node `i`.
    pub fn server(&self, i: usize) -> &Server {
        self.nodes[i - 1].as_ref().expect("node is running")
    }

    /// Takes node `i` out of the cluster's guard (a node that leaves): the caller owns it.
    pub fn take(&mut self, i: usize) -> Server {
        self.nodes[i - 1].take().expect("node is running")
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i - 1].as_ref().expect("node is running").addr
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut server) = self.nodes[i - 1].take() {
            server.kill();
        }
    }

    /// Kills node i, starts it again on its directory, and waits until every running node
    /// lists it up at its new client address (a new port at every start), which says that
    /// each has learnt of the restart, not merely kept seeing the node it knew.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let server = self.launch(i);
        let restarted = server.addr;
        self.nodes[i - 1] = Some(server);
        for (j, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let what = format!("node {} sees the restarted node {i} up at {restarted}", j + 1);
            await_until(&what, || sees_up_as(node.addr, restarted, &self.admin));
        }
    }

    /// Creates table `kv (k text PRIMARY KEY, v int)` with replication factor `rf` through node
    /// 1 and waits until every running node knows it; returns node 1's client.
    pub fn create_kv_table(&self, rf: usize) -> wire::client::Client {
        let mut first = super::connect(self.addr(1));
        let ddl = format!("CREATE TABLE kv (k text PRIMARY KEY, v int) WITH replication_factor = {rf}");
        super::query_at(&mut first, &ddl, wire::Consistency::One).expect("CREATE TABLE kv");
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let mut client = super::connect(node.addr);
            await_until(&format!("node {} knows table kv", i + 1), || {
                super::query_at(&mut client, "SELECT v FROM kv WHERE k = 'absent'", wire::Consistency::One).is_ok()
            });
        }
        first
    }

    /// Creates table kv with replication factor `rf` ([`TestCluster::create_kv_table`]) and
    /// writes `rows` rows `key-i = i` at QUORUM through node 1; returns them.
    pub fn load_kv(&self, rf: usize, rows: usize) -> std::collections::BTreeMap<String, i32> {
        let mut client = self.create_kv_table(rf);
        let insert = client.prepare("INSERT INTO kv (k, v) VALUES (?, ?)").expect("prepare");
        let params = wire::protocol::QueryParams { consistency: wire::Consistency::Quorum, ..Default::default() };
        (0..rows)
            .map(|i| {
                let key = format!("key-{i}");
                let values = [Some(wire::Value::Text(key.clone())), Some(wire::Value::Int(i as i32))];
                client.execute(&insert, &values, params.clone()).expect("a QUORUM write with every node up");
                (key, i as i32)
            })
            .collect()
    }

    /// Waits until every running node reports `up` nodes up (UN) in `admin status`.
    pub fn await_up(&self, up: usize) {
        for (i, node) in self.nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            await_until(&format!("node {} sees {up} nodes up", i + 1), || count_up_as(node.addr, &self.admin) == up);
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 1..=self.nodes.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Query parameters at `consistency`.
pub fn at(consistency: Consistency) -> QueryParams {
    QueryParams { consistency, ..QueryParams::default() }
}

/// Writes `key` = `value` into `kv` at QUORUM with the prepared INSERT; whether it was
/// acknowledged.
pub fn insert(client: &mut Client, prepared: &Prepared, key: &str, value: i32) -> bool {
    let values = [Some(Value::Text(key.to_owned())), Some(Value::Int(value))];
    client.execute(prepared, &values, at(Consistency::Quorum)).is_ok()
}

/// The value of `key` in `kv` at `consistency` with the prepared SELECT; Err when the read
/// itself failed.
pub fn read(
    client: &mut Client,
    prepared: &Prepared,
    key: &str,
    consistency: Consistency,
) -> Result<Option<i32>, String> {
    match client.execute(prepared, &[Some(Value::Text(key.to_owned()))], at(consistency)) {
        Ok(QueryResult::Rows(rows)) => Ok(rows.rows.first().and_then(|row| match row[0] {
            Some(Value::Int(v)) => Some(v),
            _ => None,
        })),
        Ok(other) => Err(format!("a SELECT answered {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Client threads (one connection each) of [`load_kv`] and [`check_all`].
pub const CLIENT_THREADS: usize = 4;

/// Requests each client thread of [`load_kv`] and [`check_all`] keeps in flight on its
/// connection: a debug build on a busy machine then loads and checks 100,000 rows in seconds,
/// not in minutes one round trip at a time.
pub const PIPELINE_DEPTH: usize = 32;

/// Runs the prepared `statement` on `client` once per item of `work` (its bound values and a
/// tag) at `consistency`, keeping up to [`PIPELINE_DEPTH`] in flight; gives `answer` each
/// tag with its statement's result (Err: the error the server or the connection gave).
fn pipelined<T>(
    client: &mut Client,
    statement: &Prepared,
    work: impl IntoIterator<Item = (Vec<Option<Value>>, T)>,
    consistency: Consistency,
    mut answer: impl FnMut(T, Result<QueryResult, String>),
) {
    let mut work = work.into_iter().peekable();
    // stream id -> the tag of the request it carries
    let mut in_flight: HashMap<u16, T> = HashMap::new();
    loop {
        while in_flight.len() < PIPELINE_DEPTH {
            let Some((values, tag)) = work.next() else { break };
            let request = Request::Execute { id: statement.id, values, params: at(consistency) };
            match client.send(&request) {
                Ok(stream) => {
                    in_flight.insert(stream, tag);
                }
                Err(e) => answer(tag, Err(e.to_string())),
            }
        }
        if in_flight.is_empty() {
            if work.peek().is_none() {
                return;
            }
            continue;
        }
        match client.recv() {
            Ok((stream, response)) => {
                let tag = in_flight.remove(&stream).unwrap_or_else(|| panic!("an answer on unknown stream {stream}"));
                answer(
                    tag,
                    match response {
                        Response::Result(result) => Ok(result),
                        Response::Error(e) => Err(e.to_string()),
                        other => Err(format!("answered {other:?}")),
                    },
                );
            }
            // The connection is gone: nothing in flight gets an answer.
            Err(e) => {
                in_flight.drain().for_each(|(_, tag)| answer(tag, Err(e.to_string())));
            }
        }
    }
}

/// Writes `kv` rows k0..k{rows} = 0..rows at QUORUM through `addr` ([`CLIENT_THREADS`]
/// connections, [`PIPELINE_DEPTH`] writes in flight on each), each acknowledged.
pub fn load_kv(addr: SocketAddr, rows: usize) -> BTreeMap<String, i32> {
    let loaders: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut client = connect(addr);
                let prepared = client.prepare("INSERT INTO kv (k, v) VALUES (?, ?)").expect("prepare");
                let work = (t..rows)
                    .step_by(CLIENT_THREADS)
                    .map(|n| (vec![Some(Value::Text(format!("k{n}"))), Some(Value::Int(n as i32))], n));
                pipelined(&mut client, &prepared, work, Consistency::Quorum, |n, result| {
                    if let Err(e) = result {
                        panic!("loading k{n}: {e}");
                    }
                });
            })
        })
        .collect();
    loaders.into_iter().for_each(|t| t.join().expect("loader"));
    (0..rows).map(|n| (format!("k{n}"), n as i32)).collect()
}

/// Reads every key of `acked` in `kv` at `consistency` through `addr` ([`CLIENT_THREADS`]
/// connections, [`PIPELINE_DEPTH`] reads in flight on each); returns the keys whose read did
/// not give the acknowledged value.
pub fn check_all(addr: SocketAddr, acked: &BTreeMap<String, i32>, consistency: Consistency) -> Vec<String> {
    let keys: Vec<(String, i32)> = acked.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let chunk = keys.len().div_ceil(CLIENT_THREADS).max(1);
    let threads: Vec<_> = keys
        .chunks(chunk)
        .map(|part| {
            let part = part.to_vec();
            std::thread::spawn(move || {
                let mut client = connect(addr);
                let select = client.prepare("SELECT v FROM kv WHERE k = ?").expect("prepare");
                let mut wrong = Vec::new();
                let work = part.into_iter().map(|(key, value)| (vec![Some(Value::Text(key.clone()))], (key, value)));
                pipelined(&mut client, &select, work, consistency, |(key, value), result| {
                    let got = result.and_then(|r| match r {
                        QueryResult::Rows(rows) => Ok(rows.rows.first().and_then(|row| match row[0] {
                            Some(Value::Int(v)) => Some(v),
                            _ => None,
                        })),
                        other => Err(format!("a SELECT answered {other:?}")),
                    });
                    if got != Ok(Some(value)) {
                        wrong.push(format!("{key}: {got:?}"));
                    }
                });
                wrong
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().expect("reader thread")).collect()
}

/// Asserts that every row of `acked` reads back with its value at `consistency` through
/// `addr`; `what` says what a failure means.
pub fn assert_reads_back(addr: SocketAddr, acked: &BTreeMap<String, i32>, consistency: Consistency, what: &str) {
    let wrong = check_all(addr, acked, consistency);
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} acknowledged rows wrong at {consistency} through {addr}, e.g. {:?}",
        wrong.len(),
        acked.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// A client writing `kv` rows w0, w1... = 0, 1... at QUORUM through one node until `stop`,
/// keeping the acknowledged ones.
pub struct QuorumWriter {
    /// The acknowledged writes so far, in order.
    pub written: Arc<Mutex<Vec<(String, i32)>>>,
    thread: std::thread::JoinHandle<u64>,
}

impl QuorumWriter {
    pub fn start(addr: SocketAddr, stop: Arc<AtomicBool>) -> QuorumWriter {
        let written = Arc::new(Mutex::new(Vec::new()));
        let log = written.clone();
        let thread = std::thread::spawn(move || {
            let mut client = connect(addr);
            let prepared = client.prepare("INSERT INTO kv (k, v) VALUES (?, ?)").expect("prepare");
            let (mut n, mut failed) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{n}");
                match insert(&mut client, &prepared, &key, n) {
                    true => log.lock().unwrap().push((key, n)),
                    false => failed += 1,
                }
                n += 1;
            }
            failed
        });
        QuorumWriter { written, thread }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> usize {
        self.written.lock().unwrap().len()
    }

    /// Waits for the writer to end (after its stop flag was set): the acknowledged writes,
    /// and how many were not acknowledged.
    pub fn finish(self) -> (Vec<(String, i32)>, u64) {
        let failed = self.thread.join().expect("writer thread");
        let written = self.written.lock().unwrap().clone();
        (written, failed)
    }
}

/// `enigmadb admin netstats --json` of the node at `addr`.
pub fn netstats(addr: SocketAddr) -> serde_json::Value {
    let out = super::enigmadb().args(["admin", "netstats", "--host", &addr.to_string(), "--json"]).output().unwrap();
    assert!(out.status.success(), "admin netstats: {}", super::text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("admin netstats prints JSON")
}

/// The state (`UN`, `UL`, `DN`...) `observer` lists the node whose client address is `node`
/// in, if it lists it.
pub fn state_of(observer: SocketAddr, node: SocketAddr) -> Option<String> {
    let status = admin_status(observer)?;
    let row = rows(&status).into_iter().find(|r| r["address"] == node.to_string())?;
    row["state"].as_str().map(str::to_owned)
}

pub fn await_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONVERGE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out after {CONVERGE:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `enigmadb admin status --host ADDR --json`, parsed.
pub fn admin_status(addr: SocketAddr) -> Option<serde_json::Value> {
    admin_status_as(addr, &[])
}

/// [`admin_status`] with more flags (`-u`, `-p` on a node with authentication on).
pub fn admin_status_as(addr: SocketAddr, flags: &[String]) -> Option<serde_json::Value> {
    let mut command = super::enigmadb();
    command.args(["admin", "status", "--host", &addr.to_string(), "--json"]).args(flags);
    let out = command.output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Whether `observer` lists the node whose client address is `node` as up (UN).
pub fn sees_up(observer: SocketAddr, node: SocketAddr) -> bool {
    sees_up_as(observer, node, &[])
}

/// [`sees_up`] with more flags for `admin status`.
pub fn sees_up_as(observer: SocketAddr, node: SocketAddr, flags: &[String]) -> bool {
    let Some(status) = admin_status_as(observer, flags) else { return false };
    rows(&status).iter().any(|r| r["address"] == node.to_string() && r["state"] == "UN")
}

pub fn count_up(addr: SocketAddr) -> usize {
    count_up_as(addr, &[])
}

/// [`count_up`] with more flags for `admin status`.
pub fn count_up_as(addr: SocketAddr, flags: &[String]) -> usize {
    let Some(status) = admin_status_as(addr, flags) else { return 0 };
    rows(&status).iter().filter(|row| row["state"] == "UN").count()
}

/// The nodes of `admin status --json`.
pub fn rows(output: &serde_json::Value) -> Vec<serde_json::Value> {
    output["nodes"].as_array().cloned().unwrap_or_default()
}

/// The ring as one node prints it (`enigmadb admin ring --host ADDR --json`): per vnode in
/// ring order, its token, the owner's host id, client address and shard, and its state.
pub fn ring(addr: SocketAddr) -> Vec<RingVnode> {
    let out = super::enigmadb()
        .args(["admin", "ring", "--host", &addr.to_string(), "--json"])
        .output()
        .expect("running enigmadb admin ring");
    assert!(out.status.success(), "admin ring on {addr}: {}", super::text(&out.stderr));
    let ring: serde_json::Value = serde_json::from_slice(&out.stdout).expect("admin ring prints JSON");
    let vnodes = ring["ring"].as_array().expect("a vnode list");
    vnodes
        .iter()
        .map(|v| RingVnode {
            token: v["token"].as_str().and_then(|t| t.parse().ok()).expect("a token"),
            host_id: v["host_id"].as_str().expect("a host id").to_owned(),
            address: v["address"].as_str().expect("an address").to_owned(),
            shard: v["shard"].as_u64().expect("a shard"),
            state: v["state"].as_str().expect("a state").to_owned(),
        })
        .collect()
}

/// One line of `admin ring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingVnode {
    pub token: i64,
    pub host_id: String,
    pub address: String,
    pub shard: u64,
    pub state: String,
}

/// The host ids of the `rf` replicas of `token` in `ring` (SimpleStrategy: distinct owners
/// clockwise from the first vnode at or after the token, wrapping).
pub fn replicas_of(ring: &[RingVnode], token: i64, rf: usize) -> Vec<String> {
    let start = ring.partition_point(|v| v.token < token);
    let mut out: Vec<String> = Vec::new();
    for v in ring.iter().cycle().skip(start).take(ring.len()) {
        if out.len() == rf {
            break;
        }
        if !out.contains(&v.host_id) {
            out.push(v.host_id.clone());
        }
    }
    out
}

/// The token of every partition in the SSTables of node directory `dir` (every shard), read
/// with the SSTable inspector (`enigmadb sstable dump --json`). A file a compaction removed
/// between the listing and the dump is skipped.
pub fn sstable_tokens(dir: &std::path::Path) -> Vec<i64> {
    let mut tokens = Vec::new();
    let shards = std::fs::read_dir(dir)
        .expect("node directory")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("shard-"));
    for shard in shards {
        let Ok(files) = std::fs::read_dir(shard.path().join("sstables")) else { continue };
        for file in files.flatten().filter(|f| f.file_name().to_string_lossy().ends_with(".sst")) {
            let out = super::enigmadb()
                .args(["sstable", "dump", "--json", "--data-dir"])
                .arg(dir)
                .arg(file.path())
                .output()
                .expect("running enigmadb sstable dump");
            if !out.status.success() && !file.path().exists() {
                continue;
            }
            assert!(out.status.success(), "sstable dump {}: {}", file.path().display(), super::text(&out.stderr));
            let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sstable dump prints JSON");
            for p in dump["partitions"].as_array().expect("a partition list") {
                tokens.push(p["partition"]["token"].as_i64().expect("a token"));
            }
        }
    }
    tokens
}

/// Rows of ~1 KiB values in table `wide`, so that a stream throttled at 1 MB/s lasts a few
/// seconds.
pub const WIDE_ROWS: usize = 4_000;

/// Flags that make streams last a few seconds over [`WIDE_ROWS`]: a short ring delay, 1 MB/s.
pub const THROTTLED: [&str; 4] = ["--ring-delay-ms", "1000", "--stream-throughput-mb-per-s", "1"];

/// Creates table `wide (k text PRIMARY KEY, v text)` at RF 3, waits until nodes 1 to 3 know
/// it, and loads [`WIDE_ROWS`] rows at QUORUM through node 1; returns them.
pub fn load_wide(cluster: &TestCluster) -> BTreeMap<String, String> {
    let mut first = connect(cluster.addr(1));
    super::query_at(
        &mut first,
        "CREATE TABLE wide (k text PRIMARY KEY, v text) WITH replication_factor = 3",
        Consistency::One,
    )
    .expect("CREATE TABLE wide");
    for i in 1..=3 {
        let mut client = connect(cluster.addr(i));
        await_until(&format!("node {i} knows table wide"), || {
            super::query_at(&mut client, "SELECT v FROM wide WHERE k = 'absent'", Consistency::One).is_ok()
        });
    }
    let insert = first.prepare("INSERT INTO wide (k, v) VALUES (?, ?)").expect("prepare");
    let rows: BTreeMap<String, String> =
        (0..WIDE_ROWS).map(|n| (format!("k{n}"), format!("{n}-{}", "v".repeat(1000)))).collect();
    for (k, v) in &rows {
        let values = [Some(Value::Text(k.clone())), Some(Value::Text(v.clone()))];
        first.execute(&insert, &values, at(Consistency::Quorum)).expect("loading wide");
    }
    rows
}

/// Keys of `rows` that do not read back from table `wide` with their value at `consistency`
/// through `addr`.
pub fn wrong_wide(addr: SocketAddr, rows: &BTreeMap<String, String>, consistency: Consistency) -> Vec<String> {
    let mut client = connect(addr);
    let select = client.prepare("SELECT v FROM wide WHERE k = ?").expect("prepare");
    rows.iter()
        .filter(|(k, v)| {
            let got = client.execute(&select, &[Some(Value::Text((*k).clone()))], at(consistency));
            !matches!(got, Ok(QueryResult::Rows(r)) if r.rows.first().and_then(|row| row[0].clone()) == Some(Value::Text((*v).clone())))
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Waits until the node at `addr` streams in `mode` (`JOINING: streaming`, `LEAVING:
/// streaming`): some bytes moved, not every range done. Returns its netstats then.
pub fn await_streaming(addr: SocketAddr, mode: &str) -> serde_json::Value {
    let mut seen = serde_json::Value::Null;
    await_until(&format!("the node at {addr} is streaming ({mode})"), || {
        seen = netstats(addr);
        let moved: u64 =
            seen["receiving"].as_array().map_or(0, |a| a.iter().map(|p| p["bytes"].as_u64().unwrap_or(0)).sum());
        seen["mode"] == mode && moved > 0 && seen["ranges_done"] != seen["ranges_total"]
    });
    seen
}

//! One chaos run: a seeded workload of unique-valued writes (QUORUM and ONE) and QUORUM reads
//! against an RF=3 cluster in network namespaces, faults injected on a seeded schedule (network
//! faults, kills, pauses, and membership changes: a node joining into a spare slot, a node
//! decommissioning), then heal, convergence (repair where the build has it, reads at ALL), a
//! stop, and the checker over the history and every member's copy. It records and reports; the verdict is the
//! checker's, and the caller decides what fails.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wire::client::{Client, ClientError, ClientOptions};
use wire::protocol::{QueryParams, QueryResult};
use wire::{Consistency, Value};

use crate::checker::{self, Final, History, ReadOp, Verdict, WriteOp, WriteOutcome};
use crate::common;
use crate::netns::{Fault, NetCluster, Network, NodeState};
use crate::relay::SLOW_DELAY;

/// Replication factor of the workload's table.
pub const RF: usize = 3;
const TABLE: &str = "chaos";
/// How long a client waits for an answer; above the nodes' own request timeouts, so that a
/// live coordinator answers with a typed error first.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The nodes' write and read request timeouts, ms.
const REQUEST_TIMEOUT_MS: &str = "1000";
/// Attempts at reading one key at ALL while converging (one every CONVERGE_RETRY).
const CONVERGE_ATTEMPTS: u32 = 60;
const CONVERGE_RETRY: Duration = Duration::from_millis(500);
/// Longest wait for every node to see every other one up after the heal.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for a joining node to be UN on every member.
const JOIN_TIMEOUT: Duration = Duration::from_secs(90);
/// Attempts at the decommission that brings the cluster back to its size before the checks.
const FINAL_DECOMMISSION_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    pub duration: Duration,
    pub nodes: usize,
    /// Distinct keys written (few, so that reads and writes of a key interleave).
    pub keys: u32,
    /// Client threads, each sending one request at a time.
    pub clients: usize,
    /// Pause between two requests of one client (bounds the load on a shared 2-core machine).
    pub think: Duration,
}

impl ChaosConfig {
    pub fn new(seed: u64, duration: Duration, nodes: usize) -> ChaosConfig {
        ChaosConfig { seed, duration, nodes, keys: 24, clients: 4, think: Duration::from_millis(10) }
    }
}

/// The kinds of fault the schedule draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    Partition,
    OneWayDrop,
    Isolate,
    Slow,
    Kill,
    Pause,
    /// A new node joins (bootstraps) into the spare slot.
    Join,
    /// A member (never node 1, the seed) decommissions.
    Decommission,
}

impl FaultKind {
    const ALL: [FaultKind; 8] = [
        FaultKind::Partition,
        FaultKind::OneWayDrop,
        FaultKind::Isolate,
        FaultKind::Slow,
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Join,
        FaultKind::Decommission,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition (both ways)",
            FaultKind::OneWayDrop => "one-way drop",
            FaultKind::Isolate => "node isolated",
            FaultKind::Slow => "slow link",
            FaultKind::Kill => "SIGKILL + restart",
            FaultKind::Pause => "SIGSTOP + SIGCONT",
            FaultKind::Join => "join",
            FaultKind::Decommission => "decommission",
        }
    }
}

pub struct Report {
    pub config: ChaosConfig,
    pub writes: usize,
    pub writes_acked: usize,
    pub writes_acked_by_level: BTreeMap<&'static str, usize>,
    pub reads: usize,
    pub reads_answered: usize,
    pub faults: BTreeMap<FaultKind, usize>,
    /// Decommissions that failed (the node stayed a member), with why.
    pub failed_decommissions: Vec<String>,
    /// From the heal until every key was read at ALL twice with the same answers.
    pub convergence: Duration,
    /// Which anti-entropy steps ran ("admin repair", "read at ALL").
    pub repair_steps: Vec<&'static str>,
    pub verdict: Verdict,
}

impl Report {
    pub fn print(&self) {
        let c = &self.config;
        println!(
            "chaos report: seed {}, {} s, {} nodes, RF {RF}, {} keys, {} clients",
            c.seed,
            c.duration.as_secs(),
            c.nodes,
            c.keys,
            c.clients
        );
        let by_level: Vec<String> = self.writes_acked_by_level.iter().map(|(l, n)| format!("{l} {n}")).collect();
        println!("  operations:          {} ({} writes, {} reads)", self.writes + self.reads, self.writes, self.reads);
        println!(
            "  acknowledged:        {} writes ({}), {} reads answered",
            self.writes_acked,
            by_level.join(", "),
            self.reads_answered
        );
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{} {n}", k.name())).collect();
        println!("  faults injected:     {} ({})", self.faults.values().sum::<usize>(), faults.join(", "));
        for why in &self.failed_decommissions {
            println!("  failed decommission: {why}");
        }
        if self.faults.contains_key(&FaultKind::Slow) {
            println!("  slow links:          peer messages held {} ms each way", SLOW_DELAY.as_millis());
        }
        println!(
            "  convergence:         {:.1} s after the heal ({})",
            self.convergence.as_secs_f64(),
            self.repair_steps.join(", ")
        );
        let v = &self.verdict;
        println!("  lost:                {} ({} QUORUM, {} ONE)", v.lost(), v.lost_quorum.len(), v.lost_one.len());
        println!("  stale QUORUM reads:  {}", v.stale_quorum_reads.len());
        println!("  phantom values:      {}", v.phantoms.len());
        println!("  divergent keys:      {}", v.divergent.len());
        let examples =
            v.lost_quorum.iter().chain(&v.lost_one).chain(&v.stale_quorum_reads).chain(&v.phantoms).chain(&v.divergent);
        for line in examples.take(20) {
            println!("    {line}");
        }
    }
}

/// Creates the network and the cluster, runs the workload and the faults, heals, converges,
/// checks. Panics only on a harness failure (the network, a node that cannot start).
pub fn run(config: ChaosConfig) -> Report {
    // One spare slot: a join takes it, or the slot of a node that decommissioned.
    let slots = config.nodes + 1;
    let net = Network::create(slots).unwrap_or_else(|e| panic!("creating the chaos network: {e}"));
    let flags = node_flags();
    let mut cluster =
        NetCluster::start_members(&format!("chaos-{}", config.seed), net, vec![flags; slots], config.nodes);
    create_table(&cluster);

    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Clients pick any slot; an empty one refuses the connection (nothing is sent).
    let addrs: Vec<SocketAddr> = (1..=slots).map(|i| cluster.addr(i)).collect();
    let clients: Vec<_> = (0..config.clients)
        .map(|c| {
            let (config, addrs, stop) = (config.clone(), addrs.clone(), stop.clone());
            std::thread::spawn(move || client_loop(c, &config, &addrs, epoch, &stop))
        })
        .collect();

    let mut rng = StdRng::seed_from_u64(config.seed ^ 0xfa17);
    let mut faults = BTreeMap::new();
    let mut failed_decommissions = Vec::new();
    let end = epoch + config.duration;
    // Leave the last seconds fault-free so that the heal starts from a quiet cluster.
    while Instant::now() + Duration::from_secs(6) < end {
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..2_000)));
        let mut kind = FaultKind::ALL[rng.gen_range(0..FaultKind::ALL.len())];
        if matches!(kind, FaultKind::Join | FaultKind::Decommission) {
            // The one a membership change can be now: a join into the spare slot, or a
            // decommission back to the cluster's size (never fewer nodes than RF).
            kind = match cluster.members().len() == config.nodes {
                true => FaultKind::Join,
                false => FaultKind::Decommission,
            };
        }
        let hold = Duration::from_millis(rng.gen_range(2_000..5_000));
        if let Err(why) = inject(&mut cluster, &mut rng, kind, hold) {
            failed_decommissions.push(why);
        }
        *faults.entry(kind).or_insert(0) += 1;
    }
    // Back to the cluster's size under the workload, so that every member replicates every
    // key at the checks (the checker counts exactly RF copies among the members).
    let mut attempts = 0;
    while cluster.members().len() > config.nodes {
        attempts += 1;
        assert!(
            attempts <= FINAL_DECOMMISSION_ATTEMPTS,
            "no decommission succeeded (seed {}): {failed_decommissions:?}",
            config.seed
        );
        match inject(&mut cluster, &mut rng, FaultKind::Decommission, Duration::ZERO) {
            Ok(()) => *faults.entry(FaultKind::Decommission).or_insert(0) += 1,
            Err(why) => failed_decommissions.push(why),
        }
    }
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    stop.store(true, Ordering::Relaxed);
    let mut history = History::default();
    for client in clients {
        history.merge(client.join().expect("a client thread panicked"));
    }

    // Heal: nothing is left broken by inject, but check every node is running and up.
    let heal = Instant::now();
    cluster.net.heal().unwrap_or_else(|e| panic!("healing the network: {e}"));
    for i in 1..=slots {
        match cluster.state(i) {
            NodeState::Running | NodeState::Gone => {}
            NodeState::Paused => cluster.resume(i),
            NodeState::Killed => cluster.restart(i),
        }
    }
    let members = cluster.members();
    let addrs: Vec<SocketAddr> = members.iter().map(|&i| cluster.addr(i)).collect();
    assert!(
        cluster.all_up_within(HEAL_TIMEOUT),
        "nodes do not all see each other up {HEAL_TIMEOUT:?} after the heal (seed {})",
        config.seed
    );
    let mut fin = Final { replication: RF.min(config.nodes), ..Final::default() };
    fin.quorum = read_every_key(&addrs, config.keys, Consistency::Quorum, config.seed);
    let mut repair_steps = Vec::new();
    if admin_has_repair() {
        for addr in &addrs {
            let out = common::enigmadb()
                .args(["admin", "repair", "--host", &addr.to_string()])
                .output()
                .expect("running admin repair");
            assert!(out.status.success(), "admin repair on {addr}: {}", common::text(&out.stderr));
        }
        repair_steps.push("admin repair on every node");
    }
    // A read at ALL compares every replica and repairs the stale ones (in the background);
    // the second pass must read the same, and leaves the repairs time to land.
    let mut all = read_every_key(&addrs, config.keys, Consistency::All, config.seed);
    loop {
        let again = read_every_key(&addrs, config.keys, Consistency::All, config.seed);
        if again == all {
            break;
        }
        assert!(
            heal.elapsed() < HEAL_TIMEOUT * 2,
            "reads at ALL still change {:?} after the heal (seed {})",
            heal.elapsed(),
            config.seed
        );
        all = again;
    }
    repair_steps.push("every key read at ALL (read repair), twice");
    let convergence = heal.elapsed();
    fin.all = all;
    if faults.contains_key(&FaultKind::Join) || faults.contains_key(&FaultKind::Decommission) {
        // Ranges moved: a node keeps the copies of ranges it no longer replicates until a
        // cleanup drops them (as in Cassandra), and the checker counts copies on every member.
        for addr in &addrs {
            let out = common::enigmadb()
                .args(["admin", "cleanup", "--host", &addr.to_string()])
                .output()
                .expect("running admin cleanup");
            assert!(out.status.success(), "admin cleanup on {addr}: {}", common::text(&out.stderr));
        }
        repair_steps.push("admin cleanup on every member (ranges moved)");
    }

    cluster.stop_all();
    fin.replicas = members
        .iter()
        .map(|&i| {
            common::dump_key_value_table(&cluster.node_dir(i), 1, TABLE)
                .into_iter()
                .map(|(k, v)| (parse_key(&k), v))
                .collect()
        })
        .collect();
    let verdict = checker::check(&history, &fin);

    let acked: Vec<&WriteOp> = history.writes.iter().filter(|w| w.outcome == WriteOutcome::Acked).collect();
    let mut writes_acked_by_level = BTreeMap::new();
    for w in &acked {
        *writes_acked_by_level.entry(w.level.name()).or_insert(0) += 1;
    }
    Report {
        writes: history.writes.len(),
        writes_acked: acked.len(),
        writes_acked_by_level,
        reads: history.reads.len(),
        reads_answered: history.reads.iter().filter(|r| r.result.is_some()).count(),
        faults,
        failed_decommissions,
        convergence,
        repair_steps,
        verdict,
        config,
    }
}

/// Every node's flags: short request timeouts, and hinted handoff when this build has it.
fn node_flags() -> Vec<String> {
    let mut flags = vec!["--write-request-timeout-ms".to_owned(), REQUEST_TIMEOUT_MS.into()];
    // Joins and decommissions announce themselves this long before they stream.
    flags.extend(["--ring-delay-ms".to_owned(), "2000".into()]);
    flags.extend(["--read-request-timeout-ms".to_owned(), REQUEST_TIMEOUT_MS.into()]);
    let help = common::enigmadb().args(["server", "--help"]).output().expect("enigmadb server --help");
    let help = common::text(&help.stdout);
    if let Some(rest) = help.split("--hinted-handoff-enabled").nth(1) {
        flags.push("--hinted-handoff-enabled".into());
        // A flag with a value (`<BOOL>`) or a switch.
        if rest.trim_start().starts_with('<') {
            flags.push("true".into());
        }
    }
    flags
}

fn admin_has_repair() -> bool {
    let help = common::enigmadb().args(["admin", "--help"]).output().expect("enigmadb admin --help");
    common::text(&help.stdout).lines().any(|l| l.trim_start().starts_with("repair "))
}

fn create_table(cluster: &NetCluster) {
    let ddl = format!("CREATE TABLE {TABLE} (k text PRIMARY KEY, v text) WITH replication_factor = {RF}");
    common::run_ok(cluster.addr(1), &ddl);
    for i in cluster.members() {
        let mut client = common::connect(cluster.addr(i));
        let probe = format!("SELECT v FROM {TABLE} WHERE k = 'absent'");
        common::cluster::await_until(&format!("node {i} knows table {TABLE}"), || {
            common::query(&mut client, &probe).is_ok()
        });
    }
}

fn key_name(key: u32) -> String {
    format!("k{key}")
}

fn parse_key(name: &str) -> u32 {
    name.strip_prefix('k')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a key the workload never writes: {name:?}"))
}

fn micros(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

fn connect(addr: SocketAddr) -> Option<Client> {
    let options = ClientOptions { timeout: Some(CLIENT_TIMEOUT), ..ClientOptions::default() };
    Client::connect_with(addr, options).ok()
}

/// One read of `key` at `level`: the value, no row, or the client error.
fn read_value(client: &mut Client, key: u32, level: Consistency) -> Result<Option<String>, ClientError> {
    let text = format!("SELECT v FROM {TABLE} WHERE k = '{}'", key_name(key));
    match client.query_with(&text, QueryParams::with_consistency(level))? {
        QueryResult::Rows(rows) => Ok(rows.rows.first().and_then(|row| match row.first() {
            Some(Some(Value::Text(v))) => Some(v.clone()),
            _ => None,
        })),
        other => Err(ClientError::Unexpected(format!("a SELECT answered {other:?}"))),
    }
}

/// One client: one request at a time to a random node, each recorded with its outcome. A
/// request without an answer drops the connection (its answer may come late).
fn client_loop(c: usize, config: &ChaosConfig, addrs: &[SocketAddr], epoch: Instant, stop: &AtomicBool) -> History {
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(c as u64 + 1));
    let mut connections: Vec<Option<Client>> = addrs.iter().map(|_| None).collect();
    let mut history = History::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(config.think);
        let node = rng.gen_range(0..addrs.len());
        let key = rng.gen_range(0..config.keys);
        let start = micros(epoch);
        let Some(mut client) = connections[node].take().or_else(|| connect(addrs[node])) else {
            // Nothing was sent (the node is down or cut off): not part of the history.
            continue;
        };
        if rng.gen_bool(0.5) {
            seq += 1;
            let value = format!("c{c}-{seq}");
            let level = if rng.gen_bool(0.7) { Consistency::Quorum } else { Consistency::One };
            let text = format!("INSERT INTO {TABLE} (k, v) VALUES ('{}', '{value}')", key_name(key));
            let outcome = match client.query_with(&text, QueryParams::with_consistency(level)) {
                Ok(_) => WriteOutcome::Acked,
                Err(ClientError::Server(_)) => WriteOutcome::Failed,
                Err(_) => WriteOutcome::Unknown,
            };
            if outcome != WriteOutcome::Unknown {
                connections[node] = Some(client);
            }
            history.writes.push(WriteOp { key, value, level, start, end: micros(epoch), outcome });
        } else {
            let (result, keep) = match read_value(&mut client, key, Consistency::Quorum) {
                Ok(v) => (Some(v), true),
                Err(ClientError::Server(_)) => (None, true),
                // No answer: the connection is dropped (its answer may come late).
                Err(_) => (None, false),
            };
            if keep {
                connections[node] = Some(client);
            }
            history.reads.push(ReadOp { key, level: Consistency::Quorum, start, end: micros(epoch), result });
        }
    }
    history
}

/// Every key read at `level`, each through the next node in turn, retried until answered.
fn read_every_key(addrs: &[SocketAddr], keys: u32, level: Consistency, seed: u64) -> BTreeMap<u32, Option<String>> {
    let mut out = BTreeMap::new();
    let mut connections: HashMap<usize, Client> = HashMap::new();
    for key in 0..keys {
        let mut attempt = 0;
        let value = loop {
            let node = (key as usize + attempt as usize) % addrs.len();
            let result = match connections.get_mut(&node) {
                Some(client) => read_value(client, key, level),
                None => match connect(addrs[node]) {
                    Some(mut client) => {
                        let r = read_value(&mut client, key, level);
                        connections.insert(node, client);
                        r
                    }
                    None => Err(ClientError::Closed),
                },
            };
            match result {
                Ok(v) => break v,
                Err(e) => {
                    attempt += 1;
                    assert!(
                        attempt < CONVERGE_ATTEMPTS,
                        "key {key} unreadable at {} after the heal: {e} (seed {seed})",
                        level.name()
                    );
                    connections.remove(&node);
                    std::thread::sleep(CONVERGE_RETRY);
                }
            }
        };
        out.insert(key, value);
    }
    out
}

/// Applies one fault of `kind` to members the seeded `rng` picks, holds it, and ends it. A
/// join happens in the empty slot and lasts until the new node is UN everywhere; a
/// decommission (of a member other than node 1, the seed) lasts until the node left, and is
/// Err, saying why, when it failed (the node stays a member: Cassandra's node goes back to
/// NORMAL too).
fn inject(cluster: &mut NetCluster, rng: &mut StdRng, kind: FaultKind, hold: Duration) -> Result<(), String> {
    let members = cluster.members();
    let n = members.len();
    let at = rng.gen_range(0..n);
    let (a, b) = (members[at], members[(at + rng.gen_range(1..n)) % n]);
    let started = Instant::now();
    match kind {
        FaultKind::Partition | FaultKind::OneWayDrop | FaultKind::Isolate | FaultKind::Slow => {
            let fault = match kind {
                FaultKind::Partition => Fault::Partition(a, b),
                FaultKind::OneWayDrop => Fault::OneWay { from: a, to: b },
                FaultKind::Isolate => Fault::Isolate(a),
                _ => Fault::Slow(a),
            };
            cluster.net.inject(fault).unwrap_or_else(|e| panic!("injecting {fault:?}: {e}"));
            std::thread::sleep(hold);
            cluster.net.heal().unwrap_or_else(|e| panic!("healing {fault:?}: {e}"));
            println!("chaos: {fault:?} for {:.1} s", started.elapsed().as_secs_f64());
        }
        FaultKind::Kill => {
            cluster.kill(a);
            std::thread::sleep(hold);
            cluster.restart(a);
            println!("chaos: node {a} killed, restarted after {:.1} s", started.elapsed().as_secs_f64());
        }
        FaultKind::Pause => {
            cluster.pause(a);
            std::thread::sleep(hold);
            cluster.resume(a);
            println!("chaos: node {a} paused for {:.1} s", started.elapsed().as_secs_f64());
        }
        FaultKind::Join => {
            let slot = (1..=cluster.len()).find(|&i| cluster.state(i) == NodeState::Gone).expect("a spare slot");
            cluster.join(slot, JOIN_TIMEOUT).unwrap_or_else(|why| panic!("the join of node {slot} failed: {why}"));
            println!("chaos: node {slot} joined in {:.1} s", started.elapsed().as_secs_f64());
        }
        FaultKind::Decommission => {
            let leaving = members[1 + rng.gen_range(0..n - 1)];
            match cluster.decommission(leaving) {
                Ok(()) => println!("chaos: node {leaving} decommissioned in {:.1} s", started.elapsed().as_secs_f64()),
                Err(why) => {
                    println!("chaos: the decommission of node {leaving} failed: {why}");
                    return Err(format!("node {leaving}: {why}"));
                }
            }
        }
    }
    Ok(())
}

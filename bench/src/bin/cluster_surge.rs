//! The cluster surge: starts N `enigmadb server` processes on 127.0.0.1..N (1 shard each,
//! unpinned), forms a cluster, creates the surge table WITH replication_factor = N, then writes
//! rows at ONE, writes as many at QUORUM, and reads random written rows at QUORUM, spreading the
//! requests over every node's client port. A 1-node RF=1 cluster with the same flags runs first
//! as the baseline, so the report gives the cost of replication measured in the same run.
//! It measures and prints; it asserts nothing, and it kills every process it started.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::latency::{format_us, LatencySummary};
use bench::machine::Machine;
use bench::pipeline::{
    check_in_flight, join_connections, pipeline, split_window, start_connections, ConnectionPlan, ConnectionShape,
    PhaseOutcome, PhaseTotals, Prepared, INSERT, SELECT,
};
use bench::rendezvous::Rendezvous;
use bench::report::{per_second, ratio, thousands, write_json};
use bench::server::{RunSetup, ServerProcess, ServerRunArgs};
use bench::surge::{Mode, ValuePool, KEY_BYTES};
use bench::usage::{CpuShares, ProcessUsage, Snapshot};
use clap::Parser;
use serde::Serialize;
use wire::client::Client;
use wire::protocol::Consistency;

/// How long every node may take to see every node up (UN) after the last one started.
const CLUSTER_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the table created on node 1 may take to be usable on every node.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two looks at the cluster's state while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Most nodes a run starts: one loopback address 127.0.0.i each.
const MAX_NODES: usize = 254;

#[derive(Parser, Debug)]
#[command(about = "Cluster surge: N local `enigmadb server` nodes with RF=N, inserts at ONE and at QUORUM, \
             point reads at QUORUM, against a 1-node RF=1 baseline (prints numbers, asserts nothing)")]
struct Args {
    /// Nodes of the cluster; the table's replication factor is the same.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Rows inserted in each write phase (ONE, then QUORUM, on distinct rows).
    #[arg(long, default_value_t = 100_000)]
    inserts: u64,
    /// Point reads at QUORUM of random rows written by both write phases (0 skips them).
    #[arg(long, default_value_t = 100_000)]
    reads: u64,
    /// Client connections to each node; the in-flight requests are split over all of them.
    #[arg(long, default_value_t = 1)]
    connections_per_node: usize,
    /// Skip the 1-node RF=1 baseline.
    #[arg(long)]
    no_baseline: bool,
    /// The nodes' WAL sync mode.
    #[arg(long, value_enum, default_value_t = Mode::Periodic)]
    mode: Mode,
    /// Where the JSON report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/cluster-surge.json"))]
    report: PathBuf,
    /// The single-node server surge report to quote (skipped when absent).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/server-surge-quiet.json"))]
    server_report: PathBuf,
    #[command(flatten)]
    run: ServerRunArgs,
}

/// The phases of a run, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    InsertsOne,
    InsertsQuorum,
    ReadsQuorum,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::InsertsOne, Phase::InsertsQuorum, Phase::ReadsQuorum];

    fn name(self) -> &'static str {
        match self {
            Phase::InsertsOne => "inserts-one",
            Phase::InsertsQuorum => "inserts-quorum",
            Phase::ReadsQuorum => "reads-quorum",
        }
    }

    fn consistency(self) -> Consistency {
        match self {
            Phase::InsertsOne => Consistency::One,
            Phase::InsertsQuorum | Phase::ReadsQuorum => Consistency::Quorum,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster

/// The running nodes of one topology; dropping it kills every one ([`ServerProcess`]'s guard).
struct Cluster {
    nodes: Vec<ServerProcess>,
}

/// The loopback address of node `i` (0-based): 127.0.0.(i+1).
fn node_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, (i + 1) as u8))
}

/// A port free on `ip` now (bound and released: another process could take it meanwhile, which
/// only makes the node fail to start with a clear error).
fn free_port(ip: IpAddr) -> Result<u16> {
    let listener = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0 to find a free port"))?;
    Ok(listener.local_addr()?.port())
}

impl Cluster {
    /// Starts `nodes` nodes on 127.0.0.1..=nodes, node 1 being every node's seed, and waits
    /// until each one sees all of them up.
    fn start(args: &Args, nodes: usize, dir: &Path) -> Result<Cluster> {
        let mut cluster = Cluster { nodes: Vec::with_capacity(nodes) };
        let seed = SocketAddr::new(node_ip(0), free_port(node_ip(0))?);
        for i in 0..nodes {
            let ip = node_ip(i);
            let client = SocketAddr::new(ip, free_port(ip)?);
            let peer = if i == 0 { seed } else { SocketAddr::new(ip, free_port(ip)?) };
            let data_dir = dir.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            let flags: Vec<String> = [
                "--listen",
                &client.to_string(),
                "--peer-listen",
                &peer.to_string(),
                "--seeds",
                &seed.to_string(),
                "--metrics-listen",
                "off",
                "--data-dir",
                &data_dir.display().to_string(),
                "--shards",
                "1",
                "--pin-shards",
                "false",
                "--sync-mode",
                args.mode.name(),
                "--periodic-sync-ms",
                &args.run.periodic_sync_ms.to_string(),
                "--memtable-budget",
                &args.run.memtable_budget,
                "--cache-budget",
                &args.run.cache_budget,
            ]
            .map(String::from)
            .to_vec();
            cluster.nodes.push(ServerProcess::start(&args.run.enigmadb, &flags, &format!("node {}", i + 1))?);
        }
        cluster.wait_all_up(&args.run.enigmadb)?;
        Ok(cluster)
    }

    /// Waits until `enigmadb admin status` on every node lists every node as UN.
    fn wait_all_up(&self, enigmadb: &Path) -> Result<()> {
        let deadline = Instant::now() + CLUSTER_UP_TIMEOUT;
        for node in &self.nodes {
            loop {
                let out = Command::new(enigmadb)
                    .args(["admin", "status", "--host", &node.addr.to_string()])
                    .output()
                    .with_context(|| format!("running {} admin status", enigmadb.display()))?;
                let text = String::from_utf8_lossy(&out.stdout);
                let up = nodes_up(&text);
                if out.status.success() && up == self.nodes.len() {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!(
                        "{} sees {up} of {} nodes up after {CLUSTER_UP_TIMEOUT:?}; its status:\n{text}{}",
                        node.addr,
                        self.nodes.len(),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        Ok(())
    }

    /// Stops every node (SIGTERM) and returns how each one ended.
    fn stop(mut self) -> Vec<String> {
        self.nodes.iter_mut().map(ServerProcess::stop_for_report).collect()
    }
}

/// Lines of `enigmadb admin status` output that list a node as up and normal.
fn nodes_up(status: &str) -> usize {
    status.lines().filter(|l| l.trim_start().starts_with("UN")).count()
}

// ---------------------------------------------------------------------------------------------
// The client side: one thread per connection

/// Connects, then runs every phase between two meetings (go, done). A connection that fails to
/// start abandons the rendezvous, which releases the driver and the other connections.
fn run_connection(plan: ConnectionPlan) -> Result<Vec<PhaseOutcome>> {
    let Prepared { mut client, insert: insert_id, select: select_id } = match plan.connect() {
        Ok(connected) => connected,
        Err(e) => {
            plan.meet.abandon();
            return Err(e);
        }
    };
    let mut outcomes = Vec::new();
    if !plan.meet.wait() {
        bail!("connection {}: the run was abandoned", plan.index);
    }
    for phase in Phase::ALL {
        if !plan.meet.wait() {
            bail!("connection {}: the run was abandoned", plan.index);
        }
        let inserts = plan.shape.inserts;
        let outcome = match phase {
            Phase::InsertsOne => {
                pipeline(&mut client, plan.window, &mut plan.inserts(insert_id, inserts, phase.consistency()))
            }
            Phase::InsertsQuorum => {
                pipeline(&mut client, plan.window, &mut plan.inserts(insert_id, 2 * inserts, phase.consistency()))
            }
            Phase::ReadsQuorum => {
                pipeline(&mut client, plan.window, &mut plan.reads(select_id, 2 * inserts, phase.consistency()))
            }
        };
        outcomes.push(outcome);
        if !plan.meet.wait() {
            bail!("connection {}: the run was abandoned", plan.index);
        }
    }
    Ok(outcomes)
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// The client's and every node's counters at one moment.
struct Moment {
    client: Snapshot,
    nodes: Vec<ProcessUsage>,
}

impl Moment {
    fn take(cluster: &Cluster, dir: &Path, previous: Option<&Moment>) -> Result<Moment> {
        let disk = previous.and_then(|m| m.client.disk.as_ref());
        let nodes = cluster
            .nodes
            .iter()
            .map(|n| ProcessUsage::read(n.pid).with_context(|| format!("reading the CPU counters of pid {}", n.pid)))
            .collect::<Result<_>>()?;
        Ok(Moment { client: Snapshot::take(dir, disk)?, nodes })
    }
}

#[derive(Serialize)]
struct NodeCpu {
    node: usize,
    addr: String,
    cpu_seconds: f64,
    /// CPU time / wall time: 1.0 is one CPU kept busy.
    busy_share: f64,
}

#[derive(Serialize)]
struct PhaseReport {
    name: &'static str,
    consistency: &'static str,
    /// Requests answered correctly.
    ops: u64,
    /// Error answers, failed checks and connection failures, by kind (there should be none).
    errors: std::collections::BTreeMap<String, u64>,
    wall_seconds: f64,
    ops_per_second: f64,
    /// Request sent to its answer received, measured by the client.
    latency_us: LatencySummary,
    nodes_cpu: Vec<NodeCpu>,
    /// All nodes' CPU / wall time (2.0 = both CPUs of a 2-CPU machine).
    nodes_busy_share: f64,
    /// All nodes' CPU per answered request.
    nodes_cpu_us_per_op: f64,
    client_busy_share: f64,
    client_cpu_us_per_op: f64,
    machine_cpu: Option<CpuShares>,
    /// The machine's busy CPUs less the nodes and the client, as a share of one CPU.
    other_processes_busy_share: Option<f64>,
}

fn phase_report(
    phase: Phase,
    outcomes: &[Vec<PhaseOutcome>],
    index: usize,
    cluster: &Cluster,
    before: &Moment,
    after: &Moment,
) -> PhaseReport {
    let PhaseTotals { ops, errors, wall_seconds, latency } =
        PhaseTotals::of(outcomes.iter().filter_map(|o| o.get(index)));
    let window = after.client.at.saturating_duration_since(before.client.at).as_secs_f64();
    let nodes_cpu: Vec<NodeCpu> = before
        .nodes
        .iter()
        .zip(&after.nodes)
        .enumerate()
        .map(|(i, (b, a))| {
            let cpu = a.total.since(&b.total).total().as_secs_f64();
            NodeCpu {
                node: i + 1,
                addr: cluster.nodes[i].addr.to_string(),
                cpu_seconds: cpu,
                busy_share: ratio(cpu, window),
            }
        })
        .collect();
    let nodes_cpu_seconds: f64 = nodes_cpu.iter().map(|n| n.cpu_seconds).sum();
    let client_cpu = after.client.process.since(&before.client.process).total().as_secs_f64();
    let machine_cpu = after.client.machine_since(&before.client);
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let other_processes_busy_share = machine_cpu.map(|m| {
        let machine_busy = (m.user + m.system + m.interrupts) * nproc;
        (machine_busy - ratio(nodes_cpu_seconds + client_cpu, window)).max(0.0)
    });
    PhaseReport {
        name: phase.name(),
        consistency: phase.consistency().name(),
        ops,
        errors,
        wall_seconds,
        ops_per_second: per_second(ops as f64, wall_seconds),
        latency_us: latency.summary(),
        nodes_cpu,
        nodes_busy_share: ratio(nodes_cpu_seconds, window),
        nodes_cpu_us_per_op: ratio(nodes_cpu_seconds * 1e6, ops as f64),
        client_busy_share: ratio(client_cpu, window),
        client_cpu_us_per_op: ratio(client_cpu * 1e6, ops as f64),
        machine_cpu,
        other_processes_busy_share,
    }
}

#[derive(Serialize)]
struct TopologyReport {
    name: String,
    nodes: usize,
    replication_factor: usize,
    connections: usize,
    in_flight_per_connection: Vec<usize>,
    phases: Vec<PhaseReport>,
    node_exits: Vec<String>,
}

/// Runs every phase against a fresh cluster of `nodes` nodes with RF = `nodes`.
fn run_topology(args: &Args, nodes: usize, run_dir: &Path, values: &Arc<ValuePool>) -> Result<TopologyReport> {
    let name = format!("{nodes}-node-rf{nodes}");
    let dir = run_dir.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let cluster = Cluster::start(args, nodes, &dir)?;
    let create = format!("CREATE TABLE surge (key blob PRIMARY KEY, value blob) WITH replication_factor = {nodes}");
    let mut setup = Client::connect(cluster.nodes[0].addr).context("connecting to create the table")?;
    setup.set_timeout(Some(Duration::from_secs(args.run.answer_timeout_s)))?;
    setup.query(&create).with_context(|| format!("running {create}"))?;
    drop(setup);

    let connections = nodes * args.connections_per_node;
    let windows = split_window(args.run.in_flight, connections);
    let meet = Arc::new(Rendezvous::new(connections + 1));
    let shape = ConnectionShape {
        answer_timeout: Duration::from_secs(args.run.answer_timeout_s),
        inserts: args.inserts,
        reads: args.reads,
        values: values.clone(),
        seed: args.run.seed,
        schema_wait: SCHEMA_TIMEOUT,
    };
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.addr).collect();
    let handles = start_connections(&addrs, &windows, shape, &meet, run_connection)?;
    // Every connection is up with its statements prepared (false: one of them failed).
    let mut met = meet.wait();
    let mut moments = Vec::new();
    for _ in Phase::ALL {
        if !met {
            break;
        }
        let before = Moment::take(&cluster, &dir, moments.last().map(|(_, a)| a))?;
        met = meet.wait() && meet.wait(); // go, then every answer is in
        let after = Moment::take(&cluster, &dir, Some(&before))?;
        moments.push((before, after));
    }
    let outcomes = match join_connections(handles) {
        Ok(outcomes) => outcomes,
        Err(failures) => bail!("{name} failed: {failures}"),
    };
    let phases = Phase::ALL
        .iter()
        .zip(&moments)
        .enumerate()
        .filter(|(_, (phase, _))| **phase != Phase::ReadsQuorum || args.reads > 0)
        .map(|(i, (&phase, (before, after)))| phase_report(phase, &outcomes, i, &cluster, before, after))
        .collect();
    let node_exits = cluster.stop();
    if !args.run.keep {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(TopologyReport {
        name,
        nodes,
        replication_factor: nodes,
        connections,
        in_flight_per_connection: windows,
        phases,
        node_exits,
    })
}

// ---------------------------------------------------------------------------------------------
// Comparing and printing

/// One phase of the cluster against the same phase of the 1-node baseline.
#[derive(Serialize)]
struct ReplicationCost {
    phase: &'static str,
    cluster_ops_per_second: f64,
    baseline_ops_per_second: f64,
    /// Cluster ops/s / baseline ops/s.
    throughput_ratio: f64,
    cluster_p50_us: f64,
    baseline_p50_us: f64,
    cluster_p99_us: f64,
    baseline_p99_us: f64,
    /// All nodes' CPU per request, cluster / baseline.
    cpu_per_op_ratio: f64,
}

fn replication_costs(cluster: &TopologyReport, baseline: &TopologyReport) -> Vec<ReplicationCost> {
    cluster
        .phases
        .iter()
        .filter_map(|c| {
            let b = baseline.phases.iter().find(|b| b.name == c.name)?;
            Some(ReplicationCost {
                phase: c.name,
                cluster_ops_per_second: c.ops_per_second,
                baseline_ops_per_second: b.ops_per_second,
                throughput_ratio: ratio(c.ops_per_second, b.ops_per_second),
                cluster_p50_us: c.latency_us.p50_us,
                baseline_p50_us: b.latency_us.p50_us,
                cluster_p99_us: c.latency_us.p99_us,
                baseline_p99_us: b.latency_us.p99_us,
                cpu_per_op_ratio: ratio(c.nodes_cpu_us_per_op, b.nodes_cpu_us_per_op),
            })
        })
        .collect()
}

/// The single-node server surge's figures (2 shards, in one process) for the same sync mode.
#[derive(Serialize)]
struct ServerSurgeFigures {
    report: String,
    scenario: String,
    shards: Option<u64>,
    inserts_per_second: Option<f64>,
    insert_p50_us: Option<f64>,
    insert_p99_us: Option<f64>,
    reads_per_second: Option<f64>,
    read_p50_us: Option<f64>,
    read_p99_us: Option<f64>,
}

fn server_surge_figures(path: &Path, mode: Mode) -> Option<ServerSurgeFigures> {
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let scenario = report
        .get("scenarios")?
        .as_array()?
        .iter()
        .find(|s| s.get("mode").and_then(|m| m.as_str()) == Some(mode.name()))?;
    let at = |phase: &str, keys: &[&str]| {
        keys.iter().try_fold(scenario.get(phase)?, |v, k| v.get(*k)).and_then(|v| v.as_f64())
    };
    Some(ServerSurgeFigures {
        report: path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        scenario: scenario.get("name")?.as_str()?.to_owned(),
        shards: report.get("parameters").and_then(|p| p.get("shards")).and_then(|s| s.as_u64()),
        inserts_per_second: at("inserts", &["ops_per_second"]),
        insert_p50_us: at("inserts", &["latency_us", "p50_us"]),
        insert_p99_us: at("inserts", &["latency_us", "p99_us"]),
        reads_per_second: at("reads", &["ops_per_second"]),
        read_p50_us: at("reads", &["latency_us", "p50_us"]),
        read_p99_us: at("reads", &["latency_us", "p99_us"]),
    })
}

fn print_topology(t: &TopologyReport) {
    for p in &t.phases {
        println!(
            "  {:<15} {} ops in {:.2} s = {} ops/s; p50 {}  p99 {}  p99.9 {}  max {}",
            p.name,
            thousands(p.ops as f64),
            p.wall_seconds,
            thousands(p.ops_per_second),
            format_us(p.latency_us.p50_us),
            format_us(p.latency_us.p99_us),
            format_us(p.latency_us.p999_us),
            format_us(p.latency_us.max_us)
        );
        let errors: Vec<String> = p.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        println!("    errors        {}", if errors.is_empty() { "none".to_owned() } else { errors.join(", ") });
        let nodes: Vec<String> =
            p.nodes_cpu.iter().map(|n| format!("node {} {:.0}%", n.node, n.busy_share * 100.0)).collect();
        println!(
            "    CPU           {} (nodes {:.0}%, {:.1} us/op); client {:.0}% ({:.1} us/op); other processes {}",
            nodes.join(", "),
            p.nodes_busy_share * 100.0,
            p.nodes_cpu_us_per_op,
            p.client_busy_share * 100.0,
            p.client_cpu_us_per_op,
            p.other_processes_busy_share.map_or_else(|| "?".to_owned(), |o| format!("{:.0}%", o * 100.0))
        );
    }
    println!("  node exits      {}", t.node_exits.join("; "));
}

fn print_summary(topologies: &[TopologyReport], costs: &[ReplicationCost]) {
    println!();
    println!("== summary ==");
    println!(
        "| {:<12} | {:<15} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6} | {:>22} | {:>6} |",
        "topology", "phase", "ops/s", "p50", "p99", "p99.9", "errors", "node CPU", "client"
    );
    println!("|{}|", ["---"; 9].join("|"));
    for t in topologies {
        for p in &t.phases {
            let nodes: Vec<String> = p.nodes_cpu.iter().map(|n| format!("{:.0}%", n.busy_share * 100.0)).collect();
            println!(
                "| {:<12} | {:<15} | {:>9} | {:>9} | {:>9} | {:>9} | {:>6} | {:>22} | {:>5.0}% |",
                t.name,
                p.name,
                thousands(p.ops_per_second),
                format_us(p.latency_us.p50_us),
                format_us(p.latency_us.p99_us),
                format_us(p.latency_us.p999_us),
                thousands(p.errors.values().sum::<u64>() as f64),
                nodes.join(" "),
                p.client_busy_share * 100.0
            );
        }
    }
    if costs.is_empty() {
        return;
    }
    println!();
    println!("== cost of replication (cluster / 1-node baseline) ==");
    for c in costs {
        println!(
            "  {:<15} {:.0}% of the throughput ({} vs {} ops/s); p50 {} vs {}; p99 {} vs {}; {:.2}x node CPU per op",
            c.phase,
            c.throughput_ratio * 100.0,
            thousands(c.cluster_ops_per_second),
            thousands(c.baseline_ops_per_second),
            format_us(c.cluster_p50_us),
            format_us(c.baseline_p50_us),
            format_us(c.cluster_p99_us),
            format_us(c.baseline_p99_us),
            c.cpu_per_op_ratio
        );
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    parameters: Parameters,
    topologies: Vec<TopologyReport>,
    replication_cost: Vec<ReplicationCost>,
    server_surge: Option<ServerSurgeFigures>,
}

#[derive(Serialize)]
struct Parameters {
    command: Vec<String>,
    enigmadb: String,
    insert: &'static str,
    select: &'static str,
    inserts_per_write_phase: u64,
    reads: u64,
    key_bytes: usize,
    value_bytes: usize,
    in_flight: usize,
    connections_per_node: usize,
    mode: Mode,
    periodic_sync_ms: u64,
    memtable_budget: String,
    cache_budget: String,
    shards_per_node: usize,
    pin_shards: bool,
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.inserts == 0 {
        bail!("--inserts must be positive");
    }
    if args.nodes == 0 || args.nodes > MAX_NODES {
        bail!("--nodes must be between 1 and {MAX_NODES} (one loopback address 127.0.0.i each)");
    }
    check_in_flight(args.nodes * args.connections_per_node, args.run.in_flight)?;
    let setup =
        RunSetup::prepare(&args.run.enigmadb, &args.run.dir, "cluster-surge", args.run.seed, args.run.value_bytes)?;
    let (machine, run_dir) = (&setup.machine, &setup.run_dir);
    println!(
        "cluster surge: {} inserts at ONE, {} at QUORUM, then {} point reads at QUORUM; {KEY_BYTES}-byte keys, \
         {}-byte values; {} in flight; {} sync; seed {}; {} CPU(s); data in {}",
        thousands(args.inserts as f64),
        thousands(args.inserts as f64),
        thousands(args.reads as f64),
        args.run.value_bytes,
        args.run.in_flight,
        args.mode,
        args.run.seed,
        machine.nproc,
        run_dir.display()
    );
    let mut sizes = Vec::new();
    if !args.no_baseline && args.nodes > 1 {
        sizes.push(1);
    }
    sizes.push(args.nodes);
    let mut topologies = Vec::new();
    for nodes in sizes {
        println!();
        println!("== {nodes} node(s), RF={nodes}, 1 shard each, unpinned ==");
        let t = run_topology(&args, nodes, run_dir, &setup.values)?;
        print_topology(&t);
        topologies.push(t);
    }
    let replication_cost = match topologies.as_slice() {
        [baseline, cluster] => replication_costs(cluster, baseline),
        _ => Vec::new(),
    };
    print_summary(&topologies, &replication_cost);
    let server_surge = server_surge_figures(&args.server_report, args.mode);
    if let Some(s) = &server_surge {
        let f = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), thousands);
        let us = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), format_us);
        println!(
            "  {} {} ({:?} shards, 1 process, ONE): inserts {}/s p50 {} p99 {}; reads {}/s p50 {} p99 {}",
            s.report,
            s.scenario,
            s.shards,
            f(s.inserts_per_second),
            us(s.insert_p50_us),
            us(s.insert_p99_us),
            f(s.reads_per_second),
            us(s.read_p50_us),
            us(s.read_p99_us)
        );
    }
    setup.finish(args.run.keep)?;
    let report = Report {
        benchmark: "cluster_surge",
        machine: setup.machine,
        parameters: Parameters {
            command: std::env::args().collect(),
            enigmadb: args.run.enigmadb.display().to_string(),
            insert: INSERT,
            select: SELECT,
            inserts_per_write_phase: args.inserts,
            reads: args.reads,
            key_bytes: KEY_BYTES,
            value_bytes: args.run.value_bytes,
            in_flight: args.run.in_flight,
            connections_per_node: args.connections_per_node,
            mode: args.mode,
            periodic_sync_ms: args.run.periodic_sync_ms,
            memtable_budget: args.run.memtable_budget.clone(),
            cache_budget: args.run.cache_budget.clone(),
            shards_per_node: 1,
            pin_shards: false,
            seed: args.run.seed,
        },
        topologies,
        replication_cost,
        server_surge,
    };
    write_json(&args.report, &report).with_context(|| format!("writing {}", args.report.display()))?;
    println!();
    println!("report: {}", args.report.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_up_and_normal_nodes_are_counted() {
        let status =
            "Address          State  Load\nUN 127.0.0.1:9470  ...\nDN 127.0.0.2:9470 ...\n  UN 127.0.0.3:9470\n";
        assert_eq!(nodes_up(status), 2);
        assert_eq!(nodes_up(""), 0);
    }

    #[test]
    fn nodes_get_their_own_loopback_addresses() {
        assert_eq!(node_ip(0), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(node_ip(2), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    }

    #[test]
    fn phases_run_writes_at_one_then_quorum_then_reads_at_quorum() {
        let levels: Vec<_> = Phase::ALL.iter().map(|p| p.consistency()).collect();
        assert_eq!(levels, [Consistency::One, Consistency::Quorum, Consistency::Quorum]);
    }
}

//! The loopback server surge: starts a real `enigmadb server` process, then writes N rows
//! (16-byte key, 100-byte value) through the client library with a fixed number of requests in
//! flight, then reads M random written rows back, in `periodic` and `batch` sync modes (a fresh
//! server and data directory each), optionally with several connection counts and cross-core
//! wake-up (spin-before-park) settings.
//!
//! Prints ops/s, latency percentiles, errors by type, the CPU share of every server thread (the
//! coordinator shard against the others), the client's and the machine's CPU, and compares with
//! the embedded engine's reports; writes a JSON report. It measures; it asserts nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bench::latency::{format_us, LatencySummary};
use bench::machine::Machine;
use bench::pipeline::{
    check_in_flight, join_connections, pipeline, split_window, start_connections, ConnectionPlan, ConnectionShape,
    PhaseOutcome, PhaseTotals, Prepared, CREATE_TABLE, INSERT, SELECT,
};
use bench::rendezvous::Rendezvous;
use bench::report::{per_second, ratio, thousands, write_json};
use bench::server::{RunSetup, ServerProcess, ServerRunArgs};
use bench::surge::{Mode, ValuePool, KEY_BYTES};
use bench::usage::{CpuShares, DiskActivity, ProcessUsage, Snapshot, ThreadUsage};
use clap::Parser;
use serde::Serialize;
use wire::client::Client;
use wire::protocol::Consistency;

#[derive(Parser, Debug)]
#[command(about = "Loopback server surge: inserts and point reads through the client library against a real \
             `enigmadb server` process, in periodic and batch sync modes (prints numbers, asserts nothing)")]
struct Args {
    /// Rows inserted per scenario.
    #[arg(long, default_value_t = 2_000_000)]
    inserts: u64,
    /// Point reads of random written rows per scenario, after the inserts (0 skips them).
    #[arg(long, default_value_t = 500_000)]
    reads: u64,
    /// Connection counts to run, comma-separated; the in-flight requests are split over them.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1])]
    connections: Vec<usize>,
    /// Sync modes to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = vec![Mode::Periodic, Mode::Batch])]
    modes: Vec<Mode>,
    /// The server's `--spin-before-park-us` values to run, comma-separated (the cross-core
    /// wake-up policy: 0 parks an idle shard at once; the server's default is 50).
    #[arg(long, value_delimiter = ',', default_values_t = vec![50])]
    spin_before_park_us: Vec<u64>,
    /// Shards of the server.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Pin the server's shard i to CPU i. Off by default: the client shares the two CPUs.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pin_shards: bool,
    /// Where the JSON report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/server-surge.json"))]
    report: PathBuf,
    /// The embedded engine's write-surge report to compare with (skipped when absent).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/write-surge.json"))]
    embedded_write_report: PathBuf,
    /// The embedded engine's read-path report to compare with (skipped when absent).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/read-path.json"))]
    embedded_read_report: PathBuf,
    #[command(flatten)]
    run: ServerRunArgs,
}

/// The aim for inserts/s end to end on the 2-core machine, 64 in flight.
fn insert_aim(mode: Mode) -> f64 {
    match mode {
        Mode::Batch => 60_000.0,
        Mode::Periodic => 150_000.0,
    }
}

struct Scenario {
    mode: Mode,
    connections: usize,
    spin_before_park_us: u64,
}

impl Scenario {
    fn name(&self) -> String {
        format!("{}-c{}-spin{}", self.mode, self.connections, self.spin_before_park_us)
    }
}

// ---------------------------------------------------------------------------------------------
// The server process

/// Starts the scenario's server on free loopback ports and waits for its ready line.
fn start_server(args: &Args, scenario: &Scenario, data_dir: &Path) -> Result<ServerProcess> {
    let flags: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir.display().to_string(),
        "--shards",
        &args.shards.to_string(),
        "--sync-mode",
        scenario.mode.name(),
        "--periodic-sync-ms",
        &args.run.periodic_sync_ms.to_string(),
        "--memtable-budget",
        &args.run.memtable_budget,
        "--cache-budget",
        &args.run.cache_budget,
        "--pin-shards",
        &args.pin_shards.to_string(),
        "--spin-before-park-us",
        &scenario.spin_before_park_us.to_string(),
    ]
    .map(String::from)
    .to_vec();
    ServerProcess::start(&args.run.enigmadb, &flags, "server")
}

// ---------------------------------------------------------------------------------------------
// The client side: one thread per connection, pipelining

struct ConnectionOutcome {
    insert: PhaseOutcome,
    read: PhaseOutcome,
}

/// Connects and prepares, then takes part in every meeting (ready, go, inserts done, go, reads
/// done) even after a failure, so the driver never waits for it in vain.
fn run_connection(plan: ConnectionPlan) -> Result<ConnectionOutcome> {
    let connected = plan.connect();
    let met = plan.meet.wait() && plan.meet.wait();
    let Prepared { mut client, insert: insert_id, select: select_id } = match connected {
        Ok(connected) if met => connected,
        other => {
            plan.meet.wait();
            plan.meet.wait();
            plan.meet.wait();
            other?;
            bail!("connection {}: the run was abandoned before it started", plan.index);
        }
    };
    let insert = pipeline(&mut client, plan.window, &mut plan.inserts(insert_id, plan.shape.inserts, Consistency::One));
    let met = plan.meet.wait() && plan.meet.wait();
    let mut read = PhaseOutcome::default();
    if met && plan.shape.reads > 0 {
        read = pipeline(&mut client, plan.window, &mut plan.reads(select_id, plan.shape.inserts, Consistency::One));
    }
    plan.meet.wait();
    Ok(ConnectionOutcome { insert, read })
}

// ---------------------------------------------------------------------------------------------
// Measuring a scenario

/// The server's and the client's counters at one moment.
struct Moment {
    client: Snapshot,
    server: ProcessUsage,
}

impl Moment {
    fn take(server: &ServerProcess, data_dir: &Path, previous: Option<&Moment>) -> Result<Moment> {
        let disk = previous.and_then(|m| m.client.disk.as_ref());
        Ok(Moment {
            client: Snapshot::take(data_dir, disk)?,
            server: ProcessUsage::read(server.pid).context("reading the server's CPU counters")?,
        })
    }
}

/// SSTables and flushed rows of every shard, from the shards' manifests (which the server
/// replaces atomically, so reading them while it runs is safe).
#[derive(Clone, Debug, Default, Serialize)]
struct StorageState {
    sstables_per_shard: Vec<usize>,
    /// WAL records covered by SSTables (the manifests' `flushed_through` LSNs, summed): one
    /// record per insert, plus the few the table creation may write.
    flushed_records: u64,
}

impl StorageState {
    fn read(data_dir: &Path, shards: usize) -> Result<StorageState> {
        let mut state = StorageState::default();
        for shard in 0..shards {
            let dir = data_dir.join(format!("shard-{shard:03}"));
            let manifest = shards::manifest::Manifest::load(&dir)
                .with_context(|| format!("reading the manifest of {}", dir.display()))?;
            state.sstables_per_shard.push(manifest.sstables.len());
            state.flushed_records += manifest.flushed_through;
        }
        Ok(state)
    }
}

/// CPU of the server threads that share a name (io_uring's `iou-wrk-*` workers are one group).
#[derive(Serialize)]
struct ThreadGroupReport {
    name: String,
    threads: usize,
    user_seconds: f64,
    system_seconds: f64,
    /// CPU time / the phase's wall time: 1.0 is one CPU kept busy.
    busy_share: f64,
    /// Voluntary context switches: the thread had nothing to run and parked.
    parks: u64,
    /// Involuntary context switches: something else wanted the CPU.
    preemptions: u64,
    /// Time runnable but waiting for a CPU / the phase's wall time. Busy plus waiting near
    /// 1.0 (per thread) means the thread would have used a whole CPU: it is the bottleneck even
    /// when its busy share alone looks moderate.
    waiting_share: f64,
    minor_faults: u64,
}

#[derive(Serialize)]
struct ServerCpuReport {
    cpu_seconds: f64,
    /// Server CPU time / wall time (2.0 = both CPUs of a 2-CPU machine).
    busy_share: f64,
    cpu_us_per_op: f64,
    /// Shard 0's executor thread: it runs the client connections and the coordinator, and its
    /// own share of the data.
    coordinator_busy_share: f64,
    /// Shard 0's executor thread's time runnable but waiting for a CPU / wall time: busy plus
    /// waiting near 100% means the coordinator shard is the bottleneck.
    coordinator_waiting_share: f64,
    /// The busiest other shard's executor thread.
    other_shard_busy_share: f64,
    threads: Vec<ThreadGroupReport>,
    /// CPU of threads that ended during the phase (io_uring workers come and go).
    exited_threads_seconds: f64,
}

#[derive(Serialize)]
struct PhaseReport {
    /// Requests answered correctly.
    ops: u64,
    /// Error answers, failed checks and connection failures, by kind (there should be none).
    errors: BTreeMap<String, u64>,
    /// First request sent to last answer received, all connections.
    wall_seconds: f64,
    ops_per_second: f64,
    /// Request sent to its answer received, measured by the client.
    latency_us: LatencySummary,
    server_cpu: ServerCpuReport,
    /// The benchmark process (the client library and its threads).
    client_cpu_seconds: f64,
    client_busy_share: f64,
    client_cpu_us_per_op: f64,
    machine_cpu: Option<CpuShares>,
    /// CPU the rest of the machine used meanwhile (builds, other tests), as a share of one CPU:
    /// the machine's busy CPUs (user, system, interrupts) less the server and the client.
    other_processes_busy_share: Option<f64>,
    device: Option<DiskActivity>,
}

#[derive(Serialize)]
struct ScenarioReport {
    name: String,
    mode: Mode,
    connections: usize,
    in_flight_per_connection: Vec<usize>,
    spin_before_park_us: u64,
    inserts: PhaseReport,
    /// Met when the inserts/s are above the aim for this mode.
    insert_aim_per_second: f64,
    insert_aim_met: bool,
    storage_after_inserts: StorageState,
    reads: Option<PhaseReport>,
    storage_after_reads: Option<StorageState>,
    /// Share of the rows read (drawn uniformly from the written ones) that were in SSTables
    /// rather than MemTables when the reads ran, estimated from the manifests after them.
    reads_from_sstables_share: Option<f64>,
    server_exit: String,
}

fn run_scenario(args: &Args, scenario: &Scenario, run_dir: &Path, values: &Arc<ValuePool>) -> Result<ScenarioReport> {
    let dir = run_dir.join(scenario.name());
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut server = start_server(args, scenario, &dir)?;
    let mut setup = Client::connect(server.addr).context("connecting to create the table")?;
    setup.set_timeout(Some(Duration::from_secs(args.run.answer_timeout_s)))?;
    setup.query(CREATE_TABLE).with_context(|| format!("running {CREATE_TABLE}"))?;
    drop(setup);

    let windows = split_window(args.run.in_flight, scenario.connections);
    let meet = Arc::new(Rendezvous::new(scenario.connections + 1));
    let shape = ConnectionShape {
        answer_timeout: Duration::from_secs(args.run.answer_timeout_s),
        inserts: args.inserts,
        reads: args.reads,
        values: values.clone(),
        seed: args.run.seed,
        schema_wait: Duration::ZERO,
    };
    let handles = start_connections(&[server.addr], &windows, shape, &meet, run_connection)?;
    meet.wait(); // every connection is up and has prepared its statements
    let before_inserts = Moment::take(&server, &dir, None)?;
    meet.wait(); // go
    meet.wait(); // every insert is answered
    let after_inserts = Moment::take(&server, &dir, Some(&before_inserts))?;
    let storage_after_inserts = StorageState::read(&dir, args.shards)?;
    let before_reads = Moment::take(&server, &dir, Some(&after_inserts))?;
    meet.wait(); // go
    meet.wait(); // every read is answered
    let after_reads = Moment::take(&server, &dir, Some(&before_reads))?;
    let storage_after_reads = StorageState::read(&dir, args.shards)?;

    let outcomes = join_connections(handles);
    let server_exit = server.stop_for_report();
    if !args.run.keep {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let outcomes = match outcomes {
        Ok(outcomes) => outcomes,
        Err(failures) => bail!("scenario {} failed: {failures}", scenario.name()),
    };

    let inserts = phase_report(outcomes.iter().map(|o| &o.insert), &before_inserts, &after_inserts);
    let reads = (args.reads > 0).then(|| phase_report(outcomes.iter().map(|o| &o.read), &before_reads, &after_reads));
    let read_share =
        (args.reads > 0).then(|| (storage_after_reads.flushed_records as f64 / args.inserts as f64).min(1.0));
    Ok(ScenarioReport {
        name: scenario.name(),
        mode: scenario.mode,
        connections: scenario.connections,
        in_flight_per_connection: windows,
        spin_before_park_us: scenario.spin_before_park_us,
        insert_aim_per_second: insert_aim(scenario.mode),
        insert_aim_met: inserts.ops_per_second > insert_aim(scenario.mode),
        inserts,
        storage_after_inserts,
        reads,
        storage_after_reads: (args.reads > 0).then_some(storage_after_reads),
        reads_from_sstables_share: read_share,
        server_exit,
    })
}

fn phase_report<'a>(phases: impl Iterator<Item = &'a PhaseOutcome>, before: &Moment, after: &Moment) -> PhaseReport {
    let PhaseTotals { ops, errors, wall_seconds: wall, latency } = PhaseTotals::of(phases);
    let window = after.client.at.saturating_duration_since(before.client.at).as_secs_f64();
    let client_cpu = after.client.process.since(&before.client.process).total().as_secs_f64();
    let server_cpu = server_cpu_report(&before.server, &after.server, ops);
    let machine_cpu = after.client.machine_since(&before.client);
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let other_processes_busy_share = machine_cpu.map(|m| {
        let machine_busy = (m.user + m.system + m.interrupts) * nproc;
        (machine_busy - server_cpu.busy_share - ratio(client_cpu, window)).max(0.0)
    });
    PhaseReport {
        ops,
        errors,
        wall_seconds: wall,
        ops_per_second: per_second(ops as f64, wall),
        latency_us: latency.summary(),
        server_cpu,
        client_cpu_seconds: client_cpu,
        client_busy_share: ratio(client_cpu, window),
        client_cpu_us_per_op: ratio(client_cpu * 1e6, ops as f64),
        machine_cpu,
        other_processes_busy_share,
        device: after.client.disk_since(&before.client),
    }
}

/// The group a server thread's CPU is reported under. glommio names an executor's thread
/// `<name>-<executor id>` (`shard-0-1`), and the helper thread each executor starts for blocking
/// calls inherits that name, so the first thread of a name (the lowest id) is the executor.
fn thread_group(name: &str, first_of_its_name: bool) -> String {
    if name.starts_with("iou-wrk") {
        return "iou-wrk (io_uring workers)".into();
    }
    let executor = match name.rsplit_once('-') {
        Some((base, id)) if base.starts_with("shard-") && id.parse::<u32>().is_ok() => base,
        _ => return name.into(),
    };
    match first_of_its_name {
        true => executor.into(),
        false => format!("{executor} blocking pool"),
    }
}

fn server_cpu_report(before: &ProcessUsage, after: &ProcessUsage, ops: u64) -> ServerCpuReport {
    let window = after.at.saturating_duration_since(before.at).as_secs_f64();
    let threads: Vec<ThreadUsage> = after.threads_since(before);
    let mut groups: BTreeMap<String, ThreadGroupReport> = BTreeMap::new();
    let mut names_seen = std::collections::HashSet::new();
    for t in &threads {
        let name = thread_group(&t.name, names_seen.insert(t.name.as_str()));
        let g = groups.entry(name.clone()).or_insert_with(|| ThreadGroupReport {
            name,
            threads: 0,
            user_seconds: 0.0,
            system_seconds: 0.0,
            busy_share: 0.0,
            parks: 0,
            preemptions: 0,
            waiting_share: 0.0,
            minor_faults: 0,
        });
        g.threads += 1;
        g.user_seconds += t.cpu.user.as_secs_f64();
        g.system_seconds += t.cpu.system.as_secs_f64();
        g.busy_share = ratio(g.user_seconds + g.system_seconds, window);
        g.parks += t.cpu.voluntary_switches;
        g.preemptions += t.cpu.involuntary_switches;
        g.waiting_share += ratio(t.cpu.run_delay.as_secs_f64(), window);
        g.minor_faults += t.cpu.minor_faults;
    }
    let total = after.total.since(&before.total).total().as_secs_f64();
    let listed: f64 = groups.values().map(|g| g.user_seconds + g.system_seconds).sum();
    let (coordinator, coordinator_waiting) =
        groups.get("shard-0").map_or((0.0, 0.0), |g| (g.busy_share, g.waiting_share));
    let other_shard = groups
        .values()
        .filter(|g| g.name.starts_with("shard-") && !g.name.contains(' ') && g.name != "shard-0")
        .map(|g| g.busy_share)
        .fold(0.0, f64::max);
    let mut threads: Vec<ThreadGroupReport> = groups.into_values().collect();
    threads.sort_by(|a, b| (b.user_seconds + b.system_seconds).total_cmp(&(a.user_seconds + a.system_seconds)));
    ServerCpuReport {
        cpu_seconds: total,
        busy_share: ratio(total, window),
        cpu_us_per_op: ratio(total * 1e6, ops as f64),
        coordinator_busy_share: coordinator,
        coordinator_waiting_share: coordinator_waiting,
        other_shard_busy_share: other_shard,
        exited_threads_seconds: (total - listed).max(0.0),
        threads,
    }
}

// ---------------------------------------------------------------------------------------------
// The embedded engine's figures, for comparison

/// One figure of an embedded-engine report.
#[derive(Serialize)]
struct EmbeddedFigure {
    report: String,
    run: String,
    /// What that run did, in a few words.
    what: String,
    ops_per_second: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

#[derive(Serialize)]
struct Comparison {
    scenario: String,
    phase: &'static str,
    ops_per_second: f64,
    p50_us: f64,
    p99_us: f64,
    embedded: EmbeddedFigure,
    /// Server ops/s / embedded ops/s: what is left after the network path.
    throughput_ratio: f64,
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The entry named `name` in the list `list` of a report.
fn find_run<'a>(report: &'a serde_json::Value, list: &str, name: &str) -> Option<&'a serde_json::Value> {
    report.get(list)?.as_array()?.iter().find(|r| r.get("name").and_then(|n| n.as_str()) == Some(name))
}

/// The run named `name` in the list `list` of a report, as a figure.
fn embedded_figure(path: &Path, list: &str, name: &str, what: String) -> Option<EmbeddedFigure> {
    let report = read_json(path)?;
    let run = find_run(&report, list, name)?;
    let ops = run.get("rows_per_second").or_else(|| run.get("reads_per_second"))?.as_f64()?;
    let latency = run.get("latency_us");
    let at = |q: &str| latency.and_then(|l| l.get(q)).and_then(|v| v.as_f64());
    Some(EmbeddedFigure {
        report: path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        run: name.to_owned(),
        what,
        ops_per_second: ops,
        p50_us: at("p50_us"),
        p99_us: at("p99_us"),
    })
}

fn comparisons(args: &Args, scenarios: &[ScenarioReport]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for s in scenarios {
        let write_run = format!("{}-shard-{}", args.shards, s.mode);
        let writers = read_json(&args.embedded_write_report)
            .and_then(|r| find_run(&r, "scenarios", &write_run)?.get("writers_per_shard")?.as_u64())
            .map_or_else(|| "?".to_owned(), |w| w.to_string());
        let what = format!("Shard::apply on each shard's executor, {writers} writer tasks per shard, no network");
        if let Some(embedded) = embedded_figure(&args.embedded_write_report, "scenarios", &write_run, what) {
            out.push(compare(s, "inserts", &s.inserts, embedded));
        }
        let Some(reads) = &s.reads else { continue };
        let read_report = read_json(&args.embedded_read_report);
        for run in ["warm", "cold"] {
            let what = read_report.as_ref().and_then(|r| read_path_run(r, run)).unwrap_or_default();
            if let Some(embedded) = embedded_figure(&args.embedded_read_report, "point_reads", run, what) {
                out.push(compare(s, "reads", reads, embedded));
            }
        }
    }
    out
}

/// What a run of the read-path report did: its data set, cache and readers.
fn read_path_run(report: &serde_json::Value, name: &str) -> Option<String> {
    let run = find_run(report, "point_reads", name)?;
    Some(format!(
        "Shard::read, 1 shard, {} rows in {} SSTables, {} MiB block cache, {} readers, no network",
        thousands(report.get("parameters")?.get("rows")?.as_f64()?),
        report.get("data")?.get("sstables")?.as_u64()?,
        run.get("cache_budget_bytes")?.as_u64()? >> 20,
        run.get("readers")?.as_u64()?
    ))
}

fn compare(s: &ScenarioReport, phase: &'static str, p: &PhaseReport, embedded: EmbeddedFigure) -> Comparison {
    Comparison {
        scenario: s.name.clone(),
        phase,
        ops_per_second: p.ops_per_second,
        p50_us: p.latency_us.p50_us,
        p99_us: p.latency_us.p99_us,
        throughput_ratio: ratio(p.ops_per_second, embedded.ops_per_second),
        embedded,
    }
}

// ---------------------------------------------------------------------------------------------
// Printing

fn latency_line(l: &LatencySummary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        format_us(l.p50_us),
        format_us(l.p90_us),
        format_us(l.p99_us),
        format_us(l.p999_us),
        format_us(l.max_us)
    )
}

fn errors_line(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors.iter().map(|(kind, n)| format!("{kind}: {}", thousands(*n as f64))).collect::<Vec<_>>().join(", ")
}

fn print_phase(name: &str, p: &PhaseReport) {
    println!(
        "  {name:<8} {} ops in {:.2} s = {} ops/s; {}",
        thousands(p.ops as f64),
        p.wall_seconds,
        thousands(p.ops_per_second),
        latency_line(&p.latency_us)
    );
    println!("    errors         {}", errors_line(&p.errors));
    let c = &p.server_cpu;
    println!(
        "    server CPU     {:.2} s = {:.0}% of one CPU, {:.1} us/op; coordinator shard-0 {:.0}% (+{:.0}% waiting for a CPU), other shard {:.0}%",
        c.cpu_seconds,
        c.busy_share * 100.0,
        c.cpu_us_per_op,
        c.coordinator_busy_share * 100.0,
        c.coordinator_waiting_share * 100.0,
        c.other_shard_busy_share * 100.0
    );
    for t in c.threads.iter().filter(|t| t.user_seconds + t.system_seconds > 0.0) {
        println!(
            "      {:<28} x{:<3} {:>5.1}% ({:.2} s user + {:.2} s sys) + {:.1}% waiting for a CPU, {} parks, {} preemptions",
            t.name,
            t.threads,
            t.busy_share * 100.0,
            t.user_seconds,
            t.system_seconds,
            t.waiting_share * 100.0,
            thousands(t.parks as f64),
            thousands(t.preemptions as f64)
        );
    }
    if c.exited_threads_seconds >= 0.01 {
        println!("      threads that exited          {:.2} s", c.exited_threads_seconds);
    }
    println!(
        "    client CPU     {:.2} s = {:.0}% of one CPU, {:.1} us/op",
        p.client_cpu_seconds,
        p.client_busy_share * 100.0,
        p.client_cpu_us_per_op
    );
    if let Some(m) = &p.machine_cpu {
        println!("    machine CPU    {m}");
    }
    if let Some(other) = p.other_processes_busy_share {
        println!(
            "    other processes {:.0}% of one CPU (the machine is shared: above ~10% the figures suffer)",
            other * 100.0
        );
    }
    if let Some(d) = &p.device {
        println!(
            "    device {:<7} {} writes ({:.1} MB), {} flushes, {} reads ({:.1} MB), busy {:.0}%",
            d.device,
            thousands(d.writes as f64),
            d.bytes_written as f64 / 1e6,
            thousands(d.flushes as f64),
            thousands(d.reads as f64),
            d.bytes_read as f64 / 1e6,
            d.busy_share * 100.0
        );
    }
}

fn print_scenario(args: &Args, s: &ScenarioReport) {
    println!(
        "  storage        after inserts: SSTables per shard {:?}, {} WAL records flushed to SSTables",
        s.storage_after_inserts.sstables_per_shard,
        thousands(s.storage_after_inserts.flushed_records as f64)
    );
    print_phase("inserts", &s.inserts);
    println!(
        "    aim            above {} inserts/s in {} mode: {}",
        thousands(s.insert_aim_per_second),
        s.mode,
        if s.insert_aim_met { "met" } else { "NOT MET" }
    );
    if let (Some(reads), Some(storage), Some(share)) = (&s.reads, &s.storage_after_reads, s.reads_from_sstables_share) {
        print_phase("reads", reads);
        println!(
            "    storage        after reads: SSTables per shard {:?}; about {:.0}% of the rows read were in SSTables, {:.0}% in MemTables ({} budget per shard)",
            storage.sstables_per_shard,
            share * 100.0,
            (1.0 - share) * 100.0,
            args.run.memtable_budget
        );
    }
    println!("  server exit    {}", s.server_exit);
}

fn print_summary(scenarios: &[ScenarioReport], comparisons: &[Comparison]) {
    println!();
    println!("== summary ==");
    println!(
        "{:<22} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7}",
        "scenario",
        "phase",
        "ops/s",
        "p50",
        "p99",
        "p99.9",
        "errors",
        "shard-0",
        "shard-1+",
        "server",
        "client",
        "others",
        "aim"
    );
    for s in scenarios {
        let phases = [("inserts", Some(&s.inserts)), ("reads", s.reads.as_ref())];
        for (name, p) in phases.into_iter().filter_map(|(n, p)| p.map(|p| (n, p))) {
            let aim = match name {
                "inserts" if s.insert_aim_met => "met",
                "inserts" => "NOT MET",
                _ => "",
            };
            println!(
                "{:<22} {:>7} {:>10} {:>9} {:>9} {:>9} {:>7} {:>8.0}% {:>8.0}% {:>7.0}% {:>7.0}% {:>8} {:>7}",
                s.name,
                name,
                thousands(p.ops_per_second),
                format_us(p.latency_us.p50_us),
                format_us(p.latency_us.p99_us),
                format_us(p.latency_us.p999_us),
                thousands(p.errors.values().sum::<u64>() as f64),
                p.server_cpu.coordinator_busy_share * 100.0,
                p.server_cpu.other_shard_busy_share * 100.0,
                p.server_cpu.busy_share * 100.0,
                p.client_busy_share * 100.0,
                p.other_processes_busy_share.map_or_else(|| "?".to_owned(), |o| format!("{:.0}%", o * 100.0)),
                aim
            );
        }
    }
    if comparisons.is_empty() {
        return;
    }
    println!();
    println!("== against the embedded engine (no network) ==");
    for c in comparisons {
        let e = &c.embedded;
        println!(
            "{:<22} {:<7} {:>9}/s p50 {:>9}  vs {} {:<6} {:>9}/s p50 {:>9}: {:.0}% of its throughput ({})",
            c.scenario,
            c.phase,
            thousands(c.ops_per_second),
            format_us(c.p50_us),
            e.report,
            e.run,
            thousands(e.ops_per_second),
            e.p50_us.map_or_else(|| "?".into(), format_us),
            c.throughput_ratio * 100.0,
            e.what
        );
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    parameters: Parameters,
    scenarios: Vec<ScenarioReport>,
    embedded_comparison: Vec<Comparison>,
}

#[derive(Serialize)]
struct Parameters {
    command: Vec<String>,
    enigmadb: String,
    table: &'static str,
    insert: &'static str,
    select: &'static str,
    inserts: u64,
    reads: u64,
    key_bytes: usize,
    value_bytes: usize,
    in_flight: usize,
    connections: Vec<usize>,
    modes: Vec<Mode>,
    spin_before_park_us: Vec<u64>,
    shards: usize,
    periodic_sync_ms: u64,
    memtable_budget: String,
    cache_budget: String,
    pin_shards: bool,
    consistency: &'static str,
    data_dir: String,
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.inserts == 0 || args.modes.is_empty() || args.connections.is_empty() || args.spin_before_park_us.is_empty()
    {
        bail!("nothing to run: --inserts, --modes, --connections and --spin-before-park-us must not be empty");
    }
    if args.shards == 0 {
        bail!("--shards must be positive");
    }
    for &c in &args.connections {
        check_in_flight(c, args.run.in_flight)?;
    }
    let setup =
        RunSetup::prepare(&args.run.enigmadb, &args.run.dir, "server-surge", args.run.seed, args.run.value_bytes)?;
    let (machine, run_dir) = (&setup.machine, &setup.run_dir);
    println!(
        "server surge: {} inserts then {} point reads of {KEY_BYTES}-byte keys and {}-byte values; {} in flight; \
         {} shards; {} CPU(s), kernel {}; data in {}",
        thousands(args.inserts as f64),
        thousands(args.reads as f64),
        args.run.value_bytes,
        args.run.in_flight,
        args.shards,
        machine.nproc,
        machine.kernel.as_deref().unwrap_or("?"),
        run_dir.display()
    );

    let mut scenarios = Vec::new();
    for &mode in &args.modes {
        for &spin_before_park_us in &args.spin_before_park_us {
            for &connections in &args.connections {
                let scenario = Scenario { mode, connections, spin_before_park_us };
                println!();
                println!(
                    "== {}: {} sync, {} in flight over {} connection(s), server spins {} us before parking ==",
                    scenario.name(),
                    mode,
                    args.run.in_flight,
                    connections,
                    spin_before_park_us
                );
                let report = run_scenario(&args, &scenario, run_dir, &setup.values)?;
                print_scenario(&args, &report);
                scenarios.push(report);
            }
        }
    }
    let embedded_comparison = comparisons(&args, &scenarios);
    print_summary(&scenarios, &embedded_comparison);

    setup.finish(args.run.keep)?;
    let data_dir = setup.run_dir.display().to_string();
    let report = Report {
        benchmark: "server_surge",
        machine: setup.machine,
        parameters: Parameters {
            command: std::env::args().collect(),
            enigmadb: args.run.enigmadb.display().to_string(),
            table: CREATE_TABLE,
            insert: INSERT,
            select: SELECT,
            inserts: args.inserts,
            reads: args.reads,
            key_bytes: KEY_BYTES,
            value_bytes: args.run.value_bytes,
            in_flight: args.run.in_flight,
            connections: args.connections.clone(),
            modes: args.modes.clone(),
            spin_before_park_us: args.spin_before_park_us.clone(),
            shards: args.shards,
            periodic_sync_ms: args.run.periodic_sync_ms,
            memtable_budget: args.run.memtable_budget.clone(),
            cache_budget: args.run.cache_budget.clone(),
            pin_shards: args.pin_shards,
            consistency: "ONE",
            data_dir,
            seed: args.run.seed,
        },
        scenarios,
        embedded_comparison,
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
    fn server_threads_are_grouped_by_role() {
        assert_eq!(thread_group("iou-wrk-4242", true), thread_group("iou-wrk-4243", false));
        assert_eq!(thread_group("shard-0-1", true), "shard-0");
        assert_eq!(thread_group("shard-0-1", false), "shard-0 blocking pool");
        assert_eq!(thread_group("shard-12-13", true), "shard-12");
        assert_eq!(thread_group("enigmadb", true), "enigmadb");
    }
}

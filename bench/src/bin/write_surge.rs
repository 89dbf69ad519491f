//! The write surge: N rows (16-byte key, 100-byte value) written as fast as the engine accepts
//! them into one shard and into two, in `batch` and `periodic` WAL sync modes, by many
//! concurrent writer tasks per shard (group commit). Drives `Shard::apply` directly on each
//! shard's own glommio executor: no channel, no network, no client in the way.
//!
//! Prints rows/s, WAL MB/s, syncs/s, rows per sync, write latency percentiles and the CPU time of
//! every shard thread, and writes a JSON report. It measures; it asserts nothing. A sync is an
//! fdatasync, or in batch mode a durable (`O_DSYNC`) write: the report's `fdatasyncs` fields
//! count both.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bench::latency::{format_us, LatencyHistogram, LatencySummary};
use bench::machine::{EngineRunArgs, Machine, Pinning};
use bench::rendezvous::Rendezvous;
use bench::report::{fresh_run_dir, megabytes, per_second, ratio, thousands, write_json};
use bench::surge::{surge_schema, write_rows, Mode, ValuePool, KEY_BYTES, VALUE_POOL_BYTES};
use bench::usage::{CpuShares, CpuUsage, DiskActivity, Snapshot};
use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use serde::Serialize;
use shards::io::prepare_executor_io;
use shards::shard::{Shard, ShardConfig};
use shards::wal::{WalConfig, WalStats};

/// The id the benchmark gives its one table (there is no catalog: the shard is driven directly).
const SURGE_TABLE_ID: u32 = 1;

#[derive(Parser, Debug)]
#[command(about = "Write surge: rows/s, WAL MB/s and fdatasyncs/s of one and two shards in batch and \
             periodic sync modes (prints numbers, asserts nothing)")]
struct Args {
    /// Rows per scenario, split evenly over its shards.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Shard counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 2])]
    shards: Vec<usize>,
    /// Sync modes to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = vec![Mode::Batch, Mode::Periodic])]
    modes: Vec<Mode>,
    /// Concurrent writer tasks per shard for every mode (overrides the two below).
    #[arg(long)]
    writers: Option<usize>,
    /// Writer tasks per shard in batch mode: each fdatasync acknowledges at most this many rows,
    /// so it sets the group size of group commit.
    #[arg(long, default_value_t = 256)]
    batch_writers: usize,
    /// Writer tasks per shard in periodic mode: all of them end up in one group, and the shard
    /// idles while that group's write is in flight, so larger groups hide the wait better but
    /// make each write wait longer (1024 is the knee of the sweep in bench/README.md).
    #[arg(long, default_value_t = 1024)]
    periodic_writers: usize,
    /// fdatasync period in periodic mode (Cassandra's default is 10000).
    #[arg(long, default_value_t = 1000)]
    periodic_sync_ms: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// WAL segment size in MiB (the engine's default is 32).
    #[arg(long, default_value_t = 32)]
    segment_mib: u64,
    /// MemTable budget per shard in MiB; must hold the whole run (there is no flush yet).
    #[arg(long, default_value_t = 4096)]
    memtable_budget_mib: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/write-surge.json"))]
    report: PathBuf,
    /// Seed of the value bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[command(flatten)]
    engine: EngineRunArgs,
}

/// Everything one shard thread needs (sent to it, so plain data only).
struct ShardPlan {
    id: u16,
    dir: PathBuf,
    /// Global number of this shard's first row; it writes `rows` rows from there.
    first_row: u64,
    rows: u64,
    writers: usize,
    mode: Mode,
    periodic_sync: Duration,
    segment_size: u64,
    memtable_budget: usize,
    values: Arc<ValuePool>,
    meet: Arc<Rendezvous>,
}

/// What one shard measured over its write phase (first write to last acknowledgement).
struct ShardOutcome {
    id: u16,
    rows: u64,
    open: Duration,
    started: Instant,
    finished: Instant,
    close: Duration,
    cpu: CpuUsage,
    wal: WalStats,
    memtable_bytes: usize,
    partitions: usize,
    latency: LatencyHistogram,
}

fn shard_config(plan: &ShardPlan) -> ShardConfig {
    ShardConfig {
        wal: WalConfig {
            segment_size: plan.segment_size,
            sync_mode: plan.mode.sync_mode(),
            periodic_sync: plan.periodic_sync,
            ..WalConfig::default()
        },
        memtable_budget: plan.memtable_budget,
        ..ShardConfig::default()
    }
}

/// The body of one shard's executor. Always takes part in all four meetings (opened, go, done,
/// resume), even after a failure, so the other threads never wait for it in vain.
async fn run_shard(plan: ShardPlan) -> Result<ShardOutcome> {
    let open_started = Instant::now();
    let opened = open_shard(&plan).await;
    let open = open_started.elapsed();
    let met = plan.meet.wait() && plan.meet.wait();
    let driven = match opened {
        Ok(shard) if met => {
            let result = drive(&shard, &plan).await;
            Ok((shard, result))
        }
        Ok(_) => Err(anyhow!("shard {}: the run was abandoned before it started", plan.id)),
        Err(e) => Err(e),
    };
    plan.meet.wait();
    plan.meet.wait();
    let (shard, result) = driven?;
    let close_started = Instant::now();
    shard.close().await.with_context(|| format!("closing shard {}", plan.id))?;
    let close = close_started.elapsed();
    let mut outcome = result?;
    outcome.open = open;
    outcome.close = close;
    Ok(outcome)
}

async fn open_shard(plan: &ShardPlan) -> Result<Rc<Shard>> {
    prepare_executor_io(&plan.dir).await.with_context(|| format!("preparing I/O in {}", plan.dir.display()))?;
    let (shard, _replay) = Shard::open(plan.id, &plan.dir, shard_config(plan), &[])
        .await
        .with_context(|| format!("opening shard {} in {}", plan.id, plan.dir.display()))?;
    shard.add_table(surge_schema(SURGE_TABLE_ID)?);
    Ok(shard)
}

/// Runs the writer tasks to the end of the shard's quota.
async fn drive(shard: &Rc<Shard>, plan: &ShardPlan) -> Result<ShardOutcome> {
    let schema = Rc::new(surge_schema(SURGE_TABLE_ID)?);
    let wal_before = shard.stats().wal;
    let cpu_before = CpuUsage::this_thread()?;
    let started = Instant::now();
    let written =
        write_rows(shard, &schema, &plan.values, plan.first_row..plan.first_row + plan.rows, plan.writers).await;
    let finished = Instant::now();
    let cpu = CpuUsage::this_thread()?.since(&cpu_before);
    let latency = written.map_err(|e| e.context(format!("shard {}", plan.id)))?;
    let stats = shard.stats();
    Ok(ShardOutcome {
        id: plan.id,
        rows: latency.count(),
        open: Duration::ZERO,
        started,
        finished,
        close: Duration::ZERO,
        cpu,
        wal: wal_delta(&stats.wal, &wal_before),
        memtable_bytes: stats.memtable_bytes,
        partitions: stats.memtable_partitions,
        latency,
    })
}

fn wal_delta(after: &WalStats, before: &WalStats) -> WalStats {
    WalStats {
        records: after.records - before.records,
        payload_bytes: after.payload_bytes - before.payload_bytes,
        bytes_written: after.bytes_written - before.bytes_written,
        writes: after.writes - before.writes,
        syncs: after.syncs - before.syncs,
        writebacks: after.writebacks - before.writebacks,
        segments_created: after.segments_created - before.segments_created,
        segments_deleted: after.segments_deleted - before.segments_deleted,
        last_lsn: after.last_lsn,
    }
}

fn wal_sum(stats: impl Iterator<Item = WalStats>) -> WalStats {
    stats.fold(WalStats::default(), |a, b| WalStats {
        records: a.records + b.records,
        payload_bytes: a.payload_bytes + b.payload_bytes,
        bytes_written: a.bytes_written + b.bytes_written,
        writes: a.writes + b.writes,
        syncs: a.syncs + b.syncs,
        writebacks: a.writebacks + b.writebacks,
        segments_created: a.segments_created + b.segments_created,
        segments_deleted: a.segments_deleted + b.segments_deleted,
        last_lsn: a.last_lsn.max(b.last_lsn),
    })
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    parameters: Parameters,
    scenarios: Vec<ScenarioReport>,
}

#[derive(Serialize)]
struct Parameters {
    command: Vec<String>,
    table: &'static str,
    rows: u64,
    key_bytes: usize,
    value_bytes: usize,
    shards: Vec<usize>,
    modes: Vec<Mode>,
    batch_writers_per_shard: usize,
    periodic_writers_per_shard: usize,
    periodic_sync_ms: u64,
    segment_bytes: u64,
    wal_max_pending_bytes: usize,
    memtable_budget_bytes: usize,
    io_memory_bytes: usize,
    spin_before_park_us: u64,
    pin: Pinning,
    data_dir: String,
    seed: u64,
}

#[derive(Serialize)]
struct WalFigures {
    records: u64,
    payload_bytes: u64,
    bytes_written: u64,
    megabytes_written_per_second: f64,
    write_calls: u64,
    write_calls_per_second: f64,
    rows_per_write_call: f64,
    mean_write_call_kib: f64,
    fdatasyncs: u64,
    fdatasyncs_per_second: f64,
    rows_per_fdatasync: f64,
    segments_created: u64,
}

impl WalFigures {
    fn new(wal: &WalStats, rows: u64, seconds: f64) -> WalFigures {
        WalFigures {
            records: wal.records,
            payload_bytes: wal.payload_bytes,
            bytes_written: wal.bytes_written,
            megabytes_written_per_second: megabytes(per_second(wal.bytes_written as f64, seconds)),
            write_calls: wal.writes,
            write_calls_per_second: per_second(wal.writes as f64, seconds),
            rows_per_write_call: ratio(rows as f64, wal.writes as f64),
            mean_write_call_kib: ratio(wal.bytes_written as f64, wal.writes as f64) / 1024.0,
            fdatasyncs: wal.syncs,
            fdatasyncs_per_second: per_second(wal.syncs as f64, seconds),
            rows_per_fdatasync: ratio(rows as f64, wal.syncs as f64),
            segments_created: wal.segments_created,
        }
    }
}

#[derive(Serialize)]
struct ShardReport {
    shard: u16,
    /// The CPU the executor was pinned to, if any.
    cpu: Option<usize>,
    rows: u64,
    wall_seconds: f64,
    rows_per_second: f64,
    open_seconds: f64,
    close_seconds: f64,
    cpu_user_seconds: f64,
    cpu_system_seconds: f64,
    /// Thread CPU time / this shard's wall time: near 1.0 means CPU-bound.
    cpu_busy_share: f64,
    cpu_us_per_row: f64,
    /// First touches of fresh heap pages by the shard thread (each costs a kernel entry).
    minor_faults: u64,
    /// The thread parked (nothing to run: waiting on the disk).
    voluntary_switches: u64,
    /// The thread was preempted (another thread or process wanted its CPU).
    involuntary_switches: u64,
    memtable_bytes: usize,
    partitions: usize,
    wal: WalFigures,
    latency_us: LatencySummary,
}

#[derive(Serialize)]
struct ScenarioReport {
    name: String,
    shards: usize,
    mode: Mode,
    writers_per_shard: usize,
    rows: u64,
    /// First write of any shard to last acknowledgement of any shard.
    wall_seconds: f64,
    rows_per_second: f64,
    rows_per_second_per_shard: f64,
    wal: WalFigures,
    latency_us: LatencySummary,
    process_cpu_seconds: f64,
    machine_cpu: Option<CpuShares>,
    device: Option<DiskActivity>,
    per_shard: Vec<ShardReport>,
}

struct Scenario {
    shards: usize,
    mode: Mode,
    writers: usize,
}

impl Scenario {
    fn name(&self) -> String {
        format!("{}-shard-{}", self.shards, self.mode)
    }
}

fn run_scenario(args: &Args, scenario: &Scenario, run_dir: &Path, values: &Arc<ValuePool>) -> Result<ScenarioReport> {
    let dir = run_dir.join(scenario.name());
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = args.engine.pin.pins(scenario.shards, nproc);
    let meet = Arc::new(Rendezvous::new(scenario.shards + 1));
    let mut handles = Vec::new();
    let mut first_row = 0;
    for i in 0..scenario.shards {
        // The first `rows % shards` shards take one row more, so the total is exactly `rows`.
        let rows = args.rows / scenario.shards as u64 + u64::from((i as u64) < args.rows % scenario.shards as u64);
        let plan = ShardPlan {
            id: i as u16,
            dir: dir.join(format!("shard-{i:03}")),
            first_row,
            rows,
            writers: scenario.writers,
            mode: scenario.mode,
            periodic_sync: Duration::from_millis(args.periodic_sync_ms),
            segment_size: args.segment_mib << 20,
            memtable_budget: args.memtable_budget_mib << 20,
            values: values.clone(),
            meet: meet.clone(),
        };
        first_row += rows;
        let placement = if pin { Placement::Fixed(i) } else { Placement::Unbound };
        let mut builder =
            LocalExecutorBuilder::new(placement).name(&format!("surge-{i}")).io_memory(args.engine.io_memory);
        // As the server's shards: flushes and compactions give way to the writers every quota.
        builder = builder.preempt_timer(shards::node::DEFAULT_TASK_QUOTA);
        if args.engine.spin_before_park_us > 0 {
            builder = builder.spin_before_park(Duration::from_micros(args.engine.spin_before_park_us));
        }
        let spawned = builder.spawn(move || run_shard(plan));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                meet.abandon();
                for handle in handles {
                    let _ = handle.join();
                }
                bail!("starting the executor of shard {i}: {e}");
            }
        }
    }
    meet.wait(); // every shard has opened
    let before = Snapshot::take(&dir, None)?;
    meet.wait(); // go
    meet.wait(); // every shard has its last acknowledgement
    let after = Snapshot::take(&dir, before.disk.as_ref())?;
    meet.wait(); // close
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(e)) => failures.push(format!("{e:#}")),
            Err(e) => failures.push(format!("shard {i} executor: {e}")),
        }
    }
    if !args.engine.keep {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    if !failures.is_empty() {
        bail!("scenario {} failed: {}", scenario.name(), failures.join("; "));
    }
    Ok(summarize(scenario, pin, &outcomes, &before, &after))
}

fn summarize(
    scenario: &Scenario,
    pin: bool,
    outcomes: &[ShardOutcome],
    before: &Snapshot,
    after: &Snapshot,
) -> ScenarioReport {
    let started = outcomes.iter().map(|o| o.started).min().unwrap_or(before.at);
    let finished = outcomes.iter().map(|o| o.finished).max().unwrap_or(after.at);
    let wall = finished.saturating_duration_since(started).as_secs_f64();
    let rows: u64 = outcomes.iter().map(|o| o.rows).sum();
    let wal = wal_sum(outcomes.iter().map(|o| o.wal));
    let mut latency = LatencyHistogram::new();
    for o in outcomes {
        latency.merge(&o.latency);
    }
    let per_shard = outcomes
        .iter()
        .map(|o| {
            let own_wall = o.finished.saturating_duration_since(o.started).as_secs_f64();
            ShardReport {
                shard: o.id,
                cpu: pin.then_some(o.id as usize),
                rows: o.rows,
                wall_seconds: own_wall,
                rows_per_second: per_second(o.rows as f64, own_wall),
                open_seconds: o.open.as_secs_f64(),
                close_seconds: o.close.as_secs_f64(),
                cpu_user_seconds: o.cpu.user.as_secs_f64(),
                cpu_system_seconds: o.cpu.system.as_secs_f64(),
                cpu_busy_share: ratio(o.cpu.total().as_secs_f64(), own_wall),
                cpu_us_per_row: ratio(o.cpu.total().as_secs_f64() * 1e6, o.rows as f64),
                minor_faults: o.cpu.minor_faults,
                voluntary_switches: o.cpu.voluntary_switches,
                involuntary_switches: o.cpu.involuntary_switches,
                memtable_bytes: o.memtable_bytes,
                partitions: o.partitions,
                wal: WalFigures::new(&o.wal, o.rows, own_wall),
                latency_us: o.latency.summary(),
            }
        })
        .collect();
    ScenarioReport {
        name: scenario.name(),
        shards: scenario.shards,
        mode: scenario.mode,
        writers_per_shard: scenario.writers,
        rows,
        wall_seconds: wall,
        rows_per_second: per_second(rows as f64, wall),
        rows_per_second_per_shard: per_second(rows as f64, wall) / scenario.shards as f64,
        wal: WalFigures::new(&wal, rows, wall),
        latency_us: latency.summary(),
        process_cpu_seconds: after.process.since(&before.process).total().as_secs_f64(),
        machine_cpu: after.machine_since(before),
        device: after.disk_since(before),
        per_shard,
    }
}

fn print_scenario(s: &ScenarioReport) {
    println!();
    println!(
        "== {}: {} rows, {} shard(s), {} sync, {} writers per shard ==",
        s.name,
        thousands(s.rows as f64),
        s.shards,
        s.mode,
        s.writers_per_shard
    );
    println!("  wall                {:.3} s (first write to last ack, all shards)", s.wall_seconds);
    println!(
        "  rows/s              {} total, {} per shard",
        thousands(s.rows_per_second),
        thousands(s.rows_per_second_per_shard)
    );
    let w = &s.wal;
    println!(
        "  WAL written         {:.1} MB ({:.1} MB/s), payload {:.1} MB, {} segment(s)",
        megabytes(w.bytes_written as f64),
        w.megabytes_written_per_second,
        megabytes(w.payload_bytes as f64),
        w.segments_created
    );
    println!(
        "  WAL write calls     {} ({}/s), {:.1} rows and {:.1} KiB per call",
        thousands(w.write_calls as f64),
        thousands(w.write_calls_per_second),
        w.rows_per_write_call,
        w.mean_write_call_kib
    );
    println!(
        "  fdatasyncs          {} ({:.1}/s), {:.1} rows per fdatasync",
        thousands(w.fdatasyncs as f64),
        w.fdatasyncs_per_second,
        w.rows_per_fdatasync
    );
    let l = &s.latency_us;
    println!(
        "  write latency       p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
        format_us(l.p50_us),
        format_us(l.p90_us),
        format_us(l.p99_us),
        format_us(l.p999_us),
        format_us(l.max_us),
        format_us(l.mean_us)
    );
    for p in &s.per_shard {
        let pinned = p.cpu.map_or("unpinned".to_owned(), |c| format!("CPU {c}"));
        println!(
            "  shard {} ({pinned:<8})  {} rows/s; thread CPU {:.2} s user + {:.2} s sys = {:.0}% of its {:.3} s, {:.2} us/row; {} WAL syncs",
            p.shard,
            thousands(p.rows_per_second),
            p.cpu_user_seconds,
            p.cpu_system_seconds,
            p.cpu_busy_share * 100.0,
            p.wall_seconds,
            p.cpu_us_per_row,
            thousands(p.wal.fdatasyncs as f64),
        );
        println!(
            "  shard {} events      {} minor faults ({:.2}/row), {} parks, {} preemptions; MemTable {:.0} MB",
            p.shard,
            thousands(p.minor_faults as f64),
            ratio(p.minor_faults as f64, p.rows as f64),
            thousands(p.voluntary_switches as f64),
            thousands(p.involuntary_switches as f64),
            megabytes(p.memtable_bytes as f64),
        );
        if p.partitions as u64 != p.rows {
            println!(
                "  shard {}: WARNING {} partitions for {} rows (keys not distinct?)",
                p.shard, p.partitions, p.rows
            );
        }
    }
    println!("  process CPU         {:.2} s (all threads)", s.process_cpu_seconds);
    if let Some(m) = &s.machine_cpu {
        println!("  machine CPU         {m}");
    }
    if let Some(d) = &s.device {
        println!(
            "  device {:<12} {} writes ({:.1} MB, mean {:.2} ms), {} flushes (mean {:.2} ms), busy {:.0}%",
            d.device,
            thousands(d.writes as f64),
            megabytes(d.bytes_written as f64),
            d.mean_write_ms,
            thousands(d.flushes as f64),
            d.mean_flush_ms,
            d.busy_share * 100.0
        );
    }
}

fn print_summary(scenarios: &[ScenarioReport]) {
    println!();
    println!("== summary ==");
    println!(
        "{:<18} {:>8} {:>12} {:>12} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "scenario",
        "writers",
        "rows/s",
        "rows/s/shard",
        "WAL MB/s",
        "fsyncs/s",
        "rows/fsync",
        "p50",
        "p99",
        "shard CPU"
    );
    for s in scenarios {
        let busy =
            s.per_shard.iter().map(|p| format!("{:.0}%", p.cpu_busy_share * 100.0)).collect::<Vec<_>>().join("/");
        println!(
            "{:<18} {:>8} {:>12} {:>12} {:>8.1} {:>10.1} {:>10.1} {:>10} {:>10} {:>10}",
            s.name,
            s.writers_per_shard,
            thousands(s.rows_per_second),
            thousands(s.rows_per_second_per_shard),
            s.wal.megabytes_written_per_second,
            s.wal.fdatasyncs_per_second,
            s.wal.rows_per_fdatasync,
            format_us(s.latency_us.p50_us),
            format_us(s.latency_us.p99_us),
            busy
        );
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rows == 0 || args.shards.is_empty() || args.modes.is_empty() {
        bail!("nothing to run: --rows, --shards and --modes must not be empty");
    }
    if args.shards.iter().any(|&s| s == 0 || s > usize::from(u16::MAX)) {
        bail!("--shards: each count must be between 1 and {}", u16::MAX);
    }
    let batch_writers = args.writers.unwrap_or(args.batch_writers);
    let periodic_writers = args.writers.unwrap_or(args.periodic_writers);
    if batch_writers == 0 || periodic_writers == 0 {
        bail!("writer counts must be positive");
    }
    surge_schema(SURGE_TABLE_ID)?;

    let run_dir = fresh_run_dir(&args.engine.dir, "write-surge")?;
    let machine = Machine::probe_for_run();
    println!(
        "write surge: {} rows of {KEY_BYTES}-byte keys and {}-byte values; {} CPU(s), kernel {}; data in {}",
        thousands(args.rows as f64),
        args.value_bytes,
        machine.nproc,
        machine.kernel.as_deref().unwrap_or("?"),
        run_dir.display()
    );
    println!(
        "writers per shard: batch {batch_writers}, periodic {periodic_writers}; periodic fdatasync every {} ms; WAL segments {} MiB",
        args.periodic_sync_ms, args.segment_mib
    );

    let values = Arc::new(
        ValuePool::new(args.seed, args.value_bytes)
            .ok_or_else(|| anyhow!("--value-bytes must be between 1 and {VALUE_POOL_BYTES}"))?,
    );

    let mut scenarios = Vec::new();
    for &shards in &args.shards {
        for &mode in &args.modes {
            let writers = match mode {
                Mode::Batch => batch_writers,
                Mode::Periodic => periodic_writers,
            };
            let scenario = Scenario { shards, mode, writers };
            let report = run_scenario(&args, &scenario, &run_dir, &values)?;
            print_scenario(&report);
            scenarios.push(report);
        }
    }
    print_summary(&scenarios);

    if !args.engine.keep {
        // Only our own, now empty, run directory: never the user's --dir.
        std::fs::remove_dir(&run_dir).with_context(|| format!("removing {}", run_dir.display()))?;
    }
    let report = Report {
        benchmark: "write_surge",
        machine,
        parameters: Parameters {
            command: std::env::args().collect(),
            table: "surge (key blob PRIMARY KEY, value blob)",
            rows: args.rows,
            key_bytes: KEY_BYTES,
            value_bytes: args.value_bytes,
            shards: args.shards.clone(),
            modes: args.modes.clone(),
            batch_writers_per_shard: batch_writers,
            periodic_writers_per_shard: periodic_writers,
            periodic_sync_ms: args.periodic_sync_ms,
            segment_bytes: args.segment_mib << 20,
            wal_max_pending_bytes: WalConfig::default().max_pending_bytes,
            memtable_budget_bytes: args.memtable_budget_mib << 20,
            io_memory_bytes: args.engine.io_memory,
            spin_before_park_us: args.engine.spin_before_park_us,
            pin: args.engine.pin,
            data_dir: run_dir.display().to_string(),
            seed: args.seed,
        },
        scenarios,
    };
    write_json(&args.report, &report).with_context(|| format!("writing {}", args.report.display()))?;
    println!();
    println!("report: {}", args.report.display());
    Ok(())
}

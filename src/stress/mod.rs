//! `enigmadb stress`: load generator in the spirit of cassandra-stress and scylla-bench. It owns
//! the command line, the run (one thread per connection, a progress line per second, the final
//! summary and the JSON report) and `compare`, which puts reports side by side. It measures
//! and reports; it never asserts a figure and never retries an operation.

pub mod compare;
pub mod driver;
pub mod enigma;
pub mod redis;
pub mod report;
pub mod resp;
pub mod schedule;
pub mod stats;
pub mod target;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use wire::Consistency;

use driver::{lock, ConnectionPlan, Shared};
use report::{PhaseSetting, Report, Second, ServerInfo, Settings, StepSummary, Summary, REPORT_VERSION};
use schedule::{parse_duration, surge_steps, Plan, Rate};
use stats::{per_second, Percentiles, Tally};
use target::{parse_consistency, Target, TargetKind, MAX_WINDOW};
use workload::{Distribution, KeyShape, Workload};

/// Most connections (threads) one run opens.
pub const MAX_CONNECTIONS: usize = 256;

/// Operations of a write, read or mixed run given neither `-n` nor `--duration`.
const DEFAULT_OPERATIONS: u64 = 1_000_000;

/// Longest table name accepted (it goes into statements).
const MAX_TABLE_NAME: usize = 48;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: StressCommand,
}

#[derive(clap::Subcommand)]
enum StressCommand {
    /// Writes keys (sequential by default: each key of the population once per pass).
    Write(LoadArgs),
    /// Reads keys (uniform by default) and checks each value read.
    Read(LoadArgs),
    /// Reads and writes, --read-percent of them reads (uniform keys by default).
    Mixed(MixedArgs),
    /// A write surge: target rates that step up (--steps), each held --step-duration, then back
    /// down; the report has the per-second series.
    Surge(SurgeArgs),
    /// Puts stress reports side by side: a JSON file, a Markdown table and an SVG chart.
    Compare(compare::Args),
}

/// What every run takes.
#[derive(clap::Args, Clone)]
struct CommonArgs {
    /// The store to drive.
    #[arg(long, value_enum, default_value_t = TargetKind::Enigmadb)]
    target: TargetKind,
    /// EnigmaDB: the role to run as, on a node with authentication on.
    #[command(flatten)]
    credentials: crate::credentials::CredentialArgs,
    /// EnigmaDB: TLS to the nodes.
    #[command(flatten)]
    tls: crate::credentials::TlsArgs,
    /// Server address(es), HOST[:PORT] (port default: 9470 EnigmaDB, 6379 Redis); connections
    /// are spread over them in turn.
    #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "127.0.0.1")]
    host: Vec<String>,
    /// Consistency level of every operation (EnigmaDB).
    #[arg(long, default_value = "ONE", value_parser = parse_consistency)]
    consistency: Consistency,
    /// Send each operation to the shard that owns its partition (EnigmaDB): each connection
    /// asks its node for the cluster's topology and opens a connection per node and shard
    /// through the nodes' shard-aware ports; `false`: one ordinary connection each.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    shard_aware: bool,
    /// Requests in flight over all connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Connections (one thread each); the concurrency is split over them.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct keys (rows) the run draws from.
    #[arg(long, default_value_t = 1_000_000)]
    population: u64,
    /// How keys are drawn [default: sequential for write and surge, uniform otherwise].
    #[arg(long, value_enum)]
    distribution: Option<Distribution>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Rows per partition (clustering rows of one partition key).
    #[arg(long, default_value_t = 1)]
    rows_per_partition: u64,
    /// Seed of keys and values (the same seed writes the same values, which reads check).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Table of the run (EnigmaDB): `(pk blob, ck bigint, value blob, PRIMARY KEY (pk, ck))`.
    #[arg(long, default_value = "stress")]
    table: String,
    /// Replication factor of the table, when the run creates it.
    #[arg(long, default_value_t = 1)]
    replication_factor: u8,
    /// Do not create the table (it must exist).
    #[arg(long)]
    no_create_table: bool,
    /// Stop at the first error (otherwise errors are counted and the run goes on).
    #[arg(long)]
    fail_fast: bool,
    /// Bound on connecting and on every wait for an answer (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The run's name in reports and comparisons [default: the command].
    #[arg(long)]
    label: Option<String>,
}

/// How long a write, read or mixed run lasts, and how fast it goes.
#[derive(clap::Args, Clone)]
struct LoadArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Operations to run [default: 1000000 unless --duration].
    #[arg(short = 'n', long = "operations", conflicts_with = "duration")]
    operations: Option<u64>,
    /// Run for this long instead (e.g. 30s, 2m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Target operations per second over all connections (open loop: latency counts from each
    /// operation's intended send time, as wrk2 does). Without it, as fast as answers come.
    #[arg(long, value_parser = Rate::parse)]
    rate: Option<Rate>,
}

#[derive(clap::Args, Clone)]
struct MixedArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Share of reads, in percent.
    #[arg(long, default_value_t = 50)]
    read_percent: u8,
}

#[derive(clap::Args, Clone)]
struct SurgeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Target rates of the way up, in ops/s or `max`; the surge then steps back down.
    #[arg(long, default_value = "10000,50000,max")]
    steps: String,
    /// How long each step lasts.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    step_duration: Duration,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (name, common, read_percent, default_distribution, plan, operations) = match args.command {
        StressCommand::Compare(args) => return compare::run(args),
        StressCommand::Write(load) => load_run("write", load, 0, Distribution::Sequential),
        StressCommand::Read(load) => load_run("read", load, 100, Distribution::Uniform),
        StressCommand::Mixed(mixed) => load_run("mixed", mixed.load, mixed.read_percent, Distribution::Uniform),
        StressCommand::Surge(surge) => {
            let steps = surge_steps(&surge.steps)?;
            let plan = Plan::steps(&steps, surge.step_duration);
            ("surge", surge.common, 0, Distribution::Sequential, plan, None)
        }
    };
    let run = Run::new(name, common, read_percent, default_distribution, plan, operations)?;
    let report = run.execute()?;
    report::print_summary(&report);
    if let Some(path) = &run.common.report {
        write_json(path, &report)?;
        println!("  report: {}", path.display());
    }
    match &report.summary.stopped_by {
        Some(error) => bail!("stopped at the first error (--fail-fast): {error}"),
        None => Ok(()),
    }
}

type RunShape = (&'static str, CommonArgs, u8, Distribution, Plan, Option<u64>);

fn load_run(name: &'static str, load: LoadArgs, read_percent: u8, distribution: Distribution) -> RunShape {
    let operations = match load.duration {
        Some(_) => load.operations,
        None => Some(load.operations.unwrap_or(DEFAULT_OPERATIONS)),
    };
    let plan = Plan::constant(load.rate.unwrap_or(Rate::Max), load.duration);
    (name, load.common, read_percent, distribution, plan, operations)
}

/// A run, checked and ready.
struct Run {
    command: &'static str,
    common: CommonArgs,
    workload: Workload,
    plan: Plan,
    operations: Option<u64>,
    target: Target,
}

impl Run {
    fn new(
        command: &'static str,
        common: CommonArgs,
        read_percent: u8,
        default_distribution: Distribution,
        plan: Plan,
        operations: Option<u64>,
    ) -> anyhow::Result<Run> {
        let c = &common;
        if c.connections == 0 || c.connections > MAX_CONNECTIONS {
            bail!("--connections must be between 1 and {MAX_CONNECTIONS}, got {}", c.connections);
        }
        if c.concurrency < c.connections || c.concurrency > c.connections * MAX_WINDOW {
            bail!(
                "--concurrency must be between --connections ({}) and {} per connection, got {}",
                c.connections,
                MAX_WINDOW,
                c.concurrency
            );
        }
        if c.host.is_empty() {
            bail!("--host needs at least one address");
        }
        let valid_name = |n: &str| {
            n.len() <= MAX_TABLE_NAME
                && n.starts_with(|ch: char| ch.is_ascii_alphabetic())
                && n.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        };
        if !valid_name(&c.table) {
            bail!("--table must be a letter then letters, digits or _ (at most {MAX_TABLE_NAME}), got '{}'", c.table);
        }
        if c.replication_factor == 0 {
            bail!("--replication-factor must be at least 1");
        }
        if operations == Some(0) {
            bail!("-n must be at least 1");
        }
        let shape = KeyShape::new(c.population, c.rows_per_partition)?;
        let distribution = c.distribution.unwrap_or(default_distribution);
        let workload = Workload::new(shape, distribution, read_percent, c.value_size, c.seed)?;
        let target = Target {
            kind: c.target,
            table: c.table.clone(),
            consistency: c.consistency,
            timeout: c.timeout,
            shard_aware: c.shard_aware,
            credentials: c.credentials.resolve()?,
            tls: c.tls.resolve()?,
        };
        Ok(Run { command, common, workload, plan, operations, target })
    }

    fn settings(&self) -> Settings {
        let c = &self.common;
        Settings {
            target: c.target,
            hosts: c.host.iter().map(|h| self.target.address(h)).collect(),
            consistency: c.consistency.name().into(),
            shard_aware: c.target == TargetKind::Enigmadb && c.shard_aware,
            operations: self.operations,
            duration_s: self.plan.end().map(|d| d.as_secs_f64()),
            concurrency: c.concurrency,
            connections: c.connections,
            population: c.population,
            distribution: self.workload.distribution,
            read_percent: self.workload.read_percent,
            value_size: c.value_size,
            rows_per_partition: c.rows_per_partition,
            phases: (self.plan.phases().iter())
                .map(|p| PhaseSetting {
                    start_s: p.start.as_secs_f64(),
                    end_s: p.end.map(|e| e.as_secs_f64()),
                    rate: p.rate.to_string(),
                })
                .collect(),
            seed: c.seed,
            table: c.table.clone(),
            replication_factor: c.replication_factor,
            create_table: self.creates_table(),
            fail_fast: c.fail_fast,
            timeout_s: c.timeout.as_secs_f64(),
        }
    }

    fn creates_table(&self) -> bool {
        self.target.kind == TargetKind::Enigmadb && !self.common.no_create_table && self.command != "read"
    }

    /// Connects every connection, runs the plan with a progress line per second, and returns
    /// the report.
    fn execute(&self) -> anyhow::Result<Report> {
        let c = &self.common;
        let first_host = &c.host[0];
        let (version, version_source) = self.target.server_version(first_host)?;
        if self.creates_table() {
            self.target.create_table(first_host, c.replication_factor)?;
        }
        let build = if cfg!(debug_assertions) { "debug" } else { "release" };
        println!(
            "enigmadb stress {}: {} ({}) at {}, {} connections, {} in flight, seed {}{}",
            self.command,
            version,
            c.target.name(),
            c.host.join(","),
            c.connections,
            c.concurrency,
            c.seed,
            if build == "debug" { " (DEBUG BUILD: numbers not worth comparing)" } else { "" },
        );
        let mut connections = Vec::with_capacity(c.connections);
        for i in 0..c.connections {
            let host = &c.host[i % c.host.len()];
            let connection = self
                .target
                .connect(host, &self.workload)
                .with_context(|| format!("opening connection {i} to {host}"))?;
            connections.push((host.clone(), connection));
        }
        let shared = Arc::new(Shared::new(self.operations, c.fail_fast));
        let windows = split(c.concurrency, c.connections);
        let mut tallies = Vec::with_capacity(c.connections);
        let mut threads = Vec::with_capacity(c.connections);
        for (index, ((host, connection), window)) in connections.into_iter().zip(windows).enumerate() {
            let tally = Arc::new(Mutex::new(Tally::default()));
            tallies.push(tally.clone());
            let plan = ConnectionPlan {
                index,
                host,
                window,
                connections: c.connections,
                plan: self.plan.clone(),
                target: self.target.clone(),
                workload: self.workload.clone(),
                seed: c.seed,
                shared: shared.clone(),
                tally,
            };
            let thread = std::thread::Builder::new()
                .name(format!("stress-{index}"))
                .spawn(move || driver::run(plan, connection))
                .context("starting a connection thread")?;
            threads.push(thread);
        }

        let mut progress = Progress::new(&self.plan);
        let mut tick = Duration::from_secs(1);
        loop {
            let finished = threads.iter().all(|t| t.is_finished());
            let now = shared.start.elapsed();
            if !finished && now < tick {
                std::thread::sleep((tick - now).min(PROGRESS_POLL));
                continue;
            }
            progress.collect(&tallies, now);
            tick = Duration::from_secs(now.as_secs() + 1);
            if finished {
                break;
            }
        }
        for thread in threads {
            if thread.join().is_err() {
                bail!("a connection thread panicked");
            }
        }
        let stopped_by = lock(&shared.first_error).clone();
        let elapsed = progress.last.as_secs_f64();
        let summary = Summary::of(&progress.total, elapsed, stopped_by.filter(|_| shared.stop.load(Ordering::Relaxed)));
        let mut notes = Vec::new();
        if c.target == TargetKind::Redis {
            notes.push("Redis: --consistency, --shard-aware, --replication-factor and --table do not apply; keys are the partition key bytes (plus the clustering value when partitions hold several rows), SET and GET".into());
        }
        Ok(Report {
            report_version: REPORT_VERSION,
            tool: concat!("enigmadb stress ", env!("CARGO_PKG_VERSION")).into(),
            command: self.command.into(),
            label: c.label.clone().unwrap_or_else(|| self.command.into()),
            target: c.target,
            server: ServerInfo {
                version,
                version_source: version_source.into(),
                hosts: c.host.iter().map(|h| self.target.address(h)).collect(),
            },
            settings: self.settings(),
            build: build.into(),
            summary,
            steps: progress.steps(),
            series: progress.series,
            notes,
        })
    }
}

/// Writes `value` as pretty JSON to `path` (through a temporary file, so a reader never sees
/// half a report).
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// How often the progress loop looks whether the connection threads are done.
const PROGRESS_POLL: Duration = Duration::from_millis(20);

/// `total` requests split over `parts` as evenly as possible.
fn split(total: usize, parts: usize) -> Vec<usize> {
    (0..parts).map(|i| total / parts + usize::from(i < total % parts)).collect()
}

/// The progress loop's state: the per-second series, the totals, and one tally per step.
struct Progress {
    plan: Plan,
    second: Tally,
    total: Tally,
    per_step: Vec<Tally>,
    series: Vec<Second>,
    /// When the previous interval ended.
    last: Duration,
}

impl Progress {
    fn new(plan: &Plan) -> Progress {
        Progress {
            plan: plan.clone(),
            second: Tally::default(),
            total: Tally::default(),
            per_step: plan.phases().iter().map(|_| Tally::default()).collect(),
            series: Vec::new(),
            last: Duration::ZERO,
        }
    }

    /// Drains the connections' tallies into one point of the series (ending at `now`) and
    /// prints it.
    fn collect(&mut self, tallies: &[Arc<Mutex<Tally>>], now: Duration) {
        self.second.clear();
        for tally in tallies {
            let mut t = lock(tally);
            self.second.add(&t);
            t.clear();
        }
        let seconds = (now - self.last).as_secs_f64();
        if self.second.operations() == 0 && seconds < 0.5 {
            return;
        }
        // The interval belongs to the phase in force at its middle.
        let middle = self.last + (now - self.last) / 2;
        let phase = self.plan.phase_at(middle);
        let (step, rate) = (phase.map(|(i, _)| i + 1), phase.and_then(|(_, p)| p.rate.target()));
        let point = Second::of(&self.second, now.as_secs_f64(), seconds, step, rate);
        println!("{}", point.line());
        self.series.push(point);
        self.total.add(&self.second);
        if let Some((i, _)) = phase {
            self.per_step[i].add(&self.second);
        }
        self.last = now;
    }

    fn steps(&self) -> Vec<StepSummary> {
        if self.plan.phases().len() < 2 {
            return Vec::new();
        }
        (self.plan.phases().iter().zip(&self.per_step).enumerate())
            .map(|(i, (phase, tally))| {
                let start = phase.start.as_secs_f64();
                let end = phase.end.map_or(self.last.as_secs_f64(), |e| e.as_secs_f64());
                StepSummary {
                    step: i + 1,
                    rate: phase.rate.to_string(),
                    start_s: start,
                    end_s: end,
                    operations: tally.operations(),
                    ops_per_s: per_second(tally.operations(), end - start),
                    errors: tally.errors.clone(),
                    latency_us: Percentiles::of(&tally.latency),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_is_split_over_connections_without_loss() {
        assert_eq!(split(64, 4), vec![16, 16, 16, 16]);
        assert_eq!(split(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(split(10, 4).iter().sum::<usize>(), 10);
    }

    #[test]
    fn bad_settings_are_refused_before_connecting() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            common: CommonArgs,
        }
        let check = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["stress"], args].concat()).map_err(|e| e.to_string())?;
            let plan = Plan::constant(Rate::Max, None);
            Run::new("write", cli.common, 0, Distribution::Sequential, plan, Some(1))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(check(&[]).is_ok());
        assert!(check(&["--connections", "0"]).unwrap_err().contains("--connections"));
        assert!(check(&["--connections", "8", "--concurrency", "4"]).unwrap_err().contains("--concurrency"));
        assert!(check(&["--table", "x; DROP"]).unwrap_err().contains("--table"));
        assert!(check(&["--rows-per-partition", "0"]).unwrap_err().contains("rows per partition"));
        assert!(check(&["--value-size", "0"]).unwrap_err().contains("value size"));
        assert!(check(&["--consistency", "MOST"]).unwrap_err().contains("unknown consistency"));
        assert!(check(&["--timeout", "soon"]).unwrap_err().contains("not a duration"));
        assert!(check(&["--shard-aware", "maybe"]).unwrap_err().contains("--shard-aware"));
        assert!(check(&["--shard-aware", "false"]).is_ok());
        let cli = Cli::try_parse_from(["stress"]).map_err(|e| e.to_string());
        assert!(cli.is_ok_and(|cli| cli.common.shard_aware), "shard-aware by default");
    }
}

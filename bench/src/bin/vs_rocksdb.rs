//! EnigmaDB's storage engine against RocksDB, same workloads, same run, same filesystem: a write
//! surge (WAL on, no sync per write), durable writes (WAL synced before each acknowledgement, 32
//! concurrent writers: group commit), an overwrite-heavy load followed by compaction, and point
//! reads of present and absent keys. EnigmaDB runs embedded (`Shard::apply`/`Shard::read` on
//! each shard's own executor, as `write_surge` does) with 1 and 2 shards; RocksDB (the `rocksdb`
//! crate, bundled build) with its default options driven by 1 and by 2 client threads.
//!
//! Prints a table (ops/s, p99 latency, write amplification, space amplification) and writes a
//! JSON report and a Markdown summary. It measures; it asserts nothing. Built only with the
//! `rocksdb` feature, which `cargo build`/`cargo test` of the workspace leave off.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use bench::latency::{format_us, LatencyHistogram, LatencySummary};
use bench::machine::{utc_iso8601, Machine, Pinning};
use bench::rendezvous::Rendezvous;
use bench::report::{per_second, ratio, thousands, write_json};
use bench::surge::{
    insert_as, partition_key, row_key, surge_schema, write_rows, write_rows_with, ValuePool, KEY_BYTES,
    VALUE_POOL_BYTES,
};
use clap::{Parser, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use shards::io::prepare_executor_io;
use shards::row::ClusteringSlice;
use shards::shard::{Shard, ShardConfig};
use shards::sstable::SstableConfig;
use shards::wal::{SyncMode, WalConfig};

/// The id of the one table (the shards are driven directly, without a catalog).
const TABLE_ID: u32 = 1;

/// Row numbers of absent keys start here: far above any row a run writes.
const ABSENT_ROWS_FROM: u64 = 1 << 62;

#[derive(Parser, Debug)]
#[command(about = "EnigmaDB's engine against RocksDB: write surge, durable writes, overwrites with \
             compaction, point reads (prints numbers, asserts nothing)")]
struct Args {
    /// Puts of the write surge (16-byte keys, distinct), which is also the data set the reads use.
    #[arg(long, default_value_t = 5_000_000)]
    rows: u64,
    /// Puts of the durable-writes phase (each acknowledged after the WAL sync covering it).
    #[arg(long, default_value_t = 200_000)]
    durable_writes: u64,
    /// Concurrent writers of the durable phase, in all (split over EnigmaDB's shards).
    #[arg(long, default_value_t = 32)]
    durable_writers: usize,
    /// Puts of the overwrite-heavy phase.
    #[arg(long, default_value_t = 5_000_000)]
    overwrite_puts: u64,
    /// Distinct keys the overwrite-heavy puts cycle over.
    #[arg(long, default_value_t = 500_000)]
    overwrite_keys: u64,
    /// Point reads of present keys, and as many of absent keys, after the surge.
    #[arg(long, default_value_t = 500_000)]
    reads: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// EnigmaDB writer tasks per shard for the unsynced phases (periodic WAL sync): one write in
    /// flight each, as write_surge's periodic mode.
    #[arg(long, default_value_t = 1024)]
    enigma_writers: usize,
    /// EnigmaDB reader tasks per shard (each with one read in flight).
    #[arg(long, default_value_t = 64)]
    enigma_readers: usize,
    /// EnigmaDB's SSTable data block size in bytes (0: the engine's default). A point read that
    /// misses the block cache reads one whole block from the device.
    #[arg(long, default_value_t = 0)]
    enigma_block_size: usize,
    /// fdatasync period of EnigmaDB's periodic WAL mode in the unsynced phases.
    #[arg(long, default_value_t = 1000)]
    periodic_sync_ms: u64,
    /// Configurations to run, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = vec![Engine::Enigma1, Engine::Enigma2, Engine::Rocksdb, Engine::Rocksdb2])]
    engines: Vec<Engine>,
    /// Phases to run, comma-separated (reads need the surge).
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = vec![Phase::Surge, Phase::Reads, Phase::Durable, Phase::Overwrite])]
    phases: Vec<Phase>,
    /// Memory each executor registers with io_uring (bounded by `ulimit -l`; docs/GLOMMIO.md, memory).
    #[arg(long, default_value_t = 512 * 1024)]
    io_memory: usize,
    /// Pin shard i to CPU i: auto pins when there are at least as many CPUs as shards.
    #[arg(long, value_enum, default_value_t = Pinning::Auto)]
    pin: Pinning,
    /// Parent directory of the data (a fresh subdirectory per scenario, removed after it). Must
    /// be on the disk to measure (not tmpfs).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data"))]
    dir: PathBuf,
    /// Directory of the JSON report and the Markdown summary (`<date>-vs-rocksdb.{json,md}`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    results: PathBuf,
    /// Seed of the value bytes and of the keys read.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Engine {
    /// EnigmaDB, 1 shard.
    Enigma1,
    /// EnigmaDB, 2 shards.
    Enigma2,
    /// RocksDB, default options, 1 client thread.
    Rocksdb,
    /// RocksDB, default options, 2 client threads.
    Rocksdb2,
}

impl Engine {
    fn label(self) -> &'static str {
        match self {
            Engine::Enigma1 => "EnigmaDB 1 shard",
            Engine::Enigma2 => "EnigmaDB 2 shards",
            Engine::Rocksdb => "RocksDB defaults",
            Engine::Rocksdb2 => "RocksDB 2 writer threads",
        }
    }

    /// Shards (EnigmaDB) or client threads (RocksDB).
    fn width(self) -> usize {
        match self {
            Engine::Enigma1 | Engine::Rocksdb => 1,
            Engine::Enigma2 | Engine::Rocksdb2 => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Phase {
    Surge,
    Reads,
    Durable,
    Overwrite,
}

/// One measured line of the table.
#[derive(Clone, Debug, Serialize)]
struct Measurement {
    engine: Engine,
    engine_label: &'static str,
    workload: &'static str,
    ops: u64,
    seconds: f64,
    ops_per_second: f64,
    latency: LatencySummary,
    /// Keys and values written by the clients (0 for reads).
    user_bytes: u64,
    /// Bytes the process wrote to storage (`/proc/self/io` write_bytes - cancelled_write_bytes)
    /// over the phase, its flush and its compaction.
    disk_bytes_written: u64,
    write_amplification: Option<f64>,
    /// Space the engine's directory takes after it closed (allocated blocks).
    space_bytes: Option<u64>,
    /// Live user data: distinct keys x (key + value bytes).
    live_bytes: Option<u64>,
    space_amplification: Option<f64>,
    /// Reads that found a value (reads of present keys must find all).
    found: Option<u64>,
    note: Option<String>,
}

impl Measurement {
    fn new(engine: Engine, workload: &'static str, latency: &LatencyHistogram, seconds: f64) -> Measurement {
        Measurement {
            engine,
            engine_label: engine.label(),
            workload,
            ops: latency.count(),
            seconds,
            ops_per_second: per_second(latency.count() as f64, seconds),
            latency: latency.summary(),
            user_bytes: 0,
            disk_bytes_written: 0,
            write_amplification: None,
            space_bytes: None,
            live_bytes: None,
            space_amplification: None,
            found: None,
            note: None,
        }
    }

    fn writes(mut self, user_bytes: u64, disk_bytes: u64) -> Measurement {
        self.user_bytes = user_bytes;
        self.disk_bytes_written = disk_bytes;
        self.write_amplification = Some(ratio(disk_bytes as f64, user_bytes as f64));
        self
    }

    fn space(mut self, space_bytes: u64, live_bytes: u64) -> Measurement {
        self.space_bytes = Some(space_bytes);
        self.live_bytes = Some(live_bytes);
        self.space_amplification = Some(ratio(space_bytes as f64, live_bytes as f64));
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Counters of the process and the filesystem

/// Bytes this process has caused to be written to storage so far (`/proc/self/io`: every thread,
/// direct and buffered writes alike, less the dirty pages it truncated before writeback).
fn process_write_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
    let field = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
            .ok_or_else(|| anyhow!("/proc/self/io has no {name}"))?
            .parse()
            .with_context(|| format!("/proc/self/io {name}"))
    };
    Ok(field("write_bytes")?.saturating_sub(field("cancelled_write_bytes")?))
}

/// Allocated bytes of every file under `dir`.
fn space_used(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { space_used(&entry.path())? } else { meta.blocks() * 512 };
    }
    Ok(total)
}

fn fresh_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    let dir = parent.join(format!("vs-rocksdb-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Runs `body`, and returns its result with the bytes the process wrote during it.
fn with_written_bytes<T>(body: impl FnOnce() -> Result<T>) -> Result<(T, u64)> {
    let before = process_write_bytes()?;
    let out = body()?;
    Ok((out, process_write_bytes()?.saturating_sub(before)))
}

// ---------------------------------------------------------------------------------------------
// EnigmaDB: one executor per shard, driven through phases by the main thread

/// Work a shard does in one step; every shard does the same step at the same time.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Rows of the shard's share, each a new key.
    Load {
        writers: usize,
    },
    /// Puts cycling over the shard's own `keys` keys.
    Overwrite {
        keys: u64,
        writers: usize,
    },
    Flush,
    /// A major compaction (`Shard::compact_major`: every SSTable of the table merged into one).
    Compact,
    /// `reads` point reads of the shard's own rows (present) or of absent keys.
    Read {
        present: bool,
        reads: u64,
    },
}

/// What one shard did in one step.
#[derive(Default)]
struct StepOutcome {
    latency: LatencyHistogram,
    found: u64,
}

struct ShardPlan {
    id: u16,
    dir: PathBuf,
    config: ShardConfig,
    /// The shard's rows are `first_row..first_row + rows` (and its overwrite puts as many).
    first_row: u64,
    rows: u64,
    readers: usize,
    seed: u64,
    values: Arc<ValuePool>,
    steps: Vec<Step>,
    meet: Arc<Rendezvous>,
    outcomes: Arc<Mutex<Vec<Vec<StepOutcome>>>>,
}

/// The body of one shard executor: open, then each step between two meetings (go, done) with
/// the main thread, then close. It always attends every meeting, even after a failure, so that
/// no one waits for it in vain.
async fn run_shard(plan: ShardPlan) -> Result<()> {
    let opened = open_shard(&plan).await;
    let mut first_error = opened.as_ref().err().map(|e| anyhow!("{e:#}"));
    for step in &plan.steps {
        plan.meet.wait();
        if let (Ok(shard), None) = (&opened, &first_error) {
            match run_step(shard, &plan, *step).await {
                Ok(outcome) => plan.outcomes.lock().unwrap_or_else(|p| p.into_inner())[plan.id as usize].push(outcome),
                Err(e) => first_error = Some(e.context(format!("shard {}: {step:?}", plan.id))),
            }
        }
        plan.meet.wait();
    }
    if let Ok(shard) = opened {
        shard.close().await.with_context(|| format!("closing shard {}", plan.id))?;
    }
    plan.meet.wait();
    first_error.map_or(Ok(()), Err)
}

async fn open_shard(plan: &ShardPlan) -> Result<Rc<Shard>> {
    prepare_executor_io(&plan.dir).await.with_context(|| format!("preparing I/O in {}", plan.dir.display()))?;
    let schema = surge_schema(TABLE_ID)?;
    let (shard, _replay) = Shard::open(plan.id, &plan.dir, plan.config.clone(), std::slice::from_ref(&schema))
        .await
        .with_context(|| format!("opening shard {} in {}", plan.id, plan.dir.display()))?;
    Ok(shard)
}

async fn run_step(shard: &Rc<Shard>, plan: &ShardPlan, step: Step) -> Result<StepOutcome> {
    let schema = Rc::new(surge_schema(TABLE_ID)?);
    let rows = plan.first_row..plan.first_row + plan.rows;
    match step {
        Step::Load { writers } => {
            Ok(StepOutcome { latency: write_rows(shard, &schema, &plan.values, rows, writers).await?, found: 0 })
        }
        Step::Overwrite { keys, writers } => {
            // Shard i cycles over its own slice of the key space, as routing by token would.
            let (first_key, values) = (u64::from(plan.id) * keys, plan.values.clone());
            let latency = write_rows_with(shard, rows, writers, move |row| {
                insert_as(&schema, &values, first_key + row % keys.max(1), row)
            })
            .await?;
            Ok(StepOutcome { latency, found: 0 })
        }
        Step::Flush => {
            shard.flush().await?;
            Ok(StepOutcome::default())
        }
        Step::Compact => {
            shard.compact_major(None).await?;
            Ok(StepOutcome::default())
        }
        Step::Read { present, reads } => read_step(shard, plan, present, reads).await,
    }
}

/// `reads` point reads by `plan.readers` tasks, of seeded random rows of this shard's share
/// (present) or of rows never written (absent).
async fn read_step(shard: &Rc<Shard>, plan: &ShardPlan, present: bool, reads: u64) -> Result<StepOutcome> {
    let schema = Rc::new(surge_schema(TABLE_ID)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed ^ u64::from(plan.id) ^ u64::from(present));
    let from = if present { plan.first_row } else { ABSENT_ROWS_FROM + plan.first_row };
    let rows: Rc<Vec<u64>> = Rc::new((0..reads).map(|_| from + rng.gen_range(0..plan.rows.max(1))).collect());
    let next = Rc::new(std::cell::Cell::new(0usize));
    let tasks: Vec<_> = (0..plan.readers.max(1))
        .map(|_| {
            let (shard, schema, rows, next) = (shard.clone(), schema.clone(), rows.clone(), next.clone());
            glommio::spawn_local(async move {
                let mut out = StepOutcome::default();
                loop {
                    let i = next.get();
                    let Some(row) = rows.get(i) else { return anyhow::Ok(out) };
                    next.set(i + 1);
                    let key = partition_key(&schema, *row)?;
                    let sent = Instant::now();
                    let found = shard.read(TABLE_ID, &key, &ClusteringSlice::ALL).await?;
                    out.latency.record(sent.elapsed());
                    out.found += u64::from(found.is_some());
                }
            })
        })
        .collect();
    let mut total = StepOutcome::default();
    for task in tasks {
        let out = task.await?;
        total.latency.merge(&out.latency);
        total.found += out.found;
    }
    Ok(total)
}

/// A running EnigmaDB node of `shards` executors that will do `steps`.
struct EnigmaRun {
    meet: Arc<Rendezvous>,
    outcomes: Arc<Mutex<Vec<Vec<StepOutcome>>>>,
    handles: Vec<glommio::ExecutorJoinHandle<Result<()>>>,
    dir: PathBuf,
    steps: usize,
}

impl EnigmaRun {
    fn start(
        args: &Args,
        name: &str,
        shards: usize,
        mode: SyncMode,
        total_rows: u64,
        steps: Vec<Step>,
    ) -> Result<EnigmaRun> {
        let dir = fresh_dir(&args.dir, name)?;
        let meet = Arc::new(Rendezvous::new(shards + 1));
        let outcomes = Arc::new(Mutex::new((0..shards).map(|_| Vec::new()).collect()));
        let values = Arc::new(ValuePool::new(args.seed, args.value_bytes).ok_or_else(|| anyhow!("bad value size"))?);
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pin = args.pin.pins(shards, nproc);
        let per_shard = total_rows / shards as u64;
        let mut handles = Vec::new();
        for i in 0..shards {
            let shard_dir = dir.join(format!("shard-{i:03}"));
            std::fs::create_dir_all(&shard_dir)?;
            let config = ShardConfig {
                wal: WalConfig {
                    sync_mode: mode,
                    periodic_sync: Duration::from_millis(args.periodic_sync_ms),
                    ..WalConfig::default()
                },
                ..ShardConfig::default()
            };
            let config = match args.enigma_block_size {
                0 => config,
                block_size => ShardConfig { sstable: SstableConfig { block_size, ..config.sstable.clone() }, ..config },
            };
            let plan = ShardPlan {
                id: i as u16,
                dir: shard_dir,
                config,
                first_row: i as u64 * per_shard,
                rows: per_shard,
                readers: args.enigma_readers,
                seed: args.seed,
                values: values.clone(),
                steps: steps.clone(),
                meet: meet.clone(),
                outcomes: outcomes.clone(),
            };
            let placement = if pin { Placement::Fixed(i) } else { Placement::Unbound };
            let spawned = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{i}"))
                .io_memory(args.io_memory)
                .preempt_timer(shards::node::DEFAULT_TASK_QUOTA)
                .spawn(move || run_shard(plan));
            match spawned {
                Ok(h) => handles.push(h),
                Err(e) => {
                    meet.abandon();
                    bail!("starting shard {i}'s executor: {e}");
                }
            }
        }
        Ok(EnigmaRun { meet, outcomes, handles, dir, steps: steps.len() })
    }

    /// Runs the next step on every shard; returns the merged outcome, the wall time and the
    /// bytes the process wrote.
    fn step(&self, index: usize) -> Result<(StepOutcome, f64, u64)> {
        let (seconds, written) = with_written_bytes(|| {
            self.meet.wait();
            let started = Instant::now();
            self.meet.wait();
            Ok(started.elapsed().as_secs_f64())
        })?;
        let mut merged = StepOutcome::default();
        let outcomes = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        for shard in outcomes.iter() {
            let Some(o) = shard.get(index) else { bail!("a shard failed step {index} (see below)") };
            merged.latency.merge(&o.latency);
            merged.found += o.found;
        }
        Ok((merged, seconds, written))
    }

    /// Closes the shards; returns the bytes written while closing and the space used after.
    fn finish(self) -> Result<(u64, u64)> {
        let ((), written) = with_written_bytes(|| {
            self.meet.wait();
            Ok(())
        })?;
        for h in self.handles {
            h.join().map_err(|e| anyhow!("shard executor: {e}"))??;
        }
        let space = space_used(&self.dir)?;
        std::fs::remove_dir_all(&self.dir).ok();
        Ok((written, space))
    }

    /// Runs every step, then closes, even when a step fails (the shards wait for every meeting).
    fn run_all(
        self,
        mut on_step: impl FnMut(usize, Result<(StepOutcome, f64, u64)>) -> Result<()>,
    ) -> Result<(u64, u64)> {
        let mut first_error = None;
        for i in 0..self.steps {
            let result = self.step(i);
            if let Err(e) = on_step(i, result) {
                first_error.get_or_insert(e);
            }
        }
        let finished = self.finish();
        match first_error {
            Some(e) => Err(e),
            None => finished,
        }
    }
}

fn live_bytes(keys: u64, value_bytes: usize) -> u64 {
    keys * (KEY_BYTES + value_bytes) as u64
}

fn enigma_surge_and_reads(args: &Args, engine: Engine, out: &mut Vec<Measurement>) -> Result<()> {
    let shards = engine.width();
    let rows = args.rows / shards as u64 * shards as u64;
    let mut steps = vec![Step::Load { writers: args.enigma_writers }, Step::Flush];
    let reads = args.phases.contains(&Phase::Reads);
    if reads {
        let per_shard = args.reads / shards as u64;
        steps.push(Step::Read { present: true, reads: per_shard });
        steps.push(Step::Read { present: false, reads: per_shard });
    }
    let run = EnigmaRun::start(args, "enigma-surge", shards, SyncMode::Periodic, rows, steps)?;
    let mut surge: Option<Measurement> = None;
    let mut flush_bytes = 0;
    let mut read_results = Vec::new();
    let (close_bytes, space) = run.run_all(|i, result| {
        let (o, seconds, written) = result?;
        match i {
            0 => {
                surge = Some(
                    Measurement::new(engine, "write surge", &o.latency, seconds)
                        .writes(live_bytes(o.latency.count(), args.value_bytes), written),
                )
            }
            1 => flush_bytes = written,
            _ => {
                let workload = if i == 2 { "reads, present keys" } else { "reads, absent keys" };
                let m = Measurement::new(engine, workload, &o.latency, seconds);
                read_results.push(Measurement { found: Some(o.found), ..m });
            }
        }
        Ok(())
    })?;
    let surge = surge.ok_or_else(|| anyhow!("the surge did not run"))?;
    let disk = surge.disk_bytes_written + flush_bytes + close_bytes;
    let user_bytes = surge.user_bytes;
    let mut surge = surge.writes(user_bytes, disk).space(space, live_bytes(rows, args.value_bytes));
    surge.note = Some("write amplification includes the final flush; space after close".into());
    out.push(surge);
    out.extend(read_results);
    Ok(())
}

fn enigma_durable(args: &Args, engine: Engine, out: &mut Vec<Measurement>) -> Result<()> {
    let shards = engine.width();
    let writers = (args.durable_writers / shards).max(1);
    let rows = args.durable_writes / shards as u64 * shards as u64;
    let run = EnigmaRun::start(args, "enigma-durable", shards, SyncMode::Batch, rows, vec![Step::Load { writers }])?;
    let mut m = None;
    run.run_all(|_, result| {
        let (o, seconds, written) = result?;
        m = Some(
            Measurement::new(engine, "durable writes", &o.latency, seconds)
                .writes(live_bytes(o.latency.count(), args.value_bytes), written),
        );
        Ok(())
    })?;
    let mut m = m.ok_or_else(|| anyhow!("the durable phase did not run"))?;
    m.note = Some(format!("{writers} writers per shard, batch sync mode (acknowledged after fdatasync)"));
    out.push(m);
    Ok(())
}

fn enigma_overwrite(args: &Args, engine: Engine, out: &mut Vec<Measurement>) -> Result<()> {
    let shards = engine.width();
    let keys = args.overwrite_keys / shards as u64;
    let puts = args.overwrite_puts / shards as u64 * shards as u64;
    let steps = vec![Step::Overwrite { keys, writers: args.enigma_writers }, Step::Flush, Step::Compact];
    let run = EnigmaRun::start(args, "enigma-overwrite", shards, SyncMode::Periodic, puts, steps)?;
    let mut m = None;
    let mut flush_and_compaction_bytes = 0;
    let mut compaction_seconds = 0.0;
    let (close_bytes, space) = run.run_all(|i, result| {
        let (o, seconds, written) = result?;
        if i == 0 {
            m = Some((Measurement::new(engine, "overwrite-heavy", &o.latency, seconds), written));
        } else {
            flush_and_compaction_bytes += written;
            compaction_seconds += seconds;
        }
        Ok(())
    })?;
    let (m, written) = m.ok_or_else(|| anyhow!("the overwrite phase did not run"))?;
    let user_bytes = live_bytes(m.ops, args.value_bytes);
    let mut m = m
        .writes(user_bytes, written + flush_and_compaction_bytes + close_bytes)
        .space(space, live_bytes(keys * shards as u64, args.value_bytes));
    m.note = Some(format!(
        "size-tiered compaction (the default) during the load, then flush and a major compaction \
         ({compaction_seconds:.1} s); space after close"
    ));
    out.push(m);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RocksDB: the same workloads from plain threads

/// Which RocksDB this binary runs: the crate's bundled build, unless `librocksdb-sys` was told
/// to link a system library (`ROCKSDB_LIB_DIR` at build time; see bench/README.md).
fn rocksdb_build() -> String {
    match option_env!("ROCKSDB_LIB_DIR") {
        Some(dir) => format!("system librocksdb from {dir}, through the rocksdb crate 0.25 (not the bundled build)"),
        None => "rocksdb crate 0.25, bundled RocksDB 11.8.1".into(),
    }
}

fn open_rocksdb(dir: &Path) -> Result<rocksdb::DB> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    rocksdb::DB::open(&opts, dir).with_context(|| format!("opening RocksDB in {}", dir.display()))
}

/// Runs `work(thread, range)` on `threads` threads over `0..total` split in contiguous ranges;
/// returns the merged latencies, the wall time and what the work counted.
fn on_threads(
    threads: usize,
    total: u64,
    work: impl Fn(usize, std::ops::Range<u64>, &mut LatencyHistogram) -> Result<u64> + Sync,
) -> Result<(LatencyHistogram, f64, u64)> {
    let per = total / threads as u64;
    let started = Instant::now();
    let results: Vec<Result<(LatencyHistogram, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let work = &work;
                s.spawn(move || {
                    let mut latency = LatencyHistogram::new();
                    let counted = work(t, t as u64 * per..(t as u64 + 1) * per, &mut latency)?;
                    Ok((latency, counted))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a client thread panicked")))).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut latency = LatencyHistogram::new();
    let mut counted = 0;
    for r in results {
        let (l, c) = r?;
        latency.merge(&l);
        counted += c;
    }
    Ok((latency, seconds, counted))
}

fn rocks_put(
    db: &rocksdb::DB,
    opts: &rocksdb::WriteOptions,
    values: &ValuePool,
    key_row: u64,
    value_row: u64,
    latency: &mut LatencyHistogram,
) -> Result<()> {
    let key = row_key(key_row);
    let sent = Instant::now();
    db.put_opt(&key, values.value_ref(value_row), opts)?;
    latency.record(sent.elapsed());
    Ok(())
}

fn rocks_surge_and_reads(args: &Args, engine: Engine, out: &mut Vec<Measurement>) -> Result<()> {
    let threads = engine.width();
    let values = ValuePool::new(args.seed, args.value_bytes).ok_or_else(|| anyhow!("bad value size"))?;
    let dir = fresh_dir(&args.dir, "rocksdb-surge")?;
    let rows = args.rows / threads as u64 * threads as u64;
    let db = open_rocksdb(&dir)?;
    let wopts = rocksdb::WriteOptions::default();
    let ((latency, seconds, _), written) = with_written_bytes(|| {
        let r = on_threads(threads, rows, |_, range, latency| {
            for row in range {
                rocks_put(&db, &wopts, &values, row, row, latency)?;
            }
            Ok(0)
        })?;
        db.flush()?;
        Ok(r)
    })?;
    let surge = Measurement::new(engine, "write surge", &latency, seconds);
    let mut reads = Vec::new();
    if args.phases.contains(&Phase::Reads) {
        for present in [true, false] {
            let count = args.reads / threads as u64 * threads as u64;
            let (latency, seconds, found) = on_threads(threads, count, |t, range, latency| {
                let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ t as u64 ^ u64::from(present));
                let mut found = 0;
                for _ in range {
                    let row = rng.gen_range(0..rows);
                    let key = row_key(if present { row } else { ABSENT_ROWS_FROM + row });
                    let sent = Instant::now();
                    let got = db.get_pinned(&key)?;
                    latency.record(sent.elapsed());
                    found += u64::from(got.is_some());
                }
                Ok(found)
            })?;
            let workload = if present { "reads, present keys" } else { "reads, absent keys" };
            reads.push(Measurement { found: Some(found), ..Measurement::new(engine, workload, &latency, seconds) });
        }
    }
    let ((), close_bytes) = with_written_bytes(|| {
        drop(db);
        Ok(())
    })?;
    let space = space_used(&dir)?;
    std::fs::remove_dir_all(&dir).ok();
    let mut surge = surge
        .writes(live_bytes(rows, args.value_bytes), written + close_bytes)
        .space(space, live_bytes(rows, args.value_bytes));
    surge.note = Some("write amplification includes the final flush; space after close".into());
    out.push(surge);
    out.extend(reads);
    Ok(())
}

fn rocks_durable(args: &Args, engine: Engine, out: &mut Vec<Measurement>) -> Result<()> {
    let values = ValuePool::new(args.seed, args.value_bytes).ok_or_else(|| anyhow!("bad value size"))?;
    let dir = fresh_dir(&args.dir, "rocksdb-durable")?;
    let db = open_rocksdb(&dir)?;
    let mut wopts = rocksdb::WriteOptions::default();
    wopts.set_sync(true);
    let writers = args.durable_writers.max(1);
    let rows = args.durable_writes / writers as u64 * writers as u64;
    let ((latency, seconds, _), written) = with_written_bytes(|| {
        on_threads(writers, rows, |_, range, latency| {
            for row in range {
                rocks_put(&db, &wopts, &values, row, row, latency)?;
            }
            Ok(0)
        })
    })?;
    drop(db);
    std::fs::remove_dir_all(&dir).ok();
    let mut m = Measurement::new(engine, "durable writes", &latency, seconds)
        .writes(live_bytes(latency.count(), args.value_bytes), written);
    m.note = Some(format!("{writers} writer threads, sync=true (RocksDB groups concurrent writers' WAL syncs)"));
    out.push(m);
    Ok(())
}

fn rocks_overwrite(args: &Args, engine: Engine, out: &mut Vec<Measurement>) -> Result<()> {
    let threads = engine.width();
    let values = ValuePool::new(args.seed, args.value_bytes).ok_or_else(|| anyhow!("bad value size"))?;
    let dir = fresh_dir(&args.dir, "rocksdb-overwrite")?;
    let db = open_rocksdb(&dir)?;
    let wopts = rocksdb::WriteOptions::default();
    let keys = args.overwrite_keys / threads as u64;
    let puts = args.overwrite_puts / threads as u64 * threads as u64;
    let per_thread = puts / threads as u64;
    let mut compaction_seconds = 0.0;
    let ((latency, seconds, _), written) = with_written_bytes(|| {
        let r = on_threads(threads, puts, |t, range, latency| {
            // Thread t cycles over its own slice of the key space.
            for row in range {
                rocks_put(
                    &db,
                    &wopts,
                    &values,
                    t as u64 * keys + (row - t as u64 * per_thread) % keys.max(1),
                    row,
                    latency,
                )?;
            }
            Ok(0)
        })?;
        let started = Instant::now();
        db.flush()?;
        db.compact_range::<&[u8], &[u8]>(None, None);
        compaction_seconds = started.elapsed().as_secs_f64();
        Ok(r)
    })?;
    drop(db);
    let space = space_used(&dir)?;
    std::fs::remove_dir_all(&dir).ok();
    let mut m = Measurement::new(engine, "overwrite-heavy", &latency, seconds)
        .writes(live_bytes(latency.count(), args.value_bytes), written)
        .space(space, live_bytes(keys * threads as u64, args.value_bytes));
    m.note = Some(format!(
        "leveled compaction (the default) during the load, then flush and a full compact_range \
         ({compaction_seconds:.1} s); space after close"
    ));
    out.push(m);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    parameters: Parameters,
    measurements: Vec<Measurement>,
    errors: Vec<String>,
}

#[derive(Serialize)]
struct Parameters {
    command: Vec<String>,
    rows: u64,
    durable_writes: u64,
    durable_writers: usize,
    overwrite_puts: u64,
    overwrite_keys: u64,
    reads: u64,
    key_bytes: usize,
    value_bytes: usize,
    enigma_writers_per_shard: usize,
    enigma_readers_per_shard: usize,
    enigma_periodic_sync_ms: u64,
    enigma_memtable_budget_bytes: usize,
    enigma_block_cache_bytes: usize,
    rocksdb_version: String,
    data_dir: String,
    seed: u64,
}

fn optional(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn table_rows(ms: &[Measurement]) -> Vec<[String; 7]> {
    ms.iter()
        .map(|m| {
            [
                m.workload.to_owned(),
                m.engine_label.to_owned(),
                thousands(m.ops_per_second),
                format_us(m.latency.p99_us),
                optional(m.write_amplification, 2),
                optional(m.space_amplification, 2),
                m.found
                    .map_or(String::new(), |f| format!("{} of {} found", thousands(f as f64), thousands(m.ops as f64))),
            ]
        })
        .collect()
}

const HEADER: [&str; 7] = ["workload", "engine", "ops/s", "p99", "write amp", "space amp", "reads"];

fn print_table(ms: &[Measurement]) {
    let rows = table_rows(ms);
    let widths: Vec<usize> = (0..HEADER.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain([HEADER[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&HEADER.map(String::from));
    for r in &rows {
        line(r);
    }
}

fn markdown(report: &Report) -> String {
    let mut md = String::new();
    md.push_str("# EnigmaDB engine vs RocksDB\n\n");
    let m = &report.machine;
    md.push_str(&format!(
        "Measured {} on {} CPUs ({}), {} MiB, kernel {}, source {}, {} build. Command: `{}`.\n\n",
        m.date,
        m.nproc,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        m.memory_mib.unwrap_or(0),
        m.kernel.as_deref().unwrap_or("?"),
        m.git.as_deref().unwrap_or("?"),
        m.build,
        report.parameters.command.join(" ")
    ));
    md.push_str(&format!("RocksDB: {}.\n\n", report.parameters.rocksdb_version));
    md.push_str(&format!("| {} |\n|{}\n", HEADER.join(" | "), " --- |".repeat(HEADER.len())));
    for r in table_rows(&report.measurements) {
        md.push_str(&format!("| {} |\n", r.join(" | ")));
    }
    md.push_str("\nNotes per line (from the JSON report):\n\n");
    for ms in &report.measurements {
        if let Some(n) = &ms.note {
            md.push_str(&format!("- {}, {}: {n}\n", ms.workload, ms.engine_label));
        }
    }
    for e in &report.errors {
        md.push_str(&format!("- error: {e}\n"));
    }
    md
}

fn main() -> Result<()> {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; numbers are not worth comparing (use --release)");
    }
    if args.value_bytes == 0 || args.value_bytes > VALUE_POOL_BYTES {
        bail!("--value-bytes must be in 1..={VALUE_POOL_BYTES}");
    }
    if args.overwrite_keys == 0 || args.rows == 0 {
        bail!("--rows and --overwrite-keys must be positive");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let machine = Machine::probe(Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut measurements = Vec::new();
    let mut errors = Vec::new();
    for &engine in &args.engines {
        for &phase in &args.phases {
            let enigma = matches!(engine, Engine::Enigma1 | Engine::Enigma2);
            let result = match phase {
                // Reads run on the surge's data, inside the surge's run.
                Phase::Reads => continue,
                Phase::Surge if enigma => enigma_surge_and_reads(&args, engine, &mut measurements),
                Phase::Surge => rocks_surge_and_reads(&args, engine, &mut measurements),
                Phase::Durable if enigma => enigma_durable(&args, engine, &mut measurements),
                // 32 writer threads either way: the 2-thread configuration is the same run.
                Phase::Durable if engine == Engine::Rocksdb2 => continue,
                Phase::Durable => rocks_durable(&args, engine, &mut measurements),
                Phase::Overwrite if enigma => enigma_overwrite(&args, engine, &mut measurements),
                Phase::Overwrite => rocks_overwrite(&args, engine, &mut measurements),
            };
            if let Err(e) = result {
                let message = format!("{} {phase:?}: {e:#}", engine.label());
                eprintln!("error: {message}");
                errors.push(message);
            }
            if let Some(last) = measurements.last() {
                eprintln!("done: {} {}: {} ops/s", last.engine_label, last.workload, thousands(last.ops_per_second));
            }
        }
    }
    let order = |m: &Measurement| {
        ["write surge", "durable writes", "overwrite-heavy", "reads, present keys", "reads, absent keys"]
            .iter()
            .position(|w| *w == m.workload)
            .unwrap_or(usize::MAX)
    };
    measurements.sort_by_key(|m| (order(m), m.engine as usize));
    print_table(&measurements);
    let defaults = ShardConfig::default();
    let report = Report {
        benchmark: "vs_rocksdb",
        parameters: Parameters {
            command: std::env::args().collect(),
            rows: args.rows,
            durable_writes: args.durable_writes,
            durable_writers: args.durable_writers,
            overwrite_puts: args.overwrite_puts,
            overwrite_keys: args.overwrite_keys,
            reads: args.reads,
            key_bytes: KEY_BYTES,
            value_bytes: args.value_bytes,
            enigma_writers_per_shard: args.enigma_writers,
            enigma_readers_per_shard: args.enigma_readers,
            enigma_periodic_sync_ms: args.periodic_sync_ms,
            enigma_memtable_budget_bytes: defaults.memtable_budget,
            enigma_block_cache_bytes: defaults.block_cache_bytes,
            rocksdb_version: rocksdb_build(),
            data_dir: args.dir.display().to_string(),
            seed: args.seed,
        },
        machine,
        measurements,
        errors,
    };
    let now = utc_iso8601(SystemTime::now());
    let date = now.get(..10).unwrap_or(&now);
    let json = args.results.join(format!("{date}-vs-rocksdb.json"));
    write_json(&json, &report).with_context(|| format!("writing {}", json.display()))?;
    let md = args.results.join(format!("{date}-vs-rocksdb.md"));
    std::fs::write(&md, markdown(&report)).with_context(|| format!("writing {}", md.display()))?;
    println!("report: {} and {}", json.display(), md.display());
    if !report.errors.is_empty() {
        bail!("{} configuration(s) failed", report.errors.len());
    }
    Ok(())
}

//! CPU cost per row of each step of the write path, on one thread, without I/O, glommio or the
//! shard around it: build the `Write`, stamp it into a `PartitionUpdate`, encode the batch (the
//! WAL payload), frame the WAL record into its group buffer, insert into the MemTable, and at
//! the end drop the MemTable. Rows go through in groups the size of a group commit, so caches
//! see what they see in `write_surge`.
//!
//! Also times two variants of the engine's steps that reuse buffers instead of growing fresh
//! ones, to show what allocation costs. Prints numbers and writes a JSON report; asserts nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bench::machine::Machine;
use bench::report::{ratio, thousands, write_json};
use bench::surge::{insert, surge_schema, ValuePool, KEY_BYTES, VALUE_POOL_BYTES};
use bench::usage::CpuUsage;
use clap::Parser;
use serde::Serialize;
use shards::memtable::MemTable;
use shards::mutation::{encode_batch, PartitionUpdate, Write};
use shards::wal::format::encode_record;

#[derive(Parser, Debug)]
#[command(about = "CPU cost per row of each step of the write path, without I/O (prints numbers, asserts nothing)")]
struct Args {
    /// Rows to push through every step.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows per group (a WAL group commit's worth; write_surge's writers per shard).
    #[arg(long, default_value_t = 256)]
    group: usize,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Seed of the value bytes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/write-path-cpu.json"))]
    report: PathBuf,
}

/// Time and page faults spent in one step, summed over all groups.
#[derive(Default, Clone, Copy)]
struct Spent {
    wall: Duration,
    faults: u64,
}

impl Spent {
    /// Runs `f`, adding its wall time and the calling thread's minor faults.
    fn measure<T>(&mut self, f: impl FnOnce() -> T) -> Result<T> {
        let faults = CpuUsage::this_thread()?.minor_faults;
        let at = Instant::now();
        let out = f();
        self.wall += at.elapsed();
        self.faults += CpuUsage::this_thread()?.minor_faults - faults;
        Ok(out)
    }
}

#[derive(Serialize)]
struct StepReport {
    step: &'static str,
    /// What the engine does here (or, for variants, what is changed).
    what: &'static str,
    /// Part of the engine's path (variants are not, and are left out of the total).
    in_engine_path: bool,
    ns_per_row: f64,
    minor_faults_per_row: f64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    rows: u64,
    group: usize,
    key_bytes: usize,
    value_bytes: usize,
    payload_bytes_per_row: f64,
    steps: Vec<StepReport>,
    engine_path_ns_per_row: f64,
    thread_cpu_seconds: f64,
    wall_seconds: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rows == 0 || args.group == 0 {
        bail!("--rows and --group must be positive");
    }
    let machine = Machine::probe_for_run();
    let schema = surge_schema(1)?;
    let values = ValuePool::new(args.seed, args.value_bytes)
        .ok_or_else(|| anyhow!("--value-bytes must be between 1 and {VALUE_POOL_BYTES}"))?;
    // Large enough for any run: this measures inserting, not refusing.
    let mut memtable = MemTable::new();

    let (mut build, mut stamp, mut encode, mut frame, mut apply) =
        (Spent::default(), Spent::default(), Spent::default(), Spent::default(), Spent::default());
    let (mut encode_reused, mut frame_presized) = (Spent::default(), Spent::default());
    let mut payload_bytes = 0u64;
    let mut lsn = 0u64;
    let mut scratch = Vec::new();
    let mut presized = Vec::new();
    let cpu_before = CpuUsage::this_thread()?;
    let started = Instant::now();
    let mut row = 0u64;
    while row < args.rows {
        let n = (args.rows - row).min(args.group as u64);
        let rows = row..row + n;
        row += n;

        // Write::upsert: what a coordinator does per CQL INSERT.
        let writes: Vec<Write> = build
            .measure(|| rows.map(|r| insert(&schema, &values, r)).collect::<Result<_, _>>())?
            .context("building a write")?;
        // Shard::stamp: one timestamp per apply() call, every cell stamped with it.
        let base_ts = now_micros();
        let updates: Vec<PartitionUpdate> =
            stamp.measure(|| writes.into_iter().enumerate().map(|(i, w)| w.stamp(base_ts + i as i64, 0)).collect())?;
        // Shard::apply: each apply() encodes its batch into a fresh Vec.
        let payloads: Vec<Vec<u8>> = encode.measure(|| {
            updates
                .iter()
                .map(|u| {
                    let mut payload = Vec::new();
                    encode_batch(std::slice::from_ref(u), &mut payload);
                    payload
                })
                .collect()
        })?;
        payload_bytes += payloads.iter().map(|p| p.len() as u64).sum::<u64>();
        // Variant: one buffer reused across apply() calls.
        encode_reused.measure(|| {
            for u in &updates {
                scratch.clear();
                encode_batch(std::slice::from_ref(u), &mut scratch);
                std::hint::black_box(&scratch);
            }
        })?;
        // WAL admit: every group starts a new, empty pending buffer and frames records into it.
        let group_bytes = frame.measure(|| {
            let mut group = Vec::new();
            for p in &payloads {
                lsn += 1;
                encode_record(lsn, p, &mut group);
            }
            group.len()
        })?;
        std::hint::black_box(group_bytes);
        // Variant: the pending buffer is kept (cleared) from group to group.
        frame_presized.measure(|| {
            presized.clear();
            for p in &payloads {
                encode_record(lsn, p, &mut presized);
            }
            std::hint::black_box(&presized);
        })?;
        // MemTable::apply after the acknowledgement.
        apply.measure(|| {
            for u in updates {
                memtable.apply(u);
            }
        })?;
    }
    let mut teardown = Spent::default();
    let partitions = memtable.partitions();
    teardown.measure(|| drop(memtable))?;
    let wall = started.elapsed();
    let cpu = CpuUsage::this_thread()?.since(&cpu_before);
    if partitions as u64 != args.rows {
        println!("WARNING: {partitions} partitions for {} rows (keys not distinct?)", args.rows);
    }

    let per_row =
        |s: &Spent| (ratio(s.wall.as_nanos() as f64, args.rows as f64), ratio(s.faults as f64, args.rows as f64));
    let step = |step, what, in_engine_path, s: &Spent| {
        let (ns, faults) = per_row(s);
        StepReport { step, what, in_engine_path, ns_per_row: ns, minor_faults_per_row: faults }
    };
    let steps = vec![
        step("build", "Write::upsert: key serialisation, token (murmur3), column lookup, value copy", true, &build),
        step("stamp", "Write::stamp: Write -> PartitionUpdate (BTreeMap of rows, cells)", true, &stamp),
        step("encode", "encode_batch into a fresh Vec per apply() (as Shard::apply does)", true, &encode),
        step("frame", "wal::format::encode_record into a fresh group buffer (as the WAL admit does)", true, &frame),
        step("memtable", "MemTable::apply: BTreeMap insert + Partition::merge", true, &apply),
        step("teardown", "dropping the MemTable at the end (not in the write path)", false, &teardown),
        step("encode, reused buffer", "variant: one Vec cleared between apply() calls", false, &encode_reused),
        step("frame, kept buffer", "variant: the group buffer kept between groups", false, &frame_presized),
    ];
    let engine: f64 = steps.iter().filter(|s| s.in_engine_path).map(|s| s.ns_per_row).sum();

    println!(
        "write path CPU: {} rows of {KEY_BYTES}-byte keys and {}-byte values, groups of {}; {:.0} payload bytes per row",
        thousands(args.rows as f64),
        args.value_bytes,
        args.group,
        ratio(payload_bytes as f64, args.rows as f64)
    );
    println!("{:<24} {:>10} {:>8} {:>12}", "step", "ns/row", "share", "faults/row");
    for s in &steps {
        let share = if s.in_engine_path { format!("{:.0}%", 100.0 * ratio(s.ns_per_row, engine)) } else { "-".into() };
        println!("{:<24} {:>10.0} {:>8} {:>12.3}", s.step, s.ns_per_row, share, s.minor_faults_per_row);
    }
    println!(
        "{:<24} {:>10.0}   = {} rows/s on one core if nothing else ran",
        "engine path total",
        engine,
        thousands(ratio(1e9, engine))
    );
    println!(
        "thread CPU {:.2} s user + {:.2} s sys, {} minor faults, over {:.2} s",
        cpu.user.as_secs_f64(),
        cpu.system.as_secs_f64(),
        thousands(cpu.minor_faults as f64),
        wall.as_secs_f64()
    );

    let report = Report {
        benchmark: "write_path_cpu",
        machine,
        rows: args.rows,
        group: args.group,
        key_bytes: KEY_BYTES,
        value_bytes: args.value_bytes,
        payload_bytes_per_row: ratio(payload_bytes as f64, args.rows as f64),
        steps,
        engine_path_ns_per_row: engine,
        thread_cpu_seconds: cpu.total().as_secs_f64(),
        wall_seconds: wall.as_secs_f64(),
    };
    write_json(&args.report, &report).with_context(|| format!("writing {}", args.report.display()))?;
    println!("report: {}", args.report.display());
    Ok(())
}

/// Microseconds since the Unix epoch (the engine's timestamp unit).
fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

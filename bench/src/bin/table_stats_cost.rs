//! CPU cost of the per-table read and write counters `admin tablestats` and the metrics
//! endpoint report (shards::shard: two clock reads, a latency histogram record, and for reads
//! the tombstones counted in the merged partition), next to the cheapest read the shard
//! serves (a MemTable hit, no I/O) and the engine's write path steps (write_path_cpu). One
//! thread, no I/O. Prints numbers and writes a JSON report; asserts nothing.

use std::hint::black_box;
use std::ops::Bound;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use bench::machine::Machine;
use bench::report::write_json;
use bench::surge::{insert, surge_schema, ValuePool, VALUE_POOL_BYTES};
use clap::Parser;
use serde::Serialize;
use shards::latency::LatencyHistogram;
use shards::memtable::MemTable;
use shards::row::ClusteringSlice;

#[derive(Parser, Debug)]
#[command(about = "CPU cost of the per-table latency and tombstone counters (prints numbers, asserts nothing)")]
struct Args {
    /// Partitions in the MemTable read from.
    #[arg(long, default_value_t = 100_000)]
    rows: u64,
    /// Reads timed (keys taken in a scattered order).
    #[arg(long, default_value_t = 2_000_000)]
    reads: u64,
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/table-stats-cost.json"))]
    report: PathBuf,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    rows: u64,
    reads: u64,
    /// A MemTable get of one partition (the cheapest local read).
    memtable_get_ns: f64,
    /// What Shard::read adds per read: clock reads, histogram record, tombstone count.
    read_counters_ns: f64,
    /// What the write path adds per partition update: clock reads and a histogram record.
    write_counters_ns: f64,
    read_overhead_percent: f64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rows == 0 || args.reads == 0 {
        bail!("--rows and --reads must be positive");
    }
    let schema = surge_schema(1)?;
    let values = ValuePool::new(args.seed, args.value_bytes)
        .ok_or_else(|| anyhow!("--value-bytes must be between 1 and {VALUE_POOL_BYTES}"))?;
    let mut memtable = MemTable::new();
    let mut keys = Vec::with_capacity(args.rows as usize);
    for row in 0..args.rows {
        let write = insert(&schema, &values, row)?;
        keys.push(write.key.clone());
        memtable.apply(write.stamp(1 + row as i64, 0));
    }
    let slice = ClusteringSlice { start: Bound::Unbounded, end: Bound::Unbounded };
    // A multiplicative step visits every key once per lap in a cache-unfriendly order.
    let key_at = |i: u64| &keys[(i.wrapping_mul(2_654_435_761) % args.rows) as usize];

    let started = Instant::now();
    for i in 0..args.reads {
        black_box(memtable.get(black_box(key_at(i)), &slice));
    }
    let memtable_get_ns = started.elapsed().as_nanos() as f64 / args.reads as f64;

    // The same reads, each also doing what Shard::read now adds around it.
    let mut histogram = LatencyHistogram::default();
    let mut tombstones = 0u64;
    let started = Instant::now();
    for i in 0..args.reads {
        let at = Instant::now();
        let found = memtable.get(black_box(key_at(i)), &slice);
        tombstones += found.as_ref().map_or(0, |p| p.tombstones());
        histogram.record(at.elapsed());
        black_box(found);
    }
    let instrumented_ns = started.elapsed().as_nanos() as f64 / args.reads as f64;
    black_box((tombstones, &histogram));

    let mut writes = LatencyHistogram::default();
    let started = Instant::now();
    for _ in 0..args.reads {
        let at = Instant::now();
        writes.record(black_box(at).elapsed());
    }
    let write_counters_ns = started.elapsed().as_nanos() as f64 / args.reads as f64;
    black_box(&writes);

    let read_counters_ns = (instrumented_ns - memtable_get_ns).max(0.0);
    let report = Report {
        benchmark: "table_stats_cost",
        machine: Machine::probe_for_run(),
        rows: args.rows,
        reads: args.reads,
        memtable_get_ns,
        read_counters_ns,
        write_counters_ns,
        read_overhead_percent: 100.0 * read_counters_ns / memtable_get_ns,
    };
    println!("MemTable get (cheapest local read): {memtable_get_ns:>8.1} ns");
    println!(
        "read counters added per read:       {read_counters_ns:>8.1} ns ({:.1}% of that read)",
        report.read_overhead_percent
    );
    println!("write counters added per update:    {write_counters_ns:>8.1} ns");
    println!("read p50/p99 recorded: {:?} / {:?}", histogram.quantile(0.5), histogram.quantile(0.99));
    write_json(&args.report, &report)?;
    println!("report: {}", args.report.display());
    Ok(())
}

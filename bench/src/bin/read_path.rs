//! The read path of one shard: loads N rows (16-byte key, 100-byte value) with a small MemTable
//! budget so that they end up in many SSTables, flushes, and then measures on fresh reopens of
//! the shard: random point reads of existing keys with an empty block cache (cold), the same
//! reads once every block they need is cached (warm), a full token-range scan in pages, and
//! point reads of absent keys. Drives `Shard::read` and `Shard::scan` directly on the shard's
//! own glommio executor: no channel, no network, no client in the way.
//!
//! Prints reads/s, latency percentiles, data blocks read and cache hits per read, bloom filter
//! false positives (measured through the shard and, exactly, per SSTable), bytes on disk per row
//! and the CPU time of the shard thread, and writes a JSON report. It measures; it asserts
//! nothing (the aims of the issue are printed as met or not met, never enforced).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bench::latency::{format_us, LatencyHistogram, LatencySummary};
use bench::machine::{EngineRunArgs, Machine};
use bench::report::{fresh_run_dir, megabytes, per_second, ratio, thousands, write_json};
use bench::surge::{partition_key, row_of_key, surge_schema, write_rows, ValuePool, KEY_BYTES, VALUE_POOL_BYTES};
use bench::usage::{CpuShares, CpuUsage, DiskActivity, DiskCounters, Snapshot};
use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use shards::cell::DeletionTime;
use shards::compaction::{CompactionConfig, StrategyKind};
use shards::io::prepare_executor_io;
use shards::key::PartitionKey;
use shards::manifest::{Manifest, SSTABLE_DIR};
use shards::read::now_secs;
use shards::row::{ClusteringSlice, Partition};
use shards::scan::{ScanBound, ScanResume};
use shards::shard::{Shard, ShardConfig};
use shards::sstable::{
    BlockCache, BloomHash, CacheStats, Sstable, SstableConfig, SstableReadStats, CACHE_ENTRY_OVERHEAD,
};
use shards::wal::{SyncMode, WalConfig};
use wire::TableSchema;

/// The id the benchmark gives its one table (there is no catalog: the shard is driven directly).
const TABLE_ID: u32 = 1;

const MIB: usize = 1 << 20;

/// Keys by number of SSTables whose bloom filter let them through: 0, 1, ..., and this many or more.
const POSITIVE_BUCKETS: usize = 8;

#[derive(Parser, Debug, Clone)]
#[command(about = "Read path of one shard: cold and warm point reads, a full scan and absent-key reads over \
             many SSTables (prints numbers, asserts nothing)")]
struct Args {
    /// Rows to load (16-byte keys spread over the ring).
    #[arg(long, default_value_t = 5_000_000)]
    rows: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// MemTable budget in MiB while loading: small, so that the rows land in many SSTables.
    #[arg(long, default_value_t = 16)]
    memtable_budget_mib: usize,
    /// Concurrent writer tasks while loading (periodic sync mode; loading speed is not the point).
    #[arg(long, default_value_t = 1024)]
    writers: usize,
    /// fdatasync period of the WAL while loading.
    #[arg(long, default_value_t = 1000)]
    periodic_sync_ms: u64,
    /// WAL segment size in MiB.
    #[arg(long, default_value_t = 32)]
    segment_mib: u64,
    /// Target data block size in KiB (the engine's default is 64).
    #[arg(long, default_value_t = 64)]
    block_kib: usize,
    /// Bloom filter false-positive rate the SSTables are written for (the engine's default is 0.01).
    #[arg(long, default_value_t = 0.01)]
    bloom_fp_rate: f64,
    /// Block cache budget in MiB (ShardConfig::block_cache_bytes) of the cold, scan and
    /// absent-key runs.
    #[arg(long, default_value_t = 64)]
    cache_mib: usize,
    /// Block cache budget in MiB of the warm runs; 0 = auto: enough for every data block of the
    /// shard, so that nothing the warm reads need is ever evicted.
    #[arg(long, default_value_t = 0)]
    warm_cache_mib: usize,
    /// Point reads of existing keys per run (random rows, drawn with replacement).
    #[arg(long, default_value_t = 200_000)]
    reads: usize,
    /// Concurrent reader tasks (K).
    #[arg(long, default_value_t = 32)]
    readers: usize,
    /// Reads of the cold run with one reader (K=1), on its own fresh reopen; 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    k1_reads: usize,
    /// Point reads of absent keys.
    #[arg(long, default_value_t = 200_000)]
    absent_reads: usize,
    /// Partitions per page of the full scan.
    #[arg(long, default_value_t = 1000)]
    scan_page: usize,
    /// Runs to do, comma-separated (e.g. `--runs warm` with --reuse to profile one of them).
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = vec![RunKind::Cold, RunKind::ColdK1, RunKind::Warm, RunKind::Scan, RunKind::Absent])]
    runs: Vec<RunKind>,
    /// Skip loading: read the shard directory an earlier run kept (`--keep`; the path it
    /// printed). --rows, --value-bytes and --seed must be the ones it was loaded with.
    #[arg(long)]
    reuse: Option<PathBuf>,
    /// Where the JSON report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/read-path.json"))]
    report: PathBuf,
    /// Seed of the value bytes and of the key sequences.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Background compaction while loading (the load then waits for it to settle before the
    /// reads). `none` keeps every flushed SSTable, as the reports before compaction measured.
    #[arg(long, value_enum, default_value_t = CompactionArg::None)]
    compaction: CompactionArg,
    /// Compaction throughput limit in MiB/s (0 = unlimited; the engine's default is 64).
    #[arg(long, default_value_t = 64)]
    compaction_throughput_mib: u64,
    #[command(flatten)]
    engine: EngineRunArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CompactionArg {
    None,
    SizeTiered,
}

/// The measured runs (the load, when there is one, always comes first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum RunKind {
    /// Point reads of existing keys on a fresh reopen, K readers.
    Cold,
    /// The same with one reader, on its own fresh reopen.
    ColdK1,
    /// Fill a cache that holds every block, then the same reads again, K readers and one.
    Warm,
    /// The paged full token-range scan.
    Scan,
    /// Point reads of absent keys on a fresh reopen.
    Absent,
}

impl Args {
    fn runs(&self, kind: RunKind) -> bool {
        self.runs.contains(&kind)
    }

    fn sstable_config(&self) -> SstableConfig {
        SstableConfig {
            block_size: self.block_kib << 10,
            bloom_fp_rate: self.bloom_fp_rate,
            ..SstableConfig::default()
        }
    }

    fn shard_config(&self, cache_bytes: usize) -> ShardConfig {
        ShardConfig {
            wal: WalConfig {
                segment_size: self.segment_mib << 20,
                sync_mode: SyncMode::Periodic,
                periodic_sync: Duration::from_millis(self.periodic_sync_ms),
                ..WalConfig::default()
            },
            memtable_budget: self.memtable_budget_mib * MIB,
            block_cache_bytes: cache_bytes,
            sstable: self.sstable_config(),
            compaction: CompactionConfig {
                strategy: match self.compaction {
                    CompactionArg::None => StrategyKind::None,
                    CompactionArg::SizeTiered => StrategyKind::SizeTiered,
                },
                throughput_mib: self.compaction_throughput_mib,
                ..CompactionConfig::default()
            },
            ..ShardConfig::default()
        }
    }
}

// ----- what the report holds -----

/// How the time of one phase was spent.
#[derive(Clone, Debug, Serialize)]
struct Usage {
    wall_seconds: f64,
    thread_cpu_user_seconds: f64,
    thread_cpu_system_seconds: f64,
    /// Shard thread CPU time / wall time: near 1.0 means CPU-bound.
    thread_cpu_busy_share: f64,
    thread_minor_faults: u64,
    /// The shard thread parked (nothing to run: waiting for the disk).
    thread_parks: u64,
    /// The shard thread was preempted (something else wanted its CPU).
    thread_preemptions: u64,
    process_cpu_seconds: f64,
    machine_cpu: Option<CpuShares>,
    device: Option<DiskActivity>,
}

/// The shard's SSTable read counters (summed over its SSTables) and block cache counters over
/// one phase.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct ReadCounters {
    /// Data blocks read from the device (block cache misses).
    blocks_read: u64,
    bytes_read: u64,
    /// Data blocks found in the block cache.
    cache_hits: u64,
    cache_misses: u64,
    cache_evictions: u64,
    bloom_positives: u64,
    bloom_false_positives: u64,
    /// As counted by the engine (see the notes: `Shard::read` never counts them).
    bloom_negatives: u64,
    range_rejects: u64,
}

impl ReadCounters {
    fn between(before: &Probe, after: &Probe) -> ReadCounters {
        let (a, b) = (&after.reads, &before.reads);
        ReadCounters {
            blocks_read: a.blocks_read - b.blocks_read,
            bytes_read: a.bytes_read - b.bytes_read,
            cache_hits: a.cache_hits - b.cache_hits,
            cache_misses: after.cache.misses - before.cache.misses,
            cache_evictions: after.cache.evictions - before.cache.evictions,
            bloom_positives: a.bloom_positives - b.bloom_positives,
            bloom_false_positives: a.bloom_false_positives - b.bloom_false_positives,
            bloom_negatives: a.bloom_negatives - b.bloom_negatives,
            range_rejects: a.range_rejects - b.range_rejects,
        }
    }
}

/// Counters divided by the number of reads.
#[derive(Clone, Copy, Debug, Serialize)]
struct PerRead {
    blocks_read: f64,
    bytes_read: f64,
    cache_hits: f64,
    bloom_positives: f64,
    bloom_false_positives: f64,
    /// Data blocks read from the device per SSTable the bloom filter let through.
    blocks_read_per_bloom_positive: f64,
    /// Data blocks touched (read or found in the cache) per SSTable the bloom filter let through.
    blocks_touched_per_bloom_positive: f64,
    thread_cpu_us: f64,
}

#[derive(Clone, Debug, Serialize)]
struct PointReadPhase {
    name: &'static str,
    description: String,
    /// "present" or "absent".
    keys: &'static str,
    readers: usize,
    reads: u64,
    cache_budget_bytes: usize,
    open_seconds: f64,
    reads_per_second: f64,
    latency_us: LatencySummary,
    found: u64,
    /// Reads that found the row with a value other than the one written.
    wrong_values: u64,
    counters: ReadCounters,
    per_read: PerRead,
    cache_bytes_after: usize,
    cache_entries_after: usize,
    usage: Usage,
}

#[derive(Clone, Debug, Serialize)]
struct ScanPhase {
    page: usize,
    pages: u64,
    rows: u64,
    /// Partitions that did not come strictly after the one before (should be 0).
    out_of_order: u64,
    wrong_values: u64,
    cache_budget_bytes: usize,
    rows_per_second: f64,
    /// Key and value bytes returned.
    payload_bytes: u64,
    payload_megabytes_per_second: f64,
    /// Data block bytes read from the device (SSTable counters).
    device_megabytes_per_second: f64,
    page_latency_us: LatencySummary,
    counters: ReadCounters,
    thread_cpu_us_per_row: f64,
    usage: Usage,
}

#[derive(Clone, Debug, Serialize)]
struct LoadPhase {
    rows: u64,
    writers: usize,
    /// First write to last acknowledgement.
    write_seconds: f64,
    rows_per_second: f64,
    write_latency_us: LatencySummary,
    /// The final `flush()`: from the last acknowledgement until every row is in an SSTable.
    final_flush_seconds: f64,
    flushes: u64,
    sstables: usize,
    /// After the final flush: until no compaction runs or is pending (0 without compaction).
    compaction_settle_seconds: f64,
    compactions: u64,
    compaction_bytes_written: u64,
    wal_bytes_written: u64,
    wal_fdatasyncs: u64,
    thread_cpu_us_per_row: f64,
    write_usage: Usage,
    flush_usage: Usage,
}

/// What is on disk after the load (read from the SSTables' metadata).
#[derive(Clone, Debug, Serialize)]
struct DataFigures {
    rows: u64,
    /// Sum of the SSTables' partition counts (equals `rows` when every row landed once).
    partitions_in_sstables: u64,
    sstables: usize,
    sstable_bytes: u64,
    /// `stats.sstable_bytes / rows`.
    bytes_on_disk_per_row: f64,
    /// Key and value bytes per row, for comparison.
    payload_bytes_per_row: usize,
    data_block_bytes: u64,
    index_bytes: u64,
    bloom_bytes: u64,
    data_blocks: u64,
    mean_data_block_bytes: f64,
    rows_per_sstable_min: u64,
    rows_per_sstable_median: u64,
    rows_per_sstable_max: u64,
    bloom_bits_per_key: f64,
    /// Rate a filter of that many bits per key gives with the engine's hash count.
    bloom_expected_fp_rate: f64,
}

/// What the SSTables' bloom filters (and token ranges) say about one key sequence, checked
/// directly on the SSTables (`Sstable::may_contain`), outside the shard.
#[derive(Clone, Debug, Serialize)]
struct BloomTally {
    keys: u64,
    /// Key and SSTable pairs where the key's token is inside the SSTable's token range (the
    /// bloom filter is consulted).
    checks: u64,
    range_rejects: u64,
    /// Checks the bloom filter let through.
    positives: u64,
    /// Positives for SSTables that do not hold the key: all of them for absent keys; all but the
    /// one SSTable holding the key for existing keys (every row was written once).
    false_positives: u64,
    false_positives_per_key: f64,
    /// false positives / checks of SSTables not holding the key: the measured false-positive
    /// rate per SSTable checked.
    false_positive_rate_per_check: f64,
    /// The same rate per SSTable, over its own checks (absent keys only: for existing keys the
    /// SSTable holding the key is not known here).
    per_sstable_rate_min: Option<f64>,
    per_sstable_rate_median: Option<f64>,
    per_sstable_rate_max: Option<f64>,
    /// Keys by how many false positives they met: [0, 1, ..., >= POSITIVE_BUCKETS - 1].
    keys_by_false_positives: Vec<u64>,
    /// Keys that met no false positive (for absent keys: reads that touch no data block).
    share_without_false_positive: f64,
}

#[derive(Clone, Debug, Serialize)]
struct BloomFigures {
    sstables: usize,
    seconds: f64,
    /// CPU cost of asking one SSTable about one key (token range, then bloom filter), as
    /// `Shard::read` does for every SSTable on every read: the analysis' time / its checks.
    nanoseconds_per_sstable_check: f64,
    /// That cost times the SSTables: what every point read pays before touching a block.
    microseconds_per_read_in_filters: f64,
    present: BloomTally,
    absent: BloomTally,
}

#[derive(Clone, Debug, Serialize)]
struct Aim {
    aim: &'static str,
    measured: String,
    met: bool,
}

/// Everything the shard thread measured.
struct Outcome {
    data_dir: PathBuf,
    load: Option<LoadPhase>,
    data: DataFigures,
    bloom: BloomFigures,
    warm_cache_bytes: usize,
    point_reads: Vec<PointReadPhase>,
    scan: Option<ScanPhase>,
}

#[derive(Serialize)]
struct Parameters {
    command: Vec<String>,
    table: &'static str,
    rows: u64,
    key_bytes: usize,
    value_bytes: usize,
    memtable_budget_bytes: usize,
    writers: usize,
    periodic_sync_ms: u64,
    segment_bytes: u64,
    block_size: usize,
    bloom_fp_rate: f64,
    cache_bytes: usize,
    warm_cache_bytes: usize,
    reads: usize,
    readers: usize,
    k1_reads: usize,
    absent_reads: usize,
    scan_page: usize,
    runs: Vec<RunKind>,
    io_memory_bytes: usize,
    spin_before_park_us: u64,
    pinned_cpu: Option<usize>,
    data_dir: String,
    reused_data: bool,
    seed: u64,
}

#[derive(Serialize)]
struct Report {
    benchmark: &'static str,
    machine: Machine,
    parameters: Parameters,
    /// What "cold" and "warm" mean here, and what the counters can and cannot tell.
    notes: Vec<String>,
    data: DataFigures,
    load: Option<LoadPhase>,
    bloom: BloomFigures,
    point_reads: Vec<PointReadPhase>,
    scan: Option<ScanPhase>,
    aims: Vec<Aim>,
}

// ----- measuring -----

/// Counters at one moment of a phase.
struct Probe {
    snapshot: Snapshot,
    thread: CpuUsage,
    reads: SstableReadStats,
    cache: CacheStats,
}

/// What every phase needs.
struct Ctx {
    args: Args,
    dir: PathBuf,
    schema: Rc<TableSchema>,
    values: Arc<ValuePool>,
    /// The device under `dir`, once found.
    disk: RefCell<Option<DiskCounters>>,
}

impl Ctx {
    fn probe(&self, shard: &Shard) -> Result<Probe> {
        let stats = shard.stats();
        let thread = CpuUsage::this_thread()?;
        let snapshot = Snapshot::take(&self.dir, self.disk.borrow().as_ref())?;
        if self.disk.borrow().is_none() {
            *self.disk.borrow_mut() = snapshot.disk.clone();
        }
        Ok(Probe { snapshot, thread, reads: stats.sstable_reads, cache: stats.cache })
    }

    async fn open(&self, cache_bytes: usize) -> Result<(Rc<Shard>, Duration)> {
        let started = Instant::now();
        let (shard, _replay) =
            Shard::open(0, &self.dir, self.args.shard_config(cache_bytes), std::slice::from_ref(&self.schema))
                .await
                .with_context(|| format!("opening the shard in {}", self.dir.display()))?;
        let opened = started.elapsed();
        let stats = shard.stats();
        if stats.memtable_partitions != 0 {
            println!(
                "  WARNING: the reopened shard holds {} partitions in MemTables (WAL replay): reads also see them",
                stats.memtable_partitions
            );
        }
        Ok((shard, opened))
    }
}

fn usage(before: &Probe, after: &Probe) -> Usage {
    let wall = after.snapshot.at.saturating_duration_since(before.snapshot.at).as_secs_f64();
    let thread = after.thread.since(&before.thread);
    Usage {
        wall_seconds: wall,
        thread_cpu_user_seconds: thread.user.as_secs_f64(),
        thread_cpu_system_seconds: thread.system.as_secs_f64(),
        thread_cpu_busy_share: ratio(thread.total().as_secs_f64(), wall),
        thread_minor_faults: thread.minor_faults,
        thread_parks: thread.voluntary_switches,
        thread_preemptions: thread.involuntary_switches,
        process_cpu_seconds: after.snapshot.process.since(&before.snapshot.process).total().as_secs_f64(),
        machine_cpu: after.snapshot.machine_since(&before.snapshot),
        device: after.snapshot.disk_since(&before.snapshot),
    }
}

fn thread_cpu_seconds(u: &Usage) -> f64 {
    u.thread_cpu_user_seconds + u.thread_cpu_system_seconds
}

// ----- loading -----

async fn load(ctx: &Ctx) -> Result<LoadPhase> {
    let args = &ctx.args;
    println!();
    println!(
        "== load: {} rows, {} writers, periodic fdatasync every {} ms, MemTable budget {} MiB ==",
        thousands(args.rows as f64),
        args.writers,
        args.periodic_sync_ms,
        args.memtable_budget_mib
    );
    let (shard, _) = ctx.open(args.cache_mib * MIB).await?;
    let before = ctx.probe(&shard)?;
    let wal_before = shard.stats().wal;
    let latency = write_rows(&shard, &ctx.schema, &ctx.values, 0..args.rows, args.writers).await?;
    let written = ctx.probe(&shard)?;
    shard.flush().await.context("flushing after the load")?;
    let flushed = ctx.probe(&shard)?;
    let settle_started = Instant::now();
    while shard.stats().compaction.pending > 0 || shard.stats().compaction.running {
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
    let compaction_settle_seconds = settle_started.elapsed().as_secs_f64();
    let stats = shard.stats();
    shard.close().await.context("closing after the load")?;
    let write_usage = usage(&before, &written);
    let flush_usage = usage(&written, &flushed);
    let load = LoadPhase {
        rows: latency.count(),
        writers: args.writers,
        write_seconds: write_usage.wall_seconds,
        rows_per_second: per_second(latency.count() as f64, write_usage.wall_seconds),
        write_latency_us: latency.summary(),
        final_flush_seconds: flush_usage.wall_seconds,
        flushes: stats.flushes,
        sstables: stats.sstables,
        compaction_settle_seconds,
        compactions: stats.compaction.completed,
        compaction_bytes_written: stats.compaction.bytes_written,
        wal_bytes_written: stats.wal.bytes_written - wal_before.bytes_written,
        wal_fdatasyncs: stats.wal.syncs - wal_before.syncs,
        thread_cpu_us_per_row: ratio(thread_cpu_seconds(&write_usage) * 1e6, latency.count() as f64),
        write_usage,
        flush_usage,
    };
    print_load(&load);
    Ok(load)
}

// ----- the SSTables themselves: sizes and bloom filters -----

/// Opens every live SSTable of the shard directory on its own (outside any shard, with a
/// cache of 0 bytes: only the metadata, index and bloom filter are read).
async fn open_sstables(dir: &Path) -> Result<Vec<Sstable>> {
    let manifest = Manifest::load(dir).with_context(|| format!("loading the manifest of {}", dir.display()))?;
    let cache = BlockCache::new(0);
    let mut out = Vec::with_capacity(manifest.sstables.len());
    for entry in &manifest.sstables {
        let path = dir.join(SSTABLE_DIR).join(entry.file_name());
        out.push(
            Sstable::open(&path, entry.generation, cache.clone())
                .await
                .with_context(|| format!("opening {}", path.display()))?,
        );
    }
    Ok(out)
}

/// The false-positive rate of a filter with `bits_per_key` bits per key and the hash count the
/// engine picks for it (`BloomFilter::with_rate`: k = round(m/n ln 2)).
fn expected_fp_rate(bits_per_key: f64) -> f64 {
    if bits_per_key <= 0.0 {
        return 1.0;
    }
    let k = (bits_per_key * std::f64::consts::LN_2).round().clamp(1.0, 30.0);
    (1.0 - (-k / bits_per_key).exp()).powf(k)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn data_figures(ssts: &[Sstable], rows: u64, sstable_bytes: u64, value_bytes: usize) -> DataFigures {
    let metas: Vec<_> = ssts.iter().map(Sstable::meta).collect();
    let partitions: u64 = metas.iter().map(|m| m.partitions).sum();
    let index_bytes: u64 = metas.iter().map(|m| m.index_bytes).sum();
    let bloom_bytes: u64 = metas.iter().map(|m| m.bloom_bytes).sum();
    let data_blocks: u64 = metas.iter().map(|m| m.data_blocks).sum();
    let data_block_bytes: u64 =
        ssts.iter().map(|s| s.meta().file_size - s.meta().index_bytes - s.meta().bloom_bytes).sum();
    let mut per: Vec<u64> = metas.iter().map(|m| m.partitions).collect();
    per.sort_unstable();
    let bits_per_key = ratio(bloom_bytes as f64 * 8.0, partitions as f64);
    DataFigures {
        rows,
        partitions_in_sstables: partitions,
        sstables: ssts.len(),
        sstable_bytes,
        bytes_on_disk_per_row: ratio(sstable_bytes as f64, rows as f64),
        payload_bytes_per_row: KEY_BYTES + value_bytes,
        data_block_bytes,
        index_bytes,
        bloom_bytes,
        data_blocks,
        mean_data_block_bytes: ratio(data_block_bytes as f64, data_blocks as f64),
        rows_per_sstable_min: per.first().copied().unwrap_or(0),
        rows_per_sstable_median: per.get(per.len() / 2).copied().unwrap_or(0),
        rows_per_sstable_max: per.last().copied().unwrap_or(0),
        bloom_bits_per_key: bits_per_key,
        bloom_expected_fp_rate: expected_fp_rate(bits_per_key),
    }
}

/// Asks every SSTable about every key, as `Shard::read` does (token range, then bloom filter).
/// `present`: every key is in exactly one of the SSTables.
fn bloom_tally(ssts: &[Sstable], keys: &[ReadKey], present: bool) -> BloomTally {
    let true_positives = usize::from(present);
    let mut checks = vec![0u64; ssts.len()];
    let mut positives = vec![0u64; ssts.len()];
    let mut by_count = vec![0u64; POSITIVE_BUCKETS];
    let mut range_rejects = 0;
    for k in keys {
        let token = k.key.token();
        let hash = BloomHash::of(k.key.bytes());
        let mut n = 0usize;
        for (i, sst) in ssts.iter().enumerate() {
            if !(sst.meta().min_token..=sst.meta().max_token).contains(&token) {
                range_rejects += 1;
                continue;
            }
            checks[i] += 1;
            if sst.may_contain(&k.key, hash) {
                positives[i] += 1;
                n += 1;
            }
        }
        by_count[n.saturating_sub(true_positives).min(POSITIVE_BUCKETS - 1)] += 1;
    }
    let rates: Vec<f64> = checks.iter().zip(&positives).map(|(&c, &p)| ratio(p as f64, c as f64)).collect();
    let (all_checks, all_positives) = (checks.iter().sum::<u64>(), positives.iter().sum::<u64>());
    let n = keys.len() as u64;
    let true_positives = n * true_positives as u64;
    let false_positives = all_positives.saturating_sub(true_positives);
    let per_sstable = |v: f64| (!present).then_some(v);
    BloomTally {
        keys: n,
        checks: all_checks,
        range_rejects,
        positives: all_positives,
        false_positives,
        false_positives_per_key: ratio(false_positives as f64, n as f64),
        false_positive_rate_per_check: ratio(false_positives as f64, all_checks.saturating_sub(true_positives) as f64),
        per_sstable_rate_min: per_sstable(rates.iter().copied().fold(1.0, f64::min)),
        per_sstable_rate_median: per_sstable(median(rates.clone())),
        per_sstable_rate_max: per_sstable(rates.iter().copied().fold(0.0, f64::max)),
        share_without_false_positive: ratio(by_count[0] as f64, n as f64),
        keys_by_false_positives: by_count,
    }
}

// ----- point reads -----

/// A key to read, with the row it was made from (to check the value that comes back).
struct ReadKey {
    row: u64,
    key: PartitionKey,
}

/// `count` uniformly random rows of `rows`, as keys.
fn key_sequence(schema: &TableSchema, rows: std::ops::Range<u64>, count: usize, seed: u64) -> Result<Vec<ReadKey>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let row = rng.gen_range(rows.clone());
            Ok(ReadKey { row, key: partition_key(schema, row)? })
        })
        .collect()
}

/// The value column of a surge row, as a reader at `now` sees it.
fn stored_value(partition: &Partition, now: DeletionTime) -> Option<&[u8]> {
    partition.rows.values().next()?.cells.first()?.1.live_value(now)
}

#[derive(Default)]
struct Tally {
    latency: LatencyHistogram,
    found: u64,
    wrong: u64,
}

/// The reads of one run, handed out one at a time to the reader tasks.
struct ReadJob {
    shard: Rc<Shard>,
    keys: Rc<Vec<ReadKey>>,
    next: Cell<usize>,
    end: usize,
    values: Arc<ValuePool>,
    now: DeletionTime,
    tally: RefCell<Tally>,
}

/// One client: reads keys one at a time, each answered before the next, until none are left.
async fn reader(job: Rc<ReadJob>) -> Result<()> {
    loop {
        let i = job.next.get();
        if i >= job.end {
            return Ok(());
        }
        job.next.set(i + 1);
        let k = &job.keys[i];
        let sent = Instant::now();
        let found = job.shard.read(TABLE_ID, &k.key, &ClusteringSlice::ALL).await?;
        let took = sent.elapsed();
        {
            let mut tally = job.tally.borrow_mut();
            tally.latency.record(took);
            if let Some(partition) = found {
                tally.found += 1;
                if stored_value(&partition, job.now) != Some(job.values.value_ref(k.row)) {
                    tally.wrong += 1;
                }
            }
        }
        // A read answered from the cache never waits: without this a reader would keep the
        // executor for a whole preemption slice (100 ms), and a reader whose block has arrived
        // would wait for every other reader's slice (seconds). Clients of a shard take turns.
        futures_lite::future::yield_now().await;
    }
}

/// What a run of point reads is.
struct ReadRun {
    name: &'static str,
    description: String,
    keys: &'static str,
    readers: usize,
    count: usize,
}

async fn point_reads(
    ctx: &Ctx,
    shard: &Rc<Shard>,
    open: Duration,
    cache_bytes: usize,
    keys: &Rc<Vec<ReadKey>>,
    run: ReadRun,
) -> Result<PointReadPhase> {
    let job = Rc::new(ReadJob {
        shard: shard.clone(),
        keys: keys.clone(),
        next: Cell::new(0),
        end: run.count.min(keys.len()),
        values: ctx.values.clone(),
        now: now_secs(),
        tally: RefCell::new(Tally::default()),
    });
    let before = ctx.probe(shard)?;
    let tasks: Vec<_> = (0..run.readers).map(|_| glommio::spawn_local(reader(job.clone()))).collect();
    let mut first_error = None;
    for task in tasks {
        if let Err(e) = task.await {
            first_error.get_or_insert(e);
        }
    }
    let after = ctx.probe(shard)?;
    if let Some(e) = first_error {
        return Err(e.context(format!("{} reads", run.name)));
    }
    let tally = job.tally.take();
    let usage = usage(&before, &after);
    let counters = ReadCounters::between(&before, &after);
    let reads = tally.latency.count();
    let per = |v: u64| ratio(v as f64, reads as f64);
    let stats = shard.stats();
    let phase = PointReadPhase {
        name: run.name,
        description: run.description,
        keys: run.keys,
        readers: run.readers,
        reads,
        cache_budget_bytes: cache_bytes,
        open_seconds: open.as_secs_f64(),
        reads_per_second: per_second(reads as f64, usage.wall_seconds),
        latency_us: tally.latency.summary(),
        found: tally.found,
        wrong_values: tally.wrong,
        counters,
        per_read: PerRead {
            blocks_read: per(counters.blocks_read),
            bytes_read: per(counters.bytes_read),
            cache_hits: per(counters.cache_hits),
            bloom_positives: per(counters.bloom_positives),
            bloom_false_positives: per(counters.bloom_false_positives),
            blocks_read_per_bloom_positive: ratio(counters.blocks_read as f64, counters.bloom_positives as f64),
            blocks_touched_per_bloom_positive: ratio(
                (counters.blocks_read + counters.cache_hits) as f64,
                counters.bloom_positives as f64,
            ),
            thread_cpu_us: ratio(thread_cpu_seconds(&usage) * 1e6, reads as f64),
        },
        cache_bytes_after: stats.cache.bytes,
        cache_entries_after: stats.cache.entries,
        usage,
    };
    print_point_reads(&phase);
    Ok(phase)
}

// ----- the full scan -----

async fn full_scan(ctx: &Ctx, shard: &Rc<Shard>, cache_bytes: usize) -> Result<ScanPhase> {
    let page = ctx.args.scan_page;
    let now = now_secs();
    let before = ctx.probe(shard)?;
    let mut latency = LatencyHistogram::new();
    let (mut rows, mut pages, mut out_of_order, mut wrong, mut payload) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut after: Option<PartitionKey> = None;
    loop {
        let sent = Instant::now();
        let resume = after.clone().map(ScanResume::after_partition);
        let scan = shard.scan(TABLE_ID, i64::MIN, i64::MAX, resume, page, ScanBound::WHOLE);
        let got = scan.await.context("scanning")?.partitions;
        latency.record(sent.elapsed());
        pages += 1;
        let mut previous = after.as_ref();
        for (key, partition) in &got {
            if previous.is_some_and(|p| p >= key) {
                out_of_order += 1;
            }
            previous = Some(key);
            let value = stored_value(partition, now);
            let expected = row_of_key(key.bytes()).map(|row| ctx.values.value_ref(row));
            if value.is_none() || value != expected {
                wrong += 1;
            }
            payload += (key.bytes().len() + value.map_or(0, <[u8]>::len)) as u64;
        }
        rows += got.len() as u64;
        if got.len() < page {
            break;
        }
        after = got.last().map(|(key, _)| key.clone());
    }
    let finish = ctx.probe(shard)?;
    let usage = usage(&before, &finish);
    let counters = ReadCounters::between(&before, &finish);
    let phase = ScanPhase {
        page,
        pages,
        rows,
        out_of_order,
        wrong_values: wrong,
        cache_budget_bytes: cache_bytes,
        rows_per_second: per_second(rows as f64, usage.wall_seconds),
        payload_bytes: payload,
        payload_megabytes_per_second: megabytes(per_second(payload as f64, usage.wall_seconds)),
        device_megabytes_per_second: megabytes(per_second(counters.bytes_read as f64, usage.wall_seconds)),
        page_latency_us: latency.summary(),
        counters,
        thread_cpu_us_per_row: ratio(thread_cpu_seconds(&usage) * 1e6, rows as f64),
        usage,
    };
    print_scan(&phase);
    Ok(phase)
}

// ----- the whole run, on the shard's executor -----

async fn run(args: Args, dir: PathBuf, values: Arc<ValuePool>) -> Result<Outcome> {
    let schema = Rc::new(surge_schema(TABLE_ID)?);
    let ctx = Ctx { args, dir, schema, values, disk: RefCell::new(None) };
    let args = &ctx.args;
    prepare_executor_io(&ctx.dir).await.with_context(|| format!("preparing I/O in {}", ctx.dir.display()))?;

    let load = if args.reuse.is_some() { None } else { Some(load(&ctx).await?) };

    // The SSTables as files: sizes, and what their bloom filters say about the key sequences.
    let ssts = open_sstables(&ctx.dir).await?;
    let sstable_bytes: u64 = ssts.iter().map(Sstable::file_size).sum();
    let data = data_figures(&ssts, args.rows, sstable_bytes, args.value_bytes);
    print_data(&data);
    if data.partitions_in_sstables != args.rows {
        bail!(
            "the SSTables hold {} partitions, not --rows {}: a different data set (--reuse) or a lost row",
            data.partitions_in_sstables,
            args.rows
        );
    }
    let present = Rc::new(key_sequence(&ctx.schema, 0..args.rows, args.reads, args.seed ^ 0x5EED_0001)?);
    let absent =
        Rc::new(key_sequence(&ctx.schema, args.rows..u64::MAX / 2, args.absent_reads, args.seed ^ 0x5EED_0002)?);
    let started = Instant::now();
    let bloom_present = bloom_tally(&ssts, &present, true);
    let bloom_absent = bloom_tally(&ssts, &absent, false);
    let seconds = started.elapsed().as_secs_f64();
    let asked =
        (bloom_present.checks + bloom_present.range_rejects + bloom_absent.checks + bloom_absent.range_rejects) as f64;
    let ns_per_check = ratio(seconds * 1e9, asked);
    let bloom = BloomFigures {
        sstables: ssts.len(),
        seconds,
        nanoseconds_per_sstable_check: ns_per_check,
        microseconds_per_read_in_filters: ns_per_check * ssts.len() as f64 / 1e3,
        present: bloom_present,
        absent: bloom_absent,
    };
    print_bloom(&bloom, &data);
    let warm_cache_bytes = if args.warm_cache_mib > 0 {
        args.warm_cache_mib * MIB
    } else {
        // Every data block with its cache overhead (whole files: an upper bound), plus the run
        // offsets a decoded block keeps (4 bytes a run: under 1/16 of a block for rows of ~100
        // bytes), plus a MiB.
        let blocks = (sstable_bytes + data.data_blocks * CACHE_ENTRY_OVERHEAD as u64) as usize;
        let blocks = blocks + blocks / 16;
        (blocks.div_ceil(MIB) + 1) * MIB
    };
    drop(ssts);

    let cache = args.cache_mib * MIB;
    let mut point = Vec::new();

    // 1. Cold: a fresh reopen, so the block cache starts empty.
    if args.runs(RunKind::Cold) {
        let (shard, open) = ctx.open(cache).await?;
        let run = ReadRun {
            name: "cold",
            description: format!(
                "existing keys, fresh reopen (empty block cache of {} MiB), {} readers",
                args.cache_mib, args.readers
            ),
            keys: "present",
            readers: args.readers,
            count: args.reads,
        };
        point.push(point_reads(&ctx, &shard, open, cache, &present, run).await?);
        shard.close().await?;
    }
    if args.runs(RunKind::ColdK1) && args.k1_reads > 0 {
        let (shard, open) = ctx.open(cache).await?;
        let run = ReadRun {
            name: "cold-k1",
            description: format!(
                "the first {} of the same keys, fresh reopen (empty block cache of {} MiB), 1 reader",
                args.k1_reads.min(args.reads),
                args.cache_mib
            ),
            keys: "present",
            readers: 1,
            count: args.k1_reads,
        };
        point.push(point_reads(&ctx, &shard, open, cache, &present, run).await?);
        shard.close().await?;
    }

    // 2. Warm: a cache that holds every block, filled by one pass over the keys, then the same
    // keys again.
    if args.runs(RunKind::Warm) {
        warm_runs(&ctx, warm_cache_bytes, &present, &mut point).await?;
    }

    // 3. The full scan, on a fresh reopen.
    let scan = if args.runs(RunKind::Scan) {
        let (shard, _) = ctx.open(cache).await?;
        println!();
        println!(
            "== full scan: tokens (i64::MIN, i64::MAX] in pages of {}, fresh reopen (empty block cache of {} MiB) ==",
            args.scan_page, args.cache_mib
        );
        let scan = full_scan(&ctx, &shard, cache).await?;
        shard.close().await?;
        Some(scan)
    } else {
        None
    };

    // 4. Absent keys, on a fresh reopen.
    if args.runs(RunKind::Absent) {
        let (shard, open) = ctx.open(cache).await?;
        let run = ReadRun {
            name: "absent",
            description: format!(
                "absent keys, fresh reopen (empty block cache of {} MiB), {} readers",
                args.cache_mib, args.readers
            ),
            keys: "absent",
            readers: args.readers,
            count: args.absent_reads,
        };
        point.push(point_reads(&ctx, &shard, open, cache, &absent, run).await?);
        shard.close().await?;
    }

    Ok(Outcome { data_dir: ctx.dir.clone(), load, data, bloom, warm_cache_bytes, point_reads: point, scan })
}

/// The warm runs: a fresh reopen with a cache that holds every block, one pass over the keys
/// to fill it, then the same keys again with K readers and with one.
async fn warm_runs(
    ctx: &Ctx,
    warm_cache_bytes: usize,
    present: &Rc<Vec<ReadKey>>,
    point: &mut Vec<PointReadPhase>,
) -> Result<()> {
    let args = &ctx.args;
    let (shard, open) = ctx.open(warm_cache_bytes).await?;
    let warm_mib = warm_cache_bytes / MIB;
    let run = ReadRun {
        name: "warm-fill",
        description: format!(
            "existing keys, fresh reopen with a block cache of {warm_mib} MiB (every data block fits): \
             the pass that fills the cache (the first touch of each block reads it), {} readers",
            args.readers
        ),
        keys: "present",
        readers: args.readers,
        count: args.reads,
    };
    point.push(point_reads(ctx, &shard, open, warm_cache_bytes, present, run).await?);
    let run = ReadRun {
        name: "warm",
        description: format!(
            "the same keys again: every block they need is in the {warm_mib} MiB cache, {} readers",
            args.readers
        ),
        keys: "present",
        readers: args.readers,
        count: args.reads,
    };
    point.push(point_reads(ctx, &shard, Duration::ZERO, warm_cache_bytes, present, run).await?);
    let run = ReadRun {
        name: "warm-k1",
        description: format!("the same keys again, warm {warm_mib} MiB cache, 1 reader"),
        keys: "present",
        readers: 1,
        count: args.reads,
    };
    point.push(point_reads(ctx, &shard, Duration::ZERO, warm_cache_bytes, present, run).await?);
    shard.close().await?;
    Ok(())
}

// ----- printing -----

fn print_usage(u: &Usage, per: f64, unit: &str) {
    println!(
        "  shard thread      CPU {:.2} s user + {:.2} s sys = {:.0}% of the {:.2} s wall, {:.2} us/{unit}; {} parks, {} preemptions",
        u.thread_cpu_user_seconds,
        u.thread_cpu_system_seconds,
        u.thread_cpu_busy_share * 100.0,
        u.wall_seconds,
        ratio(thread_cpu_seconds(u) * 1e6, per),
        thousands(u.thread_parks as f64),
        thousands(u.thread_preemptions as f64),
    );
    println!("  process CPU       {:.2} s (all threads)", u.process_cpu_seconds);
    if let Some(m) = &u.machine_cpu {
        println!("  machine CPU       {m}");
    }
    if let Some(d) = &u.device {
        println!(
            "  device {:<10} {} reads ({:.1} MB, mean {:.2} ms), {} writes ({:.1} MB), busy {:.0}%",
            d.device,
            thousands(d.reads as f64),
            megabytes(d.bytes_read as f64),
            d.mean_read_ms,
            thousands(d.writes as f64),
            megabytes(d.bytes_written as f64),
            d.busy_share * 100.0
        );
    }
}

fn print_latency(label: &str, l: &LatencySummary) {
    println!(
        "  {label:<17} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
        format_us(l.p50_us),
        format_us(l.p90_us),
        format_us(l.p99_us),
        format_us(l.p999_us),
        format_us(l.max_us),
        format_us(l.mean_us)
    );
}

fn print_load(l: &LoadPhase) {
    println!(
        "  writes            {} rows in {:.2} s: {} rows/s",
        thousands(l.rows as f64),
        l.write_seconds,
        thousands(l.rows_per_second)
    );
    print_latency("write latency", &l.write_latency_us);
    print_usage(&l.write_usage, l.rows as f64, "row");
    println!(
        "  final flush       {:.2} s; {} flushes in all, {} SSTables; WAL wrote {:.1} MB with {} syncs",
        l.final_flush_seconds,
        l.flushes,
        l.sstables,
        megabytes(l.wal_bytes_written as f64),
        thousands(l.wal_fdatasyncs as f64)
    );
    if l.compactions > 0 {
        println!(
            "  compaction        {} compactions wrote {:.1} MB; settled {:.2} s after the final flush",
            l.compactions,
            megabytes(l.compaction_bytes_written as f64),
            l.compaction_settle_seconds
        );
    }
}

fn print_data(d: &DataFigures) {
    println!();
    println!("== on disk: {} SSTables ==", d.sstables);
    println!(
        "  bytes             {:.1} MB in SSTables = {:.1} bytes/row on disk ({} bytes of key and value)",
        megabytes(d.sstable_bytes as f64),
        d.bytes_on_disk_per_row,
        d.payload_bytes_per_row
    );
    println!(
        "  sections          data blocks {:.1} MB ({} blocks, mean {:.1} KiB), index {:.1} MB, bloom {:.1} MB",
        megabytes(d.data_block_bytes as f64),
        thousands(d.data_blocks as f64),
        d.mean_data_block_bytes / 1024.0,
        megabytes(d.index_bytes as f64),
        megabytes(d.bloom_bytes as f64)
    );
    println!(
        "  rows per SSTable  min {}  median {}  max {}; {} partitions in all",
        thousands(d.rows_per_sstable_min as f64),
        thousands(d.rows_per_sstable_median as f64),
        thousands(d.rows_per_sstable_max as f64),
        thousands(d.partitions_in_sstables as f64)
    );
    println!(
        "  bloom filters     {:.2} bits per key: {:.3}% false positives expected per SSTable checked",
        d.bloom_bits_per_key,
        d.bloom_expected_fp_rate * 100.0
    );
}

fn print_tally(label: &str, t: &BloomTally) {
    let buckets = t
        .keys_by_false_positives
        .iter()
        .enumerate()
        .map(|(n, &k)| {
            let n = if n + 1 == POSITIVE_BUCKETS { format!(">={n}") } else { n.to_string() };
            format!("{n}: {:.2}%", ratio(k as f64 * 100.0, t.keys as f64))
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "  {label:<17} {} keys x {} SSTables: {} bloom checks, {} range rejects; {} positives, {} false",
        thousands(t.keys as f64),
        thousands(ratio((t.checks + t.range_rejects) as f64, t.keys as f64)),
        thousands(t.checks as f64),
        thousands(t.range_rejects as f64),
        thousands(t.positives as f64),
        thousands(t.false_positives as f64),
    );
    println!(
        "  {:<17} false positives: {:.3} per key, {:.4}% per SSTable checked",
        "",
        t.false_positives_per_key,
        t.false_positive_rate_per_check * 100.0
    );
    if let (Some(min), Some(median), Some(max)) =
        (t.per_sstable_rate_min, t.per_sstable_rate_median, t.per_sstable_rate_max)
    {
        println!(
            "  {:<17} rate of each SSTable: min {:.4}%  median {:.4}%  max {:.4}%",
            "",
            min * 100.0,
            median * 100.0,
            max * 100.0
        );
    }
    println!("  {:<17} keys by false positives met: {buckets}", "");
}

fn print_bloom(b: &BloomFigures, d: &DataFigures) {
    println!();
    println!(
        "== bloom filters, checked on the SSTables directly ({} SSTables, {:.2} s; expected rate {:.3}%) ==",
        b.sstables,
        b.seconds,
        d.bloom_expected_fp_rate * 100.0
    );
    println!(
        "  cost              {:.0} ns per SSTable asked (token range, then bloom filter): {:.1} us per read over {} SSTables",
        b.nanoseconds_per_sstable_check, b.microseconds_per_read_in_filters, b.sstables
    );
    print_tally("existing keys", &b.present);
    print_tally("absent keys", &b.absent);
    println!(
        "  absent keys that touch no data block: {:.2}% (every bloom positive of an absent key costs one block)",
        b.absent.share_without_false_positive * 100.0
    );
}

fn print_point_reads(p: &PointReadPhase) {
    println!();
    println!("== {}: {} ==", p.name, p.description);
    let expect = if p.keys == "present" { "all" } else { "none" };
    println!(
        "  reads/s           {} ({} reads in {:.2} s); found {} (expected {expect}), {} wrong values{}",
        thousands(p.reads_per_second),
        thousands(p.reads as f64),
        p.usage.wall_seconds,
        thousands(p.found as f64),
        p.wrong_values,
        if p.open_seconds > 0.0 { format!("; shard opened in {:.3} s", p.open_seconds) } else { String::new() }
    );
    print_latency("latency", &p.latency_us);
    let r = &p.per_read;
    println!(
        "  per read          {:.3} data blocks read ({:.1} KiB), {:.3} cache hits, {:.3} bloom positives ({:.3} false)",
        r.blocks_read,
        r.bytes_read / 1024.0,
        r.cache_hits,
        r.bloom_positives,
        r.bloom_false_positives
    );
    println!(
        "  per bloom positive {:.3} blocks read from the device, {:.3} blocks touched (read or cache hit)",
        r.blocks_read_per_bloom_positive, r.blocks_touched_per_bloom_positive
    );
    let c = &p.counters;
    println!(
        "  block cache       {} MiB budget: {} misses, {} evictions; holds {} blocks ({:.1} MB) after",
        p.cache_budget_bytes / MIB,
        thousands(c.cache_misses as f64),
        thousands(c.cache_evictions as f64),
        thousands(p.cache_entries_after as f64),
        megabytes(p.cache_bytes_after as f64)
    );
    println!(
        "  engine counters   bloom_positives {}, bloom_false_positives {}, bloom_negatives {}, range_rejects {}",
        thousands(c.bloom_positives as f64),
        thousands(c.bloom_false_positives as f64),
        thousands(c.bloom_negatives as f64),
        thousands(c.range_rejects as f64)
    );
    print_usage(&p.usage, p.reads as f64, "read");
}

fn print_scan(s: &ScanPhase) {
    println!(
        "  rows              {} in {} pages, {:.2} s: {} rows/s; {} out of order, {} wrong values",
        thousands(s.rows as f64),
        thousands(s.pages as f64),
        s.usage.wall_seconds,
        thousands(s.rows_per_second),
        s.out_of_order,
        s.wrong_values
    );
    println!(
        "  throughput        {:.1} MB/s of keys and values ({:.1} MB); {:.1} MB/s of data blocks read ({:.1} MB)",
        s.payload_megabytes_per_second,
        megabytes(s.payload_bytes as f64),
        s.device_megabytes_per_second,
        megabytes(s.counters.bytes_read as f64)
    );
    print_latency("page latency", &s.page_latency_us);
    println!(
        "  blocks            {} read, {} cache hits (a page restarts every SSTable's scan)",
        thousands(s.counters.blocks_read as f64),
        thousands(s.counters.cache_hits as f64)
    );
    print_usage(&s.usage, s.rows as f64, "row");
}

fn print_summary(o: &Outcome) {
    println!();
    println!("== summary ({} SSTables) ==", o.data.sstables);
    println!(
        "{:<10} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>9}",
        "run",
        "readers",
        "reads",
        "reads/s",
        "p50",
        "p99",
        "p99.9",
        "blocks/read",
        "hits/read",
        "bloom+/read",
        "us CPU"
    );
    for p in &o.point_reads {
        println!(
            "{:<10} {:>7} {:>9} {:>10} {:>9} {:>9} {:>9} {:>11.3} {:>10.3} {:>10.3} {:>9.2}",
            p.name,
            p.readers,
            thousands(p.reads as f64),
            thousands(p.reads_per_second),
            format_us(p.latency_us.p50_us),
            format_us(p.latency_us.p99_us),
            format_us(p.latency_us.p999_us),
            p.per_read.blocks_read,
            p.per_read.cache_hits,
            p.per_read.bloom_positives,
            p.per_read.thread_cpu_us
        );
    }
    if let Some(scan) = &o.scan {
        println!(
            "scan: {} rows/s, {:.1} MB/s of keys and values",
            thousands(scan.rows_per_second),
            scan.payload_megabytes_per_second,
        );
    }
    println!("on disk: {:.1} bytes/row in {} SSTables", o.data.bytes_on_disk_per_row, o.data.sstables);
}

// ----- the aims of the issue -----

fn aims(o: &Outcome) -> Vec<Aim> {
    let mut out = Vec::new();
    let absent = &o.bloom.absent;
    let measured_absent = o.point_reads.iter().find(|p| p.name == "absent");
    let engine = measured_absent.map_or(String::new(), |p| {
        format!(
            "; through the shard {:.3} bloom positives and {:.3} data blocks touched per absent read",
            p.per_read.bloom_positives,
            ratio((p.counters.blocks_read + p.counters.cache_hits) as f64, p.reads as f64)
        )
    });
    out.push(Aim {
        aim: "absent-key reads touch no data block in 99% of cases",
        measured: format!(
            "{:.2}% of absent keys pass no bloom filter of the {} SSTables (per SSTable checked {:.3}% pass){engine}",
            absent.share_without_false_positive * 100.0,
            o.data.sstables,
            absent.false_positive_rate_per_check * 100.0
        ),
        met: absent.share_without_false_positive >= 0.99,
    });
    let cold: Vec<&PointReadPhase> =
        o.point_reads.iter().filter(|p| p.name.starts_with("cold") || p.name == "warm-fill").collect();
    let worst = cold.iter().map(|p| p.per_read.blocks_read_per_bloom_positive).fold(0.0, f64::max);
    out.push(Aim {
        aim: "cold point reads read at most one data block per SSTable the bloom filter lets through",
        measured: cold
            .iter()
            .map(|p| {
                format!(
                    "{}: {:.3} blocks read per bloom positive ({:.3} blocks, {:.3} positives per read)",
                    p.name,
                    p.per_read.blocks_read_per_bloom_positive,
                    p.per_read.blocks_read,
                    p.per_read.bloom_positives
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        met: !cold.is_empty() && worst <= 1.0,
    });
    if let Some(warm) = o.point_reads.iter().find(|p| p.name == "warm") {
        out.push(Aim {
            aim: "warm point reads above 200,000/s per shard",
            measured: format!(
                "{} reads/s with {} readers ({:.2} us of shard CPU per read, {:.3} blocks read per read)",
                thousands(warm.reads_per_second),
                warm.readers,
                warm.per_read.thread_cpu_us,
                warm.per_read.blocks_read
            ),
            met: warm.reads_per_second > 200_000.0,
        });
    }
    out
}

fn notes(o: &Outcome, args: &Args) -> Vec<String> {
    vec![
        format!(
            "cold: each cold run starts on a fresh Shard::open of the same directory, so the block cache ({} MiB) \
             is empty; the data set is much larger than the cache, so cache hits stay rare. O_DIRECT bypasses the \
             guest page cache, but the virtual disk's host may still cache blocks.",
            args.cache_mib
        ),
        format!(
            "warm: a fresh reopen with a block cache of {} MiB (auto: every data block of the shard with its \
             cache overhead, so nothing is ever evicted), one pass over the key sequence to fill it ('warm-fill', \
             itself cold), then the same key sequence again ('warm', and 'warm-k1' with one reader). Warm reads \
             never wait for I/O, so readers take turns and latency is CPU time.",
            o.warm_cache_bytes / MIB
        ),
        "bloom: Shard::read filters SSTables with Sstable::may_contain before calling read_partition, so the \
         engine's bloom_negatives and range_rejects counters stay 0 on this path and bloom_false_positives / \
         (bloom_false_positives + bloom_negatives) reads 1.0; the false-positive rate per SSTable checked is \
         therefore measured by asking every SSTable's filter about every key directly (the 'bloom' section), and \
         cross-checked with the engine's bloom_positives."
            .into(),
        "each bloom positive of a single-row partition touches exactly one data block (read, or found in the \
         cache); two readers that miss on the same block at once both read it (the cache does not merge misses)."
            .into(),
        "readers yield to each other after every read (futures_lite::future::yield_now): a read answered \
         from the cache never waits, so a reader looping over cached reads would otherwise keep the executor \
         for a whole preemption slice, and a reader whose block has arrived would wait for the slices of all \
         the others (measured: 3.3 s max latency with glommio::yield_if_needed instead)."
            .into(),
        "the machine is a shared 2-CPU VM: another build may run at the same time; machine CPU shares and steal \
         are printed with every phase to show it."
            .into(),
    ]
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rows == 0 || args.reads == 0 || args.absent_reads == 0 || args.readers == 0 || args.writers == 0 {
        bail!("--rows, --reads, --absent-reads, --readers and --writers must be positive");
    }
    if args.scan_page == 0 {
        bail!("--scan-page must be positive");
    }
    args.sstable_config().validate().map_err(|e| anyhow!("--block-kib / --bloom-fp-rate: {e}"))?;
    surge_schema(TABLE_ID)?;
    let values = Arc::new(
        ValuePool::new(args.seed, args.value_bytes)
            .ok_or_else(|| anyhow!("--value-bytes must be between 1 and {VALUE_POOL_BYTES}"))?,
    );

    let (run_dir, shard_dir) = match &args.reuse {
        Some(dir) => (None, dir.canonicalize().with_context(|| format!("--reuse {}", dir.display()))?),
        None => {
            let run_dir = fresh_run_dir(&args.engine.dir, "read-path")?;
            let shard_dir = run_dir.join("shard-000");
            (Some(run_dir), shard_dir)
        }
    };
    let machine = Machine::probe_for_run();
    let pin = args.engine.pin.pins(1, machine.nproc);
    println!(
        "read path: {} rows of {KEY_BYTES}-byte keys and {}-byte values in one shard ({}); {} CPU(s), kernel {}; data in {}",
        thousands(args.rows as f64),
        args.value_bytes,
        if pin { "pinned to CPU 0" } else { "unpinned" },
        machine.nproc,
        machine.kernel.as_deref().unwrap_or("?"),
        shard_dir.display()
    );
    println!(
        "reads: {} existing keys with {} readers (and {} with 1), {} absent keys; block cache {} MiB; blocks {} KiB, bloom rate {}",
        thousands(args.reads as f64),
        args.readers,
        thousands(args.k1_reads as f64),
        thousands(args.absent_reads as f64),
        args.cache_mib,
        args.block_kib,
        args.bloom_fp_rate
    );

    let placement = if pin { Placement::Fixed(0) } else { Placement::Unbound };
    let mut builder = LocalExecutorBuilder::new(placement)
        .name("read-path")
        .io_memory(args.engine.io_memory)
        .preempt_timer(shards::node::DEFAULT_TASK_QUOTA);
    if args.engine.spin_before_park_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(args.engine.spin_before_park_us));
    }
    let (shard_args, thread_dir, thread_values) = (args.clone(), shard_dir.clone(), values.clone());
    let handle = builder
        .spawn(move || run(shard_args, thread_dir, thread_values))
        .map_err(|e| anyhow!("starting the shard's executor: {e}"))?;
    let outcome = handle.join().map_err(|e| anyhow!("shard executor: {e}"));
    let cleanup = |run_dir: &Option<PathBuf>| -> Result<()> {
        match run_dir {
            Some(dir) if !args.engine.keep => {
                std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    };
    let outcome = match outcome.and_then(|r| r) {
        Ok(o) => o,
        Err(e) => {
            cleanup(&run_dir)?;
            return Err(e);
        }
    };
    cleanup(&run_dir)?;
    print_summary(&outcome);
    let aims = aims(&outcome);
    println!();
    println!("== aims of the issue (measured, not enforced) ==");
    for a in &aims {
        println!("  [{}] {}", if a.met { "met" } else { "NOT MET" }, a.aim);
        println!("        {}", a.measured);
    }
    if args.engine.keep && run_dir.is_some() {
        println!();
        println!("data kept: rerun the reads with --reuse {}", outcome.data_dir.display());
    }

    let report = Report {
        benchmark: "read_path",
        machine,
        parameters: Parameters {
            command: std::env::args().collect(),
            table: "surge (key blob PRIMARY KEY, value blob)",
            rows: args.rows,
            key_bytes: KEY_BYTES,
            value_bytes: args.value_bytes,
            memtable_budget_bytes: args.memtable_budget_mib * MIB,
            writers: args.writers,
            periodic_sync_ms: args.periodic_sync_ms,
            segment_bytes: args.segment_mib << 20,
            block_size: args.block_kib << 10,
            bloom_fp_rate: args.bloom_fp_rate,
            cache_bytes: args.cache_mib * MIB,
            warm_cache_bytes: outcome.warm_cache_bytes,
            reads: args.reads,
            readers: args.readers,
            k1_reads: args.k1_reads,
            absent_reads: args.absent_reads,
            scan_page: args.scan_page,
            runs: args.runs.clone(),
            io_memory_bytes: args.engine.io_memory,
            spin_before_park_us: args.engine.spin_before_park_us,
            pinned_cpu: pin.then_some(0),
            data_dir: outcome.data_dir.display().to_string(),
            reused_data: args.reuse.is_some(),
            seed: args.seed,
        },
        notes: notes(&outcome, &args),
        data: outcome.data.clone(),
        load: outcome.load.clone(),
        bloom: outcome.bloom.clone(),
        point_reads: outcome.point_reads.clone(),
        scan: outcome.scan.clone(),
        aims,
    };
    write_json(&args.report, &report).with_context(|| format!("writing {}", args.report.display()))?;
    println!();
    println!("report: {}", args.report.display());
    Ok(())
}

//! `enigmadb embedded ...`: opens a node directory in this process (one executor per shard,
//! WAL replay on open) and writes or reads it directly, without a server. It is the quick-start
//! demo and the writer that the crash tests kill.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use enigmadb::config::{parse_size, SyncModeSetting};
use shards::compaction::{CompactionConfig, StrategyKind};
use shards::node::{Node, NodeConfig, OpenReport};
use wire::schema::{ColumnDef, TableOptions, TableSchema};
use wire::{ColumnType, Value};

#[derive(clap::Args)]
pub struct Args {
    /// Node data directory.
    #[arg(long, global = true, default_value = "./enigmadb-data")]
    data_dir: PathBuf,
    /// Shards (one executor each). Default: the directory's count, or one per available core.
    #[arg(long, global = true)]
    shards: Option<usize>,
    /// When an acknowledged write is durable: `batch` (after fdatasync) or `periodic` (after
    /// the write completes; fdatasync every --periodic-sync-ms).
    #[arg(long, global = true, value_enum, default_value_t = SyncModeSetting::Batch)]
    sync_mode: SyncModeSetting,
    #[arg(long, global = true, default_value_t = 10_000)]
    periodic_sync_ms: u64,
    /// At start, move SSTables that fail their checksums to quarantine/ (their rows are lost
    /// on this node) instead of refusing to start.
    #[arg(long, global = true)]
    quarantine_corrupt_sstables: bool,
    /// Bytes of MemTable per shard before a flush to SSTables (suffixes: KiB, MiB, GiB).
    #[arg(long, global = true, value_parser = parse_size, default_value = "64MiB")]
    memtable_budget: usize,
    /// Pin shard i to CPU i (what a production node does; leave off when nodes share cores).
    #[arg(long, global = true)]
    pin_shards: bool,
    /// Size of one WAL segment file (Cassandra's commitlog_segment_size).
    #[arg(long, global = true, default_value_t = 32 * 1024 * 1024)]
    wal_segment_bytes: u64,
    /// On WAL corruption in the middle of the log, truncate there (moving later segments to
    /// wal/quarantine/) instead of refusing to start. Data after the damage is not replayed.
    #[arg(long, global = true)]
    wal_truncate_corrupt: bool,
    /// Rebuild a shard's missing MANIFEST from the SSTables found (each checked) instead of
    /// refusing to start.
    #[arg(long, global = true)]
    rebuild_missing_manifest: bool,
    /// Background compaction strategy (`none`: only `compact` merges SSTables).
    #[arg(long, global = true, value_enum, default_value_t = CompactionArg::SizeTiered)]
    compaction_strategy: CompactionArg,
    /// Fewest similar-sized SSTables that make a size-tiered compaction.
    #[arg(long, global = true, default_value_t = 4)]
    compaction_min_threshold: usize,
    /// Most SSTables one size-tiered compaction merges.
    #[arg(long, global = true, default_value_t = 32)]
    compaction_max_threshold: usize,
    /// SSTables below this size share one size tier (suffixes: KiB, MiB, GiB).
    #[arg(long, global = true, value_parser = parse_size, default_value = "50MiB")]
    compaction_min_sstable_size: usize,
    /// Compaction write throughput per shard in MiB/s (0 = unlimited).
    #[arg(long, global = true, default_value_t = 64)]
    compaction_throughput_mib: u64,
    #[command(subcommand)]
    action: Action,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompactionArg {
    SizeTiered,
    None,
}

#[derive(Subcommand)]
enum Action {
    /// Create the `demo` table if needed, write rows, read them back, print what happened.
    Demo {
        #[arg(long, default_value_t = 10_000)]
        rows: u64,
    },
    /// Write rows to the `surge` table as fast as the sync mode allows and print
    /// `ack <key> <value>` for each acknowledged write (the crash tests' writer).
    Surge {
        /// First row number; row n has key k<n> (zero-padded).
        #[arg(long, default_value_t = 0)]
        start: u64,
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Concurrent writers.
        #[arg(long, default_value_t = 32)]
        writers: u64,
        /// Tag written into every value, so a test can tell runs apart.
        #[arg(long, default_value = "run")]
        tag: String,
    },
    /// Print the rows of one partition: `--key` once per partition key column, as literals.
    Get {
        #[arg(long)]
        table: String,
        #[arg(long = "key", required = true)]
        key: Vec<String>,
    },
    /// List the tables and per-shard counters.
    Info,
    /// Major compaction: flush, then merge each table's SSTables into one per shard, and print
    /// what each shard did.
    Compact,
}

pub fn run(args: Args) -> Result<()> {
    let mut config = NodeConfig::new(&args.data_dir);
    if let Some(n) = args.shards {
        config.shards = n;
    } else if let Some(existing) = shards::node_meta::NodeMeta::existing_shard_count(&args.data_dir)? {
        config.shards = existing;
    }
    config.shard.wal.sync_mode = args.sync_mode.into();
    config.shard.wal.periodic_sync = Duration::from_millis(args.periodic_sync_ms);
    config.shard.wal.truncate_corrupt = args.wal_truncate_corrupt;
    config.shard.wal.segment_size = args.wal_segment_bytes;
    config.pin_shards = args.pin_shards;
    config.shard.memtable_budget = args.memtable_budget;
    config.shard.quarantine_corrupt_sstables = args.quarantine_corrupt_sstables;
    config.shard.rebuild_missing_manifest = args.rebuild_missing_manifest;
    config.shard.compaction = CompactionConfig {
        strategy: match args.compaction_strategy {
            CompactionArg::SizeTiered => StrategyKind::SizeTiered,
            CompactionArg::None => StrategyKind::None,
        },
        min_threshold: args.compaction_min_threshold,
        max_threshold: args.compaction_max_threshold,
        min_sstable_size: args.compaction_min_sstable_size as u64,
        throughput_mib: args.compaction_throughput_mib,
        ..CompactionConfig::default()
    };
    config.shard.compaction.validate()?;
    let started = Instant::now();
    let (node, report) = Node::open(config).with_context(|| format!("opening {}", args.data_dir.display()))?;
    let opened_in = started.elapsed();
    let result = match args.action {
        Action::Demo { rows } => demo(&node, &report, opened_in, rows),
        Action::Surge { start, rows, writers, tag } => surge(&node, start, rows, writers, &tag),
        Action::Get { table, key } => get(&node, &table, &key),
        Action::Info => {
            print_replay(&report, opened_in);
            info(&node, &report)
        }
        Action::Compact => compact(&node),
    };
    let closed = futures_lite::future::block_on(node.shutdown());
    result?;
    Ok(closed?)
}

/// A byte size: plain bytes, or with a KiB/MiB/GiB (or K/M/G) suffix.
fn print_replay(report: &OpenReport, opened_in: Duration) {
    let applied: u64 = report.shard_reports.iter().map(|r| r.applied_records).sum();
    let sstables: usize = report.shard_reports.iter().map(|r| r.sstables).sum();
    println!(
        "opened {} shard(s) in {:.1} ms: {sstables} SSTables, replayed {applied} WAL records",
        report.shards,
        opened_in.as_secs_f64() * 1e3
    );
    for r in &report.shard_reports {
        if let Some(torn) = &r.wal.torn_tail {
            println!(
                "torn tail discarded: {} at offset {} ({} bytes): {}",
                torn.segment.display(),
                torn.offset,
                torn.discarded_bytes,
                torn.reason
            );
        }
        if let Some(cut) = &r.wal.truncated_corruption {
            println!(
                "corruption truncated as requested: {} at offset {}: {}; {} later segment(s) moved to quarantine",
                cut.segment.display(),
                cut.offset,
                cut.reason,
                cut.quarantined.len()
            );
        }
        for path in &r.quarantined {
            println!("corrupt SSTable quarantined as requested: {}", path.display());
        }
    }
}

fn key_value_schema(name: &str) -> TableSchema {
    TableSchema {
        id: 0,
        name: name.into(),
        partition_key: vec![ColumnDef { name: "key".into(), ty: ColumnType::Text }],
        clustering: vec![],
        columns: vec![ColumnDef { name: "value".into(), ty: ColumnType::Text }],
        options: TableOptions::default(),
    }
}

fn ensure_table(node: &Node, schema: TableSchema) -> Result<()> {
    if node.table(&schema.name).is_err() {
        futures_lite::future::block_on(node.create_table(schema, None))?;
    }
    Ok(())
}

fn demo(node: &Node, report: &OpenReport, opened_in: Duration, rows: u64) -> Result<()> {
    print_replay(report, opened_in);
    ensure_table(node, key_value_schema("demo"))?;
    let started = Instant::now();
    let written = run_writers(node, "demo", 0, rows, 64, "demo", |_, _| {})?;
    let took = started.elapsed().as_secs_f64();
    println!("wrote {written} rows to table demo in {took:.2} s ({:.0} rows/s)", written as f64 / took);
    let started = Instant::now();
    let mut found = 0;
    for n in 0..rows {
        let got = futures_lite::future::block_on(node.get("demo", &[Value::Text(row_key(n))], &[]))?;
        if got.first().and_then(|r| r.columns[0].as_ref()) == Some(&Value::Text(row_value(n, "demo"))) {
            found += 1;
        }
    }
    println!("read back {found}/{rows} rows in {:.2} s", started.elapsed().as_secs_f64());
    if found != rows {
        bail!("{} rows written in this run were not read back", rows - found);
    }
    info(node, report)
}

pub fn row_key(n: u64) -> String {
    format!("k{n:012}")
}

pub fn row_value(n: u64, tag: &str) -> String {
    format!("{tag}-{n}-{}", "v".repeat(64))
}

fn surge(node: &Node, start: u64, rows: u64, writers: u64, tag: &str) -> Result<()> {
    ensure_table(node, key_value_schema("surge"))?;
    run_writers(node, "surge", start, rows, writers, tag, |n, value| {
        // Printed only after the write is acknowledged; a kill between ack and print just
        // means the test checks one row fewer.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ack {} {value}", row_key(n));
        let _ = out.flush();
    })?;
    Ok(())
}

/// Writes rows `start..start+rows` with `writers` concurrent tasks on a client executor and
/// calls `on_ack` for each acknowledged row. Returns the number written.
fn run_writers(
    node: &Node,
    table: &str,
    start: u64,
    rows: u64,
    writers: u64,
    tag: &str,
    on_ack: impl Fn(u64, &str) + 'static,
) -> Result<u64> {
    let (node, table, tag) = (node.clone(), table.to_owned(), tag.to_owned());
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("client")
        .make()
        .map_err(|e| anyhow::anyhow!("starting the client executor: {e}"))?;
    ex.run(async move {
        let next = std::rc::Rc::new(std::cell::Cell::new(start));
        let on_ack = std::rc::Rc::new(on_ack);
        let tasks: Vec<_> = (0..writers.max(1))
            .map(|_| {
                let (node, table, tag, next, on_ack) =
                    (node.clone(), table.clone(), tag.clone(), next.clone(), on_ack.clone());
                glommio::spawn_local(async move {
                    let mut written = 0u64;
                    loop {
                        let n = next.get();
                        if n >= start + rows {
                            return Ok::<u64, shards::node::NodeError>(written);
                        }
                        next.set(n + 1);
                        let value = row_value(n, &tag);
                        let columns = [("value", Some(Value::Text(value.clone())))];
                        node.insert(&table, &[Value::Text(row_key(n))], &[], &columns, 0).await?;
                        on_ack(n, &value);
                        written += 1;
                    }
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await?;
        }
        Ok(total)
    })
}

fn get(node: &Node, table: &str, key: &[String]) -> Result<()> {
    let schema = node.table(table)?;
    if key.len() != schema.partition_key.len() {
        bail!(
            "table '{table}' has {} partition key column(s); {} --key value(s) given",
            schema.partition_key.len(),
            key.len()
        );
    }
    let values = schema
        .partition_key
        .iter()
        .zip(key)
        .map(|(col, lit)| Value::parse_as(col.ty, lit).with_context(|| format!("column '{}'", col.name)))
        .collect::<Result<Vec<_>>>()?;
    let rows = futures_lite::future::block_on(node.get(table, &values, &[]))?;
    for row in &rows {
        let fields: Vec<String> = schema
            .all_columns()
            .zip(
                row.partition_key.iter().chain(&row.clustering).map(Some).chain(row.columns.iter().map(Option::as_ref)),
            )
            .map(|(col, v)| format!("{}={}", col.name, v.map_or("null".to_owned(), |v| v.to_string())))
            .collect();
        println!("{}", fields.join(" "));
    }
    println!("({} row{})", rows.len(), if rows.len() == 1 { "" } else { "s" });
    Ok(())
}

fn compact(node: &Node) -> Result<()> {
    let started = Instant::now();
    let reports = futures_lite::future::block_on(node.compact(None))?;
    for (shard, r) in reports.iter().enumerate() {
        println!(
            "shard {shard}: {} compaction(s): {} SSTables ({} bytes) -> {} SSTables ({} bytes); {} partitions -> {}; \
             purged {} tombstones and {} expired cells, kept {} that may shadow older data",
            r.compactions,
            r.sstables_in,
            r.bytes_in,
            r.sstables_out,
            r.bytes_out,
            r.partitions_in,
            r.partitions_out,
            r.purged.tombstones,
            r.purged.expired,
            r.purged.kept_for_older_data
        );
    }
    println!("compacted in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn info(node: &Node, report: &OpenReport) -> Result<()> {
    let mut tables: Vec<_> = node.tables().iter().map(|t| t.name.clone()).collect();
    tables.sort();
    println!("data directory {}: {} shard(s), tables: {}", node.data_dir().display(), report.shards, tables.join(", "));
    for s in futures_lite::future::block_on(node.stats())? {
        println!(
            "shard {}: {} writes; MemTables {} partitions, {} bytes ({} waiting to flush); {} SSTables, {} bytes, {} flushes; WAL {} records, {} syncs",
            s.shard,
            s.writes,
            s.memtable_partitions,
            s.memtable_bytes,
            s.immutable_memtables,
            s.sstables,
            s.sstable_bytes,
            s.flushes,
            s.wal.records,
            s.wal.syncs
        );
        let c = &s.compaction;
        println!(
            "shard {}: compactions {} done, {} pending{}; SSTables {} in -> {} out; {} bytes read, {} written; purged {} tombstones, {} expired cells{}",
            s.shard,
            c.completed,
            c.pending,
            if c.running { ", one running" } else { "" },
            c.sstables_in,
            c.sstables_out,
            c.bytes_read,
            c.bytes_written,
            c.purged.tombstones,
            c.purged.expired,
            c.last_error.as_ref().map_or(String::new(), |e| format!("; last error: {e}"))
        );
    }
    Ok(())
}

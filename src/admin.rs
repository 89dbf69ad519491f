//! `enigmadb admin <command>`: nodetool's everyday commands against a running node, over the
//! client protocol (ADMIN requests). It owns only the command line and presentation (aligned
//! text tables, or JSON with `--json`); what each command does is the server's business.

mod repair;

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value as Json};
use wire::client::{Client, ClientError, ClientOptions};
use wire::protocol::{
    display_host_id, AdminDone, AdminRequest, AdminResult, CleanedTable, ColumnSpec, LeaveDone, Netstats, NodeInfo,
    NodeStatus, RepairRequest, RingEntry, TableStats,
};
use wire::{ColumnType, Value};

use crate::shell::{render_table, DEFAULT_HOST};

/// Default bound on waiting for the node: a flush or a major compaction of a large node takes
/// minutes.
const DEFAULT_TIMEOUT_SECS: u64 = 600;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// The node's client address, host:port.
    #[arg(long, default_value = DEFAULT_HOST, global = true)]
    host: String,
    /// Print JSON (one object) instead of text tables.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the node's answer.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS, global = true)]
    timeout_secs: u64,
    /// A superuser's credentials, on a node with authentication on.
    #[command(flatten)]
    credentials: crate::credentials::CredentialArgs,
    #[command(flatten)]
    tls: crate::credentials::TlsArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// One line per node: state (UN = up, normal), address, load, tokens, ownership, host id.
    Status,
    /// The token ring as this node sees it, one line per vnode token in ring order: owner's
    /// address, state, shard, load, and the share of the ring its range covers.
    Ring,
    /// This node: uptime, load, cache hit rate; per shard MemTables, flushes, compactions, WAL.
    Info,
    /// This node's streams (nodetool's netstats): its mode (NORMAL, or where its bootstrap
    /// is), the streams planned and done, and what it received from each peer.
    Netstats,
    /// Per table: SSTables, space used, MemTable, read and write counts and local latencies
    /// (p50/p99), tombstones scanned, bloom filter counters.
    Tablestats {
        /// Only this table.
        table: Option<String>,
    },
    /// Write MemTables out to SSTables (a shard's tables share one MemTable generation, so
    /// every table is flushed; a name is checked).
    Flush {
        /// A table that must exist.
        table: Option<String>,
    },
    /// Major compaction: merge the table's SSTables into one on each shard (every table's
    /// without a name).
    Compact {
        /// Only this table.
        table: Option<String>,
    },
    /// Drop the partitions this node no longer replicates (after a node joined) from the
    /// table's SSTables (every table's without a name): each SSTable is rewritten keeping only
    /// the tokens its shard owns under the current ring. Refused while a range movement
    /// involves this node.
    Cleanup {
        /// Only this table (keyspace.table or table).
        table: Option<String>,
    },
    /// Flush everything, then refuse writes, before a clean shutdown. The drained state is not
    /// persisted: as with Cassandra, a restarted node serves writes again.
    Drain,
    /// Stream every range this node replicates to the nodes that take it over, leave the ring
    /// (LEFT) and stop the node. Refused when another range movement overlaps, or when fewer
    /// nodes than a table's replication factor would remain. Returns once the node left.
    Decommission,
    /// Take the dead node HOST_ID out of the ring: its ranges are streamed from the surviving
    /// replicas to their new owners, then it is removed everywhere. Refused for a live node.
    /// `removenode status` shows the progress of one running on this node (as netstats).
    Removenode {
        /// The dead node's host id (as `status` shows it), or `status`.
        host_id: String,
    },
    /// Anti-entropy repair: compare Merkle trees of every token range this node replicates with
    /// the other live replicas', and stream the differing sub-ranges both ways (last write wins).
    Repair {
        /// Only this table.
        #[arg(long)]
        table: Option<String>,
        /// Only the ranges this node is the first replica of (nodetool's -pr): run it on every
        /// node to repair the ring once.
        #[arg(long, visible_alias = "pr")]
        primary_range: bool,
        /// Deepest Merkle tree (2^depth leaves; a tree is only as deep as its partition count needs).
        #[arg(long, default_value_t = crate::cluster::merkle::DEFAULT_TREE_DEPTH,
              value_parser = clap::value_parser!(u8).range(0..=crate::cluster::merkle::MAX_TREE_DEPTH as i64))]
        tree_depth: u8,
    },
}

impl Command {
    fn request(self) -> Result<AdminRequest> {
        Ok(match self {
            Command::Status => AdminRequest::Status,
            Command::Ring => AdminRequest::Ring,
            Command::Info => AdminRequest::Info,
            Command::Netstats => AdminRequest::Netstats,
            Command::Tablestats { table } => AdminRequest::TableStats { table },
            Command::Flush { table } => AdminRequest::Flush { table },
            Command::Compact { table } => AdminRequest::Compact { table },
            Command::Cleanup { table } => AdminRequest::Cleanup { table },
            Command::Drain => AdminRequest::Drain,
            Command::Repair { table, primary_range, .. } => {
                AdminRequest::Repair(RepairRequest::Plan { table, primary_only: primary_range })
            }
            Command::Decommission => AdminRequest::Decommission,
            Command::Removenode { host_id } if host_id == "status" => AdminRequest::Netstats,
            Command::Removenode { host_id } => AdminRequest::RemoveNode { host_id: parse_host_id(&host_id)? },
        })
    }
}

/// A host id as `status` shows it (8-4-4-4-12 hex digits) or as 32 hex digits.
fn parse_host_id(text: &str) -> Result<u128> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    match hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        true => Ok(u128::from_str_radix(&hex, 16)?),
        false => anyhow::bail!("{text:?} is not a host id (32 hex digits, as `enigmadb admin status` shows them)"),
    }
}

pub fn run(args: Args) -> Result<()> {
    let options = ClientOptions {
        timeout: Some(Duration::from_secs(args.timeout_secs.max(1))),
        // Names the admin tool, which may take a place reserved for it on a full node.
        client_name: format!("{}/{}", wire::protocol::ADMIN_CLIENT_PREFIX, env!("CARGO_PKG_VERSION")),
        credentials: args.credentials.resolve()?,
        tls: args.tls.resolve()?.map(|tls| tls.for_host(&args.host)),
        ..ClientOptions::default()
    };
    // The client error already names its cause (its source would repeat it in the report).
    let mut client = Client::connect_with(&args.host, options)
        .map_err(|e| anyhow::anyhow!("cannot reach the node at {}: {e}", args.host))?;
    if let Command::Repair { table, primary_range, tree_depth } = args.command {
        let options = repair::Options { table, primary_only: primary_range, max_depth: tree_depth, json: args.json };
        return repair::run(&mut client, &args.host, options);
    }
    let request = args.command.request()?;
    let name = request.name();
    let result = client.admin(request).map_err(|e| match e {
        ClientError::Server(e) => anyhow::anyhow!("{name}: {e}"),
        other => anyhow::anyhow!("{name} on {}: {other}", args.host),
    })?;
    let out = match args.json {
        true => format!("{:#}\n", to_json(&result)),
        false => render(&result),
    };
    print!("{out}");
    Ok(())
}

/// The text an operator reads: legends and aligned tables, sizes in binary units.
pub fn render(result: &AdminResult) -> String {
    match result {
        AdminResult::Status(nodes) => render_status(nodes),
        AdminResult::Info(info) => render_info(info),
        AdminResult::TableStats(tables) => render_table_stats(tables),
        AdminResult::Ring(entries) => render_ring(entries),
        AdminResult::Flushed(done) => {
            format!("Flushed {} of MemTables on {} shards\n", display_size(done.memtable_bytes), done.shards)
        }
        AdminResult::Compacted(done) => format!(
            "Compacted on {} shards: {} compactions, {} SSTables ({}) into {} ({})\n",
            done.shards,
            done.compactions,
            done.sstables_in,
            display_size(done.bytes_in),
            done.sstables_out,
            display_size(done.bytes_out),
        ),
        AdminResult::Repair(result) => repair::render(result),
        AdminResult::Netstats(netstats) => render_netstats(netstats),
        AdminResult::Cleaned(tables) => render_cleaned(tables),
        AdminResult::Decommissioned(done) => format!(
            "Decommissioned: streamed {} ranges ({} rows, {}) in {:.1} s; {} hints left for nodes that are down. This node left the ring and stops now.\n",
            done.ranges,
            done.rows,
            display_size(done.bytes),
            done.seconds,
            done.hints_left
        ),
        AdminResult::Removed(done) => format!(
            "Removed {} from the ring: streamed {} ranges ({} rows, {}) in {:.1} s\n",
            display_host_id(done.host_id),
            done.ranges,
            done.rows,
            display_size(done.bytes),
            done.seconds
        ),
        AdminResult::Drained(done) => format!(
            "Drained: flushed {} of MemTables on {} shards; writes are refused until the node restarts\n",
            display_size(done.memtable_bytes),
            done.shards
        ),
    }
}

/// nodetool's legend of the two state letters, above `status` and `ring`.
const STATE_LEGEND: &str = "Status=Up/Down\n|/ State=Normal/Leaving/Joining/Moving\n";

fn render_status(nodes: &[NodeStatus]) -> String {
    // nodetool's header says whether the shares are effective (at the replication factor).
    let effective = nodes.iter().find_map(|n| n.effective).map(|e| e.replication_factor);
    let owns = match effective {
        Some(_) => "Owns (effective)",
        None => "Owns",
    };
    let columns = ["--", "Address", "Load", "Tokens", owns, "Host ID"];
    let rows = nodes
        .iter()
        .map(|n| {
            vec![
                n.code(),
                n.address.clone(),
                display_size(n.load_bytes),
                n.tokens.to_string(),
                format!("{:.1}%", n.shown_owns() * 100.0),
                display_host_id(n.host_id),
            ]
        })
        .collect();
    let note = match effective {
        Some(rf) => format!("\nOwns: the share of the ring each node holds a replica of at RF {rf} (they add up to {rf} x 100%).\n"),
        None => "\nOwns: the share of the ring each node is the first replica of; the tables do not share one replication factor, so effective ownership is not shown.\n".to_owned(),
    };
    format!("{STATE_LEGEND}{}{note}", text_table(&columns, rows))
}

fn render_ring(entries: &[RingEntry]) -> String {
    let columns = ["Address", "--", "Shard", "Load", "Owns", "Token"];
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                e.address.clone(),
                e.code(),
                e.shard.to_string(),
                display_size(e.load_bytes),
                format!("{:.2}%", e.owns * 100.0),
                e.token.to_string(),
            ]
        })
        .collect();
    format!("{STATE_LEGEND}{}", text_table(&columns, rows))
}

fn render_info(info: &NodeInfo) -> String {
    let hit_rate = info.cache_hit_rate().map_or_else(|| "n/a".to_owned(), |r| format!("{:.3}", r));
    let sum = |f: fn(&wire::protocol::ShardInfo) -> u64| info.shards.iter().map(f).sum::<u64>();
    let mut out = String::new();
    let lines = [
        ("ID", display_host_id(info.host_id)),
        ("Uptime (seconds)", (info.uptime_ms / 1000).to_string()),
        ("Load", display_size(info.load_bytes)),
        ("Shards", info.shards.len().to_string()),
        ("Drained", info.drained.to_string()),
        ("MemTable size", display_size(sum(|s| s.memtable_bytes))),
        ("Cache size", display_size(sum(|s| s.cache_bytes))),
        ("Cache hit rate", hit_rate),
        ("Pending flushes", sum(|s| u64::from(s.pending_flushes)).to_string()),
        ("Pending compactions", sum(|s| u64::from(s.pending_compactions)).to_string()),
        ("Hints pending", info.hints_pending.to_string()),
    ];
    for (key, value) in lines {
        out.push_str(&format!("{key:<20}: {value}\n"));
    }
    if let Some(m) = &info.memory {
        out.push_str(&format!("{:<20}: {} per shard\n", "MemTable budget", display_size(m.memtable_budget)));
        out.push_str(&format!("{:<20}: {} per shard\n", "Cache budget", display_size(m.cache_budget)));
        out.push_str(&format!("{:<20}: {}\n", "Memory sizing", m.why));
    }
    let columns = [
        "Shard",
        "MemTable",
        "Pending flushes",
        "Flushes",
        "Writes",
        "SSTables",
        "SSTable size",
        "Cache hits",
        "Cache misses",
        "Pending compactions",
        "Compactions",
        "WAL records",
        "WAL written",
        "WAL syncs",
    ];
    let rows = info
        .shards
        .iter()
        .map(|s| {
            vec![
                s.shard.to_string(),
                display_size(s.memtable_bytes),
                s.pending_flushes.to_string(),
                s.flushes.to_string(),
                s.writes.to_string(),
                s.sstables.to_string(),
                display_size(s.sstable_bytes),
                s.cache_hits.to_string(),
                s.cache_misses.to_string(),
                format!("{}{}", s.pending_compactions, if s.compaction_running { " (1 running)" } else { "" }),
                s.compactions_completed.to_string(),
                s.wal_records.to_string(),
                display_size(s.wal_bytes_written),
                s.wal_syncs.to_string(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&text_table(&columns, rows));
    for s in &info.shards {
        if let Some(e) = &s.flush_error {
            out.push_str(&format!("shard {}: flush failing: {e}\n", s.shard));
        }
        if let Some(e) = &s.compaction_error {
            out.push_str(&format!("shard {}: last compaction failed: {e}\n", s.shard));
        }
    }
    out
}

fn render_table_stats(tables: &[TableStats]) -> String {
    let columns = [
        "Table",
        "SSTables",
        "Space used",
        "MemTable",
        "MemTable partitions",
        "Reads",
        "Read p50 ms",
        "Read p99 ms",
        "Range scans",
        "Tombstones scanned",
        "Writes",
        "Write p50 ms",
        "Write p99 ms",
        "SSTable tombstones",
        "Bloom positives",
        "Bloom false positives",
    ];
    let rows = tables
        .iter()
        .map(|t| {
            vec![
                t.table.clone(),
                t.sstables.to_string(),
                display_size(t.space_used_bytes),
                display_size(t.memtable_bytes),
                t.memtable_partitions.to_string(),
                t.reads.to_string(),
                display_latency(t.reads, t.read_p50_nanos),
                display_latency(t.reads, t.read_p99_nanos),
                t.range_scans.to_string(),
                t.tombstones_scanned.to_string(),
                t.writes.to_string(),
                display_latency(t.writes, t.write_p50_nanos),
                display_latency(t.writes, t.write_p99_nanos),
                t.sstable_tombstones.to_string(),
                t.bloom_positives.to_string(),
                t.bloom_false_positives.to_string(),
            ]
        })
        .collect();
    text_table(&columns, rows)
}

/// An aligned table of text cells, as the shell prints query results.
fn text_table(columns: &[&str], rows: Vec<Vec<String>>) -> String {
    let specs: Vec<ColumnSpec> =
        columns.iter().map(|name| ColumnSpec { name: (*name).to_owned(), ty: ColumnType::Text }).collect();
    let rows: Vec<Vec<Option<Value>>> =
        rows.into_iter().map(|row| row.into_iter().map(|cell| Some(Value::Text(cell))).collect()).collect();
    render_table(&specs, &rows)
}

/// The JSON scripts read: every count and size as a number (sizes in bytes), names as nodetool
/// spells them in snake case.
pub fn to_json(result: &AdminResult) -> Json {
    match result {
        AdminResult::Status(nodes) => json!({ "nodes": nodes.iter().map(status_json).collect::<Vec<_>>() }),
        AdminResult::Info(info) => info_json(info),
        AdminResult::TableStats(tables) => json!({ "tables": tables.iter().map(table_json).collect::<Vec<_>>() }),
        AdminResult::Ring(entries) => json!({ "ring": entries.iter().map(ring_json).collect::<Vec<_>>() }),
        AdminResult::Flushed(done) => done_json("flush", done),
        AdminResult::Compacted(done) => done_json("compact", done),
        AdminResult::Drained(done) => done_json("drain", done),
        AdminResult::Repair(result) => repair::to_json(result),
        AdminResult::Cleaned(tables) => json!({
            "command": "cleanup",
            "tables": tables.iter().map(|t| json!({
                "table": t.table,
                "sstables_in": t.sstables_in,
                "sstables_out": t.sstables_out,
                "bytes_in": t.bytes_in,
                "bytes_out": t.bytes_out,
                "bytes_dropped": t.bytes_dropped(),
                "partitions_in": t.partitions_in,
                "partitions_dropped": t.partitions_dropped,
            })).collect::<Vec<_>>(),
        }),
        AdminResult::Decommissioned(done) => leave_json("decommission", done),
        AdminResult::Removed(done) => leave_json("removenode", done),
        AdminResult::Netstats(n) => json!({
            "mode": n.mode,
            "sending": n.sending(),
            "ranges_total": n.ranges_total,
            "ranges_done": n.ranges_done,
            "seconds": n.seconds,
            "throughput_limit_bytes_per_s": n.throughput_limit,
            "error": n.error,
            "receiving": n.peers.iter().map(|p| json!({
                "host_id": display_host_id(p.host_id),
                "address": p.address,
                "ranges_done": p.ranges_done,
                "partitions": p.partitions,
                "rows": p.rows,
                "bytes": p.bytes,
                "failures": p.failures,
            })).collect::<Vec<_>>(),
        }),
    }
}

fn render_cleaned(tables: &[CleanedTable]) -> String {
    let bytes: u64 = tables.iter().map(CleanedTable::bytes_dropped).sum();
    let partitions: u64 = tables.iter().map(|t| t.partitions_dropped).sum();
    let mut out =
        format!("Cleaned {} tables: dropped {partitions} partitions, {}\n", tables.len(), display_size(bytes));
    let columns = ["Table", "SSTables rewritten", "Before", "After", "Dropped", "Partitions", "Partitions dropped"];
    let rows = tables
        .iter()
        .map(|t| {
            vec![
                t.table.clone(),
                format!("{} -> {}", t.sstables_in, t.sstables_out),
                display_size(t.bytes_in),
                display_size(t.bytes_out),
                display_size(t.bytes_dropped()),
                t.partitions_in.to_string(),
                t.partitions_dropped.to_string(),
            ]
        })
        .collect();
    out.push_str(&text_table(&columns, rows));
    out
}

fn leave_json(command: &str, d: &LeaveDone) -> Json {
    json!({
        "command": command,
        "host_id": display_host_id(d.host_id),
        "ranges": d.ranges,
        "partitions": d.partitions,
        "rows": d.rows,
        "bytes": d.bytes,
        "seconds": d.seconds,
        "hints_left": d.hints_left,
    })
}

fn render_netstats(n: &Netstats) -> String {
    let bytes: u64 = n.peers.iter().map(|p| p.bytes).sum();
    let rows: u64 = n.peers.iter().map(|p| p.rows).sum();
    let rate = match n.seconds > 0.0 {
        true => format!("{}/s", display_size((bytes as f64 / n.seconds) as u64)),
        false => "-".to_owned(),
    };
    let limit = match n.throughput_limit {
        0 => "unthrottled".to_owned(),
        l => format!("{:.1} MB/s", l as f64 / 1e6),
    };
    let mut out = format!(
        "Mode: {}
",
        n.mode
    );
    if let Some(error) = &n.error {
        out.push_str(&format!(
            "Error: {error}
"
        ));
    }
    if n.ranges_total == 0 && n.peers.is_empty() {
        out.push_str(
            "Not sending or receiving any streams.
",
        );
        return out;
    }
    let (direction, peer, moved) = match n.sending() {
        true => ("Sending", "To", "Sent"),
        false => ("Receiving", "From", "Received"),
    };
    out.push_str(&format!(
        "{direction}: {}/{} ranges, {rows} rows, {} in {:.1} s ({rate}, throttle {limit})
",
        n.ranges_done,
        n.ranges_total,
        display_size(bytes),
        n.seconds
    ));
    let columns = [peer, "Host ID", "Ranges", "Partitions", "Rows", moved, "Failures"];
    let table = n
        .peers
        .iter()
        .map(|p| {
            vec![
                p.address.clone(),
                display_host_id(p.host_id),
                p.ranges_done.to_string(),
                p.partitions.to_string(),
                p.rows.to_string(),
                display_size(p.bytes),
                p.failures.to_string(),
            ]
        })
        .collect();
    out.push_str(&text_table(&columns, table));
    out
}

fn status_json(n: &NodeStatus) -> Json {
    json!({
        "state": n.code(),
        "address": n.address,
        "load_bytes": n.load_bytes,
        "tokens": n.tokens,
        "owns": n.shown_owns(),
        "owns_primary": n.owns,
        "replication_factor": n.effective.map(|e| e.replication_factor),
        "host_id": display_host_id(n.host_id),
    })
}

fn ring_json(e: &RingEntry) -> Json {
    json!({
        "token": e.token.to_string(),
        "address": e.address,
        "state": e.code(),
        "shard": e.shard,
        "load_bytes": e.load_bytes,
        "owns": e.owns,
        "host_id": display_host_id(e.host_id),
    })
}

fn info_json(info: &NodeInfo) -> Json {
    let shards: Vec<Json> = info
        .shards
        .iter()
        .map(|s| {
            json!({
                "shard": s.shard,
                "memtable_bytes": s.memtable_bytes,
                "pending_flushes": s.pending_flushes,
                "flushes": s.flushes,
                "writes": s.writes,
                "sstables": s.sstables,
                "sstable_bytes": s.sstable_bytes,
                "cache_hits": s.cache_hits,
                "cache_misses": s.cache_misses,
                "cache_bytes": s.cache_bytes,
                "pending_compactions": s.pending_compactions,
                "compaction_running": s.compaction_running,
                "compactions_completed": s.compactions_completed,
                "wal_records": s.wal_records,
                "wal_bytes_written": s.wal_bytes_written,
                "wal_syncs": s.wal_syncs,
                "flush_error": s.flush_error,
                "compaction_error": s.compaction_error,
            })
        })
        .collect();
    json!({
        "host_id": display_host_id(info.host_id),
        "uptime_ms": info.uptime_ms,
        "load_bytes": info.load_bytes,
        "drained": info.drained,
        "cache_hit_rate": info.cache_hit_rate(),
        "hints_pending": info.hints_pending,
        "memory": info.memory.as_ref().map(|m| json!({
            "memtable_budget": m.memtable_budget,
            "cache_budget": m.cache_budget,
            "why": m.why,
        })),
        "shards": shards,
    })
}

fn table_json(t: &TableStats) -> Json {
    json!({
        "table": t.table,
        "sstables": t.sstables,
        "space_used_bytes": t.space_used_bytes,
        "memtable_bytes": t.memtable_bytes,
        "memtable_partitions": t.memtable_partitions,
        "reads": t.reads,
        "range_scans": t.range_scans,
        "writes": t.writes,
        "sstable_tombstones": t.sstable_tombstones,
        "bloom_positives": t.bloom_positives,
        "bloom_false_positives": t.bloom_false_positives,
        "tombstones_scanned": t.tombstones_scanned,
        "read_latency_p50_ms": latency_ms(t.reads, t.read_p50_nanos),
        "read_latency_p99_ms": latency_ms(t.reads, t.read_p99_nanos),
        "write_latency_p50_ms": latency_ms(t.writes, t.write_p50_nanos),
        "write_latency_p99_ms": latency_ms(t.writes, t.write_p99_nanos),
    })
}

fn done_json(command: &str, d: &AdminDone) -> Json {
    json!({
        "command": command,
        "shards": d.shards,
        "memtable_bytes": d.memtable_bytes,
        "compactions": d.compactions,
        "sstables_in": d.sstables_in,
        "sstables_out": d.sstables_out,
        "bytes_in": d.bytes_in,
        "bytes_out": d.bytes_out,
    })
}

/// A latency percentile in milliseconds, as nodetool prints table latencies; None before the
/// first operation it measures.
fn latency_ms(operations: u64, nanos: u64) -> Option<f64> {
    (operations > 0).then(|| nanos as f64 / 1e6)
}

fn display_latency(operations: u64, nanos: u64) -> String {
    latency_ms(operations, nanos).map_or_else(|| "n/a".to_owned(), |ms| format!("{ms:.3}"))
}

/// Bytes in binary units with one decimal (`512 B`, `1.5 KiB`, `64.0 MiB`), as nodetool shows
/// sizes.
pub fn display_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::protocol::{Liveness, RingState, ShardInfo};

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(display_size(0), "0 B");
        assert_eq!(display_size(1023), "1023 B");
        assert_eq!(display_size(1024), "1.0 KiB");
        assert_eq!(display_size(1536), "1.5 KiB");
        assert_eq!(display_size(64 << 20), "64.0 MiB");
        assert_eq!(display_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn host_ids_print_as_uuids() {
        assert_eq!(display_host_id(0), "00000000-0000-0000-0000-000000000000");
        assert_eq!(display_host_id(0x0123_4567_89ab_cdef_0011_2233_4455_6677), "01234567-89ab-cdef-0011-223344556677");
    }

    #[test]
    fn status_prints_one_aligned_row_per_node_and_json_keeps_numbers() {
        let node = |address: &str, liveness, load_bytes| NodeStatus {
            address: address.into(),
            liveness,
            state: RingState::Normal,
            load_bytes,
            tokens: 16,
            owns: 0.5,
            host_id: 1,
            effective: None,
        };
        let result = AdminResult::Status(vec![
            node("127.0.0.1:9470", Liveness::Up, 2048),
            node("127.0.0.2:9470", Liveness::Down, 0),
        ]);
        let text = render(&result);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8, "{text}");
        assert!(!lines[2].contains("effective") && lines[7].contains("first replica"), "{text}");
        assert!(lines[2].contains("Address") && lines[2].contains("Host ID"), "{text}");
        assert!(lines[4].contains("UN") && lines[4].contains("127.0.0.1:9470") && lines[4].contains("2.0 KiB"));
        assert!(lines[5].contains("DN") && lines[5].contains("50.0%"), "{text}");
        // Aligned: every row of the table is as long as its header.
        assert_eq!(lines[4].find('|'), lines[2].find('|'), "{text}");
        let json = to_json(&result);
        assert_eq!(json["nodes"][0]["load_bytes"], 2048);
        assert_eq!(json["nodes"][1]["state"], "DN");
        assert_eq!(json["nodes"][0]["host_id"], "00000000-0000-0000-0000-000000000001");
        assert_eq!(json["nodes"][0]["owns"], 0.5);
        assert_eq!(json["nodes"][0]["replication_factor"], serde_json::Value::Null);
    }

    #[test]
    fn status_shows_effective_ownership_when_the_replication_factor_is_known() {
        let effective = Some(wire::protocol::EffectiveOwnership { replication_factor: 3, owns: 0.75 });
        let node = NodeStatus {
            address: "127.0.0.1:9470".into(),
            liveness: Liveness::Up,
            state: RingState::Normal,
            load_bytes: 1,
            tokens: 16,
            owns: 0.25,
            host_id: 1,
            effective,
        };
        let result = AdminResult::Status(vec![node]);
        let text = render(&result);
        assert!(text.contains("Owns (effective)") && text.contains("75.0%") && text.contains("at RF 3"), "{text}");
        let json = to_json(&result);
        assert_eq!(json["nodes"][0]["owns"], 0.75);
        assert_eq!(json["nodes"][0]["owns_primary"], 0.25);
        assert_eq!(json["nodes"][0]["replication_factor"], 3);
    }

    #[test]
    fn info_reports_errors_and_a_missing_hit_rate() {
        let shard = ShardInfo { shard: 1, flush_error: Some("disk full".into()), ..ShardInfo::default() };
        let info = NodeInfo {
            host_id: 5,
            uptime_ms: 61_500,
            load_bytes: 0,
            drained: true,
            shards: vec![shard],
            hints_pending: 7,
            memory: Some(wire::protocol::MemoryBudgets {
                memtable_budget: 64 << 20,
                cache_budget: 3 << 30,
                why: "auto: from 24GiB".into(),
            }),
        };
        let text = render(&AdminResult::Info(info.clone()));
        assert!(text.contains("Hints pending       : 7"), "{text}");
        assert!(text.contains("Cache budget        : 3.0 GiB per shard"), "{text}");
        assert!(text.contains("Memory sizing       : auto: from 24GiB"), "{text}");
        assert!(text.contains("Uptime (seconds)    : 61"), "{text}");
        assert!(text.contains("Cache hit rate      : n/a"), "{text}");
        assert!(text.contains("shard 1: flush failing: disk full"), "{text}");
        let json = to_json(&AdminResult::Info(info));
        assert_eq!(json["cache_hit_rate"], Json::Null);
        assert_eq!(json["drained"], true);
        assert_eq!(json["hints_pending"], 7);
        assert_eq!(json["shards"][0]["flush_error"], "disk full");
    }
}

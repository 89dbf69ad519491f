//! The node's metrics: client requests, errors and connections counted by the coordinator
//! shard in plain `Cell`s (no lock and no allocation per request), shard counters gathered at
//! scrape time through `Node::stats`, and the registry where other subsystems (hints, gossip)
//! add theirs. Everything here runs on the coordinator shard and never blocks it; the HTTP
//! endpoint is `listener`, the text format `text`.

pub mod gossip;
pub mod http;
pub mod listener;
pub mod statement;
pub mod text;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::latency::LatencyHistogram;
use shards::node::{Node, NodeError};
use shards::shard::{node_table_counters, ShardStats, TableCounters, TableSstables};
use wire::frame::Opcode;
use wire::protocol::{Consistency, ErrorCode, PreparedId, Request, Response};
use wire::schema::TableId;

pub use statement::StatementKind;
pub use text::{Exposition, Kind};

/// Upper bounds of the request latency buckets, in nanoseconds (100 us to 10 s; slower
/// requests land in `+Inf`).
pub const LATENCY_BOUNDS_NANOS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Distinct (op, error) series counted; errors of further combinations are counted under
/// `op="unknown", error="other"`.
pub const MAX_ERROR_SERIES: usize = 64;

/// Subsystems that may register a [`MetricsSource`].
pub const MAX_SOURCES: usize = 16;

/// Opcode slots: one per opcode (named after it), plus one for frames that never decoded.
const OPCODE_SLOTS: usize = Opcode::ALL.len() + 1;
const OPCODE_UNKNOWN: usize = Opcode::ALL.len();
/// Request slots: one per (statement kind, opcode), indexed `kind * OPCODE_SLOTS + opcode`.
const OP_SLOTS: usize = StatementKind::ALL.len() * OPCODE_SLOTS;
const KIND_OTHER: usize = StatementKind::ALL.len() - 1;
/// Consistency slots: one per level, plus one for requests without a level (STARTUP...).
const CONSISTENCY_SLOTS: usize = Consistency::ALL.len() + 1;
const CONSISTENCY_NONE: usize = Consistency::ALL.len();

/// A subsystem's metrics (the cluster layer's hints and gossip state, for example), written at
/// every scrape on the coordinator shard. `collect` declares its own families with
/// [`Exposition::family`] (names starting `enigmadb_`, not used by another source) and must not
/// block: keep the numbers in `Cell`s on the coordinator shard and only read them here.
pub trait MetricsSource {
    fn collect(&self, out: &mut Exposition);
}

#[derive(Debug, thiserror::Error)]
#[error("at most {MAX_SOURCES} metrics sources may be registered")]
pub struct TooManySources;

/// The request counters of the node's other shards (each shard counts its own connections'
/// requests): the server asks every front door over its channel at scrape time.
pub trait OtherShards {
    fn request_counters(&self) -> Pin<Box<dyn Future<Output = Vec<RequestCounters>> + '_>>;
}

/// Observations per latency bucket of one histogram (not cumulative), the last above every
/// bound.
type Buckets = [u64; LATENCY_BOUNDS_NANOS.len() + 1];

/// A copy of one shard's request counters, in plain numbers that can cross to another shard;
/// a scrape adds up those of every shard.
#[derive(Debug, Clone, Default)]
pub struct RequestCounters {
    /// Per request slot with any request (`op * CONSISTENCY_SLOTS + consistency`): bucket
    /// counts and the sum of latencies in nanoseconds. Sorted by slot.
    latency: Vec<(usize, Buckets, u64)>,
    /// (op, error code, error name, count); at most MAX_ERROR_SERIES.
    errors: Vec<(usize, u16, &'static str, u64)>,
    errors_overflow: u64,
    connections_open: u64,
    connections_accepted: u64,
    connections_refused: u64,
}

impl RequestCounters {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RequestCounters) {
        for (slot, buckets, sum) in &other.latency {
            match self.latency.binary_search_by_key(slot, |(s, _, _)| *s) {
                Ok(i) => {
                    let mine = &mut self.latency[i];
                    mine.1.iter_mut().zip(buckets).for_each(|(a, b)| *a += b);
                    mine.2 = mine.2.saturating_add(*sum);
                }
                Err(i) => self.latency.insert(i, (*slot, *buckets, *sum)),
            }
        }
        for &(op, code, name, count) in &other.errors {
            let room = self.errors.len() < MAX_ERROR_SERIES;
            match self.errors.iter_mut().find(|e| e.0 == op && e.1 == code) {
                Some(e) => e.3 += count,
                None if room => self.errors.push((op, code, name, count)),
                None => self.errors_overflow += count,
            }
        }
        self.errors_overflow += other.errors_overflow;
        self.connections_open += other.connections_open;
        self.connections_accepted += other.connections_accepted;
        self.connections_refused += other.connections_refused;
    }
}

/// What a request is counted under: what it does (`op`: its statement kind), its opcode, and
/// its consistency level, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLabels {
    /// `kind * OPCODE_SLOTS + opcode`.
    op: usize,
    consistency: usize,
}

impl RequestLabels {
    pub fn new(kind: StatementKind, opcode: Opcode, consistency: Option<Consistency>) -> RequestLabels {
        let kind = StatementKind::ALL.iter().position(|&k| k == kind).unwrap_or(KIND_OTHER);
        let opcode = Opcode::ALL.iter().position(|&o| o == opcode).unwrap_or(OPCODE_UNKNOWN);
        RequestLabels {
            op: kind * OPCODE_SLOTS + opcode,
            consistency: consistency
                .and_then(|c| Consistency::ALL.iter().position(|&l| l == c))
                .unwrap_or(CONSISTENCY_NONE),
        }
    }

    /// A frame whose request did not decode far enough to know its kind.
    pub fn unknown() -> RequestLabels {
        RequestLabels { op: KIND_OTHER * OPCODE_SLOTS + OPCODE_UNKNOWN, consistency: CONSISTENCY_NONE }
    }

    /// The labels of a decoded request; `prepared` names the kind of a prepared statement
    /// (the coordinator's `prepared_kind`).
    pub fn of(request: &Request, prepared: impl FnOnce(PreparedId) -> Option<StatementKind>) -> RequestLabels {
        let consistency = match request {
            Request::Query { params, .. } | Request::Execute { params, .. } => Some(params.consistency),
            Request::Batch(batch) => Some(batch.consistency),
            _ => None,
        };
        RequestLabels::new(StatementKind::of_request(request, prepared), request.opcode(), consistency)
    }
}

/// One latency histogram: observations per bucket (not cumulative) and their sum.
#[derive(Default)]
struct Histogram {
    /// `buckets[i]` counts observations in (bound i-1, bound i]; the last one those above
    /// every bound.
    buckets: [Cell<u64>; LATENCY_BOUNDS_NANOS.len() + 1],
    sum_nanos: Cell<u64>,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = &self.buckets[LATENCY_BOUNDS_NANOS.partition_point(|&b| b < nanos)];
        bucket.set(bucket.get() + 1);
        self.sum_nanos.set(self.sum_nanos.get().saturating_add(nanos));
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(Cell::get).sum()
    }
}

/// One (op, error) series of the error counter.
#[derive(Default)]
struct ErrorSeries {
    op: Cell<usize>,
    code: Cell<u16>,
    name: Cell<&'static str>,
    count: Cell<u64>,
}

/// The metrics of one node, owned by its coordinator shard (`Rc`, never sent).
pub struct Metrics {
    /// Indexed `op * CONSISTENCY_SLOTS + consistency`.
    latency: Vec<Histogram>,
    /// Filled in order; a series with a zero count is free.
    errors: Vec<ErrorSeries>,
    errors_overflow: Cell<u64>,
    /// Label values of each opcode slot.
    opcode_names: Vec<String>,
    connections_open: Cell<u64>,
    connections_accepted: Cell<u64>,
    connections_refused: Cell<u64>,
    sources: RefCell<Vec<Rc<dyn MetricsSource>>>,
    /// The other shards' request counters, added to this shard's at scrape time.
    other_shards: Option<Rc<dyn OtherShards>>,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut opcode_names: Vec<String> =
            Opcode::ALL.iter().map(|op| format!("{op:?}").to_ascii_lowercase()).collect();
        opcode_names.push("unknown".to_owned());
        Metrics {
            latency: (0..OP_SLOTS * CONSISTENCY_SLOTS).map(|_| Histogram::default()).collect(),
            errors: (0..MAX_ERROR_SERIES).map(|_| ErrorSeries::default()).collect(),
            errors_overflow: Cell::new(0),
            opcode_names,
            connections_open: Cell::new(0),
            connections_accepted: Cell::new(0),
            connections_refused: Cell::new(0),
            sources: RefCell::new(Vec::new()),
            other_shards: None,
            started: Instant::now(),
        }
    }

    /// The metrics of the shard that serves the scrapes: its own request counters, and at
    /// each scrape those `other_shards` counted.
    pub fn with_other_shards(other_shards: Rc<dyn OtherShards>) -> Metrics {
        Metrics { other_shards: Some(other_shards), ..Metrics::new() }
    }

    /// This shard's request counters, as plain numbers.
    pub fn counters(&self) -> RequestCounters {
        let latency = self
            .latency
            .iter()
            .enumerate()
            .filter(|(_, h)| h.count() > 0)
            .map(|(slot, h)| (slot, std::array::from_fn(|i| h.buckets[i].get()), h.sum_nanos.get()))
            .collect();
        let errors = self
            .errors
            .iter()
            .filter(|s| s.count.get() > 0)
            .map(|s| (s.op.get(), s.code.get(), s.name.get(), s.count.get()))
            .collect();
        RequestCounters {
            latency,
            errors,
            errors_overflow: self.errors_overflow.get(),
            connections_open: self.connections_open.get(),
            connections_accepted: self.connections_accepted.get(),
            connections_refused: self.connections_refused.get(),
        }
    }

    /// Counts one answered request, its latency and, if it failed, its error.
    pub fn record(&self, labels: RequestLabels, elapsed: Duration, response: &Response) {
        self.latency[labels.op * CONSISTENCY_SLOTS + labels.consistency].observe(elapsed);
        if let Response::Error(e) = response {
            self.record_error(labels, &e.code);
        }
    }

    /// Counts an error answered without a request being served (a frame that did not decode).
    pub fn record_error(&self, labels: RequestLabels, code: &ErrorCode) {
        let found =
            self.errors.iter().find(|s| s.count.get() > 0 && s.op.get() == labels.op && s.code.get() == code.code());
        let series = found.or_else(|| self.errors.iter().find(|s| s.count.get() == 0));
        match series {
            Some(s) => {
                if s.count.get() == 0 {
                    s.op.set(labels.op);
                    s.code.set(code.code());
                    s.name.set(code.name());
                }
                s.count.set(s.count.get() + 1);
            }
            None => self.errors_overflow.set(self.errors_overflow.get() + 1),
        }
    }

    pub fn connection_opened(&self) {
        self.connections_open.set(self.connections_open.get() + 1);
        self.connections_accepted.set(self.connections_accepted.get() + 1);
    }

    pub fn connection_closed(&self) {
        self.connections_open.set(self.connections_open.get() - 1);
    }

    /// A connection refused over the connection limit.
    pub fn connection_refused(&self) {
        self.connections_refused.set(self.connections_refused.get() + 1);
    }

    /// Adds a subsystem's metrics to every later scrape. The cluster layer registers its hints
    /// and gossip sources here when the server starts it (src/server/mod.rs holds the `Rc`).
    pub fn register(&self, source: Rc<dyn MetricsSource>) -> Result<(), TooManySources> {
        let mut sources = self.sources.borrow_mut();
        if sources.len() >= MAX_SOURCES {
            return Err(TooManySources);
        }
        sources.push(source);
        Ok(())
    }

    /// The whole scrape answer: this shard's request counters, every shard's counters (asked
    /// through the node) and the registered sources.
    pub async fn scrape(&self, node: &Node) -> Result<String, NodeError> {
        let shards = node.stats().await?;
        let mut requests = self.counters();
        if let Some(others) = &self.other_shards {
            others.request_counters().await.iter().for_each(|c| requests.add(c));
        }
        let mut out = Exposition::new();
        self.render_node(&mut out, shards.len(), node.undecodable_rows());
        self.render_requests(&mut out, &requests);
        let table_name = |id| node.table_by_id(id).map(|t| t.name.clone());
        render_shards(&mut out, &shards, table_name);
        render_tables(&mut out, &node_table_counters(&shards), table_name);
        for source in self.sources.borrow().iter() {
            source.collect(&mut out);
        }
        Ok(out.finish())
    }

    fn render_node(&self, out: &mut Exposition, shards: usize, undecodable_rows: u64) {
        out.family("enigmadb_build_info", Kind::Gauge, "Always 1; the version of the running server.");
        out.sample("enigmadb_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1u8);
        out.family("enigmadb_uptime_seconds", Kind::Gauge, "Seconds since the server started.");
        out.sample("enigmadb_uptime_seconds", &[], self.started.elapsed().as_secs_f64());
        out.family("enigmadb_shards", Kind::Gauge, "Shards of this node (one executor each).");
        out.sample("enigmadb_shards", &[], shards as f64);
        let name = "enigmadb_undecodable_rows_total";
        out.family(name, Kind::Counter, "Stored rows reads skipped because they do not decode under their schema.");
        out.sample(name, &[], undecodable_rows as f64);
    }

    fn render_requests(&self, out: &mut Exposition, counters: &RequestCounters) {
        let seen = || {
            counters.latency.iter().map(|(slot, buckets, sum)| {
                let (op, consistency) = (slot / CONSISTENCY_SLOTS, slot % CONSISTENCY_SLOTS);
                let mut labels = self.op_labels(op);
                if consistency != CONSISTENCY_NONE {
                    labels.push(("consistency", Consistency::ALL[consistency].name()));
                }
                (labels, buckets, *sum)
            })
        };
        out.family(
            "enigmadb_requests_total",
            Kind::Counter,
            "Client requests answered, by statement kind (op), opcode and consistency.",
        );
        for (labels, buckets, _) in seen() {
            out.sample("enigmadb_requests_total", &labels, buckets.iter().sum::<u64>() as f64);
        }
        let name = "enigmadb_request_duration_seconds";
        out.family(name, Kind::Histogram, "Time from reading a request to queueing its answer.");
        let bounds: Vec<f64> = LATENCY_BOUNDS_NANOS.iter().map(|&n| n as f64 / 1e9).collect();
        for (labels, counts, sum) in seen() {
            let buckets: Vec<(f64, u64)> = bounds.iter().copied().zip(counts.iter().copied()).collect();
            let overflow = counts[LATENCY_BOUNDS_NANOS.len()];
            out.histogram(name, &labels, &buckets, overflow, sum as f64 / 1e9);
        }
        out.family(
            "enigmadb_request_errors_total",
            Kind::Counter,
            "Error answers, by statement kind (op), opcode and error.",
        );
        for &(op, _, name, count) in &counters.errors {
            let error = name.replace(' ', "_");
            let mut labels = self.op_labels(op);
            labels.push(("error", error.as_str()));
            out.sample("enigmadb_request_errors_total", &labels, count as f64);
        }
        if counters.errors_overflow > 0 {
            let labels = [("op", "other"), ("opcode", "unknown"), ("error", "other")];
            out.sample("enigmadb_request_errors_total", &labels, counters.errors_overflow as f64);
        }
        let connections: [(&str, Kind, &str, u64); 3] = [
            ("enigmadb_client_connections", Kind::Gauge, "Client connections being served.", counters.connections_open),
            (
                "enigmadb_client_connections_accepted_total",
                Kind::Counter,
                "Client connections accepted.",
                counters.connections_accepted,
            ),
            (
                "enigmadb_client_connections_refused_total",
                Kind::Counter,
                "Client connections refused over max_connections or max_connections_per_address (once the places reserved for admin are taken).",
                counters.connections_refused,
            ),
        ];
        for (name, kind, help, value) in connections {
            out.family(name, kind, help);
            out.sample(name, &[], value as f64);
        }
    }

    /// The `op` and `opcode` labels of a request slot.
    fn op_labels(&self, op: usize) -> Vec<(&'static str, &str)> {
        let (kind, opcode) = (op / OPCODE_SLOTS, op % OPCODE_SLOTS);
        vec![("op", StatementKind::ALL[kind].name()), ("opcode", self.opcode_names[opcode].as_str())]
    }
}

/// A per-shard metric: name, type, help and how to read it from a shard's counters.
type ShardMetric = (&'static str, Kind, &'static str, fn(&ShardStats) -> f64);

const SHARD_METRICS: [ShardMetric; 21] = [
    ("enigmadb_memtable_bytes", Kind::Gauge, "Bytes in the active and immutable MemTables.", |s| {
        s.memtable_bytes as f64
    }),
    ("enigmadb_memtable_partitions", Kind::Gauge, "Partitions in the MemTables.", |s| s.memtable_partitions as f64),
    ("enigmadb_flushes_pending", Kind::Gauge, "Immutable MemTables waiting to be flushed.", |s| {
        s.immutable_memtables as f64
    }),
    ("enigmadb_flushes_total", Kind::Counter, "MemTable flushes completed.", |s| s.flushes as f64),
    ("enigmadb_flush_failing", Kind::Gauge, "1 while the last flush attempt failed (it is retried).", |s| {
        u8::from(s.flush_error.is_some()).into()
    }),
    ("enigmadb_shard_writes_total", Kind::Counter, "Writes applied by the shard.", |s| s.writes as f64),
    (
        "enigmadb_cross_shard_requests_total",
        Kind::Counter,
        "Writes, reads and scans the shard received from another shard (a cross-core hop).",
        |s| s.cross_shard_requests as f64,
    ),
    ("enigmadb_wal_records_total", Kind::Counter, "WAL records appended.", |s| s.wal.records as f64),
    ("enigmadb_wal_payload_bytes_total", Kind::Counter, "WAL record payload bytes appended.", |s| {
        s.wal.payload_bytes as f64
    }),
    (
        "enigmadb_wal_written_bytes_total",
        Kind::Counter,
        "Bytes the WAL wrote to the device (with rewritten partial blocks and padding).",
        |s| s.wal.bytes_written as f64,
    ),
    (
        "enigmadb_wal_syncs_total",
        Kind::Counter,
        "Times the WAL was made durable: fdatasyncs, and in batch mode each write (O_DSYNC).",
        |s| s.wal.syncs as f64,
    ),
    (
        "enigmadb_wal_writebacks_total",
        Kind::Counter,
        "Periodic mode: times the WAL handed a MiB of page-cache writes to writeback early.",
        |s| s.wal.writebacks as f64,
    ),
    ("enigmadb_compactions_pending", Kind::Gauge, "Compactions the strategy would run now.", |s| {
        s.compaction.pending as f64
    }),
    ("enigmadb_compactions_running", Kind::Gauge, "1 while a compaction runs.", |s| {
        u8::from(s.compaction.running).into()
    }),
    ("enigmadb_compactions_total", Kind::Counter, "Compactions published.", |s| s.compaction.completed as f64),
    ("enigmadb_compaction_read_bytes_total", Kind::Counter, "Bytes of SSTables compacted.", |s| {
        s.compaction.bytes_read as f64
    }),
    ("enigmadb_compaction_written_bytes_total", Kind::Counter, "Bytes of SSTables compactions wrote.", |s| {
        s.compaction.bytes_written as f64
    }),
    ("enigmadb_block_cache_hits_total", Kind::Counter, "Block cache hits.", |s| s.cache.hits as f64),
    ("enigmadb_block_cache_misses_total", Kind::Counter, "Block cache misses (blocks read from disk).", |s| {
        s.cache.misses as f64
    }),
    ("enigmadb_block_cache_evictions_total", Kind::Counter, "Blocks evicted from the block cache.", |s| {
        s.cache.evictions as f64
    }),
    ("enigmadb_block_cache_bytes", Kind::Gauge, "Bytes of blocks held by the block cache.", |s| s.cache.bytes as f64),
];

/// A per-table metric: name, help and how to read it from a table's SSTable counts.
type TableMetric = (&'static str, &'static str, fn(&TableSstables) -> f64);

/// Every shard's counters, one series per shard (and per table for SSTables). `table_name`
/// names a table id (a table dropped meanwhile is labelled with its id).
pub fn render_shards(out: &mut Exposition, shards: &[ShardStats], table_name: impl Fn(TableId) -> Option<String>) {
    let shard_labels: Vec<String> = shards.iter().map(|s| s.shard.to_string()).collect();
    for (name, kind, help, read) in SHARD_METRICS {
        out.family(name, kind, help);
        for (s, shard) in shards.iter().zip(&shard_labels) {
            out.sample(name, &[("shard", shard)], read(s));
        }
    }
    let tables: Vec<Vec<String>> = shards
        .iter()
        .map(|s| s.table_sstables.iter().map(|t| table_name(t.table).unwrap_or_else(|| t.table.to_string())).collect())
        .collect();
    let per_table: [TableMetric; 2] = [
        ("enigmadb_sstables", "Live SSTables, per table.", |t| t.sstables as f64),
        ("enigmadb_sstable_bytes", "Bytes of live SSTables, per table.", |t| t.bytes as f64),
    ];
    for (name, help, read) in per_table {
        out.family(name, Kind::Gauge, help);
        for ((s, shard), names) in shards.iter().zip(&shard_labels).zip(&tables) {
            for (t, table) in s.table_sstables.iter().zip(names) {
                out.sample(name, &[("shard", shard), ("table", table)], read(t));
            }
        }
    }
}

/// A per-table counter: name, help and how to read it from a table's node-wide counters.
type TableCounter = (&'static str, &'static str, fn(&TableCounters) -> u64);

const TABLE_COUNTERS: [TableCounter; 4] = [
    ("enigmadb_table_reads_total", "Partition reads served by the shards, per table.", |c| c.reads),
    ("enigmadb_table_range_scans_total", "Token-range scans served by the shards (one per shard scanned).", |c| {
        c.range_scans
    }),
    ("enigmadb_table_writes_total", "Partition updates written by the shards, per table.", |c| c.writes),
    (
        "enigmadb_table_tombstones_scanned_total",
        "Tombstones (cell, row, partition deletions) met by reads and scans, per table.",
        |c| c.tombstones_scanned,
    ),
];

/// A per-table latency summary: name, help and the table's histogram it reports.
type TableLatency = (&'static str, &'static str, fn(&TableCounters) -> &LatencyHistogram);

/// Quantiles the per-table latency summaries report.
const TABLE_QUANTILES: [f64; 2] = [0.5, 0.99];

/// Every table's node-wide counters (`node_table_counters`): read, scan, write and tombstone
/// counts, and local read and write latency summaries (p50, p99), labelled by table.
pub fn render_tables(out: &mut Exposition, tables: &[TableCounters], table_name: impl Fn(TableId) -> Option<String>) {
    let names: Vec<String> =
        tables.iter().map(|t| table_name(t.table).unwrap_or_else(|| t.table.to_string())).collect();
    for (name, help, read) in TABLE_COUNTERS {
        out.family(name, Kind::Counter, help);
        for (t, table) in tables.iter().zip(&names) {
            out.sample(name, &[("table", table)], read(t) as f64);
        }
    }
    let latencies: [TableLatency; 2] = [
        (
            "enigmadb_table_read_latency_seconds",
            "Local partition read latency on the shards, per table (bucket upper bounds, within 25%).",
            |c| &c.read_latency,
        ),
        (
            "enigmadb_table_write_latency_seconds",
            "Local write latency (WAL append and sync) per partition update, per table (within 25%).",
            |c| &c.write_latency,
        ),
    ];
    for (name, help, histogram) in latencies {
        out.family(name, Kind::Summary, help);
        for (t, table) in tables.iter().zip(&names) {
            let h = histogram(t);
            let quantiles: Vec<(f64, f64)> =
                TABLE_QUANTILES.iter().map(|&q| (q, h.quantile(q).map_or(f64::NAN, |d| d.as_secs_f64()))).collect();
            out.summary(name, &[("table", table)], &quantiles, h.sum().as_secs_f64(), h.count());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::protocol::{ErrorResponse, QueryParams};

    fn ok() -> Response {
        Response::Ready { version: 2, shard: 0, shards: 1 }
    }

    #[test]
    fn requests_are_counted_by_op_and_consistency_with_cumulative_buckets() {
        let m = Metrics::new();
        let query =
            Request::Query { text: "SELECT".into(), params: QueryParams::with_consistency(Consistency::Quorum) };
        let labels = RequestLabels::of(&query, |_| None);
        m.record(labels, Duration::from_micros(50), &ok());
        m.record(labels, Duration::from_millis(3), &ok());
        m.record(labels, Duration::from_secs(60), &ok());
        m.record(RequestLabels::of(&Request::Options, |_| None), Duration::from_micros(10), &ok());
        let mut out = Exposition::new();
        m.render_requests(&mut out, &m.counters());
        let scrape = text::parse(&out.finish()).unwrap();
        let read_queries = [("op", "read"), ("opcode", "query"), ("consistency", "QUORUM")];
        assert_eq!(scrape.sum("enigmadb_requests_total", &read_queries), 3.0);
        let options: Vec<_> = scrape.select("enigmadb_requests_total", &[("opcode", "options")]).collect();
        assert_eq!(options.len(), 1);
        assert_eq!(options[0].label("consistency"), None);
        assert_eq!(options[0].label("op"), Some("other"));
        let buckets: Vec<(String, f64)> = scrape
            .select("enigmadb_request_duration_seconds_bucket", &[("op", "read"), ("opcode", "query")])
            .map(|s| (s.label("le").unwrap().to_owned(), s.value))
            .collect();
        assert_eq!(buckets.len(), LATENCY_BOUNDS_NANOS.len() + 1);
        assert_eq!(buckets[0], ("0.0001".to_owned(), 1.0));
        assert_eq!(buckets.iter().find(|(le, _)| le == "0.005").unwrap().1, 2.0);
        assert_eq!(buckets.iter().rev().nth(1).unwrap(), &("10".to_owned(), 2.0));
        assert_eq!(buckets.last().unwrap(), &("+Inf".to_owned(), 3.0));
        let sum = scrape.sum("enigmadb_request_duration_seconds_sum", &[("opcode", "query")]);
        assert!((sum - 60.00305).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn errors_are_counted_by_op_and_kind_and_bounded() {
        let m = Metrics::new();
        let query = RequestLabels::new(StatementKind::Write, Opcode::Query, Some(Consistency::One));
        let error = |code| Response::Error(ErrorResponse { code, message: String::new() });
        m.record(query, Duration::ZERO, &error(ErrorCode::Syntax));
        m.record(query, Duration::ZERO, &error(ErrorCode::Syntax));
        m.record(query, Duration::ZERO, &error(ErrorCode::Overloaded));
        m.record_error(RequestLabels::unknown(), &ErrorCode::Protocol);
        let mut out = Exposition::new();
        m.render_requests(&mut out, &m.counters());
        let scrape = text::parse(&out.finish()).unwrap();
        let errors =
            |opcode, error| scrape.sum("enigmadb_request_errors_total", &[("opcode", opcode), ("error", error)]);
        assert_eq!(errors("query", "syntax_error"), 2.0);
        assert_eq!(errors("query", "overloaded"), 1.0);
        assert_eq!(errors("unknown", "protocol_error"), 1.0);
        assert_eq!(scrape.sum("enigmadb_request_errors_total", &[("op", "write")]), 3.0);
        // More distinct series than the bound: the rest are counted, not dropped.
        let codes = [
            ErrorCode::Server,
            ErrorCode::Protocol,
            ErrorCode::Overloaded,
            ErrorCode::Syntax,
            ErrorCode::Invalid,
            ErrorCode::AlreadyExists,
            ErrorCode::Unavailable { consistency: Consistency::All, required: 3, alive: 1 },
            ErrorCode::WriteTimeout { consistency: Consistency::All, received: 1, required: 3 },
        ];
        assert!(OP_SLOTS * codes.len() > MAX_ERROR_SERIES);
        for op in 0..OP_SLOTS {
            for code in &codes {
                m.record_error(RequestLabels { op, consistency: CONSISTENCY_NONE }, code);
            }
        }
        let mut out = Exposition::new();
        m.render_requests(&mut out, &m.counters());
        let scrape = text::parse(&out.finish()).unwrap();
        assert_eq!(scrape.sum("enigmadb_request_errors_total", &[]), (4 + OP_SLOTS * codes.len()) as f64);
        assert!(scrape.sum("enigmadb_request_errors_total", &[("error", "other")]) > 0.0);
    }

    #[test]
    fn every_shard_has_every_gauge_and_tables_are_named() {
        let shards: Vec<ShardStats> = (0..3u16)
            .map(|shard| ShardStats {
                shard,
                memtable_bytes: 1000 + shard as usize,
                table_sstables: vec![TableSstables { table: 7, sstables: 2, bytes: 4096 }],
                ..ShardStats::default()
            })
            .collect();
        let mut out = Exposition::new();
        render_shards(&mut out, &shards, |id| (id == 7).then(|| "kv".to_owned()));
        let scrape = text::parse(&out.finish()).unwrap();
        for (name, _, _, _) in SHARD_METRICS {
            let mut labels: Vec<_> = scrape.select(name, &[]).map(|s| s.label("shard").unwrap().to_owned()).collect();
            labels.sort();
            assert_eq!(labels, ["0", "1", "2"], "{name}");
        }
        assert_eq!(scrape.sum("enigmadb_memtable_bytes", &[("shard", "2")]), 1002.0);
        assert_eq!(scrape.sum("enigmadb_sstables", &[("table", "kv")]), 6.0);
        assert_eq!(scrape.sum("enigmadb_sstable_bytes", &[("table", "kv"), ("shard", "1")]), 4096.0);
    }

    #[test]
    fn tables_report_counts_and_latency_quantiles_summed_over_shards() {
        let counters = |reads, micros| {
            let mut c = TableCounters { table: 7, reads, writes: 1, tombstones_scanned: 2, ..TableCounters::default() };
            (0..reads).for_each(|_| c.read_latency.record(Duration::from_micros(micros)));
            c
        };
        let shards: Vec<ShardStats> = [(90, 100), (10, 5000)]
            .into_iter()
            .enumerate()
            .map(|(shard, (reads, micros))| ShardStats {
                shard: shard as u16,
                table_counters: vec![counters(reads, micros), TableCounters { table: 9, ..TableCounters::default() }],
                ..ShardStats::default()
            })
            .collect();
        let mut out = Exposition::new();
        render_tables(&mut out, &node_table_counters(&shards), |id| (id == 7).then(|| "kv".to_owned()));
        let scrape = text::parse(&out.finish()).unwrap();
        assert_eq!(scrape.sum("enigmadb_table_reads_total", &[("table", "kv")]), 100.0);
        assert_eq!(scrape.sum("enigmadb_table_writes_total", &[("table", "kv")]), 2.0);
        assert_eq!(scrape.sum("enigmadb_table_tombstones_scanned_total", &[("table", "kv")]), 4.0);
        assert_eq!(scrape.sum("enigmadb_table_reads_total", &[("table", "9")]), 0.0, "unnamed: its id");
        let latency = |q| scrape.sum("enigmadb_table_read_latency_seconds", &[("table", "kv"), ("quantile", q)]);
        assert!((100e-6..125e-6).contains(&latency("0.5")), "{}", latency("0.5"));
        assert!((5e-3..6.25e-3).contains(&latency("0.99")), "{}", latency("0.99"));
        assert_eq!(scrape.sum("enigmadb_table_read_latency_seconds_count", &[("table", "kv")]), 100.0);
        let no_writes = scrape.select("enigmadb_table_write_latency_seconds", &[("table", "9")]).next().unwrap();
        assert!(no_writes.value.is_nan(), "no observation: NaN");
    }

    struct Hints(Cell<u64>);

    impl MetricsSource for Hints {
        fn collect(&self, out: &mut Exposition) {
            out.family("enigmadb_hints_stored_total", Kind::Counter, "Hints stored.");
            out.sample("enigmadb_hints_stored_total", &[], self.0.get() as f64);
        }
    }

    #[test]
    fn registered_sources_are_bounded() {
        let m = Metrics::new();
        for _ in 0..MAX_SOURCES {
            m.register(Rc::new(Hints(Cell::new(3)))).unwrap();
        }
        assert!(m.register(Rc::new(Hints(Cell::new(3)))).is_err());
        let mut out = Exposition::new();
        m.sources.borrow()[0].collect(&mut out);
        assert_eq!(text::parse(&out.finish()).unwrap().sum("enigmadb_hints_stored_total", &[]), 3.0);
    }
}

//! `enigmadb sstable dump|meta|check FILE`: the SSTable inspector, in the spirit of Cassandra's
//! sstabledump. It reads one file through `shards::sstable::inspect` (no executor, no node) and
//! renders what it finds as text or JSON; it never writes to the file or its node directory.
//! Cell values are decoded with the table's schema, found in the node's catalog (`schema.cat`)
//! above the file or under `--data-dir`; without one, keys and values are shown as hex.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value as Json};
use shards::catalog::{Catalog, CATALOG_FILE};
use shards::cell::{Cell, Deletion};
use shards::key::{ClusteringKey, PartitionKey};
use shards::row::Row;
use shards::sstable::format::{Footer, FOOTER_LEN, FORMAT_VERSION};
use shards::sstable::inspect::{Event, InspectedSstable, WalkSummary};
use wire::schema::TableSchema;
use wire::Value;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Args)]
struct Target {
    /// The SSTable file (`DATA_DIR/shard-NNN/sstables/t...-g....sst`).
    file: PathBuf,
    /// Node data directory holding `schema.cat` (default: the nearest directory above FILE
    /// that has one).
    #[arg(long, alias = "schema-dir")]
    data_dir: Option<PathBuf>,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Action {
    /// Print every partition and row: keys, cells with timestamps, TTLs and tombstones.
    Dump(Target),
    /// Print the metadata, the footer and the sizes of the file's sections.
    Meta(Target),
    /// Verify every checksum and ordering invariant; exit 0 with a summary, or non-zero with the
    /// first problem (file, section, offset).
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

pub fn run(args: Args) -> Result<()> {
    let mut out = BufWriter::new(std::io::stdout().lock());
    match args.action {
        Action::Dump(t) => dump(&t, &mut out)?,
        Action::Meta(t) => meta(&t, &mut out)?,
        Action::Check { files } => {
            for file in &files {
                let summary = InspectedSstable::open(file)?.check()?;
                writeln!(
                    out,
                    "{}: OK: {} data blocks, {} partitions, {} rows, {} live cells, {} tombstones",
                    file.display(),
                    summary.data_blocks,
                    summary.partitions,
                    summary.rows,
                    summary.live_cells,
                    summary.tombstones
                )?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Schema lookup and value rendering

/// The table's schema if one was found, and a sentence saying where from or why not.
struct Schema {
    table: Option<TableSchema>,
    note: String,
}

impl Schema {
    fn find(file: &Path, data_dir: Option<&Path>, table: u32) -> Result<Schema> {
        let dir = match data_dir {
            Some(dir) => {
                if !dir.join(CATALOG_FILE).is_file() {
                    bail!("{} has no {CATALOG_FILE}", dir.display());
                }
                Some(dir.to_path_buf())
            }
            None => {
                let absolute = std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))?;
                absolute.ancestors().skip(1).find(|d| d.join(CATALOG_FILE).is_file()).map(Path::to_path_buf)
            }
        };
        let Some(dir) = dir else {
            let note = format!("no {CATALOG_FILE} above the file (use --data-dir): keys and values shown as hex");
            return Ok(Schema { table: None, note });
        };
        let catalog_path = dir.join(CATALOG_FILE);
        let catalog = match Catalog::load(&dir) {
            Ok(c) => c,
            Err(e) => {
                let note = format!("{} unreadable ({e}): keys and values shown as hex", catalog_path.display());
                return Ok(Schema { table: None, note });
            }
        };
        match catalog.tables().iter().find(|t| t.id == table) {
            Some(t) => Ok(Schema { table: Some(t.clone()), note: format!("schema from {}", catalog_path.display()) }),
            None => Ok(Schema {
                table: None,
                note: format!("table {table} is not in {}: keys and values shown as hex", catalog_path.display()),
            }),
        }
    }

    fn partition_key(&self, key: &PartitionKey) -> Vec<Shown> {
        match self.table.as_ref().and_then(|t| key.to_values(t).ok()) {
            Some(values) => values.into_iter().map(Shown::Typed).collect(),
            None => vec![Shown::Raw(key.bytes().to_vec())],
        }
    }

    fn clustering(&self, key: &ClusteringKey) -> Vec<Shown> {
        if key.as_bytes().is_empty() {
            return Vec::new();
        }
        match self.table.as_ref().and_then(|t| key.to_values(t).ok()) {
            Some(values) => values.into_iter().map(Shown::Typed).collect(),
            None => vec![Shown::Raw(key.as_bytes().to_vec())],
        }
    }

    fn column_name(&self, id: u16) -> String {
        match self.table.as_ref().and_then(|t| t.columns.get(usize::from(id))) {
            Some(def) => def.name.clone(),
            None => format!("#{id}"),
        }
    }

    fn cell_value(&self, id: u16, bytes: &[u8]) -> Shown {
        let def = self.table.as_ref().and_then(|t| t.columns.get(usize::from(id)));
        match def.and_then(|d| Value::from_bytes(d.ty, bytes).ok()) {
            Some(v) => Shown::Typed(v),
            None => Shown::Raw(bytes.to_vec()),
        }
    }
}

/// A key component or cell value: decoded under the schema, or raw bytes.
enum Shown {
    Typed(Value),
    Raw(Vec<u8>),
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Shown {
    fn text(&self) -> String {
        match self {
            Shown::Typed(v) => v.to_string(),
            Shown::Raw(b) => hex(b),
        }
    }

    fn json(&self) -> Json {
        match self {
            Shown::Typed(Value::Text(s)) => json!(s),
            Shown::Typed(Value::Int(v)) => json!(v),
            Shown::Typed(Value::BigInt(v) | Value::Timestamp(v)) => json!(v),
            Shown::Typed(Value::Boolean(v)) => json!(v),
            // NaN and infinities are not JSON numbers: serde_json renders them as null, so they
            // are given as text.
            Shown::Typed(Value::Double(v)) if v.is_finite() => json!(v),
            Shown::Typed(v @ Value::Double(_)) => json!(v.to_string()),
            Shown::Typed(Value::Blob(b)) | Shown::Raw(b) => json!(hex(b)),
        }
    }
}

fn joined(values: &[Shown]) -> String {
    values.iter().map(Shown::text).collect::<Vec<_>>().join(":")
}

fn json_list(values: &[Shown]) -> Json {
    Json::Array(values.iter().map(Shown::json).collect())
}

fn deletion_text(d: &Deletion) -> String {
    format!("[ts={} local_delete_time={}]", d.ts, d.deleted_at)
}

fn deletion_json(d: &Deletion) -> Json {
    json!({ "marked_deleted": d.ts, "local_delete_time": d.deleted_at })
}

// ---------------------------------------------------------------------------------------------
// dump

fn dump(t: &Target, out: &mut impl Write) -> Result<()> {
    let sst = InspectedSstable::open(&t.file)?;
    let schema = Schema::find(&t.file, t.data_dir.as_deref(), sst.meta().table)?;
    let table_name = schema.table.as_ref().map(|s| s.name.clone());
    if t.json {
        let head = json!({
            "file": t.file.display().to_string(),
            "table": { "id": sst.meta().table, "name": table_name, "schema": schema.note },
        });
        // `{"file":..,"table":..` then the streamed partitions, then the summary.
        let head = serde_json::to_string(&head)?;
        write!(out, "{},\"partitions\":[", &head[..head.len() - 1])?;
        let mut partitions = 0u64;
        let mut rows_in_partition = 0u64;
        let summary = sst.walk(|event| {
            match event {
                Event::Partition { key, deletion, position, block } => {
                    if partitions > 0 {
                        out.write_all(b"]},\n")?;
                    }
                    partitions += 1;
                    rows_in_partition = 0;
                    let mut p = json!({
                        "key": json_list(&schema.partition_key(key)),
                        "token": key.token(),
                        "position": position,
                        "block": block,
                    });
                    if let Some(d) = deletion {
                        p["deletion_info"] = deletion_json(d);
                    }
                    write!(out, "{{\"partition\":{},\"rows\":[", serde_json::to_string(&p)?)?;
                }
                Event::Row { clustering, row, .. } => {
                    if rows_in_partition > 0 {
                        out.write_all(b",")?;
                    }
                    rows_in_partition += 1;
                    serde_json::to_writer(&mut *out, &row_json(&schema, clustering, row))?;
                }
            }
            Ok(())
        })?;
        if partitions > 0 {
            out.write_all(b"]}")?;
        }
        writeln!(out, "],\"summary\":{}}}", summary_json(&summary))?;
    } else {
        let name = table_name.map_or(String::new(), |n| format!(" '{n}'"));
        writeln!(out, "# {}: table {}{name} ({})", t.file.display(), sst.meta().table, schema.note)?;
        let summary = sst.walk(|event| {
            match event {
                Event::Partition { key, deletion, position, block } => {
                    let deletion = deletion.map_or(String::new(), |d| format!(" deletion={}", deletion_text(&d)));
                    writeln!(
                        out,
                        "[{}]@{position} Partition[token={} block={block}{deletion}]",
                        joined(&schema.partition_key(key)),
                        key.token()
                    )?;
                }
                Event::Row { key, clustering, row } => {
                    writeln!(out, "[{}] {}", joined(&schema.partition_key(key)), row_text(&schema, clustering, row))?;
                }
            }
            Ok(())
        })?;
        writeln!(
            out,
            "# {} partitions, {} rows, {} live cells ({} expiring), {} tombstones",
            summary.partitions, summary.rows, summary.live_cells, summary.expiring_cells, summary.tombstones
        )?;
    }
    Ok(())
}

/// sstabledump -d style: `Row[info=[ts=..] del=[..]]: clustering | [col=value ts=..], ...`.
fn row_text(schema: &Schema, clustering: &ClusteringKey, row: &Row) -> String {
    let mut info = Vec::new();
    if let Some(marker) = &row.marker {
        info.push(format!("info={}", liveness_text(marker)));
    }
    if let Some(d) = &row.deletion {
        info.push(format!("del={}", deletion_text(d)));
    }
    let cells: Vec<String> = row
        .cells
        .iter()
        .map(|(id, cell)| {
            let name = schema.column_name(*id);
            match cell {
                Cell::Live { ts, value } => format!("[{name}={} ts={ts}]", schema.cell_value(*id, value).text()),
                Cell::Expiring { ts, value, ttl, expires_at } => format!(
                    "[{name}={} ts={ts} ttl={ttl} expires_at={expires_at}]",
                    schema.cell_value(*id, value).text()
                ),
                Cell::Tombstone { ts, deleted_at } => {
                    format!("[{name}=<tombstone> ts={ts} local_delete_time={deleted_at}]")
                }
            }
        })
        .collect();
    format!("Row[{}]: {} | {}", info.join(" "), joined(&schema.clustering(clustering)), cells.join(", "))
}

fn liveness_text(marker: &Cell) -> String {
    match marker {
        Cell::Live { ts, .. } => format!("[ts={ts}]"),
        Cell::Expiring { ts, ttl, expires_at, .. } => format!("[ts={ts} ttl={ttl} expires_at={expires_at}]"),
        Cell::Tombstone { ts, deleted_at } => format!("[ts={ts} local_delete_time={deleted_at} (tombstone)]"),
    }
}

/// sstabledump's JSON shape: `type`, `clustering`, `liveness_info`, `deletion_info`, `cells`.
fn row_json(schema: &Schema, clustering: &ClusteringKey, row: &Row) -> Json {
    let mut r = json!({ "type": "row", "clustering": json_list(&schema.clustering(clustering)) });
    if let Some(marker) = &row.marker {
        r["liveness_info"] = cell_times_json(marker);
    }
    if let Some(d) = &row.deletion {
        r["deletion_info"] = deletion_json(d);
    }
    let cells: Vec<Json> = row
        .cells
        .iter()
        .map(|(id, cell)| {
            let mut c = cell_times_json(cell);
            c["name"] = json!(schema.column_name(*id));
            if let Cell::Live { value, .. } | Cell::Expiring { value, .. } = cell {
                c["value"] = schema.cell_value(*id, value).json();
            }
            c
        })
        .collect();
    r["cells"] = Json::Array(cells);
    r
}

/// `tstamp`, and `ttl`/`expires_at` or `deletion_info` by the kind of cell.
fn cell_times_json(cell: &Cell) -> Json {
    match cell {
        Cell::Live { ts, .. } => json!({ "tstamp": ts }),
        Cell::Expiring { ts, ttl, expires_at, .. } => json!({ "tstamp": ts, "ttl": ttl, "expires_at": expires_at }),
        Cell::Tombstone { ts, deleted_at } => {
            json!({ "tstamp": ts, "deletion_info": { "local_delete_time": deleted_at } })
        }
    }
}

fn summary_json(s: &WalkSummary) -> Json {
    json!({
        "data_blocks": s.data_blocks,
        "partitions": s.partitions,
        "rows": s.rows,
        "live_cells": s.live_cells,
        "expiring_cells": s.expiring_cells,
        "tombstones": s.tombstones,
    })
}

// ---------------------------------------------------------------------------------------------
// meta

fn meta(t: &Target, out: &mut impl Write) -> Result<()> {
    let sst = InspectedSstable::open(&t.file)?;
    let schema = Schema::find(&t.file, t.data_dir.as_deref(), sst.meta().table)?;
    let m = sst.meta();
    let f = sst.footer();
    let bloom = sst.bloom();
    let doc = json!({
        "file": t.file.display().to_string(),
        "file_size": sst.file_size(),
        "format_version": FORMAT_VERSION,
        "table": { "id": m.table, "name": schema.table.as_ref().map(|s| s.name.clone()), "schema": schema.note },
        "shard": m.shard,
        "generation": m.generation,
        "created_at_us": m.created_at,
        "min_token": m.min_token,
        "max_token": m.max_token,
        "first_key": json_list(&schema.partition_key(&m.first_key)),
        "last_key": json_list(&schema.partition_key(&m.last_key)),
        "min_timestamp": m.min_timestamp,
        "max_timestamp": m.max_timestamp,
        "max_deletion_time": m.max_deletion_time,
        "partitions": m.partitions,
        "rows": m.rows,
        "live_cells": m.live_cells,
        "expiring_cells": m.expiring_cells,
        "tombstones": m.tombstones,
        "data": { "offset": 0, "length": f.data_end, "blocks": m.data_blocks },
        "index": { "offset": f.index.offset, "length": f.index.len, "entries": sst.index().len() },
        "bloom": { "offset": f.bloom.offset, "length": f.bloom.len, "bits": bloom.bit_count(), "hashes": bloom.hash_count() },
        "metadata": { "offset": f.meta.offset, "length": f.meta.len },
        "footer": { "offset": Footer::position(sst.file_size()), "length": FOOTER_LEN },
    });
    if t.json {
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    let name = schema.table.as_ref().map_or(String::new(), |s| format!(" '{}'", s.name));
    writeln!(out, "SSTable: {}", t.file.display())?;
    writeln!(out, "Format version: {FORMAT_VERSION}, file size: {} bytes", sst.file_size())?;
    writeln!(out, "Table: {}{name} ({}), shard {}, generation {}", m.table, schema.note, m.shard, m.generation)?;
    writeln!(out, "Created at: {} us since the epoch", m.created_at)?;
    writeln!(out, "First key: {} (token {})", joined(&schema.partition_key(&m.first_key)), m.min_token)?;
    writeln!(out, "Last key: {} (token {})", joined(&schema.partition_key(&m.last_key)), m.max_token)?;
    writeln!(out, "Timestamps: min {}, max {}", m.min_timestamp, m.max_timestamp)?;
    writeln!(out, "Max local deletion time: {}", m.max_deletion_time)?;
    writeln!(
        out,
        "Counts: {} partitions, {} rows, {} live cells ({} expiring), {} tombstones",
        m.partitions, m.rows, m.live_cells, m.expiring_cells, m.tombstones
    )?;
    writeln!(out, "Sections:")?;
    writeln!(out, "  data blocks  offset 0, {} bytes, {} blocks", f.data_end, m.data_blocks)?;
    writeln!(out, "  index        offset {}, {} bytes, {} entries", f.index.offset, f.index.len, sst.index().len())?;
    writeln!(
        out,
        "  bloom        offset {}, {} bytes, {} bits, {} hashes",
        f.bloom.offset,
        f.bloom.len,
        bloom.bit_count(),
        bloom.hash_count()
    )?;
    writeln!(out, "  metadata     offset {}, {} bytes", f.meta.offset, f.meta.len)?;
    writeln!(out, "  footer       offset {}, {} bytes", Footer::position(sst.file_size()), FOOTER_LEN)?;
    Ok(())
}

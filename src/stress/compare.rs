//! `enigmadb stress compare`: puts the reports of a suite side by side (stores as columns, runs
//! as rows) in one JSON file, a Markdown table and an SVG chart of the surge runs (throughput
//! and p99 per second). It only reads reports; it never measures or judges a figure beyond
//! the ratio it prints.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use plotters::prelude::*;
use serde::Serialize;

use super::report::{Report, Summary, REPORT_VERSION};
use super::stats::ms;
use super::target::TargetKind;

/// Size of the chart, in pixels.
const CHART_SIZE: (u32, u32) = (1200, 800);

/// The stores in column order.
const TARGETS: [TargetKind; 2] = [TargetKind::Enigmadb, TargetKind::Redis];

#[derive(clap::Args)]
pub struct Args {
    /// The suite's name: outputs are OUT_DIR/DATE-NAME.{json,md,svg}.
    #[arg(long)]
    name: String,
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
    /// Date in the file names (e.g. `date -u +%F`).
    #[arg(long)]
    date: String,
    /// A line for the notes (repeatable).
    #[arg(long)]
    note: Vec<String>,
    /// Stress reports (`--report` files), in the order their runs should appear.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
}

/// The combined file.
#[derive(Serialize)]
struct Suite<'a> {
    name: &'a str,
    date: &'a str,
    /// Lines about the machine and the run, from the script (`--note`).
    notes: &'a [String],
    /// The table: per run label, each store's summary.
    table: Vec<TableRow<'a>>,
    chart: Option<String>,
    runs: &'a [Report],
}

/// One run label and its report per store.
struct Row<'a> {
    label: &'a str,
    by_target: BTreeMap<&'static str, &'a Report>,
}

#[derive(Serialize)]
struct TableRow<'a> {
    label: &'a str,
    by_target: BTreeMap<&'static str, &'a Summary>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let reports = args.reports.iter().map(|path| read_report(path)).collect::<anyhow::Result<Vec<_>>>()?;
    let table = rows(&reports)?;
    let date = args.date.clone();
    let stem = args.out_dir.join(format!("{date}-{}", args.name));
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    let surges: Vec<&Report> = reports.iter().filter(|r| r.command == "surge").collect();
    let chart = match surges.is_empty() {
        true => None,
        false => {
            let path = stem.with_extension("svg");
            draw_chart(&path, &surges)?;
            Some(path)
        }
    };
    let chart_name = chart.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let markdown = markdown(&args, &date, &reports, &table, chart_name.as_deref());
    let md_path = stem.with_extension("md");
    std::fs::write(&md_path, &markdown).with_context(|| format!("writing {}", md_path.display()))?;
    let suite = Suite {
        name: &args.name,
        date: &date,
        notes: &args.note,
        table: (table.iter())
            .map(|row| TableRow {
                label: row.label,
                by_target: row.by_target.iter().map(|(t, r)| (*t, &r.summary)).collect(),
            })
            .collect(),
        chart: chart_name,
        runs: &reports,
    };
    let json_path = stem.with_extension("json");
    super::write_json(&json_path, &suite)?;
    print!("{markdown}");
    println!(
        "\nwrote {}, {}{}",
        json_path.display(),
        md_path.display(),
        chart.map_or(String::new(), |p| format!(", {}", p.display()))
    );
    Ok(())
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let version: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    match version.get("report_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(REPORT_VERSION) => {}
        other => {
            bail!("{}: not a stress report of version {REPORT_VERSION} (report_version {other:?})", path.display())
        }
    }
    serde_json::from_value(version).with_context(|| format!("{}: malformed stress report", path.display()))
}

/// One row per label, in order of first appearance; each store at most once per label.
fn rows(reports: &[Report]) -> anyhow::Result<Vec<Row<'_>>> {
    let mut rows: Vec<Row<'_>> = Vec::new();
    for report in reports {
        let row = match rows.iter_mut().position(|r| r.label == report.label) {
            Some(i) => &mut rows[i],
            None => {
                rows.push(Row { label: &report.label, by_target: BTreeMap::new() });
                rows.last_mut().ok_or_else(|| anyhow!("a row was just added"))?
            }
        };
        if row.by_target.insert(report.target.name(), report).is_some() {
            bail!("two {} reports are labelled '{}'", report.target.name(), report.label);
        }
    }
    Ok(rows)
}

/// What a run did, in a few words: `write, sequential keys of 1,000,000, 100 B values, 64 in
/// flight on 4 connections, max`.
fn shape(r: &Report) -> String {
    let s = &r.settings;
    let rates: Vec<&str> = s.phases.iter().map(|p| p.rate.as_str()).collect();
    let length = match (s.operations, s.duration_s) {
        (Some(n), _) => format!("{n} ops"),
        (None, Some(d)) => format!("{d:.0} s"),
        (None, None) => String::new(),
    };
    let consistency = match r.target {
        TargetKind::Enigmadb => format!(", {}", s.consistency),
        TargetKind::Redis => String::new(),
    };
    let reads = match r.command.as_str() {
        "mixed" => format!(" {}% reads", s.read_percent),
        _ => String::new(),
    };
    format!(
        "{}{reads}, {} keys of {}, {} B, {} in flight / {} conn, {length}, rate {}{consistency}",
        r.command,
        format!("{:?}", s.distribution).to_lowercase(),
        s.population,
        s.value_size,
        s.concurrency,
        s.connections,
        rates.join("/"),
    )
}

fn markdown(args: &Args, date: &str, reports: &[Report], table: &[Row<'_>], chart: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Stress suite `{}` ({date})\n", args.name);
    let mut builds: Vec<&str> = reports.iter().map(|r| r.build.as_str()).collect();
    builds.dedup();
    let _ = writeln!(out, "Stress tool build: {}.", builds.join(", "));
    let servers: BTreeSet<String> =
        reports.iter().map(|r| format!("{} ({})", r.server.version, r.server.version_source)).collect();
    let servers: Vec<String> = servers.into_iter().collect();
    let _ = writeln!(out, "Servers: {}.\n", servers.join("; "));
    let _ = writeln!(
        out,
        "Latency is from each operation's intended send time to its answer (coordinated omission \
         corrected), in ms; ops/s counts every finished operation (errors included) over the run.\n"
    );
    let mut header = "| run | shape |".to_owned();
    let mut rule = "| --- | --- |".to_owned();
    for t in TARGETS {
        let _ = write!(header, " {0} ops/s | {0} p50 | {0} p99 | {0} p99.9 | {0} max | {0} errors |", t.name());
        rule.push_str(" ---: | ---: | ---: | ---: | ---: | ---: |");
    }
    header.push_str(" enigmadb / redis |");
    rule.push_str(" ---: |");
    let _ = writeln!(out, "{header}\n{rule}");
    for row in table {
        let any = row.by_target.values().next().map_or(String::new(), |r| shape(r));
        let mut line = format!("| {} | {any} |", row.label);
        for t in TARGETS {
            match row.by_target.get(t.name()) {
                Some(r) => {
                    let s = &r.summary;
                    let l = &s.latency_us;
                    let errors: u64 = s.errors.values().sum();
                    let _ = write!(
                        line,
                        " {:.0} | {} | {} | {} | {} | {} |",
                        s.ops_per_s,
                        ms(l.p50),
                        ms(l.p99),
                        ms(l.p999),
                        ms(l.max),
                        errors
                    );
                }
                None => line.push_str(" - | - | - | - | - | - |"),
            }
        }
        let ratio = match (row.by_target.get("enigmadb"), row.by_target.get("redis")) {
            (Some(e), Some(r)) if r.summary.ops_per_s > 0.0 => {
                format!("{:.2}x", e.summary.ops_per_s / r.summary.ops_per_s)
            }
            _ => "-".into(),
        };
        let _ = writeln!(out, "{line} {ratio} |");
    }
    for row in table.iter().filter(|row| row.by_target.values().any(|r| !r.steps.is_empty())) {
        let _ = writeln!(out, "\nSteps of `{}` (ops/s and latency in ms per step):\n", row.label);
        let mut header = "| step | target ops/s |".to_owned();
        let mut rule = "| ---: | ---: |".to_owned();
        for t in TARGETS.iter().filter(|t| row.by_target.contains_key(t.name())) {
            let _ = write!(header, " {0} ops/s | {0} p50 | {0} p99 | {0} p99.9 | {0} max |", t.name());
            rule.push_str(" ---: | ---: | ---: | ---: | ---: |");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        let steps = row.by_target.values().map(|r| r.steps.len()).max().unwrap_or(0);
        for i in 0..steps {
            let rate = row.by_target.values().find_map(|r| r.steps.get(i)).map_or("?", |s| s.rate.as_str());
            let mut line = format!("| {} | {rate} |", i + 1);
            for t in TARGETS.iter().filter(|t| row.by_target.contains_key(t.name())) {
                match row.by_target.get(t.name()).and_then(|r| r.steps.get(i)) {
                    Some(s) => {
                        let l = &s.latency_us;
                        let ops = s.ops_per_s;
                        let _ = write!(
                            line,
                            " {ops:.0} | {} | {} | {} | {} |",
                            ms(l.p50),
                            ms(l.p99),
                            ms(l.p999),
                            ms(l.max)
                        );
                    }
                    None => line.push_str(" - | - | - | - | - |"),
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }
    if let Some(chart) = chart {
        let _ = writeln!(out, "\nChart of the surge runs (ops/s and p99 per second): [{chart}]({chart})");
    }
    if !args.note.is_empty() {
        let _ = writeln!(out, "\nNotes:\n");
        for note in &args.note {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

fn color(t: TargetKind) -> RGBColor {
    match t {
        TargetKind::Enigmadb => RGBColor(31, 119, 180),
        TargetKind::Redis => RGBColor(214, 39, 40),
    }
}

/// Throughput (top) and p99 latency on a log scale (bottom) per second of each surge run.
fn draw_chart(path: &Path, surges: &[&Report]) -> anyhow::Result<()> {
    let plot_error = |e: &dyn std::fmt::Debug| anyhow!("drawing {}: {e:?}", path.display());
    let max_t = surges.iter().flat_map(|r| r.series.iter().map(|s| s.t)).fold(1.0, f64::max);
    let max_ops = surges
        .iter()
        .flat_map(|r| r.series.iter().map(|s| s.ops_per_s.max(s.target_rate.unwrap_or(0.0))))
        .fold(1.0, f64::max);
    let max_ms = surges.iter().flat_map(|r| r.series.iter().map(|s| s.p99_us as f64 / 1e3)).fold(1.0, f64::max);
    let root = SVGBackend::new(path, CHART_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_error(&e))?;
    let (top, bottom) = root.split_vertically(CHART_SIZE.1 / 2);

    let mut ops = ChartBuilder::on(&top)
        .caption("surge: operations per second", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_t, 0.0..max_ops * 1.1)
        .map_err(|e| plot_error(&e))?;
    ops.configure_mesh().x_desc("seconds").y_desc("ops/s").draw().map_err(|e| plot_error(&e))?;
    let mut target_drawn = false;
    for r in surges {
        let c = color(r.target);
        ops.draw_series(LineSeries::new(r.series.iter().map(|s| (s.t, s.ops_per_s)), c.stroke_width(2)))
            .map_err(|e| plot_error(&e))?
            .label(format!("{} ({})", r.target.name(), r.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        if !target_drawn {
            target_drawn = true;
            let target = r.series.iter().filter_map(|s| s.target_rate.map(|rate| (s.t, rate)));
            ops.draw_series(target.map(|p| Circle::new(p, 2, BLACK.filled())))
                .map_err(|e| plot_error(&e))?
                .label("target rate (max steps: none)")
                .legend(|(x, y)| Circle::new((x + 10, y), 2, BLACK.filled()));
        }
    }
    ops.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(&e))?;

    let mut p99 = ChartBuilder::on(&bottom)
        .caption("surge: p99 latency per second (ms, log scale; from intended send time)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_t, (0.01..max_ms * 2.0).log_scale())
        .map_err(|e| plot_error(&e))?;
    p99.configure_mesh().x_desc("seconds").y_desc("p99 ms").draw().map_err(|e| plot_error(&e))?;
    for r in surges {
        let c = color(r.target);
        let points = r.series.iter().map(|s| (s.t, (s.p99_us as f64 / 1e3).max(0.01)));
        p99.draw_series(LineSeries::new(points, c.stroke_width(2)))
            .map_err(|e| plot_error(&e))?
            .label(format!("{} ({})", r.target.name(), r.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    p99.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_error(&e))?;
    root.present().map_err(|e| plot_error(&e))?;
    Ok(())
}

//! The JSON report of one stress run (`--report FILE`) and the lines printed while it runs and
//! at its end. The report holds the exact settings, the server's version, the totals with
//! HdrHistogram percentiles, one summary per step and one point per second; `compare` reads it
//! back. Nothing here measures: it only shapes what the run counted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::{ms, per_second, Percentiles, Tally};
use super::target::TargetKind;
use super::workload::Distribution;

/// The report's layout version; `compare` refuses others.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub report_version: u32,
    /// `enigmadb stress <command>` and the tool's own version.
    pub tool: String,
    pub command: String,
    /// The run's name in comparisons (`--label`, default the command).
    pub label: String,
    pub target: TargetKind,
    pub server: ServerInfo,
    pub settings: Settings,
    /// "release" or "debug": numbers from a debug build of the tool are not worth comparing.
    pub build: String,
    pub summary: Summary,
    pub steps: Vec<StepSummary>,
    pub series: Vec<Second>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub version: String,
    /// How the version was learnt.
    pub version_source: String,
    pub hosts: Vec<String>,
}

/// Every setting that shapes the run, as it ran (defaults filled in).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub target: TargetKind,
    pub hosts: Vec<String>,
    pub consistency: String,
    /// EnigmaDB runs sent each operation to the shard owning its partition (`--shard-aware`);
    /// absent from reports older than the flag, which were not.
    #[serde(default)]
    pub shard_aware: bool,
    pub operations: Option<u64>,
    pub duration_s: Option<f64>,
    pub concurrency: usize,
    pub connections: usize,
    pub population: u64,
    pub distribution: Distribution,
    pub read_percent: u8,
    pub value_size: usize,
    pub rows_per_partition: u64,
    /// The plan: each phase's start and end (seconds since the start) and rate ("max" or ops/s).
    pub phases: Vec<PhaseSetting>,
    pub seed: u64,
    pub table: String,
    pub replication_factor: u8,
    pub create_table: bool,
    pub fail_fast: bool,
    pub timeout_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseSetting {
    pub start_s: f64,
    pub end_s: Option<f64>,
    pub rate: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// From the first send to the last answer.
    pub seconds: f64,
    /// Operations finished: ok + missing + errors.
    pub operations: u64,
    pub ok: u64,
    /// Reads of keys that were not there.
    pub missing: u64,
    pub errors: BTreeMap<String, u64>,
    pub ops_per_s: f64,
    /// From the intended send time to the answer (coordinated omission corrected), us.
    pub latency_us: Percentiles,
    /// From the intended send time to the actual send: the client's own lateness, us.
    pub send_lag_us: Percentiles,
    /// A fail-fast run stopped at this error.
    pub stopped_by: Option<String>,
    /// Where a shard-aware run's requests went; `None` for runs that do not route.
    #[serde(default)]
    pub shard_aware: Option<Routed>,
}

/// How many requests a shard-aware run sent to the shard owning their partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routed {
    /// Every request sent.
    pub requests: u64,
    /// Sent on a connection of the (node, shard) owning the partition, whose READY named that
    /// shard.
    pub to_owner: u64,
}

impl Summary {
    pub fn of(tally: &Tally, seconds: f64, stopped_by: Option<String>) -> Summary {
        Summary {
            seconds,
            operations: tally.operations(),
            ok: tally.ok,
            missing: tally.missing,
            errors: tally.errors.clone(),
            ops_per_s: per_second(tally.operations(), seconds),
            latency_us: Percentiles::of(&tally.latency),
            send_lag_us: Percentiles::of(&tally.send_lag),
            stopped_by,
            shard_aware: (tally.routed > 0)
                .then_some(Routed { requests: tally.routed, to_owner: tally.routed_to_owner }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSummary {
    pub step: usize,
    pub rate: String,
    pub start_s: f64,
    pub end_s: f64,
    pub operations: u64,
    pub ops_per_s: f64,
    pub errors: BTreeMap<String, u64>,
    pub latency_us: Percentiles,
}

/// One second of the run (answers counted in the second they arrived).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Second {
    /// End of the interval, seconds since the start.
    pub t: f64,
    /// The step (phase of the plan, from 1) in force at the middle of the interval; `None`
    /// after the plan's end (answers to the last requests).
    pub step: Option<usize>,
    /// Target rate in force (`None`: max, or after the plan).
    pub target_rate: Option<f64>,
    pub operations: u64,
    pub ops_per_s: f64,
    pub errors: BTreeMap<String, u64>,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Second {
    pub fn of(tally: &Tally, t: f64, seconds: f64, step: Option<usize>, target_rate: Option<f64>) -> Second {
        let p = Percentiles::of(&tally.latency);
        Second {
            t,
            step,
            target_rate,
            operations: tally.operations(),
            ops_per_s: per_second(tally.operations(), seconds),
            errors: tally.errors.clone(),
            p50_us: p.p50,
            p99_us: p.p99,
            p999_us: p.p999,
            max_us: p.max,
        }
    }

    /// The progress line printed for this second.
    pub fn line(&self) -> String {
        let target = match (self.step, self.target_rate) {
            (_, Some(rate)) => format!("{rate:.0}"),
            (Some(_), None) => "max".to_owned(),
            (None, None) => "-".to_owned(),
        };
        format!(
            "{:>6.1}s  ops/s {:>9.0} (target {:>9})  p50 {:>6} ms  p99 {:>6} ms  p999 {:>6} ms  max {:>6} ms{}",
            self.t,
            self.ops_per_s,
            target,
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            errors_text(&self.errors),
        )
    }
}

impl Routed {
    /// The summary's line.
    pub fn line(&self) -> String {
        format!("  shard-aware: {} of {} requests sent to their owning shard", self.to_owner, self.requests)
    }
}

/// `"  errors: 3 write timeout, 1 overloaded"`, or nothing without errors.
pub fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let list: Vec<String> = errors.iter().map(|(kind, n)| format!("{n} {kind}")).collect();
    format!("  errors: {}", list.join(", "))
}

/// The summary printed at the end of a run.
pub fn print_summary(report: &Report) {
    let s = &report.summary;
    let l = &s.latency_us;
    println!();
    println!(
        "{} {} against {} ({}), seed {}",
        report.tool,
        report.command,
        report.server.version,
        report.target.name(),
        report.settings.seed
    );
    println!(
        "  {} operations in {:.1} s: {:.0} ops/s ({} ok, {} missing, {} errors)",
        s.operations,
        s.seconds,
        s.ops_per_s,
        s.ok,
        s.missing,
        s.errors.values().sum::<u64>(),
    );
    println!(
        "  latency (from intended send) ms: mean {} p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {}",
        ms(l.mean as u64),
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.p9999),
        ms(l.max)
    );
    println!(
        "  client send lag ms: p50 {} p99 {} max {}",
        ms(s.send_lag_us.p50),
        ms(s.send_lag_us.p99),
        ms(s.send_lag_us.max)
    );
    if let Some(routed) = &s.shard_aware {
        println!("{}", routed.line());
    }
    if !s.errors.is_empty() {
        println!("{}", errors_text(&s.errors));
    }
    for step in &report.steps {
        println!(
            "  step {} ({} ops/s target, {:.0}-{:.0} s): {:.0} ops/s, p50 {} p99 {} p99.9 {} max {} ms{}",
            step.step,
            step.rate,
            step.start_s,
            step.end_s,
            step.ops_per_s,
            ms(step.latency_us.p50),
            ms(step.latency_us.p99),
            ms(step.latency_us.p999),
            ms(step.latency_us.max),
            errors_text(&step.errors),
        );
    }
    if let Some(error) = &s.stopped_by {
        println!("  stopped early (--fail-fast) at: {error}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_second_reports_its_rate_and_errors() {
        let mut t = Tally { ok: 900, ..Tally::default() };
        t.error("write timeout", 100);
        t.answered(Duration::from_micros(500));
        let s = Second::of(&t, 2.0, 0.5, Some(1), Some(2000.0));
        assert_eq!((s.operations, s.ops_per_s), (1000, 2000.0));
        let line = s.line();
        assert!(line.contains("ops/s      2000") && line.contains("100 write timeout"), "{line}");
        assert!(line.contains("p50   0.50 ms"), "{line}");
    }

    #[test]
    fn routing_is_summed_only_for_runs_that_route() {
        let mut t = Tally { ok: 3, ..Tally::default() };
        assert_eq!(Summary::of(&t, 1.0, None).shard_aware, None);
        (0..3).for_each(|i| t.routed(i != 1));
        let routed = Summary::of(&t, 1.0, None).shard_aware;
        assert_eq!(routed, Some(Routed { requests: 3, to_owner: 2 }));
        assert_eq!(
            routed.map(|r| r.line()).as_deref(),
            Some("  shard-aware: 2 of 3 requests sent to their owning shard")
        );
    }
}

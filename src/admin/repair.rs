//! `enigmadb admin repair`: asks the node for its repair plan, then repairs the plan range by
//! range (one ADMIN request each, so progress shows after every range), and ends with a
//! summary. Presentation only: what a repair does is the server's business.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value as Json};
use wire::client::{Client, ClientError};
use wire::protocol::{
    AdminRequest, AdminResult, RangeRepaired, RangeRequest, RepairRange, RepairRequest, RepairResult,
};

use super::display_size;

/// What the operator asked for.
#[derive(Debug, Clone)]
pub(super) struct Options {
    pub table: Option<String>,
    pub primary_only: bool,
    pub max_depth: u8,
    pub json: bool,
}

/// Totals of a repair, as the summary prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Summary {
    pub session: u64,
    pub ranges: usize,
    pub ranges_compared: usize,
    pub ranges_differing: usize,
    /// Ranges whose ADMIN request failed (the error is printed in the progress).
    pub ranges_failed: usize,
    pub replicas_skipped: u64,
    pub subranges_streamed: u64,
    pub partitions: [u64; 2],
    pub rows: [u64; 2],
    /// Received, sent.
    pub bytes: [u64; 2],
    pub first_failure: Option<String>,
    pub duration: Duration,
}

impl Summary {
    fn add(&mut self, done: &RangeRepaired) {
        self.ranges_compared += usize::from(done.replicas_compared > 0);
        self.ranges_differing += usize::from(done.subranges_streamed > 0);
        self.replicas_skipped += u64::from(done.replicas_skipped);
        self.subranges_streamed += u64::from(done.subranges_streamed);
        self.partitions[0] += done.partitions_received;
        self.partitions[1] += done.partitions_sent;
        self.rows[0] += done.rows_received;
        self.rows[1] += done.rows_sent;
        self.bytes[0] += done.bytes_received;
        self.bytes[1] += done.bytes_sent;
        if self.first_failure.is_none() {
            self.first_failure = done.failure.clone();
        }
    }

    fn bytes_streamed(&self) -> u64 {
        self.bytes[0] + self.bytes[1]
    }

    fn render(&self) -> String {
        let lines = [
            ("Ranges", self.ranges.to_string()),
            ("Ranges compared", self.ranges_compared.to_string()),
            ("Ranges differing", self.ranges_differing.to_string()),
            ("Ranges failed", self.ranges_failed.to_string()),
            ("Replicas skipped", self.replicas_skipped.to_string()),
            ("Sub-ranges streamed", self.subranges_streamed.to_string()),
            ("Rows streamed", format!("{} received, {} sent", self.rows[0], self.rows[1])),
            ("Partitions streamed", format!("{} received, {} sent", self.partitions[0], self.partitions[1])),
            (
                "Bytes streamed",
                format!("{} received, {} sent", display_size(self.bytes[0]), display_size(self.bytes[1])),
            ),
            ("Duration (seconds)", format!("{:.3}", self.duration.as_secs_f64())),
        ];
        let mut out = format!("Repair session {} summary\n", self.session);
        for (key, value) in lines {
            out.push_str(&format!("{key:<20}: {value}\n"));
        }
        out
    }

    fn to_json(&self) -> Json {
        json!({
            "command": "repair",
            "session": self.session,
            "ranges": self.ranges,
            "ranges_compared": self.ranges_compared,
            "ranges_differing": self.ranges_differing,
            "ranges_failed": self.ranges_failed,
            "replicas_skipped": self.replicas_skipped,
            "subranges_streamed": self.subranges_streamed,
            "rows_received": self.rows[0],
            "rows_sent": self.rows[1],
            "partitions_received": self.partitions[0],
            "partitions_sent": self.partitions[1],
            "bytes_received": self.bytes[0],
            "bytes_sent": self.bytes[1],
            "bytes_streamed": self.bytes_streamed(),
            "first_failure": self.first_failure,
            "duration_ms": self.duration.as_millis() as u64,
        })
    }
}

/// Runs a whole repair against the node `client` is connected to. Progress goes to stdout
/// (stderr with `--json`, whose stdout is the summary object alone). Fails when a range
/// failed or a replica was skipped, after the summary.
pub(super) fn run(client: &mut Client, host: &str, options: Options) -> Result<()> {
    let started = Instant::now();
    let plan = RepairRequest::Plan { table: options.table.clone(), primary_only: options.primary_only };
    let (session, ranges) = match call(client, host, plan)? {
        RepairResult::Plan { session, ranges } => (session, ranges),
        other => bail!("repair on {host}: the node answered a plan request with {other:?}"),
    };
    let mut summary = Summary { session, ranges: ranges.len(), ..Summary::default() };
    let mut progress: Box<dyn Write> =
        if options.json { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
    writeln!(progress, "Repair session {session}: {} ranges to repair on {host}", ranges.len())?;
    for (i, range) in ranges.iter().enumerate() {
        let request = RepairRequest::Range(RangeRequest {
            session,
            table: range.table.clone(),
            start: range.start,
            end: range.end,
            max_depth: options.max_depth,
        });
        let outcome = match call(client, host, request) {
            Ok(RepairResult::Range(done)) => {
                summary.add(&done);
                describe(&done)
            }
            Ok(other) => bail!("repair on {host}: the node answered a range request with {other:?}"),
            // A range the node refused or failed: the others are still worth repairing.
            Err(e) if is_server_error(&e) => {
                summary.ranges_failed += 1;
                summary.first_failure.get_or_insert_with(|| e.to_string());
                format!("failed: {e}")
            }
            Err(e) => return Err(e),
        };
        writeln!(
            progress,
            "[{}/{}] {}: {outcome}; {} streamed so far",
            i + 1,
            ranges.len(),
            display_range(range),
            display_size(summary.bytes_streamed())
        )?;
    }
    summary.duration = started.elapsed();
    match options.json {
        true => println!("{:#}", summary.to_json()),
        false => print!("{}", summary.render()),
    }
    if summary.ranges_failed > 0 || summary.replicas_skipped > 0 {
        bail!(
            "repair incomplete: {} ranges failed, {} replicas skipped (first: {})",
            summary.ranges_failed,
            summary.replicas_skipped,
            summary.first_failure.as_deref().unwrap_or("unknown")
        );
    }
    Ok(())
}

/// A server's typed error on one range (not a lost connection).
fn is_server_error(e: &anyhow::Error) -> bool {
    matches!(e.downcast_ref::<ClientError>(), Some(ClientError::Server(_)))
}

fn call(client: &mut Client, host: &str, request: RepairRequest) -> Result<RepairResult> {
    match client.admin(AdminRequest::Repair(request)) {
        Ok(AdminResult::Repair(result)) => Ok(result),
        Ok(other) => bail!("repair on {host}: the node answered with {other:?}"),
        Err(e @ ClientError::Server(_)) => Err(anyhow::Error::new(e).context(format!("repair on {host}"))),
        Err(e) => Err(anyhow::anyhow!("repair on {host}: {e}")),
    }
}

fn display_range(range: &RepairRange) -> String {
    format!("{} ({}, {}]", range.table, range.start, range.end)
}

/// One range's outcome in a few words.
fn describe(done: &RangeRepaired) -> String {
    let mut out = match (done.replicas_compared, done.subranges_streamed) {
        (0, _) => "no other replica compared".to_owned(),
        (n, 0) => format!("in sync with {n} replicas"),
        (n, streams) => format!(
            "differed from {n} replicas: {streams} sub-range streams, {} rows received, {} sent",
            done.rows_received, done.rows_sent
        ),
    };
    if done.replicas_skipped > 0 {
        let why = done.failure.as_deref().unwrap_or("unknown");
        out.push_str(&format!(" ({} replicas skipped: {why})", done.replicas_skipped));
    }
    out
}

/// A single repair answer as text (`render` of a result that came without the command).
pub(super) fn render(result: &RepairResult) -> String {
    match result {
        RepairResult::Plan { session, ranges } => {
            let mut out = format!("Repair session {session}: {} ranges\n", ranges.len());
            for range in ranges {
                out.push_str(&display_range(range));
                out.push('\n');
            }
            out
        }
        RepairResult::Range(done) => format!("{}\n", describe(done)),
    }
}

pub(super) fn to_json(result: &RepairResult) -> Json {
    match result {
        RepairResult::Plan { session, ranges } => json!({
            "session": session,
            "ranges": ranges.iter().map(|r| json!({"table": r.table, "start": r.start, "end": r.end})).collect::<Vec<_>>(),
        }),
        RepairResult::Range(done) => {
            let mut summary = Summary { ranges: 1, ..Summary::default() };
            summary.add(done);
            summary.to_json()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_adds_ranges_and_reports_streamed_bytes() {
        let mut summary = Summary { ranges: 3, ..Summary::default() };
        summary.add(&RangeRepaired { replicas_compared: 2, ..RangeRepaired::default() });
        summary.add(&RangeRepaired {
            replicas_compared: 1,
            replicas_skipped: 1,
            subranges_streamed: 2,
            rows_received: 10,
            bytes_received: 2048,
            bytes_sent: 100,
            failure: Some("127.0.0.3:7470 is down".into()),
            ..RangeRepaired::default()
        });
        assert_eq!((summary.ranges_compared, summary.ranges_differing, summary.replicas_skipped), (2, 1, 1));
        let json = summary.to_json();
        assert_eq!(json["bytes_streamed"], 2148);
        assert_eq!(json["rows_received"], 10);
        assert_eq!(json["first_failure"], "127.0.0.3:7470 is down");
        let text = summary.render();
        assert!(text.contains("Ranges differing    : 1"), "{text}");
        assert!(text.contains("Bytes streamed      : 2.0 KiB received, 100 B sent"), "{text}");
    }

    #[test]
    fn range_outcomes_read_as_sentences() {
        assert_eq!(describe(&RangeRepaired::default()), "no other replica compared");
        assert_eq!(
            describe(&RangeRepaired { replicas_compared: 2, ..RangeRepaired::default() }),
            "in sync with 2 replicas"
        );
        let text = describe(&RangeRepaired {
            replicas_compared: 1,
            replicas_skipped: 1,
            subranges_streamed: 1,
            rows_received: 4,
            failure: Some("down".into()),
            ..RangeRepaired::default()
        });
        assert_eq!(
            text,
            "differed from 1 replicas: 1 sub-range streams, 4 rows received, 0 sent (1 replicas skipped: down)"
        );
    }
}

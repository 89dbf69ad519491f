//! The client side of the network benchmarks: one blocking connection keeps a fixed number of
//! prepared INSERTs or point SELECTs of the surge table in flight (pipelining), checks every
//! answer and times it. It never starts servers and asserts nothing; errors are counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rand::Rng;
use wire::client::{Client, ClientError};
use wire::protocol::{Consistency, PreparedId, QueryParams, QueryResult, Request, Response};
use wire::Value;

use crate::latency::LatencyHistogram;
use crate::surge::{row_key, ValuePool};

/// The surge table as CQL.
pub const CREATE_TABLE: &str = "CREATE TABLE surge (key blob PRIMARY KEY, value blob)";
pub const INSERT: &str = "INSERT INTO surge (key, value) VALUES (?, ?)";
pub const SELECT: &str = "SELECT value FROM surge WHERE key = ?";

/// What one connection did in one phase.
#[derive(Default)]
pub struct PhaseOutcome {
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    pub ok: u64,
    pub latency: LatencyHistogram,
    /// Error answers and failed checks, by kind.
    pub errors: BTreeMap<String, u64>,
}

impl PhaseOutcome {
    pub fn error(&mut self, kind: impl Into<String>, n: u64) {
        *self.errors.entry(kind.into()).or_default() += n;
    }
}

/// The outcomes of every connection of one phase, added up.
pub struct PhaseTotals {
    pub ops: u64,
    pub errors: BTreeMap<String, u64>,
    /// First request sent to last answer received, all connections.
    pub wall_seconds: f64,
    pub latency: LatencyHistogram,
}

impl PhaseTotals {
    pub fn of<'a>(phases: impl Iterator<Item = &'a PhaseOutcome>) -> PhaseTotals {
        let mut totals =
            PhaseTotals { ops: 0, errors: BTreeMap::new(), wall_seconds: 0.0, latency: LatencyHistogram::new() };
        let (mut started, mut finished) = (None::<Instant>, None::<Instant>);
        for p in phases {
            totals.latency.merge(&p.latency);
            totals.ops += p.ok;
            for (kind, n) in &p.errors {
                *totals.errors.entry(kind.clone()).or_default() += n;
            }
            started = match (started, p.started) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            finished = finished.max(p.finished);
        }
        if let (Some(s), Some(f)) = (started, finished) {
            totals.wall_seconds = f.saturating_duration_since(s).as_secs_f64();
        }
        totals
    }
}

/// The work one phase hands out: which request comes next, and whether its answer is right.
pub trait Workload {
    /// The next request and the row it concerns, or `None` when the phase is done.
    fn next(&mut self) -> Option<(Request, u64)>;
    /// `Ok` for a right answer, else the kind of error to count.
    fn check(&self, row: u64, answer: Response) -> Result<(), String>;
}

/// Inserts rows in the order of a shared counter (so all connections together write rows
/// `counter..end` exactly once).
pub struct Inserts<'a> {
    pub id: PreparedId,
    pub next_row: &'a AtomicU64,
    pub end: u64,
    pub values: &'a ValuePool,
    pub consistency: Consistency,
}

impl Workload for Inserts<'_> {
    fn next(&mut self) -> Option<(Request, u64)> {
        let row = self.next_row.fetch_add(1, Ordering::Relaxed);
        (row < self.end).then(|| {
            let values = vec![Some(Value::Blob(row_key(row))), Some(Value::Blob(self.values.value(row)))];
            (Request::Execute { id: self.id, values, params: QueryParams::with_consistency(self.consistency) }, row)
        })
    }

    fn check(&self, _row: u64, answer: Response) -> Result<(), String> {
        match answer {
            Response::Result(QueryResult::Void) => Ok(()),
            other => Err(answer_kind(&other)),
        }
    }
}

/// Point reads of random rows among `0..rows`, until the shared count of reads is reached; each
/// answer must be the row's value.
pub struct Reads<'a> {
    pub id: PreparedId,
    pub taken: &'a AtomicU64,
    pub total: u64,
    pub rows: u64,
    pub rng: rand::rngs::StdRng,
    pub values: &'a ValuePool,
    pub consistency: Consistency,
}

impl Workload for Reads<'_> {
    fn next(&mut self) -> Option<(Request, u64)> {
        if self.taken.fetch_add(1, Ordering::Relaxed) >= self.total {
            return None;
        }
        let row = self.rng.gen_range(0..self.rows);
        let values = vec![Some(Value::Blob(row_key(row)))];
        Some((Request::Execute { id: self.id, values, params: QueryParams::with_consistency(self.consistency) }, row))
    }

    fn check(&self, row: u64, answer: Response) -> Result<(), String> {
        let Response::Result(QueryResult::Rows(rows)) = answer else { return Err(answer_kind(&answer)) };
        match rows.rows.as_slice() {
            [] => Err("read: row missing".into()),
            [row_values] => match row_values.as_slice() {
                [Some(Value::Blob(v))] if v.as_slice() == self.values.value_ref(row) => Ok(()),
                _ => Err("read: wrong value".into()),
            },
            _ => Err("read: more than one row".into()),
        }
    }
}

/// How an unexpected answer is counted: error answers by their code's name.
fn answer_kind(answer: &Response) -> String {
    match answer {
        Response::Error(e) => format!("server: {}", e.code.name()),
        Response::Result(QueryResult::Rows(_)) => "unexpected answer: rows".into(),
        Response::Result(QueryResult::Void) => "unexpected answer: void".into(),
        Response::Result(_) => "unexpected answer: other result".into(),
        _ => "unexpected answer: not a result".into(),
    }
}

/// Keeps `window` requests of `work` in flight on `client` until the work runs out and every
/// request has its answer: a new request goes out as soon as an answer comes back. A failure of
/// the connection itself ends the phase for this connection; the requests it left unanswered
/// are counted as errors.
pub fn pipeline(client: &mut Client, window: usize, work: &mut impl Workload) -> PhaseOutcome {
    let mut out = PhaseOutcome { started: Some(Instant::now()), ..PhaseOutcome::default() };
    let mut pending: HashMap<u16, (Instant, u64)> = HashMap::with_capacity(window);
    let failed = loop {
        while pending.len() < window {
            let Some((request, row)) = work.next() else { break };
            let sent = Instant::now();
            match client.send(&request) {
                Ok(stream) => {
                    pending.insert(stream, (sent, row));
                }
                Err(e) => {
                    out.error(format!("client: {}", client_error_kind(&e)), 1);
                    break;
                }
            }
        }
        if pending.is_empty() {
            break false;
        }
        match client.recv() {
            Ok((stream, answer)) => {
                let Some((sent, row)) = pending.remove(&stream) else {
                    out.error("client: answer on an unknown stream", 1);
                    continue;
                };
                out.latency.record(sent.elapsed());
                match work.check(row, answer) {
                    Ok(()) => out.ok += 1,
                    Err(kind) => out.error(kind, 1),
                }
            }
            Err(e) => {
                out.error(format!("client: {}", client_error_kind(&e)), 1);
                break true;
            }
        }
    };
    if failed && !pending.is_empty() {
        out.error("client: unanswered (connection failed)", pending.len() as u64);
    }
    out.finished = Some(Instant::now());
    out
}

fn client_error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Io(io) => format!("I/O error ({:?})", io.kind()),
        ClientError::Server(err) => format!("server {}", err.code.name()),
        other => format!("{other}"),
    }
}

/// `total` requests in flight split over `connections`: the first `total % connections`
/// connections take one more.
pub fn split_window(total: usize, connections: usize) -> Vec<usize> {
    (0..connections).map(|i| total / connections + usize::from(i < total % connections)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_requests_are_split_over_connections_without_loss() {
        assert_eq!(split_window(64, 1), vec![64]);
        assert_eq!(split_window(64, 4), vec![16; 4]);
        assert_eq!(split_window(10, 3), vec![4, 3, 3]);
        assert_eq!(split_window(64, 5).iter().sum::<usize>(), 64);
    }

    #[test]
    fn phase_totals_add_up_connections() {
        let start = Instant::now();
        let mut a = PhaseOutcome { started: Some(start), finished: Some(start), ok: 3, ..PhaseOutcome::default() };
        a.latency.record_nanos(1_000);
        a.error("x", 1);
        let mut b = PhaseOutcome { started: Some(start), finished: Some(start), ok: 2, ..PhaseOutcome::default() };
        b.error("x", 2);
        b.error("y", 1);
        let t = PhaseTotals::of([a, b].iter());
        assert_eq!((t.ops, t.latency.count()), (5, 1));
        assert_eq!(t.errors, BTreeMap::from([("x".to_owned(), 3), ("y".to_owned(), 1)]));
        assert!(PhaseTotals::of(std::iter::empty()).wall_seconds == 0.0);
    }
}

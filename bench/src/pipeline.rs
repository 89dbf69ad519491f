//! The client side of the network benchmarks: one thread per connection, each with the surge
//! table's INSERT and SELECT prepared, keeps a fixed number of them in flight (pipelining),
//! checks every answer and times it. It never starts servers and asserts nothing; errors are
//! counted.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use wire::client::{Client, ClientError, MAX_IN_FLIGHT};
use wire::protocol::{Consistency, PreparedId, QueryParams, QueryResult, Request, Response};
use wire::Value;

use crate::latency::LatencyHistogram;
use crate::rendezvous::Rendezvous;
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
        // Never moves the counter past `end`: the next phase continues from exactly there
        // (a plain fetch_add overshot by the window, and the next phase skipped those rows).
        let row = self
            .next_row
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |row| (row < self.end).then_some(row + 1))
            .ok()?;
        let values = vec![Some(Value::Blob(row_key(row))), Some(Value::Blob(self.values.value(row)))];
        Some((Request::Execute { id: self.id, values, params: QueryParams::with_consistency(self.consistency) }, row))
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

/// Refuses a run whose `connections` cannot share `in_flight` requests: each connection keeps
/// 1 to [`MAX_IN_FLIGHT`] of them.
pub fn check_in_flight(connections: usize, in_flight: usize) -> Result<()> {
    if connections == 0 || connections > in_flight || in_flight.div_ceil(connections) > MAX_IN_FLIGHT {
        bail!(
            "{connections} connection(s) with --in-flight {in_flight}: each connection needs 1 to {MAX_IN_FLIGHT} \
             requests in flight"
        );
    }
    Ok(())
}

/// What every connection of a run shares.
pub struct ConnectionShape {
    /// Longest wait for one answer before the connection is given up.
    pub answer_timeout: Duration,
    /// Rows the write phases insert, and point reads of the read phase.
    pub inserts: u64,
    pub reads: u64,
    pub values: Arc<ValuePool>,
    /// Seed of the rows the reads pick (each connection draws its own sequence from it).
    pub seed: u64,
    /// How long to keep trying to prepare the statements: a table created through another
    /// node may not be known on this one yet. Zero tries once.
    pub schema_wait: Duration,
}

/// Pause between two attempts to prepare the statements while the schema travels.
const PREPARE_RETRY_INTERVAL: Duration = Duration::from_millis(250);

/// Everything one connection thread needs (moved into it).
pub struct ConnectionPlan {
    pub index: usize,
    pub addr: SocketAddr,
    pub window: usize,
    pub shape: Arc<ConnectionShape>,
    /// The next row to insert, shared by every connection.
    pub next_row: Arc<AtomicU64>,
    /// Point reads handed out so far, shared by every connection.
    pub reads_taken: Arc<AtomicU64>,
    pub meet: Arc<Rendezvous>,
}

/// A connection with the INSERT and the SELECT prepared.
pub struct Prepared {
    pub client: Client,
    pub insert: PreparedId,
    pub select: PreparedId,
}

impl ConnectionPlan {
    /// Connects and prepares the INSERT and the SELECT, trying again for up to the shape's
    /// `schema_wait`.
    pub fn connect(&self) -> Result<Prepared> {
        let deadline = Instant::now() + self.shape.schema_wait;
        loop {
            let attempt = (|| -> Result<Prepared> {
                let mut client = Client::connect(self.addr).context("connecting")?;
                client.set_timeout(Some(self.shape.answer_timeout))?;
                let insert = client.prepare(INSERT).with_context(|| format!("preparing {INSERT}"))?;
                let select = client.prepare(SELECT).with_context(|| format!("preparing {SELECT}"))?;
                Ok(Prepared { client, insert: insert.id, select: select.id })
            })();
            match attempt {
                Ok(prepared) => return Ok(prepared),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("connection {} to {}", self.index, self.addr)))
                }
                Err(_) => std::thread::sleep(PREPARE_RETRY_INTERVAL),
            }
        }
    }

    /// Inserts of the shared rows up to (not including) row `end`.
    pub fn inserts(&self, id: PreparedId, end: u64, consistency: Consistency) -> Inserts<'_> {
        Inserts { id, next_row: &self.next_row, end, values: &self.shape.values, consistency }
    }

    /// This connection's point reads among rows `0..rows`, until the run's reads are taken.
    pub fn reads(&self, id: PreparedId, rows: u64, consistency: Consistency) -> Reads<'_> {
        Reads {
            id,
            taken: &self.reads_taken,
            total: self.shape.reads,
            rows,
            rng: rand::rngs::StdRng::seed_from_u64(self.shape.seed ^ (self.index as u64 + 1)),
            values: &self.shape.values,
            consistency,
        }
    }
}

/// Starts one thread per entry of `windows` running `run` on its plan, connection i to
/// `addrs[i % addrs.len()]`, all meeting at `meet`. If a thread cannot start, the meeting is
/// abandoned (releasing the started ones), they are joined, and the run fails.
pub fn start_connections<T: Send + 'static>(
    addrs: &[SocketAddr],
    windows: &[usize],
    shape: ConnectionShape,
    meet: &Arc<Rendezvous>,
    run: fn(ConnectionPlan) -> Result<T>,
) -> Result<Vec<JoinHandle<Result<T>>>> {
    let shape = Arc::new(shape);
    let (next_row, reads_taken) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut handles = Vec::with_capacity(windows.len());
    for (index, &window) in windows.iter().enumerate() {
        let plan = ConnectionPlan {
            index,
            addr: addrs[index % addrs.len()],
            window,
            shape: shape.clone(),
            next_row: next_row.clone(),
            reads_taken: reads_taken.clone(),
            meet: meet.clone(),
        };
        match std::thread::Builder::new().name(format!("client-{index}")).spawn(move || run(plan)) {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                meet.abandon();
                for handle in handles {
                    let _ = handle.join();
                }
                bail!("starting client thread {index}: {e}");
            }
        }
    }
    Ok(handles)
}

/// Every connection's outcome, or what went wrong with each one that failed.
pub fn join_connections<T>(handles: Vec<JoinHandle<Result<T>>>) -> Result<Vec<T>, String> {
    let mut outcomes = Vec::with_capacity(handles.len());
    let mut failures = Vec::new();
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.join() {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(e)) => failures.push(format!("connection {i}: {e:#}")),
            Err(_) => failures.push(format!("connection {i}: the thread panicked")),
        }
    }
    match failures.is_empty() {
        true => Ok(outcomes),
        false => Err(failures.join("; ")),
    }
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
    fn a_phase_asked_past_its_end_leaves_the_next_phase_its_first_row() {
        let values = crate::surge::ValuePool::new(1, 8).expect("a small value pool");
        let next_row = AtomicU64::new(0);
        let mut first = Inserts {
            id: PreparedId([1; 16]),
            next_row: &next_row,
            end: 3,
            values: &values,
            consistency: Consistency::One,
        };
        let rows: Vec<u64> = std::iter::from_fn(|| first.next().map(|(_, row)| row)).collect();
        assert_eq!(rows, [0, 1, 2]);
        // The pipeline keeps asking while answers come back: that must not use up rows.
        for _ in 0..64 {
            assert!(first.next().is_none());
        }
        let mut second = Inserts {
            id: PreparedId([1; 16]),
            next_row: &next_row,
            end: 5,
            values: &values,
            consistency: Consistency::Quorum,
        };
        let rows: Vec<u64> = std::iter::from_fn(|| second.next().map(|(_, row)| row)).collect();
        assert_eq!(rows, [3, 4]);
    }

    #[test]
    fn every_connection_needs_a_share_of_the_window() {
        assert!(check_in_flight(4, 64).is_ok());
        assert!(check_in_flight(64, 64).is_ok());
        assert!(check_in_flight(0, 64).is_err());
        assert!(check_in_flight(65, 64).is_err());
        let err = check_in_flight(1, MAX_IN_FLIGHT + 1).unwrap_err();
        assert!(err.to_string().contains("each connection needs 1 to"), "{err}");
    }

    #[test]
    fn a_failed_connection_is_reported_with_its_index() {
        let ok = std::thread::spawn(|| -> Result<u32> { Ok(7) });
        assert_eq!(join_connections(vec![ok]), Ok(vec![7]));
        let ok = std::thread::spawn(|| -> Result<u32> { Ok(7) });
        let failed = std::thread::spawn(|| -> Result<u32> { bail!("refused") });
        assert_eq!(join_connections(vec![ok, failed]), Err("connection 1: refused".to_owned()));
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

//! One connection of a stress run, on its own thread: sends operations when the pacer says they
//! are due (keeping at most its window in flight), takes answers as they come, and counts each
//! one in its tally. It never retries an operation and never stops the run on an error unless
//! the run is fail-fast; a lost connection is counted and opened again, a bounded number of times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::schedule::{Due, Pacer, Plan};
use super::stats::Tally;
use super::target::{check_read, Answer, Connection, ConnectionLost, Target};
use super::workload::{Op, OpKind, Workload};

/// Times a connection thread opens its connection again after losing it, over the whole run.
pub const MAX_RECONNECTS: u32 = 10;

/// Pause before opening a lost connection again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// How early an operation may leave before its intended time, so that operations due within
/// this span share one write and one wait instead of a system call round each (at 20,000 ops/s
/// per connection they are 50 us apart). Latency then counts from the actual send, never from
/// before it.
pub const SEND_AHEAD: Duration = Duration::from_micros(500);

/// Longest sleep while nothing is in flight and nothing is due (so a stop is seen quickly).
const IDLE_SLEEP: Duration = Duration::from_millis(50);

/// What every connection of a run shares.
pub struct Shared {
    /// Time zero of the plan and of every intended send time.
    pub start: Instant,
    /// Set to stop every connection (fail-fast).
    pub stop: AtomicBool,
    /// Operations claimed so far, against `limit`.
    pub claimed: AtomicU64,
    /// The run's operation count (`-n`), if it has one.
    pub limit: Option<u64>,
    pub fail_fast: bool,
    /// The first error of a fail-fast run.
    pub first_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(limit: Option<u64>, fail_fast: bool) -> Shared {
        Shared {
            start: Instant::now(),
            stop: AtomicBool::new(false),
            claimed: AtomicU64::new(0),
            limit,
            fail_fast,
            first_error: Mutex::new(None),
        }
    }

    /// Takes one operation of the run's count; `false` when the count is used up.
    fn claim(&self) -> bool {
        match self.limit {
            Some(limit) => self.claimed.fetch_add(1, Ordering::Relaxed) < limit,
            None => true,
        }
    }

    fn failed(&self, kind: &str) {
        if self.fail_fast {
            lock(&self.first_error).get_or_insert_with(|| kind.to_owned());
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// A lock that a panicking holder did not poison for us: tallies stay countable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Everything one connection thread needs.
pub struct ConnectionPlan {
    pub index: usize,
    pub host: String,
    /// Requests this connection keeps in flight at most.
    pub window: usize,
    pub connections: usize,
    pub plan: Plan,
    pub target: Target,
    pub workload: Workload,
    pub seed: u64,
    pub shared: Arc<Shared>,
    /// Drained once a second by the progress loop.
    pub tally: Arc<Mutex<Tally>>,
}

/// Runs one connection until its share of the plan is done (or the run stops), then waits for
/// the answers still in flight.
pub fn run(plan: ConnectionPlan, mut connection: Box<dyn Connection>) {
    let ConnectionPlan { window, shared, tally, .. } = &plan;
    let mut ops = plan.workload.ops(plan.seed, plan.index);
    let mut pacer = Pacer::new(plan.plan.clone(), plan.connections);
    // When each request in flight started counting (its intended send time, or its actual send
    // if it left early), and its operation.
    let mut pending: HashMap<u64, (Duration, Op)> = HashMap::with_capacity(*window);
    let mut reconnects = 0;
    let mut done = false;
    loop {
        done = done || shared.stop.load(Ordering::Relaxed);
        let mut next_due = None;
        while !done && pending.len() < *window {
            let now = shared.start.elapsed();
            let intended = match pacer.due(now) {
                Due::Done => {
                    done = true;
                    break;
                }
                Due::Now => now,
                Due::At(t) if t <= now + SEND_AHEAD => t,
                Due::At(t) => {
                    next_due = Some(t);
                    break;
                }
            };
            if !shared.claim() {
                done = true;
                break;
            }
            let op = ops.next_op();
            match connection.send(op) {
                Ok(sent) => {
                    pending.insert(sent.token, (intended.max(now), op));
                    let mut tally = lock(tally);
                    tally.sent(now.saturating_sub(intended));
                    if let Some(to_owner) = sent.to_owner {
                        tally.routed(to_owner);
                    }
                    drop(tally);
                    pacer.sent();
                }
                Err(lost) => match reconnect(&plan, &mut pending, 1, lost, &mut reconnects) {
                    Some(c) => connection = c,
                    None => return,
                },
            }
        }
        if pending.is_empty() {
            if done {
                return;
            }
            if let Some(due) = next_due {
                std::thread::sleep(due.saturating_sub(shared.start.elapsed()).min(IDLE_SLEEP));
            }
            continue;
        }
        let wait = next_due.map(|due| due.saturating_sub(shared.start.elapsed()));
        match connection.recv(wait) {
            Ok(Some((token, answer))) => {
                let Some((from, op)) = pending.remove(&token) else {
                    let lost = ConnectionLost("connection: answer to no request".into());
                    match reconnect(&plan, &mut pending, 0, lost, &mut reconnects) {
                        Some(c) => connection = c,
                        None => return,
                    }
                    continue;
                };
                let latency = shared.start.elapsed().saturating_sub(from);
                let failure = count(&mut lock(tally), &plan.workload, op, answer, latency);
                if let Some(kind) = failure {
                    shared.failed(&kind);
                }
            }
            Ok(None) => {}
            Err(lost) => match reconnect(&plan, &mut pending, 0, lost, &mut reconnects) {
                Some(c) => connection = c,
                None => return,
            },
        }
    }
}

/// Counts one answer; returns the error kind when it is a failure.
fn count(tally: &mut Tally, workload: &Workload, op: Op, answer: Answer, latency: Duration) -> Option<String> {
    if let Answer::Lost(kind) = answer {
        // As `reconnect` counts a lost connection's requests: failed, with no latency.
        tally.error(&kind, 1);
        return Some(kind);
    }
    tally.answered(latency);
    let failure = match (op.kind, answer) {
        (OpKind::Write, Answer::Written) => None,
        (OpKind::Read, Answer::Found(value)) => check_read(workload, op.key, &value).err().map(str::to_owned),
        (OpKind::Read, Answer::Missing) => {
            tally.missing += 1;
            return None;
        }
        (_, Answer::Error(kind)) => Some(kind),
        (_, _) => Some("unexpected answer".to_owned()),
    };
    match &failure {
        Some(kind) => tally.error(kind, 1),
        None => tally.ok += 1,
    }
    failure
}

/// Counts the requests a lost connection leaves unanswered (and `unsent`, the one it failed to
/// send) as failed, then opens it again (unless the run is fail-fast or stopping, or this
/// connection has used up its reconnects: then the thread ends and says so on stderr).
fn reconnect(
    plan: &ConnectionPlan,
    pending: &mut HashMap<u64, (Duration, Op)>,
    unsent: u64,
    lost: ConnectionLost,
    reconnects: &mut u32,
) -> Option<Box<dyn Connection>> {
    let failed = pending.len() as u64 + unsent;
    pending.clear();
    lock(&plan.tally).error(&lost.0, failed);
    plan.shared.failed(&lost.0);
    while !plan.shared.fail_fast && !plan.shared.stop.load(Ordering::Relaxed) && *reconnects < MAX_RECONNECTS {
        *reconnects += 1;
        std::thread::sleep(RECONNECT_PAUSE);
        match plan.target.connect(&plan.host, &plan.workload) {
            Ok(connection) => return Some(connection),
            Err(e) => eprintln!("connection {}: reconnecting to {}: {e:#}", plan.index, plan.host),
        }
    }
    if *reconnects >= MAX_RECONNECTS {
        eprintln!("connection {}: gave up after {MAX_RECONNECTS} reconnects", plan.index);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stress::workload::{Distribution, KeyShape};

    #[test]
    fn answers_are_counted_by_what_they_say() {
        let w = Workload::new(KeyShape::new(10, 1).unwrap(), Distribution::Uniform, 50, 4, 3).unwrap();
        let mut t = Tally::default();
        let ms = Duration::from_millis(1);
        let read = Op { kind: OpKind::Read, key: 4 };
        let write = Op { kind: OpKind::Write, key: 4 };
        assert_eq!(count(&mut t, &w, write, Answer::Written, ms), None);
        assert_eq!(count(&mut t, &w, read, Answer::Found(w.value(4).to_vec()), ms), None);
        assert_eq!(count(&mut t, &w, read, Answer::Missing, ms), None);
        assert_eq!(count(&mut t, &w, read, Answer::Found(b"nope".to_vec()), ms), Some("read: wrong value".into()));
        assert_eq!(count(&mut t, &w, write, Answer::Error("overloaded".into()), ms), Some("overloaded".into()));
        assert_eq!(count(&mut t, &w, write, Answer::Missing, ms), Some("unexpected answer".into()));
        assert_eq!((t.ok, t.missing, t.error_count(), t.latency.len()), (2, 1, 3, 6));
        let gone = "connection: closed, its node left the topology";
        assert_eq!(count(&mut t, &w, read, Answer::Lost(gone.into()), ms), Some(gone.into()));
        assert_eq!((t.error_count(), t.errors[gone], t.latency.len()), (4, 1, 6), "lost: no latency");
    }

    #[test]
    fn the_operation_count_is_shared_and_exact() {
        let shared = Shared::new(Some(5), false);
        assert_eq!((0..8).filter(|_| shared.claim()).count(), 5);
        assert!(Shared::new(None, false).claim());
    }

    #[test]
    fn a_fail_fast_run_stops_at_its_first_error() {
        let shared = Shared::new(None, true);
        shared.failed("write timeout");
        shared.failed("overloaded");
        assert!(shared.stop.load(Ordering::Relaxed));
        assert_eq!(lock(&shared.first_error).as_deref(), Some("write timeout"));
        let relaxed = Shared::new(None, false);
        relaxed.failed("write timeout");
        assert!(!relaxed.stop.load(Ordering::Relaxed));
    }
}

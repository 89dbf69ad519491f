//! The chaos checker: given the history of a workload (what each client sent, when, and what
//! came back) and what the cluster holds after it healed, counts the violations: acknowledged
//! writes lost, stale QUORUM reads, values never written, replicas that disagree. Plain logic
//! over recorded data; it never talks to a node.
//!
//! Time is the harness's monotonic clock (microseconds since the run began). A write's
//! timestamp is issued by its coordinator after the client sent it and, when the client got an
//! answer, before that answer; so a write that got an answer before another was sent carries
//! the smaller timestamp (every node runs on this machine's clock), and last-write-wins must
//! order them the same way. A write that got no answer at all (client timeout, lost
//! connection) may still be stamped any time later: it has no end.

use std::collections::{BTreeMap, HashMap};

use wire::Consistency;

/// How a write ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The coordinator acknowledged it at its level.
    Acked,
    /// The coordinator answered with an error (write timeout, unavailable, ...): stamped, if at
    /// all, before that answer; it may or may not be applied.
    Failed,
    /// No answer: it may be applied, with a timestamp from any time after it was sent.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct WriteOp {
    pub key: u32,
    /// Unique over the whole run, so every value read names the write it came from.
    pub value: String,
    pub level: Consistency,
    pub start: u64,
    pub end: u64,
    pub outcome: WriteOutcome,
}

impl WriteOp {
    /// When its timestamp was issued at the latest.
    fn latest_stamp(&self) -> u64 {
        match self.outcome {
            WriteOutcome::Unknown => u64::MAX,
            WriteOutcome::Acked | WriteOutcome::Failed => self.end,
        }
    }

    /// Whether this write's timestamp is certainly smaller than `later`'s.
    fn precedes(&self, later: &WriteOp) -> bool {
        self.latest_stamp() < later.start
    }
}

#[derive(Debug, Clone)]
pub struct ReadOp {
    pub key: u32,
    pub level: Consistency,
    pub start: u64,
    pub end: u64,
    /// `Some(value)` once answered (`None` inside: no row); `None` when it failed.
    pub result: Option<Option<String>>,
}

/// Everything the clients did.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub writes: Vec<WriteOp>,
    pub reads: Vec<ReadOp>,
}

impl History {
    pub fn merge(&mut self, other: History) {
        self.writes.extend(other.writes);
        self.reads.extend(other.reads);
    }
}

/// What the cluster holds once healed: the value of each key read at a level, and each node's
/// own copy (key -> value) read from its directory.
#[derive(Debug, Default, Clone)]
pub struct Final {
    /// Each key read at QUORUM after the heal, before any repair pass.
    pub quorum: BTreeMap<u32, Option<String>>,
    /// Each key read at ALL after repair (the newest value any replica holds).
    pub all: BTreeMap<u32, Option<String>>,
    /// Each node's copy.
    pub replicas: Vec<HashMap<u32, String>>,
    /// How many replicas each key has (min(RF, nodes)).
    pub replication: usize,
}

/// The violations found; every count must be 0.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Acknowledged QUORUM writes not visible (nor overwritten by a later write) at QUORUM
    /// after the heal, or at ALL after repair.
    pub lost_quorum: Vec<String>,
    /// Acknowledged ONE writes not visible (nor overwritten) at ALL after repair.
    pub lost_one: Vec<String>,
    /// QUORUM reads that missed a QUORUM write acknowledged before they began.
    pub stale_quorum_reads: Vec<String>,
    /// Values read or stored that no client wrote to that key.
    pub phantoms: Vec<String>,
    /// Keys whose replicas disagree, or that have too few or too many copies.
    pub divergent: Vec<String>,
}

impl Verdict {
    pub fn lost(&self) -> usize {
        self.lost_quorum.len() + self.lost_one.len()
    }

    pub fn is_clean(&self) -> bool {
        self.lost() == 0 && self.stale_quorum_reads.is_empty() && self.phantoms.is_empty() && self.divergent.is_empty()
    }
}

/// Checks a history against what the cluster holds afterwards.
pub fn check(history: &History, fin: &Final) -> Verdict {
    let mut by_value: HashMap<(u32, &str), &WriteOp> = HashMap::new();
    let mut by_key: HashMap<u32, Vec<&WriteOp>> = HashMap::new();
    for w in &history.writes {
        let previous = by_value.insert((w.key, w.value.as_str()), w);
        assert!(previous.is_none(), "the workload wrote {} twice to key {}", w.value, w.key);
        by_key.entry(w.key).or_default().push(w);
    }
    let mut verdict = Verdict::default();
    // A value read for a key names the write it came from, or none (a phantom).
    let mut source = |key: u32, value: &str, what: &str| -> Option<&WriteOp> {
        let found = by_value.get(&(key, value)).copied();
        if found.is_none() {
            verdict.phantoms.push(format!("key {key}: {what} returned {value:?}, never written to it"));
        }
        found
    };

    let mut stale = Vec::new();
    for r in history.reads.iter().filter(|r| r.level == Consistency::Quorum) {
        let Some(result) = &r.result else { continue };
        let seen = match result {
            Some(v) => match source(r.key, v, "a read") {
                Some(w) => Some(w),
                None => continue,
            },
            None => None,
        };
        let missed = by_key.get(&r.key).into_iter().flatten().find(|w| {
            w.level == Consistency::Quorum
                && w.outcome == WriteOutcome::Acked
                && w.end < r.start
                && match seen {
                    None => true,
                    Some(s) => s.precedes(w),
                }
        });
        if let Some(w) = missed {
            stale.push(format!(
                "key {}: QUORUM read at {}..{} us saw {:?}, missing {:?} acknowledged at QUORUM at {} us",
                r.key, r.start, r.end, result, w.value, w.end
            ));
        }
    }
    for r in history.reads.iter().filter(|r| r.level != Consistency::Quorum) {
        if let Some(Some(v)) = &r.result {
            source(r.key, v, "a read");
        }
    }

    let mut lost_quorum = Vec::new();
    let mut lost_one = Vec::new();
    for (&key, writes) in &by_key {
        let at_quorum = fin.quorum.get(&key).cloned().flatten();
        let at_all = fin.all.get(&key).cloned().flatten();
        let quorum_source = at_quorum.as_deref().and_then(|v| source(key, v, "the final QUORUM read"));
        let all_source = at_all.as_deref().and_then(|v| source(key, v, "the final ALL read"));
        for w in writes.iter().filter(|w| w.outcome == WriteOutcome::Acked) {
            let hides = |s: Option<&WriteOp>| s.is_some_and(|s| std::ptr::eq(s, *w) || !s.precedes(w));
            if w.level == Consistency::Quorum && !hides(quorum_source) {
                lost_quorum.push(format!(
                    "key {key}: {:?} (QUORUM, acked at {} us), final QUORUM read {at_quorum:?}",
                    w.value, w.end
                ));
            } else if !hides(all_source) {
                let list = if w.level == Consistency::Quorum { &mut lost_quorum } else { &mut lost_one };
                list.push(format!(
                    "key {key}: {:?} ({}, acked at {} us), final ALL read {at_all:?}",
                    w.value,
                    w.level.name(),
                    w.end
                ));
            }
        }
    }

    // Every copy of a key holds the value the ALL read returned; exactly `replication` nodes
    // hold a key that has a value.
    let mut divergent = Vec::new();
    let mut keys: Vec<u32> = fin.all.keys().copied().collect();
    keys.extend(fin.replicas.iter().flat_map(|r| r.keys().copied()));
    keys.sort_unstable();
    keys.dedup();
    for key in keys {
        let copies: Vec<(usize, &String)> =
            fin.replicas.iter().enumerate().filter_map(|(i, r)| r.get(&key).map(|v| (i + 1, v))).collect();
        for (node, v) in &copies {
            source(key, v, &format!("node {node}'s copy"));
        }
        let expected = fin.all.get(&key).cloned().flatten();
        let agree = copies.iter().all(|(_, v)| Some(*v) == expected.as_ref());
        let count_ok = match expected {
            Some(_) => copies.len() == fin.replication,
            None => copies.is_empty(),
        };
        if !agree || !count_ok {
            divergent.push(format!("key {key}: ALL read {expected:?}, copies (node, value) {copies:?}"));
        }
    }
    verdict.lost_quorum = lost_quorum;
    verdict.lost_one = lost_one;
    verdict.stale_quorum_reads = stale;
    verdict.divergent = divergent;
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(key: u32, value: &str, level: Consistency, start: u64, end: u64, outcome: WriteOutcome) -> WriteOp {
        WriteOp { key, value: value.into(), level, start, end, outcome }
    }

    fn read(key: u32, start: u64, result: Option<&str>) -> ReadOp {
        ReadOp { key, level: Consistency::Quorum, start, end: start + 5, result: Some(result.map(str::to_owned)) }
    }

    /// Every node holds `value` for key 1; three replicas.
    fn healed(value: Option<&str>) -> Final {
        let copy: HashMap<u32, String> = value.map(|v| (1, v.to_owned())).into_iter().collect();
        let v = value.map(str::to_owned);
        Final {
            quorum: [(1, v.clone())].into(),
            all: [(1, v)].into(),
            replicas: vec![copy.clone(), copy.clone(), copy],
            replication: 3,
        }
    }

    const Q: Consistency = Consistency::Quorum;
    const ONE: Consistency = Consistency::One;

    #[test]
    fn a_clean_history_has_no_violation() {
        let history = History {
            writes: vec![write(1, "a", Q, 0, 10, WriteOutcome::Acked), write(1, "b", ONE, 20, 30, WriteOutcome::Acked)],
            reads: vec![read(1, 15, Some("a")), read(1, 40, Some("b"))],
        };
        let verdict = check(&history, &healed(Some("b")));
        assert!(verdict.is_clean(), "{verdict:?}");
    }

    #[test]
    fn an_acknowledged_write_overwritten_by_an_older_one_is_lost() {
        // "b" was acknowledged after "a" was answered, yet "a" is what survived.
        let history = History {
            writes: vec![write(1, "a", Q, 0, 10, WriteOutcome::Failed), write(1, "b", Q, 20, 30, WriteOutcome::Acked)],
            reads: vec![],
        };
        let verdict = check(&history, &healed(Some("a")));
        assert_eq!(verdict.lost_quorum.len(), 1, "{verdict:?}");
        assert!(check(&history, &healed(None)).lost() == 1, "a missing key loses its acknowledged write");
    }

    #[test]
    fn a_lost_one_write_counts_separately_and_an_unanswered_write_may_win() {
        let history = History {
            writes: vec![
                write(1, "a", ONE, 0, 10, WriteOutcome::Acked),
                // Unanswered, sent before "a": it may still carry the newer timestamp.
                write(1, "u", Q, 0, 1, WriteOutcome::Unknown),
            ],
            reads: vec![],
        };
        assert!(check(&history, &healed(Some("u"))).is_clean());
        let history = History { writes: vec![history.writes[0].clone()], reads: vec![] };
        let verdict = check(&history, &healed(None));
        assert_eq!((verdict.lost_one.len(), verdict.lost_quorum.len()), (1, 0), "{verdict:?}");
    }

    #[test]
    fn a_quorum_read_that_misses_an_earlier_acknowledged_quorum_write_is_stale() {
        let writes = vec![write(1, "a", Q, 0, 10, WriteOutcome::Acked), write(1, "b", Q, 20, 30, WriteOutcome::Acked)];
        // After "b" was acknowledged: "a" (older) and no row are stale; a read concurrent with
        // "b" may see "a".
        let reads = vec![read(1, 40, Some("a")), read(1, 41, None), read(1, 25, Some("a"))];
        let verdict = check(&History { writes, reads }, &healed(Some("b")));
        assert_eq!(verdict.stale_quorum_reads.len(), 2, "{verdict:?}");
        assert!(verdict.lost() == 0 && verdict.phantoms.is_empty());
    }

    #[test]
    fn a_one_write_does_not_make_a_quorum_read_stale() {
        let writes =
            vec![write(1, "a", Q, 0, 10, WriteOutcome::Acked), write(1, "b", ONE, 20, 30, WriteOutcome::Acked)];
        let verdict = check(&History { writes, reads: vec![read(1, 40, Some("a"))] }, &healed(Some("b")));
        assert!(verdict.is_clean(), "{verdict:?}");
    }

    #[test]
    fn values_never_written_are_phantoms_wherever_they_appear() {
        let writes = vec![write(1, "a", Q, 0, 10, WriteOutcome::Acked)];
        let mut fin = healed(Some("a"));
        fin.replicas[2].insert(1, "zzz".into());
        let verdict = check(&History { writes, reads: vec![read(1, 20, Some("x"))] }, &fin);
        assert_eq!(verdict.phantoms.len(), 2, "{verdict:?}");
        assert_eq!(verdict.divergent.len(), 1, "{verdict:?}");
    }

    #[test]
    fn replicas_must_agree_and_hold_every_copy() {
        let writes =
            vec![write(1, "a", Q, 0, 10, WriteOutcome::Acked), write(1, "b", ONE, 20, 30, WriteOutcome::Acked)];
        let history = History { writes, reads: vec![] };
        let mut stale_copy = healed(Some("b"));
        stale_copy.replicas[1].insert(1, "a".into());
        assert_eq!(check(&history, &stale_copy).divergent.len(), 1);
        let mut missing_copy = healed(Some("b"));
        missing_copy.replicas[0].clear();
        assert_eq!(check(&history, &missing_copy).divergent.len(), 1);
        assert!(check(&history, &healed(Some("b"))).is_clean());
    }
}

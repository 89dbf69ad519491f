//! Bootstrap of a node joining a cluster that has data, without I/O: which token ranges it
//! streams from which replicas, whether its join may start alongside the movements in
//! progress, how fast a stream may go, and the small state file that says a bootstrap is
//! unfinished (docs/FORMAT.md, "Bootstrap state"). `coordinator::bootstrap` drives it.

use std::path::Path;
use std::time::Duration;

use shards::durable_file::{self, DurableFileError, FileKind};
use wire::ring::Ring;
use wire::token::Token;

use super::merkle::TokenRange;
use super::pending::{Movement, MovementError, Owner, PendingRange, RangeMovements};
use super::HostId;

/// One token range the joining node will replicate, with the current replicas to stream it
/// from, best first: those that lose the range once the join completes (Cassandra streams
/// from them: they hold what the new node takes over), then the others in ring order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRange {
    pub range: TokenRange,
    pub sources: Vec<HostId>,
}

/// Every range `host` will replicate at `rf` once it joined `natural` with `tokens` (per
/// shard) and does not replicate now, with its sources; adjacent ranges with the same sources
/// are merged. In ring order.
pub fn plan(
    natural: &Ring<Owner>,
    rf: usize,
    host: HostId,
    tokens: &[Vec<Token>],
) -> Result<Vec<StreamRange>, MovementError> {
    let mut future = natural.vnodes().to_vec();
    for (shard, ts) in tokens.iter().enumerate() {
        future.extend(ts.iter().map(|t| (*t, (host, shard as u16))));
    }
    future.sort_unstable_by_key(|(t, _)| *t);
    let future = Ring::new(future)?;
    let join = Movement::Join { host, tokens: tokens.to_vec() };
    streams(natural, rf, join, host, |r| {
        let keeps: Vec<HostId> = future.replicas(r.last, rf, |(h, _)| *h).into_iter().map(|(h, _)| *h).collect();
        let natural: Vec<HostId> = r.natural.iter().map(|(h, _)| *h).collect();
        let mut sources: Vec<HostId> = natural.iter().copied().filter(|h| !keeps.contains(h)).collect();
        sources.extend(natural.iter().copied().filter(|h| keeps.contains(h)));
        sources
    })
}

/// The ranges `host` becomes a replica of through `movement` (its pending ranges at `rf`),
/// each with the replicas `sources` picks for it; adjacent ranges with the same sources are
/// merged, also across the end of the token space. In ring order.
pub fn streams(
    natural: &Ring<Owner>,
    rf: usize,
    movement: Movement,
    host: HostId,
    sources: impl Fn(&PendingRange) -> Vec<HostId>,
) -> Result<Vec<StreamRange>, MovementError> {
    let mut moves = RangeMovements::new(natural.clone(), rf);
    moves.begin(movement)?;
    let pieces = moves
        .pending()
        .ranges()
        .iter()
        .filter(|r| r.pending.iter().any(|(h, _)| *h == host))
        .map(|r| (r.first, r.last, sources(r)));
    Ok(merge_pieces(pieces).into_iter().map(|(range, sources)| StreamRange { range, sources }).collect())
}

/// Token ranges from sorted, disjoint `[first, last]` pieces, each with what streams it:
/// adjacent pieces with the same value are one range, and so are the two pieces of the range
/// across the end of the token space.
pub(super) fn merge_pieces<V: PartialEq>(pieces: impl IntoIterator<Item = (Token, Token, V)>) -> Vec<(TokenRange, V)> {
    let mut out: Vec<(Token, Token, V)> = Vec::new();
    for (first, last, value) in pieces {
        match out.last_mut() {
            Some((_, end, v)) if *v == value && end.checked_add(1) == Some(first) => *end = last,
            _ => out.push((first, last, value)),
        }
    }
    if out.len() > 1 {
        let (first, last) = (&out[0], &out[out.len() - 1]);
        if first.0 == Token::MIN && last.1 == Token::MAX && first.2 == last.2 {
            let (start, _, _) = out.pop().expect("two ranges or more");
            out[0].0 = start;
        }
    }
    out.into_iter().map(|(first, last, value)| (TokenRange::new(first.wrapping_sub(1), last), value)).collect()
}

/// Whether `host` may start its join with `tokens`, given the natural ring, the joins in
/// progress (`others`) and every replication factor in use: refused, naming the movement it
/// overlaps, when at some factor its ranges overlap those of a join in progress (one range
/// movement at a time, as Cassandra without `consistent_rangemovement=false`).
pub fn check_join(
    natural: &Ring<Owner>,
    others: &[Movement],
    host: HostId,
    tokens: &[Vec<Token>],
    rfs: &[usize],
) -> Result<(), MovementError> {
    check_movement(natural, others, &Movement::Join { host, tokens: tokens.to_vec() }, rfs)
}

/// [`check_join`] for any movement (a join, or the replacement of a dead node).
pub fn check_movement(
    natural: &Ring<Owner>,
    others: &[Movement],
    movement: &Movement,
    rfs: &[usize],
) -> Result<(), MovementError> {
    for &rf in rfs {
        let mut moves = RangeMovements::new(natural.clone(), rf);
        for other in others {
            // A join peers cannot take (it overlaps another) is not in progress for them either.
            let _ = moves.begin(other.clone());
        }
        moves.begin(movement.clone())?;
    }
    Ok(())
}

/// How long a stream that moved `bytes` in `elapsed` must pause to stay at `bytes_per_s` or
/// below (None: unthrottled).
pub fn throttle_delay(bytes: u64, elapsed: Duration, bytes_per_s: Option<u64>) -> Duration {
    match bytes_per_s {
        Some(rate) if rate > 0 => Duration::from_secs_f64(bytes as f64 / rate as f64).saturating_sub(elapsed),
        _ => Duration::ZERO,
    }
}

/// Where this node's bootstrap is, for `enigmadb admin netstats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Not bootstrapping: NORMAL from the start (or the bootstrap finished before this run).
    #[default]
    Normal,
    /// Waiting until its schema is every live peer's.
    Schema,
    /// JOINING announced: waiting `ring_delay_ms` for every coordinator to learn it.
    RingDelay,
    /// Streaming its ranges.
    Streaming,
    /// Every stream completed: NORMAL.
    Completed,
    /// Stopped on an error (the node exits; its next start bootstraps again).
    Failed,
    /// Decommission: LEAVING announced, waiting `ring_delay_ms` for every coordinator to
    /// learn it.
    LeaveRingDelay,
    /// Decommission: streaming its ranges to their new owners.
    LeaveStreaming,
    /// Decommission: replaying the hints it stores before it leaves.
    LeaveHints,
    /// Decommission done: LEFT; the process exits.
    Decommissioned,
    /// Decommission stopped on an error: NORMAL again.
    LeaveFailed,
    /// A decommission was running when the node stopped (killed while LEAVING): it started
    /// NORMAL again; `admin decommission` runs it again.
    LeaveInterrupted,
    /// removenode (run on this node): streaming the dead node's ranges to their new owners.
    Removing,
    /// removenode done: the dead node is out of the ring.
    Removed,
    /// removenode stopped on an error: the dead node is back in the ring (NORMAL, down).
    RemoveFailed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Normal => "NORMAL",
            Phase::Schema => "JOINING: waiting for the schema",
            Phase::RingDelay => "JOINING: waiting for the ring to settle",
            Phase::Streaming => "JOINING: streaming",
            Phase::Completed => "NORMAL: bootstrap completed",
            Phase::Failed => "JOINING: bootstrap failed",
            Phase::LeaveRingDelay => "LEAVING: waiting for the ring to settle",
            Phase::LeaveStreaming => "LEAVING: streaming",
            Phase::LeaveHints => "LEAVING: replaying hints",
            Phase::Decommissioned => "DECOMMISSIONED",
            Phase::LeaveFailed => "NORMAL: decommission failed",
            Phase::LeaveInterrupted => "NORMAL: decommission interrupted by a restart",
            Phase::Removing => "NORMAL: removenode streaming",
            Phase::Removed => "NORMAL: removenode completed",
            Phase::RemoveFailed => "NORMAL: removenode failed",
        }
    }

    /// Whether this node sends its streams (decommission, removenode) rather than receives
    /// them (bootstrap): `netstats` says "Sending" and lists the nodes streamed to.
    pub fn sends(self) -> bool {
        !matches!(
            self,
            Phase::Normal | Phase::Schema | Phase::RingDelay | Phase::Streaming | Phase::Completed | Phase::Failed
        )
    }
}

/// What this node received from one peer (bootstrap), or sent to it (decommission,
/// removenode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStream {
    pub host: HostId,
    pub peer: String,
    pub ranges_done: u64,
    pub partitions: u64,
    pub rows: u64,
    pub bytes: u64,
    /// Streams from it that failed (and went to another replica).
    pub failures: u64,
}

/// The progress of this node's bootstrap streams.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// (table, range) streams planned, and done.
    pub ranges_total: u64,
    pub ranges_done: u64,
    pub peers: Vec<PeerStream>,
    /// Seconds spent streaming so far (or in all, once done).
    pub seconds: f64,
    /// The throttle, bytes per second (None: unthrottled).
    pub throughput_limit: Option<u64>,
    /// Why the bootstrap failed, when it did.
    pub error: Option<String>,
}

impl Progress {
    /// The entry of `host`, made on first use.
    pub fn peer(&mut self, host: HostId, peer: String) -> &mut PeerStream {
        match self.peers.iter().position(|p| p.host == host) {
            Some(at) => &mut self.peers[at],
            None => {
                self.peers.push(PeerStream { host, peer, ..PeerStream::default() });
                self.peers.last_mut().expect("just pushed")
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.peers.iter().map(|p| p.bytes).sum()
    }

    pub fn rows(&self) -> u64 {
        self.peers.iter().map(|p| p.rows).sum()
    }
}

/// The bootstrap state file of a data directory (`bootstrap.state`).
pub const BOOTSTRAP_STATE_FILE: &str = "bootstrap.state";
/// Version 2 added the host a replacement takes over, version 3 the state "leaving"; older
/// files are still read.
const KIND: FileKind = FileKind { name: "bootstrap state", magic: *b"ENIGBOOT", version: 3 };
const OLDEST_READABLE_VERSION: u16 = 1;

/// Where a node's bootstrap stands, as its data directory records it. A directory without the
/// file never bootstrapped (the first node of a cluster, or one that joined before bootstrap
/// existed): it starts NORMAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootstrapState {
    /// Tokens chosen (or being chosen), streams not all done: the next start bootstraps again.
    InProgress,
    /// Every stream completed; the node is NORMAL.
    Completed,
    /// The node decommissioned: it left the ring and never starts again with this directory.
    Decommissioned,
    /// A decommission runs (the node gossips LEAVING). A node that starts with this state was
    /// stopped mid-way: it starts NORMAL again (its ranges never left it) and says so; its
    /// decommission is run again with `admin decommission`.
    Leaving,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapStateError {
    #[error(transparent)]
    File(#[from] DurableFileError),
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: String, detail: String },
}

/// What `bootstrap.state` records: where the bootstrap stands and, for a replacement
/// (`enigmadb server --replace`), the dead node whose tokens this node takes over (kept once
/// completed: the node gossips it for its whole life).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootstrapRecord {
    pub state: BootstrapState,
    pub replaces: Option<HostId>,
}

impl BootstrapState {
    fn code(self) -> u8 {
        match self {
            BootstrapState::InProgress => 1,
            BootstrapState::Completed => 2,
            BootstrapState::Decommissioned => 3,
            BootstrapState::Leaving => 4,
        }
    }
}

impl BootstrapRecord {
    /// The record in `dir` (None: no file).
    pub fn load(dir: &Path) -> Result<Option<BootstrapRecord>, BootstrapStateError> {
        let path = dir.join(BOOTSTRAP_STATE_FILE);
        let Some((version, payload)) = durable_file::read_versions(&path, KIND, OLDEST_READABLE_VERSION)? else {
            return Ok(None);
        };
        let corrupt = |detail: String| BootstrapStateError::Corrupt { path: path.display().to_string(), detail };
        let state = match payload.first() {
            Some(1) => BootstrapState::InProgress,
            Some(2) => BootstrapState::Completed,
            Some(3) => BootstrapState::Decommissioned,
            Some(4) if version >= 3 => BootstrapState::Leaving,
            Some(code) => return Err(corrupt(format!("unknown bootstrap state {code}"))),
            None => return Err(corrupt("an empty payload".into())),
        };
        let replaces = match (version, &payload[1..]) {
            (1, []) | (2.., [0]) => None,
            (2.., [1, host @ ..]) if host.len() == 16 => {
                Some(HostId::from_le_bytes(host.try_into().expect("16 bytes, checked")))
            }
            (_, rest) => {
                return Err(corrupt(format!("{} bytes after the state in a version {version} file", rest.len())))
            }
        };
        Ok(Some(BootstrapRecord { state, replaces }))
    }

    /// Records this in `dir`, durably (written to a temporary file, synced, renamed).
    pub fn store(self, dir: &Path) -> Result<(), BootstrapStateError> {
        let mut payload = vec![self.state.code()];
        match self.replaces {
            None => payload.push(0),
            Some(host) => {
                payload.push(1);
                payload.extend_from_slice(&host.to_le_bytes());
            }
        }
        durable_file::write(&dir.join(BOOTSTRAP_STATE_FILE), KIND, &payload)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::test_rings::{fresh_tokens, hosts, probe_tokens, ring};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every token the new node will replicate and does not now is in exactly one planned
        /// range, and nothing else is; sources are the current replicas, losers first.
        #[test]
        fn the_plan_covers_exactly_what_the_new_node_takes_over(
            seed in any::<u64>(), nodes in 1u128..6, vnodes in 1usize..5, rf in 1usize..4, new in 1usize..5,
        ) {
            let natural = ring(nodes, vnodes, seed, 1);
            let tokens = fresh_tokens(&natural, new, seed);
            let host = 99;
            let streams = plan(&natural, rf, host, &tokens).unwrap();
            let mut future = natural.vnodes().to_vec();
            future.extend(tokens[0].iter().map(|t| (*t, (host, 0))));
            future.sort_unstable_by_key(|(t, _)| *t);
            let future = Ring::new(future).unwrap();
            for token in probe_tokens(&future) {
                let now = hosts(&natural, token, rf);
                let later = hosts(&future, token, rf);
                let takes = later.contains(&host) && !now.contains(&host);
                let covering: Vec<&StreamRange> = streams.iter().filter(|s| s.range.contains(token)).collect();
                prop_assert_eq!(covering.len(), usize::from(takes), "token {} in {:?}", token, streams);
                if let Some(s) = covering.first() {
                    let mut sorted = s.sources.clone();
                    sorted.sort_unstable();
                    let mut expected = now.clone();
                    expected.sort_unstable();
                    prop_assert_eq!(sorted, expected);
                    let losing: Vec<HostId> = now.iter().copied().filter(|h| !later.contains(h)).collect();
                    prop_assert_eq!(&s.sources[..losing.len()], &losing[..], "losers first");
                }
            }
        }
    }

    #[test]
    fn a_join_between_two_nodes_streams_from_the_one_losing_the_range() {
        // Nodes 1..4 at 0, 1000, 2000, 3000; RF 1; a join at 1500 takes (1000, 1500] from
        // node 3 (token 2000).
        let natural = Ring::new((0..4).map(|i| (i * 1000, (i as HostId + 1, 0))).collect()).unwrap();
        let streams = plan(&natural, 1, 9, &[vec![1500]]).unwrap();
        assert_eq!(streams, vec![StreamRange { range: TokenRange::new(1000, 1500), sources: vec![3] }]);
        // RF 2: it takes (0, 1500] as a second or first replica; node 4 loses (0, 1000] and
        // node 3 (1000, 1500].
        let streams = plan(&natural, 2, 9, &[vec![1500]]).unwrap();
        assert_eq!(
            streams,
            vec![
                StreamRange { range: TokenRange::new(0, 1000), sources: vec![3, 2] },
                StreamRange { range: TokenRange::new(1000, 1500), sources: vec![4, 3] },
            ]
        );
    }

    #[test]
    fn the_range_across_the_end_of_the_token_space_is_one_stream() {
        let natural = Ring::new(vec![(-1000, (1, 0)), (1000, (2, 0))]).unwrap();
        // A join at -5000 on RF 1 takes (1000, -5000] from node 1, across the end.
        let streams = plan(&natural, 1, 9, &[vec![-5000]]).unwrap();
        assert_eq!(streams, vec![StreamRange { range: TokenRange::new(1000, -5000), sources: vec![1] }]);
        assert!(streams[0].range.contains(Token::MAX) && streams[0].range.contains(Token::MIN + 1));
        assert!(!streams[0].range.contains(-4999) && !streams[0].range.contains(1000));
    }

    #[test]
    fn a_join_overlapping_one_in_progress_is_refused_at_any_factor_in_use() {
        let natural = Ring::new((0..4).map(|i| (i * 1000, (i as HostId + 1, 0))).collect()).unwrap();
        let first = Movement::Join { host: 10, tokens: vec![vec![500]] };
        assert!(check_join(&natural, std::slice::from_ref(&first), 11, &[vec![2500]], &[1]).is_ok());
        // At RF 3 both joins change the replicas of (0, 500].
        let err = check_join(&natural, std::slice::from_ref(&first), 11, &[vec![2500]], &[1, 3]).unwrap_err();
        assert!(matches!(err, MovementError::Overlaps { .. }), "{err}");
        assert!(err.to_string().contains("one range movement at a time"), "{err}");
        assert!(check_join(&natural, &[], 11, &[vec![1000]], &[1]).is_err(), "a token taken");
    }

    #[test]
    fn throttling_paces_bytes_to_the_rate() {
        let mb = 1 << 20;
        assert_eq!(throttle_delay(10 * mb, Duration::from_secs(1), Some(mb)), Duration::from_secs(9));
        assert_eq!(throttle_delay(mb, Duration::from_secs(2), Some(mb)), Duration::ZERO);
        assert_eq!(throttle_delay(u64::MAX, Duration::ZERO, None), Duration::ZERO);
    }

    #[test]
    fn the_state_file_round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let load = || BootstrapRecord::load(dir.path());
        assert!(load().unwrap().is_none());
        for record in [
            BootstrapRecord { state: BootstrapState::InProgress, replaces: None },
            BootstrapRecord { state: BootstrapState::Completed, replaces: None },
            BootstrapRecord { state: BootstrapState::InProgress, replaces: Some(u128::MAX - 7) },
            BootstrapRecord { state: BootstrapState::Completed, replaces: Some(0x33) },
            BootstrapRecord { state: BootstrapState::Decommissioned, replaces: None },
            BootstrapRecord { state: BootstrapState::Leaving, replaces: Some(0x44) },
        ] {
            record.store(dir.path()).unwrap();
            assert_eq!(load().unwrap(), Some(record));
        }
        let path = dir.path().join(BOOTSTRAP_STATE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(load().is_err(), "a checksum mismatch is an error");
        durable_file::write(&path, KIND, &[7, 0]).unwrap();
        assert!(matches!(load(), Err(BootstrapStateError::Corrupt { .. })));
        durable_file::write(&path, KIND, &[1, 1, 2]).unwrap();
        assert!(matches!(load(), Err(BootstrapStateError::Corrupt { .. })), "a cut host id");
    }

    /// A file written before replacements (version 1: the state byte alone) is still read.
    #[test]
    fn a_version_1_state_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = FileKind { version: 1, ..KIND };
        durable_file::write(&dir.path().join(BOOTSTRAP_STATE_FILE), v1, &[2]).unwrap();
        let record = BootstrapRecord::load(dir.path()).unwrap();
        assert_eq!(record, Some(BootstrapRecord { state: BootstrapState::Completed, replaces: None }));
    }
}

//! Range movements in progress and their pending replicas (Cassandra's pending ranges): while a
//! node joins, leaves or replaces a dead one, the nodes that will replicate a token range once
//! the movement completes but do not yet. Writes go to them as well as to the natural replicas
//! (the consistency level counts natural replicas only); reads use natural replicas only. Pure:
//! no I/O; not wired into the write path yet (bootstrap and decommission will drive it).
//!
//! One range movement at a time: a movement whose affected ranges (where its own completion
//! would change the replicas) overlap those of a movement in progress is refused, naming it.

use std::fmt;

use wire::ring::{Ring, RingError};
use wire::token::Token;

use super::HostId;

/// Movements in progress at once at most (each is a node joining, leaving or replacing).
pub const MAX_MOVEMENTS: usize = 16;

/// A vnode owner: a node and its shard.
pub type Owner = (HostId, u16);

/// A change of the ring that moves ranges between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Movement {
    /// `host` bootstraps with its vnode tokens per shard.
    Join { host: HostId, tokens: Vec<Vec<Token>> },
    /// `host` decommissions (or is removed): its ranges go to the next nodes clockwise.
    Leave { host: HostId },
    /// `host` takes over the tokens (shard by shard) of the dead node `dead`.
    Replace { dead: HostId, host: HostId },
}

/// What kind of movement, and whose: names a movement in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovementId {
    pub kind: MovementKind,
    /// The node that joins, leaves or replaces.
    pub host: HostId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovementKind {
    Join,
    Leave,
    Replace { dead: HostId },
}

impl fmt::Display for MovementId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            MovementKind::Join => write!(f, "join of {:032x}", self.host),
            MovementKind::Leave => write!(f, "leave of {:032x}", self.host),
            MovementKind::Replace { dead } => write!(f, "replacement of {dead:032x} by {:032x}", self.host),
        }
    }
}

impl Movement {
    pub fn id(&self) -> MovementId {
        match self {
            Movement::Join { host, .. } => MovementId { kind: MovementKind::Join, host: *host },
            Movement::Leave { host } => MovementId { kind: MovementKind::Leave, host: *host },
            Movement::Replace { dead, host } => MovementId { kind: MovementKind::Replace { dead: *dead }, host: *host },
        }
    }

    /// Hosts this movement is about (the moving node, and the dead one a replacement takes over).
    fn hosts(&self) -> Vec<HostId> {
        match self {
            Movement::Join { host, .. } | Movement::Leave { host } => vec![*host],
            Movement::Replace { dead, host } => vec![*dead, *host],
        }
    }

    /// `vnodes` (sorted by token) once this movement completed.
    fn apply(&self, vnodes: &mut Vec<(Token, Owner)>) -> Result<(), MovementError> {
        match self {
            Movement::Join { host, tokens } => {
                if tokens.is_empty() || tokens.iter().any(Vec::is_empty) {
                    return Err(MovementError::NoTokens(*host));
                }
                for (shard, ts) in tokens.iter().enumerate() {
                    let shard = u16::try_from(shard).map_err(|_| MovementError::NoTokens(*host))?;
                    for t in ts {
                        match vnodes.binary_search_by_key(t, |(v, _)| *v) {
                            Ok(at) => return Err(MovementError::TokenTaken { token: *t, owner: vnodes[at].1 .0 }),
                            Err(at) => vnodes.insert(at, (*t, (*host, shard))),
                        }
                    }
                }
            }
            Movement::Leave { host } => vnodes.retain(|(_, (h, _))| h != host),
            Movement::Replace { dead, host } => {
                vnodes.iter_mut().filter(|(_, (h, _))| h == dead).for_each(|(_, (h, _))| *h = *host);
            }
        }
        Ok(())
    }
}

/// A movement that cannot begin or end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MovementError {
    #[error("the {movement} overlaps the {other} in progress: one range movement at a time")]
    Overlaps { movement: MovementId, other: MovementId },
    #[error("host {0:032x} is already part of a movement in progress")]
    AlreadyMoving(HostId),
    #[error("host {0:032x} already owns tokens in the ring")]
    AlreadyMember(HostId),
    #[error("host {0:032x} owns no tokens in the ring")]
    NotMember(HostId),
    #[error("host {0:032x} joins without tokens (or with more than 65536 shards)")]
    NoTokens(HostId),
    #[error("token {token} is already owned by host {owner:032x}")]
    TokenTaken { token: Token, owner: HostId },
    #[error("host {0:032x} is the last node of the ring: it cannot leave")]
    LastNode(HostId),
    #[error("{MAX_MOVEMENTS} movements are in progress already")]
    TooManyMovements,
    #[error("no movement of host {0:032x} is in progress")]
    NotInProgress(HostId),
    #[error("the ring cannot be built: {0}")]
    Ring(#[from] RingError),
}

/// A token range `[first, last]` (inclusive both ends, never wrapping) with its natural and
/// pending replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRange {
    pub first: Token,
    pub last: Token,
    /// The replicas now, in ring order (reads use these).
    pub natural: Vec<Owner>,
    /// The future replicas that are not natural ones; never empty in [`PendingRanges`].
    pub pending: Vec<Owner>,
}

/// The ranges with pending replicas, sorted and disjoint, for a lookup by token in
/// O(log ranges) on the write path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PendingRanges {
    ranges: Vec<PendingRange>,
}

impl PendingRanges {
    /// The pending replicas of `token` (none when no movement affects it).
    pub fn pending_for(&self, token: Token) -> &[Owner] {
        let at = self.ranges.partition_point(|r| r.last < token);
        match self.ranges.get(at) {
            Some(r) if r.first <= token => &r.pending,
            _ => &[],
        }
    }

    /// Every range with pending replicas, by token.
    pub fn ranges(&self) -> &[PendingRange] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// A movement in progress and the token ranges its completion changes.
#[derive(Debug, Clone)]
struct InProgress {
    movement: Movement,
    /// Sorted, disjoint `[first, last]` ranges.
    affected: Vec<(Token, Token)>,
}

/// The natural ring, the movements in progress, and the pending replicas they make.
#[derive(Debug, Clone)]
pub struct RangeMovements {
    rf: usize,
    natural: Ring<Owner>,
    in_progress: Vec<InProgress>,
    pending: PendingRanges,
}

impl RangeMovements {
    /// No movement in progress on the ring `natural`, replicated `rf` times.
    pub fn new(natural: Ring<Owner>, rf: usize) -> RangeMovements {
        RangeMovements { rf, natural, in_progress: Vec::new(), pending: PendingRanges::default() }
    }

    pub fn natural(&self) -> &Ring<Owner> {
        &self.natural
    }

    /// The replicas reads use: natural ones only, never a joining node's.
    pub fn natural_for(&self, token: Token) -> Vec<Owner> {
        self.natural.replicas(token, self.rf, |(host, _)| *host).into_iter().copied().collect()
    }

    /// Writes go to these as well as to [`RangeMovements::natural_for`].
    pub fn pending_for(&self, token: Token) -> &[Owner] {
        self.pending.pending_for(token)
    }

    pub fn pending(&self) -> &PendingRanges {
        &self.pending
    }

    pub fn movements(&self) -> impl Iterator<Item = &Movement> {
        self.in_progress.iter().map(|m| &m.movement)
    }

    /// Starts `movement` unless it is invalid on the ring or its affected ranges overlap a
    /// movement in progress (Cassandra's rule of one range movement at a time).
    pub fn begin(&mut self, movement: Movement) -> Result<(), MovementError> {
        if self.in_progress.len() == MAX_MOVEMENTS {
            return Err(MovementError::TooManyMovements);
        }
        let in_ring = |h: HostId| self.natural.vnodes().iter().any(|(_, (host, _))| *host == h);
        for host in movement.hosts() {
            if self.in_progress.iter().any(|m| m.movement.hosts().contains(&host)) {
                return Err(MovementError::AlreadyMoving(host));
            }
        }
        match &movement {
            Movement::Join { host, .. } if in_ring(*host) => return Err(MovementError::AlreadyMember(*host)),
            Movement::Leave { host } if !in_ring(*host) => return Err(MovementError::NotMember(*host)),
            Movement::Replace { dead, .. } if !in_ring(*dead) => return Err(MovementError::NotMember(*dead)),
            Movement::Replace { host, .. } if in_ring(*host) => return Err(MovementError::AlreadyMember(*host)),
            _ => {}
        }
        let mut alone = self.natural.vnodes().to_vec();
        movement.apply(&mut alone)?;
        if alone.is_empty() {
            return Err(MovementError::LastNode(movement.id().host));
        }
        // A joining token must not clash with another joining node's either.
        let mut everything = self.future_vnodes()?;
        movement.apply(&mut everything)?;
        let affected: Vec<(Token, Token)> = compare(&self.natural, &Ring::new(alone)?, self.rf)
            .into_iter()
            .filter(|c| hosts(&c.natural) != hosts(&c.future))
            .map(|c| (c.first, c.last))
            .collect();
        if let Some(other) = self.in_progress.iter().find(|m| overlap(&m.affected, &affected)) {
            return Err(MovementError::Overlaps { movement: movement.id(), other: other.movement.id() });
        }
        self.in_progress.push(InProgress { movement, affected });
        self.recompute()
    }

    /// Ends the movement of `host` (the joining, leaving or replacing node): the ring becomes
    /// what it made, and its pending replicas natural ones.
    pub fn finish(&mut self, host: HostId) -> Result<(), MovementError> {
        let done = self.take(host)?;
        let mut vnodes = self.natural.vnodes().to_vec();
        done.movement.apply(&mut vnodes)?;
        self.natural = Ring::new(vnodes)?;
        // The others' affected ranges were against the old ring; they stay disjoint from each
        // other, and are recomputed against the new one.
        for m in &mut self.in_progress {
            let mut alone = self.natural.vnodes().to_vec();
            m.movement.apply(&mut alone)?;
            m.affected = compare(&self.natural, &Ring::new(alone)?, self.rf)
                .into_iter()
                .filter(|c| hosts(&c.natural) != hosts(&c.future))
                .map(|c| (c.first, c.last))
                .collect();
        }
        self.recompute()
    }

    /// Drops the movement of `host` without changing the ring (a bootstrap that failed).
    pub fn abort(&mut self, host: HostId) -> Result<(), MovementError> {
        self.take(host)?;
        self.recompute()
    }

    fn take(&mut self, host: HostId) -> Result<InProgress, MovementError> {
        let at = self
            .in_progress
            .iter()
            .position(|m| m.movement.id().host == host)
            .ok_or(MovementError::NotInProgress(host))?;
        Ok(self.in_progress.remove(at))
    }

    /// The ring once every movement in progress completed.
    fn future_vnodes(&self) -> Result<Vec<(Token, Owner)>, MovementError> {
        let mut vnodes = self.natural.vnodes().to_vec();
        for m in &self.in_progress {
            m.movement.apply(&mut vnodes)?;
        }
        Ok(vnodes)
    }

    fn recompute(&mut self) -> Result<(), MovementError> {
        let future = Ring::new(self.future_vnodes()?)?;
        let ranges = compare(&self.natural, &future, self.rf)
            .into_iter()
            .filter_map(|c| {
                let natural_hosts = hosts(&c.natural);
                let pending: Vec<Owner> = c.future.into_iter().filter(|(h, _)| !natural_hosts.contains(h)).collect();
                (!pending.is_empty()).then_some(PendingRange {
                    first: c.first,
                    last: c.last,
                    natural: c.natural,
                    pending,
                })
            })
            .collect();
        self.pending = PendingRanges { ranges };
        debug_assert!(self.pending.ranges.windows(2).all(|w| w[0].last < w[1].first), "sorted, disjoint");
        Ok(())
    }
}

/// One piece of the token space where both rings keep the same replicas.
struct Compared {
    first: Token,
    last: Token,
    natural: Vec<Owner>,
    future: Vec<Owner>,
}

/// The replicas of both rings over pieces of the token space, `[first, last]` each, sorted:
/// between two consecutive tokens of either ring, both rings' replicas are constant. A piece
/// that wraps past the largest token is split in two.
fn compare(natural: &Ring<Owner>, future: &Ring<Owner>, rf: usize) -> Vec<Compared> {
    let mut bounds: Vec<Token> = natural.vnodes().iter().chain(future.vnodes()).map(|(t, _)| *t).collect();
    bounds.sort_unstable();
    bounds.dedup();
    let replicas = |ring: &Ring<Owner>, t: Token| -> Vec<Owner> {
        ring.replicas(t, rf, |(host, _)| *host).into_iter().copied().collect()
    };
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut piece = |first: Token, last: Token, end: Token| {
        out.push(Compared { first, last, natural: replicas(natural, end), future: replicas(future, end) });
    };
    let (lowest, highest) = (bounds[0], bounds[bounds.len() - 1]);
    // The wrapping range (highest, lowest]: its start of the token space first.
    piece(Token::MIN, lowest, lowest);
    for w in bounds.windows(2) {
        piece(w[0] + 1, w[1], w[1]);
    }
    if highest < Token::MAX {
        piece(highest + 1, Token::MAX, lowest);
    }
    out
}

fn hosts(owners: &[Owner]) -> Vec<HostId> {
    let mut hosts: Vec<HostId> = owners.iter().map(|(h, _)| *h).collect();
    hosts.sort_unstable();
    hosts
}

/// Whether two sorted lists of disjoint `[first, last]` ranges share a token.
fn overlap(a: &[(Token, Token)], b: &[(Token, Token)]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].1 < b[j].0 {
            i += 1;
        } else if b[j].1 < a[i].0 {
            j += 1;
        } else {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::cluster::test_rings::{fresh_tokens, ring};

    fn host_set(owners: &[Owner]) -> BTreeSet<HostId> {
        owners.iter().map(|(h, _)| *h).collect()
    }

    /// Tokens to probe: random ones and every boundary of both rings with its neighbours.
    fn probes(a: &Ring<Owner>, b: &Ring<Owner>, seed: u64) -> Vec<Token> {
        let mut out: Vec<Token> = vec![Token::MIN, Token::MIN + 1, 0, Token::MAX];
        for (t, _) in a.vnodes().iter().chain(b.vnodes()) {
            out.extend([t.wrapping_sub(1), *t, t.wrapping_add(1)]);
        }
        let mut x = seed | 1;
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.push(x as i64);
        }
        out
    }

    /// Checks `movement` on a ring: pending = future \ natural everywhere; reads never name a
    /// node that is not natural; after completion `after` relates to natural and pending as
    /// `check` says.
    fn check_movement(
        natural: Ring<Owner>,
        rf: usize,
        movement: Movement,
        seed: u64,
        check: impl Fn(&BTreeSet<HostId>, &BTreeSet<HostId>, &BTreeSet<HostId>) -> Result<(), String>,
    ) -> Result<(), TestCaseError> {
        let mut moves = RangeMovements::new(natural.clone(), rf);
        moves.begin(movement.clone()).map_err(|e| TestCaseError::fail(format!("seed {seed}: {e}")))?;
        let mut future = natural.vnodes().to_vec();
        movement.apply(&mut future).unwrap();
        let future = Ring::new(future).unwrap();
        let natural_hosts: BTreeSet<HostId> = natural.vnodes().iter().map(|(_, (h, _))| *h).collect();
        let mut after = moves.clone();
        after.finish(movement.id().host).map_err(|e| TestCaseError::fail(format!("seed {seed}: {e}")))?;
        prop_assert!(after.pending().is_empty(), "seed {}: nothing pending once done", seed);
        for token in probes(&natural, &future, seed) {
            let reads = moves.natural_for(token);
            prop_assert!(reads.iter().all(|(h, _)| natural_hosts.contains(h)), "seed {}: reads {:?}", seed, reads);
            let natural_now = host_set(&reads);
            let pending = host_set(moves.pending_for(token));
            let expected: BTreeSet<HostId> =
                &host_set(&future.replicas(token, rf, |(h, _)| *h).into_iter().copied().collect::<Vec<_>>())
                    - &natural_now;
            prop_assert_eq!(&pending, &expected, "seed {} token {}", seed, token);
            let later = host_set(&after.natural_for(token));
            check(&natural_now, &pending, &later)
                .map_err(|e| TestCaseError::fail(format!("seed {seed} token {token}: {e}")))?;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn a_join_makes_the_joining_node_pending_where_it_will_replicate(
            seed in any::<u64>(), nodes in 1u128..6, vnodes in 1usize..6, rf in 1usize..4, new_vnodes in 1usize..6,
        ) {
            let natural = ring(nodes, vnodes, seed, 2);
            let tokens = fresh_tokens(&natural, new_vnodes, seed);
            let joining = nodes + 1;
            check_movement(natural, rf, Movement::Join { host: joining, tokens }, seed, |now, pending, after| {
                if !pending.iter().all(|h| *h == joining) {
                    return Err(format!("only the joining node is pending: {pending:?}"));
                }
                match after.is_subset(&(now | pending)) {
                    true => Ok(()),
                    false => Err(format!("after {after:?} not within natural {now:?} + pending {pending:?}")),
                }
            })?;
        }

        #[test]
        fn a_leave_makes_the_next_nodes_pending_and_they_replace_it(
            seed in any::<u64>(), nodes in 2u128..7, vnodes in 1usize..6, rf in 1usize..4, leaving in 1u128..7,
        ) {
            let leaving = leaving.min(nodes);
            check_movement(ring(nodes, vnodes, seed, 2), rf, Movement::Leave { host: leaving }, seed, |now, pending, after| {
                let mut expected = now | pending;
                expected.remove(&leaving);
                match *after == expected {
                    true => Ok(()),
                    false => Err(format!("after {after:?}, natural {now:?} + pending {pending:?} - {leaving}")),
                }
            })?;
        }

        #[test]
        fn a_replacement_is_pending_for_every_range_of_the_dead_node(
            seed in any::<u64>(), nodes in 1u128..6, vnodes in 1usize..6, rf in 1usize..4, dead in 1u128..6,
        ) {
            let dead = dead.min(nodes);
            let natural = ring(nodes, vnodes, seed, 2);
            let new = nodes + 1;
            check_movement(natural, rf, Movement::Replace { dead, host: new }, seed, |now, pending, after| {
                let expected_pending: BTreeSet<HostId> = if now.contains(&dead) { [new].into() } else { BTreeSet::new() };
                let mut expected = now | pending;
                expected.remove(&dead);
                match *pending == expected_pending && *after == expected {
                    true => Ok(()),
                    false => Err(format!("natural {now:?} pending {pending:?} after {after:?}")),
                }
            })?;
        }
    }

    /// Four nodes with one token each at 0, 1000, 2000 and 3000 (host = token / 1000 + 1).
    fn four_nodes() -> Ring<Owner> {
        Ring::new((0..4).map(|i| (i * 1000, (i as HostId + 1, 0))).collect()).unwrap()
    }

    #[test]
    fn a_movement_overlapping_one_in_progress_is_refused_naming_it() {
        let mut moves = RangeMovements::new(four_nodes(), 1);
        moves.begin(Movement::Join { host: 10, tokens: vec![vec![500]] }).unwrap();
        assert_eq!(moves.pending_for(400), [(10, 0)]);
        assert_eq!(moves.pending_for(500), [(10, 0)]);
        assert!(moves.pending_for(501).is_empty() && moves.pending_for(0).is_empty());
        // (0, 600] overlaps (0, 500].
        let err = moves.begin(Movement::Join { host: 11, tokens: vec![vec![600]] }).unwrap_err();
        let first = MovementId { kind: MovementKind::Join, host: 10 };
        assert_eq!(
            err,
            MovementError::Overlaps { movement: MovementId { kind: MovementKind::Join, host: 11 }, other: first }
        );
        assert!(err.to_string().contains("join of 0000000000000000000000000000000a"), "{err}");
        // The leave of node 2 (token 1000) moves (0, 1000] to node 3: overlaps too.
        let err = moves.begin(Movement::Leave { host: 2 }).unwrap_err();
        assert!(matches!(err, MovementError::Overlaps { other, .. } if other == first), "{err}");
        // (2000, 2500] is elsewhere.
        moves.begin(Movement::Join { host: 12, tokens: vec![vec![2500]] }).unwrap();
        assert_eq!(moves.pending_for(2100), [(12, 0)]);
        assert_eq!(moves.movements().count(), 2);
        moves.finish(10).unwrap();
        assert_eq!(moves.natural_for(400), [(10, 0)]);
        assert!(moves.pending_for(400).is_empty());
        assert_eq!(moves.pending_for(2100), [(12, 0)], "the other movement stays pending");
        moves.abort(12).unwrap();
        assert!(moves.pending().is_empty());
        assert_eq!(moves.natural_for(2100), [(4, 0)], "an aborted join leaves the ring as it was");
    }

    #[test]
    fn the_wrapping_range_is_pending_on_both_sides_of_the_token_space() {
        let mut moves = RangeMovements::new(four_nodes(), 1);
        // Node 1 (token 0) owns (3000, 0], wrapping; a join at -100 takes (3000, -100].
        moves.begin(Movement::Join { host: 9, tokens: vec![vec![-100]] }).unwrap();
        for token in [3001, Token::MAX, Token::MIN, -100] {
            assert_eq!(moves.pending_for(token), [(9, 0)], "token {token}");
        }
        for token in [3000, -99, 0] {
            assert!(moves.pending_for(token).is_empty(), "token {token}");
        }
    }

    #[test]
    fn invalid_movements_are_typed_errors() {
        let mut moves = RangeMovements::new(four_nodes(), 3);
        let join = |host, token| Movement::Join { host, tokens: vec![vec![token]] };
        assert_eq!(moves.begin(join(1, 5)), Err(MovementError::AlreadyMember(1)));
        assert_eq!(moves.begin(join(9, 1000)), Err(MovementError::TokenTaken { token: 1000, owner: 2 }));
        assert_eq!(moves.begin(Movement::Join { host: 9, tokens: vec![] }), Err(MovementError::NoTokens(9)));
        assert_eq!(moves.begin(Movement::Leave { host: 9 }), Err(MovementError::NotMember(9)));
        assert_eq!(moves.begin(Movement::Replace { dead: 9, host: 10 }), Err(MovementError::NotMember(9)));
        assert_eq!(moves.begin(Movement::Replace { dead: 1, host: 2 }), Err(MovementError::AlreadyMember(2)));
        assert_eq!(moves.finish(9), Err(MovementError::NotInProgress(9)));
        moves.begin(Movement::Leave { host: 4 }).unwrap();
        assert_eq!(moves.begin(Movement::Leave { host: 4 }), Err(MovementError::AlreadyMoving(4)));
        assert_eq!(moves.begin(Movement::Replace { dead: 4, host: 10 }), Err(MovementError::AlreadyMoving(4)));
        let lone = Ring::new(vec![(0, (1, 0))]).unwrap();
        assert_eq!(RangeMovements::new(lone, 1).begin(Movement::Leave { host: 1 }), Err(MovementError::LastNode(1)));
    }
}

//! A node leaving the ring, without I/O: by decommission (the node streams what it holds to
//! the nodes that take its ranges over, then leaves) or by removenode (it is dead; the
//! surviving replicas of each range stream it to the new owners). Which ranges move where,
//! and whether the leave may start. `coordinator::decommission` drives it.

use wire::ring::Ring;

use super::bootstrap::merge_pieces;
use super::merkle::TokenRange;
use super::pending::{Movement, MovementError, Owner, RangeMovements};
use super::HostId;

/// One token range the leaving node replicates whose replicas change once it left: the nodes
/// that take it over (`targets`, which do not replicate it now) and the other current
/// replicas (`sources`, in ring order; the ones that hold it without the leaving node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveStream {
    pub range: TokenRange,
    pub sources: Vec<HostId>,
    pub targets: Vec<HostId>,
}

/// Every range `host` replicates at `rf` in `natural` that another node takes over once
/// `host` left, with its sources and targets; adjacent ranges alike are merged. In ring order.
pub fn plan(natural: &Ring<Owner>, rf: usize, host: HostId) -> Result<Vec<LeaveStream>, MovementError> {
    let mut moves = RangeMovements::new(natural.clone(), rf);
    moves.begin(Movement::Leave { host })?;
    let pieces = moves.pending().ranges().iter().map(|r| {
        let sources: Vec<HostId> = r.natural.iter().map(|(h, _)| *h).filter(|h| *h != host).collect();
        let targets: Vec<HostId> = r.pending.iter().map(|(h, _)| *h).collect();
        (r.first, r.last, (sources, targets))
    });
    Ok(merge_pieces(pieces)
        .into_iter()
        .map(|(range, (sources, targets))| LeaveStream { range, sources, targets })
        .collect())
}

/// Why a leave may not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaveError {
    #[error(transparent)]
    Movement(#[from] MovementError),
    /// Cassandra's refusal of a decommission that would leave fewer nodes than a keyspace's
    /// replication factor.
    #[error(
        "not enough nodes to maintain the replication factor of table {table} (RF = {rf}, N = {nodes}): \
         a decommission would leave {}",
        .nodes - 1
    )]
    TooFewNodes { table: String, rf: usize, nodes: usize },
}

/// Whether `host` may start leaving `natural`, given the movements in progress (`others`) and
/// each table's replication factor (`tables`: name, RF): refused when its ranges overlap a
/// movement in progress at some factor (one range movement at a time), or, for a decommission
/// (`decommission`), when fewer nodes than a table's RF would remain (removenode takes a dead
/// node out whatever the RF: its copies are gone already).
pub fn check_leave(
    natural: &Ring<Owner>,
    others: &[Movement],
    host: HostId,
    tables: &[(String, usize)],
    decommission: bool,
) -> Result<(), LeaveError> {
    let mut nodes: Vec<HostId> = natural.vnodes().iter().map(|(_, (h, _))| *h).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if !nodes.contains(&host) {
        return Err(MovementError::NotMember(host).into());
    }
    if decommission {
        if let Some((table, rf)) = tables.iter().filter(|(_, rf)| *rf >= nodes.len()).max_by_key(|(_, rf)| *rf) {
            return Err(LeaveError::TooFewNodes { table: table.clone(), rf: *rf, nodes: nodes.len() });
        }
    }
    let mut rfs: Vec<usize> = tables.iter().map(|(_, rf)| *rf).collect();
    rfs.sort_unstable();
    rfs.dedup();
    for rf in rfs {
        let mut moves = RangeMovements::new(natural.clone(), rf);
        for other in others {
            // A movement peers cannot take (it overlaps another) is not in progress for them.
            let _ = moves.begin(other.clone());
        }
        moves.begin(Movement::Leave { host })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::test_rings::{hosts, probe_tokens, ring};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Every token whose replicas change when the node leaves is in exactly one planned
        /// range, nothing else is; its targets are the new replicas, its sources the others.
        #[test]
        fn the_plan_covers_exactly_what_the_others_take_over(
            seed in any::<u64>(), nodes in 2u128..7, vnodes in 1usize..5, rf in 1usize..4, leaving in 1u128..7,
        ) {
            let leaving = 1 + leaving % nodes;
            let natural = ring(nodes, vnodes, seed, 2);
            let streams = plan(&natural, rf, leaving).unwrap();
            let future = Ring::new(natural.vnodes().iter().copied().filter(|(_, (h, _))| *h != leaving).collect()).unwrap();
            for token in probe_tokens(&natural) {
                let now = hosts(&natural, token, rf);
                let later = hosts(&future, token, rf);
                let gained: Vec<HostId> = later.iter().copied().filter(|h| !now.contains(h)).collect();
                let covering: Vec<&LeaveStream> = streams.iter().filter(|s| s.range.contains(token)).collect();
                prop_assert_eq!(covering.len(), usize::from(!gained.is_empty()), "token {} in {:?}", token, streams);
                if let Some(s) = covering.first() {
                    prop_assert!(now.contains(&leaving), "only the leaving node's ranges move");
                    let mut targets = s.targets.clone();
                    targets.sort_unstable();
                    let mut expected = gained.clone();
                    expected.sort_unstable();
                    prop_assert_eq!(targets, expected);
                    let others: Vec<HostId> = now.iter().copied().filter(|h| *h != leaving).collect();
                    prop_assert_eq!(&s.sources, &others);
                }
            }
        }
    }

    #[test]
    fn a_leaving_node_hands_each_range_to_the_next_node_clockwise() {
        // Nodes 1..4 at 0, 1000, 2000, 3000. RF 1: node 2 (token 1000) leaves, node 3 takes
        // (0, 1000] and has no other source than the leaving node.
        let natural = Ring::new((0..4).map(|i| (i * 1000, (i as HostId + 1, 0))).collect()).unwrap();
        assert_eq!(
            plan(&natural, 1, 2).unwrap(),
            vec![LeaveStream { range: TokenRange::new(0, 1000), sources: vec![], targets: vec![3] }]
        );
        // RF 2: node 2 replicates (3000, 0] (with node 1) and (0, 1000] (with node 3); node 3
        // takes the first and node 4 the second.
        assert_eq!(
            plan(&natural, 2, 2).unwrap(),
            vec![
                LeaveStream { range: TokenRange::new(3000, 0), sources: vec![1], targets: vec![3] },
                LeaveStream { range: TokenRange::new(0, 1000), sources: vec![3], targets: vec![4] },
            ]
        );
    }

    #[test]
    fn a_decommission_below_the_replication_factor_or_overlapping_a_movement_is_refused() {
        let natural = Ring::new((0..4).map(|i| (i * 1000, (i as HostId + 1, 0))).collect()).unwrap();
        let tables = |rf: usize| vec![("t".to_owned(), 1), ("kv".to_owned(), rf)];
        assert!(check_leave(&natural, &[], 2, &tables(3), true).is_ok(), "4 nodes, RF 3");
        let err = check_leave(&natural, &[], 2, &tables(4), true).unwrap_err();
        assert_eq!(err, LeaveError::TooFewNodes { table: "kv".into(), rf: 4, nodes: 4 });
        assert!(err.to_string().contains("not enough nodes to maintain the replication factor of table kv"), "{err}");
        assert!(check_leave(&natural, &[], 2, &tables(4), false).is_ok(), "removenode ignores the RF");
        // A join at 500 changes (0, 500]'s replicas: so does the leave of node 2 at RF 1.
        let join = Movement::Join { host: 9, tokens: vec![vec![500]] };
        let err = check_leave(&natural, std::slice::from_ref(&join), 2, &tables(1), true).unwrap_err();
        assert!(err.to_string().contains("one range movement at a time"), "{err}");
        // Node 4's leave (its range (2000, 3000]) does not overlap it at RF 1.
        assert!(check_leave(&natural, std::slice::from_ref(&join), 4, &[("t".into(), 1)], true).is_ok());
        let err = check_leave(&natural, &[], 9, &tables(1), false).unwrap_err();
        assert_eq!(err, LeaveError::Movement(MovementError::NotMember(9)));
    }
}

//! Which tokens a node keeps when it cleans up (`enigmadb admin cleanup`, Cassandra's
//! `nodetool cleanup`): per shard, the token ranges it replicates under the natural ring at a
//! table's replication factor. A node that handed ranges to a joining node still holds their
//! data; a cleanup compaction (`shards::compaction::cleanup`) drops what is outside these
//! ranges. Pure: ring math only; `coordinator::cleanup` drives it.

use shards::compaction::OwnedRanges;
use wire::ring::Ring;
use wire::token::Token;

use super::pending::Owner;
use super::HostId;

/// For each of `host`'s `shards` shards, the token ranges it replicates in `ring` at `rf`: a
/// token is kept by shard `s` when `(host, s)` is one of its replicas (on every replica the
/// shard is the node's first vnode met clockwise, which is where the node stores the token).
/// A host not in the ring owns nothing.
pub fn owned_ranges(ring: &Ring<Owner>, rf: usize, host: HostId, shards: usize) -> Vec<OwnedRanges> {
    let mut per_shard: Vec<Vec<(Token, Token)>> = vec![Vec::new(); shards];
    let vnodes = ring.vnodes();
    for (i, (token, _)) in vnodes.iter().enumerate() {
        // The range (previous vnode's token, token]; the first vnode's wraps past the end.
        let previous = vnodes[(i + vnodes.len() - 1) % vnodes.len()].0;
        let replicas = ring.replicas(*token, rf, |(h, _)| *h);
        let Some(&&(_, shard)) = replicas.iter().find(|(h, _)| *h == host) else { continue };
        let Some(ranges) = per_shard.get_mut(usize::from(shard)) else { continue };
        if previous < *token {
            ranges.push((previous + 1, *token));
        } else {
            // Wraps (or one vnode: the whole ring).
            if previous < Token::MAX {
                ranges.push((previous + 1, Token::MAX));
            }
            ranges.push((Token::MIN, *token));
        }
    }
    per_shard
        .into_iter()
        .map(|ranges| {
            // Every range above starts at or before it ends.
            OwnedRanges::new(ranges).unwrap_or_else(|e| unreachable!("well-formed ranges: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::test_rings::ring;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A shard keeps a token exactly when it is one of the token's replicas.
        #[test]
        fn a_shard_keeps_exactly_the_tokens_it_replicates(
            seed in any::<u64>(), nodes in 1u128..6, vnodes in 1usize..6, rf in 1usize..4, shards in 1u16..3,
            host in 1u128..7,
        ) {
            let ring = ring(nodes, vnodes, seed, shards);
            let owned = owned_ranges(&ring, rf, host, usize::from(shards));
            prop_assert_eq!(owned.len(), usize::from(shards));
            let mut probes: Vec<Token> = vec![Token::MIN + 1, 0, Token::MAX, -1, 1];
            for (t, _) in ring.vnodes() {
                probes.extend([t.wrapping_sub(1), *t, t.wrapping_add(1)]);
            }
            for token in probes.into_iter().filter(|t| *t != Token::MIN) {
                let replicas: Vec<Owner> = ring.replicas(token, rf, |(h, _)| *h).into_iter().copied().collect();
                for shard in 0..shards {
                    prop_assert_eq!(
                        owned[usize::from(shard)].contains(token),
                        replicas.contains(&(host, shard)),
                        "token {} shard {} replicas {:?}", token, shard, replicas
                    );
                }
            }
        }
    }

    #[test]
    fn a_node_keeps_its_own_range_and_the_ranges_before_it_it_replicates() {
        // Nodes 1..4 at 0, 1000, 2000, 3000.
        let ring = Ring::new((0..4).map(|i| (i * 1000, (i as HostId + 1, 0))).collect()).unwrap();
        assert_eq!(owned_ranges(&ring, 1, 2, 1)[0].ranges(), &[(1, 1000)]);
        // RF 2: node 2 is also the second replica of node 1's range (3000, 0].
        assert_eq!(owned_ranges(&ring, 2, 2, 1)[0].ranges(), &[(Token::MIN, 1000), (3001, Token::MAX)]);
        assert_eq!(owned_ranges(&ring, 2, 3, 1)[0].ranges(), &[(1, 2000)]);
        // Node 1 owns (3000, 0], across the end of the token space.
        assert_eq!(owned_ranges(&ring, 1, 1, 1)[0].ranges(), &[(Token::MIN, 0), (3001, Token::MAX)]);
        assert!(owned_ranges(&ring, 3, 9, 1)[0].ranges().is_empty(), "not in the ring");
        let alone = Ring::new(vec![(5, (1, 0))]).unwrap();
        assert_eq!(owned_ranges(&alone, 1, 1, 1)[0].ranges(), &[(Token::MIN, Token::MAX)]);
    }
}

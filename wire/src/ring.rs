//! The token ring: sorted vnode tokens, each owned by someone (a shard of this node now; a
//! (node, shard) pair in a cluster). A token belongs to the first vnode at or after it, walking
//! clockwise and wrapping past the largest token, as in Cassandra.

use std::collections::BTreeMap;

use crate::token::Token;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring<O> {
    /// Sorted by token; tokens unique.
    vnodes: Vec<(Token, O)>,
}

/// A ring that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a ring needs at least one vnode")]
    Empty,
    #[error("token {0} is owned twice")]
    DuplicateToken(Token),
}

impl<O: Clone> Ring<O> {
    pub fn new(mut vnodes: Vec<(Token, O)>) -> Result<Ring<O>, RingError> {
        if vnodes.is_empty() {
            return Err(RingError::Empty);
        }
        vnodes.sort_by_key(|(t, _)| *t);
        if let Some(w) = vnodes.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(RingError::DuplicateToken(w[0].0));
        }
        Ok(Ring { vnodes })
    }

    /// Index of the vnode that owns `token`: the first vnode token >= `token`, wrapping.
    pub fn vnode_index(&self, token: Token) -> usize {
        match self.vnodes.partition_point(|(t, _)| *t < token) {
            i if i == self.vnodes.len() => 0,
            i => i,
        }
    }

    pub fn owner(&self, token: Token) -> &O {
        &self.vnodes[self.vnode_index(token)].1
    }

    pub fn vnodes(&self) -> &[(Token, O)] {
        &self.vnodes
    }

    /// The replicas of `token` under SimpleStrategy: walking clockwise from the vnode that owns
    /// the token, the first vnode of each distinct node (`node_of` maps a vnode's owner to its
    /// node) until `rf` nodes are found; fewer when the ring has fewer nodes. The first replica
    /// is [`Ring::owner`]. Costs one lap of the ring at most, and `rf` comparisons per vnode.
    pub fn replicas<N: PartialEq>(&self, token: Token, rf: usize, node_of: impl Fn(&O) -> N) -> Vec<&O> {
        let mut nodes: Vec<N> = Vec::with_capacity(rf);
        let mut replicas = Vec::with_capacity(rf);
        let start = self.vnode_index(token);
        let lap = self.vnodes[start..].iter().chain(&self.vnodes[..start]);
        for (_, owner) in lap {
            if replicas.len() == rf {
                break;
            }
            let node = node_of(owner);
            if !nodes.contains(&node) {
                nodes.push(node);
                replicas.push(owner);
            }
        }
        replicas
    }

    /// The fraction of the token space each node owns as the first replica (the "owns" column
    /// of `admin status`): a vnode owns the tokens after the previous vnode up to its own.
    /// The fractions add up to 1.
    pub fn ownership<N: Ord>(&self, node_of: impl Fn(&O) -> N) -> BTreeMap<N, f64> {
        self.range_ownership(|t| vec![node_of(self.owner(t))])
    }

    /// The fraction of the token space each node holds a replica of at replication factor
    /// `rf` (nodetool's "effective ownership"); they add up to min(rf, nodes).
    pub fn replica_ownership<N: Ord>(&self, rf: usize, node_of: impl Fn(&O) -> N) -> BTreeMap<N, f64> {
        self.range_ownership(|t| self.replicas(t, rf, &node_of).into_iter().map(&node_of).collect())
    }

    /// Each vnode's share of the token space, in ring order: the tokens after the previous
    /// vnode's up to its own, over 2^64 (`admin ring`'s "owns"). They add up to 1.
    pub fn vnode_shares(&self) -> impl Iterator<Item = f64> + '_ {
        const TOKEN_SPACE: f64 = (1u128 << 64) as f64;
        let previous = std::iter::once(self.vnodes[self.vnodes.len() - 1].0).chain(self.vnodes.iter().map(|v| v.0));
        self.vnodes.iter().zip(previous).map(|((token, _), previous)| {
            // Wrapping distance from the previous vnode; a lone vnode owns the whole ring.
            let width = match token.wrapping_sub(previous) as u64 {
                0 => 1u128 << 64,
                w => w as u128,
            };
            width as f64 / TOKEN_SPACE
        })
    }

    /// Adds each vnode's share of the token space to every node `holders(vnode token)` names
    /// (all tokens of a vnode's range have the vnode's holders).
    fn range_ownership<N: Ord>(&self, holders: impl Fn(Token) -> Vec<N>) -> BTreeMap<N, f64> {
        let mut owned = BTreeMap::new();
        for ((token, _), share) in self.vnodes.iter().zip(self.vnode_shares()) {
            for node in holders(*token) {
                *owned.entry(node).or_insert(0.0) += share;
            }
        }
        owned
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::test_runner::{RngAlgorithm, TestRng};

    use super::*;

    #[test]
    fn tokens_belong_to_the_next_vnode_clockwise() {
        let ring = Ring::new(vec![(100, 'b'), (-50, 'a'), (500, 'c')]).unwrap();
        assert_eq!(*ring.owner(-50), 'a');
        assert_eq!(*ring.owner(-49), 'b');
        assert_eq!(*ring.owner(100), 'b');
        assert_eq!(*ring.owner(101), 'c');
        assert_eq!(*ring.owner(501), 'a', "wraps past the largest token");
        assert_eq!(*ring.owner(i64::MIN), 'a');
    }

    #[test]
    fn vnode_shares_are_the_ranges_before_each_token() {
        let ring = Ring::new(vec![(0, 'a'), (i64::MIN, 'b'), (1 << 62, 'c')]).unwrap();
        let shares: Vec<f64> = ring.vnode_shares().collect();
        // b: (1<<62, MIN] wraps a quarter; a: (MIN, 0] a half; c: (0, 1<<62] a quarter.
        assert_eq!(shares, [0.25, 0.5, 0.25]);
        assert_eq!(Ring::new(vec![(7, 'a')]).unwrap().vnode_shares().collect::<Vec<_>>(), [1.0]);
    }

    #[test]
    fn bad_rings_are_refused() {
        assert_eq!(Ring::<u8>::new(vec![]), Err(RingError::Empty));
        assert_eq!(Ring::new(vec![(1, 0), (1, 1)]), Err(RingError::DuplicateToken(1)));
    }

    /// Vnodes owned by (node, shard), as in a cluster.
    type Owner = (u8, u16);

    fn node(o: &Owner) -> u8 {
        o.0
    }

    #[test]
    fn replicas_walk_clockwise_keeping_each_nodes_first_vnode() {
        let ring = Ring::new(vec![(10, (1, 0)), (20, (1, 1)), (30, (2, 0)), (40, (1, 0)), (50, (3, 0))]).unwrap();
        assert_eq!(ring.replicas(15, 2, node), [&(1, 1), &(2, 0)], "node 1's shard met first is shard 1");
        assert_eq!(ring.replicas(45, 3, node), [&(3, 0), &(1, 0), &(2, 0)], "wraps past the largest token");
        assert_eq!(ring.replicas(45, 5, node).len(), 3, "never more than the nodes in the ring");
        assert!(ring.replicas(45, 0, node).is_empty());
    }

    #[test]
    fn ownership_splits_the_token_space_by_range_width() {
        let ring = Ring::new(vec![(0, (1, 0)), (i64::MIN, (2, 0))]).unwrap();
        let owned = ring.ownership(node);
        assert_eq!(owned[&1], 0.5);
        assert_eq!(owned[&2], 0.5);
        let lone = Ring::new(vec![(7, (9, 0))]).unwrap();
        assert_eq!(lone.ownership(node)[&9], 1.0, "a lone vnode owns the whole ring");
        assert_eq!(ring.replica_ownership(3, node), [(1, 1.0), (2, 1.0)].into());
    }

    fn ring_strategy() -> impl Strategy<Value = Ring<Owner>> {
        proptest::collection::btree_map(any::<i64>(), (0u8..12, 0u16..3), 1..64)
            .prop_map(|vnodes| Ring::new(vnodes.into_iter().collect()).expect("btree_map keys are unique tokens"))
    }

    fn node_count(ring: &Ring<Owner>) -> usize {
        ring.ownership(node).len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_token_gets_min_rf_nodes_distinct_nodes_led_by_its_owner(
            ring in ring_strategy(), token in any::<i64>(), rf in 1usize..6,
        ) {
            let replicas = ring.replicas(token, rf, node);
            prop_assert_eq!(replicas.len(), rf.min(node_count(&ring)));
            let mut nodes: Vec<u8> = replicas.iter().map(|o| o.0).collect();
            nodes.sort_unstable();
            nodes.dedup();
            prop_assert_eq!(nodes.len(), replicas.len(), "replicas on distinct nodes");
            prop_assert_eq!(replicas[0], ring.owner(token));
        }

        #[test]
        fn replicas_stay_put_when_vnodes_are_added_outside_their_walk(
            ring in ring_strategy(), token in any::<i64>(), rf in 1usize..6,
            extra in proptest::collection::vec((any::<i64>(), (0u8..16, 0u16..3)), 0..32),
        ) {
            let before: Vec<Owner> = ring.replicas(token, rf, node).into_iter().copied().collect();
            // The walk covers the clockwise arc from the token to the last replica's vnode (the
            // first vnode of that owner met), or the whole ring when it found fewer than rf.
            let arc = |t: Token| t.wrapping_sub(token) as u64;
            let end = match before.len() < rf {
                true => u64::MAX,
                false => ring.vnodes().iter().filter(|(_, o)| *o == before[rf - 1]).map(|(t, _)| arc(*t)).min()
                    .expect("a replica is a vnode of the ring"),
            };
            let mut vnodes = ring.vnodes().to_vec();
            let taken: std::collections::BTreeSet<Token> = vnodes.iter().map(|(t, _)| *t).collect();
            vnodes.extend(extra.into_iter().filter(|(t, _)| arc(*t) > end && !taken.contains(t)));
            let mut unique = std::collections::BTreeMap::new();
            vnodes.into_iter().for_each(|(t, o)| { unique.entry(t).or_insert(o); });
            let grown = Ring::new(unique.into_iter().collect()).expect("unique tokens");
            let after: Vec<Owner> = grown.replicas(token, rf, node).into_iter().copied().collect();
            prop_assert_eq!(before, after);
        }

        #[test]
        fn replica_ownership_adds_up_to_rf_copies_of_the_ring(ring in ring_strategy(), rf in 1usize..6) {
            let total: f64 = ring.replica_ownership(rf, node).values().sum();
            prop_assert!((total - rf.min(node_count(&ring)) as f64).abs() < 1e-9, "total {total}");
            let primary: f64 = ring.ownership(node).values().sum();
            prop_assert!((primary - 1.0).abs() < 1e-9, "primary total {primary}");
        }
    }

    /// Random vnode tokens as a cluster picks them: [`TOKENS_PER_SHARD`] per shard, 1 or 2
    /// shards per node. Returns each node's vnode count and the ring.
    fn random_cluster(rng: &mut TestRng, nodes: u8) -> (Vec<usize>, Ring<Owner>) {
        const TOKENS_PER_SHARD: usize = 8;
        let mut vnodes = std::collections::BTreeMap::new();
        let mut counts = Vec::new();
        for n in 0..nodes {
            let shards = 1 + (rng.next_u64() % 2) as u16;
            for s in 0..shards {
                for _ in 0..TOKENS_PER_SHARD {
                    while vnodes.insert(rng.next_u64() as i64, (n, s)).is_some() {}
                }
            }
            counts.push(shards as usize * TOKENS_PER_SHARD);
        }
        (counts, Ring::new(vnodes.into_iter().collect()).expect("unique tokens"))
    }

    /// Ownership with random tokens (8 per shard, 1 or 2 shards per node) is balanced as far as
    /// random vnodes allow. A node's share ratio is the fraction of the ring it owns divided by
    /// its vnode share (its vnodes / all vnodes); 1 is perfect balance. For 3, 5 and 10 nodes
    /// and [`RINGS_PER_SIZE`] random rings each: every node's ratio lies within
    /// [`MIN_SHARE_RATIO`, `MAX_SHARE_RATIO`] = [0.05, 4.5], and the mean |ratio - 1| over the
    /// rings of a size is at most [`MAX_MEAN_DEVIATION`] = 0.35.
    ///
    /// Measured over 100,000 random rings per size (1.8 M node ratios): ratios from 0.08 to
    /// 3.2, 98% of them within 0.42..1.82 (p1..p99); mean |ratio - 1| of 20 rings: median 0.20
    /// (3 nodes) to 0.23 (10 nodes), at most 0.30. Random tokens with 8 vnodes per shard are
    /// that uneven (a node's share is a sum of 8 to 16 exponential gaps); the bounds leave a
    /// margin so a random seed fails with negligible probability. RING_TEST_SEED replays one.
    #[test]
    fn ownership_of_random_tokens_is_balanced_for_3_5_and_10_nodes() {
        let seed: u64 = std::env::var("RING_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        });
        eprintln!("ring balance: RING_TEST_SEED={seed}");
        let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed.to_le_bytes(), [0; 8], [0; 8], [0; 8]].concat());
        for nodes in [3u8, 5, 10] {
            let mut deviations = Vec::new();
            for _ in 0..RINGS_PER_SIZE {
                let (counts, ring) = random_cluster(&mut rng, nodes);
                let total: usize = counts.iter().sum();
                let owned = ring.ownership(node);
                assert_eq!(owned.len(), nodes as usize, "every node owns some of the ring");
                for (n, owned) in owned {
                    let ratio = owned / (counts[n as usize] as f64 / total as f64);
                    assert!(
                        (MIN_SHARE_RATIO..=MAX_SHARE_RATIO).contains(&ratio),
                        "seed {seed}: node {n} of {nodes} owns {owned:.4}, {ratio:.3} times its vnode share"
                    );
                    deviations.push((ratio - 1.0).abs());
                }
            }
            let mean = deviations.iter().sum::<f64>() / deviations.len() as f64;
            eprintln!("{nodes} nodes: mean |share ratio - 1| = {mean:.3}");
            assert!(mean <= MAX_MEAN_DEVIATION, "seed {seed}: {nodes} nodes deviate {mean:.3} on average");
        }
    }

    const RINGS_PER_SIZE: usize = 20;
    const MIN_SHARE_RATIO: f64 = 0.05;
    const MAX_SHARE_RATIO: f64 = 4.5;
    const MAX_MEAN_DEVIATION: f64 = 0.35;
}

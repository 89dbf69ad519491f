//! Token allocation for a joining node: picks its vnode tokens from the current ring so that
//! every node's share of the data at a replication factor evens out (the idea of Cassandra's
//! `allocate_tokens_for_local_replication_factor`). Pure and deterministic given a seed: no
//! I/O, no clock. It never changes the ring it is given; the caller persists and gossips the
//! tokens. Not used by a node's start-up yet (tokens are still random when a data directory is
//! created): bootstrap will call it.
//!
//! The algorithm is greedy, one vnode token at a time. A new token `x` inside the range
//! `(p, t]` changes the replicas (SimpleStrategy, as [`wire::ring::Ring::replicas`]) of the
//! piece `(p, x]` and of the few ranges before it whose replica walk now meets the new node
//! before its `rf`-th replica: in each, the new node comes in and that last replica drops out
//! (unless the new node already was a replica). Only the piece's share depends on where `x`
//! lies, linearly, so the sum of squared relative deviations from the fair shares (of every
//! node, and with a small weight of every vnode, as Cassandra's ReplicationAwareTokenAllocator
//! also weighs tokens) is a quadratic in the piece's width with a closed-form minimum. Every
//! range is tried at its best split; the one that lowers the sum most wins. Ranges where the
//! token would take nothing, or only lengthen one of the new node's own ranges, are tried last.
//! The new node's target while it is being placed grows with its tokens placed; then each of
//! its tokens is taken out and placed again once, against the full targets.

use std::collections::BTreeMap;

use shards::node_meta::{MAX_SHARDS, MAX_TOKENS_PER_SHARD};
use wire::ring::Ring;
use wire::token::{Token, MIN_TOKEN};

use super::HostId;

/// Weight of a vnode's deviation from its share against a node's (both relative). Keeping
/// vnodes even keeps the ring regular, so that later joins still find ranges to even out;
/// 0.03 measured best among 0.01..1 (docs/ARCHITECTURE.md, "Membership changes").
const VNODE_WEIGHT: f64 = 0.03;

/// Rounds of taking out each new token in turn and placing it again at the full share, after
/// the greedy placement (one halves the worst deviation; more did not help).
const REFINE_PASSES: usize = 1;

const TOKEN_SPACE: f64 = (1u128 << 64) as f64;

/// Vnodes in a ring allocation works on at most (its cost per token is linear in them):
///  nodes of 16 vnodes, far beyond the clusters it is for.
pub const MAX_RING_VNODES: usize = 16 * 1024;

/// The node that joins: its host id and how many tokens it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joining {
    pub host: HostId,
    pub shards: usize,
    /// Vnode tokens per shard (the `num_tokens` setting).
    pub vnodes_per_shard: usize,
}

/// Tokens that cannot be allocated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("host {0:032x} already owns tokens in the ring")]
    AlreadyInRing(HostId),
    #[error("a node has 1 to {MAX_SHARDS} shards, got {0}")]
    BadShardCount(usize),
    #[error("a shard has 1 to {MAX_TOKENS_PER_SHARD} vnode tokens, got {0}")]
    BadTokenCount(usize),
    #[error("the replication factor must be at least 1")]
    ZeroReplicationFactor,
    #[error("the ring has {0} vnodes, above the {MAX_RING_VNODES} allocation handles")]
    RingTooLarge(usize),
    #[error("no range of the ring is wide enough to split")]
    RingFull,
}

/// The tokens of `joining`, per shard (`tokens[s]` for shard `s`, each shard's sorted), chosen
/// to balance ownership at replication factor `rf` with the nodes of `ring` (`None` for the
/// first node of a cluster, whose tokens are spread evenly from an offset `seed` picks).
///
/// Each node's fair share is `min(rf, nodes)` times its shards over all shards. While the
/// cluster has at most `rf` nodes every node holds everything, so tokens are balanced at
/// `nodes - 1` instead: the ring a later node joins is then already even.
pub fn allocate_tokens(
    ring: Option<&Ring<(HostId, u16)>>,
    rf: usize,
    joining: Joining,
    seed: u64,
) -> Result<Vec<Vec<Token>>, AllocationError> {
    if joining.shards == 0 || joining.shards > MAX_SHARDS {
        return Err(AllocationError::BadShardCount(joining.shards));
    }
    if joining.vnodes_per_shard == 0 || joining.vnodes_per_shard > MAX_TOKENS_PER_SHARD {
        return Err(AllocationError::BadTokenCount(joining.vnodes_per_shard));
    }
    if rf == 0 {
        return Err(AllocationError::ZeroReplicationFactor);
    }
    let count = joining.shards * joining.vnodes_per_shard;
    let tokens = match ring {
        None => spread_evenly(count, seed),
        Some(ring) => {
            if ring.vnodes().len() > MAX_RING_VNODES {
                return Err(AllocationError::RingTooLarge(ring.vnodes().len()));
            }
            if ring.vnodes().iter().any(|(_, (host, _))| *host == joining.host) {
                return Err(AllocationError::AlreadyInRing(joining.host));
            }
            let mut layout = Layout::new(ring, joining.shards, rf);
            for placed in 0..count {
                layout.place_one(placed, count, seed)?;
            }
            for _ in 0..REFINE_PASSES {
                for _ in 0..count {
                    layout.remove_oldest_new();
                    layout.place_one(count - 1, count, seed)?;
                }
            }
            layout.new_tokens()
        }
    };
    Ok(deal_to_shards(tokens, joining.shards))
}

/// Each node's fraction of the token space it holds a replica of at `rf` (nodetool's
/// effective ownership; they add up to `min(rf, nodes)`), with its fair share: that total
/// split in proportion to the nodes' shard counts.
pub fn replica_ownership(ring: &Ring<(HostId, u16)>, rf: usize) -> BTreeMap<HostId, Ownership> {
    let owned = ring.replica_ownership(rf, |(host, _)| *host);
    let mut shards: BTreeMap<HostId, std::collections::BTreeSet<u16>> = BTreeMap::new();
    for (_, (host, shard)) in ring.vnodes() {
        shards.entry(*host).or_default().insert(*shard);
    }
    let total_shards: usize = shards.values().map(|s| s.len()).sum();
    let copies = rf.min(shards.len()) as f64;
    owned
        .into_iter()
        .map(|(host, owned)| {
            let fair = copies * shards[&host].len() as f64 / total_shards as f64;
            (host, Ownership { owned, fair })
        })
        .collect()
}

/// A node's replicated share of the ring and the share it would have in a perfect balance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ownership {
    pub owned: f64,
    pub fair: f64,
}

impl Ownership {
    /// `owned / fair - 1`: 0 is perfect, 0.1 is 10% more than its share.
    pub fn deviation(&self) -> f64 {
        self.owned / self.fair - 1.0
    }
}

/// `count` tokens evenly spaced around the ring from an offset `seed` picks, never the
/// minimum token (no key hashes there).
fn spread_evenly(count: usize, seed: u64) -> Vec<Token> {
    let step = ((1u128 << 64) / count as u128) as u64;
    let offset = splitmix64(seed);
    (0..count as u64)
        .map(|i| match offset.wrapping_add(i.wrapping_mul(step)) as i64 {
            MIN_TOKEN => MIN_TOKEN + 1,
            t => t,
        })
        .collect()
}

/// Deals `tokens` to `shards` shards round-robin in ring order, so that each shard's vnodes
/// lie all around the ring.
fn deal_to_shards(mut tokens: Vec<Token>, shards: usize) -> Vec<Vec<Token>> {
    tokens.sort_unstable();
    let mut dealt = vec![Vec::new(); shards];
    for (i, t) in tokens.into_iter().enumerate() {
        dealt[i % shards].push(t);
    }
    dealt
}

/// SplitMix64: a seed's well-mixed offset.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring as allocation works on it: vnodes by token with a node index, the new node last.
struct Layout {
    /// Sorted by token, tokens unique.
    vnodes: Vec<(Token, usize)>,
    /// Shards of each node; the new node is the last index.
    shards: Vec<f64>,
    /// Replicas per range the balance is computed at: `min(rf, nodes - 1)`, at least 1.
    rf: usize,
    /// The new node's tokens in the order they were placed.
    order: Vec<Token>,
}

impl Layout {
    fn new(ring: &Ring<(HostId, u16)>, joining_shards: usize, rf: usize) -> Layout {
        let mut index: BTreeMap<HostId, usize> = BTreeMap::new();
        let mut shard_sets: Vec<std::collections::BTreeSet<u16>> = Vec::new();
        let vnodes = ring
            .vnodes()
            .iter()
            .map(|(token, (host, shard))| {
                let next = index.len();
                let i = *index.entry(*host).or_insert(next);
                if i == shard_sets.len() {
                    shard_sets.push(Default::default());
                }
                shard_sets[i].insert(*shard);
                (*token, i)
            })
            .collect();
        let mut shards: Vec<f64> = shard_sets.iter().map(|s| s.len() as f64).collect();
        shards.push(joining_shards as f64);
        let existing = shards.len() - 1;
        Layout { vnodes, shards, rf: rf.min(existing).max(1), order: Vec::new() }
    }

    fn new_node(&self) -> usize {
        self.shards.len() - 1
    }

    /// Takes out the new node's token placed longest ago.
    fn remove_oldest_new(&mut self) {
        let oldest = self.order.remove(0);
        if let Ok(at) = self.vnodes.binary_search_by_key(&oldest, |(t, _)| *t) {
            self.vnodes.remove(at);
        }
    }

    fn new_tokens(&self) -> Vec<Token> {
        let n = self.new_node();
        self.vnodes.iter().filter(|(_, i)| *i == n).map(|(t, _)| *t).collect()
    }

    /// Width of the range ending at vnode `k`, in tokens (a lone vnode: the whole ring).
    fn width(&self, k: usize) -> u128 {
        let previous = self.vnodes[(k + self.vnodes.len() - 1) % self.vnodes.len()].0;
        match self.vnodes[k].0.wrapping_sub(previous) as u64 {
            0 => 1u128 << 64,
            w => w as u128,
        }
    }

    /// The `rf` replicas of every range as vnode indices (for each replica node, its first
    /// vnode met walking clockwise from the range's vnode), `rf` per range.
    fn replica_sets(&self) -> Vec<usize> {
        let len = self.vnodes.len();
        let mut sets = Vec::with_capacity(len * self.rf);
        let mut nodes = Vec::with_capacity(self.rf);
        for k in 0..len {
            nodes.clear();
            for step in 0..len {
                let v = (k + step) % len;
                if !nodes.contains(&self.vnodes[v].1) {
                    nodes.push(self.vnodes[v].1);
                    sets.push(v);
                    if nodes.len() == self.rf {
                        break;
                    }
                }
            }
            // `rf` is at most the nodes already in the ring, so every walk finds `rf`.
            debug_assert_eq!(nodes.len(), self.rf);
        }
        sets
    }

    /// Places the new node's token number `placed` (of `count`) where it lowers the sum of
    /// squared relative deviations from the fair shares most, of nodes and of vnodes. When
    /// every range is one the new node replicates or follows its own vnode, takes the best
    /// of those (a token that takes nothing).
    fn place_one(&mut self, placed: usize, count: usize, seed: u64) -> Result<(), AllocationError> {
        match self.place_best(placed, count, seed, true) {
            Err(AllocationError::RingFull) => self.place_best(placed, count, seed, false),
            placed => placed,
        }
    }

    /// [`Layout::place_one`]; `useful_only` leaves out the ranges where a token takes nothing
    /// or only lengthens one of the new node's own ranges.
    fn place_best(&mut self, placed: usize, count: usize, seed: u64, useful_only: bool) -> Result<(), AllocationError> {
        let (len, rf, new) = (self.vnodes.len(), self.rf, self.new_node());
        let nodes = self.shards.len();
        let sets = self.replica_sets();
        let node_of = |v: usize| self.vnodes[v].1;
        let widths: Vec<f64> = (0..len).map(|k| self.width(k) as f64 / TOKEN_SPACE).collect();
        // Entities: nodes 0..nodes, then vnodes (the new token is vnode `len`).
        let mut load = vec![0.0; nodes + len + 1];
        let mut vnode_count = vec![0usize; nodes];
        for k in 0..len {
            vnode_count[node_of(k)] += 1;
            for &v in &sets[k * rf..(k + 1) * rf] {
                load[node_of(v)] += widths[k];
                load[nodes + v] += widths[k];
            }
        }
        vnode_count[new] = count;
        let total_shards: f64 = self.shards.iter().sum();
        let fair: Vec<f64> = self.shards.iter().map(|s| rf as f64 * s / total_shards).collect();
        let fair_of = |e: usize| match e < nodes {
            true => fair[e],
            false => {
                let n = if e == nodes + len { new } else { node_of(e - nodes) };
                fair[n] / vnode_count[n] as f64
            }
        };
        // The new node's target grows with its tokens; the others aim at their final share.
        let target = |e: usize| match e == new {
            true => fair[e] * (placed + 1) as f64 / count as f64,
            false => fair_of(e),
        };
        let weight = |e: usize| {
            let f = fair_of(e);
            if e < nodes {
                1.0 / (f * f)
            } else {
                VNODE_WEIGHT / (f * f)
            }
        };
        let holds_new = |k: usize| sets[k * rf..(k + 1) * rf].iter().any(|&v| node_of(v) == new);
        let mut best: Option<(f64, Token)> = None;
        // Where the scan starts is the seed's: it only decides between equal candidates.
        let first = (splitmix64(seed ^ placed as u64) % len as u64) as usize;
        let mut changes: Vec<Change> = Vec::with_capacity(4 * rf + 4);
        let mut seen: Vec<usize> = Vec::with_capacity(rf);
        let new_vnode = nodes + len;
        for j in (0..len).map(|i| (first + i) % len) {
            let width = self.width(j);
            // A token inside a range the new node already replicates would take nothing; one
            // right after its own vnode would only lengthen that vnode's range.
            let wasted = holds_new(j) || node_of((j + len - 1) % len) == new;
            if width < 2 || (useful_only && wasted) {
                continue;
            }
            changes.clear();
            seen.clear();
            // Ranges before `j` whose walk now meets the new node before its rf-th replica.
            for back in 1..len {
                let k = (j + len - back) % len;
                if !seen.contains(&node_of(k)) {
                    seen.push(node_of(k));
                }
                if seen.len() >= rf {
                    break;
                }
                if !holds_new(k) {
                    let dropped = sets[(k + 1) * rf - 1];
                    add_change(&mut changes, new, widths[k], 0.0);
                    add_change(&mut changes, new_vnode, widths[k], 0.0);
                    add_change(&mut changes, node_of(dropped), -widths[k], 0.0);
                    add_change(&mut changes, nodes + dropped, -widths[k], 0.0);
                }
            }
            // The piece (p, x] of range j: its share is the unknown `w`.
            if !holds_new(j) {
                let dropped = sets[(j + 1) * rf - 1];
                add_change(&mut changes, new, 0.0, 1.0);
                add_change(&mut changes, new_vnode, 0.0, 1.0);
                add_change(&mut changes, node_of(dropped), 0.0, -1.0);
                add_change(&mut changes, nodes + dropped, 0.0, -1.0);
            }
            // Minimise sum a_e (d_e + c_e + p_e w)^2 over w, within the range.
            let (mut numerator, mut denominator) = (0.0, 0.0);
            for c in &changes {
                let d = load[c.entity] - target(c.entity);
                numerator -= weight(c.entity) * c.per_width * (d + c.fixed);
                denominator += weight(c.entity) * c.per_width * c.per_width;
            }
            let ideal = if denominator > 0.0 { numerator / denominator * TOKEN_SPACE } else { width as f64 / 2.0 };
            let piece = (ideal.round().max(1.0) as u128).min(width - 1);
            let w = piece as f64 / TOKEN_SPACE;
            let gain: f64 = changes
                .iter()
                .map(|c| {
                    let d = load[c.entity] - target(c.entity);
                    let after = d + c.fixed + c.per_width * w;
                    weight(c.entity) * (after * after - d * d)
                })
                .sum();
            let previous = self.vnodes[(j + len - 1) % len].0;
            let token = previous.wrapping_add(piece as u64 as i64);
            if token != MIN_TOKEN && best.is_none_or(|(g, _)| gain < g) {
                best = Some((gain, token));
            }
        }
        let (_, token) = best.ok_or(AllocationError::RingFull)?;
        let at = self.vnodes.partition_point(|(t, _)| *t < token);
        debug_assert!(self.vnodes.get(at).is_none_or(|(t, _)| *t != token), "a split lies strictly inside a range");
        self.vnodes.insert(at, (token, new));
        self.order.push(token);
        Ok(())
    }
}

/// How a candidate token changes the load of one node or vnode (`entity`, see
/// [`Layout::place_best`]): by `fixed + per_width * w`, `w` the share of the split piece.
struct Change {
    entity: usize,
    fixed: f64,
    per_width: f64,
}

fn add_change(changes: &mut Vec<Change>, entity: usize, fixed: f64, per_width: f64) {
    match changes.iter_mut().find(|c| c.entity == entity) {
        Some(c) => {
            c.fixed += fixed;
            c.per_width += per_width;
        }
        None => changes.push(Change { entity, fixed, per_width }),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The seed a test uses: `ALLOCATION_TEST_SEED` to replay one, else the clock's.
    fn test_seed() -> u64 {
        std::env::var("ALLOCATION_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        })
    }

    fn ring_of(nodes: &BTreeMap<HostId, Vec<Vec<Token>>>) -> Ring<(HostId, u16)> {
        let vnodes = nodes
            .iter()
            .flat_map(|(host, shards)| {
                shards.iter().enumerate().flat_map(move |(s, ts)| ts.iter().map(move |t| (*t, (*host, s as u16))))
            })
            .collect();
        Ring::new(vnodes).expect("allocated tokens are unique")
    }

    /// Largest |owned / fair - 1| over the nodes of `ring` at `rf`.
    fn worst_deviation(ring: &Ring<(HostId, u16)>, rf: usize) -> f64 {
        replica_ownership(ring, rf).values().map(|o| o.deviation().abs()).fold(0.0, f64::max)
    }

    /// Grows a cluster one node at a time to `sizes.last()` nodes of `shards` shards, with
    /// allocated tokens and with random ones; returns the worst deviation of each at each size.
    fn grow(seed: u64, shards: usize, rf: usize, sizes: &[usize]) -> Vec<(usize, f64, f64)> {
        let vnodes_per_shard = 8;
        let mut allocated: BTreeMap<HostId, Vec<Vec<Token>>> = BTreeMap::new();
        let mut random: BTreeMap<HostId, Vec<Vec<Token>>> = BTreeMap::new();
        let mut rng = splitmix64(seed);
        let mut out = Vec::new();
        for host in 1..=*sizes.last().expect("sizes") as HostId {
            let ring = (!allocated.is_empty()).then(|| ring_of(&allocated));
            let joining = Joining { host, shards, vnodes_per_shard };
            let tokens = allocate_tokens(ring.as_ref(), rf, joining, seed ^ host as u64).expect("allocation");
            assert_eq!(tokens.len(), shards);
            assert!(tokens.iter().all(|s| s.len() == vnodes_per_shard));
            allocated.insert(host, tokens);
            let random_tokens = (0..shards)
                .map(|_| {
                    (0..vnodes_per_shard)
                        .map(|_| {
                            rng = splitmix64(rng);
                            rng as i64
                        })
                        .collect()
                })
                .collect();
            random.insert(host, random_tokens);
            if sizes.contains(&(host as usize)) {
                let (a, r) = (worst_deviation(&ring_of(&allocated), rf), worst_deviation(&ring_of(&random), rf));
                out.push((host as usize, a, r));
            }
        }
        out
    }

    /// Growing a cluster from 1 node to 32 at RF 3 with the default vnodes per shard keeps
    /// every node within 10% of its fair share at 3, 5, 10 and 32 nodes (random tokens do not:
    /// the test prints both).
    #[test]
    fn allocated_tokens_keep_every_node_within_ten_percent_of_its_share_at_rf_3() {
        let seed = test_seed();
        for shards in [1, 2] {
            for (nodes, allocated, random) in grow(seed, shards, 3, &[3, 5, 10, 32]) {
                eprintln!(
                    "{shards} shard(s), {nodes} nodes, RF 3: worst deviation allocated {:.1}%, random {:.1}%",
                    allocated * 100.0,
                    random * 100.0
                );
                assert!(
                    allocated <= 0.10,
                    "ALLOCATION_TEST_SEED={seed}: {nodes} nodes of {shards} shards deviate {:.1}%",
                    allocated * 100.0
                );
            }
        }
    }

    #[test]
    fn allocation_is_deterministic_given_a_seed() {
        let seed = test_seed();
        let first = allocate_tokens(None, 3, Joining { host: 1, shards: 2, vnodes_per_shard: 8 }, seed).unwrap();
        let ring = ring_of(&[(1, first.clone())].into());
        let joining = Joining { host: 2, shards: 2, vnodes_per_shard: 8 };
        let a = allocate_tokens(Some(&ring), 3, joining, seed).unwrap();
        let b = allocate_tokens(Some(&ring), 3, joining, seed).unwrap();
        assert_eq!(a, b, "ALLOCATION_TEST_SEED={seed}");
        assert_eq!(first, allocate_tokens(None, 3, Joining { host: 1, shards: 2, vnodes_per_shard: 8 }, seed).unwrap());
    }

    #[test]
    fn the_first_node_spreads_its_tokens_evenly_over_its_shards() {
        let tokens = allocate_tokens(None, 3, Joining { host: 1, shards: 4, vnodes_per_shard: 2 }, 99).unwrap();
        let ring = ring_of(&[(1, tokens.clone())].into());
        for share in ring.vnode_shares() {
            assert!((share - 1.0 / 8.0).abs() < 1e-9, "{share}");
        }
        let shard_of: Vec<u16> = ring.vnodes().iter().map(|(_, (_, s))| *s).collect();
        assert!(shard_of.windows(2).all(|w| w[0] != w[1]), "shards alternate around the ring: {shard_of:?}");
        assert!(tokens.iter().all(|s| s.windows(2).all(|w| w[0] < w[1])), "each shard's tokens sorted");
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let ok = Joining { host: 1, shards: 1, vnodes_per_shard: 8 };
        let ring = ring_of(&[(1, allocate_tokens(None, 3, ok, 1).unwrap())].into());
        assert_eq!(allocate_tokens(Some(&ring), 3, ok, 1), Err(AllocationError::AlreadyInRing(1)));
        let two = Joining { host: 2, ..ok };
        assert_eq!(allocate_tokens(Some(&ring), 0, two, 1), Err(AllocationError::ZeroReplicationFactor));
        assert_eq!(allocate_tokens(None, 3, Joining { shards: 0, ..two }, 1), Err(AllocationError::BadShardCount(0)));
        assert_eq!(
            allocate_tokens(None, 3, Joining { vnodes_per_shard: 257, ..two }, 1),
            Err(AllocationError::BadTokenCount(257))
        );
        let crowded = Ring::new((0..4).map(|t| (t, (1, 0))).collect()).unwrap();
        let tokens = allocate_tokens(Some(&crowded), 1, Joining { host: 2, shards: 1, vnodes_per_shard: 1 }, 1);
        assert!(tokens.is_ok(), "the wrapping range is wide: {tokens:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Whatever the ring, allocated tokens are new, unique, never the minimum token, and
        /// the new node owns a share at every RF.
        #[test]
        fn allocated_tokens_are_fresh_and_the_new_node_owns_a_share(
            seed in any::<u64>(), nodes in 1usize..6, shards in 1usize..3, vnodes in 1usize..6, rf in 1usize..4,
        ) {
            let mut cluster = BTreeMap::new();
            for host in 1..=nodes as HostId {
                let ring = (!cluster.is_empty()).then(|| ring_of(&cluster));
                let joining = Joining { host, shards, vnodes_per_shard: vnodes };
                let tokens = allocate_tokens(ring.as_ref(), rf, joining, seed).unwrap();
                prop_assert!(tokens.iter().flatten().all(|t| *t != MIN_TOKEN));
                prop_assert!(tokens.iter().all(|s| s.len() == vnodes));
                cluster.insert(host, tokens);
                // ring_of refuses duplicate tokens.
                let owned = replica_ownership(&ring_of(&cluster), rf);
                prop_assert!(owned[&host].owned > 0.0, "seed {}: {:?}", seed, owned);
                let total: f64 = owned.values().map(|o| o.owned).sum();
                prop_assert!((total - rf.min(host as usize) as f64).abs() < 1e-9);
            }
        }
    }
}

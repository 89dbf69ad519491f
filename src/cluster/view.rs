//! The coordinator's picture of the cluster at one moment: every member (host id, addresses,
//! vnode tokens per shard, alive or not) and the token ring they form, with the replicas of a
//! token. Pure and immutable: the gossip service builds a new view and swaps it in; nothing
//! here does I/O or decides liveness (the failure detector does).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use wire::ring::{Ring, RingError};
use wire::Token;

use super::pending::{Movement, PendingRanges, RangeMovements};
use super::HostId;

/// Replication factors whose pending ranges a view computes (a table's RF is a u8).
const MAX_RF: usize = u8::MAX as usize;

/// One node as the view knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub host: HostId,
    /// Where its peer protocol listens (never used for the local node, reached in process).
    pub peer: SocketAddr,
    /// Where its client protocol listens.
    pub client: SocketAddr,
    /// Where its shard-aware client port listens, if it has one (gossiped).
    pub shard_aware: Option<SocketAddr>,
    /// `tokens[s]`: the vnode tokens of its shard `s`.
    pub tokens: Vec<Vec<Token>>,
    /// As the local failure detector judges it; the local node is always alive.
    pub alive: bool,
    /// The generation it gossips (rises at every restart of the node); 0 before it is known.
    pub generation: u64,
    /// Bootstrapping (gossip status JOINING): not in the natural ring, so never read from,
    /// but a pending replica of the ranges it will own, so written to.
    pub joining: bool,
    /// The dead node whose tokens it takes over (`enigmadb server --replace`): while joining
    /// it is that node's pending replacement; once not joining, the dead node is left out of
    /// the view.
    pub replaces: Option<HostId>,
    /// Decommissioning, or being removed while dead (gossip status LEAVING): still in the
    /// natural ring (read from, written to), and the nodes that take its ranges over are
    /// pending replicas of them.
    pub leaving: bool,
}

/// One replica of a token: a node and the shard of that node that owns the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    pub host: HostId,
    pub shard: u16,
    pub peer: SocketAddr,
    pub alive: bool,
    /// The node this view belongs to (reached through `shards::node::Node`, not the network).
    pub local: bool,
}

/// A view that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    #[error("the local host {0:032x} is not a member of the view")]
    NoLocalMember(HostId),
    #[error("host {0:032x} appears twice in the view")]
    DuplicateHost(HostId),
    #[error("host {host:032x} has {shards} shards, above the limit of {}", u16::MAX)]
    TooManyShards { host: HostId, shards: usize },
    #[error("the token ring cannot be built: {0}")]
    Ring(#[from] RingError),
}

#[derive(Debug, Clone)]
pub struct ClusterView {
    local: HostId,
    /// Sorted by host id, unique.
    members: Vec<Member>,
    /// The natural ring: members that are not joining (all of them when every member is).
    ring: Ring<(HostId, u16)>,
    /// The movements in progress, by host: joins and replacements (members with `joining`,
    /// when some member is not) and leaves (members with `leaving`).
    movements: Vec<Movement>,
    /// `pending[rf - 1]`: the pending ranges of the movements at replication factor `rf`,
    /// computed on first use (shared by the clones of a view). Empty when nothing moves.
    pending: Arc<Vec<OnceLock<PendingRanges>>>,
}

impl ClusterView {
    /// The view of `members` as seen from `local`, which must be one of them (and is taken as
    /// alive whatever its flag says: a node serving requests is up).
    pub fn new(local: HostId, mut members: Vec<Member>) -> Result<ClusterView, ViewError> {
        // A node a completed replacement took over is out of the ring (never this node itself:
        // a replaced node that comes back still sees itself).
        let replaced: Vec<HostId> = members.iter().filter(|m| !m.joining).filter_map(|m| m.replaces).collect();
        members.retain(|m| m.host == local || !replaced.contains(&m.host));
        members.sort_by_key(|m| m.host);
        if let Some(w) = members.windows(2).find(|w| w[0].host == w[1].host) {
            return Err(ViewError::DuplicateHost(w[0].host));
        }
        let me = members.binary_search_by_key(&local, |m| m.host).map_err(|_| ViewError::NoLocalMember(local))?;
        members[me].alive = true;
        // A cluster of joining nodes only has nobody to stream from: they are its ring.
        let some_natural = members.iter().any(|m| !m.joining);
        let mut vnodes = Vec::new();
        let mut movements = Vec::new();
        for m in &members {
            let too_many = || ViewError::TooManyShards { host: m.host, shards: m.tokens.len() };
            if m.tokens.len() > usize::from(u16::MAX) + 1 {
                return Err(too_many());
            }
            if m.joining && some_natural {
                movements.push(match m.replaces {
                    Some(dead) => Movement::Replace { dead, host: m.host },
                    None => Movement::Join { host: m.host, tokens: m.tokens.clone() },
                });
                continue;
            }
            if m.leaving && !m.tokens.iter().all(Vec::is_empty) {
                movements.push(Movement::Leave { host: m.host });
            }
            for (shard, tokens) in m.tokens.iter().enumerate() {
                let shard = u16::try_from(shard).map_err(|_| too_many())?;
                vnodes.extend(tokens.iter().map(|t| (*t, (m.host, shard))));
            }
        }
        let ring = Ring::new(vnodes)?;
        let pending = match movements.is_empty() {
            true => Arc::default(),
            false => Arc::new((0..MAX_RF).map(|_| OnceLock::new()).collect()),
        };
        Ok(ClusterView { local, members, ring, movements, pending })
    }

    /// A one-member view: a node on its own (single-node mode).
    pub fn single(local: Member) -> Result<ClusterView, ViewError> {
        ClusterView::new(local.host, vec![local])
    }

    /// The view of node `host` on its own before anything is known of its tokens or addresses:
    /// every token's one replica is this node (its shard is the node's own business,
    /// `Node::shard_of`, so replicas name shard 0). The cluster service replaces it.
    pub fn alone(host: HostId) -> ClusterView {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        let member = Member {
            host,
            peer: unspecified,
            client: unspecified,
            shard_aware: None,
            tokens: Vec::new(),
            alive: true,
            generation: 0,
            joining: false,
            replaces: None,
            leaving: false,
        };
        // One vnode is never empty and never duplicated: building the ring cannot fail.
        let ring = Ring::new(vec![(0, (host, 0))]).unwrap_or_else(|e| unreachable!("a one-vnode ring: {e}"));
        ClusterView { local: host, members: vec![member], ring, movements: Vec::new(), pending: Arc::default() }
    }

    pub fn local(&self) -> HostId {
        self.local
    }

    /// Every member, by host id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, host: HostId) -> Option<&Member> {
        self.members.binary_search_by_key(&host, |m| m.host).ok().map(|i| &self.members[i])
    }

    /// The natural ring (joining members are not in it).
    pub fn ring(&self) -> &Ring<(HostId, u16)> {
        &self.ring
    }

    /// The movements in progress this view knows of (joins, replacements and leaves), by host.
    pub fn movements(&self) -> &[Movement] {
        &self.movements
    }

    /// Whether `host` owns vnodes of the natural ring (a joining member does not, unless
    /// every member joins).
    pub fn in_ring(&self, host: HostId) -> bool {
        self.ring.vnodes().iter().any(|(_, (h, _))| *h == host)
    }

    /// The pending replicas of `token` at replication factor `rf`: the nodes that will
    /// replicate it once a join, replacement or leave in progress completes and do not now
    /// (Cassandra's pending endpoints). Writes go to them as well as to
    /// [`ClusterView::replicas`]; reads never do. Empty (and free) when nothing moves. A
    /// movement that overlaps another one (which its node refuses to start,
    /// `cluster::bootstrap::check_movement`, `cluster::leave::check_leave`) is left out, the
    /// first by host id kept.
    pub fn pending_replicas(&self, token: Token, rf: usize) -> Vec<Replica> {
        if self.movements.is_empty() || rf == 0 || rf > MAX_RF {
            return Vec::new();
        }
        let ranges = self.pending[rf - 1].get_or_init(|| self.pending_ranges(rf));
        ranges
            .pending_for(token)
            .iter()
            .filter_map(|&(host, shard)| {
                let member = self.member(host)?;
                Some(Replica { host, shard, peer: member.peer, alive: member.alive, local: host == self.local })
            })
            .collect()
    }

    /// Whether a movement in progress changes, at replication factor `rf`, a range `host`
    /// replicates now or will replicate (Cassandra refuses a cleanup then: the ranges the
    /// node keeps are about to change).
    pub fn involved_in_movement(&self, host: HostId, rf: usize) -> bool {
        if self.movements.is_empty() || rf == 0 || rf > MAX_RF {
            return false;
        }
        let ranges = self.pending[rf - 1].get_or_init(|| self.pending_ranges(rf));
        ranges.ranges().iter().any(|r| r.natural.iter().chain(&r.pending).any(|(h, _)| *h == host))
    }

    /// The tokens where the pending replicas at `rf` change (the last token before each range
    /// with pending replicas, and its last token): a range cut at them has one set of pending
    /// replicas throughout. Empty when nothing moves.
    pub fn pending_boundaries(&self, rf: usize) -> Vec<Token> {
        if self.movements.is_empty() || rf == 0 || rf > MAX_RF {
            return Vec::new();
        }
        let ranges = self.pending[rf - 1].get_or_init(|| self.pending_ranges(rf));
        ranges.ranges().iter().flat_map(|r| [r.first.wrapping_sub(1), r.last]).collect()
    }

    fn pending_ranges(&self, rf: usize) -> PendingRanges {
        let mut moves = RangeMovements::new(self.ring.clone(), rf);
        for movement in &self.movements {
            if let Err(e) = moves.begin(movement.clone()) {
                tracing::warn!(error = %e, rf, "a range movement is not treated as pending");
            }
        }
        moves.pending().clone()
    }

    /// Members the failure detector holds alive (the local node included).
    pub fn live_members(&self) -> usize {
        self.members.iter().filter(|m| m.alive).count()
    }

    /// The peer addresses of the members this view holds alive that `previous` did not: new
    /// members, members up again, members that restarted (a higher generation) or moved to
    /// another address. The local node is never one. A shard resets its transport's backoff
    /// for them (`Transport::peer_is_back`): the attempts that failed while they were away say
    /// nothing about them now.
    pub fn peers_back_since(&self, previous: &ClusterView) -> Vec<SocketAddr> {
        self.members
            .iter()
            .filter(|m| m.alive && m.host != self.local)
            .filter(|m| {
                previous
                    .member(m.host)
                    .is_none_or(|before| !before.alive || before.generation < m.generation || before.peer != m.peer)
            })
            .map(|m| m.peer)
            .collect()
    }

    /// The `rf` replicas of `token` (SimpleStrategy: distinct nodes clockwise from the owning
    /// vnode), fewer when the cluster has fewer nodes, with their liveness. The first is the
    /// token's owner.
    pub fn replicas(&self, token: Token, rf: usize) -> Vec<Replica> {
        if let [me] = &self.members[..] {
            // A node on its own (the single-node write path): no walk, one allocation.
            let (host, shard) = *self.ring.owner(token);
            return vec![Replica { host, shard, peer: me.peer, alive: true, local: true }];
        }
        self.ring
            .replicas(token, rf, |(host, _)| *host)
            .into_iter()
            .map(|&(host, shard)| {
                // Every vnode of the ring comes from a member (built together in `new`).
                let member = self.member(host).unwrap_or_else(|| unreachable!("ring owner {host:x} is a member"));
                Replica { host, shard, peer: member.peer, alive: member.alive, local: host == self.local }
            })
            .collect()
    }
}

/// Test rings: `nodes` live members with hosts 1..=nodes on 127.0.0.i:7470, `shards` shards of
/// `vnodes` tokens each, tokens spread over the ring from `seed`.
#[cfg(test)]
pub(crate) fn test_members(nodes: u128, shards: usize, vnodes: usize, seed: u64) -> Vec<Member> {
    let addr = |i: u128| SocketAddr::from(([127, 0, 0, i as u8], 7470));
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64: distinct enough tokens for a test ring.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as i64
    };
    (1..=nodes)
        .map(|host| Member {
            host,
            peer: addr(host),
            client: addr(host),
            tokens: (0..shards).map(|_| (0..vnodes).map(|_| next()).collect()).collect(),
            shard_aware: None,
            alive: true,
            generation: 1,
            joining: false,
            replaces: None,
            leaving: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn members(nodes: u128, shards: usize, vnodes: usize, seed: u64) -> Vec<Member> {
        test_members(nodes, shards, vnodes, seed)
    }

    #[test]
    fn a_single_node_replicates_every_token_to_itself_only() {
        let me = members(1, 2, 4, 7).remove(0);
        let view = ClusterView::single(me.clone()).unwrap();
        for token in [i64::MIN, -5, 0, 12345, i64::MAX] {
            let replicas = view.replicas(token, 3);
            assert_eq!(replicas.len(), 1, "RF 3 on one node: one replica");
            assert!(replicas[0].local && replicas[0].alive);
            assert_eq!(replicas[0].host, me.host);
        }
        assert_eq!(view.live_members(), 1);
    }

    #[test]
    fn a_node_alone_is_the_live_local_replica_of_every_token() {
        let view = ClusterView::alone(5);
        for token in [i64::MIN, 0, i64::MAX] {
            let replicas = view.replicas(token, 1);
            assert_eq!((replicas.len(), replicas[0].host, replicas[0].local, replicas[0].alive), (1, 5, true, true));
        }
        assert!(view.replicas(0, 2).len() < 2, "RF 2 on a node alone has one replica");
    }

    #[test]
    fn dead_members_are_replicas_marked_down_and_the_local_node_is_always_alive() {
        let mut ms = members(3, 1, 8, 11);
        ms[1].alive = false;
        ms[0].alive = false;
        let view = ClusterView::new(1, ms).unwrap();
        assert_eq!(view.live_members(), 2);
        let replicas = view.replicas(42, 3);
        assert_eq!(replicas.len(), 3);
        for r in &replicas {
            assert_eq!(r.alive, r.host != 2, "{r:?}");
            assert_eq!(r.local, r.host == 1);
        }
    }

    #[test]
    fn a_joining_member_is_written_to_as_pending_and_never_read_from() {
        let mut ms = members(4, 1, 8, 21);
        ms[3].joining = true;
        let view = ClusterView::new(1, ms.clone()).unwrap();
        let natural = ClusterView::new(1, ms[..3].to_vec()).unwrap();
        assert_eq!(view.ring().vnodes(), natural.ring().vnodes(), "the joining node is not in the ring");
        assert_eq!(view.movements().len(), 1);
        let mut pending_somewhere = false;
        for token in (-100..100).map(|i| i * (i64::MAX / 100)) {
            for rf in 1..=3 {
                let reads: Vec<HostId> = view.replicas(token, rf).iter().map(|r| r.host).collect();
                assert!(!reads.contains(&4), "token {token} rf {rf}: reads {reads:?}");
                let pending = view.pending_replicas(token, rf);
                assert!(pending.iter().all(|r| r.host == 4 && r.peer == ms[3].peer && r.alive));
                let mut moves = RangeMovements::new(natural.ring().clone(), rf);
                moves.begin(Movement::Join { host: 4, tokens: ms[3].tokens.clone() }).unwrap();
                assert_eq!(pending.len(), moves.pending_for(token).len(), "token {token} rf {rf}");
                pending_somewhere |= !pending.is_empty();
            }
            // RF 4 on 3 natural nodes: the joining node is pending everywhere.
            assert_eq!(view.pending_replicas(token, 4).len(), 1);
        }
        assert!(pending_somewhere);
        assert!(natural.pending_replicas(0, 3).is_empty(), "nothing pending when nothing joins");
        // Only joining members: they are the ring.
        let mut all = members(2, 1, 4, 3);
        all.iter_mut().for_each(|m| m.joining = true);
        let view = ClusterView::new(1, all).unwrap();
        assert_eq!(view.ring().vnodes().len(), 8);
        assert!(view.movements().is_empty());
    }

    #[test]
    fn a_replacement_is_pending_for_the_dead_nodes_ranges_then_takes_its_place() {
        let mut ms = members(4, 1, 8, 5);
        ms[2].alive = false; // host 3 is dead
        let mut new = ms[2].clone();
        (new.host, new.alive, new.joining, new.replaces) = (9, true, true, Some(3));
        new.peer = SocketAddr::from(([127, 0, 0, 9], 7470));
        ms.push(new.clone());
        let view = ClusterView::new(1, ms.clone()).unwrap();
        assert_eq!(view.movements(), &[Movement::Replace { dead: 3, host: 9 }]);
        for token in (-100..100).map(|i| i * (i64::MAX / 100)) {
            for rf in 1..=3 {
                let reads: Vec<HostId> = view.replicas(token, rf).iter().map(|r| r.host).collect();
                let pending: Vec<HostId> = view.pending_replicas(token, rf).iter().map(|r| r.host).collect();
                assert!(!reads.contains(&9), "never read from while replacing");
                assert_eq!(pending, if reads.contains(&3) { vec![9] } else { vec![] }, "token {token} rf {rf}");
            }
        }
        assert!(view.involved_in_movement(1, 3) && view.involved_in_movement(9, 1));
        // Once NORMAL, the dead node is out of the view and the replacement owns its tokens.
        let last = ms.len() - 1;
        ms[last].joining = false;
        let view = ClusterView::new(1, ms).unwrap();
        assert!(view.member(3).is_none() && view.movements().is_empty());
        assert!(view.ring().vnodes().iter().all(|(_, (h, _))| *h != 3));
        assert_eq!(view.ring().vnodes().iter().filter(|(_, (h, _))| *h == 9).count(), 8);
        assert!(!view.involved_in_movement(1, 3), "nothing moves");
    }

    #[test]
    fn bad_views_are_typed_errors() {
        let ms = members(2, 1, 2, 3);
        assert_eq!(ClusterView::new(9, ms.clone()).unwrap_err(), ViewError::NoLocalMember(9));
        let mut dup = ms.clone();
        dup.push(ms[0].clone());
        assert_eq!(ClusterView::new(1, dup).unwrap_err(), ViewError::DuplicateHost(1));
        let mut clash = ms;
        clash[1].tokens[0][0] = clash[0].tokens[0][0];
        assert!(matches!(ClusterView::new(1, clash), Err(ViewError::Ring(RingError::DuplicateToken(_)))));
    }

    #[test]
    fn peers_are_back_when_new_up_again_restarted_or_moved() {
        let before = ClusterView::new(1, members(5, 1, 2, 9)).unwrap();
        assert!(before.peers_back_since(&before).is_empty(), "nothing changed");
        let mut ms = members(5, 1, 2, 9);
        // 1 is local; 2 restarted; 3 unchanged; 4 moved; 5 went down.
        ms[1].generation = 2;
        ms[3].peer = SocketAddr::from(([127, 0, 0, 44], 7470));
        ms[4].alive = false;
        let mut local_restarted = ms.clone();
        local_restarted[0].generation = 9;
        let after = ClusterView::new(1, local_restarted).unwrap();
        assert_eq!(after.peers_back_since(&before), [ms[1].peer, ms[3].peer]);
        // 5 comes back up; a sixth node appears; a down node back from a restart counts once.
        let mut up = ms.clone();
        up[4].alive = true;
        up.extend(members(6, 1, 2, 77).into_iter().skip(5));
        up[5].tokens = vec![vec![12345, 67890]];
        let again = ClusterView::new(1, up.clone()).unwrap();
        let down = ClusterView::new(1, ms).unwrap();
        assert_eq!(again.peers_back_since(&down), [up[4].peer, up[5].peer]);
        assert!(down.peers_back_since(&again).is_empty(), "going down is not coming back");
        assert_eq!(again.peers_back_since(&ClusterView::alone(1)).len(), 5, "every peer is new to a node alone");
    }

    proptest! {
        #[test]
        fn replicas_are_distinct_nodes_led_by_the_owner(
            seed in any::<u64>(), nodes in 1u128..8, shards in 1usize..3, rf in 1usize..5, token in any::<i64>()
        ) {
            let view = ClusterView::new(1, members(nodes, shards, 4, seed)).unwrap();
            let replicas = view.replicas(token, rf);
            prop_assert_eq!(replicas.len(), rf.min(nodes as usize));
            let hosts: HashSet<_> = replicas.iter().map(|r| r.host).collect();
            prop_assert_eq!(hosts.len(), replicas.len());
            let owner = view.ring().owner(token);
            prop_assert_eq!((replicas[0].host, replicas[0].shard), *owner);
            for r in &replicas {
                let member = view.member(r.host).unwrap();
                prop_assert!((r.shard as usize) < member.tokens.len());
                prop_assert_eq!(r.peer, member.peer);
            }
        }
    }
}

//! Replacing a dead node (`enigmadb server --replace HOST_ID_OR_ADDRESS`, Cassandra's
//! `replace_address_first_boot`), without I/O: which endpoint the operator named, whether it
//! may be replaced (a known member of the ring, not gone, not already replaced, not alive), and
//! the ranges the new node streams (every range the dead node replicated, from the surviving
//! replicas). The new node takes the dead node's tokens shard by shard, so nothing changes
//! owner; `server::prepare_join` and `coordinator::bootstrap` drive it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use wire::protocol::display_host_id;
use wire::ring::Ring;
use wire::token::Token;

use super::bootstrap::{streams, StreamRange};
use super::gossip::{replaced_hosts, EndpointState, HeartBeat, Status};
use super::pending::{Movement, MovementError, Owner};
use super::HostId;

/// The node `--replace` names: a host id (as `admin status` prints it, or 32 hex digits), a
/// peer address (`ip:port`), or an IP address alone (the member whose peer address has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceTarget {
    Host(HostId),
    Peer(SocketAddr),
    Ip(IpAddr),
}

impl FromStr for ReplaceTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<ReplaceTarget, String> {
        let s = s.trim();
        if let Ok(peer) = s.parse::<SocketAddr>() {
            return Ok(ReplaceTarget::Peer(peer));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(ReplaceTarget::Ip(ip));
        }
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            if let Ok(host) = u128::from_str_radix(&hex, 16) {
                return Ok(ReplaceTarget::Host(host));
            }
        }
        Err(format!(
            "{s:?} is neither a host id (as `enigmadb admin status` prints it) nor a peer address (ip:port, or ip)"
        ))
    }
}

impl fmt::Display for ReplaceTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplaceTarget::Host(h) => write!(f, "host id {}", display_host_id(*h)),
            ReplaceTarget::Peer(a) => write!(f, "peer address {a}"),
            ReplaceTarget::Ip(ip) => write!(f, "address {ip}"),
        }
    }
}

impl ReplaceTarget {
    fn names(&self, host: HostId, state: &EndpointState) -> bool {
        match self {
            ReplaceTarget::Host(h) => *h == host,
            ReplaceTarget::Peer(a) => state.peer_address() == Some(*a),
            ReplaceTarget::Ip(ip) => state.peer_address().is_some_and(|a| a.ip() == *ip),
        }
    }
}

/// The dead node a replacement takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadNode {
    pub host: HostId,
    /// Its vnode tokens per shard: the new node's, shard by shard.
    pub tokens: Vec<Vec<Token>>,
    pub peer: Option<SocketAddr>,
    /// Its heartbeat as the cluster knows it (a live node's keeps rising).
    pub heartbeat: HeartBeat,
}

/// A replacement that may not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceError {
    #[error("--replace: no member of the cluster has {target} (members: {known})")]
    Unknown { target: ReplaceTarget, known: String },
    #[error("--replace: {target} names several members ({}): name one by its host id", list_hosts(.hosts))]
    Ambiguous { target: ReplaceTarget, hosts: Vec<HostId> },
    #[error("--replace: host {} has left the ring or was removed: there is nothing to replace", display_host_id(*.host))]
    Gone { host: HostId },
    #[error("--replace: host {} owns no tokens in the ring (it is {status}): only a node of the ring can be replaced", display_host_id(*.host))]
    NotInRing { host: HostId, status: String },
    #[error("--replace: host {} was already replaced by host {}", display_host_id(*.host), display_host_id(*.by))]
    AlreadyReplaced { host: HostId, by: HostId },
    #[error("--replace: host {} is being replaced by host {} already: one replacement at a time", display_host_id(*.host), display_host_id(*.by))]
    BeingReplaced { host: HostId, by: HostId },
    #[error("--replace: host {} is alive ({why}): only a dead node can be replaced (stop it, or use decommission)", display_host_id(*.host))]
    Alive { host: HostId, why: String },
}

fn list_hosts(hosts: &[HostId]) -> String {
    hosts.iter().map(|h| display_host_id(*h)).collect::<Vec<_>>().join(", ")
}

/// The member `target` names among `endpoints` (what a seed knows), checked replaceable by
/// `me` (this node's host id once it has one: a replacement resuming after a restart is not
/// "another replacement in progress"). Liveness is checked apart ([`check_dead`]).
pub fn resolve(
    endpoints: &[(HostId, &EndpointState)],
    target: &ReplaceTarget,
    me: Option<HostId>,
) -> Result<DeadNode, ReplaceError> {
    let replaced = replaced_hosts(endpoints.iter().copied());
    let named: Vec<(HostId, &EndpointState)> = endpoints.iter().copied().filter(|(h, s)| target.names(*h, s)).collect();
    // By address, a member already gone or replaced may share the address of the one meant.
    let candidates: Vec<&(HostId, &EndpointState)> = match named.len() {
        0 | 1 => named.iter().collect(),
        _ => named
            .iter()
            .filter(|(h, s)| !s.status().is_some_and(Status::is_gone) && !replaced.contains(h) && Some(*h) != me)
            .collect(),
    };
    let (host, state) = match candidates[..] {
        [] if named.is_empty() => {
            let known: Vec<String> = endpoints
                .iter()
                .copied()
                .filter(|(h, _)| Some(*h) != me)
                .map(|(h, s)| {
                    let peer = s.peer_address().map_or_else(|| "no address".to_owned(), |a| a.to_string());
                    format!("{} at {peer}", display_host_id(h))
                })
                .collect();
            return Err(ReplaceError::Unknown { target: *target, known: known.join(", ") });
        }
        [] => return Err(ReplaceError::Gone { host: named[0].0 }),
        [one] => *one,
        _ => {
            return Err(ReplaceError::Ambiguous {
                target: *target,
                hosts: candidates.iter().map(|(h, _)| *h).collect(),
            })
        }
    };
    if state.status().is_some_and(Status::is_gone) {
        return Err(ReplaceError::Gone { host });
    }
    for &(other, s) in endpoints.iter().filter(|(h, _)| *h != host && Some(*h) != me) {
        if s.replaces() == Some(host) && !s.status().is_some_and(Status::is_gone) {
            return Err(match replaced.contains(&host) {
                true => ReplaceError::AlreadyReplaced { host, by: other },
                false => ReplaceError::BeingReplaced { host, by: other },
            });
        }
    }
    let status = state.status();
    let tokens = match (state.tokens(), status) {
        (Some(t), Some(Status::Normal | Status::Shutdown | Status::Leaving)) => t.to_vec(),
        _ => {
            let status = status.map_or_else(|| "without a status".to_owned(), |s| format!("{s:?}"));
            return Err(ReplaceError::NotInRing { host, status });
        }
    };
    Ok(DeadNode { host, tokens, peer: state.peer_address(), heartbeat: state.heartbeat() })
}

/// Whether the dead node still beats: its heartbeat as a seed knows it, `before` and `after`
/// a wait of a few gossip rounds. A live node's heartbeat rises every round, so one that did
/// not move in that time is dead (Cassandra's check before a replacement).
pub fn check_dead(dead: &DeadNode, after: HeartBeat) -> Result<(), ReplaceError> {
    match after > dead.heartbeat {
        true => Err(ReplaceError::Alive {
            host: dead.host,
            why: format!(
                "its heartbeat went from generation {} version {} to generation {} version {} while this node waited",
                dead.heartbeat.generation, dead.heartbeat.version, after.generation, after.version
            ),
        }),
        false => Ok(()),
    }
}

/// Every range `dead` replicates in `natural` at `rf`, which `host` takes over with its
/// tokens, with the surviving replicas to stream it from (in ring order; never the dead node).
/// Adjacent ranges with the same sources are merged. A range whose only replica is the dead
/// node (RF 1) has no source: its data is gone with the node, and the plan says so.
pub fn plan(natural: &Ring<Owner>, rf: usize, dead: HostId, host: HostId) -> Result<Vec<StreamRange>, MovementError> {
    streams(natural, rf, Movement::Replace { dead, host }, host, |r| {
        r.natural.iter().map(|(h, _)| *h).filter(|h| *h != dead).collect()
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::gossip::{Ack, AppState, Gossip};
    use crate::cluster::test_rings::ring;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 7470))
    }

    /// What a seed knows of `nodes` (host, peer address, status, replaces).
    fn known(nodes: &[(HostId, SocketAddr, Status, Option<HostId>)]) -> Gossip {
        let mut seed = Gossip::new(0, 0, Vec::new()).unwrap();
        for (host, peer, status, replaces) in nodes {
            let mut states = vec![
                AppState::PeerAddress(*peer),
                AppState::Status(*status),
                AppState::Tokens(vec![vec![*host as i64 * 10]]),
            ];
            states.extend(replaces.map(AppState::Replaces));
            let g = Gossip::new(*host, 1, states).unwrap();
            let ack: Ack = g.handle_syn(&seed.syn());
            seed.handle_ack(ack);
        }
        seed
    }

    #[test]
    fn targets_parse_as_host_ids_or_addresses() {
        let id = "00000000-0000-0000-0000-000000000033";
        assert_eq!(id.parse(), Ok(ReplaceTarget::Host(0x33)));
        assert_eq!(format!("{:032x}", 0x33).parse(), Ok(ReplaceTarget::Host(0x33)));
        assert_eq!("127.0.0.3:7470".parse(), Ok(ReplaceTarget::Peer(addr(3))));
        assert_eq!("127.0.0.3".parse(), Ok(ReplaceTarget::Ip(addr(3).ip())));
        let err = "node3".parse::<ReplaceTarget>().unwrap_err();
        assert!(err.contains("neither a host id"), "{err}");
    }

    #[test]
    fn a_dead_member_is_found_by_host_id_or_address() {
        let g = known(&[(1, addr(1), Status::Normal, None), (2, addr(2), Status::Normal, None)]);
        let dead = resolve(&g.endpoints().collect::<Vec<_>>(), &ReplaceTarget::Host(2), None).unwrap();
        assert_eq!((dead.host, dead.tokens.clone(), dead.peer), (2, vec![vec![20]], Some(addr(2))));
        assert_eq!(resolve(&g.endpoints().collect::<Vec<_>>(), &ReplaceTarget::Peer(addr(2)), None).unwrap().host, 2);
        assert_eq!(
            resolve(&g.endpoints().collect::<Vec<_>>(), &ReplaceTarget::Ip(addr(1).ip()), None).unwrap().host,
            1
        );
        let shut = known(&[(1, addr(1), Status::Normal, None), (2, addr(2), Status::Shutdown, None)]);
        assert_eq!(
            resolve(&shut.endpoints().collect::<Vec<_>>(), &ReplaceTarget::Host(2), None).unwrap().host,
            2,
            "cleanly stopped"
        );
    }

    #[test]
    fn unknown_gone_joining_or_replaced_members_are_refused() {
        let g = known(&[
            (1, addr(1), Status::Normal, None),
            (2, addr(2), Status::Joining, None),
            (3, addr(3), Status::Left { expires_at_ms: 9 }, None),
            (4, addr(4), Status::Normal, None),
            (5, addr(5), Status::Normal, Some(4)),
            (6, addr(6), Status::Normal, None),
            (7, addr(7), Status::Joining, Some(6)),
        ]);
        let err =
            |t: ReplaceTarget, me: Option<HostId>| resolve(&g.endpoints().collect::<Vec<_>>(), &t, me).unwrap_err();
        let unknown = err(ReplaceTarget::Host(9), None);
        assert!(matches!(unknown, ReplaceError::Unknown { .. }), "{unknown}");
        assert!(unknown.to_string().contains("127.0.0.1:7470"), "lists the members: {unknown}");
        assert!(matches!(err(ReplaceTarget::Host(2), None), ReplaceError::NotInRing { host: 2, .. }));
        assert_eq!(err(ReplaceTarget::Host(3), None), ReplaceError::Gone { host: 3 });
        assert_eq!(err(ReplaceTarget::Host(4), None), ReplaceError::AlreadyReplaced { host: 4, by: 5 });
        assert_eq!(err(ReplaceTarget::Host(6), None), ReplaceError::BeingReplaced { host: 6, by: 7 });
        // The replacement itself, restarted, resumes.
        assert_eq!(resolve(&g.endpoints().collect::<Vec<_>>(), &ReplaceTarget::Host(6), Some(7)).unwrap().host, 6);
    }

    #[test]
    fn an_address_shared_with_a_gone_member_names_the_one_in_the_ring() {
        let g = known(&[
            (1, addr(1), Status::Normal, None),
            (2, addr(2), Status::Removed { expires_at_ms: 1 }, None),
            (3, addr(2), Status::Normal, None),
        ]);
        assert_eq!(resolve(&g.endpoints().collect::<Vec<_>>(), &ReplaceTarget::Peer(addr(2)), None).unwrap().host, 3);
        let two = known(&[(2, addr(2), Status::Normal, None), (3, addr(2), Status::Normal, None)]);
        assert!(matches!(
            resolve(&two.endpoints().collect::<Vec<_>>(), &ReplaceTarget::Peer(addr(2)), None),
            Err(ReplaceError::Ambiguous { .. })
        ));
    }

    #[test]
    fn a_heartbeat_that_moved_means_alive() {
        let dead = DeadNode {
            host: 2,
            tokens: vec![vec![1]],
            peer: None,
            heartbeat: HeartBeat { generation: 5, version: 10 },
        };
        assert!(check_dead(&dead, HeartBeat { generation: 5, version: 10 }).is_ok());
        let err = check_dead(&dead, HeartBeat { generation: 5, version: 12 }).unwrap_err();
        assert!(err.to_string().contains("is alive") && err.to_string().contains("version 12"), "{err}");
        assert!(check_dead(&dead, HeartBeat { generation: 6, version: 1 }).is_err(), "restarted");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The plan covers exactly the tokens the dead node replicates, each from the surviving
        /// replicas of that token.
        #[test]
        fn the_plan_covers_what_the_dead_node_replicated_from_the_survivors(
            seed in any::<u64>(), nodes in 2u128..6, vnodes in 1usize..5, rf in 1usize..4, dead in 1u128..6,
        ) {
            prop_assume!(dead <= nodes);
            let natural = ring(nodes, vnodes, seed, 1);
            let host = 99;
            let streams = plan(&natural, rf, dead, host).unwrap();
            let mut probes: Vec<Token> = vec![Token::MIN + 1, 0, Token::MAX, -1, 1];
            for (t, _) in natural.vnodes() {
                probes.extend([t.wrapping_sub(1), *t, t.wrapping_add(1)]);
            }
            for token in probes.into_iter().filter(|t| *t != Token::MIN) {
                let now: Vec<HostId> = natural.replicas(token, rf, |(h, _)| *h).into_iter().map(|(h, _)| *h).collect();
                let covering: Vec<&StreamRange> = streams.iter().filter(|s| s.range.contains(token)).collect();
                prop_assert_eq!(covering.len(), usize::from(now.contains(&dead)), "token {} in {:?}", token, streams);
                if let Some(s) = covering.first() {
                    let survivors: Vec<HostId> = now.iter().copied().filter(|h| *h != dead).collect();
                    prop_assert_eq!(&s.sources, &survivors);
                }
            }
        }
    }
}

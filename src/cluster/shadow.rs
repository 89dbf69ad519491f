//! The first boot of a node in a cluster (Cassandra's `checkForEndpointCollision`): a node
//! whose data directory has no identity yet (no `node.meta`) and that has seeds asks them for
//! the cluster's endpoint states in a shadow round before it creates one. If a member of the
//! cluster gossips this node's peer address under another host id, the directory that node
//! ran on is gone (replaced disk, wrong path): starting would bring up an empty node with new
//! tokens at the old one's address, and the old node's data would silently vanish from the
//! ring. That start is refused unless the operator acknowledges the loss
//! (`--allow-address-reuse`).
//!
//! The round is plain gossip (docs/PROTOCOL.md, "Shadow round"): GOSSIP_SYNs naming only what
//! was learnt, whose ACKs are never answered, so nothing changes on the seeds and any release
//! that gossips answers it. [`shadow_round`] does the I/O; [`decide`] is the pure rule.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wire::protocol::display_host_id;

use super::gossip::{replaced_hosts, ShadowState, Status, MAX_DELTAS_PER_MESSAGE, MAX_ENDPOINTS};
use super::replace::{resolve, ReplaceTarget};
use super::transport::{PeerAnswer, PeerError, PeerRequest, Transport, COORDINATOR_SHARD};
use super::HostId;

/// How long one SYN of the round waits for its ACK.
pub const SHADOW_SYN_TIMEOUT: Duration = Duration::from_secs(1);

/// Wait between attempts while no seed answers (also the transport's backoff after a failed
/// connection, so every attempt really tries to connect).
pub const SHADOW_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Default bound on the whole round (Cassandra's RING_DELAY, 30 s): a node started a little
/// before its seeds still finds them.
pub const DEFAULT_SHADOW_ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// SYNs sent to one seed in one attempt at most: each ACK teaches up to
/// [`MAX_DELTAS_PER_MESSAGE`] endpoints the SYN did not name, so this covers
/// [`MAX_ENDPOINTS`] with a SYN to spare.
const MAX_SYNS_PER_SEED: usize = MAX_ENDPOINTS / MAX_DELTAS_PER_MESSAGE + 2;

/// What the shadow round found: the endpoints the answering seeds know, or why no seed answered.
#[derive(Debug, Clone)]
pub enum ShadowOutcome {
    /// At least one seed answered; `seeds` are those that did.
    Answered { seeds: Vec<SocketAddr>, state: ShadowState },
    /// No seed answered before the round's timeout: the last error from each.
    NoAnswer { errors: Vec<(SocketAddr, PeerError)>, waited: Duration },
}

/// Asks `seeds` (this node's own address left out) for the cluster's endpoint states, every
/// [`SHADOW_RETRY_INTERVAL`] until one answers or `timeout` has passed. Each attempt asks every
/// seed at once and merges what all the answering ones know.
pub async fn shadow_round(transport: &Transport, seeds: &[SocketAddr], timeout: Duration) -> ShadowOutcome {
    let started = Instant::now();
    let mut waiting_logged = false;
    loop {
        let attempt = Instant::now();
        let answers = futures_util::future::join_all(seeds.iter().map(|seed| learn_from(transport, *seed))).await;
        let mut state = ShadowState::default();
        let mut answered = Vec::new();
        let mut errors = Vec::new();
        for (seed, answer) in seeds.iter().zip(answers) {
            match answer {
                Ok(learnt) => {
                    state.absorb(learnt);
                    answered.push(*seed);
                }
                Err(e) => errors.push((*seed, e)),
            }
        }
        if !answered.is_empty() {
            return ShadowOutcome::Answered { seeds: answered, state };
        }
        if started.elapsed() >= timeout {
            return ShadowOutcome::NoAnswer { errors, waited: started.elapsed() };
        }
        if !waiting_logged {
            waiting_logged = true;
            let errors: Vec<String> = errors.iter().map(|(seed, e)| format!("{seed}: {e}")).collect();
            tracing::info!(?errors, ?timeout, "no seed answered the shadow round yet; retrying");
        }
        let next = SHADOW_RETRY_INTERVAL.saturating_sub(attempt.elapsed());
        glommio::timer::sleep(next.min(timeout.saturating_sub(started.elapsed()))).await;
    }
}

/// The endpoint states one seed knows: SYNs naming what was learnt until an ACK teaches nothing
/// new.
async fn learn_from(transport: &Transport, seed: SocketAddr) -> Result<ShadowState, PeerError> {
    let mut state = ShadowState::default();
    for _ in 0..MAX_SYNS_PER_SEED {
        let syn = PeerRequest::GossipSyn(state.syn());
        let ack = match transport.call_on(seed, COORDINATOR_SHARD, syn, SHADOW_SYN_TIMEOUT).await? {
            PeerAnswer::GossipAck(ack) => ack,
            _ => unreachable!("a call answers with the request's kind"),
        };
        if state.take_ack(ack) == 0 {
            break;
        }
    }
    Ok(state)
}

/// How a first boot goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBoot {
    /// No member has this node's address: join as a new node.
    Join,
    /// Members with this node's address exist (their host ids); the operator accepted that
    /// their data is gone: join as a new node anyway.
    JoinReusingAddress(Vec<HostId>),
    /// The only member with this node's address is the dead node it replaces (`--replace`).
    Replace(HostId),
    /// No seed answered, and this node is a seed itself: start a cluster alone (Cassandra's
    /// "continuing anyway since node is in its own seed list").
    Alone,
}

/// A first boot that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FirstBootError {
    #[error(
        "a node with peer address {peer} already exists in the cluster ({}, as told by seed(s) {}), \
         but this node's data directory {data_dir} has no node.meta: starting would give it a new host id \
         and new tokens at that address, and the old node's data would be silently gone from the ring. If \
         the data directory was lost by mistake, restore it (or start with the right --data-dir). If the \
         old node's data is gone for good, start with --allow-address-reuse to join as a new, empty node; \
         the old host id then stays in the ring as a down node until it is removed",
        describe(.members),
        describe_seeds(.told_by)
    )]
    AddressInUse {
        peer: SocketAddr,
        members: Vec<(HostId, Option<Status>)>,
        told_by: Vec<SocketAddr>,
        data_dir: PathBuf,
    },
    #[error(
        "no seed answered within {waited:?} ({}): a node starting with no node.meta in its data directory \
         asks the cluster first whether its peer address {peer} already belongs to another node. Start a \
         seed first, check --seeds and --cluster-name, or list this node's own peer address among its \
         seeds to let it start a cluster alone",
        describe_errors(.errors)
    )]
    NoSeedAnswered { peer: SocketAddr, errors: Vec<(SocketAddr, String)>, waited: Duration },
}

/// How a node with an identity left the cluster, as the seeds tell it at its restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It decommissioned (LEFT).
    Decommissioned,
    /// `admin removenode` took it out while it was dead.
    Removed,
    /// A replacement (`--replace`) took its tokens over: the host id of the new node.
    Replaced(HostId),
}

/// A restart refused: the seeds say this host left the cluster (Cassandra refuses such a node
/// too, until its state expired from gossip).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}: this node (host id {}) {} (as told by seed(s) {}); it does not rejoin the ring with its old \
     data. Remove the data directory to join the cluster as a new node",
    data_dir.display(), display_host_id(*host), describe_departure(*departure), describe_seeds(told_by)
)]
pub struct RejoinRefused {
    pub host: HostId,
    pub departure: Departure,
    pub told_by: Vec<SocketAddr>,
    pub data_dir: PathBuf,
}

fn describe_departure(departure: Departure) -> String {
    match departure {
        Departure::Decommissioned => "was decommissioned (it left the ring)".to_owned(),
        Departure::Removed => "was removed from the cluster (admin removenode)".to_owned(),
        Departure::Replaced(by) => format!("was replaced by the node with host id {}", display_host_id(by)),
    }
}

/// How `host` left the cluster, if the endpoints a restart's shadow round learnt say it did:
/// its state is LEFT or REMOVED (kept until it expires), or a completed replacement names it.
pub fn departure(host: HostId, state: &ShadowState) -> Option<Departure> {
    let replacement = state.endpoints().find(|(h, s)| replaced_hosts(std::iter::once((*h, *s))).contains(&host));
    if let Some((by, _)) = replacement {
        return Some(Departure::Replaced(by));
    }
    match state.endpoints().find(|(h, _)| *h == host).and_then(|(_, s)| s.status()) {
        Some(Status::Left { .. }) => Some(Departure::Decommissioned),
        Some(Status::Removed { .. }) => Some(Departure::Removed),
        _ => None,
    }
}

fn describe(members: &[(HostId, Option<Status>)]) -> String {
    let each: Vec<String> = members
        .iter()
        .map(|(host, status)| {
            let status = status.map_or_else(|| "no status yet".to_owned(), |s| format!("status {}", status_name(s)));
            format!("host id {}, {status}", display_host_id(*host))
        })
        .collect();
    each.join("; ")
}

fn describe_seeds(seeds: &[SocketAddr]) -> String {
    let each: Vec<String> = seeds.iter().map(SocketAddr::to_string).collect();
    each.join(", ")
}

fn describe_errors(errors: &[(SocketAddr, String)]) -> String {
    let each: Vec<String> = errors.iter().map(|(seed, e)| format!("{seed}: {e}")).collect();
    each.join("; ")
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Joining => "joining",
        Status::Normal => "normal",
        Status::Leaving => "leaving",
        Status::Shutdown => "shut down",
        Status::Left { .. } => "left",
        Status::Removed { .. } => "removed",
    }
}

/// The first-boot rule for a node whose peer address is `peer`, whose seeds are `seeds` (its
/// own address may be among them) and whose data directory `data_dir` has no identity, given
/// what its shadow round found.
pub fn decide(
    peer: SocketAddr,
    seeds: &[SocketAddr],
    allow_address_reuse: bool,
    replacing: Option<&ReplaceTarget>,
    data_dir: PathBuf,
    outcome: &ShadowOutcome,
) -> Result<FirstBoot, FirstBootError> {
    match outcome {
        ShadowOutcome::Answered { seeds: answered, state } => {
            let members: Vec<(HostId, Option<Status>)> =
                state.members_at(peer).into_iter().map(|(host, s)| (host, s.status())).collect();
            // A replacement may take the address of the dead node it replaces (its own checks
            // come after the round, `server::replace`).
            let endpoints: Vec<_> = state.endpoints().collect();
            let replaced = replacing.and_then(|t| resolve(&endpoints, t, None).ok()).map(|dead| dead.host);
            match (members.is_empty(), allow_address_reuse) {
                (true, _) => Ok(FirstBoot::Join),
                _ if replaced.is_some() && members.iter().all(|(h, _)| Some(*h) == replaced) => {
                    Ok(FirstBoot::Replace(replaced.expect("checked just above")))
                }
                (false, true) => Ok(FirstBoot::JoinReusingAddress(members.iter().map(|(h, _)| *h).collect())),
                (false, false) => {
                    Err(FirstBootError::AddressInUse { peer, members, told_by: answered.clone(), data_dir })
                }
            }
        }
        ShadowOutcome::NoAnswer { .. } if seeds.contains(&peer) => Ok(FirstBoot::Alone),
        ShadowOutcome::NoAnswer { errors, waited } => Err(FirstBootError::NoSeedAnswered {
            peer,
            errors: errors.iter().map(|(seed, e)| (*seed, e.to_string())).collect(),
            waited: *waited,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::gossip::{Ack, AppState, Gossip};

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], 7470))
    }

    /// What a seed that knows `nodes` (host, peer address, status) answers to a first SYN.
    fn answered(nodes: &[(HostId, SocketAddr, Status)]) -> ShadowOutcome {
        let mut state = ShadowState::default();
        for (host, peer, status) in nodes {
            let g = Gossip::new(
                *host,
                1,
                vec![
                    AppState::PeerAddress(*peer),
                    AppState::Status(*status),
                    AppState::Tokens(vec![vec![*host as i64]]),
                ],
            )
            .expect("valid states");
            let ack: Ack = g.handle_syn(&state.syn());
            state.take_ack(ack);
        }
        ShadowOutcome::Answered { seeds: vec![addr(1)], state }
    }

    fn no_answer() -> ShadowOutcome {
        let error = PeerError::Unreachable { peer: addr(1), reason: "connection refused".into() };
        ShadowOutcome::NoAnswer { errors: vec![(addr(1), error)], waited: Duration::from_secs(30) }
    }

    #[test]
    fn a_restart_of_a_node_that_left_the_cluster_is_refused_naming_how_it_left() {
        let state_of = |outcome: ShadowOutcome| match outcome {
            ShadowOutcome::Answered { state, .. } => state,
            ShadowOutcome::NoAnswer { .. } => unreachable!("answered"),
        };
        let gone = |status| state_of(answered(&[(1, addr(1), Status::Normal), (2, addr(2), status)]));
        assert_eq!(departure(2, &gone(Status::Normal)), None);
        assert_eq!(departure(2, &gone(Status::Shutdown)), None);
        assert_eq!(departure(2, &gone(Status::Left { expires_at_ms: 9 })), Some(Departure::Decommissioned));
        assert_eq!(departure(2, &gone(Status::Removed { expires_at_ms: 9 })), Some(Departure::Removed));
        assert_eq!(departure(7, &gone(Status::Normal)), None, "unknown: forgotten, or never known");
        // A completed replacement names it (a replacement still joining does not).
        for (status, expected) in [(Status::Joining, None), (Status::Normal, Some(Departure::Replaced(9)))] {
            let mut state = gone(Status::Normal);
            let g = Gossip::new(9, 1, vec![AppState::Status(status), AppState::Replaces(2)]).expect("valid states");
            state.take_ack(g.handle_syn(&state.syn()));
            assert_eq!(departure(2, &state), expected, "a replacement {status:?}");
        }
        let refused = RejoinRefused {
            host: 2,
            departure: Departure::Removed,
            told_by: vec![addr(1)],
            data_dir: "/data/n2".into(),
        };
        let text = refused.to_string();
        assert!(text.contains("was removed from the cluster") && text.contains("Remove the data directory"), "{text}");
    }

    #[test]
    fn a_member_at_this_address_refuses_the_start_unless_acknowledged() {
        let me = addr(3);
        let outcome = answered(&[(1, addr(1), Status::Normal), (0x33, me, Status::Normal)]);
        let err = decide(me, &[addr(1)], false, None, "/data/n3".into(), &outcome).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("peer address 127.0.0.3:7470 already exists"), "{text}");
        assert!(text.contains("host id 00000000-0000-0000-0000-000000000033, status normal"), "{text}");
        assert!(text.contains("/data/n3") && text.contains("--allow-address-reuse"), "{text}");
        assert_eq!(
            decide(me, &[addr(1)], true, None, "/d".into(), &outcome),
            Ok(FirstBoot::JoinReusingAddress(vec![0x33]))
        );
        // A node shut down cleanly is still a member.
        let shut = answered(&[(0x33, me, Status::Shutdown)]);
        assert!(matches!(
            decide(me, &[addr(1)], false, None, "/d".into(), &shut),
            Err(FirstBootError::AddressInUse { .. })
        ));
    }

    #[test]
    fn a_new_address_or_one_a_gone_node_left_joins() {
        let me = addr(4);
        let outcome = answered(&[(1, addr(1), Status::Normal), (2, addr(2), Status::Normal)]);
        assert_eq!(decide(me, &[addr(1)], false, None, "/d".into(), &outcome), Ok(FirstBoot::Join));
        // Another port on the same host is another node.
        let other_port = answered(&[(2, SocketAddr::from(([127, 0, 0, 4], 7471)), Status::Normal)]);
        assert_eq!(decide(me, &[addr(1)], false, None, "/d".into(), &other_port), Ok(FirstBoot::Join));
        for gone in [Status::Left { expires_at_ms: 1 }, Status::Removed { expires_at_ms: 1 }] {
            let outcome = answered(&[(1, addr(1), Status::Normal), (9, me, gone)]);
            assert_eq!(decide(me, &[addr(1)], false, None, "/d".into(), &outcome), Ok(FirstBoot::Join), "{gone:?}");
        }
    }

    #[test]
    fn a_replacement_may_take_the_address_of_the_node_it_replaces() {
        let me = addr(3);
        let outcome = answered(&[(1, addr(1), Status::Normal), (0x33, me, Status::Normal)]);
        for target in [ReplaceTarget::Host(0x33), ReplaceTarget::Peer(me), ReplaceTarget::Ip(me.ip())] {
            assert_eq!(
                decide(me, &[addr(1)], false, Some(&target), "/d".into(), &outcome),
                Ok(FirstBoot::Replace(0x33))
            );
        }
        // Replacing another node does not make this address free.
        let other = ReplaceTarget::Host(1);
        assert!(matches!(
            decide(me, &[addr(1)], false, Some(&other), "/d".into(), &outcome),
            Err(FirstBootError::AddressInUse { .. })
        ));
    }

    #[test]
    fn without_an_answer_only_a_seed_starts() {
        let me = addr(2);
        assert_eq!(decide(me, &[addr(1), me], false, None, "/d".into(), &no_answer()), Ok(FirstBoot::Alone));
        let err = decide(me, &[addr(1)], true, None, "/d".into(), &no_answer()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no seed answered within 30s") && text.contains("127.0.0.1:7470"), "{text}");
        assert!(text.contains("connection refused") && text.contains("own peer address"), "{text}");
    }
}

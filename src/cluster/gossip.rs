//! Gossip membership state, as in Cassandra's Gossiper (EndpointState, HeartBeatState,
//! VersionedValue, the GossipDigestSyn/Ack/Ack2 exchange): what this node knows about every
//! endpoint, the three-message exchange as pure functions, and the message bodies' encoding
//! (docs/PROTOCOL.md, "Peer protocol: gossip bodies"). It never does I/O, reads no clock and
//! never decides whether a peer is up (the failure detector does, from the events here).
//!
//! Every endpoint's heartbeat and application states carry versions from one counter of the
//! endpoint that owns them, and a generation that rises when that endpoint restarts: a higher
//! generation replaces everything known about the endpoint, an older one is ignored.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use shards::node_meta::{MAX_SHARDS, MAX_TOKENS_PER_SHARD};
use wire::codec::{DecodeError, Reader, Writer};
use wire::ring::{Ring, RingError};
use wire::token::Token;

use super::HostId;

/// Endpoints known at most, this node included; a new endpoint past it is refused
/// ([`GossipEvent::EndpointRefused`]).
pub const MAX_ENDPOINTS: usize = 1024;

/// Endpoint state deltas in one ACK or ACK2 at most; what does not fit goes in later rounds
/// (the other side still lacks it and asks again).
pub const MAX_DELTAS_PER_MESSAGE: usize = 64;

/// Encoded bytes of the deltas in one ACK or ACK2 at most (one delta always goes, and the
/// largest possible delta, 256 shards x 256 tokens, is about 520 KiB). With the digests of
/// [`MAX_ENDPOINTS`] endpoints (32 KiB) a body stays well inside the default 16 MiB frame.
pub const MAX_DELTA_BYTES: usize = 8 << 20;

/// Longest release version string gossiped, in bytes.
pub const MAX_RELEASE_VERSION_LEN: usize = 64;

/// The layout version every gossip body starts with; a body of another version is refused.
/// Version 3 added application state 9 (`Replaces`); a body without it is still sent as
/// version 2 (so nodes of the previous release read it), and version 2 bodies are read.
pub const GOSSIP_BODY_VERSION: u8 = 3;
/// The oldest body version this node reads (and the version of a body that needs no more).
const OLDEST_GOSSIP_BODY_VERSION: u8 = 2;

/// The version a body carrying `deltas` is sent as: the oldest that holds every key in them.
fn body_version(deltas: &[Delta]) -> u8 {
    let replaces = deltas.iter().flat_map(|d| &d.states).any(|v| v.value.key() == StateKey::Replaces);
    if replaces {
        GOSSIP_BODY_VERSION
    } else {
        OLDEST_GOSSIP_BODY_VERSION
    }
}

/// Encoded size of a [`Digest`]: host id (16), generation (8), max version (8).
const DIGEST_BYTES: usize = 32;
/// Smallest encoded [`Delta`]: host id, generation, heartbeat version, state count.
const MIN_DELTA_BYTES: usize = 16 + 8 + 8 + 1;

/// An endpoint's liveness beacon: `generation` is fixed for one run of the process (rises
/// with every restart), `version` rises with every heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeartBeat {
    pub generation: u64,
    pub version: u64,
}

/// Which application state a value is; the u8 is its code in gossip bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum StateKey {
    PeerAddress = 1,
    ClientAddress = 2,
    Tokens = 3,
    Status = 4,
    SchemaVersion = 5,
    Load = 6,
    ReleaseVersion = 7,
    ShardAwareAddress = 8,
    Replaces = 9,
}

impl StateKey {
    pub const ALL: [StateKey; 9] = [
        StateKey::PeerAddress,
        StateKey::ClientAddress,
        StateKey::Tokens,
        StateKey::Status,
        StateKey::SchemaVersion,
        StateKey::Load,
        StateKey::ReleaseVersion,
        StateKey::ShardAwareAddress,
        StateKey::Replaces,
    ];

    fn from_code(code: u8) -> Option<StateKey> {
        StateKey::ALL.into_iter().find(|k| *k as u8 == code)
    }
}

/// Where an endpoint is in its life in the ring. Down is never gossiped: each node's failure
/// detector decides it. The code is the status's first byte in gossip bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Joining,
    Normal,
    Leaving,
    Shutdown,
    /// The node decommissioned: it is out of the ring. Peers keep the state (so that gossip
    /// does not bring the node back from a stale peer) until `expires_at_ms`, milliseconds
    /// since the Unix epoch on the wall clock of the node that set it (Cassandra's LEFT with
    /// its expire time; [`LEFT_STATE_RETENTION`] after leaving).
    Left {
        expires_at_ms: u64,
    },
    /// The node was taken out of the ring while dead, by `removenode` or by a replacement
    /// taking its tokens (Cassandra's `removed`); kept until `expires_at_ms` as [`Status::Left`].
    Removed {
        expires_at_ms: u64,
    },
}

/// How long peers keep the state of a node that left or was removed before forgetting it
/// (Cassandra's VERY_LONG_TIME_MS, 3 days): longer than any node can stay down and still come
/// back with a stale view.
pub const LEFT_STATE_RETENTION: std::time::Duration = std::time::Duration::from_secs(3 * 24 * 3600);

impl Status {
    /// The statuses a body may carry (with an expiry of 0 for those that have one).
    #[cfg(test)]
    const ALL: [Status; 6] = [
        Status::Joining,
        Status::Normal,
        Status::Leaving,
        Status::Shutdown,
        Status::Left { expires_at_ms: 0 },
        Status::Removed { expires_at_ms: 0 },
    ];

    /// Its code in gossip bodies (docs/PROTOCOL.md, key 4).
    pub fn code(self) -> u8 {
        match self {
            Status::Joining => 1,
            Status::Normal => 2,
            Status::Leaving => 3,
            Status::Shutdown => 4,
            Status::Left { .. } => 5,
            Status::Removed { .. } => 6,
        }
    }

    /// Whether the node is out of the ring for good (left or removed): not a member of the
    /// cluster view, not listed by `admin status`.
    pub fn is_gone(self) -> bool {
        matches!(self, Status::Left { .. } | Status::Removed { .. })
    }

    /// Whether a gone node's state may be forgotten at wall clock `now_ms` (ms since the Unix
    /// epoch); never for a node in the ring.
    pub fn expired(self, now_ms: u64) -> bool {
        match self {
            Status::Left { expires_at_ms } | Status::Removed { expires_at_ms } => now_ms >= expires_at_ms,
            _ => false,
        }
    }

    fn encode(self, w: &mut Writer) {
        w.u8(self.code());
        if let Status::Left { expires_at_ms } | Status::Removed { expires_at_ms } = self {
            w.u64(expires_at_ms);
        }
    }

    fn decode(r: &mut Reader) -> Result<Status, DecodeError> {
        Ok(match r.u8()? {
            1 => Status::Joining,
            2 => Status::Normal,
            3 => Status::Leaving,
            4 => Status::Shutdown,
            5 => Status::Left { expires_at_ms: r.u64()? },
            6 => Status::Removed { expires_at_ms: r.u64()? },
            code => return Err(r.invalid("gossip status", format!("unknown status code {code}"))),
        })
    }
}

/// One application state value of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppState {
    /// Where peers reach it (`--peer-listen`).
    PeerAddress(SocketAddr),
    /// Where clients reach it (`--listen`).
    ClientAddress(SocketAddr),
    /// Its vnode tokens per shard (`NodeMeta::tokens`; the shard count is the length).
    Tokens(Vec<Vec<Token>>),
    Status(Status),
    /// Digest of its schema catalog; nodes whose versions differ pull schemas.
    SchemaVersion(u64),
    /// Bytes of data it stores.
    Load(u64),
    /// The `enigmadb` version it runs.
    ReleaseVersion(String),
    /// Where its shard-aware client port listens (a connection is served by the shard its
    /// source port names); absent when the node has none.
    ShardAwareAddress(SocketAddr),
    /// The dead node whose tokens it took over (`enigmadb server --replace`): while it is
    /// JOINING it is that node's pending replacement; once NORMAL, the dead node is out of the
    /// ring everywhere. Kept for the life of the node.
    Replaces(HostId),
}

impl AppState {
    pub fn key(&self) -> StateKey {
        match self {
            AppState::PeerAddress(_) => StateKey::PeerAddress,
            AppState::ClientAddress(_) => StateKey::ClientAddress,
            AppState::Tokens(_) => StateKey::Tokens,
            AppState::Status(_) => StateKey::Status,
            AppState::SchemaVersion(_) => StateKey::SchemaVersion,
            AppState::Load(_) => StateKey::Load,
            AppState::ReleaseVersion(_) => StateKey::ReleaseVersion,
            AppState::ShardAwareAddress(_) => StateKey::ShardAwareAddress,
            AppState::Replaces(_) => StateKey::Replaces,
        }
    }

    /// Checks the bounds every gossiped value keeps (the decoder checks the same).
    fn validate(&self) -> Result<(), String> {
        match self {
            AppState::Tokens(shards) => {
                if shards.is_empty() || shards.len() > MAX_SHARDS {
                    return Err(format!("{} shards, expected 1 to {MAX_SHARDS}", shards.len()));
                }
                match shards.iter().find(|s| s.is_empty() || s.len() > MAX_TOKENS_PER_SHARD) {
                    Some(s) => Err(format!("a shard with {} tokens, expected 1 to {MAX_TOKENS_PER_SHARD}", s.len())),
                    None => Ok(()),
                }
            }
            AppState::ReleaseVersion(v) if v.len() > MAX_RELEASE_VERSION_LEN => {
                Err(format!("release version of {} bytes, at most {MAX_RELEASE_VERSION_LEN}", v.len()))
            }
            _ => Ok(()),
        }
    }

    fn encode(&self, w: &mut Writer) {
        match self {
            AppState::PeerAddress(a) | AppState::ClientAddress(a) | AppState::ShardAwareAddress(a) => encode_addr(w, a),
            AppState::Tokens(shards) => {
                w.u32(shards.len() as u32);
                for shard in shards {
                    w.u32(shard.len() as u32);
                    shard.iter().for_each(|t| {
                        w.i64(*t);
                    });
                }
            }
            AppState::Status(s) => s.encode(w),
            AppState::SchemaVersion(v) | AppState::Load(v) => {
                w.u64(*v);
            }
            AppState::ReleaseVersion(v) => {
                w.str(v);
            }
            AppState::Replaces(host) => encode_host(w, *host),
        }
    }

    fn decode(key: StateKey, r: &mut Reader) -> Result<AppState, DecodeError> {
        let at = r.offset();
        let value = match key {
            StateKey::PeerAddress => AppState::PeerAddress(decode_addr(r)?),
            StateKey::ClientAddress => AppState::ClientAddress(decode_addr(r)?),
            StateKey::ShardAwareAddress => AppState::ShardAwareAddress(decode_addr(r)?),
            StateKey::Tokens => {
                let shards = read_count(r, 4, MAX_SHARDS)?;
                let tokens = (0..shards)
                    .map(|_| {
                        let n = read_count(r, 8, MAX_TOKENS_PER_SHARD)?;
                        (0..n).map(|_| r.i64()).collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                AppState::Tokens(tokens)
            }
            StateKey::Status => AppState::Status(Status::decode(r)?),
            StateKey::Replaces => AppState::Replaces(decode_host(r)?),
            StateKey::SchemaVersion => AppState::SchemaVersion(r.u64()?),
            StateKey::Load => AppState::Load(r.u64()?),
            StateKey::ReleaseVersion => {
                AppState::ReleaseVersion(r.bytes_limited(MAX_RELEASE_VERSION_LEN).and_then(|b| {
                    std::str::from_utf8(b).map(str::to_owned).map_err(|e| DecodeError::Invalid {
                        offset: at,
                        what: "release version",
                        detail: e.to_string(),
                    })
                })?)
            }
        };
        match value.validate() {
            Ok(()) => Ok(value),
            Err(detail) => Err(DecodeError::Invalid { offset: at, what: "gossip application state", detail }),
        }
    }
}

/// The hosts whose tokens a completed replacement took over: named by the `Replaces` state of
/// an endpoint that is no longer joining (NORMAL, or later shut down or leaving) and not gone.
/// Such a host is out of the ring everywhere (Cassandra removes a replaced node), whatever its
/// own state still says: it is dead and cannot gossip that it was removed.
pub fn replaced_hosts<'a>(endpoints: impl Iterator<Item = (HostId, &'a EndpointState)>) -> BTreeSet<HostId> {
    endpoints
        .filter(|(_, s)| s.status().is_some_and(|st| st != Status::Joining && !st.is_gone()))
        .filter_map(|(_, s)| s.replaces())
        .collect()
}

/// An application state value with the version it was set at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: AppState,
    pub version: u64,
}

/// Everything known about one endpoint: its heartbeat and its application states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointState {
    heartbeat: HeartBeat,
    /// At most one value per key (so at most [`StateKey::ALL`] entries).
    states: BTreeMap<StateKey, Versioned>,
}

impl EndpointState {
    pub fn heartbeat(&self) -> HeartBeat {
        self.heartbeat
    }

    /// The highest version of the heartbeat and of every application state.
    pub fn max_version(&self) -> u64 {
        self.states.values().map(|v| v.version).fold(self.heartbeat.version, u64::max)
    }

    pub fn get(&self, key: StateKey) -> Option<&AppState> {
        self.states.get(&key).map(|v| &v.value)
    }

    /// Every application state, in key order.
    pub fn states(&self) -> impl Iterator<Item = &Versioned> {
        self.states.values()
    }

    /// The dead node this one took over (or is taking over) the tokens of.
    pub fn replaces(&self) -> Option<HostId> {
        match self.get(StateKey::Replaces) {
            Some(AppState::Replaces(h)) => Some(*h),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<Status> {
        match self.get(StateKey::Status) {
            Some(AppState::Status(s)) => Some(*s),
            _ => None,
        }
    }

    /// Vnode tokens per shard.
    pub fn tokens(&self) -> Option<&[Vec<Token>]> {
        match self.get(StateKey::Tokens) {
            Some(AppState::Tokens(t)) => Some(t),
            _ => None,
        }
    }

    pub fn peer_address(&self) -> Option<SocketAddr> {
        match self.get(StateKey::PeerAddress) {
            Some(AppState::PeerAddress(a)) => Some(*a),
            _ => None,
        }
    }

    pub fn client_address(&self) -> Option<SocketAddr> {
        match self.get(StateKey::ClientAddress) {
            Some(AppState::ClientAddress(a)) => Some(*a),
            _ => None,
        }
    }

    pub fn shard_aware_address(&self) -> Option<SocketAddr> {
        match self.get(StateKey::ShardAwareAddress) {
            Some(AppState::ShardAwareAddress(a)) => Some(*a),
            _ => None,
        }
    }

    pub fn schema_version(&self) -> Option<u64> {
        match self.get(StateKey::SchemaVersion) {
            Some(AppState::SchemaVersion(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn load(&self) -> Option<u64> {
        match self.get(StateKey::Load) {
            Some(AppState::Load(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn release_version(&self) -> Option<&str> {
        match self.get(StateKey::ReleaseVersion) {
            Some(AppState::ReleaseVersion(v)) => Some(v),
            _ => None,
        }
    }

    /// What a peer knowing this endpoint up to `version` of the same generation lacks: the
    /// heartbeat (always) and the states set after `version`.
    fn delta_after(&self, host: HostId, version: u64) -> Delta {
        let states = self.states.values().filter(|v| v.version > version).cloned().collect();
        Delta { host, heartbeat: self.heartbeat, states }
    }

    fn from_delta(delta: Delta) -> EndpointState {
        let states = delta.states.into_iter().map(|v| (v.value.key(), v)).collect();
        EndpointState { heartbeat: delta.heartbeat, states }
    }
}

/// What a node knows of one endpoint, in a few bytes: compared with the receiver's own
/// knowledge to find who lacks what. In an ACK, a digest asks for the endpoint's states newer
/// than (generation, max_version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    pub host: HostId,
    pub generation: u64,
    pub max_version: u64,
}

/// Part of an endpoint's state: its heartbeat and some of its application states (all of
/// them when the receiver had nothing of this generation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub host: HostId,
    pub heartbeat: HeartBeat,
    pub states: Vec<Versioned>,
}

/// Gossip round, first message (GOSSIP_SYN): the sender's digest of every endpoint it knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syn {
    pub digests: Vec<Digest>,
}

/// Answer to a SYN (GOSSIP_ACK): the endpoint states the receiver wants, and the deltas it
/// has that the SYN's sender lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub requests: Vec<Digest>,
    pub deltas: Vec<Delta>,
}

/// Gossip round, last message (GOSSIP_ACK2): the deltas the ACK asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack2 {
    pub deltas: Vec<Delta>,
}

/// What applying deltas changed, for the gossip service: it feeds the failure detector
/// (new, restarted, heartbeat advanced) and rebuilds the ring or pulls schemas (state changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GossipEvent {
    /// An endpoint not known before, with all the states it came with.
    NewEndpoint(HostId),
    /// An endpoint came back with a higher generation; its old states are gone.
    Restarted(HostId),
    /// One application state of an endpoint has a newer value.
    StateChanged(HostId, StateKey),
    /// An endpoint's heartbeat version rose (it is alive: report it to the failure detector).
    HeartbeatAdvanced(HostId),
    /// A new endpoint was not added: [`MAX_ENDPOINTS`] are known already.
    EndpointRefused(HostId),
}

/// A local application state that cannot be gossiped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    #[error("application state {key:?} cannot be gossiped: {detail}")]
    BadValue { key: StateKey, detail: String },
}

/// This node's gossip state: every endpoint it knows (itself included), at most
/// [`MAX_ENDPOINTS`].
#[derive(Debug, Clone)]
pub struct Gossip {
    local: HostId,
    endpoints: BTreeMap<HostId, EndpointState>,
}

impl Gossip {
    /// The state of a node starting with `generation` (higher than any of its earlier runs)
    /// and its first application states (a key given twice keeps the later value).
    pub fn new(local: HostId, generation: u64, initial: Vec<AppState>) -> Result<Gossip, GossipError> {
        let state = EndpointState { heartbeat: HeartBeat { generation, version: 0 }, states: BTreeMap::new() };
        let mut gossip = Gossip { local, endpoints: BTreeMap::from([(local, state)]) };
        initial.into_iter().try_for_each(|value| gossip.set_local(value))?;
        Ok(gossip)
    }

    pub fn local(&self) -> HostId {
        self.local
    }

    pub fn local_state(&self) -> &EndpointState {
        // The local endpoint is inserted by `new` and never removed or replaced.
        self.endpoints.get(&self.local).unwrap_or_else(|| unreachable!("the local endpoint is always known"))
    }

    fn local_state_mut(&mut self) -> &mut EndpointState {
        let local = self.local;
        // As in `local_state`.
        self.endpoints.get_mut(&local).unwrap_or_else(|| unreachable!("the local endpoint is always known"))
    }

    /// Advances the local heartbeat (once per gossip round).
    pub fn beat(&mut self) {
        let state = self.local_state_mut();
        state.heartbeat.version = state.max_version() + 1;
    }

    /// Sets a local application state at the next version.
    pub fn set_local(&mut self, value: AppState) -> Result<(), GossipError> {
        let key = value.key();
        value.validate().map_err(|detail| GossipError::BadValue { key, detail })?;
        let state = self.local_state_mut();
        let version = state.max_version() + 1;
        state.states.insert(key, Versioned { value, version });
        Ok(())
    }

    /// Sets the status of another endpoint, one that cannot speak for itself (a dead node being
    /// removed: `admin removenode`, Cassandra's advertiseRemoving), at that endpoint's next
    /// version within its generation, so that every peer takes it in the next rounds. Its
    /// heartbeat is left as it is: no failure detector hears it as alive. False when the
    /// endpoint is unknown or is this node.
    pub fn set_status_of(&mut self, host: HostId, status: Status) -> bool {
        let Some(state) = self.endpoints.get_mut(&host).filter(|_| host != self.local) else { return false };
        let version = state.max_version() + 1;
        state.states.insert(StateKey::Status, Versioned { value: AppState::Status(status), version });
        true
    }

    /// Forgets every endpoint (never this node) that left or was removed and whose state
    /// expired at wall clock `now_ms`; returns them. Every node forgets it at about the same
    /// time (the expiry is in the state): one that still gossips it brings it back only until
    /// its own eviction, so the state does not live on.
    pub fn evict_expired(&mut self, now_ms: u64) -> Vec<HostId> {
        let local = self.local;
        let expired: Vec<HostId> = self
            .endpoints
            .iter()
            .filter(|(host, s)| **host != local && s.status().is_some_and(|st| st.expired(now_ms)))
            .map(|(host, _)| *host)
            .collect();
        for host in &expired {
            self.endpoints.remove(host);
        }
        expired
    }

    /// Every known endpoint with its state, in host order (the service builds the ring and
    /// `admin status` from it).
    pub fn endpoints(&self) -> impl Iterator<Item = (HostId, &EndpointState)> {
        self.endpoints.iter().map(|(h, s)| (*h, s))
    }

    pub fn endpoint(&self, host: HostId) -> Option<&EndpointState> {
        self.endpoints.get(&host)
    }

    /// The digest of every known endpoint, in host order.
    pub fn digests(&self) -> Vec<Digest> {
        self.endpoints
            .iter()
            .map(|(host, s)| Digest { host: *host, generation: s.heartbeat.generation, max_version: s.max_version() })
            .collect()
    }

    /// The SYN that starts a round with some peer.
    pub fn syn(&self) -> Syn {
        Syn { digests: self.digests() }
    }

    /// Answers a SYN (changes nothing here: what the sender has newer arrives in its ACK2).
    /// Asks for every endpoint the sender knows newer, and sends every endpoint it knows
    /// newer, including the ones the SYN does not mention at all.
    pub fn handle_syn(&self, syn: &Syn) -> Ack {
        let mut requests = Vec::new();
        let mut deltas = Deltas::default();
        let mut room = MAX_ENDPOINTS.saturating_sub(self.endpoints.len());
        for digest in syn.digests.iter().take(MAX_ENDPOINTS) {
            let Some(local) = self.endpoints.get(&digest.host) else {
                // Unknown here: ask for all of it, while there is room to keep it.
                if room > 0 {
                    room -= 1;
                    requests.push(Digest { max_version: 0, ..*digest });
                }
                continue;
            };
            let (generation, max_version) = (local.heartbeat.generation, local.max_version());
            // Nobody knows this node newer than itself: a digest claiming so is not asked for.
            let theirs = digest.host != self.local;
            match (digest.generation.cmp(&generation), digest.max_version.cmp(&max_version)) {
                (Ordering::Greater, _) if theirs => requests.push(Digest { max_version: 0, ..*digest }),
                (Ordering::Less, _) => deltas.push(local.delta_after(digest.host, 0)),
                (Ordering::Equal, Ordering::Greater) if theirs => {
                    requests.push(Digest { generation, max_version, host: digest.host })
                }
                (Ordering::Equal, Ordering::Less) => deltas.push(local.delta_after(digest.host, digest.max_version)),
                _ => {}
            }
        }
        let mentioned: BTreeSet<HostId> = syn.digests.iter().map(|d| d.host).collect();
        for (host, local) in self.endpoints.iter().filter(|(h, _)| !mentioned.contains(h)) {
            deltas.push(local.delta_after(*host, 0));
        }
        Ack { requests, deltas: deltas.list }
    }

    /// Takes an ACK to this node's SYN: applies its deltas and answers what it asked for.
    pub fn handle_ack(&mut self, ack: Ack) -> (Ack2, Vec<GossipEvent>) {
        let events = self.apply(ack.deltas);
        let mut deltas = Deltas::default();
        for request in ack.requests.iter().take(MAX_ENDPOINTS) {
            let Some(local) = self.endpoints.get(&request.host) else { continue };
            let generation = local.heartbeat.generation;
            if generation > request.generation {
                deltas.push(local.delta_after(request.host, 0));
            } else if generation == request.generation && local.max_version() > request.max_version {
                deltas.push(local.delta_after(request.host, request.max_version));
            }
        }
        (Ack2 { deltas: deltas.list }, events)
    }

    /// Takes the ACK2 ending a round this node answered.
    pub fn handle_ack2(&mut self, ack2: Ack2) -> Vec<GossipEvent> {
        self.apply(ack2.deltas)
    }

    /// Merges deltas into what is known. A peer's word about this node itself is ignored
    /// (only this node sets its own state).
    fn apply(&mut self, deltas: Vec<Delta>) -> Vec<GossipEvent> {
        let mut events = Vec::new();
        for delta in deltas.into_iter().filter(|d| d.host != self.local) {
            merge(&mut self.endpoints, delta, &mut events);
        }
        events
    }

    /// The dead nodes a completed replacement took over (`replaced_hosts`).
    pub fn replaced(&self) -> BTreeSet<HostId> {
        replaced_hosts(self.endpoints())
    }

    /// The token ring of the endpoints `member` accepts (e.g. status Normal and a known
    /// tokens state), each vnode owned by (host, shard). A replaced node is not in it, nor is
    /// a replacement in progress (its tokens are the dead node's, still in the ring).
    pub fn ring(&self, member: impl Fn(&EndpointState) -> bool) -> Result<Ring<(HostId, u16)>, RingError> {
        let replaced = self.replaced();
        let vnodes = self
            .endpoints
            .iter()
            .filter(|(host, s)| member(s) && !replaced.contains(host))
            .filter(|(_, s)| !(s.replaces().is_some() && s.status() == Some(Status::Joining)))
            .filter_map(|(host, s)| s.tokens().map(|t| (*host, t)))
            .flat_map(|(host, shards)| {
                shards
                    .iter()
                    .enumerate()
                    .flat_map(move |(shard, ts)| ts.iter().map(move |t| (*t, (host, shard as u16))))
            })
            .collect();
        Ring::new(vnodes)
    }
}

/// Merges one delta into `endpoints` (at most [`MAX_ENDPOINTS`]): a higher generation replaces
/// what is known, an older one is ignored, and within a generation the newer heartbeat and
/// states win. What changed is pushed to `events`. A node that left or was removed is in
/// quarantine until its state expires: a new generation of it (the old node restarted on its
/// old data directory) is ignored, so it never comes back into the ring (Cassandra refuses
/// it too); a new node has a new host id.
fn merge(endpoints: &mut BTreeMap<HostId, EndpointState>, delta: Delta, events: &mut Vec<GossipEvent>) {
    let host = delta.host;
    let full = endpoints.len() >= MAX_ENDPOINTS;
    match endpoints.get_mut(&host) {
        None if full => events.push(GossipEvent::EndpointRefused(host)),
        None => {
            endpoints.insert(host, EndpointState::from_delta(delta));
            events.push(GossipEvent::NewEndpoint(host));
        }
        Some(known)
            if known.status().is_some_and(Status::is_gone)
                && delta.heartbeat.generation > known.heartbeat.generation => {}
        Some(known) if delta.heartbeat.generation > known.heartbeat.generation => {
            *known = EndpointState::from_delta(delta);
            events.push(GossipEvent::Restarted(host));
        }
        Some(known) if delta.heartbeat.generation < known.heartbeat.generation => {}
        Some(known) => {
            if delta.heartbeat.version > known.heartbeat.version {
                known.heartbeat = delta.heartbeat;
                events.push(GossipEvent::HeartbeatAdvanced(host));
            }
            for versioned in delta.states {
                let key = versioned.value.key();
                if known.states.get(&key).is_none_or(|v| v.version < versioned.version) {
                    known.states.insert(key, versioned);
                    events.push(GossipEvent::StateChanged(host, key));
                }
            }
        }
    }
}

/// What a node without an identity learns in a shadow round (Cassandra's doShadowRound): it
/// sends GOSSIP_SYNs listing only what it learnt so far (none at first), takes the seeds' ACKs
/// and never answers them with an ACK2, so the seeds' state does not change and this node is
/// never announced. A seed's ACK carries the endpoints the SYN did not mention, at most
/// [`MAX_DELTAS_PER_MESSAGE`] each: a larger cluster takes a few SYNs.
#[derive(Debug, Clone, Default)]
pub struct ShadowState {
    endpoints: BTreeMap<HostId, EndpointState>,
}

impl ShadowState {
    /// The next SYN: the digests of the endpoints learnt so far (an empty list at first).
    pub fn syn(&self) -> Syn {
        let digests = self
            .endpoints
            .iter()
            .map(|(host, s)| Digest { host: *host, generation: s.heartbeat.generation, max_version: s.max_version() })
            .collect();
        Syn { digests }
    }

    /// Takes a seed's ACK (its requests are not answered); the number of endpoints it taught
    /// that were not known before.
    pub fn take_ack(&mut self, ack: Ack) -> usize {
        let mut events = Vec::new();
        for delta in ack.deltas {
            merge(&mut self.endpoints, delta, &mut events);
        }
        events.iter().filter(|e| matches!(e, GossipEvent::NewEndpoint(_))).count()
    }

    /// Merges what another seed taught (the newer state of each endpoint wins).
    pub fn absorb(&mut self, other: ShadowState) {
        let mut events = Vec::new();
        for (host, state) in other.endpoints {
            merge(&mut self.endpoints, state.delta_after(host, 0), &mut events);
        }
    }

    /// Every endpoint learnt, in host order.
    pub fn endpoints(&self) -> impl Iterator<Item = (HostId, &EndpointState)> {
        self.endpoints.iter().map(|(h, s)| (*h, s))
    }

    /// The endpoints the cluster still counts as members that gossip `peer` as their peer
    /// address: any status but left or removed (Cassandra's isSafeForStartup lets a new node
    /// take the address of a node that left or was removed, nothing else).
    pub fn members_at(&self, peer: SocketAddr) -> Vec<(HostId, &EndpointState)> {
        self.endpoints()
            .filter(|(_, s)| s.peer_address() == Some(peer) && !s.status().is_some_and(Status::is_gone))
            .collect()
    }
}

/// Deltas for one message, within [`MAX_DELTAS_PER_MESSAGE`] and [`MAX_DELTA_BYTES`].
#[derive(Default)]
struct Deltas {
    list: Vec<Delta>,
    bytes: usize,
}

impl Deltas {
    /// Adds `delta` if it fits (the first always does); drops it otherwise.
    fn push(&mut self, delta: Delta) {
        let mut w = Writer::new();
        delta.encode(&mut w);
        let fits = self.list.is_empty() || self.bytes + w.len() <= MAX_DELTA_BYTES;
        if fits && self.list.len() < MAX_DELTAS_PER_MESSAGE {
            self.bytes += w.len();
            self.list.push(delta);
        }
    }
}

// ---- encoding (docs/PROTOCOL.md, "Peer protocol: gossip bodies") ----

fn encode_host(w: &mut Writer, host: HostId) {
    w.u64((host >> 64) as u64).u64(host as u64);
}

fn decode_host(r: &mut Reader) -> Result<HostId, DecodeError> {
    let high = r.u64()? as u128;
    let low = r.u64()? as u128;
    Ok((high << 64) | low)
}

fn encode_addr(w: &mut Writer, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => w.u8(4).raw(&ip.octets()),
        IpAddr::V6(ip) => w.u8(6).raw(&ip.octets()),
    };
    w.u16(addr.port());
}

fn decode_addr(r: &mut Reader) -> Result<SocketAddr, DecodeError> {
    // `take(n)` returns exactly n bytes, so the conversions to [u8; n] cannot fail.
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(r.take(4)?).expect("took 4 bytes"))),
        6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(r.take(16)?).expect("took 16 bytes"))),
        family => return Err(r.invalid("address family", format!("{family}, expected 4 or 6"))),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

impl Digest {
    fn encode(&self, w: &mut Writer) {
        encode_host(w, self.host);
        w.u64(self.generation).u64(self.max_version);
    }

    fn decode(r: &mut Reader) -> Result<Digest, DecodeError> {
        Ok(Digest { host: decode_host(r)?, generation: r.u64()?, max_version: r.u64()? })
    }
}

impl Delta {
    fn encode(&self, w: &mut Writer) {
        debug_assert!(self.states.len() <= StateKey::ALL.len());
        encode_host(w, self.host);
        w.u64(self.heartbeat.generation).u64(self.heartbeat.version).u8(self.states.len() as u8);
        for v in &self.states {
            w.u8(v.value.key() as u8).u64(v.version);
            v.value.encode(w);
        }
    }

    fn decode(r: &mut Reader) -> Result<Delta, DecodeError> {
        let host = decode_host(r)?;
        let heartbeat = HeartBeat { generation: r.u64()?, version: r.u64()? };
        let count = r.u8()? as usize;
        if count > StateKey::ALL.len() {
            return Err(
                r.invalid("gossip delta", format!("{count} application states, at most {}", StateKey::ALL.len()))
            );
        }
        let mut states: Vec<Versioned> = Vec::with_capacity(count);
        for _ in 0..count {
            let code = r.u8()?;
            let key = StateKey::from_code(code)
                .ok_or_else(|| r.invalid("gossip application state", format!("unknown key {code}")))?;
            if states.iter().any(|v| v.value.key() == key) {
                return Err(r.invalid("gossip delta", format!("application state {key:?} given twice")));
            }
            let version = r.u64()?;
            states.push(Versioned { value: AppState::decode(key, r)?, version });
        }
        Ok(Delta { host, heartbeat, states })
    }
}

fn read_version(r: &mut Reader) -> Result<(), DecodeError> {
    match r.u8()? {
        OLDEST_GOSSIP_BODY_VERSION..=GOSSIP_BODY_VERSION => Ok(()),
        v => Err(r.invalid(
            "gossip body version",
            format!("{v}, this node reads {OLDEST_GOSSIP_BODY_VERSION} to {GOSSIP_BODY_VERSION}"),
        )),
    }
}

/// A count of items that follow, at most `limit` (and no more than the input can hold).
fn read_count(r: &mut Reader, min_item: usize, limit: usize) -> Result<usize, DecodeError> {
    let at = r.offset();
    match r.count(min_item)? {
        n if n > limit => Err(DecodeError::TooLong { offset: at, len: n, limit }),
        n => Ok(n),
    }
}

fn encode_digests(w: &mut Writer, digests: &[Digest]) {
    debug_assert!(digests.len() <= MAX_ENDPOINTS);
    w.u32(digests.len() as u32);
    digests.iter().for_each(|d| d.encode(w));
}

fn decode_digests(r: &mut Reader) -> Result<Vec<Digest>, DecodeError> {
    let n = read_count(r, DIGEST_BYTES, MAX_ENDPOINTS)?;
    (0..n).map(|_| Digest::decode(r)).collect()
}

fn encode_deltas(w: &mut Writer, deltas: &[Delta]) {
    debug_assert!(deltas.len() <= MAX_DELTAS_PER_MESSAGE);
    w.u32(deltas.len() as u32);
    deltas.iter().for_each(|d| d.encode(w));
}

fn decode_deltas(r: &mut Reader) -> Result<Vec<Delta>, DecodeError> {
    let n = read_count(r, MIN_DELTA_BYTES, MAX_DELTAS_PER_MESSAGE)?;
    (0..n).map(|_| Delta::decode(r)).collect()
}

/// Decodes a whole body with `body`, refusing another layout version and trailing bytes.
fn decode_body<T>(bytes: &[u8], body: impl FnOnce(&mut Reader) -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    read_version(&mut r)?;
    let out = body(&mut r)?;
    r.finish()?;
    Ok(out)
}

impl Syn {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(OLDEST_GOSSIP_BODY_VERSION);
        encode_digests(&mut w, &self.digests);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Syn, DecodeError> {
        decode_body(bytes, |r| Ok(Syn { digests: decode_digests(r)? }))
    }
}

impl Ack {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(body_version(&self.deltas));
        encode_digests(&mut w, &self.requests);
        encode_deltas(&mut w, &self.deltas);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Ack, DecodeError> {
        decode_body(bytes, |r| Ok(Ack { requests: decode_digests(r)?, deltas: decode_deltas(r)? }))
    }
}

impl Ack2 {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(body_version(&self.deltas));
        encode_deltas(&mut w, &self.deltas);
        w.into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Ack2, DecodeError> {
        decode_body(bytes, |r| Ok(Ack2 { deltas: decode_deltas(r)? }))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const A: HostId = 0xA;
    const B: HostId = 0xB;
    const C: HostId = 0xC;

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, last], port))
    }

    /// A node as the service starts it: addresses, tokens, status, schema version.
    fn node(host: HostId, generation: u64) -> Gossip {
        let i = host as u8;
        let tokens = vec![vec![i as i64 * 1000, i as i64 * 1000 + 1], vec![-(i as i64) * 1000]];
        let states = vec![
            AppState::PeerAddress(addr(i, 7470)),
            AppState::ClientAddress(addr(i, 9470)),
            AppState::Tokens(tokens),
            AppState::Status(Status::Normal),
            AppState::SchemaVersion(42),
            AppState::ReleaseVersion("0.1.0".into()),
        ];
        Gossip::new(host, generation, states).expect("valid states")
    }

    /// One full SYN -> ACK -> ACK2 round from `from` to `to`, every body through its encoding.
    /// Returns the events on `from` (from the ACK) and on `to` (from the ACK2).
    fn round(from: &mut Gossip, to: &mut Gossip) -> (Vec<GossipEvent>, Vec<GossipEvent>) {
        let syn = Syn::decode(&from.syn().encode()).expect("a SYN decodes");
        let ack = Ack::decode(&to.handle_syn(&syn).encode()).expect("an ACK decodes");
        let (ack2, from_events) = from.handle_ack(ack);
        let ack2 = Ack2::decode(&ack2.encode()).expect("an ACK2 decodes");
        (from_events, to.handle_ack2(ack2))
    }

    fn pair(nodes: &mut [Gossip], i: usize, j: usize) -> (&mut Gossip, &mut Gossip) {
        assert_ne!(i, j);
        let (low, high) = nodes.split_at_mut(i.max(j));
        match i < j {
            true => (&mut low[i], &mut high[0]),
            false => (&mut high[0], &mut low[j]),
        }
    }

    fn view(g: &Gossip) -> Vec<(HostId, EndpointState)> {
        g.endpoints().map(|(h, s)| (h, s.clone())).collect()
    }

    /// Runs rounds 0->1, 1->2, 2->0, ... until every node holds the same view (at most
    /// `max_rounds`); returns the rounds it took.
    fn converge(nodes: &mut [Gossip], max_rounds: usize) -> usize {
        for r in 0..max_rounds {
            if nodes.windows(2).all(|w| view(&w[0]) == view(&w[1])) {
                return r;
            }
            let i = r % nodes.len();
            let (from, to) = pair(nodes, i, (i + 1) % nodes.len());
            round(from, to);
        }
        panic!("no convergence in {max_rounds} rounds: {:#?}", nodes.iter().map(view).collect::<Vec<_>>());
    }

    #[test]
    fn local_versions_rise_from_one_counter() {
        let mut g = node(A, 5);
        let state = g.local_state();
        let versions: Vec<u64> = state.states().map(|v| v.version).collect();
        assert_eq!(state.max_version(), 6, "six initial states: versions 1 to 6 ({versions:?})");
        g.beat();
        assert_eq!(g.local_state().heartbeat(), HeartBeat { generation: 5, version: 7 });
        g.set_local(AppState::Load(1 << 30)).expect("valid");
        assert_eq!(g.local_state().max_version(), 8);
        assert_eq!(g.local_state().load(), Some(1 << 30));
        assert_eq!(g.digests(), [Digest { host: A, generation: 5, max_version: 8 }]);
    }

    #[test]
    fn unbounded_local_values_are_refused() {
        let mut g = node(A, 1);
        let too_long = AppState::ReleaseVersion("x".repeat(MAX_RELEASE_VERSION_LEN + 1));
        assert!(matches!(g.set_local(too_long), Err(GossipError::BadValue { key: StateKey::ReleaseVersion, .. })));
        for tokens in [vec![], vec![vec![]], vec![vec![1]; MAX_SHARDS + 1], vec![vec![1; MAX_TOKENS_PER_SHARD + 1]]] {
            assert!(matches!(g.set_local(AppState::Tokens(tokens)), Err(GossipError::BadValue { .. })));
        }
    }

    #[test]
    fn three_nodes_converge_to_one_view_and_follow_changes() {
        let mut nodes = vec![node(A, 1), node(B, 1), node(C, 1)];
        let rounds = converge(&mut nodes, 12);
        assert!(rounds <= 4, "three fresh nodes in a chain converge in a lap and a bit: {rounds}");
        assert_eq!(nodes[0].endpoints().count(), 3);
        let ring = nodes[2].ring(|s| s.status() == Some(Status::Normal)).expect("tokens are unique");
        assert_eq!(ring.vnodes().len(), 9, "three tokens per node");
        // Changes keep flowing: heartbeats and new values everywhere.
        for (k, g) in nodes.iter_mut().enumerate() {
            g.beat();
            g.set_local(AppState::Load(k as u64 * 100)).expect("valid");
        }
        nodes[1].set_local(AppState::SchemaVersion(43)).expect("valid");
        converge(&mut nodes, 12);
        for g in &nodes {
            assert_eq!(g.endpoint(B).and_then(EndpointState::schema_version), Some(43));
            assert_eq!(g.endpoint(C).and_then(EndpointState::load), Some(200));
        }
    }

    #[test]
    fn deltas_carry_only_what_the_other_side_lacks() {
        let (mut a, mut b) = (node(A, 1), node(B, 1));
        let (a_events, b_events) = round(&mut a, &mut b);
        assert_eq!(a_events, [GossipEvent::NewEndpoint(B)]);
        assert_eq!(b_events, [GossipEvent::NewEndpoint(A)]);
        let ack = b.handle_syn(&a.syn());
        assert!(ack.requests.is_empty() && ack.deltas.is_empty(), "in sync: nothing to send: {ack:?}");
        b.set_local(AppState::Load(7)).expect("valid");
        b.beat();
        let ack = b.handle_syn(&a.syn());
        assert!(ack.requests.is_empty());
        assert_eq!(ack.deltas.len(), 1);
        assert_eq!(ack.deltas[0].states, [Versioned { value: AppState::Load(7), version: 7 }], "only the new state");
        let (ack2, events) = a.handle_ack(ack);
        assert!(ack2.deltas.is_empty());
        assert_eq!(events, [GossipEvent::HeartbeatAdvanced(B), GossipEvent::StateChanged(B, StateKey::Load)]);
        // The other direction: A is newer, B asks for exactly the versions it lacks.
        a.set_local(AppState::Status(Status::Leaving)).expect("valid");
        let ack = b.handle_syn(&a.syn());
        assert_eq!(ack.requests, [Digest { host: A, generation: 1, max_version: 6 }]);
        let (ack2, _) = a.handle_ack(ack);
        assert_eq!(ack2.deltas[0].states, [Versioned { value: AppState::Status(Status::Leaving), version: 7 }]);
        assert_eq!(b.handle_ack2(ack2), [GossipEvent::StateChanged(A, StateKey::Status)]);
        assert_eq!(view(&a), view(&b));
    }

    /// A removed node restarted on its old directory (a new generation) stays removed while
    /// its state is kept; once it expired every node forgets it, and only then could it come
    /// back.
    #[test]
    fn a_gone_node_is_quarantined_until_its_state_expires_and_then_forgotten() {
        let (mut a, mut b) = (node(A, 1), node(B, 1));
        round(&mut a, &mut b);
        assert!(a.set_status_of(B, Status::Removed { expires_at_ms: 1_000 }));
        // The dead node comes back with a new generation, NORMAL.
        let mut back = node(B, 2);
        let (_, events) = round(&mut back, &mut a);
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(a.endpoint(B).and_then(EndpointState::status), Some(Status::Removed { expires_at_ms: 1_000 }));
        assert_eq!(a.endpoint(B).map(|s| s.heartbeat().generation), Some(1));
        assert!(a.evict_expired(999).is_empty(), "kept until its expiry");
        assert_eq!(a.evict_expired(1_000), [B]);
        assert!(a.endpoint(B).is_none());
        assert!(a.evict_expired(u64::MAX).is_empty(), "never this node itself");
        // Forgotten: a later generation is a node like any other again.
        let (_, events) = round(&mut back, &mut a);
        assert!(events.contains(&GossipEvent::NewEndpoint(B)), "{events:?}");
    }

    #[test]
    fn a_restarted_node_replaces_its_old_state_everywhere() {
        let mut nodes = vec![node(A, 1), node(B, 1), node(C, 1)];
        nodes[2].set_local(AppState::Load(999)).expect("valid");
        converge(&mut nodes, 12);
        // C restarts: higher generation, no Load state yet, a new schema version.
        let mut restarted = Gossip::new(C, 2, vec![AppState::SchemaVersion(50)]).expect("valid");
        restarted.beat();
        nodes[2] = restarted;
        let (c, b) = pair(&mut nodes, 2, 1);
        let (c_events, b_events) = round(c, b);
        assert_eq!(c_events, [GossipEvent::NewEndpoint(A), GossipEvent::NewEndpoint(B)], "C relearns the others");
        assert_eq!(b_events, [GossipEvent::Restarted(C)]);
        converge(&mut nodes, 12);
        for g in &nodes {
            let c = g.endpoint(C).expect("known");
            assert_eq!(c.heartbeat().generation, 2);
            assert_eq!(c.load(), None, "the old generation's states are gone");
            assert_eq!(c.schema_version(), Some(50));
        }
        // A stale digest of the old generation makes the others send the new state.
        let stale = Syn { digests: vec![Digest { host: C, generation: 1, max_version: 100 }] };
        let ack = nodes[0].handle_syn(&stale);
        assert!(ack.requests.is_empty());
        assert!(ack.deltas.iter().any(|d| d.host == C && d.heartbeat.generation == 2));
    }

    #[test]
    fn restart_events_reach_a_node_that_knew_the_old_generation() {
        let (mut a, mut b) = (node(A, 1), node(B, 1));
        round(&mut a, &mut b);
        let mut b2 = node(B, 9);
        let (b2_events, a_events) = round(&mut b2, &mut a);
        assert_eq!(a_events, [GossipEvent::Restarted(B)]);
        assert_eq!(b2_events, [GossipEvent::NewEndpoint(A)]);
        assert_eq!(view(&a), view(&b2));
    }

    #[test]
    fn stale_messages_are_harmless() {
        let (mut a, mut b) = (node(A, 1), node(B, 1));
        // An ACK2 captured in the first round, replayed after things moved on.
        let syn = a.syn();
        let (old_ack2, _) = a.handle_ack(b.handle_syn(&syn));
        b.handle_ack2(old_ack2.clone());
        for _ in 0..3 {
            a.beat();
            a.set_local(AppState::Load(5)).expect("valid");
            round(&mut a, &mut b);
        }
        let before = view(&b);
        assert!(b.handle_ack2(old_ack2).is_empty(), "older versions change nothing");
        assert_eq!(view(&b), before);
        // An older generation of A is ignored; so is anyone's word about B itself.
        let old_generation = Delta { host: A, heartbeat: HeartBeat { generation: 0, version: 999 }, states: vec![] };
        let about_b = Delta {
            host: B,
            heartbeat: HeartBeat { generation: 99, version: 1 },
            states: vec![Versioned { value: AppState::Status(Status::Shutdown), version: 99 }],
        };
        assert!(b.handle_ack2(Ack2 { deltas: vec![old_generation, about_b] }).is_empty());
        assert_eq!(view(&b), before);
        // A peer claiming a newer state of B is not asked for it.
        let claim = Syn { digests: vec![Digest { host: B, generation: 99, max_version: 99 }] };
        assert!(b.handle_syn(&claim).requests.is_empty());
    }

    #[test]
    fn messages_respect_their_bounds() {
        // A node that knows more endpoints than one message may carry.
        let mut big = node(A, 1);
        let many = MAX_DELTAS_PER_MESSAGE as HostId * 2;
        let deltas: Vec<Delta> = (1..=many)
            .map(|h| Delta {
                host: 0x1000 + h,
                heartbeat: HeartBeat { generation: 1, version: 1 },
                states: vec![Versioned { value: AppState::Load(h as u64), version: 1 }],
            })
            .collect();
        deltas.chunks(MAX_DELTAS_PER_MESSAGE).for_each(|c| {
            big.handle_ack2(Ack2 { deltas: c.to_vec() });
        });
        assert_eq!(big.endpoints().count(), many as usize + 1);
        let mut fresh = node(B, 1);
        let mut rounds = 0;
        while view(&fresh) != view(&big) {
            let ack = big.handle_syn(&fresh.syn());
            assert!(ack.deltas.len() <= MAX_DELTAS_PER_MESSAGE);
            let bytes = ack.encode();
            let (ack2, _) = fresh.handle_ack(Ack::decode(&bytes).expect("decodes"));
            big.handle_ack2(ack2);
            rounds += 1;
            assert!(rounds <= 4, "what does not fit goes in the next rounds");
        }
        // The endpoint table is bounded: past MAX_ENDPOINTS a new endpoint is refused.
        let mut full = node(A, 1);
        let hosts: Vec<HostId> = (1..MAX_ENDPOINTS as HostId + 1).map(|h| 0x1_0000 + h).collect();
        for chunk in hosts.chunks(MAX_DELTAS_PER_MESSAGE) {
            let deltas = chunk
                .iter()
                .map(|h| Delta { host: *h, heartbeat: HeartBeat { generation: 1, version: 1 }, states: vec![] })
                .collect();
            full.handle_ack2(Ack2 { deltas });
        }
        assert_eq!(full.endpoints().count(), MAX_ENDPOINTS);
        let unknown = Syn { digests: vec![Digest { host: 7, generation: 1, max_version: 1 }] };
        assert!(full.handle_syn(&unknown).requests.is_empty(), "no room: not asked for");
    }

    /// A shadow round learns every endpoint a seed knows, past one ACK's worth, in a few SYNs
    /// whose ACKs are never answered: the seed's state does not change and it never hears of
    /// the asking node.
    #[test]
    fn a_shadow_round_learns_everything_and_changes_nothing_on_the_seed() {
        let mut seed = node(A, 1);
        let many = MAX_DELTAS_PER_MESSAGE as HostId * 2 + 5;
        let deltas: Vec<Delta> = (1..=many)
            .map(|h| Delta {
                host: 0x1000 + h,
                heartbeat: HeartBeat { generation: 3, version: 2 },
                states: vec![Versioned { value: AppState::PeerAddress(addr(9, h as u16)), version: 1 }],
            })
            .collect();
        deltas.chunks(MAX_DELTAS_PER_MESSAGE).for_each(|c| {
            seed.handle_ack2(Ack2 { deltas: c.to_vec() });
        });
        let before = view(&seed);
        let mut shadow = ShadowState::default();
        assert!(shadow.syn().digests.is_empty(), "the first SYN names nothing");
        let mut syns = 0;
        loop {
            let syn = Syn::decode(&shadow.syn().encode()).expect("a SYN decodes");
            let ack = Ack::decode(&seed.handle_syn(&syn).encode()).expect("an ACK decodes");
            syns += 1;
            if shadow.take_ack(ack) == 0 {
                break;
            }
        }
        assert_eq!(syns, 4, "three ACKs of at most {MAX_DELTAS_PER_MESSAGE}, then one with nothing new");
        assert_eq!(shadow.endpoints().count(), many as usize + 1);
        assert_eq!(shadow.endpoints().map(|(h, s)| (h, s.clone())).collect::<Vec<_>>(), before);
        assert_eq!(view(&seed), before, "the seed learnt nothing");
        // What two seeds taught merges, the newer generation winning.
        let mut other = ShadowState::default();
        other.take_ack(node(A, 2).handle_syn(&Syn { digests: vec![] }));
        shadow.absorb(other);
        assert_eq!(shadow.endpoints().find(|(h, _)| *h == A).map(|(_, s)| s.heartbeat().generation), Some(2));
        // Who has an address: members only, never a node that left or was removed.
        assert_eq!(shadow.members_at(addr(9, 3)).iter().map(|(h, _)| *h).collect::<Vec<_>>(), [0x1003]);
        let left = Delta {
            host: 0x1003,
            heartbeat: HeartBeat { generation: 3, version: 9 },
            states: vec![Versioned { value: AppState::Status(Status::Left { expires_at_ms: 5 }), version: 9 }],
        };
        shadow.take_ack(Ack { requests: vec![], deltas: vec![left] });
        assert!(shadow.members_at(addr(9, 3)).is_empty());
        assert!(shadow.members_at(addr(9, 0)).is_empty(), "nobody there");
    }

    /// The statuses of body version 2 keep their one byte, so a body without a gone node is
    /// what an earlier release sends and reads; left and removed carry their expiry after the
    /// code, and a code no release knows is refused (as an earlier release refuses 5 and 6).
    #[test]
    fn statuses_keep_their_bytes_and_gone_ones_carry_their_expiry() {
        let encoded = |s: Status| {
            let mut w = Writer::new();
            AppState::Status(s).encode(&mut w);
            w.into_bytes()
        };
        assert_eq!(encoded(Status::Joining), [1]);
        assert_eq!(encoded(Status::Normal), [2]);
        assert_eq!(encoded(Status::Leaving), [3]);
        assert_eq!(encoded(Status::Shutdown), [4]);
        let expiry = 1_800_000_000_000u64;
        let left = encoded(Status::Left { expires_at_ms: expiry });
        assert_eq!(left, [&[5][..], &expiry.to_le_bytes()].concat());
        assert_eq!(encoded(Status::Removed { expires_at_ms: 7 })[0], 6);
        for s in [Status::Left { expires_at_ms: expiry }, Status::Removed { expires_at_ms: 7 }, Status::Normal] {
            let bytes = encoded(s);
            assert_eq!(AppState::decode(StateKey::Status, &mut Reader::new(&bytes)), Ok(AppState::Status(s)));
        }
        let unknown = AppState::decode(StateKey::Status, &mut Reader::new(&[7]));
        assert!(matches!(unknown, Err(DecodeError::Invalid { what: "gossip status", .. })), "{unknown:?}");
        let cut = AppState::decode(StateKey::Status, &mut Reader::new(&left[..5]));
        assert!(cut.is_err(), "a left status without its whole expiry: {cut:?}");
    }

    #[test]
    fn a_dead_nodes_status_set_elsewhere_reaches_every_peer_without_reviving_it() {
        let mut nodes = vec![node(A, 1), node(B, 1), node(C, 1)];
        converge(&mut nodes, 20);
        let heartbeat = nodes[0].endpoint(C).unwrap().heartbeat();
        assert!(!nodes[0].set_status_of(A, Status::Leaving), "not this node's own status");
        assert!(!nodes[0].set_status_of(77, Status::Leaving), "an unknown endpoint");
        assert!(nodes[0].set_status_of(C, Status::Removed { expires_at_ms: 9 }));
        // C is dead: only A and B gossip.
        let (a, b) = pair(&mut nodes, 0, 1);
        let (_, events) = round(a, b);
        assert!(events.contains(&GossipEvent::StateChanged(C, StateKey::Status)), "{events:?}");
        let at_b = nodes[1].endpoint(C).unwrap();
        assert_eq!(at_b.status(), Some(Status::Removed { expires_at_ms: 9 }));
        assert_eq!(at_b.heartbeat(), heartbeat, "no heartbeat: C stays down");
    }

    #[test]
    fn gone_nodes_expire_and_nodes_in_the_ring_never_do() {
        let left = Status::Left { expires_at_ms: 1000 };
        assert!(left.is_gone() && !left.expired(999) && left.expired(1000));
        assert!(Status::Removed { expires_at_ms: 5 }.expired(6));
        for s in [Status::Joining, Status::Normal, Status::Leaving, Status::Shutdown] {
            assert!(!s.is_gone() && !s.expired(u64::MAX), "{s:?}");
        }
    }

    /// A body is sent as version 2 (which the previous release reads) unless it carries the
    /// `Replaces` state of version 3; both are read.
    #[test]
    fn only_a_body_with_a_replacement_needs_version_3() {
        let delta = |states: Vec<AppState>| Delta {
            host: A,
            heartbeat: HeartBeat { generation: 1, version: 2 },
            states: states.into_iter().map(|value| Versioned { value, version: 1 }).collect(),
        };
        let plain = Ack2 { deltas: vec![delta(vec![AppState::Load(1)])] };
        let replacing = Ack2 { deltas: vec![delta(vec![AppState::Load(1), AppState::Replaces(7)])] };
        assert_eq!((plain.encode()[0], replacing.encode()[0]), (2, 3));
        assert_eq!(node(A, 1).syn().encode()[0], 2);
        assert_eq!(Ack2::decode(&replacing.encode()), Ok(replacing.clone()));
        let ack = Ack { requests: Vec::new(), deltas: replacing.deltas.clone() };
        assert_eq!(ack.encode()[0], 3);
        assert_eq!(Ack::decode(&ack.encode()), Ok(ack));
    }

    #[test]
    fn bodies_of_another_version_or_with_trailing_bytes_are_refused() {
        let mut syn = node(A, 1).syn().encode();
        syn[0] = GOSSIP_BODY_VERSION + 1;
        assert!(matches!(Syn::decode(&syn), Err(DecodeError::Invalid { what: "gossip body version", .. })));
        let mut ack2 = Ack2 { deltas: vec![] }.encode();
        ack2.push(0);
        assert_eq!(Ack2::decode(&ack2), Err(DecodeError::Trailing { extra: 1 }));
        let mut w = Writer::new();
        w.u8(GOSSIP_BODY_VERSION).u32(MAX_DELTAS_PER_MESSAGE as u32 + 1);
        w.raw(&vec![0; MIN_DELTA_BYTES * (MAX_DELTAS_PER_MESSAGE + 1)]);
        assert!(matches!(Ack2::decode(&w.into_bytes()), Err(DecodeError::TooLong { .. })));
    }

    fn addr_strategy() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
        ]
    }

    fn app_state_strategy() -> impl Strategy<Value = AppState> {
        let tokens = proptest::collection::vec(proptest::collection::vec(any::<i64>(), 1..8), 1..4);
        prop_oneof![
            addr_strategy().prop_map(AppState::PeerAddress),
            addr_strategy().prop_map(AppState::ClientAddress),
            tokens.prop_map(AppState::Tokens),
            (proptest::sample::select(Status::ALL.to_vec()), any::<u64>()).prop_map(|(s, expiry)| AppState::Status(
                match s {
                    Status::Left { .. } => Status::Left { expires_at_ms: expiry },
                    Status::Removed { .. } => Status::Removed { expires_at_ms: expiry },
                    s => s,
                }
            )),
            any::<u64>().prop_map(AppState::SchemaVersion),
            any::<u64>().prop_map(AppState::Load),
            "[a-z0-9.-]{0,64}".prop_map(AppState::ReleaseVersion),
            addr_strategy().prop_map(AppState::ShardAwareAddress),
            any::<u128>().prop_map(AppState::Replaces),
        ]
    }

    fn delta_strategy() -> impl Strategy<Value = Delta> {
        let states = proptest::collection::btree_map(any::<u8>(), (app_state_strategy(), any::<u64>()), 0..8);
        (any::<u128>(), any::<u64>(), any::<u64>(), states).prop_map(|(host, generation, version, states)| {
            let mut by_key = BTreeMap::new();
            for (value, v) in states.into_values() {
                by_key.insert(value.key(), Versioned { value, version: v });
            }
            Delta { host, heartbeat: HeartBeat { generation, version }, states: by_key.into_values().collect() }
        })
    }

    fn digest_strategy() -> impl Strategy<Value = Digest> {
        (any::<u128>(), any::<u64>(), any::<u64>()).prop_map(|(host, generation, max_version)| Digest {
            host,
            generation,
            max_version,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn bodies_round_trip(
            digests in proptest::collection::vec(digest_strategy(), 0..20),
            deltas in proptest::collection::vec(delta_strategy(), 0..8),
        ) {
            let syn = Syn { digests: digests.clone() };
            prop_assert_eq!(Syn::decode(&syn.encode()), Ok(syn));
            let ack = Ack { requests: digests, deltas: deltas.clone() };
            prop_assert_eq!(Ack::decode(&ack.encode()), Ok(ack));
            let ack2 = Ack2 { deltas };
            prop_assert_eq!(Ack2::decode(&ack2.encode()), Ok(ack2));
        }

        #[test]
        fn random_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Syn::decode(&bytes);
            let _ = Ack::decode(&bytes);
            let _ = Ack2::decode(&bytes);
        }

        /// A cut body is refused; a body with bytes overwritten decodes to a typed error or a
        /// message, never a panic.
        #[test]
        fn cut_or_damaged_bodies_never_panic_the_decoders(
            deltas in proptest::collection::vec(delta_strategy(), 1..4),
            damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Ack { requests: vec![], deltas }.encode();
            prop_assert!(Ack::decode(&bytes[..cut.index(bytes.len())]).is_err());
            for (at, byte) in damage {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            let _ = Ack::decode(&bytes);
            let _ = Ack2::decode(&bytes);
        }
    }
}

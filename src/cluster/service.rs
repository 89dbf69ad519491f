//! The cluster service of a node, on its coordinator shard: serves the peer port (gossip,
//! replica reads and writes, schema exchange), runs a gossip round every second, feeds the
//! failure detector from heartbeats, and keeps the coordinator's [`ClusterView`] current.
//! It owns the membership picture; storage stays behind `shards::node::Node`, and the rules
//! (gossip merge, phi, ring placement) live in the pure modules it drives.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::Rng;
use shards::node::Node;
use wire::Token;

use super::failure_detector::{FailureDetector, FailureDetectorConfig, FailureDetectorError};
use super::gossip::{Ack, AppState, Delta, EndpointState, Gossip, GossipError, GossipEvent, StateKey, Status};
use super::schema::SchemaBody;
use super::transport::{self, codes, PeerDoors, PeerError, RemoteError, Transport, TransportConfig, COORDINATOR_SHARD};
use super::verbs::{PeerAnswer, PeerHandler, PeerHandlers, PeerRequest};
use super::view::{ClusterView, Member, ViewError};
use super::{opcodes, HostId};

/// Time between gossip rounds, as in Cassandra.
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(1);
/// How long one gossip message waits for its answer; a peer slower than this missed a round.
const GOSSIP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a schema pull or push waits for its answer.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(2);
/// Rounds between refreshes of the gossiped load (bytes on disk).
const LOAD_REFRESH_ROUNDS: u64 = 10;
/// Rounds between schema pulls from a peer that still disagrees (the first pull is at once).
const SCHEMA_RETRY_ROUNDS: u64 = 5;

/// Settings of the cluster service.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where the peer protocol listens (`--peer-listen`); port 0 picks a free one.
    pub peer_listen: SocketAddr,
    /// Where this node's clients connect (gossiped, shown by `admin status`).
    pub client_addr: SocketAddr,
    /// Where its shard-aware client port listens, if it has one (gossiped, for clients'
    /// TOPOLOGY answers on every node).
    pub shard_aware_addr: Option<SocketAddr>,
    /// Peer addresses contacted to join (`--seeds`); this node's own address may be listed.
    pub seeds: Vec<SocketAddr>,
    /// Peers of another cluster name are refused at their HELLO.
    pub cluster_name: String,
    pub failure_detector: FailureDetectorConfig,
    pub max_frame_bytes: usize,
    /// The dead node this one replaces or replaced (`enigmadb server --replace`), gossiped
    /// from the start (as `Replaces`) for the life of the node.
    pub replaces: Option<HostId>,
    /// How long the state of a node that left or was removed is kept once this node announces
    /// it (`left_state_retention_ms`).
    pub left_state_retention: Duration,
    /// Mutual TLS on every peer connection, in and out (`internode_tls_*`); `None`: plaintext.
    pub peer_tls: Option<crate::tls::PeerTls>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("listening for peers on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error(transparent)]
    FailureDetector(#[from] FailureDetectorError),
    #[error(transparent)]
    Gossip(#[from] GossipError),
    #[error("the local view of the cluster cannot be built: {0}")]
    View(#[from] ViewError),
}

/// One node as `admin status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberStatus {
    pub host: HostId,
    pub client: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    /// Up as this node's failure detector judges it (this node is always up).
    pub up: bool,
    pub status: Option<Status>,
    pub load: Option<u64>,
    pub tokens: usize,
    /// Fraction of the token space whose first replica it is.
    pub owns: f64,
    pub schema_version: Option<u64>,
    pub generation: u64,
    /// The heartbeat version last gossiped (rises every gossip round of that node).
    pub heartbeat_version: u64,
    /// The failure detector's phi now (None for this node and peers never heard from).
    pub phi: Option<f64>,
}

/// The running service. `!Send`: it lives on the coordinator shard's executor.
pub struct Cluster {
    node: Node,
    local: HostId,
    config: ClusterConfig,
    /// The bound peer address (differs from the configured one when its port was 0).
    peer_addr: SocketAddr,
    transport: Rc<Transport>,
    gossip: RefCell<Gossip>,
    detector: RefCell<FailureDetector>,
    /// The coordinator's view, replaced whenever membership or liveness changes.
    view: Rc<RefCell<Rc<ClusterView>>>,
    /// Origin of the failure detector's clock.
    epoch: Instant,
    round: Cell<u64>,
    /// Hosts whose schema version differed from ours at the last check, with the round of
    /// the last pull from each.
    schema_pulled: RefCell<std::collections::HashMap<HostId, u64>>,
    stopping: Cell<bool>,
    /// Bootstrapping: this node is not in the ring yet (it gossips no tokens and no status
    /// until [`Cluster::announce_joining`], then JOINING until [`Cluster::announce_normal`]).
    bootstrapping: Cell<bool>,
    /// The bootstrap's progress (`admin netstats`).
    progress: RefCell<super::bootstrap::Progress>,
    /// Decommissioned: LEFT is gossiped, and this node never says anything else again. The
    /// sender is told once (the server then stops the process).
    left: (flume::Sender<()>, flume::Receiver<()>),
    /// Told when the failure detector marks a peer up (true) or down (false).
    liveness_listener: LivenessListener,
    /// Told of every new view after it replaced the coordinator's (the other shards' copies).
    publish_view: ViewPublisher,
}

/// What [`Cluster::start`] calls with each new view: the server sends it to every shard.
pub type ViewPublisher = Box<dyn Fn(&Rc<ClusterView>)>;

/// What [`Cluster::start`] calls whenever a peer is marked up or down (hinted handoff replays
/// on up): the host and whether it is now up. It must not call back into the cluster service.
pub type LivenessListener = Box<dyn Fn(HostId, bool)>;

/// The bound peer port and the transport this node calls its peers with (whose HELLO names
/// the bound address, so it can only be made once the port is bound). Made before the cluster
/// service so that the storage proxy and the hints can be built holding the transport.
pub struct PeerPort {
    listener: glommio::net::TcpListener,
    addr: SocketAddr,
    transport: Rc<Transport>,
    doors: PeerDoors,
}

impl PeerPort {
    /// Binds `config.peer_listen` (on the node's coordinator shard); nothing is served until
    /// [`Cluster::start`], which then hands the connections meant for other shards to `doors`.
    pub fn bind(config: &ClusterConfig, doors: PeerDoors) -> Result<PeerPort, ClusterError> {
        let listener = glommio::net::TcpListener::bind(config.peer_listen)
            .map_err(|e| ClusterError::Listen { addr: config.peer_listen, reason: e.to_string() })?;
        let addr = listener.local_addr().unwrap_or(config.peer_listen);
        let mut transport_config = TransportConfig::new(addr);
        transport_config.max_frame_bytes = config.max_frame_bytes;
        transport_config.cluster_name = config.cluster_name.clone();
        transport_config.tls = config.peer_tls.clone();
        Ok(PeerPort { listener, addr, transport: Transport::new(transport_config), doors })
    }

    /// The bound address (differs from the configured one when its port was 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn transport(&self) -> &Rc<Transport> {
        &self.transport
    }
}

impl Cluster {
    /// Starts serving the peer port and gossiping (tasks on the current executor, which must
    /// be the node's coordinator shard). `view` is the coordinator's (its `StorageProxy`'s):
    /// the service keeps the view current, and calls `publish_view` with each one it swaps
    /// in, and hands the peers' data messages to `replica` (gossip and schema messages are its
    /// own). `liveness` hears of every peer marked up or down. `bootstrap` is `Some` for a
    /// node that joins a cluster with data: it holds what a seed told of the cluster before the
    /// node opened (the first view is built from it), and the node stays out of the ring until
    /// the bootstrap announces it (`coordinator::bootstrap`).
    /// The service runs until [`Cluster::stop`].
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        node: Node,
        view: Rc<RefCell<Rc<ClusterView>>>,
        port: PeerPort,
        replica: Rc<dyn PeerHandler>,
        config: ClusterConfig,
        publish_view: ViewPublisher,
        liveness: LivenessListener,
        bootstrap: Option<Vec<Delta>>,
    ) -> Result<Rc<Cluster>, ClusterError> {
        let PeerPort { listener, addr: peer_addr, transport, doors } = port;
        let transport_config = transport.config().clone();
        let local = node.host_id();
        let tokens = node.tokens();
        let mut states = vec![
            AppState::PeerAddress(peer_addr),
            AppState::ClientAddress(config.client_addr),
            AppState::SchemaVersion(node.schema_version()),
            AppState::Load(0),
            AppState::ReleaseVersion(env!("CARGO_PKG_VERSION").into()),
        ];
        if bootstrap.is_none() {
            states.extend([AppState::Tokens(tokens.clone()), AppState::Status(Status::Normal)]);
        }
        states.extend(config.shard_aware_addr.map(AppState::ShardAwareAddress));
        states.extend(config.replaces.map(AppState::Replaces));
        let gossip = Gossip::new(local, node.generation(), states)?;
        let first = Rc::new(ClusterView::single(Member {
            host: local,
            peer: peer_addr,
            client: config.client_addr,
            shard_aware: config.shard_aware_addr,
            tokens,
            alive: true,
            generation: node.generation(),
            joining: false,
            replaces: None,
            leaving: false,
        })?);
        *view.borrow_mut() = first.clone();
        publish_view(&first);
        let cluster = Rc::new(Cluster {
            detector: RefCell::new(FailureDetector::new(config.failure_detector)?),
            node,
            local,
            peer_addr,
            transport,
            gossip: RefCell::new(gossip),
            view,
            epoch: Instant::now(),
            round: Cell::new(0),
            schema_pulled: RefCell::default(),
            stopping: Cell::new(false),
            bootstrapping: Cell::new(bootstrap.is_some()),
            progress: RefCell::default(),
            left: flume::bounded(1),
            liveness_listener: liveness,
            publish_view,
            config,
        });
        if let Some(deltas) = bootstrap {
            // What the seed knew: the ring and its members, before this node's first round.
            let (_, events) = cluster.gossip.borrow_mut().handle_ack(Ack { requests: Vec::new(), deltas });
            cluster.on_events(&events);
            cluster.rebuild_view();
        }
        let own: Rc<dyn PeerHandler> = Rc::new(Handler(cluster.clone()));
        let mut handlers = PeerHandlers::new();
        handlers
            .register(&[opcodes::GOSSIP_SYN, opcodes::GOSSIP_ACK2, opcodes::SCHEMA_PULL, opcodes::SCHEMA_PUSH], own)
            .register(&opcodes::DATA_REQUESTS, replica);
        let handler: Rc<PeerHandlers> = Rc::new(handlers);
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let served = cluster.clone();
        glommio::spawn_local(async move {
            transport::serve(listener, handler, &transport_config, doors, async move {
                let _ = stop_rx.recv_async().await;
            })
            .await;
            drop(served);
        })
        .detach();
        let gossiping = cluster.clone();
        glommio::spawn_local(async move {
            gossiping.gossip_loop().await;
            // Stops the peer listener once gossip has said goodbye.
            drop(stop_tx);
        })
        .detach();
        tracing::info!(peer = %peer_addr, host = %format!("{local:032x}"), seeds = ?cluster.config.seeds, "cluster service started");
        Ok(cluster)
    }

    pub fn local(&self) -> HostId {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The coordinator's current picture of the cluster (cheap: a shared pointer).
    pub fn view(&self) -> Rc<ClusterView> {
        self.view.borrow().clone()
    }

    pub fn transport(&self) -> &Rc<Transport> {
        &self.transport
    }

    fn liveness_changed(&self, host: HostId, up: bool) {
        (self.liveness_listener)(host, up);
    }

    /// Stops gossiping after telling the live peers this node is shutting down (so they mark
    /// it down at once rather than after the failure detector's delay).
    pub async fn stop(&self) {
        if self.stopping.replace(true) {
            return;
        }
        if self.bootstrapping.get() || self.has_left() {
            // A joining node that stops stays JOINING (down) to its peers: a SHUTDOWN status
            // would make its tokens natural ones, owned by a node that streamed nothing. A
            // node that left stays LEFT: SHUTDOWN would bring it back into the ring.
            return;
        }
        let _ = self.gossip.borrow_mut().set_local(AppState::Status(Status::Shutdown));
        let peers: Vec<SocketAddr> = self.live_peers().into_iter().map(|(_, addr)| addr).collect();
        let rounds = peers.into_iter().map(|peer| self.gossip_with(peer));
        futures_util::future::join_all(rounds).await;
    }

    /// The bootstrap's progress now (`admin netstats`).
    pub fn progress(&self) -> super::bootstrap::Progress {
        self.progress.borrow().clone()
    }

    /// Updates the bootstrap's progress.
    pub fn update_progress(&self, change: impl FnOnce(&mut super::bootstrap::Progress)) {
        change(&mut self.progress.borrow_mut());
    }

    /// Whether this node is bootstrapping (not NORMAL yet).
    pub fn is_bootstrapping(&self) -> bool {
        self.bootstrapping.get()
    }

    /// Bootstrap: gossips this node's tokens with status JOINING; coordinators make it a
    /// pending replica of the ranges it will own.
    pub fn announce_joining(&self) -> Result<(), GossipError> {
        {
            let mut gossip = self.gossip.borrow_mut();
            // Status first: a peer never sees these tokens without it (one delta carries both).
            gossip.set_local(AppState::Status(Status::Joining))?;
            gossip.set_local(AppState::Tokens(self.node.tokens()))?;
        }
        self.rebuild_view();
        Ok(())
    }

    /// Bootstrap done: this node is NORMAL, a natural replica of its ranges.
    pub fn announce_normal(&self) -> Result<(), GossipError> {
        self.gossip.borrow_mut().set_local(AppState::Status(Status::Normal))?;
        self.bootstrapping.set(false);
        self.rebuild_view();
        Ok(())
    }

    /// Decommission: gossips LEAVING; coordinators make the nodes that take this node's ranges
    /// over pending replicas of them. Back to NORMAL with [`Cluster::announce_normal`] when
    /// the decommission fails.
    pub fn announce_leaving(&self) -> Result<(), GossipError> {
        self.gossip.borrow_mut().set_local(AppState::Status(Status::Leaving))?;
        self.rebuild_view();
        Ok(())
    }

    /// Decommission done: gossips LEFT (kept by peers for `left_state_retention`) to every
    /// live peer, then tells [`Cluster::left_signal`]. Whether every live peer took it at once
    /// (the others learn it from them).
    pub async fn announce_left(&self) -> Result<bool, GossipError> {
        let status = Status::Left { expires_at_ms: self.gone_expiry_ms() };
        self.gossip.borrow_mut().set_local(AppState::Status(status))?;
        self.rebuild_view();
        let told = self.gossip_with_live_peers().await;
        let _ = self.left.0.try_send(());
        Ok(told)
    }

    /// When peers may forget a node that leaves or is removed now: wall clock, ms since the
    /// epoch.
    pub fn gone_expiry_ms(&self) -> u64 {
        wall_clock_ms().saturating_add(self.config.left_state_retention.as_millis() as u64)
    }

    /// Whether this node decommissioned (LEFT).
    pub fn has_left(&self) -> bool {
        self.gossip.borrow().local_state().status().is_some_and(Status::is_gone)
    }

    /// Receives once this node has left the ring (decommissioned).
    pub fn left_signal(&self) -> flume::Receiver<()> {
        self.left.1.clone()
    }

    /// removenode: gossips `status` (LEAVING while its ranges stream, then REMOVED) for the dead
    /// node `host`, which cannot say it itself. False when gossip does not know it.
    pub fn set_status_of(&self, host: HostId, status: Status) -> bool {
        let set = self.gossip.borrow_mut().set_status_of(host, status);
        if set {
            self.rebuild_view();
        }
        set
    }

    /// Whether this node's schema is every live natural peer's (at least one).
    pub fn schema_agrees(&self) -> bool {
        let ours = self.node.schema_version();
        let gossip = self.gossip.borrow();
        let view = self.view();
        let peers: Vec<HostId> =
            view.members().iter().filter(|m| m.alive && !m.joining && m.host != self.local).map(|m| m.host).collect();
        !peers.is_empty()
            && peers.iter().all(|h| gossip.endpoint(*h).and_then(EndpointState::schema_version) == Some(ours))
    }

    /// Gossip rounds this node started since it started.
    pub fn gossip_rounds(&self) -> u64 {
        self.round.get()
    }

    /// Every known node, this one first, then by host id.
    pub fn status(&self) -> Vec<MemberStatus> {
        let gossip = self.gossip.borrow();
        let detector = self.detector.borrow();
        let view = self.view.borrow().clone();
        let owns = view.ring().ownership(|(host, _)| *host);
        let now = self.now();
        // A node a completed replacement took over is not listed (as a removed one).
        let replaced = gossip.replaced();
        let mut out: Vec<MemberStatus> = gossip
            .endpoints()
            .filter(|(host, _)| *host == self.local || !replaced.contains(host))
            .map(|(host, state)| MemberStatus {
                host,
                client: state.client_address(),
                peer: state.peer_address(),
                up: host == self.local || (detector.is_alive(host) && state.status() != Some(Status::Shutdown)),
                status: state.status(),
                load: state.load(),
                tokens: state.tokens().map_or(0, |t| t.iter().map(Vec::len).sum()),
                owns: owns.get(&host).copied().unwrap_or(0.0),
                schema_version: state.schema_version(),
                generation: state.heartbeat().generation,
                heartbeat_version: state.heartbeat().version,
                phi: (host != self.local).then(|| detector.phi(host, now)).flatten(),
            })
            .collect();
        out.sort_by_key(|m| (m.host != self.local, m.host));
        out
    }

    /// Call after this node changed its schema: gossips the new version and pushes the
    /// change to every live peer, waiting (bounded) for their answers so that a client that
    /// created a table here can use it on another node at once.
    pub async fn schema_changed(&self) {
        let version = self.node.schema_version();
        let _ = self.gossip.borrow_mut().set_local(AppState::SchemaVersion(version));
        let body = super::schema::snapshot(&self.node);
        let pushes = self.live_peers().into_iter().map(|(host, addr)| {
            let push = PeerRequest::SchemaPush(body.clone());
            async move {
                if let Err(e) = self.transport.call_on(addr, COORDINATOR_SHARD, push, SCHEMA_TIMEOUT).await {
                    tracing::warn!(peer = %addr, host = %format!("{host:032x}"), error = %e, "pushing a schema change");
                }
            }
        });
        futures_util::future::join_all(pushes).await;
    }

    /// Live peers (not this node) and their peer addresses.
    fn live_peers(&self) -> Vec<(HostId, SocketAddr)> {
        self.view
            .borrow()
            .members()
            .iter()
            .filter(|m| m.alive && m.host != self.local)
            .map(|m| (m.host, m.peer))
            .collect()
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    async fn gossip_loop(self: &Rc<Self>) {
        while !self.stopping.get() {
            let started = Instant::now();
            self.gossip_round().await;
            let spent = started.elapsed();
            glommio::timer::sleep(GOSSIP_INTERVAL.saturating_sub(spent)).await;
        }
    }

    /// One round, as Cassandra's Gossiper.GossipTask: beat, gossip to a random live peer, maybe
    /// to an unreachable one, and to a seed when the live peer was not one; then convict.
    async fn gossip_round(self: &Rc<Self>) {
        let round = self.round.get() + 1;
        self.round.set(round);
        self.gossip.borrow_mut().beat();
        if round % LOAD_REFRESH_ROUNDS == 1 {
            self.refresh_load().await;
        }
        let (live, down) = self.peers_by_liveness();
        let mut targets = Vec::new();
        let mut rng = rand::thread_rng();
        if let Some(peer) = live.choose(&mut rng) {
            targets.push(*peer);
        }
        if !down.is_empty() && rng.gen_range(0..=live.len()) < down.len() {
            if let Some(peer) = down.choose(&mut rng) {
                targets.push(*peer);
            }
        }
        let seeds: Vec<SocketAddr> =
            self.config.seeds.iter().copied().filter(|s| *s != self.peer_addr && !targets.contains(s)).collect();
        let reached_seed = targets.iter().any(|t| self.config.seeds.contains(t));
        if !reached_seed && (live.len() < seeds.len() || rng.gen_bool(0.2) || live.is_empty()) {
            if let Some(seed) = seeds.choose(&mut rng) {
                targets.push(*seed);
            }
        }
        drop(rng);
        futures_util::future::join_all(targets.into_iter().map(|peer| self.gossip_with(peer))).await;
        let forgotten = self.gossip.borrow_mut().evict_expired(wall_clock_ms());
        for host in &forgotten {
            tracing::info!(host = %format!("{host:032x}"), "forgetting a node that left or was removed: its state expired");
            self.detector.borrow_mut().remove(*host);
        }
        let convicted = self.detector.borrow_mut().convict(self.now());
        for host in &convicted {
            tracing::warn!(host = %format!("{host:032x}"), "peer down");
            self.liveness_changed(*host, false);
        }
        if !convicted.is_empty() {
            self.rebuild_view();
        }
        self.pull_disagreeing_schemas(round).await;
    }

    /// Peer addresses of the known endpoints, split by what the failure detector says.
    fn peers_by_liveness(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        let gossip = self.gossip.borrow();
        let detector = self.detector.borrow();
        let (mut live, mut down) = (Vec::new(), Vec::new());
        for (host, state) in gossip.endpoints().filter(|(h, _)| *h != self.local) {
            let Some(addr) = state.peer_address() else { continue };
            match detector.is_alive(host) && state.status() != Some(Status::Shutdown) {
                true => live.push(addr),
                false => down.push(addr),
            }
        }
        (live, down)
    }

    /// A gossip round with every live peer at once: true when each completed, after which
    /// each of them knows this node's state as it was when the round started (a peer that
    /// knew less asked for it in its ACK, and got it in the ACK2).
    pub async fn gossip_with_live_peers(&self) -> bool {
        let rounds = self.live_peers().into_iter().map(|(_, addr)| self.gossip_with(addr));
        futures_util::future::join_all(rounds).await.into_iter().all(|done| done)
    }

    /// SYN, ACK, ACK2 with one peer; whether the round completed. A peer that does not answer
    /// just misses the round.
    async fn gossip_with(&self, peer: SocketAddr) -> bool {
        let syn = PeerRequest::GossipSyn(self.gossip.borrow().syn());
        let ack = match self.transport.call_on(peer, COORDINATOR_SHARD, syn, GOSSIP_TIMEOUT).await {
            Ok(PeerAnswer::GossipAck(ack)) => ack,
            Ok(_) => unreachable!("a call answers with the request's kind"),
            Err(e @ (PeerError::BadAnswer { .. } | PeerError::UnexpectedAnswer { .. })) => {
                tracing::warn!(%peer, error = %e, "bad answer to a gossip SYN");
                return false;
            }
            Err(e) => {
                log_unreachable(peer, &e);
                return false;
            }
        };
        let (ack2, events) = self.gossip.borrow_mut().handle_ack(ack);
        self.on_events(&events);
        if ack2.deltas.is_empty() {
            return true;
        }
        match self.transport.call_on(peer, COORDINATOR_SHARD, PeerRequest::GossipAck2(ack2), GOSSIP_TIMEOUT).await {
            Ok(_) => true,
            Err(e) => {
                log_unreachable(peer, &e);
                false
            }
        }
    }

    /// Feeds the failure detector and rebuilds the view after gossip changed something.
    fn on_events(&self, events: &[GossipEvent]) {
        let now = self.now();
        let mut rebuild = false;
        for event in events {
            match *event {
                GossipEvent::NewEndpoint(host)
                | GossipEvent::Restarted(host)
                | GossipEvent::HeartbeatAdvanced(host) => {
                    if matches!(event, GossipEvent::Restarted(_)) {
                        tracing::info!(host = %format!("{host:032x}"), "peer restarted");
                        self.detector.borrow_mut().remove(host);
                        self.connect_at_once(host);
                    }
                    match self.detector.borrow_mut().report(host, now) {
                        Ok(true) => {
                            tracing::info!(host = %format!("{host:032x}"), "peer up");
                            self.connect_at_once(host);
                            self.liveness_changed(host, true);
                            rebuild = true;
                        }
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "failure detector"),
                    }
                    rebuild |= !matches!(event, GossipEvent::HeartbeatAdvanced(_));
                }
                GossipEvent::StateChanged(host, key) => {
                    if key == StateKey::Status
                        && self.gossip.borrow().endpoint(host).and_then(EndpointState::status) == Some(Status::Shutdown)
                    {
                        tracing::info!(host = %format!("{host:032x}"), "peer shut down");
                        self.liveness_changed(host, false);
                    }
                    rebuild |= matches!(
                        key,
                        StateKey::Tokens | StateKey::PeerAddress | StateKey::ClientAddress | StateKey::Status
                    );
                }
                GossipEvent::EndpointRefused(host) => {
                    tracing::warn!(host = %format!("{host:032x}"), "too many endpoints; not tracking this one")
                }
            }
        }
        if rebuild {
            self.rebuild_view();
        }
    }

    /// A peer gossip just heard from (restarted, or up again) is called without waiting out
    /// the backoff its failed connection attempts started.
    fn connect_at_once(&self, host: HostId) {
        let peer = self.gossip.borrow().endpoint(host).and_then(EndpointState::peer_address);
        if let Some(peer) = peer {
            self.transport.peer_is_back(peer);
        }
    }

    /// Builds the view from gossip: every endpoint with tokens and addresses is a member, up
    /// when the failure detector says so and it has not announced a shutdown.
    fn rebuild_view(&self) {
        let members: Vec<Member> = {
            let gossip = self.gossip.borrow();
            let detector = self.detector.borrow();
            gossip
                .endpoints()
                // A node that left or was removed is out of the ring (its state stays in
                // gossip until it expires); this one is always in its own view.
                .filter(|(host, state)| *host == self.local || !state.status().is_some_and(Status::is_gone))
                .filter_map(|(host, state)| {
                    let local = host == self.local;
                    // This node is in its own view with its tokens even before it gossips
                    // them (while bootstrapping: as a joining member).
                    let tokens: Vec<Vec<Token>> = match local {
                        true => self.node.tokens(),
                        false => state.tokens()?.to_vec(),
                    };
                    let joining = match local {
                        true => self.bootstrapping.get(),
                        false => state.status() == Some(Status::Joining),
                    };
                    Some(Member {
                        joining,
                        replaces: state.replaces(),
                        leaving: state.status() == Some(Status::Leaving),
                        host,
                        peer: state.peer_address()?,
                        client: state.client_address()?,
                        shard_aware: state.shard_aware_address(),
                        tokens,
                        // The node this one replaces was found dead before it started (it
                        // may look alive until the failure detector convicts it: it was
                        // heard of once, through the seed).
                        alive: host == self.local
                            || (detector.is_alive(host)
                                && state.status() != Some(Status::Shutdown)
                                && Some(host) != self.config.replaces),
                        generation: state.heartbeat().generation,
                    })
                })
                .collect()
        };
        match ClusterView::new(self.local, members) {
            Ok(view) => {
                let view = Rc::new(view);
                *self.view.borrow_mut() = view.clone();
                (self.publish_view)(&view);
            }
            Err(e) => tracing::error!(error = %e, "keeping the previous cluster view"),
        }
    }

    /// Gossips the bytes this node stores (summed over its shards' SSTables).
    async fn refresh_load(&self) {
        if let Ok(stats) = self.node.stats().await {
            let load = stats.iter().map(|s| s.sstable_bytes).sum();
            let _ = self.gossip.borrow_mut().set_local(AppState::Load(load));
        }
    }

    /// Pulls the schema of every live peer whose gossiped schema version differs from ours
    /// (at once for a new disagreement, then every few rounds while it lasts).
    async fn pull_disagreeing_schemas(&self, round: u64) {
        let ours = self.node.schema_version();
        let disagreeing: Vec<(HostId, SocketAddr)> = {
            let gossip = self.gossip.borrow();
            self.live_peers()
                .into_iter()
                .filter(|(host, _)| {
                    gossip.endpoint(*host).and_then(EndpointState::schema_version).is_some_and(|v| v != ours)
                })
                .collect()
        };
        let hosts: HashSet<HostId> = disagreeing.iter().map(|(h, _)| *h).collect();
        self.schema_pulled.borrow_mut().retain(|h, _| hosts.contains(h));
        for (host, addr) in disagreeing {
            let last = self.schema_pulled.borrow().get(&host).copied();
            if last.is_some_and(|at| round < at + SCHEMA_RETRY_ROUNDS) {
                continue;
            }
            self.schema_pulled.borrow_mut().insert(host, round);
            match self.transport.call_on(addr, COORDINATOR_SHARD, PeerRequest::SchemaPull, SCHEMA_TIMEOUT).await {
                Ok(PeerAnswer::Schema(body)) => self.merge_schema(addr, body).await,
                Ok(_) => unreachable!("a call answers with the request's kind"),
                Err(e @ (PeerError::BadAnswer { .. } | PeerError::UnexpectedAnswer { .. })) => {
                    tracing::warn!(peer = %addr, error = %e, "bad answer to SCHEMA_PULL")
                }
                Err(e) => log_unreachable(addr, &e),
            }
        }
    }

    /// Merges a peer's catalog into ours and gossips our new version if it changed.
    async fn merge_schema(&self, from: SocketAddr, body: SchemaBody) {
        let before = self.node.schema_version();
        if let Err(e) = super::schema::adopt(&self.node, body).await {
            tracing::warn!(peer = %from, error = %e, "merging a peer's schema");
            return;
        }
        let after = self.node.schema_version();
        if after != before {
            tracing::info!(peer = %from, version = after, "schema updated from a peer");
            let _ = self.gossip.borrow_mut().set_local(AppState::SchemaVersion(after));
        }
    }
}

/// The wall clock, ms since the Unix epoch (the time of gone states' expiries).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

fn log_unreachable(peer: SocketAddr, e: &PeerError) {
    tracing::debug!(%peer, error = %e, "gossip message not answered");
}

/// Serves the gossip and schema requests (registered for their opcodes in `Cluster::start`).
struct Handler(Rc<Cluster>);

impl PeerHandler for Handler {
    fn handle(&self, from: SocketAddr, request: PeerRequest) -> Pin<Box<dyn Future<Output = PeerAnswer> + '_>> {
        Box::pin(async move {
            let cluster = &self.0;
            match request {
                PeerRequest::GossipSyn(syn) => PeerAnswer::GossipAck(cluster.gossip.borrow().handle_syn(&syn)),
                PeerRequest::GossipAck2(ack2) => {
                    let events = cluster.gossip.borrow_mut().handle_ack2(ack2);
                    cluster.on_events(&events);
                    PeerAnswer::GossipAck2Ok
                }
                PeerRequest::SchemaPull => PeerAnswer::Schema(super::schema::snapshot(&cluster.node)),
                PeerRequest::SchemaPush(body) => {
                    cluster.merge_schema(from, body).await;
                    PeerAnswer::SchemaOk
                }
                other => PeerAnswer::Error(RemoteError::new(
                    codes::PROTOCOL,
                    format!("opcode {:#04x} is not a gossip or schema request", other.opcode()),
                )),
            }
        })
    }
}

//! The composition root of a node's services: what runs on each shard's executor, built in
//! dependency order, each service given what it uses when it is made. Shard 0, the
//! coordinator shard, opens the batchlog, binds the client and peer ports, opens the hints,
//! starts the cluster service (gossip), metrics and repair, accepts every client connection
//! and hands each to a shard's front door, accepts every peer connection and hands it to the
//! shard its HELLO names, and serves the other doors' requests for node-wide duties. Every
//! shard (shard 0 too) is a front door: it runs the coordinator role for the connections it
//! is handed, calls peers over its own transport and serves the data requests of the peer
//! connections it is handed. The channels between them are made here, once, before any
//! executor starts (`link.rs` says what crosses).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use shards::node::{LocalService, Node};
use wire::protocol::MemoryBudgets;

use super::accept::{self, ConnectionBounds, ConnectionLimit, Handoff, Steering};
use super::connection::{self, Door};
use super::link::{self, DoorControl, Doors, Home, HomeRequest, DOOR_CONTROL_QUEUE, HOME_QUEUE};
use super::memory;
use crate::auth::AuthSettings;
use crate::cluster::gossip::Delta;
use crate::cluster::opcodes::DATA_REQUESTS;
use crate::cluster::schema::SchemaBody;
use crate::cluster::service::{Cluster, PeerPort};
use crate::cluster::transport::{serve_handed, HandedPeer, PeerDoors, PeerHandlers, Transport, HANDED_PEER_QUEUE};
use crate::cluster::view::ClusterView;
use crate::cluster::HostId;
use crate::config::ServerConfig;
use crate::coordinator::{create_auth_tables, Batchlog, Coordinator, ReplicaHandler, Role, StorageProxy};
use crate::frame_io::Stopping;
use crate::hints::HintStore;
use crate::metrics::{self, Metrics};
use crate::tls::NodeTls;

/// What the shards' services tell the main thread.
pub enum ServiceEvent {
    Listening {
        client: SocketAddr,
        shard_aware: Option<SocketAddr>,
        peer: SocketAddr,
        metrics: Option<SocketAddr>,
    },
    Failed(String),
    /// The node decommissioned (it left the ring): the process stops.
    Decommissioned,
    /// Every connection of every shard has finished after a stop request.
    Stopped,
}

/// What a node that bootstraps learnt from a seed before it opened (`prepare_join`).
pub struct JoinPlan {
    pub deltas: Vec<Delta>,
    pub schema: SchemaBody,
}

/// The channel ends of every shard, made once the shard count is known; each shard's service
/// takes its own.
pub struct Wiring {
    /// For the coordinator shard: the bootstrap to run, if any.
    join: Option<JoinPlan>,
    /// The dead node this one replaces or replaced (`--replace`), if any.
    replaces: Option<HostId>,
    shards: usize,
    config: ServerConfig,
    /// Authentication; the initial password goes to the coordinator shard only.
    auth: AuthSettings,
    tls: NodeTls,
    events: flume::Sender<ServiceEvent>,
    stop: flume::Receiver<()>,
    home: (flume::Sender<HomeRequest>, flume::Receiver<HomeRequest>),
    handoffs: Vec<(flume::Sender<Handoff>, flume::Receiver<Handoff>)>,
    peer_handoffs: Vec<(flume::Sender<HandedPeer>, flume::Receiver<HandedPeer>)>,
    control: Vec<(flume::Sender<DoorControl>, flume::Receiver<DoorControl>)>,
    /// Each front door but shard 0's says here when its connections have finished.
    done: (flume::Sender<()>, flume::Receiver<()>),
}

impl Wiring {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        shards: usize,
        config: ServerConfig,
        auth: AuthSettings,
        tls: NodeTls,
        events: flume::Sender<ServiceEvent>,
        stop: flume::Receiver<()>,
        join: Option<JoinPlan>,
        replaces: Option<HostId>,
    ) -> Wiring {
        // Connections wait in a door's queue only while the door takes them from the accept
        // task: a few per shard at most.
        let handoff_queue = 64;
        Wiring {
            join,
            replaces,
            shards,
            home: flume::bounded(HOME_QUEUE),
            handoffs: (0..shards).map(|_| flume::bounded(handoff_queue)).collect(),
            peer_handoffs: (0..shards).map(|_| flume::bounded(HANDED_PEER_QUEUE)).collect(),
            control: (0..shards).map(|_| flume::bounded(DOOR_CONTROL_QUEUE)).collect(),
            done: flume::bounded(shards),
            config,
            auth,
            tls,
            events,
            stop,
        }
    }

    /// The service of `shard`.
    pub fn service(&mut self, shard: u16) -> LocalService {
        match shard {
            0 => {
                let ends = CoordinatorShardEnds {
                    home: self.home.1.clone(),
                    handoffs: self.handoffs.iter().map(|(tx, _)| tx.clone()).collect(),
                    incoming: self.handoffs[0].1.clone(),
                    // Shard 0 serves its own peer connections where it accepts them.
                    peer_doors: self
                        .peer_handoffs
                        .iter()
                        .enumerate()
                        .map(|(i, (tx, _))| (i > 0).then(|| tx.clone()))
                        .collect(),
                    // Shard 0 is reached directly, not through a control queue.
                    control: self.control.iter().enumerate().map(|(i, (tx, _))| (i > 0).then(|| tx.clone())).collect(),
                    done: self.done.1.clone(),
                    stop: self.stop.clone(),
                };
                let (config, events, join) = (self.config.clone(), self.events.clone(), self.join.take());
                let replaces = self.replaces;
                let (auth, tls) = (self.auth.clone(), self.tls.clone());
                Box::new(move |node| Box::pin(coordinator_shard(node, ends, config, auth, tls, events, join, replaces)))
            }
            shard => {
                let ends = DoorEnds {
                    shard,
                    shards: self.shards as u16,
                    home: self.home.0.clone(),
                    incoming: self.handoffs[usize::from(shard)].1.clone(),
                    peers: self.peer_handoffs[usize::from(shard)].1.clone(),
                    control: self.control[usize::from(shard)].1.clone(),
                    done: self.done.0.clone(),
                };
                let (config, events) = (self.config.clone(), self.events.clone());
                let auth = AuthSettings { initial_password: None, ..self.auth.clone() };
                let tls = self.tls.clone();
                Box::new(move |node| Box::pin(front_door(node, ends, config, auth, tls, events)))
            }
        }
    }
}

struct CoordinatorShardEnds {
    home: flume::Receiver<HomeRequest>,
    /// To every shard's front door, shard 0's included; held by the accept tasks only, so
    /// the doors' queues end when accepting does.
    handoffs: Vec<flume::Sender<Handoff>>,
    incoming: flume::Receiver<Handoff>,
    /// To every other shard, for the peer connections whose HELLO names it.
    peer_doors: PeerDoors,
    control: Vec<Option<flume::Sender<DoorControl>>>,
    done: flume::Receiver<()>,
    stop: flume::Receiver<()>,
}

struct DoorEnds {
    shard: u16,
    shards: u16,
    home: flume::Sender<HomeRequest>,
    incoming: flume::Receiver<Handoff>,
    /// The peer connections the coordinator shard hands this shard.
    peers: flume::Receiver<HandedPeer>,
    control: flume::Receiver<DoorControl>,
    done: flume::Sender<()>,
}

/// Shard 0: the node-wide services, the accept tasks, and its own front door.
#[allow(clippy::too_many_arguments)]
async fn coordinator_shard(
    node: Node,
    ends: CoordinatorShardEnds,
    config: ServerConfig,
    auth: AuthSettings,
    tls: NodeTls,
    events: flume::Sender<ServiceEvent>,
    join: Option<JoinPlan>,
    replaces: Option<HostId>,
) {
    let (join_deltas, join_schema) = match join {
        Some(JoinPlan { deltas, schema }) => (Some(deltas), Some(schema)),
        None => (None, None),
    };
    let fail = |reason: String| {
        let _ = events.send(ServiceEvent::Failed(reason));
    };
    let shards = node.shard_count();
    // Replays the batches a crash left unfinished before anything else runs: before the
    // peers can reach this node, and before any front door attaches to the batchlog.
    let batchlog = match Batchlog::open(&node, 0).await {
        Ok((batchlog, replayed)) => {
            if replayed > 0 {
                tracing::info!(replayed, "replayed unfinished logged batches");
            }
            batchlog
        }
        Err(e) => return fail(format!("opening the batchlog: {e}")),
    };
    // Alike on every node, before the peers can reach this one.
    if let Err(e) = create_auth_tables(&node, &auth).await {
        return fail(format!("creating the auth tables: {e}"));
    }
    let bind =
        |at: SocketAddr, what: &str| glommio::net::TcpListener::bind(at).map_err(|e| format!("{what} on {at}: {e}"));
    let client_listener = match bind(config.listen, "listening") {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let client_addr = client_listener.local_addr().unwrap_or(config.listen);
    let shard_aware_listener = match config.shard_aware_listen.addr().map(|at| bind(at, "shard-aware port")) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => return fail(e),
    };
    let shard_aware_addr = shard_aware_listener.as_ref().and_then(|l| l.local_addr().ok());
    let shard_aware_port = shard_aware_addr.map_or(0, |a| a.port());
    let mut cluster_config = config.cluster_config(client_addr, shard_aware_addr);
    cluster_config.replaces = replaces;
    cluster_config.peer_tls = tls.peer.clone();
    let peer_port = match PeerPort::bind(&cluster_config, ends.peer_doors) {
        Ok(port) => port,
        Err(e) => return fail(e.to_string()),
    };
    let peers = peer_port.transport().clone();
    let transport_config = peers.config().clone();
    // The coordinator's view until the cluster service swaps in its first.
    let view = Rc::new(RefCell::new(Rc::new(ClusterView::alone(node.host_id()))));
    let hints = match HintStore::open(
        node.clone(),
        config.hint_settings(),
        view.clone(),
        peers.clone(),
        config.timeouts().write,
    )
    .await
    {
        Ok(hints) => hints,
        Err(e) => return fail(format!("opening the hints: {e}")),
    };
    let proxy = StorageProxy::new(node.clone(), view.clone(), peers, Some(hints.clone()), config.timeouts());
    let doors = Rc::new(Doors::new(ends.control));
    let publish = doors.clone();
    let replays = Rc::downgrade(&hints);
    let cluster = match Cluster::start(
        node.clone(),
        view,
        peer_port,
        Rc::new(ReplicaHandler { node: node.clone(), clock: proxy.clock().clone() }),
        cluster_config,
        Box::new(move |view: &Rc<ClusterView>| publish.publish(view)),
        Box::new(move |host, up| match (replays.upgrade(), up) {
            (Some(hints), true) => hints.peer_up(host),
            (Some(hints), false) => hints.peer_down(host),
            (None, _) => {}
        }),
        join_deltas,
    ) {
        Ok(cluster) => cluster,
        Err(e) => return fail(e.to_string()),
    };
    // After the cluster service's first view, which the doors take before serving.
    doors.start(client_addr, shard_aware_port, &transport_config);
    let streaming = config.bootstrap_settings();
    let role = Role::CoordinatorShard { cluster: cluster.clone(), hints: hints.clone(), streaming };
    let memory = config.memory_plan();
    let memory =
        MemoryBudgets { memtable_budget: memory.memtable_budget, cache_budget: memory.cache_budget, why: memory.why };
    let coordinator = Rc::new(
        Coordinator::new(role, proxy, batchlog, client_addr, config.page_limits(), auth).with_memory_budgets(memory),
    );
    // A node with authentication on that no one could log in to does not start.
    if let Err(why) = coordinator.setup_auth().await {
        return fail(why);
    }
    // Subsystems started on this shard (the cluster layer's hints and gossip) add their
    // metrics with `metrics.register(...)`; every later scrape includes them.
    let metrics = Rc::new(Metrics::with_other_shards(doors.clone()));
    if let Err(e) = metrics.register(Rc::new(metrics::gossip::GossipMetrics(cluster.clone()))) {
        tracing::warn!(error = %e, "gossip metrics are not exported");
    }
    if let Err(e) = metrics.register(hints.clone()) {
        tracing::warn!(error = %e, "hint metrics not exported");
    }
    if let Err(e) = metrics.register(coordinator.repair_metrics()) {
        tracing::warn!(error = %e, "repair metrics are not exported");
    }
    // The metrics endpoint serves until the client connections have finished (its task is
    // dropped, which cancels it).
    let (metrics_addr, _metrics_task) = match config.metrics_listen.addr() {
        None => (None, None),
        Some(at) => match bind(at, "metrics endpoint") {
            Ok(l) => {
                let bound = l.local_addr().unwrap_or(at);
                let node = coordinator.node().clone();
                let serve = metrics::listener::serve(
                    l,
                    metrics.clone(),
                    node,
                    config.metrics_timeout(),
                    tls.metrics.clone(),
                    tls.metrics_auth.clone(),
                );
                (Some(bound), Some(glommio::spawn_local(serve)))
            }
            Err(e) => return fail(e),
        },
    };
    // Background repair runs until the connections have finished (dropped: cancelled).
    let _repair_task = config
        .repair_interval()
        .map(|every| glommio::spawn_local(crate::coordinator::repair_every(coordinator.clone(), every)));
    // Ends once every front door has dropped its `Home` (when the executors stop).
    glommio::spawn_local(link::serve_home(ends.home, coordinator.clone(), cluster.clone(), hints)).detach();
    let stopping = Rc::new(Stopping::default());
    let stop = (ends.stop, stopping.clone());
    glommio::spawn_local(async move {
        let _ = stop.0.recv_async().await;
        stop.1.stop();
    })
    .detach();
    let limit = ConnectionLimit::new(ConnectionBounds {
        max: config.max_connections,
        per_address: config.max_connections_per_address,
        reserved_admin: config.reserved_admin_connections,
    });
    let listeners = std::iter::once((client_listener, Steering::Spread))
        .chain(shard_aware_listener.map(|l| (l, Steering::BySourcePort)));
    for (listener, steering) in listeners {
        let (doors, limit, metrics, stopping) =
            (ends.handoffs.clone(), limit.clone(), metrics.clone(), stopping.clone());
        glommio::spawn_local(async move {
            accept::accept(listener, steering, doors, limit, metrics, async move { stopping.wait().await }).await
        })
        .detach();
    }
    // The accept tasks hold the only senders now: the doors' queues end when they stop.
    drop(ends.handoffs);
    let _ = events.send(ServiceEvent::Listening {
        client: client_addr,
        shard_aware: shard_aware_addr,
        peer: cluster.peer_addr(),
        metrics: metrics_addr,
    });
    if let Some(schema) = join_schema {
        let (node, cluster, clock) = (node.clone(), cluster.clone(), coordinator.proxy().clock().clone());
        let (mut settings, events) = (config.bootstrap_settings(), events.clone());
        settings.replaces = replaces;
        glommio::spawn_local(async move {
            if let Err(why) = crate::coordinator::bootstrap(node, cluster, clock, schema, settings).await {
                tracing::error!(error = %why, "bootstrap failed: this node stops (its next start bootstraps again)");
                let _ = events.send_async(ServiceEvent::Failed(format!("bootstrap failed: {why}"))).await;
            }
        })
        .detach();
    }
    crate::coordinator::recover_interrupted_decommission(&node, &cluster);
    let left = (cluster.left_signal(), events.clone());
    glommio::spawn_local(async move {
        if left.0.recv_async().await.is_ok() {
            tracing::info!("decommissioned: stopping the node (in-flight requests finish; clients are disconnected)");
            let _ = left.1.send_async(ServiceEvent::Decommissioned).await;
        }
    })
    .detach();
    // Returns the memory this shard frees (answers, rows) until its connections have finished.
    let _memory = glommio::spawn_local(memory::return_freed_memory());
    let door = Door { shard: 0, shards: shards as u16, shard_aware_port };
    connection::serve(ends.incoming, door, coordinator.clone(), metrics, &config, tls.client).await;
    // The other doors may still be finishing requests that need the peers or the hints.
    for _ in 1..shards {
        let _ = ends.done.recv_async().await;
    }
    // Tells the peers this node is leaving now rather than after their failure detectors'
    // delay.
    cluster.stop().await;
    let _ = events.send(ServiceEvent::Stopped);
}

/// Shard 1 and up: the coordinator role for the connections this shard is handed.
async fn front_door(
    node: Node,
    ends: DoorEnds,
    config: ServerConfig,
    auth: AuthSettings,
    tls: NodeTls,
    events: flume::Sender<ServiceEvent>,
) {
    let DoorEnds { shard, shards, home, incoming, peers, control, done } = ends;
    // The coordinator shard says when it serves (the batchlog exists, the ports are bound,
    // the cluster service has sent its first view).
    let mut first_view = None;
    let (client, shard_aware_port, transport_config) = loop {
        match control.recv_async().await {
            Ok(DoorControl::Start { client, shard_aware_port, peers }) => break (client, shard_aware_port, peers),
            Ok(DoorControl::View(view)) => first_view = Some(view),
            Ok(DoorControl::Counters { reply }) => {
                let _ = reply.send(Default::default());
            }
            Err(_) => {
                let _ = done.send(());
                return;
            }
        }
    };
    let home = Rc::new(Home::new(home));
    let batchlog = match Batchlog::attach(&node, shard) {
        Ok(batchlog) => batchlog,
        Err(e) => {
            let _ = events.send(ServiceEvent::Failed(format!("shard {shard}: opening the batchlog: {e}")));
            let _ = done.send(());
            return;
        }
    };
    let view = first_view.map_or_else(|| ClusterView::alone(node.host_id()), |view| (*view).clone());
    let view = Rc::new(RefCell::new(Rc::new(view)));
    let transport = Transport::new(transport_config.clone());
    let proxy = StorageProxy::new(node.clone(), view, transport.clone(), Some(home.clone()), config.timeouts());
    // The data requests of the peer connections handed to this shard, served here: a replica
    // write for a token this shard owns crosses no core. Gossip and schema requests belong to
    // the coordinator shard, where the callers send them.
    let mut handlers = PeerHandlers::new();
    handlers.register(&DATA_REQUESTS, Rc::new(ReplicaHandler { node, clock: proxy.clock().clone() }));
    glommio::spawn_local(async move { serve_handed(peers, Rc::new(handlers), &transport_config).await }).detach();
    let role = Role::FrontDoor { shard, home };
    let coordinator = Rc::new(Coordinator::new(role, proxy, batchlog, client, config.page_limits(), auth));
    let metrics = Rc::new(Metrics::new());
    glommio::spawn_local(link::serve_door_control(control, coordinator.clone(), metrics.clone(), transport)).detach();
    let _memory = glommio::spawn_local(memory::return_freed_memory());
    let door = Door { shard, shards, shard_aware_port };
    connection::serve(incoming, door, coordinator, metrics, &config, tls.client).await;
    let _ = done.send(());
}

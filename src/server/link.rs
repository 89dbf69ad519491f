//! What crosses between a node's shards in the server, and nothing else: a front door asks
//! the coordinator shard for the node-wide duties it owns (hints, telling peers of schema
//! changes, admin), and the coordinator shard tells every front door of each new cluster view
//! and hands it its share of the client and peer connections. Peer calls do not cross: every
//! shard has its own peer transport.
//! Each shard keeps its own state; only these messages, over bounded flume channels, cross.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use wire::protocol::{AdminRequest, Request, Response};

use crate::cluster::service::Cluster;
use crate::cluster::transport::TransportConfig;
use crate::cluster::view::ClusterView;
use crate::cluster::HostId;
use crate::coordinator::{Coordinator, CoordinatorShard, HintSink};
use crate::hints::HintStore;
use crate::metrics::{Metrics, RequestCounters};

/// Requests from the front doors waiting at the coordinator shard; a door that finds it full
/// waits (every such request is part of a client request, itself bounded per connection).
pub const HOME_QUEUE: usize = 1024;

/// Control messages waiting at one front door. Views come at the pace of gossip events and
/// scrapes at the pace of scrapers (16 at most at once), so this is never reached in practice;
/// a view that does not fit is logged (the door keeps the previous one until the next).
pub const DOOR_CONTROL_QUEUE: usize = 64;

/// What a front door asks of the coordinator shard.
pub enum HomeRequest {
    /// A replica missed a write: keep a hint for it.
    Hint {
        target: HostId,
        target_alive: bool,
        mutate: Vec<u8>,
    },
    /// DDL ran on the door's shard: tell the peers.
    SchemaChanged {
        reply: flume::Sender<()>,
    },
    Admin {
        command: AdminRequest,
        reply: flume::Sender<Response>,
    },
}

/// What the coordinator shard tells a front door.
pub enum DoorControl {
    /// The first message: the coordinator shard is serving (batchlog opened, cluster service
    /// started) and the node's client and peer ports are bound; `peers` is how this node's
    /// transports call and serve peers.
    Start { client: SocketAddr, shard_aware_port: u16, peers: TransportConfig },
    /// The cluster view requests start with from now on.
    View(Arc<ClusterView>),
    /// Answer with the door's request counters (a metrics scrape).
    Counters { reply: flume::Sender<RequestCounters> },
}

/// A front door's way to the coordinator shard: hints and node-wide duties.
pub struct Home {
    requests: flume::Sender<HomeRequest>,
}

impl Home {
    pub fn new(requests: flume::Sender<HomeRequest>) -> Home {
        Home { requests }
    }

    async fn ask<T>(&self, make: impl FnOnce(flume::Sender<T>) -> HomeRequest) -> Option<T> {
        let (reply, answer) = flume::bounded(1);
        self.requests.send_async(make(reply)).await.ok()?;
        answer.recv_async().await.ok()
    }
}

impl HintSink for Home {
    fn store(&self, target: HostId, target_alive: bool, mutate: &Rc<Vec<u8>>) {
        let (requests, mutate) = (self.requests.clone(), mutate.to_vec());
        // Never delays the write's answer; a stopped coordinator shard loses it (as hints not
        // yet synced are lost in a crash: repair covers them).
        glommio::spawn_local(async move {
            let _ = requests.send_async(HomeRequest::Hint { target, target_alive, mutate }).await;
        })
        .detach();
    }
}

impl CoordinatorShard for Home {
    fn admin(&self, command: AdminRequest) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + '_>> {
        Box::pin(async move {
            let stopped = || Response::error(wire::ErrorCode::Server, "the coordinator shard has stopped");
            self.ask(|reply| HomeRequest::Admin { command, reply }).await.unwrap_or_else(stopped)
        })
    }

    fn schema_changed(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> {
        Box::pin(async move {
            let _ = self.ask(|reply| HomeRequest::SchemaChanged { reply }).await;
        })
    }
}

/// Serves the front doors' requests on the coordinator shard, each as its own task, until
/// every door has dropped its [`Home`].
pub async fn serve_home(
    requests: flume::Receiver<HomeRequest>,
    coordinator: Rc<Coordinator>,
    cluster: Rc<Cluster>,
    hints: Rc<HintStore>,
) {
    while let Ok(request) = requests.recv_async().await {
        match request {
            HomeRequest::Hint { target, target_alive, mutate } => hints.store(target, target_alive, &Rc::new(mutate)),
            HomeRequest::SchemaChanged { reply } => {
                let cluster = cluster.clone();
                glommio::spawn_local(async move {
                    cluster.schema_changed().await;
                    let _ = reply.send(());
                })
                .detach();
            }
            HomeRequest::Admin { command, reply } => {
                let coordinator = coordinator.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send(coordinator.execute(Request::Admin(command)).await);
                })
                .detach();
            }
        }
    }
}

/// The coordinator shard's handles on the other shards' front doors.
pub struct Doors {
    /// Indexed by shard; None for the coordinator shard itself.
    control: Vec<Option<flume::Sender<DoorControl>>>,
}

impl Doors {
    pub fn new(control: Vec<Option<flume::Sender<DoorControl>>>) -> Doors {
        Doors { control }
    }

    /// Tells every other shard's front door to start serving.
    pub fn start(&self, client: SocketAddr, shard_aware_port: u16, peers: &TransportConfig) {
        for door in self.control.iter().flatten() {
            let _ = door.try_send(DoorControl::Start { client, shard_aware_port, peers: peers.clone() });
        }
    }

    /// Sends `view` to every other shard's front door.
    pub fn publish(&self, view: &ClusterView) {
        let view = Arc::new(view.clone());
        for (shard, door) in self.control.iter().enumerate() {
            let Some(door) = door else { continue };
            if let Err(flume::TrySendError::Full(_)) = door.try_send(DoorControl::View(view.clone())) {
                tracing::error!(shard, "a front door's control queue is full: it keeps its previous cluster view");
            }
        }
    }
}

impl crate::metrics::OtherShards for Doors {
    fn request_counters(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<RequestCounters>> + '_>> {
        Box::pin(async move {
            let mut asked = Vec::new();
            for door in self.control.iter().flatten() {
                let (reply, answer) = flume::bounded(1);
                if door.send_async(DoorControl::Counters { reply }).await.is_ok() {
                    asked.push(answer);
                }
            }
            let mut out = Vec::new();
            for answer in asked {
                out.extend(answer.recv_async().await.ok());
            }
            out
        })
    }
}

/// Serves a front door's control messages: swaps in each new view, answers scrapes. Ends when
/// the coordinator shard drops its [`Doors`].
pub async fn serve_door_control(
    control: flume::Receiver<DoorControl>,
    coordinator: Rc<Coordinator>,
    metrics: Rc<Metrics>,
) {
    while let Ok(message) = control.recv_async().await {
        handle_control(message, &coordinator, &metrics);
    }
}

/// Serves one control message of a front door.
pub fn handle_control(message: DoorControl, coordinator: &Coordinator, metrics: &Metrics) {
    match message {
        DoorControl::View(view) => *coordinator.proxy().view_cell().borrow_mut() = Rc::new((*view).clone()),
        DoorControl::Counters { reply } => {
            let _ = reply.send(metrics.counters());
        }
        DoorControl::Start { .. } => tracing::error!("a front door was told to start twice"),
    }
}

//! What crosses between a node's shards in the server, and nothing else: a front door asks
//! the coordinator shard for the node-wide duties it owns (hints, telling peers of schema
//! changes, admin), and the coordinator shard tells every front door of each new cluster view
//! and hands it its share of the client and peer connections. Peer calls do not cross: every
//! shard has its own peer transport.
//! Each shard keeps its own state; only these messages, over bounded flume channels, cross.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use wire::protocol::{AdminRequest, Response};

use crate::cluster::service::Cluster;
use crate::cluster::transport::{Transport, TransportConfig};
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
                    // The front door that received the command checked its caller.
                    let _ = reply.send(coordinator.admin_checked(command).await);
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
/// the coordinator shard drops its [`Doors`]. `transport` is the door's own peer transport.
pub async fn serve_door_control(
    control: flume::Receiver<DoorControl>,
    coordinator: Rc<Coordinator>,
    metrics: Rc<Metrics>,
    transport: Rc<Transport>,
) {
    while let Ok(message) = control.recv_async().await {
        handle_control(message, &coordinator, &metrics, &transport);
    }
}

/// Serves one control message of a front door.
pub fn handle_control(message: DoorControl, coordinator: &Coordinator, metrics: &Metrics, transport: &Transport) {
    match message {
        DoorControl::View(view) => take_view(&coordinator.proxy().view_cell(), transport, &view),
        DoorControl::Counters { reply } => {
            let _ = reply.send(metrics.counters());
        }
        DoorControl::Start { .. } => tracing::error!("a front door was told to start twice"),
    }
}

/// Swaps `view` into a front door's `cell`, and first resets the door's `transport` backoff
/// for every peer the view says is back (up again, restarted, new or moved): gossip resets the
/// coordinator shard's transport itself, and without this the door's calls to a peer that just
/// came back would keep failing for up to the backoff's 5 s.
pub fn take_view(cell: &RefCell<Rc<ClusterView>>, transport: &Transport, view: &ClusterView) {
    let back = view.peers_back_since(&cell.borrow());
    for peer in back {
        transport.peer_is_back(peer);
    }
    *cell.borrow_mut() = Rc::new(view.clone());
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use super::*;
    use crate::cluster::opcodes::{READ, READ_RESULT};
    use crate::cluster::transport::{serve, FrameHandler, PeerError};
    use crate::cluster::view::Member;

    /// Answers every request with READ_RESULT and the body it got.
    struct Echo;

    impl FrameHandler for Echo {
        fn handle(&self, _: SocketAddr, _: u8, body: Vec<u8>) -> Pin<Box<dyn Future<Output = (u8, Vec<u8>)> + '_>> {
            Box::pin(async move { (READ_RESULT, body) })
        }
    }

    fn view_with_peer(peer: SocketAddr, alive: bool) -> ClusterView {
        let member = |host, peer, alive| Member {
            host,
            peer,
            client: peer,
            shard_aware: None,
            tokens: vec![vec![host as i64 * 1000]],
            alive,
            generation: 1,
            joining: false,
            replaces: None,
            leaving: false,
        };
        let local = SocketAddr::from(([127, 0, 0, 1], 1));
        ClusterView::new(1, vec![member(1, local, true), member(2, peer, alive)]).expect("a view")
    }

    /// A door's transport that backed off from a peer while it was down calls it at once when
    /// the view the door takes says it is up again (with a 60 s backoff, the call would
    /// otherwise fail for a minute).
    #[test]
    fn a_door_calls_a_peer_its_new_view_says_is_back_at_once() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let probe = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let peer = probe.local_addr().expect("a bound listener has an address");
                drop(probe);
                let config = TransportConfig {
                    backoff_min: Duration::from_secs(60),
                    backoff_max: Duration::from_secs(60),
                    ..TransportConfig::new(SocketAddr::from(([127, 0, 0, 1], 1)))
                };
                let transport = Transport::new(config.clone());
                let cell = RefCell::new(Rc::new(view_with_peer(peer, true)));
                let call = || transport.call_raw(peer, 0, READ, vec![7], Duration::from_secs(5));
                assert!(matches!(call().await, Err(PeerError::Unreachable { .. })), "nothing listens yet");
                // The peer comes up; the door's view still says it is down.
                let listener = glommio::net::TcpListener::bind(peer).expect("bind the peer's port again");
                let (stop, stopped) = flume::bounded::<()>(1);
                let served = glommio::spawn_local(async move {
                    let config = TransportConfig { local_addr: peer, ..config };
                    serve(listener, Rc::new(Echo), &config, Vec::new(), async move {
                        let _ = stopped.recv_async().await;
                    })
                    .await
                });
                take_view(&cell, &transport, &view_with_peer(peer, false));
                assert!(matches!(call().await, Err(PeerError::Unreachable { .. })), "still backing off");
                take_view(&cell, &transport, &view_with_peer(peer, true));
                assert_eq!(call().await, Ok((READ_RESULT, vec![7])), "called at once");
                assert!(cell.borrow().member(2).is_some_and(|m| m.alive), "the view was taken");
                drop(stop);
                served.await;
            })
            .expect("spawn an executor")
            .join()
            .expect("the test body panicked");
    }
}

//! The node's client ports, on the coordinator shard: accepts connections on the ordinary port
//! (handed to the shards in turn) and on the shard-aware port (handed to the shard its source
//! port names, `port % shards`, so that a client can choose), and bounds the node's client
//! connections (`max_connections`, `max_connections_per_address`, with a few places beyond both
//! reserved for `enigmadb admin`). It never reads a connection it hands over; the front door of
//! the chosen shard serves it (`connection::serve`).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use glommio::net::{AcceptedTcpStream, TcpListener};

use crate::frame_io::next_accepted;
use crate::metrics::Metrics;

/// A connection on its way to the shard that serves it, with its place among the node's
/// connections, given back when the serving shard drops it.
pub struct Handoff {
    pub stream: AcceptedTcpStream,
    pub slot: Slot,
}

/// The node's bounds on client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBounds {
    /// Connections of the node.
    pub max: usize,
    /// Connections from one IP address; 0: no bound of its own.
    pub per_address: usize,
    /// Places beyond both bounds kept for `enigmadb admin`.
    pub reserved_admin: usize,
}

/// Connections open, shared by the shards: the accepting shard takes places, the serving
/// shards give them back. Touched once per connection, never per request.
#[derive(Default)]
struct Counts {
    /// Ordinary places taken.
    open: usize,
    /// Reserved (admin) places taken.
    reserved: usize,
    /// Places of each kind taken by each address; an address without any is removed, so
    /// this holds at most as many entries as there are connections.
    by_address: HashMap<IpAddr, usize>,
}

/// One of the node's connection places.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    address: IpAddr,
    /// Why an ordinary place was refused, for a place kept for admin.
    reserved: Option<Refusal>,
}

impl Slot {
    /// A place beyond the bounds, kept for `enigmadb admin`: the connection must name the admin
    /// tool in STARTUP or be closed. Says which bound it is beyond.
    pub fn reserved(&self) -> Option<&Refusal> {
        self.reserved.as_ref()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        match self.reserved {
            Some(_) => counts.reserved -= 1,
            None => counts.open -= 1,
        }
        if let std::collections::hash_map::Entry::Occupied(mut e) = counts.by_address.entry(self.address) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// A poisoned lock only means a panic elsewhere while counting: the counts are still whole
/// (every update is a single step).
fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why a connection got no place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections (limit {0})")]
    Node(usize),
    #[error("too many connections from {address} (limit {limit} per address)")]
    Address { address: IpAddr, limit: usize },
}

/// Which shard serves a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// The shards in turn (the ordinary port).
    Spread,
    /// Shard `source port % shards` (the shard-aware port).
    BySourcePort,
}

impl Steering {
    /// The shard of the `nth` connection accepted, from `source_port`, among `shards`.
    pub fn shard(self, nth: usize, source_port: u16, shards: usize) -> usize {
        match self {
            Steering::Spread => nth % shards,
            Steering::BySourcePort => usize::from(source_port) % shards,
        }
    }
}

/// The node's count of open client connections and its bounds.
#[derive(Clone)]
pub struct ConnectionLimit {
    counts: Arc<Mutex<Counts>>,
    bounds: ConnectionBounds,
}

impl ConnectionLimit {
    pub fn new(bounds: ConnectionBounds) -> ConnectionLimit {
        ConnectionLimit { counts: Arc::default(), bounds }
    }

    /// A place for one more connection from `address`: an ordinary one within the bounds, else
    /// a reserved one while any is free.
    fn take(&self, address: IpAddr) -> Result<Slot, Refusal> {
        let ConnectionBounds { max, per_address, reserved_admin } = self.bounds;
        let mut counts = lock(&self.counts);
        let from = counts.by_address.get(&address).copied().unwrap_or(0);
        let refusal = if counts.open >= max {
            Some(Refusal::Node(max))
        } else if per_address > 0 && from >= per_address {
            Some(Refusal::Address { address, limit: per_address })
        } else {
            None
        };
        match &refusal {
            None => counts.open += 1,
            Some(_) if counts.reserved < reserved_admin => counts.reserved += 1,
            Some(refusal) => return Err(refusal.clone()),
        }
        let reserved = refusal;
        *counts.by_address.entry(address).or_default() += 1;
        Ok(Slot { counts: self.counts.clone(), address, reserved })
    }
}

/// Accepts on `listener` until `stop` resolves, handing each connection to `doors[shard]`
/// (one sender per shard, shard 0 included) as `steering` says. Over the limit, the
/// connection is answered OVERLOADED here and closed.
pub async fn accept(
    listener: TcpListener,
    steering: Steering,
    doors: Vec<flume::Sender<Handoff>>,
    limit: ConnectionLimit,
    metrics: Rc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut incoming = Box::pin(futures_lite::stream::unfold(listener, |listener| async move {
        let accepted = listener.shared_accept().await.map_err(std::io::Error::from);
        Some((accepted, listener))
    }));
    let mut accepted_count = 0usize;
    while let Some(stream) = next_accepted(&mut incoming, &mut stop).await {
        let Ok(peer) = stream.peer_addr() else {
            // Reset before it was accepted: nothing to serve.
            continue;
        };
        let slot = match limit.take(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics.connection_refused();
                glommio::spawn_local(super::connection::refuse(stream.bind_to_executor(), refusal)).detach();
                continue;
            }
        };
        let source_port = peer.port();
        let shard = steering.shard(accepted_count, source_port, doors.len());
        accepted_count = accepted_count.wrapping_add(1);
        // A door that has stopped drops the connection (and its slot): the node is stopping.
        let _ = doors[shard].send_async(Handoff { stream, slot }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_aware_port_serves_a_connection_on_the_shard_its_source_port_names() {
        for shards in 1..=8 {
            for port in [1024u16, 40_000, 40_001, 40_007, u16::MAX] {
                assert_eq!(Steering::BySourcePort.shard(99, port, shards), usize::from(port) % shards);
            }
        }
    }

    #[test]
    fn the_ordinary_port_spreads_connections_over_every_shard_in_turn() {
        let shards = 3;
        let served: Vec<usize> = (0..6).map(|nth| Steering::Spread.shard(nth, 40_000, shards)).collect();
        assert_eq!(served, [0, 1, 2, 0, 1, 2]);
    }

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const THERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    #[test]
    fn the_connection_limit_gives_places_back_when_connections_end() {
        let limit = ConnectionLimit::new(ConnectionBounds { max: 2, per_address: 0, reserved_admin: 0 });
        let (a, b) = (limit.take(HERE), limit.take(THERE));
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(limit.take(HERE).err(), Some(Refusal::Node(2)), "a third connection is over the bound");
        drop(a);
        assert!(limit.take(HERE).is_ok(), "a place came back");
    }

    #[test]
    fn one_address_is_bounded_on_its_own_and_others_still_connect() {
        let limit = ConnectionLimit::new(ConnectionBounds { max: 10, per_address: 2, reserved_admin: 0 });
        let held: Vec<Slot> = (0..2).map(|_| limit.take(HERE).expect("within the bound")).collect();
        assert_eq!(limit.take(HERE).err(), Some(Refusal::Address { address: HERE, limit: 2 }));
        assert!(limit.take(THERE).is_ok(), "another address is not affected");
        drop(held);
        assert!(!lock(&limit.counts).by_address.contains_key(&HERE), "an address without connections is forgotten");
        assert!(limit.take(HERE).is_ok());
    }

    #[test]
    fn reserved_places_are_taken_only_beyond_the_bounds_and_come_back() {
        let limit = ConnectionLimit::new(ConnectionBounds { max: 1, per_address: 0, reserved_admin: 2 });
        let ordinary = limit.take(HERE).expect("a place");
        assert!(ordinary.reserved().is_none());
        let (r1, r2) = (limit.take(HERE).expect("reserved"), limit.take(THERE).expect("reserved"));
        assert_eq!(
            (r1.reserved(), r2.reserved()),
            (Some(&Refusal::Node(1)), Some(&Refusal::Node(1))),
            "beyond the node bound"
        );
        assert_eq!(limit.take(HERE).err(), Some(Refusal::Node(1)), "every reserved place taken");
        drop(r1);
        assert!(limit.take(HERE).expect("a reserved place came back").reserved().is_some());
        drop(ordinary);
        assert!(limit.take(HERE).expect("an ordinary place came back").reserved().is_none());
    }
}

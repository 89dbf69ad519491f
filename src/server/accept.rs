//! The node's client ports, on the coordinator shard: accepts connections on the ordinary port
//! (handed to the shards in turn) and on the shard-aware port (handed to the shard its source
//! port names, `port % shards`, so that a client can choose), and bounds the node's client
//! connections (`max_connections`). It never reads a connection it hands over; the front door
//! of the chosen shard serves it (`connection::serve`).

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use glommio::net::{AcceptedTcpStream, TcpListener};

use crate::frame_io::next_accepted;
use crate::metrics::Metrics;

/// A connection on its way to the shard that serves it, with its place among the node's
/// `max_connections`, given back when the serving shard drops it.
pub struct Handoff {
    pub stream: AcceptedTcpStream,
    pub slot: Slot,
}

/// One of the node's connection places (an atomic count shared by the shards: touched once
/// per connection, never per request).
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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

/// The node's count of open client connections and its bound.
#[derive(Clone)]
pub struct ConnectionLimit {
    open: Arc<AtomicUsize>,
    max: usize,
}

impl ConnectionLimit {
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit { open: Arc::new(AtomicUsize::new(0)), max }
    }

    /// A place for one more connection, or None at the bound.
    fn take(&self) -> Option<Slot> {
        let taken = self.open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.open.clone());
        (taken < self.max).then_some(slot)
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
        let Some(slot) = limit.take() else {
            metrics.connection_refused();
            glommio::spawn_local(super::connection::refuse(stream.bind_to_executor(), limit.max)).detach();
            continue;
        };
        let source_port = stream.peer_addr().map_or(0, |a| a.port());
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

    #[test]
    fn the_connection_limit_gives_places_back_when_connections_end() {
        let limit = ConnectionLimit::new(2);
        let (a, b) = (limit.take(), limit.take());
        assert!(a.is_some() && b.is_some());
        assert!(limit.take().is_none(), "a third connection is over the bound");
        drop(a);
        assert!(limit.take().is_some(), "a place came back");
    }
}

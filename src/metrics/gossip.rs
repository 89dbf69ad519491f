//! The cluster service's gossip state on the metrics endpoint (a [`MetricsSource`]): peers
//! known and up, each peer's liveness, heartbeat and phi, and gossip rounds. It reads the
//! service's status at scrape time and never changes it.

use std::rc::Rc;

use super::{Exposition, Kind, MetricsSource};
use crate::cluster::service::{Cluster, MemberStatus};
use crate::cluster::HostId;
use wire::protocol::display_host_id;

/// Registered by the server once the cluster service runs.
pub struct GossipMetrics(pub Rc<Cluster>);

impl MetricsSource for GossipMetrics {
    fn collect(&self, out: &mut Exposition) {
        render_gossip(out, self.0.local(), self.0.gossip_rounds(), &self.0.status());
    }
}

/// A peer's series: name, help and how to read it from its status.
type PeerMetric = (&'static str, &'static str, fn(&MemberStatus) -> Option<f64>);

const PEER_METRICS: [PeerMetric; 4] = [
    ("enigmadb_gossip_peer_up", "1 while the failure detector holds the peer up, else 0.", |m| {
        Some(u8::from(m.up).into())
    }),
    ("enigmadb_gossip_peer_generation", "The peer's heartbeat generation (rises at each restart).", |m| {
        Some(m.generation as f64)
    }),
    ("enigmadb_gossip_peer_heartbeat_version", "The peer's heartbeat version last gossiped.", |m| {
        Some(m.heartbeat_version as f64)
    }),
    ("enigmadb_gossip_peer_phi", "The failure detector's phi of the peer (absent before its first heartbeat).", |m| {
        m.phi
    }),
];

/// The gossip families of a node `local` that ran `rounds` rounds and knows `members` (itself
/// included; at most the gossip's endpoint bound, so the series are bounded too).
pub fn render_gossip(out: &mut Exposition, local: HostId, rounds: u64, members: &[MemberStatus]) {
    let peers: Vec<&MemberStatus> = members.iter().filter(|m| m.host != local).collect();
    let this = members.iter().find(|m| m.host == local);
    let node: [(&str, Kind, &str, f64); 5] = [
        ("enigmadb_gossip_rounds_total", Kind::Counter, "Gossip rounds this node started.", rounds as f64),
        ("enigmadb_gossip_peers", Kind::Gauge, "Peers known through gossip (this node excluded).", peers.len() as f64),
        (
            "enigmadb_gossip_peers_up",
            Kind::Gauge,
            "Peers the failure detector holds up.",
            peers.iter().filter(|m| m.up).count() as f64,
        ),
        (
            "enigmadb_gossip_generation",
            Kind::Gauge,
            "This node's heartbeat generation.",
            this.map_or(0.0, |m| m.generation as f64),
        ),
        (
            "enigmadb_gossip_heartbeat_version",
            Kind::Gauge,
            "This node's heartbeat version.",
            this.map_or(0.0, |m| m.heartbeat_version as f64),
        ),
    ];
    for (name, kind, help, value) in node {
        out.family(name, kind, help);
        out.sample(name, &[], value);
    }
    let labels: Vec<(String, String)> = peers
        .iter()
        .map(|m| (m.peer.map_or_else(|| "unknown".to_owned(), |a| a.to_string()), display_host_id(m.host)))
        .collect();
    for (name, help, read) in PEER_METRICS {
        out.family(name, Kind::Gauge, help);
        for (m, (peer, host)) in peers.iter().zip(&labels) {
            if let Some(value) = read(m) {
                out.sample(name, &[("peer", peer), ("host_id", host)], value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::text;

    fn member(host: HostId, up: bool, phi: Option<f64>) -> MemberStatus {
        MemberStatus {
            host,
            client: None,
            peer: Some(format!("127.0.0.{host}:7470").parse().unwrap()),
            up,
            status: None,
            load: None,
            tokens: 8,
            owns: 0.5,
            schema_version: None,
            generation: 100 + host as u64,
            heartbeat_version: 7 * host as u64,
            phi,
        }
    }

    #[test]
    fn every_peer_has_its_liveness_heartbeat_and_phi() {
        let members = [member(1, true, None), member(2, true, Some(0.4)), member(3, false, None)];
        let mut out = Exposition::new();
        render_gossip(&mut out, 1, 42, &members);
        let scrape = text::parse(&out.finish()).unwrap();
        assert_eq!(scrape.sum("enigmadb_gossip_rounds_total", &[]), 42.0);
        assert_eq!(scrape.sum("enigmadb_gossip_peers", &[]), 2.0);
        assert_eq!(scrape.sum("enigmadb_gossip_peers_up", &[]), 1.0);
        assert_eq!(scrape.sum("enigmadb_gossip_generation", &[]), 101.0);
        assert_eq!(scrape.sum("enigmadb_gossip_peer_up", &[("peer", "127.0.0.2:7470")]), 1.0);
        assert_eq!(scrape.sum("enigmadb_gossip_peer_up", &[("peer", "127.0.0.3:7470")]), 0.0);
        assert_eq!(scrape.select("enigmadb_gossip_peer_up", &[]).count(), 2, "this node is no peer");
        assert_eq!(scrape.sum("enigmadb_gossip_peer_heartbeat_version", &[("peer", "127.0.0.3:7470")]), 21.0);
        let phi: Vec<_> = scrape.select("enigmadb_gossip_peer_phi", &[]).collect();
        assert_eq!(phi.len(), 1);
        assert_eq!((phi[0].label("host_id"), phi[0].value), (Some(display_host_id(2).as_str()), 0.4));
    }
}

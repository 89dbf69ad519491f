//! What a brand-new node learns from a seed before it opens its data directory: every endpoint
//! the seed knows (one GOSSIP_SYN with no digests is answered with all of them) and the seed's
//! schema (SCHEMA_PULL). The node chooses its tokens from the ring this shows
//! (`allocation::allocate_tokens`) and decides whether it must bootstrap. Runs on a glommio
//! executor of its own, started and stopped here, before the node's shards exist.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shards::catalog::is_local_table;
use wire::ring::{Ring, RingError};

use super::gossip::{Ack, Delta, Gossip, Status, Syn};
use super::schema::SchemaBody;
use super::transport::{PeerAnswer, PeerRequest, Transport, TransportConfig, COORDINATOR_SHARD};
use super::HostId;

/// How long one message to a seed may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two tries of every seed.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What one seed told.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub seed: SocketAddr,
    pub deltas: Vec<Delta>,
    pub schema: SchemaBody,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no seed answered within {waited:?} (seeds {seeds:?}; last error: {last}): a new node joins through a live seed (start it with --auto-bootstrap false to start it on its own)")]
    NoSeed { seeds: Vec<SocketAddr>, waited: Duration, last: String },
    #[error("the discovery executor failed: {0}")]
    Executor(String),
}

impl Discovered {
    /// The ring the seed knows with its JOINING members' tokens as well (a new node's tokens are
    /// allocated against it, so that they never take a joining node's and even out the ring as
    /// it will be), or None when it knows no NORMAL or LEAVING member (no natural ring).
    pub fn ring(&self) -> Result<Option<Ring<(HostId, u16)>>, RingError> {
        let gossip = self.gossip();
        let natural = |s: &super::gossip::EndpointState| matches!(s.status(), Some(Status::Normal | Status::Leaving));
        let any = gossip.endpoints().any(|(_, s)| natural(s) && s.tokens().is_some());
        match any {
            true => gossip.ring(|s| natural(s) || s.status() == Some(Status::Joining)).map(Some),
            false => Ok(None),
        }
    }

    /// Whether the cluster has a table of its users (which may hold data to stream).
    pub fn has_user_tables(&self) -> bool {
        self.schema.entries.iter().any(|e| !is_local_table(&e.schema.name))
    }

    /// What the seed knows, as a gossip state of an endpoint nobody is.
    pub fn gossip(&self) -> Gossip {
        // An endpoint id nobody has (host ids are random u128s): every delta is a peer's.
        let mut gossip = Gossip::new(0, 0, Vec::new()).unwrap_or_else(|e| unreachable!("no states: {e}"));
        gossip.handle_ack(Ack { requests: Vec::new(), deltas: self.deltas.clone() });
        gossip
    }
}

/// Asks the seeds (other than `own`, this node's peer address) in turn until one answers,
/// for at most `wait`. None when no other seed is listed (the first node of a cluster).
pub fn discover(
    config: TransportConfig,
    seeds: &[SocketAddr],
    own: SocketAddr,
    wait: Duration,
) -> Result<Option<Discovered>, DiscoveryError> {
    let seeds: Vec<SocketAddr> = seeds.iter().copied().filter(|s| *s != own).collect();
    if seeds.is_empty() {
        return Ok(None);
    }
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("discovery")
        .spawn(move || async move { ask(config, seeds, wait).await })
        .map_err(|e| DiscoveryError::Executor(e.to_string()))?;
    executor.join().map_err(|e| DiscoveryError::Executor(e.to_string()))?.map(Some)
}

/// Whether a node answers gossip at `peer` as host `host` (a replacement checks that the node
/// it replaces is not running). Any failure to reach it is "no".
pub fn answers_as(config: TransportConfig, peer: SocketAddr, host: HostId) -> Result<bool, DiscoveryError> {
    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("replace-probe")
        .spawn(move || async move {
            let transport = Transport::new(config);
            let syn = PeerRequest::GossipSyn(Syn { digests: Vec::new() });
            match transport.call_on(peer, COORDINATOR_SHARD, syn, CALL_TIMEOUT).await {
                Ok(PeerAnswer::GossipAck(ack)) => ack.deltas.iter().any(|d| d.host == host),
                _ => false,
            }
        })
        .map_err(|e| DiscoveryError::Executor(e.to_string()))?;
    executor.join().map_err(|e| DiscoveryError::Executor(e.to_string()))
}

async fn ask(config: TransportConfig, seeds: Vec<SocketAddr>, wait: Duration) -> Result<Discovered, DiscoveryError> {
    let transport = Transport::new(config);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        for &seed in &seeds {
            match ask_one(&transport, seed).await {
                Ok(found) => return Ok(found),
                Err(why) => {
                    tracing::debug!(%seed, error = %why, "seed not answering yet");
                    last = why;
                }
            }
        }
        if started.elapsed() >= wait {
            return Err(DiscoveryError::NoSeed { seeds, waited: wait, last });
        }
        glommio::timer::sleep(RETRY_PAUSE).await;
    }
}

async fn ask_one(transport: &Transport, seed: SocketAddr) -> Result<Discovered, String> {
    let syn = PeerRequest::GossipSyn(Syn { digests: Vec::new() });
    let deltas = match transport.call_on(seed, COORDINATOR_SHARD, syn, CALL_TIMEOUT).await {
        Ok(PeerAnswer::GossipAck(ack)) => ack.deltas,
        Ok(_) => return Err("an answer of another kind".into()),
        Err(e) => return Err(e.to_string()),
    };
    let schema = match transport.call_on(seed, COORDINATOR_SHARD, PeerRequest::SchemaPull, CALL_TIMEOUT).await {
        Ok(PeerAnswer::Schema(body)) => body,
        Ok(_) => return Err("an answer of another kind".into()),
        Err(e) => return Err(e.to_string()),
    };
    Ok(Discovered { seed, deltas, schema })
}

//! A node's first boot into a cluster: before the data directory gets its identity, the
//! shadow round with the seeds (`cluster::shadow`) on an executor of its own, then the rule
//! that refuses to start a new identity at the address of a member of the cluster. A restart
//! (a directory with its identity) asks the seeds once whether the node left the cluster, and
//! is refused if it did.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shards::node_meta::NodeMeta;
use wire::protocol::display_host_id;

use crate::cluster::replace::ReplaceTarget;
use crate::cluster::shadow::{self, FirstBoot, RejoinRefused, ShadowOutcome, SHADOW_RETRY_INTERVAL};
use crate::cluster::transport::Transport;
use crate::config::ServerConfig;
use crate::tls::PeerTls;

/// Checks a start: nothing to do for a node without seeds (other than itself); a restart (a
/// directory with its `node.meta`) is [`check_restart`]; a first boot runs the shadow round,
/// and an error names the address, the member that has it and the way out when the start is
/// refused.
pub fn check(config: &ServerConfig, peer_tls: &Option<PeerTls>) -> Result<()> {
    let (dir, peer) = (&config.data_dir, config.peer_listen);
    let seeds: Vec<_> = config.seeds.iter().copied().filter(|s| *s != peer).collect();
    if seeds.is_empty() {
        return Ok(());
    }
    if !shards::node::needs_new_identity(dir).with_context(|| format!("opening {}", dir.display()))? {
        return check_restart(config, peer_tls, seeds);
    }
    tracing::info!(?seeds, %peer, "first boot: asking the seeds whether this node's address is a member's");
    let outcome = shadow_round(config, peer_tls, seeds.clone(), config.shadow_round_timeout())?;
    let replacing = match &config.replace {
        Some(text) => Some(text.parse::<ReplaceTarget>().map_err(|e| anyhow::anyhow!("--replace: {e}"))?),
        None => None,
    };
    match shadow::decide(peer, &config.seeds, config.allow_address_reuse, replacing.as_ref(), dir.clone(), &outcome)? {
        FirstBoot::Join => tracing::info!(%peer, "first boot: no member has this address; joining as a new node"),
        FirstBoot::JoinReusingAddress(old) => {
            let old: Vec<String> = old.into_iter().map(display_host_id).collect();
            tracing::warn!(
                %peer,
                old_host_ids = ?old,
                "first boot with --allow-address-reuse: joining as a new, empty node at the address of \
                 members whose data is accepted as gone; they stay in the ring, down, until removed"
            );
        }
        FirstBoot::Replace(dead) => tracing::info!(
            %peer,
            dead = %display_host_id(dead),
            "first boot: replacing the dead node that had this address"
        ),
        FirstBoot::Alone => {
            tracing::warn!(?seeds, "first boot: no other seed answered; starting alone since this node is a seed")
        }
    }
    Ok(())
}

/// How long a restart asks its seeds whether this node still belongs to the cluster: one
/// attempt, so a restart never waits for seeds that are down (its peers ignore the state of a
/// node that left or was removed anyway, `gossip::merge`; it would stay alone).
const RESTART_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The restart of a node with an identity: refused when a seed says it left the cluster
/// (decommissioned, removed, or replaced) and its state has not expired yet.
fn check_restart(config: &ServerConfig, peer_tls: &Option<PeerTls>, seeds: Vec<SocketAddr>) -> Result<()> {
    let dir = &config.data_dir;
    let Some(meta) = NodeMeta::existing(dir).with_context(|| format!("opening {}", dir.display()))? else {
        return Ok(());
    };
    match shadow_round(config, peer_tls, seeds, RESTART_CHECK_TIMEOUT)? {
        ShadowOutcome::Answered { seeds, state } => match shadow::departure(meta.host_id, &state) {
            Some(departure) => {
                bail!(RejoinRefused { host: meta.host_id, departure, told_by: seeds, data_dir: dir.clone() })
            }
            None => Ok(()),
        },
        ShadowOutcome::NoAnswer { waited, .. } => {
            tracing::info!(?waited, "no seed answered at the restart; starting (peers refuse a node that left)");
            Ok(())
        }
    }
}

/// A shadow round with `seeds` (bounded by `timeout`) on an executor of its own.
fn shadow_round(
    config: &ServerConfig,
    peer_tls: &Option<PeerTls>,
    seeds: Vec<SocketAddr>,
    timeout: Duration,
) -> Result<ShadowOutcome> {
    let mut transport_config = super::peer_transport(config, peer_tls);
    transport_config.backoff_min = SHADOW_RETRY_INTERVAL;
    transport_config.backoff_max = SHADOW_RETRY_INTERVAL;
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("shadow-round")
        .spawn(move || async move {
            let transport = Transport::new(transport_config);
            shadow::shadow_round(&transport, &seeds, timeout).await
        })
        .map_err(|e| anyhow::anyhow!("starting the shadow round's executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("the shadow round failed: {e}"))
}

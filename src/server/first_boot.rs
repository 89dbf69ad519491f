//! A node's first boot into a cluster: before the data directory gets its identity, the
//! shadow round with the seeds (`cluster::shadow`) on an executor of its own, then the rule
//! that refuses to start a new identity at the address of a member of the cluster.

use anyhow::{Context, Result};
use wire::protocol::display_host_id;

use crate::cluster::replace::ReplaceTarget;
use crate::cluster::shadow::{self, FirstBoot, SHADOW_RETRY_INTERVAL};
use crate::cluster::transport::Transport;
use crate::config::ServerConfig;
use crate::tls::PeerTls;

/// Checks a first boot: nothing to do for a directory with its `node.meta` or a node without
/// seeds (other than itself); otherwise the shadow round, and an error naming the address, the
/// member that has it and the way out when the start is refused.
pub fn check(config: &ServerConfig, peer_tls: &Option<PeerTls>) -> Result<()> {
    let (dir, peer) = (&config.data_dir, config.peer_listen);
    let seeds: Vec<_> = config.seeds.iter().copied().filter(|s| *s != peer).collect();
    if seeds.is_empty() {
        return Ok(());
    }
    if !shards::node::needs_new_identity(dir).with_context(|| format!("opening {}", dir.display()))? {
        return Ok(());
    }
    tracing::info!(?seeds, %peer, "first boot: asking the seeds whether this node's address is a member's");
    let timeout = config.shadow_round_timeout();
    let mut transport_config = super::peer_transport(config, peer_tls);
    transport_config.backoff_min = SHADOW_RETRY_INTERVAL;
    transport_config.backoff_max = SHADOW_RETRY_INTERVAL;
    let round_seeds = seeds.clone();
    let outcome = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("shadow-round")
        .spawn(move || async move {
            let transport = Transport::new(transport_config);
            shadow::shadow_round(&transport, &round_seeds, timeout).await
        })
        .map_err(|e| anyhow::anyhow!("starting the shadow round's executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("the shadow round failed: {e}"))?;
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

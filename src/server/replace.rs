//! `enigmadb server --replace HOST_ID_OR_ADDRESS` before the node opens its data directory
//! (Cassandra's `replace_address_first_boot`): finds the dead node through a seed, refuses a
//! node that is unknown, gone, already replaced or alive, and gives the empty directory an
//! identity with the dead node's tokens (shard by shard) after recording the replacement in
//! `bootstrap.state`; the coordinator shard then streams its ranges (`coordinator::bootstrap`).
//! A restart before the streams completed resumes from `bootstrap.state`, with or without the
//! flag.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shards::node_meta::NodeMeta;
use wire::protocol::display_host_id;

use super::services::JoinPlan;
use crate::cluster::bootstrap::{BootstrapRecord, BootstrapState};
use crate::cluster::discovery::{answers_as, discover, Discovered};
use crate::cluster::replace::{check_dead, resolve, DeadNode, ReplaceTarget};
use crate::cluster::service::GOSSIP_INTERVAL;
use crate::cluster::transport::TransportConfig;
use crate::config::ServerConfig;

/// Gossip rounds the dead node's heartbeat must stay still, at least (the ring delay when
/// longer): a live node beats every round, and its peers pass the beats on within a few.
const STILL_ROUNDS: u32 = 3;

/// The replacement this start makes or resumes, if any: `record` is what `bootstrap.state`
/// says; `target` what `--replace` names. None: not a replacement (or one already completed:
/// the node starts as it is, its `Replaces` gossiped from the record).
pub fn prepare(
    config: &ServerConfig,
    transport: TransportConfig,
    target: Option<ReplaceTarget>,
    record: Option<BootstrapRecord>,
    new_dir: bool,
    wait: Duration,
) -> Result<Option<JoinPlan>> {
    let dir = &config.data_dir;
    let identity = NodeMeta::existing(dir)?;
    let recorded = record.and_then(|r| r.replaces);
    let (target, me) = match (record, &identity) {
        (Some(BootstrapRecord { state: BootstrapState::Completed, replaces: Some(dead) }), Some(_)) => {
            if target.is_some() {
                tracing::info!(dead = %display_host_id(dead), "--replace is ignored: this node completed its replacement");
            }
            return Ok(None);
        }
        (Some(BootstrapRecord { state: BootstrapState::InProgress, replaces: Some(dead) }), Some(meta)) => {
            (ReplaceTarget::Host(dead), Some(meta.host_id))
        }
        // A new directory (a crash may have left the record of a replacement about to start).
        (_, None) if new_dir => match target.or(recorded.map(ReplaceTarget::Host)) {
            Some(target) => (target, None),
            None => return Ok(None),
        },
        _ => match target {
            None => return Ok(None),
            Some(target) => bail!(
                "--replace {target}: the data directory {} already holds data: a replacement starts from an empty \
                 directory (move it away, or start this node without --replace)",
                dir.display()
            ),
        },
    };
    if !config.auto_bootstrap {
        bail!(
            "--replace {target}: a replacement streams the dead node's data; it cannot start with auto_bootstrap off"
        );
    }
    let found = ask_seed(config, transport.clone(), wait, &target)?;
    let dead = resolve(&found.gossip().endpoints().collect::<Vec<_>>(), &target, me)?;
    if let Some(peer) = dead.peer {
        if answers_as(transport.clone(), peer, dead.host)? {
            bail!(crate::cluster::replace::ReplaceError::Alive {
                host: dead.host,
                why: format!("it answers gossip at {peer}"),
            });
        }
    }
    let still = (GOSSIP_INTERVAL * STILL_ROUNDS).max(Duration::from_millis(config.ring_delay_ms));
    tracing::info!(dead = %display_host_id(dead.host), ?still, "replacing: checking that the node's heartbeat stays still");
    std::thread::sleep(still);
    let found = ask_seed(config, transport, wait, &target)?;
    let again: DeadNode =
        resolve(&found.gossip().endpoints().collect::<Vec<_>>(), &ReplaceTarget::Host(dead.host), me)?;
    check_dead(&dead, again.heartbeat)?;
    if me.is_none() {
        create_identity(dir, &dead)?;
    }
    tracing::info!(
        dead = %display_host_id(dead.host),
        seed = %found.seed,
        tokens = dead.tokens.iter().map(Vec::len).sum::<usize>(),
        "replacing a dead node: taking its tokens and streaming its ranges"
    );
    Ok(Some(JoinPlan { deltas: found.deltas, schema: found.schema }))
}

fn ask_seed(
    config: &ServerConfig,
    transport: TransportConfig,
    wait: Duration,
    target: &ReplaceTarget,
) -> Result<Discovered> {
    match discover(transport, &config.seeds, config.peer_listen, wait)? {
        Some(found) => Ok(found),
        None => bail!(
            "--replace {target}: a replacement learns the ring from a seed: start it with --seeds naming a live node"
        ),
    }
}

/// Records the replacement in progress, then the identity with the dead node's tokens (a
/// crash between the two leaves a directory that is still new).
fn create_identity(dir: &Path, dead: &DeadNode) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    BootstrapRecord { state: BootstrapState::InProgress, replaces: Some(dead.host) }.store(dir)?;
    let meta = NodeMeta::create_with_tokens(dir, dead.tokens.clone())?;
    tracing::info!(host = %display_host_id(meta.host_id), replaces = %display_host_id(dead.host), "identity created");
    Ok(())
}

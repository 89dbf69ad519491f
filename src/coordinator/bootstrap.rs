//! Bootstrap of a node joining a cluster that has data (Cassandra's bootstrap), on the
//! coordinator shard: adopt the cluster's schema, refuse a join overlapping a movement in
//! progress, announce JOINING (coordinators then send it the writes of the ranges it will
//! own, `ClusterView::pending_replicas`), wait for the ring to settle, stream every such range
//! of every table from a current replica (SCAN pages applied with their stored timestamps,
//! tombstones and TTLs, as repair pulls), record the bootstrap done, and turn NORMAL. The
//! plan is `cluster::bootstrap::plan`; nothing here decides placement. A replacement of a
//! dead node (`enigmadb server --replace`) runs the same steps with the dead node's tokens:
//! it is the dead node's pending replacement while it streams every range the dead node
//! replicated from the survivors (`cluster::replace::plan`), and once NORMAL the dead node is
//! out of the ring everywhere.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::catalog::is_local_table;
use shards::hlc::Hlc;
use shards::node::Node;
use wire::schema::TableSchema;

use super::proxy::replication_factor;
use super::stream::{count_page, End, Page, Streamer};
use crate::cluster::bootstrap::{check_movement, plan, BootstrapRecord, BootstrapState, Phase, StreamRange};
use crate::cluster::gossip::Status;
use crate::cluster::pending::Movement;
use crate::cluster::replace;
use crate::cluster::schema::SchemaBody;
use crate::cluster::service::Cluster;
use crate::cluster::HostId;

/// Partitions per SCAN page of a stream.
const STREAM_PAGE_PARTITIONS: usize = 256;
/// How long the node waits for its schema to be every live peer's, and for every live peer
/// to learn of its join.
const AGREEMENT_WAIT: Duration = Duration::from_secs(60);
/// Rounds over every replica of a range before the bootstrap fails.
const SOURCE_ROUNDS: u32 = 5;
/// Pause between two rounds over a range's replicas.
const ROUND_PAUSE: Duration = Duration::from_secs(1);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(100);

/// Settings of a bootstrap.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapSettings {
    /// How long JOINING is announced before streaming starts (Cassandra's ring delay).
    pub ring_delay: Duration,
    /// Bytes per second a bootstrap receives at most (None: unthrottled).
    pub throughput: Option<u64>,
    /// The dead node this node replaces (`--replace`), whose tokens it has; None: a join.
    pub replaces: Option<HostId>,
}

/// Runs the bootstrap of this node to its end: Ok once it is NORMAL. `schema` is what the
/// seed had before the node opened. On Err the node must stop: it stays JOINING to its peers
/// and its next start bootstraps again.
pub async fn bootstrap(
    node: Node,
    cluster: Rc<Cluster>,
    clock: Rc<RefCell<Hlc>>,
    schema: SchemaBody,
    settings: BootstrapSettings,
) -> Result<(), String> {
    let result = run(&node, &cluster, &clock, schema, settings).await;
    if let Err(why) = &result {
        cluster.update_progress(|p| {
            p.phase = Phase::Failed;
            p.error = Some(why.clone());
        });
    }
    result
}

async fn run(
    node: &Node,
    cluster: &Rc<Cluster>,
    clock: &RefCell<Hlc>,
    schema: SchemaBody,
    settings: BootstrapSettings,
) -> Result<(), String> {
    cluster.update_progress(|p| {
        p.phase = Phase::Schema;
        p.throughput_limit = settings.throughput;
    });
    crate::cluster::schema::adopt(node, schema).await.map_err(|e| format!("adopting the seed's schema: {e}"))?;
    cluster.schema_changed().await;
    let deadline = Instant::now() + AGREEMENT_WAIT;
    while !cluster.schema_agrees() {
        if Instant::now() >= deadline {
            return Err(format!("the schema did not agree with every live peer's within {AGREEMENT_WAIT:?}"));
        }
        glommio::timer::sleep(POLL).await;
    }
    let tables: Vec<std::sync::Arc<TableSchema>> =
        node.tables().into_iter().filter(|t| !is_local_table(&t.name)).collect();
    let mut rfs: Vec<usize> = tables.iter().map(|t| replication_factor(t)).collect();
    rfs.sort_unstable();
    rfs.dedup();
    let local = cluster.local();
    let tokens = node.tokens();
    let view = cluster.view();
    let others: Vec<_> = view.movements().iter().filter(|m| m.id().host != local).cloned().collect();
    let movement = match settings.replaces {
        Some(dead) => Movement::Replace { dead, host: local },
        None => Movement::Join { host: local, tokens: tokens.clone() },
    };
    check_movement(view.ring(), &others, &movement, &rfs).map_err(|e| format!("this node cannot join now: {e}"))?;

    cluster.announce_joining().map_err(|e| e.to_string())?;
    cluster.update_progress(|p| p.phase = Phase::RingDelay);
    // Every live peer (each a coordinator) learns of the join now rather than by chance within
    // the ring delay; the ring delay then covers writes coordinated before they knew.
    let deadline = Instant::now() + AGREEMENT_WAIT;
    while !cluster.gossip_with_live_peers().await {
        if Instant::now() >= deadline {
            return Err(format!("some live peer did not learn of this join within {AGREEMENT_WAIT:?}"));
        }
        glommio::timer::sleep(POLL).await;
    }
    tracing::info!(ring_delay = ?settings.ring_delay, tables = tables.len(), "JOINING: waiting for the ring to settle");
    glommio::timer::sleep(settings.ring_delay).await;

    // The natural ring once every coordinator knows this node joins: the ranges are planned
    // against it.
    let view = cluster.view();
    let mut work: Vec<(std::sync::Arc<TableSchema>, StreamRange)> = Vec::new();
    for table in &tables {
        let rf = replication_factor(table);
        let streams = match settings.replaces {
            Some(dead) => replace::plan(view.ring(), rf, dead, local),
            None => plan(view.ring(), rf, local, &tokens),
        }
        .map_err(|e| format!("planning the streams of table {}: {e}", table.name))?;
        if let Some(lost) = streams.iter().find(|s| s.sources.is_empty()) {
            return Err(format!(
                "range {} of table {} (replication factor {rf}) has no replica but the dead node: its data is gone with it",
                lost.range, table.name
            ));
        }
        work.extend(streams.into_iter().map(|s| (table.clone(), s)));
    }
    let started = Instant::now();
    cluster.update_progress(|p| {
        p.phase = Phase::Streaming;
        p.ranges_total = work.len() as u64;
    });
    tracing::info!(streams = work.len(), "JOINING: streaming");
    let peers = cluster.transport().clone();
    let streamer = Streamer { node, clock, peers: &*peers, throughput: settings.throughput, started, bytes: 0 };
    let mut stream = Stream { cluster, streamer };
    for (table, range) in &work {
        stream.range(table, range).await?;
        cluster.update_progress(|p| {
            p.ranges_done += 1;
            p.seconds = started.elapsed().as_secs_f64();
        });
    }
    BootstrapRecord { state: BootstrapState::Completed, replaces: settings.replaces }
        .store(node.data_dir())
        .map_err(|e| format!("recording the bootstrap done: {e}"))?;
    cluster.announce_normal().map_err(|e| e.to_string())?;
    if let Some(dead) = settings.replaces {
        // Once the live peers know this node NORMAL (which takes the dead node out of their
        // rings), the dead node's state says REMOVED, so that it expires from gossip and the
        // dead node is refused if it comes back.
        cluster.gossip_with_live_peers().await;
        cluster.set_status_of(dead, Status::Removed { expires_at_ms: cluster.gone_expiry_ms() });
    }
    let progress = cluster.progress();
    let seconds = started.elapsed().as_secs_f64();
    cluster.update_progress(|p| {
        p.phase = Phase::Completed;
        p.seconds = seconds;
    });
    tracing::info!(
        streams = work.len(),
        rows = progress.rows(),
        bytes = progress.bytes(),
        seconds,
        mb_per_s = progress.bytes() as f64 / 1e6 / seconds.max(1e-9),
        "bootstrap completed: NORMAL"
    );
    Ok(())
}

/// Streams of one bootstrap.
struct Stream<'a> {
    cluster: &'a Cluster,
    streamer: Streamer<'a>,
}

impl Stream<'_> {
    /// Streams `range` of `table` from its first replica that completes it: the replicas in
    /// the plan's order, live ones first; a replica failing mid-way hands the whole range to
    /// the next (pages already applied are applied again, harmlessly: same versions). Fails
    /// after [`SOURCE_ROUNDS`] rounds over every replica.
    async fn range(&mut self, table: &TableSchema, range: &StreamRange) -> Result<(), String> {
        let mut last = String::new();
        for round in 0..SOURCE_ROUNDS {
            if round > 0 {
                glommio::timer::sleep(ROUND_PAUSE).await;
            }
            let view = self.cluster.view();
            let mut sources: Vec<(HostId, std::net::SocketAddr, bool)> =
                range.sources.iter().filter_map(|h| view.member(*h).map(|m| (*h, m.peer, m.alive))).collect();
            // Stable: the plan's order among the live, then among the down.
            sources.sort_by_key(|(_, _, alive)| !alive);
            for (host, peer, _) in sources {
                match self.pull(table, range, host, peer).await {
                    Ok(()) => return Ok(()),
                    Err(why) => {
                        tracing::warn!(table = %table.name, range = %range.range, %peer, error = %why, "a stream failed; trying another replica");
                        self.cluster.update_progress(|p| p.peer(host, peer.to_string()).failures += 1);
                        last = format!("{peer}: {why}");
                    }
                }
            }
        }
        Err(format!(
            "streaming {} of table {} failed from every replica {SOURCE_ROUNDS} times; last: {last}",
            range.range, table.name
        ))
    }

    /// Copies `peer`'s partitions of `table` in `range` to this node, page by page.
    async fn pull(
        &mut self,
        table: &TableSchema,
        range: &StreamRange,
        host: HostId,
        peer: std::net::SocketAddr,
    ) -> Result<(), String> {
        let (cluster, started) = (self.cluster, self.streamer.started);
        let mut on_page = |page: Page| count_page(cluster, host, peer, page, started);
        let (from, to) = (End::Peer(peer), End::Local);
        self.streamer.copy(table.id, range.range, from, to, STREAM_PAGE_PARTITIONS, &mut on_page).await?;
        self.cluster.update_progress(|p| p.peer(host, peer.to_string()).ranges_done += 1);
        Ok(())
    }
}

//! A node leaving the ring, on the coordinator shard (Cassandra's decommission and
//! removenode). `enigmadb admin decommission`: this node refuses when it may not leave
//! (another range movement overlaps, or fewer nodes than a table's RF would remain),
//! announces LEAVING (coordinators then send the writes of its ranges to the nodes taking
//! them over as well, `ClusterView::pending_replicas`), waits for the ring to settle, pushes
//! every range it replicates to its new owners, replays the hints it stores, records that it
//! left, announces LEFT, and the server stops the process. `enigmadb admin removenode HOST_ID`
//! (run on any live node, for a dead one): LEAVING is announced for the dead node, each of its
//! ranges is copied from a surviving replica to its new owners (through this node), then the
//! dead node is REMOVED everywhere. The plan is `cluster::leave::plan`; nothing here decides
//! placement.

use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::catalog::is_local_table;
use wire::protocol::{display_host_id, AdminResult, ErrorCode, ErrorResponse, LeaveDone};
use wire::schema::TableSchema;

use super::bootstrap::BootstrapSettings;
use super::proxy::replication_factor;
use super::repair::REPAIR_PAGE_PARTITIONS;
use super::stream::{count_page, End, Page, Streamer};
use super::Coordinator;
use crate::cluster::bootstrap::{BootstrapRecord, BootstrapState, BootstrapStateError, Phase};
use crate::cluster::gossip::Status;
use crate::cluster::leave::{check_leave, plan, LeaveStream};
use crate::cluster::service::Cluster;
use crate::cluster::HostId;

/// How long every live peer has to learn of a leave before it fails.
const AGREEMENT_WAIT: Duration = Duration::from_secs(60);
/// How long a decommissioning node waits for its hints to reach their live targets.
const HINTS_WAIT: Duration = Duration::from_secs(60);
/// Rounds over a range's sources (removenode) before it fails.
const SOURCE_ROUNDS: u32 = 3;
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(100);

fn refused(message: String) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Invalid, message)
}

/// The user tables with their replication factors (name, RF).
fn tables(node: &shards::node::Node) -> Vec<Rc<TableSchemaRf>> {
    node.tables()
        .into_iter()
        .filter(|t| !is_local_table(&t.name))
        .map(|t| Rc::new(TableSchemaRf { rf: replication_factor(&t), schema: t }))
        .collect()
}

struct TableSchemaRf {
    schema: std::sync::Arc<TableSchema>,
    rf: usize,
}

/// Whether a range movement this node runs (or its bootstrap) is in progress.
fn busy(cluster: &Cluster) -> Option<&'static str> {
    match cluster.progress().phase {
        _ if cluster.is_bootstrapping() => Some("this node is still bootstrapping"),
        Phase::LeaveRingDelay | Phase::LeaveStreaming | Phase::LeaveHints | Phase::Decommissioned => {
            Some("this node is decommissioning already")
        }
        Phase::Removing => Some("a removenode runs on this node already"),
        _ => None,
    }
}

/// Once `host`'s LEAVING is gossiped: waits (bounded) until every live peer took it, then
/// the ring delay, and plans the streams of every table against the ring then (streams
/// planned and done start at 0 in the progress).
async fn settle_and_plan(
    cluster: &Cluster,
    settings: BootstrapSettings,
    tables: &[Rc<TableSchemaRf>],
    host: HostId,
) -> Result<Vec<(Rc<TableSchemaRf>, LeaveStream)>, String> {
    let deadline = Instant::now() + AGREEMENT_WAIT;
    while !cluster.gossip_with_live_peers().await {
        if Instant::now() >= deadline {
            return Err(format!("some live peer did not learn of the leave within {AGREEMENT_WAIT:?}"));
        }
        glommio::timer::sleep(POLL).await;
    }
    glommio::timer::sleep(settings.ring_delay).await;
    let view = cluster.view();
    let mut work = Vec::new();
    for table in tables {
        let streams = plan(view.ring(), table.rf, host)
            .map_err(|e| format!("planning the streams of table {}: {e}", table.schema.name))?;
        work.extend(streams.into_iter().map(|s| (table.clone(), s)));
    }
    cluster.update_progress(|p| p.ranges_total = work.iter().map(|(_, s)| s.targets.len() as u64).sum());
    Ok(work)
}

/// Refuses the leave of `host` when `check_leave` does (at `phase` LeaveRingDelay: a
/// decommission, whose RF is checked; else a removenode), the error led by `refusal`; else
/// starts this node's progress afresh at `phase`.
fn begin(
    cluster: &Cluster,
    tables: &[Rc<TableSchemaRf>],
    host: HostId,
    phase: Phase,
    settings: BootstrapSettings,
    refusal: &str,
) -> Result<(), ErrorResponse> {
    let view = cluster.view();
    let others: Vec<_> = view.movements().iter().filter(|m| m.id().host != host).cloned().collect();
    let rfs: Vec<(String, usize)> = tables.iter().map(|t| (t.schema.name.clone(), t.rf)).collect();
    let decommission = phase == Phase::LeaveRingDelay;
    check_leave(view.ring(), &others, host, &rfs, decommission).map_err(|e| refused(format!("{refusal}: {e}")))?;
    cluster.update_progress(|p| {
        *p = Default::default();
        p.phase = phase;
        p.throughput_limit = settings.throughput;
    });
    Ok(())
}

/// Records a failed movement in the progress; the error its admin request answers.
fn failed(cluster: &Cluster, phase: Phase, what: &str, why: String) -> ErrorResponse {
    let message = format!("{what} failed: {why}");
    cluster.update_progress(|p| {
        p.phase = phase;
        p.error = Some(why);
    });
    ErrorResponse::new(ErrorCode::Server, message)
}

impl Coordinator {
    fn movement_settings(&self) -> Result<(Rc<Cluster>, BootstrapSettings), ErrorResponse> {
        match &self.role {
            super::Role::CoordinatorShard { cluster, streaming, .. } => Ok((cluster.clone(), *streaming)),
            super::Role::FrontDoor { .. } => Err(refused("range movements run on the coordinator shard".into())),
        }
    }

    /// `admin decommission`: Ok once this node left the ring (the server then stops it).
    pub(super) async fn decommission(&self) -> Result<AdminResult, ErrorResponse> {
        let (cluster, settings) = self.movement_settings()?;
        if let Some(why) = busy(&cluster) {
            return Err(refused(format!("cannot decommission: {why}")));
        }
        let tables = tables(&self.node);
        begin(&cluster, &tables, cluster.local(), Phase::LeaveRingDelay, settings, "cannot decommission")?;
        // Recorded before LEAVING is announced: a node stopped from here on knows at its next
        // start that its decommission did not finish (`recover_interrupted_decommission`).
        let dir = self.node.data_dir();
        let recorded = record_or_completed(dir).and_then(|before| {
            BootstrapRecord { state: BootstrapState::Leaving, ..before }.store(dir).map(|()| before)
        });
        let before = recorded.map_err(|e| failed(&cluster, Phase::LeaveFailed, "decommission", e.to_string()))?;
        cluster.announce_leaving().map_err(|e| refused(e.to_string()))?;
        tracing::info!(ring_delay = ?settings.ring_delay, tables = tables.len(), "LEAVING: decommissioning");
        match self.leave(&cluster, settings, &tables).await {
            Ok(done) => Ok(AdminResult::Decommissioned(done)),
            Err(why) => {
                tracing::error!(error = %why, "decommission failed: NORMAL again");
                if let Err(e) = before.store(dir) {
                    tracing::error!(error = %e, "recording the failed decommission (the next start says it was interrupted)");
                }
                let _ = cluster.announce_normal();
                Err(failed(&cluster, Phase::LeaveFailed, "decommission", why))
            }
        }
    }

    async fn leave(
        &self,
        cluster: &Cluster,
        settings: BootstrapSettings,
        tables: &[Rc<TableSchemaRf>],
    ) -> Result<LeaveDone, String> {
        let local = cluster.local();
        let work = settle_and_plan(cluster, settings, tables, local).await?;
        cluster.update_progress(|p| p.phase = Phase::LeaveStreaming);
        tracing::info!(streams = work.len(), "LEAVING: streaming");
        let mut run = Run::new(self, cluster, settings);
        for (table, stream) in &work {
            for &target in &stream.targets {
                // This node holds every range it replicates: it is the source.
                run.copy(table, stream, &[local], target).await?;
            }
        }
        cluster.update_progress(|p| p.phase = Phase::LeaveHints);
        let hints_left = self.replay_hints().await;
        BootstrapRecord { state: BootstrapState::Decommissioned, replaces: None }
            .store(self.node.data_dir())
            .map_err(|e| format!("recording the decommission: {e}"))?;
        let told = cluster.announce_left().await.map_err(|e| e.to_string())?;
        let done = run.done(local, hints_left);
        cluster.update_progress(|p| {
            p.phase = Phase::Decommissioned;
            p.seconds = done.seconds;
        });
        tracing::info!(
            streams = done.ranges,
            rows = done.rows,
            bytes = done.bytes,
            seconds = done.seconds,
            hints_left,
            every_live_peer_told = told,
            "LEFT the ring"
        );
        Ok(done)
    }

    /// Replays the hints this node stores to their live targets before it leaves (bounded by
    /// [`HINTS_WAIT`]); returns how many are left (for targets that are down: lost with the
    /// node, as in Cassandra without hint transfer; repair restores those replicas).
    async fn replay_hints(&self) -> u64 {
        let Some(hints) = self.hint_store() else { return 0 };
        let deadline = Instant::now() + HINTS_WAIT;
        loop {
            let view = self.proxy.view();
            let counts = hints.counts();
            let live: Vec<HostId> =
                counts.pending.iter().map(|(h, _)| *h).filter(|h| view.member(*h).is_some_and(|m| m.alive)).collect();
            if live.is_empty() || Instant::now() >= deadline {
                return counts.pending_total();
            }
            live.iter().for_each(|h| hints.start_replay(*h));
            glommio::timer::sleep(POLL).await;
        }
    }

    /// `admin removenode HOST_ID`: Ok once the dead node `host` is out of the ring everywhere
    /// and its ranges have their copies again.
    pub(super) async fn removenode(&self, host: HostId) -> Result<AdminResult, ErrorResponse> {
        let (cluster, settings) = self.movement_settings()?;
        let id = display_host_id(host);
        if let Some(why) = busy(&cluster) {
            return Err(refused(format!("cannot remove {id}: {why}")));
        }
        let view = cluster.view();
        if host == cluster.local() {
            return Err(refused(format!("cannot remove {id}: it is this node; use decommission")));
        }
        let Some(member) = view.member(host) else {
            return Err(refused(format!("cannot remove {id}: no such node in the ring")));
        };
        if member.alive {
            return Err(refused(format!(
                "cannot remove {id}: the node at {} is alive; decommission it instead (removenode is for dead nodes)",
                member.client
            )));
        }
        let tables = tables(&self.node);
        begin(&cluster, &tables, host, Phase::Removing, settings, &format!("cannot remove {id}"))?;
        cluster.set_status_of(host, Status::Leaving);
        tracing::info!(host = %id, "removenode: the dead node is LEAVING; streaming its ranges");
        match self.remove(&cluster, settings, &tables, host).await {
            Ok(done) => Ok(AdminResult::Removed(done)),
            Err(why) => {
                tracing::error!(host = %id, error = %why, "removenode failed: the node stays in the ring");
                cluster.set_status_of(host, Status::Normal);
                Err(failed(&cluster, Phase::RemoveFailed, &format!("removenode {id}"), why))
            }
        }
    }

    async fn remove(
        &self,
        cluster: &Cluster,
        settings: BootstrapSettings,
        tables: &[Rc<TableSchemaRf>],
        host: HostId,
    ) -> Result<LeaveDone, String> {
        let work = settle_and_plan(cluster, settings, tables, host).await?;
        let mut run = Run::new(self, cluster, settings);
        for (table, stream) in &work {
            if stream.sources.is_empty() {
                // RF 1: the dead node held the only copy.
                tracing::warn!(table = %table.schema.name, range = %stream.range, "no surviving replica: this range's data is lost");
                cluster.update_progress(|p| p.ranges_done += stream.targets.len() as u64);
                continue;
            }
            for &target in &stream.targets {
                run.copy(table, stream, &stream.sources, target).await?;
            }
        }
        cluster.set_status_of(host, Status::Removed { expires_at_ms: cluster.gone_expiry_ms() });
        let told = cluster.gossip_with_live_peers().await;
        let done = run.done(host, 0);
        cluster.update_progress(|p| {
            p.phase = Phase::Removed;
            p.seconds = done.seconds;
        });
        tracing::info!(
            host = %display_host_id(host),
            streams = done.ranges,
            rows = done.rows,
            bytes = done.bytes,
            seconds = done.seconds,
            every_live_peer_told = told,
            "removenode completed: the node is REMOVED from the ring"
        );
        Ok(done)
    }
}

/// What `bootstrap.state` in `dir` records, or "completed" for a directory without one (a
/// node that never bootstrapped starts NORMAL either way).
fn record_or_completed(dir: &std::path::Path) -> Result<BootstrapRecord, BootstrapStateError> {
    Ok(BootstrapRecord::load(dir)?.unwrap_or(BootstrapRecord { state: BootstrapState::Completed, replaces: None }))
}

/// At the start of a node (its cluster service running): when `bootstrap.state` says a
/// decommission was running, the node was stopped while LEAVING (killed, or the machine went
/// down). Nothing left it: its ranges are still its own, and its new gossip generation
/// announces it NORMAL, which ends the leave on every peer (the nodes that were to take its
/// ranges keep what they got; `admin cleanup` drops it). This records it NORMAL again, says
/// so in the log and in `admin netstats`, and `admin decommission` runs it again
/// (Cassandra's node also comes back NORMAL from an interrupted decommission).
pub fn recover_interrupted_decommission(node: &shards::node::Node, cluster: &Cluster) {
    let dir = node.data_dir();
    match BootstrapRecord::load(dir) {
        Ok(Some(record)) if record.state == BootstrapState::Leaving => {
            tracing::warn!(
                "this node was stopped during its decommission (it was LEAVING): it is NORMAL again and keeps its \
                 ranges; run `enigmadb admin decommission` again to take it out of the ring"
            );
            if let Err(e) = (BootstrapRecord { state: BootstrapState::Completed, ..record }).store(dir) {
                tracing::error!(error = %e, "recording that the interrupted decommission ended");
            }
            cluster.update_progress(|p| p.phase = Phase::LeaveInterrupted);
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "reading the bootstrap state"),
    }
}

/// The streams of one decommission or removenode, and their totals.
struct Run<'a> {
    cluster: &'a Cluster,
    streamer: Streamer<'a>,
    done: LeaveDone,
}

impl<'a> Run<'a> {
    fn new(coordinator: &'a Coordinator, cluster: &'a Cluster, settings: BootstrapSettings) -> Run<'a> {
        let streamer = Streamer {
            node: &coordinator.node,
            clock: coordinator.proxy.clock(),
            peers: &**cluster.transport(),
            throughput: settings.throughput,
            started: Instant::now(),
            bytes: 0,
        };
        let done = LeaveDone { host_id: 0, ranges: 0, partitions: 0, rows: 0, bytes: 0, seconds: 0.0, hints_left: 0 };
        Run { cluster, streamer, done }
    }

    fn end(&self, host: HostId) -> Option<(End, std::net::SocketAddr, bool)> {
        if host == self.cluster.local() {
            return Some((End::Local, self.cluster.peer_addr(), true));
        }
        self.cluster.view().member(host).map(|m| (End::Peer(m.peer), m.peer, m.alive))
    }

    /// Copies `stream`'s range of `table` to `target` from the first of `sources` that
    /// completes it (live ones first; a source failing mid-way hands the whole range to the
    /// next), [`SOURCE_ROUNDS`] rounds at most.
    async fn copy(
        &mut self,
        table: &TableSchemaRf,
        stream: &LeaveStream,
        sources: &[HostId],
        target: HostId,
    ) -> Result<(), String> {
        let Some((to, target_addr, _)) = self.end(target) else {
            return Err(format!("the new owner {} is not in the cluster view", display_host_id(target)));
        };
        let mut last = String::new();
        for _ in 0..SOURCE_ROUNDS {
            let mut ends: Vec<(End, bool)> =
                sources.iter().filter_map(|h| self.end(*h)).map(|(e, _, alive)| (e, alive)).collect();
            ends.sort_by_key(|(_, alive)| !alive);
            for (from, _) in ends {
                let (cluster, started) = (self.cluster, self.streamer.started);
                let done = &mut self.done;
                let mut on_page = |page: Page| {
                    done.partitions += page.partitions;
                    done.rows += page.rows;
                    done.bytes += page.bytes;
                    count_page(cluster, target, target_addr, page, started);
                };
                let copied = self
                    .streamer
                    .copy(table.schema.id, stream.range, from, to, REPAIR_PAGE_PARTITIONS, &mut on_page)
                    .await;
                match copied {
                    Ok(()) => {
                        self.done.ranges += 1;
                        self.cluster.update_progress(|p| {
                            p.ranges_done += 1;
                            p.peer(target, target_addr.to_string()).ranges_done += 1;
                        });
                        return Ok(());
                    }
                    Err(why) => {
                        tracing::warn!(table = %table.schema.name, range = %stream.range, to = %target_addr, error = %why, "a stream failed; trying again");
                        self.cluster.update_progress(|p| p.peer(target, target_addr.to_string()).failures += 1);
                        last = why;
                    }
                }
            }
            glommio::timer::sleep(Duration::from_secs(1)).await;
        }
        Err(format!(
            "streaming {} of table {} to {target_addr} failed {SOURCE_ROUNDS} times; last: {last}",
            stream.range, table.schema.name
        ))
    }

    fn done(&self, host: HostId, hints_left: u64) -> LeaveDone {
        LeaveDone {
            host_id: host,
            seconds: self.streamer.started.elapsed().as_secs_f64(),
            hints_left,
            ..self.done.clone()
        }
    }
}

//! The storage proxy of a coordinator (ScyllaDB's `storage_proxy`): takes a write or a
//! partition read at a consistency level, finds the token's replicas in the cluster view,
//! sends to the live ones (this node through `Node`, others through the peer transport) and
//! answers once the level is met, with UNAVAILABLE / WRITE_TIMEOUT / READ_TIMEOUT when it
//! cannot be. It decides nothing about consistency itself (`cluster::replication` does) and
//! never blocks the shard: every wait is bounded by a timeout.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::cell::{Timestamp, MIN_WRITE_TIMESTAMP};
use shards::hlc::Hlc;
use shards::key::{ClusteringKey, PartitionKey};
use shards::mutation::{PartitionUpdate, Write};
use shards::node::Node;
use shards::read::now_secs;
use shards::row::{limited_cut, ClusteringSlice, Partition, SliceLimit};
use wire::protocol::{Consistency, ErrorCode, ErrorResponse};
use wire::schema::{ReadRepair, TableId, TableSchema};

use super::{node_error, trace};
use crate::cluster::messages::{digest, Digest, ReadRequest, ReadResult, MAX_READ_ANSWER_BYTES};
use crate::cluster::replication::{
    required_of_fewer, ReadResolver, ReadStep, Unavailable, WriteProgress, WriteTracker,
};
use crate::cluster::transport::{codes, PeerAnswer, PeerError, PeerRequest, Peers};
use crate::cluster::verbs::MutateBody;
use crate::cluster::view::{ClusterView, Replica};
use crate::cluster::HostId;
use crate::hints::HintStore;

/// How long a coordinator waits for a write's replicas (Cassandra's `write_request_timeout`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a coordinator waits for a read's replicas (Cassandra's `read_request_timeout`).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a TRUNCATE waits for every node (Cassandra's truncate_request_timeout): each node
/// flushes its MemTables first.
pub const TRUNCATE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub write: Duration,
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { write: DEFAULT_WRITE_TIMEOUT, read: DEFAULT_READ_TIMEOUT }
    }
}

/// Where a replica's missed write goes (hinted handoff): the hint store on the coordinator
/// shard; the other shards hand their hints to it.
pub trait HintSink {
    /// Keeps `mutate` (a MUTATE body) for `target`, which the view holds up (`target_alive`:
    /// its send failed) or down.
    fn store(&self, target: HostId, target_alive: bool, mutate: &Rc<Vec<u8>>);
}

impl HintSink for HintStore {
    fn store(&self, target: HostId, target_alive: bool, mutate: &Rc<Vec<u8>>) {
        HintStore::store(self, target, target_alive, mutate)
    }
}

/// The writes of one request that go to the same replicas.
#[derive(Debug)]
pub struct WriteGroup {
    replicas: Vec<Replica>,
    required: usize,
    updates: Vec<PartitionUpdate>,
}

impl WriteGroup {
    pub fn updates(&self) -> &[PartitionUpdate] {
        &self.updates
    }
}

pub struct StorageProxy {
    node: Node,
    /// This node's picture of the cluster; the cluster service swaps in a new one as gossip
    /// learns, a request keeps the one it started with.
    view: Rc<RefCell<Rc<ClusterView>>>,
    peers: Rc<dyn Peers>,
    /// The coordinator's clock: stamps every write it coordinates, observes the timestamps
    /// clients give and peers send.
    clock: Rc<RefCell<Hlc>>,
    timeouts: Timeouts,
    /// Keeps the writes replicas missed (hinted handoff); without it they are only counted
    /// as failed replica writes.
    hints: Option<Rc<dyn HintSink>>,
}

impl StorageProxy {
    /// A proxy that reads the view requests start with from `view` (which the cluster service
    /// or the coordinator shard's messages replace), reaches other nodes through `peers` and
    /// keeps the writes replicas miss in `hints`.
    pub fn new(
        node: Node,
        view: Rc<RefCell<Rc<ClusterView>>>,
        peers: Rc<dyn Peers>,
        hints: Option<Rc<dyn HintSink>>,
        timeouts: Timeouts,
    ) -> StorageProxy {
        let mut clock = Hlc::default();
        // Above every stored write, so a new write wins even if the wall clock went back
        // across the restart.
        if let Some(stored) = node.max_stored_timestamp() {
            if clock.advance_past(stored) {
                tracing::warn!(
                    stored,
                    "stored timestamps are ahead of the wall clock: it went back; new writes are stamped above them"
                );
            }
        }
        StorageProxy { node, view, peers, clock: Rc::new(RefCell::new(clock)), timeouts, hints }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The view requests start with from now on.
    pub fn view(&self) -> Rc<ClusterView> {
        self.view.borrow().clone()
    }

    /// Where a new view is swapped in.
    pub fn view_cell(&self) -> Rc<RefCell<Rc<ClusterView>>> {
        self.view.clone()
    }

    pub fn hints(&self) -> Option<Rc<dyn HintSink>> {
        self.hints.clone()
    }

    /// The coordinator's clock (the replica side observes incoming timestamps with it too).
    pub fn clock(&self) -> &Rc<RefCell<Hlc>> {
        &self.clock
    }

    /// The timestamp of a write: the client's (which the clock observes, refusing one too far
    /// in the future) or the clock's next.
    pub fn timestamp(&self, client: Option<Timestamp>) -> Result<Timestamp, ErrorResponse> {
        let mut clock = self.clock.borrow_mut();
        match client {
            Some(ts) if ts < MIN_WRITE_TIMESTAMP => Err(ErrorResponse::new(
                ErrorCode::Invalid,
                format!("timestamp {ts} is out of range: a write timestamp is microseconds since the Unix epoch, {MIN_WRITE_TIMESTAMP} or more"),
            )),
            Some(ts) => {
                clock.observe(ts).map(|()| ts).map_err(|e| ErrorResponse::new(ErrorCode::Invalid, e.to_string()))
            }
            None => clock.now().map_err(|e| ErrorResponse::new(ErrorCode::Server, e.to_string())),
        }
    }

    /// Stamps `writes` with `ts` and groups them by replica set, or answers UNAVAILABLE (before
    /// anything is sent) when a write's table cannot reach `consistency` with the live replicas.
    pub fn place(
        &self,
        writes: Vec<Write>,
        ts: Timestamp,
        consistency: Consistency,
    ) -> Result<Vec<WriteGroup>, ErrorResponse> {
        let view = self.view();
        let now = now_secs();
        let mut groups: Vec<WriteGroup> = Vec::with_capacity(1);
        let mut schema: Option<std::sync::Arc<TableSchema>> = None;
        for write in writes {
            // Writes of one statement share a table: look each run of one table up once.
            let table = match &schema {
                Some(s) if s.id == write.table => s.clone(),
                _ => {
                    let s = self.node.table_by_id(write.table).ok_or_else(|| {
                        ErrorResponse::new(
                            ErrorCode::Invalid,
                            format!("table id {} was dropped while planning", write.table),
                        )
                    })?;
                    schema = Some(s.clone());
                    s
                }
            };
            let rf = replication_factor(&table);
            let token = write.key.token();
            let mut replicas = view.replicas(token, rf);
            let pending = view.pending_replicas(token, rf);
            let required = required_of_fewer(consistency, rf, fewest_replicas(&table, rf), &replicas, &pending)
                .map_err(|u| unavailable(consistency, &table, rf, u))?;
            replicas.extend(pending);
            let update = write.stamp(ts, now);
            match groups.iter_mut().find(|g| same_nodes(&g.replicas, &replicas)) {
                Some(group) => {
                    group.required = group.required.max(required);
                    group.updates.push(update);
                }
                None => groups.push(WriteGroup { replicas, required, updates: vec![update] }),
            }
        }
        Ok(groups)
    }

    /// Sends every group to its live replicas and answers once each group met its level.
    pub async fn replicate(&self, groups: Vec<WriteGroup>, consistency: Consistency) -> Result<(), ErrorResponse> {
        self.replicate_with(groups, consistency, false).await
    }

    /// As [`replicate`](Self::replicate); with `here_too`, a group this node replicates is
    /// done only once this node applied it as well (whichever replicas met the level), so that
    /// a read at ONE here right after sees the write (the auth statements: a role created
    /// then granted on one connection).
    pub async fn replicate_with(
        &self,
        mut groups: Vec<WriteGroup>,
        consistency: Consistency,
        here_too: bool,
    ) -> Result<(), ErrorResponse> {
        // This node alone holds every write (a single node, or RF 1 on the local node): apply
        // in place, as the node's own write path does, with no message, task or timer.
        if groups.iter().all(|g| matches!(g.replicas[..], [Replica { local: true, .. }])) {
            let updates = match groups.len() {
                1 => groups.pop().map(|g| g.updates).unwrap_or_default(),
                _ => groups.into_iter().flat_map(|g| g.updates).collect(),
            };
            trace::event(|| {
                format!("Applying {} update(s) on this node, the only replica (WAL, MemTable)", updates.len())
            });
            self.node.apply_stamped(updates).await.map_err(node_error)?;
            trace::event(|| "Applied on this node".into());
            return Ok(());
        }
        let timeout = self.timeouts.write;
        let deadline = Instant::now() + timeout;
        let sends: usize = groups.iter().map(|g| g.replicas.iter().filter(|r| r.alive).count()).sum();
        trace::event(|| {
            format!("Sending {} group(s) of updates to {sends} live replica(s) at {consistency}", groups.len())
        });
        // Every send answers once: the channel never holds more.
        let (tx, rx) = flume::bounded::<(usize, Replica, Result<(), String>)>(sends);
        let mut trackers = Vec::with_capacity(groups.len());
        // Per group: still waiting for this node's own apply (`here_too`).
        let mut here = Vec::with_capacity(groups.len());
        let hints = self.hints();
        for (index, group) in groups.into_iter().enumerate() {
            let live: Vec<Replica> = group.replicas.iter().copied().filter(|r| r.alive).collect();
            trackers.push(WriteTracker::new(group.required, live.len()));
            here.push(here_too && live.iter().any(|r| r.local));
            // Other nodes get the MUTATE body; so do the hints of the replicas that miss it.
            let hinted = hints.is_some() && live.len() < group.replicas.len();
            let body = match hinted || live.iter().any(|r| !r.local) {
                true => MutateBody::encode(&group.updates),
                false => MutateBody::from_encoded(Rc::default()),
            };
            if let Some(hints) = hints.as_ref().filter(|_| hinted) {
                // A replica the view holds down (never this node) misses the write for sure.
                for down in group.replicas.iter().filter(|r| !r.alive) {
                    trace::event(|| format!("Hint kept for {}, down", down.peer));
                    hints.store(down.host, false, body.bytes());
                }
            }
            let mut updates = Some(group.updates);
            for replica in live {
                let tx = tx.clone();
                trace::event(|| format!("Sending the mutation to {}", name(&replica)));
                if replica.local {
                    let node = self.node.clone();
                    let updates = updates.take().unwrap_or_default();
                    glommio::spawn_local(async move {
                        let result = node.apply_stamped(updates).await.map_err(|e| format!("this node: {e}"));
                        let _ = tx.send_async((index, replica, result)).await;
                    })
                    .detach();
                } else {
                    let peers = self.peers();
                    let (body, hints) = (body.clone(), hints.clone());
                    glommio::spawn_local(async move {
                        let result = match peers
                            .call_shard(replica.peer, replica.shard, PeerRequest::Mutate(body.clone()), timeout)
                            .await
                        {
                            Ok(_) => Ok(()),
                            Err(e) => Err(e.to_string()),
                        };
                        if let (Err(_), Some(hints)) = (&result, &hints) {
                            // This replica's outcome is known: it missed the write.
                            hints.store(replica.host, true, body.bytes());
                        }
                        let _ = tx.send_async((index, replica, result)).await;
                    })
                    .detach();
                }
            }
        }
        drop(tx);
        let mut first_failure: Option<String> = None;
        loop {
            if trackers.iter().all(|t| t.progress() == WriteProgress::Met) && !here.contains(&true) {
                trace::event(|| format!("Consistency level {consistency} met"));
                return Ok(());
            }
            if let Some(failed) = trackers.iter().find(|t| t.progress() == WriteProgress::Failed) {
                let why = first_failure.unwrap_or_default();
                return Err(write_timeout(consistency, failed, &format!("replicas failed the write ({why})")));
            }
            match recv_until(&rx, deadline).await {
                Some((index, replica, Ok(()))) => {
                    trace::event(|| format!("{} acknowledged", name(&replica)));
                    trackers[index].ack();
                    if replica.local {
                        here[index] = false;
                    }
                }
                Some((index, replica, Err(why))) => {
                    trace::event(|| format!("{} failed the write: {why}", name(&replica)));
                    tracing::debug!(%why, "a replica failed a write");
                    if replica.local && here[index] {
                        return Err(write_timeout(
                            consistency,
                            &trackers[index],
                            &format!("this node failed it ({why})"),
                        ));
                    }
                    first_failure.get_or_insert(why);
                    trackers[index].fail();
                }
                None => {
                    trace::event(|| format!("No answer within {timeout:?}"));
                    let mut waiting = trackers.iter().zip(&here);
                    let slowest = waiting.find(|(t, here)| t.progress() != WriteProgress::Met || **here);
                    let Some((slowest, _)) = slowest else { return Ok(()) };
                    return Err(write_timeout(consistency, slowest, &format!("no answer within {timeout:?}")));
                }
            }
        }
    }

    /// The stored versions of one partition's rows in `slice`, read at `consistency`: data
    /// from one replica (this node when it is one), digests from as many others as the level
    /// needs; on a mismatch, data from all of them, merged cell by cell (last write wins). A
    /// replica that fails is replaced by another live one. Stale replicas get the merged
    /// result as the table's `read_repair` option says ([`StorageProxy::read_repair`]).
    ///
    /// With a `limit`, each replica reads the slice from its start up to the `limit.rows`-th
    /// live row or the row that brings it to `limit.bytes` stored bytes (a page; its digest
    /// covers that same limited slice; the bytes at most `MAX_READ_ANSWER_BYTES`, so no answer
    /// outgrows a peer frame), and the answer says where it stopped ([`SliceRead::cut`]): the
    /// caller reads on after that key for more rows.
    pub async fn read(
        &self,
        schema: &TableSchema,
        key: PartitionKey,
        slice: ClusteringSlice,
        consistency: Consistency,
        limit: Option<SliceLimit>,
    ) -> Result<SliceRead, ErrorResponse> {
        // The limit and the bound travel as u32s (READ): a limit that does not fit is just as
        // many rows; the bound is lowered to what a replica answers at most.
        let wire_limit = limit.map(|l| u32::try_from(l.rows.max(1)).unwrap_or(u32::MAX));
        let max_bytes = limit.filter(|l| l.bytes != usize::MAX).map(|l| l.bytes.clamp(1, MAX_READ_ANSWER_BYTES) as u32);
        let request = ReadRequest { table: schema.id, key, slice, digest_only: false, limit: wire_limit, max_bytes };
        let limit = request.slice_limit();
        let view = self.view();
        let rf = replication_factor(schema);
        let replicas = view.replicas(request.key.token(), rf);
        let required = required_of_fewer(consistency, rf, fewest_replicas(schema, rf), &replicas, &[])
            .map_err(|u| unavailable(consistency, schema, rf, u))?;
        // Live replicas, this node first: its data costs no message.
        let mut candidates: Vec<Replica> = replicas.into_iter().filter(|r| r.alive).collect();
        candidates.sort_by_key(|r| !r.local);
        // `required_of_fewer` vouched for at least `required` (>= 1) live candidates.
        if required == 1 && candidates[0].local {
            trace::event(|| format!("Reading the partition on this node, a replica ({consistency}: no other asked)"));
            let read = self.node.read_partition_limited(schema.id, request.key, request.slice, limit);
            let partition = read.await.map_err(node_error)?;
            trace::event(|| format!("Read {} row(s) on this node", rows(partition.as_ref())));
            let cut = limited_cut(partition.as_ref(), limit);
            return Ok(SliceRead { partition, cut });
        }
        let timeout = self.timeouts.read;
        let deadline = Instant::now() + timeout;
        // Each candidate is asked at most twice (a digest or data, then data after a mismatch).
        let (tx, rx) = flume::bounded::<ReadAnswer>(2 * candidates.len());
        let send = |index: usize, digest_only: bool| -> Result<(), ErrorResponse> {
            let what = if digest_only { "a digest" } else { "data" };
            trace::event(|| format!("Asking {} for {what}", name(&candidates[index])));
            self.send_read(&candidates[index], index, &request, digest_only, timeout, tx.clone())
        };
        for index in 0..required {
            send(index, index > 0)?;
        }
        let mut next_spare = required;
        let mut resolver = ReadResolver::with_limit(required, limit);
        let mut fetching = false;
        loop {
            let step = match recv_until(&rx, deadline).await {
                None => {
                    trace::event(|| format!("No answer within {timeout:?}"));
                    let why = format!("no answer within {timeout:?}");
                    return Err(read_timeout(
                        consistency,
                        resolver.received(),
                        required,
                        resolver.data_present(),
                        &why,
                    ));
                }
                Some((index, _, Ok(ReadResult::Data(partition)))) => {
                    trace::event(|| {
                        format!("Data from {}: {} row(s)", name(&candidates[index]), rows(partition.as_ref()))
                    });
                    // One replica's data needs no digest: nothing to compare it with.
                    let d = if required > 1 { digest(partition.as_ref()) } else { Digest(0) };
                    resolver.on_data(index, partition, d)
                }
                Some((index, _, Ok(ReadResult::Digest(d)))) => {
                    trace::event(|| format!("Digest from {}", name(&candidates[index])));
                    resolver.on_digest(index, d)
                }
                Some((index, digest_only, Err(why))) => {
                    trace::event(|| format!("{} failed the read: {why}", name(&candidates[index])));
                    tracing::debug!(%why, "a replica failed a read");
                    if next_spare == candidates.len() {
                        let (received, data) = (resolver.received(), resolver.data_present());
                        return Err(read_timeout(
                            consistency,
                            received,
                            required,
                            data,
                            &format!("replicas failed ({why})"),
                        ));
                    }
                    send(next_spare, digest_only)?;
                    if fetching {
                        resolver.replace_fetch(index, next_spare);
                    }
                    next_spare += 1;
                    ReadStep::Wait
                }
            };
            match step {
                ReadStep::Wait => {}
                ReadStep::FetchData(replicas) => {
                    trace::event(|| format!("Digest mismatch: asking {} replica(s) for data", replicas.len()));
                    fetching = true;
                    for index in replicas {
                        send(index, false)?;
                    }
                }
                ReadStep::Resolved(resolved) => {
                    if let Some(ts) = resolved.partition.as_ref().and_then(Partition::max_timestamp) {
                        // Timestamps from peers advance the clock; one too far ahead is not
                        // trusted for that (the write it belongs to is still returned).
                        let _ = self.clock.borrow_mut().observe(ts);
                    }
                    trace::event(|| {
                        let stale = resolved.stale.len();
                        format!(
                            "Resolved: {} row(s); {stale} stale replica(s) to repair",
                            rows(resolved.partition.as_ref())
                        )
                    });
                    if let Some(partition) = &resolved.partition {
                        let update = repair_update(request.table, &request.key, partition);
                        let repairs = resolved.stale.iter().map(|&i| (candidates[i], vec![update.clone()])).collect();
                        if let Err(why) = self.read_repair(schema.options.read_repair, repairs).await {
                            let (received, data) = (resolver.received(), resolver.data_present());
                            return Err(read_timeout(consistency, received, required, data, &why));
                        }
                    }
                    return Ok(SliceRead { partition: resolved.partition, cut: resolved.cut });
                }
            }
        }
    }

    /// Read repair: writes the merged versions a read found to the replicas that lacked part
    /// of them (`repairs`: each stale replica with its partitions), as the table's mode says.
    /// BLOCKING waits until every stale replica acknowledged, at most the write timeout, and
    /// is an Err (why) otherwise, so that a later read at the same level cannot see older data;
    /// BACKGROUND sends and returns; NONE sends nothing.
    pub(super) async fn read_repair(
        &self,
        mode: ReadRepair,
        repairs: Vec<(Replica, Vec<PartitionUpdate>)>,
    ) -> Result<(), String> {
        if repairs.is_empty() || mode == ReadRepair::None {
            return Ok(());
        }
        let timeout = self.timeouts.write;
        let deadline = Instant::now() + timeout;
        let sends = repairs.len();
        // One answer per stale replica: the channel never holds more.
        let (tx, rx) = flume::bounded::<Result<(), String>>(sends);
        for (replica, updates) in repairs {
            let write = self.write_to(replica, updates, timeout);
            let tx = tx.clone();
            glommio::spawn_local(async move {
                let result = write.await;
                if let Err(why) = &result {
                    tracing::debug!(%why, "read repair write failed");
                }
                let _ = tx.send_async(result).await;
            })
            .detach();
        }
        drop(tx);
        if mode == ReadRepair::Background {
            return Ok(());
        }
        for _ in 0..sends {
            match recv_until(&rx, deadline).await {
                Some(Ok(())) => {}
                Some(Err(why)) => return Err(format!("read repair of a stale replica failed: {why}")),
                None => return Err(format!("read repair not acknowledged within {timeout:?}")),
            }
        }
        Ok(())
    }

    /// Applies stamped updates on one replica: this node in place, another through MUTATE.
    fn write_to(&self, replica: Replica, updates: Vec<PartitionUpdate>, timeout: Duration) -> WriteCall {
        if replica.local {
            let node = self.node.clone();
            return Box::pin(async move { node.apply_stamped(updates).await.map_err(|e| format!("this node: {e}")) });
        }
        let peers = self.peers();
        Box::pin(async move {
            match peers
                .call_shard(replica.peer, replica.shard, PeerRequest::Mutate(MutateBody::encode(&updates)), timeout)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn send_read(
        &self,
        replica: &Replica,
        index: usize,
        request: &ReadRequest,
        digest_only: bool,
        timeout: Duration,
        tx: flume::Sender<ReadAnswer>,
    ) -> Result<(), ErrorResponse> {
        if replica.local {
            let node = self.node.clone();
            let (table, key, slice) = (request.table, request.key.clone(), request.slice.clone());
            let limit = request.slice_limit();
            glommio::spawn_local(async move {
                // As on a remote replica: an empty partition reads as none (one digest for both).
                let read = node.read_partition_limited(table, key, slice, limit).await;
                let result = match read.map(|p| p.filter(|p| !p.is_empty())) {
                    Ok(p) if digest_only => Ok(ReadResult::Digest(digest(p.as_ref()))),
                    Ok(p) => Ok(ReadResult::Data(p)),
                    Err(e) => Err(format!("this node: {e}")),
                };
                let _ = tx.send_async((index, digest_only, result)).await;
            })
            .detach();
            return Ok(());
        }
        let peers = self.peers();
        let read = ReadRequest { digest_only, ..request.clone() };
        let (peer, shard) = (replica.peer, replica.shard);
        let deadline = Instant::now() + timeout;
        glommio::spawn_local(async move {
            let mut read = read;
            let mut answer = peers.call_shard(peer, shard, PeerRequest::Read(read.clone()), timeout).await;
            while matches!(&answer, Err(PeerError::Remote { code, .. }) if *code == codes::PROTOCOL) {
                // A node of an earlier release refuses a flag it does not know: the byte bound
                // (the release before it), then the row limit (the one before that). It is
                // asked again without it, as it always was. Its answer is a longer slice, which
                // the resolver cuts like any other (`replication::resolve_limited`).
                if read.max_bytes.take().is_none() && read.limit.take().is_none() {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                answer = peers.call_shard(peer, shard, PeerRequest::Read(read.clone()), left).await;
            }
            let result = match answer {
                Ok(PeerAnswer::ReadResult(result)) => Ok(result),
                Ok(_) => unreachable!("a call answers with the request's kind"),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send_async((index, digest_only, result)).await;
        })
        .detach();
        Ok(())
    }

    /// The read and write timeouts requests start with.
    pub(super) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub(super) fn peers(&self) -> Rc<dyn Peers> {
        self.peers.clone()
    }

    /// TRUNCATE on every node, as Cassandra does it: every member must be up (UNAVAILABLE at
    /// ALL otherwise, before any node truncates); this node truncates its copy, then every
    /// other node its own (rows written before it got the request); the answer waits for all
    /// of them (WRITE_TIMEOUT at ALL after [`TRUNCATE_TIMEOUT`], or when one fails: some nodes
    /// may then have truncated, and the statement can be run again).
    pub async fn truncate(&self, schema: &TableSchema) -> Result<(), ErrorResponse> {
        let view = self.view();
        let members = view.members();
        let alive = members.iter().filter(|m| m.alive).count();
        if alive < members.len() {
            return Err(ErrorResponse::new(
                ErrorCode::Unavailable {
                    consistency: Consistency::All,
                    required: members.len() as u32,
                    alive: alive as u32,
                },
                format!(
                    "Cannot truncate table {}: every node must be up ({} nodes, {alive} up)",
                    schema.name,
                    members.len()
                ),
            ));
        }
        // This node first: its failure is the statement's, typed as a local one would be.
        trace::event(|| "Truncating this node's copy".into());
        self.node.truncate(&schema.name).await.map_err(node_error)?;
        let mut calls = Vec::new();
        for member in members.iter().filter(|m| m.host != view.local()) {
            let peers = self.peers();
            let (peer, table) = (member.peer, schema.id);
            trace::event(|| format!("Sending TRUNCATE to {peer}"));
            calls.push(glommio::spawn_local(async move {
                match peers.call(peer, PeerRequest::Truncate(table), TRUNCATE_TIMEOUT).await {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            }));
        }
        let mut failures = Vec::new();
        for call in calls {
            failures.extend(call.await.err());
        }
        let required = members.len() as u32;
        match failures.first() {
            None => Ok(()),
            Some(why) => Err(ErrorResponse::new(
                ErrorCode::WriteTimeout {
                    consistency: Consistency::All,
                    received: required - failures.len() as u32,
                    required,
                },
                format!("TRUNCATE of {} failed on {} of {required} nodes: {why}", schema.name, failures.len()),
            )),
        }
    }

    /// UNAVAILABLE for a token scan answered from this node, the same way a partition read
    /// would be for a token this node and the live members hold.
    pub fn check_scan(&self, schema: &TableSchema, consistency: Consistency) -> Result<(), ErrorResponse> {
        let view = self.view();
        let rf = replication_factor(schema);
        let required = consistency.block_for(rf);
        let alive = view.live_members().min(rf);
        if view.members().len() < fewest_replicas(schema, rf) || alive < required {
            return Err(unavailable(consistency, schema, rf, Unavailable { required, alive }));
        }
        Ok(())
    }
}

/// What [`StorageProxy::read`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceRead {
    /// The stored versions read, merged (None: nothing stored).
    pub partition: Option<Partition>,
    /// In a read with a row limit: the slice was read up to this key only (the last row
    /// returned, or past it when replicas stopped at different rows); rows after it may exist.
    /// None when the whole slice was read.
    pub cut: Option<ClusteringKey>,
}

/// (candidate index, whether only a digest was asked, the answer).
type ReadAnswer = (usize, bool, Result<ReadResult, String>);

/// A write to one replica on its way: Err says why it failed.
type WriteCall = Pin<Box<dyn Future<Output = Result<(), String>>>>;

/// What read repair writes to a stale replica: the merged version of a partition, as stored.
pub(super) fn repair_update(table: TableId, key: &PartitionKey, merged: &Partition) -> PartitionUpdate {
    PartitionUpdate {
        table,
        key: key.clone(),
        deletion: merged.deletion,
        rows: merged.rows.iter().map(|(k, r)| (k.clone(), r.clone())).collect(),
    }
}

/// The next message, or None once `deadline` passed.
pub(super) async fn recv_until<T>(rx: &flume::Receiver<T>, deadline: Instant) -> Option<T> {
    let left = deadline.saturating_duration_since(Instant::now());
    futures_lite::future::or(async { rx.recv_async().await.ok() }, async {
        glommio::timer::sleep(left).await;
        None
    })
    .await
}

pub(super) fn replication_factor(schema: &TableSchema) -> usize {
    usize::from(schema.options.replication_factor.max(1))
}

/// The natural replicas a request on `schema` needs there to be (`replication::required_of_fewer`):
/// its `rf` for a client table (a cluster with fewer nodes than a table's rf refuses it, never
/// under-replicates silently); one for the auth tables, which every node of a cluster smaller
/// than `auth_replication_factor` holds in full (the first node of a cluster alone).
pub(super) fn fewest_replicas(schema: &TableSchema, rf: usize) -> usize {
    match crate::auth::tables::is_auth_table(&schema.name) {
        true => 1,
        false => rf,
    }
}

/// The same nodes, in any order.
pub(super) fn same_nodes(a: &[Replica], b: &[Replica]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| y.host == x.host))
}

pub(super) fn unavailable(consistency: Consistency, schema: &TableSchema, rf: usize, u: Unavailable) -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::Unavailable { consistency, required: u.required as u32, alive: u.alive as u32 },
        format!(
            "Cannot achieve consistency level {consistency} for table {} (replication_factor {rf}): \
             {} replicas required, {} alive",
            schema.name, u.required, u.alive
        ),
    )
}

fn write_timeout(consistency: Consistency, tracker: &WriteTracker, why: &str) -> ErrorResponse {
    let (received, required) = (tracker.received() as u32, tracker.required() as u32);
    ErrorResponse::new(
        ErrorCode::WriteTimeout { consistency, received, required },
        format!("Write at consistency {consistency}: {received} of {required} required replicas acknowledged; {why}"),
    )
}

/// READ_TIMEOUT: `received` of `required` replicas answered (`data_present`: with data).
pub(super) fn read_timeout(
    consistency: Consistency,
    received: usize,
    required: usize,
    data_present: bool,
    why: &str,
) -> ErrorResponse {
    let received = received as u32;
    ErrorResponse::new(
        ErrorCode::ReadTimeout { consistency, received, required: required as u32, data_present },
        format!("Read at consistency {consistency}: {received} of {required} required replicas answered; {why}"),
    )
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;

/// A replica as trace lines name it.
fn name(replica: &Replica) -> String {
    match replica.local {
        true => "this node".to_owned(),
        false => replica.peer.to_string(),
    }
}

fn rows(partition: Option<&Partition>) -> usize {
    partition.map_or(0, |p| p.rows.len())
}

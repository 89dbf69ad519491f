//! The hint store of a coordinator, on its shard's executor: takes the hints the storage proxy
//! hands it (queued, then written by one writer task in group-committed batches to per-target
//! segment files under `DATA/hints/`), and replays a target's hints over the peer protocol
//! (MUTATE, original timestamps) when the target is seen up, throttled, deleting a segment only
//! once every record in it is acknowledged or dropped. It never blocks a write: a hint that
//! cannot be kept is dropped and counted.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::io::{BufferedFile, OpenOptions};
use shards::compaction::Throttle;
use shards::io::{sync_dir, PathIoError};
use shards::mutation::{PartitionUpdate, MAX_BATCH_WRITES};
use shards::node::Node;

use super::{
    admit, encode_record_into, encode_segment_header, expired, parse_segment_file_name, record_len, scan_segment,
    segment_file_name, DropReason, HintSettings, SegmentError, SEGMENT_HEADER_LEN,
};
use crate::cluster::messages;
use crate::cluster::transport::{PeerRequest, Peers};
use crate::cluster::verbs::MutateBody;
use crate::cluster::view::ClusterView;
use crate::cluster::HostId;
use crate::metrics::{Exposition, Kind, MetricsSource};

/// Directory of the hint segments, inside the node's data directory.
pub const HINTS_DIR: &str = "hints";
/// A target's segment is rotated once it holds this many bytes (its last batch may pass it).
pub const SEGMENT_ROTATE_BYTES: u64 = 8 << 20;
/// Largest segment file read back (rotation size plus a writer batch, with a wide margin for a
/// single large hint); a larger file is set aside as damaged.
pub const MAX_SEGMENT_FILE_BYTES: u64 = 512 << 20;
/// Largest single read of a segment file.
const READ_CHUNK: usize = 1 << 20;
/// Hints waiting for the writer; more are dropped (reason `overload`).
pub const MAX_QUEUED_HINTS: usize = 4096;
/// Bytes of hints waiting for the writer; more are dropped, except one hint alone.
pub const MAX_QUEUED_BYTES: u64 = 16 << 20;
/// Distinct targets with hints; hints for more are dropped (reason `overload`).
pub const MAX_TARGETS: usize = 1024;
/// Hint bytes sent in one MUTATE while replaying (and at most `MAX_BATCH_WRITES` partitions).
pub const REPLAY_BATCH_BYTES: u64 = 64 << 10;
/// How often targets with hints are checked for a replay (besides the failure detector's up
/// events), as Cassandra's hint dispatcher does.
pub const REPLAY_CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// How long a replay waits for the writer to finish with the segment it wants to seal.
const SEAL_WAIT: Duration = Duration::from_millis(5);
const MAX_SEAL_WAITS: u32 = 200;
/// Suffix given to a segment that cannot be read at all (kept for the operator, never replayed).
const DAMAGED_SUFFIX: &str = ".damaged";

#[derive(Debug, thiserror::Error)]
pub enum HintError {
    #[error("hints: {0}")]
    Io(#[from] PathIoError),
    #[error("hint segment {path}: {source}")]
    Segment { path: PathBuf, source: SegmentError },
    #[error("hint segment {path} is {size} bytes, above the limit of {MAX_SEGMENT_FILE_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(glommio::GlommioError<()>) -> HintError + 'a {
    move |e| HintError::Io(PathIoError::new(op, path, e.into()))
}

/// What the store has done since it opened, and what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HintCounts {
    pub stored: u64,
    pub replayed: u64,
    /// Per [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Hints stored and neither delivered nor dropped, per target with any.
    pub pending: Vec<(HostId, u64)>,
}

impl HintCounts {
    pub fn pending_total(&self) -> u64 {
        self.pending.iter().map(|(_, n)| n).sum()
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize]
    }
}

/// A segment that is complete: the writer never touches it again.
#[derive(Debug, Clone)]
struct Segment {
    path: PathBuf,
    records: u64,
    /// File bytes after the header.
    bytes: u64,
    /// Records at the front already delivered or dropped (in this run; a restart sends them
    /// again, which changes nothing: applying a stamped write twice is idempotent).
    done: u64,
}

/// The segment the writer appends to.
struct Active {
    file: Rc<BufferedFile>,
    segment: Segment,
    /// Where the next record goes.
    end: u64,
}

#[derive(Default)]
struct Target {
    /// Oldest first.
    sealed: VecDeque<Segment>,
    active: Option<Active>,
    /// The writer is appending to `active`: a replay must not seal it now.
    writing: bool,
    replaying: bool,
    /// Since when this coordinator has known the target down.
    down_since: Option<Instant>,
    /// Hints queued or in segments, neither delivered nor dropped.
    pending: u64,
    /// Their bytes (what `max_bytes_per_host` bounds).
    pending_bytes: u64,
}

struct QueuedHint {
    target: HostId,
    created_micros: u64,
    mutate: Rc<Vec<u8>>,
}

#[derive(Default)]
struct Counters {
    stored: Cell<u64>,
    replayed: Cell<u64>,
    dropped: [Cell<u64>; DropReason::ALL.len()],
}

impl Counters {
    fn drop_hints(&self, reason: DropReason, n: u64) {
        let c = &self.dropped[reason as usize];
        c.set(c.get() + n);
    }
}

pub struct HintStore {
    dir: PathBuf,
    node: Node,
    settings: HintSettings,
    /// The coordinator's view: who is up, and where a target listens.
    view: Rc<RefCell<Rc<ClusterView>>>,
    /// Where replays send the hints.
    peers: Rc<dyn Peers>,
    /// How long a replayed MUTATE waits for its answer.
    timeout: Duration,
    targets: RefCell<BTreeMap<HostId, Target>>,
    queue: RefCell<VecDeque<QueuedHint>>,
    queued_bytes: Cell<u64>,
    /// Wakes the writer (capacity 1: one pending wake-up covers every queued hint).
    doorbell: flume::Sender<()>,
    next_seq: Cell<u64>,
    throttle: RefCell<Throttle>,
    counters: Counters,
}

impl HintStore {
    /// Opens the hints of `node` (`DATA/hints/`, created if needed), counting what every
    /// segment left by an earlier run holds, and starts the writer and the periodic replay
    /// check on the current executor. Replays send to the targets through `peers`.
    pub async fn open(
        node: Node,
        settings: HintSettings,
        view: Rc<RefCell<Rc<ClusterView>>>,
        peers: Rc<dyn Peers>,
        timeout: Duration,
    ) -> Result<Rc<HintStore>, HintError> {
        let dir = node.data_dir().join(HINTS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| PathIoError::new("create", &dir, e))?;
        let (doorbell, rings) = flume::bounded(1);
        let store = Rc::new(HintStore {
            dir,
            node,
            settings,
            view,
            peers,
            timeout,
            targets: RefCell::default(),
            queue: RefCell::default(),
            queued_bytes: Cell::new(0),
            doorbell,
            next_seq: Cell::new(1),
            throttle: RefCell::new(Throttle::new(settings.throttle_kib.saturating_mul(1024))),
            counters: Counters::default(),
        });
        store.load().await?;
        glommio::spawn_local(write_loop(Rc::downgrade(&store), rings)).detach();
        glommio::spawn_local(check_loop(Rc::downgrade(&store))).detach();
        Ok(store)
    }

    pub fn settings(&self) -> &HintSettings {
        &self.settings
    }

    /// Counts every segment an earlier run left; segments that cannot be read at all are set
    /// aside (renamed `*.damaged`) and reported.
    async fn load(&self) -> Result<(), HintError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| PathIoError::new("list", &self.dir, e))?;
        let mut found: Vec<(HostId, u64, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| PathIoError::new("list", &self.dir, e))?;
            if let Some((host, seq)) = entry.file_name().to_str().and_then(parse_segment_file_name) {
                found.push((host, seq, entry.path()));
            }
        }
        found.sort_by_key(|(_, seq, _)| *seq);
        for (host, seq, path) in found {
            self.next_seq.set(self.next_seq.get().max(seq + 1));
            let bytes = read_file(&path).await;
            let scan = bytes.as_ref().map_err(|e| e.to_string()).and_then(|b| {
                let scan = scan_segment(b).map_err(|e| e.to_string())?;
                match scan.target == host {
                    true => Ok(scan),
                    false => Err(format!("holds hints for {:032x}, not the host its name says", scan.target)),
                }
            });
            let scan = match scan {
                Ok(scan) => scan,
                Err(why) => {
                    set_aside(&path, &why);
                    continue;
                }
            };
            if let Some((offset, why)) = &scan.damage {
                tracing::warn!(
                    path = %path.display(), offset, reason = %why,
                    "hint segment ends in a damaged record (a torn write?): the records before it are kept"
                );
            }
            let records = scan.records.len() as u64;
            let size: u64 = scan.records.iter().map(|r| r.framed_len).sum();
            if records == 0 {
                remove_segment(&self.dir, &path);
                continue;
            }
            let mut targets = self.targets.borrow_mut();
            let target = targets.entry(host).or_default();
            target.pending += records;
            target.pending_bytes += size;
            target.sealed.push_back(Segment { path, records, bytes: size, done: 0 });
        }
        let counts = self.counts();
        if counts.pending_total() > 0 {
            tracing::info!(
                hints = counts.pending_total(),
                targets = counts.pending.len(),
                "hints found from an earlier run"
            );
        }
        Ok(())
    }

    /// Keeps a hint for `target`, which did not acknowledge the write whose MUTATE body is
    /// `mutate` (`target_alive`: whether the view held it up when the write was sent). Returns
    /// at once: the writer makes it durable in the background. Nothing is kept when hints are
    /// disabled; a hint past the window or a bound is dropped and counted.
    pub fn store(&self, target: HostId, target_alive: bool, mutate: &Rc<Vec<u8>>) {
        if !self.settings.enabled {
            return;
        }
        let now = Instant::now();
        let bytes = record_len(mutate.len());
        let mut targets = self.targets.borrow_mut();
        if !targets.contains_key(&target) && targets.len() >= MAX_TARGETS {
            return self.counters.drop_hints(DropReason::Overload, 1);
        }
        let t = targets.entry(target).or_default();
        if !target_alive {
            t.down_since.get_or_insert(now);
        }
        let down_for = t.down_since.map(|since| now.saturating_duration_since(since));
        if let Err(reason) = admit(&self.settings, down_for, t.pending_bytes, bytes) {
            return self.counters.drop_hints(reason, 1);
        }
        let mut queue = self.queue.borrow_mut();
        let queued = self.queued_bytes.get();
        if queue.len() >= MAX_QUEUED_HINTS || (!queue.is_empty() && queued + bytes > MAX_QUEUED_BYTES) {
            return self.counters.drop_hints(DropReason::Overload, 1);
        }
        queue.push_back(QueuedHint { target, created_micros: wall_micros(), mutate: mutate.clone() });
        self.queued_bytes.set(queued + bytes);
        t.pending += 1;
        t.pending_bytes += bytes;
        // Full means a wake-up is already pending, which covers this hint too.
        let _ = self.doorbell.try_send(());
    }

    /// The failure detector convicted `host` (or it announced its shutdown): the hint window
    /// runs from now.
    pub fn peer_down(&self, host: HostId) {
        let mut targets = self.targets.borrow_mut();
        if targets.contains_key(&host) || targets.len() < MAX_TARGETS {
            targets.entry(host).or_default().down_since.get_or_insert(Instant::now());
        }
    }

    /// The failure detector sees `host` up: its hints are replayed now.
    pub fn peer_up(self: &Rc<Self>, host: HostId) {
        if let Some(t) = self.targets.borrow_mut().get_mut(&host) {
            t.down_since = None;
        }
        self.start_replay(host);
    }

    /// Starts replaying `host`'s hints in the background unless there are none or a replay
    /// already runs.
    pub fn start_replay(self: &Rc<Self>, host: HostId) {
        {
            let mut targets = self.targets.borrow_mut();
            let Some(t) = targets.get_mut(&host) else { return };
            if t.pending == 0 || t.replaying {
                return;
            }
            t.replaying = true;
        }
        let store = self.clone();
        glommio::spawn_local(async move {
            store.replay(host).await;
            if let Some(t) = store.targets.borrow_mut().get_mut(&host) {
                t.replaying = false;
            }
        })
        .detach();
    }

    pub fn counts(&self) -> HintCounts {
        let pending =
            self.targets.borrow().iter().filter(|(_, t)| t.pending > 0).map(|(h, t)| (*h, t.pending)).collect();
        HintCounts {
            stored: self.counters.stored.get(),
            replayed: self.counters.replayed.get(),
            dropped: std::array::from_fn(|i| self.counters.dropped[i].get()),
            pending,
        }
    }

    /// Writes everything queued: one write and one fdatasync per target with hints.
    async fn write_queued(&self) {
        let queued: Vec<QueuedHint> = self.queue.borrow_mut().drain(..).collect();
        self.queued_bytes.set(0);
        let mut by_target: BTreeMap<HostId, Vec<QueuedHint>> = BTreeMap::new();
        for hint in queued {
            by_target.entry(hint.target).or_default().push(hint);
        }
        for (target, hints) in by_target {
            self.with_target(target, |t| t.writing = true);
            let result = self.append(target, &hints).await;
            self.with_target(target, |t| t.writing = false);
            match result {
                Ok(()) => self.counters.stored.set(self.counters.stored.get() + hints.len() as u64),
                Err(e) => {
                    tracing::error!(host = %format!("{target:032x}"), hints = hints.len(), error = %e, "storing hints failed; they are dropped");
                    self.counters.drop_hints(DropReason::WriteFailed, hints.len() as u64);
                    let bytes: u64 = hints.iter().map(|h| record_len(h.mutate.len())).sum();
                    self.with_target(target, |t| {
                        t.pending -= hints.len() as u64;
                        t.pending_bytes = t.pending_bytes.saturating_sub(bytes);
                    });
                    // The segment may end in a partial write: no more appends to it (a replay
                    // stops at the damage).
                    let active = self.with_target(target, |t| t.active.take()).flatten();
                    if let Some(active) = active {
                        self.seal(target, active).await;
                    }
                }
            }
        }
    }

    fn with_target<R>(&self, host: HostId, f: impl FnOnce(&mut Target) -> R) -> Option<R> {
        self.targets.borrow_mut().get_mut(&host).map(f)
    }

    /// Appends `hints` to `target`'s active segment (a new one when there is none or it is
    /// full) and makes them durable.
    async fn append(&self, target: HostId, hints: &[QueuedHint]) -> Result<(), HintError> {
        let full = self.with_target(target, |t| t.active.as_ref().map(|a| a.end >= SEGMENT_ROTATE_BYTES)).flatten();
        if full != Some(false) {
            if let Some(old) = self.with_target(target, |t| t.active.take()).flatten() {
                self.seal(target, old).await;
            }
            let active = self.create_segment(target).await?;
            self.with_target(target, |t| t.active = Some(active));
        }
        let (file, path, end, first) = self
            .with_target(target, |t| {
                t.active.as_ref().map(|a| (a.file.clone(), a.segment.path.clone(), a.end, a.segment.records + 1))
            })
            .flatten()
            .ok_or_else(|| {
                HintError::Io(PathIoError::new("append to", &self.dir, std::io::ErrorKind::NotFound.into()))
            })?;
        let mut buf = Vec::new();
        for (i, hint) in hints.iter().enumerate() {
            encode_record_into(first + i as u64, hint.created_micros, &hint.mutate, &mut buf);
        }
        let len = buf.len() as u64;
        let written = file.write_at(buf, end).await.map_err(io_error("write", &path))?;
        if written as u64 != len {
            let short = std::io::Error::new(std::io::ErrorKind::WriteZero, format!("wrote {written} of {len} bytes"));
            return Err(PathIoError::new("write", &path, short).into());
        }
        file.fdatasync().await.map_err(io_error("fdatasync", &path))?;
        self.with_target(target, |t| {
            if let Some(a) = t.active.as_mut() {
                a.end += len;
                a.segment.records += hints.len() as u64;
                a.segment.bytes += len;
            }
        });
        Ok(())
    }

    async fn create_segment(&self, target: HostId) -> Result<Active, HintError> {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let path = self.dir.join(segment_file_name(target, seq));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .buffered_open(&path)
            .await
            .map_err(io_error("create", &path))?;
        let written = file.write_at(encode_segment_header(target), 0).await.map_err(io_error("write", &path))?;
        if written != SEGMENT_HEADER_LEN {
            let short = std::io::Error::new(std::io::ErrorKind::WriteZero, "short header write");
            return Err(PathIoError::new("write", &path, short).into());
        }
        sync_dir(&self.dir).map_err(|e| PathIoError::new("sync", &self.dir, e))?;
        let segment = Segment { path, records: 0, bytes: 0, done: 0 };
        Ok(Active { file: Rc::new(file), segment, end: SEGMENT_HEADER_LEN as u64 })
    }

    /// Closes a segment the writer is done with: kept for replay if it holds hints.
    async fn seal(&self, target: HostId, active: Active) {
        if let Ok(file) = Rc::try_unwrap(active.file) {
            if let Err(e) = file.close().await {
                tracing::warn!(path = %active.segment.path.display(), error = %e, "closing a hint segment");
            }
        }
        if active.segment.records == 0 {
            remove_segment(&self.dir, &active.segment.path);
            return;
        }
        self.with_target(target, |t| t.sealed.push_back(active.segment));
    }

    /// The peer address of `host` while the view holds it up.
    fn live_peer(&self, host: HostId) -> Option<std::net::SocketAddr> {
        self.view.borrow().member(host).filter(|m| m.alive).map(|m| m.peer)
    }

    /// Replays `host`'s hints, oldest first, until there are none left or the target fails.
    async fn replay(&self, host: HostId) {
        if self.live_peer(host).is_none() {
            return;
        }
        let (pending, pending_bytes) = self.with_target(host, |t| (t.pending, t.pending_bytes)).unwrap_or_default();
        let who = format!("{host:032x}");
        tracing::info!(host = %who, hints = pending, bytes = pending_bytes, "hint replay started");
        // Hints written until now are replayed too; new ones go to a new segment.
        self.seal_for_replay(host).await;
        let mut progress = Progress::default();
        let stopped = loop {
            let Some(segment) = self.with_target(host, |t| t.sealed.front().cloned()).flatten() else { break None };
            if let Err(why) = self.replay_segment(host, &*self.peers, &segment, &mut progress).await {
                break Some(why);
            }
            let finished = self.with_target(host, |t| {
                let done = t.sealed.pop_front();
                if let Some(s) = &done {
                    // Records a damaged tail hid are gone with the file.
                    t.pending = t.pending.saturating_sub(s.records - s.done);
                    t.pending_bytes = t.pending_bytes.saturating_sub(s.bytes);
                }
                done
            });
            if let Some(Some(segment)) = finished {
                remove_segment(&self.dir, &segment.path);
            }
        };
        let left = self.with_target(host, |t| t.pending).unwrap_or(0);
        let dropped = progress.dropped;
        match stopped {
            None => tracing::info!(
                host = %who, delivered = progress.delivered, bytes = progress.bytes, dropped, pending = left,
                "hint replay done"
            ),
            Some(why) => tracing::info!(
                host = %who, delivered = progress.delivered, bytes = progress.bytes, dropped, pending = left,
                reason = %why, "hint replay stopped; retried later"
            ),
        }
    }

    /// Moves the target's active segment to the sealed ones, once the writer is not writing it.
    async fn seal_for_replay(&self, host: HostId) {
        for _ in 0..MAX_SEAL_WAITS {
            match self.with_target(host, |t| (t.writing, t.active.is_some())) {
                Some((false, true)) => {
                    if let Some(Some(active)) = self.with_target(host, |t| t.active.take()) {
                        self.seal(host, active).await;
                    }
                    return;
                }
                Some((true, _)) => glommio::timer::sleep(SEAL_WAIT).await,
                _ => return,
            }
        }
    }

    /// Delivers the records of one sealed segment not yet done. Err: the replay must stop.
    async fn replay_segment(
        &self,
        host: HostId,
        peers: &dyn Peers,
        segment: &Segment,
        progress: &mut Progress,
    ) -> Result<(), String> {
        let bytes = read_file(&segment.path).await.map_err(|e| e.to_string())?;
        let scan = match scan_segment(&bytes) {
            Ok(scan) => scan,
            Err(e) => {
                // It read at open: it changed since. Nothing in it can be trusted.
                set_aside(&segment.path, &e.to_string());
                self.counters.drop_hints(DropReason::Corrupt, segment.records - segment.done);
                progress.dropped += segment.records - segment.done;
                return Ok(());
            }
        };
        let now = wall_micros();
        let mut batch = Batch::default();
        for record in scan.records.iter().skip(segment.done as usize) {
            let updates = match expired(&self.settings, record.created_micros, now) {
                true => Err(DropReason::Expired),
                false => messages::decode_mutate(record.mutate).map_err(|e| {
                    tracing::warn!(path = %segment.path.display(), error = %e, "a hint does not decode; dropped");
                    DropReason::Corrupt
                }),
            };
            // A table dropped since the write takes its hints with it.
            let updates = updates.and_then(|mut updates| {
                updates.retain(|u| self.node.table_by_id(u.table).is_some());
                if updates.is_empty() {
                    return Err(DropReason::TableDropped);
                }
                Ok(updates)
            });
            match updates {
                Ok(updates) => {
                    let full = batch.bytes + record.framed_len > REPLAY_BATCH_BYTES
                        || batch.updates.len() + updates.len() > MAX_BATCH_WRITES;
                    if full && !batch.updates.is_empty() {
                        self.deliver(host, peers, std::mem::take(&mut batch), progress).await?;
                    }
                    batch.delivered += 1;
                    batch.bytes += record.framed_len;
                    batch.updates.extend(updates);
                }
                Err(reason) => batch.dropped[reason as usize] += 1,
            }
            batch.records += 1;
        }
        self.deliver(host, peers, batch, progress).await
    }

    /// Sends a batch's updates (if any) and, once acknowledged, counts its records done.
    async fn deliver(
        &self,
        host: HostId,
        peers: &dyn Peers,
        batch: Batch,
        progress: &mut Progress,
    ) -> Result<(), String> {
        if !batch.updates.is_empty() {
            let peer = self.live_peer(host).ok_or_else(|| "the target is down".to_owned())?;
            let body = MutateBody::encode(&batch.updates);
            let sent = body.bytes().len() as u64;
            peers.call(peer, PeerRequest::Mutate(body), self.timeout).await.map_err(|e| e.to_string())?;
            let pause = self.throttle.borrow_mut().admit(sent, Instant::now());
            if !pause.is_zero() {
                glommio::timer::sleep(pause).await;
            }
        }
        self.with_target(host, |t| {
            if let Some(front) = t.sealed.front_mut() {
                front.done += batch.records;
            }
            t.pending = t.pending.saturating_sub(batch.records);
        });
        let c = &self.counters;
        c.replayed.set(c.replayed.get() + batch.delivered);
        for reason in DropReason::ALL {
            c.drop_hints(reason, batch.dropped[reason as usize]);
        }
        progress.delivered += batch.delivered;
        progress.bytes += batch.bytes;
        progress.dropped += batch.dropped.iter().sum::<u64>();
        Ok(())
    }

    /// Targets with hints that the view holds up and that no replay serves.
    fn due_for_replay(&self) -> Vec<HostId> {
        let targets = self.targets.borrow();
        let due = targets.iter().filter(|(_, t)| t.pending > 0 && !t.replaying);
        due.map(|(h, _)| *h).filter(|h| self.live_peer(*h).is_some()).collect()
    }
}

/// The records of one MUTATE being replayed: every record it covers, in order (the dropped
/// ones count as done only with the delivered ones before them).
#[derive(Default)]
struct Batch {
    updates: Vec<PartitionUpdate>,
    records: u64,
    delivered: u64,
    bytes: u64,
    /// Per [`DropReason::ALL`].
    dropped: [u64; DropReason::ALL.len()],
}

/// What one replay did (its log line).
#[derive(Default)]
struct Progress {
    delivered: u64,
    bytes: u64,
    dropped: u64,
}

impl MetricsSource for HintStore {
    fn collect(&self, out: &mut Exposition) {
        let counts = self.counts();
        out.family(
            "enigmadb_hints_stored_total",
            Kind::Counter,
            "Hints made durable for replicas that missed a write.",
        );
        out.sample("enigmadb_hints_stored_total", &[], counts.stored as f64);
        out.family("enigmadb_hints_replayed_total", Kind::Counter, "Hints delivered to their target and acknowledged.");
        out.sample("enigmadb_hints_replayed_total", &[], counts.replayed as f64);
        out.family("enigmadb_hints_dropped_total", Kind::Counter, "Hints not stored or not delivered, by reason.");
        for reason in DropReason::ALL {
            out.sample("enigmadb_hints_dropped_total", &[("reason", reason.name())], counts.dropped(reason) as f64);
        }
        out.family("enigmadb_hints_pending", Kind::Gauge, "Hints waiting for their target, per target host id.");
        for (host, n) in &counts.pending {
            out.sample("enigmadb_hints_pending", &[("target", &format!("{host:032x}"))], *n as f64);
        }
    }
}

/// Writes what is queued whenever the doorbell rings; ends with the store.
async fn write_loop(store: Weak<HintStore>, doorbell: flume::Receiver<()>) {
    while doorbell.recv_async().await.is_ok() {
        let Some(store) = store.upgrade() else { return };
        store.write_queued().await;
    }
}

/// Starts the replays the up events missed (hints from an earlier run, a replay that stopped).
async fn check_loop(store: Weak<HintStore>) {
    loop {
        glommio::timer::sleep(REPLAY_CHECK_INTERVAL).await;
        let Some(store) = store.upgrade() else { return };
        for host in store.due_for_replay() {
            store.start_replay(host);
        }
    }
}

fn wall_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Reads a whole segment file, in reads of at most [`READ_CHUNK`].
async fn read_file(path: &Path) -> Result<Vec<u8>, HintError> {
    let file = BufferedFile::open(path).await.map_err(io_error("open", path))?;
    let result = async {
        let size = file.file_size().await.map_err(io_error("stat", path))?;
        if size > MAX_SEGMENT_FILE_BYTES {
            return Err(HintError::TooLarge { path: path.to_path_buf(), size });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        while (bytes.len() as u64) < size {
            let want = READ_CHUNK.min(size as usize - bytes.len());
            let chunk = file.read_at(bytes.len() as u64, want).await.map_err(io_error("read", path))?;
            if chunk.is_empty() {
                break;
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
    .await;
    let _ = file.close().await;
    result
}

fn remove_segment(dir: &Path, path: &Path) {
    let removed = std::fs::remove_file(path).and_then(|()| sync_dir(dir));
    if let Err(e) = removed {
        tracing::warn!(path = %path.display(), error = %e, "removing a replayed hint segment");
    }
}

/// Renames a segment that cannot be read to `*.damaged`: never replayed, kept for the operator.
fn set_aside(path: &Path, why: &str) {
    let mut damaged = path.as_os_str().to_owned();
    damaged.push(DAMAGED_SUFFIX);
    tracing::error!(path = %path.display(), reason = %why, "hint segment cannot be read; set aside as {}", Path::new(&damaged).display());
    if let Err(e) = std::fs::rename(path, &damaged) {
        tracing::error!(path = %path.display(), error = %e, "setting a damaged hint segment aside");
    }
}

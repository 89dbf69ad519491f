//! Appends and group commit. `append` frames a record into the pending buffer synchronously (so
//! LSNs follow call order); one background task swaps the pending buffer out, issues one write at
//! a time (durable when it completes in Batch mode, whose segments are opened `O_DSYNC`),
//! fdatasyncs as the sync mode asks (Periodic: once per period), and then wakes that group's
//! waiters. Records that arrive meanwhile form the next group. The task never acknowledges a
//! record after a failed write or fdatasync: the first failure fails every waiter and every later
//! append. The one exception is a full disk: the records that could not be written keep their
//! LSNs and are written again every [`DISK_FULL_RETRY`] until space is freed (their appends wait
//! meanwhile, new appends are refused with [`WalError::DiskFull`]), so nothing acknowledged is
//! lost and LSNs never skip.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;

use super::format::{encode_record, framed_len, SegmentId, SEGMENT_HEADER_SIZE};
use super::replay::{Recovered, SealedSegment};
use super::segment::{io_error, new_segment_header, ActiveSegment, IoCounters};
use super::{Lsn, SyncMode, WalConfig, WalError, WalStats};
use crate::io::sync_dir;

/// How often the writer tries again to write records a full disk refused (the flush path
/// retries as often).
pub const DISK_FULL_RETRY: Duration = Duration::from_secs(1);
/// Buffers of written batches kept for reuse: one being filled while one is written, and
/// one for a batch that opens a new segment. Each holds at most `max_pending_bytes`.
const SPARE_BUFFERS: usize = 2;

/// State shared by the `Wal` handle, its append futures and the writer task (one executor).
pub struct Shared {
    dir: PathBuf,
    config: WalConfig,
    max_payload: u64,
    state: RefCell<State>,
    io: IoCounters,
}

/// Records framed for one segment, in LSN order, waiting to be written.
struct Batch {
    /// This batch opens a new segment (whose first record is `first_lsn`).
    new_segment: bool,
    first_lsn: Lsn,
    last_lsn: Lsn,
    bytes: Vec<u8>,
}

/// An append waiting for room in the pending buffer, with its own copy of the payload. It gets
/// its LSN when admitted, in queue (= call) order, by whoever frees room: it never depends on
/// its future being polled.
struct Waiting {
    ticket: u64,
    payload: Vec<u8>,
    slot: Rc<Slot>,
}

/// Bounds: `unwritten_bytes <= max(max_pending_bytes, one record)`; `acks` holds one entry per
/// admitted, unacknowledged record, so at most two groups' worth (the one being synced and the
/// one accumulating), each at most `max_pending_bytes / 16` records. `waiting` and
/// `sync_waiters` hold one entry per caller that waits (the caller's own memory: a caller that
/// awaits its appends has a bounded number outstanding).
struct State {
    next_lsn: Lsn,
    /// Where the next admitted record goes in its segment; `None`: it opens a new segment.
    placement_end: Option<u64>,
    pending: VecDeque<Batch>,
    /// Bytes admitted but not yet written (pending plus the group being written).
    unwritten_bytes: usize,
    /// Appends waiting for room, in call order (tickets rise).
    waiting: VecDeque<Waiting>,
    next_ticket: u64,
    acks: VecDeque<(Lsn, Rc<Slot>)>,
    sync_waiters: Vec<(Lsn, Rc<Slot>)>,
    sync_requested: bool,
    /// Last LSN whose write completed.
    written_lsn: Lsn,
    /// Last LSN known durable (covered by an fdatasync, or written `O_DSYNC` in Batch mode).
    durable_lsn: Lsn,
    stopping: bool,
    failed: Option<Arc<WalError>>,
    /// Set while the disk is full: admitted records wait to be written again, new appends are
    /// refused with [`WalError::DiskFull`].
    stalled: Option<Arc<WalError>>,
    writer_waker: Option<Waker>,
    /// Buffers of written batches, emptied, for the next batches: a group's buffer grows once
    /// and is reused, rather than regrown (copied, and its fresh pages faulted in) every group.
    spare: Vec<Vec<u8>>,
    /// Complete, older segments, oldest first.
    sealed: VecDeque<SealedSegment>,
    records: u64,
    payload_bytes: u64,
    segments_created: u64,
    segments_deleted: u64,
}

impl State {
    /// Why an append or sync must be refused now, if it must.
    fn refusal(&self) -> Option<WalError> {
        if let Some(cause) = &self.failed {
            Some(WalError::Failed(cause.clone()))
        } else if self.stopping {
            Some(WalError::Closed)
        } else {
            self.stalled.as_ref().map(|cause| WalError::DiskFull(cause.clone()))
        }
    }

    /// Keeps the buffer of a written batch for a later one (at most [`SPARE_BUFFERS`]).
    fn recycle(&mut self, mut bytes: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            bytes.clear();
            self.spare.push(bytes);
        }
    }

    fn has_room(&self, framed: usize, max_pending: usize) -> bool {
        self.unwritten_bytes == 0 || self.unwritten_bytes + framed <= max_pending
    }

    /// Gives the record its LSN and frames it into the pending buffer; `slot` receives the
    /// acknowledgement.
    fn admit(&mut self, payload: &[u8], slot: Rc<Slot>, segment_size: u64) {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        let framed = framed_len(payload.len());
        let fits = matches!(self.placement_end, Some(end) if end + framed as u64 <= segment_size);
        if !fits || self.pending.is_empty() {
            // A record never spans segments: one that does not fit opens the next one.
            let bytes = self.spare.pop().unwrap_or_default();
            self.pending.push_back(Batch { new_segment: !fits, first_lsn: lsn, last_lsn: lsn, bytes });
            if !fits {
                self.placement_end = Some(SEGMENT_HEADER_SIZE as u64);
            }
        }
        let Some(batch) = self.pending.back_mut() else {
            unreachable!("a batch was pushed above or pending was non-empty");
        };
        encode_record(lsn, payload, &mut batch.bytes);
        batch.last_lsn = lsn;
        self.placement_end = self.placement_end.map(|end| end + framed as u64);
        self.unwritten_bytes += framed;
        self.records += 1;
        self.payload_bytes += payload.len() as u64;
        self.acks.push_back((lsn, slot));
    }

    /// Admits waiting appends, oldest first, while they fit.
    fn admit_waiting(&mut self, config: &WalConfig) {
        while let Some(front) = self.waiting.front() {
            if !self.has_room(framed_len(front.payload.len()), config.max_pending_bytes) {
                break;
            }
            if let Some(w) = self.waiting.pop_front() {
                self.admit(&w.payload, w.slot, config.segment_size);
            }
        }
    }

    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer_waker.take() {
            waker.wake();
        }
    }

    /// Withdraws a waiting append whose future was dropped (it has no LSN yet), if it is
    /// still waiting.
    fn withdraw(&mut self, ticket: u64) {
        if let Ok(i) = self.waiting.binary_search_by_key(&ticket, |w| w.ticket) {
            self.waiting.remove(i);
        }
    }

    /// Fails every append still waiting for room.
    fn refuse_waiting(&mut self, error: impl Fn() -> WalError) {
        for w in self.waiting.drain(..) {
            w.slot.complete(Err(error()));
        }
    }

    /// Acknowledges what the sync mode allows.
    fn resolve(&mut self, mode: SyncMode) {
        let ack_through = match mode {
            SyncMode::Batch => self.durable_lsn,
            SyncMode::Periodic => self.written_lsn,
        };
        debug_assert!(self.durable_lsn <= self.written_lsn);
        while let Some((lsn, _)) = self.acks.front() {
            if *lsn > ack_through {
                break;
            }
            if let Some((lsn, slot)) = self.acks.pop_front() {
                slot.complete(Ok(lsn));
            }
        }
        let durable = self.durable_lsn;
        self.sync_waiters.retain(|(target, slot)| {
            let done = *target <= durable;
            if done {
                slot.complete(Ok(*target));
            }
            !done
        });
    }

    /// Fails every waiter and every later append with `cause`.
    fn fail(&mut self, cause: Arc<WalError>) {
        tracing::error!(error = %cause, "WAL failed; refusing further appends");
        self.failed = Some(cause.clone());
        self.pending.clear();
        self.unwritten_bytes = 0;
        for (_, slot) in self.acks.drain(..) {
            slot.complete(Err(WalError::Failed(cause.clone())));
        }
        for (_, slot) in self.sync_waiters.drain(..) {
            slot.complete(Err(WalError::Failed(cause.clone())));
        }
        self.refuse_waiting(|| WalError::Failed(cause.clone()));
    }
}

/// A one-shot result cell with a waker (local to the executor).
#[derive(Default)]
struct Slot {
    inner: RefCell<SlotInner>,
}

#[derive(Default)]
struct SlotInner {
    result: Option<Result<Lsn, WalError>>,
    waker: Option<Waker>,
}

impl Slot {
    fn complete(&self, result: Result<Lsn, WalError>) {
        let waker = {
            let mut inner = self.inner.borrow_mut();
            inner.result = Some(result);
            inner.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<Result<Lsn, WalError>> {
        let mut inner = self.inner.borrow_mut();
        match inner.result.take() {
            Some(result) => Poll::Ready(result),
            None => {
                inner.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The future returned by [`super::Wal::append`]: resolves with the record's LSN once it is
/// acknowledged. Owns no borrow of the `Wal`. Dropping it after the record was admitted does not
/// withdraw the record; dropping it while the record waits for room does (it has no LSN yet).
pub struct AppendFuture {
    shared: Rc<Shared>,
    state: AppendState,
}

enum AppendState {
    /// Decided at call time (an error); `None` once returned.
    Immediate(Option<Result<Lsn, WalError>>),
    /// Admitted, or waiting for room under `ticket`.
    Submitted { slot: Rc<Slot>, ticket: Option<u64> },
}

impl Future for AppendFuture {
    type Output = Result<Lsn, WalError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().state {
            AppendState::Immediate(result) => {
                // Polling a completed future is a caller bug; std futures panic too.
                Poll::Ready(result.take().expect("AppendFuture polled after completion"))
            }
            AppendState::Submitted { slot, ticket } => {
                let poll = slot.poll(cx);
                if poll.is_ready() {
                    // Resolved, so no longer waiting: nothing to withdraw on drop.
                    *ticket = None;
                }
                poll
            }
        }
    }
}

impl Drop for AppendFuture {
    fn drop(&mut self) {
        if let AppendState::Submitted { ticket: Some(ticket), .. } = self.state {
            self.shared.state.borrow_mut().withdraw(ticket);
        }
    }
}

pub fn append(shared: &Rc<Shared>, payload: &[u8]) -> AppendFuture {
    let immediate = |result| AppendFuture { shared: shared.clone(), state: AppendState::Immediate(Some(result)) };
    let size = payload.len() as u64;
    if size > shared.max_payload {
        return immediate(Err(WalError::RecordTooLarge { size, max: shared.max_payload }));
    }
    let mut st = shared.state.borrow_mut();
    if let Some(refusal) = st.refusal() {
        return immediate(Err(refusal));
    }
    let slot = Rc::new(Slot::default());
    let config = &shared.config;
    let ticket = if st.waiting.is_empty() && st.has_room(framed_len(payload.len()), config.max_pending_bytes) {
        st.admit(payload, slot.clone(), config.segment_size);
        st.wake_writer();
        None
    } else {
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.waiting.push_back(Waiting { ticket, payload: payload.to_vec(), slot: slot.clone() });
        Some(ticket)
    };
    AppendFuture { shared: shared.clone(), state: AppendState::Submitted { slot, ticket } }
}

/// Resolves once everything admitted before the call is written and durable.
pub async fn sync(shared: &Rc<Shared>) -> Result<(), WalError> {
    let slot = {
        let mut st = shared.state.borrow_mut();
        if let Some(refusal) = st.refusal() {
            return Err(refusal);
        }
        let target = st.next_lsn - 1;
        if target <= st.durable_lsn {
            return Ok(());
        }
        let slot = Rc::new(Slot::default());
        st.sync_waiters.push((target, slot.clone()));
        st.sync_requested = true;
        st.wake_writer();
        slot
    };
    future::poll_fn(|cx| slot.poll(cx)).await.map(|_| ())
}

pub fn release_through(shared: &Shared, flushed: Lsn) -> Result<usize, WalError> {
    let mut released = 0;
    loop {
        let victim = {
            let st = shared.state.borrow();
            match st.sealed.front() {
                Some(segment) if segment.last_lsn <= flushed => segment.path.clone(),
                _ => break,
            }
        };
        match std::fs::remove_file(&victim) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove", &victim, e)),
        }
        let mut st = shared.state.borrow_mut();
        st.sealed.pop_front();
        st.segments_deleted += 1;
        released += 1;
    }
    if released > 0 {
        sync_dir(&shared.dir).map_err(|e| io_error("sync directory", &shared.dir, e))?;
    }
    Ok(released)
}

impl Shared {
    pub fn stats(&self) -> WalStats {
        let st = self.state.borrow();
        WalStats {
            records: st.records,
            payload_bytes: st.payload_bytes,
            bytes_written: self.io.bytes_written.get(),
            writes: self.io.writes.get(),
            syncs: self.io.syncs.get(),
            writebacks: self.io.writebacks.get(),
            segments_created: st.segments_created,
            segments_deleted: st.segments_deleted,
            last_lsn: st.next_lsn - 1,
        }
    }

    /// Refuses new appends, fails the ones still waiting for room, and tells the writer to
    /// finish what was admitted.
    pub fn request_stop(&self) {
        let mut st = self.state.borrow_mut();
        st.stopping = true;
        st.refuse_waiting(|| WalError::Closed);
        st.wake_writer();
    }
}

/// Prepares the active segment left by replay and starts the writer task.
pub async fn start(
    dir: &Path,
    config: WalConfig,
    recovered: Recovered,
) -> Result<(Rc<Shared>, glommio::task::JoinHandle<Result<(), Arc<WalError>>>), WalError> {
    let io = IoCounters::default();
    let active = match recovered.newest {
        Some(newest) => {
            let mut segment = ActiveSegment::reopen(
                &newest.path,
                newest.id,
                newest.end,
                newest.tail,
                config.segment_size,
                config.sync_mode.durable_writes(),
            )
            .await?;
            if newest.garbage_end > newest.end {
                // Stale bytes past the good records must not survive to be mistaken for records
                // once new ones are written in front of them.
                segment.zero_after_end(newest.garbage_end, &io).await?;
            }
            // Whatever a killed predecessor wrote without syncing (Periodic mode) is made durable
            // before anything new is acknowledged on top of it.
            segment.sync(&io).await?;
            Some(segment)
        }
        None => None,
    };
    let last_lsn = recovered.next_lsn - 1;
    let state = State {
        next_lsn: recovered.next_lsn,
        placement_end: active.as_ref().map(|a| a.write_end()),
        pending: VecDeque::new(),
        unwritten_bytes: 0,
        waiting: VecDeque::new(),
        next_ticket: 0,
        acks: VecDeque::new(),
        sync_waiters: Vec::new(),
        sync_requested: false,
        written_lsn: last_lsn,
        durable_lsn: last_lsn,
        stopping: false,
        failed: None,
        stalled: None,
        writer_waker: None,
        spare: Vec::new(),
        sealed: recovered.sealed.into(),
        records: 0,
        payload_bytes: 0,
        segments_created: 0,
        segments_deleted: 0,
    };
    let shared = Rc::new(Shared {
        dir: dir.to_path_buf(),
        max_payload: config.max_payload(),
        config,
        state: RefCell::new(state),
        io,
    });
    let writer = Writer {
        shared: shared.clone(),
        active,
        next_segment_id: recovered.next_segment_id,
        dirty: false,
        last_sync: Instant::now(),
    };
    let task = match shared.config.task_queue {
        Some(queue) => glommio::spawn_local_into(writer.run(), queue)
            .map_err(|e| WalError::InvalidConfig(format!("cannot spawn the WAL writer: {e}")))?,
        None => glommio::spawn_local(writer.run()),
    };
    Ok((shared, task.detach()))
}

/// The background task: the only code that writes, syncs or rotates segments.
struct Writer {
    shared: Rc<Shared>,
    active: Option<ActiveSegment>,
    next_segment_id: SegmentId,
    /// Bytes written and not yet durable (Periodic mode: since the last fdatasync).
    dirty: bool,
    last_sync: Instant,
}

impl Writer {
    async fn run(mut self) -> Result<(), Arc<WalError>> {
        let mut result = self.serve().await.map_err(Arc::new);
        if let Some(active) = self.active.take() {
            if let Err(e) = active.close().await {
                result = result.and(Err(Arc::new(e)));
            }
        }
        if let Err(cause) = &result {
            self.shared.state.borrow_mut().fail(cause.clone());
        }
        result
    }

    /// Waits until there is something to write, a sync is asked for, the WAL stops, or (Periodic
    /// mode, dirty) the sync period has passed.
    async fn wait_for_work(&self) {
        let work = future::poll_fn(|cx| {
            let mut st = self.shared.state.borrow_mut();
            if !st.pending.is_empty() || st.sync_requested || st.stopping {
                Poll::Ready(())
            } else {
                st.writer_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let config = &self.shared.config;
        if config.sync_mode == SyncMode::Periodic && self.dirty {
            let due = config.periodic_sync.saturating_sub(self.last_sync.elapsed());
            future::or(work, glommio::timer::sleep(due)).await;
        } else {
            work.await;
        }
    }

    /// While the disk is full: waits [`DISK_FULL_RETRY`], or less when the WAL stops.
    async fn wait_to_retry(&self) {
        let stopping = future::poll_fn(|cx| {
            let mut st = self.shared.state.borrow_mut();
            if st.stopping {
                Poll::Ready(())
            } else {
                st.writer_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        future::or(stopping, glommio::timer::sleep(DISK_FULL_RETRY)).await;
    }

    async fn serve(&mut self) -> Result<(), WalError> {
        let mode = self.shared.config.sync_mode;
        // Batches taken from `pending` and not yet written, oldest first: more than one group
        // only while the disk is full (bounded by `max_pending_bytes`, as `pending` is).
        let mut unwritten: VecDeque<Batch> = VecDeque::new();
        loop {
            if unwritten.is_empty() {
                self.wait_for_work().await;
            } else {
                self.wait_to_retry().await;
            }
            let (sync_requested, stopping) = {
                let mut st = self.shared.state.borrow_mut();
                unwritten.extend(std::mem::take(&mut st.pending));
                (std::mem::take(&mut st.sync_requested), st.stopping)
            };

            let mut group_bytes = 0;
            let mut last_written = None;
            let mut disk_full = None;
            while let Some(batch) = unwritten.front() {
                match self.write_batch(batch).await {
                    Ok(()) => {
                        group_bytes += batch.bytes.len();
                        last_written = Some(batch.last_lsn);
                        if let Some(batch) = unwritten.pop_front() {
                            self.shared.state.borrow_mut().recycle(batch.bytes);
                        }
                    }
                    // Stopping gives up: the records fail, unacknowledged.
                    Err(e) if e.is_disk_full() && !stopping => {
                        disk_full = Some(Arc::new(e));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            {
                let mut st = self.shared.state.borrow_mut();
                st.unwritten_bytes -= group_bytes;
                if let Some(lsn) = last_written {
                    debug_assert!(lsn > st.written_lsn, "LSNs must rise");
                    st.written_lsn = lsn;
                }
                match disk_full {
                    Some(cause) => {
                        if st.stalled.is_none() {
                            tracing::error!(error = %cause, dir = %self.shared.dir.display(), "disk full: WAL writes stalled; refusing new records and retrying");
                        }
                        st.stalled = Some(cause);
                    }
                    None => {
                        if st.stalled.take().is_some() {
                            tracing::warn!(dir = %self.shared.dir.display(), "disk space again: the stalled WAL records are written; taking new records");
                        }
                        // Room freed: admit waiting appends now; they join the next group.
                        st.admit_waiting(&self.shared.config);
                    }
                }
            }

            let period_passed = self.last_sync.elapsed() >= self.shared.config.periodic_sync;
            let sync_now = self.dirty && (mode == SyncMode::Batch || sync_requested || stopping || period_passed);
            if sync_now && mode == SyncMode::Periodic {
                // Periodic mode acknowledges a record once written: the records of this group
                // do not wait for the period's fdatasync.
                self.shared.state.borrow_mut().resolve(mode);
            }
            if sync_now {
                self.sync_active().await?;
            }
            let mut st = self.shared.state.borrow_mut();
            if !self.dirty {
                st.durable_lsn = st.written_lsn;
            }
            st.resolve(mode);
            if stopping && st.pending.is_empty() && unwritten.is_empty() {
                return Ok(());
            }
        }
    }

    async fn write_batch(&mut self, batch: &Batch) -> Result<(), WalError> {
        // A retried batch finds the segment an earlier attempt created for it (nothing written
        // yet): it goes there rather than leaving that one empty behind.
        let created_for_it = self.active.as_ref().is_some_and(|a| a.write_end() == 0);
        if batch.new_segment && !created_for_it {
            self.rotate(batch.first_lsn).await?;
        }
        let Some(active) = self.active.as_mut() else {
            unreachable!("placement opens a new segment whenever there is no active one");
        };
        if batch.new_segment {
            let header = new_segment_header(active.id, batch.first_lsn);
            active.append(&[&header, &batch.bytes], &self.shared.io).await?;
        } else {
            active.append(&[&batch.bytes], &self.shared.io).await?;
        }
        // A durable write (Batch mode) leaves nothing for an fdatasync to do.
        self.dirty |= !active.durable_writes();
        Ok(())
    }

    async fn sync_active(&mut self) -> Result<(), WalError> {
        if let Some(active) = &self.active {
            active.sync(&self.shared.io).await?;
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Finishes the active segment (durable first, so older segments are always complete) and opens
    /// the next one for records from `first_lsn` on.
    async fn rotate(&mut self, first_lsn: Lsn) -> Result<(), WalError> {
        if let Some(old) = self.active.take() {
            if self.dirty {
                old.sync(&self.shared.io).await?;
                self.dirty = false;
                self.last_sync = Instant::now();
            }
            let sealed = SealedSegment { path: old.path.clone(), last_lsn: first_lsn - 1 };
            old.close().await?;
            self.shared.state.borrow_mut().sealed.push_back(sealed);
        }
        let id = self.next_segment_id;
        let config = &self.shared.config;
        let segment =
            ActiveSegment::create(&self.shared.dir, id, config.segment_size, config.sync_mode.durable_writes()).await?;
        self.next_segment_id += 1;
        self.shared.state.borrow_mut().segments_created += 1;
        self.active = Some(segment);
        Ok(())
    }
}

//! The write-ahead log of one shard: opaque payload records in pre-allocated, O_DIRECT segment
//! files, group-committed by one background task, replayed in LSN order at open.
//! It owns the segment files in its directory and nothing else; it never interprets a payload,
//! never acknowledges a record that is not written (and, in Batch mode, fdatasync'ed), and never
//! acknowledges anything after a failed write or fdatasync.
//!
//! Layout: `format` (pure byte layout), `segment` (segment files), `replay` (open-time
//! recovery), `writer` (appends and group commit). The byte layout is documented in
//! docs/FORMAT.md, section "WAL segment".

pub mod format;
mod replay;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::TaskQueueHandle;

use crate::io::PathIoError;
pub use format::SegmentId;
pub use replay::QUARANTINE_DIR;
pub use segment::{MAX_IO_SIZE, MAX_SEGMENT_SIZE};
pub use writer::AppendFuture;

/// Log sequence number: strictly increasing per shard across segments; the first record is 1.
pub type Lsn = u64;

/// When an append is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Once the record is durable (survives power loss): segments are opened `O_DSYNC`, so the
    /// write of a group completes only when its data (and the metadata needed to read it back)
    /// is on stable storage, as a write followed by an fdatasync would be, in one operation.
    Batch,
    /// As soon as the O_DIRECT write has completed (survives a killed process); fdatasync runs
    /// every `periodic_sync`.
    Periodic,
}

impl SyncMode {
    /// Whether each write must be durable when it completes (segments opened `O_DSYNC`).
    pub fn durable_writes(self) -> bool {
        self == SyncMode::Batch
    }
}

/// Smallest segment: the header block plus one block of records.
pub const MIN_SEGMENT_SIZE: u64 = 2 * format::BLOCK_SIZE as u64;

#[derive(Clone, Debug)]
pub struct WalConfig {
    /// Bound of one segment file (a multiple of 4096, between [`MIN_SEGMENT_SIZE`] and
    /// [`MAX_SEGMENT_SIZE`]); default 32 MiB like Cassandra's `commitlog_segment_size`.
    pub segment_size: u64,
    /// Default [`SyncMode::Batch`].
    pub sync_mode: SyncMode,
    /// fdatasync period in Periodic mode; default 10 s like Cassandra's `commitlog_sync_period`.
    pub periodic_sync: Duration,
    /// Largest payload; larger ones fail with [`WalError::RecordTooLarge`]. Default 16 MiB.
    /// (A payload must also fit in one segment after the header.)
    pub max_record_size: u32,
    /// Bound on bytes framed but not yet written; appends beyond it wait. A single record larger
    /// than the bound is admitted alone when nothing else is pending. Default 8 MiB.
    pub max_pending_bytes: usize,
    /// On corruption, truncate there and quarantine later segments instead of refusing to open.
    /// Default false: the operator decides.
    pub truncate_corrupt: bool,
    /// Task queue for the background writer; `None` = the queue of the task calling `open`.
    pub task_queue: Option<TaskQueueHandle>,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_size: 32 << 20,
            sync_mode: SyncMode::Batch,
            periodic_sync: Duration::from_secs(10),
            max_record_size: 16 << 20,
            max_pending_bytes: 8 << 20,
            truncate_corrupt: false,
            task_queue: None,
        }
    }
}

impl WalConfig {
    fn validate(&self) -> Result<(), WalError> {
        let block = format::BLOCK_SIZE as u64;
        if !self.segment_size.is_multiple_of(block)
            || !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&self.segment_size)
        {
            return Err(WalError::InvalidConfig(format!(
                "segment_size {} must be a multiple of {block} in {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}",
                self.segment_size
            )));
        }
        if self.max_pending_bytes == 0 {
            return Err(WalError::InvalidConfig("max_pending_bytes must be positive".into()));
        }
        if self.sync_mode == SyncMode::Periodic && self.periodic_sync.is_zero() {
            return Err(WalError::InvalidConfig("periodic_sync must be positive".into()));
        }
        Ok(())
    }

    /// Largest payload accepted: the configured limit, and what fits in one segment.
    pub fn max_payload(&self) -> u64 {
        let fits_segment = self.segment_size - format::SEGMENT_HEADER_SIZE as u64 - format::RECORD_HEADER_SIZE as u64;
        u64::from(self.max_record_size).min(fits_segment)
    }
}

/// Counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended (given an LSN) since open.
    pub records: u64,
    pub payload_bytes: u64,
    /// Bytes written to the device, including rewritten partial blocks and padding.
    pub bytes_written: u64,
    /// Write calls issued.
    pub writes: u64,
    /// Times the log was made durable: fdatasyncs, and in Batch mode each write (`O_DSYNC`).
    pub syncs: u64,
    /// Page-cache appends (Periodic mode) handed to writeback early, a call per
    /// `WRITEBACK_EVERY` (1 MiB) bytes.
    pub writebacks: u64,
    pub segments_created: u64,
    pub segments_deleted: u64,
    /// Last LSN handed out (after replay: the last replayed one).
    pub last_lsn: Lsn,
}

/// What replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Segments whose records were replayed.
    pub segments: usize,
    pub records: u64,
    /// Payload bytes replayed.
    pub bytes: u64,
    /// Last replayed LSN (0 if none).
    pub last_lsn: Lsn,
    /// An interrupted last write in the newest segment, dropped.
    pub torn_tail: Option<TornTail>,
    /// Corruption cut off because `truncate_corrupt` was set.
    pub truncated_corruption: Option<TruncatedCorruption>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Where the first invalid record started; new records are written from here.
    pub offset: u64,
    /// Non-zero bytes from `offset` on that were discarded (zeroed).
    pub discarded_bytes: u64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedCorruption {
    pub segment: PathBuf,
    pub offset: u64,
    pub reason: String,
    /// Later segments, moved into `dir/quarantine/`.
    pub quarantined: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O: {0}")]
    Io(#[from] PathIoError),
    #[error("corrupt WAL segment {segment} at offset {offset}: {reason}")]
    Corrupt { segment: PathBuf, offset: u64, reason: String },
    #[error(
        "WAL segment {segment} has format version {version}, this build reads only version {}",
        format::FORMAT_VERSION
    )]
    UnsupportedVersion { segment: PathBuf, version: u16 },
    #[error("bad WAL segment header in {segment}: {reason}")]
    BadSegmentHeader { segment: PathBuf, reason: String },
    #[error("WAL record payload of {size} bytes exceeds the limit of {max}")]
    RecordTooLarge { size: u64, max: u64 },
    #[error("invalid WAL configuration: {0}")]
    InvalidConfig(String),
    #[error("the WAL is closed")]
    Closed,
    /// A write or fdatasync failed: the records of that group and every later append fail with
    /// this, because after a failed fdatasync nothing written since the last good one can be
    /// trusted.
    #[error("the WAL failed and refuses appends: {0}")]
    Failed(Arc<WalError>),
    /// The replay callback refused a record.
    #[error("replay callback failed: {0}")]
    Apply(String),
    /// A write found the disk full. The WAL keeps the records it could not write and retries
    /// them until space is freed (their appends wait); new appends fail with this meanwhile.
    #[error("the disk is full, so the WAL takes no new records until space is freed (retrying): {0}")]
    DiskFull(Arc<WalError>),
}

impl WalError {
    /// Whether this failure is a full disk (retried), rather than damage or a bug.
    pub fn is_disk_full(&self) -> bool {
        match self {
            WalError::DiskFull(_) => true,
            WalError::Failed(cause) => cause.is_disk_full(),
            WalError::Io(e) => crate::io::is_disk_full(&e.source),
            _ => false,
        }
    }
}

/// The WAL of one shard. Lives on one glommio executor (`!Send`).
pub struct Wal {
    shared: Rc<writer::Shared>,
    writer: Option<glommio::task::JoinHandle<Result<(), Arc<WalError>>>>,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, replays every complete record in LSN order by
    /// calling `apply(lsn, payload)`, then is ready for appends (new records continue after the
    /// last good one).
    ///
    /// `crate::io::prepare_executor_io` must have run on this executor first.
    pub async fn open(
        dir: &Path,
        config: WalConfig,
        apply: impl FnMut(Lsn, &[u8]) -> Result<(), WalError>,
    ) -> Result<(Wal, ReplayReport), WalError> {
        Wal::open_needing(dir, config, None, apply).await
    }

    /// [`Wal::open`] for a caller that holds every record below `needed_from` elsewhere (a
    /// shard's SSTables hold the records up to its manifest's WAL boundary): a log that starts
    /// after `needed_from` lost its oldest segment and is refused as corruption (unless
    /// `truncate_corrupt`), and new records never get an LSN below `needed_from`.
    pub async fn open_needing(
        dir: &Path,
        config: WalConfig,
        needed_from: Option<Lsn>,
        mut apply: impl FnMut(Lsn, &[u8]) -> Result<(), WalError>,
    ) -> Result<(Wal, ReplayReport), WalError> {
        config.validate()?;
        std::fs::create_dir_all(dir).map_err(|e| PathIoError::new("create", dir, e))?;
        let recovered = replay::replay(dir, config.truncate_corrupt, needed_from, &mut apply).await?;
        let report = recovered.report.clone();
        let (shared, writer) = writer::start(dir, config, recovered).await?;
        Ok((Wal { shared, writer: Some(writer) }, report))
    }

    /// Appends one record. The record is framed and given its LSN synchronously, in call order;
    /// the future resolves with the LSN once the record is acknowledged under the sync mode.
    /// When `max_pending_bytes` are already waiting, the record waits (in call order) for room
    /// and gets its LSN when admitted. Dropping the future does not withdraw an admitted record.
    pub fn append(&self, payload: &[u8]) -> AppendFuture {
        writer::append(&self.shared, payload)
    }

    /// Forces everything appended so far to be written and durable (appends still waiting
    /// for room under `max_pending_bytes` have no LSN yet and are not covered).
    pub async fn sync(&self) -> Result<(), WalError> {
        writer::sync(&self.shared).await
    }

    /// Deletes the sealed segments all of whose records have `lsn <= flushed` (never the active
    /// segment); returns how many.
    pub async fn release_through(&self, flushed: Lsn) -> Result<usize, WalError> {
        writer::release_through(&self.shared, flushed)
    }

    pub fn stats(&self) -> WalStats {
        self.shared.stats()
    }

    /// Writes and syncs everything admitted, stops the writer and closes the files. Appends still
    /// waiting for room fail with [`WalError::Closed`].
    pub async fn close(mut self) -> Result<(), WalError> {
        self.shared.request_stop();
        let writer = self.writer.take();
        let outcome = match writer {
            Some(handle) => handle.await,
            None => Some(Ok(())),
        };
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(cause)) => Err(WalError::Failed(cause)),
            // The writer task was cancelled from outside (executor shutting down).
            None => Err(WalError::Closed),
        }
    }
}

impl Drop for Wal {
    /// Without `close`: refuse new appends and let the detached writer finish what was admitted.
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.shared.request_stop();
        }
    }
}

//! Segment files on disk: naming, creation (pre-allocated, directory synced), reading whole
//! segments in bounded chunks, and the append-only writer of the active segment (O_DIRECT and
//! O_DSYNC in Batch mode, through the page cache in Periodic mode). Every write is block
//! aligned and rewrites the last partial block from the in-memory tail; nothing here decides
//! what a record means.

use std::cell::Cell;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use super::format::{align_down, align_up, SegmentHeader, SegmentId, BLOCK_SIZE};
use super::{Lsn, WalError};
use crate::io::{sync_dir, PathIoError};

/// Largest single read or write issued to the device (docs/GLOMMIO.md pitfall 3: reads beyond the
/// device's `max_sectors_kb` can hang; writes are kept to the same bound).
pub const MAX_IO_SIZE: usize = 1 << 20;

/// Page-cache appends start the writeback of what they wrote every this many bytes (see
/// `ActiveSegment::start_writeback`).
pub const WRITEBACK_EVERY: u64 = 1 << 20;

/// Largest segment file this code will read or create (bounds replay memory: a segment is read
/// whole).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// How long opening a segment waits for a previous owner's open file to be released (see
/// [`lock_segment`]) before it gives up with an error.
pub const SEGMENT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// File name extension of segments.
const SEGMENT_EXTENSION: &str = ".wal";

/// Suffix of a segment being created: it gets its final name only once pre-allocated, so a
/// segment file under its own name always has its full size (replay removes leftovers).
pub const STAGING_SUFFIX: &str = ".tmp";

/// Digits of the zero-padded decimal segment id in a file name (u64::MAX has 20).
const SEGMENT_ID_DIGITS: usize = 20;

/// `<id as 20 decimal digits>.wal`: names sort like ids.
pub fn segment_file_name(id: SegmentId) -> String {
    format!("{id:0width$}{SEGMENT_EXTENSION}", width = SEGMENT_ID_DIGITS)
}

/// The id in a segment file name, or `None` if the name is not one.
pub fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_suffix(SEGMENT_EXTENSION)?;
    if digits.len() != SEGMENT_ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Removes segments whose creation a crash interrupted (`<name>.wal.tmp`): they were never
/// named as segments, so nothing was ever written to them. Returns how many.
pub fn remove_staging_leftovers(dir: &Path) -> Result<usize, WalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PathIoError::new("list", dir, e))?;
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| PathIoError::new("list", dir, e))?;
        let name = entry.file_name();
        let staged = name.to_str().and_then(|n| n.strip_suffix(STAGING_SUFFIX)).and_then(parse_segment_file_name);
        if staged.is_some() {
            std::fs::remove_file(entry.path()).map_err(|e| io_error("remove", &entry.path(), e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir).map_err(|e| io_error("sync directory", dir, e))?;
    }
    Ok(removed)
}

/// Segment files in `dir`, in id order. Other files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<(SegmentId, PathBuf)>, WalError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PathIoError::new("list", dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PathIoError::new("list", dir, e))?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(parse_segment_file_name) else {
            continue;
        };
        let is_file = entry.file_type().map_err(|e| PathIoError::new("stat", entry.path(), e))?.is_file();
        if is_file {
            segments.push((id, entry.path()));
        }
    }
    segments.sort_by_key(|(id, _)| *id);
    Ok(segments)
}

pub(crate) fn io_error(op: &'static str, path: &Path, err: impl Into<std::io::Error>) -> WalError {
    WalError::Io(PathIoError::new(op, path, err.into()))
}

/// Takes an exclusive `flock` on `file`, waiting (polling, up to [`SEGMENT_LOCK_WAIT`]) while
/// another open file of the segment holds it.
///
/// Why: a process killed with a write in flight does not wait for it. Its direct writes were
/// handed to io_uring and may reach the file after the process is gone (the kernel completes
/// them asynchronously, and `wait(2)` on the killed process returns before). A restart that
/// read the segment before such a write lands, and then rewrote its last block, would leave
/// a hole in the log. Every writer of a segment holds this lock on the descriptor it writes
/// through; a lock lives as long as its open file, and an in-flight io_uring request keeps the
/// open file alive until it completes. So replay, which takes the lock before it reads, sees
/// every write of the previous owner or waits for it.
pub async fn lock_segment(file: &impl AsRawFd, path: &Path) -> Result<SegmentLock, WalError> {
    lock_segment_within(file, path, SEGMENT_LOCK_WAIT).await
}

/// The lock [`lock_segment`] took. Closing its file ends it; dropping it first (a segment
/// dropped without `close`, whose file glommio closes later, maybe never once its executor is
/// gone) releases it at once, so that this process can open the segment again.
#[must_use = "dropping it releases the lock"]
#[derive(Debug)]
pub struct SegmentLock {
    fd: Option<std::os::unix::io::RawFd>,
}

impl SegmentLock {
    /// Leaves the lock to the file's close (the descriptor may be reused after it: never
    /// unlock through it then).
    fn disarm(mut self) {
        self.fd = None;
    }
}

impl Drop for SegmentLock {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            // SAFETY: a plain syscall; the descriptor is still open (its file is dropped after
            // this lock, and `disarm` ran before any explicit close).
            unsafe { libc::flock(fd, libc::LOCK_UN) };
        }
    }
}

/// [`lock_segment`], giving up after `wait`.
pub(crate) async fn lock_segment_within(
    file: &impl AsRawFd,
    path: &Path,
    wait: std::time::Duration,
) -> Result<SegmentLock, WalError> {
    let deadline = std::time::Instant::now() + wait;
    let mut waited = false;
    loop {
        // SAFETY: a plain syscall on a descriptor the caller owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            if waited {
                tracing::warn!(segment = %path.display(), "WAL segment released by its previous owner's last write");
            }
            return Ok(SegmentLock { fd: Some(file.as_raw_fd()) });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_error("lock", path, err));
        }
        if std::time::Instant::now() >= deadline {
            let busy = std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "another open file of the segment still holds its lock after {:?} (a process still \
                     writing it, or a killed one's writes still in flight)",
                    wait
                ),
            );
            return Err(io_error("lock", path, busy));
        }
        waited = true;
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Reads a whole segment file, in reads of at most [`MAX_IO_SIZE`], once no other open file of
/// it holds its lock ([`lock_segment`]).
pub async fn read_segment(path: &Path) -> Result<Vec<u8>, WalError> {
    let file = OpenOptions::new().read(true).dma_open(path).await.map_err(|e| io_error("open", path, e))?;
    let result = match lock_segment(&file, path).await {
        Ok(lock) => {
            let bytes = read_all(&file, path).await;
            lock.disarm();
            bytes
        }
        Err(e) => Err(e),
    };
    let closed = file.close().await.map_err(|e| io_error("close", path, e));
    let bytes = result?;
    closed?;
    Ok(bytes)
}

async fn read_all(file: &DmaFile, path: &Path) -> Result<Vec<u8>, WalError> {
    let size = file.file_size().await.map_err(|e| io_error("stat", path, e))?;
    if size > MAX_SEGMENT_SIZE {
        return Err(WalError::BadSegmentHeader {
            segment: path.to_path_buf(),
            reason: format!("file is {size} bytes, larger than the {MAX_SEGMENT_SIZE}-byte limit"),
        });
    }
    // Cannot truncate: size <= MAX_SEGMENT_SIZE (1 GiB).
    let size = size as usize;
    let mut bytes = Vec::with_capacity(size);
    while bytes.len() < size {
        let want = MAX_IO_SIZE.min(size - bytes.len());
        let chunk = file.read_at(bytes.len() as u64, want).await.map_err(|e| io_error("read", path, e))?;
        if chunk.is_empty() {
            let err = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file shrank to {} bytes while reading", bytes.len()),
            );
            return Err(io_error("read", path, err));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// I/O counters the segment writer feeds (the WAL's stats).
#[derive(Default)]
pub struct IoCounters {
    pub writes: Cell<u64>,
    pub bytes_written: Cell<u64>,
    pub syncs: Cell<u64>,
    pub writebacks: Cell<u64>,
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get() + by);
}

/// The segment currently appended to, owned by the writer task.
///
/// Invariant: `tail` holds exactly the bytes `[align_down(write_end), write_end)` as they are on
/// disk (or about to be), so the next write can rewrite that block with them unchanged.
pub struct ActiveSegment {
    /// Declared before `file`: released before the file's (deferred) close when dropped.
    lock: SegmentLock,
    file: DmaFile,
    /// Without durable writes (Periodic mode), appends go through the page cache on this
    /// second descriptor of the same file (`pwrite`, in place: microseconds, unless the kernel
    /// throttles writers over its dirty-page limit): a write that completes there survives the
    /// process (kill -9) just as a direct one does, and costs a copy instead of a device I/O
    /// (on a virtual disk, an exit to the hypervisor per write). The period's fdatasync makes
    /// them durable. Replay's direct reads see them: Linux writes dirty pages back before a
    /// direct read of their range.
    page_cache: Option<std::fs::File>,
    /// Page-cache writes before this offset were handed to writeback
    /// ([`WRITEBACK_EVERY`]).
    writeback_from: u64,
    pub id: SegmentId,
    pub path: PathBuf,
    write_end: u64,
    tail: Vec<u8>,
    /// Opened `O_DSYNC`: an append is durable once it completes.
    durable_writes: bool,
}

/// Extra open(2) flags of an active segment: `O_DSYNC` when each write must be durable on
/// completion (Batch mode).
fn open_flags(durable_writes: bool) -> i32 {
    if durable_writes {
        libc::O_DSYNC
    } else {
        0
    }
}

impl ActiveSegment {
    /// Creates segment `id` under a staging name, pre-allocates `segment_size` bytes, gives it
    /// its name and makes the directory entry durable. Its header is not written yet: the caller passes the encoded header as the first
    /// bytes of its first [`ActiveSegment::append`]. With `durable_writes` the file is opened
    /// `O_DSYNC`: each append completes only once it is durable, as if an fdatasync had followed.
    pub async fn create(
        dir: &Path,
        id: SegmentId,
        segment_size: u64,
        durable_writes: bool,
    ) -> Result<ActiveSegment, WalError> {
        let path = dir.join(segment_file_name(id));
        let staging = dir.join(format!("{}{STAGING_SUFFIX}", segment_file_name(id)));
        match std::fs::remove_file(&staging) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error("remove", &staging, e)),
            _ => {}
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(open_flags(durable_writes))
            .dma_open(&staging)
            .await
            .map_err(|e| io_error("create", &staging, e))?;
        // A new file: nobody else holds it.
        let lock = lock_segment(&file, &staging).await?;
        let mut segment = ActiveSegment {
            lock,
            file,
            page_cache: None,
            writeback_from: 0,
            id,
            path: staging.clone(),
            write_end: 0,
            tail: Vec::new(),
            durable_writes,
        };
        if let Err(e) = segment.prepare(segment_size).await {
            // A full disk: leave nothing behind, so a retry starts from a clean directory.
            let _ = segment.file.close().await;
            let _ = std::fs::remove_file(&staging);
            return Err(e);
        }
        if path.exists() {
            let _ = segment.file.close().await;
            let _ = std::fs::remove_file(&staging);
            let exists = std::io::Error::new(std::io::ErrorKind::AlreadyExists, "segment already exists");
            return Err(io_error("create", &path, exists));
        }
        std::fs::rename(&staging, &path).map_err(|e| io_error("rename", &staging, e))?;
        segment.path = path;
        segment.page_cache = open_page_cache(&segment.path, durable_writes)?;
        sync_dir(dir).map_err(|e| io_error("sync directory of", &segment.path, e))?;
        Ok(segment)
    }

    /// Reopens an existing segment whose good records end at `write_end`; `tail` is the content
    /// of the partial block before it (`write_end % BLOCK_SIZE` bytes). `durable_writes` as for
    /// [`ActiveSegment::create`].
    pub async fn reopen(
        path: &Path,
        id: SegmentId,
        write_end: u64,
        tail: Vec<u8>,
        segment_size: u64,
        durable_writes: bool,
    ) -> Result<ActiveSegment, WalError> {
        assert_eq!(tail.len() as u64, write_end % BLOCK_SIZE as u64, "tail must be the partial block");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(open_flags(durable_writes))
            .dma_open(path)
            .await
            .map_err(|e| io_error("open", path, e))?;
        let lock = lock_segment(&file, path).await?;
        let page_cache = open_page_cache(path, durable_writes)?;
        let path = path.to_path_buf();
        let writeback_from = align_down(write_end, BLOCK_SIZE as u64);
        let mut segment =
            ActiveSegment { lock, file, page_cache, writeback_from, id, path, write_end, tail, durable_writes };
        segment.prepare(segment_size).await?;
        Ok(segment)
    }

    async fn prepare(&mut self, segment_size: u64) -> Result<(), WalError> {
        assert!(
            (BLOCK_SIZE as u64).is_multiple_of(self.file.alignment()),
            "device alignment {} does not divide the WAL block size",
            self.file.alignment()
        );
        // Allocating the extent up front keeps later fdatasyncs free of block allocation, and
        // the file size stays put (keep_size = false sets it to segment_size once).
        self.file.pre_allocate(segment_size, false).await.map_err(|e| io_error("pre-allocate", &self.path, e))
    }

    /// Offset where the next record goes.
    pub fn write_end(&self) -> u64 {
        self.write_end
    }

    /// Whether an append is durable once it completes (the file is opened `O_DSYNC`).
    pub fn durable_writes(&self) -> bool {
        self.durable_writes
    }

    /// Writes `parts` (concatenated) at `write_end`, rewriting the partial last block first.
    /// One write in flight at a time, each at most [`MAX_IO_SIZE`]. With durable writes the
    /// append counts as one sync in `io` (the point where the log became durable).
    pub async fn append(&mut self, parts: &[&[u8]], io: &IoCounters) -> Result<(), WalError> {
        let body_len: usize = parts.iter().map(|p| p.len()).sum();
        let start = align_down(self.write_end, BLOCK_SIZE as u64);
        let total = self.tail.len() + body_len;
        let mut done = 0;
        while done < total {
            let len = MAX_IO_SIZE.min(total - done);
            let padded = align_up(len as u64, BLOCK_SIZE as u64) as usize;
            let mut buf = self.file.alloc_dma_buffer(padded);
            let dst = buf.as_bytes_mut();
            copy_concatenated(&self.tail, parts, done, &mut dst[..len]);
            dst[len..].fill(0);
            self.write_block_aligned(buf, start + done as u64, padded, io).await?;
            done += len;
        }
        self.write_end += body_len as u64;
        let keep = (self.write_end % BLOCK_SIZE as u64) as usize;
        let mut tail = vec![0u8; keep];
        copy_concatenated(&self.tail, parts, total - keep, &mut tail);
        self.tail = tail;
        if self.durable_writes {
            bump(&io.syncs, 1);
        }
        self.start_writeback(io);
        Ok(())
    }

    /// Page-cache writes only: once [`WRITEBACK_EVERY`] bytes of whole blocks were written
    /// since the last call, asks the kernel to start writing them back (`sync_file_range`
    /// with `SYNC_FILE_RANGE_WRITE`: it starts the I/O and does not wait for it). Without it
    /// a segment's dirty pages sit in memory until the fdatasync that seals the segment or
    /// ends the period, which then writes up to a whole segment while every append of the
    /// shard waits (RocksDB's `wal_bytes_per_sync` does the same). The partial last block is
    /// left out: the next append rewrites it, and writing to a page under writeback can wait
    /// for that writeback.
    fn start_writeback(&mut self, io: &IoCounters) {
        let Some(file) = &self.page_cache else { return };
        let whole = align_down(self.write_end, BLOCK_SIZE as u64);
        if whole < self.writeback_from + WRITEBACK_EVERY {
            return;
        }
        let (offset, len) = (self.writeback_from, whole - self.writeback_from);
        // SAFETY: a plain syscall on a descriptor this segment owns; no memory is passed.
        let rc =
            unsafe { libc::sync_file_range(file.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            // Only a hint: the period's fdatasync still makes the bytes durable (and reports a
            // real I/O error).
            tracing::debug!(path = %self.path.display(), error = %std::io::Error::last_os_error(), "sync_file_range failed");
        }
        self.writeback_from = whole;
        bump(&io.writebacks, 1);
    }

    /// Overwrites `[write_end, through)` with zeros (keeping the partial block's good bytes), so
    /// no stale bytes from a torn write can later be mistaken for records. Does not move
    /// `write_end`.
    pub async fn zero_after_end(&mut self, through: u64, io: &IoCounters) -> Result<(), WalError> {
        let mut pos = align_down(self.write_end, BLOCK_SIZE as u64);
        let stop = align_up(through, BLOCK_SIZE as u64);
        while pos < stop {
            let len = (MAX_IO_SIZE as u64).min(stop - pos) as usize;
            let mut buf = self.file.alloc_dma_buffer(len);
            let dst = buf.as_bytes_mut();
            dst.fill(0);
            if pos < self.write_end {
                dst[..self.tail.len()].copy_from_slice(&self.tail);
            }
            self.write_block_aligned(buf, pos, len, io).await?;
            pos += len as u64;
        }
        Ok(())
    }

    async fn write_block_aligned(
        &self,
        buf: glommio::io::DmaBuffer,
        pos: u64,
        len: usize,
        io: &IoCounters,
    ) -> Result<(), WalError> {
        debug_assert!(pos.is_multiple_of(BLOCK_SIZE as u64) && len.is_multiple_of(BLOCK_SIZE));
        let written = match &self.page_cache {
            // A copy into the page cache, done in place: through io_uring it is handed to a
            // kernel worker thread (a context switch per write), which cost more than the copy.
            Some(file) => file.write_at(buf.as_bytes(), pos).map_err(|e| io_error("write", &self.path, e))?,
            None => self.file.write_at(buf, pos).await.map_err(|e| io_error("write", &self.path, e))?,
        };
        bump(&io.writes, 1);
        bump(&io.bytes_written, written as u64);
        if written != len {
            let err = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at offset {pos}"),
            );
            return Err(io_error("write", &self.path, err));
        }
        Ok(())
    }

    pub async fn sync(&self, io: &IoCounters) -> Result<(), WalError> {
        self.file.fdatasync().await.map_err(|e| io_error("fdatasync", &self.path, e))?;
        bump(&io.syncs, 1);
        Ok(())
    }

    pub async fn close(self) -> Result<(), WalError> {
        drop(self.page_cache);
        // No write is in flight (each is awaited), and closing ends the lock with the file.
        self.lock.disarm();
        self.file.close().await.map_err(|e| io_error("close", &self.path, e))
    }
}

/// The page-cache descriptor of a segment whose writes need not be durable on completion.
fn open_page_cache(path: &Path, durable_writes: bool) -> Result<Option<std::fs::File>, WalError> {
    if durable_writes {
        return Ok(None);
    }
    let file = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| io_error("open", path, e))?;
    Ok(Some(file))
}

/// Encodes the header block of a new segment, stamped with the current time.
pub fn new_segment_header(id: SegmentId, first_lsn: Lsn) -> Vec<u8> {
    let created_at_micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
    SegmentHeader { segment_id: id, first_lsn, created_at_micros }.encode()
}

/// Copies `dst.len()` bytes starting at offset `from` of the concatenation `first ++ rest[0] ++
/// rest[1] ...` into `dst`. The caller guarantees the range lies inside the concatenation.
fn copy_concatenated(first: &[u8], rest: &[&[u8]], from: usize, dst: &mut [u8]) {
    let mut skip = from;
    let mut filled = 0;
    for part in std::iter::once(first).chain(rest.iter().copied()) {
        if filled == dst.len() {
            break;
        }
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        let n = (part.len() - skip).min(dst.len() - filled);
        dst[filled..filled + n].copy_from_slice(&part[skip..skip + n]);
        filled += n;
        skip = 0;
    }
    assert_eq!(filled, dst.len(), "copy range outside the concatenated parts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_names_round_trip_and_sort_like_ids() {
        assert_eq!(segment_file_name(7), "00000000000000000007.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("7.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.wal"), None);
        assert_eq!(parse_segment_file_name("00000000000000000007.log"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.wal"), None); // > u64::MAX
        assert!(segment_file_name(9) < segment_file_name(10));
    }

    #[test]
    fn copy_concatenated_spans_parts() {
        let all: Vec<u8> = (0u8..30).collect();
        let (a, rest) = all.split_at(5);
        let (b, c) = rest.split_at(0);
        let (c, d) = c.split_at(12);
        for from in 0..all.len() {
            for len in 0..=all.len() - from {
                let mut dst = vec![0xEEu8; len];
                copy_concatenated(a, &[b, c, d], from, &mut dst);
                assert_eq!(dst, &all[from..from + len], "from {from} len {len}");
            }
        }
    }
}

//! Writes one SSTable file from partitions given in storage order: entries are encoded into
//! data blocks, blocks are streamed into DMA buffers, and each full buffer is written while the
//! encoder fills the next (one write in flight ahead of the encoder). `finish` appends the index,
//! bloom filter, metadata and footer and makes the file and its directory entry durable.
//! It never leaves a partial file behind on purpose (abort, a failed finish and drop remove it),
//! and never writes a file whose partitions are out of order.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use glommio::task::JoinHandle;
use wire::schema::TableId;
use wire::token::token_of;

use super::bloom::BloomFilter;
use super::format::{
    BlockBuilder, Footer, IndexBuilder, IndexEntry, Section, FILE_ALIGN, MAX_DATA_BLOCK_LEN, MAX_INDEX_LEN, MAX_KEY_LEN,
};
use super::meta::{PartitionStats, SstableMeta};
use super::{io_error, SstableConfig, SstableError};
use crate::cell::Cell;
use crate::io::sync_dir;
use crate::key::PartitionKey;
use crate::row::PartitionRows;

/// How long the encoder sleeps right after handing a buffer to the device. glommio queues a DMA
/// write in its submission ring and only submits it to the kernel when the executor loop polls
/// I/O, which a task that keeps encoding never lets it do; a timer this short makes the task
/// pend, the loop submits the write, and the encoder resumes at once, so the write runs while
/// the next buffer is encoded. Once per `write_buffer` bytes; it also lets other tasks run.
const SUBMIT_PAUSE: Duration = Duration::from_micros(1);

/// Writes one SSTable. Lives on one glommio executor (`!Send`).
///
/// `crate::io::prepare_executor_io` must have run on this executor first.
pub struct SstableWriter {
    path: PathBuf,
    /// `None` once finished or aborted; while `Some`, dropping the writer removes the file.
    inner: Option<Inner>,
}

struct Inner {
    path: PathBuf,
    config: SstableConfig,
    table: TableId,
    shard: u16,
    generation: u64,
    created_at: u64,
    out: Output,
    block: BlockBuilder,
    index: IndexBuilder,
    bloom: BloomFilter,
    stats: PartitionStats,
    first_key: Option<PartitionKey>,
    last_key: Option<PartitionKey>,
    /// Set by a failed write: the file is unusable and the writer accepts nothing more.
    failed: bool,
}

impl SstableWriter {
    /// Creates `path` (which must not exist) for the partitions of `table` in `shard`.
    /// `expected_partitions` sizes the bloom filter: more partitions than that raise its
    /// false-positive rate above `config.bloom_fp_rate`.
    pub async fn create(
        path: &Path,
        table: TableId,
        shard: u16,
        generation: u64,
        expected_partitions: usize,
        config: &SstableConfig,
    ) -> Result<SstableWriter, SstableError> {
        config.validate()?;
        // Write-only: the file is never read through this handle (docs/GLOMMIO.md pitfall 2).
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(|e| io_error("create", path, e))?;
        if !FILE_ALIGN.is_multiple_of(file.alignment()) {
            let alignment = file.alignment();
            let _ = file.close().await;
            let _ = std::fs::remove_file(path);
            let err = std::io::Error::other(format!("device alignment {alignment} does not divide {FILE_ALIGN}"));
            return Err(io_error("create", path, err));
        }
        let file = Rc::new(file);
        let buf = file.alloc_dma_buffer(config.write_buffer);
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let inner = Inner {
            path: path.to_path_buf(),
            config: config.clone(),
            table,
            shard,
            generation,
            created_at,
            out: Output {
                file,
                path: path.to_path_buf(),
                buffer_size: config.write_buffer,
                buf,
                filled: 0,
                buf_pos: 0,
                in_flight: None,
            },
            block: BlockBuilder::new(config.block_size + config.block_size / 4),
            index: IndexBuilder::default(),
            bloom: BloomFilter::with_rate(expected_partitions, config.bloom_fp_rate),
            stats: PartitionStats::default(),
            first_key: None,
            last_key: None,
            failed: false,
        };
        Ok(SstableWriter { path: path.to_path_buf(), inner: Some(inner) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes handed to the device so far (data blocks streamed out, excluding the block being
    /// built and the buffer being filled).
    pub fn bytes_written(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.out.buf_pos)
    }

    /// Appends one partition. Partitions must come in strictly increasing [`PartitionKey`]
    /// order ([`SstableError::OutOfOrder`] otherwise, and nothing is written). A failed write
    /// makes this and every later call fail; the caller then drops or aborts the writer.
    pub async fn add(&mut self, key: &PartitionKey, partition: &impl PartitionRows) -> Result<(), SstableError> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(SstableError::WriterFailed { path: self.path.clone() });
        };
        inner.check_partition(key)?;
        let result = inner.append(key, partition).await;
        if result.is_err() {
            inner.failed = true;
        }
        result
    }

    /// Writes the index, bloom filter, metadata and footer, fdatasyncs the file and fsyncs its
    /// directory. On error the partial file is removed. An SSTable without partitions is refused
    /// ([`SstableError::Empty`]).
    pub async fn finish(mut self) -> Result<SstableMeta, SstableError> {
        let Some(inner) = self.inner.take() else {
            return Err(SstableError::WriterFailed { path: self.path.clone() });
        };
        let file = inner.out.file.clone();
        let result = inner.finish().await;
        match result {
            Ok(meta) => {
                let closed = match Rc::try_unwrap(file) {
                    Ok(file) => file.close().await.map_err(|e| io_error("close", &self.path, e)),
                    // Another handle cannot exist once every write was awaited; dropping closes.
                    Err(_) => Ok(()),
                };
                let synced = closed.and_then(|()| {
                    let dir = self.path.parent().unwrap_or(Path::new("."));
                    sync_dir(dir).map_err(|e| io_error("sync directory of", &self.path, e))
                });
                if let Err(e) = synced {
                    remove_partial(&self.path);
                    return Err(e);
                }
                Ok(meta)
            }
            Err(e) => {
                drop(file);
                remove_partial(&self.path);
                Err(e)
            }
        }
    }

    /// Abandons the file: waits for the write in flight, closes and removes the file.
    pub async fn abort(mut self) {
        if let Some(mut inner) = self.inner.take() {
            if let Some(write) = inner.out.in_flight.take() {
                let _ = write.await;
            }
            let file = inner.out.file.clone();
            drop(inner);
            if let Ok(file) = Rc::try_unwrap(file) {
                let _ = file.close().await;
            }
        }
        remove_partial(&self.path);
    }
}

impl Drop for SstableWriter {
    /// A writer dropped before `finish` or `abort` removes its partial file (best effort; the
    /// write in flight, if any, is cancelled with its task).
    fn drop(&mut self) {
        if self.inner.take().is_some() {
            remove_partial(&self.path);
        }
    }
}

fn remove_partial(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove a partial SSTable"),
    }
}

impl Inner {
    /// Everything that can be refused before a byte is encoded, so a refusal leaves the writer
    /// usable.
    fn check_partition(&self, key: &PartitionKey) -> Result<(), SstableError> {
        if self.failed {
            return Err(SstableError::WriterFailed { path: self.path.clone() });
        }
        if let Some(last) = &self.last_key {
            if key <= last {
                return Err(SstableError::OutOfOrder {
                    path: self.path.clone(),
                    previous: last.clone(),
                    next: key.clone(),
                });
            }
        }
        if token_of(key.bytes()) != key.token() {
            return Err(SstableError::InconsistentKey { path: self.path.clone(), key: key.clone() });
        }
        let too_large = |what, size: usize| SstableError::TooLarge {
            path: self.path.clone(),
            what,
            size: size as u64,
            limit: MAX_KEY_LEN as u64,
        };
        if key.bytes().len() > MAX_KEY_LEN {
            return Err(too_large("partition key", key.bytes().len()));
        }
        // Clustering keys are checked as their rows are appended: a pass over a partition of
        // a million rows here held the shard (`append` yields at every block).
        Ok(())
    }

    async fn append(&mut self, key: &PartitionKey, partition: &impl PartitionRows) -> Result<(), SstableError> {
        self.bloom.insert(key.bytes());
        self.stats.add_partition(partition.deletion());
        if self.first_key.is_none() {
            self.first_key = Some(key.clone());
        }
        self.last_key = Some(key.clone());
        // A partition that fits in one block never straddles two, so a point read of it reads
        // one block: close the block early rather than split it.
        if !self.block.is_empty() {
            let room = self.config.block_size.saturating_sub(self.block.payload().len());
            let fits_alone = encoded_len_up_to(key, partition, self.config.block_size + 1);
            if fits_alone > room && fits_alone <= self.config.block_size {
                self.close_block().await?;
            }
        }
        self.block.push_partition_header(key, partition.deletion());
        self.close_block_if_full().await?;
        for (clustering, row) in partition.rows() {
            if clustering.as_bytes().len() > MAX_KEY_LEN {
                return Err(SstableError::TooLarge {
                    path: self.path.clone(),
                    what: "clustering key",
                    size: clustering.as_bytes().len() as u64,
                    limit: MAX_KEY_LEN as u64,
                });
            }
            self.stats.add_row(row);
            self.block.push_row(key, clustering, row);
            self.close_block_if_full().await?;
        }
        Ok(())
    }

    /// A block closes after the entry that crosses `block_size`.
    async fn close_block_if_full(&mut self) -> Result<(), SstableError> {
        let len = self.block.encoded_len();
        if len > MAX_DATA_BLOCK_LEN {
            return Err(SstableError::TooLarge {
                path: self.path.clone(),
                what: "data block (one row)",
                size: len as u64,
                limit: MAX_DATA_BLOCK_LEN as u64,
            });
        }
        if self.block.payload().len() >= self.config.block_size {
            self.close_block().await?;
        }
        Ok(())
    }

    async fn close_block(&mut self) -> Result<(), SstableError> {
        let Some(frame) = self.block.finish() else { return Ok(()) };
        let offset = self.out.position();
        // frame.len <= MAX_DATA_BLOCK_LEN (checked after every entry) < u32::MAX.
        self.index.push(&IndexEntry { offset, len: frame.len as u32, first: frame.first });
        if self.index.section_len() > MAX_INDEX_LEN {
            return Err(SstableError::TooLarge {
                path: self.path.clone(),
                what: "index",
                size: self.index.section_len() as u64,
                limit: MAX_INDEX_LEN as u64,
            });
        }
        self.out.put(&frame.header).await?;
        self.out.put(self.block.payload()).await?;
        self.out.put(&frame.crc).await?;
        self.block.clear();
        // A long flush or compaction must not stall the shard's reads.
        glommio::yield_if_needed().await;
        Ok(())
    }

    async fn finish(mut self) -> Result<SstableMeta, SstableError> {
        if self.failed {
            return Err(SstableError::WriterFailed { path: self.path.clone() });
        }
        self.close_block().await?;
        let (Some(first_key), Some(last_key)) = (self.first_key.take(), self.last_key.take()) else {
            return Err(SstableError::Empty { path: self.path.clone() });
        };
        let data_end = self.out.position();
        let data_blocks = u64::from(self.index.count());
        let index = std::mem::take(&mut self.index).finish();
        let bloom = self.bloom.encode();
        let index_section = Section { offset: data_end, len: index.len() as u32 };
        let bloom_section = Section { offset: index_section.end(), len: bloom.len() as u32 };
        let s = &self.stats;
        let mut meta = SstableMeta {
            table: self.table,
            shard: self.shard,
            generation: self.generation,
            file_size: 0,
            created_at: self.created_at,
            min_token: first_key.token(),
            max_token: last_key.token(),
            first_key,
            last_key,
            min_timestamp: s.min_timestamp,
            max_timestamp: s.max_timestamp,
            partitions: s.partitions,
            rows: s.rows,
            live_cells: s.live_cells,
            tombstones: s.tombstones,
            expiring_cells: s.expiring_cells,
            max_deletion_time: s.max_deletion_time,
            data_blocks,
            index_bytes: index.len() as u64,
            bloom_bytes: bloom.len() as u64,
        };
        // The encoding's length does not depend on the value of file_size (a fixed u64).
        let meta_len = meta.encode_section().len();
        let meta_section = Section { offset: bloom_section.end(), len: meta_len as u32 };
        meta.file_size = Footer::file_size_after(meta_section.end());
        let footer = Footer { data_end, index: index_section, bloom: bloom_section, meta: meta_section };
        self.out.put(&index).await?;
        self.out.put(&bloom).await?;
        self.out.put(&meta.encode_section()).await?;
        let padding = Footer::position(meta.file_size) - meta_section.end();
        self.out.put_zeros(padding as usize).await?;
        self.out.put(&footer.encode()).await?;
        debug_assert_eq!(self.out.position(), meta.file_size);
        self.out.flush_last().await?;
        self.out.file.fdatasync().await.map_err(|e| io_error("fdatasync", &self.path, e))?;
        Ok(meta)
    }
}

/// Bytes `partition` takes in a block when written whole into one run (the layouts of
/// `format::BlockBuilder` and `row_codec`), counted only up to `limit`: wide partitions stop the
/// count early, so the cost is bounded by the block size, not the partition.
fn encoded_len_up_to(key: &PartitionKey, partition: &impl PartitionRows, limit: usize) -> usize {
    let cell_len = |c: &Cell| match c {
        Cell::Live { value, .. } => 1 + 8 + 4 + value.len(),
        Cell::Expiring { value, .. } => 1 + 8 + 4 + value.len() + 8,
        Cell::Tombstone { .. } => 1 + 8 + 4,
    };
    let deletion_len = if partition.deletion().is_some() { 13 } else { 1 };
    // Run: token, key length, key, run length; then the header entry.
    let mut len = 8 + 4 + key.bytes().len() + 4 + 1 + deletion_len;
    for (clustering, row) in partition.rows() {
        if len >= limit {
            break;
        }
        len += 1 + 4 + clustering.as_bytes().len() + 1 + 4;
        len += row.marker.as_ref().map_or(0, cell_len);
        len += if row.deletion.is_some() { 12 } else { 0 };
        len += row.cells.iter().map(|(_, c)| 2 + cell_len(c)).sum::<usize>();
    }
    len.min(limit)
}

/// The stream of bytes into the file: fills one DMA buffer while the previous one is written.
///
/// Invariant: `buf_pos` is a multiple of `buffer_size` (hence of 4096) and every byte before it
/// was handed to a write; at most one write is in flight.
struct Output {
    file: Rc<DmaFile>,
    path: PathBuf,
    buffer_size: usize,
    buf: DmaBuffer,
    filled: usize,
    buf_pos: u64,
    in_flight: Option<JoinHandle<Result<(), SstableError>>>,
}

impl Output {
    fn position(&self) -> u64 {
        self.buf_pos + self.filled as u64
    }

    async fn put(&mut self, mut bytes: &[u8]) -> Result<(), SstableError> {
        while !bytes.is_empty() {
            let n = bytes.len().min(self.buffer_size - self.filled);
            self.buf.as_bytes_mut()[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == self.buffer_size {
                self.issue().await?;
            }
        }
        Ok(())
    }

    async fn put_zeros(&mut self, mut n: usize) -> Result<(), SstableError> {
        while n > 0 {
            let k = n.min(self.buffer_size - self.filled);
            self.buf.as_bytes_mut()[self.filled..self.filled + k].fill(0);
            self.filled += k;
            n -= k;
            if self.filled == self.buffer_size {
                self.issue().await?;
            }
        }
        Ok(())
    }

    /// Waits for the write in flight, then starts writing the filled part of the buffer (a
    /// multiple of 4096 bytes) and continues into a fresh buffer.
    async fn issue(&mut self) -> Result<(), SstableError> {
        self.wait().await?;
        let len = self.filled;
        debug_assert!(len > 0 && (len as u64).is_multiple_of(FILE_ALIGN));
        let mut buf = std::mem::replace(&mut self.buf, self.file.alloc_dma_buffer(self.buffer_size));
        if len < buf.len() {
            buf.trim_to_size(len);
        }
        let (file, path, pos) = (self.file.clone(), self.path.clone(), self.buf_pos);
        let write = glommio::spawn_local(async move {
            let written = file.write_at(buf, pos).await.map_err(|e| io_error("write", &path, e))?;
            if written != len {
                let err = std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {written} of {len} bytes at offset {pos}"),
                );
                return Err(io_error("write", &path, err));
            }
            Ok(())
        })
        .detach();
        self.in_flight = Some(write);
        self.buf_pos += len as u64;
        self.filled = 0;
        glommio::timer::sleep(SUBMIT_PAUSE).await;
        Ok(())
    }

    async fn wait(&mut self) -> Result<(), SstableError> {
        match self.in_flight.take() {
            None => Ok(()),
            Some(write) => match write.await {
                Some(result) => result,
                None => Err(io_error("write", &self.path, std::io::Error::other("write task cancelled"))),
            },
        }
    }

    /// Writes the last, partially filled buffer (the file ends on a 4096-byte boundary) and
    /// waits for every write.
    async fn flush_last(&mut self) -> Result<(), SstableError> {
        if self.filled > 0 {
            self.issue().await?;
        }
        self.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Deletion;
    use crate::key::ClusteringKey;
    use crate::row::Partition;
    use crate::row::Row;
    use crate::sstable::format::BlockBuilder;

    /// The size estimate that keeps small partitions in one block is exact.
    #[test]
    fn partition_length_matches_the_block_encoding() {
        let key = PartitionKey::from_serialized(b"some key".to_vec());
        let mut p = Partition { deletion: Some(Deletion { ts: 1, deleted_at: 2 }), ..Partition::default() };
        let cells = vec![
            (0, Cell::Live { ts: 1, value: vec![1; 10] }),
            (2, Cell::Expiring { ts: 1, value: vec![2; 3], ttl: 5, expires_at: 9 }),
            (3, Cell::Tombstone { ts: 1, deleted_at: 4 }),
        ];
        let row = Row {
            marker: Some(Cell::Live { ts: 1, value: vec![] }),
            deletion: Some(Deletion { ts: 0, deleted_at: 1 }),
            cells,
        };
        p.rows.insert(ClusteringKey::from_encoded(vec![1, 2, 3]), row);
        p.rows.insert(ClusteringKey::from_encoded(vec![4]), Row::default());
        let mut b = BlockBuilder::new(0);
        b.push_partition_header(&key, p.deletion);
        for (c, r) in &p.rows {
            b.push_row(&key, c, r);
        }
        assert_eq!(encoded_len_up_to(&key, &p, usize::MAX), b.payload().len());
        assert_eq!(encoded_len_up_to(&key, &p, 10), 10);
    }
}

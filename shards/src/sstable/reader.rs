//! An open SSTable: the footer, metadata, index and bloom filter verified and held in memory,
//! data blocks read on demand through the shard's block cache, for point reads of one partition
//! and streaming token-range scans.
//! It never returns data from a block whose checksum did not match, never reads more than
//! `MAX_IO_SIZE` in one request, and never sizes a buffer by a length the footer or index did not
//! bound by the file's size.

use std::cell::Cell;
use std::cmp::Ordering;
use std::collections::VecDeque;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};
use wire::Token;

use super::bloom::{BloomFilter, BloomHash};
use super::cache::BlockCache;
use super::format::{
    align_down, align_up, block_for_header, decode_index, DataBlock, Entry, EntryPosition, Footer, FooterError,
    IndexEntry, Run, RunEntries, FILE_ALIGN, FOOTER_LEN, SECTION_DATA_BLOCK, SECTION_FOOTER, SECTION_METADATA,
};
use super::meta::SstableMeta;
use super::{io_error, SstableError, SstableId, MAX_IO_SIZE, SCAN_READ_AHEAD_BYTES};
use crate::cell::Deletion;
use crate::key::{ClusteringKey, PartitionKey};
use crate::row::{ClusteringSlice, Partition};
use crate::slice::SourceChunk;

/// Read counters of one open SSTable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SstableReadStats {
    /// Data blocks read from the device (cache misses).
    pub blocks_read: u64,
    pub bytes_read: u64,
    /// Data blocks found in the block cache.
    pub cache_hits: u64,
    /// Point reads answered "absent" by the bloom filter.
    pub bloom_negatives: u64,
    /// Point reads the bloom filter let through.
    pub bloom_positives: u64,
    /// Bloom positives for which the partition was not in the file.
    pub bloom_false_positives: u64,
    /// Point reads answered "absent" because the token is outside the file's token range.
    pub range_rejects: u64,
}

impl SstableReadStats {
    /// Adds another SSTable's counters (for per-shard totals).
    pub fn add(&mut self, other: &SstableReadStats) {
        self.blocks_read += other.blocks_read;
        self.bytes_read += other.bytes_read;
        self.cache_hits += other.cache_hits;
        self.bloom_negatives += other.bloom_negatives;
        self.bloom_positives += other.bloom_positives;
        self.bloom_false_positives += other.bloom_false_positives;
        self.range_rejects += other.range_rejects;
    }
}

/// An open SSTable (`!Send`: lives on its shard's executor).
pub struct Sstable {
    id: SstableId,
    path: PathBuf,
    file: DmaFile,
    file_size: u64,
    meta: SstableMeta,
    index: Vec<IndexEntry>,
    bloom: BloomFilter,
    cache: Rc<BlockCache>,
    stats: Cell<SstableReadStats>,
}

impl Sstable {
    /// Opens and verifies an SSTable: footer (magic, version, checksum, section bounds), then
    /// metadata, index and bloom filter (each checksummed, and consistent with each other and the
    /// file size). Data blocks are verified when read.
    ///
    /// `crate::io::prepare_executor_io` must have run on this executor first.
    pub async fn open(path: &Path, id: SstableId, cache: Rc<BlockCache>) -> Result<Sstable, SstableError> {
        let file = OpenOptions::new().read(true).dma_open(path).await.map_err(|e| io_error("open", path, e))?;
        match load(&file, path).await {
            Ok((file_size, meta, index, bloom)) => Ok(Sstable {
                id,
                path: path.to_path_buf(),
                file,
                file_size,
                meta,
                index,
                bloom,
                cache,
                stats: Cell::new(SstableReadStats::default()),
            }),
            Err(e) => {
                let _ = file.close().await;
                Err(e)
            }
        }
    }

    pub fn id(&self) -> SstableId {
        self.id
    }

    pub fn meta(&self) -> &SstableMeta {
        &self.meta
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn stats(&self) -> SstableReadStats {
        self.stats.get()
    }

    /// Memory held while open: index keys and bloom filter (blocks live in the cache).
    pub fn memory(&self) -> usize {
        let index: usize = self
            .index
            .iter()
            .map(|e| {
                std::mem::size_of::<IndexEntry>() + e.first.key.len() + e.first.row.as_ref().map_or(0, |r| r.len())
            })
            .sum();
        index + self.bloom.memory()
    }

    fn bump(&self, f: impl FnOnce(&mut SstableReadStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn in_token_range(&self, key: &PartitionKey) -> bool {
        (self.meta.min_token..=self.meta.max_token).contains(&key.token())
    }

    /// False when the partition is certainly not in this file (token outside the file's range,
    /// or the bloom filter says so). `hash` is `BloomHash::of(key.bytes())`, computed once by
    /// a caller that looks the key up in several files.
    pub fn may_contain(&self, key: &PartitionKey, hash: BloomHash) -> bool {
        self.in_token_range(key) && self.bloom.may_contain_hash(hash)
    }

    /// The stored versions of one partition's rows inside `slice` (tombstones and expired cells
    /// included, for merging), with its partition deletion; `None` when the file does not hold
    /// the partition. Reads the block that holds the partition's header and, for a partition that
    /// spans blocks, the blocks the slice needs, from the first that can hold its start. `hash`
    /// as for [`Sstable::may_contain`].
    pub async fn read_partition(
        &self,
        key: &PartitionKey,
        hash: BloomHash,
        slice: &ClusteringSlice,
    ) -> Result<Option<Partition>, SstableError> {
        Ok(self.read_bounded(key, hash, slice, None).await?.map(|(partition, _)| partition))
    }

    /// At most `max_rows` of the rows [`Sstable::read_partition`] returns, from the slice's
    /// start: this file's chunk of a bounded read (`crate::slice`). Seeks through the index to
    /// the block that can hold the slice's start and stops decoding once it has `max_rows`
    /// rows, so a page deep in a wide partition reads a few blocks (and the header's).
    pub async fn read_chunk(
        &self,
        key: &PartitionKey,
        hash: BloomHash,
        slice: &ClusteringSlice,
        max_rows: usize,
    ) -> Result<SourceChunk, SstableError> {
        Ok(match self.read_bounded(key, hash, slice, Some(max_rows.max(1))).await? {
            Some((partition, truncated)) => SourceChunk { partition: Some(partition), truncated },
            None => SourceChunk::default(),
        })
    }

    /// The partition's rows in `slice`, at most `max_rows`, and whether it stopped there.
    async fn read_bounded(
        &self,
        key: &PartitionKey,
        hash: BloomHash,
        slice: &ClusteringSlice,
        max_rows: Option<usize>,
    ) -> Result<Option<(Partition, bool)>, SstableError> {
        if !self.in_token_range(key) {
            self.bump(|s| s.range_rejects += 1);
            return Ok(None);
        }
        if !self.bloom.may_contain_hash(hash) {
            self.bump(|s| s.bloom_negatives += 1);
            return Ok(None);
        }
        self.bump(|s| s.bloom_positives += 1);
        let found = self.find_partition(key, slice, max_rows).await?;
        if found.is_none() {
            self.bump(|s| s.bloom_false_positives += 1);
        }
        Ok(found)
    }

    async fn find_partition(
        &self,
        key: &PartitionKey,
        slice: &ClusteringSlice,
        max_rows: Option<usize>,
    ) -> Result<Option<(Partition, bool)>, SstableError> {
        let Some(header) = block_for_header(&self.index, key) else { return Ok(None) };
        let mut rows = RowCollector::new(slice, max_rows);
        let mut partition = Partition::default();
        let mut i = self.first_block_of_slice(header, key, slice);
        let mut continues = true;
        {
            let block = self.block(header).await?;
            let Some(run) = block.find_run(key).map_err(|d| SstableError::corrupt(&self.path, d))? else {
                return Ok(None);
            };
            let mut entries = block.entries(&run);
            partition.deletion = self.partition_header(&block, &mut entries)?;
            if i == header {
                rows.collect(self, &block, &mut entries, &mut partition)?;
                continues = run.end == block.payload().len();
                i += 1;
            }
        }
        while continues && !rows.stopped() {
            let Some(entry) = self.index.get(i) else { break };
            if entry.first.cmp_partition(key) != Ordering::Equal {
                break;
            }
            let Some(first_row) = entry.first.row.as_deref() else {
                return Err(self.corrupt_block(entry.offset, "a partition header repeats"));
            };
            if past_end(slice, first_row) {
                break;
            }
            let block = self.block(i).await?;
            // The block's first run is this partition: checked against the index when decoded.
            let run = block.run_at(0).map_err(|d| SstableError::corrupt(&self.path, d))?;
            let mut entries = block.entries(&run);
            rows.collect(self, &block, &mut entries, &mut partition)?;
            continues = run.end == block.payload().len();
            i += 1;
        }
        Ok(Some((partition, rows.full)))
    }

    /// The first block that can hold a row of `slice` of the partition whose header is in block
    /// `header`: the last of the partition's blocks whose first row is at or before the slice's
    /// start (every row of an earlier block sorts before the next block's first row), found by
    /// a binary search of the index.
    fn first_block_of_slice(&self, header: usize, key: &PartitionKey, slice: &ClusteringSlice) -> usize {
        let start = match &slice.start {
            Bound::Unbounded => return header,
            Bound::Included(p) | Bound::Excluded(p) => p.as_bytes(),
        };
        let later = self.index.get(header + 1..).unwrap_or_default();
        header
            + later.partition_point(|e| {
                e.first.cmp_partition(key) == Ordering::Equal && e.first.row.as_deref().is_some_and(|r| r <= start)
            })
    }

    /// The partition deletion from the header entry that must open a partition's first run.
    fn partition_header(
        &self,
        block: &DataBlock,
        entries: &mut RunEntries<'_>,
    ) -> Result<Option<Deletion>, SstableError> {
        match entries.next_entry().map_err(|d| SstableError::corrupt(&self.path, d))? {
            Some(Entry::PartitionHeader(deletion)) => Ok(deletion),
            _ => Err(self.corrupt_block(block.offset, "partition does not start with its header")),
        }
    }

    fn corrupt_block(&self, offset: u64, reason: &str) -> SstableError {
        SstableError::Corrupt { path: self.path.clone(), section: SECTION_DATA_BLOCK, offset, reason: reason.into() }
    }

    /// Data block `i`, from the cache or read from the device and verified (then cached).
    async fn block(&self, i: usize) -> Result<Rc<DataBlock>, SstableError> {
        self.block_filling_cache(i, true).await
    }

    /// Data block `i`; a block read from the device is put in the cache only if `fill`.
    async fn block_filling_cache(&self, i: usize, fill: bool) -> Result<Rc<DataBlock>, SstableError> {
        if let Some(block) = self.cached(i) {
            return Ok(block);
        }
        let mut blocks = self.read_blocks(i, i, fill).await?;
        Ok(blocks.swap_remove(0))
    }

    /// Data block `i` if the cache holds it (counted as a hit).
    fn cached(&self, i: usize) -> Option<Rc<DataBlock>> {
        let block = self.cache.get(self.id, self.index[i].offset)?;
        self.bump(|s| s.cache_hits += 1);
        Some(block)
    }

    /// Data block `first` and, when it has to come from the device, the blocks after it whose
    /// first token is at most `end`, read together in one range of at most
    /// [`SCAN_READ_AHEAD_BYTES`] (or `first` alone when it is larger), in index order. For
    /// scans: one I/O per block would make a compaction wait on the device once per block.
    async fn blocks_ahead(&self, first: usize, end: Token, fill: bool) -> Result<Vec<Rc<DataBlock>>, SstableError> {
        if let Some(block) = self.cached(first) {
            return Ok(vec![block]);
        }
        let head = &self.index[first];
        let mut last = first;
        while let Some(next) = self.index.get(last + 1) {
            // A damaged index (offsets not rising) just ends the read-ahead here.
            let span = (next.offset + u64::from(next.len)).checked_sub(head.offset);
            if next.offset < head.offset
                || next.first.token > end
                || span.is_none_or(|n| n > SCAN_READ_AHEAD_BYTES as u64)
            {
                break;
            }
            last += 1;
        }
        self.read_blocks(first, last, fill).await
    }

    /// Reads data blocks `first..=last` from the device in one range, verifies them and puts
    /// them in the cache if `fill`. A damaged block after the first ends the list there: it
    /// fails only a read that reaches it (reading it alone then).
    async fn read_blocks(&self, first: usize, last: usize, fill: bool) -> Result<Vec<Rc<DataBlock>>, SstableError> {
        let head = &self.index[first];
        let tail = &self.index[last];
        let span = (tail.offset + u64::from(tail.len) - head.offset) as usize;
        let mut bytes = read_range(&self.file, &self.path, head.offset, span).await?;
        let mut blocks = Vec::with_capacity(last - first + 1);
        for entry in &self.index[first..=last] {
            let raw = if first == last {
                std::mem::take(&mut bytes)
            } else {
                let at = (entry.offset - head.offset) as usize;
                match bytes.get(at..at + entry.len as usize) {
                    Some(raw) => raw.to_vec(),
                    None if !blocks.is_empty() => break,
                    None => return Err(self.corrupt_block(entry.offset, "index entries overlap or run backwards")),
                }
            };
            let block = match DataBlock::decode(entry.offset, raw, &entry.first) {
                Ok(block) => Rc::new(block),
                Err(_) if !blocks.is_empty() => break,
                Err(damage) => return Err(SstableError::corrupt(&self.path, damage)),
            };
            if fill {
                self.cache.insert(self.id, block.clone());
            }
            blocks.push(block);
        }
        self.bump(|s| {
            s.blocks_read += blocks.len() as u64;
            s.bytes_read += span as u64;
        });
        Ok(blocks)
    }

    /// Partitions with token in (start, end] (Cassandra's range convention; empty when
    /// `start >= end`: no wrap-around) and key > `after` when given (to resume a page), in
    /// storage order. Holds at most one partition and [`SCAN_READ_AHEAD_BYTES`] of blocks (or
    /// one larger block) at a time.
    pub fn scan(self: &Rc<Self>, start: Token, end: Token, after: Option<PartitionKey>) -> SstableScan {
        let mut scan = SstableScan {
            sstable: self.clone(),
            end,
            lower: PartitionKey::with_token_lower_bound(start.saturating_add(1)),
            lower_inclusive: true,
            block_index: 0,
            block: None,
            ahead: VecDeque::new(),
            pos: 0,
            done: start >= end,
            fill_cache: true,
            max_rows: None,
        };
        if let Some(after) = after {
            if after >= scan.lower {
                scan.lower = after;
                scan.lower_inclusive = false;
            }
        }
        let beyond_last = match scan.lower.cmp(&self.meta.last_key) {
            Ordering::Less => false,
            Ordering::Equal => !scan.lower_inclusive,
            Ordering::Greater => true,
        };
        if beyond_last || end < self.meta.min_token {
            scan.done = true;
        }
        scan.block_index = if scan.lower_inclusive {
            block_for_header(&self.index, &scan.lower)
        } else {
            // Resuming after a partition: start in the block where that partition ends (the
            // last block starting at or before it), not where it starts, so that resuming after
            // a wide partition does not read its blocks again only to skip them.
            self.index.partition_point(|e| e.first.cmp_partition(&scan.lower) != Ordering::Greater).checked_sub(1)
        }
        .unwrap_or(0);
        scan
    }
}

/// Reads `[offset, offset + len)` in aligned reads of at most [`MAX_IO_SIZE`]. The caller has
/// checked that the range lies inside the file.
async fn read_range(file: &DmaFile, path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, SstableError> {
    let end = offset + len as u64;
    let mut out = Vec::with_capacity(len);
    let mut pos = align_down(offset, FILE_ALIGN);
    let stop = align_up(end, FILE_ALIGN);
    while pos < stop {
        let want = (MAX_IO_SIZE as u64).min(stop - pos) as usize;
        let chunk = file.read_at_aligned(pos, want).await.map_err(|e| io_error("read", path, e))?;
        let chunk_end = pos + chunk.len() as u64;
        if chunk.len() < want && chunk_end < end {
            let err = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file ended at {chunk_end} while reading {len} bytes at {offset}"),
            );
            return Err(io_error("read", path, err));
        }
        let lo = offset.max(pos);
        let hi = end.min(chunk_end);
        if lo < hi {
            out.extend_from_slice(&chunk[(lo - pos) as usize..(hi - pos) as usize]);
        }
        pos += want as u64;
    }
    Ok(out)
}

/// Reads and verifies everything but the data blocks.
async fn load(file: &DmaFile, path: &Path) -> Result<(u64, SstableMeta, Vec<IndexEntry>, BloomFilter), SstableError> {
    let file_size = file.file_size().await.map_err(|e| io_error("stat", path, e))?;
    check_file_size(path, file_size)?;
    let footer_bytes = read_range(file, path, Footer::position(file_size), FOOTER_LEN).await?;
    let footer = decode_footer(path, &footer_bytes, file_size)?;
    // Index, bloom and metadata are contiguous and end before the footer (checked by decode).
    let tail = read_range(file, path, footer.index.offset, (footer.meta.end() - footer.index.offset) as usize).await?;
    let (meta, index, bloom) = decode_sections(path, file_size, &footer, &tail)?;
    Ok((file_size, meta, index, bloom))
}

/// An SSTable's size is a positive multiple of [`FILE_ALIGN`]; anything else is truncated.
pub(super) fn check_file_size(path: &Path, file_size: u64) -> Result<(), SstableError> {
    if file_size < FILE_ALIGN || !file_size.is_multiple_of(FILE_ALIGN) {
        return Err(SstableError::Corrupt {
            path: path.to_path_buf(),
            section: SECTION_FOOTER,
            offset: file_size,
            reason: format!("file size {file_size} is not a positive multiple of {FILE_ALIGN} (truncated?)"),
        });
    }
    Ok(())
}

/// The footer (the last [`FOOTER_LEN`] bytes of a file of `file_size` bytes), as an SSTable error.
pub(super) fn decode_footer(path: &Path, bytes: &[u8], file_size: u64) -> Result<Footer, SstableError> {
    Footer::decode(bytes, file_size).map_err(|e| match e {
        FooterError::UnsupportedVersion(version) => {
            SstableError::UnsupportedVersion { path: path.to_path_buf(), version }
        }
        FooterError::Damaged(d) => SstableError::corrupt(path, d),
    })
}

/// Decodes the index, bloom and metadata sections (`tail`: the bytes from the index's offset to
/// the metadata's end) and checks them against each other, the footer and the file size.
pub(super) fn decode_sections(
    path: &Path,
    file_size: u64,
    footer: &Footer,
    tail: &[u8],
) -> Result<(SstableMeta, Vec<IndexEntry>, BloomFilter), SstableError> {
    let corrupt = |d| SstableError::corrupt(path, d);
    let tail_start = footer.index.offset;
    let section = |s: super::format::Section| {
        let from = (s.offset - tail_start) as usize;
        &tail[from..from + s.len as usize]
    };
    let meta = SstableMeta::decode_section(section(footer.meta), footer.meta.offset).map_err(corrupt)?;
    let index = decode_index(section(footer.index), footer.index.offset, footer.data_end).map_err(corrupt)?;
    let bloom = BloomFilter::decode(section(footer.bloom), footer.bloom.offset).map_err(corrupt)?;
    let inconsistent = |reason: String| SstableError::Corrupt {
        path: path.to_path_buf(),
        section: SECTION_METADATA,
        offset: footer.meta.offset,
        reason,
    };
    if meta.file_size != file_size {
        return Err(inconsistent(format!("metadata says {} bytes, the file has {file_size}", meta.file_size)));
    }
    if meta.index_bytes != u64::from(footer.index.len)
        || meta.bloom_bytes != u64::from(footer.bloom.len)
        || meta.data_blocks != index.len() as u64
    {
        return Err(inconsistent("section sizes or block count differ from the footer and index".into()));
    }
    let first_matches = index[0].first == EntryPosition::header_of(&meta.first_key);
    let last_block_in_range = index.last().is_some_and(|e| e.first.cmp_partition(&meta.last_key) != Ordering::Greater);
    if !first_matches || !last_block_in_range {
        return Err(inconsistent("first/last key disagree with the index".into()));
    }
    Ok((meta, index, bloom))
}

/// Collects the rows of a partition inside a slice, across runs (blocks), checking order, up
/// to a number of rows when given.
struct RowCollector<'s> {
    slice: &'s ClusteringSlice,
    last: Option<ClusteringKey>,
    /// A row past the slice's end was seen: nothing further can match.
    past_end: bool,
    max_rows: Option<usize>,
    /// `max_rows` rows were collected: the read stops there.
    full: bool,
}

impl<'s> RowCollector<'s> {
    fn new(slice: &'s ClusteringSlice, max_rows: Option<usize>) -> Self {
        RowCollector { slice, last: None, past_end: false, max_rows, full: false }
    }

    fn stopped(&self) -> bool {
        self.past_end || self.full
    }

    /// Adds the rows left in `entries` that the slice wants.
    fn collect(
        &mut self,
        sstable: &Sstable,
        block: &DataBlock,
        entries: &mut RunEntries<'_>,
        partition: &mut Partition,
    ) -> Result<(), SstableError> {
        loop {
            if self.max_rows.is_some_and(|max| partition.rows.len() >= max) {
                self.full = true;
                return Ok(());
            }
            let Some(entry) = entries.next_entry().map_err(|d| SstableError::corrupt(&sstable.path, d))? else {
                return Ok(());
            };
            let (clustering, row) = match entry {
                Entry::Row(c, r) => (c, r),
                Entry::PartitionHeader(_) => {
                    return Err(sstable.corrupt_block(block.offset, "a partition header repeats"))
                }
            };
            if self.last.as_ref().is_some_and(|last| *last >= clustering) {
                return Err(sstable.corrupt_block(block.offset, "rows are not in increasing clustering order"));
            }
            if past_end(self.slice, clustering.as_bytes()) {
                self.past_end = true;
                return Ok(());
            }
            if self.slice.contains(&clustering) {
                partition.rows.insert(clustering.clone(), row);
            }
            self.last = Some(clustering);
        }
    }
}

/// True when `row` and every row after it lie beyond the slice's end.
fn past_end(slice: &ClusteringSlice, row: &[u8]) -> bool {
    !slice.encoded_before_end(row)
}

/// A streaming scan over one SSTable (see [`Sstable::scan`]).
pub struct SstableScan {
    sstable: Rc<Sstable>,
    end: Token,
    /// Partitions sort after this key (or at it when `lower_inclusive`).
    lower: PartitionKey,
    lower_inclusive: bool,
    /// The block being read (loaded in `block`) or to be read next.
    block_index: usize,
    block: Option<Rc<DataBlock>>,
    /// Blocks read ahead of `block_index` (its own among them), in index order.
    ahead: VecDeque<(usize, Rc<DataBlock>)>,
    /// Payload offset of the next unread run of `block`.
    pos: usize,
    done: bool,
    /// Put blocks read from the device into the block cache.
    fill_cache: bool,
    /// Rows of one partition collected at most; the rest of a wider one is skipped.
    max_rows: Option<usize>,
}

impl SstableScan {
    /// Blocks this scan reads from the device are not cached (cached blocks are still used):
    /// for a compaction, which reads each block once and would only evict what reads need.
    pub fn without_cache_fill(mut self) -> SstableScan {
        self.fill_cache = false;
        self
    }

    /// Each partition with at most its first `max_rows` rows: the rest of a wider one is
    /// skipped through the index, unread (a bounded scan, `crate::scan`). A partition with
    /// `max_rows` rows may have been cut.
    pub fn with_max_rows(mut self, max_rows: usize) -> SstableScan {
        self.max_rows = (max_rows < usize::MAX).then_some(max_rows.max(1));
        self
    }

    /// Skips the rest of partition `key`: on to the block where it ends (the last block
    /// starting at or before it), past its runs there.
    fn skip_rest_of(&mut self, key: &PartitionKey) {
        let index = &self.sstable.index;
        let last = index.partition_point(|e| e.first.cmp_partition(key) != Ordering::Greater).saturating_sub(1);
        if last > self.block_index {
            self.block = None;
            self.block_index = last;
        }
        self.lower = key.clone();
        self.lower_inclusive = false;
    }

    /// The next partition of the range, whole (every row, its deletion) unless the scan has a
    /// row bound, or `None` at the end.
    /// After an error the scan is over.
    pub async fn next(&mut self) -> Result<Option<(PartitionKey, Partition)>, SstableError> {
        if self.done {
            return Ok(None);
        }
        let result = self.advance().await;
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
            self.block = None;
        }
        result
    }

    fn below_lower(&self, run: &Run<'_>) -> bool {
        match run.cmp_partition(&self.lower) {
            Ordering::Less => true,
            Ordering::Equal => !self.lower_inclusive,
            Ordering::Greater => false,
        }
    }

    /// The loaded block if it has unread runs; otherwise loads the next block, unless the
    /// partition being assembled (`current`) does not continue into it. `None`: stop here.
    async fn block_with_runs(&mut self, current: Option<&PartitionKey>) -> Result<Option<Rc<DataBlock>>, SstableError> {
        if let Some(block) = &self.block {
            if self.pos < block.payload().len() {
                return Ok(Some(block.clone()));
            }
            self.block = None;
            self.block_index += 1;
        }
        let sstable = self.sstable.clone();
        let Some(entry) = sstable.index.get(self.block_index) else { return Ok(None) };
        match current {
            Some(key) if entry.first.cmp_partition(key) != Ordering::Equal => return Ok(None),
            None if entry.first.token > self.end => return Ok(None),
            _ => {}
        }
        // A long scan must not stall the shard's other tasks.
        glommio::yield_if_needed().await;
        while self.ahead.front().is_some_and(|(i, _)| *i < self.block_index) {
            self.ahead.pop_front();
        }
        if self.ahead.is_empty() {
            let blocks = sstable.blocks_ahead(self.block_index, self.end, self.fill_cache).await?;
            self.ahead = (self.block_index..).zip(blocks).collect();
        }
        let Some((_, block)) = self.ahead.pop_front() else {
            unreachable!("blocks_ahead returns at least the block asked for");
        };
        self.block = Some(block.clone());
        self.pos = 0;
        Ok(Some(block))
    }

    async fn advance(&mut self) -> Result<Option<(PartitionKey, Partition)>, SstableError> {
        let sstable = self.sstable.clone();
        let corrupt = |d| SstableError::corrupt(&sstable.path, d);
        let mut current: Option<(PartitionKey, Partition)> = None;
        let mut rows = RowCollector::new(&ClusteringSlice::ALL, self.max_rows);
        loop {
            if rows.full {
                if let Some((key, _)) = &current {
                    self.skip_rest_of(&key.clone());
                }
                return Ok(current);
            }
            let Some(block) = self.block_with_runs(current.as_ref().map(|(k, _)| k)).await? else {
                return Ok(current);
            };
            let run = block.run_at(self.pos).map_err(corrupt)?;
            match &mut current {
                Some((key, partition)) => {
                    if run.cmp_partition(key) != Ordering::Equal {
                        return Ok(current);
                    }
                    let mut entries = block.entries(&run);
                    rows.collect(&sstable, &block, &mut entries, partition)?;
                    self.pos = run.end;
                }
                None => {
                    if self.below_lower(&run) {
                        self.pos = run.end;
                        continue;
                    }
                    if run.token > self.end {
                        return Ok(None);
                    }
                    let key = PartitionKey::from_serialized(run.key.to_vec());
                    if key.token() != run.token {
                        return Err(sstable.corrupt_block(block.offset, "stored token differs from the key's token"));
                    }
                    let mut entries = block.entries(&run);
                    let deletion = sstable.partition_header(&block, &mut entries)?;
                    let mut partition = Partition { deletion, ..Partition::default() };
                    rows.collect(&sstable, &block, &mut entries, &mut partition)?;
                    self.pos = run.end;
                    current = Some((key, partition));
                }
            }
        }
    }
}

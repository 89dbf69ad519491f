//! Byte layout of an SSTable file (docs/FORMAT.md, "SSTable"): data blocks and the partition
//! runs inside them, the index, and the footer. Pure functions over byte slices: no I/O and no
//! glommio. A decoder never trusts a byte before the checksum covering it matched, and never sizes
//! an allocation by a length it has not first bounded by the bytes actually present.

use std::cmp::Ordering;

use wire::codec::{DecodeError, Reader, Writer};
use wire::Token;

use crate::cell::Deletion;
use crate::key::{ClusteringKey, PartitionKey};
use crate::row::Row;
use crate::row_codec::{decode_deletion, decode_row, encode_deletion, encode_row};

/// The first 8 bytes of the footer (the last 64 bytes of the file).
pub const MAGIC: [u8; 8] = *b"ENIGSST\0";

/// The only format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// O_DIRECT block: the file length is a multiple of it and the footer ends the last one.
pub const FILE_ALIGN: u64 = 4096;

/// Size of the footer, at the very end of the file.
pub const FOOTER_LEN: usize = 64;

/// Size of a crc32c trailer.
pub const CRC_LEN: usize = 4;

/// Data block header: entry count u32 | payload length u32 | flags u8.
pub const BLOCK_HEADER_LEN: usize = 9;

/// Smallest possible data block on disk (header and checksum around an empty payload).
pub const MIN_DATA_BLOCK_LEN: usize = BLOCK_HEADER_LEN + CRC_LEN;

/// Data block flag bit 0: the payload is compressed. Never written by version 1; refused.
pub const BLOCK_FLAG_COMPRESSED: u8 = 1;

/// Bound on one data block on disk (header, payload and checksum). A block closes after the entry
/// that crosses `block_size`, so one row larger than this cannot be written.
pub const MAX_DATA_BLOCK_LEN: usize = 256 << 20;

/// Bound on the bytes of one partition key or clustering key stored in an SSTable.
pub const MAX_KEY_LEN: usize = 16 << 20;

/// Bound on the index section (it is held in memory while the SSTable is open).
pub const MAX_INDEX_LEN: usize = 256 << 20;

/// Entry kinds inside a run.
pub const ENTRY_PARTITION_HEADER: u8 = 0;
pub const ENTRY_ROW: u8 = 1;

/// Section names carried by [`Damage`] (and `SstableError::Corrupt`).
pub const SECTION_FOOTER: &str = "footer";
pub const SECTION_INDEX: &str = "index";
pub const SECTION_BLOOM: &str = "bloom";
pub const SECTION_METADATA: &str = "metadata";
pub const SECTION_DATA_BLOCK: &str = "data block";

/// Bytes of the fixed part of a run: token i64 | key length u32 | run length u32.
const RUN_FIXED_LEN: usize = 16;

/// Smallest encoded index entry: offset u64 | length u32 | token i64 | key length u32 | kind u8.
const MIN_INDEX_ENTRY_LEN: usize = 25;

/// Rounds `v` up to a multiple of `align` (a power of two).
pub const fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

/// Rounds `v` down to a multiple of `align` (a power of two).
pub const fn align_down(v: u64, align: u64) -> u64 {
    v & !(align - 1)
}

/// Where and why bytes of an SSTable were refused. `offset` is absolute in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub section: &'static str,
    pub offset: u64,
    pub reason: String,
}

impl Damage {
    pub fn new(section: &'static str, offset: u64, reason: impl Into<String>) -> Damage {
        Damage { section, offset, reason: reason.into() }
    }

    /// A decode error of bytes that start at file offset `base`.
    pub fn decode(section: &'static str, base: u64, err: DecodeError) -> Damage {
        let at = match &err {
            DecodeError::Truncated { offset, .. }
            | DecodeError::TooLong { offset, .. }
            | DecodeError::Invalid { offset, .. } => *offset as u64,
            DecodeError::Trailing { .. } => 0,
        };
        Damage { section, offset: base + at, reason: err.to_string() }
    }
}

/// Splits `bytes` into (body, stored crc) and checks the crc32c of the body.
pub fn verify_crc<'a>(bytes: &'a [u8], section: &'static str, base: u64) -> Result<&'a [u8], Damage> {
    if bytes.len() < CRC_LEN {
        return Err(Damage::new(section, base, format!("{} bytes cannot hold a checksum", bytes.len())));
    }
    let (body, stored) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(Damage::new(section, base, format!("crc32c {stored:#010x} != computed {computed:#010x}")));
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------
// Footer

/// A section of the file: `len` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub offset: u64,
    pub len: u32,
}

impl Section {
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The fixed-size trailer that locates every other section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// End of the last data block; data blocks fill `[0, data_end)`.
    pub data_end: u64,
    pub index: Section,
    pub bloom: Section,
    pub meta: Section,
}

/// Why a footer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FooterError {
    /// A version this code does not know (checked after the magic, before the checksum, so that a
    /// newer layout is reported as such rather than as damage).
    UnsupportedVersion(u16),
    Damaged(Damage),
}

/// Smallest bloom section: hash count u32 | bit count u64 | one word | crc.
pub const MIN_BLOOM_SECTION_LEN: usize = 4 + 8 + 8 + CRC_LEN;

/// Smallest index section: count u32 | one entry | crc.
const MIN_INDEX_SECTION_LEN: usize = 4 + MIN_INDEX_ENTRY_LEN + CRC_LEN;

impl Footer {
    /// Byte offset of the footer in a file of `file_size` bytes.
    pub fn position(file_size: u64) -> u64 {
        file_size - FOOTER_LEN as u64
    }

    /// Size of the whole file whose metadata section ends at `meta_end`: zero padding, then the
    /// footer ending a 4096-byte block.
    pub fn file_size_after(meta_end: u64) -> u64 {
        align_up(meta_end + FOOTER_LEN as u64, FILE_ALIGN)
    }

    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 10..12 flags, zero in version 1.
        out[12..20].copy_from_slice(&self.data_end.to_le_bytes());
        out[20..28].copy_from_slice(&self.index.offset.to_le_bytes());
        out[28..32].copy_from_slice(&self.index.len.to_le_bytes());
        out[32..40].copy_from_slice(&self.bloom.offset.to_le_bytes());
        out[40..44].copy_from_slice(&self.bloom.len.to_le_bytes());
        out[44..52].copy_from_slice(&self.meta.offset.to_le_bytes());
        out[52..56].copy_from_slice(&self.meta.len.to_le_bytes());
        // 56..60 reserved, zero.
        let crc = crc32c::crc32c(&out[..FOOTER_LEN - CRC_LEN]);
        out[FOOTER_LEN - CRC_LEN..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the footer (`bytes` = the last [`FOOTER_LEN`] bytes of a file of `file_size`
    /// bytes) and checks that every section lies inside the file, in order, without gaps.
    pub fn decode(bytes: &[u8], file_size: u64) -> Result<Footer, FooterError> {
        let damaged = |offset: u64, reason: String| FooterError::Damaged(Damage::new(SECTION_FOOTER, offset, reason));
        if file_size < FILE_ALIGN || !file_size.is_multiple_of(FILE_ALIGN) {
            return Err(damaged(0, format!("file size {file_size} is not a positive multiple of {FILE_ALIGN}")));
        }
        let at = Footer::position(file_size);
        if bytes.len() != FOOTER_LEN {
            return Err(damaged(at, format!("footer is {} bytes, expected {FOOTER_LEN}", bytes.len())));
        }
        if bytes[0..8] != MAGIC {
            return Err(damaged(at, "bad magic (not an SSTable, or truncated)".into()));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != FORMAT_VERSION {
            return Err(FooterError::UnsupportedVersion(version));
        }
        verify_crc(bytes, SECTION_FOOTER, at).map_err(FooterError::Damaged)?;
        let flags = u16::from_le_bytes([bytes[10], bytes[11]]);
        if flags != 0 {
            return Err(damaged(at + 10, format!("unknown footer flags {flags:#x}")));
        }
        if bytes[56..60] != [0; 4] {
            return Err(damaged(at + 56, "reserved footer bytes are not zero".into()));
        }
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap_or([0; 4]));
        let footer = Footer {
            data_end: u64_at(12),
            index: Section { offset: u64_at(20), len: u32_at(28) },
            bloom: Section { offset: u64_at(32), len: u32_at(40) },
            meta: Section { offset: u64_at(44), len: u32_at(52) },
        };
        footer.check_layout(file_size).map_err(|reason| damaged(at, reason))?;
        Ok(footer)
    }

    /// Sections are contiguous in the order data, index, bloom, metadata; the metadata ends less
    /// than one block before the footer; every length is within its bound.
    fn check_layout(&self, file_size: u64) -> Result<(), String> {
        let footer_at = Footer::position(file_size);
        if self.data_end < MIN_DATA_BLOCK_LEN as u64 {
            return Err(format!("data end {} leaves no room for a data block", self.data_end));
        }
        if self.index.offset != self.data_end
            || self.bloom.offset != self.index.end()
            || self.meta.offset != self.bloom.end()
        {
            return Err(format!(
                "sections are not contiguous: data end {}, index {:?}, bloom {:?}, metadata {:?}",
                self.data_end, self.index, self.bloom, self.meta
            ));
        }
        if self.meta.end() > footer_at || footer_at - self.meta.end() >= FILE_ALIGN {
            return Err(format!("metadata ends at {} but the footer is at {footer_at}", self.meta.end()));
        }
        let bounded = |name: &str, len: u32, min: usize, max: usize| {
            if (len as usize) < min || len as usize > max {
                Err(format!("{name} section is {len} bytes, outside {min}..={max}"))
            } else {
                Ok(())
            }
        };
        bounded("index", self.index.len, MIN_INDEX_SECTION_LEN, MAX_INDEX_LEN)?;
        bounded("bloom", self.bloom.len, MIN_BLOOM_SECTION_LEN, super::bloom::MAX_BLOOM_SECTION_LEN)?;
        bounded("metadata", self.meta.len, super::meta::MIN_META_SECTION_LEN, super::meta::MAX_META_SECTION_LEN)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Positions in storage order

/// The storage-order position of an entry: partitions by (token, key bytes), and inside a
/// partition its header (`row: None`) before its rows in clustering order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryPosition {
    pub token: Token,
    pub key: Box<[u8]>,
    /// Clustering key bytes of a row; `None` for the partition header.
    pub row: Option<Box<[u8]>>,
}

impl EntryPosition {
    pub fn header_of(key: &PartitionKey) -> EntryPosition {
        EntryPosition { token: key.token(), key: key.bytes().into(), row: None }
    }

    /// This position's partition compared with `key`.
    pub fn cmp_partition(&self, key: &PartitionKey) -> Ordering {
        cmp_partition(self.token, &self.key, key)
    }
}

/// (token, key bytes) compared with a partition key, in storage order.
pub fn cmp_partition(token: Token, key_bytes: &[u8], key: &PartitionKey) -> Ordering {
    token.cmp(&key.token()).then_with(|| key_bytes.cmp(key.bytes()))
}

// ---------------------------------------------------------------------------------------------
// Data blocks

/// Builds one data block. A block holds runs; a run is the consecutive entries of one partition
/// in this block and carries that partition's key once:
///
/// ```text
/// run   := token i64 | key (u32 len + bytes) | run length u32 | entry+
/// entry := 0:u8 partition deletion          (the partition header; first entry of its partition)
///        | 1:u8 clustering (u32 len + bytes) row   (a row, as row_codec::encode_row)
/// ```
pub struct BlockBuilder {
    payload: Vec<u8>,
    entries: u32,
    /// Where the open run's length field is.
    run_len_at: Option<usize>,
    first: Option<EntryPosition>,
}

/// A closed block, ready to be written: `header`, then the builder's payload, then `crc`.
pub struct BlockFrame {
    pub header: [u8; BLOCK_HEADER_LEN],
    pub crc: [u8; CRC_LEN],
    pub first: EntryPosition,
    /// Total bytes on disk.
    pub len: usize,
}

impl BlockBuilder {
    pub fn new(capacity: usize) -> BlockBuilder {
        BlockBuilder { payload: Vec::with_capacity(capacity), entries: 0, run_len_at: None, first: None }
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Bytes the block would take on disk if closed now.
    pub fn encoded_len(&self) -> usize {
        BLOCK_HEADER_LEN + self.payload.len() + CRC_LEN
    }

    /// Appends the header entry of a new partition (it always opens a new run).
    pub fn push_partition_header(&mut self, key: &PartitionKey, deletion: Option<Deletion>) {
        self.close_run();
        self.open_run(key, None);
        self.with_writer(|w| {
            w.u8(ENTRY_PARTITION_HEADER);
            encode_deletion(w, deletion);
        });
    }

    /// Appends a row of the partition of the open run, or, in a fresh block, opens a run for
    /// `key` (the partition continues from the previous block).
    pub fn push_row(&mut self, key: &PartitionKey, clustering: &ClusteringKey, row: &Row) {
        if self.run_len_at.is_none() {
            self.open_run(key, Some(clustering));
        }
        self.with_writer(|w| {
            w.u8(ENTRY_ROW).bytes(clustering.as_bytes());
            encode_row(w, row);
        });
    }

    fn with_writer(&mut self, f: impl FnOnce(&mut Writer)) {
        let mut w = Writer::with_buffer(std::mem::take(&mut self.payload));
        f(&mut w);
        self.payload = w.into_bytes();
        self.entries += 1;
    }

    fn open_run(&mut self, key: &PartitionKey, row: Option<&ClusteringKey>) {
        if self.first.is_none() {
            self.first = Some(EntryPosition {
                token: key.token(),
                key: key.bytes().into(),
                row: row.map(|c| c.as_bytes().into()),
            });
        }
        let mut w = Writer::with_buffer(std::mem::take(&mut self.payload));
        w.i64(key.token()).bytes(key.bytes());
        self.payload = w.into_bytes();
        self.run_len_at = Some(self.payload.len());
        self.payload.extend_from_slice(&[0; 4]);
    }

    fn close_run(&mut self) {
        if let Some(at) = self.run_len_at.take() {
            // Blocks are bounded by MAX_DATA_BLOCK_LEN (< 4 GiB) by the writer.
            let len = (self.payload.len() - at - 4) as u32;
            self.payload[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
    }

    /// Closes the block. The payload stays readable through [`BlockBuilder::payload`] until
    /// [`BlockBuilder::clear`]. Returns `None` for an empty block.
    pub fn finish(&mut self) -> Option<BlockFrame> {
        self.close_run();
        let first = self.first.take()?;
        let mut header = [0u8; BLOCK_HEADER_LEN];
        header[0..4].copy_from_slice(&self.entries.to_le_bytes());
        header[4..8].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        header[8] = 0;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header), &self.payload);
        Some(BlockFrame { header, crc: crc.to_le_bytes(), first, len: self.encoded_len() })
    }

    pub fn clear(&mut self) {
        self.payload.clear();
        self.entries = 0;
        self.run_len_at = None;
        self.first = None;
    }
}

/// A verified data block: its checksum matched and its runs are well formed and agree with its
/// index entry.
#[derive(Debug)]
pub struct DataBlock {
    /// File offset of the block.
    pub offset: u64,
    pub entries: u32,
    /// The whole block as read: header, payload, checksum.
    raw: Box<[u8]>,
    /// Payload offset of every run, found while verifying the block: point reads binary-search
    /// them instead of walking the runs.
    run_starts: Box<[u32]>,
}

/// One run of a block (see [`BlockBuilder`]).
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    pub token: Token,
    pub key: &'a [u8],
    /// Offset in the payload of the first entry.
    pub entries_at: usize,
    /// Offset in the payload just after the run.
    pub end: usize,
}

impl Run<'_> {
    pub fn cmp_partition(&self, key: &PartitionKey) -> Ordering {
        cmp_partition(self.token, self.key, key)
    }
}

/// One decoded entry of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    PartitionHeader(Option<Deletion>),
    Row(ClusteringKey, Row),
}

impl DataBlock {
    /// Verifies a block read from `offset` (checksum first, then its header and the structure of
    /// its runs; the first entry must be `expected_first`, the block's index entry).
    pub fn decode(offset: u64, bytes: Vec<u8>, expected_first: &EntryPosition) -> Result<DataBlock, Damage> {
        let damage = |at: u64, reason: String| Damage::new(SECTION_DATA_BLOCK, offset + at, reason);
        if bytes.len() < MIN_DATA_BLOCK_LEN || bytes.len() > MAX_DATA_BLOCK_LEN {
            return Err(damage(0, format!("block of {} bytes is outside its bounds", bytes.len())));
        }
        let body = verify_crc(&bytes, SECTION_DATA_BLOCK, offset)?;
        let entries = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        let payload_len = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
        let flags = body[8];
        if flags & BLOCK_FLAG_COMPRESSED != 0 {
            return Err(damage(8, "compressed blocks are not supported by format version 1".into()));
        }
        if flags != 0 {
            return Err(damage(8, format!("unknown block flags {flags:#x}")));
        }
        if payload_len != body.len() - BLOCK_HEADER_LEN {
            return Err(damage(4, format!("payload length {payload_len} != {}", body.len() - BLOCK_HEADER_LEN)));
        }
        let mut block = DataBlock { offset, entries, raw: bytes.into_boxed_slice(), run_starts: Box::new([]) };
        block.run_starts = block.check_structure(expected_first)?.into_boxed_slice();
        Ok(block)
    }

    /// The entries' bytes (between the header and the checksum).
    pub fn payload(&self) -> &[u8] {
        &self.raw[BLOCK_HEADER_LEN..self.raw.len() - CRC_LEN]
    }

    /// Bytes held in memory.
    pub fn memory(&self) -> usize {
        self.raw.len() + self.run_starts.len() * std::mem::size_of::<u32>()
    }

    /// The run holding `key`, if this block has one (binary search over the verified runs).
    pub fn find_run(&self, key: &PartitionKey) -> Result<Option<Run<'_>>, Damage> {
        let (mut lo, mut hi) = (0, self.run_starts.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let run = self.run_at(self.run_starts[mid] as usize)?;
            match run.cmp_partition(key) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Some(run)),
            }
        }
        Ok(None)
    }

    /// A block of `len` zero payload bytes that was never verified (cache tests only).
    #[cfg(test)]
    pub fn unverified_for_tests(offset: u64, len: usize) -> DataBlock {
        DataBlock {
            offset,
            entries: 1,
            raw: vec![0; BLOCK_HEADER_LEN + len + CRC_LEN].into(),
            run_starts: Box::new([]),
        }
    }

    fn damage(&self, payload_offset: usize, reason: impl Into<String>) -> Damage {
        Damage::new(SECTION_DATA_BLOCK, self.offset + (BLOCK_HEADER_LEN + payload_offset) as u64, reason)
    }

    fn decode_damage(&self, payload_base: usize, err: DecodeError) -> Damage {
        Damage::decode(SECTION_DATA_BLOCK, self.offset + (BLOCK_HEADER_LEN + payload_base) as u64, err)
    }

    /// Runs tile the payload, their partitions strictly increase, there are no more runs than
    /// entries, and the first entry is the block's index position. Returns the run offsets.
    fn check_structure(&self, expected_first: &EntryPosition) -> Result<Vec<u32>, Damage> {
        if self.payload().is_empty() || self.entries == 0 {
            return Err(self.damage(0, "empty block"));
        }
        let mut pos = 0;
        let mut runs = 0u64;
        let mut starts = Vec::new();
        let mut previous: Option<(Token, &[u8])> = None;
        while pos < self.payload().len() {
            let run = self.run_at(pos)?;
            if let Some(prev) = previous {
                if prev >= (run.token, run.key) {
                    return Err(self.damage(pos, "runs are not in increasing partition order"));
                }
            }
            previous = Some((run.token, run.key));
            runs += 1;
            // A block is at most MAX_DATA_BLOCK_LEN (< 4 GiB) bytes, so offsets fit in u32.
            starts.push(pos as u32);
            pos = run.end;
        }
        if runs > u64::from(self.entries) {
            return Err(self.damage(0, format!("{runs} runs but only {} entries", self.entries)));
        }
        let first_run = self.run_at(0)?;
        let mut r = Reader::new(&self.payload()[first_run.entries_at..first_run.end]);
        let kind = r.u8().map_err(|e| self.decode_damage(first_run.entries_at, e))?;
        let first_row = match kind {
            ENTRY_PARTITION_HEADER => None,
            ENTRY_ROW => Some(r.bytes_limited(MAX_KEY_LEN).map_err(|e| self.decode_damage(first_run.entries_at, e))?),
            other => return Err(self.damage(first_run.entries_at, format!("unknown entry kind {other}"))),
        };
        let matches = first_run.token == expected_first.token
            && *first_run.key == *expected_first.key
            && first_row == expected_first.row.as_deref();
        if !matches {
            return Err(self.damage(0, "first entry does not match the block's index entry"));
        }
        Ok(starts)
    }

    /// The run starting at payload offset `pos` (which must be a run boundary).
    pub fn run_at(&self, pos: usize) -> Result<Run<'_>, Damage> {
        let rest = self.payload().get(pos..).unwrap_or(&[]);
        let mut r = Reader::new(rest);
        let token = r.i64().map_err(|e| self.decode_damage(pos, e))?;
        let key = r.bytes_limited(MAX_KEY_LEN).map_err(|e| self.decode_damage(pos, e))?;
        let len = r.u32().map_err(|e| self.decode_damage(pos, e))? as usize;
        let entries_at = pos + r.offset();
        if len == 0 || len > r.remaining() {
            return Err(self.damage(pos, format!("run length {len} does not fit the {} bytes left", r.remaining())));
        }
        debug_assert!(r.offset() >= RUN_FIXED_LEN);
        Ok(Run { token, key, entries_at, end: entries_at + len })
    }

    /// The entries of `run`, in order.
    pub fn entries<'a>(&'a self, run: &Run<'a>) -> RunEntries<'a> {
        RunEntries {
            block: self,
            reader: Reader::new(&self.payload()[run.entries_at..run.end]),
            base: run.entries_at,
            first: true,
            last_row: None,
        }
    }

    /// Decodes every entry of every run (used by the fuzz tests and full scans).
    pub fn decode_all(&self) -> Result<Vec<(Token, Vec<u8>, Entry)>, Damage> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < self.payload().len() {
            let run = self.run_at(pos)?;
            let mut entries = self.entries(&run);
            while let Some(entry) = entries.next_entry()? {
                out.push((run.token, run.key.to_vec(), entry));
            }
            pos = run.end;
        }
        if out.len() as u64 != u64::from(self.entries) {
            return Err(self.damage(0, format!("header says {} entries, found {}", self.entries, out.len())));
        }
        Ok(out)
    }
}

/// Iterates the entries of one run, checking that a partition header can only come first and
/// that rows strictly increase.
pub struct RunEntries<'a> {
    block: &'a DataBlock,
    reader: Reader<'a>,
    base: usize,
    first: bool,
    last_row: Option<&'a [u8]>,
}

impl RunEntries<'_> {
    pub fn next_entry(&mut self) -> Result<Option<Entry>, Damage> {
        if self.reader.remaining() == 0 {
            return Ok(None);
        }
        let at = self.base + self.reader.offset();
        let err = |e: DecodeError| self.block.decode_damage(self.base, e);
        let first = std::mem::replace(&mut self.first, false);
        match self.reader.u8().map_err(err)? {
            ENTRY_PARTITION_HEADER if first => {
                let deletion = decode_deletion(&mut self.reader).map_err(err)?;
                Ok(Some(Entry::PartitionHeader(deletion)))
            }
            ENTRY_PARTITION_HEADER => Err(self.block.damage(at, "partition header inside a run")),
            ENTRY_ROW => {
                let clustering = self.reader.bytes_limited(MAX_KEY_LEN).map_err(err)?;
                if self.last_row.is_some_and(|prev| prev >= clustering) {
                    return Err(self.block.damage(at, "rows are not in increasing clustering order"));
                }
                self.last_row = Some(clustering);
                let row = decode_row(&mut self.reader).map_err(err)?;
                Ok(Some(Entry::Row(ClusteringKey::from_encoded(clustering.to_vec()), row)))
            }
            other => Err(self.block.damage(at, format!("unknown entry kind {other}"))),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Index

/// One data block as the index describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub len: u32,
    pub first: EntryPosition,
}

/// Accumulates the index section while data blocks are written.
pub struct IndexBuilder {
    /// The section so far: a count placeholder, then the entries.
    bytes: Vec<u8>,
    count: u32,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        IndexBuilder { bytes: vec![0; 4], count: 0 }
    }
}

impl IndexBuilder {
    pub fn push(&mut self, entry: &IndexEntry) {
        let mut w = Writer::with_buffer(std::mem::take(&mut self.bytes));
        encode_index_entry(&mut w, entry);
        self.bytes = w.into_bytes();
        self.count += 1;
    }

    /// Bytes of the section if finished now.
    pub fn section_len(&self) -> usize {
        self.bytes.len() + CRC_LEN
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// The finished section: count, entries, crc32c.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[0..4].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32c::crc32c(&self.bytes);
        self.bytes.extend_from_slice(&crc.to_le_bytes());
        self.bytes
    }
}

fn encode_index_entry(w: &mut Writer, e: &IndexEntry) {
    w.u64(e.offset).u32(e.len).i64(e.first.token).bytes(&e.first.key);
    match &e.first.row {
        None => w.u8(ENTRY_PARTITION_HEADER),
        Some(row) => w.u8(ENTRY_ROW).bytes(row),
    };
}

/// Encodes a whole index section (tests and tools; the writer uses [`IndexBuilder`]).
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut b = IndexBuilder::default();
    entries.iter().for_each(|e| b.push(e));
    b.finish()
}

/// Decodes and validates the index section found at file offset `base`: at least one block,
/// blocks tile `[0, data_end)` in order, and their first positions strictly increase.
pub fn decode_index(bytes: &[u8], base: u64, data_end: u64) -> Result<Vec<IndexEntry>, Damage> {
    let body = verify_crc(bytes, SECTION_INDEX, base)?;
    let err = |e: DecodeError| Damage::decode(SECTION_INDEX, base, e);
    let mut r = Reader::new(body);
    let count = r.count(MIN_INDEX_ENTRY_LEN).map_err(err)?;
    if count == 0 {
        return Err(Damage::new(SECTION_INDEX, base, "no data blocks"));
    }
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(count);
    let mut expected_offset = 0u64;
    for _ in 0..count {
        let at = base + r.offset() as u64;
        let offset = r.u64().map_err(err)?;
        let len = r.u32().map_err(err)?;
        let token = r.i64().map_err(err)?;
        let key = r.bytes_limited(MAX_KEY_LEN).map_err(err)?.into();
        let row = match r.u8().map_err(err)? {
            ENTRY_PARTITION_HEADER => None,
            ENTRY_ROW => Some(r.bytes_limited(MAX_KEY_LEN).map_err(err)?.into()),
            other => return Err(Damage::new(SECTION_INDEX, at, format!("unknown first-entry kind {other}"))),
        };
        if offset != expected_offset {
            return Err(Damage::new(SECTION_INDEX, at, format!("block at {offset}, expected {expected_offset}")));
        }
        if (len as usize) < MIN_DATA_BLOCK_LEN || len as usize > MAX_DATA_BLOCK_LEN {
            return Err(Damage::new(SECTION_INDEX, at, format!("block length {len} is outside its bounds")));
        }
        let first = EntryPosition { token, key, row };
        if entries.last().is_some_and(|prev| prev.first >= first) {
            return Err(Damage::new(SECTION_INDEX, at, "blocks are not in increasing key order"));
        }
        expected_offset = offset + u64::from(len);
        entries.push(IndexEntry { offset, len, first });
    }
    r.finish().map_err(err)?;
    if expected_offset != data_end {
        return Err(Damage::new(
            SECTION_INDEX,
            base,
            format!("blocks end at {expected_offset}, data ends at {data_end}"),
        ));
    }
    if entries[0].first.row.is_some() {
        return Err(Damage::new(SECTION_INDEX, base, "the first block does not start with a partition header"));
    }
    Ok(entries)
}

/// Index of the block that holds `key`'s partition header if the partition is in the file: the
/// last block whose first position is at or before that header. `None` when `key` sorts before
/// the first block.
pub fn block_for_header(index: &[IndexEntry], key: &PartitionKey) -> Option<usize> {
    // Entries at or before (key, header): partition < key, or partition == key and it is the
    // header itself (a header sorts before every row of its partition).
    let at_or_before = index.partition_point(|e| match e.first.cmp_partition(key) {
        Ordering::Less => true,
        Ordering::Equal => e.first.row.is_none(),
        Ordering::Greater => false,
    });
    at_or_before.checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::Cell;
    use proptest::prelude::*;

    fn key(b: &[u8]) -> PartitionKey {
        PartitionKey::from_serialized(b.to_vec())
    }

    fn row(v: &[u8]) -> Row {
        Row { marker: None, deletion: None, cells: vec![(0, Cell::Live { ts: 1, value: v.to_vec() })] }
    }

    fn any_position() -> impl Strategy<Value = EntryPosition> {
        (
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..12),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12)),
        )
            .prop_map(|(token, key, row)| EntryPosition { token, key: key.into(), row: row.map(Into::into) })
    }

    fn any_footer() -> impl Strategy<Value = (Footer, u64)> {
        (13u64..1 << 40, 29u32..1 << 20, 24u32..1 << 20, 143u32..1 << 20, 0u64..4096).prop_map(
            |(data_end, index_len, bloom_len, meta_len, _)| {
                let index = Section { offset: data_end, len: index_len };
                let bloom = Section { offset: index.end(), len: bloom_len };
                let meta = Section { offset: bloom.end(), len: meta_len };
                let size = Footer::file_size_after(meta.end());
                (Footer { data_end, index, bloom, meta }, size)
            },
        )
    }

    /// A block of `n` partitions with a few rows each, and its index position.
    fn sample_block(n: u8) -> (Vec<u8>, EntryPosition) {
        let mut keys: Vec<PartitionKey> = (0..n).map(|i| key(&[i, i])).collect();
        keys.sort();
        let mut b = BlockBuilder::new(1024);
        for k in &keys {
            b.push_partition_header(k, (k.bytes()[0] % 2 == 0).then_some(Deletion { ts: 3, deleted_at: 9 }));
            for c in 0..3u8 {
                b.push_row(k, &ClusteringKey::from_encoded(vec![c]), &row(&[c; 5]));
            }
        }
        let frame = b.finish().expect("non-empty");
        let mut bytes = frame.header.to_vec();
        bytes.extend_from_slice(b.payload());
        bytes.extend_from_slice(&frame.crc);
        assert_eq!(bytes.len(), frame.len);
        (bytes, frame.first)
    }

    proptest! {
        #[test]
        fn footer_round_trips((footer, size) in any_footer()) {
            let bytes = footer.encode();
            prop_assert_eq!(Footer::decode(&bytes, size), Ok(footer));
        }

        #[test]
        fn index_round_trips(mut firsts in proptest::collection::btree_set(any_position(), 1..20), lens in proptest::collection::vec(13u32..100_000, 20)) {
            // The first block must start with a partition header.
            let mut head = firsts.pop_first().expect("non-empty");
            head.row = None;
            let firsts: Vec<_> = std::iter::once(head.clone()).chain(firsts.into_iter().filter(|p| *p > head)).collect();
            let mut offset = 0;
            let entries: Vec<IndexEntry> = firsts.into_iter().zip(&lens).map(|(first, len)| {
                let e = IndexEntry { offset, len: *len, first };
                offset += u64::from(*len);
                e
            }).collect();
            let bytes = encode_index(&entries);
            prop_assert_eq!(decode_index(&bytes, 777, offset), Ok(entries));
        }

        #[test]
        fn blocks_round_trip(rows in proptest::collection::btree_map(proptest::collection::vec(any::<u8>(), 0..6), proptest::collection::vec(any::<u8>(), 0..40), 0..20), deletion in proptest::option::of((any::<i64>(), any::<u32>()))) {
            let k = key(b"partition");
            let deletion = deletion.map(|(ts, deleted_at)| Deletion { ts, deleted_at });
            let mut b = BlockBuilder::new(64);
            b.push_partition_header(&k, deletion);
            for (c, v) in &rows {
                b.push_row(&k, &ClusteringKey::from_encoded(c.clone()), &row(v));
            }
            let frame = b.finish().expect("non-empty");
            let bytes = [&frame.header[..], b.payload(), &frame.crc[..]].concat();
            let block = DataBlock::decode(4096, bytes, &frame.first).expect("decodes");
            let decoded = block.decode_all().expect("entries decode");
            let mut expected = vec![(k.token(), k.bytes().to_vec(), Entry::PartitionHeader(deletion))];
            for (c, v) in rows {
                expected.push((k.token(), k.bytes().to_vec(), Entry::Row(ClusteringKey::from_encoded(c), row(&v))));
            }
            prop_assert_eq!(decoded, expected);
        }

        /// Arbitrary bytes never panic any decoder.
        #[test]
        fn decoders_survive_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), size in 0u64..1 << 20) {
            let _ = Footer::decode(&bytes, size);
            let _ = decode_index(&bytes, 0, size);
            let pos = EntryPosition { token: 0, key: Box::new([]), row: None };
            if let Ok(block) = DataBlock::decode(0, bytes.clone(), &pos) {
                let _ = block.decode_all();
            }
        }

        /// Valid encodings with bytes changed and the checksum recomputed (so the structural
        /// checks behind the checksum are exercised) never panic, and decode to an error or to
        /// something that re-encodes.
        #[test]
        fn decoders_survive_mutated_valid_encodings(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4), n in 1u8..6) {
            let fix_crc = |bytes: &mut Vec<u8>| {
                let at = bytes.len() - CRC_LEN;
                let crc = crc32c::crc32c(&bytes[..at]);
                bytes[at..].copy_from_slice(&crc.to_le_bytes());
            };
            let (mut block, first) = sample_block(n);
            let len = block.len();
            for (i, v) in &flips {
                block[i.index(len - CRC_LEN)] = *v;
            }
            fix_crc(&mut block);
            if let Ok(b) = DataBlock::decode(0, block, &first) {
                let _ = b.decode_all();
            }
            let index = vec![
                IndexEntry { offset: 0, len: 100, first: EntryPosition { token: -5, key: b"k".to_vec().into(), row: None } },
                IndexEntry { offset: 100, len: 50, first: EntryPosition { token: -5, key: b"k".to_vec().into(), row: Some(b"r".to_vec().into()) } },
            ];
            let mut bytes = encode_index(&index);
            let len = bytes.len();
            for (i, v) in &flips {
                bytes[i.index(len - CRC_LEN)] = *v;
            }
            fix_crc(&mut bytes);
            let _ = decode_index(&bytes, 0, 150);
            let footer = Footer { data_end: 150, index: Section { offset: 150, len: 40 }, bloom: Section { offset: 190, len: 40 }, meta: Section { offset: 230, len: 100 } };
            let mut bytes = footer.encode().to_vec();
            for (i, v) in &flips {
                bytes[i.index(FOOTER_LEN - CRC_LEN)] = *v;
            }
            fix_crc(&mut bytes);
            if let Ok(decoded) = Footer::decode(&bytes, 4096) {
                prop_assert_eq!(decoded.encode().to_vec(), bytes);
            }
        }
    }

    #[test]
    fn footer_checks_magic_then_version_then_crc() {
        let footer = Footer {
            data_end: 100,
            index: Section { offset: 100, len: 40 },
            bloom: Section { offset: 140, len: 40 },
            meta: Section { offset: 180, len: 200 },
        };
        let good = footer.encode();
        assert_eq!(Footer::decode(&good, 4096), Ok(footer));
        let mut v2 = good;
        v2[8] = 2;
        assert_eq!(Footer::decode(&v2, 4096), Err(FooterError::UnsupportedVersion(2)));
        let mut bad_magic = v2;
        bad_magic[0] ^= 1;
        assert!(matches!(Footer::decode(&bad_magic, 4096), Err(FooterError::Damaged(d)) if d.reason.contains("magic")));
        let mut flipped = good;
        flipped[30] ^= 1;
        assert!(matches!(Footer::decode(&flipped, 4096), Err(FooterError::Damaged(d)) if d.reason.contains("crc32c")));
        // Sections out of the file.
        assert!(
            matches!(Footer::decode(&good, 8192), Err(FooterError::Damaged(d)) if d.reason.contains("footer is at"))
        );
        assert!(matches!(Footer::decode(&good, 4000), Err(FooterError::Damaged(_))));
    }

    #[test]
    fn block_runs_carry_each_partition_key_once() {
        let (bytes, first) = sample_block(4);
        let block = DataBlock::decode(0, bytes.clone(), &first).unwrap();
        assert_eq!(block.entries, 16);
        let mut pos = 0;
        let mut runs = 0;
        while pos < block.payload().len() {
            let run = block.run_at(pos).unwrap();
            pos = run.end;
            runs += 1;
        }
        assert_eq!(runs, 4);
        // A block whose first entry is not its index entry's is refused.
        let other = EntryPosition { token: first.token, key: first.key.clone(), row: Some(vec![0].into()) };
        assert!(DataBlock::decode(0, bytes, &other).is_err());
    }

    #[test]
    fn compressed_flag_is_refused() {
        let (mut bytes, first) = sample_block(1);
        bytes[8] = BLOCK_FLAG_COMPRESSED;
        let at = bytes.len() - CRC_LEN;
        let crc = crc32c::crc32c(&bytes[..at]);
        bytes[at..].copy_from_slice(&crc.to_le_bytes());
        let err = DataBlock::decode(0, bytes, &first).unwrap_err();
        assert!(err.reason.contains("compressed"), "{err:?}");
    }

    #[test]
    fn block_for_header_finds_the_block_that_can_hold_a_partition() {
        let mut keys: Vec<PartitionKey> = (0u8..6).map(|i| key(&[i])).collect();
        keys.sort();
        let pos = |k: &PartitionKey, r: Option<&[u8]>| EntryPosition {
            token: k.token(),
            key: k.bytes().into(),
            row: r.map(Into::into),
        };
        // Block 0 starts with partition 1 (whose rows continue into blocks 1 and 2 after
        // partition 2's header), block 3 with partition 4.
        let firsts = [pos(&keys[1], None), pos(&keys[2], Some(b"x")), pos(&keys[2], Some(b"y")), pos(&keys[4], None)];
        let index: Vec<IndexEntry> = firsts
            .into_iter()
            .enumerate()
            .map(|(i, first)| IndexEntry { offset: i as u64 * 100, len: 100, first })
            .collect();
        assert_eq!(block_for_header(&index, &keys[0]), None);
        assert_eq!(block_for_header(&index, &keys[1]), Some(0));
        assert_eq!(block_for_header(&index, &keys[2]), Some(0));
        assert_eq!(block_for_header(&index, &keys[3]), Some(2));
        assert_eq!(block_for_header(&index, &keys[4]), Some(3));
        assert_eq!(block_for_header(&index, &keys[5]), Some(3));
    }
}

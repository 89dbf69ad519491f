//! SSTables: immutable, sorted files holding one table's partitions of one shard, written once
//! (by a flush or a compaction) and read by point lookups and token-range scans, plus the
//! shard's block cache in front of them.
//! This module owns the SSTable file format and nothing else: it never decides when to flush or
//! compact, never names or deletes files on its own (except a partial file it was writing), and
//! never trusts a byte it read before a checksum covering it matched.
//!
//! Layout: `format` (pure byte layout of blocks, index and footer), `bloom` and `meta` (the
//! other sections, pure), `cache` (the per-shard block cache), `writer` (DMA writes, one in
//! flight ahead of the encoder) and `reader` (open, point reads, scans). The byte layout is
//! documented in docs/FORMAT.md, section "SSTable".

mod bloom;
mod cache;
pub mod format;
pub mod inspect;
mod meta;
mod reader;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use bloom::{BloomFilter, BloomHash, MAX_BLOOM_BITS, MAX_BLOOM_HASHES};
pub use cache::{BlockCache, CacheStats, CACHE_ENTRY_OVERHEAD};
pub use format::{MAX_DATA_BLOCK_LEN, MAX_KEY_LEN};
pub use meta::{SstableMeta, META_ENCODING_VERSION};
pub use reader::{Sstable, SstableReadStats, SstableScan};
pub use writer::SstableWriter;

use crate::io::PathIoError;
use crate::key::PartitionKey;

/// Identifies an SSTable inside its shard's block cache: its generation, which must be unique
/// among the SSTables that share one [`BlockCache`].
pub type SstableId = u64;

/// Largest single read or write issued to the device (docs/GLOMMIO.md pitfall 3).
pub const MAX_IO_SIZE: usize = 1 << 20;

/// Bounds of [`SstableConfig::block_size`].
pub const MIN_BLOCK_SIZE: usize = 64;
pub const MAX_BLOCK_SIZE: usize = 16 << 20;

/// Most bytes a scan reads in one range ahead of the block it needs (several small blocks per
/// device read; RocksDB's compaction_readahead_size plays this part).
pub const SCAN_READ_AHEAD_BYTES: usize = 256 << 10;

/// Bounds of [`SstableConfig::bloom_fp_rate`].
pub const MIN_BLOOM_FP_RATE: f64 = 1e-9;
pub const MAX_BLOOM_FP_RATE: f64 = 0.5;

#[derive(Clone, Debug, PartialEq)]
pub struct SstableConfig {
    /// Target size of a data block's payload: a block closes after the entry that crosses it.
    /// Default 4 KiB (RocksDB's default; the device's page), in
    /// [`MIN_BLOCK_SIZE`]..=[`MAX_BLOCK_SIZE`]. A point read that misses the block cache reads one
    /// whole block: with 64 KiB blocks (Cassandra's old chunk length) cold point reads were bound
    /// by device bandwidth (vs_rocksdb, 5M rows, 2 shards: 10k present-key reads/s at 64 KiB,
    /// 32k at 16 KiB, 59k at 4 KiB; the write surge and its compactions unchanged).
    pub block_size: usize,
    /// Wanted false-positive rate of the bloom filter, for the expected partition count.
    /// Default 0.01 (Cassandra's default for size-tiered tables).
    pub bloom_fp_rate: f64,
    /// Size of each of the writer's two DMA buffers (one being filled, one being written): a
    /// multiple of 4096 up to [`MAX_IO_SIZE`]. Default 256 KiB.
    pub write_buffer: usize,
}

impl Default for SstableConfig {
    fn default() -> Self {
        SstableConfig { block_size: 4 << 10, bloom_fp_rate: 0.01, write_buffer: 256 << 10 }
    }
}

impl SstableConfig {
    pub fn validate(&self) -> Result<(), SstableError> {
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size) {
            return Err(SstableError::InvalidConfig(format!(
                "block_size {} outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}",
                self.block_size
            )));
        }
        if !(MIN_BLOOM_FP_RATE..=MAX_BLOOM_FP_RATE).contains(&self.bloom_fp_rate) {
            return Err(SstableError::InvalidConfig(format!(
                "bloom_fp_rate {} outside {MIN_BLOOM_FP_RATE}..={MAX_BLOOM_FP_RATE}",
                self.bloom_fp_rate
            )));
        }
        let align = format::FILE_ALIGN as usize;
        if self.write_buffer == 0 || !self.write_buffer.is_multiple_of(align) || self.write_buffer > MAX_IO_SIZE {
            return Err(SstableError::InvalidConfig(format!(
                "write_buffer {} must be a positive multiple of {align} up to {MAX_IO_SIZE}",
                self.write_buffer
            )));
        }
        Ok(())
    }
}

/// Everything that can go wrong writing or reading an SSTable. `Send`, so it can cross channels.
#[derive(Debug, thiserror::Error)]
pub enum SstableError {
    #[error("SSTable I/O: {0}")]
    Io(#[from] PathIoError),
    #[error("corrupt SSTable {path}: {section} at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, section: &'static str, offset: u64, reason: String },
    #[error("SSTable {path} has format version {version}, this build reads only version {}", format::FORMAT_VERSION)]
    UnsupportedVersion { path: PathBuf, version: u16 },
    #[error("SSTable {path}: partition {next:?} added after {previous:?}; partitions must strictly increase")]
    OutOfOrder { path: PathBuf, previous: PartitionKey, next: PartitionKey },
    #[error("SSTable {path}: partition key {key:?} does not hash to its token")]
    InconsistentKey { path: PathBuf, key: PartitionKey },
    #[error("SSTable {path}: {what} of {size} bytes exceeds the limit of {limit}")]
    TooLarge { path: PathBuf, what: &'static str, size: u64, limit: u64 },
    #[error("SSTable {path}: no partition was added; an SSTable is never empty")]
    Empty { path: PathBuf },
    #[error("SSTable {path}: the writer failed earlier and accepts nothing more")]
    WriterFailed { path: PathBuf },
    #[error("invalid SSTable configuration: {0}")]
    InvalidConfig(String),
}

impl SstableError {
    fn corrupt(path: &std::path::Path, damage: format::Damage) -> SstableError {
        SstableError::Corrupt {
            path: path.to_path_buf(),
            section: damage.section,
            offset: damage.offset,
            reason: damage.reason,
        }
    }

    /// The section named by a `Corrupt` error.
    pub fn corrupt_section(&self) -> Option<&'static str> {
        match self {
            SstableError::Corrupt { section, .. } => Some(section),
            _ => None,
        }
    }
}

fn io_error(op: &'static str, path: &std::path::Path, err: impl Into<std::io::Error>) -> SstableError {
    SstableError::Io(PathIoError::new(op, path, err.into()))
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn errors_are_send_and_configs_are_checked() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<SstableError>();
        SstableConfig::default().validate().unwrap();
        for bad in [
            SstableConfig { block_size: 1, ..SstableConfig::default() },
            SstableConfig { bloom_fp_rate: 0.0, ..SstableConfig::default() },
            SstableConfig { bloom_fp_rate: f64::NAN, ..SstableConfig::default() },
            SstableConfig { write_buffer: 5000, ..SstableConfig::default() },
            SstableConfig { write_buffer: 2 << 20, ..SstableConfig::default() },
        ] {
            assert!(matches!(bad.validate(), Err(SstableError::InvalidConfig(_))), "{bad:?}");
        }
    }
}

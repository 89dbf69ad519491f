//! The SSTable inspector's engine (`enigmadb sstable dump|meta|check`): opens one SSTable with
//! plain `std::fs` (no executor: the file is immutable), walks its data blocks in storage order and
//! checks every invariant the writer promises, stopping at the first problem.
//! It decodes with the format's own decoders (never a second decoder of the same bytes) and never
//! writes to the file.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::bloom::BloomFilter;
use super::format::{
    Damage, DataBlock, Entry, EntryPosition, Footer, IndexEntry, BLOCK_HEADER_LEN, FOOTER_LEN, SECTION_BLOOM,
    SECTION_DATA_BLOCK, SECTION_METADATA,
};
use super::meta::{PartitionStats, SstableMeta};
use super::reader::{check_file_size, decode_footer, decode_sections};
use super::{io_error, SstableError};
use crate::cell::Deletion;
use crate::key::{ClusteringKey, PartitionKey};
use crate::row::{Partition, Row};

/// Section name of the zeros between the metadata and the footer.
pub const SECTION_PADDING: &str = "padding";

/// What the walk met, in storage order. A partition's rows follow its `Partition` event; the
/// next `Partition` event (or the end of the walk) ends it.
#[derive(Debug)]
pub enum Event<'a> {
    Partition {
        key: &'a PartitionKey,
        deletion: Option<Deletion>,
        /// File offset of the run that holds the partition's header.
        position: u64,
        /// Index of the data block holding the header.
        block: usize,
    },
    Row {
        key: &'a PartitionKey,
        clustering: &'a ClusteringKey,
        row: &'a Row,
    },
}

/// A walk stopped: the file is damaged, or the visitor failed to write its output.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Sstable(#[from] SstableError),
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// What a complete walk verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalkSummary {
    pub data_blocks: u64,
    /// Partition headers and rows.
    pub entries: u64,
    pub partitions: u64,
    pub rows: u64,
    pub live_cells: u64,
    pub tombstones: u64,
    pub expiring_cells: u64,
}

/// An SSTable whose footer, metadata, index and bloom filter decoded and agree with each other
/// (the checks of [`super::Sstable::open`]); data blocks are read and verified by [`Self::walk`].
#[derive(Debug)]
pub struct InspectedSstable {
    path: PathBuf,
    file: File,
    file_size: u64,
    footer: Footer,
    meta: SstableMeta,
    index: Vec<IndexEntry>,
    bloom: BloomFilter,
}

impl InspectedSstable {
    /// Opens and verifies everything but the data blocks. Every read is bounded by the footer's
    /// checked section lengths.
    pub fn open(path: &Path) -> Result<InspectedSstable, SstableError> {
        let file = File::open(path).map_err(|e| io_error("open", path, e))?;
        let file_size = file.metadata().map_err(|e| io_error("stat", path, e))?.len();
        check_file_size(path, file_size)?;
        let read = |offset: u64, len: usize| -> Result<Vec<u8>, SstableError> {
            let mut buf = vec![0; len];
            file.read_exact_at(&mut buf, offset).map_err(|e| io_error("read", path, e))?;
            Ok(buf)
        };
        let footer = decode_footer(path, &read(Footer::position(file_size), FOOTER_LEN)?, file_size)?;
        let tail = read(footer.index.offset, (footer.meta.end() - footer.index.offset) as usize)?;
        let (meta, index, bloom) = decode_sections(path, file_size, &footer, &tail)?;
        Ok(InspectedSstable { path: path.to_path_buf(), file, file_size, footer, meta, index, bloom })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn meta(&self) -> &SstableMeta {
        &self.meta
    }

    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    pub fn bloom(&self) -> &BloomFilter {
        &self.bloom
    }

    /// Walks the whole file with no visitor: every check of [`Self::walk`].
    pub fn check(&self) -> Result<WalkSummary, InspectError> {
        self.walk(|_| Ok(()))
    }

    /// Reads every data block in order and hands each partition and row to `visit`, checking on
    /// the way: each block's checksum, structure and agreement with its index entry; that every
    /// stored token is its key's; that entries strictly increase in storage order across the
    /// whole file and each partition starts with its header; that the bloom filter holds every
    /// partition key; that the padding before the footer is zero; and, at the end, that the
    /// metadata's keys, timestamps and counts are those of the data. Stops at the first problem.
    ///
    /// Holds one data block and the partition being walked (to count it as the writer did).
    pub fn walk(
        &self,
        mut visit: impl FnMut(&Event<'_>) -> Result<(), std::io::Error>,
    ) -> Result<WalkSummary, InspectError> {
        self.check_padding()?;
        let mut walk = Walk::default();
        for (i, entry) in self.index.iter().enumerate() {
            let block = self.read_block(entry)?;
            let mut pos = 0;
            let mut entries = 0u64;
            while pos < block.payload().len() {
                let run = block.run_at(pos).map_err(|d| self.corrupt(d))?;
                let run_offset = block.offset + (BLOCK_HEADER_LEN + pos) as u64;
                let key = PartitionKey::from_serialized(run.key.to_vec());
                if key.token() != run.token {
                    return Err(self
                        .damage(SECTION_DATA_BLOCK, run_offset, "stored token differs from the key's token")
                        .into());
                }
                let continues = walk.current.as_ref().is_some_and(|(k, _)| *k == key);
                let mut run_entries = block.entries(&run);
                let mut first = true;
                while let Some(e) = run_entries.next_entry().map_err(|d| self.corrupt(d))? {
                    entries += 1;
                    match e {
                        Entry::PartitionHeader(deletion) => {
                            walk.advance(EntryPosition::header_of(&key))
                                .map_err(|reason| self.damage(SECTION_DATA_BLOCK, run_offset, reason))?;
                            if !self.bloom.may_contain(key.bytes()) {
                                let reason = format!("partition {key:?} is missing from the bloom filter");
                                return Err(self.damage(SECTION_BLOOM, self.footer.bloom.offset, reason).into());
                            }
                            walk.finish_partition();
                            visit(&Event::Partition { key: &key, deletion, position: run_offset, block: i })?;
                            walk.start_partition(key.clone(), deletion);
                        }
                        Entry::Row(clustering, row) => {
                            if first && !continues {
                                let reason = format!("partition {key:?} has rows but no header");
                                return Err(self.damage(SECTION_DATA_BLOCK, run_offset, reason).into());
                            }
                            let position = EntryPosition {
                                token: key.token(),
                                key: key.bytes().into(),
                                row: Some(clustering.as_bytes().into()),
                            };
                            walk.advance(position)
                                .map_err(|reason| self.damage(SECTION_DATA_BLOCK, run_offset, reason))?;
                            visit(&Event::Row { key: &key, clustering: &clustering, row: &row })?;
                            walk.add_row(clustering, row);
                        }
                    }
                    first = false;
                }
                pos = run.end;
            }
            if entries != u64::from(block.entries) {
                let reason = format!("header says {} entries, the block holds {entries}", block.entries);
                return Err(self.damage(SECTION_DATA_BLOCK, block.offset, reason).into());
            }
            walk.summary.entries += entries;
            walk.summary.data_blocks += 1;
        }
        walk.finish_partition();
        self.check_meta(&walk)?;
        Ok(walk.summary)
    }

    /// Data block `entry`, read and verified.
    fn read_block(&self, entry: &IndexEntry) -> Result<DataBlock, SstableError> {
        // The index bounded the length (at most MAX_DATA_BLOCK_LEN) and the footer the range.
        let mut bytes = vec![0; entry.len as usize];
        self.file.read_exact_at(&mut bytes, entry.offset).map_err(|e| io_error("read", &self.path, e))?;
        DataBlock::decode(entry.offset, bytes, &entry.first).map_err(|d| self.corrupt(d))
    }

    /// The bytes between the metadata and the footer are zeros (fewer than 4096 of them).
    fn check_padding(&self) -> Result<(), SstableError> {
        let start = self.footer.meta.end();
        let mut padding = vec![0; (Footer::position(self.file_size) - start) as usize];
        self.file.read_exact_at(&mut padding, start).map_err(|e| io_error("read", &self.path, e))?;
        match padding.iter().position(|b| *b != 0) {
            None => Ok(()),
            Some(at) => Err(self.damage(SECTION_PADDING, start + at as u64, "padding before the footer is not zero")),
        }
    }

    /// The metadata describes exactly what the data blocks hold.
    fn check_meta(&self, walk: &Walk) -> Result<(), SstableError> {
        let m = &self.meta;
        let s = &walk.stats;
        let mismatch = |what: &str, meta: String, data: String| {
            let reason = format!("metadata says {what} {meta}, the data blocks hold {data}");
            Err(self.damage(SECTION_METADATA, self.footer.meta.offset, reason))
        };
        if walk.first_key.as_ref() != Some(&m.first_key) {
            return mismatch("first key", format!("{:?}", m.first_key), format!("{:?}", walk.first_key));
        }
        if walk.last_key.as_ref() != Some(&m.last_key) {
            return mismatch("last key", format!("{:?}", m.last_key), format!("{:?}", walk.last_key));
        }
        let pairs = [
            ("min timestamp", m.min_timestamp as i128, s.min_timestamp as i128),
            ("max timestamp", m.max_timestamp as i128, s.max_timestamp as i128),
            ("partitions", m.partitions.into(), s.partitions.into()),
            ("rows", m.rows.into(), s.rows.into()),
            ("live cells", m.live_cells.into(), s.live_cells.into()),
            ("tombstones", m.tombstones.into(), s.tombstones.into()),
            ("expiring cells", m.expiring_cells.into(), s.expiring_cells.into()),
            ("max deletion time", m.max_deletion_time.into(), s.max_deletion_time.into()),
        ];
        for (what, meta, data) in pairs {
            if meta != data {
                return mismatch(what, meta.to_string(), data.to_string());
            }
        }
        Ok(())
    }

    fn corrupt(&self, damage: Damage) -> SstableError {
        SstableError::corrupt(&self.path, damage)
    }

    fn damage(&self, section: &'static str, offset: u64, reason: impl Into<String>) -> SstableError {
        self.corrupt(Damage::new(section, offset, reason))
    }
}

/// State of a walk: the last position seen and the partition being assembled.
#[derive(Default)]
struct Walk {
    previous: Option<EntryPosition>,
    current: Option<(PartitionKey, Partition)>,
    first_key: Option<PartitionKey>,
    last_key: Option<PartitionKey>,
    stats: PartitionStats,
    summary: WalkSummary,
}

impl Walk {
    /// Storage order strictly increases across the whole file.
    fn advance(&mut self, next: EntryPosition) -> Result<(), String> {
        if let Some(prev) = &self.previous {
            if *prev >= next {
                return Err(format!("entries out of storage order: {next:?} after {prev:?}"));
            }
        }
        self.previous = Some(next);
        Ok(())
    }

    fn start_partition(&mut self, key: PartitionKey, deletion: Option<Deletion>) {
        self.first_key.get_or_insert_with(|| key.clone());
        self.last_key = Some(key.clone());
        self.current = Some((key, Partition { deletion, ..Partition::default() }));
    }

    fn add_row(&mut self, clustering: ClusteringKey, row: Row) {
        if let Some((_, partition)) = &mut self.current {
            partition.rows.insert(clustering, row);
        }
    }

    /// Counts the partition being assembled, as the writer counted it.
    fn finish_partition(&mut self) {
        if let Some((_, partition)) = self.current.take() {
            self.stats.add(&partition);
            let s = &self.stats;
            self.summary.partitions = s.partitions;
            self.summary.rows = s.rows;
            self.summary.live_cells = s.live_cells;
            self.summary.tombstones = s.tombstones;
            self.summary.expiring_cells = s.expiring_cells;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sstable::tests::{random_model, small_config, write, Model};
    use crate::test_support::{on_executor, Seed};
    use proptest::prelude::*;

    /// A random SSTable written by the real writer (small blocks: partitions span blocks), and
    /// the model it was written from.
    fn written_sstable(dir: &Path, seed: &Seed) -> (PathBuf, Model) {
        let model = random_model(&mut seed.rng(), 150);
        let path = dir.join("t.sst");
        let (p, m) = (path.clone(), model.clone());
        on_executor(dir, move |_| async move { write(&p, &m, &small_config()).await });
        (path, model)
    }

    #[test]
    fn walk_returns_what_was_written_and_a_good_file_checks_clean() {
        let seed = Seed::from_env("INSPECT_SEED");
        let dir = tempfile::tempdir().unwrap();
        let (path, model) = written_sstable(dir.path(), &seed);
        let sst = InspectedSstable::open(&path).expect("opens");
        assert!(sst.index().len() > 10, "small blocks make many blocks");
        let mut seen = Model::new();
        let mut last = None;
        let summary = sst
            .walk(|event| {
                match event {
                    Event::Partition { key, deletion, .. } => {
                        seen.insert((*key).clone(), Partition { deletion: *deletion, ..Partition::default() });
                        last = Some((*key).clone());
                    }
                    Event::Row { key, clustering, row } => {
                        assert_eq!(last.as_ref(), Some(*key), "a row belongs to the partition before it");
                        seen.get_mut(*key).unwrap().rows.insert((*clustering).clone(), (*row).clone());
                    }
                }
                Ok(())
            })
            .expect("clean walk");
        assert_eq!(seen, model);
        let meta = sst.meta();
        assert_eq!(summary.data_blocks, meta.data_blocks);
        assert_eq!((summary.partitions, summary.rows), (meta.partitions, meta.rows));
        assert_eq!((summary.live_cells, summary.tombstones), (meta.live_cells, meta.tombstones));
        assert_eq!(sst.check().expect("clean check"), summary);
    }

    #[test]
    fn a_visitor_error_stops_the_walk() {
        let seed = Seed::from_env("INSPECT_SEED");
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = written_sstable(dir.path(), &seed);
        let sst = InspectedSstable::open(&path).unwrap();
        let mut calls = 0;
        let err = sst
            .walk(|_| {
                calls += 1;
                Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "closed"))
            })
            .unwrap_err();
        assert!(matches!(err, InspectError::Output(_)), "{err}");
        assert_eq!(calls, 1);
    }

    /// Opens and checks `bytes` as an SSTable: the first problem, or None when clean.
    fn check_bytes(path: &Path, bytes: &[u8]) -> Option<String> {
        std::fs::write(path, bytes).unwrap();
        match InspectedSstable::open(path) {
            Err(e) => Some(e.to_string()),
            Ok(sst) => sst.check().err().map(|e| e.to_string()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Every byte of the file is covered by a checksum or the zero-padding check: any changed
        /// byte, and any truncation, is reported (never a panic, never a clean check).
        #[test]
        fn every_changed_byte_and_every_truncation_is_reported(at in any::<prop::sample::Index>(), xor in 1u8..=255, cut in any::<prop::sample::Index>()) {
            let seed = Seed::from_env("INSPECT_SEED");
            let dir = tempfile::tempdir().unwrap();
            let (path, _) = written_sstable(dir.path(), &seed);
            let good = std::fs::read(&path).unwrap();
            let copy = dir.path().join("copy.sst");
            let mut bytes = good.clone();
            let i = at.index(bytes.len());
            bytes[i] ^= xor;
            let problem = check_bytes(&copy, &bytes);
            prop_assert!(problem.is_some(), "byte {} changed, yet the file checks clean", i);
            let len = cut.index(good.len());
            let problem = check_bytes(&copy, &good[..len]);
            prop_assert!(problem.is_some(), "truncated to {} bytes, yet the file checks clean", len);
        }
    }
}

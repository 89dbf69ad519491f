//! The manifest of one shard: the single source of truth for which SSTables are live and how far
//! the WAL has been flushed into them. Files in the shard's SSTable directory that it does not
//! name are leftovers of a crash (a flush or compaction that never got recorded) and are removed
//! at start.
//!
//! Every edit writes the whole manifest anew ([`durable_file`](crate::durable_file): temp file,
//! fsync, rename, directory fsync), so a crash leaves the previous or the next version, never a
//! mix. It is small (one entry per SSTable). Table schemas are not here: they live in the node's
//! catalog, which is made durable before any shard can hold data of a table.

use std::path::{Path, PathBuf};

use wire::codec::{Reader, Writer};
use wire::schema::TableId;

use crate::durable_file::{self, DurableFileError, FileKind};
use crate::wal::Lsn;

pub const MANIFEST_FILE: &str = "MANIFEST";
pub const SSTABLE_DIR: &str = "sstables";
const KIND: FileKind = FileKind { name: "shard manifest", magic: *b"ENIGMANI", version: 1 };

/// Bound on the SSTables one shard may list.
pub const MAX_SSTABLES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    File(#[from] DurableFileError),
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("listing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// One live SSTable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SstableEntry {
    pub table: TableId,
    pub generation: u64,
    pub file_size: u64,
}

impl SstableEntry {
    pub fn file_name(&self) -> String {
        sstable_file_name(self.table, self.generation)
    }
}

/// `t<table>-g<generation>.sst`, zero-padded so names sort by table then generation.
pub fn sstable_file_name(table: TableId, generation: u64) -> String {
    format!("t{table:010}-g{generation:020}.sst")
}

/// The table and generation in an SSTable file name, or None if the name is not one.
pub fn parse_sstable_file_name(name: &str) -> Option<(TableId, u64)> {
    let rest = name.strip_prefix('t')?.strip_suffix(".sst")?;
    let (table, generation) = rest.split_once("-g")?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(table, 10) || !digits(generation, 20) {
        return None;
    }
    Some((table.parse().ok()?, generation.parse().ok()?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Incremented by every edit.
    pub version: u64,
    /// Every WAL record with an LSN <= this is in a live SSTable; replay skips them.
    pub flushed_through: Lsn,
    /// The next SSTable generation to hand out (generations are never reused).
    pub next_generation: u64,
    pub sstables: Vec<SstableEntry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest { version: 0, flushed_through: 0, next_generation: 1, sstables: Vec::new() }
    }
}

impl Manifest {
    /// Loads the manifest of a shard directory; a new directory has an empty one.
    pub fn load(shard_dir: &Path) -> Result<Manifest, ManifestError> {
        Ok(Self::read(shard_dir)?.unwrap_or_default())
    }

    /// The manifest of a shard directory, or None if it has no `MANIFEST` file.
    pub fn read(shard_dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        let path = shard_dir.join(MANIFEST_FILE);
        let Some(bytes) = durable_file::read(&path, KIND)? else { return Ok(None) };
        Self::decode(&bytes).map(Some).map_err(|reason| ManifestError::Corrupt { path, reason })
    }

    /// SSTable files in the shard's SSTable directory (by their names), in name order, whether
    /// or not a manifest names them. A missing directory holds none.
    pub fn sstable_files(shard_dir: &Path) -> Result<Vec<(SstableEntry, PathBuf)>, ManifestError> {
        let dir = shard_dir.join(SSTABLE_DIR);
        let io = |source| ManifestError::Io { path: dir.clone(), source };
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some((table, generation)) = name.to_str().and_then(parse_sstable_file_name) else { continue };
            let file_size = entry.metadata().map_err(io)?.len();
            found.push((SstableEntry { table, generation, file_size }, entry.path()));
        }
        found.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(found)
    }

    /// Makes this version the durable one.
    pub fn save(&self, shard_dir: &Path) -> Result<(), ManifestError> {
        assert!(self.sstables.len() <= MAX_SSTABLES, "a shard lists more than {MAX_SSTABLES} SSTables");
        durable_file::write(&shard_dir.join(MANIFEST_FILE), KIND, &self.encode())?;
        Ok(())
    }

    /// Removes files in the SSTable directory that this manifest does not name (a crash during
    /// a flush or compaction leaves them). Returns the removed paths.
    pub fn remove_leftovers(&self, shard_dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
        let dir = shard_dir.join(SSTABLE_DIR);
        let io = |source| ManifestError::Io { path: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let live: std::collections::HashSet<String> = self.sstables.iter().map(SstableEntry::file_name).collect();
        let mut removed = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
            if !live.contains(&name) {
                tracing::warn!(file = %path.display(), "removing a file the manifest does not name (crash leftover)");
                std::fs::remove_file(&path).map_err(|source| ManifestError::Io { path: path.clone(), source })?;
                removed.push(path);
            }
        }
        if !removed.is_empty() {
            crate::io::sync_dir(&dir).map_err(io)?;
        }
        Ok(removed)
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.version).u64(self.flushed_through).u64(self.next_generation).u32(self.sstables.len() as u32);
        for s in &self.sstables {
            w.u32(s.table).u64(s.generation).u64(s.file_size);
        }
        w.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let mut r = Reader::new(bytes);
        let inner = |r: &mut Reader<'_>| -> Result<Manifest, wire::DecodeError> {
            let (version, flushed_through, next_generation) = (r.u64()?, r.u64()?, r.u64()?);
            let n = r.count(20)?;
            let sstables = (0..n)
                .map(|_| Ok(SstableEntry { table: r.u32()?, generation: r.u64()?, file_size: r.u64()? }))
                .collect::<Result<Vec<_>, wire::DecodeError>>()?;
            r.finish()?;
            Ok(Manifest { version, flushed_through, next_generation, sstables })
        };
        let m = inner(&mut r).map_err(|e| e.to_string())?;
        if let Some(bad) = m.sstables.iter().find(|s| s.generation >= m.next_generation) {
            return Err(format!("generation {} is not below next_generation {}", bad.generation, m.next_generation));
        }
        let mut gens: Vec<u64> = m.sstables.iter().map(|s| s.generation).collect();
        gens.sort_unstable();
        if gens.windows(2).any(|w| w[0] == w[1]) {
            return Err("an SSTable generation is listed twice".into());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Manifest {
        Manifest {
            version: 7,
            flushed_through: 1234,
            next_generation: 10,
            sstables: vec![
                SstableEntry { table: 1, generation: 3, file_size: 8192 },
                SstableEntry { table: 2, generation: 9, file_size: 4096 },
            ],
        }
    }

    #[test]
    fn saves_loads_and_removes_only_unnamed_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Manifest::default());
        let m = sample();
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        let sst = dir.path().join(SSTABLE_DIR);
        std::fs::create_dir_all(&sst).unwrap();
        for name in [sstable_file_name(1, 3), sstable_file_name(2, 9), sstable_file_name(1, 4), "x.tmp".into()] {
            std::fs::write(sst.join(name), b"x").unwrap();
        }
        let removed = m.remove_leftovers(dir.path()).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(sst.join(sstable_file_name(1, 3)).exists() && !sst.join(sstable_file_name(1, 4)).exists());
    }

    #[test]
    fn sstable_file_names_round_trip_and_others_are_ignored() {
        assert_eq!(parse_sstable_file_name(&sstable_file_name(7, 42)), Some((7, 42)));
        assert_eq!(parse_sstable_file_name(&sstable_file_name(u32::MAX, u64::MAX)), Some((u32::MAX, u64::MAX)));
        for other in
            ["t1-g2.sst", "x.tmp", "t0000000001-g00000000000000000002.sst.tmp", "t000000000a-g00000000000000000002.sst"]
        {
            assert_eq!(parse_sstable_file_name(other), None, "{other}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::sstable_files(dir.path()).unwrap().is_empty());
        assert_eq!(Manifest::read(dir.path()).unwrap(), None);
    }

    #[test]
    fn inconsistent_content_is_corruption() {
        let mut m = sample();
        m.sstables.push(SstableEntry { table: 1, generation: 3, file_size: 1 });
        assert!(Manifest::decode(&m.encode()).is_err(), "duplicate generation");
        let mut m = sample();
        m.next_generation = 5;
        assert!(Manifest::decode(&m.encode()).is_err(), "generation beyond next_generation");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn mutated_manifests_never_panic(at in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = sample().encode();
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = Manifest::decode(&bytes);
        }
    }
}

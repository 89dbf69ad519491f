//! A node directory's identity: host id, shard count and each shard's vnode tokens, fixed when
//! the directory is created, and the generation, raised at every start; persisted in `node.meta`
//! (a [`durable_file`](crate::durable_file)). A node never starts with a shard count other than
//! the one its directory was created with, nor with a generation it has used before.

use std::path::Path;

use rand::Rng;
use wire::codec::{Reader, Writer};
use wire::ring::Ring;
use wire::Token;

use crate::durable_file::{self, DurableFileError, FileKind};

pub const NODE_META_FILE: &str = "node.meta";
/// Version 2 added the generation; version 1 is still read (as generation 0).
const KIND: FileKind = FileKind { name: "node metadata", magic: *b"ENIGNODE", version: 2 };
const OLDEST_READABLE_VERSION: u16 = 1;

/// Bounds on what a directory may declare.
pub const MAX_SHARDS: usize = 256;
pub const MAX_TOKENS_PER_SHARD: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum NodeMetaError {
    #[error(transparent)]
    File(#[from] DurableFileError),
    #[error("{0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("the data directory was created with {existing} shards; starting it with {requested} is refused (re-sharding is not supported: start with --shards {existing})")]
    ShardCountMismatch { existing: usize, requested: usize },
    #[error("shard count must be between 1 and {MAX_SHARDS}, got {0}")]
    BadShardCount(usize),
    #[error("num_tokens must be between 1 and {MAX_TOKENS_PER_SHARD}, got {0}")]
    BadTokenCount(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMeta {
    pub host_id: u128,
    /// This start's generation (seconds since the Unix epoch at start, as Cassandra's), strictly
    /// greater than every earlier start's: peers tell a restarted node from a stale one by it.
    pub generation: u64,
    /// `tokens[s]` are the vnode tokens of shard `s`.
    pub tokens: Vec<Vec<Token>>,
}

impl NodeMeta {
    /// Loads the directory's identity, or creates it (random host id and tokens) for a new one,
    /// and starts a new generation, durably written before this returns (so before the node
    /// can announce it).
    pub fn load_or_create(dir: &Path, shards: usize, num_tokens: usize) -> Result<NodeMeta, NodeMetaError> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(NodeMetaError::BadShardCount(shards));
        }
        if num_tokens == 0 || num_tokens > MAX_TOKENS_PER_SHARD {
            return Err(NodeMetaError::BadTokenCount(num_tokens));
        }
        let path = dir.join(NODE_META_FILE);
        if let Some(mut meta) = Self::read(&path)? {
            if meta.tokens.len() != shards {
                return Err(NodeMetaError::ShardCountMismatch { existing: meta.tokens.len(), requested: shards });
            }
            meta.generation = next_generation(meta.generation, now_secs());
            durable_file::write(&path, KIND, &meta.encode())?;
            return Ok(meta);
        }
        let mut rng = rand::thread_rng();
        let mut seen = std::collections::HashSet::new();
        let tokens = (0..shards)
            .map(|_| {
                (0..num_tokens)
                    .map(|_| loop {
                        // Never the minimum token (no key hashes there) and never twice.
                        let t: i64 = rng.gen_range(i64::MIN + 1..=i64::MAX);
                        if seen.insert(t) {
                            break t;
                        }
                    })
                    .collect()
            })
            .collect();
        let meta = NodeMeta { host_id: rng.gen(), generation: next_generation(0, now_secs()), tokens };
        durable_file::write(&path, KIND, &meta.encode())?;
        Ok(meta)
    }

    /// Creates the identity of a new directory with `tokens` (per shard, as a joining node's
    /// token allocation chose them) and a random host id, durably, before the node is opened
    /// ([`NodeMeta::load_or_create`] then loads it). Refused if the directory has one already.
    pub fn create_with_tokens(dir: &Path, tokens: Vec<Vec<Token>>) -> Result<NodeMeta, NodeMetaError> {
        if tokens.is_empty() || tokens.len() > MAX_SHARDS {
            return Err(NodeMetaError::BadShardCount(tokens.len()));
        }
        if let Some(bad) = tokens.iter().find(|t| t.is_empty() || t.len() > MAX_TOKENS_PER_SHARD) {
            return Err(NodeMetaError::BadTokenCount(bad.len()));
        }
        let path = dir.join(NODE_META_FILE);
        if let Some(existing) = Self::read(&path)? {
            return Err(NodeMetaError::Corrupt(
                path.display().to_string(),
                format!("an identity exists already (host {:032x})", existing.host_id),
            ));
        }
        let meta = NodeMeta { host_id: rand::thread_rng().gen(), generation: 0, tokens };
        // Checked as a file read back would be: no shard without tokens, no token twice.
        Self::decode(&meta.encode(), KIND.version)
            .map_err(|e| NodeMetaError::Corrupt(path.display().to_string(), e))?;
        durable_file::write(&path, KIND, &meta.encode())?;
        Ok(meta)
    }

    /// The shard count recorded in an existing directory, if any.
    /// The identity recorded in `dir`, if any (without creating one).
    pub fn existing(dir: &Path) -> Result<Option<NodeMeta>, NodeMetaError> {
        Self::read(&dir.join(NODE_META_FILE))
    }

    pub fn existing_shard_count(dir: &Path) -> Result<Option<usize>, NodeMetaError> {
        Ok(Self::read(&dir.join(NODE_META_FILE))?.map(|m| m.tokens.len()))
    }

    fn read(path: &Path) -> Result<Option<NodeMeta>, NodeMetaError> {
        let Some((version, bytes)) = durable_file::read_versions(path, KIND, OLDEST_READABLE_VERSION)? else {
            return Ok(None);
        };
        let meta = Self::decode(&bytes, version).map_err(|e| NodeMetaError::Corrupt(path.display().to_string(), e))?;
        Ok(Some(meta))
    }

    pub fn shards(&self) -> usize {
        self.tokens.len()
    }

    /// The ring of this node's vnodes, each owned by its shard.
    pub fn local_ring(&self) -> Ring<u16> {
        let vnodes =
            self.tokens.iter().enumerate().flat_map(|(s, ts)| ts.iter().map(move |t| (*t, s as u16))).collect();
        // Tokens are unique by construction and checked at decode, and there is >= 1 shard.
        Ring::new(vnodes).unwrap_or_else(|e| unreachable!("validated node metadata: {e}"))
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64((self.host_id >> 64) as u64).u64(self.host_id as u64).u64(self.generation).u32(self.tokens.len() as u32);
        for shard in &self.tokens {
            w.u32(shard.len() as u32);
            shard.iter().for_each(|t| {
                w.i64(*t);
            });
        }
        w.into_bytes()
    }

    /// Decodes a payload of format `version` (1 has no generation: it reads as 0).
    fn decode(bytes: &[u8], version: u16) -> Result<NodeMeta, String> {
        let mut r = Reader::new(bytes);
        let inner = |r: &mut Reader<'_>| -> Result<NodeMeta, wire::DecodeError> {
            let host_id = ((r.u64()? as u128) << 64) | r.u64()? as u128;
            let generation = if version == 1 { 0 } else { r.u64()? };
            let shards = r.count(4)?;
            let tokens = (0..shards)
                .map(|_| (0..r.count(8)?).map(|_| r.i64()).collect::<Result<Vec<_>, _>>())
                .collect::<Result<Vec<_>, _>>()?;
            r.finish()?;
            Ok(NodeMeta { host_id, generation, tokens })
        };
        let meta = inner(&mut r).map_err(|e| e.to_string())?;
        if meta.tokens.is_empty() || meta.tokens.iter().any(|t| t.is_empty()) {
            return Err("a shard without tokens".into());
        }
        let mut all: Vec<Token> = meta.tokens.iter().flatten().copied().collect();
        all.sort_unstable();
        if all.windows(2).any(|w| w[0] == w[1]) {
            return Err("a token is owned twice".into());
        }
        Ok(meta)
    }
}

/// The generation of a start: the wall clock in seconds, but always past the previous one (a
/// clock set back, or two starts within one second, still give a higher generation).
pub fn next_generation(previous: u64, now_secs: u64) -> u64 {
    now_secs.max(previous.saturating_add(1))
}

fn now_secs() -> u64 {
    // A clock before the epoch reads as 0; `next_generation` still rises.
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_rise_even_when_the_clock_does_not() {
        assert_eq!(next_generation(0, 1_700_000_000), 1_700_000_000);
        assert_eq!(next_generation(1_700_000_000, 1_700_000_000), 1_700_000_001);
        assert_eq!(next_generation(1_700_000_005, 1_600_000_000), 1_700_000_006, "clock set back");
        assert_eq!(next_generation(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn identity_is_created_once_and_reloaded_with_a_higher_generation() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeMeta::load_or_create(dir.path(), 3, 8).unwrap();
        assert_eq!(a.shards(), 3);
        assert!(a.tokens.iter().all(|t| t.len() == 8));
        let b = NodeMeta::load_or_create(dir.path(), 3, 8).unwrap();
        assert!(b.generation > a.generation, "{} then {}", a.generation, b.generation);
        assert_eq!(NodeMeta { generation: a.generation, ..b.clone() }, a, "host id and tokens are kept");
        assert_eq!(a.local_ring().vnodes().len(), 24);
        assert_eq!(NodeMeta::existing_shard_count(dir.path()).unwrap(), Some(3));
    }

    #[test]
    fn an_identity_created_with_chosen_tokens_is_loaded_with_them() {
        let dir = tempfile::tempdir().unwrap();
        let made = NodeMeta::create_with_tokens(dir.path(), vec![vec![5, -7], vec![99, 3]]).unwrap();
        let loaded = NodeMeta::load_or_create(dir.path(), 2, 8).unwrap();
        assert_eq!((loaded.host_id, &loaded.tokens), (made.host_id, &made.tokens));
        assert!(NodeMeta::create_with_tokens(dir.path(), vec![vec![1]]).is_err(), "never replaced");
        let other = tempfile::tempdir().unwrap();
        assert!(NodeMeta::create_with_tokens(other.path(), vec![vec![1, 1]]).is_err(), "a token twice");
        assert!(NodeMeta::create_with_tokens(other.path(), vec![vec![]]).is_err());
    }

    #[test]
    fn a_different_shard_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        NodeMeta::load_or_create(dir.path(), 2, 4).unwrap();
        let err = NodeMeta::load_or_create(dir.path(), 3, 4).unwrap_err();
        assert!(matches!(err, NodeMetaError::ShardCountMismatch { existing: 2, requested: 3 }), "{err}");
        assert!(matches!(NodeMeta::load_or_create(dir.path(), 0, 4), Err(NodeMetaError::BadShardCount(0))));
    }

    #[test]
    fn version_1_files_are_read_and_rewritten_with_a_generation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new();
        w.u64(1).u64(2).u32(1).u32(2).i64(-5).i64(9);
        let v1 = FileKind { version: 1, ..KIND };
        durable_file::write(&dir.path().join(NODE_META_FILE), v1, &w.into_bytes()).unwrap();
        let meta = NodeMeta::load_or_create(dir.path(), 1, 8).unwrap();
        assert_eq!(meta.host_id, (1 << 64) | 2);
        assert_eq!(meta.tokens, vec![vec![-5, 9]]);
        assert!(meta.generation > 0);
        let again = NodeMeta::load_or_create(dir.path(), 1, 8).unwrap();
        assert!(again.generation > meta.generation);
    }
}

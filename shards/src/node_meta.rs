//! A node directory's identity, fixed when the directory is created: host id, shard count and
//! each shard's vnode tokens, persisted in `node.meta` (a [`durable_file`](crate::durable_file)).
//! A node never starts with a shard count other than the one its directory was created with.

use std::path::Path;

use rand::Rng;
use wire::codec::{Reader, Writer};
use wire::ring::Ring;
use wire::Token;

use crate::durable_file::{self, DurableFileError, FileKind};

pub const NODE_META_FILE: &str = "node.meta";
const KIND: FileKind = FileKind { name: "node metadata", magic: *b"ENIGNODE", version: 1 };

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
    /// `tokens[s]` are the vnode tokens of shard `s`.
    pub tokens: Vec<Vec<Token>>,
}

impl NodeMeta {
    /// Loads the directory's identity, or creates it (random host id and tokens) for a new one.
    pub fn load_or_create(dir: &Path, shards: usize, num_tokens: usize) -> Result<NodeMeta, NodeMetaError> {
        if shards == 0 || shards > MAX_SHARDS {
            return Err(NodeMetaError::BadShardCount(shards));
        }
        if num_tokens == 0 || num_tokens > MAX_TOKENS_PER_SHARD {
            return Err(NodeMetaError::BadTokenCount(num_tokens));
        }
        let path = dir.join(NODE_META_FILE);
        if let Some(bytes) = durable_file::read(&path, KIND)? {
            let meta = Self::decode(&bytes).map_err(|e| NodeMetaError::Corrupt(path.display().to_string(), e))?;
            if meta.tokens.len() != shards {
                return Err(NodeMetaError::ShardCountMismatch { existing: meta.tokens.len(), requested: shards });
            }
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
        let meta = NodeMeta { host_id: rng.gen(), tokens };
        durable_file::write(&path, KIND, &meta.encode())?;
        Ok(meta)
    }

    /// The shard count recorded in an existing directory, if any.
    pub fn existing_shard_count(dir: &Path) -> Result<Option<usize>, NodeMetaError> {
        let path = dir.join(NODE_META_FILE);
        match durable_file::read(&path, KIND)? {
            None => Ok(None),
            Some(bytes) => Self::decode(&bytes)
                .map(|m| Some(m.tokens.len()))
                .map_err(|e| NodeMetaError::Corrupt(path.display().to_string(), e)),
        }
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
        w.u64((self.host_id >> 64) as u64).u64(self.host_id as u64).u32(self.tokens.len() as u32);
        for shard in &self.tokens {
            w.u32(shard.len() as u32);
            shard.iter().for_each(|t| {
                w.i64(*t);
            });
        }
        w.into_bytes()
    }

    fn decode(bytes: &[u8]) -> Result<NodeMeta, String> {
        let mut r = Reader::new(bytes);
        let inner = |r: &mut Reader<'_>| -> Result<NodeMeta, wire::DecodeError> {
            let host_id = ((r.u64()? as u128) << 64) | r.u64()? as u128;
            let shards = r.count(4)?;
            let tokens = (0..shards)
                .map(|_| (0..r.count(8)?).map(|_| r.i64()).collect::<Result<Vec<_>, _>>())
                .collect::<Result<Vec<_>, _>>()?;
            r.finish()?;
            Ok(NodeMeta { host_id, tokens })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_reloaded_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let a = NodeMeta::load_or_create(dir.path(), 3, 8).unwrap();
        assert_eq!(a.shards(), 3);
        assert!(a.tokens.iter().all(|t| t.len() == 8));
        let b = NodeMeta::load_or_create(dir.path(), 3, 8).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.local_ring().vnodes().len(), 24);
        assert_eq!(NodeMeta::existing_shard_count(dir.path()).unwrap(), Some(3));
    }

    #[test]
    fn a_different_shard_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        NodeMeta::load_or_create(dir.path(), 2, 4).unwrap();
        let err = NodeMeta::load_or_create(dir.path(), 3, 4).unwrap_err();
        assert!(matches!(err, NodeMetaError::ShardCountMismatch { existing: 2, requested: 3 }), "{err}");
        assert!(matches!(NodeMeta::load_or_create(dir.path(), 0, 4), Err(NodeMetaError::BadShardCount(0))));
    }
}

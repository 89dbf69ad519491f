//! The storage engine of one EnigmaDB shard and the runtime that runs one shard per core.
//!
//! Pure logic (cells and their reconciliation, mutation encoding, the MemTable, the HLC, WAL
//! record framing) has no glommio import; glommio lives in `io`, the WAL's file handling and
//! `runtime`.

pub mod catalog;
pub mod cell;
pub mod compaction;
pub mod durable_file;
pub mod hlc;
pub mod io;
pub mod key;
pub mod latency;
pub mod manifest;
pub mod memtable;
pub mod mutation;
pub mod node;
pub mod node_meta;
pub mod read;
pub mod row;
pub mod row_codec;
pub mod scan;
pub mod shard;
pub mod signal;
pub mod slice;
pub mod sstable;
#[cfg(test)]
mod test_support;
pub mod wal;

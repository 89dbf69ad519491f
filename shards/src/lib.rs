//! The storage engine of one EnigmaDB shard and the runtime that runs one shard per core.
//!
//! Pure logic (cells and their reconciliation, mutation encoding, the MemTable, the HLC, WAL
//! record framing) has no glommio import; glommio lives in `io`, the WAL's file handling and
//! `runtime`.

pub mod io;
pub mod wal;

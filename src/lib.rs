//! The server side of an EnigmaDB node, built on the storage engine (`shards`) and the wire
//! vocabulary (`wire`): the query language and, as they land, the coordinator, the server and
//! the tools of the `enigmadb` binary. `src/main.rs` is only the command line in front of it.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod coordinator;
pub mod cql;
pub mod credentials;
pub mod frame_io;
pub mod hints;
pub mod logging;
pub mod memory_budget;
pub mod metrics;
pub mod server;
pub mod shell;
pub mod sstable_tool;
pub mod stress;
pub mod tls;

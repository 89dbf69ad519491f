//! Cluster mode: how nodes find each other (gossip, failure detection), talk (the peer
//! protocol over `wire` frames), place data (the token ring with replicas) and agree on
//! schemas. Pure logic here is plain Rust; glommio appears only in the transport and the
//! service that runs on the coordinator shard. Nothing here touches a shard's storage except
//! through `shards::node::Node`.

pub mod allocation;
pub mod bootstrap;
pub mod cleanup;
pub mod discovery;
pub mod failure_detector;
pub mod gossip;
pub mod leave;
pub mod merkle;
pub mod messages;
pub mod opcodes;
pub mod pending;
pub mod replace;
pub mod replication;
pub mod schema;
pub mod service;
pub mod shadow;
#[cfg(test)]
mod test_rings;
pub mod transport;
pub mod verbs;
pub mod view;

/// A node's identity in the cluster (`shards::node_meta::NodeMeta::host_id`), fixed when its
/// data directory is created.
pub type HostId = u128;

//! Every peer-protocol opcode, in one table so no two messages share a code. The bodies are
//! encoded by the module that owns each message (docs/PROTOCOL.md, "Peer protocol").
//! Codes live in `wire::frame::PEER_OPCODES`; a request's answer has its own code.

/// An answer saying the request failed: u16 error code, then the message as a string.
pub const PEER_ERROR: u8 = 0x40;
/// Gossip round, first message: the sender's digests.
pub const GOSSIP_SYN: u8 = 0x41;
/// Answer to SYN: digests the receiver wants, and endpoint states it has newer.
pub const GOSSIP_ACK: u8 = 0x42;
/// Gossip round, last message: the endpoint states the ACK asked for.
pub const GOSSIP_ACK2: u8 = 0x43;
/// Answer to ACK2 (empty).
pub const GOSSIP_ACK2_OK: u8 = 0x44;
/// Stamped partition updates to apply on the receiving replica.
pub const MUTATE: u8 = 0x48;
/// Answer to MUTATE once the updates are durable under the replica's sync mode (empty).
pub const MUTATE_OK: u8 = 0x49;
/// Read of one partition's slice (or its digest).
pub const READ: u8 = 0x4A;
/// Answer to READ.
pub const READ_RESULT: u8 = 0x4B;
/// Read of the partitions in a token range.
pub const SCAN: u8 = 0x4C;
/// Answer to SCAN.
pub const SCAN_RESULT: u8 = 0x4D;
/// Build the Merkle tree of a table's partitions in a token range (`cluster::merkle`).
pub const MERKLE_TREE: u8 = 0x4E;
/// Answer to MERKLE_TREE.
pub const MERKLE_TREE_RESULT: u8 = 0x4F;
/// Ask for every table entry and drop record of the receiver's catalog (empty body).
pub const SCHEMA_PULL: u8 = 0x50;
/// Answer to SCHEMA_PULL.
pub const SCHEMA: u8 = 0x51;
/// Table entries and drop records that just changed on the sender.
pub const SCHEMA_PUSH: u8 = 0x52;
/// Answer to SCHEMA_PUSH (empty).
pub const SCHEMA_OK: u8 = 0x53;
/// Remove every row of a table written before the request, on the receiving node.
pub const TRUNCATE: u8 = 0x54;
/// Answer to TRUNCATE once the node's copy of the table is truncated (empty).
pub const TRUNCATE_OK: u8 = 0x55;
/// First frame of every connection, on stream 0: peer protocol version and the caller's peer
/// address (`cluster::transport`).
pub const PEER_HELLO: u8 = 0x7E;
/// Answer to PEER_HELLO: the agreed peer protocol version.
pub const PEER_HELLO_OK: u8 = 0x7F;

/// The requests about a node's data, which every shard serves (on a connection to a shard
/// other than the coordinator shard, only these are); gossip and schema requests go to the
/// coordinator shard.
pub const DATA_REQUESTS: [u8; 5] = [MUTATE, READ, SCAN, MERKLE_TREE, TRUNCATE];

/// Every code above, for the uniqueness test and the protocol document.
pub const ALL: [(u8, &str); 21] = [
    (PEER_ERROR, "PEER_ERROR"),
    (GOSSIP_SYN, "GOSSIP_SYN"),
    (GOSSIP_ACK, "GOSSIP_ACK"),
    (GOSSIP_ACK2, "GOSSIP_ACK2"),
    (GOSSIP_ACK2_OK, "GOSSIP_ACK2_OK"),
    (MUTATE, "MUTATE"),
    (MUTATE_OK, "MUTATE_OK"),
    (READ, "READ"),
    (READ_RESULT, "READ_RESULT"),
    (SCAN, "SCAN"),
    (SCAN_RESULT, "SCAN_RESULT"),
    (MERKLE_TREE, "MERKLE_TREE"),
    (MERKLE_TREE_RESULT, "MERKLE_TREE_RESULT"),
    (SCHEMA_PULL, "SCHEMA_PULL"),
    (SCHEMA, "SCHEMA"),
    (SCHEMA_PUSH, "SCHEMA_PUSH"),
    (SCHEMA_OK, "SCHEMA_OK"),
    (TRUNCATE, "TRUNCATE"),
    (TRUNCATE_OK, "TRUNCATE_OK"),
    (PEER_HELLO, "PEER_HELLO"),
    (PEER_HELLO_OK, "PEER_HELLO_OK"),
];

/// The name of `code` as [`ALL`] spells it ("?" for a code not listed).
pub fn name(code: u8) -> &'static str {
    ALL.iter().find(|(c, _)| *c == code).map_or("?", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_peer_opcodes() {
        let mut seen = std::collections::HashSet::new();
        for (code, name) in ALL {
            assert!(wire::frame::PEER_OPCODES.contains(&code), "{name} = {code:#x} is outside the peer range");
            assert!(seen.insert(code), "{name} = {code:#x} is used twice");
        }
    }
}

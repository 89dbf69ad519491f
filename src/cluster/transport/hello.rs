//! The peer protocol's own messages: the HELLO handshake that opens every connection (peer
//! protocol version, the caller's peer address, its cluster name and the callee's shard that
//! is to serve the connection) and the PEER_ERROR body. Pure encodings (docs/PROTOCOL.md,
//! "Peer protocol"); no I/O, no glommio.

use std::net::SocketAddr;

use wire::codec::{DecodeError, Reader, Writer};

/// The peer protocol version this build speaks: the meaning of the peer opcodes and bodies.
/// It is independent of the frame version (`wire::frame::PROTOCOL_VERSION`), which the two
/// protocols share. Version 2 added the cluster name to HELLO, version 3 the shard.
pub const PEER_PROTOCOL_VERSION: u8 = 3;

/// Every peer protocol version this build speaks, oldest first. A version 2 caller's
/// connections are served by the callee's coordinator shard.
pub const SUPPORTED_PEER_VERSIONS: [u8; 2] = [2, PEER_PROTOCOL_VERSION];

/// Longest peer address text in a HELLO ("[ipv6%scope]:port" fits with room to spare).
pub const MAX_ADDRESS_BYTES: usize = 128;

/// Longest cluster name (Cassandra's cluster_name), in bytes.
pub const MAX_CLUSTER_NAME_BYTES: usize = 256;

/// The cluster name of a node that sets none (Cassandra's default).
pub const DEFAULT_CLUSTER_NAME: &str = "Test Cluster";

/// Longest PEER_ERROR message; longer messages are cut (at a character boundary) when sent.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// PEER_ERROR codes. The numbers follow the client protocol's `ErrorCode` where one fits;
/// a handler may answer with these or with codes of its own message family.
pub mod codes {
    /// The answering node failed (a handler panicked, or answered something unsendable).
    pub const SERVER: u16 = 0x0000;
    /// A malformed or unexpected frame or message.
    pub const PROTOCOL: u16 = 0x000A;
    /// The HELLO asked for a peer protocol version the node does not speak.
    pub const VERSION: u16 = 0x000B;
    /// The HELLO named another cluster: two clusters never merge by mistake.
    pub const CLUSTER: u16 = 0x000C;
    /// The node requires internode TLS and the connection is plaintext.
    pub const TLS: u16 = 0x000D;
    /// The node refused the connection or request to protect itself.
    pub const OVERLOADED: u16 = 0x1001;
    /// The request decoded but cannot be served (e.g. an unknown table).
    pub const INVALID: u16 = 0x2200;
}

/// First request on every connection (stream 0): the highest peer protocol version the caller
/// speaks, the address the caller's own peer listener is reachable at, the name of the
/// cluster it belongs to, and which of the callee's shards is to serve the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub from: SocketAddr,
    /// Absent in a version 1 HELLO (refused by version anyway, with a clear reason).
    pub cluster: Option<String>,
    /// The callee's shard the caller wants (the one owning the data it will send); 0, the
    /// coordinator shard, in a version 2 HELLO. A shard the callee does not have is served by
    /// its coordinator shard.
    pub shard: u16,
}

impl Hello {
    pub fn new(from: SocketAddr, cluster: &str, shard: u16) -> Hello {
        Hello { version: PEER_PROTOCOL_VERSION, from, cluster: Some(cluster.to_owned()), shard }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(self.version).str(&self.from.to_string());
        if let Some(cluster) = &self.cluster {
            w.str(cluster);
        }
        if self.version >= 3 {
            w.u16(self.shard);
        }
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<Hello, DecodeError> {
        let mut r = Reader::new(body);
        let version = r.u8()?;
        let text = std::str::from_utf8(r.bytes_limited(MAX_ADDRESS_BYTES)?)
            .map_err(|e| r.invalid("peer address", e.to_string()))?;
        let from = text.parse().map_err(|e| r.invalid("peer address", format!("{text:?}: {e}")))?;
        // Versions from 2 on carry the cluster name; a caller offering 1 is refused by version.
        let cluster = match version {
            0 | 1 => None,
            _ => Some(
                std::str::from_utf8(r.bytes_limited(MAX_CLUSTER_NAME_BYTES)?)
                    .map_err(|e| r.invalid("cluster name", e.to_string()))?
                    .to_owned(),
            ),
        };
        // Versions from 3 on name the shard; later versions add fields after it, which a
        // node of this version need not read (it answers with the version it speaks).
        let shard = match version {
            0..=2 => 0,
            _ => r.u16()?,
        };
        if version <= PEER_PROTOCOL_VERSION {
            r.finish()?;
        }
        Ok(Hello { version, from, cluster, shard })
    }

    /// The version both sides speak, or the PEER_ERROR refusing the connection: no version in
    /// common, or a HELLO from another cluster than `cluster` (this node's).
    pub fn accept(&self, cluster: &str) -> Result<u8, RemoteError> {
        let version = negotiate(self.version)?;
        match self.cluster.as_deref() {
            Some(theirs) if theirs == cluster => Ok(version),
            theirs => Err(RemoteError::new(
                codes::CLUSTER,
                format!(
                    "this node belongs to cluster {cluster:?}, the caller {} to {:?}: clusters never mix",
                    self.from,
                    theirs.unwrap_or_default()
                ),
            )),
        }
    }
}

/// The version both sides speak from a HELLO offering `offered` (the highest the caller
/// speaks): the highest version both know, or the PEER_ERROR refusing the connection.
pub fn negotiate(offered: u8) -> Result<u8, RemoteError> {
    SUPPORTED_PEER_VERSIONS.iter().rev().copied().find(|&v| v <= offered).ok_or_else(|| {
        RemoteError::new(
            codes::VERSION,
            format!("peer protocol version {offered} is not supported (this node speaks {SUPPORTED_PEER_VERSIONS:?})"),
        )
    })
}

/// Body of HELLO_OK: the agreed version.
pub fn encode_hello_ok(version: u8) -> Vec<u8> {
    vec![version]
}

pub fn decode_hello_ok(body: &[u8]) -> Result<u8, DecodeError> {
    let mut r = Reader::new(body);
    let version = r.u8()?;
    r.finish()?;
    Ok(version)
}

/// Body of PEER_ERROR: a code ([`codes`]) and a message for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    pub code: u16,
    pub message: String,
}

impl RemoteError {
    pub fn new(code: u16, message: impl Into<String>) -> RemoteError {
        RemoteError { code, message: message.into() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut cut = self.message.len().min(MAX_ERROR_MESSAGE_BYTES);
        while !self.message.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut w = Writer::new();
        w.u16(self.code).str(&self.message[..cut]);
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<RemoteError, DecodeError> {
        let mut r = Reader::new(body);
        let code = r.u16()?;
        let message = std::str::from_utf8(r.bytes_limited(MAX_ERROR_MESSAGE_BYTES)?)
            .map_err(|e| r.invalid("error message", e.to_string()))?
            .to_owned();
        r.finish()?;
        Ok(RemoteError { code, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn hello_round_trips(
            version in any::<u8>(), ip in any::<[u8; 16]>(), v4 in any::<bool>(), port in any::<u16>(), shard in any::<u16>()
        ) {
            let from: SocketAddr = match v4 {
                true => (std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]), port).into(),
                false => (std::net::Ipv6Addr::from(ip), port).into(),
            };
            let cluster = (version >= 2).then(|| format!("cluster {port}"));
            let shard = if version >= 3 { shard } else { 0 };
            let hello = Hello { version, from, cluster, shard };
            prop_assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
        }

        #[test]
        fn error_round_trips(code in any::<u16>(), message in ".{0,200}") {
            let error = RemoteError::new(code, message);
            prop_assert_eq!(RemoteError::decode(&error.encode()), Ok(error));
        }

        #[test]
        fn garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Hello::decode(&body);
            let _ = RemoteError::decode(&body);
            let _ = decode_hello_ok(&body);
        }
    }

    #[test]
    fn negotiation_picks_the_highest_common_version_or_refuses() {
        assert_eq!(negotiate(PEER_PROTOCOL_VERSION), Ok(PEER_PROTOCOL_VERSION));
        // A newer caller is answered with our version; it decides whether it can speak it.
        assert_eq!(negotiate(PEER_PROTOCOL_VERSION + 5), Ok(PEER_PROTOCOL_VERSION));
        let refused = negotiate(0).unwrap_err();
        assert_eq!(refused.code, codes::VERSION);
        assert!(refused.message.contains("version 0"), "{}", refused.message);
    }

    #[test]
    fn malformed_hello_is_a_typed_error() {
        let mut w = Writer::new();
        w.u8(1).str("not an address");
        assert!(matches!(Hello::decode(&w.into_bytes()), Err(DecodeError::Invalid { what: "peer address", .. })));
        let mut body = Hello::new("127.0.0.1:7470".parse().unwrap(), "c", 1).encode();
        body.push(0);
        assert!(matches!(Hello::decode(&body), Err(DecodeError::Trailing { extra: 1 })));
        // A version 2 HELLO without its cluster name is cut short.
        let mut w = Writer::new();
        w.u8(2).str("127.0.0.1:7470");
        assert!(Hello::decode(&w.into_bytes()).is_err());
    }

    #[test]
    fn a_version_2_hello_asks_for_the_coordinator_shard_and_a_newer_one_may_carry_more() {
        let mut w = Writer::new();
        w.u8(2).str("127.0.0.1:7470").str("c");
        assert_eq!(Hello::decode(&w.into_bytes()).map(|h| h.shard), Ok(0));
        let mut w = Writer::new();
        w.u8(PEER_PROTOCOL_VERSION + 1).str("127.0.0.1:7470").str("c").u16(5).u32(7);
        let newer = Hello::decode(&w.into_bytes()).expect("fields after the shard are a newer version's");
        assert_eq!(newer.shard, 5);
        assert_eq!(newer.accept("c"), Ok(PEER_PROTOCOL_VERSION));
    }

    #[test]
    fn a_hello_from_another_cluster_or_an_older_version_is_refused_saying_why() {
        let from = "127.0.0.2:7470".parse().unwrap();
        assert_eq!(Hello::new(from, "prod", 0).accept("prod"), Ok(PEER_PROTOCOL_VERSION));
        let other = Hello::new(from, "staging", 0).accept("prod").unwrap_err();
        assert_eq!(other.code, codes::CLUSTER);
        assert!(other.message.contains("\"prod\"") && other.message.contains("\"staging\""), "{}", other.message);
        // A version 1 caller (no cluster name) is refused by version, the clearer reason.
        let mut w = Writer::new();
        w.u8(1).str("127.0.0.2:7470");
        let old = Hello::decode(&w.into_bytes()).expect("a version 1 HELLO decodes");
        assert_eq!(old.cluster, None);
        assert_eq!(old.accept("prod").unwrap_err().code, codes::VERSION);
    }

    #[test]
    fn long_error_messages_are_cut_at_a_character_boundary() {
        let error = RemoteError::new(codes::SERVER, "é".repeat(MAX_ERROR_MESSAGE_BYTES));
        let back = RemoteError::decode(&error.encode()).unwrap();
        assert!(back.message.len() <= MAX_ERROR_MESSAGE_BYTES && back.message.len() >= MAX_ERROR_MESSAGE_BYTES - 1);
        assert!(back.message.chars().all(|c| c == 'é'));
    }
}

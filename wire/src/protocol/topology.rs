//! TOPOLOGY: what a token- and shard-aware client needs to know of the cluster (every node's
//! client addresses, liveness, shard count and the vnode tokens of each shard), and the
//! encoding of its answer, a RESULT of kind topology. Pure encode/decode: the server decides
//! what it knows, `routing` turns it into a lookup. Layout: docs/PROTOCOL.md, "TOPOLOGY".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::admin::{read_host_id, write_host_id};
use super::{read_bool, read_list};
use crate::codec::{DecodeError, Reader, Writer};
use crate::token::Token;

/// Most nodes one topology lists.
pub const MAX_TOPOLOGY_NODES: usize = 1024;

/// Most shards of one node in a topology.
pub const MAX_TOPOLOGY_SHARDS: usize = 1024;

/// Most vnode tokens of one shard in a topology.
pub const MAX_TOKENS_PER_SHARD: usize = 4096;

/// The answer to TOPOLOGY: nothing new since the version the client named, or everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopologyAnswer {
    /// The client's version is the server's current one.
    Unchanged {
        version: u64,
    },
    Full(Topology),
}

/// The cluster as one node sees it. `version` changes whenever anything in `nodes` does, so a
/// client can ask "anything new since version v?" cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub version: u64,
    pub nodes: Vec<TopologyNode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyNode {
    pub host_id: u128,
    /// The ordinary client port: connections are spread over the node's shards.
    pub client: SocketAddr,
    /// The shard-aware client port, if the node has one: a connection from source port p is
    /// served by shard p % shard count.
    pub shard_aware: Option<SocketAddr>,
    pub alive: bool,
    /// `tokens[s]` are the vnode tokens of shard s; `tokens.len()` is the node's shard count.
    pub tokens: Vec<Vec<Token>>,
}

const ANSWER_UNCHANGED: u8 = 0;
const ANSWER_FULL: u8 = 1;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;
/// Smallest encoded node: host id, an IPv4 client address, no shard-aware address, liveness,
/// shard count.
const MIN_NODE_BYTES: usize = 16 + ADDRESS_V4_BYTES + 1 + 1 + 2;
const ADDRESS_V4_BYTES: usize = 1 + 4 + 2;
/// Smallest encoded shard: a token count of zero.
const MIN_SHARD_BYTES: usize = 2;
const TOKEN_BYTES: usize = 8;

impl TopologyAnswer {
    pub(super) fn write(&self, w: &mut Writer) {
        match self {
            TopologyAnswer::Unchanged { version } => {
                w.u8(ANSWER_UNCHANGED).u64(*version);
            }
            TopologyAnswer::Full(topology) => {
                w.u8(ANSWER_FULL);
                topology.write(w);
            }
        }
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<TopologyAnswer, DecodeError> {
        match r.u8()? {
            ANSWER_UNCHANGED => Ok(TopologyAnswer::Unchanged { version: r.u64()? }),
            ANSWER_FULL => Ok(TopologyAnswer::Full(Topology::read(r)?)),
            tag => Err(r.invalid("topology answer", format!("unknown tag {tag}"))),
        }
    }

    /// The version the answer describes.
    pub fn version(&self) -> u64 {
        match self {
            TopologyAnswer::Unchanged { version } => *version,
            TopologyAnswer::Full(topology) => topology.version,
        }
    }
}

impl Topology {
    /// The caller keeps within the bounds (nodes, shards, tokens), which decoding enforces.
    fn write(&self, w: &mut Writer) {
        debug_assert!(self.nodes.len() <= MAX_TOPOLOGY_NODES);
        w.u64(self.version).u16(self.nodes.len() as u16);
        for node in &self.nodes {
            debug_assert!(node.tokens.len() <= MAX_TOPOLOGY_SHARDS);
            write_host_id(w, node.host_id);
            write_address(w, node.client);
            match node.shard_aware {
                None => {
                    w.u8(0);
                }
                Some(addr) => {
                    w.u8(1);
                    write_address(w, addr);
                }
            }
            w.u8(u8::from(node.alive)).u16(node.tokens.len() as u16);
            for tokens in &node.tokens {
                debug_assert!(tokens.len() <= MAX_TOKENS_PER_SHARD);
                w.u16(tokens.len() as u16);
                tokens.iter().for_each(|t| {
                    w.i64(*t);
                });
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Topology, DecodeError> {
        let version = r.u64()?;
        let n = read_count(r, MIN_NODE_BYTES, MAX_TOPOLOGY_NODES)?;
        let nodes = read_list(r, n, |r, _| {
            let host_id = read_host_id(r)?;
            let client = read_address(r)?;
            let shard_aware = match read_bool(r, "shard-aware address presence")? {
                true => Some(read_address(r)?),
                false => None,
            };
            let alive = read_bool(r, "liveness")?;
            let shards = read_count(r, MIN_SHARD_BYTES, MAX_TOPOLOGY_SHARDS)?;
            let tokens = read_list(r, shards, |r, _| {
                let n = read_count(r, TOKEN_BYTES, MAX_TOKENS_PER_SHARD)?;
                read_list(r, n, |r, _| r.i64())
            })?;
            Ok(TopologyNode { host_id, client, shard_aware, alive, tokens })
        })?;
        Ok(Topology { version, nodes })
    }
}

/// A u16 count, refused beyond `limit` or the input left.
fn read_count(r: &mut Reader<'_>, min_item_bytes: usize, limit: usize) -> Result<usize, DecodeError> {
    let at = r.offset();
    let n = r.count_u16(min_item_bytes)?;
    if n > limit {
        return Err(DecodeError::TooLong { offset: at, len: n, limit });
    }
    Ok(n)
}

/// Family (4 or 6), the address bytes, the port. IPv6 flow info and scope id are not carried:
/// a client address is never link-local in practice, and the gossip encoding drops them too.
fn write_address(w: &mut Writer, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            w.u8(FAMILY_V4).raw(&ip.octets());
        }
        IpAddr::V6(ip) => {
            w.u8(FAMILY_V6).raw(&ip.octets());
        }
    }
    w.u16(addr.port());
}

fn read_address(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let ip = match r.u8()? {
        FAMILY_V4 => {
            let mut octets = [0u8; 4];
            octets.copy_from_slice(r.take(4)?);
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        FAMILY_V6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(r.take(16)?);
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        family => return Err(r.invalid("address family", format!("unknown family {family}"))),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn any_address() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        ]
    }

    fn any_node() -> impl Strategy<Value = TopologyNode> {
        (
            any::<u128>(),
            any_address(),
            proptest::option::of(any_address()),
            any::<bool>(),
            proptest::collection::vec(proptest::collection::vec(any::<i64>(), 0..4), 0..4),
        )
            .prop_map(|(host_id, client, shard_aware, alive, tokens)| TopologyNode {
                host_id,
                client,
                shard_aware,
                alive,
                tokens,
            })
    }

    pub fn any_topology_answer() -> impl Strategy<Value = TopologyAnswer> {
        prop_oneof![
            any::<u64>().prop_map(|version| TopologyAnswer::Unchanged { version }),
            (any::<u64>(), proptest::collection::vec(any_node(), 0..4))
                .prop_map(|(version, nodes)| TopologyAnswer::Full(Topology { version, nodes })),
        ]
    }

    fn encoded(answer: &TopologyAnswer) -> Vec<u8> {
        let mut w = Writer::new();
        answer.write(&mut w);
        w.into_bytes()
    }

    fn decoded(bytes: &[u8]) -> Result<TopologyAnswer, DecodeError> {
        let mut r = Reader::new(bytes);
        TopologyAnswer::read(&mut r).and_then(|a| r.finish().map(|()| a))
    }

    proptest! {
        #[test]
        fn topology_answers_round_trip(answer in any_topology_answer()) {
            prop_assert_eq!(decoded(&encoded(&answer)), Ok(answer));
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let node = TopologyNode {
            host_id: 0x0102,
            client: "10.0.0.1:9470".parse().unwrap(),
            shard_aware: Some("[::1]:19470".parse().unwrap()),
            alive: true,
            tokens: vec![vec![-5], vec![]],
        };
        let bytes = encoded(&TopologyAnswer::Full(Topology { version: 9, nodes: vec![node] }));
        let mut expected = vec![ANSWER_FULL];
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(&1u16.to_le_bytes());
        expected.extend_from_slice(&0x0102u128.to_le_bytes());
        expected.extend_from_slice(&[4, 10, 0, 0, 1]);
        expected.extend_from_slice(&9470u16.to_le_bytes());
        expected.extend_from_slice(&[1, 6]);
        expected.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        expected.extend_from_slice(&19470u16.to_le_bytes());
        expected.extend_from_slice(&[1]);
        expected.extend_from_slice(&2u16.to_le_bytes());
        expected.extend_from_slice(&1u16.to_le_bytes());
        expected.extend_from_slice(&(-5i64).to_le_bytes());
        expected.extend_from_slice(&0u16.to_le_bytes());
        assert_eq!(bytes, expected);
        assert_eq!(encoded(&TopologyAnswer::Unchanged { version: 3 }), [&[0u8][..], &3u64.to_le_bytes()].concat());
    }

    #[test]
    fn bounds_tags_and_families_are_checked() {
        let mut w = Writer::new();
        w.u8(ANSWER_FULL).u64(1).u16((MAX_TOPOLOGY_NODES + 1) as u16).raw(&vec![0; 64 * 1024]);
        assert!(matches!(decoded(&w.into_bytes()), Err(DecodeError::TooLong { len: 1025, limit: 1024, .. })));

        let mut w = Writer::new();
        w.u8(ANSWER_FULL).u64(1).u16(2).raw(&[0; MIN_NODE_BYTES]);
        assert!(matches!(decoded(&w.into_bytes()), Err(DecodeError::TooLong { len: 2, limit: 1, .. })));

        let mut w = Writer::new();
        w.u8(ANSWER_FULL).u64(1).u16(1).raw(&[0; 16]).u8(5).raw(&[0; MIN_NODE_BYTES - 17]);
        let err = decoded(&w.into_bytes()).unwrap_err();
        assert!(err.to_string().contains("unknown family 5"), "{err}");

        let mut w = Writer::new();
        w.u8(ANSWER_FULL).u64(1).u16(1).raw(&[0; 16]).u8(4).raw(&[0; 6]).u8(0).u8(1);
        w.u16(1).u16((MAX_TOKENS_PER_SHARD + 1) as u16).raw(&vec![0; 8 * (MAX_TOKENS_PER_SHARD + 1)]);
        assert!(matches!(decoded(&w.into_bytes()), Err(DecodeError::TooLong { len: 4097, limit: 4096, .. })));

        assert!(decoded(&[2, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap_err().to_string().contains("unknown tag 2"));
    }
}

//! Token- and shard-aware routing for clients: which node and shard own a request's partition,
//! from a TOPOLOGY answer and a prepared statement's partition key markers. Pure lookups, no
//! I/O: the caller owns the connections and decides what to do with an unroutable request.
//!
//! It must agree with the server byte for byte: the token is computed exactly as the storage
//! engine computes a partition key's (`shards::key::PartitionKey::from_values`, through the
//! same `token` functions), and ownership is the server's own ring rule ([`Ring`]): a
//! partition belongs to the shard whose vnode token is the first at or after its token,
//! wrapping past the largest.

use crate::protocol::{Topology, MAX_TOPOLOGY_SHARDS};
use crate::ring::{Ring, RingError};
use crate::token::{serialize_partition_key, token_of, Token, MAX_KEY_COMPONENT_LEN};
use crate::value::Value;

/// A topology's vnodes as a ring: each token owned by (index into `Topology::nodes`, shard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyMap {
    ring: Ring<(usize, u16)>,
}

/// A topology no ring can be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyMapError {
    /// No token at all, or two vnodes sharing one (the server's own ring could not be built
    /// either).
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("node {node} of the topology has {shards} shards, more than {MAX_TOPOLOGY_SHARDS}")]
    TooManyShards { node: usize, shards: usize },
}

impl TopologyMap {
    pub fn new(topology: &Topology) -> Result<TopologyMap, TopologyMapError> {
        if let Some((node, n)) = topology.nodes.iter().enumerate().find(|(_, n)| n.tokens.len() > MAX_TOPOLOGY_SHARDS) {
            return Err(TopologyMapError::TooManyShards { node, shards: n.tokens.len() });
        }
        let vnodes = (topology.nodes.iter().enumerate())
            .flat_map(|(node, n)| {
                // Checked above: shard indexes are below MAX_TOPOLOGY_SHARDS, so they fit a u16.
                (n.tokens.iter().enumerate())
                    .flat_map(move |(shard, ts)| ts.iter().map(move |t| (*t, (node, shard as u16))))
            })
            .collect();
        Ok(TopologyMap { ring: Ring::new(vnodes)? })
    }

    /// The (node index, shard) owning `token`.
    pub fn owner(&self, token: Token) -> (usize, u16) {
        *self.ring.owner(token)
    }

    pub fn ring(&self) -> &Ring<(usize, u16)> {
        &self.ring
    }
}

/// The token of the partition a request with bound `values` touches, given the statement's
/// partition key markers (`PreparedMeta::pk_indexes`). `None` when the request cannot be
/// routed: no markers, a marker without a value, a null, or a component longer than a key
/// allows (the server refuses those requests itself).
pub fn routing_token(pk_indexes: &[u16], values: &[Option<Value>]) -> Option<Token> {
    if pk_indexes.is_empty() {
        return None;
    }
    let key = (pk_indexes.iter()).map(|i| values.get(usize::from(*i))?.clone()).collect::<Option<Vec<Value>>>()?;
    if key.iter().any(|v| v.to_bytes().len() > MAX_KEY_COMPONENT_LEN) {
        return None;
    }
    Some(token_of(&serialize_partition_key(&key)))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::protocol::TopologyNode;

    fn node(host_id: u128, tokens: Vec<Vec<Token>>) -> TopologyNode {
        let client = SocketAddr::from(([127, 0, 0, host_id as u8], 9470));
        TopologyNode { host_id, client, shard_aware: None, alive: true, tokens }
    }

    #[test]
    fn owners_are_the_first_vnode_at_or_after_the_token() {
        let topology =
            Topology { version: 1, nodes: vec![node(1, vec![vec![-100], vec![50]]), node(2, vec![vec![0]])] };
        let map = TopologyMap::new(&topology).unwrap();
        assert_eq!(map.owner(-100), (0, 0));
        assert_eq!(map.owner(-99), (1, 0));
        assert_eq!(map.owner(0), (1, 0));
        assert_eq!(map.owner(1), (0, 1));
        assert_eq!(map.owner(51), (0, 0), "wraps past the largest token");
        assert_eq!(map.owner(i64::MIN), (0, 0));
    }

    #[test]
    fn topologies_without_tokens_or_with_shared_ones_have_no_map() {
        let empty = Err(TopologyMapError::Ring(RingError::Empty));
        assert_eq!(TopologyMap::new(&Topology { version: 1, nodes: vec![] }), empty);
        assert_eq!(TopologyMap::new(&Topology { version: 1, nodes: vec![node(1, vec![vec![]])] }), empty);
        let clash = Topology { version: 1, nodes: vec![node(1, vec![vec![5]]), node(2, vec![vec![5]])] };
        assert_eq!(TopologyMap::new(&clash), Err(TopologyMapError::Ring(RingError::DuplicateToken(5))));
        let wide = Topology { version: 1, nodes: vec![node(1, vec![vec![]; MAX_TOPOLOGY_SHARDS + 1])] };
        assert!(matches!(TopologyMap::new(&wide), Err(TopologyMapError::TooManyShards { node: 0, shards: 1025 })));
    }

    /// Cassandra's published tokens (wire/tests/vectors/murmur3-tokens.tsv): an int key 0 is the
    /// bytes 00000000, a bigint 0 eight zero bytes, the text "123" the bytes 313233.
    #[test]
    fn single_column_keys_hash_to_cassandras_tokens() {
        let values = [Some(Value::Text("v".into())), Some(Value::Int(0)), Some(Value::BigInt(0))];
        assert_eq!(routing_token(&[1], &values), Some(-3485513579396041028));
        assert_eq!(routing_token(&[2], &values), Some(2945182322382062539));
        assert_eq!(routing_token(&[0], &[Some(Value::Text("123".into()))]), Some(-7468325962851647638));
    }

    #[test]
    fn composite_keys_hash_their_components_in_key_order() {
        let values = [Some(Value::Int(1)), Some(Value::Blob(vec![9])), Some(Value::Text("ab".into()))];
        let key = serialize_partition_key(&[Value::Text("ab".into()), Value::Int(1)]);
        assert_eq!(key, vec![0, 2, b'a', b'b', 0, 0, 4, 0, 0, 0, 1, 0]);
        assert_eq!(routing_token(&[2, 0], &values), Some(token_of(&key)));
        assert_ne!(routing_token(&[0, 2], &values), routing_token(&[2, 0], &values));
    }

    #[test]
    fn unroutable_requests_have_no_token() {
        let values = [Some(Value::Int(1)), None];
        assert_eq!(routing_token(&[], &values), None, "no partition key markers");
        assert_eq!(routing_token(&[1], &values), None, "a null key");
        assert_eq!(routing_token(&[0, 2], &values), None, "a marker without a value");
        let long = [Some(Value::Blob(vec![0; MAX_KEY_COMPONENT_LEN + 1]))];
        assert_eq!(routing_token(&[0], &long), None, "a component the server refuses");
    }

    /// Vnodes: a token and its (node index, shard).
    type Vnodes = Vec<(Token, (usize, u16))>;

    /// A topology of 1..4 nodes of 1..3 shards, and its vnodes: unique tokens, each given to
    /// a (node, shard).
    fn topology_strategy() -> impl Strategy<Value = (Topology, Vnodes)> {
        (proptest::collection::btree_set(any::<i64>(), 1..48), 1usize..4, 1u16..3)
            .prop_flat_map(|(tokens, nodes, shards)| {
                let owners = proptest::collection::vec((0..nodes, 0..shards), tokens.len());
                (Just(tokens), Just(nodes), Just(shards), owners)
            })
            .prop_map(|(tokens, nodes, shards, owners)| {
                let vnodes: Vnodes = tokens.into_iter().zip(owners).collect();
                let mut topology = Topology {
                    version: 1,
                    nodes: (0..nodes).map(|n| node(n as u128, vec![Vec::new(); usize::from(shards)])).collect(),
                };
                for (token, (n, s)) in &vnodes {
                    topology.nodes[*n].tokens[usize::from(*s)].push(*token);
                }
                (topology, vnodes)
            })
    }

    proptest! {
        #[test]
        fn every_token_belongs_to_the_vnode_at_or_after_it((topology, vnodes) in topology_strategy(), token in any::<i64>()) {
            let map = TopologyMap::new(&topology).unwrap();
            let at_or_after = vnodes.iter().filter(|(t, _)| *t >= token).min_by_key(|(t, _)| *t);
            let expected = at_or_after.or_else(|| vnodes.iter().min_by_key(|(t, _)| *t)).map(|(_, owner)| *owner);
            prop_assert_eq!(Some(map.owner(token)), expected);
        }
    }
}

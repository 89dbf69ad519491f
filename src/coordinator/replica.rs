//! The replica side of the data messages: a peer's MUTATE, READ or SCAN, served by this node's
//! shards through `Node` (`Node::apply_stamped` routes each partition to the shard that owns
//! it). Every failure, malformed bodies included, is answered with a typed PEER_ERROR; nothing
//! a peer sends panics the shard.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use shards::catalog::is_local_table;
use shards::hlc::Hlc;
use shards::mutation::PartitionUpdate;
use shards::node::{Node, NodeError};
use shards::scan::{ScanBound, ScanResume};
use shards::shard::ShardError;
use wire::schema::{TableId, TableSchema};

use crate::cluster::messages::{digest, MessageError, ReadResult};
use crate::cluster::transport::{codes, PeerAnswer, PeerHandler, PeerRequest, RemoteError};

/// The replica side as the handler of the data requests (MUTATE, READ, SCAN, MERKLE_TREE,
/// TRUNCATE) in the node's `PeerHandlers`.
pub struct ReplicaHandler {
    pub node: Node,
    /// The coordinator's clock of this node, which observes the timestamps peers' writes carry.
    pub clock: Rc<RefCell<Hlc>>,
}

impl PeerHandler for ReplicaHandler {
    fn handle(&self, _from: SocketAddr, request: PeerRequest) -> Pin<Box<dyn Future<Output = PeerAnswer> + '_>> {
        Box::pin(async move { handle_data(&self.node, &self.clock, request).await })
    }
}

/// Answers one data request from a peer. `clock` is the coordinator's clock of this node,
/// which observes the timestamps a peer's writes carry (the shards' clocks observe them too,
/// when they apply the writes).
pub async fn handle_data(node: &Node, clock: &RefCell<Hlc>, request: PeerRequest) -> PeerAnswer {
    match serve(node, clock, request).await {
        Ok(answer) => answer,
        Err(error) => PeerAnswer::Error(error),
    }
}

async fn serve(node: &Node, clock: &RefCell<Hlc>, request: PeerRequest) -> Result<PeerAnswer, RemoteError> {
    match request {
        PeerRequest::Mutate(body) => {
            // MUTATE bodies travel encoded (`MutateBody`): decoded only here, where applied.
            let updates = body.decode().map_err(malformed)?;
            // Each table once: a batch is usually many updates of one table.
            let mut checked = None;
            for update in &updates {
                if checked != Some(update.table) {
                    peer_table(node, update.table)?;
                    checked = Some(update.table);
                }
            }
            // The body is the updates' own encoding behind a version byte: the shard logs
            // those bytes instead of encoding the updates again.
            let encoded = crate::cluster::messages::mutate_batch_bytes(body.bytes()).map_err(malformed)?.to_vec();
            drop(body);
            if let Some(ts) = updates.iter().filter_map(PartitionUpdate::max_timestamp).max() {
                // A timestamp too far ahead is refused by the shard below, with its reason.
                let _ = clock.borrow_mut().observe(ts);
            }
            node.apply_stamped_encoded(updates, encoded).await.map_err(storage)?;
            Ok(PeerAnswer::MutateOk)
        }
        PeerRequest::Read(request) => {
            peer_table(node, request.table)?;
            // With a limit or a byte bound: the rows up to the limit-th live one or the row
            // that reaches the bound, as every replica of the read cuts them, so that equal
            // data still digests alike (`row::limited_cut` tells where an answer may stop).
            let limit = request.slice_limit();
            let stored = node.read_partition_limited(request.table, request.key, request.slice, limit);
            let stored = stored.await.map_err(storage)?;
            // An empty partition and no partition read the same: one digest for both.
            let stored = stored.filter(|p| !p.is_empty());
            let result = match request.digest_only {
                true => ReadResult::Digest(digest(stored.as_ref())),
                false => ReadResult::Data(stored),
            };
            Ok(PeerAnswer::ReadResult(result))
        }
        PeerRequest::Scan(request) => {
            peer_table(node, request.table)?;
            let limit = request.limit as usize;
            // A request without a bound (from a node before bounds, or a stream of whole
            // partitions) gets whole partitions, as before.
            let bound = request.bound.unwrap_or(ScanBound::WHOLE);
            let resume = request.after.map(|key| ScanResume { key, after: request.after_row });
            let scan = node.scan_bounded(request.table, request.start, request.end, resume, limit, bound);
            let mut page = scan.await.map_err(storage)?;
            if request.bound.is_none() {
                // What a node before bounds answers: it stopped at `limit` partitions only.
                page.resume = None;
            }
            Ok(PeerAnswer::ScanResult(page))
        }
        PeerRequest::MerkleTree(request) => {
            peer_table(node, request.table)?;
            let tree = super::repair::build_tree(node, &request).await.map_err(storage)?;
            Ok(PeerAnswer::MerkleTree(tree))
        }
        PeerRequest::Truncate(table) => {
            // By id: a table dropped and created again under the same name is another table.
            let schema = peer_table(node, table)?;
            node.truncate(&schema.name).await.map_err(storage)?;
            Ok(PeerAnswer::TruncateOk)
        }
        other => {
            Err(RemoteError::new(codes::PROTOCOL, format!("opcode {:#04x} is not a data request", other.opcode())))
        }
    }
}

/// The table a peer's data request names, by id: one this node knows, and not one of the
/// node's own (`system_...`, the batchlog), which peers never read or write: a node fills its
/// own tables itself, through its own verbs.
fn peer_table(node: &Node, table: TableId) -> Result<Arc<TableSchema>, RemoteError> {
    let schema = node.table_by_id(table).ok_or(NodeError::UnknownTable(format!("id {table}"))).map_err(storage)?;
    if is_local_table(&schema.name) {
        return Err(RemoteError::new(
            codes::INVALID,
            format!("table '{}' (id {table}) is this node's own: peers may not read or write it", schema.name),
        ));
    }
    Ok(schema)
}

fn malformed(e: MessageError) -> RemoteError {
    RemoteError::new(codes::PROTOCOL, e.to_string())
}

/// The PEER_ERROR for a failure of this node's storage: what the request got wrong (a table
/// this node does not know yet, a timestamp too far ahead of its clock) is invalid; a node
/// that cannot take writes now is overloaded; the rest is a server error.
fn storage(e: NodeError) -> RemoteError {
    let code = match &e {
        NodeError::UnknownTable(_) | NodeError::Write(_) | NodeError::Key(_) | NodeError::InvalidUpdate(_) => {
            codes::INVALID
        }
        NodeError::Shard { source: ShardError::UnknownTable(_) | ShardError::Clock(_), .. } => codes::INVALID,
        NodeError::Shard { source: ShardError::FlushFailed { .. } | ShardError::DiskFull { .. }, .. }
        | NodeError::Drained => codes::OVERLOADED,
        _ => codes::SERVER,
    };
    RemoteError::new(code, e.to_string())
}

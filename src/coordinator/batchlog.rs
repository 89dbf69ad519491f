//! The batchlog: makes a LOGGED BATCH whose partitions live on several shards all-or-nothing
//! across a crash, as Cassandra's batchlog does. The batch is stamped with one timestamp and
//! written whole (durably, under the sync mode, like any write) to the hidden table
//! `system_batchlog`; then each shard applies its part (one WAL record each); then the entry is
//! deleted. At start the coordinator replays every entry still there before it serves clients.
//! Applying a stamped batch twice changes nothing (merging is idempotent), so a crash at any
//! point ends with all of the batch applied, or none of it when the crash came before its entry
//! was durable (and then the client had no acknowledgement).

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use shards::cell::Timestamp;
use shards::key::PartitionKey;
use shards::mutation::{decode_batch, encode_batch, PartitionUpdate, Write, MAX_VALUE_LEN};
use shards::node::{Node, NodeError};
use shards::read::{now_secs, visible_rows};
use wire::protocol::{ErrorCode, ErrorResponse};
use wire::schema::{ColumnDef, TableOptions, TableSchema};
use wire::token::MIN_TOKEN;
use wire::{ColumnType, Token, Value};

/// The hidden table holding batches not yet fully applied.
pub const BATCHLOG_TABLE: &str = "system_batchlog";
/// Table names with this prefix belong to the node, not to clients: node-local tables, which
/// the catalog never shares with peers.
pub use shards::catalog::{is_local_table as is_reserved, LOCAL_TABLE_PREFIX as RESERVED_PREFIX};
/// Entries read per step while replaying.
const REPLAY_PAGE: usize = 64;

/// `system_batchlog (id blob PRIMARY KEY, updates blob)`: `updates` is a stamped mutation
/// batch (docs/FORMAT.md, "Mutation batch"). Deleted entries need no grace period: the table
/// is never replicated.
fn schema() -> TableSchema {
    TableSchema {
        id: 0,
        name: BATCHLOG_TABLE.into(),
        partition_key: vec![ColumnDef { name: "id".into(), ty: ColumnType::Blob }],
        clustering: Vec::new(),
        columns: vec![ColumnDef { name: "updates".into(), ty: ColumnType::Blob }],
        options: TableOptions { gc_grace_seconds: 0, ..TableOptions::default() },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchlogError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("batchlog entry cannot be decoded: {0}")]
    Damaged(String),
}

pub struct Batchlog {
    table: Arc<TableSchema>,
    /// The shard whose coordinator writes through this batchlog: coordinators of different
    /// shards never make the same entry id.
    shard: u16,
    /// Tells apart batches of this coordinator stamped with the same client timestamp.
    sequence: Cell<u64>,
}

impl Batchlog {
    /// Creates the table on a new node, then applies every batch a crash left unfinished.
    /// Returns the batchlog (of the coordinator of `shard`) and how many batches it replayed.
    pub async fn open(node: &Node, shard: u16) -> Result<(Batchlog, usize), BatchlogError> {
        let table = match node.table(BATCHLOG_TABLE) {
            Ok(table) => table,
            Err(_) => node.create_table(schema(), None).await?,
        };
        let log = Batchlog { table, shard, sequence: Cell::new(0) };
        let replayed = log.replay(node).await?;
        Ok((log, replayed))
    }

    /// The batchlog of the coordinator of `shard`, once [`Batchlog::open`] has run on the node
    /// (it created the table and replayed what a crash left).
    pub fn attach(node: &Node, shard: u16) -> Result<Batchlog, BatchlogError> {
        Ok(Batchlog { table: node.table(BATCHLOG_TABLE)?, shard, sequence: Cell::new(0) })
    }

    async fn replay(&self, node: &Node) -> Result<usize, BatchlogError> {
        let mut replayed = 0;
        let mut after: Option<PartitionKey> = None;
        loop {
            let page = node.scan(self.table.id, MIN_TOKEN, Token::MAX, after.clone(), REPLAY_PAGE).await?;
            for (key, partition) in &page {
                for row in visible_rows(&self.table, key, partition, now_secs()).map_err(NodeError::from)? {
                    let Some(Value::Blob(bytes)) = row.columns.first().cloned().flatten() else { continue };
                    // A damaged entry cannot be applied; it is kept for the operator, not lost.
                    let updates = decode_batch(&bytes).map_err(|e| BatchlogError::Damaged(e.to_string()))?;
                    node.apply_stamped(updates).await?;
                    self.remove(node, &row.partition_key).await?;
                    replayed += 1;
                }
            }
            if page.len() < REPLAY_PAGE {
                return Ok(replayed);
            }
            after = page.last().map(|(k, _)| k.clone());
        }
    }

    /// Applies a batch stamped with `ts` all-or-nothing across a crash: logs `updates`, runs
    /// `apply` (which sends them to their replicas), then forgets the entry.
    pub async fn write(
        &self,
        node: &Node,
        updates: &[PartitionUpdate],
        ts: Timestamp,
        apply: impl Future<Output = Result<(), ErrorResponse>>,
    ) -> Result<(), ErrorResponse> {
        let id = self.log(node, updates, ts).await?;
        apply.await?;
        // The batch is applied: losing this deletion in a crash only replays it once more.
        self.remove(node, &id).await.map_err(super::node_error)
    }

    /// Makes the entry of a stamped batch durable; returns the entry's key.
    async fn log(&self, node: &Node, updates: &[PartitionUpdate], ts: Timestamp) -> Result<[Value; 1], ErrorResponse> {
        let invalid = |m: String| ErrorResponse::new(ErrorCode::Invalid, m);
        let mut blob = Vec::new();
        encode_batch(updates, &mut blob);
        if blob.len() > MAX_VALUE_LEN {
            return Err(invalid(format!(
                "a LOGGED BATCH of {} bytes is larger than the batchlog's limit of {MAX_VALUE_LEN} bytes",
                blob.len()
            )));
        }
        let sequence = self.sequence.get();
        self.sequence.set(sequence + 1);
        let mut id = ts.to_be_bytes().to_vec();
        id.extend_from_slice(&self.shard.to_be_bytes());
        id.extend_from_slice(&sequence.to_be_bytes());
        let id = [Value::Blob(id)];
        let entry = Write::upsert(&self.table, &id, &[], &[("updates", Some(Value::Blob(blob)))], 0, true)
            .map_err(|e| invalid(e.to_string()))?;
        node.write(vec![entry], None).await.map_err(super::node_error)?;
        Ok(id)
    }

    async fn remove(&self, node: &Node, id: &[Value]) -> Result<(), NodeError> {
        let delete = Write::delete(&self.table, id, &[], &[])?;
        node.write(vec![delete], None).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::future::block_on;
    use shards::node::NodeConfig;
    use wire::schema::ColumnDef;

    use super::*;

    fn open_node(dir: &std::path::Path) -> Node {
        let mut config = NodeConfig::new(dir);
        config.shards = 2;
        Node::open(config).expect("opening the node").0
    }

    fn kv_schema() -> TableSchema {
        TableSchema {
            id: 0,
            name: "kv".into(),
            partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Int }],
            clustering: Vec::new(),
            columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Text }],
            options: TableOptions::default(),
        }
    }

    /// A crash after the entry was logged and before (any part of) the batch was applied:
    /// the next start applies the whole batch, with its own timestamp, and forgets the entry.
    #[test]
    fn batch_logged_before_a_crash_is_applied_whole_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path());
        let kv = block_on(node.create_table(kv_schema(), None)).unwrap();
        let (log, replayed) = block_on(Batchlog::open(&node, 0)).unwrap();
        assert_eq!(replayed, 0);
        let writes: Vec<Write> = (0..20)
            .map(|k| Write::upsert(&kv, &[Value::Int(k)], &[], &[("v", Some(Value::Text(format!("v{k}"))))], 0, true))
            .collect::<Result<_, _>>()
            .unwrap();
        let shards: std::collections::HashSet<u16> = writes.iter().map(|w| node.shard_of(w.key.token())).collect();
        assert_eq!(shards.len(), 2, "the batch must span both shards");
        let updates: Vec<_> = writes.into_iter().map(|w| w.stamp(1_000_000, now_secs())).collect();
        block_on(log.log(&node, &updates, 1_000_000)).unwrap();
        for k in 0..20 {
            assert!(block_on(node.get("kv", &[Value::Int(k)], &[])).unwrap().is_empty(), "nothing applied yet");
        }
        block_on(node.shutdown()).unwrap();
        drop(node);

        let node = open_node(dir.path());
        let (_, replayed) = block_on(Batchlog::open(&node, 0)).unwrap();
        assert_eq!(replayed, 1);
        for k in 0..20 {
            let rows = block_on(node.get("kv", &[Value::Int(k)], &[])).unwrap();
            assert_eq!(rows.len(), 1, "key {k}");
            assert_eq!(rows[0].columns[0], Some(Value::Text(format!("v{k}"))));
            assert_eq!(rows[0].cells[0].map(|c| c.writetime), Some(1_000_000));
        }
        block_on(node.shutdown()).unwrap();
        drop(node);

        // The entry is gone: a third start replays nothing.
        let node = open_node(dir.path());
        assert_eq!(block_on(Batchlog::open(&node, 0)).unwrap().1, 0);
        block_on(node.shutdown()).unwrap();
    }

    #[test]
    fn logged_batch_is_applied_and_its_entry_removed() {
        let dir = tempfile::tempdir().unwrap();
        let node = open_node(dir.path());
        let kv = block_on(node.create_table(kv_schema(), None)).unwrap();
        let (log, _) = block_on(Batchlog::open(&node, 0)).unwrap();
        let writes = (0..8)
            .map(|k| Write::upsert(&kv, &[Value::Int(k)], &[], &[("v", Some(Value::Text("x".into())))], 0, true))
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let updates: Vec<_> = writes.into_iter().map(|w| w.stamp(1_000_000, now_secs())).collect();
        let apply = async { node.apply_stamped(updates.clone()).await.map_err(crate::coordinator::node_error) };
        block_on(log.write(&node, &updates, 1_000_000, apply)).unwrap();
        for k in 0..8 {
            assert_eq!(block_on(node.get("kv", &[Value::Int(k)], &[])).unwrap().len(), 1);
        }
        let entries = block_on(node.scan(log.table.id, MIN_TOKEN, Token::MAX, None, 10)).unwrap();
        let live: usize = entries.iter().map(|(k, p)| visible_rows(&log.table, k, p, now_secs()).unwrap().len()).sum();
        assert_eq!(live, 0, "the entry of an applied batch is deleted");
        block_on(node.shutdown()).unwrap();
    }
}

//! `enigmadb admin cleanup` on the coordinator shard (Cassandra's `nodetool cleanup`): for each
//! table, the token ranges each shard of this node replicates under the current natural ring
//! at the table's replication factor (`cluster::cleanup::owned_ranges`), handed to the shards'
//! cleanup compactions (`Node::cleanup`). Refused while a range movement involves this node:
//! ranges it is about to gain or lose would be judged on a ring about to change.

use std::sync::Arc;

use shards::catalog::is_local_table;
use shards::compaction::CompactionReport;
use wire::protocol::{CleanedTable, ErrorCode, ErrorResponse};
use wire::schema::{TableId, TableSchema};

use super::proxy::replication_factor;
use super::{node_error, Coordinator};
use crate::cluster::cleanup::owned_ranges;

impl Coordinator {
    /// Cleans `only` (every table of the users when None) on this node; what each table lost.
    pub(super) async fn cleanup(&self, only: Option<TableId>) -> Result<Vec<CleanedTable>, ErrorResponse> {
        let mut tables: Vec<Arc<TableSchema>> = self
            .node
            .tables()
            .into_iter()
            .filter(|t| !is_local_table(&t.name) && only.is_none_or(|id| id == t.id))
            .collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        let refuse = |why: String| {
            ErrorResponse::new(
                ErrorCode::Invalid,
                format!("cleanup refused: {why}; not safe to run cleanup until it completes (run it again then)"),
            )
        };
        if self.cluster().is_some_and(|c| c.is_bootstrapping()) {
            return Err(refuse("this node is joining the ring".into()));
        }
        let view = self.proxy.view();
        let local = self.node.host_id();
        for table in &tables {
            if view.involved_in_movement(local, replication_factor(table)) {
                let moving: Vec<String> = view.movements().iter().map(|m| m.id().to_string()).collect();
                return Err(refuse(format!("a range movement involves this node ({})", moving.join(", "))));
            }
        }
        let mut out = Vec::with_capacity(tables.len());
        for table in tables {
            let owned = owned_ranges(view.ring(), replication_factor(&table), local, self.node.shard_count());
            let reports = self.node.cleanup(table.id, owned).await.map_err(node_error)?;
            let mut total = CompactionReport::default();
            reports.iter().for_each(|r| total.add(r));
            tracing::info!(
                table = %table.name,
                partitions_dropped = total.partitions_not_owned,
                bytes_in = total.bytes_in,
                bytes_out = total.bytes_out,
                "cleanup done"
            );
            out.push(CleanedTable {
                table: table.name.clone(),
                sstables_in: total.sstables_in as u64,
                sstables_out: total.sstables_out as u64,
                bytes_in: total.bytes_in,
                bytes_out: total.bytes_out,
                partitions_in: total.partitions_in,
                partitions_dropped: total.partitions_not_owned,
            });
        }
        Ok(out)
    }
}

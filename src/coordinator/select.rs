//! Runs a SELECT plan: reads partitions (by key, or a token range in pages of partitions from
//! its replicas, `range::scan`), turns stored versions into the rows a reader sees now, projects the selected
//! columns, and cuts pages at `page_size` rows with a paging state to resume after the last row.
//! Memory per request is bounded by the page size and one partition, never by the range.

use std::ops::Bound;

use shards::key::{ClusteringKey, PartitionKey};
use shards::read::{now_secs, visible_rows_skipping, ResultRow};
use shards::row::{ClusteringSlice, Partition};
use wire::protocol::{ColumnSpec, Consistency, ErrorCode, ErrorResponse, QueryParams, QueryResult, Rows};
use wire::Value;

use super::paging::PagingState;
use super::proxy::StorageProxy;
use super::{range, trace, DEFAULT_PAGE_SIZE};
use crate::cql::plan::{ColumnSource, ReadSource, SelectPlan};
use crate::cql::Projection;

/// Partitions asked of the replicas per scan step while filling a page.
const SCAN_BATCH_PARTITIONS: usize = 256;
/// Rows counted per internal page of `count(*)` (the count itself is never paged).
const COUNT_PAGE_ROWS: usize = 10_000;

pub fn column_specs(projection: &Projection) -> Vec<ColumnSpec> {
    match projection {
        Projection::Columns(columns) => columns.iter().map(|c| ColumnSpec { name: c.name.clone(), ty: c.ty }).collect(),
        Projection::Count { name } => vec![ColumnSpec { name: name.clone(), ty: wire::ColumnType::BigInt }],
    }
}

pub async fn run(proxy: &StorageProxy, plan: &SelectPlan, params: &QueryParams) -> Result<QueryResult, ErrorResponse> {
    if let ReadSource::Tokens(_) = &plan.source {
        proxy.check_scan(&plan.schema, params.consistency)?;
    }
    let consistency = params.consistency;
    let table = &plan.schema.name;
    trace::event(|| match &plan.source {
        ReadSource::Partitions { keys, .. } => {
            format!("Reading {} partition(s) of {table} at {consistency}", keys.len())
        }
        ReadSource::Tokens(_) => format!("Reading {table} in token order at {consistency}"),
    });
    let resume = match &params.paging_state {
        Some(bytes) => {
            Some(PagingState::decode(bytes).map_err(|e| ErrorResponse::new(ErrorCode::Invalid, e.to_string()))?)
        }
        None => None,
    };
    let limit = match &resume {
        Some(state) => state.remaining,
        None => plan.limit.map(u64::from),
    };
    match &plan.projection {
        Projection::Count { .. } => {
            // Counted whole (bounded by LIMIT), walking the rows a page at a time.
            let mut count = 0u64;
            let mut cursor = Cursor { resume, limit };
            loop {
                let page = cursor.next_page(proxy, consistency, plan, COUNT_PAGE_ROWS, |_, _| count += 1).await?;
                if page.is_none() {
                    break;
                }
            }
            Ok(QueryResult::Rows(Rows {
                columns: column_specs(&plan.projection),
                rows: vec![vec![Some(Value::BigInt(count as i64))]],
                paging_state: None,
            }))
        }
        Projection::Columns(columns) => {
            let page_size = params.page_size.unwrap_or(DEFAULT_PAGE_SIZE) as usize;
            let mut rows = Vec::new();
            let mut cursor = Cursor { resume, limit };
            let next = cursor
                .next_page(proxy, consistency, plan, page_size, |key, row| {
                    rows.push(columns.iter().map(|c| project(c.source, key, row)).collect());
                })
                .await?;
            Ok(QueryResult::Rows(Rows {
                columns: column_specs(&plan.projection),
                rows,
                paging_state: next.map(|s| s.encode()),
            }))
        }
    }
}

fn project(source: ColumnSource, key: &PartitionKey, row: &ResultRow) -> Option<Value> {
    match source {
        ColumnSource::PartitionKey(i) => row.partition_key.get(i).cloned(),
        ColumnSource::Clustering(i) => row.clustering.get(i).cloned(),
        ColumnSource::Regular(id) => row.columns.get(usize::from(id)).cloned().flatten(),
        ColumnSource::WriteTime(id) => {
            row.cells.get(usize::from(id)).copied().flatten().map(|c| Value::BigInt(c.writetime))
        }
        ColumnSource::Ttl(id) => row
            .cells
            .get(usize::from(id))
            .copied()
            .flatten()
            .and_then(|c| c.ttl_left)
            .map(|t| Value::Int(i32::try_from(t).unwrap_or(i32::MAX))),
        ColumnSource::Token => Some(Value::BigInt(key.token())),
    }
}

/// Where a SELECT stands between pages.
struct Cursor {
    /// Resume after this point (None: from the start).
    resume: Option<PagingState>,
    /// Rows LIMIT still allows (None: no LIMIT).
    limit: Option<u64>,
}

impl Cursor {
    /// Emits up to `page_size` rows (fewer if LIMIT or the data ends) and returns where the
    /// next page starts, or None when there are no more rows.
    async fn next_page(
        &mut self,
        proxy: &StorageProxy,
        consistency: Consistency,
        plan: &SelectPlan,
        page_size: usize,
        mut emit: impl FnMut(&PartitionKey, &ResultRow),
    ) -> Result<Option<PagingState>, ErrorResponse> {
        let schema = &plan.schema;
        let mut budget = match self.limit {
            Some(left) => (page_size as u64).min(left) as usize,
            None => page_size,
        };
        if budget == 0 {
            return Ok(None);
        }
        let resume = self.resume.take();
        let mut emitted = 0usize;
        let mut cut: Option<PagingState> = None;
        // Emits the partition's rows while the page has room; false when the page filled up
        // before the partition's last row (then `cut` names the last row sent). Called only
        // with room for at least one row.
        let mut feed = |key: &PartitionKey, partition: &Partition, budget: &mut usize| -> Result<bool, ErrorResponse> {
            debug_assert!(*budget > 0);
            // A row stored before replicas checked writes may not decode: it is skipped,
            // logged with its key and counted, and the rest of the table stays readable.
            let rows = visible_rows_skipping(schema, key, partition, now_secs(), &mut |bad| {
                tracing::warn!(table = %schema.name, row = %bad, "skipping a stored row that does not decode");
                proxy.node().note_undecodable_row();
            });
            for (i, row) in rows.iter().enumerate() {
                emit(key, row);
                emitted += 1;
                *budget = budget.saturating_sub(1);
                if *budget == 0 && i + 1 < rows.len() {
                    let clustering = ClusteringKey::from_values(schema, &row.clustering, true)
                        .map_err(|e| server_error(&e))?
                        .as_bytes()
                        .to_vec();
                    cut = Some(PagingState {
                        partition: key.bytes().to_vec(),
                        clustering: Some(clustering),
                        remaining: None,
                    });
                    return Ok(false);
                }
            }
            Ok(true)
        };
        let mut last_key: Option<PartitionKey> = None;
        let mut exhausted = false;
        match &plan.source {
            ReadSource::Partitions { keys, slice } => {
                // Resume at the partition of the paging state (keys are in request order).
                let mut start = 0;
                let mut first_slice = slice.clone();
                if let Some(state) = &resume {
                    let Some(i) = keys.iter().position(|k| k.bytes() == state.partition.as_slice()) else {
                        return Err(bad_paging_state());
                    };
                    match &state.clustering {
                        Some(c) => {
                            start = i;
                            first_slice = ClusteringSlice {
                                start: Bound::Excluded(ClusteringKey::from_encoded(c.clone())),
                                end: slice.end.clone(),
                            };
                        }
                        None => start = i + 1,
                    }
                }
                exhausted = true;
                for (n, key) in keys.iter().enumerate().skip(start) {
                    if budget == 0 {
                        exhausted = false;
                        break;
                    }
                    let s = if n == start { &first_slice } else { slice };
                    let stored = proxy.read(schema, key.clone(), s.clone(), consistency).await?;
                    last_key = Some(key.clone());
                    if let Some(partition) = stored {
                        if !feed(key, &partition, &mut budget)? {
                            exhausted = false;
                            break;
                        }
                    }
                }
            }
            ReadSource::Tokens(range) if range.is_empty() => exhausted = true,
            ReadSource::Tokens(range) => {
                let mut after = None;
                if let Some(state) = &resume {
                    let key = PartitionKey::from_serialized(state.partition.clone());
                    if !range.contains(key.token()) {
                        return Err(bad_paging_state());
                    }
                    if let Some(c) = &state.clustering {
                        // Finish the partition the previous page ended in.
                        let slice = ClusteringSlice {
                            start: Bound::Excluded(ClusteringKey::from_encoded(c.clone())),
                            end: Bound::Unbounded,
                        };
                        let stored = proxy.read(schema, key.clone(), slice, consistency).await?;
                        if let Some(partition) = stored {
                            if !feed(&key, &partition, &mut budget)? {
                                return Ok(self.advance(cut, emitted));
                            }
                        }
                    }
                    last_key = Some(key.clone());
                    after = Some(key);
                }
                loop {
                    if budget == 0 {
                        break;
                    }
                    let want = SCAN_BATCH_PARTITIONS.min(budget.max(1));
                    // From the replicas of each token range at the request's level (this
                    // node's shards alone on a single node).
                    let scan = range::scan(proxy, schema, range.start, range.end, after.clone(), want, consistency);
                    let batch = scan.await?;
                    let got = batch.len();
                    let mut stopped = false;
                    for (key, partition) in &batch {
                        if budget == 0 {
                            // Full at a partition boundary: the next page starts at this key.
                            stopped = true;
                            break;
                        }
                        last_key = Some(key.clone());
                        if !feed(key, partition, &mut budget)? {
                            stopped = true;
                            break;
                        }
                    }
                    if stopped {
                        break;
                    }
                    if got < want {
                        exhausted = true;
                        break;
                    }
                    after = last_key.clone();
                }
            }
        }
        if cut.is_none() && !exhausted {
            cut = last_key.map(|k| PagingState { partition: k.bytes().to_vec(), clustering: None, remaining: None });
        }
        Ok(self.advance(cut, emitted))
    }

    /// Records a finished page and returns the state the client resumes from: None when the
    /// rows ran out or LIMIT is reached.
    fn advance(&mut self, cut: Option<PagingState>, emitted: usize) -> Option<PagingState> {
        if let Some(left) = &mut self.limit {
            *left = left.saturating_sub(emitted as u64);
        }
        let mut next = cut.filter(|_| self.limit != Some(0))?;
        next.remaining = self.limit;
        self.resume = Some(next.clone());
        Some(next)
    }
}

fn server_error(e: &dyn std::fmt::Display) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Server, format!("reading stored rows: {e}"))
}

fn bad_paging_state() -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Invalid, "invalid paging state: it does not belong to this query")
}

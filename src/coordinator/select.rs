//! Runs a SELECT plan: reads partitions (by key, or a token range in steps of partitions from
//! its replicas, `range::scan`), turns stored versions into the rows a reader sees now, projects
//! the selected columns, and cuts pages at `page_size` rows or [`PageLimits::page_bytes`] of
//! values, whichever comes first, with a paging state to resume after the last row. Memory per
//! request is bounded by one page, one scan step (sized from the partitions seen so far to about
//! a page of bytes) and one partition, never by the range; no answer outgrows the frame limit.

use std::ops::Bound;

use shards::key::{ClusteringKey, PartitionKey};
use shards::read::{now_secs, visible_rows_skipping, ResultRow};
use shards::row::{ClusteringSlice, Partition, SliceLimit};
use shards::scan::{partition_bytes, ScanBound, ScanResume};
use wire::protocol::{
    value_wire_len, ColumnSpec, Consistency, ErrorCode, ErrorResponse, QueryParams, QueryResult, Rows,
};
use wire::Value;

use super::paging::PagingState;
use super::proxy::StorageProxy;
use super::{range, trace, DEFAULT_PAGE_SIZE};
use crate::cql::plan::{ColumnSource, ReadSource, SelectPlan};
use crate::cql::Projection;

/// Partitions asked of the replicas per scan step while filling a page, at most.
const SCAN_BATCH_PARTITIONS: usize = 256;
/// Rows counted per internal page of `count(*)` (the count itself is never paged).
const COUNT_PAGE_ROWS: usize = 10_000;
/// Room an answer frame keeps for everything but its rows (frame header, result kind, column
/// specs, paging state), at most; a quarter of the frame when frames are tiny.
pub const ANSWER_ENVELOPE_BYTES: usize = 16 * 1024;
/// Bytes of values per page when the server is not configured (ScyllaDB's 1 MiB page).
pub const DEFAULT_PAGE_BYTES: usize = 1 << 20;

/// How large one page of a SELECT may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// Bytes of selected values after which a page ends. A page holds at least one row, so a
    /// row larger than this is a page of its own. It also sizes scan steps: about this many
    /// stored bytes per shard per step.
    pub page_bytes: usize,
    /// Bytes the rows of one answer may take on the wire: the frame limit less
    /// [`ANSWER_ENVELOPE_BYTES`]. A single row larger than this is refused (INVALID).
    pub answer_row_bytes: usize,
}

impl PageLimits {
    pub fn new(page_bytes: usize, max_frame_bytes: usize) -> PageLimits {
        let envelope = ANSWER_ENVELOPE_BYTES.min(max_frame_bytes / 4);
        let answer_row_bytes = max_frame_bytes.saturating_sub(envelope);
        // A page never outgrows its frame, whatever the setting says.
        PageLimits { page_bytes: page_bytes.min(answer_row_bytes).max(1), answer_row_bytes }
    }
}

impl Default for PageLimits {
    fn default() -> Self {
        PageLimits::new(DEFAULT_PAGE_BYTES, wire::frame::DEFAULT_MAX_FRAME_BYTES)
    }
}

pub fn column_specs(projection: &Projection) -> Vec<ColumnSpec> {
    match projection {
        Projection::Columns(columns) => columns.iter().map(|c| ColumnSpec { name: c.name.clone(), ty: c.ty }).collect(),
        Projection::Count { name } => vec![ColumnSpec { name: name.clone(), ty: wire::ColumnType::BigInt }],
    }
}

pub async fn run(
    proxy: &StorageProxy,
    plan: &SelectPlan,
    params: &QueryParams,
    limits: PageLimits,
) -> Result<QueryResult, ErrorResponse> {
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
            let mut cursor = Cursor::new(resume, limit, limits);
            let mut rows = Vec::new();
            loop {
                let page = cursor.next_page(proxy, consistency, plan, COUNT_PAGE_ROWS, |_, _| Vec::new(), &mut rows);
                let page = page.await?;
                count += rows.len() as u64;
                rows.clear();
                if page.is_none() {
                    break;
                }
                // A count over a wide partition or a large table is many pages: the shard's
                // other requests run between them.
                glommio::yield_if_needed().await;
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
            let mut cursor = Cursor::new(resume, limit, limits);
            let project_row = |key: &PartitionKey, row: &ResultRow| -> Vec<Option<Value>> {
                columns.iter().map(|c| project(c.source, key, row)).collect()
            };
            let next = cursor.next_page(proxy, consistency, plan, page_size, project_row, &mut rows).await?;
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
    limits: PageLimits,
    /// Stored bytes and partitions scanned so far: their ratio sizes the next scan step.
    scanned: (usize, usize),
}

/// How far one partition went into a page.
enum Fed {
    /// Every row of it is in the page.
    Whole,
    /// The page ended inside it; `cut` names the last row sent.
    Cut,
    /// The page is full without any of its rows: the next page starts at it.
    FullBefore,
}

/// The rows of a page so far, against its bounds.
struct PageFill {
    rows_left: usize,
    value_bytes: usize,
    wire_bytes: usize,
    rows: usize,
}

impl PageFill {
    fn is_full(&self, limits: &PageLimits) -> bool {
        self.rows_left == 0 || self.value_bytes >= limits.page_bytes
    }
}

impl Cursor {
    fn new(resume: Option<PagingState>, limit: Option<u64>, limits: PageLimits) -> Cursor {
        Cursor { resume, limit, limits, scanned: (0, 0) }
    }

    /// Partitions to ask for in the next scan step: about a page of stored bytes by the size
    /// of those seen so far (one, to learn it, before any), never more rows than the page has
    /// room for.
    fn scan_step(&self, rows_left: usize) -> usize {
        let (bytes, partitions) = self.scanned;
        let by_size = match partitions {
            0 => 1,
            n => self.limits.page_bytes / (bytes / n).max(1),
        };
        by_size.clamp(1, SCAN_BATCH_PARTITIONS).min(rows_left.max(1))
    }

    /// Puts up to `page_size` rows, projected by `project`, in `out` (fewer if LIMIT, the
    /// page's bytes or the data end) and returns where the next page starts, or None when
    /// there are no more rows.
    async fn next_page(
        &mut self,
        proxy: &StorageProxy,
        consistency: Consistency,
        plan: &SelectPlan,
        page_size: usize,
        mut project: impl FnMut(&PartitionKey, &ResultRow) -> Vec<Option<Value>>,
        out: &mut Vec<Vec<Option<Value>>>,
    ) -> Result<Option<PagingState>, ErrorResponse> {
        let schema = &plan.schema;
        let limits = self.limits;
        let rows_left = match self.limit {
            Some(left) => (page_size as u64).min(left) as usize,
            None => page_size,
        };
        if rows_left == 0 {
            return Ok(None);
        }
        let mut page = PageFill { rows_left, value_bytes: 0, wire_bytes: 0, rows: 0 };
        let resume = self.resume.take();
        let mut cut: Option<PagingState> = None;
        let after_row = |key: &PartitionKey, row: &ResultRow| -> Result<PagingState, ErrorResponse> {
            let clustering = ClusteringKey::from_values(schema, &row.clustering, true).map_err(|e| server_error(&e))?;
            Ok(PagingState {
                partition: key.bytes().to_vec(),
                clustering: Some(clustering.as_bytes().to_vec()),
                remaining: None,
            })
        };
        let after_key = |key: &PartitionKey, clustering: &ClusteringKey| PagingState {
            partition: key.bytes().to_vec(),
            clustering: Some(clustering.as_bytes().to_vec()),
            remaining: None,
        };
        // Puts the partition's rows in the page while it has room. Called only with room for
        // at least one row. `read_cut`: the read stopped at this key, the partition may have
        // rows after it; `resumed`: an earlier read of this partition for this page ended at
        // this key (its rows up to there are in the page).
        let mut feed = |key: &PartitionKey,
                        partition: &Partition,
                        page: &mut PageFill,
                        read_cut: Option<&ClusteringKey>,
                        resumed: Option<&ClusteringKey>|
         -> Result<Fed, ErrorResponse> {
            debug_assert!(!page.is_full(&limits));
            // A row stored before replicas checked writes may not decode: it is skipped,
            // logged with its key and counted, and the rest of the table stays readable.
            let rows = visible_rows_skipping(schema, key, partition, now_secs(), &mut |bad| {
                tracing::warn!(table = %schema.name, row = %bad, "skipping a stored row that does not decode");
                proxy.node().note_undecodable_row();
            });
            for (i, row) in rows.iter().enumerate() {
                let values = project(key, row);
                let wire: usize = values.iter().map(|v| value_wire_len(v.as_ref())).sum();
                if page.wire_bytes + wire > limits.answer_row_bytes {
                    if page.rows == 0 {
                        return Err(row_too_large(row, wire, limits));
                    }
                    // The answer would outgrow the frame: the page ends before this row.
                    if i == 0 {
                        return Ok(match resumed {
                            // Rows of this partition up to `after` are in the page already.
                            Some(after) => {
                                cut = Some(after_key(key, after));
                                Fed::Cut
                            }
                            None => Fed::FullBefore,
                        });
                    }
                    cut = Some(after_row(key, &rows[i - 1])?);
                    return Ok(Fed::Cut);
                }
                page.value_bytes += values.iter().flatten().map(Value::byte_len).sum::<usize>();
                page.wire_bytes += wire;
                page.rows += 1;
                page.rows_left -= 1;
                out.push(values);
                if page.is_full(&limits) && i + 1 < rows.len() {
                    cut = Some(after_row(key, row)?);
                    return Ok(Fed::Cut);
                }
                if page.is_full(&limits) {
                    if let Some(stopped) = read_cut {
                        // The last row read fills the page: the next one resumes where the
                        // read stopped (past rows it read that no reader sees).
                        cut = Some(after_key(key, stopped));
                        return Ok(Fed::Cut);
                    }
                }
            }
            Ok(Fed::Whole)
        };
        // Feeds partition `key` from `$slice` on, read a page at a time (each read stops after
        // the rows the page still has room for, plus one to tell whether the partition goes
        // on), until the page is full or the partition ends.
        macro_rules! feed_partition {
            ($key:expr, $slice:expr) => {{
                let key: &PartitionKey = $key;
                let mut slice: ClusteringSlice = $slice;
                let mut resumed: Option<ClusteringKey> = None;
                loop {
                    // The rows the page has room for and one more, and about the bytes it has
                    // room for (stored bytes: at least the values), so that a partition of
                    // large rows is read a page at a time too.
                    let bytes = limits.page_bytes.saturating_sub(page.value_bytes).max(1);
                    let want = SliceLimit { rows: page.rows_left + 1, bytes };
                    let read = proxy.read(schema, key.clone(), slice.clone(), consistency, Some(want)).await?;
                    let fed = match &read.partition {
                        Some(partition) => feed(key, partition, &mut page, read.cut.as_ref(), resumed.as_ref())?,
                        None => Fed::Whole,
                    };
                    match (fed, read.cut) {
                        (Fed::Whole, Some(after)) => {
                            // The page has room left (feed ends it otherwise): read on.
                            slice = ClusteringSlice { start: Bound::Excluded(after.clone()), end: slice.end };
                            resumed = Some(after);
                        }
                        (fed, _) => break fed,
                    }
                }
            }};
        }
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
                    if page.is_full(&limits) {
                        exhausted = false;
                        break;
                    }
                    let s = if n == start { &first_slice } else { slice };
                    // Full before this partition: the next page resumes after the previous key,
                    // at this one.
                    if let Fed::Cut | Fed::FullBefore = feed_partition!(key, s.clone()) {
                        exhausted = false;
                        break;
                    }
                    last_key = Some(key.clone());
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
                        // The first rows of a page: Whole or Cut (or an error), never FullBefore.
                        if let Fed::Cut | Fed::FullBefore = feed_partition!(&key, slice) {
                            return Ok(self.advance(cut, page.rows));
                        }
                    }
                    last_key = Some(key.clone());
                    after = Some(key);
                }
                loop {
                    if page.is_full(&limits) {
                        break;
                    }
                    let want = self.scan_step(page.rows_left);
                    // About the rows the page has room for (one more tells whether a partition
                    // goes on) and a page of bytes: a wide partition is read a page at a time.
                    let bound = ScanBound::new(page.rows_left.saturating_add(1), limits.page_bytes);
                    // From the replicas of each token range at the request's level (this
                    // node's shards alone on a single node).
                    let from = after.clone().map(ScanResume::after_partition);
                    let scan = range::scan(proxy, schema, *range, from, want, bound, consistency);
                    let batch = scan.await?;
                    let read_cut = batch.cut().cloned();
                    let got = batch.partitions.len();
                    self.scanned.0 += batch.partitions.iter().map(|(_, p)| partition_bytes(p)).sum::<usize>();
                    self.scanned.1 += got;
                    let mut stopped = false;
                    for (i, (key, partition)) in batch.partitions.iter().enumerate() {
                        if page.is_full(&limits) {
                            // Full at a partition boundary: the next page starts at this key.
                            stopped = true;
                            break;
                        }
                        let read_cut = read_cut.as_ref().filter(|_| i + 1 == got);
                        match feed(key, partition, &mut page, read_cut, None)? {
                            Fed::Whole => last_key = Some(key.clone()),
                            Fed::Cut => {
                                last_key = Some(key.clone());
                                stopped = true;
                                break;
                            }
                            Fed::FullBefore => {
                                stopped = true;
                                break;
                            }
                        }
                    }
                    if stopped {
                        break;
                    }
                    match batch.resume {
                        None => {
                            exhausted = true;
                            break;
                        }
                        Some(ScanResume { key, after: Some(row) }) => {
                            // The scan stopped inside this partition (its rows up to `row` are
                            // in the page): finish it with bounded reads.
                            if page.is_full(&limits) {
                                cut = Some(after_key(&key, &row));
                                break;
                            }
                            let slice = ClusteringSlice { start: Bound::Excluded(row.clone()), end: Bound::Unbounded };
                            match feed_partition!(&key, slice) {
                                Fed::Whole => {}
                                Fed::Cut => break,
                                Fed::FullBefore => {
                                    cut = Some(after_key(&key, &row));
                                    break;
                                }
                            }
                            last_key = Some(key.clone());
                            after = Some(key);
                        }
                        Some(ScanResume { key, after: None }) => after = Some(key),
                    }
                }
            }
        }
        if cut.is_none() && !exhausted {
            cut = last_key.map(|k| PagingState { partition: k.bytes().to_vec(), clustering: None, remaining: None });
        }
        Ok(self.advance(cut, page.rows))
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

/// A row that alone does not fit an answer frame.
fn row_too_large(row: &ResultRow, wire: usize, limits: PageLimits) -> ErrorResponse {
    let key: Vec<String> = row.partition_key.iter().map(|v| v.to_string()).collect();
    ErrorResponse::new(
        ErrorCode::Invalid,
        format!(
            "a row of partition ({}) takes {wire} bytes, over the {} bytes an answer has for rows under the frame \
             limit (max_frame_bytes); select fewer columns of it",
            key.join(", "),
            limits.answer_row_bytes
        ),
    )
}

fn server_error(e: &dyn std::fmt::Display) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Server, format!("reading stored rows: {e}"))
}

fn bad_paging_state() -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Invalid, "invalid paging state: it does not belong to this query")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits_leave_room_for_the_envelope_even_in_tiny_frames() {
        let limits = PageLimits::new(1 << 20, 16 << 20);
        assert_eq!(limits.answer_row_bytes, (16 << 20) - ANSWER_ENVELOPE_BYTES);
        let tiny = PageLimits::new(1 << 20, 4096);
        assert_eq!(tiny.answer_row_bytes, 3072, "a quarter of a 4 KiB frame is kept for the rest");
        assert_eq!(tiny.page_bytes, 3072, "a page is never larger than its frame");
    }

    #[test]
    fn scan_steps_learn_the_partition_size_and_aim_at_a_page_of_bytes() {
        let mut cursor = Cursor::new(None, None, PageLimits::new(1 << 20, 16 << 20));
        assert_eq!(cursor.scan_step(5000), 1, "one partition first, to learn their size");
        cursor.scanned = (1 << 20, 1);
        assert_eq!(cursor.scan_step(5000), 1, "partitions of 1 MiB: one per step");
        cursor.scanned = (100 * 1000, 1000);
        assert_eq!(cursor.scan_step(5000), SCAN_BATCH_PARTITIONS, "small partitions: a full step");
        assert_eq!(cursor.scan_step(7), 7, "never more than the page has room for");
        cursor.scanned = (64 << 10, 1);
        assert_eq!(cursor.scan_step(5000), 16);
    }
}

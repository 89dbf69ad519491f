//! One stream of a range movement: the partitions of one table's token range copied from one
//! node to another, page by page, with their stored versions (timestamps, tombstones and
//! TTLs as they are, so last-write-wins settles every cell), throttled. Either end may be
//! this node: a bootstrap pulls (SCAN from a replica, applied here), a decommission pushes
//! (scanned here, MUTATE to the new owner), a removenode relays (SCAN from a surviving
//! replica, MUTATE to the new owner). Every page travels in a checksummed peer frame.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shards::hlc::Hlc;
use shards::mutation::PartitionUpdate;
use shards::node::{Node, NodeError};
use shards::scan::{ScanBound, ScanPage, ScanResume};
use wire::schema::TableId;
use wire::Token;

use super::range::scan_peer;
use super::repair::updates;
use crate::cluster::bootstrap::throttle_delay;
use crate::cluster::merkle::{RangePager, TokenRange};
use crate::cluster::messages::{self, ScanRequest, MAX_SCAN_ANSWER_BYTES};
use crate::cluster::service::Cluster;
use crate::cluster::transport::{PeerError, PeerRequest, Peers, COORDINATOR_SHARD};
use crate::cluster::verbs::MutateBody;
use crate::cluster::HostId;

/// How long one page of a stream (a SCAN, or a MUTATE) may take.
pub(super) const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// What one page of a stream holds at most (a SCAN, or `Node::scan_bounded` here): stored rows
/// and bytes, at least one row. A wide partition or a partition of large rows travels in
/// pieces of about this size, so every SCAN_RESULT and MUTATE of a stream stays well inside a
/// peer frame (a row alone larger than a frame cannot travel).
pub(super) const STREAM_PAGE_BOUND: ScanBound = ScanBound { rows: 16_384, bytes: MAX_SCAN_ANSWER_BYTES };

/// This node's next page of `table` in (start, end] from `resume` on: at most `limit`
/// partitions, within [`STREAM_PAGE_BOUND`].
pub(super) async fn local_page(
    node: &Node,
    table: TableId,
    start: Token,
    end: Token,
    resume: Option<ScanResume>,
    limit: usize,
) -> Result<ScanPage, NodeError> {
    node.scan_bounded(table, start, end, resume, limit, STREAM_PAGE_BOUND).await
}

/// [`local_page`] of the node at `peer`, through a bounded SCAN (a node of the release before
/// bounds answers whole partitions instead).
pub(super) async fn peer_page(
    peers: &dyn Peers,
    peer: SocketAddr,
    table: TableId,
    (start, end): (Token, Token),
    resume: Option<ScanResume>,
    limit: usize,
) -> Result<ScanPage, PeerError> {
    let (after, after_row) = match resume {
        Some(ScanResume { key, after }) => (Some(key), after),
        None => (None, None),
    };
    let bound = Some(STREAM_PAGE_BOUND);
    let request = ScanRequest { table, start, end, after, after_row, limit: limit as u32, bound };
    scan_peer(peers, peer, COORDINATOR_SHARD, request, STREAM_TIMEOUT).await
}

/// One end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// This node (its shards, through `Node`).
    Local,
    /// The node whose peer protocol listens there.
    Peer(SocketAddr),
}

/// What one page moved.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Page {
    pub partitions: u64,
    pub rows: u64,
    /// Bytes on the wire: the MUTATE body sent, or else the SCAN_RESULT received.
    pub bytes: u64,
}

/// Adds what `page` moved to what this node's progress (`admin netstats`) shows for `host` at
/// `peer`, with the seconds since `started`.
pub(super) fn count_page(cluster: &Cluster, host: HostId, peer: SocketAddr, page: Page, started: Instant) {
    cluster.update_progress(|p| {
        let s = p.peer(host, peer.to_string());
        s.partitions += page.partitions;
        s.rows += page.rows;
        s.bytes += page.bytes;
        p.seconds = started.elapsed().as_secs_f64();
    })
}

/// Streams that share a throttle (those of one bootstrap, decommission or removenode).
pub(super) struct Streamer<'a> {
    pub node: &'a Node,
    pub clock: &'a RefCell<Hlc>,
    pub peers: &'a dyn Peers,
    /// Bytes per second at most (None: unthrottled).
    pub throughput: Option<u64>,
    pub started: Instant,
    /// Bytes moved so far (the throttle paces them).
    pub bytes: u64,
}

impl Streamer<'_> {
    /// Copies the partitions of `table` in `range` from `from` to `to`, `page_partitions` at a
    /// time, telling `on_page` what each page moved. A page applied twice (a stream that
    /// restarts) is harmless: same versions.
    pub async fn copy(
        &mut self,
        table: TableId,
        range: TokenRange,
        from: End,
        to: End,
        page_partitions: usize,
        on_page: &mut dyn FnMut(Page),
    ) -> Result<(), String> {
        let mut pager = RangePager::new(range, page_partitions);
        while let Some((start, end, resume)) = pager.next_scan() {
            let limit = pager.page_size();
            // A page that resumes inside a partition goes on with it: counted once.
            let continued = resume.as_ref().and_then(|r| r.after.is_some().then(|| r.key.clone()));
            let (page, mut bytes) = match from {
                End::Local => {
                    let page = local_page(self.node, table, start, end, resume, limit)
                        .await
                        .map_err(|e| format!("scanning this node: {e}"))?;
                    (page, 0)
                }
                End::Peer(peer) => {
                    let page = peer_page(self.peers, peer, table, (start, end), resume, limit)
                        .await
                        .map_err(|e| format!("{peer}: {e}"))?;
                    // The answer arrives decoded; its size on the wire is measured again.
                    let bytes =
                        if page.partitions.is_empty() { 0 } else { messages::encode_scan_result(&page).len() as u64 };
                    (page, bytes)
                }
            };
            pager.advance(&page);
            let goes_on = page.partitions.first().is_some_and(|(k, p)| Some(k) == continued.as_ref() && !p.is_empty());
            let (updates, rows) = updates(table, page.partitions);
            let partitions = updates.len() as u64 - u64::from(goes_on);
            if !updates.is_empty() {
                match to {
                    End::Local => {
                        if let Some(ts) = updates.iter().filter_map(PartitionUpdate::max_timestamp).max() {
                            // A timestamp too far ahead is refused by the shard below, with its reason.
                            let _ = self.clock.borrow_mut().observe(ts);
                        }
                        self.node.apply_stamped(updates).await.map_err(|e| format!("applying on this node: {e}"))?;
                    }
                    End::Peer(peer) => {
                        let body = MutateBody::encode(&updates);
                        bytes = body.bytes().len() as u64;
                        if let Err(e) = self.peers.call(peer, PeerRequest::Mutate(body), STREAM_TIMEOUT).await {
                            return Err(format!("{peer}: {e}"));
                        }
                    }
                }
            }
            on_page(Page { partitions, rows, bytes });
            self.bytes += bytes;
            let pause = throttle_delay(self.bytes, self.started.elapsed(), self.throughput);
            if !pause.is_zero() {
                glommio::timer::sleep(pause).await;
            }
        }
        Ok(())
    }
}

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
use shards::node::Node;
use wire::schema::TableId;

use super::repair::updates;
use crate::cluster::bootstrap::throttle_delay;
use crate::cluster::merkle::{RangePager, TokenRange};
use crate::cluster::messages::{self, ScanRequest};
use crate::cluster::service::Cluster;
use crate::cluster::transport::{PeerAnswer, PeerRequest, Peers};
use crate::cluster::verbs::MutateBody;
use crate::cluster::HostId;

/// How long one page of a stream (a SCAN, or a MUTATE) may take.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);

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
        while let Some((start, end, after)) = pager.next_scan() {
            let limit = pager.page_size();
            let (page, mut bytes) = match from {
                End::Local => {
                    let page = self
                        .node
                        .scan(table, start, end, after, limit)
                        .await
                        .map_err(|e| format!("scanning this node: {e}"))?;
                    (page, 0)
                }
                End::Peer(peer) => {
                    let scan = PeerRequest::Scan(ScanRequest {
                        table,
                        start,
                        end,
                        after,
                        after_row: None,
                        limit: limit as u32,
                        bound: None,
                    });
                    let page = match self.peers.call(peer, scan, STREAM_TIMEOUT).await {
                        Ok(PeerAnswer::ScanResult(page)) => page,
                        Ok(_) => unreachable!("a call answers with the request's kind"),
                        Err(e) => return Err(format!("{peer}: {e}")),
                    };
                    // The answer arrives decoded; its size on the wire is measured again.
                    let bytes =
                        if page.partitions.is_empty() { 0 } else { messages::encode_scan_result(&page).len() as u64 };
                    (page.partitions, bytes)
                }
            };
            pager.advance(&page);
            let (updates, rows) = updates(table, page);
            let partitions = updates.len() as u64;
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

//! Replicated token-range reads (Cassandra's range slices): a scan of the tokens (start, end]
//! is split at the ring's vnode boundaries, consecutive pieces with the same replicas are read
//! together from as many live replicas as the consistency level needs (this node through
//! `Node::scan`, others through SCAN), and the answers are merged partition by partition with
//! the point reads' resolver (`replication::resolve_versions`), stale replicas read-repaired.
//! Memory per request is bounded by [`SCAN_ROUND_PARTITIONS`] per contacted replica; nothing
//! here decides consistency (`cluster::replication` does) or waits without a timeout.

use std::rc::Rc;
use std::time::Instant;

use shards::key::PartitionKey;
use shards::row::Partition;
use shards::scan::{PageBudget, ScanBound, ScanPage, ScanResume};
use wire::protocol::{Consistency, ErrorResponse};
use wire::schema::{ReadRepair, TableSchema};
use wire::Token;

use super::proxy::{
    fewest_replicas, read_timeout, recv_until, repair_update, replication_factor, same_nodes, unavailable, StorageProxy,
};
use super::{node_error, trace};
use crate::cluster::messages::{scan_answer_cover, ScanRequest, MAX_SCAN_ANSWER_BYTES, MAX_SCAN_PARTITIONS};
use crate::cluster::replication::{required_of_fewer, resolve_versions};
use crate::cluster::transport::{codes, PeerAnswer, PeerError, PeerRequest, Peers};
use crate::cluster::view::{ClusterView, Replica};
use crate::cql::plan::TokenRange;

/// Partitions asked of each contacted replica in one round (one SCAN) of a range read: the
/// memory of a request is at most this many partitions per replica it reads from at once.
pub const SCAN_ROUND_PARTITIONS: usize = 256;
const _: () = assert!(SCAN_ROUND_PARTITIONS <= MAX_SCAN_PARTITIONS);

/// A piece of a scanned range whose tokens all have the same replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeGroup {
    /// The tokens t with start < t <= end.
    pub start: Token,
    pub end: Token,
    /// The replicas of every token in it, owner first.
    pub replicas: Vec<Replica>,
}

/// Up to `limit` partitions with tokens in (start, end] (`range`) from `resume` on, within `bound`
/// (stored rows and bytes, at least one row), in storage order, read at `consistency` from
/// the replicas of each token range: exactly what `Node::scan_bounded` returns on a single
/// node. The answer may end inside a partition (a wide one is read a bound at a time); its
/// `resume` says where the next call starts, None once the range is exhausted. UNAVAILABLE
/// before anything is read when a piece of the range has too few live replicas; READ_TIMEOUT
/// when a round gets too few answers in time (a failed replica is first replaced by a spare).
pub async fn scan(
    proxy: &StorageProxy,
    schema: &TableSchema,
    TokenRange { start, end }: TokenRange,
    resume: Option<ScanResume>,
    limit: usize,
    bound: ScanBound,
    consistency: Consistency,
) -> Result<ScanPage, ErrorResponse> {
    let view = proxy.view();
    if view.members().len() == 1 {
        // A node on its own holds every token: today's local scan, no rounds.
        trace::event(|| {
            format!("Scanning tokens ({start}, {end}] on this node, the only one, for up to {limit} partition(s)")
        });
        let page = proxy.node().scan_bounded(schema.id, start, end, resume, limit, bound).await.map_err(node_error)?;
        trace::event(|| format!("Scanned {} partition(s)", page.partitions.len()));
        return Ok(page);
    }
    // Keys after the resume point have a token at or above its token.
    let start = match &resume {
        Some(r) => start.max(r.key.token().saturating_sub(1)),
        None => start,
    };
    if start >= end || limit == 0 {
        return Ok(ScanPage::default());
    }
    let rf = replication_factor(schema);
    let mut segments = Vec::new();
    for group in plan_ranges(&view, rf, start, end) {
        let required = required_of_fewer(consistency, rf, fewest_replicas(schema, rf), &group.replicas, &[])
            .map_err(|u| unavailable(consistency, schema, rf, u))?;
        let local = required == 1 && group.replicas.iter().any(|r| r.local);
        match segments.last_mut() {
            // Consecutive pieces this node can answer alone are one local scan.
            Some(Segment { end, local: true, .. }) if local => *end = group.end,
            _ => {
                segments.push(Segment { start: group.start, end: group.end, local, required, replicas: group.replicas })
            }
        }
    }
    trace::event(|| {
        format!("Scanning tokens ({start}, {end}] in {} piece(s) by replica set, at {consistency}", segments.len())
    });
    let read = RangeRead { proxy, schema, consistency };
    let mut out = ScanPage::default();
    let mut budget = PageBudget::new(bound);
    // Where the next round starts.
    let mut position = resume;
    for segment in &segments {
        loop {
            if out.partitions.len() >= limit || budget.is_spent() {
                out.resume = position;
                return Ok(out);
            }
            let want = (limit - out.partitions.len()).min(SCAN_ROUND_PARTITIONS);
            let left = budget.left();
            let round = match segment.local {
                true => {
                    let scan =
                        proxy.node().scan_bounded(schema.id, segment.start, segment.end, position.clone(), want, left);
                    scan.await.map_err(node_error)?
                }
                false => read.round(segment, position.clone(), want, left).await?,
            };
            for (key, mut partition) in round.partitions {
                let cut = budget.take(&key, &mut partition);
                out.partitions.push((key.clone(), partition));
                if let Some(row) = cut {
                    out.resume = Some(ScanResume { key, after: Some(row) });
                    return Ok(out);
                }
            }
            match round.resume {
                // Inside a partition: the caller goes on from there.
                Some(inside) if inside.after.is_some() => {
                    out.resume = Some(inside);
                    return Ok(out);
                }
                Some(covered) => position = Some(covered),
                None => {
                    // The segment is exhausted: the next one starts after what was read.
                    if let Some((key, _)) = out.partitions.last() {
                        position = Some(ScanResume::after_partition(key.clone()));
                    }
                    break;
                }
            }
        }
    }
    debug_assert!(out.partitions.windows(2).all(|w| w[0].0 < w[1].0), "a scan answers in storage order");
    trace::event(|| format!("Scanned {} partition(s)", out.partitions.len()));
    Ok(out)
}

/// The pieces of (start, end] (start < end) between the ring's vnode tokens, consecutive pieces
/// with the same replica nodes taken together, in token order.
pub fn plan_ranges(view: &ClusterView, rf: usize, start: Token, end: Token) -> Vec<RangeGroup> {
    let tokens: Vec<Token> = view.ring().vnodes().iter().map(|(t, _)| *t).collect();
    let mut groups: Vec<RangeGroup> = Vec::new();
    for (lo, hi) in split_at_vnodes(&tokens, start, end) {
        // Every token of (lo, hi] belongs to the vnode at or after hi: they share its replicas.
        let replicas = view.replicas(hi, rf);
        match groups.last_mut() {
            Some(last) if same_nodes(&last.replicas, &replicas) => last.end = hi,
            _ => groups.push(RangeGroup { start: lo, end: hi, replicas }),
        }
    }
    groups
}

/// (start, end] (start < end) cut at every vnode token strictly inside it: pieces (lo, hi]
/// that cover it in order, each within one vnode's range. `tokens` is sorted.
pub fn split_at_vnodes(tokens: &[Token], start: Token, end: Token) -> Vec<(Token, Token)> {
    debug_assert!(start < end && tokens.windows(2).all(|w| w[0] < w[1]));
    let first = tokens.partition_point(|t| *t <= start);
    let mut pieces = Vec::new();
    let mut lo = start;
    for &t in tokens[first..].iter().take_while(|t| **t < end) {
        pieces.push((lo, t));
        lo = t;
    }
    pieces.push((lo, end));
    pieces
}

/// What one round of a range read yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedRound<R> {
    /// The merged partitions, in storage order, at most the round's limit.
    pub partitions: Vec<(PartitionKey, Partition)>,
    /// Each replica that lacked part of the result, with the indexes in `partitions` it lacked.
    pub stale: Vec<(R, Vec<usize>)>,
    /// How far the round vouches for the range (the next round starts there; inside a
    /// partition when an answer was cut in it); None when every answer reached the end.
    pub covered_to: Option<ScanResume>,
}

/// Merges the answers of the replicas of one range to a SCAN for `asked` partitions, keeping
/// at most `limit`. A replica that stopped early (at `asked` partitions or at its bound) may
/// hold more after where it stopped, so the result only reaches the earliest such place:
/// beyond it a partition (or row) one replica sent may be missing from another's answer only
/// because that one stopped early. A partition cut there is cut in every version alike.
pub fn merge_round<R: Copy + Eq>(answers: Vec<(R, ScanPage)>, asked: usize, limit: usize) -> MergedRound<R> {
    let cutoff = answers.iter().filter_map(|(_, page)| scan_answer_cover(page, asked)).min_by(|a, b| a.cmp_position(b));
    let replicas: Vec<R> = answers.iter().map(|(r, _)| *r).collect();
    // Every key up to the cutoff, with the version of each replica that has it.
    let mut keys: std::collections::BTreeMap<PartitionKey, Vec<(R, Partition)>> = Default::default();
    for (replica, page) in answers {
        for (key, mut partition) in page.partitions {
            if let Some(c) = &cutoff {
                if key > c.key {
                    break;
                }
                if let (true, Some(row)) = (key == c.key, &c.after) {
                    partition.truncate_after(row);
                }
            }
            keys.entry(key).or_default().push((replica, partition));
        }
    }
    let mut partitions = Vec::new();
    let mut stale: Vec<(R, Vec<usize>)> = Vec::new();
    let mut covered_to = cutoff;
    for (key, mut held) in keys {
        if partitions.len() == limit {
            covered_to =
                partitions.last().map(|(k, _): &(PartitionKey, Partition)| ScanResume::after_partition(k.clone()));
            break;
        }
        let versions = replicas
            .iter()
            .map(|r| (*r, held.iter().position(|(h, _)| h == r).map(|i| held.swap_remove(i).1)))
            .collect();
        let resolved = resolve_versions(versions);
        let Some(partition) = resolved.partition else { continue };
        for replica in resolved.stale {
            match stale.iter_mut().find(|(r, _)| *r == replica) {
                Some((_, indexes)) => indexes.push(partitions.len()),
                None => stale.push((replica, vec![partitions.len()])),
            }
        }
        partitions.push((key, partition));
    }
    MergedRound { partitions, stale, covered_to }
}

/// Consecutive pieces of a range read from the same replicas.
struct Segment {
    start: Token,
    end: Token,
    /// This node alone answers it (a level of one replica, this node among the replicas).
    local: bool,
    required: usize,
    replicas: Vec<Replica>,
}

/// One range read request.
struct RangeRead<'a> {
    proxy: &'a StorageProxy,
    schema: &'a TableSchema,
    consistency: Consistency,
}

/// (candidate index, the replica's partitions or why it failed).
type ScanAnswer = (usize, Result<ScanPage, String>);

impl RangeRead<'_> {
    /// One round on a segment: `want` partitions after `after` from `required` live replicas
    /// (this node first, a spare one for each that fails), merged, stale replicas repaired.
    /// Returns the merged partitions and the key the next round starts after.
    async fn round(
        &self,
        segment: &Segment,
        position: Option<ScanResume>,
        want: usize,
        bound: ScanBound,
    ) -> Result<ScanPage, ErrorResponse> {
        let (consistency, required) = (self.consistency, segment.required);
        let mut candidates: Vec<Replica> = segment.replicas.iter().copied().filter(|r| r.alive).collect();
        candidates.sort_by_key(|r| !r.local);
        let timeout = self.proxy.timeouts().read;
        let deadline = Instant::now() + timeout;
        let (after, after_row) = match position {
            Some(ScanResume { key, after }) => (Some(key), after),
            None => (None, None),
        };
        let request = ScanRequest {
            table: self.schema.id,
            start: segment.start,
            end: segment.end,
            after,
            after_row,
            limit: want as u32,
            bound: Some(ScanBound::new(bound.rows, bound.bytes.min(MAX_SCAN_ANSWER_BYTES))),
        };
        // Each candidate is asked at most once.
        let (tx, rx) = flume::bounded::<ScanAnswer>(candidates.len());
        for (index, replica) in candidates.iter().enumerate().take(required) {
            self.send(replica, index, &request, tx.clone())?;
        }
        let mut next_spare = required;
        let mut answers: Vec<(usize, ScanPage)> = Vec::with_capacity(required);
        while answers.len() < required {
            match recv_until(&rx, deadline).await {
                None => {
                    let why = format!("no answer within {timeout:?}");
                    return Err(read_timeout(consistency, answers.len(), required, !answers.is_empty(), &why));
                }
                Some((index, Ok(page))) => answers.push((index, page)),
                Some((_, Err(why))) => {
                    tracing::debug!(%why, "a replica failed a range read");
                    if next_spare == candidates.len() {
                        let why = format!("replicas failed ({why})");
                        return Err(read_timeout(consistency, answers.len(), required, !answers.is_empty(), &why));
                    }
                    self.send(&candidates[next_spare], next_spare, &request, tx.clone())?;
                    next_spare += 1;
                }
            }
        }
        let merged = merge_round(answers, want, want);
        if let Some(ts) = merged.partitions.iter().filter_map(|(_, p)| p.max_timestamp()).max() {
            // As for point reads: peers' timestamps advance the clock (one too far ahead is
            // not trusted for that; its data is still returned).
            let _ = self.proxy.clock().borrow_mut().observe(ts);
        }
        let mode = self.schema.options.read_repair;
        if mode != ReadRepair::None && !merged.stale.is_empty() {
            let repairs = merged
                .stale
                .iter()
                .map(|(index, lacked)| {
                    let updates = lacked.iter().map(|&i| {
                        let (key, partition) = &merged.partitions[i];
                        repair_update(self.schema.id, key, partition)
                    });
                    (candidates[*index], updates.collect())
                })
                .collect();
            if let Err(why) = self.proxy.read_repair(mode, repairs).await {
                return Err(read_timeout(consistency, required, required, true, &why));
            }
        }
        Ok(ScanPage { partitions: merged.partitions, resume: merged.covered_to })
    }

    /// Asks one replica for its partitions of the request's range: this node through its
    /// shards, another through SCAN.
    fn send(
        &self,
        replica: &Replica,
        index: usize,
        request: &ScanRequest,
        tx: flume::Sender<ScanAnswer>,
    ) -> Result<(), ErrorResponse> {
        let limit = request.limit as usize;
        if replica.local {
            let node = self.proxy.node().clone();
            let (table, start, end) = (request.table, request.start, request.end);
            let resume = request.after.clone().map(|key| ScanResume { key, after: request.after_row.clone() });
            let bound = request.bound.unwrap_or(ScanBound::WHOLE);
            glommio::spawn_local(async move {
                let scan = node.scan_bounded(table, start, end, resume, limit, bound);
                let page = scan.await.map_err(|e| format!("this node: {e}"));
                let _ = tx.send_async((index, page)).await;
            })
            .detach();
            return Ok(());
        }
        let peers: Rc<dyn Peers> = self.proxy.peers();
        let (peer, shard, request) = (replica.peer, replica.shard, request.clone());
        let timeout = self.proxy.timeouts().read;
        glommio::spawn_local(async move {
            let page = match scan_peer(&*peers, peer, shard, request, timeout).await {
                Ok(page) if page.partitions.len() <= limit => Ok(page),
                Ok(page) => Err(format!("{peer}: sent {} partitions for a SCAN of {limit}", page.partitions.len())),
                Err(e) => Err(e.to_string()),
            };
            let _ = tx.send_async((index, page)).await;
        })
        .detach();
        Ok(())
    }
}

/// Sends SCAN `request` to shard `shard` of the node at `peer`. A node of the release before
/// bounds refuses a bound (PEER_ERROR `PROTOCOL`): it is asked again for whole partitions, as
/// it always was (its answer ends where `messages::scan_answer_cover` says, and is cut like
/// any other).
pub(super) async fn scan_peer(
    peers: &dyn Peers,
    peer: std::net::SocketAddr,
    shard: u16,
    request: ScanRequest,
    timeout: std::time::Duration,
) -> Result<ScanPage, PeerError> {
    let deadline = Instant::now() + timeout;
    let mut answer = peers.call_shard(peer, shard, PeerRequest::Scan(request.clone()), timeout).await;
    if let Err(PeerError::Remote { code: codes::PROTOCOL, .. }) = &answer {
        // A resume point inside a partition comes only from a node that knows bounds.
        if request.bound.is_some() && request.after_row.is_none() {
            let whole = PeerRequest::Scan(ScanRequest { bound: None, ..request });
            answer = peers.call_shard(peer, shard, whole, deadline.saturating_duration_since(Instant::now())).await;
        }
    }
    match answer? {
        PeerAnswer::ScanResult(page) => Ok(page),
        _ => unreachable!("a call answers with the request's kind"),
    }
}

#[cfg(test)]
mod tests {

    use proptest::prelude::*;
    use shards::cell::Cell;
    use shards::key::ClusteringKey;
    use shards::row::Row;

    use super::*;

    fn key(n: u32) -> PartitionKey {
        PartitionKey::from_serialized(n.to_be_bytes().to_vec())
    }

    /// `n` keys, sorted in storage order.
    fn keys(n: u32) -> Vec<PartitionKey> {
        let mut keys: Vec<PartitionKey> = (0..n).map(key).collect();
        keys.sort();
        keys
    }

    fn version(value: &str, ts: i64) -> Partition {
        let cells = vec![(0, Cell::Live { ts, value: value.as_bytes().to_vec() })];
        let row = Row { marker: Some(Cell::Live { ts, value: Vec::new() }), deletion: None, cells };
        Partition { deletion: None, rows: [(ClusteringKey::from_encoded(Vec::new()), row)].into() }
    }

    fn page(keys: &[PartitionKey], value: &str, ts: i64) -> Vec<(PartitionKey, Partition)> {
        keys.iter().map(|k| (k.clone(), version(value, ts))).collect()
    }

    /// An answer of a node before bounds: it says nothing about where it stopped.
    fn ans(partitions: Vec<(PartitionKey, Partition)>) -> ScanPage {
        ScanPage { partitions, resume: None }
    }

    #[test]
    fn agreeing_replicas_merge_to_their_answer_with_nothing_stale() {
        let ks = keys(5);
        let merged = merge_round(vec![(0, ans(page(&ks, "a", 1))), (1, ans(page(&ks, "a", 1)))], 10, 10);
        assert_eq!(merged, MergedRound { partitions: page(&ks, "a", 1), stale: vec![], covered_to: None });
    }

    #[test]
    fn a_missing_or_older_partition_makes_its_replica_stale() {
        let ks = keys(4);
        let mut behind = page(&ks, "new", 2);
        behind.remove(1);
        behind[2].1 = version("old", 1);
        let merged = merge_round(vec![(7, ans(page(&ks, "new", 2))), (9, ans(behind))], 10, 10);
        assert_eq!(merged.partitions, page(&ks, "new", 2));
        assert_eq!(merged.stale, vec![(9, vec![1, 3])], "replica 9 lacks key 1 and has key 3 older");
        assert_eq!(merged.covered_to, None);
    }

    #[test]
    fn a_full_answer_limits_the_round_to_its_last_key() {
        let ks = keys(6);
        // Replica 0 sent all it was asked for (3): it may hold more after ks[2]. Replica 1 sent
        // fewer, so it has nothing else: it truly lacks ks[1].
        let short = page(&[ks[0].clone(), ks[2].clone()], "a", 1);
        let merged = merge_round(vec![(0, ans(page(&ks[..3], "a", 1))), (1, ans(short))], 3, 3);
        assert_eq!(merged.partitions, page(&ks[..3], "a", 1));
        assert_eq!(merged.stale, vec![(1, vec![1])]);
        assert_eq!(merged.covered_to, Some(ScanResume::after_partition(ks[2].clone())));
        // Both full: the smaller last key bounds the round; ks[4] waits for the next round.
        let other = page(&[ks[0].clone(), ks[2].clone(), ks[4].clone()], "a", 1);
        let merged = merge_round(vec![(0, ans(page(&ks[..3], "a", 1))), (1, ans(other))], 3, 3);
        assert_eq!(merged.covered_to, Some(ScanResume::after_partition(ks[2].clone())));
        assert_eq!(merged.partitions, page(&ks[..3], "a", 1));
    }

    #[test]
    fn the_limit_cuts_the_round_at_its_last_partition() {
        let ks = keys(6);
        let merged = merge_round(vec![(0, ans(page(&ks[..3], "a", 1))), (1, ans(page(&ks[3..], "a", 1)))], 4, 2);
        assert_eq!(merged.partitions.len(), 2);
        assert_eq!(merged.covered_to, Some(ScanResume::after_partition(merged.partitions[1].0.clone())));
    }

    #[test]
    fn an_answer_cut_inside_a_partition_cuts_every_version_there() {
        let ks = keys(3);
        let wide = |rows: u8| {
            let row = Row { marker: Some(Cell::Live { ts: 1, value: Vec::new() }), deletion: None, cells: vec![] };
            Partition {
                deletion: None,
                rows: (0..rows).map(|i| (ClusteringKey::from_encoded(vec![i]), row.clone())).collect(),
            }
        };
        // Replica 0 stopped at its bound after row 4 of ks[1]; replica 1 sent all of it, and ks[2].
        let cut = ScanPage {
            partitions: vec![(ks[0].clone(), wide(2)), (ks[1].clone(), wide(5))],
            resume: Some(ScanResume { key: ks[1].clone(), after: Some(ClusteringKey::from_encoded(vec![4])) }),
        };
        let whole = ans(vec![(ks[0].clone(), wide(2)), (ks[1].clone(), wide(20)), (ks[2].clone(), wide(1))]);
        let merged = merge_round(vec![(0, cut), (1, whole)], 10, 10);
        assert_eq!(merged.partitions, vec![(ks[0].clone(), wide(2)), (ks[1].clone(), wide(5))]);
        assert_eq!(merged.stale, vec![], "rows past the cut are not compared");
        assert_eq!(
            merged.covered_to,
            Some(ScanResume { key: ks[1].clone(), after: Some(ClusteringKey::from_encoded(vec![4])) })
        );
    }

    #[test]
    fn empty_partitions_are_not_returned() {
        let ks = keys(2);
        let answer = vec![(ks[0].clone(), Partition::default()), (ks[1].clone(), version("a", 1))];
        let merged = merge_round(vec![(0, ans(answer))], 5, 5);
        assert_eq!(merged.partitions, page(&ks[1..], "a", 1));
    }

    #[test]
    fn split_cuts_at_inner_vnode_tokens_only() {
        let tokens = [-100, 0, 50, 200];
        assert_eq!(split_at_vnodes(&tokens, -100, 50), vec![(-100, 0), (0, 50)]);
        assert_eq!(
            split_at_vnodes(&tokens, i64::MIN, i64::MAX),
            vec![(i64::MIN, -100), (-100, 0), (0, 50), (50, 200), (200, i64::MAX)]
        );
        assert_eq!(split_at_vnodes(&tokens, 1, 49), vec![(1, 49)]);
    }

    fn view(nodes: u8, seed: u64) -> ClusterView {
        let mut members = crate::cluster::view::test_members(u128::from(nodes), 1, 4, seed);
        for m in &mut members {
            m.alive = m.host != 2;
        }
        ClusterView::new(1, members).expect("distinct random tokens")
    }

    proptest! {
        #[test]
        fn pieces_cover_the_range_in_order_within_one_vnode_each(
            mut tokens in proptest::collection::btree_set(any::<i64>(), 1..20), a in any::<i64>(), b in any::<i64>()
        ) {
            prop_assume!(a != b);
            let (start, end) = (a.min(b), a.max(b));
            let tokens: Vec<i64> = std::mem::take(&mut tokens).into_iter().collect();
            let pieces = split_at_vnodes(&tokens, start, end);
            prop_assert_eq!(pieces.first().map(|p| p.0), Some(start));
            prop_assert_eq!(pieces.last().map(|p| p.1), Some(end));
            for w in pieces.windows(2) {
                prop_assert_eq!(w[0].1, w[1].0);
            }
            for (lo, hi) in pieces {
                prop_assert!(lo < hi);
                prop_assert!(!tokens.iter().any(|t| lo < *t && *t < hi), "a vnode token inside ({lo}, {hi}]");
            }
        }

        #[test]
        fn every_token_of_a_group_has_the_groups_replicas(
            seed in any::<u64>(), nodes in 2u8..6, rf in 1usize..4, probes in proptest::collection::vec(any::<i64>(), 1..30)
        ) {
            let view = view(nodes, seed);
            let groups = plan_ranges(&view, rf, i64::MIN, i64::MAX);
            for w in groups.windows(2) {
                prop_assert_eq!(w[0].end, w[1].start);
                prop_assert!(!same_nodes(&w[0].replicas, &w[1].replicas), "neighbours with one replica set are merged");
            }
            for token in probes.into_iter().filter(|t| *t != i64::MIN) {
                let group = groups.iter().find(|g| g.start < token && token <= g.end).expect("covered");
                prop_assert!(same_nodes(&group.replicas, &view.replicas(token, rf)));
            }
        }
    }
}

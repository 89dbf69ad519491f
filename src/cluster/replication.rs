//! The consistency logic of a replicated request, without I/O: whether enough replicas are
//! alive to try, when a write has been acknowledged by enough replicas (or never can be), and
//! how the answers of several replicas to one read become one partition (digests, a per-cell
//! last-write-wins merge, the replicas found stale). The coordinator feeds it answers as they
//! arrive; nothing here sends, waits or reads a clock.

use shards::key::ClusteringKey;
use shards::row::{limited_cut, Partition, SliceLimit};
use wire::protocol::Consistency;

use super::messages::Digest;
use super::view::Replica;

/// Too few replicas are alive for the consistency level; nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable {
    pub required: usize,
    pub alive: usize,
}

/// How many replicas a request at `consistency` must hear from, given the replicas of its
/// token (`rf` wanted; fewer when the cluster has fewer nodes). Unavailable when the cluster
/// has fewer nodes than `rf` (an error, never a silent under-replication) or fewer replicas
/// are alive than the level needs (TWO on RF 1 included).
pub fn required_replicas(consistency: Consistency, rf: usize, replicas: &[Replica]) -> Result<usize, Unavailable> {
    required_of_fewer(consistency, rf, rf, replicas, &[])
}

/// As [`required_replicas`] for a write whose token also has `pending` replicas (nodes that
/// join): Cassandra's rule, `blockFor = CL's count + pending replicas`, counted over natural
/// and pending replicas together, so that once the movement completes the level still holds
/// among the new natural replicas even if a pending one missed the write. Unavailable when
/// fewer natural replicas exist than `rf`, or fewer natural and pending replicas are alive than
/// that sum.
pub fn required_with_pending(
    consistency: Consistency,
    rf: usize,
    natural: &[Replica],
    pending: &[Replica],
) -> Result<usize, Unavailable> {
    required_of_fewer(consistency, rf, rf, natural, pending)
}

/// As [`required_with_pending`] for a table whose rows may have fewer natural replicas than
/// its `rf` while the cluster has fewer nodes: at least `fewest` (at most `rf`) must exist.
/// The auth tables take 1 (Cassandra's system_auth at RF 3 on a smaller cluster): the first
/// node of a cluster holds every role alone and each node that joins streams its copy, up to
/// `rf`. The level still counts from `rf` (QUORUM at RF 3 wants two live replicas).
pub fn required_of_fewer(
    consistency: Consistency,
    rf: usize,
    fewest: usize,
    natural: &[Replica],
    pending: &[Replica],
) -> Result<usize, Unavailable> {
    let required = consistency.block_for(rf) + pending.len();
    let alive = natural.iter().chain(pending).filter(|r| r.alive).count();
    if natural.len() < fewest.min(rf) || alive < required {
        return Err(Unavailable { required, alive });
    }
    Ok(required)
}

/// Where a replicated write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteProgress {
    /// Still waiting for answers that may meet the level.
    Pending,
    /// Enough replicas acknowledged: answer the client.
    Met,
    /// So many replicas failed that the level can no longer be met.
    Failed,
}

/// Counts the answers to one write sent to `contacted` replicas, `required` of which must
/// acknowledge it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteTracker {
    required: usize,
    contacted: usize,
    acks: usize,
    failures: usize,
}

impl WriteTracker {
    pub fn new(required: usize, contacted: usize) -> WriteTracker {
        assert!(required >= 1 && contacted >= required, "{required} required of {contacted} contacted");
        WriteTracker { required, contacted, acks: 0, failures: 0 }
    }

    pub fn ack(&mut self) -> WriteProgress {
        debug_assert!(self.acks + self.failures < self.contacted, "more answers than replicas");
        self.acks += 1;
        self.progress()
    }

    pub fn fail(&mut self) -> WriteProgress {
        debug_assert!(self.acks + self.failures < self.contacted, "more answers than replicas");
        self.failures += 1;
        self.progress()
    }

    /// Met as soon as `required` replicas acknowledged (even if others failed later); Failed
    /// as soon as the replicas still to answer cannot make up the difference.
    pub fn progress(&self) -> WriteProgress {
        if self.acks >= self.required {
            WriteProgress::Met
        } else if self.contacted - self.failures < self.required {
            WriteProgress::Failed
        } else {
            WriteProgress::Pending
        }
    }

    /// Acknowledgements so far (WRITE_TIMEOUT's `received`).
    pub fn received(&self) -> usize {
        self.acks
    }

    pub fn required(&self) -> usize {
        self.required
    }

    pub fn failures(&self) -> usize {
        self.failures
    }
}

/// What a read needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadStep<R> {
    /// Keep waiting for the answers already asked for.
    Wait,
    /// Digests disagreed: ask these replicas (which sent only a digest) for their data.
    FetchData(Vec<R>),
    /// The answer.
    Resolved(ResolvedRead<R>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRead<R> {
    /// The newest version of every cell among the replicas that answered (None: nothing).
    pub partition: Option<Partition>,
    /// Replicas whose data lacked something the merged result has (for read repair).
    pub stale: Vec<R>,
    /// In a read with a row limit: the result holds the rows up to this key only (rows after
    /// it were not read, or not by every replica); None when it holds the whole slice.
    pub cut: Option<ClusteringKey>,
}

/// Resolves one partition read at a consistency level: data from one replica and digests from
/// the others; when every digest matches the data's, the data is the answer; otherwise every
/// replica that answered is asked for its data, and the versions are merged cell by cell
/// (last write wins, `Partition::merge`). `R` names a replica.
#[derive(Debug, Clone)]
pub struct ReadResolver<R> {
    required: usize,
    /// The read's row limit and byte bound, which every replica applied to its answer.
    limit: Option<SliceLimit>,
    /// Full answers, each with its digest.
    data: Vec<(R, Option<Partition>, Digest)>,
    digests: Vec<(R, Digest)>,
    /// After a mismatch: replicas asked for data that have not answered yet.
    fetching: Option<Vec<R>>,
}

impl<R: Copy + Eq> ReadResolver<R> {
    pub fn new(required: usize) -> ReadResolver<R> {
        ReadResolver::with_limit(required, None)
    }

    /// A resolver of a read whose replicas each answered with the rows of the slice up to the
    /// `limit.rows`-th live one or the one that reaches `limit.bytes` (see [`resolve_limited`]).
    pub fn with_limit(required: usize, limit: Option<SliceLimit>) -> ReadResolver<R> {
        assert!(required >= 1, "a read needs at least one replica");
        ReadResolver { required, limit, data: Vec::new(), digests: Vec::new(), fetching: None }
    }

    /// A replica's full answer, with [`super::messages::digest`] of it.
    pub fn on_data(&mut self, from: R, partition: Option<Partition>, digest: Digest) -> ReadStep<R> {
        if let Some(waiting) = &mut self.fetching {
            waiting.retain(|r| *r != from);
        }
        self.digests.retain(|(r, _)| *r != from);
        if !self.data.iter().any(|(r, _, _)| *r == from) {
            self.data.push((from, partition, digest));
        }
        self.step()
    }

    /// A replica's digest-only answer.
    pub fn on_digest(&mut self, from: R, digest: Digest) -> ReadStep<R> {
        let known = self.data.iter().any(|(r, _, _)| *r == from) || self.digests.iter().any(|(r, _)| *r == from);
        if self.fetching.is_none() && !known {
            self.digests.push((from, digest));
        }
        self.step()
    }

    /// After a mismatch, a replica asked for data failed and `instead` was asked in its place.
    pub fn replace_fetch(&mut self, failed: R, instead: R) {
        if let Some(waiting) = &mut self.fetching {
            waiting.retain(|r| *r != failed);
            waiting.push(instead);
        }
    }

    /// Answers so far (READ_TIMEOUT's `received`).
    pub fn received(&self) -> usize {
        self.data.len() + self.digests.len()
    }

    /// Whether a full answer arrived (READ_TIMEOUT's `data_present`).
    pub fn data_present(&self) -> bool {
        !self.data.is_empty()
    }

    fn step(&mut self) -> ReadStep<R> {
        if self.received() < self.required || self.data.is_empty() {
            return ReadStep::Wait;
        }
        match &self.fetching {
            Some(waiting) if !waiting.is_empty() => ReadStep::Wait,
            Some(_) => ReadStep::Resolved(self.merge()),
            None => {
                let first = self.data[0].2;
                let agree =
                    self.data.iter().all(|(_, _, d)| *d == first) && self.digests.iter().all(|(_, d)| *d == first);
                if agree {
                    let partition = self.data.swap_remove(0).1;
                    let cut = limited_cut(partition.as_ref(), self.limit);
                    return ReadStep::Resolved(ResolvedRead { partition, stale: Vec::new(), cut });
                }
                let fetch: Vec<R> = self.digests.iter().map(|(r, _)| *r).collect();
                if fetch.is_empty() {
                    // Only full answers, which disagree: merge them now.
                    self.fetching = Some(Vec::new());
                    return ReadStep::Resolved(self.merge());
                }
                self.fetching = Some(fetch.clone());
                ReadStep::FetchData(fetch)
            }
        }
    }

    /// Merges every full answer (see [`resolve_versions`]).
    fn merge(&mut self) -> ResolvedRead<R> {
        resolve_limited(self.data.iter().map(|(r, v, _)| (*r, v.clone())).collect(), self.limit)
    }
}

/// The full answers of several replicas for one partition (None: nothing stored) merged cell by
/// cell, last write wins (`Partition::merge`); the replicas whose version differs from the
/// result are stale. Answers that all agree are the result as they are, with no merge. Point
/// reads (through [`ReadResolver`]) and range reads resolve partitions here, and only here.
pub fn resolve_versions<R: Copy>(versions: Vec<(R, Option<Partition>)>) -> ResolvedRead<R> {
    resolve_limited(versions, None)
}

/// [`resolve_versions`] of answers to a read with a row limit, each holding the rows of the
/// slice from its start up to the `limit`-th row live on its replica (Cassandra compares the
/// same limited slice). An answer that may have stopped before the slice's end
/// (`row::limited_cut`) says nothing about rows after its last one: the answers are cut at
/// the first such point (the result's `cut`) before they are merged and compared, so a row
/// beyond it neither appears in the result nor makes a replica stale. The reader resumes after
/// `cut` for more rows.
pub fn resolve_limited<R: Copy>(versions: Vec<(R, Option<Partition>)>, limit: Option<SliceLimit>) -> ResolvedRead<R> {
    let cut = versions.iter().filter_map(|(_, v)| limited_cut(v.as_ref(), limit)).min();
    // An empty partition and no partition read the same (as their digests do).
    let versions: Vec<(R, Option<Partition>)> = versions
        .into_iter()
        .map(|(r, v)| {
            let v = v.map(|mut p| {
                if let Some(cut) = &cut {
                    p.truncate_after(cut);
                }
                p
            });
            (r, v.filter(|p| !p.is_empty()))
        })
        .collect();
    if versions.windows(2).all(|w| w[0].1 == w[1].1) {
        let partition = versions.into_iter().next().and_then(|(_, v)| v);
        return ResolvedRead { partition, stale: Vec::new(), cut };
    }
    let mut merged = Partition::default();
    for (_, version) in &versions {
        if let Some(p) = version {
            merged.merge(p.clone());
        }
    }
    let empty = Partition::default();
    let stale = versions.iter().filter(|(_, v)| *v.as_ref().unwrap_or(&empty) != merged).map(|(r, _)| *r).collect();
    ResolvedRead { partition: (!merged.is_empty()).then_some(merged), stale, cut }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    use shards::cell::{Cell, Deletion};
    use shards::key::ClusteringKey;
    use shards::row::Row;

    use super::*;
    use crate::cluster::messages::digest;

    fn replica(host: u128, alive: bool) -> Replica {
        let peer = SocketAddr::from(([127, 0, 0, host as u8], 7470));
        Replica { host, shard: 0, peer, alive, local: host == 1 }
    }

    /// One row `ck` with column 0 = `value` written at `ts`.
    fn version(ck: u8, value: &str, ts: i64) -> Option<Partition> {
        let cells = vec![(0, Cell::Live { ts, value: value.as_bytes().to_vec() })];
        let row = Row { marker: Some(Cell::Live { ts, value: Vec::new() }), deletion: None, cells };
        Some(Partition { deletion: None, rows: BTreeMap::from([(ClusteringKey::from_encoded(vec![ck]), row)]) })
    }

    fn data(resolver: &mut ReadResolver<u8>, from: u8, p: Option<Partition>) -> ReadStep<u8> {
        let d = digest(p.as_ref());
        resolver.on_data(from, p, d)
    }

    #[test]
    fn writes_with_pending_replicas_need_the_level_plus_one_ack_per_pending_replica() {
        let natural = [replica(1, true), replica(2, true), replica(3, true)];
        let joining = [replica(4, true)];
        assert_eq!(required_with_pending(Consistency::Quorum, 3, &natural, &joining), Ok(3));
        assert_eq!(required_with_pending(Consistency::One, 3, &natural, &joining), Ok(2));
        assert_eq!(required_with_pending(Consistency::All, 3, &natural, &joining), Ok(4));
        // A joining node down: the natural replicas make up for it, at QUORUM all of them.
        let down = [replica(4, false)];
        assert_eq!(required_with_pending(Consistency::Quorum, 3, &natural, &down), Ok(3));
        assert_eq!(
            required_with_pending(Consistency::All, 3, &natural, &down),
            Err(Unavailable { required: 4, alive: 3 })
        );
        let one_down = [replica(1, true), replica(2, true), replica(3, false)];
        assert_eq!(
            required_with_pending(Consistency::Quorum, 3, &one_down, &down),
            Err(Unavailable { required: 3, alive: 2 })
        );
        assert_eq!(required_with_pending(Consistency::Quorum, 3, &one_down, &joining), Ok(3));
        // Too few natural replicas is unavailable whatever joins.
        assert!(required_with_pending(Consistency::One, 3, &natural[..2], &joining).is_err());
    }

    #[test]
    fn availability_counts_live_replicas_against_the_level() {
        let three = [replica(1, true), replica(2, true), replica(3, false)];
        assert_eq!(required_replicas(Consistency::Quorum, 3, &three), Ok(2));
        assert_eq!(required_replicas(Consistency::One, 3, &three), Ok(1));
        assert_eq!(required_replicas(Consistency::All, 3, &three), Err(Unavailable { required: 3, alive: 2 }));
        let two_down = [replica(1, true), replica(2, false), replica(3, false)];
        assert_eq!(required_replicas(Consistency::Quorum, 3, &two_down), Err(Unavailable { required: 2, alive: 1 }));
        assert_eq!(required_replicas(Consistency::One, 3, &two_down), Ok(1));
    }

    #[test]
    fn rf_above_the_node_count_and_two_on_rf_one_are_unavailable() {
        let single = [replica(1, true)];
        assert_eq!(required_replicas(Consistency::One, 3, &single), Err(Unavailable { required: 1, alive: 1 }));
        assert_eq!(required_replicas(Consistency::Two, 1, &single), Err(Unavailable { required: 2, alive: 1 }));
        assert_eq!(required_replicas(Consistency::All, 1, &single), Ok(1));
    }

    #[test]
    fn a_table_that_grows_with_the_cluster_is_available_on_fewer_nodes_than_its_rf() {
        let single = [replica(1, true)];
        assert_eq!(required_of_fewer(Consistency::One, 3, 1, &single, &[]), Ok(1));
        // The level still counts from the rf: QUORUM of 3 wants two live replicas.
        assert_eq!(
            required_of_fewer(Consistency::Quorum, 3, 1, &single, &[]),
            Err(Unavailable { required: 2, alive: 1 })
        );
        let two = [replica(1, true), replica(2, true)];
        assert_eq!(required_of_fewer(Consistency::Quorum, 3, 1, &two, &[]), Ok(2));
        assert_eq!(required_of_fewer(Consistency::One, 3, 1, &single, &[replica(2, true)]), Ok(2));
        assert_eq!(required_of_fewer(Consistency::One, 3, 1, &[], &[]), Err(Unavailable { required: 1, alive: 0 }));
    }

    #[test]
    fn write_is_met_once_enough_replicas_acknowledge() {
        let mut t = WriteTracker::new(2, 3);
        assert_eq!(t.ack(), WriteProgress::Pending);
        assert_eq!(t.fail(), WriteProgress::Pending, "the third replica can still meet QUORUM");
        assert_eq!(t.ack(), WriteProgress::Met);
        assert_eq!((t.received(), t.required(), t.failures()), (2, 2, 1));
    }

    #[test]
    fn write_fails_as_soon_as_the_level_cannot_be_met() {
        let mut t = WriteTracker::new(2, 3);
        assert_eq!(t.fail(), WriteProgress::Pending);
        assert_eq!(t.fail(), WriteProgress::Failed, "one replica left cannot make two acknowledgements");
        let mut all = WriteTracker::new(3, 3);
        assert_eq!(all.ack(), WriteProgress::Pending);
        assert_eq!(all.fail(), WriteProgress::Failed);
        assert_eq!(all.received(), 1);
    }

    #[test]
    fn write_at_one_is_met_by_the_first_acknowledgement_and_stays_met() {
        let mut t = WriteTracker::new(1, 3);
        assert_eq!(t.ack(), WriteProgress::Met);
        assert_eq!(t.fail(), WriteProgress::Met);
        assert_eq!(t.fail(), WriteProgress::Met);
    }

    #[test]
    fn a_timed_out_write_reports_what_it_received() {
        let mut t = WriteTracker::new(3, 3);
        t.ack();
        assert_eq!(t.progress(), WriteProgress::Pending);
        assert_eq!((t.received(), t.required()), (1, 3));
    }

    #[test]
    fn matching_digests_resolve_to_the_data_without_a_second_round() {
        let mut r = ReadResolver::new(2);
        let v = version(1, "a", 10);
        assert_eq!(r.on_digest(2, digest(v.as_ref())), ReadStep::Wait, "no data yet");
        let step = data(&mut r, 1, v.clone());
        assert_eq!(step, ReadStep::Resolved(ResolvedRead { partition: v, stale: vec![], cut: None }));
    }

    #[test]
    fn data_alone_does_not_resolve_before_enough_replicas_answered() {
        let mut r = ReadResolver::new(2);
        assert_eq!(data(&mut r, 1, version(1, "a", 10)), ReadStep::Wait);
        assert_eq!((r.received(), r.data_present()), (1, true));
    }

    #[test]
    fn a_single_replica_read_is_its_data() {
        let mut r = ReadResolver::new(1);
        assert_eq!(
            data(&mut r, 1, None),
            ReadStep::Resolved(ResolvedRead { partition: None, stale: vec![], cut: None })
        );
    }

    #[test]
    fn digest_mismatch_fetches_data_and_merges_the_newest_cells() {
        let mut r = ReadResolver::new(3);
        let old = version(1, "old", 10);
        let new = version(1, "new", 20);
        assert_eq!(data(&mut r, 1, old.clone()), ReadStep::Wait);
        assert_eq!(r.on_digest(2, digest(new.as_ref())), ReadStep::Wait);
        assert_eq!(r.on_digest(3, digest(old.as_ref())), ReadStep::FetchData(vec![2, 3]));
        assert_eq!(data(&mut r, 3, old.clone()), ReadStep::Wait, "replica 2 still owes its data");
        let step = data(&mut r, 2, new.clone());
        assert_eq!(step, ReadStep::Resolved(ResolvedRead { partition: new, stale: vec![1, 3], cut: None }));
    }

    #[test]
    fn merge_combines_rows_and_deletions_of_different_replicas() {
        let mut r = ReadResolver::new(2);
        let row_a = version(1, "a", 10);
        let row_b = version(2, "b", 11);
        let mut deleted_a = row_b.clone().unwrap();
        deleted_a.deletion = Some(Deletion { ts: 10, deleted_at: 1 });
        data(&mut r, 1, row_a);
        assert_eq!(r.on_digest(2, digest(Some(&deleted_a))), ReadStep::FetchData(vec![2]));
        let ReadStep::Resolved(resolved) = data(&mut r, 2, Some(deleted_a.clone())) else { panic!("resolved") };
        assert_eq!(resolved.partition, Some(deleted_a), "the partition deletion at 10 hides row 1 written at 10");
        assert_eq!(resolved.stale, vec![1]);
    }

    #[test]
    fn a_replica_with_nothing_is_stale_against_one_with_data() {
        let mut r = ReadResolver::new(2);
        let v = version(1, "a", 10);
        data(&mut r, 1, None);
        assert_eq!(r.on_digest(2, digest(v.as_ref())), ReadStep::FetchData(vec![2]));
        assert_eq!(
            data(&mut r, 2, v.clone()),
            ReadStep::Resolved(ResolvedRead { partition: v, stale: vec![1], cut: None })
        );
    }

    /// Rows `cks` with column 0 = "v" written at `ts`.
    fn rows(cks: &[u8], ts: i64) -> Option<Partition> {
        let mut p = Partition::default();
        for &ck in cks {
            p.merge(version(ck, "v", ts)?);
        }
        Some(p)
    }

    #[test]
    fn limited_answers_are_compared_and_merged_up_to_the_first_point_one_may_have_stopped() {
        // Limit 3. Replica 1 holds rows 1..=5 and answers 1, 2, 3; replica 2 missed row 2 and
        // holds 1, 3, 4, 5, 6, answering 1, 3, 4. Past row 3 replica 1 said nothing.
        let (one, two) = (rows(&[1, 2, 3], 10), rows(&[1, 3, 4], 10));
        let resolved = resolve_limited(vec![(1u8, one.clone()), (2, two)], Some(SliceLimit::rows(3)));
        assert_eq!(resolved.partition, one, "row 4 lies past where replica 1 stopped");
        assert_eq!(resolved.stale, vec![2], "replica 2 lacks row 2; replica 1 is not stale for row 4");
        assert_eq!(resolved.cut, Some(ClusteringKey::from_encoded(vec![3])), "the reader resumes after row 3");
        // A replica that answered fewer rows than the limit holds the whole slice: no cut.
        let short = resolve_limited(vec![(1u8, rows(&[1, 2], 10)), (2, rows(&[1], 10))], Some(SliceLimit::rows(3)));
        assert_eq!((short.partition, short.stale, short.cut), (rows(&[1, 2], 10), vec![2], None));
        // Digests of equal limited answers agree, and the answer carries its cut.
        let mut r = ReadResolver::with_limit(2, Some(SliceLimit::rows(3)));
        data(&mut r, 1, one.clone());
        let ReadStep::Resolved(agreed) = r.on_digest(2, digest(one.as_ref())) else { panic!("digests agree") };
        assert_eq!(agreed.cut, Some(ClusteringKey::from_encoded(vec![3])));
        // A byte bound: replica 1 stopped after row 2, whose bytes reach it, with fewer rows
        // than the limit; replica 2 (a node before byte bounds) sent rows 1 to 4. Both are
        // cut after row 2, and neither is stale.
        let (bounded, longer) = (rows(&[1, 2], 10), rows(&[1, 2, 3, 4], 10));
        let bytes = shards::scan::partition_bytes(bounded.as_ref().unwrap());
        let resolved = resolve_limited(vec![(1u8, bounded.clone()), (2, longer)], Some(SliceLimit { rows: 3, bytes }));
        assert_eq!((resolved.partition, resolved.stale), (bounded, vec![]));
        assert_eq!(resolved.cut, Some(ClusteringKey::from_encoded(vec![2])), "the reader resumes after row 2");
    }

    #[test]
    fn resolving_versions_merges_the_newest_cells_and_names_the_stale_replicas() {
        let (old, new) = (version(1, "old", 10), version(1, "new", 20));
        let agree = resolve_versions(vec![(1, new.clone()), (2, new.clone())]);
        assert_eq!(agree, ResolvedRead { partition: new.clone(), stale: vec![], cut: None });
        let resolved = resolve_versions(vec![(1, old.clone()), (2, None), (3, new.clone())]);
        assert_eq!(resolved, ResolvedRead { partition: new, stale: vec![1, 2], cut: None });
        let empty = resolve_versions(vec![(1, Some(Partition::default())), (2, None)]);
        assert_eq!(empty, ResolvedRead { partition: None, stale: vec![], cut: None }, "empty and absent agree");
    }

    #[test]
    fn a_failed_fetch_replaced_by_another_replica_still_resolves() {
        let mut r = ReadResolver::new(2);
        let (old, new) = (version(1, "x", 1), version(1, "y", 2));
        data(&mut r, 1, old);
        assert_eq!(r.on_digest(2, digest(new.as_ref())), ReadStep::FetchData(vec![2]));
        r.replace_fetch(2, 3);
        let step = data(&mut r, 3, new.clone());
        assert_eq!(step, ReadStep::Resolved(ResolvedRead { partition: new, stale: vec![1], cut: None }));
    }

    #[test]
    fn disagreeing_full_answers_merge_without_a_fetch() {
        let mut r = ReadResolver::new(2);
        let (old, new) = (version(1, "x", 1), version(1, "y", 2));
        data(&mut r, 1, old);
        let step = data(&mut r, 2, new.clone());
        assert_eq!(step, ReadStep::Resolved(ResolvedRead { partition: new, stale: vec![1], cut: None }));
    }

    #[test]
    fn duplicate_answers_count_once() {
        let mut r = ReadResolver::new(2);
        let v = version(1, "a", 1);
        data(&mut r, 1, v.clone());
        assert_eq!(data(&mut r, 1, v.clone()), ReadStep::Wait);
        assert_eq!(r.received(), 1);
    }
}

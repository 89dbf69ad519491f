//! Merkle trees over a token range for anti-entropy repair (Cassandra's MerkleTree): the range
//! split into 2^depth equal sub-ranges, a leaf per sub-range holding the XOR of the hashes of
//! the partitions in it, inner nodes the XOR of their children; the MERKLE_TREE and
//! MERKLE_TREE_RESULT bodies; token-range paging for the scans that build and stream. Pure:
//! no I/O here, and a decoder trusts no byte.

use shards::key::PartitionKey;
use shards::row::Partition;
use shards::scan::{ScanPage, ScanResume};
use wire::codec::{DecodeError, Reader, Writer};
use wire::schema::TableId;
use wire::token::murmur3_x64_128_cassandra;
use wire::Token;

use super::messages::{check_version, digest, scan_answer_cover, MessageError, DATA_MESSAGE_VERSION};

/// Depth asked for when the operator does not say: 2^15 leaves at most, Cassandra's cap on
/// the leaves of one tree. A tree is only as deep as its partition count needs.
pub const DEFAULT_TREE_DEPTH: u8 = 15;
/// Deepest tree built or accepted: 2^18 leaves of 16 bytes are a 4 MiB MERKLE_TREE_RESULT,
/// well inside the default 16 MiB frame, and 8 MiB of memory (leaves and inner nodes).
pub const MAX_TREE_DEPTH: u8 = 18;

/// The tokens in (start, end], wrapping past the largest token; start == end is the whole
/// ring (a ring of one vnode). Token `i64::MIN` is never a key's token, so (MIN, MAX] holds
/// every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenRange {
    pub start: Token,
    pub end: Token,
}

impl TokenRange {
    pub fn new(start: Token, end: Token) -> TokenRange {
        TokenRange { start, end }
    }

    /// How many tokens it holds: 1..=2^64.
    pub fn width(&self) -> u128 {
        match self.end.wrapping_sub(self.start) as u64 {
            0 => 1u128 << 64,
            w => u128::from(w),
        }
    }

    /// Tokens from the start: `token` is the `offset + 1`-th token after `start`.
    fn offset(&self, token: Token) -> u128 {
        u128::from(token.wrapping_sub(self.start).wrapping_sub(1) as u64)
    }

    pub fn contains(&self, token: Token) -> bool {
        self.offset(token) < self.width()
    }

    /// This range cut after each of `points` it holds (its end excepted), in ring order.
    pub fn split_at(&self, points: impl IntoIterator<Item = Token>) -> Vec<TokenRange> {
        let mut cuts: Vec<u128> =
            points.into_iter().filter(|&p| p != self.end && self.contains(p)).map(|p| self.offset(p) + 1).collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        let mut from = 0;
        for to in cuts.into_iter().chain(std::iter::once(self.width())) {
            pieces.push(self.sub_range(from, to));
            from = to;
        }
        pieces
    }

    /// The tokens at offsets `from..to` (0 <= from < to <= width).
    fn sub_range(&self, from: u128, to: u128) -> TokenRange {
        debug_assert!(from < to && to <= self.width());
        // Offsets below 2^64: the casts keep the low 64 bits, as wrapping token arithmetic does.
        TokenRange {
            start: self.start.wrapping_add(from as u64 as i64),
            end: self.start.wrapping_add(to as u64 as i64),
        }
    }

    /// The same tokens as at most two non-wrapping ranges (s, e] with s < e, the form a SCAN
    /// and `Node::scan` take.
    pub fn pieces(&self) -> Vec<(Token, Token)> {
        if self.start < self.end {
            return vec![(self.start, self.end)];
        }
        // Wraps (or is the whole ring): up to the largest token, then from the smallest.
        let mut pieces = Vec::with_capacity(2);
        if self.start < Token::MAX {
            pieces.push((self.start, Token::MAX));
        }
        if self.end > Token::MIN {
            pieces.push((Token::MIN, self.end));
        }
        pieces
    }
}

impl std::fmt::Display for TokenRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {}]", self.start, self.end)
    }
}

/// First offset of leaf `i` of a tree of `depth` over `width` tokens: ceil(i * width / 2^depth).
fn leaf_start(width: u128, depth: u8, i: usize) -> u128 {
    // i <= 2^18 and width <= 2^64: the product fits in 128 bits.
    (i as u128 * width).div_ceil(1u128 << depth)
}

/// The hash a partition adds to its leaf: Murmur3 x64-128 of its key and its digest (the one
/// digest reads compare), so equal partitions of equal keys hash alike on every node. Empty
/// partitions are not added (a replica reads them as absent).
pub fn partition_hash(key: &PartitionKey, partition: &Partition) -> u128 {
    let mut bytes = Vec::with_capacity(key.bytes().len() + 16);
    bytes.extend_from_slice(key.bytes());
    bytes.extend_from_slice(&digest(Some(partition)).0.to_be_bytes());
    let (h1, h2) = murmur3_x64_128_cassandra(&bytes, 0);
    (u128::from(h1) << 64) | u128::from(h2)
}

/// Collects partition hashes at the deepest level asked for; [`TreeBuilder::finish`] then
/// keeps only as many levels as the partition count needs.
#[derive(Debug, Clone)]
pub struct TreeBuilder {
    range: TokenRange,
    max_depth: u8,
    leaves: Vec<u128>,
    partitions: u64,
}

impl TreeBuilder {
    /// `max_depth` above [`MAX_TREE_DEPTH`] is lowered to it.
    pub fn new(range: TokenRange, max_depth: u8) -> TreeBuilder {
        let max_depth = max_depth.min(MAX_TREE_DEPTH);
        TreeBuilder { range, max_depth, leaves: vec![0; 1 << max_depth], partitions: 0 }
    }

    /// Adds one stored partition (its token must lie in the range; empty ones are skipped).
    pub fn add(&mut self, key: &PartitionKey, partition: &Partition) {
        let token = key.token();
        debug_assert!(self.range.contains(token), "token {token} outside {}", self.range);
        if partition.is_empty() || !self.range.contains(token) {
            return;
        }
        let leaf = (self.range.offset(token) << self.max_depth) / self.range.width();
        self.leaves[leaf as usize] ^= partition_hash(key, partition);
        self.partitions += 1;
    }

    /// The tree, ceil(log2(partitions)) deep (about one partition per leaf, as Cassandra sizes
    /// its trees) but at most the depth asked for. Trees of different depths still compare:
    /// a node of one is the XOR of the same partitions as the node at its place in the other.
    pub fn finish(self) -> MerkleTree {
        let needed = match self.partitions {
            0 | 1 => 0,
            n => (64 - (n - 1).leading_zeros()) as u8,
        };
        let mut tree = MerkleTree::from_leaves(self.range, self.max_depth, self.partitions, self.leaves);
        tree.levels.truncate(usize::from(needed.min(self.max_depth)) + 1);
        tree
    }
}

/// A Merkle tree of one replica's partitions in a token range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    range: TokenRange,
    partitions: u64,
    /// `levels[k]` holds the 2^k nodes of depth k; the last level is the leaves.
    levels: Vec<Vec<u128>>,
}

/// Why two trees cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("trees over {ours} and {theirs} cannot be compared")]
pub struct RangeMismatch {
    pub ours: TokenRange,
    pub theirs: TokenRange,
}

impl MerkleTree {
    /// The tree whose leaves (2^depth of them) are `leaves`, inner nodes computed.
    fn from_leaves(range: TokenRange, depth: u8, partitions: u64, leaves: Vec<u128>) -> MerkleTree {
        debug_assert_eq!(leaves.len(), 1 << depth);
        let mut levels = vec![leaves];
        while levels[0].len() > 1 {
            let parent = levels[0].chunks_exact(2).map(|pair| pair[0] ^ pair[1]).collect();
            levels.insert(0, parent);
        }
        MerkleTree { range, partitions, levels }
    }

    pub fn range(&self) -> TokenRange {
        self.range
    }

    pub fn depth(&self) -> u8 {
        // At most MAX_TREE_DEPTH + 1 levels.
        (self.levels.len() - 1) as u8
    }

    /// Non-empty partitions hashed into the tree.
    pub fn partitions(&self) -> u64 {
        self.partitions
    }

    pub fn root(&self) -> u128 {
        self.levels[0][0]
    }

    /// The 2^depth nodes at `depth` (at most the tree's own depth): the leaves of the same
    /// tree built that deep.
    pub fn level(&self, depth: u8) -> &[u128] {
        &self.levels[usize::from(depth.min(self.depth()))]
    }

    /// The tokens of node `i` at `depth`, or None when it holds none (a range narrower than
    /// 2^depth tokens has empty leaves).
    pub fn node_range(&self, depth: u8, i: usize) -> Option<TokenRange> {
        self.runs_to_ranges(depth, &[i])
    }

    /// Nodes `indices` (increasing) at `depth` as token ranges, adjacent ones joined.
    pub fn ranges_of(&self, depth: u8, indices: &[usize]) -> Vec<TokenRange> {
        let mut ranges = Vec::new();
        let mut run = 0;
        while run < indices.len() {
            let mut end = run + 1;
            while end < indices.len() && indices[end] == indices[end - 1] + 1 {
                end += 1;
            }
            ranges.extend(self.runs_to_ranges(depth, &indices[run..end]));
            run = end;
        }
        ranges
    }

    /// The tokens of the consecutive nodes `run` at `depth`, or None when they hold none.
    fn runs_to_ranges(&self, depth: u8, run: &[usize]) -> Option<TokenRange> {
        let (first, last) = (*run.first()?, *run.last()?);
        let width = self.range.width();
        let from = leaf_start(width, depth, first);
        let to = leaf_start(width, depth, last + 1);
        (from < to).then(|| self.range.sub_range(from, to))
    }

    /// Indices of the nodes at `depth` (at most both trees' depth) whose hashes differ,
    /// found top-down: a subtree whose root agrees is not visited.
    pub fn differing_nodes(&self, other: &MerkleTree, depth: u8) -> Result<Vec<usize>, RangeMismatch> {
        if self.range != other.range {
            return Err(RangeMismatch { ours: self.range, theirs: other.range });
        }
        let depth = depth.min(self.depth()).min(other.depth());
        let mut frontier = vec![0usize];
        for level in 0..=usize::from(depth) {
            frontier.retain(|&i| self.levels[level][i] != other.levels[level][i]);
            if level < usize::from(depth) {
                frontier = frontier.iter().flat_map(|&i| [2 * i, 2 * i + 1]).collect();
            }
        }
        Ok(frontier)
    }

    /// The token ranges where the two trees differ, at the depth both have: the leaf ranges
    /// whose hashes differ, adjacent ones joined. Empty when they agree.
    pub fn differences(&self, other: &MerkleTree) -> Result<Vec<TokenRange>, RangeMismatch> {
        let depth = self.depth().min(other.depth());
        Ok(self.ranges_of(depth, &self.differing_nodes(other, depth)?))
    }

    /// MERKLE_TREE_RESULT: version | start i64 | end i64 | depth u8 | partitions u64 |
    /// 2^depth leaves (u64 high half, u64 low half). Inner nodes are recomputed by the reader.
    pub fn encode(&self) -> Vec<u8> {
        let leaves = self.level(self.depth());
        let mut w = Writer::with_buffer(Vec::with_capacity(26 + 16 * leaves.len()));
        w.u8(DATA_MESSAGE_VERSION).i64(self.range.start).i64(self.range.end);
        w.u8(self.depth()).u64(self.partitions);
        for leaf in leaves {
            w.u64((leaf >> 64) as u64).u64(*leaf as u64);
        }
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<MerkleTree, MessageError> {
        const MESSAGE: &str = "MERKLE_TREE_RESULT";
        let rest = check_version(MESSAGE, body)?;
        let mut r = Reader::new(rest);
        let decode = |r: &mut Reader<'_>| -> Result<MerkleTree, DecodeError> {
            let range = TokenRange::new(r.i64()?, r.i64()?);
            let depth = read_depth(r)?;
            let partitions = r.u64()?;
            let mut leaves = Vec::with_capacity(1 << depth);
            for _ in 0..1usize << depth {
                let high = r.u64()?;
                leaves.push((u128::from(high) << 64) | u128::from(r.u64()?));
            }
            r.finish()?;
            Ok(MerkleTree::from_leaves(range, depth, partitions, leaves))
        };
        decode(&mut r).map_err(|source| MessageError::Malformed { message: MESSAGE, source })
    }
}

fn read_depth(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8()? {
        depth if depth <= MAX_TREE_DEPTH => Ok(depth),
        depth => Err(r.invalid("tree depth", format!("{depth} is above the limit of {MAX_TREE_DEPTH}"))),
    }
}

/// MERKLE_TREE: build the tree of `table`'s partitions in `range`, at most `max_depth` deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeRequest {
    pub table: TableId,
    pub range: TokenRange,
    pub max_depth: u8,
}

impl TreeRequest {
    /// version | table u32 | start i64 | end i64 | max depth u8.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(DATA_MESSAGE_VERSION).u32(self.table).i64(self.range.start).i64(self.range.end).u8(self.max_depth);
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<TreeRequest, MessageError> {
        const MESSAGE: &str = "MERKLE_TREE";
        let rest = check_version(MESSAGE, body)?;
        let mut r = Reader::new(rest);
        let decode = |r: &mut Reader<'_>| -> Result<TreeRequest, DecodeError> {
            let table = r.u32()?;
            let range = TokenRange::new(r.i64()?, r.i64()?);
            let max_depth = read_depth(r)?;
            r.finish()?;
            Ok(TreeRequest { table, range, max_depth })
        };
        decode(&mut r).map_err(|source| MessageError::Malformed { message: MESSAGE, source })
    }
}

/// Walks a token range page by page for `Node::scan_bounded` or SCAN: each of its
/// non-wrapping pieces in turn, each page from where the previous one stopped (after its last
/// partition, or inside it when a bound cut it there).
#[derive(Debug, Clone)]
pub struct RangePager {
    pieces: Vec<(Token, Token)>,
    piece: usize,
    after: Option<ScanResume>,
    page: usize,
}

impl RangePager {
    /// Pages of at most `page` partitions (at least 1).
    pub fn new(range: TokenRange, page: usize) -> RangePager {
        RangePager { pieces: range.pieces(), piece: 0, after: None, page: page.max(1) }
    }

    /// The next scan to run: (start, end, where it resumes), or None when the range is done.
    pub fn next_scan(&self) -> Option<(Token, Token, Option<ScanResume>)> {
        let (start, end) = *self.pieces.get(self.piece)?;
        Some((start, end, self.after.clone()))
    }

    pub fn page_size(&self) -> usize {
        self.page
    }

    /// Moves past `page`, the answer to the last [`RangePager::next_scan`]: the next page
    /// resumes where it stopped (`messages::scan_answer_cover`); one that stopped nowhere ends
    /// its piece.
    pub fn advance(&mut self, page: &ScanPage) {
        match scan_answer_cover(page, self.page) {
            Some(resume) => self.after = Some(resume),
            None => {
                self.piece += 1;
                self.after = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use shards::cell::Cell;
    use shards::key::ClusteringKey;
    use shards::row::Row;

    use super::*;

    fn partition(value: u64) -> Partition {
        let cells = vec![(0, Cell::Live { ts: 7, value: value.to_le_bytes().to_vec() })];
        let mut rows = BTreeMap::new();
        rows.insert(ClusteringKey::default(), Row { marker: None, deletion: None, cells });
        Partition { deletion: None, rows }
    }

    fn key(n: u64) -> PartitionKey {
        PartitionKey::from_serialized(n.to_le_bytes().to_vec())
    }

    /// Partitions n -> value, in storage order, restricted to `range`.
    fn data(keys: &[(u64, u64)], range: TokenRange) -> Vec<(PartitionKey, Partition)> {
        let mut out: Vec<_> =
            keys.iter().map(|&(k, v)| (key(k), partition(v))).filter(|(k, _)| range.contains(k.token())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn tree(data: &[(PartitionKey, Partition)], range: TokenRange, depth: u8) -> MerkleTree {
        let mut builder = TreeBuilder::new(range, depth);
        for (k, p) in data {
            builder.add(k, p);
        }
        builder.finish()
    }

    fn any_range() -> impl Strategy<Value = TokenRange> {
        prop_oneof![
            Just(TokenRange::new(i64::MIN, i64::MIN)),
            Just(TokenRange::new(i64::MIN, i64::MAX)),
            (any::<i64>(), any::<i64>()).prop_map(|(s, e)| TokenRange::new(s, e)),
        ]
    }

    #[test]
    fn a_range_split_at_its_points_tiles_it_in_ring_order() {
        // Wrapping: (MAX - 10, MIN + 10].
        let r = TokenRange::new(Token::MAX - 10, Token::MIN + 10);
        let pieces = r.split_at([Token::MIN + 10, 0, Token::MIN + 2, Token::MAX - 3, Token::MAX - 3]);
        assert_eq!(
            pieces,
            vec![
                TokenRange::new(Token::MAX - 10, Token::MAX - 3),
                TokenRange::new(Token::MAX - 3, Token::MIN + 2),
                TokenRange::new(Token::MIN + 2, Token::MIN + 10),
            ],
            "points outside the range or at its end make no cut; duplicates count once"
        );
        assert_eq!(pieces.iter().map(TokenRange::width).sum::<u128>(), r.width());
        assert_eq!(r.split_at([]), vec![r]);
    }

    #[test]
    fn widths_and_pieces_cover_wrapping_and_whole_ring_ranges() {
        assert_eq!(TokenRange::new(5, 10).width(), 5);
        assert_eq!(TokenRange::new(7, 7).width(), 1 << 64);
        assert_eq!(TokenRange::new(i64::MAX, i64::MIN).width(), 1);
        assert_eq!(TokenRange::new(5, 10).pieces(), vec![(5, 10)]);
        assert_eq!(TokenRange::new(10, 5).pieces(), vec![(10, i64::MAX), (i64::MIN, 5)]);
        assert_eq!(TokenRange::new(i64::MAX, 5).pieces(), vec![(i64::MIN, 5)]);
        assert_eq!(TokenRange::new(3, i64::MIN).pieces(), vec![(3, i64::MAX)]);
        assert_eq!(TokenRange::new(0, 0).pieces(), vec![(0, i64::MAX), (i64::MIN, 0)]);
        let wrapping = TokenRange::new(10, 5);
        assert!(wrapping.contains(11) && wrapping.contains(i64::MAX) && wrapping.contains(5));
        assert!(!wrapping.contains(10) && !wrapping.contains(6));
    }

    #[test]
    fn leaves_split_the_range_into_equal_adjacent_parts() {
        let range = TokenRange::new(100, 116);
        let t = TreeBuilder::new(range, 2).finish();
        // Nothing hashed: depth 0, but any depth's node ranges can be asked of a range.
        assert_eq!(t.depth(), 0);
        let parts: Vec<_> = (0..4).map(|i| t.node_range(2, i).unwrap()).collect();
        assert_eq!(
            parts,
            [
                TokenRange::new(100, 104),
                TokenRange::new(104, 108),
                TokenRange::new(108, 112),
                TokenRange::new(112, 116)
            ]
        );
        assert_eq!(t.ranges_of(2, &[0, 1, 3]), [TokenRange::new(100, 108), TokenRange::new(112, 116)]);
        assert_eq!(t.ranges_of(2, &[0, 1, 2, 3]), [range]);
        // Three tokens over four leaves: one leaf holds none.
        let narrow = TreeBuilder::new(TokenRange::new(0, 3), 2).finish();
        assert_eq!((0..4).filter(|&i| narrow.node_range(2, i).is_none()).count(), 1);
        // The whole ring joined back is the whole ring.
        let ring = TreeBuilder::new(TokenRange::new(9, 9), 3).finish();
        assert_eq!(ring.ranges_of(3, &(0..8).collect::<Vec<_>>()), [TokenRange::new(9, 9)]);
    }

    #[test]
    fn depth_follows_the_partition_count_up_to_the_limit() {
        let range = TokenRange::new(i64::MIN, i64::MAX);
        let keys: Vec<(u64, u64)> = (0..100).map(|n| (n, n)).collect();
        assert_eq!(tree(&data(&keys[..1], range), range, 15).depth(), 0);
        assert_eq!(tree(&data(&keys[..2], range), range, 15).depth(), 1);
        assert_eq!(tree(&data(&keys[..5], range), range, 15).depth(), 3);
        assert_eq!(tree(&data(&keys, range), range, 15).depth(), 7);
        assert_eq!(tree(&data(&keys, range), range, 4).depth(), 4);
        assert_eq!(TreeBuilder::new(range, 200).max_depth, MAX_TREE_DEPTH);
        assert_eq!(tree(&data(&keys, range), range, 15).partitions(), 100);
    }

    #[test]
    fn an_empty_replica_differs_over_the_whole_range() {
        let range = TokenRange::new(i64::MIN / 2, i64::MAX / 2);
        let keys: Vec<(u64, u64)> = (0..5000).map(|n| (n, n)).collect();
        let full = tree(&data(&keys, range), range, 15);
        assert!(full.partitions() > 2000, "about half the keys: {}", full.partitions());
        let empty = tree(&[], range, 15);
        assert_eq!(full.differences(&empty).unwrap(), [range]);
        assert_eq!(empty.differences(&full).unwrap(), [range]);
        assert!(full.differences(&full.clone()).unwrap().is_empty());
        let other = TreeBuilder::new(TokenRange::new(0, 1), 3).finish();
        assert!(full.differences(&other).is_err());
    }

    #[test]
    fn pages_walk_every_piece_from_where_the_last_page_stopped() {
        let mut pager = RangePager::new(TokenRange::new(10, 5), 2);
        assert_eq!(pager.next_scan(), Some((10, i64::MAX, None)));
        // A full page without a resume point (a node before bounds): after its last key.
        let full = ScanPage { partitions: vec![(key(1), partition(1)), (key(2), partition(2))], resume: None };
        pager.advance(&full);
        assert_eq!(pager.next_scan(), Some((10, i64::MAX, Some(ScanResume::after_partition(key(2))))));
        // A bounded page cut inside a partition resumes after its last row.
        let inside = ScanResume { key: key(3), after: Some(ClusteringKey::default()) };
        pager.advance(&ScanPage { partitions: vec![(key(3), partition(3))], resume: Some(inside.clone()) });
        assert_eq!(pager.next_scan(), Some((10, i64::MAX, Some(inside))));
        // A short page with no resume point ends the piece.
        pager.advance(&ScanPage { partitions: vec![(key(4), partition(4))], resume: None });
        assert_eq!(pager.next_scan(), Some((i64::MIN, 5, None)));
        pager.advance(&ScanPage::default());
        assert_eq!(pager.next_scan(), None);
    }

    #[test]
    fn bad_bodies_are_typed_errors() {
        let request = TreeRequest { table: 3, range: TokenRange::new(1, 2), max_depth: MAX_TREE_DEPTH + 1 };
        let err = TreeRequest::decode(&request.encode()).unwrap_err();
        assert!(err.to_string().contains("above the limit"), "{err}");
        let mut body = TreeBuilder::new(TokenRange::new(1, 2), 1).finish().encode();
        body[0] = 9;
        assert_eq!(MerkleTree::decode(&body), Err(MessageError::Version { message: "MERKLE_TREE_RESULT", found: 9 }));
        let range = TokenRange::new(i64::MIN, i64::MAX);
        let body = tree(&data(&[(1, 1), (2, 2), (3, 3)], range), range, 8).encode();
        for cut in 0..body.len() {
            assert!(MerkleTree::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(MerkleTree::decode(&longer).is_err());
    }

    proptest! {
        #[test]
        fn trees_round_trip(range in any_range(), keys in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..40), depth in 0..=MAX_TREE_DEPTH) {
            let t = tree(&data(&keys, range), range, depth.min(10));
            prop_assert_eq!(MerkleTree::decode(&t.encode()).unwrap(), t);
            let request = TreeRequest { table: 9, range, max_depth: depth };
            prop_assert_eq!(TreeRequest::decode(&request.encode()).unwrap(), request);
        }

        #[test]
        fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = MerkleTree::decode(&bytes);
            let _ = TreeRequest::decode(&bytes);
        }

        #[test]
        fn leaves_tile_the_range_and_each_token_lands_in_its_leaf(range in any_range(), depth in 0u8..=12, token in any::<i64>()) {
            let t = TreeBuilder::new(range, depth).finish();
            let mut covered = 0u128;
            let mut next_start = range.start;
            for i in 0..1usize << depth {
                if let Some(r) = t.node_range(depth, i) {
                    prop_assert_eq!(r.start, next_start, "leaf {} starts where the previous ended", i);
                    covered += r.width();
                    next_start = r.end;
                }
            }
            prop_assert_eq!(covered, range.width());
            prop_assert_eq!(next_start, range.end);
            if range.contains(token) {
                let leaf = ((range.offset(token) << depth) / range.width()) as usize;
                prop_assert!(t.node_range(depth, leaf).unwrap().contains(token));
            }
        }

        #[test]
        fn equal_data_compares_equal_and_one_change_is_found_in_its_leaf(
            seed in any::<u64>(), n in 1usize..300, changed in any::<prop::sample::Index>(), depth in 0u8..=12,
        ) {
            let range = TokenRange::new(seed as i64, (seed as i64).wrapping_add(i64::MAX / 3));
            let keys: Vec<(u64, u64)> = (0..n as u64 * 8).map(|k| (k ^ seed, k)).collect();
            let ours = data(&keys, range);
            prop_assume!(!ours.is_empty());
            // Same data, built twice (one copy in another order of arrival): equal trees.
            let mut shuffled = ours.clone();
            shuffled.reverse();
            let a = tree(&ours, range, depth);
            prop_assert_eq!(&a, &tree(&shuffled, range, depth));
            prop_assert!(a.differences(&tree(&shuffled, range, depth)).unwrap().is_empty());
            // One partition with another value: exactly the leaf holding its token differs.
            let i = changed.index(ours.len());
            let mut theirs = ours.clone();
            theirs[i].1 = partition(u64::MAX);
            let b = tree(&theirs, range, depth);
            let token = ours[i].0.token();
            let d = a.depth();
            let leaf = ((range.offset(token) << d) / range.width()) as usize;
            prop_assert_eq!(a.differences(&b).unwrap(), vec![a.node_range(d, leaf).unwrap()]);
            // A missing partition too (the trees may differ in depth: compared at the lesser).
            theirs.remove(i);
            let c = tree(&theirs, range, depth);
            let diffs = a.differences(&c).unwrap();
            prop_assert_eq!(diffs.len(), 1);
            prop_assert!(diffs[0].contains(token));
        }
    }
}

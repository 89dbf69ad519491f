//! What a cleanup compaction keeps (`enigmadb admin cleanup`, Cassandra's `nodetool cleanup`):
//! the token ranges a shard owns as a replica under the current ring, given by the caller (the
//! cluster layer decides ownership; this module only answers "is this token owned"). Pure: a
//! sorted list of disjoint inclusive ranges and a binary search.

use wire::token::Token;

/// Token ranges `[first, last]` (inclusive both ends, never wrapping), sorted and disjoint,
/// adjacent ones merged: the tokens a shard keeps. Empty: it owns nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedRanges {
    ranges: Vec<(Token, Token)>,
}

/// Ranges handed to [`OwnedRanges::new`] that are not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnedRangesError {
    #[error("owned range [{first}, {last}] ends before it starts")]
    Reversed { first: Token, last: Token },
}

impl OwnedRanges {
    /// The union of `ranges` (each `[first, last]`, inclusive), in any order, overlapping or not.
    pub fn new(mut ranges: Vec<(Token, Token)>) -> Result<OwnedRanges, OwnedRangesError> {
        if let Some(&(first, last)) = ranges.iter().find(|(first, last)| first > last) {
            return Err(OwnedRangesError::Reversed { first, last });
        }
        ranges.sort_unstable();
        let mut merged: Vec<(Token, Token)> = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            match merged.last_mut() {
                Some((_, end)) if end.checked_add(1).is_none_or(|next| first <= next) => *end = (*end).max(last),
                _ => merged.push((first, last)),
            }
        }
        debug_assert!(merged.windows(2).all(|w| w[0].1 < w[1].0), "sorted, disjoint");
        Ok(OwnedRanges { ranges: merged })
    }

    /// Whether `token` is in one of the ranges.
    pub fn contains(&self, token: Token) -> bool {
        let at = self.ranges.partition_point(|(_, last)| *last < token);
        self.ranges.get(at).is_some_and(|(first, _)| *first <= token)
    }

    pub fn ranges(&self) -> &[(Token, Token)] {
        &self.ranges
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn tokens_are_owned_inside_the_ranges_only() {
        let owned = OwnedRanges::new(vec![(100, 200), (-50, 0), (201, 300), (i64::MAX - 1, i64::MAX)]).unwrap();
        assert_eq!(owned.ranges(), &[(-50, 0), (100, 300), (i64::MAX - 1, i64::MAX)], "adjacent merged");
        for (token, inside) in
            [(-51, false), (-50, true), (0, true), (1, false), (99, false), (100, true), (250, true), (301, false)]
        {
            assert_eq!(owned.contains(token), inside, "{token}");
        }
        assert!(owned.contains(i64::MAX) && !owned.contains(i64::MIN));
        assert!(!OwnedRanges::default().contains(0), "nothing owned");
        assert_eq!(OwnedRanges::new(vec![(5, 4)]), Err(OwnedRangesError::Reversed { first: 5, last: 4 }));
    }

    proptest! {
        #[test]
        fn contains_is_the_union_of_the_ranges(
            ranges in proptest::collection::vec((-1000i64..1000, 0i64..200), 0..12),
            probes in proptest::collection::vec(-1300i64..1300, 1..64),
        ) {
            let ranges: Vec<(Token, Token)> = ranges.into_iter().map(|(a, w)| (a, a + w)).collect();
            let owned = OwnedRanges::new(ranges.clone()).unwrap();
            for t in probes {
                prop_assert_eq!(owned.contains(t), ranges.iter().any(|(a, b)| *a <= t && t <= *b), "token {}", t);
            }
        }
    }
}

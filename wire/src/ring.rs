//! The token ring: sorted vnode tokens, each owned by someone (a shard of this node now; a
//! (node, shard) pair in a cluster). A token belongs to the first vnode at or after it, walking
//! clockwise and wrapping past the largest token, as in Cassandra.

use crate::token::Token;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring<O> {
    /// Sorted by token; tokens unique.
    vnodes: Vec<(Token, O)>,
}

/// A ring that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    #[error("a ring needs at least one vnode")]
    Empty,
    #[error("token {0} is owned twice")]
    DuplicateToken(Token),
}

impl<O: Clone> Ring<O> {
    pub fn new(mut vnodes: Vec<(Token, O)>) -> Result<Ring<O>, RingError> {
        if vnodes.is_empty() {
            return Err(RingError::Empty);
        }
        vnodes.sort_by_key(|(t, _)| *t);
        if let Some(w) = vnodes.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(RingError::DuplicateToken(w[0].0));
        }
        Ok(Ring { vnodes })
    }

    /// Index of the vnode that owns `token`: the first vnode token >= `token`, wrapping.
    pub fn vnode_index(&self, token: Token) -> usize {
        match self.vnodes.partition_point(|(t, _)| *t < token) {
            i if i == self.vnodes.len() => 0,
            i => i,
        }
    }

    pub fn owner(&self, token: Token) -> &O {
        &self.vnodes[self.vnode_index(token)].1
    }

    pub fn vnodes(&self) -> &[(Token, O)] {
        &self.vnodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_belong_to_the_next_vnode_clockwise() {
        let ring = Ring::new(vec![(100, 'b'), (-50, 'a'), (500, 'c')]).unwrap();
        assert_eq!(*ring.owner(-50), 'a');
        assert_eq!(*ring.owner(-49), 'b');
        assert_eq!(*ring.owner(100), 'b');
        assert_eq!(*ring.owner(101), 'c');
        assert_eq!(*ring.owner(501), 'a', "wraps past the largest token");
        assert_eq!(*ring.owner(i64::MIN), 'a');
    }

    #[test]
    fn bad_rings_are_refused() {
        assert_eq!(Ring::<u8>::new(vec![]), Err(RingError::Empty));
        assert_eq!(Ring::new(vec![(1, 0), (1, 1)]), Err(RingError::DuplicateToken(1)));
    }
}

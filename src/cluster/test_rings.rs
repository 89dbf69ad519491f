//! Seeded rings and token sets for the unit tests of ring changes (pending ranges, bootstrap
//! planning): xorshift from a seed, so a failing property test replays.

use std::collections::BTreeSet;

use wire::ring::Ring;
use wire::token::Token;

use super::pending::Owner;
use super::HostId;

/// The hosts replicating `token` at `rf` in `ring`, in ring order.
pub fn hosts(ring: &Ring<Owner>, token: Token, rf: usize) -> Vec<HostId> {
    ring.replicas(token, rf, |(h, _)| *h).into_iter().map(|(h, _)| *h).collect()
}

/// Tokens where replicas may change between `before` and `after`: both ends of the token
/// space, around 0, and every vnode token of `after` with its neighbours (never `Token::MIN`,
/// which no key hashes to).
pub fn probe_tokens(after: &Ring<Owner>) -> Vec<Token> {
    let mut probes: Vec<Token> = vec![Token::MIN + 1, 0, Token::MAX, -1, 1];
    for (t, _) in after.vnodes() {
        probes.extend([t.wrapping_sub(1), *t, t.wrapping_add(1)]);
    }
    probes.retain(|t| *t != Token::MIN);
    probes
}

/// A ring of `nodes` nodes (hosts 1..=nodes) with `vnodes` distinct tokens each from `seed`,
/// the vnodes of a node spread over `shards` shards in turn.
pub fn ring(nodes: u128, vnodes: usize, seed: u64, shards: u16) -> Ring<Owner> {
    let mut x = seed | 1;
    let mut taken = BTreeSet::new();
    let mut out = Vec::new();
    for host in 1..=nodes {
        for i in 0..vnodes {
            let token = loop {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x as i64 != Token::MIN && taken.insert(x as i64) {
                    break x as i64;
                }
            };
            out.push((token, (host, (i % shards as usize) as u16)));
        }
    }
    Ring::new(out).expect("distinct tokens")
}

/// `count` tokens from `seed` that `ring` does not hold, as one shard's list.
pub fn fresh_tokens(ring: &Ring<Owner>, count: usize, seed: u64) -> Vec<Vec<Token>> {
    let taken: BTreeSet<Token> = ring.vnodes().iter().map(|(t, _)| *t).collect();
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut tokens = Vec::new();
    while tokens.len() < count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let token = x as i64;
        if token != Token::MIN && !taken.contains(&token) && !tokens.contains(&token) {
            tokens.push(token);
        }
    }
    vec![tokens]
}

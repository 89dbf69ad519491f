//! Partition tokens, computed exactly as Cassandra's Murmur3Partitioner does, so that published
//! token values and driver-side token routing agree with ours.
//!
//! token(key) = the first 64 bits of MurmurHash3 x64-128 (seed 0) of the partition key's
//! serialized bytes, as a signed i64, with Cassandra's quirks: tail bytes are sign-extended (Java
//! casts a signed byte to long), an empty key is the minimum token, and i64::MIN is mapped to
//! i64::MAX so that the minimum token is never produced by a real key.

use crate::value::Value;

/// A position on the token ring.
pub type Token = i64;

/// The token no real key hashes to; it sorts before every other token.
pub const MIN_TOKEN: Token = i64::MIN;

/// Cassandra's partitioner token for a partition key's serialized bytes.
pub fn token_of(key: &[u8]) -> Token {
    if key.is_empty() {
        return MIN_TOKEN;
    }
    match murmur3_x64_128_cassandra(key, 0).0 as i64 {
        i64::MIN => i64::MAX,
        t => t,
    }
}

/// The serialized partition key Cassandra hashes: the value's bytes for a single column, and
/// for a composite key each component as (u16 big-endian length, bytes, 0x00).
pub fn serialize_partition_key(components: &[Value]) -> Vec<u8> {
    match components {
        [single] => single.to_bytes(),
        many => {
            let mut out = Vec::new();
            for value in many {
                let bytes = value.to_bytes();
                // A component longer than u16::MAX cannot be addressed by CompositeType; callers
                // validate key sizes (MAX_KEY_COMPONENT_LEN) before they get here.
                debug_assert!(bytes.len() <= u16::MAX as usize);
                out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                out.extend_from_slice(&bytes);
                out.push(0);
            }
            out
        }
    }
}

/// Largest serialized size of one partition key component (Cassandra's limit is 64 KiB - 1).
pub const MAX_KEY_COMPONENT_LEN: usize = u16::MAX as usize;

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

fn fmix(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// MurmurHash3 x64-128 as Cassandra's `MurmurHash.hash3_x64_128` computes it (tail bytes
/// sign-extended). Returns (h1, h2).
pub fn murmur3_x64_128_cassandra(key: &[u8], seed: u64) -> (u64, u64) {
    let (mut h1, mut h2) = (seed, seed);
    let mut blocks = key.chunks_exact(16);
    for block in blocks.by_ref() {
        let (lo, hi) = block.split_at(8);
        // chunks_exact(16) split at 8 gives two 8-byte halves.
        let k1 = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        let k2 = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
        h1 = h1.rotate_left(27).wrapping_add(h2).wrapping_mul(5).wrapping_add(0x52dc_e729);
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
        h2 = h2.rotate_left(31).wrapping_add(h1).wrapping_mul(5).wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    // Java: ((long) key.get(i)) << s, where get() returns a signed byte.
    let signed = |i: usize| tail[i] as i8 as i64 as u64;
    let (mut k1, mut k2) = (0u64, 0u64);
    for i in (8..tail.len()).rev() {
        k2 ^= signed(i) << ((i - 8) * 8);
    }
    if tail.len() > 8 {
        h2 ^= k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1);
    }
    for i in (0..tail.len().min(8)).rev() {
        k1 ^= signed(i) << (i * 8);
    }
    if !tail.is_empty() {
        h1 ^= k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2);
    }
    let len = key.len() as u64;
    h1 ^= len;
    h2 ^= len;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix(h1);
    h2 = fmix(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Key -> token pairs as Cassandra's Murmur3Partitioner computes them, kept in the
    /// repository so that a clean clone checks them too.
    #[test]
    fn tokens_match_cassandra_vectors() {
        let table = include_str!("../tests/vectors/murmur3-tokens.tsv");
        let mut checked = 0;
        for line in table.lines().filter(|l| !l.starts_with('#') && !l.starts_with("key_hex")) {
            let (key, token) = line.split_once('\t').expect("two tab-separated columns");
            let expected: i64 = token.trim().parse().expect("a signed 64-bit token");
            assert_eq!(token_of(&hex(key.trim())), expected, "key {key}");
            checked += 1;
        }
        assert!(checked >= 5, "only {checked} vectors found");
    }

    #[test]
    fn empty_key_is_the_minimum_token() {
        assert_eq!(token_of(&[]), MIN_TOKEN);
    }

    #[test]
    fn composite_keys_serialize_like_cassandra_composite_type() {
        let key = serialize_partition_key(&[Value::Int(1), Value::Text("ab".into())]);
        assert_eq!(key, vec![0, 4, 0, 0, 0, 1, 0, 0, 2, b'a', b'b', 0]);
        assert_eq!(serialize_partition_key(&[Value::Text("ab".into())]), b"ab".to_vec());
    }
}

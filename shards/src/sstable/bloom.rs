//! The bloom filter over an SSTable's partition keys (docs/FORMAT.md, "SSTable", bloom
//! section): sized from the expected partition count and the wanted false-positive rate, probed
//! by double hashing of the two 64-bit halves of MurmurHash3 x64-128 (seed 0) of the key bytes.
//! Pure: no I/O. It must never answer "absent" for a key that was inserted.

use wire::codec::{DecodeError, Reader};
use wire::token::murmur3_x64_128_cassandra;

use super::format::{verify_crc, Damage, CRC_LEN, SECTION_BLOOM};

/// Bound on the filter's bits (128 MiB of filter): an SSTable with more partitions than this
/// supports at its rate gets a filter capped here, and a higher false-positive rate.
pub const MAX_BLOOM_BITS: u64 = 1 << 30;

/// Smallest filter: one 64-bit word.
pub const MIN_BLOOM_BITS: u64 = 64;

/// Bound on the hash functions (k); about 20 is optimal for a 1e-6 rate already.
pub const MAX_BLOOM_HASHES: u32 = 30;

/// Bound on the bloom section: hash count u32 | bit count u64 | words | crc32c.
pub const MAX_BLOOM_SECTION_LEN: usize = 4 + 8 + (MAX_BLOOM_BITS / 8) as usize + CRC_LEN;

/// Fixed part of the section before the words.
const BLOOM_HEADER_LEN: usize = 12;

/// The two 64-bit halves of a key's MurmurHash3 that every filter probes with: computed once
/// per lookup, however many SSTables the key is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BloomHash {
    h1: u64,
    h2: u64,
}

impl BloomHash {
    pub fn of(key: &[u8]) -> BloomHash {
        let (h1, h2) = murmur3_x64_128_cassandra(key, 0);
        BloomHash { h1, h2 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BloomFilter {
    /// Bit i is bit (i % 64) of word i / 64.
    words: Vec<u64>,
    hashes: u32,
}

impl BloomFilter {
    /// A filter for `expected` keys (0 is treated as 1) at false-positive rate `fp_rate`
    /// (0 < rate < 1): m = -n ln p / (ln 2)^2 bits rounded up to whole words, k = m/n ln 2,
    /// both within their bounds.
    pub fn with_rate(expected: usize, fp_rate: f64) -> BloomFilter {
        let n = expected.max(1) as f64;
        let p = fp_rate.clamp(f64::MIN_POSITIVE, 0.999);
        let ln2 = std::f64::consts::LN_2;
        let ideal_bits = (-n * p.ln() / (ln2 * ln2)).ceil();
        let bits = if ideal_bits.is_finite() {
            (ideal_bits as u64).clamp(MIN_BLOOM_BITS, MAX_BLOOM_BITS)
        } else {
            MAX_BLOOM_BITS
        };
        let bits = bits.div_ceil(64) * 64;
        let hashes = ((bits as f64 / n) * ln2).round().clamp(1.0, f64::from(MAX_BLOOM_HASHES)) as u32;
        BloomFilter { words: vec![0; (bits / 64) as usize], hashes }
    }

    pub fn bit_count(&self) -> u64 {
        self.words.len() as u64 * 64
    }

    pub fn hash_count(&self) -> u32 {
        self.hashes
    }

    /// The bit positions of a key: h1 + i * h2 (mod m), i in 0..k (Kirsch and Mitzenmacher).
    fn positions(hash: BloomHash, hashes: u32, bits: u64) -> impl Iterator<Item = u64> {
        let BloomHash { h1, h2 } = hash;
        (0..u64::from(hashes)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % bits)
    }

    pub fn insert(&mut self, key: &[u8]) {
        for bit in Self::positions(BloomHash::of(key), self.hashes, self.bit_count()) {
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }

    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(BloomHash::of(key))
    }

    /// [`BloomFilter::may_contain`] for a key whose hash the caller computed once.
    pub fn may_contain_hash(&self, hash: BloomHash) -> bool {
        Self::positions(hash, self.hashes, self.bit_count())
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Heap bytes held.
    pub fn memory(&self) -> usize {
        self.words.len() * 8
    }

    pub fn encoded_len(&self) -> usize {
        BLOOM_HEADER_LEN + self.words.len() * 8 + CRC_LEN
    }

    /// The bloom section: hash count u32 | bit count u64 | words (u64 each) | crc32c.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.hashes.to_le_bytes());
        out.extend_from_slice(&self.bit_count().to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the section found at file offset `base`.
    pub fn decode(bytes: &[u8], base: u64) -> Result<BloomFilter, Damage> {
        let body = verify_crc(bytes, SECTION_BLOOM, base)?;
        let err = |e: DecodeError| Damage::decode(SECTION_BLOOM, base, e);
        let mut r = Reader::new(body);
        let hashes = r.u32().map_err(err)?;
        let bits = r.u64().map_err(err)?;
        if !(1..=MAX_BLOOM_HASHES).contains(&hashes) {
            return Err(Damage::new(
                SECTION_BLOOM,
                base,
                format!("hash count {hashes} outside 1..={MAX_BLOOM_HASHES}"),
            ));
        }
        if !(MIN_BLOOM_BITS..=MAX_BLOOM_BITS).contains(&bits) || !bits.is_multiple_of(64) {
            return Err(Damage::new(SECTION_BLOOM, base + 4, format!("bit count {bits} is not a valid filter size")));
        }
        // Bounded by MAX_BLOOM_BITS above, and checked against the bytes present below.
        let words = (bits / 64) as usize;
        if r.remaining() != words * 8 {
            return Err(Damage::new(
                SECTION_BLOOM,
                base,
                format!("{bits} bits need {} bytes, the section holds {}", words * 8, r.remaining()),
            ));
        }
        let words = r
            .take(words * 8)
            .map_err(err)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Ok(BloomFilter { words, hashes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    proptest! {
        #[test]
        fn bloom_round_trips_and_holds_its_keys(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..50), rate in 0.001f64..0.5) {
            let mut f = BloomFilter::with_rate(keys.len(), rate);
            keys.iter().for_each(|k| f.insert(k));
            let decoded = BloomFilter::decode(&f.encode(), 0).expect("decodes");
            prop_assert_eq!(&decoded, &f);
            for k in &keys {
                prop_assert!(decoded.may_contain(k));
                prop_assert!(decoded.may_contain_hash(BloomHash::of(k)), "a hash computed once probes the same bits");
            }
        }

        #[test]
        fn bloom_decoder_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BloomFilter::decode(&bytes, 0);
        }
    }

    #[test]
    fn false_positive_rate_is_near_the_setting() {
        let seed: u64 = rand::random();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut f = BloomFilter::with_rate(10_000, 0.01);
        for i in 0u64..10_000 {
            f.insert(&i.to_be_bytes());
        }
        let absent = 10_000;
        let hits = (0..absent).filter(|_| f.may_contain(&rng.gen_range(1u64 << 40..1 << 41).to_be_bytes())).count();
        let rate = hits as f64 / absent as f64;
        assert!(rate < 0.02, "false-positive rate {rate} (seed {seed})");
        // 1% needs about 9.6 bits and 7 hashes per key.
        assert_eq!(f.hash_count(), 7);
        assert!((95_000..=97_000).contains(&f.bit_count()), "{} bits", f.bit_count());
    }

    #[test]
    fn filter_size_is_capped() {
        let f = BloomFilter::with_rate(usize::MAX, 1e-9);
        assert_eq!(f.bit_count(), MAX_BLOOM_BITS);
        assert!(f.hash_count() >= 1);
        let tiny = BloomFilter::with_rate(0, 0.5);
        assert_eq!(tiny.bit_count(), MIN_BLOOM_BITS);
    }
}

//! Byte layout of WAL segments: the 4 KiB segment header and the record frame (docs/FORMAT.md,
//! "WAL segment"). Pure functions over byte slices; no I/O and no glommio here. Decoding never
//! trusts a length or a byte before its bound or checksum has been checked.

use std::fmt;

use super::Lsn;

/// Identifies a segment file; ids increase with creation order.
pub type SegmentId = u64;

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ENIGWAL\0";

/// The only format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// O_DIRECT block size: every write position and length is a multiple of it.
pub const BLOCK_SIZE: usize = 4096;

/// The segment header occupies the whole first block; records start right after it.
pub const SEGMENT_HEADER_SIZE: usize = BLOCK_SIZE;

/// Bytes of the header that carry fields (the rest of the block is zero).
const HEADER_FIELDS_LEN: usize = 40;

/// Offset of the header's crc32c (covers bytes `0..HEADER_FIELDS_LEN`).
const HEADER_CRC_OFFSET: usize = HEADER_FIELDS_LEN;

/// Fixed part of a record frame: crc32c u32 | payload length u32 | lsn u64.
pub const RECORD_HEADER_SIZE: usize = 16;

/// Every record starts at a multiple of this; frames are zero-padded up to it.
pub const RECORD_ALIGN: usize = 8;

/// Largest payload the frame can describe at all (the length field is a u32).
pub const MAX_FRAME_PAYLOAD: u64 = u32::MAX as u64;

/// Rounds `v` up to a multiple of `align` (a power of two).
pub const fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

/// Rounds `v` down to a multiple of `align` (a power of two).
pub const fn align_down(v: u64, align: u64) -> u64 {
    v & !(align - 1)
}

/// The decoded fields of a segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub segment_id: SegmentId,
    /// LSN of the first record this segment holds (or will hold).
    pub first_lsn: Lsn,
    /// Creation time, microseconds since the Unix epoch (informational).
    pub created_at_micros: u64,
}

/// Why a segment header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderDamage {
    /// Fewer than [`SEGMENT_HEADER_SIZE`] bytes.
    TooShort {
        len: usize,
    },
    /// The whole header block is zero: the file was created but its header never written.
    AllZero,
    BadMagic,
    /// A version this code does not know; checked before the checksum so that a newer layout
    /// is reported as such rather than as damage.
    UnsupportedVersion(u16),
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
    /// Reserved bytes (10..16 and 44..4096) must be zero in version 1.
    NonZeroReserved,
    /// LSNs start at 1.
    ZeroFirstLsn,
}

impl fmt::Display for HeaderDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderDamage::TooShort { len } => {
                write!(f, "file holds {len} bytes, less than the {SEGMENT_HEADER_SIZE}-byte header")
            }
            HeaderDamage::AllZero => write!(f, "header block is all zero"),
            HeaderDamage::BadMagic => write!(f, "bad magic"),
            HeaderDamage::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            HeaderDamage::ChecksumMismatch { stored, computed } => {
                write!(f, "header crc32c {stored:#010x} != computed {computed:#010x}")
            }
            HeaderDamage::NonZeroReserved => write!(f, "reserved header bytes are not zero"),
            HeaderDamage::ZeroFirstLsn => write!(f, "first lsn is 0"),
        }
    }
}

impl SegmentHeader {
    /// Encodes the full header block ([`SEGMENT_HEADER_SIZE`] bytes, zero after the fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut block = vec![0u8; SEGMENT_HEADER_SIZE];
        block[0..8].copy_from_slice(&SEGMENT_MAGIC);
        block[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 10..16 reserved, zero.
        block[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        block[24..32].copy_from_slice(&self.first_lsn.to_le_bytes());
        block[32..40].copy_from_slice(&self.created_at_micros.to_le_bytes());
        let crc = crc32c::crc32c(&block[..HEADER_FIELDS_LEN]);
        block[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        block
    }

    /// Decodes the header from the start of a segment file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderDamage> {
        if bytes.len() < SEGMENT_HEADER_SIZE {
            return Err(HeaderDamage::TooShort { len: bytes.len() });
        }
        let block = &bytes[..SEGMENT_HEADER_SIZE];
        if block.iter().all(|b| *b == 0) {
            return Err(HeaderDamage::AllZero);
        }
        if block[0..8] != SEGMENT_MAGIC {
            return Err(HeaderDamage::BadMagic);
        }
        let version = u16::from_le_bytes([block[8], block[9]]);
        if version != FORMAT_VERSION {
            return Err(HeaderDamage::UnsupportedVersion(version));
        }
        let stored = read_u32(block, HEADER_CRC_OFFSET);
        let computed = crc32c::crc32c(&block[..HEADER_FIELDS_LEN]);
        if stored != computed {
            return Err(HeaderDamage::ChecksumMismatch { stored, computed });
        }
        let reserved_zero =
            block[10..16].iter().all(|b| *b == 0) && block[HEADER_CRC_OFFSET + 4..].iter().all(|b| *b == 0);
        if !reserved_zero {
            return Err(HeaderDamage::NonZeroReserved);
        }
        let header = SegmentHeader {
            segment_id: read_u64(block, 16),
            first_lsn: read_u64(block, 24),
            created_at_micros: read_u64(block, 32),
        };
        if header.first_lsn == 0 {
            return Err(HeaderDamage::ZeroFirstLsn);
        }
        Ok(header)
    }
}

/// Bytes one record occupies in a segment: header, payload, zero padding to [`RECORD_ALIGN`].
pub const fn framed_len(payload_len: usize) -> usize {
    align_up((RECORD_HEADER_SIZE + payload_len) as u64, RECORD_ALIGN as u64) as usize
}

/// Appends the frame of one record (with its zero padding) to `out`.
///
/// The caller guarantees `payload.len() <= MAX_FRAME_PAYLOAD` (the WAL checks its much smaller
/// configured limit before framing).
pub fn encode_record(lsn: Lsn, payload: &[u8], out: &mut Vec<u8>) {
    assert!(payload.len() as u64 <= MAX_FRAME_PAYLOAD, "payload exceeds the frame's u32 length");
    let len = payload.len() as u32;
    let start = out.len();
    out.extend_from_slice(&[0u8; 4]); // crc, filled below
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + framed_len(payload.len()), 0);
}

/// What sits at one record position.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A record whose checksum matches. `framed_len` includes the padding.
    Record { lsn: Lsn, payload: &'a [u8], framed_len: usize },
    /// An all-zero record header, or fewer than 16 bytes left and all of them zero: the clean end
    /// of the written part of a segment.
    End,
    /// Anything else.
    Damaged(RecordDamage),
}

/// Why the bytes at a record position are not a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordDamage {
    /// Fewer than [`RECORD_HEADER_SIZE`] bytes left, not all zero.
    PartialHeader {
        available: usize,
    },
    /// The payload length runs past the end of the segment's bytes.
    PayloadPastEnd {
        len: u32,
        available: usize,
    },
    ChecksumMismatch {
        stored: u32,
        computed: u32,
    },
}

impl fmt::Display for RecordDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordDamage::PartialHeader { available } => {
                write!(f, "partial record header ({available} bytes left)")
            }
            RecordDamage::PayloadPastEnd { len, available } => {
                write!(f, "payload length {len} runs past the end ({available} bytes left)")
            }
            RecordDamage::ChecksumMismatch { stored, computed } => {
                write!(f, "record crc32c {stored:#010x} != computed {computed:#010x}")
            }
        }
    }
}

/// Decodes the record that starts at `bytes[0]` (the rest of the segment follows it).
pub fn decode_record(bytes: &[u8]) -> Decoded<'_> {
    if bytes.len() < RECORD_HEADER_SIZE {
        return if bytes.iter().all(|b| *b == 0) {
            Decoded::End
        } else {
            Decoded::Damaged(RecordDamage::PartialHeader { available: bytes.len() })
        };
    }
    let header = &bytes[..RECORD_HEADER_SIZE];
    if header.iter().all(|b| *b == 0) {
        return Decoded::End;
    }
    let stored = read_u32(header, 0);
    let len = read_u32(header, 4);
    let lsn = read_u64(header, 8);
    let available = bytes.len() - RECORD_HEADER_SIZE;
    if len as usize > available {
        return Decoded::Damaged(RecordDamage::PayloadPastEnd { len, available });
    }
    let covered = &bytes[4..RECORD_HEADER_SIZE + len as usize];
    let computed = crc32c::crc32c(covered);
    if stored != computed {
        return Decoded::Damaged(RecordDamage::ChecksumMismatch { stored, computed });
    }
    Decoded::Record {
        lsn,
        payload: &bytes[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + len as usize],
        // Padding may run past the end only at the very end of the bytes; clamp so callers can
        // always advance by it.
        framed_len: framed_len(len as usize).min(bytes.len()),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(id: u64, first: u64, at: u64) -> SegmentHeader {
        SegmentHeader { segment_id: id, first_lsn: first, created_at_micros: at }
    }

    proptest! {
        #[test]
        fn segment_header_round_trips(id in any::<u64>(), first in 1..u64::MAX, at in any::<u64>()) {
            let h = header(id, first, at);
            let block = h.encode();
            prop_assert_eq!(block.len(), SEGMENT_HEADER_SIZE);
            prop_assert_eq!(SegmentHeader::decode(&block), Ok(h));
        }

        #[test]
        fn segment_header_detects_any_flipped_bit(bit in 0usize..(SEGMENT_HEADER_SIZE * 8)) {
            let mut block = header(7, 42, 1_700_000_000_000_000).encode();
            block[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(SegmentHeader::decode(&block).is_err());
        }

        #[test]
        fn records_round_trip_in_sequence(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20),
            first in 1..u64::MAX / 2,
        ) {
            let mut bytes = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                let before = bytes.len();
                encode_record(first + i as u64, p, &mut bytes);
                prop_assert_eq!(bytes.len() - before, framed_len(p.len()));
                prop_assert_eq!(bytes.len() % RECORD_ALIGN, 0);
            }
            bytes.extend_from_slice(&[0u8; 64]);
            let mut at = 0;
            for (i, p) in payloads.iter().enumerate() {
                match decode_record(&bytes[at..]) {
                    Decoded::Record { lsn, payload, framed_len: n } => {
                        prop_assert_eq!(lsn, first + i as u64);
                        prop_assert_eq!(payload, &p[..]);
                        at += n;
                    }
                    other => prop_assert!(false, "record {} decoded as {:?}", i, other),
                }
            }
            prop_assert_eq!(decode_record(&bytes[at..]), Decoded::End);
        }

        #[test]
        fn record_detects_any_flipped_bit_in_its_frame(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            seed in any::<usize>(),
        ) {
            let mut bytes = Vec::new();
            encode_record(9, &payload, &mut bytes);
            let covered_bits = (RECORD_HEADER_SIZE + payload.len()) * 8;
            let bit = seed % covered_bits;
            bytes[bit / 8] ^= 1 << (bit % 8);
            bytes.extend_from_slice(&[0u8; 512]);
            match decode_record(&bytes) {
                Decoded::Record { lsn, payload: got, .. } => {
                    prop_assert!(false, "flipped bit {} accepted as lsn {} len {}", bit, lsn, got.len());
                }
                Decoded::End => prop_assert!(false, "flipped bit {} read as end", bit),
                Decoded::Damaged(_) => {}
            }
        }

        #[test]
        fn truncated_record_is_damaged_not_accepted(
            payload in proptest::collection::vec(1u8..=255, 1..200),
            cut_seed in any::<usize>(),
        ) {
            let mut bytes = Vec::new();
            encode_record(3, &payload, &mut bytes);
            let cut = 1 + cut_seed % (RECORD_HEADER_SIZE + payload.len() - 1);
            let prefix = &bytes[..cut];
            match decode_record(prefix) {
                Decoded::Record { .. } => prop_assert!(false, "record cut at {} accepted", cut),
                // A prefix made only of the checksum's zero bytes carries nothing of the record:
                // it cannot be told from the clean end, and reading it as the end loses nothing
                // acknowledged (the record was not whole, so never acknowledged).
                Decoded::End => prop_assert!(prefix.iter().all(|b| *b == 0), "cut at {} read as end", cut),
                Decoded::Damaged(_) => {}
            }
        }
    }

    #[test]
    fn header_refuses_each_kind_of_damage() {
        let good = header(3, 100, 5).encode();

        assert_eq!(SegmentHeader::decode(&good[..100]), Err(HeaderDamage::TooShort { len: 100 }));
        assert_eq!(SegmentHeader::decode(&vec![0u8; SEGMENT_HEADER_SIZE]), Err(HeaderDamage::AllZero));

        let mut magic = good.clone();
        magic[0] = b'X';
        assert_eq!(SegmentHeader::decode(&magic), Err(HeaderDamage::BadMagic));

        let mut version = good.clone();
        version[8..10].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&version), Err(HeaderDamage::UnsupportedVersion(2)));

        let mut field = good.clone();
        field[20] ^= 0xFF;
        assert!(matches!(SegmentHeader::decode(&field), Err(HeaderDamage::ChecksumMismatch { .. })));

        let mut reserved = good.clone();
        reserved[1000] = 1;
        assert_eq!(SegmentHeader::decode(&reserved), Err(HeaderDamage::NonZeroReserved));

        assert_eq!(SegmentHeader::decode(&header(3, 0, 5).encode()), Err(HeaderDamage::ZeroFirstLsn));
    }

    #[test]
    fn record_refuses_each_kind_of_damage() {
        let mut frame = Vec::new();
        encode_record(5, b"hello wal", &mut frame);

        assert_eq!(decode_record(&[0u8; 16]), Decoded::End);
        assert_eq!(decode_record(&[0u8; 8]), Decoded::End);
        assert_eq!(decode_record(&[]), Decoded::End);
        assert_eq!(decode_record(&frame[..10]), Decoded::Damaged(RecordDamage::PartialHeader { available: 10 }));
        assert!(matches!(
            decode_record(&frame[..20]),
            Decoded::Damaged(RecordDamage::PayloadPastEnd { len: 9, available: 4 })
        ));

        let mut huge = frame.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_record(&huge), Decoded::Damaged(RecordDamage::PayloadPastEnd { .. })));

        let mut payload = frame.clone();
        payload[RECORD_HEADER_SIZE] ^= 1;
        assert!(matches!(decode_record(&payload), Decoded::Damaged(RecordDamage::ChecksumMismatch { .. })));

        let mut lsn = frame.clone();
        lsn[8] ^= 1;
        assert!(matches!(decode_record(&lsn), Decoded::Damaged(RecordDamage::ChecksumMismatch { .. })));
    }

    #[test]
    fn frame_layout_is_little_endian_and_padded() {
        let mut frame = Vec::new();
        encode_record(0x0102_0304_0506_0708, b"abc", &mut frame);
        assert_eq!(frame.len(), 24);
        assert_eq!(&frame[4..8], &[3, 0, 0, 0]);
        assert_eq!(&frame[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&frame[16..19], b"abc");
        assert_eq!(&frame[19..], &[0u8; 5]);
        assert_eq!(&frame[0..4], &crc32c::crc32c(&frame[4..19]).to_le_bytes());
    }
}

//! Paging state: where a SELECT's page ended, handed to the client and back, opaque to it.
//! Versioned and checksummed, because it comes back from outside: a damaged or forged state is
//! an invalid-request error, never a wrong page. Pure logic, no I/O.

use wire::codec::{Reader, Writer};

/// Format version of the encoding below.
const PAGING_VERSION: u8 = 1;
/// Largest key a paging state may carry (partition keys and clustering keys are far smaller).
const MAX_KEY_BYTES: usize = 64 * 1024;

/// Where the next page starts: after the row (`clustering` of partition `partition`), or after
/// the whole partition when `clustering` is None; and how many rows LIMIT still allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagingState {
    /// Serialized partition key (the engine's `PartitionKey` bytes).
    pub partition: Vec<u8>,
    /// Encoded clustering key of the last row returned, when the page ended inside it.
    pub clustering: Option<Vec<u8>>,
    /// Rows LIMIT still allows after this page; None without LIMIT.
    pub remaining: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid paging state: {0}")]
pub struct PagingError(String);

impl PagingState {
    /// version u8 | flags u8 (1 = clustering, 2 = remaining) | partition bytes |
    /// [clustering bytes] | [remaining u64] | crc32c u32 of everything before it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let flags = u8::from(self.clustering.is_some()) | (u8::from(self.remaining.is_some()) << 1);
        w.u8(PAGING_VERSION).u8(flags).bytes(&self.partition);
        if let Some(c) = &self.clustering {
            w.bytes(c);
        }
        if let Some(n) = self.remaining {
            w.u64(n);
        }
        let mut out = w.into_bytes();
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<PagingState, PagingError> {
        let bad = |why: &str| PagingError(why.to_owned());
        if bytes.len() < 6 {
            return Err(bad("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(bad("checksum mismatch (pass the paging state exactly as the server sent it)"));
        }
        let mut r = Reader::new(body);
        let decode_err = |e: wire::DecodeError| PagingError(e.to_string());
        let version = r.u8().map_err(decode_err)?;
        if version != PAGING_VERSION {
            return Err(PagingError(format!("version {version} is not {PAGING_VERSION}")));
        }
        let flags = r.u8().map_err(decode_err)?;
        if flags & !3 != 0 {
            return Err(PagingError(format!("unknown flags {flags:#04x}")));
        }
        let partition = r.bytes_limited(MAX_KEY_BYTES).map_err(decode_err)?.to_vec();
        let clustering = match flags & 1 != 0 {
            true => Some(r.bytes_limited(MAX_KEY_BYTES).map_err(decode_err)?.to_vec()),
            false => None,
        };
        let remaining = match flags & 2 != 0 {
            true => Some(r.u64().map_err(decode_err)?),
            false => None,
        };
        r.finish().map_err(decode_err)?;
        Ok(PagingState { partition, clustering, remaining })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn paging_state_round_trips(
            partition in proptest::collection::vec(any::<u8>(), 0..64),
            clustering in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            remaining in proptest::option::of(any::<u64>()),
        ) {
            let state = PagingState { partition, clustering, remaining };
            prop_assert_eq!(PagingState::decode(&state.encode()), Ok(state));
        }

        #[test]
        fn damaged_paging_states_are_rejected(
            partition in proptest::collection::vec(any::<u8>(), 0..16),
            at in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let mut bytes = PagingState { partition, clustering: None, remaining: Some(7) }.encode();
            let i = at.index(bytes.len());
            bytes[i] ^= flip;
            prop_assert!(PagingState::decode(&bytes).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = PagingState::decode(&bytes);
        }
    }
}

//! Body compression (spec section 5). Only lz4 is offered: a compressed body is the
//! uncompressed length as a 4-byte big-endian [int], then one raw LZ4 block (no LZ4 frame
//! format). Snappy is not offered; a STARTUP asking for it is the server's to refuse.

/// LZ4 cannot expand data by more than about 255 times (one token byte can stand for at most
/// 255 + 19 bytes of a match, but a block always costs a few bytes more): a declared length
/// above `255 * compressed + 64` is refused before anything is allocated.
const LZ4_MAX_RATIO: usize = 255;
const LZ4_SLACK: usize = 64;

/// A compression algorithm a STARTUP can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Lz4,
}

impl Compression {
    /// The STARTUP `COMPRESSION` value (lower case, as drivers send it).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
        }
    }

    /// The algorithm a STARTUP `COMPRESSION` value names (case-insensitive), if offered.
    pub fn from_name(name: &str) -> Option<Compression> {
        name.eq_ignore_ascii_case("lz4").then_some(Compression::Lz4)
    }

    /// Compresses `body`.
    pub fn compress(self, body: &[u8]) -> Vec<u8> {
        match self {
            Compression::Lz4 => {
                debug_assert!(body.len() <= i32::MAX as usize);
                let block = lz4_flex::block::compress(body);
                let mut out = Vec::with_capacity(4 + block.len());
                out.extend_from_slice(&(body.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
                out
            }
        }
    }

    /// Decompresses `body`, refusing (before allocating) a declared length above `max_len`
    /// or above what the compressed bytes could possibly expand to.
    pub fn decompress(self, body: &[u8], max_len: usize) -> Result<Vec<u8>, CompressionError> {
        match self {
            Compression::Lz4 => {
                let Some((len, block)) = body.split_first_chunk::<4>() else {
                    return Err(CompressionError::Truncated { len: body.len() });
                };
                let declared = i32::from_be_bytes(*len);
                let Ok(declared) = usize::try_from(declared) else {
                    return Err(CompressionError::NegativeLength { declared });
                };
                let reachable = block.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(LZ4_SLACK);
                if declared > max_len || declared > reachable {
                    return Err(CompressionError::TooLarge { declared, limit: max_len.min(reachable) });
                }
                let mut out = vec![0u8; declared];
                let written = lz4_flex::block::decompress_into(block, &mut out)
                    .map_err(|e| CompressionError::Corrupt { detail: e.to_string() })?;
                if written != declared {
                    return Err(CompressionError::LengthMismatch { declared, actual: written });
                }
                Ok(out)
            }
        }
    }
}

/// Why a compressed body could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    #[error("compressed body of {len} bytes is shorter than its 4-byte length")]
    Truncated { len: usize },
    #[error("compressed body declares a negative length {declared}")]
    NegativeLength { declared: i32 },
    #[error("compressed body declares {declared} bytes, above the limit of {limit}")]
    TooLarge { declared: usize, limit: usize },
    #[error("corrupt lz4 block: {detail}")]
    Corrupt { detail: String },
    #[error("lz4 block holds {actual} bytes, not the {declared} declared")]
    LengthMismatch { declared: usize, actual: usize },
}

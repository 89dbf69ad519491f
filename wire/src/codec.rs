//! A tiny little-endian binary codec shared by every EnigmaDB encoding (schemas, mutations,
//! frames). The reader trusts no length: every read is bounds-checked and fails with a typed
//! [`DecodeError`], never a panic.

/// Why a byte sequence could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated input: needed {needed} more bytes at offset {offset}")]
    Truncated { offset: usize, needed: usize },
    #[error("length {len} at offset {offset} exceeds the limit {limit}")]
    TooLong { offset: usize, len: usize, limit: usize },
    #[error("invalid {what} at offset {offset}: {detail}")]
    Invalid { offset: usize, what: &'static str, detail: String },
    #[error("{extra} trailing bytes after the end of the encoding")]
    Trailing { extra: usize },
}

/// Largest byte string or text a single length prefix may announce (a bound, not a typical size).
pub const MAX_FIELD_LEN: usize = 256 * 1024 * 1024;

/// Appends little-endian fields to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }
    pub fn with_buffer(buf: Vec<u8>) -> Self {
        Writer { buf }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.u64(v as u64)
    }
    /// A byte string with a u32 length prefix.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= MAX_FIELD_LEN);
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads little-endian fields from a byte slice, bounds-checking every step.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn offset(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { offset: self.pos, needed: n - self.remaining() });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(self.u64()? as i64)
    }
    /// A byte string with a u32 length prefix, at most `limit` bytes long. A length past the
    /// end of the input is truncation, whatever the limit: the usual case of a corrupt or
    /// hostile length, reported as such rather than against a bound the reader never reached.
    pub fn bytes_limited(&mut self, limit: usize) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = self.u32()? as usize;
        if len > self.remaining() {
            return Err(DecodeError::Truncated { offset: self.pos, needed: len - self.remaining() });
        }
        if len > limit {
            return Err(DecodeError::TooLong { offset: at, len, limit });
        }
        self.take(len)
    }
    /// A byte string with a u32 length prefix, at most [`MAX_FIELD_LEN`] bytes long.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        self.bytes_limited(MAX_FIELD_LEN)
    }
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let raw = self.bytes()?;
        std::str::from_utf8(raw).map_err(|e| DecodeError::Invalid {
            offset: at,
            what: "utf-8 text",
            detail: e.to_string(),
        })
    }
    /// A count of items that follow, refused when the remaining input cannot possibly hold
    /// that many items of at least `min_item_size` bytes (so a corrupt count cannot make a
    /// decoder reserve gigabytes).
    pub fn count(&mut self, min_item_size: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.u32()? as usize;
        self.check_count(at, n, min_item_size)
    }

    /// As [`Reader::count`], for a count encoded as a u16.
    pub fn count_u16(&mut self, min_item_size: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = usize::from(self.u16()?);
        self.check_count(at, n, min_item_size)
    }

    fn check_count(&self, at: usize, n: usize, min_item_size: usize) -> Result<usize, DecodeError> {
        let limit = self.remaining() / min_item_size.max(1);
        if n > limit {
            return Err(DecodeError::TooLong { offset: at, len: n, limit });
        }
        Ok(n)
    }
    pub fn invalid(&self, what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid { offset: self.pos, what, detail: detail.into() }
    }
    /// Succeeds only when every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { extra }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_past_the_end_is_truncation_not_a_bound() {
        let mut w = Writer::new();
        w.u32(u32::MAX).u8(1);
        let bytes = w.into_bytes();
        let err = Reader::new(&bytes).bytes().unwrap_err();
        assert_eq!(err, DecodeError::Truncated { offset: 4, needed: u32::MAX as usize - 1 });
        assert!(!err.to_string().contains("268435456"), "{err}");
    }

    #[test]
    fn fields_round_trip_and_truncation_is_typed() {
        let mut w = Writer::new();
        w.u8(7).u16(300).u32(70000).u64(u64::MAX).i64(-5).str("héllo").bytes(&[1, 2, 3]);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 300);
        assert_eq!(r.u32().unwrap(), 70000);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.str().unwrap(), "héllo");
        assert_eq!(r.bytes().unwrap(), &[1, 2, 3]);
        r.finish().unwrap();
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let res = (|| {
                r.u8()?;
                r.u16()?;
                r.u32()?;
                r.u64()?;
                r.i64()?;
                r.str()?;
                r.bytes()?;
                Ok::<_, DecodeError>(())
            })();
            assert!(matches!(res, Err(DecodeError::Truncated { .. })), "cut at {cut}: {res:?}");
        }
    }

    #[test]
    fn absurd_counts_are_refused_before_allocation() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let bytes = w.into_bytes();
        assert!(matches!(Reader::new(&bytes).count(1), Err(DecodeError::TooLong { .. })));
        let mut w = Writer::new();
        w.u16(3).u16(0);
        let bytes = w.into_bytes();
        assert!(matches!(Reader::new(&bytes).count_u16(1), Err(DecodeError::TooLong { len: 3, limit: 2, .. })));
        let mut w = Writer::new();
        w.u16(2).u16(0);
        let bytes = w.into_bytes();
        assert_eq!(Reader::new(&bytes).count_u16(1), Ok(2));
    }
}

//! The notation types of the CQL native protocol v4 (spec section 3), big endian: a [`Reader`]
//! that bounds-checks every step and never reserves memory for a count or a length the bytes
//! left cannot hold, and a [`Writer`] that never fails.
//!
//! Encoding is infallible by design: a [string] longer than 65535 bytes is cut at a character
//! boundary, and a [short]-counted list longer than 65535 items keeps its first 65535 items, so
//! the bytes written are always self-consistent. Neither happens for any message within a
//! frame limit that a server or a client builds on purpose.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::codec::DecodeError;

/// Most nested levels of a column type (`list<map<int, frozen<tuple<...>>>>`): a bound on the
/// decoder's recursion, far above any real schema.
pub const MAX_TYPE_DEPTH: usize = 32;

/// A 16-byte uuid ([uuid]), kept as its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

/// A [value]: bytes, null (length -1) or "not set" (length -2: leave the column alone).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Bytes(Vec<u8>),
    Null,
    NotSet,
}

/// A [consistency] level. Codes are the spec's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Consistency {
    Any,
    #[default]
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    Serial,
    LocalSerial,
    LocalOne,
}

impl Consistency {
    pub const ALL: [Consistency; 11] = [
        Consistency::Any,
        Consistency::One,
        Consistency::Two,
        Consistency::Three,
        Consistency::Quorum,
        Consistency::All,
        Consistency::LocalQuorum,
        Consistency::EachQuorum,
        Consistency::Serial,
        Consistency::LocalSerial,
        Consistency::LocalOne,
    ];

    pub fn code(self) -> u16 {
        match self {
            Consistency::Any => 0x0000,
            Consistency::One => 0x0001,
            Consistency::Two => 0x0002,
            Consistency::Three => 0x0003,
            Consistency::Quorum => 0x0004,
            Consistency::All => 0x0005,
            Consistency::LocalQuorum => 0x0006,
            Consistency::EachQuorum => 0x0007,
            Consistency::Serial => 0x0008,
            Consistency::LocalSerial => 0x0009,
            Consistency::LocalOne => 0x000A,
        }
    }

    pub fn from_code(code: u16) -> Option<Consistency> {
        Consistency::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The CQL name (`LOCAL_QUORUM`), as cqlsh's `CONSISTENCY` and error messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::Any => "ANY",
            Consistency::One => "ONE",
            Consistency::Two => "TWO",
            Consistency::Three => "THREE",
            Consistency::Quorum => "QUORUM",
            Consistency::All => "ALL",
            Consistency::LocalQuorum => "LOCAL_QUORUM",
            Consistency::EachQuorum => "EACH_QUORUM",
            Consistency::Serial => "SERIAL",
            Consistency::LocalSerial => "LOCAL_SERIAL",
            Consistency::LocalOne => "LOCAL_ONE",
        }
    }
}

/// A string map ([string map]) in wire order (duplicates kept as sent).
pub type StringMap = Vec<(String, String)>;
/// A string multimap ([string multimap]) in wire order.
pub type StringMultimap = Vec<(String, Vec<String>)>;
/// A bytes map ([bytes map]) in wire order; a value may be null.
pub type BytesMap = Vec<(String, Option<Vec<u8>>)>;

/// Reads the notation types from a byte slice, big endian, bounds-checking every step.
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
    /// The bytes not read yet, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
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
    pub fn invalid(&self, at: usize, what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid { offset: at, what, detail: detail.into() }
    }
    /// Succeeds only when every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { extra }),
        }
    }

    /// [byte]
    pub fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// [short]: unsigned.
    pub fn short(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    /// [int]
    pub fn int(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    /// [long]
    pub fn long(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    /// [uuid]
    pub fn uuid(&mut self) -> Result<Uuid, DecodeError> {
        Ok(Uuid(self.array()?))
    }

    fn utf8(&self, at: usize, raw: &'a [u8]) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(raw).map_err(|e| self.invalid(at, "utf-8 string", e.to_string()))
    }
    /// [string]: a [short] length, then UTF-8.
    pub fn string(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let len = usize::from(self.short()?);
        let raw = self.take(len)?;
        self.utf8(at, raw)
    }
    /// [long string]: an [int] length, then UTF-8. A negative length is invalid.
    pub fn long_string(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let len = self.int()?;
        let len = usize::try_from(len).map_err(|_| self.invalid(at, "long string length", format!("{len} < 0")))?;
        let raw = self.take(len)?;
        self.utf8(at, raw)
    }
    /// A count of items that follow, refused when the bytes left cannot hold that many items
    /// of at least `min_item_size` bytes: no decoder reserves memory for a hostile count.
    pub fn check_count(&self, at: usize, n: usize, min_item_size: usize) -> Result<usize, DecodeError> {
        let limit = self.remaining() / min_item_size.max(1);
        if n > limit {
            return Err(DecodeError::TooLong { offset: at, len: n, limit });
        }
        Ok(n)
    }
    /// A [short] count of items of at least `min_item_size` bytes each.
    pub fn short_count(&mut self, min_item_size: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = usize::from(self.short()?);
        self.check_count(at, n, min_item_size)
    }
    /// An [int] count (negative is invalid) of items of at least `min_item_size` bytes each.
    pub fn int_count(&mut self, what: &'static str, min_item_size: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.int()?;
        let n = usize::try_from(n).map_err(|_| self.invalid(at, what, format!("negative count {n}")))?;
        self.check_count(at, n, min_item_size)
    }
    /// Reads `n` items with `read`, into a vector reserved once (`n` was checked against the
    /// bytes left, so the reservation is bounded by the input).
    pub fn items<T>(
        &mut self,
        n: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(read(self)?);
        }
        Ok(out)
    }
    /// [string list]
    pub fn string_list(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.short_count(2)?;
        self.items(n, |r| r.string().map(str::to_owned))
    }
    /// [bytes]: `None` for a negative length (null).
    pub fn bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        let len = self.int()?;
        match usize::try_from(len) {
            Ok(len) => self.take(len).map(Some),
            Err(_) => Ok(None),
        }
    }
    /// [value]: -1 is null, -2 "not set", any other negative length is invalid.
    pub fn value(&mut self) -> Result<Value, DecodeError> {
        let at = self.pos;
        match self.int()? {
            -1 => Ok(Value::Null),
            -2 => Ok(Value::NotSet),
            len if len < 0 => Err(self.invalid(at, "value length", format!("{len} (below -2)"))),
            len => Ok(Value::Bytes(self.take(len as usize)?.to_vec())),
        }
    }
    /// [short bytes]
    pub fn short_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.short()?);
        self.take(len)
    }
    /// [inetaddr]: a [byte] size (4 or 16), then the address.
    pub fn inetaddr(&mut self) -> Result<IpAddr, DecodeError> {
        let at = self.pos;
        match self.byte()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            16 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            n => Err(self.invalid(at, "inet address size", format!("{n} (expected 4 or 16)"))),
        }
    }
    /// [inet]: an [inetaddr], then the port as an [int] (0..=65535).
    pub fn inet(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = self.inetaddr()?;
        let at = self.pos;
        let port = self.int()?;
        let port = u16::try_from(port).map_err(|_| self.invalid(at, "inet port", format!("{port}")))?;
        Ok(SocketAddr::new(ip, port))
    }
    /// [consistency]
    pub fn consistency(&mut self) -> Result<Consistency, DecodeError> {
        let at = self.pos;
        let code = self.short()?;
        Consistency::from_code(code).ok_or_else(|| self.invalid(at, "consistency", format!("unknown code {code:#06x}")))
    }
    /// [string map]
    pub fn string_map(&mut self) -> Result<StringMap, DecodeError> {
        let n = self.short_count(4)?;
        self.items(n, |r| Ok((r.string()?.to_owned(), r.string()?.to_owned())))
    }
    /// [string multimap]
    pub fn string_multimap(&mut self) -> Result<StringMultimap, DecodeError> {
        let n = self.short_count(4)?;
        self.items(n, |r| Ok((r.string()?.to_owned(), r.string_list()?)))
    }
    /// [bytes map]
    pub fn bytes_map(&mut self) -> Result<BytesMap, DecodeError> {
        let n = self.short_count(6)?;
        self.items(n, |r| Ok((r.string()?.to_owned(), r.bytes()?.map(<[u8]>::to_vec))))
    }
}

/// Appends the notation types to a byte buffer, big endian. Never fails (see the module doc).
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// Writes after the bytes already in `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }
}

impl Writer<'_> {
    fn buf(&mut self) -> &mut Vec<u8> {
        self.out
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf().extend_from_slice(v);
        self
    }
    pub fn byte(&mut self, v: u8) -> &mut Self {
        self.buf().push(v);
        self
    }
    pub fn short(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub fn int(&mut self, v: i32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub fn long(&mut self, v: i64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub fn uuid(&mut self, v: Uuid) -> &mut Self {
        self.raw(&v.0)
    }
    /// A [short] count for `len` items: at most 65535 (callers write that many).
    fn short_len(&mut self, len: usize) -> usize {
        let n = len.min(usize::from(u16::MAX));
        self.short(n as u16);
        n
    }
    /// [string]; cut at a character boundary past 65535 bytes.
    pub fn string(&mut self, v: &str) -> &mut Self {
        let mut end = v.len().min(usize::from(u16::MAX));
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        self.short(end as u16).raw(&v.as_bytes()[..end])
    }
    /// [long string]
    pub fn long_string(&mut self, v: &str) -> &mut Self {
        self.int_len(v.len()).raw(v.as_bytes())
    }
    fn int_len(&mut self, len: usize) -> &mut Self {
        debug_assert!(len <= i32::MAX as usize, "no frame holds {len} bytes");
        self.int(len as i32)
    }
    /// [string list]
    pub fn string_list<S: AsRef<str>>(&mut self, v: &[S]) -> &mut Self {
        let n = self.short_len(v.len());
        v[..n].iter().for_each(|s| {
            self.string(s.as_ref());
        });
        self
    }
    /// [bytes]; `None` is null (length -1).
    pub fn bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => self.int_len(v.len()).raw(v),
            None => self.int(-1),
        }
    }
    /// [value]
    pub fn value(&mut self, v: &Value) -> &mut Self {
        match v {
            Value::Bytes(b) => self.bytes(Some(b)),
            Value::Null => self.int(-1),
            Value::NotSet => self.int(-2),
        }
    }
    /// [short bytes]; cut past 65535 bytes.
    pub fn short_bytes(&mut self, v: &[u8]) -> &mut Self {
        let n = self.short_len(v.len());
        self.raw(&v[..n])
    }
    /// [inetaddr]
    pub fn inetaddr(&mut self, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(v4) => self.byte(4).raw(&v4.octets()),
            IpAddr::V6(v6) => self.byte(16).raw(&v6.octets()),
        }
    }
    /// [inet]
    pub fn inet(&mut self, addr: SocketAddr) -> &mut Self {
        self.inetaddr(addr.ip()).int(i32::from(addr.port()))
    }
    /// [consistency]
    pub fn consistency(&mut self, c: Consistency) -> &mut Self {
        self.short(c.code())
    }
    /// [string map]
    pub fn string_map(&mut self, map: &[(String, String)]) -> &mut Self {
        let n = self.short_len(map.len());
        for (k, v) in &map[..n] {
            self.string(k).string(v);
        }
        self
    }
    /// [string multimap]
    pub fn string_multimap(&mut self, map: &[(String, Vec<String>)]) -> &mut Self {
        let n = self.short_len(map.len());
        for (k, v) in &map[..n] {
            self.string(k).string_list(v);
        }
        self
    }
    /// [bytes map]
    pub fn bytes_map(&mut self, map: &[(String, Option<Vec<u8>>)]) -> &mut Self {
        let n = self.short_len(map.len());
        for (k, v) in &map[..n] {
            self.string(k).bytes(v.as_deref());
        }
        self
    }
}

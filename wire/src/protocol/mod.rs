//! Messages of the EnigmaDB client protocol: requests, responses, results and typed errors,
//! and their body encodings (frames carry them; see `frame`). Pure encode/decode: no I/O, no
//! query semantics (the server decides what a statement means). Layout: docs/PROTOCOL.md.

mod admin;
mod auth;
mod repair;
mod request;
mod response;
mod topology;

pub use admin::{
    display_host_id, AdminDone, AdminRequest, AdminResult, CleanedTable, EffectiveOwnership, LeaveDone, Liveness,
    MemoryBudgets, Netstats, NodeInfo, NodeStatus, RingEntry, RingState, ShardInfo, StreamPeer, TableStats,
    MAX_ADMIN_ITEMS,
};
pub use auth::{PlainCredentials, SaslError, MAX_AUTH_TOKEN_BYTES, MAX_PASSWORD_BYTES, PASSWORD_AUTHENTICATOR};
pub use repair::{RangeRepaired, RangeRequest, RepairRange, RepairRequest, RepairResult};
pub use request::{BatchKind, BatchRequest, BatchStatement, Request};
pub use response::{
    ColumnSpec, ErrorCode, ErrorResponse, PreparedMeta, QueryResult, Response, Rows, TraceEvent, Traced,
    MAX_TRACE_EVENTS,
};
pub use topology::{
    Topology, TopologyAnswer, TopologyNode, MAX_TOKENS_PER_SHARD, MAX_TOPOLOGY_NODES, MAX_TOPOLOGY_SHARDS,
};

use std::fmt;

use crate::codec::{DecodeError, Reader, Writer};
use crate::frame::{Opcode, SUPPORTED_VERSIONS};
use crate::value::{ColumnType, Value};

/// Most values one request may bind, counting every statement of a batch (Cassandra's bound
/// per statement). Also bounds how much memory decoding a request can take per input byte.
pub const MAX_BOUND_VALUES: usize = u16::MAX as usize;

/// Most statements in one batch.
pub const MAX_BATCH_STATEMENTS: usize = u16::MAX as usize;

/// Largest paging state a client may send back (an opaque position written by the server).
pub const MAX_PAGING_STATE_BYTES: usize = 1 << 20;

/// Longest client or server name in STARTUP and SUPPORTED.
pub const MAX_NAME_BYTES: usize = 1024;
/// How `enigmadb admin` starts its client name in STARTUP: a server keeps a few connection
/// places beyond its bounds for clients that do (docs/PROTOCOL.md, connection bounds).
pub const ADMIN_CLIENT_PREFIX: &str = "enigmadb-admin";

/// Largest page a client may ask for, in rows.
pub const MAX_PAGE_SIZE: u32 = 1 << 20;

/// A body that could not be decoded as the message its opcode announces. The server answers
/// it with a `Protocol` error on the frame's stream; the connection can continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("malformed {opcode:?} message: {source}")]
    Malformed { opcode: Opcode, source: DecodeError },
    #[error("opcode {opcode:?} is not a {expected}")]
    UnexpectedOpcode { opcode: Opcode, expected: &'static str },
}

/// How many replicas must answer. Codes are Cassandra's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Consistency {
    #[default]
    One,
    Two,
    Three,
    Quorum,
    All,
}

impl Consistency {
    pub const ALL: [Consistency; 5] =
        [Consistency::One, Consistency::Two, Consistency::Three, Consistency::Quorum, Consistency::All];

    /// The CQL name, as `CONSISTENCY` statements and error messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            Consistency::One => "ONE",
            Consistency::Two => "TWO",
            Consistency::Three => "THREE",
            Consistency::Quorum => "QUORUM",
            Consistency::All => "ALL",
        }
    }

    /// Parses a name in any case (`quorum`, `QUORUM`).
    pub fn parse(name: &str) -> Option<Consistency> {
        Consistency::ALL.into_iter().find(|c| c.name().eq_ignore_ascii_case(name))
    }

    pub fn code(self) -> u8 {
        match self {
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Three => 3,
            Consistency::Quorum => 4,
            Consistency::All => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Consistency> {
        Consistency::ALL.into_iter().find(|c| c.code() == code)
    }

    /// Replicas that must answer for a replication factor of `rf` (may exceed `rf` for
    /// TWO/THREE, which the coordinator then reports as unavailable).
    pub fn block_for(self, rf: usize) -> usize {
        match self {
            Consistency::One => 1,
            Consistency::Two => 2,
            Consistency::Three => 3,
            Consistency::Quorum => rf / 2 + 1,
            Consistency::All => rf,
        }
    }

    fn write(self, w: &mut Writer) {
        w.u8(self.code());
    }

    fn read(r: &mut Reader<'_>) -> Result<Consistency, DecodeError> {
        let code = r.u8()?;
        Consistency::from_code(code).ok_or_else(|| r.invalid("consistency", format!("unknown code {code}")))
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names a prepared statement: the server derives it from the statement text, so preparing the
/// same text twice (or on another node) gives the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PreparedId(pub [u8; 16]);

impl PreparedId {
    /// MurmurHash3 x64-128 of the statement text (the hash the ring already uses).
    pub fn of_statement(text: &str) -> PreparedId {
        let (h1, h2) = crate::token::murmur3_x64_128_cassandra(text.as_bytes(), 0);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&h1.to_le_bytes());
        id[8..].copy_from_slice(&h2.to_le_bytes());
        PreparedId(id)
    }

    fn write(&self, w: &mut Writer) {
        w.raw(&self.0);
    }

    fn read(r: &mut Reader<'_>) -> Result<PreparedId, DecodeError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(r.take(16)?);
        Ok(PreparedId(id))
    }
}

impl fmt::Display for PreparedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Options of a QUERY or EXECUTE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryParams {
    pub consistency: Consistency,
    /// Rows per page; `None` lets the server use its default page size.
    pub page_size: Option<u32>,
    /// Where the previous page ended, exactly as the server returned it.
    pub paging_state: Option<Vec<u8>>,
    /// Write timestamp in microseconds; `None` lets the coordinator assign one.
    pub timestamp: Option<i64>,
    /// Ask the coordinator for a trace of what it did (cqlsh's TRACING ON): the answer is a
    /// [`QueryResult::Traced`] around the result.
    pub trace: bool,
}

const PARAM_PAGE_SIZE: u8 = 1;
const PARAM_PAGING_STATE: u8 = 2;
const PARAM_TIMESTAMP: u8 = 4;
const PARAM_TRACE: u8 = 8;

impl QueryParams {
    pub fn with_consistency(consistency: Consistency) -> QueryParams {
        QueryParams { consistency, ..QueryParams::default() }
    }

    fn write(&self, w: &mut Writer) {
        let mut flags = 0;
        flags |= if self.page_size.is_some() { PARAM_PAGE_SIZE } else { 0 };
        flags |= if self.paging_state.is_some() { PARAM_PAGING_STATE } else { 0 };
        flags |= if self.timestamp.is_some() { PARAM_TIMESTAMP } else { 0 };
        flags |= if self.trace { PARAM_TRACE } else { 0 };
        self.consistency.write(w);
        w.u8(flags);
        if let Some(n) = self.page_size {
            w.u32(n);
        }
        if let Some(state) = &self.paging_state {
            w.bytes(state);
        }
        if let Some(ts) = self.timestamp {
            w.i64(ts);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<QueryParams, DecodeError> {
        let consistency = Consistency::read(r)?;
        let flags = r.u8()?;
        if flags & !(PARAM_PAGE_SIZE | PARAM_PAGING_STATE | PARAM_TIMESTAMP | PARAM_TRACE) != 0 {
            return Err(r.invalid("query parameter flags", format!("unknown flags {flags:#04x}")));
        }
        let page_size = match flags & PARAM_PAGE_SIZE != 0 {
            true => {
                let n = r.u32()?;
                if n == 0 || n > MAX_PAGE_SIZE {
                    return Err(r.invalid("page size", format!("{n} is not in 1..={MAX_PAGE_SIZE}")));
                }
                Some(n)
            }
            false => None,
        };
        let paging_state = match flags & PARAM_PAGING_STATE != 0 {
            true => Some(r.bytes_limited(MAX_PAGING_STATE_BYTES)?.to_vec()),
            false => None,
        };
        let timestamp = match flags & PARAM_TIMESTAMP != 0 {
            true => Some(r.i64()?),
            false => None,
        };
        let trace = flags & PARAM_TRACE != 0;
        Ok(QueryParams { consistency, page_size, paging_state, timestamp, trace })
    }
}

/// The version a server answers a STARTUP asking for `requested` with, or the protocol error
/// that refuses it.
pub fn negotiate_version(requested: u8) -> Result<u8, ErrorResponse> {
    match SUPPORTED_VERSIONS.contains(&requested) {
        true => Ok(requested),
        false => Err(ErrorResponse::new(
            ErrorCode::Protocol,
            format!("protocol version {requested} is not supported; supported: {SUPPORTED_VERSIONS:?}"),
        )),
    }
}

/// A nullable value with its type: type code (0 = null), then the serialized value.
/// Bytes [`write_value`] writes for `value`: a type byte, then a length and the value's bytes.
/// The server sizes its pages with it before encoding them.
pub fn value_wire_len(value: Option<&Value>) -> usize {
    match value {
        None => 1,
        Some(v) => 1 + 4 + v.byte_len(),
    }
}

fn write_value(w: &mut Writer, value: Option<&Value>) {
    match value {
        None => {
            w.u8(0);
        }
        Some(v) => {
            w.u8(v.column_type().code()).bytes(&v.to_bytes());
        }
    }
}

fn read_value(r: &mut Reader<'_>) -> Result<Option<Value>, DecodeError> {
    let at = r.offset();
    let code = r.u8()?;
    if code == 0 {
        return Ok(None);
    }
    let ty = ColumnType::from_code(code).ok_or_else(|| r.invalid("value type", format!("unknown type code {code}")))?;
    let raw = r.bytes()?;
    Value::from_bytes(ty, raw).map(Some).map_err(|e| DecodeError::Invalid {
        offset: at,
        what: "value",
        detail: e.to_string(),
    })
}

fn write_values(w: &mut Writer, values: &[Option<Value>]) {
    w.u32(values.len() as u32);
    values.iter().for_each(|v| write_value(w, v.as_ref()));
}

/// Reads a value list, counting it against `budget` (the values left for the whole request).
fn read_values(r: &mut Reader<'_>, budget: &mut usize) -> Result<Vec<Option<Value>>, DecodeError> {
    let at = r.offset();
    let n = r.count(1)?;
    if n > *budget {
        return Err(DecodeError::TooLong { offset: at, len: n, limit: *budget });
    }
    *budget -= n;
    read_list(r, n, |r, _| read_value(r))
}

/// Reads `n` items (a count already checked against the input left) into a vector allocated
/// once: growing by doubling would allocate up to twice the memory the items need.
fn read_list<T>(
    r: &mut Reader<'_>,
    n: usize,
    mut read: impl FnMut(&mut Reader<'_>, usize) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(read(r, i)?);
    }
    Ok(out)
}

/// Text with a u32 length prefix, at most `limit` bytes.
fn read_text(r: &mut Reader<'_>, limit: usize) -> Result<String, DecodeError> {
    let at = r.offset();
    let raw = r.bytes_limited(limit)?;
    String::from_utf8(raw.to_vec()).map_err(|e| DecodeError::Invalid {
        offset: at,
        what: "utf-8 text",
        detail: e.to_string(),
    })
}

fn write_opt_i64(w: &mut Writer, v: Option<i64>) {
    match v {
        None => {
            w.u8(0);
        }
        Some(v) => {
            w.u8(1).i64(v);
        }
    }
}

fn read_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(r.invalid(what, format!("expected 0 or 1, got {b}"))),
    }
}

fn read_opt_i64(r: &mut Reader<'_>) -> Result<Option<i64>, DecodeError> {
    Ok(match read_bool(r, "timestamp presence")? {
        true => Some(r.i64()?),
        false => None,
    })
}

/// Decodes a whole body with `read`, refusing trailing bytes, and names the opcode on failure.
fn decode_body<T>(
    opcode: Opcode,
    body: &[u8],
    read: impl FnOnce(&mut Reader<'_>) -> Result<T, DecodeError>,
) -> Result<T, ProtocolError> {
    let mut r = Reader::new(body);
    let out = read(&mut r).and_then(|v| r.finish().map(|()| v));
    out.map_err(|source| ProtocolError::Malformed { opcode, source })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::value::tests::any_value;
    use proptest::prelude::*;

    pub fn any_consistency() -> impl Strategy<Value = Consistency> {
        proptest::sample::select(Consistency::ALL.to_vec())
    }

    pub fn any_values() -> impl Strategy<Value = Vec<Option<Value>>> {
        proptest::collection::vec(proptest::option::of(any_value()), 0..5)
    }

    pub fn any_prepared_id() -> impl Strategy<Value = PreparedId> {
        any::<[u8; 16]>().prop_map(PreparedId)
    }

    pub fn any_params() -> impl Strategy<Value = QueryParams> {
        (
            any_consistency(),
            proptest::option::of(1..=MAX_PAGE_SIZE),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(any::<i64>()),
            any::<bool>(),
        )
            .prop_map(|(consistency, page_size, paging_state, timestamp, trace)| QueryParams {
                consistency,
                page_size,
                paging_state,
                timestamp,
                trace,
            })
    }

    proptest! {
        #[test]
        fn value_wire_len_is_what_write_value_writes(v in proptest::option::of(any_value())) {
            let mut w = Writer::new();
            write_value(&mut w, v.as_ref());
            prop_assert_eq!(w.into_bytes().len(), value_wire_len(v.as_ref()));
        }
    }

    #[test]
    fn consistency_names_and_codes_round_trip() {
        for c in Consistency::ALL {
            assert_eq!(Consistency::parse(&c.name().to_lowercase()), Some(c));
            assert_eq!(Consistency::from_code(c.code()), Some(c));
        }
        assert_eq!(Consistency::parse("quorum"), Some(Consistency::Quorum));
        assert_eq!(Consistency::parse("LOCAL_QUORUM"), None);
        assert_eq!(Consistency::from_code(0), None);
        assert_eq!(QueryParams::default().consistency, Consistency::One);
        assert_eq!(Consistency::Quorum.block_for(3), 2);
        assert_eq!(Consistency::Quorum.block_for(4), 3);
        assert_eq!(Consistency::All.block_for(3), 3);
        assert_eq!(Consistency::One.block_for(3), 1);
    }

    #[test]
    fn prepared_ids_are_stable_per_text() {
        let a = PreparedId::of_statement("SELECT * FROM t WHERE k = ?");
        assert_eq!(a, PreparedId::of_statement("SELECT * FROM t WHERE k = ?"));
        assert_ne!(a, PreparedId::of_statement("SELECT * FROM t WHERE k = ? "));
        assert_eq!(a.to_string().len(), 32);
    }

    #[test]
    fn version_negotiation_accepts_only_supported_versions() {
        assert_eq!(negotiate_version(crate::frame::PROTOCOL_VERSION), Ok(crate::frame::PROTOCOL_VERSION));
        let err = negotiate_version(9).unwrap_err();
        assert_eq!(err.code, ErrorCode::Protocol);
        assert!(err.message.contains("version 9"), "{}", err.message);
    }
}

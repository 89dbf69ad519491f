//! Answers a server sends (READY, SUPPORTED, RESULT, ERROR) and their body encodings, with the
//! typed error codes clients match on. Decoding validates structure and value types only.

use std::fmt;

use super::admin::AdminResult;
use super::topology::TopologyAnswer;
use super::{
    decode_body, read_bool, read_list, read_text, read_value, write_value, Consistency, PreparedId, ProtocolError,
    MAX_NAME_BYTES, MAX_PAGING_STATE_BYTES,
};
use crate::codec::{DecodeError, Reader, Writer, MAX_FIELD_LEN};
use crate::frame::{Frame, FrameError, Opcode};
use crate::value::{ColumnType, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// STARTUP accepted: the version both sides speak from now on, and the shard of the node
    /// that serves this connection (`shard` < `shards`, the node's shard count).
    Ready {
        version: u8,
        shard: u16,
        shards: u16,
    },
    /// Answer to OPTIONS. `shard` and `shards` as in READY; `shard_aware_port` is the node's
    /// shard-aware client port (a connection from source port p is served by shard
    /// p % `shards`), 0 when it has none.
    Supported {
        versions: Vec<u8>,
        max_frame_bytes: u32,
        server: String,
        shard: u16,
        shards: u16,
        shard_aware_port: u16,
    },
    /// Answers STARTUP on a node that asks for credentials (version 3): the authenticator's
    /// name ([`PASSWORD_AUTHENTICATOR`](super::PASSWORD_AUTHENTICATOR)). The client answers with
    /// AUTH_RESPONSE.
    Authenticate {
        authenticator: String,
    },
    /// The credentials of AUTH_RESPONSE are accepted: the connection is ready, as READY says
    /// (its fields are READY's).
    AuthSuccess {
        version: u8,
        shard: u16,
        shards: u16,
    },
    Result(QueryResult),
    /// The answer to an ADMIN request: a RESULT of kind admin.
    Admin(AdminResult),
    Error(ErrorResponse),
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    /// A write or a statement without rows.
    Void,
    Rows(Rows),
    /// `change` is CREATED, DROPPED or UPDATED.
    SchemaChange {
        change: String,
        table: String,
    },
    Prepared(PreparedMeta),
    /// The answer to a request that asked for a trace (`QueryParams::trace`): what the
    /// coordinator did, then the result itself (never traced again).
    Traced(Box<Traced>),
    /// The answer to TOPOLOGY.
    Topology(TopologyAnswer),
}

/// A traced request's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Traced {
    /// In the order they happened.
    pub events: Vec<TraceEvent>,
    pub result: QueryResult,
}

/// One step of a traced request (a line of cqlsh's tracing table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    pub activity: String,
    /// Where it happened: the coordinator's or a replica's address.
    pub source: String,
    /// Microseconds since the coordinator received the request.
    pub elapsed_us: u64,
}

/// Most events in one trace; a coordinator stops recording past it.
pub const MAX_TRACE_EVENTS: usize = 4096;
/// Longest activity or source text of a trace event.
const MAX_TRACE_TEXT: usize = 1024;
/// Smallest encoded trace event: two empty texts and the elapsed time.
const MIN_TRACE_EVENT_BYTES: usize = 4 + 4 + 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
}

/// One page of a SELECT. Every row has one cell per column, `None` for null.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    pub columns: Vec<ColumnSpec>,
    pub rows: Vec<Vec<Option<Value>>>,
    /// Present when more rows follow: send it back in `QueryParams::paging_state`.
    pub paging_state: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedMeta {
    pub id: PreparedId,
    /// The bind markers, in order: what EXECUTE's values must be.
    pub bind: Vec<ColumnSpec>,
    /// The columns a SELECT returns (empty for writes).
    pub columns: Vec<ColumnSpec>,
    /// The bind markers (indexes into `bind`) holding the partition key's columns, in
    /// partition-key order: with them a client computes a request's token and sends it to a
    /// replica. Empty when the partition key is not fully bound by markers (the client cannot
    /// route the statement).
    pub pk_indexes: Vec<u16>,
}

/// A typed error answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorResponse {
    pub code: ErrorCode,
    pub message: String,
}

/// What went wrong, with the numbers a client needs to decide whether to retry. Codes on the
/// wire are Cassandra's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    /// A bug or an internal failure of the server.
    Server,
    /// A malformed or unexpected message (the server may close the connection after it).
    Protocol,
    /// Fewer replicas alive than the consistency level needs; nothing was attempted.
    Unavailable { consistency: Consistency, required: u32, alive: u32 },
    /// The coordinator or a replica refused work to protect itself.
    Overloaded,
    /// Too few replicas acknowledged a write in time (it may still be applied).
    WriteTimeout { consistency: Consistency, received: u32, required: u32 },
    /// Too few replicas answered a read in time.
    ReadTimeout { consistency: Consistency, received: u32, required: u32, data_present: bool },
    /// The statement does not parse.
    Syntax,
    /// The statement parses but cannot run: unknown table or column, wrong type, bad value.
    Invalid,
    /// CREATE of something that exists.
    AlreadyExists,
    /// EXECUTE of an id this server does not know (prepare again and retry).
    Unprepared { id: PreparedId },
    /// Missing, malformed or wrong credentials, or a role that may not log in (version 3): the
    /// server closes the connection after it. Cassandra's "authentication error".
    BadCredentials,
    /// The logged-in role lacks the permission the request needs; the message names it
    /// (version 3).
    Unauthorized,
}

impl ErrorCode {
    pub fn code(&self) -> u16 {
        match self {
            ErrorCode::Server => 0x0000,
            ErrorCode::Protocol => 0x000A,
            ErrorCode::Unavailable { .. } => 0x1000,
            ErrorCode::Overloaded => 0x1001,
            ErrorCode::WriteTimeout { .. } => 0x1100,
            ErrorCode::ReadTimeout { .. } => 0x1200,
            ErrorCode::Syntax => 0x2000,
            ErrorCode::Invalid => 0x2200,
            ErrorCode::AlreadyExists => 0x2400,
            ErrorCode::Unprepared { .. } => 0x2500,
            ErrorCode::BadCredentials => 0x0100,
            ErrorCode::Unauthorized => 0x2100,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            ErrorCode::Server => "server error",
            ErrorCode::Protocol => "protocol error",
            ErrorCode::Unavailable { .. } => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::WriteTimeout { .. } => "write timeout",
            ErrorCode::ReadTimeout { .. } => "read timeout",
            ErrorCode::Syntax => "syntax error",
            ErrorCode::Invalid => "invalid request",
            ErrorCode::AlreadyExists => "already exists",
            ErrorCode::Unprepared { .. } => "unprepared",
            ErrorCode::BadCredentials => "bad credentials",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }

    fn write(&self, w: &mut Writer) {
        w.u16(self.code());
    }

    /// The code-specific fields, written after the message.
    fn write_details(&self, w: &mut Writer) {
        match self {
            ErrorCode::Unavailable { consistency, required, alive } => {
                consistency.write(w);
                w.u32(*required).u32(*alive);
            }
            ErrorCode::WriteTimeout { consistency, received, required } => {
                consistency.write(w);
                w.u32(*received).u32(*required);
            }
            ErrorCode::ReadTimeout { consistency, received, required, data_present } => {
                consistency.write(w);
                w.u32(*received).u32(*required).u8(u8::from(*data_present));
            }
            ErrorCode::Unprepared { id } => id.write(w),
            _ => {}
        }
    }

    fn read(code: u16, r: &mut Reader<'_>) -> Result<ErrorCode, DecodeError> {
        Ok(match code {
            0x0000 => ErrorCode::Server,
            0x000A => ErrorCode::Protocol,
            0x1000 => {
                ErrorCode::Unavailable { consistency: Consistency::read(r)?, required: r.u32()?, alive: r.u32()? }
            }
            0x1001 => ErrorCode::Overloaded,
            0x1100 => {
                ErrorCode::WriteTimeout { consistency: Consistency::read(r)?, received: r.u32()?, required: r.u32()? }
            }
            0x1200 => ErrorCode::ReadTimeout {
                consistency: Consistency::read(r)?,
                received: r.u32()?,
                required: r.u32()?,
                data_present: read_bool(r, "data present")?,
            },
            0x2000 => ErrorCode::Syntax,
            0x2200 => ErrorCode::Invalid,
            0x2400 => ErrorCode::AlreadyExists,
            0x2500 => ErrorCode::Unprepared { id: PreparedId::read(r)? },
            0x0100 => ErrorCode::BadCredentials,
            0x2100 => ErrorCode::Unauthorized,
            other => return Err(r.invalid("error code", format!("unknown code {other:#06x}"))),
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            ErrorCode::Unavailable { consistency, required, alive } => {
                write!(f, " ({consistency}: {required} replicas required, {alive} alive)")
            }
            ErrorCode::WriteTimeout { consistency, received, required }
            | ErrorCode::ReadTimeout { consistency, received, required, .. } => {
                write!(f, " ({consistency}: {received} of {required} replicas answered)")
            }
            ErrorCode::Unprepared { id } => write!(f, " (statement {id})"),
            _ => Ok(()),
        }
    }
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse { code, message: message.into() }
    }
}

/// How a server answers a frame it could not decode: a protocol error (sent on
/// [`FrameError::stream`]).
impl From<&FrameError> for ErrorResponse {
    fn from(e: &FrameError) -> ErrorResponse {
        ErrorResponse::new(ErrorCode::Protocol, e.to_string())
    }
}

/// How a server answers a request body it could not decode.
impl From<&ProtocolError> for ErrorResponse {
    fn from(e: &ProtocolError) -> ErrorResponse {
        ErrorResponse::new(ErrorCode::Protocol, e.to_string())
    }
}

const RESULT_VOID: u32 = 1;
const RESULT_ROWS: u32 = 2;
const RESULT_PREPARED: u32 = 4;
const RESULT_SCHEMA_CHANGE: u32 = 5;
/// An EnigmaDB kind, far from Cassandra's numbers.
const RESULT_ADMIN: u32 = 0x100;
/// EnigmaDB's: a trace, then a result of another kind.
const RESULT_TRACED: u32 = 0x101;
/// EnigmaDB's: the answer to TOPOLOGY.
const RESULT_TOPOLOGY: u32 = 0x102;
/// Smallest encoded column spec: an empty name and a type code.
const MIN_COLUMN_SPEC_BYTES: usize = 4 + 1;

fn write_specs(w: &mut Writer, specs: &[ColumnSpec]) {
    w.u32(specs.len() as u32);
    for spec in specs {
        w.str(&spec.name).u8(spec.ty.code());
    }
}

fn read_specs(r: &mut Reader<'_>) -> Result<Vec<ColumnSpec>, DecodeError> {
    let n = r.count(MIN_COLUMN_SPEC_BYTES)?;
    read_list(r, n, |r, _| {
        let name = read_text(r, MAX_NAME_BYTES)?;
        let code = r.u8()?;
        let ty =
            ColumnType::from_code(code).ok_or_else(|| r.invalid("column type", format!("unknown type code {code}")))?;
        Ok(ColumnSpec { name, ty })
    })
}

impl Rows {
    fn write(&self, w: &mut Writer) {
        write_specs(w, &self.columns);
        w.u32(self.rows.len() as u32);
        for row in &self.rows {
            debug_assert_eq!(row.len(), self.columns.len(), "a row has one cell per column");
            row.iter().for_each(|cell| write_value(w, cell.as_ref()));
        }
        match &self.paging_state {
            None => {
                w.u8(0);
            }
            Some(state) => {
                w.u8(1).bytes(state);
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Rows, DecodeError> {
        let columns = read_specs(r)?;
        let at = r.offset();
        // Every cell takes at least one byte, so the input bounds the row count.
        let n = r.count(columns.len())?;
        if columns.is_empty() && n > 0 {
            return Err(DecodeError::Invalid { offset: at, what: "rows", detail: format!("{n} rows without columns") });
        }
        let rows = read_list(r, n, |r, _| {
            read_list(r, columns.len(), |r, i| {
                // read_list calls with i < columns.len().
                let (at, spec) = (r.offset(), &columns[i]);
                let cell = read_value(r)?;
                match &cell {
                    Some(v) if v.column_type() != spec.ty => Err(DecodeError::Invalid {
                        offset: at,
                        what: "cell",
                        detail: format!("column {} is {}, got a {} value", spec.name, spec.ty, v.column_type()),
                    }),
                    _ => Ok(cell),
                }
            })
        })?;
        let paging_state = match read_bool(r, "paging state presence")? {
            true => Some(r.bytes_limited(MAX_PAGING_STATE_BYTES)?.to_vec()),
            false => None,
        };
        Ok(Rows { columns, rows, paging_state })
    }
}

impl QueryResult {
    fn write(&self, w: &mut Writer) {
        match self {
            QueryResult::Void => {
                w.u32(RESULT_VOID);
            }
            QueryResult::Rows(rows) => {
                w.u32(RESULT_ROWS);
                rows.write(w);
            }
            QueryResult::SchemaChange { change, table } => {
                w.u32(RESULT_SCHEMA_CHANGE).str(change).str(table);
            }
            QueryResult::Prepared(meta) => {
                w.u32(RESULT_PREPARED);
                meta.id.write(w);
                write_specs(w, &meta.bind);
                write_specs(w, &meta.columns);
                debug_assert!(meta.pk_indexes.len() <= meta.bind.len());
                w.u16(meta.pk_indexes.len() as u16);
                meta.pk_indexes.iter().for_each(|i| {
                    w.u16(*i);
                });
            }
            QueryResult::Topology(answer) => {
                w.u32(RESULT_TOPOLOGY);
                answer.write(w);
            }
            QueryResult::Traced(traced) => {
                let events = &traced.events[..traced.events.len().min(MAX_TRACE_EVENTS)];
                w.u32(RESULT_TRACED).u32(events.len() as u32);
                for e in events {
                    w.str(cut(&e.activity)).str(cut(&e.source)).u64(e.elapsed_us);
                }
                debug_assert!(!matches!(traced.result, QueryResult::Traced(_)), "a trace holds a plain result");
                traced.result.write(w);
            }
        }
    }

    /// The rest of a RESULT body of kind `kind` (read by [`Response::decode`]).
    fn read(kind: u32, r: &mut Reader<'_>) -> Result<QueryResult, DecodeError> {
        Ok(match kind {
            RESULT_VOID => QueryResult::Void,
            RESULT_ROWS => QueryResult::Rows(Rows::read(r)?),
            RESULT_SCHEMA_CHANGE => QueryResult::SchemaChange {
                change: read_text(r, MAX_NAME_BYTES)?,
                table: read_text(r, MAX_NAME_BYTES)?,
            },
            RESULT_PREPARED => {
                let (id, bind, columns) = (PreparedId::read(r)?, read_specs(r)?, read_specs(r)?);
                let pk_indexes = read_pk_indexes(r, bind.len())?;
                QueryResult::Prepared(PreparedMeta { id, bind, columns, pk_indexes })
            }
            RESULT_TOPOLOGY => QueryResult::Topology(TopologyAnswer::read(r)?),
            RESULT_TRACED => {
                let n = r.count(MIN_TRACE_EVENT_BYTES)?;
                if n > MAX_TRACE_EVENTS {
                    return Err(r.invalid("trace", format!("{n} events, at most {MAX_TRACE_EVENTS}")));
                }
                let events = read_list(r, n, |r, _| {
                    Ok(TraceEvent {
                        activity: read_text(r, MAX_TRACE_TEXT)?,
                        source: read_text(r, MAX_TRACE_TEXT)?,
                        elapsed_us: r.u64()?,
                    })
                })?;
                let result = match r.u32()? {
                    RESULT_TRACED => return Err(r.invalid("result kind", "a trace inside a trace")),
                    kind => QueryResult::read(kind, r)?,
                };
                QueryResult::Traced(Box::new(Traced { events, result }))
            }
            kind => return Err(r.invalid("result kind", format!("unknown kind {kind}"))),
        })
    }

    /// The result itself, without its trace if it has one.
    pub fn untraced(self) -> QueryResult {
        match self {
            QueryResult::Traced(traced) => traced.result,
            other => other,
        }
    }
}

/// The partition key's bind marker indexes of a PREPARED result: at most one per marker, each
/// naming one of the `markers` bind markers.
fn read_pk_indexes(r: &mut Reader<'_>, markers: usize) -> Result<Vec<u16>, DecodeError> {
    let at = r.offset();
    let n = r.count_u16(2)?;
    if n > markers {
        return Err(DecodeError::TooLong { offset: at, len: n, limit: markers });
    }
    read_list(r, n, |r, _| {
        let i = r.u16()?;
        match usize::from(i) < markers {
            true => Ok(i),
            false => Err(r.invalid("partition key index", format!("marker {i} of {markers}"))),
        }
    })
}

/// A READY or SUPPORTED shard pair: the serving shard is one of the node's.
fn read_shard(r: &mut Reader<'_>) -> Result<(u16, u16), DecodeError> {
    let (shard, shards) = (r.u16()?, r.u16()?);
    match shard < shards {
        true => Ok((shard, shards)),
        false => Err(r.invalid("shard", format!("shard {shard} of a node with {shards} shards"))),
    }
}

/// `text` cut to at most MAX_TRACE_TEXT bytes, at a character boundary.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(MAX_TRACE_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Response {
    pub fn opcode(&self) -> Opcode {
        match self {
            Response::Ready { .. } => Opcode::Ready,
            Response::Supported { .. } => Opcode::Supported,
            Response::Authenticate { .. } => Opcode::Authenticate,
            Response::AuthSuccess { .. } => Opcode::AuthSuccess,
            Response::Result(_) | Response::Admin(_) => Opcode::Result,
            Response::Error(_) => Opcode::Error,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error(ErrorResponse::new(code, message))
    }

    pub fn encode(&self) -> (Opcode, Vec<u8>) {
        let mut w = Writer::new();
        match self {
            Response::Ready { version, shard, shards } | Response::AuthSuccess { version, shard, shards } => {
                w.u8(*version).u16(*shard).u16(*shards);
            }
            Response::Authenticate { authenticator } => {
                w.str(authenticator);
            }
            Response::Supported { versions, max_frame_bytes, server, shard, shards, shard_aware_port } => {
                w.bytes(versions).u32(*max_frame_bytes).str(server).u16(*shard).u16(*shards).u16(*shard_aware_port);
            }
            Response::Result(result) => result.write(&mut w),
            Response::Admin(result) => {
                w.u32(RESULT_ADMIN);
                result.write(&mut w);
            }
            Response::Error(e) => {
                e.code.write(&mut w);
                w.str(&e.message);
                e.code.write_details(&mut w);
            }
        }
        (self.opcode(), w.into_bytes())
    }

    pub fn decode(opcode: Opcode, body: &[u8]) -> Result<Response, ProtocolError> {
        if opcode.is_request() {
            return Err(ProtocolError::UnexpectedOpcode { opcode, expected: "response" });
        }
        decode_body(opcode, body, |r| {
            Ok(match opcode {
                Opcode::Ready => {
                    let version = r.u8()?;
                    let (shard, shards) = read_shard(r)?;
                    Response::Ready { version, shard, shards }
                }
                Opcode::AuthSuccess => {
                    let version = r.u8()?;
                    let (shard, shards) = read_shard(r)?;
                    Response::AuthSuccess { version, shard, shards }
                }
                Opcode::Authenticate => Response::Authenticate { authenticator: read_text(r, MAX_NAME_BYTES)? },
                Opcode::Supported => {
                    let versions = r.bytes_limited(usize::from(u8::MAX))?.to_vec();
                    let (max_frame_bytes, server) = (r.u32()?, read_text(r, MAX_NAME_BYTES)?);
                    let (shard, shards) = read_shard(r)?;
                    let shard_aware_port = r.u16()?;
                    Response::Supported { versions, max_frame_bytes, server, shard, shards, shard_aware_port }
                }
                Opcode::Result => match r.u32()? {
                    RESULT_ADMIN => Response::Admin(AdminResult::read(r)?),
                    kind => Response::Result(QueryResult::read(kind, r)?),
                },
                Opcode::Error => {
                    let code = r.u16()?;
                    let message = read_text(r, MAX_FIELD_LEN)?;
                    Response::Error(ErrorResponse { code: ErrorCode::read(code, r)?, message })
                }
                // Refused above; kept typed rather than unreachable.
                Opcode::Startup
                | Opcode::AuthResponse
                | Opcode::Options
                | Opcode::Query
                | Opcode::Prepare
                | Opcode::Execute
                | Opcode::Batch
                | Opcode::Admin
                | Opcode::Topology => return Err(r.invalid("opcode", "not a response")),
            })
        })
    }

    pub fn to_frame(&self, stream: u16) -> Frame {
        let (opcode, body) = self.encode();
        Frame::new(opcode, stream, body)
    }

    pub fn from_frame(frame: &Frame) -> Result<Response, ProtocolError> {
        Response::decode(frame.opcode, &frame.body)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::admin::tests::any_admin_result;
    use super::super::tests::{any_consistency, any_prepared_id};
    use super::super::topology::tests::any_topology_answer;
    use super::*;
    use crate::value::tests::value_of;
    use proptest::prelude::*;

    fn any_spec() -> impl Strategy<Value = ColumnSpec> {
        ("[a-z_]{0,8}", proptest::sample::select(ColumnType::ALL.to_vec()))
            .prop_map(|(name, ty)| ColumnSpec { name, ty })
    }

    pub fn any_rows() -> impl Strategy<Value = Rows> {
        proptest::collection::vec(any_spec(), 0..4)
            .prop_flat_map(|columns| {
                let row = columns.iter().map(|c| proptest::option::of(value_of(c.ty))).collect::<Vec<_>>();
                let max_rows = if columns.is_empty() { 0 } else { 5 };
                (
                    Just(columns),
                    proptest::collection::vec(row, 0..=max_rows),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                )
            })
            .prop_map(|(columns, rows, paging_state)| Rows { columns, rows, paging_state })
    }

    fn any_error_code() -> impl Strategy<Value = ErrorCode> {
        prop_oneof![
            Just(ErrorCode::Server),
            Just(ErrorCode::Protocol),
            (any_consistency(), any::<u32>(), any::<u32>())
                .prop_map(|(consistency, required, alive)| ErrorCode::Unavailable { consistency, required, alive }),
            Just(ErrorCode::Overloaded),
            (any_consistency(), any::<u32>(), any::<u32>()).prop_map(|(consistency, received, required)| {
                ErrorCode::WriteTimeout { consistency, received, required }
            }),
            (any_consistency(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
                |(consistency, received, required, data_present)| ErrorCode::ReadTimeout {
                    consistency,
                    received,
                    required,
                    data_present
                }
            ),
            Just(ErrorCode::Syntax),
            Just(ErrorCode::Invalid),
            Just(ErrorCode::AlreadyExists),
            any_prepared_id().prop_map(|id| ErrorCode::Unprepared { id }),
            Just(ErrorCode::BadCredentials),
            Just(ErrorCode::Unauthorized),
        ]
    }

    /// A serving shard and the node's shard count.
    fn any_shard() -> impl Strategy<Value = (u16, u16)> {
        (1..=u16::MAX).prop_flat_map(|shards| (0..shards, Just(shards)))
    }

    /// Bind markers, and partition key indexes into them.
    fn any_bind() -> impl Strategy<Value = (Vec<ColumnSpec>, Vec<u16>)> {
        proptest::collection::vec(any_spec(), 0..4).prop_flat_map(|bind| {
            let n = bind.len();
            let indexes = match n {
                0 => Just(Vec::new()).boxed(),
                n => proptest::collection::vec(0..n as u16, 0..=n).boxed(),
            };
            (Just(bind), indexes)
        })
    }

    pub fn any_response() -> impl Strategy<Value = Response> {
        prop_oneof![
            (any::<u8>(), any_shard()).prop_map(|(version, (shard, shards))| Response::Ready {
                version,
                shard,
                shards
            }),
            (any::<u8>(), any_shard()).prop_map(|(version, (shard, shards))| Response::AuthSuccess {
                version,
                shard,
                shards
            }),
            ".{0,10}".prop_map(|authenticator| Response::Authenticate { authenticator }),
            (proptest::collection::vec(any::<u8>(), 0..4), any::<u32>(), ".{0,10}", any_shard(), any::<u16>())
                .prop_map(|(versions, max_frame_bytes, server, (shard, shards), shard_aware_port)| {
                    Response::Supported { versions, max_frame_bytes, server, shard, shards, shard_aware_port }
                }),
            Just(Response::Result(QueryResult::Void)),
            any_rows().prop_map(|rows| Response::Result(QueryResult::Rows(rows))),
            ("CREATED|DROPPED|UPDATED", "[a-z]{1,8}")
                .prop_map(|(change, table)| Response::Result(QueryResult::SchemaChange { change, table })),
            (any_prepared_id(), any_bind(), proptest::collection::vec(any_spec(), 0..3)).prop_map(
                |(id, (bind, pk_indexes), columns)| Response::Result(QueryResult::Prepared(PreparedMeta {
                    id,
                    bind,
                    columns,
                    pk_indexes
                }))
            ),
            any_topology_answer().prop_map(|answer| Response::Result(QueryResult::Topology(answer))),
            (any_error_code(), ".{0,30}").prop_map(|(code, message)| Response::error(code, message)),
            any_admin_result().prop_map(Response::Admin),
            (proptest::collection::vec(any_trace_event(), 0..5), any_rows()).prop_map(|(events, rows)| {
                Response::Result(QueryResult::Traced(Box::new(Traced { events, result: QueryResult::Rows(rows) })))
            }),
        ]
    }

    fn any_trace_event() -> impl Strategy<Value = TraceEvent> {
        (".{0,40}", "[0-9.:]{0,21}", any::<u64>()).prop_map(|(activity, source, elapsed_us)| TraceEvent {
            activity,
            source,
            elapsed_us,
        })
    }

    #[test]
    fn a_trace_inside_a_trace_is_refused_and_long_texts_are_cut() {
        let event =
            TraceEvent { activity: "é".repeat(MAX_TRACE_TEXT), source: "127.0.0.1:9470".into(), elapsed_us: 7 };
        let traced = QueryResult::Traced(Box::new(Traced { events: vec![event], result: QueryResult::Void }));
        let (opcode, body) = Response::Result(traced).encode();
        let Ok(Response::Result(QueryResult::Traced(back))) = Response::decode(opcode, &body) else {
            panic!("a traced result decodes")
        };
        assert!(back.events[0].activity.len() <= MAX_TRACE_TEXT && back.events[0].activity.starts_with('é'));
        assert_eq!((back.events[0].elapsed_us, &back.result), (7, &QueryResult::Void));

        let mut w = Writer::new();
        w.u32(RESULT_TRACED).u32(0).u32(RESULT_TRACED).u32(0).u32(RESULT_VOID);
        let nested = Response::decode(Opcode::Result, &w.into_bytes());
        assert!(format!("{nested:?}").contains("a trace inside a trace"), "{nested:?}");
    }

    proptest! {
        #[test]
        fn responses_round_trip(response in any_response(), stream in any::<u16>()) {
            let frame = response.to_frame(stream);
            prop_assert!(!frame.opcode.is_request());
            prop_assert_eq!(Response::from_frame(&frame).unwrap(), response);
        }

        #[test]
        fn truncated_or_extended_responses_are_typed_errors(response in any_response()) {
            let (opcode, body) = response.encode();
            for cut in 0..body.len() {
                let res = Response::decode(opcode, &body[..cut]);
                prop_assert!(matches!(res, Err(ProtocolError::Malformed { .. })), "cut at {}: {:?}", cut, res);
            }
            let mut longer = body;
            longer.push(0);
            let res = Response::decode(opcode, &longer);
            prop_assert!(matches!(res, Err(ProtocolError::Malformed { .. })), "{:?}", res);
        }
    }

    #[test]
    fn error_codes_are_cassandras_and_messages_say_what_happened() {
        let e = ErrorResponse::new(
            ErrorCode::Unavailable { consistency: Consistency::Quorum, required: 2, alive: 1 },
            "cannot achieve consistency level QUORUM",
        );
        assert_eq!(e.code.code(), 0x1000);
        assert_eq!(
            e.to_string(),
            "unavailable (QUORUM: 2 replicas required, 1 alive): cannot achieve consistency level QUORUM"
        );
        assert_eq!(ErrorCode::Syntax.code(), 0x2000);
        assert_eq!(ErrorCode::Invalid.code(), 0x2200);
        assert_eq!(ErrorCode::Protocol.code(), 0x000A);
    }

    #[test]
    fn cells_of_the_wrong_type_and_rowless_columns_are_refused() {
        let rows = Rows {
            columns: vec![ColumnSpec { name: "k".into(), ty: ColumnType::Int }],
            rows: vec![vec![Some(Value::Int(1))]],
            paging_state: None,
        };
        let (opcode, body) = Response::Result(QueryResult::Rows(rows)).encode();
        let mut wrong = body.clone();
        // kind (4) + column count (4) + name (4 + 1) + type (1) + row count (4) = the cell's type code.
        assert_eq!(wrong[18], ColumnType::Int.code());
        wrong[18] = ColumnType::Blob.code();
        let err = Response::decode(opcode, &wrong).unwrap_err();
        assert!(err.to_string().contains("column k is int, got a blob value"), "{err}");

        let mut no_columns = Writer::new();
        no_columns.u32(RESULT_ROWS).u32(0).u32(1).u8(0);
        let err = Response::decode(Opcode::Result, &no_columns.into_bytes()).unwrap_err();
        assert!(matches!(err, ProtocolError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn partition_key_indexes_must_name_bind_markers() {
        let spec = |name: &str| ColumnSpec { name: name.into(), ty: ColumnType::Int };
        let meta = PreparedMeta {
            id: PreparedId([3; 16]),
            bind: vec![spec("v"), spec("k")],
            columns: vec![],
            pk_indexes: vec![1],
        };
        let (opcode, body) = Response::Result(QueryResult::Prepared(meta)).encode();
        // The body ends with the count and the one index, each a u16.
        assert_eq!(&body[body.len() - 4..], &[1, 0, 1, 0]);
        let mut out_of_range = body.clone();
        let at = body.len() - 2;
        out_of_range[at] = 2;
        let err = Response::decode(opcode, &out_of_range).unwrap_err();
        assert!(err.to_string().contains("marker 2 of 2"), "{err}");
        let mut too_many = body[..body.len() - 4].to_vec();
        too_many.extend_from_slice(&[3, 0, 0, 0, 0, 0, 1, 0]);
        let err = Response::decode(opcode, &too_many).unwrap_err();
        assert!(matches!(err, ProtocolError::Malformed { source: DecodeError::TooLong { len: 3, limit: 2, .. }, .. }));
    }

    #[test]
    fn a_serving_shard_must_be_one_of_the_nodes() {
        let (opcode, mut body) = Response::Ready { version: 2, shard: 1, shards: 2 }.encode();
        assert_eq!(body, [2, 1, 0, 2, 0]);
        body[1] = 2;
        let err = Response::decode(opcode, &body).unwrap_err();
        assert!(err.to_string().contains("shard 2 of a node with 2 shards"), "{err}");
        let (opcode, body) = Response::Ready { version: 2, shard: 0, shards: 1 }.encode();
        let mut none = body.clone();
        none[3] = 0;
        assert!(Response::decode(opcode, &none).is_err(), "a node has at least one shard");
    }

    #[test]
    fn requests_are_not_responses() {
        assert_eq!(
            Response::decode(Opcode::Query, &[]),
            Err(ProtocolError::UnexpectedOpcode { opcode: Opcode::Query, expected: "response" })
        );
    }

    #[test]
    fn undecodable_frames_map_to_protocol_errors() {
        let e = FrameError::BodyChecksum { stream: 3, stored: 1, computed: 2, consumed: 30 };
        let answer = ErrorResponse::from(&e);
        assert_eq!(answer.code, ErrorCode::Protocol);
        assert!(answer.message.contains("checksum"));
    }
}

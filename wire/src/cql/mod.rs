//! Apache Cassandra's native protocol v4 (CQL binary protocol) as a pure codec: frames, the
//! notation types, requests and responses, and lz4 body compression. No I/O and no query
//! semantics; EnigmaDB's server does not serve this protocol yet (docs/PROTOCOL.md, "CQL
//! native protocol v4 (codec)").
//!
//! Layers, each usable alone:
//! - [`frame`]: the 9-byte header and [`FrameDecoder`], which delimits frames in a byte
//!   buffer and types what cannot be delimited ([`FrameError`], version negotiation included);
//! - [`notation`]: [int], [string], [value], [inet]... readers and writers;
//! - [`request`] and [`response`]: typed messages and their bodies;
//! - this module: whole messages in frames, with the frame flags (compression, tracing,
//!   custom payload, warnings) applied: [`encode_request`], [`decode_request`],
//!   [`encode_response`], [`decode_response`].
//!
//! Requests are decoded strictly (bytes left after the message are an error); responses
//! leniently (the spec asks clients to ignore bytes after what they know).

pub mod compression;
pub mod frame;
pub mod notation;
pub mod request;
pub mod response;

pub use compression::{Compression, CompressionError};
pub use frame::{
    encode_frame, Direction, Frame, FrameDecoder, FrameError, Opcode, DEFAULT_MAX_FRAME_BYTES, EVENT_STREAM,
    HEADER_BYTES,
};
pub use notation::{BytesMap, Consistency, StringMap, StringMultimap, Uuid, Value};
pub use request::{
    startup_option, Batch, BatchKind, BatchQuery, BatchStatement, BoundValues, EventType, QueryParameters, Request,
};
pub use response::{
    ChangeType, ColumnSpec, Columns, DataType, ErrorBody, ErrorKind, Event, Prepared, PreparedMetadata, QueryResult,
    Response, Rows, RowsMetadata, SchemaChange, SchemaTarget, StatusChange, TableSpec, TopologyChange, WriteType,
};

use crate::codec::DecodeError;
use frame::flags;
use notation::{Reader, Writer};

/// A request with what its frame says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    pub stream: i16,
    /// The client asks for tracing (flag 0x02).
    pub tracing: bool,
    /// A custom payload (flag 0x04), which Cassandra's default handler ignores.
    pub custom_payload: Option<BytesMap>,
    pub request: Request,
}

impl RequestFrame {
    /// A request on `stream` without tracing or payload.
    pub fn new(stream: i16, request: Request) -> RequestFrame {
        RequestFrame { stream, tracing: false, custom_payload: None, request }
    }
}

/// A response with what its frame says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFrame {
    /// The request's stream, or [`EVENT_STREAM`] for an EVENT.
    pub stream: i16,
    /// The tracing session of a traced request (flag 0x02).
    pub tracing_id: Option<Uuid>,
    /// Warnings for the client (flag 0x08 when not empty).
    pub warnings: Vec<String>,
    /// A custom payload (flag 0x04).
    pub custom_payload: Option<BytesMap>,
    pub response: Response,
}

impl ResponseFrame {
    /// A response on `stream` without tracing, warnings or payload.
    pub fn new(stream: i16, response: Response) -> ResponseFrame {
        ResponseFrame { stream, tracing_id: None, warnings: Vec::new(), custom_payload: None, response }
    }

    /// An EVENT, on the stream the spec reserves for events ([`EVENT_STREAM`], -1).
    pub fn event(event: Event) -> ResponseFrame {
        ResponseFrame::new(EVENT_STREAM, Response::Event(event))
    }
}

/// Why a delimited frame does not hold a message. The frame's bytes are consumed, so the
/// connection can go on: a server answers PROTOCOL_ERROR on the frame's stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("malformed {opcode:?} message: {source}")]
    Malformed { opcode: Opcode, source: DecodeError },
    #[error("{opcode:?} is not a {expected:?} message")]
    UnexpectedOpcode { opcode: Opcode, expected: Direction },
    #[error("compressed {opcode:?} frame, but no compression was agreed in STARTUP")]
    NotNegotiated { opcode: Opcode },
    #[error("STARTUP frames are never compressed")]
    CompressedStartup,
    #[error("compressed {opcode:?} frame: {source}")]
    Compression { opcode: Opcode, source: CompressionError },
}

/// Appends a frame holding `body` (flags already chosen, except compression), compressing the
/// body with `compression` if given.
fn encode_message(
    direction: Direction,
    mut flag_bits: u8,
    stream: i16,
    opcode: Opcode,
    body: Vec<u8>,
    compression: Option<Compression>,
    out: &mut Vec<u8>,
) {
    let body = match compression {
        Some(algorithm) => {
            flag_bits |= flags::COMPRESSION;
            algorithm.compress(&body)
        }
        None => body,
    };
    out.reserve(HEADER_BYTES + body.len());
    frame::encode_header(direction, flag_bits, stream, opcode, body.len(), out);
    out.extend_from_slice(&body);
}

/// Appends `frame` as a v4 request frame, its body compressed with `compression` if given
/// (never a STARTUP's).
pub fn encode_request(frame: &RequestFrame, compression: Option<Compression>, out: &mut Vec<u8>) {
    let mut flag_bits = 0;
    let mut body = Vec::new();
    if frame.tracing {
        flag_bits |= flags::TRACING;
    }
    if let Some(payload) = &frame.custom_payload {
        flag_bits |= flags::CUSTOM_PAYLOAD;
        Writer::new(&mut body).bytes_map(payload);
    }
    request::encode_request_body(&frame.request, &mut body);
    let opcode = frame.request.opcode();
    let compression = compression.filter(|_| opcode != Opcode::Startup);
    encode_message(Direction::Request, flag_bits, frame.stream, opcode, body, compression, out);
}

/// Appends `frame` as a v4 response frame, its body compressed with `compression` if given.
pub fn encode_response(frame: &ResponseFrame, compression: Option<Compression>, out: &mut Vec<u8>) {
    let mut flag_bits = 0;
    let mut body = Vec::new();
    let mut w = Writer::new(&mut body);
    if let Some(id) = frame.tracing_id {
        flag_bits |= flags::TRACING;
        w.uuid(id);
    }
    if !frame.warnings.is_empty() {
        flag_bits |= flags::WARNING;
        w.string_list(&frame.warnings);
    }
    if let Some(payload) = &frame.custom_payload {
        flag_bits |= flags::CUSTOM_PAYLOAD;
        w.bytes_map(payload);
    }
    response::encode_response_body(&frame.response, &mut body);
    encode_message(Direction::Response, flag_bits, frame.stream, frame.response.opcode(), body, compression, out);
}

/// The body of `frame`, decompressed if its flag says so, at most `max_body_bytes` long.
fn plain_body(
    frame: &Frame,
    compression: Option<Compression>,
    max_body_bytes: usize,
) -> Result<std::borrow::Cow<'_, [u8]>, MessageError> {
    if frame.flags & flags::COMPRESSION == 0 {
        return Ok(std::borrow::Cow::Borrowed(&frame.body));
    }
    if frame.opcode == Opcode::Startup {
        return Err(MessageError::CompressedStartup);
    }
    let Some(algorithm) = compression else {
        return Err(MessageError::NotNegotiated { opcode: frame.opcode });
    };
    algorithm
        .decompress(&frame.body, max_body_bytes)
        .map(std::borrow::Cow::Owned)
        .map_err(|source| MessageError::Compression { opcode: frame.opcode, source })
}

/// Decodes the request `frame` holds. `compression` is what STARTUP agreed (a compressed
/// frame without it is an error); a decompressed body is bounded by `max_body_bytes` (pass
/// the decoder's frame limit). Bytes after the message are an error.
pub fn decode_request(
    frame: &Frame,
    compression: Option<Compression>,
    max_body_bytes: usize,
) -> Result<RequestFrame, MessageError> {
    let opcode = frame.opcode;
    if frame.direction != Direction::Request || opcode.direction() != Direction::Request {
        return Err(MessageError::UnexpectedOpcode { opcode, expected: Direction::Request });
    }
    let body = plain_body(frame, compression, max_body_bytes)?;
    let malformed = |source| MessageError::Malformed { opcode, source };
    let mut r = Reader::new(&body);
    let custom_payload =
        if frame.flags & flags::CUSTOM_PAYLOAD != 0 { Some(r.bytes_map().map_err(malformed)?) } else { None };
    let request = request::decode_request_body(opcode, &mut r).map_err(malformed)?;
    r.finish().map_err(malformed)?;
    Ok(RequestFrame { stream: frame.stream, tracing: frame.flags & flags::TRACING != 0, custom_payload, request })
}

/// Decodes the response `frame` holds, as [`decode_request`] does a request, except that
/// bytes after the message are ignored (spec section 1).
pub fn decode_response(
    frame: &Frame,
    compression: Option<Compression>,
    max_body_bytes: usize,
) -> Result<ResponseFrame, MessageError> {
    let opcode = frame.opcode;
    if frame.direction != Direction::Response || opcode.direction() != Direction::Response {
        return Err(MessageError::UnexpectedOpcode { opcode, expected: Direction::Response });
    }
    let body = plain_body(frame, compression, max_body_bytes)?;
    let malformed = |source| MessageError::Malformed { opcode, source };
    let mut r = Reader::new(&body);
    let tracing_id = if frame.flags & flags::TRACING != 0 { Some(r.uuid().map_err(malformed)?) } else { None };
    let warnings = if frame.flags & flags::WARNING != 0 { r.string_list().map_err(malformed)? } else { Vec::new() };
    let custom_payload =
        if frame.flags & flags::CUSTOM_PAYLOAD != 0 { Some(r.bytes_map().map_err(malformed)?) } else { None };
    let response = response::decode_response_body(opcode, &mut r).map_err(malformed)?;
    Ok(ResponseFrame { stream: frame.stream, tracing_id, warnings, custom_payload, response })
}

/// Appends the answer a server writes for a frame it could not delimit: a PROTOCOL_ERROR on
/// the frame's stream, whose message is the error's text, in the version
/// [`FrameError::answer_version`] names (v4 for a newer client, so that drivers step down;
/// the client's own for an older one). The connection is closed after it unless
/// [`FrameError::skip`] says otherwise.
pub fn encode_frame_error_answer(error: &FrameError, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    let answer = Response::Error(ErrorBody::new(ErrorKind::Protocol, error.to_string()));
    response::encode_response_body(&answer, &mut body);
    match error {
        FrameError::UnsupportedVersion { version, stream } => {
            frame::encode_old_version_error(*version, *stream, &body, out);
        }
        _ => {
            frame::encode_header(Direction::Response, 0, error.stream(), Opcode::Error, body.len(), out);
            out.extend_from_slice(&body);
        }
    }
}

#[cfg(test)]
mod tests;

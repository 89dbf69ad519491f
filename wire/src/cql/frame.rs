//! Frames of the CQL native protocol v4 (spec section 2): the 9-byte big-endian header and a
//! sans-I/O decoder that delimits frames in a byte buffer, as `crate::frame::FrameDecoder`
//! does for EnigmaDB's own protocol. Bodies are not interpreted here (see `request` and
//! `response`); a compressed body stays compressed.

/// The protocol version this codec speaks.
pub const VERSION: u8 = 4;
/// The version byte of a request frame (direction bit clear).
pub const REQUEST_VERSION: u8 = VERSION;
/// The version byte of a response frame (direction bit set).
pub const RESPONSE_VERSION: u8 = 0x80 | VERSION;
/// The direction bit of the version byte.
const RESPONSE_BIT: u8 = 0x80;

/// Size of a v3/v4 frame header.
pub const HEADER_BYTES: usize = 9;
/// Size of a v1/v2 frame header (its stream id is one byte), read only to answer such a
/// client in its own version.
const OLD_HEADER_BYTES: usize = 8;

/// Largest frame the spec allows (header and body).
pub const SPEC_MAX_FRAME_BYTES: usize = 256 << 20;
/// Default frame limit (header and body): Cassandra's own `native_transport_max_frame_size`
/// default, and the limit of EnigmaDB's own protocol.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;
/// Smallest frame limit: a lower one could not carry an error message.
pub const MIN_MAX_FRAME_BYTES: usize = 4096;

/// The stream id of server-pushed EVENT frames.
pub const EVENT_STREAM: i16 = -1;

/// Frame flags (spec 2.2); other bits are unused and ignored.
pub mod flags {
    /// The body is compressed with the algorithm STARTUP agreed.
    pub const COMPRESSION: u8 = 0x01;
    /// A request asks for tracing; a response body starts with a tracing id.
    pub const TRACING: u8 = 0x02;
    /// The body starts (after any tracing id and warnings) with a [bytes map] payload.
    pub const CUSTOM_PAYLOAD: u8 = 0x04;
    /// A response body carries warnings (a [string list]) after any tracing id.
    pub const WARNING: u8 = 0x08;
}

/// Whether a frame is a request (client to server) or a response (server to client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    /// The v4 version byte for this direction.
    pub fn version_byte(self) -> u8 {
        match self {
            Direction::Request => REQUEST_VERSION,
            Direction::Response => RESPONSE_VERSION,
        }
    }
}

/// A message type (spec 2.4).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    Error = 0x00,
    Startup = 0x01,
    Ready = 0x02,
    Authenticate = 0x03,
    Options = 0x05,
    Supported = 0x06,
    Query = 0x07,
    Result = 0x08,
    Prepare = 0x09,
    Execute = 0x0A,
    Register = 0x0B,
    Event = 0x0C,
    Batch = 0x0D,
    AuthChallenge = 0x0E,
    AuthResponse = 0x0F,
    AuthSuccess = 0x10,
}

impl Opcode {
    pub const ALL: [Opcode; 16] = [
        Opcode::Error,
        Opcode::Startup,
        Opcode::Ready,
        Opcode::Authenticate,
        Opcode::Options,
        Opcode::Supported,
        Opcode::Query,
        Opcode::Result,
        Opcode::Prepare,
        Opcode::Execute,
        Opcode::Register,
        Opcode::Event,
        Opcode::Batch,
        Opcode::AuthChallenge,
        Opcode::AuthResponse,
        Opcode::AuthSuccess,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|op| op.code() == code)
    }

    /// The direction of the messages of this opcode.
    pub fn direction(self) -> Direction {
        match self {
            Opcode::Startup
            | Opcode::AuthResponse
            | Opcode::Options
            | Opcode::Query
            | Opcode::Prepare
            | Opcode::Execute
            | Opcode::Batch
            | Opcode::Register => Direction::Request,
            _ => Direction::Response,
        }
    }
}

/// One delimited frame: the header's fields and the body as received (still compressed if
/// the compression flag is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub direction: Direction,
    pub flags: u8,
    pub stream: i16,
    pub opcode: Opcode,
    pub body: Vec<u8>,
}

impl Frame {
    /// Bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_BYTES + self.body.len()
    }
}

/// Appends a v4 frame header for a body of `body_len` bytes. The caller keeps bodies within
/// the peer's limit; no limit allows a body past `u32::MAX` bytes.
pub fn encode_header(direction: Direction, flags: u8, stream: i16, opcode: Opcode, body_len: usize, out: &mut Vec<u8>) {
    debug_assert!(body_len <= SPEC_MAX_FRAME_BYTES, "a body of {body_len} bytes exceeds every frame limit");
    out.push(direction.version_byte());
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.push(opcode.code());
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
}

/// Appends `frame` (header, then body) to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    out.reserve(frame.wire_len());
    encode_header(frame.direction, frame.flags, frame.stream, frame.opcode, frame.body.len(), out);
    out.extend_from_slice(&frame.body);
}

/// Why bytes could not be delimited as a v4 frame. Only [`FrameError::UnknownOpcode`] leaves
/// the byte stream delimited ([`FrameError::skip`]); after the others the connection must be
/// closed, once the answer [`FrameError::stream`] and [`FrameError::answer_version`] describe
/// has been written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame of another protocol version. Its message contains the words drivers look for
    /// to step down to v4 (`unsupported protocol version`).
    #[error("Invalid or unsupported protocol version ({version}); supported versions are (4/v4)")]
    UnsupportedVersion { version: u8, stream: i16 },
    /// A v4 frame flowing the wrong way (a response sent to a server, or the reverse).
    #[error("unexpected {found:?} frame on stream {stream} (expected a {expected:?})")]
    WrongDirection { stream: i16, found: Direction, expected: Direction },
    #[error("frame of {len} bytes on stream {stream} exceeds the frame limit of {limit} bytes")]
    TooLarge { stream: i16, len: u64, limit: usize },
    #[error("unknown opcode {opcode:#04x} on stream {stream}")]
    UnknownOpcode { stream: i16, opcode: u8, consumed: usize },
}

impl FrameError {
    /// For a recoverable error, the bytes the bad frame occupies: drop them and go on reading.
    /// `None`: the connection must be closed after the answer.
    pub fn skip(&self) -> Option<usize> {
        match self {
            FrameError::UnknownOpcode { consumed, .. } => Some(*consumed),
            _ => None,
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.skip().is_none()
    }

    /// The stream a PROTOCOL_ERROR answer carries: the frame's own, as read from its header.
    pub fn stream(&self) -> i16 {
        match self {
            FrameError::UnsupportedVersion { stream, .. }
            | FrameError::WrongDirection { stream, .. }
            | FrameError::TooLarge { stream, .. }
            | FrameError::UnknownOpcode { stream, .. } => *stream,
        }
    }

    /// The version byte of the answer's header. A client of a newer version (v5, or a vendor
    /// version such as 0x41/0x42) gets a v4 response (0x84): drivers read that header, see
    /// PROTOCOL_ERROR with "unsupported protocol version", and reconnect speaking v4. A client
    /// of an older version (1 to 3) gets a response in its own version, the only one it can
    /// read ([`encode_old_version_error`] writes the v1/v2 header).
    pub fn answer_version(&self) -> u8 {
        match self {
            FrameError::UnsupportedVersion { version, .. } if (1..VERSION).contains(version) => RESPONSE_BIT | version,
            _ => RESPONSE_VERSION,
        }
    }
}

/// Appends an ERROR frame answering a client of version 1 to 3 in its own version: a v1/v2
/// header (8 bytes, one-byte stream) or a v3 header (the v4 layout), then the PROTOCOL_ERROR
/// body (`body` as [`crate::cql::response::encode_response_body`] writes it, the same bytes
/// in every version). For any other version it writes a v4 frame.
pub fn encode_old_version_error(version: u8, stream: i16, body: &[u8], out: &mut Vec<u8>) {
    if version == 1 || version == 2 {
        out.push(RESPONSE_BIT | version);
        out.push(0);
        out.push(stream as i8 as u8);
        out.push(Opcode::Error.code());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
        return;
    }
    let start = out.len();
    encode_header(Direction::Response, 0, stream, Opcode::Error, body.len(), out);
    if version == 3 {
        out[start] = RESPONSE_BIT | 3;
    }
    out.extend_from_slice(body);
}

/// Incremental v4 frame decoder for one direction. It keeps no buffer: the caller accumulates
/// received bytes, calls [`FrameDecoder::decode`], then drops the consumed prefix. Nothing is
/// allocated before a whole frame within the limit is present, so a hostile length costs
/// nothing.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    expected: Direction,
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder of frames flowing in direction `expected` (a server decodes requests),
    /// bounding header + body to `max_frame_bytes`, which is clamped into
    /// [`MIN_MAX_FRAME_BYTES`]..=[`SPEC_MAX_FRAME_BYTES`].
    pub fn new(expected: Direction, max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder { expected, max_frame_bytes: max_frame_bytes.clamp(MIN_MAX_FRAME_BYTES, SPEC_MAX_FRAME_BYTES) }
    }

    /// A decoder of requests with the default limit.
    pub fn requests() -> FrameDecoder {
        FrameDecoder::new(Direction::Request, DEFAULT_MAX_FRAME_BYTES)
    }

    /// A decoder of responses with the default limit.
    pub fn responses() -> FrameDecoder {
        FrameDecoder::new(Direction::Response, DEFAULT_MAX_FRAME_BYTES)
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Decodes the frame at the start of `buf`. `Ok(None)`: `buf` holds only part of a frame
    /// (read more and call again with the longer buffer). `Ok(Some((frame, n)))`: the frame
    /// took the first `n` bytes. Checks, in order, once the header is present (8 bytes for a
    /// v1/v2 version byte, else 9, so that the answer can name the client's stream): the
    /// version, the direction, the frame limit, and, once the body is present, the opcode.
    /// Flags are not checked: the spec says unknown flags are ignored.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(&version_byte) = buf.first() else {
            return Ok(None);
        };
        let version = version_byte & !RESPONSE_BIT;
        if version == 1 || version == 2 {
            let Some(header) = buf.get(..OLD_HEADER_BYTES) else {
                return Ok(None);
            };
            return Err(FrameError::UnsupportedVersion { version, stream: i16::from(header[2] as i8) });
        }
        let Some(header) = buf.get(..HEADER_BYTES) else {
            return Ok(None);
        };
        let flags = header[1];
        let stream = i16::from_be_bytes([header[2], header[3]]);
        let opcode = header[4];
        let body_len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { version, stream });
        }
        let direction = if version_byte & RESPONSE_BIT == 0 { Direction::Request } else { Direction::Response };
        if direction != self.expected {
            return Err(FrameError::WrongDirection { stream, found: direction, expected: self.expected });
        }
        let total = HEADER_BYTES as u64 + u64::from(body_len);
        if total > self.max_frame_bytes as u64 {
            return Err(FrameError::TooLarge { stream, len: total, limit: self.max_frame_bytes });
        }
        // `total` <= max_frame_bytes, a usize, so the conversion is exact.
        let consumed = total as usize;
        let Some(body) = buf.get(HEADER_BYTES..consumed) else {
            return Ok(None);
        };
        let Some(opcode) = Opcode::from_code(opcode) else {
            return Err(FrameError::UnknownOpcode { stream, opcode, consumed });
        };
        Ok(Some((Frame { direction, flags, stream, opcode, body: body.to_vec() }, consumed)))
    }
}

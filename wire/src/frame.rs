//! Frames of the EnigmaDB protocol: the fixed 24-byte header, encoding, and a sans-I/O
//! incremental decoder that any transport (std, tokio, glommio sockets) can feed.
//! This module owns only framing; it never interprets a body (see `protocol`) and never does I/O.
//! Layout and rules: docs/PROTOCOL.md, "Frames".

use bytemuck::{Pod, Zeroable};

/// First four bytes of every frame: `"ENGP"` (EnigmaDB protocol).
pub const FRAME_MAGIC: [u8; 4] = *b"ENGP";

/// The client protocol version this build speaks (frame layout and message bodies). Version 3
/// added the authentication step (AUTHENTICATE, AUTH_RESPONSE, AUTH_SUCCESS) and the error
/// codes `BadCredentials` and `Unauthorized`; version 2 added the shard fields of READY and
/// SUPPORTED, PREPARED's partition key markers and TOPOLOGY; version 1 is no longer spoken.
pub const PROTOCOL_VERSION: u8 = 3;

/// Every client protocol version this build can speak, oldest first. A server answers each
/// connection in the version its client speaks (version 2 clients keep working with a node
/// that does not ask for authentication).
pub const SUPPORTED_VERSIONS: [u8; 2] = [2, PROTOCOL_VERSION];

/// The version byte of peer protocol frames. It stays 1 when the client protocol changes: the
/// peer protocol versions its own bodies (the cluster layer's HELLO), and bumping this byte
/// would make nodes of consecutive releases refuse each other's frames for no reason.
pub const PEER_FRAME_VERSION: u8 = 1;

/// The frame versions [`FrameDecoder::decode_peer`] accepts.
const PEER_FRAME_VERSIONS: [u8; 1] = [PEER_FRAME_VERSION];

/// Size of [`FrameHeader`] on the wire.
pub const HEADER_BYTES: usize = std::mem::size_of::<FrameHeader>();

/// Default bound on a frame (header + body); a setting of both the server and the client.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// Smallest accepted frame limit: a limit below this could not carry an error message.
pub const MIN_MAX_FRAME_BYTES: usize = 4096;

/// Opcodes reserved for the peer (node to node) protocol, which shares this framing.
/// The client protocol never uses them; their table is the cluster layer's
/// (`enigmadb::cluster::opcodes`), and [`FrameDecoder::decode_peer`] accepts exactly these.
pub const PEER_OPCODES: std::ops::RangeInclusive<u8> = 0x40..=0x7F;

/// Bit set of frame flags. Version 1 defines none: a frame with any flag set is refused with
/// [`FrameError::UnsupportedFlags`] (a recoverable error), so a future flag can never be
/// silently misread by an old node.
pub const KNOWN_FLAGS: u16 = 0;

/// The fixed frame header. Every multi-byte field is a little-endian byte array, so the
/// struct has alignment 1, no padding, and can be viewed in place over any received bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct FrameHeader {
    pub magic: [u8; 4],
    pub version: u8,
    pub opcode: u8,
    /// u16, little endian.
    pub flags: [u8; 2],
    /// u16, little endian: the request this frame belongs to (answers carry the request's).
    pub stream: [u8; 2],
    /// u16, zero.
    pub reserved: [u8; 2],
    /// u32, little endian: bytes of body after the header.
    pub body_len: [u8; 4],
    /// u32, little endian: crc32c (Castagnoli) of the body.
    pub body_crc: [u8; 4],
    /// u32, little endian: crc32c of header bytes 0..20.
    pub header_crc: [u8; 4],
}

const _: () = assert!(HEADER_BYTES == 24);
/// Header bytes covered by `header_crc`.
const HEADER_CRC_COVERS: usize = 20;

impl FrameHeader {
    pub fn flags(&self) -> u16 {
        u16::from_le_bytes(self.flags)
    }
    pub fn stream(&self) -> u16 {
        u16::from_le_bytes(self.stream)
    }
    pub fn body_len(&self) -> u32 {
        u32::from_le_bytes(self.body_len)
    }
    pub fn body_crc(&self) -> u32 {
        u32::from_le_bytes(self.body_crc)
    }
    pub fn header_crc(&self) -> u32 {
        u32::from_le_bytes(self.header_crc)
    }
    /// The crc32c the header should carry, over its first 20 bytes.
    pub fn compute_header_crc(&self) -> u32 {
        crc32c::crc32c(&bytemuck::bytes_of(self)[..HEADER_CRC_COVERS])
    }
}

/// A message type. Numbers follow Cassandra's native protocol where a message has a
/// Cassandra counterpart; 0x40..=0x7F are reserved for the peer protocol ([`PEER_OPCODES`]).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opcode {
    Error = 0x00,
    Startup = 0x01,
    Ready = 0x02,
    /// The server asks for credentials before READY (version 3).
    Authenticate = 0x03,
    Options = 0x05,
    Supported = 0x06,
    Query = 0x07,
    Result = 0x08,
    Prepare = 0x09,
    Execute = 0x0A,
    Batch = 0x0D,
    /// The client's credentials, answering AUTHENTICATE (version 3).
    AuthResponse = 0x0F,
    /// The credentials are accepted: the connection is ready (version 3).
    AuthSuccess = 0x10,
    /// An operator's command (`enigmadb admin`); no Cassandra counterpart.
    Admin = 0x20,
    /// The cluster's nodes, shards and tokens, for token- and shard-aware clients; no Cassandra
    /// counterpart (its drivers read system tables and ScyllaDB's SUPPORTED options instead).
    Topology = 0x21,
}

impl Opcode {
    pub const ALL: [Opcode; 15] = [
        Opcode::Error,
        Opcode::Startup,
        Opcode::Ready,
        Opcode::Authenticate,
        Opcode::AuthResponse,
        Opcode::AuthSuccess,
        Opcode::Options,
        Opcode::Supported,
        Opcode::Query,
        Opcode::Result,
        Opcode::Prepare,
        Opcode::Execute,
        Opcode::Batch,
        Opcode::Admin,
        Opcode::Topology,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Opcode> {
        Opcode::ALL.into_iter().find(|op| op.code() == code)
    }

    /// Sent by clients (as opposed to answers sent by servers).
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Opcode::Startup
                | Opcode::AuthResponse
                | Opcode::Options
                | Opcode::Query
                | Opcode::Prepare
                | Opcode::Execute
                | Opcode::Batch
                | Opcode::Admin
                | Opcode::Topology
        )
    }
}

/// One decoded frame: the header's meaning plus the checked body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub opcode: Opcode,
    pub flags: u16,
    pub stream: u16,
    pub body: Vec<u8>,
}

impl Frame {
    pub fn new(opcode: Opcode, stream: u16, body: Vec<u8>) -> Frame {
        Frame { opcode, flags: 0, stream, body }
    }

    /// Bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_BYTES + self.body.len()
    }
}

/// Appends `frame` (header, then body) to `out`. The caller keeps frames within the peer's
/// limit (the decoder on the other side refuses larger ones); a body can never exceed
/// `u32::MAX` bytes because no limit allows it.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    encode_frame_as(PROTOCOL_VERSION, frame, out);
}

/// [`encode_frame`] with the header's version byte set to `version`, one of
/// [`SUPPORTED_VERSIONS`]: a server answers a client in the version the client speaks.
pub fn encode_frame_as(version: u8, frame: &Frame, out: &mut Vec<u8>) {
    debug_assert!(SUPPORTED_VERSIONS.contains(&version), "version {version} is not spoken");
    encode_raw(version, frame.opcode.code(), frame.flags, frame.stream, &frame.body, out);
}

/// A frame of the peer (node to node) protocol: the same header and checks as [`Frame`], with
/// an opcode in [`PEER_OPCODES`] that this crate does not interpret (the cluster layer owns the
/// table) and no flags (version 1 defines none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFrame {
    pub opcode: u8,
    pub stream: u16,
    pub body: Vec<u8>,
}

impl PeerFrame {
    /// Bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_BYTES + self.body.len()
    }
}

/// Appends a peer frame to `out`, as [`encode_frame`] does a client frame.
pub fn encode_peer_frame(frame: &PeerFrame, out: &mut Vec<u8>) {
    debug_assert!(PEER_OPCODES.contains(&frame.opcode), "{:#x} is not a peer opcode", frame.opcode);
    encode_raw(PEER_FRAME_VERSION, frame.opcode, 0, frame.stream, &frame.body, out);
}

fn encode_raw(version: u8, opcode: u8, flags: u16, stream: u16, body: &[u8], out: &mut Vec<u8>) {
    debug_assert!(body.len() <= u32::MAX as usize);
    let mut header = FrameHeader {
        magic: FRAME_MAGIC,
        version,
        opcode,
        flags: flags.to_le_bytes(),
        stream: stream.to_le_bytes(),
        reserved: [0; 2],
        body_len: (body.len() as u32).to_le_bytes(),
        body_crc: crc32c::crc32c(body).to_le_bytes(),
        header_crc: [0; 4],
    };
    header.header_crc = header.compute_header_crc().to_le_bytes();
    out.reserve(HEADER_BYTES + body.len());
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(body);
}

/// Why bytes could not be decoded as a frame. [`FrameError::skip`] says whether the connection
/// can continue: recoverable errors come from a frame whose header is intact (so its length and
/// stream are trusted) and are answered with an ERROR on that stream; the others mean the byte
/// stream can no longer be delimited, so the connection must be closed (after a protocol ERROR
/// on stream 0, or on the frame's stream when it is known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {found:02x?} (expected {FRAME_MAGIC:02x?}): not an EnigmaDB protocol stream")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported protocol version {version} (this node speaks {supported:?})")]
    UnsupportedVersion { version: u8, supported: &'static [u8] },
    #[error("frame header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("frame header reserved bytes are not zero: {found:02x?}")]
    ReservedNotZero { found: [u8; 2] },
    #[error("frame of {len} bytes on stream {stream} exceeds the frame limit of {limit} bytes")]
    TooLarge { stream: u16, len: u64, limit: usize },
    #[error("unknown opcode {opcode:#04x} on stream {stream}")]
    UnknownOpcode { stream: u16, opcode: u8, consumed: usize },
    #[error("unsupported frame flags {flags:#06x} on stream {stream}")]
    UnsupportedFlags { stream: u16, flags: u16, consumed: usize },
    #[error("frame body checksum mismatch on stream {stream} (stored {stored:#010x}, computed {computed:#010x})")]
    BodyChecksum { stream: u16, stored: u32, computed: u32, consumed: usize },
}

impl FrameError {
    /// For a recoverable error, the bytes the bad frame occupies: drop them and go on reading.
    /// `None` means the connection must be closed.
    pub fn skip(&self) -> Option<usize> {
        match self {
            FrameError::UnknownOpcode { consumed, .. }
            | FrameError::UnsupportedFlags { consumed, .. }
            | FrameError::BodyChecksum { consumed, .. } => Some(*consumed),
            _ => None,
        }
    }

    pub fn is_fatal(&self) -> bool {
        self.skip().is_none()
    }

    /// The stream an ERROR answer should carry: the frame's own stream when its header could
    /// be trusted, else 0 (reserved for connection-level messages).
    pub fn stream(&self) -> u16 {
        match self {
            FrameError::TooLarge { stream, .. }
            | FrameError::UnknownOpcode { stream, .. }
            | FrameError::UnsupportedFlags { stream, .. }
            | FrameError::BodyChecksum { stream, .. } => *stream,
            _ => 0,
        }
    }
}

/// Incremental frame decoder. It keeps no buffer: the caller accumulates received bytes and
/// calls [`FrameDecoder::decode`] on them, then drops the consumed prefix. Nothing is allocated
/// before a whole frame within the limit is present, so a hostile length costs nothing.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
    /// The version byte of the last frame decoded (0 before the first).
    last_version: u8,
}

impl FrameDecoder {
    /// `max_frame_bytes` bounds header + body; it is raised to [`MIN_MAX_FRAME_BYTES`] if lower.
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder { max_frame_bytes: max_frame_bytes.max(MIN_MAX_FRAME_BYTES), last_version: 0 }
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// The protocol version of the last frame [`decode`](Self::decode) returned (one of the
    /// versions it accepts), `None` before the first: a server answers in it.
    pub fn last_version(&self) -> Option<u8> {
        (self.last_version != 0).then_some(self.last_version)
    }

    /// Decodes the frame at the start of `buf`. `Ok(None)`: `buf` holds only part of a frame
    /// (read more and call again with the longer buffer). `Ok(Some((frame, n)))`: the frame
    /// took the first `n` bytes. Checks, in order: magic, version (before any checksum, so a
    /// newer peer is reported as such), header checksum, reserved bytes, the frame limit, and,
    /// once the whole body is present, opcode, flags and body checksum.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        let decoded = self.decode_with(buf, &SUPPORTED_VERSIONS, Opcode::from_code)?;
        Ok(decoded.map(|(opcode, flags, stream, body, used)| (Frame { opcode, flags, stream, body }, used)))
    }

    /// As [`FrameDecoder::decode`], for the peer protocol: an opcode outside [`PEER_OPCODES`]
    /// (a client opcode included) is `UnknownOpcode`.
    pub fn decode_peer(&mut self, buf: &[u8]) -> Result<Option<(PeerFrame, usize)>, FrameError> {
        let decoded =
            self.decode_with(buf, &PEER_FRAME_VERSIONS, |code| PEER_OPCODES.contains(&code).then_some(code))?;
        Ok(decoded.map(|(opcode, _, stream, body, used)| (PeerFrame { opcode, stream, body }, used)))
    }

    /// The checks of [`FrameDecoder::decode`], with `versions` the frame versions accepted and
    /// `opcode_of` deciding which opcodes exist. Returns the opcode, flags, stream, body and
    /// the bytes the frame took.
    #[allow(clippy::type_complexity)]
    fn decode_with<O>(
        &mut self,
        buf: &[u8],
        versions: &'static [u8],
        opcode_of: impl Fn(u8) -> Option<O>,
    ) -> Result<Option<(O, u16, u16, Vec<u8>, usize)>, FrameError> {
        // Reject a wrong magic or version as soon as the bytes that carry them arrive, so a
        // client speaking another protocol gets its answer without having to send 24 bytes.
        let magic_seen = buf.len().min(FRAME_MAGIC.len());
        if buf[..magic_seen] != FRAME_MAGIC[..magic_seen] {
            let mut found = [0u8; 4];
            found[..magic_seen].copy_from_slice(&buf[..magic_seen]);
            return Err(FrameError::BadMagic { found });
        }
        if let Some(&version) = buf.get(4) {
            if !versions.contains(&version) {
                return Err(FrameError::UnsupportedVersion { version, supported: versions });
            }
        }
        let Some(header_bytes) = buf.get(..HEADER_BYTES) else {
            return Ok(None);
        };
        let header: FrameHeader = bytemuck::pod_read_unaligned(header_bytes);
        let computed = header.compute_header_crc();
        if computed != header.header_crc() {
            return Err(FrameError::HeaderChecksum { stored: header.header_crc(), computed });
        }
        if header.reserved != [0; 2] {
            return Err(FrameError::ReservedNotZero { found: header.reserved });
        }
        let stream = header.stream();
        let total = HEADER_BYTES as u64 + u64::from(header.body_len());
        if total > self.max_frame_bytes as u64 {
            return Err(FrameError::TooLarge { stream, len: total, limit: self.max_frame_bytes });
        }
        // `total` <= max_frame_bytes, a usize, so the conversion is exact.
        let consumed = total as usize;
        let Some(body) = buf.get(HEADER_BYTES..consumed) else {
            return Ok(None);
        };
        let Some(opcode) = opcode_of(header.opcode) else {
            return Err(FrameError::UnknownOpcode { stream, opcode: header.opcode, consumed });
        };
        let flags = header.flags();
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::UnsupportedFlags { stream, flags, consumed });
        }
        let computed = crc32c::crc32c(body);
        if computed != header.body_crc() {
            return Err(FrameError::BodyChecksum { stream, stored: header.body_crc(), computed, consumed });
        }
        self.last_version = header.version;
        Ok(Some((opcode, flags, stream, body.to_vec(), consumed)))
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn any_opcode() -> impl Strategy<Value = Opcode> {
        proptest::sample::select(Opcode::ALL.to_vec())
    }

    pub fn any_frame() -> impl Strategy<Value = Frame> {
        (any_opcode(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(opcode, stream, body)| Frame::new(opcode, stream, body))
    }

    fn encoded(frame: &Frame) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(frame, &mut out);
        out
    }

    /// Re-seals the header checksum after a test edited header bytes.
    fn reseal(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[..HEADER_CRC_COVERS]);
        bytes[HEADER_CRC_COVERS..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    }

    proptest! {
        #[test]
        fn frames_round_trip_back_to_back(frames in proptest::collection::vec(any_frame(), 1..5)) {
            let mut bytes = Vec::new();
            frames.iter().for_each(|f| encode_frame(f, &mut bytes));
            let mut decoder = FrameDecoder::default();
            let mut at = 0;
            for frame in &frames {
                let (back, used) = decoder.decode(&bytes[at..]).unwrap().unwrap();
                prop_assert_eq!(&back, frame);
                prop_assert_eq!(used, frame.wire_len());
                at += used;
            }
            prop_assert_eq!(at, bytes.len());
        }

        #[test]
        fn header_fields_round_trip(frame in any_frame()) {
            let bytes = encoded(&frame);
            let header: FrameHeader = bytemuck::pod_read_unaligned(&bytes[..HEADER_BYTES]);
            prop_assert_eq!(header.magic, FRAME_MAGIC);
            prop_assert_eq!(header.version, PROTOCOL_VERSION);
            prop_assert_eq!(header.opcode, frame.opcode.code());
            prop_assert_eq!(header.stream(), frame.stream);
            prop_assert_eq!(header.body_len() as usize, frame.body.len());
            prop_assert_eq!(header.body_crc(), crc32c::crc32c(&frame.body));
            prop_assert_eq!(header.header_crc(), header.compute_header_crc());
        }

        #[test]
        fn every_split_point_asks_for_more_bytes(frame in any_frame()) {
            let bytes = encoded(&frame);
            let mut decoder = FrameDecoder::default();
            for cut in 0..bytes.len() {
                prop_assert_eq!(decoder.decode(&bytes[..cut]), Ok(None), "cut at {}", cut);
            }
            prop_assert_eq!(decoder.decode(&bytes).unwrap().map(|(f, _)| f), Some(frame));
        }
    }

    #[test]
    fn header_is_24_bytes_with_documented_offsets() {
        let bytes = encoded(&Frame { opcode: Opcode::Query, flags: 0, stream: 0x0102, body: vec![9; 5] });
        assert_eq!(&bytes[0..4], b"ENGP");
        assert_eq!(bytes[4], PROTOCOL_VERSION);
        assert_eq!(bytes[5], 0x07);
        assert_eq!(&bytes[6..8], &[0, 0]);
        assert_eq!(&bytes[8..10], &[0x02, 0x01]);
        assert_eq!(&bytes[10..12], &[0, 0]);
        assert_eq!(&bytes[12..16], &5u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &crc32c::crc32c(&[9; 5]).to_le_bytes());
        assert_eq!(&bytes[20..24], &crc32c::crc32c(&bytes[..20]).to_le_bytes());
        assert_eq!(bytes.len(), 29);
    }

    #[test]
    fn bad_magic_is_fatal_from_the_first_byte() {
        let mut decoder = FrameDecoder::default();
        let err = decoder.decode(b"G").unwrap_err();
        assert_eq!(err, FrameError::BadMagic { found: *b"G\0\0\0" });
        assert!(err.is_fatal());
        assert_eq!(err.stream(), 0);
        let http = b"GET / HTTP/1.1\r\n\r\n";
        assert!(matches!(decoder.decode(http), Err(FrameError::BadMagic { found }) if &found == b"GET "));
    }

    #[test]
    fn unknown_version_is_fatal_before_the_checksum() {
        let mut bytes = encoded(&Frame::new(Opcode::Options, 3, vec![]));
        bytes[4] = 1;
        let err = FrameDecoder::default().decode(&bytes[..5]).unwrap_err();
        assert_eq!(err, FrameError::UnsupportedVersion { version: 1, supported: &SUPPORTED_VERSIONS });
        assert!(err.is_fatal());
        assert!(err.to_string().contains("version 1 (this node speaks [2, 3])"), "{err}");
    }

    #[test]
    fn corrupt_header_is_fatal() {
        let mut bytes = encoded(&Frame::new(Opcode::Query, 3, vec![1, 2, 3]));
        bytes[13] ^= 0x40; // body length
        let err = FrameDecoder::default().decode(&bytes).unwrap_err();
        assert!(matches!(err, FrameError::HeaderChecksum { .. }), "{err:?}");
        assert!(err.is_fatal());

        let mut bytes = encoded(&Frame::new(Opcode::Query, 3, vec![1, 2, 3]));
        bytes[10] = 1;
        reseal(&mut bytes);
        assert_eq!(FrameDecoder::default().decode(&bytes), Err(FrameError::ReservedNotZero { found: [1, 0] }));
    }

    #[test]
    fn oversized_frame_is_refused_from_its_header_alone() {
        let mut bytes = encoded(&Frame::new(Opcode::Query, 77, vec![]));
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut bytes);
        let err = FrameDecoder::new(1 << 20).decode(&bytes).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { stream: 77, len: u64::from(u32::MAX) + 24, limit: 1 << 20 });
        assert!(err.is_fatal());
        assert_eq!(err.stream(), 77);

        // Exactly at the limit is fine.
        let frame = Frame::new(Opcode::Query, 1, vec![0; 4096 - HEADER_BYTES]);
        assert!(FrameDecoder::new(4096).decode(&encoded(&frame)).unwrap().is_some());
        let frame = Frame::new(Opcode::Query, 1, vec![0; 4096 - HEADER_BYTES + 1]);
        assert!(matches!(FrameDecoder::new(4096).decode(&encoded(&frame)), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn unknown_opcode_bad_flags_and_body_checksum_are_recoverable() {
        let frame = Frame::new(Opcode::Query, 5, vec![1, 2, 3]);
        let next = encoded(&Frame::new(Opcode::Options, 6, vec![]));

        let mut bytes = encoded(&frame);
        bytes[5] = 0x41; // a peer-protocol opcode this build does not know
        reseal(&mut bytes);
        let err = FrameDecoder::default().decode(&bytes).unwrap_err();
        assert_eq!(err, FrameError::UnknownOpcode { stream: 5, opcode: 0x41, consumed: 27 });

        let mut bytes = encoded(&frame);
        bytes[6] = 0x80;
        reseal(&mut bytes);
        let err = FrameDecoder::default().decode(&bytes).unwrap_err();
        assert_eq!(err, FrameError::UnsupportedFlags { stream: 5, flags: 0x80, consumed: 27 });

        let mut bytes = encoded(&frame);
        bytes[HEADER_BYTES + 1] ^= 1;
        bytes.extend_from_slice(&next);
        let mut decoder = FrameDecoder::default();
        let err = decoder.decode(&bytes).unwrap_err();
        assert!(matches!(err, FrameError::BodyChecksum { stream: 5, consumed: 27, .. }), "{err:?}");
        assert_eq!(err.stream(), 5);
        // The connection goes on: the next frame decodes after the skipped one.
        let skip = err.skip().unwrap();
        let (after, _) = decoder.decode(&bytes[skip..]).unwrap().unwrap();
        assert_eq!(after.stream, 6);
    }

    #[test]
    fn peer_frames_round_trip_and_refuse_client_opcodes() {
        let frame = PeerFrame { opcode: 0x48, stream: 513, body: vec![1, 2, 3] };
        let mut bytes = Vec::new();
        encode_peer_frame(&frame, &mut bytes);
        assert_eq!(bytes.len(), frame.wire_len());
        assert_eq!(bytes[4], PEER_FRAME_VERSION, "peer frames keep their own version");
        let mut decoder = FrameDecoder::default();
        assert_eq!(decoder.decode_peer(&bytes), Ok(Some((frame.clone(), 27))));
        // Each decoder refuses the other protocol's frame version, and, past it, its opcodes.
        assert!(matches!(decoder.decode(&bytes), Err(FrameError::UnsupportedVersion { version: 1, .. })));
        let mut as_client = bytes.clone();
        as_client[4] = PROTOCOL_VERSION;
        reseal(&mut as_client);
        assert!(matches!(decoder.decode(&as_client), Err(FrameError::UnknownOpcode { opcode: 0x48, .. })));
        let mut client = encoded(&Frame::new(Opcode::Query, 9, vec![]));
        let err = decoder.decode_peer(&client).unwrap_err();
        assert_eq!(err, FrameError::UnsupportedVersion { version: PROTOCOL_VERSION, supported: &PEER_FRAME_VERSIONS });
        client[4] = PEER_FRAME_VERSION;
        reseal(&mut client);
        let err = decoder.decode_peer(&client).unwrap_err();
        assert_eq!(err, FrameError::UnknownOpcode { stream: 9, opcode: 0x07, consumed: 24 });
        // Every other check is the client decoder's.
        bytes[HEADER_BYTES] ^= 1;
        assert!(matches!(decoder.decode_peer(&bytes), Err(FrameError::BodyChecksum { stream: 513, .. })));
        assert_eq!(decoder.decode_peer(&bytes[..10]), Ok(None));
    }

    #[test]
    fn opcodes_have_unique_codes_outside_the_peer_range() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_code(op.code()), Some(op));
            assert!(!PEER_OPCODES.contains(&op.code()));
        }
        assert_eq!(Opcode::from_code(0x04), None);
    }
}

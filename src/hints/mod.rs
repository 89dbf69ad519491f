//! Hinted handoff: a coordinator keeps the writes a replica missed (a hint per write and
//! replica) in a per-target log under its data directory, and replays them when the target is
//! seen up again. This module is the pure part: the byte layout of hint segments
//! (docs/FORMAT.md, "Hint segment"), their names, and the decisions (admit, expire) made on
//! numbers the caller passes. The glommio part (files, writer, replay) is `store`; nothing here
//! does I/O or reads a clock.

pub mod store;
#[cfg(test)]
mod tests;

use std::time::Duration;

use shards::wal::format::{decode_record, encode_record, framed_len, Decoded};

use crate::cluster::HostId;

pub use store::{HintCounts, HintStore};

/// The first 8 bytes of every hint segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ENIGHINT";
/// The only hint segment version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the segment header: magic, version, reserved, target host id, crc32c.
pub const SEGMENT_HEADER_LEN: usize = 8 + 2 + 2 + 16 + 4;
/// Bytes of a record payload before its MUTATE body: the creation time.
const PAYLOAD_PREFIX_LEN: usize = 8;
/// File name extension of hint segments.
const SEGMENT_EXTENSION: &str = ".hints";

/// Default of `max_hint_window`: no new hints for a node down longer than this, and hints older
/// than this are dropped at replay (Cassandra's 3 hours).
pub const DEFAULT_MAX_HINT_WINDOW: Duration = Duration::from_secs(3 * 3600);
/// Default bound on the hint bytes kept for one target.
pub const DEFAULT_MAX_HINTS_BYTES_PER_HOST: u64 = 128 << 20;
/// Default replay rate in KiB/s (Cassandra's `hinted_handoff_throttle`).
pub const DEFAULT_THROTTLE_KIB: u64 = 1024;

/// The settings of hinted handoff (docs/enigmadb.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintSettings {
    /// Store new hints (hints already stored are replayed either way).
    pub enabled: bool,
    pub max_hint_window: Duration,
    /// Bound on the bytes of hints kept for one target (segments on disk plus queued).
    pub max_bytes_per_host: u64,
    /// Replay rate of the whole coordinator, KiB/s; 0 = unlimited.
    pub throttle_kib: u64,
}

impl Default for HintSettings {
    fn default() -> Self {
        HintSettings {
            enabled: true,
            max_hint_window: DEFAULT_MAX_HINT_WINDOW,
            max_bytes_per_host: DEFAULT_MAX_HINTS_BYTES_PER_HOST,
            throttle_kib: DEFAULT_THROTTLE_KIB,
        }
    }
}

/// Why a hint was not stored, or not delivered (the `reason` label of the dropped counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The target had been down longer than the hint window when the write failed.
    Window,
    /// The target's hints already fill `max_bytes_per_host`.
    SizeLimit,
    /// The writer's queue was full (the disk is slower than the failures).
    Overload,
    /// The hint outlived the window before it could be replayed.
    Expired,
    /// The hint could not be read back (a damaged record, or a body that does not decode).
    Corrupt,
    /// Writing the hint to its segment failed.
    WriteFailed,
    /// Its table was dropped before the hint could be replayed.
    TableDropped,
}

impl DropReason {
    /// Every reason, in declaration order (`reason as usize` indexes it).
    pub const ALL: [DropReason; 7] = [
        DropReason::Window,
        DropReason::SizeLimit,
        DropReason::Overload,
        DropReason::Expired,
        DropReason::Corrupt,
        DropReason::WriteFailed,
        DropReason::TableDropped,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Window => "window",
            DropReason::SizeLimit => "size_limit",
            DropReason::Overload => "overload",
            DropReason::Expired => "expired",
            DropReason::Corrupt => "corrupt",
            DropReason::WriteFailed => "write_failed",
            DropReason::TableDropped => "table_dropped",
        }
    }
}

/// Whether a new hint of `hint_bytes` (framed) for a target may be stored: the target has been
/// down for `down_for` (None: it was up when the write failed) and already has `pending_bytes`.
pub fn admit(
    settings: &HintSettings,
    down_for: Option<Duration>,
    pending_bytes: u64,
    hint_bytes: u64,
) -> Result<(), DropReason> {
    if down_for.is_some_and(|d| d > settings.max_hint_window) {
        return Err(DropReason::Window);
    }
    if pending_bytes.saturating_add(hint_bytes) > settings.max_bytes_per_host {
        return Err(DropReason::SizeLimit);
    }
    Ok(())
}

/// Whether a hint created at `created_micros` has outlived the window at `now_micros` (both
/// wall-clock microseconds since the Unix epoch).
pub fn expired(settings: &HintSettings, created_micros: u64, now_micros: u64) -> bool {
    let window = u64::try_from(settings.max_hint_window.as_micros()).unwrap_or(u64::MAX);
    now_micros.saturating_sub(created_micros) > window
}

/// `<target host id, 32 hex digits>-<sequence, 20 digits>.hints`: the names of one target
/// sort like their sequence numbers.
pub fn segment_file_name(target: HostId, seq: u64) -> String {
    format!("{target:032x}-{seq:020}{SEGMENT_EXTENSION}")
}

/// The target and sequence number in a segment file name, or None if it is not one.
pub fn parse_segment_file_name(name: &str) -> Option<(HostId, u64)> {
    let stem = name.strip_suffix(SEGMENT_EXTENSION)?;
    let (host, seq) = stem.split_once('-')?;
    let hex = host.len() == 32 && host.bytes().all(|b| b.is_ascii_hexdigit());
    let digits = seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit());
    if !hex || !digits {
        return None;
    }
    Some((HostId::from_str_radix(host, 16).ok()?, seq.parse().ok()?))
}

/// The header of a new segment for `target`.
pub fn encode_segment_header(target: HostId) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEGMENT_HEADER_LEN);
    out.extend_from_slice(&SEGMENT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&target.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Appends record number `seq` (1 for a segment's first) of a hint created at `created_micros`
/// carrying `mutate` (a MUTATE body: data message version, then a mutation batch).
pub fn encode_record_into(seq: u64, created_micros: u64, mutate: &[u8], out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(PAYLOAD_PREFIX_LEN + mutate.len());
    payload.extend_from_slice(&created_micros.to_le_bytes());
    payload.extend_from_slice(mutate);
    encode_record(seq, &payload, out);
}

/// Bytes a hint with a `mutate_len`-byte body occupies in a segment.
pub fn record_len(mutate_len: usize) -> u64 {
    framed_len(PAYLOAD_PREFIX_LEN + mutate_len) as u64
}

/// Why a segment cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("{len} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header")]
    TooShort { len: usize },
    #[error("bad magic number: not a hint segment")]
    BadMagic,
    #[error("format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u16),
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("reserved header bytes are not zero")]
    Reserved,
}

/// One hint read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintRecord<'a> {
    pub created_micros: u64,
    /// The MUTATE body as the coordinator sent it (not yet decoded).
    pub mutate: &'a [u8],
    /// Bytes the record occupies in the segment.
    pub framed_len: u64,
}

/// A segment's records up to its end or its first damaged record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan<'a> {
    pub target: HostId,
    pub records: Vec<HintRecord<'a>>,
    /// Where reading stopped early and why (a torn tail after a crash, or damage): the bytes
    /// from there on are skipped.
    pub damage: Option<(u64, String)>,
}

/// Reads a segment's header and every record after it, in order. Records are numbered from 1;
/// the first record that is not the next valid one ends the scan (reported in `damage`).
pub fn scan_segment(bytes: &[u8]) -> Result<SegmentScan<'_>, SegmentError> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err(SegmentError::TooShort { len: bytes.len() });
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err(SegmentError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != FORMAT_VERSION {
        return Err(SegmentError::UnsupportedVersion(version));
    }
    let crc_at = SEGMENT_HEADER_LEN - 4;
    let stored = u32::from_le_bytes([bytes[crc_at], bytes[crc_at + 1], bytes[crc_at + 2], bytes[crc_at + 3]]);
    let computed = crc32c::crc32c(&bytes[..crc_at]);
    if stored != computed {
        return Err(SegmentError::HeaderChecksum { stored, computed });
    }
    if bytes[10..12] != [0, 0] {
        return Err(SegmentError::Reserved);
    }
    let mut host = [0u8; 16];
    host.copy_from_slice(&bytes[12..28]);
    let target = HostId::from_le_bytes(host);
    let mut records = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    let damage = loop {
        let next = records.len() as u64 + 1;
        match decode_record(&bytes[at..]) {
            Decoded::End => break None,
            Decoded::Damaged(damage) => break Some((at as u64, damage.to_string())),
            Decoded::Record { lsn, .. } if lsn != next => {
                break Some((at as u64, format!("record number {lsn}, expected {next}")));
            }
            Decoded::Record { payload, framed_len, .. } => {
                if payload.len() < PAYLOAD_PREFIX_LEN {
                    break Some((at as u64, format!("record of {} bytes has no creation time", payload.len())));
                }
                let (created, mutate) = payload.split_at(PAYLOAD_PREFIX_LEN);
                let mut micros = [0u8; 8];
                micros.copy_from_slice(created);
                records.push(HintRecord {
                    created_micros: u64::from_le_bytes(micros),
                    mutate,
                    framed_len: framed_len as u64,
                });
                at += framed_len;
            }
        }
    };
    Ok(SegmentScan { target, records, damage })
}

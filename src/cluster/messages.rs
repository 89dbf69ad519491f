//! The bodies of the peer protocol's data messages: MUTATE, READ, READ_RESULT, SCAN and
//! SCAN_RESULT (docs/PROTOCOL.md, "Peer protocol: data messages"; PEER_ERROR belongs to the
//! transport, `transport::RemoteError`; the typed messages built on these are `verbs`). Pure
//! encoding: no I/O here, and a decoder trusts no byte (versions, bounds and ordering are
//! checked; bad input is a typed error, never a panic).

use std::collections::BTreeMap;
use std::ops::Bound;

use shards::key::{ClusteringKey, PartitionKey};
use shards::mutation::{decode_batch, encode_batch, PartitionUpdate};
use shards::row::{ClusteringSlice, Partition, SliceLimit};
use shards::row_codec::{decode_deletion, decode_row, encode_deletion, encode_row};
use shards::scan::{ScanBound, ScanPage, ScanResume};
use wire::codec::{DecodeError, Reader, Writer};
use wire::schema::TableId;
use wire::token::murmur3_x64_128_cassandra;
use wire::Token;

/// Version byte that starts every data message body.
pub const DATA_MESSAGE_VERSION: u8 = 1;
/// Bound on the partitions one SCAN may ask for and one SCAN_RESULT may carry.
pub const MAX_SCAN_PARTITIONS: usize = 1024;
/// Why a data message body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{message} body has version {found}; this node speaks version {DATA_MESSAGE_VERSION}")]
    Version { message: &'static str, found: u8 },
    #[error("malformed {message} body: {source}")]
    Malformed { message: &'static str, source: DecodeError },
    #[error("{message} asks for {asked} partitions, above the limit of {MAX_SCAN_PARTITIONS}")]
    ScanTooLarge { message: &'static str, asked: usize },
    /// A gossip body (`cluster::gossip`), worded as the gossip handlers always answered it.
    #[error("{message}: {source}")]
    Gossip { message: &'static str, source: DecodeError },
    /// A SCHEMA or SCHEMA_PUSH body (`cluster::schema`).
    #[error("{message}: {reason}")]
    Schema { message: &'static str, reason: String },
    #[error("opcode {0:#04x} is not a peer request")]
    NotARequest(u8),
    #[error("opcode {0:#04x} is not a peer answer")]
    NotAnAnswer(u8),
}

/// A 128-bit digest of a partition's stored versions (tombstones included), so replicas can
/// compare what they hold without sending it. Equal partitions have equal digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub u128);

/// READ: one partition's rows in a clustering slice, or only their digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: TableId,
    pub key: PartitionKey,
    pub slice: ClusteringSlice,
    pub digest_only: bool,
    /// Rows from the slice's start up to this many live ones (a page), not the whole slice;
    /// at least 1. None: the whole slice (what a node before the limit existed always reads).
    pub limit: Option<u32>,
    /// Stored bytes (`shards::scan::row_bytes`) after which the answer ends, at least one row
    /// in; at most [`MAX_READ_ANSWER_BYTES`], so no answer outgrows a peer frame. None: no
    /// byte bound (what a node before byte bounds always reads).
    pub max_bytes: Option<u32>,
}

impl ReadRequest {
    /// How much of the slice the replica reads (`row::limited_cut` of the answer says where
    /// it may have stopped); None: all of it.
    pub fn slice_limit(&self) -> Option<SliceLimit> {
        if self.limit.is_none() && self.max_bytes.is_none() {
            return None;
        }
        let rows = self.limit.map_or(usize::MAX, |n| n as usize);
        Some(SliceLimit { rows, bytes: self.max_bytes.map_or(usize::MAX, |n| n as usize) })
    }
}

/// READ_RESULT: the partition as stored (None: nothing stored), or its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadResult {
    Data(Option<Partition>),
    Digest(Digest),
}

/// SCAN: up to `limit` partitions with tokens in (start, end] and keys after `after` (or,
/// with `after_row`, from partition `after` on after that row), within `bound` when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRequest {
    pub table: TableId,
    pub start: Token,
    pub end: Token,
    pub after: Option<PartitionKey>,
    /// Resume inside partition `after`, after this row (a bounded answer ended there).
    pub after_row: Option<ClusteringKey>,
    pub limit: u32,
    /// Rows and bytes (`shards::scan::row_bytes`) the answer may hold, at most
    /// [`MAX_SCAN_ANSWER_BYTES`]; None: whole partitions (what a node before bounds asked).
    pub bound: Option<ScanBound>,
}

/// Bytes a bounded SCAN_RESULT holds at most, whatever the request asks: a quarter of the
/// default peer frame limit, so that an answer never outgrows a peer frame.
pub const MAX_SCAN_ANSWER_BYTES: usize = wire::frame::DEFAULT_MAX_FRAME_BYTES / 4;
/// The same bound for a READ_RESULT of a READ with a byte bound.
pub const MAX_READ_ANSWER_BYTES: usize = MAX_SCAN_ANSWER_BYTES;
/// SCAN extension flags: a bound (rows u32, bytes u32) follows.
const SCAN_BOUNDED: u8 = 1;
/// SCAN extension flags: a row (clustering key bytes) to resume after follows.
const SCAN_AFTER_ROW: u8 = 2;

/// MUTATE: version | mutation batch (docs/FORMAT.md, "Mutation batch"). Appends to `out`,
/// so a caller can reuse one buffer.
pub fn encode_mutate(updates: &[PartitionUpdate], out: &mut Vec<u8>) {
    out.push(DATA_MESSAGE_VERSION);
    encode_batch(updates, out);
}

/// The mutation batch inside a MUTATE body (what follows its version byte), for a replica to
/// log as it is once [`decode_mutate`] has accepted the body.
pub fn mutate_batch_bytes(body: &[u8]) -> Result<&[u8], MessageError> {
    check_version("MUTATE", body)
}

pub fn decode_mutate(body: &[u8]) -> Result<Vec<PartitionUpdate>, MessageError> {
    const MESSAGE: &str = "MUTATE";
    let batch = check_version(MESSAGE, body)?;
    decode_batch(batch).map_err(|source| MessageError::Malformed { message: MESSAGE, source })
}

/// READ flags: only the digest is wanted.
const READ_DIGEST_ONLY: u8 = 1;
/// READ flags: a u32 row limit follows the flags.
const READ_LIMITED: u8 = 2;
/// READ flags: a u32 byte bound follows the flags (and the row limit, if any).
const READ_BYTE_BOUNDED: u8 = 4;

impl ReadRequest {
    /// version | table u32 | key bytes | start bound | end bound | flags u8 (1 = digest only,
    /// 2 = a row limit follows, 4 = a byte bound follows) [| limit u32] [| bytes u32]. A
    /// request without a limit or a bound is encoded exactly as before they existed, and one
    /// without a bound as before bounds, so nodes of those releases read it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(DATA_MESSAGE_VERSION).u32(self.table).bytes(self.key.bytes());
        encode_bound(&mut w, &self.slice.start);
        encode_bound(&mut w, &self.slice.end);
        let limited = if self.limit.is_some() { READ_LIMITED } else { 0 };
        let bounded = if self.max_bytes.is_some() { READ_BYTE_BOUNDED } else { 0 };
        w.u8(u8::from(self.digest_only) | limited | bounded);
        if let Some(limit) = self.limit {
            w.u32(limit);
        }
        if let Some(bytes) = self.max_bytes {
            w.u32(bytes);
        }
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<ReadRequest, MessageError> {
        const MESSAGE: &str = "READ";
        let rest = check_version(MESSAGE, body)?;
        let mut r = Reader::new(rest);
        let decode = |r: &mut Reader<'_>| -> Result<ReadRequest, DecodeError> {
            let table = r.u32()?;
            let key = PartitionKey::from_serialized(r.bytes()?.to_vec());
            let start = decode_bound(r)?;
            let end = decode_bound(r)?;
            let flags = r.u8()?;
            if flags & !(READ_DIGEST_ONLY | READ_LIMITED | READ_BYTE_BOUNDED) != 0 {
                return Err(r.invalid("READ flags", format!("unknown flags {flags:#04x}")));
            }
            let limit = match flags & READ_LIMITED {
                0 => None,
                _ => match r.u32()? {
                    0 => return Err(r.invalid("READ limit", "a row limit of 0".to_owned())),
                    n => Some(n),
                },
            };
            let max_bytes = match flags & READ_BYTE_BOUNDED {
                0 => None,
                // Lowered to what a peer frame holds, whatever the request says.
                _ => match r.u32()? {
                    0 => return Err(r.invalid("READ byte bound", "a byte bound of 0".to_owned())),
                    n => Some(n.min(MAX_READ_ANSWER_BYTES as u32)),
                },
            };
            r.finish()?;
            let digest_only = flags & READ_DIGEST_ONLY != 0;
            let slice = ClusteringSlice { start, end };
            Ok(ReadRequest { table, key, slice, digest_only, limit, max_bytes })
        };
        decode(&mut r).map_err(|source| MessageError::Malformed { message: MESSAGE, source })
    }
}

const RESULT_ABSENT: u8 = 0;
const RESULT_PRESENT: u8 = 1;
const RESULT_DIGEST: u8 = 2;

impl ReadResult {
    /// version | kind u8 (0 = nothing stored, 1 = partition, 2 = digest) | partition or
    /// digest (u64 high, u64 low).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(DATA_MESSAGE_VERSION);
        match self {
            ReadResult::Data(partition) => encode_stored(&mut w, partition.as_ref()),
            ReadResult::Digest(Digest(d)) => {
                w.u8(RESULT_DIGEST).u64((d >> 64) as u64).u64(*d as u64);
            }
        }
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<ReadResult, MessageError> {
        const MESSAGE: &str = "READ_RESULT";
        let rest = check_version(MESSAGE, body)?;
        let mut r = Reader::new(rest);
        let decode = |r: &mut Reader<'_>| -> Result<ReadResult, DecodeError> {
            let result = match r.u8()? {
                RESULT_ABSENT => ReadResult::Data(None),
                RESULT_PRESENT => ReadResult::Data(Some(decode_partition(r)?)),
                RESULT_DIGEST => {
                    let high = r.u64()?;
                    let low = r.u64()?;
                    ReadResult::Digest(Digest((u128::from(high) << 64) | u128::from(low)))
                }
                other => return Err(r.invalid("READ_RESULT kind", format!("unknown kind {other}"))),
            };
            r.finish()?;
            Ok(result)
        };
        decode(&mut r).map_err(|source| MessageError::Malformed { message: MESSAGE, source })
    }
}

/// The digest of a partition as stored (None: nothing stored): Murmur3 x64-128 of the same
/// bytes READ_RESULT would carry, so every node computes the same digest for the same data.
pub fn digest(partition: Option<&Partition>) -> Digest {
    let mut w = Writer::new();
    encode_stored(&mut w, partition);
    let (h1, h2) = murmur3_x64_128_cassandra(&w.into_bytes(), 0);
    Digest((u128::from(h1) << 64) | u128::from(h2))
}

impl ScanRequest {
    /// version | table u32 | start i64 | end i64 | has_after u8 [| after key bytes] | limit u32
    /// [| flags u8 (1 = bounded, 2 = after a row) [| rows u32 | bytes u32] [| row bytes]].
    /// Without a bound or a row, the extension is left out: the request is encoded exactly as
    /// before bounds existed, so nodes of the release before read it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(DATA_MESSAGE_VERSION).u32(self.table).i64(self.start).i64(self.end);
        match &self.after {
            Some(key) => w.u8(1).bytes(key.bytes()),
            None => w.u8(0),
        };
        w.u32(self.limit);
        let flags =
            (u8::from(self.bound.is_some()) * SCAN_BOUNDED) | (u8::from(self.after_row.is_some()) * SCAN_AFTER_ROW);
        if flags != 0 {
            w.u8(flags);
        }
        if let Some(bound) = self.bound {
            let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
            w.u32(clamp(bound.rows)).u32(clamp(bound.bytes));
        }
        if let Some(row) = &self.after_row {
            w.bytes(row.as_bytes());
        }
        w.into_bytes()
    }

    pub fn decode(body: &[u8]) -> Result<ScanRequest, MessageError> {
        const MESSAGE: &str = "SCAN";
        let rest = check_version(MESSAGE, body)?;
        let mut r = Reader::new(rest);
        let decode = |r: &mut Reader<'_>| -> Result<ScanRequest, DecodeError> {
            let table = r.u32()?;
            let start = r.i64()?;
            let end = r.i64()?;
            let after = match r.u8()? {
                0 => None,
                1 => Some(PartitionKey::from_serialized(r.bytes()?.to_vec())),
                other => return Err(r.invalid("SCAN after flag", format!("{other}"))),
            };
            let limit = r.u32()?;
            let flags = if r.remaining() > 0 { r.u8()? } else { 0 };
            if flags & !(SCAN_BOUNDED | SCAN_AFTER_ROW) != 0 {
                return Err(r.invalid("SCAN flags", format!("{flags:#04x}")));
            }
            let bound = match flags & SCAN_BOUNDED != 0 {
                true => {
                    let (rows, bytes) = (r.u32()? as usize, r.u32()? as usize);
                    Some(ScanBound::new(rows, bytes.min(MAX_SCAN_ANSWER_BYTES)))
                }
                false => None,
            };
            let after_row = match flags & SCAN_AFTER_ROW != 0 {
                true if after.is_some() => Some(ClusteringKey::from_encoded(r.bytes()?.to_vec())),
                true => return Err(r.invalid("SCAN after row", "a row to resume after needs a partition")),
                false => None,
            };
            r.finish()?;
            Ok(ScanRequest { table, start, end, after, after_row, limit, bound })
        };
        let request = decode(&mut r).map_err(|source| MessageError::Malformed { message: MESSAGE, source })?;
        if request.limit as usize > MAX_SCAN_PARTITIONS {
            return Err(MessageError::ScanTooLarge { message: MESSAGE, asked: request.limit as usize });
        }
        Ok(request)
    }
}

/// TRUNCATE: version | table u32.
pub fn encode_truncate(table: TableId) -> Vec<u8> {
    let mut w = Writer::new();
    w.u8(DATA_MESSAGE_VERSION).u32(table);
    w.into_bytes()
}

pub fn decode_truncate(body: &[u8]) -> Result<TableId, MessageError> {
    const MESSAGE: &str = "TRUNCATE";
    let mut r = Reader::new(check_version(MESSAGE, body)?);
    let decode = |r: &mut Reader<'_>| -> Result<TableId, DecodeError> {
        let table = r.u32()?;
        r.finish()?;
        Ok(table)
    };
    decode(&mut r).map_err(|source| MessageError::Malformed { message: MESSAGE, source })
}

/// SCAN_RESULT resume kinds: after a partition (its key follows), or inside one (its key and
/// the row's clustering key follow).
const RESUME_AFTER_PARTITION: u8 = 1;
const RESUME_AFTER_ROW: u8 = 2;

/// SCAN_RESULT: version | count u32 | (key bytes | partition)*, keys strictly increasing in
/// storage order, at most [`MAX_SCAN_PARTITIONS`] [| resume kind u8 | key bytes [| row
/// bytes]] when the answer stopped early at a bound. Without a resume point the body is what
/// nodes before bounds sent (they stopped only at `limit` partitions).
pub fn encode_scan_result(page: &ScanPage) -> Vec<u8> {
    debug_assert!(page.partitions.len() <= MAX_SCAN_PARTITIONS);
    let mut w = Writer::new();
    w.u8(DATA_MESSAGE_VERSION).u32(page.partitions.len() as u32);
    for (key, partition) in &page.partitions {
        w.bytes(key.bytes());
        encode_partition(&mut w, partition);
    }
    match &page.resume {
        None => {}
        Some(ScanResume { key, after: None }) => {
            w.u8(RESUME_AFTER_PARTITION).bytes(key.bytes());
        }
        Some(ScanResume { key, after: Some(row) }) => {
            w.u8(RESUME_AFTER_ROW).bytes(key.bytes()).bytes(row.as_bytes());
        }
    }
    w.into_bytes()
}

/// Where an answer to a SCAN for `asked` partitions stopped, and the next one resumes: where
/// it says it did, or, from a node before bounds (or to a SCAN without one), after its last
/// partition when it holds all it was asked. None: the scanned range is done.
pub fn scan_answer_cover(page: &ScanPage, asked: usize) -> Option<ScanResume> {
    let full = page.partitions.len() >= asked;
    page.resume.clone().or_else(|| {
        full.then(|| page.partitions.last().map(|(k, _)| k.clone())).flatten().map(ScanResume::after_partition)
    })
}

/// A SCAN_RESULT body; `resume` is None when the body has none (the range is exhausted, or an
/// older node sent it: then it stopped at `limit` partitions if it sent that many).
pub fn decode_scan_result(body: &[u8]) -> Result<ScanPage, MessageError> {
    const MESSAGE: &str = "SCAN_RESULT";
    let rest = check_version(MESSAGE, body)?;
    let mut r = Reader::new(rest);
    let decode = |r: &mut Reader<'_>| -> Result<ScanPage, DecodeError> {
        // Smallest entry: key length u32, deletion flag u8, row count u32.
        let n = r.count(9)?;
        if n > MAX_SCAN_PARTITIONS {
            return Err(DecodeError::TooLong { offset: 1, len: n, limit: MAX_SCAN_PARTITIONS });
        }
        let mut out: Vec<(PartitionKey, Partition)> = Vec::with_capacity(n);
        for _ in 0..n {
            let key = PartitionKey::from_serialized(r.bytes()?.to_vec());
            if out.last().is_some_and(|(last, _)| *last >= key) {
                return Err(r.invalid("SCAN_RESULT order", "partition keys not strictly increasing"));
            }
            out.push((key, decode_partition(r)?));
        }
        let resume = match r.remaining() {
            0 => None,
            _ => {
                let kind = r.u8()?;
                let key = PartitionKey::from_serialized(r.bytes()?.to_vec());
                match kind {
                    RESUME_AFTER_PARTITION => Some(ScanResume { key, after: None }),
                    RESUME_AFTER_ROW => {
                        Some(ScanResume { key, after: Some(ClusteringKey::from_encoded(r.bytes()?.to_vec())) })
                    }
                    other => return Err(r.invalid("SCAN_RESULT resume kind", format!("{other}"))),
                }
            }
        };
        if let (Some(resume), Some((last, _))) = (&resume, out.last()) {
            if resume.key < *last {
                return Err(r.invalid("SCAN_RESULT resume", "resumes before its last partition"));
            }
        }
        r.finish()?;
        Ok(ScanPage { partitions: out, resume })
    };
    decode(&mut r).map_err(|source| MessageError::Malformed { message: MESSAGE, source })
}

/// The body after a version byte that must be [`DATA_MESSAGE_VERSION`].
pub(super) fn check_version<'a>(message: &'static str, body: &'a [u8]) -> Result<&'a [u8], MessageError> {
    match body.split_first() {
        Some((&DATA_MESSAGE_VERSION, rest)) => Ok(rest),
        Some((&found, _)) => Err(MessageError::Version { message, found }),
        None => Err(MessageError::Malformed { message, source: DecodeError::Truncated { offset: 0, needed: 1 } }),
    }
}

const BOUND_UNBOUNDED: u8 = 0;
const BOUND_INCLUDED: u8 = 1;
const BOUND_EXCLUDED: u8 = 2;

/// kind u8 (0 = unbounded, 1 = included, 2 = excluded) [| clustering key bytes].
fn encode_bound(w: &mut Writer, bound: &Bound<ClusteringKey>) {
    match bound {
        Bound::Unbounded => w.u8(BOUND_UNBOUNDED),
        Bound::Included(key) => w.u8(BOUND_INCLUDED).bytes(key.as_bytes()),
        Bound::Excluded(key) => w.u8(BOUND_EXCLUDED).bytes(key.as_bytes()),
    };
}

fn decode_bound(r: &mut Reader<'_>) -> Result<Bound<ClusteringKey>, DecodeError> {
    let key = |r: &mut Reader<'_>| -> Result<ClusteringKey, DecodeError> {
        Ok(ClusteringKey::from_encoded(r.bytes()?.to_vec()))
    };
    match r.u8()? {
        BOUND_UNBOUNDED => Ok(Bound::Unbounded),
        BOUND_INCLUDED => Ok(Bound::Included(key(r)?)),
        BOUND_EXCLUDED => Ok(Bound::Excluded(key(r)?)),
        other => Err(r.invalid("slice bound", format!("unknown kind {other}"))),
    }
}

/// kind u8 (0 = nothing stored, 1 = partition follows) [| partition].
fn encode_stored(w: &mut Writer, partition: Option<&Partition>) {
    match partition {
        None => {
            w.u8(RESULT_ABSENT);
        }
        Some(p) => {
            w.u8(RESULT_PRESENT);
            encode_partition(w, p);
        }
    }
}

/// deletion | row count u32 | (clustering key bytes | row)*, rows in clustering order (the
/// row codec of docs/FORMAT.md, "Mutation batch").
fn encode_partition(w: &mut Writer, partition: &Partition) {
    encode_deletion(w, partition.deletion);
    w.u32(partition.rows.len() as u32);
    for (clustering, row) in &partition.rows {
        w.bytes(clustering.as_bytes());
        encode_row(w, row);
    }
}

fn decode_partition(r: &mut Reader<'_>) -> Result<Partition, DecodeError> {
    let deletion = decode_deletion(r)?;
    let mut rows = BTreeMap::new();
    let mut last: Option<ClusteringKey> = None;
    // Smallest row: key length u32, row flags u8, cell count u32.
    for _ in 0..r.count(9)? {
        let clustering = ClusteringKey::from_encoded(r.bytes()?.to_vec());
        if last.as_ref().is_some_and(|l| *l >= clustering) {
            return Err(r.invalid("row order", "clustering keys not strictly increasing"));
        }
        last = Some(clustering.clone());
        rows.insert(clustering, decode_row(r)?);
    }
    Ok(Partition { deletion, rows })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use shards::cell::{Cell, Deletion};
    use shards::row::Row;

    use super::*;

    fn any_cell() -> impl Strategy<Value = Cell> {
        let value = proptest::collection::vec(any::<u8>(), 0..4);
        prop_oneof![
            (any::<i64>(), value.clone()).prop_map(|(ts, value)| Cell::Live { ts, value }),
            (any::<i64>(), value, any::<u32>(), any::<u32>()).prop_map(|(ts, value, ttl, expires_at)| Cell::Expiring {
                ts,
                value,
                ttl,
                expires_at
            }),
            (any::<i64>(), any::<u32>()).prop_map(|(ts, deleted_at)| Cell::Tombstone { ts, deleted_at }),
        ]
    }

    fn any_deletion() -> impl Strategy<Value = Option<Deletion>> {
        proptest::option::of((any::<i64>(), any::<u32>()).prop_map(|(ts, deleted_at)| Deletion { ts, deleted_at }))
    }

    fn any_key() -> impl Strategy<Value = ClusteringKey> {
        proptest::collection::vec(any::<u8>(), 0..5).prop_map(ClusteringKey::from_encoded)
    }

    pub(crate) fn any_partition() -> impl Strategy<Value = Partition> {
        let row = (
            proptest::option::of(any_cell()),
            any_deletion(),
            proptest::collection::btree_map(any::<u16>(), any_cell(), 0..3),
        )
            .prop_map(|(marker, deletion, cells)| Row { marker, deletion, cells: cells.into_iter().collect() });
        (any_deletion(), proptest::collection::btree_map(any_key(), row, 0..4))
            .prop_map(|(deletion, rows)| Partition { deletion, rows })
    }

    fn any_bound() -> impl Strategy<Value = Bound<ClusteringKey>> {
        prop_oneof![Just(Bound::Unbounded), any_key().prop_map(Bound::Included), any_key().prop_map(Bound::Excluded)]
    }

    fn any_partition_key() -> impl Strategy<Value = PartitionKey> {
        proptest::collection::vec(any::<u8>(), 0..12).prop_map(PartitionKey::from_serialized)
    }

    fn any_read_request() -> impl Strategy<Value = ReadRequest> {
        let limit = proptest::option::of(1u32..);
        let max_bytes = proptest::option::of(1u32..=MAX_READ_ANSWER_BYTES as u32);
        (any::<u32>(), any_partition_key(), any_bound(), any_bound(), any::<bool>(), limit, max_bytes).prop_map(
            |(table, key, start, end, digest_only, limit, max_bytes)| ReadRequest {
                table,
                key,
                slice: ClusteringSlice { start, end },
                digest_only,
                limit,
                max_bytes,
            },
        )
    }

    fn any_read_result() -> impl Strategy<Value = ReadResult> {
        prop_oneof![
            proptest::option::of(any_partition()).prop_map(ReadResult::Data),
            any::<u128>().prop_map(|d| ReadResult::Digest(Digest(d))),
        ]
    }

    fn any_scan_request() -> impl Strategy<Value = ScanRequest> {
        (
            any::<u32>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(any_partition_key()),
            0..=MAX_SCAN_PARTITIONS as u32,
        )
            .prop_flat_map(|(table, start, end, after, limit)| {
                let has_after = after.is_some();
                let bound = proptest::option::of(
                    (1usize..1 << 20, 1usize..MAX_SCAN_ANSWER_BYTES).prop_map(|(r, b)| ScanBound::new(r, b)),
                );
                let row = proptest::option::of(any_key()).prop_map(move |r| r.filter(|_| has_after));
                (bound, row).prop_map(move |(bound, after_row)| ScanRequest {
                    table,
                    start,
                    end,
                    after: after.clone(),
                    after_row,
                    limit,
                    bound,
                })
            })
    }

    fn any_scan_partitions() -> impl Strategy<Value = Vec<(PartitionKey, Partition)>> {
        proptest::collection::btree_map(any_partition_key(), any_partition(), 0..4)
            .prop_map(|m| m.into_iter().collect())
    }

    fn any_scan_result() -> impl Strategy<Value = ScanPage> {
        (any_scan_partitions(), 0u8..3, any_partition_key(), any_key()).prop_map(|(partitions, kind, key, row)| {
            // A resume point is at or after the last partition.
            let key = partitions.last().map(|(k, _)| k.clone()).unwrap_or(key);
            let resume = match kind {
                0 => None,
                1 => Some(ScanResume::after_partition(key)),
                _ => Some(ScanResume { key, after: Some(row) }),
            };
            ScanPage { partitions, resume }
        })
    }

    /// Every decoder, fed the same bytes: none may panic.
    fn decode_all(bytes: &[u8]) {
        let _ = decode_mutate(bytes);
        let _ = ReadRequest::decode(bytes);
        let _ = ReadResult::decode(bytes);
        let _ = ScanRequest::decode(bytes);
        let _ = decode_scan_result(bytes);
        let _ = decode_truncate(bytes);
    }

    proptest! {
        #[test]
        fn read_requests_round_trip(request in any_read_request()) {
            prop_assert_eq!(ReadRequest::decode(&request.encode()).unwrap(), request);
        }

        #[test]
        fn read_results_round_trip(result in any_read_result()) {
            prop_assert_eq!(ReadResult::decode(&result.encode()).unwrap(), result);
        }

        #[test]
        fn scan_requests_round_trip(request in any_scan_request()) {
            prop_assert_eq!(ScanRequest::decode(&request.encode()).unwrap(), request);
        }

        #[test]
        fn scan_results_round_trip(partitions in any_scan_result()) {
            prop_assert_eq!(decode_scan_result(&encode_scan_result(&partitions)).unwrap(), partitions);
        }

        #[test]
        fn mutations_round_trip(partitions in any_scan_partitions(), table in any::<u32>()) {
            let updates: Vec<PartitionUpdate> = partitions
                .into_iter()
                .map(|(key, p)| PartitionUpdate { table, key, deletion: p.deletion, rows: p.rows.into_iter().collect() })
                .collect();
            let mut body = Vec::new();
            encode_mutate(&updates, &mut body);
            prop_assert_eq!(decode_mutate(&body).unwrap(), updates);
        }

        #[test]
        fn truncates_round_trip_and_reject_trailing_bytes(table in any::<u32>()) {
            let mut body = encode_truncate(table);
            prop_assert_eq!(decode_truncate(&body).unwrap(), table);
            body.push(0);
            let refused = matches!(decode_truncate(&body), Err(MessageError::Malformed { message: "TRUNCATE", .. }));
            prop_assert!(refused, "a TRUNCATE body with a trailing byte is malformed");
        }

        #[test]
        fn equal_partitions_have_equal_digests_and_changed_ones_differ(p in any_partition(), ts in any::<i64>()) {
            prop_assert_eq!(digest(Some(&p)), digest(Some(&p.clone())));
            prop_assert_ne!(digest(Some(&p)), digest(None));
            let mut changed = p.clone();
            changed.deletion = Some(Deletion { ts, deleted_at: 0 });
            if changed != p {
                prop_assert_ne!(digest(Some(&changed)), digest(Some(&p)));
            }
        }

        #[test]
        fn random_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            decode_all(&bytes);
            let mut versioned = vec![DATA_MESSAGE_VERSION];
            versioned.extend_from_slice(&bytes);
            decode_all(&versioned);
        }

        #[test]
        fn damaged_messages_never_panic(result in any_read_result(), request in any_read_request(), partitions in any_scan_result(), at in any::<usize>(), byte in any::<u8>()) {
            for mut body in [result.encode(), request.encode(), encode_scan_result(&partitions)] {
                let at = at % body.len();
                body[at] = byte;
                decode_all(&body);
                decode_all(&body[..at]);
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut rows = BTreeMap::new();
        let cells = vec![(0, Cell::Live { ts: 5, value: b"v".to_vec() })];
        rows.insert(ClusteringKey::from_encoded(vec![1, 2]), Row { marker: None, deletion: None, cells });
        let partition = Partition { deletion: None, rows };
        let body = ReadResult::Data(Some(partition.clone())).encode();
        for cut in 0..body.len() {
            assert!(ReadResult::decode(&body[..cut]).is_err(), "READ_RESULT cut at {cut}");
        }
        let body = encode_scan_result(&ScanPage {
            partitions: vec![(PartitionKey::from_serialized(vec![7]), partition)],
            resume: None,
        });
        for cut in 0..body.len() {
            assert!(decode_scan_result(&body[..cut]).is_err(), "SCAN_RESULT cut at {cut}");
        }
    }

    #[test]
    fn a_read_without_a_limit_keeps_the_layout_of_the_release_before() {
        let key = PartitionKey::from_serialized(vec![1, 2]);
        let mut request =
            ReadRequest { table: 7, key, slice: ClusteringSlice::ALL, digest_only: true, limit: None, max_bytes: None };
        // version, table, key (u32 length and bytes), two unbounded bounds, flags 1.
        let before = [1, 7, 0, 0, 0, 2, 0, 0, 0, 1, 2, 0, 0, 1];
        assert_eq!(request.encode(), before);
        request.limit = Some(100);
        let limited = request.encode();
        assert_eq!(limited[..13], before[..13]);
        assert_eq!(limited[13..], [3, 100, 0, 0, 0], "flag 2 and the u32 limit");
        assert_eq!(ReadRequest::decode(&limited).unwrap(), request);
        let mut zero = limited.clone();
        zero[14] = 0;
        assert!(matches!(ReadRequest::decode(&zero), Err(MessageError::Malformed { message: "READ", .. })));
        let mut unknown = limited.clone();
        unknown[13] = 9;
        assert!(matches!(ReadRequest::decode(&unknown), Err(MessageError::Malformed { message: "READ", .. })));
        // A byte bound follows the limit under flag 4; without it the request is what the
        // release before sent.
        request.max_bytes = Some(1 << 20);
        let bounded = request.encode();
        assert_eq!(bounded[..13], before[..13]);
        assert_eq!(bounded[13..], [7, 100, 0, 0, 0, 0, 0, 16, 0], "flags 1 | 2 | 4, the limit, the bound");
        assert_eq!(ReadRequest::decode(&bounded).unwrap(), request);
        assert_eq!(request.slice_limit(), Some(SliceLimit { rows: 100, bytes: 1 << 20 }));
        // The bound is lowered to what a peer frame holds; 0 is refused.
        request.max_bytes = Some(u32::MAX);
        let capped = ReadRequest::decode(&request.encode()).unwrap();
        assert_eq!(capped.max_bytes, Some(MAX_READ_ANSWER_BYTES as u32));
        let mut zero = bounded;
        zero[18..22].copy_from_slice(&[0; 4]);
        assert!(matches!(ReadRequest::decode(&zero), Err(MessageError::Malformed { message: "READ", .. })));
        // No limit and no bound: the whole slice.
        request.limit = None;
        request.max_bytes = None;
        assert_eq!(request.slice_limit(), None);
    }

    #[test]
    fn a_scan_without_a_bound_keeps_the_layout_of_the_release_before() {
        let key = PartitionKey::from_serialized(vec![9]);
        let mut request =
            ScanRequest { table: 7, start: -1, end: 5, after: Some(key), after_row: None, limit: 3, bound: None };
        let before = request.encode();
        // version, table, start, end, after flag and key, limit: nothing more.
        assert_eq!(before.len(), 1 + 4 + 8 + 8 + 1 + 4 + 1 + 4);
        request.bound = Some(ScanBound::new(100, 1 << 20));
        request.after_row = Some(ClusteringKey::from_encoded(vec![4, 2]));
        let bounded = request.encode();
        assert_eq!(bounded[..before.len()], before[..], "the extension only follows");
        assert_eq!(bounded[before.len()], 3, "flags: a bound and a row");
        assert_eq!(ScanRequest::decode(&bounded).unwrap(), request);
        // The byte bound is lowered to what a peer frame holds.
        request.bound = Some(ScanBound::new(100, usize::MAX));
        let capped = ScanRequest::decode(&request.encode()).unwrap();
        assert_eq!(capped.bound, Some(ScanBound::new(100, MAX_SCAN_ANSWER_BYTES)));
        // A result without a resume point is what the release before sent.
        let page = ScanPage { partitions: vec![], resume: None };
        assert_eq!(encode_scan_result(&page), [1, 0, 0, 0, 0]);
    }

    #[test]
    fn unknown_versions_and_oversized_scans_are_typed_errors() {
        let request = ReadRequest {
            table: 1,
            key: PartitionKey::from_serialized(vec![1]),
            slice: ClusteringSlice::ALL,
            digest_only: false,
            limit: None,
            max_bytes: None,
        };
        let mut body = request.encode();
        body[0] = 9;
        assert_eq!(ReadRequest::decode(&body), Err(MessageError::Version { message: "READ", found: 9 }));
        let scan = ScanRequest {
            table: 1,
            start: 0,
            end: 5,
            after: None,
            after_row: None,
            limit: MAX_SCAN_PARTITIONS as u32 + 1,
            bound: None,
        };
        assert!(matches!(ScanRequest::decode(&scan.encode()), Err(MessageError::ScanTooLarge { .. })));
        let mut keys = [PartitionKey::from_serialized(vec![1]), PartitionKey::from_serialized(vec![2])];
        keys.sort();
        let mut unsorted = encode_scan_result(&ScanPage {
            partitions: keys.map(|k| (k, Partition::default())).to_vec(),
            resume: None,
        });
        // Swap the two one-byte keys (each follows its u32 length).
        let first = 1 + 4 + 4;
        let second = first + 1 + 1 + 4 + 4;
        unsorted.swap(first, second);
        assert!(matches!(decode_scan_result(&unsorted), Err(MessageError::Malformed { .. })));
    }
}

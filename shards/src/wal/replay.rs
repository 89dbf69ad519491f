//! Replay at open: reads segments in id order, hands every good record to the caller in LSN
//! order, and tells a torn tail (an interrupted last write: dropped cleanly) from corruption
//! (refused, or truncated and quarantined when the operator asked for it). The scanning and the
//! torn-versus-corrupt decision are pure functions over a segment's bytes; only reading,
//! removing and moving files touches the disk. Replay never rewrites a good record.

use std::path::{Path, PathBuf};

use super::format::{
    align_down, align_up, decode_record, Decoded, HeaderDamage, SegmentHeader, SegmentId, BLOCK_SIZE, RECORD_ALIGN,
    RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE,
};
use super::segment::{io_error, list_segments, read_segment, remove_staging_leftovers};
use super::{Lsn, ReplayReport, TornTail, TruncatedCorruption, WalError, MIN_SEGMENT_SIZE};
use crate::io::sync_dir;

/// Directory (inside the WAL directory) that receives segments cut off by `truncate_corrupt`.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The caller's replay callback: receives every good record in LSN order; an error stops replay.
pub type Apply<'a> = dyn FnMut(Lsn, &[u8]) -> Result<(), WalError> + 'a;

/// How the scan of one segment's records ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// An all-zero record header (or the end of the bytes) and no valid record after it.
    Clean,
    /// A record that is not valid (bad checksum, impossible length, partial, or an LSN that is
    /// not the next one) and no valid record with a higher LSN after it: a torn tail if this is
    /// the newest segment.
    Invalid { reason: String },
    /// The scan stopped, but a valid record with a higher LSN sits at `later`: the log has a hole
    /// in the middle, which a torn write cannot produce.
    Hole { reason: String, later: u64 },
}

/// The result of scanning one segment's records.
#[derive(Debug)]
pub struct SegmentScan {
    /// Offset just past the last good record: where the next record would go.
    pub end: u64,
    /// LSN of the last good record, or `first_lsn - 1` if there is none.
    pub last_lsn: Lsn,
    pub records: u64,
    pub payload_bytes: u64,
    pub stop: Stop,
}

/// Scans the records of a segment (`bytes` is the whole file; records start after the header),
/// calling `apply` for each good one. The first record must carry `first_lsn`, each next one
/// the LSN after it.
pub fn scan_segment(bytes: &[u8], first_lsn: Lsn, apply: &mut Apply<'_>) -> Result<SegmentScan, WalError> {
    let mut at = SEGMENT_HEADER_SIZE.min(bytes.len());
    let mut next = first_lsn;
    let mut records = 0;
    let mut payload_bytes = 0;
    let stop_reason = loop {
        match decode_record(&bytes[at..]) {
            Decoded::Record { lsn, payload, framed_len } if lsn == next => {
                apply(lsn, payload)?;
                records += 1;
                payload_bytes += payload.len() as u64;
                next += 1;
                at += framed_len;
            }
            Decoded::Record { lsn, .. } => break Some(format!("record lsn {lsn}, expected {next}")),
            Decoded::End => break None,
            Decoded::Damaged(damage) => break Some(damage.to_string()),
        }
    };
    let last_lsn = next - 1;
    let stop = match (find_later_record(bytes, at, last_lsn), stop_reason) {
        (Some(later), reason) => {
            Stop::Hole { reason: reason.unwrap_or_else(|| "zeroed record header".to_string()), later }
        }
        (None, Some(reason)) => Stop::Invalid { reason },
        (None, None) => Stop::Clean,
    };
    Ok(SegmentScan { end: at as u64, last_lsn, records, payload_bytes, stop })
}

/// The first offset at or after `from` (on the record alignment) holding a valid record with an
/// LSN above `last_lsn`. Only the non-zero part of the segment is searched.
pub fn find_later_record(bytes: &[u8], from: usize, last_lsn: Lsn) -> Option<u64> {
    let limit = nonzero_end(bytes);
    (from..limit).step_by(RECORD_ALIGN).find_map(|at| match decode_record(&bytes[at..]) {
        Decoded::Record { lsn, .. } if lsn > last_lsn => Some(at as u64),
        _ => None,
    })
}

/// Offset just past the last non-zero byte (0 if all bytes are zero).
pub fn nonzero_end(bytes: &[u8]) -> usize {
    // Segments are mostly pre-allocated zeros: skip them a word at a time, then find the last
    // non-zero byte inside the last non-zero word.
    let (head, words, tail) = bytemuck::pod_align_to::<u8, u64>(bytes);
    if let Some(i) = tail.iter().rposition(|b| *b != 0) {
        return head.len() + words.len() * 8 + i + 1;
    }
    if let Some(w) = words.iter().rposition(|w| *w != 0) {
        let start = head.len() + w * 8;
        let in_word = bytes[start..start + 8].iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        return start + in_word;
    }
    head.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// Sector size below which a device may tear a write (disks promise per-sector atomicity).
const SECTOR_SIZE: usize = 512;

/// Whether the invalid record at `at`, the last thing in the newest segment, can be a write
/// that a crash interrupted. Segments are pre-allocated and zeroed past the last good record at
/// every start, so the sectors of an interrupted write that never landed read as zeros: the
/// record's end lies beyond the last non-zero byte, or a whole sector inside it (or half of
/// its header) is zero. A record complete on disk whose checksum fails was damaged after it
/// was written.
pub fn torn_write_plausible(bytes: &[u8], at: usize) -> bool {
    let Some(header) = bytes.get(at..at + RECORD_HEADER_SIZE) else { return true };
    if header[..8].iter().all(|b| *b == 0) || header[8..].iter().all(|b| *b == 0) {
        return true;
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let claimed_end = (at + RECORD_HEADER_SIZE).saturating_add(len);
    if claimed_end > nonzero_end(bytes) {
        return true;
    }
    let first_sector = align_up((at + RECORD_HEADER_SIZE) as u64, SECTOR_SIZE as u64) as usize;
    (first_sector..claimed_end.saturating_sub(SECTOR_SIZE - 1))
        .step_by(SECTOR_SIZE)
        .any(|s| bytes[s..s + SECTOR_SIZE].iter().all(|b| *b == 0))
}

/// Why a segment file's size cannot be one replay wrote: segments are created under a staging
/// name and pre-allocated before they are named, so a segment is a whole number of blocks and
/// at least [`MIN_SEGMENT_SIZE`] long. A shorter or ragged file was truncated.
fn size_damage(len: usize) -> Option<String> {
    let whole = len.is_multiple_of(BLOCK_SIZE) && len as u64 >= MIN_SEGMENT_SIZE;
    (!whole).then(|| {
        format!(
            "the file is {len} bytes; segments are pre-allocated to a multiple of {BLOCK_SIZE} of at least \
             {MIN_SEGMENT_SIZE} bytes, so it was truncated"
        )
    })
}

/// The segment the writer continues in after replay.
#[derive(Debug)]
pub struct NewestSegment {
    pub id: SegmentId,
    pub path: PathBuf,
    pub first_lsn: Lsn,
    /// Offset just past its last good record.
    pub end: u64,
    /// The bytes of the partial block before `end`.
    pub tail: Vec<u8>,
    /// Stale bytes (a torn write, or records cut off by truncation) lie in `[end, garbage_end)`
    /// and must be zeroed before appending.
    pub garbage_end: u64,
}

/// An older, complete segment: the writer never touches it; `release_through` deletes it.
#[derive(Clone, Debug)]
pub struct SealedSegment {
    pub path: PathBuf,
    pub last_lsn: Lsn,
}

/// Everything the writer needs after replay.
#[derive(Debug)]
pub struct Recovered {
    pub report: ReplayReport,
    pub sealed: Vec<SealedSegment>,
    pub newest: Option<NewestSegment>,
    pub next_lsn: Lsn,
    pub next_segment_id: SegmentId,
}

/// One scanned segment, before we know whether it is the newest.
struct Scanned {
    id: SegmentId,
    path: PathBuf,
    first_lsn: Lsn,
    last_lsn: Lsn,
    end: u64,
    tail: Vec<u8>,
    garbage_end: u64,
}

/// Where replay found corruption: segment index `index` at `offset`.
struct Corruption {
    index: usize,
    offset: u64,
    reason: String,
}

/// Replays every segment in `dir`. See the module doc and docs/FORMAT.md for the rules.
/// `needed_from`, when known, is the first LSN replay must find (the one after what the caller
/// already holds elsewhere): a log starting later lost its oldest segment.
pub async fn replay(
    dir: &Path,
    truncate_corrupt: bool,
    needed_from: Option<Lsn>,
    apply: &mut Apply<'_>,
) -> Result<Recovered, WalError> {
    let staged = remove_staging_leftovers(dir)?;
    if staged > 0 {
        tracing::info!(dir = %dir.display(), files = staged, "removed WAL segments whose creation was interrupted");
    }
    let segments = list_segments(dir)?;
    let next_segment_id = segments.last().map_or(1, |(id, _)| id + 1);
    let mut report = ReplayReport::default();
    let mut scanned: Vec<Scanned> = Vec::new();
    let mut corruption = None;

    for (index, (id, path)) in segments.iter().enumerate() {
        let is_newest = index + 1 == segments.len();
        let bytes = read_segment(path).await?;
        if let Some(reason) = size_damage(bytes.len()) {
            if !truncate_corrupt {
                return Err(WalError::Corrupt { segment: path.clone(), offset: bytes.len() as u64, reason });
            }
            // The operator asked to keep what is readable: the records before the cut are
            // replayed, and a newest segment is extended again when the writer reopens it.
            tracing::warn!(segment = %path.display(), %reason, "WAL segment truncated; replaying what is left (truncate_corrupt)");
        }
        let header = match SegmentHeader::decode(&bytes) {
            Ok(header) => header,
            Err(HeaderDamage::AllZero) | Err(HeaderDamage::TooShort { .. })
                if is_newest && nonzero_end(&bytes) == 0 =>
            {
                // Created and pre-allocated but its first write, which carries the header,
                // never landed: nothing in it was ever acknowledged. Remove it; the writer
                // creates a fresh segment.
                std::fs::remove_file(path).map_err(|e| io_error("remove", path, e))?;
                sync_dir(dir).map_err(|e| io_error("sync directory of", path, e))?;
                tracing::warn!(
                    segment = %path.display(),
                    offset = 0,
                    records = 0,
                    "WAL torn tail dropped: the newest segment's first write never landed; empty segment removed"
                );
                report.torn_tail = Some(TornTail {
                    segment: path.clone(),
                    offset: 0,
                    discarded_bytes: 0,
                    reason: "segment header never written; empty segment removed".to_string(),
                });
                break;
            }
            Err(HeaderDamage::UnsupportedVersion(version)) => {
                return Err(WalError::UnsupportedVersion { segment: path.clone(), version });
            }
            Err(damage) if truncate_corrupt => {
                corruption = Some(Corruption { index, offset: 0, reason: format!("bad segment header: {damage}") });
                break;
            }
            Err(damage) => {
                return Err(WalError::BadSegmentHeader { segment: path.clone(), reason: damage.to_string() });
            }
        };
        if header.segment_id != *id {
            return Err(WalError::BadSegmentHeader {
                segment: path.clone(),
                reason: format!("header names segment {}, file name {id}", header.segment_id),
            });
        }
        if let Some(previous) = scanned.last() {
            // A gap is allowed only below `needed_from`: records the caller already holds.
            let gap_held = header.first_lsn > previous.last_lsn + 1
                && needed_from.is_some_and(|needed| header.first_lsn <= needed);
            if header.first_lsn != previous.last_lsn + 1 && !gap_held {
                corruption = Some(Corruption {
                    index,
                    offset: 0,
                    reason: format!(
                        "segment starts at lsn {}, expected {}: a segment is missing or damaged",
                        header.first_lsn,
                        previous.last_lsn + 1
                    ),
                });
                break;
            }
        } else if let Some(needed) = needed_from.filter(|needed| header.first_lsn > *needed) {
            let reason = format!(
                "the log starts at lsn {}, but records from lsn {needed} on were never flushed: \
                 the oldest segment(s) of the log are missing",
                header.first_lsn
            );
            if !truncate_corrupt {
                return Err(WalError::Corrupt { segment: path.clone(), offset: 0, reason });
            }
            tracing::warn!(segment = %path.display(), %reason, "WAL records lost: replaying from the oldest segment left (truncate_corrupt)");
            report.truncated_corruption =
                Some(TruncatedCorruption { segment: path.clone(), offset: 0, reason, quarantined: Vec::new() });
        }

        let scan = scan_segment(&bytes, header.first_lsn, apply)?;
        report.records += scan.records;
        report.bytes += scan.payload_bytes;
        report.last_lsn = report.last_lsn.max(scan.last_lsn);
        let garbage_end = nonzero_end(&bytes) as u64;
        let block_start = align_down(scan.end, BLOCK_SIZE as u64) as usize;
        scanned.push(Scanned {
            id: *id,
            path: path.clone(),
            first_lsn: header.first_lsn,
            last_lsn: scan.last_lsn,
            end: scan.end,
            tail: bytes[block_start..scan.end as usize].to_vec(),
            garbage_end,
        });
        match scan.stop {
            Stop::Clean => {}
            Stop::Invalid { reason } if is_newest && torn_write_plausible(&bytes, scan.end as usize) => {
                let discarded_bytes = garbage_end.saturating_sub(scan.end);
                tracing::warn!(
                    segment = %path.display(),
                    offset = scan.end,
                    records = scan.records,
                    last_lsn = scan.last_lsn,
                    discarded_bytes,
                    %reason,
                    "WAL torn tail dropped: the last write was interrupted; the records before it are kept"
                );
                report.torn_tail = Some(TornTail { segment: path.clone(), offset: scan.end, discarded_bytes, reason });
            }
            Stop::Invalid { reason } if is_newest => {
                let reason =
                    format!("{reason}; the record is complete on disk, so it was damaged after it was written");
                corruption = Some(Corruption { index, offset: scan.end, reason });
                break;
            }
            Stop::Invalid { reason } => {
                // Rotation syncs a segment before the next one is started, so an older segment
                // cannot have a torn tail.
                corruption = Some(Corruption { index, offset: scan.end, reason });
                break;
            }
            Stop::Hole { reason, later } => {
                let reason = format!("{reason}; a valid later record sits at offset {later}");
                corruption = Some(Corruption { index, offset: scan.end, reason });
                break;
            }
        }
        glommio::yield_if_needed().await;
    }

    if let Some(corruption) = corruption {
        let path = segments[corruption.index].1.clone();
        if !truncate_corrupt {
            return Err(WalError::Corrupt { segment: path, offset: corruption.offset, reason: corruption.reason });
        }
        // Keep what precedes the corruption; move the rest aside, never delete it.
        let first_moved = if corruption.offset == 0 { corruption.index } else { corruption.index + 1 };
        let quarantined = quarantine(dir, &segments[first_moved..])?;
        tracing::warn!(
            segment = %path.display(),
            offset = corruption.offset,
            reason = %corruption.reason,
            quarantined = ?quarantined,
            "WAL corruption: truncated there as the operator asked (truncate_corrupt)"
        );
        report.last_lsn = scanned.last().map_or(0, |s| s.last_lsn);
        report.truncated_corruption = Some(TruncatedCorruption {
            segment: path,
            offset: corruption.offset,
            reason: corruption.reason,
            quarantined,
        });
    }

    report.segments = scanned.len();
    // LSNs never fall back to ones the caller already holds (a flushed record's LSN handed out
    // again would be skipped at the next replay): with the log's end below that point (no
    // segment left, or records lost to truncate_corrupt), the next record opens a new segment
    // at `needed_from`, and the gap before it holds only records the caller has.
    let floor = needed_from.unwrap_or(1);
    let continue_newest = scanned.last().is_some_and(|s| s.last_lsn + 1 >= floor);
    let newest = scanned.pop_if(|_| continue_newest).map(|s| NewestSegment {
        id: s.id,
        path: s.path,
        first_lsn: s.first_lsn,
        end: s.end,
        tail: s.tail,
        garbage_end: s.garbage_end,
    });
    let sealed = scanned.into_iter().map(|s| SealedSegment { path: s.path, last_lsn: s.last_lsn }).collect();
    let next_lsn = newest.as_ref().map_or(1, |n| n.first_lsn.max(report.last_lsn + 1)).max(floor);
    Ok(Recovered { report, sealed, newest, next_lsn, next_segment_id })
}

/// Moves segment files into `dir/quarantine/`, never overwriting an earlier quarantined file.
fn quarantine(dir: &Path, segments: &[(SegmentId, PathBuf)]) -> Result<Vec<PathBuf>, WalError> {
    if segments.is_empty() {
        return Ok(Vec::new());
    }
    let qdir = dir.join(QUARANTINE_DIR);
    std::fs::create_dir_all(&qdir).map_err(|e| io_error("create", &qdir, e))?;
    let mut moved = Vec::with_capacity(segments.len());
    for (_, path) in segments {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut target = qdir.join(&name);
        let mut n = 1u32;
        while target.exists() {
            target = qdir.join(format!("{name}.{n}"));
            n += 1;
        }
        std::fs::rename(path, &target).map_err(|e| io_error("quarantine", path, e))?;
        moved.push(target);
    }
    sync_dir(&qdir).map_err(|e| io_error("sync directory", &qdir, e))?;
    sync_dir(dir).map_err(|e| io_error("sync directory", dir, e))?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::super::format::encode_record;
    use super::*;

    /// A segment image: header block then the records for `lsns`, zero-filled to `size`.
    fn segment_bytes(first_lsn: Lsn, lsns: &[Lsn], size: usize) -> Vec<u8> {
        let mut bytes = SegmentHeader { segment_id: 1, first_lsn, created_at_micros: 0 }.encode();
        for lsn in lsns {
            encode_record(*lsn, format!("payload-{lsn}").as_bytes(), &mut bytes);
        }
        bytes.resize(size, 0);
        bytes
    }

    fn scan_all(bytes: &[u8], first: Lsn) -> (SegmentScan, Vec<Lsn>) {
        let mut seen = Vec::new();
        let mut apply = |lsn: Lsn, payload: &[u8]| {
            assert_eq!(payload, format!("payload-{lsn}").as_bytes());
            seen.push(lsn);
            Ok(())
        };
        let scan = scan_segment(bytes, first, &mut apply).unwrap();
        (scan, seen)
    }

    fn record_offset(k: usize) -> usize {
        // Every test payload "payload-N" with N < 10 frames to 16 + 9 -> 32 bytes.
        SEGMENT_HEADER_SIZE + 32 * k
    }

    #[test]
    fn clean_segment_scans_to_the_zero_header() {
        let bytes = segment_bytes(5, &[5, 6, 7], 8192);
        let (scan, seen) = scan_all(&bytes, 5);
        assert_eq!(seen, vec![5, 6, 7]);
        assert_eq!(scan.stop, Stop::Clean);
        assert_eq!(scan.end, record_offset(3) as u64);
        assert_eq!(scan.last_lsn, 7);
    }

    #[test]
    fn damaged_last_record_is_invalid_without_later_records() {
        let mut bytes = segment_bytes(1, &[1, 2, 3], 8192);
        bytes[record_offset(2) + 20] ^= 0x40;
        let (scan, seen) = scan_all(&bytes, 1);
        assert_eq!(seen, vec![1, 2]);
        assert!(matches!(scan.stop, Stop::Invalid { .. }), "{:?}", scan.stop);
        assert_eq!(scan.end, record_offset(2) as u64);
    }

    #[test]
    fn damaged_middle_record_is_a_hole() {
        let mut bytes = segment_bytes(1, &[1, 2, 3, 4], 8192);
        bytes[record_offset(1) + 18] ^= 0x01;
        let (scan, seen) = scan_all(&bytes, 1);
        assert_eq!(seen, vec![1]);
        assert_eq!(scan.stop, Stop::Hole { reason: scan_reason(&scan.stop), later: record_offset(2) as u64 });
    }

    fn scan_reason(stop: &Stop) -> String {
        match stop {
            Stop::Invalid { reason } | Stop::Hole { reason, .. } => reason.clone(),
            Stop::Clean => String::new(),
        }
    }

    #[test]
    fn zeroed_middle_record_is_a_hole_not_a_clean_end() {
        let mut bytes = segment_bytes(1, &[1, 2, 3], 8192);
        bytes[record_offset(1)..record_offset(2)].fill(0);
        let (scan, _) = scan_all(&bytes, 1);
        assert!(matches!(scan.stop, Stop::Hole { .. }), "{:?}", scan.stop);
    }

    #[test]
    fn skipped_lsn_is_a_hole_and_stale_lower_lsn_is_invalid() {
        let bytes = segment_bytes(1, &[1, 2, 4], 8192);
        let (scan, seen) = scan_all(&bytes, 1);
        assert_eq!(seen, vec![1, 2]);
        assert!(matches!(scan.stop, Stop::Hole { later, .. } if later == record_offset(2) as u64));

        let bytes = segment_bytes(1, &[1, 2, 2], 8192);
        let (scan, _) = scan_all(&bytes, 1);
        assert!(matches!(scan.stop, Stop::Invalid { .. }), "{:?}", scan.stop);
    }

    #[test]
    fn truncated_file_ends_in_an_invalid_partial_record() {
        let bytes = segment_bytes(1, &[1, 2, 3], 8192);
        let cut = record_offset(2) + 10;
        let (scan, seen) = scan_all(&bytes[..cut], 1);
        assert_eq!(seen, vec![1, 2]);
        assert!(matches!(scan.stop, Stop::Invalid { .. }));
    }

    #[test]
    fn apply_error_stops_the_scan() {
        let bytes = segment_bytes(1, &[1, 2, 3], 8192);
        let mut apply = |lsn: Lsn, _: &[u8]| {
            if lsn == 2 {
                Err(WalError::Apply("no".into()))
            } else {
                Ok(())
            }
        };
        assert!(matches!(scan_segment(&bytes, 1, &mut apply), Err(WalError::Apply(_))));
    }
}

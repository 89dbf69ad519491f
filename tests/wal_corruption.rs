//! Damage a shard's WAL on disk the way crashes and bad disks do, then start again: a torn tail
//! (truncated, zeroed or garbage-filled end) is dropped and everything before it is kept;
//! damage in the middle of the log is a typed error naming the segment and offset, unless the
//! operator asks to truncate there. Nothing panics.

mod common;

use std::path::{Path, PathBuf};

const ROWS: u64 = 300;

/// A one-shard node directory holding ROWS demo rows, and its only WAL segment.
fn node_with_rows(name: &str) -> (PathBuf, PathBuf) {
    let dir = common::scratch_dir(name);
    let out = common::embedded(&dir, &["--shards", "1", "demo", "--rows", &ROWS.to_string()]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let wal = dir.join("shard-000").join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    assert_eq!(segments.len(), 1, "{segments:?}");
    (dir, segments.remove(0))
}

/// Offset just past the last non-zero byte of a file (the end of its records).
fn data_end(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

fn rewrite(path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    edit(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

fn row_count(dir: &Path) -> usize {
    common::dump_key_value_table(dir, 1, "demo").len()
}

/// Segments are pre-allocated before they get their name, so a crash never leaves a short
/// one: a newest segment cut short (inside its last record, at 6,000 bytes, to 0 bytes) is
/// refused naming the segment and its size, and only the operator's --wal-truncate-corrupt
/// keeps what is left.
#[test]
fn truncated_newest_segment_is_refused_unless_truncation_is_asked_for() {
    for cut in ["last-record", "6000", "0"] {
        let (dir, segment) = node_with_rows(&format!("wal-truncated-{cut}"));
        let len = match cut {
            "last-record" => data_end(&segment) - 20,
            other => other.parse().unwrap(),
        };
        rewrite(&segment, |b| b.truncate(len));
        let out = common::embedded(&dir, &["info"]);
        let stderr = common::text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cut}: {stderr}");
        assert!(stderr.contains("corrupt WAL segment") && stderr.contains(&*segment.to_string_lossy()), "{stderr}");
        assert!(stderr.contains(&format!("offset {len}")) && stderr.contains("truncated"), "{stderr}");
        let out = common::embedded(&dir, &["--wal-truncate-corrupt", "info"]);
        assert!(out.status.success(), "{cut}: {}", common::text(&out.stderr));
        let kept = row_count(&dir);
        if cut == "last-record" {
            assert_eq!(kept, ROWS as usize - 1, "exactly the cut record is lost");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// A flipped byte in the newest segment's last record, or a zeroed segment header: neither
/// can come from an interrupted write (the record is complete on disk; a header is written
/// before any record after it), so both are refused as corruption.
#[test]
fn damage_to_the_newest_segment_that_no_crash_leaves_is_refused() {
    for damage in ["flipped-byte", "zeroed-header"] {
        let (dir, segment) = node_with_rows(&format!("wal-{damage}"));
        let end = data_end(&segment);
        rewrite(&segment, |b| match damage {
            "flipped-byte" => b[end - 30] ^= 0x10,
            _ => b[..4096].fill(0),
        });
        let out = common::embedded(&dir, &["info"]);
        let stderr = common::text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{damage}: {stderr}");
        assert!(stderr.contains(&*segment.to_string_lossy()), "{damage}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(segment.exists(), "never deleted");
        let out = common::embedded(&dir, &["--wal-truncate-corrupt", "info"]);
        assert!(out.status.success(), "{damage}: {}", common::text(&out.stderr));
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn torn_tail_is_dropped_and_earlier_records_kept() {
    let (dir, segment) = node_with_rows("wal-torn");
    let end = data_end(&segment);
    // The last record's final bytes never landed, as an interrupted write leaves them.
    rewrite(&segment, |b| b[end - 20..end].fill(0));
    let out = common::embedded(&dir, &["info"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(common::text(&out.stdout).contains("torn tail discarded"), "{}", common::text(&out.stdout));
    let stderr = common::text(&out.stderr);
    assert!(stderr.contains("WAL torn tail dropped") && stderr.contains(&*segment.to_string_lossy()), "{stderr}");
    assert_eq!(row_count(&dir), ROWS as usize - 1, "exactly the cut record is lost");
    // The log keeps working after the repair: new writes land and replay.
    let out = common::embedded(&dir, &["demo", "--rows", "10"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert_eq!(row_count(&dir), ROWS as usize - 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn zeroed_or_garbage_tail_is_dropped() {
    for (name, garbage) in [("wal-zeroed", false), ("wal-garbage", true)] {
        let (dir, segment) = node_with_rows(name);
        let end = data_end(&segment);
        rewrite(&segment, |b| {
            if garbage {
                // Random-looking bytes after the last record, as a torn write leaves.
                let mut x: u32 = 0x9E37_79B9;
                for byte in &mut b[end..end + 3000] {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *byte = x as u8;
                }
            } else {
                // The last record's bytes zeroed, as a write that never reached the disk.
                b[end - 60..end].fill(0);
            }
        });
        let out = common::embedded(&dir, &["info"]);
        assert!(out.status.success(), "{name}: {}", common::text(&out.stderr));
        let expected = if garbage { ROWS as usize } else { ROWS as usize - 1 };
        assert_eq!(row_count(&dir), expected, "{name}");
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn corruption_in_the_middle_is_a_typed_error_unless_truncation_is_asked_for() {
    let (dir, segment) = node_with_rows("wal-corrupt");
    let end = data_end(&segment);
    let middle = 4096 + (end - 4096) / 2;
    rewrite(&segment, |b| b[middle..middle + 8].iter_mut().for_each(|x| *x ^= 0xFF));

    let out = common::embedded(&dir, &["info"]);
    let stderr = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("corrupt") && stderr.contains(&*segment.to_string_lossy()), "{stderr}");
    assert!(stderr.contains("offset"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let out = common::embedded(&dir, &["--wal-truncate-corrupt", "info"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(common::text(&out.stdout).contains("corruption truncated"), "{}", common::text(&out.stdout));
    let kept = row_count(&dir);
    assert!(kept > 0 && kept < ROWS as usize, "rows before the damage are kept: {kept}");
    std::fs::remove_dir_all(&dir).ok();
}

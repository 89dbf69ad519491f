//! Behaviour of the WAL on real files: each test runs on a fresh glommio executor over a
//! temporary directory, probing the device first (`crate::io::prepare_executor_io`).

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;

use super::format::{framed_len, SegmentHeader, SEGMENT_HEADER_SIZE};
use super::segment::list_segments;
use super::*;
use crate::test_support::{on_executor, Seed};

fn payload(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    sized_payload(rng, 0, max_len)
}

fn sized_payload(rng: &mut StdRng, min_len: usize, max_len: usize) -> Vec<u8> {
    let len = rng.gen_range(min_len..=max_len);
    (0..len).map(|_| rng.gen()).collect()
}

type Replayed = Vec<(Lsn, Vec<u8>)>;

/// Opens the WAL, collecting what replay hands over.
async fn open(dir: &Path, config: WalConfig) -> Result<(Wal, ReplayReport, Replayed), WalError> {
    let mut replayed = Vec::new();
    let (wal, report) = Wal::open(dir, config, |lsn, payload| {
        replayed.push((lsn, payload.to_vec()));
        Ok(())
    })
    .await?;
    Ok((wal, report, replayed))
}

/// Opens, checks replay equals `expected`, closes.
fn assert_replays(dir: &Path, config: WalConfig, expected: &Replayed) -> ReplayReport {
    let expected = expected.clone();
    on_executor(dir, move |dir| async move {
        let (wal, report, replayed) = open(&dir, config).await.expect("open");
        assert_eq!(replayed.len(), expected.len(), "record count");
        for (got, want) in replayed.iter().zip(&expected) {
            assert_eq!(got, want, "record mismatch at lsn {}", want.0);
        }
        assert_eq!(report.records, expected.len() as u64);
        wal.close().await.expect("close");
        report
    })
}

/// Opens a WAL with `config` over a fresh directory on its own executor and runs `body` on it;
/// `body` returns the records it saw acknowledged. Then checks that replaying the directory gives
/// back exactly those, and returns them.
fn acked_then_replayed<F, Fut>(config: WalConfig, body: F) -> Replayed
where
    F: FnOnce(Wal) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Replayed> + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let cfg = config.clone();
    let acked = on_executor(dir.path(), move |dir| async move {
        let (wal, _, _) = open(&dir, cfg).await.unwrap();
        body(wal).await
    });
    close_descriptors_under(dir.path());
    assert_replays(dir.path(), config, &acked);
    acked
}

/// Closes this process's descriptors still open on files under `dir`, as the exit of a process
/// would: a WAL forgotten (a simulated kill -9) keeps its segment's descriptor, and its lock.
fn close_descriptors_under(dir: &Path) {
    let dir = dir.canonicalize().expect("canonical dir");
    for entry in std::fs::read_dir("/proc/self/fd").expect("list descriptors").flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if target.starts_with(&dir) {
            // SAFETY: the descriptor belongs to a WAL whose executor is gone; nothing uses it.
            unsafe { libc::close(fd) };
        }
    }
}

/// Appends `payloads` one after another (each acknowledged before the next), returns them with
/// their LSNs.
async fn append_all(wal: &Wal, payloads: Vec<Vec<u8>>) -> Replayed {
    let mut out = Vec::new();
    for p in payloads {
        let lsn = wal.append(&p).await.expect("append");
        out.push((lsn, p));
    }
    out
}

/// Appends `payloads` concurrently (all admitted before any is awaited).
async fn append_concurrently(wal: &Wal, payloads: Vec<Vec<u8>>) -> Replayed {
    let futures: Vec<_> = payloads.iter().map(|p| wal.append(p)).collect();
    let mut out = Vec::new();
    for (f, p) in futures.into_iter().zip(payloads) {
        out.push((f.await.expect("append"), p));
    }
    out
}

/// Segments small enough that replay (which reads whole segments) stays fast in debug builds.
fn test_config() -> WalConfig {
    WalConfig { segment_size: 256 << 10, ..WalConfig::default() }
}

/// Segments that a test fills several of.
fn small_segments() -> WalConfig {
    WalConfig { segment_size: 64 << 10, ..WalConfig::default() }
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir).expect("list").into_iter().map(|(_, p)| p).collect()
}

fn first_lsn_of(path: &Path) -> Lsn {
    SegmentHeader::decode(&std::fs::read(path).expect("read")).expect("header").first_lsn
}

/// Offset of each record in a segment holding `payload_lens`, in order.
fn record_offsets(payload_lens: &[usize]) -> Vec<u64> {
    let mut at = SEGMENT_HEADER_SIZE as u64;
    payload_lens
        .iter()
        .map(|len| {
            let here = at;
            at += framed_len(*len) as u64;
            here
        })
        .collect()
}

fn patch_file(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).expect("open for patch");
    file.write_all_at(bytes, offset).expect("patch");
    file.sync_all().expect("sync patch");
}

fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, offset).expect("read");
    file.write_all_at(&[b[0] ^ 0x5A], offset).expect("write");
    file.sync_all().expect("sync");
}

#[test]
fn concurrent_batch_appends_replay_in_lsn_order_with_fewer_syncs_than_records() {
    const TASKS: usize = 16;
    const PER_TASK: usize = 25;
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed.rng();
    let payloads: Vec<Vec<Vec<u8>>> =
        (0..TASKS).map(|_| (0..PER_TASK).map(|_| payload(&mut rng, 600)).collect()).collect();

    let (acked, stats) = on_executor(dir.path(), move |dir| async move {
        let (wal, report, replayed) = open(&dir, test_config()).await.unwrap();
        assert!(replayed.is_empty());
        assert_eq!(report, ReplayReport::default());
        let wal = Rc::new(wal);
        let acked = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = payloads
            .into_iter()
            .map(|mine| {
                let (wal, acked) = (wal.clone(), acked.clone());
                glommio::spawn_local(async move {
                    let mut last = 0;
                    for p in mine {
                        let lsn = wal.append(&p).await.unwrap();
                        assert!(lsn > last, "one task's LSNs rise");
                        last = lsn;
                        acked.borrow_mut().push((lsn, p));
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let stats = wal.stats();
        Rc::try_unwrap(wal).ok().expect("tasks are done").close().await.unwrap();
        let acked = Rc::try_unwrap(acked).unwrap().into_inner();
        (acked, stats)
    });

    let mut expected = acked;
    expected.sort_by_key(|(lsn, _)| *lsn);
    let lsns: Vec<Lsn> = expected.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns, (1..=(TASKS * PER_TASK) as Lsn).collect::<Vec<_>>());
    assert_eq!(stats.records, (TASKS * PER_TASK) as u64);
    assert_eq!(stats.last_lsn, (TASKS * PER_TASK) as Lsn);
    assert!(stats.syncs < stats.records, "group commit: {} syncs for {} records", stats.syncs, stats.records);
    assert!(stats.writes < stats.records, "group commit: {} writes", stats.writes);
    let report = assert_replays(dir.path(), test_config(), &expected);
    assert_eq!(report.last_lsn, (TASKS * PER_TASK) as Lsn);
    assert_eq!(report.torn_tail, None);
}

#[test]
fn appends_get_lsns_in_call_order_even_under_back_pressure() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let mut rng = seed.rng();
    let payloads: Vec<Vec<u8>> = (0..60).map(|_| payload(&mut rng, 1500)).collect();
    // Pending holds at most ~2 records, so most appends wait for room.
    let config = WalConfig { max_pending_bytes: 3000, ..test_config() };
    let acked = acked_then_replayed(config, move |wal| async move {
        let acked = append_concurrently(&wal, payloads).await;
        // A record larger than the bound is still admitted (alone).
        let big = vec![7u8; 10_000];
        let big_lsn = wal.append(&big).await.unwrap();
        assert_eq!(big_lsn, 61);
        wal.close().await.unwrap();
        let mut acked = acked;
        acked.push((big_lsn, big));
        acked
    });
    let lsns: Vec<Lsn> = acked.iter().map(|(l, _)| *l).collect();
    assert_eq!(lsns, (1..=61).collect::<Vec<_>>(), "LSNs follow call order");
}

#[test]
fn waiting_appends_are_admitted_without_their_futures_being_polled() {
    let config = WalConfig { max_pending_bytes: 3000, ..test_config() };
    let acked = acked_then_replayed(config, move |wal| async move {
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1500]).collect();
        let mut futures: Vec<_> = payloads.iter().map(|p| wal.append(p)).collect();
        // Only the last is awaited; the earlier ones wait for room without being polled.
        let last = futures.pop().unwrap().await.unwrap();
        assert_eq!(last, 20);
        let mut acked = Vec::new();
        for (f, p) in futures.into_iter().zip(payloads.clone()) {
            acked.push((f.await.unwrap(), p));
        }
        acked.push((last, payloads[19].clone()));
        wal.close().await.unwrap();
        acked
    });
    assert_eq!(acked.iter().map(|(l, _)| *l).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
}

#[test]
fn dropped_waiting_append_takes_no_lsn() {
    let config = WalConfig { max_pending_bytes: 100, ..test_config() };
    let acked = acked_then_replayed(config, move |wal| async move {
        let first = wal.append(&[1u8; 80]);
        let waiting = wal.append(&[2u8; 80]); // no room: waits for admission
        drop(waiting);
        let third = wal.append(&[3u8; 80]);
        let acked = vec![(first.await.unwrap(), vec![1u8; 80]), (third.await.unwrap(), vec![3u8; 80])];
        wal.close().await.unwrap();
        acked
    });
    assert_eq!(acked[0].0, 1);
    assert_eq!(acked[1].0, 2, "the dropped append never got an LSN");
}

#[test]
fn dropping_the_wal_still_writes_admitted_records_and_refuses_waiting_ones() {
    let config = WalConfig { max_pending_bytes: 100, ..test_config() };
    acked_then_replayed(config, move |wal| async move {
        let admitted = wal.append(&[1u8; 80]);
        let waiting = wal.append(&[2u8; 80]);
        drop(wal);
        let acked = vec![(admitted.await.unwrap(), vec![1u8; 80])];
        assert!(matches!(waiting.await, Err(WalError::Closed)));
        acked
    });
}

/// The open(2) flags of this process's descriptors of `path` (from /proc/self/fdinfo).
fn open_flags_of(path: &Path) -> Vec<i32> {
    let mut flags = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(path) {
            continue;
        }
        let info = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(entry.file_name())).unwrap_or_default();
        if let Some(octal) = info.lines().find_map(|line| line.strip_prefix("flags:")) {
            flags.push(i32::from_str_radix(octal.trim(), 8).unwrap());
        }
    }
    flags
}

#[test]
fn batch_mode_writes_are_durable_on_completion_and_periodic_ones_wait_for_the_period() {
    for mode in [SyncMode::Batch, SyncMode::Periodic] {
        let dir = tempfile::tempdir().unwrap();
        let config = WalConfig { sync_mode: mode, periodic_sync: Duration::from_secs(3600), ..test_config() };
        let (flags, syncs) = on_executor(dir.path(), move |dir| async move {
            let (wal, _, _) = open(&dir, config).await.unwrap();
            // One after another: three groups, three writes.
            append_all(&wal, vec![vec![7u8; 100]; 3]).await;
            let mut flags = Vec::new();
            for (_, path) in list_segments(&dir).unwrap() {
                flags.extend(open_flags_of(&path.canonicalize().unwrap()));
            }
            let syncs = wal.stats().syncs;
            wal.close().await.unwrap();
            (flags, syncs)
        });
        let has = |flag: i32| flags.iter().filter(|f| *f & flag == flag).count();
        match mode {
            SyncMode::Batch => {
                assert_eq!(flags.len(), 1, "one segment open, the active one: {flags:?}");
                assert_eq!(has(libc::O_DSYNC | libc::O_DIRECT), 1, "batch mode writes O_DIRECT, O_DSYNC: {flags:?}");
                assert_eq!(syncs, 3, "each acknowledged group was one durable write");
            }
            SyncMode::Periodic => {
                // The active segment, opened direct (pre-allocation) and through the page
                // cache (the appends).
                assert_eq!(flags.len(), 2, "the active segment's two descriptors: {flags:?}");
                assert_eq!(has(libc::O_DSYNC), 0, "periodic mode writes without O_DSYNC: {flags:?}");
                assert_eq!(has(libc::O_DIRECT), 1, "and appends through the page cache: {flags:?}");
                assert_eq!(syncs, 0, "and syncs only when the period has passed");
            }
        }
    }
}

#[test]
fn periodic_mode_acknowledges_after_the_write_and_records_survive_a_killed_process() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let mut rng = seed.rng();
    let payloads: Vec<Vec<u8>> = (0..20).map(|_| payload(&mut rng, 3000)).collect();
    // The period never elapses during the test: acknowledgement cannot wait for a sync.
    let config = WalConfig { sync_mode: SyncMode::Periodic, periodic_sync: Duration::from_secs(3600), ..test_config() };
    acked_then_replayed(config, move |wal| async move {
        let acked = append_all(&wal, payloads).await;
        assert_eq!(wal.stats().syncs, 0, "periodic mode acknowledges without fdatasync");
        // Like kill -9: no close, no sync; the executor (the "process") goes away, and with
        // the process its descriptors.
        std::mem::forget(wal);
        acked
    });
}

/// Periodic mode hands what it wrote to the page cache to writeback every
/// `WRITEBACK_EVERY` bytes, so the fdatasync that seals a segment finds little left to write;
/// Batch mode's direct writes never need it.
#[test]
fn periodic_appends_start_writeback_as_they_go_and_batch_appends_do_not() {
    for mode in [SyncMode::Periodic, SyncMode::Batch] {
        let config = WalConfig {
            sync_mode: mode,
            periodic_sync: Duration::from_secs(3600),
            segment_size: 8 << 20,
            ..test_config()
        };
        // 3.5 MiB in 56 records of 64 KiB.
        let payloads: Vec<Vec<u8>> = (0..56u8).map(|i| vec![i; 64 << 10]).collect();
        acked_then_replayed(config, move |wal| async move {
            let acked = append_all(&wal, payloads).await;
            let stats = wal.stats();
            match mode {
                SyncMode::Periodic => assert_eq!(stats.writebacks, 3, "one per whole MiB written: {stats:?}"),
                SyncMode::Batch => assert_eq!(stats.writebacks, 0, "{stats:?}"),
            }
            wal.close().await.unwrap();
            acked
        });
    }
}

#[test]
fn periodic_timer_syncs_when_idle_and_dirty_and_then_rests() {
    let config = WalConfig { sync_mode: SyncMode::Periodic, periodic_sync: Duration::from_millis(20), ..test_config() };
    acked_then_replayed(config, move |wal| async move {
        let acked = append_all(&wal, vec![b"one".to_vec()]).await;
        glommio::timer::sleep(Duration::from_millis(200)).await;
        let synced = wal.stats().syncs;
        assert!(synced >= 1, "the timer synced the dirty segment");
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert_eq!(wal.stats().syncs, synced, "no sync while idle and clean");
        // An explicit sync makes a fresh record durable now.
        let mut acked = acked;
        acked.extend(append_all(&wal, vec![b"two".to_vec()]).await);
        wal.sync().await.unwrap();
        assert!(wal.stats().syncs > synced);
        wal.close().await.unwrap();
        acked
    });
}

#[test]
fn rotation_spreads_records_over_segments_and_replay_crosses_them() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed.rng();
    let payloads: Vec<Vec<u8>> = (0..150).map(|_| sized_payload(&mut rng, 1500, 2500)).collect();
    let acked = on_executor(dir.path(), move |dir| async move {
        let (wal, _, _) = open(&dir, small_segments()).await.unwrap();
        let mut acked = Vec::new();
        for chunk in payloads.chunks(10) {
            acked.extend(append_concurrently(&wal, chunk.to_vec()).await);
        }
        let stats = wal.stats();
        assert_eq!(stats.segments_created as usize, segment_paths(&dir).len());
        wal.close().await.unwrap();
        acked
    });
    let segments = segment_paths(dir.path());
    assert!(segments.len() >= 4, "{} segments", segments.len());
    for path in &segments {
        let len = std::fs::metadata(path).unwrap().len();
        assert_eq!(len, 64 << 10, "segments are pre-allocated to the segment size");
    }
    let report = assert_replays(dir.path(), small_segments(), &acked);
    assert_eq!(report.segments, segments.len());
}

#[test]
fn release_through_deletes_only_fully_flushed_sealed_segments() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed.rng();
    let payloads: Vec<Vec<u8>> = (0..150).map(|_| sized_payload(&mut rng, 1500, 2500)).collect();
    let dir_path = dir.path().to_path_buf();
    let expected_after = on_executor(dir.path(), move |dir| async move {
        let (wal, _, _) = open(&dir, small_segments()).await.unwrap();
        let mut acked = Vec::new();
        for chunk in payloads.chunks(10) {
            acked.extend(append_concurrently(&wal, chunk.to_vec()).await);
        }
        let segments = segment_paths(&dir);
        assert!(segments.len() >= 4);
        let firsts: Vec<Lsn> = segments.iter().map(|p| first_lsn_of(p)).collect();

        // Segment 0 ends at firsts[1] - 1: one LSN short keeps it.
        assert_eq!(wal.release_through(firsts[1] - 2).await.unwrap(), 0);
        assert_eq!(wal.release_through(firsts[1] - 1).await.unwrap(), 1);
        assert!(!segments[0].exists() && segments[1].exists());
        assert_eq!(wal.release_through(firsts[3] - 1).await.unwrap(), 2);
        // Everything flushed: all but the active (newest) segment go.
        let remaining = segment_paths(&dir).len();
        assert_eq!(wal.release_through(Lsn::MAX).await.unwrap(), remaining - 1);
        let left = segment_paths(&dir);
        assert_eq!(left, vec![segments.last().unwrap().clone()]);
        assert_eq!(wal.stats().segments_deleted as usize, segments.len() - 1);

        let first_left = first_lsn_of(&left[0]);
        let mut expected: Replayed = acked.into_iter().filter(|(l, _)| *l >= first_left).collect();
        expected.extend(append_all(&wal, vec![b"after release".to_vec()]).await);
        wal.close().await.unwrap();
        expected
    });
    assert_replays(&dir_path, small_segments(), &expected_after);
}

/// Writes `payloads` in one fresh segment with a closed WAL; returns the acknowledged records
/// and the segment path.
fn write_one_segment(dir: &Path, payloads: Vec<Vec<u8>>) -> (Replayed, PathBuf) {
    let acked = on_executor(dir, move |dir| async move {
        let (wal, _, _) = open(&dir, test_config()).await.unwrap();
        let acked = append_all(&wal, payloads).await;
        wal.close().await.unwrap();
        acked
    });
    let segments = segment_paths(dir);
    assert_eq!(segments.len(), 1);
    (acked, segments[0].clone())
}

/// After a torn tail: a reopen reports it, keeps `kept`, and new appends replay on the next
/// reopen (with no torn tail left).
fn assert_torn_tail_recovery(dir: &Path, kept: Replayed, torn_at: u64) {
    let expected = kept.clone();
    let all = on_executor(dir, move |dir| async move {
        let (wal, report, replayed) = open(&dir, test_config()).await.unwrap();
        assert_eq!(replayed, expected);
        let torn = report.torn_tail.expect("torn tail reported");
        assert_eq!(torn.offset, torn_at);
        assert!(report.truncated_corruption.is_none());
        let mut all = replayed;
        let next = all.len() as Lsn + 1;
        let fresh = append_all(&wal, vec![b"after the tear".to_vec(), vec![0xAB; 5000], vec![]]).await;
        assert_eq!(fresh[0].0, next, "appends continue after the last good record");
        all.extend(fresh);
        wal.close().await.unwrap();
        all
    });
    let report = assert_replays(dir, test_config(), &all);
    assert_eq!(report.torn_tail, None, "the tear was overwritten");
}

fn ten_payloads(seed: &Seed) -> Vec<Vec<u8>> {
    let mut rng = seed.rng();
    (0..10).map(|_| payload(&mut rng, 2000)).collect()
}

/// Segments are pre-allocated before they are named, so a crash never leaves a short one: a
/// newest segment cut in the middle of its last record is corruption (naming the segment and
/// the size it was cut to), unless the operator asks to keep what is left.
#[test]
fn truncated_newest_segment_is_corruption_unless_truncate_corrupt() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let payloads = ten_payloads(&seed);
    let lens: Vec<usize> = payloads.iter().map(|p| p.len()).collect();
    let (acked, segment) = write_one_segment(dir.path(), payloads);
    let last = *record_offsets(&lens).last().unwrap();
    let cut = last + (16 + lens[9] as u64) / 2;
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
    let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
    let expected = segment.clone();
    assert!(
        matches!(&err, Some(WalError::Corrupt { segment, offset, .. }) if *segment == expected && *offset == cut),
        "{err:?}"
    );
    for len in [0, 6000] {
        std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len).unwrap();
        let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
        assert!(matches!(&err, Some(WalError::Corrupt { offset, .. }) if *offset == len), "{len}: {err:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    let (acked_again, segment) = write_one_segment(dir.path(), ten_payloads(&seed));
    assert_eq!(acked_again, acked);
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(cut).unwrap();
    let truncating = WalConfig { truncate_corrupt: true, ..test_config() };
    let kept = acked[..9].to_vec();
    on_executor(dir.path(), move |dir| async move {
        let (wal, report, replayed) = open(&dir, truncating).await.unwrap();
        assert_eq!(replayed, kept);
        assert_eq!(report.torn_tail.map(|t| t.offset), Some(last));
        wal.append(b"after").await.unwrap();
        wal.close().await.unwrap();
    });
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), test_config().segment_size, "extended again");
}

/// A flipped byte inside the newest segment's last record leaves it complete on disk, which
/// an interrupted write cannot: corruption, not a torn tail.
#[test]
fn flipped_byte_in_the_last_record_is_corruption() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut payloads = ten_payloads(&seed);
    payloads[9] = vec![0x5A; 1500];
    let lens: Vec<usize> = payloads.iter().map(|p| p.len()).collect();
    let (_, segment) = write_one_segment(dir.path(), payloads);
    let last = *record_offsets(&lens).last().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[last as usize + 16 + 700] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
    assert!(matches!(&err, Some(WalError::Corrupt { offset, .. }) if *offset == last), "{err:?}");
}

/// A zeroed header with records after it is damage, not a segment whose first write never
/// landed (that one is all zero).
#[test]
fn zeroed_header_of_the_newest_segment_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, segment) = write_one_segment(dir.path(), vec![b"kept".to_vec(), b"also".to_vec()]);
    patch_file(&segment, 0, &vec![0u8; SEGMENT_HEADER_SIZE]);
    let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
    assert!(matches!(&err, Some(WalError::BadSegmentHeader { .. })), "{err:?}");
    assert!(segment.exists(), "never deleted");
}

/// The caller holds the records before `needed_from` elsewhere: a log starting after it has
/// lost its oldest segment, and that is refused (or, with truncate_corrupt, accepted).
#[test]
fn a_log_starting_after_the_needed_lsn_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let acked = on_executor(dir.path(), |dir| async move {
        let (wal, _, _) = open(&dir, small_segments()).await.unwrap();
        let acked = append_all(&wal, (0..40).map(|i| vec![i as u8; 5000]).collect()).await;
        wal.close().await.unwrap();
        acked
    });
    let segments = segment_paths(dir.path());
    assert!(segments.len() >= 3, "{segments:?}");
    let second_starts = first_lsn_of(&segments[1]);
    std::fs::remove_file(&segments[0]).unwrap();
    let open_needing = |needed: Option<Lsn>, config: WalConfig| {
        on_executor(dir.path(), move |dir| async move {
            match Wal::open_needing(&dir, config, needed, |_, _| Ok(())).await {
                Ok((wal, report)) => {
                    wal.close().await.unwrap();
                    Ok(report)
                }
                Err(e) => Err(e),
            }
        })
    };
    let err = open_needing(Some(3), small_segments()).unwrap_err();
    assert!(matches!(&err, WalError::Corrupt { segment, offset: 0, .. } if *segment == segments[1]), "{err:?}");
    // Everything before the second segment already held elsewhere: nothing is missing.
    open_needing(Some(second_starts), small_segments()).unwrap();
    let report = open_needing(Some(3), WalConfig { truncate_corrupt: true, ..small_segments() }).unwrap();
    assert!(report.truncated_corruption.is_some());
    assert_eq!(report.last_lsn, acked.last().unwrap().0);
}

/// With every segment gone, new LSNs still start after what the caller holds.
#[test]
fn lsns_never_fall_back_below_the_needed_lsn() {
    let dir = tempfile::tempdir().unwrap();
    on_executor(dir.path(), |dir| async move {
        let (wal, _) = Wal::open_needing(&dir, test_config(), Some(500), |_, _| Ok(())).await.unwrap();
        assert_eq!(wal.append(b"x").await.unwrap(), 500);
        wal.close().await.unwrap();
        let (wal, report) = Wal::open_needing(&dir, test_config(), Some(500), |_, _| Ok(())).await.unwrap();
        assert_eq!(report.last_lsn, 500);
        wal.close().await.unwrap();
        let missing = Wal::open_needing(&dir, test_config(), Some(400), |_, _| Ok(())).await.err();
        assert!(matches!(missing, Some(WalError::Corrupt { offset: 0, .. })), "{missing:?}");
    });
}

/// A segment whose creation a crash interrupted never got its name: it is removed.
#[test]
fn staging_leftovers_are_removed_and_segments_appear_full_size() {
    let dir = tempfile::tempdir().unwrap();
    let acked = on_executor(dir.path(), |dir| async move {
        std::fs::write(dir.join(format!("{}.tmp", segment::segment_file_name(1))), b"").unwrap();
        let (wal, _, _) = open(&dir, test_config()).await.unwrap();
        let acked = append_all(&wal, vec![b"one".to_vec()]).await;
        wal.close().await.unwrap();
        acked
    });
    assert_replays(dir.path(), test_config(), &acked);
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    assert_eq!(std::fs::metadata(&segment_paths(dir.path())[0]).unwrap().len(), test_config().segment_size);
}

#[test]
fn zeroed_tail_is_recovered_as_torn_tail() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let payloads = ten_payloads(&seed);
    let lens: Vec<usize> = payloads.iter().map(|p| p.len()).collect();
    let (acked, segment) = write_one_segment(dir.path(), payloads);
    let last = *record_offsets(&lens).last().unwrap();
    let from = last + 8; // inside the last record's header: its length and LSN are gone
    let size = std::fs::metadata(&segment).unwrap().len();
    patch_file(&segment, from, &vec![0u8; (size - from) as usize]);
    assert_torn_tail_recovery(dir.path(), acked[..9].to_vec(), last);
}

#[test]
fn garbage_after_the_last_record_is_recovered_as_torn_tail() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let payloads = ten_payloads(&seed);
    let lens: Vec<usize> = payloads.iter().map(|p| p.len()).collect();
    let (acked, segment) = write_one_segment(dir.path(), payloads);
    let end = record_offsets(&lens).last().unwrap() + framed_len(lens[9]) as u64;
    let mut rng = seed.rng();
    let garbage: Vec<u8> = (0..9000).map(|_| rng.gen_range(1..=255u8)).collect();
    patch_file(&segment, end, &garbage);
    assert_torn_tail_recovery(dir.path(), acked, end);
}

#[test]
fn flipped_byte_in_the_middle_of_the_newest_segment_is_corruption() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let payloads: Vec<Vec<u8>> = ten_payloads(&seed)
        .into_iter()
        .map(|mut p| {
            p.push(1); // non-empty, so the flip lands in a payload
            p
        })
        .collect();
    let lens: Vec<usize> = payloads.iter().map(|p| p.len()).collect();
    let (_, segment) = write_one_segment(dir.path(), payloads);
    let fifth = record_offsets(&lens)[4];
    flip_byte(&segment, fifth + 16);
    let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
    match err {
        Some(WalError::Corrupt { segment: s, offset, .. }) => {
            assert_eq!(s, segment);
            assert_eq!(offset, fifth);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Writes records over several 64 KiB segments (about 2 KB each, so 150 records fill at least
/// four); returns the acknowledged records.
fn write_segments(dir: &Path, seed: &Seed, count: usize) -> Replayed {
    let mut rng = seed.rng();
    let payloads: Vec<Vec<u8>> = (0..count).map(|_| sized_payload(&mut rng, 1500, 2500)).collect();
    on_executor(dir, move |dir| async move {
        let (wal, _, _) = open(&dir, small_segments()).await.unwrap();
        let mut acked = Vec::new();
        for chunk in payloads.chunks(10) {
            acked.extend(append_concurrently(&wal, chunk.to_vec()).await);
        }
        wal.close().await.unwrap();
        acked
    })
}

/// Offset of the record `lsn` in `segment` (found by walking its frames).
fn offset_of(segment: &Path, acked: &Replayed, lsn: Lsn) -> u64 {
    let first = first_lsn_of(segment);
    let lens: Vec<usize> = acked.iter().filter(|(l, _)| *l >= first && *l <= lsn).map(|(_, p)| p.len()).collect();
    *record_offsets(&lens).last().unwrap()
}

#[test]
fn damaged_last_record_of_an_older_segment_is_corruption() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let acked = write_segments(dir.path(), &seed, 150);
    let segments = segment_paths(dir.path());
    assert!(segments.len() >= 3);
    // The last record of the first segment: nothing valid follows it in that segment, which in
    // the newest segment would be a torn tail, but older segments are complete.
    let last_lsn = first_lsn_of(&segments[1]) - 1;
    let offset = offset_of(&segments[0], &acked, last_lsn);
    flip_byte(&segments[0], offset + 3);
    let err = on_executor(dir.path(), |dir| async move { open(&dir, small_segments()).await.err() });
    match err {
        Some(WalError::Corrupt { segment, offset: at, .. }) => {
            assert_eq!(segment, segments[0]);
            assert_eq!(at, offset);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn truncate_corrupt_keeps_records_before_and_quarantines_later_segments() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let acked = write_segments(dir.path(), &seed, 150);
    let segments = segment_paths(dir.path());
    assert!(segments.len() >= 4);
    // Damage a record in the middle of the second segment.
    let damaged_lsn = first_lsn_of(&segments[1]) + 2;
    flip_byte(&segments[1], offset_of(&segments[1], &acked, damaged_lsn) + 20);

    let config = WalConfig { truncate_corrupt: true, ..small_segments() };
    let kept: Replayed = acked.iter().filter(|(l, _)| *l < damaged_lsn).cloned().collect();
    let expected = kept.clone();
    let all = on_executor(dir.path(), move |dir| async move {
        let (wal, report, replayed) = open(&dir, config).await.unwrap();
        assert_eq!(replayed, expected);
        let cut = report.truncated_corruption.expect("corruption reported");
        assert_eq!(cut.segment, segments[1]);
        let quarantine: Vec<PathBuf> =
            segments[2..].iter().map(|p| dir.join(QUARANTINE_DIR).join(p.file_name().unwrap())).collect();
        assert_eq!(cut.quarantined, quarantine);
        assert!(quarantine.iter().all(|p| p.exists()), "moved, not deleted");
        assert_eq!(segment_paths(&dir), segments[..2].to_vec());
        let mut all = replayed;
        all.extend(append_all(&wal, vec![b"after truncation".to_vec()]).await);
        assert_eq!(all.last().unwrap().0, damaged_lsn);
        wal.close().await.unwrap();
        all
    });
    // The cut is clean now: a normal open (truncate_corrupt off) accepts it.
    let report = assert_replays(dir.path(), small_segments(), &all);
    assert!(report.truncated_corruption.is_none() && report.torn_tail.is_none());
}

#[test]
fn bad_segment_header_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, segment) = write_one_segment(dir.path(), vec![b"a".to_vec(), b"b".to_vec()]);
    flip_byte(&segment, 17); // segment id field
    let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
    assert!(matches!(&err, Some(WalError::BadSegmentHeader { segment: s, .. }) if *s == segment), "{err:?}");
}

#[test]
fn unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, segment) = write_one_segment(dir.path(), vec![b"a".to_vec()]);
    patch_file(&segment, 8, &2u16.to_le_bytes());
    let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
    assert!(matches!(&err, Some(WalError::UnsupportedVersion { version: 2, segment: s }) if *s == segment), "{err:?}");
}

#[test]
fn short_garbage_segment_is_a_typed_error_and_empty_newest_segment_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, _) = write_one_segment(dir.path(), vec![b"kept".to_vec()]);
    let stray = dir.path().join(segment::segment_file_name(2));
    std::fs::write(&stray, vec![0u8; 8192]).unwrap(); // created, header never written
    let report = assert_replays(dir.path(), test_config(), &acked);
    assert_eq!(report.torn_tail.map(|t| t.segment), Some(stray.clone()));
    assert!(!stray.exists());

    std::fs::write(&stray, b"not a segment at all").unwrap();
    let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
    assert!(matches!(&err, Some(WalError::Corrupt { segment, offset: 20, .. }) if *segment == stray), "{err:?}");
    std::fs::write(&stray, vec![0x41u8; 8192]).unwrap();
    let err = on_executor(dir.path(), |dir| async move { open(&dir, test_config()).await.err() });
    assert!(matches!(&err, Some(WalError::BadSegmentHeader { .. })), "{err:?}");
}

#[test]
fn record_too_large_is_refused_without_taking_an_lsn() {
    let dir = tempfile::tempdir().unwrap();
    on_executor(dir.path(), |dir| async move {
        let config = WalConfig { max_record_size: 1000, segment_size: 8192, ..test_config() };
        let (wal, _, _) = open(&dir, config).await.unwrap();
        let err = wal.append(&[0u8; 1001]).await.unwrap_err();
        assert!(matches!(err, WalError::RecordTooLarge { size: 1001, max: 1000 }), "{err:?}");
        assert_eq!(wal.append(&[0u8; 1000]).await.unwrap(), 1);
        wal.close().await.unwrap();

        // The segment bounds the payload too: 8192 - 4096 header - 16 frame header.
        let config = WalConfig { segment_size: 8192, ..test_config() };
        let (wal, _, _) = open(&dir, config).await.unwrap();
        let err = wal.append(&[0u8; 5000]).await.unwrap_err();
        assert!(matches!(err, WalError::RecordTooLarge { size: 5000, max: 4080 }), "{err:?}");
        assert_eq!(wal.append(&[9u8; 4080]).await.unwrap(), 2, "a full-segment record fits");
        wal.close().await.unwrap();
    });
}

#[test]
fn failed_rotation_fails_the_group_and_refuses_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let acked = on_executor(dir.path(), |dir| async move {
        let (wal, _, _) = open(&dir, WalConfig { segment_size: 16384, ..test_config() }).await.unwrap();
        let acked = append_all(&wal, vec![vec![1u8; 5000]]).await;
        // Occupy the next segment's name: its creation fails.
        std::fs::write(dir.join(segment::segment_file_name(2)), vec![0u8; 8192]).unwrap();
        let err = wal.append(&[2u8; 9000]).await.unwrap_err();
        assert!(matches!(&err, WalError::Failed(cause) if matches!(**cause, WalError::Io(_))), "{err:?}");
        let later = wal.append(b"later").await.unwrap_err();
        assert!(matches!(later, WalError::Failed(_)), "{later:?}");
        assert!(matches!(wal.sync().await, Err(WalError::Failed(_))));
        assert!(matches!(wal.close().await, Err(WalError::Failed(_))));
        acked
    });
    // The stray empty file is the newest segment: dropped as never written; the rest replays.
    assert_replays(dir.path(), test_config(), &acked);
}

#[test]
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    on_executor(dir.path(), |dir| async move {
        for config in [
            WalConfig { segment_size: 5000, ..test_config() },
            WalConfig { segment_size: 4096, ..test_config() },
            WalConfig { max_pending_bytes: 0, ..test_config() },
        ] {
            assert!(matches!(open(&dir, config).await.err(), Some(WalError::InvalidConfig(_))));
        }
    });
}

#[test]
fn apply_error_from_replay_propagates() {
    let dir = tempfile::tempdir().unwrap();
    write_one_segment(dir.path(), vec![b"a".to_vec(), b"b".to_vec()]);
    on_executor(dir.path(), |dir| async move {
        let result = Wal::open(&dir, test_config(), |lsn, _| {
            if lsn == 2 {
                Err(WalError::Apply("shard refused".into()))
            } else {
                Ok(())
            }
        })
        .await;
        assert!(matches!(result, Err(WalError::Apply(m)) if m == "shard refused"));
    });
}

/// Takes an exclusive flock on `path` through a new open file, as a segment's writer holds it.
fn hold_segment_lock(path: &Path) -> std::fs::File {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    // SAFETY: a plain syscall on a descriptor this function owns.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0, "lock");
    file
}

#[test]
fn a_segment_locked_by_another_open_file_is_not_taken_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let seed = Seed::from_env("WAL_TEST_SEED");
    let (_, segment) = write_one_segment(dir.path(), ten_payloads(&seed));
    let holder = hold_segment_lock(&segment);
    let path = segment.clone();
    let (refused, taken) = on_executor(dir.path(), move |_| async move {
        use super::segment::lock_segment_within;
        let file = glommio::io::OpenOptions::new().read(true).dma_open(&path).await.expect("open");
        let refused = lock_segment_within(&file, &path, Duration::from_millis(20)).await.map(drop);
        drop(holder);
        // Dropped (unlocked) before the file is closed.
        let taken = lock_segment_within(&file, &path, Duration::from_millis(20)).await.map(drop);
        file.close().await.expect("close");
        (refused, taken)
    });
    let err = refused.expect_err("the lock is held by another open file").to_string();
    assert!(err.contains("still holds its lock"), "{err}");
    taken.expect("taken once the other open file is closed");
}

/// A killed process's last write can land after the process is gone (io_uring completes it
/// asynchronously). Replay waits for the open file that holds the segment's lock, so it reads
/// that write instead of a hole it would then overwrite.
#[test]
fn replay_waits_for_a_write_still_in_flight_from_a_previous_owner() {
    let seed = Seed::from_env("WAL_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let payloads = ten_payloads(&seed);
    let lens: Vec<usize> = payloads.iter().map(|p| p.len()).collect();
    let (acked, segment) = write_one_segment(dir.path(), payloads);
    // The last record is "in flight": not on disk yet, and its writer's file holds the lock.
    let last = *record_offsets(&lens).last().unwrap();
    let end = last + framed_len(lens[9]) as u64;
    let landing = {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; (end - last) as usize];
        std::fs::File::open(&segment).unwrap().read_exact_at(&mut bytes, last).unwrap();
        bytes
    };
    patch_file(&segment, last, &vec![0u8; landing.len()]);
    let holder = hold_segment_lock(&segment);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let replay = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            on_executor(&dir, move |dir| async move {
                started_tx.send(()).expect("signal");
                let (wal, _, replayed) = open(&dir, test_config()).await.expect("open");
                wal.close().await.expect("close");
                replayed
            })
        })
    };
    started_rx.recv().expect("replay started");
    // The write lands, then its file is released.
    patch_file(&segment, last, &landing);
    drop(holder);
    let replayed = replay.join().expect("replay thread");
    assert_eq!(replayed, acked, "replay saw the late write");
}

//! Hinted handoff: the segment codec and the admit/expire decisions as plain tests, and the
//! store (files, restart, torn tail, replay, drops) on a real node's data directory with an
//! in-process stand-in for the target that records what it is sent.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shards::mutation::{PartitionUpdate, Write};
use shards::node::{Node, NodeConfig};
use shards::read::now_secs;
use wire::schema::{ColumnDef, TableOptions, TableSchema};
use wire::{ColumnType, Value};

use super::store::HINTS_DIR;
use super::*;
use crate::cluster::messages::encode_mutate;
use crate::cluster::transport::PeerError;
use crate::cluster::transport::{PeerAnswer, PeerCall, PeerRequest, Peers};
use crate::cluster::view::{ClusterView, Member};

const TARGET: HostId = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;

fn segment_with(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = encode_segment_header(TARGET);
    for (i, (created, mutate)) in records.iter().enumerate() {
        encode_record_into(i as u64 + 1, *created, mutate, &mut bytes);
    }
    bytes
}

#[test]
fn segment_round_trips_its_target_and_records() {
    let records: Vec<(u64, Vec<u8>)> = (0..5u64).map(|i| (1_000 + i, vec![i as u8; i as usize * 7])).collect();
    let bytes = segment_with(&records);
    let scan = scan_segment(&bytes).unwrap();
    assert_eq!(scan.target, TARGET);
    assert_eq!(scan.damage, None);
    let got: Vec<(u64, Vec<u8>)> = scan.records.iter().map(|r| (r.created_micros, r.mutate.to_vec())).collect();
    assert_eq!(got, records);
    let framed: u64 = scan.records.iter().map(|r| r.framed_len).sum();
    assert_eq!(framed as usize, bytes.len() - SEGMENT_HEADER_LEN);
    assert_eq!(scan.records[2].framed_len, record_len(14));
}

#[test]
fn torn_tail_is_reported_and_the_records_before_it_kept() {
    let records: Vec<(u64, Vec<u8>)> = (0..4u64).map(|i| (i, vec![0xA0 | i as u8; 40])).collect();
    let bytes = segment_with(&records);
    let last_start = bytes.len() - record_len(40) as usize;
    for cut in last_start..bytes.len() {
        let scan = scan_segment(&bytes[..cut]).unwrap();
        assert_eq!(scan.records.len(), 3, "cut at {cut}");
        // A cut exactly at the record boundary is a clean end, anything inside is damage.
        assert_eq!(scan.damage.is_some(), cut > last_start, "cut at {cut}");
    }
    // A flipped byte in the second record hides it and everything after it.
    let mut flipped = bytes.clone();
    flipped[SEGMENT_HEADER_LEN + record_len(40) as usize + 20] ^= 0x10;
    let scan = scan_segment(&flipped).unwrap();
    assert_eq!(scan.records.len(), 1);
    assert!(scan.damage.unwrap().1.contains("crc32c"));
}

#[test]
fn every_damaged_header_byte_is_a_typed_error() {
    let good = segment_with(&[(1, vec![1, 2, 3])]);
    for i in 0..SEGMENT_HEADER_LEN {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        assert!(scan_segment(&bad).is_err(), "flip at byte {i} went unnoticed");
        assert!(scan_segment(&good[..i]).is_err(), "truncation at {i} went unnoticed");
    }
    let mut newer = good.clone();
    newer[8..10].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(scan_segment(&newer), Err(SegmentError::UnsupportedVersion(2)));
    assert_eq!(scan_segment(&good[..4]), Err(SegmentError::TooShort { len: 4 }));
}

#[test]
fn records_out_of_sequence_end_the_scan() {
    let mut bytes = encode_segment_header(TARGET);
    encode_record_into(1, 5, b"a", &mut bytes);
    encode_record_into(3, 5, b"b", &mut bytes);
    let scan = scan_segment(&bytes).unwrap();
    assert_eq!(scan.records.len(), 1);
    assert!(scan.damage.unwrap().1.contains("expected 2"));
}

#[test]
fn segment_file_names_round_trip_and_sort_by_sequence() {
    let name = segment_file_name(TARGET, 42);
    assert_eq!(name, "0123456789abcdef0011223344556677-00000000000000000042.hints");
    assert_eq!(parse_segment_file_name(&name), Some((TARGET, 42)));
    assert!(segment_file_name(TARGET, 9) < segment_file_name(TARGET, 10));
    for bad in ["x.hints", "0123-42.hints", &name.replace(".hints", ".wal"), &name.replace('4', "z")] {
        assert_eq!(parse_segment_file_name(bad), None, "{bad}");
    }
}

#[test]
fn admit_refuses_hints_past_the_window_or_the_size_limit() {
    let s =
        HintSettings { max_hint_window: Duration::from_secs(60), max_bytes_per_host: 1000, ..HintSettings::default() };
    assert_eq!(admit(&s, None, 0, 100), Ok(()));
    assert_eq!(admit(&s, Some(Duration::from_secs(60)), 0, 100), Ok(()));
    assert_eq!(admit(&s, Some(Duration::from_secs(61)), 0, 100), Err(DropReason::Window));
    assert_eq!(admit(&s, None, 900, 100), Ok(()));
    assert_eq!(admit(&s, None, 901, 100), Err(DropReason::SizeLimit));
    assert_eq!(admit(&s, None, u64::MAX, 1), Err(DropReason::SizeLimit));
}

#[test]
fn hints_older_than_the_window_expire() {
    let s = HintSettings { max_hint_window: Duration::from_millis(5), ..HintSettings::default() };
    assert!(!expired(&s, 1_000_000, 1_005_000));
    assert!(expired(&s, 1_000_000, 1_005_001));
    // A clock that went backwards does not expire anything.
    assert!(!expired(&s, 2_000_000, 1_000_000));
}

#[test]
fn drop_reasons_index_their_own_position() {
    for (i, reason) in DropReason::ALL.into_iter().enumerate() {
        assert_eq!(reason as usize, i, "{}", reason.name());
    }
}

proptest! {
    #[test]
    fn any_records_round_trip(records in proptest::collection::vec((any::<u64>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..20)) {
        let bytes = segment_with(&records);
        let scan = scan_segment(&bytes).unwrap();
        prop_assert_eq!(scan.damage, None);
        let got: Vec<(u64, Vec<u8>)> = scan.records.iter().map(|r| (r.created_micros, r.mutate.to_vec())).collect();
        prop_assert_eq!(got, records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut segment = encode_segment_header(TARGET);
        segment.extend_from_slice(&bytes);
        let _ = scan_segment(&segment);
        let _ = scan_segment(&bytes);
    }
}

/// The target: records every update it is sent, or refuses calls while down.
struct Recorder {
    received: RefCell<Vec<PartitionUpdate>>,
    down: Cell<bool>,
    calls: Cell<usize>,
    /// Calls answered before it goes down by itself.
    answers_left: Cell<usize>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            received: RefCell::default(),
            down: Cell::new(false),
            calls: Cell::new(0),
            answers_left: Cell::new(usize::MAX),
        }
    }
}

impl Peers for Recorder {
    fn call_shard(&self, peer: SocketAddr, _shard: u16, request: PeerRequest, _timeout: Duration) -> PeerCall<'_> {
        Box::pin(async move {
            self.calls.set(self.calls.get() + 1);
            if self.answers_left.get() == 0 {
                self.down.set(true);
            }
            self.answers_left.set(self.answers_left.get().saturating_sub(1));
            if self.down.get() {
                return Err(PeerError::Unreachable { peer, reason: "test: down".into() });
            }
            let PeerRequest::Mutate(body) = request else { panic!("hints send only MUTATE, not {request:?}") };
            self.received.borrow_mut().extend(body.decode().expect("a replayed MUTATE decodes"));
            Ok(PeerAnswer::MutateOk)
        })
    }
}

/// A one-shard node with a kv table, the view (this node and TARGET) and the recorder.
struct Fixture {
    node: Node,
    table: Arc<TableSchema>,
    view: Rc<RefCell<Rc<ClusterView>>>,
    target: Rc<Recorder>,
}

impl Fixture {
    fn set_target_up(&self, up: bool) {
        let member = |host, ip: u8, alive| Member {
            host,
            peer: SocketAddr::from(([127, 0, 0, ip], 7470)),
            client: SocketAddr::from(([127, 0, 0, ip], 9470)),
            tokens: vec![vec![i64::from(ip) * 1000]],
            shard_aware: None,
            alive,
            generation: 1,
            joining: false,
            replaces: None,
            leaving: false,
        };
        let members = vec![member(self.node.host_id(), 1, true), member(TARGET, 2, up)];
        *self.view.borrow_mut() = Rc::new(ClusterView::new(self.node.host_id(), members).expect("a view"));
        self.target.down.set(!up);
    }

    /// A MUTATE body of one write of `k`, stamped with `ts`.
    fn mutate(&self, k: i32, ts: i64) -> Rc<Vec<u8>> {
        let write =
            Write::upsert(&self.table, &[Value::Int(k)], &[], &[("v", Some(Value::Text(format!("v{k}"))))], 0, true)
                .expect("a valid write");
        let mut body = Vec::new();
        encode_mutate(&[write.stamp(ts, now_secs())], &mut body);
        Rc::new(body)
    }

    async fn open(&self, settings: HintSettings) -> Rc<HintStore> {
        HintStore::open(self.node.clone(), settings, self.view.clone(), self.target.clone(), Duration::from_secs(1))
            .await
            .expect("open the hints")
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(HINTS_DIR))
        .map(|entries| entries.map(|e| e.expect("a directory entry").path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "hints"));
    files.sort();
    files
}

/// Polls `done` on the executor for up to ten seconds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `body` on a fresh executor with a fixture on a new node in `dir`.
fn with_fixture<F, Fut>(dir: &Path, body: F)
where
    F: FnOnce(Fixture) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mut config = NodeConfig::new(dir);
    config.shards = 1;
    let node = Node::open(config).expect("open a node").0;
    let kv = TableSchema {
        id: 0,
        name: "kv".into(),
        partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Int }],
        clustering: Vec::new(),
        columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Text }],
        options: TableOptions::default(),
    };
    let table = match node.table("kv") {
        Ok(table) => table,
        Err(_) => futures_lite::future::block_on(node.create_table(kv, None)).expect("create kv"),
    };
    let shutdown = node.clone();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let view = Rc::new(RefCell::new(Rc::new(ClusterView::alone(node.host_id()))));
            let fixture = Fixture { node, table, view, target: Rc::default() };
            fixture.set_target_up(false);
            body(fixture).await;
            shutdown.shutdown().await.expect("shut the node down");
        })
        .expect("spawn an executor")
        .join()
        .expect("the test body panicked");
}

const NO_THROTTLE: HintSettings = HintSettings {
    enabled: true,
    max_hint_window: DEFAULT_MAX_HINT_WINDOW,
    max_bytes_per_host: DEFAULT_MAX_HINTS_BYTES_PER_HOST,
    throttle_kib: 0,
};

#[test]
fn hints_survive_a_restart_with_a_torn_tail_and_replay_with_their_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    with_fixture(dir.path(), move |f| async move {
        let store = f.open(NO_THROTTLE).await;
        for k in 0..50 {
            store.store(TARGET, false, &f.mutate(k, 1_000 + i64::from(k)));
        }
        until("50 hints are durable", || store.counts().stored == 50).await;
        assert_eq!(store.counts().pending, vec![(TARGET, 50)]);
        // A replay while the target is still down delivers nothing and keeps everything.
        store.start_replay(TARGET);
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.counts().pending_total(), 50);
        drop(store);
        glommio::timer::sleep(Duration::from_millis(20)).await;

        // A crash in the middle of the last record's write: its bytes are cut short.
        let files = segments(&path);
        assert_eq!(files.len(), 1, "{files:?}");
        let len = std::fs::metadata(&files[0]).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&files[0]).unwrap().set_len(len - 3).unwrap();

        let store = f.open(NO_THROTTLE).await;
        assert_eq!(store.counts().pending, vec![(TARGET, 49)], "the torn record is skipped");
        f.set_target_up(true);
        store.peer_up(TARGET);
        until("the hints are replayed", || store.counts().pending_total() == 0).await;
        let counts = store.counts();
        assert_eq!((counts.replayed, counts.stored), (49, 0));
        let received = f.target.received.borrow();
        let mut timestamps: Vec<i64> = received.iter().filter_map(PartitionUpdate::max_timestamp).collect();
        timestamps.sort();
        assert_eq!(timestamps, (1_000..1_049).collect::<Vec<i64>>(), "every hint, with its own timestamp");
        assert!(segments(&path).is_empty(), "replayed segments are deleted");
    });
}

#[test]
fn a_replay_that_fails_keeps_the_rest_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    with_fixture(dir.path(), |f| async move {
        let store = f.open(NO_THROTTLE).await;
        // Large enough bodies for several MUTATEs per replay.
        let padding = "x".repeat(4000);
        for k in 0..100 {
            let write =
                Write::upsert(&f.table, &[Value::Int(k)], &[], &[("v", Some(Value::Text(padding.clone())))], 0, true)
                    .unwrap();
            let mut body = Vec::new();
            encode_mutate(&[write.stamp(5, now_secs())], &mut body);
            store.store(TARGET, true, &Rc::new(body));
        }
        until("100 hints are durable", || store.counts().stored == 100).await;
        f.set_target_up(true);
        // The target goes away again after its second MUTATE.
        f.target.answers_left.set(2);
        store.start_replay(TARGET);
        until("the replay stops", || f.target.calls.get() == 3).await;
        glommio::timer::sleep(Duration::from_millis(20)).await;
        let delivered = f.target.received.borrow().len() as u64;
        assert!(delivered > 0 && delivered < 100, "delivered {delivered}");
        assert_eq!(store.counts().pending_total(), 100 - delivered, "only acknowledged hints are done");
        f.target.answers_left.set(usize::MAX);
        f.set_target_up(true);
        store.peer_up(TARGET);
        until("the rest is replayed", || store.counts().pending_total() == 0).await;
        assert_eq!(f.target.received.borrow().len(), 100, "nothing twice, nothing missing");
    });
}

#[test]
fn hints_past_the_window_or_the_size_limit_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    with_fixture(dir.path(), |f| async move {
        let one = record_len(f.mutate(0, 1).len());
        let settings =
            HintSettings { max_hint_window: Duration::from_millis(30), max_bytes_per_host: 10 * one, ..NO_THROTTLE };
        let store = f.open(settings).await;
        for k in 0..15 {
            store.store(TARGET, true, &f.mutate(k, 1));
        }
        assert_eq!(store.counts().dropped(DropReason::SizeLimit), 5);
        until("10 hints are durable", || store.counts().stored == 10).await;
        // Past the window before the target came back: dropped at replay, nothing sent.
        glommio::timer::sleep(Duration::from_millis(40)).await;
        f.set_target_up(true);
        store.peer_up(TARGET);
        until("the expired hints are dropped", || store.counts().pending_total() == 0).await;
        assert_eq!(store.counts().dropped(DropReason::Expired), 10);
        assert_eq!(f.target.calls.get(), 0);

        // A target down longer than the window gets no new hints.
        f.set_target_up(false);
        store.peer_down(TARGET);
        store.store(TARGET, false, &f.mutate(1, 1));
        glommio::timer::sleep(Duration::from_millis(40)).await;
        store.store(TARGET, false, &f.mutate(2, 1));
        assert_eq!(store.counts().dropped(DropReason::Window), 1);
        assert_eq!(store.counts().pending_total(), 1);

        // Turned off: nothing kept, nothing counted.
        let off = f.open(HintSettings { enabled: false, ..NO_THROTTLE }).await;
        let before = off.counts();
        off.store(TARGET, false, &f.mutate(3, 1));
        assert_eq!(off.counts(), before);
    });
}

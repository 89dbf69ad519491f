//! Behaviour of SSTables on real files: each test runs on a fresh glommio executor over a
//! temporary directory, probing the device first (`crate::io::prepare_executor_io`), and checks
//! what it reads against an in-memory model (a `BTreeMap` of the partitions written).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wire::Token;

use super::bloom::{BloomFilter, BloomHash};
use super::format::{block_for_header, decode_index, DataBlock, Footer, FooterError, FOOTER_LEN};
use super::*;
use crate::cell::{Cell, Deletion};
use crate::key::{ClusteringKey, PartitionKey};
use crate::row::{ClusteringSlice, Partition, Row};
use crate::test_support::{on_executor, Seed};

pub(super) type Model = BTreeMap<PartitionKey, Partition>;

/// Small blocks and buffers, so that a few hundred partitions make many blocks, partitions span
/// blocks and the writer goes through many buffers.
pub(super) fn small_config() -> SstableConfig {
    SstableConfig { block_size: 512, bloom_fp_rate: 0.01, write_buffer: 8192 }
}

fn random_bytes(rng: &mut StdRng, min: usize, max: usize) -> Vec<u8> {
    let len = rng.gen_range(min..=max);
    (0..len).map(|_| rng.gen()).collect()
}

fn random_key(rng: &mut StdRng) -> PartitionKey {
    PartitionKey::from_serialized(random_bytes(rng, 1, 16))
}

fn random_deletion(rng: &mut StdRng) -> Deletion {
    Deletion { ts: rng.gen_range(0..1000), deleted_at: rng.gen_range(0..10_000) }
}

fn random_cell(rng: &mut StdRng, max_value: usize) -> Cell {
    let ts = rng.gen_range(0..1000);
    match rng.gen_range(0..4) {
        0 | 1 => Cell::Live { ts, value: random_bytes(rng, 0, max_value) },
        2 => Cell::Expiring {
            ts,
            value: random_bytes(rng, 0, max_value),
            ttl: rng.gen_range(1..100),
            expires_at: rng.gen_range(0..10_000),
        },
        _ => Cell::Tombstone { ts, deleted_at: rng.gen_range(0..10_000) },
    }
}

fn random_row(rng: &mut StdRng, max_value: usize) -> Row {
    let marker = rng.gen_bool(0.5).then(|| Cell::Live { ts: rng.gen_range(0..1000), value: vec![] });
    let deletion = rng.gen_bool(0.1).then(|| random_deletion(rng));
    let mut cells = Vec::new();
    for id in 0u16..6 {
        if rng.gen_bool(0.4) {
            cells.push((id, random_cell(rng, max_value)));
        }
    }
    Row { marker, deletion, cells }
}

/// Clustering keys over a tiny alphabet, so that prefixes of one another are common.
fn random_clustering(rng: &mut StdRng) -> ClusteringKey {
    let len = rng.gen_range(0..=5);
    ClusteringKey::from_encoded((0..len).map(|_| [0u8, 1, 2, 0xFF][rng.gen_range(0..4)]).collect())
}

fn random_partition(rng: &mut StdRng, max_rows: usize, max_value: usize) -> Partition {
    let deletion = rng.gen_bool(0.2).then(|| random_deletion(rng));
    let n = rng.gen_range(0..=max_rows);
    let rows = (0..n).map(|_| (random_clustering(rng), random_row(rng, max_value))).collect();
    Partition { deletion, rows }
}

/// `n` partitions: most small, some wide (spanning many 512-byte blocks), one with a row larger
/// than a block, one empty.
pub(super) fn random_model(rng: &mut StdRng, n: usize) -> Model {
    let mut model = Model::new();
    while model.len() < n {
        let wide = rng.gen_bool(0.05);
        let p = random_partition(rng, if wide { 120 } else { 4 }, 40);
        model.insert(random_key(rng), p);
    }
    let mut huge = random_partition(rng, 3, 40);
    let big_row = Row { cells: vec![(0, Cell::Live { ts: 1, value: vec![0xAB; 3000] })], ..Row::default() };
    huge.rows.insert(ClusteringKey::from_encoded(vec![1, 1]), big_row);
    model.insert(random_key(rng), huge);
    model.insert(random_key(rng), Partition::default());
    model
}

pub(super) async fn write(path: &Path, model: &Model, config: &SstableConfig) -> SstableMeta {
    let mut w = SstableWriter::create(path, 7, 3, 42, model.len(), config).await.expect("create");
    for (k, p) in model {
        w.add(k, p).await.expect("add");
    }
    w.finish().await.expect("finish")
}

/// Partitions of the model with token in (start, end] and key > after.
fn model_range(
    model: &Model,
    start: Token,
    end: Token,
    after: Option<&PartitionKey>,
) -> Vec<(PartitionKey, Partition)> {
    model
        .iter()
        .filter(|(k, _)| k.token() > start && k.token() <= end && after.is_none_or(|a| *k > a))
        .map(|(k, p)| (k.clone(), p.clone()))
        .collect()
}

async fn scan_all(
    sst: &Rc<Sstable>,
    start: Token,
    end: Token,
    after: Option<PartitionKey>,
) -> Vec<(PartitionKey, Partition)> {
    let mut scan = sst.scan(start, end, after);
    let mut out = Vec::new();
    while let Some(item) = scan.next().await.expect("scan") {
        out.push(item);
    }
    out
}

fn random_slice(rng: &mut StdRng) -> ClusteringSlice {
    let bound = |rng: &mut StdRng| match rng.gen_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(random_clustering(rng)),
        _ => Bound::Excluded(random_clustering(rng)),
    };
    match rng.gen_range(0..4) {
        0 => ClusteringSlice::ALL,
        1 => ClusteringSlice::prefix(random_clustering(rng)),
        _ => ClusteringSlice { start: bound(rng), end: bound(rng) },
    }
}

#[test]
fn written_partitions_read_back_equal_with_slices_and_scans() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed.rng();
    let model = random_model(&mut rng, 300);
    let rng_seed = rng.gen();
    on_executor(dir.path(), move |dir| async move {
        let mut rng = StdRng::seed_from_u64(rng_seed);
        let path = dir.join("t.sst");
        let written = write(&path, &model, &small_config()).await;
        let sst = Rc::new(Sstable::open(&path, 1, BlockCache::new(64 << 10)).await.expect("open"));
        assert_eq!(sst.meta(), &written);
        assert_eq!(sst.file_size(), std::fs::metadata(&path).unwrap().len());
        assert!(written.data_blocks > 100, "{} blocks", written.data_blocks);

        for (k, p) in &model {
            assert_eq!(
                sst.read_partition(k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.expect("read").as_ref(),
                Some(p),
                "{k:?}"
            );
            for _ in 0..3 {
                let slice = random_slice(&mut rng);
                let got = sst.read_partition(k, BloomHash::of(k.bytes()), &slice).await.expect("read slice");
                assert_eq!(got, Some(p.slice(&slice)), "{k:?} {slice:?}");
            }
        }
        for _ in 0..300 {
            let k = random_key(&mut rng);
            if !model.contains_key(&k) {
                assert_eq!(
                    sst.read_partition(&k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.expect("read absent"),
                    None
                );
            }
        }

        assert_eq!(scan_all(&sst, i64::MIN, i64::MAX, None).await, model_range(&model, i64::MIN, i64::MAX, None));
        for _ in 0..20 {
            let (a, b): (Token, Token) = (rng.gen(), rng.gen());
            let (start, end) = (a.min(b), a.max(b));
            assert_eq!(
                scan_all(&sst, start, end, None).await,
                model_range(&model, start, end, None),
                "({start}, {end}]"
            );
            // Resuming after a partition of the model (or after an absent key).
            let after = if rng.gen_bool(0.7) {
                model.keys().nth(rng.gen_range(0..model.len())).cloned().expect("non-empty")
            } else {
                random_key(&mut rng)
            };
            assert_eq!(
                scan_all(&sst, start, end, Some(after.clone())).await,
                model_range(&model, start, end, Some(&after)),
                "({start}, {end}] after {after:?}"
            );
        }
        // Paging through everything, a few partitions at a time.
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let mut scan = sst.scan(i64::MIN, i64::MAX, after.clone());
            let mut page = Vec::new();
            while page.len() < 7 {
                match scan.next().await.expect("page") {
                    Some(item) => page.push(item),
                    None => break,
                }
            }
            if page.is_empty() {
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
            pages.extend(page);
        }
        assert_eq!(pages, model_range(&model, i64::MIN, i64::MAX, None));
        // Empty and inverted ranges.
        assert!(scan_all(&sst, 5, 5, None).await.is_empty());
        assert!(scan_all(&sst, 10, -10, None).await.is_empty());
    });
}

#[test]
fn metadata_describes_what_was_written() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(&mut seed.rng(), 100);
    on_executor(dir.path(), move |dir| async move {
        let path = dir.join("t.sst");
        let meta = write(&path, &model, &small_config()).await;
        let (first, last) = (model.keys().next().unwrap(), model.keys().next_back().unwrap());
        assert_eq!((&meta.first_key, &meta.last_key), (first, last));
        assert_eq!((meta.min_token, meta.max_token), (first.token(), last.token()));
        assert_eq!((meta.table, meta.shard, meta.generation), (7, 3, 42));
        assert_eq!(meta.partitions, model.len() as u64);
        assert_eq!(meta.rows, model.values().map(|p| p.rows.len() as u64).sum::<u64>());
        let timestamps = model.values().filter_map(Partition::max_timestamp);
        assert_eq!(meta.max_timestamp, timestamps.max().unwrap());
        let cells =
            model.values().flat_map(|p| p.rows.values()).flat_map(|r| r.cells.iter().map(|(_, c)| c).chain(&r.marker));
        let tombstones = cells.clone().filter(|c| c.is_tombstone()).count()
            + model.values().filter(|p| p.deletion.is_some()).count()
            + model.values().flat_map(|p| p.rows.values()).filter(|r| r.deletion.is_some()).count();
        assert_eq!(meta.tombstones, tombstones as u64);
        assert_eq!(meta.expiring_cells, cells.clone().filter(|c| matches!(c, Cell::Expiring { .. })).count() as u64);
        assert_eq!(meta.live_cells, cells.filter(|c| !c.is_tombstone()).count() as u64);
        assert_eq!(meta.file_size, std::fs::metadata(&path).unwrap().len());
        assert_eq!(meta.file_size % 4096, 0);
        // The manifest form round-trips.
        let mut w = wire::codec::Writer::new();
        meta.encode(&mut w);
        let bytes = w.into_bytes();
        assert_eq!(SstableMeta::decode(&mut wire::codec::Reader::new(&bytes)).unwrap(), meta);
    });
}

#[test]
fn bloom_false_positive_rate_on_absent_keys_is_near_the_setting() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed.rng();
    let mut model = Model::new();
    while model.len() < 10_000 {
        model.insert(random_key(&mut rng), Partition::default());
    }
    let absent: Vec<PartitionKey> =
        std::iter::repeat_with(|| random_key(&mut rng)).filter(|k| !model.contains_key(k)).take(10_000).collect();
    let config = SstableConfig { block_size: 4096, ..SstableConfig::default() };
    let (rate, stats) = on_executor(dir.path(), move |dir| async move {
        let path = dir.join("t.sst");
        write(&path, &model, &config).await;
        let sst = Sstable::open(&path, 1, BlockCache::new(1 << 20)).await.expect("open");
        let positives = absent.iter().filter(|k| sst.may_contain(k, BloomHash::of(k.bytes()))).count();
        for k in absent.iter().take(2000) {
            assert_eq!(sst.read_partition(k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.unwrap(), None);
        }
        (positives as f64 / absent.len() as f64, sst.stats())
    });
    eprintln!("bloom false-positive rate at setting 0.01 over 10k absent keys: {rate:.4}; read stats {stats:?}");
    assert!(rate < 0.02, "false-positive rate {rate}");
    assert_eq!(stats.bloom_positives, stats.bloom_false_positives);
    assert!(stats.bloom_negatives + stats.range_rejects >= 1900, "{stats:?}");
}

#[test]
fn point_read_of_a_small_partition_touches_at_most_one_block() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed.rng();
    let mut model = Model::new();
    while model.len() < 2000 {
        let p = random_partition(&mut rng, 3, 20);
        model.insert(random_key(&mut rng), p);
    }
    let config = SstableConfig { block_size: 4096, ..SstableConfig::default() };
    on_executor(dir.path(), move |dir| async move {
        let path = dir.join("t.sst");
        let meta = write(&path, &model, &config).await;
        assert!(meta.data_blocks > 10);
        // No cache: every block touched is a device read.
        let sst = Sstable::open(&path, 1, BlockCache::new(0)).await.expect("open");
        for (k, p) in &model {
            let before = sst.stats().blocks_read;
            assert_eq!(
                sst.read_partition(k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.unwrap().as_ref(),
                Some(p)
            );
            // The writer never splits a partition that fits in one block.
            assert_eq!(sst.stats().blocks_read - before, 1, "{k:?}");
        }
        let before = sst.stats().blocks_read;
        for _ in 0..1000 {
            let k = random_key(&mut rng);
            if !model.contains_key(&k) {
                assert_eq!(
                    sst.read_partition(&k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.unwrap(),
                    None
                );
            }
        }
        // Bloom false positives read one block each.
        assert!(sst.stats().blocks_read - before <= sst.stats().bloom_false_positives);
    });
}

#[test]
fn slices_of_a_wide_partition_read_only_the_blocks_they_need() {
    let dir = tempfile::tempdir().unwrap();
    on_executor(dir.path(), move |dir| async move {
        let key = PartitionKey::from_serialized(b"wide".to_vec());
        let mut p = Partition::default();
        for i in 0u32..2000 {
            let row = Row { cells: vec![(0, Cell::Live { ts: 1, value: vec![7; 100] })], ..Row::default() };
            p.rows.insert(ClusteringKey::from_encoded(i.to_be_bytes().to_vec()), row);
        }
        let model: Model = [(key.clone(), p.clone())].into();
        let path = dir.join("t.sst");
        let meta = write(&path, &model, &SstableConfig { block_size: 4096, ..SstableConfig::default() }).await;
        assert!(meta.data_blocks > 50, "{}", meta.data_blocks);
        let sst = Sstable::open(&path, 1, BlockCache::new(0)).await.expect("open");
        let ck = |i: u32| ClusteringKey::from_encoded(i.to_be_bytes().to_vec());
        let slice = ClusteringSlice { start: Bound::Included(ck(1500)), end: Bound::Excluded(ck(1510)) };
        let got = sst.read_partition(&key, BloomHash::of(key.bytes()), &slice).await.unwrap().unwrap();
        assert_eq!(got, p.slice(&slice));
        assert_eq!(got.rows.len(), 10);
        // The header's block, then the one or two blocks holding rows 1500..1510.
        assert!(sst.stats().blocks_read <= 3, "{:?}", sst.stats());
        let before = sst.stats().blocks_read;
        let head = ClusteringSlice { start: Bound::Unbounded, end: Bound::Included(ck(3)) };
        assert_eq!(sst.read_partition(&key, BloomHash::of(key.bytes()), &head).await.unwrap().unwrap().rows.len(), 4);
        assert_eq!(sst.stats().blocks_read - before, 1);
        // Resuming a scan after the wide partition reads only its last block.
        let sst = Rc::new(sst);
        let before = sst.stats().blocks_read;
        assert!(scan_all(&sst, i64::MIN, i64::MAX, Some(key.clone())).await.is_empty());
        assert!(sst.stats().blocks_read - before <= 1, "{:?}", sst.stats());
    });
}

#[test]
fn second_read_is_a_cache_hit_and_the_budget_holds_under_eviction() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seed.rng();
    let mut model = Model::new();
    while model.len() < 1000 {
        let p = random_partition(&mut rng, 3, 30);
        model.insert(random_key(&mut rng), p);
    }
    on_executor(dir.path(), move |dir| async move {
        let path = dir.join("t.sst");
        write(&path, &model, &SstableConfig { block_size: 1024, ..SstableConfig::default() }).await;
        let budget = 8 * (1024 + 512);
        let cache = BlockCache::new(budget);
        let sst = Sstable::open(&path, 1, cache.clone()).await.expect("open");
        let (k, p) = model.iter().nth(500).unwrap();
        assert_eq!(
            sst.read_partition(k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.unwrap().as_ref(),
            Some(p)
        );
        let s1 = sst.stats();
        assert_eq!(
            sst.read_partition(k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.unwrap().as_ref(),
            Some(p)
        );
        let s2 = sst.stats();
        assert_eq!(s2.blocks_read, s1.blocks_read, "second read went to the device");
        assert!(s2.cache_hits > s1.cache_hits);
        for (k, p) in &model {
            assert_eq!(
                sst.read_partition(k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.unwrap().as_ref(),
                Some(p)
            );
            assert!(cache.stats().bytes <= budget, "{:?}", cache.stats());
        }
        let c = cache.stats();
        assert!(c.evictions > 0 && c.entries > 0, "{c:?}");
        cache.forget_sstable(1);
        assert_eq!(cache.stats().entries, 0);
    });
}

#[test]
fn a_block_larger_than_one_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    on_executor(dir.path(), move |dir| async move {
        let mut model = Model::new();
        for i in 0u8..3 {
            let mut p = Partition::default();
            let value = vec![i; 1_500_000 + usize::from(i) * 1000];
            let row = Row { cells: vec![(0, Cell::Live { ts: 1, value })], ..Row::default() };
            p.rows.insert(ClusteringKey::from_encoded(vec![i]), row);
            model.insert(PartitionKey::from_serialized(vec![i, i, i]), p);
        }
        let path = dir.join("t.sst");
        write(&path, &model, &SstableConfig::default()).await;
        let sst = Rc::new(Sstable::open(&path, 1, BlockCache::new(1 << 20)).await.expect("open"));
        for (k, p) in &model {
            assert_eq!(
                sst.read_partition(k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await.unwrap().as_ref(),
                Some(p)
            );
        }
        assert_eq!(scan_all(&sst, i64::MIN, i64::MAX, None).await, model_range(&model, i64::MIN, i64::MAX, None));
        // Larger than the whole cache budget: not cached.
        assert_eq!(sst.stats().cache_hits, 0);
    });
}

#[test]
fn writer_refuses_out_of_order_and_empty_files_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    on_executor(dir.path(), move |dir| async move {
        let mut keys: Vec<PartitionKey> = (0u8..3).map(|i| PartitionKey::from_serialized(vec![i])).collect();
        keys.sort();
        let p = Partition::default();
        let path = dir.join("a.sst");
        let mut w = SstableWriter::create(&path, 1, 0, 1, 3, &small_config()).await.unwrap();
        w.add(&keys[1], &p).await.unwrap();
        assert!(matches!(w.add(&keys[0], &p).await, Err(SstableError::OutOfOrder { .. })));
        assert!(matches!(w.add(&keys[1], &p).await, Err(SstableError::OutOfOrder { .. })));
        // A refusal does not poison the writer.
        w.add(&keys[2], &p).await.unwrap();
        // A key whose token is not its bytes' token.
        let fake = PartitionKey::with_token_lower_bound(i64::MAX);
        assert!(matches!(w.add(&fake, &p).await, Err(SstableError::InconsistentKey { .. })));
        w.abort().await;
        assert!(!path.exists());

        let empty = dir.join("b.sst");
        let w = SstableWriter::create(&empty, 1, 0, 2, 0, &small_config()).await.unwrap();
        assert!(matches!(w.finish().await, Err(SstableError::Empty { .. })));
        assert!(!empty.exists());

        let dropped = dir.join("c.sst");
        let mut w = SstableWriter::create(&dropped, 1, 0, 3, 1, &small_config()).await.unwrap();
        w.add(&keys[0], &p).await.unwrap();
        drop(w);
        assert!(!dropped.exists());

        // create_new: an existing file is never overwritten.
        std::fs::write(&dropped, b"keep").unwrap();
        assert!(matches!(SstableWriter::create(&dropped, 1, 0, 4, 1, &small_config()).await, Err(SstableError::Io(_))));
        assert_eq!(std::fs::read(&dropped).unwrap(), b"keep");
    });
}

/// Writes a sample file and returns its path, bytes and model.
fn sample_file(dir: &Path, seed: &Seed) -> (PathBuf, Vec<u8>, Model) {
    let model = random_model(&mut seed.rng(), 150);
    let m = model.clone();
    let path = on_executor(dir, move |dir| async move {
        let path = dir.join("sample.sst");
        write(&path, &m, &small_config()).await;
        path
    });
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes, model)
}

fn footer_of(bytes: &[u8]) -> Footer {
    Footer::decode(&bytes[bytes.len() - FOOTER_LEN..], bytes.len() as u64).expect("valid footer")
}

/// Opens `bytes` (written to a fresh file) and returns the error.
fn open_error(dir: &Path, bytes: Vec<u8>) -> SstableError {
    let path = dir.join("damaged.sst");
    std::fs::write(&path, bytes).unwrap();
    on_executor(dir, move |_| async move {
        match Sstable::open(&path, 9, BlockCache::new(1 << 20)).await {
            Ok(_) => panic!("a damaged file opened"),
            Err(e) => e,
        }
    })
}

#[test]
fn a_flipped_byte_in_index_bloom_metadata_or_footer_fails_open_naming_the_section() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _) = sample_file(dir.path(), &seed);
    let footer = footer_of(&bytes);
    let footer_at = Footer::position(bytes.len() as u64);
    let cases = [
        ("index", footer.index.offset + u64::from(footer.index.len) / 2),
        ("bloom", footer.bloom.offset + u64::from(footer.bloom.len) / 2),
        ("metadata", footer.meta.offset + u64::from(footer.meta.len) / 2),
        ("footer", footer_at + 30),
        ("footer", footer_at + 2),
    ];
    for (section, at) in cases {
        let mut damaged = bytes.clone();
        damaged[at as usize] ^= 0x10;
        let err = open_error(dir.path(), damaged);
        assert_eq!(err.corrupt_section(), Some(section), "flip at {at}: {err}");
        assert!(err.to_string().contains("damaged.sst"), "{err}");
    }
}

#[test]
fn unknown_version_and_truncation_are_typed_errors() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _) = sample_file(dir.path(), &seed);
    let footer_at = bytes.len() - FOOTER_LEN;
    let mut v2 = bytes.clone();
    v2[footer_at + 8] = 2;
    assert!(matches!(open_error(dir.path(), v2), SstableError::UnsupportedVersion { version: 2, .. }));
    for len in [0, 100, 4096, bytes.len() - 4096, bytes.len() - 1] {
        let err = open_error(dir.path(), bytes[..len].to_vec());
        assert_eq!(err.corrupt_section(), Some("footer"), "truncated to {len}: {err}");
    }
    // Zero-padded to a longer file: the footer is no longer at the end.
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 4096]);
    assert_eq!(open_error(dir.path(), longer).corrupt_section(), Some("footer"));
}

#[test]
fn a_corrupt_data_block_fails_only_the_reads_that_need_it() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes, model) = sample_file(dir.path(), &seed);
    let footer = footer_of(&bytes);
    let index_bytes = &bytes[footer.index.offset as usize..footer.index.end() as usize];
    let index = decode_index(index_bytes, footer.index.offset, footer.data_end).unwrap();
    let victim = index.len() / 2;
    let block = index[victim].clone();
    let mut damaged = bytes.clone();
    damaged[(block.offset + u64::from(block.len) / 2) as usize] ^= 0x01;
    std::fs::write(&path, damaged).unwrap();
    // The blocks each partition's read may touch: from the block of its header to the last block
    // that starts inside it.
    let before_victim = {
        let index = index.clone();
        move |k: &PartitionKey| block_for_header(&index, k).is_some_and(|first| first < victim)
    };
    let touches = move |k: &PartitionKey| {
        let first = block_for_header(&index, k).unwrap();
        let last =
            (first + 1..index.len()).take_while(|&i| index[i].first.cmp_partition(k).is_eq()).last().unwrap_or(first);
        (first..=last).contains(&victim)
    };
    on_executor(dir.path(), move |_| async move {
        let sst = Rc::new(Sstable::open(&path, 1, BlockCache::new(1 << 20)).await.expect("open still works"));
        let mut failed = 0;
        for (k, p) in &model {
            match sst.read_partition(k, BloomHash::of(k.bytes()), &ClusteringSlice::ALL).await {
                Ok(got) => {
                    assert!(!touches(k), "{k:?} read a corrupt block without error");
                    assert_eq!(got.as_ref(), Some(p));
                }
                Err(SstableError::Corrupt { section: "data block", offset, .. }) => {
                    assert!(touches(k), "{k:?} failed without touching the corrupt block");
                    assert!((block.offset..block.offset + u64::from(block.len)).contains(&offset), "offset {offset}");
                    failed += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(failed >= 1);
        // A scan stops with the typed error when it reaches the block, and the error ends it;
        // every partition before the block comes first (read-ahead over the damaged block does
        // not fail the scan early).
        let mut scan = sst.scan(i64::MIN, i64::MAX, None);
        let mut returned = Vec::new();
        let err = loop {
            match scan.next().await {
                Ok(Some((k, _))) => returned.push(k),
                Ok(None) => panic!("scan passed a corrupt block"),
                Err(e) => break e,
            }
        };
        let expected: Vec<PartitionKey> = model.keys().filter(|k| before_victim(k) && !touches(k)).cloned().collect();
        assert_eq!(returned, expected);
        assert_eq!(err.corrupt_section(), Some("data block"));
        assert!(scan.next().await.unwrap().is_none());
    });
}

/// Runs every pure decoder over a whole file's bytes, as `open` and reads do.
fn decode_file(bytes: &[u8]) {
    let size = bytes.len() as u64;
    if size < FOOTER_LEN as u64 {
        return;
    }
    let footer = match Footer::decode(&bytes[bytes.len() - FOOTER_LEN..], size) {
        Ok(f) => f,
        Err(FooterError::UnsupportedVersion(_)) | Err(FooterError::Damaged(_)) => return,
    };
    let section = |s: format::Section| &bytes[s.offset as usize..s.end() as usize];
    let _ = SstableMeta::decode_section(section(footer.meta), footer.meta.offset);
    let _ = BloomFilter::decode(section(footer.bloom), footer.bloom.offset);
    if let Ok(index) = decode_index(section(footer.index), footer.index.offset, footer.data_end) {
        for e in index {
            let raw = bytes[e.offset as usize..(e.offset + u64::from(e.len)) as usize].to_vec();
            if let Ok(block) = DataBlock::decode(e.offset, raw, &e.first) {
                let _ = block.decode_all();
            }
        }
    }
}

#[test]
fn decoders_never_panic_on_mutated_files() {
    let seed = Seed::from_env("SSTABLE_TEST_SEED");
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes, _) = sample_file(dir.path(), &seed);
    decode_file(&bytes);
    let footer = footer_of(&bytes);
    let len = bytes.len();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 200,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed.value()),
        ..Default::default()
    });
    let strategy = (proptest::collection::vec((0..len, any::<u8>()), 1..8), any::<bool>(), 0..len);
    runner
        .run(&strategy, |(flips, fix_checksums, cut)| {
            let mut m = bytes.clone();
            for (at, v) in &flips {
                m[*at] = *v;
            }
            if fix_checksums {
                // Recompute the checksums of the sections, so the checks behind them run.
                for s in [footer.index, footer.bloom, footer.meta] {
                    let end = s.end() as usize - 4;
                    let crc = crc32c::crc32c(&m[s.offset as usize..end]);
                    m[end..end + 4].copy_from_slice(&crc.to_le_bytes());
                }
                let f = len - FOOTER_LEN;
                let crc = crc32c::crc32c(&m[f..len - 4]);
                m[len - 4..].copy_from_slice(&crc.to_le_bytes());
            }
            decode_file(&m);
            decode_file(&m[..cut]);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Prints what one stored row costs; run with `--nocapture` to see the figures.
#[test]
fn bytes_per_row_figures() {
    let dir = tempfile::tempdir().unwrap();
    let figures = on_executor(dir.path(), move |dir| async move {
        let mut rng = StdRng::seed_from_u64(1);
        let value = |rng: &mut StdRng| (0..100).map(|_| rng.gen()).collect::<Vec<u8>>();
        let row = |v: Vec<u8>| Row {
            marker: Some(Cell::Live { ts: 1, value: vec![] }),
            deletion: None,
            cells: vec![(0, Cell::Live { ts: 1, value: v })],
        };
        // 10k partitions of one row: 16-byte partition key, one 100-byte value (with marker).
        let mut narrow = Model::new();
        while narrow.len() < 10_000 {
            let mut p = Partition::default();
            p.rows.insert(ClusteringKey::default(), row(value(&mut rng)));
            narrow.insert(PartitionKey::from_serialized(random_bytes(&mut rng, 16, 16)), p);
        }
        // One partition of 10k rows: 16-byte clustering keys, one 100-byte value each.
        let mut wide = Partition::default();
        while wide.rows.len() < 10_000 {
            wide.rows.insert(ClusteringKey::from_encoded(random_bytes(&mut rng, 16, 16)), row(value(&mut rng)));
        }
        let wide: Model = [(PartitionKey::from_serialized(b"wide".to_vec()), wide)].into();
        let config = SstableConfig::default();
        let started = std::time::Instant::now();
        let a = write(&dir.join("narrow.sst"), &narrow, &config).await;
        let narrow_secs = started.elapsed().as_secs_f64();
        let b = write(&dir.join("wide.sst"), &wide, &config).await;
        (a, b, narrow_secs)
    });
    let (narrow, wide, secs) = figures;
    let per_row = |m: &SstableMeta| m.file_size as f64 / m.rows as f64;
    eprintln!(
        "narrow (16-byte partition keys, 100-byte values): {:.1} bytes/row, file {} bytes, index {} bytes, bloom {} bytes, {} blocks, written in {:.3}s",
        per_row(&narrow), narrow.file_size, narrow.index_bytes, narrow.bloom_bytes, narrow.data_blocks, secs
    );
    eprintln!(
        "wide (16-byte clustering keys, 100-byte values): {:.1} bytes/row, file {} bytes, index {} bytes, {} blocks",
        per_row(&wide),
        wide.file_size,
        wide.index_bytes,
        wide.data_blocks
    );
    assert!(per_row(&narrow) < 200.0 && per_row(&wide) < 160.0);
}

//! `enigmadb embedded compact`: merges the SSTables that flushes left (background compaction
//! off) into one per shard, prints what it did, and `info` shows the result and the counters.

mod common;

#[test]
fn embedded_compact_merges_every_sstable_of_a_shard_into_one() {
    let dir = common::scratch_dir("compact-cli");
    let base = ["--shards", "1", "--memtable-budget", "32KiB", "--compaction-strategy", "none"];
    let out = common::embedded(&dir, &[&base[..], &["demo", "--rows", "2000"]].concat());
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    let before = std::fs::read_dir(dir.join("shard-000").join("sstables")).unwrap().count();
    assert!(before >= 4, "the demo leaves several SSTables: {before}");

    let out = common::embedded(&dir, &[&base[..], &["compact"]].concat());
    let stdout = common::text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", common::text(&out.stderr));
    // The MemTable tail replayed from the WAL is flushed first: one more input.
    assert!(stdout.contains("shard 0: 1 compaction(s): ") && stdout.contains("-> 1 SSTables"), "{stdout}");
    assert!(stdout.contains("2000 partitions -> 2000"), "{stdout}");
    assert_eq!(std::fs::read_dir(dir.join("shard-000").join("sstables")).unwrap().count(), 1);

    let rows = common::dump_key_value_table(&dir, 1, "demo");
    assert_eq!(rows.len(), 2000);
    common::assert_no_leftover_files(&dir, 1);
    std::fs::remove_dir_all(&dir).ok();
}

//! DROP TABLE and TRUNCATE on a node: rows in MemTables and SSTables disappear, nothing comes
//! back after a restart (WAL replay included), no file of a dropped or truncated SSTable is left,
//! a re-created table starts empty, and writes after a truncate are kept.

mod common;

use common::{count, fill, get, kv_named as kv, open_small as open, put, sstables_of};
use futures_lite::future::block_on;
use shards::catalog::Catalog;
use shards::node::NodeError;

#[test]
fn a_dropped_table_is_gone_and_a_recreated_one_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    let old = block_on(node.create_table(kv("t"), None)).unwrap();
    block_on(node.create_table(kv("other"), None)).unwrap();
    fill(&node, "t", "old", 800);
    put(&node, "other", "k0001", "kept");
    assert!(sstables_of(dir.path(), old.id) > 0, "the test needs flushed SSTables");
    block_on(node.drop_table("T", None)).unwrap();
    assert!(matches!(node.table("t"), Err(NodeError::UnknownTable(_))));
    assert!(matches!(block_on(node.drop_table("t", None)), Err(NodeError::Catalog(_))));
    assert_eq!(sstables_of(dir.path(), old.id), 0, "the dropped table's files are deleted");

    let new = block_on(node.create_table(kv("t"), None)).unwrap();
    assert_ne!(new.id, old.id, "table ids are never reused");
    assert_eq!(count(&node, "t", 800), 0, "the new table sees none of the old rows");
    put(&node, "t", "k0005", "new");
    block_on(node.shutdown()).unwrap();

    // Restart: the WAL still holds unflushed writes of the old table; they must not come back.
    let node = open(dir.path());
    assert_eq!(count(&node, "t", 800), 1);
    assert_eq!(get(&node, "t", "k0005").as_deref(), Some("new"));
    assert_eq!(get(&node, "other", "k0001").as_deref(), Some("kept"));
    block_on(node.shutdown()).unwrap();
    assert_eq!(sstables_of(dir.path(), old.id), 0);
}

/// A crash after the catalog dropped the table but before the shards did: the next start
/// removes its SSTables and skips its WAL records.
#[test]
fn a_drop_interrupted_after_the_catalog_is_finished_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    let t = block_on(node.create_table(kv("t"), None)).unwrap();
    fill(&node, "t", "old", 800);
    block_on(node.shutdown()).unwrap();
    assert!(sstables_of(dir.path(), t.id) > 0);
    // What a crash right after the catalog's durable write leaves behind.
    Catalog::load(dir.path()).unwrap().drop_table(dir.path(), "t", i64::MAX).unwrap();

    let node = open(dir.path());
    assert!(node.table("t").is_err());
    assert_eq!(sstables_of(dir.path(), t.id), 0, "files of the dropped table are removed at start");
    block_on(node.create_table(kv("t"), None)).unwrap();
    assert_eq!(count(&node, "t", 800), 0);
    block_on(node.shutdown()).unwrap();
}

#[test]
fn truncate_removes_earlier_rows_and_keeps_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    let t = block_on(node.create_table(kv("t"), None)).unwrap();
    block_on(node.create_table(kv("other"), None)).unwrap();
    fill(&node, "t", "before", 800);
    put(&node, "other", "k0001", "kept");
    block_on(node.truncate("t")).unwrap();
    assert_eq!(count(&node, "t", 800), 0);
    assert_eq!(sstables_of(dir.path(), t.id), 0);
    assert!(matches!(block_on(node.truncate("missing")), Err(NodeError::UnknownTable(_))));
    put(&node, "t", "k0003", "after");
    put(&node, "t", "k0900", "after");
    assert_eq!(get(&node, "other", "k0001").as_deref(), Some("kept"), "other tables keep their rows");
    block_on(node.shutdown()).unwrap();

    let node = open(dir.path());
    assert_eq!(count(&node, "t", 1000), 2, "only the writes after the truncate are left");
    assert_eq!(get(&node, "t", "k0003").as_deref(), Some("after"));
    assert_eq!(get(&node, "other", "k0001").as_deref(), Some("kept"));
    // The kept writes survive a flush and another restart too.
    block_on(node.flush()).unwrap();
    block_on(node.shutdown()).unwrap();
    let node = open(dir.path());
    assert_eq!(count(&node, "t", 1000), 2);
    block_on(node.shutdown()).unwrap();
    sstables_of(dir.path(), t.id);
}

//! A node's identity and schema as a cluster sees them: the generation rises at every start,
//! a schema learned from a peer is adopted with the peer's table ids on every shard, a drop
//! learned from a peer discards the table's data for good, and two nodes that created the same
//! table name at once end with the same table.

mod common;

use common::{count, fill, get, kv_named as named, open_small as open, put, sstables_of};
use futures_lite::future::block_on;
use shards::node::Node;

/// `to` merges everything `from` has, as after a SCHEMA_PULL.
fn pull(to: &Node, from: &Node) -> shards::catalog::SchemaChanges {
    let (entries, drops) = from.schema_snapshot();
    block_on(to.adopt_schema(&entries, &drops)).expect("adopt schema")
}

#[test]
fn a_restart_keeps_the_identity_and_raises_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let node = open(dir.path());
    let (host, generation) = (node.host_id(), node.generation());
    assert!(generation > 1_600_000_000, "seconds since the epoch: {generation}");
    block_on(node.shutdown()).unwrap();
    // Two starts within one second still get different generations.
    for _ in 0..2 {
        let node = open(dir.path());
        assert_eq!(node.host_id(), host);
        assert!(node.generation() > generation, "{} after {generation}", node.generation());
        let next = node.generation();
        block_on(node.shutdown()).unwrap();
        let again = open(dir.path());
        assert!(again.generation() > next);
        block_on(again.shutdown()).unwrap();
    }
}

#[test]
fn an_adopted_table_keeps_the_peer_id_on_every_shard_and_survives_restart() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    let t = block_on(a.create_table(named("t"), None)).unwrap();
    assert_ne!(a.schema_version(), b.schema_version());
    let changes = pull(&b, &a);
    assert_eq!(changes.created, vec![(*t).clone()]);
    assert!(changes.dropped.is_empty());
    assert_eq!(b.table("t").unwrap().id, t.id, "adopted with the peer's id");
    assert_eq!(a.schema_version(), b.schema_version());
    assert!(pull(&b, &a).is_empty(), "merging the same schema again changes nothing");
    // Writes to keys of both shards are accepted by the adopted table.
    fill(&b, "t", "b", 64);
    assert_eq!(count(&b, "t", 64), 64);
    let version = b.schema_version();
    block_on(b.shutdown()).unwrap();
    let b = open(b_dir.path());
    assert_eq!(b.table("t").unwrap().id, t.id);
    assert_eq!(b.schema_version(), version);
    assert_eq!(count(&b, "t", 64), 64);
    block_on(a.shutdown()).unwrap();
    block_on(b.shutdown()).unwrap();
}

#[test]
fn a_drop_learned_from_a_peer_discards_the_data_and_a_newer_recreation_starts_empty() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    let old = block_on(a.create_table(named("t"), None)).unwrap();
    block_on(a.create_table(named("other"), None)).unwrap();
    pull(&b, &a);
    fill(&b, "t", "old", 800);
    put(&b, "other", "k0001", "kept");
    assert!(sstables_of(b_dir.path(), old.id) > 0, "the test needs flushed SSTables");

    let (before_drop, _) = a.schema_snapshot();
    block_on(a.drop_table("t", None)).unwrap();
    let changes = pull(&b, &a);
    assert_eq!(changes.dropped.iter().map(|s| s.id).collect::<Vec<_>>(), vec![old.id]);
    assert!(b.table("t").is_err());
    assert_eq!(sstables_of(b_dir.path(), old.id), 0, "the dropped table's files are deleted");
    assert_eq!(a.schema_version(), b.schema_version());
    // The old creation coming back from a peer that missed the drop does not revive it.
    assert!(block_on(b.adopt_schema(&before_drop, &[])).unwrap().is_empty());

    let new = block_on(a.create_table(named("t"), None)).unwrap();
    assert_ne!(new.id, old.id, "table ids are never reused");
    pull(&b, &a);
    assert_eq!(b.table("t").unwrap().id, new.id);
    assert_eq!(count(&b, "t", 800), 0, "the re-created table sees none of the old rows");
    put(&b, "t", "k0005", "new");
    block_on(b.shutdown()).unwrap();

    // Restart: the WAL still holds unflushed writes of the old table; they stay gone.
    let b = open(b_dir.path());
    assert_eq!(count(&b, "t", 800), 1);
    assert_eq!(get(&b, "other", "k0001").as_deref(), Some("kept"));
    assert_eq!(sstables_of(b_dir.path(), old.id), 0);
    block_on(a.shutdown()).unwrap();
    block_on(b.shutdown()).unwrap();
}

#[test]
fn two_nodes_creating_one_name_at_once_end_with_the_same_table() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (open(a_dir.path()), open(b_dir.path()));
    let on_a = block_on(a.create_table(named("t"), Some(1_000))).unwrap();
    let on_b = block_on(b.create_table(named("t"), Some(2_000))).unwrap();
    put(&a, "t", "k0001", "from a");
    put(&b, "t", "k0002", "from b");
    // Each pulls the other's schema, in either order: the newer creation (b's) wins on both.
    pull(&a, &b);
    pull(&b, &a);
    assert_eq!(a.schema_version(), b.schema_version());
    assert_eq!(a.table("t").unwrap().id, on_b.id);
    assert_eq!(b.table("t").unwrap().id, on_b.id);
    assert_ne!(on_a.id, on_b.id);
    assert_eq!(get(&a, "t", "k0001"), None, "the losing table's rows went with it");
    assert_eq!(get(&b, "t", "k0002").as_deref(), Some("from b"));
    block_on(a.shutdown()).unwrap();
    let a = open(a_dir.path());
    assert_eq!(a.table("t").unwrap().id, on_b.id);
    assert_eq!(a.schema_version(), b.schema_version());
    block_on(a.shutdown()).unwrap();
    block_on(b.shutdown()).unwrap();
}

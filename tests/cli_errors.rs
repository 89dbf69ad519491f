//! Bad input through the command line: a clear message and a non-zero exit, never a panic,
//! and the data directory stays usable.

mod common;

#[test]
fn unknown_table_wrong_arguments_and_shard_count_are_clear_errors() {
    let dir = common::scratch_dir("cli-errors");
    let ok = common::embedded(&dir, &["--shards", "2", "demo", "--rows", "50"]);
    assert!(ok.status.success(), "demo failed: {}", common::text(&ok.stderr));
    assert!(common::text(&ok.stdout).contains("read back 50/50 rows"));

    let out = common::embedded(&dir, &["get", "--table", "nope", "--key", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out.stderr).contains("unknown table 'nope'"), "{}", common::text(&out.stderr));

    let out = common::embedded(&dir, &["get", "--table", "demo", "--key", "a", "--key", "b"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out.stderr).contains("partition key column"), "{}", common::text(&out.stderr));

    let out = common::embedded(&dir, &["--shards", "3", "info"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out.stderr).contains("created with 2 shards"), "{}", common::text(&out.stderr));

    let out = common::embedded(&dir, &["--sync-mode", "sometimes", "info"]);
    assert_eq!(out.status.code(), Some(2), "clap rejects an unknown value");
    assert!(common::text(&out.stderr).contains("invalid value 'sometimes'"));

    // Nothing above damaged the directory.
    let out = common::embedded(&dir, &["get", "--table", "demo", "--key", "k000000000007"]);
    assert!(out.status.success(), "{}", common::text(&out.stderr));
    assert!(common::text(&out.stdout).contains("value='demo-7-"), "{}", common::text(&out.stdout));
    assert!(!common::text(&out.stderr).contains("panicked"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_directory_in_use_by_another_process_is_refused() {
    let dir = common::scratch_dir("cli-locked");
    let mut config = shards::node::NodeConfig::new(&dir);
    config.shards = 1;
    let (node, _) = shards::node::Node::open(config).expect("first open");
    let out = common::embedded(&dir, &["--shards", "1", "info"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(common::text(&out.stderr).contains("in use by another process"), "{}", common::text(&out.stderr));
    futures_lite::future::block_on(node.shutdown()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

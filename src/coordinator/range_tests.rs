//! Replicated range reads and the read repair modes on the in-process cluster of
//! `proxy_tests`: what a client would check is that a scan returns every partition exactly
//! once, in token order, with its newest value, from every node and across pages; that failed
//! replicas are replaced, and too few replicas are typed errors; and that a stale replica is
//! repaired before the read answers (BLOCKING) or not at all (NONE).

use shards::read::visible_rows;
use wire::protocol::{QueryParams, QueryResult};
use wire::schema::ReadRepair;
use wire::token::MIN_TOKEN;

use super::*;
use crate::coordinator::range;
use crate::coordinator::select;
use crate::cql;
use crate::cql::plan::TokenRange;
use shards::scan::{ScanBound, ScanResume};

const KEYS: i32 = 120;

/// What a scan returned: (k, v) per partition, in the order returned.
type Scanned = Vec<(i32, Option<String>)>;

/// The whole ring through `range::scan` from node `via`, `page` partitions at a time, each call
/// resuming after the last key of the previous one (as `select` pages).
async fn scan_all(
    c: &TestCluster,
    via: usize,
    page: usize,
    consistency: Consistency,
) -> Result<Scanned, ErrorResponse> {
    let mut out = Vec::new();
    let mut after: Option<PartitionKey> = None;
    let mut last_token = MIN_TOKEN;
    loop {
        let from = after.clone().map(ScanResume::after_partition);
        let scan = range::scan(&c.proxies[via], &c.table, TokenRange::FULL, from, page, ScanBound::WHOLE, consistency);
        let batch = scan.await?.partitions;
        for (key, partition) in &batch {
            assert!(key.token() >= last_token, "token order");
            last_token = key.token();
            let rows = visible_rows(&c.table, key, partition, now_secs()).expect("stored rows decode");
            let Some(Value::Int(k)) = rows.first().map(|r| r.partition_key[0].clone()) else { panic!("a kv row") };
            out.push((k, value_of(&c.table, key, partition)));
        }
        if batch.len() < page {
            return Ok(out);
        }
        after = batch.last().map(|(k, _)| k.clone());
    }
}

/// Every key 0..KEYS once with `value(k)`, in token order.
fn expected(c: &TestCluster, value: impl Fn(i32) -> String) -> Scanned {
    let mut keys: Vec<(PartitionKey, i32)> =
        (0..KEYS).map(|k| (PartitionKey::from_values(&c.table, &[Value::Int(k)]).expect("a key"), k)).collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| (k, Some(value(k)))).collect()
}

/// Writes every key at `consistency` through alternating coordinators.
async fn write_all(c: &TestCluster, value: impl Fn(i32) -> String, consistency: Consistency) {
    for k in 0..KEYS {
        c.write(k as usize % c.nodes.len(), k, &value(k), consistency).await.expect("a write");
    }
}

/// Node 2 misses a newer version of every even key: written at QUORUM while it is down.
async fn make_node_2_stale(c: &TestCluster) {
    write_all(c, |k| format!("old{k}"), Consistency::All).await;
    c.set_fault(2, Fault::Unreachable);
    c.set_alive(2, false);
    for k in (0..KEYS).step_by(2) {
        c.write(0, k, &format!("new{k}"), Consistency::Quorum).await.expect("QUORUM write, node 2 down");
    }
    c.set_fault(2, Fault::None);
    c.set_alive(2, true);
}

fn newest(k: i32) -> String {
    match k % 2 {
        0 => format!("new{k}"),
        _ => format!("old{k}"),
    }
}

#[test]
fn scans_return_every_partition_once_in_token_order_from_every_node_at_every_level() {
    // RF 2 of 3 nodes: ranges have different replica sets, some without the coordinator.
    with_cluster(3, 2, |c| async move {
        write_all(&c, |k| format!("v{k}"), Consistency::Quorum).await;
        let want = expected(&c, |k| format!("v{k}"));
        for via in 0..3 {
            for level in [Consistency::One, Consistency::Quorum, Consistency::All] {
                // Pages of 7 end inside ranges and at their boundaries alike.
                for page in [7, 1000] {
                    let got = scan_all(&c, via, page, level).await.expect("a scan");
                    assert!(got == want, "via {via} at {level}, pages of {page}: {} of {} rows", got.len(), want.len());
                }
            }
        }
        c
    });
}

#[test]
fn a_scan_merges_the_newest_versions_and_blocking_repair_fixed_the_stale_replica_before_it_answered() {
    with_cluster(3, 3, |c| async move {
        make_node_2_stale(&c).await;
        assert_eq!(c.stored_on(2, 0).await, Some("old0".into()));
        // Coordinated by the stale node, at ALL: its own data disagrees with the others'.
        let got = scan_all(&c, 2, 16, Consistency::All).await.expect("ALL scan");
        assert!(got == expected(&c, newest), "the newest version of every key, once");
        for k in 0..KEYS {
            assert_eq!(c.stored_on(2, k).await, Some(newest(k)), "key {k} repaired before the scan answered");
        }
        c
    });
}

#[test]
fn a_failing_replica_is_replaced_by_a_spare_during_a_scan() {
    with_cluster(3, 3, |c| async move {
        write_all(&c, |k| format!("v{k}"), Consistency::All).await;
        let want = expected(&c, |k| format!("v{k}"));
        // The failure detector has not noticed: the failing node is still a candidate.
        for failing in [1, 2] {
            c.set_fault(failing, Fault::Unreachable);
            let got = scan_all(&c, 0, 50, Consistency::Quorum).await.expect("QUORUM scan with a spare");
            assert!(got == want, "every row with node {failing} failing");
            c.set_fault(failing, Fault::None);
        }
        assert!(c.faulted_calls(1) + c.faulted_calls(2) > 0, "no scan ever asked the failing replica");
        c
    });
}

#[test]
fn scans_are_unavailable_or_time_out_with_counts() {
    with_cluster(3, 3, |c| async move {
        write_all(&c, |k| format!("v{k}"), Consistency::All).await;
        c.set_fault(2, Fault::Silent);
        match code(scan_all(&c, 0, 50, Consistency::All).await) {
            ErrorCode::ReadTimeout { consistency: Consistency::All, received: 2, required: 3, data_present: true } => {}
            other => panic!("expected READ_TIMEOUT 2/3, got {other:?}"),
        }
        for node in [1, 2] {
            c.set_fault(node, Fault::Unreachable);
            c.set_alive(node, false);
        }
        let quorum = ErrorCode::Unavailable { consistency: Consistency::Quorum, required: 2, alive: 1 };
        assert_eq!(code(scan_all(&c, 0, 50, Consistency::Quorum).await), quorum);
        let alone = scan_all(&c, 0, 50, Consistency::One).await.expect("ONE scan on the last node");
        assert!(alone == expected(&c, |k| format!("v{k}")));
        c
    });
}

#[test]
fn select_pages_and_counts_resume_across_range_boundaries() {
    with_cluster(3, 2, |c| async move {
        write_all(&c, |k| format!("v{k}"), Consistency::Quorum).await;
        let table = c.table.clone();
        let schemas = move |name: &str| (name == "kv").then(|| table.clone());
        let plan = |text: &str| match cql::plan(&cql::parse_one(text).expect("parses"), &schemas) {
            Ok(cql::Plan::Select(select)) => select,
            other => panic!("{text}: {other:?}"),
        };
        let (rows, count) = (plan("SELECT k, v FROM kv"), plan("SELECT count(*) FROM kv"));
        for via in 0..3 {
            let mut params = QueryParams::with_consistency(Consistency::Quorum);
            params.page_size = Some(9);
            let mut got = Vec::new();
            loop {
                let Ok(QueryResult::Rows(page)) =
                    select::run(&c.proxies[via], &rows, &params, select::PageLimits::default()).await
                else {
                    panic!("a page of rows")
                };
                assert!(page.rows.len() <= 9);
                for row in page.rows {
                    let (Some(Value::Int(k)), Some(Value::Text(v))) = (&row[0], &row[1]) else { panic!("{row:?}") };
                    got.push((*k, Some(v.clone())));
                }
                match page.paging_state {
                    Some(state) => params.paging_state = Some(state),
                    None => break,
                }
            }
            assert!(got == expected(&c, |k| format!("v{k}")), "via {via}: every row once, in token order");
            let params = QueryParams::with_consistency(Consistency::Quorum);
            let Ok(QueryResult::Rows(counted)) =
                select::run(&c.proxies[via], &count, &params, select::PageLimits::default()).await
            else {
                panic!("a count")
            };
            assert_eq!(counted.rows, vec![vec![Some(Value::BigInt(i64::from(KEYS)))]], "count(*) via {via}");
        }
        c
    });
}

#[test]
fn read_repair_none_answers_the_merged_result_and_leaves_the_stale_replica_alone() {
    let options = TableOptions { replication_factor: 3, read_repair: ReadRepair::None, ..TableOptions::default() };
    with_cluster_options(3, options, |c| async move {
        make_node_2_stale(&c).await;
        assert_eq!(c.read(2, 0, Consistency::All).await.expect("ALL read"), Some("new0".into()));
        let got = scan_all(&c, 2, 16, Consistency::All).await.expect("ALL scan");
        assert!(got == expected(&c, newest), "the merged result");
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert_eq!(c.stored_on(2, 0).await, Some("old0".into()), "NONE writes no repair");
        c
    });
}

#[test]
fn background_read_repair_answers_first_and_repairs_soon_after() {
    let options =
        TableOptions { replication_factor: 3, read_repair: ReadRepair::Background, ..TableOptions::default() };
    with_cluster_options(3, options, |c| async move {
        make_node_2_stale(&c).await;
        assert_eq!(c.read(2, 0, Consistency::All).await.expect("ALL read"), Some("new0".into()));
        for _ in 0..100 {
            if c.stored_on(2, 0).await.as_deref() == Some("new0") {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(c.stored_on(2, 0).await, Some("new0".into()), "the background repair landed");
        c
    });
}

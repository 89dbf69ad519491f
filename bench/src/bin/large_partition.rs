//! `large_partition`: one partition of `--rows` rows on a one-shard `enigmadb server`, then
//! (1) 100-row pages at 0%, 50% and 90% of it: the first page of a slice starting there, and
//! the page after it, resumed from its paging state; (2) `count(*)` of the partition; (3)
//! `count(*)` of the table, a token scan over the same rows; while each runs, another
//! connection reads an unrelated key of the same shard in a loop, and its latencies are
//! reported. Prints numbers; asserts nothing.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::latency::{format_us, LatencyHistogram};
use bench::server::ServerProcess;
use clap::Parser;
use wire::protocol::{BatchKind, BatchRequest, BatchStatement, Consistency, QueryParams, QueryResult};
use wire::{Client, Value};

#[derive(Parser, Debug)]
#[command(about = "Pages and count(*) inside one large partition, and an unrelated key's latency meanwhile")]
struct Args {
    /// The `enigmadb` binary (build it with `cargo build --release`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/enigmadb"))]
    enigmadb: PathBuf,
    /// Rows of the large partition.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u32,
    /// Rows per unlogged batch while loading.
    #[arg(long, default_value_t = 1000)]
    batch: u32,
    /// Where the data directory is made (a fresh one each run).
    #[arg(long, default_value = "/tmp")]
    parent: PathBuf,
    /// Rows per page.
    #[arg(long, default_value_t = 100)]
    page_size: u32,
    /// Deep pages measured (each a first page and its resumed successor); 0 skips them.
    #[arg(long, default_value_t = 5)]
    pages: u32,
    /// The server's `memtable_budget`: a small one spreads the partition over many SSTables,
    /// flushed and compacted while it loads (and maybe while it is read).
    #[arg(long, default_value = "auto")]
    memtable_budget: String,
}

fn rows_of(result: QueryResult) -> Result<wire::protocol::Rows> {
    match result {
        QueryResult::Rows(rows) => Ok(rows),
        other => bail!("expected rows, got {other:?}"),
    }
}

/// Reads the unrelated key until `stop`, recording each read's latency.
fn unrelated_reader(mut client: Client, stop: Arc<AtomicBool>) -> Result<LatencyHistogram> {
    let mut hist = LatencyHistogram::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let rows = rows_of(client.query("SELECT v FROM big WHERE pk = 1 AND ck = 0")?)?;
        hist.record(t.elapsed());
        if rows.rows.len() != 1 {
            bail!("the unrelated key read {} rows", rows.rows.len());
        }
    }
    Ok(hist)
}

fn report(what: &str, hist: &LatencyHistogram) {
    let s = hist.summary();
    println!(
        "  unrelated key during {what}: {} reads, median {}, p99 {}, max {}",
        hist.count(),
        format_us(s.p50_us),
        format_us(s.p99_us),
        format_us(hist.max_nanos() as f64 / 1000.0)
    );
}

/// Runs `work` while another connection reads the unrelated key; returns the latencies.
fn with_reader(addr: std::net::SocketAddr, work: impl FnOnce() -> Result<()>) -> Result<LatencyHistogram> {
    let stop = Arc::new(AtomicBool::new(false));
    // Connected before the work starts (a connection's handshake waits for the shard too).
    let mut client = Client::connect(addr)?;
    client.set_timeout(Some(Duration::from_secs(600)))?;
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || unrelated_reader(client, stop))
    };
    let outcome = work();
    stop.store(true, Ordering::Relaxed);
    let hist = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
    outcome?;
    Ok(hist)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = bench::report::fresh_run_dir(&args.parent, "large_partition")?;
    let flags: Vec<String> = [
        "--data-dir",
        dir.to_str().context("data dir path")?,
        "--shards",
        "1",
        "--pin-shards",
        "false",
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
        "--memtable-budget",
        &args.memtable_budget,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut server = ServerProcess::start(&args.enigmadb, &flags, "server")?;
    let addr = server.addr;
    let mut client = Client::connect(addr)?;
    client.set_timeout(Some(Duration::from_secs(600)))?;
    client.query("CREATE TABLE big (pk int, ck int, v text, PRIMARY KEY (pk, ck))")?;
    let insert = client.prepare("INSERT INTO big (pk, ck, v) VALUES (?, ?, ?)")?;
    let load = Instant::now();
    let mut ck = 0;
    while ck < args.rows {
        let n = args.batch.min(args.rows - ck);
        let statements = (ck..ck + n)
            .map(|c| {
                let values = vec![Some(Value::Int(0)), Some(Value::Int(c as i32)), Some(Value::Text(format!("v{c}")))];
                BatchStatement::Prepared(insert.id, values)
            })
            .collect();
        let batch =
            BatchRequest { kind: BatchKind::Unlogged, statements, consistency: Consistency::One, timestamp: None };
        client.batch(batch)?;
        ck += n;
    }
    client.query("INSERT INTO big (pk, ck, v) VALUES (1, 0, 'other')")?;
    println!("loaded {} rows into one partition in {:.1} s", args.rows, load.elapsed().as_secs_f64());

    // Pages at three depths: the first page of a slice starting there, then its successor
    // (resumed from the paging state, as a client paging through the partition would).
    for percent in [0, 50, 90].into_iter().filter(|_| args.pages > 0) {
        let mut first_pages = Vec::new();
        let mut resumed_pages = Vec::new();
        let pages_hist = with_reader(addr, || {
            for i in 0..args.pages {
                let start = (args.rows / 100 * percent).saturating_sub(i * 1000);
                let text = format!("SELECT * FROM big WHERE pk = 0 AND ck >= {start}");
                let params = QueryParams { page_size: Some(args.page_size), ..QueryParams::default() };
                let t = Instant::now();
                let first = rows_of(client.query_with(&text, params.clone())?)?;
                first_pages.push(t.elapsed());
                let state = first.paging_state.context("a first page of a large slice has a paging state")?;
                let t = Instant::now();
                let next = rows_of(client.query_with(&text, QueryParams { paging_state: Some(state), ..params })?)?;
                resumed_pages.push(t.elapsed());
                let want = Some(Value::Int((start + args.page_size) as i32));
                if next.rows.len() != args.page_size as usize || next.rows[0].get(1).cloned().flatten() != want {
                    bail!("the resumed page does not start where the first ended");
                }
            }
            Ok(())
        })?;
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v[v.len() / 2].as_secs_f64() * 1000.0
        };
        println!(
            "{}-row pages at {percent}% of the partition: first page median {:.1} ms, resumed page median {:.1} ms ({} each)",
            args.page_size,
            median(&mut first_pages),
            median(&mut resumed_pages),
            args.pages
        );
        report(&format!("the pages at {percent}%"), &pages_hist);
    }

    let mut count_time = Duration::ZERO;
    let count_hist = with_reader(addr, || {
        let t = Instant::now();
        let rows = rows_of(client.query("SELECT count(*) FROM big WHERE pk = 0")?)?;
        count_time = t.elapsed();
        let want = Some(Value::BigInt(i64::from(args.rows)));
        if rows.rows.first().and_then(|r| r.first()).cloned().flatten() != want {
            bail!("count(*) answered {:?}", rows.rows);
        }
        Ok(())
    })?;
    println!("count(*) of the partition: {:.2} s", count_time.as_secs_f64());
    report("count(*)", &count_hist);

    // The same rows through a token scan (no partition key): the table's count(*).
    let mut scan_time = Duration::ZERO;
    let scan_hist = with_reader(addr, || {
        let t = Instant::now();
        let rows = rows_of(client.query("SELECT count(*) FROM big")?)?;
        scan_time = t.elapsed();
        let want = Some(Value::BigInt(i64::from(args.rows) + 1));
        if rows.rows.first().and_then(|r| r.first()).cloned().flatten() != want {
            bail!("count(*) of the table answered {:?}", rows.rows);
        }
        Ok(())
    })?;
    println!("count(*) of the table (a token scan): {:.2} s", scan_time.as_secs_f64());
    report("the table's count(*)", &scan_hist);
    println!("server: {}", server.stop_for_report());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! Round trips of the peer transport over loopback: one executor serves the peer protocol with
//! a handler that answers at once, another calls it through `cluster::transport::Transport`
//! with a fixed number of requests in flight on the one pooled connection. Measures calls/s and
//! the latency of each call (queueing included). Prints numbers and writes a JSON report;
//! asserts nothing.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bench::latency::{format_us, LatencyHistogram, LatencySummary};
use bench::machine::Machine;
use bench::report::{per_second, thousands, write_json};
use clap::Parser;
use enigmadb::cluster::opcodes::{MUTATE, MUTATE_OK};
use enigmadb::cluster::transport::{serve, FrameHandler, Transport, TransportConfig};
use glommio::{LocalExecutorBuilder, Placement};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Peer transport round trips over loopback (prints numbers, asserts nothing)")]
struct Args {
    /// Requests in flight on the connection (one task per request slot).
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Bytes of each request body (the answer is empty).
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of calls before measuring (connection set up, caches warm).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Microseconds an idle executor spins before parking (the server's default is 50).
    #[arg(long, default_value_t = 50)]
    spin_before_park_us: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/peer-rtt.json"))]
    report: PathBuf,
}

#[derive(Serialize)]
struct Report {
    machine: Machine,
    in_flight: usize,
    body_bytes: usize,
    seconds: f64,
    calls: u64,
    failed: u64,
    calls_per_second: f64,
    latency: LatencySummary,
}

/// Answers every request at once with MUTATE_OK and an empty body.
struct Echo;

impl FrameHandler for Echo {
    fn handle(&self, _: SocketAddr, _: u8, _: Vec<u8>) -> Pin<Box<dyn Future<Output = (u8, Vec<u8>)> + '_>> {
        Box::pin(async { (MUTATE_OK, Vec::new()) })
    }
}

/// What the calling executor counted.
struct Counted {
    histogram: LatencyHistogram,
    failed: u64,
    elapsed: Duration,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let machine = Machine::probe_for_run();
    let spin = Duration::from_micros(args.spin_before_park_us);
    let local: SocketAddr = "127.0.0.1:0".parse()?;

    let (addr_tx, addr_rx) = flume::bounded::<Result<SocketAddr, String>>(1);
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let server = LocalExecutorBuilder::new(Placement::Unbound)
        .name("peer-server")
        .spin_before_park(spin)
        .spawn(move || async move {
            let listener = match glommio::net::TcpListener::bind(local) {
                Ok(l) => l,
                Err(e) => {
                    let _ = addr_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let addr = listener.local_addr().unwrap_or(local);
            let _ = addr_tx.send(Ok(addr));
            let config = TransportConfig::new(addr);
            serve(listener, Rc::new(Echo), &config, Vec::new(), async move {
                let _ = stop_rx.recv_async().await;
            })
            .await;
        })
        .map_err(|e| anyhow!("starting the serving executor: {e}"))?;
    let peer = addr_rx.recv()?.map_err(|e| anyhow!("binding the peer listener: {e}"))?;

    let (in_flight, body_bytes) = (args.in_flight.max(1), args.body_bytes);
    let (warmup, measured) = (Duration::from_secs(args.warmup), Duration::from_secs(args.seconds));
    let caller = LocalExecutorBuilder::new(Placement::Unbound)
        .name("peer-caller")
        .spin_before_park(spin)
        .spawn(move || async move { call_loop(peer, in_flight, body_bytes, warmup, measured).await })
        .map_err(|e| anyhow!("starting the calling executor: {e}"))?;
    let counted = caller.join().map_err(|e| anyhow!("calling executor: {e:?}"))?;
    drop(stop_tx);
    server.join().map_err(|e| anyhow!("serving executor: {e:?}"))?;

    let seconds = counted.elapsed.as_secs_f64();
    let latency = counted.histogram.summary();
    let report = Report {
        machine,
        in_flight,
        body_bytes,
        seconds,
        calls: latency.count,
        failed: counted.failed,
        calls_per_second: per_second(latency.count as f64, seconds),
        latency,
    };
    println!(
        "peer transport, loopback, {in_flight} in flight, {body_bytes}-byte requests: {} calls/s over {seconds:.1} s ({} failed)",
        thousands(report.calls_per_second),
        counted.failed,
    );
    println!(
        "latency: p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
        format_us(latency.p50_us),
        format_us(latency.p90_us),
        format_us(latency.p99_us),
        format_us(latency.p999_us),
        format_us(latency.max_us),
    );
    write_json(&args.report, &report).with_context(|| format!("writing {}", args.report.display()))?;
    println!("report: {}", args.report.display());
    Ok(())
}

/// `in_flight` tasks call `peer` back to back; calls that start after the warm-up and before
/// its end are counted.
async fn call_loop(
    peer: SocketAddr,
    in_flight: usize,
    body_bytes: usize,
    warmup: Duration,
    measured: Duration,
) -> Counted {
    // The caller serves nothing; its HELLO names an address only for the server's logs.
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let transport = Transport::new(TransportConfig::new(local));
    let start = Instant::now();
    let (measure_from, measure_until) = (start + warmup, start + warmup + measured);
    let histogram = Rc::new(RefCell::new(LatencyHistogram::new()));
    let failed = Rc::new(RefCell::new(0u64));
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (transport, histogram, failed) = (transport.clone(), histogram.clone(), failed.clone());
            glommio::spawn_local(async move {
                loop {
                    let at = Instant::now();
                    if at >= measure_until {
                        break;
                    }
                    let answer = transport.call_raw(peer, 0, MUTATE, vec![0; body_bytes], Duration::from_secs(5)).await;
                    if at < measure_from {
                        continue;
                    }
                    match answer {
                        Ok(_) => histogram.borrow_mut().record(at.elapsed()),
                        Err(_) => *failed.borrow_mut() += 1,
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await;
    }
    let histogram = histogram.borrow().clone();
    let failed = *failed.borrow();
    // Calls started within the window are counted, so the window is the time they took.
    Counted { histogram, failed, elapsed: measured }
}

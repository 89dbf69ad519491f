//! Helpers shared by the multi-process tests: the `enigmadb` binary, scratch directories,
//! reading a node directory back in-process, and `enigmadb server` processes (a guard that
//! always kills them) with a raw-frame connection to talk to them.

#![allow(dead_code)]

pub mod cluster;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shards::node::{Node, NodeConfig};
use shards::read::{now_secs, visible_rows};
use wire::client::{Client, ClientError, Prepared};
use wire::frame::{encode_frame_as, FrameDecoder, PROTOCOL_VERSION};
use wire::protocol::{BatchRequest, ColumnSpec, ErrorResponse, QueryParams, QueryResult, Request, Response};
use wire::{Consistency, Value};

pub fn enigmadb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_enigmadb"))
}

/// Runs `enigmadb embedded --data-dir DIR ARGS...` to completion.
pub fn embedded(dir: &Path, args: &[&str]) -> Output {
    enigmadb().arg("embedded").arg("--data-dir").arg(dir).args(args).output().expect("running enigmadb")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
/// How long a server that must refuse to start may take to exit.
pub const REFUSAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `enigmadb server --data-dir dir --pin-shards false` with `args`, expecting it to refuse
/// to start within [`REFUSAL_TIMEOUT`]: returns its stderr. Panics if it becomes ready, keeps
/// running, exits with another status than 1 or panics.
pub fn refused_start(dir: &Path, args: &[&str]) -> String {
    let mut child = enigmadb()
        .arg("server")
        .arg("--data-dir")
        .arg(dir)
        .args(["--pin-shards", "false"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting enigmadb server");
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    while child.try_wait().expect("polling the server").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reaping the server");
            panic!("the server did not refuse to start: {}", text(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("reaping the server");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!stdout.contains("enigmadb ready"), "the server started: {stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// A fresh directory under the target dir (kept on failure for inspection, removed on success
/// by the caller).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating scratch dir");
    dir
}

/// Every visible (key, value) of a two-column text table, read by opening the node directory
/// in this process (which replays the WAL, as a restarted server would). Empty when the table
/// does not exist (a writer killed before it created it).
pub fn dump_key_value_table(dir: &Path, shards: usize, table: &str) -> HashMap<String, String> {
    let mut config = NodeConfig::new(dir);
    config.shards = shards;
    let (node, _) = Node::open(config).expect("reopening the node directory");
    let mut out = HashMap::new();
    let Ok(schema) = node.table(table) else {
        futures_lite::future::block_on(node.shutdown()).expect("clean shutdown");
        return out;
    };
    let mut after = None;
    loop {
        let page = futures_lite::future::block_on(node.scan(schema.id, i64::MIN, i64::MAX, after.clone(), 1000))
            .expect("scanning the table");
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        for (key, partition) in page {
            for row in visible_rows(&schema, &key, &partition, now_secs()).expect("decodable rows") {
                let (Value::Text(k), Some(Value::Text(v))) = (&row.partition_key[0], &row.columns[0]) else {
                    panic!("unexpected row shape {row:?}");
                };
                out.insert(k.clone(), v.clone());
            }
        }
    }
    futures_lite::future::block_on(node.shutdown()).expect("clean shutdown");
    out
}

/// Every SSTable file of every shard is named by that shard's manifest (the node was opened
/// and closed since the last crash, which removes leftovers).
pub fn assert_no_leftover_files(dir: &Path, shards: usize) {
    for shard in 0..shards {
        let shard_dir = dir.join(format!("shard-{shard:03}"));
        let manifest = shards::manifest::Manifest::load(&shard_dir).expect("manifest");
        let mut listed: Vec<String> = manifest.sstables.iter().map(|s| s.file_name()).collect();
        let mut on_disk: Vec<String> = match std::fs::read_dir(shard_dir.join(shards::manifest::SSTABLE_DIR)) {
            Ok(entries) => entries.map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        };
        listed.sort();
        on_disk.sort();
        assert_eq!(listed, on_disk, "shard {shard}: files on disk vs manifest");
    }
}

/// How long a server may take to print its ready line (it replays its WAL first).
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to stop after SIGTERM (in-flight requests, then WAL syncs).
pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback address of its own for this test process (127.0.0.2..=127.0.0.251, from the
/// process id), so that parallel tests' servers never share an address; the port is chosen
/// by the kernel.
pub fn loopback_host() -> String {
    format!("127.0.0.{}", 2 + std::process::id() % 250)
}

/// A running `enigmadb server` child process. Dropping it kills the process (SIGKILL) and
/// reaps it, so a failing test never leaves a server behind.
pub struct Server {
    child: Option<Child>,
    /// Where it listens for clients (read from its ready line).
    pub addr: SocketAddr,
    /// Where its metrics endpoint listens, unless it is off (read from its ready line).
    pub metrics: Option<SocketAddr>,
    /// Where its peer protocol listens (read from its ready line).
    pub peer: Option<SocketAddr>,
    /// Where its shard-aware client port listens, unless it is off (read from its ready line).
    pub shard_aware: Option<SocketAddr>,
    pub dir: PathBuf,
    /// Its stdout lines after the ready line.
    stdout: mpsc::Receiver<String>,
}

/// MemTable and block cache budget per shard of a test node that sets none itself.
pub const TEST_BUDGET: &str = "64MiB";
/// [`TEST_BUDGET`] in bytes.
pub const TEST_BUDGET_BYTES: u64 = 64 << 20;

impl Server {
    /// Starts `enigmadb server` on `dir` with `shards` unpinned shards on this process's
    /// loopback address and waits for its ready line. `extra` adds flags (a small
    /// `--memtable-budget`, a `--max-frame-bytes`...).
    pub fn start(dir: &Path, shards: usize, extra: &[&str]) -> Server {
        Server::start_on(&loopback_host(), dir, shards, extra)
    }

    /// [`Server::start`] on the loopback address `host` (cluster tests give each node its own).
    pub fn start_on(host: &str, dir: &Path, shards: usize, extra: &[&str]) -> Server {
        let (listen, peer_listen) = (format!("{host}:0"), format!("{host}:0"));
        Server::start_command(enigmadb(), &listen, &peer_listen, dir, shards, extra)
    }

    /// [`Server::start_on`] through `command`, which runs the `enigmadb` binary (directly, or
    /// inside a network namespace with `ip netns exec NS BIN`), on the addresses given.
    pub fn start_command(
        mut command: Command,
        listen: &str,
        peer_listen: &str,
        dir: &Path,
        shards: usize,
        extra: &[&str],
    ) -> Server {
        // Test nodes share the machine: fixed memory budgets (the sizes the tests were made
        // with) unless a test sets its own (a flag, or a config file, which flags would
        // override), rather than each sizing itself from all of it.
        let configured = extra.contains(&"--config");
        let budgets = ["--memtable-budget", "--cache-budget"]
            .into_iter()
            .filter(|flag| !configured && !extra.iter().any(|e| e == flag || e.starts_with(&format!("{flag}="))))
            .flat_map(|flag| [flag, TEST_BUDGET]);
        let mut child = command
            .arg("server")
            .arg("--data-dir")
            .arg(dir)
            .args(["--shards", &shards.to_string(), "--pin-shards", "false"])
            .args(["--listen", listen, "--peer-listen", peer_listen])
            .args(budgets)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting enigmadb server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics: None,
            peer: None,
            shard_aware: None,
            dir: dir.to_owned(),
            stdout: lines,
        };
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match server.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = ready_address(&line) {
                        server.addr = addr;
                        server.metrics = ready_metrics_address(&line);
                        server.peer = ready_peer_address(&line);
                        server.shard_aware = ready_shard_aware_address(&line);
                        return server;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.child.as_mut().expect("running").wait().expect("reaping the server");
                    server.child = None;
                    panic!("enigmadb server exited before it was ready: {status} (its stderr is above)");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("enigmadb server not ready within {SERVER_START_TIMEOUT:?}")
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Whether the process is still running (not exited, not killed by a signal).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the process to stop by itself. Returns its exit status and its
    /// last stdout lines; panics if it does not stop in time (the guard still kills it).
    pub fn stop(&mut self) -> (ExitStatus, Vec<String>) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) with a pid of our own, still unreaped child (so not reused).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "sending SIGTERM: {}", std::io::Error::last_os_error());
        self.wait_exit("SIGTERM")
    }

    /// Waits for the process to exit by itself after `cause` (at most [`SERVER_STOP_TIMEOUT`]).
    /// Returns its exit status and its last stdout lines.
    pub fn wait_exit(&mut self, cause: &str) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + SERVER_STOP_TIMEOUT;
        let child = self.child.as_mut().expect("the server is running");
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for the server") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "enigmadb server did not stop within {SERVER_STOP_TIMEOUT:?} of {cause}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        // The stdout reader ends with the process.
        let lines = self.stdout.iter().collect();
        (status, lines)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The client address in a server's ready line
/// (`enigmadb ready: listening on 127.0.0.5:40123, ...`).
pub fn ready_address(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("enigmadb ready: listening on ")?;
    rest.split([',', ' ']).next()?.parse().ok()
}

/// The peer address in a server's ready line (`..., peers on 127.0.0.5:40125, ...`).
pub fn ready_peer_address(line: &str) -> Option<SocketAddr> {
    line.split_once(" peers on ")?.1.split([',', ' ']).next()?.parse().ok()
}

/// The shard-aware client address in a server's ready line (`..., shard-aware on
/// 127.0.0.5:40126, ...`); `None` when it says `shard-aware port off`.
pub fn ready_shard_aware_address(line: &str) -> Option<SocketAddr> {
    line.split_once(" shard-aware on ")?.1.split([',', ' ']).next()?.parse().ok()
}

/// The metrics address in a server's ready line (`..., metrics on http://127.0.0.5:40124/metrics,
/// ...`); `None` when it says `metrics off`.
pub fn ready_metrics_address(line: &str) -> Option<SocketAddr> {
    let rest = line.split_once(" metrics on http://")?.1;
    rest.split('/').next()?.parse().ok()
}

/// How long a test waits for one answer from a server before failing.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A client connection speaking raw frames, for tests that must send what the client library
/// never would (garbage, oversized or hand-made frames) and read the answers frame by frame.
pub struct RawConnection {
    pub stream: TcpStream,
    decoder: FrameDecoder,
    received: Vec<u8>,
}

impl RawConnection {
    pub fn connect(addr: SocketAddr) -> std::io::Result<RawConnection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(RawConnection { stream, decoder: FrameDecoder::default(), received: Vec::new() })
    }

    /// Sends raw bytes; false if the server has closed the connection.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    pub fn send(&mut self, request: &Request, stream: u16) -> bool {
        self.send_versioned(PROTOCOL_VERSION, request, stream)
    }

    /// [`send`](Self::send) in frames of protocol `version` (an older client's).
    pub fn send_versioned(&mut self, version: u8, request: &Request, stream: u16) -> bool {
        let mut bytes = Vec::new();
        encode_frame_as(version, &request.to_frame(stream), &mut bytes);
        self.send_bytes(&bytes)
    }

    /// The next answer and its stream, or `None` once the server has closed the connection.
    /// Panics on a frame that does not decode or when no answer comes in time.
    pub fn receive(&mut self) -> Option<(u16, Response)> {
        self.receive_version().map(|(_, stream, response)| (stream, response))
    }

    /// [`receive`](Self::receive) with the protocol version of the answer's frame.
    pub fn receive_version(&mut self) -> Option<(u8, u16, Response)> {
        loop {
            if let Some((frame, used)) = self.decoder.decode(&self.received).expect("a well-formed answer frame") {
                self.received.drain(..used);
                let version = self.decoder.last_version().expect("a frame was decoded");
                return Some((version, frame.stream, Response::from_frame(&frame).expect("a well-formed answer")));
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
                    return None
                }
                Err(e) => panic!("reading an answer: {e}"),
            }
        }
    }

    /// STARTUP with this build's protocol version: true once READY comes back, false if the
    /// server closed the connection; panics on any other answer.
    pub fn startup(&mut self) -> bool {
        if !self.send(&Request::Startup { version: PROTOCOL_VERSION, client: "raw-test".into() }, 1) {
            return false;
        }
        match self.receive() {
            Some((1, Response::Ready { .. })) => true,
            None => false,
            other => panic!("STARTUP answered with {other:?}"),
        }
    }
}

/// The value a crash test's writer writes for key `k{n}` in `cycle` (the embedded surge
/// writer's format), so that a stored value tells which cycle wrote it.
pub fn written_value(cycle: u64, n: u64) -> String {
    format!("c{cycle}-{n}-{}", "v".repeat(64))
}

/// The cycle that wrote `value` for `key`, if it is a value a writer would write for that key.
pub fn parse_written_value(key: &str, value: &str) -> Option<u64> {
    let n: u64 = key.strip_prefix('k')?.parse().ok()?;
    let cycle = value.strip_prefix('c')?.split('-').next()?.parse().ok()?;
    (written_value(cycle, n) == value).then_some(cycle)
}

/// After a crash and restart: every acknowledged key (key -> (value, cycle of its ack)) holds
/// its acknowledged value, or the value of a later cycle's write to it (sent, maybe durable,
/// killed before its ack); nothing holds a value that was never written.
pub fn check_acknowledged(
    acked: &HashMap<String, (String, u64)>,
    stored: &HashMap<String, String>,
    restart: u64,
    seed: u64,
) {
    for (key, (value, acked_in)) in acked {
        let Some(found) = stored.get(key) else {
            panic!("acknowledged key {key} (cycle {acked_in}) is missing after restart {restart}, seed {seed}");
        };
        if found != value {
            let found_cycle =
                parse_written_value(key, found).unwrap_or_else(|| panic!("{key} holds foreign value {found:?}"));
            assert!(
                found_cycle > *acked_in,
                "key {key}: acknowledged {value:?} in cycle {acked_in} but found {found:?} after restart {restart}, seed {seed}"
            );
        }
    }
    for (key, value) in stored {
        assert!(
            parse_written_value(key, value).is_some(),
            "key {key} holds a value never written: {value:?} (seed {seed})"
        );
    }
}

/// Stops a server with SIGTERM and checks it stopped cleanly (exit 0, WALs synced).
pub fn stop_cleanly(mut server: Server) {
    let (status, lines) = server.stop();
    assert!(status.success(), "the server exited with {status} after SIGTERM; stdout {lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("enigmadb stopped")), "no stop line in {lines:?}");
}

/// Opens a stopped node's directory in this process, flushes every shard's MemTable to
/// SSTables, and closes it.
pub fn flush_node(dir: &Path, shards: usize) {
    let mut config = NodeConfig::new(dir);
    config.shards = shards;
    let (node, _) = Node::open(config).expect("reopening the node directory");
    futures_lite::future::block_on(node.flush()).expect("flushing");
    futures_lite::future::block_on(node.shutdown()).expect("clean shutdown");
}

// ---------------------------------------------------------------------------------------------
// Through the client library.

pub fn connect(addr: SocketAddr) -> Client {
    Client::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
}

/// The server's error answer; panics on any other failure (I/O, protocol).
pub fn server_error(e: ClientError) -> ErrorResponse {
    match e {
        ClientError::Server(e) => e,
        other => panic!("expected an error answer from the server, got: {other}"),
    }
}

/// One statement at consistency ONE; the server's error answer as the error.
pub fn query(client: &mut Client, text: &str) -> Result<QueryResult, ErrorResponse> {
    query_at(client, text, Consistency::One)
}

pub fn query_at(client: &mut Client, text: &str, consistency: Consistency) -> Result<QueryResult, ErrorResponse> {
    client.query_with(text, QueryParams::with_consistency(consistency)).map_err(server_error)
}

/// A statement that must succeed without rows (a write or a schema change).
pub fn query_ok(client: &mut Client, text: &str) {
    match query(client, text) {
        Ok(QueryResult::Void | QueryResult::SchemaChange { .. }) => {}
        other => panic!("{text}: {other:?}"),
    }
}

/// `query_ok` on a connection of its own.
pub fn run_ok(addr: SocketAddr, text: &str) {
    query_ok(&mut connect(addr), text);
}

pub fn batch_ok(client: &mut Client, batch: BatchRequest) {
    match client.batch(batch) {
        Ok(QueryResult::Void) => {}
        other => panic!("batch: {other:?}"),
    }
}

/// Every row of a SELECT, fetched `page_size` rows at a time: (columns, rows, pages fetched).
pub fn select_all(
    client: &mut Client,
    text: &str,
    page_size: u32,
) -> (Vec<ColumnSpec>, Vec<Vec<Option<Value>>>, usize) {
    let mut paged = client.query_paged(text, page_size).unwrap_or_else(|e| panic!("{text}: {e}"));
    let rows = paged.by_ref().collect::<Result<Vec<_>, _>>().unwrap_or_else(|e| panic!("{text}: {e}"));
    (paged.columns().to_vec(), rows, paged.pages_fetched())
}

/// The rows of a prepared SELECT (one page).
pub fn execute_rows(client: &mut Client, prepared: &Prepared, values: &[Option<Value>]) -> Vec<Vec<Option<Value>>> {
    match client.execute(prepared, values, QueryParams::default()) {
        Ok(QueryResult::Rows(rows)) => rows.rows,
        other => panic!("EXECUTE: {other:?}"),
    }
}

/// Every (k, v) of a table of text keys and int values.
pub fn key_ints(client: &mut Client, table: &str) -> BTreeMap<String, i32> {
    let (_, rows, _) = select_all(client, &format!("SELECT k, v FROM {table}"), 5_000);
    rows.into_iter()
        .map(|row| match &row[..] {
            [Some(Value::Text(k)), Some(Value::Int(v))] => (k.clone(), *v),
            _ => panic!("unexpected row {row:?}"),
        })
        .collect()
}

/// Every (k, v) of a table of text keys and text values, read through the server at `addr`.
pub fn key_values(addr: SocketAddr, table: &str) -> HashMap<String, String> {
    let (_, rows, _) = select_all(&mut connect(addr), &format!("SELECT k, v FROM {table}"), 5_000);
    rows.into_iter()
        .map(|row| match &row[..] {
            [Some(Value::Text(k)), Some(Value::Text(v))] => (k.clone(), v.clone()),
            _ => panic!("unexpected row {row:?}"),
        })
        .collect()
}

/// `GET /metrics` of the metrics endpoint at `addr`, parsed.
pub fn scrape(addr: SocketAddr) -> enigmadb::metrics::text::Scrape {
    let mut stream = TcpStream::connect(addr).expect("connecting to the metrics endpoint");
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).expect("read timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").expect("sending the scrape");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("reading the scrape");
    let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    enigmadb::metrics::text::parse(body).unwrap_or_else(|e| panic!("scrape does not parse: {e}\n{body}"))
}

//! A real `enigmadb server` child process for the benchmarks that drive one over the network:
//! started with the caller's flags, ready once it prints its ready line, stopped with SIGTERM;
//! and the setup such a run checks and prepares before its first server starts. It owns only
//! processes and directories it started; dropping a server kills it (a guard, also on panic).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::machine::Machine;
use crate::report::fresh_run_dir;
use crate::surge::{ValuePool, VALUE_POOL_BYTES};

/// The flags of every benchmark that drives real `enigmadb server` processes through the client
/// library (`server_surge`, `cluster_surge`), flattened into each one's own.
#[derive(clap::Args, Debug)]
pub struct ServerRunArgs {
    /// The `enigmadb` binary (build it with `cargo build --release`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/enigmadb"))]
    pub enigmadb: PathBuf,
    /// Requests kept in flight, over all connections (exactly this many until the last ones).
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// The servers' fdatasync period in periodic mode (Redis's `appendfsync everysec` is 1 s).
    #[arg(long, default_value_t = 1000)]
    pub periodic_sync_ms: u64,
    /// The servers' MemTable budget per shard (a size with a suffix, as the server takes it).
    #[arg(long, default_value = "64MiB")]
    pub memtable_budget: String,
    /// The servers' block cache per shard.
    #[arg(long, default_value = "64MiB")]
    pub cache_budget: String,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Longest wait for one answer before the connection is given up.
    #[arg(long, default_value_t = 60)]
    pub answer_timeout_s: u64,
    /// Parent directory of the run's data (a fresh subdirectory is created and removed).
    /// Must be on the disk you mean to measure (not tmpfs).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data"))]
    pub dir: PathBuf,
    /// Keep the data directories after the run.
    #[arg(long)]
    pub keep: bool,
    /// Seed of the value bytes and of the rows the reads pick.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

/// What a network benchmark has checked and prepared before it starts a server.
pub struct RunSetup {
    /// The value bytes every connection writes and checks.
    pub values: Arc<ValuePool>,
    /// A fresh directory of this run under the user's `--dir`, for the servers' data.
    pub run_dir: PathBuf,
    pub machine: Machine,
}

impl RunSetup {
    /// Checks that the `enigmadb` binary exists and the value size is possible, creates the run
    /// directory `<parent>/<name>-<time>-<pid>` and describes the machine.
    pub fn prepare(enigmadb: &Path, parent: &Path, name: &str, seed: u64, value_bytes: usize) -> Result<RunSetup> {
        if !enigmadb.is_file() {
            bail!("{} not found: build it with `cargo build --release` or pass --enigmadb", enigmadb.display());
        }
        let values = ValuePool::new(seed, value_bytes)
            .ok_or_else(|| anyhow!("--value-bytes must be between 1 and {VALUE_POOL_BYTES}"))?;
        let run_dir = fresh_run_dir(parent, name)?;
        Ok(RunSetup { values: Arc::new(values), run_dir, machine: Machine::probe_for_run() })
    }

    /// Removes the run directory (each server's data was removed after its scenario) unless
    /// the user keeps the data.
    pub fn finish(&self, keep: bool) -> Result<()> {
        if keep {
            return Ok(());
        }
        // Only our own, now empty, run directory: never the user's --dir.
        std::fs::remove_dir(&self.run_dir).with_context(|| format!("removing {}", self.run_dir.display()))
    }
}

/// How long a server may take to print its ready line.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a server may take to stop after SIGTERM (it syncs every WAL) before it is killed.
pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `enigmadb server`; killed (SIGKILL) if dropped before [`ServerProcess::stop`].
pub struct ServerProcess {
    child: Option<Child>,
    /// The client address from the ready line.
    pub addr: SocketAddr,
    /// The peer address from the ready line, when it names one.
    pub peer_addr: Option<SocketAddr>,
    pub pid: u32,
}

impl ServerProcess {
    /// Runs `enigmadb server FLAGS...` and waits for its ready line. `label` prefixes the lines
    /// it prints on stdout afterwards (its stderr is inherited).
    pub fn start(enigmadb: &Path, flags: &[String], label: &str) -> Result<ServerProcess> {
        let mut command = Command::new(enigmadb);
        command.arg("server").args(flags).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command.spawn().with_context(|| format!("starting {}", enigmadb.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("the server's stdout was not captured"))?;
        let mut server =
            ServerProcess { child: Some(child), addr: SocketAddr::from(([127, 0, 0, 1], 0)), peer_addr: None, pid };
        // A thread forwards stdout lines (so the pipe never fills) until the process ends.
        let (lines_tx, lines) = mpsc::channel();
        std::thread::Builder::new().name("server-stdout".into()).spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        })?;
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(wait) {
                Ok(line) => {
                    if let Some(addr) = ready_address(&line) {
                        println!("  {label} pid {pid}: {line}");
                        server.addr = addr;
                        server.peer_addr = ready_peer_address(&line);
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = server.wait_exit(Duration::from_secs(5));
                    bail!("{label} exited before it was ready ({status:?}; its stderr is above)");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("{label} was not ready within {SERVER_START_TIMEOUT:?}")
                }
            }
        }
        // Later lines ("enigmadb stopped: ...") are printed as they come.
        let label = label.to_owned();
        std::thread::Builder::new().name("server-lines".into()).spawn(move || {
            for line in lines {
                println!("  {label}: {line}");
            }
        })?;
        Ok(server)
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after [`SERVER_STOP_TIMEOUT`]).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if self.child.is_none() {
            bail!("the server was already stopped");
        }
        // SAFETY: kill(2) on our own child, not yet reaped (so its pid is not reused).
        if unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) } != 0 {
            bail!("sending SIGTERM to the server: {}", std::io::Error::last_os_error());
        }
        self.wait_exit(SERVER_STOP_TIMEOUT)
            .ok_or_else(|| anyhow!("the server did not stop within {SERVER_STOP_TIMEOUT:?}"))
    }

    /// [`ServerProcess::stop`], as the text a report keeps.
    pub fn stop_for_report(&mut self) -> String {
        match self.stop() {
            Ok(status) => status.to_string(),
            Err(e) => format!("{e:#}"),
        }
    }

    /// Waits up to `timeout` for the process to exit; kills it if it has not.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The client address in a server's ready line
/// (`enigmadb ready: listening on 127.0.0.1:40123, ...`).
pub fn ready_address(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("enigmadb ready: listening on ")?;
    rest.split([',', ' ']).next()?.parse().ok()
}

/// The peer address in a server's ready line (`..., peers on 127.0.0.1:7470, ...`), if any.
pub fn ready_peer_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.strip_prefix("enigmadb ready: ")?.split_once("peers on ")?;
    rest.split([',', ' ']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_refused_before_anything_starts_when_its_setup_is_impossible() {
        let parent = std::env::temp_dir().join(format!("bench-setup-{}", std::process::id()));
        let missing = RunSetup::prepare(Path::new("/nonexistent/enigmadb"), &parent, "x", 1, 100);
        assert!(missing.err().unwrap().to_string().contains("/nonexistent/enigmadb not found"));
        let binary = std::env::current_exe().unwrap();
        let too_big = RunSetup::prepare(&binary, &parent, "x", 1, VALUE_POOL_BYTES + 1);
        assert!(too_big.err().unwrap().to_string().contains("--value-bytes"));
        assert!(!parent.exists(), "nothing is created for a refused run");
        let setup = RunSetup::prepare(&binary, &parent, "x", 1, 100).unwrap();
        assert!(setup.run_dir.is_dir() && setup.run_dir.starts_with(parent.canonicalize().unwrap()));
        setup.finish(false).unwrap();
        assert!(!setup.run_dir.exists());
        std::fs::remove_dir(&parent).unwrap();
    }

    #[test]
    fn the_ready_line_gives_the_addresses() {
        let line = "enigmadb ready: listening on 127.0.0.1:40123, 2 shards, data dir /x, sync mode Batch, replayed 0 WAL records";
        assert_eq!(ready_address(line), Some(SocketAddr::from(([127, 0, 0, 1], 40123))));
        assert_eq!(ready_peer_address(line), None);
        let cluster = "enigmadb ready: listening on 127.0.0.2:9470, peers on 127.0.0.2:7470, 1 shards, ...";
        assert_eq!(ready_address(cluster), Some(SocketAddr::from(([127, 0, 0, 2], 9470))));
        assert_eq!(ready_peer_address(cluster), Some(SocketAddr::from(([127, 0, 0, 2], 7470))));
        assert_eq!(ready_address("enigmadb stopped: WALs synced"), None);
    }
}

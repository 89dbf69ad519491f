//! The stores a stress run can drive, behind one pipelined [`Connection`]: EnigmaDB through the
//! blocking client of `wire` (`enigma.rs`: prepared INSERT and SELECT, routed to the shard
//! owning each partition), Redis through `redis.rs` (SET, GET). This module owns the table a run
//! creates and how failures are counted; it must never retry an operation (a failure is
//! counted, not hidden).

use std::os::fd::RawFd;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wire::client::{Client, ClientError, ClientOptions, MAX_IN_FLIGHT};
use wire::Consistency;

use super::enigma::EnigmaConnection;
use super::redis::RedisConnection;
use super::workload::{Op, Workload};

/// Most requests a run keeps in flight on one connection: the client library's bound, less
/// the one stream an EnigmaDB connection keeps for asking the topology again (`enigma.rs`),
/// so that the window never finds a client full.
pub const MAX_WINDOW: usize = MAX_IN_FLIGHT - 1;

/// Which store is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Enigmadb,
    Redis,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Enigmadb => "enigmadb",
            TargetKind::Redis => "redis",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            TargetKind::Enigmadb => 9470,
            TargetKind::Redis => 6379,
        }
    }
}

/// What the store answered to one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Written,
    Found(Vec<u8>),
    Missing,
    /// The store refused the operation; the kind of error, to be counted.
    Error(String),
    /// The connection the operation went out on was dropped before it answered (a shard-aware
    /// connection to a node that left the topology); counted as a lost connection's requests
    /// are, under this kind.
    Lost(String),
}

/// The connection can no longer be used; the kind of failure, to be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLost(pub String);

/// What `send` did with an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Names the operation in the answer `recv` returns.
    pub token: u64,
    /// Whether it went out on a connection of the shard owning its partition; `None` when the
    /// connection does not route (Redis, `--shard-aware false`).
    pub to_owner: Option<bool>,
}

/// One pipelined connection: requests go out with `send`, answers come back with `recv` in
/// whatever order the store sends them, matched by the token `send` returned.
pub trait Connection: Send {
    fn send(&mut self, op: Op) -> Result<Sent, ConnectionLost>;

    /// The next answer. With `wait`, gives up after about that long (`Ok(None)`: the caller has
    /// something to send); without, waits up to the run's answer timeout, past which the
    /// connection counts as lost.
    fn recv(&mut self, wait: Option<Duration>) -> Result<Option<(u64, Answer)>, ConnectionLost>;
}

/// How to reach the store and what to ask of it.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: TargetKind,
    pub table: String,
    pub consistency: Consistency,
    /// Bounds connecting and every wait for an answer.
    pub timeout: Duration,
    /// EnigmaDB: send each operation to the shard owning its partition, over shard-aware
    /// connections to every node of the cluster (`--shard-aware`).
    pub shard_aware: bool,
    /// EnigmaDB: sent when the node asks for credentials.
    pub credentials: Option<wire::protocol::PlainCredentials>,
    /// EnigmaDB: connect with TLS (`--tls-ca`).
    pub tls: Option<wire::tls::ClientTls>,
}

impl Target {
    /// `host` with the target's default port when it names none.
    pub fn address(&self, host: &str) -> String {
        match host.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => host.to_owned(),
            _ => format!("{host}:{}", self.kind.default_port()),
        }
    }

    pub fn connect(&self, host: &str, workload: &Workload) -> anyhow::Result<Box<dyn Connection>> {
        let address = self.address(host);
        Ok(match self.kind {
            TargetKind::Enigmadb => Box::new(EnigmaConnection::open(self, &address, workload.clone())?),
            TargetKind::Redis => Box::new(RedisConnection::open(&address, self.timeout, workload.clone())?),
        })
    }

    /// The server's name and version, and where it was read from.
    pub fn server_version(&self, host: &str) -> anyhow::Result<(String, &'static str)> {
        let address = self.address(host);
        match self.kind {
            TargetKind::Enigmadb => {
                let mut client = self.client(&address)?;
                Ok((client.options()?.server, "OPTIONS -> SUPPORTED (server field)"))
            }
            TargetKind::Redis => {
                let version = RedisConnection::open_raw(&address, self.timeout)?.server_version()?;
                Ok((format!("redis {version}"), "INFO server (redis_version)"))
            }
        }
    }

    /// Creates the run's table if it does not exist (EnigmaDB; Redis has no schema).
    pub fn create_table(&self, host: &str, replication_factor: u8) -> anyhow::Result<()> {
        if self.kind == TargetKind::Redis {
            return Ok(());
        }
        let statement = format!(
            "CREATE TABLE IF NOT EXISTS {} (pk blob, ck bigint, value blob, PRIMARY KEY (pk, ck)) \
             WITH replication_factor = {replication_factor}",
            self.table
        );
        let mut client = self.client(&self.address(host))?;
        client.query(&statement).with_context(|| format!("running {statement}"))?;
        Ok(())
    }

    pub fn client(&self, address: &str) -> anyhow::Result<Client> {
        let mut options = self.client_options();
        options.tls = options.tls.map(|tls| tls.for_host(address));
        Client::connect_with(address, options).with_context(|| format!("connecting to {address}"))
    }

    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            timeout: Some(self.timeout),
            client_name: concat!("enigmadb-stress/", env!("CARGO_PKG_VERSION")).into(),
            credentials: self.credentials.clone(),
            tls: self.tls.clone(),
            ..ClientOptions::default()
        }
    }
}

/// Waits until `fd` is readable (or closed) or `timeout` has passed; `true` when readable.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> std::io::Result<bool> {
    wait_any_readable(&mut [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }], timeout)
}

/// Waits until one of `fds` (each asking for `POLLIN`) is readable or closed, or `timeout` has
/// passed; `true` when one is, its `revents` then set. `ppoll` sleeps on a high-resolution
/// timer: socket timeouts (SO_RCVTIMEO) are rounded up to the kernel's tick, up to 10 ms late,
/// which would delay the open loop's sends.
pub fn wait_any_readable(fds: &mut [libc::pollfd], timeout: Duration) -> std::io::Result<bool> {
    let timeout = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // A connection has a few clients (one per node and shard), far fewer than nfds_t counts.
    let count = fds.len() as libc::nfds_t;
    loop {
        // SAFETY: `count` valid pollfds, a valid timespec and no signal mask, all outliving the
        // call.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), count, &timeout, std::ptr::null()) };
        match n {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// How a client failure is counted.
pub fn lost(e: &ClientError) -> ConnectionLost {
    ConnectionLost(match e {
        ClientError::Io(io) => format!("connection: I/O error ({:?})", io.kind()),
        ClientError::Timeout => "connection: no answer within the timeout".into(),
        ClientError::Closed => "connection: closed".into(),
        ClientError::Server(err) => format!("connection: {}", err.code.name()),
        ClientError::Frame(_) | ClientError::Protocol(_) => "connection: malformed answer".into(),
        other => format!("connection: {other}"),
    })
}

/// The consistency level named on the command line.
pub fn parse_consistency(name: &str) -> Result<Consistency, String> {
    Consistency::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Consistency::ALL.iter().map(|c| c.name()).collect();
        format!("unknown consistency '{name}' (one of {})", names.join(", "))
    })
}

/// Checks that a read answer holds the value the key was written with.
pub fn check_read(workload: &Workload, key: u64, value: &[u8]) -> Result<(), &'static str> {
    match value == workload.value(key) {
        true => Ok(()),
        false => Err("read: wrong value"),
    }
}

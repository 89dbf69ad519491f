//! The stores a stress run can drive, behind one pipelined [`Connection`]: EnigmaDB through the
//! blocking client of `wire` (prepared INSERT and SELECT), Redis through `redis.rs` (SET, GET).
//! This module owns the table a run creates and how answers are classified; it must never
//! retry an operation (a failure is counted, not hidden).

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use wire::client::{Client, ClientError, ClientOptions, Prepared, MAX_IN_FLIGHT};
use wire::protocol::{QueryParams, QueryResult, Request, Response};
use wire::{Consistency, Value};

use super::redis::RedisConnection;
use super::workload::{Op, OpKind, Workload};

/// Most requests a run keeps in flight on one connection (the client library's bound).
pub const MAX_WINDOW: usize = MAX_IN_FLIGHT;

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
}

/// The connection can no longer be used; the kind of failure, to be counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLost(pub String);

/// One pipelined connection: requests go out with `send`, answers come back with `recv` in
/// whatever order the store sends them, matched by the token `send` returned.
pub trait Connection: Send {
    fn send(&mut self, op: Op) -> Result<u64, ConnectionLost>;

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

    fn client(&self, address: &str) -> anyhow::Result<Client> {
        let options = ClientOptions {
            timeout: Some(self.timeout),
            client_name: concat!("enigmadb-stress/", env!("CARGO_PKG_VERSION")).into(),
            ..ClientOptions::default()
        };
        Client::connect_with(address, options).with_context(|| format!("connecting to {address}"))
    }
}

/// A connection to EnigmaDB with the run's INSERT and SELECT prepared.
struct EnigmaConnection {
    client: Client,
    insert: Prepared,
    select: Prepared,
    params: QueryParams,
    workload: Workload,
}

impl EnigmaConnection {
    fn open(target: &Target, address: &str, workload: Workload) -> anyhow::Result<EnigmaConnection> {
        let mut client = target.client(address)?;
        let table = &target.table;
        let insert = format!("INSERT INTO {table} (pk, ck, value) VALUES (?, ?, ?)");
        let select = format!("SELECT value FROM {table} WHERE pk = ? AND ck = ?");
        let insert = client.prepare(&insert).with_context(|| format!("preparing {insert}"))?;
        let select = client.prepare(&select).with_context(|| format!("preparing {select}"))?;
        Ok(EnigmaConnection {
            client,
            insert,
            select,
            params: QueryParams::with_consistency(target.consistency),
            workload,
        })
    }

    fn answer(response: Response) -> Answer {
        match response {
            Response::Result(QueryResult::Void) => Answer::Written,
            Response::Result(QueryResult::Rows(rows)) => match rows.rows.as_slice() {
                [] => Answer::Missing,
                [row] => match row.as_slice() {
                    [Some(Value::Blob(v))] => Answer::Found(v.clone()),
                    _ => Answer::Error("unexpected answer: row of another shape".into()),
                },
                _ => Answer::Error("unexpected answer: more than one row".into()),
            },
            Response::Error(e) => Answer::Error(e.code.name().into()),
            _ => Answer::Error("unexpected answer".into()),
        }
    }
}

impl Connection for EnigmaConnection {
    fn send(&mut self, op: Op) -> Result<u64, ConnectionLost> {
        let shape = &self.workload.shape;
        let mut values =
            vec![Some(Value::Blob(shape.partition_key(op.key))), Some(Value::BigInt(shape.clustering(op.key)))];
        let id = match op.kind {
            OpKind::Write => {
                values.push(Some(Value::Blob(self.workload.value(op.key).to_vec())));
                self.insert.id
            }
            OpKind::Read => self.select.id,
        };
        let request = Request::Execute { id, values, params: self.params.clone() };
        self.client.send(&request).map(u64::from).map_err(|e| lost(&e))
    }

    fn recv(&mut self, wait: Option<Duration>) -> Result<Option<(u64, Answer)>, ConnectionLost> {
        if let Some(wait) = wait.filter(|_| !self.client.has_buffered_input()) {
            self.client.flush().map_err(|e| lost(&e))?;
            let readable = wait_readable(self.client.as_raw_fd(), wait)
                .map_err(|e| ConnectionLost(format!("connection: poll failed ({:?})", e.kind())))?;
            if !readable {
                return Ok(None);
            }
        }
        match self.client.recv() {
            Ok((stream, response)) => Ok(Some((u64::from(stream), EnigmaConnection::answer(response)))),
            Err(e) => Err(lost(&e)),
        }
    }
}

/// Waits until `fd` is readable (or closed) or `timeout` has passed; `true` when readable.
/// `ppoll` sleeps on a high-resolution timer: socket timeouts (SO_RCVTIMEO) are rounded up to
/// the kernel's tick, up to 10 ms late, which would delay the open loop's sends.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> std::io::Result<bool> {
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let timeout = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    loop {
        // SAFETY: one valid pollfd, a valid timespec and no signal mask, all outliving the call.
        let n = unsafe { libc::ppoll(&mut poll, 1, &timeout, std::ptr::null()) };
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
fn lost(e: &ClientError) -> ConnectionLost {
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

//! A small pipelined Redis client for `enigmadb stress --target redis`: SET and GET of the run's
//! keys over one blocking socket, answers in request order (RESP has no stream ids), so that
//! Redis is measured with the same loop and latency method as EnigmaDB. It speaks no other
//! command than SET, GET and INFO, and never reconnects by itself.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use super::resp::{decode_reply, encode_command, Reply, RespError};
use super::target::{wait_readable, Answer, Connection, ConnectionLost, Sent, MAX_WINDOW};
use super::workload::{Op, OpKind, Workload};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Queued command bytes that trigger a write before the next `recv`.
const WRITE_COALESCE_BYTES: usize = 64 * 1024;

pub struct RedisConnection {
    socket: TcpStream,
    read_buf: Vec<u8>,
    read_start: usize,
    write_buf: Vec<u8>,
    /// Tokens and kinds of the requests sent and not answered, oldest first (at most
    /// [`MAX_WINDOW`]).
    in_flight: VecDeque<(u64, OpKind)>,
    next_token: u64,
    workload: Option<Workload>,
}

impl RedisConnection {
    /// A connection for a run's operations.
    pub fn open(address: &str, timeout: Duration, workload: Workload) -> anyhow::Result<RedisConnection> {
        let mut connection = RedisConnection::open_raw(address, timeout)?;
        connection.workload = Some(workload);
        Ok(connection)
    }

    /// A connection for single commands (INFO).
    pub fn open_raw(address: &str, timeout: Duration) -> anyhow::Result<RedisConnection> {
        let addr = address
            .to_socket_addrs()
            .with_context(|| format!("resolving {address}"))?
            .next()
            .ok_or_else(|| anyhow!("{address} resolves to no address"))?;
        let socket = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {address}"))?;
        socket.set_nodelay(true)?;
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        Ok(RedisConnection {
            socket,
            read_buf: Vec::new(),
            read_start: 0,
            write_buf: Vec::new(),
            in_flight: VecDeque::new(),
            next_token: 0,
            workload: None,
        })
    }

    /// `redis_version` from `INFO server`.
    pub fn server_version(&mut self) -> anyhow::Result<String> {
        encode_command(&[b"INFO", b"server"], &mut self.write_buf);
        self.flush()?;
        let text = match self.read_reply()? {
            Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
            other => bail!("INFO server answered {other:?}"),
        };
        text.lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| anyhow!("INFO server has no redis_version line"))
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let written = self.socket.write_all(&self.write_buf);
        self.write_buf.clear();
        written
    }

    /// The next reply, reading (after writing whatever is queued) until one is whole.
    fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            match decode_reply(&self.read_buf[self.read_start..]) {
                Ok(Some((reply, used))) => {
                    self.read_start += used;
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            self.flush()?;
            self.read_buf.drain(..self.read_start);
            self.read_start = 0;
            let old = self.read_buf.len();
            self.read_buf.resize(old + READ_CHUNK_BYTES, 0);
            let read = self.socket.read(&mut self.read_buf[old..]);
            self.read_buf.truncate(old + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Connection for RedisConnection {
    fn send(&mut self, op: Op) -> Result<Sent, ConnectionLost> {
        let Some(workload) = &self.workload else {
            return Err(ConnectionLost("connection: opened without a workload".into()));
        };
        if self.in_flight.len() >= MAX_WINDOW {
            return Err(ConnectionLost(format!("connection: more than {MAX_WINDOW} requests in flight")));
        }
        let key = workload.shape.flat_key(op.key);
        match op.kind {
            OpKind::Write => encode_command(&[b"SET", &key, workload.value(op.key)], &mut self.write_buf),
            OpKind::Read => encode_command(&[b"GET", &key], &mut self.write_buf),
        }
        let token = self.next_token;
        self.next_token += 1;
        self.in_flight.push_back((token, op.kind));
        if self.write_buf.len() >= WRITE_COALESCE_BYTES {
            self.flush().map_err(|e| lost(&e))?;
        }
        Ok(Sent { token, to_owner: None })
    }

    fn recv(&mut self, wait: Option<Duration>) -> Result<Option<(u64, Answer)>, ConnectionLost> {
        let Some(&(token, kind)) = self.in_flight.front() else {
            return Err(ConnectionLost("connection: recv with nothing in flight".into()));
        };
        if let Some(wait) = wait.filter(|_| self.read_start == self.read_buf.len()) {
            self.flush().map_err(|e| lost(&e))?;
            if !wait_readable(self.socket.as_raw_fd(), wait).map_err(|e| lost(&e))? {
                return Ok(None);
            }
        }
        let reply = self.read_reply().map_err(|e| lost(&e))?;
        self.in_flight.pop_front();
        let answer = match (kind, reply) {
            (OpKind::Write, Reply::Simple(s)) if s == "OK" => Answer::Written,
            (OpKind::Read, Reply::Bulk(Some(value))) => Answer::Found(value),
            (OpKind::Read, Reply::Bulk(None)) => Answer::Missing,
            // Redis errors start with their kind in capitals: "ERR ...", "OOM ...", "MISCONF ...".
            (_, Reply::Error(text)) => Answer::Error(format!("redis {}", text.split(' ').next().unwrap_or(""))),
            _ => Answer::Error("unexpected answer".into()),
        };
        Ok(Some((token, answer)))
    }
}

fn lost(e: &io::Error) -> ConnectionLost {
    ConnectionLost(match e.get_ref().and_then(|inner| inner.downcast_ref::<RespError>()) {
        Some(_) => "connection: malformed reply".into(),
        None => match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "connection: no answer within the timeout".into(),
            io::ErrorKind::UnexpectedEof => "connection: closed".into(),
            kind => format!("connection: I/O error ({kind:?})"),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::stress::workload::{Distribution, KeyShape};

    /// A fake Redis: answers each command of a connection, in order, from a table of replies.
    fn fake_redis(replies: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            // The client writes its queued commands in one write when it first waits for an
            // answer: one read takes them all, then every reply goes back at once.
            let mut chunk = [0u8; 4096];
            let _ = socket.read(&mut chunk);
            let _ = socket.write_all(replies);
            std::thread::sleep(Duration::from_millis(300));
        });
        addr
    }

    fn workload() -> Workload {
        Workload::new(KeyShape::new(100, 1).unwrap(), Distribution::Uniform, 0, 8, 1).unwrap()
    }

    #[test]
    fn pipelined_answers_are_matched_to_their_requests_in_order() {
        let addr = fake_redis(b"+OK\r\n$8\r\nabcdefgh\r\n$-1\r\n-OOM no memory\r\n");
        let mut c = RedisConnection::open(&addr, Duration::from_secs(5), workload()).unwrap();
        let write = c.send(Op { kind: OpKind::Write, key: 1 }).unwrap().token;
        let found = c.send(Op { kind: OpKind::Read, key: 1 }).unwrap().token;
        let missing = c.send(Op { kind: OpKind::Read, key: 2 }).unwrap().token;
        let refused = c.send(Op { kind: OpKind::Write, key: 3 }).unwrap().token;
        assert_eq!(c.recv(None).unwrap(), Some((write, Answer::Written)));
        assert_eq!(c.recv(None).unwrap(), Some((found, Answer::Found(b"abcdefgh".to_vec()))));
        assert_eq!(c.recv(None).unwrap(), Some((missing, Answer::Missing)));
        assert_eq!(c.recv(None).unwrap(), Some((refused, Answer::Error("redis OOM".into()))));
        assert!(c.recv(None).is_err(), "nothing in flight");
    }

    #[test]
    fn a_short_wait_without_answer_is_not_a_failure() {
        let addr = fake_redis(b"+OK\r\n");
        let mut c = RedisConnection::open(&addr, Duration::from_secs(5), workload()).unwrap();
        // The fake answers only after it has read a SET; until then nothing comes back.
        let token = c.send(Op { kind: OpKind::Write, key: 1 }).unwrap().token;
        let first = c.recv(Some(Duration::from_millis(1))).unwrap();
        let answer = match first {
            Some(answer) => answer,
            None => c.recv(None).unwrap().unwrap(),
        };
        assert_eq!(answer, (token, Answer::Written));
    }

    #[test]
    fn garbage_from_the_server_loses_the_connection() {
        let addr = fake_redis(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        let mut c = RedisConnection::open(&addr, Duration::from_secs(5), workload()).unwrap();
        c.send(Op { kind: OpKind::Write, key: 1 }).unwrap();
        assert_eq!(c.recv(None), Err(ConnectionLost("connection: malformed reply".into())));
    }
}

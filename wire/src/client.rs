//! The EnigmaDB client library: one blocking connection over `std::net`, speaking the frames and
//! messages of `frame` and `protocol` (connect, query, prepared statements, batches, paging,
//! pipelining). It never spawns threads or needs a runtime; it must never block without a bound
//! when a timeout is set.
//!
//! Why blocking std and not async: the users are the CLI, the shell, the stress tool, benchmarks
//! and tests, none of which runs a runtime; the server runs glommio, whose sockets cannot be
//! shared with tokio anyway. Pipelining needs no async: [`Client::send`] queues many requests on
//! one connection and [`Client::recv`] takes answers in whatever order the server sends them.
//! For parallelism, open one `Client` per thread.
//!
//! Shard-aware connections ([`Client::connect_to_shard`]) pick their own source port, because
//! a node's shard-aware port hands a connection to shard source-port % shards: a client that
//! knows the owner of a partition (`routing`) reaches the shard that stores it without a hop
//! between shards.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::frame::{encode_frame, Frame, FrameDecoder, FrameError, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION};
use crate::protocol::{
    AdminRequest, AdminResult, BatchRequest, ColumnSpec, ErrorCode, ErrorResponse, PlainCredentials, PreparedId,
    ProtocolError, QueryParams, QueryResult, Request, Response, Rows, TopologyAnswer,
};
use crate::tls::{tls_failure, ClientStream, ClientTls};
use crate::value::Value;

/// Most requests one connection keeps in flight (sent, not yet answered). Requests abandoned
/// after a timeout count until their late answer arrives.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Queued request bytes that trigger a write even before the next [`Client::recv`].
const WRITE_COALESCE_BYTES: usize = 64 * 1024;

/// How often an EXECUTE answered "unprepared" is prepared again and retried.
const MAX_REPREPARES: usize = 1;

/// Default bound on connecting and on every wait for the server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Local ports [`Client::connect_to_shard`] tries before it gives up: each one that is taken
/// costs a failed bind or connect, and a machine with that many taken ports in a row is better
/// served by the ordinary port.
pub const MAX_SHARD_PORT_ATTEMPTS: usize = 64;

/// Where the kernel says its ephemeral ports are (`net.ipv4.ip_local_port_range`, which Linux
/// applies to IPv6 too).
const LOCAL_PORT_RANGE_FILE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Linux's default ephemeral port range, for systems without [`LOCAL_PORT_RANGE_FILE`].
const DEFAULT_LOCAL_PORTS: RangeInclusive<u16> = 32768..=60999;

/// How a connection is opened.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bounds connecting and every socket read or write; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Largest frame accepted from the server (and sent to it).
    pub max_frame_bytes: usize,
    /// Sent in STARTUP; servers log it.
    pub client_name: String,
    /// The user name and password sent when the server asks for them (AUTHENTICATE); `None`
    /// connects only to a node that does not ask.
    pub credentials: Option<PlainCredentials>,
    /// Connect with TLS, checking the server's certificate (and presenting the client's, for
    /// mutual TLS); `None`: plaintext.
    pub tls: Option<ClientTls>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Some(DEFAULT_TIMEOUT),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            client_name: concat!("enigmadb-wire/", env!("CARGO_PKG_VERSION")).to_owned(),
            credentials: None,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("the connection is closed")]
    Closed,
    /// The server sent bytes that are not a valid frame; the connection is closed.
    #[error("malformed frame from the server: {0}")]
    Frame(#[from] FrameError),
    /// The server sent a frame whose body is not the message it announces; the connection is
    /// closed.
    #[error("malformed message from the server: {0}")]
    Protocol(#[from] ProtocolError),
    /// A well-formed answer that makes no sense here (wrong kind, unknown stream).
    #[error("unexpected answer from the server: {0}")]
    Unexpected(String),
    /// The server answered with a typed error.
    #[error("{0}")]
    Server(ErrorResponse),
    #[error("{limit} requests are already in flight on this connection")]
    TooManyInFlight { limit: usize },
    #[error("request of {len} bytes exceeds the frame limit of {limit} bytes")]
    RequestTooLarge { len: usize, limit: usize },
    #[error("recv called with no request in flight")]
    NothingInFlight,
    /// [`Client::connect_to_shard`] was asked for a shard at or above the shard count it was
    /// given.
    #[error("shard {shard} is not one of {shards} shards")]
    InvalidShard { shard: u16, shards: u16 },
    /// A shard-aware connection was served by another shard than the one its source port
    /// asked for (a NAT rewrote the port, or the node's shard count is not the one assumed).
    /// The connection is closed; use the node's ordinary port instead.
    #[error("asked for shard {asked} through the shard-aware port, served by shard {served}")]
    ShardMismatch { asked: u16, served: u16 },
    /// The server asks for credentials (its authenticator is named) and the options hold
    /// none; the connection is closed.
    #[error("the server requires authentication ({authenticator}): give a user name and password")]
    CredentialsRequired { authenticator: String },
    /// The TLS handshake failed: the server's certificate is not signed by the CA given, is
    /// not for the address connected to, the server refused the client's certificate, or the
    /// server does not speak TLS on that port.
    #[error("TLS handshake with the server failed: {0}")]
    Tls(String),
}

impl ClientError {
    /// The server's error code, when the server answered with an error.
    pub fn server_code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Server(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// What OPTIONS tells about a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub versions: Vec<u8>,
    pub max_frame_bytes: u32,
    pub server: String,
    /// The shard serving this connection, and the node's shard count.
    pub shard: u16,
    pub shards: u16,
    /// The node's shard-aware client port; 0 when it has none.
    pub shard_aware_port: u16,
}

/// A statement prepared on the server. Keeps its text so that the client can prepare it again
/// if the server has forgotten it (after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub id: PreparedId,
    pub text: String,
    pub bind: Vec<ColumnSpec>,
    pub columns: Vec<ColumnSpec>,
    /// The bind markers of the partition key, in key order (`routing::routing_token`); empty
    /// when the statement cannot be routed.
    pub pk_indexes: Vec<u16>,
}

/// One connection to an EnigmaDB server.
pub struct Client {
    socket: ClientStream,
    decoder: FrameDecoder,
    /// Received bytes; `read_buf[read_start..]` are not decoded yet. Bounded by one frame plus
    /// one read chunk, because the decoder refuses frames over the limit.
    read_buf: Vec<u8>,
    read_start: usize,
    /// Encoded requests not yet written (at most about `WRITE_COALESCE_BYTES` plus one frame).
    write_buf: Vec<u8>,
    next_stream: u16,
    in_flight: HashSet<u16>,
    /// Requests whose caller gave up (timeout): their answers are dropped when they arrive.
    abandoned: HashSet<u16>,
    /// Answers read while waiting for another stream; at most one per in-flight request.
    ready: VecDeque<(u16, Response)>,
    version: u8,
    /// The shard serving this connection and the node's shard count, from READY.
    shard: u16,
    shards: u16,
    /// Set when the byte stream can no longer be trusted; every later call fails with `Closed`.
    broken: bool,
}

impl Client {
    /// Connects with the default options and performs STARTUP.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, ClientError> {
        Client::connect_with(addr, ClientOptions::default())
    }

    pub fn connect_with(addr: impl ToSocketAddrs, options: ClientOptions) -> Result<Client, ClientError> {
        let mut last_err = io::Error::new(io::ErrorKind::InvalidInput, "the address resolved to nothing");
        let mut socket = None;
        for addr in addr.to_socket_addrs()? {
            let attempt = match options.timeout {
                Some(t) => TcpStream::connect_timeout(&addr, t),
                None => TcpStream::connect(addr),
            };
            match attempt {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        Client::start(socket.ok_or(last_err)?, options)
    }

    /// Connects to a node's shard-aware port `addr` so that shard `shard` of its `shards`
    /// serves the connection: binds a local port p with p % `shards` == `shard` (in the
    /// kernel's ephemeral range, from a random point, skipping taken ports, at most
    /// [`MAX_SHARD_PORT_ATTEMPTS`]), performs STARTUP, and checks that READY names that shard.
    /// [`ClientError::ShardMismatch`] means the port did not arrive as sent (NAT): connect to
    /// the node's ordinary port instead.
    pub fn connect_to_shard(
        addr: SocketAddr,
        shard: u16,
        shards: u16,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        if shard >= shards {
            return Err(ClientError::InvalidShard { shard, shards });
        }
        let client = Client::start(connect_from_shard_port(addr, shard, shards, options.timeout)?, options)?;
        match client.shard == shard {
            true => Ok(client),
            false => Err(ClientError::ShardMismatch { asked: shard, served: client.shard }),
        }
    }

    /// STARTUP on a connected socket: what every way of connecting shares.
    fn start(socket: TcpStream, options: ClientOptions) -> Result<Client, ClientError> {
        socket.set_nodelay(true)?;
        let timeout = options.timeout.filter(|t| !t.is_zero());
        socket.set_read_timeout(timeout)?;
        socket.set_write_timeout(timeout)?;
        let socket = match &options.tls {
            None => ClientStream::Plain(socket),
            Some(tls) => ClientStream::handshake(socket, tls).map_err(|e| match io_error(e) {
                ClientError::Io(e) if e.kind() == io::ErrorKind::InvalidInput => ClientError::Tls(e.to_string()),
                // A server that closes on a ClientHello does not speak TLS there.
                ClientError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    ClientError::Tls("the server closed the connection during the handshake".into())
                }
                other => other,
            })?,
        };
        let mut client = Client {
            socket,
            decoder: FrameDecoder::new(options.max_frame_bytes),
            read_buf: Vec::new(),
            read_start: 0,
            write_buf: Vec::new(),
            next_stream: 1,
            in_flight: HashSet::new(),
            abandoned: HashSet::new(),
            ready: VecDeque::new(),
            version: PROTOCOL_VERSION,
            shard: 0,
            shards: 1,
            broken: false,
        };
        client.set_timeout(options.timeout)?;
        let mut answer =
            client.request(&Request::Startup { version: PROTOCOL_VERSION, client: options.client_name })?;
        if let Response::Authenticate { authenticator } = answer {
            let Some(credentials) = options.credentials else {
                return Err(ClientError::CredentialsRequired { authenticator });
            };
            answer = client.request(&Request::AuthResponse { token: credentials.encode() })?;
        }
        match answer {
            Response::Ready { version, shard, shards } | Response::AuthSuccess { version, shard, shards } => {
                (client.version, client.shard, client.shards) = (version, shard, shards);
            }
            other => return Err(unexpected("READY", &other)),
        }
        Ok(client)
    }

    /// The protocol version agreed at STARTUP.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// The shard of the node serving this connection (READY).
    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// The node's shard count (READY).
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The server's address, as connected to.
    pub fn peer_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.socket.tcp().peer_addr()?)
    }

    /// This end's address: its port decides the shard on a shard-aware port.
    pub fn local_addr(&self) -> Result<SocketAddr, ClientError> {
        Ok(self.socket.tcp().local_addr()?)
    }

    /// Bounds every later wait for the server (each socket read or write); `None` waits forever.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let timeout = timeout.filter(|t| !t.is_zero());
        self.socket.tcp().set_read_timeout(timeout)?;
        self.socket.tcp().set_write_timeout(timeout)?;
        Ok(())
    }

    pub fn options(&mut self) -> Result<ServerInfo, ClientError> {
        match self.request(&Request::Options)? {
            Response::Supported { versions, max_frame_bytes, server, shard, shards, shard_aware_port } => {
                Ok(ServerInfo { versions, max_frame_bytes, server, shard, shards, shard_aware_port })
            }
            other => Err(unexpected("SUPPORTED", &other)),
        }
    }

    /// The cluster's nodes, shards and tokens, unless the server's topology version is still
    /// `known_version` (0: the caller knows none).
    pub fn topology(&mut self, known_version: u64) -> Result<TopologyAnswer, ClientError> {
        match result_of(self.request(&Request::Topology { known_version })?)? {
            QueryResult::Topology(answer) => Ok(answer),
            other => Err(ClientError::Unexpected(format!("expected a TOPOLOGY result, got {other:?}"))),
        }
    }

    pub fn query(&mut self, text: &str) -> Result<QueryResult, ClientError> {
        self.query_with(text, QueryParams::default())
    }

    pub fn query_with(&mut self, text: &str, params: QueryParams) -> Result<QueryResult, ClientError> {
        result_of(self.request(&Request::Query { text: text.to_owned(), params })?)
    }

    pub fn prepare(&mut self, text: &str) -> Result<Prepared, ClientError> {
        match result_of(self.request(&Request::Prepare { text: text.to_owned() })?)? {
            QueryResult::Prepared(meta) => Ok(Prepared {
                id: meta.id,
                text: text.to_owned(),
                bind: meta.bind,
                columns: meta.columns,
                pk_indexes: meta.pk_indexes,
            }),
            other => Err(ClientError::Unexpected(format!("expected a PREPARED result, got {other:?}"))),
        }
    }

    /// Runs a prepared statement. If the server no longer knows it, prepares it again and
    /// retries (at most [`MAX_REPREPARES`] times).
    pub fn execute(
        &mut self,
        prepared: &Prepared,
        values: &[Option<Value>],
        params: QueryParams,
    ) -> Result<QueryResult, ClientError> {
        let mut id = prepared.id;
        let mut reprepares = 0;
        loop {
            let request = Request::Execute { id, values: values.to_vec(), params: params.clone() };
            match result_of(self.request(&request)?) {
                Err(ClientError::Server(ErrorResponse { code: ErrorCode::Unprepared { .. }, .. }))
                    if reprepares < MAX_REPREPARES =>
                {
                    reprepares += 1;
                    id = self.prepare(&prepared.text)?.id;
                }
                other => return other,
            }
        }
    }

    pub fn batch(&mut self, batch: BatchRequest) -> Result<QueryResult, ClientError> {
        result_of(self.request(&Request::Batch(batch))?)
    }

    /// Runs an operator's command (`enigmadb admin`) and returns its typed result.
    pub fn admin(&mut self, command: AdminRequest) -> Result<AdminResult, ClientError> {
        match self.request(&Request::Admin(command))? {
            Response::Admin(result) => Ok(result),
            other => Err(unexpected("an admin RESULT", &other)),
        }
    }

    /// Runs a SELECT and iterates over all its rows, fetching `page_size` rows at a time.
    pub fn query_paged(&mut self, text: &str, page_size: u32) -> Result<PagedRows<'_>, ClientError> {
        self.query_paged_with(text, QueryParams { page_size: Some(page_size), ..QueryParams::default() })
    }

    /// As [`Client::query_paged`], with every parameter chosen by the caller (`paging_state`
    /// resumes where an earlier iteration stopped).
    pub fn query_paged_with(&mut self, text: &str, params: QueryParams) -> Result<PagedRows<'_>, ClientError> {
        let mut pages = PagedRows {
            client: self,
            text: text.to_owned(),
            params,
            columns: Vec::new(),
            page: VecDeque::new(),
            more: true,
            pages_fetched: 0,
        };
        pages.fetch_page()?;
        Ok(pages)
    }

    /// Queues `request` and returns its stream id; the answer comes from [`Client::recv`].
    /// Requests go out at the latest at the next `recv` or [`Client::flush`].
    pub fn send(&mut self, request: &Request) -> Result<u16, ClientError> {
        self.check_usable()?;
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            return Err(ClientError::TooManyInFlight { limit: MAX_IN_FLIGHT });
        }
        let stream = self.free_stream();
        let frame = request.to_frame(stream);
        if frame.wire_len() > self.decoder.max_frame_bytes() {
            return Err(ClientError::RequestTooLarge { len: frame.wire_len(), limit: self.decoder.max_frame_bytes() });
        }
        encode_frame(&frame, &mut self.write_buf);
        self.in_flight.insert(stream);
        if self.write_buf.len() >= WRITE_COALESCE_BYTES {
            self.flush()?;
        }
        Ok(stream)
    }

    /// Writes every queued request.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.check_usable()?;
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let written = self.socket.write_all(&self.write_buf).and_then(|()| self.socket.flush());
        self.write_buf.clear();
        // A partly written frame would desynchronize the stream: the connection is done.
        written.map_err(|e| self.fail(io_error(e)))
    }

    /// The next answer to any request in flight, in the order the server sent them.
    pub fn recv(&mut self) -> Result<(u16, Response), ClientError> {
        let answer = match self.ready.pop_front() {
            Some(answer) => answer,
            None if self.in_flight.len() == self.abandoned.len() => return Err(ClientError::NothingInFlight),
            // Queued requests go out when the answer has to be read from the socket
            // (`read_frame`): a pipelined loop writes many requests per syscall.
            None => self.next_answer()?,
        };
        self.in_flight.remove(&answer.0);
        Ok(answer)
    }

    /// Requests sent and not yet answered to the caller (including abandoned ones).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether bytes of an answer were already read from the socket, so that [`Client::recv`]
    /// would not wait for the socket. With [`AsRawFd`] this lets a caller wait for an answer or
    /// a deadline at once (`poll`), finer than socket timeouts, which the kernel rounds up to its
    /// timer tick (the stress tool's open loop).
    pub fn has_buffered_input(&self) -> bool {
        !self.ready.is_empty() || self.read_start < self.read_buf.len() || self.socket.has_buffered_input()
    }

    /// Sends one request and waits for its answer, keeping answers to other streams for `recv`.
    fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let stream = self.send(request)?;
        self.flush()?;
        loop {
            match self.next_answer() {
                Ok((s, response)) if s == stream => {
                    self.in_flight.remove(&stream);
                    return Ok(response);
                }
                Ok(other) => self.ready.push_back(other),
                Err(e) => {
                    if !self.broken {
                        self.abandoned.insert(stream);
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Reads until an answer to a live request arrives. The stream stays in `in_flight` (so its
    /// id is not reused) until the answer is handed to the caller.
    fn next_answer(&mut self) -> Result<(u16, Response), ClientError> {
        loop {
            let frame = self.read_frame()?;
            if frame.stream == 0 {
                // Connection-level error: the server could not read our frames and closes.
                let response = Response::from_frame(&frame).map_err(|e| self.fail(e.into()))?;
                let error = match response {
                    Response::Error(e) => ClientError::Server(e),
                    other => unexpected("an ERROR on stream 0", &other),
                };
                return Err(self.fail(error));
            }
            if !self.in_flight.contains(&frame.stream) {
                let error = ClientError::Unexpected(format!("answer on stream {} with no request", frame.stream));
                return Err(self.fail(error));
            }
            if self.abandoned.remove(&frame.stream) {
                self.in_flight.remove(&frame.stream);
                continue;
            }
            // A server that sends malformed messages cannot be trusted with the next ones.
            let response = Response::from_frame(&frame).map_err(|e| self.fail(e.into()))?;
            return Ok((frame.stream, response));
        }
    }

    fn read_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            match self.decoder.decode(&self.read_buf[self.read_start..]) {
                Ok(Some((frame, used))) => {
                    self.read_start += used;
                    return Ok(frame);
                }
                Ok(None) => {}
                // Even a recoverable frame error loses an answer some caller waits for.
                Err(e) => return Err(self.fail(e.into())),
            }
            // More bytes are needed: whatever requests are queued must reach the server first,
            // or their answers would never come.
            self.flush()?;
            self.read_buf.drain(..self.read_start);
            self.read_start = 0;
            let old = self.read_buf.len();
            self.read_buf.resize(old + READ_CHUNK_BYTES, 0);
            let read = self.socket.read(&mut self.read_buf[old..]);
            self.read_buf.truncate(old + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Err(self.fail(ClientError::Closed)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A timeout leaves the stream intact: the bytes read so far stay buffered.
                Err(e) => {
                    return Err(match io_error(e) {
                        ClientError::Timeout => ClientError::Timeout,
                        other => self.fail(other),
                    })
                }
            }
        }
    }

    /// The next stream id not in use; 0 is reserved for the server's connection-level errors.
    fn free_stream(&mut self) -> u16 {
        // At most MAX_IN_FLIGHT ids are taken, far fewer than the 65535 usable ones.
        loop {
            let stream = self.next_stream;
            self.next_stream = self.next_stream.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains(&stream) {
                return stream;
            }
        }
    }

    fn check_usable(&self) -> Result<(), ClientError> {
        match self.broken {
            true => Err(ClientError::Closed),
            false => Ok(()),
        }
    }

    fn fail(&mut self, error: ClientError) -> ClientError {
        self.broken = true;
        let _ = self.socket.tcp().shutdown(std::net::Shutdown::Both);
        error
    }
}

/// A socket to `addr` from a local port p with p % `shards` == `shard` (see
/// [`Client::connect_to_shard`]). Taken ports (bind or connect failing with "in use" or "not
/// available") are skipped; any other failure is the answer.
fn connect_from_shard_port(
    addr: SocketAddr,
    shard: u16,
    shards: u16,
    timeout: Option<Duration>,
) -> Result<TcpStream, ClientError> {
    let range = local_port_range();
    // Any well-spread number does: it only keeps clients from all trying the same ports first.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let span = u64::from(range.end() - range.start()) + 1;
    // `random % span` < span <= 65536 and adding it to the start stays within the range.
    let start = range.start() + (random % span) as u16;
    let unspecified = match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let mut last_err = io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        format!("no local port in {range:?} is {shard} modulo {shards}"),
    );
    for port in shard_ports(range, shard, shards, start).take(MAX_SHARD_PORT_ATTEMPTS) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let attempt = socket.bind(&SocketAddr::new(unspecified, port).into()).and_then(|()| match timeout {
            Some(t) => socket.connect_timeout(&addr.into(), t),
            None => socket.connect(&addr.into()),
        });
        match attempt {
            Ok(()) => return Ok(socket.into()),
            Err(e) if matches!(e.kind(), io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable) => last_err = e,
            Err(e) => return Err(io_error(e)),
        }
    }
    Err(ClientError::Io(last_err))
}

/// The kernel's ephemeral port range: ports no server listens on by convention, which the
/// kernel would otherwise hand out itself.
fn local_port_range() -> RangeInclusive<u16> {
    let text = std::fs::read_to_string(LOCAL_PORT_RANGE_FILE).unwrap_or_default();
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    match (bounds.next(), bounds.next()) {
        (Some(Ok(low)), Some(Ok(high))) if 0 < low && low <= high => low..=high,
        _ => DEFAULT_LOCAL_PORTS,
    }
}

/// Every port p of `range` with p % `shards` == `shard`, once each, from the first at or after
/// `start` upwards, wrapping to the bottom of the range. `shards` must be at least 1.
fn shard_ports(range: RangeInclusive<u16>, shard: u16, shards: u16, start: u16) -> impl Iterator<Item = u16> {
    let (low, high, step) = (u32::from(*range.start()), u32::from(*range.end()), u32::from(shards.max(1)));
    let first = low + (u32::from(shard) + step - low % step) % step;
    let count = match first <= high {
        true => (high - first) / step + 1,
        false => 0,
    };
    let skip = u32::from(start).saturating_sub(first).div_ceil(step);
    // Every port is first + k * step for k < count, so at most `high`: a u16.
    (0..count).map(move |i| (first + ((skip + i) % count) * step) as u16)
}

fn io_error(e: io::Error) -> ClientError {
    // A TLS alert or failure (under TLS 1.3 a server refuses the client's certificate only
    // after the client's side of the handshake is done: the first read gets the alert).
    if let Some(failure) = tls_failure(&e) {
        return ClientError::Tls(failure.to_string());
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}

fn unexpected(expected: &str, got: &Response) -> ClientError {
    match got {
        Response::Error(e) => ClientError::Server(e.clone()),
        other => ClientError::Unexpected(format!("expected {expected}, got {:?}", other.opcode())),
    }
}

fn result_of(response: Response) -> Result<QueryResult, ClientError> {
    match response {
        Response::Result(result) => Ok(result),
        other => Err(unexpected("RESULT", &other)),
    }
}

impl AsRawFd for Client {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.tcp().as_raw_fd()
    }
}

/// Rows of a paged SELECT, fetched one page at a time as the iteration reaches them.
pub struct PagedRows<'a> {
    client: &'a mut Client,
    text: String,
    params: QueryParams,
    columns: Vec<ColumnSpec>,
    page: VecDeque<Vec<Option<Value>>>,
    more: bool,
    pages_fetched: usize,
}

impl PagedRows<'_> {
    pub fn columns(&self) -> &[ColumnSpec] {
        &self.columns
    }

    /// Pages fetched so far.
    pub fn pages_fetched(&self) -> usize {
        self.pages_fetched
    }

    /// Where the next page starts (`None` once the last page is fetched): pass it back in
    /// `QueryParams::paging_state` to resume later.
    pub fn paging_state(&self) -> Option<&[u8]> {
        self.params.paging_state.as_deref().filter(|_| self.more)
    }

    fn fetch_page(&mut self) -> Result<(), ClientError> {
        let rows = match self.client.query_with(&self.text, self.params.clone())? {
            QueryResult::Rows(rows) => rows,
            other => return Err(ClientError::Unexpected(format!("expected ROWS for a paged query, got {other:?}"))),
        };
        let Rows { columns, rows, paging_state } = rows;
        if paging_state.is_some() && paging_state == self.params.paging_state {
            // The same position again would make the iteration endless.
            return Err(ClientError::Unexpected("the server returned the paging state it was given".into()));
        }
        self.pages_fetched += 1;
        self.columns = columns;
        self.page.extend(rows);
        self.more = paging_state.is_some();
        self.params.paging_state = paging_state;
        Ok(())
    }
}

impl Iterator for PagedRows<'_> {
    type Item = Result<Vec<Option<Value>>, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.page.is_empty() && self.more {
            if let Err(e) = self.fetch_page() {
                self.more = false;
                return Some(Err(e));
            }
        }
        self.page.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{encode_frame, SUPPORTED_VERSIONS};
    use crate::protocol::{
        negotiate_version, AdminDone, BatchKind, BatchStatement, Consistency, PreparedMeta, Topology, TopologyNode,
    };
    use crate::value::ColumnType;
    use std::collections::HashMap;
    use std::net::{SocketAddr, TcpListener};

    /// Rows of the test server's `numbers` table: n = 0..NUMBERS.
    const NUMBERS: u32 = 1000;

    /// The test server's shard count: a connection is served by shard client port % SHARDS, as
    /// on a node's shard-aware port.
    const SHARDS: u16 = 3;

    /// The test server's topology version.
    const TOPOLOGY_VERSION: u64 = 7;

    /// Starts a tiny protocol server on a std thread (one thread per connection). It understands
    /// a handful of made-up statements (see `answer`); `HOLD i` answers are kept back until
    /// `RELEASE`, then sent in reverse order, so answers come back out of order.
    fn start_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound listener has an address");
        std::thread::spawn(move || {
            for socket in listener.incoming().flatten() {
                std::thread::spawn(move || serve(socket));
            }
        });
        addr
    }

    #[derive(Default)]
    struct Session {
        prepared: HashMap<PreparedId, String>,
        held: Vec<Frame>,
        shard: u16,
    }

    fn serve(mut socket: TcpStream) {
        let mut decoder = FrameDecoder::default();
        let shard = socket.peer_addr().map_or(0, |a| a.port() % SHARDS);
        let mut session = Session { shard, ..Session::default() };
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match socket.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            let mut close = false;
            loop {
                match decoder.decode(&buf) {
                    Ok(Some((frame, used))) => {
                        buf.drain(..used);
                        for answer in answer(&frame, &mut session) {
                            close |= answer.stream == 0;
                            encode_frame(&answer, &mut out);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        encode_frame(&Response::Error(ErrorResponse::from(&e)).to_frame(e.stream()), &mut out);
                        match e.skip() {
                            Some(skip) => drop(buf.drain(..skip)),
                            None => close = true,
                        }
                    }
                }
                if close {
                    break;
                }
            }
            if socket.write_all(&out).is_err() || close {
                return;
            }
        }
    }

    fn rows_of(name: &str, values: Vec<Option<Value>>, paging_state: Option<Vec<u8>>) -> Response {
        Response::Result(QueryResult::Rows(Rows {
            columns: vec![ColumnSpec { name: name.into(), ty: ColumnType::Int }],
            rows: values.into_iter().map(|v| vec![v]).collect(),
            paging_state,
        }))
    }

    fn answer(frame: &Frame, session: &mut Session) -> Vec<Frame> {
        let request = match Request::from_frame(frame) {
            Ok(r) => r,
            Err(e) => return vec![Response::Error(ErrorResponse::from(&e)).to_frame(frame.stream)],
        };
        let response = match request {
            Request::Startup { version, .. } => match negotiate_version(version) {
                Ok(version) => Response::Ready { version, shard: session.shard, shards: SHARDS },
                Err(e) => Response::Error(e),
            },
            Request::AuthResponse { .. } => Response::error(ErrorCode::Protocol, "this fake asks for no credentials"),
            Request::Options => Response::Supported {
                versions: SUPPORTED_VERSIONS.to_vec(),
                max_frame_bytes: 1 << 24,
                server: "test".into(),
                shard: session.shard,
                shards: SHARDS,
                shard_aware_port: 19470,
            },
            Request::Topology { known_version: TOPOLOGY_VERSION } => {
                Response::Result(QueryResult::Topology(TopologyAnswer::Unchanged { version: TOPOLOGY_VERSION }))
            }
            Request::Topology { .. } => Response::Result(QueryResult::Topology(TopologyAnswer::Full(test_topology()))),
            Request::Query { text, params } => {
                let (verb, arg) = text.split_once(' ').unwrap_or((&text, ""));
                match verb {
                    "SELECT" => {
                        let start = params
                            .paging_state
                            .map(|s| u32::from_le_bytes(s.try_into().unwrap_or([0xff; 4])))
                            .unwrap_or(0);
                        let end = (start + params.page_size.unwrap_or(100)).min(NUMBERS);
                        let next = (end < NUMBERS).then(|| end.to_le_bytes().to_vec());
                        rows_of("n", (start..end).map(|n| Some(Value::Int(n as i32))).collect(), next)
                    }
                    "ECHO" | "HOLD" => {
                        let response = rows_of("i", vec![arg.parse().ok().map(Value::Int)], None);
                        if verb == "HOLD" {
                            session.held.push(response.to_frame(frame.stream));
                            return vec![];
                        }
                        response
                    }
                    "RELEASE" => {
                        let mut out = vec![Response::Result(QueryResult::Void).to_frame(frame.stream)];
                        out.extend(session.held.drain(..).rev());
                        return out;
                    }
                    "SLEEP" => {
                        std::thread::sleep(Duration::from_millis(arg.parse().unwrap_or(0)));
                        Response::Result(QueryResult::Void)
                    }
                    "INSERT" => Response::Result(QueryResult::Void),
                    "CREATE" => {
                        Response::Result(QueryResult::SchemaChange { change: "CREATED".into(), table: arg.into() })
                    }
                    "FORGET" => {
                        session.prepared.clear();
                        Response::Result(QueryResult::Void)
                    }
                    "UNAVAILABLE" => Response::error(
                        ErrorCode::Unavailable { consistency: params.consistency, required: 2, alive: 1 },
                        "not enough replicas",
                    ),
                    "KILL" => return vec![Response::error(ErrorCode::Protocol, "goodbye").to_frame(0)],
                    _ => Response::error(ErrorCode::Syntax, format!("cannot parse '{text}'")),
                }
            }
            Request::Prepare { text } => {
                let id = PreparedId::of_statement(&text);
                session.prepared.insert(id, text);
                let spec = ColumnSpec { name: "i".into(), ty: ColumnType::Int };
                Response::Result(QueryResult::Prepared(PreparedMeta {
                    id,
                    bind: vec![spec.clone()],
                    columns: vec![spec],
                    pk_indexes: vec![0],
                }))
            }
            Request::Execute { id, values, .. } => match session.prepared.contains_key(&id) {
                true => rows_of("i", values, None),
                false => Response::error(ErrorCode::Unprepared { id }, "unknown statement"),
            },
            Request::Batch(batch) => match batch
                .statements
                .iter()
                .position(|s| !matches!(s, BatchStatement::Query(text, _) if text.starts_with("INSERT")))
            {
                None => Response::Result(QueryResult::Void),
                Some(i) => Response::error(ErrorCode::Invalid, format!("batch statement {i} is not an INSERT")),
            },
            // The shards flushed, or an unknown table; anything else answers with a query result.
            Request::Admin(AdminRequest::Flush { table: None }) => {
                Response::Admin(AdminResult::Flushed(AdminDone { shards: 2, ..AdminDone::default() }))
            }
            Request::Admin(AdminRequest::Flush { table: Some(t) }) => {
                Response::error(ErrorCode::Invalid, format!("unknown table '{t}'"))
            }
            Request::Admin(_) => Response::Result(QueryResult::Void),
        };
        vec![response.to_frame(frame.stream)]
    }

    fn test_topology() -> Topology {
        let node = TopologyNode {
            host_id: 1,
            client: SocketAddr::from(([127, 0, 0, 1], 9470)),
            shard_aware: Some(SocketAddr::from(([127, 0, 0, 1], 19470))),
            alive: true,
            tokens: vec![vec![-10, 10], vec![0], vec![20]],
        };
        Topology { version: TOPOLOGY_VERSION, nodes: vec![node] }
    }

    fn int_rows(result: QueryResult) -> Vec<i32> {
        match result {
            QueryResult::Rows(rows) => rows
                .rows
                .into_iter()
                .map(|row| match row.as_slice() {
                    [Some(Value::Int(i))] => *i,
                    other => panic!("expected one int cell, got {other:?}"),
                })
                .collect(),
            other => panic!("expected rows, got {other:?}"),
        }
    }

    #[test]
    fn connect_negotiates_and_runs_statements() {
        let mut client = Client::connect(start_server()).unwrap();
        assert_eq!(client.version(), PROTOCOL_VERSION);
        let info = client.options().unwrap();
        assert_eq!(info.versions, SUPPORTED_VERSIONS.to_vec());
        assert_eq!(info.server, "test");
        assert_eq!((info.shard, info.shards, info.shard_aware_port), (client.shard(), SHARDS, 19470));
        assert_eq!(client.shards(), SHARDS);
        assert_eq!(
            client.query("CREATE t").unwrap(),
            QueryResult::SchemaChange { change: "CREATED".into(), table: "t".into() }
        );
        assert_eq!(client.query("INSERT x").unwrap(), QueryResult::Void);
        assert_eq!(int_rows(client.query("ECHO 42").unwrap()), vec![42]);
    }

    #[test]
    fn server_errors_surface_as_typed_errors_and_the_connection_goes_on() {
        let mut client = Client::connect(start_server()).unwrap();
        let err = client.query("SELEKT oops").unwrap_err();
        assert_eq!(err.server_code(), Some(&ErrorCode::Syntax));
        assert!(err.to_string().contains("cannot parse 'SELEKT oops'"), "{err}");

        let err = client.query_with("UNAVAILABLE", QueryParams::with_consistency(Consistency::Quorum)).unwrap_err();
        assert_eq!(
            err.server_code(),
            Some(&ErrorCode::Unavailable { consistency: Consistency::Quorum, required: 2, alive: 1 })
        );
        assert_eq!(int_rows(client.query("ECHO 1").unwrap()), vec![1]);
    }

    #[test]
    fn pipelined_requests_match_out_of_order_answers() {
        let mut client = Client::connect(start_server()).unwrap();
        let mut expected = HashMap::new();
        for i in 0..64 {
            let stream =
                client.send(&Request::Query { text: format!("HOLD {i}"), params: QueryParams::default() }).unwrap();
            expected.insert(stream, i);
        }
        let release = client.send(&Request::Query { text: "RELEASE".into(), params: QueryParams::default() }).unwrap();
        assert_eq!(client.in_flight(), 65);
        let mut order = Vec::new();
        for _ in 0..65 {
            let (stream, response) = client.recv().unwrap();
            if stream == release {
                assert_eq!(response, Response::Result(QueryResult::Void));
                continue;
            }
            let Response::Result(result) = response else { panic!("stream {stream}: {response:?}") };
            let i = expected.remove(&stream).expect("each stream is answered once");
            assert_eq!(int_rows(result), vec![i], "stream {stream}");
            order.push(i);
        }
        assert!(expected.is_empty());
        assert_eq!(order, (0..64).rev().collect::<Vec<_>>(), "the server answered in reverse");
        assert!(matches!(client.recv(), Err(ClientError::NothingInFlight)));
    }

    #[test]
    fn synchronous_calls_keep_pipelined_answers_for_recv() {
        let mut client = Client::connect(start_server()).unwrap();
        let held = client.send(&Request::Query { text: "HOLD 7".into(), params: QueryParams::default() }).unwrap();
        // RELEASE's answer comes first, then the held one: query() must keep that one for recv.
        assert_eq!(client.query("RELEASE").unwrap(), QueryResult::Void);
        assert_eq!(int_rows(client.query("ECHO 8").unwrap()), vec![8]);
        let (stream, response) = client.recv().unwrap();
        assert_eq!(stream, held);
        let Response::Result(result) = response else { panic!("{response:?}") };
        assert_eq!(int_rows(result), vec![7]);
    }

    #[test]
    fn paging_walks_every_row_once_in_order() {
        let mut client = Client::connect(start_server()).unwrap();
        let mut pages = client.query_paged("SELECT n FROM numbers", 7).unwrap();
        assert_eq!(pages.columns(), &[ColumnSpec { name: "n".into(), ty: ColumnType::Int }]);
        let mut seen = Vec::new();
        for row in pages.by_ref() {
            match row.unwrap().as_slice() {
                [Some(Value::Int(n))] => seen.push(*n),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pages.pages_fetched(), NUMBERS.div_ceil(7) as usize);
        assert_eq!(pages.paging_state(), None);
        assert_eq!(seen, (0..NUMBERS as i32).collect::<Vec<_>>());
    }

    #[test]
    fn prepared_statements_execute_and_are_prepared_again_when_forgotten() {
        let mut client = Client::connect(start_server()).unwrap();
        let prepared = client.prepare("SELECT i WHERE i = ?").unwrap();
        assert_eq!(prepared.id, PreparedId::of_statement("SELECT i WHERE i = ?"));
        assert_eq!(prepared.bind, vec![ColumnSpec { name: "i".into(), ty: ColumnType::Int }]);
        assert_eq!(prepared.pk_indexes, vec![0]);
        let run = |client: &mut Client, i| client.execute(&prepared, &[Some(Value::Int(i))], QueryParams::default());
        assert_eq!(int_rows(run(&mut client, 3).unwrap()), vec![3]);
        client.query("FORGET").unwrap();
        assert_eq!(int_rows(run(&mut client, 4).unwrap()), vec![4]);
    }

    #[test]
    fn batches_run_and_invalid_ones_are_typed_errors() {
        let mut client = Client::connect(start_server()).unwrap();
        let insert = |i: i32| BatchStatement::Query("INSERT INTO t (k) VALUES (?)".into(), vec![Some(Value::Int(i))]);
        let mut batch = BatchRequest {
            kind: BatchKind::Unlogged,
            statements: vec![insert(1), insert(2)],
            consistency: Consistency::Quorum,
            timestamp: Some(1),
        };
        assert_eq!(client.batch(batch.clone()).unwrap(), QueryResult::Void);
        batch.statements.push(BatchStatement::Query("SELECT n FROM numbers".into(), vec![]));
        let err = client.batch(batch).unwrap_err();
        assert_eq!(err.server_code(), Some(&ErrorCode::Invalid));
    }

    #[test]
    fn admin_commands_return_typed_results_and_errors() {
        let mut client = Client::connect(start_server()).unwrap();
        let done = client.admin(AdminRequest::Flush { table: None }).unwrap();
        assert_eq!(done, AdminResult::Flushed(AdminDone { shards: 2, ..AdminDone::default() }));
        let err = client.admin(AdminRequest::Flush { table: Some("nope".into()) }).unwrap_err();
        assert_eq!(err.server_code(), Some(&ErrorCode::Invalid));
        // A query result where an admin result belongs is the server's mistake, not a panic.
        let err = client.admin(AdminRequest::Status).unwrap_err();
        assert!(matches!(err, ClientError::Unexpected(_)), "{err:?}");
        assert_eq!(int_rows(client.query("ECHO 5").unwrap()), vec![5]);
    }

    #[test]
    fn a_timed_out_request_is_abandoned_and_its_late_answer_dropped() {
        let mut client = Client::connect(start_server()).unwrap();
        client.set_timeout(Some(Duration::from_millis(50))).unwrap();
        assert!(matches!(client.query("SLEEP 300"), Err(ClientError::Timeout)));
        client.set_timeout(Some(Duration::from_secs(10))).unwrap();
        // The sleeper's answer arrives first and is dropped; this query gets its own answer.
        assert_eq!(int_rows(client.query("ECHO 9").unwrap()), vec![9]);
        assert_eq!(client.in_flight(), 0);
    }

    #[test]
    fn a_connection_level_error_closes_the_client() {
        let mut client = Client::connect(start_server()).unwrap();
        let err = client.query("KILL").unwrap_err();
        assert_eq!(err.server_code(), Some(&ErrorCode::Protocol));
        assert!(matches!(client.query("ECHO 1"), Err(ClientError::Closed)));
    }

    #[test]
    fn in_flight_requests_are_bounded() {
        let mut client = Client::connect(start_server()).unwrap();
        let hold = Request::Query { text: "HOLD 0".into(), params: QueryParams::default() };
        for _ in 0..MAX_IN_FLIGHT {
            client.send(&hold).unwrap();
        }
        assert!(matches!(client.send(&hold), Err(ClientError::TooManyInFlight { limit: MAX_IN_FLIGHT })));
    }

    #[test]
    fn a_request_over_the_frame_limit_is_refused_before_sending() {
        let options = ClientOptions { max_frame_bytes: 4096, ..ClientOptions::default() };
        let mut client = Client::connect_with(start_server(), options).unwrap();
        let err = client.query(&format!("ECHO {}", "9".repeat(5000))).unwrap_err();
        assert!(matches!(err, ClientError::RequestTooLarge { limit: 4096, .. }), "{err:?}");
        assert_eq!(client.in_flight(), 0);
        assert_eq!(int_rows(client.query("ECHO 3").unwrap()), vec![3]);
    }

    #[test]
    fn topology_is_sent_whole_or_as_unchanged() {
        let mut client = Client::connect(start_server()).unwrap();
        assert_eq!(client.topology(0).unwrap(), TopologyAnswer::Full(test_topology()));
        let unchanged = client.topology(TOPOLOGY_VERSION).unwrap();
        assert_eq!(unchanged, TopologyAnswer::Unchanged { version: TOPOLOGY_VERSION });
        assert_eq!(unchanged.version(), TOPOLOGY_VERSION);
    }

    #[test]
    fn a_shard_aware_connection_is_served_by_the_shard_its_port_names() {
        let addr = start_server();
        for shard in 0..SHARDS {
            let client = Client::connect_to_shard(addr, shard, SHARDS, ClientOptions::default()).unwrap();
            assert_eq!((client.shard(), client.shards()), (shard, SHARDS));
            assert_eq!(client.local_addr().unwrap().port() % SHARDS, shard);
        }
        // Ports 4 modulo 6 are 1 modulo 3: the server's shard 1 answers a client that wanted 4.
        let err = Client::connect_to_shard(addr, 4, 6, ClientOptions::default()).err();
        assert!(matches!(err, Some(ClientError::ShardMismatch { asked: 4, served: 1 })), "{err:?}");
        let err = Client::connect_to_shard(addr, 3, 3, ClientOptions::default()).err();
        assert!(matches!(err, Some(ClientError::InvalidShard { shard: 3, shards: 3 })), "{err:?}");
    }

    #[test]
    fn shard_ports_cover_the_range_once_from_the_start() {
        let ports: Vec<u16> = shard_ports(100..=120, 2, 4, 111).collect();
        assert_eq!(ports, [114, 118, 102, 106, 110]);
        assert!(ports.iter().all(|p| p % 4 == 2));
        assert_eq!(shard_ports(100..=120, 2, 4, 100).next(), Some(102));
        assert_eq!(shard_ports(100..=120, 2, 4, 119).collect::<Vec<_>>(), [102, 106, 110, 114, 118]);
        assert_eq!(shard_ports(100..=101, 3, 4, 100).count(), 0, "no port of the range fits");
        assert_eq!(
            shard_ports(65530..=65535, 0, 1, 65535).collect::<Vec<_>>(),
            [65535, 65530, 65531, 65532, 65533, 65534]
        );
        let range = local_port_range();
        assert!(range.start() <= range.end() && *range.start() > 0, "{range:?}");
    }

    #[test]
    fn connecting_to_a_closed_port_is_an_io_error() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        // The listener is dropped: nothing listens there any more.
        assert!(matches!(Client::connect(port), Err(ClientError::Io(_))));
    }

    #[test]
    fn a_server_speaking_garbage_is_a_frame_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut socket, _)) = listener.accept() {
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        assert!(matches!(Client::connect(addr), Err(ClientError::Frame(FrameError::BadMagic { .. }))));
    }
}

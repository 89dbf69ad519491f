//! The peer transport (glommio edge): TCP connections between nodes carrying peer frames
//! (`wire::frame::PeerFrame`). It owns connections, the HELLO handshake, stream ids, pooling,
//! bounds, reconnects with backoff and timeouts. Frames carry raw (opcode, body) pairs
//! ([`Transport::call_raw`], [`FrameHandler`]); the typed messages and the serving side's
//! table of handlers per opcode are `cluster::verbs`, which [`Transport::call`] and
//! `verbs::PeerHandlers` plug in. Layout: docs/PROTOCOL.md, "Peer protocol".
//!
//! Calling side: one connection per (peer, shard of that peer), opened by the first call,
//! carrying up to `max_in_flight_per_peer` requests matched to answers by stream id. Its HELLO
//! names the shard, and the peer serves the connection on that shard: a replica write sent to
//! the shard owning its token crosses no core there. Node-wide requests (gossip, schema,
//! repair, hints) go to shard 0, the coordinator shard. A failed connection
//! attempt fails every waiting call and starts an exponential backoff during which calls fail
//! at once with `Unreachable` (each wait up to a tenth shorter at random: no synchronized
//! retries); a connection lost after it was up fails its waiting calls with
//! `Closed`, and the next call reconnects. Serving side ([`serve`]): the coordinator shard
//! accepts, reads the HELLO and hands a connection meant for another shard to it
//! ([`HandedPeer`], served there by [`serve_handed`]); each request runs as its own task
//! through [`FrameHandler::handle`]; answers go out in batches, in completion order. With
//! internode TLS the HELLO is inside TLS and a TLS session cannot move between threads, so the
//! caller also names the shard in its TLS server name ([`shard_server_name`]) and the
//! coordinator shard hands the socket over by that name, read from the ClientHello before the
//! handshake; the shard named does the handshake and reads the HELLO.

mod hello;
mod streams;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use shards::signal::Signal;
use wire::frame::{FrameDecoder, FrameError, PeerFrame, DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES, PEER_OPCODES};

pub use hello::{
    codes, Hello, RemoteError, DEFAULT_CLUSTER_NAME, MAX_CLUSTER_NAME_BYTES, PEER_PROTOCOL_VERSION,
    SUPPORTED_PEER_VERSIONS,
};
pub use streams::{MAX_ABANDONED_STREAMS, MAX_STREAMS_IN_FLIGHT};

use super::messages::MessageError;
use super::opcodes::{PEER_ERROR, PEER_HELLO, PEER_HELLO_OK};
pub use super::verbs::{PeerAnswer, PeerHandler, PeerHandlers, PeerRequest};
use crate::frame_io::{accept_loop, incoming, panic_message, write_loop, Outbox, ReadBuf, Stopping, MAX_OUTBOX_BYTES};
use crate::tls::sni::SniError;
use crate::tls::{Opening, PeerTls, Stream};
use streams::{Completion, Streams};

/// A peer's answer on its way.
pub type PeerCall<'a> = Pin<Box<dyn Future<Output = Result<PeerAnswer, PeerError>> + 'a>>;

/// How the proxy reaches other nodes: the peer transport in a server, an in-process stand-in
/// in tests. A PEER_ERROR answer is `Err(Remote)`, an answer of another kind than the request
/// expects `Err(UnexpectedAnswer)`: an `Ok` answer is always the request's kind.
pub trait Peers {
    /// Sends `request` to the shard `shard` of the node at `peer` (the shard owning the data
    /// the request is about, so that it crosses no core there).
    fn call_shard(&self, peer: SocketAddr, shard: u16, request: PeerRequest, timeout: Duration) -> PeerCall<'_>;

    /// Sends `request` to the coordinator shard of the node at `peer`: node-wide requests,
    /// and data whose owning shard the caller does not know.
    fn call(&self, peer: SocketAddr, request: PeerRequest, timeout: Duration) -> PeerCall<'_> {
        self.call_shard(peer, COORDINATOR_SHARD, request, timeout)
    }
}

impl Peers for Transport {
    fn call_shard(&self, peer: SocketAddr, shard: u16, request: PeerRequest, timeout: Duration) -> PeerCall<'_> {
        Box::pin(self.call_on(peer, shard, request, timeout))
    }
}

/// The shard of a node that owns its node-wide duties (gossip, schema, hints, repair).
pub const COORDINATOR_SHARD: u16 = 0;

/// The DNS domain of the TLS server names callers ask for: `shard-<N>.peer.enigmadb` names
/// the callee's shard N ([`shard_server_name`]). Not a real domain, and not in any certificate:
/// peer certificates are checked against the cluster CA only (`tls::PeerTls`).
pub const PEER_SERVER_NAME_DOMAIN: &str = "peer.enigmadb";

/// The TLS server name a caller connects with to be served by the shard `shard` of a peer.
pub fn shard_server_name(shard: u16) -> String {
    format!("shard-{shard}.{PEER_SERVER_NAME_DOMAIN}")
}

/// The shard a TLS server name names (see [`shard_server_name`]; any case), or `None` for any
/// other name.
pub fn shard_named(name: &str) -> Option<u16> {
    let name = name.to_ascii_lowercase();
    let digits = name.strip_prefix("shard-")?.strip_suffix(PEER_SERVER_NAME_DOMAIN)?.strip_suffix('.')?;
    if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Default bound on requests waiting for answers from one peer.
pub const DEFAULT_MAX_IN_FLIGHT_PER_PEER: usize = 1024;

/// Default bound on encoded request bytes queued for one peer and not yet written.
pub const DEFAULT_MAX_QUEUED_BYTES_PER_PEER: usize = 8 << 20;

/// Default bound on connecting to a peer and on its HELLO answer (and, serving, on receiving a
/// HELLO after accepting).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Wait after the first failed connection attempt before the next; doubled after each further
/// failure up to [`BACKOFF_MAX`], and reset once a connection is up.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest wait between connection attempts to a peer that stays unreachable.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Each backoff wait is up to this fraction shorter, at random, so that the nodes that lost
/// the same peer do not all retry it in the same instant.
pub const BACKOFF_JITTER: f64 = 0.1;

/// Default bound on peer connections a node accepts at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Default bound on requests one accepted connection serves at once; the reader stops reading
/// while that many run.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: usize = 1024;

/// (peer, shard) pairs a transport keeps state for; those without a connection are forgotten
/// first.
pub const MAX_LINKS: usize = 4096;

/// Settings of both sides of the peer protocol.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's peer address, sent in HELLO: the `from` a peer's handler sees.
    pub local_addr: SocketAddr,
    /// This node's cluster name, sent in HELLO; connections from other clusters are refused.
    pub cluster_name: String,
    /// Largest frame (header + body) sent or accepted; at least `wire::frame::MIN_MAX_FRAME_BYTES`.
    pub max_frame_bytes: usize,
    /// Requests waiting for answers from one peer; beyond it `call` fails with `Overloaded`.
    /// At most [`MAX_STREAMS_IN_FLIGHT`].
    pub max_in_flight_per_peer: usize,
    /// Request bytes queued for one peer and not yet written; beyond it `Overloaded`.
    pub max_queued_bytes_per_peer: usize,
    pub connect_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Accepted connections served at once; more are answered PEER_ERROR `OVERLOADED`.
    pub max_connections: usize,
    pub max_requests_per_connection: usize,
    /// Mutual TLS on every connection, called and accepted; `None`: plaintext. A TLS node
    /// refuses plaintext peers and a plaintext node TLS ones, each with a log line.
    pub tls: Option<PeerTls>,
}

impl TransportConfig {
    /// The defaults, for a node whose peer listener is at `local_addr`.
    pub fn new(local_addr: SocketAddr) -> TransportConfig {
        TransportConfig {
            local_addr,
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_in_flight_per_peer: DEFAULT_MAX_IN_FLIGHT_PER_PEER,
            max_queued_bytes_per_peer: DEFAULT_MAX_QUEUED_BYTES_PER_PEER,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_requests_per_connection: DEFAULT_MAX_REQUESTS_PER_CONNECTION,
            tls: None,
        }
    }
}

/// Why a call got no answer. Cloned to every call waiting on a connection that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// No connection: the attempt failed, or failed recently and the transport is backing off.
    #[error("peer {peer} is unreachable: {reason}")]
    Unreachable { peer: SocketAddr, reason: String },
    #[error("peer {peer} did not answer within {timeout:?}")]
    Timeout { peer: SocketAddr, timeout: Duration },
    /// A bound of this node was reached (requests in flight, queued bytes, peers), or the peer
    /// refused the connection because it has too many.
    #[error("peer {peer}: overloaded: {reason}")]
    Overloaded { peer: SocketAddr, reason: String },
    /// The peer sent bytes that are not valid peer frames or messages; the connection is closed.
    #[error("peer {peer} broke the peer protocol: {reason}")]
    Protocol { peer: SocketAddr, reason: String },
    /// The peer refused the HELLO (no common peer protocol version).
    #[error("peer {peer} is incompatible: {reason}")]
    Incompatible { peer: SocketAddr, reason: String },
    /// The connection ended while the call waited; the request may or may not have run.
    #[error("connection to peer {peer} closed before the answer: {reason}")]
    Closed { peer: SocketAddr, reason: String },
    /// The peer answered with PEER_ERROR.
    #[error("peer {peer} answered error {code:#06x}: {message}")]
    Remote { peer: SocketAddr, code: u16, message: String },
    #[error("request of {len} bytes to peer {peer} exceeds the frame limit of {limit} bytes")]
    TooLarge { peer: SocketAddr, len: usize, limit: usize },
    /// `call` was given an opcode outside `PEER_OPCODES` or one the transport reserves.
    #[error("opcode {opcode:#04x} is not a peer request (call to {peer})")]
    NotARequest { peer: SocketAddr, opcode: u8 },
    /// The peer answered with another kind of answer than the request expects.
    #[error("{peer}: answered {request} with opcode {answer:#04x}")]
    UnexpectedAnswer { peer: SocketAddr, request: &'static str, answer: u8 },
    /// The answer's body does not decode.
    #[error("{peer}: {error}")]
    BadAnswer { peer: SocketAddr, error: MessageError },
}

/// A peer opcode a caller may send: the handshake and error codes belong to the transport.
fn is_request(opcode: u8) -> bool {
    PEER_OPCODES.contains(&opcode) && !matches!(opcode, PEER_ERROR | PEER_HELLO | PEER_HELLO_OK)
}

/// What serves request frames arriving from peers (`verbs::PeerHandlers` in a node). `from` is
/// the caller's peer address (from its HELLO). The answer is (opcode, body); an opcode outside
/// `PEER_OPCODES` or an answer over the frame limit is replaced by a PEER_ERROR.
pub trait FrameHandler {
    fn handle(&self, from: SocketAddr, opcode: u8, body: Vec<u8>) -> Pin<Box<dyn Future<Output = (u8, Vec<u8>)> + '_>>;
}

/// What a transport knows about one peer (for tests, logs and admin output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStats {
    pub connect_attempts: u64,
    pub connected: bool,
    pub in_flight: usize,
    /// Requests given up (timed out) whose answers have not arrived.
    pub abandoned: usize,
}

/// The calling side: pooled connections to peers' shards. `!Send`: it lives on one executor
/// (each shard has its own).
pub struct Transport {
    config: TransportConfig,
    links: RefCell<HashMap<(SocketAddr, u16), Rc<Link>>>,
}

type Answer = Result<(u8, Vec<u8>), PeerError>;

/// The transport's state for one shard of one peer.
struct Link {
    peer: SocketAddr,
    shard: u16,
    /// The connection calls use (being opened, or up); `None` until the next call opens one.
    conn: RefCell<Option<Rc<Conn>>>,
    /// After a failed attempt: no new attempt before this instant, and why it failed.
    backing_off: RefCell<Option<(Instant, String)>>,
    /// Wait after the next failed attempt.
    next_backoff: Cell<Duration>,
    connect_attempts: Cell<u64>,
}

/// One connection to a peer, from the first call that needed it until it ends.
struct Conn {
    outbox: Rc<Outbox>,
    streams: RefCell<Streams<flume::Sender<Answer>>>,
    /// The handshake is done: failures from now on are `Closed`, not `Unreachable`.
    up: Cell<bool>,
    /// Set (with the reason) to make the reader end the connection.
    closing: RefCell<Option<String>>,
    signal: Signal,
}

impl Transport {
    pub fn new(config: TransportConfig) -> Rc<Transport> {
        Rc::new(Transport { config, links: RefCell::new(HashMap::new()) })
    }

    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Sends `request` to the shard `shard` of `peer` and waits for its answer, at most
    /// `timeout` in all (connecting included); see [`Peers`] for the errors.
    pub async fn call_on(
        &self,
        peer: SocketAddr,
        shard: u16,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerAnswer, PeerError> {
        let (opcode, body) = request.encode();
        drop(request);
        let answer = self.call_raw(peer, shard, opcode, body, timeout).await?;
        super::verbs::answer_from_frame(peer, opcode, answer)
    }

    /// Sends one request frame to the shard `shard` of `peer` and waits for the frame
    /// answering it, at most `timeout` in all (connecting included). A PEER_ERROR answer is
    /// `Err(Remote)`.
    pub async fn call_raw(
        &self,
        peer: SocketAddr,
        shard: u16,
        opcode: u8,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<(u8, Vec<u8>), PeerError> {
        if !is_request(opcode) {
            return Err(PeerError::NotARequest { peer, opcode });
        }
        let len = HEADER_BYTES + body.len();
        if len > self.config.max_frame_bytes {
            return Err(PeerError::TooLarge { peer, len, limit: self.config.max_frame_bytes });
        }
        let conn = self.connection(peer, shard)?;
        if conn.outbox.len() + len > self.config.max_queued_bytes_per_peer {
            let reason = format!(
                "{} request bytes are queued (limit {})",
                conn.outbox.len(),
                self.config.max_queued_bytes_per_peer
            );
            return Err(PeerError::Overloaded { peer, reason });
        }
        let (tx, rx) = flume::bounded(1);
        let Some(stream) = conn.streams.borrow_mut().insert(tx) else {
            let reason = format!(
                "{} requests are in flight (limit {})",
                conn.streams.borrow().waiting(),
                self.config.max_in_flight_per_peer
            );
            return Err(PeerError::Overloaded { peer, reason });
        };
        conn.outbox.push_peer(&PeerFrame { opcode, stream, body });
        // From here on, a call that ends without its answer (timeout, or the caller dropping
        // this future) gives its stream up.
        let _waiting = Waiting { conn: &conn, stream };
        let answer = futures_lite::future::or(async { Some(rx.recv_async().await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match answer.or_else(|| rx.try_recv().ok().map(Ok)) {
            Some(Ok(answer)) => answer,
            // Every waiter is answered before its sender is dropped (`Conn::fail_all`).
            Some(Err(_)) => Err(PeerError::Closed { peer, reason: "the connection task ended".into() }),
            None => Err(PeerError::Timeout { peer, timeout }),
        }
    }

    /// What this transport knows about its connection to the shard `shard` of `peer`; `None`
    /// if it never called it.
    pub fn peer_stats(&self, peer: SocketAddr, shard: u16) -> Option<PeerStats> {
        let links = self.links.borrow();
        let link = links.get(&(peer, shard))?;
        let conn = link.conn.borrow();
        Some(PeerStats {
            connect_attempts: link.connect_attempts.get(),
            connected: conn.as_ref().is_some_and(|c| c.up.get()),
            in_flight: conn.as_ref().map_or(0, |c| c.streams.borrow().waiting()),
            abandoned: conn.as_ref().map_or(0, |c| c.streams.borrow().abandoned()),
        })
    }

    /// Forgets the backoff after failed connection attempts to `peer` (every shard of it), so
    /// that the next call connects at once: called when gossip hears the peer again (it
    /// restarted, or the failure detector sees it up). Without it, calls such as a repair's
    /// right after a peer restart would fail `Unreachable` for up to `backoff_max` though the
    /// peer is up.
    pub fn peer_is_back(&self, peer: SocketAddr) {
        for ((addr, _), link) in self.links.borrow().iter() {
            if *addr == peer {
                link.backing_off.borrow_mut().take();
                link.next_backoff.set(self.config.backoff_min);
            }
        }
    }

    /// The connection a call to the shard `shard` of `peer` uses: the current one, or a new
    /// one being opened; `Unreachable` while backing off after a failed attempt.
    fn connection(&self, peer: SocketAddr, shard: u16) -> Result<Rc<Conn>, PeerError> {
        let link = self.link(peer, shard)?;
        // A connection closing (too many timeouts) is replaced at once; it fails its own calls.
        if let Some(conn) = link.conn.borrow().as_ref().filter(|c| c.closing.borrow().is_none()) {
            return Ok(conn.clone());
        }
        if let Some((until, reason)) = link.backing_off.borrow().as_ref() {
            let now = Instant::now();
            if now < *until {
                let reason = format!("{reason} (next attempt in {:?})", *until - now);
                return Err(PeerError::Unreachable { peer, reason });
            }
        }
        let conn = Rc::new(Conn {
            outbox: Rc::new(Outbox::default()),
            streams: RefCell::new(Streams::new(self.config.max_in_flight_per_peer)),
            up: Cell::new(false),
            closing: RefCell::new(None),
            signal: Signal::default(),
        });
        *link.conn.borrow_mut() = Some(conn.clone());
        link.connect_attempts.set(link.connect_attempts.get() + 1);
        glommio::spawn_local(run_connection(self.config.clone(), link, conn.clone())).detach();
        Ok(conn)
    }

    fn link(&self, peer: SocketAddr, shard: u16) -> Result<Rc<Link>, PeerError> {
        let mut links = self.links.borrow_mut();
        if let Some(link) = links.get(&(peer, shard)) {
            return Ok(link.clone());
        }
        if links.len() >= MAX_LINKS {
            links.retain(|_, link| link.conn.borrow().is_some());
            if links.len() >= MAX_LINKS {
                let reason = format!("connected to {MAX_LINKS} peer shards already");
                return Err(PeerError::Overloaded { peer, reason });
            }
        }
        let link = Rc::new(Link {
            peer,
            shard,
            conn: RefCell::new(None),
            backing_off: RefCell::new(None),
            next_backoff: Cell::new(self.config.backoff_min),
            connect_attempts: Cell::new(0),
        });
        links.insert((peer, shard), link.clone());
        Ok(link)
    }
}

/// A call's stream, abandoned when the call ends: a no-op if the answer (or the connection's
/// end) already removed it, else its id stays reserved until the late answer arrives.
struct Waiting<'a> {
    conn: &'a Conn,
    stream: u16,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.conn.streams.borrow_mut().abandon(self.stream) {
            self.conn.close(format!("more than {MAX_ABANDONED_STREAMS} requests timed out without an answer"));
        }
    }
}

impl Drop for Transport {
    /// Ends every connection: calls still waiting get `Closed`.
    fn drop(&mut self) {
        for link in self.links.get_mut().values() {
            if let Some(conn) = link.conn.borrow().as_ref() {
                conn.close("the transport was dropped".into());
            }
        }
    }
}

impl Conn {
    /// Asks the connection's reader to end the connection.
    fn close(&self, reason: String) {
        self.closing.borrow_mut().get_or_insert(reason);
        self.signal.notify_all();
    }

    /// Answers every waiting call with `error` and frees every stream id.
    fn fail_all(&self, error: &PeerError) {
        for waiter in self.streams.borrow_mut().take_all() {
            let _ = waiter.try_send(Err(error.clone()));
        }
    }

    /// Hands one answer frame to its call. `Err` says why the connection must end.
    fn deliver(&self, peer: SocketAddr, frame: PeerFrame) -> Result<(), PeerError> {
        if frame.stream == 0 {
            // Connection-level: the peer could not read our frames (or is stopping) and closes.
            return Err(match (frame.opcode, RemoteError::decode(&frame.body)) {
                (PEER_ERROR, Ok(e)) => PeerError::Remote { peer, code: e.code, message: e.message },
                _ => PeerError::Protocol { peer, reason: format!("opcode {:#04x} on stream 0", frame.opcode) },
            });
        }
        let waiter = match self.streams.borrow_mut().complete(frame.stream) {
            Completion::Waiting(waiter) => waiter,
            Completion::Abandoned => return Ok(()),
            Completion::Unknown => {
                return Err(PeerError::Protocol {
                    peer,
                    reason: format!("answer on stream {} with no request", frame.stream),
                })
            }
        };
        let answer = match frame.opcode {
            PEER_ERROR => match RemoteError::decode(&frame.body) {
                Ok(e) => Err(PeerError::Remote { peer, code: e.code, message: e.message }),
                Err(e) => {
                    let error = PeerError::Protocol { peer, reason: format!("malformed PEER_ERROR: {e}") };
                    let _ = waiter.try_send(Err(error.clone()));
                    return Err(error);
                }
            },
            opcode => Ok((opcode, frame.body)),
        };
        // The receiver may be gone (the call was dropped); nobody else wants the answer.
        let _ = waiter.try_send(answer);
        Ok(())
    }
}

/// Opens `conn`, then reads its answers until it ends; fails every call still waiting.
async fn run_connection(config: TransportConfig, link: Rc<Link>, conn: Rc<Conn>) {
    let peer = link.peer;
    let error = match greet(&config, peer, link.shard).await {
        Err(error) => {
            let full = link.next_backoff.get();
            link.next_backoff.set((full * 2).min(config.backoff_max));
            let backoff = full.mul_f64(1.0 - rand::Rng::gen_range(&mut rand::thread_rng(), 0.0..BACKOFF_JITTER));
            *link.backing_off.borrow_mut() = Some((Instant::now() + backoff, error.to_string()));
            tracing::debug!(%peer, %error, ?backoff, "peer connection attempt failed");
            error
        }
        Ok((stream, mut read_buf)) => {
            link.next_backoff.set(config.backoff_min);
            *link.backing_off.borrow_mut() = None;
            conn.up.set(true);
            let (mut reader, writer) = futures_lite::io::split(stream);
            let writer = glommio::spawn_local(write_loop(writer, conn.outbox.clone()));
            let mut decoder = FrameDecoder::new(config.max_frame_bytes);
            let error = read_answers(peer, &conn, &mut reader, &mut decoder, &mut read_buf).await;
            tracing::debug!(%peer, %error, "peer connection closed");
            conn.outbox.discard();
            writer.await;
            match error {
                PeerError::Closed { .. } | PeerError::Protocol { .. } | PeerError::Remote { .. } => error,
                other => PeerError::Closed { peer, reason: other.to_string() },
            }
        }
    };
    // A newer connection may already have replaced this one (after too many timeouts).
    let mut current = link.conn.borrow_mut();
    if current.as_ref().is_some_and(|c| Rc::ptr_eq(c, &conn)) {
        *current = None;
    }
    drop(current);
    conn.outbox.discard();
    conn.fail_all(&error);
}

/// Connects to `peer` and exchanges HELLO / HELLO_OK, within the connect timeout. Returns the
/// stream and whatever bytes arrived after HELLO_OK.
async fn greet(config: &TransportConfig, peer: SocketAddr, shard: u16) -> Result<(Stream, ReadBuf), PeerError> {
    let unreachable = |reason: String| PeerError::Unreachable { peer, reason };
    let attempt = async {
        let stream = TcpStream::connect(peer).await.map_err(|e| unreachable(format!("connecting: {e}")))?;
        let _ = stream.set_nodelay(true);
        let mut stream = match &config.tls {
            None => Stream::Plain(stream),
            // The server name steers the connection to the shard before the handshake.
            Some(tls) => tls.connect(&shard_server_name(shard), stream).await.map_err(|e| PeerError::Incompatible {
                peer,
                reason: format!(
                    "internode TLS handshake failed: {e} (does the peer have internode TLS with this cluster's CA?)"
                ),
            })?,
        };
        let hello = Hello::new(config.local_addr, &config.cluster_name, shard);
        let mut bytes = Vec::new();
        wire::frame::encode_peer_frame(&PeerFrame { opcode: PEER_HELLO, stream: 0, body: hello.encode() }, &mut bytes);
        stream.write_all(&bytes).await.map_err(|e| unreachable(format!("sending HELLO: {e}")))?;
        let mut read_buf = ReadBuf::default();
        let frame = read_frame(&mut stream, &mut FrameDecoder::new(config.max_frame_bytes), &mut read_buf)
            .await
            .map_err(|e| PeerError::Protocol { peer, reason: e.to_string() })?
            .ok_or_else(|| match config.tls {
                None => unreachable("closed before answering HELLO".into()),
                // Under TLS 1.3 the peer checks this node's certificate after the handshake
                // looked done here: a refusal shows as the connection closing.
                Some(_) => PeerError::Incompatible {
                    peer,
                    reason: "closed before answering HELLO: did it refuse this node's certificate (another CA)?".into(),
                },
            })?;
        match (frame.opcode, frame.stream) {
            (PEER_HELLO_OK, 0) => match hello::decode_hello_ok(&frame.body) {
                Ok(version) if SUPPORTED_PEER_VERSIONS.contains(&version) => Ok((stream, read_buf)),
                Ok(version) => Err(PeerError::Incompatible {
                    peer,
                    reason: format!(
                        "it chose peer protocol version {version}; this node speaks {SUPPORTED_PEER_VERSIONS:?}"
                    ),
                }),
                Err(e) => Err(PeerError::Protocol { peer, reason: format!("malformed HELLO_OK: {e}") }),
            },
            (PEER_ERROR, 0) => match RemoteError::decode(&frame.body) {
                Ok(e) if [codes::VERSION, codes::CLUSTER, codes::TLS].contains(&e.code) => {
                    Err(PeerError::Incompatible { peer, reason: e.message })
                }
                Ok(e) if e.code == codes::OVERLOADED => Err(PeerError::Overloaded { peer, reason: e.message }),
                Ok(e) => Err(PeerError::Remote { peer, code: e.code, message: e.message }),
                Err(e) => Err(PeerError::Protocol { peer, reason: format!("malformed PEER_ERROR: {e}") }),
            },
            (opcode, stream) => Err(PeerError::Protocol {
                peer,
                reason: format!("answered HELLO with opcode {opcode:#04x} on stream {stream}"),
            }),
        }
    };
    let timeout = config.connect_timeout;
    futures_lite::future::or(attempt, async {
        glommio::timer::sleep(timeout).await;
        Err(unreachable(format!("no connection and HELLO answer within {timeout:?}")))
    })
    .await
}

/// Reads one whole frame: `Ok(None)` if the other side closed first, `Err` (why) on bytes that
/// are not a frame.
async fn read_frame(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    decoder: &mut FrameDecoder,
    read_buf: &mut ReadBuf,
) -> Result<Option<PeerFrame>, FrameError> {
    loop {
        match decoder.decode_peer(read_buf.pending()) {
            Ok(Some((frame, used))) => {
                read_buf.consume(used);
                return Ok(Some(frame));
            }
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        if !read_buf.fill(reader).await {
            return Ok(None);
        }
    }
}

/// Delivers answers until the connection ends; returns why it ended.
async fn read_answers(
    peer: SocketAddr,
    conn: &Conn,
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    decoder: &mut FrameDecoder,
    read_buf: &mut ReadBuf,
) -> PeerError {
    let closed = |reason: String| PeerError::Closed { peer, reason };
    loop {
        let next = async { Some(read_frame(reader, decoder, read_buf).await) };
        let ending = async {
            let outbox = &conn.outbox;
            futures_lite::future::or(outbox.wait_broken(), conn.signal.wait_until(|| conn.closing.borrow().is_some()))
                .await;
            None
        };
        match futures_lite::future::or(next, ending).await {
            Some(Ok(Some(frame))) => {
                if let Err(error) = conn.deliver(peer, frame) {
                    return error;
                }
            }
            Some(Ok(None)) => return closed("closed by the peer".into()),
            // Any bad frame loses an answer some call waits for: the byte stream is not trusted.
            Some(Err(e)) => return PeerError::Protocol { peer, reason: e.to_string() },
            None => {
                let reason = conn.closing.borrow().clone().unwrap_or_else(|| "writing to the peer failed".into());
                return closed(reason);
            }
        }
    }
}

/// A peer connection the coordinator shard accepted for another shard, on its way there: the
/// socket, and what its HELLO said (plaintext) or the shard its TLS server name named.
pub struct HandedPeer {
    socket: OwnedFd,
    kind: Handed,
}

enum Handed {
    /// Plaintext, its HELLO read by the accepting shard.
    Greeted {
        from: SocketAddr,
        version: u8,
        /// Bytes that arrived after the HELLO (none from a caller that waits for HELLO_OK).
        pending: Vec<u8>,
    },
    /// TLS, handed over before the handshake: its ClientHello's server name named `shard` (the
    /// shard receiving it). The shard receiving it does the handshake and reads the HELLO.
    Tls { shard: u16 },
}

impl HandedPeer {
    /// The socket as a stream of the calling executor, and what came with it.
    fn into_parts(self) -> (TcpStream, Handed) {
        // SAFETY: the descriptor is an open TCP socket this value owns, and ownership passes to
        // the stream.
        let stream = unsafe { TcpStream::from_raw_fd(self.socket.into_raw_fd()) };
        (stream, self.kind)
    }
}

/// A descriptor of `stream`'s socket of its own, to hand to another shard (`stream` closes
/// its own when dropped; the socket stays open).
fn duplicate(stream: &TcpStream) -> std::io::Result<OwnedFd> {
    // SAFETY: `stream` owns the descriptor and outlives this borrow.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned()
}

/// Where the accepting shard sends the connections meant for the others: indexed by shard,
/// `None` for the accepting shard itself (and for every shard on a one-shard node).
pub type PeerDoors = Vec<Option<flume::Sender<HandedPeer>>>;

/// Connections on their way to one shard; the accepting shard waits while that many are.
pub const HANDED_PEER_QUEUE: usize = 64;

/// Accepts peer connections on `listener` until `stop` resolves: serves those whose HELLO asks
/// for this shard (or a shard the node does not have) through `handler`, and hands the others
/// to their shard through `doors`. Then stops reading, lets the requests in progress answer,
/// and returns; dropping `doors` then ends the other shards' [`serve_handed`].
pub async fn serve(
    listener: TcpListener,
    handler: Rc<dyn FrameHandler>,
    config: &TransportConfig,
    doors: PeerDoors,
    stop: impl Future<Output = ()>,
) {
    let limit = config.max_connections;
    let doors = Rc::new(doors);
    accept_loop(
        incoming(listener),
        limit,
        stop,
        |stream, stopping| accept_connection(stream, handler.clone(), config.clone(), doors.clone(), stopping),
        |stream| {
            refuse(stream, RemoteError::new(codes::OVERLOADED, format!("too many peer connections (limit {limit})")))
        },
    )
    .await
}

/// Serves the peer connections the accepting shard hands this shard, through `handler`, until
/// the accepting shard stops handing them; then lets the requests in progress answer.
pub async fn serve_handed(
    handed: flume::Receiver<HandedPeer>,
    handler: Rc<dyn FrameHandler>,
    config: &TransportConfig,
) {
    use futures_lite::StreamExt;
    let limit = config.max_connections;
    accept_loop(
        handed.into_stream().map(Ok),
        limit,
        std::future::pending(),
        |handed, stopping| {
            let (handler, config) = (handler.clone(), config.clone());
            async move {
                match handed.into_parts() {
                    (stream, Handed::Greeted { from, version, pending }) => {
                        let read_buf = ReadBuf::from_bytes(pending);
                        serve_connection(Stream::Plain(stream), read_buf, from, version, handler, config, stopping)
                            .await
                    }
                    (stream, Handed::Tls { shard }) => {
                        let caller = stream.peer_addr().ok();
                        open_and_serve(stream, Opening::Tls, caller, Some(shard), handler, config, &[], stopping).await
                    }
                }
            }
        },
        |handed| async move {
            match handed.into_parts() {
                (stream, Handed::Greeted { .. }) => {
                    let refusal =
                        RemoteError::new(codes::OVERLOADED, format!("too many peer connections (limit {limit})"));
                    refuse(Stream::Plain(stream), refusal).await
                }
                // Before its handshake a frame would be garbage to the caller: it sees the close.
                (stream, Handed::Tls { .. }) => {
                    let caller = stream.peer_addr().ok();
                    tracing::warn!(?caller, "closing a TLS peer connection: too many peer connections (limit {limit})");
                }
            }
        },
    )
    .await
}

fn error_frame(stream: u16, error: &RemoteError) -> PeerFrame {
    PeerFrame { opcode: PEER_ERROR, stream, body: error.encode() }
}

async fn refuse(mut stream: impl futures_lite::AsyncWrite + Unpin, error: RemoteError) {
    let mut bytes = Vec::new();
    wire::frame::encode_peer_frame(&error_frame(0, &error), &mut bytes);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.close().await;
}

/// One accepted connection. With internode TLS, its ClientHello's server name first: naming
/// another shard of this node ([`shard_named`]), the socket is handed to that shard before
/// the handshake (a TLS session cannot move between threads); no name, another name or a shard
/// the node does not have: served here. Then [`open_and_serve`].
async fn accept_connection(
    stream: TcpStream,
    handler: Rc<dyn FrameHandler>,
    config: TransportConfig,
    doors: Rc<PeerDoors>,
    stopping: Rc<Stopping>,
) {
    let caller = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let opening = crate::tls::opening(&stream, config.connect_timeout).await;
    let mut stream = stream;
    let mut named = None;
    if let (Opening::Tls, Some(_)) = (opening, &config.tls) {
        let shard = match crate::tls::peek_server_name(&stream, config.connect_timeout).await {
            Ok(name) => name.as_deref().and_then(shard_named),
            Err(error @ (SniError::Silent | SniError::Closed)) => {
                tracing::warn!(?caller, %error, "refusing a peer connection: internode TLS handshake failed");
                return;
            }
            // The handshake refuses it, with the alert rustls chooses.
            Err(error) => {
                tracing::debug!(?caller, %error, "serving a TLS peer connection where it was accepted");
                None
            }
        };
        // A shard the node does not have is no shard: served here, as an unnamed one.
        named = shard.filter(|&shard| usize::from(shard) < doors.len());
        if let Some((shard, door)) = named.and_then(|s| Some((s, doors[usize::from(s)].as_ref()?))) {
            match duplicate(&stream) {
                Ok(socket) => {
                    drop(stream);
                    match door.send_async(HandedPeer { socket, kind: Handed::Tls { shard } }).await {
                        Ok(()) => return,
                        // The shard stopped serving peers (the node is stopping): served here.
                        Err(flume::SendError(handed)) => (stream, named) = (handed.into_parts().0, None),
                    }
                }
                Err(e) => {
                    tracing::warn!(?caller, shard, error = %e, "serving a peer connection here, not on its shard")
                }
            }
        }
    }
    open_and_serve(stream, opening, caller, named, handler, config, &doors, stopping).await
}

/// A connection whose first byte said what it speaks (`opening`): its TLS handshake when the
/// node has internode TLS, its HELLO, then served here, or handed to the shard its HELLO asks
/// for through `doors` if plaintext. A TLS connection is served here: where its server name
/// steered it (`named`, the shard it named: a HELLO naming another is served here all the
/// same), or where it was accepted.
#[allow(clippy::too_many_arguments)]
async fn open_and_serve(
    stream: TcpStream,
    opening: Opening,
    caller: Option<SocketAddr>,
    named: Option<u16>,
    handler: Rc<dyn FrameHandler>,
    config: TransportConfig,
    doors: &[Option<flume::Sender<HandedPeer>>],
    stopping: Rc<Stopping>,
) {
    let mut stream = match (opening, &config.tls) {
        // Closed (the answer goes nowhere), or silent: as silent as a connection without HELLO.
        (Opening::Nothing, _) => {
            let why = "no HELLO within the connect timeout";
            return refuse(stream, RemoteError::new(codes::PROTOCOL, why.to_owned())).await;
        }
        (Opening::Plain, None) => Stream::Plain(stream),
        (Opening::Tls, Some(tls)) => match crate::tls::accept(&tls.acceptor, stream, config.connect_timeout).await {
            Ok(stream) => stream,
            Err(reason) => {
                tracing::warn!(?caller, %reason, "refusing a peer connection: internode TLS handshake failed");
                return;
            }
        },
        (Opening::Plain, Some(_)) => {
            let why = "this node requires internode TLS: a plaintext peer is refused";
            tracing::warn!(?caller, "refusing a peer connection: {why}");
            return refuse(stream, RemoteError::new(codes::TLS, why.to_owned())).await;
        }
        (Opening::Tls, None) => {
            tracing::warn!(
                ?caller,
                "refusing a peer connection: it opened TLS, and this node has no internode TLS settings"
            );
            return;
        }
    };
    let mut decoder = FrameDecoder::new(config.max_frame_bytes);
    let mut read_buf = ReadBuf::default();
    let hello =
        futures_lite::future::or(async { Some(read_frame(&mut stream, &mut decoder, &mut read_buf).await) }, async {
            glommio::timer::sleep(config.connect_timeout).await;
            None
        })
        .await;
    let hello = match accept_hello(hello, &config.cluster_name) {
        Ok(hello) => hello,
        Err(refusal) => {
            tracing::warn!(?caller, reason = %refusal.message, "refusing a peer connection");
            return refuse(stream, refusal).await;
        }
    };
    let (from, version) = (hello.from, hello.version);
    if let Some(named) = named.filter(|&named| named != hello.shard) {
        tracing::debug!(%from, named, hello = hello.shard, "the HELLO names another shard than the TLS server name: serving it here");
    }
    let (Some(door), Stream::Plain(plain)) = (doors.get(usize::from(hello.shard)).and_then(Option::as_ref), &stream)
    else {
        return serve_connection(stream, read_buf, from, version, handler, config, stopping).await;
    };
    // The other shard gets its own descriptor of the socket; this one closes with `stream`.
    let socket = match duplicate(plain) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::warn!(%from, shard = hello.shard, error = %e, "serving a peer connection here, not on its shard");
            return serve_connection(stream, read_buf, from, version, handler, config, stopping).await;
        }
    };
    drop(stream);
    let handed = HandedPeer { socket, kind: Handed::Greeted { from, version, pending: read_buf.pending().to_vec() } };
    if let Err(flume::SendError(handed)) = door.send_async(handed).await {
        // The shard stopped serving peers (the node is stopping): serve the connection here.
        if let (stream, Handed::Greeted { from, version, pending }) = handed.into_parts() {
            let read_buf = ReadBuf::from_bytes(pending);
            serve_connection(Stream::Plain(stream), read_buf, from, version, handler, config, stopping).await;
        }
    }
}

/// One connection after its HELLO: HELLO_OK, then requests until the caller closes, a bad
/// frame, a failed write, or the node stops.
async fn serve_connection(
    stream: Stream,
    mut read_buf: ReadBuf,
    from: SocketAddr,
    version: u8,
    handler: Rc<dyn FrameHandler>,
    config: TransportConfig,
    stopping: Rc<Stopping>,
) {
    let (mut reader, writer) = futures_lite::io::split(stream);
    let outbox = Rc::new(Outbox::default());
    let writer = glommio::spawn_local(write_loop(writer, outbox.clone()));
    outbox.push_peer(&PeerFrame { opcode: PEER_HELLO_OK, stream: 0, body: hello::encode_hello_ok(version) });
    let mut decoder = FrameDecoder::new(config.max_frame_bytes);
    let in_flight = Rc::new(Semaphore::new(config.max_requests_per_connection as u64));
    let server = Server { handler, outbox: outbox.clone(), from, max_frame_bytes: config.max_frame_bytes };
    let server = Rc::new(server);
    let ended = server.read_requests(&mut reader, &mut decoder, &mut read_buf, &in_flight, &stopping).await;
    if let Err((stream, refusal)) = ended {
        tracing::warn!(%from, reason = %refusal.message, "closing a peer connection after a bad frame");
        outbox.push_peer(&error_frame(stream, &refusal));
    }
    // Every request started has answered once all permits are back.
    let _ = in_flight.acquire(config.max_requests_per_connection as u64).await;
    outbox.close();
    writer.await;
}

/// Checks the first frame of a connection: a HELLO on stream 0 with a version both speak,
/// from a node of this node's cluster (`cluster`). Its version is the agreed one.
fn accept_hello(first: Option<Result<Option<PeerFrame>, FrameError>>, cluster: &str) -> Result<Hello, RemoteError> {
    let protocol = |message: String| RemoteError::new(codes::PROTOCOL, message);
    let frame = match first {
        None => return Err(protocol("no HELLO within the connect timeout".into())),
        Some(Ok(None)) => return Err(protocol("closed before HELLO".into())),
        Some(Err(e)) => return Err(protocol(e.to_string())),
        Some(Ok(Some(frame))) => frame,
    };
    if (frame.opcode, frame.stream) != (PEER_HELLO, 0) {
        return Err(protocol(format!(
            "expected HELLO on stream 0, got opcode {:#04x} on stream {}",
            frame.opcode, frame.stream
        )));
    }
    let hello = Hello::decode(&frame.body).map_err(|e| protocol(format!("malformed HELLO: {e}")))?;
    let version = hello.accept(cluster)?;
    Ok(Hello { version, ..hello })
}

/// The serving side of one connection after its HELLO.
struct Server {
    handler: Rc<dyn FrameHandler>,
    outbox: Rc<Outbox>,
    from: SocketAddr,
    max_frame_bytes: usize,
}

impl Server {
    /// Starts one task per request until the connection ends. `Err`: a bad frame, to be
    /// answered on stream 0 before closing.
    async fn read_requests(
        self: &Rc<Self>,
        reader: &mut (impl futures_lite::AsyncRead + Unpin),
        decoder: &mut FrameDecoder,
        read_buf: &mut ReadBuf,
        in_flight: &Rc<Semaphore>,
        stopping: &Stopping,
    ) -> Result<(), (u16, RemoteError)> {
        let protocol = |stream: u16, message: String| Err((stream, RemoteError::new(codes::PROTOCOL, message)));
        loop {
            let next = async { Some(read_frame(reader, decoder, read_buf).await) };
            let ending = async {
                let broken = self.outbox.wait_broken();
                futures_lite::future::or(broken, stopping.wait()).await;
                None
            };
            let frame = match futures_lite::future::or(next, ending).await {
                Some(Ok(Some(frame))) => frame,
                Some(Err(e)) => return protocol(e.stream(), e.to_string()),
                // Closed by the caller, a failed write, or the node stopping.
                Some(Ok(None)) | None => return Ok(()),
            };
            if frame.stream == 0 || !is_request(frame.opcode) {
                return protocol(
                    frame.stream,
                    format!("opcode {:#04x} on stream {} is not a request", frame.opcode, frame.stream),
                );
            }
            self.outbox.wait_below(MAX_OUTBOX_BYTES).await;
            let Ok(permit) = in_flight.acquire_static_permit(1).await else { return Ok(()) };
            let server = self.clone();
            glommio::spawn_local(async move {
                let stream = frame.stream;
                let (opcode, body) = server.answer(frame).await;
                server.outbox.push_peer(&PeerFrame { opcode, stream, body });
                drop(permit);
            })
            .detach();
        }
    }

    /// The handler's answer to one request, or the PEER_ERROR replacing an answer that cannot
    /// be sent. A panicking handler fails its request, never the shard.
    async fn answer(&self, frame: PeerFrame) -> (u8, Vec<u8>) {
        let opcode = frame.opcode;
        let handled = AssertUnwindSafe(self.handler.handle(self.from, opcode, frame.body)).catch_unwind().await;
        let problem = match handled {
            Ok((answer, _)) if !PEER_OPCODES.contains(&answer) || matches!(answer, PEER_HELLO | PEER_HELLO_OK) => {
                format!("the handler of {opcode:#04x} answered with opcode {answer:#04x}, not a peer answer")
            }
            Ok((_, body)) if HEADER_BYTES + body.len() > self.max_frame_bytes => {
                format!(
                    "the answer to {opcode:#04x} ({} bytes) exceeds the frame limit of {} bytes",
                    body.len(),
                    self.max_frame_bytes
                )
            }
            Ok(answer) => return answer,
            Err(panic) => format!("internal error serving {opcode:#04x}: {}", panic_message(&*panic)),
        };
        tracing::error!(from = %self.from, %problem, "peer request failed");
        (PEER_ERROR, RemoteError::new(codes::SERVER, problem).encode())
    }
}

#[cfg(test)]
mod tests;

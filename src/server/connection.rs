//! Client connections of one shard (its front door): takes the connections the accepting
//! shard hands it, and per connection runs a reader that delimits frames, one task per request
//! (answered out of order, by stream id), and a writer that sends answers in batches. Every
//! frame the decoder rejects gets a typed ERROR answer or closes the connection; nothing a
//! client sends can panic or stall the shard. A connection that does not start in time, stays
//! idle too long, or took a place reserved for admin without being the admin tool is closed.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};
use shards::signal::Signal;
use wire::frame::SUPPORTED_VERSIONS;
use wire::frame::{encode_frame_as, Frame, FrameDecoder};
use wire::protocol::{negotiate_version, ErrorCode, Request, Response, ADMIN_CLIENT_PREFIX, PASSWORD_AUTHENTICATOR};

use super::accept::{Handoff, Refusal};
use crate::auth::{Authenticator, Caller};
use crate::config::ServerConfig;
use crate::coordinator::Coordinator;
use crate::frame_io::{accept_loop, panic_message, write_loop, Outbox, ReadBuf, Stopping, MAX_OUTBOX_BYTES};
use crate::metrics::{Metrics, RequestLabels, StatementKind};
use crate::tls::{ClientPortTls, Opening, Stream};

/// Bytes of answers a connection may have in progress (estimated: requests running times the
/// size of its recent answers), beyond the [`MAX_OUTBOX_BYTES`] waiting for its socket: the
/// reader starts no new request past it (one always runs). A client that pipelines reads of
/// large rows holds about this much of the server's memory, not one answer per request.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Longest a request waits for room in its shard's answer budget
/// (`max_answer_bytes_per_shard`) before it is answered OVERLOADED instead of run.
pub const ANSWER_BUDGET_WAIT: Duration = Duration::from_secs(2);
/// The answer size a connection is assumed to get before it has had any: a page of the
/// default size, so that a first burst of large reads starts a few at a time.
const FIRST_ANSWER_ESTIMATE: usize = crate::coordinator::DEFAULT_PAGE_BYTES;

/// Which front door a connection reached: told to the client in READY and SUPPORTED.
#[derive(Debug, Clone, Copy)]
pub struct Door {
    pub shard: u16,
    pub shards: u16,
    /// The node's shard-aware port; 0 when it has none.
    pub shard_aware_port: u16,
}

/// Serves the connections handed over on `incoming` until the accepting shard stops handing
/// any (its senders are gone), then tells them to stop reading and waits for every one to
/// finish its in-flight requests. The node's connection bound was applied when accepting.
pub async fn serve(
    incoming: flume::Receiver<Handoff>,
    door: Door,
    coordinator: Rc<Coordinator>,
    metrics: Rc<Metrics>,
    config: &ServerConfig,
    tls: Option<ClientPortTls>,
) {
    // One budget for every connection this shard serves: answers being built, in bytes.
    let answer_budget = Rc::new(Semaphore::new(config.max_answer_bytes_per_shard.0 as u64));
    let limits = Limits {
        max_answer_bytes_per_shard: config.max_answer_bytes_per_shard.0,
        max_frame_bytes: config.max_frame_bytes.0,
        max_requests: config.max_requests_per_connection,
        handshake_timeout: config.handshake_timeout(),
        idle_timeout: config.idle_timeout(),
        door,
    };
    accept_loop(
        incoming.into_stream().map(Ok),
        usize::MAX,
        futures_lite::future::pending(),
        |handoff: Handoff, stopping| {
            let (coordinator, metrics, answer_budget) = (coordinator.clone(), metrics.clone(), answer_budget.clone());
            let tls = tls.clone();
            async move {
                let stream = handoff.stream.bind_to_executor();
                let _ = stream.set_nodelay(true);
                let stream = match &tls {
                    None => Stream::Plain(stream),
                    Some(tls) => match secure(stream, tls, limits.handshake_timeout).await {
                        Some(stream) => stream,
                        None => {
                            metrics.connection_refused();
                            return;
                        }
                    },
                };
                metrics.connection_opened();
                let reserved = handoff.slot.reserved().cloned();
                let shared = Shared { coordinator, metrics: metrics.clone(), answer_budget };
                Connection::serve(stream, shared, limits, reserved, stopping).await;
                metrics.connection_closed();
                drop(handoff.slot);
            }
        },
        // Never over the bound here: the accepting shard refuses beyond it.
        |handoff| async move { drop(handoff) },
    )
    .await
}

/// Answers a connection over the node's bounds on stream 0 and closes it.
pub async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    let answer = error_frame(0, ErrorCode::Overloaded, refusal.to_string());
    let _ = stream.write_all(&answer).await;
    let _ = stream.close().await;
}

/// The stream a client connection is served over, on a port with TLS: a connection opening
/// with a TLS handshake gets one; a plaintext one is served as it is, or, when TLS is
/// required, answered with an error on stream 0 and closed. `None`: nothing to serve (closed,
/// silent, or a failed handshake, which the client sees as its own error).
async fn secure(stream: TcpStream, tls: &ClientPortTls, wait: Duration) -> Option<Stream> {
    let peer = stream.peer_addr().ok();
    match crate::tls::opening(&stream, wait).await {
        Opening::Nothing => None,
        Opening::Tls => match crate::tls::accept(&tls.acceptor, stream, wait).await {
            Ok(stream) => Some(stream),
            Err(reason) => {
                tracing::debug!(?peer, %reason, "client TLS handshake failed");
                None
            }
        },
        Opening::Plain if !tls.required => Some(Stream::Plain(stream)),
        Opening::Plain => {
            tracing::debug!(?peer, "refusing a plaintext client: client_tls_required");
            let why = "this node requires TLS on its client port (client_tls_required): connect with TLS (--tls-ca)";
            close_with(stream, &error_frame(0, ErrorCode::Protocol, why.to_owned()), wait).await;
            None
        }
    }
}

/// Writes `answer` and closes `stream` once the client has closed its end (or after `wait`):
/// closing with the client's request still unread would reset the connection, and the client
/// could lose the answer.
async fn close_with(mut stream: TcpStream, answer: &[u8], wait: Duration) {
    if stream.write_all(answer).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    let mut sink = [0u8; 4096];
    // Bounded by `wait`; whatever the client sent is discarded.
    let drained = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    futures_lite::future::or(drained, glommio::timer::sleep(wait)).await;
}

/// What every connection of a shard shares.
struct Shared {
    coordinator: Rc<Coordinator>,
    metrics: Rc<Metrics>,
    /// Bytes of answers being built on the shard (`max_answer_bytes_per_shard`): a request
    /// holds its connection's answer estimate from it until its answer is in the outbox.
    answer_budget: Rc<Semaphore>,
}

#[derive(Clone, Copy)]
struct Limits {
    max_answer_bytes_per_shard: usize,
    max_frame_bytes: usize,
    max_requests: usize,
    /// From accept to READY.
    handshake_timeout: Duration,
    /// Without a request, once started; None: never closed for it.
    idle_timeout: Option<Duration>,
    door: Door,
}

struct Connection {
    coordinator: Rc<Coordinator>,
    metrics: Rc<Metrics>,
    answer_budget: Rc<Semaphore>,
    outbox: Rc<Outbox>,
    /// Requests in progress; the reader waits for a permit before starting another.
    in_flight: Rc<Semaphore>,
    /// Size of the connection's recent answers: the largest, decaying by an eighth per
    /// answer (a burst of small answers after a large one lets more requests run again).
    answer_estimate: Cell<usize>,
    /// Notified when a request has pushed its answer.
    answered: Signal,
    /// STARTUP has been answered with READY (or AUTH_SUCCESS).
    started: Cell<bool>,
    /// Who sends this connection's requests: set with `started`.
    caller: OnceCell<Caller>,
    /// STARTUP was answered AUTHENTICATE, at this version: an AUTH_RESPONSE is awaited.
    authenticating: Cell<Option<u8>>,
    /// Stream ids of the requests in flight (at most `max_requests` + 1: the reader waits
    /// for a permit before reading on).
    streams: RefCell<HashSet<u16>>,
    /// The connection holds a place reserved for admin (beyond this bound): only the admin
    /// tool may start on it.
    reserved: Option<Refusal>,
    /// Set when an answer ends the connection: the reader stops.
    closing: Stopping,
    limits: Limits,
}

impl Connection {
    async fn serve(
        stream: Stream,
        Shared { coordinator, metrics, answer_budget }: Shared,
        limits: Limits,
        reserved: Option<Refusal>,
        stopping: Rc<Stopping>,
    ) {
        let accepted = Instant::now();
        let (mut reader, writer) = futures_lite::io::split(stream);
        let outbox = Rc::new(Outbox::default());
        let writer = glommio::spawn_local(write_loop(writer, outbox.clone()));
        let conn = Rc::new(Connection {
            coordinator,
            metrics,
            answer_budget,
            outbox: outbox.clone(),
            in_flight: Rc::new(Semaphore::new(limits.max_requests as u64)),
            answer_estimate: Cell::new(FIRST_ANSWER_ESTIMATE),
            answered: Signal::default(),
            started: Cell::new(false),
            caller: OnceCell::new(),
            authenticating: Cell::new(None),
            streams: RefCell::default(),
            reserved,
            closing: Stopping::default(),
            limits,
        });
        conn.read_loop(&mut reader, &stopping, accepted).await;
        // Every request started has answered once all permits are back.
        let _ = conn.in_flight.acquire(limits.max_requests as u64).await;
        outbox.close();
        writer.await;
    }

    /// Reads and dispatches frames until the peer closes, a fatal framing error, a failed
    /// write, an answer that ends the connection, a timeout, or the node stops.
    async fn read_loop(
        self: &Rc<Self>,
        reader: &mut (impl futures_lite::AsyncRead + Unpin),
        stopping: &Stopping,
        accepted: Instant,
    ) {
        let mut decoder = FrameDecoder::new(self.limits.max_frame_bytes);
        let mut buf = ReadBuf::default();
        let mut last_request = accepted;
        loop {
            loop {
                match decoder.decode(buf.pending()) {
                    Ok(Some((frame, used))) => {
                        buf.consume(used);
                        // Answers go in the client's version; READY fixes it.
                        if let (false, Some(version)) = (self.started.get(), decoder.last_version()) {
                            self.outbox.set_version(version);
                        }
                        last_request = Instant::now();
                        if !self.dispatch(frame).await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.metrics.record_error(RequestLabels::unknown(), &ErrorCode::Protocol);
                        self.outbox.push(&Response::error(ErrorCode::Protocol, e.to_string()).to_frame(e.stream()));
                        match e.skip() {
                            Some(used) => buf.consume(used),
                            None => return,
                        }
                    }
                }
            }
            if self.outbox.is_broken() || stopping.is_stopped() || self.closing.is_stopped() {
                return;
            }
            let deadline = self.deadline(accepted, last_request);
            // The decoder bounds how much a frame may need.
            let woke = futures_lite::future::or(async { Woke::Read(buf.fill(reader).await) }, async {
                futures_lite::future::or(
                    async {
                        futures_lite::future::or(stopping.wait(), self.closing.wait()).await;
                        Woke::Stop
                    },
                    async {
                        match deadline {
                            Some(at) => glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await,
                            None => futures_lite::future::pending().await,
                        }
                        Woke::Timeout
                    },
                )
                .await
            })
            .await;
            match woke {
                Woke::Read(true) => {}
                // Closed by the peer, a reset, the node stopping, or an answer that ends it.
                Woke::Read(false) | Woke::Stop => return,
                Woke::Timeout if !self.started.get() => {
                    let why = format!("no STARTUP within {:?} of connecting: closing", self.limits.handshake_timeout);
                    tracing::debug!("{why}");
                    self.outbox.push(&Response::error(ErrorCode::Protocol, why).to_frame(0));
                    return;
                }
                // A request in progress is not idleness: wait again from now.
                Woke::Timeout if self.in_flight.available() < self.limits.max_requests as u64 => {
                    last_request = Instant::now();
                }
                Woke::Timeout => {
                    let idle = self.limits.idle_timeout.unwrap_or_default();
                    let why = format!("idle for {idle:?}: closing");
                    self.outbox.push(&Response::error(ErrorCode::Protocol, why).to_frame(0));
                    return;
                }
            }
            // A request answered from memory never waits: let the other tasks run between reads.
            glommio::yield_if_needed().await;
        }
    }

    /// When the connection is closed unless a request comes: the handshake timeout until
    /// READY, then the idle timeout (if any) after the last request.
    fn deadline(&self, accepted: Instant, last_request: Instant) -> Option<Instant> {
        match self.started.get() {
            false => Some(accepted + self.limits.handshake_timeout),
            true => self.limits.idle_timeout.map(|idle| last_request + idle),
        }
    }

    /// Requests in progress.
    fn running(&self) -> usize {
        self.limits.max_requests - self.in_flight.available() as usize
    }

    /// Starts serving one frame as its own task, once a request permit is free and the answers
    /// waiting and in progress leave room for one more. A request on stream 0 or on a stream
    /// still in use is a connection-level error: answered on stream 0, then false (the
    /// connection closes once the requests in flight are answered).
    async fn dispatch(self: &Rc<Self>, frame: Frame) -> bool {
        let misuse = match frame.stream {
            0 => Some("stream 0 is reserved for connection-level errors: requests use streams 1 to 65535".to_owned()),
            s if !self.streams.borrow_mut().insert(s) => {
                Some(format!("stream {s} is already in use by a request still in flight"))
            }
            _ => None,
        };
        if let Some(message) = misuse {
            self.metrics.record_error(RequestLabels::unknown(), &ErrorCode::Protocol);
            self.outbox.push(&Response::error(ErrorCode::Protocol, message).to_frame(0));
            return false;
        }
        self.outbox.wait_below(MAX_OUTBOX_BYTES).await;
        self.answered
            .wait_until(|| {
                let running = self.running();
                running == 0 || (running + 1).saturating_mul(self.answer_estimate.get()) <= MAX_ANSWER_BYTES
            })
            .await;
        if self.outbox.is_broken() {
            // The client is gone: its remaining requests are not worth running.
            return false;
        }
        let Ok(permit) = self.in_flight.acquire_static_permit(1).await else { return false };
        let conn = self.clone();
        glommio::spawn_local(async move {
            let (stream, started) = (frame.stream, Instant::now());
            let labels = Cell::new(RequestLabels::new(StatementKind::Other, frame.opcode, None));
            // Room for the answer among the shard's answers in progress, held until it is in
            // the outbox (where the connection's own bound takes over).
            let budget_permit = conn.reserve_answer_bytes().await;
            let response = match &budget_permit {
                None => Response::error(
                    ErrorCode::Overloaded,
                    format!(
                        "this shard's answers in progress hold max_answer_bytes_per_shard ({} bytes) for over \
                         {ANSWER_BUDGET_WAIT:?}: retry later",
                        conn.limits.max_answer_bytes_per_shard
                    ),
                ),
                // A bug in serving one request answers that request with a server error; it
                // never takes down the shard that runs every other connection.
                Some(_) => match AssertUnwindSafe(conn.answer(frame, &labels)).catch_unwind().await {
                    Ok(response) => response,
                    Err(panic) => {
                        let what = panic_message(&*panic);
                        tracing::error!(stream, panic = %what, "request handler panicked");
                        Response::error(ErrorCode::Server, format!("internal error serving this request: {what}"))
                    }
                },
            };
            conn.metrics.record(labels.get(), started.elapsed(), &response);
            let frame = conn.answer_frame(response, stream);
            let estimate = conn.answer_estimate.get();
            conn.answer_estimate.set(frame.wire_len().max(estimate - estimate / 8));
            // Nobody reads the answers of a connection whose socket failed: not kept.
            if !conn.outbox.is_broken() {
                conn.outbox.push(&frame);
            }
            drop(frame);
            drop(budget_permit);
            conn.streams.borrow_mut().remove(&stream);
            drop(permit);
            conn.answered.notify_all();
        })
        .detach();
        true
    }

    /// Reserves the size of this connection's recent answers (at most the whole budget) in
    /// the shard's answer budget, waiting in line at most [`ANSWER_BUDGET_WAIT`]; None when
    /// the wait ran out.
    async fn reserve_answer_bytes(&self) -> Option<StaticPermit> {
        let bytes = self.answer_estimate.get().clamp(1, self.limits.max_answer_bytes_per_shard) as u64;
        let budget = self.answer_budget.clone();
        let acquire = async move { budget.acquire_static_permit(bytes).await.ok() };
        let expire = async {
            glommio::timer::sleep(ANSWER_BUDGET_WAIT).await;
            None
        };
        futures_lite::future::or(acquire, expire).await
    }

    /// The frame of `response`, or of an INVALID error when it would be over the frame limit
    /// (SELECT pages are cut to fit; this catches every other answer).
    fn answer_frame(&self, response: Response, stream: u16) -> Frame {
        let frame = response.to_frame(stream);
        let len = frame.wire_len();
        if len <= self.limits.max_frame_bytes {
            return frame;
        }
        let message = format!(
            "the answer is {len} bytes, over the frame limit of {} bytes (max_frame_bytes)",
            self.limits.max_frame_bytes
        );
        Response::error(ErrorCode::Invalid, message).to_frame(stream)
    }

    /// Ends a connection on a place kept for admin that is not the admin tool.
    fn refuse_reserved(&self) -> Response {
        self.closing.stop();
        let bound = self.reserved.as_ref().map(ToString::to_string).unwrap_or_default();
        let message = format!("{bound}; the places beyond it are reserved for enigmadb admin");
        Response::error(ErrorCode::Overloaded, message)
    }

    /// The answer to one frame; `labels` gets the request's metric labels once it decodes.
    async fn answer(&self, frame: Frame, labels: &Cell<RequestLabels>) -> Response {
        let request = match Request::decode(frame.opcode, &frame.body) {
            Ok(r) => r,
            Err(e) => return Response::error(ErrorCode::Protocol, e.to_string()),
        };
        labels.set(RequestLabels::of(&request, |id| self.coordinator.prepared_kind(id)));
        match request {
            Request::Options => Response::Supported {
                versions: SUPPORTED_VERSIONS.to_vec(),
                max_frame_bytes: u32::try_from(self.limits.max_frame_bytes).unwrap_or(u32::MAX),
                server: format!("enigmadb {}", env!("CARGO_PKG_VERSION")),
                shard: self.limits.door.shard,
                shards: self.limits.door.shards,
                shard_aware_port: self.limits.door.shard_aware_port,
            },
            Request::Startup { .. } if self.started.get() => {
                Response::error(ErrorCode::Protocol, "STARTUP was already answered READY on this connection")
            }
            Request::Startup { client, .. } if self.reserved.is_some() && !client.starts_with(ADMIN_CLIENT_PREFIX) => {
                self.refuse_reserved()
            }
            Request::Startup { version, .. } => match negotiate_version(version) {
                Ok(version) => self.start(version),
                Err(e) => Response::Error(e),
            },
            Request::AuthResponse { token } => match self.authenticating.take() {
                // Boxed: a login happens once per connection, and its future is large.
                Some(version) if !self.started.get() => Box::pin(self.authenticate(version, &token)).await,
                _ => Response::error(ErrorCode::Protocol, "AUTH_RESPONSE without an AUTHENTICATE to answer"),
            },
            _ if !self.started.get() && self.reserved.is_some() => self.refuse_reserved(),
            _ if !self.started.get() => Response::error(ErrorCode::Protocol, "send STARTUP before any other request"),
            // `started` is set with the caller.
            request => self.coordinator.execute(request, self.caller.get().unwrap_or(&Caller::Anonymous)).await,
        }
    }

    /// Answers a STARTUP at `version`: READY, or AUTHENTICATE when the node asks for
    /// credentials (from version 3; an older client is refused and the connection closed).
    fn start(&self, version: u8) -> Response {
        let door = self.limits.door;
        match self.coordinator.authenticator() {
            Authenticator::AllowAll => {
                self.ready(version, Caller::Anonymous);
                Response::Ready { version, shard: door.shard, shards: door.shards }
            }
            Authenticator::Password if version < 3 => {
                self.closing.stop();
                let message = format!(
                    "this node requires authentication (authenticator = password): protocol version 3 or later \
                     is needed, the client asked for {version}"
                );
                Response::error(ErrorCode::Protocol, message)
            }
            Authenticator::Password => {
                self.authenticating.set(Some(version));
                Response::Authenticate { authenticator: PASSWORD_AUTHENTICATOR.to_owned() }
            }
        }
    }

    /// Checks an AUTH_RESPONSE: AUTH_SUCCESS, or a BadCredentials error and the connection
    /// closes (nothing else is served on it).
    async fn authenticate(&self, version: u8, token: &[u8]) -> Response {
        match self.coordinator.login(token).await {
            Ok(caller) => {
                self.ready(version, caller);
                let door = self.limits.door;
                Response::AuthSuccess { version, shard: door.shard, shards: door.shards }
            }
            Err(e) => {
                tracing::debug!(error = %e.message, "authentication failed");
                self.closing.stop();
                Response::Error(e)
            }
        }
    }

    /// The connection serves requests of `caller` from now on, answered in `version`.
    fn ready(&self, version: u8, caller: Caller) {
        let _ = self.caller.set(caller);
        self.outbox.set_version(version);
        self.started.set(true);
    }
}

/// What ended a wait of the reader.
enum Woke {
    /// A read: false once the peer closed or the read failed.
    Read(bool),
    /// The node stops, or an answer ends the connection.
    Stop,
    /// The handshake or idle timeout passed.
    Timeout,
}

fn error_frame(stream: u16, code: ErrorCode, message: String) -> Vec<u8> {
    let mut out = Vec::new();
    // The oldest version spoken: every client of a supported version reads it.
    encode_frame_as(SUPPORTED_VERSIONS[0], &Response::error(code, message).to_frame(stream), &mut out);
    out
}

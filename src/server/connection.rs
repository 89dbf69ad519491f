//! Client connections on the coordinator shard: the accept loop, and per connection a reader
//! that delimits frames, one task per request (answered out of order, by stream id), and a
//! writer that sends answers in batches. Every frame the decoder rejects gets a typed ERROR
//! answer or closes the connection; nothing a client sends can panic or stall the shard.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Gate, Semaphore};
use shards::signal::Signal;
use wire::frame::SUPPORTED_VERSIONS;
use wire::frame::{encode_frame, Frame, FrameDecoder};
use wire::protocol::{negotiate_version, ErrorCode, Request, Response};

use crate::config::ServerConfig;
use crate::coordinator::Coordinator;

/// Bytes asked of the socket per read; a frame larger than this is read in several.
const READ_CHUNK: usize = 64 * 1024;

/// Answers waiting for the socket beyond which no new request starts: a client that sends
/// but does not read stops being read instead of growing the server's memory.
const MAX_OUTBOX_BYTES: usize = 4 << 20;

/// Set once when the node stops: connections stop reading new requests and finish.
#[derive(Default)]
struct Stopping {
    stopped: Cell<bool>,
    signal: Signal,
}

impl Stopping {
    async fn wait(&self) {
        self.signal.wait_until(|| self.stopped.get()).await
    }
}

/// Serves `listener` until `stop` fires (or every sender is gone), then waits for every
/// connection to finish its in-flight requests.
pub async fn serve(
    listener: TcpListener,
    coordinator: Rc<Coordinator>,
    config: &ServerConfig,
    stop: flume::Receiver<()>,
) {
    let connections = Gate::new();
    let open = Rc::new(Cell::new(0usize));
    let stopping = Rc::new(Stopping::default());
    let limits = Limits { max_frame_bytes: config.max_frame_bytes.0, max_requests: config.max_requests_per_connection };
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv_async().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // EMFILE and friends: keep serving the connections we have.
                tracing::warn!(error = %e, "accepting a connection");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= config.max_connections {
            // Over the limit: answer on stream 0 and close, off the accept loop.
            glommio::spawn_local(refuse(stream, config.max_connections)).detach();
            continue;
        }
        open.set(open.get() + 1);
        let (coordinator, open, stopping) = (coordinator.clone(), open.clone(), stopping.clone());
        let task = connections.spawn(async move {
            Connection::serve(stream, coordinator, limits, stopping).await;
            open.set(open.get() - 1);
        });
        if let Ok(task) = task {
            task.detach();
        }
    }
    drop(listener);
    stopping.stopped.set(true);
    stopping.signal.notify_all();
    let _ = connections.close().await;
}

async fn refuse(mut stream: TcpStream, limit: usize) {
    let answer = error_frame(0, ErrorCode::Overloaded, format!("too many connections (limit {limit})"));
    let _ = stream.write_all(&answer).await;
    let _ = stream.close().await;
}

#[derive(Clone, Copy)]
struct Limits {
    max_frame_bytes: usize,
    max_requests: usize,
}

/// Answers waiting to be written, in completion order.
#[derive(Default)]
struct Outbox {
    bytes: RefCell<Vec<u8>>,
    /// Set when the reader is done and every request has answered: the writer drains and ends.
    closed: Cell<bool>,
    /// Set when a write failed: the peer is gone; the reader stops.
    broken: Cell<bool>,
    signal: Signal,
}

impl Outbox {
    fn push(&self, frame: &Frame) {
        encode_frame(frame, &mut self.bytes.borrow_mut());
        self.signal.notify_all();
    }

    fn close(&self) {
        self.closed.set(true);
        self.signal.notify_all();
    }
}

struct Connection {
    coordinator: Rc<Coordinator>,
    outbox: Rc<Outbox>,
    /// Requests in progress; the reader waits for a permit before starting another.
    in_flight: Rc<Semaphore>,
    /// STARTUP has been answered with READY.
    started: Cell<bool>,
    limits: Limits,
}

impl Connection {
    async fn serve(stream: TcpStream, coordinator: Rc<Coordinator>, limits: Limits, stopping: Rc<Stopping>) {
        let _ = stream.set_nodelay(true);
        let (mut reader, writer) = futures_lite::io::split(stream);
        let outbox = Rc::new(Outbox::default());
        let writer = glommio::spawn_local(write_loop(writer, outbox.clone()));
        let conn = Rc::new(Connection {
            coordinator,
            outbox: outbox.clone(),
            in_flight: Rc::new(Semaphore::new(limits.max_requests as u64)),
            started: Cell::new(false),
            limits,
        });
        conn.read_loop(&mut reader, &stopping).await;
        // Every request started has answered once all permits are back.
        let _ = conn.in_flight.acquire(limits.max_requests as u64).await;
        outbox.close();
        writer.await;
    }

    /// Reads and dispatches frames until the peer closes, a fatal framing error, a failed
    /// write, or the node stops.
    async fn read_loop(self: &Rc<Self>, reader: &mut (impl futures_lite::AsyncRead + Unpin), stopping: &Stopping) {
        let mut decoder = FrameDecoder::new(self.limits.max_frame_bytes);
        let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
        let mut start = 0;
        loop {
            loop {
                match decoder.decode(&buf[start..]) {
                    Ok(Some((frame, used))) => {
                        start += used;
                        self.dispatch(frame).await;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.outbox.push(&Response::error(ErrorCode::Protocol, e.to_string()).to_frame(e.stream()));
                        match e.skip() {
                            Some(used) => start += used,
                            None => return,
                        }
                    }
                }
            }
            buf.drain(..start);
            start = 0;
            if self.outbox.broken.get() || stopping.stopped.get() {
                return;
            }
            // Read more into the spare capacity; the decoder bounds how much a frame may need.
            let filled = buf.len();
            buf.resize(filled + READ_CHUNK, 0);
            let read = futures_lite::future::or(async { Some(reader.read(&mut buf[filled..]).await) }, async {
                stopping.wait().await;
                None
            })
            .await;
            match read {
                Some(Ok(n)) if n > 0 => buf.truncate(filled + n),
                // Closed by the peer, a reset, or the node stopping.
                _ => return,
            }
            // A request answered from memory never waits: let the other tasks run between reads.
            glommio::yield_if_needed().await;
        }
    }

    /// Starts serving one frame as its own task, once a request permit is free.
    async fn dispatch(self: &Rc<Self>, frame: Frame) {
        let outbox = &self.outbox;
        outbox.signal.wait_until(|| outbox.bytes.borrow().len() < MAX_OUTBOX_BYTES || outbox.broken.get()).await;
        let Ok(permit) = self.in_flight.acquire_static_permit(1).await else { return };
        let conn = self.clone();
        glommio::spawn_local(async move {
            let stream = frame.stream;
            // A bug in serving one request answers that request with a server error; it
            // never takes down the shard that runs every other connection.
            let response = match AssertUnwindSafe(conn.answer(frame)).catch_unwind().await {
                Ok(response) => response,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(stream, panic = %what, "request handler panicked");
                    Response::error(ErrorCode::Server, format!("internal error serving this request: {what}"))
                }
            };
            conn.outbox.push(&response.to_frame(stream));
            drop(permit);
        })
        .detach();
    }

    async fn answer(&self, frame: Frame) -> Response {
        let request = match Request::decode(frame.opcode, &frame.body) {
            Ok(r) => r,
            Err(e) => return Response::error(ErrorCode::Protocol, e.to_string()),
        };
        match request {
            Request::Options => Response::Supported {
                versions: SUPPORTED_VERSIONS.to_vec(),
                max_frame_bytes: u32::try_from(self.limits.max_frame_bytes).unwrap_or(u32::MAX),
                server: format!("enigmadb {}", env!("CARGO_PKG_VERSION")),
            },
            Request::Startup { version, .. } => match negotiate_version(version) {
                Ok(version) => {
                    self.started.set(true);
                    Response::Ready { version }
                }
                Err(e) => Response::Error(e),
            },
            _ if !self.started.get() => Response::error(ErrorCode::Protocol, "send STARTUP before any other request"),
            request => self.coordinator.execute(request).await,
        }
    }
}

/// Sends the outbox's bytes as they accumulate: everything answered while one write was in
/// progress goes out in the next write.
async fn write_loop(mut writer: impl futures_lite::AsyncWrite + Unpin, outbox: Rc<Outbox>) {
    let mut sending = Vec::new();
    loop {
        outbox.signal.wait_until(|| !outbox.bytes.borrow().is_empty() || outbox.closed.get()).await;
        std::mem::swap(&mut sending, &mut *outbox.bytes.borrow_mut());
        // Room in the outbox again: a reader held back by MAX_OUTBOX_BYTES may go on.
        outbox.signal.notify_all();
        if sending.is_empty() {
            break;
        }
        if writer.write_all(&sending).await.is_err() || writer.flush().await.is_err() {
            outbox.broken.set(true);
            outbox.signal.notify_all();
            break;
        }
        sending.clear();
    }
    let _ = writer.close().await;
}

fn error_frame(stream: u16, code: ErrorCode, message: String) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&Response::error(code, message).to_frame(stream), &mut out);
    out
}

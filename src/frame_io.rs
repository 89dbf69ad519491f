//! Socket plumbing shared by the two frame protocols on glommio sockets (the client listener,
//! `server::connection`, and the peer transport, `cluster::transport`): the bounded accept
//! loop, the outbox of encoded frames with its batching write loop, and the buffer frames are
//! decoded from. It never interprets a frame; what to do with one is the caller's.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Gate;
use shards::signal::Signal;
use wire::frame::{encode_frame_as, encode_peer_frame, Frame, PeerFrame, SUPPORTED_VERSIONS};

/// Bytes asked of the socket per read; a frame larger than this is read in several.
pub const READ_CHUNK: usize = 64 * 1024;

/// Answers waiting for the socket beyond which a server starts no new request: a peer that
/// sends but does not read stops being read instead of growing the server's memory.
pub const MAX_OUTBOX_BYTES: usize = 4 << 20;

/// Capacity a connection's write buffers keep between bursts; a buffer grown past it by a
/// burst of large answers is freed once written, so an idle connection holds little memory.
pub const RETAINED_WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Encoded frames waiting for the socket, in the order they were pushed.
#[derive(Default)]
pub struct Outbox {
    bytes: RefCell<Vec<u8>>,
    /// The client protocol version [`push`](Self::push) writes; 0 until set: the oldest
    /// spoken, which every client of a supported version reads.
    version: Cell<u8>,
    /// Set when no more frames will be pushed: the writer drains and ends.
    closed: Cell<bool>,
    /// Set when a write failed: the other side is gone.
    broken: Cell<bool>,
    signal: Signal,
}

impl Outbox {
    pub fn push(&self, frame: &Frame) {
        let version = match self.version.get() {
            0 => SUPPORTED_VERSIONS[0],
            v => v,
        };
        encode_frame_as(version, frame, &mut self.bytes.borrow_mut());
        self.signal.notify_all();
    }

    /// Client frames from now on are written in `version` (the client's).
    pub fn set_version(&self, version: u8) {
        self.version.set(version);
    }

    pub fn push_peer(&self, frame: &PeerFrame) {
        encode_peer_frame(frame, &mut self.bytes.borrow_mut());
        self.signal.notify_all();
    }

    /// Bytes pushed and not yet handed to the socket.
    pub fn len(&self) -> usize {
        self.bytes.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Drops what was not sent yet and lets the writer end: nobody waits for those frames.
    pub fn discard(&self) {
        self.bytes.borrow_mut().clear();
        self.close();
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.signal.notify_all();
    }

    /// Resolves once fewer than `limit` bytes wait for the socket, or the socket broke.
    pub async fn wait_below(&self, limit: usize) {
        self.signal.wait_until(|| self.len() < limit || self.broken.get()).await
    }

    /// Resolves once a write failed.
    pub async fn wait_broken(&self) {
        self.signal.wait_until(|| self.broken.get()).await
    }
}

/// Sends the outbox's bytes as they accumulate: everything pushed while one write was in
/// progress goes out in the next write. Ends when the outbox is closed and drained, or a write
/// fails (then the outbox is marked broken); closes the writer either way.
pub async fn write_loop(mut writer: impl futures_lite::AsyncWrite + Unpin, outbox: Rc<Outbox>) {
    let mut sending = Vec::new();
    loop {
        outbox.signal.wait_until(|| !outbox.bytes.borrow().is_empty() || outbox.closed.get()).await;
        std::mem::swap(&mut sending, &mut *outbox.bytes.borrow_mut());
        // Room in the outbox again: a reader held back by its bound may go on.
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
        if sending.capacity() > RETAINED_WRITE_BUFFER_BYTES {
            sending = Vec::new();
        }
    }
    let _ = writer.close().await;
}

/// Received bytes not yet decoded. Bounded by one frame plus one [`READ_CHUNK`], because the
/// frame decoder refuses frames over its limit before their bodies arrive. The buffer is
/// zeroed only when it grows: a read reuses the bytes the last one left behind.
#[derive(Default)]
pub struct ReadBuf {
    /// Initialized bytes; `start..end` are received and not yet decoded.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// A buffer holding `bytes`, received and not decoded yet.
    pub fn from_bytes(bytes: Vec<u8>) -> ReadBuf {
        let end = bytes.len();
        ReadBuf { buf: bytes, start: 0, end }
    }

    /// The bytes not decoded yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The first `n` pending bytes were decoded.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.start + n <= self.end);
        self.start += n;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Reads more bytes from `reader` (at least [`READ_CHUNK`] are asked for); false once the
    /// other side closed or the read failed.
    pub async fn fill(&mut self, reader: &mut (impl futures_lite::AsyncRead + Unpin)) -> bool {
        if self.buf.len() - self.end < READ_CHUNK {
            // The part of a frame received so far moves to the front; the buffer grows only
            // when that does not leave room for a chunk.
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
            if self.buf.len() - self.end < READ_CHUNK {
                self.buf.resize(self.end + READ_CHUNK, 0);
            }
        }
        let read = reader.read(&mut self.buf[self.end..]).await;
        let n = *read.as_ref().unwrap_or(&0);
        self.end += n;
        n > 0
    }
}

/// The message of a caught panic, for the answer to the request that caused it.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Set once when a listener stops: its connections stop reading new requests and finish.
#[derive(Default)]
pub struct Stopping {
    stopped: Cell<bool>,
    signal: Signal,
}

impl Stopping {
    pub fn stop(&self) {
        self.stopped.set(true);
        self.signal.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.get()
    }

    /// Resolves once [`Stopping::stop`] was called.
    pub async fn wait(&self) {
        self.signal.wait_until(|| self.stopped.get()).await
    }
}

/// The connections `listener` accepts, as a stream that owns it (dropping the stream stops
/// listening).
pub fn incoming(listener: TcpListener) -> impl futures_lite::Stream<Item = std::io::Result<TcpStream>> + Unpin {
    Box::pin(futures_lite::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map_err(std::io::Error::from);
        Some((accepted, listener))
    }))
}

/// Pause before accepting again after an accept error.
const ACCEPT_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

/// The next connection from `incoming`, or None once `stop` resolves or `incoming` ends (then
/// neither may be polled again). An accept error (EMFILE and friends) is logged and retried
/// after a pause: the connections already served go on.
pub async fn next_accepted<C>(
    incoming: &mut (impl futures_lite::Stream<Item = std::io::Result<C>> + Unpin),
    stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<C> {
    use futures_lite::StreamExt;
    loop {
        let accepted = futures_lite::future::or(async { incoming.next().await }, async {
            stop.as_mut().await;
            None
        })
        .await;
        match accepted? {
            Ok(connection) => return Some(connection),
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection");
                glommio::timer::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
}

/// Takes connections from `incoming` (a listener's, or those another shard hands over) until
/// `stop` resolves or `incoming` ends, running `serve` for each, at most `max_connections` at
/// once (beyond it, `refuse` answers and closes the connection, off the accept loop). Then
/// tells the connections to stop reading and waits until every one is done.
pub async fn accept_loop<C, S, R>(
    incoming: impl futures_lite::Stream<Item = std::io::Result<C>> + Unpin,
    max_connections: usize,
    stop: impl Future<Output = ()>,
    serve: impl Fn(C, Rc<Stopping>) -> S,
    refuse: impl Fn(C) -> R,
) where
    S: Future<Output = ()> + 'static,
    R: Future<Output = ()> + 'static,
{
    let mut incoming = incoming;
    let connections = Gate::new();
    let open = Rc::new(Cell::new(0usize));
    let stopping = Rc::new(Stopping::default());
    let mut stop = std::pin::pin!(stop);
    while let Some(stream) = next_accepted(&mut incoming, &mut stop).await {
        if open.get() >= max_connections {
            glommio::spawn_local(refuse(stream)).detach();
            continue;
        }
        open.set(open.get() + 1);
        let (connection, open) = (serve(stream, stopping.clone()), open.clone());
        let task = connections.spawn(async move {
            connection.await;
            open.set(open.get() - 1);
        });
        if let Ok(task) = task {
            task.detach();
        }
    }
    drop(incoming);
    stopping.stop();
    let _ = connections.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes at most `step` per read, like a socket delivering segments.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl futures_lite::AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = out.len().min(self.step).min(self.bytes.len() - self.at);
            out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn read_buf_keeps_undecoded_bytes_in_order_within_one_frame_plus_a_chunk() {
        let seed = 0x5eed_u64;
        println!("seed {seed}");
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let bytes: Vec<u8> = (0..READ_CHUNK * 5).map(|_| rand::Rng::gen(&mut rng)).collect();
        let mut reader = Trickle { bytes: bytes.clone(), at: 0, step: READ_CHUNK / 3 + 7 };
        let (mut buf, mut decoded, mut largest_pending) = (ReadBuf::default(), Vec::new(), 0);
        while futures_lite::future::block_on(buf.fill(&mut reader)) {
            // "Frames" of random sizes up to two chunks: some need several reads.
            let frame = rand::Rng::gen_range(&mut rng, 1..2 * READ_CHUNK);
            largest_pending = largest_pending.max(buf.pending().len());
            let take = frame.min(buf.pending().len());
            decoded.extend_from_slice(&buf.pending()[..take]);
            buf.consume(take);
            assert!(buf.buf.len() <= largest_pending + READ_CHUNK, "grew to {} bytes", buf.buf.len());
        }
        decoded.extend_from_slice(buf.pending());
        assert_eq!(decoded, bytes);
    }
}

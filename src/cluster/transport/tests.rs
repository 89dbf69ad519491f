//! The transport end to end over 127.0.0.1: a serving side and a calling side on one glommio
//! executor, and raw sockets where a test needs to send what a well-behaved node never would.

use std::cell::Cell;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;
use rand::{Rng, SeedableRng};

use super::*;
use crate::cluster::opcodes::{GOSSIP_SYN, MUTATE, MUTATE_OK, READ, READ_RESULT, SCAN, SCHEMA_PULL};

/// A generous bound for calls that must succeed.
const PATIENCE: Duration = Duration::from_secs(5);

/// Serves test requests by opcode:
/// - READ: answers READ_RESULT with the body reversed, after `body[0]` milliseconds;
/// - MUTATE: waits until the test opens the gate, then answers MUTATE_OK;
/// - SCAN: answers PEER_ERROR INVALID; SCHEMA_PULL panics; GOSSIP_SYN answers a client opcode.
#[derive(Default)]
struct TestHandler {
    gate_open: Cell<bool>,
    gate: Signal,
    served: Cell<u64>,
    last_from: Cell<Option<SocketAddr>>,
}

impl TestHandler {
    fn open_gate(&self) {
        self.gate_open.set(true);
        self.gate.notify_all();
    }
}

impl FrameHandler for TestHandler {
    fn handle(&self, from: SocketAddr, opcode: u8, body: Vec<u8>) -> Pin<Box<dyn Future<Output = (u8, Vec<u8>)> + '_>> {
        Box::pin(async move {
            self.served.set(self.served.get() + 1);
            self.last_from.set(Some(from));
            match opcode {
                READ => {
                    let delay = body.first().copied().unwrap_or(0);
                    glommio::timer::sleep(Duration::from_millis(u64::from(delay))).await;
                    (READ_RESULT, body.into_iter().rev().collect())
                }
                MUTATE => {
                    self.gate.wait_until(|| self.gate_open.get()).await;
                    (MUTATE_OK, Vec::new())
                }
                SCAN => (PEER_ERROR, RemoteError::new(codes::INVALID, "no such table").encode()),
                SCHEMA_PULL => panic!("handler bug"),
                _ => (0x07, Vec::new()),
            }
        })
    }
}

/// Runs `body` on a fresh executor.
fn run<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(body)
        .expect("spawn an executor")
        .join()
        .expect("the test body panicked");
}

/// A peer serving `handler` on a fresh port of 127.0.0.1; dropping `stop` stops it.
struct TestPeer {
    addr: SocketAddr,
    stop: Option<flume::Sender<()>>,
    served: glommio::task::JoinHandle<()>,
}

impl TestPeer {
    fn start(handler: Rc<dyn FrameHandler>, config: TransportConfig, addr: SocketAddr) -> TestPeer {
        let listener = TcpListener::bind(addr).expect("bind the peer listener");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let (stop, stopped) = flume::bounded::<()>(1);
        let served = glommio::spawn_local(async move {
            let config = TransportConfig { local_addr: addr, ..config };
            serve(listener, handler, &config, Vec::new(), async move {
                let _ = stopped.recv_async().await;
            })
            .await;
        })
        .detach();
        TestPeer { addr, stop: Some(stop), served }
    }

    /// Stops serving and waits until every connection is closed.
    async fn stop(mut self) {
        drop(self.stop.take());
        let _ = (&mut self.served).await;
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("a valid address")
}

fn caller_config() -> TransportConfig {
    TransportConfig {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..TransportConfig::new("127.0.0.1:7999".parse().expect("a valid address"))
    }
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(localhost()).expect("bind");
    listener.local_addr().expect("a bound listener has an address")
}

#[test]
fn concurrent_calls_share_one_connection_and_are_answered_out_of_order() {
    let seed: u64 = std::env::var("TRANSPORT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("TRANSPORT_SEED={seed}");
    run(move || async move {
        let handler = Rc::new(TestHandler::default());
        let peer = TestPeer::start(handler.clone(), caller_config(), localhost());
        let transport = Transport::new(caller_config());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let finished = Rc::new(RefCell::new(Vec::new()));
        let mut calls = Vec::new();
        for i in 0..200u32 {
            // First byte: the handler's delay in ms; the rest identifies the request.
            let mut body = vec![rng.gen_range(0..40u8)];
            body.extend_from_slice(&i.to_le_bytes());
            let (transport, finished) = (transport.clone(), finished.clone());
            calls.push(glommio::spawn_local(async move {
                let answer = transport.call_raw(peer.addr, 0, READ, body.clone(), PATIENCE).await;
                finished.borrow_mut().push(i);
                (body, answer)
            }));
        }
        for call in calls {
            let (body, answer) = call.await;
            let expected: Vec<u8> = body.into_iter().rev().collect();
            assert_eq!(answer, Ok((READ_RESULT, expected)), "TRANSPORT_SEED={seed}");
        }
        let order = finished.borrow().clone();
        assert!(order.windows(2).any(|w| w[0] > w[1]), "answers came back in request order: {order:?}");
        let stats = transport.peer_stats(peer.addr, 0).expect("the peer was called");
        assert_eq!(stats, PeerStats { connect_attempts: 1, connected: true, in_flight: 0, abandoned: 0 });
        assert_eq!(handler.served.get(), 200);
        assert_eq!(handler.last_from.get(), Some(caller_config().local_addr), "the handler sees the HELLO address");
        peer.stop().await;
    });
}

#[test]
fn a_timed_out_call_frees_its_slot_and_its_late_answer_is_dropped() {
    run(|| async {
        let peer = TestPeer::start(Rc::new(TestHandler::default()), caller_config(), localhost());
        let transport = Transport::new(TransportConfig { max_in_flight_per_peer: 1, ..caller_config() });
        let started = Instant::now();
        let slow = transport.call_raw(peer.addr, 0, READ, vec![200, 1], Duration::from_millis(30)).await;
        assert_eq!(slow, Err(PeerError::Timeout { peer: peer.addr, timeout: Duration::from_millis(30) }));
        assert!(started.elapsed() < Duration::from_secs(1), "the timeout took {:?}", started.elapsed());
        // The only in-flight slot is free again while the slow answer is still on its way...
        let fast = transport.call_raw(peer.addr, 0, READ, vec![0, 2], PATIENCE).await;
        assert_eq!(fast, Ok((READ_RESULT, vec![2, 0])));
        assert_eq!(transport.peer_stats(peer.addr, 0).map(|s| (s.in_flight, s.abandoned)), Some((0, 1)));
        // ...and once it arrives it is dropped, not handed to a later call.
        glommio::timer::sleep(Duration::from_millis(250)).await;
        for i in 3..6 {
            assert_eq!(
                transport.call_raw(peer.addr, 0, READ, vec![0, i], PATIENCE).await,
                Ok((READ_RESULT, vec![i, 0]))
            );
        }
        assert_eq!(transport.peer_stats(peer.addr, 0).map(|s| (s.connect_attempts, s.abandoned)), Some((1, 0)));
        peer.stop().await;
    });
}

#[test]
fn a_down_peer_is_unreachable_at_once_and_connect_attempts_back_off() {
    run(|| async {
        let down = closed_port();
        let backoff = TransportConfig {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..caller_config()
        };
        let transport = Transport::new(backoff);
        let started = Instant::now();
        let first = transport.call_raw(down, 0, READ, vec![0], PATIENCE).await;
        assert!(matches!(&first, Err(PeerError::Unreachable { peer, .. }) if *peer == down), "{first:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "the first failure took {:?}", started.elapsed());
        // Within the backoff, calls fail at once (on their first poll) without trying to connect.
        for _ in 0..100 {
            let again = futures_lite::future::poll_once(transport.call_raw(down, 0, READ, vec![0], PATIENCE)).await;
            assert!(matches!(again, Some(Err(PeerError::Unreachable { .. }))), "{again:?}");
        }
        assert_eq!(transport.peer_stats(down, 0).map(|s| s.connect_attempts), Some(1));
        // After it (100 ms), one new attempt; the wait then doubles (200 ms).
        glommio::timer::sleep(Duration::from_millis(120)).await;
        assert!(matches!(
            transport.call_raw(down, 0, READ, vec![0], PATIENCE).await,
            Err(PeerError::Unreachable { .. })
        ));
        assert_eq!(transport.peer_stats(down, 0).map(|s| s.connect_attempts), Some(2));
        glommio::timer::sleep(Duration::from_millis(120)).await;
        assert!(matches!(
            transport.call_raw(down, 0, READ, vec![0], PATIENCE).await,
            Err(PeerError::Unreachable { .. })
        ));
        assert_eq!(transport.peer_stats(down, 0).map(|s| s.connect_attempts), Some(2), "the second wait is 200 ms");
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert!(matches!(
            transport.call_raw(down, 0, READ, vec![0], PATIENCE).await,
            Err(PeerError::Unreachable { .. })
        ));
        assert_eq!(transport.peer_stats(down, 0).map(|s| s.connect_attempts), Some(3));
    });
}

#[test]
fn a_restarted_peer_is_reached_again() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let peer = TestPeer::start(handler.clone(), caller_config(), localhost());
        let addr = peer.addr;
        let transport = Transport::new(caller_config());
        assert_eq!(transport.call_raw(addr, 0, READ, vec![0, 1], PATIENCE).await, Ok((READ_RESULT, vec![1, 0])));
        peer.stop().await;
        // The connection is gone: the next call reconnects, fails, and backs off.
        let mut down = transport.call_raw(addr, 0, READ, vec![0, 2], PATIENCE).await;
        if matches!(down, Err(PeerError::Closed { .. })) {
            // The close raced the call; the call after it reconnects.
            down = transport.call_raw(addr, 0, READ, vec![0, 2], PATIENCE).await;
        }
        assert!(matches!(down, Err(PeerError::Unreachable { .. })), "{down:?}");
        let peer = TestPeer::start(handler.clone(), caller_config(), addr);
        let deadline = Instant::now() + PATIENCE;
        let answer = loop {
            match transport.call_raw(addr, 0, READ, vec![0, 3], PATIENCE).await {
                Err(PeerError::Unreachable { .. }) if Instant::now() < deadline => {
                    glommio::timer::sleep(Duration::from_millis(10)).await
                }
                other => break other,
            }
        };
        assert_eq!(answer, Ok((READ_RESULT, vec![3, 0])));
        let stats = transport.peer_stats(addr, 0).expect("called");
        assert!(stats.connected && stats.connect_attempts <= 4, "{stats:?}");
        peer.stop().await;
    });
}

/// Reads from `stream` until the other side closes; everything received.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = futures_lite::future::or(async { stream.read_to_end(&mut received).await.map(|_| ()) }, async {
        glommio::timer::sleep(PATIENCE).await;
        Err(std::io::Error::other("the server did not close the connection"))
    });
    read.await.expect("the server closes the connection");
    received
}

/// The PEER_ERRORs in `bytes`, with their streams.
fn errors_in(bytes: &[u8]) -> Vec<(u16, RemoteError)> {
    let mut decoder = FrameDecoder::default();
    let mut at = 0;
    let mut errors = Vec::new();
    while let Some((frame, used)) = decoder.decode_peer(&bytes[at..]).expect("the server sends valid frames") {
        at += used;
        if frame.opcode == PEER_ERROR {
            errors.push((frame.stream, RemoteError::decode(&frame.body).expect("a valid PEER_ERROR")));
        }
    }
    errors
}

fn peer_frame(opcode: u8, stream: u16, body: Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::new();
    wire::frame::encode_peer_frame(&PeerFrame { opcode, stream, body }, &mut bytes);
    bytes
}

fn hello_frame(version: u8) -> Vec<u8> {
    let cluster = (version >= 2).then(|| DEFAULT_CLUSTER_NAME.to_owned());
    peer_frame(
        PEER_HELLO,
        0,
        Hello { version, from: "127.0.0.1:7000".parse().expect("valid"), cluster, shard: 0 }.encode(),
    )
}

#[test]
fn garbage_closes_the_connection_and_the_peer_keeps_serving() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let peer = TestPeer::start(handler.clone(), caller_config(), localhost());
        let transport = Transport::new(caller_config());
        assert_eq!(transport.call_raw(peer.addr, 0, READ, vec![0, 1], PATIENCE).await, Ok((READ_RESULT, vec![1, 0])));

        // Not the protocol at all.
        let mut raw = TcpStream::connect(peer.addr).await.expect("connect");
        raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        let errors = errors_in(&read_to_close(&mut raw).await);
        assert!(
            matches!(&errors[..], [(0, e)] if e.code == codes::PROTOCOL && e.message.contains("magic")),
            "{errors:?}"
        );

        // A good HELLO, then a request whose body is corrupt.
        let mut raw = TcpStream::connect(peer.addr).await.expect("connect");
        let mut bytes = hello_frame(PEER_PROTOCOL_VERSION);
        let mut request = peer_frame(READ, 9, vec![0, 1, 2]);
        request[HEADER_BYTES] ^= 0xFF;
        bytes.extend_from_slice(&request);
        raw.write_all(&bytes).await.expect("write");
        let errors = errors_in(&read_to_close(&mut raw).await);
        assert!(matches!(&errors[..], [(9, e)] if e.message.contains("checksum")), "{errors:?}");

        // A request before HELLO, and a client-protocol frame after it.
        let mut raw = TcpStream::connect(peer.addr).await.expect("connect");
        raw.write_all(&peer_frame(READ, 1, vec![0])).await.expect("write");
        let errors = errors_in(&read_to_close(&mut raw).await);
        assert!(matches!(&errors[..], [(0, e)] if e.message.contains("expected HELLO")), "{errors:?}");
        let mut raw = TcpStream::connect(peer.addr).await.expect("connect");
        let mut bytes = hello_frame(PEER_PROTOCOL_VERSION);
        wire::frame::encode_frame(&wire::Frame::new(wire::Opcode::Options, 4, vec![]), &mut bytes);
        raw.write_all(&bytes).await.expect("write");
        let errors = errors_in(&read_to_close(&mut raw).await);
        // The client protocol's frames carry its own version: refused before their opcode.
        assert!(matches!(&errors[..], [(0, e)] if e.message.contains("unsupported protocol version")), "{errors:?}");

        // The pooled connection and new ones are served as before.
        assert_eq!(transport.call_raw(peer.addr, 0, READ, vec![0, 2], PATIENCE).await, Ok((READ_RESULT, vec![2, 0])));
        let other = Transport::new(caller_config());
        assert_eq!(other.call_raw(peer.addr, 0, READ, vec![0, 3], PATIENCE).await, Ok((READ_RESULT, vec![3, 0])));
        assert_eq!(handler.served.get(), 3, "no garbage reached the handler");
        peer.stop().await;
    });
}

#[test]
fn a_wrong_peer_protocol_version_is_refused_with_a_typed_error() {
    run(|| async {
        let peer = TestPeer::start(Rc::new(TestHandler::default()), caller_config(), localhost());
        let mut raw = TcpStream::connect(peer.addr).await.expect("connect");
        raw.write_all(&hello_frame(0)).await.expect("write");
        let errors = errors_in(&read_to_close(&mut raw).await);
        assert!(matches!(&errors[..], [(0, e)] if e.code == codes::VERSION), "{errors:?}");
        peer.stop().await;

        // A node that answers HELLO with a version this one does not speak.
        let listener = TcpListener::bind(localhost()).expect("bind");
        let addr = listener.local_addr().expect("bound");
        let fake = glommio::spawn_local(async move {
            let mut stream = listener.accept().await.expect("accept");
            let mut hello = vec![0u8; hello_frame(PEER_PROTOCOL_VERSION).len()];
            let _ = stream.read_exact(&mut hello).await;
            let _ = stream.write_all(&peer_frame(PEER_HELLO_OK, 0, hello::encode_hello_ok(9))).await;
            read_to_close(&mut stream).await;
        });
        let transport = Transport::new(caller_config());
        let refused = transport.call_raw(addr, 0, READ, vec![0], PATIENCE).await;
        assert!(
            matches!(&refused, Err(PeerError::Incompatible { reason, .. }) if reason.contains("version 9")),
            "{refused:?}"
        );
        fake.await;
    });
}

#[test]
fn a_node_of_another_cluster_is_refused_and_its_calls_fail_as_incompatible() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let peer = TestPeer::start(handler.clone(), caller_config(), localhost());
        let stranger = Transport::new(TransportConfig { cluster_name: "staging".into(), ..caller_config() });
        let refused = stranger.call_raw(peer.addr, 0, READ, vec![0, 1], PATIENCE).await;
        assert!(
            matches!(&refused, Err(PeerError::Incompatible { reason, .. })
                if reason.contains("\"staging\"") && reason.contains(&format!("{DEFAULT_CLUSTER_NAME:?}"))),
            "{refused:?}"
        );
        // Its own cluster's nodes are served as before, and nothing reached the handler.
        let member = Transport::new(caller_config());
        assert_eq!(member.call_raw(peer.addr, 0, READ, vec![0, 2], PATIENCE).await, Ok((READ_RESULT, vec![2, 0])));
        assert_eq!(handler.served.get(), 1, "the stranger's request never reached the handler");
        peer.stop().await;
    });
}

#[test]
fn bounds_give_overloaded_at_once() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let peer =
            TestPeer::start(handler.clone(), TransportConfig { max_connections: 1, ..caller_config() }, localhost());
        let transport = Transport::new(TransportConfig { max_in_flight_per_peer: 4, ..caller_config() });
        let waiting: Vec<_> = (0..4)
            .map(|_| {
                let transport = transport.clone();
                glommio::spawn_local(async move { transport.call_raw(peer.addr, 0, MUTATE, vec![], PATIENCE).await })
            })
            .collect();
        glommio::timer::sleep(Duration::from_millis(20)).await;
        // Refused at once: the call resolves on its first poll.
        let over = futures_lite::future::poll_once(transport.call_raw(peer.addr, 0, MUTATE, vec![], PATIENCE)).await;
        assert!(
            matches!(&over, Some(Err(PeerError::Overloaded { reason, .. })) if reason.contains("limit 4")),
            "{over:?}"
        );
        // Too many queued bytes: a frame larger than the queue bound.
        let small_queue = Transport::new(TransportConfig { max_queued_bytes_per_peer: 1000, ..caller_config() });
        let over = small_queue.call_raw(peer.addr, 0, READ, vec![0; 1000], PATIENCE).await;
        assert!(matches!(&over, Err(PeerError::Overloaded { reason, .. }) if reason.contains("queued")), "{over:?}");
        // A frame over the frame limit is refused before anything is queued.
        let too_large = transport.call_raw(peer.addr, 0, READ, vec![0; DEFAULT_MAX_FRAME_BYTES], PATIENCE).await;
        assert!(matches!(too_large, Err(PeerError::TooLarge { .. })), "{too_large:?}");
        // The serving side accepts one connection: a second caller is refused.
        let second = Transport::new(caller_config());
        let refused = second.call_raw(peer.addr, 0, READ, vec![0], PATIENCE).await;
        assert!(
            matches!(&refused, Err(PeerError::Overloaded { reason, .. }) if reason.contains("limit 1")),
            "{refused:?}"
        );
        handler.open_gate();
        for call in waiting {
            assert_eq!(call.await, Ok((MUTATE_OK, vec![])));
        }
        peer.stop().await;
    });
}

#[test]
fn handler_errors_and_panics_answer_only_their_request() {
    run(|| async {
        let peer = TestPeer::start(Rc::new(TestHandler::default()), caller_config(), localhost());
        let transport = Transport::new(caller_config());
        let remote = |code: u16| move |r: &Result<(u8, Vec<u8>), PeerError>| matches!(r, Err(PeerError::Remote { code: c, .. }) if *c == code);
        let invalid = transport.call_raw(peer.addr, 0, SCAN, vec![], PATIENCE).await;
        assert!(remote(codes::INVALID)(&invalid), "{invalid:?}");
        let panicked = transport.call_raw(peer.addr, 0, SCHEMA_PULL, vec![], PATIENCE).await;
        assert!(remote(codes::SERVER)(&panicked), "{panicked:?}");
        let wrong = transport.call_raw(peer.addr, 0, GOSSIP_SYN, vec![], PATIENCE).await;
        assert!(remote(codes::SERVER)(&wrong), "{wrong:?}");
        assert_eq!(transport.call_raw(peer.addr, 0, READ, vec![0, 1], PATIENCE).await, Ok((READ_RESULT, vec![1, 0])));
        assert_eq!(transport.peer_stats(peer.addr, 0).map(|s| s.connect_attempts), Some(1));
        peer.stop().await;
    });
}

#[test]
fn a_connection_lost_mid_call_fails_its_calls_with_closed_and_the_next_call_reconnects() {
    run(|| async {
        let listener = TcpListener::bind(localhost()).expect("bind");
        let addr = listener.local_addr().expect("bound");
        // A node that greets, takes one request, and dies; then a real one on the same port.
        let fake = glommio::spawn_local(async move {
            let mut stream = listener.accept().await.expect("accept");
            let mut hello = vec![0u8; hello_frame(PEER_PROTOCOL_VERSION).len()];
            stream.read_exact(&mut hello).await.expect("HELLO");
            stream
                .write_all(&peer_frame(PEER_HELLO_OK, 0, hello::encode_hello_ok(PEER_PROTOCOL_VERSION)))
                .await
                .expect("write");
            let mut request = vec![0u8; HEADER_BYTES + 1];
            stream.read_exact(&mut request).await.expect("request");
            listener
        });
        let transport = Transport::new(caller_config());
        let lost = transport.call_raw(addr, 0, READ, vec![0], PATIENCE).await;
        assert!(
            matches!(&lost, Err(PeerError::Closed { reason, .. }) if reason.contains("closed by the peer")),
            "{lost:?}"
        );
        drop(fake.await);
        let peer = TestPeer::start(Rc::new(TestHandler::default()), caller_config(), addr);
        assert_eq!(transport.call_raw(addr, 0, READ, vec![0, 7], PATIENCE).await, Ok((READ_RESULT, vec![7, 0])));
        assert_eq!(
            transport.peer_stats(addr, 0).map(|s| s.connect_attempts),
            Some(2),
            "no backoff after a lost connection"
        );
        peer.stop().await;
    });
}

#[test]
fn silence_is_bounded_by_the_connect_timeout_on_both_sides() {
    run(|| async {
        let quick = TransportConfig { connect_timeout: Duration::from_millis(100), ..caller_config() };
        // A caller that connects and never says HELLO is dropped.
        let peer = TestPeer::start(Rc::new(TestHandler::default()), quick.clone(), localhost());
        let mut raw = TcpStream::connect(peer.addr).await.expect("connect");
        let started = Instant::now();
        let errors = errors_in(&read_to_close(&mut raw).await);
        assert!(matches!(&errors[..], [(0, e)] if e.message.contains("no HELLO")), "{errors:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
        peer.stop().await;

        // A peer that accepts and never answers HELLO (a paused process) is unreachable.
        let listener = TcpListener::bind(localhost()).expect("bind");
        let addr = listener.local_addr().expect("bound");
        let silent = glommio::spawn_local(async move {
            let mut stream = listener.accept().await.expect("accept");
            read_to_close(&mut stream).await;
        });
        let transport = Transport::new(quick);
        let started = Instant::now();
        let paused = transport.call_raw(addr, 0, READ, vec![0], PATIENCE).await;
        assert!(
            matches!(&paused, Err(PeerError::Unreachable { reason, .. }) if reason.contains("within")),
            "{paused:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
        drop(transport);
        silent.await;
    });
}

#[test]
fn a_dropped_call_gives_its_in_flight_slot_up() {
    run(|| async {
        let handler = Rc::new(TestHandler::default());
        let peer = TestPeer::start(handler.clone(), caller_config(), localhost());
        let transport = Transport::new(TransportConfig { max_in_flight_per_peer: 1, ..caller_config() });
        // Polled once (the request is queued), then dropped by its caller.
        let dropped = futures_lite::future::poll_once(transport.call_raw(peer.addr, 0, MUTATE, vec![], PATIENCE)).await;
        assert_eq!(dropped, None);
        assert_eq!(transport.peer_stats(peer.addr, 0).map(|s| (s.in_flight, s.abandoned)), Some((0, 1)));
        assert_eq!(transport.call_raw(peer.addr, 0, READ, vec![0, 1], PATIENCE).await, Ok((READ_RESULT, vec![1, 0])));
        // Its answer, when it comes, goes nowhere.
        handler.open_gate();
        let deadline = Instant::now() + PATIENCE;
        while transport.peer_stats(peer.addr, 0).map(|s| s.abandoned) != Some(0) && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(transport.peer_stats(peer.addr, 0).map(|s| (s.in_flight, s.abandoned)), Some((0, 0)));
        assert_eq!(transport.call_raw(peer.addr, 0, READ, vec![0, 2], PATIENCE).await, Ok((READ_RESULT, vec![2, 0])));
        peer.stop().await;
    });
}

/// Answers every READ with the number of the shard (executor) that served it.
struct ShardNamer(u8);

impl FrameHandler for ShardNamer {
    fn handle(
        &self,
        _from: SocketAddr,
        _opcode: u8,
        _body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = (u8, Vec<u8>)> + '_>> {
        Box::pin(async move { (READ_RESULT, vec![self.0]) })
    }
}

#[test]
fn a_connection_is_served_by_the_shard_its_hello_names() {
    let (doors, handed) = flume::bounded(HANDED_PEER_QUEUE);
    let (bound, listening) = flume::bounded(1);
    let (stop, stopped) = flume::bounded::<()>(1);
    let shard1 = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { serve_handed(handed, Rc::new(ShardNamer(1)), &caller_config()).await })
        .expect("spawn shard 1");
    let shard0 = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let listener = TcpListener::bind(localhost()).expect("bind");
            bound.send(listener.local_addr().expect("bound")).expect("the test waits");
            let config = TransportConfig { local_addr: localhost(), ..caller_config() };
            serve(listener, Rc::new(ShardNamer(0)), &config, vec![None, Some(doors)], async move {
                let _ = stopped.recv_async().await;
            })
            .await
        })
        .expect("spawn shard 0");
    run(move || async move {
        let addr = listening.recv_async().await.expect("shard 0 listens");
        let transport = Transport::new(caller_config());
        // A shard the node does not have is served by its coordinator shard.
        for (shard, served_by) in [(1, 1), (0, 0), (9, 0), (1, 1)] {
            let answer = transport.call_raw(addr, shard, READ, vec![], PATIENCE).await;
            assert_eq!(answer, Ok((READ_RESULT, vec![served_by])), "a call to shard {shard}");
        }
        assert_eq!(transport.peer_stats(addr, 1).map(|s| s.connect_attempts), Some(1), "one connection per shard");

        // A version 2 caller names no shard: the coordinator shard serves it.
        let mut raw = TcpStream::connect(addr).await.expect("connect");
        raw.write_all(&[hello_frame(2), peer_frame(READ, 1, vec![])].concat()).await.expect("write");
        let (mut decoder, mut read_buf, mut frames) = (FrameDecoder::default(), ReadBuf::default(), Vec::new());
        while frames.len() < 2 {
            let frame = read_frame(&mut raw, &mut decoder, &mut read_buf).await.expect("valid frames");
            frames.push(frame.expect("the peer answers before closing"));
        }
        assert_eq!((frames[0].opcode, frames[0].body.clone()), (PEER_HELLO_OK, vec![2]));
        assert_eq!((frames[1].opcode, frames[1].stream, frames[1].body.clone()), (READ_RESULT, 1, vec![0]));
        drop(stop);
    });
    shard0.join().expect("shard 0 stops when told");
    // Shard 0 dropped its door: shard 1's serving ends too.
    shard1.join().expect("shard 1 stops once shard 0 does");
}

/// A certificate authority of a test's own (rcgen), its certificate a PEM file in `dir`.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: std::path::PathBuf,
    cert: std::path::PathBuf,
}

impl TestCa {
    fn new(dir: &std::path::Path, name: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("transport test CA {name}"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA");
        let cert = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&cert, issuer.pem()).expect("writing the CA certificate");
        TestCa { issuer, dir: dir.to_owned(), cert }
    }

    /// The TLS of a node with a certificate of this CA trusting the CA `trusted`. The
    /// certificate names 127.0.0.1 and `localhost` only: never a shard's server name.
    fn node_tls(&self, name: &str, trusted: &TestCa) -> PeerTls {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType};
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("certificate parameters");
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("an address")));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signing a certificate");
        let (cert_path, key_path) = (self.dir.join(format!("{name}.crt")), self.dir.join(format!("{name}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("writing a certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("writing a key");
        PeerTls::load(&cert_path, &key_path, &trusted.cert).expect("the test certificates load")
    }
}

/// Opens TLS to `addr` asking for the server name `name` (an IP address sends none), sends a
/// HELLO naming `hello_shard` and a READ, and returns the number of the shard that answered.
async fn shard_serving(addr: SocketAddr, tls: &PeerTls, name: &str, hello_shard: u16) -> u8 {
    let socket = TcpStream::connect(addr).await.expect("connect");
    let mut stream = tls.connect(name, socket).await.expect("a TLS handshake");
    let hello = Hello::new("127.0.0.1:7000".parse().expect("valid"), DEFAULT_CLUSTER_NAME, hello_shard).encode();
    stream.write_all(&[peer_frame(PEER_HELLO, 0, hello), peer_frame(READ, 1, vec![])].concat()).await.expect("write");
    stream.flush().await.expect("flush");
    let (mut decoder, mut read_buf, mut frames) = (FrameDecoder::default(), ReadBuf::default(), Vec::new());
    while frames.len() < 2 {
        let frame = read_frame(&mut stream, &mut decoder, &mut read_buf).await.expect("valid frames");
        frames.push(frame.expect("the peer answers before closing"));
    }
    assert_eq!(frames[0].opcode, PEER_HELLO_OK, "{:?}", frames[0]);
    assert_eq!((frames[1].opcode, frames[1].stream), (READ_RESULT, 1), "{:?}", frames[1]);
    frames[1].body[0]
}

#[test]
fn a_tls_connection_is_handed_before_its_handshake_to_the_shard_its_server_name_names() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let ca = TestCa::new(dir.path(), "cluster");
    let tls = ca.node_tls("node", &ca);
    let config = TransportConfig { tls: Some(tls.clone()), ..caller_config() };
    let (doors, handed) = flume::bounded(HANDED_PEER_QUEUE);
    let (bound, listening) = flume::bounded(1);
    let (stop, stopped) = flume::bounded::<()>(1);
    let shard1_config = config.clone();
    let shard1 = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move { serve_handed(handed, Rc::new(ShardNamer(1)), &shard1_config).await })
        .expect("spawn shard 1");
    let shard0_config = config.clone();
    let shard0 = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let listener = TcpListener::bind(localhost()).expect("bind");
            bound.send(listener.local_addr().expect("bound")).expect("the test waits");
            let config = TransportConfig { local_addr: localhost(), ..shard0_config };
            serve(listener, Rc::new(ShardNamer(0)), &config, vec![None, Some(doors)], async move {
                let _ = stopped.recv_async().await;
            })
            .await
        })
        .expect("spawn shard 0");
    let stranger = TestCa::new(dir.path(), "stranger");
    let (other_cert, other_trust) = (stranger.node_tls("other", &ca), ca.node_tls("wary", &stranger));
    run(move || async move {
        let addr = listening.recv_async().await.expect("shard 0 listens");
        // A transport names the shard in its server name: the shard named serves, though the
        // node's certificate names no such name. A shard the node does not have: shard 0.
        let transport = Transport::new(config.clone());
        for (shard, served_by) in [(1, 1), (0, 0), (9, 0), (1, 1)] {
            let answer = transport.call_raw(addr, shard, READ, vec![], PATIENCE).await;
            assert_eq!(answer, Ok((READ_RESULT, vec![served_by])), "a call to shard {shard}");
        }
        assert_eq!(transport.peer_stats(addr, 1).map(|s| s.connect_attempts), Some(1), "one connection per shard");

        // A caller of before (the address as server name: no SNI): served by shard 0, as then.
        assert_eq!(shard_serving(addr, &tls, "127.0.0.1", 1).await, 0);
        // The server name steers; a HELLO naming another shard is served where it was steered.
        assert_eq!(shard_serving(addr, &tls, &shard_server_name(1), 0).await, 1);
        assert_eq!(shard_serving(addr, &tls, &shard_server_name(0), 1).await, 0);
        // Any other name, or a shard the node does not have: shard 0.
        assert_eq!(shard_serving(addr, &tls, "db1.example.com", 1).await, 0);
        assert_eq!(shard_serving(addr, &tls, &shard_server_name(7), 1).await, 0);
        assert_eq!(shard_serving(addr, &tls, "SHARD-1.Peer.EnigmaDB", 1).await, 1);

        // The server name is never a pass: a certificate of another CA is refused on any shard,
        // and a caller not trusting the cluster CA refuses the node's certificate.
        for tls in [other_cert, other_trust] {
            let rogue = Transport::new(TransportConfig { tls: Some(tls), ..caller_config() });
            for shard in [0, 1] {
                match rogue.call_raw(addr, shard, READ, vec![], PATIENCE).await {
                    Err(PeerError::Incompatible { reason, .. }) => {
                        assert!(reason.contains("TLS") || reason.contains("certificate"), "{reason}")
                    }
                    other => panic!("a call to shard {shard} with another CA: {other:?}"),
                }
            }
        }
        drop(stop);
    });
    shard0.join().expect("shard 0 stops when told");
    shard1.join().expect("shard 1 stops once shard 0 does");
}

#[test]
fn shard_server_names_name_their_shard_and_nothing_else() {
    for shard in [0, 1, 9, 4096, u16::MAX] {
        assert_eq!(shard_named(&shard_server_name(shard)), Some(shard));
        assert!(rustls::pki_types::ServerName::try_from(shard_server_name(shard)).is_ok(), "a DNS name");
    }
    assert_eq!(shard_named("Shard-2.PEER.enigmadb"), Some(2));
    for other in [
        "",
        "peer.enigmadb",
        "shard-.peer.enigmadb",
        "shard-+1.peer.enigmadb",
        "shard--1.peer.enigmadb",
        "shard-65536.peer.enigmadb",
        "shard-000001.peer.enigmadb",
        "shard-1.peer.enigmadb.example",
        "shard-1peer.enigmadb",
        "shard-1.other.enigmadb",
        "xshard-1.peer.enigmadb",
        "127.0.0.1",
    ] {
        assert_eq!(shard_named(other), None, "{other:?}");
    }
}

//! A user-space delay line for the peer links of a chaos network, because the kernels this
//! harness runs on lack sch_netem (CONFIG_NET_SCH_NETEM unset) and nftables cannot hold a
//! packet back.
//!
//! In every node's namespace an nftables nat rule redirects the node's own TCP connections to
//! another node's peer port to a relay listening in that namespace. The relay reads the
//! original destination (SO_ORIGINAL_DST), connects to it from the node's address (with a
//! socket mark the rule lets through, so it is not redirected again) and copies bytes both
//! ways. Each chunk leaves `delay` after it arrived, in order, where `delay` is [`SLOW_DELAY`]
//! while either end of the link is slowed and zero otherwise. Packets on the wire still go
//! from node to node with the nodes' own addresses, so the nftables drops of the other faults
//! see them as before.
//!
//! Only peer traffic goes through it: clients reach nodes directly.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Port the relay listens on, inside each node's namespace.
pub const RELAY_PORT: u16 = 17470;
/// Socket mark of the relay's own connections; the redirect rule lets them pass.
pub const RELAY_MARK: u32 = 0x4348_4153;
/// How long each chunk waits, each way, on a link with a slowed end.
pub const SLOW_DELAY: Duration = Duration::from_millis(200);
/// A relay gives up connecting to a destination after this long and closes the caller's side,
/// which then sees the connection fail as it would have without the relay.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Linux's SO_ORIGINAL_DST (linux/netfilter_ipv4.h), for the address a REDIRECT replaced.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// Which nodes' links are slowed now (bit i for node i), shared by every relay of a network.
#[derive(Default)]
pub struct Slowed(AtomicU64);

impl Slowed {
    pub fn set(&self, node: usize, slow: bool) {
        let bit = 1u64 << node;
        match slow {
            true => self.0.fetch_or(bit, Ordering::SeqCst),
            false => self.0.fetch_and(!bit, Ordering::SeqCst),
        };
    }

    /// The delay of the link between nodes `a` and `b`, now.
    pub fn delay(&self, a: usize, b: usize) -> Duration {
        let bits = self.0.load(Ordering::SeqCst);
        match bits & (1 << a | 1 << b) {
            0 => Duration::ZERO,
            _ => SLOW_DELAY,
        }
    }
}

/// The relay of one node's namespace. Dropping it stops accepting; connections still open end
/// when either side closes (the nodes are killed before their network goes).
pub struct Relay {
    listener: TcpListener,
    stopped: Arc<AtomicBool>,
}

impl Relay {
    /// Starts the relay of node `node` in the namespace mounted at `netns` (a path under
    /// /run/netns), where `node_of` tells which node an address belongs to.
    pub fn start(
        netns: &str,
        node: usize,
        node_of: Arc<dyn Fn(Ipv4Addr) -> Option<usize> + Send + Sync>,
        slowed: Arc<Slowed>,
    ) -> std::io::Result<Relay> {
        let ns = Arc::new(File::open(format!("/run/netns/{netns}"))?);
        // Sockets belong to the namespace of the thread that creates them.
        let listener = in_namespace(&ns, || TcpListener::bind((Ipv4Addr::LOCALHOST, RELAY_PORT)))??;
        let stopped = Arc::new(AtomicBool::new(false));
        let (accepting, stop) = (listener.try_clone()?, stopped.clone());
        thread::Builder::new().name(format!("relay-{node}")).spawn(move || {
            for caller in accepting.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(caller) = caller else { continue };
                let (ns, node_of, slowed) = (ns.clone(), node_of.clone(), slowed.clone());
                thread::spawn(move || {
                    let Ok(target) = original_destination(&caller) else { return };
                    let Some(peer) = node_of(*target.ip()) else { return };
                    match in_namespace(&ns, move || connect_marked(target)) {
                        Ok(Ok(callee)) => splice(caller, callee, move || slowed.delay(node, peer)),
                        _ => {
                            let _ = caller.shutdown(Shutdown::Both);
                        }
                    }
                });
            }
        })?;
        Ok(Relay { listener, stopped })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) on a listening socket this struct owns; it wakes the accept.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Runs `f` on a fresh thread that first enters the network namespace `ns` (setns affects the
/// calling thread only, so the caller's namespace is untouched).
fn in_namespace<T: Send + 'static>(
    ns: &Arc<File>,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<std::io::Result<T>> {
    let ns = ns.clone();
    let worker = thread::spawn(move || {
        // SAFETY: setns(2) with an open namespace file; it changes only this thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    });
    worker.join().map_err(|_| std::io::Error::other("a relay thread panicked"))
}

/// Where a redirected connection was going.
fn original_destination(stream: &TcpStream) -> std::io::Result<SocketAddrV4> {
    // SAFETY: getsockopt(2) into a sockaddr_in of the size passed; the kernel writes at most
    // that many bytes.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            (&mut addr as *mut libc::sockaddr_in).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)), u16::from_be(addr.sin_port)))
}

/// A connection to `target` whose packets carry [`RELAY_MARK`].
fn connect_marked(target: SocketAddrV4) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_mark(RELAY_MARK)?;
    socket.set_tcp_nodelay(true)?;
    socket.connect_timeout(&SocketAddr::V4(target).into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

/// Copies both ways until either side ends, every chunk held back by `delay()` (read when it
/// arrives). Either side closing or failing closes both.
fn splice(a: TcpStream, b: TcpStream, delay: impl Fn() -> Duration + Send + Sync + 'static) {
    let _ = a.set_nodelay(true);
    let delay = Arc::new(delay);
    let pumps = [(&a, &b), (&b, &a)].map(|(from, to)| {
        let (from, to, delay) = (from.try_clone(), to.try_clone(), delay.clone());
        thread::spawn(move || {
            if let (Ok(from), Ok(to)) = (from, to) {
                pump(from, to, &*delay);
            }
        })
    });
    for pump in pumps {
        let _ = pump.join();
    }
}

/// One direction: a reader stamps each chunk with its release time, never earlier than the
/// chunk before it (order is kept when the delay changes); a writer sends it then.
fn pump(mut from: TcpStream, to: TcpStream, delay: &(dyn Fn() -> Duration + Send + Sync)) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let (mut writer_end, closer) = match (to.try_clone(), from.try_clone()) {
        (Ok(w), Ok(c)) => (w, c),
        _ => return,
    };
    let writer = thread::spawn(move || {
        for (release, chunk) in rx {
            thread::sleep(release.saturating_duration_since(Instant::now()));
            if writer_end.write_all(&chunk).is_err() {
                break;
            }
        }
        // Done or failed: end both sockets, which also wakes the reader of the other way.
        let _ = writer_end.shutdown(Shutdown::Both);
        let _ = closer.shutdown(Shutdown::Both);
    });
    let mut last = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        last = last.max(Instant::now() + delay());
        if tx.send((last, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.join();
    drop(to);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_slow_while_either_end_is_slowed() {
        let slowed = Slowed::default();
        assert_eq!(slowed.delay(1, 2), Duration::ZERO);
        slowed.set(2, true);
        assert_eq!(slowed.delay(1, 2), SLOW_DELAY);
        assert_eq!(slowed.delay(2, 3), SLOW_DELAY);
        assert_eq!(slowed.delay(1, 3), Duration::ZERO);
        slowed.set(2, false);
        assert_eq!(slowed.delay(1, 2), Duration::ZERO);
    }

    #[test]
    fn spliced_bytes_arrive_in_order_and_no_earlier_than_the_delay() {
        let (listen_a, listen_b) =
            (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
        let mut client = TcpStream::connect(listen_a.local_addr().unwrap()).unwrap();
        let (relay_in, _) = listen_a.accept().unwrap();
        let relay_out = TcpStream::connect(listen_b.local_addr().unwrap()).unwrap();
        let (mut server, _) = listen_b.accept().unwrap();
        let slowed = Arc::new(Slowed::default());
        slowed.set(1, true);
        let delays = slowed.clone();
        let relay = thread::spawn(move || splice(relay_in, relay_out, move || delays.delay(1, 2)));

        let sent = Instant::now();
        client.write_all(b"first ").unwrap();
        client.write_all(b"second").unwrap();
        let mut got = [0u8; 12];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"first second");
        assert!(sent.elapsed() >= SLOW_DELAY, "arrived after {:?}", sent.elapsed());

        // Healed: the answer comes back without the delay.
        slowed.set(1, false);
        let answered = Instant::now();
        server.write_all(b"ok").unwrap();
        let mut ok = [0u8; 2];
        client.read_exact(&mut ok).unwrap();
        assert_eq!(&ok, b"ok");
        assert!(answered.elapsed() < SLOW_DELAY, "answered after {:?}", answered.elapsed());

        // One side closing ends the relay and closes the other side.
        drop(client);
        assert_eq!(server.read(&mut ok).unwrap(), 0, "the server sees the close");
        relay.join().unwrap();
    }
}

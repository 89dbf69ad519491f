//! The shell's connection to its server: opens it, notices before a statement that the server
//! has closed it (a restart), and opens a new one with a bounded number of attempts. It never
//! sends a statement again by itself: a statement whose answer was lost is reported, not retried.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use wire::client::{Client, ClientError, ClientOptions};

/// Connection attempts for one statement before the shell gives up on it (the next statement
/// tries again).
pub const RECONNECT_ATTEMPTS: u32 = 5;

/// Pause after the first failed attempt, doubled after each later one: 0.2 + 0.4 + 0.8 + 1.6 s,
/// so a server that restarts within about 3 s is found again by the same statement.
pub const RECONNECT_FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// No connection could be opened in [`RECONNECT_ATTEMPTS`] attempts.
#[derive(Debug, thiserror::Error)]
#[error("could not reconnect to {host} after {attempts} attempts (last: {last})")]
pub struct Unreachable {
    pub host: String,
    pub attempts: u32,
    pub last: ClientError,
}

pub struct Connection {
    host: String,
    /// How every connection is opened (the credentials among them).
    options: ClientOptions,
    /// `None` once the connection is known to be lost.
    client: Option<Client>,
}

impl Connection {
    /// Connects to `host` (host:port), once.
    pub fn open(host: &str, options: ClientOptions) -> Result<Connection, ClientError> {
        let client = Some(Client::connect_with(host, options.clone())?);
        Ok(Connection { host: host.to_owned(), options, client })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether there is a connection to use: false once it was lost, or when the server has
    /// closed it since the last statement (it is dropped; [`Connection::reconnect`] opens a new
    /// one).
    pub fn is_open(&mut self) -> bool {
        if self.client.as_ref().is_some_and(closed_by_server) {
            self.client = None;
        }
        self.client.is_some()
    }

    pub fn client(&mut self) -> Option<&mut Client> {
        self.client.as_mut()
    }

    /// Forgets a connection that a failed request has broken.
    pub fn lost(&mut self) {
        self.client = None;
    }

    /// Opens a new connection, waiting [`RECONNECT_FIRST_BACKOFF`] (doubling) between at most
    /// [`RECONNECT_ATTEMPTS`] attempts.
    pub fn reconnect(&mut self) -> Result<(), Unreachable> {
        let mut backoff = RECONNECT_FIRST_BACKOFF;
        let mut attempt = 1;
        let last = loop {
            match Client::connect_with(self.host.as_str(), self.options.clone()) {
                Ok(client) => {
                    self.client = Some(client);
                    return Ok(());
                }
                Err(e) if attempt == RECONNECT_ATTEMPTS => break e,
                Err(_) => {}
            }
            std::thread::sleep(backoff);
            backoff *= 2;
            attempt += 1;
        };
        Err(Unreachable { host: self.host.clone(), attempts: RECONNECT_ATTEMPTS, last })
    }
}

/// Whether an error of a request means the connection can no longer be used: the bytes were
/// lost or cannot be trusted. A timeout keeps the connection (the client drops the late answer)
/// and a server error is an answer.
pub fn breaks_connection(error: &ClientError) -> bool {
    matches!(error, ClientError::Io(_) | ClientError::Closed | ClientError::Frame(_) | ClientError::Protocol(_))
}

/// True when the server has closed or reset the connection: a peek at the socket finds its end
/// (or an error) rather than nothing to read yet. An idle shell learns of a restart this way
/// before it sends a statement into a dead connection.
fn closed_by_server(client: &Client) -> bool {
    if client.has_buffered_input() {
        return false;
    }
    let mut byte = 0u8;
    // SAFETY: recv(2) of at most one byte into a byte we own, on the client's open socket;
    // MSG_PEEK leaves any byte for the client, MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(client.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => !matches!(io::Error::last_os_error().kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use wire::frame::{encode_frame, FrameDecoder};
    use wire::protocol::{Request, Response};

    use super::*;

    /// A server that answers STARTUP on each connection it accepts, then keeps it open until
    /// `hold` ends or closes it at once.
    fn fake_server(connections: usize, close_after_startup: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
        let addr = listener.local_addr().expect("a bound address").to_string();
        std::thread::spawn(move || {
            for _ in 0..connections {
                let Ok((mut socket, _)) = listener.accept() else { return };
                let mut decoder = FrameDecoder::default();
                let mut received = Vec::new();
                let mut chunk = [0u8; 4096];
                let frame = loop {
                    if let Ok(Some((frame, _))) = decoder.decode(&received) {
                        break frame;
                    }
                    match socket.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => received.extend_from_slice(&chunk[..n]),
                    }
                };
                let Ok(Request::Startup { version, .. }) = Request::from_frame(&frame) else { return };
                let mut answer = Vec::new();
                encode_frame(&Response::Ready { version, shard: 0, shards: 1 }.to_frame(frame.stream), &mut answer);
                let _ = socket.write_all(&answer);
                if !close_after_startup {
                    std::thread::sleep(Duration::from_secs(5));
                }
            }
        });
        addr
    }

    #[test]
    fn a_connection_the_server_closed_is_noticed_before_the_next_statement() {
        let addr = fake_server(2, true);
        let mut connection = Connection::open(&addr, ClientOptions::default()).expect("connecting to the fake server");
        // The fake closes right after READY: wait for the FIN to arrive.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while connection.is_open() {
            assert!(std::time::Instant::now() < deadline, "the closed connection was never noticed");
            std::thread::sleep(Duration::from_millis(10));
        }
        connection.reconnect().expect("the fake accepts a second connection");
    }

    #[test]
    fn an_open_idle_connection_is_kept() {
        let addr = fake_server(1, false);
        let mut connection = Connection::open(&addr, ClientOptions::default()).expect("connecting to the fake server");
        std::thread::sleep(Duration::from_millis(50));
        assert!(connection.is_open());
        connection.lost();
        assert!(!connection.is_open(), "a lost connection stays lost until reconnect");
    }

    #[test]
    fn reconnecting_to_nothing_gives_up_after_the_bounded_attempts() {
        // Bound and released: nothing listens there now.
        let addr = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").to_string();
        let mut connection = Connection { host: addr.clone(), options: ClientOptions::default(), client: None };
        let started = std::time::Instant::now();
        let err = connection.reconnect().expect_err("nothing listens");
        assert_eq!(err.attempts, RECONNECT_ATTEMPTS);
        assert!(err.to_string().starts_with(&format!("could not reconnect to {addr} after 5 attempts")), "{err}");
        // Every backoff but the last was slept.
        assert!(started.elapsed() >= Duration::from_millis(200 + 400 + 800 + 1600), "{:?}", started.elapsed());
    }

    #[test]
    fn only_transport_failures_break_the_connection() {
        assert!(breaks_connection(&ClientError::Closed));
        assert!(breaks_connection(&ClientError::Io(io::ErrorKind::ConnectionReset.into())));
        assert!(!breaks_connection(&ClientError::Timeout));
        let answer = wire::protocol::ErrorResponse::new(wire::protocol::ErrorCode::Invalid, "no such table");
        assert!(!breaks_connection(&ClientError::Server(answer)));
    }
}

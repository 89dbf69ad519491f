//! `enigmadb shell` at a terminal: the test gives the shell a pseudo-terminal, types at its
//! prompts as a person would (Enter, the up arrow, Ctrl-D) and reads what the terminal shows,
//! against a real `enigmadb server`, which it also restarts under a running shell.

mod common;

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::Server;

/// Longest wait for the shell to show something.
const SHOW_TIMEOUT: Duration = Duration::from_secs(30);

const PROMPT: &str = "enigmadb> ";
const CONTINUATION: &str = "      ... ";
const UP_ARROW: &str = "\x1b[A";
const CTRL_D: &str = "\x04";

/// Everything the terminal received, appended by a reader thread; the condvar wakes waiters.
type Screen = Arc<(Mutex<Vec<u8>>, Condvar)>;

/// A shell running on a pseudo-terminal, as under a terminal emulator.
struct Terminal {
    master: File,
    child: Child,
    screen: Screen,
    /// Bytes of `screen` already matched by [`Terminal::expect`].
    seen: usize,
}

impl Terminal {
    /// Starts `enigmadb shell --host ADDR ARGS...` with a terminal as its stdin, stdout and
    /// stderr, and `home` as HOME (its history file goes there).
    fn start(addr: SocketAddr, args: &[&str], home: &Path) -> Terminal {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize { ws_row: 50, ws_col: 200, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: openpty(3) writes two new descriptors into the ints we own; no name buffer,
        // default terminal modes, and a window size read from our struct.
        let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened by openpty and are owned by nobody else.
        let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("duplicating the terminal"));
        let mut command = common::enigmadb();
        command
            .args(["shell", "--host", &addr.to_string()])
            .args(args)
            .env("TERM", "xterm")
            .env("HOME", home)
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: between fork and exec the child calls only setsid(2) and ioctl(2), both
        // async-signal-safe: a session of its own whose controlling terminal is the pty (stdin).
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("starting the shell");
        drop(slave);
        let screen: Screen = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut reader = master.try_clone().expect("duplicating the terminal");
        let shared = screen.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            // EIO once the shell has exited and the terminal has no writer left.
            while let Ok(n @ 1..) = reader.read(&mut chunk) {
                let (bytes, wake) = &*shared;
                bytes.lock().expect("screen lock").extend_from_slice(&chunk[..n]);
                wake.notify_all();
            }
        });
        Terminal { master, child, screen, seen: 0 }
    }

    /// Types `keys` (a line ends with "\r", as the Enter key sends it).
    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("typing at the terminal");
    }

    /// Waits until `text` shows after what was matched before; returns what showed up to and
    /// including it, with the terminal's "\r\n" line ends as "\n".
    fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + SHOW_TIMEOUT;
        let (bytes, wake) = &*self.screen;
        let mut screen = bytes.lock().expect("screen lock");
        loop {
            let fresh = &screen[self.seen..];
            if let Some(at) = fresh.windows(text.len()).position(|w| w == text.as_bytes()) {
                let shown = String::from_utf8_lossy(&fresh[..at + text.len()]).replace("\r\n", "\n");
                self.seen += at + text.len();
                return shown;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the terminal did not show {text:?} within {SHOW_TIMEOUT:?}; it shows, since the last match:\n{}",
                String::from_utf8_lossy(fresh)
            );
            screen = wake.wait_timeout(screen, left).expect("screen lock").0;
        }
    }

    /// Waits for the shell to exit.
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + SHOW_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the shell") {
                return status;
            }
            assert!(Instant::now() < deadline, "the shell did not exit within {SHOW_TIMEOUT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with table `t` holding five rows in partition 'x' (c = 1..=5, v = 'v1'..'v5').
fn server_with_rows(dir: &Path, extra: &[&str]) -> Server {
    let server = Server::start(dir, 1, extra);
    let mut client = common::connect(server.addr);
    common::query_ok(&mut client, "CREATE TABLE t (p text, c int, v text, PRIMARY KEY (p, c))");
    for c in 1..=5 {
        common::query_ok(&mut client, &format!("INSERT INTO t (p, c, v) VALUES ('x', {c}, 'v{c}')"));
    }
    server
}

/// `server` again on the same client address and data directory, after SIGTERM.
fn restart(mut server: Server) -> Server {
    let (status, _) = server.stop();
    assert!(status.success(), "the server exited with {status} after SIGTERM");
    start_at(server.addr, &server.dir)
}

fn start_at(addr: SocketAddr, dir: &Path) -> Server {
    let peer = format!("{}:0", addr.ip());
    let server = Server::start_command(common::enigmadb(), &addr.to_string(), &peer, dir, 1, &[]);
    assert_eq!(server.addr, addr, "restarted on another address");
    server
}

const TWO_ROWS: &str = " c | v\n---+----\n 1 | v1\n 2 | v2\n\n(2 rows)";

#[test]
fn a_person_at_the_terminal_edits_recalls_and_leaves() {
    let dir = common::scratch_dir("shell-tty");
    let server = server_with_rows(&dir.join("node"), &[]);
    let mut tty = Terminal::start(server.addr, &[], &dir);
    tty.expect(&format!("Connected to EnigmaDB at {}.", server.addr));
    tty.expect(PROMPT);

    // A statement over two lines: the continuation prompt until its ';', then an aligned table.
    tty.type_keys("SELECT c, v\r");
    tty.expect(CONTINUATION);
    tty.type_keys("FROM t WHERE p = 'x' AND c <= 2;\r");
    let shown = tty.expect("(2 rows)");
    assert!(shown.ends_with(TWO_ROWS), "{shown:?}");
    tty.expect(PROMPT);

    // The up arrow recalls the whole statement (both lines); Enter runs it again.
    tty.type_keys(UP_ARROW);
    tty.expect("c <= 2;");
    tty.type_keys("\r");
    let shown = tty.expect("(2 rows)");
    assert!(shown.ends_with(TWO_ROWS), "{shown:?}");
    tty.expect(PROMPT);

    // A failed statement prints its error and the shell goes on.
    tty.type_keys("SELECT * FROM nope;\r");
    let shown = tty.expect(PROMPT);
    assert!(shown.contains("InvalidRequest: "), "{shown:?}");
    tty.type_keys("SELECT * FORM t;\r");
    tty.expect("SyntaxException: line 1:10 mismatched input 'FORM' expecting 'FROM'");
    tty.expect(PROMPT);

    // Shell commands need no ';'.
    tty.type_keys("CONSISTENCY QUORUM\r");
    tty.expect("Consistency level set to QUORUM.");
    tty.expect(PROMPT);
    tty.type_keys("consistency\r");
    tty.expect("Current consistency level is QUORUM.");
    tty.expect(PROMPT);
    tty.type_keys("SELECT count(*) FROM t;\r");
    let shown = tty.expect("(1 rows)");
    assert!(shown.ends_with(" count\n-------\n     5\n\n(1 rows)"), "{shown:?}");
    tty.expect(PROMPT);

    // Ctrl-C drops a half-typed statement; Ctrl-D at the prompt leaves.
    tty.type_keys("SELECT * FROM t WHERE\r");
    tty.expect(CONTINUATION);
    tty.type_keys("\x03");
    tty.expect(PROMPT);
    tty.type_keys(CTRL_D);
    assert!(tty.exit_status().success());

    // The history was saved; a new shell recalls it, and `exit` leaves.
    let history = std::fs::read_to_string(dir.join(".enigmadb_history")).expect("the history file");
    assert!(history.contains("c <= 2;"), "{history}");
    let mut tty = Terminal::start(server.addr, &[], &dir);
    tty.expect(PROMPT);
    tty.type_keys(UP_ARROW);
    tty.expect("SELECT count(*) FROM t;");
    tty.type_keys("\r");
    tty.expect("(1 rows)");
    tty.expect(PROMPT);
    tty.type_keys("exit\r");
    assert!(tty.exit_status().success());

    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_interactive_shell_reconnects_after_a_restart_and_keeps_its_settings() {
    let dir = common::scratch_dir("shell-reconnect");
    let node = dir.join("node");
    let server = server_with_rows(&node, &["--sync-mode", "batch"]);
    let addr = server.addr;
    let mut tty = Terminal::start(addr, &[], &dir);
    tty.expect(PROMPT);
    tty.type_keys("CONSISTENCY QUORUM\r");
    tty.expect("Consistency level set to QUORUM.");
    tty.expect(PROMPT);
    tty.type_keys("PAGING 2\r");
    tty.expect("Page size: 2");
    tty.expect(PROMPT);

    let server = restart(server);
    tty.type_keys("SELECT c FROM t WHERE p = 'x';\r");
    tty.expect(&format!("Connection to {addr} lost; reconnecting"));
    tty.expect(&format!("Reconnected to {addr}."));
    // Still 2 rows a page: the shell waits after each full page.
    let shown = tty.expect("---MORE---");
    assert!(shown.ends_with(" c\n---\n 1\n 2\n---MORE---"), "{shown:?}");
    tty.type_keys("\r");
    tty.expect("---MORE---");
    tty.type_keys("\r");
    let shown = tty.expect("(5 rows)");
    assert!(shown.contains(" 5\n"), "{shown:?}");
    tty.expect(PROMPT);
    tty.type_keys("CONSISTENCY\r");
    tty.expect("Current consistency level is QUORUM.");
    tty.expect(PROMPT);

    // No server at all: the statement fails after the bounded attempts, the shell stays.
    let (status, _) = { server }.stop();
    assert!(status.success());
    tty.type_keys("SELECT c FROM t WHERE p = 'x' AND c = 3;\r");
    tty.expect(&format!("ConnectionError: could not reconnect to {addr} after 5 attempts"));
    tty.expect("the statement was not run");
    tty.expect(PROMPT);

    // Back again: the next statement finds it.
    let server = start_at(addr, &node);
    tty.type_keys("SELECT c FROM t WHERE p = 'x' AND c = 3;\r");
    tty.expect(&format!("Reconnected to {addr}."));
    let shown = tty.expect("(1 rows)");
    assert!(shown.ends_with(" c\n---\n 3\n\n(1 rows)"), "{shown:?}");
    tty.expect(PROMPT);
    tty.type_keys("exit\r");
    assert!(tty.exit_status().success());

    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_file_run_stops_with_an_error_when_the_server_goes_away() {
    let dir = common::scratch_dir("shell-file-lost");
    let server = server_with_rows(&dir.join("node"), &["--sync-mode", "batch"]);
    // The "file" is a FIFO the test writes into, so the server can restart in the middle of it.
    let fifo = dir.join("statements.cql");
    let path = CString::new(fifo.to_str().expect("utf-8 path")).expect("no NUL in the path");
    // SAFETY: mkfifo(3) with a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let mut shell = common::enigmadb()
        .args(["shell", "--host", &server.addr.to_string(), "-f", fifo.to_str().expect("utf-8 path")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the shell");
    // Opening the write end waits for the shell to open the read end.
    let mut statements = std::fs::OpenOptions::new().write(true).open(&fifo).expect("opening the FIFO");
    statements.write_all(b"SELECT c FROM t WHERE p = 'x' AND c = 1;\n").expect("writing a statement");
    let mut stdout = BufReader::new(shell.stdout.take().expect("piped stdout"));
    let mut shown = String::new();
    while !shown.ends_with("(1 rows)\n") {
        assert_ne!(stdout.read_line(&mut shown).expect("reading the shell's output"), 0, "{shown:?}");
    }
    assert_eq!(shown, "\n c\n---\n 1\n\n(1 rows)\n");

    let server = restart(server);
    let rest = "SELECT c FROM t WHERE p = 'x' AND c = 2;\nSELECT c FROM t WHERE p = 'x';\n";
    statements.write_all(rest.as_bytes()).expect("writing statements");
    drop(statements);
    let mut shown = String::new();
    stdout.read_to_string(&mut shown).expect("reading the shell's output");
    let out = shell.wait_with_output().expect("running the shell");
    let stderr = common::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let addr = server.addr;
    assert_eq!(
        stderr,
        format!(
            "ConnectionError: the server at {addr} closed the connection; the statement was not run\n\
             error: lost the connection to {addr}; statements after the failed one were not run\n"
        )
    );
    assert_eq!(shown, "\n", "nothing ran after the restart");
    common::stop_cleanly(server);
    std::fs::remove_dir_all(&dir).ok();
}

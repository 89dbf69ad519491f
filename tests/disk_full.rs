//! A real `enigmadb server` on a small loop-mounted ext4 filesystem (tmpfs cannot serve the
//! WAL's O_DIRECT files) that fills up and empties again: writes are refused with one typed
//! error saying the disk is full, the node comes back by itself once space is freed, no
//! acknowledged row is lost, and a node started on a full disk refuses to start saying why.
//! Needs root (mount); without it the test says so and skips.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wire::client::ClientError;
use wire::protocol::{ErrorCode, QueryParams};
use wire::Consistency;

/// Size of the filesystem image: room for the node and a little data, small enough to fill in
/// a moment.
const IMAGE_BYTES: u64 = 48 << 20;
/// How long the node may take to notice freed space (it retries every second).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
const PAD: usize = 1000;

/// A loop-mounted ext4 image; unmounted and removed on drop.
struct LoopFs {
    image: PathBuf,
    mount: PathBuf,
}

impl LoopFs {
    /// None (after saying why) when this machine cannot make one.
    fn create(name: &str) -> Option<LoopFs> {
        let base = common::scratch_dir(name);
        let image = base.join("fs.img");
        let mount = base.join("mnt");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::File::create(&image).unwrap().set_len(IMAGE_BYTES).unwrap();
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            Command::new(program).args(args).stdout(Stdio::null()).output().map_err(|e| e.to_string()).and_then(|o| {
                if o.status.success() {
                    Ok(())
                } else {
                    Err(common::text(&o.stderr))
                }
            })
        };
        // No reserved blocks: the server (root) and the test fill the same space. 4 KiB blocks
        // (a small image would get 1 KiB ones), so that filling it in 4 KiB steps leaves none.
        let options = ["-F", "-q", "-m", "0", "-b", "4096"];
        let mut mkfs_args: Vec<&std::ffi::OsStr> = options.iter().map(|o| o.as_ref()).collect();
        mkfs_args.push(image.as_os_str());
        let mkfs = run("mkfs.ext4", &mkfs_args);
        let mounted =
            mkfs.and_then(|()| run("mount", &["-o".as_ref(), "loop".as_ref(), image.as_os_str(), mount.as_os_str()]));
        match mounted {
            Ok(()) => Some(LoopFs { image, mount }),
            Err(why) => {
                eprintln!("SKIPPED: cannot make a loop-mounted ext4 filesystem here (needs root, mkfs.ext4, loop devices): {why}");
                let _ = std::fs::remove_dir_all(&base);
                None
            }
        }
    }

    /// Fills the filesystem: a file grown until the disk refuses more. Returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.mount.join("filler");
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path).unwrap();
        for chunk in [1 << 20, 4096] {
            let bytes = vec![0x77u8; chunk];
            while file.write_all(&bytes).and_then(|()| file.sync_data()).is_ok() {}
        }
        path
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_file(&self.image);
        if let Some(base) = self.image.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// What became of one write.
enum Outcome {
    Acknowledged,
    Refused(wire::protocol::ErrorResponse),
    /// No answer in the client's time (a write the node had accepted waits for disk space):
    /// the connection is replaced.
    NoAnswer,
}

/// One write of row `k{n}` on `client` (reconnected after a write with no answer).
fn insert(client: &mut wire::client::Client, addr: SocketAddr, n: u32) -> Outcome {
    let text = format!("INSERT INTO kv (k, v) VALUES ('k{n}', '{}')", "v".repeat(PAD));
    match client.query_with(&text, QueryParams::with_consistency(Consistency::One)) {
        Ok(_) => Outcome::Acknowledged,
        Err(ClientError::Server(e)) => Outcome::Refused(e),
        Err(_) => {
            *client = common::connect(addr);
            Outcome::NoAnswer
        }
    }
}

/// Writes k0, k1, ... on a thread of its own until told to stop, recording every
/// acknowledged key; a refused write is retried (the key is not acknowledged until it is).
fn writer(addr: SocketAddr, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<u32>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut client = common::connect(addr);
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            if matches!(insert(&mut client, addr, n), Outcome::Acknowledged) {
                acked.lock().unwrap().push(n);
                n += 1;
            }
        }
    })
}

fn assert_all_acked(addr: SocketAddr, acked: &[u32]) {
    let stored = common::key_values(addr, "kv");
    for n in acked {
        assert!(stored.contains_key(&format!("k{n}")), "acknowledged row k{n} is missing");
    }
}

/// Polls `done` until it holds or `timeout` passes.
fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_args(config: &Path) -> Vec<String> {
    vec!["--config".into(), config.to_str().unwrap().into()]
}

#[test]
fn a_full_disk_refuses_writes_with_one_typed_error_and_recovers_once_freed() {
    let Some(fs) = LoopFs::create("disk-full") else { return };
    let dir = fs.mount.join("data");
    let config = fs.image.with_file_name("node.toml");
    // Small WAL segments, so that a new one (which needs space) is due every few dozen rows.
    std::fs::write(&config, "wal_segment_bytes = \"64KiB\"\nmemtable_budget = \"1MiB\"\n").unwrap();
    let args = start_args(&config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = common::Server::start(&dir, 1, &args);
    common::run_ok(server.addr, "CREATE TABLE kv (k text PRIMARY KEY, v text)");
    let (stop, acked) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writing = writer(server.addr, stop.clone(), acked.clone());
    wait_until("some acknowledged writes", RECOVERY_TIMEOUT, || acked.lock().unwrap().len() >= 50);

    let filler = fs.fill();
    // Writes are refused, fast, with one error that says the disk is full.
    let mut probe = common::connect(server.addr);
    let mut refusal = None;
    wait_until("a write refused for the full disk", RECOVERY_TIMEOUT, || {
        match insert(&mut probe, server.addr, 1_000_000) {
            Outcome::Refused(e) => {
                refusal = Some(e);
                true
            }
            _ => false,
        }
    });
    let refusal = refusal.unwrap();
    assert_eq!(refusal.code, ErrorCode::Overloaded, "{refusal:?}");
    assert!(refusal.message.contains("disk is full"), "{}", refusal.message);

    std::fs::remove_file(&filler).unwrap();
    // Back by itself: writes are taken again, and the writer's stalled write completed.
    wait_until("writes accepted again", RECOVERY_TIMEOUT, || {
        matches!(insert(&mut probe, server.addr, 1_000_001), Outcome::Acknowledged)
    });
    let before = acked.lock().unwrap().len();
    wait_until("the writer to go on", RECOVERY_TIMEOUT, || acked.lock().unwrap().len() > before + 50);
    stop.store(true, Ordering::Relaxed);
    writing.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_all_acked(server.addr, &acked);
    common::stop_cleanly(server);

    // A restart replays every acknowledged row.
    let server = common::Server::start(&dir, 1, &args);
    assert_all_acked(server.addr, &acked);
    common::stop_cleanly(server);

    // Started on a full disk: a clear refusal, and nothing half-started.
    let filler = fs.fill();
    let listen = format!("{}:0", common::loopback_host());
    let refusal_args = [&["--shards", "1", "--listen", &listen][..], &args].concat();
    let stderr = common::refused_start(&dir, &refusal_args);
    assert!(stderr.contains("disk holding") && stderr.contains("is full"), "{stderr}");
    std::fs::remove_file(&filler).unwrap();
    let server = common::Server::start(&dir, 1, &args);
    assert_all_acked(server.addr, &acked);
    common::stop_cleanly(server);
}

//! Where the time went while a benchmark ran: CPU time of a thread or of the process
//! (getrusage), of every thread of another process (/proc/PID/task), busy and iowait shares of
//! the whole machine (/proc/stat), and the counters of the block device under a directory
//! (/proc/diskstats: reads, writes, flushes, busy time), and a [`Snapshot`] of all of them to
//! measure a phase between two moments.
//! Parsers are pure functions; only the `read`/`now`/`take` constructors touch the system.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

/// CPU time consumed, and the events that show what else the CPU was doing: minor page faults
/// (first touch of fresh heap memory), context switches (voluntary: the thread parked;
/// involuntary: something else needed the CPU) and the time the thread was runnable but waited
/// for a CPU (its run delay: on a saturated machine, busy plus waiting is what it wanted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuUsage {
    pub user: Duration,
    pub system: Duration,
    pub minor_faults: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    /// Time spent runnable, waiting for a CPU (/proc/.../schedstat); 0 where it is not read
    /// (getrusage) or the kernel keeps no scheduler statistics.
    pub run_delay: Duration,
}

impl CpuUsage {
    /// Usage of the calling thread so far (`getrusage(RUSAGE_THREAD)`). Work the kernel hands
    /// to its own threads (io_uring's io-wq workers, block-device completion) is not counted.
    pub fn this_thread() -> std::io::Result<CpuUsage> {
        rusage(libc::RUSAGE_THREAD)
    }

    /// Usage of the whole process so far (all threads).
    pub fn this_process() -> std::io::Result<CpuUsage> {
        rusage(libc::RUSAGE_SELF)
    }

    /// User plus system time.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// What was consumed between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuUsage) -> CpuUsage {
        CpuUsage {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
            voluntary_switches: self.voluntary_switches.saturating_sub(earlier.voluntary_switches),
            involuntary_switches: self.involuntary_switches.saturating_sub(earlier.involuntary_switches),
            run_delay: self.run_delay.saturating_sub(earlier.run_delay),
        }
    }
}

fn rusage(who: libc::c_int) -> std::io::Result<CpuUsage> {
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers), and getrusage only writes
    // into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, exclusively borrowed rusage for the call's duration.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let tv =
        |t: libc::timeval| Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64);
    let count = |n: libc::c_long| n.max(0) as u64;
    Ok(CpuUsage {
        user: tv(usage.ru_utime),
        system: tv(usage.ru_stime),
        minor_faults: count(usage.ru_minflt),
        voluntary_switches: count(usage.ru_nvcsw),
        involuntary_switches: count(usage.ru_nivcsw),
        run_delay: Duration::ZERO,
    })
}

/// CPU usage of one thread of a process, as /proc/PID/task/TID/{stat,status} report it (so of
/// any process, not only this one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadUsage {
    pub tid: u32,
    /// The thread's name (`comm`: at most 15 bytes; glommio executors carry their builder's name).
    pub name: String,
    pub cpu: CpuUsage,
}

/// Another process's CPU usage at one moment: the whole process (threads that have exited
/// included) and each live thread. Two of them bracket a phase.
#[derive(Clone, Debug)]
pub struct ProcessUsage {
    pub at: Instant,
    /// User and system time and minor faults of all threads, dead ones included. Context
    /// switches are only counted per thread (`threads`), so they are 0 here.
    pub total: CpuUsage,
    pub threads: Vec<ThreadUsage>,
}

impl ProcessUsage {
    /// Reads /proc/`pid`/stat and every /proc/`pid`/task/*/{stat,status}. A thread that exits
    /// while being read is skipped (its time stays in `total`).
    pub fn read(pid: u32) -> std::io::Result<ProcessUsage> {
        let at = Instant::now();
        let tick = clock_tick()?;
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let stat_path = format!("/proc/{pid}/stat");
        let (_, total) = parse_task_stat(&std::fs::read_to_string(&stat_path)?, tick)
            .ok_or_else(|| invalid(format!("{stat_path}: unexpected format")))?;
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            let (Ok(stat), Ok(status)) = (
                std::fs::read_to_string(entry.path().join("stat")),
                std::fs::read_to_string(entry.path().join("status")),
            ) else {
                continue; // exited meanwhile
            };
            let (name, mut cpu) = parse_task_stat(&stat, tick)
                .ok_or_else(|| invalid(format!("/proc/{pid}/task/{tid}/stat: unexpected format")))?;
            (cpu.voluntary_switches, cpu.involuntary_switches) = parse_status_switches(&status);
            // Absent on kernels built without scheduler statistics: no run delay then.
            cpu.run_delay = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .and_then(|text| parse_schedstat_run_delay(&text))
                .unwrap_or_default();
            threads.push(ThreadUsage { tid, name, cpu });
        }
        threads.sort_by_key(|t| t.tid);
        Ok(ProcessUsage { at, total, threads })
    }

    /// What each thread used since `earlier`, matched by thread id; a thread born in between
    /// counts from zero. Ordered by thread id.
    pub fn threads_since(&self, earlier: &ProcessUsage) -> Vec<ThreadUsage> {
        self.threads
            .iter()
            .map(|t| {
                let before = earlier.threads.iter().find(|e| e.tid == t.tid).map(|e| e.cpu).unwrap_or_default();
                ThreadUsage { tid: t.tid, name: t.name.clone(), cpu: t.cpu.since(&before) }
            })
            .collect()
    }
}

/// Length of a clock tick, the unit of /proc's CPU times (`sysconf(_SC_CLK_TCK)`, 100 Hz on
/// nearly every Linux system).
fn clock_tick() -> std::io::Result<Duration> {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return Err(std::io::Error::other("sysconf(_SC_CLK_TCK) failed"));
    }
    Ok(Duration::from_nanos(1_000_000_000 / hz as u64))
}

/// The name, user and system time (in ticks of `tick`) and minor faults of a
/// /proc/PID[/task/TID]/stat line. The name is in parentheses and may itself hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_task_stat(text: &str, tick: Duration) -> Option<(String, CpuUsage)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    // After the name: state (field 3) ... minflt (10) ... utime (14), stime (15).
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let at = |field: usize| fields.get(field - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = |n: u64| tick.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
    let usage = CpuUsage { user: ticks(at(14)?), system: ticks(at(15)?), minor_faults: at(10)?, ..CpuUsage::default() };
    Some((name, usage))
}

/// (voluntary, involuntary) context switches of a /proc/PID/task/TID/status text; 0 for a
/// line that is missing.
pub fn parse_status_switches(text: &str) -> (u64, u64) {
    let count = |key: &str| {
        text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix(':')?.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    (count("voluntary_ctxt_switches"), count("nonvoluntary_ctxt_switches"))
}

/// The run delay (time runnable but waiting for a CPU) of a /proc/PID/task/TID/schedstat text:
/// "<on-CPU ns> <run delay ns> <timeslices>".
pub fn parse_schedstat_run_delay(text: &str) -> Option<Duration> {
    let delay = text.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(delay))
}

/// The machine-wide CPU counters of /proc/stat's first line, in clock ticks (USER_HZ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemCpu {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

/// Shares of all CPUs' time over a window (0.0..=1.0 each; they add up to 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuShares {
    pub user: f64,
    pub system: f64,
    /// irq + softirq.
    pub interrupts: f64,
    /// Idle with I/O outstanding.
    pub iowait: f64,
    pub idle: f64,
    /// Taken by the hypervisor.
    pub steal: f64,
}

impl std::fmt::Display for CpuShares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user {:.0}%  sys {:.0}%  irq {:.0}%  iowait {:.0}%  idle {:.0}%  steal {:.0}%",
            self.user * 100.0,
            self.system * 100.0,
            self.interrupts * 100.0,
            self.iowait * 100.0,
            self.idle * 100.0,
            self.steal * 100.0
        )
    }
}

impl SystemCpu {
    pub fn now() -> std::io::Result<SystemCpu> {
        let text = std::fs::read_to_string("/proc/stat")?;
        parse_proc_stat(&text)
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no aggregate cpu line in /proc/stat"))
    }

    /// How the machine's CPU time between `earlier` and `self` was spent.
    pub fn shares_since(&self, earlier: &SystemCpu) -> CpuShares {
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64;
        let user = d(self.user, earlier.user) + d(self.nice, earlier.nice);
        let system = d(self.system, earlier.system);
        let interrupts = d(self.irq, earlier.irq) + d(self.softirq, earlier.softirq);
        let iowait = d(self.iowait, earlier.iowait);
        let idle = d(self.idle, earlier.idle);
        let steal = d(self.steal, earlier.steal);
        let total = user + system + interrupts + iowait + idle + steal;
        if total == 0.0 {
            return CpuShares::default();
        }
        CpuShares {
            user: user / total,
            system: system / total,
            interrupts: interrupts / total,
            iowait: iowait / total,
            idle: idle / total,
            steal: steal / total,
        }
    }
}

/// The aggregate `cpu` line of /proc/stat.
pub fn parse_proc_stat(text: &str) -> Option<SystemCpu> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).map_while(|f| f.parse().ok()).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    (v.len() >= 4).then(|| SystemCpu {
        user: at(0),
        nice: at(1),
        system: at(2),
        idle: at(3),
        iowait: at(4),
        irq: at(5),
        softirq: at(6),
        steal: at(7),
    })
}

/// Counters of one block device from /proc/diskstats (kernel 5.5+ field layout).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiskCounters {
    pub device: String,
    /// Read requests completed.
    pub reads: u64,
    pub sectors_read: u64,
    pub read_ms: u64,
    pub writes: u64,
    pub sectors_written: u64,
    pub write_ms: u64,
    /// Time the device had I/O in flight.
    pub busy_ms: u64,
    /// Flush requests completed (what an fdatasync turns into on a write-back-cache device).
    pub flushes: u64,
    pub flush_ms: u64,
}

/// What a device did over a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DiskActivity {
    pub device: String,
    pub reads: u64,
    pub bytes_read: u64,
    /// Mean time of one read request.
    pub mean_read_ms: f64,
    pub writes: u64,
    pub bytes_written: u64,
    pub flushes: u64,
    /// Share of the window the device had I/O in flight (0.0..=1.0).
    pub busy_share: f64,
    /// Mean time of one flush request.
    pub mean_flush_ms: f64,
    /// Mean time of one write request.
    pub mean_write_ms: f64,
}

impl DiskCounters {
    /// The counters of the whole disk holding `path` (the parent disk when the file system
    /// sits on a partition). `None` when they cannot be found (tmpfs, overlay, containers).
    pub fn for_path(path: &Path) -> Option<DiskCounters> {
        use std::os::unix::fs::MetadataExt;
        let (major, minor) = split_dev(std::fs::metadata(path).ok()?.dev());
        let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
        // A partition's sysfs directory sits inside its disk's directory.
        let disk = if sys.join("partition").exists() { sys.parent()? } else { sys.as_path() };
        let name = disk.file_name()?.to_str()?.to_owned();
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        parse_diskstats(&text, &name)
    }

    /// Re-reads the same device.
    pub fn reread(&self) -> Option<DiskCounters> {
        let text = std::fs::read_to_string("/proc/diskstats").ok()?;
        parse_diskstats(&text, &self.device)
    }

    /// Activity between `earlier` and `self`, over a window of `wall`.
    pub fn activity_since(&self, earlier: &DiskCounters, wall: Duration) -> DiskActivity {
        let reads = self.reads.saturating_sub(earlier.reads);
        let writes = self.writes.saturating_sub(earlier.writes);
        let flushes = self.flushes.saturating_sub(earlier.flushes);
        let per = |ms: u64, n: u64| if n == 0 { 0.0 } else { ms as f64 / n as f64 };
        let wall_ms = wall.as_secs_f64() * 1e3;
        DiskActivity {
            device: self.device.clone(),
            reads,
            bytes_read: self.sectors_read.saturating_sub(earlier.sectors_read) * 512,
            mean_read_ms: per(self.read_ms.saturating_sub(earlier.read_ms), reads),
            writes,
            bytes_written: self.sectors_written.saturating_sub(earlier.sectors_written) * 512,
            flushes,
            busy_share: if wall_ms > 0.0 {
                (self.busy_ms.saturating_sub(earlier.busy_ms) as f64 / wall_ms).min(1.0)
            } else {
                0.0
            },
            mean_flush_ms: per(self.flush_ms.saturating_sub(earlier.flush_ms), flushes),
            mean_write_ms: per(self.write_ms.saturating_sub(earlier.write_ms), writes),
        }
    }
}

/// (major, minor) of a Linux `dev_t` (glibc's encoding).
pub fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The line of `device` in /proc/diskstats.
pub fn parse_diskstats(text: &str, device: &str) -> Option<DiskCounters> {
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(2) != Some(&device) {
            return None;
        }
        let at = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        // Fields after major, minor, name: reads completed 3, merged 4, sectors 5, ms 6,
        // writes completed 7, merged 8, sectors 9, ms 10, in flight 11, io ms 12, weighted 13,
        // discards 14..18, flushes 18, ms 19.
        Some(DiskCounters {
            device: device.to_owned(),
            reads: at(3),
            sectors_read: at(5),
            read_ms: at(6),
            writes: at(7),
            sectors_written: at(9),
            write_ms: at(10),
            busy_ms: at(12),
            flushes: at(18),
            flush_ms: at(19),
        })
    })
}

/// The counters of the process, the machine and one disk at one moment: two of them bracket a
/// phase of a benchmark.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Instant,
    pub process: CpuUsage,
    pub machine: Option<SystemCpu>,
    pub disk: Option<DiskCounters>,
}

impl Snapshot {
    /// Reads the counters now. The disk is the one holding `disk_of`, or `previous` (the device
    /// an earlier snapshot found) re-read, which skips looking the device up again.
    pub fn take(disk_of: &Path, previous: Option<&DiskCounters>) -> std::io::Result<Snapshot> {
        Ok(Snapshot {
            at: Instant::now(),
            process: CpuUsage::this_process()?,
            machine: SystemCpu::now().ok(),
            disk: match previous {
                Some(d) => d.reread(),
                None => DiskCounters::for_path(disk_of),
            },
        })
    }

    /// How the machine's CPUs spent the time since `earlier` (None when /proc/stat was unreadable).
    pub fn machine_since(&self, earlier: &Snapshot) -> Option<CpuShares> {
        self.machine.zip(earlier.machine).map(|(a, b)| a.shares_since(&b))
    }

    /// What the disk did since `earlier` (None when its counters were unreadable).
    pub fn disk_since(&self, earlier: &Snapshot) -> Option<DiskActivity> {
        let window = self.at.saturating_duration_since(earlier.at);
        self.disk.as_ref().zip(earlier.disk.as_ref()).map(|(a, b)| a.activity_since(b, window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_aggregate_line_is_parsed_and_shared_out() {
        let before = "cpu  100 0 50 800 40 5 5 0 0 0\ncpu0 50 0 25 400 20 2 3 0 0 0\n";
        let after = "cpu  200 0 150 900 140 5 5 0 0 0\n";
        let (a, b) = (parse_proc_stat(before).unwrap(), parse_proc_stat(after).unwrap());
        assert_eq!(a.iowait, 40);
        let s = b.shares_since(&a);
        assert!((s.user - 0.25).abs() < 1e-9 && (s.system - 0.25).abs() < 1e-9);
        assert!((s.iowait - 0.25).abs() < 1e-9 && (s.idle - 0.25).abs() < 1e-9);
        assert_eq!(parse_proc_stat("intr 1 2 3\n"), None);
    }

    #[test]
    fn diskstats_line_of_the_device_is_parsed() {
        let text = " 253       0 vda 1000 0 8000 50 2000 10 64000 300 0 900 350 0 0 0 0 120 80\n\
                    253       1 vda1 10 0 80 5 20 1 640 3 0 9 8 0 0 0 0 0 0\n";
        let d = parse_diskstats(text, "vda").unwrap();
        assert_eq!((d.reads, d.sectors_read, d.read_ms), (1000, 8000, 50));
        assert_eq!((d.writes, d.sectors_written, d.write_ms), (2000, 64000, 300));
        assert_eq!((d.busy_ms, d.flushes, d.flush_ms), (900, 120, 80));
        assert_eq!(parse_diskstats(text, "vda1").unwrap().writes, 20);
        assert_eq!(parse_diskstats(text, "sda"), None);
    }

    #[test]
    fn task_stat_fields_are_counted_after_the_name() {
        let tick = Duration::from_millis(10);
        let line = "4242 (shard-0 (x) y) S 1 4242 4242 0 -1 4194624 1234 0 5 0 250 75 0 0 20 0 3 0 99 0 0\n";
        let (name, usage) = parse_task_stat(line, tick).unwrap();
        assert_eq!(name, "shard-0 (x) y");
        assert_eq!((usage.user, usage.system), (Duration::from_millis(2_500), Duration::from_millis(750)));
        assert_eq!(usage.minor_faults, 1234);
        assert_eq!(parse_task_stat("4242 (cut) S 1 2 3", tick), None);
        assert_eq!(parse_task_stat("no name at all", tick), None);
    }

    #[test]
    fn status_switch_counts_are_found_by_key() {
        let text = "Name:\tshard-1\nvoluntary_ctxt_switches:\t812\nnonvoluntary_ctxt_switches:\t9\n";
        assert_eq!(parse_status_switches(text), (812, 9));
        assert_eq!(parse_status_switches("Name:\tx\n"), (0, 0));
    }

    #[test]
    fn schedstat_run_delay_is_the_second_field() {
        assert_eq!(parse_schedstat_run_delay("218531454 122354928 1324\n"), Some(Duration::from_nanos(122_354_928)));
        assert_eq!(parse_schedstat_run_delay("218531454\n"), None);
        assert_eq!(parse_schedstat_run_delay("x y z"), None);
    }

    #[test]
    fn this_process_threads_are_listed_by_name_with_their_cpu() {
        let spinner = std::thread::Builder::new()
            .name("usage-probe".into())
            .spawn(|| {
                let before = CpuUsage::this_thread().unwrap();
                let mut x = 0u64;
                while CpuUsage::this_thread().unwrap().since(&before).total() < Duration::from_millis(30) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(std::hint::black_box(1));
                }
                std::hint::black_box(x);
                let usage = ProcessUsage::read(std::process::id()).unwrap();
                let me = usage.threads.iter().find(|t| t.name == "usage-probe").cloned();
                (usage, me)
            })
            .unwrap();
        let (usage, me) = spinner.join().unwrap();
        let me = me.expect("the probe thread is listed under its name");
        // /proc counts in 10 ms ticks; the thread used at least 30 ms.
        assert!(me.cpu.total() >= Duration::from_millis(20), "{me:?}");
        assert!(usage.total.total() >= me.cpu.total(), "the process total covers the thread");
        let later = ProcessUsage::read(std::process::id()).unwrap();
        assert!(later.threads_since(&usage).iter().all(|t| t.cpu.total() <= later.total.total()));
    }

    #[test]
    fn dev_numbers_split_into_major_and_minor() {
        assert_eq!(split_dev((253 << 8) | 1), (253, 1));
        assert_eq!(split_dev((259 << 8) | (300 & 0xff) | ((300 & !0xff) << 12)), (259, 300));
    }

    #[test]
    fn thread_cpu_time_grows_with_work() {
        // Spin until the thread's CPU counter shows 10 ms (a broken counter never does); wall
        // time is no measure on a loaded machine, where the thread may wait for a core.
        let before = CpuUsage::this_thread().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(std::hint::black_box(1));
            }
            let used = CpuUsage::this_thread().unwrap().since(&before);
            if used.total() >= Duration::from_millis(10) || std::time::Instant::now() > deadline {
                break used;
            }
        };
        std::hint::black_box(x);
        assert!(used.total() >= Duration::from_millis(10), "{used:?}");
        let faults = CpuUsage::this_thread().unwrap().minor_faults;
        let page = vec![1u8; 8 << 20];
        std::hint::black_box(&page);
        let more = CpuUsage::this_thread().unwrap().minor_faults - faults;
        assert!(more >= 1, "touching 8 MiB of fresh memory faults");
    }
}

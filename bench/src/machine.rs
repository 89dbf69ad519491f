//! What a report says about where it was measured: CPUs, memory, kernel, date, source revision
//! and build profile. Read from /proc and a few commands; anything unreadable is left out
//! (`None`), never guessed. Also how the programs place their shard executors on the CPUs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPUs this process may run on (`nproc`).
    pub nproc: usize,
    pub cpu_model: Option<String>,
    pub memory_mib: Option<u64>,
    /// `uname -r`.
    pub kernel: Option<String>,
    pub hostname: Option<String>,
    /// UTC, ISO 8601, when the report was made.
    pub date: String,
    /// `git describe --always --dirty` of the source tree, when run inside one.
    pub git: Option<String>,
    /// "release" or "debug": numbers from a debug build are not worth comparing.
    pub build: &'static str,
}

impl Machine {
    /// [`Machine::probe`] of the bench crate's checkout, warning on stdout when the program is
    /// a debug build (its numbers are not worth comparing).
    pub fn probe_for_run() -> Machine {
        let machine = Machine::probe(Path::new(env!("CARGO_MANIFEST_DIR")));
        if machine.build == "debug" {
            println!("WARNING: debug build; run with --release for numbers worth comparing");
        }
        machine
    }

    /// Describes this machine now. `source_dir` is where `git` is asked about the revision.
    pub fn probe(source_dir: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name").map(str::to_owned),
            memory_mib: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib / 1024),
            kernel: command_output("uname", &["-r"], None),
            hostname: command_output("uname", &["-n"], None),
            date: utc_iso8601(SystemTime::now()),
            git: command_output("git", &["describe", "--always", "--dirty"], Some(source_dir)),
            build: if cfg!(debug_assertions) { "debug" } else { "release" },
        }
    }
}

/// The flags of the benchmarks that run the engine embedded, on executors of their own
/// (`write_surge`, `read_path`), flattened into each one's own.
#[derive(clap::Args, Clone, Debug)]
pub struct EngineRunArgs {
    /// Memory each executor registers with io_uring (bounded by `ulimit -l`; docs/GLOMMIO.md, memory).
    #[arg(long, default_value_t = 512 * 1024)]
    pub io_memory: usize,
    /// Busy-poll this long before an idle executor parks (0 = park at once, the node's
    /// default). Parking costs a wake-up when the I/O completes (docs/GLOMMIO.md, pitfall 4).
    #[arg(long, default_value_t = 0)]
    pub spin_before_park_us: u64,
    /// Pin shard i to CPU i: auto pins when there are at least as many CPUs as shards.
    #[arg(long, value_enum, default_value_t = Pinning::Auto)]
    pub pin: Pinning,
    /// Parent directory of the run's data (a fresh subdirectory is created and removed).
    /// Must be on the disk you mean to measure (not tmpfs).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench-data"))]
    pub dir: PathBuf,
    /// Keep the data directory after the run (`read_path --reuse` reads it again).
    #[arg(long)]
    pub keep: bool,
}

/// Whether shard executors are pinned to CPUs (executor i to CPU i): a command-line choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pinning {
    /// Pin when there are at least as many CPUs as executors.
    Auto,
    Yes,
    No,
}

impl Pinning {
    /// True when `executors` executors are to be pinned on a machine with `nproc` CPUs.
    pub fn pins(self, executors: usize, nproc: usize) -> bool {
        match self {
            Pinning::Auto => executors <= nproc,
            Pinning::Yes => true,
            Pinning::No => false,
        }
    }
}

/// The value of the first `key: value` line of a /proc text file.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// The trimmed standard output of a command that succeeded, else `None`.
fn command_output(program: &str, args: &[&str], dir: Option<&Path>) -> Option<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

/// `2026-03-21T09:30:00Z`.
pub fn utc_iso8601(t: SystemTime) -> String {
    // Before 1970 only with a broken clock; print the epoch rather than fail a report.
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// (year, month, day) of a day count since 1970-01-01 in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_utc_iso8601_across_leap_days() {
        let at = |secs| utc_iso8601(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn auto_pins_only_when_every_executor_gets_its_own_cpu() {
        assert!(Pinning::Auto.pins(2, 2));
        assert!(!Pinning::Auto.pins(3, 2));
        assert!(Pinning::Yes.pins(3, 2));
        assert!(!Pinning::No.pins(1, 2));
    }

    #[test]
    fn proc_fields_are_found_by_key() {
        let text = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nMemTotal:       24684 kB\n";
        assert_eq!(field(text, "model name"), Some("Some CPU @ 2.0GHz"));
        assert_eq!(field(text, "MemTotal"), Some("24684 kB"));
        assert_eq!(field(text, "nope"), None);
    }
}

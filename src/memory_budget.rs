//! How much of the machine's memory a node gives its MemTables and block caches when the
//! settings say `auto` (the default). Direct I/O bypasses the page cache, so memory the node
//! does not take for its cache serves nothing: like ScyllaDB, the node keeps a reserve for
//! the operating system and everything else it allocates, and gives a large share of the
//! rest to its caches. Pure (the machine's memory is read at the edge, [`machine_memory`]).

use std::fmt;
use std::path::Path;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Memory kept for the operating system, the WAL's page cache, answers, compaction buffers,
/// indexes and bloom filters: a tenth of the machine, at least this.
pub const MIN_RESERVE: u64 = GIB;
/// Share of the usable memory (machine minus reserve) all MemTables of the node may hold.
pub const MEMTABLE_SHARE: u64 = 8;
/// Bounds of an automatic MemTable budget per shard: below the lower one flushes get too small
/// to be worth their SSTables; above the upper one a flush and a WAL replay take too long.
pub const MIN_AUTO_MEMTABLE: u64 = 16 * MIB;
pub const MAX_AUTO_MEMTABLE: u64 = 128 * MIB;
/// Share of what is usable once the MemTables have theirs that the block caches get (the
/// other half is for the node's working memory under load).
pub const CACHE_SHARE: u64 = 2;
/// Smallest automatic block cache per shard.
pub const MIN_AUTO_CACHE: u64 = 8 * MIB;

/// Where the machine's memory figure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemorySource {
    /// `MemTotal` in /proc/meminfo.
    MemTotal,
    /// The memory limit of the process's cgroup (v2 `memory.max`), lower than `MemTotal`.
    CgroupLimit,
}

impl fmt::Display for MemorySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemorySource::MemTotal => "MemTotal",
            MemorySource::CgroupLimit => "cgroup memory.max",
        })
    }
}

/// The machine's memory as the node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineMemory {
    pub bytes: u64,
    pub source: MemorySource,
}

/// What a node gives each shard, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    pub memtable_budget: u64,
    pub cache_budget: u64,
    /// One line a user can read: for each budget, the setting or how `auto` sized it.
    pub why: String,
}

/// The budgets per shard: `memtable` and `cache` are the explicit settings (`None`: auto).
/// `machine` is needed only for an automatic budget.
pub fn plan(machine: Option<MachineMemory>, shards: usize, memtable: Option<u64>, cache: Option<u64>) -> MemoryPlan {
    let shards = shards.max(1) as u64;
    let usable = machine.map(|m| m.bytes.saturating_sub((m.bytes / 10).max(MIN_RESERVE)));
    let memtable_budget = match (memtable, usable) {
        (Some(bytes), _) => bytes,
        (None, Some(usable)) => (usable / MEMTABLE_SHARE / shards).clamp(MIN_AUTO_MEMTABLE, MAX_AUTO_MEMTABLE),
        (None, None) => MIN_AUTO_MEMTABLE,
    };
    let cache_budget = match (cache, usable) {
        (Some(bytes), _) => bytes,
        (None, Some(usable)) => {
            (usable.saturating_sub(memtable_budget * shards) / CACHE_SHARE / shards).max(MIN_AUTO_CACHE)
        }
        (None, None) => MIN_AUTO_CACHE,
    };
    let machine_text = match machine {
        Some(m) => format!(
            "{} of machine memory ({}), {} usable after the reserve",
            size(m.bytes),
            m.source,
            size(usable.unwrap_or(0))
        ),
        None => "machine memory unknown".to_owned(),
    };
    let memtable_why = match memtable {
        Some(_) => "memtable_budget setting".to_owned(),
        None => format!(
            "auto: 1/{MEMTABLE_SHARE} of usable memory over {shards} shard(s), within {}..{}",
            size(MIN_AUTO_MEMTABLE),
            size(MAX_AUTO_MEMTABLE)
        ),
    };
    let cache_why = match cache {
        Some(_) => "cache_budget setting".to_owned(),
        None => format!("auto: 1/{CACHE_SHARE} of usable memory left by the MemTables, over {shards} shard(s)"),
    };
    let why = format!(
        "per shard: MemTables {} ({memtable_why}), block cache {} ({cache_why}); {machine_text}",
        size(memtable_budget),
        size(cache_budget)
    );
    MemoryPlan { memtable_budget, cache_budget, why }
}

/// The machine's memory for this process: `MemTotal`, or the cgroup's limit when lower.
/// `None` when /proc/meminfo cannot be read.
pub fn machine_memory() -> Option<MachineMemory> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = parse_mem_total(&meminfo)?;
    let limit =
        std::fs::read_to_string(Path::new("/sys/fs/cgroup/memory.max")).ok().and_then(|t| parse_cgroup_limit(&t));
    Some(match limit {
        Some(limit) if limit < total => MachineMemory { bytes: limit, source: MemorySource::CgroupLimit },
        _ => MachineMemory { bytes: total, source: MemorySource::MemTotal },
    })
}

/// `MemTotal:  24683988 kB` from /proc/meminfo, in bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then(|| kib.saturating_mul(1024))
}

/// A cgroup v2 `memory.max`: a byte count, or `max` (no limit: `None`).
pub fn parse_cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// "5.2GiB", "256MiB".
fn size(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1}GiB", bytes as f64 / GIB as f64)
    } else {
        format!("{}MiB", bytes / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(gib: u64) -> Option<MachineMemory> {
        Some(MachineMemory { bytes: gib * GIB, source: MemorySource::MemTotal })
    }

    #[test]
    fn a_large_machine_gives_most_memory_to_the_cache_and_caps_memtables() {
        let p = plan(machine(24), 2, None, None);
        assert_eq!(p.memtable_budget, MAX_AUTO_MEMTABLE);
        // 24 GiB less a 2.4 GiB reserve, less 2 x 128 MiB of MemTables, halved, per shard.
        let usable = 24 * GIB - 24 * GIB / 10;
        assert_eq!(p.cache_budget, (usable - 2 * MAX_AUTO_MEMTABLE) / 2 / 2);
        assert!(p.cache_budget > 5 * GIB, "{}", p.cache_budget);
        assert!(p.why.contains("auto") && p.why.contains("24.0GiB") && p.why.contains("MemTotal"), "{}", p.why);
    }

    #[test]
    fn the_whole_node_stays_inside_the_machine_for_every_shard_count() {
        for gib in [1, 2, 4, 8, 24, 256] {
            for shards in [1, 2, 8, 64] {
                let p = plan(machine(gib), shards, None, None);
                let total = (p.memtable_budget + p.cache_budget) * shards as u64;
                let floor = (MIN_AUTO_MEMTABLE + MIN_AUTO_CACHE) * shards as u64;
                assert!(total <= (gib * GIB).max(floor), "{gib} GiB, {shards} shards: {total}");
                assert!(p.memtable_budget >= MIN_AUTO_MEMTABLE && p.cache_budget >= MIN_AUTO_CACHE);
            }
        }
    }

    #[test]
    fn a_small_machine_gets_the_floors() {
        let p = plan(machine(1), 4, None, None);
        assert_eq!((p.memtable_budget, p.cache_budget), (MIN_AUTO_MEMTABLE, MIN_AUTO_CACHE));
    }

    #[test]
    fn settings_override_auto_and_say_so() {
        let p = plan(machine(24), 2, Some(8 * MIB), Some(MIB));
        assert_eq!((p.memtable_budget, p.cache_budget), (8 * MIB, MIB));
        assert!(p.why.contains("memtable_budget setting") && p.why.contains("cache_budget setting"), "{}", p.why);
        // An explicit MemTable budget leaves the cache the rest.
        let p = plan(machine(24), 1, Some(GIB), None);
        assert_eq!(p.cache_budget, (24 * GIB - 24 * GIB / 10 - GIB) / 2);
    }

    #[test]
    fn unknown_memory_falls_back_to_the_floors() {
        let p = plan(None, 2, None, None);
        assert_eq!((p.memtable_budget, p.cache_budget), (MIN_AUTO_MEMTABLE, MIN_AUTO_CACHE));
        assert!(p.why.contains("unknown"), "{}", p.why);
    }

    #[test]
    fn meminfo_and_cgroup_files_parse() {
        let meminfo = "MemTotal:       24683988 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_mem_total(meminfo), Some(24683988 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: lots kB\n"), None);
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("4294967296\n"), Some(4 << 30));
    }
}

//! The server's settings: their defaults, the TOML file (`--config`) that overrides them, and
//! the command-line flags that override both. Unknown keys and bad values are rejected when the
//! file is read, with a message naming the key; nothing here touches the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shards::node::NodeConfig;
use shards::wal::SyncMode;

/// Default client address (DESIGN.md).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9470";
/// Default port of the peer protocol (the cluster issue).
pub const DEFAULT_PEER_PORT: u16 = 7470;

/// A size in bytes: an integer, or a string with a unit ("64MiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => usize::try_from(n).map(Size).map_err(serde::de::Error::custom),
            Raw::Text(t) => parse_size(&t).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses "65536", "64KiB", "256MiB", "1GiB" (KB/MB/GB and K/M/G are read as binary units too).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("'{text}' is not a size (e.g. 65536, 64KiB, 256MiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        other => return Err(format!("unknown size unit '{other}' in '{text}' (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1usize << shift).ok_or_else(|| format!("'{text}' is too large"))
}

/// When an acknowledged write is durable (docs/ARCHITECTURE.md, Durability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncModeSetting {
    /// Acknowledge after the fdatasync that covers the write (group commit).
    Batch,
    /// Acknowledge once the write completed; fdatasync every `periodic_sync_ms`.
    Periodic,
}

impl From<SyncModeSetting> for SyncMode {
    fn from(s: SyncModeSetting) -> SyncMode {
        match s {
            SyncModeSetting::Batch => SyncMode::Batch,
            SyncModeSetting::Periodic => SyncMode::Periodic,
        }
    }
}

/// Every setting of `enigmadb server`, with its default. The TOML file uses these names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Node data directory.
    pub data_dir: PathBuf,
    /// Client protocol address.
    pub listen: SocketAddr,
    /// Peer protocol address (used by the cluster layer).
    pub peer_listen: SocketAddr,
    /// Shards (one executor each); default one per available core. Fixed when the data
    /// directory is created.
    pub shards: usize,
    /// Vnode tokens per shard, chosen when the data directory is created.
    pub num_tokens: usize,
    pub sync_mode: SyncModeSetting,
    /// fdatasync period in periodic mode, milliseconds (Cassandra's commitlog_sync_period).
    pub periodic_sync_ms: u64,
    /// MemTable bytes per shard before a flush.
    pub memtable_budget: Size,
    /// Block cache bytes per shard (direct I/O has no page cache).
    pub cache_budget: Size,
    /// One WAL segment file.
    pub wal_segment_bytes: Size,
    /// Largest frame a client may send or receive.
    pub max_frame_bytes: Size,
    /// Client connections served at once; more are answered with an overloaded error.
    pub max_connections: usize,
    /// Requests of one connection in progress at once; reading stops beyond it.
    pub max_requests_per_connection: usize,
    /// Pin shard i to CPU i (a production node); leave off when nodes share cores.
    pub pin_shards: bool,
    /// Microseconds an idle executor spins before parking (cross-core wake-up latency,
    /// GLOMMIO.md pitfall 4); 0 parks at once.
    pub spin_before_park_us: u64,
    /// Bound of each shard's request queue.
    pub shard_queue: usize,
    /// At start, quarantine SSTables that fail their checksums instead of refusing to start.
    pub quarantine_corrupt_sstables: bool,
    /// On WAL corruption in the middle of the log, truncate there instead of refusing to start.
    pub wal_truncate_corrupt: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./enigmadb-data"),
            listen: DEFAULT_LISTEN.parse().expect("a valid literal address"),
            peer_listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PEER_PORT)),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            num_tokens: 8,
            sync_mode: SyncModeSetting::Batch,
            periodic_sync_ms: 10_000,
            memtable_budget: Size(64 << 20),
            cache_budget: Size(64 << 20),
            wal_segment_bytes: Size(32 << 20),
            max_frame_bytes: Size(wire::frame::DEFAULT_MAX_FRAME_BYTES),
            max_connections: 1024,
            max_requests_per_connection: 1024,
            pin_shards: true,
            spin_before_park_us: 50,
            shard_queue: 1024,
            quarantine_corrupt_sstables: false,
            wal_truncate_corrupt: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting '{key}': {message}")]
    Invalid { key: &'static str, message: String },
}

impl ServerConfig {
    /// The defaults overridden by the TOML file at `path`.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        ServerConfig::parse(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })
    }

    /// Parses a TOML document (toml's messages name the key and the line).
    pub fn parse(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Checks the relations between settings that a single value's type cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.to_owned() });
        if self.shards == 0 || self.shards > 256 {
            return invalid("shards", "must be between 1 and 256");
        }
        if self.num_tokens == 0 || self.num_tokens > 256 {
            return invalid("num_tokens", "must be between 1 and 256");
        }
        if self.sync_mode == SyncModeSetting::Periodic && self.periodic_sync_ms == 0 {
            return invalid("periodic_sync_ms", "must be positive in periodic mode");
        }
        if self.max_frame_bytes.0 < 4096 || self.max_frame_bytes.0 > 256 << 20 {
            return invalid("max_frame_bytes", "must be between 4KiB and 256MiB");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be positive");
        }
        if self.max_requests_per_connection == 0 {
            return invalid("max_requests_per_connection", "must be positive");
        }
        if self.shard_queue == 0 {
            return invalid("shard_queue", "must be positive");
        }
        if self.memtable_budget.0 < 1 << 20 {
            return invalid("memtable_budget", "must be at least 1MiB");
        }
        Ok(())
    }

    /// The embedded node this configuration runs.
    pub fn node_config(&self) -> NodeConfig {
        let mut node = NodeConfig::new(&self.data_dir);
        node.shards = self.shards;
        node.num_tokens = self.num_tokens;
        node.pin_shards = self.pin_shards;
        node.spin_before_park = (self.spin_before_park_us > 0).then(|| Duration::from_micros(self.spin_before_park_us));
        node.channel_capacity = self.shard_queue;
        node.shard.memtable_budget = self.memtable_budget.0;
        node.shard.block_cache_bytes = self.cache_budget.0;
        node.shard.quarantine_corrupt_sstables = self.quarantine_corrupt_sstables;
        node.shard.wal.sync_mode = self.sync_mode.into();
        node.shard.wal.periodic_sync = Duration::from_millis(self.periodic_sync_ms);
        node.shard.wal.segment_size = self.wal_segment_bytes.0 as u64;
        node.shard.wal.truncate_corrupt = self.wal_truncate_corrupt;
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_plain_bytes_and_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("64 parsecs").unwrap_err().contains("unknown size unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn file_overrides_defaults_and_sizes_take_units_or_bytes() {
        let c = ServerConfig::parse(
            "listen = \"127.0.0.2:9000\"\nshards = 2\nsync_mode = \"periodic\"\nmemtable_budget = \"8MiB\"\ncache_budget = 1048576\n",
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.2:9000".parse().unwrap());
        assert_eq!(c.shards, 2);
        assert_eq!(c.sync_mode, SyncModeSetting::Periodic);
        assert_eq!(c.memtable_budget, Size(8 << 20));
        assert_eq!(c.cache_budget, Size(1 << 20));
        assert_eq!(c.data_dir, PathBuf::from("./enigmadb-data"));
    }

    #[test]
    fn documented_config_file_parses_to_the_defaults() {
        let text = include_str!("../docs/enigmadb.toml");
        let documented = ServerConfig::parse(text).expect("docs/enigmadb.toml parses");
        // The shard count defaults to the core count; the file leaves it commented out.
        let defaults = ServerConfig { shards: documented.shards, ..ServerConfig::default() };
        assert_eq!(format!("{documented:?}"), format!("{defaults:?}"));
        // Every setting is documented: each field name appears as a key.
        for key in format!("{defaults:?}").split(['{', ',']).filter_map(|f| f.split(':').next()) {
            let key = key.trim();
            if !key.is_empty() && !key.starts_with("ServerConfig") {
                assert!(text.contains(&format!("{key} =")), "docs/enigmadb.toml lacks '{key}'");
            }
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = ServerConfig::parse("listne = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(err.contains("listne"), "{err}");
        let err = ServerConfig::parse("sync_mode = \"sometimes\"\n").unwrap_err();
        assert!(err.contains("sync_mode"), "{err}");
        let err = ServerConfig::parse("memtable_budget = \"12 parsecs\"\n").unwrap_err();
        assert!(err.contains("memtable_budget"), "{err}");
        let c = ServerConfig { shards: 0, ..ServerConfig::default() };
        assert!(c.validate().unwrap_err().to_string().contains("'shards'"));
    }
}

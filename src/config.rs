//! The server's settings: their defaults, the TOML file (`--config`) that overrides them, and
//! the command-line flags that override both. Unknown keys and bad values are rejected when the
//! file is read, with a message naming the key; nothing here touches the data directory.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shards::node::NodeConfig;
use shards::wal::format::BLOCK_SIZE;
use shards::wal::{SyncMode, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};

use crate::auth::{AuthSettings, Authenticator, INITIAL_PASSWORD_ENV};
use crate::cluster::failure_detector::FailureDetectorConfig;
use crate::cluster::service::ClusterConfig;
use crate::cluster::transport::{DEFAULT_CLUSTER_NAME, MAX_CLUSTER_NAME_BYTES};
use crate::coordinator::{PageLimits, Timeouts};
use crate::hints::HintSettings;
use crate::logging::{self, LogFormat};
use crate::memory_budget::{self, machine_memory, MemoryPlan};

/// Default client address (DESIGN.md).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9470";
/// Default port of the peer protocol (the cluster issue).
pub const DEFAULT_PEER_PORT: u16 = 7470;
/// Seeds a node lists at most.
pub const MAX_SEEDS: usize = 64;
/// Default port of the metrics endpoint (HTTP, Prometheus text format).
pub const DEFAULT_METRICS_PORT: u16 = 9471;
/// Default port of the shard-aware client port (ScyllaDB's 19042 beside 9042).
pub const DEFAULT_SHARD_AWARE_PORT: u16 = 19470;
/// How long a node with seeds and authentication on waits at start for a superuser role to
/// be readable (the cluster's roles reach it through its peers).
pub const AUTH_SETUP_WAIT: Duration = Duration::from_secs(30);
/// Default log level (`info`: one line per notable event, never one per request).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Bounds of `task_quota_us`: below 100 us the shard spends its time switching queues, above
/// 100 ms (glommio's own default) a compaction step could stall requests for longer.
pub const MIN_TASK_QUOTA_US: u64 = 100;
pub const MAX_TASK_QUOTA_US: u64 = 100_000;

/// A size in bytes: an integer, or a string with a unit ("64MiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        struct SizeVisitor;
        impl serde::de::Visitor<'_> for SizeVisitor {
            type Value = Size;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes: an integer, or a string with a unit such as \"64MiB\"")
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Size, E> {
                let n = u64::try_from(n).map_err(|_| E::custom(format!("a size cannot be negative ({n})")))?;
                self.visit_u64(n)
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Size, E> {
                usize::try_from(n).map(Size).map_err(|_| E::custom(format!("{n} bytes is too large")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Size, E> {
                parse_size(text).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// Written with the largest binary unit that divides it ("64MiB"), as the file documents.
impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        match [(30, "GiB"), (20, "MiB"), (10, "KiB")]
            .into_iter()
            .find(|&(shift, _)| n > 0 && n.is_multiple_of(1 << shift))
        {
            Some((shift, unit)) => s.serialize_str(&format!("{}{unit}", n >> shift)),
            None => s.serialize_u64(n as u64),
        }
    }
}

/// A memory budget: `auto` (sized from the machine's memory when the node starts,
/// `memory_budget::plan`) or a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Auto,
    Fixed(Size),
}

impl Budget {
    /// The size set, `None` for auto.
    pub fn fixed(self) -> Option<usize> {
        match self {
            Budget::Auto => None,
            Budget::Fixed(size) => Some(size.0),
        }
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Budget, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        let size = |raw| match raw {
            Raw::Number(n) => u64::try_from(n)
                .map_err(|_| format!("a size cannot be negative ({n})"))
                .and_then(|n| usize::try_from(n).map_err(|_| format!("{n} bytes is too large"))),
            Raw::Text(t) => parse_size(&t),
        };
        match Raw::deserialize(d)? {
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("auto") => Ok(Budget::Auto),
            raw => size(raw).map(|n| Budget::Fixed(Size(n))).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Budget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Budget::Auto => s.serialize_str("auto"),
            Budget::Fixed(size) => size.serialize(s),
        }
    }
}

/// `auto` or a size, as a flag value.
pub fn parse_budget(text: &str) -> Result<Budget, String> {
    match text.trim().eq_ignore_ascii_case("auto") {
        true => Ok(Budget::Auto),
        false => parse_size(text).map(|n| Budget::Fixed(Size(n))),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncModeSetting {
    /// Acknowledge once the write is durable (O_DSYNC segments, group commit).
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

/// Where an optional listener (the metrics endpoint, the shard-aware port) listens: an
/// address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    Off,
    On(SocketAddr),
}

impl MetricsListen {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            MetricsListen::Off => None,
            MetricsListen::On(addr) => Some(addr),
        }
    }
}

impl FromStr for MetricsListen {
    type Err = String;

    fn from_str(text: &str) -> Result<MetricsListen, String> {
        if text.trim().eq_ignore_ascii_case("off") {
            return Ok(MetricsListen::Off);
        }
        text.trim()
            .parse()
            .map(MetricsListen::On)
            .map_err(|_| format!("'{text}' is neither an address (host:port) nor off"))
    }
}

impl fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            MetricsListen::Off => f.write_str("off"),
            MetricsListen::On(addr) => write!(f, "{addr}"),
        }
    }
}

impl<'de> Deserialize<'de> for MetricsListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MetricsListen, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for MetricsListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Every setting of `enigmadb server`, with its default. The TOML file uses these names.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Node data directory.
    pub data_dir: PathBuf,
    /// Client protocol address; its connections are spread over the shards.
    pub listen: SocketAddr,
    /// Shard-aware client port, or off: a connection from source port p is served by shard
    /// p % shards, so a client can reach the shard that owns its data.
    pub shard_aware_listen: MetricsListen,
    /// Peer protocol address (gossip, replica reads and writes, schema exchange).
    pub peer_listen: SocketAddr,
    /// Peer addresses contacted to join a cluster (Cassandra's seed_provider); empty: a
    /// single node until some other node lists this one as its seed.
    pub seeds: Vec<SocketAddr>,
    /// Name of the cluster (Cassandra's cluster_name): nodes refuse peer connections from
    /// nodes of another name, so two clusters given each other's seeds never merge.
    pub cluster_name: String,
    /// How long a node's first boot (no node.meta in its data directory) with seeds waits for
    /// one of them to answer its shadow round, milliseconds (Cassandra's ring delay). A seed
    /// that answers says whether this node's peer address already belongs to a member; if
    /// none answers in time, a node among its own seeds starts alone and any other refuses
    /// to start.
    pub shadow_round_timeout_ms: u64,
    /// On a first boot, join even though a member of the cluster has this node's peer address
    /// under another host id: the operator accepts that the old node's data is gone and this
    /// node starts empty with a new host id and tokens (the old host id stays in the ring,
    /// down, until it is removed). Without it such a start is refused. No effect once the
    /// data directory has its node.meta.
    pub allow_address_reuse: bool,
    /// On a first boot: the dead node (host id, or peer address `ip:port` or `ip`) whose
    /// tokens this node takes over, streaming its data from the surviving replicas
    /// (`--replace`, Cassandra's replace_address_first_boot). Ignored once the replacement
    /// completed; unset: a new node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
    /// Phi above which the failure detector marks a silent peer down (Cassandra's
    /// phi_convict_threshold; 8 is about 18 s of silence with gossip every second).
    pub phi_convict_threshold: f64,
    /// How long a coordinator waits for the replicas of a write, milliseconds
    /// (Cassandra's write_request_timeout).
    pub write_request_timeout_ms: u64,
    /// How long a coordinator waits for the replicas of a read, milliseconds
    /// (Cassandra's read_request_timeout).
    pub read_request_timeout_ms: u64,
    /// Keep hints for replicas that miss a write and replay them when they are back
    /// (Cassandra's hinted_handoff_enabled). Hints already kept are replayed either way.
    pub hinted_handoff_enabled: bool,
    /// No new hints for a node down longer than this, and hints older than this are dropped
    /// when replayed, milliseconds (Cassandra's max_hint_window: 3 hours).
    pub max_hint_window_ms: u64,
    /// Bound on the bytes of hints kept for one node; further hints for it are dropped.
    pub max_hints_size_per_host: Size,
    /// Hint replay rate of this node, KiB/s; 0 = unlimited (Cassandra's hinted_handoff_throttle).
    pub hinted_handoff_throttle_kib: u64,
    /// Anti-entropy repair of this node's primary ranges in the background, every this many
    /// milliseconds (counted from the end of the previous round); 0 = only on demand
    /// (`enigmadb admin repair`).
    pub repair_interval_ms: u64,
    /// A brand-new node started with seeds into a cluster that has tables bootstraps: chooses
    /// balanced tokens, announces JOINING, streams the ranges it will own, then turns NORMAL
    /// (Cassandra's auto_bootstrap). Off: it starts NORMAL at once with random tokens.
    pub auto_bootstrap: bool,
    /// How long a bootstrapping node announces JOINING before it streams, milliseconds, so
    /// that every coordinator sends it the writes of its future ranges first (Cassandra's
    /// ring_delay); a few gossip intervals.
    pub ring_delay_ms: u64,
    /// Bytes a bootstrap streams per second at most, in MB/s (10^6 bytes); 0 = unthrottled
    /// (Cassandra's stream_throughput_outbound).
    pub stream_throughput_mb_per_s: u64,
    /// How long every node keeps the gossip state of a node that left (decommission) or was
    /// removed (removenode, or replaced), milliseconds: the quarantine during which that host
    /// id cannot come back into the ring. Then the state is forgotten. The node that
    /// announces the departure stamps the expiry (Cassandra keeps such states 3 days).
    pub left_state_retention_ms: u64,
    /// The replication factor a joining node balances its tokens for (Cassandra's
    /// allocate_tokens_for_local_replication_factor).
    pub allocate_tokens_for_local_replication_factor: usize,
    /// Metrics endpoint (HTTP GET /metrics, Prometheus text format), or off.
    pub metrics_listen: MetricsListen,
    /// How long one metrics connection may take (reading the request, scraping, writing the
    /// answer), milliseconds; a slower scraper is disconnected.
    pub metrics_timeout_ms: u64,
    /// Log lines on stderr: human-readable text or one JSON object per line.
    pub log_format: LogFormat,
    /// Log level: `info`, or directives such as `warn,shards=debug`.
    pub log_level: String,
    /// Shards (one executor each); default one per available core. Fixed when the data
    /// directory is created.
    pub shards: usize,
    /// Vnode tokens per shard, chosen when the data directory is created.
    pub num_tokens: usize,
    pub sync_mode: SyncModeSetting,
    /// fdatasync period in periodic mode, milliseconds (Cassandra's commitlog_sync_period).
    pub periodic_sync_ms: u64,
    /// MemTable bytes per shard before a flush; `auto`: from the machine's memory
    /// (`memory_budget::plan`).
    pub memtable_budget: Budget,
    /// Block cache bytes per shard (direct I/O has no page cache); `auto`: from the machine's
    /// memory (`memory_budget::plan`).
    pub cache_budget: Budget,
    /// One WAL segment file.
    pub wal_segment_bytes: Size,
    /// Largest frame a client may send or receive.
    pub max_frame_bytes: Size,
    /// Bytes of selected values after which a page of a SELECT ends, whatever its row count
    /// (ScyllaDB's 1 MiB page): at least one row per page, so a larger row is a page of its
    /// own. A page also ends before it would pass max_frame_bytes.
    pub max_page_bytes: Size,
    /// Client connections served at once; more are answered with an overloaded error.
    pub max_connections: usize,
    /// Client connections from one IP address served at once; 0 = no bound of its own
    /// (Cassandra's native_transport_max_concurrent_connections_per_ip).
    pub max_connections_per_address: usize,
    /// Places beyond max_connections (and beyond max_connections_per_address) kept for
    /// `enigmadb admin`: a connection that takes one must name the admin tool in STARTUP, or
    /// it is answered with an overloaded error and closed.
    pub reserved_admin_connections: usize,
    /// A client connection that has not been answered READY this many milliseconds after it
    /// was accepted is closed (a silent or half-sent handshake).
    pub handshake_timeout_ms: u64,
    /// A started client connection with no request for this many milliseconds (none in
    /// progress either) is closed; 0 = never (Cassandra's native_transport_idle_timeout).
    pub idle_timeout_ms: u64,
    /// Requests of one connection in progress at once; reading stops beyond it.
    pub max_requests_per_connection: usize,
    /// Bytes of answers being built at once on one shard, over all its client connections
    /// (each request reserves the size of its connection's recent answers): a request beyond
    /// it waits, and after `ANSWER_BUDGET_WAIT` is answered with an overloaded error.
    pub max_answer_bytes_per_shard: Size,
    /// Who may connect (Cassandra's authenticator): `allow_all`, anyone who reaches the
    /// client port, with every permission; or `password`, a role's name and password, and
    /// every request checked against the role's permissions.
    pub authenticator: Authenticator,
    /// Replicas of the roles and permissions tables (Cassandra's system_auth replication),
    /// fixed when the first node with authentication on creates them: give every node the
    /// same value. It may exceed the node count: a smaller cluster keeps them on every node.
    pub auth_replication_factor: u8,
    /// How long a shard trusts its cached copy of a role (login right, superuser), ms
    /// (Cassandra's roles_validity).
    pub roles_validity_ms: u64,
    /// How long a shard trusts its cached copy of a role's permissions, ms (Cassandra's
    /// permissions_validity).
    pub permissions_validity_ms: u64,
    /// A file holding the first superuser's password (instead of the environment variable
    /// ENIGMADB_INITIAL_PASSWORD), read at the start that creates it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_password_file: Option<PathBuf>,
    /// PEM certificate chain of the client port (the ordinary and the shard-aware port): with
    /// its key, the port speaks TLS, and plaintext too unless `client_tls_required`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls_cert: Option<PathBuf>,
    /// PEM private key of `client_tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): every TLS client must present a certificate signed by one
    /// (mutual TLS). Unset: clients are not asked for certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls_ca: Option<PathBuf>,
    /// Refuse plaintext clients: only TLS connections are served on the client port.
    pub client_tls_required: bool,
    /// PEM certificate chain of this node on the peer port; with `internode_tls_key` and
    /// `internode_tls_ca`, every peer connection, in and out, is mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internode_tls_cert: Option<PathBuf>,
    /// PEM private key of `internode_tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internode_tls_key: Option<PathBuf>,
    /// PEM certificate of the cluster CA: a peer whose certificate it did not sign is refused
    /// before its HELLO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internode_tls_ca: Option<PathBuf>,
    /// Serve the metrics endpoint over TLS (HTTPS), with the client port's certificate.
    pub metrics_tls: bool,
    /// A file holding `user:password` (one line): the metrics endpoint then answers only
    /// requests with that HTTP basic authentication, others get 401.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_basic_auth_file: Option<PathBuf>,
    /// Pin shard i to CPU i (a production node); leave off when nodes share cores.
    pub pin_shards: bool,
    /// Microseconds an idle executor spins before parking (cross-core wake-up latency,
    /// docs/GLOMMIO.md pitfall 4); 0 parks at once.
    pub spin_before_park_us: u64,
    /// Microseconds a shard's task queue runs before the shard polls for I/O and other queues
    /// run: the longest a flush or compaction step holds the CPU from requests
    /// (docs/GLOMMIO.md pitfall 6).
    pub task_quota_us: u64,
    /// Bound of each shard's request queue.
    pub shard_queue: usize,
    /// At start, quarantine SSTables that fail their checksums instead of refusing to start.
    pub quarantine_corrupt_sstables: bool,
    /// On WAL damage (corruption in the middle of the log, a damaged newest segment, missing
    /// oldest segments), truncate there instead of refusing to start.
    pub wal_truncate_corrupt: bool,
    /// At start, a shard whose MANIFEST is missing while SSTables are present rebuilds it from
    /// the SSTables found (each checked) instead of refusing to start.
    pub rebuild_missing_manifest: bool,
    /// Test-only: milliseconds added to this node's wall clock (a node whose clock is wrong,
    /// for the clock-skew tests). Never set it on a real node.
    pub clock_offset_ms: i64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./enigmadb-data"),
            listen: DEFAULT_LISTEN.parse().expect("a valid literal address"),
            shard_aware_listen: MetricsListen::On(SocketAddr::from(([127, 0, 0, 1], DEFAULT_SHARD_AWARE_PORT))),
            peer_listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PEER_PORT)),
            seeds: Vec::new(),
            cluster_name: DEFAULT_CLUSTER_NAME.to_owned(),
            shadow_round_timeout_ms: crate::cluster::shadow::DEFAULT_SHADOW_ROUND_TIMEOUT.as_millis() as u64,
            allow_address_reuse: false,
            replace: None,
            phi_convict_threshold: 8.0,
            write_request_timeout_ms: 2_000,
            read_request_timeout_ms: 5_000,
            hinted_handoff_enabled: true,
            max_hint_window_ms: crate::hints::DEFAULT_MAX_HINT_WINDOW.as_millis() as u64,
            max_hints_size_per_host: Size(crate::hints::DEFAULT_MAX_HINTS_BYTES_PER_HOST as usize),
            hinted_handoff_throttle_kib: crate::hints::DEFAULT_THROTTLE_KIB,
            repair_interval_ms: 0,
            auto_bootstrap: true,
            ring_delay_ms: 5_000,
            stream_throughput_mb_per_s: 24,
            left_state_retention_ms: crate::cluster::gossip::LEFT_STATE_RETENTION.as_millis() as u64,
            allocate_tokens_for_local_replication_factor: 3,
            metrics_listen: MetricsListen::On(SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT))),
            metrics_timeout_ms: 10_000,
            log_format: LogFormat::Text,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            num_tokens: 8,
            sync_mode: SyncModeSetting::Batch,
            periodic_sync_ms: 10_000,
            memtable_budget: Budget::Auto,
            cache_budget: Budget::Auto,
            wal_segment_bytes: Size(32 << 20),
            max_frame_bytes: Size(wire::frame::DEFAULT_MAX_FRAME_BYTES),
            max_page_bytes: Size(crate::coordinator::DEFAULT_PAGE_BYTES),
            max_connections: 1024,
            max_connections_per_address: 0,
            reserved_admin_connections: 4,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 0,
            max_requests_per_connection: 1024,
            max_answer_bytes_per_shard: Size(64 << 20),
            authenticator: Authenticator::AllowAll,
            auth_replication_factor: 1,
            roles_validity_ms: 2000,
            permissions_validity_ms: 2000,
            initial_password_file: None,
            client_tls_cert: None,
            client_tls_key: None,
            client_tls_ca: None,
            client_tls_required: false,
            internode_tls_cert: None,
            internode_tls_key: None,
            internode_tls_ca: None,
            metrics_tls: false,
            metrics_basic_auth_file: None,
            pin_shards: true,
            spin_before_park_us: 50,
            task_quota_us: shards::node::DEFAULT_TASK_QUOTA.as_micros() as u64,
            shard_queue: 1024,
            quarantine_corrupt_sstables: false,
            wal_truncate_corrupt: false,
            rebuild_missing_manifest: false,
            clock_offset_ms: 0,
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

/// A configuration file read: its settings, and which keys it set (the others are defaults).
pub struct ConfigFile {
    pub config: ServerConfig,
    pub keys: BTreeSet<String>,
}

impl ServerConfig {
    /// The defaults overridden by the TOML file at `path`.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let parse_error = |message| ConfigError::Parse { path: path.to_owned(), message };
        let config = ServerConfig::parse(&text).map_err(parse_error)?;
        // It parsed as a ServerConfig, so it is a TOML table.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        Ok(ConfigFile { config, keys: table.keys().cloned().collect() })
    }

    /// Parses a TOML document; a refusal names the setting and its line.
    pub fn parse(text: &str) -> Result<ServerConfig, String> {
        toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end();
            let Some(span) = e.span() else { return message.to_owned() };
            let line_start = text.get(..span.start).unwrap_or(text).rfind('\n').map_or(0, |i| i + 1);
            let line_no = text[..line_start].matches('\n').count() + 1;
            let line = text[line_start..].lines().next().unwrap_or_default();
            match line.split_once('=') {
                Some((key, _)) if !message.contains("unknown field") => {
                    format!("setting '{}' (line {line_no}): {message}", key.trim())
                }
                _ => format!("line {line_no}: {message}"),
            }
        })
    }

    /// The configuration as a TOML document that [`ServerConfig::parse`] reads back.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|e| ConfigError::Invalid { key: "data_dir", message: e.to_string() })
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
        if !(1..=255).contains(&self.allocate_tokens_for_local_replication_factor) {
            return invalid("allocate_tokens_for_local_replication_factor", "must be between 1 and 255");
        }
        if self.left_state_retention_ms == 0 {
            return invalid("left_state_retention_ms", "must be positive");
        }
        if self.ring_delay_ms > 600_000 {
            return invalid("ring_delay_ms", "must be at most 600000 (10 minutes)");
        }
        if !self.phi_convict_threshold.is_finite() || self.phi_convict_threshold <= 0.0 {
            return invalid("phi_convict_threshold", "must be a number above 0");
        }
        if self.write_request_timeout_ms == 0 || self.read_request_timeout_ms == 0 {
            let key =
                if self.write_request_timeout_ms == 0 { "write_request_timeout_ms" } else { "read_request_timeout_ms" };
            return invalid(key, "must be positive");
        }
        if self.max_hint_window_ms == 0 {
            return invalid("max_hint_window_ms", "must be positive (turn hints off with hinted_handoff_enabled)");
        }
        if self.seeds.len() > MAX_SEEDS {
            return invalid("seeds", &format!("at most {MAX_SEEDS} seeds"));
        }
        if self.cluster_name.is_empty() || self.cluster_name.len() > MAX_CLUSTER_NAME_BYTES {
            return invalid("cluster_name", &format!("must be 1 to {MAX_CLUSTER_NAME_BYTES} bytes"));
        }
        if self.shadow_round_timeout_ms == 0 {
            return invalid("shadow_round_timeout_ms", "must be positive");
        }
        if self.sync_mode == SyncModeSetting::Periodic && self.periodic_sync_ms == 0 {
            return invalid("periodic_sync_ms", "must be positive in periodic mode");
        }
        if self.max_frame_bytes.0 < 4096 || self.max_frame_bytes.0 > 256 << 20 {
            return invalid("max_frame_bytes", "must be between 4KiB and 256MiB");
        }
        if self.max_page_bytes.0 == 0 {
            return invalid("max_page_bytes", "must be positive");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be positive");
        }
        if self.handshake_timeout_ms == 0 {
            return invalid("handshake_timeout_ms", "must be positive");
        }
        if self.auth_replication_factor == 0 {
            return invalid("auth_replication_factor", "must be between 1 and 255");
        }
        if self.max_requests_per_connection == 0 {
            return invalid("max_requests_per_connection", "must be positive");
        }
        if self.max_answer_bytes_per_shard.0 == 0 {
            return invalid("max_answer_bytes_per_shard", "must be positive");
        }
        if !(MIN_TASK_QUOTA_US..=MAX_TASK_QUOTA_US).contains(&self.task_quota_us) {
            return invalid("task_quota_us", &format!("must be {MIN_TASK_QUOTA_US} to {MAX_TASK_QUOTA_US}"));
        }
        if self.shard_queue == 0 {
            return invalid("shard_queue", "must be positive");
        }
        if self.memtable_budget.fixed().is_some_and(|n| n < 1 << 20) {
            return invalid("memtable_budget", "must be at least 1MiB");
        }
        let segment = self.wal_segment_bytes.0 as u64;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment) || !segment.is_multiple_of(BLOCK_SIZE as u64) {
            let message = format!("must be a multiple of {BLOCK_SIZE} between {MIN_SEGMENT_SIZE} and 1GiB");
            return invalid("wal_segment_bytes", &message);
        }
        if let MetricsListen::On(addr) = self.metrics_listen {
            if addr == self.listen && addr.port() != 0 {
                return invalid("metrics_listen", "must differ from listen");
            }
        }
        if let MetricsListen::On(addr) = self.shard_aware_listen {
            let taken = addr == self.listen || self.metrics_listen == MetricsListen::On(addr);
            if taken && addr.port() != 0 {
                return invalid("shard_aware_listen", "must differ from listen and metrics_listen");
            }
        }
        self.validate_tls()?;
        if self.metrics_timeout_ms == 0 {
            return invalid("metrics_timeout_ms", "must be positive");
        }
        if let Err(e) = logging::parse_level(&self.log_level) {
            return invalid("log_level", &e.to_string());
        }
        Ok(())
    }

    /// TLS settings that only make sense together (the files themselves are read when the
    /// node starts, `tls::NodeTls::load`).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.to_owned() });
        let client_tls = self.client_tls_cert.is_some();
        if client_tls != self.client_tls_key.is_some() {
            return invalid("client_tls_key", "client_tls_cert and client_tls_key go together");
        }
        if self.client_tls_required && !client_tls {
            return invalid("client_tls_required", "needs client_tls_cert and client_tls_key");
        }
        if self.client_tls_ca.is_some() && !client_tls {
            return invalid("client_tls_ca", "needs client_tls_cert and client_tls_key");
        }
        if self.metrics_tls && !client_tls {
            return invalid(
                "metrics_tls",
                "serves the client port's certificate: set client_tls_cert and client_tls_key",
            );
        }
        let internode = [&self.internode_tls_cert, &self.internode_tls_key, &self.internode_tls_ca];
        if internode.iter().any(|s| s.is_some()) && !internode.iter().all(|s| s.is_some()) {
            return invalid(
                "internode_tls_cert",
                "internode TLS needs all of internode_tls_cert, internode_tls_key and internode_tls_ca",
            );
        }
        Ok(())
    }

    /// The cluster service's settings, for a node whose clients connect at `client_addr`.
    pub fn cluster_config(&self, client_addr: SocketAddr, shard_aware_addr: Option<SocketAddr>) -> ClusterConfig {
        ClusterConfig {
            peer_listen: self.peer_listen,
            client_addr,
            shard_aware_addr,
            seeds: self.seeds.clone(),
            cluster_name: self.cluster_name.clone(),
            failure_detector: FailureDetectorConfig {
                phi_convict_threshold: self.phi_convict_threshold,
                ..FailureDetectorConfig::default()
            },
            max_frame_bytes: self.max_frame_bytes.0,
            replaces: None,
            left_state_retention: Duration::from_millis(self.left_state_retention_ms),
            peer_tls: None,
        }
    }

    /// How long a first boot waits for a seed to answer its shadow round.
    pub fn shadow_round_timeout(&self) -> Duration {
        Duration::from_millis(self.shadow_round_timeout_ms)
    }

    /// How large a SELECT's page may grow.
    pub fn page_limits(&self) -> PageLimits {
        PageLimits::new(self.max_page_bytes.0, self.max_frame_bytes.0)
    }

    /// How long a client connection may take to start, and stay idle once started.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_ms > 0).then(|| Duration::from_millis(self.idle_timeout_ms))
    }

    /// The authentication settings; with `password`, the first superuser's password from
    /// `initial_password_file` or else the environment variable ENIGMADB_INITIAL_PASSWORD.
    pub fn auth_settings(&self) -> Result<AuthSettings, ConfigError> {
        let initial_password = match (&self.initial_password_file, self.authenticator) {
            (_, Authenticator::AllowAll) => None,
            (Some(path), _) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                let password = text.trim_end_matches(['\n', '\r']).to_owned();
                if password.is_empty() {
                    return Err(ConfigError::Invalid {
                        key: "initial_password_file",
                        message: format!("{} holds no password", path.display()),
                    });
                }
                Some(password)
            }
            (None, _) => std::env::var(INITIAL_PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
        };
        Ok(AuthSettings {
            authenticator: self.authenticator,
            replication_factor: self.auth_replication_factor,
            roles_validity: Duration::from_millis(self.roles_validity_ms),
            permissions_validity: Duration::from_millis(self.permissions_validity_ms),
            initial_password,
            // A node of a cluster may have to wait for the cluster's roles to be readable.
            setup_wait: if self.seeds.is_empty() { Duration::ZERO } else { AUTH_SETUP_WAIT },
        })
    }

    /// How often the node repairs its primary ranges in the background, if at all.
    pub fn repair_interval(&self) -> Option<Duration> {
        (self.repair_interval_ms > 0).then(|| Duration::from_millis(self.repair_interval_ms))
    }

    /// How a bootstrap of this node runs.
    pub fn bootstrap_settings(&self) -> crate::coordinator::BootstrapSettings {
        crate::coordinator::BootstrapSettings {
            ring_delay: Duration::from_millis(self.ring_delay_ms),
            throughput: (self.stream_throughput_mb_per_s > 0)
                .then(|| self.stream_throughput_mb_per_s.saturating_mul(1_000_000)),
            replaces: None,
        }
    }

    /// How long the coordinator waits for replicas.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            write: Duration::from_millis(self.write_request_timeout_ms),
            read: Duration::from_millis(self.read_request_timeout_ms),
        }
    }

    /// How long one metrics connection may take.
    pub fn metrics_timeout(&self) -> Duration {
        Duration::from_millis(self.metrics_timeout_ms)
    }

    /// The settings of hinted handoff.
    pub fn hint_settings(&self) -> HintSettings {
        HintSettings {
            enabled: self.hinted_handoff_enabled,
            max_hint_window: Duration::from_millis(self.max_hint_window_ms),
            max_bytes_per_host: self.max_hints_size_per_host.0 as u64,
            throttle_kib: self.hinted_handoff_throttle_kib,
        }
    }

    /// What each shard gets for its MemTables and block cache, and why: the settings, or
    /// for `auto` a share of this machine's memory.
    pub fn memory_plan(&self) -> MemoryPlan {
        let (memtable, cache) = (self.memtable_budget.fixed(), self.cache_budget.fixed());
        let machine = (memtable.is_none() || cache.is_none()).then(machine_memory).flatten();
        memory_budget::plan(machine, self.shards, memtable.map(|n| n as u64), cache.map(|n| n as u64))
    }

    /// The embedded node this configuration runs.
    pub fn node_config(&self) -> NodeConfig {
        let mut node = NodeConfig::new(&self.data_dir);
        node.shards = self.shards;
        node.num_tokens = self.num_tokens;
        node.pin_shards = self.pin_shards;
        node.spin_before_park = (self.spin_before_park_us > 0).then(|| Duration::from_micros(self.spin_before_park_us));
        node.channel_capacity = self.shard_queue;
        node.task_quota = Duration::from_micros(self.task_quota_us);
        let memory = self.memory_plan();
        node.shard.memtable_budget = memory.memtable_budget as usize;
        node.shard.block_cache_bytes = memory.cache_budget as usize;
        node.shard.quarantine_corrupt_sstables = self.quarantine_corrupt_sstables;
        node.shard.rebuild_missing_manifest = self.rebuild_missing_manifest;
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
        assert_eq!(c.memtable_budget, Budget::Fixed(Size(8 << 20)));
        assert_eq!(c.cache_budget, Budget::Fixed(Size(1 << 20)));
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
        let err = ServerConfig::parse("shards = 2\nmemtable_budget = -5\n").unwrap_err();
        assert_eq!(err, "setting 'memtable_budget' (line 2): a size cannot be negative (-5)");
        let err = ServerConfig::parse("metrics_listen = \"everywhere\"\n").unwrap_err();
        assert!(err.starts_with("setting 'metrics_listen' (line 1)"), "{err}");
        let err = ServerConfig::parse("log_format = \"xml\"\n").unwrap_err();
        assert!(err.starts_with("setting 'log_format'"), "{err}");
        let err = ServerConfig::parse("\n\nsync_mode = \"sometimes\"\n").unwrap_err();
        assert!(err.starts_with("setting 'sync_mode' (line 3)"), "{err}");
        let c = ServerConfig { log_level: "chatty".into(), ..ServerConfig::default() };
        assert!(c.validate().unwrap_err().to_string().contains("'log_level'"));
        let c = ServerConfig { wal_segment_bytes: Size(5000), ..ServerConfig::default() };
        assert!(c.validate().unwrap_err().to_string().contains("'wal_segment_bytes'"));
    }

    #[test]
    fn tls_settings_that_do_not_go_together_name_the_key() {
        let file = |name: &str| Some(PathBuf::from(name));
        let cases = [
            (ServerConfig { client_tls_cert: file("c"), ..ServerConfig::default() }, "'client_tls_key'"),
            (ServerConfig { client_tls_required: true, ..ServerConfig::default() }, "'client_tls_required'"),
            (ServerConfig { client_tls_ca: file("ca"), ..ServerConfig::default() }, "'client_tls_ca'"),
            (ServerConfig { metrics_tls: true, ..ServerConfig::default() }, "'metrics_tls'"),
            (
                ServerConfig { internode_tls_cert: file("c"), internode_tls_key: file("k"), ..ServerConfig::default() },
                "internode_tls_ca",
            ),
        ];
        for (config, names) in cases {
            let err = config.validate().expect_err(names).to_string();
            assert!(err.contains(names), "{err}");
        }
        let whole = ServerConfig {
            client_tls_cert: file("c"),
            client_tls_key: file("k"),
            client_tls_ca: file("ca"),
            client_tls_required: true,
            metrics_tls: true,
            internode_tls_cert: file("c"),
            internode_tls_key: file("k"),
            internode_tls_ca: file("ca"),
            ..ServerConfig::default()
        };
        assert!(whole.validate().is_ok());
        let back = ServerConfig::parse(&whole.to_toml().unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{whole:?}"));
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let c = ServerConfig {
            shards: 3,
            metrics_listen: MetricsListen::Off,
            log_format: LogFormat::Json,
            log_level: "warn,shards=debug".into(),
            memtable_budget: Budget::Fixed(Size(3 << 20)),
            cache_budget: Budget::Fixed(Size(1_000_001)),
            ..ServerConfig::default()
        };
        let text = c.to_toml().unwrap();
        assert!(text.contains("memtable_budget = \"3MiB\"") && text.contains("cache_budget = 1000001"), "{text}");
        assert!(text.contains("metrics_listen = \"off\""), "{text}");
        let back = ServerConfig::parse(&text).unwrap();
        assert_eq!(format!("{back:?}"), format!("{c:?}"));
        let defaults = ServerConfig::default();
        let back = ServerConfig::parse(&defaults.to_toml().unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn budgets_read_auto_or_a_size() {
        let c = ServerConfig::parse("memtable_budget = \"AUTO\"\ncache_budget = \"2GiB\"\n").unwrap();
        assert_eq!((c.memtable_budget, c.cache_budget), (Budget::Auto, Budget::Fixed(Size(2 << 30))));
        assert_eq!(ServerConfig::default().memtable_budget, Budget::Auto);
        let err = ServerConfig::parse("cache_budget = \"lots\"\n").unwrap_err();
        assert!(err.contains("cache_budget"), "{err}");
        assert_eq!(parse_budget("auto"), Ok(Budget::Auto));
        assert_eq!(parse_budget("1MiB"), Ok(Budget::Fixed(Size(1 << 20))));
        let fixed = ServerConfig { cache_budget: Budget::Fixed(Size(1 << 20)), ..ServerConfig::default() };
        assert_eq!(fixed.memory_plan().cache_budget, 1 << 20);
        assert!(fixed.memory_plan().why.contains("cache_budget setting"));
    }

    #[test]
    fn metrics_listen_reads_an_address_or_off() {
        assert_eq!("off".parse(), Ok(MetricsListen::Off));
        assert_eq!("OFF".parse(), Ok(MetricsListen::Off));
        assert_eq!("127.0.0.1:9471".parse(), Ok(MetricsListen::On("127.0.0.1:9471".parse().unwrap())));
        assert!("9471".parse::<MetricsListen>().is_err());
    }
}

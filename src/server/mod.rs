//! `enigmadb server`: one node. Opens the embedded node (one executor per shard), runs the
//! node's services on the shards' executors (`services.rs`: the coordinator shard's duties on
//! shard 0, a front door serving client connections on every shard), prints one line when
//! ready, and on SIGTERM/SIGINT stops accepting, lets in-flight requests finish and syncs every
//! WAL. The main thread only waits for signals; it never touches a shard.

mod accept;
mod connection;
mod first_boot;
mod link;
mod memory;
mod replace;
mod services;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use shards::node::{LocalService, Node};

use crate::config::{
    parse_budget, parse_size, Budget, MetricsListen, ServerConfig, SyncModeSetting, DEFAULT_METRICS_PORT,
    DEFAULT_SHARD_AWARE_PORT,
};
use crate::logging::{self, LogFormat};
use crate::tls::PeerTls;
use services::{JoinPlan, ServiceEvent, Wiring};

/// Flags of `enigmadb server`; each overrides the same setting of `--config`.
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// TOML file of settings (every key documented in docs/enigmadb.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Node data directory [default: ./enigmadb-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client protocol address; connections are spread over the shards [default: 127.0.0.1:9470].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Shard-aware client port, or off: a connection from source port p is served by shard
    /// p % shards [default: the client address's host, port 19470; a kernel-chosen port when
    /// the client port is 0].
    #[arg(long)]
    shard_aware_listen: Option<MetricsListen>,
    /// Peer protocol address [default: the client address's host, port 7470].
    #[arg(long)]
    peer_listen: Option<SocketAddr>,
    /// Metrics endpoint (HTTP GET /metrics), or off [default: the client address's host,
    /// port 9471; a kernel-chosen port when the client port is 0].
    #[arg(long)]
    metrics_listen: Option<MetricsListen>,
    /// Log lines on stderr as text or JSON [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Log level: off, error, warn, info, debug, trace, or directives such as
    /// warn,shards=debug [default: $ENIGMADB_LOG, else the file's, else info].
    #[arg(long)]
    log_level: Option<String>,
    /// Print the effective configuration (defaults, then --config, then flags) as TOML that
    /// --config accepts, and exit.
    #[arg(long)]
    print_config: bool,
    /// Peer addresses to join a cluster through, comma-separated (host:port,...) [default: none].
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<SocketAddr>>,
    /// Cluster name; peers of another name are refused [default: "Test Cluster"].
    #[arg(long)]
    cluster_name: Option<String>,
    /// On a first boot (no node.meta) with seeds, how long to wait for a seed to answer, ms
    /// [default: 30000].
    #[arg(long)]
    shadow_round_timeout_ms: Option<u64>,
    /// On a first boot, join even if a member of the cluster has this node's peer address
    /// under another host id: its data is accepted as gone, this node starts empty.
    #[arg(long)]
    allow_address_reuse: bool,
    /// On a first boot, take over the tokens of this dead node (host id or peer address) and
    /// stream its data from the surviving replicas (Cassandra's replace_address_first_boot).
    #[arg(long, value_name = "HOST_ID_OR_ADDRESS")]
    replace: Option<String>,
    /// Failure detector threshold: phi above which a silent peer is marked down [default: 8].
    #[arg(long)]
    phi_convict_threshold: Option<f64>,
    /// How long a coordinator waits for a write's replicas, ms [default: 2000].
    #[arg(long)]
    write_request_timeout_ms: Option<u64>,
    /// How long a coordinator waits for a read's replicas, ms [default: 5000].
    #[arg(long)]
    read_request_timeout_ms: Option<u64>,
    /// Keep hints for replicas that miss a write, replayed when they are back [default: true].
    #[arg(long)]
    hinted_handoff_enabled: Option<bool>,
    /// No new hints for a node down longer than this, ms [default: 10800000, 3 hours].
    #[arg(long)]
    max_hint_window_ms: Option<u64>,
    /// Repair this node's primary ranges in the background every this many ms; 0: only by
    /// `enigmadb admin repair` [default: 0].
    #[arg(long)]
    repair_interval_ms: Option<u64>,
    /// A new node joining a cluster with tables streams its ranges before it turns NORMAL
    /// [default: true].
    #[arg(long)]
    auto_bootstrap: Option<bool>,
    /// How long a bootstrapping node announces JOINING before streaming, ms [default: 5000].
    #[arg(long)]
    ring_delay_ms: Option<u64>,
    /// Bootstrap streaming rate bound, MB/s; 0 = unthrottled [default: 24].
    #[arg(long)]
    stream_throughput_mb_per_s: Option<u64>,
    /// How long the gossip state of a node that left or was removed is kept (its host id
    /// cannot rejoin meanwhile), ms [default: 259200000, 3 days].
    #[arg(long)]
    left_state_retention_ms: Option<u64>,
    /// The replication factor a joining node balances its tokens for [default: 3].
    #[arg(long)]
    allocate_tokens_for_local_replication_factor: Option<usize>,
    /// Bound on the hint bytes kept for one node [default: 128MiB].
    #[arg(long, value_parser = parse_size)]
    max_hints_size_per_host: Option<usize>,
    /// Hint replay rate, KiB/s; 0 = unlimited [default: 1024].
    #[arg(long)]
    hinted_handoff_throttle_kib: Option<u64>,
    /// Shards [default: one per available core; fixed when the data directory is created].
    #[arg(long)]
    shards: Option<usize>,
    /// Vnode tokens per shard [default: 8; fixed when the data directory is created].
    #[arg(long)]
    num_tokens: Option<usize>,
    /// When an acknowledged write is durable [default: batch].
    #[arg(long, value_enum)]
    sync_mode: Option<SyncModeSetting>,
    /// fdatasync period in periodic mode, ms [default: 10000].
    #[arg(long)]
    periodic_sync_ms: Option<u64>,
    /// MemTable bytes per shard before a flush (e.g. 67108864 or 64MiB), or auto: 1/8 of the
    /// machine's usable memory over the shards, 16MiB..128MiB [default: auto].
    #[arg(long, value_parser = parse_budget)]
    memtable_budget: Option<Budget>,
    /// Block cache bytes per shard, or auto: half of the machine's usable memory left by the
    /// MemTables, over the shards [default: auto].
    #[arg(long, value_parser = parse_budget)]
    cache_budget: Option<Budget>,
    /// Pin shard i to CPU i [default: true]. Pass false when nodes share cores.
    #[arg(long)]
    pin_shards: Option<bool>,
    /// Microseconds an idle shard spins before parking; trades CPU for cross-core wake-up
    /// latency (0 parks at once) [default: 50].
    #[arg(long)]
    spin_before_park_us: Option<u64>,
    /// Largest frame accepted from or sent to a client [default: 16MiB].
    #[arg(long, value_parser = parse_size)]
    max_frame_bytes: Option<usize>,
    /// Bytes of selected values after which a SELECT's page ends [default: 1MiB].
    #[arg(long, value_parser = parse_size)]
    max_page_bytes: Option<usize>,
    /// Bytes of answers being built at once on one shard, over all its connections
    /// [default: 64MiB].
    #[arg(long, value_parser = parse_size)]
    max_answer_bytes_per_shard: Option<usize>,
    /// Client connections served at once [default: 1024].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Client connections from one IP address served at once; 0 = no bound of its own
    /// [default: 0].
    #[arg(long)]
    max_connections_per_address: Option<usize>,
    /// Places beyond the connection bounds kept for `enigmadb admin` [default: 4].
    #[arg(long)]
    reserved_admin_connections: Option<usize>,
    /// Close a client connection not started (READY) within this many ms [default: 10000].
    #[arg(long)]
    handshake_timeout_ms: Option<u64>,
    /// Close a started client connection idle this many ms; 0 = never [default: 0].
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Who may connect: allow_all (anyone, every permission) or password (roles and
    /// permissions; the first start needs ENIGMADB_INITIAL_PASSWORD) [default: allow_all].
    #[arg(long, value_enum)]
    authenticator: Option<crate::auth::Authenticator>,
    /// PEM certificate chain of the client port: with --client-tls-key, clients may connect
    /// with TLS [default: none, plaintext only].
    #[arg(long, value_name = "FILE")]
    client_tls_cert: Option<PathBuf>,
    /// PEM private key of --client-tls-cert.
    #[arg(long, value_name = "FILE")]
    client_tls_key: Option<PathBuf>,
    /// Refuse plaintext clients on the client port (needs --client-tls-cert).
    #[arg(long)]
    client_tls_required: bool,
    /// PEM CA certificate(s): TLS clients must present a certificate signed by it.
    #[arg(long, value_name = "FILE")]
    client_tls_ca: Option<PathBuf>,
    /// PEM certificate chain of this node for mutual TLS with its peers (with
    /// --internode-tls-key and --internode-tls-ca).
    #[arg(long, value_name = "FILE")]
    internode_tls_cert: Option<PathBuf>,
    /// PEM private key of --internode-tls-cert.
    #[arg(long, value_name = "FILE")]
    internode_tls_key: Option<PathBuf>,
    /// PEM certificate of the cluster CA: peers must present a certificate it signed.
    #[arg(long, value_name = "FILE")]
    internode_tls_ca: Option<PathBuf>,
    /// Serve the metrics endpoint over TLS with the client port's certificate.
    #[arg(long)]
    metrics_tls: bool,
    /// File holding user:password: the metrics endpoint requires that HTTP basic
    /// authentication.
    #[arg(long, value_name = "FILE")]
    metrics_basic_auth_file: Option<PathBuf>,
    /// Quarantine SSTables that fail their checksums at start instead of refusing to start.
    #[arg(long)]
    quarantine_corrupt_sstables: bool,
    /// Truncate the WAL at damage (corruption in the middle of the log, a damaged newest
    /// segment, missing oldest segments) instead of refusing to start; the records there are lost.
    #[arg(long)]
    wal_truncate_corrupt: bool,
    /// Rebuild a shard's missing MANIFEST from the SSTables found (each checked) instead of
    /// refusing to start.
    #[arg(long)]
    rebuild_missing_manifest: bool,
    /// Test-only: shift this node's wall clock by this many milliseconds (clock-skew tests).
    #[arg(long, hide = true, allow_hyphen_values = true)]
    clock_offset_ms: Option<i64>,
}

impl Args {
    /// The effective configuration: defaults, then the file, then the flags.
    pub fn resolve(&self) -> Result<ServerConfig> {
        let (mut c, file_keys) = match &self.config {
            Some(path) => {
                let file = ServerConfig::load(path)?;
                (file.config, file.keys)
            }
            None => (ServerConfig::default(), Default::default()),
        };
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = self.listen {
            c.listen = v;
            // The other listeners follow the client address's host unless set themselves.
            if self.peer_listen.is_none() && !file_keys.contains("peer_listen") {
                // A kernel-chosen client port (tests, local clusters) gets one for peers too.
                let port = if v.port() == 0 { 0 } else { crate::config::DEFAULT_PEER_PORT };
                c.peer_listen = SocketAddr::new(v.ip(), port);
            }
            // A kernel-chosen client port (tests, local clusters) gets one for these too.
            let follow = |flag: Option<MetricsListen>, key, current: MetricsListen, default_port| match current {
                MetricsListen::On(_) if flag.is_none() && !file_keys.contains(key) => {
                    let port = if v.port() == 0 { 0 } else { default_port };
                    MetricsListen::On(SocketAddr::new(v.ip(), port))
                }
                other => other,
            };
            c.metrics_listen = follow(self.metrics_listen, "metrics_listen", c.metrics_listen, DEFAULT_METRICS_PORT);
            c.shard_aware_listen =
                follow(self.shard_aware_listen, "shard_aware_listen", c.shard_aware_listen, DEFAULT_SHARD_AWARE_PORT);
        }
        if let Some(v) = self.peer_listen {
            c.peer_listen = v;
        }
        if let Some(v) = self.metrics_listen {
            c.metrics_listen = v;
        }
        if let Some(v) = self.shard_aware_listen {
            c.shard_aware_listen = v;
        }
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        match &self.log_level {
            Some(v) => c.log_level = v.clone(),
            None => c.log_level = logging::level_from_env(&c.log_level),
        }
        if let Some(v) = &self.seeds {
            c.seeds = v.clone();
        }
        if let Some(v) = &self.cluster_name {
            c.cluster_name = v.clone();
        }
        if let Some(v) = self.shadow_round_timeout_ms {
            c.shadow_round_timeout_ms = v;
        }
        c.allow_address_reuse |= self.allow_address_reuse;
        if let Some(v) = &self.replace {
            c.replace = Some(v.clone());
        }
        if let Some(v) = self.phi_convict_threshold {
            c.phi_convict_threshold = v;
        }
        if let Some(v) = self.write_request_timeout_ms {
            c.write_request_timeout_ms = v;
        }
        if let Some(v) = self.read_request_timeout_ms {
            c.read_request_timeout_ms = v;
        }
        if let Some(v) = self.hinted_handoff_enabled {
            c.hinted_handoff_enabled = v;
        }
        if let Some(v) = self.max_hint_window_ms {
            c.max_hint_window_ms = v;
        }
        if let Some(v) = self.repair_interval_ms {
            c.repair_interval_ms = v;
        }
        if let Some(v) = self.auto_bootstrap {
            c.auto_bootstrap = v;
        }
        if let Some(v) = self.ring_delay_ms {
            c.ring_delay_ms = v;
        }
        if let Some(v) = self.stream_throughput_mb_per_s {
            c.stream_throughput_mb_per_s = v;
        }
        if let Some(v) = self.left_state_retention_ms {
            c.left_state_retention_ms = v;
        }
        if let Some(v) = self.allocate_tokens_for_local_replication_factor {
            c.allocate_tokens_for_local_replication_factor = v;
        }
        if let Some(v) = self.max_hints_size_per_host {
            c.max_hints_size_per_host.0 = v;
        }
        if let Some(v) = self.hinted_handoff_throttle_kib {
            c.hinted_handoff_throttle_kib = v;
        }
        if let Some(v) = self.shards {
            c.shards = v;
        }
        if let Some(v) = self.num_tokens {
            c.num_tokens = v;
        }
        if let Some(v) = self.sync_mode {
            c.sync_mode = v;
        }
        if let Some(v) = self.periodic_sync_ms {
            c.periodic_sync_ms = v;
        }
        if let Some(v) = self.memtable_budget {
            c.memtable_budget = v;
        }
        if let Some(v) = self.cache_budget {
            c.cache_budget = v;
        }
        if let Some(v) = self.pin_shards {
            c.pin_shards = v;
        }
        if let Some(v) = self.spin_before_park_us {
            c.spin_before_park_us = v;
        }
        if let Some(v) = self.max_frame_bytes {
            c.max_frame_bytes.0 = v;
        }
        if let Some(v) = self.max_page_bytes {
            c.max_page_bytes.0 = v;
        }
        if let Some(v) = self.max_answer_bytes_per_shard {
            c.max_answer_bytes_per_shard.0 = v;
        }
        if let Some(v) = self.max_connections {
            c.max_connections = v;
        }
        if let Some(v) = self.max_connections_per_address {
            c.max_connections_per_address = v;
        }
        if let Some(v) = self.reserved_admin_connections {
            c.reserved_admin_connections = v;
        }
        if let Some(v) = self.handshake_timeout_ms {
            c.handshake_timeout_ms = v;
        }
        if let Some(v) = self.idle_timeout_ms {
            c.idle_timeout_ms = v;
        }
        if let Some(v) = self.authenticator {
            c.authenticator = v;
        }
        let files = [
            (&self.client_tls_cert, &mut c.client_tls_cert),
            (&self.client_tls_key, &mut c.client_tls_key),
            (&self.client_tls_ca, &mut c.client_tls_ca),
            (&self.internode_tls_cert, &mut c.internode_tls_cert),
            (&self.internode_tls_key, &mut c.internode_tls_key),
            (&self.internode_tls_ca, &mut c.internode_tls_ca),
            (&self.metrics_basic_auth_file, &mut c.metrics_basic_auth_file),
        ];
        for (flag, setting) in files {
            if let Some(v) = flag {
                *setting = Some(v.clone());
            }
        }
        c.client_tls_required |= self.client_tls_required;
        c.metrics_tls |= self.metrics_tls;
        c.quarantine_corrupt_sstables |= self.quarantine_corrupt_sstables;
        c.wal_truncate_corrupt |= self.wal_truncate_corrupt;
        c.rebuild_missing_manifest |= self.rebuild_missing_manifest;
        if let Some(v) = self.clock_offset_ms {
            c.clock_offset_ms = v;
        }
        c.validate()?;
        Ok(c)
    }
}

pub fn run(args: Args) -> Result<()> {
    let config = args.resolve()?;
    if args.print_config {
        println!("# enigmadb server: effective configuration (defaults, then --config, then flags)");
        print!("{}", config.to_toml()?);
        println!("# memory: {}", config.memory_plan().why);
        return Ok(());
    }
    logging::init(config.log_format, &config.log_level)?;
    memory::configure_allocator();
    tracing::debug!(purge_delay_ms = memory::purge_delay_ms(), "allocator returns freed memory after");
    if config.clock_offset_ms != 0 {
        // Test-only fault injection, set before any executor reads the clock.
        shards::hlc::set_wall_clock_offset(config.clock_offset_ms.saturating_mul(1000));
        tracing::warn!(offset_ms = config.clock_offset_ms, "TEST ONLY: this node's wall clock is shifted");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %config.data_dir.display(),
        shards = config.shards,
        "starting"
    );
    tracing::info!(memory = %config.memory_plan().why, "memory budgets");
    // Read once (a file or the environment); never logged.
    let auth = config.auth_settings()?;
    // Every certificate, key and CA the settings name, read once.
    let tls = crate::tls::NodeTls::load(&config)?;
    // A first boot into a cluster asks the seeds before the data directory gets an identity.
    first_boot::check(&config, &tls.peer)?;
    // Block the termination signals in every thread (executors inherit this mask) so that the
    // main thread alone receives them, with sigtimedwait.
    let signals = TerminationSignals::block()?;
    let (events_tx, events) = flume::bounded(4);
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    // The shards' channels are made once the shard count is known (the data directory fixes
    // it), at the first shard's turn.
    let mut join = prepare_join(&config, &tls.peer)?;
    // A replacement (completed or not) gossips the node it replaces for its whole life.
    let replaces = crate::cluster::bootstrap::BootstrapRecord::load(&config.data_dir)?.and_then(|r| r.replaces);
    let mut wiring: Option<Wiring> = None;
    let mut services = |shard: u16, shards: usize| -> Option<LocalService> {
        let wiring = wiring.get_or_insert_with(|| {
            let (config, auth, tls) = (config.clone(), auth.clone(), tls.clone());
            Wiring::new(shards, config, auth, tls, events_tx.clone(), stop_rx.clone(), join.take(), replaces)
        });
        Some(wiring.service(shard))
    };
    let (node, report) = Node::open_with_services(config.node_config(), &mut services)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    drop(wiring);
    let replayed: u64 = report.shard_reports.iter().map(|r| r.applied_records).sum();
    let (addr, shard_aware, peer_addr, metrics_addr) = match events.recv() {
        Ok(ServiceEvent::Listening { client, shard_aware, peer, metrics }) => (client, shard_aware, peer, metrics),
        Ok(ServiceEvent::Failed(reason)) => {
            shutdown(&node)?;
            bail!(reason);
        }
        Ok(ServiceEvent::Stopped | ServiceEvent::Decommissioned) | Err(_) => {
            shutdown(&node)?;
            bail!("the coordinator stopped before listening");
        }
    };
    let metrics_at =
        metrics_addr.map_or_else(|| "metrics off".to_owned(), |m| format!("metrics on http://{m}/metrics"));
    let shard_aware_at =
        shard_aware.map_or_else(|| "shard-aware port off".to_owned(), |a| format!("shard-aware on {a}"));
    println!(
        "enigmadb ready: listening on {addr}, {shard_aware_at}, peers on {peer_addr}, {metrics_at}, {} shards, data dir {}, sync mode {:?}, replayed {replayed} WAL records",
        node.shard_count(),
        config.data_dir.display(),
        config.sync_mode,
    );
    tracing::info!(listen = %addr, metrics = %metrics_at, shards = node.shard_count(), replayed, "ready");
    let mut failure = None;
    let mut decommissioned = false;
    loop {
        if let Some(signal) = signals.wait(Duration::from_millis(200))? {
            tracing::info!(signal, "stopping: no new connections; in-flight requests finish");
            break;
        }
        match events.try_recv() {
            Err(flume::TryRecvError::Empty) => {}
            Ok(ServiceEvent::Failed(reason)) => {
                tracing::error!(%reason, "stopping");
                failure = Some(reason);
                break;
            }
            Ok(ServiceEvent::Decommissioned) => {
                decommissioned = true;
                break;
            }
            Ok(_) | Err(flume::TryRecvError::Disconnected) => {
                tracing::error!("the coordinator stopped");
                break;
            }
        }
    }
    let _ = stop_tx.try_send(());
    // Connections finish their in-flight requests; a stuck client does not hold the node
    // forever.
    match events.recv_timeout(Duration::from_secs(30)) {
        Ok(ServiceEvent::Stopped) => {}
        _ => tracing::warn!("connections did not finish within 30 s; stopping anyway"),
    }
    shutdown(&node)?;
    tracing::info!("stopped: WALs synced");
    println!("enigmadb stopped: WALs synced");
    if decommissioned {
        let message = format!(
            "decommissioned; this node left the ring and its data now lives on the other nodes: {} is no longer used (remove it, or start a node on an empty directory to join again)",
            config.data_dir.display()
        );
        tracing::info!("{message}");
        println!("enigmadb {message}");
    }
    match failure {
        Some(reason) => bail!(reason),
        None => Ok(()),
    }
}

/// Whether `dir` is missing or holds nothing of a node (an earlier start may have left its
/// LOCK, its bootstrap state or a temporary file behind).
fn is_new_dir(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return true };
    entries.flatten().all(|e| {
        let name = e.file_name();
        matches!(name.to_str(), Some("LOCK" | "bootstrap.state" | "bootstrap.tmp" | "node.tmp"))
    })
}

/// How long a new node tries its seeds before it refuses to start.
const DISCOVERY_WAIT: Duration = Duration::from_secs(10);

/// Before the node opens its data directory: whether it bootstraps, and for a new directory
/// its tokens. A directory with an identity whose bootstrap finished (or that never
/// bootstrapped: the first node, or one started with `auto_bootstrap` off) starts as it is.
/// A new directory with seeds asks one for the cluster; when the cluster has NORMAL nodes, the
/// tokens are allocated against their ring and persisted; when it also has tables, the
/// directory records a bootstrap in progress first (so a crash from here on bootstraps again)
/// and the node bootstraps. A directory whose bootstrap did not finish bootstraps again with
/// its tokens.
fn prepare_join(config: &ServerConfig, peer_tls: &Option<PeerTls>) -> Result<Option<JoinPlan>> {
    use crate::cluster::allocation::{allocate_tokens, Joining};
    use crate::cluster::bootstrap::{BootstrapRecord, BootstrapState};
    use crate::cluster::replace::ReplaceTarget;
    use shards::node_meta::NodeMeta;
    let dir = &config.data_dir;
    let record =
        BootstrapRecord::load(dir).with_context(|| format!("reading the bootstrap state in {}", dir.display()))?;
    if record.is_some_and(|r| r.state == BootstrapState::Decommissioned) {
        // Cassandra: a decommissioned node does not rejoin the ring with its old data.
        bail!(
            "{}: this node was decommissioned (it left the ring); it does not start again with this data directory: remove the directory to join the cluster as a new node",
            dir.display()
        );
    }
    // A decommission stopped mid-way left the node in the ring: it starts as a completed
    // bootstrap does (the cluster service then logs it, `recover_interrupted_decommission`).
    let record = record.map(|r| match r.state {
        BootstrapState::Leaving => BootstrapRecord { state: BootstrapState::Completed, ..r },
        _ => r,
    });
    let target = match &config.replace {
        Some(text) => Some(text.parse::<ReplaceTarget>().map_err(|e| anyhow::anyhow!("--replace: {e}"))?),
        None => None,
    };
    if target.is_some() || record.is_some_and(|r| r.replaces.is_some()) {
        return replace::prepare(
            config,
            peer_transport(config, peer_tls),
            target,
            record,
            is_new_dir(dir),
            DISCOVERY_WAIT,
        );
    }
    let state = record.map(|r| r.state);
    let has_identity = NodeMeta::existing_shard_count(dir)?.is_some();
    let resume = state == Some(BootstrapState::InProgress);
    if !config.auto_bootstrap {
        if has_identity && resume {
            tracing::warn!(
                "auto_bootstrap is off: this node starts NORMAL without the ranges its unfinished bootstrap did not stream"
            );
        }
        return Ok(None);
    }
    if has_identity && !resume {
        return Ok(None);
    }
    if !has_identity && !is_new_dir(dir) {
        // Something is there but no identity: opening the node refuses it (a directory with
        // data that lost its node.meta) or creates one as it always did.
        return Ok(None);
    }
    let found = match crate::cluster::discovery::discover(
        peer_transport(config, peer_tls),
        &config.seeds,
        config.peer_listen,
        DISCOVERY_WAIT,
    ) {
        // A seed of its own cluster starts alone when no other seed answers (the first boot
        // check already waited for them): it is the cluster's first node.
        Err(crate::cluster::discovery::DiscoveryError::NoSeed { .. })
            if !resume && config.seeds.contains(&config.peer_listen) =>
        {
            None
        }
        found => found?,
    };
    let Some(found) = found else {
        if resume {
            bail!("{}: this node's bootstrap did not finish, and no seed other than itself is listed to finish it from (start it with --seeds)", dir.display());
        }
        return Ok(None);
    };
    if resume {
        tracing::info!(seed = %found.seed, "the bootstrap did not finish: bootstrapping again");
        return Ok(Some(JoinPlan { deltas: found.deltas, schema: found.schema }));
    }
    let Some(ring) = found.ring().context("the seed's ring")? else {
        tracing::warn!(seed = %found.seed, "the seed knows no NORMAL node: starting as the first one");
        return Ok(None);
    };
    let joining = Joining { host: rand::random(), shards: config.shards, vnodes_per_shard: config.num_tokens };
    let rf = config.allocate_tokens_for_local_replication_factor;
    let tokens = allocate_tokens(Some(&ring), rf, joining, rand::random()).context("allocating tokens")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bootstraps = found.has_user_tables();
    if bootstraps {
        BootstrapRecord { state: BootstrapState::InProgress, replaces: None }.store(dir)?;
    }
    let meta = NodeMeta::create_with_tokens(dir, tokens)?;
    tracing::info!(
        seed = %found.seed,
        host = %format!("{:032x}", meta.host_id),
        nodes = ring.vnodes().iter().map(|(_, (h, _))| *h).collect::<std::collections::BTreeSet<_>>().len(),
        rf,
        bootstraps,
        "tokens allocated against the cluster's ring"
    );
    Ok(bootstraps.then_some(JoinPlan { deltas: found.deltas, schema: found.schema }))
}

/// How this node calls its peers before it opens (discovery, the checks of a replacement).
fn peer_transport(config: &ServerConfig, peer_tls: &Option<PeerTls>) -> crate::cluster::transport::TransportConfig {
    let mut transport = crate::cluster::transport::TransportConfig::new(config.peer_listen);
    transport.cluster_name = config.cluster_name.clone();
    transport.max_frame_bytes = config.max_frame_bytes.0;
    transport.tls = peer_tls.clone();
    transport
}

/// Syncs and closes every shard (blocking the main thread on the node's executors).
fn shutdown(node: &Node) -> Result<()> {
    futures_lite::future::block_on(node.shutdown()).context("shutting down")
}

/// SIGTERM and SIGINT, blocked in every thread and taken by the main thread.
struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    fn block() -> Result<TerminationSignals> {
        // SAFETY: sigset_t is plain data initialised by sigemptyset before use; the calls only
        // read and write the set and this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                bail!("blocking termination signals: {}", std::io::Error::from_raw_os_error(rc));
            }
            Ok(TerminationSignals { set })
        }
    }

    /// The signal received within `timeout`, if any.
    fn wait(&self, timeout: Duration) -> Result<Option<i32>> {
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
        // SAFETY: `self.set` is an initialised signal set; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        if signal >= 0 {
            return Ok(Some(signal));
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
            _ => Err(std::io::Error::last_os_error()).context("waiting for signals"),
        }
    }
}

//! A cluster of real `enigmadb server` processes, each in a Linux network namespace of its own
//! (veth into one bridge, node i at 10.X.0.i, the harness at 10.X.0.254 in the root namespace),
//! and the faults the chaos harness injects: nftables drops (both ways or one way), slowed peer
//! links (a delay relay, relay.rs), SIGKILL and restart, SIGSTOP and SIGCONT. It owns every namespace, link, rule and
//! process it creates, and its guard removes them all, even when a test panics; names carry
//! this process id so that concurrent runs never collide. It never touches what it did not
//! create, except leftovers of runs whose process no longer exists.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, cluster::await_until, Server};
use crate::relay::{Relay, Slowed, RELAY_MARK, RELAY_PORT};

/// Client protocol port of every node (each namespace has an address of its own).
pub const CLIENT_PORT: u16 = 9470;
/// Peer protocol port of every node.
pub const PEER_PORT: u16 = 7470;
/// Metrics port of every node.
pub const METRICS_PORT: u16 = 9471;
/// Most nodes a network holds (10.X.0.1 ..= 10.X.0.MAX_NODES; .254 is the harness).
pub const MAX_NODES: usize = 16;
/// Prefix of every namespace this harness creates; the rest is `{pid}-{node}`.
const NETNS_PREFIX: &str = "enigma-chaos-";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("running `{command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("no free 10.X.0.0/24 subnet for the chaos network")]
    NoSubnet,
    #[error("starting the delay relay of node {node}: {source}")]
    Relay { node: usize, source: std::io::Error },
}

/// Runs one command (ip, nft, tc) to completion; a non-zero exit is an error with its stderr.
fn run(program: &str, args: &[&str]) -> Result<Output, NetError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| NetError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        return Err(NetError::Command { command, stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() });
    }
    Ok(out)
}

/// One network fault, as the schedule and the report name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// No traffic between two nodes, either way.
    Partition(usize, usize),
    /// Packets from the first node to the second are dropped; the other way works.
    OneWay { from: usize, to: usize },
    /// One node cut off from every other node (the clients still reach it).
    Isolate(usize),
    /// Every peer message to and from one node waits [`crate::relay::SLOW_DELAY`] each way.
    Slow(usize),
}

/// The namespaces and the bridge, without processes. Removing them is its Drop.
pub struct Network {
    pid: u32,
    /// X of 10.X.0.0/24.
    subnet: u8,
    nodes: usize,
    /// Nodes whose peer links are slowed now, read by every relay.
    slowed: Arc<Slowed>,
    /// One per node; dropped before the namespaces go.
    relays: Vec<Relay>,
}

impl Network {
    /// Whether this process may create network namespaces (root, iproute2); `Err` says why
    /// not, for a test to print before it skips. (nftables missing is not a reason to skip:
    /// [`Network::create`] then fails, and CI installs it.)
    pub fn probe() -> Result<(), String> {
        let name = format!("{NETNS_PREFIX}{}-probe", std::process::id());
        run("ip", &["netns", "add", &name]).map_err(|e| e.to_string())?;
        run("ip", &["netns", "del", &name]).map(|_| ()).map_err(|e| e.to_string())
    }

    /// Creates the bridge and `nodes` namespaces, each with its veth, address, an empty
    /// nftables input chain for the drops, and its peer connections redirected to its relay.
    pub fn create(nodes: usize) -> Result<Network, NetError> {
        assert!((1..=MAX_NODES).contains(&nodes), "1..={MAX_NODES} nodes");
        remove_leftovers();
        let pid = std::process::id();
        let subnet = free_subnet(pid)?;
        let slowed = Arc::new(Slowed::default());
        let mut network = Network { pid, subnet, nodes, slowed: slowed.clone(), relays: Vec::new() };
        let bridge = network.bridge();
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run("ip", &["addr", "add", &format!("{}/24", network.harness_ip()), "dev", &bridge])?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for i in 1..=nodes {
            let (ns, host_end, node_end) = (network.netns(i), network.host_veth(i), network.node_veth(i));
            run("ip", &["netns", "add", &ns])?;
            run("ip", &["link", "add", &host_end, "type", "veth", "peer", "name", &node_end])?;
            run("ip", &["link", "set", &node_end, "netns", &ns])?;
            run("ip", &["link", "set", &host_end, "master", &bridge])?;
            run("ip", &["link", "set", &host_end, "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", network.ip(i)), "dev", &node_end])?;
            run("ip", &["-n", &ns, "link", "set", &node_end, "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            run("ip", &["netns", "exec", &ns, "nft", "add", "table", "inet", "chaos"])?;
            let chain = "{ type filter hook input priority 0; policy accept; }";
            run("ip", &["netns", "exec", &ns, "nft", "add", "chain", "inet", "chaos", "input", chain])?;
            network.redirect_peer_connections(i)?;
            let node_of = Arc::new(move |ip: Ipv4Addr| {
                let [a, b, c, d] = ip.octets();
                let node = d as usize;
                ((a, b, c) == (10, subnet, 0) && (1..=nodes).contains(&node)).then_some(node)
            });
            let relay =
                Relay::start(&ns, i, node_of, slowed.clone()).map_err(|source| NetError::Relay { node: i, source })?;
            network.relays.push(relay);
        }
        Ok(network)
    }

    /// In node i's namespace, its connections to any other node's peer port go to its relay
    /// (the relay's own, marked, go out as they are).
    fn redirect_peer_connections(&self, i: usize) -> Result<(), NetError> {
        let nft = |args: &[&str]| run("ip", &[&["netns", "exec", &self.netns(i), "nft"][..], args].concat());
        nft(&["add", "table", "ip", "relay"])?;
        nft(&["add", "chain", "ip", "relay", "output", "{ type nat hook output priority -100; }"])?;
        let (mark, subnet, own) = (RELAY_MARK.to_string(), format!("10.{}.0.0/24", self.subnet), self.ip(i));
        let (peer_port, to) = (PEER_PORT.to_string(), format!(":{RELAY_PORT}"));
        nft(&["add", "rule", "ip", "relay", "output", "meta", "mark", &mark, "return"])?;
        let redirect =
            ["ip", "daddr", &subnet, "ip", "daddr", "!=", &own, "tcp", "dport", &peer_port, "redirect", "to", &to];
        nft(&[&["add", "rule", "ip", "relay", "output"][..], &redirect].concat())?;
        Ok(())
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Node i's address.
    pub fn ip(&self, i: usize) -> String {
        format!("10.{}.0.{i}", self.subnet)
    }

    fn harness_ip(&self) -> String {
        format!("10.{}.0.254", self.subnet)
    }

    pub fn netns(&self, i: usize) -> String {
        format!("{NETNS_PREFIX}{}-{i}", self.pid)
    }

    // Interface names are at most 15 bytes: 3 + 7 digits of pid + 1 + 2.
    fn bridge(&self) -> String {
        format!("ecb{}", self.pid)
    }

    fn host_veth(&self, i: usize) -> String {
        format!("ech{}n{i}", self.pid)
    }

    fn node_veth(&self, i: usize) -> String {
        format!("ecp{}n{i}", self.pid)
    }

    /// Drops, in `to`'s namespace, every packet that comes from `from`.
    fn drop_from(&self, to: usize, from: usize) -> Result<(), NetError> {
        let saddr = self.ip(from);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns(to),
                "nft",
                "add",
                "rule",
                "inet",
                "chaos",
                "input",
                "ip",
                "saddr",
                &saddr,
                "drop",
            ],
        )?;
        Ok(())
    }

    /// Starts `fault`; [`Network::heal`] ends it.
    pub fn inject(&mut self, fault: Fault) -> Result<(), NetError> {
        match fault {
            Fault::Partition(a, b) => {
                self.drop_from(a, b)?;
                self.drop_from(b, a)
            }
            Fault::OneWay { from, to } => self.drop_from(to, from),
            Fault::Isolate(a) => {
                for b in (1..=self.nodes).filter(|&b| b != a) {
                    self.drop_from(a, b)?;
                    self.drop_from(b, a)?;
                }
                Ok(())
            }
            Fault::Slow(a) => self.slow(a),
        }
    }

    /// Delays every peer message to and from node a, both ways, from now until the heal.
    fn slow(&mut self, a: usize) -> Result<(), NetError> {
        self.slowed.set(a, true);
        Ok(())
    }

    /// Ends every fault: flushes every drop rule and ends every delay (chunks already held
    /// back still leave at their time, in order).
    pub fn heal(&mut self) -> Result<(), NetError> {
        for i in 1..=self.nodes {
            run("ip", &["netns", "exec", &self.netns(i), "nft", "flush", "chain", "inet", "chaos", "input"])?;
            self.slowed.set(i, false);
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // The relays first: a listening socket would keep its namespace alive.
        self.relays.clear();
        // A namespace's veth end and rules go with it; the peer end goes with the pair.
        for i in 1..=self.nodes {
            let _ = run("ip", &["netns", "del", &self.netns(i)]);
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

/// The first 10.X.0.0/24 (X from 100 up, starting at a pid-derived offset) no route uses.
fn free_subnet(pid: u32) -> Result<u8, NetError> {
    let routes = String::from_utf8_lossy(&run("ip", &["-4", "route", "show"])?.stdout).into_owned();
    (0..150u32)
        .map(|k| (100 + (pid + k) % 150) as u8)
        .find(|x| !routes.contains(&format!("10.{x}.0.")))
        .ok_or(NetError::NoSubnet)
}

/// Namespaces and bridges of earlier runs whose process is gone (killed before its guard ran).
fn remove_leftovers() {
    let Ok(out) = run("ip", &["netns", "list"]) else { return };
    let mut dead = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            // Its nodes outlived it only if the pdeath signal was missed.
            if let Ok(pids) = run("ip", &["netns", "pids", name]) {
                for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    let _ = run("kill", &["-KILL", pid]);
                }
            }
            let _ = run("ip", &["netns", "del", name]);
            dead.insert(pid);
        }
    }
    for pid in dead {
        let _ = run("ip", &["link", "del", &format!("ecb{pid}")]);
    }
}

/// What a node process is doing, as the harness left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Paused,
    Killed,
    /// No member in this slot: never joined, or decommissioned.
    Gone,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Running => "running",
            NodeState::Paused => "paused",
            NodeState::Killed => "killed",
            NodeState::Gone => "no member",
        })
    }
}

/// One-shard nodes in the slots of a [`Network`] (one namespace each), node 1 the seed. A slot
/// may be empty (a spare for a join, or a node that decommissioned). Dropping it kills every
/// process (SIGKILL also ends a paused one), then the network goes.
pub struct NetCluster {
    // Field order is drop order: processes before the namespaces they live in.
    nodes: Vec<Option<Server>>,
    paused: BTreeSet<usize>,
    /// Slots without a member.
    gone: BTreeSet<usize>,
    pub net: Network,
    pub dir: PathBuf,
    /// Flags of each node (index i - 1), after the cluster's own.
    extra: Vec<Vec<String>>,
}

impl NetCluster {
    /// Starts every node (node i with `extra[i - 1]`) and waits until each sees all up.
    pub fn start(name: &str, net: Network, extra: Vec<Vec<String>>) -> NetCluster {
        let members = net.nodes();
        NetCluster::start_members(name, net, extra, members)
    }

    /// Starts nodes 1 to `members` (node i with `extra[i - 1]`), the other slots left empty
    /// for joins, and waits until each sees all up.
    pub fn start_members(name: &str, net: Network, extra: Vec<Vec<String>>, members: usize) -> NetCluster {
        assert_eq!(extra.len(), net.nodes(), "flags for every node");
        assert!((1..=net.nodes()).contains(&members), "1 to {} members", net.nodes());
        let dir = common::scratch_dir(name);
        let gone = (members + 1..=net.nodes()).collect();
        let mut cluster = NetCluster { nodes: Vec::new(), paused: BTreeSet::new(), gone, net, dir, extra };
        for i in 1..=cluster.net.nodes() {
            let server = (i <= members).then(|| cluster.launch(i));
            cluster.nodes.push(server);
        }
        cluster.await_all_up();
        cluster
    }

    /// Slots, members or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The slots with a member (running, paused or killed), in order.
    pub fn members(&self) -> Vec<usize> {
        (1..=self.len()).filter(|i| !self.gone.contains(i)).collect()
    }

    /// A new node joins in the empty slot `i` (a fresh directory: a node that left there
    /// never starts again on its own) and bootstraps; Err when it is not UN on every member
    /// within `timeout`.
    pub fn join(&mut self, i: usize, timeout: Duration) -> Result<(), String> {
        assert!(self.gone.contains(&i), "slot {i} has a member");
        let dir = self.node_dir(i);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
        }
        self.nodes[i - 1] = Some(self.launch(i));
        self.gone.remove(&i);
        match self.all_up_within(timeout) {
            true => Ok(()),
            false => Err(format!("node {i} is not UN on every member within {timeout:?}")),
        }
    }

    /// `enigmadb admin decommission` on member `i`; once it succeeded the process exits and
    /// the slot is empty. Err (the node stays a member) when the decommission failed.
    pub fn decommission(&mut self, i: usize) -> Result<(), String> {
        let out = common::enigmadb()
            .args(["admin", "decommission", "--host", &self.addr(i).to_string()])
            .output()
            .map_err(|e| format!("running admin decommission: {e}"))?;
        if !out.status.success() {
            return Err(common::text(&out.stderr));
        }
        let mut server = self.nodes[i - 1].take().expect("a decommissioned member was running");
        let (status, _) = server.wait_exit("its decommission");
        self.gone.insert(i);
        match status.success() {
            true => Ok(()),
            false => Err(format!("node {i} exited with {status} after its decommission")),
        }
    }

    pub fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node-{i}"))
    }

    /// Node i's client address (reachable from the harness whatever the drops between nodes).
    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.net.ip(i).parse().expect("a formatted IPv4 address"), CLIENT_PORT)
    }

    fn launch(&self, i: usize) -> Server {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.net.netns(i), env!("CARGO_BIN_EXE_enigmadb")]);
        // SAFETY: prctl is async-signal-safe; the setting survives the exec of `ip` and of
        // the server, so a node dies with the thread that started it even if no guard runs.
        unsafe {
            command.pre_exec(|| match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        let ip = self.net.ip(i);
        let seed = format!("{}:{PEER_PORT}", self.net.ip(1));
        let metrics = format!("{ip}:{METRICS_PORT}");
        let mut extra = vec!["--phi-convict-threshold", common::cluster::PHI, "--metrics-listen", &metrics];
        extra.extend(["--log-level", "warn"]);
        if i != 1 {
            extra.extend(["--seeds", &seed]);
        }
        extra.extend(self.extra[i - 1].iter().map(String::as_str));
        let (listen, peer) = (format!("{ip}:{CLIENT_PORT}"), format!("{ip}:{PEER_PORT}"));
        Server::start_command(command, &listen, &peer, &self.node_dir(i), 1, &extra)
    }

    pub fn state(&self, i: usize) -> NodeState {
        if self.gone.contains(&i) {
            return NodeState::Gone;
        }
        match (&self.nodes[i - 1], self.paused.contains(&i)) {
            (None, _) => NodeState::Killed,
            (Some(_), true) => NodeState::Paused,
            (Some(_), false) => NodeState::Running,
        }
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        let server = self.nodes[i - 1].as_ref().expect("node is running");
        // SAFETY: kill(2) on our own child, not yet reaped (Server reaps only in kill/stop).
        let rc = unsafe { libc::kill(server.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to node {i}: {}", std::io::Error::last_os_error());
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing (the GC-pause case).
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.paused.insert(i);
    }

    pub fn resume(&mut self, i: usize) {
        if self.paused.remove(&i) {
            self.signal(i, libc::SIGCONT);
        }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self, i: usize) {
        self.paused.remove(&i);
        if let Some(mut server) = self.nodes[i - 1].take() {
            server.kill();
        }
    }

    /// Starts a killed node again on the same directory and address.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.nodes[i - 1] = Some(self.launch(i));
    }

    /// SIGTERM every node (resumed first) and waits for clean exits, so that their
    /// directories can be read in this process.
    pub fn stop_all(&mut self) {
        for i in 1..=self.len() {
            self.resume(i);
            if let Some(server) = self.nodes[i - 1].take() {
                common::stop_cleanly(server);
            }
        }
    }

    /// Waits until every running member reports every member up (UN).
    pub fn await_all_up(&self) {
        let n = self.members().len();
        for i in (1..=self.len()).filter(|&i| self.state(i) == NodeState::Running) {
            let addr = self.addr(i);
            await_until(&format!("node {i} sees {n} nodes up"), || common::cluster::count_up(addr) == n);
        }
    }

    /// Like [`NetCluster::await_all_up`], false instead of a panic after `timeout`.
    pub fn all_up_within(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let members = self.members();
        loop {
            let up = members.iter().all(|&i| common::cluster::count_up(self.addr(i)) == members.len());
            if up {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for i in 1..=self.nodes.len() {
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

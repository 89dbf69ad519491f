//! The EnigmaDB connection of a stress run: the run's INSERT and SELECT prepared on one or more
//! `wire` clients ("lanes"), and the choice of the lane each operation goes out on. Shard-aware
//! (the default), it asks the node for the cluster's topology, opens a lane per node and shard
//! through the nodes' shard-aware ports (one lane to a node's ordinary port when those fail),
//! sends each operation on the lane of the shard owning its partition, and asks again every
//! [`TOPOLOGY_REFRESH`]; otherwise it is one ordinary connection, as a simple client's. `recv`
//! waits on every lane at once. It never retries: a lane that fails loses the whole
//! connection, as the one connection of a simple client would.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use wire::client::{Client, ClientError, ClientOptions, Prepared};
use wire::protocol::{QueryParams, QueryResult, Request, Response, Topology, TopologyAnswer, TopologyNode};
use wire::routing::{routing_token, TopologyMap};
use wire::token::Token;
use wire::Value;

use super::target::{lost, wait_any_readable, Answer, Connection, ConnectionLost, Sent, Target};
use super::workload::{Op, OpKind, Workload};

/// How often a shard-aware connection asks whether the topology changed.
pub const TOPOLOGY_REFRESH: Duration = Duration::from_secs(1);

/// How the requests in flight on the lanes of a node that left the topology are counted.
const NODE_LEFT: &str = "connection: closed, its node left the topology";

/// Low bits of a token: the request's stream on its lane; the lane's id is above them.
const STREAM_BITS: u32 = 16;

/// A node as the topology describes it. A node whose description changes (restarted with
/// another shard count, or moved) counts as one that left and one that joined.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeKey {
    host_id: u128,
    client: SocketAddr,
    shard_aware: Option<SocketAddr>,
    shards: usize,
}

impl NodeKey {
    fn of(node: &TopologyNode) -> NodeKey {
        NodeKey { host_id: node.host_id, client: node.client, shard_aware: node.shard_aware, shards: node.tokens.len() }
    }
}

/// What a lane reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    /// The `--host` node through the address given: asked for the topology, and sent what
    /// cannot be routed.
    Home,
    /// One shard of a node, through its shard-aware port (the lane's READY named that shard).
    Shard(NodeKey),
    /// A node through its ordinary port, for every shard: its shard-aware port failed.
    Node(NodeKey),
}

impl Reach {
    fn node(&self) -> Option<&NodeKey> {
        match self {
            Reach::Home => None,
            Reach::Shard(key) | Reach::Node(key) => Some(key),
        }
    }
}

/// The run's statements, as prepared on every lane.
struct Statements {
    insert: String,
    select: String,
}

/// One client of the connection, with the run's statements prepared on it.
struct Lane {
    client: Client,
    /// The high bits of its requests' tokens; never reused within a connection, so a token
    /// never names a request of another lane, dropped or not.
    id: u64,
    reach: Reach,
    insert: Prepared,
    select: Prepared,
    /// Streams of operations sent and not answered yet: lost if the lane is dropped.
    streams: HashSet<u16>,
}

impl Lane {
    fn open(mut client: Client, id: u64, reach: Reach, statements: &Statements) -> anyhow::Result<Lane> {
        let insert = client.prepare(&statements.insert).with_context(|| format!("preparing {}", statements.insert))?;
        let select = client.prepare(&statements.select).with_context(|| format!("preparing {}", statements.select))?;
        Ok(Lane { client, id, reach, insert, select, streams: HashSet::new() })
    }

    fn token(&self, stream: u16) -> u64 {
        self.id << STREAM_BITS | u64::from(stream)
    }
}

/// Where operations go, for one topology.
struct Routes {
    map: Option<TopologyMap>,
    /// `lanes[node][shard]`: the index of the lane serving that shard of that node of the
    /// topology; `None`: the node has no lane (down, or unreachable), its requests go home.
    lanes: Vec<Vec<Option<usize>>>,
}

impl Routes {
    /// `reaches` are the lanes' reaches and the shard each lane's READY named, by lane index.
    fn new(topology: &Topology, reaches: &[(&Reach, u16)]) -> Routes {
        let lanes = (topology.nodes.iter())
            .map(|node| {
                let key = NodeKey::of(node);
                let mut shards = vec![None; key.shards];
                for (i, (reach, shard)) in reaches.iter().enumerate() {
                    match reach {
                        Reach::Shard(k) if *k == key => {
                            if let Some(slot) = shards.get_mut(usize::from(*shard)) {
                                *slot = Some(i);
                            }
                        }
                        Reach::Node(k) if *k == key => shards.fill(Some(i)),
                        _ => {}
                    }
                }
                shards
            })
            .collect();
        // A topology without tokens (a node that does not know them yet) routes nothing.
        Routes { map: TopologyMap::new(topology).ok(), lanes }
    }

    /// The lane for a partition token and the shard owning it; `None`: send it home.
    fn lane(&self, token: Token) -> Option<(usize, u16)> {
        let (node, shard) = self.map.as_ref()?.owner(token);
        let lane = self.lanes.get(node)?.get(usize::from(shard)).copied().flatten()?;
        Some((lane, shard))
    }
}

/// A connection to EnigmaDB: see the module documentation.
pub struct EnigmaConnection {
    /// `lanes[0]` is the home lane, never dropped.
    lanes: Vec<Lane>,
    next_lane_id: u64,
    statements: Statements,
    options: ClientOptions,
    params: QueryParams,
    workload: Workload,
    /// How long `recv` without a wait waits for an answer.
    timeout: Duration,
    shard_aware: bool,
    /// The IP address the home lane reached, for topology addresses that name none
    /// (0.0.0.0: a node listening on every interface).
    home_ip: Option<IpAddr>,
    routes: Option<Routes>,
    known_version: u64,
    /// Whether the topology is asked again (the node answered TOPOLOGY when the connection
    /// opened).
    refresh: bool,
    next_refresh: Instant,
    /// The stream of the TOPOLOGY request in flight on the home lane.
    topology_stream: Option<u16>,
    /// Answers to requests of dropped lanes, handed out by `recv` before any other.
    lost_answers: VecDeque<(u64, Answer)>,
    /// `ppoll`'s arguments, kept between calls: the lanes with requests in flight.
    polled: Vec<libc::pollfd>,
    polled_lanes: Vec<usize>,
    /// Where the search for a readable lane starts, so that a busy lane does not starve others.
    poll_start: usize,
}

impl EnigmaConnection {
    pub fn open(target: &Target, address: &str, workload: Workload) -> anyhow::Result<EnigmaConnection> {
        let table = &target.table;
        let statements = Statements {
            insert: format!("INSERT INTO {table} (pk, ck, value) VALUES (?, ?, ?)"),
            select: format!("SELECT value FROM {table} WHERE pk = ? AND ck = ?"),
        };
        let home = Lane::open(target.client(address)?, 0, Reach::Home, &statements)?;
        let home_ip = home.client.peer_addr().ok().map(|a| a.ip());
        let mut connection = EnigmaConnection {
            lanes: vec![home],
            next_lane_id: 1,
            statements,
            options: target.client_options(),
            params: QueryParams::with_consistency(target.consistency),
            workload,
            timeout: target.timeout,
            shard_aware: target.shard_aware,
            home_ip,
            routes: None,
            known_version: 0,
            refresh: false,
            next_refresh: Instant::now() + TOPOLOGY_REFRESH,
            topology_stream: None,
            lost_answers: VecDeque::new(),
            polled: Vec::new(),
            polled_lanes: Vec::new(),
            poll_start: 0,
        };
        if target.shard_aware {
            match connection.lanes[0].client.topology(0) {
                Ok(answer) => {
                    connection.refresh = true;
                    // Version 0 names no topology, so the answer is a full one.
                    if let TopologyAnswer::Full(topology) = answer {
                        connection.apply(topology);
                    }
                }
                Err(ClientError::Server(e)) => {
                    eprintln!(
                        "stress: {address} does not answer TOPOLOGY ({e}): one ordinary connection, not shard-aware"
                    )
                }
                Err(e) => return Err(e).with_context(|| format!("asking {address} for the cluster's topology")),
            }
        }
        Ok(connection)
    }

    /// Makes the lanes match `topology`: the lanes of nodes that left go (their requests in
    /// flight are answered lost), nodes that are up and have no lanes get theirs.
    fn apply(&mut self, topology: Topology) {
        let keys: Vec<NodeKey> = topology.nodes.iter().map(NodeKey::of).collect();
        let (kept, gone): (Vec<Lane>, Vec<Lane>) =
            self.lanes.drain(..).partition(|lane| lane.reach.node().is_none_or(|key| keys.contains(key)));
        self.lanes = kept;
        for lane in gone {
            let lost = lane.streams.iter().map(|s| (lane.token(*s), Answer::Lost(NODE_LEFT.into())));
            self.lost_answers.extend(lost);
        }
        for (node, key) in topology.nodes.iter().zip(keys) {
            let served = self.lanes.iter().any(|lane| lane.reach.node() == Some(&key));
            if node.alive && key.shards > 0 && !served {
                self.open_node(key);
            }
        }
        let reaches: Vec<(&Reach, u16)> = self.lanes.iter().map(|l| (&l.reach, l.client.shard())).collect();
        self.routes = Some(Routes::new(&topology, &reaches));
        self.known_version = topology.version;
    }

    /// Opens a lane per shard of the node through its shard-aware port, or, when that fails
    /// for any shard, one lane to its ordinary port; if that fails too, the node has no lane.
    fn open_node(&mut self, key: NodeKey) {
        let client = self.reachable(key.client);
        if let Some(shard_aware) = key.shard_aware.map(|a| self.reachable(a)) {
            match self.open_shards(shard_aware, &key) {
                Ok(lanes) => return self.lanes.extend(lanes),
                Err(e) => eprintln!("stress: {shard_aware}: {e:#}; using the node's ordinary port {client}"),
            }
        }
        let id = self.lane_id();
        let lane = Client::connect_with(client, self.options.clone())
            .map_err(anyhow::Error::from)
            .and_then(|c| Lane::open(c, id, Reach::Node(key), &self.statements));
        match lane {
            Ok(lane) => self.lanes.push(lane),
            Err(e) => eprintln!("stress: {client}: {e:#}; the node's requests go to the --host node"),
        }
    }

    fn open_shards(&mut self, addr: SocketAddr, key: &NodeKey) -> anyhow::Result<Vec<Lane>> {
        let shards = u16::try_from(key.shards).context("too many shards")?;
        let mut lanes = Vec::with_capacity(key.shards);
        for shard in 0..shards {
            let client = Client::connect_to_shard(addr, shard, shards, self.options.clone())
                .with_context(|| format!("connecting to shard {shard} of {shards}"))?;
            lanes.push(Lane::open(client, self.lane_id(), Reach::Shard(key.clone()), &self.statements)?);
        }
        Ok(lanes)
    }

    fn lane_id(&mut self) -> u64 {
        self.next_lane_id += 1;
        self.next_lane_id - 1
    }

    /// `addr`, with the home lane's IP when it names no interface.
    fn reachable(&self, addr: SocketAddr) -> SocketAddr {
        match (addr.ip().is_unspecified(), self.home_ip) {
            (true, Some(ip)) => SocketAddr::new(ip, addr.port()),
            _ => addr,
        }
    }

    /// The lane for a request binding `values` to a statement with partition key markers
    /// `pk_indexes`, and whether it is served by the shard owning the partition.
    fn route(&self, pk_indexes: &[u16], values: &[Option<Value>]) -> (usize, bool) {
        let routed = (self.routes.as_ref())
            .zip(routing_token(pk_indexes, values))
            .and_then(|(routes, token)| routes.lane(token));
        match routed {
            // A lane to a node's ordinary port is the owner's only if its READY named the shard.
            Some((lane, shard)) => (lane, self.lanes[lane].client.shard() == shard),
            None => (0, false),
        }
    }

    /// Sends TOPOLOGY on the home lane when it is time to ask again.
    fn ask_topology(&mut self) -> Result<(), ConnectionLost> {
        if !self.refresh || self.topology_stream.is_some() || Instant::now() < self.next_refresh {
            return Ok(());
        }
        self.next_refresh = Instant::now() + TOPOLOGY_REFRESH;
        let request = Request::Topology { known_version: self.known_version };
        self.topology_stream = Some(self.lanes[0].client.send(&request).map_err(|e| lost(&e))?);
        Ok(())
    }

    /// The lane whose answer to take next: one with an answer already read, else the first
    /// lane to become readable within `wait` (`None` if none does).
    fn ready_lane(&mut self, wait: Duration) -> Result<Option<usize>, ConnectionLost> {
        let busy = |lane: &Lane| lane.client.in_flight() > 0;
        if let Some(i) = self.lanes.iter().position(|l| busy(l) && l.client.has_buffered_input()) {
            return Ok(Some(i));
        }
        self.polled.clear();
        self.polled_lanes.clear();
        for (i, lane) in self.lanes.iter_mut().enumerate().filter(|(_, l)| busy(l)) {
            // Requests still queued in the client must reach the server, or no answer comes.
            lane.client.flush().map_err(|e| lost(&e))?;
            self.polled.push(libc::pollfd { fd: lane.client.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            self.polled_lanes.push(i);
        }
        if self.polled.is_empty() {
            return Err(lost(&ClientError::NothingInFlight));
        }
        let readable = wait_any_readable(&mut self.polled, wait)
            .map_err(|e| ConnectionLost(format!("connection: poll failed ({:?})", e.kind())))?;
        if !readable {
            return Ok(None);
        }
        let n = self.polled.len();
        self.poll_start = (self.poll_start + 1) % n;
        let first = (0..n).map(|k| (self.poll_start + k) % n).find(|&k| self.polled[k].revents != 0);
        Ok(first.map(|k| self.polled_lanes[k]))
    }
}

impl Connection for EnigmaConnection {
    fn send(&mut self, op: Op) -> Result<Sent, ConnectionLost> {
        self.ask_topology()?;
        let shape = &self.workload.shape;
        let mut values =
            vec![Some(Value::Blob(shape.partition_key(op.key))), Some(Value::BigInt(shape.clustering(op.key)))];
        let home = &self.lanes[0];
        let pk_indexes = match op.kind {
            OpKind::Write => {
                values.push(Some(Value::Blob(self.workload.value(op.key).to_vec())));
                &home.insert.pk_indexes
            }
            OpKind::Read => &home.select.pk_indexes,
        };
        let (lane, to_owner) = self.route(pk_indexes, &values);
        let lane = &mut self.lanes[lane];
        let id = match op.kind {
            OpKind::Write => lane.insert.id,
            OpKind::Read => lane.select.id,
        };
        let request = Request::Execute { id, values, params: self.params.clone() };
        let stream = lane.client.send(&request).map_err(|e| lost(&e))?;
        lane.streams.insert(stream);
        Ok(Sent { token: lane.token(stream), to_owner: self.shard_aware.then_some(to_owner) })
    }

    fn recv(&mut self, wait: Option<Duration>) -> Result<Option<(u64, Answer)>, ConnectionLost> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            if let Some(answer) = self.lost_answers.pop_front() {
                return Ok(Some(answer));
            }
            self.ask_topology()?;
            let wait = deadline.map_or(self.timeout, |d| d.saturating_duration_since(Instant::now()));
            let Some(i) = self.ready_lane(wait)? else {
                return match deadline {
                    Some(_) => Ok(None),
                    None => Err(lost(&ClientError::Timeout)),
                };
            };
            let (stream, response) = self.lanes[i].client.recv().map_err(|e| lost(&e))?;
            if i == 0 && self.topology_stream == Some(stream) {
                self.topology_stream = None;
                // Unchanged, or an error (an overloaded node): the routes stay until next time.
                if let Response::Result(QueryResult::Topology(TopologyAnswer::Full(topology))) = response {
                    self.apply(topology);
                }
                continue;
            }
            let lane = &mut self.lanes[i];
            lane.streams.remove(&stream);
            return Ok(Some((lane.token(stream), answer(response))));
        }
    }
}

/// What an answer to the run's INSERT or SELECT says.
fn answer(response: Response) -> Answer {
    match response {
        Response::Result(QueryResult::Void) => Answer::Written,
        Response::Result(QueryResult::Rows(rows)) => match rows.rows.as_slice() {
            [] => Answer::Missing,
            [row] => match row.as_slice() {
                [Some(Value::Blob(v))] => Answer::Found(v.clone()),
                _ => Answer::Error("unexpected answer: row of another shape".into()),
            },
            _ => Answer::Error("unexpected answer: more than one row".into()),
        },
        Response::Error(e) => Answer::Error(e.code.name().into()),
        _ => Answer::Error("unexpected answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use wire::frame::{encode_frame, FrameDecoder};
    use wire::protocol::{ColumnSpec, ErrorCode, PreparedId, PreparedMeta, Rows};
    use wire::{ColumnType, Consistency};

    use super::*;
    use crate::stress::target::TargetKind;
    use crate::stress::workload::{Distribution, KeyShape};

    /// The fake node's shard count.
    const SHARDS: u16 = 2;

    /// The fake node's vnode tokens, per shard.
    fn tokens() -> Vec<Vec<Token>> {
        vec![vec![-(1 << 62), 1 << 62], vec![0]]
    }

    /// Starts a fake two-shard node and returns its topology: an ordinary port served by shard
    /// 0 and, if `shard_aware`, a shard-aware port served by shard client port % 2. It answers
    /// an EXECUTE whose partition its shard owns (the write, or an absent row), and refuses
    /// the others as `Invalid`, so a misrouted request shows as an error.
    fn fake_node(host_id: u128, shard_aware: bool) -> Topology {
        let ordinary = TcpListener::bind("127.0.0.1:0").unwrap();
        let aware = TcpListener::bind("127.0.0.1:0").unwrap();
        let node = TopologyNode {
            host_id,
            client: ordinary.local_addr().unwrap(),
            shard_aware: shard_aware.then(|| aware.local_addr().unwrap()),
            alive: true,
            tokens: tokens(),
        };
        let topology = Topology { version: 5, nodes: vec![node] };
        for (listener, by_port) in [(ordinary, false), (aware, true)] {
            let topology = topology.clone();
            std::thread::spawn(move || {
                for socket in listener.incoming().flatten() {
                    let shard = match by_port {
                        true => socket.peer_addr().map_or(0, |a| a.port() % SHARDS),
                        false => 0,
                    };
                    let topology = topology.clone();
                    std::thread::spawn(move || serve(socket, shard, &topology));
                }
            });
        }
        topology
    }

    fn serve(mut socket: TcpStream, shard: u16, topology: &Topology) {
        let map = TopologyMap::new(topology).unwrap();
        let mut decoder = FrameDecoder::default();
        let (mut buf, mut chunk) = (Vec::new(), vec![0u8; 64 * 1024]);
        loop {
            let n = match socket.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            while let Ok(Some((frame, used))) = decoder.decode(&buf) {
                buf.drain(..used);
                let response = match Request::from_frame(&frame) {
                    Ok(request) => answer_to(request, shard, topology, &map),
                    Err(e) => Response::error(ErrorCode::Protocol, e.to_string()),
                };
                encode_frame(&response.to_frame(frame.stream), &mut out);
            }
            if socket.write_all(&out).is_err() {
                return;
            }
        }
    }

    fn answer_to(request: Request, shard: u16, topology: &Topology, map: &TopologyMap) -> Response {
        let spec = |name: &str, ty| ColumnSpec { name: name.into(), ty };
        match request {
            Request::Startup { version, .. } => Response::Ready { version, shard, shards: SHARDS },
            Request::Prepare { text } => {
                let mut bind = vec![spec("pk", ColumnType::Blob), spec("ck", ColumnType::BigInt)];
                if text.starts_with("INSERT") {
                    bind.push(spec("value", ColumnType::Blob));
                }
                let columns = vec![spec("value", ColumnType::Blob)];
                let id = PreparedId::of_statement(&text);
                Response::Result(QueryResult::Prepared(PreparedMeta { id, bind, columns, pk_indexes: vec![0] }))
            }
            Request::Execute { values, .. } => {
                let owner = routing_token(&[0], &values).map(|t| map.owner(t).1);
                match (owner == Some(shard), values.len()) {
                    (false, _) => Response::error(ErrorCode::Invalid, "not this shard's partition"),
                    (true, 3) => Response::Result(QueryResult::Void),
                    (true, _) => Response::Result(QueryResult::Rows(Rows {
                        columns: vec![spec("value", ColumnType::Blob)],
                        ..Rows::default()
                    })),
                }
            }
            Request::Topology { known_version } if known_version == topology.version => {
                Response::Result(QueryResult::Topology(TopologyAnswer::Unchanged { version: known_version }))
            }
            Request::Topology { .. } => Response::Result(QueryResult::Topology(TopologyAnswer::Full(topology.clone()))),
            _ => Response::error(ErrorCode::Invalid, "not in this fake"),
        }
    }

    fn open(topology: &Topology, shard_aware: bool) -> EnigmaConnection {
        let target = Target {
            kind: TargetKind::Enigmadb,
            table: "t".into(),
            consistency: Consistency::One,
            timeout: Duration::from_secs(10),
            shard_aware,
            credentials: None,
            tls: None,
        };
        let workload = Workload::new(KeyShape::new(1000, 1).unwrap(), Distribution::Uniform, 50, 8, 1).unwrap();
        EnigmaConnection::open(&target, &topology.nodes[0].client.to_string(), workload).unwrap()
    }

    /// Sends a write and a read of each key of `keys`; returns how many went to their owner
    /// (or None, for a connection that does not route) and the answers by token.
    fn run(connection: &mut EnigmaConnection, keys: std::ops::Range<u64>) -> (Option<u64>, Vec<(u64, Answer)>) {
        let mut to_owner = Some(0);
        let mut tokens = HashSet::new();
        for key in keys {
            for kind in [OpKind::Write, OpKind::Read] {
                let sent = connection.send(Op { kind, key }).unwrap();
                assert!(tokens.insert(sent.token), "tokens are unique over every lane");
                to_owner = to_owner.zip(sent.to_owner).map(|(n, owner)| n + u64::from(owner));
            }
        }
        let answers = (0..tokens.len()).map(|_| connection.recv(None).unwrap().unwrap()).collect::<Vec<_>>();
        assert!(answers.iter().all(|(token, _)| tokens.contains(token)));
        assert!(connection.recv(Some(Duration::from_millis(1))).is_err(), "every answer was taken");
        (to_owner, answers)
    }

    #[test]
    fn a_shard_aware_connection_sends_every_operation_to_its_shard() {
        let topology = fake_node(1, true);
        let mut connection = open(&topology, true);
        let reaches: Vec<Reach> = connection.lanes.iter().map(|l| l.reach.clone()).collect();
        let key = NodeKey::of(&topology.nodes[0]);
        assert_eq!(reaches, [Reach::Home, Reach::Shard(key.clone()), Reach::Shard(key)]);
        let (to_owner, answers) = run(&mut connection, 0..200);
        assert_eq!(to_owner, Some(400));
        assert!(answers.iter().all(|(_, a)| matches!(a, Answer::Written | Answer::Missing)), "{answers:?}");
    }

    #[test]
    fn without_a_shard_aware_port_a_node_gets_one_ordinary_connection() {
        let topology = fake_node(1, false);
        let mut connection = open(&topology, true);
        assert_eq!(connection.lanes.len(), 2);
        assert_eq!(connection.lanes[1].reach, Reach::Node(NodeKey::of(&topology.nodes[0])));
        let (to_owner, answers) = run(&mut connection, 0..200);
        // Shard 0 serves the ordinary port: its partitions' requests count as routed to their
        // owner and succeed; shard 1's are refused by the fake.
        let refused = answers.iter().filter(|(_, a)| matches!(a, Answer::Error(_))).count() as u64;
        assert_eq!(to_owner, Some(400 - refused));
        assert!(0 < refused && refused < 400, "{refused} refused");
    }

    #[test]
    fn without_shard_awareness_there_is_one_connection_and_nothing_is_counted() {
        let topology = fake_node(1, true);
        let mut connection = open(&topology, false);
        assert_eq!(connection.lanes.len(), 1);
        assert_eq!(run(&mut connection, 0..20).0, None);
    }

    #[test]
    fn the_requests_of_a_node_that_left_are_answered_lost() {
        let topology = fake_node(1, true);
        let mut connection = open(&topology, true);
        for key in 0..50 {
            connection.send(Op { kind: OpKind::Write, key }).unwrap();
        }
        // The same addresses under another host id: node 1 left, node 2 joined.
        let mut replaced = topology.clone();
        replaced.nodes[0].host_id = 2;
        replaced.version = 6;
        connection.apply(replaced.clone());
        let key = NodeKey::of(&replaced.nodes[0]);
        assert_eq!(connection.lanes.iter().filter(|l| l.reach == Reach::Shard(key.clone())).count(), 2);
        let answers: Vec<Answer> = (0..50).map(|_| connection.recv(None).unwrap().unwrap().1).collect();
        assert!(answers.iter().all(|a| *a == Answer::Lost(NODE_LEFT.into())), "{answers:?}");
        let (to_owner, answers) = run(&mut connection, 0..50);
        assert_eq!(to_owner, Some(100), "the new node's lanes took over");
        assert!(answers.iter().all(|(_, a)| matches!(a, Answer::Written | Answer::Missing)));
    }

    #[test]
    fn routes_name_each_shards_lane_and_send_the_rest_home() {
        let up = TopologyNode {
            host_id: 1,
            client: SocketAddr::from(([127, 0, 0, 1], 9470)),
            shard_aware: None,
            alive: true,
            tokens: tokens(),
        };
        let down = TopologyNode { host_id: 2, tokens: vec![vec![-5]], ..up.clone() };
        let topology = Topology { version: 1, nodes: vec![up.clone(), down] };
        let (home, shard1) = (Reach::Home, Reach::Shard(NodeKey::of(&up)));
        let routes = Routes::new(&topology, &[(&home, 0), (&shard1, 1)]);
        assert_eq!(routes.lane(-4), Some((1, 1)), "shard 1's vnode 0 has a lane");
        assert_eq!(routes.lane(-(1 << 62)), None, "shard 0 has none");
        assert_eq!(routes.lane(-5), None, "node 2 has none");
        let node = Reach::Node(NodeKey::of(&up));
        let routes = Routes::new(&topology, &[(&home, 0), (&node, 1)]);
        assert_eq!((routes.lane(0), routes.lane(1)), (Some((1, 1)), Some((1, 0))), "one lane, every shard");
        let empty = Topology { version: 1, nodes: vec![TopologyNode { tokens: vec![vec![]], ..up }] };
        assert_eq!(Routes::new(&empty, &[(&home, 0)]).lane(0), None, "no tokens, no routes");
    }
}

//! The coordinator role of a node (runs on every shard, for that shard's client connections):
//! takes a client request, parses and plans its statement, and runs the plan through the
//! storage proxy, which sends each partition's work to the replicas of its token at the
//! request's consistency level (this shard in place, the node's other shards through `Node`,
//! other nodes through the peer protocol). Node-wide duties (admin, telling peers of schema
//! changes, hints) belong to the coordinator shard; the role elsewhere reaches them through
//! [`CoordinatorShard`]. Every failure becomes a typed protocol error; nothing a client sends
//! panics the shard.

mod admin;
mod auth;
mod batchlog;
mod bootstrap;
mod cleanup;
mod decommission;
mod paging;
mod proxy;
mod range;
mod repair;
mod replica;
mod select;
mod stream;
mod trace;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use shards::node::{Node, NodeError};
use shards::shard::ShardError;
use wire::protocol::{
    AdminRequest, BatchKind, BatchRequest, BatchStatement, ColumnSpec, ErrorCode, ErrorResponse, PreparedId,
    PreparedMeta, QueryParams, QueryResult, Request, Response, Rows, Topology, TopologyAnswer, TopologyNode, Traced,
};
use wire::schema::TableSchema;
use wire::{ColumnType, Value};

use crate::auth::tables::{is_auth_table, AUTH_TABLE_PREFIX};
use crate::auth::{AuthSettings, Caller};
use crate::cluster::service::Cluster;
use crate::cluster::view::ClusterView;
use crate::cql::{self, CqlError, CqlErrorKind, Plan, Statement};
use crate::hints::HintStore;

pub use auth::{create_auth_tables, required};
pub use batchlog::{Batchlog, BatchlogError};
pub use bootstrap::{bootstrap, BootstrapSettings};
pub use decommission::recover_interrupted_decommission;
pub use paging::{PagingError, PagingState};
pub use proxy::{HintSink, StorageProxy, Timeouts, WriteGroup, DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT};
pub use repair::repair_every;
pub use replica::{handle_data, ReplicaHandler};
pub use select::{PageLimits, DEFAULT_PAGE_BYTES};

/// Prepared statements kept per coordinator; the oldest is forgotten beyond this (its client
/// gets an UNPREPARED error and prepares again, as with Cassandra's prepared cache).
pub const MAX_PREPARED_STATEMENTS: usize = 4096;
/// Rows per page when the client does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 5000;

/// Where a coordinator runs.
pub enum Role {
    /// On the node's coordinator shard (shard 0), which owns the cluster service, the hint
    /// store, admin and repair, and replays the batchlog at start.
    /// `streaming` paces the streams of its range movements (bootstrap, decommission).
    CoordinatorShard { cluster: Rc<Cluster>, hints: Rc<HintStore>, streaming: BootstrapSettings },
    /// On another shard (its front door), which reaches those duties through `home`.
    FrontDoor { shard: u16, home: Rc<dyn CoordinatorShard> },
}

/// What the coordinator role on another shard asks of the coordinator shard (the server
/// carries it over a channel).
pub trait CoordinatorShard {
    /// Runs an admin command there: admin is the coordinator shard's duty.
    fn admin(&self, command: AdminRequest) -> Pin<Box<dyn Future<Output = Response> + '_>>;
    /// Tells the peers of a schema change made on this shard, as DDL on the coordinator shard
    /// does itself.
    fn schema_changed(&self) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

pub struct Coordinator {
    node: Node,
    role: Role,
    /// Sends writes and reads to the replicas of their tokens.
    proxy: StorageProxy,
    batchlog: Batchlog,
    prepared: RefCell<PreparedCache>,
    /// The TOPOLOGY of the last view asked about, with its version (a new view is a new `Rc`,
    /// so a pointer comparison tells whether it is still current).
    topology: RefCell<Option<(Rc<ClusterView>, Rc<Topology>)>>,
    admin: admin::AdminState,
    repairs: repair::Repairs,
    /// How large a SELECT's page may grow.
    pages: PageLimits,
    /// Authentication settings and this shard's role and permission caches.
    auth: auth::AuthState,
}

impl Coordinator {
    /// The coordinator of `proxy`'s node in `role`. `batchlog` is this shard's: on the
    /// coordinator shard, [`Batchlog::open`] it (replaying what a crash left) before any
    /// front door attaches to it. `client_address` is where the node's clients connect;
    /// `pages` bounds the pages of its SELECTs; `auth` says who may do what.
    pub fn new(
        role: Role,
        proxy: StorageProxy,
        batchlog: Batchlog,
        client_address: SocketAddr,
        pages: PageLimits,
        auth: AuthSettings,
    ) -> Coordinator {
        Coordinator {
            node: proxy.node().clone(),
            role,
            proxy,
            batchlog,
            prepared: RefCell::new(PreparedCache::default()),
            topology: RefCell::new(None),
            admin: admin::AdminState::new(client_address),
            repairs: repair::Repairs::new(),
            pages,
            auth: auth::AuthState::new(auth),
        }
    }

    /// The coordinator with the shards' memory budgets, which `admin info` shows.
    pub fn with_memory_budgets(mut self, memory: wire::protocol::MemoryBudgets) -> Coordinator {
        self.admin.memory = Some(memory);
        self
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The cluster service (gossip, peers), on the coordinator shard: schema changes made
    /// here are pushed to the peers, and `admin status` lists every node it knows.
    fn cluster(&self) -> Option<Rc<Cluster>> {
        match &self.role {
            Role::CoordinatorShard { cluster, .. } => Some(cluster.clone()),
            Role::FrontDoor { .. } => None,
        }
    }

    /// The node's hint store, for `admin info` (coordinator shard).
    fn hint_store(&self) -> Option<Rc<HintStore>> {
        match &self.role {
            Role::CoordinatorShard { hints, .. } => Some(hints.clone()),
            Role::FrontDoor { .. } => None,
        }
    }

    /// After DDL here: the peers learn the change (the cluster service waits, bounded, for
    /// the live ones to take it).
    async fn schema_changed(&self) {
        match &self.role {
            Role::CoordinatorShard { cluster, .. } => cluster.schema_changed().await,
            Role::FrontDoor { home, .. } => home.schema_changed().await,
        }
    }

    /// The replicated write and read paths (their view cell is where a new view is swapped
    /// in).
    pub fn proxy(&self) -> &StorageProxy {
        &self.proxy
    }

    /// Answers one request of `caller` (STARTUP, OPTIONS and AUTH_RESPONSE are the
    /// connection's business).
    pub async fn execute(&self, request: Request, caller: &Caller) -> Response {
        match request {
            Request::Admin(command) => {
                let what = format!("run admin command {}", command.name());
                match self.require_superuser(caller, &what).await {
                    Ok(()) => self.admin_checked(command).await,
                    Err(e) => Response::Error(e),
                }
            }
            request => self.query(request, caller).await,
        }
    }

    /// Runs an admin command whose caller was checked (here, or on the front door that
    /// received it): admin is the coordinator shard's duty.
    pub async fn admin_checked(&self, command: AdminRequest) -> Response {
        match &self.role {
            Role::CoordinatorShard { .. } => Box::pin(self.admin(command)).await,
            Role::FrontDoor { home, .. } => Box::pin(home.admin(command)).await,
        }
    }

    async fn query(&self, request: Request, caller: &Caller) -> Response {
        let traced =
            matches!(&request, Request::Query { params, .. } | Request::Execute { params, .. } if params.trace);
        let answer = match traced {
            false => self.run(request, caller).await,
            true => {
                // Boxed: a traced request is rare, and its future holds a second `run`.
                let (answer, events) = Box::pin(trace::traced(self.node_name(), self.run(request, caller))).await;
                answer.map(|result| QueryResult::Traced(Box::new(Traced { events, result })))
            }
        };
        match answer {
            Ok(result) => Response::Result(result),
            Err(e) => Response::Error(e),
        }
    }

    async fn run(&self, request: Request, caller: &Caller) -> Result<QueryResult, ErrorResponse> {
        match request {
            Request::Query { text, params } => {
                trace::event(|| format!("Parsing {}", shorten(&text)));
                let statement = cql::parse_one(&text).map_err(cql_error)?;
                self.authorize(caller, &statement).await?;
                if let Statement::Auth(statement) = statement {
                    return Box::pin(self.run_auth(caller, statement)).await;
                }
                let plan = cql::plan(&statement, &self.schemas()).map_err(cql_error)?;
                self.run_plan(plan, &params).await
            }
            Request::Prepare { text } => self.prepare(&text),
            Request::Execute { id, values, params } => {
                trace::event(|| format!("Binding {} value(s) to prepared statement {id}", values.len()));
                let entry = self.prepared.borrow().get(id);
                if let Some(entry) = entry {
                    self.authorize(caller, &entry.statement).await?;
                }
                match self.bind_prepared(id, &values)? {
                    Plan::Auth(statement) => Box::pin(self.run_auth(caller, statement)).await,
                    plan => self.run_plan(plan, &params).await,
                }
            }
            Request::Batch(batch) => Box::pin(self.batch(batch, caller)).await,
            Request::Topology { known_version } => Ok(QueryResult::Topology(self.topology(known_version))),
            Request::Startup { .. } | Request::Options | Request::AuthResponse { .. } => Err(ErrorResponse::new(
                ErrorCode::Protocol,
                "STARTUP, OPTIONS and AUTH_RESPONSE are connection requests",
            )),
            // `execute` answers admin commands before this point.
            Request::Admin(command) => Err(ErrorResponse::new(
                ErrorCode::Server,
                format!("admin command {} took the query path", command.name()),
            )),
        }
    }

    /// The tables clients see: the node's own (`system_...`) and the auth tables are hidden.
    fn schemas(&self) -> impl Fn(&str) -> Option<Arc<TableSchema>> + '_ {
        |name: &str| if is_hidden(name) { None } else { self.node.table(name).ok() }
    }

    fn prepare(&self, text: &str) -> Result<QueryResult, ErrorResponse> {
        let statement = cql::parse_one(text).map_err(cql_error)?;
        let prepared = cql::prepare(&statement, &self.schemas()).map_err(cql_error)?;
        let id = PreparedId::of_statement(text);
        let bind = prepared.markers().iter().map(|m| ColumnSpec { name: m.name.clone(), ty: m.ty }).collect();
        let columns = prepared.projection().map(select::column_specs).unwrap_or_default();
        let pk_indexes = prepared.pk_indexes();
        let planned = RefCell::new(Some((self.node.schema_version(), Rc::new(prepared))));
        self.prepared.borrow_mut().insert(id, Rc::new(PreparedEntry { statement, planned }));
        Ok(QueryResult::Prepared(PreparedMeta { id, bind, columns, pk_indexes }))
    }

    /// What a shard-aware client needs of the cluster, from this shard's view; `Unchanged`
    /// when the client already has this version. The version is a digest of the content, so
    /// every shard (and node with the same view) names the same topology alike.
    fn topology(&self, known_version: u64) -> TopologyAnswer {
        let view = self.proxy.view();
        let cached = self.topology.borrow().as_ref().filter(|(of, _)| Rc::ptr_eq(of, &view)).map(|(_, t)| t.clone());
        let topology = cached.unwrap_or_else(|| {
            let topology = Rc::new(Self::topology_of(&view));
            *self.topology.borrow_mut() = Some((view, topology.clone()));
            topology
        });
        match topology.version == known_version {
            true => TopologyAnswer::Unchanged { version: known_version },
            false => TopologyAnswer::Full((*topology).clone()),
        }
    }

    /// The topology `view` shows, with its version: a digest of its encoding. Joining members
    /// are left out: clients route to the natural ring, as reads do.
    fn topology_of(view: &ClusterView) -> Topology {
        let nodes = view
            .members()
            .iter()
            .filter(|m| view.in_ring(m.host))
            .map(|m| TopologyNode {
                host_id: m.host,
                client: m.client,
                shard_aware: m.shard_aware,
                alive: m.alive,
                tokens: m.tokens.clone(),
            })
            .collect();
        let mut topology = Topology { version: 0, nodes };
        let (_, body) = Response::Result(QueryResult::Topology(TopologyAnswer::Full(topology.clone()))).encode();
        // Never 0, which a client sends when it knows no version.
        topology.version = wire::token::murmur3_x64_128_cassandra(&body, 0).0.max(1);
        topology
    }

    /// What a prepared statement does (the request metrics' `op` label); None for an id this
    /// coordinator does not know.
    pub fn prepared_kind(&self, id: PreparedId) -> Option<crate::metrics::StatementKind> {
        let entry = self.prepared.borrow().get(id)?;
        Some(crate::metrics::StatementKind::of_statement(&entry.statement))
    }

    /// The plan of a prepared statement with its values. The statement is planned again
    /// when a schema changed since it was last planned, so a table dropped or recreated since
    /// PREPARE is seen.
    fn bind_prepared(&self, id: PreparedId, values: &[Option<Value>]) -> Result<Plan, ErrorResponse> {
        let entry = self.prepared.borrow().get(id).ok_or_else(|| {
            ErrorResponse::new(ErrorCode::Unprepared { id }, format!("prepared statement {id} is unknown here"))
        })?;
        let epoch = self.node.schema_version();
        let cached = entry.planned.borrow().as_ref().filter(|(at, _)| *at == epoch).map(|(_, p)| p.clone());
        let prepared = match cached {
            Some(prepared) => prepared,
            None => {
                let prepared = Rc::new(cql::prepare(&entry.statement, &self.schemas()).map_err(cql_error)?);
                *entry.planned.borrow_mut() = Some((epoch, prepared.clone()));
                prepared
            }
        };
        prepared.bind(values).map_err(cql_error)
    }

    async fn run_plan(&self, plan: Plan, params: &QueryParams) -> Result<QueryResult, ErrorResponse> {
        match plan {
            // Schema changes are rare and their futures large: boxed, so that every request's
            // task stays the size of the common path's.
            Plan::CreateTable { .. } | Plan::DropTable { .. } | Plan::Truncate { .. } => {
                Box::pin(self.run_ddl(plan)).await
            }
            Plan::DescribeTables => {
                let mut names: Vec<String> =
                    self.node.tables().iter().map(|t| t.name.clone()).filter(|n| !is_hidden(n)).collect();
                names.sort();
                Ok(single_text_column("name", names))
            }
            Plan::DescribeTable { schema } => {
                Ok(single_text_column("create_statement", vec![cql::render_create_table(&schema)]))
            }
            Plan::Write(write) => {
                let consistency = params.consistency;
                let ts = self.proxy.timestamp(write.timestamp.or(params.timestamp))?;
                trace::event(|| {
                    format!("Write of {} partition update(s) at {consistency}, timestamp {ts}", write.writes.len())
                });
                let logged = write.batch == Some(cql::ast::BatchKind::Logged);
                let spans_shards = logged && self.spans_shards(&write.writes);
                let groups = self.proxy.place(write.writes, ts, consistency)?;
                // A shard applies its part of a batch atomically (one WAL record); a logged
                // batch that spans shards or replica sets goes through the batchlog to be
                // all-or-nothing.
                if spans_shards || (logged && groups.len() > 1) {
                    trace::event(|| "Logged batch across shards or replica sets: through the batchlog".into());
                    let updates: Vec<_> = groups.iter().flat_map(|g| g.updates().iter().cloned()).collect();
                    let apply = self.proxy.replicate(groups, consistency);
                    Box::pin(self.batchlog.write(&self.node, &updates, ts, apply)).await?;
                } else {
                    self.proxy.replicate(groups, consistency).await?;
                }
                Ok(QueryResult::Void)
            }
            Plan::Select(select) => Box::pin(select::run(&self.proxy, &select, params, self.pages)).await,
            // `run` takes role statements before planning (they need the caller).
            Plan::Auth(_) => Err(ErrorResponse::new(ErrorCode::Server, "a role statement took the data path")),
        }
    }

    /// CREATE TABLE, DROP TABLE and TRUNCATE.
    async fn run_ddl(&self, plan: Plan) -> Result<QueryResult, ErrorResponse> {
        match plan {
            Plan::CreateTable { schema, if_not_exists } => {
                let name = schema.name.clone();
                if is_hidden(&name) {
                    return Err(ErrorResponse::new(
                        ErrorCode::Invalid,
                        format!(
                            "table names starting with '{}' or '{}' are reserved",
                            batchlog::RESERVED_PREFIX,
                            AUTH_TABLE_PREFIX
                        ),
                    ));
                }
                if self.node.table(&name).is_ok() {
                    return match if_not_exists {
                        true => Ok(QueryResult::Void),
                        false => Err(ErrorResponse::new(
                            ErrorCode::AlreadyExists,
                            format!("Cannot add already existing table \"{name}\""),
                        )),
                    };
                }
                let ts = self.proxy.timestamp(None)?;
                self.node.create_table(schema, Some(ts)).await.map_err(node_error)?;
                self.schema_changed().await;
                Ok(QueryResult::SchemaChange { change: "CREATED".into(), table: name })
            }
            Plan::DropTable { table, if_exists } => {
                if is_hidden(&table) || self.node.table(&table).is_err() {
                    return match if_exists {
                        true => Ok(QueryResult::Void),
                        false => Err(ErrorResponse::new(ErrorCode::Invalid, format!("Table '{table}' doesn't exist"))),
                    };
                }
                let ts = self.proxy.timestamp(None)?;
                self.node.drop_table(&table, Some(ts)).await.map_err(node_error)?;
                self.schema_changed().await;
                Ok(QueryResult::SchemaChange { change: "DROPPED".into(), table })
            }
            Plan::Truncate { schema } => {
                self.proxy.truncate(&schema).await?;
                Ok(QueryResult::Void)
            }
            _ => Err(ErrorResponse::new(
                ErrorCode::Server,
                "a statement other than CREATE, DROP or TRUNCATE took the schema path",
            )),
        }
    }

    /// A protocol BATCH: every statement planned (from text or prepared) to writes, applied
    /// with one timestamp.
    async fn batch(&self, batch: BatchRequest, caller: &Caller) -> Result<QueryResult, ErrorResponse> {
        if batch.statements.is_empty() {
            return Err(ErrorResponse::new(ErrorCode::Invalid, "a BATCH needs at least one statement"));
        }
        let mut writes = Vec::new();
        let mut timestamp = batch.timestamp;
        for statement in &batch.statements {
            let plan = match statement {
                BatchStatement::Query(text, values) => {
                    let statement = cql::parse_one(text).map_err(cql_error)?;
                    self.authorize(caller, &statement).await?;
                    let prepared = cql::prepare(&statement, &self.schemas()).map_err(cql_error)?;
                    prepared.bind(values).map_err(cql_error)?
                }
                BatchStatement::Prepared(id, values) => {
                    let entry = self.prepared.borrow().get(*id);
                    if let Some(entry) = entry {
                        self.authorize(caller, &entry.statement).await?;
                    }
                    self.bind_prepared(*id, values)?
                }
            };
            let Plan::Write(write) = plan else {
                return Err(ErrorResponse::new(
                    ErrorCode::Invalid,
                    "Only INSERT, UPDATE and DELETE statements are allowed in a BATCH",
                ));
            };
            timestamp = timestamp.or(write.timestamp);
            writes.extend(write.writes);
        }
        if writes.len() > shards::mutation::MAX_BATCH_WRITES {
            return Err(ErrorResponse::new(
                ErrorCode::Invalid,
                format!("a BATCH may hold at most {} writes", shards::mutation::MAX_BATCH_WRITES),
            ));
        }
        let kind = match batch.kind {
            BatchKind::Logged => cql::ast::BatchKind::Logged,
            BatchKind::Unlogged => cql::ast::BatchKind::Unlogged,
        };
        let plan = Plan::Write(cql::plan::WritePlan { writes, timestamp, batch: Some(kind) });
        self.run_plan(plan, &QueryParams::with_consistency(batch.consistency)).await
    }

    fn spans_shards(&self, writes: &[shards::mutation::Write]) -> bool {
        let mut shards = writes.iter().map(|w| self.node.shard_of(w.key.token()));
        let first = shards.next();
        shards.any(|s| Some(s) != first)
    }
}

/// Tables clients never see: the node's own and the auth tables.
fn is_hidden(name: &str) -> bool {
    batchlog::is_reserved(name) || is_auth_table(name)
}

fn single_text_column(name: &str, values: Vec<String>) -> QueryResult {
    QueryResult::Rows(Rows {
        columns: vec![ColumnSpec { name: name.into(), ty: ColumnType::Text }],
        rows: values.into_iter().map(|v| vec![Some(Value::Text(v))]).collect(),
        paging_state: None,
    })
}

fn cql_error(e: CqlError) -> ErrorResponse {
    let code = match e.kind {
        CqlErrorKind::Syntax => ErrorCode::Syntax,
        CqlErrorKind::Invalid => ErrorCode::Invalid,
    };
    ErrorResponse::new(code, e.to_string())
}

/// The protocol error for a failure of the node: what the client did wrong is an invalid
/// request; a node that cannot take writes right now is overloaded; the rest is a server error.
fn node_error(e: NodeError) -> ErrorResponse {
    let code = match &e {
        NodeError::UnknownTable(_) | NodeError::Write(_) | NodeError::Key(_) | NodeError::InvalidUpdate(_) => {
            ErrorCode::Invalid
        }
        NodeError::Shard { source: ShardError::Clock(_), .. } => ErrorCode::Invalid,
        NodeError::Shard { source: ShardError::UnknownTable(_), .. } => ErrorCode::Invalid,
        // A full disk (WAL write or flush) and a flush that keeps failing: the node cannot
        // take writes now; another replica or a later retry can.
        NodeError::Shard { source: ShardError::FlushFailed { .. } | ShardError::DiskFull { .. }, .. } => {
            ErrorCode::Overloaded
        }
        // A drained node refuses writes until it restarts: the client should use another node.
        NodeError::Drained => ErrorCode::Overloaded,
        _ => ErrorCode::Server,
    };
    ErrorResponse::new(code, e.to_string())
}

/// A prepared statement and its plan against the schemas of one epoch.
struct PreparedEntry {
    statement: Statement,
    planned: RefCell<Option<(u64, Rc<cql::Prepared>)>>,
}

/// Statements by prepared id, oldest forgotten first beyond [`MAX_PREPARED_STATEMENTS`].
#[derive(Default)]
struct PreparedCache {
    statements: HashMap<PreparedId, Rc<PreparedEntry>>,
    order: VecDeque<PreparedId>,
}

impl PreparedCache {
    fn insert(&mut self, id: PreparedId, entry: Rc<PreparedEntry>) {
        if self.statements.insert(id, entry).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_PREPARED_STATEMENTS {
            if let Some(old) = self.order.pop_front() {
                self.statements.remove(&old);
            }
        }
    }

    fn get(&self, id: PreparedId) -> Option<Rc<PreparedEntry>> {
        self.statements.get(&id).cloned()
    }
}

/// A statement's text for a trace line: its first 200 characters, on one line.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => format!("{}...", &one_line[..at]),
        None => one_line,
    }
}

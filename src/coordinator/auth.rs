//! The coordinator's side of authentication and authorization: logs a connection in, checks
//! every statement and admin command of a logged-in role, and runs the role and permission
//! statements against the replicated auth tables (`auth::tables`), read and written at ONE
//! through the ordinary write and read paths. Lookups on the request path go through this
//! shard's caches (bounded validity); a login always reads the table. With `allow_all` nothing
//! here runs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::node::{Node, NodeError};
use wire::protocol::{
    ColumnSpec, Consistency, ErrorCode, ErrorResponse, PlainCredentials, QueryParams, QueryResult, Rows,
};
use wire::{ColumnType, Value};

use super::{cql_error, Coordinator};
use crate::auth::tables::{self, RoleRecord};
use crate::auth::{
    password, permitted, AuthSettings, Authenticator, Caller, ExpiringCache, Grants, Permission, PermissionSet,
    Resource, INITIAL_PASSWORD_ENV, INITIAL_SUPERUSER,
};
use crate::cql::ast::{AuthStatement, Name, ResourceName, RoleOptions};
use crate::cql::plan::Plan;
use crate::cql::{self, Statement};

/// Roles (and grant lists) a shard keeps cached at most.
const MAX_CACHED_ROLES: usize = 1024;
/// How often the first start looks again for a superuser while it waits for the cluster.
const SETUP_RETRY: Duration = Duration::from_millis(500);

/// This shard's auth state: the settings and the caches.
pub(super) struct AuthState {
    settings: AuthSettings,
    /// By role name; `None` cached for a role that does not exist.
    roles: RefCell<ExpiringCache<Option<Rc<RoleRecord>>>>,
    grants: RefCell<ExpiringCache<Rc<Grants>>>,
}

impl AuthState {
    pub(super) fn new(settings: AuthSettings) -> AuthState {
        AuthState {
            roles: RefCell::new(ExpiringCache::new(settings.roles_validity, MAX_CACHED_ROLES)),
            grants: RefCell::new(ExpiringCache::new(settings.permissions_validity, MAX_CACHED_ROLES)),
            settings,
        }
    }

    /// After a role or permission statement run here: this shard's next checks read the
    /// tables (other shards and nodes within their validity).
    fn invalidate(&self) {
        self.roles.borrow_mut().clear();
        self.grants.borrow_mut().clear();
    }
}

/// Creates the auth tables on a node with authentication on, alike on every node (fixed ids
/// and creation timestamp), before the node meets its peers. Idempotent.
pub async fn create_auth_tables(node: &Node, settings: &AuthSettings) -> Result<(), NodeError> {
    if settings.authenticator == Authenticator::AllowAll {
        return Ok(());
    }
    let rf = settings.replication_factor;
    for schema in [tables::roles_schema(rf), tables::permissions_schema(rf)] {
        if node.table(&schema.name).is_err() {
            node.create_table(schema, Some(tables::CREATED_AT)).await?;
        }
    }
    Ok(())
}

fn bad_credentials(message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::BadCredentials, message)
}

fn unauthorized(message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Unauthorized, message)
}

fn invalid(message: impl Into<String>) -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Invalid, message)
}

/// What a data statement needs: the permission on each table it names (Cassandra's checks;
/// DESCRIBE needs none, role statements are checked when they run).
pub fn required(statement: &Statement) -> Vec<(Permission, Resource)> {
    use crate::cql::ast::BatchStatement as B;
    let table = |name: &Name| Resource::Table(name.text.clone());
    match statement {
        Statement::Select(s) => vec![(Permission::Select, table(&s.table))],
        Statement::Insert(s) => vec![(Permission::Modify, table(&s.table))],
        Statement::Update(s) => vec![(Permission::Modify, table(&s.table))],
        Statement::Delete(s) => vec![(Permission::Modify, table(&s.table))],
        Statement::Truncate { name } => vec![(Permission::Modify, table(name))],
        Statement::Batch(b) => b
            .statements
            .iter()
            .map(|s| match s {
                B::Insert(s) => (Permission::Modify, table(&s.table)),
                B::Update(s) => (Permission::Modify, table(&s.table)),
                B::Delete(s) => (Permission::Modify, table(&s.table)),
            })
            .collect(),
        Statement::CreateTable(_) => vec![(Permission::Create, Resource::AllTables)],
        Statement::DropTable { name, .. } => vec![(Permission::Drop, table(name))],
        Statement::DescribeTables | Statement::DescribeTable { .. } | Statement::Auth(_) => Vec::new(),
    }
}

impl Coordinator {
    pub fn authenticator(&self) -> Authenticator {
        self.auth.settings.authenticator
    }

    /// Checks the credentials of an AUTH_RESPONSE token: the role logged in, or a
    /// `BadCredentials` error (the connection then closes). Reads the roles table, never the
    /// cache, so a dropped role or a changed password counts at once. The verification runs
    /// on a verifier thread (`password::verify_off_shard`); the shard serves meanwhile.
    pub async fn login(&self, token: &[u8]) -> Result<Caller, ErrorResponse> {
        let credentials = PlainCredentials::decode(token).map_err(|e| bad_credentials(e.to_string()))?;
        let role = self
            .read_role(&credentials.username)
            .await
            .map_err(|e| bad_credentials(format!("cannot check the credentials now: {}", e.message)))?;
        let stored = role.as_ref().and_then(|r| r.salted_hash.clone());
        let PlainCredentials { password, .. } = credentials;
        // Tens of milliseconds of CPU, off the shard: its other requests go on meanwhile.
        let matches = password::verify_off_shard(password, stored).await;
        match role {
            Some(role) if matches && role.can_login => Ok(Caller::Role(role.name.clone())),
            Some(role) if matches => Err(bad_credentials(format!("{} is not permitted to log in", role.name))),
            _ => Err(bad_credentials("Provided username and/or password are incorrect")),
        }
    }

    /// The role's row, read from the table (and cached).
    async fn read_role(&self, name: &str) -> Result<Option<Rc<RoleRecord>>, ErrorResponse> {
        let rows = self.internal(tables::SELECT_ROLE, vec![Some(Value::Text(name.to_owned()))], 1).await?;
        let role = rows.rows.first().and_then(|row| RoleRecord::from_row(row)).map(Rc::new);
        self.auth.roles.borrow_mut().insert(name, role.clone(), Instant::now());
        Ok(role)
    }

    /// The role's row, from this shard's cache while it is valid.
    async fn role(&self, name: &str) -> Result<Option<Rc<RoleRecord>>, ErrorResponse> {
        let cached = self.auth.roles.borrow().get(name, Instant::now());
        if let Some(role) = cached {
            return Ok(role);
        }
        self.read_role(name).await
    }

    /// The role's grants, from this shard's cache while it is valid.
    async fn grants(&self, name: &str) -> Result<Rc<Grants>, ErrorResponse> {
        if let Some(grants) = self.auth.grants.borrow().get(name, Instant::now()) {
            return Ok(grants);
        }
        let values = vec![Some(Value::Text(name.to_owned()))];
        let rows = self.internal(tables::SELECT_GRANTS, values, tables::MAX_GRANTS_PER_ROLE).await?;
        let grants = Rc::new(tables::grants_from_rows(&rows.rows));
        self.auth.grants.borrow_mut().insert(name, grants.clone(), Instant::now());
        Ok(grants)
    }

    /// The logged-in role, still existing and allowed to log in (a role dropped or denied
    /// LOGIN loses its connections' rights once this shard's cache expires).
    async fn current_role(&self, name: &str) -> Result<Rc<RoleRecord>, ErrorResponse> {
        match self.role(name).await? {
            Some(role) if role.can_login => Ok(role),
            Some(_) => Err(unauthorized(format!("{name} is not permitted to log in any more"))),
            None => Err(unauthorized(format!("role {name} does not exist any more"))),
        }
    }

    /// Refuses unless the caller is a superuser (admin commands, role management).
    pub(super) async fn require_superuser(&self, caller: &Caller, what: &str) -> Result<(), ErrorResponse> {
        let Caller::Role(name) = caller else { return Ok(()) };
        match self.current_role(name).await?.is_superuser {
            true => Ok(()),
            false => Err(unauthorized(format!("Only superusers are allowed to {what}"))),
        }
    }

    /// Refuses unless the caller holds `permission` on `resource` (or above it).
    async fn require(&self, caller: &Caller, permission: Permission, resource: &Resource) -> Result<(), ErrorResponse> {
        let Caller::Role(name) = caller else { return Ok(()) };
        let role = self.current_role(name).await?;
        if role.is_superuser {
            return Ok(());
        }
        let grants = self.grants(name).await?;
        match permitted(false, &grants, resource).contains(permission) {
            true => Ok(()),
            false => Err(unauthorized(format!(
                "User {name} has no {permission} permission on {resource} or any of its parents"
            ))),
        }
    }

    /// Checks what a data statement needs (`required`); role statements check their own.
    pub(super) async fn authorize(&self, caller: &Caller, statement: &Statement) -> Result<(), ErrorResponse> {
        if *caller == Caller::Anonymous {
            return Ok(());
        }
        // Boxed: a lookup may read the permissions table, a large future that the anonymous
        // caller's requests (and their tasks) should not carry.
        Box::pin(async {
            for (permission, resource) in required(statement) {
                self.require(caller, permission, &resource).await?;
            }
            Ok(())
        })
        .await
    }

    /// Runs an internal statement on the auth tables at ONE; a SELECT's rows, at most `limit`
    /// (more is an error, never a silent cut). A write also waits for this node's own copy
    /// when it is a replica, so that what a statement wrote is read back here.
    async fn internal(&self, text: &str, values: Vec<Option<Value>>, limit: usize) -> Result<Rows, ErrorResponse> {
        let statement = cql::parse_one(text).map_err(cql_error)?;
        let schemas = |name: &str| self.node.table(name).ok();
        let plan = cql::prepare(&statement, &schemas).and_then(|p| p.bind(&values)).map_err(cql_error)?;
        let params = QueryParams {
            page_size: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
            ..QueryParams::with_consistency(Consistency::One)
        };
        if let Plan::Write(write) = plan {
            // At ONE, and applied on this node too when it is a replica: the statement's
            // next read here (at ONE, this node first) sees it, whichever replica answered
            // first (CREATE ROLE then GRANT on one connection).
            let ts = self.proxy.timestamp(write.timestamp)?;
            let groups = self.proxy.place(write.writes, ts, Consistency::One)?;
            self.proxy.replicate_with(groups, Consistency::One, true).await?;
            return Ok(Rows { columns: Vec::new(), rows: Vec::new(), paging_state: None });
        }
        match self.run_plan(plan, &params).await? {
            QueryResult::Rows(rows) if rows.paging_state.is_some() => {
                Err(invalid(format!("more than {limit} rows in {}", statement_table(&statement))))
            }
            QueryResult::Rows(rows) => Ok(rows),
            _ => Ok(Rows { columns: Vec::new(), rows: Vec::new(), paging_state: None }),
        }
    }

    /// At the start of a node with authentication on (coordinator shard, after the cluster
    /// service started): makes sure some superuser can log in, creating `enigmadb` with the
    /// initial password when none can. Waits up to the setting's bound for the roles of a
    /// cluster it joins; an error says why the node cannot start.
    pub async fn setup_auth(&self) -> Result<(), String> {
        if self.authenticator() == Authenticator::AllowAll {
            return Ok(());
        }
        let deadline = Instant::now() + self.auth.settings.setup_wait;
        loop {
            let found = self.internal(tables::SELECT_ROLES, Vec::new(), tables::MAX_ROLES).await.map(|rows| {
                rows.rows
                    .iter()
                    .filter_map(|r| RoleRecord::from_row(r))
                    .any(|r| r.is_superuser && r.can_login && r.salted_hash.is_some())
            });
            match (found, &self.auth.settings.initial_password) {
                (Ok(true), initial) => {
                    if initial.is_some() {
                        tracing::info!("a superuser exists: the initial password is not used");
                    }
                    return Ok(());
                }
                (Ok(false), Some(initial)) => {
                    let hashed = password::hash(initial).map_err(|e| e.to_string())?;
                    let role = RoleRecord {
                        name: INITIAL_SUPERUSER.into(),
                        salted_hash: Some(hashed),
                        can_login: true,
                        is_superuser: true,
                    };
                    // Below any later statement's timestamp, the earliest creation highest:
                    // an ALTER or DROP of the role always wins over it, and so does the first
                    // node's creation over one made by a node that started later without
                    // seeing it (`tables::first_superuser_timestamp`).
                    let now_us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
                    let mut values = role.values();
                    values.push(Some(Value::BigInt(tables::first_superuser_timestamp(now_us))));
                    self.internal(tables::INSERT_ROLE_AT, values, 1)
                        .await
                        .map_err(|e| format!("creating the superuser {INITIAL_SUPERUSER}: {}", e.message))?;
                    tracing::info!(role = INITIAL_SUPERUSER, "created the first superuser");
                    return Ok(());
                }
                (found, None) if Instant::now() >= deadline => {
                    let why = match found {
                        Ok(_) => "no superuser role that can log in exists".to_owned(),
                        Err(e) => format!("the roles cannot be read ({})", e.message),
                    };
                    return Err(format!(
                        "authenticator = password, but {why}: set {INITIAL_PASSWORD_ENV} (or initial_password_file) \
                         for this first start to create the superuser '{INITIAL_SUPERUSER}'"
                    ));
                }
                (Err(e), Some(_)) if Instant::now() >= deadline => {
                    return Err(format!("the roles cannot be read: {}", e.message));
                }
                _ => glommio::timer::sleep(SETUP_RETRY).await,
            }
        }
    }

    /// Runs a role or permission statement for `caller`.
    pub(super) async fn run_auth(
        &self,
        caller: &Caller,
        statement: AuthStatement,
    ) -> Result<QueryResult, ErrorResponse> {
        if self.authenticator() == Authenticator::AllowAll {
            return Err(invalid(
                "roles and permissions need authentication: this node runs with authenticator = allow_all",
            ));
        }
        let result = self.run_auth_statement(caller, statement).await;
        self.auth.invalidate();
        result
    }

    async fn run_auth_statement(
        &self,
        caller: &Caller,
        statement: AuthStatement,
    ) -> Result<QueryResult, ErrorResponse> {
        match statement {
            AuthStatement::CreateRole { role, if_not_exists, options } => {
                self.require_superuser(caller, "create roles").await?;
                if self.read_role(&role.text).await?.is_some() {
                    return match if_not_exists {
                        true => Ok(QueryResult::Void),
                        false => {
                            Err(ErrorResponse::new(ErrorCode::AlreadyExists, format!("{} already exists", role.text)))
                        }
                    };
                }
                let record = RoleRecord {
                    name: role.text.clone(),
                    salted_hash: hash_option(&options).await?,
                    can_login: options.login.unwrap_or(false),
                    is_superuser: options.superuser.unwrap_or(false),
                };
                self.internal(tables::INSERT_ROLE, record.values(), 1).await?;
                Ok(QueryResult::Void)
            }
            AuthStatement::AlterRole { role, options } => {
                let own_password_only = matches!(caller, Caller::Role(me) if *me == role.text)
                    && options.login.is_none()
                    && options.superuser.is_none();
                if !own_password_only {
                    self.require_superuser(caller, "alter roles other than their own password").await?;
                }
                let Some(current) = self.read_role(&role.text).await? else {
                    return Err(invalid(format!("{} doesn't exist", role.text)));
                };
                if matches!(caller, Caller::Role(me) if *me == role.text) && options.superuser == Some(false) {
                    return Err(invalid("You aren't allowed to alter your own superuser status"));
                }
                let record = RoleRecord {
                    name: current.name.clone(),
                    salted_hash: match options.password {
                        Some(_) => hash_option(&options).await?,
                        None => current.salted_hash.clone(),
                    },
                    can_login: options.login.unwrap_or(current.can_login),
                    is_superuser: options.superuser.unwrap_or(current.is_superuser),
                };
                self.internal(tables::INSERT_ROLE, record.values(), 1).await?;
                Ok(QueryResult::Void)
            }
            AuthStatement::DropRole { role, if_exists } => {
                self.require_superuser(caller, "drop roles").await?;
                if matches!(caller, Caller::Role(me) if *me == role.text) {
                    return Err(invalid("Cannot DROP primary role for current login"));
                }
                if self.read_role(&role.text).await?.is_none() {
                    return match if_exists {
                        true => Ok(QueryResult::Void),
                        false => Err(invalid(format!("{} doesn't exist", role.text))),
                    };
                }
                let key = vec![Some(Value::Text(role.text.clone()))];
                self.internal(tables::DELETE_GRANTS, key.clone(), 1).await?;
                self.internal(tables::DELETE_ROLE, key, 1).await?;
                Ok(QueryResult::Void)
            }
            AuthStatement::ListRoles => {
                let rows = self.internal(tables::SELECT_ROLES, Vec::new(), tables::MAX_ROLES).await?;
                let mut roles: Vec<RoleRecord> = rows.rows.iter().filter_map(|r| RoleRecord::from_row(r)).collect();
                // A role that is not a superuser sees itself only (Cassandra: roles granted to it).
                if let Caller::Role(me) = caller {
                    if !self.current_role(me).await?.is_superuser {
                        roles.retain(|r| r.name == *me);
                    }
                }
                roles.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(roles_result(&roles))
            }
            AuthStatement::Grant { permissions, resource, role } => {
                self.change_grants(caller, permissions, &resource, &role, tables::INSERT_GRANT).await
            }
            AuthStatement::Revoke { permissions, resource, role } => {
                self.change_grants(caller, permissions, &resource, &role, tables::DELETE_GRANT).await
            }
            AuthStatement::ListPermissions { permissions, resource, role } => {
                let resource = resource.map(|r| self.resource(&r)).transpose()?;
                let roles: Vec<String> = match &role {
                    Some(role) => {
                        self.existing_role(role).await?;
                        vec![role.text.clone()]
                    }
                    None => {
                        let rows = self.internal(tables::SELECT_ROLES, Vec::new(), tables::MAX_ROLES).await?;
                        rows.rows.iter().filter_map(|r| RoleRecord::from_row(r)).map(|r| r.name).collect()
                    }
                };
                let superuser = match caller {
                    Caller::Role(me) => self.current_role(me).await?.is_superuser,
                    Caller::Anonymous => true,
                };
                let mut out = Vec::new();
                for name in roles {
                    // Others' permissions are for superusers (Cassandra: or AUTHORIZE on roles).
                    if !superuser && !matches!(caller, Caller::Role(me) if *me == name) {
                        if role.is_some() {
                            return Err(unauthorized("You are not authorized to view everyone's permissions"));
                        }
                        continue;
                    }
                    let values = vec![Some(Value::Text(name.clone()))];
                    let rows = self.internal(tables::SELECT_GRANTS, values, tables::MAX_GRANTS_PER_ROLE).await?;
                    for (on, set) in tables::grants_from_rows(&rows.rows) {
                        if resource.as_ref().is_some_and(|r| !r.chain().contains(&on)) {
                            continue;
                        }
                        for p in set.iter().filter(|p| permissions.contains(*p)) {
                            out.push((name.clone(), on.clone(), p));
                        }
                    }
                }
                out.sort_by(|a, b| (&a.0, &a.1, a.2.name()).cmp(&(&b.0, &b.1, b.2.name())));
                Ok(permissions_result(&out))
            }
        }
    }

    /// GRANT (`write` = INSERT_GRANT) or REVOKE (DELETE_GRANT) of `permissions` on a resource.
    async fn change_grants(
        &self,
        caller: &Caller,
        permissions: PermissionSet,
        resource: &ResourceName,
        role: &Name,
        write: &str,
    ) -> Result<QueryResult, ErrorResponse> {
        let resource = self.resource(resource)?;
        self.require_grantable(caller, permissions, &resource).await?;
        self.existing_role(role).await?;
        for p in permissions.iter() {
            self.internal(write, grant_key(&role.text, &resource, p), 1).await?;
        }
        Ok(QueryResult::Void)
    }

    /// GRANT and REVOKE need AUTHORIZE on the resource and every permission given (Cassandra).
    async fn require_grantable(
        &self,
        caller: &Caller,
        permissions: PermissionSet,
        resource: &Resource,
    ) -> Result<(), ErrorResponse> {
        self.require(caller, Permission::Authorize, resource).await?;
        for p in permissions.iter() {
            self.require(caller, p, resource).await?;
        }
        Ok(())
    }

    async fn existing_role(&self, role: &Name) -> Result<(), ErrorResponse> {
        match self.read_role(&role.text).await? {
            Some(_) => Ok(()),
            None => Err(invalid(format!("{} doesn't exist", role.text))),
        }
    }

    /// The resource a statement names, checked: a table must exist (and be a client's).
    fn resource(&self, name: &ResourceName) -> Result<Resource, ErrorResponse> {
        match name {
            ResourceName::AllKeyspaces => Ok(Resource::AllTables),
            ResourceName::Keyspace(k) => Err(invalid(format!(
                "EnigmaDB has no keyspaces (no keyspace {}): grant ON ALL KEYSPACES or ON TABLE t",
                k.text
            ))),
            ResourceName::Table(t) => match self.schemas()(&t.text) {
                Some(schema) => Ok(Resource::Table(schema.name.clone())),
                None => Err(invalid(format!("Table '{}' doesn't exist", t.text))),
            },
        }
    }
}

/// The hash of a role statement's PASSWORD, if any (on the shard: tens of milliseconds).
async fn hash_option(options: &RoleOptions) -> Result<Option<String>, ErrorResponse> {
    let Some(password) = options.password.clone() else { return Ok(None) };
    if password.is_empty() || password.len() > wire::protocol::MAX_PASSWORD_BYTES {
        return Err(invalid(format!("a password must be 1 to {} bytes", wire::protocol::MAX_PASSWORD_BYTES)));
    }
    glommio::yield_if_needed().await;
    password::hash(&password).map(Some).map_err(|e| ErrorResponse::new(ErrorCode::Server, e.to_string()))
}

fn grant_key(role: &str, resource: &Resource, permission: Permission) -> Vec<Option<Value>> {
    vec![
        Some(Value::Text(role.to_owned())),
        Some(Value::Text(resource.stored())),
        Some(Value::Text(permission.name().to_owned())),
    ]
}

fn statement_table(statement: &Statement) -> &str {
    match statement {
        Statement::Select(s) => &s.table.text,
        _ => "an auth table",
    }
}

/// Rows of the named columns (cqlsh's names for LIST ROLES and LIST PERMISSIONS).
fn rows_result(columns: &[(&str, ColumnType)], rows: Vec<Vec<Option<Value>>>) -> QueryResult {
    let columns = columns.iter().map(|(name, ty)| ColumnSpec { name: (*name).into(), ty: *ty }).collect();
    QueryResult::Rows(Rows { columns, rows, paging_state: None })
}

fn roles_result(roles: &[RoleRecord]) -> QueryResult {
    let columns = [("role", ColumnType::Text), ("super", ColumnType::Boolean), ("login", ColumnType::Boolean)];
    let rows = roles
        .iter()
        .map(|r| {
            vec![
                Some(Value::Text(r.name.clone())),
                Some(Value::Boolean(r.is_superuser)),
                Some(Value::Boolean(r.can_login)),
            ]
        })
        .collect();
    rows_result(&columns, rows)
}

fn permissions_result(grants: &[(String, Resource, Permission)]) -> QueryResult {
    let columns = [("role", ColumnType::Text), ("resource", ColumnType::Text), ("permission", ColumnType::Text)];
    let text = |t: String| Some(Value::Text(t));
    let rows = grants
        .iter()
        .map(|(role, on, p)| vec![text(role.clone()), text(on.to_string()), text(p.name().into())])
        .collect();
    rows_result(&columns, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(text: &str) -> Vec<(Permission, Resource)> {
        required(&cql::parse_one(text).unwrap())
    }

    #[test]
    fn each_statement_needs_its_permission_on_its_table() {
        let t = |n: &str| Resource::Table(n.into());
        assert_eq!(needs("SELECT * FROM t"), vec![(Permission::Select, t("t"))]);
        assert_eq!(needs("INSERT INTO t (k) VALUES (1)"), vec![(Permission::Modify, t("t"))]);
        assert_eq!(needs("UPDATE t SET v = 1 WHERE k = 1"), vec![(Permission::Modify, t("t"))]);
        assert_eq!(needs("DELETE FROM t WHERE k = 1"), vec![(Permission::Modify, t("t"))]);
        assert_eq!(needs("TRUNCATE t"), vec![(Permission::Modify, t("t"))]);
        assert_eq!(needs("DROP TABLE t"), vec![(Permission::Drop, t("t"))]);
        assert_eq!(needs("CREATE TABLE t (k int PRIMARY KEY)"), vec![(Permission::Create, Resource::AllTables)]);
        assert_eq!(
            needs("BEGIN BATCH INSERT INTO a (k) VALUES (1); DELETE FROM b WHERE k = 1; APPLY BATCH"),
            vec![(Permission::Modify, t("a")), (Permission::Modify, t("b"))]
        );
        assert!(needs("DESCRIBE TABLES").is_empty());
        assert!(needs("LIST ROLES").is_empty());
    }
}

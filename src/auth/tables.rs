//! The replicated tables of roles and grants (Cassandra's system_auth.roles and
//! system_auth.role_permissions): their schemas, the statements that read and write them, and
//! the decoding of their rows. Every node creates them alike, with fixed ids and creation
//! timestamp, so that creations on several nodes are one table when catalogs merge. Clients
//! never see them (names with [`AUTH_TABLE_PREFIX`] are refused in statements).

use shards::catalog::FIXED_TABLE_IDS;
use wire::schema::{ClusteringColumn, ClusteringOrder, ColumnDef, TableOptions, TableSchema};
use wire::{ColumnType, Value};

use super::permissions::{Permission, PermissionSet, Resource};

/// Table names with this prefix belong to authentication: replicated like client tables, but
/// hidden from clients.
pub const AUTH_TABLE_PREFIX: &str = "enigmadb_auth_";
pub const ROLES_TABLE: &str = "enigmadb_auth_roles";
pub const PERMISSIONS_TABLE: &str = "enigmadb_auth_permissions";
/// The creation timestamp every node gives the auth tables (1 µs after the epoch: any later
/// drop or recreation by name would win over it, and none is possible).
pub const CREATED_AT: shards::hlc::Timestamp = 1;
/// Most roles LIST ROLES reads (one page), and most grants read for one role.
pub const MAX_ROLES: usize = 4096;
pub const MAX_GRANTS_PER_ROLE: usize = 4096;

/// True for the name of an auth table (any case).
pub fn is_auth_table(name: &str) -> bool {
    name.len() >= AUTH_TABLE_PREFIX.len() && name[..AUTH_TABLE_PREFIX.len()].eq_ignore_ascii_case(AUTH_TABLE_PREFIX)
}

fn column(name: &str, ty: ColumnType) -> ColumnDef {
    ColumnDef { name: name.into(), ty }
}

fn options(replication_factor: u8) -> TableOptions {
    TableOptions { replication_factor, ..TableOptions::default() }
}

/// `enigmadb_auth_roles (role text PRIMARY KEY, salted_hash text, can_login boolean,
/// is_superuser boolean)`.
pub fn roles_schema(replication_factor: u8) -> TableSchema {
    TableSchema {
        id: *FIXED_TABLE_IDS.start(),
        name: ROLES_TABLE.into(),
        partition_key: vec![column("role", ColumnType::Text)],
        clustering: Vec::new(),
        columns: vec![
            column("salted_hash", ColumnType::Text),
            column("can_login", ColumnType::Boolean),
            column("is_superuser", ColumnType::Boolean),
        ],
        options: options(replication_factor),
    }
}

/// `enigmadb_auth_permissions (role text, resource text, permission text, granted boolean,
/// PRIMARY KEY (role, resource, permission))`: one row per permission granted, so GRANT and
/// REVOKE are plain writes (no read before).
pub fn permissions_schema(replication_factor: u8) -> TableSchema {
    let clustering =
        |name: &str| ClusteringColumn { column: column(name, ColumnType::Text), order: ClusteringOrder::Asc };
    TableSchema {
        id: *FIXED_TABLE_IDS.start() + 1,
        name: PERMISSIONS_TABLE.into(),
        partition_key: vec![column("role", ColumnType::Text)],
        clustering: vec![clustering("resource"), clustering("permission")],
        columns: vec![column("granted", ColumnType::Boolean)],
        options: options(replication_factor),
    }
}

pub const SELECT_ROLE: &str =
    "SELECT role, salted_hash, can_login, is_superuser FROM enigmadb_auth_roles WHERE role = ?";
pub const SELECT_ROLES: &str = "SELECT role, salted_hash, can_login, is_superuser FROM enigmadb_auth_roles";
pub const INSERT_ROLE: &str =
    "INSERT INTO enigmadb_auth_roles (role, salted_hash, can_login, is_superuser) VALUES (?, ?, ?, ?)";
/// [`INSERT_ROLE`] at a given write timestamp (the first superuser's, [`first_superuser_timestamp`]).
pub const INSERT_ROLE_AT: &str =
    "INSERT INTO enigmadb_auth_roles (role, salted_hash, can_login, is_superuser) VALUES (?, ?, ?, ?) USING TIMESTAMP ?";

/// 2025-01-01T00:00:00Z in microseconds since the epoch: the pivot of
/// [`first_superuser_timestamp`].
const PIVOT_US: i64 = 1_735_689_600_000_000;

/// The write timestamp of the first superuser created at `now_us` (microseconds since the
/// epoch): the pivot mirrored, `2 * PIVOT_US - now_us`. Below every timestamp a statement gets
/// from then on (any ALTER ROLE or DROP ROLE of it wins, as Cassandra's `USING TIMESTAMP 0` for
/// its default role), and the earlier the creation the higher: when several nodes create it
/// (each thought it was the cluster's first start), the first creation wins on every replica
/// once they meet, never the newest. Never at or below [`CREATED_AT`], never above `now_us`
/// (a clock set before the pivot).
pub fn first_superuser_timestamp(now_us: i64) -> i64 {
    (2 * PIVOT_US).saturating_sub(now_us).min(now_us.saturating_sub(1)).max(CREATED_AT + 1)
}
pub const DELETE_ROLE: &str = "DELETE FROM enigmadb_auth_roles WHERE role = ?";
pub const SELECT_GRANTS: &str = "SELECT resource, permission FROM enigmadb_auth_permissions WHERE role = ?";
pub const INSERT_GRANT: &str =
    "INSERT INTO enigmadb_auth_permissions (role, resource, permission, granted) VALUES (?, ?, ?, true)";
pub const DELETE_GRANT: &str =
    "DELETE FROM enigmadb_auth_permissions WHERE role = ? AND resource = ? AND permission = ?";
pub const DELETE_GRANTS: &str = "DELETE FROM enigmadb_auth_permissions WHERE role = ?";

/// A row of the roles table.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleRecord {
    pub name: String,
    /// PHC string (`password::hash`); `None` for a role without a password.
    pub salted_hash: Option<String>,
    pub can_login: bool,
    pub is_superuser: bool,
}

impl std::fmt::Debug for RoleRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleRecord")
            .field("name", &self.name)
            .field("can_login", &self.can_login)
            .field("is_superuser", &self.is_superuser)
            .finish_non_exhaustive()
    }
}

impl RoleRecord {
    /// A row of [`SELECT_ROLE`] or [`SELECT_ROLES`]; `None` for one that does not hold a
    /// role (a partition whose columns were deleted).
    pub fn from_row(row: &[Option<Value>]) -> Option<RoleRecord> {
        let [Some(Value::Text(name)), hash, login, superuser] = row else { return None };
        let flag = |v: &Option<Value>| matches!(v, Some(Value::Boolean(true)));
        let salted_hash = match hash {
            Some(Value::Text(h)) => Some(h.clone()),
            _ => None,
        };
        Some(RoleRecord { name: name.clone(), salted_hash, can_login: flag(login), is_superuser: flag(superuser) })
    }

    /// The bound values of [`INSERT_ROLE`].
    pub fn values(&self) -> Vec<Option<Value>> {
        vec![
            Some(Value::Text(self.name.clone())),
            self.salted_hash.clone().map(Value::Text),
            Some(Value::Boolean(self.can_login)),
            Some(Value::Boolean(self.is_superuser)),
        ]
    }
}

/// The grants of [`SELECT_GRANTS`] rows, one set per resource (rows that do not decode, from
/// a later release, are skipped).
pub fn grants_from_rows(rows: &[Vec<Option<Value>>]) -> Vec<(Resource, PermissionSet)> {
    let mut out: Vec<(Resource, PermissionSet)> = Vec::new();
    for row in rows {
        let [Some(Value::Text(resource)), Some(Value::Text(permission))] = row.as_slice() else { continue };
        let (Some(resource), Some(permission)) = (Resource::from_stored(resource), Permission::parse(permission))
        else {
            continue;
        };
        let one: PermissionSet = [permission].into_iter().collect();
        match out.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, set)) => *set = set.union(one),
            None => out.push((resource, one)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_valid_fixed_and_hidden() {
        for schema in [roles_schema(3), permissions_schema(3)] {
            schema.validate().unwrap();
            assert!(FIXED_TABLE_IDS.contains(&schema.id));
            assert!(is_auth_table(&schema.name));
            assert!(!shards::catalog::is_local_table(&schema.name), "replicated, not node-local");
        }
        assert!(is_auth_table("ENIGMADB_AUTH_roles"));
        assert!(!is_auth_table("events"));
    }

    #[test]
    fn the_first_superuser_is_written_below_any_later_statement_and_the_earliest_wins() {
        let day = 86_400_000_000i64;
        let now = PIVOT_US + 700 * day;
        let ts = first_superuser_timestamp(now);
        assert!(ts > CREATED_AT && ts < now, "{ts} below {now}");
        assert!(ts < PIVOT_US, "below any statement made after the pivot");
        assert!(first_superuser_timestamp(now + day) < ts, "a later creation loses to an earlier one");
        // A clock before the pivot: still below its own time.
        assert!(first_superuser_timestamp(PIVOT_US - day) < PIVOT_US - day);
        assert_eq!(first_superuser_timestamp(0), CREATED_AT + 1);
        assert_eq!(first_superuser_timestamp(i64::MAX), CREATED_AT + 1);
    }

    #[test]
    fn rows_decode_to_roles_and_grants() {
        let role =
            RoleRecord { name: "alice".into(), salted_hash: Some("$h".into()), can_login: true, is_superuser: false };
        assert_eq!(RoleRecord::from_row(&role.values()), Some(role.clone()));
        assert!(!format!("{role:?}").contains("$h"), "the hash is not printed");
        assert_eq!(RoleRecord::from_row(&[None, None, None, None]), None);
        let text = |s: &str| Some(Value::Text(s.into()));
        let rows = vec![
            vec![text("data"), text("SELECT")],
            vec![text("data/t"), text("MODIFY")],
            vec![text("data"), text("CREATE")],
            vec![text("keyspace"), text("SELECT")],
        ];
        let grants = grants_from_rows(&rows);
        assert_eq!(grants.len(), 2);
        assert!(grants[0].1.contains(Permission::Select) && grants[0].1.contains(Permission::Create));
        assert_eq!(grants[1].0, Resource::Table("t".into()));
    }
}

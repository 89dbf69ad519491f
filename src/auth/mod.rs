//! Authentication and authorization (Cassandra's PasswordAuthenticator, CassandraRoleManager
//! and CassandraAuthorizer): the settings, the schema of the replicated tables that hold roles
//! and grants, password hashing, permission resolution and the per-shard caches that keep
//! table reads off the request path. Pure logic and types only: the coordinator
//! (`coordinator::auth`) reads and writes the tables and runs the checks. Never logs or keeps
//! a password.

pub mod cache;
pub mod password;
pub mod permissions;
pub mod tables;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use cache::ExpiringCache;
pub use permissions::{permitted, Grants, Permission, PermissionSet, Resource};

/// The first superuser's name, created at the first start with authentication on.
pub const INITIAL_SUPERUSER: &str = "enigmadb";
/// The environment variable holding the first superuser's password at the first start.
pub const INITIAL_PASSWORD_ENV: &str = "ENIGMADB_INITIAL_PASSWORD";

/// Who may connect (Cassandra's `authenticator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[clap(rename_all = "snake_case")]
pub enum Authenticator {
    /// Anyone who reaches the client port, with every permission (AllowAllAuthenticator).
    #[default]
    AllowAll,
    /// A role's name and password, checked against the roles table (PasswordAuthenticator);
    /// every request is then checked against the role's permissions.
    Password,
}

/// What the coordinator needs of the auth settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub authenticator: Authenticator,
    /// Replicas of the auth tables, fixed when they are created.
    pub replication_factor: u8,
    /// How long a shard trusts its cached copy of a role (login, superuser).
    pub roles_validity: Duration,
    /// How long a shard trusts its cached copy of a role's grants.
    pub permissions_validity: Duration,
    /// The first superuser's password, for a first start (never logged).
    pub initial_password: Option<String>,
    /// How long a start waits for a superuser role to be readable (the roles of the cluster
    /// a node joins) before it refuses to start; zero: one look.
    pub setup_wait: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            authenticator: Authenticator::AllowAll,
            replication_factor: 1,
            roles_validity: Duration::from_secs(2),
            permissions_validity: Duration::from_secs(2),
            initial_password: None,
            setup_wait: Duration::ZERO,
        }
    }
}

/// Who sends the requests of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authentication is off: every request is allowed (`allow_all`).
    Anonymous,
    /// The role that logged in on the connection.
    Role(String),
}

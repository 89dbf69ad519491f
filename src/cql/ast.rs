//! The statements of the query language as parsed, before any schema is consulted: names as
//! written (unquoted names lowercased), literals still as text, bind markers numbered in order
//! of appearance. Knows no schema and no storage type beyond the column types a CREATE declares.

use wire::schema::ClusteringOrder;

use crate::auth::PermissionSet;
use wire::ColumnType;

use super::Pos;

/// A table or column name: unquoted names are lowercased, "quoted" ones kept as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    pub text: String,
    pub pos: Pos,
}

impl Name {
    pub fn new(text: impl Into<String>) -> Name {
        Name { text: text.into(), pos: Pos::NONE }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralKind {
    /// 'text' or $$text$$ (also how ISO-8601 timestamps are written).
    String,
    Integer,
    /// Digits with a fraction or exponent, or NaN / Infinity / -Infinity.
    Float,
    Boolean,
    /// 0x... (a blob).
    Hex,
}

impl LiteralKind {
    /// The name Cassandra's error messages use for a constant of this kind.
    pub fn name(self) -> &'static str {
        match self {
            LiteralKind::String => "STRING",
            LiteralKind::Integer => "INTEGER",
            LiteralKind::Float => "FLOAT",
            LiteralKind::Boolean => "BOOLEAN",
            LiteralKind::Hex => "HEX",
        }
    }
}

/// A value in a statement. A literal keeps its text until it meets the column it is compared
/// with or assigned to (an integer literal may become an int, bigint, double or timestamp).
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    Literal {
        kind: LiteralKind,
        text: String,
        pos: Pos,
    },
    /// `?`, numbered from 0 in order of appearance in the statement (a whole BATCH counts as one).
    Marker {
        index: usize,
        pos: Pos,
    },
    Null {
        pos: Pos,
    },
}

impl Term {
    pub fn pos(&self) -> Pos {
        match self {
            Term::Literal { pos, .. } | Term::Marker { pos, .. } | Term::Null { pos } => *pos,
        }
    }

    pub fn literal(kind: LiteralKind, text: impl Into<String>) -> Term {
        Term::Literal { kind, text: text.into(), pos: Pos::NONE }
    }

    pub fn marker(index: usize) -> Term {
        Term::Marker { index, pos: Pos::NONE }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Operator {
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Eq => "=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
        }
    }
}

/// The left side of a WHERE relation.
#[derive(Debug, Clone, PartialEq)]
pub enum Restricted {
    Column(Name),
    /// `token(pk1, pk2, ...)`.
    Token {
        columns: Vec<Name>,
        pos: Pos,
    },
}

/// One relation of a WHERE clause (relations are joined by AND).
#[derive(Debug, Clone, PartialEq)]
pub enum Relation {
    Compare {
        left: Restricted,
        op: Operator,
        right: Term,
    },
    /// `column IN (v1, v2, ...)`.
    In {
        column: Name,
        values: Vec<Term>,
    },
}

/// `USING TTL n AND TIMESTAMP n` (either or both).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Using {
    pub ttl: Option<Term>,
    pub timestamp: Option<Term>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    Column(Name),
    WriteTime(Name),
    Ttl(Name),
    Token { columns: Vec<Name>, pos: Pos },
}

/// One selected expression, with its optional `AS alias`.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    pub selector: Selector,
    pub alias: Option<Name>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// `*`
    All,
    /// `count(*)` or `count(1)`, with its optional alias.
    Count {
        alias: Option<Name>,
    },
    Items(Vec<SelectItem>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Select {
    pub table: Name,
    pub selection: Selection,
    pub relations: Vec<Relation>,
    pub limit: Option<Term>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Insert {
    pub table: Name,
    pub columns: Vec<Name>,
    pub values: Vec<Term>,
    pub using: Using,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub table: Name,
    pub using: Using,
    pub assignments: Vec<(Name, Term)>,
    pub relations: Vec<Relation>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delete {
    /// The columns to delete; empty deletes the row (or partition).
    pub columns: Vec<Name>,
    pub table: Name,
    pub using: Using,
    pub relations: Vec<Relation>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BatchStatement {
    Insert(Insert),
    Update(Update),
    Delete(Delete),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Logged,
    Unlogged,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub kind: BatchKind,
    /// Only TIMESTAMP is allowed on a BATCH (as in Cassandra).
    pub using: Using,
    pub statements: Vec<BatchStatement>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDecl {
    pub name: Name,
    pub ty: ColumnType,
}

/// `WITH name = value` of a CREATE TABLE.
#[derive(Debug, Clone, PartialEq)]
pub struct TableProperty {
    pub name: Name,
    pub value: Term,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub name: Name,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDecl>,
    /// Partition key columns, from `PRIMARY KEY ((a, b), ...)`, `PRIMARY KEY (a, ...)` or an
    /// inline `a type PRIMARY KEY`.
    pub partition_key: Vec<Name>,
    pub clustering: Vec<Name>,
    /// `WITH CLUSTERING ORDER BY (c DESC, ...)`.
    pub clustering_order: Vec<(Name, ClusteringOrder)>,
    pub properties: Vec<TableProperty>,
}

/// `WITH PASSWORD = '...' AND LOGIN = true AND SUPERUSER = false` of CREATE and ALTER ROLE;
/// an option not given is `None`.
#[derive(Clone, Default, PartialEq)]
pub struct RoleOptions {
    pub password: Option<String>,
    pub login: Option<bool>,
    pub superuser: Option<bool>,
}

impl std::fmt::Debug for RoleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let password = self.password.as_ref().map(|_| "<hidden>");
        f.debug_struct("RoleOptions")
            .field("password", &password)
            .field("login", &self.login)
            .field("superuser", &self.superuser)
            .finish()
    }
}

/// What a GRANT, REVOKE or LIST PERMISSIONS names after ON.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceName {
    /// `ALL KEYSPACES`: every table.
    AllKeyspaces,
    /// `KEYSPACE k`: refused when planned (EnigmaDB has no keyspaces).
    Keyspace(Name),
    /// `TABLE t` or `t`.
    Table(Name),
}

/// Statements about roles and permissions (Cassandra's role and permission statements).
#[derive(Debug, Clone, PartialEq)]
pub enum AuthStatement {
    CreateRole {
        role: Name,
        if_not_exists: bool,
        options: RoleOptions,
    },
    AlterRole {
        role: Name,
        options: RoleOptions,
    },
    DropRole {
        role: Name,
        if_exists: bool,
    },
    ListRoles,
    Grant {
        permissions: PermissionSet,
        resource: ResourceName,
        role: Name,
    },
    Revoke {
        permissions: PermissionSet,
        resource: ResourceName,
        role: Name,
    },
    /// `LIST ALL PERMISSIONS [ON resource] [OF role]`, or a permission instead of ALL.
    ListPermissions {
        permissions: PermissionSet,
        resource: Option<ResourceName>,
        role: Option<Name>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    CreateTable(CreateTable),
    DropTable { name: Name, if_exists: bool },
    Truncate { name: Name },
    DescribeTables,
    DescribeTable { name: Name },
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Select(Select),
    Batch(Batch),
    Auth(AuthStatement),
}

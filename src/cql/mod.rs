//! The query language: a CQL subset (lexer, parser, AST) and the binding of parsed statements to
//! table schemas, producing what the executor runs in the storage engine's own types.
//!
//! Pure logic: no glommio, no I/O, no access to the node. It never executes anything; the
//! coordinator runs the plans it returns.

pub mod ast;
pub mod describe;
pub mod lexer;
pub mod literal;
pub mod parser;
pub mod plan;

use std::fmt;

pub use ast::Statement;
pub use describe::render_create_table;
pub use lexer::{split_statements, SplitText};
pub use parser::{parse, parse_one};
pub use plan::{
    plan, prepare, BindSpec, ColumnSource, Plan, Prepared, Projection, ReadSource, ResultColumn, Schemas, SelectPlan,
    TokenRange, WritePlan,
};

/// Longest query text accepted (the protocol's frame limit is far below; this guards direct
/// callers of the parser).
pub const MAX_QUERY_LEN: usize = 1 << 24;
/// Most bind markers in one statement (the protocol counts bound values with a u16).
pub const MAX_BIND_MARKERS: usize = u16::MAX as usize;
/// Most statements in one BATCH, and most partitions one statement may name with `IN`
/// (each becomes a write or a read of its own).
pub const MAX_BATCH_STATEMENTS: usize = shards::mutation::MAX_BATCH_WRITES;
/// Most partitions a `pk IN (...)` restriction may select (after the cartesian product of
/// several IN lists), as Cassandra's `max_partitions_per_in_query`-style guard.
pub const MAX_IN_PARTITIONS: usize = 256;

/// Whether a query was rejected because it is not well-formed (syntax) or because it does not
/// make sense against the schema or the values given (invalid request). The server maps them to
/// the protocol's SyntaxError and Invalid codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CqlErrorKind {
    Syntax,
    Invalid,
}

/// A rejected query. `line` and `column` are 1-based and point at the offending token; both are
/// 0 when the error is not about a place in the text (a bound value, for instance).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CqlError {
    pub kind: CqlErrorKind,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl CqlError {
    pub fn syntax(pos: Pos, message: impl Into<String>) -> CqlError {
        CqlError { kind: CqlErrorKind::Syntax, line: pos.line, column: pos.column, message: message.into() }
    }

    pub fn invalid(pos: Pos, message: impl Into<String>) -> CqlError {
        CqlError { kind: CqlErrorKind::Invalid, line: pos.line, column: pos.column, message: message.into() }
    }

    /// An invalid request that is not about a place in the text (bound values).
    pub fn invalid_value(message: impl Into<String>) -> CqlError {
        CqlError { kind: CqlErrorKind::Invalid, line: 0, column: 0, message: message.into() }
    }
}

impl fmt::Display for CqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}:{} {}", self.line, self.column, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

/// A place in the query text, 1-based. Positions are excluded from equality: two ASTs are
/// equal when they say the same thing, wherever in the text it was written.
#[derive(Debug, Clone, Copy, Default, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl PartialEq for Pos {
    fn eq(&self, _: &Pos) -> bool {
        true
    }
}

impl Pos {
    pub const NONE: Pos = Pos { line: 0, column: 0 };
}

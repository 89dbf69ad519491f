//! What a client request does, as the request metrics' `op` label names it: a read, a write,
//! a batch, a schema change, or something else. Pure and cheap (a query text is classified by
//! its first word, never parsed twice); it never decides how a request is served.

use wire::protocol::Request;

use crate::cql::lexer::{Lexer, TokenKind};
use crate::cql::Statement;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    /// SELECT.
    Read,
    /// INSERT, UPDATE, DELETE.
    Write,
    /// A BATCH request, or a BEGIN ... APPLY BATCH statement.
    Batch,
    /// CREATE, DROP, TRUNCATE, ALTER.
    Schema,
    /// Everything else: STARTUP, OPTIONS, PREPARE, ADMIN, DESCRIBE, text that is no statement.
    Other,
}

impl StatementKind {
    pub const ALL: [StatementKind; 5] =
        [StatementKind::Read, StatementKind::Write, StatementKind::Batch, StatementKind::Schema, StatementKind::Other];

    pub fn name(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Write => "write",
            StatementKind::Batch => "batch",
            StatementKind::Schema => "schema",
            StatementKind::Other => "other",
        }
    }

    /// A request's kind; `prepared` gives the kind of a prepared statement by its id (None
    /// when the coordinator does not know the id: the request will fail, counted as other).
    pub fn of_request(
        request: &Request,
        prepared: impl FnOnce(wire::protocol::PreparedId) -> Option<StatementKind>,
    ) -> StatementKind {
        match request {
            Request::Query { text, .. } => StatementKind::of_text(text),
            Request::Execute { id, .. } => prepared(*id).unwrap_or(StatementKind::Other),
            Request::Batch(_) => StatementKind::Batch,
            _ => StatementKind::Other,
        }
    }

    /// The kind of a query text, from its first word (comments and whitespace skipped).
    pub fn of_text(text: &str) -> StatementKind {
        let first = match Lexer::new(text).next_token() {
            Ok(Some(token)) if token.kind == TokenKind::Word => token.text,
            _ => return StatementKind::Other,
        };
        let is = |word: &str| first.eq_ignore_ascii_case(word);
        if is("select") {
            StatementKind::Read
        } else if is("insert") || is("update") || is("delete") {
            StatementKind::Write
        } else if is("begin") {
            StatementKind::Batch
        } else if is("create") || is("drop") || is("truncate") || is("alter") {
            StatementKind::Schema
        } else {
            StatementKind::Other
        }
    }

    /// The kind of a parsed statement.
    pub fn of_statement(statement: &Statement) -> StatementKind {
        match statement {
            Statement::Select(_) => StatementKind::Read,
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => StatementKind::Write,
            Statement::Batch(_) => StatementKind::Batch,
            Statement::CreateTable(_) | Statement::DropTable { .. } | Statement::Truncate { .. } => {
                StatementKind::Schema
            }
            Statement::DescribeTables | Statement::DescribeTable { .. } | Statement::Auth(_) => StatementKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_classified_by_their_first_word() {
        let cases = [
            ("SELECT v FROM kv WHERE k = 'a'", StatementKind::Read),
            ("  -- a comment\n select * from kv", StatementKind::Read),
            ("INSERT INTO kv (k, v) VALUES ('a', 'b')", StatementKind::Write),
            ("update kv SET v = 'c' WHERE k = 'a'", StatementKind::Write),
            ("/* x */ DELETE FROM kv WHERE k = 'a'", StatementKind::Write),
            ("BEGIN BATCH INSERT INTO kv (k, v) VALUES ('a', 'b'); APPLY BATCH", StatementKind::Batch),
            ("CREATE TABLE t (k text PRIMARY KEY)", StatementKind::Schema),
            ("DROP TABLE t", StatementKind::Schema),
            ("TRUNCATE t", StatementKind::Schema),
            ("DESCRIBE TABLES", StatementKind::Other),
            ("", StatementKind::Other),
            ("'select'", StatementKind::Other),
            ("/* never closed", StatementKind::Other),
            ("selectx FROM kv", StatementKind::Other),
        ];
        for (text, kind) in cases {
            assert_eq!(StatementKind::of_text(text), kind, "{text:?}");
        }
    }

    #[test]
    fn parsed_statements_agree_with_their_text() {
        for text in [
            "SELECT v FROM kv WHERE k = 'a'",
            "INSERT INTO kv (k, v) VALUES ('a', 'b')",
            "DELETE FROM kv WHERE k = 'a'",
            "BEGIN BATCH INSERT INTO kv (k, v) VALUES ('a', 'b'); APPLY BATCH",
            "CREATE TABLE t (k text PRIMARY KEY)",
            "DROP TABLE t",
            "DESCRIBE TABLES",
        ] {
            let statement = crate::cql::parse_one(text).unwrap();
            assert_eq!(StatementKind::of_statement(&statement), StatementKind::of_text(text), "{text}");
        }
    }
}

//! Cuts the shell's input lines into statements: text accumulates until every statement ends
//! with `;` outside strings and comments (`cql::split_statements`), as in cqlsh; a shell command
//! alone on a line needs no `;`. Pure: it never reads a terminal or runs anything.

use crate::cql::split_statements;

use super::command::parse_command;

/// Longest text the shell accumulates for one input (the query language's own bound).
pub const MAX_PENDING_BYTES: usize = crate::cql::MAX_QUERY_LEN;

#[derive(Debug, Default)]
pub struct StatementBuffer {
    pending: String,
}

/// Too much text without a terminating `;`: the pending text is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input of {len} bytes without a terminating ';' exceeds the limit of {MAX_PENDING_BYTES} bytes; discarded")]
pub struct TooLong {
    pub len: usize,
}

impl StatementBuffer {
    /// True when no statement is waiting for its `;` (the shell shows its main prompt).
    pub fn is_empty(&self) -> bool {
        self.pending.trim().is_empty()
    }

    /// Adds one input line; returns the statements it completes (without their `;`), in order.
    pub fn push_line(&mut self, line: &str) -> Result<Vec<String>, TooLong> {
        if self.is_empty() && !line.contains(';') && parse_command(line).is_some() {
            self.pending.clear();
            return Ok(vec![line.trim().to_owned()]);
        }
        if self.pending.len() + line.len() + 1 > MAX_PENDING_BYTES {
            let len = self.pending.len() + line.len() + 1;
            self.pending.clear();
            return Err(TooLong { len });
        }
        self.pending.push_str(line);
        self.pending.push('\n');
        let split = split_statements(&self.pending);
        if !split.complete {
            return Ok(Vec::new());
        }
        let statements = split.statements.iter().map(|s| (*s).to_owned()).collect();
        self.pending.clear();
        Ok(statements)
    }

    /// At the end of the input: whatever is pending, run as it is (cqlsh runs `-e` text without
    /// a final `;`; an unterminated string reaches the server, which reports it).
    pub fn finish(&mut self) -> Vec<String> {
        let text = std::mem::take(&mut self.pending);
        split_statements(&text).statements.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Drops the pending text (Ctrl-C at the prompt).
    pub fn clear(&mut self) {
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_waits_for_its_semicolon_across_lines() {
        let mut b = StatementBuffer::default();
        assert_eq!(b.push_line("SELECT *"), Ok(vec![]));
        assert!(!b.is_empty());
        assert_eq!(b.push_line("  FROM t"), Ok(vec![]));
        assert_eq!(b.push_line("WHERE k = 'a;b';"), Ok(vec!["SELECT *\n  FROM t\nWHERE k = 'a;b'".to_owned()]));
        assert!(b.is_empty());
    }

    #[test]
    fn one_line_may_hold_several_statements_and_semicolons_in_strings_or_comments() {
        let mut b = StatementBuffer::default();
        let got = b.push_line("INSERT INTO t (k) VALUES ('x;y'); /* ; */ SELECT * FROM t; -- done;").unwrap();
        assert_eq!(got, vec!["INSERT INTO t (k) VALUES ('x;y')", "SELECT * FROM t"]);
        assert_eq!(b.push_line("INSERT INTO t (k) VALUES ('open;"), Ok(vec![]));
        assert_eq!(b.push_line("still open');"), Ok(vec!["INSERT INTO t (k) VALUES ('open;\nstill open')".to_owned()]));
    }

    #[test]
    fn shell_commands_need_no_semicolon_unless_a_statement_is_pending() {
        let mut b = StatementBuffer::default();
        assert_eq!(b.push_line("CONSISTENCY QUORUM"), Ok(vec!["CONSISTENCY QUORUM".to_owned()]));
        assert_eq!(b.push_line("paging off;"), Ok(vec!["paging off".to_owned()]));
        assert_eq!(b.push_line("SELECT * FROM t WHERE k ="), Ok(vec![]));
        // Inside a pending statement the line is part of it.
        assert_eq!(b.push_line("exit"), Ok(vec![]));
        assert_eq!(b.finish(), vec!["SELECT * FROM t WHERE k =\nexit".to_owned()]);
        assert!(b.is_empty());
    }

    #[test]
    fn end_of_input_runs_what_is_pending() {
        let mut b = StatementBuffer::default();
        assert_eq!(b.push_line("SELECT * FROM t"), Ok(vec![]));
        assert_eq!(b.finish(), vec!["SELECT * FROM t".to_owned()]);
        assert_eq!(b.finish(), Vec::<String>::new());
        b.push_line("-- only a comment").unwrap();
        assert_eq!(b.finish(), Vec::<String>::new());
    }

    #[test]
    fn oversized_input_is_refused_and_dropped() {
        let mut b = StatementBuffer::default();
        let line = "x".repeat(MAX_PENDING_BYTES / 2);
        assert_eq!(b.push_line(&line), Ok(vec![]));
        assert!(b.push_line(&line).is_err());
        assert!(b.is_empty());
    }
}

//! Turns query text into tokens (words, quoted names, literals, symbols) with their positions,
//! skipping whitespace and comments; and splits a text into statements at top-level `;` for
//! the shell. It knows nothing of the grammar: keywords are words the parser recognizes.

use super::{CqlError, Pos};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted word: a keyword or an identifier (letters, digits, '_', starting with a letter).
    Word,
    /// A double-quoted identifier; `text` holds the name with `""` unescaped.
    QuotedName,
    /// A string literal ('...' with '' escaping, or $$...$$); `text` holds the unescaped string.
    Str,
    /// An integer literal, with an optional leading '-'.
    Integer,
    /// A float literal: digits with a fraction and/or an exponent, optional leading '-'.
    Float,
    /// A blob literal `0x...` (`text` keeps the `0x`).
    Hex,
    /// A punctuation symbol: ( ) , ; * = < > <= >= . ? -
    Symbol,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub text: String,
    pub pos: Pos,
    /// Byte range of the token in the text.
    pub start: usize,
    pub end: usize,
}

impl Token {
    pub fn is_symbol(&self, s: &str) -> bool {
        self.kind == TokenKind::Symbol && self.text == s
    }

    pub fn is_keyword(&self, k: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(k)
    }
}

/// Why lexing stopped at a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexFailure {
    /// A string, quoted name or comment runs to the end of the text (more input may finish it).
    Unterminated(CqlError),
    /// A character no token starts with; the lexer has stepped over it.
    Unrecognized(CqlError),
}

impl LexFailure {
    pub fn into_error(self) -> CqlError {
        match self {
            LexFailure::Unterminated(e) | LexFailure::Unrecognized(e) => e,
        }
    }
}

pub struct Lexer<'a> {
    text: &'a str,
    offset: usize,
    line: u32,
    /// Characters since the start of the current line.
    column: u32,
}

const SYMBOLS: [&str; 13] = ["<=", ">=", "(", ")", ",", ";", "*", "=", "<", ">", ".", "?", "-"];

impl<'a> Lexer<'a> {
    pub fn new(text: &'a str) -> Lexer<'a> {
        Lexer { text, offset: 0, line: 1, column: 0 }
    }

    /// The position of the next character.
    fn pos(&self) -> Pos {
        Pos { line: self.line, column: self.column + 1 }
    }

    /// The position just after the last character: where "end of input" errors point.
    pub fn end_pos(text: &str) -> Pos {
        let line = 1 + text.matches('\n').count() as u32;
        let last_line = text.rfind('\n').map_or(text, |i| &text[i + 1..]);
        Pos { line, column: last_line.chars().count() as u32 + 1 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.offset..]
    }

    /// Advances over `len` bytes, keeping line accounting.
    fn advance(&mut self, len: usize) {
        let end = self.offset + len;
        for c in self.text[self.offset..end].chars() {
            if c == '\n' {
                self.line += 1;
                self.column = 0;
            } else {
                self.column += 1;
            }
        }
        self.offset = end;
    }

    /// Skips whitespace and comments; fails on a comment left open at the end.
    fn skip_trivia(&mut self) -> Result<(), LexFailure> {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.advance(rest.len() - trimmed.len());
            let rest = self.rest();
            if rest.starts_with("--") || rest.starts_with("//") {
                let len = rest.find('\n').unwrap_or(rest.len());
                self.advance(len);
            } else if let Some(body) = rest.strip_prefix("/*") {
                let pos = self.pos();
                match body.find("*/") {
                    Some(i) => self.advance(i + 4),
                    None => {
                        self.advance(rest.len());
                        return Err(LexFailure::Unterminated(CqlError::syntax(pos, "unterminated comment")));
                    }
                }
            } else {
                return Ok(());
            }
        }
    }

    /// The next token, None at the end of the text.
    pub fn next_token(&mut self) -> Result<Option<Token>, LexFailure> {
        self.skip_trivia()?;
        let rest = self.rest();
        let Some(c) = rest.chars().next() else { return Ok(None) };
        let start = self.offset;
        let pos = self.pos();
        let (kind, len, text) = if c.is_ascii_alphabetic() {
            let len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            (TokenKind::Word, len, rest[..len].to_owned())
        } else if c == '\'' || c == '"' {
            let kind = if c == '\'' { TokenKind::Str } else { TokenKind::QuotedName };
            match quoted(rest, c) {
                Some((len, text)) => (kind, len, text),
                None => {
                    self.advance(rest.len());
                    let what = if c == '\'' { "string literal" } else { "quoted identifier" };
                    return Err(LexFailure::Unterminated(CqlError::syntax(pos, format!("unterminated {what}"))));
                }
            }
        } else if let Some(body) = rest.strip_prefix("$$") {
            match body.find("$$") {
                Some(i) => (TokenKind::Str, i + 4, body[..i].to_owned()),
                None => {
                    self.advance(rest.len());
                    return Err(LexFailure::Unterminated(CqlError::syntax(pos, "unterminated string literal")));
                }
            }
        } else if rest.starts_with("0x") || rest.starts_with("0X") {
            let len = 2 + rest[2..].find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len() - 2);
            (TokenKind::Hex, len, rest[..len].to_owned())
        } else if c.is_ascii_digit() || (c == '-' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) {
            let (kind, len) = number(rest);
            (kind, len, rest[..len].to_owned())
        } else if let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            (TokenKind::Symbol, sym.len(), (*sym).to_owned())
        } else {
            self.advance(c.len_utf8());
            return Err(LexFailure::Unrecognized(CqlError::syntax(pos, format!("token recognition error at: '{c}'"))));
        };
        self.advance(len);
        Ok(Some(Token { kind, text, pos, start, end: start + len }))
    }

    /// Every token of the text, or the first lexing error.
    pub fn tokenize(text: &str) -> Result<Vec<Token>, CqlError> {
        let mut lexer = Lexer::new(text);
        let mut out = Vec::new();
        while let Some(t) = lexer.next_token().map_err(LexFailure::into_error)? {
            out.push(t);
        }
        Ok(out)
    }
}

/// Length and unescaped content of a quoted token starting at `rest[0] == quote`; a doubled quote
/// stands for one. None when the closing quote is missing.
fn quoted(rest: &str, quote: char) -> Option<(usize, String)> {
    let mut out = String::new();
    let mut chars = rest.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            if chars.peek().is_some_and(|(_, n)| *n == quote) {
                chars.next();
                out.push(quote);
            } else {
                return Some((i + 1, out));
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Kind and length of the number at the front of `rest` (digits, optional fraction, optional
/// exponent, optional leading '-').
fn number(rest: &str) -> (TokenKind, usize) {
    let bytes = rest.as_bytes();
    let digits = |from: usize| from + bytes[from..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut end = digits(usize::from(bytes[0] == b'-'));
    let mut kind = TokenKind::Integer;
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        end = digits(end + 1);
        kind = TokenKind::Float;
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(end + 1), Some(b'+' | b'-')));
        if bytes.get(end + 1 + sign).is_some_and(u8::is_ascii_digit) {
            end = digits(end + 1 + sign);
            kind = TokenKind::Float;
        }
    }
    (kind, end)
}

/// A text cut into statements for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitText<'a> {
    /// Each non-empty statement's text (trimmed, without its `;`), in order.
    pub statements: Vec<&'a str>,
    /// False when the last statement has no terminating `;` yet, or a string or comment is still
    /// open: an interactive shell waits for more input, as cqlsh does.
    pub complete: bool,
}

/// Splits `text` at every `;` outside strings, quoted names, comments and BATCHes. Statements that are
/// only whitespace or comments are dropped. Never fails: unrecognized characters are kept for
/// the parser to report.
pub fn split_statements(text: &str) -> SplitText<'_> {
    let mut lexer = Lexer::new(text);
    let mut statements = Vec::new();
    // Byte range of the tokens of the statement being collected.
    let mut current: Option<(usize, usize)> = None;
    let mut open = false;
    // Inside BEGIN BATCH ... APPLY BATCH, `;` separates the batch's statements, not the text's.
    let mut in_batch = false;
    let mut previous_was_apply = false;
    loop {
        let token = match lexer.next_token() {
            Ok(Some(t)) => t,
            Ok(None) => break,
            Err(LexFailure::Unterminated(_)) => {
                open = true;
                let start = current.map_or(lexer.offset, |(s, _)| s);
                current = Some((start, text.len()));
                break;
            }
            Err(LexFailure::Unrecognized(_)) => {
                // The lexer has stepped over the character: it is the last one before `offset`.
                let char_start = text[..lexer.offset].chars().next_back().map_or(0, |c| lexer.offset - c.len_utf8());
                let start = current.map_or(char_start, |(s, _)| s);
                current = Some((start, lexer.offset));
                continue;
            }
        };
        if current.is_none() {
            in_batch = token.is_keyword("begin");
        } else if in_batch && token.is_keyword("batch") && previous_was_apply {
            in_batch = false;
        }
        previous_was_apply = token.is_keyword("apply");
        if token.is_symbol(";") && !in_batch {
            if let Some((s, e)) = current.take() {
                statements.push(text[s..e].trim());
            }
        } else {
            let start = current.map_or(token.start, |(s, _)| s);
            current = Some((start, token.end));
        }
    }
    let complete = current.is_none() && !open;
    if let Some((s, e)) = current {
        statements.push(text[s..e].trim());
    }
    SplitText { statements, complete }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kinds(text: &str) -> Vec<(TokenKind, String)> {
        Lexer::tokenize(text).unwrap().into_iter().map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn tokens_of_every_kind_with_their_text() {
        use TokenKind::*;
        let got = kinds("SELECT \"My\"\"Col\", 'it''s' ,-12 3.5e-2 1e3 0xCAFE $$a'b$$ <= >= ? * -x");
        let expected = [
            (Word, "SELECT"),
            (QuotedName, "My\"Col"),
            (Symbol, ","),
            (Str, "it's"),
            (Symbol, ","),
            (Integer, "-12"),
            (Float, "3.5e-2"),
            (Float, "1e3"),
            (Hex, "0xCAFE"),
            (Str, "a'b"),
            (Symbol, "<="),
            (Symbol, ">="),
            (Symbol, "?"),
            (Symbol, "*"),
            (Symbol, "-"),
            (Word, "x"),
        ];
        assert_eq!(got, expected.map(|(k, t)| (k, t.to_owned())).to_vec());
    }

    #[test]
    fn comments_are_skipped_and_positions_count_lines_and_columns() {
        let tokens = Lexer::tokenize("-- a comment\n  /* block\n comment */ a // tail\n\tb").unwrap();
        let at: Vec<_> = tokens.iter().map(|t| (t.text.as_str(), t.pos.line, t.pos.column)).collect();
        assert_eq!(at, vec![("a", 3, 13), ("b", 4, 2)]);
    }

    #[test]
    fn lexing_errors_name_the_place() {
        let e = Lexer::tokenize("select\n  @x").unwrap_err();
        assert_eq!(e.to_string(), "line 2:3 token recognition error at: '@'");
        let e = Lexer::tokenize("a 'open").unwrap_err();
        assert_eq!(e.to_string(), "line 1:3 unterminated string literal");
        let e = Lexer::tokenize("a /* open").unwrap_err();
        assert_eq!(e.to_string(), "line 1:3 unterminated comment");
    }

    #[test]
    fn split_cuts_at_top_level_semicolons_only() {
        let s = split_statements("insert into t (a) values ('x;y'); -- c;\n select /* ; */ * from t ;  ");
        assert_eq!(s.statements, vec!["insert into t (a) values ('x;y')", "select /* ; */ * from t"]);
        assert!(s.complete);
        let s = split_statements("select 1; select * from");
        assert_eq!(s.statements, vec!["select 1", "select * from"]);
        assert!(!s.complete);
        let s = split_statements("insert into t (a) values ('unfinished;");
        assert_eq!(s.statements, vec!["insert into t (a) values ('unfinished;"]);
        assert!(!s.complete);
        let s = split_statements(" ;; -- only a comment\n");
        assert!(s.statements.is_empty());
        assert!(s.complete);
        let s = split_statements(
            "BEGIN BATCH insert into t (k) values (1); delete from t where k = 2; APPLY BATCH; select 1",
        );
        assert_eq!(
            s.statements,
            vec!["BEGIN BATCH insert into t (k) values (1); delete from t where k = 2; APPLY BATCH", "select 1"]
        );
        assert!(!s.complete);
        let s = split_statements("begin batch insert into t (k) values (1);");
        assert!(!s.complete, "a batch waits for APPLY BATCH");
        let s = split_statements("select @; x");
        assert_eq!(s.statements, vec!["select @", "x"]);
    }

    proptest! {
        #[test]
        fn lexing_and_splitting_never_panic(text in "\\PC{0,64}") {
            let _ = Lexer::tokenize(&text);
            let split = split_statements(&text);
            for s in split.statements {
                prop_assert!(text.contains(s));
            }
        }
    }
}

//! A recursive-descent parser from query text to [`Statement`]s, with errors in cqlsh's style:
//! "line 1:9 mismatched input 'FORM' expecting 'FROM'". It checks only the grammar; whether
//! names and values fit a table is the planner's job (`plan.rs`).

use std::fmt;

use wire::schema::ClusteringOrder;
use wire::ColumnType;

use super::ast::*;
use super::lexer::{Lexer, Token, TokenKind};
use super::{CqlError, Pos, MAX_BATCH_STATEMENTS, MAX_BIND_MARKERS, MAX_QUERY_LEN};
use crate::auth::{Permission, PermissionSet};

/// Words that cannot be used as unquoted names (Cassandra's reserved keywords).
const RESERVED: &[&str] = &[
    "add",
    "allow",
    "alter",
    "and",
    "apply",
    "asc",
    "authorize",
    "batch",
    "begin",
    "by",
    "columnfamily",
    "create",
    "delete",
    "desc",
    "describe",
    "drop",
    "entries",
    "execute",
    "from",
    "full",
    "grant",
    "if",
    "in",
    "index",
    "infinity",
    "insert",
    "into",
    "keyspace",
    "limit",
    "modify",
    "nan",
    "norecursive",
    "not",
    "null",
    "of",
    "on",
    "or",
    "order",
    "primary",
    "rename",
    "replace",
    "revoke",
    "schema",
    "select",
    "set",
    "table",
    "to",
    "token",
    "truncate",
    "unlogged",
    "update",
    "use",
    "using",
    "view",
    "where",
    "with",
];

/// The keyword of each permission, in the order of [`Permission::ALL`].
const KEYWORDS: [&str; 6] = ["select", "modify", "create", "drop", "alter", "authorize"];

/// True when `word` is a reserved keyword (any case): as a name it must be double-quoted.
pub fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

/// Parses every statement of `text` (separated by `;`, which is optional after the last one).
pub fn parse(text: &str) -> Result<Vec<Statement>, CqlError> {
    let mut parser = Parser::new(text)?;
    let mut out = Vec::new();
    loop {
        while parser.eat_symbol(";") {}
        if parser.peek().is_none() {
            return Ok(out);
        }
        out.push(parser.statement()?);
        if parser.peek().is_some() {
            parser.expect_symbol(";")?;
        }
    }
}

/// Parses a text holding exactly one statement.
pub fn parse_one(text: &str) -> Result<Statement, CqlError> {
    let mut statements = parse(text)?;
    match statements.len() {
        1 => Ok(statements.remove(0)),
        0 => Err(CqlError::syntax(Lexer::end_pos(text), "empty query: expecting a statement")),
        n => Err(CqlError::syntax(Pos { line: 1, column: 1 }, format!("expecting one statement, found {n}"))),
    }
}

/// Something the parser looked for at a token, for the "expecting ..." of an error.
#[derive(Debug, Clone, Copy)]
enum Expected {
    Keyword(&'static str),
    Symbol(&'static str),
    /// A kind of token: "identifier", "a value", "a type".
    Kind(&'static str),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Keyword(k) => write!(f, "'{}'", k.to_ascii_uppercase()),
            Expected::Symbol(s) => write!(f, "'{s}'"),
            Expected::Kind(k) => f.write_str(k),
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    at: usize,
    /// What the parser looked for, and did not find, at the current token: the "expecting" of
    /// the next error. Cleared whenever a token is consumed.
    expected: Vec<Expected>,
    /// Bind markers seen in the current statement.
    markers: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Parser<'a>, CqlError> {
        if text.len() > MAX_QUERY_LEN {
            let msg = format!("query is {} bytes, more than the limit of {MAX_QUERY_LEN}", text.len());
            return Err(CqlError::syntax(Pos { line: 1, column: 1 }, msg));
        }
        Ok(Parser { text, tokens: Lexer::tokenize(text)?, at: 0, expected: Vec::new(), markers: 0 })
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.at + ahead)
    }

    /// Consumes the current token. Its text moves out: the parser never looks back, and error
    /// messages quote the source text, not the token.
    fn advance(&mut self) -> Token {
        self.expected.clear();
        let t = &mut self.tokens[self.at];
        let token = Token { kind: t.kind, text: std::mem::take(&mut t.text), pos: t.pos, start: t.start, end: t.end };
        self.at += 1;
        token
    }

    fn pos(&self) -> Pos {
        self.peek().map_or_else(|| Lexer::end_pos(self.text), |t| t.pos)
    }

    /// The error for the current token, listing everything that would have been accepted.
    fn unexpected(&self) -> CqlError {
        let found = match self.peek() {
            Some(t) => format!("'{}'", &self.text[t.start..t.end]),
            None => "'<EOF>'".to_owned(),
        };
        let mut expected: Vec<String> = Vec::new();
        for e in &self.expected {
            let e = e.to_string();
            if !expected.contains(&e) {
                expected.push(e);
            }
        }
        let list = match expected.split_last() {
            None => String::new(),
            Some((last, [])) => format!(" expecting {last}"),
            Some((last, rest)) => format!(" expecting {} or {last}", rest.join(", ")),
        };
        CqlError::syntax(self.pos(), format!("mismatched input {found}{list}"))
    }

    fn check_keyword(&mut self, k: &'static str) -> bool {
        let found = self.peek().is_some_and(|t| t.is_keyword(k));
        if !found {
            self.expected.push(Expected::Keyword(k));
        }
        found
    }

    fn eat_keyword(&mut self, k: &'static str) -> bool {
        let found = self.check_keyword(k);
        if found {
            self.advance();
        }
        found
    }

    fn expect_keyword(&mut self, k: &'static str) -> Result<(), CqlError> {
        if self.eat_keyword(k) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn eat_symbol(&mut self, s: &'static str) -> bool {
        let found = self.peek().is_some_and(|t| t.is_symbol(s));
        if found {
            self.advance();
        } else {
            self.expected.push(Expected::Symbol(s));
        }
        found
    }

    fn expect_symbol(&mut self, s: &'static str) -> Result<(), CqlError> {
        if self.eat_symbol(s) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// A table or column name: an unreserved word (lowercased) or a "quoted" name (as is).
    fn name(&mut self) -> Result<Name, CqlError> {
        match self.peek() {
            Some(t) if t.kind == TokenKind::Word && !is_reserved(&t.text) => {
                let t = self.advance();
                Ok(Name { text: t.text.to_ascii_lowercase(), pos: t.pos })
            }
            Some(t) if t.kind == TokenKind::QuotedName => {
                let t = self.advance();
                Ok(Name { text: t.text, pos: t.pos })
            }
            _ => {
                self.expected.push(Expected::Kind("identifier"));
                Err(self.unexpected())
            }
        }
    }

    /// `name (, name)*` inside parentheses.
    fn name_list(&mut self) -> Result<Vec<Name>, CqlError> {
        self.expect_symbol("(")?;
        let mut names = vec![self.name()?];
        while self.eat_symbol(",") {
            names.push(self.name()?);
        }
        self.expect_symbol(")")?;
        Ok(names)
    }

    fn statement(&mut self) -> Result<Statement, CqlError> {
        self.markers = 0;
        let statement = if self.eat_keyword("select") {
            Statement::Select(self.select()?)
        } else if self.eat_keyword("insert") {
            Statement::Insert(self.insert()?)
        } else if self.eat_keyword("update") {
            Statement::Update(self.update()?)
        } else if self.eat_keyword("delete") {
            Statement::Delete(self.delete()?)
        } else if self.eat_keyword("begin") {
            Statement::Batch(self.batch()?)
        } else if self.eat_keyword("create") {
            match self.eat_keyword("role") {
                true => Statement::Auth(self.create_role()?),
                false => Statement::CreateTable(self.create_table()?),
            }
        } else if self.eat_keyword("alter") {
            self.expect_keyword("role")?;
            let role = self.role_name()?;
            Statement::Auth(AuthStatement::AlterRole { role, options: self.role_options()? })
        } else if self.eat_keyword("grant") {
            let (permissions, resource) = self.permissions_on()?;
            self.expect_keyword("to")?;
            Statement::Auth(AuthStatement::Grant { permissions, resource, role: self.role_name()? })
        } else if self.eat_keyword("revoke") {
            let (permissions, resource) = self.permissions_on()?;
            self.expect_keyword("from")?;
            Statement::Auth(AuthStatement::Revoke { permissions, resource, role: self.role_name()? })
        } else if self.eat_keyword("list") {
            Statement::Auth(self.list()?)
        } else if self.check_keyword("drop") && self.peek_at(1).is_some_and(|t| t.is_keyword("role")) {
            self.advance();
            self.advance();
            let if_exists = self.eat_keyword("if");
            if if_exists {
                self.expect_keyword("exists")?;
            }
            Statement::Auth(AuthStatement::DropRole { if_exists, role: self.role_name()? })
        } else if self.eat_keyword("drop") {
            self.expect_keyword("table")?;
            let if_exists = self.eat_keyword("if");
            if if_exists {
                self.expect_keyword("exists")?;
            }
            Statement::DropTable { if_exists, name: self.name()? }
        } else if self.eat_keyword("truncate") {
            self.eat_keyword("table");
            Statement::Truncate { name: self.name()? }
        } else if self.eat_keyword("describe") || self.eat_keyword("desc") {
            if self.eat_keyword("tables") {
                Statement::DescribeTables
            } else {
                self.expect_keyword("table")?;
                Statement::DescribeTable { name: self.name()? }
            }
        } else {
            return Err(self.unexpected());
        };
        Ok(statement)
    }

    /// A role: a name (unquoted names lowercased) or a string literal (kept as written).
    fn role_name(&mut self) -> Result<Name, CqlError> {
        match self.peek() {
            Some(t) if t.kind == TokenKind::Str => {
                let t = self.advance();
                Ok(Name { text: t.text, pos: t.pos })
            }
            _ => self.name(),
        }
    }

    /// After CREATE ROLE: `[IF NOT EXISTS] role [WITH options]`.
    fn create_role(&mut self) -> Result<AuthStatement, CqlError> {
        let if_not_exists = self.eat_keyword("if");
        if if_not_exists {
            self.expect_keyword("not")?;
            self.expect_keyword("exists")?;
        }
        let role = self.role_name()?;
        let options = match self.check_keyword("with") {
            true => self.role_options()?,
            false => RoleOptions::default(),
        };
        Ok(AuthStatement::CreateRole { role, if_not_exists, options })
    }

    /// `WITH option = value (AND option = value)*`, options PASSWORD (a string), LOGIN and
    /// SUPERUSER (booleans), each at most once.
    fn role_options(&mut self) -> Result<RoleOptions, CqlError> {
        self.expect_keyword("with")?;
        let mut options = RoleOptions::default();
        loop {
            let pos = self.pos();
            let twice = || CqlError::syntax(pos, "a role option is given twice");
            if self.eat_keyword("password") {
                self.expect_symbol("=")?;
                let password = self.string()?;
                if options.password.replace(password).is_some() {
                    return Err(twice());
                }
            } else if self.eat_keyword("login") {
                self.expect_symbol("=")?;
                if options.login.replace(self.boolean()?).is_some() {
                    return Err(twice());
                }
            } else if self.eat_keyword("superuser") {
                self.expect_symbol("=")?;
                if options.superuser.replace(self.boolean()?).is_some() {
                    return Err(twice());
                }
            } else {
                return Err(self.unexpected());
            }
            if !self.eat_keyword("and") {
                return Ok(options);
            }
        }
    }

    /// A string literal's text.
    fn string(&mut self) -> Result<String, CqlError> {
        match self.peek() {
            Some(t) if t.kind == TokenKind::Str => Ok(self.advance().text),
            _ => {
                self.expected.push(Expected::Kind("a string"));
                Err(self.unexpected())
            }
        }
    }

    fn boolean(&mut self) -> Result<bool, CqlError> {
        if self.eat_keyword("true") {
            Ok(true)
        } else if self.eat_keyword("false") {
            Ok(false)
        } else {
            Err(self.unexpected())
        }
    }

    /// `ALL [PERMISSIONS]` or one permission `[PERMISSION]`.
    fn permissions(&mut self) -> Result<PermissionSet, CqlError> {
        if self.eat_keyword("all") {
            self.eat_keyword("permissions");
            return Ok(PermissionSet::all());
        }
        for (p, keyword) in Permission::ALL.into_iter().zip(KEYWORDS) {
            debug_assert!(p.name().eq_ignore_ascii_case(keyword));
            if self.eat_keyword(keyword) {
                self.eat_keyword("permission");
                return Ok([p].into_iter().collect());
            }
        }
        Err(self.unexpected())
    }

    /// What GRANT and REVOKE name before TO or FROM: `permissions ON resource`.
    fn permissions_on(&mut self) -> Result<(PermissionSet, ResourceName), CqlError> {
        let permissions = self.permissions()?;
        self.expect_keyword("on")?;
        Ok((permissions, self.resource()?))
    }

    /// `ALL KEYSPACES`, `KEYSPACE k`, `TABLE t` or `t`.
    fn resource(&mut self) -> Result<ResourceName, CqlError> {
        if self.eat_keyword("all") {
            self.expect_keyword("keyspaces")?;
            Ok(ResourceName::AllKeyspaces)
        } else if self.eat_keyword("keyspace") {
            Ok(ResourceName::Keyspace(self.name()?))
        } else {
            self.eat_keyword("table");
            Ok(ResourceName::Table(self.name()?))
        }
    }

    /// After LIST: `ROLES`, or `permissions [ON resource] [OF role]`.
    fn list(&mut self) -> Result<AuthStatement, CqlError> {
        if self.eat_keyword("roles") {
            return Ok(AuthStatement::ListRoles);
        }
        let permissions = self.permissions()?;
        let resource = match self.eat_keyword("on") {
            true => Some(self.resource()?),
            false => None,
        };
        let role = match self.eat_keyword("of") {
            true => Some(self.role_name()?),
            false => None,
        };
        Ok(AuthStatement::ListPermissions { permissions, resource, role })
    }

    fn select(&mut self) -> Result<Select, CqlError> {
        let selection = self.selection()?;
        self.expect_keyword("from")?;
        let table = self.name()?;
        let relations = if self.eat_keyword("where") { self.relations()? } else { Vec::new() };
        let limit = if self.eat_keyword("limit") { Some(self.term()?) } else { None };
        Ok(Select { table, selection, relations, limit })
    }

    fn selection(&mut self) -> Result<Selection, CqlError> {
        if self.eat_symbol("*") {
            return Ok(Selection::All);
        }
        let is_count =
            self.peek().is_some_and(|t| t.is_keyword("count")) && self.peek_at(1).is_some_and(|t| t.is_symbol("("));
        if is_count {
            self.advance();
            self.advance();
            let star = self.eat_symbol("*");
            if !star && !(self.peek().is_some_and(|t| t.kind == TokenKind::Integer && t.text == "1")) {
                self.expected.push(Expected::Symbol("1"));
                return Err(self.unexpected());
            }
            if !star {
                self.advance();
            }
            self.expect_symbol(")")?;
            return Ok(Selection::Count { alias: self.alias()? });
        }
        let mut items = vec![self.select_item()?];
        while self.eat_symbol(",") {
            items.push(self.select_item()?);
        }
        Ok(Selection::Items(items))
    }

    fn alias(&mut self) -> Result<Option<Name>, CqlError> {
        if self.eat_keyword("as") {
            Ok(Some(self.name()?))
        } else {
            Ok(None)
        }
    }

    fn select_item(&mut self) -> Result<SelectItem, CqlError> {
        let call = self.peek_at(1).is_some_and(|t| t.is_symbol("("));
        let pos = self.pos();
        let selector = if call && self.eat_keyword("writetime") {
            self.expect_symbol("(")?;
            let name = self.name()?;
            self.expect_symbol(")")?;
            Selector::WriteTime(name)
        } else if call && self.eat_keyword("ttl") {
            self.expect_symbol("(")?;
            let name = self.name()?;
            self.expect_symbol(")")?;
            Selector::Ttl(name)
        } else if self.eat_keyword("token") {
            Selector::Token { columns: self.name_list()?, pos }
        } else {
            Selector::Column(self.name()?)
        };
        Ok(SelectItem { selector, alias: self.alias()? })
    }

    fn relations(&mut self) -> Result<Vec<Relation>, CqlError> {
        let mut out = vec![self.relation()?];
        while self.eat_keyword("and") {
            out.push(self.relation()?);
        }
        Ok(out)
    }

    fn relation(&mut self) -> Result<Relation, CqlError> {
        let pos = self.pos();
        let left = if self.eat_keyword("token") {
            Restricted::Token { columns: self.name_list()?, pos }
        } else {
            let column = self.name()?;
            if self.eat_keyword("in") {
                self.expect_symbol("(")?;
                let mut values = Vec::new();
                if !self.eat_symbol(")") {
                    values.push(self.term()?);
                    while self.eat_symbol(",") {
                        values.push(self.term()?);
                    }
                    self.expect_symbol(")")?;
                }
                return Ok(Relation::In { column, values });
            }
            Restricted::Column(column)
        };
        let op = self.operator()?;
        Ok(Relation::Compare { left, op, right: self.term()? })
    }

    fn operator(&mut self) -> Result<Operator, CqlError> {
        for op in [Operator::Eq, Operator::Le, Operator::Ge, Operator::Lt, Operator::Gt] {
            if self.eat_symbol(op.symbol()) {
                return Ok(op);
            }
        }
        Err(self.unexpected())
    }

    /// A literal, `?` or NULL.
    fn term(&mut self) -> Result<Term, CqlError> {
        let Some(t) = self.peek() else {
            self.expected.push(Expected::Kind("a value"));
            return Err(self.unexpected());
        };
        let pos = t.pos;
        let literal = |kind, text: &str| Term::Literal { kind, text: text.to_owned(), pos };
        let term = match t.kind {
            TokenKind::Str => literal(LiteralKind::String, &t.text),
            TokenKind::Integer => literal(LiteralKind::Integer, &t.text),
            TokenKind::Float => literal(LiteralKind::Float, &t.text),
            TokenKind::Hex => literal(LiteralKind::Hex, &t.text),
            TokenKind::Word if t.is_keyword("true") || t.is_keyword("false") => {
                literal(LiteralKind::Boolean, &t.text.to_ascii_lowercase())
            }
            TokenKind::Word if t.is_keyword("nan") => literal(LiteralKind::Float, "NaN"),
            TokenKind::Word if t.is_keyword("infinity") => literal(LiteralKind::Float, "Infinity"),
            TokenKind::Word if t.is_keyword("null") => Term::Null { pos },
            TokenKind::Symbol if t.text == "-" && self.peek_at(1).is_some_and(|n| n.is_keyword("infinity")) => {
                self.advance();
                literal(LiteralKind::Float, "-Infinity")
            }
            TokenKind::Symbol if t.text == "?" => {
                if self.markers == MAX_BIND_MARKERS {
                    return Err(CqlError::syntax(pos, format!("more than {MAX_BIND_MARKERS} bind markers")));
                }
                self.markers += 1;
                Term::Marker { index: self.markers - 1, pos }
            }
            _ => {
                self.expected.push(Expected::Kind("a value"));
                return Err(self.unexpected());
            }
        };
        self.advance();
        Ok(term)
    }

    /// `TTL n AND TIMESTAMP n`, either or both, after USING.
    fn using(&mut self) -> Result<Using, CqlError> {
        let mut using = Using::default();
        loop {
            let pos = self.pos();
            let (slot, what) = if self.eat_keyword("ttl") {
                (&mut using.ttl, "TTL")
            } else if self.eat_keyword("timestamp") {
                (&mut using.timestamp, "TIMESTAMP")
            } else {
                return Err(self.unexpected());
            };
            if slot.is_some() {
                return Err(CqlError::invalid(pos, format!("{what} is given twice in USING")));
            }
            *slot = Some(self.term()?);
            if !self.eat_keyword("and") {
                return Ok(using);
            }
        }
    }

    fn insert(&mut self) -> Result<Insert, CqlError> {
        self.expect_keyword("into")?;
        let table = self.name()?;
        let columns = self.name_list()?;
        self.expect_keyword("values")?;
        self.expect_symbol("(")?;
        let mut values = vec![self.term()?];
        while self.eat_symbol(",") {
            values.push(self.term()?);
        }
        self.expect_symbol(")")?;
        let using = if self.eat_keyword("using") { self.using()? } else { Using::default() };
        Ok(Insert { table, columns, values, using })
    }

    fn update(&mut self) -> Result<Update, CqlError> {
        let table = self.name()?;
        let using = if self.eat_keyword("using") { self.using()? } else { Using::default() };
        self.expect_keyword("set")?;
        let mut assignments = Vec::new();
        loop {
            let column = self.name()?;
            self.expect_symbol("=")?;
            assignments.push((column, self.term()?));
            if !self.eat_symbol(",") {
                break;
            }
        }
        self.expect_keyword("where")?;
        Ok(Update { table, using, assignments, relations: self.relations()? })
    }

    fn delete(&mut self) -> Result<Delete, CqlError> {
        let mut columns = Vec::new();
        if !self.check_keyword("from") {
            columns.push(self.name()?);
            while self.eat_symbol(",") {
                columns.push(self.name()?);
            }
        }
        self.expect_keyword("from")?;
        let table = self.name()?;
        let using = if self.eat_keyword("using") { self.using()? } else { Using::default() };
        self.expect_keyword("where")?;
        Ok(Delete { columns, table, using, relations: self.relations()? })
    }

    fn batch(&mut self) -> Result<Batch, CqlError> {
        let kind = if self.eat_keyword("unlogged") {
            BatchKind::Unlogged
        } else {
            self.eat_keyword("logged");
            BatchKind::Logged
        };
        self.expect_keyword("batch")?;
        let using_pos = self.pos();
        let using = if self.eat_keyword("using") { self.using()? } else { Using::default() };
        if using.ttl.is_some() {
            return Err(CqlError::invalid(using_pos, "Global TTL on the BATCH statement is not supported."));
        }
        let mut statements = Vec::new();
        loop {
            while self.eat_symbol(";") {}
            if self.eat_keyword("apply") {
                self.expect_keyword("batch")?;
                return Ok(Batch { kind, using, statements });
            }
            if statements.len() == MAX_BATCH_STATEMENTS {
                let msg = format!("a batch holds at most {MAX_BATCH_STATEMENTS} statements");
                return Err(CqlError::invalid(self.pos(), msg));
            }
            let statement = if self.eat_keyword("insert") {
                BatchStatement::Insert(self.insert()?)
            } else if self.eat_keyword("update") {
                BatchStatement::Update(self.update()?)
            } else if self.eat_keyword("delete") {
                BatchStatement::Delete(self.delete()?)
            } else {
                return Err(self.unexpected());
            };
            statements.push(statement);
        }
    }

    fn create_table(&mut self) -> Result<CreateTable, CqlError> {
        if !self.eat_keyword("table") {
            self.expect_keyword("columnfamily")?;
        }
        let if_not_exists = self.eat_keyword("if");
        if if_not_exists {
            self.expect_keyword("not")?;
            self.expect_keyword("exists")?;
        }
        let name = self.name()?;
        let mut table = CreateTable {
            name,
            if_not_exists,
            columns: Vec::new(),
            partition_key: Vec::new(),
            clustering: Vec::new(),
            clustering_order: Vec::new(),
            properties: Vec::new(),
        };
        let mut key_declared = false;
        let key_twice = |pos: Pos, declared: &mut bool| {
            if std::mem::replace(declared, true) {
                Err(CqlError::invalid(pos, "Multiple PRIMARY KEYs specified (exactly one required)"))
            } else {
                Ok(())
            }
        };
        self.expect_symbol("(")?;
        loop {
            let pos = self.pos();
            if self.eat_keyword("primary") {
                self.expect_keyword("key")?;
                key_twice(pos, &mut key_declared)?;
                self.expect_symbol("(")?;
                if self.peek().is_some_and(|t| t.is_symbol("(")) {
                    table.partition_key = self.name_list()?;
                } else {
                    table.partition_key = vec![self.name()?];
                }
                while self.eat_symbol(",") {
                    table.clustering.push(self.name()?);
                }
                self.expect_symbol(")")?;
            } else {
                let name = self.name()?;
                let ty = self.column_type()?;
                let key_pos = self.pos();
                if self.eat_keyword("primary") {
                    self.expect_keyword("key")?;
                    key_twice(key_pos, &mut key_declared)?;
                    table.partition_key = vec![name.clone()];
                }
                table.columns.push(ColumnDecl { name, ty });
            }
            if !self.eat_symbol(",") {
                break;
            }
        }
        self.expect_symbol(")")?;
        if !key_declared {
            return Err(CqlError::invalid(table.name.pos, "No PRIMARY KEY specified (exactly one required)"));
        }
        if self.eat_keyword("with") {
            loop {
                if self.eat_keyword("clustering") {
                    self.expect_keyword("order")?;
                    self.expect_keyword("by")?;
                    self.expect_symbol("(")?;
                    loop {
                        let column = self.name()?;
                        let order = if self.eat_keyword("desc") {
                            ClusteringOrder::Desc
                        } else {
                            self.eat_keyword("asc");
                            ClusteringOrder::Asc
                        };
                        table.clustering_order.push((column, order));
                        if !self.eat_symbol(",") {
                            break;
                        }
                    }
                    self.expect_symbol(")")?;
                } else {
                    let name = self.name()?;
                    self.expect_symbol("=")?;
                    table.properties.push(TableProperty { name, value: self.term()? });
                }
                if !self.eat_keyword("and") {
                    break;
                }
            }
        }
        Ok(table)
    }

    fn column_type(&mut self) -> Result<ColumnType, CqlError> {
        match self.peek() {
            Some(t) if t.kind == TokenKind::Word => {
                let Some(ty) = ColumnType::parse(&t.text) else {
                    let names: Vec<&str> = ColumnType::ALL.iter().map(|t| t.name()).collect();
                    let msg = format!("unknown type '{}' (supported: {}, varchar)", t.text, names.join(", "));
                    return Err(CqlError::invalid(t.pos, msg));
                };
                self.advance();
                Ok(ty)
            }
            _ => {
                self.expected.push(Expected::Kind("a type"));
                Err(self.unexpected())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Name {
        Name::new(s)
    }

    fn int(s: &str) -> Term {
        Term::literal(LiteralKind::Integer, s)
    }

    fn text(s: &str) -> Term {
        Term::literal(LiteralKind::String, s)
    }

    fn eq(column: &str, right: Term) -> Relation {
        Relation::Compare { left: Restricted::Column(name(column)), op: Operator::Eq, right }
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn role_and_permission_statements_parse() {
        use crate::auth::{Permission, PermissionSet};
        let auth = |text: &str| match parse_one(text).unwrap() {
            Statement::Auth(a) => a,
            other => panic!("{text}: {other:?}"),
        };
        let options = RoleOptions { password: Some("p w".into()), login: Some(true), superuser: Some(false) };
        assert_eq!(
            auth("CREATE ROLE IF NOT EXISTS Alice WITH PASSWORD = 'p w' AND LOGIN = true AND SUPERUSER = false"),
            AuthStatement::CreateRole { role: name("alice"), if_not_exists: true, options }
        );
        assert_eq!(
            auth("ALTER ROLE 'Bob' WITH PASSWORD = 'x'"),
            AuthStatement::AlterRole {
                role: name("Bob"),
                options: RoleOptions { password: Some("x".into()), ..RoleOptions::default() }
            }
        );
        assert_eq!(auth("DROP ROLE IF EXISTS bob"), AuthStatement::DropRole { role: name("bob"), if_exists: true });
        assert_eq!(auth("LIST ROLES"), AuthStatement::ListRoles);
        let select: PermissionSet = [Permission::Select].into_iter().collect();
        assert_eq!(
            auth("GRANT SELECT PERMISSION ON TABLE t TO bob"),
            AuthStatement::Grant { permissions: select, resource: ResourceName::Table(name("t")), role: name("bob") }
        );
        assert_eq!(
            auth("REVOKE ALL PERMISSIONS ON ALL KEYSPACES FROM bob"),
            AuthStatement::Revoke {
                permissions: PermissionSet::all(),
                resource: ResourceName::AllKeyspaces,
                role: name("bob")
            }
        );
        assert_eq!(
            auth("LIST MODIFY ON KEYSPACE k OF bob"),
            AuthStatement::ListPermissions {
                permissions: [Permission::Modify].into_iter().collect(),
                resource: Some(ResourceName::Keyspace(name("k"))),
                role: Some(name("bob"))
            }
        );
        assert!(parse_one("CREATE ROLE a WITH LOGIN = true AND LOGIN = false").is_err());
        assert!(parse_one("GRANT EXECUTE ON t TO a").is_err());
        assert!(parse_one("CREATE ROLE a WITH PASSWORD = 5").is_err());
        assert!(!format!("{:?}", auth("CREATE ROLE a WITH PASSWORD = 'hunter2'")).contains("hunter2"));
    }

    #[test]
    fn create_table_forms_parse() {
        let s = parse_one(
            "CREATE TABLE IF NOT EXISTS Events (tenant text, day int, at timestamp, \"Body\" blob, \
             PRIMARY KEY ((tenant, day), at)) WITH CLUSTERING ORDER BY (at DESC) AND gc_grace_seconds = 60 \
             AND replication_factor = 3 AND default_time_to_live = 5;",
        )
        .unwrap();
        let expected = Statement::CreateTable(CreateTable {
            name: name("events"),
            if_not_exists: true,
            columns: vec![
                ColumnDecl { name: name("tenant"), ty: ColumnType::Text },
                ColumnDecl { name: name("day"), ty: ColumnType::Int },
                ColumnDecl { name: name("at"), ty: ColumnType::Timestamp },
                ColumnDecl { name: name("Body"), ty: ColumnType::Blob },
            ],
            partition_key: vec![name("tenant"), name("day")],
            clustering: vec![name("at")],
            clustering_order: vec![(name("at"), ClusteringOrder::Desc)],
            properties: vec![
                TableProperty { name: name("gc_grace_seconds"), value: int("60") },
                TableProperty { name: name("replication_factor"), value: int("3") },
                TableProperty { name: name("default_time_to_live"), value: int("5") },
            ],
        });
        assert_eq!(s, expected);

        let Statement::CreateTable(inline) = parse_one("create table t (k varchar PRIMARY KEY, v bigint)").unwrap()
        else {
            panic!("not a CREATE TABLE")
        };
        assert_eq!(inline.partition_key, vec![name("k")]);
        assert!(inline.clustering.is_empty());
        assert_eq!(inline.columns[0].ty, ColumnType::Text);

        let Statement::CreateTable(simple) =
            parse_one("CREATE TABLE t (k int, c1 int, c2 text, v boolean, PRIMARY KEY (k, c1, c2))").unwrap()
        else {
            panic!("not a CREATE TABLE")
        };
        assert_eq!(simple.partition_key, vec![name("k")]);
        assert_eq!(simple.clustering, vec![name("c1"), name("c2")]);
    }

    #[test]
    fn ddl_and_describe_statements_parse() {
        let got = parse(
            "DROP TABLE t; drop table if exists \"T2\"; TRUNCATE t; truncate table t; DESCRIBE TABLES; \
             desc table t; DESC TABLES",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                Statement::DropTable { name: name("t"), if_exists: false },
                Statement::DropTable { name: name("T2"), if_exists: true },
                Statement::Truncate { name: name("t") },
                Statement::Truncate { name: name("t") },
                Statement::DescribeTables,
                Statement::DescribeTable { name: name("t") },
                Statement::DescribeTables,
            ]
        );
    }

    #[test]
    fn insert_with_using_parses_in_either_order() {
        let s = parse_one(
            "INSERT INTO t (k, v, b, f, x, n) VALUES ('a', -3, true, 1.5, 0xff, null) USING TTL 10 AND TIMESTAMP 123",
        )
        .unwrap();
        let expected = Statement::Insert(Insert {
            table: name("t"),
            columns: ["k", "v", "b", "f", "x", "n"].map(name).to_vec(),
            values: vec![
                text("a"),
                int("-3"),
                Term::literal(LiteralKind::Boolean, "true"),
                Term::literal(LiteralKind::Float, "1.5"),
                Term::literal(LiteralKind::Hex, "0xff"),
                Term::Null { pos: Pos::NONE },
            ],
            using: Using { ttl: Some(int("10")), timestamp: Some(int("123")) },
        });
        assert_eq!(s, expected);
        let Statement::Insert(i) = parse_one("insert into t (k) values (1) using timestamp 5 and ttl 7").unwrap()
        else {
            panic!("not an INSERT")
        };
        assert_eq!(i.using, Using { ttl: Some(int("7")), timestamp: Some(int("5")) });
        assert!(err("insert into t (k) values (1) using ttl 1 and ttl 2").contains("TTL is given twice"));
    }

    #[test]
    fn update_and_delete_parse() {
        let s = parse_one("UPDATE t USING TTL 5 SET v = 'x', w = ? WHERE k = 1 AND c = ?").unwrap();
        let expected = Statement::Update(Update {
            table: name("t"),
            using: Using { ttl: Some(int("5")), timestamp: None },
            assignments: vec![(name("v"), text("x")), (name("w"), Term::marker(0))],
            relations: vec![eq("k", int("1")), eq("c", Term::marker(1))],
        });
        assert_eq!(s, expected);
        let s = parse_one("DELETE v, w FROM t USING TIMESTAMP 9 WHERE k = 1").unwrap();
        let expected = Statement::Delete(Delete {
            columns: vec![name("v"), name("w")],
            table: name("t"),
            using: Using { ttl: None, timestamp: Some(int("9")) },
            relations: vec![eq("k", int("1"))],
        });
        assert_eq!(s, expected);
        let Statement::Delete(d) = parse_one("delete from t where k = 'a' and c = 2").unwrap() else {
            panic!("not a DELETE")
        };
        assert!(d.columns.is_empty());
        assert_eq!(d.relations.len(), 2);
    }

    #[test]
    fn select_forms_parse() {
        let s = parse_one("SELECT * FROM t WHERE k = 1 AND c >= 2 AND c < 5 LIMIT 10").unwrap();
        let cmp =
            |column: &str, op, v: &str| Relation::Compare { left: Restricted::Column(name(column)), op, right: int(v) };
        let expected = Statement::Select(Select {
            table: name("t"),
            selection: Selection::All,
            relations: vec![eq("k", int("1")), cmp("c", Operator::Ge, "2"), cmp("c", Operator::Lt, "5")],
            limit: Some(int("10")),
        });
        assert_eq!(s, expected);

        let s = parse_one("select k, writetime(v), TTL(v) as t, token(k), ttl from t").unwrap();
        let item = |selector, alias: Option<&str>| SelectItem { selector, alias: alias.map(name) };
        let expected = Statement::Select(Select {
            table: name("t"),
            selection: Selection::Items(vec![
                item(Selector::Column(name("k")), None),
                item(Selector::WriteTime(name("v")), None),
                item(Selector::Ttl(name("v")), Some("t")),
                item(Selector::Token { columns: vec![name("k")], pos: Pos::NONE }, None),
                item(Selector::Column(name("ttl")), None),
            ]),
            relations: vec![],
            limit: None,
        });
        assert_eq!(s, expected);

        let s = parse_one("SELECT count(*) FROM t WHERE token(a, b) > -5 AND token(a, b) <= ?").unwrap();
        let tok = |op, right| Relation::Compare {
            left: Restricted::Token { columns: vec![name("a"), name("b")], pos: Pos::NONE },
            op,
            right,
        };
        let expected = Statement::Select(Select {
            table: name("t"),
            selection: Selection::Count { alias: None },
            relations: vec![tok(Operator::Gt, int("-5")), tok(Operator::Le, Term::marker(0))],
            limit: None,
        });
        assert_eq!(s, expected);

        let Statement::Select(s) = parse_one("select COUNT(1) AS n from t where k in (1, 2, ?)").unwrap() else {
            panic!("not a SELECT")
        };
        assert_eq!(s.selection, Selection::Count { alias: Some(name("n")) });
        assert_eq!(
            s.relations,
            vec![Relation::In { column: name("k"), values: vec![int("1"), int("2"), Term::marker(0)] }]
        );
    }

    #[test]
    fn batches_parse_with_markers_numbered_across_statements() {
        let s = parse_one(
            "BEGIN UNLOGGED BATCH USING TIMESTAMP 42\n INSERT INTO t (k, v) VALUES (?, ?);\n \
             UPDATE t SET v = ? WHERE k = 2\n DELETE FROM t WHERE k = ?; APPLY BATCH;",
        )
        .unwrap();
        let Statement::Batch(b) = s else { panic!("not a BATCH") };
        assert_eq!(b.kind, BatchKind::Unlogged);
        assert_eq!(b.using.timestamp, Some(int("42")));
        assert_eq!(b.statements.len(), 3);
        let BatchStatement::Delete(d) = &b.statements[2] else { panic!("not a DELETE") };
        assert_eq!(d.relations, vec![eq("k", Term::marker(3))]);
        let Statement::Batch(b) = parse_one("begin batch insert into t (k) values (1) apply batch").unwrap() else {
            panic!("not a BATCH")
        };
        assert_eq!(b.kind, BatchKind::Logged);
        assert!(err("BEGIN BATCH USING TTL 5 INSERT INTO t (k) VALUES (1) APPLY BATCH").contains("Global TTL"));
        assert_eq!(
            err("BEGIN BATCH SELECT * FROM t APPLY BATCH"),
            "line 1:13 mismatched input 'SELECT' expecting 'USING', ';', 'APPLY', 'INSERT', 'UPDATE' or 'DELETE'"
        );
    }

    #[test]
    fn cqlsh_conveniences_are_accepted() {
        let got = parse(
            "-- leading comment\nSeLeCt * FrOm \"MyTable\" /* inline */ WHERE \"Key\" = $$it's$$; // trailing\n\
             select * from t;;",
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        let Statement::Select(s) = &got[0] else { panic!("not a SELECT") };
        assert_eq!(s.table, name("MyTable"));
        assert_eq!(s.relations, vec![eq("Key", text("it's"))]);
        assert_eq!(parse("  ;  -- nothing\n").unwrap(), vec![]);
        let Statement::Insert(i) = parse_one("insert into t (d) values (-Infinity)").unwrap() else {
            panic!("not an INSERT")
        };
        assert_eq!(i.values, vec![Term::literal(LiteralKind::Float, "-Infinity")]);
    }

    #[test]
    fn syntax_errors_name_line_column_and_what_was_expected() {
        assert_eq!(err("SELECT * FORM t"), "line 1:10 mismatched input 'FORM' expecting 'FROM'");
        assert_eq!(err("SELEC * FROM t").split(" expecting").next(), Some("line 1:1 mismatched input 'SELEC'"));
        assert_eq!(
            err("SELECT *\nFROM t\nWHERE k = 1 LIMT 5"),
            "line 3:13 mismatched input 'LIMT' expecting 'AND', 'LIMIT' or ';'"
        );
        assert_eq!(err("INSERT INTO t (k) VALUES (1"), "line 1:28 mismatched input '<EOF>' expecting ',' or ')'");
        assert_eq!(err("select * from select"), "line 1:15 mismatched input 'select' expecting identifier");
        assert_eq!(err("update t set v = where k = 1"), "line 1:18 mismatched input 'where' expecting a value");
        assert_eq!(err("select * from t where k == 1"), "line 1:26 mismatched input '=' expecting a value");
        assert!(err("create table t (k uuid primary key)").starts_with("line 1:19 unknown type 'uuid'"));
        assert_eq!(
            err("create table t (k int primary key, v int, primary key (v))"),
            "line 1:43 Multiple PRIMARY KEYs specified (exactly one required)"
        );
        assert_eq!(
            parse_one("select * from t; select * from t").unwrap_err().message,
            "expecting one statement, found 2"
        );
        let e = parse("select * from t where\n  k = 'x").unwrap_err();
        assert_eq!((e.line, e.column, e.kind), (2, 7, super::super::CqlErrorKind::Syntax));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,80}") {
            let _ = parse(&text);
        }

        #[test]
        fn token_soup_never_panics_the_parser(words in proptest::collection::vec(
            proptest::sample::select(vec![
                "select", "insert", "into", "update", "delete", "from", "where", "and", "set", "values", "using",
                "ttl", "timestamp", "begin", "batch", "apply", "create", "table", "primary", "key", "with", "(",
                ")", ",", ";", "=", "<", ">=", "?", "*", "token", "count", "1", "'a'", "k", "v", "int", "in",
                "limit", "writetime", "clustering", "order", "by", "desc", "drop", "if", "exists", "null", "-",
            ]), 0..24)) {
            let _ = parse(&words.join(" "));
        }
    }
}

//! Binds parsed statements to table schemas and produces what the executor runs, in the storage
//! engine's types: `Write`s for INSERT/UPDATE/DELETE/BATCH, partition keys with a clustering
//! slice or a token range for SELECT, a `TableSchema` for CREATE TABLE. Every error here is an
//! invalid request naming the column at fault. It never touches the node or any I/O.
//!
//! Planning runs in two steps so that PREPARE and a literal query share one path: `prepare`
//! resolves names, checks restrictions, types every literal and every bind marker; `bind`
//! substitutes the bound values (checked against the markers' types) and builds keys and writes.

use std::ops::Bound;
use std::sync::Arc;

use shards::cell::MAX_TTL_SECONDS;
use shards::key::{ClusteringKey, PartitionKey};
use shards::mutation::Write;
use shards::row::{ClusteringSlice, ColumnId};
use wire::schema::{ClusteringColumn, ClusteringOrder, ColumnDef, ReadRepair, TableOptions, TableSchema};
use wire::token::MIN_TOKEN;
use wire::{ColumnType, Token, Value};

use super::ast::{self, BatchKind, Name, Operator, Relation, Restricted, Statement, Term};
use super::literal::literal_value;
use super::{CqlError, Pos, MAX_BATCH_STATEMENTS, MAX_IN_PARTITIONS};

/// Where the planner finds tables by name (case-insensitively).
pub trait Schemas {
    fn table(&self, name: &str) -> Option<Arc<TableSchema>>;
}

impl<F: Fn(&str) -> Option<Arc<TableSchema>>> Schemas for F {
    fn table(&self, name: &str) -> Option<Arc<TableSchema>> {
        self(name)
    }
}

/// A bind marker's name (the column it is compared with or assigned to, or Cassandra's
/// `[ttl]`, `[timestamp]`, `[limit]`, `partition key token`) and the type its value must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    pub name: String,
    pub ty: ColumnType,
}

/// What a statement asks the node to do, ready to execute.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Create the table (its id is assigned by the catalog; `schema.id` is 0).
    CreateTable {
        schema: TableSchema,
        if_not_exists: bool,
    },
    DropTable {
        table: String,
        if_exists: bool,
    },
    Truncate {
        schema: Arc<TableSchema>,
    },
    DescribeTables,
    DescribeTable {
        schema: Arc<TableSchema>,
    },
    Write(WritePlan),
    Select(SelectPlan),
    /// A role or permission statement: the coordinator runs it against the auth tables.
    Auth(ast::AuthStatement),
}

/// INSERT, UPDATE, DELETE or BATCH: writes applied with one timestamp.
#[derive(Debug, Clone, PartialEq)]
pub struct WritePlan {
    /// TTLs are inside the writes (`USING TTL`, else the table's `default_time_to_live`).
    pub writes: Vec<Write>,
    /// `USING TIMESTAMP`, microseconds; None: the coordinator's clock issues one.
    pub timestamp: Option<i64>,
    /// Set for a BATCH (atomic per partition).
    pub batch: Option<BatchKind>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SelectPlan {
    pub schema: Arc<TableSchema>,
    pub source: ReadSource,
    pub projection: Projection,
    /// `LIMIT n`: at most n rows (count(*) counts at most n rows).
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReadSource {
    /// `pk = ...` or `pk IN (...)`: these partitions (distinct, in the order given), each
    /// read through `slice`.
    Partitions { keys: Vec<PartitionKey>, slice: ClusteringSlice },
    /// Every partition whose token is in the range, in token order, all rows (a `token()`
    /// restriction, or none: the full ring, read in pages by the executor).
    Tokens(TokenRange),
}

/// The tokens t with start < t <= end, as the engine's scans take them; empty when
/// start >= end. No real key has the minimum token, so (MIN, MAX] is the whole ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRange {
    pub start: Token,
    pub end: Token,
}

impl TokenRange {
    pub const FULL: TokenRange = TokenRange { start: MIN_TOKEN, end: Token::MAX };

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    pub fn contains(&self, token: Token) -> bool {
        self.start < token && token <= self.end
    }
}

/// What a SELECT returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    Columns(Vec<ResultColumn>),
    /// `count(*)`: one bigint column.
    Count {
        name: String,
    },
}

/// One result column with the name and type cqlsh shows for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultColumn {
    pub name: String,
    pub ty: ColumnType,
    pub source: ColumnSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnSource {
    /// Index into the table's partition key columns.
    PartitionKey(usize),
    /// Index into the table's clustering columns.
    Clustering(usize),
    Regular(ColumnId),
    /// `writetime(col)`: the cell's timestamp in microseconds (bigint), null when the cell is.
    WriteTime(ColumnId),
    /// `ttl(col)`: seconds left before the cell expires (int), null without a TTL.
    Ttl(ColumnId),
    /// `token(pk...)`: the partition's token (bigint).
    Token,
}

/// A statement bound to its schemas, waiting for the values of its bind markers.
#[derive(Debug, Clone)]
pub struct Prepared {
    markers: Vec<BindSpec>,
    body: Body,
}

/// Parses nothing: plans a statement whose values are all literals (a statement with bind
/// markers fails, as executing it without values does in Cassandra).
pub fn plan(statement: &Statement, schemas: &dyn Schemas) -> Result<Plan, CqlError> {
    prepare(statement, schemas)?.bind(&[])
}

/// Resolves and checks a statement against the schemas, typing its bind markers.
pub fn prepare(statement: &Statement, schemas: &dyn Schemas) -> Result<Prepared, CqlError> {
    let mut p = Planner { schemas, markers: Vec::new() };
    let body = match statement {
        // Whether the table exists is the executor's question, answered when it runs
        // (AlreadyExists, or nothing with IF NOT EXISTS), not the planner's.
        Statement::CreateTable(create) => {
            Body::Ready(Plan::CreateTable { schema: create_table_schema(create)?, if_not_exists: create.if_not_exists })
        }
        Statement::DropTable { name, if_exists } => {
            if !if_exists {
                p.table(name)?;
            }
            Body::Ready(Plan::DropTable { table: name.text.clone(), if_exists: *if_exists })
        }
        Statement::Truncate { name } => Body::Ready(Plan::Truncate { schema: p.table(name)? }),
        Statement::DescribeTables => Body::Ready(Plan::DescribeTables),
        Statement::DescribeTable { name } => Body::Ready(Plan::DescribeTable { schema: p.table(name)? }),
        Statement::Insert(insert) => {
            let (write, timestamp) = p.insert(insert)?;
            Body::Write { writes: vec![write], timestamp, batch: None }
        }
        Statement::Update(update) => {
            let (write, timestamp) = p.update(update)?;
            Body::Write { writes: vec![write], timestamp, batch: None }
        }
        Statement::Delete(delete) => {
            let (write, timestamp) = p.delete(delete)?;
            Body::Write { writes: vec![write], timestamp, batch: None }
        }
        Statement::Batch(batch) => p.batch(batch)?,
        Statement::Select(select) => Body::Select(p.select(select)?),
        Statement::Auth(statement) => Body::Ready(Plan::Auth(statement.clone())),
    };
    let markers = p
        .markers
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.ok_or_else(|| CqlError::invalid(Pos::NONE, format!("bind marker {} has no type", i + 1))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared { markers, body })
}

impl Prepared {
    /// The bind markers in order, with the type each value must have.
    pub fn markers(&self) -> &[BindSpec] {
        &self.markers
    }

    /// The bind markers that give the partition key, one per partition-key column in key
    /// order (CQL's `pk_indexes`), when the statement touches a single partition whose key is
    /// bound entirely by markers; else empty (a client cannot route it by token).
    pub fn pk_indexes(&self) -> Vec<u16> {
        let partition = match &self.body {
            Body::Write { writes, .. } => match &writes[..] {
                [write] => &write.partition,
                _ => return Vec::new(),
            },
            Body::Select(SelectTemplate { source: SourceTemplate::Partitions { partition, .. }, .. }) => partition,
            _ => return Vec::new(),
        };
        let markers: Option<Vec<u16>> = partition
            .iter()
            .map(|column| match column[..] {
                [Operand::Marker(i)] => u16::try_from(i).ok(),
                _ => None,
            })
            .collect();
        markers.unwrap_or_default()
    }

    /// The result columns of a prepared SELECT.
    pub fn projection(&self) -> Option<&Projection> {
        match &self.body {
            Body::Select(s) => Some(&s.projection),
            _ => None,
        }
    }

    /// The plan with `values` (one per marker, None = null) in place of the markers.
    pub fn bind(&self, values: &[Option<Value>]) -> Result<Plan, CqlError> {
        if values.len() != self.markers.len() {
            return Err(CqlError::invalid_value(format!(
                "Invalid amount of bind variables: expected {}, received {}",
                self.markers.len(),
                values.len()
            )));
        }
        for (i, (spec, value)) in self.markers.iter().zip(values).enumerate() {
            if let Some(v) = value {
                if v.column_type() != spec.ty {
                    return Err(CqlError::invalid_value(format!(
                        "bind variable {} (\"{}\") must be a {} value, got a {} value",
                        i + 1,
                        spec.name,
                        spec.ty,
                        v.column_type()
                    )));
                }
            }
        }
        let b = BoundValues { values, markers: &self.markers };
        match &self.body {
            Body::Ready(plan) => Ok(plan.clone()),
            Body::Write { writes, timestamp, batch } => {
                let mut out = Vec::with_capacity(writes.len());
                for w in writes {
                    w.bind(&b, &mut out)?;
                    if out.len() > MAX_BATCH_STATEMENTS {
                        let msg = format!("more than {MAX_BATCH_STATEMENTS} writes in one request");
                        return Err(CqlError::invalid_value(msg));
                    }
                }
                let timestamp = match timestamp {
                    Some(op) => Some(b.bigint(op, "[timestamp]")?),
                    None => None,
                };
                Ok(Plan::Write(WritePlan { writes: out, timestamp, batch: *batch }))
            }
            Body::Select(s) => s.bind(&b),
        }
    }
}

/// A value of the statement: a typed literal (None = null) or a bind marker.
#[derive(Debug, Clone)]
enum Operand {
    Value(Option<Value>),
    Marker(usize),
}

#[derive(Debug, Clone)]
enum Body {
    /// Nothing to bind (DDL, DESCRIBE).
    Ready(Plan),
    Write {
        writes: Vec<WriteTemplate>,
        timestamp: Option<Operand>,
        batch: Option<BatchKind>,
    },
    Select(SelectTemplate),
}

#[derive(Debug, Clone)]
struct WriteTemplate {
    schema: Arc<TableSchema>,
    /// Per partition key column, its value, or its IN alternatives.
    partition: Vec<Vec<Operand>>,
    /// A full clustering key, or empty (a partition deletion).
    clustering: Vec<Operand>,
    action: WriteAction,
    /// `USING TTL`; None applies the table's default.
    ttl: Option<Operand>,
}

#[derive(Debug, Clone)]
enum WriteAction {
    Upsert { columns: Vec<(String, Operand)>, insert: bool },
    Delete { columns: Vec<String> },
}

#[derive(Debug, Clone)]
struct SelectTemplate {
    schema: Arc<TableSchema>,
    source: SourceTemplate,
    projection: Projection,
    limit: Option<Operand>,
}

#[derive(Debug, Clone)]
enum SourceTemplate {
    Partitions { partition: Vec<Vec<Operand>>, clustering: ClusteringRestriction },
    Tokens(Bounds),
}

/// A lower and an upper bound, each with whether it is inclusive.
#[derive(Debug, Clone, Default)]
struct Bounds {
    lower: Option<(Operand, bool)>,
    upper: Option<(Operand, bool)>,
}

/// Equality on a prefix of the clustering columns, then at most one range on the next.
#[derive(Debug, Clone, Default)]
struct ClusteringRestriction {
    eq: Vec<Operand>,
    range: Option<Bounds>,
}

/// How one clustering column is restricted in a WHERE clause.
#[derive(Debug, Clone)]
enum ColumnRestriction {
    Eq(Operand),
    Range(Bounds),
}

/// The WHERE clause of a statement, sorted by column.
struct Restrictions {
    /// Per partition key column: its value or IN alternatives, and where it was restricted.
    partition: Vec<Option<(Vec<Operand>, Pos)>>,
    /// Per clustering column.
    clustering: Vec<Option<(ColumnRestriction, Pos)>>,
    token: Option<(Bounds, Pos)>,
}

/// A column of a table as a statement names it.
enum ColumnRef<'s> {
    PartitionKey(usize, &'s ColumnDef),
    Clustering(usize, &'s ColumnDef),
    Regular(ColumnId, &'s ColumnDef),
}

impl<'s> ColumnRef<'s> {
    fn def(&self) -> &'s ColumnDef {
        match self {
            ColumnRef::PartitionKey(_, d) | ColumnRef::Clustering(_, d) | ColumnRef::Regular(_, d) => d,
        }
    }
}

fn find_column<'s>(schema: &'s TableSchema, name: &Name) -> Result<ColumnRef<'s>, CqlError> {
    let is = |d: &ColumnDef| d.name.eq_ignore_ascii_case(&name.text);
    if let Some(i) = schema.partition_key.iter().position(is) {
        return Ok(ColumnRef::PartitionKey(i, &schema.partition_key[i]));
    }
    if let Some(i) = schema.clustering.iter().position(|c| is(&c.column)) {
        return Ok(ColumnRef::Clustering(i, &schema.clustering[i].column));
    }
    if let Some(i) = schema.columns.iter().position(is) {
        return Ok(ColumnRef::Regular(i as ColumnId, &schema.columns[i]));
    }
    Err(CqlError::invalid(name.pos, format!("Undefined column name {} in table {}", name.text, schema.name)))
}

fn names(defs: impl Iterator<Item = String>) -> String {
    defs.collect::<Vec<_>>().join(", ")
}

struct Planner<'a> {
    schemas: &'a dyn Schemas,
    /// Type of each bind marker, by index, once its context is known.
    markers: Vec<Option<BindSpec>>,
}

impl Planner<'_> {
    fn table(&self, name: &Name) -> Result<Arc<TableSchema>, CqlError> {
        self.schemas
            .table(&name.text)
            .ok_or_else(|| CqlError::invalid(name.pos, format!("unconfigured table {}", name.text)))
    }

    /// Types a term for the column (or role) `name` of type `ty`.
    fn operand(&mut self, term: &Term, name: &str, ty: ColumnType) -> Result<Operand, CqlError> {
        match term {
            Term::Literal { kind, text, pos } => {
                let value = literal_value(*kind, text, name, ty).map_err(|m| CqlError::invalid(*pos, m))?;
                Ok(Operand::Value(Some(value)))
            }
            Term::Null { .. } => Ok(Operand::Value(None)),
            Term::Marker { index, .. } => {
                if self.markers.len() <= *index {
                    self.markers.resize(index + 1, None);
                }
                self.markers[*index] = Some(BindSpec { name: name.to_owned(), ty });
                Ok(Operand::Marker(*index))
            }
        }
    }

    /// The TTL and timestamp operands of `USING`.
    fn using(&mut self, using: &ast::Using) -> Result<(Option<Operand>, Option<Operand>), CqlError> {
        let ttl = using.ttl.as_ref().map(|t| self.operand(t, "[ttl]", ColumnType::Int)).transpose()?;
        let timestamp =
            using.timestamp.as_ref().map(|t| self.operand(t, "[timestamp]", ColumnType::BigInt)).transpose()?;
        Ok((ttl, timestamp))
    }

    fn insert(&mut self, insert: &ast::Insert) -> Result<(WriteTemplate, Option<Operand>), CqlError> {
        let schema = self.table(&insert.table)?;
        if insert.columns.len() != insert.values.len() {
            return Err(CqlError::invalid(insert.table.pos, "Unmatched column names/values"));
        }
        let mut partition = vec![None; schema.partition_key.len()];
        let mut clustering = vec![None; schema.clustering.len()];
        let mut columns = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        for (name, term) in insert.columns.iter().zip(&insert.values) {
            let column = find_column(&schema, name)?;
            let def = column.def();
            if seen.contains(&def.name.as_str()) {
                return Err(CqlError::invalid(name.pos, "The column names contains duplicates"));
            }
            seen.push(&def.name);
            let op = self.operand(term, &def.name, def.ty)?;
            match column {
                ColumnRef::PartitionKey(i, _) => partition[i] = Some(vec![op]),
                ColumnRef::Clustering(i, _) => clustering[i] = Some(op),
                ColumnRef::Regular(_, d) => columns.push((d.name.clone(), op)),
            }
        }
        let partition =
            all_given(&schema.partition_key, partition, "Some partition key parts are missing", insert.table.pos)?;
        let ck_defs: Vec<ColumnDef> = schema.clustering.iter().map(|c| c.column.clone()).collect();
        let clustering = all_given(&ck_defs, clustering, "Some clustering keys are missing", insert.table.pos)?;
        let (ttl, timestamp) = self.using(&insert.using)?;
        let action = WriteAction::Upsert { columns, insert: true };
        Ok((WriteTemplate { schema, partition, clustering, action, ttl }, timestamp))
    }

    fn update(&mut self, update: &ast::Update) -> Result<(WriteTemplate, Option<Operand>), CqlError> {
        let schema = self.table(&update.table)?;
        let (ttl, timestamp) = self.using(&update.using)?;
        let mut columns: Vec<(String, Operand)> = Vec::new();
        for (name, term) in &update.assignments {
            let def = match find_column(&schema, name)? {
                ColumnRef::Regular(_, d) => d,
                key => {
                    let msg = format!("PRIMARY KEY part {} found in SET part", key.def().name);
                    return Err(CqlError::invalid(name.pos, msg));
                }
            };
            if columns.iter().any(|(n, _)| *n == def.name) {
                return Err(CqlError::invalid(
                    name.pos,
                    format!("Multiple incompatible setting of column {}", def.name),
                ));
            }
            columns.push((def.name.clone(), self.operand(term, &def.name, def.ty)?));
        }
        let restrictions = self.restrictions(&schema, &update.relations, "UPDATE")?;
        let (partition, clustering) = restrictions.write_key(&schema, update.table.pos, true)?;
        let action = WriteAction::Upsert { columns, insert: false };
        Ok((WriteTemplate { schema, partition, clustering, action, ttl }, timestamp))
    }

    fn delete(&mut self, delete: &ast::Delete) -> Result<(WriteTemplate, Option<Operand>), CqlError> {
        let schema = self.table(&delete.table)?;
        if let Some(ttl) = &delete.using.ttl {
            return Err(CqlError::invalid(ttl.pos(), "A TTL cannot be given on DELETE"));
        }
        let (_, timestamp) = self.using(&delete.using)?;
        let mut columns: Vec<String> = Vec::new();
        for name in &delete.columns {
            match find_column(&schema, name)? {
                ColumnRef::Regular(_, d) if !columns.contains(&d.name) => columns.push(d.name.clone()),
                ColumnRef::Regular(..) => {}
                key => {
                    let msg = format!(
                        "Invalid identifier {} for deletion (should not be a PRIMARY KEY part)",
                        key.def().name
                    );
                    return Err(CqlError::invalid(name.pos, msg));
                }
            }
        }
        let restrictions = self.restrictions(&schema, &delete.relations, "DELETE")?;
        let (partition, clustering) = restrictions.write_key(&schema, delete.table.pos, !columns.is_empty())?;
        let action = WriteAction::Delete { columns };
        Ok((WriteTemplate { schema, partition, clustering, action, ttl: None }, timestamp))
    }

    fn batch(&mut self, batch: &ast::Batch) -> Result<Body, CqlError> {
        let mut writes = Vec::with_capacity(batch.statements.len());
        for statement in &batch.statements {
            let (write, timestamp) = match statement {
                ast::BatchStatement::Insert(s) => self.insert(s)?,
                ast::BatchStatement::Update(s) => self.update(s)?,
                ast::BatchStatement::Delete(s) => self.delete(s)?,
            };
            if timestamp.is_some() {
                let pos = match statement {
                    ast::BatchStatement::Insert(s) => s.using.timestamp.as_ref(),
                    ast::BatchStatement::Update(s) => s.using.timestamp.as_ref(),
                    ast::BatchStatement::Delete(s) => s.using.timestamp.as_ref(),
                }
                .map_or(Pos::NONE, Term::pos);
                let msg = "USING TIMESTAMP is not supported on a statement inside a BATCH: a batch is written \
                           with one timestamp, set it on the BATCH";
                return Err(CqlError::invalid(pos, msg));
            }
            writes.push(write);
        }
        let timestamp =
            batch.using.timestamp.as_ref().map(|t| self.operand(t, "[timestamp]", ColumnType::BigInt)).transpose()?;
        Ok(Body::Write { writes, timestamp, batch: Some(batch.kind) })
    }

    fn select(&mut self, select: &ast::Select) -> Result<SelectTemplate, CqlError> {
        let schema = self.table(&select.table)?;
        let projection = projection(&schema, &select.selection)?;
        let restrictions = self.restrictions(&schema, &select.relations, "SELECT")?;
        let source = restrictions.read_source(&schema)?;
        let limit = select.limit.as_ref().map(|t| self.operand(t, "[limit]", ColumnType::Int)).transpose()?;
        Ok(SelectTemplate { schema, source, projection, limit })
    }

    /// Sorts the relations of a WHERE clause by column, checking each on its own.
    fn restrictions(
        &mut self,
        schema: &TableSchema,
        relations: &[Relation],
        verb: &str,
    ) -> Result<Restrictions, CqlError> {
        let mut r = Restrictions {
            partition: vec![None; schema.partition_key.len()],
            clustering: vec![None; schema.clustering.len()],
            token: None,
        };
        for relation in relations {
            match relation {
                Relation::Compare { left: Restricted::Token { columns, pos }, op, right } => {
                    if verb != "SELECT" {
                        let msg = format!("The token function cannot be used in WHERE clauses for {verb} statements");
                        return Err(CqlError::invalid(*pos, msg));
                    }
                    check_token_arguments(schema, columns, *pos)?;
                    let value = self.operand(right, "partition key token", ColumnType::BigInt)?;
                    let (bounds, _) = r.token.get_or_insert_with(|| (Bounds::default(), *pos));
                    bounds.add(*op, value, "token", *pos)?;
                }
                Relation::Compare { left: Restricted::Column(name), op, right } => {
                    let column = find_column(schema, name)?;
                    let def = column.def();
                    let value = self.operand(right, &def.name, def.ty)?;
                    match column {
                        ColumnRef::PartitionKey(i, _) => {
                            if *op != Operator::Eq {
                                let msg = "Only EQ and IN relation are supported on the partition key (unless you use the token() function)";
                                return Err(CqlError::invalid(name.pos, msg));
                            }
                            if r.partition[i].is_some() {
                                return Err(more_than_one(name));
                            }
                            r.partition[i] = Some((vec![value], name.pos));
                        }
                        ColumnRef::Clustering(i, _) => {
                            let slot = &mut r.clustering[i];
                            match (slot.as_mut(), op) {
                                (None, Operator::Eq) => *slot = Some((ColumnRestriction::Eq(value), name.pos)),
                                (None, _) => {
                                    let mut bounds = Bounds::default();
                                    bounds.add(*op, value, &def.name, name.pos)?;
                                    *slot = Some((ColumnRestriction::Range(bounds), name.pos));
                                }
                                (Some((ColumnRestriction::Range(bounds), _)), op) if *op != Operator::Eq => {
                                    bounds.add(*op, value, &def.name, name.pos)?
                                }
                                (Some(_), _) => return Err(more_than_one(name)),
                            }
                        }
                        ColumnRef::Regular(..) => return Err(not_a_key_column(name, &def.name)),
                    }
                }
                Relation::In { column: name, values } => {
                    let column = find_column(schema, name)?;
                    let def = column.def();
                    let ColumnRef::PartitionKey(i, _) = column else {
                        if let ColumnRef::Regular(..) = column {
                            return Err(not_a_key_column(name, &def.name));
                        }
                        let msg = format!("IN restrictions on clustering column {} are not supported", def.name);
                        return Err(CqlError::invalid(name.pos, msg));
                    };
                    if r.partition[i].is_some() {
                        return Err(more_than_one(name));
                    }
                    let ops = values.iter().map(|t| self.operand(t, &def.name, def.ty)).collect::<Result<_, _>>()?;
                    r.partition[i] = Some((ops, name.pos));
                }
            }
        }
        Ok(r)
    }
}

fn more_than_one(name: &Name) -> CqlError {
    CqlError::invalid(
        name.pos,
        format!("{} cannot be restricted by more than one relation if it includes an Equal", name.text),
    )
}

fn not_a_key_column(name: &Name, column: &str) -> CqlError {
    let msg = format!("Non PRIMARY KEY columns found in where clause: {column} (filtering is not supported)");
    CqlError::invalid(name.pos, msg)
}

/// `token(...)` must name exactly the partition key columns, in order.
fn check_token_arguments(schema: &TableSchema, columns: &[Name], pos: Pos) -> Result<(), CqlError> {
    let same = columns.len() == schema.partition_key.len()
        && columns.iter().zip(&schema.partition_key).all(|(n, d)| d.name.eq_ignore_ascii_case(&n.text));
    if same {
        return Ok(());
    }
    let msg = format!(
        "The token function arguments must be in the partition key order: {}",
        names(schema.partition_key.iter().map(|d| d.name.clone()))
    );
    Err(CqlError::invalid(pos, msg))
}

/// Every column given, or an error listing the missing ones.
fn all_given<T>(defs: &[ColumnDef], given: Vec<Option<T>>, what: &str, pos: Pos) -> Result<Vec<T>, CqlError> {
    let missing: Vec<String> =
        defs.iter().zip(&given).filter(|(_, g)| g.is_none()).map(|(d, _)| d.name.clone()).collect();
    if !missing.is_empty() {
        return Err(CqlError::invalid(pos, format!("{what}: {}", missing.join(", "))));
    }
    Ok(given.into_iter().flatten().collect())
}

impl Bounds {
    fn add(&mut self, op: Operator, value: Operand, column: &str, pos: Pos) -> Result<(), CqlError> {
        let (lower, upper) = match op {
            Operator::Eq => (Some((value.clone(), true)), Some((value, true))),
            Operator::Gt => (Some((value, false)), None),
            Operator::Ge => (Some((value, true)), None),
            Operator::Lt => (None, Some((value, false))),
            Operator::Le => (None, Some((value, true))),
        };
        for (slot, new, which) in [(&mut self.lower, lower, "start"), (&mut self.upper, upper, "end")] {
            if new.is_none() {
                continue;
            }
            if slot.is_some() {
                let msg = format!("More than one restriction was found for the {which} bound on {column}");
                return Err(CqlError::invalid(pos, msg));
            }
            *slot = new;
        }
        Ok(())
    }
}

impl Restrictions {
    /// The partition restrictions, all of them or an error naming the missing columns.
    fn full_partition(&self, schema: &TableSchema, pos: Pos) -> Result<Vec<Vec<Operand>>, CqlError> {
        let given = self.partition.iter().map(|p| p.as_ref().map(|(ops, _)| ops.clone())).collect();
        all_given(&schema.partition_key, given, "Some partition key parts are missing", pos)
    }

    /// The key of a write: every partition key column by equality (or IN), and every
    /// clustering column by equality (`full_clustering`) or, for a DELETE of a partition, none.
    fn write_key(
        &self,
        schema: &TableSchema,
        pos: Pos,
        full_clustering: bool,
    ) -> Result<(Vec<Vec<Operand>>, Vec<Operand>), CqlError> {
        let partition = self.full_partition(schema, pos)?;
        let mut clustering = Vec::new();
        let mut missing = Vec::new();
        for (def, restriction) in schema.clustering.iter().zip(&self.clustering) {
            match restriction {
                Some((ColumnRestriction::Eq(op), _)) => clustering.push(op.clone()),
                Some((ColumnRestriction::Range(_), at)) => {
                    let msg = format!(
                        "Slice restrictions are not supported on the clustering columns in writes ({})",
                        def.column.name
                    );
                    return Err(CqlError::invalid(*at, msg));
                }
                None => missing.push(def.column.name.clone()),
            }
        }
        let whole_partition = clustering.is_empty() && !full_clustering;
        if !missing.is_empty() && !whole_partition {
            let msg = if full_clustering {
                format!("Some clustering keys are missing: {}", missing.join(", "))
            } else {
                format!(
                    "Range deletions are not supported: restrict every clustering column or none (missing: {})",
                    missing.join(", ")
                )
            };
            return Err(CqlError::invalid(pos, msg));
        }
        Ok((partition, clustering))
    }

    /// Where a SELECT reads: partitions by key with a clustering slice, or a token range.
    fn read_source(&self, schema: &TableSchema) -> Result<SourceTemplate, CqlError> {
        let restricted: Vec<(&ColumnDef, Pos)> = schema
            .partition_key
            .iter()
            .zip(&self.partition)
            .filter_map(|(d, p)| p.as_ref().map(|(_, pos)| (d, *pos)))
            .collect();
        if let (Some((_, token_pos)), Some((def, _))) = (&self.token, restricted.first()) {
            let msg =
                format!("Columns \"{}\" cannot be restricted by both a normal relation and a token relation", def.name);
            return Err(CqlError::invalid(*token_pos, msg));
        }
        let clustering = self.clustering_restriction(schema)?;
        if restricted.len() == schema.partition_key.len() {
            let partition = self.full_partition(schema, Pos::NONE)?;
            return Ok(SourceTemplate::Partitions { partition, clustering });
        }
        if let Some((_, pos)) = restricted.first() {
            let missing = schema.partition_key.iter().zip(&self.partition).filter(|(_, p)| p.is_none());
            let msg = format!(
                "Partition key parts: {} must be restricted as other parts are",
                names(missing.map(|(d, _)| d.name.clone()))
            );
            return Err(CqlError::invalid(*pos, msg));
        }
        if let Some((_, pos)) = self.clustering.iter().flatten().next() {
            let msg = "Cannot execute this query as it might involve data filtering: restricting clustering \
                       columns needs the whole partition key restricted by equality (ALLOW FILTERING is not supported)";
            return Err(CqlError::invalid(*pos, msg));
        }
        let bounds = self.token.as_ref().map(|(b, _)| b.clone()).unwrap_or_default();
        Ok(SourceTemplate::Tokens(bounds))
    }

    /// Equality on a prefix of the clustering columns, then at most one range on the next
    /// column, and nothing after (Cassandra's rule).
    fn clustering_restriction(&self, schema: &TableSchema) -> Result<ClusteringRestriction, CqlError> {
        let mut out = ClusteringRestriction::default();
        // The first column not restricted by equality, if any.
        let mut stop: Option<(usize, bool)> = None;
        for (i, restriction) in self.clustering.iter().enumerate() {
            let name = |j: usize| &schema.clustering[j].column.name;
            match (restriction, stop) {
                (None, None) => stop = Some((i, false)),
                (None, Some(_)) => {}
                (Some((ColumnRestriction::Eq(op), _)), None) => out.eq.push(op.clone()),
                (Some((ColumnRestriction::Range(b), _)), None) => {
                    out.range = Some(b.clone());
                    stop = Some((i, true));
                }
                (Some((_, pos)), Some((j, false))) => {
                    let msg = format!(
                        "PRIMARY KEY column \"{}\" cannot be restricted as preceding column \"{}\" is not restricted",
                        name(i),
                        name(j)
                    );
                    return Err(CqlError::invalid(*pos, msg));
                }
                (Some((_, pos)), Some((j, true))) => {
                    let msg = format!(
                        "Clustering column \"{}\" cannot be restricted (preceding column \"{}\" is restricted by a non-EQ relation)",
                        name(i),
                        name(j)
                    );
                    return Err(CqlError::invalid(*pos, msg));
                }
            }
        }
        Ok(out)
    }
}

/// The result columns of a selection.
fn projection(schema: &TableSchema, selection: &ast::Selection) -> Result<Projection, CqlError> {
    let column = |source: ColumnRef<'_>| {
        let (def, source) = match source {
            ColumnRef::PartitionKey(i, d) => (d, ColumnSource::PartitionKey(i)),
            ColumnRef::Clustering(i, d) => (d, ColumnSource::Clustering(i)),
            ColumnRef::Regular(id, d) => (d, ColumnSource::Regular(id)),
        };
        ResultColumn { name: def.name.clone(), ty: def.ty, source }
    };
    let items = match selection {
        ast::Selection::Count { alias } => {
            return Ok(Projection::Count {
                name: alias.as_ref().map_or_else(|| "count".to_owned(), |a| a.text.clone()),
            });
        }
        ast::Selection::All => {
            let pk = schema.partition_key.iter().enumerate().map(|(i, d)| ColumnRef::PartitionKey(i, d));
            let ck = schema.clustering.iter().enumerate().map(|(i, c)| ColumnRef::Clustering(i, &c.column));
            let regular = schema.columns.iter().enumerate().map(|(i, d)| ColumnRef::Regular(i as ColumnId, d));
            return Ok(Projection::Columns(pk.chain(ck).chain(regular).map(column).collect()));
        }
        ast::Selection::Items(items) => items,
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut result = match &item.selector {
            ast::Selector::Column(name) => column(find_column(schema, name)?),
            ast::Selector::WriteTime(name) | ast::Selector::Ttl(name) => {
                let writetime = matches!(item.selector, ast::Selector::WriteTime(_));
                let (function, ty) =
                    if writetime { ("writetime", ColumnType::BigInt) } else { ("ttl", ColumnType::Int) };
                let ColumnRef::Regular(id, def) = find_column(schema, name)? else {
                    let msg = format!("Cannot use selection function {function} on PRIMARY KEY part {}", name.text);
                    return Err(CqlError::invalid(name.pos, msg));
                };
                let source = if writetime { ColumnSource::WriteTime(id) } else { ColumnSource::Ttl(id) };
                ResultColumn { name: format!("{function}({})", def.name), ty, source }
            }
            ast::Selector::Token { columns, pos } => {
                check_token_arguments(schema, columns, *pos)?;
                let args = names(schema.partition_key.iter().map(|d| d.name.clone()));
                ResultColumn {
                    name: format!("system.token({args})"),
                    ty: ColumnType::BigInt,
                    source: ColumnSource::Token,
                }
            }
        };
        if let Some(alias) = &item.alias {
            result.name = alias.text.clone();
        }
        out.push(result);
    }
    Ok(Projection::Columns(out))
}

/// The schema a CREATE TABLE describes (id 0: the catalog assigns it), validated.
fn create_table_schema(create: &ast::CreateTable) -> Result<TableSchema, CqlError> {
    let declared = |name: &Name| -> Result<ColumnDef, CqlError> {
        create
            .columns
            .iter()
            .find(|c| c.name.text.eq_ignore_ascii_case(&name.text))
            .map(|c| ColumnDef { name: c.name.text.clone(), ty: c.ty })
            .ok_or_else(|| {
                CqlError::invalid(name.pos, format!("Unknown definition {} referenced in PRIMARY KEY", name.text))
            })
    };
    for (i, c) in create.columns.iter().enumerate() {
        if create.columns[..i].iter().any(|d| d.name.text.eq_ignore_ascii_case(&c.name.text)) {
            return Err(CqlError::invalid(c.name.pos, format!("Multiple definition of identifier {}", c.name.text)));
        }
    }
    let mut key_names: Vec<&Name> = Vec::new();
    for name in create.partition_key.iter().chain(&create.clustering) {
        if key_names.iter().any(|n| n.text.eq_ignore_ascii_case(&name.text)) {
            return Err(CqlError::invalid(name.pos, format!("Duplicate column {} in PRIMARY KEY", name.text)));
        }
        key_names.push(name);
    }
    let partition_key = create.partition_key.iter().map(declared).collect::<Result<Vec<_>, _>>()?;
    let mut clustering = create
        .clustering
        .iter()
        .map(|n| Ok(ClusteringColumn { column: declared(n)?, order: ClusteringOrder::Asc }))
        .collect::<Result<Vec<_>, CqlError>>()?;
    for (i, (name, order)) in create.clustering_order.iter().enumerate() {
        let Some(position) = clustering.iter().position(|c| c.column.name.eq_ignore_ascii_case(&name.text)) else {
            let msg =
                format!("Only clustering key columns can be defined in CLUSTERING ORDER directive ({})", name.text);
            return Err(CqlError::invalid(name.pos, msg));
        };
        if position != i {
            let msg = format!(
                "The order of columns in the CLUSTERING ORDER directive must match that of the clustering columns ({} is clustering column {})",
                name.text,
                position + 1
            );
            return Err(CqlError::invalid(name.pos, msg));
        }
        clustering[i].order = *order;
    }
    let columns = create
        .columns
        .iter()
        .filter(|c| !key_names.iter().any(|n| n.text.eq_ignore_ascii_case(&c.name.text)))
        .map(|c| ColumnDef { name: c.name.text.clone(), ty: c.ty })
        .collect();
    let mut options = TableOptions::default();
    let mut seen: Vec<&str> = Vec::new();
    for property in &create.properties {
        let name = property.name.text.as_str();
        if seen.contains(&name) {
            return Err(CqlError::invalid(property.name.pos, format!("Multiple definitions for property {name}")));
        }
        seen.push(name);
        if name == "read_repair" {
            let mode = match &property.value {
                Term::Literal { kind: ast::LiteralKind::String, text, .. } => ReadRepair::from_name(text),
                _ => None,
            };
            let Some(mode) = mode else {
                let msg = "Invalid value for property 'read_repair': expected 'BLOCKING', 'BACKGROUND' or 'NONE'";
                return Err(CqlError::invalid(property.value.pos(), msg));
            };
            options.read_repair = mode;
            continue;
        }
        let (min, max) = match name {
            "gc_grace_seconds" => (0, u64::from(u32::MAX)),
            "default_time_to_live" => (0, u64::from(MAX_TTL_SECONDS)),
            // A table needs at least one replica (`TableSchema::validate`).
            "replication_factor" => (1, u64::from(u8::MAX)),
            _ => {
                let msg = format!(
                    "Unknown property '{name}' (supported: gc_grace_seconds, default_time_to_live, replication_factor, read_repair, CLUSTERING ORDER BY)"
                );
                return Err(CqlError::invalid(property.name.pos, msg));
            }
        };
        let value = match &property.value {
            Term::Literal { kind: ast::LiteralKind::Integer, text, .. } => {
                text.parse::<u64>().ok().filter(|v| (min..=max).contains(v))
            }
            _ => None,
        };
        let Some(value) = value else {
            let msg = format!("Invalid value for property '{name}': expected an integer from {min} to {max}");
            return Err(CqlError::invalid(property.value.pos(), msg));
        };
        // Each value is at most its field's maximum, checked above.
        match name {
            "gc_grace_seconds" => options.gc_grace_seconds = value as u32,
            "default_time_to_live" => options.default_ttl_seconds = value as u32,
            _ => options.replication_factor = value as u8,
        }
    }
    let schema = TableSchema { id: 0, name: create.name.text.clone(), partition_key, clustering, columns, options };
    schema.validate().map_err(|e| CqlError::invalid(create.name.pos, e.to_string()))?;
    Ok(schema)
}

/// The bound values of a statement, checked against the markers' types.
struct BoundValues<'a> {
    values: &'a [Option<Value>],
    markers: &'a [BindSpec],
}

impl BoundValues<'_> {
    fn value(&self, op: &Operand) -> Option<Value> {
        match op {
            Operand::Value(v) => v.clone(),
            Operand::Marker(i) => self.values[*i].clone(),
        }
    }

    /// A value that may not be null (`what` names the column or role).
    fn non_null(&self, op: &Operand, what: &str) -> Result<Value, CqlError> {
        self.value(op).ok_or_else(|| {
            let name = match op {
                Operand::Marker(i) => self.markers[*i].name.as_str(),
                Operand::Value(_) => what,
            };
            CqlError::invalid_value(format!("Invalid null value for {name}"))
        })
    }

    fn bigint(&self, op: &Operand, what: &str) -> Result<i64, CqlError> {
        match self.non_null(op, what)? {
            Value::BigInt(v) => Ok(v),
            other => Err(CqlError::invalid_value(format!("{what} must be a bigint, got {other}"))),
        }
    }

    fn int(&self, op: &Operand, what: &str) -> Result<i32, CqlError> {
        match self.non_null(op, what)? {
            Value::Int(v) => Ok(v),
            other => Err(CqlError::invalid_value(format!("{what} must be an int, got {other}"))),
        }
    }

    /// The partition key values the per-column alternatives make (their cartesian product),
    /// each combination once, in the order given.
    fn partition_values(&self, schema: &TableSchema, columns: &[Vec<Operand>]) -> Result<Vec<Vec<Value>>, CqlError> {
        let mut combos: Vec<Vec<Value>> = vec![Vec::new()];
        for (def, alternatives) in schema.partition_key.iter().zip(columns) {
            let values = alternatives.iter().map(|op| self.non_null(op, &def.name)).collect::<Result<Vec<_>, _>>()?;
            if combos.len() * values.len() > MAX_IN_PARTITIONS {
                return Err(CqlError::invalid_value(format!(
                    "IN restrictions select more than {MAX_IN_PARTITIONS} partitions"
                )));
            }
            combos = combos
                .iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| prefix.iter().cloned().chain(std::iter::once(v.clone())).collect())
                })
                .collect();
        }
        let mut distinct: Vec<Vec<Value>> = Vec::with_capacity(combos.len());
        for combo in combos {
            if !distinct.contains(&combo) {
                distinct.push(combo);
            }
        }
        Ok(distinct)
    }

    /// Every partition key the alternatives make, each once, in the order given.
    fn partition_keys(&self, schema: &TableSchema, columns: &[Vec<Operand>]) -> Result<Vec<PartitionKey>, CqlError> {
        let mut keys: Vec<PartitionKey> = Vec::new();
        for values in self.partition_values(schema, columns)? {
            let key = PartitionKey::from_values(schema, &values).map_err(|e| CqlError::invalid_value(e.to_string()))?;
            check_not_empty(&key)?;
            keys.push(key);
        }
        Ok(keys)
    }

    fn ttl(&self, op: &Operand) -> Result<u32, CqlError> {
        let ttl = self.int(op, "[ttl]")?;
        if ttl < 0 {
            return Err(CqlError::invalid_value(format!("A TTL must be greater or equal to 0, but was {ttl}")));
        }
        if ttl as u32 > MAX_TTL_SECONDS {
            return Err(CqlError::invalid_value(format!(
                "ttl is too large. requested ({ttl}) maximum ({MAX_TTL_SECONDS})"
            )));
        }
        Ok(ttl as u32)
    }
}

impl WriteTemplate {
    /// Appends the writes of this statement (one per partition key) to `out`.
    fn bind(&self, b: &BoundValues<'_>, out: &mut Vec<Write>) -> Result<(), CqlError> {
        let schema = &self.schema;
        let clustering = schema
            .clustering
            .iter()
            .zip(&self.clustering)
            .map(|(c, op)| b.non_null(op, &c.column.name))
            .collect::<Result<Vec<_>, _>>()?;
        let ttl = match &self.ttl {
            Some(op) => b.ttl(op)?,
            None => schema.options.default_ttl_seconds,
        };
        let invalid = |e: shards::mutation::WriteError| CqlError::invalid_value(e.to_string());
        for partition in b.partition_values(schema, &self.partition)? {
            let write = match &self.action {
                WriteAction::Upsert { columns, insert } => {
                    let values: Vec<(&str, Option<Value>)> =
                        columns.iter().map(|(name, op)| (name.as_str(), b.value(op))).collect();
                    Write::upsert(schema, &partition, &clustering, &values, ttl, *insert).map_err(invalid)?
                }
                WriteAction::Delete { columns } => {
                    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
                    Write::delete(schema, &partition, &clustering, &names).map_err(invalid)?
                }
            };
            check_not_empty(&write.key)?;
            out.push(write);
        }
        Ok(())
    }
}

/// Cassandra refuses an empty partition key: it would have the minimum token, which no real
/// key may have.
fn check_not_empty(key: &PartitionKey) -> Result<(), CqlError> {
    if key.bytes().is_empty() {
        return Err(CqlError::invalid_value("Key may not be empty"));
    }
    Ok(())
}

impl SelectTemplate {
    fn bind(&self, b: &BoundValues<'_>) -> Result<Plan, CqlError> {
        let schema = &self.schema;
        let source = match &self.source {
            SourceTemplate::Partitions { partition, clustering } => {
                let keys = b.partition_keys(schema, partition)?;
                ReadSource::Partitions { keys, slice: clustering.bind(schema, b)? }
            }
            SourceTemplate::Tokens(bounds) => {
                let token = |op: &Operand| b.bigint(op, "partition key token");
                let start = match &bounds.lower {
                    None => MIN_TOKEN,
                    // (start, ...] holds `>= x` from x - 1; at the minimum token nothing is lost.
                    Some((op, inclusive)) => token(op)?.saturating_sub(i64::from(*inclusive)),
                };
                let end = match &bounds.upper {
                    None => Token::MAX,
                    Some((op, inclusive)) => token(op)?.saturating_sub(i64::from(!*inclusive)),
                };
                ReadSource::Tokens(TokenRange { start, end })
            }
        };
        let limit = match &self.limit {
            None => None,
            Some(op) => {
                let n = b.int(op, "[limit]")?;
                if n <= 0 {
                    return Err(CqlError::invalid_value(format!("LIMIT must be strictly positive, got {n}")));
                }
                Some(n as u32)
            }
        };
        Ok(Plan::Select(SelectPlan { schema: self.schema.clone(), source, projection: self.projection.clone(), limit }))
    }
}

impl ClusteringRestriction {
    /// The slice of rows the restriction selects. DESC columns are stored with inverted bytes,
    /// so a value range on one maps onto the reversed byte range.
    fn bind(&self, schema: &TableSchema, b: &BoundValues<'_>) -> Result<ClusteringSlice, CqlError> {
        let key_error = |e: shards::key::KeyError| CqlError::invalid_value(e.to_string());
        let mut eq = Vec::with_capacity(self.eq.len());
        for (op, c) in self.eq.iter().zip(&schema.clustering) {
            eq.push(b.non_null(op, &c.column.name)?);
        }
        let prefix = ClusteringKey::from_values(schema, &eq, false).map_err(key_error)?;
        let Some(range) = &self.range else {
            return Ok(if eq.is_empty() { ClusteringSlice::ALL } else { ClusteringSlice::prefix(prefix) });
        };
        let column = &schema.clustering[eq.len()];
        let open = if eq.is_empty() { Bound::Unbounded } else { Bound::Included(prefix) };
        let bound = |side: &Option<(Operand, bool)>| -> Result<Bound<ClusteringKey>, CqlError> {
            let Some((op, inclusive)) = side else { return Ok(open.clone()) };
            let mut values = eq.clone();
            values.push(b.non_null(op, &column.column.name)?);
            let key = ClusteringKey::from_values(schema, &values, false).map_err(key_error)?;
            Ok(if *inclusive { Bound::Included(key) } else { Bound::Excluded(key) })
        };
        let (lower, upper) = (bound(&range.lower)?, bound(&range.upper)?);
        Ok(match column.order {
            ClusteringOrder::Asc => ClusteringSlice { start: lower, end: upper },
            ClusteringOrder::Desc => ClusteringSlice { start: upper, end: lower },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cql::{parse_one, CqlErrorKind};
    use proptest::prelude::*;
    use wire::token::token_of;

    fn events() -> TableSchema {
        let col = |name: &str, ty| ColumnDef { name: name.into(), ty };
        TableSchema {
            id: 5,
            name: "events".into(),
            partition_key: vec![col("tenant", ColumnType::Text), col("day", ColumnType::Int)],
            clustering: vec![
                ClusteringColumn { column: col("at", ColumnType::Timestamp), order: ClusteringOrder::Desc },
                ClusteringColumn { column: col("seq", ColumnType::Int), order: ClusteringOrder::Asc },
            ],
            columns: vec![col("body", ColumnType::Text), col("score", ColumnType::Double)],
            options: TableOptions { default_ttl_seconds: 600, ..TableOptions::default() },
        }
    }

    fn kv() -> TableSchema {
        TableSchema {
            id: 6,
            name: "kv".into(),
            partition_key: vec![ColumnDef { name: "k".into(), ty: ColumnType::Text }],
            clustering: vec![],
            columns: vec![ColumnDef { name: "v".into(), ty: ColumnType::Int }],
            options: TableOptions::default(),
        }
    }

    fn tables(name: &str) -> Option<Arc<TableSchema>> {
        [events(), kv()].into_iter().find(|t| t.name.eq_ignore_ascii_case(name)).map(Arc::new)
    }

    fn planned(text: &str) -> Result<Plan, CqlError> {
        plan(&parse_one(text).unwrap_or_else(|e| panic!("{e}")), &tables)
    }

    fn ok(text: &str) -> Plan {
        planned(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn invalid(text: &str) -> String {
        let e = planned(text).expect_err(text);
        assert_eq!(e.kind, CqlErrorKind::Invalid, "{e}");
        e.to_string()
    }

    fn writes(plan: Plan) -> WritePlan {
        match plan {
            Plan::Write(w) => w,
            other => panic!("not a write: {other:?}"),
        }
    }

    fn select(plan: Plan) -> SelectPlan {
        match plan {
            Plan::Select(s) => s,
            other => panic!("not a select: {other:?}"),
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn insert_becomes_an_upsert_with_ttl_and_timestamp() {
        let w = writes(ok("INSERT INTO events (tenant, day, at, seq, body) VALUES ('a', 1, '2024-01-02', 3, 'x') \
                           USING TTL 10 AND TIMESTAMP 99"));
        let expected = Write::upsert(
            &events(),
            &[text("a"), Value::Int(1)],
            &[Value::Timestamp(1_704_153_600_000), Value::Int(3)],
            &[("body", Some(text("x")))],
            10,
            true,
        )
        .unwrap();
        assert_eq!(w, WritePlan { writes: vec![expected], timestamp: Some(99), batch: None });

        let default_ttl = writes(ok("INSERT INTO events (tenant, day, at, seq) VALUES ('a', 1, 0, 3)"));
        let expected = Write::upsert(
            &events(),
            &[text("a"), Value::Int(1)],
            &[Value::Timestamp(0), Value::Int(3)],
            &[],
            600,
            true,
        );
        assert_eq!(default_ttl.writes, vec![expected.unwrap()]);
        assert_eq!(default_ttl.timestamp, None);
        let explicit_zero = writes(ok("INSERT INTO events (tenant, day, at, seq) VALUES ('a', 1, 0, 3) USING TTL 0"));
        assert!(matches!(explicit_zero.writes[0].op, shards::mutation::WriteOp::Insert { ttl: 0, .. }));
    }

    #[test]
    fn insert_errors_name_the_column() {
        assert_eq!(invalid("INSERT INTO nope (k) VALUES ('a')"), "line 1:13 unconfigured table nope");
        assert_eq!(invalid("INSERT INTO kv (k, x) VALUES ('a', 1)"), "line 1:20 Undefined column name x in table kv");
        assert_eq!(
            invalid("INSERT INTO kv (k, v) VALUES ('a', 'abc')"),
            "line 1:36 Invalid STRING constant ('abc') for \"v\" of type int"
        );
        assert_eq!(invalid("INSERT INTO kv (v) VALUES (1)"), "line 1:13 Some partition key parts are missing: k");
        assert_eq!(
            invalid("INSERT INTO events (tenant, day, seq) VALUES ('a', 1, 2)"),
            "line 1:13 Some clustering keys are missing: at"
        );
        assert!(invalid("INSERT INTO kv (k, v, V) VALUES ('a', 1, 2)").contains("duplicates"));
        assert!(invalid("INSERT INTO kv (k, v) VALUES ('a')").contains("Unmatched column names/values"));
        assert_eq!(invalid("INSERT INTO kv (k, v) VALUES ('', 1)"), "Key may not be empty");
        assert_eq!(invalid("INSERT INTO kv (k, v) VALUES (null, 1)"), "Invalid null value for k");
        assert_eq!(
            invalid("INSERT INTO kv (k, v) VALUES ('a', 1) USING TTL -1"),
            "A TTL must be greater or equal to 0, but was -1"
        );
        assert!(invalid("INSERT INTO kv (k, v) VALUES ('a', 1) USING TTL 999999999").starts_with("ttl is too large"));
    }

    #[test]
    fn update_and_delete_become_writes() {
        let pk = [text("a"), Value::Int(1)];
        let ck = [Value::Timestamp(5), Value::Int(3)];
        let w = writes(ok("UPDATE events USING TTL 7 SET body = 'x', score = null WHERE tenant = 'a' AND day = 1 AND at = 5 AND seq = 3"));
        let expected = Write::upsert(&events(), &pk, &ck, &[("body", Some(text("x"))), ("score", None)], 7, false);
        assert_eq!(w.writes, vec![expected.unwrap()]);

        let row =
            writes(ok("DELETE FROM events USING TIMESTAMP 3 WHERE tenant = 'a' AND day = 1 AND at = 5 AND seq = 3"));
        assert_eq!(row.writes, vec![Write::delete(&events(), &pk, &ck, &[]).unwrap()]);
        assert_eq!(row.timestamp, Some(3));
        let partition = writes(ok("DELETE FROM events WHERE tenant = 'a' AND day = 1"));
        assert_eq!(partition.writes, vec![Write::delete(&events(), &pk, &[], &[]).unwrap()]);
        let cells = writes(ok("DELETE body FROM events WHERE tenant = 'a' AND day = 1 AND at = 5 AND seq = 3"));
        assert_eq!(cells.writes, vec![Write::delete(&events(), &pk, &ck, &["body"]).unwrap()]);
        let two = writes(ok("DELETE FROM kv WHERE k IN ('a', 'b', 'a')"));
        assert_eq!(two.writes.len(), 2, "IN writes each distinct partition once: {two:?}");

        assert_eq!(
            invalid("UPDATE events SET seq = 1 WHERE tenant = 'a' AND day = 1 AND at = 5 AND seq = 3"),
            "line 1:19 PRIMARY KEY part seq found in SET part"
        );
        assert!(invalid("UPDATE events SET body = 'x' WHERE tenant = 'a' AND day = 1 AND at = 5")
            .ends_with("Some clustering keys are missing: seq"));
        assert!(invalid("UPDATE events SET body = 'x' WHERE tenant = 'a' AND at = 5 AND seq = 1")
            .ends_with("Some partition key parts are missing: day"));
        assert!(invalid("UPDATE events SET body = 'x' WHERE tenant = 'a' AND day = 1 AND at > 5 AND seq = 1")
            .contains("Slice restrictions are not supported"));
        assert!(invalid("UPDATE kv SET v = 1 WHERE k = 'a' AND v = 2")
            .contains("Non PRIMARY KEY columns found in where clause: v"));
        assert!(invalid("DELETE FROM events WHERE tenant = 'a' AND day = 1 AND at = 5")
            .contains("Range deletions are not supported"));
        assert!(invalid("DELETE body FROM events WHERE tenant = 'a' AND day = 1")
            .contains("Some clustering keys are missing: at, seq"));
        assert!(invalid("DELETE tenant FROM events WHERE tenant = 'a' AND day = 1")
            .contains("should not be a PRIMARY KEY part"));
        assert!(invalid("DELETE FROM kv USING TTL 5 WHERE k = 'a'").contains("TTL cannot be given on DELETE"));
        assert!(invalid("UPDATE kv SET v = 1 WHERE token(k) > 5").contains("token function cannot be used"));
    }

    #[test]
    fn batches_collect_writes_under_one_timestamp() {
        let w = writes(ok("BEGIN UNLOGGED BATCH USING TIMESTAMP 77 INSERT INTO kv (k, v) VALUES ('a', 1); \
                           DELETE FROM kv WHERE k = 'b'; APPLY BATCH"));
        assert_eq!(w.batch, Some(BatchKind::Unlogged));
        assert_eq!(w.timestamp, Some(77));
        assert_eq!(
            w.writes,
            vec![
                Write::upsert(&kv(), &[text("a")], &[], &[("v", Some(Value::Int(1)))], 0, true).unwrap(),
                Write::delete(&kv(), &[text("b")], &[], &[]).unwrap(),
            ]
        );
        assert!(invalid("BEGIN BATCH INSERT INTO kv (k, v) VALUES ('a', 1) USING TIMESTAMP 5 APPLY BATCH")
            .contains("set it on the BATCH"));
    }

    #[test]
    fn select_by_partition_with_clustering_prefix_and_projection() {
        let s = select(ok("SELECT body, writetime(body), ttl(score) AS left, token(tenant, day) FROM events \
                           WHERE tenant = 'a' AND day = 1 AND at = 5 LIMIT 3"));
        let key = PartitionKey::from_values(&events(), &[text("a"), Value::Int(1)]).unwrap();
        let prefix = ClusteringKey::from_values(&events(), &[Value::Timestamp(5)], false).unwrap();
        assert_eq!(s.source, ReadSource::Partitions { keys: vec![key], slice: ClusteringSlice::prefix(prefix) });
        assert_eq!(s.limit, Some(3));
        let column = |name: &str, ty, source| ResultColumn { name: name.into(), ty, source };
        assert_eq!(
            s.projection,
            Projection::Columns(vec![
                column("body", ColumnType::Text, ColumnSource::Regular(0)),
                column("writetime(body)", ColumnType::BigInt, ColumnSource::WriteTime(0)),
                column("left", ColumnType::Int, ColumnSource::Ttl(1)),
                column("system.token(tenant, day)", ColumnType::BigInt, ColumnSource::Token),
            ])
        );
        let all = select(ok("SELECT * FROM events WHERE tenant = 'a' AND day = 1"));
        let names: Vec<_> = match &all.projection {
            Projection::Columns(c) => c.iter().map(|c| c.name.as_str()).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(names, vec!["tenant", "day", "at", "seq", "body", "score"]);
        assert!(matches!(&all.source, ReadSource::Partitions { slice, .. } if *slice == ClusteringSlice::ALL));
        let count = select(ok("SELECT count(*) FROM kv"));
        assert_eq!(count.projection, Projection::Count { name: "count".into() });
        assert_eq!(count.source, ReadSource::Tokens(TokenRange::FULL));
        let many = select(ok("SELECT * FROM kv WHERE k IN ('a', 'b', 'a')"));
        assert!(matches!(&many.source, ReadSource::Partitions { keys, .. } if keys.len() == 2));
    }

    #[test]
    fn bad_selects_are_invalid_with_reasons() {
        assert!(
            invalid("SELECT * FROM events WHERE tenant = 'a'").contains("Partition key parts: day must be restricted")
        );
        assert!(invalid("SELECT * FROM events WHERE tenant = 'a' AND day > 1").contains("Only EQ and IN relation"));
        assert_eq!(
            invalid("SELECT * FROM events WHERE tenant = 'a' AND day = 1 AND seq = 1"),
            "line 1:57 PRIMARY KEY column \"seq\" cannot be restricted as preceding column \"at\" is not restricted"
        );
        assert!(invalid("SELECT * FROM events WHERE tenant = 'a' AND day = 1 AND at > 1 AND seq = 1")
            .contains("Clustering column \"seq\" cannot be restricted (preceding column \"at\" is restricted by a non-EQ relation)"));
        assert!(invalid("SELECT * FROM events WHERE tenant = 'a' AND day = 1 AND at = 1 AND at = 2")
            .contains("at cannot be restricted by more than one relation if it includes an Equal"));
        assert!(invalid("SELECT * FROM events WHERE tenant = 'a' AND day = 1 AND at > 1 AND at >= 2")
            .contains("More than one restriction was found for the start bound on at"));
        assert!(invalid("SELECT * FROM events WHERE at > 1").contains("data filtering"));
        assert!(invalid("SELECT * FROM kv WHERE v = 1").contains("Non PRIMARY KEY columns"));
        assert!(invalid("SELECT * FROM kv WHERE k = 'a' AND token(k) > 1")
            .contains("both a normal relation and a token relation"));
        assert!(
            invalid("SELECT * FROM events WHERE token(day, tenant) > 1").contains("partition key order: tenant, day")
        );
        assert!(invalid("SELECT writetime(k) FROM kv")
            .contains("Cannot use selection function writetime on PRIMARY KEY part k"));
        assert!(invalid("SELECT nope FROM kv").contains("Undefined column name nope"));
        assert!(invalid("SELECT * FROM kv LIMIT 0").contains("LIMIT must be strictly positive"));
        assert!(invalid("SELECT * FROM events WHERE tenant = 'a' AND day = 1 AND at IN (1, 2)")
            .contains("IN restrictions on clustering"));
    }

    #[test]
    fn token_restrictions_map_onto_half_open_ranges() {
        let range = |wh: &str| match select(ok(&format!("SELECT * FROM kv WHERE {wh}"))).source {
            ReadSource::Tokens(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(range("token(k) > -5 AND token(k) <= 10"), TokenRange { start: -5, end: 10 });
        assert_eq!(range("token(k) >= -5 AND token(k) < 10"), TokenRange { start: -6, end: 9 });
        assert_eq!(range("token(k) = 7"), TokenRange { start: 6, end: 7 });
        assert_eq!(range("token(k) > 100"), TokenRange { start: 100, end: i64::MAX });
        assert_eq!(range("token(k) <= 100"), TokenRange { start: i64::MIN, end: 100 });
        assert!(range("token(k) > 10 AND token(k) < 5").is_empty());
        assert!(range(&format!("token(k) < {}", i64::MIN)).is_empty());
        assert_eq!(range(&format!("token(k) >= {}", i64::MIN)), TokenRange::FULL);
        assert!(invalid("SELECT * FROM kv WHERE token(k) > 1 AND token(k) > 2").contains("start bound on token"));
    }

    #[test]
    fn bind_markers_are_typed_and_bound_like_literals() {
        let statement = parse_one(
            "INSERT INTO events (tenant, day, at, seq, body) VALUES (?, ?, ?, 3, ?) USING TTL ? AND TIMESTAMP ?",
        )
        .unwrap();
        let prepared = prepare(&statement, &tables).unwrap();
        let spec = |name: &str, ty| BindSpec { name: name.into(), ty };
        assert_eq!(
            prepared.markers(),
            &[
                spec("tenant", ColumnType::Text),
                spec("day", ColumnType::Int),
                spec("at", ColumnType::Timestamp),
                spec("body", ColumnType::Text),
                spec("[ttl]", ColumnType::Int),
                spec("[timestamp]", ColumnType::BigInt),
            ]
        );
        let values = [
            Some(text("a")),
            Some(Value::Int(1)),
            Some(Value::Timestamp(9)),
            Some(text("x")),
            Some(Value::Int(10)),
            Some(Value::BigInt(99)),
        ];
        let literal = ok(
            "INSERT INTO events (tenant, day, at, seq, body) VALUES ('a', 1, 9, 3, 'x') USING TTL 10 AND TIMESTAMP 99",
        );
        assert_eq!(prepared.bind(&values).unwrap(), literal);

        let e = prepared.bind(&values[..2]).unwrap_err();
        assert_eq!(e.to_string(), "Invalid amount of bind variables: expected 6, received 2");
        let mut wrong = values.clone();
        wrong[1] = Some(text("one"));
        assert_eq!(
            prepared.bind(&wrong).unwrap_err().to_string(),
            "bind variable 2 (\"day\") must be a int value, got a text value"
        );
        let mut null_key = values.clone();
        null_key[0] = None;
        assert_eq!(prepared.bind(&null_key).unwrap_err().to_string(), "Invalid null value for tenant");
        assert!(planned("SELECT * FROM kv WHERE k = ?").unwrap_err().to_string().contains("expected 1, received 0"));

        let select = prepare(&parse_one("SELECT v FROM kv WHERE token(k) > ? LIMIT ?").unwrap(), &tables).unwrap();
        assert_eq!(
            select.markers(),
            &[spec("partition key token", ColumnType::BigInt), spec("[limit]", ColumnType::Int)]
        );
        assert!(matches!(select.projection(), Some(Projection::Columns(c)) if c[0].name == "v"));
        let bound = select.bind(&[Some(Value::BigInt(4)), Some(Value::Int(2))]).unwrap();
        assert_eq!(bound, ok("SELECT v FROM kv WHERE token(k) > 4 LIMIT 2"));
    }

    #[test]
    fn pk_indexes_name_the_markers_of_the_partition_key_in_key_order() {
        let pk = |text: &str| prepare(&parse_one(text).unwrap(), &tables).unwrap().pk_indexes();
        assert_eq!(pk("INSERT INTO kv (v, k) VALUES (?, ?)"), [1]);
        assert_eq!(pk("SELECT v FROM kv WHERE k = ?"), [0]);
        // Key order, whatever the order of the restrictions.
        assert_eq!(pk("SELECT body FROM events WHERE day = ? AND tenant = ?"), [1, 0]);
        assert_eq!(pk("UPDATE events SET body = ? WHERE tenant = ? AND day = ? AND at = 1 AND seq = 2"), [1, 2]);
        // Not routable by the client: a literal in the key, IN, a token range, several writes.
        assert!(pk("SELECT body FROM events WHERE tenant = 'a' AND day = ?").is_empty());
        assert!(pk("SELECT v FROM kv WHERE k IN (?, ?)").is_empty());
        assert!(pk("SELECT v FROM kv WHERE token(k) > ?").is_empty());
        assert!(pk(
            "BEGIN BATCH INSERT INTO kv (k, v) VALUES (?, 1); INSERT INTO kv (k, v) VALUES (?, 2); APPLY BATCH"
        )
        .is_empty());
    }

    #[test]
    fn create_table_builds_a_validated_schema() {
        let no_tables = |_: &str| -> Option<Arc<TableSchema>> { None };
        let statement = parse_one(
            "CREATE TABLE events (tenant text, day int, at timestamp, seq int, body text, score double, \
             PRIMARY KEY ((tenant, day), at, seq)) WITH CLUSTERING ORDER BY (at DESC) AND default_time_to_live = 600",
        )
        .unwrap();
        let Plan::CreateTable { schema, if_not_exists } = plan(&statement, &no_tables).unwrap() else {
            panic!("not a CREATE TABLE")
        };
        assert!(!if_not_exists);
        assert_eq!(schema, TableSchema { id: 0, ..events() });
        let create = |text: &str| plan(&parse_one(text).unwrap(), &no_tables).unwrap_err().to_string();
        assert!(create("CREATE TABLE t (k int, PRIMARY KEY (x))")
            .contains("Unknown definition x referenced in PRIMARY KEY"));
        assert!(create("CREATE TABLE t (k int, c int, PRIMARY KEY (k, c, k))").contains("Duplicate column k"));
        assert!(create(
            "CREATE TABLE t (k int, c int, d int, PRIMARY KEY (k, c, d)) WITH CLUSTERING ORDER BY (d DESC)"
        )
        .contains("must match that of the clustering columns"));
        assert!(create("CREATE TABLE t (k int PRIMARY KEY) WITH CLUSTERING ORDER BY (k DESC)")
            .contains("Only clustering key columns"));
        assert!(
            create("CREATE TABLE t (k int PRIMARY KEY) WITH compaction = 1").contains("Unknown property 'compaction'")
        );
        for rf in [0, 256] {
            let text = format!("CREATE TABLE t (k int PRIMARY KEY) WITH replication_factor = {rf}");
            assert!(create(&text).contains("'replication_factor': expected an integer from 1 to 255"), "{rf}");
        }
        assert!(create("CREATE TABLE t (k int PRIMARY KEY) WITH gc_grace_seconds = 'x'")
            .contains("Invalid value for property"));
        assert!(create("CREATE TABLE t (k int PRIMARY KEY) WITH read_repair = 'sometimes'")
            .contains("expected 'BLOCKING', 'BACKGROUND' or 'NONE'"));
        assert!(create("CREATE TABLE t (k int PRIMARY KEY) WITH read_repair = 1").contains("Invalid value"));
        for (text, mode) in [("'none'", ReadRepair::None), ("'BACKGROUND'", ReadRepair::Background)] {
            let statement =
                format!("CREATE TABLE t (k int PRIMARY KEY) WITH read_repair = {text} AND gc_grace_seconds = 5");
            let Plan::CreateTable { schema, .. } = ok(&statement) else { panic!("not a CREATE TABLE") };
            assert_eq!((schema.options.read_repair, schema.options.gc_grace_seconds), (mode, 5));
        }
        let Plan::CreateTable { schema, .. } = ok("CREATE TABLE t (k int PRIMARY KEY)") else {
            panic!("not a CREATE TABLE")
        };
        assert_eq!(schema.options.read_repair, ReadRepair::Blocking, "the default, as in Cassandra 4");
        assert!(create("CREATE TABLE t (k int PRIMARY KEY, K text)").contains("Multiple definition of identifier k"));
        // An existing name plans fine: the executor answers AlreadyExists when it runs.
        assert!(matches!(ok("CREATE TABLE kv (k int PRIMARY KEY)"), Plan::CreateTable { if_not_exists: false, .. }));
        assert!(matches!(
            ok("CREATE TABLE IF NOT EXISTS kv (k int PRIMARY KEY)"),
            Plan::CreateTable { if_not_exists: true, .. }
        ));
        assert!(invalid("TRUNCATE nope").contains("unconfigured table nope"));
        assert!(invalid("DROP TABLE nope").contains("unconfigured table nope"));
        assert_eq!(ok("DROP TABLE IF EXISTS nope"), Plan::DropTable { table: "nope".into(), if_exists: true });
        assert!(matches!(ok("DESCRIBE TABLE Events"), Plan::DescribeTable { schema } if schema.name == "events"));
    }

    fn op_strategy() -> impl Strategy<Value = Operator> {
        proptest::sample::select(vec![Operator::Eq, Operator::Lt, Operator::Le, Operator::Gt, Operator::Ge])
    }

    fn holds(op: Operator, a: i64, b: i64) -> bool {
        match op {
            Operator::Eq => a == b,
            Operator::Lt => a < b,
            Operator::Le => a <= b,
            Operator::Gt => a > b,
            Operator::Ge => a >= b,
        }
    }

    const VALID: [&str; 6] = [
        "INSERT INTO events (tenant, day, at, seq, body) VALUES ('a', 1, '2024-01-02', 3, 'x') USING TTL 10",
        "UPDATE events SET body = ? WHERE tenant = 'a' AND day = 1 AND at = 5 AND seq = 3",
        "DELETE body FROM events WHERE tenant = 'a' AND day = 1 AND at = 5 AND seq = 3",
        "SELECT body, writetime(body), token(tenant, day) FROM events WHERE tenant = 'a' AND day = 1 AND at > 5 LIMIT 3",
        "SELECT count(*) FROM kv WHERE token(k) > 5 AND token(k) <= ?",
        "BEGIN BATCH INSERT INTO kv (k, v) VALUES (?, 1); DELETE FROM kv WHERE k IN ('a', 'b'); APPLY BATCH",
    ];

    proptest! {
        #[test]
        fn mutated_statements_never_panic_the_planner(
            which in 0..VALID.len(),
            edits in proptest::collection::vec((any::<usize>(), proptest::sample::select(vec![
                "k", "v", "at", "seq", "day", "tenant", "body", "score", "=", ">", "<=", "?", "null", "'x'", "''",
                "1", "-1", "2147483648", "1.5", "0x00", "true", "token(k)", "AND", ",", "(", ")", "IN", "ttl",
            ])), 1..4),
            values in proptest::collection::vec(proptest::option::of(prop_oneof![
                Just(Value::Int(-1)), Just(Value::Int(1)), Just(Value::BigInt(i64::MIN)), Just(Value::Text(String::new())),
                Just(Value::Text("a".into())), Just(Value::Timestamp(3)), Just(Value::Double(f64::NAN)),
            ]), 0..4),
        ) {
            let mut words: Vec<String> = VALID[which].split(' ').map(str::to_owned).collect();
            for (at, word) in edits {
                let len = words.len();
                words[at % len] = word.to_owned();
            }
            let text = words.join(" ");
            if let Ok(statement) = parse_one(&text) {
                if let Ok(prepared) = prepare(&statement, &tables) {
                    let _ = prepared.bind(&values);
                    let typed: Vec<Option<Value>> =
                        prepared.markers().iter().map(|m| values.iter().flatten().find(|v| v.column_type() == m.ty).cloned()).collect();
                    let _ = prepared.bind(&typed);
                }
            }
        }

        #[test]
        fn token_ranges_hold_exactly_the_tokens_the_relation_accepts(
            op in op_strategy(),
            x in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), -3i64..3],
            keys in proptest::collection::vec("[a-z]{1,6}", 1..20),
        ) {
            let ReadSource::Tokens(range) = select(ok(&format!("SELECT * FROM kv WHERE token(k) {} {x}", op.symbol()))).source else {
                panic!("not a token range")
            };
            // No real key has the minimum token (an empty key would; keys may not be empty).
            let tokens = keys.iter().map(|k| token_of(k.as_bytes())).chain([x, x.saturating_add(1), x.saturating_sub(1), i64::MAX]);
            for t in tokens.filter(|t| *t != i64::MIN) {
                prop_assert_eq!(range.contains(t), holds(op, t, x), "token {} range {:?}", t, range);
            }
        }

        #[test]
        fn clustering_slices_select_exactly_the_rows_the_relations_accept(
            at_op in proptest::option::of(op_strategy()),
            at_x in -3i64..3,
            upper in proptest::option::of((prop_oneof![Just(Operator::Lt), Just(Operator::Le)], -3i64..3)),
            seq_eq in any::<bool>(),
        ) {
            // `at` is DESC: its values are stored with inverted bytes.
            let mut relations = String::from("tenant = 'a' AND day = 1");
            let mut accepts: Vec<Box<dyn Fn(i64, i64) -> bool>> = Vec::new();
            if let Some(op) = at_op {
                relations.push_str(&format!(" AND at {} {at_x}", op.symbol()));
                accepts.push(Box::new(move |at, _| holds(op, at, at_x)));
                if let (Some((up, y)), false) = (upper, op == Operator::Eq) {
                    if matches!(op, Operator::Gt | Operator::Ge) {
                        relations.push_str(&format!(" AND at {} {y}", up.symbol()));
                        accepts.push(Box::new(move |at, _| holds(up, at, y)));
                    }
                }
                if op == Operator::Eq && seq_eq {
                    relations.push_str(" AND seq = 1");
                    accepts.push(Box::new(|_, seq| seq == 1));
                }
            }
            let plan = select(ok(&format!("SELECT * FROM events WHERE {relations}")));
            let ReadSource::Partitions { slice, .. } = plan.source else { panic!("not a partition read") };
            for at in -4i64..4 {
                for seq in 0..3 {
                    let key = ClusteringKey::from_values(&events(), &[Value::Timestamp(at), Value::Int(seq)], true).unwrap();
                    let expected = accepts.iter().all(|f| f(at, i64::from(seq)));
                    prop_assert_eq!(slice.contains(&key), expected, "{} at={} seq={} {:?}", relations, at, seq, slice);
                }
            }
        }
    }
}

//! Responses (spec 4.2 and 9): typed messages and their body encodings.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::codec::DecodeError;

use super::notation::{Consistency, Reader, StringMultimap, Writer, MAX_TYPE_DEPTH};
use super::Opcode;

/// A server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Error(ErrorBody),
    Ready,
    /// The full class name of the authenticator in use.
    Authenticate {
        authenticator: String,
    },
    /// The STARTUP options and their values; drivers need `CQL_VERSION` and `COMPRESSION`.
    Supported(StringMultimap),
    Result(QueryResult),
    Event(Event),
    AuthChallenge(Option<Vec<u8>>),
    AuthSuccess(Option<Vec<u8>>),
}

impl Response {
    pub fn opcode(&self) -> Opcode {
        match self {
            Response::Error(_) => Opcode::Error,
            Response::Ready => Opcode::Ready,
            Response::Authenticate { .. } => Opcode::Authenticate,
            Response::Supported(_) => Opcode::Supported,
            Response::Result(_) => Opcode::Result,
            Response::Event(_) => Opcode::Event,
            Response::AuthChallenge(_) => Opcode::AuthChallenge,
            Response::AuthSuccess(_) => Opcode::AuthSuccess,
        }
    }
}

/// An ERROR: its code (with the code's extra body) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

impl ErrorBody {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorBody {
        ErrorBody { kind, message: message.into() }
    }
}

/// What kind of write timed out or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteType {
    Simple,
    Batch,
    UnloggedBatch,
    Counter,
    BatchLog,
    /// The Paxos phase of a lightweight transaction (sent by Cassandra since 2.0).
    Cas,
    /// A materialized view update (Cassandra 3.0+).
    View,
    /// A CDC write refused (Cassandra 3.8+).
    Cdc,
}

impl WriteType {
    pub const ALL: [WriteType; 8] = [
        WriteType::Simple,
        WriteType::Batch,
        WriteType::UnloggedBatch,
        WriteType::Counter,
        WriteType::BatchLog,
        WriteType::Cas,
        WriteType::View,
        WriteType::Cdc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WriteType::Simple => "SIMPLE",
            WriteType::Batch => "BATCH",
            WriteType::UnloggedBatch => "UNLOGGED_BATCH",
            WriteType::Counter => "COUNTER",
            WriteType::BatchLog => "BATCH_LOG",
            WriteType::Cas => "CAS",
            WriteType::View => "VIEW",
            WriteType::Cdc => "CDC",
        }
    }

    pub fn from_name(name: &str) -> Option<WriteType> {
        WriteType::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// An error code and its extra body (spec section 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    Server,
    Protocol,
    /// Authentication failed (0x0100).
    BadCredentials,
    Unavailable {
        consistency: Consistency,
        required: i32,
        alive: i32,
    },
    Overloaded,
    IsBootstrapping,
    TruncateError,
    WriteTimeout {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        write_type: WriteType,
    },
    ReadTimeout {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        data_present: bool,
    },
    ReadFailure {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        failures: i32,
        data_present: bool,
    },
    FunctionFailure {
        keyspace: String,
        function: String,
        arg_types: Vec<String>,
    },
    WriteFailure {
        consistency: Consistency,
        received: i32,
        block_for: i32,
        failures: i32,
        write_type: WriteType,
    },
    Syntax,
    Unauthorized,
    Invalid,
    Config,
    /// CREATE of something that exists; `table` is empty for a keyspace.
    AlreadyExists {
        keyspace: String,
        table: String,
    },
    /// EXECUTE of an id this node does not know: the client prepares again.
    Unprepared {
        id: Vec<u8>,
    },
}

impl ErrorKind {
    pub fn code(&self) -> i32 {
        match self {
            ErrorKind::Server => 0x0000,
            ErrorKind::Protocol => 0x000A,
            ErrorKind::BadCredentials => 0x0100,
            ErrorKind::Unavailable { .. } => 0x1000,
            ErrorKind::Overloaded => 0x1001,
            ErrorKind::IsBootstrapping => 0x1002,
            ErrorKind::TruncateError => 0x1003,
            ErrorKind::WriteTimeout { .. } => 0x1100,
            ErrorKind::ReadTimeout { .. } => 0x1200,
            ErrorKind::ReadFailure { .. } => 0x1300,
            ErrorKind::FunctionFailure { .. } => 0x1400,
            ErrorKind::WriteFailure { .. } => 0x1500,
            ErrorKind::Syntax => 0x2000,
            ErrorKind::Unauthorized => 0x2100,
            ErrorKind::Invalid => 0x2200,
            ErrorKind::Config => 0x2300,
            ErrorKind::AlreadyExists { .. } => 0x2400,
            ErrorKind::Unprepared { .. } => 0x2500,
        }
    }

    fn encode(&self, w: &mut Writer<'_>) {
        match self {
            ErrorKind::Unavailable { consistency, required, alive } => {
                w.consistency(*consistency).int(*required).int(*alive);
            }
            ErrorKind::WriteTimeout { consistency, received, block_for, write_type } => {
                w.consistency(*consistency).int(*received).int(*block_for).string(write_type.name());
            }
            ErrorKind::ReadTimeout { consistency, received, block_for, data_present } => {
                w.consistency(*consistency).int(*received).int(*block_for).byte(u8::from(*data_present));
            }
            ErrorKind::ReadFailure { consistency, received, block_for, failures, data_present } => {
                w.consistency(*consistency).int(*received).int(*block_for).int(*failures).byte(u8::from(*data_present));
            }
            ErrorKind::FunctionFailure { keyspace, function, arg_types } => {
                w.string(keyspace).string(function).string_list(arg_types);
            }
            ErrorKind::WriteFailure { consistency, received, block_for, failures, write_type } => {
                w.consistency(*consistency).int(*received).int(*block_for).int(*failures).string(write_type.name());
            }
            ErrorKind::AlreadyExists { keyspace, table } => {
                w.string(keyspace).string(table);
            }
            ErrorKind::Unprepared { id } => {
                w.short_bytes(id);
            }
            _ => {}
        }
    }

    fn decode(code: i32, at: usize, r: &mut Reader<'_>) -> Result<ErrorKind, DecodeError> {
        let write_type = |r: &mut Reader<'_>| {
            let at = r.offset();
            let name = r.string()?;
            WriteType::from_name(name).ok_or_else(|| r.invalid(at, "write type", format!("unknown {name:?}")))
        };
        Ok(match code {
            0x0000 => ErrorKind::Server,
            0x000A => ErrorKind::Protocol,
            0x0100 => ErrorKind::BadCredentials,
            0x1000 => ErrorKind::Unavailable { consistency: r.consistency()?, required: r.int()?, alive: r.int()? },
            0x1001 => ErrorKind::Overloaded,
            0x1002 => ErrorKind::IsBootstrapping,
            0x1003 => ErrorKind::TruncateError,
            0x1100 => ErrorKind::WriteTimeout {
                consistency: r.consistency()?,
                received: r.int()?,
                block_for: r.int()?,
                write_type: write_type(r)?,
            },
            0x1200 => ErrorKind::ReadTimeout {
                consistency: r.consistency()?,
                received: r.int()?,
                block_for: r.int()?,
                data_present: r.byte()? != 0,
            },
            0x1300 => ErrorKind::ReadFailure {
                consistency: r.consistency()?,
                received: r.int()?,
                block_for: r.int()?,
                failures: r.int()?,
                data_present: r.byte()? != 0,
            },
            0x1400 => ErrorKind::FunctionFailure {
                keyspace: r.string()?.to_owned(),
                function: r.string()?.to_owned(),
                arg_types: r.string_list()?,
            },
            0x1500 => ErrorKind::WriteFailure {
                consistency: r.consistency()?,
                received: r.int()?,
                block_for: r.int()?,
                failures: r.int()?,
                write_type: write_type(r)?,
            },
            0x2000 => ErrorKind::Syntax,
            0x2100 => ErrorKind::Unauthorized,
            0x2200 => ErrorKind::Invalid,
            0x2300 => ErrorKind::Config,
            0x2400 => ErrorKind::AlreadyExists { keyspace: r.string()?.to_owned(), table: r.string()?.to_owned() },
            0x2500 => ErrorKind::Unprepared { id: r.short_bytes()?.to_vec() },
            other => return Err(r.invalid(at, "error code", format!("unknown {other:#06x}"))),
        })
    }
}

/// The type of a column or bind marker ([option], spec 4.2.5.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DataType {
    /// A type named by its Java class.
    Custom(String),
    Ascii,
    Bigint,
    Blob,
    Boolean,
    Counter,
    Decimal,
    Double,
    Float,
    Int,
    Timestamp,
    Uuid,
    /// `text` and `varchar`.
    Varchar,
    Varint,
    Timeuuid,
    Inet,
    Date,
    Time,
    Smallint,
    Tinyint,
    List(Box<DataType>),
    Map(Box<DataType>, Box<DataType>),
    Set(Box<DataType>),
    Udt {
        keyspace: String,
        name: String,
        fields: Vec<(String, DataType)>,
    },
    Tuple(Vec<DataType>),
}

impl DataType {
    /// The simple types (no parameters), for tests and tables.
    pub const NATIVE: [DataType; 19] = [
        DataType::Ascii,
        DataType::Bigint,
        DataType::Blob,
        DataType::Boolean,
        DataType::Counter,
        DataType::Decimal,
        DataType::Double,
        DataType::Float,
        DataType::Int,
        DataType::Timestamp,
        DataType::Uuid,
        DataType::Varchar,
        DataType::Varint,
        DataType::Timeuuid,
        DataType::Inet,
        DataType::Date,
        DataType::Time,
        DataType::Smallint,
        DataType::Tinyint,
    ];

    /// The option id.
    pub fn id(&self) -> u16 {
        match self {
            DataType::Custom(_) => 0x0000,
            DataType::Ascii => 0x0001,
            DataType::Bigint => 0x0002,
            DataType::Blob => 0x0003,
            DataType::Boolean => 0x0004,
            DataType::Counter => 0x0005,
            DataType::Decimal => 0x0006,
            DataType::Double => 0x0007,
            DataType::Float => 0x0008,
            DataType::Int => 0x0009,
            DataType::Timestamp => 0x000B,
            DataType::Uuid => 0x000C,
            DataType::Varchar => 0x000D,
            DataType::Varint => 0x000E,
            DataType::Timeuuid => 0x000F,
            DataType::Inet => 0x0010,
            DataType::Date => 0x0011,
            DataType::Time => 0x0012,
            DataType::Smallint => 0x0013,
            DataType::Tinyint => 0x0014,
            DataType::List(_) => 0x0020,
            DataType::Map(..) => 0x0021,
            DataType::Set(_) => 0x0022,
            DataType::Udt { .. } => 0x0030,
            DataType::Tuple(_) => 0x0031,
        }
    }

    /// Writes the [option]. Fields and components past 65535 are not written (no table has them).
    pub fn encode(&self, w: &mut Writer<'_>) {
        w.short(self.id());
        match self {
            DataType::Custom(class) => {
                w.string(class);
            }
            DataType::List(t) | DataType::Set(t) => t.encode(w),
            DataType::Map(k, v) => {
                k.encode(w);
                v.encode(w);
            }
            DataType::Udt { keyspace, name, fields } => {
                let n = fields.len().min(usize::from(u16::MAX));
                w.string(keyspace).string(name).short(n as u16);
                for (field, t) in &fields[..n] {
                    w.string(field);
                    t.encode(w);
                }
            }
            DataType::Tuple(types) => {
                let n = types.len().min(usize::from(u16::MAX));
                w.short(n as u16);
                types[..n].iter().for_each(|t| t.encode(w));
            }
            _ => {}
        }
    }

    /// Reads an [option], nested at most [`MAX_TYPE_DEPTH`] levels.
    pub fn decode(r: &mut Reader<'_>) -> Result<DataType, DecodeError> {
        DataType::decode_at(r, 0)
    }

    fn decode_at(r: &mut Reader<'_>, depth: usize) -> Result<DataType, DecodeError> {
        let at = r.offset();
        if depth >= MAX_TYPE_DEPTH {
            return Err(r.invalid(at, "column type", format!("nested deeper than {MAX_TYPE_DEPTH} levels")));
        }
        let id = r.short()?;
        if let Some(native) = DataType::NATIVE.iter().find(|t| t.id() == id) {
            return Ok(native.clone());
        }
        let inner = |r: &mut Reader<'_>| DataType::decode_at(r, depth + 1).map(Box::new);
        Ok(match id {
            0x0000 => DataType::Custom(r.string()?.to_owned()),
            0x0020 => DataType::List(inner(r)?),
            0x0021 => DataType::Map(inner(r)?, inner(r)?),
            0x0022 => DataType::Set(inner(r)?),
            0x0030 => {
                let keyspace = r.string()?.to_owned();
                let name = r.string()?.to_owned();
                // A field is at least an empty [string] and a 2-byte id.
                let n = r.short_count(4)?;
                let fields = r.items(n, |r| Ok((r.string()?.to_owned(), DataType::decode_at(r, depth + 1)?)))?;
                DataType::Udt { keyspace, name, fields }
            }
            0x0031 => {
                let n = r.short_count(2)?;
                DataType::Tuple(r.items(n, |r| DataType::decode_at(r, depth + 1))?)
            }
            other => return Err(r.invalid(at, "column type", format!("unknown option id {other:#06x}"))),
        })
    }
}

/// The keyspace and table a column belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TableSpec {
    pub keyspace: String,
    pub table: String,
}

/// A column of a result, or a bind marker of a prepared statement. The table is shared: the
/// columns of a result with a global table spec all point at one decoded copy (cloning the
/// names per column would let a few bytes of input cost up to 128 KiB each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub table: Arc<TableSpec>,
    pub name: String,
    pub data_type: DataType,
}

/// Metadata flags of Rows and Prepared results.
pub mod metadata_flags {
    pub const GLOBAL_TABLES_SPEC: i32 = 0x0001;
    pub const HAS_MORE_PAGES: i32 = 0x0002;
    pub const NO_METADATA: i32 = 0x0004;
}

/// Writes column specs after flags that say whether one global table spec is used: it is
/// whenever there is at least one column and every column has the same table (as Cassandra
/// does); decoding fills each column's table from it.
fn global_table(columns: &[ColumnSpec]) -> Option<&Arc<TableSpec>> {
    let first = &columns.first()?.table;
    columns.iter().all(|c| &c.table == first).then_some(first)
}

fn encode_columns(columns: &[ColumnSpec], global: Option<&Arc<TableSpec>>, w: &mut Writer<'_>) {
    if let Some(table) = global {
        w.string(&table.keyspace).string(&table.table);
    }
    for column in columns {
        if global.is_none() {
            w.string(&column.table.keyspace).string(&column.table.table);
        }
        w.string(&column.name);
        column.data_type.encode(w);
    }
}

fn decode_columns(n: usize, global: bool, r: &mut Reader<'_>) -> Result<Vec<ColumnSpec>, DecodeError> {
    let global = if global {
        Some(Arc::new(TableSpec { keyspace: r.string()?.to_owned(), table: r.string()?.to_owned() }))
    } else {
        None
    };
    // A column is at least an empty name and a 2-byte type id.
    let n = r.check_count(r.offset(), n, 4)?;
    r.items(n, |r| {
        let table = match &global {
            Some(table) => table.clone(),
            None => Arc::new(TableSpec { keyspace: r.string()?.to_owned(), table: r.string()?.to_owned() }),
        };
        Ok(ColumnSpec { table, name: r.string()?.to_owned(), data_type: DataType::decode(r)? })
    })
}

/// The columns a Rows result (or a prepared statement's result) describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Columns {
    /// Column specifications (flag No_metadata clear).
    Specs(Vec<ColumnSpec>),
    /// Only the column count (flag No_metadata: the request asked skip_metadata, or a
    /// prepared statement that returns no rows).
    Count(usize),
}

impl Columns {
    pub fn count(&self) -> usize {
        match self {
            Columns::Specs(specs) => specs.len(),
            Columns::Count(n) => *n,
        }
    }
}

/// The metadata of a Rows result, and of what a prepared statement returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsMetadata {
    pub columns: Columns,
    /// Set when more pages follow (flag Has_more_pages).
    pub paging_state: Option<Vec<u8>>,
}

impl RowsMetadata {
    /// No metadata and no columns: the result metadata of a statement that returns no rows.
    pub fn empty() -> RowsMetadata {
        RowsMetadata { columns: Columns::Count(0), paging_state: None }
    }

    fn encode(&self, w: &mut Writer<'_>) {
        use metadata_flags::*;
        let (global, count) = match &self.columns {
            Columns::Specs(specs) => (global_table(specs), specs.len()),
            Columns::Count(n) => (None, *n),
        };
        let mut flags = 0;
        if global.is_some() {
            flags |= GLOBAL_TABLES_SPEC;
        }
        if self.paging_state.is_some() {
            flags |= HAS_MORE_PAGES;
        }
        if matches!(self.columns, Columns::Count(_)) {
            flags |= NO_METADATA;
        }
        debug_assert!(count <= i32::MAX as usize);
        w.int(flags).int(count as i32);
        if let Some(state) = &self.paging_state {
            w.bytes(Some(state));
        }
        if let Columns::Specs(specs) = &self.columns {
            encode_columns(specs, global, w);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<RowsMetadata, DecodeError> {
        use metadata_flags::*;
        let flags = r.int()?;
        let at = r.offset();
        let count = r.int()?;
        let count = usize::try_from(count).map_err(|_| r.invalid(at, "column count", format!("{count} < 0")))?;
        let paging_state = if flags & HAS_MORE_PAGES != 0 { r.bytes()?.map(<[u8]>::to_vec) } else { None };
        let columns = if flags & NO_METADATA != 0 {
            Columns::Count(count)
        } else {
            Columns::Specs(decode_columns(count, flags & GLOBAL_TABLES_SPEC != 0, r)?)
        };
        Ok(RowsMetadata { columns, paging_state })
    }
}

/// A Rows result: metadata, then every row's cells ([bytes], `None` for null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows {
    pub metadata: RowsMetadata,
    /// Each row holds `metadata.columns.count()` cells.
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
}

/// The bind markers of a prepared statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedMetadata {
    /// For each partition key column, in key order, the index of its bind marker (empty when
    /// some key column has no marker of its own): drivers route by it.
    pub pk_indexes: Vec<u16>,
    pub columns: Vec<ColumnSpec>,
}

/// A Prepared result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub id: Vec<u8>,
    pub metadata: PreparedMetadata,
    pub result_metadata: RowsMetadata,
}

/// What a schema change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeType {
    Created,
    Updated,
    Dropped,
}

impl ChangeType {
    pub const ALL: [ChangeType; 3] = [ChangeType::Created, ChangeType::Updated, ChangeType::Dropped];

    pub fn name(self) -> &'static str {
        match self {
            ChangeType::Created => "CREATED",
            ChangeType::Updated => "UPDATED",
            ChangeType::Dropped => "DROPPED",
        }
    }
}

/// What a schema change touched, with the names that identify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaTarget {
    Keyspace { keyspace: String },
    Table { keyspace: String, table: String },
    Type { keyspace: String, name: String },
    Function { keyspace: String, name: String, arg_types: Vec<String> },
    Aggregate { keyspace: String, name: String, arg_types: Vec<String> },
}

/// A Schema_change result, or the body of a SCHEMA_CHANGE event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaChange {
    pub change: ChangeType,
    pub target: SchemaTarget,
}

impl SchemaChange {
    fn encode(&self, w: &mut Writer<'_>) {
        w.string(self.change.name());
        match &self.target {
            SchemaTarget::Keyspace { keyspace } => {
                w.string("KEYSPACE").string(keyspace);
            }
            SchemaTarget::Table { keyspace, table } => {
                w.string("TABLE").string(keyspace).string(table);
            }
            SchemaTarget::Type { keyspace, name } => {
                w.string("TYPE").string(keyspace).string(name);
            }
            SchemaTarget::Function { keyspace, name, arg_types } => {
                w.string("FUNCTION").string(keyspace).string(name).string_list(arg_types);
            }
            SchemaTarget::Aggregate { keyspace, name, arg_types } => {
                w.string("AGGREGATE").string(keyspace).string(name).string_list(arg_types);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<SchemaChange, DecodeError> {
        let at = r.offset();
        let change = r.string()?;
        let change = ChangeType::ALL
            .into_iter()
            .find(|c| c.name() == change)
            .ok_or_else(|| r.invalid(at, "schema change type", format!("unknown {change:?}")))?;
        let at = r.offset();
        let target = match r.string()? {
            "KEYSPACE" => SchemaTarget::Keyspace { keyspace: r.string()?.to_owned() },
            "TABLE" => SchemaTarget::Table { keyspace: r.string()?.to_owned(), table: r.string()?.to_owned() },
            "TYPE" => SchemaTarget::Type { keyspace: r.string()?.to_owned(), name: r.string()?.to_owned() },
            "FUNCTION" => SchemaTarget::Function {
                keyspace: r.string()?.to_owned(),
                name: r.string()?.to_owned(),
                arg_types: r.string_list()?,
            },
            "AGGREGATE" => SchemaTarget::Aggregate {
                keyspace: r.string()?.to_owned(),
                name: r.string()?.to_owned(),
                arg_types: r.string_list()?,
            },
            other => return Err(r.invalid(at, "schema change target", format!("unknown {other:?}"))),
        };
        Ok(SchemaChange { change, target })
    }
}

/// A RESULT (spec 4.2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    Void,
    Rows(Rows),
    SetKeyspace(String),
    Prepared(Prepared),
    SchemaChange(SchemaChange),
}

impl QueryResult {
    pub fn kind(&self) -> i32 {
        match self {
            QueryResult::Void => 0x0001,
            QueryResult::Rows(_) => 0x0002,
            QueryResult::SetKeyspace(_) => 0x0003,
            QueryResult::Prepared(_) => 0x0004,
            QueryResult::SchemaChange(_) => 0x0005,
        }
    }

    fn encode(&self, w: &mut Writer<'_>) {
        w.int(self.kind());
        match self {
            QueryResult::Void => {}
            QueryResult::Rows(rows) => {
                rows.metadata.encode(w);
                debug_assert!(rows.rows.len() <= i32::MAX as usize);
                w.int(rows.rows.len() as i32);
                let width = rows.metadata.columns.count();
                for row in &rows.rows {
                    debug_assert_eq!(row.len(), width, "a row holds one cell per column");
                    row.iter().for_each(|cell| {
                        w.bytes(cell.as_deref());
                    });
                }
            }
            QueryResult::SetKeyspace(keyspace) => {
                w.string(keyspace);
            }
            QueryResult::Prepared(prepared) => {
                let PreparedMetadata { pk_indexes, columns } = &prepared.metadata;
                let global = global_table(columns);
                let flags = if global.is_some() { metadata_flags::GLOBAL_TABLES_SPEC } else { 0 };
                w.short_bytes(&prepared.id).int(flags).int(columns.len() as i32).int(pk_indexes.len() as i32);
                pk_indexes.iter().for_each(|i| {
                    w.short(*i);
                });
                encode_columns(columns, global, w);
                prepared.result_metadata.encode(w);
            }
            QueryResult::SchemaChange(change) => change.encode(w),
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<QueryResult, DecodeError> {
        let at = r.offset();
        Ok(match r.int()? {
            0x0001 => QueryResult::Void,
            0x0002 => {
                let metadata = RowsMetadata::decode(r)?;
                let width = metadata.columns.count();
                let at = r.offset();
                let count = r.int()?;
                let count = usize::try_from(count).map_err(|_| r.invalid(at, "row count", format!("{count} < 0")))?;
                if width == 0 && count > 0 {
                    return Err(r.invalid(at, "rows", format!("{count} rows without columns")));
                }
                // Each cell takes at least its 4-byte length.
                let cells = count.saturating_mul(width);
                r.check_count(at, cells, 4)?;
                let mut rows = Vec::with_capacity(count);
                for _ in 0..count {
                    let row = r.items(width, |r| Ok(r.bytes()?.map(<[u8]>::to_vec)))?;
                    rows.push(row);
                }
                QueryResult::Rows(Rows { metadata, rows })
            }
            0x0003 => QueryResult::SetKeyspace(r.string()?.to_owned()),
            0x0004 => {
                let id = r.short_bytes()?.to_vec();
                let flags = r.int()?;
                let at = r.offset();
                let count = r.int()?;
                let count =
                    usize::try_from(count).map_err(|_| r.invalid(at, "column count", format!("{count} < 0")))?;
                let pk_count = r.int_count("partition key count", 2)?;
                let pk_indexes = r.items(pk_count, Reader::short)?;
                let columns = decode_columns(count, flags & metadata_flags::GLOBAL_TABLES_SPEC != 0, r)?;
                let result_metadata = RowsMetadata::decode(r)?;
                QueryResult::Prepared(Prepared {
                    id,
                    metadata: PreparedMetadata { pk_indexes, columns },
                    result_metadata,
                })
            }
            0x0005 => QueryResult::SchemaChange(SchemaChange::decode(r)?),
            other => return Err(r.invalid(at, "result kind", format!("unknown {other:#06x}"))),
        })
    }
}

/// A topology change of an EVENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopologyChange {
    NewNode,
    RemovedNode,
    /// Sent by Cassandra when a node's tokens move.
    MovedNode,
}

impl TopologyChange {
    pub const ALL: [TopologyChange; 3] =
        [TopologyChange::NewNode, TopologyChange::RemovedNode, TopologyChange::MovedNode];

    pub fn name(self) -> &'static str {
        match self {
            TopologyChange::NewNode => "NEW_NODE",
            TopologyChange::RemovedNode => "REMOVED_NODE",
            TopologyChange::MovedNode => "MOVED_NODE",
        }
    }
}

/// A status change of an EVENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusChange {
    Up,
    Down,
}

impl StatusChange {
    pub fn name(self) -> &'static str {
        match self {
            StatusChange::Up => "UP",
            StatusChange::Down => "DOWN",
        }
    }
}

/// An EVENT pushed to a registered connection (on stream -1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    TopologyChange { change: TopologyChange, address: SocketAddr },
    StatusChange { change: StatusChange, address: SocketAddr },
    SchemaChange(SchemaChange),
}

impl Event {
    fn encode(&self, w: &mut Writer<'_>) {
        match self {
            Event::TopologyChange { change, address } => {
                w.string("TOPOLOGY_CHANGE").string(change.name()).inet(*address);
            }
            Event::StatusChange { change, address } => {
                w.string("STATUS_CHANGE").string(change.name()).inet(*address);
            }
            Event::SchemaChange(change) => {
                w.string("SCHEMA_CHANGE");
                change.encode(w);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Event, DecodeError> {
        let at = r.offset();
        Ok(match r.string()? {
            "TOPOLOGY_CHANGE" => {
                let at = r.offset();
                let name = r.string()?;
                let change = TopologyChange::ALL
                    .into_iter()
                    .find(|c| c.name() == name)
                    .ok_or_else(|| r.invalid(at, "topology change", format!("unknown {name:?}")))?;
                Event::TopologyChange { change, address: r.inet()? }
            }
            "STATUS_CHANGE" => {
                let at = r.offset();
                let change = match r.string()? {
                    "UP" => StatusChange::Up,
                    "DOWN" => StatusChange::Down,
                    other => return Err(r.invalid(at, "status change", format!("unknown {other:?}"))),
                };
                Event::StatusChange { change, address: r.inet()? }
            }
            "SCHEMA_CHANGE" => Event::SchemaChange(SchemaChange::decode(r)?),
            other => return Err(r.invalid(at, "event type", format!("unknown {other:?}"))),
        })
    }
}

/// Appends the body of `response` (without header, tracing id, warnings, payload or
/// compression).
pub fn encode_response_body(response: &Response, out: &mut Vec<u8>) {
    let mut w = Writer::new(out);
    match response {
        Response::Error(error) => {
            w.int(error.kind.code()).string(&error.message);
            error.kind.encode(&mut w);
        }
        Response::Ready => {}
        Response::Authenticate { authenticator } => {
            w.string(authenticator);
        }
        Response::Supported(options) => {
            w.string_multimap(options);
        }
        Response::Result(result) => result.encode(&mut w),
        Response::Event(event) => event.encode(&mut w),
        Response::AuthChallenge(token) | Response::AuthSuccess(token) => {
            w.bytes(token.as_deref());
        }
    }
}

/// Decodes the body of a response of `opcode` from `r`, leaving any bytes after it unread.
pub(super) fn decode_response_body(opcode: Opcode, r: &mut Reader<'_>) -> Result<Response, DecodeError> {
    Ok(match opcode {
        Opcode::Error => {
            let at = r.offset();
            let code = r.int()?;
            let message = r.string()?.to_owned();
            Response::Error(ErrorBody { kind: ErrorKind::decode(code, at, r)?, message })
        }
        Opcode::Ready => Response::Ready,
        Opcode::Authenticate => Response::Authenticate { authenticator: r.string()?.to_owned() },
        Opcode::Supported => Response::Supported(r.string_multimap()?),
        Opcode::Result => Response::Result(QueryResult::decode(r)?),
        Opcode::Event => Response::Event(Event::decode(r)?),
        Opcode::AuthChallenge => Response::AuthChallenge(r.bytes()?.map(<[u8]>::to_vec)),
        Opcode::AuthSuccess => Response::AuthSuccess(r.bytes()?.map(<[u8]>::to_vec)),
        other => return Err(r.invalid(r.offset(), "response", format!("{other:?} is not a response"))),
    })
}

//! Requests (spec 4.1): typed messages and their body encodings.

use crate::codec::DecodeError;

use super::notation::{Consistency, Reader, StringMap, Value, Writer};

/// Most values one statement may bind (the count is a [short]).
pub const MAX_VALUES: usize = u16::MAX as usize;

/// QUERY flags (spec 4.1.4).
pub mod query_flags {
    pub const VALUES: u8 = 0x01;
    pub const SKIP_METADATA: u8 = 0x02;
    pub const PAGE_SIZE: u8 = 0x04;
    pub const WITH_PAGING_STATE: u8 = 0x08;
    pub const WITH_SERIAL_CONSISTENCY: u8 = 0x10;
    pub const WITH_DEFAULT_TIMESTAMP: u8 = 0x20;
    pub const WITH_NAMES_FOR_VALUES: u8 = 0x40;
}

/// A client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The connection's options: `CQL_VERSION` (any value; drivers send "3.0.0" or "4.0.0"),
    /// optionally `COMPRESSION`, and whatever else a driver adds (`DRIVER_NAME`...).
    Startup(StringMap),
    /// A SASL token; may be null.
    AuthResponse(Option<Vec<u8>>),
    Options,
    Query {
        query: String,
        params: QueryParameters,
    },
    Prepare {
        query: String,
    },
    Execute {
        id: Vec<u8>,
        params: QueryParameters,
    },
    Batch(Batch),
    Register {
        events: Vec<EventType>,
    },
}

impl Request {
    pub fn opcode(&self) -> super::Opcode {
        use super::Opcode;
        match self {
            Request::Startup(_) => Opcode::Startup,
            Request::AuthResponse(_) => Opcode::AuthResponse,
            Request::Options => Opcode::Options,
            Request::Query { .. } => Opcode::Query,
            Request::Prepare { .. } => Opcode::Prepare,
            Request::Execute { .. } => Opcode::Execute,
            Request::Batch(_) => Opcode::Batch,
            Request::Register { .. } => Opcode::Register,
        }
    }
}

/// The value of a STARTUP option (`CQL_VERSION`, `COMPRESSION`...): the first one of that
/// name, compared exactly as drivers spell the keys (upper case).
pub fn startup_option<'a>(options: &'a StringMap, key: &str) -> Option<&'a str> {
    options.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The values bound to a statement's markers: by position, or by marker name (flag 0x40).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundValues {
    Positional(Vec<Value>),
    Named(Vec<(String, Value)>),
}

impl Default for BoundValues {
    fn default() -> Self {
        BoundValues::Positional(Vec::new())
    }
}

impl BoundValues {
    pub fn len(&self) -> usize {
        match self {
            BoundValues::Positional(v) => v.len(),
            BoundValues::Named(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn is_named(&self) -> bool {
        matches!(self, BoundValues::Named(_))
    }
    /// Writes the [short] count and the values (with their names when named).
    fn encode(&self, w: &mut Writer<'_>) {
        let n = self.len().min(MAX_VALUES);
        w.short(n as u16);
        match self {
            BoundValues::Positional(values) => values[..n].iter().for_each(|v| {
                w.value(v);
            }),
            BoundValues::Named(values) => values[..n].iter().for_each(|(name, v)| {
                w.string(name).value(v);
            }),
        }
    }
    fn decode(named: bool, r: &mut Reader<'_>) -> Result<BoundValues, DecodeError> {
        // Each value takes at least its 4-byte length (and a 2-byte name when named).
        let n = r.short_count(if named { 6 } else { 4 })?;
        if named {
            r.items(n, |r| Ok((r.string()?.to_owned(), r.value()?))).map(BoundValues::Named)
        } else {
            r.items(n, Reader::value).map(BoundValues::Positional)
        }
    }
}

/// The parameters of QUERY and EXECUTE: the consistency and every v4 flag. Encoding sets a
/// flag exactly when its field is present (values: when there are any, or when they are
/// named); decoding accepts a values flag with zero values, and the names flag without the
/// values flag (ignored, as the spec says).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueryParameters {
    pub consistency: Consistency,
    pub values: BoundValues,
    /// Flag 0x02: the answer's Rows carry no column specifications.
    pub skip_metadata: bool,
    /// Flag 0x04: rows per page, as sent (the server decides what a non-positive size means).
    pub page_size: Option<i32>,
    /// Flag 0x08: where the previous page ended. A null [bytes] decodes as `None`.
    pub paging_state: Option<Vec<u8>>,
    /// Flag 0x10: SERIAL or LOCAL_SERIAL, as sent (the server checks).
    pub serial_consistency: Option<Consistency>,
    /// Flag 0x20: the default write timestamp in microseconds, as sent.
    pub default_timestamp: Option<i64>,
}

impl QueryParameters {
    pub fn encode(&self, w: &mut Writer<'_>) {
        use query_flags::*;
        let mut flags = 0u8;
        if !self.values.is_empty() || self.values.is_named() {
            flags |= VALUES;
        }
        if self.values.is_named() {
            flags |= WITH_NAMES_FOR_VALUES;
        }
        if self.skip_metadata {
            flags |= SKIP_METADATA;
        }
        if self.page_size.is_some() {
            flags |= PAGE_SIZE;
        }
        if self.paging_state.is_some() {
            flags |= WITH_PAGING_STATE;
        }
        if self.serial_consistency.is_some() {
            flags |= WITH_SERIAL_CONSISTENCY;
        }
        if self.default_timestamp.is_some() {
            flags |= WITH_DEFAULT_TIMESTAMP;
        }
        w.consistency(self.consistency).byte(flags);
        if flags & VALUES != 0 {
            self.values.encode(w);
        }
        if let Some(size) = self.page_size {
            w.int(size);
        }
        if let Some(state) = &self.paging_state {
            w.bytes(Some(state));
        }
        if let Some(serial) = self.serial_consistency {
            w.consistency(serial);
        }
        if let Some(ts) = self.default_timestamp {
            w.long(ts);
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<QueryParameters, DecodeError> {
        use query_flags::*;
        let consistency = r.consistency()?;
        let flags = r.byte()?;
        let values = if flags & VALUES != 0 {
            BoundValues::decode(flags & WITH_NAMES_FOR_VALUES != 0, r)?
        } else {
            BoundValues::default()
        };
        let page_size = if flags & PAGE_SIZE != 0 { Some(r.int()?) } else { None };
        let paging_state = if flags & WITH_PAGING_STATE != 0 { r.bytes()?.map(<[u8]>::to_vec) } else { None };
        let serial_consistency = if flags & WITH_SERIAL_CONSISTENCY != 0 { Some(r.consistency()?) } else { None };
        let default_timestamp = if flags & WITH_DEFAULT_TIMESTAMP != 0 { Some(r.long()?) } else { None };
        Ok(QueryParameters {
            consistency,
            values,
            skip_metadata: flags & SKIP_METADATA != 0,
            page_size,
            paging_state,
            serial_consistency,
            default_timestamp,
        })
    }
}

/// The kind of a BATCH (spec 4.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchKind {
    Logged = 0,
    Unlogged = 1,
    Counter = 2,
}

impl BatchKind {
    pub const ALL: [BatchKind; 3] = [BatchKind::Logged, BatchKind::Unlogged, BatchKind::Counter];
}

/// One statement of a batch: a query text or a prepared id, and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchQuery {
    Text(String),
    Prepared(Vec<u8>),
}

/// A statement of a batch and its positional values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatement {
    pub query: BatchQuery,
    pub values: Vec<Value>,
}

/// A BATCH. Values are positional only: the spec's named-values flag (0x40) for batches
/// cannot be decoded (the flag comes after the values it changes, CASSANDRA-10246), so a
/// batch carrying it is refused, as Cassandra refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub kind: BatchKind,
    pub statements: Vec<BatchStatement>,
    pub consistency: Consistency,
    pub serial_consistency: Option<Consistency>,
    pub default_timestamp: Option<i64>,
}

/// Most statements in one batch (the count is a [short]).
pub const MAX_BATCH_STATEMENTS: usize = u16::MAX as usize;

impl Batch {
    fn encode(&self, w: &mut Writer<'_>) {
        use query_flags::*;
        let n = self.statements.len().min(MAX_BATCH_STATEMENTS);
        w.byte(self.kind as u8).short(n as u16);
        for statement in &self.statements[..n] {
            match &statement.query {
                BatchQuery::Text(text) => w.byte(0).long_string(text),
                BatchQuery::Prepared(id) => w.byte(1).short_bytes(id),
            };
            let count = statement.values.len().min(MAX_VALUES);
            w.short(count as u16);
            statement.values[..count].iter().for_each(|v| {
                w.value(v);
            });
        }
        let mut flags = 0u8;
        if self.serial_consistency.is_some() {
            flags |= WITH_SERIAL_CONSISTENCY;
        }
        if self.default_timestamp.is_some() {
            flags |= WITH_DEFAULT_TIMESTAMP;
        }
        w.consistency(self.consistency).byte(flags);
        if let Some(serial) = self.serial_consistency {
            w.consistency(serial);
        }
        if let Some(ts) = self.default_timestamp {
            w.long(ts);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Batch, DecodeError> {
        use query_flags::*;
        let at = r.offset();
        let kind = match r.byte()? {
            0 => BatchKind::Logged,
            1 => BatchKind::Unlogged,
            2 => BatchKind::Counter,
            other => return Err(r.invalid(at, "batch type", format!("{other} (expected 0, 1 or 2)"))),
        };
        // A statement takes at least a kind byte and a [short] (an empty id) and a [short] count.
        let n = r.short_count(5)?;
        let mut statements = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.offset();
            let query = match r.byte()? {
                0 => BatchQuery::Text(r.long_string()?.to_owned()),
                1 => BatchQuery::Prepared(r.short_bytes()?.to_vec()),
                other => return Err(r.invalid(at, "batch statement kind", format!("{other} (expected 0 or 1)"))),
            };
            let count = r.short_count(4)?;
            let values = r.items(count, Reader::value)?;
            statements.push(BatchStatement { query, values });
        }
        let consistency = r.consistency()?;
        let at = r.offset();
        let flags = r.byte()?;
        if flags & WITH_NAMES_FOR_VALUES != 0 {
            return Err(r.invalid(at, "batch flags", "named values are not supported in a BATCH (CASSANDRA-10246)"));
        }
        if flags & 0x0F != 0 {
            return Err(r.invalid(at, "batch flags", format!("{flags:#04x}: the four low bits must be 0")));
        }
        let serial_consistency = if flags & WITH_SERIAL_CONSISTENCY != 0 { Some(r.consistency()?) } else { None };
        let default_timestamp = if flags & WITH_DEFAULT_TIMESTAMP != 0 { Some(r.long()?) } else { None };
        Ok(Batch { kind, statements, consistency, serial_consistency, default_timestamp })
    }
}

/// An event type a REGISTER asks for (spec 4.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    TopologyChange,
    StatusChange,
    SchemaChange,
}

impl EventType {
    pub const ALL: [EventType; 3] = [EventType::TopologyChange, EventType::StatusChange, EventType::SchemaChange];

    pub fn name(self) -> &'static str {
        match self {
            EventType::TopologyChange => "TOPOLOGY_CHANGE",
            EventType::StatusChange => "STATUS_CHANGE",
            EventType::SchemaChange => "SCHEMA_CHANGE",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Appends the body of `request` (without header, payload or compression).
pub fn encode_request_body(request: &Request, out: &mut Vec<u8>) {
    let mut w = Writer::new(out);
    match request {
        Request::Startup(options) => {
            w.string_map(options);
        }
        Request::AuthResponse(token) => {
            w.bytes(token.as_deref());
        }
        Request::Options => {}
        Request::Query { query, params } => {
            w.long_string(query);
            params.encode(&mut w);
        }
        Request::Prepare { query } => {
            w.long_string(query);
        }
        Request::Execute { id, params } => {
            w.short_bytes(id);
            params.encode(&mut w);
        }
        Request::Batch(batch) => batch.encode(&mut w),
        Request::Register { events } => {
            let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
            w.string_list(&names);
        }
    }
}

/// Decodes the body of a request of `opcode` (a request opcode) from `r`, leaving any bytes
/// after it unread.
pub(super) fn decode_request_body(opcode: super::Opcode, r: &mut Reader<'_>) -> Result<Request, DecodeError> {
    use super::Opcode;
    Ok(match opcode {
        Opcode::Startup => Request::Startup(r.string_map()?),
        Opcode::AuthResponse => Request::AuthResponse(r.bytes()?.map(<[u8]>::to_vec)),
        Opcode::Options => Request::Options,
        Opcode::Query => {
            let query = r.long_string()?.to_owned();
            Request::Query { query, params: QueryParameters::decode(r)? }
        }
        Opcode::Prepare => Request::Prepare { query: r.long_string()?.to_owned() },
        Opcode::Execute => {
            let id = r.short_bytes()?.to_vec();
            Request::Execute { id, params: QueryParameters::decode(r)? }
        }
        Opcode::Batch => Request::Batch(Batch::decode(r)?),
        Opcode::Register => {
            let at = r.offset();
            let names = r.string_list()?;
            let events = names
                .iter()
                .map(|name| {
                    EventType::from_name(name).ok_or_else(|| r.invalid(at, "event type", format!("unknown {name:?}")))
                })
                .collect::<Result<_, _>>()?;
            Request::Register { events }
        }
        other => return Err(r.invalid(r.offset(), "request", format!("{other:?} is not a request"))),
    })
}

//! Requests a client sends (STARTUP, OPTIONS, QUERY, PREPARE, EXECUTE, BATCH, ADMIN, TOPOLOGY)
//! and their body encodings. Decoding validates structure only; whether a statement makes sense
//! is the server's business.

use super::admin::AdminRequest;
use super::{
    decode_body, read_list, read_opt_i64, read_text, read_values, write_opt_i64, write_values, Consistency, PreparedId,
    ProtocolError, QueryParams, MAX_AUTH_TOKEN_BYTES, MAX_BATCH_STATEMENTS, MAX_BOUND_VALUES, MAX_NAME_BYTES,
};
use crate::codec::{DecodeError, Reader, Writer, MAX_FIELD_LEN};
use crate::frame::{Frame, Opcode};
use crate::value::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Opens a connection: the protocol version the client wants and its name (for logs).
    Startup {
        version: u8,
        client: String,
    },
    /// Asks what the server supports; allowed before STARTUP.
    Options,
    /// Answers AUTHENTICATE: a SASL PLAIN token ([`PlainCredentials`](super::PlainCredentials)),
    /// at most [`MAX_AUTH_TOKEN_BYTES`] (version 3).
    AuthResponse {
        token: Vec<u8>,
    },
    Query {
        text: String,
        params: QueryParams,
    },
    Prepare {
        text: String,
    },
    Execute {
        id: PreparedId,
        values: Vec<Option<Value>>,
        params: QueryParams,
    },
    Batch(BatchRequest),
    /// An operator's command; answered by a RESULT of kind admin.
    Admin(AdminRequest),
    /// The cluster's nodes, shards and tokens; answered by a RESULT of kind topology.
    /// `known_version` is the topology version the client has (0: none), so that an unchanged
    /// topology is answered in a few bytes.
    Topology {
        known_version: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    Logged,
    Unlogged,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BatchStatement {
    Query(String, Vec<Option<Value>>),
    Prepared(PreparedId, Vec<Option<Value>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchRequest {
    pub kind: BatchKind,
    pub statements: Vec<BatchStatement>,
    pub consistency: Consistency,
    /// Write timestamp in microseconds for every statement; `None` lets the coordinator assign.
    pub timestamp: Option<i64>,
}

const BATCH_LOGGED: u8 = 0;
const BATCH_UNLOGGED: u8 = 1;
const STATEMENT_QUERY: u8 = 0;
const STATEMENT_PREPARED: u8 = 1;
/// Smallest encoded batch statement: a tag and an empty value list (a prepared id is longer).
const MIN_BATCH_STATEMENT_BYTES: usize = 1 + 4 + 4;

impl Request {
    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Startup { .. } => Opcode::Startup,
            Request::Options => Opcode::Options,
            Request::AuthResponse { .. } => Opcode::AuthResponse,
            Request::Query { .. } => Opcode::Query,
            Request::Prepare { .. } => Opcode::Prepare,
            Request::Execute { .. } => Opcode::Execute,
            Request::Batch(_) => Opcode::Batch,
            Request::Admin(_) => Opcode::Admin,
            Request::Topology { .. } => Opcode::Topology,
        }
    }

    pub fn encode(&self) -> (Opcode, Vec<u8>) {
        let mut w = Writer::new();
        match self {
            Request::Startup { version, client } => {
                w.u8(*version).str(client);
            }
            Request::Options => {}
            Request::AuthResponse { token } => {
                w.bytes(token);
            }
            Request::Query { text, params } => {
                w.str(text);
                params.write(&mut w);
            }
            Request::Prepare { text } => {
                w.str(text);
            }
            Request::Execute { id, values, params } => {
                id.write(&mut w);
                write_values(&mut w, values);
                params.write(&mut w);
            }
            Request::Batch(batch) => batch.write(&mut w),
            Request::Admin(command) => command.write(&mut w),
            Request::Topology { known_version } => {
                w.u64(*known_version);
            }
        }
        (self.opcode(), w.into_bytes())
    }

    pub fn decode(opcode: Opcode, body: &[u8]) -> Result<Request, ProtocolError> {
        if !opcode.is_request() {
            return Err(ProtocolError::UnexpectedOpcode { opcode, expected: "request" });
        }
        let mut budget = MAX_BOUND_VALUES;
        decode_body(opcode, body, |r| {
            Ok(match opcode {
                Opcode::Startup => Request::Startup { version: r.u8()?, client: read_text(r, MAX_NAME_BYTES)? },
                Opcode::Options => Request::Options,
                Opcode::AuthResponse => {
                    Request::AuthResponse { token: r.bytes_limited(MAX_AUTH_TOKEN_BYTES)?.to_vec() }
                }
                Opcode::Query => Request::Query { text: read_text(r, MAX_FIELD_LEN)?, params: QueryParams::read(r)? },
                Opcode::Prepare => Request::Prepare { text: read_text(r, MAX_FIELD_LEN)? },
                Opcode::Execute => Request::Execute {
                    id: PreparedId::read(r)?,
                    values: read_values(r, &mut budget)?,
                    params: QueryParams::read(r)?,
                },
                Opcode::Batch => Request::Batch(BatchRequest::read(r, &mut budget)?),
                Opcode::Admin => Request::Admin(AdminRequest::read(r)?),
                Opcode::Topology => Request::Topology { known_version: r.u64()? },
                // Refused above; kept typed rather than unreachable.
                Opcode::Error
                | Opcode::Ready
                | Opcode::Supported
                | Opcode::Result
                | Opcode::Authenticate
                | Opcode::AuthSuccess => return Err(r.invalid("opcode", "not a request")),
            })
        })
    }

    pub fn to_frame(&self, stream: u16) -> Frame {
        let (opcode, body) = self.encode();
        Frame::new(opcode, stream, body)
    }

    pub fn from_frame(frame: &Frame) -> Result<Request, ProtocolError> {
        Request::decode(frame.opcode, &frame.body)
    }
}

impl BatchRequest {
    fn write(&self, w: &mut Writer) {
        w.u8(match self.kind {
            BatchKind::Logged => BATCH_LOGGED,
            BatchKind::Unlogged => BATCH_UNLOGGED,
        });
        w.u32(self.statements.len() as u32);
        for statement in &self.statements {
            match statement {
                BatchStatement::Query(text, values) => {
                    w.u8(STATEMENT_QUERY).str(text);
                    write_values(w, values);
                }
                BatchStatement::Prepared(id, values) => {
                    w.u8(STATEMENT_PREPARED);
                    id.write(w);
                    write_values(w, values);
                }
            }
        }
        self.consistency.write(w);
        write_opt_i64(w, self.timestamp);
    }

    fn read(r: &mut Reader<'_>, budget: &mut usize) -> Result<BatchRequest, DecodeError> {
        let kind = match r.u8()? {
            BATCH_LOGGED => BatchKind::Logged,
            BATCH_UNLOGGED => BatchKind::Unlogged,
            k => return Err(r.invalid("batch kind", format!("unknown kind {k}"))),
        };
        let at = r.offset();
        let n = r.count(MIN_BATCH_STATEMENT_BYTES)?;
        if n > MAX_BATCH_STATEMENTS {
            return Err(DecodeError::TooLong { offset: at, len: n, limit: MAX_BATCH_STATEMENTS });
        }
        let statements = read_list(r, n, |r, _| match r.u8()? {
            STATEMENT_QUERY => Ok(BatchStatement::Query(read_text(r, MAX_FIELD_LEN)?, read_values(r, budget)?)),
            STATEMENT_PREPARED => Ok(BatchStatement::Prepared(PreparedId::read(r)?, read_values(r, budget)?)),
            t => Err(r.invalid("batch statement kind", format!("unknown kind {t}"))),
        })?;
        Ok(BatchRequest { kind, statements, consistency: Consistency::read(r)?, timestamp: read_opt_i64(r)? })
    }
}

#[cfg(test)]
mod tests {
    use super::super::admin::tests::any_admin_request;
    use super::super::tests::{any_consistency, any_params, any_prepared_id, any_values};
    use super::*;
    use proptest::prelude::*;

    fn any_batch_statement() -> impl Strategy<Value = BatchStatement> {
        prop_oneof![
            (".{0,20}", any_values()).prop_map(|(t, v)| BatchStatement::Query(t, v)),
            (any_prepared_id(), any_values()).prop_map(|(id, v)| BatchStatement::Prepared(id, v)),
        ]
    }

    pub fn any_request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u8>(), ".{0,10}").prop_map(|(version, client)| Request::Startup { version, client }),
            Just(Request::Options),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|token| Request::AuthResponse { token }),
            (".{0,40}", any_params()).prop_map(|(text, params)| Request::Query { text, params }),
            ".{0,40}".prop_map(|text| Request::Prepare { text }),
            (any_prepared_id(), any_values(), any_params()).prop_map(|(id, values, params)| Request::Execute {
                id,
                values,
                params
            }),
            (
                prop_oneof![Just(BatchKind::Logged), Just(BatchKind::Unlogged)],
                proptest::collection::vec(any_batch_statement(), 0..4),
                any_consistency(),
                proptest::option::of(any::<i64>()),
            )
                .prop_map(|(kind, statements, consistency, timestamp)| Request::Batch(BatchRequest {
                    kind,
                    statements,
                    consistency,
                    timestamp
                })),
            any_admin_request().prop_map(Request::Admin),
            any::<u64>().prop_map(|known_version| Request::Topology { known_version }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in any_request(), stream in any::<u16>()) {
            let frame = request.to_frame(stream);
            prop_assert!(frame.opcode.is_request());
            prop_assert_eq!(Request::from_frame(&frame).unwrap(), request);
        }

        #[test]
        fn truncated_or_extended_requests_are_typed_errors(request in any_request(), extra in 1..4usize) {
            let (opcode, body) = request.encode();
            for cut in 0..body.len() {
                let res = Request::decode(opcode, &body[..cut]);
                prop_assert!(matches!(res, Err(ProtocolError::Malformed { .. })), "cut at {}: {:?}", cut, res);
            }
            let mut longer = body.clone();
            longer.extend(std::iter::repeat_n(0u8, extra));
            let trailing = Request::decode(opcode, &longer);
            prop_assert!(matches!(trailing, Err(ProtocolError::Malformed { source: DecodeError::Trailing { .. }, .. })), "{:?}", trailing);
        }
    }

    #[test]
    fn answers_are_not_requests() {
        for opcode in
            [Opcode::Error, Opcode::Ready, Opcode::Supported, Opcode::Result, Opcode::Authenticate, Opcode::AuthSuccess]
        {
            assert_eq!(
                Request::decode(opcode, &[]),
                Err(ProtocolError::UnexpectedOpcode { opcode, expected: "request" })
            );
        }
    }

    #[test]
    fn bound_values_are_limited_across_a_whole_batch() {
        let half = vec![None; MAX_BOUND_VALUES / 2 + 1];
        let batch = BatchRequest {
            kind: BatchKind::Unlogged,
            statements: vec![BatchStatement::Query("a".into(), half.clone()), BatchStatement::Query("b".into(), half)],
            consistency: Consistency::Quorum,
            timestamp: None,
        };
        let (opcode, body) = Request::Batch(batch).encode();
        let err = Request::decode(opcode, &body).unwrap_err();
        assert!(matches!(err, ProtocolError::Malformed { source: DecodeError::TooLong { .. }, .. }), "{err:?}");
    }

    #[test]
    fn malformed_values_name_the_problem() {
        let request = Request::Execute {
            id: PreparedId([7; 16]),
            values: vec![Some(Value::Int(5))],
            params: QueryParams::default(),
        };
        let (opcode, mut body) = request.encode();
        // The value's type code sits after the 16-byte id and the 4-byte count.
        body[20] = crate::value::ColumnType::Boolean.code();
        let err = Request::decode(opcode, &body).unwrap_err();
        assert!(err.to_string().contains("boolean"), "{err}");
        body[20] = 99;
        let err = Request::decode(opcode, &body).unwrap_err();
        assert!(err.to_string().contains("unknown type code 99"), "{err}");
    }

    #[test]
    fn zero_page_size_and_unknown_parameter_flags_are_refused() {
        let (opcode, body) =
            Request::Query { text: "x".into(), params: QueryParams { page_size: Some(5), ..Default::default() } }
                .encode();
        let mut zero = body.clone();
        let at = body.len() - 4;
        zero[at..].copy_from_slice(&0u32.to_le_bytes());
        assert!(Request::decode(opcode, &zero).unwrap_err().to_string().contains("page size"));
        let mut flags = body;
        flags[4 + 1 + 1] |= 0x80;
        assert!(Request::decode(opcode, &flags).unwrap_err().to_string().contains("flags"));
    }
}

//! Fuzzes the CQL native protocol v4 codec (`wire::cql`) with arbitrary and mutated bytes, as
//! a server (or a driver) reading from a hostile socket would see them: no panic, no hang, and
//! no allocation out of proportion to the bytes received (a declared length or count is never
//! trusted before it is checked against the bytes present and the limits). Runs a bounded
//! number of proptest cases; raise `PROPTEST_CASES` for a longer run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use proptest::prelude::*;
use wire::cql::frame::flags;
use wire::cql::{
    decode_request, decode_response, encode_request, encode_response, Batch, BatchKind, BatchQuery, BatchStatement,
    BoundValues, ColumnSpec, Columns, Compression, Consistency, DataType, Direction, ErrorBody, ErrorKind, Event,
    Frame, FrameDecoder, Opcode, Prepared, PreparedMetadata, QueryParameters, QueryResult, Request, RequestFrame,
    Response, ResponseFrame, Rows, RowsMetadata, SchemaChange, SchemaTarget, StatusChange, TableSpec, Value, WriteType,
    DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES,
};

/// Counts, per thread and only while a test asks for it, the bytes allocated.
struct CountingAlloc;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the allocator can run while thread-locals are being torn down.
    let tracking = TRACKING.try_with(Cell::get).unwrap_or(false);
    if tracking {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + size));
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with (total bytes allocated, largest single allocation).
fn measured<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    ALLOCATED.with(|a| a.set(0));
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, ALLOCATED.with(Cell::get), LARGEST.with(Cell::get))
}

/// Decoded messages are larger than their bytes (a 4-byte null cell becomes a 24-byte
/// `Option<Vec<u8>>` in a row vector, a 2-byte type id a boxed `DataType`...), but only by a
/// constant factor.
const MAX_DECODE_AMPLIFICATION: usize = 64;
const DECODE_ALLOCATION_SLACK: usize = 4096;
/// LZ4 expands at most about 255 times; the decompressor refuses declared lengths beyond it.
const LZ4_EXPANSION: usize = 255;
const LZ4_SLACK: usize = 64;

fn table() -> Arc<TableSpec> {
    Arc::new(TableSpec { keyspace: "ks".into(), table: "t".into() })
}

/// Valid frames of every message kind (requests and responses, plain and compressed), the
/// starting points of the mutations.
fn corpus() -> Vec<Vec<u8>> {
    let params = QueryParameters {
        consistency: Consistency::LocalQuorum,
        values: BoundValues::Positional(vec![Value::Bytes(vec![0, 0, 0, 1]), Value::Null, Value::NotSet]),
        skip_metadata: true,
        page_size: Some(100),
        paging_state: Some(vec![1, 2, 3]),
        serial_consistency: Some(Consistency::Serial),
        default_timestamp: Some(1_700_000_000_000_000),
    };
    let named = QueryParameters {
        values: BoundValues::Named(vec![("k".into(), Value::Bytes(b"a".to_vec()))]),
        ..QueryParameters::default()
    };
    let requests = [
        Request::Startup(vec![("CQL_VERSION".into(), "3.0.0".into()), ("COMPRESSION".into(), "lz4".into())]),
        Request::Options,
        Request::AuthResponse(Some(b"\0cassandra\0cassandra".to_vec())),
        Request::Query { query: "SELECT * FROM ks.t WHERE k = ?".into(), params: params.clone() },
        Request::Query { query: "SELECT * FROM ks.t WHERE k = :k".into(), params: named },
        Request::Prepare { query: "INSERT INTO ks.t (k, v) VALUES (?, ?)".into() },
        Request::Execute { id: vec![7; 16], params },
        Request::Batch(Batch {
            kind: BatchKind::Logged,
            statements: vec![
                BatchStatement {
                    query: BatchQuery::Text("INSERT INTO t (k) VALUES (?)".into()),
                    values: vec![Value::Null],
                },
                BatchStatement { query: BatchQuery::Prepared(vec![7; 16]), values: vec![Value::Bytes(vec![1])] },
            ],
            consistency: Consistency::All,
            serial_consistency: Some(Consistency::LocalSerial),
            default_timestamp: Some(5),
        }),
        Request::Register { events: wire::cql::EventType::ALL.to_vec() },
    ];
    let column = |name: &str, data_type| ColumnSpec { table: table(), name: name.into(), data_type };
    let udt = DataType::Udt {
        keyspace: "ks".into(),
        name: "address".into(),
        fields: vec![("street".into(), DataType::Varchar), ("zip".into(), DataType::Int)],
    };
    let responses = [
        Response::Ready,
        Response::Supported(vec![
            ("CQL_VERSION".into(), vec!["3.4.7".into()]),
            ("COMPRESSION".into(), vec!["lz4".into()]),
        ]),
        Response::Authenticate { authenticator: "org.apache.cassandra.auth.PasswordAuthenticator".into() },
        Response::AuthSuccess(None),
        Response::Result(QueryResult::Void),
        Response::Result(QueryResult::SetKeyspace("ks".into())),
        Response::Result(QueryResult::Rows(Rows {
            metadata: RowsMetadata {
                columns: Columns::Specs(vec![
                    column("k", DataType::Varchar),
                    column("m", DataType::Map(Box::new(DataType::Int), Box::new(DataType::List(Box::new(udt))))),
                    column("t", DataType::Tuple(vec![DataType::Uuid, DataType::Inet])),
                ]),
                paging_state: Some(vec![9; 8]),
            },
            rows: vec![vec![Some(b"a".to_vec()), None, Some(vec![0; 4])]; 3],
        })),
        Response::Result(QueryResult::Prepared(Prepared {
            id: vec![7; 16],
            metadata: PreparedMetadata { pk_indexes: vec![0], columns: vec![column("k", DataType::Varchar)] },
            result_metadata: RowsMetadata { columns: Columns::Count(2), paging_state: None },
        })),
        Response::Result(QueryResult::SchemaChange(SchemaChange {
            change: wire::cql::ChangeType::Created,
            target: SchemaTarget::Table { keyspace: "ks".into(), table: "t".into() },
        })),
        Response::Event(Event::StatusChange { change: StatusChange::Down, address: "[::1]:9042".parse().unwrap() }),
        Response::Error(ErrorBody::new(
            ErrorKind::WriteTimeout {
                consistency: Consistency::Quorum,
                received: 1,
                block_for: 2,
                write_type: WriteType::UnloggedBatch,
            },
            "timed out",
        )),
        Response::Error(ErrorBody::new(ErrorKind::Unprepared { id: vec![7; 16] }, "prepare again")),
    ];
    let mut out = Vec::new();
    for compression in [None, Some(Compression::Lz4)] {
        for request in &requests {
            let mut frame = RequestFrame::new(3, request.clone());
            frame.tracing = true;
            frame.custom_payload = Some(vec![("k".into(), Some(vec![1]))]);
            let mut bytes = Vec::new();
            encode_request(&frame, compression, &mut bytes);
            out.push(bytes);
        }
        for response in &responses {
            let mut frame = ResponseFrame::new(3, response.clone());
            frame.tracing_id = Some(wire::cql::Uuid([5; 16]));
            frame.warnings = vec!["careful".into()];
            let mut bytes = Vec::new();
            encode_response(&frame, compression, &mut bytes);
            out.push(bytes);
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Truncate { len: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let n = bytes.len().max(1);
    match mutation {
        Mutation::Flip { at, bit } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b = *byte;
            }
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
        Mutation::Insert { at, bytes: extra } => {
            let at = at % n.min(bytes.len() + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
    }
}

/// A corpus frame with mutated bytes anywhere (header included).
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (proptest::sample::select(corpus()), proptest::collection::vec(any_mutation(), 1..5)).prop_map(|(mut bytes, ms)| {
        ms.iter().for_each(|m| mutate(&mut bytes, m));
        bytes
    })
}

/// A corpus frame whose body was mutated (and maybe its opcode and flags changed), with its
/// length fixed so that it stays delimited and reaches the message decoders.
fn mutated_message() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(corpus()),
        proptest::option::of(proptest::sample::select(Opcode::ALL.to_vec())),
        proptest::option::of(any::<u8>()),
        proptest::collection::vec(any_mutation(), 0..4),
    )
        .prop_map(|(bytes, opcode, flag_bits, ms)| {
            let mut header = bytes[..HEADER_BYTES].to_vec();
            let mut body = bytes[HEADER_BYTES..].to_vec();
            ms.iter().for_each(|m| mutate(&mut body, m));
            if let Some(op) = opcode {
                header[4] = op.code();
            }
            if let Some(f) = flag_bits {
                header[1] = f;
            }
            header[5..9].copy_from_slice(&(body.len() as u32).to_be_bytes());
            [header, body].concat()
        })
}

fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        // A v4 version byte, then noise: reaches the later header checks.
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|tail| [&[0x04u8][..], &tail].concat()),
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|tail| [&[0x84u8][..], &tail].concat()),
        mutated_frame(),
        mutated_frame(),
        mutated_message(),
        mutated_message(),
        mutated_message(),
    ]
}

/// What a connection does after one decode.
enum Step {
    NeedMore,
    Drop(usize),
    Close,
}

/// Checks one decode of `buf` and says what a connection would do next.
fn check_one(decoder: &FrameDecoder, buf: &[u8]) -> Result<Step, TestCaseError> {
    let (result, _, largest) = measured(|| decoder.decode(buf));
    prop_assert!(largest <= buf.len(), "frame decoder allocated {largest} bytes for a {}-byte input", buf.len());
    match result {
        Ok(None) => Ok(Step::NeedMore),
        Ok(Some((frame, used))) => {
            prop_assert!(used >= HEADER_BYTES && used <= buf.len());
            let mut again = Vec::new();
            wire::cql::encode_frame(&frame, &mut again);
            prop_assert_eq!(&again[..], &buf[..used], "a delimited frame re-encodes to its bytes");
            check_body(&frame)?;
            Ok(Step::Drop(used))
        }
        Err(e) => {
            if let Some(skip) = e.skip() {
                prop_assert!(skip >= HEADER_BYTES && skip <= buf.len(), "{e}: skip {skip} of {}", buf.len());
            }
            let mut answer = Vec::new();
            wire::cql::encode_frame_error_answer(&e, &mut answer);
            prop_assert!(answer.len() >= 8);
            Ok(e.skip().map_or(Step::Close, Step::Drop))
        }
    }
}

/// Decodes a frame's body as a request and as a response: never a panic, bounded memory.
fn check_body(frame: &Frame) -> Result<(), TestCaseError> {
    let len = frame.body.len();
    let plain = if frame.flags & flags::COMPRESSION != 0 { LZ4_EXPANSION * len + LZ4_SLACK } else { len };
    let limit = MAX_DECODE_AMPLIFICATION * plain + plain + DECODE_ALLOCATION_SLACK;
    let (_, total, _) = measured(|| {
        let mut as_other = frame.clone();
        as_other.direction =
            if frame.direction == Direction::Request { Direction::Response } else { Direction::Request };
        for f in [frame, &as_other] {
            let _ = decode_request(f, Some(Compression::Lz4), DEFAULT_MAX_FRAME_BYTES);
            let _ = decode_response(f, Some(Compression::Lz4), DEFAULT_MAX_FRAME_BYTES);
        }
    });
    // The clone above costs one copy of the body.
    prop_assert!(total <= limit + len, "{:?} body of {len} bytes allocated {total}", frame.opcode);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn cql_decoder_survives_hostile_input(bytes in hostile_bytes()) {
        for decoder in [FrameDecoder::requests(), FrameDecoder::responses()] {
            check_one(&decoder, &bytes)?;
        }
    }

    /// A connection loop fed in random chunks: it always ends (every step consumes bytes,
    /// waits for more, or closes) and never decodes more than it was given.
    #[test]
    fn cql_connection_loop_terminates_on_any_stream(
        chunks in proptest::collection::vec(hostile_bytes(), 1..4),
        cuts in proptest::collection::vec(1..64usize, 1..8),
    ) {
        let stream: Vec<u8> = chunks.concat();
        let decoder = FrameDecoder::new(Direction::Request, 4096);
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut cut = cuts.iter().cycle();
        'conn: while fed < stream.len() {
            let next = (fed + cut.next().copied().unwrap_or(1)).min(stream.len());
            buf.extend_from_slice(&stream[fed..next]);
            fed = next;
            loop {
                match check_one(&decoder, &buf)? {
                    Step::Drop(used) => { buf.drain(..used); }
                    Step::NeedMore => break,
                    Step::Close => break 'conn,
                }
            }
        }
    }
}

#[test]
fn huge_declared_length_allocates_nothing() {
    for declared in [u32::MAX, (DEFAULT_MAX_FRAME_BYTES - HEADER_BYTES) as u32] {
        let mut bytes = vec![0x04, 0, 0, 1, Opcode::Query.code()];
        bytes.extend_from_slice(&declared.to_be_bytes());
        let decoder = FrameDecoder::requests();
        let (result, total, _) = measured(|| decoder.decode(&bytes));
        assert_eq!(total, 0, "declared {declared}: {result:?}");
        match declared {
            u32::MAX => assert!(result.is_err_and(|e| e.is_fatal() && e.stream() == 1)),
            _ => assert_eq!(result, Ok(None), "a frame at the limit waits for its body"),
        }
    }
}

/// The densest encodings (4-byte null cells, 2-byte types, 4-byte columns under a global
/// table spec with long names) decode within the bound the fuzzer checks, at sizes where a
/// doubling vector or a per-column copy of the table names would show.
#[test]
fn densest_bodies_stay_within_the_memory_bound() {
    let long = "x".repeat(60_000);
    let wide = Arc::new(TableSpec { keyspace: long.clone(), table: long });
    let columns: Vec<ColumnSpec> = (0..20_000)
        .map(|_| ColumnSpec { table: wide.clone(), name: String::new(), data_type: DataType::Int })
        .collect();
    let null_rows = Rows {
        metadata: RowsMetadata { columns: Columns::Count(1), paging_state: None },
        rows: vec![vec![None]; 200_000],
    };
    let wide_rows =
        Rows { metadata: RowsMetadata { columns: Columns::Specs(columns), paging_state: None }, rows: vec![] };
    let tuple = DataType::Tuple(vec![DataType::Int; 60_000]);
    let typed = Rows {
        metadata: RowsMetadata {
            columns: Columns::Specs(vec![ColumnSpec { table: table(), name: "t".into(), data_type: tuple }]),
            paging_state: None,
        },
        rows: vec![],
    };
    let execute = Request::Execute {
        id: vec![1; 16],
        params: QueryParameters {
            values: BoundValues::Named(vec![(String::new(), Value::Null); 65_535]),
            ..QueryParameters::default()
        },
    };
    let mut frames = Vec::new();
    for rows in [null_rows, wide_rows, typed] {
        let mut out = Vec::new();
        encode_response(&ResponseFrame::new(1, Response::Result(QueryResult::Rows(rows))), None, &mut out);
        frames.push(out);
    }
    let mut out = Vec::new();
    encode_request(&RequestFrame::new(1, execute), None, &mut out);
    frames.push(out);
    for bytes in frames {
        let direction = if bytes[0] == 0x04 { Direction::Request } else { Direction::Response };
        let (frame, _) = FrameDecoder::new(direction, 64 << 20).decode(&bytes).unwrap().unwrap();
        let (decoded, total, _) = measured(|| match direction {
            Direction::Request => decode_request(&frame, None, usize::MAX).is_ok(),
            Direction::Response => decode_response(&frame, None, usize::MAX).is_ok(),
        });
        assert!(decoded, "{:?} decodes", frame.opcode);
        let limit = MAX_DECODE_AMPLIFICATION * frame.body.len() + DECODE_ALLOCATION_SLACK;
        assert!(total <= limit, "{:?}: {} body bytes allocated {total}", frame.opcode, frame.body.len());
        println!("{:?}: {} body bytes, {total} bytes allocated to decode", frame.opcode, frame.body.len());
    }
}

/// A small compressed frame declaring a large body is refused before the body is allocated.
#[test]
fn compressed_bombs_are_bounded_by_the_lz4_ratio() {
    let mut bytes = vec![0x04, flags::COMPRESSION, 0, 1, Opcode::Query.code(), 0, 0, 0, 9];
    bytes.extend_from_slice(&(8u32 << 20).to_be_bytes());
    bytes.extend_from_slice(&[0; 5]);
    let (frame, _) = FrameDecoder::requests().decode(&bytes).unwrap().unwrap();
    let (result, total, _) = measured(|| decode_request(&frame, Some(Compression::Lz4), DEFAULT_MAX_FRAME_BYTES));
    assert!(result.is_err());
    assert!(total < 4096, "allocated {total}");
}

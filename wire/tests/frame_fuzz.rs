//! Fuzzes the frame decoder and the message decoders with arbitrary and mutated bytes, as a
//! server reading from a hostile socket would see them: no panic, no hang, and no allocation
//! larger than the bytes actually received (a declared length is never trusted before the
//! limit check). Runs a bounded number of proptest cases so it fits in CI; raise
//! `PROPTEST_CASES` for a longer run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proptest::prelude::*;
use wire::frame::{
    encode_frame, encode_frame_as, Frame, FrameDecoder, Opcode, DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES, PROTOCOL_VERSION,
};
use wire::protocol::{
    BatchKind, BatchRequest, BatchStatement, ColumnSpec, ErrorCode, PreparedId, PreparedMeta, QueryParams, QueryResult,
    Request, Response, Rows, Topology, TopologyAnswer, TopologyNode,
};
use wire::{ColumnType, Consistency, Value};

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

/// Decoded messages may be larger than their bytes (a one-byte null becomes a 32-byte
/// `Option<Value>`, a 16-byte id a 24-byte vector...), but only by a constant factor.
const MAX_DECODE_AMPLIFICATION: usize = 64;
const DECODE_ALLOCATION_SLACK: usize = 4096;

/// A corpus of valid frames of every message kind, the starting points of the mutations.
fn corpus() -> Vec<Vec<u8>> {
    let params = QueryParams {
        consistency: Consistency::Quorum,
        page_size: Some(100),
        paging_state: Some(vec![1, 2, 3]),
        timestamp: Some(1_700_000_000_000_000),
        trace: true,
    };
    let values = vec![Some(Value::Text("k".into())), None, Some(Value::BigInt(-3)), Some(Value::Blob(vec![0; 3]))];
    let id = PreparedId::of_statement("SELECT v FROM t WHERE k = ?");
    let spec = |name: &str, ty| ColumnSpec { name: name.into(), ty };
    let requests = [
        Request::Startup { version: PROTOCOL_VERSION, client: "fuzz".into() },
        Request::Options,
        Request::Query { text: "SELECT * FROM t".into(), params: params.clone() },
        Request::Prepare { text: "SELECT v FROM t WHERE k = ?".into() },
        Request::Execute { id, values: values.clone(), params },
        Request::Batch(BatchRequest {
            kind: BatchKind::Logged,
            statements: vec![
                BatchStatement::Query("INSERT INTO t (k, v) VALUES (?, ?)".into(), values.clone()),
                BatchStatement::Prepared(id, values.clone()),
            ],
            consistency: Consistency::All,
            timestamp: Some(5),
        }),
        Request::Topology { known_version: 3 },
    ];
    let node = |host_id: u128, tokens: Vec<Vec<i64>>| TopologyNode {
        host_id,
        client: std::net::SocketAddr::from(([10, 0, 0, host_id as u8], 9470)),
        shard_aware: Some(std::net::SocketAddr::from(([0xfe80, 0, 0, 0, 0, 0, 0, host_id as u16], 19470))),
        alive: host_id % 2 == 1,
        tokens,
    };
    let topology = Topology { version: 4, nodes: vec![node(1, vec![vec![-7, 3], vec![11]]), node(2, vec![vec![]])] };
    let responses = [
        Response::Ready { version: 2, shard: 1, shards: 2 },
        Response::Supported {
            versions: vec![2],
            max_frame_bytes: 1 << 24,
            server: "enigmadb".into(),
            shard: 0,
            shards: 2,
            shard_aware_port: 19470,
        },
        Response::Result(QueryResult::Void),
        Response::Result(QueryResult::Rows(Rows {
            columns: vec![spec("k", ColumnType::Text), spec("v", ColumnType::Int)],
            rows: vec![vec![Some(Value::Text("a".into())), Some(Value::Int(1))], vec![None, None]],
            paging_state: Some(vec![9; 8]),
        })),
        Response::Result(QueryResult::SchemaChange { change: "CREATED".into(), table: "t".into() }),
        Response::Result(QueryResult::Prepared(PreparedMeta {
            id,
            bind: vec![spec("k", ColumnType::Text)],
            columns: vec![spec("v", ColumnType::Int)],
            pk_indexes: vec![0],
        })),
        Response::Result(QueryResult::Topology(TopologyAnswer::Full(topology))),
        Response::Result(QueryResult::Topology(TopologyAnswer::Unchanged { version: 4 })),
        Response::error(ErrorCode::Syntax, "line 1: no viable alternative"),
        Response::error(
            ErrorCode::ReadTimeout { consistency: Consistency::Two, received: 1, required: 2, data_present: false },
            "timed out",
        ),
    ];
    let frames = requests.iter().map(|r| r.to_frame(7)).chain(responses.iter().map(|r| r.to_frame(9)));
    frames
        .map(|f| {
            let mut out = Vec::new();
            encode_frame(&f, &mut out);
            out
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        len: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    /// Recompute the header checksum, so mutations of the header reach the later checks.
    Reseal,
}

fn any_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        Just(Mutation::Reseal),
        Just(Mutation::Reseal),
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
        Mutation::Reseal => {
            if bytes.len() >= HEADER_BYTES {
                let crc = crc32c::crc32c(&bytes[..20]);
                bytes[20..24].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
}

fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus();
    (proptest::sample::select(corpus), proptest::collection::vec(any_mutation(), 1..5)).prop_map(|(mut bytes, ms)| {
        ms.iter().for_each(|m| mutate(&mut bytes, m));
        bytes
    })
}

/// A frame with intact header and checksums around a mutated body (and possibly another
/// opcode): reaches the message decoders rather than stopping at the body checksum.
fn mutated_message() -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus();
    (
        proptest::sample::select(corpus),
        proptest::option::of(proptest::sample::select(Opcode::ALL.to_vec())),
        proptest::collection::vec(any_mutation(), 0..4),
    )
        .prop_map(|(bytes, opcode, ms)| {
            // Corpus frames are encoded by encode_frame just above, so they decode.
            let (mut frame, _) =
                FrameDecoder::default().decode(&bytes).ok().flatten().expect("corpus frames are valid");
            ms.iter().filter(|m| !matches!(m, Mutation::Reseal)).for_each(|m| mutate(&mut frame.body, m));
            frame.opcode = opcode.unwrap_or(frame.opcode);
            let mut out = Vec::new();
            encode_frame(&frame, &mut out);
            out
        })
}

fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        // A correct magic and version, then noise: reaches the header checks.
        proptest::collection::vec(any::<u8>(), 0..256).prop_map(|tail| [
            b"ENGP".as_slice(),
            &[PROTOCOL_VERSION],
            &tail
        ]
        .concat()),
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
fn check_one(decoder: &mut FrameDecoder, buf: &[u8]) -> Result<Step, TestCaseError> {
    let (result, _, largest) = measured(|| decoder.decode(buf));
    prop_assert!(largest <= buf.len(), "decoder allocated {largest} bytes for a {}-byte input", buf.len());
    match result {
        Ok(None) => Ok(Step::NeedMore),
        Ok(Some((frame, used))) => {
            prop_assert!(used >= HEADER_BYTES && used <= buf.len());
            let mut again = Vec::new();
            let version = decoder.last_version().expect("a decoded frame sets the version");
            encode_frame_as(version, &frame, &mut again);
            prop_assert_eq!(&again[..], &buf[..used], "a decoded frame re-encodes to its bytes");
            check_body(&frame)?;
            Ok(Step::Drop(used))
        }
        Err(e) => {
            if let Some(skip) = e.skip() {
                prop_assert!(skip >= HEADER_BYTES && skip <= buf.len(), "{e}: skip {skip} of {}", buf.len());
            }
            Ok(e.skip().map_or(Step::Close, Step::Drop))
        }
    }
}

/// Decodes a frame's body as the message its opcode announces: never a panic, bounded memory.
fn check_body(frame: &Frame) -> Result<(), TestCaseError> {
    let limit = MAX_DECODE_AMPLIFICATION * frame.body.len() + DECODE_ALLOCATION_SLACK;
    let (_, total, _) = measured(|| {
        let _ = Request::from_frame(frame);
        let _ = Response::from_frame(frame);
    });
    prop_assert!(total <= limit, "{:?} body of {} bytes allocated {total}", frame.opcode, frame.body.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoder_survives_hostile_input(bytes in hostile_bytes()) {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        check_one(&mut decoder, &bytes)?;
    }

    /// A connection loop fed in random chunks: it always ends (every step consumes bytes,
    /// waits for more, or closes) and never decodes more than it was given.
    #[test]
    fn connection_loop_terminates_on_any_stream(
        chunks in proptest::collection::vec(hostile_bytes(), 1..4),
        cuts in proptest::collection::vec(1..64usize, 1..8),
    ) {
        let stream: Vec<u8> = chunks.concat();
        let mut decoder = FrameDecoder::new(4096);
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut cut = cuts.iter().cycle();
        'conn: while fed < stream.len() {
            let next = (fed + cut.next().copied().unwrap_or(1)).min(stream.len());
            buf.extend_from_slice(&stream[fed..next]);
            fed = next;
            loop {
                match check_one(&mut decoder, &buf)? {
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
    let mut bytes = Vec::new();
    encode_frame(&Frame::new(Opcode::Query, 1, vec![]), &mut bytes);
    for declared in [u32::MAX, (DEFAULT_MAX_FRAME_BYTES - HEADER_BYTES) as u32] {
        bytes[12..16].copy_from_slice(&declared.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..20]);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        let (result, total, _) = measured(|| decoder.decode(&bytes));
        assert_eq!(total, 0, "declared {declared}: {result:?}");
        match declared {
            u32::MAX => assert!(result.is_err_and(|e| e.is_fatal() && e.stream() == 1)),
            _ => assert_eq!(result, Ok(None), "a frame at the limit waits for its body"),
        }
    }
}

/// The densest encodings (one-byte nulls, empty statements) decode within the amplification
/// bound the fuzzer checks, at sizes where a doubling vector would show.
#[test]
fn densest_bodies_stay_within_the_memory_bound() {
    let int = ColumnSpec { name: "n".into(), ty: ColumnType::Int };
    let rows = Response::Result(QueryResult::Rows(Rows {
        columns: vec![int],
        rows: vec![vec![None]; 200_000],
        paging_state: None,
    }));
    let execute = Request::Execute {
        id: PreparedId([1; 16]),
        values: vec![None; wire::protocol::MAX_BOUND_VALUES],
        params: QueryParams::default(),
    };
    let batch = Request::Batch(BatchRequest {
        kind: BatchKind::Unlogged,
        statements: vec![BatchStatement::Query(String::new(), vec![]); wire::protocol::MAX_BATCH_STATEMENTS],
        consistency: Consistency::One,
        timestamp: None,
    });
    // Nodes of empty shards: two bytes each, a vector each once decoded.
    let shardy = TopologyNode {
        host_id: 1,
        client: std::net::SocketAddr::from(([127, 0, 0, 1], 9470)),
        shard_aware: None,
        alive: true,
        tokens: vec![vec![]; wire::protocol::MAX_TOPOLOGY_SHARDS],
    };
    let nodes = vec![shardy; 64];
    let topology = Response::Result(QueryResult::Topology(TopologyAnswer::Full(Topology { version: 1, nodes })));
    for frame in [rows.to_frame(1), execute.to_frame(2), batch.to_frame(3), topology.to_frame(4)] {
        let (decoded, total, _) =
            measured(|| (Request::from_frame(&frame).is_ok(), Response::from_frame(&frame).is_ok()));
        assert!(decoded.0 || decoded.1, "{:?} decodes", frame.opcode);
        let limit = MAX_DECODE_AMPLIFICATION * frame.body.len() + DECODE_ALLOCATION_SLACK;
        assert!(total <= limit, "{:?}: {} body bytes allocated {total}", frame.opcode, frame.body.len());
        println!("{:?}: {} body bytes, {total} bytes allocated to decode", frame.opcode, frame.body.len());
    }
}

/// A version 2 frame (an older client's) is accepted and re-encodes byte for byte in its own
/// version: the server answers each client in the version it speaks.
#[test]
fn older_version_frame_round_trips_in_its_version() {
    let frame = Frame::new(Opcode::Options, 9, Vec::new());
    let mut bytes = Vec::new();
    encode_frame_as(2, &frame, &mut bytes);
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
    let (decoded, used) = decoder.decode(&bytes).expect("a version 2 frame decodes").expect("whole frame");
    assert_eq!(used, bytes.len());
    assert_eq!(decoder.last_version(), Some(2));
    let mut again = Vec::new();
    encode_frame_as(2, &decoded, &mut again);
    assert_eq!(again, bytes);
}

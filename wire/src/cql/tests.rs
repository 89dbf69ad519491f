//! Round trips of every message kind, byte-exact vectors written from the spec, and the
//! decoder's refusals.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use proptest::prelude::*;

use super::frame::{flags, SPEC_MAX_FRAME_BYTES};
use super::notation::MAX_TYPE_DEPTH;
use super::*;

// ---------------------------------------------------------------- strategies

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ é]{0,12}"
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..24)
}

fn consistency() -> impl Strategy<Value = Consistency> {
    proptest::sample::select(Consistency::ALL.to_vec())
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![blob().prop_map(Value::Bytes), Just(Value::Null), Just(Value::NotSet)]
}

fn bound_values() -> impl Strategy<Value = BoundValues> {
    prop_oneof![
        proptest::collection::vec(value(), 0..5).prop_map(BoundValues::Positional),
        proptest::collection::vec((text(), value()), 0..5).prop_map(BoundValues::Named),
    ]
}

prop_compose! {
    fn query_parameters()(
        consistency in consistency(),
        values in bound_values(),
        skip_metadata in any::<bool>(),
        page_size in proptest::option::of(any::<i32>()),
        paging_state in proptest::option::of(blob()),
        serial_consistency in proptest::option::of(consistency()),
        default_timestamp in proptest::option::of(any::<i64>()),
    ) -> QueryParameters {
        QueryParameters { consistency, values, skip_metadata, page_size, paging_state, serial_consistency, default_timestamp }
    }
}

fn batch() -> impl Strategy<Value = Batch> {
    let statement = (
        prop_oneof![text().prop_map(BatchQuery::Text), blob().prop_map(BatchQuery::Prepared)],
        proptest::collection::vec(value(), 0..4),
    )
        .prop_map(|(query, values)| BatchStatement { query, values });
    (
        proptest::sample::select(BatchKind::ALL.to_vec()),
        proptest::collection::vec(statement, 0..4),
        consistency(),
        proptest::option::of(consistency()),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(|(kind, statements, consistency, serial_consistency, default_timestamp)| Batch {
            kind,
            statements,
            consistency,
            serial_consistency,
            default_timestamp,
        })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        proptest::collection::vec((text(), text()), 0..4).prop_map(Request::Startup),
        proptest::option::of(blob()).prop_map(Request::AuthResponse),
        Just(Request::Options),
        (text(), query_parameters()).prop_map(|(query, params)| Request::Query { query, params }),
        text().prop_map(|query| Request::Prepare { query }),
        (blob(), query_parameters()).prop_map(|(id, params)| Request::Execute { id, params }),
        batch().prop_map(Request::Batch),
        proptest::collection::vec(proptest::sample::select(EventType::ALL.to_vec()), 0..4)
            .prop_map(|events| Request::Register { events }),
    ]
}

fn bytes_map() -> impl Strategy<Value = BytesMap> {
    proptest::collection::vec((text(), proptest::option::of(blob())), 0..3)
}

fn request_frame() -> impl Strategy<Value = RequestFrame> {
    (any::<i16>(), any::<bool>(), proptest::option::of(bytes_map()), request()).prop_map(
        |(stream, tracing, custom_payload, request)| RequestFrame { stream, tracing, custom_payload, request },
    )
}

fn data_type() -> impl Strategy<Value = DataType> {
    let leaf = prop_oneof![proptest::sample::select(DataType::NATIVE.to_vec()), text().prop_map(DataType::Custom)];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| DataType::List(Box::new(t))),
            inner.clone().prop_map(|t| DataType::Set(Box::new(t))),
            (inner.clone(), inner.clone()).prop_map(|(k, v)| DataType::Map(Box::new(k), Box::new(v))),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(DataType::Tuple),
            (text(), text(), proptest::collection::vec((text(), inner), 0..4))
                .prop_map(|(keyspace, name, fields)| DataType::Udt { keyspace, name, fields }),
        ]
    })
}

fn table_spec() -> impl Strategy<Value = Arc<TableSpec>> {
    prop_oneof![
        Just(Arc::new(TableSpec { keyspace: "ks".into(), table: "t".into() })),
        (text(), text()).prop_map(|(keyspace, table)| Arc::new(TableSpec { keyspace, table })),
    ]
}

fn columns(max: usize) -> impl Strategy<Value = Vec<ColumnSpec>> {
    proptest::collection::vec(
        (table_spec(), text(), data_type()).prop_map(|(table, name, data_type)| ColumnSpec { table, name, data_type }),
        0..max,
    )
}

fn rows_metadata() -> impl Strategy<Value = RowsMetadata> {
    (
        prop_oneof![columns(4).prop_map(Columns::Specs), (0usize..6).prop_map(Columns::Count)],
        proptest::option::of(blob()),
    )
        .prop_map(|(columns, paging_state)| RowsMetadata { columns, paging_state })
}

fn rows() -> impl Strategy<Value = Rows> {
    (rows_metadata(), 0usize..5).prop_flat_map(|(metadata, n)| {
        let width = metadata.columns.count();
        let n = if width == 0 { 0 } else { n };
        proptest::collection::vec(proptest::collection::vec(proptest::option::of(blob()), width), n)
            .prop_map(move |rows| Rows { metadata: metadata.clone(), rows })
    })
}

fn schema_change() -> impl Strategy<Value = SchemaChange> {
    let target = prop_oneof![
        text().prop_map(|keyspace| SchemaTarget::Keyspace { keyspace }),
        (text(), text()).prop_map(|(keyspace, table)| SchemaTarget::Table { keyspace, table }),
        (text(), text()).prop_map(|(keyspace, name)| SchemaTarget::Type { keyspace, name }),
        (text(), text(), proptest::collection::vec(text(), 0..3))
            .prop_map(|(keyspace, name, arg_types)| SchemaTarget::Function { keyspace, name, arg_types }),
        (text(), text(), proptest::collection::vec(text(), 0..3))
            .prop_map(|(keyspace, name, arg_types)| SchemaTarget::Aggregate { keyspace, name, arg_types }),
    ];
    (proptest::sample::select(ChangeType::ALL.to_vec()), target)
        .prop_map(|(change, target)| SchemaChange { change, target })
}

fn query_result() -> impl Strategy<Value = QueryResult> {
    prop_oneof![
        Just(QueryResult::Void),
        rows().prop_map(QueryResult::Rows),
        text().prop_map(QueryResult::SetKeyspace),
        (blob(), proptest::collection::vec(any::<u16>(), 0..4), columns(4), rows_metadata()).prop_map(
            |(id, pk_indexes, columns, result_metadata)| QueryResult::Prepared(Prepared {
                id,
                metadata: PreparedMetadata { pk_indexes, columns },
                result_metadata,
            })
        ),
        schema_change().prop_map(QueryResult::SchemaChange),
    ]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (proptest::sample::select(TopologyChange::ALL.to_vec()), socket_addr())
            .prop_map(|(change, address)| Event::TopologyChange { change, address }),
        (prop_oneof![Just(StatusChange::Up), Just(StatusChange::Down)], socket_addr())
            .prop_map(|(change, address)| Event::StatusChange { change, address }),
        schema_change().prop_map(Event::SchemaChange),
    ]
}

fn error_kind() -> impl Strategy<Value = ErrorKind> {
    let write_type = proptest::sample::select(WriteType::ALL.to_vec());
    let int = any::<i32>;
    prop_oneof![
        proptest::sample::select(vec![
            ErrorKind::Server,
            ErrorKind::Protocol,
            ErrorKind::BadCredentials,
            ErrorKind::Overloaded,
            ErrorKind::IsBootstrapping,
            ErrorKind::TruncateError,
            ErrorKind::Syntax,
            ErrorKind::Unauthorized,
            ErrorKind::Invalid,
            ErrorKind::Config,
        ]),
        (consistency(), int(), int()).prop_map(|(consistency, required, alive)| ErrorKind::Unavailable {
            consistency,
            required,
            alive
        }),
        (consistency(), int(), int(), write_type.clone()).prop_map(|(consistency, received, block_for, write_type)| {
            ErrorKind::WriteTimeout { consistency, received, block_for, write_type }
        }),
        (consistency(), int(), int(), any::<bool>()).prop_map(|(consistency, received, block_for, data_present)| {
            ErrorKind::ReadTimeout { consistency, received, block_for, data_present }
        }),
        (consistency(), int(), int(), int(), any::<bool>()).prop_map(
            |(consistency, received, block_for, failures, data_present)| ErrorKind::ReadFailure {
                consistency,
                received,
                block_for,
                failures,
                data_present
            }
        ),
        (text(), text(), proptest::collection::vec(text(), 0..3))
            .prop_map(|(keyspace, function, arg_types)| ErrorKind::FunctionFailure { keyspace, function, arg_types }),
        (consistency(), int(), int(), int(), write_type).prop_map(
            |(consistency, received, block_for, failures, write_type)| ErrorKind::WriteFailure {
                consistency,
                received,
                block_for,
                failures,
                write_type
            }
        ),
        (text(), text()).prop_map(|(keyspace, table)| ErrorKind::AlreadyExists { keyspace, table }),
        blob().prop_map(|id| ErrorKind::Unprepared { id }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (error_kind(), text()).prop_map(|(kind, message)| Response::Error(ErrorBody { kind, message })),
        Just(Response::Ready),
        text().prop_map(|authenticator| Response::Authenticate { authenticator }),
        proptest::collection::vec((text(), proptest::collection::vec(text(), 0..3)), 0..4)
            .prop_map(Response::Supported),
        query_result().prop_map(Response::Result),
        event().prop_map(Response::Event),
        proptest::option::of(blob()).prop_map(Response::AuthChallenge),
        proptest::option::of(blob()).prop_map(Response::AuthSuccess),
    ]
}

fn response_frame() -> impl Strategy<Value = ResponseFrame> {
    (
        any::<i16>(),
        proptest::option::of(any::<[u8; 16]>().prop_map(Uuid)),
        proptest::collection::vec(text(), 0..3),
        proptest::option::of(bytes_map()),
        response(),
    )
        .prop_map(|(stream, tracing_id, warnings, custom_payload, response)| ResponseFrame {
            stream,
            tracing_id,
            warnings,
            custom_payload,
            response,
        })
}

fn compression() -> impl Strategy<Value = Option<Compression>> {
    proptest::option::of(Just(Compression::Lz4))
}

// ---------------------------------------------------------------- helpers

fn request_bytes(frame: &RequestFrame, compression: Option<Compression>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_request(frame, compression, &mut out);
    out
}

fn response_bytes(frame: &ResponseFrame, compression: Option<Compression>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response(frame, compression, &mut out);
    out
}

fn decode_one_request(bytes: &[u8], compression: Option<Compression>) -> RequestFrame {
    let (frame, used) = FrameDecoder::requests().decode(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    decode_request(&frame, compression, DEFAULT_MAX_FRAME_BYTES).unwrap()
}

fn decode_one_response(bytes: &[u8], compression: Option<Compression>) -> ResponseFrame {
    let (frame, used) = FrameDecoder::responses().decode(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    decode_response(&frame, compression, DEFAULT_MAX_FRAME_BYTES).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap()).collect()
}

// ---------------------------------------------------------------- round trips

proptest! {
    #[test]
    fn requests_round_trip(frame in request_frame(), compression in compression()) {
        let bytes = request_bytes(&frame, compression);
        prop_assert_eq!(bytes[0], 0x04);
        let compressed = bytes[1] & flags::COMPRESSION != 0;
        prop_assert_eq!(compressed, compression.is_some() && !matches!(frame.request, Request::Startup(_)));
        prop_assert_eq!(decode_one_request(&bytes, compression), frame);
    }

    #[test]
    fn responses_round_trip(frame in response_frame(), compression in compression()) {
        let bytes = response_bytes(&frame, compression);
        prop_assert_eq!(bytes[0], 0x84);
        prop_assert_eq!(decode_one_response(&bytes, compression), frame);
    }

    #[test]
    fn frames_back_to_back_and_split_anywhere(frames in proptest::collection::vec(request_frame(), 1..4)) {
        let mut bytes = Vec::new();
        frames.iter().for_each(|f| encode_request(f, None, &mut bytes));
        let decoder = FrameDecoder::requests();
        let mut at = 0;
        for frame in &frames {
            let end = at + HEADER_BYTES + u32::from_be_bytes(bytes[at + 5..at + 9].try_into().unwrap()) as usize;
            for cut in at..end {
                prop_assert_eq!(decoder.decode(&bytes[at..cut]), Ok(None), "cut at {}", cut);
            }
            let (raw, used) = decoder.decode(&bytes[at..]).unwrap().unwrap();
            prop_assert_eq!(at + used, end);
            prop_assert_eq!(&decode_request(&raw, None, DEFAULT_MAX_FRAME_BYTES).unwrap(), frame);
            at = end;
        }
        prop_assert_eq!(at, bytes.len());
    }

    #[test]
    fn lz4_round_trips(body in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..2000)) {
        let compressed = Compression::Lz4.compress(&body);
        prop_assert_eq!(&compressed[..4], &(body.len() as u32).to_be_bytes());
        prop_assert_eq!(Compression::Lz4.decompress(&compressed, body.len()).unwrap(), body);
    }

    #[test]
    fn any_bytes_are_a_frame_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for decoder in [FrameDecoder::requests(), FrameDecoder::responses()] {
            if let Ok(Some((frame, used))) = decoder.decode(&bytes) {
                prop_assert!(used <= bytes.len());
                let _ = decode_request(&frame, Some(Compression::Lz4), DEFAULT_MAX_FRAME_BYTES);
                let _ = decode_response(&frame, Some(Compression::Lz4), DEFAULT_MAX_FRAME_BYTES);
            }
        }
    }

    #[test]
    fn any_body_is_a_message_or_a_typed_error(
        opcode in proptest::sample::select(Opcode::ALL.to_vec()),
        flag_bits in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        for direction in [Direction::Request, Direction::Response] {
            let frame = Frame { direction, flags: flag_bits, stream: 3, opcode, body: body.clone() };
            let _ = decode_request(&frame, Some(Compression::Lz4), 4096);
            let _ = decode_response(&frame, Some(Compression::Lz4), 4096);
        }
    }

    #[test]
    fn mutated_messages_decode_or_fail_typed(
        frame in request_frame(),
        reply in response_frame(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        // Edit body bytes only, so that the frames stay delimited and the message decoders
        // see the damage.
        for mut bytes in [request_bytes(&frame, None), response_bytes(&reply, None)] {
            if bytes.len() == HEADER_BYTES {
                continue;
            }
            for (at, byte) in &edits {
                let i = HEADER_BYTES + at.index(bytes.len() - HEADER_BYTES);
                bytes[i] = *byte;
            }
            let decoder = if bytes[0] == 0x04 { FrameDecoder::requests() } else { FrameDecoder::responses() };
            let (raw, _) = decoder.decode(&bytes).unwrap().unwrap();
            let _ = decode_request(&raw, None, DEFAULT_MAX_FRAME_BYTES);
            let _ = decode_response(&raw, None, DEFAULT_MAX_FRAME_BYTES);
        }
    }
}

// ---------------------------------------------------------------- vectors from the spec

#[test]
fn options_request_vector() {
    let bytes = request_bytes(&RequestFrame::new(0, Request::Options), None);
    // version 4 request, no flags, stream 0, opcode 0x05, empty body.
    assert_eq!(bytes, hex("04 00 0000 05 00000000"));
    assert_eq!(decode_one_request(&bytes, None), RequestFrame::new(0, Request::Options));
}

#[test]
fn ready_response_vector() {
    let bytes = response_bytes(&ResponseFrame::new(1, Response::Ready), None);
    assert_eq!(bytes, hex("84 00 0001 02 00000000"));
}

#[test]
fn startup_vector() {
    let startup = Request::Startup(vec![("CQL_VERSION".into(), "3.0.0".into())]);
    let bytes = request_bytes(&RequestFrame::new(0, startup.clone()), Some(Compression::Lz4));
    // A [string map] of one pair: [short] 1, [string] "CQL_VERSION", [string] "3.0.0";
    // never compressed.
    let mut expected = hex("04 00 0000 01 00000016 0001 000b");
    expected.extend_from_slice(b"CQL_VERSION");
    expected.extend_from_slice(&hex("0005"));
    expected.extend_from_slice(b"3.0.0");
    assert_eq!(bytes, expected);
    let back = decode_one_request(&bytes, None).request;
    assert_eq!(back, startup);
    let Request::Startup(options) = back else { unreachable!() };
    assert_eq!(startup_option(&options, "CQL_VERSION"), Some("3.0.0"));
    assert_eq!(startup_option(&options, "COMPRESSION"), None);
}

#[test]
fn query_vector_with_every_flag() {
    let params = QueryParameters {
        consistency: Consistency::LocalOne,
        values: BoundValues::Named(vec![("k".into(), Value::Bytes(vec![0, 0, 0, 7])), ("v".into(), Value::NotSet)]),
        skip_metadata: true,
        page_size: Some(5000),
        paging_state: Some(vec![0xAB]),
        serial_consistency: Some(Consistency::LocalSerial),
        default_timestamp: Some(1),
    };
    let bytes = request_bytes(&RequestFrame::new(2, Request::Query { query: "SELECT".into(), params }), None);
    let mut expected = hex("04 00 0002 07 00000034 00000006");
    expected.extend_from_slice(b"SELECT");
    expected.extend_from_slice(&hex(concat!(
        "000a 7f",                        // LOCAL_ONE, flags 0x01|0x02|0x04|0x08|0x10|0x20|0x40
        "0002 0001 6b 00000004 00000007", // two values: "k" = int 7
        "0001 76 fffffffe",               // "v" = not set (-2)
        "00001388",                       // page size 5000
        "00000001 ab",                    // paging state
        "0009",                           // LOCAL_SERIAL
        "0000000000000001",               // default timestamp
    )));
    assert_eq!(bytes, expected);
}

#[test]
fn unavailable_error_vector() {
    let error =
        ErrorBody::new(ErrorKind::Unavailable { consistency: Consistency::Quorum, required: 3, alive: 1 }, "no");
    let bytes = response_bytes(&ResponseFrame::new(5, Response::Error(error)), None);
    let mut expected = hex("84 00 0005 00 00000012 00001000 0002");
    expected.extend_from_slice(b"no");
    expected.extend_from_slice(&hex("0004 00000003 00000001"));
    assert_eq!(bytes, expected);
}

#[test]
fn rows_vector_with_a_global_table_spec() {
    let column = ColumnSpec {
        table: Arc::new(TableSpec { keyspace: "ks".into(), table: "t".into() }),
        name: "k".into(),
        data_type: DataType::Int,
    };
    let rows = Rows {
        metadata: RowsMetadata { columns: Columns::Specs(vec![column]), paging_state: None },
        rows: vec![vec![Some(vec![0, 0, 0, 1])], vec![None]],
    };
    let bytes = response_bytes(&ResponseFrame::new(3, Response::Result(QueryResult::Rows(rows))), None);
    let expected = hex(concat!(
        "84 00 0003 08 00000028",
        "00000002",                   // Rows
        "00000001 00000001",          // Global_tables_spec, one column
        "0002 6b73 0001 74",          // "ks" "t"
        "0001 6b 0009",               // "k" int
        "00000002",                   // two rows
        "00000004 00000001 ffffffff", // 1, null
    ));
    assert_eq!(bytes, expected);
}

#[test]
fn prepared_vector_with_pk_indexes() {
    let marker = |name: &str| ColumnSpec {
        table: Arc::new(TableSpec { keyspace: "k".into(), table: "t".into() }),
        name: name.into(),
        data_type: DataType::Varchar,
    };
    let prepared = Prepared {
        id: vec![0xAA, 0xBB],
        metadata: PreparedMetadata { pk_indexes: vec![1, 0], columns: vec![marker("a"), marker("b")] },
        result_metadata: RowsMetadata::empty(),
    };
    let bytes = response_bytes(&ResponseFrame::new(0, Response::Result(QueryResult::Prepared(prepared))), None);
    let expected = hex(concat!(
        "84 00 0000 08 00000030",
        "00000004",                             // Prepared
        "0002 aabb",                            // id
        "00000001 00000002 00000002 0001 0000", // global spec, 2 markers, pk indexes [1, 0]
        "0001 6b 0001 74",                      // "k" "t"
        "0001 61 000d 0001 62 000d",            // a text, b text
        "00000004 00000000",                    // result metadata: No_metadata, 0 columns
    ));
    assert_eq!(bytes, expected);
}

#[test]
fn event_vector_on_stream_minus_one() {
    let event = Event::StatusChange { change: StatusChange::Up, address: "10.0.0.1:9042".parse().unwrap() };
    let bytes = response_bytes(&ResponseFrame::event(event), None);
    let mut expected = hex("84 00 ffff 0c 0000001c 000d");
    expected.extend_from_slice(b"STATUS_CHANGE");
    expected.extend_from_slice(&hex("0002"));
    expected.extend_from_slice(b"UP");
    expected.extend_from_slice(&hex("04 0a000001 00002352"));
    assert_eq!(bytes, expected);
}

#[test]
fn lz4_vector_of_literals() {
    // A block of one sequence holding the 5 literals "hello" (token 0x50) and no match.
    let body = hex("00000005 50 68656c6c6f");
    assert_eq!(Compression::Lz4.decompress(&body, 100).unwrap(), b"hello");
    // The same body as a compressed READY... is refused: READY has an empty body.
    let mut frame = hex("84 01 0000 08 0000000a");
    frame.extend_from_slice(&body);
    let (raw, _) = FrameDecoder::responses().decode(&frame).unwrap().unwrap();
    assert!(matches!(
        decode_response(&raw, Some(Compression::Lz4), 4096),
        Err(MessageError::Malformed { opcode: Opcode::Result, .. })
    ));
    assert_eq!(decode_response(&raw, None, 4096), Err(MessageError::NotNegotiated { opcode: Opcode::Result }));
}

// ---------------------------------------------------------------- refusals

#[test]
fn newer_versions_get_a_v4_protocol_error_on_their_stream() {
    // A v5 OPTIONS on stream 7, and the vendor versions the python driver tries first.
    for version in [0x05u8, 0x41, 0x42, 0x7f] {
        let bytes = [version, 0, 0, 7, 0x05, 0, 0, 0, 0];
        let decoder = FrameDecoder::requests();
        assert_eq!(decoder.decode(&bytes[..8]), Ok(None), "the stream is read before answering");
        let err = decoder.decode(&bytes).unwrap_err();
        assert!(matches!(err, FrameError::UnsupportedVersion { stream: 7, .. }), "{err:?}");
        assert!(err.is_fatal());
        assert_eq!(err.answer_version(), 0x84);
        let mut answer = Vec::new();
        encode_frame_error_answer(&err, &mut answer);
        assert_eq!(&answer[..5], &hex("84 00 0007 00"));
        let reply = decode_one_response(&answer, None);
        let Response::Error(ErrorBody { kind: ErrorKind::Protocol, message }) = reply.response else {
            panic!("{reply:?}")
        };
        assert!(message.contains("unsupported protocol version"), "{message}");
    }
}

#[test]
fn older_versions_are_answered_in_their_own_version() {
    // v3: the v4 header layout with version byte 0x83.
    let err = FrameDecoder::requests().decode(&hex("03 00 0009 05 00000000")).unwrap_err();
    assert_eq!(err, FrameError::UnsupportedVersion { version: 3, stream: 9 });
    let mut answer = Vec::new();
    encode_frame_error_answer(&err, &mut answer);
    assert_eq!(&answer[..5], &hex("83 00 0009 00"));
    // v2: an 8-byte header with a one-byte stream.
    let err = FrameDecoder::requests().decode(&hex("02 00 fe 05 00000000")).unwrap_err();
    assert_eq!(err, FrameError::UnsupportedVersion { version: 2, stream: -2 });
    let mut answer = Vec::new();
    encode_frame_error_answer(&err, &mut answer);
    assert_eq!(&answer[..4], &hex("82 00 fe 00"), "header: {:02x?}", &answer[..8]);
    let len = u32::from_be_bytes(answer[4..8].try_into().unwrap()) as usize;
    assert_eq!(answer.len(), 8 + len);
    assert_eq!(&answer[8..12], &hex("0000000a"));
}

#[test]
fn frame_limits_and_directions_are_typed() {
    let decoder = FrameDecoder::new(Direction::Request, 0);
    assert_eq!(decoder.max_frame_bytes(), 4096, "a limit is at least 4096");
    assert_eq!(FrameDecoder::new(Direction::Request, usize::MAX).max_frame_bytes(), SPEC_MAX_FRAME_BYTES);
    let err = decoder.decode(&hex("04 00 0003 07 00001000")).unwrap_err();
    assert_eq!(err, FrameError::TooLarge { stream: 3, len: 4096 + 9, limit: 4096 });
    assert_eq!(decoder.decode(&hex("04 00 0003 07 00000ff7")), Ok(None), "4096 bytes in all is within the limit");
    let err = decoder.decode(&hex("84 00 0003 02 00000000")).unwrap_err();
    assert!(matches!(err, FrameError::WrongDirection { stream: 3, .. }));
    // An unknown opcode is skipped whole: the connection goes on.
    let err = decoder.decode(&hex("04 00 0004 04 00000002 abcd 04000005 05 00000000")).unwrap_err();
    assert_eq!(err, FrameError::UnknownOpcode { stream: 4, opcode: 0x04, consumed: 11 });
    let mut answer = Vec::new();
    encode_frame_error_answer(&err, &mut answer);
    assert_eq!(&answer[..5], &hex("84 00 0004 00"));
    // A response opcode in a request frame is a message error.
    let (frame, _) = decoder.decode(&hex("04 00 0001 02 00000000")).unwrap().unwrap();
    assert_eq!(
        decode_request(&frame, None, 4096),
        Err(MessageError::UnexpectedOpcode { opcode: Opcode::Ready, expected: Direction::Request })
    );
}

#[test]
fn hostile_lengths_and_counts_are_refused_before_allocation() {
    // A compressed body declaring 1 GiB: refused by the limit and by the lz4 ratio.
    let err = Compression::Lz4.decompress(&hex("40000000 00"), usize::MAX).unwrap_err();
    assert!(matches!(err, CompressionError::TooLarge { declared: 0x4000_0000, limit: 319 }), "{err:?}");
    let err = Compression::Lz4.decompress(&hex("00010000 00"), 100).unwrap_err();
    assert!(matches!(err, CompressionError::TooLarge { limit: 100, .. }), "{err:?}");
    assert!(matches!(Compression::Lz4.decompress(&hex("ffffffff"), 100), Err(CompressionError::NegativeLength { .. })));
    assert!(matches!(Compression::Lz4.decompress(&hex("0000"), 100), Err(CompressionError::Truncated { len: 2 })));
    // A corrupt block, and a block shorter than declared.
    assert!(Compression::Lz4.decompress(&hex("00000005 f0"), 100).is_err());
    assert!(matches!(
        Compression::Lz4.decompress(&hex("00000006 50 68656c6c6f"), 100),
        Err(CompressionError::Corrupt { .. } | CompressionError::LengthMismatch { .. })
    ));
    // A string list announcing 65535 strings in 2 bytes.
    let mut r = notation::Reader::new(&[0xff, 0xff, 0, 0]);
    assert!(matches!(r.string_list(), Err(crate::codec::DecodeError::TooLong { len: 65535, limit: 1, .. })));
    // Rows announcing 2^31 - 1 rows of one column.
    let mut body = hex("00000002 00000004 00000001 7fffffff");
    body.extend_from_slice(&[0; 8]);
    let frame = Frame { direction: Direction::Response, flags: 0, stream: 0, opcode: Opcode::Result, body };
    assert!(matches!(
        decode_response(&frame, None, 4096),
        Err(MessageError::Malformed { source: crate::codec::DecodeError::TooLong { .. }, .. })
    ));
    // A value of length -3.
    let mut r = notation::Reader::new(&[0xff, 0xff, 0xff, 0xfd]);
    assert!(matches!(r.value(), Err(crate::codec::DecodeError::Invalid { what: "value length", .. })));
}

#[test]
fn deeply_nested_types_are_refused_without_recursing_further() {
    let mut bytes = Vec::new();
    for _ in 0..10_000 {
        bytes.extend_from_slice(&[0x00, 0x20]);
    }
    bytes.extend_from_slice(&[0x00, 0x09]);
    let err = DataType::decode(&mut notation::Reader::new(&bytes)).unwrap_err();
    assert!(matches!(err, crate::codec::DecodeError::Invalid { what: "column type", .. }), "{err:?}");
    // Within the bound it decodes.
    let depth = MAX_TYPE_DEPTH - 1;
    let mut bytes: Vec<u8> = (0..depth).flat_map(|_| [0x00, 0x22]).collect();
    bytes.extend_from_slice(&[0x00, 0x01]);
    let mut t = DataType::decode(&mut notation::Reader::new(&bytes)).unwrap();
    for _ in 0..depth {
        let DataType::Set(inner) = t else { panic!("not a set") };
        t = *inner;
    }
    assert_eq!(t, DataType::Ascii);
}

#[test]
fn batch_named_values_and_low_flags_are_refused() {
    let batch = Batch {
        kind: BatchKind::Unlogged,
        statements: vec![BatchStatement { query: BatchQuery::Prepared(vec![1]), values: vec![Value::Null] }],
        consistency: Consistency::One,
        serial_consistency: None,
        default_timestamp: None,
    };
    let bytes = request_bytes(&RequestFrame::new(1, Request::Batch(batch)), None);
    assert_eq!(&bytes[HEADER_BYTES..], &hex("01 0001 01 0001 01 0001 ffffffff 0001 00"));
    for flag in [0x40u8, 0x01] {
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() = flag;
        let (frame, _) = FrameDecoder::requests().decode(&bad).unwrap().unwrap();
        let err = decode_request(&frame, None, 4096).unwrap_err();
        assert!(
            matches!(
                &err,
                MessageError::Malformed { source: crate::codec::DecodeError::Invalid { what: "batch flags", .. }, .. }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn requests_are_strict_and_responses_lenient_about_trailing_bytes() {
    let (frame, _) = FrameDecoder::requests().decode(&hex("04 00 0000 05 00000001 00")).unwrap().unwrap();
    assert!(matches!(
        decode_request(&frame, None, 4096),
        Err(MessageError::Malformed { source: crate::codec::DecodeError::Trailing { extra: 1 }, .. })
    ));
    let (frame, _) = FrameDecoder::responses().decode(&hex("84 00 0000 02 00000001 00")).unwrap().unwrap();
    assert_eq!(decode_response(&frame, None, 4096).unwrap().response, Response::Ready);
}

#[test]
fn a_compressed_startup_is_refused() {
    let startup = RequestFrame::new(0, Request::Startup(vec![("CQL_VERSION".into(), "3.0.0".into())]));
    let mut bytes = request_bytes(&startup, None);
    bytes[1] |= flags::COMPRESSION;
    let (frame, _) = FrameDecoder::requests().decode(&bytes).unwrap().unwrap();
    assert_eq!(decode_request(&frame, Some(Compression::Lz4), 4096), Err(MessageError::CompressedStartup));
}

#[test]
fn long_strings_are_cut_at_a_char_boundary() {
    let long = "é".repeat(40_000);
    let mut out = Vec::new();
    notation::Writer::new(&mut out).string(&long);
    let back = notation::Reader::new(&out).string().unwrap().to_owned();
    assert_eq!(back.len(), 65_534);
    assert!(long.starts_with(&back));
}

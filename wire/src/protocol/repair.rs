//! ADMIN repair (`enigmadb admin repair`): the plan request (which token ranges of which
//! tables this node repairs) and the per-range request, with their results, so the CLI can
//! print progress after every range. Pure encode/decode; the repair itself is the server's.
//! Layout: docs/PROTOCOL.md, "ADMIN".

use super::admin::{read_count, read_opt_text, write_opt_text};
use super::{read_bool, read_list, read_text, MAX_NAME_BYTES};
use crate::codec::{DecodeError, Reader, Writer, MAX_FIELD_LEN};

/// A repair command, sent as ADMIN command 8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairRequest {
    /// The ranges to repair: every vnode range of `table` (or of every table) the node holds a
    /// replica of and shares with another node; only those it is the first replica of when
    /// `primary_only` (nodetool's `-pr`). Starts a session the range requests name.
    Plan { table: Option<String>, primary_only: bool },
    /// Repairs one range of a plan with the range's live replicas.
    Range(RangeRequest),
}

/// One range of a plan to repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRequest {
    /// The session of the plan (its totals are logged when its last range is done).
    pub session: u64,
    pub table: String,
    /// Tokens in (start, end], wrapping; start == end is the whole ring.
    pub start: i64,
    pub end: i64,
    /// The deepest Merkle tree the replicas build (a tree is only as deep as its partition
    /// count needs).
    pub max_depth: u8,
}

/// One range of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairRange {
    pub table: String,
    pub start: i64,
    pub end: i64,
}

/// What repairing one range did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRepaired {
    /// Other replicas whose trees were compared with this node's.
    pub replicas_compared: u32,
    /// Other replicas skipped: down, or failed to answer (`failure` says why).
    pub replicas_skipped: u32,
    /// Streams of a sub-range (adjacent differing Merkle leaves joined) from or to one replica.
    pub subranges_streamed: u32,
    pub partitions_received: u64,
    pub partitions_sent: u64,
    pub rows_received: u64,
    pub rows_sent: u64,
    /// Bytes of partitions received (SCAN_RESULT bodies) and sent (MUTATE bodies).
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// The first replica failure, if any.
    pub failure: Option<String>,
}

/// The answer to a [`RepairRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairResult {
    Plan { session: u64, ranges: Vec<RepairRange> },
    Range(RangeRepaired),
}

const REQUEST_PLAN: u8 = 1;
const REQUEST_RANGE: u8 = 2;
const RESULT_PLAN: u8 = 1;
const RESULT_RANGE: u8 = 2;
/// Smallest range in a plan: empty name (u32 length), two tokens.
const MIN_REPAIR_RANGE_BYTES: usize = 4 + 8 + 8;

impl RepairRequest {
    pub(super) fn write(&self, w: &mut Writer) {
        match self {
            RepairRequest::Plan { table, primary_only } => {
                write_opt_text(w.u8(REQUEST_PLAN), table.as_deref());
                w.u8(u8::from(*primary_only));
            }
            RepairRequest::Range(r) => {
                w.u8(REQUEST_RANGE).u64(r.session).str(&r.table).i64(r.start).i64(r.end).u8(r.max_depth);
            }
        }
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<RepairRequest, DecodeError> {
        Ok(match r.u8()? {
            REQUEST_PLAN => {
                RepairRequest::Plan { table: read_opt_text(r)?, primary_only: read_bool(r, "primary only")? }
            }
            REQUEST_RANGE => RepairRequest::Range(RangeRequest {
                session: r.u64()?,
                table: read_text(r, MAX_NAME_BYTES)?,
                start: r.i64()?,
                end: r.i64()?,
                max_depth: r.u8()?,
            }),
            other => return Err(r.invalid("repair request", format!("unknown kind {other}"))),
        })
    }
}

impl RepairResult {
    pub(super) fn write(&self, w: &mut Writer) {
        match self {
            RepairResult::Plan { session, ranges } => {
                w.u8(RESULT_PLAN).u64(*session).u32(ranges.len() as u32);
                for range in ranges {
                    w.str(&range.table).i64(range.start).i64(range.end);
                }
            }
            RepairResult::Range(done) => {
                w.u8(RESULT_RANGE).u32(done.replicas_compared).u32(done.replicas_skipped);
                w.u32(done.subranges_streamed).u64(done.partitions_received).u64(done.partitions_sent);
                w.u64(done.rows_received).u64(done.rows_sent).u64(done.bytes_received).u64(done.bytes_sent);
                write_opt_text(w, done.failure.as_deref());
            }
        }
    }

    pub(super) fn read(r: &mut Reader<'_>) -> Result<RepairResult, DecodeError> {
        Ok(match r.u8()? {
            RESULT_PLAN => {
                let session = r.u64()?;
                let n = read_count(r, MIN_REPAIR_RANGE_BYTES)?;
                let ranges = read_list(r, n, |r, _| {
                    Ok(RepairRange { table: read_text(r, MAX_NAME_BYTES)?, start: r.i64()?, end: r.i64()? })
                })?;
                RepairResult::Plan { session, ranges }
            }
            RESULT_RANGE => RepairResult::Range(RangeRepaired {
                replicas_compared: r.u32()?,
                replicas_skipped: r.u32()?,
                subranges_streamed: r.u32()?,
                partitions_received: r.u64()?,
                partitions_sent: r.u64()?,
                rows_received: r.u64()?,
                rows_sent: r.u64()?,
                bytes_received: r.u64()?,
                bytes_sent: r.u64()?,
                failure: match read_bool(r, "failure presence")? {
                    true => Some(read_text(r, MAX_FIELD_LEN)?),
                    false => None,
                },
            }),
            other => return Err(r.invalid("repair result", format!("unknown kind {other}"))),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    pub fn any_repair_request() -> impl Strategy<Value = RepairRequest> {
        prop_oneof![
            (proptest::option::of("[a-z_]{1,12}"), any::<bool>())
                .prop_map(|(table, primary_only)| RepairRequest::Plan { table, primary_only }),
            (any::<u64>(), "[a-z_]{1,12}", any::<i64>(), any::<i64>(), any::<u8>()).prop_map(
                |(session, table, start, end, max_depth)| RepairRequest::Range(RangeRequest {
                    session,
                    table,
                    start,
                    end,
                    max_depth
                })
            ),
        ]
    }

    pub fn any_repair_result() -> impl Strategy<Value = RepairResult> {
        let range = ("[a-z_]{1,12}", any::<i64>(), any::<i64>()).prop_map(|(table, start, end)| RepairRange {
            table,
            start,
            end,
        });
        let done = (
            proptest::array::uniform3(any::<u32>()),
            proptest::array::uniform6(any::<u64>()),
            proptest::option::of(".{0,20}"),
        )
            .prop_map(|(c, n, failure)| RangeRepaired {
                replicas_compared: c[0],
                replicas_skipped: c[1],
                subranges_streamed: c[2],
                partitions_received: n[0],
                partitions_sent: n[1],
                rows_received: n[2],
                rows_sent: n[3],
                bytes_received: n[4],
                bytes_sent: n[5],
                failure,
            });
        prop_oneof![
            (any::<u64>(), proptest::collection::vec(range, 0..4))
                .prop_map(|(session, ranges)| RepairResult::Plan { session, ranges }),
            done.prop_map(RepairResult::Range),
        ]
    }

    proptest! {
        #[test]
        fn repair_messages_round_trip(request in any_repair_request(), result in any_repair_result()) {
            let mut w = Writer::new();
            request.write(&mut w);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(RepairRequest::read(&mut r).unwrap(), request);
            r.finish().unwrap();
            let mut w = Writer::new();
            result.write(&mut w);
            let bytes = w.into_bytes();
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(RepairResult::read(&mut r).unwrap(), result);
            r.finish().unwrap();
        }

        #[test]
        fn damaged_repair_messages_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RepairRequest::read(&mut Reader::new(&bytes));
            let _ = RepairResult::read(&mut Reader::new(&bytes));
        }
    }

    #[test]
    fn unknown_kinds_are_typed_errors() {
        let err = RepairRequest::read(&mut Reader::new(&[7])).unwrap_err();
        assert!(err.to_string().contains("unknown kind 7"), "{err}");
        let err = RepairResult::read(&mut Reader::new(&[0])).unwrap_err();
        assert!(err.to_string().contains("unknown kind 0"), "{err}");
    }
}

//! RESP2, the Redis protocol, as far as the stress tool speaks it: commands out (arrays of bulk
//! strings) and the replies SET, GET and INFO give back (simple strings, errors, integers, bulk
//! strings). Pure encoding and decoding; it never trusts a length before checking the bound.

/// Largest bulk string accepted in a reply (a GET of a stress value, or INFO's text).
pub const MAX_BULK_BYTES: usize = 16 << 20;

/// Longest simple-string, error or integer line accepted.
pub const MAX_LINE_BYTES: usize = 64 << 10;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None` is the null bulk string (GET of an absent key).
    Bulk(Option<Vec<u8>>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("unexpected reply type byte {0:#04x}")]
    Type(u8),
    #[error("a reply line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("malformed reply line {0:?}")]
    BadLine(String),
    #[error("bulk string of {len} bytes exceeds the limit of {MAX_BULK_BYTES}")]
    BulkTooLarge { len: i64 },
    #[error("bulk string not followed by CRLF")]
    BulkTerminator,
}

/// Appends the command `args` (e.g. `SET key value`) to `out`.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes the first reply of `buf`: `Ok(None)` when more bytes are needed, else the reply and
/// the bytes it took.
pub fn decode_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    let Some(&kind) = buf.first() else { return Ok(None) };
    let Some(line_end) = find_crlf(&buf[1..]) else {
        return match buf.len() > MAX_LINE_BYTES {
            true => Err(RespError::LineTooLong),
            false => Ok(None),
        };
    };
    let line = &buf[1..1 + line_end];
    let after_line = 1 + line_end + 2;
    let text = || String::from_utf8_lossy(line).into_owned();
    let reply = match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Integer(parse_int(line)?),
        b'$' => {
            let len = parse_int(line)?;
            if len == -1 {
                return Ok(Some((Reply::Bulk(None), after_line)));
            }
            let n =
                usize::try_from(len).ok().filter(|&n| n <= MAX_BULK_BYTES).ok_or(RespError::BulkTooLarge { len })?;
            let end = after_line + n;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::BulkTerminator);
            }
            return Ok(Some((Reply::Bulk(Some(buf[after_line..end].to_vec())), end + 2)));
        }
        other => return Err(RespError::Type(other)),
    };
    Ok(Some((reply, after_line)))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).take(MAX_LINE_BYTES).position(|w| w == b"\r\n")
}

fn parse_int(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RespError::BadLine(String::from_utf8_lossy(line).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b"v\r\n"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n");
    }

    #[test]
    fn replies_decode_one_at_a_time() {
        let buf = b"+OK\r\n-ERR wrong\r\n:42\r\n$3\r\nabc\r\n$-1\r\n$0\r\n\r\n";
        let mut at = 0;
        let mut replies = Vec::new();
        while let Some((reply, used)) = decode_reply(&buf[at..]).unwrap() {
            replies.push(reply);
            at += used;
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            replies,
            vec![
                Reply::Simple("OK".into()),
                Reply::Error("ERR wrong".into()),
                Reply::Integer(42),
                Reply::Bulk(Some(b"abc".to_vec())),
                Reply::Bulk(None),
                Reply::Bulk(Some(Vec::new())),
            ]
        );
    }

    #[test]
    fn partial_replies_wait_for_more_bytes() {
        for partial in [&b""[..], b"+O", b"+OK\r", b"$5\r\nab", b"$5\r\nabcde\r"] {
            assert_eq!(decode_reply(partial), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn malformed_replies_are_typed_errors() {
        assert_eq!(decode_reply(b"*1\r\n"), Err(RespError::Type(b'*')));
        assert_eq!(decode_reply(b":x\r\n"), Err(RespError::BadLine("x".into())));
        assert_eq!(decode_reply(b"$-5\r\n"), Err(RespError::BulkTooLarge { len: -5 }));
        assert_eq!(decode_reply(b"$999999999\r\n"), Err(RespError::BulkTooLarge { len: 999_999_999 }));
        assert_eq!(decode_reply(b"$1\r\nabc"), Err(RespError::BulkTerminator));
        let long = [b"+".as_slice(), &vec![b'a'; MAX_LINE_BYTES + 1]].concat();
        assert_eq!(decode_reply(&long), Err(RespError::LineTooLong));
    }

    proptest! {
        #[test]
        fn bulk_strings_round_trip(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = format!("${}\r\n", value.len()).into_bytes();
            buf.extend_from_slice(&value);
            buf.extend_from_slice(b"\r\n");
            prop_assert_eq!(decode_reply(&buf).unwrap(), Some((Reply::Bulk(Some(value)), buf.len())));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_reply(&bytes);
        }
    }
}

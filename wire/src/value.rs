//! Column types and values. A value is stored and hashed in Cassandra's serialized form for its
//! type (big-endian numbers, UTF-8 text), so partition tokens match Cassandra's; clustering
//! values also have an order-preserving ("memcomparable") form so that storage order is a plain
//! byte comparison.

use std::fmt;

/// The column types a schema may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Text,
    Blob,
    Int,
    BigInt,
    Double,
    Boolean,
    Timestamp,
}

impl ColumnType {
    pub const ALL: [ColumnType; 7] = [
        ColumnType::Text,
        ColumnType::Blob,
        ColumnType::Int,
        ColumnType::BigInt,
        ColumnType::Double,
        ColumnType::Boolean,
        ColumnType::Timestamp,
    ];

    /// The CQL name of the type.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Blob => "blob",
            ColumnType::Int => "int",
            ColumnType::BigInt => "bigint",
            ColumnType::Double => "double",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
        }
    }

    pub fn parse(name: &str) -> Option<ColumnType> {
        let lower = name.to_ascii_lowercase();
        ColumnType::ALL.into_iter().find(|t| t.name() == lower).or(match lower.as_str() {
            "varchar" => Some(ColumnType::Text),
            _ => None,
        })
    }

    /// Stable one-byte code used in every persisted or transmitted encoding.
    pub fn code(self) -> u8 {
        match self {
            ColumnType::Text => 1,
            ColumnType::Blob => 2,
            ColumnType::Int => 3,
            ColumnType::BigInt => 4,
            ColumnType::Double => 5,
            ColumnType::Boolean => 6,
            ColumnType::Timestamp => 7,
        }
    }

    pub fn from_code(code: u8) -> Option<ColumnType> {
        ColumnType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Checks that `raw` is a serialized value of this type, exactly what [`Value::from_bytes`]
    /// accepts, without building the value (no allocation): how a replica checks every cell
    /// of a write it is sent.
    pub fn check_bytes(self, raw: &[u8]) -> Result<(), ValueError> {
        let fixed = |n: usize| match raw.len() == n {
            true => Ok(()),
            false => Err(ValueError::WrongLength { ty: self, expected: n, got: raw.len() }),
        };
        match self {
            ColumnType::Text => std::str::from_utf8(raw).map(drop).map_err(|_| ValueError::NotUtf8),
            ColumnType::Blob => Ok(()),
            ColumnType::Int => fixed(4),
            ColumnType::BigInt | ColumnType::Timestamp | ColumnType::Double => fixed(8),
            ColumnType::Boolean => match raw {
                [0 | 1] => Ok(()),
                [b] => Err(ValueError::BadBoolean(*b)),
                _ => fixed(1),
            },
        }
    }

    /// Checks one order-preserving value ([`Value::write_ordered`]) at the front of `input`,
    /// accepting exactly what [`Value::read_ordered`] accepts; returns the bytes it takes.
    /// Allocates nothing, except for text in descending order (its bytes are inverted).
    pub fn check_ordered(self, descending: bool, input: &[u8]) -> Result<usize, ValueError> {
        let bad = || ValueError::BadOrderedEncoding(self);
        let flip = |b: u8| if descending { !b } else { b };
        let fixed = |n: usize| input.get(..n).map(|_| n).ok_or_else(bad);
        match self {
            ColumnType::Text if descending => Value::read_ordered(self, descending, input).map(|(_, used)| used),
            ColumnType::Text | ColumnType::Blob => {
                let mut i = 0;
                let end = loop {
                    if flip(*input.get(i).ok_or_else(bad)?) != 0 {
                        i += 1;
                        continue;
                    }
                    match flip(*input.get(i + 1).ok_or_else(bad)?) {
                        0 => break i + 2,
                        0xFF => i += 2,
                        _ => return Err(bad()),
                    }
                };
                if self == ColumnType::Text {
                    // Escaped 0x00 bytes (ascending: 00 FF) split the text into runs; a 0x00
                    // never falls inside a UTF-8 sequence, so the text is valid when every run is.
                    for (n, run) in input[..end - 2].split(|b| *b == 0).enumerate() {
                        let run = if n == 0 { run } else { run.get(1..).unwrap_or_default() };
                        std::str::from_utf8(run).map_err(|_| ValueError::NotUtf8)?;
                    }
                }
                Ok(end)
            }
            ColumnType::Int => fixed(4),
            ColumnType::BigInt | ColumnType::Timestamp | ColumnType::Double => fixed(8),
            ColumnType::Boolean => match input.first().map(|b| flip(*b)) {
                Some(0 | 1) => Ok(1),
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed value. `Timestamp` is milliseconds since the Unix epoch, as CQL's timestamp type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Blob(Vec<u8>),
    Int(i32),
    BigInt(i64),
    Double(f64),
    Boolean(bool),
    Timestamp(i64),
}

/// A value that does not fit the type it is given to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("a {ty} value must be {expected} bytes, got {got}")]
    WrongLength { ty: ColumnType, expected: usize, got: usize },
    #[error("text value is not valid UTF-8")]
    NotUtf8,
    #[error("boolean value byte must be 0 or 1, got {0}")]
    BadBoolean(u8),
    #[error("expected a {expected} value, got a {got} value")]
    TypeMismatch { expected: ColumnType, got: ColumnType },
    #[error("'{literal}' is not a {ty} literal")]
    BadLiteral { ty: ColumnType, literal: String },
    #[error("malformed memcomparable encoding of a {0} value")]
    BadOrderedEncoding(ColumnType),
}

impl Value {
    pub fn column_type(&self) -> ColumnType {
        match self {
            Value::Text(_) => ColumnType::Text,
            Value::Blob(_) => ColumnType::Blob,
            Value::Int(_) => ColumnType::Int,
            Value::BigInt(_) => ColumnType::BigInt,
            Value::Double(_) => ColumnType::Double,
            Value::Boolean(_) => ColumnType::Boolean,
            Value::Timestamp(_) => ColumnType::Timestamp,
        }
    }

    /// Fails unless the value is of type `ty`.
    pub fn check_type(&self, ty: ColumnType) -> Result<(), ValueError> {
        let got = self.column_type();
        if got == ty {
            Ok(())
        } else {
            Err(ValueError::TypeMismatch { expected: ty, got })
        }
    }

    /// Parses a plain literal as a value of type `ty`: text as is, blobs as hex (with or
    /// without `0x`), numbers in decimal, booleans as true/false, timestamps as milliseconds.
    pub fn parse_as(ty: ColumnType, literal: &str) -> Result<Value, ValueError> {
        let bad = || ValueError::BadLiteral { ty, literal: literal.to_owned() };
        Ok(match ty {
            ColumnType::Text => Value::Text(literal.to_owned()),
            ColumnType::Blob => {
                let hex = literal.strip_prefix("0x").unwrap_or(literal);
                if !hex.len().is_multiple_of(2) {
                    return Err(bad());
                }
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(bad)?;
                Value::Blob(bytes)
            }
            ColumnType::Int => Value::Int(literal.parse().map_err(|_| bad())?),
            ColumnType::BigInt => Value::BigInt(literal.parse().map_err(|_| bad())?),
            ColumnType::Timestamp => Value::Timestamp(literal.parse().map_err(|_| bad())?),
            ColumnType::Double => Value::Double(literal.parse().map_err(|_| bad())?),
            ColumnType::Boolean => match literal.to_ascii_lowercase().as_str() {
                "true" => Value::Boolean(true),
                "false" => Value::Boolean(false),
                _ => return Err(bad()),
            },
        })
    }

    /// Cassandra's serialized form of the value (what Murmur3Partitioner hashes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_bytes(&mut out);
        out
    }

    /// Length of [`Value::to_bytes`], without making them.
    pub fn byte_len(&self) -> usize {
        match self {
            Value::Text(s) => s.len(),
            Value::Blob(b) => b.len(),
            Value::Int(_) => 4,
            Value::BigInt(_) | Value::Timestamp(_) | Value::Double(_) => 8,
            Value::Boolean(_) => 1,
        }
    }

    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        match self {
            Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            Value::Blob(b) => out.extend_from_slice(b),
            Value::Int(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::BigInt(v) | Value::Timestamp(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Double(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
            Value::Boolean(v) => out.push(u8::from(*v)),
        }
    }

    /// Parses Cassandra's serialized form for type `ty`, validating it.
    pub fn from_bytes(ty: ColumnType, raw: &[u8]) -> Result<Value, ValueError> {
        fn fixed<const N: usize>(ty: ColumnType, raw: &[u8]) -> Result<[u8; N], ValueError> {
            raw.try_into().map_err(|_| ValueError::WrongLength { ty, expected: N, got: raw.len() })
        }
        Ok(match ty {
            ColumnType::Text => Value::Text(std::str::from_utf8(raw).map_err(|_| ValueError::NotUtf8)?.to_owned()),
            ColumnType::Blob => Value::Blob(raw.to_vec()),
            ColumnType::Int => Value::Int(i32::from_be_bytes(fixed(ty, raw)?)),
            ColumnType::BigInt => Value::BigInt(i64::from_be_bytes(fixed(ty, raw)?)),
            ColumnType::Timestamp => Value::Timestamp(i64::from_be_bytes(fixed(ty, raw)?)),
            ColumnType::Double => Value::Double(f64::from_bits(u64::from_be_bytes(fixed(ty, raw)?))),
            ColumnType::Boolean => match fixed::<1>(ty, raw)?[0] {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                b => return Err(ValueError::BadBoolean(b)),
            },
        })
    }

    /// Appends the order-preserving encoding: comparing two encodings of the same type as bytes
    /// gives the type's natural order (numbers numerically, text and blobs bytewise, doubles by
    /// IEEE total order). `descending` inverts the bytes, reversing the order. The encoding is
    /// self-delimiting, so encodings of several columns can be concatenated.
    pub fn write_ordered(&self, descending: bool, out: &mut Vec<u8>) {
        let start = out.len();
        match self {
            Value::Text(s) => write_escaped(s.as_bytes(), out),
            Value::Blob(b) => write_escaped(b, out),
            Value::Int(v) => out.extend_from_slice(&((*v as u32) ^ (1 << 31)).to_be_bytes()),
            Value::BigInt(v) | Value::Timestamp(v) => out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes()),
            Value::Double(v) => {
                let bits = v.to_bits();
                let ordered = if bits >> 63 == 1 { !bits } else { bits ^ (1 << 63) };
                out.extend_from_slice(&ordered.to_be_bytes())
            }
            Value::Boolean(v) => out.push(u8::from(*v)),
        }
        if descending {
            out[start..].iter_mut().for_each(|b| *b = !*b);
        }
    }

    /// Decodes one value written by [`Value::write_ordered`] from the front of `input`,
    /// returning it and the number of bytes consumed.
    pub fn read_ordered(ty: ColumnType, descending: bool, input: &[u8]) -> Result<(Value, usize), ValueError> {
        let flip = |b: u8| if descending { !b } else { b };
        let bad = || ValueError::BadOrderedEncoding(ty);
        let fixed = |n: usize| -> Result<Vec<u8>, ValueError> {
            let raw = input.get(..n).ok_or_else(bad)?;
            Ok(raw.iter().map(|b| flip(*b)).collect())
        };
        let value = match ty {
            ColumnType::Text | ColumnType::Blob => {
                let (raw, used) = read_escaped(input, descending).ok_or_else(bad)?;
                let value = if ty == ColumnType::Text {
                    Value::Text(String::from_utf8(raw).map_err(|_| ValueError::NotUtf8)?)
                } else {
                    Value::Blob(raw)
                };
                return Ok((value, used));
            }
            ColumnType::Int => {
                let raw = fixed(4)?;
                let v = u32::from_be_bytes(raw.try_into().map_err(|_| bad())?) ^ (1 << 31);
                (Value::Int(v as i32), 4)
            }
            ColumnType::BigInt | ColumnType::Timestamp => {
                let raw = fixed(8)?;
                let v = (u64::from_be_bytes(raw.try_into().map_err(|_| bad())?) ^ (1 << 63)) as i64;
                let value = if ty == ColumnType::BigInt { Value::BigInt(v) } else { Value::Timestamp(v) };
                (value, 8)
            }
            ColumnType::Double => {
                let raw = fixed(8)?;
                let ordered = u64::from_be_bytes(raw.try_into().map_err(|_| bad())?);
                let bits = if ordered >> 63 == 1 { ordered ^ (1 << 63) } else { !ordered };
                (Value::Double(f64::from_bits(bits)), 8)
            }
            ColumnType::Boolean => match fixed(1)?[0] {
                0 => (Value::Boolean(false), 1),
                1 => (Value::Boolean(true), 1),
                _ => return Err(bad()),
            },
        };
        Ok(value)
    }
}

/// Escapes 0x00 as 0x00 0xFF and terminates with 0x00 0x00, which keeps byte order and makes
/// the encoding self-delimiting (a shorter string sorts before its extensions).
fn write_escaped(raw: &[u8], out: &mut Vec<u8>) {
    for &b in raw {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn read_escaped(input: &[u8], descending: bool) -> Option<(Vec<u8>, usize)> {
    let flip = |b: u8| if descending { !b } else { b };
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let b = flip(*input.get(i)?);
        if b != 0 {
            out.push(b);
            i += 1;
            continue;
        }
        match flip(*input.get(i + 1)?) {
            0 => return Some((out, i + 2)),
            0xFF => {
                out.push(0);
                i += 2;
            }
            _ => return None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Value::Blob(b) => {
                f.write_str("0x")?;
                b.iter().try_for_each(|x| write!(f, "{x:02x}"))
            }
            Value::Int(v) => write!(f, "{v}"),
            Value::BigInt(v) | Value::Timestamp(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v:?}"),
            Value::Boolean(v) => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn value_of(ty: ColumnType) -> BoxedStrategy<Value> {
        match ty {
            ColumnType::Text => ".{0,12}".prop_map(Value::Text).boxed(),
            ColumnType::Blob => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Blob).boxed(),
            ColumnType::Int => any::<i32>().prop_map(Value::Int).boxed(),
            ColumnType::BigInt => any::<i64>().prop_map(Value::BigInt).boxed(),
            ColumnType::Double => any::<f64>().prop_filter("not NaN", |d| !d.is_nan()).prop_map(Value::Double).boxed(),
            ColumnType::Boolean => any::<bool>().prop_map(Value::Boolean).boxed(),
            ColumnType::Timestamp => any::<i64>().prop_map(Value::Timestamp).boxed(),
        }
    }

    pub fn any_value() -> BoxedStrategy<Value> {
        prop_oneof![
            value_of(ColumnType::Text),
            value_of(ColumnType::Blob),
            value_of(ColumnType::Int),
            value_of(ColumnType::BigInt),
            value_of(ColumnType::Double),
            value_of(ColumnType::Boolean),
            value_of(ColumnType::Timestamp),
        ]
        .boxed()
    }

    fn natural_cmp(a: &Value, b: &Value) -> std::cmp::Ordering {
        match (a, b) {
            (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Value::Blob(x), Value::Blob(y)) => x.cmp(y),
            (Value::Int(x), Value::Int(y)) => x.cmp(y),
            (Value::BigInt(x), Value::BigInt(y)) | (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
            (Value::Double(x), Value::Double(y)) => x.total_cmp(y),
            (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
            _ => unreachable!("same type by construction"),
        }
    }

    fn pair_of_same_type() -> impl Strategy<Value = (Value, Value)> {
        proptest::sample::select(ColumnType::ALL.to_vec()).prop_flat_map(|ty| (value_of(ty), value_of(ty)))
    }

    fn any_type() -> impl Strategy<Value = ColumnType> {
        proptest::sample::select(ColumnType::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn checks_accept_exactly_what_decoding_accepts(
            ty in any_type(),
            desc in any::<bool>(),
            raw in proptest::collection::vec(prop_oneof![Just(0u8), Just(0xFF), Just(0xC3), Just(0xA9), Just(b'a'), any::<u8>()], 0..12),
        ) {
            prop_assert_eq!(ty.check_bytes(&raw), Value::from_bytes(ty, &raw).map(drop));
            prop_assert_eq!(ty.check_ordered(desc, &raw), Value::read_ordered(ty, desc, &raw).map(|(_, used)| used));
        }

        #[test]
        fn checks_accept_every_encoded_value(v in any_value(), desc in any::<bool>()) {
            let ty = v.column_type();
            prop_assert_eq!(ty.check_bytes(&v.to_bytes()), Ok(()));
            let mut ordered = Vec::new();
            v.write_ordered(desc, &mut ordered);
            prop_assert_eq!(ty.check_ordered(desc, &ordered), Ok(ordered.len()));
        }

        #[test]
        fn serialized_form_round_trips(v in any_value()) {
            let back = Value::from_bytes(v.column_type(), &v.to_bytes()).unwrap();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn ordered_form_round_trips_with_trailing_bytes(v in any_value(), desc in any::<bool>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut enc = Vec::new();
            v.write_ordered(desc, &mut enc);
            let used_expected = enc.len();
            enc.extend_from_slice(&tail);
            let (back, used) = Value::read_ordered(v.column_type(), desc, &enc).unwrap();
            prop_assert_eq!(back, v);
            prop_assert_eq!(used, used_expected);
        }

        #[test]
        fn ordered_form_compares_like_the_type((a, b) in pair_of_same_type(), desc in any::<bool>()) {
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            a.write_ordered(desc, &mut ea);
            b.write_ordered(desc, &mut eb);
            let expected = if desc { natural_cmp(&a, &b).reverse() } else { natural_cmp(&a, &b) };
            prop_assert_eq!(ea.cmp(&eb), expected);
        }
    }

    #[test]
    fn malformed_serialized_values_are_typed_errors() {
        assert_eq!(
            Value::from_bytes(ColumnType::Int, &[1, 2]),
            Err(ValueError::WrongLength { ty: ColumnType::Int, expected: 4, got: 2 })
        );
        assert_eq!(Value::from_bytes(ColumnType::Text, &[0xff, 0xfe]), Err(ValueError::NotUtf8));
        assert_eq!(Value::from_bytes(ColumnType::Boolean, &[2]), Err(ValueError::BadBoolean(2)));
        assert!(Value::read_ordered(ColumnType::Text, false, &[b'a', 0, 7]).is_err());
        assert!(Value::read_ordered(ColumnType::BigInt, false, &[1, 2, 3]).is_err());
        assert_eq!(ColumnType::Int.check_bytes(&[1, 2, 3]), Value::from_bytes(ColumnType::Int, &[1, 2, 3]).map(drop));
        assert_eq!(ColumnType::Text.check_ordered(false, &[0xFF, 0, 0]), Err(ValueError::NotUtf8));
        assert_eq!(ColumnType::Text.check_ordered(false, &[b'a', 0, 0xFF, 0xC3, 0, 0]), Err(ValueError::NotUtf8));
        assert_eq!(ColumnType::Text.check_ordered(false, &[b'a', 0, 0xFF, b'b', 0, 0]), Ok(6));
    }

    #[test]
    fn literals_parse_by_type_and_bad_ones_are_typed_errors() {
        assert_eq!(Value::parse_as(ColumnType::Blob, "0x0aff"), Ok(Value::Blob(vec![10, 255])));
        assert_eq!(Value::parse_as(ColumnType::Int, "-7"), Ok(Value::Int(-7)));
        assert_eq!(Value::parse_as(ColumnType::Boolean, "TRUE"), Ok(Value::Boolean(true)));
        assert!(matches!(Value::parse_as(ColumnType::Int, "x"), Err(ValueError::BadLiteral { .. })));
        assert!(matches!(Value::parse_as(ColumnType::Blob, "0xabc"), Err(ValueError::BadLiteral { .. })));
    }

    #[test]
    fn type_names_parse_case_insensitively() {
        for ty in ColumnType::ALL {
            assert_eq!(ColumnType::parse(&ty.name().to_uppercase()), Some(ty));
            assert_eq!(ColumnType::from_code(ty.code()), Some(ty));
        }
        assert_eq!(ColumnType::parse("varchar"), Some(ColumnType::Text));
        assert_eq!(ColumnType::parse("uuid"), None);
    }
}

//! Literals meet their column type: the text of a literal becomes a typed `Value` (an integer
//! literal may be an int, bigint, double or timestamp), and timestamps may be written as
//! ISO-8601 strings. Errors read like Cassandra's ("Invalid STRING constant ('abc') for "v" of
//! type int"). No schema lookups here: callers pass the column's name and type.

use wire::{ColumnType, Value};

use super::ast::LiteralKind;

/// The value of a literal of `kind` written as `text`, for column `column` of type `ty`.
pub fn literal_value(kind: LiteralKind, text: &str, column: &str, ty: ColumnType) -> Result<Value, String> {
    let shown = if kind == LiteralKind::String { format!("'{}'", text.replace('\'', "''")) } else { text.to_owned() };
    let invalid = || format!("Invalid {} constant ({shown}) for \"{column}\" of type {ty}", kind.name());
    let out_of_range = || format!("Unable to make {ty} from '{text}' for \"{column}\": out of range");
    let accepted = match ty {
        ColumnType::Text => kind == LiteralKind::String,
        ColumnType::Blob => kind == LiteralKind::Hex,
        ColumnType::Int | ColumnType::BigInt => kind == LiteralKind::Integer,
        ColumnType::Double => matches!(kind, LiteralKind::Integer | LiteralKind::Float),
        ColumnType::Boolean => kind == LiteralKind::Boolean,
        ColumnType::Timestamp => matches!(kind, LiteralKind::Integer | LiteralKind::String),
    };
    if !accepted {
        return Err(invalid());
    }
    match (ty, kind) {
        (ColumnType::Timestamp, LiteralKind::String) => parse_timestamp(text)
            .map(Value::Timestamp)
            .map_err(|why| format!("Unable to coerce '{text}' to a formatted date for \"{column}\": {why}")),
        (ColumnType::Double, _) => {
            let v = match text {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                _ => text.parse().map_err(|_| invalid())?,
            };
            Ok(Value::Double(v))
        }
        // The lexer only produces well-formed integers, so a failure is an overflow.
        (ColumnType::Int | ColumnType::BigInt | ColumnType::Timestamp, _) => {
            Value::parse_as(ty, text).map_err(|_| out_of_range())
        }
        _ => Value::parse_as(ty, text).map_err(|_| invalid()),
    }
}

/// Milliseconds since the Unix epoch of an ISO-8601 date or date-time: `yyyy-mm-dd`, optionally
/// followed by `T` or a space, `hh:mm[:ss[.fff]]`, and a zone `Z`, `+hhmm`, `+hh:mm` or `+hh`
/// (or `-`). Without a zone the time is UTC (Cassandra would use the coordinator's zone; a
/// cluster's nodes need not share one, so UTC is the only unambiguous choice).
pub fn parse_timestamp(text: &str) -> Result<i64, &'static str> {
    let mut s = Cursor(text.as_bytes());
    let year = s.digits(4, 4).ok_or("expected a 4-digit year")?;
    s.expect(b'-').ok_or("expected '-' after the year")?;
    let month = s.digits(1, 2).ok_or("expected a month")?;
    s.expect(b'-').ok_or("expected '-' after the month")?;
    let day = s.digits(1, 2).ok_or("expected a day")?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    let mut millis_of_day = 0i64;
    if s.expect(b'T').or_else(|| s.expect(b' ')).is_some() {
        let hour = s.digits(2, 2).ok_or("expected a 2-digit hour")?;
        s.expect(b':').ok_or("expected ':' after the hour")?;
        let minute = s.digits(2, 2).ok_or("expected 2-digit minutes")?;
        let mut second = 0;
        let mut millis = 0;
        if s.expect(b':').is_some() {
            second = s.digits(2, 2).ok_or("expected 2-digit seconds")?;
            if s.expect(b'.').is_some() {
                let start = s.0.len();
                let fraction = s.digits(1, 3).ok_or("expected 1 to 3 digits of fraction")?;
                let scale = [100, 10, 1][start - s.0.len() - 1];
                millis = fraction * scale;
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err("no such time of day");
        }
        millis_of_day = ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    }
    let _ = s.expect(b' ');
    let offset_minutes = match s.0.first() {
        None => 0,
        Some(b'Z' | b'z') => {
            s.0 = &s.0[1..];
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            s.0 = &s.0[1..];
            let hours = s.digits(2, 2).ok_or("expected a 2-digit zone hour")?;
            let _ = s.expect(b':');
            let minutes = if s.0.is_empty() { 0 } else { s.digits(2, 2).ok_or("expected 2-digit zone minutes")? };
            if hours > 23 || minutes > 59 {
                return Err("no such zone offset");
            }
            let offset = hours * 60 + minutes;
            if sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        Some(_) => return Err("unexpected characters"),
    };
    if !s.0.is_empty() {
        return Err("unexpected characters after the zone");
    }
    let days = days_from_civil(year, month, day);
    Ok(days * 86_400_000 + millis_of_day - offset_minutes * 60_000)
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    /// Between `min` and `max` decimal digits.
    fn digits(&mut self, min: usize, max: usize) -> Option<i64> {
        let n = self.0.iter().take(max).take_while(|b| b.is_ascii_digit()).count();
        if n < min {
            return None;
        }
        let v = self.0[..n].iter().fold(0i64, |v, b| v * 10 + i64::from(b - b'0'));
        self.0 = &self.0[n..];
        Some(v)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        let rest = self.0.strip_prefix(&[b])?;
        self.0 = rest;
        Some(())
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn iso_timestamps_match_known_epoch_values() {
        let cases = [
            ("1970-01-01", 0),
            ("2024-01-02", 1_704_153_600_000),
            ("2024-01-02T03:04:05Z", 1_704_164_645_000),
            ("2024-01-02 03:04:05+0000", 1_704_164_645_000),
            ("2024-01-02 03:04:05.678Z", 1_704_164_645_678),
            ("2024-01-02T03:04:05.6", 1_704_164_645_600),
            ("2024-01-02T05:04:05+02:00", 1_704_164_645_000),
            ("2024-01-01T22:04:05-0500", 1_704_164_645_000),
            ("2024-01-02 03:04", 1_704_164_640_000),
            ("2000-02-29T00:00:00Z", 951_782_400_000),
            ("1969-12-31T23:59:59Z", -1000),
            ("1900-01-01", -2_208_988_800_000),
        ];
        for (text, millis) in cases {
            assert_eq!(parse_timestamp(text), Ok(millis), "{text}");
        }
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for bad in [
            "",
            "2024",
            "2024-13-01",
            "2023-02-29",
            "2024-01-02T25:00",
            "2024-01-02T03:04:05+0000x",
            "24-01-02",
            "2024-01-02T03",
        ] {
            assert!(parse_timestamp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn literals_become_values_of_the_column_type() {
        let v = |kind, text: &str, ty| literal_value(kind, text, "c", ty);
        assert_eq!(v(LiteralKind::Integer, "7", ColumnType::Int), Ok(Value::Int(7)));
        assert_eq!(v(LiteralKind::Integer, "7", ColumnType::BigInt), Ok(Value::BigInt(7)));
        assert_eq!(v(LiteralKind::Integer, "7", ColumnType::Double), Ok(Value::Double(7.0)));
        assert_eq!(v(LiteralKind::Integer, "7", ColumnType::Timestamp), Ok(Value::Timestamp(7)));
        assert_eq!(v(LiteralKind::String, "1970-01-01T00:00:01Z", ColumnType::Timestamp), Ok(Value::Timestamp(1000)));
        assert_eq!(v(LiteralKind::Hex, "0x0aff", ColumnType::Blob), Ok(Value::Blob(vec![10, 255])));
        assert_eq!(v(LiteralKind::Boolean, "true", ColumnType::Boolean), Ok(Value::Boolean(true)));
        assert_eq!(v(LiteralKind::Float, "-Infinity", ColumnType::Double), Ok(Value::Double(f64::NEG_INFINITY)));
        assert_eq!(
            v(LiteralKind::String, "abc", ColumnType::Int),
            Err("Invalid STRING constant ('abc') for \"c\" of type int".to_owned())
        );
        assert_eq!(
            v(LiteralKind::Integer, "3000000000", ColumnType::Int),
            Err("Unable to make int from '3000000000' for \"c\": out of range".to_owned())
        );
        assert!(v(LiteralKind::Integer, "1", ColumnType::Text).is_err());
        assert!(v(LiteralKind::Float, "1.5", ColumnType::Int).is_err());
        assert!(v(LiteralKind::Hex, "0xabc", ColumnType::Blob).is_err());
        assert!(v(LiteralKind::String, "yesterday", ColumnType::Timestamp).unwrap_err().contains("formatted date"));
    }

    proptest! {
        #[test]
        fn timestamp_parsing_never_panics(text in "[0-9TZ:+. -]{0,30}") {
            let _ = parse_timestamp(&text);
        }

        #[test]
        fn day_arithmetic_agrees_with_counting(days in -800_000i64..800_000) {
            // Walk from the epoch by whole days using the month table and compare.
            let (mut y, mut m, mut d) = (1970i64, 1i64, 1i64);
            let mut left = days;
            while left > 0 {
                let step = (days_in_month(y, m) - d + 1).min(left);
                left -= step;
                d += step;
                if d > days_in_month(y, m) { d = 1; m += 1; if m > 12 { m = 1; y += 1; } }
            }
            while left < 0 {
                if d > 1 {
                    let step = (d - 1).min(-left);
                    d -= step;
                    left += step;
                } else {
                    m -= 1;
                    if m < 1 { m = 12; y -= 1; }
                    d = days_in_month(y, m);
                    left += 1;
                }
            }
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

//! How the shell shows results, as cqlsh does: values as text (blobs in hex, timestamps in
//! ISO-8601 UTC, null as `null`), pages of rows as aligned tables, errors by exception name.
//! Pure functions over `wire` types: no I/O, no client.

use std::fmt::Write as _;

use wire::protocol::{ColumnSpec, ErrorCode, ErrorResponse};
use wire::{ColumnType, Value};

/// The text of one cell. Control characters are escaped so that a row stays on one line and
/// the table stays aligned.
pub fn display_cell(cell: Option<&Value>) -> String {
    let Some(value) = cell else { return "null".to_owned() };
    match value {
        Value::Text(s) => escape_control(s),
        Value::Blob(b) => {
            let mut out = String::with_capacity(2 + 2 * b.len());
            out.push_str("0x");
            b.iter().for_each(|byte| {
                // Writing to a String cannot fail.
                let _ = write!(out, "{byte:02x}");
            });
            out
        }
        Value::Int(v) => v.to_string(),
        Value::BigInt(v) => v.to_string(),
        Value::Double(v) if v.is_infinite() => if *v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned(),
        Value::Double(v) => v.to_string(),
        Value::Boolean(v) => if *v { "True" } else { "False" }.to_owned(),
        Value::Timestamp(millis) => display_timestamp(*millis),
    }
}

/// `2024-01-02 03:04:05.000000+0000` for milliseconds since the epoch (UTC, as cqlsh prints
/// timestamps; the fraction has microsecond digits although the type stores milliseconds).
pub fn display_timestamp(millis: i64) -> String {
    let (days, millis_of_day) = (millis.div_euclid(86_400_000), millis.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let secs = millis_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}+0000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        (millis_of_day % 1000) * 1000
    )
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian: the inverse of
/// `cql::literal`'s `days_from_civil` (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let (era, day_of_era) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

fn escape_control(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// One block of rows as cqlsh prints it: a header of column names (left-aligned), a separator,
/// then one line per row with every value right-aligned to its column's width. Every line
/// starts with a space and has no trailing spaces. Widths count characters.
pub fn render_table(columns: &[ColumnSpec], rows: &[Vec<Option<Value>>]) -> String {
    let cells: Vec<Vec<String>> =
        rows.iter().map(|row| row.iter().map(|cell| display_cell(cell.as_ref())).collect()).collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.name.chars().count()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = columns.iter().zip(&widths).map(|(c, &w)| pad(&c.name, w, false)).collect();
    push_line(&mut out, &header.join(" | "));
    let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
    out.push('-');
    out.push_str(&rule.join("-+-"));
    out.push_str("-\n");
    for row in &cells {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, &w)| pad(cell, w, true)).collect();
        push_line(&mut out, &line.join(" | "));
    }
    out
}

/// `text` padded with spaces to `width` characters, on the left when `right_aligned`. By hand:
/// `format!`'s width is at most 65,535, and a blob of a few KiB prints wider than that.
fn pad(text: &str, width: usize, right_aligned: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(text.chars().count()));
    match right_aligned {
        true => fill + text,
        false => text.to_owned() + &fill,
    }
}

/// A trace as cqlsh prints one: activity, source, source_elapsed (microseconds).
pub fn render_trace(events: &[wire::protocol::TraceEvent]) -> String {
    let columns =
        [("activity", ColumnType::Text), ("source", ColumnType::Text), ("source_elapsed", ColumnType::BigInt)]
            .map(|(name, ty)| ColumnSpec { name: name.to_owned(), ty });
    let rows: Vec<Vec<Option<Value>>> = events
        .iter()
        .map(|e| {
            let elapsed = i64::try_from(e.elapsed_us).unwrap_or(i64::MAX);
            vec![
                Some(Value::Text(e.activity.clone())),
                Some(Value::Text(e.source.clone())),
                Some(Value::BigInt(elapsed)),
            ]
        })
        .collect();
    render_table(&columns, &rows)
}

fn push_line(out: &mut String, line: &str) {
    out.push(' ');
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The column in which the server answers `DESCRIBE TABLE` (Cassandra's name for it).
pub const DESCRIBE_COLUMN: &str = "create_statement";

/// The text of a DESCRIBE answer, printed as is rather than as a table (its CQL spans lines);
/// `None` for any other result.
pub fn describe_output(columns: &[ColumnSpec], rows: &[Vec<Option<Value>>]) -> Option<String> {
    let [column] = columns else { return None };
    if column.name != DESCRIBE_COLUMN {
        return None;
    }
    let statements: Vec<&str> = rows
        .iter()
        .map(|row| match row.first() {
            Some(Some(Value::Text(text))) => Some(text.as_str()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(statements.join("\n\n"))
}

/// The closing line of a SELECT: `(1 rows)` as cqlsh says it, whatever the count.
pub fn row_count_line(rows: u64) -> String {
    format!("({rows} rows)")
}

/// The name cqlsh gives a server error (its Python exception class).
pub fn exception_name(code: &ErrorCode) -> &'static str {
    match code {
        ErrorCode::Server => "ServerError",
        ErrorCode::Protocol => "ProtocolError",
        ErrorCode::Unavailable { .. } => "Unavailable",
        ErrorCode::Overloaded => "OverloadedError",
        ErrorCode::WriteTimeout { .. } => "WriteTimeout",
        ErrorCode::ReadTimeout { .. } => "ReadTimeout",
        ErrorCode::Syntax => "SyntaxException",
        ErrorCode::Invalid => "InvalidRequest",
        ErrorCode::AlreadyExists => "AlreadyExists",
        ErrorCode::Unprepared { .. } => "Unprepared",
        ErrorCode::BadCredentials => "AuthenticationFailed",
        ErrorCode::Unauthorized => "Unauthorized",
    }
}

/// An error answer as the shell prints it: `SyntaxException: line 1:14 ...`, with the numbers
/// of unavailable and timeout errors after the message.
pub fn display_error(error: &ErrorResponse) -> String {
    let name = exception_name(&error.code);
    match &error.code {
        ErrorCode::Unavailable { .. } | ErrorCode::WriteTimeout { .. } | ErrorCode::ReadTimeout { .. } => {
            format!("{name}: {} [{}]", error.message, error.code)
        }
        _ => format!("{name}: {}", error.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wire::protocol::ErrorResponse;
    use wire::{ColumnType, Consistency};

    fn spec(name: &str, ty: ColumnType) -> ColumnSpec {
        ColumnSpec { name: name.to_owned(), ty }
    }

    #[test]
    fn values_display_as_cqlsh_shows_them() {
        let show = |v: Value| display_cell(Some(&v));
        assert_eq!(display_cell(None), "null");
        assert_eq!(show(Value::Text("héllo wörld".into())), "héllo wörld");
        assert_eq!(show(Value::Text("two\nlines\t!\u{1}".into())), "two\\nlines\\t!\\x01");
        assert_eq!(show(Value::Blob(vec![0x00, 0xCA, 0xFE])), "0x00cafe");
        assert_eq!(show(Value::Blob(Vec::new())), "0x");
        assert_eq!(show(Value::Int(-42)), "-42");
        assert_eq!(show(Value::BigInt(i64::MIN)), "-9223372036854775808");
        assert_eq!(show(Value::Double(2.5)), "2.5");
        assert_eq!(show(Value::Double(3.0)), "3");
        assert_eq!(show(Value::Double(f64::NEG_INFINITY)), "-Infinity");
        assert_eq!(show(Value::Double(f64::NAN)), "NaN");
        assert_eq!(show(Value::Boolean(true)), "True");
        assert_eq!(show(Value::Timestamp(1_704_164_645_678)), "2024-01-02 03:04:05.678000+0000");
    }

    #[test]
    fn timestamps_are_utc_iso8601_across_leap_days_and_before_the_epoch() {
        assert_eq!(display_timestamp(0), "1970-01-01 00:00:00.000000+0000");
        assert_eq!(display_timestamp(1_704_164_645_000), "2024-01-02 03:04:05.000000+0000");
        assert_eq!(display_timestamp(951_782_400_000), "2000-02-29 00:00:00.000000+0000");
        assert_eq!(display_timestamp(-1), "1969-12-31 23:59:59.999000+0000");
        assert_eq!(display_timestamp(-2_208_988_800_000), "1900-01-01 00:00:00.000000+0000");
    }

    proptest! {
        /// Displayed timestamps parse back to the same instant with the query language's own
        /// timestamp parser (years 0..=9999, where the format has four year digits).
        #[test]
        fn displayed_timestamps_parse_back(millis in -62_167_219_200_000i64..253_402_300_800_000) {
            let text = display_timestamp(millis);
            // The parser takes three fraction digits.
            let (head, tail) = text.split_at(23);
            prop_assert_eq!(&tail[..3], "000");
            let reparsed = crate::cql::literal::parse_timestamp(&format!("{head}{}", &tail[3..]));
            prop_assert_eq!(reparsed, Ok(millis), "{}", text);
        }
    }

    #[test]
    fn tables_align_headers_left_and_values_right() {
        let columns = [spec("k", ColumnType::Text), spec("value", ColumnType::Int), spec("b", ColumnType::Blob)];
        let rows = vec![
            vec![Some(Value::Text("a".into())), Some(Value::Int(1)), None],
            vec![Some(Value::Text("longer key".into())), Some(Value::Int(-12345)), Some(Value::Blob(vec![1]))],
        ];
        let expected = concat!(
            " k          | value  | b\n",
            "------------+--------+------\n",
            "          a |      1 | null\n",
            " longer key | -12345 | 0x01\n",
        );
        assert_eq!(render_table(&columns, &rows), expected);
    }

    #[test]
    fn an_empty_result_still_has_its_header() {
        let columns = [spec("key", ColumnType::Text), spec("v", ColumnType::Int)];
        assert_eq!(render_table(&columns, &[]), " key | v\n-----+---\n");
        assert_eq!(row_count_line(0), "(0 rows)");
        assert_eq!(row_count_line(100_000), "(100000 rows)");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let columns = [spec("k", ColumnType::Text), spec("v", ColumnType::Int)];
        let rows = vec![vec![Some(Value::Text("ééé".into())), Some(Value::Int(1))]];
        assert_eq!(render_table(&columns, &rows), " k   | v\n-----+---\n ééé | 1\n");
    }

    #[test]
    fn values_wider_than_format_widths_allow_are_aligned() {
        // A 1 MiB blob prints as 2 MiB of hex: far over format!'s 65,535 width limit.
        let columns = [spec("k", ColumnType::Int), spec("v", ColumnType::Blob)];
        let rows = vec![
            vec![Some(Value::Int(1)), Some(Value::Blob(vec![0xab; 40_000]))],
            vec![Some(Value::Int(2)), Some(Value::Blob(vec![1]))],
        ];
        let table = render_table(&columns, &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2].len(), lines[3].len(), "both rows padded to the widest value");
        assert!(lines[3].ends_with(" 0x01"), "right-aligned");
    }

    #[test]
    fn describe_answers_print_their_cql_as_is() {
        let columns = [spec(DESCRIBE_COLUMN, ColumnType::Text)];
        let rows = vec![vec![Some(Value::Text("CREATE TABLE t (\n    k text,\n    PRIMARY KEY (k)\n);".into()))]];
        assert_eq!(describe_output(&columns, &rows).unwrap(), "CREATE TABLE t (\n    k text,\n    PRIMARY KEY (k)\n);");
        assert_eq!(describe_output(&[spec("name", ColumnType::Text)], &[]), None);
        assert_eq!(describe_output(&columns, &[vec![None]]), None);
    }

    #[test]
    fn errors_are_named_like_cqlsh_exceptions() {
        let syntax = ErrorResponse::new(ErrorCode::Syntax, "line 1:14 no viable alternative at input 'FORM'");
        assert_eq!(display_error(&syntax), "SyntaxException: line 1:14 no viable alternative at input 'FORM'");
        let invalid = ErrorResponse::new(ErrorCode::Invalid, "unconfigured table nope");
        assert_eq!(display_error(&invalid), "InvalidRequest: unconfigured table nope");
        let unavailable = ErrorResponse::new(
            ErrorCode::Unavailable { consistency: Consistency::All, required: 3, alive: 1 },
            "cannot achieve consistency level ALL",
        );
        assert_eq!(
            display_error(&unavailable),
            "Unavailable: cannot achieve consistency level ALL [unavailable (ALL: 3 replicas required, 1 alive)]"
        );
    }
}

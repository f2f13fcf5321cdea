//! Rows as both bulk paths read them: PostgreSQL's `COPY ... FROM STDIN`
//! text format and MySQL's `LOAD DATA` with its default field and line
//! terminators. Both are tab-separated with `\N` for NULL and the same
//! backslash escapes; they differ only in how booleans and times are
//! spelled. Pure.

use std::fmt::Write as _;

use pumphouse_wire::sql_url::Dialect;

use crate::layout::{mysql_datetime, Value};

/// Appends one row (`id` first) and its newline.
pub fn encode_row(out: &mut Vec<u8>, dialect: Dialect, id: u64, row: &[Value<'_>]) {
    // The id is the record's u64 hash; bigint holds it bit for bit.
    let _ = write!(Text(out), "{}", id as i64);
    for value in row {
        out.push(b'\t');
        encode_value(out, dialect, value);
    }
    out.push(b'\n');
}

fn encode_value(out: &mut Vec<u8>, dialect: Dialect, value: &Value<'_>) {
    match value {
        Value::Null => out.extend_from_slice(b"\\N"),
        Value::Int(n) => {
            let _ = write!(Text(out), "{n}");
        }
        Value::UInt(n) => {
            let _ = write!(Text(out), "{n}");
        }
        // `{}` of an f64 round-trips; NaN and infinities are words
        // PostgreSQL's numeric reads too.
        Value::Float(f) => {
            let _ = write!(Text(out), "{f}");
        }
        Value::Bool(b) => out.push(match (dialect, b) {
            (Dialect::Postgres, true) => b't',
            (Dialect::Postgres, false) => b'f',
            (Dialect::Mysql, true) => b'1',
            (Dialect::Mysql, false) => b'0',
        }),
        Value::Text(s) => escape(out, s),
        Value::Time(t) => match dialect {
            Dialect::Postgres => out.extend_from_slice(t.to_rfc3339().as_bytes()),
            Dialect::Mysql => out.extend_from_slice(mysql_datetime(*t).as_bytes()),
        },
    }
}

/// The escaping both read. A NUL cannot be stored in PostgreSQL's `text`
/// at all; it is passed as `\0` so PostgreSQL refuses that row by its
/// line (MySQL reads it back as a NUL).
fn escape(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            _ => out.push(b),
        }
    }
}

/// `fmt::Write` into bytes, for numbers.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::Timestamp;
    use std::borrow::Cow;

    #[test]
    fn separators_are_escaped() {
        let mut out = Vec::new();
        encode_row(
            &mut out,
            Dialect::Postgres,
            u64::MAX,
            &[
                Value::Text(Cow::Borrowed("a\tb\nc\\d\re")),
                Value::Null,
                Value::Int(-5),
                Value::Bool(true),
                Value::Float(0.5),
                Value::Time(Timestamp::new(0, 1_000)),
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-1\ta\\tb\\nc\\\\d\\re\t\\N\t-5\tt\t0.5\t1970-01-01T00:00:00.000001Z\n"
        );
    }

    #[test]
    fn mysql_spells_booleans_and_times_its_way() {
        let mut out = Vec::new();
        encode_row(
            &mut out,
            Dialect::Mysql,
            7,
            &[
                Value::Bool(false),
                Value::Time(Timestamp::new(1_715_342_400, 5_600_000)),
                Value::Text(Cow::Borrowed("x\ty")),
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7\t0\t2024-05-10 12:00:00.006\tx\\ty\n"
        );
    }

    #[test]
    fn a_nul_stays_visible_for_the_server_to_refuse() {
        let mut out = Vec::new();
        escape(&mut out, "a\0b");
        assert_eq!(out, b"a\\0b");
    }
}

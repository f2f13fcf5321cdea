//! Rows in COPY's text format: tab-separated, `\N` for NULL, backslash
//! escapes for the separators. Pure.

use std::fmt::Write as _;

use crate::layout::Value;

/// Appends one row (`id` first) and its newline.
pub fn encode_row(out: &mut Vec<u8>, id: u64, row: &[Value<'_>]) {
    // The id is the record's u64 hash; bigint holds it bit for bit.
    let _ = write!(Text(out), "{}", id as i64);
    for value in row {
        out.push(b'\t');
        encode_value(out, value);
    }
    out.push(b'\n');
}

fn encode_value(out: &mut Vec<u8>, value: &Value<'_>) {
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
        Value::Bool(b) => out.push(if *b { b't' } else { b'f' }),
        Value::Text(s) => escape(out, s),
        Value::Time(t) => out.extend_from_slice(t.to_rfc3339().as_bytes()),
    }
}

/// COPY text escaping. A NUL cannot be stored in `text` at all; it is
/// passed through as `\0` so PostgreSQL refuses that row by its line.
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
    fn a_nul_stays_visible_for_the_server_to_refuse() {
        let mut out = Vec::new();
        escape(&mut out, "a\0b");
        assert_eq!(out, b"a\\0b");
    }
}

//! Columns and rows: which record fields go where and how each value is
//! written. Pure (no files), so it is tested natively.

use std::borrow::Cow;

use pumphouse_sdk::serde_json::Value;
use pumphouse_sdk::{Error, FieldPath, Schema};

/// The iam columns when `columns` is not set: the whole record.
pub const IAM_COLUMNS: &[&str] = &[
    "TimeStamp",
    "Username",
    "Effect",
    "Conclusion",
    "Request",
    "Policies",
    "Deciders",
    "ExpireAt",
];

/// The Tyk columns when `columns` is not set: the request, its outcome and
/// timing; not the raw request and response bodies, the redundant
/// day/month/year/hour fields or the rarely used geo and network details.
pub const TYK_COLUMNS: &[&str] = &[
    "TimeStamp",
    "Method",
    "Host",
    "Path",
    "RawPath",
    "ContentLength",
    "UserAgent",
    "ResponseCode",
    "APIKey",
    "APIVersion",
    "APIName",
    "APIID",
    "OrgID",
    "OauthID",
    "RequestTime",
    "IPAddress",
    "Geo.Country.ISOCode",
    "Latency.Total",
    "Latency.Upstream",
    "Tags",
    "Alias",
    "TrackPath",
    "ListenPath",
];

/// One output column: its header and the path of the field it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub header: String,
    /// Map keys (or array indices) from the record down to the value.
    pub path: FieldPath,
}

impl Column {
    /// A column whose header is its dotted path.
    pub fn new(path: &str) -> Result<Column, String> {
        Self::named(path, path)
    }

    pub fn named(path: &str, header: &str) -> Result<Column, String> {
        Ok(Column {
            header: header.to_owned(),
            path: FieldPath::parse(path)?,
        })
    }

    /// Parses the `columns` config: each entry a path string or a
    /// `{ field, header }` table. Errors name the entry.
    pub fn parse_all(entries: &[Value]) -> Result<Vec<Column>, Error> {
        let bad =
            |i: usize, why: String| Error::fatal(format!("invalid config: columns[{i}]: {why}"));
        if entries.is_empty() {
            return Err(Error::fatal(
                "invalid config: columns: must list at least one column (or leave it out for the defaults)",
            ));
        }
        entries
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let column = match entry {
                    Value::String(path) => Column::new(path),
                    Value::Object(table) => {
                        if let Some(key) = table.keys().find(|k| *k != "field" && *k != "header") {
                            return Err(bad(
                                i,
                                format!("unknown key `{key}` (expected `field` and `header`)"),
                            ));
                        }
                        let Some(Value::String(field)) = table.get("field") else {
                            return Err(bad(i, "`field` must be a string".into()));
                        };
                        match table.get("header") {
                            None => Column::new(field),
                            Some(Value::String(header)) => Column::named(field, header),
                            Some(_) => return Err(bad(i, "`header` must be a string".into())),
                        }
                    }
                    _ => {
                        Err("expected a field path or { field = \"...\", header = \"...\" }".into())
                    }
                };
                column.map_err(|why| bad(i, why))
            })
            .collect()
    }

    /// The default columns for a schema; generic records have none.
    pub fn defaults(schema: Schema) -> Option<Vec<Column>> {
        let paths = match schema {
            Schema::Iam => IAM_COLUMNS,
            Schema::Tyk => TYK_COLUMNS,
            Schema::Generic => return None,
        };
        Some(
            paths
                .iter()
                .map(|p| Column::new(p).expect("default paths are valid"))
                .collect(),
        )
    }

    /// The value at this column's path, if the record has one.
    pub fn lookup<'v>(&self, record: &'v Value) -> Option<&'v Value> {
        self.path.get(record)
    }
}

/// A value as cell text: strings as they are (times already are RFC 3339
/// strings in the host's JSON), numbers and booleans as JSON writes them,
/// nested maps and lists as compact JSON, missing and null as empty.
pub fn cell(value: Option<&Value>) -> Cow<'_, str> {
    match value {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(other) => Cow::Owned(other.to_string()),
    }
}

/// The CSV dialect: RFC 4180 quoting (a field is quoted when it holds
/// the delimiter, a quote, CR or LF, and quotes inside are doubled) with a
/// configurable delimiter and line ending.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    pub delimiter: u8,
    pub crlf: bool,
}

impl Dialect {
    /// A writer appending rows to `out`, for one batch.
    pub fn rows<'o>(&self, out: &'o mut Vec<u8>) -> Rows<'o> {
        let terminator = if self.crlf {
            csv::Terminator::CRLF
        } else {
            csv::Terminator::Any(b'\n')
        };
        Rows {
            inner: csv::WriterBuilder::new()
                .delimiter(self.delimiter)
                .terminator(terminator)
                .quote_style(csv::QuoteStyle::Necessary)
                .has_headers(false)
                .from_writer(out),
        }
    }
}

/// Rows being appended to a buffer; [`Rows::finish`] flushes them into it.
pub struct Rows<'o> {
    inner: csv::Writer<&'o mut Vec<u8>>,
}

impl Rows<'_> {
    /// Appends a row of raw fields.
    pub fn row<I, S>(&mut self, fields: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        self.inner.write_record(fields).map_err(formatting)
    }

    /// Appends the header row.
    pub fn header(&mut self, columns: &[Column]) -> Result<(), Error> {
        self.row(columns.iter().map(|c| c.header.as_bytes()))
    }

    /// Appends the row for one record.
    pub fn record(&mut self, columns: &[Column], record: &Value) -> Result<(), Error> {
        let cells: Vec<Cow<'_, str>> = columns.iter().map(|c| cell(c.lookup(record))).collect();
        self.row(cells.iter().map(|c| c.as_bytes()))
    }

    /// Flushes the rows into the buffer.
    pub fn finish(mut self) -> Result<(), Error> {
        self.inner.flush().map_err(|e| formatting(e.into()))
    }
}

// Writing into a Vec fails only on a bug in the csv crate; retrying is the
// safe answer.
fn formatting(e: csv::Error) -> Error {
    Error::retry(format!("formatting a CSV row: {e}"))
}

/// Where the last complete row of CSV text ends: scanning tracks quoting,
/// so a newline inside a quoted field does not end a row.
#[derive(Debug, Default)]
pub struct RowEnds {
    in_quotes: bool,
    pos: u64,
    /// Bytes up to and including the last row terminator.
    pub complete: u64,
}

impl RowEnds {
    /// Scans the next bytes of the file.
    pub fn feed(&mut self, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                // A doubled quote toggles twice: the state stays right.
                b'"' => self.in_quotes = !self.in_quotes,
                b'\n' if !self.in_quotes => self.complete = self.pos + i as u64 + 1,
                _ => {}
            }
        }
        self.pos += bytes.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;

    fn row(d: Dialect, fields: &[&str]) -> String {
        let mut out = Vec::new();
        let mut rows = d.rows(&mut out);
        rows.row(fields).unwrap();
        rows.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quotes_only_what_needs_it() {
        let w = Dialect {
            delimiter: b',',
            crlf: false,
        };
        assert_eq!(row(w, &["a", "b c", "1.5"]), "a,b c,1.5\n");
        assert_eq!(
            row(w, &["x,y", "say \"hi\"", "two\nlines", "cr\r"]),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\",\"cr\r\"\n"
        );
        assert_eq!(row(w, &["", "", ""]), ",,\n");
        // A lone empty field is quoted so the row is not a blank line.
        assert_eq!(row(w, &[""]), "\"\"\n");
    }

    #[test]
    fn delimiter_and_line_ending_are_configurable() {
        let w = Dialect {
            delimiter: b';',
            crlf: true,
        };
        assert_eq!(row(w, &["a,b", "c;d"]), "a,b;\"c;d\"\r\n");
        let w = Dialect {
            delimiter: b'\t',
            crlf: false,
        };
        assert_eq!(row(w, &["a b", "c\td"]), "a b\t\"c\td\"\n");
    }

    #[test]
    fn a_record_becomes_one_row_in_column_order() {
        let cols = Column::parse_all(&[
            json!("b"),
            json!({"field": "a.x", "header": "a x"}),
            json!("zz"),
        ])
        .unwrap();
        let mut out = Vec::new();
        let mut rows = Dialect {
            delimiter: b',',
            crlf: false,
        }
        .rows(&mut out);
        rows.header(&cols).unwrap();
        rows.record(&cols, &json!({"a": {"x": "1,2"}, "b": true}))
            .unwrap();
        rows.finish().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "b,a x,zz\ntrue,\"1,2\",\n");
    }

    #[test]
    fn cells_render_every_json_type() {
        let v = json!({
            "s": "text", "n": 42, "f": 51.5, "neg": -3, "t": true, "null": null,
            "obj": {"en": "London", "n": [1, 2]}, "list": ["a", "b"],
        });
        let at = |p: &str| cell(Column::new(p).unwrap().lookup(&v)).into_owned();
        assert_eq!(at("s"), "text");
        assert_eq!(at("n"), "42");
        assert_eq!(at("f"), "51.5");
        assert_eq!(at("neg"), "-3");
        assert_eq!(at("t"), "true");
        assert_eq!(at("null"), "");
        assert_eq!(at("missing"), "");
        assert_eq!(at("obj"), r#"{"en":"London","n":[1,2]}"#);
        assert_eq!(at("obj.en"), "London");
        assert_eq!(at("obj.n.1"), "2");
        assert_eq!(at("obj.n.7"), "");
        assert_eq!(at("list"), r#"["a","b"]"#);
        assert_eq!(at("s.deeper"), "");
    }

    #[test]
    fn columns_parse_from_strings_and_tables() {
        let cols = Column::parse_all(&[
            json!("Username"),
            json!({"field": "Geo.Country.ISOCode", "header": "country"}),
            json!({"field": "Tags"}),
        ])
        .unwrap();
        assert_eq!(cols[0], Column::named("Username", "Username").unwrap());
        assert_eq!(cols[1].header, "country");
        assert_eq!(cols[1].path.segments(), ["Geo", "Country", "ISOCode"]);
        assert_eq!(cols[2].header, "Tags");
        for (bad, needle) in [
            (json!(["a", 3]), "columns[1]"),
            (json!(["a..b"]), "columns[0]"),
            (json!([{"header": "h"}]), "`field`"),
            (json!([{"field": "a", "title": "h"}]), "unknown key `title`"),
            (json!([{"field": "a", "header": 1}]), "`header`"),
            (json!([]), "at least one"),
        ] {
            let e = Column::parse_all(bad.as_array().unwrap()).unwrap_err();
            assert!(e.to_string().contains(needle), "{bad}: {e}");
            assert!(e.to_string().contains("columns"), "{e}");
        }
    }

    #[test]
    fn default_columns_per_schema() {
        let iam = Column::defaults(Schema::Iam).unwrap();
        assert_eq!(iam.len(), 8);
        assert_eq!(iam[0].header, "TimeStamp");
        let tyk = Column::defaults(Schema::Tyk).unwrap();
        assert!(tyk
            .iter()
            .any(|c| c.path.segments() == ["Latency", "Total"]));
        assert!(Column::defaults(Schema::Generic).is_none());
    }

    #[test]
    fn row_ends_ignore_newlines_inside_quotes() {
        let text = b"h1,h2\na,\"x\ny\"\nb,\"torn\n";
        let mut ends = RowEnds::default();
        ends.feed(text);
        assert_eq!(ends.complete, 14, "after the row with a quoted newline");
        // Fed in pieces, the answer is the same.
        for cut in 0..text.len() {
            let mut ends = RowEnds::default();
            ends.feed(&text[..cut]);
            ends.feed(&text[cut..]);
            assert_eq!(ends.complete, 14, "cut at {cut}");
        }
        let mut ends = RowEnds::default();
        ends.feed(b"a,\"say \"\"hi\"\"\"\r\nb\r\n");
        assert_eq!(ends.complete, 19);
    }
}

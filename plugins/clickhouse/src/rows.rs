//! Pure row building: a record's JSON value to one `JSONEachRow` line.
//! No I/O here, so every rule is unit-tested natively.

use pumphouse_sdk::serde_json::{self, Map, Value};
use pumphouse_sdk::{Record, Schema, Timestamp};
use serde::Deserialize;

use crate::types::{check, Types};

/// Where a column's value comes from: `@id`, `@time` or a field path.
pub use pumphouse_sdk::FieldSource as Source;

/// How time fields are written. ClickHouse 18.16 reads a `DateTime` from
/// `YYYY-MM-DD hh:mm:ss` text (in the column's or server's time zone) or
/// from integer unix seconds; RFC 3339 only with
/// `date_time_input_format=best_effort`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Integer unix seconds: the same instant whatever the time zone.
    #[default]
    Unix,
    /// Integer unix milliseconds, for `UInt64`/`Int64` columns.
    UnixMs,
    /// `YYYY-MM-DD hh:mm:ss` in UTC; exact for `DateTime('UTC')` columns.
    Datetime,
    /// RFC 3339 as the host wrote it; the plugin then asks ClickHouse to
    /// parse dates with `date_time_input_format=best_effort`.
    Rfc3339,
}

impl TimeFormat {
    fn render(self, t: Timestamp) -> Value {
        match self {
            TimeFormat::Unix => Value::from(t.unix_seconds()),
            TimeFormat::UnixMs => Value::from(t.unix_millis()),
            TimeFormat::Datetime => {
                // Whole seconds render as `YYYY-MM-DDThh:mm:ssZ`.
                let text = Timestamp::from_unix_seconds(t.unix_seconds()).to_rfc3339();
                Value::from(text.trim_end_matches('Z').replacen('T', " ", 1))
            }
            TimeFormat::Rfc3339 => Value::from(t.to_rfc3339()),
        }
    }
}

/// One column and where its value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub source: Source,
    /// The source is a time: convert it with the [`TimeFormat`].
    pub is_time: bool,
}

/// What the plugin needs to turn records into rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFormat {
    pub columns: Vec<Column>,
    pub time_format: TimeFormat,
}

/// The columns of `CREATE TABLE` statements in the README, for iam records.
pub const IAM_COLUMNS: &[(&str, &str)] = &[
    ("_id", "@id"),
    ("timestamp", "TimeStamp"),
    ("username", "Username"),
    ("effect", "Effect"),
    ("conclusion", "Conclusion"),
    ("request", "Request"),
    ("policies", "Policies"),
    ("deciders", "Deciders"),
    ("expire_at", "ExpireAt"),
];

/// The default columns for Tyk records.
pub const TYK_COLUMNS: &[(&str, &str)] = &[
    ("_id", "@id"),
    ("timestamp", "TimeStamp"),
    ("method", "Method"),
    ("host", "Host"),
    ("path", "Path"),
    ("raw_path", "RawPath"),
    ("content_length", "ContentLength"),
    ("user_agent", "UserAgent"),
    ("response_code", "ResponseCode"),
    ("api_key", "APIKey"),
    ("api_version", "APIVersion"),
    ("api_name", "APIName"),
    ("api_id", "APIID"),
    ("org_id", "OrgID"),
    ("oauth_id", "OauthID"),
    ("request_time", "RequestTime"),
    ("raw_request", "RawRequest"),
    ("raw_response", "RawResponse"),
    ("ip_address", "IPAddress"),
    ("country", "Geo.Country.ISOCode"),
    ("latency_total", "Latency.Total"),
    ("latency_upstream", "Latency.Upstream"),
    ("latency_gateway", "Latency.Gateway"),
    ("bytes_in", "Network.BytesIn"),
    ("bytes_out", "Network.BytesOut"),
    ("tags", "Tags"),
    ("alias", "Alias"),
    ("track_path", "TrackPath"),
    ("original_path", "OriginalPath"),
    ("listen_path", "ListenPath"),
    ("expire_at", "ExpireAt"),
];

/// The default columns for a schema; `None` for generic records, which
/// need `columns` in the config.
pub fn default_columns(schema: Schema) -> Option<&'static [(&'static str, &'static str)]> {
    match schema {
        Schema::Iam => Some(IAM_COLUMNS),
        Schema::Tyk => Some(TYK_COLUMNS),
        Schema::Generic => None,
    }
}

impl RowFormat {
    /// Builds the column list from `(column, source)` pairs; sources whose
    /// path is in `time_fields` (and `@time`) are converted as times.
    pub fn new<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        time_fields: &[String],
        time_format: TimeFormat,
    ) -> Result<RowFormat, String> {
        let mut columns = Vec::new();
        for (name, text) in pairs {
            if name.is_empty() {
                return Err("columns: a column name is empty".into());
            }
            let source = Source::parse(text).map_err(|e| format!("columns.{name}: {e}"))?;
            let is_time = match &source {
                Source::Time => true,
                Source::Id => false,
                Source::Path(_) => time_fields.iter().any(|f| f == text),
            };
            columns.push(Column {
                name: name.to_owned(),
                source,
                is_time,
            });
        }
        if columns.is_empty() {
            return Err("columns: no columns to insert".into());
        }
        Ok(RowFormat {
            columns,
            time_format,
        })
    }

    /// The JSON line (without `\n`) for one record. Missing and null
    /// fields are left out, so ClickHouse fills the column's default.
    /// Every value is checked against its column's type in `types` (a
    /// column missing there is not checked). An error is about this
    /// record alone (not an object, a bad time, a value out of range).
    pub fn row(&self, record: &Record<'_>, types: &Types) -> Result<String, String> {
        let value = record.value().map_err(|e| e.to_string())?;
        let Value::Object(fields) = value else {
            return Err("the record is not a JSON object".into());
        };
        let mut row = Map::new();
        for column in &self.columns {
            let found = match &column.source {
                Source::Id => Some((Value::from(record.id()), None)),
                Source::Time => {
                    let t = record.time();
                    Some((self.render(t, &column.name)?, Some(t)))
                }
                Source::Path(path) => match path.get_in(&fields) {
                    None | Some(Value::Null) => None,
                    Some(v) if column.is_time => {
                        let t = time(v, &column.name)?;
                        Some((self.render(t, &column.name)?, Some(t)))
                    }
                    Some(Value::Object(o)) => {
                        Some((Value::from(Value::Object(o.clone()).to_string()), None))
                    }
                    Some(v) => Some((v.clone(), None)),
                },
            };
            if let Some((v, t)) = found {
                if let Some(ty) = types.get(&column.name) {
                    check(&column.name, ty, &v, t)?;
                }
                row.insert(column.name.clone(), v);
            }
        }
        serde_json::to_string(&row).map_err(|e| e.to_string())
    }

    /// A time in the configured format; milliseconds past `i64` are an
    /// error, not a saturated value.
    fn render(&self, t: Timestamp, column: &str) -> Result<Value, String> {
        if self.time_format == TimeFormat::UnixMs && t.unix_seconds().checked_mul(1000).is_none() {
            return Err(format!(
                "column {column}: {} seconds is past what unix_ms can write",
                t.unix_seconds()
            ));
        }
        Ok(self.time_format.render(t))
    }
}

fn time(value: &Value, column: &str) -> Result<Timestamp, String> {
    match value {
        Value::String(s) => Timestamp::parse_rfc3339(s)
            .map_err(|e| format!("column {column}: {s:?} is not a time: {e}")),
        Value::Number(n) if n.is_i64() => Ok(Timestamp::from_unix_seconds(n.as_i64().unwrap_or(0))),
        other => Err(format!("column {column}: {other} is not a time")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;
    use pumphouse_sdk::testing;

    fn format(pairs: &[(&str, &str)], time_format: TimeFormat) -> RowFormat {
        let time_fields = vec!["TimeStamp".to_owned(), "ExpireAt".to_owned()];
        RowFormat::new(pairs.iter().copied(), &time_fields, time_format).unwrap()
    }

    fn row(f: &RowFormat, rec: Value) -> Result<Value, String> {
        let batch = testing::json_batch(&[rec]);
        let line = f.row(&batch.get(0).unwrap(), &Types::new())?;
        Ok(serde_json::from_str(&line).unwrap())
    }

    #[test]
    fn paths_ids_and_nested_values() {
        let f = format(
            &[
                ("_id", "@id"),
                ("user", "Username"),
                ("country", "Geo.Country.ISOCode"),
                ("tags", "Tags"),
                ("geo", "Geo.City"),
                ("flag", "TrackPath"),
                ("n", "Latency.Total"),
                ("gone", "Missing.Path"),
                ("nil", "Null"),
            ],
            TimeFormat::Unix,
        );
        let got = row(
            &f,
            json!({
                "Username": "a \"b\"\n",
                "Geo": {"Country": {"ISOCode": "DE"}, "City": {"GeoNameID": 7}},
                "Tags": ["x", "y"],
                "TrackPath": true,
                "Latency": {"Total": -3},
                "Null": null,
            }),
        )
        .unwrap();
        assert_eq!(
            got,
            json!({
                "_id": 0,
                "user": "a \"b\"\n",
                "country": "DE",
                "tags": ["x", "y"],
                "geo": "{\"GeoNameID\":7}",
                "flag": true,
                "n": -3,
            })
        );
    }

    #[test]
    fn times_in_every_format() {
        let rec = json!({"TimeStamp": "2026-11-21T05:47:41.25Z", "ExpireAt": 1795240061});
        let cases = [
            (TimeFormat::Unix, json!(1795240061), json!(1795240061)),
            (
                TimeFormat::UnixMs,
                json!(1795240061250i64),
                json!(1795240061000i64),
            ),
            (
                TimeFormat::Datetime,
                json!("2026-11-21 05:47:41"),
                json!("2026-11-21 05:47:41"),
            ),
            (
                TimeFormat::Rfc3339,
                json!("2026-11-21T05:47:41.25Z"),
                json!("2026-11-21T05:47:41Z"),
            ),
        ];
        for (tf, ts, exp) in cases {
            let f = format(&[("ts", "TimeStamp"), ("exp", "ExpireAt")], tf);
            assert_eq!(
                row(&f, rec.clone()).unwrap(),
                json!({"ts": ts, "exp": exp}),
                "{tf:?}"
            );
        }
        // The host's event time (ms).
        let f = format(&[("t", "@time")], TimeFormat::UnixMs);
        assert_eq!(row(&f, json!({})).unwrap(), json!({"t": 0}));
    }

    #[test]
    fn bad_records_are_errors_naming_the_column() {
        let f = format(&[("ts", "TimeStamp")], TimeFormat::Unix);
        let err = row(&f, json!({"TimeStamp": "yesterday"})).unwrap_err();
        assert!(
            err.contains("column ts") && err.contains("yesterday"),
            "{err}"
        );
        let err = row(&f, json!({"TimeStamp": [1]})).unwrap_err();
        assert!(err.contains("not a time"), "{err}");
        let err = row(&f, json!([1, 2])).unwrap_err();
        assert!(err.contains("not a JSON object"), "{err}");
    }

    #[test]
    fn values_are_checked_against_their_column_types() {
        let types: Types = [("ts", "DateTime('UTC')"), ("exp", "Int64"), ("n", "Int32")]
            .into_iter()
            .map(|(c, t)| (c.to_owned(), crate::types::ColumnType::parse(t)))
            .collect();
        let f = format(
            &[
                ("ts", "TimeStamp"),
                ("exp", "ExpireAt"),
                ("n", "Latency.Total"),
            ],
            TimeFormat::Datetime,
        );
        let check = |rec: Value| {
            let batch = testing::json_batch(&[rec]);
            f.row(&batch.get(0).unwrap(), &types)
        };
        let line = check(json!({"TimeStamp": 0, "ExpireAt": 4_855_673_600i64})).unwrap();
        assert!(line.contains("\"exp\":\"2123-11-14 22:13:20\""), "{line}");
        let err = check(json!({"TimeStamp": 4_855_673_600i64})).unwrap_err();
        assert!(
            err.contains("column ts (DateTime('UTC')) cannot hold 2123-11-14T22:13:20Z"),
            "{err}"
        );
        let err = check(json!({"Latency": {"Total": 1i64 << 40}})).unwrap_err();
        assert!(err.contains("column n (Int32)"), "{err}");
        // Milliseconds past i64 are refused, not saturated.
        let ms = format(&[("exp", "ExpireAt")], TimeFormat::UnixMs);
        let batch = testing::json_batch(&[json!({"ExpireAt": i64::MAX / 10})]);
        let err = ms.row(&batch.get(0).unwrap(), &Types::new()).unwrap_err();
        assert!(err.contains("unix_ms"), "{err}");
    }

    #[test]
    fn column_sources_are_validated() {
        let none: &[String] = &[];
        for (pairs, needle) in [
            (vec![("a", "@nope")], "columns.a: unknown source"),
            (vec![("a", "Geo..City")], "columns.a:"),
            (vec![("a", "")], "columns.a:"),
            (vec![("", "X")], "column name is empty"),
            (vec![], "no columns"),
        ] {
            let err = RowFormat::new(pairs, none, TimeFormat::Unix).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn defaults_cover_iam_and_tyk_only() {
        assert!(default_columns(Schema::Generic).is_none());
        for schema in [Schema::Iam, Schema::Tyk] {
            let cols = default_columns(schema).unwrap();
            assert_eq!(cols[0], ("_id", "@id"));
            let f = format(cols, TimeFormat::Unix);
            assert!(f.columns.iter().any(|c| c.name == "timestamp" && c.is_time));
        }
    }
}

//! Pure line-protocol building: a record's JSON value to one InfluxDB v1
//! point. No I/O here, so escaping and typing are unit-tested natively.

use pumphouse_sdk::serde_json::{Map, Value};
use pumphouse_sdk::{Record, Schema, Timestamp};
use serde::Deserialize;

/// Where a tag's, field's or the time's value comes from: `@id`, `@time`
/// or a field path.
pub use pumphouse_sdk::FieldSource as Source;

/// Parses a source; `what` names the config key in errors.
fn source_of(what: &str, text: &str) -> Result<Source, String> {
    Source::parse(text).map_err(|e| format!("{what}: {e}"))
}

/// The unit of the timestamps sent, and the `precision` of `/write`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Ns,
    Us,
    Ms,
    S,
}

/// The earliest and latest times InfluxDB 1.x stores, in unix ns
/// (`models.MinNanoTime`, `models.MaxNanoTime`): a point outside is
/// refused by influxd.
const MIN_NANOS: i128 = i64::MIN as i128 + 2;
const MAX_NANOS: i128 = i64::MAX as i128 - 1;

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Ns => "ns",
            Precision::Us => "u",
            Precision::Ms => "ms",
            Precision::S => "s",
        }
    }

    fn units(self, t: Timestamp) -> i128 {
        let per_unit = match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        };
        t.unix_nanos().div_euclid(per_unit)
    }
}

/// InfluxDB's names for field types, as its type-conflict errors use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Float,
    Integer,
    String,
    Boolean,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Float => "float",
            FieldType::Integer => "integer",
            FieldType::String => "string",
            FieldType::Boolean => "boolean",
        }
    }
}

/// One formatted point and the types of its fields (to tell which points
/// a type conflict dropped).
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub line: String,
    pub fields: Vec<(String, FieldType)>,
}

/// Everything that turns records of one schema into points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFormat {
    /// Escaped.
    measurement: String,
    /// `(escaped key, source)`, sorted by key as InfluxDB prefers.
    tags: Vec<(String, Source)>,
    /// `(key, escaped key, source)`.
    fields: Vec<(String, String, Source)>,
    time: Source,
    precision: Precision,
    integers: bool,
}

/// Tags of the default iam mapping: low-cardinality values only.
pub const IAM_TAGS: &[(&str, &str)] = &[("effect", "Effect"), ("username", "Username")];
/// Fields of the default iam mapping.
pub const IAM_FIELDS: &[(&str, &str)] = &[
    ("conclusion", "Conclusion"),
    ("request", "Request"),
    ("policies", "Policies"),
    ("deciders", "Deciders"),
];
/// Tags of the default Tyk mapping.
pub const TYK_TAGS: &[(&str, &str)] = &[
    ("api_id", "APIID"),
    ("api_name", "APIName"),
    ("api_version", "APIVersion"),
    ("method", "Method"),
    ("org_id", "OrgID"),
    ("response_code", "ResponseCode"),
];
/// Fields of the default Tyk mapping.
pub const TYK_FIELDS: &[(&str, &str)] = &[
    ("path", "Path"),
    ("host", "Host"),
    ("api_key", "APIKey"),
    ("ip_address", "IPAddress"),
    ("user_agent", "UserAgent"),
    ("country", "Geo.Country.ISOCode"),
    ("content_length", "ContentLength"),
    ("request_time", "RequestTime"),
    ("latency_total", "Latency.Total"),
    ("latency_upstream", "Latency.Upstream"),
    ("latency_gateway", "Latency.Gateway"),
    ("bytes_in", "Network.BytesIn"),
    ("bytes_out", "Network.BytesOut"),
    ("track_path", "TrackPath"),
    ("tags", "Tags"),
];

/// `(key, source)` pairs of a default mapping.
pub type Mapping = &'static [(&'static str, &'static str)];

/// The default measurement, tags and fields of a schema.
pub fn defaults(schema: Schema) -> Option<(&'static str, Mapping, Mapping)> {
    match schema {
        Schema::Iam => Some(("iam", IAM_TAGS, IAM_FIELDS)),
        Schema::Tyk => Some(("tyk", TYK_TAGS, TYK_FIELDS)),
        Schema::Generic => None,
    }
}

impl LineFormat {
    /// Validates names once, so a record can fail only on its own data.
    pub fn new<'a>(
        measurement: &str,
        tags: impl IntoIterator<Item = (&'a str, &'a str)>,
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
        time: &str,
        precision: Precision,
        integers: bool,
    ) -> Result<LineFormat, String> {
        let measurement = escape_name("measurement", measurement, MEASUREMENT_SPECIALS)?;
        let mut tag_list = Vec::new();
        for (key, source) in tags {
            let what = format!("tags.{key}");
            tag_list.push((
                escape_name(&what, key, KEY_SPECIALS)?,
                source_of(&what, source)?,
            ));
        }
        tag_list.sort_by(|a, b| a.0.cmp(&b.0));
        let mut field_list = Vec::new();
        for (key, source) in fields {
            let what = format!("fields.{key}");
            let escaped = escape_name(&what, key, KEY_SPECIALS)?;
            field_list.push((key.to_owned(), escaped, source_of(&what, source)?));
        }
        if field_list.is_empty() {
            return Err("fields: a point needs at least one field".into());
        }
        Ok(LineFormat {
            measurement,
            tags: tag_list,
            fields: field_list,
            time: source_of("timestamp", time)?,
            precision,
            integers,
        })
    }

    /// Adds the tag holding the record id.
    pub fn with_id_tag(mut self, key: &str) -> Result<LineFormat, String> {
        let escaped = escape_name("id_tag", key, KEY_SPECIALS)?;
        self.tags.push((escaped, Source::Id));
        self.tags.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(self)
    }

    /// The point for one record. An error is about this record alone.
    pub fn point(&self, record: &Record<'_>) -> Result<Point, String> {
        let value = record.value().map_err(|e| e.to_string())?;
        let Value::Object(map) = value else {
            return Err("the record is not a JSON object".into());
        };
        let mut line = self.measurement.clone();
        for (key, source) in &self.tags {
            let Some(text) = tag_text(&resolve(source, &map, record)) else {
                continue;
            };
            line.push(',');
            line.push_str(key);
            line.push('=');
            line.push_str(&escape_value(&text).map_err(|e| format!("tag {key}: {e}"))?);
        }
        let mut fields = Vec::with_capacity(self.fields.len());
        for (key, escaped, source) in &self.fields {
            let Some((text, kind)) = self
                .field_text(&resolve(source, &map, record))
                .map_err(|e| format!("field {key}: {e}"))?
            else {
                continue;
            };
            line.push(if fields.is_empty() { ' ' } else { ',' });
            line.push_str(escaped);
            line.push('=');
            line.push_str(&text);
            fields.push((key.clone(), kind));
        }
        if fields.is_empty() {
            return Err("none of the configured fields has a value; a point needs one".into());
        }
        let time = match resolve(&self.time, &map, record) {
            Value::Null => record.time(),
            Value::String(s) => Timestamp::parse_rfc3339(&s)
                .map_err(|e| format!("timestamp: {s:?} is not a time: {e}"))?,
            Value::Number(n) if n.is_i64() => Timestamp::from_unix_seconds(n.as_i64().unwrap_or(0)),
            other => return Err(format!("timestamp: {other} is not a time")),
        };
        if !(MIN_NANOS..=MAX_NANOS).contains(&time.unix_nanos()) {
            return Err(format!(
                "timestamp {} is outside the times InfluxDB holds \
                 (1677-09-21T00:12:43.145224194Z to 2262-04-11T23:47:16.854775806Z); \
                 refused rather than stored wrong",
                time.to_rfc3339()
            ));
        }
        line.push(' ');
        line.push_str(&self.precision.units(time).to_string());
        Ok(Point { line, fields })
    }

    /// A field value in line protocol, `None` to leave it out, or why the
    /// value cannot be stored as it is.
    fn field_text(&self, value: &Value) -> Result<Option<(String, FieldType)>, String> {
        Ok(Some(match value {
            Value::Null => return Ok(None),
            Value::Bool(b) => (b.to_string(), FieldType::Boolean),
            Value::Number(n) => match n.as_i64() {
                Some(i) if self.integers => (format!("{i}i"), FieldType::Integer),
                // Past int64 (a u64 above 2^63 - 1): as a float it would lose
                // its low digits, so it is refused, not rounded.
                None if self.integers && n.is_u64() => {
                    return Err(format!(
                        "{n} is beyond InfluxDB's integers (-2^63 to 2^63 - 1); \
                         refused rather than stored rounded"
                    ))
                }
                _ => {
                    let Some(f) = n.as_f64().filter(|f| f.is_finite()) else {
                        return Ok(None);
                    };
                    (format!("{f:?}"), FieldType::Float)
                }
            },
            Value::String(s) => (quote(s), FieldType::String),
            other => (quote(&other.to_string()), FieldType::String),
        }))
    }
}

fn resolve(source: &Source, map: &Map<String, Value>, record: &Record<'_>) -> Value {
    match source {
        Source::Id => Value::from(record.id().to_string()),
        Source::Time => Value::from(record.time().to_rfc3339()),
        Source::Path(path) => path.get_in(map).cloned().unwrap_or(Value::Null),
    }
}

/// A tag's text; empty and null values leave the tag out, as InfluxDB
/// does not store empty tag values.
fn tag_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (!text.is_empty()).then_some(text)
}

const MEASUREMENT_SPECIALS: &[char] = &[',', ' '];
const KEY_SPECIALS: &[char] = &[',', '=', ' '];

/// Escapes a measurement or key from the config; it must be expressible.
fn escape_name(what: &str, name: &str, specials: &[char]) -> Result<String, String> {
    if name.is_empty() {
        return Err(format!("{what}: empty"));
    }
    escape(name, specials).map_err(|e| format!("{what}: {e}"))
}

/// Escapes a tag value.
pub fn escape_value(value: &str) -> Result<String, String> {
    escape(value, KEY_SPECIALS)
}

/// Backslash before each special character. InfluxDB 1.x keeps any other
/// backslash as it is, so a trailing one would escape the delimiter after
/// it, and a line cannot hold a newline: both are refused.
fn escape(text: &str, specials: &[char]) -> Result<String, String> {
    if text.contains(['\n', '\r']) {
        return Err(format!(
            "{text:?} holds a line break, which line protocol cannot carry"
        ));
    }
    if text.ends_with('\\') {
        return Err(format!(
            "{text:?} ends in a backslash, which line protocol cannot carry"
        ));
    }
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if specials.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(out)
}

/// A string field value: quoted, with `"` and `\` escaped (line breaks
/// are fine inside quotes).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;
    use pumphouse_sdk::testing;

    fn point(f: &LineFormat, rec: Value) -> Result<Point, String> {
        let batch = testing::json_batch(&[rec]);
        f.point(&batch.get(0).unwrap())
    }

    fn format(tags: &[(&str, &str)], fields: &[(&str, &str)]) -> LineFormat {
        LineFormat::new(
            "m",
            tags.iter().copied(),
            fields.iter().copied(),
            "TimeStamp",
            Precision::Ns,
            true,
        )
        .unwrap()
    }

    #[test]
    fn escaping_of_names_and_values() {
        assert_eq!(escape_value("a b,c=d").unwrap(), r"a\ b\,c\=d");
        // A backslash stays literal unless it ends the text.
        assert_eq!(escape_value(r"x\y").unwrap(), r"x\y");
        assert_eq!(escape_value(r"x\,y").unwrap(), r"x\\,y");
        assert!(escape_value(r"end\").unwrap_err().contains("backslash"));
        assert!(escape_value("a\nb").unwrap_err().contains("line break"));
        assert!(escape_value("a\rb").is_err());
        assert_eq!(
            quote("say \"hi\"\\ \n ok, a=b"),
            "\"say \\\"hi\\\"\\\\ \n ok, a=b\""
        );
        let f = LineFormat::new(
            "my m,x=1",
            [("t k=", "T")],
            [("f ,=", "F")],
            "@time",
            Precision::Ms,
            true,
        )
        .unwrap();
        assert_eq!(
            point(&f, json!({"T": "v a,l=ue\"", "F": "q\"u\\o"}))
                .unwrap()
                .line,
            r#"my\ m\,x=1,t\ k\==v\ a\,l\=ue" f\ \,\=="q\"u\\o" 0"#
        );
    }

    #[test]
    fn field_types_and_missing_values() {
        let f = format(
            &[
                ("code", "Code"),
                ("flag", "Flag"),
                ("empty", "Empty"),
                ("gone", "Gone"),
            ],
            &[
                ("i", "I"),
                ("neg", "Neg"),
                ("big", "Big"),
                ("f", "F"),
                ("whole", "Whole"),
                ("b", "B"),
                ("s", "S"),
                ("arr", "Arr"),
                ("obj", "Obj.Inner"),
                ("null", "Null"),
            ],
        );
        let p = point(
            &f,
            json!({
                "Code": 200, "Flag": true, "Empty": "",
                "I": 7, "Neg": -3, "Big": 1e19, "F": 1.5, "Whole": 2.0, "B": false,
                "S": "x", "Arr": ["a", 1], "Obj": {"Inner": {"k": "v"}}, "Null": null,
                "TimeStamp": "2026-11-21T05:47:41.123456789Z",
            }),
        )
        .unwrap();
        assert_eq!(
            p.line,
            "m,code=200,flag=true i=7i,neg=-3i,big=1e19,f=1.5,whole=2.0,b=false,\
             s=\"x\",arr=\"[\\\"a\\\",1]\",obj=\"{\\\"k\\\":\\\"v\\\"}\" 1795240061123456789"
        );
        let kinds: Vec<_> = p
            .fields
            .iter()
            .map(|(k, t)| (k.as_str(), t.name()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("i", "integer"),
                ("neg", "integer"),
                ("big", "float"),
                ("f", "float"),
                ("whole", "float"),
                ("b", "boolean"),
                ("s", "string"),
                ("arr", "string"),
                ("obj", "string"),
            ]
        );
        // Integers as floats, for measurements that already hold floats.
        let f = LineFormat::new("m", [], [("i", "I")], "T", Precision::S, false).unwrap();
        assert_eq!(
            point(&f, json!({"I": 7, "T": 5})).unwrap().line,
            "m i=7.0 5"
        );
    }

    /// Values InfluxDB cannot hold fail the record, naming the field or
    /// the time, instead of being rounded or wrapped.
    #[test]
    fn values_out_of_influxdbs_range_fail_the_record() {
        let f = format(&[], &[("big", "Big")]);
        let err = point(&f, json!({"Big": u64::MAX, "TimeStamp": 1})).unwrap_err();
        assert!(
            err.starts_with("field big: 18446744073709551615 is beyond InfluxDB's integers"),
            "{err}"
        );
        // The same value as a float field when integers are off.
        let floats = LineFormat::new("m", [], [("big", "Big")], "T", Precision::S, false).unwrap();
        assert!(point(&floats, json!({"Big": u64::MAX, "T": 1})).is_ok());
        // The edges of InfluxDB's time range, in and just out.
        for (time, ok) in [
            ("2262-04-11T23:47:16.854775806Z", true),
            ("2262-04-11T23:47:16.854775807Z", false),
            ("1677-09-21T00:12:43.145224194Z", true),
            ("1677-09-21T00:12:43.145224193Z", false),
            ("2123-01-01T00:00:00Z", true),
            ("9999-12-31T23:59:59Z", false),
        ] {
            let got = point(&f, json!({"Big": 1, "TimeStamp": time}));
            assert_eq!(got.is_ok(), ok, "{time}: {got:?}");
            if let Err(e) = got {
                assert!(e.contains("outside the times InfluxDB holds"), "{e}");
            }
        }
        // Integer seconds past the range, too.
        assert!(point(&f, json!({"Big": 1, "TimeStamp": 9_300_000_000i64})).is_err());
    }

    #[test]
    fn timestamps_in_every_precision() {
        let rec = json!({"F": 1, "TimeStamp": "2026-11-21T05:47:41.123456789Z"});
        for (p, t) in [
            (Precision::Ns, "1795240061123456789"),
            (Precision::Us, "1795240061123456"),
            (Precision::Ms, "1795240061123"),
            (Precision::S, "1795240061"),
        ] {
            let f = LineFormat::new("m", [], [("f", "F")], "TimeStamp", p, true).unwrap();
            assert!(
                point(&f, rec.clone())
                    .unwrap()
                    .line
                    .ends_with(&format!(" {t}")),
                "{p:?}"
            );
        }
        // Integer seconds, and the host's time when the field is missing.
        let f = format(&[], &[("f", "F")]);
        assert!(point(&f, json!({"F": 1, "TimeStamp": 2}))
            .unwrap()
            .line
            .ends_with(" 2000000000"));
        assert!(point(&f, json!({"F": 1})).unwrap().line.ends_with(" 0"));
    }

    #[test]
    fn ids_become_tags() {
        let f = format(&[("user", "U")], &[("f", "F")])
            .with_id_tag("_id")
            .unwrap();
        assert_eq!(
            point(&f, json!({"F": 1, "U": "a"})).unwrap().line,
            "m,_id=0,user=a f=1i 0"
        );
    }

    #[test]
    fn bad_records_fail_alone_with_a_reason() {
        let f = format(&[("t", "T")], &[("f", "F")]);
        for (rec, needle) in [
            (json!({"T": "a\nb", "F": 1}), "tag t"),
            (json!({"T": "x\\", "F": 1}), "backslash"),
            (json!({"T": "x"}), "a point needs one"),
            (json!({"F": 1, "TimeStamp": "noon"}), "timestamp"),
            (json!({"F": 1, "TimeStamp": true}), "timestamp"),
            (json!("scalar"), "not a JSON object"),
        ] {
            let err = point(&f, rec.clone()).unwrap_err();
            assert!(err.contains(needle), "{rec}: {err}");
        }
    }

    #[test]
    fn names_are_validated_at_init() {
        let new = |m: &str, tags: &[(&str, &str)], fields: &[(&str, &str)], t: &str| {
            LineFormat::new(
                m,
                tags.iter().copied(),
                fields.iter().copied(),
                t,
                Precision::Ns,
                true,
            )
            .unwrap_err()
        };
        assert!(new("", &[], &[("f", "F")], "T").contains("measurement"));
        assert!(new("m\\", &[], &[("f", "F")], "T").contains("measurement"));
        assert!(new("m", &[("a\nb", "X")], &[("f", "F")], "T").contains("tags.a"));
        assert!(new("m", &[("t", "@x")], &[("f", "F")], "T").contains("tags.t"));
        assert!(new("m", &[], &[("f", "F..G")], "T").contains("fields.f"));
        assert!(new("m", &[], &[], "T").contains("at least one field"));
        assert!(new("m", &[], &[("f", "F")], "").contains("timestamp"));
    }

    #[test]
    fn defaults_cover_iam_and_tyk() {
        assert!(defaults(Schema::Generic).is_none());
        for schema in [Schema::Iam, Schema::Tyk] {
            let (m, tags, fields) = defaults(schema).unwrap();
            LineFormat::new(
                m,
                tags.iter().copied(),
                fields.iter().copied(),
                "TimeStamp",
                Precision::Ns,
                true,
            )
            .unwrap();
        }
    }
}

//! Dotted paths into a record's JSON, the way sink configs name fields.

use std::fmt;

use serde_json::{Map, Value};

/// A dotted path into a record's JSON, e.g. `Geo.Country.ISOCode`: map
/// keys from the record down to the value; a numeric segment also indexes
/// an array.
///
/// ```
/// use pumphouse_sdk::FieldPath;
/// let path = FieldPath::parse("Geo.Country.ISOCode").unwrap();
/// let record = serde_json::json!({"Geo": {"Country": {"ISOCode": "NL"}}});
/// assert_eq!(path.get(&record), Some(&serde_json::json!("NL")));
/// assert!(FieldPath::parse("Geo..ISOCode").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Parses `a.b.c`; an empty path or segment is an error saying so.
    pub fn parse(text: &str) -> Result<FieldPath, String> {
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(format!(
                "{text:?} is not a field path (keys joined by dots, e.g. `Geo.Country.ISOCode`)"
            ));
        }
        Ok(FieldPath(text.split('.').map(str::to_owned).collect()))
    }

    /// The keys, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The value at this path in `value`, if there is one.
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(value, step)
    }

    /// The value at this path in a record's top-level fields.
    pub fn get_in<'v>(&self, fields: &'v Map<String, Value>) -> Option<&'v Value> {
        let (first, rest) = self.0.split_first()?;
        rest.iter().try_fold(fields.get(first)?, step)
    }
}

fn step<'v>(v: &'v Value, key: &String) -> Option<&'v Value> {
    match v {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

/// Where a configured value comes from: the record's id, its time, or one
/// of its fields. Sinks read `@id`, `@time` or a dotted path from their
/// config (a column, a tag, a field).
///
/// ```
/// use pumphouse_sdk::{FieldPath, FieldSource};
/// assert_eq!(FieldSource::parse("@id"), Ok(FieldSource::Id));
/// assert_eq!(
///     FieldSource::parse("Latency.Total"),
///     Ok(FieldSource::Path(FieldPath::parse("Latency.Total").unwrap()))
/// );
/// assert!(FieldSource::parse("@nope").unwrap_err().contains("unknown source"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldSource {
    /// `@id`: the record's stable id (the same on re-delivery).
    Id,
    /// `@time`: the record's time as the host derived it.
    Time,
    /// A dotted path into the record.
    Path(FieldPath),
}

impl FieldSource {
    /// Parses `@id`, `@time` or a field path.
    pub fn parse(text: &str) -> Result<FieldSource, String> {
        match text {
            "@id" => Ok(FieldSource::Id),
            "@time" => Ok(FieldSource::Time),
            t if t.starts_with('@') => Err(format!(
                "unknown source {t:?} (use @id, @time or a field path)"
            )),
            t => FieldPath::parse(t).map(FieldSource::Path),
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn walks_maps_and_arrays() {
        let record = json!({"a": {"b": [10, {"c": true}]}});
        let get = |p: &str| FieldPath::parse(p).unwrap().get(&record).cloned();
        assert_eq!(get("a.b.0"), Some(json!(10)));
        assert_eq!(get("a.b.1.c"), Some(json!(true)));
        assert_eq!(get("a.x"), None);
        assert_eq!(get("a.b.c"), None);
        let Value::Object(fields) = &record else {
            unreachable!()
        };
        let p = FieldPath::parse("a.b.0").unwrap();
        assert_eq!(p.get_in(fields), Some(&json!(10)));
        assert_eq!(p.to_string(), "a.b.0");
    }

    #[test]
    fn empty_segments_are_refused() {
        for bad in ["", ".", "a.", ".a", "a..b"] {
            assert!(
                FieldPath::parse(bad)
                    .unwrap_err()
                    .contains("not a field path"),
                "{bad}"
            );
        }
    }
}

//! MessagePack record → JSON object, the form JSON-speaking plugins get.

use base64::Engine as _;
use rmpv::ValueRef;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{time, top_level_map, DecodeError, Schema};

/// Writes one record as a JSON object: keys as in the producer's map, known
/// time fields (and any timestamp extension) as RFC 3339 UTC strings, binary
/// as base64, and the `omit` keys left out.
pub fn write_json(
    schema: Schema,
    bytes: &[u8],
    omit: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let entries = top_level_map(bytes)?;
    let top = TopLevel {
        schema,
        entries: &entries,
        omit,
    };
    serde_json::to_writer(out, &top).map_err(|e| DecodeError::Msgpack(e.to_string()))
}

struct TopLevel<'a, 'b> {
    schema: Schema,
    entries: &'a [(ValueRef<'b>, ValueRef<'b>)],
    omit: &'a [&'a str],
}

impl Serialize for TopLevel<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.entries {
            let key = key_text(k);
            if self.omit.contains(&key.as_ref()) {
                continue;
            }
            if self.schema.time_fields().contains(&key.as_ref()) {
                if let Ok(t) = time::parse_time(v) {
                    map.serialize_entry(&key, &t.map(|t| t.to_rfc3339()))?;
                    continue;
                }
            }
            map.serialize_entry(&key, &Json(v))?;
        }
        map.end()
    }
}

fn key_text<'a>(k: &'a ValueRef<'_>) -> std::borrow::Cow<'a, str> {
    match k {
        ValueRef::String(s) => String::from_utf8_lossy(s.as_bytes()),
        other => std::borrow::Cow::Owned(serde_json::to_string(&Json(other)).unwrap_or_default()),
    }
}

/// Any MessagePack value as JSON.
struct Json<'a, 'b>(&'a ValueRef<'b>);

impl Serialize for Json<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            ValueRef::Nil => s.serialize_unit(),
            ValueRef::Boolean(b) => s.serialize_bool(*b),
            ValueRef::Integer(i) => match (i.as_i64(), i.as_u64()) {
                (Some(v), _) => s.serialize_i64(v),
                (None, Some(v)) => s.serialize_u64(v),
                _ => s.serialize_unit(),
            },
            ValueRef::F32(f) => s.serialize_f32(*f),
            ValueRef::F64(f) => s.serialize_f64(*f),
            ValueRef::String(st) => s.serialize_str(&String::from_utf8_lossy(st.as_bytes())),
            ValueRef::Binary(b) => {
                s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            ValueRef::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Json(item))?;
                }
                seq.end()
            }
            ValueRef::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(&key_text(k), &Json(v))?;
                }
                map.end()
            }
            ValueRef::Ext(-1, data) => match time::parse_timestamp_ext(data) {
                Ok(t) => s.serialize_str(&t.to_rfc3339()),
                Err(_) => ext_object(s, -1, data),
            },
            ValueRef::Ext(ty, data) => ext_object(s, *ty, data),
        }
    }
}

fn ext_object<S: Serializer>(s: S, ty: i8, data: &[u8]) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(2))?;
    map.serialize_entry("ext_type", &ty)?;
    map.serialize_entry(
        "data",
        &base64::engine::general_purpose::STANDARD.encode(data),
    )?;
    map.end()
}

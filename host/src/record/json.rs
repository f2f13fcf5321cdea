//! MessagePack record → JSON object, the form JSON-speaking plugins get.

use base64::Engine as _;
use rmpv::ValueRef;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{time, top_level_map, DecodeError, Schema};

/// Writes one record as a JSON object: keys as in the producer's map, known
/// time fields (and any timestamp extension) as RFC 3339 UTC strings, binary
/// as base64, and the `omit` keys left out.
///
/// Streams from the MessagePack bytes to JSON without building a value tree:
/// strings are validated once and escaped in runs (eight bytes at a time),
/// maps and arrays are walked in place, and only scalars that need care
/// (numbers, binary, extensions, time fields) go through rmpv and
/// serde_json. The output is byte for byte what [`write_json_tree`] (the
/// straightforward serde version, kept as the reference in tests) writes.
/// On error nothing is left in `out`.
pub fn write_json(
    schema: Schema,
    bytes: &[u8],
    omit: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let start = out.len();
    let r = write_top(schema, bytes, omit, out);
    if r.is_err() {
        out.truncate(start);
    }
    r
}

fn msgpack_err(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Msgpack(e.to_string())
}

fn write_top(
    schema: Schema,
    bytes: &[u8],
    omit: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut cur = bytes;
    let Some(len) = container_len(&mut cur, Container::Map) else {
        // Not a map: the full parse names the problem.
        return Err(top_level_map(bytes)
            .err()
            .unwrap_or_else(|| DecodeError::Msgpack("expected a map".into())));
    };
    out.push(b'{');
    let mut first = true;
    for _ in 0..len {
        let key = read_key(&mut cur)?;
        if omit.contains(&key.as_ref()) {
            super::skip_value(&mut cur)?;
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, &key);
        out.push(b':');
        if schema.time_fields().contains(&key.as_ref()) {
            let v = rmpv::decode::read_value_ref(&mut cur).map_err(msgpack_err)?;
            match time::parse_time(&v) {
                Ok(Some(t)) => write_str(out, &t.to_rfc3339()),
                Ok(None) => out.extend_from_slice(b"null"),
                Err(_) => serde_json::to_writer(&mut *out, &Json(&v)).map_err(msgpack_err)?,
            }
            continue;
        }
        write_value(&mut cur, out, 0)?;
    }
    out.push(b'}');
    if !cur.is_empty() {
        return Err(DecodeError::Trailing(cur.len()));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Container {
    Map,
    Array,
}

/// Reads a map or array header; `None`, consuming nothing, if the next
/// value is not one (or its header is cut short).
fn container_len(cur: &mut &[u8], want: Container) -> Option<usize> {
    let (&m, rest) = cur.split_first()?;
    let (len, hdr) = match (want, m) {
        (Container::Map, 0x80..=0x8f) | (Container::Array, 0x90..=0x9f) => {
            (usize::from(m & 0x0f), 0)
        }
        (Container::Map, 0xde) | (Container::Array, 0xdc) => (
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
            2,
        ),
        (Container::Map, 0xdf) | (Container::Array, 0xdd) => {
            let b = rest.get(..4)?;
            (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize, 4)
        }
        _ => return None,
    };
    *cur = &rest[hdr..];
    Some(len)
}

/// A map key as text: strings as they are (invalid UTF-8 replaced), other
/// keys as their JSON text.
fn read_key<'a>(cur: &mut &'a [u8]) -> Result<std::borrow::Cow<'a, str>, DecodeError> {
    if let Some(k) = super::str_bytes(cur)? {
        return Ok(utf8(k));
    }
    let v = rmpv::decode::read_value_ref(cur).map_err(msgpack_err)?;
    Ok(std::borrow::Cow::Owned(key_text(&v).into_owned()))
}

/// Text of a string's bytes, invalid UTF-8 replaced (as `from_utf8_lossy`,
/// whose chunked scan is slower than `from_utf8` on the valid common case).
fn utf8(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// rmpv's nesting limit, kept so both encoders refuse the same records.
const MAX_DEPTH: usize = 1000;

fn write_value(cur: &mut &[u8], out: &mut Vec<u8>, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::Msgpack("nesting too deep".into()));
    }
    let Some(&m) = cur.first() else {
        return Err(DecodeError::Msgpack("unexpected end of data".into()));
    };
    match m {
        0xc0 | 0xc1 => {
            *cur = &cur[1..];
            out.extend_from_slice(b"null");
        }
        0xc2 => {
            *cur = &cur[1..];
            out.extend_from_slice(b"false");
        }
        0xc3 => {
            *cur = &cur[1..];
            out.extend_from_slice(b"true");
        }
        0xa0..=0xbf | 0xd9..=0xdb => {
            let s = super::str_bytes(cur)?.expect("a string marker");
            write_str(out, &utf8(s));
        }
        0x80..=0x8f | 0xde | 0xdf => {
            let Some(n) = container_len(cur, Container::Map) else {
                return Err(DecodeError::Msgpack("unexpected end of data".into()));
            };
            out.push(b'{');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                let k = read_key(cur)?;
                write_str(out, &k);
                out.push(b':');
                write_value(cur, out, depth + 1)?;
            }
            out.push(b'}');
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            let Some(n) = container_len(cur, Container::Array) else {
                return Err(DecodeError::Msgpack("unexpected end of data".into()));
            };
            out.push(b'[');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                write_value(cur, out, depth + 1)?;
            }
            out.push(b']');
        }
        // Numbers, binary, extensions: rare or small; serde_json's own
        // formatting keeps the output identical.
        _ => {
            let v = rmpv::decode::read_value_ref(cur).map_err(msgpack_err)?;
            serde_json::to_writer(&mut *out, &Json(&v)).map_err(msgpack_err)?;
        }
    }
    Ok(())
}

/// True if any of the 8 bytes is `"`, `\\` or a control character.
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) | below_space) != 0
}

/// A JSON string, escaped exactly as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if i + 8 <= b.len() {
            let w = u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let c = b[i];
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&b[start..i]);
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
                i += 1;
                start = i;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[start..i]);
        out.extend_from_slice(esc);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// The serde version of [`write_json`], through an rmpv value tree: the
/// reference the streaming encoder is tested against.
#[cfg(test)]
pub(crate) fn write_json_tree(
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

#[cfg(test)]
struct TopLevel<'a, 'b> {
    schema: Schema,
    entries: &'a [(ValueRef<'b>, ValueRef<'b>)],
    omit: &'a [&'a str],
}

#[cfg(test)]
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

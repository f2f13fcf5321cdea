//! Record decoding and re-encoding. Pure: bytes in, bytes out.
//!
//! Each record is parsed once, borrowing from its bytes (`rmpv::ValueRef`),
//! to validate it and pull out what the host needs: its time, a stable id
//! and the fields host filters look at. Re-encodings a pump asks for (JSON,
//! or MessagePack without detail fields) are made once per batch and shared
//! by every pump that wants the same form.

mod json;
#[cfg(test)]
mod tests;
pub mod time;

use rmpv::ValueRef;

pub use json::write_json;

/// Which producer wrote the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Schema {
    Iam,
    Tyk,
    Generic,
}

impl Schema {
    /// Fields `omit_detailed_recording` removes.
    pub fn detail_fields(self) -> &'static [&'static str] {
        match self {
            Schema::Iam => &["Policies", "Deciders"],
            Schema::Tyk => &["RawRequest", "RawResponse"],
            Schema::Generic => &[],
        }
    }

    /// Top-level fields that hold a time.
    pub fn time_fields(self) -> &'static [&'static str] {
        match self {
            Schema::Iam | Schema::Tyk => &["TimeStamp", "ExpireAt"],
            Schema::Generic => &[],
        }
    }
}

/// What the host keeps of a decoded record besides its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    /// Stable id: a hash of the record's bytes, so a re-delivered record
    /// keeps its id.
    pub id: u64,
    /// Record time in unix milliseconds, when the schema has one.
    pub timestamp_ms: Option<i64>,
    /// iam `Username`.
    pub username: Option<String>,
    /// Tyk `OrgID`.
    pub org_id: Option<String>,
    /// Tyk `APIID`.
    pub api_id: Option<String>,
    /// Tyk `ResponseCode`.
    pub response_code: Option<i64>,
}

/// Why a record could not be decoded; goes into its dead-letter entry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid MessagePack: {0}")]
    Msgpack(String),
    #[error("expected a map at the top level, found {0}")]
    NotAMap(&'static str),
    #[error("{0} trailing bytes after the record")]
    Trailing(usize),
    #[error("field {field}: expected {expected}, found {found}")]
    FieldType {
        field: &'static str,
        expected: &'static str,
        found: &'static str,
    },
    #[error("field {field}: {message}")]
    BadTime {
        field: &'static str,
        message: String,
    },
}

/// Parses one record and extracts its [`Meta`].
pub fn decode(schema: Schema, bytes: &[u8]) -> Result<Meta, DecodeError> {
    let entries = top_level_map(bytes)?;
    let mut meta = Meta {
        id: xxhash_rust::xxh3::xxh3_64(bytes),
        ..Meta::default()
    };
    if schema == Schema::Generic {
        return Ok(meta);
    }
    for (key, value) in &entries {
        let ValueRef::String(k) = key else { continue };
        let Some(k) = k.as_str() else { continue };
        match (schema, k) {
            (_, "TimeStamp") => {
                meta.timestamp_ms = time::parse_time(value)
                    .map_err(|message| DecodeError::BadTime {
                        field: "TimeStamp",
                        message,
                    })?
                    .map(|t| t.unix_ms())
            }
            (Schema::Iam, "Username") => meta.username = opt_string("Username", value)?,
            (Schema::Tyk, "OrgID") => meta.org_id = opt_string("OrgID", value)?,
            (Schema::Tyk, "APIID") => meta.api_id = opt_string("APIID", value)?,
            (Schema::Tyk, "ResponseCode") => {
                meta.response_code = match value {
                    ValueRef::Nil => None,
                    ValueRef::Integer(i) => i.as_i64(),
                    other => {
                        return Err(DecodeError::FieldType {
                            field: "ResponseCode",
                            expected: "an integer",
                            found: kind(other),
                        })
                    }
                }
            }
            _ => {}
        }
    }
    Ok(meta)
}

/// Parses the top-level map, requiring that it spans all of `bytes`.
pub(crate) fn top_level_map(
    bytes: &[u8],
) -> Result<Vec<(ValueRef<'_>, ValueRef<'_>)>, DecodeError> {
    let mut cursor = bytes;
    let value = rmpv::decode::read_value_ref(&mut cursor)
        .map_err(|e| DecodeError::Msgpack(e.to_string()))?;
    if !cursor.is_empty() {
        return Err(DecodeError::Trailing(cursor.len()));
    }
    match value {
        ValueRef::Map(entries) => Ok(entries),
        other => Err(DecodeError::NotAMap(kind(&other))),
    }
}

fn opt_string(field: &'static str, value: &ValueRef<'_>) -> Result<Option<String>, DecodeError> {
    match value {
        ValueRef::Nil => Ok(None),
        ValueRef::String(s) => Ok(Some(String::from_utf8_lossy(s.as_bytes()).into_owned())),
        other => Err(DecodeError::FieldType {
            field,
            expected: "a string",
            found: kind(other),
        }),
    }
}

/// A short name of a value's type, for error messages.
pub(crate) fn kind(v: &ValueRef<'_>) -> &'static str {
    match v {
        ValueRef::Nil => "nil",
        ValueRef::Boolean(_) => "a boolean",
        ValueRef::Integer(_) => "an integer",
        ValueRef::F32(_) | ValueRef::F64(_) => "a float",
        ValueRef::String(_) => "a string",
        ValueRef::Binary(_) => "binary",
        ValueRef::Array(_) => "an array",
        ValueRef::Map(_) => "a map",
        ValueRef::Ext(..) => "an extension",
    }
}

/// Copies a record's MessagePack bytes without the given top-level keys.
/// Kept entries are copied byte for byte, so integer widths and time
/// encodings stay exactly as the producer wrote them.
pub fn omit_fields(bytes: &[u8], omit: &[&str], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let mut cursor = bytes;
    let len = rmp::decode::read_map_len(&mut cursor)
        .map_err(|e| DecodeError::Msgpack(e.to_string()))? as usize;
    let mut spans = Vec::with_capacity(len);
    let mut kept = 0u32;
    for _ in 0..len {
        let start = bytes.len() - cursor.len();
        let key = rmpv::decode::read_value_ref(&mut cursor)
            .map_err(|e| DecodeError::Msgpack(e.to_string()))?;
        rmpv::decode::read_value_ref(&mut cursor)
            .map_err(|e| DecodeError::Msgpack(e.to_string()))?;
        let end = bytes.len() - cursor.len();
        let drop =
            matches!(&key, ValueRef::String(s) if s.as_str().is_some_and(|k| omit.contains(&k)));
        if !drop {
            kept += 1;
            spans.push(start..end);
        }
    }
    rmp::encode::write_map_len(out, kept).expect("writing to a Vec cannot fail");
    for span in spans {
        out.extend_from_slice(&bytes[span]);
    }
    Ok(())
}

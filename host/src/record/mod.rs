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

/// Which producer wrote the records: the one `{iam, tyk, generic}` type,
/// read from the config (`source.format`), the command line (`--format`)
/// and handed to plugins as the WIT `schema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schema {
    /// iam-authz-server analytics.
    Iam,
    /// Tyk Gateway analytics.
    Tyk,
    /// Any MessagePack map; no host-side filters apply.
    Generic,
}

/// The list iam-authz-server pushes to.
pub const IAM_KEY: &str = "analytics-iam-system-analytics";
/// The list Tyk Gateway pushes to (`_0` … `_9` when sharded).
pub const TYK_KEY: &str = "analytics-tyk-system-analytics";

impl Schema {
    /// The key the schema's producer pushes to; generic records default to
    /// the iam key.
    pub fn producer_key(self) -> &'static str {
        match self {
            Schema::Tyk => TYK_KEY,
            Schema::Iam | Schema::Generic => IAM_KEY,
        }
    }

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Schema::Iam => "iam",
            Schema::Tyk => "tyk",
            Schema::Generic => "generic",
        }
    }

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
///
/// The hot path of the host (once per record): it walks the MessagePack
/// structure without building values ([`skip_value`]) and parses only the
/// few top-level values the host uses. It accepts and rejects what a full
/// parse (rmpv) would, with one exception: rmpv refuses nesting deeper than
/// 1024 levels and this walk does not, so such a record reaches MessagePack
/// pumps untouched, and a JSON pump, whose re-encoding uses rmpv,
/// dead-letters it. Input that is not a map takes the full parse, for its
/// error message.
pub fn decode(schema: Schema, bytes: &[u8]) -> Result<Meta, DecodeError> {
    let mut meta = Meta {
        id: xxhash_rust::xxh3::xxh3_64(bytes),
        ..Meta::default()
    };
    let mut cur = bytes;
    let len = match cur.first() {
        Some(&b @ 0x80..=0x8f) => {
            cur = &cur[1..];
            u32::from(b & 0x0f)
        }
        Some(0xde) if cur.len() >= 3 => {
            let n = u16::from_be_bytes([cur[1], cur[2]]);
            cur = &cur[3..];
            u32::from(n)
        }
        Some(0xdf) if cur.len() >= 5 => {
            let n = u32::from_be_bytes([cur[1], cur[2], cur[3], cur[4]]);
            cur = &cur[5..];
            n
        }
        _ => {
            top_level_map(bytes)?;
            return Ok(meta);
        }
    };
    for _ in 0..len {
        let key = match str_bytes(&mut cur)? {
            Some(k) if schema != Schema::Generic => k,
            _ => {
                // A non-string key (or no fields to read): skip the key, if
                // it was not a string, and the value.
                skip_value(&mut cur)?;
                continue;
            }
        };
        let wanted = matches!(
            (schema, key),
            (_, b"TimeStamp")
                | (Schema::Iam, b"Username")
                | (Schema::Tyk, b"OrgID" | b"APIID" | b"ResponseCode")
        );
        if !wanted {
            skip_value(&mut cur)?;
            continue;
        }
        let value = rmpv::decode::read_value_ref(&mut cur)
            .map_err(|e| DecodeError::Msgpack(e.to_string()))?;
        match key {
            b"TimeStamp" => {
                meta.timestamp_ms = time::parse_time(&value)
                    .map_err(|message| DecodeError::BadTime {
                        field: "TimeStamp",
                        message,
                    })?
                    .map(|t| t.unix_ms())
            }
            b"Username" => meta.username = opt_string("Username", &value)?,
            b"OrgID" => meta.org_id = opt_string("OrgID", &value)?,
            b"APIID" => meta.api_id = opt_string("APIID", &value)?,
            _ => {
                meta.response_code = match value {
                    ValueRef::Nil => None,
                    ValueRef::Integer(i) => i.as_i64(),
                    other => {
                        return Err(DecodeError::FieldType {
                            field: "ResponseCode",
                            expected: "an integer",
                            found: kind(&other),
                        })
                    }
                }
            }
        }
    }
    if !cur.is_empty() {
        return Err(DecodeError::Trailing(cur.len()));
    }
    Ok(meta)
}

fn truncated() -> DecodeError {
    DecodeError::Msgpack("unexpected end of data".into())
}

fn take<'a>(cur: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if cur.len() < n {
        return Err(truncated());
    }
    let (head, rest) = cur.split_at(n);
    *cur = rest;
    Ok(head)
}

fn be(bytes: &[u8]) -> usize {
    bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b))
}

/// Reads a string key's bytes (valid UTF-8 or not, like a full parse);
/// `None`, consuming nothing, when the next value is not a string.
fn str_bytes<'a>(cur: &mut &'a [u8]) -> Result<Option<&'a [u8]>, DecodeError> {
    let Some(&m) = cur.first() else {
        return Err(truncated());
    };
    let (hdr, len) = match m {
        0xa0..=0xbf => (1, usize::from(m & 0x1f)),
        0xd9 => (2, be(cur.get(1..2).ok_or_else(truncated)?)),
        0xda => (3, be(cur.get(1..3).ok_or_else(truncated)?)),
        0xdb => (5, be(cur.get(1..5).ok_or_else(truncated)?)),
        _ => return Ok(None),
    };
    let mut rest = &cur[hdr..];
    let s = take(&mut rest, len)?;
    *cur = rest;
    Ok(Some(s))
}

/// Skips one complete MessagePack value (any nesting) without building it:
/// a count of values still to skip replaces recursion, so depth costs no
/// stack. Fails on truncation.
fn skip_value(cur: &mut &[u8]) -> Result<(), DecodeError> {
    let mut pending: usize = 1;
    while pending > 0 {
        pending -= 1;
        let m = take(cur, 1)?[0];
        let (skip, more) = match m {
            // 0xc1 is reserved; rmpv (the full parse) reads it as nil.
            0x00..=0x7f | 0xe0..=0xff | 0xc0..=0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * usize::from(m & 0x0f)),
            0x90..=0x9f => (0, usize::from(m & 0x0f)),
            0xa0..=0xbf => (usize::from(m & 0x1f), 0),
            0xc4 | 0xd9 => (be(take(cur, 1)?), 0),
            0xc5 | 0xda => (be(take(cur, 2)?), 0),
            0xc6 | 0xdb => (be(take(cur, 4)?), 0),
            0xc7 => (be(take(cur, 1)?) + 1, 0),
            0xc8 => (be(take(cur, 2)?) + 1, 0),
            0xc9 => (be(take(cur, 4)?) + 1, 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (0, be(take(cur, 2)?)),
            0xdd => (0, be(take(cur, 4)?)),
            0xde => (0, 2 * be(take(cur, 2)?)),
            0xdf => (0, 2 * be(take(cur, 4)?)),
        };
        take(cur, skip)?;
        pending += more;
        // Every value takes at least a byte: a count beyond what is left is
        // truncated input (and must not make us loop over a huge count).
        if pending > cur.len() {
            return Err(truncated());
        }
    }
    Ok(())
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
        let key = match str_bytes(&mut cursor)? {
            Some(k) => std::str::from_utf8(k).ok(),
            None => {
                skip_value(&mut cursor)?;
                None
            }
        };
        skip_value(&mut cursor)?;
        let end = bytes.len() - cursor.len();
        if !key.is_some_and(|k| omit.contains(&k)) {
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

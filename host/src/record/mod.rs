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
    #[error(
        "its JSON form would be more than {} times its size",
        json::MAX_JSON_GROWTH
    )]
    JsonTooLarge,
}

/// Parses one record and extracts its [`Meta`].
///
/// The hot path of the host (once per record): it walks the MessagePack
/// structure without building values ([`skip_value`]) and reads only the
/// few top-level values the host uses, straight from the bytes. Nothing
/// is allocated for what a header claims, so memory never depends on a
/// record's counts, only on the few fields kept. It accepts and rejects
/// what a full parse (rmpv) would, with one exception: rmpv refuses
/// nesting deeper than 1024 levels and this walk does not, so such a
/// record reaches MessagePack pumps untouched, and a JSON pump, whose
/// encoder stops at 1000 levels, dead-letters it.
///
/// A `TimeStamp` outside years 0000–9999 (see [`time::MIN_SECS`]) is a
/// [`DecodeError::BadTime`]: no producer writes one, and a wrapped or
/// unwritable event time would misfile the record downstream.
pub fn decode(schema: Schema, bytes: &[u8]) -> Result<Meta, DecodeError> {
    let mut meta = Meta {
        id: xxhash_rust::xxh3::xxh3_64(bytes),
        ..Meta::default()
    };
    let mut cur = bytes;
    let Some(len) = map_header(&mut cur) else {
        return Err(not_a_map(bytes));
    };
    for _ in 0..len {
        let Some(key) = str_bytes(&mut cur)? else {
            // A non-string key: skip it, then its value.
            skip_value(&mut cur)?;
            skip_value(&mut cur)?;
            continue;
        };
        let wanted = schema != Schema::Generic
            && matches!(
                (schema, key),
                (_, b"TimeStamp")
                    | (Schema::Iam, b"Username")
                    | (Schema::Tyk, b"OrgID" | b"APIID" | b"ResponseCode")
            );
        if !wanted {
            skip_value(&mut cur)?;
            continue;
        }
        match key {
            b"TimeStamp" => meta.timestamp_ms = event_time(&mut cur)?,
            b"Username" => meta.username = opt_string("Username", &mut cur)?,
            b"OrgID" => meta.org_id = opt_string("OrgID", &mut cur)?,
            b"APIID" => meta.api_id = opt_string("APIID", &mut cur)?,
            _ => meta.response_code = opt_int("ResponseCode", &mut cur)?,
        }
    }
    if !cur.is_empty() {
        return Err(DecodeError::Trailing(cur.len()));
    }
    Ok(meta)
}

/// Reads a map header; `None`, consuming nothing, if the next value is
/// not a map (or its header is cut short).
fn map_header(cur: &mut &[u8]) -> Option<usize> {
    let (&m, rest) = cur.split_first()?;
    let (len, hdr) = match m {
        0x80..=0x8f => (usize::from(m & 0x0f), 0),
        0xde => (be(rest.get(..2)?), 2),
        0xdf => (be(rest.get(..4)?), 4),
        _ => return None,
    };
    *cur = &rest[hdr..];
    Some(len)
}

/// Why `bytes`, which do not start with a map header, are not a record:
/// cut short, followed by more bytes, or some other value. Found by
/// skipping, never building, the value.
pub(crate) fn not_a_map(bytes: &[u8]) -> DecodeError {
    let mut cur = bytes;
    if let Err(e) = skip_value(&mut cur) {
        return e;
    }
    if !cur.is_empty() {
        return DecodeError::Trailing(cur.len());
    }
    DecodeError::NotAMap(marker_kind(bytes[0]))
}

/// The record's own time in unix ms, checked to lie in years 0000–9999.
fn event_time(cur: &mut &[u8]) -> Result<Option<i64>, DecodeError> {
    let bad = |message: String| DecodeError::BadTime {
        field: "TimeStamp",
        message,
    };
    let Some(t) = time::read_time(cur)?.map_err(bad)? else {
        return Ok(None);
    };
    match t.unix_ms() {
        Some(ms) if t.in_rfc3339_range() => Ok(Some(ms)),
        _ => Err(bad(format!(
            "time out of range: {} seconds (years 0000 to 9999 only)",
            t.secs
        ))),
    }
}

/// A string field's text (invalid UTF-8 replaced); nil is `None`.
fn opt_string(field: &'static str, cur: &mut &[u8]) -> Result<Option<String>, DecodeError> {
    if let Some(s) = str_bytes(cur)? {
        return Ok(Some(String::from_utf8_lossy(s).into_owned()));
    }
    match cur[0] {
        0xc0 | 0xc1 => {
            *cur = &cur[1..];
            Ok(None)
        }
        m => Err(DecodeError::FieldType {
            field,
            expected: "a string",
            found: marker_kind(m),
        }),
    }
}

/// An integer field; nil, and integers beyond `i64`, are `None`.
fn opt_int(field: &'static str, cur: &mut &[u8]) -> Result<Option<i64>, DecodeError> {
    let m = *cur.first().ok_or_else(truncated)?;
    if let Some(v) = read_int(cur)? {
        return Ok(i64::try_from(v).ok());
    }
    match m {
        0xc0 | 0xc1 => {
            *cur = &cur[1..];
            Ok(None)
        }
        m => Err(DecodeError::FieldType {
            field,
            expected: "an integer",
            found: marker_kind(m),
        }),
    }
}

/// Reads an integer of any width; `None`, consuming nothing, if the next
/// value is not an integer.
fn read_int(cur: &mut &[u8]) -> Result<Option<i128>, DecodeError> {
    let m = *cur.first().ok_or_else(truncated)?;
    let (n, signed) = match m {
        0x00..=0x7f => {
            *cur = &cur[1..];
            return Ok(Some(i128::from(m)));
        }
        0xe0..=0xff => {
            *cur = &cur[1..];
            return Ok(Some(i128::from(m as i8)));
        }
        0xcc..=0xcf => (1usize << (m - 0xcc), false),
        0xd0..=0xd3 => (1usize << (m - 0xd0), true),
        _ => return Ok(None),
    };
    let mut c = &cur[1..];
    let body = take(&mut c, n)?;
    let v = body.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
    *cur = c;
    Ok(Some(if signed {
        let shift = 64 - 8 * n as u32;
        i128::from(((v << shift) as i64) >> shift)
    } else {
        i128::from(v)
    }))
}

/// The kind of the value whose marker byte is `m`, for error messages
/// (the names [`kind`] gives).
fn marker_kind(m: u8) -> &'static str {
    match m {
        0xc0 | 0xc1 => "nil",
        0xc2 | 0xc3 => "a boolean",
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => "an integer",
        0xca | 0xcb => "a float",
        0xa0..=0xbf | 0xd9..=0xdb => "a string",
        0xc4..=0xc6 => "binary",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an extension",
    }
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

/// Parses the top-level map, requiring that it spans all of `bytes`: the
/// full parse the scanning code is checked against in tests.
#[cfg(test)]
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
/// encodings stay exactly as the producer wrote them; a record that has
/// none of the keys is copied whole.
pub fn omit_fields(bytes: &[u8], omit: &[&str], out: &mut Vec<u8>) -> Result<(), DecodeError> {
    let mut cursor = bytes;
    let len = rmp::decode::read_map_len(&mut cursor)
        .map_err(|e| DecodeError::Msgpack(e.to_string()))? as usize;
    // Every entry takes at least two bytes: no more room than that for
    // what the header claims.
    let mut spans = Vec::with_capacity(len.min(cursor.len() / 2));
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
    if kept as usize == len {
        // Nothing omitted: the record exactly as the producer wrote it,
        // map header included.
        out.extend_from_slice(bytes);
        return Ok(());
    }
    rmp::encode::write_map_len(out, kept).expect("writing to a Vec cannot fail");
    for span in spans {
        out.extend_from_slice(&bytes[span]);
    }
    Ok(())
}

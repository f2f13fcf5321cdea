//! MessagePack record → JSON object, the form JSON-speaking plugins get.

use base64::Engine as _;
use rmpv::ValueRef;
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

#[cfg(test)]
use super::top_level_map;
use super::{time, DecodeError, Schema};

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

/// How many times larger than its record a record's JSON may be, plus
/// [`JSON_SLACK`]. Real records grow by less than 2; the worst plain
/// values (an empty extension, `{"ext_type":…,"data":""}` for 3 bytes)
/// by about 11. Only maps used as map keys, whose text is escaped again at
/// each level, grow faster (doubling per level): the bound turns that
/// into an error instead of an allocation of gigabytes.
pub const MAX_JSON_GROWTH: usize = 16;
const JSON_SLACK: usize = 4096;

fn write_top(
    schema: Schema,
    bytes: &[u8],
    omit: &[&str],
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    let mut cur = bytes;
    let Some(len) = container_len(&mut cur, Container::Map) else {
        return Err(super::not_a_map(bytes));
    };
    let start = out.len();
    let max = start + MAX_JSON_GROWTH * bytes.len() + JSON_SLACK;
    let top = Top {
        schema,
        omit,
        body: cur,
        len,
        max,
    };
    if let Some(superseded) = top.write(out, None)? {
        // A key repeats: host filters read its last value, so the JSON
        // keeps only that one (JSON readers disagree on repeated keys).
        out.truncate(start);
        top.write(out, Some(&superseded))?;
    }
    Ok(())
}

/// A record's top-level map, to be written as JSON.
struct Top<'a> {
    schema: Schema,
    omit: &'a [&'a str],
    /// The bytes after the map's header.
    body: &'a [u8],
    len: usize,
    /// The length `out` must not exceed.
    max: usize,
}

impl Top<'_> {
    /// Writes the entries, except those `skip` marks. Without `skip`, stops
    /// at the first repeated key and returns which entries a later one of
    /// the same key supersedes.
    fn write(
        &self,
        out: &mut Vec<u8>,
        skip: Option<&[bool]>,
    ) -> Result<Option<Vec<bool>>, DecodeError> {
        let mut cur = self.body;
        let mut seen = Seen::default();
        out.push(b'{');
        let mut first = true;
        for i in 0..self.len {
            let key = read_key(&mut cur, 0, self.max.saturating_sub(out.len()))?;
            if is_one_of(&key, self.omit) || skip.is_some_and(|s| s[i]) {
                super::skip_value(&mut cur)?;
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            let at = out.len();
            write_str(out, &key);
            if skip.is_none() && seen.repeats(out, at) {
                return self.superseded().map(Some);
            }
            out.push(b':');
            if is_one_of(&key, self.schema.time_fields()) {
                match time::read_time(&mut cur)? {
                    Ok(Some(t)) => t.write_rfc3339_json(out),
                    Ok(None) => out.extend_from_slice(b"null"),
                    Err(_) => write_value(&mut cur, out, 0, self.max)?,
                }
                continue;
            }
            write_value(&mut cur, out, 0, self.max)?;
        }
        out.push(b'}');
        if !cur.is_empty() {
            return Err(DecodeError::Trailing(cur.len()));
        }
        Ok(None)
    }

    /// For each entry, whether a later entry has the same JSON key (omitted
    /// keys aside, which are never written).
    fn superseded(&self) -> Result<Vec<bool>, DecodeError> {
        let mut cur = self.body;
        let mut names = Vec::new();
        let mut spans = Vec::with_capacity(self.len.min(self.body.len() / 2));
        for _ in 0..self.len {
            let key = read_key(&mut cur, 0, self.max)?;
            let at = names.len();
            write_str(&mut names, &key);
            spans.push(at..names.len());
            super::skip_value(&mut cur)?;
            if names.len() > self.max {
                return Err(DecodeError::JsonTooLarge);
            }
        }
        let mut last = std::collections::HashMap::with_capacity(spans.len());
        for (i, span) in spans.iter().enumerate() {
            last.insert(&names[span.clone()], i);
        }
        Ok(spans
            .iter()
            .enumerate()
            .map(|(i, span)| last[&names[span.clone()]] != i)
            .collect())
    }
}

/// The top-level keys written so far (as JSON text in `out`), to notice a
/// repeated one. Real records have a handful of keys: those are compared
/// byte for byte from a stack array, with no hashing and no allocation on
/// the per-record path. Past [`Seen::FEW`] keys, every key is hashed into a
/// set, so a map of 65 535 keys costs no more than a lookup per key.
#[derive(Default)]
struct Seen {
    few: [(usize, usize); Seen::FEW],
    n: usize,
    /// Past `FEW` keys: each key's hash and span, and the set of hashes.
    many: Vec<(u64, std::ops::Range<usize>)>,
    set: std::collections::HashSet<u64>,
}

impl Seen {
    const FEW: usize = 32;

    /// Records the key written at `out[at..]`; true if it was written before.
    fn repeats(&mut self, out: &[u8], at: usize) -> bool {
        let text = &out[at..];
        if self.n < Self::FEW {
            if self.few[..self.n].iter().any(|&(a, b)| &out[a..b] == text) {
                return true;
            }
            self.few[self.n] = (at, out.len());
            self.n += 1;
            return false;
        }
        if self.many.is_empty() {
            for &(a, b) in &self.few {
                let h = xxhash_rust::xxh3::xxh3_64(&out[a..b]);
                self.set.insert(h);
                self.many.push((h, a..b));
            }
        }
        let h = xxhash_rust::xxh3::xxh3_64(text);
        // Equal hashes are nearly always equal keys; make sure.
        if !self.set.insert(h)
            && self
                .many
                .iter()
                .any(|(k, span)| *k == h && &out[span.clone()] == text)
        {
            return true;
        }
        self.many.push((h, at..out.len()));
        false
    }
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

/// A map key's bytes: a string key's as they are (checked as UTF-8 when
/// written), other keys' JSON text, written by the streaming encoder (at
/// most `max` bytes of it).
fn read_key<'a>(
    cur: &mut &'a [u8],
    depth: usize,
    max: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, DecodeError> {
    if let Some(k) = super::str_bytes(cur)? {
        return Ok(std::borrow::Cow::Borrowed(k));
    }
    let mut text = Vec::new();
    write_value(cur, &mut text, depth + 1, max)?;
    Ok(std::borrow::Cow::Owned(text))
}

/// True if `key` is one of `names`. Bytes that are not UTF-8 match no
/// name, as their replacement text would not either.
fn is_one_of(key: &[u8], names: &[&str]) -> bool {
    names.iter().any(|n| n.as_bytes() == key)
}

/// rmpv's nesting limit, kept so both encoders refuse the same records.
const MAX_DEPTH: usize = 1000;

/// Writes one value as JSON; fails once `out` would grow past `max`.
fn write_value(
    cur: &mut &[u8],
    out: &mut Vec<u8>,
    depth: usize,
    max: usize,
) -> Result<(), DecodeError> {
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
            write_str(out, s);
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
                let k = read_key(cur, depth, max.saturating_sub(out.len()))?;
                write_str(out, &k);
                out.push(b':');
                write_value(cur, out, depth + 1, max)?;
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
                write_value(cur, out, depth + 1, max)?;
            }
            out.push(b']');
        }
        // Integers, the common number: the digits serde_json would write.
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xcf | 0xd0..=0xd3 => {
            let (n, used) = int(cur)?;
            *cur = &cur[used..];
            let mut digits = itoa::Buffer::new();
            out.extend_from_slice(
                match n {
                    Int::Signed(v) => digits.format(v),
                    Int::Unsigned(v) => digits.format(v),
                }
                .as_bytes(),
            );
        }
        // Floats, binary, extensions: rare; serde_json's own formatting
        // keeps the output identical.
        _ => {
            let v = rmpv::decode::read_value_ref(cur).map_err(msgpack_err)?;
            serde_json::to_writer(&mut *out, &Json(&v)).map_err(msgpack_err)?;
        }
    }
    if out.len() > max {
        return Err(DecodeError::JsonTooLarge);
    }
    Ok(())
}

enum Int {
    Signed(i64),
    Unsigned(u64),
}

/// The MessagePack integer at the start of `cur` (whose marker is an
/// integer's) and its size, as serde_json would be handed it: `i64`
/// where it fits, else `u64`.
fn int(cur: &[u8]) -> Result<(Int, usize), DecodeError> {
    let m = cur[0];
    let body = |n: usize| {
        cur.get(1..1 + n)
            .ok_or_else(|| DecodeError::Msgpack("unexpected end of data".into()))
    };
    let be = |b: &[u8]| b.iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
    Ok(match m {
        0x00..=0x7f => (Int::Signed(i64::from(m)), 1),
        0xe0..=0xff => (Int::Signed(i64::from(m as i8)), 1),
        0xcc..=0xcf => {
            let n = 1 << (m - 0xcc);
            let v = be(body(n)?);
            match i64::try_from(v) {
                Ok(v) => (Int::Signed(v), 1 + n),
                Err(_) => (Int::Unsigned(v), 1 + n),
            }
        }
        _ => {
            // 0xd0..=0xd3: int 8, 16, 32, 64, sign-extended.
            let n = 1 << (m - 0xd0);
            let v = be(body(n)?);
            let shift = 64 - 8 * n as u32;
            (Int::Signed(((v << shift) as i64) >> shift), 1 + n)
        }
    })
}

/// Marks (high bit set) the bytes of `w` that are `"`, `\\` or a control
/// character. Bytes above a marked one may be marked wrongly (a borrow
/// carries over), but the lowest mark is always exact, which is all the
/// scan needs.
#[inline]
fn escape_marks(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) | below_space
}

/// A MessagePack string's bytes as a JSON string, escaped exactly as
/// serde_json escapes it, invalid UTF-8 replaced as `from_utf8_lossy`
/// replaces it. One pass, eight bytes at a time, finds both the bytes to
/// escape and any non-ASCII byte; only a string that has one is checked
/// as UTF-8 (analytics text is nearly always ASCII).
fn write_str(out: &mut Vec<u8>, b: &[u8]) {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let at = out.len();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    let mut seen = 0u64;
    while i < b.len() {
        if let Some(word) = b.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            seen |= w;
            let marks = escape_marks(w);
            if marks == 0 {
                i += 8;
                continue;
            }
            // Straight to the first byte that needs escaping.
            i += (marks.trailing_zeros() / 8) as usize;
        } else {
            seen |= u64::from(b[i]);
            if !matches!(b[i], b'"' | b'\\' | 0x00..=0x1f) {
                i += 1;
                continue;
            }
        }
        out.extend_from_slice(&b[start..i]);
        write_escape(out, b[i]);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
    if seen & HIGH != 0 && std::str::from_utf8(b).is_err() {
        out.truncate(at);
        write_str(out, String::from_utf8_lossy(b).as_bytes());
    }
}

/// The escape serde_json writes for `c` (a quote, backslash or control).
fn write_escape(out: &mut Vec<u8>, c: u8) {
    let esc: &[u8] = match c {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
            return;
        }
    };
    out.extend_from_slice(esc);
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
        let keys: Vec<_> = self.entries.iter().map(|(k, _)| key_text(k)).collect();
        for (i, (_, v)) in self.entries.iter().enumerate() {
            let key = &keys[i];
            // The last of repeated keys wins.
            if self.omit.contains(&key.as_ref()) || keys[i + 1..].contains(key) {
                continue;
            }
            if self.schema.time_fields().contains(&key.as_ref()) {
                if let Ok(t) = time::parse_time(v) {
                    map.serialize_entry(key, &t.map(|t| t.to_rfc3339()))?;
                    continue;
                }
            }
            map.serialize_entry(key, &Json(v))?;
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

#[cfg(test)]
mod tests {
    use super::write_str;

    /// Every character class at every position of strings up to 19
    /// bytes, so both the eight-byte scan and the tail see each.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let specials = [
            "\"", "\\", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}", "\u{1f}", "\u{7f}", "é", " ",
            "a",
        ];
        for len in 0..20 {
            for special in specials {
                for at in 0..len.max(1) {
                    let mut s = String::new();
                    for i in 0..len {
                        s.push_str(if i == at { special } else { "x" });
                    }
                    let mut out = b"prefix".to_vec();
                    write_str(&mut out, s.as_bytes());
                    let want = format!("prefix{}", serde_json::to_string(&s).unwrap());
                    assert_eq!(String::from_utf8(out).unwrap(), want);
                }
            }
        }
        let all: String = (0u8..0x80).map(char::from).collect::<String>().repeat(3);
        let mut out = Vec::new();
        write_str(&mut out, all.as_bytes());
        assert_eq!(out, serde_json::to_vec(&all).unwrap());
        // Invalid UTF-8 anywhere, among ASCII and valid multi-byte text.
        for bytes in [
            &b"\xff"[..],
            b"abcdefgh\xfe",
            b"\xc3\x28 and more than eight bytes",
            b"caf\xc3\xa9 \"q\" \xe2\x82",
            b"\xf0\x9f\x98\x80 fine, then \x80",
        ] {
            let mut out = b"p".to_vec();
            write_str(&mut out, bytes);
            let lossy = String::from_utf8_lossy(bytes);
            assert_eq!(
                out,
                [&b"p"[..], &serde_json::to_vec(&lossy).unwrap()].concat()
            );
        }
    }
}

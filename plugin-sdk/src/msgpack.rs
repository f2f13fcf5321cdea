//! A small borrowing MessagePack reader for looking up one top-level key
//! without decoding the rest of the record.

use std::borrow::Cow;

use crate::timestamp::MSGPACK_TIMESTAMP_EXT;
use crate::Timestamp;

/// One MessagePack value's header, with the data of scalars borrowed.
/// Arrays and maps carry only their length; their items follow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Item<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Ext(i8, &'a [u8]),
    Array(u32),
    Map(u32),
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

fn be<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
    take(buf, N)?.try_into().ok()
}

fn len8(buf: &mut &[u8]) -> Option<usize> {
    Some(usize::from(be::<1>(buf)?[0]))
}

fn len16(buf: &mut &[u8]) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes(be(buf)?)))
}

fn len32(buf: &mut &[u8]) -> Option<usize> {
    usize::try_from(u32::from_be_bytes(be(buf)?)).ok()
}

/// Reads one value's header (and the data of scalars) from `buf`.
pub(crate) fn read<'a>(buf: &mut &'a [u8]) -> Option<Item<'a>> {
    let marker = be::<1>(buf)?[0];
    Some(match marker {
        0x00..=0x7f => Item::Uint(u64::from(marker)),
        0x80..=0x8f => Item::Map(u32::from(marker & 0x0f)),
        0x90..=0x9f => Item::Array(u32::from(marker & 0x0f)),
        0xa0..=0xbf => Item::Str(take(buf, usize::from(marker & 0x1f))?),
        0xc0 => Item::Nil,
        0xc2 => Item::Bool(false),
        0xc3 => Item::Bool(true),
        0xc4 => {
            let n = len8(buf)?;
            Item::Bin(take(buf, n)?)
        }
        0xc5 => {
            let n = len16(buf)?;
            Item::Bin(take(buf, n)?)
        }
        0xc6 => {
            let n = len32(buf)?;
            Item::Bin(take(buf, n)?)
        }
        0xc7..=0xc9 => {
            let n = match marker {
                0xc7 => len8(buf)?,
                0xc8 => len16(buf)?,
                _ => len32(buf)?,
            };
            let tag = be::<1>(buf)?[0] as i8;
            Item::Ext(tag, take(buf, n)?)
        }
        0xca => Item::Float(f64::from(f32::from_be_bytes(be(buf)?))),
        0xcb => Item::Float(f64::from_be_bytes(be(buf)?)),
        0xcc => Item::Uint(u64::from(be::<1>(buf)?[0])),
        0xcd => Item::Uint(u64::from(u16::from_be_bytes(be(buf)?))),
        0xce => Item::Uint(u64::from(u32::from_be_bytes(be(buf)?))),
        0xcf => Item::Uint(u64::from_be_bytes(be(buf)?)),
        0xd0 => Item::Int(i64::from(be::<1>(buf)?[0] as i8)),
        0xd1 => Item::Int(i64::from(i16::from_be_bytes(be(buf)?))),
        0xd2 => Item::Int(i64::from(i32::from_be_bytes(be(buf)?))),
        0xd3 => Item::Int(i64::from_be_bytes(be(buf)?)),
        0xd4..=0xd8 => {
            let n = 1usize << (marker - 0xd4);
            let tag = be::<1>(buf)?[0] as i8;
            Item::Ext(tag, take(buf, n)?)
        }
        0xd9 => {
            let n = len8(buf)?;
            Item::Str(take(buf, n)?)
        }
        0xda => {
            let n = len16(buf)?;
            Item::Str(take(buf, n)?)
        }
        0xdb => {
            let n = len32(buf)?;
            Item::Str(take(buf, n)?)
        }
        0xdc => Item::Array(u32::try_from(len16(buf)?).ok()?),
        0xdd => Item::Array(u32::try_from(len32(buf)?).ok()?),
        0xde => Item::Map(u32::try_from(len16(buf)?).ok()?),
        0xdf => Item::Map(u32::try_from(len32(buf)?).ok()?),
        0xe0..=0xff => Item::Int(i64::from(marker as i8)),
        0xc1 => return None,
    })
}

/// Skips `count` whole values, nested ones included, without recursion.
pub(crate) fn skip(buf: &mut &[u8], mut count: u64) -> Option<()> {
    while count > 0 {
        count -= 1;
        match read(buf)? {
            Item::Array(n) => count += u64::from(n),
            Item::Map(n) => count += 2 * u64::from(n),
            _ => {}
        }
    }
    Some(())
}

/// Finds `key` among the string keys of the top-level map in `payload` and
/// returns its value's header. `None` when the payload is not a map, the
/// key is absent, or the bytes are malformed before the key is found.
pub(crate) fn lookup<'a>(payload: &'a [u8], key: &str) -> Option<Item<'a>> {
    let mut buf = payload;
    let Item::Map(entries) = read(&mut buf)? else {
        return None;
    };
    for _ in 0..entries {
        match read(&mut buf)? {
            Item::Str(k) if k == key.as_bytes() => return read(&mut buf),
            Item::Array(n) => skip(&mut buf, u64::from(n) + 1)?,
            Item::Map(n) => skip(&mut buf, 2 * u64::from(n) + 1)?,
            _ => skip(&mut buf, 1)?,
        }
    }
    None
}

/// Renders a scalar as text: strings (and UTF-8 binary) as they are,
/// numbers in decimal, booleans as `true`/`false`, MessagePack timestamps
/// as RFC 3339. Nil, arrays, maps and other extensions have no text.
pub(crate) fn text(item: Item<'_>) -> Option<Cow<'_, str>> {
    match item {
        Item::Str(s) | Item::Bin(s) => std::str::from_utf8(s).ok().map(Cow::Borrowed),
        Item::Int(v) => Some(Cow::Owned(v.to_string())),
        Item::Uint(v) => Some(Cow::Owned(v.to_string())),
        Item::Float(v) => Some(Cow::Owned(v.to_string())),
        Item::Bool(v) => Some(Cow::Borrowed(if v { "true" } else { "false" })),
        Item::Ext(MSGPACK_TIMESTAMP_EXT, data) => Timestamp::from_msgpack_ext(data)
            .ok()
            .map(|t| Cow::Owned(t.to_rfc3339())),
        Item::Nil | Item::Ext(..) | Item::Array(_) | Item::Map(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    use crate::testing::msgpack_value as encode;

    #[test]
    fn reads_every_marker_family() {
        let values = [
            Value::Nil,
            Value::from(true),
            Value::from(5),
            Value::from(-3),
            Value::from(200u8),
            Value::from(-200i16),
            Value::from(70_000u32),
            Value::from(-70_000i32),
            Value::from(u64::MAX),
            Value::from(i64::MIN),
            Value::F32(1.5),
            Value::F64(-2.25),
            Value::from("hi"),
            Value::from("x".repeat(40)),
            Value::from("y".repeat(300)),
            Value::from("z".repeat(70_000)),
            Value::Binary(vec![1, 2, 3]),
            Value::Binary(vec![0; 300]),
            Value::Binary(vec![0; 70_000]),
            Value::Ext(-1, vec![0; 4]),
            Value::Ext(3, vec![0; 3]),
            Value::Ext(3, vec![0; 16]),
            Value::Ext(3, vec![0; 300]),
            Value::Ext(3, vec![0; 70_000]),
            Value::Array(vec![Value::from(1); 20]),
            Value::Array(vec![Value::from(1); 70_000]),
            Value::Map(vec![(Value::from("k"), Value::from(1)); 20]),
            Value::Map(vec![(Value::from(1), Value::Nil); 70_000]),
        ];
        for v in &values {
            let bytes = encode(v);
            let mut buf = &bytes[..];
            skip(&mut buf, 1).unwrap_or_else(|| panic!("{v:?}"));
            assert!(buf.is_empty(), "{v:?}");
        }
        let all = encode(&Value::Array(values.to_vec()));
        let mut buf = &all[..];
        skip(&mut buf, 1).unwrap();
        assert!(buf.is_empty());
    }

    #[test]
    fn looks_up_top_level_keys_only() {
        let record = Value::Map(vec![
            (Value::from(7), Value::from("int key")),
            (
                Value::from("Nested"),
                Value::Map(vec![(Value::from("Path"), Value::from("/inner"))]),
            ),
            (
                Value::from("List"),
                Value::Array(vec![Value::from("Path"), Value::Nil]),
            ),
            (Value::from("Path"), Value::from("/outer")),
            (Value::from("Code"), Value::from(404)),
            (Value::from("Neg"), Value::from(-7)),
            (Value::from("Ratio"), Value::F64(0.5)),
            (Value::from("Ok"), Value::from(false)),
            (Value::from("Nil"), Value::Nil),
            (Value::from("Bin"), Value::Binary(b"raw".to_vec())),
            (
                Value::from("At"),
                Value::Ext(-1, 1_795_240_061u32.to_be_bytes().to_vec()),
            ),
            (Value::from("Path"), Value::from("/duplicate")),
        ]);
        let bytes = encode(&record);
        let field = |k: &str| lookup(&bytes, k).and_then(text).map(|c| c.into_owned());
        assert_eq!(field("Path").as_deref(), Some("/outer"));
        assert_eq!(field("Code").as_deref(), Some("404"));
        assert_eq!(field("Neg").as_deref(), Some("-7"));
        assert_eq!(field("Ratio").as_deref(), Some("0.5"));
        assert_eq!(field("Ok").as_deref(), Some("false"));
        assert_eq!(field("Bin").as_deref(), Some("raw"));
        assert_eq!(field("At").as_deref(), Some("2026-11-21T05:47:41Z"));
        assert_eq!(field("Nil"), None);
        assert_eq!(field("Nested"), None);
        assert_eq!(field("List"), None);
        assert_eq!(field("Missing"), None);
        assert_eq!(field("path"), None);
    }

    #[test]
    fn malformed_input_is_none() {
        assert_eq!(lookup(&[], "a"), None);
        assert_eq!(lookup(&[0x91, 0x01], "a"), None);
        // A map that claims two entries but ends early.
        assert_eq!(lookup(&[0x82, 0xa1, b'b', 0x01], "a"), None);
        // A string that claims more bytes than there are.
        assert_eq!(lookup(&[0x81, 0xa1, b'a', 0xd9, 0xff, b'x'], "a"), None);
        assert_eq!(lookup(&[0x81, 0xc1, 0x01], "a"), None);
    }
}

//! The time encodings producers use, and RFC 3339 output.

use rmpv::ValueRef;

use super::{marker_kind, read_int, take, truncated, DecodeError};

/// A point in time, as producers send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

/// The first second of year 0000 and the last of year 9999, UTC: the
/// range RFC 3339 can write, and the range a record's own time must fall in.
pub const MIN_SECS: i64 = -62_167_219_200;
pub const MAX_SECS: i64 = 253_402_300_799;

impl Timestamp {
    /// Unix milliseconds, `None` where they do not fit an `i64` (checked:
    /// a wrapped product would turn year 292 million into 1969).
    pub fn unix_ms(self) -> Option<i64> {
        self.secs
            .checked_mul(1000)?
            .checked_add(i64::from(self.nanos / 1_000_000))
    }

    /// True for times RFC 3339 can write: years 0000 to 9999.
    pub fn in_rfc3339_range(self) -> bool {
        (MIN_SECS..=MAX_SECS).contains(&self.secs)
    }

    /// RFC 3339 in UTC, e.g. `2026-11-21T05:47:41Z`; fractional seconds
    /// appear only when nonzero. Times outside what RFC 3339 can express
    /// fall back to the plain number of seconds.
    pub fn to_rfc3339(self) -> String {
        let mut out = Vec::with_capacity(32);
        self.write_rfc3339(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends [`to_rfc3339`](Self::to_rfc3339)'s text, without making a
    /// `String` first.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let start = out.len();
        let nanos = i128::from(self.secs) * 1_000_000_000 + i128::from(self.nanos);
        let written = ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|t| {
                t.format_into(out, &::time::format_description::well_known::Rfc3339)
                    .ok()
            });
        if written.is_none() {
            out.truncate(start);
            out.extend_from_slice(itoa::Buffer::new().format(self.secs).as_bytes());
        }
    }

    /// Appends the RFC 3339 text as a JSON string (it needs no escaping).
    pub fn write_rfc3339_json(self, out: &mut Vec<u8>) {
        out.push(b'"');
        self.write_rfc3339(out);
        out.push(b'"');
    }
}

/// Reads a time in any encoding the producers use:
/// - an integer: unix seconds (iam `TimeStamp`, written as int64);
/// - the MessagePack timestamp extension, type -1, in its 4, 8 and 12-byte
///   forms (iam `ExpireAt`);
/// - a `[seconds, nanoseconds]` array (Tyk's `TimeStamp`, `ExpireAt`);
/// - nil: no time.
pub fn parse_time(value: &ValueRef<'_>) -> Result<Option<Timestamp>, String> {
    match value {
        ValueRef::Nil => Ok(None),
        ValueRef::Integer(i) => i
            .as_i64()
            .map(|secs| Some(Timestamp { secs, nanos: 0 }))
            .ok_or_else(|| "integer time out of range".to_string()),
        ValueRef::Ext(-1, data) => parse_timestamp_ext(data).map(Some),
        ValueRef::Array(items) if items.len() == 2 => {
            let secs = match &items[0] {
                ValueRef::Integer(i) => i.as_i64(),
                _ => None,
            }
            .ok_or("time array: seconds is not an integer")?;
            let nanos = match &items[1] {
                ValueRef::Integer(i) => i.as_u64(),
                _ => None,
            }
            .filter(|n| *n < 1_000_000_000)
            .ok_or("time array: nanoseconds is not an integer below 1e9")?;
            Ok(Some(Timestamp {
                secs,
                nanos: nanos as u32,
            }))
        }
        other => Err(format!(
            "expected a time (integer, timestamp extension or [secs, nanos]), found {}",
            super::kind(other)
        )),
    }
}

fn not_a_time(kind: &str) -> String {
    format!("expected a time (integer, timestamp extension or [secs, nanos]), found {kind}")
}

/// [`parse_time`] straight from MessagePack bytes, building nothing: the
/// same encodings and the same messages, at a cost that never depends on
/// what a header claims. `Ok(Err(message))`: not a time, and `cur` is
/// left at the value, for the caller to skip or copy. `Err`: the bytes
/// are cut short.
pub(crate) fn read_time(cur: &mut &[u8]) -> Result<Result<Option<Timestamp>, String>, DecodeError> {
    let mut c = *cur;
    let m = *c.first().ok_or_else(truncated)?;
    let r = match m {
        // 0xc1 is reserved; rmpv (the full parse) reads it as nil.
        0xc0 | 0xc1 => {
            c = &c[1..];
            Ok(None)
        }
        0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xcf | 0xd0..=0xd3 => {
            match read_int(&mut c)?.and_then(|v| i64::try_from(v).ok()) {
                Some(secs) => Ok(Some(Timestamp { secs, nanos: 0 })),
                None => Err("integer time out of range".to_string()),
            }
        }
        0xc7..=0xc9 | 0xd4..=0xd8 => {
            let (ty, data) = read_ext(&mut c)?;
            if ty == -1 {
                parse_timestamp_ext(data).map(Some)
            } else {
                Err(not_a_time("an extension"))
            }
        }
        0x90..=0x9f | 0xdc | 0xdd => {
            c = &c[1..];
            let n = match m {
                0xdc => super::be(take(&mut c, 2)?),
                0xdd => super::be(take(&mut c, 4)?),
                _ => usize::from(m & 0x0f),
            };
            if n == 2 {
                read_pair(&mut c)?
            } else {
                Err(not_a_time("an array"))
            }
        }
        _ => Err(not_a_time(marker_kind(m))),
    };
    if r.is_ok() {
        *cur = c;
    }
    Ok(r)
}

/// The two items of a `[seconds, nanoseconds]` array.
fn read_pair(c: &mut &[u8]) -> Result<Result<Option<Timestamp>, String>, DecodeError> {
    let Some(secs) = read_int(c)?.and_then(|v| i64::try_from(v).ok()) else {
        return Ok(Err("time array: seconds is not an integer".into()));
    };
    let Some(nanos) = read_int(c)?
        .and_then(|v| u32::try_from(v).ok())
        .filter(|n| *n < 1_000_000_000)
    else {
        return Ok(Err(
            "time array: nanoseconds is not an integer below 1e9".into()
        ));
    };
    Ok(Ok(Some(Timestamp { secs, nanos })))
}

/// An extension's type and body; the marker must be an extension's.
fn read_ext<'a>(c: &mut &'a [u8]) -> Result<(i8, &'a [u8]), DecodeError> {
    let m = take(c, 1)?[0];
    let len = match m {
        0xd4 => 1,
        0xd5 => 2,
        0xd6 => 4,
        0xd7 => 8,
        0xd8 => 16,
        0xc7 => super::be(take(c, 1)?),
        0xc8 => super::be(take(c, 2)?),
        _ => super::be(take(c, 4)?),
    };
    let ty = take(c, 1)?[0] as i8;
    Ok((ty, take(c, len)?))
}

/// Decodes the body of a MessagePack timestamp extension (type -1).
pub fn parse_timestamp_ext(data: &[u8]) -> Result<Timestamp, String> {
    match data.len() {
        4 => Ok(Timestamp {
            secs: i64::from(u32::from_be_bytes(data.try_into().expect("4 bytes"))),
            nanos: 0,
        }),
        8 => {
            let v = u64::from_be_bytes(data.try_into().expect("8 bytes"));
            let nanos = (v >> 34) as u32;
            if nanos >= 1_000_000_000 {
                return Err("timestamp extension: nanoseconds out of range".into());
            }
            Ok(Timestamp {
                secs: (v & 0x3_ffff_ffff) as i64,
                nanos,
            })
        }
        12 => {
            let nanos = u32::from_be_bytes(data[..4].try_into().expect("4 bytes"));
            if nanos >= 1_000_000_000 {
                return Err("timestamp extension: nanoseconds out of range".into());
            }
            Ok(Timestamp {
                secs: i64::from_be_bytes(data[4..].try_into().expect("8 bytes")),
                nanos,
            })
        }
        n => Err(format!(
            "timestamp extension of {n} bytes (expected 4, 8 or 12)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    /// Written straight into the output, the text is what the `time`
    /// crate's RFC 3339 formatting gives, or the seconds where it has none.
    #[test]
    fn rfc3339_text_is_the_time_crates() {
        let secs = [
            0,
            1,
            -1,
            1_763_700_000,
            951_782_400,     // 2000-02-29
            253_402_300_799, // 9999-12-31T23:59:59
            253_402_300_800, // year 10000: no RFC 3339 form
            -62_167_219_200, // 0000-01-01
            -62_167_219_201,
            i64::MAX,
            i64::MIN,
        ];
        for secs in secs {
            for nanos in [0, 1, 10, 120_000_000, 500_000_000, 999_999_999] {
                let t = Timestamp { secs, nanos };
                let want = ::time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(secs) * 1_000_000_000 + i128::from(nanos),
                )
                .ok()
                .and_then(|t| {
                    t.format(&::time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| secs.to_string());
                let mut out = b"x".to_vec();
                t.write_rfc3339_json(&mut out);
                assert_eq!(out, format!("x\"{want}\"").into_bytes(), "{secs} {nanos}");
                assert_eq!(t.to_rfc3339(), want);
            }
        }
    }
}

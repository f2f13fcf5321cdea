//! One point in time, read from every form the producers and the host use.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The MessagePack extension type of timestamps.
pub const MSGPACK_TIMESTAMP_EXT: i8 = -1;

/// The newtype name rmp-serde and rmpv use to carry extension values
/// (`(tag: i8, data: bytes)`) through serde.
pub(crate) const MSGPACK_EXT_STRUCT: &str = "_ExtStruct";

const NANOS_PER_SEC: u32 = 1_000_000_000;

/// A UTC point in time with nanosecond precision, as seconds and
/// nanoseconds since the unix epoch.
///
/// It deserializes from every form the producers and the host use:
///
/// * an integer (or float) of unix seconds, as in iam's `TimeStamp`;
/// * a MessagePack timestamp (extension type -1) in its 4-, 8- and 12-byte
///   forms, as in iam's `ExpireAt`;
/// * a `[seconds, nanoseconds]` array, as in Tyk's `TimeStamp` and
///   `ExpireAt`;
/// * an RFC 3339 string, as in batches the host encodes as JSON;
/// * nil / null or an empty string, which give [`Timestamp::UNIX_EPOCH`].
///
/// It serializes as an RFC 3339 string in human-readable formats (JSON) and
/// as a MessagePack timestamp otherwise; the typed records choose each
/// field's producer form for MessagePack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    /// 1970-01-01T00:00:00Z, also what nil deserializes to.
    pub const UNIX_EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// From unix seconds and nanoseconds; nanoseconds of a second or more
    /// carry into the seconds.
    pub fn new(secs: i64, nanos: u32) -> Self {
        Timestamp {
            secs: secs.saturating_add(i64::from(nanos / NANOS_PER_SEC)),
            nanos: nanos % NANOS_PER_SEC,
        }
    }

    /// From whole unix seconds.
    pub fn from_unix_seconds(secs: i64) -> Self {
        Timestamp { secs, nanos: 0 }
    }

    /// From unix milliseconds (the unit of `Event::timestamp`).
    pub fn from_unix_millis(millis: i64) -> Self {
        Timestamp {
            secs: millis.div_euclid(1000),
            nanos: (millis.rem_euclid(1000) as u32) * 1_000_000,
        }
    }

    /// From unix nanoseconds, saturating outside the `i64` seconds range.
    pub fn from_unix_nanos(nanos: i128) -> Self {
        let secs = nanos.div_euclid(i128::from(NANOS_PER_SEC));
        match i64::try_from(secs) {
            Ok(secs) => Timestamp {
                secs,
                nanos: nanos.rem_euclid(i128::from(NANOS_PER_SEC)) as u32,
            },
            Err(_) if secs < 0 => Timestamp {
                secs: i64::MIN,
                nanos: 0,
            },
            Err(_) => Timestamp {
                secs: i64::MAX,
                nanos: NANOS_PER_SEC - 1,
            },
        }
    }

    /// Whole seconds since the unix epoch (rounded down).
    pub fn unix_seconds(&self) -> i64 {
        self.secs
    }

    /// The nanoseconds past [`Timestamp::unix_seconds`], `0..1_000_000_000`.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// Milliseconds since the unix epoch (rounded down, saturating).
    pub fn unix_millis(&self) -> i64 {
        self.secs
            .saturating_mul(1000)
            .saturating_add(i64::from(self.nanos / 1_000_000))
    }

    /// Nanoseconds since the unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        i128::from(self.secs) * i128::from(NANOS_PER_SEC) + i128::from(self.nanos)
    }

    /// `true` for [`Timestamp::UNIX_EPOCH`], what a missing or nil time
    /// decodes to.
    pub fn is_zero(&self) -> bool {
        *self == Self::UNIX_EPOCH
    }

    /// Formats as RFC 3339 in UTC, e.g. `2026-11-21T05:47:41Z`, with as
    /// many fractional digits as needed (none when the nanoseconds are 0),
    /// like Go's `time.RFC3339Nano`.
    pub fn to_rfc3339(&self) -> String {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let mut out = format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        if self.nanos != 0 {
            let digits = format!("{:09}", self.nanos);
            out.push('.');
            out.push_str(digits.trim_end_matches('0'));
        }
        out.push('Z');
        out
    }

    /// Parses an RFC 3339 date-time with any UTC offset.
    pub fn parse_rfc3339(text: &str) -> Result<Self, Error> {
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| Error::invalid(format!("invalid RFC 3339 time {text:?}: {e}")))?;
        Ok(Timestamp {
            secs: parsed.unix_timestamp(),
            nanos: parsed.nanosecond(),
        })
    }

    /// Decodes the data of a MessagePack timestamp extension (type -1):
    /// 4 bytes of u32 seconds; 8 bytes holding 30 bits of nanoseconds above
    /// 34 bits of seconds; or 12 bytes of u32 nanoseconds then i64 seconds.
    /// All big-endian.
    pub fn from_msgpack_ext(data: &[u8]) -> Result<Self, Error> {
        let (secs, nanos) = match *data {
            [a, b, c, d] => (i64::from(u32::from_be_bytes([a, b, c, d])), 0),
            [a, b, c, d, e, f, g, h] => {
                let v = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
                ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
            }
            [a, b, c, d, ref rest @ ..] if rest.len() == 8 => {
                let mut secs = [0u8; 8];
                secs.copy_from_slice(rest);
                (i64::from_be_bytes(secs), u32::from_be_bytes([a, b, c, d]))
            }
            _ => {
                return Err(Error::invalid(format!(
                    "MessagePack timestamp of {} bytes (expected 4, 8 or 12)",
                    data.len()
                )))
            }
        };
        if nanos >= NANOS_PER_SEC {
            return Err(Error::invalid(format!(
                "MessagePack timestamp with {nanos} nanoseconds"
            )));
        }
        Ok(Timestamp { secs, nanos })
    }

    /// Encodes the data of a MessagePack timestamp extension in its
    /// smallest form.
    pub fn to_msgpack_ext(&self) -> Vec<u8> {
        if self.nanos == 0 && (0..=i64::from(u32::MAX)).contains(&self.secs) {
            (self.secs as u32).to_be_bytes().to_vec()
        } else if (0..1i64 << 34).contains(&self.secs) {
            ((u64::from(self.nanos) << 34) | self.secs as u64)
                .to_be_bytes()
                .to_vec()
        } else {
            let mut out = self.nanos.to_be_bytes().to_vec();
            out.extend_from_slice(&self.secs.to_be_bytes());
            out
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse_rfc3339(s)
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Bytes serialized through `serialize_bytes`, as extension data needs.
struct ExtData<'a>(&'a [u8]);

impl Serialize for ExtData<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_rfc3339())
        } else {
            let data = self.to_msgpack_ext();
            serializer.serialize_newtype_struct(
                MSGPACK_EXT_STRUCT,
                &(MSGPACK_TIMESTAMP_EXT, ExtData(&data)),
            )
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl<'de> Visitor<'de> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a time: unix seconds, [seconds, nanoseconds], an RFC 3339 string \
             or a MessagePack timestamp",
        )
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
        Ok(Timestamp::from_unix_seconds(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
        i64::try_from(v)
            .map(Timestamp::from_unix_seconds)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Timestamp, E> {
        if !v.is_finite() {
            return Err(E::invalid_value(de::Unexpected::Float(v), &self));
        }
        Ok(Timestamp::from_unix_nanos((v * 1e9).round() as i128))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        if v.is_empty() {
            return Ok(Timestamp::UNIX_EPOCH);
        }
        Timestamp::parse_rfc3339(v).map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Timestamp, E> {
        Ok(Timestamp::UNIX_EPOCH)
    }

    fn visit_none<E: de::Error>(self) -> Result<Timestamp, E> {
        Ok(Timestamp::UNIX_EPOCH)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Timestamp, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Timestamp, A::Error> {
        let secs: i64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let nanos: i64 = seq.next_element()?.unwrap_or(0);
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(3, &self));
        }
        let nanos = i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos);
        Ok(Timestamp::from_unix_nanos(nanos))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Timestamp, D::Error> {
        // rmp-serde and rmpv hand extension values over as a newtype
        // around a `(tag, data)` sequence.
        d.deserialize_any(ExtVisitor)
    }
}

/// Reads the `(tag, data)` sequence of a MessagePack extension value.
struct ExtVisitor;

impl<'de> Visitor<'de> for ExtVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a MessagePack timestamp extension")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Timestamp, A::Error> {
        let tag: i8 = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let data: ByteBuf = seq
            .next_element()?
            .ok_or_else(|| de::Error::invalid_length(1, &self))?;
        if tag != MSGPACK_TIMESTAMP_EXT {
            return Err(de::Error::custom(format!(
                "MessagePack extension type {tag} is not a timestamp"
            )));
        }
        Timestamp::from_msgpack_ext(&data.0).map_err(de::Error::custom)
    }
}

/// Owned bytes from `visit_bytes` (or a sequence of small integers).
pub(crate) struct ByteBuf(pub(crate) Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// Serde helpers for fields whose MessagePack form is integer unix seconds
/// (iam's `TimeStamp`). Deserializing accepts every form [`Timestamp`] does.
pub(crate) mod unix_seconds {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&t.to_rfc3339())
        } else {
            serializer.serialize_i64(t.unix_seconds())
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Timestamp::deserialize(d)
    }
}

/// Serde helpers for fields whose MessagePack form is a
/// `[seconds, nanoseconds]` array (Tyk's times). Deserializing accepts every
/// form [`Timestamp`] does.
pub(crate) mod seconds_nanos {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&t.to_rfc3339())
        } else {
            let mut tuple = serializer.serialize_tuple(2)?;
            tuple.serialize_element(&t.unix_seconds())?;
            tuple.serialize_element(&i64::from(t.subsec_nanos()))?;
            tuple.end()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Timestamp::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64, nanos: u32) -> Timestamp {
        Timestamp::new(secs, nanos)
    }

    /// A MessagePack ext -1 value with the given data, hand-encoded.
    fn ext(data: &[u8]) -> Vec<u8> {
        let mut out = match data.len() {
            4 => vec![0xd6],
            8 => vec![0xd7],
            n => vec![0xc7, n as u8],
        };
        out.push(0xff);
        out.extend_from_slice(data);
        out
    }

    fn from_msgpack(bytes: &[u8]) -> Timestamp {
        rmp_serde::from_slice(bytes).unwrap()
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(ts(0, 0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(ts(1_795_240_061, 0).to_rfc3339(), "2026-11-21T05:47:41Z");
        assert_eq!(
            ts(1_795_240_061, 500_000_000).to_rfc3339(),
            "2026-11-21T05:47:41.5Z"
        );
        assert_eq!(
            ts(1_795_240_061, 123_456_789).to_rfc3339(),
            "2026-11-21T05:47:41.123456789Z"
        );
        assert_eq!(ts(-1, 0).to_rfc3339(), "1969-12-31T23:59:59Z");
        assert_eq!(ts(951_782_400, 0).to_rfc3339(), "2000-02-29T00:00:00Z");
        // Go's zero time.Time.
        assert_eq!(ts(-62_135_596_800, 0).to_rfc3339(), "0001-01-01T00:00:00Z");
        assert_eq!(ts(253_402_300_799, 0).to_rfc3339(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn rfc3339_parsing() {
        let t: Timestamp = "2026-11-21T05:47:41Z".parse().unwrap();
        assert_eq!(t, ts(1_795_240_061, 0));
        let t: Timestamp = "2026-11-21T05:47:41.25Z".parse().unwrap();
        assert_eq!(t, ts(1_795_240_061, 250_000_000));
        let t: Timestamp = "2026-11-21T06:47:41+01:00".parse().unwrap();
        assert_eq!(t, ts(1_795_240_061, 0));
        assert!("yesterday".parse::<Timestamp>().is_err());
        for t in [
            ts(0, 0),
            ts(1_795_240_061, 1),
            ts(-62_135_596_800, 999_999_999),
        ] {
            assert_eq!(t.to_rfc3339().parse::<Timestamp>().unwrap(), t);
        }
    }

    #[test]
    fn unit_conversions() {
        let t = Timestamp::from_unix_millis(-1);
        assert_eq!((t.unix_seconds(), t.subsec_nanos()), (-1, 999_000_000));
        assert_eq!(t.unix_millis(), -1);
        assert_eq!(Timestamp::new(1, 1_500_000_000), ts(2, 500_000_000));
        assert_eq!(Timestamp::from_unix_nanos(-1), ts(-1, 999_999_999));
        assert_eq!(ts(3, 7).unix_nanos(), 3_000_000_007);
        assert!(Timestamp::default().is_zero());
    }

    #[test]
    fn msgpack_integer_seconds() {
        for secs in [0i64, 1, 127, 128, 255, 65_535, 1_795_240_061, -5, 1 << 40] {
            let bytes = rmp_serde::to_vec(&secs).unwrap();
            assert_eq!(from_msgpack(&bytes), ts(secs, 0), "{secs}");
        }
    }

    #[test]
    fn msgpack_ext_4_bytes() {
        let t = from_msgpack(&ext(&1_795_240_061u32.to_be_bytes()));
        assert_eq!(t, ts(1_795_240_061, 0));
        // u32 seconds past 2038 stay positive.
        let t = from_msgpack(&ext(&u32::MAX.to_be_bytes()));
        assert_eq!(t, ts(i64::from(u32::MAX), 0));
    }

    #[test]
    fn msgpack_ext_8_bytes() {
        let v: u64 = (123_456_789u64 << 34) | 1_795_240_061;
        let t = from_msgpack(&ext(&v.to_be_bytes()));
        assert_eq!(t, ts(1_795_240_061, 123_456_789));
        // Seconds use all 34 bits.
        let v: u64 = (1u64 << 34) - 1;
        assert_eq!(from_msgpack(&ext(&v.to_be_bytes())), ts((1 << 34) - 1, 0));
    }

    #[test]
    fn msgpack_ext_12_bytes() {
        let mut data = 5u32.to_be_bytes().to_vec();
        data.extend_from_slice(&(-62_135_596_800i64).to_be_bytes());
        assert_eq!(from_msgpack(&ext(&data)), ts(-62_135_596_800, 5));
    }

    #[test]
    fn msgpack_ext_errors() {
        assert!(rmp_serde::from_slice::<Timestamp>(&ext(&[1, 2, 3])).is_err());
        // Nanoseconds out of range.
        let mut data = 1_000_000_000u32.to_be_bytes().to_vec();
        data.extend_from_slice(&0i64.to_be_bytes());
        assert!(rmp_serde::from_slice::<Timestamp>(&ext(&data)).is_err());
        // Another extension type.
        let mut other = ext(&[0, 0, 0, 1]);
        other[1] = 5;
        assert!(rmp_serde::from_slice::<Timestamp>(&other).is_err());
    }

    #[test]
    fn msgpack_ext_round_trip_picks_the_smallest_form() {
        for (t, len) in [
            (ts(1_795_240_061, 0), 6),
            (ts(1_795_240_061, 1), 10),
            (ts(-1, 0), 15),
            (ts(1 << 35, 0), 15),
        ] {
            let bytes = rmp_serde::to_vec(&t).unwrap();
            assert_eq!(bytes.len(), len, "{t}");
            assert_eq!(from_msgpack(&bytes), t);
        }
    }

    #[test]
    fn msgpack_ext_through_rmpv() {
        let v: u64 = (7u64 << 34) | 1_795_240_061;
        let value = rmpv::Value::Ext(-1, v.to_be_bytes().to_vec());
        let t: Timestamp = rmpv::ext::from_value(value).unwrap();
        assert_eq!(t, ts(1_795_240_061, 7));
    }

    #[test]
    fn seconds_nanos_array() {
        let bytes = rmp_serde::to_vec(&(1_795_240_061i64, 42u32)).unwrap();
        assert_eq!(from_msgpack(&bytes), ts(1_795_240_061, 42));
        let t: Timestamp = serde_json::from_str("[1795240061, 999999999]").unwrap();
        assert_eq!(t, ts(1_795_240_061, 999_999_999));
        let t: Timestamp = serde_json::from_str("[10]").unwrap();
        assert_eq!(t, ts(10, 0));
        assert!(serde_json::from_str::<Timestamp>("[]").is_err());
        assert!(serde_json::from_str::<Timestamp>("[1, 2, 3]").is_err());
    }

    #[test]
    fn nil_and_json_forms() {
        assert_eq!(from_msgpack(&[0xc0]), Timestamp::UNIX_EPOCH);
        let t: Timestamp = serde_json::from_str("null").unwrap();
        assert!(t.is_zero());
        let t: Timestamp = serde_json::from_str("\"\"").unwrap();
        assert!(t.is_zero());
        let t: Timestamp = serde_json::from_str("\"2026-11-21T05:47:41.5Z\"").unwrap();
        assert_eq!(t, ts(1_795_240_061, 500_000_000));
        let t: Timestamp = serde_json::from_str("1795240061").unwrap();
        assert_eq!(t, ts(1_795_240_061, 0));
        let t: Timestamp = serde_json::from_str("1.5").unwrap();
        assert_eq!(t, ts(1, 500_000_000));
        let t: Option<Timestamp> = serde_json::from_str("1").unwrap();
        assert_eq!(t, Some(ts(1, 0)));
        assert_eq!(
            serde_json::to_string(&ts(1_795_240_061, 0)).unwrap(),
            "\"2026-11-21T05:47:41Z\""
        );
        assert!(serde_json::from_str::<Timestamp>("true").is_err());
        assert!(serde_json::from_str::<Timestamp>("\"soon\"").is_err());
    }
}

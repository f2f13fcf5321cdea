//! Pure formatting: request bodies and the `Retry-After` header. No I/O
//! here, so all of it is unit-tested natively.

use std::io::Write;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::config::Format;

/// Lays out JSON payloads (one object each, as the host encodes them) in
/// `format`. The payloads are copied as they are: the host's JSON is
/// compact, so it never contains a raw line break.
pub fn build<'a>(format: Format, payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        Format::JsonArray => {
            out.push(b'[');
            for (i, p) in payloads.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(p);
            }
            out.push(b']');
        }
        Format::Ndjson => {
            for p in payloads {
                out.extend_from_slice(p);
                out.push(b'\n');
            }
        }
    }
    out
}

/// Compresses `body` as a gzip member (RFC 1952).
pub fn gzip(body: &[u8]) -> Vec<u8> {
    // Fast level: on a 2-core box the CPU is worth more than a few bytes.
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4 + 64), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// The delay a `Retry-After` value asks for: delta-seconds (`"120"`) or an
/// IMF-fixdate (`"Sun, 06 Nov 1994 08:49:37 GMT"`), relative to `now_unix`
/// seconds. A date in the past is no delay; anything else unreadable is
/// `None`.
pub fn retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(Duration::from_secs(
        u64::try_from(at - now_unix).unwrap_or(0),
    ))
}

/// Unix seconds of an IMF-fixdate, the one form RFC 9110 requires senders
/// to use.
fn parse_http_date(v: &str) -> Option<i64> {
    let mut parts = v.split_ascii_whitespace();
    let _weekday = parts.next()?.strip_suffix(',')?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let s: i64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || parts.next().is_some() || hms.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    const RECS: [&[u8]; 2] = [br#"{"a":1}"#, br#"{"b":"x\ny"}"#];

    #[test]
    fn json_array_and_ndjson() {
        assert_eq!(build(Format::JsonArray, RECS), br#"[{"a":1},{"b":"x\ny"}]"#);
        assert_eq!(build(Format::JsonArray, []), b"[]");
        assert_eq!(
            build(Format::Ndjson, RECS),
            b"{\"a\":1}\n{\"b\":\"x\\ny\"}\n"
        );
        assert_eq!(build(Format::Ndjson, []), b"");
    }

    #[test]
    fn gzip_round_trips() {
        let body = build(Format::Ndjson, RECS);
        let packed = gzip(&body);
        assert_eq!(&packed[..2], &[0x1f, 0x8b], "gzip magic");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        // 1994-11-06T08:49:37Z
        let t = 784_111_777;
        assert_eq!(retry_after("120", t), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", t), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", t - 30),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT", t + 5),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(
            retry_after("Wed, 01 Mar 2028 00:00:00 GMT", 1_835_481_600 - 1),
            Some(Duration::from_secs(1))
        );
        for bad in [
            "",
            "-1",
            "soon",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
        ] {
            assert_eq!(retry_after(bad, t), None, "{bad:?}");
        }
    }
}

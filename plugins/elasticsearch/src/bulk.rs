//! Pure bulk-API formatting: index names from record times, the NDJSON
//! request body, and reading the per-item results of a bulk response. No
//! I/O here, so all of it is unit-tested natively.

use std::collections::BTreeMap;

use pumphouse_sdk::serde_json;
use pumphouse_sdk::{Error, FailedEvent};
use serde::Deserialize;

/// One piece of an index pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Year,
    Month,
    Day,
    Hour,
}

/// An index name pattern like `analytics-%Y.%m.%d`, filled in from each
/// record's time (UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexPattern(Vec<Part>);

impl IndexPattern {
    /// Reads a pattern; `%Y` (4-digit year), `%m`, `%d`, `%H` (2 digits)
    /// and `%%` are the codes. The result must be a valid index name for
    /// any date, which is checked here once rather than per batch.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                lit.push(c);
                continue;
            }
            let code = match chars.next() {
                Some('%') => {
                    lit.push('%');
                    continue;
                }
                Some('Y') => Part::Year,
                Some('m') => Part::Month,
                Some('d') => Part::Day,
                Some('H') => Part::Hour,
                Some(other) => {
                    return Err(format!(
                        "%{other} is not a supported code (use %Y, %m, %d, %H or %%)"
                    ))
                }
                None => return Err("a lone % at the end (write %% for a percent sign)".into()),
            };
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(code);
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        let p = IndexPattern(parts);
        check_index_name(&p.render(0)).map_err(|e| format!("{pattern:?}: {e}"))?;
        Ok(p)
    }

    /// The index for a record at `unix_millis`.
    pub fn render(&self, unix_millis: i64) -> String {
        let secs = unix_millis.div_euclid(1000);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let h = secs.rem_euclid(86_400) / 3600;
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Year => out.push_str(&format!("{y:04}")),
                Part::Month => out.push_str(&format!("{m:02}")),
                Part::Day => out.push_str(&format!("{d:02}")),
                Part::Hour => out.push_str(&format!("{h:02}")),
            }
        }
        out
    }
}

/// The cluster's rules for index names.
fn check_index_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err("is not an index name".into());
    }
    if name.len() > 255 {
        return Err("index names are at most 255 bytes".into());
    }
    if name.starts_with(['-', '_', '+']) {
        return Err("index names cannot start with '-', '_' or '+'".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_uppercase() || "\\/*?\"<>| ,#:".contains(*c))
    {
        return Err(format!(
            "index names cannot contain {c:?} (and must be lowercase)"
        ));
    }
    Ok(())
}

/// (year, month, day) of days since 1970-01-01, proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The document `_id` of a record: its stable id in hex, so a re-delivered
/// record overwrites its earlier copy instead of adding a second one.
pub fn doc_id(record_id: u64) -> String {
    format!("{record_id:016x}")
}

/// Appends one `index` action and its document to a bulk body. The
/// document must be one line of JSON.
pub fn push_index_action(out: &mut Vec<u8>, index: &str, id: &str, document: &[u8]) {
    out.extend_from_slice(b"{\"index\":{\"_index\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, index);
    out.extend_from_slice(b",\"_id\":");
    let _ = serde_json::to_writer(&mut *out, id);
    out.extend_from_slice(b"}}\n");
    out.extend_from_slice(document);
    out.push(b'\n');
}

/// A document that is safe on one bulk line: the host's compact JSON as it
/// is; anything with a raw line break re-serialized. `Err` for a payload
/// that is not a JSON object.
pub fn one_line_document(payload: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    if !payload.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Ok(payload.into());
    }
    let value: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    Ok(serde_json::to_vec(&value)
        .map_err(|e| e.to_string())?
        .into())
}

/// The time fields of iam and Tyk documents.
pub const TIME_FIELDS: [&str; 2] = ["TimeStamp", "ExpireAt"];

/// Why `doc` (the host's compact JSON) must not be indexed: one of
/// `fields` holds a time outside years 0000-9999, which the host writes as
/// a string of unix seconds (`"253402300800"`). A `date` field, as dynamic
/// mapping makes of RFC 3339 text, reads a string of digits as epoch
/// *milliseconds*, so that record would be stored 1000 times too early.
/// A key with unescaped quotes around it can only be a key, so a byte scan
/// finds every one without parsing the document.
pub fn time_out_of_range(doc: &[u8], fields: &[&str]) -> Option<String> {
    for field in fields {
        let key = format!("\"{field}\":\"");
        let mut from = 0;
        while let Some(at) = find(&doc[from..], key.as_bytes()) {
            let start = from + at + key.len();
            let len = doc[start..].iter().position(|&b| b == b'"')?;
            let text = &doc[start..start + len];
            let digits = text.strip_prefix(b"-").unwrap_or(text);
            if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
                return Some(format!(
                    "{field} is {} unix seconds, a time outside years 0000-9999; \
                     an Elasticsearch date field would read it as epoch milliseconds, \
                     so the record is refused rather than indexed wrong",
                    String::from_utf8_lossy(text)
                ));
            }
            from = start + len;
        }
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[derive(Debug, Deserialize)]
struct BulkResponse {
    errors: bool,
    #[serde(default)]
    items: Vec<BTreeMap<String, Item>>,
}

#[derive(Debug, Deserialize)]
struct Item {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: Option<String>,
}

/// Reads a 2xx bulk response to a request whose actions were for the
/// batch records `indices`, in order, and returns the records that failed.
/// Rejections for load (429) and server trouble (5xx) are retryable; any
/// other item error (e.g. a 400 `mapper_parsing_exception`) is the
/// document's own fault and is not.
pub fn failed_items(body: &[u8], indices: &[u32]) -> Result<Vec<FailedEvent>, Error> {
    let resp: BulkResponse = serde_json::from_slice(body)
        .map_err(|e| Error::retry(format!("the bulk response is not the expected JSON: {e}")))?;
    if !resp.errors {
        return Ok(Vec::new());
    }
    if resp.items.len() != indices.len() {
        // Cannot tell which item is which: send it all again (the `_id`s
        // make that harmless).
        return Err(Error::retry(format!(
            "the bulk response has {} items for {} actions",
            resp.items.len(),
            indices.len()
        )));
    }
    let mut failed = Vec::new();
    for (item, &index) in resp.items.iter().zip(indices) {
        let Some(result) = item.values().next() else {
            return Err(Error::retry("the bulk response has an empty item"));
        };
        if result.error.is_none() && (200..300).contains(&result.status) {
            continue;
        }
        let status = result.status;
        let what = match &result.error {
            Some(e) => format!(
                "{}: {}",
                e.kind,
                e.reason.as_deref().unwrap_or("no reason given")
            ),
            None => "no error given".into(),
        };
        failed.push(FailedEvent {
            index,
            reason: format!("elasticsearch rejected the document ({status}) {what}"),
            retryable: matches!(status, 408 | 429 | 500..=599),
        });
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::ErrorKind;

    #[test]
    fn index_patterns_render_utc_dates() {
        let p = IndexPattern::parse("analytics-%Y.%m.%d").unwrap();
        // 2025-11-21T04:40:00Z
        assert_eq!(p.render(1_763_700_000_000), "analytics-2025.11.21");
        assert_eq!(p.render(0), "analytics-1970.01.01");
        // One millisecond before 1970: the last day of 1969.
        assert_eq!(p.render(-1), "analytics-1969.12.31");
        // Leap day.
        assert_eq!(p.render(951_782_400_000), "analytics-2000.02.29");
        let hourly = IndexPattern::parse("t-%Y%m%d%H-100%%").unwrap();
        assert_eq!(hourly.render(1_763_700_000_000), "t-2025112104-100%");
        assert_eq!(IndexPattern::parse("fixed").unwrap().render(5), "fixed");
    }

    #[test]
    fn bad_patterns_say_why() {
        for (p, want) in [
            ("a-%y", "%y is not a supported code"),
            ("a-%", "lone %"),
            ("Analytics", "lowercase"),
            ("a b", "cannot contain ' '"),
            ("a:%Y", "cannot contain ':'"),
            ("_x", "cannot start"),
            ("", "not an index name"),
        ] {
            let err = IndexPattern::parse(p).unwrap_err();
            assert!(err.contains(want), "{p:?}: {err}");
        }
    }

    #[test]
    fn dates_match_the_civil_calendar() {
        // Every day boundary over four centuries round-trips with the
        // inverse used for Retry-After-style dates elsewhere.
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            let yy = if m <= 2 { y - 1 } else { y };
            let era = yy.div_euclid(400);
            let yoe = yy - era * 400;
            let mp = (i64::from(m) + 9) % 12;
            let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
            assert_eq!(
                era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468,
                days
            );
        }
    }

    #[test]
    fn bulk_body_alternates_action_and_document() {
        let mut body = Vec::new();
        push_index_action(&mut body, "a-2025.11.21", &doc_id(0xab), br#"{"x":1}"#);
        push_index_action(&mut body, "a-2025.11.22", &doc_id(u64::MAX), br#"{"y":2}"#);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "{\"index\":{\"_index\":\"a-2025.11.21\",\"_id\":\"00000000000000ab\"}}\n{\"x\":1}\n\
             {\"index\":{\"_index\":\"a-2025.11.22\",\"_id\":\"ffffffffffffffff\"}}\n{\"y\":2}\n"
        );
    }

    /// Times past year 9999 (the host's seconds text) are found in any
    /// time field; RFC 3339 times, other fields and escaped look-alikes
    /// inside strings are not.
    #[test]
    fn seconds_text_in_time_fields_is_refused() {
        let refused = |doc: &str| time_out_of_range(doc.as_bytes(), &TIME_FIELDS);
        assert!(refused(
            r#"{"TimeStamp":"2026-01-01T00:00:00Z","ExpireAt":"2123-01-01T00:00:00Z"}"#
        )
        .is_none());
        let e =
            refused(r#"{"TimeStamp":"2026-01-01T00:00:00Z","ExpireAt":"253402300800"}"#).unwrap();
        assert!(
            e.starts_with("ExpireAt is 253402300800 unix seconds"),
            "{e}"
        );
        assert!(refused(r#"{"TimeStamp":"-62167219201"}"#)
            .unwrap()
            .starts_with("TimeStamp is -62167219201"));
        assert!(refused(r#"{"APIKey":"253402300800","ExpireAt":""}"#).is_none());
        assert!(refused(r#"{"Request":"{\"ExpireAt\":\"1\"}"}"#).is_none());
    }

    #[test]
    fn documents_fit_on_one_line() {
        assert_eq!(
            &*one_line_document(br#"{"a":"b"}"#).unwrap(),
            br#"{"a":"b"}"#
        );
        assert_eq!(
            &*one_line_document(b"{\n  \"a\": 1\n}").unwrap(),
            br#"{"a":1}"#
        );
        assert!(one_line_document(b"[1,\n2]").is_err());
        assert!(one_line_document(b"{\n").is_err());
    }

    #[test]
    fn bulk_responses_map_onto_failed_events() {
        let ok = br#"{"took":3,"errors":false,"items":[{"index":{"status":201}}]}"#;
        assert_eq!(failed_items(ok, &[0]).unwrap(), vec![]);
        let mixed = br#"{"took":3,"errors":true,"items":[
            {"index":{"_id":"a","status":201,"result":"created"}},
            {"index":{"_id":"b","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [Username]"}}},
            {"index":{"_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_id":"d","status":200,"result":"updated"}},
            {"index":{"_id":"e","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}
        ]}"#;
        let failed = failed_items(mixed, &[0, 2, 4, 5, 7]).unwrap();
        let summary: Vec<(u32, bool)> = failed.iter().map(|f| (f.index, f.retryable)).collect();
        assert_eq!(summary, vec![(2, false), (4, true), (7, true)]);
        assert!(
            failed[0]
                .reason
                .contains("(400) mapper_parsing_exception: failed to parse field [Username]"),
            "{}",
            failed[0].reason
        );
        assert!(failed[1].reason.contains("es_rejected_execution_exception"));
    }

    #[test]
    fn unreadable_bulk_responses_are_retried() {
        for body in [
            &b"<html>proxy error</html>"[..],
            br#"{"errors":true,"items":[{"index":{"status":400}}]}"#,
            br#"{"errors":true,"items":[{}, {}]}"#,
        ] {
            let err = failed_items(body, &[0, 1]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Retry, "{err}");
        }
    }
}

//! The dead-letter entry format and its writer: records that could not be
//! decoded or delivered, kept in Redis with their original bytes and the
//! reason.

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;

use crate::runtime::bindings::Encoding;
use crate::source::redis::RedisSource;
use crate::telemetry;

/// A record to dead-letter.
pub struct DeadRecord {
    pub bytes: Vec<u8>,
    pub encoding: Encoding,
    pub reason: String,
}

/// One entry of the dead-letter list, stored as JSON.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Entry {
    /// RFC 3339 time the entry was written.
    pub time: String,
    /// The source list the record came from.
    pub source: String,
    /// The pump that gave up on it; absent when it could not be decoded.
    pub pump: Option<String>,
    pub reason: String,
    /// `msgpack` (the producer's bytes) or `json`.
    pub encoding: String,
    /// The record's bytes, base64.
    pub payload: String,
}

impl Entry {
    /// The entry of `r`, payload included.
    pub fn new(source: &str, pump: Option<&str>, r: &DeadRecord) -> Entry {
        Entry {
            payload: base64::engine::general_purpose::STANDARD.encode(&r.bytes),
            ..Entry::head(source, pump, r)
        }
    }

    /// Every field but the payload.
    fn head(source: &str, pump: Option<&str>, r: &DeadRecord) -> Entry {
        Entry {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            source: source.to_string(),
            pump: pump.map(str::to_string),
            reason: r.reason.clone(),
            encoding: crate::runtime::encoding_name(r.encoding).to_string(),
            payload: String::new(),
        }
    }

    /// The JSON of `r`'s entry, as [`Entry::new`] would serialize, in one
    /// buffer of its final size: the payload is base64-encoded straight
    /// into it. Going through the `String` of [`Entry::new`] would hold a
    /// large record's payload twice more (the string, and a growing copy).
    pub fn json(source: &str, pump: Option<&str>, r: &DeadRecord) -> Vec<u8> {
        let mut out = serde_json::to_vec(&Entry::head(source, pump, r)).expect("entry serializes");
        // The payload is the last field, written as `"payload":""}`;
        // base64 text needs no JSON escaping.
        debug_assert!(out.ends_with(b"\"payload\":\"\"}"));
        out.truncate(out.len() - 2);
        let len =
            base64::encoded_len(r.bytes.len(), true).expect("a payload's base64 fits in memory");
        let at = out.len();
        out.reserve_exact(len + 2);
        out.resize(at + len, 0);
        base64::engine::general_purpose::STANDARD
            .encode_slice(&r.bytes, &mut out[at..])
            .expect("the buffer is sized for the base64");
        out.extend_from_slice(b"\"}");
        out
    }
}

/// Writes dead letters, retrying until Redis takes them: a record is only
/// acked once its dead-letter entry is stored.
#[derive(Clone)]
pub struct DeadLetters {
    source: RedisSource,
}

impl DeadLetters {
    pub fn new(source: RedisSource) -> Self {
        DeadLetters { source }
    }

    pub async fn write(&self, key: &str, pump: Option<&str>, records: Vec<DeadRecord>) {
        if records.is_empty() {
            return;
        }
        // One line per batch, not per record: a batch of bad records must
        // not become as many log lines.
        let bytes: usize = records.iter().map(|r| r.bytes.len()).sum();
        let reasons: std::collections::HashSet<&str> =
            records.iter().map(|r| r.reason.as_str()).collect();
        let more = match records.len() {
            1 => String::new(),
            n => format!(
                " (and {} more records of this batch, {} distinct reasons)",
                n - 1,
                reasons.len()
            ),
        };
        tracing::warn!(
            source = key,
            pump = pump.unwrap_or("-"),
            records = records.len(),
            bytes,
            "dead-lettered a record: {}{more}",
            records[0].reason
        );
        // Each record is freed as soon as its entry is made: a large one is
        // not held in both forms while Redis is written.
        let entries: Vec<Vec<u8>> = records
            .into_iter()
            .map(|r| Entry::json(key, pump, &r))
            .collect();
        crate::backoff::forever(
            Duration::from_millis(100),
            Duration::from_secs(5),
            || self.source.dead_letter(&entries),
            |e, delay| {
                tracing::warn!(
                    "cannot store {} dead letters yet ({e}); retrying in {delay:?}",
                    entries.len()
                )
            },
        )
        .await;
        metrics::counter!(telemetry::RECORDS_DEAD_LETTERED, "pump" => pump.unwrap_or("source").to_string())
            .increment(entries.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON written in one buffer is the entry [`Entry::new`] makes.
    #[test]
    fn entry_json_is_the_serialized_entry() {
        for bytes in [vec![], vec![0x80], (0..=255u8).cycle().take(1000).collect()] {
            let r = DeadRecord {
                bytes,
                encoding: Encoding::Msgpack,
                reason: "undecodable: \"quoted\"\n".into(),
            };
            let json = Entry::json("src", Some("p"), &r);
            let back: Entry = serde_json::from_slice(&json).unwrap();
            let want = Entry::new("src", Some("p"), &r);
            assert_eq!(
                back,
                Entry {
                    time: back.time.clone(),
                    ..want
                }
            );
        }
    }
}

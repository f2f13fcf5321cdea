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
    pub fn new(source: &str, pump: Option<&str>, r: &DeadRecord) -> Entry {
        Entry {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            source: source.to_string(),
            pump: pump.map(str::to_string),
            reason: r.reason.clone(),
            encoding: crate::runtime::encoding_name(r.encoding).to_string(),
            payload: base64::engine::general_purpose::STANDARD.encode(&r.bytes),
        }
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
        let entries: Vec<Vec<u8>> = records
            .iter()
            .map(|r| serde_json::to_vec(&Entry::new(key, pump, r)).expect("entry serializes"))
            .collect();
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

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
    /// Shared with the batch (and every other pump dead-lettering it).
    pub bytes: bytes::Bytes,
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
    /// buffer of its final size.
    pub fn json(source: &str, pump: Option<&str>, r: &DeadRecord) -> Vec<u8> {
        let mut out = Vec::with_capacity(Entry::json_len_hint(r));
        Entry::write_json(source, pump, r, &mut out).expect("a Vec takes every write");
        out
    }

    /// Writes the JSON of `r`'s entry to `out`, the payload base64-encoded
    /// straight into it in small pieces: going through the `String` of
    /// [`Entry::new`] would hold a large record's payload twice more.
    fn write_json(
        source: &str,
        pump: Option<&str>,
        r: &DeadRecord,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        for part in Entry::json_parts(source, pump, r, 3 * 16 * 1024) {
            out.write_all(&part)?;
        }
        Ok(())
    }

    /// The JSON of `r`'s entry in consecutive parts, each holding the
    /// base64 of at most `record_bytes` of the record (a multiple of 3, so
    /// the parts join into one base64 text), made one at a time as the
    /// iterator is read.
    pub fn json_parts<'a>(
        source: &str,
        pump: Option<&str>,
        r: &'a DeadRecord,
        record_bytes: usize,
    ) -> JsonParts<'a> {
        assert!(record_bytes > 0 && record_bytes.is_multiple_of(3));
        let mut head = serde_json::to_vec(&Entry::head(source, pump, r)).expect("entry serializes");
        // The payload is the last field, written as `"payload":""}`;
        // base64 text needs no JSON escaping.
        debug_assert!(head.ends_with(b"\"payload\":\"\"}"));
        head.truncate(head.len() - 2);
        JsonParts {
            head: Some(head),
            pieces: r.bytes.chunks(record_bytes),
            done: false,
        }
    }

    /// The size of [`Entry::json`]'s output, near enough to reserve.
    fn json_len_hint(r: &DeadRecord) -> usize {
        base64::encoded_len(r.bytes.len(), true).unwrap_or(0) + r.reason.len() + 256
    }
}

/// The parts of an entry's JSON; see [`Entry::json_parts`].
pub struct JsonParts<'a> {
    head: Option<Vec<u8>>,
    pieces: std::slice::Chunks<'a, u8>,
    done: bool,
}

impl Iterator for JsonParts<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut out = self.head.take().unwrap_or_default();
        if let Some(piece) = self.pieces.next() {
            let at = out.len();
            out.resize(at + base64::encoded_len(piece.len(), true).unwrap_or(0), 0);
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(piece, &mut out[at..])
                .expect("sized for the piece's base64");
            out.truncate(at + n);
        }
        if self.pieces.len() == 0 {
            out.extend_from_slice(b"\"}");
            self.done = true;
        }
        Some(out)
    }
}

/// A record's dead-letter entry as an argument of the Redis command that
/// stores it: its JSON is written straight into the command, so a large
/// record is never held as an entry and again as the command.
struct EntryArg<'a> {
    source: &'a str,
    pump: Option<&'a str>,
    record: DeadRecord,
}

impl redis::ToRedisArgs for EntryArg<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.reserve_space_for_args([Entry::json_len_hint(&self.record)]);
        let mut w = out.writer_for_next_arg();
        Entry::write_json(self.source, self.pump, &self.record, &mut w)
            .expect("a command buffer takes every write");
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
        // Entries of large records in flight at once are what bounds the
        // host's memory here: a record being stored is held once, beside a
        // part of its entry at a time (in parts) or its whole entry about
        // three times (the command, packed, in the write buffer) for small
        // ones. Writers take a share of one process-wide budget (all of it
        // for a record as large as the budget), so three pumps
        // dead-lettering one 64 MiB record store it one after another.
        let _budget = in_flight()
            .acquire_many(budget_units(bytes))
            .await
            .expect("the budget is never closed");
        let count = records.len();
        let (large, small): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| r.bytes.len() > PART_RECORD_BYTES);
        if !small.is_empty() {
            let n = small.len();
            // Each record's entry is written into the command, and the
            // record released: a small one is not held in several forms.
            let cmd = self
                .source
                .dead_letter_cmd(small.into_iter().map(|record| EntryArg {
                    source: key,
                    pump,
                    record,
                }));
            crate::backoff::forever(
                Duration::from_millis(100),
                Duration::from_secs(5),
                || self.source.dead_letter(&cmd),
                |e, delay| {
                    tracing::warn!("cannot store {n} dead letters yet ({e}); retrying in {delay:?}")
                },
            )
            .await;
        }
        for record in large {
            crate::backoff::forever(
                Duration::from_millis(100),
                Duration::from_secs(5),
                || {
                    self.source.dead_letter_in_parts(Entry::json_parts(
                        key,
                        pump,
                        &record,
                        PART_RECORD_BYTES,
                    ))
                },
                |e, delay| {
                    tracing::warn!(
                        bytes = record.bytes.len(),
                        "cannot store a large dead letter yet ({e}); retrying in {delay:?}"
                    )
                },
            )
            .await;
        }
        metrics::counter!(telemetry::RECORDS_DEAD_LETTERED, "pump" => pump.unwrap_or("source").to_string())
            .increment(count as u64);
    }
}

/// Records larger than this are stored in parts of this many record bytes
/// (1 MiB of base64 each); see [`RedisSource::dead_letter_in_parts`].
const PART_RECORD_BYTES: usize = 768 * 1024;

/// Record bytes that may be in dead-letter entries at once, across the
/// host, in units of [`BUDGET_UNIT`].
const BUDGET_UNITS: u32 = 32;
const BUDGET_UNIT: usize = 1 << 20;

fn in_flight() -> &'static tokio::sync::Semaphore {
    static IN_FLIGHT: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    IN_FLIGHT.get_or_init(|| tokio::sync::Semaphore::new(BUDGET_UNITS as usize))
}

/// The share of the budget `bytes` of records take: at least one unit, at
/// most all of them.
fn budget_units(bytes: usize) -> u32 {
    (bytes.div_ceil(BUDGET_UNIT) as u32).clamp(1, BUDGET_UNITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_as_large_as_the_budget_takes_all_of_it() {
        assert_eq!(budget_units(0), 1);
        assert_eq!(budget_units(BUDGET_UNIT + 1), 2);
        assert_eq!(budget_units(64 * BUDGET_UNIT), BUDGET_UNITS);
    }

    /// The JSON written in one buffer is the entry [`Entry::new`] makes.
    #[test]
    fn entry_json_is_the_serialized_entry() {
        for bytes in [vec![], vec![0x80], (0..=255u8).cycle().take(1000).collect()] {
            let r = DeadRecord {
                bytes: bytes.into(),
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

    /// The parts of an entry join into the entry, whatever the part size
    /// and record size (empty, one part, a part boundary, a remainder).
    #[test]
    fn entry_parts_join_into_the_entry() {
        for len in [0, 1, 3, 5, 6, 7, 1000] {
            let r = DeadRecord {
                bytes: (0..=255u8).cycle().take(len).collect::<Vec<_>>().into(),
                encoding: Encoding::Msgpack,
                reason: "too big".into(),
            };
            for part in [3, 6, 999] {
                let parts: Vec<Vec<u8>> = Entry::json_parts("src", None, &r, part).collect();
                assert_eq!(parts.len(), len.div_ceil(part).max(1), "{len} / {part}");
                let back: Entry = serde_json::from_slice(&parts.concat()).unwrap();
                let want = Entry::new("src", None, &r);
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
}

//! A decoded batch shared by every lane, and the encoded forms of it that
//! lanes ask for (made once per batch, not once per pump).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::dlq::DeadRecord;
use crate::record::{self, Meta, Schema};
use crate::runtime::bindings::{self as wit, Encoding};
use crate::source::redis::Claim;

/// Records claimed together, decoded once.
pub struct Batch {
    /// The source list they came from.
    pub key: Arc<str>,
    /// What acknowledges the batch in Redis (`None`: at-most-once, or a
    /// batch read back from a spool).
    pub claim: Option<Claim>,
    pub schema: Schema,
    /// Records that decoded, as received: shared, so every pump that
    /// dead-letters one holds the same copy.
    pub records: Vec<Bytes>,
    pub meta: Vec<Meta>,
    /// Records claimed, including undecodable ones.
    pub claimed: usize,
    /// Unix ms when claimed: the timestamp of records that carry none.
    pub claimed_at_ms: i64,
    /// Lanes still working on this batch.
    pub remaining: AtomicUsize,
    forms: [OnceLock<Arc<Encoded>>; 4],
}

/// A record that cannot go to any pump, and why.
pub struct Undecodable {
    pub bytes: Vec<u8>,
    pub reason: String,
}

impl Undecodable {
    pub fn into_dead(self) -> DeadRecord {
        DeadRecord {
            bytes: self.bytes.into(),
            encoding: Encoding::Msgpack,
            reason: self.reason,
        }
    }
}

/// One encoded form of every record of a batch, back to back.
pub struct Encoded {
    /// The records that encoded, as a plugin call takes them: a lane that
    /// hands its plugin the whole batch passes this one as it is, so no
    /// lane copies the payloads of an unfiltered batch.
    pub whole: wit::Batch,
    /// Byte range of each record in `whole.payloads`; `None` if it could
    /// not be encoded.
    pub spans: Vec<Option<(u32, u32)>>,
    pub errors: Vec<Option<String>>,
}

/// Which encoding, with or without detail fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    pub encoding: Encoding,
    pub omit_detail: bool,
}

impl Form {
    fn slot(self) -> usize {
        let e = match self.encoding {
            Encoding::Msgpack => 0,
            Encoding::Json => 1,
        };
        e * 2 + usize::from(self.omit_detail)
    }
}

impl Batch {
    /// The event time plugins see for record `i`: its own, else the claim's.
    pub fn event_timestamp(&self, i: usize) -> i64 {
        self.meta[i].timestamp_ms.unwrap_or(self.claimed_at_ms)
    }

    /// Decodes claimed records; `rejected` are records the source already
    /// refused (counted as claimed, returned with the undecodable ones).
    /// Pure CPU work: run it off the executor.
    pub fn decode(
        key: Arc<str>,
        claim: Option<Claim>,
        schema: Schema,
        items: Vec<Vec<u8>>,
        rejected: Vec<Undecodable>,
        now_ms: i64,
    ) -> (Batch, Vec<Undecodable>) {
        let claimed = items.len() + rejected.len();
        let mut records = Vec::with_capacity(items.len());
        let mut meta = Vec::with_capacity(items.len());
        let mut bad = rejected;
        for bytes in items {
            match record::decode(schema, &bytes) {
                Ok(m) => {
                    meta.push(m);
                    records.push(Bytes::from(bytes));
                }
                Err(error) => bad.push(Undecodable {
                    bytes,
                    reason: format!("undecodable: {error}"),
                }),
            }
        }
        let batch = Batch {
            key,
            claim,
            schema,
            records,
            meta,
            claimed,
            claimed_at_ms: now_ms,
            remaining: AtomicUsize::new(0),
            forms: Default::default(),
        };
        (batch, bad)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Marks one lane done; true for the last one.
    pub fn finish_lane(&self) -> bool {
        self.remaining.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// The batch in `form`, encoded on first use and shared afterwards.
    pub fn form(&self, form: Form) -> Arc<Encoded> {
        self.forms[form.slot()]
            .get_or_init(|| Arc::new(self.encode(form)))
            .clone()
    }

    fn encode(&self, form: Form) -> Encoded {
        let omit: &[&str] = if form.omit_detail {
            self.schema.detail_fields()
        } else {
            &[]
        };
        let total: usize = self.records.iter().map(Bytes::len).sum();
        let mut payloads = Vec::with_capacity(match form.encoding {
            Encoding::Msgpack => total,
            Encoding::Json => total * 2,
        });
        let mut spans = Vec::with_capacity(self.records.len());
        let mut events = Vec::with_capacity(self.records.len());
        let mut errors = Vec::new();
        for (i, bytes) in self.records.iter().enumerate() {
            let start = payloads.len();
            let r = match (form.encoding, omit.is_empty()) {
                (Encoding::Msgpack, true) => {
                    payloads.extend_from_slice(bytes);
                    Ok(())
                }
                (Encoding::Msgpack, false) => record::omit_fields(bytes, omit, &mut payloads),
                (Encoding::Json, _) => record::write_json(self.schema, bytes, omit, &mut payloads),
            };
            match r {
                Ok(()) => {
                    let (offset, len) = (start as u32, (payloads.len() - start) as u32);
                    spans.push(Some((offset, len)));
                    events.push(wit::Event {
                        id: self.meta[i].id,
                        timestamp: self.event_timestamp(i),
                        offset,
                        len,
                    });
                }
                Err(e) => {
                    payloads.truncate(start);
                    spans.push(None);
                    if errors.is_empty() {
                        errors.resize(self.records.len(), None);
                    }
                    errors[i] = Some(e.to_string());
                }
            }
        }
        Encoded {
            whole: wit::Batch {
                schema: self.schema.into(),
                encoding: form.encoding,
                payloads,
                events,
            },
            spans,
            errors,
        }
    }
}

//! A decoded batch shared by every lane, and the encoded forms of it that
//! lanes ask for (made once per batch, not once per pump).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::record::{self, DecodeError, Meta, Schema};
use crate::runtime::bindings::{self as wit, Encoding};

/// Records claimed together, decoded once.
pub struct Batch {
    /// The source list they came from.
    pub key: Arc<str>,
    /// Batch list in Redis holding the claim (`None`: at-most-once).
    pub claim: Option<String>,
    pub schema: Schema,
    /// Records that decoded, as received.
    pub records: Vec<Vec<u8>>,
    pub meta: Vec<Meta>,
    /// Records claimed, including undecodable ones.
    pub claimed: usize,
    /// Unix ms when claimed: the timestamp of records that carry none.
    pub claimed_at_ms: i64,
    /// Lanes still working on this batch.
    pub remaining: AtomicUsize,
    forms: [OnceLock<Arc<Encoded>>; 4],
}

/// An undecodable record and why.
pub struct Undecodable {
    pub bytes: Vec<u8>,
    pub error: DecodeError,
}

/// One encoded form of every record of a batch, back to back.
pub struct Encoded {
    pub payloads: Vec<u8>,
    /// Byte range of each record; `None` if it could not be encoded.
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
    /// Decodes claimed records. Pure CPU work: run it off the executor.
    pub fn decode(
        key: Arc<str>,
        claim: Option<String>,
        schema: Schema,
        items: Vec<Vec<u8>>,
        now_ms: i64,
    ) -> (Batch, Vec<Undecodable>) {
        let claimed = items.len();
        let mut records = Vec::with_capacity(claimed);
        let mut meta = Vec::with_capacity(claimed);
        let mut bad = Vec::new();
        for bytes in items {
            match record::decode(schema, &bytes) {
                Ok(m) => {
                    meta.push(m);
                    records.push(bytes);
                }
                Err(error) => bad.push(Undecodable { bytes, error }),
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
        let total: usize = self.records.iter().map(Vec::len).sum();
        let mut payloads = Vec::with_capacity(match form.encoding {
            Encoding::Msgpack => total,
            Encoding::Json => total * 2,
        });
        let mut spans = Vec::with_capacity(self.records.len());
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
                Ok(()) => spans.push(Some((start as u32, (payloads.len() - start) as u32))),
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
            payloads,
            spans,
            errors,
        }
    }
}

/// The WIT schema of a record schema.
pub fn wit_schema(schema: Schema) -> wit::Schema {
    match schema {
        Schema::Iam => wit::Schema::Iam,
        Schema::Tyk => wit::Schema::Tyk,
        Schema::Generic => wit::Schema::Generic,
    }
}

//! The batch of one plugin call: which records a lane still carries, and
//! their payloads in the encoding the next plugin reads. An unfiltered
//! batch goes out as its shared encoded form, never copied per pump.

use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{Batch, Encoded, Form};
use crate::dlq::DeadRecord;
use crate::record::{self, Schema};
use crate::runtime::bindings::{self as wit, Encoding};

/// Where a record's bytes are.
pub(super) enum Payload {
    /// Still the source's record: its index in the batch.
    Original(u32),
    /// Bytes a filter produced (`replace`), in that filter's encoding: a
    /// slice of the one buffer the filter returned, shared by all of the
    /// verdict's records, never copied per record.
    Replaced(Encoding, Bytes),
}

/// A record on its way through the lane.
pub(super) struct Item {
    pub id: u64,
    pub timestamp: i64,
    pub payload: Payload,
}

impl Item {
    /// The dead-letter record of this item: the producer's bytes while it
    /// is the source's record, else what the filter made of it; shared,
    /// never copied.
    pub fn dead(self, batch: &Batch, reason: String) -> DeadRecord {
        let (encoding, bytes) = match self.payload {
            Payload::Replaced(e, b) => (e, b),
            Payload::Original(i) => (Encoding::Msgpack, batch.records[i as usize].clone()),
        };
        DeadRecord {
            bytes,
            encoding,
            reason,
        }
    }
}

/// The batch of one plugin call.
pub(super) enum CallBatch {
    /// The shared form of the whole batch.
    Whole(Arc<Encoded>),
    /// Made for this call: some records were filtered out, replaced or
    /// could not be encoded.
    Own(wit::Batch),
}

/// The instance's thread reads the call batch while the lane keeps it.
impl crate::runtime::AsBatch for CallBatch {
    fn as_batch(&self) -> &wit::Batch {
        self.get()
    }
}

impl CallBatch {
    pub fn get(&self) -> &wit::Batch {
        match self {
            CallBatch::Whole(e) => &e.whole,
            CallBatch::Own(b) => b,
        }
    }
}

/// Builds the call batch of `items` in `form`; items that cannot be
/// encoded go to `dead`, the rest are returned in order.
pub(super) fn materialize(
    batch: &Batch,
    items: Vec<Item>,
    form: Form,
    dead: &mut Vec<DeadRecord>,
) -> (CallBatch, Vec<Item>) {
    // The whole batch, untouched by filters: the shared form is the call's
    // batch as it is.
    if items.len() == batch.len()
        && items
            .iter()
            .enumerate()
            .all(|(i, it)| matches!(it.payload, Payload::Original(o) if o == i as u32))
    {
        let f = batch.form(form);
        if f.errors.is_empty() {
            return (CallBatch::Whole(f), items);
        }
    }
    let mut shared: Option<Arc<Encoded>> = None;
    let mut payloads = Vec::new();
    let mut events = Vec::with_capacity(items.len());
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let start = payloads.len();
        let r = match &item.payload {
            Payload::Replaced(e, bytes) => {
                transcode(batch.schema, *e, bytes, form.encoding, &mut payloads)
            }
            Payload::Original(i) => {
                let f = shared.get_or_insert_with(|| batch.form(form));
                match f.spans[*i as usize] {
                    Some((o, l)) => {
                        payloads.extend_from_slice(&f.whole.payloads[o as usize..(o + l) as usize]);
                        Ok(())
                    }
                    None => Err(f.errors[*i as usize].clone().unwrap_or_default()),
                }
            }
        };
        let span = r.and_then(|()| {
            let off =
                u32::try_from(start).map_err(|_| "batch payload exceeds 4 GiB".to_string())?;
            let len = u32::try_from(payloads.len() - start)
                .map_err(|_| "record exceeds 4 GiB".to_string())?;
            Ok((off, len))
        });
        match span {
            Ok((offset, len)) => {
                events.push(wit::Event {
                    id: item.id,
                    timestamp: item.timestamp,
                    offset,
                    len,
                });
                kept.push(item);
            }
            Err(reason) => {
                payloads.truncate(start);
                dead.push(item.dead(
                    batch,
                    format!(
                        "cannot encode as {}: {reason}",
                        crate::runtime::encoding_name(form.encoding)
                    ),
                ));
            }
        }
    }
    let wb = wit::Batch {
        schema: batch.schema.into(),
        encoding: form.encoding,
        payloads,
        events,
    };
    (CallBatch::Own(wb), kept)
}

/// Re-encodes bytes a filter produced for a stage that wants another form.
fn transcode(
    schema: Schema,
    from: Encoding,
    bytes: &[u8],
    to: Encoding,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match (from, to) {
        (a, b) if a == b => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        (Encoding::Msgpack, Encoding::Json) => {
            record::write_json(schema, bytes, &[], out).map_err(|e| e.to_string())
        }
        (Encoding::Json, Encoding::Msgpack) => {
            let v: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("filter output is not JSON: {e}"))?;
            rmp_serde::encode::write_named(out, &v).map_err(|e| e.to_string())
        }
        _ => unreachable!("two encodings, all pairs covered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_msgpack_transcode_both_ways() {
        let mut mp = Vec::new();
        transcode(
            Schema::Generic,
            Encoding::Json,
            br#"{"a":1,"b":"x"}"#,
            Encoding::Msgpack,
            &mut mp,
        )
        .unwrap();
        let mut js = Vec::new();
        transcode(
            Schema::Generic,
            Encoding::Msgpack,
            &mp,
            Encoding::Json,
            &mut js,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&js).unwrap(),
            serde_json::json!({"a":1,"b":"x"})
        );
        assert!(transcode(
            Schema::Generic,
            Encoding::Json,
            b"{",
            Encoding::Msgpack,
            &mut Vec::new()
        )
        .is_err());
    }
}

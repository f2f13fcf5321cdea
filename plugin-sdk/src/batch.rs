//! Reading records out of a [`Batch`], and building batches.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::{msgpack, Batch, Encoding, Error, Event, Schema, Timestamp, Verdict};

impl Batch {
    /// An empty batch.
    pub fn new(encoding: Encoding, schema: Schema) -> Self {
        Batch {
            schema,
            encoding,
            payloads: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The number of records.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when the batch has no records.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The records, in order.
    pub fn records(&self) -> Records<'_> {
        Records {
            batch: self,
            events: self.events.iter().enumerate(),
        }
    }

    /// The record at `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<Record<'_>> {
        self.events.get(index).map(|event| Record {
            batch: self,
            index: index as u32,
            event,
        })
    }

    /// Checks that every event's payload lies inside `payloads`. The export
    /// macros run this before handing a batch to a plugin, so inside
    /// `write` and `process` every [`Record::payload`] is in range.
    pub fn validate(&self) -> Result<(), Error> {
        if u32::try_from(self.events.len()).is_err() {
            return Err(Error::too_large("more than 2^32 events in one batch"));
        }
        for (index, event) in self.events.iter().enumerate() {
            if self.range(event).is_none() {
                return Err(out_of_range(index, event, self.payloads.len()));
            }
        }
        Ok(())
    }

    /// Appends a record, copying its payload.
    pub fn push(&mut self, id: u64, timestamp: i64, payload: &[u8]) -> Result<(), Error> {
        let too_large = || Error::too_large("batch payloads over 4 GiB");
        let offset = u32::try_from(self.payloads.len()).map_err(|_| too_large())?;
        let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
        offset.checked_add(len).ok_or_else(too_large)?;
        self.payloads.extend_from_slice(payload);
        self.events.push(Event {
            id,
            timestamp,
            offset,
            len,
        });
        Ok(())
    }

    /// Appends a copy of `record` (from this or another batch) with its id
    /// and timestamp.
    pub fn push_record(&mut self, record: &Record<'_>) -> Result<(), Error> {
        let payload = record.try_payload()?;
        self.push(record.id(), record.timestamp(), payload)
    }

    fn range(&self, event: &Event) -> Option<Range<usize>> {
        let start = usize::try_from(event.offset).ok()?;
        let end = start.checked_add(usize::try_from(event.len).ok()?)?;
        (end <= self.payloads.len()).then_some(start..end)
    }
}

fn out_of_range(index: usize, event: &Event, total: usize) -> Error {
    Error::invalid(format!(
        "event {index}: payload at offset {} with length {} lies outside the batch's {total} payload bytes",
        event.offset, event.len
    ))
}

impl<'a> IntoIterator for &'a Batch {
    type Item = Record<'a>;
    type IntoIter = Records<'a>;

    fn into_iter(self) -> Records<'a> {
        self.records()
    }
}

impl Verdict {
    /// `Keep(indices)`, or `KeepAll` when `indices` holds all of a batch of
    /// `total` records. `indices` must be ascending.
    pub fn from_indices(indices: Vec<u32>, total: usize) -> Verdict {
        if indices.len() == total {
            Verdict::KeepAll
        } else {
            Verdict::Keep(indices)
        }
    }
}

/// The records of a batch; see [`Batch::records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    batch: &'a Batch,
    events: std::iter::Enumerate<std::slice::Iter<'a, Event>>,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let (index, event) = self.events.next()?;
        Some(Record {
            batch: self.batch,
            index: index as u32,
            event,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.events.size_hint()
    }
}

impl DoubleEndedIterator for Records<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let (index, event) = self.events.next_back()?;
        Some(Record {
            batch: self.batch,
            index: index as u32,
            event,
        })
    }
}

impl ExactSizeIterator for Records<'_> {}

/// One record of a batch: its event and its payload.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    batch: &'a Batch,
    index: u32,
    event: &'a Event,
}

impl fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("index", &self.index)
            .field("id", &self.event.id)
            .field("timestamp", &self.event.timestamp)
            .field("len", &self.event.len)
            .finish()
    }
}

impl<'a> Record<'a> {
    /// The index of the record in its batch, as `Verdict::Keep` and
    /// `FailedEvent::index` want it.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The record's stable id, for idempotent writes.
    pub fn id(&self) -> u64 {
        self.event.id
    }

    /// The record's time in unix milliseconds.
    pub fn timestamp(&self) -> i64 {
        self.event.timestamp
    }

    /// The record's time as a [`Timestamp`].
    pub fn time(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.event.timestamp)
    }

    /// The event behind the record.
    pub fn event(&self) -> &'a Event {
        self.event
    }

    /// The payload's encoding (the batch's).
    pub fn encoding(&self) -> Encoding {
        self.batch.encoding
    }

    /// The payload's schema (the batch's).
    pub fn schema(&self) -> Schema {
        self.batch.schema
    }

    /// The payload bytes. Empty when the event points outside the batch,
    /// which cannot happen in a batch that passed [`Batch::validate`] (as
    /// every batch handed to `write` or `process` has).
    pub fn payload(&self) -> &'a [u8] {
        self.try_payload().unwrap_or_default()
    }

    /// The payload bytes, or an [`ErrorKind::Invalid`] error when the event
    /// points outside the batch.
    ///
    /// [`ErrorKind::Invalid`]: crate::ErrorKind::Invalid
    pub fn try_payload(&self) -> Result<&'a [u8], Error> {
        match self.batch.range(self.event) {
            Some(range) => Ok(&self.batch.payloads[range]),
            None => Err(out_of_range(
                self.index as usize,
                self.event,
                self.batch.payloads.len(),
            )),
        }
    }

    /// Deserializes the payload from MessagePack or JSON, according to the
    /// batch's encoding. Failures are [`ErrorKind::Invalid`] and name the
    /// record's index.
    ///
    /// [`ErrorKind::Invalid`]: crate::ErrorKind::Invalid
    pub fn decode<T: Deserialize<'a>>(&self) -> Result<T, Error> {
        let payload = self.try_payload()?;
        let decoded = match self.batch.encoding {
            Encoding::Msgpack => rmp_serde::from_slice(payload).map_err(Error::from),
            Encoding::Json => serde_json::from_slice(payload).map_err(Error::from),
        };
        decoded.map_err(|e| e.context(format_args!("record {}", self.index)))
    }

    /// The payload as a generic JSON value, whatever the encoding.
    /// MessagePack is converted the way the host's JSON encoding does it:
    /// binary as base64 strings, MessagePack timestamps as RFC 3339
    /// strings; non-string map keys become their text.
    pub fn value(&self) -> Result<serde_json::Value, Error> {
        match self.batch.encoding {
            Encoding::Json => self.decode(),
            Encoding::Msgpack => Ok(crate::value::to_json(self.msgpack_value()?)),
        }
    }

    /// The payload as a generic MessagePack value, whatever the encoding.
    pub fn msgpack_value(&self) -> Result<rmpv::Value, Error> {
        match self.batch.encoding {
            Encoding::Json => self.decode(),
            Encoding::Msgpack => {
                let mut payload = self.try_payload()?;
                rmpv::decode::read_value(&mut payload)
                    .map_err(|e| Error::from(e).context(format_args!("record {}", self.index)))
            }
        }
    }

    /// The text of the top-level field `name`: strings as they are, numbers
    /// in decimal, booleans as `true`/`false`, times as RFC 3339. `None`
    /// when the field is missing, null, not a scalar, or the payload is
    /// malformed.
    ///
    /// For MessagePack this reads only up to the field, borrowing strings
    /// from the payload, so it is cheap enough to call per record.
    pub fn field(&self, name: &str) -> Option<Cow<'a, str>> {
        let payload = self.try_payload().ok()?;
        match self.batch.encoding {
            Encoding::Msgpack => msgpack::lookup(payload, name).and_then(msgpack::text),
            Encoding::Json => {
                let mut de = serde_json::Deserializer::from_slice(payload);
                FieldSeed(name).deserialize(&mut de).ok().flatten()
            }
        }
    }
}

/// Scans a JSON object for one key, rendering its value as text.
struct FieldSeed<'n>(&'n str);

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<Cow<'de, str>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut seen = false;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if !seen && key.0.as_deref() == Some(self.0) {
                seen = true;
                found = map.next_value::<Text<'de>>()?.0;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// A value's text, borrowed when the input allows it.
struct Text<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Owned(v.to_owned()))))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Borrowed(if v { "true" } else { "false" }))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text<'de>, E> {
        Ok(Text(Some(Cow::Owned(v.to_string()))))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text<'de>, E> {
        Ok(Text(None))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Text<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Text(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    #[test]
    fn records_expose_events_and_payloads() {
        let batch = testing::batch(
            Encoding::Json,
            Schema::Generic,
            vec![b"{\"a\":1}".to_vec(), b"{}".to_vec()],
        );
        assert_eq!(batch.len(), 2);
        assert!(!batch.is_empty());
        let recs: Vec<_> = batch.records().collect();
        assert_eq!(recs[0].index(), 0);
        assert_eq!(recs[1].index(), 1);
        assert_eq!(recs[0].payload(), b"{\"a\":1}");
        assert_eq!(recs[1].payload(), b"{}");
        assert_eq!(batch.records().next_back().unwrap().index(), 1);
        assert_eq!((&batch).into_iter().len(), 2);
        assert!(batch.get(2).is_none());
        assert!(batch.validate().is_ok());
    }

    #[test]
    fn out_of_range_offsets_are_errors_not_panics() {
        let mut batch = testing::json_batch(&[json!({"a": 1}), json!({"b": 2})]);
        batch.events[1].offset = batch.payloads.len() as u32 - 2;
        batch.events[1].len = 10;
        let err = batch.validate().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Invalid);
        assert!(err.to_string().starts_with("event 1:"), "{err}");
        let rec = batch.get(1).unwrap();
        assert_eq!(rec.payload(), b"");
        assert!(rec.try_payload().is_err());
        assert!(rec.decode::<serde_json::Value>().is_err());
        assert!(rec.value().is_err());
        assert!(rec.msgpack_value().is_err());
        assert_eq!(rec.field("b"), None);
        // The first record is still fine.
        assert_eq!(batch.get(0).unwrap().field("a").as_deref(), Some("1"));

        // Offsets whose sum overflows u32.
        batch.events[1].offset = u32::MAX;
        batch.events[1].len = u32::MAX;
        assert!(batch.validate().is_err());
        assert!(batch.get(1).unwrap().try_payload().is_err());
    }

    #[test]
    fn decode_follows_the_encoding() {
        #[derive(Deserialize, PartialEq, Debug)]
        struct R<'a> {
            name: &'a str,
            n: u8,
        }
        let j = testing::json_batch(&[json!({"name": "x", "n": 1})]);
        let m = testing::msgpack_batch(Schema::Generic, &[json!({"name": "x", "n": 1})]);
        for b in [&j, &m] {
            let r: R<'_> = b.get(0).unwrap().decode().unwrap();
            assert_eq!(r, R { name: "x", n: 1 });
        }
        let err = m.get(0).unwrap().decode::<u32>().unwrap_err();
        assert!(err.to_string().starts_with("record 0: "), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Invalid);
    }

    #[test]
    fn fields_work_for_both_encodings() {
        let rec = json!({
            "Path": "/a\"b",
            "Code": 200,
            "Neg": -1,
            "Big": u64::MAX,
            "F": 1.25,
            "T": true,
            "N": null,
            "Arr": [1, {"Path": "no"}],
            "Obj": {"Path": "no"},
            "Esc\u{e9}": "v",
        });
        let j = testing::json_batch(std::slice::from_ref(&rec));
        let m = testing::msgpack_batch(Schema::Generic, &[rec]);
        for b in [&j, &m] {
            let r = b.get(0).unwrap();
            assert_eq!(r.field("Path").as_deref(), Some("/a\"b"));
            assert_eq!(r.field("Code").as_deref(), Some("200"));
            assert_eq!(r.field("Neg").as_deref(), Some("-1"));
            assert_eq!(r.field("Big").as_deref(), Some("18446744073709551615"));
            assert_eq!(r.field("F").as_deref(), Some("1.25"));
            assert_eq!(r.field("T").as_deref(), Some("true"));
            assert_eq!(r.field("N"), None);
            assert_eq!(r.field("Arr"), None);
            assert_eq!(r.field("Obj"), None);
            assert_eq!(r.field("Esc\u{e9}").as_deref(), Some("v"));
            assert_eq!(r.field("Missing"), None);
        }
        // Not an object.
        let b = testing::json_batch(&[json!([1, 2])]);
        assert_eq!(b.get(0).unwrap().field("a"), None);
    }

    #[test]
    fn values_match_across_encodings() {
        let rec = json!({"a": [1, "two", null, true, 2.5], "b": {"c": -3}});
        let j = testing::json_batch(std::slice::from_ref(&rec));
        let m = testing::msgpack_batch(Schema::Generic, std::slice::from_ref(&rec));
        assert_eq!(j.get(0).unwrap().value().unwrap(), rec);
        assert_eq!(m.get(0).unwrap().value().unwrap(), rec);
        assert_eq!(
            j.get(0).unwrap().msgpack_value().unwrap(),
            m.get(0).unwrap().msgpack_value().unwrap()
        );
    }

    #[test]
    fn push_and_verdicts() {
        let src = testing::json_batch(&[json!(1), json!(2), json!(3)]);
        let mut out = Batch::new(Encoding::Json, Schema::Generic);
        for r in src.records().filter(|r| r.index() != 1) {
            out.push_record(&r).unwrap();
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out.get(1).unwrap().payload(), b"3");
        assert_eq!(out.get(1).unwrap().id(), src.get(2).unwrap().id());
        assert!(out.validate().is_ok());
        assert_eq!(Verdict::from_indices(vec![0, 1, 2], 3), Verdict::KeepAll);
        assert_eq!(
            Verdict::from_indices(vec![0, 2], 3),
            Verdict::Keep(vec![0, 2])
        );
        assert_eq!(Verdict::from_indices(vec![], 1), Verdict::Keep(vec![]));
    }
}

//! The record decoder and the JSON and MessagePack re-encoders on
//! arbitrary bytes. Input: one selector byte (schema = byte % 3, detail
//! fields omitted when bit 2 is set), then the record. Properties:
//!
//! - nothing panics;
//! - memory: the three calls together never hold more than
//!   `MEMORY_FACTOR` times the record plus a constant;
//! - the scanning decoder accepts what a full parse (rmpv) accepts, bar
//!   field types and times, and refuses what it refuses, bar nesting;
//! - a record that decodes has a JSON form that is valid JSON (an object),
//!   unless it is too deep or would be too large, both named errors;
//! - its MessagePack form is the input bytes when no field is omitted,
//!   and otherwise exactly the input's other entries.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use libfuzzer_sys::fuzz_target;

// The host's record module, compiled as it is (it is pure: bytes in,
// bytes out).
#[path = "../../host/src/record/mod.rs"]
#[allow(dead_code)]
mod record;

use record::{DecodeError, Schema};

/// Counts the bytes the global allocator holds, and their peak.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = HELD.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call goes to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        HELD.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            HELD.fetch_sub(l.size(), Relaxed);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The JSON form may be 16 times the record (`MAX_JSON_GROWTH`), and a
/// growing `Vec` may hold twice what it uses, plus the key text being
/// escaped: 48 is that with room, never what a claimed count would cost.
const MEMORY_FACTOR: usize = 48;
const MEMORY_SLACK: usize = 64 << 10;

/// The full parse: one map spanning all of `bytes`.
fn full_parse(bytes: &[u8]) -> Result<Vec<(rmpv::ValueRef<'_>, rmpv::ValueRef<'_>)>, String> {
    let mut cur = bytes;
    let v = rmpv::decode::read_value_ref(&mut cur).map_err(|e| e.to_string())?;
    if !cur.is_empty() {
        return Err("trailing bytes".into());
    }
    match v {
        rmpv::ValueRef::Map(entries) => Ok(entries),
        _ => Err("not a map".into()),
    }
}

fn too_deep(e: &DecodeError) -> bool {
    matches!(e, DecodeError::Msgpack(m) if m.contains("too deep") || m.contains("depth limit"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let schema = [Schema::Iam, Schema::Tyk, Schema::Generic][usize::from(sel % 3)];
    let omit: &[&str] = if sel & 4 != 0 {
        schema.detail_fields()
    } else {
        &[]
    };

    let base = HELD.load(Relaxed);
    PEAK.store(base, Relaxed);
    let meta = record::decode(schema, bytes);
    let mut json = Vec::new();
    let json_result = record::write_json(schema, bytes, omit, &mut json);
    let mut msgpack = Vec::new();
    let msgpack_result = record::omit_fields(bytes, omit, &mut msgpack);
    let peak = PEAK.load(Relaxed) - base;
    assert!(
        peak <= MEMORY_FACTOR * bytes.len() + MEMORY_SLACK,
        "{peak} bytes held for a record of {}",
        bytes.len()
    );

    match (&meta, full_parse(bytes)) {
        (Err(e), Ok(_)) => assert!(
            matches!(
                e,
                DecodeError::FieldType { .. } | DecodeError::BadTime { .. }
            ),
            "the full parse reads it, the decoder says {e}"
        ),
        (Ok(_), Err(e)) => assert!(
            e.contains("depth limit"),
            "the decoder reads it, the full parse says {e}"
        ),
        _ => {}
    }
    if meta.is_err() {
        return;
    }

    match &json_result {
        Ok(()) => {
            let mut de = serde_json::Deserializer::from_slice(&json);
            de.disable_recursion_limit();
            let v: serde_json::Value =
                serde::Deserialize::deserialize(&mut de).unwrap_or_else(|e| {
                    panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(&json))
                });
            de.end().expect("nothing after the JSON");
            assert!(v.is_object(), "not an object: {v}");
        }
        Err(e) => assert!(
            too_deep(e) || *e == DecodeError::JsonTooLarge,
            "a record that decodes has no JSON form: {e}"
        ),
    }

    msgpack_result.expect("a record that decodes can drop fields");
    let entries = full_parse(bytes);
    let omitted = |k: &rmpv::ValueRef<'_>| matches!(k, rmpv::ValueRef::String(s) if s.as_str().is_some_and(|s| omit.contains(&s)));
    match &entries {
        Ok(entries) if entries.iter().any(|(k, _)| omitted(k)) => {
            let kept: Vec<_> = entries.iter().filter(|(k, _)| !omitted(k)).collect();
            let got = full_parse(&msgpack).expect("the form without fields is a map");
            assert_eq!(
                format!("{kept:?}"),
                format!("{:?}", got.iter().collect::<Vec<_>>())
            );
            let again = record::decode(schema, &msgpack).expect("still decodes");
            let meta = meta.as_ref().unwrap();
            assert_eq!(
                (
                    &again.timestamp_ms,
                    &again.username,
                    &again.org_id,
                    &again.api_id,
                    &again.response_code
                ),
                (
                    &meta.timestamp_ms,
                    &meta.username,
                    &meta.org_id,
                    &meta.api_id,
                    &meta.response_code
                )
            );
        }
        // Nothing omitted (or too deep for rmpv to tell): the input as it is.
        _ if entries.is_ok() || omit.is_empty() => assert_eq!(msgpack, bytes),
        _ => {}
    }
});

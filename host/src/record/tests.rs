use super::*;
use crate::produce::encode::{encode_iam, encode_tyk, write_timestamp_ext, Sampler};

fn iam() -> Vec<u8> {
    encode_iam(&Sampler::new(7).iam(12, 1_763_700_000))
}

#[test]
fn iam_meta_is_extracted() {
    let bytes = iam();
    assert_eq!(
        bytes[1 + 10],
        0xd3,
        "TimeStamp must be a full-width int64 as iam writes it"
    );
    let m = decode(Schema::Iam, &bytes).unwrap();
    assert_eq!(m.timestamp_ms, Some(1_763_700_000_000));
    assert!(m.username.is_some());
    assert_eq!(
        m.id,
        decode(Schema::Iam, &bytes).unwrap().id,
        "id is stable"
    );
}

#[test]
fn tyk_meta_is_extracted() {
    let r = Sampler::new(1).tyk(5, 1_763_700_000);
    let m = decode(Schema::Tyk, &encode_tyk(&r)).unwrap();
    assert_eq!(
        m.timestamp_ms,
        Some(1_763_700_000_000 + i64::from(r.timestamp.1 / 1_000_000))
    );
    assert_eq!(m.api_id.as_deref(), Some(r.api_id.as_str()));
    assert_eq!(m.org_id.as_deref(), Some(r.org_id.as_str()));
    assert_eq!(m.response_code, Some(r.response_code));
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let good = iam();
    assert!(matches!(
        decode(Schema::Iam, &good[..good.len() / 2]),
        Err(DecodeError::Msgpack(_))
    ));
    assert!(matches!(
        decode(Schema::Iam, &[0x93, 1, 2, 3]),
        Err(DecodeError::NotAMap(_))
    ));
    let mut trailing = good.clone();
    trailing.push(0xc0);
    assert_eq!(
        decode(Schema::Iam, &trailing),
        Err(DecodeError::Trailing(1))
    );
    assert!(decode(Schema::Iam, b"").is_err());
    assert!(decode(Schema::Iam, b"not msgpack at all \xff\xfe").is_err());
    // A map whose Username is a number.
    let mut bad = Vec::new();
    rmp::encode::write_map_len(&mut bad, 1).unwrap();
    rmp::encode::write_str(&mut bad, "Username").unwrap();
    rmp::encode::write_sint(&mut bad, 5).unwrap();
    let e = decode(Schema::Iam, &bad).unwrap_err();
    assert!(e.to_string().contains("Username"), "{e}");
}

#[test]
fn every_timestamp_extension_form_parses() {
    for (secs, nanos, len) in [
        (1_700_000_000i64, 0u32, 4usize),
        (1_700_000_000, 5, 8),
        (-5, 7, 12),
        (1 << 35, 0, 12),
    ] {
        let mut out = Vec::new();
        write_timestamp_ext(&mut out, secs, nanos);
        let v = rmpv::decode::read_value_ref(&mut &out[..]).unwrap();
        let ValueRef::Ext(-1, data) = v else {
            panic!("not an ext")
        };
        assert_eq!(data.len(), len);
        assert_eq!(
            time::parse_timestamp_ext(data).unwrap(),
            time::Timestamp { secs, nanos }
        );
    }
    assert!(time::parse_timestamp_ext(&[0; 5]).is_err());
}

#[test]
fn json_has_producer_keys_and_rfc3339_times() {
    let r = Sampler::new(7).iam(12, 1_763_700_000);
    let mut out = Vec::new();
    write_json(Schema::Iam, &encode_iam(&r), &[], &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["TimeStamp"], "2025-11-21T04:40:00Z");
    assert_eq!(v["Username"], r.username.as_str());
    assert_eq!(v["Request"], r.request.as_str());
    assert_eq!(v["ExpireAt"], "2025-11-28T04:40:00Z");

    let t = Sampler::new(1).tyk(5, 1_763_700_000);
    let mut out = Vec::new();
    write_json(Schema::Tyk, &encode_tyk(&t), &["RawRequest"], &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert!(v["TimeStamp"]
        .as_str()
        .unwrap()
        .starts_with("2025-11-21T04:40:00."));
    assert!(v.get("RawRequest").is_none());
    assert_eq!(v["Geo"]["City"]["Names"]["en"], "London");
    assert_eq!(v["Latency"]["Total"], t.latency[0]);
}

#[test]
fn omitting_fields_keeps_other_bytes_exact() {
    let bytes = iam();
    let mut out = Vec::new();
    omit_fields(&bytes, Schema::Iam.detail_fields(), &mut out).unwrap();
    let entries = top_level_map(&out).unwrap();
    let keys: Vec<String> = entries
        .iter()
        .map(|(k, _)| match k {
            ValueRef::String(s) => s.as_str().unwrap().to_string(),
            other => panic!("non-string key {other:?}"),
        })
        .collect();
    assert_eq!(
        keys,
        [
            "TimeStamp",
            "Username",
            "Effect",
            "Conclusion",
            "Request",
            "ExpireAt"
        ]
    );
    assert!(
        out.windows(9).any(|w| w[0] == 0xd3),
        "int64 width preserved"
    );
    let mut same = Vec::new();
    omit_fields(&bytes, &[], &mut same).unwrap();
    assert_eq!(same, bytes);
}

/// The scanning decoder accepts and rejects what the full parse does.
#[test]
fn scanning_decode_agrees_with_the_full_parse() {
    let mut s = Sampler::new(7);
    let mut samples: Vec<Vec<u8>> = (0..50)
        .flat_map(|i| {
            [
                encode_iam(&s.iam(i, 1_763_700_000)),
                encode_tyk(&s.tyk(i, 1_763_700_000)),
            ]
        })
        .collect();
    // Every truncation and a few corruptions of one record of each kind.
    let (a, b) = (samples[0].clone(), samples[1].clone());
    for r in [a, b] {
        for cut in 0..r.len() {
            samples.push(r[..cut].to_vec());
        }
        for at in (0..r.len()).step_by(7) {
            for byte in [0xc1u8, 0xdf, 0xdd, 0x00, 0xff, 0xd9] {
                let mut c = r.clone();
                c[at] = byte;
                samples.push(c);
            }
        }
    }
    for r in &samples {
        for schema in [Schema::Iam, Schema::Tyk, Schema::Generic] {
            let full = top_level_map(r).map(|_| ());
            let fast = decode(schema, r);
            let semantic = matches!(
                fast,
                Err(DecodeError::FieldType { .. } | DecodeError::BadTime { .. })
            );
            match &full {
                Err(_) => assert!(
                    fast.is_err(),
                    "{schema:?} {r:02x?}: full {full:?}, fast {fast:?}"
                ),
                Ok(()) => assert!(
                    fast.is_ok() || semantic,
                    "{schema:?} {r:02x?}: fast {fast:?}"
                ),
            }
        }
    }
}

/// The streaming JSON encoder writes exactly what the serde version does.
#[test]
fn streaming_json_matches_the_serde_version() {
    let mut s = Sampler::new(3);
    let mut samples: Vec<(Schema, Vec<u8>)> = Vec::new();
    for i in 0..100 {
        samples.push((Schema::Iam, encode_iam(&s.iam(i, 1_763_700_000))));
        samples.push((Schema::Tyk, encode_tyk(&s.tyk(i, 1_763_700_000))));
    }
    // Strings that need escaping, invalid UTF-8, non-string keys, numbers,
    // binary, extensions, nil, nesting.
    let mut odd = Vec::new();
    rmp::encode::write_map_len(&mut odd, 13).unwrap();
    // Every integer form, at its edges, minimal or not.
    rmp::encode::write_str(&mut odd, "ints").unwrap();
    rmp::encode::write_array_len(&mut odd, 18).unwrap();
    rmp::encode::write_pfix(&mut odd, 0).unwrap();
    rmp::encode::write_pfix(&mut odd, 127).unwrap();
    rmp::encode::write_nfix(&mut odd, -1).unwrap();
    rmp::encode::write_nfix(&mut odd, -32).unwrap();
    rmp::encode::write_u8(&mut odd, 255).unwrap();
    rmp::encode::write_u16(&mut odd, 65_535).unwrap();
    rmp::encode::write_u32(&mut odd, u32::MAX).unwrap();
    rmp::encode::write_u64(&mut odd, i64::MAX as u64).unwrap();
    rmp::encode::write_u64(&mut odd, i64::MAX as u64 + 1).unwrap();
    rmp::encode::write_u64(&mut odd, u64::MAX).unwrap();
    rmp::encode::write_u64(&mut odd, 3).unwrap();
    rmp::encode::write_i8(&mut odd, i8::MIN).unwrap();
    rmp::encode::write_i8(&mut odd, 5).unwrap();
    rmp::encode::write_i16(&mut odd, i16::MIN).unwrap();
    rmp::encode::write_i32(&mut odd, i32::MIN).unwrap();
    rmp::encode::write_i64(&mut odd, i64::MIN).unwrap();
    rmp::encode::write_i64(&mut odd, -1).unwrap();
    rmp::encode::write_i32(&mut odd, 77).unwrap();
    rmp::encode::write_str(
        &mut odd,
        "quote\"back\\slash\u{1}\u{1f}\n\r\t\u{8}\u{c}\u{7f}é😀 long enough to use the word path",
    )
    .unwrap();
    rmp::encode::write_str(&mut odd, "\"\"\"\"\"\"\"\"\\\\\\\\\\\\\\\\ab\u{0}").unwrap();
    rmp::encode::write_uint(&mut odd, 7).unwrap();
    rmp::encode::write_sint(&mut odd, -123456789).unwrap();
    rmp::encode::write_str(&mut odd, "f").unwrap();
    rmp::encode::write_f64(&mut odd, 1.5e300).unwrap();
    rmp::encode::write_str(&mut odd, "g").unwrap();
    rmp::encode::write_f32(&mut odd, f32::NAN).unwrap();
    rmp::encode::write_str(&mut odd, "bin").unwrap();
    rmp::encode::write_bin(&mut odd, &[0, 1, 2, 255]).unwrap();
    rmp::encode::write_str(&mut odd, "bad").unwrap();
    odd.extend_from_slice(&[0xa3, 0xff, b'a', 0xfe]);
    odd.extend_from_slice(&[0xa3, 0xc3, 0x28, b'x']);
    rmp::encode::write_nil(&mut odd).unwrap();
    rmp::encode::write_str(&mut odd, "TimeStamp").unwrap();
    rmp::encode::write_str(&mut odd, "not a time").unwrap();
    rmp::encode::write_str(&mut odd, "ExpireAt").unwrap();
    rmp::encode::write_nil(&mut odd).unwrap();
    rmp::encode::write_str(&mut odd, "ext").unwrap();
    write_timestamp_ext(&mut odd, 1_763_700_000, 5);
    rmp::encode::write_str(&mut odd, "other ext").unwrap();
    rmp::encode::write_ext_meta(&mut odd, 3, 5).unwrap();
    odd.extend_from_slice(&[1, 2, 3, 4, 5]);
    rmp::encode::write_str(&mut odd, "nested").unwrap();
    rmp::encode::write_array_len(&mut odd, 3).unwrap();
    rmp::encode::write_map_len(&mut odd, 1).unwrap();
    rmp::encode::write_uint(&mut odd, 1).unwrap();
    rmp::encode::write_bool(&mut odd, true).unwrap();
    rmp::encode::write_array_len(&mut odd, 0).unwrap();
    rmp::encode::write_bool(&mut odd, false).unwrap();
    for schema in [Schema::Iam, Schema::Tyk, Schema::Generic] {
        samples.push((schema, odd.clone()));
    }
    let omits: [&[&str]; 3] = [
        &[],
        Schema::Iam.detail_fields(),
        Schema::Tyk.detail_fields(),
    ];
    for (schema, r) in &samples {
        for omit in omits {
            let (mut fast, mut tree) = (b"prefix".to_vec(), b"prefix".to_vec());
            let a = write_json(*schema, r, omit, &mut fast);
            let b = json::write_json_tree(*schema, r, omit, &mut tree);
            assert_eq!(a.is_ok(), b.is_ok(), "{a:?} {b:?}");
            if a.is_ok() {
                assert_eq!(
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&tree)
                );
            } else {
                assert_eq!(fast, b"prefix");
            }
        }
        // Truncated records fail in both, leaving nothing behind.
        for cut in [1, r.len() / 2, r.len() - 1] {
            let mut fast = Vec::new();
            assert!(write_json(*schema, &r[..cut], &[], &mut fast).is_err());
            assert!(fast.is_empty());
        }
    }
}

/// A map whose keys are not strings is a valid record: the key and its
/// value are both skipped (issue 22, item 6).
#[test]
fn non_string_keys_are_skipped_with_their_values() {
    // {1: "a"} as a generic record.
    assert!(decode(Schema::Generic, &[0x81, 0x01, 0xa1, b'a']).is_ok());
    let base = iam();
    let want = decode(Schema::Iam, &base).unwrap();
    // Each odd key, with a value after it, appended to an iam record.
    let odd_keys: [&[u8]; 5] = [
        &[0x05],                               // int
        &[0xc0],                               // nil
        &[0x81, 0xa1, b'k', 0x01],             // map
        &[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0], // float 1.5
        &[0x92, 0x01, 0x02],                   // array
    ];
    for key in odd_keys {
        let mut r = vec![base[0] + 1];
        r.extend_from_slice(key);
        r.extend_from_slice(&[0xa3, b'v', b'a', b'l']);
        r.extend_from_slice(&base[1..]);
        let m = decode(Schema::Iam, &r).unwrap_or_else(|e| panic!("{key:02x?}: {e}"));
        assert_eq!(m.username, want.username);
        assert_eq!(m.timestamp_ms, want.timestamp_ms);
        let mut json = Vec::new();
        write_json(Schema::Iam, &r, &[], &mut json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 9, "{v}");
    }
}

fn iam_with_time(time: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    rmp::encode::write_map_len(&mut r, 2).unwrap();
    rmp::encode::write_str(&mut r, "TimeStamp").unwrap();
    r.extend_from_slice(time);
    rmp::encode::write_str(&mut r, "Username").unwrap();
    rmp::encode::write_str(&mut r, "u").unwrap();
    r
}

fn int_time(secs: i64) -> Vec<u8> {
    let mut t = Vec::new();
    rmp::encode::write_i64(&mut t, secs).unwrap();
    t
}

fn ext_time(secs: i64, nanos: u32) -> Vec<u8> {
    let mut t = Vec::new();
    write_timestamp_ext(&mut t, secs, nanos);
    t
}

fn array_time(secs: i64, nanos: u32) -> Vec<u8> {
    let mut t = vec![0x92];
    rmp::encode::write_sint(&mut t, secs).unwrap();
    rmp::encode::write_uint(&mut t, u64::from(nanos)).unwrap();
    t
}

/// A record's own time is checked, never wrapped: outside years
/// 0000–9999 it is a bad time, in every encoding (issue 22, item 7).
#[test]
fn out_of_range_event_times_are_bad_times() {
    assert_eq!(
        time::Timestamp {
            secs: i64::MAX,
            nanos: 0
        }
        .unix_ms(),
        None
    );
    assert_eq!(
        time::Timestamp {
            secs: 9_223_372_036_854_776,
            nanos: 0
        }
        .unix_ms(),
        None
    );
    assert_eq!(
        time::Timestamp {
            secs: -1,
            nanos: 500_000_000
        }
        .unix_ms(),
        Some(-500)
    );
    for (time, want) in [
        (int_time(time::MAX_SECS), Some(time::MAX_SECS * 1000)),
        (int_time(time::MIN_SECS), Some(time::MIN_SECS * 1000)),
        (
            ext_time(time::MAX_SECS, 999_000_000),
            Some(time::MAX_SECS * 1000 + 999),
        ),
        (array_time(time::MIN_SECS, 0), Some(time::MIN_SECS * 1000)),
        (vec![0xc0], None),
    ] {
        let m = decode(Schema::Iam, &iam_with_time(&time)).unwrap();
        assert_eq!(m.timestamp_ms, want, "{time:02x?}");
        assert_eq!(
            decode(Schema::Tyk, &iam_with_time(&time))
                .unwrap()
                .timestamp_ms,
            want
        );
    }
    let mut huge = vec![0xcf];
    huge.extend_from_slice(&u64::MAX.to_be_bytes());
    for time in [
        int_time(i64::MAX),
        int_time(9_223_372_036_854_776),
        int_time(time::MAX_SECS + 1),
        int_time(time::MIN_SECS - 1),
        int_time(i64::MIN),
        huge,
        ext_time(time::MAX_SECS + 1, 0),
        ext_time(i64::MAX, 0),
        ext_time(i64::MIN, 5),
        array_time(i64::MAX, 0),
        array_time(9_223_372_036_854_776, 0),
        array_time(time::MIN_SECS - 1, 999_999_999),
    ] {
        for schema in [Schema::Iam, Schema::Tyk] {
            let e = decode(schema, &iam_with_time(&time)).unwrap_err();
            assert!(
                matches!(&e, DecodeError::BadTime { field: "TimeStamp", message } if message.contains("out of range")),
                "{time:02x?}: {e}"
            );
        }
        // Generic records have no time of their own.
        assert!(decode(Schema::Generic, &iam_with_time(&time)).is_ok());
    }
}

/// Header counts cost nothing: a `TimeStamp` array claiming 10 million
/// nils (all present) is refused without being built, and so is a record
/// that is such an array (issue 22, item 1).
#[test]
fn claimed_counts_are_not_built() {
    let n = 10_000_000u32;
    let mut time = vec![0xdd];
    time.extend_from_slice(&n.to_be_bytes());
    time.resize(time.len() + n as usize, 0xc0);
    let r = iam_with_time(&time);
    let e = decode(Schema::Iam, &r).unwrap_err();
    assert!(matches!(e, DecodeError::BadTime { .. }), "{e}");
    assert!(e.to_string().contains("found an array"), "{e}");
    assert_eq!(
        decode(Schema::Iam, &time),
        Err(DecodeError::NotAMap("an array"))
    );
    // The same array in a field the host does not read is skipped.
    let mut r = Vec::new();
    rmp::encode::write_map_len(&mut r, 1).unwrap();
    rmp::encode::write_str(&mut r, "Other").unwrap();
    r.extend_from_slice(&time);
    assert!(decode(Schema::Iam, &r).is_ok());
    // Claims beyond the bytes present are truncation, found at once.
    for claim in [
        &[0xdf, 0xff, 0xff, 0xff, 0xff][..],
        &[0xdd, 0xff, 0xff, 0xff, 0xff],
    ] {
        let r = iam_with_time(claim);
        assert!(decode(Schema::Iam, &r).is_err());
        assert!(decode(Schema::Iam, claim).is_err());
        assert!(write_json(Schema::Iam, &r, &[], &mut Vec::new()).is_err());
        let mut top = claim.to_vec();
        top.extend_from_slice(&[0xa1, b'a', 0x01, 0xa1, b'a', 0x02]);
        assert!(decode(Schema::Iam, &top).is_err());
        assert!(write_json(Schema::Iam, &top, &[], &mut Vec::new()).is_err());
        assert!(omit_fields(&top, &["a"], &mut Vec::new()).is_err());
    }
}

/// Repeated top-level keys: host filters read the last value, and the
/// JSON keeps only that one, where it stands (issue 22, item 9).
#[test]
fn repeated_keys_keep_their_last_value_in_json() {
    let mut r = Vec::new();
    rmp::encode::write_map_len(&mut r, 5).unwrap();
    for (k, v) in [
        ("Username", "a"),
        ("x", "1"),
        ("Username", "b"),
        ("Policies", "p"),
        ("y", "2"),
    ] {
        rmp::encode::write_str(&mut r, k).unwrap();
        rmp::encode::write_str(&mut r, v).unwrap();
    }
    assert_eq!(
        decode(Schema::Iam, &r).unwrap().username.as_deref(),
        Some("b")
    );
    let mut out = b"prefix".to_vec();
    write_json(Schema::Iam, &r, &[], &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"prefix{"x":"1","Username":"b","Policies":"p","y":"2"}"#
    );
    let mut out = Vec::new();
    write_json(Schema::Iam, &r, Schema::Iam.detail_fields(), &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"x":"1","Username":"b","y":"2"}"#
    );
    // Keys that write the same JSON text repeat too: 1 and "1".
    let mut r = Vec::new();
    rmp::encode::write_map_len(&mut r, 2).unwrap();
    rmp::encode::write_uint(&mut r, 1).unwrap();
    rmp::encode::write_str(&mut r, "int").unwrap();
    rmp::encode::write_str(&mut r, "1").unwrap();
    rmp::encode::write_str(&mut r, "str").unwrap();
    let mut out = Vec::new();
    write_json(Schema::Generic, &r, &[], &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), r#"{"1":"str"}"#);
    // Many keys, one repeated at the end: past the list, into the set.
    let mut r = Vec::new();
    rmp::encode::write_map_len(&mut r, 101).unwrap();
    for i in 0..100 {
        rmp::encode::write_str(&mut r, &format!("k{i}")).unwrap();
        rmp::encode::write_uint(&mut r, i).unwrap();
    }
    rmp::encode::write_str(&mut r, "k7").unwrap();
    rmp::encode::write_uint(&mut r, 700).unwrap();
    let mut out = Vec::new();
    write_json(Schema::Generic, &r, &[], &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 100);
    assert_eq!(v["k7"], 700);
    let mut tree = Vec::new();
    json::write_json_tree(Schema::Generic, &r, &[], &mut tree).unwrap();
    assert_eq!(out, tree);
}

/// Maps as keys of maps as keys…: each level escapes the text of the one
/// inside again, doubling it. The JSON's size is bounded by the record's,
/// so such a record is an error, not gigabytes.
#[test]
fn json_size_is_bounded_by_the_records() {
    // Innermost key "\"", then 40 levels of {<key>: 1}.
    let mut key = vec![0xa1, b'"'];
    for _ in 0..40 {
        let mut k = vec![0x81];
        k.extend_from_slice(&key);
        k.push(0x01);
        key = k;
    }
    let mut r = vec![0x81];
    r.extend_from_slice(&key);
    r.push(0x01);
    let mut out = b"prefix".to_vec();
    assert_eq!(
        write_json(Schema::Generic, &r, &[], &mut out),
        Err(DecodeError::JsonTooLarge)
    );
    assert_eq!(out, b"prefix");
    // A few levels are fine, and as the tree version writes them.
    let r = [0x81, 0x81, 0x81, 0xa1, b'"', 0x01, 0x01, 0x01];
    let (mut fast, mut tree) = (Vec::new(), Vec::new());
    write_json(Schema::Generic, &r, &[], &mut fast).unwrap();
    json::write_json_tree(Schema::Generic, &r, &[], &mut tree).unwrap();
    assert_eq!(fast, tree);
    assert_eq!(
        String::from_utf8(fast).unwrap(),
        r#"{"{\"{\\\"\\\\\\\"\\\":1}\":1}":1}"#
    );
}

/// A record none of whose keys are omitted is delivered exactly as
/// written, even with a map header wider than needed.
#[test]
fn omitting_nothing_keeps_a_wide_map_header() {
    let r = [0xde, 0x00, 0x01, 0xa1, b'a', 0x01];
    let mut out = Vec::new();
    omit_fields(&r, Schema::Iam.detail_fields(), &mut out).unwrap();
    assert_eq!(out, r);
    let mut out = Vec::new();
    omit_fields(&r, &["a"], &mut out).unwrap();
    assert_eq!(out, [0x80]);
}

/// Past the few keys compared directly, repeats are found by hash: a map
/// of 40 keys repeating its 3rd (and its 35th) as the last two.
#[test]
fn repeated_keys_are_found_in_wide_maps_too() {
    let mut r = Vec::new();
    rmp::encode::write_map_len(&mut r, 42).unwrap();
    for i in 0..40 {
        rmp::encode::write_str(&mut r, &format!("k{i}")).unwrap();
        rmp::encode::write_uint(&mut r, i).unwrap();
    }
    for (k, v) in [("k3", 100), ("k35", 135)] {
        rmp::encode::write_str(&mut r, k).unwrap();
        rmp::encode::write_uint(&mut r, v).unwrap();
    }
    let mut out = Vec::new();
    write_json(Schema::Generic, &r, &[], &mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let m = v.as_object().unwrap();
    assert_eq!(m.len(), 40, "{v}");
    assert_eq!(m["k3"], 100);
    assert_eq!(m["k35"], 135);
    assert_eq!(m["k39"], 39);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.matches("\"k3\"").count(), 1, "{text}");
    assert_eq!(text.matches("\"k35\"").count(), 1, "{text}");
}

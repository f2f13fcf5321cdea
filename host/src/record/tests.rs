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

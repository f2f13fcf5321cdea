//! Converting generic MessagePack values to JSON.

use rmpv::Value;
use serde_json::{Map, Number, Value as Json};

use crate::timestamp::MSGPACK_TIMESTAMP_EXT;
use crate::Timestamp;

/// Converts a MessagePack value to JSON: binary becomes base64 text,
/// timestamps (extension -1) RFC 3339 text, other extensions the base64 of
/// their data, non-finite floats null, invalid UTF-8 strings are repaired
/// lossily, and non-string map keys become their JSON text.
pub(crate) fn to_json(value: Value) -> Json {
    match value {
        Value::Nil => Json::Null,
        Value::Boolean(b) => Json::Bool(b),
        Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => Json::from(u),
            (None, Some(s)) => Json::from(s),
            (None, None) => Json::Null,
        },
        Value::F32(f) => Number::from_f64(f64::from(f)).map_or(Json::Null, Json::Number),
        Value::F64(f) => Number::from_f64(f).map_or(Json::Null, Json::Number),
        Value::String(s) => Json::String(match String::from_utf8(s.into_bytes()) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }),
        Value::Binary(b) => Json::String(base64(&b)),
        Value::Array(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Value::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (k, v) in entries {
                let key = match to_json(k) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, to_json(v));
            }
            Json::Object(map)
        }
        Value::Ext(MSGPACK_TIMESTAMP_EXT, data) => match Timestamp::from_msgpack_ext(&data) {
            Ok(t) => Json::String(t.to_rfc3339()),
            Err(_) => Json::String(base64(&data)),
        },
        Value::Ext(_, data) => Json::String(base64(&data)),
    }
}

/// Standard base64 with padding.
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_known_answers() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }

    #[test]
    fn converts_like_the_host_json_encoding() {
        let v = Value::Map(vec![
            (Value::from("bin"), Value::Binary(b"foo".to_vec())),
            (
                Value::from("at"),
                Value::Ext(-1, 1_795_240_061u32.to_be_bytes().to_vec()),
            ),
            (Value::from("other"), Value::Ext(5, vec![1])),
            (Value::from(1), Value::F64(f64::NAN)),
            (Value::from("neg"), Value::from(-2)),
            (Value::from("big"), Value::from(u64::MAX)),
            (Value::from("f32"), Value::F32(0.5)),
        ]);
        assert_eq!(
            to_json(v),
            json!({
                "bin": "Zm9v",
                "at": "2026-11-21T05:47:41Z",
                "other": "AQ==",
                "1": null,
                "neg": -2,
                "big": u64::MAX,
                "f32": 0.5,
            })
        );
    }
}

//! `payload = "json"`: a record as the host's JSON encoding writes it. The
//! SDK converts MessagePack generically; the host also turns the schema's
//! top-level time fields into RFC 3339 text whatever their wire form
//! (iam's integer seconds, Tyk's `[seconds, nanoseconds]`), so this does
//! the same and a JSON reader sees one form of time.

use pumphouse_sdk::serde_json::Value;
use pumphouse_sdk::{Schema, Timestamp};

/// Top-level fields holding a time, per schema (as in the host).
fn time_fields(schema: Schema) -> &'static [&'static str] {
    match schema {
        Schema::Iam | Schema::Tyk => &["TimeStamp", "ExpireAt"],
        Schema::Generic => &[],
    }
}

/// Rewrites the schema's time fields of `record` as RFC 3339 text. Values
/// in no known time form are left as they are, as the host does.
pub fn normalize_times(record: &mut Value, schema: Schema) {
    let Value::Object(map) = record else { return };
    for field in time_fields(schema) {
        let Some(value) = map.get_mut(*field) else {
            continue;
        };
        let time = match &*value {
            Value::Number(n) => n.as_i64().map(Timestamp::from_unix_seconds),
            Value::Array(parts) => match parts.as_slice() {
                [Value::Number(secs), Value::Number(nanos)] => {
                    match (secs.as_i64(), nanos.as_u64()) {
                        (Some(s), Some(ns)) if ns < 1_000_000_000 => {
                            Some(Timestamp::new(s, ns as u32))
                        }
                        _ => None,
                    }
                }
                _ => None,
            },
            // Timestamp extensions already arrive as RFC 3339 text.
            _ => None,
        };
        if let Some(t) = time {
            *value = Value::String(t.to_rfc3339());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;

    #[test]
    fn times_become_rfc3339_in_every_wire_form() {
        let mut iam = json!({"TimeStamp": 1_763_700_000, "ExpireAt": "2025-11-28T04:40:00Z", "Username": "a"});
        normalize_times(&mut iam, Schema::Iam);
        assert_eq!(
            iam,
            json!({"TimeStamp": "2025-11-21T04:40:00Z", "ExpireAt": "2025-11-28T04:40:00Z", "Username": "a"})
        );
        let mut tyk =
            json!({"TimeStamp": [1_763_700_000, 250_000_000], "ExpireAt": [1, 0], "Day": 21});
        normalize_times(&mut tyk, Schema::Tyk);
        assert_eq!(
            tyk,
            json!({"TimeStamp": "2025-11-21T04:40:00.25Z", "ExpireAt": "1970-01-01T00:00:01Z", "Day": 21})
        );
    }

    #[test]
    fn other_values_and_schemas_are_left_alone() {
        let odd = json!({"TimeStamp": [1, 2_000_000_000], "ExpireAt": null});
        let mut v = odd.clone();
        normalize_times(&mut v, Schema::Tyk);
        assert_eq!(v, odd);
        let mut g = json!({"TimeStamp": 5});
        normalize_times(&mut g, Schema::Generic);
        assert_eq!(g, json!({"TimeStamp": 5}));
    }
}

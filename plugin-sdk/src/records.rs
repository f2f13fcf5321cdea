//! Typed views of the records the known producers write.
//!
//! Field names are the producers' map keys. Every field is optional on the
//! wire (missing and nil values give the field's default), unknown keys are
//! ignored, and times accept every form [`Timestamp`] does. Serializing to
//! MessagePack writes maps the way the producers do; serializing to JSON
//! writes times as RFC 3339 strings, like the host's JSON encoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::timestamp::{seconds_nanos, unix_seconds};
use crate::Timestamp;

/// Deserializes `T`, reading nil / null as `T::default()` (Go writes nil
/// for empty slices, maps and pointers).
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An iam-authz-server analytics record (schema `iam`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IamRecord {
    /// `TimeStamp`: integer unix seconds on the wire.
    #[serde(rename = "TimeStamp", with = "unix_seconds")]
    pub timestamp: Timestamp,
    /// `Username`.
    #[serde(rename = "Username", deserialize_with = "nullable")]
    pub username: String,
    /// `Effect`, e.g. `allow` or `deny`.
    #[serde(rename = "Effect", deserialize_with = "nullable")]
    pub effect: String,
    /// `Conclusion`, the decision's explanation.
    #[serde(rename = "Conclusion", deserialize_with = "nullable")]
    pub conclusion: String,
    /// `Request`: the authorization request, as JSON text.
    #[serde(rename = "Request", deserialize_with = "nullable")]
    pub request: String,
    /// `Policies`: the policies considered, as JSON text.
    #[serde(rename = "Policies", deserialize_with = "nullable")]
    pub policies: String,
    /// `Deciders`: the deciding policies, as JSON text.
    #[serde(rename = "Deciders", deserialize_with = "nullable")]
    pub deciders: String,
    /// `ExpireAt`: a MessagePack timestamp on the wire.
    #[serde(rename = "ExpireAt")]
    pub expire_at: Timestamp,
}

/// A Tyk Gateway analytics record (schema `tyk`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TykRecord {
    /// `Method`, the HTTP method.
    #[serde(rename = "Method", deserialize_with = "nullable")]
    pub method: String,
    /// `Host`.
    #[serde(rename = "Host", deserialize_with = "nullable")]
    pub host: String,
    /// `Path`.
    #[serde(rename = "Path", deserialize_with = "nullable")]
    pub path: String,
    /// `RawPath`.
    #[serde(rename = "RawPath", deserialize_with = "nullable")]
    pub raw_path: String,
    /// `ContentLength`.
    #[serde(rename = "ContentLength", deserialize_with = "nullable")]
    pub content_length: i64,
    /// `UserAgent`.
    #[serde(rename = "UserAgent", deserialize_with = "nullable")]
    pub user_agent: String,
    /// `Day` of the month.
    #[serde(rename = "Day", deserialize_with = "nullable")]
    pub day: i64,
    /// `Month`, 1 to 12.
    #[serde(rename = "Month", deserialize_with = "nullable")]
    pub month: i64,
    /// `Year`.
    #[serde(rename = "Year", deserialize_with = "nullable")]
    pub year: i64,
    /// `Hour`.
    #[serde(rename = "Hour", deserialize_with = "nullable")]
    pub hour: i64,
    /// `ResponseCode`, the HTTP status.
    #[serde(rename = "ResponseCode", deserialize_with = "nullable")]
    pub response_code: i64,
    /// `APIKey`.
    #[serde(rename = "APIKey", deserialize_with = "nullable")]
    pub api_key: String,
    /// `TimeStamp`: `[seconds, nanoseconds]` on the wire.
    #[serde(rename = "TimeStamp", with = "seconds_nanos")]
    pub timestamp: Timestamp,
    /// `APIVersion`.
    #[serde(rename = "APIVersion", deserialize_with = "nullable")]
    pub api_version: String,
    /// `APIName`.
    #[serde(rename = "APIName", deserialize_with = "nullable")]
    pub api_name: String,
    /// `APIID`.
    #[serde(rename = "APIID", deserialize_with = "nullable")]
    pub api_id: String,
    /// `OrgID`.
    #[serde(rename = "OrgID", deserialize_with = "nullable")]
    pub org_id: String,
    /// `OauthID`.
    #[serde(rename = "OauthID", deserialize_with = "nullable")]
    pub oauth_id: String,
    /// `RequestTime`, in milliseconds.
    #[serde(rename = "RequestTime", deserialize_with = "nullable")]
    pub request_time: i64,
    /// `RawRequest`, base64 text.
    #[serde(rename = "RawRequest", deserialize_with = "nullable")]
    pub raw_request: String,
    /// `RawResponse`, base64 text.
    #[serde(rename = "RawResponse", deserialize_with = "nullable")]
    pub raw_response: String,
    /// `IPAddress`.
    #[serde(rename = "IPAddress", deserialize_with = "nullable")]
    pub ip_address: String,
    /// `Geo`.
    #[serde(rename = "Geo", deserialize_with = "nullable")]
    pub geo: Geo,
    /// `Network`.
    #[serde(rename = "Network", deserialize_with = "nullable")]
    pub network: Network,
    /// `Latency`.
    #[serde(rename = "Latency", deserialize_with = "nullable")]
    pub latency: Latency,
    /// `Tags`.
    #[serde(rename = "Tags", deserialize_with = "nullable")]
    pub tags: Vec<String>,
    /// `Alias`.
    #[serde(rename = "Alias", deserialize_with = "nullable")]
    pub alias: String,
    /// `TrackPath`.
    #[serde(rename = "TrackPath", deserialize_with = "nullable")]
    pub track_path: bool,
    /// `ExpireAt`: `[seconds, nanoseconds]` on the wire.
    #[serde(rename = "ExpireAt", with = "seconds_nanos")]
    pub expire_at: Timestamp,
    /// `ApiSchema`.
    #[serde(rename = "ApiSchema", deserialize_with = "nullable")]
    pub api_schema: String,
    /// `OriginalPath`.
    #[serde(rename = "OriginalPath", deserialize_with = "nullable")]
    pub original_path: String,
    /// `ListenPath`.
    #[serde(rename = "ListenPath", deserialize_with = "nullable")]
    pub listen_path: String,
    /// `GraphQLStats`, kept as a generic value when present.
    #[serde(
        rename = "GraphQLStats",
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub graphql_stats: Option<rmpv::Value>,
    /// `MCPStats`, kept as a generic value when present.
    #[serde(
        rename = "MCPStats",
        deserialize_with = "nullable",
        skip_serializing_if = "Option::is_none"
    )]
    pub mcp_stats: Option<rmpv::Value>,
}

/// Tyk's `Geo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Geo {
    /// `Country`.
    #[serde(rename = "Country", deserialize_with = "nullable")]
    pub country: Country,
    /// `City`.
    #[serde(rename = "City", deserialize_with = "nullable")]
    pub city: City,
    /// `Location`.
    #[serde(rename = "Location", deserialize_with = "nullable")]
    pub location: Location,
}

/// Tyk's `Geo.Country`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Country {
    /// `ISOCode`, e.g. `DE`.
    #[serde(rename = "ISOCode", deserialize_with = "nullable")]
    pub iso_code: String,
}

/// Tyk's `Geo.City`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct City {
    /// `GeoNameID`.
    #[serde(rename = "GeoNameID", deserialize_with = "nullable")]
    pub geo_name_id: u64,
    /// `Names`, by language code.
    #[serde(rename = "Names", deserialize_with = "nullable")]
    pub names: BTreeMap<String, String>,
}

/// Tyk's `Geo.Location`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Location {
    /// `Latitude`.
    #[serde(rename = "Latitude", deserialize_with = "nullable")]
    pub latitude: f64,
    /// `Longitude`.
    #[serde(rename = "Longitude", deserialize_with = "nullable")]
    pub longitude: f64,
    /// `TimeZone`, e.g. `Europe/Berlin`.
    #[serde(rename = "TimeZone", deserialize_with = "nullable")]
    pub time_zone: String,
}

/// Tyk's `Network`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// `OpenConnections`.
    #[serde(rename = "OpenConnections", deserialize_with = "nullable")]
    pub open_connections: i64,
    /// `ClosedConnection`.
    #[serde(rename = "ClosedConnection", deserialize_with = "nullable")]
    pub closed_connection: i64,
    /// `BytesIn`.
    #[serde(rename = "BytesIn", deserialize_with = "nullable")]
    pub bytes_in: i64,
    /// `BytesOut`.
    #[serde(rename = "BytesOut", deserialize_with = "nullable")]
    pub bytes_out: i64,
}

/// Tyk's `Latency`, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Latency {
    /// `Total`.
    #[serde(rename = "Total", deserialize_with = "nullable")]
    pub total: i64,
    /// `Upstream`.
    #[serde(rename = "Upstream", deserialize_with = "nullable")]
    pub upstream: i64,
    /// `Gateway`.
    #[serde(rename = "Gateway", deserialize_with = "nullable")]
    pub gateway: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use rmpv::Value;

    use crate::testing::msgpack_value as encode;

    fn map(entries: Vec<(&str, Value)>) -> Value {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect(),
        )
    }

    fn ext8(secs: u64, nanos: u64) -> Value {
        Value::Ext(-1, ((nanos << 34) | secs).to_be_bytes().to_vec())
    }

    fn sample_iam() -> IamRecord {
        IamRecord {
            timestamp: Timestamp::from_unix_seconds(1_795_240_061),
            username: "alice".into(),
            effect: "allow".into(),
            conclusion: "policies matched".into(),
            request: r#"{"resource":"articles:1"}"#.into(),
            policies: "[]".into(),
            deciders: r#"["p1"]"#.into(),
            expire_at: Timestamp::new(1_795_843_661, 250),
        }
    }

    fn sample_tyk() -> TykRecord {
        TykRecord {
            method: "GET".into(),
            host: "api.example.test".into(),
            path: "/v1/users".into(),
            raw_path: "/v1/users".into(),
            content_length: 0,
            user_agent: "curl/8".into(),
            day: 21,
            month: 11,
            year: 2026,
            hour: 5,
            response_code: 200,
            api_key: "key-1".into(),
            timestamp: Timestamp::new(1_795_240_061, 123_000_000),
            api_version: "v1".into(),
            api_name: "users".into(),
            api_id: "a1".into(),
            org_id: "o1".into(),
            oauth_id: String::new(),
            request_time: 12,
            raw_request: "R0VUIC8=".into(),
            raw_response: "SFRUUC8xLjE=".into(),
            ip_address: "192.0.2.7".into(),
            geo: Geo {
                country: Country {
                    iso_code: "DE".into(),
                },
                city: City {
                    geo_name_id: 2_950_159,
                    names: [("en".to_owned(), "Berlin".to_owned())].into(),
                },
                location: Location {
                    latitude: 52.52,
                    longitude: 13.405,
                    time_zone: "Europe/Berlin".into(),
                },
            },
            network: Network {
                open_connections: 1,
                closed_connection: 1,
                bytes_in: 300,
                bytes_out: 70_000,
            },
            latency: Latency {
                total: 12,
                upstream: 10,
                gateway: 2,
            },
            tags: vec!["key-1".into(), "org-o1".into()],
            alias: "alias".into(),
            track_path: true,
            expire_at: Timestamp::from_unix_seconds(1_797_832_061),
            api_schema: String::new(),
            original_path: "/users".into(),
            listen_path: "/v1/".into(),
            graphql_stats: None,
            mcp_stats: None,
        }
    }

    #[test]
    fn iam_from_producer_bytes() {
        // As iam-authz-server writes it, plus a key this SDK does not know.
        let bytes = encode(&map(vec![
            ("TimeStamp", Value::from(1_795_240_061u32)),
            ("Username", Value::from("alice")),
            ("Effect", Value::from("allow")),
            ("Conclusion", Value::from("policies matched")),
            ("Request", Value::from(r#"{"resource":"articles:1"}"#)),
            ("Policies", Value::from("[]")),
            ("Deciders", Value::from(r#"["p1"]"#)),
            ("ExpireAt", ext8(1_795_843_661, 250)),
            (
                "Unknown",
                Value::Array(vec![Value::Nil, Value::Ext(9, vec![1])]),
            ),
        ]));
        let rec: IamRecord = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(rec, sample_iam());
    }

    #[test]
    fn iam_every_expire_at_form() {
        let mut twelve = 7u32.to_be_bytes().to_vec();
        twelve.extend_from_slice(&(-62_135_596_800i64).to_be_bytes());
        for (value, expected) in [
            (
                Value::Ext(-1, 1_795_240_061u32.to_be_bytes().to_vec()),
                Timestamp::from_unix_seconds(1_795_240_061),
            ),
            (ext8(1_795_240_061, 9), Timestamp::new(1_795_240_061, 9)),
            (Value::Ext(-1, twelve), Timestamp::new(-62_135_596_800, 7)),
            (
                Value::Array(vec![Value::from(5), Value::from(6)]),
                Timestamp::new(5, 6),
            ),
            (
                Value::from("2026-11-21T05:47:41Z"),
                Timestamp::from_unix_seconds(1_795_240_061),
            ),
            (Value::Nil, Timestamp::UNIX_EPOCH),
        ] {
            let bytes = encode(&map(vec![("ExpireAt", value.clone())]));
            let rec: IamRecord = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(rec.expire_at, expected, "{value:?}");
        }
    }

    #[test]
    fn missing_and_nil_fields_take_defaults() {
        let bytes = encode(&map(vec![
            ("Username", Value::Nil),
            ("Effect", Value::from("deny")),
        ]));
        let rec: IamRecord = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            rec,
            IamRecord {
                effect: "deny".into(),
                ..Default::default()
            }
        );

        // Go writes nil slices, maps and strings; and nested structs may be
        // nil or partial.
        let bytes = encode(&map(vec![
            ("Tags", Value::Nil),
            ("Method", Value::Nil),
            ("ResponseCode", Value::Nil),
            ("TrackPath", Value::Nil),
            ("TimeStamp", Value::Nil),
            ("Latency", Value::Nil),
            (
                "Geo",
                map(vec![
                    ("Country", Value::Nil),
                    (
                        "City",
                        map(vec![("Names", Value::Nil), ("GeoNameID", Value::from(3))]),
                    ),
                ]),
            ),
            ("Network", map(vec![("BytesIn", Value::from(-1))])),
        ]));
        let rec: TykRecord = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(rec.geo.city.geo_name_id, 3);
        assert_eq!(rec.network.bytes_in, -1);
        assert_eq!(
            rec,
            TykRecord {
                geo: Geo {
                    city: City {
                        geo_name_id: 3,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                network: Network {
                    bytes_in: -1,
                    ..Default::default()
                },
                ..Default::default()
            }
        );

        let rec: TykRecord =
            serde_json::from_str(r#"{"Tags": null, "Geo": null, "X": 1}"#).unwrap();
        assert_eq!(rec, TykRecord::default());
        let rec: IamRecord = rmp_serde::from_slice(&encode(&map(vec![]))).unwrap();
        assert_eq!(rec, IamRecord::default());
    }

    #[test]
    fn tyk_from_producer_bytes() {
        // Tyk's layout: times as [seconds, nanoseconds], nested structs as
        // maps, integers in their smallest encoding, extra stats present.
        let bytes = encode(&map(vec![
            ("Method", Value::from("GET")),
            ("Host", Value::from("api.example.test")),
            ("Path", Value::from("/v1/users")),
            ("RawPath", Value::from("/v1/users")),
            ("ContentLength", Value::from(0)),
            ("UserAgent", Value::from("curl/8")),
            ("Day", Value::from(21)),
            ("Month", Value::from(11)),
            ("Year", Value::from(2026)),
            ("Hour", Value::from(5)),
            ("ResponseCode", Value::from(200)),
            ("APIKey", Value::from("key-1")),
            (
                "TimeStamp",
                Value::Array(vec![Value::from(1_795_240_061), Value::from(123_000_000)]),
            ),
            ("APIVersion", Value::from("v1")),
            ("APIName", Value::from("users")),
            ("APIID", Value::from("a1")),
            ("OrgID", Value::from("o1")),
            ("OauthID", Value::from("")),
            ("RequestTime", Value::from(12)),
            ("RawRequest", Value::from("R0VUIC8=")),
            ("RawResponse", Value::from("SFRUUC8xLjE=")),
            ("IPAddress", Value::from("192.0.2.7")),
            (
                "Geo",
                map(vec![
                    ("Country", map(vec![("ISOCode", Value::from("DE"))])),
                    (
                        "City",
                        map(vec![
                            ("GeoNameID", Value::from(2_950_159)),
                            ("Names", map(vec![("en", Value::from("Berlin"))])),
                        ]),
                    ),
                    (
                        "Location",
                        map(vec![
                            ("Latitude", Value::F64(52.52)),
                            ("Longitude", Value::F64(13.405)),
                            ("TimeZone", Value::from("Europe/Berlin")),
                        ]),
                    ),
                ]),
            ),
            (
                "Network",
                map(vec![
                    ("OpenConnections", Value::from(1)),
                    ("ClosedConnection", Value::from(1)),
                    ("BytesIn", Value::from(300)),
                    ("BytesOut", Value::from(70_000)),
                ]),
            ),
            (
                "Latency",
                map(vec![
                    ("Total", Value::from(12)),
                    ("Upstream", Value::from(10)),
                    ("Gateway", Value::from(2)),
                ]),
            ),
            (
                "Tags",
                Value::Array(vec![Value::from("key-1"), Value::from("org-o1")]),
            ),
            ("Alias", Value::from("alias")),
            ("TrackPath", Value::from(true)),
            (
                "ExpireAt",
                Value::Array(vec![Value::from(1_797_832_061), Value::from(0)]),
            ),
            ("ApiSchema", Value::from("")),
            ("OriginalPath", Value::from("/users")),
            ("ListenPath", Value::from("/v1/")),
            ("GraphQLStats", map(vec![("IsGraphQL", Value::from(false))])),
        ]));
        let rec: TykRecord = rmp_serde::from_slice(&bytes).unwrap();
        let mut expected = sample_tyk();
        expected.graphql_stats = Some(map(vec![("IsGraphQL", Value::from(false))]));
        assert_eq!(rec, expected);
    }

    #[test]
    fn msgpack_encoding_matches_the_producers() {
        let iam = testing::to_msgpack(&sample_iam());
        let value = rmpv::decode::read_value(&mut &iam[..]).unwrap();
        let get = |v: &Value, k: &str| {
            v.as_map()
                .unwrap()
                .iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get(&value, "TimeStamp"), Value::from(1_795_240_061u32));
        assert_eq!(get(&value, "ExpireAt"), ext8(1_795_843_661, 250));
        assert_eq!(value.as_map().unwrap().len(), 8);

        let tyk = testing::to_msgpack(&sample_tyk());
        let value = rmpv::decode::read_value(&mut &tyk[..]).unwrap();
        assert_eq!(
            get(&value, "TimeStamp"),
            Value::Array(vec![Value::from(1_795_240_061), Value::from(123_000_000)])
        );
        assert_eq!(get(&get(&value, "Latency"), "Total"), Value::from(12));
        // Integers in their smallest encoding: 12 is one positive fixint byte.
        let needle = [&[0xa5][..], b"Total", &[0x0c]].concat();
        assert!(tyk.windows(needle.len()).any(|w| w == needle));
        assert!(value
            .as_map()
            .unwrap()
            .iter()
            .all(|(k, _)| k.as_str() != Some("GraphQLStats")));

        let back: IamRecord = rmp_serde::from_slice(&iam).unwrap();
        assert_eq!(back, sample_iam());
        let back: TykRecord = rmp_serde::from_slice(&tyk).unwrap();
        assert_eq!(back, sample_tyk());
    }

    #[test]
    fn json_round_trip() {
        let json = serde_json::to_value(sample_iam()).unwrap();
        assert_eq!(json["TimeStamp"], "2026-11-21T05:47:41Z");
        assert_eq!(json["ExpireAt"], "2026-11-28T05:27:41.00000025Z");
        assert_eq!(json["Username"], "alice");
        let back: IamRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample_iam());

        let mut tyk = sample_tyk();
        tyk.mcp_stats = Some(map(vec![("Tool", Value::from("x"))]));
        let json = serde_json::to_value(&tyk).unwrap();
        assert_eq!(json["TimeStamp"], "2026-11-21T05:47:41.123Z");
        assert_eq!(json["APIID"], "a1");
        assert_eq!(json["Geo"]["City"]["Names"]["en"], "Berlin");
        assert_eq!(json["Geo"]["Country"]["ISOCode"], "DE");
        assert_eq!(json["Latency"]["Gateway"], 2);
        let back: TykRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, tyk);

        // The host's JSON for iam keeps `TimeStamp` as unix seconds; both
        // read the same.
        let rec: IamRecord = serde_json::from_str(
            r#"{"TimeStamp": 1795240061, "ExpireAt": "2026-11-21T05:47:41Z"}"#,
        )
        .unwrap();
        assert_eq!(rec.timestamp, rec.expire_at);
    }

    #[test]
    fn typed_records_through_batches() {
        for batch in [
            testing::iam_batch(&[sample_iam()]),
            testing::json_batch_of(crate::Schema::Iam, &[sample_iam()]),
        ] {
            let rec = batch.get(0).unwrap();
            assert_eq!(rec.decode::<IamRecord>().unwrap(), sample_iam());
            assert_eq!(rec.field("Username").as_deref(), Some("alice"));
        }
        let batch = testing::tyk_batch(&[sample_tyk()]);
        let rec = batch.get(0).unwrap();
        assert_eq!(rec.decode::<TykRecord>().unwrap(), sample_tyk());
        assert_eq!(rec.field("ResponseCode").as_deref(), Some("200"));
        assert_eq!(rec.field("Path").as_deref(), Some("/v1/users"));
    }
}

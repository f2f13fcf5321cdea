//! The analytics record wire formats of iam-authz-server and Tyk Gateway:
//! MessagePack encoders that write records byte for byte the way the real
//! producers do, and generators of realistic sample records. Pure: no I/O.
//!
//! - iam-authz-server uses vmihailenco/msgpack v5 with full-width integers:
//!   `TimeStamp` is int64 (`0xd3`), `ExpireAt` a timestamp extension (-1).
//! - Tyk Gateway uses vmihailenco/msgpack.v2: integers in their smallest
//!   form, times as a `[seconds, nanoseconds]` array, nil for empty slices
//!   and maps.

pub mod resp;
pub mod sql_url;

use std::collections::BTreeMap;

use rmp::encode as enc;

/// An iam-authz-server analytics record.
#[derive(Debug, Clone, PartialEq)]
pub struct IamRecord {
    pub timestamp: i64,
    pub username: String,
    pub effect: String,
    pub conclusion: String,
    pub request: String,
    pub policies: String,
    pub deciders: String,
    /// `(seconds, nanoseconds)`.
    pub expire_at: (i64, u32),
}

/// A Tyk Gateway analytics record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TykRecord {
    pub method: String,
    pub host: String,
    pub path: String,
    pub raw_path: String,
    pub content_length: i64,
    pub user_agent: String,
    pub day: i64,
    pub month: i64,
    pub year: i64,
    pub hour: i64,
    pub response_code: i64,
    pub api_key: String,
    pub timestamp: (i64, u32),
    pub api_version: String,
    pub api_name: String,
    pub api_id: String,
    pub org_id: String,
    pub oauth_id: String,
    pub request_time: i64,
    pub raw_request: String,
    pub raw_response: String,
    pub ip_address: String,
    pub geo_country: String,
    pub geo_city_id: u64,
    pub geo_city_names: BTreeMap<String, String>,
    pub geo_lat: f64,
    pub geo_lon: f64,
    pub geo_tz: String,
    pub network: [i64; 4],
    pub latency: [i64; 3],
    pub tags: Vec<String>,
    pub alias: String,
    pub track_path: bool,
    pub expire_at: (i64, u32),
    pub api_schema: String,
    pub original_path: String,
    pub listen_path: String,
}

// Writes into a Vec cannot fail; rmp's signatures are fallible for io::Write.
fn s(out: &mut Vec<u8>, v: &str) {
    enc::write_str(out, v).expect("vec write");
}
fn key(out: &mut Vec<u8>, k: &str) {
    s(out, k);
}
fn int(out: &mut Vec<u8>, v: i64) {
    enc::write_sint(out, v).expect("vec write");
}

/// The timestamp extension in the smallest of its 4, 8 and 12-byte forms.
pub fn write_timestamp_ext(out: &mut Vec<u8>, secs: i64, nanos: u32) {
    if secs >= 0 && (secs >> 34) == 0 {
        if nanos == 0 && secs <= i64::from(u32::MAX) {
            enc::write_ext_meta(out, 4, -1).expect("vec write");
            out.extend_from_slice(&(secs as u32).to_be_bytes());
        } else {
            enc::write_ext_meta(out, 8, -1).expect("vec write");
            out.extend_from_slice(&((u64::from(nanos) << 34) | secs as u64).to_be_bytes());
        }
    } else {
        enc::write_ext_meta(out, 12, -1).expect("vec write");
        out.extend_from_slice(&nanos.to_be_bytes());
        out.extend_from_slice(&secs.to_be_bytes());
    }
}

/// Encodes an iam record as iam-authz-server does.
pub fn encode_iam(r: &IamRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + r.request.len() + r.policies.len());
    encode_iam_into(r, &mut out);
    out
}

/// [`encode_iam`], appending to `out` (reuse one buffer, no allocation).
pub fn encode_iam_into(r: &IamRecord, out: &mut Vec<u8>) {
    enc::write_map_len(out, 8).expect("vec write");
    key(out, "TimeStamp");
    enc::write_i64(out, r.timestamp).expect("vec write");
    key(out, "Username");
    s(out, &r.username);
    key(out, "Effect");
    s(out, &r.effect);
    key(out, "Conclusion");
    s(out, &r.conclusion);
    key(out, "Request");
    s(out, &r.request);
    key(out, "Policies");
    s(out, &r.policies);
    key(out, "Deciders");
    s(out, &r.deciders);
    key(out, "ExpireAt");
    write_timestamp_ext(out, r.expire_at.0, r.expire_at.1);
}

fn time_array(out: &mut Vec<u8>, (secs, nanos): (i64, u32)) {
    enc::write_array_len(out, 2).expect("vec write");
    int(out, secs);
    int(out, i64::from(nanos));
}

/// Encodes a Tyk record as Tyk Gateway does.
pub fn encode_tyk(r: &TykRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + r.raw_request.len() + r.raw_response.len());
    encode_tyk_into(r, &mut out);
    out
}

/// [`encode_tyk`], appending to `out` (reuse one buffer, no allocation).
pub fn encode_tyk_into(r: &TykRecord, out: &mut Vec<u8>) {
    enc::write_map_len(out, 32).expect("vec write");
    for (k, v) in [
        ("Method", &r.method),
        ("Host", &r.host),
        ("Path", &r.path),
        ("RawPath", &r.raw_path),
    ] {
        key(out, k);
        s(out, v);
    }
    key(out, "ContentLength");
    int(out, r.content_length);
    key(out, "UserAgent");
    s(out, &r.user_agent);
    for (k, v) in [
        ("Day", r.day),
        ("Month", r.month),
        ("Year", r.year),
        ("Hour", r.hour),
        ("ResponseCode", r.response_code),
    ] {
        key(out, k);
        int(out, v);
    }
    key(out, "APIKey");
    s(out, &r.api_key);
    key(out, "TimeStamp");
    time_array(out, r.timestamp);
    for (k, v) in [
        ("APIVersion", &r.api_version),
        ("APIName", &r.api_name),
        ("APIID", &r.api_id),
        ("OrgID", &r.org_id),
        ("OauthID", &r.oauth_id),
    ] {
        key(out, k);
        s(out, v);
    }
    key(out, "RequestTime");
    int(out, r.request_time);
    for (k, v) in [
        ("RawRequest", &r.raw_request),
        ("RawResponse", &r.raw_response),
        ("IPAddress", &r.ip_address),
    ] {
        key(out, k);
        s(out, v);
    }
    key(out, "Geo");
    enc::write_map_len(out, 3).expect("vec write");
    key(out, "Country");
    enc::write_map_len(out, 1).expect("vec write");
    key(out, "ISOCode");
    s(out, &r.geo_country);
    key(out, "City");
    enc::write_map_len(out, 2).expect("vec write");
    key(out, "GeoNameID");
    enc::write_uint(out, r.geo_city_id).expect("vec write");
    key(out, "Names");
    if r.geo_city_names.is_empty() {
        enc::write_nil(out).expect("vec write");
    } else {
        enc::write_map_len(out, r.geo_city_names.len() as u32).expect("vec write");
        for (k, v) in &r.geo_city_names {
            s(out, k);
            s(out, v);
        }
    }
    key(out, "Location");
    enc::write_map_len(out, 3).expect("vec write");
    key(out, "Latitude");
    enc::write_f64(out, r.geo_lat).expect("vec write");
    key(out, "Longitude");
    enc::write_f64(out, r.geo_lon).expect("vec write");
    key(out, "TimeZone");
    s(out, &r.geo_tz);
    key(out, "Network");
    enc::write_map_len(out, 4).expect("vec write");
    for (k, v) in ["OpenConnections", "ClosedConnection", "BytesIn", "BytesOut"]
        .iter()
        .zip(r.network)
    {
        key(out, k);
        int(out, v);
    }
    key(out, "Latency");
    enc::write_map_len(out, 3).expect("vec write");
    for (k, v) in ["Total", "Upstream", "Gateway"].iter().zip(r.latency) {
        key(out, k);
        int(out, v);
    }
    key(out, "Tags");
    if r.tags.is_empty() {
        enc::write_nil(out).expect("vec write");
    } else {
        enc::write_array_len(out, r.tags.len() as u32).expect("vec write");
        for t in &r.tags {
            s(out, t);
        }
    }
    key(out, "Alias");
    s(out, &r.alias);
    key(out, "TrackPath");
    enc::write_bool(out, r.track_path).expect("vec write");
    key(out, "ExpireAt");
    time_array(out, r.expire_at);
    for (k, v) in [
        ("ApiSchema", &r.api_schema),
        ("OriginalPath", &r.original_path),
        ("ListenPath", &r.listen_path),
    ] {
        key(out, k);
        s(out, v);
    }
}

/// A tiny deterministic generator (SplitMix64) so sample data is
/// reproducible from a seed without pulling randomness into pure code.
#[derive(Debug, Clone)]
pub struct Sampler(u64);

const USERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "admin"];
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];
const CODES: [i64; 6] = [200, 200, 200, 201, 404, 500];
const APIS: [(&str, &str); 3] = [
    ("41433797848f41a558c1573d3e55a410", "payments"),
    ("7a1bd2c8e4f14b0a9d3e5c6b7a8f9e01", "users"),
    ("c0ffee00c0ffee00c0ffee00c0ffee00", "orders"),
];

impl Sampler {
    pub fn new(seed: u64) -> Self {
        Sampler(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    /// An iam record carrying sequence number `seq` in its request.
    pub fn iam(&mut self, seq: u64, now: i64) -> IamRecord {
        let user = *self.pick(&USERS);
        let allow = !self.next().is_multiple_of(5);
        IamRecord {
            timestamp: now,
            username: user.to_string(),
            effect: if allow { "allow" } else { "deny" }.to_string(),
            conclusion: if allow {
                "policies allow access".to_string()
            } else {
                "no policy allows access".to_string()
            },
            request: format!(
                r#"{{"resource":"resources:articles:{}","action":"read","subject":"users:{user}","context":{{"seq":{seq}}}}}"#,
                seq % 10_000
            ),
            policies: format!(
                r#"[{{"id":"policy-{}","effect":"{}","resources":["resources:articles:<.*>"]}}]"#,
                seq % 7,
                if allow { "allow" } else { "deny" }
            ),
            deciders: r#"[{"id":"policy-0","effect":"allow"}]"#.to_string(),
            expire_at: (now + 86_400 * 7, 0),
        }
    }

    /// A Tyk record carrying sequence number `seq` in its path.
    pub fn tyk(&mut self, seq: u64, now: i64) -> TykRecord {
        let (api_id, api_name) = *self.pick(&APIS);
        let method = *self.pick(&METHODS);
        let code = *self.pick(&CODES);
        let path = format!("/{api_name}/items/{seq}");
        let raw_req = format!("{method} {path} HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
        let raw_resp = format!("HTTP/1.1 {code} OK\r\nContent-Length: 2\r\n\r\n{{}}");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let total = (self.next() % 200) as i64 + 1;
        TykRecord {
            method: method.into(),
            host: "api.example.com".into(),
            path: path.clone(),
            raw_path: path.clone(),
            content_length: (self.next() % 4096) as i64,
            user_agent: "curl/8.5.0".into(),
            day: 21,
            month: 11,
            year: 2026,
            hour: 5,
            response_code: code,
            api_key: format!("key-{}", self.next() % 100),
            timestamp: (now, (self.next() % 1_000_000_000) as u32),
            api_version: "v1".into(),
            api_name: api_name.into(),
            api_id: api_id.into(),
            org_id: "5e9d9544a1dcd60001d0ed20".into(),
            oauth_id: String::new(),
            request_time: total,
            raw_request: b64.encode(raw_req),
            raw_response: b64.encode(raw_resp),
            ip_address: format!("10.0.{}.{}", self.next() % 256, self.next() % 256),
            geo_country: "GB".into(),
            geo_city_id: 2643743,
            geo_city_names: BTreeMap::from([("en".to_string(), "London".to_string())]),
            geo_lat: 51.5085,
            geo_lon: -0.1257,
            geo_tz: "Europe/London".into(),
            network: [1, 1, 310, 1024],
            latency: [total, total - total / 4, total / 4],
            tags: vec![format!("key-{}", seq % 3)],
            alias: String::new(),
            track_path: true,
            expire_at: (now + 86_400 * 100, 0),
            api_schema: String::new(),
            original_path: path,
            listen_path: format!("/{api_name}/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(hay: &[u8], needle: &[u8]) -> usize {
        hay.windows(needle.len())
            .position(|w| w == needle)
            .expect("present")
    }

    #[test]
    fn iam_uses_full_width_int64_and_the_timestamp_extension() {
        let r = Sampler::new(1).iam(0, 1_763_700_000);
        let b = encode_iam(&r);
        let at = find(&b, b"\xa9TimeStamp") + 10;
        assert_eq!(b[at], 0xd3);
        assert_eq!(&b[at + 1..at + 9], &1_763_700_000i64.to_be_bytes());
        let at = find(&b, b"\xa8ExpireAt") + 9;
        assert_eq!(&b[at..at + 2], &[0xd6, 0xff], "fixext4, type -1");
    }

    #[test]
    fn timestamp_extension_picks_the_smallest_form() {
        for (secs, nanos, head) in [
            (5i64, 0u32, 0xd6u8),
            (5, 1, 0xd7),
            (1 << 34, 0, 0xc7),
            (-1, 0, 0xc7),
        ] {
            let mut out = Vec::new();
            write_timestamp_ext(&mut out, secs, nanos);
            assert_eq!(out[0], head, "{secs}s {nanos}ns");
        }
    }

    #[test]
    fn tyk_times_are_two_element_arrays_and_empty_slices_nil() {
        let mut r = Sampler::new(1).tyk(0, 1_763_700_000);
        r.tags.clear();
        let b = encode_tyk(&r);
        let at = find(&b, b"\xa9TimeStamp") + 10;
        assert_eq!(b[at], 0x92, "fixarray of 2");
        assert_eq!(b[at + 1], 0xce, "seconds as uint32, the smallest form");
        let at = find(&b, b"\xa4Tags") + 5;
        assert_eq!(b[at], 0xc0);
    }

    #[test]
    fn encoding_into_a_buffer_appends_the_same_bytes() {
        let mut sampler = Sampler::new(2);
        let (iam, tyk) = (sampler.iam(1, 5), sampler.tyk(2, 5));
        let mut out = b"x".to_vec();
        encode_iam_into(&iam, &mut out);
        encode_tyk_into(&tyk, &mut out);
        assert_eq!(
            out,
            [&b"x"[..], &encode_iam(&iam), &encode_tyk(&tyk)].concat()
        );
    }
}

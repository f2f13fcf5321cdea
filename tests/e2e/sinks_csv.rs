//! The `csv` sink: iam and Tyk records become rows that an independent CSV
//! parser reads back field by field, awkward text included. Files are read
//! only once the source is drained and acked, so no write is under way.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use pumphouse::produce::{IamRecord, Sampler};

use crate::harness::*;

use pumphouse::record::IAM_KEY;
use pumphouse::record::TYK_KEY;
const WAIT: Duration = Duration::from_secs(60);

const IAM_HEADER: [&str; 8] = [
    "TimeStamp",
    "Username",
    "Effect",
    "Conclusion",
    "Request",
    "Policies",
    "Deciders",
    "ExpireAt",
];

/// The `csv` sink writing `<host dir>/out/<file>`.
fn csv_pump(name: &str, file: &str) -> Pump {
    Pump::sink(name, plugin("csv"), file)
}

/// Every row of a CSV file, parsed by the `csv` crate.
fn read_csv(path: &Path, delimiter: u8) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .from_path(path)
        .unwrap()
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

fn wait_drained(conn: &mut redis::Connection, key: &str) {
    wait_for(WAIT, &format!("{key} drained and acked"), || {
        (left_in_redis(conn, key) == (0, 0)).then_some(())
    });
}

/// The iam row's cells as the sink should write them.
fn iam_cells(r: &IamRecord) -> Vec<String> {
    vec![
        rfc3339(r.timestamp, 0),
        r.username.clone(),
        r.effect.clone(),
        r.conclusion.clone(),
        r.request.clone(),
        r.policies.clone(),
        r.deciders.clone(),
        rfc3339(r.expire_at.0, r.expire_at.1),
    ]
}

#[test]
fn iam_records_become_csv_rows_field_by_field() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_iam(&mut conn, 800, 6);
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 128)
            .pump(csv_pump("csv", "iam.csv").config("fsync", true)),
    );
    wait_drained(&mut conn, IAM_KEY);
    let rows = read_csv(&host.out().join("iam.csv"), b',');
    assert_eq!(rows[0], IAM_HEADER, "one header row first");
    assert_eq!(rows.len(), 801);
    let mut seen = vec![false; records.len()];
    for row in &rows[1..] {
        let request: serde_json::Value = serde_json::from_str(&row[4]).expect("Request is JSON");
        let seq = request["context"]["seq"].as_u64().unwrap() as usize;
        assert!(!seen[seq], "seq {seq} twice");
        seen[seq] = true;
        assert_eq!(row, &iam_cells(&records[seq]), "record {seq}");
    }
}

#[test]
fn tyk_records_become_rows_with_default_and_configured_columns() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_tyk(&mut conn, TYK_KEY, 300, 4);
    let custom = r#"
[config]
delimiter = ";"
crlf = true
columns = [
  { field = "Path", header = "path" },
  { field = "Geo", header = "geo" },
  { field = "Latency.Gateway", header = "gateway ms" },
  { field = "Tags.0", header = "first tag" },
  "RawResponse",
  "Network",
]"#;
    let host = Host::start(
        HostConfig::new(&redis)
            .tyk()
            .source("batch_size", 64)
            .pump(csv_pump("default", "tyk.csv"))
            .pump(csv_pump("custom", "custom.csv").toml(custom)),
    );
    wait_drained(&mut conn, TYK_KEY);

    let rows = read_csv(&host.out().join("tyk.csv"), b',');
    assert_eq!(rows.len(), 301);
    let header = &rows[0];
    assert_eq!(header.len(), 23);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let seq_of = |path: &str| -> usize { path.rsplit('/').next().unwrap().parse().unwrap() };
    let mut seen = std::collections::HashSet::new();
    for row in &rows[1..] {
        let seq = seq_of(&row[col("Path")]);
        assert!(seen.insert(seq), "seq {seq} twice");
        let r = &records[seq];
        let expect = [
            ("TimeStamp", rfc3339(r.timestamp.0, r.timestamp.1)),
            ("Method", r.method.clone()),
            ("Host", r.host.clone()),
            ("Path", r.path.clone()),
            ("RawPath", r.raw_path.clone()),
            ("ContentLength", r.content_length.to_string()),
            ("UserAgent", r.user_agent.clone()),
            ("ResponseCode", r.response_code.to_string()),
            ("APIKey", r.api_key.clone()),
            ("APIVersion", r.api_version.clone()),
            ("APIName", r.api_name.clone()),
            ("APIID", r.api_id.clone()),
            ("OrgID", r.org_id.clone()),
            ("OauthID", r.oauth_id.clone()),
            ("RequestTime", r.request_time.to_string()),
            ("IPAddress", r.ip_address.clone()),
            ("Geo.Country.ISOCode", r.geo_country.clone()),
            ("Latency.Total", r.latency[0].to_string()),
            ("Latency.Upstream", r.latency[1].to_string()),
            ("Tags", serde_json::to_string(&r.tags).unwrap()),
            ("Alias", r.alias.clone()),
            ("TrackPath", r.track_path.to_string()),
            ("ListenPath", r.listen_path.clone()),
        ];
        for (name, want) in expect {
            assert_eq!(row[col(name)], want, "seq {seq}: {name}");
        }
    }
    assert_eq!(seen.len(), 300);

    // The configured columns, with `;` and CRLF.
    let text = std::fs::read_to_string(host.out().join("custom.csv")).unwrap();
    assert!(text.starts_with("path;geo;gateway ms;first tag;RawResponse;Network\r\n"));
    let rows = read_csv(&host.out().join("custom.csv"), b';');
    assert_eq!(rows.len(), 301);
    let b64 = base64::engine::general_purpose::STANDARD;
    for row in &rows[1..] {
        let r = &records[seq_of(&row[0])];
        let geo: serde_json::Value = serde_json::from_str(&row[1]).expect("Geo as JSON text");
        assert_eq!(geo["Country"]["ISOCode"], r.geo_country.as_str());
        assert_eq!(geo["City"]["GeoNameID"], r.geo_city_id);
        assert_eq!(geo["City"]["Names"]["en"], "London");
        assert_eq!(geo["Location"]["Latitude"], r.geo_lat);
        assert_eq!(geo["Location"]["Longitude"], r.geo_lon);
        assert_eq!(geo["Location"]["TimeZone"], r.geo_tz.as_str());
        assert_eq!(row[2], r.latency[2].to_string());
        assert_eq!(row[3], r.tags.first().cloned().unwrap_or_default());
        assert_eq!(
            b64.decode(&row[4]).unwrap(),
            b64.decode(&r.raw_response).unwrap()
        );
        let network: serde_json::Value = serde_json::from_str(&row[5]).unwrap();
        assert_eq!(network["OpenConnections"], r.network[0]);
        assert_eq!(network["BytesOut"], r.network[3]);
    }
}

/// Commas, quotes, CR/LF and a delimiter-only field survive the round
/// trip; a torn row left by an earlier crash is cut off first.
#[test]
fn awkward_text_round_trips_and_a_torn_row_is_cut_off() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let mut sampler = Sampler::new(1);
    let awkward = [
        "comma, inside",
        "\"quoted\" and \"\"doubled\"\"",
        "two\nlines",
        "crlf\r\nline",
        ",",
        "\"",
        "",
        " leading and trailing spaces ",
        "unicode: grüße, 東京",
    ];
    let records: Vec<IamRecord> = awkward
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut r = sampler.iam(i as u64, T0);
            r.username = (*text).to_owned();
            r.conclusion = format!("{text}|{text}");
            r.deciders = format!("[{{\"why\":{}}}]", serde_json::json!(text));
            r
        })
        .collect();
    push_iam_records(&mut conn, IAM_KEY, &records);

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    // A header, then a row torn inside a quoted field.
    std::fs::write(
        dir.path().join("out/iam.csv"),
        format!("{}\n2025-11-21T04:40:00Z,\"torn\nrow", IAM_HEADER.join(",")),
    )
    .unwrap();
    let host = Host::start_in(
        dir,
        HostConfig::new(&redis).pump(csv_pump("csv", "iam.csv")),
    );
    wait_drained(&mut conn, IAM_KEY);
    let rows = read_csv(&host.out().join("iam.csv"), b',');
    assert_eq!(rows[0], IAM_HEADER);
    assert_eq!(rows.len(), records.len() + 1, "{rows:?}");
    for (row, r) in rows[1..].iter().zip(&records) {
        assert_eq!(row, &iam_cells(r));
    }
    assert!(host.log_text().contains("partial row"), "the cut is logged");
}

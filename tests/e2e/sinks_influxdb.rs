//! The `influxdb` sink against a real influxd 1.x with authentication on:
//! points come back field by field, a server crash loses and duplicates
//! nothing, a type conflict dead-letters the one record behind it.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::harness::*;
use crate::sink_servers::*;

use pumphouse::record::IAM_KEY;
use pumphouse::record::TYK_KEY;
const PASSWORD_VAR: &str = "PUMPHOUSE_TEST_INFLUX_PASSWORD";
const USER: &str = "pump";
const PASSWORD: &str = "pump-s3cret";
const WAIT: Duration = Duration::from_secs(120);

/// An influxd of its own: ports, meta, data and WAL in a temp dir.
struct Influx {
    process: ServerProcess,
    http: String,
    _dir: tempfile::TempDir,
}

impl Influx {
    /// `None` (after a loud SKIPPED line) when influxd is not installed.
    fn start() -> Option<Influx> {
        let binary = find_binary(&["influxd"])?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let http = format!("127.0.0.1:{}", free_port());
        let rpc = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("influxdb.conf");
        std::fs::write(
            &config,
            format!(
                r#"reporting-disabled = true
bind-address = "{rpc}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[http]
  bind-address = "{http}"
  auth-enabled = true
  log-enabled = false
  max-row-limit = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"#
            ),
        )
        .unwrap();
        let args = vec![
            "run".to_string(),
            "-config".to_string(),
            config.display().to_string(),
        ];
        let mut influx = Influx {
            process: ServerProcess::new(binary, args, dir.path().join("influxd.log")),
            http,
            _dir: dir,
        };
        influx.process.spawn();
        influx.wait_ready();
        // With no users yet, influxd lets the first admin be created.
        influx.query(&format!(
            "CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
        ));
        influx.query("CREATE DATABASE pumps");
        Some(influx)
    }

    fn wait_ready(&self) {
        wait_for(WAIT, "influxd to answer /ping", || {
            http("GET", &self.http, "/ping", &[], b"")
                .ok()
                .filter(|(code, _)| *code == 204)
        });
    }

    fn restart(&mut self) {
        self.process.spawn();
        self.wait_ready();
    }

    /// Runs `q` with the admin's credentials; panics unless it succeeds.
    fn query(&self, q: &str) -> Value {
        let path = format!(
            "/query?db=pumps&epoch=ns&u={USER}&p={PASSWORD}&q={}",
            url_encode(q)
        );
        let (code, body) = http("POST", &self.http, &path, &[], b"").unwrap();
        assert_eq!(code, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(v["results"][0].get("error").is_none(), "{q}: {body}");
        v
    }

    /// The points of `measurement`, each as a column → value map.
    fn points(&self, measurement: &str) -> Vec<Map<String, Value>> {
        let v = self.query(&format!("SELECT * FROM \"{measurement}\""));
        let Some(series) = v["results"][0]["series"].as_array() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for s in series {
            let columns: Vec<&str> = s["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            for values in s["values"].as_array().unwrap() {
                let row = columns
                    .iter()
                    .zip(values.as_array().unwrap())
                    .filter(|(_, v)| !v.is_null())
                    .map(|(c, v)| (c.to_string(), v.clone()))
                    .collect();
                out.push(row);
            }
        }
        out
    }

    fn count(&self, measurement: &str) -> usize {
        self.points(measurement).len()
    }
}

/// A host draining `format` records into the influxd at `http`.
fn start_host(redis: &RedisServer, format: &str, http: &str) -> Host {
    let config = HostConfig::new(redis)
        .source("format", format)
        .source("batch_size", 50)
        .pump(
            Pump::new("influxdb", plugin("influxdb"))
                .retry("50ms", "500ms")
                .config("url", format!("http://{http}"))
                .config("database", "pumps")
                .config("id_tag", "_id")
                .config("username", USER)
                .config("password", format!("$${{{PASSWORD_VAR}}}"))
                .sandbox(
                    "allowed_outbound_hosts",
                    strings([format!("http://{http}")]),
                )
                .sandbox("env", strings([PASSWORD_VAR])),
        );
    Host::start_in_env(
        tempfile::tempdir().unwrap(),
        &config,
        &[(PASSWORD_VAR, PASSWORD)],
    )
}

fn nanos(secs: i64, nanos: u32) -> i64 {
    secs * 1_000_000_000 + i64::from(nanos)
}

#[test]
fn iam_records_reach_influxdb_field_by_field_across_a_server_restart() {
    let Some(mut influx) = Influx::start() else {
        return;
    };
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let http = influx.http.clone();
    let (records, _host) = deliver_across_a_restart(
        &mut influx,
        &mut conn,
        IAM_KEY,
        "iam",
        "influxdb",
        31,
        || start_host(&redis, "iam", &http),
    );

    // Every record is one point (series + time), so a re-delivery would
    // overwrite, never add: exactly 600.
    let points = influx.points("iam");
    assert_eq!(points.len(), 600);
    let mut by_seq: Vec<Option<&Map<String, Value>>> = vec![None; 600];
    let mut ids = std::collections::HashSet::new();
    for p in &points {
        let seq = iam_seq(&serde_json::json!({"Request": p["request"]})) as usize;
        assert!(by_seq[seq].is_none(), "seq {seq} stored twice");
        by_seq[seq] = Some(p);
        assert!(ids.insert(p["_id"].as_str().unwrap().to_owned()));
    }
    for (seq, r) in records.iter().enumerate() {
        let p = by_seq[seq].unwrap_or_else(|| panic!("seq {seq} missing"));
        assert_eq!(p["time"], nanos(r.timestamp, 0), "seq {seq}");
        // Tags
        assert_eq!(p["username"], r.username.as_str(), "seq {seq}");
        assert_eq!(p["effect"], r.effect.as_str(), "seq {seq}");
        // Fields
        assert_eq!(p["conclusion"], r.conclusion.as_str(), "seq {seq}");
        assert_eq!(p["request"], r.request.as_str(), "seq {seq}");
        assert_eq!(p["policies"], r.policies.as_str(), "seq {seq}");
        assert_eq!(p["deciders"], r.deciders.as_str(), "seq {seq}");
        assert_eq!(p.len(), 8, "seq {seq}: {p:?}");
    }
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
}

#[test]
fn tyk_records_reach_influxdb_field_by_field_and_a_type_conflict_is_dead_lettered_alone() {
    let Some(influx) = Influx::start() else {
        return;
    };
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = tyk_records(41, 0..200);
    let mut bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_tyk).collect();
    // `path` is a string field; a number there conflicts with its type.
    let poison = tyk_records(42, 999..1000);
    bytes.insert(120, tyk_with_numeric_path(&poison[0]));
    push(&mut conn, TYK_KEY, &bytes);
    let host = start_host(&redis, "tyk", &influx.http);

    let dead = wait_for(WAIT, "the conflicting record dead-lettered", || {
        let d = dead_letters(&mut conn, TYK_KEY);
        (!d.is_empty()).then_some(d)
    });
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].pump.as_deref(), Some("influxdb"));
    assert!(
        dead[0].reason.contains("type conflict"),
        "{}",
        dead[0].reason
    );

    let points = influx.points("tyk");
    assert_eq!(points.len(), 200);
    let mut by_seq: Vec<Option<&Map<String, Value>>> = vec![None; 200];
    for p in &points {
        let seq = tyk_seq(p["path"].as_str().unwrap()) as usize;
        assert!(by_seq[seq].is_none(), "seq {seq} stored twice");
        by_seq[seq] = Some(p);
    }
    for (seq, r) in records.iter().enumerate() {
        let p = by_seq[seq].unwrap_or_else(|| panic!("seq {seq} missing"));
        assert_eq!(p["time"], nanos(r.timestamp.0, r.timestamp.1), "seq {seq}");
        let text = [
            // Tags (all text in InfluxDB)
            ("api_id", r.api_id.clone()),
            ("api_name", r.api_name.clone()),
            ("api_version", r.api_version.clone()),
            ("method", r.method.clone()),
            ("org_id", r.org_id.clone()),
            ("response_code", r.response_code.to_string()),
            // String fields
            ("path", r.path.clone()),
            ("host", r.host.clone()),
            ("api_key", r.api_key.clone()),
            ("ip_address", r.ip_address.clone()),
            ("user_agent", r.user_agent.clone()),
            ("country", r.geo_country.clone()),
            ("tags", serde_json::to_string(&r.tags).unwrap()),
        ];
        for (key, expected) in text {
            assert_eq!(p[key], expected.as_str(), "seq {seq} {key}");
        }
        let ints = [
            ("content_length", r.content_length),
            ("request_time", r.request_time),
            ("latency_total", r.latency[0]),
            ("latency_upstream", r.latency[1]),
            ("latency_gateway", r.latency[2]),
            ("bytes_in", r.network[2]),
            ("bytes_out", r.network[3]),
        ];
        for (key, expected) in ints {
            assert_eq!(p[key], expected, "seq {seq} {key}");
        }
        assert_eq!(p["track_path"], r.track_path, "seq {seq}");
        assert!(p["_id"].as_str().is_some_and(|id| !id.is_empty()));
    }
    assert_eq!(
        host.metric("pumphouse_records_dead_lettered_total{pump=\"influxdb\"}"),
        1.0
    );
}

impl Restartable for Influx {
    fn kill(&mut self) {
        self.process.kill();
    }
    fn restart(&mut self) {
        Influx::restart(self);
    }
    fn held(&self, measurement: &str) -> u64 {
        self.count(measurement) as u64
    }
}

/// Tyk record `r` with top-level `field` set to `value`.
fn tyk_with(r: &pumphouse::produce::TykRecord, field: &str, value: rmpv::Value) -> Vec<u8> {
    let bytes = pumphouse::produce::encode_tyk(r);
    let mut record = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
    let rmpv::Value::Map(entries) = &mut record else {
        panic!("a Tyk record is a map")
    };
    let slot = entries
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some(field))
        .unwrap_or_else(|| panic!("no {field}"));
    slot.1 = value;
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &record).unwrap();
    out
}

/// Values InfluxDB cannot hold are dead-lettered for the pump, each with
/// its reason, and never reach influxd: a `ContentLength` of 2^64 - 1
/// (beyond int64: as a float it would lose digits) and a `TimeStamp` in
/// 2300 (past InfluxDB's last time, 2262-04-11). Their neighbours are
/// stored, and nothing else is.
#[test]
fn values_influxdb_cannot_hold_are_dead_lettered_not_stored_wrong() {
    let Some(influx) = Influx::start() else {
        return;
    };
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = tyk_records(43, 0..100);
    let mut bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_tyk).collect();
    let poison = tyk_records(44, 998..1000);
    let year_2300 = rmpv::Value::Array(vec![10_413_792_000i64.into(), 0.into()]);
    bytes.insert(30, tyk_with(&poison[0], "ContentLength", u64::MAX.into()));
    bytes.insert(70, tyk_with(&poison[1], "TimeStamp", year_2300));
    push(&mut conn, TYK_KEY, &bytes);
    let _host = start_host(&redis, "tyk", &influx.http);
    let dead = wait_for(WAIT, "both records dead-lettered", || {
        let d = dead_letters(&mut conn, TYK_KEY);
        (d.len() >= 2).then_some(d)
    });
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });
    let mut reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with(
            "field content_length: 18446744073709551615 is beyond InfluxDB's integers"
        ),
        "{reasons:?}"
    );
    assert!(
        reasons[1]
            .starts_with("timestamp 2300-01-01T00:00:00Z is outside the times InfluxDB holds"),
        "{reasons:?}"
    );
    assert!(dead.iter().all(|d| d.pump.as_deref() == Some("influxdb")));
    let points = influx.points("tyk");
    assert_eq!(points.len(), 100);
    let mut seqs: Vec<u64> = points
        .iter()
        .map(|p| tyk_seq(p["path"].as_str().unwrap()))
        .collect();
    seqs.sort();
    assert_eq!(seqs, (0..100).collect::<Vec<_>>());
}

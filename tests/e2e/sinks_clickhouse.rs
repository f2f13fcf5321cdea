//! The `clickhouse` sink against a real clickhouse-server: records come
//! back field by field, a server crash loses nothing, a bad row is
//! dead-lettered alone.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::sink_servers::*;

use pumphouse::record::IAM_KEY;
use pumphouse::record::TYK_KEY;
const PASSWORD_VAR: &str = "PUMPHOUSE_TEST_CLICKHOUSE_PASSWORD";
const PASSWORD: &str = "pump-s3cret";
const WAIT: Duration = Duration::from_secs(120);

/// The `CREATE TABLE` statements of plugins/clickhouse/README.md.
const IAM_TABLE: &str = "CREATE TABLE iam (
    _id UInt64,
    timestamp DateTime('UTC'),
    username String,
    effect String,
    conclusion String,
    request String,
    policies String,
    deciders String,
    expire_at Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, _id)";

const TYK_TABLE: &str = "CREATE TABLE tyk (
    _id UInt64,
    timestamp DateTime('UTC'),
    method String,
    host String,
    path String,
    raw_path String,
    content_length Int64,
    user_agent String,
    response_code Int64,
    api_key String,
    api_version String,
    api_name String,
    api_id String,
    org_id String,
    oauth_id String,
    request_time Int64,
    raw_request String,
    raw_response String,
    ip_address String,
    country String,
    latency_total Int64,
    latency_upstream Int64,
    latency_gateway Int64,
    bytes_in Int64,
    bytes_out Int64,
    tags Array(String),
    alias String,
    track_path UInt8,
    original_path String,
    listen_path String,
    expire_at Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(timestamp)
ORDER BY (timestamp, _id)";

/// A clickhouse-server of its own: ports, data and logs in a temp dir.
struct ClickHouse {
    process: ServerProcess,
    http: String,
    _dir: tempfile::TempDir,
}

impl ClickHouse {
    /// `None` (after a loud SKIPPED line) when the server is not installed.
    fn start() -> Option<ClickHouse> {
        let binary = find_binary(&[
            "clickhouse-server",
            "/usr/sbin/clickhouse-server",
            "/usr/bin/clickhouse",
        ])?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let http_port = free_port();
        let tcp_port = free_port();
        std::fs::write(
            dir.path().join("users.xml"),
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
    <pump><password>{PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></pump>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#
            ),
        )
        .unwrap();
        let config = dir.path().join("config.xml");
        std::fs::write(
            &config,
            format!(
                r#"<?xml version="1.0"?>
<yandex>
  <logger><level>information</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709120</mark_cache_size>
</yandex>
"#
            ),
        )
        .unwrap();
        let mut args = Vec::new();
        if binary.file_name().is_some_and(|n| n == "clickhouse") {
            args.push("server".to_string());
        }
        args.push(format!("--config-file={}", config.display()));
        let mut ch = ClickHouse {
            process: ServerProcess::new(binary, args, dir.path().join("stdout.log")),
            http: format!("127.0.0.1:{http_port}"),
            _dir: dir,
        };
        ch.process.spawn();
        ch.wait_ready();
        Some(ch)
    }

    fn wait_ready(&self) {
        wait_for(WAIT, "clickhouse-server to answer /ping", || {
            http("GET", &self.http, "/ping", &[], b"")
                .ok()
                .filter(|(code, body)| *code == 200 && body.starts_with("Ok."))
        });
    }

    fn restart(&mut self) {
        self.process.spawn();
        self.wait_ready();
    }

    /// Runs `sql` as the `default` user; panics unless it succeeds.
    fn query(&self, sql: &str) -> String {
        let (code, body) = http("POST", &self.http, "/", &[], sql.as_bytes()).unwrap();
        assert_eq!(code, 200, "{sql}: {body}");
        body
    }

    fn rows(&self, sql: &str) -> Vec<Value> {
        self.query(&format!("{sql} FORMAT JSONEachRow"))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn count(&self, table: &str) -> u64 {
        self.query(&format!("SELECT count() FROM {table} FINAL"))
            .trim()
            .parse()
            .unwrap()
    }
}

/// The `clickhouse` sink writing to `table` of the ClickHouse at `http`,
/// its password from the sandbox env.
fn pump(http: &str, table: &str) -> Pump {
    Pump::new("clickhouse", plugin("clickhouse"))
        .retry("50ms", "500ms")
        .config("url", format!("http://{http}"))
        .config("table", table)
        .config("user", "pump")
        .config("password", format!("$${{{PASSWORD_VAR}}}"))
        .sandbox(
            "allowed_outbound_hosts",
            strings([format!("http://{http}")]),
        )
        .sandbox("env", strings([PASSWORD_VAR]))
}

/// A host draining `format` records into `table` of the ClickHouse at `http`.
fn start_host(redis: &RedisServer, format: &str, http: &str, table: &str) -> Host {
    Host::start_in_env(
        tempfile::tempdir().unwrap(),
        HostConfig::new(redis)
            .source("format", format)
            .source("batch_size", 50)
            .pump(pump(http, table)),
        &[(PASSWORD_VAR, PASSWORD)],
    )
}

/// `YYYY-MM-DD hh:mm:ss` in UTC, as ClickHouse shows a `DateTime('UTC')`.
fn datetime(secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    t.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .unwrap()
}

/// ClickHouse quotes 64-bit integers in JSON; smaller ones are numbers.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap(),
        other => other.as_i64().unwrap(),
    }
}

/// A `UInt64` `_id`, which ClickHouse writes as a JSON string.
fn id(v: &Value) -> u64 {
    v.as_str().expect("_id as text").parse().unwrap()
}

#[test]
fn iam_records_reach_clickhouse_field_by_field_across_a_server_restart() {
    let Some(mut ch) = ClickHouse::start() else {
        return;
    };
    ch.query(IAM_TABLE);
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let http = ch.http.clone();
    let (records, host) =
        deliver_across_a_restart(&mut ch, &mut conn, IAM_KEY, "iam", "clickhouse", 11, || {
            start_host(&redis, "iam", &http, "iam")
        });

    let rows = ch.rows("SELECT * FROM iam FINAL");
    assert_eq!(rows.len(), 600);
    let mut by_seq: Vec<Option<&Value>> = vec![None; 600];
    let mut ids = std::collections::HashSet::new();
    for row in &rows {
        let seq = iam_seq(&serde_json::json!({"Request": row["request"]})) as usize;
        assert!(by_seq[seq].is_none(), "seq {seq} stored twice");
        by_seq[seq] = Some(row);
        assert!(ids.insert(id(&row["_id"])), "an _id twice: {row}");
    }
    for (seq, r) in records.iter().enumerate() {
        let row = by_seq[seq].unwrap_or_else(|| panic!("seq {seq} missing"));
        assert_eq!(row["timestamp"], datetime(r.timestamp), "seq {seq}");
        assert_eq!(row["username"], r.username.as_str(), "seq {seq}");
        assert_eq!(row["effect"], r.effect.as_str(), "seq {seq}");
        assert_eq!(row["conclusion"], r.conclusion.as_str(), "seq {seq}");
        assert_eq!(row["request"], r.request.as_str(), "seq {seq}");
        assert_eq!(row["policies"], r.policies.as_str(), "seq {seq}");
        assert_eq!(row["deciders"], r.deciders.as_str(), "seq {seq}");
        assert_eq!(int(&row["expire_at"]), r.expire_at.0, "seq {seq}");
    }
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
    assert_eq!(
        host.metric("pumphouse_pump_errors_total{pump=\"clickhouse\",kind=\"fatal\"}"),
        0.0
    );
}

#[test]
fn iam_times_past_2106_are_stored_exactly_or_dead_lettered_never_wrapped() {
    let Some(ch) = ClickHouse::start() else {
        return;
    };
    ch.query(IAM_TABLE);
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    // iam-authz-server's default ExpireAt: 100 years ahead, past the end
    // of DateTime in 2106.
    const IN_2123: i64 = 4_855_673_600;
    let mut records = iam_records(31, 0..100);
    for r in &mut records {
        r.expire_at = (IN_2123, 0);
    }
    // An event time the DateTime `timestamp` column cannot hold.
    records[40].timestamp = IN_2123;
    push_iam_records(&mut conn, IAM_KEY, &records);
    let host = start_host(&redis, "iam", &ch.http, "iam");

    wait_for(WAIT, "99 rows", || (ch.count("iam") == 99).then_some(()));
    let dead = wait_for(WAIT, "the far-future record dead-lettered", || {
        let d = dead_letters(&mut conn, IAM_KEY);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].pump.as_deref(), Some("clickhouse"));
    assert!(
        dead[0]
            .reason
            .contains("column timestamp (DateTime('UTC')) cannot hold 2123-11-14T22:13:20Z")
            && dead[0].reason.contains("2106-02-07T06:28:15Z"),
        "{}",
        dead[0].reason
    );
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let rows = ch.rows("SELECT * FROM iam FINAL");
    assert_eq!(rows.len(), 99);
    for row in &rows {
        let seq = iam_seq(&serde_json::json!({"Request": row["request"]}));
        assert_ne!(seq, 40, "the record ClickHouse would wrap is not stored");
        assert_eq!(int(&row["expire_at"]), IN_2123, "seq {seq}");
        assert_eq!(
            row["timestamp"],
            datetime(records[seq as usize].timestamp),
            "seq {seq}"
        );
    }
    assert_eq!(
        host.metric("pumphouse_records_dead_lettered_total{pump=\"clickhouse\"}"),
        1.0
    );
}

#[test]
fn tyk_records_reach_clickhouse_field_by_field_and_a_bad_row_is_dead_lettered_alone() {
    let Some(ch) = ClickHouse::start() else {
        return;
    };
    ch.query(TYK_TABLE);
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = tyk_records(21, 0..200);
    let mut bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_tyk).collect();
    // A text column cannot take a number: ClickHouse names the row.
    let poison = tyk_records(22, 999..1000);
    bytes.insert(77, tyk_with_numeric_path(&poison[0]));
    push(&mut conn, TYK_KEY, &bytes);
    let host = start_host(&redis, "tyk", &ch.http, "tyk");

    wait_for(WAIT, "200 rows", || (ch.count("tyk") == 200).then_some(()));
    let dead = wait_for(WAIT, "the bad record dead-lettered", || {
        let d = dead_letters(&mut conn, TYK_KEY);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].pump.as_deref(), Some("clickhouse"));
    // ClickHouse's own words, naming the column.
    assert!(
        dead[0].reason.contains("Code: 26") && dead[0].reason.contains("key path"),
        "{}",
        dead[0].reason
    );
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });

    let rows = ch.rows("SELECT * FROM tyk FINAL");
    assert_eq!(rows.len(), 200);
    let mut by_seq: Vec<Option<&Value>> = vec![None; 200];
    for row in &rows {
        let seq = tyk_seq(row["path"].as_str().unwrap()) as usize;
        assert!(by_seq[seq].is_none(), "seq {seq} stored twice");
        by_seq[seq] = Some(row);
    }
    for (seq, r) in records.iter().enumerate() {
        let row = by_seq[seq].unwrap_or_else(|| panic!("seq {seq} missing"));
        let text = [
            ("timestamp", datetime(r.timestamp.0)),
            ("method", r.method.clone()),
            ("host", r.host.clone()),
            ("path", r.path.clone()),
            ("raw_path", r.raw_path.clone()),
            ("user_agent", r.user_agent.clone()),
            ("api_key", r.api_key.clone()),
            ("api_version", r.api_version.clone()),
            ("api_name", r.api_name.clone()),
            ("api_id", r.api_id.clone()),
            ("org_id", r.org_id.clone()),
            ("oauth_id", r.oauth_id.clone()),
            ("raw_request", r.raw_request.clone()),
            ("raw_response", r.raw_response.clone()),
            ("ip_address", r.ip_address.clone()),
            ("country", r.geo_country.clone()),
            ("alias", r.alias.clone()),
            ("original_path", r.original_path.clone()),
            ("listen_path", r.listen_path.clone()),
        ];
        for (column, expected) in text {
            assert_eq!(row[column], expected.as_str(), "seq {seq} {column}");
        }
        let ints = [
            ("content_length", r.content_length),
            ("response_code", r.response_code),
            ("request_time", r.request_time),
            ("latency_total", r.latency[0]),
            ("latency_upstream", r.latency[1]),
            ("latency_gateway", r.latency[2]),
            ("bytes_in", r.network[2]),
            ("bytes_out", r.network[3]),
            ("track_path", i64::from(r.track_path)),
            ("expire_at", r.expire_at.0),
        ];
        for (column, expected) in ints {
            assert_eq!(int(&row[column]), expected, "seq {seq} {column}");
        }
        assert_eq!(row["tags"], serde_json::json!(r.tags), "seq {seq}");
        assert!(id(&row["_id"]) != 0, "seq {seq}");
    }
    assert_eq!(
        host.metric("pumphouse_records_dead_lettered_total{pump=\"clickhouse\"}"),
        1.0
    );
}

impl Restartable for ClickHouse {
    fn kill(&mut self) {
        self.process.kill();
    }
    fn restart(&mut self) {
        ClickHouse::restart(self);
    }
    fn held(&self, table: &str) -> u64 {
        self.count(table)
    }
}

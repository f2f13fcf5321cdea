//! The `sql` sink against real PostgreSQL servers: tyk-pump's table
//! layout, records read back field by field, a server crash with every
//! row once, a redelivered batch adding nothing, a poison row
//! dead-lettered alone, day tables, credentials and grants named on
//! /readyz, and TLS verified against the pump's CA.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;
use crate::redis_prod::Pki;
use crate::sink_servers::*;
use crate::sql_servers::*;

use pumphouse::record::{IAM_KEY, TYK_KEY};

const WAIT: Duration = Duration::from_secs(120);
const PASSWORD_VAR: &str = "PUMPHOUSE_TEST_PG_PASSWORD";
const PASSWORD: &str = "pump-s3cret";

/// tyk-pump's `tyk_analytics` as its gorm fork creates it on PostgreSQL
/// (`CREATE TABLE` logged by tyk-pump's `sql` pump), column by column,
/// with `pumphouse_id` first.
const TYK_PUMP_COLUMNS: &[(&str, &str)] = &[
    ("pumphouse_id", "bigint"),
    ("method", "text"),
    ("host", "text"),
    ("path", "text"),
    ("rawpath", "text"),
    ("contentlength", "bigint"),
    ("useragent", "text"),
    ("day", "bigint"),
    ("month", "bigint"),
    ("year", "bigint"),
    ("hour", "bigint"),
    ("responsecode", "bigint"),
    ("apikey", "text"),
    ("timestamp", "timestamp with time zone"),
    ("apiversion", "text"),
    ("api_name", "text"),
    ("apiid", "text"),
    ("orgid", "text"),
    ("oauthid", "text"),
    ("requesttime", "bigint"),
    ("rawrequest", "text"),
    ("rawresponse", "text"),
    ("ipaddress", "text"),
    ("geo_country_iso_code", "text"),
    ("geo_city_geoname_id", "bigint"),
    ("geo_city_names", "text"),
    ("geo_location_latitude", "numeric"),
    ("geo_location_longitude", "numeric"),
    ("geo_location_time_zone", "text"),
    ("network_open_connections", "bigint"),
    ("network_closed_connections", "bigint"),
    ("network_bytes_in", "bigint"),
    ("network_bytes_out", "bigint"),
    ("latency_total", "bigint"),
    ("latency_upstream", "bigint"),
    ("latency_gateway", "bigint"),
    ("tags", "text"),
    ("alias", "text"),
    ("trackpath", "boolean"),
    ("expireAt", "timestamp with time zone"),
    ("originalpath", "text"),
    ("listenpath", "text"),
    ("graphql_stats_variables", "text"),
    ("graphql_stats_root_fields", "text"),
    ("graphql_stats_types", "text"),
    ("graphql_stats_errors", "text"),
    ("graphql_stats_operation_type", "bigint"),
    ("graphql_stats_has_errors", "boolean"),
    ("graphql_stats_is_graph_ql", "boolean"),
    ("mcp_stats_is_mcp", "boolean"),
    ("mcp_stats_jsonrpc_method", "text"),
    ("mcp_stats_primitive_type", "text"),
    ("mcp_stats_primitive_name", "text"),
];

/// A database `analytics` and a login role `pump` owning it.
fn prepare(pg: &Postgres) {
    pg.psql(
        "postgres",
        &format!("CREATE ROLE pump LOGIN PASSWORD '{PASSWORD}'"),
    );
    pg.psql("postgres", "CREATE DATABASE analytics OWNER pump");
}

/// The `sql` sink writing to `url`, its password from the sandbox env.
fn pump(name: &str, pg: &Postgres, url: String) -> Pump {
    Pump::new(name, plugin("sql"))
        .retry("50ms", "500ms")
        .config("connection", url)
        .sandbox("sockets", strings([format!("127.0.0.1:{}", pg.port)]))
        .sandbox("env", strings([PASSWORD_VAR]))
}

fn url(pg: &Postgres, params: &str) -> String {
    pg.url("pump", &format!("${{{PASSWORD_VAR}}}"), "analytics", params)
}

fn start_host(redis: &RedisServer, format: &str, pumps: Vec<Pump>) -> Host {
    let mut config = HostConfig::new(redis)
        .source("format", format)
        .source("batch_size", 50);
    for p in pumps {
        config = config.pump(p);
    }
    Host::start_in_env(
        tempfile::tempdir().unwrap(),
        config,
        &[(PASSWORD_VAR, PASSWORD)],
    )
}

/// RFC 3339 in UTC as `to_json` writes a timestamptz in a UTC session:
/// PostgreSQL keeps microseconds, rounding the nanoseconds.
fn pg_time(secs: i64, nanos: u32) -> String {
    let micros = i64::from(secs) * 1_000_000 + i64::from((nanos + 500) / 1000);
    let t = time::OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000)).unwrap();
    let base = t
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]"
        ))
        .unwrap();
    let frac = match micros.rem_euclid(1_000_000) {
        0 => String::new(),
        m => format!(".{m:06}").trim_end_matches('0').to_string(),
    };
    format!("{base}{frac}+00:00")
}

fn utc_rows(pg: &Postgres, select: &str) -> Vec<Value> {
    pg.rows("analytics", &format!("SELECT * FROM ({select}) s"))
}

#[test]
fn tyk_records_reach_postgres_in_tyk_pumps_layout_field_by_field() {
    let Some(pg) = Postgres::start(None) else {
        return;
    };
    prepare(&pg);
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_tyk(&mut conn, TYK_KEY, 300, 5);
    let host = start_host(&redis, "tyk", vec![pump("sql", &pg, url(&pg, ""))]);
    wait_for(WAIT, "300 rows", || {
        (pg.count("analytics", "tyk_analytics") == 300).then_some(())
    });
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });

    // The layout tyk-pump creates, name by name and type by type.
    let columns = pg.psql(
        "analytics",
        "SELECT string_agg(column_name || ' ' || data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'tyk_analytics'",
    );
    let expected: Vec<String> = TYK_PUMP_COLUMNS
        .iter()
        .map(|(n, t)| format!("{n} {t}"))
        .collect();
    assert_eq!(columns.split(',').collect::<Vec<_>>(), expected);
    let indexes = pg.psql(
        "analytics",
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = 'tyk_analytics'",
    );
    assert_eq!(
        indexes,
        "tyk_analytics_idx_apiid,tyk_analytics_idx_apikey,tyk_analytics_idx_oauthid,tyk_analytics_idx_orgid,tyk_analytics_idx_responsecode,tyk_analytics_idx_timestamp,tyk_analytics_pumphouse_id"
    );

    // Field by field. `SET TimeZone` is per session: psql's own is UTC too.
    let rows = utc_rows(&pg, "SELECT * FROM tyk_analytics");
    let mut by_seq: BTreeMap<u64, &Value> = BTreeMap::new();
    for row in &rows {
        let seq = tyk_seq(row["path"].as_str().unwrap());
        assert!(by_seq.insert(seq, row).is_none(), "seq {seq} twice");
    }
    assert_eq!(by_seq.len(), 300);
    for (seq, r) in records.iter().enumerate() {
        let row = by_seq[&(seq as u64)];
        let s = |c: &str| {
            row[c]
                .as_str()
                .unwrap_or_else(|| panic!("{c}: {row}"))
                .to_string()
        };
        let i = |c: &str| row[c].as_i64().unwrap_or_else(|| panic!("{c}: {row}"));
        assert_eq!(s("method"), r.method, "seq {seq}");
        assert_eq!(s("host"), r.host);
        assert_eq!(s("rawpath"), r.raw_path);
        assert_eq!(i("contentlength"), r.content_length);
        assert_eq!(s("useragent"), r.user_agent);
        assert_eq!(
            (i("day"), i("month"), i("year"), i("hour")),
            (r.day, r.month, r.year, r.hour)
        );
        assert_eq!(i("responsecode"), r.response_code);
        assert_eq!(s("apikey"), r.api_key);
        assert_eq!(
            s("timestamp"),
            pg_time(r.timestamp.0, r.timestamp.1),
            "seq {seq}"
        );
        assert_eq!(s("apiversion"), r.api_version);
        assert_eq!(s("api_name"), r.api_name);
        assert_eq!(s("apiid"), r.api_id);
        assert_eq!(s("orgid"), r.org_id);
        assert_eq!(s("oauthid"), r.oauth_id);
        assert_eq!(i("requesttime"), r.request_time);
        assert_eq!(s("rawrequest"), r.raw_request);
        assert_eq!(s("rawresponse"), r.raw_response);
        assert_eq!(s("ipaddress"), r.ip_address);
        assert_eq!(s("geo_country_iso_code"), r.geo_country);
        assert_eq!(row["geo_city_geoname_id"].as_u64(), Some(r.geo_city_id));
        let names: BTreeMap<String, String> = serde_json::from_str(&s("geo_city_names")).unwrap();
        assert_eq!(names, r.geo_city_names);
        assert_eq!(row["geo_location_latitude"].as_f64(), Some(r.geo_lat));
        assert_eq!(row["geo_location_longitude"].as_f64(), Some(r.geo_lon));
        assert_eq!(s("geo_location_time_zone"), r.geo_tz);
        assert_eq!(
            [
                i("network_open_connections"),
                i("network_closed_connections"),
                i("network_bytes_in"),
                i("network_bytes_out")
            ],
            r.network
        );
        assert_eq!(
            [
                i("latency_total"),
                i("latency_upstream"),
                i("latency_gateway")
            ],
            r.latency
        );
        let tags: Vec<String> = serde_json::from_str(&s("tags")).unwrap();
        assert_eq!(tags, r.tags);
        assert_eq!(s("alias"), r.alias);
        assert_eq!(row["trackpath"].as_bool(), Some(r.track_path));
        assert_eq!(s("expireAt"), pg_time(r.expire_at.0, r.expire_at.1));
        assert_eq!(s("originalpath"), r.original_path);
        assert_eq!(s("listenpath"), r.listen_path);
        assert_eq!(row["graphql_stats_is_graph_ql"].as_bool(), Some(false));
        assert_eq!(s("graphql_stats_root_fields"), "[]");
    }
    let ids: HashSet<i64> = rows
        .iter()
        .map(|r| r["pumphouse_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 300);
    assert!(dead_letters(&mut conn, TYK_KEY).is_empty());
    assert_eq!(
        host.metric("pumphouse_pump_errors_total{pump=\"sql\",kind=\"fatal\"}"),
        0.0
    );
}

/// The rows' iam `seq` numbers, each once.
fn iam_seqs(pg: &Postgres, table: &str) -> Vec<u64> {
    let rows = utc_rows(pg, &format!("SELECT request::text AS r FROM {table}"));
    let mut seqs: Vec<u64> = rows
        .iter()
        .map(|row| iam_seq(&serde_json::json!({"Request": row["r"]})))
        .collect();
    seqs.sort();
    seqs
}

/// What `ServerProcess`-backed restarts need of a server.
struct Restarts<'a>(&'a mut Postgres);

impl Restartable for Restarts<'_> {
    fn kill(&mut self) {
        self.0.kill();
    }
    fn restart(&mut self) {
        self.0.restart();
    }
    fn held(&self, table: &str) -> u64 {
        self.0.count("analytics", table)
    }
}

#[test]
fn iam_records_survive_a_postgres_crash_once_each_and_a_redelivery_adds_nothing() {
    let Some(mut pg) = Postgres::start(None) else {
        return;
    };
    prepare(&pg);
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let (records, host) = {
        let pg_ref = &mut pg;
        let pump = pump("sql", pg_ref, url(pg_ref, "?sslmode=disable"));
        deliver_across_a_restart(
            &mut Restarts(pg_ref),
            &mut conn,
            IAM_KEY,
            "iam_analytics",
            "sql",
            21,
            || start_host(&redis, "iam", vec![pump]),
        )
    };
    assert_eq!(iam_seqs(&pg, "iam_analytics"), (0..600).collect::<Vec<_>>());

    // Field by field, JSON text stored as jsonb.
    let rows = utc_rows(
        &pg,
        "SELECT timestamp, username, effect, conclusion, request::text AS request, policies, deciders, expire_at FROM iam_analytics",
    );
    for row in &rows {
        let seq = iam_seq(&serde_json::json!({"Request": row["request"]})) as usize;
        let r = &records[seq];
        assert_eq!(row["timestamp"], pg_time(r.timestamp, 0), "seq {seq}");
        assert_eq!(row["username"], r.username.as_str());
        assert_eq!(row["effect"], r.effect.as_str());
        assert_eq!(row["conclusion"], r.conclusion.as_str());
        let json = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(json(row["request"].as_str().unwrap()), json(&r.request));
        assert_eq!(row["policies"], json(&r.policies));
        assert_eq!(row["deciders"], json(&r.deciders));
        assert_eq!(row["expire_at"], pg_time(r.expire_at.0, r.expire_at.1));
    }

    // The same bytes again, as after a lost ack: nothing new is stored.
    push_iam_records(&mut conn, IAM_KEY, &records[..120]);
    wait_for(WAIT, "the redelivery acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    assert_eq!(pg.count("analytics", "iam_analytics"), 600);
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
    assert_eq!(
        host.metric("pumphouse_pump_errors_total{pump=\"sql\",kind=\"fatal\"}"),
        0.0
    );
}

#[test]
fn day_tables_and_a_poison_row_dead_lettered_alone() {
    let Some(pg) = Postgres::start(None) else {
        return;
    };
    prepare(&pg);
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    const DAY: i64 = 86_400;
    let day0 = T0 - T0.rem_euclid(DAY);
    let mut records = iam_records(41, 0..200);
    for (i, r) in records.iter_mut().enumerate() {
        // Half on one day, half on the next.
        r.timestamp = day0 + if i < 100 { 3600 } else { DAY + 3600 } + i as i64;
    }
    // Not JSON: the jsonb column refuses this one row.
    records[150].policies = "[not json".into();
    push_iam_records(&mut conn, IAM_KEY, &records);
    let host = start_host(
        &redis,
        "iam",
        vec![pump("sql", &pg, url(&pg, "")).config("table_sharding", true)],
    );
    let date = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap()
            .format(time::macros::format_description!("[year][month][day]"))
            .unwrap()
    };
    let (first, second) = (
        format!("iam_analytics_{}", date(day0)),
        format!("iam_analytics_{}", date(day0 + DAY)),
    );
    wait_for(WAIT, "both day tables filled", || {
        (pg.count("analytics", &first) == 100 && pg.count("analytics", &second) == 99).then_some(())
    });
    let dead = wait_for(WAIT, "the poison row dead-lettered", || {
        let d = dead_letters(&mut conn, IAM_KEY);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].pump.as_deref(), Some("sql"));
    assert!(
        dead[0]
            .reason
            .contains("invalid input syntax for type json")
            && dead[0].reason.contains("SQLSTATE 22P02"),
        "{}",
        dead[0].reason
    );
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let mut stored = iam_seqs(&pg, &first);
    stored.extend(iam_seqs(&pg, &second));
    stored.sort();
    let expected: Vec<u64> = (0..200).filter(|s| *s != 150).collect();
    assert_eq!(stored, expected);
    assert_eq!(
        host.metric("pumphouse_records_dead_lettered_total{pump=\"sql\"}"),
        1.0
    );
}

/// The `/readyz` entry of pump `name`.
fn readyz_pump(host: &Host, name: &str) -> Option<Value> {
    let (_, body) = http_get(&host.http, "/readyz").ok()?;
    let doc: Value = serde_json::from_str(&body).ok()?;
    doc["pumps"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// Waits until `/readyz` reports pump `name` with an error containing
/// every one of `needles`.
fn wait_readyz_error(host: &Host, name: &str, needles: &[&str]) -> Value {
    wait_for(WAIT, &format!("/readyz to name {name}'s error"), || {
        let entry = readyz_pump(host, name)?;
        let text = entry.to_string();
        needles.iter().all(|n| text.contains(n)).then_some(entry)
    })
}

#[test]
fn a_wrong_password_and_a_missing_insert_grant_are_named_on_readyz() {
    let Some(pg) = Postgres::start(None) else {
        return;
    };
    prepare(&pg);
    // A table the operator made, and a role that may only read it.
    pg.psql(
        "analytics",
        "CREATE TABLE iam_analytics (pumphouse_id bigint UNIQUE, timestamp timestamptz, username text, effect text, conclusion text, request jsonb, policies jsonb, deciders jsonb, expire_at timestamptz)",
    );
    pg.psql("analytics", &format!("CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'; GRANT SELECT ON iam_analytics TO reader"));
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 20, 3);
    let host = start_host(
        &redis,
        "iam",
        vec![
            pump(
                "wrong-password",
                &pg,
                pg.url("pump", "not-the-password", "analytics", ""),
            ),
            pump(
                "read-only",
                &pg,
                pg.url("reader", &format!("${{{PASSWORD_VAR}}}"), "analytics", ""),
            ),
        ],
    );
    let wrong = wait_readyz_error(
        &host,
        "wrong-password",
        &["password authentication failed for user", "pump", "28P01"],
    );
    assert!(
        !wrong.to_string().contains("not-the-password"),
        "the password leaks: {wrong}"
    );
    wait_readyz_error(
        &host,
        "read-only",
        &["permission denied for table iam_analytics", "42501"],
    );
    let (code, _) = http_get(&host.http, "/readyz").unwrap();
    assert_eq!(code, 503);
    // Nothing was taken for good: the records wait for a fixed config.
    assert_eq!(pg.count("analytics", "iam_analytics"), 0);
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
}

#[test]
fn tls_to_postgres_is_verified_against_the_pumps_ca() {
    let pki = Pki::new();
    let (cert, key) = (pki.path("server.crt"), pki.path("server.key"));
    let Some(pg) = Postgres::start(Some(PgTls {
        cert: &cert,
        key: &key,
    })) else {
        return;
    };
    prepare(&pg);
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 100, 9);
    let host = start_host(
        &redis,
        "iam",
        vec![
            pump("tls", &pg, url(&pg, "?sslmode=verify-full"))
                .sandbox("tls_ca_files", strings([pki.path("ca.crt")])),
            // No CA: the certificate cannot be verified, and require does
            // not fall back to the clear.
            pump("untrusted", &pg, url(&pg, "?sslmode=require")).config("table", "untrusted"),
        ],
    );
    wait_for(WAIT, "100 rows over TLS", || {
        (pg.count("analytics", "iam_analytics") == 100).then_some(())
    });
    wait_readyz_error(&host, "untrusted", &["TLS", "127.0.0.1"]);
    // The server saw an encrypted session from the pump.
    wait_for(WAIT, "an SSL session of the pump", || {
        let n = pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND application_name = 'pumphouse'",
        );
        (n != "0").then_some(())
    });
    assert_eq!(pg.count("analytics", "untrusted"), 0);
}

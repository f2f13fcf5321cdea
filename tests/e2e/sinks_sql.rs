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

/// What the shared scenarios need of either database.
trait Db {
    /// `postgres` or `mysql`, for messages.
    fn name(&self) -> &'static str;
    /// A database `analytics` and a login `pump` with every right on it.
    fn prepare(&self);
    /// The connection URL of `user` (password from the sandbox env).
    fn url_of(&self, user: &str, params: &str) -> String;
    fn port(&self) -> u16;
    fn count(&self, table: &str) -> u64;
    /// Rows of `select` as text, `None` for NULL.
    fn rows(&self, select: &str) -> Vec<BTreeMap<String, Option<String>>>;
    /// How the database shows a stored time read back as text.
    fn time(&self, secs: i64, nanos: u32) -> String;
    /// How it shows a boolean.
    fn boolean(&self, b: bool) -> &'static str;
    /// Column name and type of `table`, in order.
    fn columns(&self, table: &str) -> Vec<String>;
    /// Index names of `table`, sorted.
    fn indexes(&self, table: &str) -> Vec<String>;
    /// `SELECT` of the JSON text column `column` as text.
    fn json_text(&self, column: &str) -> String;
    /// The one value `select` returns (as column `n`), `None` on an
    /// error such as a missing table.
    fn try_scalar(&self, select: &str) -> Option<String>;
    /// Runs `sql` in `analytics`, creating what the pump's login owns
    /// or may use.
    fn exec(&self, sql: &str);
    /// A `SELECT` of the number of sessions the login `pump` holds, as `n`.
    fn sessions_of_pump(&self) -> &'static str;
    fn kill(&mut self);
    fn restart(&mut self);
}

impl Db for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn sessions_of_pump(&self) -> &'static str {
        "SELECT count(*) AS n FROM pg_stat_activity WHERE usename = 'pump'"
    }
    fn prepare(&self) {
        self.psql(
            "postgres",
            &format!("CREATE ROLE pump LOGIN PASSWORD '{PASSWORD}'"),
        );
        self.psql("postgres", "CREATE DATABASE analytics OWNER pump");
    }
    fn url_of(&self, user: &str, params: &str) -> String {
        self.url(user, &format!("${{{PASSWORD_VAR}}}"), "analytics", params)
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn count(&self, table: &str) -> u64 {
        Postgres::count(self, "analytics", table)
    }
    fn rows(&self, select: &str) -> Vec<BTreeMap<String, Option<String>>> {
        Postgres::rows(self, "analytics", select)
            .into_iter()
            .map(|row| {
                let Value::Object(map) = row else {
                    panic!("a row is an object")
                };
                map.into_iter()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::Null => None,
                            Value::String(s) => Some(s),
                            other => Some(other.to_string()),
                        };
                        (k, text)
                    })
                    .collect()
            })
            .collect()
    }
    fn time(&self, secs: i64, nanos: u32) -> String {
        // Microseconds, rounded, as `to_json` writes a timestamptz in UTC.
        let (base, micros) = split_time(secs, nanos, 6);
        format!("{}T{}{}+00:00", &base[..10], &base[11..], micros)
    }
    fn boolean(&self, b: bool) -> &'static str {
        if b {
            "true"
        } else {
            "false"
        }
    }
    fn columns(&self, table: &str) -> Vec<String> {
        self.psql(
            "analytics",
            &format!("SELECT string_agg(column_name || ' ' || data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = '{table}'"),
        )
        .split(',')
        .map(String::from)
        .collect()
    }
    fn indexes(&self, table: &str) -> Vec<String> {
        self.psql(
            "analytics",
            &format!("SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename = '{table}'"),
        )
        .split(',')
        .map(String::from)
        .collect()
    }
    fn json_text(&self, column: &str) -> String {
        format!("{column}::text")
    }
    fn try_scalar(&self, select: &str) -> Option<String> {
        self.try_psql("analytics", select).ok()
    }
    fn exec(&self, sql: &str) {
        self.psql("analytics", &format!("SET ROLE pump; {sql}"));
    }
    fn kill(&mut self) {
        Postgres::kill(self)
    }
    fn restart(&mut self) {
        Postgres::restart(self)
    }
}

impl Db for MariaDb {
    fn name(&self) -> &'static str {
        "mysql"
    }
    fn sessions_of_pump(&self) -> &'static str {
        "SELECT count(*) AS n FROM information_schema.processlist WHERE user = 'pump'"
    }
    fn prepare(&self) {
        self.sql(&format!(
            "CREATE DATABASE analytics; CREATE USER pump@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON analytics.* TO pump@'127.0.0.1'"
        ));
    }
    fn url_of(&self, user: &str, params: &str) -> String {
        self.url(user, &format!("${{{PASSWORD_VAR}}}"), "analytics", params)
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn count(&self, table: &str) -> u64 {
        MariaDb::count(self, &format!("analytics.{table}"))
    }
    fn rows(&self, select: &str) -> Vec<BTreeMap<String, Option<String>>> {
        MariaDb::rows(self, &format!("USE analytics; {select}"))
    }
    fn time(&self, secs: i64, nanos: u32) -> String {
        // datetime(3): milliseconds, rounded.
        let (base, millis) = split_time(secs, nanos, 3);
        let millis = if millis.is_empty() {
            ".000".to_string()
        } else {
            format!("{millis:0<4}")
        };
        format!("{base}{millis}")
    }
    fn boolean(&self, b: bool) -> &'static str {
        if b {
            "1"
        } else {
            "0"
        }
    }
    fn columns(&self, table: &str) -> Vec<String> {
        MariaDb::rows(
            self,
            &format!("SELECT concat(column_name, ' ', column_type) AS c FROM information_schema.columns WHERE table_schema = 'analytics' AND table_name = '{table}' ORDER BY ordinal_position"),
        )
        .into_iter()
        .map(|r| r["c"].clone().unwrap())
        .collect()
    }
    fn indexes(&self, table: &str) -> Vec<String> {
        MariaDb::rows(
            self,
            &format!("SELECT DISTINCT index_name AS i FROM information_schema.statistics WHERE table_schema = 'analytics' AND table_name = '{table}' ORDER BY index_name"),
        )
        .into_iter()
        .map(|r| r["i"].clone().unwrap())
        .collect()
    }
    fn json_text(&self, column: &str) -> String {
        column.to_string()
    }
    fn try_scalar(&self, select: &str) -> Option<String> {
        let out = self.try_sql(&format!("USE analytics; {select}")).ok()?;
        Some(out.lines().nth(1)?.trim().to_string())
    }
    fn exec(&self, sql: &str) {
        self.sql(&format!("USE analytics; {sql}"));
    }
    fn kill(&mut self) {
        MariaDb::kill(self)
    }
    fn restart(&mut self) {
        MariaDb::restart(self)
    }
}

/// `YYYY-MM-DD hh:mm:ss` and `.fff…` (trailing zeros cut, empty for
/// none) of a time rounded to `digits` fractional digits.
fn split_time(secs: i64, nanos: u32, digits: u32) -> (String, String) {
    let unit = 10i64.pow(9 - digits);
    let scale = 10i64.pow(digits);
    let ticks = secs * scale + (i64::from(nanos) + unit / 2) / unit;
    let t = time::OffsetDateTime::from_unix_timestamp(ticks.div_euclid(scale)).unwrap();
    let base = t
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap();
    let frac = match ticks.rem_euclid(scale) {
        0 => String::new(),
        f => format!(".{f:0width$}", width = digits as usize)
            .trim_end_matches('0')
            .to_string(),
    };
    (base, frac)
}

/// The `sql` sink writing to `url`, its password from the sandbox env.
fn pump(name: &str, db: &dyn Db, url: String) -> Pump {
    Pump::new(name, plugin("sql"))
        .retry("50ms", "500ms")
        .config("connection", url)
        .sandbox("sockets", strings([format!("127.0.0.1:{}", db.port())]))
        .sandbox("env", strings([PASSWORD_VAR]))
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

/// tyk-pump's MySQL column types as MariaDB reports them.
fn mysql_type(tyk_pump: &str, pg: &str) -> &'static str {
    match (tyk_pump, pg) {
        (_, "text") => "longtext",
        ("geo_city_geoname_id", _) => "bigint(20) unsigned",
        (_, "bigint") => "bigint(20)",
        (_, "numeric") => "double",
        (_, "boolean") => "tinyint(1)",
        (_, "timestamp with time zone") => "datetime(3)",
        other => panic!("no MySQL type for {other:?}"),
    }
}

/// 300 Tyk records into `db`: the layout is tyk-pump's, every field comes
/// back, each record once.
fn tyk_records_field_by_field(db: &dyn Db) {
    db.prepare();
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_tyk(&mut conn, TYK_KEY, 300, 5);
    let host = start_host(&redis, "tyk", vec![pump("sql", db, db.url_of("pump", ""))]);
    wait_for(WAIT, "300 rows", || {
        (db.count("tyk_analytics") == 300).then_some(())
    });
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });

    // The layout tyk-pump creates, name by name and type by type.
    let expected: Vec<String> = TYK_PUMP_COLUMNS
        .iter()
        .map(|(n, t)| match db.name() {
            "postgres" => format!("{n} {t}"),
            _ => format!("{n} {}", mysql_type(n, t)),
        })
        .collect();
    assert_eq!(db.columns("tyk_analytics"), expected);
    let mut indexes: Vec<String> = [
        "apiid",
        "apikey",
        "oauthid",
        "orgid",
        "responsecode",
        "timestamp",
    ]
    .iter()
    .map(|c| format!("tyk_analytics_idx_{c}"))
    .collect();
    indexes.push("tyk_analytics_pumphouse_id".into());
    assert_eq!(db.indexes("tyk_analytics"), indexes);

    let rows = db.rows("SELECT * FROM tyk_analytics");
    let mut by_seq: BTreeMap<u64, &BTreeMap<String, Option<String>>> = BTreeMap::new();
    for row in &rows {
        let seq = tyk_seq(row["path"].as_deref().unwrap());
        assert!(by_seq.insert(seq, row).is_none(), "seq {seq} twice");
    }
    assert_eq!(by_seq.len(), 300);
    for (seq, r) in records.iter().enumerate() {
        let row = by_seq[&(seq as u64)];
        let s = |c: &str| {
            row.get(c)
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("{c} of seq {seq}: {row:?}"))
        };
        let i = |c: &str| {
            s(c).parse::<i64>()
                .unwrap_or_else(|_| panic!("{c}: {row:?}"))
        };
        let f = |c: &str| s(c).parse::<f64>().unwrap();
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
            db.time(r.timestamp.0, r.timestamp.1),
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
        assert_eq!(s("geo_city_geoname_id"), r.geo_city_id.to_string());
        let names: BTreeMap<String, String> = serde_json::from_str(&s("geo_city_names")).unwrap();
        assert_eq!(names, r.geo_city_names);
        assert_eq!(f("geo_location_latitude"), r.geo_lat);
        assert_eq!(f("geo_location_longitude"), r.geo_lon);
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
        assert_eq!(s("trackpath"), db.boolean(r.track_path));
        assert_eq!(s("expireAt"), db.time(r.expire_at.0, r.expire_at.1));
        assert_eq!(s("originalpath"), r.original_path);
        assert_eq!(s("listenpath"), r.listen_path);
        assert_eq!(s("graphql_stats_is_graph_ql"), db.boolean(false));
        assert_eq!(s("graphql_stats_root_fields"), "[]");
    }
    let ids: HashSet<String> = rows
        .iter()
        .map(|r| r["pumphouse_id"].clone().unwrap())
        .collect();
    assert_eq!(ids.len(), 300);
    assert!(dead_letters(&mut conn, TYK_KEY).is_empty());
    assert_eq!(
        host.metric("pumphouse_pump_errors_total{pump=\"sql\",kind=\"fatal\"}"),
        0.0
    );
}

#[test]
fn tyk_records_reach_postgres_in_tyk_pumps_layout_field_by_field() {
    if let Some(pg) = Postgres::start(None) {
        tyk_records_field_by_field(&pg);
    }
}

#[test]
fn tyk_records_reach_mariadb_in_tyk_pumps_layout_field_by_field() {
    if let Some(db) = MariaDb::start() {
        tyk_records_field_by_field(&db);
        // They went in through the bulk path and stayed: 300 records in
        // batches of 50 are at least 6 loads, and no INSERT ran.
        let status = |name: &str| -> u64 {
            let out = db.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"));
            out.split_whitespace()
                .last()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name}: {out:?}"))
        };
        assert!(status("Com_load") >= 6, "LOAD DATA statements");
        assert_eq!(status("Com_insert"), 0, "INSERT statements");
    }
}

/// The rows' iam `seq` numbers, sorted.
fn iam_seqs(db: &dyn Db, table: &str) -> Vec<u64> {
    let rows = db.rows(&format!(
        "SELECT {} AS r FROM {table}",
        db.json_text("request")
    ));
    let mut seqs: Vec<u64> = rows
        .iter()
        .map(|row| iam_seq(&serde_json::json!({"Request": row["r"]})))
        .collect();
    seqs.sort();
    seqs
}

struct Restarts<'a>(&'a mut dyn Db);

impl Restartable for Restarts<'_> {
    fn kill(&mut self) {
        self.0.kill();
    }
    fn restart(&mut self) {
        self.0.restart();
    }
    fn held(&self, table: &str) -> u64 {
        self.0.count(table)
    }
}

/// Sink instances writing side by side in the crash test, each with its
/// own session.
const WORKERS: i64 = 3;

/// iam records across a crash of `db`, written by [`WORKERS`] instances
/// side by side: each row once, every field, one session per instance,
/// and the same records redelivered add nothing.
fn iam_records_across_a_crash(db: &mut dyn Db, params: &str) {
    db.prepare();
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let pump = pump("sql", db, db.url_of("pump", params)).set("workers", WORKERS);
    let (records, host) = deliver_across_a_restart(
        &mut Restarts(db),
        &mut conn,
        IAM_KEY,
        "iam_analytics",
        "sql",
        21,
        || start_host(&redis, "iam", vec![pump]),
    );
    assert_eq!(iam_seqs(db, "iam_analytics"), (0..600).collect::<Vec<_>>());

    let rows = db.rows(&format!(
        "SELECT timestamp, username, effect, conclusion, {}, {}, {}, expire_at FROM iam_analytics",
        db.json_text("request"),
        db.json_text("policies"),
        db.json_text("deciders")
    ));
    let json = |s: &Option<String>| serde_json::from_str::<Value>(s.as_deref().unwrap()).unwrap();
    for row in &rows {
        let request = row
            .iter()
            .find(|(k, _)| k.starts_with("request"))
            .unwrap()
            .1;
        let policies = row
            .iter()
            .find(|(k, _)| k.starts_with("policies"))
            .unwrap()
            .1;
        let deciders = row
            .iter()
            .find(|(k, _)| k.starts_with("deciders"))
            .unwrap()
            .1;
        let seq = iam_seq(&serde_json::json!({"Request": request})) as usize;
        let r = &records[seq];
        assert_eq!(
            row["timestamp"].as_deref(),
            Some(db.time(r.timestamp, 0).as_str()),
            "seq {seq}"
        );
        assert_eq!(row["username"].as_deref(), Some(r.username.as_str()));
        assert_eq!(row["effect"].as_deref(), Some(r.effect.as_str()));
        assert_eq!(row["conclusion"].as_deref(), Some(r.conclusion.as_str()));
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert_eq!(json(request), parse(&r.request));
        assert_eq!(json(policies), parse(&r.policies));
        assert_eq!(json(deciders), parse(&r.deciders));
        assert_eq!(
            row["expire_at"].as_deref(),
            Some(db.time(r.expire_at.0, r.expire_at.1).as_str())
        );
    }

    // The same bytes again, as after a lost ack: nothing new is stored,
    // though the workers' sessions race to insert them.
    push_iam_records(&mut conn, IAM_KEY, &records[..120]);
    wait_for(WAIT, "the redelivery acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    assert_eq!(db.count("iam_analytics"), 600);
    // Batches go to the waiting workers in turn, so each has written
    // since the restart and holds its own session.
    wait_for(WAIT, "one session per worker", || {
        let n = db.try_scalar(db.sessions_of_pump())?;
        (n.trim().parse::<i64>().ok()? == WORKERS).then_some(())
    });
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
    assert_eq!(
        host.metric("pumphouse_pump_errors_total{pump=\"sql\",kind=\"fatal\"}"),
        0.0
    );
}

#[test]
fn iam_records_survive_a_postgres_crash_once_each_and_a_redelivery_adds_nothing() {
    if let Some(mut pg) = Postgres::start(None) {
        iam_records_across_a_crash(&mut pg, "?sslmode=disable");
    }
}

#[test]
fn iam_records_survive_a_mariadb_crash_once_each_and_a_redelivery_adds_nothing() {
    if let Some(mut db) = MariaDb::start() {
        iam_records_across_a_crash(&mut db, "?ssl-mode=DISABLED");
    }
}

/// Day tables, and one record the database refuses dead-lettered alone
/// with `reason` in its entry.
fn day_tables_and_a_poison_row(db: &dyn Db, reason: &[&str]) {
    db.prepare();
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    const DAY: i64 = 86_400;
    let day0 = T0 - T0.rem_euclid(DAY);
    let mut records = iam_records(41, 0..200);
    for (i, r) in records.iter_mut().enumerate() {
        // Half on one day, half on the next.
        r.timestamp = day0 + if i < 100 { 3600 } else { DAY + 3600 } + i as i64;
    }
    // Not JSON: the JSON column refuses this one row.
    records[150].policies = "[not json".into();
    push_iam_records(&mut conn, IAM_KEY, &records);
    let host = start_host(
        &redis,
        "iam",
        vec![pump("sql", db, db.url_of("pump", "")).config("table_sharding", true)],
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
        (db.count(&first) == 100 && db.count(&second) == 99).then_some(())
    });
    let dead = wait_for(WAIT, "the poison row dead-lettered", || {
        let d = dead_letters(&mut conn, IAM_KEY);
        (!d.is_empty()).then_some(d)
    });
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].pump.as_deref(), Some("sql"));
    for needle in reason {
        assert!(
            dead[0].reason.contains(needle),
            "{needle}: {}",
            dead[0].reason
        );
    }
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let mut stored = iam_seqs(db, &first);
    stored.extend(iam_seqs(db, &second));
    stored.sort();
    let expected: Vec<u64> = (0..200).filter(|s| *s != 150).collect();
    assert_eq!(stored, expected);
    assert_eq!(
        host.metric("pumphouse_records_dead_lettered_total{pump=\"sql\"}"),
        1.0
    );
}

#[test]
fn postgres_day_tables_and_a_poison_row_dead_lettered_alone() {
    if let Some(pg) = Postgres::start(None) {
        day_tables_and_a_poison_row(
            &pg,
            &["invalid input syntax for type json", "SQLSTATE 22P02"],
        );
    }
}

#[test]
fn mariadb_day_tables_and_a_poison_row_dead_lettered_alone() {
    if let Some(db) = MariaDb::start() {
        // MariaDB's JSON is a checked text column.
        day_tables_and_a_poison_row(&db, &["4025", "policies"]);
    }
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
    let mut last = None;
    let found = wait_for_or(WAIT, || {
        let entry = readyz_pump(host, name)?;
        let text = entry.to_string();
        last = Some(text.clone());
        needles.iter().all(|n| text.contains(n)).then_some(entry)
    });
    found.unwrap_or_else(|| {
        panic!(
            "/readyz never named {name}'s error {needles:?}; last: {last:?}\nhost log:\n{}",
            host.log_text()
        )
    })
}

/// Polls `f` until it gives a value or `within` passes.
fn wait_for_or<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A wrong password and a login that may only read an existing table:
/// each pump's error is on /readyz by name, and no record is taken.
fn credentials_and_grants_on_readyz(db: &dyn Db, wrong: &[&str], read_only: &[&str]) {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 20, 3);
    let wrong_url = db
        .url_of("pump", "")
        .replace(&format!("${{{PASSWORD_VAR}}}"), "not-the-password");
    let host = start_host(
        &redis,
        "iam",
        vec![
            pump("wrong-password", db, wrong_url),
            pump("read-only", db, db.url_of("reader", "")),
        ],
    );
    let entry = wait_readyz_error(&host, "wrong-password", wrong);
    assert!(
        !entry.to_string().contains("not-the-password"),
        "the password leaks: {entry}"
    );
    wait_readyz_error(&host, "read-only", read_only);
    let (code, _) = http_get(&host.http, "/readyz").unwrap();
    assert_eq!(code, 503);
    // Nothing was taken for good: the records wait for a fixed config.
    assert_eq!(db.count("iam_analytics"), 0);
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
}

#[test]
fn a_wrong_password_and_a_missing_insert_grant_are_named_on_postgres_readyz() {
    let Some(pg) = Postgres::start(None) else {
        return;
    };
    pg.prepare();
    // A table the operator made, and a role that may only read it.
    pg.psql(
        "analytics",
        "CREATE TABLE iam_analytics (pumphouse_id bigint UNIQUE, timestamp timestamptz, username text, effect text, conclusion text, request jsonb, policies jsonb, deciders jsonb, expire_at timestamptz)",
    );
    pg.psql("analytics", &format!("CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'; GRANT SELECT ON iam_analytics TO reader"));
    credentials_and_grants_on_readyz(
        &pg,
        &["password authentication failed for user", "pump", "28P01"],
        &["permission denied for table iam_analytics", "42501"],
    );
}

#[test]
fn a_wrong_password_and_a_missing_insert_grant_are_named_on_mariadb_readyz() {
    let Some(db) = MariaDb::start() else {
        return;
    };
    db.prepare();
    db.sql(&format!(
        "CREATE TABLE analytics.iam_analytics (pumphouse_id bigint UNIQUE, timestamp datetime(3), username longtext, effect longtext, conclusion longtext, request JSON, policies JSON, deciders JSON, expire_at datetime(3)); \
         CREATE USER reader@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; GRANT SELECT ON analytics.iam_analytics TO reader@'127.0.0.1'"
    ));
    credentials_and_grants_on_readyz(
        &db,
        &["Access denied for user 'pump'", "1045"],
        &["command denied to user 'reader'", "iam_analytics", "1142"],
    );
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
    pg.prepare();
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 100, 9);
    let host = start_host(
        &redis,
        "iam",
        vec![
            pump("tls", &pg, pg.url_of("pump", "?sslmode=verify-full"))
                .sandbox("tls_ca_files", strings([pki.path("ca.crt")])),
            // No CA: the certificate cannot be verified, and require does
            // not fall back to the clear.
            pump("untrusted", &pg, pg.url_of("pump", "?sslmode=require"))
                .config("table", "untrusted"),
        ],
    );
    wait_for(WAIT, "100 rows over TLS", || {
        (Db::count(&pg, "iam_analytics") == 100).then_some(())
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
    assert_eq!(Db::count(&pg, "untrusted"), 0);
}

/// tyk-pump's `tyk_aggregated` as its gorm fork creates it on
/// PostgreSQL (`CREATE TABLE` logged by tyk-pump's `sql_aggregate` pump).
const TYK_AGGREGATED_COLUMNS: &[(&str, &str)] = &[
    ("id", "text"),
    ("counter_hits", "bigint"),
    ("counter_success", "bigint"),
    ("counter_error", "bigint"),
    ("counter_request_time", "numeric"),
    ("counter_total_request_time", "numeric"),
    ("counter_identifier", "text"),
    ("counter_human_identifier", "text"),
    ("counter_last_time", "timestamp with time zone"),
    ("counter_open_connections", "bigint"),
    ("counter_closed_connections", "bigint"),
    ("counter_bytes_in", "bigint"),
    ("counter_bytes_out", "bigint"),
    ("counter_max_upstream_latency", "bigint"),
    ("counter_min_upstream_latency", "bigint"),
    ("counter_total_upstream_latency", "bigint"),
    ("counter_upstream_latency", "numeric"),
    ("counter_max_latency", "bigint"),
    ("counter_min_latency", "bigint"),
    ("counter_total_latency", "bigint"),
    ("counter_latency", "numeric"),
    ("counter_error_map", "text"),
    ("counter_error_list", "text"),
    ("timestamp", "bigint"),
    ("org_id", "text"),
    ("dimension", "text"),
    ("dimension_value", "text"),
    ("code_1x", "bigint"),
    ("code_200", "bigint"),
    ("code_201", "bigint"),
    ("code_2x", "bigint"),
    ("code_301", "bigint"),
    ("code_302", "bigint"),
    ("code_303", "bigint"),
    ("code_304", "bigint"),
    ("code_3x", "bigint"),
    ("code_400", "bigint"),
    ("code_401", "bigint"),
    ("code_403", "bigint"),
    ("code_404", "bigint"),
    ("code_429", "bigint"),
    ("code_4x", "bigint"),
    ("code_500", "bigint"),
    ("code_501", "bigint"),
    ("code_502", "bigint"),
    ("code_503", "bigint"),
    ("code_504", "bigint"),
    ("code_5x", "bigint"),
];

/// Codes with a column of their own in `tyk_aggregated`.
const OWN_CODE_COLUMNS: &[i64] = &[400, 401, 403, 404, 429, 500, 501, 502, 503, 504];

/// 1000 Tyk records over two hours: three orgs, four APIs, ten keys,
/// successes, redirects, errors with and without a column, connection
/// records (code -1), versions, OAuth ids, countries, tags to count and
/// to ignore, paths with dots, tracked and not.
fn aggregate_records() -> Vec<pumphouse::produce::TykRecord> {
    const N: i64 = 1000;
    let hour0 = T0 - T0.rem_euclid(3600);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    const CODES: &[i64] = &[
        200, 200, 200, 201, 204, 301, 304, 400, 401, 403, 404, 404, 418, 429, 500, 502, 503, 504,
        -1,
    ];
    const TAGS: &[&str] = &["key-abc", "t.1", " plain ", "ignored-x", "..", "beta"];
    let mut records = tyk_records(77, 0..N as u64);
    for (i, r) in records.iter_mut().enumerate() {
        r.timestamp = (hour0 + i as i64 * 7200 / N, next(1_000_000_000) as u32);
        r.org_id = format!("org-{}", next(3));
        let api = next(4);
        r.api_id = format!("api-{api}");
        r.api_name = format!("API {api}");
        r.api_version = ["v1", "v2", ""][next(3) as usize].into();
        r.api_key = match next(5) {
            0 => String::new(),
            _ => format!("key{}", next(10)),
        };
        // One alias per key, so the name a row keeps is the same
        // whichever of its records came first.
        r.alias = if r.api_key.is_empty() {
            String::new()
        } else {
            format!("alias of {}", r.api_key)
        };
        r.oauth_id = match next(4) {
            0 => format!("oauth-{}", next(3)),
            _ => String::new(),
        };
        r.response_code = CODES[next(CODES.len() as u64) as usize];
        r.geo_country = ["GB", "US", ""][next(3) as usize].into();
        r.tags = (0..next(3))
            .map(|_| TAGS[next(TAGS.len() as u64) as usize].to_string())
            .collect();
        r.track_path = next(2) == 0;
        r.path = format!("/{}/items/{}.json", r.api_id, next(5));
        r.request_time = next(300) as i64 + 1;
        let total = next(400) as i64 + 1;
        r.latency = [total, total - next(total as u64) as i64, 0];
        r.network = [
            next(3) as i64,
            next(3) as i64,
            next(5000) as i64,
            next(5000) as i64,
        ];
    }
    records
}

/// One `tyk_aggregated` row as this test expects it.
#[derive(Debug, Default, Clone)]
struct Expected {
    hits: i64,
    success: i64,
    error: i64,
    total_request_time: i64,
    total_latency: i64,
    total_upstream: i64,
    max_latency: i64,
    min_latency: Option<i64>,
    max_upstream: i64,
    min_upstream: Option<i64>,
    open: i64,
    closed: i64,
    bytes_in: i64,
    bytes_out: i64,
    codes: BTreeMap<String, i64>,
    last: Option<(i64, u32)>,
    identifier: String,
    human: String,
}

/// The rows `records` make, keyed by (bucket, org, dimension, value),
/// from tyk-pump's rules (each record in its own `bucket`-second bucket).
fn expected_aggregates(
    records: &[pumphouse::produce::TykRecord],
    bucket: i64,
) -> BTreeMap<(i64, String, String, String), Expected> {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD_NO_PAD.encode(s);
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let mut out: BTreeMap<(i64, String, String, String), Expected> = BTreeMap::new();
    for r in records {
        let ts = r.timestamp.0 - r.timestamp.0.rem_euclid(bucket);
        let key =
            |dimension: &str, value: String| (ts, r.org_id.clone(), dimension.to_string(), value);
        if r.response_code == -1 {
            let t = out.entry(key("", "total".into())).or_default();
            t.open += r.network[0];
            t.closed += r.network[1];
            t.bytes_in += r.network[2];
            t.bytes_out += r.network[3];
            t.last = t.last.max(Some(r.timestamp));
            let a = out.entry(key("apiid", r.api_id.clone())).or_default();
            a.bytes_in += r.network[2];
            a.bytes_out += r.network[3];
            a.identifier = r.api_id.clone();
            a.human = r.api_name.clone();
            continue;
        }
        let mut dims: Vec<(&str, String, String, String)> = vec![
            ("", "total".into(), String::new(), String::new()),
            (
                "apiid",
                r.api_id.clone(),
                r.api_id.clone(),
                r.api_name.clone(),
            ),
        ];
        let code = r.response_code;
        if code >= 400 {
            dims.push(("errors", code.to_string(), code.to_string(), String::new()));
        }
        if !r.api_version.is_empty() {
            let v = r.api_version.clone();
            dims.push(("versions", b64(&format!("{}:{v}", r.api_id)), v.clone(), v));
        }
        let hash = b64(&format!("{}:{}", r.api_id, r.path));
        if !r.api_key.is_empty() {
            dims.push((
                "apikeys",
                r.api_key.clone(),
                r.api_key.clone(),
                r.alias.clone(),
            ));
            if r.track_path {
                let v = format!("{}.{hash}", r.api_key);
                dims.push(("keyendpoints", v, hash.clone(), hash.clone()));
            }
        }
        if !r.oauth_id.is_empty() {
            dims.push((
                "oauthids",
                r.oauth_id.clone(),
                r.oauth_id.clone(),
                String::new(),
            ));
            if r.track_path {
                let v = format!("{}.{hash}", r.oauth_id);
                dims.push(("oauthendpoints", v, hash.clone(), hash.clone()));
            }
        }
        if !r.geo_country.is_empty() {
            let g = r.geo_country.clone();
            dims.push(("geo", g.clone(), g.clone(), g));
        }
        for tag in &r.tags {
            let t = tag.trim().replace('.', "");
            if !t.is_empty() && !tag.starts_with("key-") && !tag.starts_with("ignored") {
                dims.push(("tags", t.clone(), t.clone(), t));
            }
        }
        if r.track_path {
            let p = r.path.clone();
            dims.push(("endpoints", p.replace('.', "\\u2e"), p.clone(), p.clone()));
            let k = hex(&format!("{}:{}:{}", r.api_id, r.api_version, r.path));
            dims.push(("apiendpoints", k.clone(), k, p));
        }
        for (dimension, value, identifier, human) in dims {
            let e = out.entry(key(dimension, value)).or_default();
            e.hits += 1;
            if (200..300).contains(&code) {
                e.success += 1;
            }
            if code >= 400 {
                e.error += 1;
                let column = if OWN_CODE_COLUMNS.contains(&code) {
                    format!("code_{code}")
                } else {
                    format!("code_{}x", code / 100)
                };
                *e.codes.entry(column).or_default() += 1;
            }
            e.total_request_time += r.request_time;
            e.total_latency += r.latency[0];
            e.total_upstream += r.latency[1];
            e.max_latency = e.max_latency.max(r.latency[0]);
            e.max_upstream = e.max_upstream.max(r.latency[1]);
            e.min_latency = Some(e.min_latency.map_or(r.latency[0], |m| m.min(r.latency[0])));
            e.min_upstream = Some(e.min_upstream.map_or(r.latency[1], |m| m.min(r.latency[1])));
            e.last = e.last.max(Some(r.timestamp));
            e.identifier = identifier;
            e.human = human;
        }
    }
    out
}

/// Compares every column of every row of `table` with `expected`; the
/// table holds no other rows.
fn assert_aggregates(
    db: &dyn Db,
    table: &str,
    expected: &BTreeMap<(i64, String, String, String), Expected>,
) {
    let rows = db.rows(&format!("SELECT * FROM {table}"));
    let by_id: BTreeMap<String, &BTreeMap<String, Option<String>>> =
        rows.iter().map(|r| (r["id"].clone().unwrap(), r)).collect();
    assert_eq!(by_id.len(), rows.len(), "ids are unique");
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let mut dimensions: BTreeMap<&str, usize> = BTreeMap::new();
    for ((ts, org, dimension, value), e) in expected {
        *dimensions.entry(dimension.as_str()).or_default() += 1;
        let id = hex(&format!("{ts}{org}{dimension}{value}"));
        let row = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("{table}: no row {ts} {org} {dimension:?} {value:?}"));
        let what = format!("{table} {ts} {org} {dimension:?} {value:?}");
        let s = |c: &str| {
            row[c]
                .clone()
                .unwrap_or_else(|| panic!("{c} NULL in {what}"))
        };
        let i = |c: &str| {
            s(c).parse::<i64>()
                .unwrap_or_else(|_| panic!("{c}: {row:?}"))
        };
        let f = |c: &str| {
            s(c).parse::<f64>()
                .unwrap_or_else(|_| panic!("{c}: {row:?}"))
        };
        let close = |c: &str, want: f64| {
            let got = f(c);
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "{c} of {what}: {got} != {want}"
            );
        };
        assert_eq!(i("timestamp"), *ts, "{what}");
        assert_eq!(s("org_id"), *org);
        assert_eq!(s("dimension"), *dimension);
        assert_eq!(s("dimension_value"), *value);
        assert_eq!(
            [i("counter_hits"), i("counter_success"), i("counter_error")],
            [e.hits, e.success, e.error],
            "hits, success, error of {what}"
        );
        close("counter_total_request_time", e.total_request_time as f64);
        let avg = |total: i64| {
            if e.hits == 0 {
                0.0
            } else {
                total as f64 / e.hits as f64
            }
        };
        close("counter_request_time", avg(e.total_request_time));
        assert_eq!(i("counter_total_latency"), e.total_latency, "{what}");
        close("counter_latency", avg(e.total_latency));
        assert_eq!(
            i("counter_total_upstream_latency"),
            e.total_upstream,
            "{what}"
        );
        close("counter_upstream_latency", avg(e.total_upstream));
        assert_eq!(
            [
                i("counter_max_latency"),
                i("counter_min_latency"),
                i("counter_max_upstream_latency"),
                i("counter_min_upstream_latency")
            ],
            [
                e.max_latency,
                e.min_latency.unwrap_or(0),
                e.max_upstream,
                e.min_upstream.unwrap_or(0)
            ],
            "max, min latency, max, min upstream of {what}"
        );
        assert_eq!(
            [
                i("counter_open_connections"),
                i("counter_closed_connections"),
                i("counter_bytes_in"),
                i("counter_bytes_out")
            ],
            [e.open, e.closed, e.bytes_in, e.bytes_out],
            "connections and bytes of {what}"
        );
        for (column, _) in TYK_AGGREGATED_COLUMNS
            .iter()
            .filter(|(c, _)| c.starts_with("code_"))
        {
            assert_eq!(
                i(column),
                e.codes.get(*column).copied().unwrap_or(0),
                "{column} of {what}"
            );
        }
        // Go's zero time for a row only connection records touched.
        let (secs, nanos) = e.last.unwrap_or((-62_135_596_800, 0));
        assert_eq!(s("counter_last_time"), db.time(secs, nanos), "{what}");
        assert_eq!(s("counter_identifier"), e.identifier, "{what}");
        assert_eq!(s("counter_human_identifier"), e.human, "{what}");
        assert_eq!(s("counter_error_map"), "{}");
        assert_eq!(s("counter_error_list"), "[]");
    }
    assert_eq!(rows.len(), expected.len(), "{table} has other rows");
    // The records exercise every dimension.
    for d in [
        "",
        "apiid",
        "errors",
        "versions",
        "apikeys",
        "oauthids",
        "geo",
        "tags",
        "endpoints",
        "apiendpoints",
        "keyendpoints",
        "oauthendpoints",
    ] {
        assert!(dimensions.get(d).copied().unwrap_or(0) > 0, "no {d:?} rows");
    }
}

/// The hits in the total rows of `table`; 0 while it does not exist.
fn total_hits(db: &dyn Db, table: &str) -> i64 {
    db.try_scalar(&format!(
        "SELECT coalesce(sum(counter_hits), 0) AS n FROM {table} WHERE dimension = ''"
    ))
    .and_then(|n| n.parse::<f64>().ok())
    .map_or(0, |n| n as i64)
}

fn hits_of(records: &[pumphouse::produce::TykRecord]) -> i64 {
    records.iter().filter(|r| r.response_code != -1).count() as i64
}

fn aggregate_pump(db: &dyn Db, name: &str) -> Pump {
    pump(name, db, db.url_of("pump", ""))
        .config("aggregate", true)
        .config("ignore_tag_prefix_list", strings(["ignored"]))
}

fn push_tyk_records(conn: &mut redis::Connection, records: &[pumphouse::produce::TykRecord]) {
    let bytes: Vec<Vec<u8>> = records.iter().map(pumphouse::produce::encode_tyk).collect();
    push(conn, TYK_KEY, &bytes);
}

/// 1000 Tyk records into `tyk_aggregated` (hours) and a sharded
/// per-minute table: every counter of every row is what the records
/// make, and the tables are tyk-pump's.
fn tyk_aggregates_counter_by_counter(db: &dyn Db) {
    db.prepare();
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = aggregate_records();
    push_tyk_records(&mut conn, &records);
    let host = start_host(
        &redis,
        "tyk",
        vec![
            aggregate_pump(db, "sql"),
            aggregate_pump(db, "minutes")
                .config("table", "tyk_minutes")
                .config("table_sharding", true)
                .config("store_analytics_per_minute", true),
        ],
    );
    let day = time::OffsetDateTime::from_unix_timestamp(T0)
        .unwrap()
        .format(time::macros::format_description!("[year][month][day]"))
        .unwrap();
    let minutes = format!("tyk_minutes_{day}");
    let hits = hits_of(&records);
    wait_for(WAIT, "every hit counted", || {
        (total_hits(db, "tyk_aggregated") == hits && total_hits(db, &minutes) == hits).then_some(())
    });
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });

    let expected: Vec<String> = TYK_AGGREGATED_COLUMNS
        .iter()
        .map(|(n, t)| match (db.name(), *n) {
            ("postgres", _) => format!("{n} {t}"),
            // Longer than tyk-pump's varchar(191), which its own
            // keyendpoints ids overflow.
            (_, "id") => "id varchar(3072)".to_string(),
            _ => format!("{n} {}", mysql_type(n, t)),
        })
        .collect();
    assert_eq!(db.columns("tyk_aggregated"), expected);
    assert_eq!(db.columns(&minutes), expected);
    let primary = match db.name() {
        "postgres" => "tyk_aggregated_pkey",
        _ => "PRIMARY",
    };
    let mut indexes = vec![primary, "tyk_aggregated_idx_dimension"];
    indexes.sort();
    assert_eq!(db.indexes("tyk_aggregated"), indexes);
    assert!(db
        .indexes(&minutes)
        .contains(&format!("{minutes}_idx_dimension")));

    let by_hour = expected_aggregates(&records, 3600);
    assert_eq!(
        by_hour.keys().map(|k| k.0).collect::<HashSet<_>>().len(),
        2,
        "two hours"
    );
    assert_aggregates(db, "tyk_aggregated", &by_hour);
    assert_aggregates(db, &minutes, &expected_aggregates(&records, 60));
    assert!(dead_letters(&mut conn, TYK_KEY).is_empty());
    assert_eq!(
        host.metric("pumphouse_pump_errors_total{pump=\"sql\",kind=\"fatal\"}"),
        0.0
    );
}

#[test]
fn tyk_aggregates_reach_postgres_counter_by_counter() {
    if let Some(pg) = Postgres::start(None) {
        tyk_aggregates_counter_by_counter(&pg);
    }
}

#[test]
fn tyk_aggregates_reach_mariadb_counter_by_counter() {
    if let Some(db) = MariaDb::start() {
        tyk_aggregates_counter_by_counter(&db);
    }
}

/// `tyk_aggregated` as tyk-pump creates it (its `varchar(191)` id on
/// MySQL), without the index.
fn tyk_pumps_aggregate_table(db: &dyn Db) -> String {
    let columns: Vec<String> = TYK_AGGREGATED_COLUMNS
        .iter()
        .map(|(n, t)| match (db.name(), *n) {
            ("postgres", _) => format!("{n} {t}"),
            (_, "id") => "id varchar(191)".to_string(),
            _ => format!("{n} {}", mysql_type(n, t)),
        })
        .collect();
    format!(
        "CREATE TABLE tyk_aggregated ({}, PRIMARY KEY (id))",
        columns.join(", ")
    )
}

/// Into the table tyk-pump made: half the records counted, the server
/// killed, the other half produced while it is down, the server back,
/// then 300 records delivered again: the counters are those of one pass.
/// Counted ids older than `dedup_ttl` are deleted, younger ones kept.
fn tyk_aggregates_once_across_a_crash_and_a_redelivery(db: &mut dyn Db) {
    db.prepare();
    db.exec(&tyk_pumps_aggregate_table(db));
    let (time, old, young) = match db.name() {
        "postgres" => (
            "timestamptz",
            "now() - interval '8 days'",
            "now() - interval '6 days'",
        ),
        _ => (
            "datetime",
            "NOW() - INTERVAL 8 DAY",
            "NOW() - INTERVAL 6 DAY",
        ),
    };
    db.exec(&format!(
        "CREATE TABLE pumphouse_aggregated_ids (target varchar(64) NOT NULL, id bigint NOT NULL, counted_at {time} NOT NULL, PRIMARY KEY (target, id)); \
         INSERT INTO pumphouse_aggregated_ids VALUES ('elsewhere', 1, {old}), ('elsewhere', 2, {young})"
    ));
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = aggregate_records();
    let (first, second) = records.split_at(500);
    push_tyk_records(&mut conn, first);
    let host = start_host(&redis, "tyk", vec![aggregate_pump(db, "sql")]);
    wait_for(WAIT, "the first half counted", || {
        (total_hits(db, "tyk_aggregated") == hits_of(first)).then_some(())
    });

    db.kill();
    push_tyk_records(&mut conn, second);
    wait_for(WAIT, "writes failing while the server is down", || {
        (host.metric("pumphouse_pump_errors_total{pump=\"sql\",kind=\"retry\"}") >= 1.0)
            .then_some(())
    });
    db.restart();
    wait_for(WAIT, "every hit counted", || {
        (total_hits(db, "tyk_aggregated") == hits_of(&records)).then_some(())
    });
    wait_for(WAIT, "acks", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });

    // The same bytes again, as after a lost ack, across both halves.
    push_tyk_records(&mut conn, &records[350..650]);
    wait_for(WAIT, "the redelivery acked", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });
    assert_aggregates(db, "tyk_aggregated", &expected_aggregates(&records, 3600));
    let ids = |target: &str| {
        db.try_scalar(&format!(
            "SELECT count(*) AS n FROM pumphouse_aggregated_ids WHERE target = '{target}'"
        ))
        .unwrap()
    };
    assert_eq!(ids("tyk_aggregated"), "1000", "each record id once");
    let kept = db.try_scalar(
        "SELECT coalesce(sum(id), 0) AS n FROM pumphouse_aggregated_ids WHERE target = 'elsewhere'",
    );
    assert_eq!(
        kept.as_deref(),
        Some("2"),
        "the 8-day-old id is gone, the 6-day-old kept"
    );
    assert!(dead_letters(&mut conn, TYK_KEY).is_empty());
}

#[test]
fn aggregates_of_iam_records_are_a_fatal_config_error() {
    let Some(pg) = Postgres::start(None) else {
        return;
    };
    pg.prepare();
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 20, 3);
    let host = start_host(&redis, "iam", vec![aggregate_pump(&pg, "sql")]);
    wait_readyz_error(
        &host,
        "sql",
        &["invalid config", "aggregate = true counts Tyk records"],
    );
    assert_eq!(Db::count(&pg, "tyk_aggregated"), 0);
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
}

#[test]
fn tyk_aggregates_on_postgres_count_each_record_once_across_a_crash_and_a_redelivery() {
    if let Some(mut pg) = Postgres::start(None) {
        tyk_aggregates_once_across_a_crash_and_a_redelivery(&mut pg);
    }
}

#[test]
fn tyk_aggregates_on_mariadb_count_each_record_once_across_a_crash_and_a_redelivery() {
    if let Some(mut db) = MariaDb::start() {
        tyk_aggregates_once_across_a_crash_and_a_redelivery(&mut db);
    }
}

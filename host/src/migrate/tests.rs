use std::collections::BTreeMap;
use std::path::Path;

use super::*;
use crate::config::{Config, Schema};

fn tyk(text: &str) -> Migration {
    tyk_env(text, &[])
}

fn tyk_env(text: &str, env: &[(&str, &str)]) -> Migration {
    let options = Options {
        plugins_dir: None,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    migrate(Dialect::TykPump, text, &options).unwrap()
}

fn iam(text: &str) -> Migration {
    migrate(Dialect::IamPump, text, &Options::default()).unwrap()
}

/// The output read back as a pumphouse config (`${NAME}` from `vars`).
fn load(m: &Migration, vars: &[(&str, &str)]) -> Config {
    let vars: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_str_with(
        &m.toml,
        Path::new("migrated.toml"),
        Path::new("/base"),
        |k| vars.get(k).cloned(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", m.toml))
}

fn redis_url(storage: &str) -> String {
    let m = tyk(&format!(
        r#"{{"analytics_storage_config": {storage}, "pumps": {{}}}}"#
    ));
    let line = m
        .toml
        .lines()
        .find(|l| l.starts_with("redis_url = "))
        .unwrap();
    line.trim_start_matches("redis_url = ")
        .trim_matches('"')
        .to_string()
}

#[test]
fn redis_settings_become_the_url_forms() {
    assert_eq!(
        redis_url(r#"{"host": "redis.internal", "port": 6380, "database": 3}"#),
        "redis://redis.internal:6380/3"
    );
    // Literal credentials are percent-encoded.
    assert_eq!(
        redis_url(r#"{"host": "h", "port": 1, "username": "pump", "password": "a/b@c:d"}"#),
        "redis://pump:a%2Fb%40c%3Ad@h:1/0"
    );
    assert_eq!(
        redis_url(r#"{"host": "h", "port": 1, "password": "pw", "use_ssl": true}"#),
        "rediss://:pw@h:1/0"
    );
    assert_eq!(
        redis_url(
            r#"{"addrs": ["s1:26379", "s2:26379"], "master_name": "mymaster", "database": 1}"#
        ),
        "redis+sentinel://s1:26379,s2:26379/mymaster/1"
    );
    assert_eq!(
        redis_url(r#"{"addrs": ["n1:7000", "n2:7001"], "enable_cluster": true}"#),
        "redis+cluster://n1:7000,n2:7001"
    );
    // tyk's deprecated `hosts` map, and go-redis's reading of several
    // addresses without enable_cluster.
    assert_eq!(
        redis_url(r#"{"hosts": {"n1": "7000", "n2": "7001"}}"#),
        "redis+cluster://n1:7000,n2:7001"
    );
    assert_eq!(redis_url("{}"), "redis://127.0.0.1:6379/0");
}

#[test]
fn ssl_files_and_insecure_go_to_source_tls() {
    let m = tyk(
        r#"{"analytics_storage_config": {"host": "h", "port": 6379, "use_ssl": true,
            "ssl_ca_file": "/etc/ca.pem", "ssl_insecure_skip_verify": true},
            "pumps": {"s": {"type": "stdout"}}}"#,
    );
    let c = load(&m, &[]);
    assert_eq!(c.source.redis_url, "rediss://h:6379/0");
    assert_eq!(
        c.source.tls.ca_file.as_deref(),
        Some(Path::new("/etc/ca.pem"))
    );
    assert!(c.source.tls.insecure);
}

#[test]
fn tyk_env_overrides_stay_references() {
    let m = tyk_env(
        r#"{"analytics_storage_config": {"host": "localhost", "port": 6379},
            "purge_delay": 10,
            "pumps": {"csv": {"type": "csv", "meta": {"csv_dir": "/old"}}}}"#,
        &[
            ("TYK_PMP_ANALYTICSSTORAGECONFIG_HOST", "10.0.0.1"),
            ("TYK_PMP_REDIS_PASSWORD", "x"),
            ("TYK_PMP_PUMPS_CSV_META_CSVDIR", "/new"),
            // A pump that exists only in the environment.
            ("TYK_PMP_PUMPS_OUT_TYPE", "stdout"),
        ],
    );
    assert!(
        m.toml.contains(
            r#"redis_url = "redis://:${TYK_PMP_REDIS_PASSWORD}@${TYK_PMP_ANALYTICSSTORAGECONFIG_HOST}:6379/0""#
        ),
        "{}",
        m.toml
    );
    assert!(
        m.toml
            .contains(r#"host = "${TYK_PMP_PUMPS_CSV_META_CSVDIR}""#),
        "{}",
        m.toml
    );
    let c = load(
        &m,
        &[
            ("TYK_PMP_ANALYTICSSTORAGECONFIG_HOST", "10.0.0.1"),
            ("TYK_PMP_REDIS_PASSWORD", "x"),
            ("TYK_PMP_PUMPS_CSV_META_CSVDIR", "/new"),
        ],
    );
    assert_eq!(c.source.redis_url, "redis://:x@10.0.0.1:6379/0");
    let names: Vec<_> = c
        .pumps
        .iter()
        .map(|p| (p.name.as_str(), p.plugin.as_str()))
        .collect();
    assert_eq!(names, [("csv", "csv.wasm"), ("out", "stdout.wasm")]);
    assert_eq!(c.pumps[0].sandbox.dirs[0].host, Path::new("/new"));
    assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
}

#[test]
fn literal_dollar_braces_are_escaped_and_iam_references_kept() {
    let m = tyk(
        r#"{"analytics_storage_config": {"host": "h", "port": 1, "password": "a${b}"}, "pumps": {"s": {"type": "stdout"}}}"#,
    );
    // Percent-encoding leaves no `${`; the config loads without any variable.
    assert_eq!(load(&m, &[]).source.redis_url, "redis://:a%24%7Bb%7D@h:1/0");
    let m = tyk(r#"{"pumps": {"csv": {"type": "csv", "meta": {"csv_dir": "/d${x}"}}}}"#);
    assert_eq!(
        load(&m, &[]).pumps[0].sandbox.dirs[0].host,
        Path::new("/d${x}")
    );

    let m = iam(
        "redis:\n  host: ${REDIS_HOST}\n  port: ${REDIS_PORT}\npumps:\n  s:\n    type: stdout\n",
    );
    let c = load(&m, &[("REDIS_HOST", "10.1.1.1"), ("REDIS_PORT", "6390")]);
    assert_eq!(c.source.redis_url, "redis://10.1.1.1:6390/0");
    assert_eq!(c.source.format, Schema::Iam);
}

#[test]
fn pump_settings_filters_and_globals_are_translated() {
    let m = tyk(
        r#"{"purge_delay": 3, "purge_chunk": 50000, "omit_detailed_recording": true,
            "health_check_endpoint_port": 8083,
            "pumps": {"es": {"type": "elasticsearch", "timeout": 7,
              "filters": {"api_ids": ["a1"], "skip_org_ids": ["o2"], "response_codes": [200, 201]},
              "meta": {"elasticsearch_url": "https://es.example.com", "index_name": "idx",
                       "auth_api_key_id": "id", "auth_api_key": "key"}}}}"#,
    );
    let c = load(&m, &[]);
    assert_eq!(c.source.poll_interval, std::time::Duration::from_secs(3));
    // Clamped to pumphouse's largest claim.
    assert_eq!(c.source.batch_size, crate::config::MAX_BATCH_SIZE);
    assert_eq!(c.server.listen, "0.0.0.0:8083");
    let p = &c.pumps[0];
    assert_eq!(p.timeout, std::time::Duration::from_secs(7));
    assert!(p.omit_detailed_recording);
    assert_eq!(p.filters.api_ids, ["a1"]);
    assert_eq!(p.filters.skip_org_ids, ["o2"]);
    assert_eq!(p.filters.response_codes, [200, 201]);
    assert_eq!(p.config["url"].as_str(), Some("https://es.example.com"));
    assert_eq!(p.config["index"].as_str(), Some("idx"));
    // base64("id:key"), the form Elasticsearch's ApiKey header takes.
    assert_eq!(p.config["api_key"].as_str(), Some("aWQ6a2V5"));
    assert_eq!(
        p.sandbox.allowed_outbound_hosts,
        [crate::sandbox::OutboundRule::parse("https://es.example.com:443").unwrap()]
    );
    assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
}

#[test]
fn iam_secrets_are_left_to_the_plugin() {
    let m = iam(
        "pumps:\n  influx:\n    type: influx\n    meta:\n      address: http://10.0.0.6:8086\n      database_name: db\n      username: u\n      password: ${INFLUX_PW}\n      tags: [username]\n",
    );
    let c = load(&m, &[]);
    let p = &c.pumps[0];
    // `$${NAME}` reaches the plugin as `${NAME}`: it reads the variable
    // from the sandbox environment, and only this pump may.
    assert_eq!(p.config["password"].as_str(), Some("${INFLUX_PW}"));
    assert_eq!(p.sandbox.env, ["INFLUX_PW"]);
    assert_eq!(p.config["measurement"].as_str(), Some("analytics"));
    assert_eq!(p.config["tags"]["username"].as_str(), Some("Username"));
}

#[test]
fn pumps_without_a_counterpart_are_commented_and_listed() {
    let m = tyk(
        r#"{"pumps": {"m": {"type": "mongo", "meta": {"mongo_url": "mongodb://u:secret@h/db", "collection_name": "c"}},
                      "k": {"type": "kafka", "meta": {"topic": "t"}},
                      "s": {"type": "stdout"}}}"#,
    );
    let what: Vec<_> = m.unmapped.iter().map(|u| u.what.as_str()).collect();
    assert_eq!(what, ["pump k (type kafka)", "pump m (type mongo)"]);
    assert!(m.toml.contains(
        "# migrate: pump m (type mongo) is not migrated: pumphouse has no MongoDB sink yet."
    ));
    assert!(m.toml.contains("#   collection_name = \"c\""));
    assert!(!m.toml.contains("secret"), "{}", m.toml);
    // The commented blocks leave a config with only the stdout pump.
    let c = load(&m, &[]);
    assert_eq!(c.pumps.len(), 1);
}

#[test]
fn settings_that_change_meaning_are_listed() {
    let m = tyk(r#"{"max_record_size": 1000, "pumps": {"s": {"type": "stdout"}}}"#);
    assert_eq!(m.unmapped.len(), 1);
    assert!(
        m.unmapped[0].what.contains("max_record_size"),
        "{:?}",
        m.unmapped
    );
    assert!(load(&m, &[]).pumps[0].max_record_size.is_none());
    let m = tyk(
        r#"{"analytics_storage_config": {"addrs": ["s:26379"], "master_name": "m", "sentinel_password": "x"}, "pumps": {"s": {"type": "stdout"}}}"#,
    );
    assert!(m.unmapped.is_empty(), "{:?}", m.unmapped);
    assert_eq!(load(&m, &[]).source.sentinel_password.as_deref(), Some("x"));
}

#[test]
fn prometheus_custom_metrics_become_plugin_metrics() {
    let m = tyk(
        r#"{"pumps": {"p": {"type": "prometheus", "meta": {"custom_metrics": [
            {"name": "tyk_http_requests_total", "metric_type": "counter", "labels": ["response_code", "api_id"]},
            {"name": "tyk_latency", "metric_type": "histogram", "labels": ["api_name"]}]}}}}"#,
    );
    let c = load(&m, &[]);
    let metrics = c.pumps[0].config["metrics"].as_array().unwrap();
    assert_eq!(metrics[0]["name"].as_str(), Some("tyk_http_requests"));
    assert_eq!(
        metrics[0]["labels"][0]["field"].as_str(),
        Some("ResponseCode")
    );
    assert_eq!(metrics[0]["labels"][1]["label"].as_str(), Some("api_id"));
    assert_eq!(metrics[1]["type"].as_str(), Some("histogram"));
    assert_eq!(metrics[1]["value_field"].as_str(), Some("RequestTime"));
}

#[test]
fn bad_input_names_the_dialect_or_field() {
    let e = migrate(Dialect::TykPump, "{not json", &Options::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("not a valid tyk-pump config"),
        "{e}"
    );
    let e = migrate(Dialect::IamPump, "redis: [1", &Options::default()).unwrap_err();
    assert!(
        e.to_string().starts_with("not a valid iam-pump config"),
        "{e}"
    );
    let e = migrate(
        Dialect::TykPump,
        r#"{"pumps": {"a": 1}}"#,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "pumps.a: must be a map");
    let e = migrate(
        Dialect::TykPump,
        r#"{"pumps": {"a": {"type": "csv", "filters": {"org_ids": "x"}}}}"#,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "pumps.a.filters.org_ids: must be a list");
}

#[test]
fn sql_pumps_keep_their_connection_string_and_reach_the_database() {
    let m = tyk(r#"{"pumps": {
            "pg": {"type": "sql", "meta": {"type": "postgres", "table_sharding": true, "batch_size": 2000,
                   "connection_string": "host=db.internal port=5433 user=tyk password=pw dbname=analytics sslmode=disable"}},
            "my": {"type": "sql", "meta": {"type": "mysql",
                   "connection_string": "tyk:pw@tcp(mysql.internal:3306)/tyk?charset=utf8&parseTime=True&loc=Local"}},
            "agg": {"type": "sql_aggregate", "meta": {"type": "postgres", "connection_string": "host=db user=u dbname=d",
                    "store_analytics_per_minute": true, "ignore_tag_prefix_list": ["key-"]}},
            "graph": {"type": "sql-graph-aggregate", "meta": {"type": "postgres", "connection_string": "host=db user=u dbname=d"}}}}"#);
    let c = load(&m, &[]);
    let pg = c.pumps.iter().find(|p| p.name == "pg").unwrap();
    assert_eq!(pg.plugin, "sql.wasm");
    assert_eq!(
        pg.config["connection"].as_str(),
        Some("host=db.internal port=5433 user=tyk password=pw dbname=analytics sslmode=disable")
    );
    assert_eq!(pg.config["type"].as_str(), Some("postgres"));
    assert_eq!(pg.config["table_sharding"].as_bool(), Some(true));
    assert_eq!(
        pg.sandbox.sockets,
        [crate::sandbox::SocketRule::parse("db.internal:5433").unwrap()]
    );
    let my = c.pumps.iter().find(|p| p.name == "my").unwrap();
    assert_eq!(
        my.sandbox.sockets,
        [crate::sandbox::SocketRule::parse("mysql.internal:3306").unwrap()]
    );
    assert!(m.toml.contains("batch_size: not needed"), "{}", m.toml);
    let agg = c.pumps.iter().find(|p| p.name == "agg").unwrap();
    assert_eq!(agg.config["aggregate"].as_bool(), Some(true));
    assert_eq!(
        agg.config["store_analytics_per_minute"].as_bool(),
        Some(true)
    );
    assert_eq!(
        agg.config["ignore_tag_prefix_list"].as_array().unwrap()[0].as_str(),
        Some("key-")
    );
    let what: Vec<_> = m.unmapped.iter().map(|u| u.what.as_str()).collect();
    assert_eq!(what, ["pump graph (type sql-graph-aggregate)"]);
}

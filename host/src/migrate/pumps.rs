//! Each old pump type as a bundled plugin and its config, or the reason it
//! has none yet.

use base64::Engine as _;
use serde_json::Value;

use super::emit::string;
use super::input::{Meta, OldPump};
use super::{Dialect, Text};

/// A pump type translated to a plugin. Values are TOML text.
#[derive(Debug, Default)]
pub(super) struct PumpOut {
    pub plugin: &'static str,
    pub config: Vec<(String, String)>,
    /// `[[pumps.config.metrics]]` tables (prometheus).
    pub metrics: Vec<Vec<(String, String)>>,
    pub sandbox: Vec<(String, String)>,
    /// Comments for the reader.
    pub notes: Vec<String>,
    /// Settings that could not be carried over, with why.
    pub lost: Vec<(String, String)>,
}

pub(super) enum Plan {
    Mapped(PumpOut),
    /// No plugin for this type; the reason.
    Unmapped(String),
}

/// Why a pump type has no counterpart.
fn missing(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "mongo" | "mongo-pump-selective" | "mongo-graph" | "mongo-mcp" => {
            "pumphouse has no MongoDB sink yet"
        }
        "mongo-pump-aggregate" | "mongo-mcp-aggregate" => {
            "pumphouse has no MongoDB sink yet (the aggregate plugin writes per-window counts to ClickHouse or HTTP instead)"
        }
        "sql-graph" | "sql-mcp" => {
            "the sql plugin writes tyk_analytics; the GraphQL and MCP tables are not written yet"
        }
        "sql-graph-aggregate" | "sql-mcp-aggregate" => {
            "the sql plugin writes tyk_aggregated; the GraphQL and MCP aggregate tables are not written yet"
        }
        "kafka" => "pumphouse has no Kafka sink yet",
        "syslog" => "pumphouse has no syslog sink yet",
        "statsd" | "dogstatsd" => "pumphouse has no StatsD sink yet",
        "graylog" => "pumphouse has no Graylog (GELF) sink yet",
        "influx2" => "the influxdb plugin speaks the InfluxDB 1.x write API; InfluxDB 2 buckets and tokens are not supported yet",
        "splunk" => "Splunk's HTTP Event Collector wants every record wrapped as {\"time\": ..., \"event\": {...}}; the http plugin sends records as they are",
        "moesif" => "pumphouse has no Moesif sink yet",
        "segment" => "pumphouse has no Segment sink yet",
        "hybrid" => "the hybrid pump sends to Tyk's MDCB over its RPC protocol, which pumphouse does not speak",
        "timestream" => "pumphouse has no Amazon Timestream sink yet",
        "sqs" => "pumphouse has no Amazon SQS sink yet",
        "kinesis" => "pumphouse has no Amazon Kinesis sink yet",
        "resurfaceio" => "pumphouse has no Resurface sink yet",
        _ => return None,
    })
}

pub(super) fn plan(dialect: Dialect, pump: &OldPump) -> Plan {
    if let Some(reason) = missing(&pump.kind) {
        return Plan::Unmapped(reason.into());
    }
    let m = &pump.meta;
    let out = match pump.kind.as_str() {
        "csv" => csv(dialect, pump),
        "sql" => sql(m),
        "sql_aggregate" => sql_aggregate(m),
        "elasticsearch" => elasticsearch(dialect, m),
        "influx" => influx(dialect, m),
        "prometheus" => prometheus(m),
        "stdout" => stdout(m),
        "dummy" => PumpOut {
            plugin: "blackhole.wasm",
            notes: vec!["dummy pump: records are accepted and discarded".into()],
            ..PumpOut::default()
        },
        "logzio" => logzio(m),
        other => return Plan::Unmapped(format!("unknown pump type {other:?}")),
    };
    Plan::Mapped(out)
}

fn csv(dialect: Dialect, pump: &OldPump) -> PumpOut {
    let dir = pump
        .meta
        .text("csv_dir", "CSVDIR")
        .filter(|d| !d.is_empty())
        .unwrap_or(Text::Lit(".".into()));
    PumpOut {
        plugin: "csv.wasm",
        config: vec![(
            "path".into(),
            string(&Text::Lit(format!("/out/{}.csv", pump.name))),
        )],
        sandbox: vec![(
            "dirs".into(),
            format!("[{{ host = {}, guest = \"/out\" }}]", string(&dir)),
        )],
        notes: vec![format!(
            "{} wrote one file per hour with every field; this appends to one file with the csv plugin's default columns for {} records (set `columns` to choose)",
            dialect.name(),
            match dialect {
                Dialect::TykPump => "Tyk",
                Dialect::IamPump => "iam",
            }
        )],
        ..PumpOut::default()
    }
}

/// tyk-pump's `sql` pump: the connection string as it is (the plugin reads
/// tyk-pump's DSNs), the database's address in `sandbox.sockets`.
fn sql(m: &Meta) -> PumpOut {
    use pumphouse_wire::sql_url::{ConnUrl, Dialect};
    let mut out = PumpOut {
        plugin: "sql.wasm",
        ..PumpOut::default()
    };
    let kind = m.text("type", "Type");
    let dialect = match kind.as_ref().and_then(Text::lit) {
        Some("postgres") => Some(Dialect::Postgres),
        Some("mysql") => Some(Dialect::Mysql),
        Some(other) => {
            out.lost.push((
                "type".into(),
                format!("{other:?} is not postgres or mysql (sqlite has no sink)"),
            ));
            None
        }
        None => None,
    };
    if let Some(k) = &kind {
        out.config.push(("type".into(), string(k)));
    }
    let mut env = Vec::new();
    match m.text("connection_string", "ConnectionString") {
        Some(conn) => {
            match conn.lit().map(|c| ConnUrl::parse_any(c, dialect)) {
                Some(Ok(url)) => {
                    out.sandbox.push((
                        "sockets".into(),
                        format!("[{}]", string(&Text::Lit(url.address()))),
                    ));
                    if url.password.is_some() {
                        out.notes.push(
                            "connection holds the database password: consider ${NAME} and sandbox.env".into(),
                        );
                    }
                }
                Some(Err(e)) => out.lost.push(("connection_string".into(), e)),
                None => out.notes.push(
                    "add the database's host:port to sandbox.sockets: it is known only when the variable is set".into(),
                ),
            }
            out.config
                .push(("connection".into(), secret(&conn, &mut env)));
        }
        None => out.lost.push((
            "connection_string".into(),
            "missing: the sql plugin needs one".into(),
        )),
    }
    if m.flag("table_sharding", "TableSharding") {
        out.config.push(("table_sharding".into(), "true".into()));
    }
    for (key, go) in [
        ("batch_size", "BatchSize"),
        ("log_level", "LogLevel"),
        ("migrate_sharded_tables", "MigrateShardedTables"),
    ] {
        if m.value(key).is_some() || m.text(key, go).is_some() {
            out.notes.push(format!("{key}: not needed; the sql plugin writes each batch in one COPY or a few INSERTs and creates tables as it needs them"));
        }
    }
    push_env(&mut out, env);
    out
}

/// tyk-pump's `sql_aggregate` pump: the `sql` plugin with `aggregate`.
fn sql_aggregate(m: &Meta) -> PumpOut {
    let mut out = sql(m);
    out.config.push(("aggregate".into(), "true".into()));
    for (key, go) in [
        ("store_analytics_per_minute", "StoreAnalyticsPerMinute"),
        ("track_all_paths", "TrackAllPaths"),
        ("omit_index_creation", "OmitIndexCreation"),
    ] {
        if m.flag(key, go) {
            out.config.push((key.into(), "true".into()));
        }
    }
    let prefixes: Vec<String> = m
        .texts("ignore_tag_prefix_list")
        .iter()
        .map(string)
        .collect();
    if !prefixes.is_empty() {
        out.config.push((
            "ignore_tag_prefix_list".into(),
            format!("[{}]", prefixes.join(", ")),
        ));
    }
    out
}

/// `scheme://host:port` of a literal URL, and whether its host is a name
/// (which needs `allow_private_networks` when it resolves privately).
fn origin(url: &str) -> Option<(String, bool)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() {
                (h.to_string(), p.to_string())
            } else {
                (authority.to_string(), String::new())
            }
        }
        _ => (authority.to_string(), String::new()),
    };
    let port = if port.is_empty() {
        match scheme.as_str() {
            "https" => "443".to_string(),
            "http" => "80".to_string(),
            _ => return None,
        }
    } else {
        port
    };
    if host.is_empty() {
        return None;
    }
    let is_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_err();
    Some((format!("{scheme}://{host}:{port}"), is_name))
}

/// The outbound grants for `url`.
fn grants(url: &Text, out: &mut PumpOut, may_be_private: bool) {
    match url.lit().and_then(origin) {
        Some((origin, is_name)) => {
            out.sandbox.push((
                "allowed_outbound_hosts".into(),
                format!("[{}]", string(&Text::Lit(origin.clone()))),
            ));
            if is_name && may_be_private {
                out.sandbox
                    .push(("allow_private_networks".into(), "true".into()));
                out.notes.push(format!(
                    "allow_private_networks: {origin} is a name that may resolve to a private address; remove it if it resolves to a public one"
                ));
            }
        }
        None => {
            out.sandbox.push((
                "allowed_outbound_hosts".into(),
                format!("[{}]", string(url)),
            ));
            out.sandbox
                .push(("allow_private_networks".into(), "true".into()));
            out.notes.push(
                "allowed_outbound_hosts takes the URL as given: it must be scheme://host:port when the variable is set"
                    .into(),
            );
        }
    }
}

/// A secret: a sole `${NAME}` is left to the plugin (`$${NAME}` plus
/// `sandbox.env`), so the value never sits in the pump's config.
fn secret(t: &Text, env: &mut Vec<String>) -> String {
    match t.sole_var() {
        Some(name) => {
            env.push(name.to_string());
            format!("\"$${{{name}}}\"")
        }
        None => string(t),
    }
}

fn push_env(out: &mut PumpOut, env: Vec<String>) {
    if !env.is_empty() {
        let list: Vec<String> = env.iter().map(|e| string(&Text::Lit(e.clone()))).collect();
        out.sandbox
            .push(("env".into(), format!("[{}]", list.join(", "))));
    }
}

fn elasticsearch(dialect: Dialect, m: &Meta) -> PumpOut {
    let mut out = PumpOut {
        plugin: "elasticsearch.wasm",
        ..PumpOut::default()
    };
    let url = m
        .text("elasticsearch_url", "ElasticsearchURL")
        .filter(|u| !u.is_empty())
        .unwrap_or(Text::Lit("http://localhost:9200".into()));
    out.config.push(("url".into(), string(&url)));
    let default_index = match dialect {
        Dialect::TykPump => "tyk_analytics",
        Dialect::IamPump => "iam_analytics",
    };
    let index = m
        .text("index_name", "IndexName")
        .filter(|i| !i.is_empty())
        .unwrap_or(Text::Lit(default_index.into()));
    let index = if m.flag("rolling_index", "RollingIndex") {
        match index {
            Text::Lit(s) => Text::Lit(format!("{s}-%Y.%m.%d")),
            Text::Env(s) => Text::Env(format!("{s}-%Y.%m.%d")),
        }
    } else {
        index
    };
    out.config.push(("index".into(), string(&index)));
    let mut env = Vec::new();
    if let Some(user) = m
        .text("auth_basic_username", "Username")
        .filter(|u| !u.is_empty())
    {
        out.config.push(("username".into(), string(&user)));
        let pass = m
            .text("auth_basic_password", "Password")
            .unwrap_or(Text::Lit(String::new()));
        out.config
            .push(("password".into(), secret(&pass, &mut env)));
    }
    let id = m
        .text("auth_api_key_id", "AuthAPIKeyID")
        .filter(|t| !t.is_empty());
    let key = m
        .text("auth_api_key", "AuthAPIKey")
        .filter(|t| !t.is_empty());
    match (id, key) {
        (Some(Text::Lit(id)), Some(Text::Lit(key))) => {
            // The plugin sends `ApiKey <api_key>`, the base64 of `id:key`.
            let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"));
            out.config
                .push(("api_key".into(), string(&Text::Lit(encoded))));
        }
        (None, None) => {}
        _ => out.lost.push((
            "auth_api_key".into(),
            "set config.api_key to the base64 of \"<id>:<key>\" by hand".into(),
        )),
    }
    for (key, go) in [
        ("ssl_insecure_skip_verify", "SSLInsecureSkipVerify"),
        ("ssl_ca_file", "SSLCAFile"),
        ("ssl_cert_file", "SSLCertFile"),
    ] {
        let set = if key == "ssl_insecure_skip_verify" {
            m.flag(key, go)
        } else {
            m.text(key, go).is_some_and(|t| !t.is_empty())
        };
        if set {
            out.lost.push((
                key.into(),
                "plugins verify TLS against the public web roots; private CAs and client certificates are not supported".into(),
            ));
        }
    }
    m.text("ssl_key_file", "SSLKeyFile");
    for ignored in [
        "use_ssl",
        "version",
        "document_type",
        "use_sniffing",
        "bulk_config",
        "disable_bulk",
        "generate_id",
        "extended_stats",
    ] {
        m.value(ignored);
    }
    out.notes.push(
        "documents are bulk-indexed with the record's stable id as _id, so a re-sent batch overwrites instead of duplicating"
            .into(),
    );
    grants(&url, &mut out, true);
    push_env(&mut out, env);
    out
}

/// The record field an old tool's JSON field name stands for.
fn record_field(dialect: Dialect, json: &str) -> Option<&'static str> {
    Some(match (dialect, json) {
        (Dialect::IamPump, "timestamp") => "TimeStamp",
        (Dialect::IamPump, "username") => "Username",
        (Dialect::IamPump, "effect") => "Effect",
        (Dialect::IamPump, "conclusion") => "Conclusion",
        (Dialect::IamPump, "request") => "Request",
        (Dialect::IamPump, "policies") => "Policies",
        (Dialect::IamPump, "deciders") => "Deciders",
        (Dialect::IamPump, "expireAt") => "ExpireAt",
        (Dialect::TykPump, f) => match f {
            "method" => "Method",
            "host" => "Host",
            "path" => "Path",
            "raw_path" => "RawPath",
            "content_length" => "ContentLength",
            "user_agent" => "UserAgent",
            "response_code" => "ResponseCode",
            "api_key" => "APIKey",
            "timestamp" | "time_stamp" => "TimeStamp",
            "api_version" => "APIVersion",
            "api_name" => "APIName",
            "api_id" => "APIID",
            "org_id" => "OrgID",
            "oauth_id" => "OauthID",
            "request_time" => "RequestTime",
            "raw_request" => "RawRequest",
            "raw_response" => "RawResponse",
            "ip_address" => "IPAddress",
            "geo" => "Geo",
            "network" => "Network",
            "latency" => "Latency",
            "tags" => "Tags",
            "alias" => "Alias",
            "track_path" => "TrackPath",
            "original_path" => "OriginalPath",
            "listen_path" => "ListenPath",
            _ => return None,
        },
        _ => return None,
    })
}

/// `{ name = "Field", ... }` for InfluxDB tags and fields named as the
/// old tool names them.
fn influx_table(dialect: Dialect, names: &[Text], what: &str, out: &mut PumpOut) -> Option<String> {
    let mut entries = Vec::new();
    for n in names {
        let Some(name) = n.lit() else {
            out.lost.push((
                what.into(),
                "a ${...} entry cannot become a tag or field name".into(),
            ));
            continue;
        };
        match record_field(dialect, name) {
            Some(field) => entries.push(format!(
                "{} = {}",
                string(&Text::Lit(name.into())),
                string(&Text::Lit(field.into()))
            )),
            None => out.lost.push((
                format!("{what} {name:?}"),
                "not a field of the records".into(),
            )),
        }
    }
    (!entries.is_empty()).then(|| format!("{{ {} }}", entries.join(", ")))
}

fn influx(dialect: Dialect, m: &Meta) -> PumpOut {
    let mut out = PumpOut {
        plugin: "influxdb.wasm",
        ..PumpOut::default()
    };
    let url = m
        .text("address", "Addr")
        .filter(|u| !u.is_empty())
        .unwrap_or(Text::Lit("http://localhost:8086".into()));
    out.config.push(("url".into(), string(&url)));
    let db = m
        .text("database_name", "DatabaseName")
        .unwrap_or(Text::Lit("tyk_analytics".into()));
    out.config.push(("database".into(), string(&db)));
    // Both tools write to the measurement "analytics".
    out.config
        .push(("measurement".into(), string(&Text::Lit("analytics".into()))));
    if let Some(t) = influx_table(dialect, &m.texts("tags"), "tags", &mut out) {
        out.config.push(("tags".into(), t));
    }
    if let Some(f) = influx_table(dialect, &m.texts("fields"), "fields", &mut out) {
        out.config.push(("fields".into(), f));
    }
    let mut env = Vec::new();
    if let Some(user) = m.text("username", "Username").filter(|u| !u.is_empty()) {
        out.config.push(("username".into(), string(&user)));
        let pass = m
            .text("password", "Password")
            .unwrap_or(Text::Lit(String::new()));
        out.config
            .push(("password".into(), secret(&pass, &mut env)));
    }
    grants(&url, &mut out, true);
    push_env(&mut out, env);
    out
}

/// Prometheus label names in Tyk's custom metrics are record field names
/// in JSON spelling; `[a-z0-9_]` metric names, without the `_total` the
/// plugin appends to counters.
fn prometheus(m: &Meta) -> PumpOut {
    let mut out = PumpOut {
        plugin: "prometheus.wasm",
        ..PumpOut::default()
    };
    if let Some(addr) = m.text("listen_address", "Addr") {
        out.notes.push(format!(
            "metrics are served on the host's own /metrics ([server] listen), not on {}: point the scrape job there",
            addr.template()
        ));
    }
    m.value("path");
    if let Some(Value::Array(metrics)) = m.value("custom_metrics") {
        for (i, metric) in metrics.iter().enumerate() {
            let get = |k: &str| metric.get(k).and_then(Value::as_str).unwrap_or("");
            let kind = get("metric_type");
            let mut name: String = get("name")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            if kind == "counter" {
                if let Some(s) = name.strip_suffix("_total") {
                    name = s.to_string();
                }
            }
            if name.is_empty() || !(kind == "counter" || kind == "histogram") {
                out.lost.push((
                    format!("custom_metrics[{i}]"),
                    "needs a name and metric_type counter or histogram".into(),
                ));
                continue;
            }
            let mut labels = Vec::new();
            for l in metric
                .get("labels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(l) = l.as_str() else { continue };
                match record_field(Dialect::TykPump, l) {
                    Some(f) => labels.push(format!("{{ field = \"{f}\", label = \"{l}\" }}")),
                    None => out.lost.push((
                        format!("custom_metrics[{i}].labels {l:?}"),
                        "not a top-level field of Tyk records".into(),
                    )),
                }
            }
            let mut table = vec![
                ("name".into(), string(&Text::Lit(name))),
                ("type".into(), string(&Text::Lit(kind.into()))),
            ];
            if kind == "histogram" {
                // Tyk's histograms always observe the request time.
                table.push(("value_field".into(), "\"RequestTime\"".into()));
            }
            table.push(("labels".into(), format!("[{}]", labels.join(", "))));
            out.metrics.push(table);
        }
        out.notes.push(
            "custom metrics keep their names with a pumphouse_plugin_ prefix; histograms use pumphouse's millisecond buckets"
                .into(),
        );
    } else {
        out.notes.push(
            "the plugin's default metrics for the source's format (pumphouse_plugin_*), not the old tool's metric names"
                .into(),
        );
    }
    for ignored in [
        "disabled_metrics",
        "track_all_paths",
        "aggregate_observations",
    ] {
        m.value(ignored);
    }
    out
}

fn stdout(m: &Meta) -> PumpOut {
    m.value("format");
    m.value("log_field_name");
    PumpOut {
        plugin: "stdout.wasm",
        notes: vec![
            "one JSON line per record on standard output, not wrapped in a log entry".into(),
        ],
        ..PumpOut::default()
    }
}

/// Logz.io's bulk listener takes newline-delimited JSON on
/// `<url>/?token=<token>`, which the http plugin sends.
fn logzio(m: &Meta) -> PumpOut {
    let mut out = PumpOut {
        plugin: "http.wasm",
        ..PumpOut::default()
    };
    let base = m
        .text("url", "URL")
        .filter(|u| !u.is_empty())
        .unwrap_or(Text::Lit("https://listener.logz.io:8071".into()));
    let token = m.text("token", "Token").unwrap_or(Text::Lit(String::new()));
    let url = match (&base, &token) {
        (Text::Lit(b), Text::Lit(t)) => {
            Text::Lit(format!("{}/?token={t}", b.trim_end_matches('/')))
        }
        _ => Text::Env(format!(
            "{}/?token={}",
            base.template().trim_end_matches('/'),
            token.template()
        )),
    };
    out.config.push(("url".into(), string(&url)));
    out.config.push(("format".into(), "\"ndjson\"".into()));
    for ignored in [
        "check_disk_space",
        "disk_threshold",
        "drain_duration",
        "queue_dir",
    ] {
        m.value(ignored);
    }
    out.notes.push(
        "the old pump's disk queue is replaced by pumphouse's retries (set buffer = \"disk\" for a spool)".into(),
    );
    // Logz.io's own listener is public; a proxy given as `url` may not be.
    let own = base.lit().is_some_and(|b| b.ends_with(".logz.io:8071"));
    grants(&base, &mut out, !own);
    out
}

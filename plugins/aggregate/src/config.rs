//! The plugin's configuration, parsed and checked once in `init`.

use std::time::Duration;

use pumphouse_sdk::config::{expand_env, parse_duration};
use pumphouse_sdk::{Error, Schema};
use serde::Deserialize;

/// `[pumps.config]` as written by the operator.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default = "default_window")]
    window: String,
    #[serde(default = "default_grace")]
    grace: String,
    #[serde(default)]
    group_by: Option<Vec<Vec<String>>>,
    #[serde(default)]
    latency_field: Option<String>,
    #[serde(default = "default_error_status")]
    error_status_from: i64,
    #[serde(default = "default_dedup_ttl")]
    dedup_ttl: String,
    #[serde(default = "default_max_keys")]
    max_keys: usize,
    output: RawOutput,
}

fn default_window() -> String {
    "1m".into()
}
fn default_grace() -> String {
    "30s".into()
}
fn default_error_status() -> i64 {
    400
}
fn default_dedup_ttl() -> String {
    "24h".into()
}
fn default_max_keys() -> usize {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    kind: String,
    url: String,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

/// Where finished windows go.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// `INSERT INTO <database>.<table> FORMAT JSONEachRow` over ClickHouse's
    /// HTTP interface.
    ClickHouse {
        url: String,
        database: String,
        table: String,
        user: Option<String>,
        password: Option<String>,
    },
    /// A JSON array of rows POSTed to `url`.
    Http {
        url: String,
        headers: Vec<(String, String)>,
    },
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub window_ms: i64,
    pub grace_ms: i64,
    /// The groupings for iam, Tyk and generic records, resolved once from
    /// `group_by` or the schema's defaults.
    groups: [Vec<Vec<String>>; 3],
    /// `None`: the schema's default (`RequestTime` for Tyk, none for iam).
    pub latency_field: Option<String>,
    pub error_status_from: i64,
    pub dedup_ttl: Duration,
    pub max_keys: usize,
    pub output: Output,
}

impl Settings {
    /// Parses and checks the pump's config; errors name the key.
    pub fn parse(config: &pumphouse_sdk::Config) -> Result<Settings, Error> {
        let raw: Raw = config.parse()?;
        let window = duration("window", &raw.window)?;
        let day = Duration::from_secs(86_400);
        if window < Duration::from_secs(1)
            || window > day
            || !day.as_secs().is_multiple_of(window.as_secs())
        {
            return Err(Error::fatal(format!(
                "window: {:?} must be between 1s and 24h and divide a day evenly (1m, 5m, 1h, ...)",
                raw.window
            )));
        }
        let grace = duration("grace", &raw.grace)?;
        let dedup_ttl = duration("dedup_ttl", &raw.dedup_ttl)?;
        if dedup_ttl < Duration::from_secs(60) {
            return Err(Error::fatal("dedup_ttl: must be at least 1m"));
        }
        if let Some(groups) = &raw.group_by {
            if groups.is_empty() || groups.iter().any(|g| g.is_empty()) {
                return Err(Error::fatal(
                    "group_by: give one or more non-empty lists of field names",
                ));
            }
        }
        if raw.max_keys == 0 {
            return Err(Error::fatal("max_keys: must be at least 1"));
        }
        let o = raw.output;
        let output = match o.kind.as_str() {
            "clickhouse" => Output::ClickHouse {
                url: o.url.trim_end_matches('/').to_string(),
                database: o.database.unwrap_or_else(|| "default".into()),
                table: o
                    .table
                    .ok_or_else(|| Error::fatal("output.table: required for clickhouse"))?,
                user: o.user.map(|u| expand_env("output.user", &u)).transpose()?,
                password: o
                    .password
                    .map(|p| expand_env("output.password", &p))
                    .transpose()?,
            },
            "http" => Output::Http {
                url: o.url,
                headers: o
                    .headers
                    .into_iter()
                    .map(|(k, v)| {
                        let v = expand_env(&format!("output.headers.{k}"), &v)?;
                        Ok((k, v))
                    })
                    .collect::<Result<_, Error>>()?,
            },
            other => {
                return Err(Error::fatal(format!(
                    "output.kind: {other:?} is not one of \"clickhouse\", \"http\""
                )))
            }
        };
        Ok(Settings {
            window_ms: window.as_millis() as i64,
            grace_ms: grace.as_millis() as i64,
            groups: [Schema::Iam, Schema::Tyk, Schema::Generic].map(|schema| {
                raw.group_by
                    .clone()
                    .unwrap_or_else(|| default_groups(schema))
            }),
            latency_field: raw.latency_field,
            error_status_from: raw.error_status_from,
            dedup_ttl,
            max_keys: raw.max_keys,
            output,
        })
    }

    /// The groupings for records of `schema`.
    pub fn groupings(&self, schema: Schema) -> &[Vec<String>] {
        let i = match schema {
            Schema::Iam => 0,
            Schema::Tyk => 1,
            Schema::Generic => 2,
        };
        &self.groups[i]
    }

    /// The latency field for records of `schema`, if any.
    pub fn latency(&self, schema: Schema) -> Option<&str> {
        match (&self.latency_field, schema) {
            (Some(f), _) => Some(f),
            (None, Schema::Tyk) => Some("RequestTime"),
            _ => None,
        }
    }
}

/// The groupings a schema gets when `group_by` is not set.
fn default_groups(schema: Schema) -> Vec<Vec<String>> {
    let lists: &[&[&str]] = match schema {
        Schema::Tyk => &[
            &["OrgID", "APIID"],
            &["OrgID", "APIID", "ResponseCode"],
            &["OrgID", "APIKey"],
        ],
        Schema::Iam => &[&["Username"], &["Effect"], &["Username", "Effect"]],
        Schema::Generic => &[],
    };
    lists
        .iter()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// A duration with a unit (`30s`, `5m`, `1h`, `2d`), or a plain number of
/// seconds.
fn duration(key: &str, text: &str) -> Result<Duration, Error> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(secs) = t.parse() {
            return Ok(Duration::from_secs(secs));
        }
    }
    parse_duration(t).map_err(|e| Error::fatal(format!("{key}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<Settings, Error> {
        Settings::parse(&pumphouse_sdk::Config::from(json))
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(duration("w", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("w", "5m").unwrap(), Duration::from_secs(300));
        assert_eq!(duration("w", "1h").unwrap(), Duration::from_secs(3600));
        assert!(duration("w", "1y")
            .unwrap_err()
            .message()
            .contains("unknown unit"));
        assert!(duration("w", "m")
            .unwrap_err()
            .message()
            .contains("not a duration"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let out = serde_json::json!({"kind": "http", "url": "http://x.test/"});
        let e = parse(serde_json::json!({"window": "7m", "output": out})).unwrap_err();
        assert!(e.message().contains("window"), "{}", e.message());
        let e = parse(serde_json::json!({"output": {"kind": "kafka", "url": "x"}})).unwrap_err();
        assert!(e.message().contains("output.kind"), "{}", e.message());
        let e =
            parse(serde_json::json!({"output": {"kind": "clickhouse", "url": "x"}})).unwrap_err();
        assert!(e.message().contains("output.table"), "{}", e.message());
        let e = parse(serde_json::json!({"group_by": [[]], "output": out})).unwrap_err();
        assert!(e.message().contains("group_by"), "{}", e.message());
        let e = parse(serde_json::json!({"output": {"kind": "http", "url": "x",
            "headers": {"authorization": "Bearer ${PUMP_AGG_UNSET_TOKEN}"}}}))
        .unwrap_err();
        assert!(
            e.message().contains("PUMP_AGG_UNSET_TOKEN"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn defaults_follow_the_schema() {
        let s = parse(serde_json::json!({"output": {"kind": "http", "url": "x"}})).unwrap();
        assert_eq!(s.window_ms, 60_000);
        assert_eq!(s.latency(Schema::Tyk), Some("RequestTime"));
        assert_eq!(s.latency(Schema::Iam), None);
        assert_eq!(s.groupings(Schema::Iam)[2], vec!["Username", "Effect"]);
    }
}

//! The pump's `config` table, checked once in `init`; every error names the
//! key at fault.

use std::time::Duration;

use pumphouse_sdk::config::{expand_env_with as resolve_env, parse_duration};
use pumphouse_sdk::{Config, Error};
use serde::Deserialize;

use crate::bulk::IndexPattern;

/// Default index pattern: one index per UTC day.
pub const DEFAULT_INDEX: &str = "pumphouse-%Y.%m.%d";
/// Default wait for the bulk response; below the pump's default per-call
/// `timeout` of 10s so a slow cluster shows up as this plugin's `retry`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: String,
    #[serde(default)]
    index: Option<String>,
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsConfig {
    /// `{url}/_bulk` plus `?pipeline=` when set.
    pub bulk_url: String,
    pub index: IndexPattern,
    /// The `Authorization` header value, if any.
    pub authorization: Option<String>,
    pub timeout: Duration,
}

impl EsConfig {
    /// Parses and checks `config`, resolving `${VAR}` in the credentials
    /// with `env` (the plugin's environment in production).
    pub fn parse(config: &Config, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let raw: Raw = config.parse()?;
        let url = raw.url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains('?') {
            return Err(Error::fatal(format!(
                "url: {url:?} must be http:// or https:// and the cluster's base URL, without a query"
            )));
        }
        let mut bulk_url = format!("{url}/_bulk");
        if let Some(p) = &raw.pipeline {
            let ok = !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok {
                return Err(Error::fatal(format!(
                    "pipeline: {p:?} must be letters, digits, '-', '_' or '.'"
                )));
            }
            bulk_url.push_str("?pipeline=");
            bulk_url.push_str(p);
        }
        let index = IndexPattern::parse(raw.index.as_deref().unwrap_or(DEFAULT_INDEX))
            .map_err(|e| Error::fatal(format!("index: {e}")))?;
        let secret = |key: &str, value: &Option<String>| -> Result<Option<String>, Error> {
            value
                .as_deref()
                .map(|v| resolve_env(v, &env).map_err(|e| Error::fatal(format!("{key}: {e}"))))
                .transpose()
        };
        let username = secret("username", &raw.username)?;
        let password = secret("password", &raw.password)?;
        let api_key = secret("api_key", &raw.api_key)?;
        let authorization = match (username, password, api_key) {
            (None, None, None) => None,
            (Some(u), Some(p), None) => {
                Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes())))
            }
            (None, None, Some(k)) => Some(format!("ApiKey {k}")),
            (Some(_), None, None) | (None, Some(_), None) => {
                return Err(Error::fatal("username, password: set both for basic auth"))
            }
            _ => {
                return Err(Error::fatal(
                    "api_key: set either api_key or username and password",
                ))
            }
        };
        let timeout = match raw.timeout {
            Some(t) => parse_duration(&t).map_err(|e| Error::fatal(format!("timeout: {e}")))?,
            None => DEFAULT_TIMEOUT,
        };
        if timeout.is_zero() {
            return Err(Error::fatal("timeout: must be more than 0"));
        }
        Ok(EsConfig {
            bulk_url,
            index,
            authorization,
            timeout,
        })
    }
}

/// Standard base64 with padding, for the basic auth header.
fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;
    use pumphouse_sdk::ErrorKind;

    fn env(name: &str) -> Option<String> {
        match name {
            "ES_USER" => Some("elastic".into()),
            "ES_PASS" => Some("pa$$:word".into()),
            "ES_KEY" => Some("a2V5".into()),
            _ => None,
        }
    }

    fn parse(v: pumphouse_sdk::serde_json::Value) -> Result<EsConfig, Error> {
        EsConfig::parse(&Config::from(v), env)
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"url": "http://localhost:9200/"})).unwrap();
        assert_eq!(c.bulk_url, "http://localhost:9200/_bulk");
        assert_eq!(c.index, IndexPattern::parse(DEFAULT_INDEX).unwrap());
        assert_eq!(c.authorization, None);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn every_key() {
        let c = parse(json!({
            "url": "https://es.test:9243",
            "index": "iam-%Y.%m",
            "pipeline": "geo-ip_v2",
            "username": "${ES_USER}",
            "password": "${ES_PASS}",
            "timeout": "3s",
        }))
        .unwrap();
        assert_eq!(c.bulk_url, "https://es.test:9243/_bulk?pipeline=geo-ip_v2");
        // base64("elastic:pa$$:word")
        assert_eq!(
            c.authorization.as_deref(),
            Some("Basic ZWxhc3RpYzpwYSQkOndvcmQ=")
        );
        assert_eq!(c.timeout, Duration::from_secs(3));
        let c = parse(json!({"url": "http://h:9200", "api_key": "${ES_KEY}"})).unwrap();
        assert_eq!(c.authorization.as_deref(), Some("ApiKey a2V5"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({}), "missing field `url`"),
            (json!({"url": "es:9200"}), "url:"),
            (json!({"url": "http://h/?x=1"}), "url:"),
            (json!({"url": "http://h", "index": "Upper-%Y"}), "index:"),
            (json!({"url": "http://h", "index": "a-%Q"}), "index: %Q"),
            (json!({"url": "http://h", "pipeline": "a b"}), "pipeline:"),
            (
                json!({"url": "http://h", "username": "u"}),
                "username, password",
            ),
            (
                json!({"url": "http://h", "password": "${ES_NOPE}"}),
                "password: environment variable ES_NOPE is not set",
            ),
            (
                json!({"url": "http://h", "api_key": "k", "username": "u", "password": "p"}),
                "api_key: set either",
            ),
            (json!({"url": "http://h", "timeout": "1y"}), "timeout:"),
            (
                json!({"url": "http://h", "idx": "x"}),
                "unknown field `idx`",
            ),
        ];
        for (config, want) in cases {
            let err = parse(config.clone()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Fatal);
            assert!(err.to_string().contains(want), "{config}: {err}");
        }
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn env_placeholders() {
        assert_eq!(
            resolve_env("${ES_USER}/$${x}/$", env).unwrap(),
            "elastic/${x}/$"
        );
        assert!(resolve_env("${ES_USER", env).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
    }
}

//! The pump's `config` table, checked once in `init` so that `write` never
//! meets a bad setting: every error names the key at fault.

use std::collections::BTreeMap;
use std::time::Duration;

use pumphouse_sdk::config::{expand_env_with as resolve_env, parse_duration};
use pumphouse_sdk::http::Method;
use pumphouse_sdk::{Config, Error};
use serde::Deserialize;

/// Default wait for the response (and between its chunks); below the
/// pump's default per-call `timeout` of 10s so a slow server shows up as
/// this plugin's `retry`, not as a host timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on how long `write` waits when a server answers with
/// `Retry-After`; longer waits are left to the host's backoff.
pub const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

/// How records are laid out in a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `[rec,rec,...]`, `Content-Type: application/json`.
    JsonArray,
    /// One record per line, `Content-Type: application/x-ndjson`.
    Ndjson,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::JsonArray => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    format: Option<Format>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    gzip: bool,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    max_retry_wait: Option<String>,
    #[serde(default)]
    max_batch_records: Option<usize>,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub url: String,
    pub method: Method,
    pub format: Format,
    /// Names in lowercase, `${VAR}`s already resolved.
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub timeout: Duration,
    pub max_retry_wait: Duration,
    /// Records per request; `None`: the whole batch in one request.
    pub max_batch_records: Option<usize>,
}

/// Headers the host or this plugin sets; a config value would clash.
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "te",
];

impl HttpConfig {
    /// Parses and checks `config`, resolving `${VAR}` in header values with
    /// `env` (the plugin's environment in production).
    pub fn parse(config: &Config, env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let raw: Raw = config.parse()?;
        let url = raw.url.trim().to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::fatal(format!(
                "url: {url:?} must start with http:// or https://"
            )));
        }
        let method = match raw.method.as_deref().map(str::to_ascii_uppercase) {
            None => Method::Post,
            Some(m) => match m.as_str() {
                "POST" => Method::Post,
                "PUT" => Method::Put,
                "PATCH" => Method::Patch,
                _ => {
                    return Err(Error::fatal(format!(
                        "method: {m:?} sends no body; use POST, PUT or PATCH"
                    )))
                }
            },
        };
        let mut headers = Vec::with_capacity(raw.headers.len());
        for (name, value) in &raw.headers {
            let lower = name.to_ascii_lowercase();
            if lower.is_empty() || !lower.bytes().all(is_token_byte) {
                return Err(Error::fatal(format!(
                    "headers: {name:?} is not a valid header name"
                )));
            }
            if RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(Error::fatal(format!(
                    "headers.{name}: set by pumphouse itself (use gzip = true for Content-Encoding)"
                )));
            }
            let value = resolve_env(value, &env)
                .map_err(|e| Error::fatal(format!("headers.{name}: {e}")))?;
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(Error::fatal(format!(
                    "headers.{name}: the value contains a line break or NUL"
                )));
            }
            headers.push((lower, value));
        }
        let timeout = match raw.timeout {
            Some(t) => parse_duration(&t).map_err(|e| Error::fatal(format!("timeout: {e}")))?,
            None => DEFAULT_TIMEOUT,
        };
        if timeout.is_zero() {
            return Err(Error::fatal("timeout: must be more than 0"));
        }
        let max_retry_wait = match raw.max_retry_wait {
            Some(t) => {
                parse_duration(&t).map_err(|e| Error::fatal(format!("max_retry_wait: {e}")))?
            }
            None => DEFAULT_MAX_RETRY_WAIT,
        };
        if raw.max_batch_records == Some(0) {
            return Err(Error::fatal("max_batch_records: must be at least 1"));
        }
        Ok(HttpConfig {
            url,
            method,
            format: raw.format.unwrap_or(Format::JsonArray),
            headers,
            gzip: raw.gzip,
            timeout,
            max_retry_wait,
            max_batch_records: raw.max_batch_records,
        })
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;
    use pumphouse_sdk::ErrorKind;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn parse(v: pumphouse_sdk::serde_json::Value) -> Result<HttpConfig, Error> {
        HttpConfig::parse(&Config::from(v), env)
    }

    #[test]
    fn defaults() {
        let c = parse(json!({"url": "http://ingest.test/v1"})).unwrap();
        assert_eq!(c.method, Method::Post);
        assert_eq!(c.format, Format::JsonArray);
        assert!(c.headers.is_empty() && !c.gzip);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.max_retry_wait, DEFAULT_MAX_RETRY_WAIT);
        assert_eq!(c.max_batch_records, None);
    }

    #[test]
    fn every_key() {
        let c = parse(json!({
            "url": "https://ingest.test/v1",
            "method": "put",
            "format": "ndjson",
            "headers": {"Authorization": "Bearer ${TOKEN}", "X-Literal": "$${KEEP} $5"},
            "gzip": true,
            "timeout": "1500ms",
            "max_retry_wait": "0s",
            "max_batch_records": 50,
        }))
        .unwrap();
        assert_eq!(c.method, Method::Put);
        assert_eq!(c.format, Format::Ndjson);
        assert_eq!(
            c.headers,
            vec![
                ("authorization".into(), "Bearer s3cret".into()),
                ("x-literal".into(), "${KEEP} $5".into()),
            ]
        );
        assert!(c.gzip);
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.max_retry_wait, Duration::ZERO);
        assert_eq!(c.max_batch_records, Some(50));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({}), "missing field `url`"),
            (json!({"url": "ftp://x"}), "url:"),
            (json!({"url": "http://x", "method": "GET"}), "method:"),
            (
                json!({"url": "http://x", "format": "csv"}),
                "unknown variant `csv`",
            ),
            (
                json!({"url": "http://x", "headers": {"A": "${NOPE}"}}),
                "headers.A: environment variable NOPE is not set",
            ),
            (
                json!({"url": "http://x", "headers": {"A": "${TOKEN"}}),
                "headers.A: unterminated",
            ),
            (
                json!({"url": "http://x", "headers": {"A": "${1X}"}}),
                "headers.A: ${1X} is not a variable name",
            ),
            (
                json!({"url": "http://x", "headers": {"Bad Name": "v"}}),
                "headers: \"Bad Name\"",
            ),
            (
                json!({"url": "http://x", "headers": {"Content-Length": "1"}}),
                "headers.Content-Length: set by pumphouse",
            ),
            (
                json!({"url": "http://x", "headers": {"A": "a\nb"}}),
                "headers.A: the value contains a line break",
            ),
            (json!({"url": "http://x", "timeout": "soon"}), "timeout:"),
            (
                json!({"url": "http://x", "timeout": "0s"}),
                "timeout: must be more",
            ),
            (
                json!({"url": "http://x", "max_retry_wait": "5y"}),
                "max_retry_wait:",
            ),
            (
                json!({"url": "http://x", "max_batch_records": 0}),
                "max_batch_records:",
            ),
            (
                json!({"url": "http://x", "gzipp": true}),
                "unknown field `gzipp`",
            ),
        ];
        for (config, want) in cases {
            let err = parse(config.clone()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Fatal);
            assert!(err.to_string().contains(want), "{config}: {err}");
        }
    }

    #[test]
    fn env_placeholders() {
        assert_eq!(
            resolve_env("a${TOKEN}b${EMPTY}c", env).unwrap(),
            "as3cretbc"
        );
        assert_eq!(
            resolve_env("no placeholders", env).unwrap(),
            "no placeholders"
        );
        assert_eq!(resolve_env("$", env).unwrap(), "$");
        assert_eq!(resolve_env("$${TOKEN}", env).unwrap(), "${TOKEN}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 5s "), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10").is_err());
    }
}

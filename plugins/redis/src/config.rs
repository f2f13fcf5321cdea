//! The pump's `config` table, checked once in `init`: every mistake is an
//! error that names its key, so a bad pump fails at start, not per batch.

use std::time::Duration;

use pumphouse_sdk::{Config, Error};
use serde::Deserialize;

/// The stream entry field holding the record when `field` is not set (the
/// same as the host's `source.stream_field`, so a second pumphouse can
/// read the stream with its defaults).
pub const DEFAULT_STREAM_FIELD: &str = "record";
/// How long connecting, and each read or write, may take by default.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// Where records go on the target Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `RPUSH`/`LPUSH` onto a list: what the producers do.
    List,
    /// `XADD` to a stream.
    Stream,
    /// `PUBLISH` to a channel: subscribers that are not connected miss it.
    Pubsub,
}

/// How each record is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// The producer's MessagePack bytes, untouched.
    Msgpack,
    /// One JSON object, as the host writes JSON.
    Json,
}

/// Which end of the list a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Push {
    /// Append, as the producers do; a reader popping from the left sees
    /// records in order.
    Rpush,
    /// Prepend.
    Lpush,
}

/// The config as written; see README.md for every key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_mode")]
    mode: Mode,
    address: String,
    key: String,
    #[serde(default = "default_payload")]
    payload: Payload,
    field: Option<String>,
    push: Option<Push>,
    maxlen: Option<u64>,
    username_env: Option<String>,
    password_env: Option<String>,
    #[serde(default)]
    db: u32,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_mode() -> Mode {
    Mode::List
}

fn default_payload() -> Payload {
    Payload::Msgpack
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// The checked configuration, secrets read.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// `host:port`, as the pump's `sandbox.sockets` must list it.
    pub address: String,
    pub key: String,
    pub payload: Payload,
    /// Stream mode: the entry field.
    pub field: String,
    /// List mode: which end.
    pub push: Push,
    /// Stream mode: `MAXLEN ~ n`.
    pub maxlen: Option<u64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    pub timeout: Duration,
}

// Keeps the password out of logs and test failure output.
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("mode", &self.mode)
            .field("address", &self.address)
            .field("key", &self.key)
            .field("payload", &self.payload)
            .field("field", &self.field)
            .field("push", &self.push)
            .field("maxlen", &self.maxlen)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Settings {
    /// Checks `config`, reading the secrets from the instance's environment.
    pub fn from_config(config: &Config) -> Result<Settings, Error> {
        Self::check(config.parse()?, |name| std::env::var(name).ok())
    }

    fn check(raw: RawConfig, env: impl Fn(&str) -> Option<String>) -> Result<Settings, Error> {
        let bad = |key: &str, why: String| Error::fatal(format!("invalid config: {key}: {why}"));
        let port_ok = raw
            .address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(bad(
                "address",
                format!(
                    "{:?} is not host:port (e.g. \"127.0.0.1:6379\")",
                    raw.address
                ),
            ));
        }
        if raw.key.is_empty() {
            return Err(bad("key", "must not be empty".into()));
        }
        if raw.mode != Mode::Stream {
            if raw.field.is_some() {
                return Err(bad("field", "only applies to mode = \"stream\"".into()));
            }
            if raw.maxlen.is_some() {
                return Err(bad("maxlen", "only applies to mode = \"stream\"".into()));
            }
        }
        if raw.mode != Mode::List && raw.push.is_some() {
            return Err(bad("push", "only applies to mode = \"list\"".into()));
        }
        let field = raw.field.unwrap_or_else(|| DEFAULT_STREAM_FIELD.into());
        if field.is_empty() {
            return Err(bad("field", "must not be empty".into()));
        }
        if raw.maxlen == Some(0) {
            return Err(bad("maxlen", "must be at least 1".into()));
        }
        if raw.timeout_ms == 0 {
            return Err(bad("timeout_ms", "must be at least 1".into()));
        }
        let secret = |key: &str, name: Option<String>| -> Result<Option<String>, Error> {
            let Some(name) = name else { return Ok(None) };
            env(&name).map(Some).ok_or_else(|| {
                bad(
                    key,
                    format!("{name} is not set; set it and list it in the pump's sandbox.env"),
                )
            })
        };
        let username = secret("username_env", raw.username_env)?;
        let password = secret("password_env", raw.password_env)?;
        if username.is_some() && password.is_none() {
            return Err(bad(
                "username_env",
                "a username needs password_env as well".into(),
            ));
        }
        Ok(Settings {
            mode: raw.mode,
            address: raw.address,
            key: raw.key,
            payload: raw.payload,
            field,
            push: raw.push.unwrap_or(Push::Rpush),
            maxlen: raw.maxlen,
            username,
            password,
            db: raw.db,
            timeout: Duration::from_millis(raw.timeout_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::{json, Value};
    use pumphouse_sdk::ErrorKind;

    fn check(v: Value) -> Result<Settings, Error> {
        let raw = Config::from(v).parse()?;
        Settings::check(raw, |name| match name {
            "PW" => Some("s3cret".to_owned()),
            "USER" => Some("pump".to_owned()),
            _ => None,
        })
    }

    fn err(v: Value) -> String {
        let e = check(v).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fatal);
        e.to_string()
    }

    #[test]
    fn defaults() {
        let s = check(json!({"address": "127.0.0.1:6379", "key": "k"})).unwrap();
        assert_eq!(s.mode, Mode::List);
        assert_eq!(s.payload, Payload::Msgpack);
        assert_eq!(s.push, Push::Rpush);
        assert_eq!(s.field, "record");
        assert_eq!(s.maxlen, None);
        assert_eq!((s.username, s.password, s.db), (None, None, 0));
        assert_eq!(s.timeout, Duration::from_secs(5));
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let s = check(json!({
            "mode": "stream", "address": "redis.internal:6380", "key": "k",
            "field": "f", "maxlen": 1000, "password_env": "PW", "username_env": "USER", "db": 3,
        }))
        .unwrap();
        assert_eq!(s.password.as_deref(), Some("s3cret"));
        assert_eq!(s.username.as_deref(), Some("pump"));
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "Debug hides the password"
        );
        let e = err(json!({"address": "h:1", "key": "k", "password_env": "NOPE"}));
        assert!(
            e.contains("password_env") && e.contains("NOPE") && e.contains("sandbox.env"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            (json!({"key": "k"}), "address"),
            (json!({"address": "localhost", "key": "k"}), "address"),
            (json!({"address": ":6379", "key": "k"}), "address"),
            (json!({"address": "h:99999", "key": "k"}), "address"),
            (json!({"address": "h:1", "key": ""}), "key"),
            (
                json!({"address": "h:1", "key": "k", "mode": "set"}),
                "unknown variant `set`",
            ),
            (
                json!({"address": "h:1", "key": "k", "payload": "xml"}),
                "unknown variant `xml`",
            ),
            (json!({"address": "h:1", "key": "k", "maxlen": 5}), "maxlen"),
            (
                json!({"address": "h:1", "key": "k", "mode": "pubsub", "field": "x"}),
                "field",
            ),
            (
                json!({"address": "h:1", "key": "k", "mode": "stream", "push": "lpush"}),
                "push",
            ),
            (
                json!({"address": "h:1", "key": "k", "mode": "stream", "maxlen": 0}),
                "maxlen",
            ),
            (
                json!({"address": "h:1", "key": "k", "mode": "stream", "field": ""}),
                "field",
            ),
            (
                json!({"address": "h:1", "key": "k", "timeout_ms": 0}),
                "timeout_ms",
            ),
            (
                json!({"address": "h:1", "key": "k", "username_env": "PW"}),
                "username_env",
            ),
            (
                json!({"address": "h:1", "key": "k", "password": "x"}),
                "unknown field `password`",
            ),
        ];
        for (config, needle) in cases {
            let e = err(config.clone());
            assert!(e.contains(needle), "{config}: {e}");
        }
    }
}

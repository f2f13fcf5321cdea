//! `[source]`: where records come from.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{FieldError, Schema};

/// Default Redis connection.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Records claimed per batch.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// How long a claimed batch stays leased before any instance may reclaim it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Sleep between claims when every key is empty.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Largest batch a claim may take: bounds Lua stack use and Redis latency.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Stream consumer group shared by every pumphouse instance.
pub const DEFAULT_STREAM_GROUP: &str = "pumphouse";
/// Stream entry field holding the record (what `pumphouse-reporter` writes).
pub const DEFAULT_STREAM_FIELD: &str = "record";
/// Deliveries of a stream entry before it is dead-lettered as poison.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// `[source.tls]`: how a `rediss://` connection is verified and which
/// client certificate it presents. Every field is optional; without any,
/// the server certificate is checked against the system's trusted roots.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file of the CA certificate(s) the server certificate must chain
    /// to, instead of the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain), for servers with
    /// `tls-auth-clients yes`. Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key. Needs `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Turns certificate and host name verification off (a warning is
    /// logged at start). For tests only: anyone on the path can read and
    /// change the traffic.
    pub insecure: bool,
}

impl TlsConfig {
    /// True when no field is set.
    pub fn is_default(&self) -> bool {
        *self == TlsConfig::default()
    }
}

/// Delivery guarantee of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Leased claims, acked after every pump delivered: nothing is lost.
    #[default]
    AtLeastOnce,
    /// Destructive `LPOP`: fastest, loses in-flight records on a crash.
    AtMostOnce,
}

/// What the source keys are, with the settings only that kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// Redis lists filled by `RPUSH` (iam-authz-server, Tyk Gateway).
    List,
    /// Redis streams read through a consumer group.
    Stream(StreamOptions),
}

/// The settings of a `type = "stream"` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// The consumer group every instance joins (`group`).
    pub group: String,
    /// The entry field holding the MessagePack record (`stream_field`).
    pub field: String,
    /// Deliveries of one entry before it is dead-lettered as poison
    /// (`max_deliveries`).
    pub max_deliveries: u32,
}

/// `[source]`, validated: `RawSource` documents each field as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawSource")]
pub struct SourceConfig {
    /// `type`, with the stream-only settings.
    pub kind: SourceKind,
    /// Redis URL, `redis[s]://[user:pass@]host:port/db`.
    pub redis_url: String,
    /// `[source.tls]`, for `rediss://` URLs.
    pub tls: TlsConfig,
    /// Password of the sentinels of a `redis+sentinel://` URL.
    pub sentinel_password: Option<String>,
    /// `iam`, `tyk` or `generic`.
    pub format: Schema,
    /// The list key producers push to. Defaults to the producer's own key.
    pub key: Option<String>,
    /// Also read `<key>_0` … `<key>_<shards-1>`.
    pub shards: u32,
    /// `at-least-once` or `at-most-once` (lists only).
    pub delivery: Delivery,
    /// Records per claim.
    pub batch_size: usize,
    /// How long a claim is leased before another instance may take it over.
    pub lease: Duration,
    /// Idle sleep between claims when all keys are empty.
    pub poll_interval: Duration,
    /// Redis list holding records that could not be decoded or delivered.
    pub dead_letter_key: Option<String>,
}

/// The `type` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SourceType {
    #[default]
    List,
    Stream,
}

/// `[source]` as written: flat, with the stream-only keys optional so that
/// setting one for a list source can be refused by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSource {
    /// `list` (default) or `stream`.
    #[serde(rename = "type")]
    kind: SourceType,
    /// Redis URL, `redis://[user:password@]host:port/db`, or `rediss://…`
    /// for TLS. The user is a Redis ACL user (`default` when only a
    /// password is given). Behind Sentinel:
    /// `redis+sentinel://[user:password@]host1:port1,host2:port2/MASTER/db`
    /// (`rediss+sentinel://` for TLS), naming the sentinels and the
    /// primary they watch.
    redis_url: String,
    /// `[source.tls]`: CA, client certificate and verification of a
    /// `rediss://` connection.
    tls: TlsConfig,
    /// Password of the sentinels themselves (`requirepass` in
    /// sentinel.conf), for `redis+sentinel://` URLs; the URL's own
    /// credentials are the primary's.
    sentinel_password: Option<String>,
    /// `iam`, `tyk` or `generic`; required.
    format: Option<Schema>,
    /// The list key producers push to. Defaults to the producer's own key.
    key: Option<String>,
    /// Also read `<key>_0` … `<key>_<shards-1>` (Tyk's
    /// `enable_multiple_analytics_keys` writes 10 shards).
    shards: u32,
    /// `at-least-once` (default) or `at-most-once`.
    delivery: Delivery,
    /// Records per claim.
    batch_size: usize,
    /// How long a claim is leased before another instance may take it over.
    #[serde(with = "humantime_serde")]
    lease: Duration,
    /// Idle sleep between claims when all keys are empty.
    #[serde(with = "humantime_serde")]
    poll_interval: Duration,
    /// Redis list holding records that could not be decoded or delivered.
    /// Defaults to `pumphouse:dead-letter:<key>`.
    dead_letter_key: Option<String>,
    /// Streams: the consumer group every instance joins (created at start
    /// if missing, reading from the stream's beginning).
    group: Option<String>,
    /// Streams: the entry field holding the MessagePack record.
    stream_field: Option<String>,
    /// Streams: deliveries of one entry (its first read plus takeovers after
    /// an instance died holding it) before it is dead-lettered as poison.
    max_deliveries: Option<u32>,
}

impl Default for RawSource {
    fn default() -> Self {
        RawSource {
            kind: SourceType::List,
            redis_url: DEFAULT_REDIS_URL.to_string(),
            tls: TlsConfig::default(),
            sentinel_password: None,
            format: None,
            key: None,
            shards: 0,
            delivery: Delivery::AtLeastOnce,
            batch_size: DEFAULT_BATCH_SIZE,
            lease: DEFAULT_LEASE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            dead_letter_key: None,
            group: None,
            stream_field: None,
            max_deliveries: None,
        }
    }
}

impl TryFrom<RawSource> for SourceConfig {
    type Error = String;

    fn try_from(raw: RawSource) -> Result<Self, String> {
        let kind = match raw.kind {
            SourceType::Stream => SourceKind::Stream(StreamOptions {
                group: raw.group.unwrap_or_else(|| DEFAULT_STREAM_GROUP.into()),
                field: raw
                    .stream_field
                    .unwrap_or_else(|| DEFAULT_STREAM_FIELD.into()),
                max_deliveries: raw.max_deliveries.unwrap_or(DEFAULT_MAX_DELIVERIES),
            }),
            SourceType::List => {
                super::only_in(
                    "type = \"stream\" sources",
                    "type = \"stream\"",
                    &[
                        ("group", raw.group.is_some()),
                        ("stream_field", raw.stream_field.is_some()),
                        ("max_deliveries", raw.max_deliveries.is_some()),
                    ],
                )?;
                SourceKind::List
            }
        };
        Ok(SourceConfig {
            kind,
            redis_url: raw.redis_url,
            tls: raw.tls,
            sentinel_password: raw.sentinel_password,
            format: raw.format.ok_or("missing field `format`")?,
            key: raw.key,
            shards: raw.shards,
            delivery: raw.delivery,
            batch_size: raw.batch_size,
            lease: raw.lease,
            poll_interval: raw.poll_interval,
            dead_letter_key: raw.dead_letter_key,
        })
    }
}

impl SourceConfig {
    /// The base key, defaulted per format.
    pub fn base_key(&self) -> &str {
        self.key
            .as_deref()
            .unwrap_or_else(|| self.format.producer_key())
    }

    /// Every list key this source drains.
    pub fn keys(&self) -> Vec<String> {
        let base = self.base_key();
        let mut keys = vec![base.to_string()];
        keys.extend((0..self.shards).map(|i| format!("{base}_{i}")));
        keys
    }

    /// The dead-letter list.
    pub fn dead_letter_key(&self) -> String {
        self.dead_letter_key
            .clone()
            .unwrap_or_else(|| format!("pumphouse:dead-letter:{}", self.base_key()))
    }

    /// Range checks; fields are relative to `source`.
    pub(super) fn validate(&self) -> Result<(), FieldError> {
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return Err(FieldError::new(
                "batch_size",
                format!(
                    "must be between 1 and {MAX_BATCH_SIZE}, got {}",
                    self.batch_size
                ),
            ));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(FieldError::new("lease", "must be at least 1s"));
        }
        if self.poll_interval.is_zero() {
            return Err(FieldError::new(
                "poll_interval",
                "must be greater than zero",
            ));
        }
        // The parser's errors never quote the URL: it may hold a password.
        let topology = crate::source::redis::topology::parse(&self.redis_url)
            .map_err(|e| FieldError::new("redis_url", e))?;
        if self.sentinel_password.is_some()
            && !matches!(
                topology,
                crate::source::redis::topology::Topology::Sentinel { .. }
            )
        {
            return Err(FieldError::new(
                "sentinel_password",
                "is set but redis_url is not a redis+sentinel:// URL",
            ));
        }
        self.validate_tls()?;
        if self.base_key().is_empty() {
            return Err(FieldError::new("key", "must not be empty"));
        }
        if let SourceKind::Stream(stream) = &self.kind {
            if self.delivery == Delivery::AtMostOnce {
                return Err(FieldError::new(
                    "delivery",
                    "at-most-once is for list sources; streams are read through a consumer group and acked",
                ));
            }
            stream.validate()?;
        }
        Ok(())
    }
}

impl SourceConfig {
    /// `[source.tls]` needs a TLS URL, and a client certificate its key.
    fn validate_tls(&self) -> Result<(), FieldError> {
        let tls = &self.tls;
        if !tls.is_default() && !self.redis_url.starts_with("rediss") {
            return Err(FieldError::new(
                "tls",
                "[source.tls] is set but redis_url is not rediss://: TLS needs a rediss:// \
                 (or rediss+sentinel://, rediss+cluster://) URL",
            ));
        }
        match (&tls.cert_file, &tls.key_file) {
            (Some(_), None) => Err(FieldError::new(
                "tls.key_file",
                "cert_file is set: the client certificate needs its key_file",
            )),
            (None, Some(_)) => Err(FieldError::new(
                "tls.cert_file",
                "key_file is set: the client key needs its cert_file",
            )),
            _ => Ok(()),
        }
    }
}

impl StreamOptions {
    fn validate(&self) -> Result<(), FieldError> {
        if self.group.is_empty() || self.field.is_empty() {
            return Err(FieldError::new(
                "group",
                "group and stream_field must not be empty",
            ));
        }
        if self.max_deliveries == 0 {
            return Err(FieldError::new("max_deliveries", "must be at least 1"));
        }
        Ok(())
    }
}

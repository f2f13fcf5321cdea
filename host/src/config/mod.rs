//! The TOML configuration: types, defaults, `${ENV}` interpolation and
//! validation. Pure: nothing here touches Redis or plugins. Every field is
//! documented for users in `configs/pumphouse.example.toml`.

mod interpolate;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

pub use crate::record::Schema;
pub use interpolate::interpolate_env;

/// Default Redis connection.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";
/// Records claimed per batch.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// How long a claimed batch stays leased before any instance may reclaim it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Sleep between claims when every key is empty.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Batches each lane may hold before the source stops claiming.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Where the HTTP server listens.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// How long shutdown waits for in-flight batches.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet time after a file change before a reload.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);
/// Per-call time limit for a plugin.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Linear memory a plugin instance may grow to.
pub const DEFAULT_MAX_MEMORY: ByteSize = ByteSize::mib(128);
/// First retry delay.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Retry delay cap.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Epoch tick used to enforce plugin timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Largest batch a claim may take: bounds Lua stack use and Redis latency.
pub const MAX_BATCH_SIZE: usize = 10_000;
/// Disk a pump's spool may fill before `when_full` applies.
pub const DEFAULT_MAX_SPOOL_BYTES: ByteSize = ByteSize::gib(1);
/// Stream consumer group shared by every pumphouse instance.
pub const DEFAULT_STREAM_GROUP: &str = "pumphouse";
/// Stream entry field holding the record (what `pumphouse-reporter` writes).
pub const DEFAULT_STREAM_FIELD: &str = "record";
/// Deliveries of a stream entry before it is dead-lettered as poison.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;

/// A configuration error, naming the field or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Env { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory the `plugin` names of pumps are resolved in. Relative paths
    /// are relative to the config file's directory.
    #[serde(default = "default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Directory holding the spools of `buffer = "disk"` pumps, one file per
    /// pump. Relative paths are relative to the config file's directory.
    /// Each instance needs its own: a spool file is locked while open.
    #[serde(default = "default_spool_dir")]
    pub spool_dir: PathBuf,
    /// Where records come from.
    pub source: SourceConfig,
    /// The HTTP server (health, readiness, metrics).
    #[serde(default)]
    pub server: ServerConfig,
    /// Shutdown behaviour.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Hot reload of pumps.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// The pumps; every pump receives every record.
    #[serde(default)]
    pub pumps: Vec<PumpConfig>,
}

fn default_plugins_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("spool")
}

/// What the source keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Redis lists filled by `RPUSH` (iam-authz-server, Tyk Gateway).
    #[default]
    List,
    /// Redis streams read through a consumer group.
    Stream,
}

/// Delivery guarantee of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Leased claims, acked after every pump delivered: nothing is lost.
    AtLeastOnce,
    /// Destructive `LPOP`: fastest, loses in-flight records on a crash.
    AtMostOnce,
}

/// `[source]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// `list` (default) or `stream`.
    #[serde(rename = "type", default)]
    pub kind: SourceKind,
    /// Redis URL, `redis://[user:pass@]host:port/db`.
    #[serde(default = "default_redis_url")]
    pub redis_url: String,
    /// `iam`, `tyk` or `generic`.
    pub format: Schema,
    /// The list key producers push to. Defaults to the producer's own key.
    #[serde(default)]
    pub key: Option<String>,
    /// Also read `<key>_0` … `<key>_<shards-1>` (Tyk's
    /// `enable_multiple_analytics_keys` writes 10 shards).
    #[serde(default)]
    pub shards: u32,
    /// `at-least-once` (default) or `at-most-once`.
    #[serde(default = "default_delivery")]
    pub delivery: Delivery,
    /// Records per claim.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How long a claim is leased before another instance may take it over.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// Idle sleep between claims when all keys are empty.
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Redis list holding records that could not be decoded or delivered.
    /// Defaults to `pumphouse:dead-letter:<key>`.
    #[serde(default)]
    pub dead_letter_key: Option<String>,
    /// Streams: the consumer group every instance joins (created at start
    /// if missing, reading from the stream's beginning).
    #[serde(default = "default_stream_group")]
    pub group: String,
    /// Streams: the entry field holding the MessagePack record.
    #[serde(default = "default_stream_field")]
    pub stream_field: String,
    /// Streams: deliveries of one entry (its first read plus takeovers after
    /// an instance died holding it) before it is dead-lettered as poison.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: u32,
}

fn default_stream_group() -> String {
    DEFAULT_STREAM_GROUP.to_string()
}
fn default_stream_field() -> String {
    DEFAULT_STREAM_FIELD.to_string()
}
fn default_max_deliveries() -> u32 {
    DEFAULT_MAX_DELIVERIES
}

fn default_redis_url() -> String {
    DEFAULT_REDIS_URL.to_string()
}
fn default_delivery() -> Delivery {
    Delivery::AtLeastOnce
}
fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}
fn default_lease() -> Duration {
    DEFAULT_LEASE
}
fn default_poll_interval() -> Duration {
    DEFAULT_POLL_INTERVAL
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
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `host:port` for `/healthz`, `/readyz` and `/metrics`; `port 0` picks
    /// a free port (logged at start).
    #[serde(default = "default_listen")]
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long SIGTERM/SIGINT waits for in-flight batches; what is not
    /// finished stays claimed in Redis and is re-delivered after its lease.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

fn default_drain_timeout() -> Duration {
    DEFAULT_DRAIN_TIMEOUT
}

/// `[reload]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the config file or a `.wasm` in `plugins_dir` changes
    /// (SIGHUP and `POST /admin/reload` always work).
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Quiet time after the last file change before reloading.
    #[serde(default = "default_debounce", with = "humantime_serde")]
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_debounce() -> Duration {
    DEFAULT_DEBOUNCE
}

/// `[[pumps]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PumpConfig {
    /// Unique name; used in logs, metrics and dead-letter entries.
    pub name: String,
    /// Sink plugin file name in `plugins_dir` (or a path).
    pub plugin: String,
    /// Host-side record filters, applied before any plugin.
    #[serde(default)]
    pub filters: HostFilters,
    /// Drop bulky detail fields before delivery (iam: `Policies`,
    /// `Deciders`; Tyk: `RawRequest`, `RawResponse`).
    #[serde(default)]
    pub omit_detailed_recording: bool,
    /// Records larger than this (encoded bytes as received) are
    /// dead-lettered for this pump instead of delivered. Unset: no limit.
    #[serde(default)]
    pub max_record_size: Option<ByteSize>,
    /// Filter plugins applied in order before the sink.
    #[serde(default)]
    pub filters_chain: Vec<FilterPluginConfig>,
    /// Per-call time limit for every plugin of this pump.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Batches this pump may hold before the source stops claiming more
    /// (Redis stays the buffer while a pump is slow).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_batches: usize,
    /// `memory` (default): batches stay claimed in Redis until this pump
    /// delivered them. `disk`: batches are written to this pump's spool
    /// (fsynced) and released at once; the pump drains its spool on its
    /// own, so a slow or failing sink does not hold the other pumps back.
    #[serde(default)]
    pub buffer: BufferKind,
    /// `disk` buffer: spool size limit (record bytes).
    #[serde(default = "default_max_spool_bytes")]
    pub max_spool_bytes: ByteSize,
    /// `disk` buffer: when the spool is full, `block` (default: stop taking
    /// batches; Redis buffers) or `drop_oldest` (discard the oldest spooled
    /// batches, counted and logged).
    #[serde(default)]
    pub when_full: WhenFull,
    /// Largest payload sent to the sink in one call; bigger batches are split
    /// before sending. Unset: no limit.
    #[serde(default)]
    pub max_batch_bytes: Option<ByteSize>,
    /// Delivery rate limits (token buckets).
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Retry policy for failed writes.
    #[serde(default)]
    pub retry: RetryConfig,
    /// When set, the sink also gets an empty batch after this long without
    /// records (and again at this interval while none come), so plugins
    /// that buffer or aggregate can flush on time. Unset: no ticks.
    #[serde(default, with = "humantime_serde")]
    pub tick_interval: Option<Duration>,
    /// What the plugin may touch.
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// Free-form table handed to the sink's `init` as JSON.
    #[serde(default = "empty_table")]
    pub config: toml::Table,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}
fn default_max_spool_bytes() -> ByteSize {
    DEFAULT_MAX_SPOOL_BYTES
}

/// Where a pump keeps batches it has not delivered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BufferKind {
    /// Claimed in Redis until delivered.
    #[default]
    Memory,
    /// In the pump's durable spool.
    Disk,
}

/// What a full spool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: the source stops claiming and Redis buffers.
    #[default]
    Block,
    /// Discard the oldest spooled batches to make room.
    DropOldest,
}

/// `[pumps.rate_limit]`: unset limits do not apply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Records delivered per second (bursts up to one second's worth).
    #[serde(default)]
    pub records_per_second: Option<u32>,
    /// Payload bytes delivered per second, e.g. `"5MiB"` (bursts up to one
    /// second's worth).
    #[serde(default)]
    pub bytes_per_second: Option<ByteSize>,
}
fn empty_table() -> toml::Table {
    toml::Table::new()
}

/// One entry of `filters_chain`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPluginConfig {
    /// Filter plugin file name in `plugins_dir` (or a path).
    pub plugin: String,
    /// Free-form table handed to the filter's `init` as JSON.
    #[serde(default = "empty_table")]
    pub config: toml::Table,
}

/// `[pumps.filters]`: allow and skip lists. An empty allow list allows
/// everything; a record must pass every list that is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFilters {
    /// iam: keep only these usernames.
    #[serde(default)]
    pub usernames: Vec<String>,
    /// iam: drop these usernames.
    #[serde(default)]
    pub skip_usernames: Vec<String>,
    /// Tyk: keep only these org ids.
    #[serde(default)]
    pub org_ids: Vec<String>,
    /// Tyk: drop these org ids.
    #[serde(default)]
    pub skip_org_ids: Vec<String>,
    /// Tyk: keep only these API ids.
    #[serde(default)]
    pub api_ids: Vec<String>,
    /// Tyk: drop these API ids.
    #[serde(default)]
    pub skip_api_ids: Vec<String>,
    /// Tyk: keep only these response codes.
    #[serde(default)]
    pub response_codes: Vec<i64>,
    /// Tyk: drop these response codes.
    #[serde(default)]
    pub skip_response_codes: Vec<i64>,
}

impl HostFilters {
    fn iam_fields_set(&self) -> bool {
        !self.usernames.is_empty() || !self.skip_usernames.is_empty()
    }
    fn tyk_fields_set(&self) -> bool {
        !(self.org_ids.is_empty()
            && self.skip_org_ids.is_empty()
            && self.api_ids.is_empty()
            && self.skip_api_ids.is_empty()
            && self.response_codes.is_empty()
            && self.skip_response_codes.is_empty())
    }
    /// True when no list is set.
    pub fn is_empty(&self) -> bool {
        !self.iam_fields_set() && !self.tyk_fields_set()
    }
}

/// `[pumps.retry]`: capped exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub initial: Duration,
    /// Delay cap.
    #[serde(default = "default_retry_max", with = "humantime_serde")]
    pub max: Duration,
    /// Failed attempts at the same records before they are dead-lettered
    /// ("gave up after N attempts"). Unset: retry until delivered.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial: DEFAULT_RETRY_INITIAL,
            max: DEFAULT_RETRY_MAX,
            max_attempts: None,
        }
    }
}

fn default_retry_initial() -> Duration {
    DEFAULT_RETRY_INITIAL
}
fn default_retry_max() -> Duration {
    DEFAULT_RETRY_MAX
}

/// Cap on each wait of a plugin's outbound HTTP request (connect, first
/// byte, between bytes).
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Plugin log lines per second a pump may write on average.
pub const DEFAULT_LOG_LINES_PER_SECOND: u32 = 100;
/// Plugin log lines a pump may write in a burst above the average.
pub const DEFAULT_LOG_BURST: u32 = 500;

/// `[pumps.sandbox]`: deny by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Linear memory limit per plugin instance, e.g. `"64MiB"`.
    #[serde(default = "default_max_memory")]
    pub max_memory: ByteSize,
    /// Host directories the plugin can see; nothing else of the filesystem
    /// is visible.
    #[serde(default)]
    pub dirs: Vec<DirConfig>,
    /// Names of host environment variables the plugin sees (values are
    /// read when an instance starts; unset ones are skipped with a
    /// warning). No other variable is visible.
    #[serde(default)]
    pub env: Vec<String>,
    /// Where plugins may send HTTP requests: `scheme://host:port` entries;
    /// `*.example.com` for subdomains, `*` for any port. Empty: none.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Let allowed host names resolve to loopback, private or link-local
    /// addresses (an entry naming such an IP literally is allowed anyway).
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Cap on the connect, first-byte and between-bytes waits of a
    /// plugin's HTTP request; the plugin may only ask for less.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub http_timeout: Duration,
    /// `host:port` peers plugins may open TCP/UDP sockets to (port may be
    /// `*`). Empty: no sockets and no name lookups.
    #[serde(default)]
    pub sockets: Vec<String>,
    /// Average plugin log lines per second for this pump; more are dropped
    /// and counted.
    #[serde(default = "default_log_lines_per_second")]
    pub log_lines_per_second: u32,
    /// Plugin log lines this pump may write in a burst.
    #[serde(default = "default_log_burst")]
    pub log_burst: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_memory: DEFAULT_MAX_MEMORY,
            dirs: Vec::new(),
            env: Vec::new(),
            allowed_outbound_hosts: Vec::new(),
            allow_private_networks: false,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
            sockets: Vec::new(),
            log_lines_per_second: DEFAULT_LOG_LINES_PER_SECOND,
            log_burst: DEFAULT_LOG_BURST,
        }
    }
}

fn default_max_memory() -> ByteSize {
    DEFAULT_MAX_MEMORY
}
fn default_http_timeout() -> Duration {
    DEFAULT_HTTP_TIMEOUT
}
fn default_log_lines_per_second() -> u32 {
    DEFAULT_LOG_LINES_PER_SECOND
}
fn default_log_burst() -> u32 {
    DEFAULT_LOG_BURST
}

impl SandboxConfig {
    /// Validates the capability lists; the error is `(field, message)`
    /// with the field relative to `sandbox.`.
    fn check_capabilities(&self) -> Result<(), (String, String)> {
        use crate::runtime::allow::{OutboundRule, SocketRule};
        for (j, e) in self.allowed_outbound_hosts.iter().enumerate() {
            OutboundRule::parse(e).map_err(|err| {
                (
                    format!("sandbox.allowed_outbound_hosts[{j}]"),
                    err.to_string(),
                )
            })?;
        }
        for (j, e) in self.sockets.iter().enumerate() {
            SocketRule::parse(e)
                .map_err(|err| (format!("sandbox.sockets[{j}]"), err.to_string()))?;
        }
        for (j, name) in self.env.iter().enumerate() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err((
                    format!("sandbox.env[{j}]"),
                    format!("{name:?} is not a variable name (list names only; values come from the host's environment)"),
                ));
            }
        }
        if self.http_timeout < Duration::from_millis(1) {
            return Err(("sandbox.http_timeout".into(), "must be at least 1ms".into()));
        }
        if self.log_lines_per_second == 0 || self.log_burst == 0 {
            return Err((
                "sandbox.log_lines_per_second".into(),
                "log_lines_per_second and log_burst must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One preopened directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirConfig {
    /// Directory on the host; created if missing. Relative paths are
    /// relative to the config file's directory.
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/out`.
    pub guest: String,
    /// Plugin may only read.
    #[serde(default)]
    pub read_only: bool,
}

impl Config {
    /// Reads, interpolates, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_str_at(&text, path, base)
    }

    /// Parses config text as if read from `path`; relative paths resolve
    /// against `base`.
    pub fn from_str_at(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        Self::from_str_with(text, path, base, |k| std::env::var(k).ok())
    }

    /// Like [`Config::from_str_at`], with `${NAME}` looked up in `vars`.
    pub fn from_str_with(
        text: &str,
        path: &Path,
        base: &Path,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = interpolate_env(text, vars).map_err(|message| ConfigError::Env {
            path: path.to_path_buf(),
            message,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config.resolve_paths(base);
        config.validate(path)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        if self.plugins_dir.is_relative() {
            self.plugins_dir = base.join(&self.plugins_dir);
        }
        if self.spool_dir.is_relative() {
            self.spool_dir = base.join(&self.spool_dir);
        }
        for pump in &mut self.pumps {
            for dir in &mut pump.sandbox.dirs {
                if dir.host.is_relative() {
                    dir.host = base.join(&dir.host);
                }
            }
        }
    }

    /// Resolves a plugin reference against `plugins_dir`.
    pub fn plugin_path(&self, plugin: &str) -> PathBuf {
        let p = Path::new(plugin);
        if p.is_absolute() || plugin.contains('/') {
            p.to_path_buf()
        } else {
            self.plugins_dir.join(p)
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |field: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            message,
        };
        let s = &self.source;
        if s.batch_size == 0 || s.batch_size > MAX_BATCH_SIZE {
            return Err(invalid(
                "source.batch_size".into(),
                format!(
                    "must be between 1 and {MAX_BATCH_SIZE}, got {}",
                    s.batch_size
                ),
            ));
        }
        if s.lease < Duration::from_secs(1) {
            return Err(invalid("source.lease".into(), "must be at least 1s".into()));
        }
        if s.poll_interval.is_zero() {
            return Err(invalid(
                "source.poll_interval".into(),
                "must be greater than zero".into(),
            ));
        }
        if !s.redis_url.starts_with("redis://") && !s.redis_url.starts_with("rediss://") {
            return Err(invalid(
                "source.redis_url".into(),
                format!(
                    "must start with redis:// or rediss://, got {:?}",
                    s.redis_url
                ),
            ));
        }
        if s.base_key().is_empty() {
            return Err(invalid("source.key".into(), "must not be empty".into()));
        }
        if s.kind == SourceKind::Stream {
            if s.delivery == Delivery::AtMostOnce {
                return Err(invalid(
                    "source.delivery".into(),
                    "at-most-once is for list sources; streams are read through a consumer group and acked".into(),
                ));
            }
            if s.group.is_empty() || s.stream_field.is_empty() {
                return Err(invalid(
                    "source.group".into(),
                    "group and stream_field must not be empty".into(),
                ));
            }
            if s.max_deliveries == 0 {
                return Err(invalid(
                    "source.max_deliveries".into(),
                    "must be at least 1".into(),
                ));
            }
        }
        if self.pumps.is_empty() {
            return Err(invalid(
                "pumps".into(),
                "at least one [[pumps]] entry is required".into(),
            ));
        }
        let mut names = HashSet::new();
        for (i, pump) in self.pumps.iter().enumerate() {
            let at = |f: &str| format!("pumps[{i}] ({}).{f}", pump.name);
            if pump.name.is_empty()
                || !pump
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    format!("pumps[{i}].name"),
                    format!(
                        "{:?}: use letters, digits, '-' and '_' only (it labels metrics)",
                        pump.name
                    ),
                ));
            }
            if !names.insert(pump.name.as_str()) {
                return Err(invalid(
                    format!("pumps[{i}].name"),
                    format!("{:?} is used by two pumps", pump.name),
                ));
            }
            if pump.plugin.is_empty() {
                return Err(invalid(at("plugin"), "must name a .wasm file".into()));
            }
            if pump.timeout < Duration::from_millis(10) {
                return Err(invalid(at("timeout"), "must be at least 10ms".into()));
            }
            if pump
                .tick_interval
                .is_some_and(|t| t < Duration::from_millis(100))
            {
                return Err(invalid(
                    at("tick_interval"),
                    "must be at least 100ms".into(),
                ));
            }
            if pump.max_in_flight_batches == 0 {
                return Err(invalid(
                    at("max_in_flight_batches"),
                    "must be at least 1".into(),
                ));
            }
            if pump.retry.initial.is_zero() || pump.retry.max < pump.retry.initial {
                return Err(invalid(at("retry"), "need 0 < initial <= max".into()));
            }
            if pump.retry.max_attempts == Some(0) {
                return Err(invalid(
                    at("retry.max_attempts"),
                    "must be at least 1 (leave it out to retry until delivered)".into(),
                ));
            }
            if pump.buffer == BufferKind::Disk && pump.max_spool_bytes < ByteSize::mib(1) {
                return Err(invalid(
                    at("max_spool_bytes"),
                    "must be at least 1MiB".into(),
                ));
            }
            if pump.max_batch_bytes.is_some_and(|b| b < ByteSize::kib(1)) {
                return Err(invalid(
                    at("max_batch_bytes"),
                    "must be at least 1KiB".into(),
                ));
            }
            if pump.rate_limit.records_per_second == Some(0) {
                return Err(invalid(
                    at("rate_limit.records_per_second"),
                    "must be at least 1 (leave it out for no limit)".into(),
                ));
            }
            if let Some(b) = pump.rate_limit.bytes_per_second {
                if b.as_u64() == 0 || b.as_u64() > u64::from(u32::MAX) {
                    return Err(invalid(
                        at("rate_limit.bytes_per_second"),
                        "must be between 1B and 4GiB".into(),
                    ));
                }
            }
            if pump.sandbox.max_memory < ByteSize::mib(1) {
                return Err(invalid(
                    at("sandbox.max_memory"),
                    "must be at least 1MiB".into(),
                ));
            }
            pump.sandbox
                .check_capabilities()
                .map_err(|(field, message)| invalid(at(&field), message))?;
            for (j, f) in pump.filters_chain.iter().enumerate() {
                if f.plugin.is_empty() {
                    return Err(invalid(
                        at(&format!("filters_chain[{j}].plugin")),
                        "must name a .wasm file".into(),
                    ));
                }
            }
            let mut guests = HashSet::new();
            for (j, d) in pump.sandbox.dirs.iter().enumerate() {
                if !d.guest.starts_with('/') {
                    return Err(invalid(
                        at(&format!("sandbox.dirs[{j}].guest")),
                        format!("{:?} must be an absolute path such as \"/out\"", d.guest),
                    ));
                }
                if !guests.insert(d.guest.as_str()) {
                    return Err(invalid(
                        at(&format!("sandbox.dirs[{j}].guest")),
                        format!("{:?} is mounted twice", d.guest),
                    ));
                }
            }
            match s.format {
                Schema::Iam if pump.filters.tyk_fields_set() => {
                    return Err(invalid(
                        at("filters"),
                        "org_ids/api_ids/response_codes apply to Tyk records; source.format is iam"
                            .into(),
                    ))
                }
                Schema::Tyk if pump.filters.iam_fields_set() => {
                    return Err(invalid(
                        at("filters"),
                        "usernames/skip_usernames apply to iam records; source.format is tyk"
                            .into(),
                    ))
                }
                Schema::Generic if !pump.filters.is_empty() => {
                    return Err(invalid(
                        at("filters"),
                        "host filters need source.format iam or tyk; use a filter plugin for generic records".into(),
                    ))
                }
                Schema::Generic if pump.omit_detailed_recording => {
                    return Err(invalid(
                        at("omit_detailed_recording"),
                        "needs source.format iam or tyk".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

//! `[[pumps]]`: one sink with its filters, buffer, limits and retry policy
//! (its sandbox is in `sandbox.rs`).

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::{FieldError, SandboxConfig, Schema};

/// Batches each lane may hold before the source stops claiming.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// Upper bound of `workers`: each worker holds a full set of instances.
pub const MAX_WORKERS: usize = 16;
/// Per-call time limit for a plugin.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_millis(200);
/// Retry delay cap.
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(30);
/// Disk a pump's spool may fill before `when_full` applies.
pub const DEFAULT_MAX_SPOOL_BYTES: ByteSize = ByteSize::gib(1);

/// `[[pumps]]`, validated: `RawPump` documents each field as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawPump")]
pub struct PumpConfig {
    /// Unique name; used in logs, metrics and dead-letter entries.
    pub name: String,
    /// Sink plugin file name in `plugins_dir` (or a path).
    pub plugin: String,
    /// Host-side record filters, applied before any plugin.
    pub filters: HostFilters,
    /// Drop bulky detail fields before delivery.
    pub omit_detailed_recording: bool,
    /// Records larger than this are dead-lettered for this pump. Unset:
    /// [`PumpConfig::record_size_limit`]'s default.
    pub max_record_size: Option<ByteSize>,
    /// Filter plugins applied in order before the sink.
    pub filters_chain: Vec<FilterPluginConfig>,
    /// Per-call time limit for every plugin of this pump.
    pub timeout: Duration,
    /// Batches this pump may hold before the source stops claiming more.
    pub max_in_flight_batches: usize,
    /// Instances of the pump's plugins writing its batches side by side.
    pub workers: usize,
    /// `buffer`, with the disk-only settings.
    pub buffer: Buffer,
    /// Largest payload sent to the sink in one call.
    pub max_batch_bytes: Option<ByteSize>,
    /// Delivery rate limits (token buckets).
    pub rate_limit: RateLimitConfig,
    /// Retry policy for failed writes.
    pub retry: RetryConfig,
    /// Empty batches after this long without records, for flushing.
    pub tick_interval: Option<Duration>,
    /// What the plugin may touch.
    pub sandbox: SandboxConfig,
    /// Free-form table handed to the sink's `init` as JSON.
    pub config: toml::Table,
}

/// Where a pump keeps batches it has not delivered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buffer {
    /// Claimed in Redis until delivered.
    Memory,
    /// In the pump's durable spool.
    Disk(DiskOptions),
}

/// The settings of a `buffer = "disk"` pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskOptions {
    /// Spool size limit (record bytes).
    pub max_spool_bytes: ByteSize,
    /// What a full spool does.
    pub when_full: WhenFull,
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

/// The `buffer` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BufferKind {
    #[default]
    Memory,
    Disk,
}

/// `[[pumps]]` as written: flat, with the disk-only keys optional so that
/// setting one for a memory pump can be refused by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPump {
    /// Unique name; used in logs, metrics and dead-letter entries. Required.
    name: Option<String>,
    /// Sink plugin file name in `plugins_dir` (or a path). Required.
    plugin: Option<String>,
    /// Host-side record filters, applied before any plugin.
    filters: HostFilters,
    /// Drop bulky detail fields before delivery (iam: `Policies`,
    /// `Deciders`; Tyk: `RawRequest`, `RawResponse`).
    omit_detailed_recording: bool,
    /// Records larger than this (encoded bytes as received) are
    /// dead-lettered for this pump instead of delivered. Unset: an eighth
    /// of `sandbox.max_memory` (16 MiB under the default 128 MiB).
    max_record_size: Option<ByteSize>,
    /// Filter plugins applied in order before the sink.
    filters_chain: Vec<FilterPluginConfig>,
    /// Per-call time limit for every plugin of this pump.
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    /// Batches this pump may hold before the source stops claiming more
    /// (Redis stays the buffer while a pump is slow).
    max_in_flight_batches: usize,
    /// How many sets of this pump's plugin instances (filters and sink,
    /// each with its own connection) work through its batches side by
    /// side: one batch is encoded while another is written. Default 1,
    /// at most 16; `buffer = "memory"` only (a spool has one reader).
    /// Batches may then finish out of claim order, and the sink must
    /// tolerate concurrent instances.
    workers: usize,
    /// `memory` (default): batches stay claimed in Redis until this pump
    /// delivered them. `disk`: batches are written to this pump's spool
    /// (fsynced) and released at once; the pump drains its spool on its
    /// own, so a slow or failing sink does not hold the other pumps back.
    buffer: BufferKind,
    /// `disk` buffer: spool size limit (record bytes); default 1GiB.
    max_spool_bytes: Option<ByteSize>,
    /// `disk` buffer: when the spool is full, `block` (default: stop taking
    /// batches; Redis buffers) or `drop_oldest` (discard the oldest spooled
    /// batches, counted and logged).
    when_full: Option<WhenFull>,
    /// Largest payload sent to the sink in one call; bigger batches are split
    /// before sending. Unset: no limit.
    max_batch_bytes: Option<ByteSize>,
    /// Delivery rate limits (token buckets).
    rate_limit: RateLimitConfig,
    /// Retry policy for failed writes.
    retry: RetryConfig,
    /// When set, the sink also gets an empty batch after this long without
    /// records (and again at this interval while none come), so plugins
    /// that buffer or aggregate can flush on time. Unset: no ticks.
    #[serde(with = "humantime_serde")]
    tick_interval: Option<Duration>,
    /// What the plugin may touch.
    sandbox: SandboxConfig,
    /// Free-form table handed to the sink's `init` as JSON.
    config: toml::Table,
}

impl Default for RawPump {
    fn default() -> Self {
        RawPump {
            name: None,
            plugin: None,
            filters: HostFilters::default(),
            omit_detailed_recording: false,
            max_record_size: None,
            filters_chain: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            max_in_flight_batches: DEFAULT_MAX_IN_FLIGHT,
            workers: 1,
            buffer: BufferKind::Memory,
            max_spool_bytes: None,
            when_full: None,
            max_batch_bytes: None,
            rate_limit: RateLimitConfig::default(),
            retry: RetryConfig::default(),
            tick_interval: None,
            sandbox: SandboxConfig::default(),
            config: toml::Table::new(),
        }
    }
}

impl TryFrom<RawPump> for PumpConfig {
    type Error = String;

    fn try_from(raw: RawPump) -> Result<Self, String> {
        let buffer = match raw.buffer {
            BufferKind::Disk => Buffer::Disk(DiskOptions {
                max_spool_bytes: raw.max_spool_bytes.unwrap_or(DEFAULT_MAX_SPOOL_BYTES),
                when_full: raw.when_full.unwrap_or_default(),
            }),
            BufferKind::Memory => {
                super::only_in(
                    "buffer = \"disk\" pumps",
                    "buffer = \"disk\"",
                    &[
                        ("max_spool_bytes", raw.max_spool_bytes.is_some()),
                        ("when_full", raw.when_full.is_some()),
                    ],
                )?;
                Buffer::Memory
            }
        };
        Ok(PumpConfig {
            name: raw.name.ok_or("missing field `name`")?,
            plugin: raw.plugin.ok_or("missing field `plugin`")?,
            filters: raw.filters,
            omit_detailed_recording: raw.omit_detailed_recording,
            max_record_size: raw.max_record_size,
            filters_chain: raw.filters_chain,
            timeout: raw.timeout,
            max_in_flight_batches: raw.max_in_flight_batches,
            workers: raw.workers,
            buffer,
            max_batch_bytes: raw.max_batch_bytes,
            rate_limit: raw.rate_limit,
            retry: raw.retry,
            tick_interval: raw.tick_interval,
            sandbox: raw.sandbox,
            config: raw.config,
        })
    }
}

/// `[pumps.rate_limit]`: unset limits do not apply.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Records delivered per second (bursts up to one second's worth).
    pub records_per_second: Option<u32>,
    /// Payload bytes delivered per second, e.g. `"5MiB"` (bursts up to one
    /// second's worth).
    pub bytes_per_second: Option<ByteSize>,
}

/// One entry of `filters_chain`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterPluginConfig {
    /// Filter plugin file name in `plugins_dir` (or a path).
    pub plugin: String,
    /// Free-form table handed to the filter's `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
}

/// `[pumps.filters]`: allow and skip lists. An empty allow list allows
/// everything; a record must pass every list that is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostFilters {
    /// iam: keep only these usernames.
    pub usernames: Vec<String>,
    /// iam: drop these usernames.
    pub skip_usernames: Vec<String>,
    /// Tyk: keep only these org ids.
    pub org_ids: Vec<String>,
    /// Tyk: drop these org ids.
    pub skip_org_ids: Vec<String>,
    /// Tyk: keep only these API ids.
    pub api_ids: Vec<String>,
    /// Tyk: drop these API ids.
    pub skip_api_ids: Vec<String>,
    /// Tyk: keep only these response codes.
    pub response_codes: Vec<i64>,
    /// Tyk: drop these response codes.
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
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First delay.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Delay cap; jitter stays inside it.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Failed attempts at the same records before they are dead-lettered
    /// ("gave up after N attempts"). Unset: retry until delivered.
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

impl PumpConfig {
    /// The largest record this pump takes: `max_record_size`, else an
    /// eighth of `sandbox.max_memory`. A plugin holds a record several
    /// times (the call's copy, its parsed form, what it sends), and JSON
    /// can be several times larger than the MessagePack received, so a
    /// record near `max_memory` could never be delivered.
    pub fn record_size_limit(&self) -> ByteSize {
        self.max_record_size
            .unwrap_or(ByteSize::b(self.sandbox.max_memory.as_u64() / 8))
    }

    /// `name` labels metrics, so it is checked before anything that would
    /// print it; the field is `pumps[i].name`.
    pub(super) fn validate_name(&self, i: usize) -> Result<(), FieldError> {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if self.name.is_empty() || !self.name.chars().all(ok) {
            return Err(FieldError::new(
                format!("pumps[{i}].name"),
                format!(
                    "{:?}: use letters, digits, '-' and '_' only (it labels metrics)",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// Range checks and the fit with the source's `format`; fields are
    /// relative to the pump.
    pub(super) fn validate(&self, format: Schema) -> Result<(), FieldError> {
        if self.plugin.is_empty() {
            return Err(FieldError::new("plugin", "must name a .wasm file"));
        }
        self.validate_delivery()?;
        self.sandbox.validate().map_err(|e| e.under("sandbox"))?;
        for (j, f) in self.filters_chain.iter().enumerate() {
            if f.plugin.is_empty() {
                return Err(FieldError::new(
                    format!("filters_chain[{j}].plugin"),
                    "must name a .wasm file",
                ));
            }
        }
        self.validate_filters(format)
    }

    /// Timeouts, buffer, batch size, retry and rate limits.
    fn validate_delivery(&self) -> Result<(), FieldError> {
        if self.timeout < Duration::from_millis(10) {
            return Err(FieldError::new("timeout", "must be at least 10ms"));
        }
        if self
            .tick_interval
            .is_some_and(|t| t < Duration::from_millis(100))
        {
            return Err(FieldError::new("tick_interval", "must be at least 100ms"));
        }
        if self.max_in_flight_batches == 0 {
            return Err(FieldError::new(
                "max_in_flight_batches",
                "must be at least 1",
            ));
        }
        if !(1..=MAX_WORKERS).contains(&self.workers) {
            return Err(FieldError::new(
                "workers",
                format!("must be between 1 and {MAX_WORKERS}"),
            ));
        }
        if self.workers > 1 && matches!(self.buffer, Buffer::Disk(_)) {
            return Err(FieldError::new(
                "workers",
                "more than 1 needs buffer = \"memory\" (a spool has one reader)",
            ));
        }
        self.retry.validate()?;
        if let Buffer::Disk(disk) = &self.buffer {
            if disk.max_spool_bytes < ByteSize::mib(1) {
                return Err(FieldError::new("max_spool_bytes", "must be at least 1MiB"));
            }
        }
        if self.max_batch_bytes.is_some_and(|b| b < ByteSize::kib(1)) {
            return Err(FieldError::new("max_batch_bytes", "must be at least 1KiB"));
        }
        self.rate_limit.validate()
    }

    /// Host filters and `omit_detailed_recording` need the fields of the
    /// source's format.
    fn validate_filters(&self, format: Schema) -> Result<(), FieldError> {
        let f = &self.filters;
        match format {
            Schema::Iam if f.tyk_fields_set() => Err(FieldError::new(
                "filters",
                "org_ids/api_ids/response_codes apply to Tyk records; source.format is iam",
            )),
            Schema::Tyk if f.iam_fields_set() => Err(FieldError::new(
                "filters",
                "usernames/skip_usernames apply to iam records; source.format is tyk",
            )),
            Schema::Generic if !f.is_empty() => Err(FieldError::new(
                "filters",
                "host filters need source.format iam or tyk; use a filter plugin for generic records",
            )),
            Schema::Generic if self.omit_detailed_recording => Err(FieldError::new(
                "omit_detailed_recording",
                "needs source.format iam or tyk",
            )),
            _ => Ok(()),
        }
    }
}

impl RetryConfig {
    /// Fields are relative to the pump (`retry` for the pair).
    fn validate(&self) -> Result<(), FieldError> {
        if self.initial.is_zero() || self.max < self.initial {
            return Err(FieldError::new("retry", "need 0 < initial <= max"));
        }
        if self.max_attempts == Some(0) {
            return Err(FieldError::new(
                "retry.max_attempts",
                "must be at least 1 (leave it out to retry until delivered)",
            ));
        }
        Ok(())
    }
}

impl RateLimitConfig {
    /// Fields are relative to the pump.
    fn validate(&self) -> Result<(), FieldError> {
        if self.records_per_second == Some(0) {
            return Err(FieldError::new(
                "rate_limit.records_per_second",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if let Some(b) = self.bytes_per_second {
            if b.as_u64() == 0 || b.as_u64() > u64::from(u32::MAX) {
                return Err(FieldError::new(
                    "rate_limit.bytes_per_second",
                    "must be between 1B and 4GiB",
                ));
            }
        }
        Ok(())
    }
}

//! Logs (`tracing`, to stderr: stdout belongs to the stdout sink) and
//! Prometheus metrics. Metric names live here so they are defined once.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub mod tap;

/// Records taken from Redis (claimed or popped).
pub const RECORDS_CLAIMED: &str = "pumphouse_records_claimed_total";
/// Records acknowledged in Redis after every pump finished them.
pub const RECORDS_ACKED: &str = "pumphouse_records_acked_total";
/// Records written to the dead-letter list, by `pump` (`source` for
/// records that could not be decoded).
pub const RECORDS_DEAD_LETTERED: &str = "pumphouse_records_dead_lettered_total";
/// Records that could not be decoded.
pub const RECORDS_UNDECODABLE: &str = "pumphouse_records_undecodable_total";
/// Records a pump's sink accepted.
pub const PUMP_RECORDS_WRITTEN: &str = "pumphouse_pump_records_written_total";
/// Records a pump's host filters or filter plugins dropped.
pub const PUMP_RECORDS_FILTERED: &str = "pumphouse_pump_records_filtered_total";
/// Failed plugin calls, by `pump` and `kind`.
pub const PUMP_ERRORS: &str = "pumphouse_pump_errors_total";
/// Seconds from a batch reaching a pump to its delivery.
pub const PUMP_BATCH_SECONDS: &str = "pumphouse_pump_batch_seconds";
/// Batches waiting in or being processed by a pump's lane.
pub const PUMP_LANE_DEPTH: &str = "pumphouse_pump_lane_depth";
/// Records waiting in the source lists, by `key`.
pub const SOURCE_BACKLOG: &str = "pumphouse_source_backlog";
/// Batches whose lease expired and were taken over by this instance.
pub const BATCHES_RECLAIMED: &str = "pumphouse_batches_reclaimed_total";
/// Redis commands that failed, by `op`.
pub const REDIS_ERRORS: &str = "pumphouse_redis_errors_total";
/// Times a connection behind Sentinel moved to a new primary.
pub const REDIS_PRIMARY_CHANGES: &str = "pumphouse_redis_primary_changes_total";
/// Cluster transactions sent again because their slot moved, by `kind`
/// (`moved`, `ask`, `tryagain`).
pub const REDIS_REDIRECTS: &str = "pumphouse_redis_redirects_total";
/// Milliseconds a pump waited for its rate limit.
pub const PUMP_THROTTLED_MS: &str = "pumphouse_pump_throttled_milliseconds_total";
/// Records a pump gave up on after `retry.max_attempts` (dead-lettered).
pub const PUMP_RECORDS_GAVE_UP: &str = "pumphouse_pump_records_gave_up_total";
/// Filter-made records left out of a batch's dead letters: a lane stores
/// at most as many dead letters per batch as the batch holds records.
pub const PUMP_DEAD_LETTERS_CAPPED: &str = "pumphouse_pump_dead_letters_capped_total";
/// Records and bytes waiting in a disk-buffered pump's spool.
pub const SPOOL_RECORDS: &str = "pumphouse_spool_records";
pub const SPOOL_BYTES: &str = "pumphouse_spool_bytes";
/// Records discarded by `when_full = "drop_oldest"`.
pub const SPOOL_DROPPED_RECORDS: &str = "pumphouse_spool_dropped_records_total";
/// Spool entries that failed their checksum or could not be read, skipped.
pub const SPOOL_CORRUPT: &str = "pumphouse_spool_corrupt_total";
/// Records in the damaged spool entries that were skipped.
pub const SPOOL_RECORDS_LOST: &str = "pumphouse_spool_records_lost_total";
/// Config reloads, by `result` (`ok` or `error`).
pub const RELOADS: &str = "pumphouse_reloads_total";
/// Stream entries dead-lettered after `max_deliveries`.
pub const STREAM_POISON: &str = "pumphouse_stream_poison_total";
/// Capability uses a plugin's sandbox refused, by `pump` and `capability`
/// (`http`, `socket`).
pub const SANDBOX_DENIALS: &str = "pumphouse_sandbox_denials_total";
pub const PLUGIN_KV_ERRORS: &str = "pumphouse_kv_errors_total";
/// Plugin log lines dropped by the pump's log rate limit, by `pump`.
pub const PLUGIN_LOG_SUPPRESSED: &str = "pumphouse_sandbox_log_suppressed_total";
/// 1 while Redis answers the source's commands, 0 while it does not: alert
/// rules need a level, not only `pumphouse_redis_errors_total`'s rate.
/// Rendered from the live status ([`crate::status::Status::render_metrics`]).
pub const REDIS_UP: &str = "pumphouse_redis_up";
/// 1 while a pump is delivering (`ok` on `/readyz`), 0 while it retries or
/// is fatal, by `pump`. Rendered from the live status, like `REDIS_UP`.
pub const PUMP_UP: &str = "pumphouse_pump_up";
/// A disk pump's `max_spool_bytes`, by `pump`, so "spool nearly full" is
/// one division in PromQL.
pub const SPOOL_MAX_BYTES: &str = "pumphouse_spool_max_bytes";

/// Exports a pump's record counters at 0 from its start. A counter that
/// first appears already at N hides its first N from PromQL's `increase`
/// and `rate`, so an alert on the first dead letters would never fire.
pub fn register_pump(pump: &str) {
    for name in [
        PUMP_RECORDS_WRITTEN,
        PUMP_RECORDS_FILTERED,
        RECORDS_DEAD_LETTERED,
        PUMP_RECORDS_GAVE_UP,
    ] {
        metrics::counter!(name, "pump" => pump.to_string()).increment(0);
    }
}

/// Installs the global tracing subscriber. `PUMPHOUSE_LOG` (or `RUST_LOG`)
/// sets the filter, e.g. `info,pumphouse=debug`.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PUMPHOUSE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal: in a file, a pipe
        // or journald they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (e.g. the demo, then run) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Every metric a plugin emits is named with this prefix. No host series
/// starts with it, so a plugin cannot add to one of the host's own.
pub const PLUGIN_METRIC_PREFIX: &str = "pumphouse_plugin_";

/// Buckets of plugin histograms: latencies in milliseconds are what
/// analytics plugins observe (the WIT's `histogram-observe` lists them).
pub const PLUGIN_HISTOGRAM_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// Installs the Prometheus recorder and returns the handle `/metrics`
/// renders. Returns `None` when a recorder is already installed.
pub fn init_metrics() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(PUMP_BATCH_SECONDS.to_string()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )
        .ok()?
        .set_buckets_for_metric(
            Matcher::Prefix(PLUGIN_METRIC_PREFIX.to_string()),
            PLUGIN_HISTOGRAM_BUCKETS,
        )
        .ok()?
        .build_recorder();
    let handle = recorder.handle();
    // The status page reads a few series back through the tap.
    metrics::set_global_recorder(tap::Tap::new(recorder)).ok()?;
    describe();
    Some(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RECORDS_CLAIMED, "Records taken from Redis");
    describe_counter!(
        RECORDS_ACKED,
        "Records acknowledged in Redis after every pump finished them"
    );
    describe_counter!(
        RECORDS_DEAD_LETTERED,
        "Records written to the dead-letter list"
    );
    describe_counter!(RECORDS_UNDECODABLE, "Records that could not be decoded");
    describe_counter!(PUMP_RECORDS_WRITTEN, "Records a pump's sink accepted");
    describe_counter!(PUMP_RECORDS_FILTERED, "Records a pump's filters dropped");
    describe_counter!(PUMP_ERRORS, "Failed plugin calls by kind");
    describe_counter!(
        PUMP_DEAD_LETTERS_CAPPED,
        "Filter-made records left out of a batch's dead letters (at most one per record claimed)"
    );
    describe_histogram!(
        PUMP_BATCH_SECONDS,
        Unit::Seconds,
        "Time from a batch reaching a pump to its delivery"
    );
    describe_gauge!(
        PUMP_LANE_DEPTH,
        "Batches queued in or processed by a pump's lane"
    );
    describe_gauge!(SOURCE_BACKLOG, "Records waiting in the source lists");
    describe_counter!(
        BATCHES_RECLAIMED,
        "Batches taken over after their lease expired"
    );
    describe_counter!(REDIS_ERRORS, "Redis commands that failed");
    describe_counter!(
        REDIS_PRIMARY_CHANGES,
        "Times a connection behind Sentinel moved to the primary the sentinels name"
    );
    describe_counter!(
        REDIS_REDIRECTS,
        "Cluster transactions sent again because their slot moved (MOVED) or was migrating (ASK, TRYAGAIN), by kind"
    );
    describe_counter!(
        SANDBOX_DENIALS,
        "Capability uses a plugin's sandbox refused, by capability"
    );
    describe_counter!(
        PLUGIN_KV_ERRORS,
        "Plugin key-value calls that failed, by operation"
    );
    describe_counter!(
        PLUGIN_LOG_SUPPRESSED,
        "Plugin log lines dropped by the pump's log rate limit"
    );
    describe_gauge!(
        SPOOL_MAX_BYTES,
        Unit::Bytes,
        "A disk-buffered pump's max_spool_bytes"
    );
}

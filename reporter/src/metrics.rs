//! Metric names and handles. Every series carries a `key` label (the list
//! or stream written to), so several reporters in one process stay apart.
//! They go through the `metrics` facade: the application installs the
//! recorder (Prometheus or other) and exports them its own way.

use metrics::{Counter, Gauge, Histogram};

/// Records `record()`/`record_wait()` accepted into the buffer. Published
/// by the workers, so it trails by at most a flush interval.
pub const RECORDS_ACCEPTED: &str = "pumphouse_reporter_records_accepted_total";
/// Records Redis confirmed (the pipeline holding them succeeded).
pub const RECORDS_SENT: &str = "pumphouse_reporter_records_sent_total";
/// Records refused and never accepted, by `reason`: `full` (buffer full,
/// `WhenFull::Drop`) or `closed` (after shutdown).
pub const RECORDS_DROPPED: &str = "pumphouse_reporter_records_dropped_total";
/// Records accepted and then not sent, by `reason`: `unreachable` (Redis
/// stayed down past `give_up_after`) or `unencodable` (the format failed).
pub const RECORDS_LOST: &str = "pumphouse_reporter_records_lost_total";
/// Pipelines sent successfully.
pub const BATCHES: &str = "pumphouse_reporter_batches_total";
/// Failed attempts to connect or to send a pipeline (each is retried).
pub const SEND_ERRORS: &str = "pumphouse_reporter_send_errors_total";
/// Redis Cluster redirects followed, by `kind`: `moved` (the key's slot
/// moved) or `ask` (it was migrating).
pub const REDIRECTS: &str = "pumphouse_reporter_redirects_total";
/// Seconds from sending a pipeline to its reply (successful sends).
pub const SEND_SECONDS: &str = "pumphouse_reporter_send_seconds";
/// Records held: queued, batched or being sent.
pub const BUFFERED: &str = "pumphouse_reporter_buffered_records";

/// Handles taken once at build time, so the hot paths do no lookups.
pub(crate) struct Metrics {
    pub accepted: Counter,
    pub sent: Counter,
    pub dropped_full: Counter,
    pub dropped_closed: Counter,
    pub lost_unreachable: Counter,
    pub lost_unencodable: Counter,
    pub batches: Counter,
    pub send_errors: Counter,
    pub moved: Counter,
    pub asked: Counter,
    pub send_seconds: Histogram,
    pub buffered: Gauge,
}

impl Metrics {
    pub fn new(key: &str) -> Self {
        describe();
        let k = key.to_string();
        Metrics {
            accepted: metrics::counter!(RECORDS_ACCEPTED, "key" => k.clone()),
            sent: metrics::counter!(RECORDS_SENT, "key" => k.clone()),
            dropped_full: metrics::counter!(RECORDS_DROPPED, "key" => k.clone(), "reason" => "full"),
            dropped_closed: metrics::counter!(RECORDS_DROPPED, "key" => k.clone(), "reason" => "closed"),
            lost_unreachable: metrics::counter!(RECORDS_LOST, "key" => k.clone(), "reason" => "unreachable"),
            lost_unencodable: metrics::counter!(RECORDS_LOST, "key" => k.clone(), "reason" => "unencodable"),
            batches: metrics::counter!(BATCHES, "key" => k.clone()),
            send_errors: metrics::counter!(SEND_ERRORS, "key" => k.clone()),
            moved: metrics::counter!(REDIRECTS, "key" => k.clone(), "kind" => "moved"),
            asked: metrics::counter!(REDIRECTS, "key" => k.clone(), "kind" => "ask"),
            send_seconds: metrics::histogram!(SEND_SECONDS, "key" => k.clone()),
            buffered: metrics::gauge!(BUFFERED, "key" => k),
        }
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        RECORDS_ACCEPTED,
        "Analytics records accepted into the buffer"
    );
    describe_counter!(RECORDS_SENT, "Analytics records written to Redis");
    describe_counter!(
        RECORDS_DROPPED,
        "Analytics records refused (never accepted)"
    );
    describe_counter!(
        RECORDS_LOST,
        "Analytics records accepted and then not written"
    );
    describe_counter!(BATCHES, "Analytics pipelines written to Redis");
    describe_counter!(
        SEND_ERRORS,
        "Failed attempts to write an analytics pipeline"
    );
    describe_counter!(REDIRECTS, "Redis Cluster redirects followed (MOVED, ASK)");
    describe_histogram!(
        SEND_SECONDS,
        Unit::Seconds,
        "Time to write one analytics pipeline"
    );
    describe_gauge!(BUFFERED, "Analytics records held in memory");
}

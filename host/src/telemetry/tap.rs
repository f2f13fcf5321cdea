//! A readable copy of the few metrics the status page shows. The code that
//! counts records records once, through `metrics`; this recorder passes
//! every call on to the Prometheus recorder and keeps its own value of the
//! series named in [`TAPPED`], so `/metrics` and `/api/status` can never
//! disagree and no call site has to report twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};

use super::{
    BATCHES_RECLAIMED, PUMP_ERRORS, PUMP_LANE_DEPTH, PUMP_RECORDS_WRITTEN, RECORDS_CLAIMED,
    RECORDS_DEAD_LETTERED, SOURCE_BACKLOG, SPOOL_BYTES, SPOOL_RECORDS,
};

/// The series the status page reads.
const TAPPED: &[&str] = &[
    RECORDS_CLAIMED,
    BATCHES_RECLAIMED,
    SOURCE_BACKLOG,
    PUMP_RECORDS_WRITTEN,
    PUMP_ERRORS,
    RECORDS_DEAD_LETTERED,
    PUMP_LANE_DEPTH,
    SPOOL_RECORDS,
    SPOOL_BYTES,
];

/// One series: its labels and its value now.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// Counters hold a `u64`, gauges the bits of an `f64` (how `metrics`
/// stores both in an `AtomicU64`).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Default)]
struct Store {
    series: Mutex<HashMap<Key, (Kind, Arc<AtomicU64>)>>,
}

impl Store {
    fn cell(&self, key: &Key, kind: Kind) -> Arc<AtomicU64> {
        let mut all = self.series.lock().expect("tap lock");
        let (_, cell) = all
            .entry(key.clone())
            .or_insert_with(|| (kind, Arc::new(AtomicU64::new(0))));
        cell.clone()
    }
}

/// One process, one metrics recorder: the copy is process-wide too.
static STORE: LazyLock<Store> = LazyLock::new(Store::default);

/// The series of metric `name` (one of [`TAPPED`]), in no order. Empty
/// when no tapped recorder is installed.
pub fn series(name: &str) -> Vec<Series> {
    let all = STORE.series.lock().expect("tap lock");
    all.iter()
        .filter(|(key, _)| key.name() == name)
        .map(|(key, (kind, cell))| {
            let raw = cell.load(Ordering::Relaxed);
            Series {
                labels: key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect(),
                value: match kind {
                    Kind::Counter => raw as f64,
                    Kind::Gauge => f64::from_bits(raw),
                },
            }
        })
        .collect()
}

/// The sum of every series of `name`.
pub fn total(name: &str) -> f64 {
    series(name).iter().map(|s| s.value).sum()
}

/// The sum of the series of `name` whose label `label` is `value`.
pub fn total_where(name: &str, label: &str, value: &str) -> f64 {
    series(name)
        .iter()
        .filter(|s| s.label(label) == Some(value))
        .map(|s| s.value)
        .sum()
}

/// Wraps a recorder, keeping a copy of the tapped series.
pub struct Tap<R> {
    inner: R,
}

impl<R> Tap<R> {
    pub fn new(inner: R) -> Self {
        Tap { inner }
    }
}

struct TeeCounter {
    inner: Counter,
    copy: Arc<AtomicU64>,
}

impl CounterFn for TeeCounter {
    fn increment(&self, value: u64) {
        self.inner.increment(value);
        CounterFn::increment(&*self.copy, value);
    }

    fn absolute(&self, value: u64) {
        self.inner.absolute(value);
        CounterFn::absolute(&*self.copy, value);
    }
}

struct TeeGauge {
    inner: Gauge,
    copy: Arc<AtomicU64>,
}

impl GaugeFn for TeeGauge {
    fn increment(&self, value: f64) {
        self.inner.increment(value);
        GaugeFn::increment(&*self.copy, value);
    }

    fn decrement(&self, value: f64) {
        self.inner.decrement(value);
        GaugeFn::decrement(&*self.copy, value);
    }

    fn set(&self, value: f64) {
        self.inner.set(value);
        GaugeFn::set(&*self.copy, value);
    }
}

impl<R: Recorder> Recorder for Tap<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description)
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        let inner = self.inner.register_counter(key, metadata);
        if !TAPPED.contains(&key.name()) {
            return inner;
        }
        let copy = STORE.cell(key, Kind::Counter);
        Counter::from_arc(Arc::new(TeeCounter { inner, copy }))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        let inner = self.inner.register_gauge(key, metadata);
        if !TAPPED.contains(&key.name()) {
            return inner;
        }
        let copy = STORE.cell(key, Kind::Gauge);
        Gauge::from_arc(Arc::new(TeeGauge { inner, copy }))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.inner.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tapped_series_are_copied_and_others_pass_through() {
        let tap = Tap::new(metrics::NoopRecorder);
        metrics::with_local_recorder(&tap, || {
            // A name of its own: the store is process-wide.
            metrics::counter!(RECORDS_CLAIMED, "test" => "tap").increment(3);
            metrics::counter!(RECORDS_CLAIMED, "test" => "tap").increment(4);
            metrics::gauge!(SPOOL_BYTES, "pump" => "tap-test").set(2.5);
            metrics::gauge!(SPOOL_BYTES, "pump" => "tap-test").increment(1.0);
            metrics::counter!("pumphouse_not_tapped_total", "test" => "tap").increment(1);
        });
        assert_eq!(total_where(RECORDS_CLAIMED, "test", "tap"), 7.0);
        assert_eq!(total_where(SPOOL_BYTES, "pump", "tap-test"), 3.5);
        assert!(series("pumphouse_not_tapped_total").is_empty());
    }
}

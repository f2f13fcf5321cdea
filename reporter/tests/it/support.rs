//! Helpers shared by the tests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pumphouse_reporter::{IamRecord, TykRecord};
use pumphouse_wire::{encode_iam, encode_tyk, Sampler};
use redis::aio::MultiplexedConnection;

pub use pumphouse::demo::RedisServer;

/// The sample time of generated records.
pub const T0: i64 = 1_763_700_000;

pub fn iam_records(n: u64) -> (Vec<IamRecord>, Vec<Vec<u8>>) {
    let mut s = Sampler::new(11);
    let records: Vec<_> = (0..n).map(|i| s.iam(i, T0)).collect();
    let bytes = records.iter().map(encode_iam).collect();
    (records, bytes)
}

pub fn tyk_records(n: u64) -> (Vec<TykRecord>, Vec<Vec<u8>>) {
    let mut s = Sampler::new(12);
    let records: Vec<_> = (0..n).map(|i| s.tyk(i, T0)).collect();
    let bytes = records.iter().map(encode_tyk).collect();
    (records, bytes)
}

pub async fn conn(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Every element of the list at `key`.
pub async fn list(redis: &RedisServer, key: &str) -> Vec<Vec<u8>> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn(redis).await)
        .await
        .unwrap()
}

pub async fn llen(redis: &RedisServer, key: &str) -> u64 {
    redis::cmd("LLEN")
        .arg(key)
        .query_async(&mut conn(redis).await)
        .await
        .unwrap()
}

/// How often each expected record occurs in `got`; panics on a record
/// that was never expected.
pub fn occurrences(got: &[Vec<u8>], expected: &[Vec<u8>]) -> Vec<u32> {
    let index: HashMap<&[u8], usize> = expected
        .iter()
        .enumerate()
        .map(|(i, b)| (b.as_slice(), i))
        .collect();
    assert_eq!(index.len(), expected.len(), "expected records are distinct");
    let mut seen = vec![0u32; expected.len()];
    for (at, b) in got.iter().enumerate() {
        let i = index
            .get(b.as_slice())
            .unwrap_or_else(|| panic!("element {at} is no record that was recorded"));
        seen[*i] += 1;
    }
    seen
}

/// Asserts that `got` holds each expected record exactly once.
pub fn assert_exactly_once(got: &[Vec<u8>], expected: &[Vec<u8>]) {
    let seen = occurrences(got, expected);
    for (i, n) in seen.iter().enumerate() {
        assert_eq!(*n, 1, "record {i} arrived {n} times");
    }
    assert_eq!(got.len(), expected.len());
}

/// Polls `f` until it is true; panics with `what` after `within` (a
/// generous bound for a hung test, not a timing requirement).
pub async fn wait_until<Fut: Future<Output = bool>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> Fut,
) {
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `metrics` recorder keeping counter values and histogram sample
/// counts by name and labels (`name{k=v,…}` in label order).
#[derive(Default, Clone)]
pub struct TestRecorder {
    values: Arc<Mutex<HashMap<String, Arc<Value>>>>,
}

#[derive(Default)]
pub struct Value(AtomicU64);

impl metrics::CounterFn for Value {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, Relaxed);
    }
    fn absolute(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

impl metrics::GaugeFn for Value {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, v: f64) {
        self.0.store(v as u64, Relaxed);
    }
}

impl metrics::HistogramFn for Value {
    fn record(&self, _: f64) {
        self.0.fetch_add(1, Relaxed);
    }
}

impl TestRecorder {
    fn value(&self, key: &metrics::Key) -> Arc<Value> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.values.lock().unwrap().entry(name).or_default())
    }

    /// The value of `name{labels}`, 0 when never registered.
    pub fn get(&self, name_with_labels: &str) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(name_with_labels)
            .map_or(0, |v| v.0.load(Relaxed))
    }
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.value(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.value(key))
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.value(key))
    }
}

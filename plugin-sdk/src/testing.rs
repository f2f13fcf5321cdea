//! Helpers for unit-testing plugins natively (`cargo test`).
//!
//! Build batches the way the host would, encode records the way the
//! producers do, and read what the plugin logged and counted. Log lines and
//! metrics are captured per thread only when the SDK is compiled natively;
//! on `wasm32` they go to the host and the readers here return nothing.
//!
//! Batches built here give record `i` the id `i` and the timestamp 0.
//!
//! ```
//! use pumphouse_sdk::testing;
//! use pumphouse_sdk::{IamRecord, Schema};
//!
//! let rec = IamRecord { username: "alice".into(), ..Default::default() };
//! let batch = testing::iam_batch(&[rec]);
//! assert_eq!(batch.schema, Schema::Iam);
//! assert_eq!(batch.get(0).unwrap().field("Username").as_deref(), Some("alice"));
//!
//! pumphouse_sdk::info!("saw {} records", batch.len());
//! assert_eq!(testing::logs()[0].1, "saw 1 records");
//! ```

use serde::Serialize;

use crate::{capture, Batch, Config, Encoding, IamRecord, Level, Schema, TykRecord};

/// A plugin's config: the JSON object `base` with the keys of the object
/// `extra` added or replacing its own, for tests that vary a few options
/// of a working config.
///
/// # Panics
///
/// If either is not a JSON object.
pub fn config(base: serde_json::Value, extra: serde_json::Value) -> Config {
    let mut base = base;
    let (Some(map), serde_json::Value::Object(extra)) = (base.as_object_mut(), extra) else {
        panic!("testing::config takes two JSON objects");
    };
    map.extend(extra);
    Config::from(base)
}

/// A batch of the given payloads, as they are.
///
/// # Panics
///
/// If the payloads add up to 4 GiB or more.
pub fn batch(encoding: Encoding, schema: Schema, payloads: Vec<Vec<u8>>) -> Batch {
    let mut batch = Batch::new(encoding, schema);
    for (i, payload) in payloads.iter().enumerate() {
        batch
            .push(i as u64, 0, payload)
            .expect("test batch under 4 GiB");
    }
    batch
}

/// A JSON batch of schema `generic` holding these values.
pub fn json_batch(records: &[serde_json::Value]) -> Batch {
    json_batch_of(Schema::Generic, records)
}

/// A JSON batch of any serializable records, encoded like the host's JSON
/// encoding (times of the typed records as RFC 3339 strings).
pub fn json_batch_of<T: Serialize>(schema: Schema, records: &[T]) -> Batch {
    batch(
        Encoding::Json,
        schema,
        records.iter().map(|r| to_json(r)).collect(),
    )
}

/// A MessagePack batch of any serializable records, encoded with
/// [`to_msgpack`].
pub fn msgpack_batch<T: Serialize>(schema: Schema, records: &[T]) -> Batch {
    batch(
        Encoding::Msgpack,
        schema,
        records.iter().map(|r| to_msgpack(r)).collect(),
    )
}

/// A MessagePack batch of schema `iam`, encoded like iam-authz-server.
pub fn iam_batch(records: &[IamRecord]) -> Batch {
    msgpack_batch(Schema::Iam, records)
}

/// A MessagePack batch of schema `tyk`, encoded like Tyk Gateway.
pub fn tyk_batch(records: &[TykRecord]) -> Batch {
    msgpack_batch(Schema::Tyk, records)
}

/// Encodes a value as MessagePack the way the producers do: structs as
/// maps keyed by field name, integers in their smallest encoding, and the
/// typed records' times in each producer's form.
///
/// # Panics
///
/// If `T`'s `Serialize` fails.
pub fn to_msgpack<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("value encodes as MessagePack")
}

/// Encodes an `rmpv::Value` exactly as given: unlike [`to_msgpack`], which
/// goes through serde, this keeps extension types (timestamps) and the
/// value's own integer widths, for tests of decoding edge cases.
pub fn msgpack_value(value: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("writing to a Vec cannot fail");
    out
}

/// Encodes a value as compact JSON.
///
/// # Panics
///
/// If `T`'s `Serialize` fails.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("value encodes as JSON")
}

/// The lines logged so far on this thread, oldest first.
pub fn logs() -> Vec<(Level, String)> {
    capture::with(|c| c.logs.clone())
}

/// The counter `name` with exactly these labels (in any order); 0 if
/// never added to.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let key = capture::key(name, owned(labels));
    capture::with(|c| c.counters.get(&key).copied().unwrap_or(0))
}

/// The counter `name` summed over all its label sets.
pub fn counter_total(name: &str) -> u64 {
    capture::with(|c| {
        c.counters
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| *v)
            .fold(0, u64::saturating_add)
    })
}

/// The last value of the gauge `name` with exactly these labels.
pub fn gauge(name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let key = capture::key(name, owned(labels));
    capture::with(|c| c.gauges.get(&key).copied())
}

/// Every observation of the histogram `name` with exactly these labels,
/// in order.
pub fn histogram(name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let key = capture::key(name, owned(labels));
    capture::with(|c| c.histograms.get(&key).cloned().unwrap_or_default())
}

/// The value of `key` in this thread's [`kv`](crate::kv) store.
pub fn kv_value(key: &str) -> Option<Vec<u8>> {
    capture::with(|c| c.kv.get(key).cloned())
}

/// Makes every [`kv`](crate::kv) call on this thread fail with `error`
/// (`None` heals it), to test how a plugin rides out a Redis outage.
pub fn fail_kv(error: Option<&str>) {
    capture::with(|c| c.kv_failure = error.map(str::to_owned));
}

/// Forgets the captured logs, metrics and kv state and the
/// [`mock_http`] responder of this thread.
pub fn reset() {
    capture::with(|c| *c = Default::default());
    #[cfg(not(target_arch = "wasm32"))]
    crate::http::set_mock(None);
}

/// Answers this thread's [`http`](crate::http) requests with `responder`
/// instead of the network (native builds only; on `wasm32` requests always
/// go through the host and this does nothing). A responder may return an
/// [`HttpError`](crate::http::HttpError) to simulate a timeout or a denial.
///
/// ```
/// use pumphouse_sdk::http::{HttpError, HttpErrorKind, Request, Response};
/// use pumphouse_sdk::testing;
///
/// testing::mock_http(|req| match req.url() {
///     "http://ingest.test/ok" => Ok(Response::new(200).with_body("done")),
///     _ => Err(HttpError::new(HttpErrorKind::Denied, req, "")),
/// });
/// assert_eq!(Request::get("http://ingest.test/ok").send().unwrap().body(), b"done");
/// assert_eq!(
///     Request::get("http://elsewhere.test/").send().unwrap_err().kind(),
///     HttpErrorKind::Denied
/// );
/// ```
pub fn mock_http(
    responder: impl FnMut(&crate::http::Request) -> Result<crate::http::Response, crate::http::HttpError>
        + 'static,
) {
    #[cfg(not(target_arch = "wasm32"))]
    crate::http::set_mock(Some(Box::new(responder)));
    #[cfg(target_arch = "wasm32")]
    drop(responder);
}

fn owned<'a>(labels: &'a [(&str, &str)]) -> impl Iterator<Item = (String, String)> + 'a {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;

    #[test]
    fn captures_logs_and_metrics() {
        reset();
        crate::log::warn("careful");
        crate::error!("bad {}", 1);
        crate::trace!("t");
        assert_eq!(
            logs(),
            vec![
                (Level::Warn, "careful".to_owned()),
                (Level::Error, "bad 1".to_owned()),
                (Level::Trace, "t".to_owned()),
            ]
        );
        metrics::counter_add("sent", 2, &[("to", "a"), ("kind", "x")]);
        metrics::counter_add("sent", 3, &[("kind", "x"), ("to", "a")]);
        metrics::counter_add("sent", 1, &[]);
        assert_eq!(counter("sent", &[("to", "a"), ("kind", "x")]), 5);
        assert_eq!(counter("sent", &[]), 1);
        assert_eq!(counter_total("sent"), 6);
        assert_eq!(counter("other", &[]), 0);
        metrics::gauge_set("depth", 1.0, &[]);
        metrics::gauge_set("depth", 2.5, &[]);
        assert_eq!(gauge("depth", &[]), Some(2.5));
        assert_eq!(gauge("depth", &[("a", "b")]), None);
        reset();
        assert!(logs().is_empty());
        assert_eq!(counter_total("sent"), 0);
    }
}

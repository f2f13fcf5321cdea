//! Counters, gauges and histograms, exported by the host on its `/metrics` endpoint.
//!
//! Names are `[a-z0-9_]+`; the host ignores others with a warning. Labels
//! are `(key, value)` pairs; the host adds `pump="<pump name>"` itself.
//!
//! On `wasm32` every call is one host import call. Compiled natively (unit
//! tests) the values are captured in-process instead; read them with
//! [`testing::counter`](crate::testing::counter),
//! [`testing::gauge`](crate::testing::gauge) and
//! [`testing::histogram`](crate::testing::histogram).
//!
//! The host caps each pump at 10,000 distinct series (name and label
//! values); past that, new series are dropped with a warning. Label by
//! fields with few values, or cap them yourself.

use crate::Label;

/// Adds `value` to the counter `name` (exported as
/// `pumphouse_plugin_<name>_total`).
pub fn counter_add(name: &str, value: u64, labels: &[(&str, &str)]) {
    emit_counter(name, value, &to_labels(labels));
}

/// Sets the gauge `name` (exported as `pumphouse_plugin_<name>`).
pub fn gauge_set(name: &str, value: f64, labels: &[(&str, &str)]) {
    emit_gauge(name, value, &to_labels(labels));
}

/// Records `values` in the histogram `name` (exported as
/// `pumphouse_plugin_<name>` with `_bucket`, `_sum` and `_count`; the
/// buckets suit milliseconds, from 1 to 60000). Pass a whole batch's
/// observations in one call: each call crosses into the host.
pub fn histogram_observe(name: &str, values: &[f64], labels: &[(&str, &str)]) {
    emit_histogram(name, values, &to_labels(labels));
}

fn to_labels(labels: &[(&str, &str)]) -> Vec<Label> {
    labels
        .iter()
        .map(|(key, value)| Label {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
fn emit_counter(name: &str, value: u64, labels: &[Label]) {
    crate::__bindings::pumphouse::plugin::host::counter_add(name, value, labels);
}

#[cfg(target_arch = "wasm32")]
fn emit_gauge(name: &str, value: f64, labels: &[Label]) {
    crate::__bindings::pumphouse::plugin::host::gauge_set(name, value, labels);
}

#[cfg(target_arch = "wasm32")]
fn emit_histogram(name: &str, values: &[f64], labels: &[Label]) {
    crate::__bindings::pumphouse::plugin::host::histogram_observe(name, values, labels);
}

#[cfg(not(target_arch = "wasm32"))]
fn emit_histogram(name: &str, values: &[f64], labels: &[Label]) {
    crate::capture::histogram_observe(name, values, labels);
}

#[cfg(not(target_arch = "wasm32"))]
fn emit_counter(name: &str, value: u64, labels: &[Label]) {
    crate::capture::counter_add(name, value, labels);
}

#[cfg(not(target_arch = "wasm32"))]
fn emit_gauge(name: &str, value: f64, labels: &[Label]) {
    crate::capture::gauge_set(name, value, labels);
}

//! The in-process stand-in for the host's log and metric imports, used when
//! the SDK is compiled natively (plugin unit tests). Per thread, so tests
//! running in parallel do not see each other's lines.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::{Label, Level};

type Labels = Vec<(String, String)>;

#[derive(Default)]
pub(crate) struct Captured {
    pub(crate) logs: Vec<(Level, String)>,
    pub(crate) counters: BTreeMap<(String, Labels), u64>,
    pub(crate) gauges: BTreeMap<(String, Labels), f64>,
    pub(crate) histograms: BTreeMap<(String, Labels), Vec<f64>>,
    pub(crate) kv: BTreeMap<String, Vec<u8>>,
    /// Set by `testing::fail_kv`: every kv call fails with this.
    pub(crate) kv_failure: Option<String>,
}

thread_local! {
    static CAPTURED: RefCell<Captured> = RefCell::new(Captured::default());
}

pub(crate) fn with<R>(f: impl FnOnce(&mut Captured) -> R) -> R {
    CAPTURED.with(|c| f(&mut c.borrow_mut()))
}

pub(crate) fn key(
    name: &str,
    labels: impl IntoIterator<Item = (String, String)>,
) -> (String, Labels) {
    let mut labels: Labels = labels.into_iter().collect();
    labels.sort();
    (name.to_owned(), labels)
}

fn owned(labels: &[Label]) -> impl Iterator<Item = (String, String)> + '_ {
    labels.iter().map(|l| (l.key.clone(), l.value.clone()))
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn log(level: Level, message: &str) {
    with(|c| c.logs.push((level, message.to_owned())));
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn counter_add(name: &str, value: u64, labels: &[Label]) {
    with(|c| {
        let total = c.counters.entry(key(name, owned(labels))).or_default();
        *total = total.saturating_add(value);
    });
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn gauge_set(name: &str, value: f64, labels: &[Label]) {
    with(|c| {
        c.gauges.insert(key(name, owned(labels)), value);
    });
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn histogram_observe(name: &str, values: &[f64], labels: &[Label]) {
    with(|c| {
        c.histograms
            .entry(key(name, owned(labels)))
            .or_default()
            .extend_from_slice(values);
    });
}

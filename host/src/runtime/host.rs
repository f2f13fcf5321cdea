//! The `host` interface plugins import: logging and metrics, attributed to
//! the pump the instance serves. Log lines are cut to a maximum size and
//! rate limited per pump (see `loglimit`), so a runaway plugin cannot flood
//! the host's log.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::bindings::sink::pumphouse::plugin::{host, types};
use super::bindings::{Label, Level};
use super::text::PluginText;
use super::PluginState;
use crate::telemetry;

/// Most labels a plugin metric may carry.
const MAX_LABELS: usize = 8;
/// Longest label value kept; the rest is cut.
const MAX_LABEL_VALUE: usize = 128;
/// Most distinct series (name and label values) one pump may create: the
/// exporter keeps every series for the life of the process, so a plugin
/// labelling by an unbounded field would otherwise grow the host's memory
/// and `/metrics` without limit.
pub const MAX_SERIES_PER_PUMP: usize = 10_000;
/// Most observations one `histogram-observe` call may carry: one per
/// record of the largest batch. The rest are dropped and counted.
pub const MAX_OBSERVATIONS_PER_CALL: usize = crate::config::MAX_BATCH_SIZE;
/// Observations per second one pump may record on average (and in a
/// burst): the exporter buffers raw observations until its next upkeep,
/// so this bounds that buffer.
pub const MAX_OBSERVATIONS_PER_SECOND: u32 = 1_000_000;
/// Label names a plugin may not use: the exporter's own (`le` of
/// histogram buckets, `quantile` of summaries), the host's `pump`, and
/// Prometheus' reserved `__` prefix.
const RESERVED_LABELS: &[&str] = &["le", "quantile", "pump"];
/// Name endings the exporter gives series of a type (`_total` counters,
/// `_bucket`/`_sum`/`_count` histograms): a plugin name ending so could
/// collide with another metric's series.
const RESERVED_SUFFIXES: &[&str] = &["_total", "_bucket", "_sum", "_count", "_created", "_info"];

/// The type of a plugin metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// Every plugin metric of the process, across pumps and reloads (the
/// exporter keeps series as long): the type each name was first used
/// with, so no name is exported with two `# TYPE` lines, and each
/// counter series' value, so counters saturate instead of wrapping.
#[derive(Default)]
struct Registry {
    types: HashMap<String, MetricType>,
    counters: HashMap<u64, u64>,
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn series_id(name: &str, labels: &[metrics::Label]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    for l in labels {
        l.key().hash(&mut h);
        l.value().hash(&mut h);
    }
    h.finish()
}

/// The distinct metric series a pump has created and its observation
/// budget, shared by its instances.
pub struct SeriesBudget {
    seen: Mutex<HashSet<u64>>,
    observations: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for SeriesBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesBudget").finish_non_exhaustive()
    }
}

impl Default for SeriesBudget {
    fn default() -> Self {
        let per_second = NonZeroU32::new(MAX_OBSERVATIONS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        SeriesBudget {
            seen: Mutex::default(),
            observations: RateLimiter::direct(Quota::per_second(per_second)),
        }
    }
}

impl SeriesBudget {
    /// True when the series is known or there is room for it.
    fn admit(&self, id: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&id) {
            return true;
        }
        if seen.len() >= MAX_SERIES_PER_PUMP {
            return false;
        }
        seen.insert(id);
        true
    }

    /// How many of `n` observations fit the pump's budget now.
    fn observations(&self, n: usize) -> usize {
        let Some(want) = u32::try_from(n).ok().and_then(NonZeroU32::new) else {
            return 0;
        };
        // All or none: a call over the budget loses its values, counted.
        match self.observations.check_n(want) {
            Ok(Ok(())) => n,
            _ => 0,
        }
    }
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        if !self.logs.admit() {
            return;
        }
        let message = PluginText::new(&message);
        let pump = &*self.pump;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", pump, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", pump, "{message}"),
            Level::Info => tracing::info!(target: "plugin", pump, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", pump, "{message}"),
            Level::Error => tracing::error!(target: "plugin", pump, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, value: u64, labels: Vec<Label>) {
        if let Some((name, labels, id)) = self.metric(&name, MetricType::Counter, labels) {
            // Saturates: a counter that wrapped past u64::MAX would read as
            // a reset to every rate() over it.
            let total = {
                let mut r = registry();
                let v = r.counters.entry(id).or_default();
                *v = v.saturating_add(value);
                *v
            };
            metrics::counter!(name, labels).absolute(total);
        }
    }

    fn gauge_set(&mut self, name: String, value: f64, labels: Vec<Label>) {
        if let Some((name, labels, _)) = self.metric(&name, MetricType::Gauge, labels) {
            metrics::gauge!(name, labels).set(value);
        }
    }

    fn histogram_observe(&mut self, name: String, values: Vec<f64>, labels: Vec<Label>) {
        let Some((name, labels, _)) = self.metric(&name, MetricType::Histogram, labels) else {
            return;
        };
        let n = values.len().min(MAX_OBSERVATIONS_PER_CALL);
        let admitted = self.series.observations(n);
        if admitted < values.len() {
            self.deny(
                "metric_observations",
                &name,
                &format!("{} of {} observations dropped: at most {MAX_OBSERVATIONS_PER_CALL} per call and {MAX_OBSERVATIONS_PER_SECOND} per second per pump", values.len() - admitted, values.len()),
            );
        }
        let h = metrics::histogram!(name, labels);
        for v in values.into_iter().take(admitted) {
            if v.is_finite() {
                h.record(v);
            }
        }
    }
}

/// Why a plugin metric is refused, or `None` if its name and labels may
/// be exported.
fn refusal(name: &str, labels: &[Label]) -> Option<String> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !valid(name) {
        return Some("names must be [a-z0-9_]{1,64}".into());
    }
    if let Some(sfx) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(**s)) {
        return Some(format!(
            "names may not end in {sfx} (the exporter adds type suffixes itself)"
        ));
    }
    if labels.len() > MAX_LABELS {
        return Some(format!("at most {MAX_LABELS} labels"));
    }
    let mut keys = HashSet::new();
    for l in labels {
        if !valid(&l.key) {
            return Some("label keys must be [a-z0-9_]{1,64}".into());
        }
        if l.key.starts_with("__") || RESERVED_LABELS.contains(&l.key.as_str()) {
            return Some(format!(
                "label {:?} is reserved (le, quantile, pump and names starting with __)",
                l.key
            ));
        }
        if !keys.insert(l.key.as_str()) {
            return Some(format!("label {:?} is given twice", l.key));
        }
    }
    None
}

impl PluginState {
    /// Validates a plugin metric, adds the `pump` label and checks the
    /// pump's series budget and the name's type; returns the exported
    /// name, the labels and the series' id.
    fn metric(
        &self,
        name: &str,
        ty: MetricType,
        labels: Vec<Label>,
    ) -> Option<(String, Vec<metrics::Label>, u64)> {
        if let Some(why) = refusal(name, &labels) {
            self.deny("metric_name", name, &why);
            return None;
        }
        let mut out: Vec<metrics::Label> = labels
            .into_iter()
            .map(|l| {
                let v = PluginText::new(&l.value);
                let v = if v.as_str().len() > MAX_LABEL_VALUE {
                    let mut end = MAX_LABEL_VALUE;
                    while !v.as_str().is_char_boundary(end) {
                        end -= 1;
                    }
                    v.as_str()[..end].to_string()
                } else {
                    v.into_string()
                };
                metrics::Label::new(l.key, v)
            })
            .collect();
        out.push(metrics::Label::new("pump", self.pump.to_string()));
        let suffix = if ty == MetricType::Counter {
            "_total"
        } else {
            ""
        };
        let full = format!("{}{name}{suffix}", telemetry::PLUGIN_METRIC_PREFIX);
        let first = registry().types.get(name).copied();
        if let Some(first) = first.filter(|f| *f != ty) {
            self.deny(
                "metric_type",
                name,
                &format!(
                    "already used as a {}; a name keeps its first type",
                    first.name()
                ),
            );
            return None;
        }
        let id = series_id(&full, &out);
        if !self.series.admit(id) {
            self.deny(
                "metric_series",
                &full,
                &format!(
                    "the pump has {MAX_SERIES_PER_PUMP} series already; label by bounded fields"
                ),
            );
            return None;
        }
        // Recorded only for admitted series, so the series cap bounds it.
        // Two pumps racing to give one name two types: the first wins.
        let mut r = registry();
        let first = *r.types.entry(name.to_string()).or_insert(ty);
        if first != ty {
            drop(r);
            self.deny("metric_type", name, "already used with another type");
            return None;
        }
        Some((full, out, id))
    }

    /// Counts a refused metric use and logs it within the pump's budget.
    fn deny(&self, capability: &'static str, metric: &str, why: &str) {
        metrics::counter!(telemetry::SANDBOX_DENIALS, "pump" => self.pump.to_string(), "capability" => capability)
            .increment(1);
        if self.logs.admit() {
            let metric = PluginText::new(metric);
            tracing::warn!(pump = &*self.pump, metric = %metric, "plugin metric refused: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(k: &str) -> Label {
        Label {
            key: k.into(),
            value: "v".into(),
        }
    }

    #[test]
    fn reserved_names_labels_and_suffixes_are_refused() {
        assert!(refusal("requests", &[label("code")]).is_none());
        for bad in ["le", "quantile", "pump", "__name__", "__x"] {
            assert!(refusal("requests", &[label(bad)]).is_some(), "{bad}");
        }
        for bad in ["x_total", "x_bucket", "x_sum", "x_count", "X", "a-b", ""] {
            assert!(refusal(bad, &[]).is_some(), "{bad}");
        }
        assert!(refusal("x", &[label("a"), label("a")]).is_some());
        let many: Vec<Label> = (0..9).map(|i| label(&format!("l{i}"))).collect();
        assert!(refusal("x", &many).is_some());
    }

    #[test]
    fn the_observation_budget_drops_what_does_not_fit() {
        let b = SeriesBudget::default();
        assert_eq!(b.observations(10), 10);
        assert_eq!(b.observations(0), 0);
        assert_eq!(b.observations(MAX_OBSERVATIONS_PER_SECOND as usize + 1), 0);
    }
}

//! The `host` interface plugins import: logging and metrics, attributed to
//! the pump the instance serves. Log lines are cut to a maximum size and
//! rate limited per pump (see `loglimit`), so a runaway plugin cannot flood
//! the host's log.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use super::bindings::sink::pumphouse::plugin::{host, types};
use super::bindings::{Label, Level};
use super::PluginState;
use crate::telemetry;

/// Longest log line kept from a plugin; the rest is cut so a runaway plugin
/// cannot flood the logs.
const MAX_LOG_LINE: usize = 4096;
/// Most labels a plugin metric may carry.
const MAX_LABELS: usize = 8;
/// Most distinct series (name and label values) one pump may create: the
/// exporter keeps every series for the life of the process, so a plugin
/// labelling by an unbounded field would otherwise grow the host's memory
/// and `/metrics` without limit.
pub const MAX_SERIES_PER_PUMP: usize = 10_000;
/// Most observations one `histogram-observe` call may carry.
const MAX_OBSERVATIONS: usize = 1 << 20;

/// The distinct metric series a pump has created, shared by its instances.
#[derive(Debug, Default)]
pub struct SeriesBudget {
    seen: Mutex<HashSet<u64>>,
}

impl SeriesBudget {
    /// True when the series is known or there is room for it.
    fn admit(&self, name: &str, labels: &[metrics::Label]) -> bool {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut h);
        for l in labels {
            l.key().hash(&mut h);
            l.value().hash(&mut h);
        }
        let id = h.finish();
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
}

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        if !self.logs.admit() {
            return;
        }
        let message = truncate(&message, MAX_LOG_LINE);
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
        if let Some((name, labels)) = self.metric(&name, "_total", labels) {
            metrics::counter!(name, labels).increment(value);
        }
    }

    fn gauge_set(&mut self, name: String, value: f64, labels: Vec<Label>) {
        if let Some((name, labels)) = self.metric(&name, "", labels) {
            metrics::gauge!(name, labels).set(value);
        }
    }

    fn histogram_observe(&mut self, name: String, values: Vec<f64>, labels: Vec<Label>) {
        if let Some((name, labels)) = self.metric(&name, "", labels) {
            let h = metrics::histogram!(name, labels);
            for v in values.into_iter().take(MAX_OBSERVATIONS) {
                if v.is_finite() {
                    h.record(v);
                }
            }
        }
    }
}

impl PluginState {
    /// Validates a plugin metric and adds the `pump` label.
    fn metric(
        &self,
        name: &str,
        suffix: &str,
        labels: Vec<Label>,
    ) -> Option<(String, Vec<metrics::Label>)> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !valid(name) || labels.len() > MAX_LABELS || !labels.iter().all(|l| valid(&l.key)) {
            if !self.logs.admit() {
                return None;
            }
            tracing::warn!(pump = &*self.pump, metric = name, "plugin metric ignored: names and label keys must be [a-z0-9_]{{1,64}}, at most {MAX_LABELS} labels");
            return None;
        }
        let mut out: Vec<metrics::Label> = labels
            .into_iter()
            .filter(|l| l.key != "pump")
            .map(|l| metrics::Label::new(l.key, truncate(&l.value, 128).into_owned()))
            .collect();
        out.push(metrics::Label::new("pump", self.pump.to_string()));
        let name = format!("{}{name}{suffix}", telemetry::PLUGIN_METRIC_PREFIX);
        if !self.series.admit(&name, &out) {
            metrics::counter!(telemetry::SANDBOX_DENIALS, "pump" => self.pump.to_string(), "capability" => "metric_series")
                .increment(1);
            if self.logs.admit() {
                tracing::warn!(pump = &*self.pump, metric = %name, "plugin metric dropped: the pump has {MAX_SERIES_PER_PUMP} series already; label by bounded fields");
            }
            return None;
        }
        Some((name, out))
    }
}

fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes cut]", &s[..end], s.len() - end).into()
}

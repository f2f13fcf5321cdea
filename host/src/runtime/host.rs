//! The `host` interface plugins import: logging and metrics, attributed to
//! the pump the instance serves. Log lines are cut to a maximum size and
//! rate limited per pump (see `loglimit`), so a runaway plugin cannot flood
//! the host's log.

use super::bindings::sink::pumphouse::plugin::{host, types};
use super::bindings::{Label, Level};
use super::PluginState;

/// Longest log line kept from a plugin; the rest is cut so a runaway plugin
/// cannot flood the logs.
const MAX_LOG_LINE: usize = 4096;
/// Most labels a plugin metric may carry.
const MAX_LABELS: usize = 8;

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
        Some((format!("pumphouse_plugin_{name}{suffix}"), out))
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

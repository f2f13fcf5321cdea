//! Live health of the source and each pump, read by `/readyz` and the
//! status page.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Serialize;

/// What a pump is doing.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PumpState {
    /// Delivering normally.
    Ok,
    /// The last attempt failed; retrying with backoff.
    Retrying { kind: String, error: String },
    /// The plugin reported misconfiguration; batches stay claimed until it
    /// is fixed.
    Fatal { error: String },
    /// Delivering, but a plugin call of the last batch took at least
    /// `runtime::NEAR_TIMEOUT` of the pump's timeout: a little more load
    /// and its calls time out.
    Degraded { error: String },
}

impl PumpState {
    /// Whether the pump delivers: ok or degraded.
    pub fn is_delivering(&self) -> bool {
        matches!(self, PumpState::Ok | PumpState::Degraded { .. })
    }
}

/// One pump's status.
#[derive(Debug, Serialize)]
pub struct PumpStatus {
    pub name: String,
    pub plugin: String,
    pub plugin_name: String,
    pub plugin_version: String,
    pub sha256: String,
    /// When the plugin file was compiled (RFC 3339).
    pub loaded_at: String,
    /// What is shown: the lane's state, degraded while the spool fails.
    #[serde(flatten)]
    state: Mutex<PumpState>,
    /// What the lane last set.
    #[serde(skip)]
    lane: Mutex<PumpState>,
    /// Why the pump's spool cannot be written or read, while it cannot.
    #[serde(skip)]
    spool_fault: Mutex<Option<String>>,
    #[serde(skip)]
    since: Mutex<Option<SystemTime>>,
    #[serde(skip)]
    written: AtomicU64,
    #[serde(skip)]
    errors: AtomicU64,
    #[serde(skip)]
    dead_lettered: AtomicU64,
}

/// Per-pump counters since this version of the pump started.
#[derive(Debug, Serialize)]
pub struct Counters {
    pub written: u64,
    pub errors: u64,
    pub dead_lettered: u64,
}

impl PumpStatus {
    pub fn new(name: &str, plugin: &crate::runtime::Plugin) -> Self {
        PumpStatus {
            name: name.to_string(),
            plugin: plugin.path.display().to_string(),
            plugin_name: plugin.info.name.clone(),
            plugin_version: plugin.info.version.clone(),
            sha256: plugin.sha256.clone(),
            loaded_at: rfc3339(plugin.loaded_at),
            state: Mutex::new(PumpState::Ok),
            lane: Mutex::new(PumpState::Ok),
            spool_fault: Mutex::new(None),
            since: Mutex::new(None),
            written: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
        }
    }

    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_dead_lettered(&self, n: u64) {
        self.dead_lettered.fetch_add(n, Ordering::Relaxed);
    }

    pub fn counters(&self) -> Counters {
        Counters {
            written: self.written.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Sets the lane's state (shown as degraded while the spool fails).
    pub fn set(&self, state: PumpState) {
        *self.lane.lock().expect("status lock") = state;
        self.show();
    }

    /// Sets or clears why the pump's spool fails ("spool: No space left on
    /// device (os error 28)"). A pump that otherwise delivers shows as
    /// degraded meanwhile: it still drains what its spool holds.
    pub fn set_spool_fault(&self, fault: Option<String>) {
        *self.spool_fault.lock().expect("status lock") = fault;
        self.show();
    }

    fn show(&self) {
        let lane = self.lane.lock().expect("status lock").clone();
        let state = match (&*self.spool_fault.lock().expect("status lock"), lane) {
            (Some(fault), PumpState::Ok) => PumpState::Degraded {
                error: fault.clone(),
            },
            (Some(fault), PumpState::Degraded { error }) => PumpState::Degraded {
                error: format!("{fault}; {error}"),
            },
            (_, lane) => lane,
        };
        let mut s = self.state.lock().expect("status lock");
        if *s != state {
            *self.since.lock().expect("status lock") = Some(SystemTime::now());
            *s = state;
        }
    }

    pub fn get(&self) -> PumpState {
        self.state.lock().expect("status lock").clone()
    }

    /// When the state last changed (RFC 3339); `None` while it has been
    /// `ok` since the pump started.
    pub fn since(&self) -> Option<String> {
        self.since.lock().expect("status lock").map(rfc3339)
    }
}

/// A Prometheus label value, escaped as the text format requires.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// RFC 3339 text of a time, for status documents.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The outcome of the last config reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadInfo {
    pub at: String,
    /// `ok` or `error`.
    pub result: &'static str,
    /// What changed (`ok`) or why nothing did (`error`).
    pub detail: String,
}

/// What the source reads, for the status page. Fixed for the daemon's
/// life: a reload does not change `[source]`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceInfo {
    /// The Redis URL without its credentials.
    pub redis: String,
    /// `single`, `sentinel` or `cluster`, from the URL's scheme.
    pub topology: &'static str,
    /// The URL is a `rediss` one.
    pub tls: bool,
    /// `list` or `stream`.
    pub kind: &'static str,
    /// Every key drained.
    pub keys: Vec<String>,
}

impl SourceInfo {
    pub fn of(cfg: &crate::config::SourceConfig) -> SourceInfo {
        let scheme = cfg.redis_url.split("://").next().unwrap_or_default();
        SourceInfo {
            redis: crate::source::redis::conn::redacted(&cfg.redis_url),
            topology: topology(scheme),
            tls: scheme.starts_with("rediss"),
            kind: match cfg.kind {
                crate::config::SourceKind::List => "list",
                crate::config::SourceKind::Stream(_) => "stream",
            },
            keys: cfg.keys(),
        }
    }
}

/// The deployment a Redis URL scheme names (`redis+sentinel`, ...).
fn topology(scheme: &str) -> &'static str {
    if scheme.ends_with("+sentinel") {
        "sentinel"
    } else if scheme.ends_with("+cluster") {
        "cluster"
    } else {
        "single"
    }
}

/// Health of the whole daemon.
#[derive(Debug, Default)]
pub struct Status {
    source: Mutex<Option<SourceInfo>>,
    redis_ok: AtomicBool,
    /// Why the last health probe failed (cleared when one succeeds).
    redis_error: Mutex<Option<String>>,
    /// Why the last claim failed (cleared when one succeeds): a refused
    /// command (`NOPERM`) fails claims while `PING` and `LLEN` still work.
    claim_error: Mutex<Option<String>>,
    started: AtomicBool,
    /// What the daemon does before its pumps can start (compiling their
    /// plugins), shown on `/readyz` meanwhile.
    starting: Mutex<Option<String>>,
    pumps: RwLock<Vec<Arc<PumpStatus>>>,
    reload: Mutex<Option<ReloadInfo>>,
}

impl Status {
    pub fn set_source(&self, info: SourceInfo) {
        *self.source.lock().expect("status lock") = Some(info);
    }

    pub fn source(&self) -> Option<SourceInfo> {
        self.source.lock().expect("status lock").clone()
    }

    /// Pumps are running: readiness now depends on them.
    pub fn set_pumps(&self, pumps: Vec<Arc<PumpStatus>>) {
        *self.pumps.write().expect("status lock") = pumps;
        self.started.store(true, Ordering::Release);
    }

    pub fn pumps(&self) -> Vec<Arc<PumpStatus>> {
        self.pumps.read().expect("status lock").clone()
    }

    pub fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    pub fn set_starting(&self, what: Option<String>) {
        *self.starting.lock().expect("status lock") = what;
    }

    pub fn starting(&self) -> Option<String> {
        self.starting.lock().expect("status lock").clone()
    }

    pub fn set_reload(&self, info: ReloadInfo) {
        *self.reload.lock().expect("status lock") = Some(info);
    }

    pub fn last_reload(&self) -> Option<ReloadInfo> {
        self.reload.lock().expect("status lock").clone()
    }

    pub fn set_redis(&self, ok: bool) -> bool {
        self.redis_ok.swap(ok, Ordering::Relaxed)
    }

    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
    }

    /// `pumphouse_redis_up` and `pumphouse_pump_up{pump}` in Prometheus
    /// text, read from the live status at scrape time: a removed pump's
    /// series goes with it, which a gauge in the metrics registry (that
    /// never forgets a series) could not do, and alert rules read levels.
    pub fn render_metrics(&self) -> String {
        use crate::telemetry::{PUMP_UP, REDIS_UP};
        let mut out = format!(
            "# HELP {REDIS_UP} 1 while Redis answers the source, else 0\n\
             # TYPE {REDIS_UP} gauge\n{REDIS_UP} {}\n",
            u8::from(self.redis_ok())
        );
        let pumps = self.pumps();
        if !pumps.is_empty() {
            out.push_str(&format!(
                "# HELP {PUMP_UP} 1 while a pump delivers (ok or degraded on /readyz), else 0\n\
                 # TYPE {PUMP_UP} gauge\n"
            ));
        }
        for p in pumps {
            out.push_str(&format!(
                "{PUMP_UP}{{pump=\"{}\"}} {}\n",
                label_value(&p.name),
                u8::from(p.get().is_delivering())
            ));
        }
        out
    }

    /// Records why the health probe failed (`None`: it succeeded).
    pub fn set_redis_error(&self, cause: Option<String>) {
        *self.redis_error.lock().expect("status lock") = cause;
    }

    /// Records why a claim failed (`None`: one succeeded); returns whether
    /// claims were failing before.
    pub fn set_claim_error(&self, cause: Option<String>) -> bool {
        let mut e = self.claim_error.lock().expect("status lock");
        let was = e.is_some();
        *e = cause;
        was
    }

    /// What keeps Redis from being used, if anything: a failing claim
    /// first (it names the refused command), else the health probe's error.
    pub fn redis_error(&self) -> Option<String> {
        let claim = self.claim_error.lock().expect("status lock").clone();
        claim.or_else(|| self.redis_error.lock().expect("status lock").clone())
    }

    /// Ready: started, Redis answers and takes claims, and no pump is
    /// failing.
    pub fn ready(&self) -> bool {
        self.started()
            && self.redis_ok()
            && self.claim_error.lock().expect("status lock").is_none()
            && self.pumps().iter().all(|p| p.get().is_delivering())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_redis_is_rendered_as_a_level() {
        assert_eq!(label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label_value("x\ny"), r"x\ny");
        let status = Status::default();
        assert!(status.render_metrics().contains("\npumphouse_redis_up 0\n"));
        status.set_redis(true);
        let text = status.render_metrics();
        assert!(text.contains("\npumphouse_redis_up 1\n"), "{text}");
        // No pumps yet: no pump_up family at all (an empty family is noise).
        assert!(!text.contains("pumphouse_pump_up"), "{text}");
    }

    #[test]
    fn topology_is_read_from_the_url_scheme() {
        assert_eq!(topology("redis"), "single");
        assert_eq!(topology("rediss"), "single");
        assert_eq!(topology("redis+sentinel"), "sentinel");
        assert_eq!(topology("rediss+sentinel"), "sentinel");
        assert_eq!(topology("redis+cluster"), "cluster");
    }
}

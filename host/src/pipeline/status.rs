//! Live health of the source and each pump, read by `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
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
}

/// One pump's status.
#[derive(Debug, Serialize)]
pub struct PumpStatus {
    pub name: String,
    pub plugin: String,
    pub plugin_name: String,
    pub plugin_version: String,
    pub sha256: String,
    #[serde(flatten)]
    state: Mutex<PumpState>,
    #[serde(skip)]
    since: Mutex<Option<SystemTime>>,
}

impl PumpStatus {
    pub fn new(name: &str, plugin: &crate::runtime::Plugin) -> Self {
        PumpStatus {
            name: name.to_string(),
            plugin: plugin.path.display().to_string(),
            plugin_name: plugin.info.name.clone(),
            plugin_version: plugin.info.version.clone(),
            sha256: plugin.sha256.clone(),
            state: Mutex::new(PumpState::Ok),
            since: Mutex::new(None),
        }
    }

    pub fn set(&self, state: PumpState) {
        let mut s = self.state.lock().expect("status lock");
        if *s != state {
            *self.since.lock().expect("status lock") = Some(SystemTime::now());
            *s = state;
        }
    }

    pub fn get(&self) -> PumpState {
        self.state.lock().expect("status lock").clone()
    }
}

/// Health of the whole daemon.
#[derive(Debug, Default)]
pub struct Status {
    redis_ok: AtomicBool,
    started: AtomicBool,
    pumps: RwLock<Vec<Arc<PumpStatus>>>,
}

impl Status {
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

    pub fn set_redis(&self, ok: bool) -> bool {
        self.redis_ok.swap(ok, Ordering::Relaxed)
    }

    pub fn redis_ok(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
    }

    /// Ready: started, Redis answers and no pump is failing.
    pub fn ready(&self) -> bool {
        self.started() && self.redis_ok() && self.pumps().iter().all(|p| p.get() == PumpState::Ok)
    }
}

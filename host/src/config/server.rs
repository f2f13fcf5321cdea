//! `[server]`, `[shutdown]` and `[reload]`: the daemon around the pumps.

use std::time::Duration;

use serde::Deserialize;

/// Where the HTTP server listens.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// How long shutdown waits for in-flight batches.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Quiet time after a file change before a reload.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// `host:port` for `/healthz`, `/readyz` and `/metrics`; `port 0` picks
    /// a free port (logged at start).
    pub listen: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.to_string(),
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long SIGTERM/SIGINT waits for in-flight batches; what is not
    /// finished stays claimed in Redis and is re-delivered after its lease.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// `[reload]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Reload when the config file or a `.wasm` in `plugins_dir` changes
    /// (SIGHUP and `POST /admin/reload` always work).
    pub watch: bool,
    /// Quiet time after the last file change before reloading.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

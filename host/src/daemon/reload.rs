//! Hot reload. A reload is a transaction: parse and validate the config,
//! compile new or changed plugins (unchanged files are reused), start and
//! `init` the lanes of added or changed pumps, and only then swap them in.
//! Any failure leaves the running pumps untouched; it is logged, counted in
//! `pumphouse_reloads_total{result="error"}` and shown on `/readyz` and
//! `GET /admin/pumps`.
//!
//! Triggers: changes to the config file or to `.wasm` files in the plugins
//! directory (debounced), SIGHUP, and `POST /admin/reload`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::StartError;
use crate::config::Config;
use crate::pump::{Phase, PumpSet};
use crate::server::ReloadRequest;
use crate::status::{rfc3339, ReloadInfo, Status};
use crate::telemetry;

/// A reload that failed after a file event is tried once more after this
/// long, for a plugin copied in slowly (its last write may raise no event).
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Applies new configs to the running pumps and records each outcome.
pub struct Reloader {
    pumps: PumpSet,
    status: Arc<Status>,
    /// The config as started, with the pumps of the last good reload:
    /// source, server, spool and reload settings apply only at start.
    config: Config,
}

impl Reloader {
    pub fn new(pumps: PumpSet, status: Arc<Status>, config: Config) -> Reloader {
        Reloader {
            pumps,
            status,
            config,
        }
    }

    /// Makes `config`'s pumps the running set; returns what changed.
    async fn apply(&mut self, config: Config) -> Result<String, String> {
        for (what, same) in [
            ("[source]", config.source == self.config.source),
            ("[server]", config.server == self.config.server),
            ("spool_dir", config.spool_dir == self.config.spool_dir),
            ("[reload]", config.reload == self.config.reload),
        ] {
            if !same {
                tracing::warn!("{what} changed; it takes effect at the next restart (reload applies pumps only)");
            }
        }
        // The spool dir stays as started: a changed pump reopens its spool there.
        let mut next = config;
        next.source = self.config.source.clone();
        next.server = self.config.server.clone();
        next.spool_dir = self.config.spool_dir.clone();
        next.reload = self.config.reload.clone();
        super::descriptors::check(&next, super::descriptors::raise_limit());
        let diff = self
            .pumps
            .apply(&next, Phase::Reload)
            .await
            .map_err(|e| e.to_string())?;
        self.config = next;
        Ok(diff.to_string())
    }

    /// Reloads from `path`, recording the outcome.
    async fn reload(&mut self, path: &Path, why: &str) -> Result<String, String> {
        let started = std::time::Instant::now();
        crate::notify::reloading();
        let result = match Config::load(path) {
            Ok(c) => self.apply(c).await,
            Err(e) => Err(e.to_string()),
        };
        // Ready again either way: a failed reload leaves the running pumps.
        crate::notify::ready(if result.is_ok() {
            "draining Redis"
        } else {
            "draining Redis; the last reload failed"
        });
        let (label, detail) = match &result {
            Ok(summary) => {
                tracing::info!(trigger = why, took = ?started.elapsed(), "config reloaded: {summary}");
                ("ok", summary.clone())
            }
            Err(e) => {
                tracing::error!(
                    trigger = why,
                    "reload failed, the running pumps are unchanged: {e}"
                );
                ("error", e.clone())
            }
        };
        metrics::counter!(telemetry::RELOADS, "result" => label).increment(1);
        self.status.set_reload(ReloadInfo {
            at: rfc3339(SystemTime::now()),
            result: label,
            detail,
        });
        result
    }
}

/// Starts watching the config file and plugins directory, SIGHUP and the
/// admin channel; reloads until `shutdown`.
pub fn spawn(
    mut reloader: Reloader,
    path: PathBuf,
    mut requests: mpsc::Receiver<ReloadRequest>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    use notify::Watcher;
    // Editors and copies write in several steps: wait for a quiet period.
    let debounce = reloader.config.reload.debounce;
    let watch = reloader.config.reload.watch;
    let (tx, mut events) = mpsc::channel::<()>(64);
    let config_file = path.canonicalize().unwrap_or_else(|_| path.clone());
    let plugins_dir = reloader
        .config
        .plugins_dir
        .canonicalize()
        .unwrap_or_else(|_| reloader.config.plugins_dir.clone());
    let (cf, pd) = (config_file.clone(), plugins_dir.clone());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        let relevant = ev.paths.iter().any(|p| {
            p == &cf
                || (p.parent() == Some(pd.as_path()) && p.extension().is_some_and(|e| e == "wasm"))
        });
        if relevant {
            // Full means a reload is already due.
            let _ = tx.try_send(());
        }
    })
    .map_err(StartError::Watch)?;
    let config_dir = config_file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let dirs = if watch {
        vec![&config_dir, &plugins_dir]
    } else {
        Vec::new()
    };
    for dir in dirs {
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), "not watching for changes ({e}); SIGHUP and POST /admin/reload still reload");
        }
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(StartError::Signal)?;
    tokio::spawn(async move {
        // The watcher stops when dropped: keep it for the task's lifetime.
        let _watcher = watcher;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            let retry = async {
                match retry_at {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                Some(()) = events.recv() => {
                    // Debounce: wait for a quiet period.
                    loop {
                        tokio::select! {
                            Some(()) = events.recv() => continue,
                            _ = tokio::time::sleep(debounce) => break,
                        }
                    }
                    let failed = reloader.reload(&path, "file change").await.is_err();
                    retry_at = failed.then(|| tokio::time::Instant::now() + RETRY_AFTER);
                }
                _ = retry => {
                    retry_at = None;
                    let _ = reloader.reload(&path, "retry after a failed reload").await;
                }
                Some(()) = hup.recv() => {
                    let _ = reloader.reload(&path, "SIGHUP").await;
                }
                Some(reply) = requests.recv() => {
                    let r = reloader.reload(&path, "POST /admin/reload").await;
                    let _ = reply.send(r);
                }
            }
        }
    });
    Ok(())
}

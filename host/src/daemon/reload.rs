//! Hot reload. A reload is a transaction: parse and validate the config,
//! compile new or changed plugins (unchanged files are reused), start and
//! `init` the lanes of added or changed pumps, and only then swap them in.
//! Any failure leaves the running pumps untouched; it is logged, counted in
//! `pumphouse_reloads_total{result="error"}` and shown on `/readyz` and
//! `GET /admin/pumps`.
//!
//! Triggers: changes to the config file or to `.wasm` files in the plugins
//! directory (debounced), SIGHUP, and `POST /admin/reload`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{lane_spec, load_pumps, PluginCache, StartError};
use crate::config::{Buffer, Config, PumpConfig};
use crate::dlq::DeadLetters;
use crate::pipeline::lane::Lane;
use crate::pipeline::lanes::{LaneSet, SpoolSource};
use crate::pipeline::status::{rfc3339, PumpStatus, ReloadInfo, Status};
use crate::runtime::Runtime;
use crate::spool::Spool;
use crate::telemetry;

/// A reload that failed after a file event is tried once more after this
/// long, for a plugin copied in slowly (its last write may raise no event).
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// A reload request from the admin endpoint, answered with the outcome.
pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What a pump runs, to tell a changed pump from an unchanged one.
struct Running {
    config: PumpConfig,
    /// SHA-256 of the sink and of each filter plugin, in order.
    plugins: Vec<String>,
    status: Arc<PumpStatus>,
}

/// Owns the running pump set and applies new configs to it.
pub struct Reloader {
    runtime: Runtime,
    cache: PluginCache,
    lanes: Arc<LaneSet>,
    status: Arc<Status>,
    dead_letters: DeadLetters,
    config: Config,
    running: HashMap<String, Running>,
}

impl Reloader {
    pub fn new(
        runtime: Runtime,
        cache: PluginCache,
        lanes: Arc<LaneSet>,
        status: Arc<Status>,
        dead_letters: DeadLetters,
        config: Config,
    ) -> Reloader {
        Reloader {
            runtime,
            cache,
            lanes,
            status,
            dead_letters,
            config,
            running: HashMap::new(),
        }
    }

    /// Makes `config`'s pumps the running set; returns what changed.
    /// `first` is the start: spools are opened here so a locked one fails it.
    pub async fn apply(&mut self, config: Config, first: bool) -> Result<String, StartError> {
        if !first {
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
        }
        let pumps = load_pumps(&config, &self.runtime, &mut self.cache).await?;
        // Start every added or changed pump before touching the running set.
        let mut fresh: HashMap<String, (Lane, Arc<PumpStatus>, Vec<String>)> = HashMap::new();
        let mut opened: HashMap<String, Arc<Spool>> = HashMap::new();
        for p in &pumps {
            let plugins: Vec<String> = std::iter::once(&p.sink)
                .chain(&p.filters)
                .map(|pl| pl.sha256.clone())
                .collect();
            if let Some(r) = self.running.get(&p.config.name) {
                if r.config == p.config && r.plugins == plugins {
                    continue;
                }
            }
            let spec = lane_spec(p)?;
            let status = spec.status.clone();
            let lane = Lane::start(spec, self.dead_letters.clone())
                .await
                .map_err(StartError::Init)?;
            if let (true, Buffer::Disk(disk)) = (first, p.config.buffer) {
                let (dir, name) = (config.spool_dir.clone(), p.config.name.clone());
                let (max, when_full) = (disk.max_spool_bytes.as_u64(), disk.when_full);
                let spool =
                    tokio::task::spawn_blocking(move || Spool::open(&dir, &name, max, when_full))
                        .await
                        .map_err(|e| StartError::Init(format!("spool task failed: {e}")))?
                        .map_err(|source| StartError::Spool {
                            pump: p.config.name.clone(),
                            source: Box::new(source),
                        })?;
                opened.insert(p.config.name.clone(), Arc::new(spool));
            }
            fresh.insert(p.config.name.clone(), (lane, status, plugins));
        }
        // Commit: nothing below can fail.
        let mut handles = Vec::with_capacity(pumps.len());
        let mut statuses = Vec::with_capacity(pumps.len());
        let mut running = HashMap::new();
        let (mut added, mut changed, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        for p in &pumps {
            let name = &p.config.name;
            match fresh.remove(name) {
                Some((lane, status, plugins)) => {
                    let spool = match (p.config.buffer, opened.remove(name)) {
                        (Buffer::Memory, _) => None,
                        (Buffer::Disk(_), Some(s)) => Some(SpoolSource::Opened(s)),
                        (Buffer::Disk(disk), None) => Some(SpoolSource::Open {
                            dir: config.spool_dir.clone(),
                            max_bytes: disk.max_spool_bytes.as_u64(),
                            when_full: disk.when_full,
                        }),
                    };
                    if self.running.contains_key(name) {
                        changed.push(name.clone());
                    } else {
                        added.push(name.clone());
                    }
                    handles.push(self.lanes.spawn(
                        lane,
                        p.config.max_in_flight_batches,
                        spool,
                        status.clone(),
                    ));
                    statuses.push(status.clone());
                    running.insert(
                        name.clone(),
                        Running {
                            config: p.config.clone(),
                            plugins,
                            status,
                        },
                    );
                }
                None => {
                    let r = self
                        .running
                        .remove(name)
                        .expect("unchanged pumps are running");
                    handles.push(self.lanes.handle(name).expect("running pumps have lanes"));
                    statuses.push(r.status.clone());
                    kept.push(name.clone());
                    running.insert(name.clone(), r);
                }
            }
        }
        let mut removed: Vec<String> = self
            .running
            .keys()
            .filter(|k| !running.contains_key(*k))
            .cloned()
            .collect();
        removed.sort();
        self.lanes.install(handles);
        self.status.set_pumps(statuses);
        self.running = running;
        // Source, server, spool and reload settings stay as started.
        let mut next = config;
        next.source = self.config.source.clone();
        next.server = self.config.server.clone();
        next.spool_dir = self.config.spool_dir.clone();
        next.reload = self.config.reload.clone();
        self.config = next;
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        Ok(format!(
            "added: {}; changed: {}; removed: {}; unchanged: {}",
            list(&added),
            list(&changed),
            list(&removed),
            list(&kept)
        ))
    }

    /// Reloads from `path`, recording the outcome.
    async fn reload(&mut self, path: &Path, why: &str) -> Result<String, String> {
        let started = std::time::Instant::now();
        let result = match Config::load(path) {
            Ok(c) => self.apply(c, false).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
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
    .map_err(|e| StartError::Init(format!("cannot watch for config changes: {e}")))?;
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
        .map_err(|e| StartError::Init(format!("cannot handle SIGHUP: {e}")))?;
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

//! Starting the daemon (`run`), checking a config (`check`), and the reload
//! trigger ([`reload`]). What a pump is and how the running set changes
//! live in [`crate::pump`]; the flow of batches in [`crate::pipeline`].

pub mod descriptors;
pub mod reload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::dlq::DeadLetters;
use crate::pipeline::{self, RunReport, Settings};
use crate::pump::{LaneSet, Phase, PluginCache, PumpError, PumpSet, PumpSpec};
use crate::runtime::{Runtime, SetupError};
use crate::source::redis::probe::{probe, ProbeError};
use crate::source::redis::{conn, redacted, RedisSource, SourceError};
use crate::status::Status;
use reload::Reloader;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pump(#[from] PumpError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Runtime(#[from] SetupError),
    #[error("source.redis_url: {0}")]
    RedisUrl(crate::source::redis::ConnError),
    #[error("{0}")]
    Listen(std::io::Error),
    #[error("shut down while waiting for redis")]
    Interrupted,
    #[error("cannot watch for config changes: {0}")]
    Watch(notify::Error),
    #[error("cannot handle SIGHUP: {0}")]
    Signal(std::io::Error),
}

/// Outcome of `check`.
pub struct CheckReport {
    /// One line per pump: its sink and filter chain.
    pub lines: Vec<String>,
    /// Why pumphouse cannot use the source's Redis, if it cannot.
    pub redis_problem: Option<ProbeError>,
    /// The Redis URL, password masked.
    pub redis: String,
    /// `[source.tls] insecure` is on.
    pub tls_insecure: bool,
    /// `check --require-redis`: a Redis problem fails the check.
    pub require_redis: bool,
}

impl CheckReport {
    /// False when `--require-redis` was given and Redis cannot be used.
    pub fn ok(&self) -> bool {
        !(self.require_redis && self.redis_problem.is_some())
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        if self.tls_insecure {
            writeln!(f, "warning: {INSECURE_WARNING}")?;
        }
        match &self.redis_problem {
            None => writeln!(f, "redis: reachable")?,
            Some(e @ ProbeError::Refused { .. }) => {
                writeln!(f, "redis: reachable but NOT usable: {e}")?
            }
            Some(e) if self.require_redis => writeln!(f, "redis: NOT reachable: {e}")?,
            Some(e) => writeln!(
                f,
                "redis: NOT reachable: {e} (the daemon waits for it at start; --require-redis fails the check)"
            )?,
        }
        if self.ok() {
            writeln!(f, "config OK")
        } else {
            writeln!(
                f,
                "check FAILED: redis at {} cannot be used (--require-redis)",
                self.redis
            )
        }
    }
}

/// Logged at start (and printed by `check`) when TLS verification is off.
const INSECURE_WARNING: &str = "source.tls.insecure = true: the Redis server certificate is \
     not verified, so anyone on the network path can read and change the traffic";

/// Validates a config, compiles every plugin and runs each pump's `init`
/// (so plugin config errors surface too). Redis reachability is reported;
/// it fails the check only with `require_redis`, since the daemon waits
/// for Redis at start.
pub async fn check(config: &Config, require_redis: bool) -> Result<CheckReport, StartError> {
    let runtime = Runtime::new(true)?;
    let specs = PumpSpec::build_all(config, &runtime, &mut PluginCache::default()).await?;
    let mut lines = Vec::new();
    for p in &specs {
        p.start_instances().await?;
        let chain: Vec<String> = p
            .filters
            .iter()
            .map(|(f, _)| format!("{} {}", f.info.name, f.info.version))
            .collect();
        lines.push(format!(
            "pump {}: sink {} {} ({}){}",
            p.name,
            p.sink.info.name,
            p.sink.info.version,
            crate::runtime::encoding_name(p.sink.info.accepts),
            if chain.is_empty() {
                String::new()
            } else {
                format!(", filters: {}", chain.join(" → "))
            }
        ));
    }
    let redis_problem = probe(&config.source, Duration::from_secs(3)).await.err();
    Ok(CheckReport {
        lines,
        redis_problem,
        redis: redacted(&config.source.redis_url),
        tls_insecure: config.source.tls.insecure,
        require_redis,
    })
}

/// A running daemon's handles, for callers that embed it (the demo).
pub struct Started {
    pub http: SocketAddr,
    pub done: tokio::task::JoinHandle<RunReport>,
}

/// Starts the daemon: loads plugins, binds HTTP, connects Redis (waiting for
/// it), starts lanes and runs the pipeline until `shutdown`. With
/// `config_path`, the config file and the plugins directory are watched
/// and pumps reload on change, on SIGHUP and on `POST /admin/reload`.
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<Started, StartError> {
    if config.source.tls.insecure {
        tracing::warn!("{INSECURE_WARNING}");
    }
    descriptors::check(&config, descriptors::raise_limit());
    // Plugin state lives in the source's Redis, beside the records.
    let kv = crate::runtime::kv::KvStore::redis(
        conn::Endpoint::for_source(&config.source).map_err(StartError::RedisUrl)?,
    );
    let runtime = Runtime::new(true)?.with_kv_store(kv);
    let mut cache = PluginCache::default();
    let status = Arc::new(Status::default());
    status.set_source(crate::status::SourceInfo::of(&config.source));
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let admin = config_path.as_ref().map(|_| reload_tx.clone());
    let (http, _server) = crate::server::serve(
        &config.server.listen,
        status.clone(),
        metrics.clone(),
        admin,
        shutdown.clone(),
    )
    .await
    .map_err(StartError::Listen)?;
    tracing::info!(%http, "serving the status page, /healthz, /readyz, /metrics and /admin");
    // Compile before Redis: a broken plugin still fails the start. The
    // first compile of an interpreted plugin takes seconds of CPU (later
    // starts read the compilation cache), so HTTP is up first: `/healthz`
    // answers and `/readyz` says what the daemon waits for.
    status.set_starting(Some("compiling the pumps' plugins".into()));
    let built = tokio::select! {
        b = PumpSpec::build_all(&config, &runtime, &mut cache) => b,
        _ = shutdown.cancelled() => return Err(StartError::Interrupted),
    };
    built?;
    status.set_starting(None);
    tracing::info!(redis = %redacted(&config.source.redis_url), keys = ?config.source.keys(), "connecting to redis");
    // `/readyz` names why the daemon is still waiting.
    let waiting = |cause: &str| status.set_redis_error(Some(cause.to_string()));
    let source = tokio::select! {
        s = RedisSource::connect(&config.source, Duration::MAX, &waiting) => s?,
        _ = shutdown.cancelled() => return Err(StartError::Interrupted),
    };
    let schema = config.source.format;
    let (lanes, finished) = LaneSet::new(schema);
    let mut pumps = PumpSet::new(
        runtime,
        cache,
        lanes.clone(),
        status.clone(),
        DeadLetters::new(source.clone()),
    );
    pumps.apply(&config, Phase::Start).await?;
    let settings = Settings {
        schema,
        poll_interval: config.source.poll_interval,
        lease: config.source.lease,
        drain_timeout: config.shutdown.drain_timeout,
    };
    if let Some(path) = config_path {
        reload::spawn(
            Reloader::new(pumps, status.clone(), config),
            path,
            reload_rx,
            shutdown.clone(),
        )?;
    }
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        crate::notify::stopping();
    });
    let done = tokio::spawn(pipeline::run(
        source, lanes, finished, settings, status, shutdown,
    ));
    crate::notify::ready("draining Redis");
    Ok(Started { http, done })
}

//! Wiring: config → plugins → Redis → lanes → pipeline, plus `check` and
//! hot reload ([`reload`]).

pub mod reload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, PumpConfig};
use crate::dlq::DeadLetters;
use crate::pipeline::filters::HostFilter;
use crate::pipeline::lane::{self, LaneSpec};
use crate::pipeline::lanes::LaneSet;
use crate::pipeline::ratelimit::RateLimits;
use crate::pipeline::status::{PumpStatus, Status};

use crate::pipeline::{self, RunReport, Settings};
use crate::runtime::{Kind, LoadError, Plugin, Runtime, Sandbox, SetupError};
use crate::source::redis::{redacted, RedisSource, SourceError};
use crate::spool::SpoolError;
use reload::Reloader;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("pump {pump}: {path} is a {found} plugin, but {role} must be a {want}")]
    WrongKind {
        pump: String,
        path: PathBuf,
        found: Kind,
        want: Kind,
        role: &'static str,
    },
    #[error("pump {pump}: cannot create sandbox dir {path}: {source}")]
    SandboxDir {
        pump: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Init(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("pump {pump}: {source}")]
    Spool {
        pump: String,
        source: Box<SpoolError>,
    },
    #[error(transparent)]
    Runtime(#[from] SetupError),
    #[error("{0}")]
    Listen(std::io::Error),
}

/// A pump with its plugins compiled.
pub struct LoadedPump {
    pub config: PumpConfig,
    pub sink: Arc<Plugin>,
    pub filters: Vec<Arc<Plugin>>,
    /// The pump's namespace of the plugin state store.
    pub kv: crate::runtime::kv::Kv,
}

/// Compiled plugins by path, kept across reloads: a file whose bytes did
/// not change is not compiled again.
#[derive(Default)]
pub struct PluginCache {
    plugins: HashMap<PathBuf, Arc<Plugin>>,
}

impl PluginCache {
    async fn get(&mut self, runtime: &Runtime, path: &Path) -> Result<Arc<Plugin>, StartError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let sha = hex_sha256(&bytes);
        if let Some(p) = self.plugins.get(path).filter(|p| p.sha256 == sha) {
            return Ok(p.clone());
        }
        let p = Arc::new(runtime.load(path).await?);
        tracing::info!(path = %path.display(), name = %p.info.name, version = %p.info.version, kind = %p.kind, sha256 = %p.sha256, "plugin loaded");
        self.plugins.insert(path.to_path_buf(), p.clone());
        Ok(p)
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compiles every plugin the config names (unchanged files come from
/// `cache`) and checks that sinks are sinks and filters are filters.
pub async fn load_pumps(
    config: &Config,
    runtime: &Runtime,
    cache: &mut PluginCache,
) -> Result<Vec<LoadedPump>, StartError> {
    let mut pumps = Vec::new();
    for pump in &config.pumps {
        let mut get =
            async |name: &str, want: Kind, role: &'static str| -> Result<Arc<Plugin>, StartError> {
                let path = config.plugin_path(name);
                let plugin = cache.get(runtime, &path).await?;
                if plugin.kind != want {
                    return Err(StartError::WrongKind {
                        pump: pump.name.clone(),
                        path,
                        found: plugin.kind,
                        want,
                        role,
                    });
                }
                Ok(plugin)
            };
        let sink = get(&pump.plugin, Kind::Sink, "`plugin`").await?;
        let mut filters = Vec::new();
        for f in &pump.filters_chain {
            filters.push(get(&f.plugin, Kind::Filter, "a `filters_chain` entry").await?);
        }
        pumps.push(LoadedPump {
            config: pump.clone(),
            sink,
            filters,
            kv: runtime.kv_for(&pump.name),
        });
    }
    Ok(pumps)
}

fn sandbox_of(pump: &PumpConfig, kv: &crate::runtime::kv::Kv) -> Result<Sandbox, StartError> {
    for d in &pump.sandbox.dirs {
        if !d.read_only {
            std::fs::create_dir_all(&d.host).map_err(|source| StartError::SandboxDir {
                pump: pump.name.clone(),
                path: d.host.clone(),
                source,
            })?;
        }
    }
    let mut sandbox = Sandbox::for_pump(&pump.name, &pump.sandbox, pump.timeout);
    sandbox.kv = kv.clone();
    Ok(sandbox)
}

fn json_config(table: &toml::Table) -> String {
    serde_json::to_string(table).expect("a TOML table is valid JSON")
}

/// The lane settings of a loaded pump.
pub(crate) fn lane_spec(p: &LoadedPump) -> Result<LaneSpec, StartError> {
    Ok(LaneSpec {
        name: Arc::from(p.config.name.as_str()),
        sink: p.sink.clone(),
        sink_config: json_config(&p.config.config),
        filters: p
            .filters
            .iter()
            .zip(&p.config.filters_chain)
            .map(|(plugin, f)| (plugin.clone(), json_config(&f.config)))
            .collect(),
        host_filter: HostFilter::new(&p.config.filters),
        omit_detail: p.config.omit_detailed_recording,
        max_record_size: p.config.max_record_size.map(|b| b.as_u64()),
        max_batch_bytes: p.config.max_batch_bytes.map(|b| b.as_u64() as usize),
        rate: RateLimits::new(&p.config.rate_limit),
        sandbox: sandbox_of(&p.config, &p.kv)?,
        retry: p.config.retry.clone(),
        status: Arc::new(PumpStatus::new(&p.config.name, &p.sink)),
        tick: p.config.tick_interval,
    })
}

/// Outcome of `check`.
pub struct CheckReport {
    pub lines: Vec<String>,
    pub redis_ok: bool,
}

/// Validates a config, compiles every plugin and runs each pump's `init`
/// (so plugin config errors surface too). Redis reachability is reported
/// but does not fail the check: the daemon waits for Redis at start.
pub async fn check(config: &Config) -> Result<CheckReport, StartError> {
    let runtime = Runtime::new(true)?;
    let pumps = load_pumps(config, &runtime, &mut PluginCache::default()).await?;
    let mut lines = Vec::new();
    for p in &pumps {
        lane::start_instances(&lane_spec(p)?)
            .await
            .map_err(StartError::Init)?;
        let chain: Vec<String> = p
            .filters
            .iter()
            .map(|f| format!("{} {}", f.info.name, f.info.version))
            .collect();
        lines.push(format!(
            "pump {}: sink {} {} ({}){}",
            p.config.name,
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
    let redis_ok = match tokio::time::timeout(
        Duration::from_secs(3),
        RedisSource::connect(&config.source, Duration::ZERO),
    )
    .await
    {
        Ok(Ok(s)) => s.ping().await,
        _ => false,
    };
    Ok(CheckReport { lines, redis_ok })
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
    // Plugin state lives in the source's Redis, beside the records.
    let kv = crate::runtime::kv::KvStore::redis(&config.source.redis_url)
        .map_err(|e| StartError::Init(format!("source.redis_url: {e}")))?;
    let runtime = Runtime::new(true)?.with_kv_store(kv);
    let mut cache = PluginCache::default();
    // Compile before anything else: a broken plugin fails the start fast.
    load_pumps(&config, &runtime, &mut cache).await?;
    let status = Arc::new(Status::default());
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
    tracing::info!(%http, "serving /healthz, /readyz, /metrics and /admin");
    tracing::info!(redis = %redacted(&config.source.redis_url), keys = ?config.source.keys(), "connecting to redis");
    let source = tokio::select! {
        s = RedisSource::connect(&config.source, Duration::MAX) => s?,
        _ = shutdown.cancelled() => return Err(StartError::Init("shut down while waiting for redis".into())),
    };
    let schema = config.source.format;
    let (lanes, finished) = LaneSet::new(schema);
    let mut reloader = Reloader::new(
        runtime,
        cache,
        lanes.clone(),
        status.clone(),
        DeadLetters::new(source.clone()),
        config.clone(),
    );
    reloader.apply(config.clone(), true).await?;
    let settings = Settings {
        schema,
        poll_interval: config.source.poll_interval,
        lease: config.source.lease,
        drain_timeout: config.shutdown.drain_timeout,
    };
    if let Some(path) = config_path {
        reload::spawn(reloader, path, reload_rx, shutdown.clone())?;
    }
    let done = tokio::spawn(pipeline::run(
        source, lanes, finished, settings, status, shutdown,
    ));
    Ok(Started { http, done })
}

//! The WebAssembly runtime: one wasmtime `Engine` with epoch interruption,
//! one `Linker`, plugins compiled once into an `InstancePre`, and live
//! instances that enforce a pump's memory limit and per-call timeout.
//!
//! A call that traps, runs out of time or memory returns a [`CallError`];
//! the instance is then poisoned and the caller drops it and instantiates
//! a fresh one. Nothing a plugin does can take the host down.
//!
//! The sandbox denies by default: a plugin sees only the directories, the
//! environment variables, the socket peers and the HTTP destinations its
//! pump lists (see [`Sandbox`]).

pub mod bindings;
pub mod compiled;
mod error;
pub mod files;
mod host;
pub mod http;
mod instance;
pub mod kv;
pub mod limits;
pub mod loglimit;
pub mod producers;
mod sockets;
mod stderr;
pub mod text;
pub mod tls;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};
use wasmtime_wasi_tls::{WasiTlsCtx, WasiTlsCtxView, WasiTlsView};

use self::compiled::CompiledCache;
use self::files::{FilePolicy, OpenFiles};
use self::host::SeriesBudget;
use self::http::{HttpHooks, OutboundPolicy};
use self::kv::{Kv, KvQuota, KvStore};
use self::loglimit::LogLimiter;
use crate::config::{DirConfig, SandboxConfig, EPOCH_TICK};
use crate::sandbox::SocketRule;
use bindings::{filter, sink, PluginInfo};
pub use error::{CallError, Kind, LoadError, SetupError};
use instance::{guard, Exports, Live, Ticker};
pub use instance::{AsBatch, SharedBatch, NEAR_TIMEOUT};
pub use instance::{Inline, Instance};

/// Export names that identify a plugin's world.
const SINK_EXPORT: &str = "pumphouse:plugin/sink@0.1.0";
const FILTER_EXPORT: &str = "pumphouse:plugin/filter@0.1.0";
const PLUGIN_EXPORT: &str = "pumphouse:plugin/plugin@0.1.0";

/// What a plugin may touch. The default denies everything but the
/// standard streams, clocks and random numbers.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Host directories the plugin sees, already created.
    pub dirs: Vec<DirConfig>,
    /// Limit in bytes on all of an instance's linear memories and tables
    /// together.
    pub max_memory: usize,
    /// Per-call time limit.
    pub timeout: Duration,
    /// Names of host environment variables the plugin sees; values are
    /// read when an instance starts.
    pub env: Vec<String>,
    /// Peers the plugin may open TCP/UDP sockets to.
    pub sockets: Vec<SocketRule>,
    /// Where the plugin may send HTTP requests.
    pub outbound: Arc<OutboundPolicy>,
    /// The pump's log budget, shared by all of its instances.
    pub logs: Arc<LogLimiter>,
    /// The pump's namespace of the `kv` store.
    pub kv: Kv,
    /// The pump's budget of distinct metric series, shared by all of its
    /// instances.
    pub series: Arc<SeriesBudget>,
    /// Symlinks and open files, per instance.
    pub files: FilePolicy,
    /// The certificates plugin TLS (`wasi:tls`) trusts.
    pub trust: tls::Trust,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            dirs: Vec::new(),
            max_memory: crate::config::DEFAULT_MAX_MEMORY.as_u64() as usize,
            timeout: crate::config::DEFAULT_TIMEOUT,
            env: Vec::new(),
            sockets: Vec::new(),
            outbound: Arc::new(OutboundPolicy::default()),
            logs: Arc::new(LogLimiter::unlimited("")),
            kv: Kv::new(KvStore::memory(), "", KvQuota::default()),
            series: Arc::new(SeriesBudget::default()),
            files: FilePolicy {
                allow_symlinks: false,
                max_open_files: crate::config::DEFAULT_MAX_OPEN_FILES as usize,
            },
            trust: tls::Trust::default(),
        }
    }
}

impl Sandbox {
    /// The capabilities `config` grants `pump`, with its per-call timeout.
    /// The rules were parsed with the config; the writable directories
    /// must exist already. `trust` is `config.tls_ca_files`, loaded.
    pub fn for_pump(
        pump: &str,
        config: &SandboxConfig,
        timeout: Duration,
        trust: tls::Trust,
    ) -> Sandbox {
        let one = NonZeroU32::MIN;
        let rate = NonZeroU32::new(config.log_lines_per_second).unwrap_or(one);
        let burst = NonZeroU32::new(config.log_burst).unwrap_or(one);
        Sandbox {
            dirs: config.dirs.clone(),
            max_memory: config.max_memory.as_u64() as usize,
            timeout,
            env: config.env.clone(),
            sockets: config.sockets.clone(),
            outbound: Arc::new(OutboundPolicy {
                rules: config.allowed_outbound_hosts.clone(),
                allow_private: config.allow_private_networks,
                timeout: config.http_timeout,
                max_connections: config.max_connections as usize,
                tls: trust.client_config(&[b"http/1.1"]),
            }),
            logs: Arc::new(LogLimiter::new(pump, rate, burst)),
            kv: Kv::new(
                KvStore::memory(),
                pump,
                KvQuota {
                    max_bytes: config.kv_max_bytes.as_u64(),
                    max_keys: config.kv_max_keys,
                },
            ),
            series: Arc::new(SeriesBudget::default()),
            files: FilePolicy {
                allow_symlinks: config.allow_symlinks,
                max_open_files: config.max_open_files as usize,
            },
            trust,
        }
    }
}

/// Per-store state: WASI, HTTP, limits, and which pump this instance
/// serves.
pub struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: HttpHooks,
    tls: WasiTlsCtx,
    table: ResourceTable,
    limits: limits::Limits,
    pump: Arc<str>,
    logs: Arc<LogLimiter>,
    kv: Kv,
    series: Arc<SeriesBudget>,
    files: OpenFiles,
    /// `wasi:sockets` TCP sockets and their connection permits.
    sockets_held: sockets::HeldSockets,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl WasiTlsView for PluginState {
    fn tls(&mut self) -> WasiTlsCtxView<'_> {
        WasiTlsCtxView {
            ctx: &mut self.tls,
            table: &mut self.table,
        }
    }
}

/// The engine and linker, shared by every pump.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    ticker: Arc<Ticker>,
    linker: Arc<Linker<PluginState>>,
    kv: Arc<KvStore>,
    compiled: Option<Arc<CompiledCache>>,
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker. `cache` keeps compiled
    /// plugins on disk ([`CompiledCache`] in its default directory) so
    /// restarts and reloads skip recompiling.
    pub fn new(cache: bool) -> Result<Runtime, SetupError> {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        cfg.wasm_component_model(true);
        let engine = Engine::new(&cfg).map_err(|e| SetupError(format!("{e:#}")))?;
        let compiled = match (cache, CompiledCache::default_dir()) {
            (false, _) => None,
            (true, None) => {
                tracing::warn!(
                    "compilation cache disabled: neither XDG_CACHE_HOME nor HOME is set"
                );
                None
            }
            (true, Some(dir)) => match CompiledCache::open(dir.clone(), &engine) {
                Ok(c) => Some(Arc::new(c)),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), "compilation cache disabled: {e}");
                    None
                }
            },
        };
        // The ticker holds only a weak handle so dropping the runtime ends it.
        let weak = engine.weak();
        let ticker = Arc::new(Ticker::default());
        let t = ticker.clone();
        let thread = std::thread::Builder::new()
            .name("pumphouse-epoch".into())
            .spawn(move || t.run(weak))
            .map_err(|e| SetupError(format!("cannot start the epoch ticker: {e}")))?;
        let _ = ticker.thread.set(thread.thread().clone());
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| SetupError(format!("{e:#}")))?;
        files::add_to_linker(&mut linker).map_err(|e| SetupError(format!("{e:#}")))?;
        sockets::add_to_linker(&mut linker).map_err(|e| SetupError(format!("{e:#}")))?;
        // Linked for every plugin; what a request may reach is decided per
        // pump in `http::HttpHooks`.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| SetupError(format!("{e:#}")))?;
        // TLS over a plugin's own sockets; the sockets are what the sandbox
        // checks, so linking it grants nothing a pump did not list.
        let mut tls_options = wasmtime_wasi_tls::p2::LinkOptions::default();
        tls_options.tls(true);
        wasmtime_wasi_tls::p2::add_to_linker(&mut linker, &tls_options)
            .map_err(|e| SetupError(format!("{e:#}")))?;
        // Both worlds import the same interfaces; the sink world adds them.
        sink::PumpSink::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| SetupError(format!("{e:#}")))?;
        Ok(Runtime {
            engine,
            ticker,
            linker: Arc::new(linker),
            kv: KvStore::memory(),
            compiled,
        })
    }

    /// Keeps plugin `kv` state in `store` instead of process memory.
    pub fn with_kv_store(mut self, store: Arc<KvStore>) -> Runtime {
        self.kv = store;
        self
    }

    /// The plugin state store of every pump.
    pub fn kv_store(&self) -> Arc<KvStore> {
        self.kv.clone()
    }

    /// Compiles a plugin file (on the blocking pool: compiling is CPU-heavy),
    /// checks its world and imports, and asks it to describe itself.
    pub async fn load(&self, path: &Path) -> Result<Plugin, LoadError> {
        let (bytes, sha256) = read_plugin(path).await?;
        self.load_bytes(path, bytes, sha256).await
    }

    /// Like [`Runtime::load`], for a file already read and hashed (the
    /// plugin cache hashes a file to tell whether it changed).
    pub async fn load_bytes(
        &self,
        path: &Path,
        bytes: Vec<u8>,
        sha256: String,
    ) -> Result<Plugin, LoadError> {
        let rt = self.clone();
        let owned = path.to_path_buf();
        let plugin = tokio::task::spawn_blocking(move || rt.compile(&owned, &bytes, sha256))
            .await
            .map_err(|e| LoadError::Compile {
                path: path.to_path_buf(),
                message: format!("compiler task failed: {e}"),
            })??;
        let mut plugin = plugin;
        plugin.info = plugin
            .describe()
            .await
            .map_err(|source| LoadError::Describe {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(plugin)
    }

    fn compile(&self, path: &Path, bytes: &[u8], sha256: String) -> Result<Plugin, LoadError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm {
                path: path.to_path_buf(),
            });
        }
        let component = match &self.compiled {
            Some(c) => c.component(&self.engine, bytes, &sha256),
            None => Component::new(&self.engine, bytes),
        }
        .map_err(|e| LoadError::Compile {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let has = |n: &str| exports.iter().any(|e| e == n);
        let kind = match (has(SINK_EXPORT), has(FILTER_EXPORT), has(PLUGIN_EXPORT)) {
            (true, false, true) => Kind::Sink,
            (false, true, true) => Kind::Filter,
            _ => {
                return Err(LoadError::UnknownWorld {
                    path: path.to_path_buf(),
                    exports: exports.join(", "),
                })
            }
        };
        let link_err = |e: wasmtime::Error| LoadError::Link {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(link_err)?;
        let pre = match kind {
            Kind::Sink => Pre::Sink(sink::PumpSinkPre::new(pre).map_err(link_err)?),
            Kind::Filter => Pre::Filter(filter::PumpFilterPre::new(pre).map_err(link_err)?),
        };
        let plugin = Plugin {
            path: path.to_path_buf(),
            kind,
            sha256,
            size: bytes.len(),
            language: producers::source_language(bytes),
            loaded_at: SystemTime::now(),
            exports,
            imports,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                accepts: bindings::Encoding::Msgpack,
            },
            pre,
            engine: self.engine.clone(),
            ticker: self.ticker.clone(),
        };
        Ok(plugin)
    }
}

/// `msgpack` or `json`.
pub fn encoding_name(e: bindings::Encoding) -> &'static str {
    match e {
        bindings::Encoding::Msgpack => "msgpack",
        bindings::Encoding::Json => "json",
    }
}

/// A plugin file's bytes and their [`sha256_hex`].
pub async fn read_plugin(path: &Path) -> Result<(Vec<u8>, String), LoadError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let sha256 = sha256_hex(&bytes);
    Ok((bytes, sha256))
}

/// SHA-256 of a plugin file, lowercase hex: how plugins are identified in
/// logs, `/admin/pumps` and `plugins inspect`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[derive(Clone)]
enum Pre {
    Sink(sink::PumpSinkPre<PluginState>),
    Filter(filter::PumpFilterPre<PluginState>),
}

/// A compiled plugin, ready to be instantiated many times.
pub struct Plugin {
    pub path: PathBuf,
    pub kind: Kind,
    /// SHA-256 of the `.wasm` file.
    pub sha256: String,
    pub size: usize,
    /// The language it was written in, when its metadata tells
    /// ([`producers::source_language`]).
    pub language: Option<producers::SourceLanguage>,
    pub loaded_at: SystemTime,
    pub info: PluginInfo,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pre: Pre,
    engine: Engine,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("name", &self.info.name)
            .field("version", &self.info.version)
            .finish()
    }
}

impl Plugin {
    /// `describe` runs before any pump owns the plugin: it gets a log
    /// budget of the default size of its own, so it cannot flood `check`.
    async fn describe(&self) -> Result<PluginInfo, CallError> {
        let one = NonZeroU32::MIN;
        let rate = NonZeroU32::new(crate::config::DEFAULT_LOG_LINES_PER_SECOND).unwrap_or(one);
        let burst = NonZeroU32::new(crate::config::DEFAULT_LOG_BURST).unwrap_or(one);
        let sandbox = Sandbox {
            logs: Arc::new(LogLimiter::new("describe", rate, burst)),
            ..Sandbox::default()
        };
        let mut inst = self.instantiate("describe", &sandbox).await?;
        inst.describe().await
    }

    /// Creates a fresh instance for `pump` inside `sandbox`, then calls
    /// `init(config_json)`.
    pub async fn start(
        &self,
        pump: &str,
        sandbox: &Sandbox,
        config_json: &str,
    ) -> Result<Instance, CallError> {
        let mut inst = self.instantiate(pump, sandbox).await?;
        inst.init(config_json).await?;
        Ok(inst)
    }

    /// Creates a fresh instance that runs on the caller's thread (see
    /// [`Inline`]; benchmarks only), then calls `init(config_json)`.
    #[doc(hidden)]
    pub async fn start_inline(
        &self,
        pump: &str,
        sandbox: &Sandbox,
        config_json: &str,
    ) -> Result<Inline, CallError> {
        let mut live = build(
            self.pre.clone(),
            self.engine.clone(),
            self.ticker.clone(),
            Arc::from(pump),
            sandbox.clone(),
        )
        .await?;
        live.init(config_json).await?;
        Ok(Inline(live))
    }

    /// Starts an instance on a thread of its own (see [`Instance`]).
    async fn instantiate(&self, pump: &str, sandbox: &Sandbox) -> Result<Instance, CallError> {
        let build = build(
            self.pre.clone(),
            self.engine.clone(),
            self.ticker.clone(),
            Arc::from(pump),
            sandbox.clone(),
        );
        Instance::spawn(pump, sandbox.timeout, build).await
    }
}

/// Builds an instance's store and instantiates the plugin in it.
async fn build(
    pre: Pre,
    engine: Engine,
    ticker: Arc<Ticker>,
    pump: Arc<str>,
    sandbox: Sandbox,
) -> Result<Live, CallError> {
    let mut wasi = WasiCtxBuilder::new();
    // File calls run on the instance's own thread, which already runs
    // the plugin, instead of a hop to the blocking pool and back: each hop
    // is two thread wake-ups, and a busy machine makes them wait for a core.
    // Stdout belongs to the stdout sink; stderr goes through the pump's
    // log budget, a line at a time.
    wasi.inherit_stdout()
        .stderr(stderr::PluginStderr {
            pump: pump.clone(),
            logs: sandbox.logs.clone(),
        })
        .allow_blocking_current_thread(true);
    for name in &sandbox.env {
        match std::env::var(name) {
            Ok(value) => {
                wasi.env(name, value);
            }
            Err(e) => {
                if sandbox.logs.admit() {
                    tracing::warn!(pump = &*pump, env = %name, "sandbox.env: {e}; the plugin runs without it");
                }
            }
        }
    }
    sockets::configure(&mut wasi, &pump, &sandbox.sockets, &sandbox.logs).await;
    for dir in &sandbox.dirs {
        let perms = if dir.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| {
                CallError::Instantiate(format!(
                    "cannot open sandbox dir {}: {e:#}",
                    dir.host.display()
                ))
            })?;
    }
    let state = PluginState {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        http_hooks: HttpHooks::new(pump.clone(), sandbox.outbound.clone(), sandbox.logs.clone()),
        tls: sandbox.trust.wasi_ctx(),
        table: ResourceTable::new(),
        limits: limits::Limits::new(sandbox.max_memory),
        pump,
        logs: sandbox.logs.clone(),
        kv: sandbox.kv.clone(),
        series: sandbox.series.clone(),
        files: OpenFiles::new(sandbox.files),
        sockets_held: sockets::HeldSockets::default(),
    };
    let mut store = Store::new(&engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    let ticks = (sandbox.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    let timeout = sandbox.timeout;
    let exports = match &pre {
        Pre::Sink(pre) => guard(&ticker, timeout, pre.instantiate_async(&mut store))
            .await
            .map(Exports::Sink),
        Pre::Filter(pre) => guard(&ticker, timeout, pre.instantiate_async(&mut store))
            .await
            .map(Exports::Filter),
    }
    .map_err(|e| match e {
        CallError::Trap(m) => CallError::Instantiate(m),
        other => other,
    })?;
    Ok(Live {
        store,
        exports,
        ticks,
        timeout,
        ticker,
    })
}

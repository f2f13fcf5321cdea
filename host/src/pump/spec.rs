//! A pump as configured and compiled: everything a lane needs, fixed when
//! the pump starts (or restarts after a reload).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, PumpConfig, RetryConfig};
use crate::runtime::tls::Trust;
use crate::runtime::{Instance, Kind, Plugin, Runtime, Sandbox};
use crate::status::PumpStatus;

use super::host_filter::HostFilter;
use super::plugins::PluginCache;
use super::ratelimit::RateLimits;
use super::PumpError;

/// One pump, ready to start a lane.
pub struct PumpSpec {
    pub name: Arc<str>,
    /// The config it was built from, to tell a changed pump on reload.
    pub config: PumpConfig,
    pub sink: Arc<Plugin>,
    pub sink_config: String,
    pub filters: Vec<(Arc<Plugin>, String)>,
    pub host_filter: HostFilter,
    pub omit_detail: bool,
    /// Larger records are dead-lettered ([`PumpConfig::record_size_limit`]).
    pub max_record_size: u64,
    /// Largest payload per sink call; bigger groups are split first.
    pub max_batch_bytes: Option<usize>,
    pub rate: Option<RateLimits>,
    pub sandbox: Sandbox,
    pub retry: RetryConfig,
    pub status: Arc<PumpStatus>,
    /// Send the sink an empty batch after this long without records.
    pub tick: Option<Duration>,
}

impl PumpSpec {
    /// Compiles the pump's plugins (unchanged files come from `cache`),
    /// checks that the sink is a sink and the filters are filters, and
    /// prepares its sandbox (creating writable dirs).
    pub async fn build(
        config: &Config,
        pump: &PumpConfig,
        runtime: &Runtime,
        cache: &mut PluginCache,
    ) -> Result<PumpSpec, PumpError> {
        let mut get = async |name: &str, want: Kind, role: &'static str| {
            let path = config.plugin_path(name);
            let plugin = cache.get(runtime, &path).await?;
            if plugin.kind != want {
                return Err(PumpError::WrongKind {
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
        let mut filters = Vec::with_capacity(pump.filters_chain.len());
        for f in &pump.filters_chain {
            let plugin = get(&f.plugin, Kind::Filter, "a `filters_chain` entry").await?;
            filters.push((plugin, json_config(&f.config)));
        }
        let mut sandbox = sandbox_of(pump)?;
        sandbox.kv = sandbox.kv.in_store(runtime.kv_store());
        Ok(PumpSpec {
            name: Arc::from(pump.name.as_str()),
            config: pump.clone(),
            status: Arc::new(PumpStatus::new(&pump.name, &sink)),
            sink,
            sink_config: json_config(&pump.config),
            filters,
            host_filter: HostFilter::new(&pump.filters),
            omit_detail: pump.omit_detailed_recording,
            max_record_size: pump.record_size_limit().as_u64(),
            max_batch_bytes: pump.max_batch_bytes.map(|b| b.as_u64() as usize),
            rate: RateLimits::new(&pump.rate_limit),
            sandbox,
            retry: pump.retry.clone(),
            tick: pump.tick_interval,
        })
    }

    /// Builds every pump of `config`, in order.
    pub async fn build_all(
        config: &Config,
        runtime: &Runtime,
        cache: &mut PluginCache,
    ) -> Result<Vec<PumpSpec>, PumpError> {
        let mut specs = Vec::with_capacity(config.pumps.len());
        for pump in &config.pumps {
            specs.push(PumpSpec::build(config, pump, runtime, cache).await?);
        }
        Ok(specs)
    }

    /// SHA-256 of the sink and of each filter plugin, in order.
    pub fn plugin_hashes(&self) -> Vec<String> {
        std::iter::once(&self.sink)
            .chain(self.filters.iter().map(|(p, _)| p))
            .map(|p| p.sha256.clone())
            .collect()
    }

    /// Instantiates and inits the sink and filters; the error names the
    /// pump and the plugin file. Used by lanes and by `pumphouse check`.
    pub async fn start_instances(&self) -> Result<(Instance, Vec<Instance>), PumpError> {
        let instance_err = |role: &'static str, plugin: &Plugin| {
            let (pump, path) = (self.name.clone(), plugin.path.clone());
            move |source| PumpError::Instance {
                pump,
                role,
                path,
                source,
            }
        };
        let sink = self
            .sink
            .start(&self.name, &self.sandbox, &self.sink_config)
            .await
            .map_err(instance_err("sink", &self.sink))?;
        let mut filters = Vec::with_capacity(self.filters.len());
        for (plugin, config) in &self.filters {
            let inst = plugin
                .start(&self.name, &self.sandbox, config)
                .await
                .map_err(instance_err("filter", plugin))?;
            filters.push(inst);
        }
        Ok((sink, filters))
    }
}

/// The capabilities of `pump`, with its writable dirs created.
fn sandbox_of(pump: &PumpConfig) -> Result<Sandbox, PumpError> {
    for d in pump.sandbox.dirs.iter().filter(|d| !d.read_only) {
        std::fs::create_dir_all(&d.host).map_err(|source| PumpError::SandboxDir {
            pump: pump.name.clone(),
            path: d.host.clone(),
            source,
        })?;
    }
    let trust = Trust::load(&pump.sandbox.tls_ca_files).map_err(|source| PumpError::Trust {
        pump: pump.name.clone(),
        source,
    })?;
    Ok(Sandbox::for_pump(
        &pump.name,
        &pump.sandbox,
        pump.timeout,
        trust,
    ))
}

fn json_config(table: &toml::Table) -> String {
    serde_json::to_string(table).expect("a TOML table is valid JSON")
}

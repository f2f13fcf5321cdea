//! The TOML configuration: types, defaults, `${ENV}` interpolation and
//! validation. Pure: nothing here touches Redis or plugins. Every field is
//! documented for users in `configs/pumphouse.example.toml`.
//!
//! One file per section: [`source`] (`[source]`), [`pump`] (`[[pumps]]`
//! and its sub-tables but the sandbox), [`sandbox`] (`[pumps.sandbox]`)
//! and [`server`] (`[server]`, `[shutdown]`, `[reload]`). Mode-specific
//! fields are written flat in the TOML but held in enums here
//! ([`SourceKind`], [`Buffer`]), so a validated config cannot combine them
//! wrongly; each section checks its own values in `validate`.

mod interpolate;
mod pump;
mod sandbox;
mod server;
mod source;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::record::Schema;
pub use interpolate::interpolate_env;
pub use pump::{
    Buffer, DiskOptions, FilterPluginConfig, HostFilters, PumpConfig, RateLimitConfig, RetryConfig,
    WhenFull, DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_SPOOL_BYTES, DEFAULT_RETRY_INITIAL,
    DEFAULT_RETRY_MAX, DEFAULT_TIMEOUT,
};
pub use sandbox::{
    DirConfig, SandboxConfig, DEFAULT_HTTP_TIMEOUT, DEFAULT_KV_MAX_BYTES, DEFAULT_KV_MAX_KEYS,
    DEFAULT_LOG_BURST, DEFAULT_LOG_LINES_PER_SECOND, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_MEMORY,
    DEFAULT_MAX_OPEN_FILES,
};
pub use server::{
    ReloadConfig, ServerConfig, ShutdownConfig, DEFAULT_DEBOUNCE, DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_LISTEN,
};
pub use source::{
    Delivery, SourceConfig, SourceKind, StreamOptions, TlsConfig, DEFAULT_BATCH_SIZE,
    DEFAULT_LEASE, DEFAULT_MAX_DELIVERIES, DEFAULT_POLL_INTERVAL, DEFAULT_REDIS_URL,
    DEFAULT_STREAM_FIELD, DEFAULT_STREAM_GROUP, MAX_BATCH_SIZE,
};

/// Epoch tick used to enforce plugin timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Where `plugin` names are looked up, relative to the config file.
pub const DEFAULT_PLUGINS_DIR: &str = "plugins";
/// Where the spools of `buffer = "disk"` pumps live, relative to the
/// config file.
pub const DEFAULT_SPOOL_DIR: &str = "spool";

/// A configuration error, naming the field or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Env { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {field}: {message}")]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

/// A value that parsed but is out of range or contradicts another; the
/// field is dotted from the file's root, e.g. `pumps[0] (out).timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error for a field one level down, e.g. `sandbox.env[0]`
    /// under `pumps[0] (out)`.
    pub(crate) fn under(self, parent: &str) -> Self {
        FieldError {
            field: format!("{parent}.{}", self.field),
            ..self
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory the `plugin` names of pumps are resolved in. Relative paths
    /// are relative to the config file's directory.
    #[serde(default = "Config::default_plugins_dir")]
    pub plugins_dir: PathBuf,
    /// Directory holding the spools of `buffer = "disk"` pumps, one file per
    /// pump. Relative paths are relative to the config file's directory.
    /// Each instance needs its own: a spool file is locked while open.
    #[serde(default = "Config::default_spool_dir")]
    pub spool_dir: PathBuf,
    /// Where records come from.
    pub source: SourceConfig,
    /// The HTTP server (health, readiness, metrics).
    #[serde(default)]
    pub server: ServerConfig,
    /// Shutdown behaviour.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Hot reload of pumps.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// The pumps; every pump receives every record.
    #[serde(default)]
    pub pumps: Vec<PumpConfig>,
}

impl Config {
    // `[source]` has no default, so `Config` cannot be `#[serde(default)]`:
    // these two fields take theirs one by one.
    fn default_plugins_dir() -> PathBuf {
        PathBuf::from(DEFAULT_PLUGINS_DIR)
    }
    fn default_spool_dir() -> PathBuf {
        PathBuf::from(DEFAULT_SPOOL_DIR)
    }

    /// Reads, interpolates, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_str_at(&text, path, base)
    }

    /// Parses config text as if read from `path`; relative paths resolve
    /// against `base`.
    pub fn from_str_at(text: &str, path: &Path, base: &Path) -> Result<Config, ConfigError> {
        Self::from_str_with(text, path, base, |k| std::env::var(k).ok())
    }

    /// Like [`Config::from_str_at`], with `${NAME}` looked up in `vars`.
    pub fn from_str_with(
        text: &str,
        path: &Path,
        base: &Path,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = interpolate_env(text, vars).map_err(|message| ConfigError::Env {
            path: path.to_path_buf(),
            message,
        })?;
        let mut config = parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        config.resolve_paths(base);
        config
            .validate()
            .map_err(|FieldError { field, message }| ConfigError::Invalid {
                path: path.to_path_buf(),
                field,
                message,
            })?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        if self.plugins_dir.is_relative() {
            self.plugins_dir = base.join(&self.plugins_dir);
        }
        if self.spool_dir.is_relative() {
            self.spool_dir = base.join(&self.spool_dir);
        }
        let tls = &mut self.source.tls;
        for file in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
            .into_iter()
            .flatten()
        {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        for pump in &mut self.pumps {
            for dir in &mut pump.sandbox.dirs {
                if dir.host.is_relative() {
                    dir.host = base.join(&dir.host);
                }
            }
        }
    }

    /// Resolves a plugin reference against `plugins_dir`. A bare name
    /// without an extension (`file`) means that name's `.wasm` (`file.wasm`).
    pub fn plugin_path(&self, plugin: &str) -> PathBuf {
        let p = Path::new(plugin);
        if p.is_absolute() || plugin.contains('/') {
            p.to_path_buf()
        } else if p.extension().is_none() {
            self.plugins_dir.join(format!("{plugin}.wasm"))
        } else {
            self.plugins_dir.join(p)
        }
    }

    /// Checks each section; the first error found wins.
    fn validate(&self) -> Result<(), FieldError> {
        self.source.validate().map_err(|e| e.under("source"))?;
        if self.pumps.is_empty() {
            return Err(FieldError::new(
                "pumps",
                "at least one [[pumps]] entry is required",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, pump) in self.pumps.iter().enumerate() {
            pump.validate_name(i)?;
            if !names.insert(pump.name.as_str()) {
                return Err(FieldError::new(
                    format!("pumps[{i}].name"),
                    format!("{:?} is used by two pumps", pump.name),
                ));
            }
            pump.validate(self.source.format)
                .map_err(|e| e.under(&format!("pumps[{i}] ({})", pump.name)))?;
        }
        Ok(())
    }
}

/// Deserializes the (interpolated) text. A value the types reject is
/// reported with its field, e.g. `pumps[0] (out).sandbox.sockets[1]: …`,
/// since the parser's own message only shows the line.
fn parse(text: &str) -> Result<Config, String> {
    let message = |e: toml::de::Error| e.to_string().trim_end().to_string();
    let de = toml::Deserializer::parse(text).map_err(message)?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = field_name(e.path(), text);
        let inner = message(e.into_inner());
        match field {
            Some(field) => format!("{field}: {inner}"),
            None => inner,
        }
    })
}

/// `path` as validation errors spell it, with a pump's name after its
/// index (`pumps[0] (out).timeout`); `None` at the root.
fn field_name(path: &serde_path_to_error::Path, text: &str) -> Option<String> {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    if segments.is_empty() {
        return None;
    }
    let mut out = String::new();
    for (n, s) in segments.iter().enumerate() {
        match s {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                if n == 1 && matches!(segments[0], Segment::Map { key } if key == "pumps") {
                    if let Some(name) = pump_name(text, *index) {
                        out.push_str(&format!(" ({name})"));
                    }
                }
            }
            other if n == 0 => out.push_str(&other.to_string()),
            other => out.push_str(&format!(".{other}")),
        }
    }
    Some(out)
}

/// The `name` of the `index`th pump, read from the text on its own since
/// the typed parse failed.
fn pump_name(text: &str, index: usize) -> Option<String> {
    let doc = text.parse::<toml::Table>().ok()?;
    let name = doc.get("pumps")?.get(index)?.get("name")?.as_str()?;
    Some(name.to_string())
}

/// Refuses settings that belong to another mode: the first `(name, set)`
/// that is set names itself and the setting that would allow it.
fn only_in(mode: &str, setting: &str, fields: &[(&str, bool)]) -> Result<(), String> {
    match fields.iter().find(|(_, set)| *set) {
        Some((name, _)) => Err(format!(
            "{name}: only for {mode}; remove it or set {setting}"
        )),
        None => Ok(()),
    }
}

//! `pumphouse migrate`: translates a tyk-pump `pump.conf` (JSON) or an
//! iam-pump `iam-pump.yaml` into an equivalent pumphouse TOML config.
//!
//! Pure: text and environment in, text out; the CLI reads the file and
//! prints. [`input`] reads either dialect into one neutral form, [`redis`]
//! turns the storage settings into a `redis_url`, [`pumps`] maps each pump
//! type to a bundled plugin (or to a commented block saying why not), and
//! [`emit`] writes the TOML text.

mod emit;
mod input;
mod pumps;
mod redis;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

/// The config format being migrated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// Tyk Pump's `pump.conf` (JSON), with `TYK_PMP_*` overrides.
    TykPump,
    /// iam-pump's `iam-pump.yaml`, with `${VAR}` placeholders.
    IamPump,
}

impl Dialect {
    /// The name users know the tool by.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::TykPump => "tyk-pump",
            Dialect::IamPump => "iam-pump",
        }
    }
}

/// What the caller provides besides the file's text.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `plugins_dir` written into the output; unset leaves pumphouse's
    /// default (`plugins` beside the config file).
    pub plugins_dir: Option<String>,
    /// The environment `TYK_PMP_*` overrides are looked up in. A variable
    /// set here is written as `${NAME}`, so the new config keeps reading it.
    pub env: BTreeMap<String, String>,
}

/// Something in the old config that the output does not carry over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmapped {
    /// The pump or setting, e.g. `pump mongo (type mongo)`.
    pub what: String,
    /// Why it is left out.
    pub reason: String,
}

/// The result of a migration.
#[derive(Debug, Clone)]
pub struct Migration {
    /// The pumphouse config.
    pub toml: String,
    /// Pumps and settings left out (as commented blocks in `toml`); empty
    /// when everything was mapped.
    pub unmapped: Vec<Unmapped>,
}

/// A config that cannot be migrated at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    /// The file is not JSON (tyk-pump) or YAML (iam-pump).
    #[error("not a valid {dialect} config: {message}")]
    Parse {
        dialect: &'static str,
        message: String,
    },
    /// A field has a type the old tool would not accept either.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

/// Translates `text`, a config of `dialect`, to pumphouse TOML.
pub fn migrate(dialect: Dialect, text: &str, options: &Options) -> Result<Migration, MigrateError> {
    let old = input::parse(dialect, text, &options.env)?;
    Ok(emit::write(&old, options))
}

/// A value from the old config: literal text, or text that refers to
/// environment variables and must stay a `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Text {
    /// Taken as it is; a `${` in it is written as `$${`.
    Lit(String),
    /// A template such as `${REDIS_HOST}`, written unchanged.
    Env(String),
}

impl Text {
    /// The text as it may appear in pumphouse's config (before its
    /// `${...}` interpolation).
    pub(crate) fn template(&self) -> String {
        match self {
            Text::Lit(s) => s.replace("${", "$${"),
            Text::Env(s) => s.clone(),
        }
    }

    /// The literal value, if this is one.
    pub(crate) fn lit(&self) -> Option<&str> {
        match self {
            Text::Lit(s) => Some(s),
            Text::Env(_) => None,
        }
    }

    /// The variable's name when the whole value is one `${NAME}`.
    pub(crate) fn sole_var(&self) -> Option<&str> {
        let Text::Env(s) = self else { return None };
        let name = s.strip_prefix("${")?.strip_suffix('}')?;
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            .then_some(name)
    }

    /// True for a literal empty string.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Text::Lit(s) if s.is_empty())
    }
}

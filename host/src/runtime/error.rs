//! What can go wrong loading plugins and calling them, and the two kinds
//! of plugin.

use std::path::PathBuf;
use std::time::Duration;

use super::{FILTER_EXPORT, SINK_EXPORT};

/// Loading a plugin failed; the message says which file and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not start with the WebAssembly magic bytes: a wrong
    /// path, not a broken build, so no parser output is shown.
    #[error("plugin {path}: not a WebAssembly component (it does not start with the bytes \\0asm); build a plugin with `cargo build --release --target wasm32-wasip2`")]
    NotWasm { path: PathBuf },
    #[error("plugin {path}: not a valid WebAssembly component: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("plugin {path}: exports neither {SINK_EXPORT} nor {FILTER_EXPORT}; build it with pumphouse-sdk's export_sink!/export_filter! (exports: {exports})")]
    UnknownWorld { path: PathBuf, exports: String },
    #[error("plugin {path}: cannot be linked: {message}")]
    Link { path: PathBuf, message: String },
    #[error("plugin {path}: describe() failed: {source}")]
    Describe { path: PathBuf, source: CallError },
}

/// The engine could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the WebAssembly runtime: {0}")]
pub struct SetupError(pub(super) String);

/// A plugin call that did not return normally.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("exceeded its memory limit: {0}")]
    Memory(String),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    #[error("init failed: {0}")]
    Init(String),
}

impl CallError {
    /// The `kind` label of `pumphouse_pump_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::Memory(_) => "memory",
            CallError::Trap(_) => "trap",
            CallError::Instantiate(_) => "instantiate",
            CallError::Init(_) => "init",
        }
    }
}

/// Sink or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sink,
    Filter,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Sink => "sink",
            Kind::Filter => "filter",
        })
    }
}

//! The home of a pump: from its config to a running lane.
//!
//! | file | owns |
//! |---|---|
//! | [`spec`] | [`PumpSpec`]: a pump's config compiled into what its lane needs |
//! | [`plugins`] | the plugin cache: compile each changed `.wasm` once, hashed once |
//! | [`lane`] | the lane: memory loop, ticks, host filters and size cap, retry bookkeeping |
//! | [`disk`] | `buffer = "disk"`: the spool writer and the loop delivering from the spool |
//! | [`filter_chain`] | filter plugins and their verdicts |
//! | [`deliver`] | the sink: split, bisect, partial failures, as `classify(outcome) -> Step` |
//! | [`encode`] | each call's batch, in the encoding its plugin reads |
//! | [`retry`] | the retry policy (capped exponential backoff with jitter, `max_attempts`) |
//! | [`host_filter`] | `[pumps.filters]`: allow and skip lists on decoded fields |
//! | [`ratelimit`] | `[pumps.rate_limit]`: token buckets |
//! | [`set`] | the running set of lanes and the start/reload transaction over it |

mod deliver;
mod disk;
mod encode;
mod filter_chain;
pub mod host_filter;
pub mod lane;
pub mod plugins;
pub mod ratelimit;
pub mod retry;
pub mod set;
pub mod spec;

use std::path::PathBuf;
use std::sync::Arc;

pub use plugins::PluginCache;
pub use set::{Diff, LaneSet, Phase, PumpSet};
pub use spec::PumpSpec;

use crate::runtime::{CallError, Kind, LoadError};
use crate::spool::SpoolError;

/// A pump could not be built or started; the message names the pump and
/// the plugin file.
#[derive(Debug, thiserror::Error)]
pub enum PumpError {
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
    #[error("pump {pump}: {source}")]
    Trust {
        pump: String,
        source: crate::runtime::tls::TrustError,
    },
    /// A plugin failed to instantiate or `init`.
    #[error("pump {pump}: {role} {}: {source}", path.display())]
    Instance {
        pump: Arc<str>,
        /// `sink` or `filter`.
        role: &'static str,
        path: PathBuf,
        source: CallError,
    },
    #[error("pump {pump}: {source}")]
    Spool {
        pump: String,
        source: Box<SpoolError>,
    },
    #[error("spool task failed: {0}")]
    SpoolTask(String),
}

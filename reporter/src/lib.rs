#![doc = include_str!("../README.md")]

mod announcements;
mod conn;
mod endpoint;
mod error;
mod format;
#[cfg(feature = "layer")]
pub mod layer;
pub mod metrics;
mod options;
mod queue;
mod reporter;
mod worker;

pub use endpoint::Tls;
pub use error::{BuildError, EncodeError, RecordError};
pub use format::{Format, Iam, Msgpack, Tyk, IAM_KEY, TYK_KEY};
#[cfg(feature = "layer")]
pub use layer::{AnalyticsLayer, HttpRecord, HttpTyk};
pub use options::{
    NoFormat, ReporterBuilder, Target, WhenFull, DEFAULT_BATCH_SIZE, DEFAULT_BUFFER_SIZE,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_FLUSH_INTERVAL, DEFAULT_GIVE_UP_AFTER,
    DEFAULT_MAX_FLUSH_INTERVAL, DEFAULT_POOL_SIZE, DEFAULT_REDIS_URL, DEFAULT_RETRY_MAX,
    DEFAULT_RETRY_MIN, DEFAULT_SEND_TIMEOUT, DEFAULT_STREAM_FIELD, DEFAULT_TARGET,
    DEFAULT_WHEN_FULL,
};
pub use pumphouse_wire::{IamRecord, TykRecord};
pub use reporter::{Reporter, Stats};

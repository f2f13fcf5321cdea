//! Errors at the API boundary.

use std::fmt;

/// Why [`ReporterBuilder::build`](crate::ReporterBuilder::build) refused its options.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Redis URL does not parse (the message never quotes its
    /// password).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// A TLS file cannot be read or used; the message names it.
    #[error("TLS: {0}")]
    Tls(String),
    /// The format has no producer key of its own (`Msgpack`) and none was set.
    #[error("no key set: the msgpack format has no default key; call .key(..)")]
    MissingKey,
    /// An option is out of range.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: &'static str,
    },
    /// `build` must run inside a Tokio runtime (the workers are spawned on
    /// it) unless the `runtime` option names one.
    #[error("no Tokio runtime: build the reporter from within one, or set .runtime(..)")]
    NoRuntime,
}

/// Why a record was not accepted. The record is handed back.
///
/// `Debug` and `Display` do not print the record, so any record type works.
#[derive(thiserror::Error)]
pub enum RecordError<R> {
    /// The buffer holds `buffer_size` records. With `WhenFull::Drop` the
    /// record was counted in `dropped_total{reason="full"}`; with
    /// `WhenFull::Block` nothing was counted: the record is the caller's.
    #[error("analytics buffer full")]
    Full(R),
    /// The reporter was shut down; counted in `dropped_total{reason="closed"}`.
    #[error("reporter shut down")]
    Closed(R),
}

impl<R> RecordError<R> {
    /// The record that was not accepted.
    pub fn into_record(self) -> R {
        match self {
            RecordError::Full(r) | RecordError::Closed(r) => r,
        }
    }
}

impl<R> fmt::Debug for RecordError<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordError::Full(_) => "Full(..)",
            RecordError::Closed(_) => "Closed(..)",
        })
    }
}

/// A record its format could not encode (only custom `Serialize` impls
/// and custom formats fail). Such a record is counted in
/// `lost_total{reason="unencodable"}` and logged.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode record: {0}")]
pub struct EncodeError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

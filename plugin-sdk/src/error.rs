//! The SDK's error type and how it maps onto the host's error semantics.

use std::fmt;

use crate::WriteError;

/// What kind of failure an [`Error`] is, which decides what the host does
/// with the batch when the error leaves a sink's `write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient trouble; the host backs off and retries the whole batch.
    Retry,
    /// Something in the batch is bad; the host bisects it and dead-letters
    /// the records that keep failing.
    Invalid,
    /// The batch is too large for the destination; the host splits it.
    TooLarge,
    /// Retrying cannot help; the host stops the pump and reports it failing.
    Fatal,
}

/// The one error type of the SDK.
///
/// It converts with `?` from [`std::io::Error`], `serde_json::Error`,
/// `rmp_serde::decode::Error`, `rmpv::decode::Error`, [`String`] and `&str`,
/// and converts into [`WriteError`], so `?` works inside [`Sink::write`].
///
/// | source                                    | kind                  |
/// |-------------------------------------------|-----------------------|
/// | `io::Error`, `String`, `&str`             | [`ErrorKind::Retry`]  |
/// | JSON / MessagePack decoding errors        | [`ErrorKind::Invalid`]|
/// | JSON errors raised by the underlying I/O  | [`ErrorKind::Retry`]  |
/// | [`Error::fatal`] / [`Error::invalid`] / ... | as constructed      |
///
/// [`Sink::write`]: crate::Sink::write
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// A transient failure: the host retries the batch with backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Retry, message)
    }

    /// Bad data in the batch: the host bisects it to isolate the bad
    /// records and dead-letters them.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    /// The batch is too large for the destination: the host splits it in
    /// halves and retries each half.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }

    /// A failure that retrying cannot fix (misconfiguration, lost
    /// credentials): the host stops sending to the pump.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Fatal, message)
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::retry(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Io => Error::retry(e.to_string()),
            _ => Error::invalid(e.to_string()),
        }
    }
}

impl From<rmp_serde::decode::Error> for Error {
    fn from(e: rmp_serde::decode::Error) -> Self {
        Error::invalid(e.to_string())
    }
}

impl From<rmpv::decode::Error> for Error {
    fn from(e: rmpv::decode::Error) -> Self {
        Error::invalid(e.to_string())
    }
}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error::retry(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Error::retry(message)
    }
}

impl From<Error> for WriteError {
    fn from(e: Error) -> Self {
        match e.kind {
            ErrorKind::Retry => WriteError::Retry(e.message),
            ErrorKind::Invalid => WriteError::InvalidBatch(e.message),
            ErrorKind::TooLarge => WriteError::TooLarge,
            ErrorKind::Fatal => WriteError::Fatal(e.message),
        }
    }
}

/// Lets `?` turn the usual error sources straight into a [`WriteError`]
/// inside `Sink::write`, with the same kinds as the [`Error`] conversions.
macro_rules! write_error_from {
    ($($source:ty),*) => {$(
        impl From<$source> for WriteError {
            fn from(e: $source) -> Self {
                Error::from(e).into()
            }
        }
    )*};
}

write_error_from!(
    std::io::Error,
    serde_json::Error,
    rmp_serde::decode::Error,
    rmpv::decode::Error,
    String,
    &str
);

impl From<Error> for String {
    fn from(e: Error) -> Self {
        e.message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_onto_write_errors() {
        assert_eq!(
            WriteError::from(Error::retry("down")),
            WriteError::Retry("down".into())
        );
        assert_eq!(
            WriteError::from(Error::invalid("bad")),
            WriteError::InvalidBatch("bad".into())
        );
        assert_eq!(
            WriteError::from(Error::too_large("big")),
            WriteError::TooLarge
        );
        assert_eq!(
            WriteError::from(Error::fatal("config")),
            WriteError::Fatal("config".into())
        );
    }

    #[test]
    fn conversions_pick_a_kind() {
        let io = std::io::Error::other("disk full");
        assert_eq!(Error::from(io).kind(), ErrorKind::Retry);
        let json = serde_json::from_str::<u32>("\"x\"").unwrap_err();
        assert_eq!(Error::from(json).kind(), ErrorKind::Invalid);
        let mp = rmp_serde::from_slice::<u32>(&[0xc0]).unwrap_err();
        assert_eq!(Error::from(mp).kind(), ErrorKind::Invalid);
        let v = rmpv::decode::read_value(&mut &[0x92u8][..]).unwrap_err();
        assert_eq!(Error::from(v).kind(), ErrorKind::Invalid);
        assert_eq!(Error::from("x").kind(), ErrorKind::Retry);
        assert_eq!(Error::from(String::from("x")).to_string(), "x");
    }

    #[test]
    fn question_mark_in_write() {
        fn write() -> Result<u32, WriteError> {
            Ok(serde_json::from_str("nope")?)
        }
        assert!(matches!(write(), Err(WriteError::InvalidBatch(_))));
        fn write_io() -> Result<(), WriteError> {
            Err(std::io::Error::other("x"))?
        }
        assert!(matches!(write_io(), Err(WriteError::Retry(_))));
        fn write_sdk() -> Result<(), WriteError> {
            Err(Error::fatal("no"))?
        }
        assert_eq!(write_sdk(), Err(WriteError::Fatal("no".into())));
    }
}

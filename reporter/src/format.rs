//! Record formats: how a record becomes the bytes pushed to Redis.
//! Encoding runs in the workers, never in `record()`.

use std::marker::PhantomData;

use pumphouse_wire::{encode_iam_into, encode_tyk_into, IamRecord, TykRecord};

use crate::EncodeError;

/// The list iam-authz-server writes and iam-pump reads.
pub const IAM_KEY: &str = "analytics-iam-system-analytics";
/// The list Tyk Gateway writes and tyk-pump reads.
pub const TYK_KEY: &str = "analytics-tyk-system-analytics";

/// A record format: the record type and its encoding. [`Iam`], [`Tyk`] and
/// [`Msgpack`] are provided; implement it for any other encoding.
pub trait Format: Send + Sync + 'static {
    /// What `record()` takes.
    type Record: Send + 'static;

    /// The key this format's producers write to, if it has one.
    fn default_key(&self) -> Option<&'static str> {
        None
    }

    /// Appends the encoding of `record` to `out`.
    fn encode(&self, record: &Self::Record, out: &mut Vec<u8>) -> Result<(), EncodeError>;
}

/// iam-authz-server records ([`IamRecord`]), byte for byte as it writes
/// them. Default key [`IAM_KEY`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Iam;

impl Format for Iam {
    type Record = IamRecord;
    fn default_key(&self) -> Option<&'static str> {
        Some(IAM_KEY)
    }
    fn encode(&self, record: &IamRecord, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_iam_into(record, out);
        Ok(())
    }
}

/// Tyk Gateway records ([`TykRecord`]), byte for byte as it writes them.
/// Default key [`TYK_KEY`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Tyk;

impl Format for Tyk {
    type Record = TykRecord;
    fn default_key(&self) -> Option<&'static str> {
        Some(TYK_KEY)
    }
    fn encode(&self, record: &TykRecord, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        encode_tyk_into(record, out);
        Ok(())
    }
}

/// Any `serde::Serialize` type as a MessagePack map keyed by field names
/// (`rmp_serde`'s named encoding, as the Go producers write structs). Has
/// no default key: set one with `.key(..)`. pumphouse reads these with
/// `format = "generic"`.
pub struct Msgpack<T>(PhantomData<fn(T)>);

impl<T> Msgpack<T> {
    pub fn new() -> Self {
        Msgpack(PhantomData)
    }
}

impl<T> Default for Msgpack<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> std::fmt::Debug for Msgpack<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msgpack")
    }
}

impl<T: serde::Serialize + Send + 'static> Format for Msgpack<T> {
    type Record = T;
    fn encode(&self, record: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        rmp_serde::encode::write_named(out, record).map_err(|e| EncodeError(Box::new(e)))
    }
}

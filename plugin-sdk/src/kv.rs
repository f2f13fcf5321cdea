//! Durable key-value state, kept by the host in the source's Redis under a
//! namespace of the pump's own: what a plugin needs to carry state across
//! batches and host restarts (aggregation windows, cursors).
//!
//! [`commit`] applies all its writes atomically, so a plugin can store its
//! new state together with a marker of the batch it just counted. If the
//! host dies before it acknowledges that batch, the batch comes again, and
//! the marker tells the plugin it was counted already.
//!
//! ```no_run
//! use pumphouse_sdk::kv;
//!
//! # fn run() -> Result<(), pumphouse_sdk::Error> {
//! let seen: u64 = kv::get("seen")?
//!     .map(|v| u64::from_le_bytes(v.try_into().unwrap_or_default()))
//!     .unwrap_or(0);
//! kv::commit(&[kv::Write::set("seen", (seen + 1).to_le_bytes().to_vec())])?;
//! # Ok(()) }
//! ```
//!
//! Failures are transient (Redis unreachable) and come back as
//! [`ErrorKind::Retry`](crate::ErrorKind::Retry): return them from `write`
//! and the host redelivers the batch. Compiled natively (unit tests), the
//! store is an in-process map per thread; see
//! [`testing::kv_value`](crate::testing::kv_value) and
//! [`testing::fail_kv`](crate::testing::fail_kv).

use std::time::Duration;

use crate::Error;

/// One change of a [`commit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key, 1 to 512 bytes.
    pub key: String,
    /// The new value; `None` deletes the key.
    pub value: Option<Vec<u8>>,
    /// Expire the key this long from now (whole seconds, at least one).
    pub ttl: Option<Duration>,
}

impl Write {
    /// Sets `key` to `value`, without expiry.
    pub fn set(key: impl Into<String>, value: Vec<u8>) -> Write {
        Write {
            key: key.into(),
            value: Some(value),
            ttl: None,
        }
    }

    /// Deletes `key`.
    pub fn delete(key: impl Into<String>) -> Write {
        Write {
            key: key.into(),
            value: None,
            ttl: None,
        }
    }

    /// Expires the key `ttl` after the commit.
    pub fn expire_after(mut self, ttl: Duration) -> Write {
        self.ttl = Some(ttl);
        self
    }
}

/// The value of `key`, if set.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, Error> {
    imp::get(key).map_err(Error::retry)
}

/// Applies every write atomically: all of them or none.
pub fn commit(writes: &[Write]) -> Result<(), Error> {
    imp::commit(writes).map_err(Error::retry)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::__bindings::pumphouse::plugin::kv as host;

    pub(super) fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
        host::get(key)
    }

    pub(super) fn commit(writes: &[super::Write]) -> Result<(), String> {
        let writes: Vec<host::Write> = writes
            .iter()
            .map(|w| host::Write {
                key: w.key.clone(),
                value: w.value.clone(),
                ttl_seconds: w
                    .ttl
                    .map(|t| u32::try_from(t.as_secs().max(1)).unwrap_or(u32::MAX)),
            })
            .collect();
        host::commit(&writes)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::capture;

    pub(super) fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
        capture::with(|c| match &c.kv_failure {
            Some(e) => Err(e.clone()),
            None => Ok(c.kv.get(key).cloned()),
        })
    }

    pub(super) fn commit(writes: &[super::Write]) -> Result<(), String> {
        capture::with(|c| {
            if let Some(e) = &c.kv_failure {
                return Err(e.clone());
            }
            for w in writes {
                match &w.value {
                    Some(v) => c.kv.insert(w.key.clone(), v.clone()),
                    None => c.kv.remove(&w.key),
                };
            }
            Ok(())
        })
    }
}

//! What list and stream sources share: the connection and settings, claim
//! numbering, and the table of claimed batches whose leases are renewed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Conn, SourceError};
use crate::config::Delivery;
use crate::telemetry;

/// Settings and connection common to both kinds of source; cheap to clone.
#[derive(Clone)]
pub(super) struct Core {
    pub conn: Conn,
    pub keys: Arc<[Arc<str>]>,
    pub delivery: Delivery,
    pub batch_size: usize,
    pub lease_ms: u64,
    /// This instance's name: batch key part, stream consumer name.
    pub instance: Arc<str>,
    counter: Arc<AtomicU64>,
    pub dead_letter_key: Arc<str>,
}

impl Core {
    pub fn new(
        conn: Conn,
        keys: Vec<String>,
        delivery: Delivery,
        batch_size: usize,
        lease_ms: u64,
        dead_letter_key: String,
    ) -> Core {
        Core {
            conn,
            keys: keys.into_iter().map(Arc::from).collect(),
            delivery,
            batch_size,
            lease_ms,
            instance: format!("{:016x}", rand::random::<u64>()).into(),
            counter: Arc::new(AtomicU64::new(0)),
            dead_letter_key: dead_letter_key.into(),
        }
    }

    /// A connection handle (the manager multiplexes; clones are cheap).
    pub fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// The next claim number of this instance.
    pub fn next_claim(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// Claimed and not yet acked, by claim token, with what renewing the lease
/// needs (`T`). Renewed in the background so slow pumps keep their leases.
pub(super) struct Inflight<T>(Arc<Mutex<HashMap<String, T>>>);

impl<T> Clone for Inflight<T> {
    fn clone(&self) -> Self {
        Inflight(self.0.clone())
    }
}

impl<T: Clone> Inflight<T> {
    pub fn new() -> Self {
        Inflight(Arc::new(Mutex::new(HashMap::new())))
    }

    pub fn track(&self, token: &str, what: T) {
        self.0
            .lock()
            .expect("inflight lock")
            .insert(token.to_string(), what);
    }

    pub fn untrack(&self, token: &str) {
        self.0.lock().expect("inflight lock").remove(token);
    }

    /// Forgets everything; returns how many were held.
    pub fn clear(&self) -> usize {
        let mut held = self.0.lock().expect("inflight lock");
        let n = held.len();
        held.clear();
        n
    }

    /// A copy, so renewal does not hold the lock across Redis calls.
    pub fn snapshot(&self) -> Vec<(String, T)> {
        self.0
            .lock()
            .expect("inflight lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Maps a Redis error to [`SourceError::Redis`], counting it.
pub(super) fn redis_err<'a>(
    op: &'static str,
    key: &'a str,
) -> impl FnOnce(redis::RedisError) -> SourceError + 'a {
    move |source| {
        metrics::counter!(telemetry::REDIS_ERRORS, "op" => op).increment(1);
        SourceError::Redis {
            op,
            key: key.to_string(),
            source,
        }
    }
}

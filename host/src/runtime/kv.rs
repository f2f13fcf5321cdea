//! The `kv` interface plugins import: durable state in the source's Redis,
//! one namespace per pump (`pumphouse:kv:{<pump>}:<key>`; the hash tag
//! keeps a pump's keys in one cluster slot so a commit is one transaction).
//!
//! `pumphouse plugins test` and `pumphouse check` have no Redis to spare:
//! they use an in-memory store with the same rules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bindings::sink::pumphouse::plugin::kv::{self, Write};
use super::PluginState;
use crate::source::redis::conn::{Conn, Endpoint};
use crate::telemetry;

/// Longest key a plugin may use, in bytes.
pub const MAX_KEY: usize = 512;
/// Largest value a plugin may store, in bytes.
pub const MAX_VALUE: usize = 16 * 1024 * 1024;
/// Most writes one `commit` may carry: a commit is one Redis transaction,
/// and Redis serves no other client while it runs, so a commit must stay
/// small enough to finish well inside [`KV_TIMEOUT`].
pub const MAX_COMMIT_WRITES: usize = 1000;
/// Most value bytes one `commit` may carry.
pub const MAX_COMMIT_BYTES: usize = 2 * MAX_VALUE;
/// How long one `get` or `commit` may wait for Redis before the plugin is
/// told to retry; the call still counts against the plugin's timeout.
const KV_TIMEOUT: Duration = Duration::from_secs(5);

/// Where plugin state lives; shared by every pump of a daemon.
pub enum KvStore {
    /// The source's Redis; connected on first use.
    Redis {
        /// Boxed: with TLS settings it dwarfs the memory variant.
        endpoint: Box<Endpoint>,
        conn: tokio::sync::OnceCell<Conn>,
    },
    /// In-process, for `plugins test` and `check`.
    Memory(Mutex<HashMap<String, Vec<u8>>>),
}

impl KvStore {
    /// A store in the Redis at `endpoint` (the source's); nothing
    /// connects yet.
    pub fn redis(endpoint: Endpoint) -> Arc<KvStore> {
        Arc::new(KvStore::Redis {
            endpoint: Box::new(endpoint),
            conn: tokio::sync::OnceCell::new(),
        })
    }

    /// An empty in-process store.
    pub fn memory() -> Arc<KvStore> {
        Arc::new(KvStore::Memory(Mutex::new(HashMap::new())))
    }

    async fn conn(&self) -> Result<Option<Conn>, String> {
        match self {
            KvStore::Redis { endpoint, conn } => conn
                .get_or_try_init(|| endpoint.manager())
                .await
                .map(|c| Some(c.clone()))
                .map_err(|e| format!("kv: cannot connect to redis: {e}")),
            KvStore::Memory(_) => Ok(None),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match self.conn().await? {
            Some(mut c) => redis::cmd("GET")
                .arg(key)
                .query_async(&mut c)
                .await
                .map_err(|e| format!("kv: GET failed: {e}")),
            None => Ok(self.memory_map(|m| m.get(key).cloned())),
        }
    }

    async fn commit(&self, writes: &[(String, Write)]) -> Result<(), String> {
        match self.conn().await? {
            Some(mut c) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for (key, w) in writes {
                    match (&w.value, w.ttl_seconds) {
                        (Some(v), Some(ttl)) => {
                            pipe.cmd("SET").arg(key).arg(v).arg("EX").arg(ttl.max(1))
                        }
                        (Some(v), None) => pipe.cmd("SET").arg(key).arg(v),
                        (None, _) => pipe.cmd("DEL").arg(key),
                    }
                    .ignore();
                }
                pipe.query_async::<()>(&mut c)
                    .await
                    .map_err(|e| format!("kv: commit failed: {e}"))
            }
            None => {
                // Expiry is not modelled in memory: `plugins test` runs are short.
                self.memory_map(|m| {
                    for (key, w) in writes {
                        match &w.value {
                            Some(v) => m.insert(key.clone(), v.clone()),
                            None => m.remove(key),
                        };
                    }
                });
                Ok(())
            }
        }
    }

    fn memory_map<R>(&self, f: impl FnOnce(&mut HashMap<String, Vec<u8>>) -> R) -> R {
        match self {
            KvStore::Memory(m) => f(&mut m.lock().unwrap_or_else(|p| p.into_inner())),
            KvStore::Redis { .. } => unreachable!("only called for the memory store"),
        }
    }
}

/// A pump's view of the store: its namespace.
#[derive(Clone)]
pub struct Kv {
    store: Arc<KvStore>,
    prefix: Arc<str>,
}

impl Kv {
    /// `pump`'s namespace in `store`.
    pub fn new(store: Arc<KvStore>, pump: &str) -> Kv {
        Kv {
            store,
            prefix: format!("pumphouse:kv:{{{pump}}}:").into(),
        }
    }

    fn key(&self, key: &str) -> Result<String, String> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(format!("kv: keys are 1 to {MAX_KEY} bytes"));
        }
        Ok(format!("{}{key}", self.prefix))
    }
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").field("prefix", &self.prefix).finish()
    }
}

impl PluginState {
    fn kv_failed(&self, op: &'static str, e: String) -> String {
        metrics::counter!(telemetry::PLUGIN_KV_ERRORS, "pump" => self.pump.to_string(), "op" => op)
            .increment(1);
        if self.logs.admit() {
            tracing::warn!(pump = &*self.pump, "{e}");
        }
        e
    }
}

impl kv::Host for PluginState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let key = self.kv.key(&key)?;
        match tokio::time::timeout(KV_TIMEOUT, self.kv.store.get(&key)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.kv_failed("get", e)),
            Err(_) => Err(self.kv_failed("get", format!("kv: GET timed out after {KV_TIMEOUT:?}"))),
        }
    }

    async fn commit(&mut self, writes: Vec<Write>) -> Result<(), String> {
        check_commit(&writes)?;
        let mut keyed = Vec::with_capacity(writes.len());
        for w in writes {
            if w.value.as_ref().is_some_and(|v| v.len() > MAX_VALUE) {
                return Err(format!(
                    "kv: value of {} is over the {MAX_VALUE}-byte limit",
                    w.key
                ));
            }
            keyed.push((self.kv.key(&w.key)?, w));
        }
        match tokio::time::timeout(KV_TIMEOUT, self.kv.store.commit(&keyed)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.kv_failed("commit", e)),
            // The transaction may have been applied: say so rather than
            // report a failure that might not be one.
            Err(_) => Err(self.kv_failed(
                "commit",
                format!("kv: commit outcome unknown: no answer from Redis within {KV_TIMEOUT:?}; it may have been applied"),
            )),
        }
    }
}

/// Refuses a commit over [`MAX_COMMIT_WRITES`] or [`MAX_COMMIT_BYTES`]
/// before it reaches Redis.
fn check_commit(writes: &[Write]) -> Result<(), String> {
    if writes.len() > MAX_COMMIT_WRITES {
        return Err(format!(
            "kv: a commit of {} writes is over the limit of {MAX_COMMIT_WRITES}; commit in smaller steps",
            writes.len()
        ));
    }
    let bytes: usize = writes
        .iter()
        .filter_map(|w| w.value.as_ref())
        .map(Vec::len)
        .sum();
    if bytes > MAX_COMMIT_BYTES {
        return Err(format!(
            "kv: a commit of {bytes} value bytes is over the limit of {MAX_COMMIT_BYTES}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_bounded_in_writes_and_bytes() {
        let w = |n: usize| Write {
            key: "k".into(),
            value: Some(vec![0; n]),
            ttl_seconds: None,
        };
        assert!(check_commit(&vec![w(1); MAX_COMMIT_WRITES]).is_ok());
        assert!(check_commit(&vec![w(1); MAX_COMMIT_WRITES + 1]).is_err());
        assert!(check_commit(&[w(MAX_VALUE), w(MAX_VALUE)]).is_ok());
        assert!(check_commit(&[w(MAX_VALUE), w(MAX_VALUE), w(1)]).is_err());
    }

    #[test]
    fn keys_are_namespaced_per_pump_and_bounded() {
        let kv = Kv::new(KvStore::memory(), "agg");
        assert_eq!(kv.key("state").unwrap(), "pumphouse:kv:{agg}:state");
        assert!(kv.key("").is_err());
        assert!(kv.key(&"k".repeat(MAX_KEY + 1)).is_err());
    }

    #[tokio::test]
    async fn memory_store_commits_and_deletes() {
        let store = KvStore::memory();
        let w = |k: &str, v: Option<&[u8]>| {
            (
                k.to_string(),
                Write {
                    key: k.to_string(),
                    value: v.map(|v| v.to_vec()),
                    ttl_seconds: None,
                },
            )
        };
        store
            .commit(&[w("a", Some(b"1")), w("b", Some(b"2"))])
            .await
            .unwrap();
        assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
        store.commit(&[w("a", None)]).await.unwrap();
        assert_eq!(store.get("a").await.unwrap(), None);
        assert_eq!(store.get("b").await.unwrap(), Some(b"2".to_vec()));
    }
}

//! The `kv` interface plugins import: durable state in the source's Redis,
//! one namespace per pump (`pumphouse:kv:{<pump>}:<key>`; the hash tag
//! keeps a pump's keys in one cluster slot so a commit is one transaction).
//!
//! Each pump's state is held to a quota (`sandbox.kv_max_bytes`,
//! `kv_max_keys`). The usage is kept in Redis itself, beside the keys, and
//! updated by the same Lua script that applies a commit ([`COMMIT`]):
//! several hosts may run one pump against one namespace, and keys expire
//! inside Redis, so no host's memory could know the usage, and recounting
//! the namespace at start would cost a scan of every key and still miss
//! the other hosts' commits. The script charges a commit O(writes) work,
//! plus forgetting at most [`MAX_COMMIT_WRITES`] keys that expired since
//! (as many as one commit can add, so expiries are forgotten as fast as
//! they can be made).
//!
//! `pumphouse plugins test` and `pumphouse check` have no Redis to spare:
//! they use an in-memory store with the same rules (expiry aside).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
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
/// What a key costs its pump's quota beyond its name and value: roughly
/// Redis's own entry for it plus the quota's bookkeeping of it, so that a
/// flood of tiny keys is bounded by bytes too.
pub const KEY_OVERHEAD: u64 = 64;

/// A pump's `kv` quota (`sandbox.kv_max_bytes`, `kv_max_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    /// Bytes charged over all keys: name, value and [`KEY_OVERHEAD`] each.
    pub max_bytes: u64,
    /// Keys.
    pub max_keys: u64,
}

impl Default for KvQuota {
    fn default() -> Self {
        KvQuota {
            max_bytes: crate::config::DEFAULT_KV_MAX_BYTES.as_u64(),
            max_keys: crate::config::DEFAULT_KV_MAX_KEYS,
        }
    }
}

/// What a key of `key_len` bytes holding `value_len` bytes is charged.
fn charge(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len) as u64 + KEY_OVERHEAD
}

/// A commit's result when Redis answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Committed {
    /// Applied; the namespace now holds this much.
    Applied,
    /// Refused whole, nothing written: the namespace would have held
    /// `bytes` in `keys`.
    OverQuota { bytes: u64, keys: u64 },
}

/// A quota is exceeded only by a commit that grows the state past it: a
/// pump over its quota (after the operator lowered it) can still delete
/// and shrink.
fn over_quota(quota: KvQuota, before: (u64, u64), after: (u64, u64)) -> bool {
    (after.0 > quota.max_bytes && after.0 > before.0)
        || (after.1 > quota.max_keys && after.1 > before.1)
}

/// Applies one commit of a pump's namespace atomically, within its quota.
/// KEYS: usage hash (`bytes`, `keys`), charges hash (key → bytes charged),
/// expiry set (key → deadline in ms, keys with a TTL only), then the key
/// of each write. ARGV: max bytes, max keys, overhead per key, most
/// expired keys to forget, then per write its TTL in seconds (0: none,
/// -1: delete) and its value. Returns {applied (1/0), bytes, keys}: the
/// usage after, or what it would have been.
///
/// Keys written before the quota existed are not charged until a commit
/// writes them. Forgotten expired keys are read by name rather than
/// through KEYS; they share the pump's hash tag, so on Redis Cluster they
/// live in the same slot as the declared keys.
static COMMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local usage, charges, expiry = KEYS[1], KEYS[2], KEYS[3]
local max_bytes, max_keys = tonumber(ARGV[1]), tonumber(ARGV[2])
local overhead, forget_at_most = tonumber(ARGV[3]), tonumber(ARGV[4])
local bytes = tonumber(redis.call('HGET', usage, 'bytes') or 0)
local keys = tonumber(redis.call('HGET', usage, 'keys') or 0)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function forget(k)
  local c = redis.call('HGET', charges, k)
  if c then
    bytes = bytes - tonumber(c)
    keys = keys - 1
    redis.call('HDEL', charges, k)
  end
  redis.call('ZREM', expiry, k)
end
-- Keys Redis expired (or someone deleted) since they were charged.
for _, k in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, forget_at_most)) do
  if redis.call('EXISTS', k) == 0 then forget(k) end
end
for i = 4, #KEYS do
  if redis.call('HEXISTS', charges, KEYS[i]) == 1 and redis.call('EXISTS', KEYS[i]) == 0 then
    forget(KEYS[i])
  end
end
-- What the namespace would hold; a key written twice counts its last write.
local nb, nk, seen = bytes, keys, {}
for i = 4, #KEYS do
  local k, j = KEYS[i], i - 3
  local c = seen[k]
  if c == nil then c = tonumber(redis.call('HGET', charges, k) or -1) end
  if c >= 0 then nb = nb - c; nk = nk - 1 end
  if tonumber(ARGV[2 * j + 3]) < 0 then
    seen[k] = -1
  else
    c = #k + #ARGV[2 * j + 4] + overhead
    nb = nb + c; nk = nk + 1; seen[k] = c
  end
end
redis.call('HSET', usage, 'bytes', bytes, 'keys', keys)
if (nb > max_bytes and nb > bytes) or (nk > max_keys and nk > keys) then
  return {0, nb, nk}
end
for i = 4, #KEYS do
  local k, j = KEYS[i], i - 3
  local ttl, v = tonumber(ARGV[2 * j + 3]), ARGV[2 * j + 4]
  if ttl < 0 then
    redis.call('DEL', k)
    redis.call('HDEL', charges, k)
    redis.call('ZREM', expiry, k)
  else
    if ttl > 0 then
      redis.call('SET', k, v, 'EX', ttl)
      redis.call('ZADD', expiry, now + ttl * 1000, k)
    else
      redis.call('SET', k, v)
      redis.call('ZREM', expiry, k)
    end
    redis.call('HSET', charges, k, #k + #v + overhead)
  end
end
redis.call('HSET', usage, 'bytes', nb, 'keys', nk)
return {1, nb, nk}
"#,
    )
});

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

    /// Applies `writes` (full key, write) of the namespace whose usage
    /// keys `meta` names, if the result stays within `quota`.
    async fn commit(
        &self,
        meta: &Meta,
        quota: KvQuota,
        writes: &[(String, Write)],
    ) -> Result<Committed, String> {
        match self.conn().await? {
            Some(mut c) => {
                let mut inv = COMMIT.key(&meta.usage);
                inv.key(&meta.charges)
                    .key(&meta.expiry)
                    .arg(quota.max_bytes)
                    .arg(quota.max_keys)
                    .arg(KEY_OVERHEAD)
                    .arg(MAX_COMMIT_WRITES);
                for (key, w) in writes {
                    inv.key(key);
                    match &w.value {
                        Some(v) => inv
                            .arg(w.ttl_seconds.map_or(0, |t| i64::from(t.max(1))))
                            .arg(v),
                        None => inv.arg(-1).arg(&b""[..]),
                    };
                }
                let (applied, bytes, keys): (i64, u64, u64) = inv
                    .invoke_async(&mut c)
                    .await
                    .map_err(|e| format!("kv: commit failed: {e}"))?;
                Ok(if applied == 1 {
                    Committed::Applied
                } else {
                    Committed::OverQuota { bytes, keys }
                })
            }
            None => {
                // Expiry is not modelled in memory: `plugins test` runs are short.
                Ok(self.memory_map(|m| {
                    let (mut bytes, mut keys): (u64, u64) = m
                        .iter()
                        .filter(|(k, _)| k.starts_with(&*meta.prefix))
                        .fold((0, 0), |(b, n), (k, v)| {
                            (b + charge(k.len(), v.len()), n + 1)
                        });
                    let before = (bytes, keys);
                    // Each touched key's last write decides what it holds.
                    let mut last: HashMap<&str, Option<usize>> = HashMap::new();
                    for (key, w) in writes {
                        last.insert(key, w.value.as_ref().map(Vec::len));
                    }
                    for (key, len) in &last {
                        if let Some(v) = m.get(*key) {
                            bytes = bytes.saturating_sub(charge(key.len(), v.len()));
                            keys = keys.saturating_sub(1);
                        }
                        if let Some(len) = len {
                            bytes += charge(key.len(), *len);
                            keys += 1;
                        }
                    }
                    if over_quota(quota, before, (bytes, keys)) {
                        return Committed::OverQuota { bytes, keys };
                    }
                    for (key, w) in writes {
                        match &w.value {
                            Some(v) => m.insert(key.clone(), v.clone()),
                            None => m.remove(key),
                        };
                    }
                    Committed::Applied
                }))
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

/// A namespace's key prefix and the Redis keys of its quota's
/// bookkeeping (outside the prefix, so no plugin key can name them).
struct Meta {
    prefix: Arc<str>,
    usage: String,
    charges: String,
    expiry: String,
}

/// A pump's view of the store: its namespace and its quota.
#[derive(Clone)]
pub struct Kv {
    store: Arc<KvStore>,
    meta: Arc<Meta>,
    quota: KvQuota,
}

impl Kv {
    /// `pump`'s namespace in `store`, held to `quota`.
    pub fn new(store: Arc<KvStore>, pump: &str, quota: KvQuota) -> Kv {
        Kv {
            store,
            meta: Arc::new(Meta {
                prefix: format!("pumphouse:kv:{{{pump}}}:").into(),
                usage: format!("pumphouse:kv-usage:{{{pump}}}"),
                charges: format!("pumphouse:kv-charges:{{{pump}}}"),
                expiry: format!("pumphouse:kv-expiry:{{{pump}}}"),
            }),
            quota,
        }
    }

    /// The same namespace and quota in `store`.
    pub fn in_store(&self, store: Arc<KvStore>) -> Kv {
        Kv {
            store,
            meta: self.meta.clone(),
            quota: self.quota,
        }
    }

    fn key(&self, key: &str) -> Result<String, String> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(format!("kv: keys are 1 to {MAX_KEY} bytes"));
        }
        Ok(format!("{}{key}", self.meta.prefix))
    }
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv")
            .field("prefix", &self.meta.prefix)
            .field("quota", &self.quota)
            .finish()
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

    /// Counts a commit the sandbox refused (`capability` `kv_commit`: over
    /// the per-commit cap; `kv_quota`: over the pump's quota) and logs it
    /// within the pump's budget.
    fn kv_refused(&self, capability: &'static str, e: String) -> String {
        metrics::counter!(telemetry::SANDBOX_DENIALS, "pump" => self.pump.to_string(), "capability" => capability)
            .increment(1);
        if self.logs.admit() {
            tracing::warn!(pump = &*self.pump, capability, "{e}");
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
        if let Err(e) = check_commit(&writes) {
            return Err(self.kv_refused("kv_commit", e));
        }
        let mut keyed = Vec::with_capacity(writes.len());
        for w in writes {
            if w.value.as_ref().is_some_and(|v| v.len() > MAX_VALUE) {
                let e = format!("kv: value of {} is over the {MAX_VALUE}-byte limit", w.key);
                return Err(self.kv_refused("kv_commit", e));
            }
            keyed.push((self.kv.key(&w.key)?, w));
        }
        let (meta, quota) = (&self.kv.meta, self.kv.quota);
        match tokio::time::timeout(KV_TIMEOUT, self.kv.store.commit(meta, quota, &keyed)).await {
            Ok(Ok(Committed::Applied)) => Ok(()),
            Ok(Ok(Committed::OverQuota { bytes, keys })) => {
                let e = format!(
                    "kv: commit refused, nothing written: the pump's state would hold {bytes} bytes in {keys} keys, over its quota of {} bytes and {} keys (sandbox.kv_max_bytes, kv_max_keys); delete or expire keys",
                    quota.max_bytes, quota.max_keys
                );
                Err(self.kv_refused("kv_quota", e))
            }
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
        let kv = Kv::new(KvStore::memory(), "agg", KvQuota::default());
        assert_eq!(kv.key("state").unwrap(), "pumphouse:kv:{agg}:state");
        assert!(kv.key("").is_err());
        assert!(kv.key(&"k".repeat(MAX_KEY + 1)).is_err());
    }

    fn w(k: &str, v: Option<&[u8]>) -> (String, Write) {
        (
            k.to_string(),
            Write {
                key: k.to_string(),
                value: v.map(|v| v.to_vec()),
                ttl_seconds: None,
            },
        )
    }

    fn meta(pump: &str) -> Arc<Meta> {
        Kv::new(KvStore::memory(), pump, KvQuota::default()).meta
    }

    #[tokio::test]
    async fn memory_store_commits_and_deletes() {
        let store = KvStore::memory();
        let (m, q) = (meta("p"), KvQuota::default());
        let (a, b) = (format!("{}a", m.prefix), format!("{}b", m.prefix));
        let applied = store
            .commit(&m, q, &[w(&a, Some(b"1")), w(&b, Some(b"2"))])
            .await
            .unwrap();
        assert_eq!(applied, Committed::Applied);
        assert_eq!(store.get(&a).await.unwrap(), Some(b"1".to_vec()));
        let deleted = store.commit(&m, q, &[w(&a, None)]).await.unwrap();
        assert_eq!(deleted, Committed::Applied);
        assert_eq!(store.get(&a).await.unwrap(), None);
        assert_eq!(store.get(&b).await.unwrap(), Some(b"2".to_vec()));
    }

    #[tokio::test]
    async fn a_commit_past_the_quota_is_refused_whole() {
        let store = KvStore::memory();
        let m = meta("p");
        let k = |n: &str| format!("{}{n}", m.prefix);
        // Room for two keys of 10-byte values, by bytes; three keys at most.
        let per_key = charge(k("a").len(), 10);
        let q = KvQuota {
            max_bytes: 2 * per_key,
            max_keys: 3,
        };
        let ten = Some(&[0u8; 10][..]);
        let ok = store
            .commit(&m, q, &[w(&k("a"), ten), w(&k("b"), ten)])
            .await;
        assert_eq!(ok.unwrap(), Committed::Applied);
        let refused = store.commit(&m, q, &[w(&k("c"), ten)]).await.unwrap();
        assert_eq!(
            refused,
            Committed::OverQuota {
                bytes: 3 * per_key,
                keys: 3
            }
        );
        assert_eq!(store.get(&k("c")).await.unwrap(), None, "nothing written");
        // Overwriting a key does not grow the state; replacing one key by
        // another in one commit neither.
        let same = [w(&k("a"), ten), w(&k("b"), None), w(&k("c"), ten)];
        assert_eq!(
            store.commit(&m, q, &same).await.unwrap(),
            Committed::Applied
        );
        assert_eq!(store.get(&k("b")).await.unwrap(), None);
        // Another pump's namespace has a quota of its own.
        let other = meta("q");
        let theirs = format!("{}a", other.prefix);
        let ok = store.commit(&other, q, &[w(&theirs, ten)]).await.unwrap();
        assert_eq!(ok, Committed::Applied);
    }

    #[test]
    fn a_state_over_its_quota_may_still_shrink() {
        let q = KvQuota {
            max_bytes: 100,
            max_keys: 2,
        };
        assert!(!over_quota(q, (500, 5), (400, 4)), "shrinking is allowed");
        assert!(over_quota(q, (500, 5), (501, 5)), "growing bytes is not");
        assert!(over_quota(q, (50, 2), (60, 3)), "a third key is not");
        assert!(!over_quota(q, (50, 1), (100, 2)), "the quota itself is");
    }
}

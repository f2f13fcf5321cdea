//! The Redis list source: leased claims (at-least-once) or destructive
//! pops (at-most-once), acks, lease renewal and takeover, dead letters.
//!
//! Key layout for a source list `K` (hash-tagged so a source's keys share
//! one Cluster slot):
//! - `{K}:pumphouse:leases`: sorted set of claimed batch keys, scored by
//!   lease deadline (ms, Redis clock);
//! - `{K}:pumphouse:batch:<instance>:<n>`: one list per claimed batch.

mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use crate::config::{Delivery, SourceConfig};
use crate::telemetry;

/// A Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("invalid redis_url {url:?}: {source}")]
    Url {
        url: String,
        source: redis::RedisError,
    },
    #[error("redis {op} on {key}: {source}")]
    Redis {
        op: &'static str,
        key: String,
        source: redis::RedisError,
    },
}

/// Records taken from one source list in one claim.
#[derive(Debug)]
pub struct RawBatch {
    /// The source list.
    pub key: Arc<str>,
    /// The batch list holding the claim; `None` for at-most-once pops.
    pub claim: Option<String>,
    pub items: Vec<Vec<u8>>,
    /// Taken over from an expired lease rather than claimed fresh.
    pub reclaimed: bool,
}

/// Handle to the source; cheap to clone.
#[derive(Clone)]
pub struct RedisSource {
    conn: ConnectionManager,
    keys: Arc<[Arc<str>]>,
    delivery: Delivery,
    batch_size: usize,
    lease_ms: u64,
    instance: Arc<str>,
    counter: Arc<AtomicU64>,
    /// Claimed and not yet acked: batch key → lease set. Renewed in the
    /// background so slow pumps keep their leases.
    inflight: Arc<Mutex<HashMap<String, String>>>,
    dead_letter_key: Arc<str>,
}

/// The hash tag Redis Cluster would use for `key`: the text inside its first
/// `{…}` if it has a non-empty one, else the whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The lease set of a source list.
pub fn lease_key(key: &str) -> String {
    format!("{{{}}}:pumphouse:leases", hash_tag(key))
}

fn redis_err<'a>(
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

impl RedisSource {
    /// Connects, retrying with backoff until Redis answers or `give_up`
    /// elapses. Later connection losses are healed by the connection manager.
    pub async fn connect(
        cfg: &SourceConfig,
        give_up: Duration,
    ) -> Result<RedisSource, SourceError> {
        let client =
            redis::Client::open(cfg.redis_url.as_str()).map_err(|source| SourceError::Url {
                url: cfg.redis_url.clone(),
                source,
            })?;
        let mgr_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let start = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        let conn = loop {
            match ConnectionManager::new_with_config(client.clone(), mgr_cfg.clone()).await {
                Ok(c) => break c,
                Err(e) if start.elapsed() < give_up => {
                    tracing::warn!(
                        "redis at {} not reachable yet ({e}); retrying in {delay:?}",
                        redacted(&cfg.redis_url)
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(source) => return Err(redis_err("connect", &cfg.redis_url)(source)),
            }
        };
        let instance = format!("{:016x}", rand::random::<u64>());
        Ok(RedisSource {
            conn,
            keys: cfg.keys().into_iter().map(Arc::from).collect(),
            delivery: cfg.delivery,
            batch_size: cfg.batch_size,
            lease_ms: cfg.lease.as_millis() as u64,
            instance: instance.into(),
            counter: Arc::new(AtomicU64::new(0)),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            dead_letter_key: cfg.dead_letter_key().into(),
        })
    }

    /// The source lists.
    pub fn keys(&self) -> &[Arc<str>] {
        &self.keys
    }

    /// Takes the next batch from `key`, or `None` when it is empty.
    pub async fn claim(&self, key: &Arc<str>) -> Result<Option<RawBatch>, SourceError> {
        let mut conn = self.conn.clone();
        let (items, claim) = match self.delivery {
            Delivery::AtMostOnce => {
                let v: Option<Vec<Vec<u8>>> = redis::cmd("LPOP")
                    .arg(&**key)
                    .arg(self.batch_size)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err("LPOP", key))?;
                (v.unwrap_or_default(), None)
            }
            Delivery::AtLeastOnce => {
                let n = self.counter.fetch_add(1, Ordering::Relaxed);
                let batch_key = format!(
                    "{{{}}}:pumphouse:batch:{}:{n}",
                    hash_tag(key),
                    self.instance
                );
                let leases = lease_key(key);
                // Registered before the claim so a renewal can never miss it.
                self.track(&batch_key, &leases);
                let items: Result<Vec<Vec<u8>>, _> = scripts::CLAIM
                    .key(&**key)
                    .key(&leases)
                    .key(&batch_key)
                    .arg(self.batch_size)
                    .arg(self.lease_ms)
                    .invoke_async(&mut conn)
                    .await;
                match items {
                    Ok(items) if !items.is_empty() => (items, Some(batch_key)),
                    Ok(items) => {
                        self.untrack(&batch_key);
                        (items, None)
                    }
                    Err(e) => {
                        // If the script ran but the reply was lost, the batch
                        // exists in Redis and its lease expiry re-delivers it.
                        self.untrack(&batch_key);
                        return Err(redis_err("claim", key)(e));
                    }
                }
            }
        };
        if items.is_empty() {
            return Ok(None);
        }
        metrics::counter!(telemetry::RECORDS_CLAIMED).increment(items.len() as u64);
        Ok(Some(RawBatch {
            key: key.clone(),
            claim,
            items,
            reclaimed: false,
        }))
    }

    /// Takes over batches of `key` whose lease expired (their owner died or
    /// lost Redis for longer than the lease).
    pub async fn take_expired(
        &self,
        key: &Arc<str>,
        max: usize,
    ) -> Result<Vec<RawBatch>, SourceError> {
        if self.delivery == Delivery::AtMostOnce {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let leases = lease_key(key);
        let expired: Vec<String> = scripts::TAKE_EXPIRED
            .key(&leases)
            .arg(self.lease_ms)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err("take-expired", key))?;
        let mut out = Vec::with_capacity(expired.len());
        for batch_key in expired {
            self.track(&batch_key, &leases);
            let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(&batch_key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("LRANGE", &batch_key))?;
            if items.is_empty() {
                // Nothing left to deliver: drop the stale lease.
                self.ack(key, &batch_key).await?;
                continue;
            }
            tracing::warn!(key = &**key, batch = %batch_key, records = items.len(), "took over a batch whose lease expired");
            metrics::counter!(telemetry::BATCHES_RECLAIMED).increment(1);
            metrics::counter!(telemetry::RECORDS_CLAIMED).increment(items.len() as u64);
            out.push(RawBatch {
                key: key.clone(),
                claim: Some(batch_key),
                items,
                reclaimed: true,
            });
        }
        Ok(out)
    }

    /// Acknowledges a claimed batch. Idempotent.
    pub async fn ack(&self, key: &str, batch_key: &str) -> Result<(), SourceError> {
        let mut conn = self.conn.clone();
        let _: i64 = scripts::ACK
            .key(lease_key(key))
            .key(batch_key)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err("ack", batch_key))?;
        self.untrack(batch_key);
        Ok(())
    }

    /// Forgets a claimed batch without acking it (shutdown gave up on it):
    /// its lease is no longer renewed, so it is re-delivered after expiry.
    pub fn release(&self, batch_key: &str) {
        self.untrack(batch_key);
    }

    /// Forgets every held batch (shutdown gave up); returns how many.
    pub fn release_all(&self) -> usize {
        let mut held = self.inflight.lock().expect("inflight lock");
        let n = held.len();
        held.clear();
        n
    }

    fn track(&self, batch_key: &str, leases: &str) {
        self.inflight
            .lock()
            .expect("inflight lock")
            .insert(batch_key.to_string(), leases.to_string());
    }

    fn untrack(&self, batch_key: &str) {
        self.inflight
            .lock()
            .expect("inflight lock")
            .remove(batch_key);
    }

    /// Extends the leases of every batch this instance holds.
    pub async fn renew_leases(&self) -> Result<(), SourceError> {
        let mut by_set: HashMap<String, Vec<String>> = HashMap::new();
        for (batch, set) in self.inflight.lock().expect("inflight lock").iter() {
            by_set.entry(set.clone()).or_default().push(batch.clone());
        }
        let mut conn = self.conn.clone();
        for (set, batches) in by_set {
            for chunk in batches.chunks(500) {
                let mut inv = scripts::RENEW.key(&set);
                inv.arg(self.lease_ms);
                for b in chunk {
                    inv.arg(b);
                }
                let _: i64 = inv
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_err("renew", &set))?;
            }
        }
        Ok(())
    }

    /// Records waiting in each source list.
    pub async fn backlog(&self) -> Result<Vec<(Arc<str>, u64)>, SourceError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for k in self.keys.iter() {
            pipe.cmd("LLEN").arg(&**k);
        }
        let lens: Vec<u64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(redis_err("LLEN", &self.keys[0]))?;
        Ok(self.keys.iter().cloned().zip(lens).collect())
    }

    /// True when Redis answers `PING`.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn.clone();
        matches!(
            redis::cmd("PING").query_async::<Value>(&mut conn).await,
            Ok(Value::SimpleString(_)) | Ok(Value::Okay)
        )
    }

    /// Appends entries (JSON documents) to the dead-letter list.
    pub async fn dead_letter(&self, entries: &[Vec<u8>]) -> Result<(), SourceError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(&*self.dead_letter_key);
        for e in entries {
            cmd.arg(e.as_slice());
        }
        let _: i64 = cmd
            .query_async(&mut conn)
            .await
            .map_err(redis_err("RPUSH", &self.dead_letter_key))?;
        Ok(())
    }
}

/// The URL with any password masked, for logs.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***@{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

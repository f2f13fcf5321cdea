//! The Redis source: lists with leased claims (at-least-once) or
//! destructive pops (at-most-once), or streams read through a consumer
//! group; acks, lease renewal and takeover, dead letters.
//!
//! Key layout for a source list `K` (hash-tagged so a source's keys share
//! one Cluster slot):
//! - `{K}:pumphouse:leases`: sorted set of claimed batch keys, scored by
//!   lease deadline (ms, Redis clock);
//! - `{K}:pumphouse:batch:<instance>:<n>`: one list per claimed batch.
//!
//! A stream source keeps no keys of its own: the consumer group's pending
//! entries list is the lease table ([`stream`]).

mod scripts;
mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Value;

use crate::config::{Delivery, SourceConfig, SourceKind};
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

/// What acknowledges a claimed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// List source: the batch list holding the records.
    List(String),
    /// Stream source: the entry ids read, tracked under `token`.
    Stream { token: String, ids: Vec<String> },
}

impl Claim {
    /// The key this claim is tracked under for lease renewal.
    fn token(&self) -> &str {
        match self {
            Claim::List(k) => k,
            Claim::Stream { token, .. } => token,
        }
    }
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::List(k) => f.write_str(k),
            Claim::Stream { token, ids } => {
                write!(f, "stream claim {token} ({} entries)", ids.len())
            }
        }
    }
}

/// Records taken from one source key in one claim.
#[derive(Debug)]
pub struct RawBatch {
    /// The source key.
    pub key: Arc<str>,
    /// What acknowledges it; `None` for at-most-once pops.
    pub claim: Option<Claim>,
    pub items: Vec<Vec<u8>>,
    /// Records the source refuses to hand to pumps (a stream entry without
    /// the record field, a poison entry past `max_deliveries`), with the
    /// reason; acked with the claim after they are dead-lettered.
    pub rejected: Vec<(Vec<u8>, String)>,
    /// Taken over from an expired lease rather than claimed fresh.
    pub reclaimed: bool,
}

/// What a claimed batch's renewal needs.
#[derive(Debug, Clone)]
enum Tracked {
    /// A list batch: its lease set.
    Lease(String),
    /// Stream entries: idle time is reset with `XCLAIM … JUSTID`.
    Stream { key: Arc<str>, ids: Vec<String> },
}

/// How the source keys are read.
#[derive(Debug, Clone)]
enum Mode {
    List,
    Stream {
        group: Arc<str>,
        field: Arc<str>,
        max_deliveries: u32,
    },
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
    /// Claimed and not yet acked, by claim token. Renewed in the background
    /// so slow pumps keep their leases.
    inflight: Arc<Mutex<HashMap<String, Tracked>>>,
    dead_letter_key: Arc<str>,
    mode: Mode,
    /// False once Redis refused the `SORT … STORE` claim (an ACL without
    /// `@dangerous`, say): claims then use the Lua script.
    sort_claim: Arc<AtomicBool>,
}

/// The field holding the JSON document in a dead-letter stream entry.
pub const DEAD_LETTER_FIELD: &str = "entry";

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
        let mode = match &cfg.kind {
            SourceKind::List => Mode::List,
            SourceKind::Stream(s) => Mode::Stream {
                group: s.group.as_str().into(),
                field: s.field.as_str().into(),
                max_deliveries: s.max_deliveries,
            },
        };
        let source = RedisSource {
            conn,
            keys: cfg.keys().into_iter().map(Arc::from).collect(),
            delivery: cfg.delivery,
            batch_size: cfg.batch_size,
            lease_ms: cfg.lease.as_millis() as u64,
            instance: instance.into(),
            counter: Arc::new(AtomicU64::new(0)),
            inflight: Arc::new(Mutex::new(HashMap::new())),
            dead_letter_key: cfg.dead_letter_key().into(),
            mode,
            sort_claim: Arc::new(AtomicBool::new(true)),
        };
        if let Mode::Stream { .. } = source.mode {
            for key in source.keys.iter() {
                source.ensure_group(key).await?;
            }
        }
        Ok(source)
    }

    /// This instance's name (its stream consumer name).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The source lists.
    pub fn keys(&self) -> &[Arc<str>] {
        &self.keys
    }

    /// Whether `key` holds no records, by one `LLEN`: an idle poll then
    /// costs Redis and the host one small command instead of a claim's
    /// transaction. Only a hint, for lists claimed at least once; `false`
    /// in the other modes, whose claim is one command already.
    pub async fn looks_empty(&self, key: &str) -> Result<bool, SourceError> {
        if !matches!(self.mode, Mode::List) || self.delivery != Delivery::AtLeastOnce {
            return Ok(false);
        }
        let n: u64 = redis::cmd("LLEN")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_err("LLEN", key))?;
        Ok(n == 0)
    }

    /// Takes the next batch from `key`, or `None` when it is empty.
    pub async fn claim(&self, key: &Arc<str>) -> Result<Option<RawBatch>, SourceError> {
        if let Mode::Stream { .. } = self.mode {
            return self.stream_claim(key).await;
        }
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
                self.track(&batch_key, Tracked::Lease(leases.clone()));
                let items = self.claim_into(&mut conn, key, &leases, &batch_key).await;
                match items {
                    Ok(items) if !items.is_empty() => (items, Some(Claim::List(batch_key))),
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
            rejected: Vec::new(),
            reclaimed: false,
        }))
    }

    /// Moves up to `batch_size` records from the head of `key` into
    /// `batch_key`, leases it, and returns the records.
    ///
    /// One `MULTI`: `SORT key BY nosort LIMIT 0 n STORE batch_key` copies the
    /// head of the list in list order (no sorting), `LTRIM` drops it from the
    /// source, a small script leases the batch on Redis's clock, and
    /// `LRANGE` returns it. It is as atomic as the Lua claim ([`scripts::CLAIM`])
    /// but costs Redis about 40 % less per record, because the records never
    /// become Lua strings (`INFO commandstats`, 1000 × 336-byte iam records:
    /// ~455 µs per `EXEC` against ~760 µs per `EVALSHA`). Redis is the
    /// bottleneck of a drain, so this is throughput.
    async fn claim_into(
        &self,
        conn: &mut ConnectionManager,
        key: &str,
        leases: &str,
        batch_key: &str,
    ) -> Result<Vec<Vec<u8>>, redis::RedisError> {
        if self.sort_claim.load(Ordering::Relaxed) {
            let n = self.batch_size;
            let r: Result<(Vec<Vec<u8>>,), _> = redis::pipe()
                .atomic()
                .cmd("SORT")
                .arg(key)
                .arg("BY")
                .arg("nosort")
                .arg("LIMIT")
                .arg(0)
                .arg(n)
                .arg("STORE")
                .arg(batch_key)
                .ignore()
                .cmd("LTRIM")
                .arg(key)
                .arg(n)
                .arg(-1)
                .ignore()
                .cmd("EVAL")
                .arg(scripts::LEASE_IF_CLAIMED)
                .arg(2)
                .arg(leases)
                .arg(batch_key)
                .arg(self.lease_ms)
                .ignore()
                .cmd("LRANGE")
                .arg(batch_key)
                .arg(0)
                .arg(-1)
                .query_async(conn)
                .await;
            match r {
                Ok((items,)) => return Ok(items),
                // A refused command aborts the whole transaction (EXECABORT)
                // or fails inside it: nothing was taken. Connection errors
                // are just errors.
                Err(e) if e.kind() != redis::ErrorKind::Io && !e.is_timeout() => {
                    tracing::warn!(
                        key,
                        "redis refused the SORT claim ({e}); using the Lua claim from now on"
                    );
                    self.sort_claim.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        scripts::CLAIM
            .key(key)
            .key(leases)
            .key(batch_key)
            .arg(self.batch_size)
            .arg(self.lease_ms)
            .invoke_async(conn)
            .await
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
        if let Mode::Stream { .. } = self.mode {
            return self.stream_take_expired(key, max).await;
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
            self.track(&batch_key, Tracked::Lease(leases.clone()));
            let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(&batch_key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("LRANGE", &batch_key))?;
            let claim = Claim::List(batch_key.clone());
            if items.is_empty() {
                // Nothing left to deliver: drop the stale lease.
                self.ack(key, &claim).await?;
                continue;
            }
            tracing::warn!(key = &**key, batch = %batch_key, records = items.len(), "took over a batch whose lease expired");
            metrics::counter!(telemetry::BATCHES_RECLAIMED).increment(1);
            metrics::counter!(telemetry::RECORDS_CLAIMED).increment(items.len() as u64);
            out.push(RawBatch {
                key: key.clone(),
                claim: Some(claim),
                items,
                rejected: Vec::new(),
                reclaimed: true,
            });
        }
        Ok(out)
    }

    /// Acknowledges a claimed batch. Idempotent.
    pub async fn ack(&self, key: &str, claim: &Claim) -> Result<(), SourceError> {
        let mut conn = self.conn.clone();
        match claim {
            Claim::List(batch_key) => {
                let _: i64 = scripts::ACK
                    .key(lease_key(key))
                    .key(batch_key)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(redis_err("ack", batch_key))?;
            }
            Claim::Stream { ids, .. } => self.stream_ack(key, ids).await?,
        }
        self.untrack(claim.token());
        Ok(())
    }

    /// Forgets a claimed batch without acking it (shutdown gave up on it):
    /// its lease is no longer renewed, so it is re-delivered after expiry.
    pub fn release(&self, claim: &Claim) {
        self.untrack(claim.token());
    }

    /// Forgets every held batch (shutdown gave up); returns how many.
    pub fn release_all(&self) -> usize {
        let mut held = self.inflight.lock().expect("inflight lock");
        let n = held.len();
        held.clear();
        n
    }

    fn track(&self, token: &str, what: Tracked) {
        self.inflight
            .lock()
            .expect("inflight lock")
            .insert(token.to_string(), what);
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
        let mut entries: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        for (token, what) in self.inflight.lock().expect("inflight lock").iter() {
            match what {
                Tracked::Lease(set) => by_set.entry(set.clone()).or_default().push(token.clone()),
                Tracked::Stream { key, ids } => entries
                    .entry(key.clone())
                    .or_default()
                    .extend(ids.iter().cloned()),
            }
        }
        for (key, ids) in entries {
            self.stream_renew(&key, &ids).await?;
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

    /// Records waiting in each source key.
    pub async fn backlog(&self) -> Result<Vec<(Arc<str>, u64)>, SourceError> {
        if let Mode::Stream { .. } = self.mode {
            return self.stream_backlog().await;
        }
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

    /// Appends entries (JSON documents) to the dead-letter key: a list for
    /// list sources, a stream (field `entry`) for stream sources.
    pub async fn dead_letter(&self, entries: &[Vec<u8>]) -> Result<(), SourceError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        if let Mode::Stream { .. } = self.mode {
            let mut pipe = redis::pipe();
            for e in entries {
                pipe.cmd("XADD")
                    .arg(&*self.dead_letter_key)
                    .arg("*")
                    .arg(DEAD_LETTER_FIELD)
                    .arg(e.as_slice())
                    .ignore();
            }
            let () = pipe
                .query_async(&mut conn)
                .await
                .map_err(redis_err("XADD", &self.dead_letter_key))?;
            return Ok(());
        }
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

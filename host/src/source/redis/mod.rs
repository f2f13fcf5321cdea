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
//!
//! [`RedisSource`] picks the kind once, at connect; each kind is its own
//! type ([`ListSource`], [`StreamSource`]) over a shared core
//! (`shared`). Every connection to Redis is made by [`conn`].

mod announcements;
pub mod conn;
mod list;
pub mod probe;
mod scripts;
mod shared;
mod stream;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

pub use conn::{cause, redacted, Conn, ConnError};
pub use list::ListSource;
pub use stream::StreamSource;

use crate::config::{SourceConfig, SourceKind};
use shared::{redis_err, Core};

/// A Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("redis {op} on {key}: {}", conn::cause(.source))]
    Redis {
        op: &'static str,
        key: String,
        source: redis::RedisError,
    },
    #[error("the parts of a dead-letter entry for {key} were gone before it could be stored")]
    PartsLost { key: String },
}

/// What acknowledges a claimed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// List source: the batch list holding the records.
    List(String),
    /// Stream source: the entry ids read, tracked under `token`.
    Stream { token: String, ids: Vec<String> },
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

/// Handle to the source; cheap to clone. The kind is chosen once, at
/// connect, and each operation dispatches to it.
#[derive(Clone)]
pub enum RedisSource {
    List(ListSource),
    Stream(StreamSource),
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

impl RedisSource {
    /// Connects, retrying with backoff until Redis answers or `give_up`
    /// elapses; `on_retry` hears why each attempt failed. Later connection
    /// losses are healed by the connection manager. A stream source
    /// creates its consumer groups.
    pub async fn connect(
        cfg: &SourceConfig,
        give_up: Duration,
        on_retry: &(dyn Fn(&str) + Send + Sync),
    ) -> Result<RedisSource, SourceError> {
        let conn = conn::Endpoint::for_source(cfg)?
            .manager_retrying(give_up, on_retry)
            .await
            .inspect_err(|_| {
                metrics::counter!(crate::telemetry::REDIS_ERRORS, "op" => "connect").increment(1)
            })?;
        let core = Core::new(
            conn,
            cfg.keys(),
            cfg.delivery,
            cfg.batch_size,
            cfg.lease.as_millis() as u64,
            cfg.dead_letter_key(),
        );
        // The only place that reads the kind-specific settings.
        Ok(match &cfg.kind {
            SourceKind::List => RedisSource::List(ListSource::new(core)),
            SourceKind::Stream(o) => {
                let s = StreamSource::new(core, &o.group, &o.field, o.max_deliveries);
                for key in s.core.keys.iter() {
                    s.ensure_group(key).await?;
                }
                RedisSource::Stream(s)
            }
        })
    }

    fn core(&self) -> &Core {
        match self {
            RedisSource::List(s) => &s.core,
            RedisSource::Stream(s) => &s.core,
        }
    }

    /// This instance's name (its stream consumer name).
    pub fn instance(&self) -> &str {
        &self.core().instance
    }

    /// The source keys.
    pub fn keys(&self) -> &[Arc<str>] {
        &self.core().keys
    }

    /// Whether `key` holds no records: a cheap hint for idle polls, only
    /// for lists claimed at least once (see [`ListSource::looks_empty`]);
    /// `false` otherwise.
    pub async fn looks_empty(&self, key: &str) -> Result<bool, SourceError> {
        match self {
            RedisSource::List(s) => s.looks_empty(key).await,
            RedisSource::Stream(_) => Ok(false),
        }
    }

    /// Takes the next batch from `key`, or `None` when it is empty.
    pub async fn claim(&self, key: &Arc<str>) -> Result<Option<RawBatch>, SourceError> {
        match self {
            RedisSource::List(s) => s.claim(key).await,
            RedisSource::Stream(s) => s.claim(key).await,
        }
    }

    /// Takes over batches of `key` whose lease expired (their owner died or
    /// lost Redis for longer than the lease); none for at-most-once.
    pub async fn take_expired(
        &self,
        key: &Arc<str>,
        max: usize,
    ) -> Result<Vec<RawBatch>, SourceError> {
        if self.core().delivery == crate::config::Delivery::AtMostOnce {
            return Ok(Vec::new());
        }
        match self {
            RedisSource::List(s) => s.take_expired(key, max).await,
            RedisSource::Stream(s) => s.take_expired(key, max).await,
        }
    }

    /// Acknowledges a claimed batch. Idempotent.
    pub async fn ack(&self, key: &str, claim: &Claim) -> Result<(), SourceError> {
        match (self, claim) {
            (RedisSource::List(s), Claim::List(batch_key)) => s.ack(key, batch_key).await,
            (RedisSource::Stream(s), Claim::Stream { token, ids }) => s.ack(key, token, ids).await,
            _ => unreachable!("claim {claim} from another kind of source"),
        }
    }

    /// Forgets a claimed batch without acking it (shutdown gave up on it):
    /// its lease is no longer renewed, so it is re-delivered after expiry.
    pub fn release(&self, claim: &Claim) {
        match (self, claim) {
            (RedisSource::List(s), Claim::List(batch_key)) => s.release(batch_key),
            (RedisSource::Stream(s), Claim::Stream { token, .. }) => s.release(token),
            _ => unreachable!("claim {claim} from another kind of source"),
        }
    }

    /// Forgets every held batch (shutdown gave up); returns how many.
    pub fn release_all(&self) -> usize {
        match self {
            RedisSource::List(s) => s.release_all(),
            RedisSource::Stream(s) => s.release_all(),
        }
    }

    /// Extends the leases of every batch this instance holds.
    pub async fn renew_leases(&self) -> Result<(), SourceError> {
        match self {
            RedisSource::List(s) => s.renew_leases().await,
            RedisSource::Stream(s) => s.renew_leases().await,
        }
    }

    /// Records waiting in each source key.
    pub async fn backlog(&self) -> Result<Vec<(Arc<str>, u64)>, SourceError> {
        match self {
            RedisSource::List(s) => s.backlog().await,
            RedisSource::Stream(s) => s.backlog().await,
        }
    }

    /// True when Redis answers `PING`.
    pub async fn ping(&self) -> bool {
        conn::ping(&mut self.core().conn()).await
    }

    /// The command appending entries (JSON documents) to the dead-letter
    /// key: a list for list sources, a stream (field `entry`) for stream
    /// sources. Made once and sent until Redis takes it, so a retry does
    /// not copy the entries again.
    pub fn dead_letter_cmd(
        &self,
        entries: impl IntoIterator<Item = impl redis::ToRedisArgs>,
    ) -> redis::Pipeline {
        match self {
            RedisSource::List(s) => s.dead_letter_cmd(entries),
            RedisSource::Stream(s) => s.dead_letter_cmd(entries),
        }
    }

    /// Sends a command made by [`RedisSource::dead_letter_cmd`].
    pub async fn dead_letter(&self, cmd: &redis::Pipeline) -> Result<(), SourceError> {
        match self {
            RedisSource::List(s) => s.dead_letter(cmd).await,
            RedisSource::Stream(s) => s.dead_letter(cmd).await,
        }
    }

    /// Stores one dead-letter entry sent in `parts`, each a separate
    /// command, so a large entry is never held whole by the host: not as a
    /// command, nor packed, nor in the connection's write buffer. The parts
    /// gather in a string next to the dead-letter key (same hash tag, an
    /// hour's expiry in case the host dies half-way), and one script moves
    /// the whole into the list or stream once every byte is there.
    pub async fn dead_letter_in_parts(
        &self,
        parts: impl Iterator<Item = Vec<u8>>,
    ) -> Result<(), SourceError> {
        let core = self.core();
        let key = &*core.dead_letter_key;
        let parts_key = format!(
            "{{{}}}:pumphouse:dead-letter-parts:{}:{}",
            hash_tag(key),
            core.instance,
            core.next_claim()
        );
        let mut conn = core.conn();
        let mut len = 0usize;
        for (i, part) in parts.enumerate() {
            len += part.len();
            let cmd = if i == 0 {
                let mut c = redis::cmd("SET");
                c.arg(&parts_key).arg(part).arg("EX").arg(3600);
                c
            } else {
                let mut c = redis::cmd("APPEND");
                c.arg(&parts_key).arg(part);
                c
            };
            let _: redis::Value = cmd
                .query_async(&mut conn)
                .await
                .map_err(redis_err("APPEND", &parts_key))?;
        }
        let field = match self {
            RedisSource::List(_) => "",
            RedisSource::Stream(_) => DEAD_LETTER_FIELD,
        };
        let stored: i64 = scripts::STORE_PARTS
            .key(key)
            .key(&parts_key)
            .arg(len)
            .arg(field)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err("store dead letter", key))?;
        if stored == 1 {
            Ok(())
        } else {
            Err(SourceError::PartsLost {
                key: key.to_string(),
            })
        }
    }
}

//! List sources: records are claimed from the head of each list, either
//! destructively (`LPOP`, at-most-once) or into a leased batch list
//! (at-least-once) that an ack drops and an expired lease hands over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::shared::{redis_err, Core, Inflight};
use super::{hash_tag, lease_key, scripts, Conn, RawBatch, SourceError};
use crate::config::Delivery;
use crate::telemetry;

/// Whether `e` says this Redis will never run the `SORT` claim: an ACL
/// without `SORT` (`NOPERM`) or a server without the command (renamed
/// away: "unknown command"). Errors of the transaction's commands are
/// looked at one by one, as an aborted `EXEC` carries them.
fn sort_refused_for_good(e: &redis::RedisError) -> bool {
    let Some(errors) = e.clone().into_server_errors() else {
        return false;
    };
    errors.iter().any(|(_, s)| {
        s.code() == "NOPERM"
            || (s.code() == "ERR"
                && s.details()
                    .is_some_and(|d| d.to_ascii_lowercase().starts_with("unknown command")))
    })
}

/// A source reading Redis lists; cheap to clone.
#[derive(Clone)]
pub struct ListSource {
    pub(super) core: Core,
    /// Claimed batch keys and their lease sets.
    inflight: Inflight<String>,
    /// False once Redis refused the `SORT … STORE` claim for good (an ACL
    /// without `@dangerous`, say): claims then use the Lua script.
    sort_claim: Arc<AtomicBool>,
}

impl ListSource {
    pub(super) fn new(core: Core) -> ListSource {
        ListSource {
            core,
            inflight: Inflight::new(),
            sort_claim: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether `key` holds no records, by one `LLEN`: an idle poll then
    /// costs Redis and the host one small command instead of a claim's
    /// transaction. Only a hint, for lists claimed at least once; `false`
    /// for pops, whose claim is one command already.
    pub async fn looks_empty(&self, key: &str) -> Result<bool, SourceError> {
        if self.core.delivery != Delivery::AtLeastOnce {
            return Ok(false);
        }
        let n: u64 = redis::cmd("LLEN")
            .arg(key)
            .query_async(&mut self.core.conn())
            .await
            .map_err(redis_err("LLEN", key))?;
        Ok(n == 0)
    }

    /// Takes the next batch from `key`, or `None` when it is empty.
    pub async fn claim(&self, key: &Arc<str>) -> Result<Option<RawBatch>, SourceError> {
        let mut conn = self.core.conn();
        let (items, claim) = match self.core.delivery {
            Delivery::AtMostOnce => {
                let v: Option<Vec<Vec<u8>>> = redis::cmd("LPOP")
                    .arg(&**key)
                    .arg(self.core.batch_size)
                    .query_async(&mut conn)
                    .await
                    .map_err(redis_err("LPOP", key))?;
                (v.unwrap_or_default(), None)
            }
            Delivery::AtLeastOnce => {
                let n = self.core.next_claim();
                let batch_key = format!(
                    "{{{}}}:pumphouse:batch:{}:{n}",
                    hash_tag(key),
                    self.core.instance
                );
                let leases = lease_key(key);
                // Registered before the claim so a renewal can never miss it.
                self.inflight.track(&batch_key, leases.clone());
                let items = self.claim_into(&mut conn, key, &leases, &batch_key).await;
                match items {
                    Ok(items) if !items.is_empty() => (items, Some(super::Claim::List(batch_key))),
                    Ok(items) => {
                        self.inflight.untrack(&batch_key);
                        (items, None)
                    }
                    Err(e) => {
                        // If the script ran but the reply was lost, the batch
                        // exists in Redis and its lease expiry re-delivers it.
                        self.inflight.untrack(&batch_key);
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
        conn: &mut Conn,
        key: &str,
        leases: &str,
        batch_key: &str,
    ) -> Result<Vec<Vec<u8>>, redis::RedisError> {
        if self.sort_claim.load(Ordering::Relaxed) {
            let n = self.core.batch_size;
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
                .arg(self.core.lease_ms)
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
                // or fails inside it: nothing was taken. Only a refusal that
                // will not pass switches to the Lua claim; any other error
                // (OOM, a busy script, a lost connection) fails this claim,
                // which is retried with `SORT`.
                Err(e) if sort_refused_for_good(&e) => {
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
            .arg(self.core.batch_size)
            .arg(self.core.lease_ms)
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
        let mut conn = self.core.conn();
        let leases = lease_key(key);
        let expired: Vec<String> = scripts::TAKE_EXPIRED
            .key(&leases)
            .arg(self.core.lease_ms)
            .arg(max)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err("take-expired", key))?;
        let mut out = Vec::with_capacity(expired.len());
        for batch_key in expired {
            self.inflight.track(&batch_key, leases.clone());
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
                claim: Some(super::Claim::List(batch_key)),
                items,
                rejected: Vec::new(),
                reclaimed: true,
            });
        }
        Ok(out)
    }

    /// Acknowledges the batch list `batch_key` of `key`. Idempotent.
    pub async fn ack(&self, key: &str, batch_key: &str) -> Result<(), SourceError> {
        let _: i64 = scripts::ACK
            .key(lease_key(key))
            .key(batch_key)
            .invoke_async(&mut self.core.conn())
            .await
            .map_err(redis_err("ack", batch_key))?;
        self.inflight.untrack(batch_key);
        Ok(())
    }

    /// Forgets a batch without acking it.
    pub fn release(&self, batch_key: &str) {
        self.inflight.untrack(batch_key);
    }

    /// Forgets every held batch; returns how many.
    pub fn release_all(&self) -> usize {
        self.inflight.clear()
    }

    /// Extends the leases of every batch this instance holds.
    pub async fn renew_leases(&self) -> Result<(), SourceError> {
        let mut by_set: HashMap<String, Vec<String>> = HashMap::new();
        for (batch_key, set) in self.inflight.snapshot() {
            by_set.entry(set).or_default().push(batch_key);
        }
        let mut conn = self.core.conn();
        for (set, batches) in by_set {
            for chunk in batches.chunks(500) {
                let mut inv = scripts::RENEW.key(&set);
                inv.arg(self.core.lease_ms);
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
        let keys = &self.core.keys;
        let mut pipe = redis::pipe();
        for k in keys.iter() {
            pipe.cmd("LLEN").arg(&**k);
        }
        let lens: Vec<u64> = pipe
            .query_async(&mut self.core.conn())
            .await
            .map_err(redis_err("LLEN", &keys[0]))?;
        Ok(keys.iter().cloned().zip(lens).collect())
    }

    /// The command appending `entries` to the dead-letter list.
    pub fn dead_letter_cmd(
        &self,
        entries: impl IntoIterator<Item = impl redis::ToRedisArgs>,
    ) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg(&*self.core.dead_letter_key);
        for e in entries {
            pipe.arg(e);
        }
        pipe.ignore();
        pipe
    }

    /// Sends a command made by [`ListSource::dead_letter_cmd`].
    pub async fn dead_letter(&self, cmd: &redis::Pipeline) -> Result<(), SourceError> {
        let key = &*self.core.dead_letter_key;
        let () = cmd
            .query_async(&mut self.core.conn())
            .await
            .map_err(redis_err("RPUSH", key))?;
        Ok(())
    }
}

//! Stream sources: every instance is a consumer in one group. The group's
//! pending entries list plays the part of the list source's lease set:
//! - claim: `XREADGROUP … >` (new entries only);
//! - renew: `XCLAIM … 0 <ids> JUSTID` resets the idle time of entries still
//!   in progress without counting a delivery;
//! - takeover: `XAUTOCLAIM` moves entries idle longer than the lease (their
//!   consumer died) to this instance, and their delivery counts tell poison
//!   entries (past `max_deliveries`) apart, which are dead-lettered;
//! - ack: `XACK`, idempotent.

use std::collections::HashMap;
use std::sync::Arc;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::Value;

use super::shared::{redis_err, Core, Inflight};
use super::{Claim, RawBatch, SourceError, DEAD_LETTER_FIELD};
use crate::telemetry;

/// Entries of one claim, for renewal: idle time is reset with
/// `XCLAIM … JUSTID`.
#[derive(Debug, Clone)]
struct Held {
    key: Arc<str>,
    ids: Vec<String>,
}

/// A source reading Redis streams through a consumer group; cheap to clone.
#[derive(Clone)]
pub struct StreamSource {
    pub(super) core: Core,
    inflight: Inflight<Held>,
    group: Arc<str>,
    /// The entry field holding the record.
    field: Arc<str>,
    /// Deliveries after which a taken-over entry is poison.
    max_deliveries: u32,
}

impl StreamSource {
    pub(super) fn new(core: Core, group: &str, field: &str, max_deliveries: u32) -> StreamSource {
        StreamSource {
            core,
            inflight: Inflight::new(),
            group: group.into(),
            field: field.into(),
            max_deliveries,
        }
    }

    /// Creates the consumer group (reading from the stream's start) if it
    /// does not exist yet; also after Redis lost it (restart without
    /// persistence).
    pub(super) async fn ensure_group(&self, key: &str) -> Result<(), SourceError> {
        let group = &*self.group;
        let mut conn = self.core.conn();
        let r: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match r {
            Ok(_) => {
                tracing::info!(key, group, "created stream consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(redis_err("XGROUP CREATE", key)(e)),
        }
    }

    fn next_token(&self) -> String {
        let n = self.core.next_claim();
        format!("{}:{n}", self.core.instance)
    }

    /// Each entry's id and its record bytes, or why it has none.
    fn entries(&self, entries: Vec<StreamId>) -> Vec<(String, Result<Vec<u8>, String>)> {
        let field = &*self.field;
        entries
            .into_iter()
            .map(|mut e| {
                let record = match e.map.remove(field) {
                    Some(Value::BulkString(b)) => Ok(b),
                    Some(_) => Err(format!(
                        "stream entry {} field `{field}` is not a string",
                        e.id
                    )),
                    None => Err(format!("stream entry {} has no field `{field}`", e.id)),
                };
                (e.id, record)
            })
            .collect()
    }

    /// A raw batch of claimed entries; `poison` says which to refuse.
    fn raw_batch(
        &self,
        key: &Arc<str>,
        entries: Vec<(String, Result<Vec<u8>, String>)>,
        poison: impl Fn(&str) -> Option<String>,
        reclaimed: bool,
    ) -> RawBatch {
        let mut ids = Vec::with_capacity(entries.len());
        let mut items = Vec::with_capacity(entries.len());
        let mut rejected = Vec::new();
        for (id, record) in entries {
            match (record, poison(&id)) {
                (Ok(bytes), Some(why)) => rejected.push((bytes, why)),
                (Ok(bytes), None) => items.push(bytes),
                (Err(why), _) => rejected.push((Vec::new(), why)),
            }
            ids.push(id);
        }
        let token = self.next_token();
        self.inflight.track(
            &token,
            Held {
                key: key.clone(),
                ids: ids.clone(),
            },
        );
        metrics::counter!(telemetry::RECORDS_CLAIMED).increment(ids.len() as u64);
        RawBatch {
            key: key.clone(),
            claim: Some(Claim::Stream { token, ids }),
            items,
            rejected,
            reclaimed,
        }
    }

    /// Reads the next entries of `key` no consumer of the group has seen,
    /// or `None` when there are none; recreates a lost group.
    pub async fn claim(&self, key: &Arc<str>) -> Result<Option<RawBatch>, SourceError> {
        let group = &*self.group;
        let conn = self.core.conn();
        let read = |mut conn: super::Conn| async move {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(group)
                .arg(&*self.core.instance)
                .arg("COUNT")
                .arg(self.core.batch_size)
                .arg("STREAMS")
                .arg(&**key)
                .arg(">")
                .query_async::<Option<StreamReadReply>>(&mut conn)
                .await
        };
        let reply = match read(conn.clone()).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_group(key).await?;
                read(conn.clone()).await
            }
            r => r,
        }
        .map_err(redis_err("XREADGROUP", key))?;
        let entries: Vec<StreamId> = reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default();
        if entries.is_empty() {
            return Ok(None);
        }
        let entries = self.entries(entries);
        Ok(Some(self.raw_batch(key, entries, |_| None, false)))
    }

    /// Takes over entries idle longer than the lease.
    pub async fn take_expired(
        &self,
        key: &Arc<str>,
        max: usize,
    ) -> Result<Vec<RawBatch>, SourceError> {
        let group = &*self.group;
        let max_deliveries = self.max_deliveries;
        let mut conn = self.core.conn();
        let mut out = Vec::new();
        let mut cursor = "0-0".to_string();
        for _ in 0..max {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&**key)
                .arg(group)
                .arg(&*self.core.instance)
                .arg(self.core.lease_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.core.batch_size)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("XAUTOCLAIM", key))?;
            if !reply.deleted_ids.is_empty() {
                // Trimmed away while pending: nothing to deliver, stop tracking.
                self.xack(key, &reply.deleted_ids).await?;
            }
            cursor = reply.next_stream_id;
            if !reply.claimed.is_empty() {
                let deliveries = self.deliveries(key, &reply.claimed).await?;
                let entries = self.entries(reply.claimed);
                let batch = self.raw_batch(
                    key,
                    entries,
                    |id| {
                        let n = deliveries.get(id).copied().unwrap_or(1);
                        (n > max_deliveries as usize).then(|| {
                            metrics::counter!(telemetry::STREAM_POISON).increment(1);
                            format!("poison: stream entry {id} was delivered {n} times without being acknowledged (max_deliveries = {max_deliveries})")
                        })
                    },
                    true,
                );
                tracing::warn!(
                    key = &**key,
                    entries = batch.items.len() + batch.rejected.len(),
                    refused = batch.rejected.len(),
                    "took over stream entries whose consumer stopped acknowledging them"
                );
                metrics::counter!(telemetry::BATCHES_RECLAIMED).increment(1);
                out.push(batch);
            }
            if cursor == "0-0" {
                break;
            }
        }
        Ok(out)
    }

    /// Delivery counts of entries this instance just claimed.
    async fn deliveries(
        &self,
        key: &str,
        entries: &[StreamId],
    ) -> Result<HashMap<String, usize>, SourceError> {
        let group = &*self.group;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Default::default());
        };
        let mut conn = self.core.conn();
        let reply: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(key)
            .arg(group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len())
            .arg(&*self.core.instance)
            .query_async(&mut conn)
            .await
            .map_err(redis_err("XPENDING", key))?;
        Ok(reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect())
    }

    async fn xack(&self, key: &str, ids: &[String]) -> Result<(), SourceError> {
        let group = &*self.group;
        let mut conn = self.core.conn();
        for chunk in ids.chunks(1000) {
            let _: i64 = redis::cmd("XACK")
                .arg(key)
                .arg(group)
                .arg(chunk)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("XACK", key))?;
        }
        Ok(())
    }

    /// Resets the idle time of entries still being delivered.
    async fn xclaim_renew(&self, key: &str, ids: &[String]) -> Result<(), SourceError> {
        let group = &*self.group;
        let mut conn = self.core.conn();
        for chunk in ids.chunks(1000) {
            let _: Value = redis::cmd("XCLAIM")
                .arg(key)
                .arg(group)
                .arg(&*self.core.instance)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID")
                .query_async(&mut conn)
                .await
                .map_err(redis_err("XCLAIM", key))?;
        }
        Ok(())
    }

    /// Entries not yet read by the group (`lag`, Redis 7+), per key.
    pub async fn backlog(&self) -> Result<Vec<(Arc<str>, u64)>, SourceError> {
        let group = &*self.group;
        let mut conn = self.core.conn();
        let mut out = Vec::with_capacity(self.core.keys.len());
        for key in self.core.keys.iter() {
            let groups: Vec<HashMap<String, Value>> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&**key)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            let lag = groups
                .iter()
                .find(|g| matches!(g.get("name"), Some(Value::BulkString(n)) if n == group.as_bytes()))
                .and_then(|g| match g.get("lag") {
                    Some(Value::Int(n)) => Some(*n as u64),
                    _ => None,
                })
                .unwrap_or(0);
            out.push((key.clone(), lag));
        }
        // A failing XINFO still tells us whether Redis answers.
        let _: Value = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(redis_err("PING", &self.core.keys[0]))?;
        Ok(out)
    }

    /// Acknowledges the entries `ids` of `key` claimed under `token`.
    /// Idempotent.
    pub async fn ack(&self, key: &str, token: &str, ids: &[String]) -> Result<(), SourceError> {
        self.xack(key, ids).await?;
        self.inflight.untrack(token);
        Ok(())
    }

    /// Forgets a claim without acking it.
    pub fn release(&self, token: &str) {
        self.inflight.untrack(token);
    }

    /// Forgets every held claim; returns how many.
    pub fn release_all(&self) -> usize {
        self.inflight.clear()
    }

    /// Resets the idle time of every entry this instance holds.
    pub async fn renew_leases(&self) -> Result<(), SourceError> {
        let mut entries: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        for (_, held) in self.inflight.snapshot() {
            entries.entry(held.key).or_default().extend(held.ids);
        }
        for (key, ids) in entries {
            self.xclaim_renew(&key, &ids).await?;
        }
        Ok(())
    }

    /// The command appending `entries` to the dead-letter stream, one
    /// entry (field [`DEAD_LETTER_FIELD`]) each.
    pub fn dead_letter_cmd(
        &self,
        entries: impl IntoIterator<Item = impl redis::ToRedisArgs>,
    ) -> redis::Pipeline {
        let key = &*self.core.dead_letter_key;
        let mut pipe = redis::pipe();
        for e in entries {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg(DEAD_LETTER_FIELD)
                .arg(e)
                .ignore();
        }
        pipe
    }

    /// Sends a command made by [`StreamSource::dead_letter_cmd`].
    pub async fn dead_letter(&self, cmd: &redis::Pipeline) -> Result<(), SourceError> {
        let key = &*self.core.dead_letter_key;
        let () = cmd
            .query_async(&mut self.core.conn())
            .await
            .map_err(redis_err("XADD", key))?;
        Ok(())
    }
}

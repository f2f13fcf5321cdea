//! Stream sources: every instance is a consumer in one group. The group's
//! pending entries list plays the part of the list source's lease set:
//! - claim: `XREADGROUP … >` (new entries only);
//! - renew: `XCLAIM … 0 <ids> JUSTID` resets the idle time of entries still
//!   in progress without counting a delivery;
//! - takeover: `XAUTOCLAIM` moves entries idle longer than the lease (their
//!   consumer died) to this instance, and their delivery counts tell poison
//!   entries (past `max_deliveries`) apart, which are dead-lettered;
//! - ack: `XACK`, idempotent.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::Value;

use super::{redis_err, Claim, Mode, RawBatch, RedisSource, SourceError, Tracked};
use crate::telemetry;

impl RedisSource {
    fn stream_mode(&self) -> (&str, &str, u32) {
        match &self.mode {
            Mode::Stream {
                group,
                field,
                max_deliveries,
            } => (group, field, *max_deliveries),
            Mode::List => unreachable!("stream operation on a list source"),
        }
    }

    /// Creates the consumer group (reading from the stream's start) if it
    /// does not exist yet; also after Redis lost it (restart without
    /// persistence).
    pub(super) async fn ensure_group(&self, key: &str) -> Result<(), SourceError> {
        let (group, _, _) = self.stream_mode();
        let mut conn = self.conn.clone();
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
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}:{n}", self.instance)
    }

    /// Each entry's id and its record bytes, or why it has none.
    fn entries(&self, entries: Vec<StreamId>) -> Vec<(String, Result<Vec<u8>, String>)> {
        let (_, field, _) = self.stream_mode();
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
        self.track(
            &token,
            Tracked::Stream {
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

    pub(super) async fn stream_claim(
        &self,
        key: &Arc<str>,
    ) -> Result<Option<RawBatch>, SourceError> {
        let (group, _, _) = self.stream_mode();
        let conn = self.conn.clone();
        let read = |mut conn: redis::aio::ConnectionManager| async move {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(group)
                .arg(&*self.instance)
                .arg("COUNT")
                .arg(self.batch_size)
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
    pub(super) async fn stream_take_expired(
        &self,
        key: &Arc<str>,
        max: usize,
    ) -> Result<Vec<RawBatch>, SourceError> {
        let (group, _, max_deliveries) = self.stream_mode();
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        let mut cursor = "0-0".to_string();
        for _ in 0..max {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&**key)
                .arg(group)
                .arg(&*self.instance)
                .arg(self.lease_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.batch_size)
                .query_async(&mut conn)
                .await
                .map_err(redis_err("XAUTOCLAIM", key))?;
            if !reply.deleted_ids.is_empty() {
                // Trimmed away while pending: nothing to deliver, stop tracking.
                self.stream_ack(key, &reply.deleted_ids).await?;
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
    ) -> Result<std::collections::HashMap<String, usize>, SourceError> {
        let (group, _, _) = self.stream_mode();
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(Default::default());
        };
        let mut conn = self.conn.clone();
        let reply: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(key)
            .arg(group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len())
            .arg(&*self.instance)
            .query_async(&mut conn)
            .await
            .map_err(redis_err("XPENDING", key))?;
        Ok(reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect())
    }

    pub(super) async fn stream_ack(&self, key: &str, ids: &[String]) -> Result<(), SourceError> {
        let (group, _, _) = self.stream_mode();
        let mut conn = self.conn.clone();
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
    pub(super) async fn stream_renew(&self, key: &str, ids: &[String]) -> Result<(), SourceError> {
        let (group, _, _) = self.stream_mode();
        let mut conn = self.conn.clone();
        for chunk in ids.chunks(1000) {
            let _: Value = redis::cmd("XCLAIM")
                .arg(key)
                .arg(group)
                .arg(&*self.instance)
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
    pub(super) async fn stream_backlog(&self) -> Result<Vec<(Arc<str>, u64)>, SourceError> {
        let (group, _, _) = self.stream_mode();
        let mut conn = self.conn.clone();
        let mut out = Vec::with_capacity(self.keys.len());
        for key in self.keys.iter() {
            let groups: Vec<std::collections::HashMap<String, Value>> = redis::cmd("XINFO")
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
            .map_err(redis_err("PING", &self.keys[0]))?;
        Ok(out)
    }
}

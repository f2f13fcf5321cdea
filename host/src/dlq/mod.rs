//! `pumphouse dlq list|replay|purge`: inspect the dead-letter key and put
//! records back into the source after a fix.
//!
//! Entries are removed only together with what replaces them: re-pushes and
//! removals run in one `MULTI`/`EXEC` per page of entries, so a crash or a
//! lost connection mid-replay can neither lose an entry nor replay it
//! twice. Removal is by exact value (`LREM … 1 <entry>`) or id (`XDEL`), so
//! entries the daemon appends meanwhile are never touched.
//! On a Redis Cluster a transaction cannot span hash slots, and a source
//! key and the dead-letter key are in different ones: each record is
//! pushed first and its entry removed after, so a failure between the two
//! leaves the entry in place (replaying it again gives a duplicate, never
//! a loss).
//! Replayed records go to every pump again (they re-enter the source);
//! pumps that had delivered them before will see them twice.

use base64::Engine as _;
use redis::Value;

pub mod cli;
mod entry;

pub use entry::{DeadLetters, DeadRecord, Entry};

use crate::config::{SourceConfig, SourceKind};
use crate::source::redis::conn::{ConnError, Endpoint};
use crate::source::redis::DEAD_LETTER_FIELD;

/// An `XRANGE` reply: entries with their field/value pairs.
type StreamPage = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

/// Entries read or changed per round trip.
const PAGE: usize = 500;

/// A dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("redis at {url}: {}", crate::source::redis::conn::cause(.source))]
    Redis {
        url: String,
        source: redis::RedisError,
    },
    #[error("{key} is a Redis {found}, not a dead-letter list or stream")]
    WrongType { key: String, found: String },
}

/// Which entries a command applies to.
#[derive(Debug, Default, Clone)]
pub struct Selector {
    /// Only entries of this pump (`source` selects undecodable records).
    pub pump: Option<String>,
    /// Only entries whose reason contains this text.
    pub reason: Option<String>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

impl Selector {
    fn matches(&self, e: &Entry) -> bool {
        let pump = e.pump.as_deref().unwrap_or("source");
        self.pump.as_deref().is_none_or(|p| p == pump)
            && self.reason.as_deref().is_none_or(|r| e.reason.contains(r))
    }
}

/// One stored entry: its raw bytes (for exact removal), its stream id (for
/// streams) and its parsed form (`None` if it is not a valid entry).
#[derive(Debug)]
pub struct Stored {
    pub raw: Vec<u8>,
    pub id: Option<String>,
    pub entry: Option<Entry>,
}

/// Outcome of a replay.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub replayed: usize,
    /// Selected entries that hold no record (e.g. a stream entry that had
    /// no record field) and were left in place.
    pub skipped: usize,
}

/// A connection to the dead-letter key of a source.
pub struct Dlq {
    conn: crate::source::redis::Conn,
    url: String,
    key: String,
    source: SourceConfig,
}

impl Dlq {
    /// Connects to the source's Redis; `key` overrides the dead-letter key.
    pub async fn connect(source: &SourceConfig, key: Option<String>) -> Result<Dlq, DlqError> {
        let endpoint = Endpoint::for_source(source)?;
        let conn = endpoint.multiplexed().await?;
        Ok(Dlq {
            conn,
            url: endpoint.redacted().to_string(),
            key: key.unwrap_or_else(|| source.dead_letter_key()),
            source: source.clone(),
        })
    }

    /// The dead-letter key in use.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn err(&self) -> impl Fn(redis::RedisError) -> DlqError + '_ {
        |source| DlqError::Redis {
            url: self.url.clone(),
            source,
        }
    }

    async fn is_stream(&mut self) -> Result<Option<bool>, DlqError> {
        let t: String = redis::cmd("TYPE")
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await
            .map_err(self.err())?;
        match t.as_str() {
            "none" => Ok(None),
            "list" => Ok(Some(false)),
            "stream" => Ok(Some(true)),
            other => Err(DlqError::WrongType {
                key: self.key.clone(),
                found: other.to_string(),
            }),
        }
    }

    /// Every entry the selector picks, oldest first.
    pub async fn list(&mut self, sel: &Selector) -> Result<Vec<Stored>, DlqError> {
        let Some(stream) = self.is_stream().await? else {
            return Ok(Vec::new());
        };
        let limit = sel.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        if stream {
            let mut start = "-".to_string();
            loop {
                let page: StreamPage = redis::cmd("XRANGE")
                    .arg(&self.key)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(self.err())?;
                let n = page.len();
                for (id, fields) in page {
                    start = format!("({id}");
                    let raw = fields
                        .into_iter()
                        .find(|(f, _)| f == DEAD_LETTER_FIELD.as_bytes())
                        .map(|(_, v)| v)
                        .unwrap_or_default();
                    push_selected(&mut out, sel, limit, raw, Some(id));
                }
                if n < PAGE || out.len() >= limit {
                    break;
                }
            }
        } else {
            let mut at = 0isize;
            loop {
                let page: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(&self.key)
                    .arg(at)
                    .arg(at + PAGE as isize - 1)
                    .query_async(&mut self.conn)
                    .await
                    .map_err(self.err())?;
                let n = page.len();
                for raw in page {
                    push_selected(&mut out, sel, limit, raw, None);
                }
                at += n as isize;
                if n < PAGE || out.len() >= limit {
                    break;
                }
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Pushes the selected entries' records back into their source keys and
    /// removes the entries, one atomic step per entry.
    pub async fn replay(&mut self, sel: &Selector, to: Option<&str>) -> Result<Replayed, DlqError> {
        let stored = self.list(sel).await?;
        let mut report = Replayed::default();
        let cluster = self.conn.is_cluster();
        for chunk in stored.chunks(PAGE) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            let mut n = 0;
            for s in chunk {
                let Some(record) = s.entry.as_ref().and_then(record_bytes) else {
                    report.skipped += 1;
                    continue;
                };
                let entry = s.entry.as_ref().expect("checked above");
                let target = to.unwrap_or(&entry.source);
                // On a cluster: push, then (below) remove, one entry at a time.
                let mut push = redis::pipe();
                let p = if cluster { &mut push } else { &mut pipe };
                match &self.source.kind {
                    SourceKind::List => p.cmd("RPUSH").arg(target).arg(record).ignore(),
                    SourceKind::Stream(stream) => p
                        .cmd("XADD")
                        .arg(target)
                        .arg("*")
                        .arg(&stream.field)
                        .arg(record)
                        .ignore(),
                };
                if cluster {
                    let () = push.query_async(&mut self.conn).await.map_err(self.err())?;
                    let mut remove = redis::pipe();
                    remove_cmd(&mut remove, &self.key, s);
                    let () = remove
                        .query_async(&mut self.conn)
                        .await
                        .map_err(self.err())?;
                    report.replayed += 1;
                    continue;
                }
                remove_cmd(&mut pipe, &self.key, s);
                n += 1;
            }
            if n > 0 {
                let () = pipe.query_async(&mut self.conn).await.map_err(self.err())?;
                report.replayed += n;
            }
        }
        Ok(report)
    }

    /// Deletes the selected entries; returns how many.
    pub async fn purge(&mut self, sel: &Selector) -> Result<usize, DlqError> {
        let stored = self.list(sel).await?;
        for chunk in stored.chunks(PAGE) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for s in chunk {
                remove_cmd(&mut pipe, &self.key, s);
            }
            let () = pipe.query_async(&mut self.conn).await.map_err(self.err())?;
        }
        Ok(stored.len())
    }

    /// Entries in the key, whatever the selector.
    pub async fn total(&mut self) -> Result<u64, DlqError> {
        let cmd = match self.is_stream().await? {
            None => return Ok(0),
            Some(true) => "XLEN",
            Some(false) => "LLEN",
        };
        let v: Value = redis::cmd(cmd)
            .arg(&self.key)
            .query_async(&mut self.conn)
            .await
            .map_err(self.err())?;
        Ok(match v {
            Value::Int(n) => n as u64,
            _ => 0,
        })
    }
}

/// Adds the removal of the stored entry `s` from `key` to `pipe`.
fn remove_cmd(pipe: &mut redis::Pipeline, key: &str, s: &Stored) {
    match &s.id {
        Some(id) => pipe.cmd("XDEL").arg(key).arg(id).ignore(),
        None => pipe.cmd("LREM").arg(key).arg(1).arg(&s.raw).ignore(),
    };
}

fn push_selected(
    out: &mut Vec<Stored>,
    sel: &Selector,
    limit: usize,
    raw: Vec<u8>,
    id: Option<String>,
) {
    if out.len() >= limit {
        return;
    }
    let entry: Option<Entry> = serde_json::from_slice(&raw).ok();
    // Unparsable entries are listed (so they can be seen and purged) only
    // when no selector field would need their content.
    let selected = match &entry {
        Some(e) => sel.matches(e),
        None => sel.pump.is_none() && sel.reason.is_none(),
    };
    if selected {
        out.push(Stored { raw, id, entry });
    }
}

/// The MessagePack record an entry holds, converting entries a filter
/// plugin left in JSON. `None` when it holds nothing usable.
pub fn record_bytes(e: &Entry) -> Option<Vec<u8>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&e.payload)
        .ok()?;
    if bytes.is_empty() {
        return None;
    }
    match e.encoding.as_str() {
        "json" => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            rmp_serde::to_vec_named(&v).ok()
        }
        _ => Some(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pump: Option<&str>, reason: &str, encoding: &str, payload: &[u8]) -> Entry {
        Entry {
            time: "2026-01-01T00:00:00Z".into(),
            source: "k".into(),
            pump: pump.map(str::to_string),
            reason: reason.into(),
            encoding: encoding.into(),
            payload: base64::engine::general_purpose::STANDARD.encode(payload),
        }
    }

    #[test]
    fn selectors_match_pump_reason_and_source() {
        let sel = Selector {
            pump: Some("es".into()),
            reason: Some("mapping".into()),
            limit: None,
        };
        assert!(sel.matches(&entry(Some("es"), "bad mapping", "msgpack", b"x")));
        assert!(!sel.matches(&entry(Some("file"), "bad mapping", "msgpack", b"x")));
        assert!(!sel.matches(&entry(Some("es"), "timeout", "msgpack", b"x")));
        let undecodable = Selector {
            pump: Some("source".into()),
            ..Selector::default()
        };
        assert!(undecodable.matches(&entry(None, "undecodable", "msgpack", b"x")));
    }

    #[test]
    fn json_entries_are_replayed_as_messagepack() {
        let e = entry(Some("p"), "r", "json", br#"{"a":1}"#);
        let back: serde_json::Value = rmp_serde::from_slice(&record_bytes(&e).unwrap()).unwrap();
        assert_eq!(back, serde_json::json!({"a": 1}));
        assert_eq!(
            record_bytes(&entry(None, "r", "msgpack", b"\x81\xa1a\x01")).unwrap(),
            b"\x81\xa1a\x01"
        );
        assert!(record_bytes(&entry(None, "r", "msgpack", b"")).is_none());
    }
}

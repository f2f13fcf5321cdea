//! `redis`: a pumphouse sink that writes every record to another Redis, as
//! a list, a stream or a pub/sub channel, for chaining and fan-out. See
//! README.md.
//!
//! * `config.rs` — the pump's config, checked in `init`;
//! * `resp.rs` — RESP2 encoding and parsing (pure);
//! * `command.rs` — the command per record and what each reply means (pure);
//! * `json.rs` — records as the host's JSON (pure);
//! * `conn.rs` — the TCP connection (`wasi:sockets` through `std::net`).

mod command;
mod config;
mod conn;
mod json;

use pumphouse_sdk::{Batch, Config, Encoding, Error, FailedEvent, PluginInfo, Sink, WriteError};

use command::{encode_record, Outcome};
use config::{Payload, Settings};
use conn::{ConnError, Connection};
use pumphouse_wire::resp::Reply;

/// Pipelines one command per record over a connection kept across
/// batches, and reconnects after any failure.
pub struct RedisSink {
    settings: Settings,
    conn: Option<Connection>,
    /// The batch's commands.
    buf: Vec<u8>,
    /// The last write could not reach Redis; the next success says so.
    down: bool,
}

/// A round trip that failed part way: the replies read before `error`.
struct Broken {
    replies: Vec<Reply>,
    error: ConnError,
}

impl Sink for RedisSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "redis".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // MessagePack is what the producers wrote; JSON mode converts.
            accepts: Encoding::Msgpack,
        }
    }

    /// Checks the config only: connecting here would fail the whole
    /// daemon's start while the target Redis is down.
    fn init(config: Config) -> Result<Self, Error> {
        let settings = Settings::from_config(&config)?;
        pumphouse_sdk::debug!(
            "writing to {} ({:?} {:?}, {:?} payloads)",
            settings.address,
            settings.mode,
            settings.key,
            settings.payload
        );
        Ok(RedisSink {
            settings,
            conn: None,
            buf: Vec::new(),
            down: false,
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        let mut failed = Vec::new();
        let mut sent = Vec::with_capacity(batch.len());
        self.buf.clear();
        for rec in batch.records() {
            match self.payload(batch, &rec) {
                Ok(payload) => {
                    encode_record(&self.settings, &payload, &mut self.buf);
                    sent.push(rec.index());
                }
                Err(e) if e.kind() == pumphouse_sdk::ErrorKind::Fatal => return Err(e.into()),
                Err(e) => failed.push(FailedEvent {
                    index: rec.index(),
                    reason: e.to_string(),
                    retryable: false,
                }),
            }
        }
        if sent.is_empty() {
            return finish(failed, batch.len());
        }

        let reused = self.conn.is_some();
        let mut result = self.round_trip(sent.len());
        // A kept connection may have died between batches (a restarted
        // Redis, an idle timeout); if it answered nothing, try a new one.
        if let Err(Broken {
            replies,
            error: ConnError::Io(_),
        }) = &result
        {
            if reused && replies.is_empty() {
                result = self.round_trip(sent.len());
            }
        }
        let replies = match result {
            Ok(replies) => {
                if self.down {
                    self.down = false;
                    pumphouse_sdk::info!("writing to {} again", self.settings.address);
                }
                replies
            }
            Err(Broken { replies, error }) => {
                let err = self.connection_failed(error);
                if replies.is_empty() || matches!(err, WriteError::Fatal(_)) {
                    return Err(err);
                }
                // Records past the last reply may or may not have been
                // written; retrying them risks duplicates, never loss.
                let reason = match &err {
                    WriteError::Retry(m) => m.clone(),
                    other => format!("{other:?}"),
                };
                failed.extend(sent[replies.len()..].iter().map(|&index| FailedEvent {
                    index,
                    reason: format!("no reply before the connection failed: {reason}"),
                    retryable: true,
                }));
                replies
            }
        };
        let written_before = failed.len();
        for (&index, reply) in sent.iter().zip(&replies) {
            match command::classify(reply) {
                Outcome::Written => {}
                Outcome::Failed { retryable, reason } => failed.push(FailedEvent {
                    index,
                    reason,
                    retryable,
                }),
                Outcome::Fatal(message) => return Err(WriteError::Fatal(message)),
            }
        }
        let refused = failed.len() - written_before;
        if refused > 0 {
            pumphouse_sdk::warn!(
                "Redis refused {refused} of {} records, e.g.: {}",
                batch.len(),
                failed[written_before].reason
            );
        }
        finish(failed, batch.len())
    }
}

/// `Ok` when nothing failed; `Retry` when every record failed and all may
/// be retried (one message reads better than a list); else `Partial`.
fn finish(mut failed: Vec<FailedEvent>, total: usize) -> Result<(), WriteError> {
    if failed.is_empty() {
        return Ok(());
    }
    if failed.len() == total && failed.iter().all(|f| f.retryable) {
        return Err(WriteError::Retry(failed.swap_remove(0).reason));
    }
    failed.sort_by_key(|f| f.index);
    Err(WriteError::Partial(failed))
}

impl RedisSink {
    /// The bytes to write for a record.
    fn payload<'b>(
        &self,
        batch: &'b Batch,
        rec: &pumphouse_sdk::Record<'b>,
    ) -> Result<std::borrow::Cow<'b, [u8]>, Error> {
        match (self.settings.payload, batch.encoding) {
            (Payload::Msgpack, Encoding::Msgpack) | (Payload::Json, Encoding::Json) => {
                Ok(rec.payload().into())
            }
            (Payload::Json, Encoding::Msgpack) => {
                let mut value = rec.value()?;
                json::normalize_times(&mut value, batch.schema);
                Ok(pumphouse_sdk::serde_json::to_vec(&value)
                    .map_err(|e| Error::invalid(format!("record {}: {e}", rec.index())))?
                    .into())
            }
            (Payload::Msgpack, Encoding::Json) => Err(Error::fatal(
                "payload = \"msgpack\" needs MessagePack batches, but the host sent JSON",
            )),
        }
    }

    /// Sends the batch's commands and reads `n` replies, connecting first
    /// if needed. Any failure drops the connection.
    fn round_trip(&mut self, n: usize) -> Result<Vec<Reply>, Broken> {
        let broken = |replies, error| Broken { replies, error };
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let conn = Connection::open(&self.settings).map_err(|e| broken(Vec::new(), e))?;
                pumphouse_sdk::metrics::counter_add("connections_opened", 1, &[]);
                self.conn.insert(conn)
            }
        };
        if let Err(e) = conn.send(&self.buf) {
            self.conn = None;
            return Err(broken(Vec::new(), e.into()));
        }
        let mut replies = Vec::with_capacity(n);
        for _ in 0..n {
            match conn.read_reply() {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    self.conn = None;
                    return Err(broken(replies, e));
                }
            }
        }
        Ok(replies)
    }

    /// Maps a connection failure onto the host's error kinds, logging the
    /// first of a run of failures.
    fn connection_failed(&mut self, error: ConnError) -> WriteError {
        let address = &self.settings.address;
        let err = match error {
            ConnError::Denied(message) => WriteError::Fatal(message),
            ConnError::Handshake(Outcome::Fatal(message)) => {
                WriteError::Fatal(format!("{address}: {message}"))
            }
            other => WriteError::Retry(format!("{address}: {other}")),
        };
        if !self.down {
            self.down = true;
            pumphouse_sdk::warn!("cannot write to {address}: {err:?}");
        }
        err
    }
}

pumphouse_sdk::export_sink!(RedisSink);

#[cfg(test)]
mod tests;

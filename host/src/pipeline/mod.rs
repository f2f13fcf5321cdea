//! The flow from claim to ack.
//!
//! ```text
//! claimers (one per key) ─┐
//! lease takeover ─────────┴─▶ decode (blocking pool, in order) ─▶ dispatcher
//!     dispatcher ─▶ lane per pump (bounded queue) ─▶ acker (when every lane is done)
//! ```
//! One owner of shutdown: the token stops claiming; queues then drain in
//! order, bounded by the drain timeout; whatever is unfinished stays
//! claimed in Redis and is re-delivered after its lease.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::{self, Batch};
use crate::dlq::DeadLetters;
use crate::pump::set::{Finished, LaneSet};
use crate::record::Schema;
use crate::source::redis::{RawBatch, RedisSource};
use crate::status::Status;
use crate::telemetry;

/// Decoded batches waiting for the dispatcher; small, so claims run only a
/// little ahead of delivery (Redis stays the buffer).
const DECODE_QUEUE: usize = 4;
/// Expired batches taken over per key per sweep.
const TAKEOVER_MAX: usize = 16;

/// Settings of a pipeline run.
pub struct Settings {
    pub schema: Schema,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub drain_timeout: Duration,
}

/// Counts of a finished run, for the demo's summary and logs.
#[derive(Debug, Default, Clone)]
pub struct RunReport {
    /// True when everything in flight finished before the drain timeout.
    pub drained: bool,
}

type Decoded = JoinHandle<(Batch, Vec<batch::Undecodable>)>;

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// What decoding a claimed batch needs: the schema, and the lanes whose
/// encoded forms are made along with it.
#[derive(Clone)]
struct Decode {
    schema: Schema,
    lanes: Arc<LaneSet>,
}

/// Decodes a claimed batch on the blocking pool and makes the encoded
/// forms the lanes will want, so batches are decoded and encoded in
/// parallel while lanes deliver earlier ones.
fn spawn_decode(d: &Decode, raw: RawBatch) -> Decoded {
    let schema = d.schema;
    let forms = d.lanes.wanted_forms();
    tokio::task::spawn_blocking(move || {
        let rejected = raw
            .rejected
            .into_iter()
            .map(|(bytes, reason)| batch::Undecodable { bytes, reason })
            .collect();
        let (batch, bad) = Batch::decode(raw.key, raw.claim, schema, raw.items, rejected, now_ms());
        if !batch.is_empty() {
            for f in forms {
                batch.form(f);
            }
        }
        (batch, bad)
    })
}

/// Runs until `shutdown` fires and in-flight work drains (or times out).
/// `lanes` may change while it runs (hot reload).
pub async fn run(
    source: RedisSource,
    lanes: Arc<LaneSet>,
    finished: Finished,
    settings: Settings,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> RunReport {
    let (decode_tx, decode_rx) = mpsc::channel::<Decoded>(DECODE_QUEUE);
    let dead_letters = DeadLetters::new(source.clone());

    // Background upkeep runs until the very end: leases must keep being
    // renewed while shutdown drains.
    let upkeep = CancellationToken::new();
    let background = [
        tokio::spawn(renew_leases(source.clone(), settings.lease, upkeep.clone())),
        tokio::spawn(watch_health(source.clone(), status.clone(), upkeep.clone())),
    ];

    let decode = Decode {
        schema: settings.schema,
        lanes: lanes.clone(),
    };
    let mut claimers = Vec::new();
    for key in source.keys().to_vec() {
        claimers.push(tokio::spawn(claim_loop(
            source.clone(),
            key,
            decode.clone(),
            settings.poll_interval,
            decode_tx.clone(),
            status.clone(),
            shutdown.clone(),
        )));
    }
    claimers.push(tokio::spawn(takeover_loop(
        source.clone(),
        decode.clone(),
        settings.lease,
        decode_tx.clone(),
        shutdown.clone(),
    )));
    drop(decode_tx);

    let dispatcher = tokio::spawn(dispatch(
        source.clone(),
        decode_rx,
        lanes.clone(),
        dead_letters,
    ));
    let acker = tokio::spawn(ack_loop(source.clone(), finished));

    shutdown.cancelled().await;
    tracing::info!(
        "shutting down: stopped claiming, draining in-flight batches (up to {:?})",
        settings.drain_timeout
    );
    let drain = async {
        for c in claimers {
            let _ = c.await;
        }
        let _ = dispatcher.await;
        lanes.close_and_join().await;
        let _ = acker.await;
    };
    let drained = tokio::time::timeout(settings.drain_timeout, drain)
        .await
        .is_ok();
    if !drained {
        let held = source.release_all();
        tracing::warn!(batches = held, "drain timeout reached; unfinished batches stay claimed and will be re-delivered after their lease expires");
    }
    upkeep.cancel();
    for b in background {
        let _ = b.await;
    }
    RunReport { drained }
}

/// Claims from one key while there is backlog; sleeps `poll` when idle and
/// backs off (without flooding the log) while Redis is unreachable. Once
/// a claim finds the key empty, each poll first asks whether it is still
/// empty (one small command), and claims only when it is not.
async fn claim_loop(
    source: RedisSource,
    key: Arc<str>,
    decode: Decode,
    poll: Duration,
    decode_tx: mpsc::Sender<Decoded>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    let mut error_delay = Duration::ZERO;
    let mut idle = false;
    while !shutdown.is_cancelled() {
        // Reserve the queue slot first: claiming only when the pipeline can
        // take the batch keeps records in Redis, not in our memory.
        let permit = tokio::select! {
            p = decode_tx.reserve() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.cancelled() => return,
        };
        // A failed probe falls through to the claim, which reports it.
        let still_idle = idle && matches!(source.looks_empty(&key).await, Ok(true));
        let wait = if still_idle {
            poll
        } else {
            match source.claim(&key).await {
                Ok(Some(raw)) => {
                    error_delay = Duration::ZERO;
                    idle = false;
                    claims_work(&status, &key);
                    permit.send(spawn_decode(&decode, raw));
                    continue;
                }
                Ok(None) => {
                    error_delay = Duration::ZERO;
                    idle = true;
                    claims_work(&status, &key);
                    poll
                }
                Err(e) => {
                    // Claim again next time, not the idle probe: only a
                    // claim clears the error.
                    idle = false;
                    // Readiness follows claims, not just PING: a refused
                    // command (NOPERM) fails them while Redis answers.
                    if !status.set_claim_error(Some(e.to_string())) {
                        tracing::warn!(key = &*key, "claims fail, backing off: {e}");
                    } else {
                        tracing::debug!(key = &*key, "claims still fail: {e}");
                    }
                    error_delay =
                        (error_delay * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                    error_delay
                }
            }
        };
        drop(permit);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A claim on `key` succeeded: clears a claim error, saying so.
fn claims_work(status: &Status, key: &str) {
    if status.set_claim_error(None) {
        tracing::info!(key, "claims work again");
    }
}

/// Takes over batches whose lease expired (their instance died).
async fn takeover_loop(
    source: RedisSource,
    decode: Decode,
    lease: Duration,
    decode_tx: mpsc::Sender<Decoded>,
    shutdown: CancellationToken,
) {
    let period = (lease / 4).clamp(Duration::from_millis(250), Duration::from_secs(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for key in source.keys().to_vec() {
            match source.take_expired(&key, TAKEOVER_MAX).await {
                Ok(batches) => {
                    for raw in batches {
                        if decode_tx.send(spawn_decode(&decode, raw)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => tracing::debug!(key = &*key, "lease takeover skipped: {e}"),
            }
        }
    }
}

/// Hands decoded batches to every lane, in claim order.
async fn dispatch(
    source: RedisSource,
    mut rx: mpsc::Receiver<Decoded>,
    lanes: Arc<LaneSet>,
    dead_letters: DeadLetters,
) {
    let Some(done) = lanes.finished_sender() else {
        return;
    };
    while let Some(handle) = rx.recv().await {
        let (batch, bad) = match handle.await {
            Ok(r) => r,
            Err(e) => {
                // Decoding is panic-free by design; if it ever fails the claim
                // stays in Redis and is re-delivered after its lease.
                tracing::error!("decode task failed: {e}");
                continue;
            }
        };
        if !bad.is_empty() {
            metrics::counter!(telemetry::RECORDS_UNDECODABLE).increment(bad.len() as u64);
            let dead = bad.into_iter().map(batch::Undecodable::into_dead).collect();
            dead_letters.write(&batch.key, None, dead).await;
        }
        let batch = Arc::new(batch);
        // One snapshot per batch: it reaches one version of each pump.
        let lanes = lanes.snapshot();
        if batch.is_empty() || lanes.is_empty() {
            let _ = done.send(batch);
            continue;
        }
        batch.remaining.store(lanes.len(), Ordering::Release);
        for lane in lanes.iter() {
            if lane.tx.send(batch.clone()).await.is_err() {
                // A lane is gone, so this batch can never be acked here. Stop
                // renewing its lease so it is re-delivered after expiry.
                tracing::error!(
                    key = &*batch.key,
                    "a lane stopped unexpectedly; the batch will be re-delivered after its lease"
                );
                if let Some(claim) = &batch.claim {
                    source.release(claim);
                }
            }
        }
    }
}

/// Acknowledges finished batches, retrying until Redis takes the ack.
async fn ack_loop(source: RedisSource, mut rx: mpsc::UnboundedReceiver<Arc<Batch>>) {
    let acked = metrics::counter!(telemetry::RECORDS_ACKED);
    while let Some(batch) = rx.recv().await {
        let Some(claim) = &batch.claim else { continue };
        crate::backoff::forever(
            Duration::from_millis(50),
            Duration::from_secs(5),
            || source.ack(&batch.key, claim),
            |e, delay| tracing::warn!(batch = %claim, "ack failed, retrying in {delay:?}: {e}"),
        )
        .await;
        acked.increment(batch.claimed as u64);
    }
}

async fn renew_leases(source: RedisSource, lease: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = source.renew_leases().await {
            tracing::debug!("lease renewal failed: {e}");
        }
    }
}

/// Pings Redis and samples the backlog once a second.
async fn watch_health(source: RedisSource, status: Arc<Status>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match source.backlog().await {
            Ok(lens) => {
                status.set_redis_error(None);
                if !status.set_redis(true) {
                    tracing::info!("redis reachable");
                }
                for (key, len) in lens {
                    metrics::gauge!(telemetry::SOURCE_BACKLOG, "key" => key.to_string())
                        .set(len as f64);
                }
            }
            Err(e) => {
                status.set_redis_error(Some(e.to_string()));
                if status.set_redis(false) {
                    tracing::warn!("redis unreachable: {e}");
                }
            }
        }
    }
}

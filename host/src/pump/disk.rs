//! `buffer = "disk"` lanes: a writer task spools each batch (fsynced, several
//! per commit when they queue up) and releases this lane's share of it at
//! once; the lane delivers from the spool, oldest first, and removes what it
//! delivered. Spool operations that fail are retried until they succeed:
//! giving up would lose a batch or deliver it twice. While one fails, the
//! pump shows as degraded with the cause ("spool: No space left on
//! device"). A write that fails for want of space is a full spool:
//! `block` waits for space (Redis buffers), `drop_oldest` discards the
//! oldest spooled batches, or the new ones when nothing older is left, so
//! the other pumps keep flowing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::config::WhenFull;
use crate::record::Schema;
use crate::spool::{Spool, SpoolError};
use crate::status::PumpStatus;
use crate::telemetry;

use super::lane::{idle, start_due, Lane};

/// Batches the spool writer takes from its queue into one commit (one
/// fsync): bounds the commit size while the pump is busy.
const SPOOL_COMMIT_BATCHES: usize = 32;
/// Longest wait between attempts at a failing spool operation: how long
/// a spool at most stays stuck after space returns.
const SPOOL_RETRY_CAP: Duration = Duration::from_secs(10);

/// Which of a disk lane's spool operations are failing, and why: the
/// pump's status shows the first while any fails.
#[derive(Clone)]
struct SpoolHealth {
    pump: Arc<str>,
    status: Arc<PumpStatus>,
    failing: Arc<Mutex<Vec<(&'static str, String)>>>,
}

impl SpoolHealth {
    fn new(pump: Arc<str>, status: Arc<PumpStatus>) -> SpoolHealth {
        SpoolHealth {
            pump,
            status,
            failing: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn failed(&self, what: &'static str, e: &SpoolError) {
        self.status.add_error();
        metrics::counter!(telemetry::PUMP_ERRORS, "pump" => self.pump.to_string(), "kind" => "spool")
            .increment(1);
        let mut failing = self.failing.lock().expect("spool health lock");
        match failing.iter_mut().find(|(w, _)| *w == what) {
            Some(slot) => slot.1 = e.cause(),
            None => failing.push((what, e.cause())),
        }
        self.status
            .set_spool_fault(Some(format!("spool: {}", failing[0].1)));
    }

    fn succeeded(&self, what: &'static str) {
        let mut failing = self.failing.lock().expect("spool health lock");
        let before = failing.len();
        failing.retain(|(w, _)| *w != what);
        if failing.len() == before {
            return;
        }
        match failing.first() {
            Some((_, cause)) => self.status.set_spool_fault(Some(format!("spool: {cause}"))),
            None => {
                self.status.set_spool_fault(None);
                tracing::info!(pump = &*self.pump, "the spool works again");
            }
        }
    }
}

/// Runs a spool operation on the blocking pool until it succeeds, backing
/// off from `first` to [`SPOOL_RETRY_CAP`]; `what` completes "cannot …" in
/// the log line of each failure.
async fn spool_op<T, F>(health: &SpoolHealth, what: &'static str, first: Duration, op: F) -> T
where
    T: Send + 'static,
    F: Fn() -> Result<T, SpoolError> + Clone + Send + 'static,
{
    let v = crate::backoff::forever(
        first,
        SPOOL_RETRY_CAP,
        || {
            let op = op.clone();
            async move { run_blocking(op).await }
        },
        |e: &Failed, delay| {
            if let Failed::Spool(e) = e {
                health.failed(what, e);
            }
            tracing::error!(
                pump = &*health.pump,
                "cannot {what}, retrying in {delay:?}: {e}"
            )
        },
    )
    .await;
    health.succeeded(what);
    v
}

/// A spool operation that failed, or its blocking task.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Spool(SpoolError),
    #[error("spool task failed: {0}")]
    Task(String),
}

async fn run_blocking<T, F>(op: F) -> Result<T, Failed>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SpoolError> + Send + 'static,
{
    match tokio::task::spawn_blocking(op).await {
        Ok(r) => r.map_err(Failed::Spool),
        Err(e) => Err(Failed::Task(e.to_string())),
    }
}

impl Lane {
    /// Delivers from the spool until the writer has closed (the dispatcher
    /// closed this lane's queue) and the batch in hand is done; the rest
    /// stays spooled for the next start.
    pub(super) async fn run_disk(
        mut self,
        spool: Arc<Spool>,
        schema: Schema,
        rx: mpsc::Receiver<Arc<Batch>>,
        done: mpsc::UnboundedSender<Arc<Batch>>,
    ) {
        let wake = Arc::new(Notify::new());
        let room = Arc::new(Notify::new());
        let closed = CancellationToken::new();
        let health = SpoolHealth::new(self.spec.name.clone(), self.spec.status.clone());
        let writer = tokio::spawn(spool_writer(
            health.clone(),
            spool.clone(),
            rx,
            done,
            wake.clone(),
            room.clone(),
            closed.clone(),
        ));
        let latency = metrics::histogram!(telemetry::PUMP_BATCH_SECONDS, "pump" => self.spec.name.to_string());
        loop {
            let s = spool.clone();
            let next = spool_op(
                &health,
                "read the spool",
                Duration::from_millis(100),
                move || s.oldest(),
            )
            .await;
            match next {
                Some((seq, spooled)) => {
                    let started = Instant::now();
                    let (batch, bad) = tokio::task::spawn_blocking(move || {
                        Batch::decode(
                            spooled.key.into(),
                            None,
                            schema,
                            spooled.records,
                            Vec::new(),
                            spooled.claimed_at_ms,
                        )
                    })
                    .await
                    .expect("decoding does not panic");
                    if !bad.is_empty() {
                        // Decoded once before spooling, so this means the
                        // spool returned different bytes: keep them anyway.
                        let dead = bad.into_iter().map(|u| u.into_dead()).collect();
                        self.dead_letters
                            .write(&batch.key, Some(&self.spec.name), dead)
                            .await;
                    }
                    self.handle(&batch).await;
                    latency.record(started.elapsed().as_secs_f64());
                    let s = spool.clone();
                    spool_op(
                        &health,
                        "remove a delivered batch from the spool",
                        Duration::from_millis(50),
                        move || s.remove(seq),
                    )
                    .await;
                    room.notify_one();
                    if closed.is_cancelled() {
                        break;
                    }
                }
                None => {
                    if closed.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = closed.cancelled() => {}
                        _ = idle(self.spec.tick) => self.tick().await,
                        _ = start_due(self.start_due_at()) => self.retry_start().await,
                    }
                }
            }
        }
        let _ = writer.await;
    }
}

/// Spools batches as they arrive (several per commit when they queue up)
/// and releases this lane's share of each once it is durable (or, with
/// `drop_oldest` on a disk without space, once it is counted as dropped).
async fn spool_writer(
    health: SpoolHealth,
    spool: Arc<Spool>,
    mut rx: mpsc::Receiver<Arc<Batch>>,
    done: mpsc::UnboundedSender<Arc<Batch>>,
    wake: Arc<Notify>,
    room: Arc<Notify>,
    closed: CancellationToken,
) {
    let pump = health.pump.clone();
    while let Some(first) = rx.recv().await {
        let mut batches = vec![first];
        while batches.len() < SPOOL_COMMIT_BATCHES {
            match rx.try_recv() {
                Ok(b) => batches.push(b),
                Err(_) => break,
            }
        }
        let bytes: u64 = batches
            .iter()
            .flat_map(|b| b.records.iter())
            .map(|r| r.len() as u64 + 4)
            .sum();
        wait_for_room(&pump, &spool, &room, bytes).await;
        // The batches stay claimed in Redis until spooled.
        match spool.when_full() {
            WhenFull::Block => {
                let (s, owned) = (spool.clone(), batches.clone());
                spool_op(
                    &health,
                    "write to the spool",
                    Duration::from_millis(50),
                    move || append(&s, &owned),
                )
                .await;
            }
            WhenFull::DropOldest => append_or_drop(&health, &spool, &batches, bytes).await,
        }
        wake.notify_one();
        for b in batches {
            if b.finish_lane() {
                let _ = done.send(b);
            }
        }
    }
    closed.cancel();
}

fn append(spool: &Spool, batches: &[Arc<Batch>]) -> Result<(), SpoolError> {
    let refs: Vec<(&str, i64, &[bytes::Bytes])> = batches
        .iter()
        .map(|b| (&*b.key, b.claimed_at_ms, b.records.as_slice()))
        .collect();
    spool.append(&refs)
}

/// `drop_oldest`'s write: a disk without space is a full spool, so the
/// oldest spooled batches make way, and when none are left to discard the
/// new batches are dropped (and counted) instead of stalling every pump.
/// Other failures are retried as `block` retries them.
async fn append_or_drop(
    health: &SpoolHealth,
    spool: &Arc<Spool>,
    batches: &[Arc<Batch>],
    bytes: u64,
) {
    let what = "write to the spool";
    let mut delay = Duration::from_millis(50);
    loop {
        let (s, owned) = (spool.clone(), batches.to_vec());
        let e = match run_blocking(move || append(&s, &owned)).await {
            Ok(()) => {
                health.succeeded(what);
                return;
            }
            Err(e) => e,
        };
        let e = match e {
            Failed::Spool(e) => e,
            task => {
                tracing::error!(
                    pump = &*health.pump,
                    "cannot {what}, retrying in {delay:?}: {task}"
                );
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        health.failed(what, &e);
        if !e.is_out_of_space() {
            tracing::error!(
                pump = &*health.pump,
                "cannot {what}, retrying in {delay:?}: {e}"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(SPOOL_RETRY_CAP);
            continue;
        }
        let s = spool.clone();
        let freed = run_blocking(move || s.discard_oldest(bytes)).await;
        if matches!(freed, Ok(n) if n > 0) {
            // Freed pages are reused from the next commit on.
            continue;
        }
        let records: u64 = batches.iter().map(|b| b.records.len() as u64).sum();
        metrics::counter!(telemetry::SPOOL_DROPPED_RECORDS, "pump" => health.pump.to_string())
            .increment(records);
        tracing::warn!(
            pump = &*health.pump,
            records,
            "spool cannot be written (when_full = \"drop_oldest\") and holds nothing older to discard; dropped the new records: {e}"
        );
        return;
    }
}

/// Waits until the spool has room for `bytes`, as `when_full` says: for the
/// lane to deliver (`block`), or by discarding the oldest batches.
async fn wait_for_room(pump: &str, spool: &Arc<Spool>, room: &Notify, bytes: u64) {
    let mut warned = false;
    while !spool.has_room(bytes) {
        match spool.when_full() {
            WhenFull::Block => {
                if !warned {
                    tracing::warn!(pump, "spool full (when_full = \"block\"): waiting for the pump to catch up; Redis buffers meanwhile");
                    warned = true;
                }
                room.notified().await;
            }
            WhenFull::DropOldest => {
                let s = spool.clone();
                match tokio::task::spawn_blocking(move || s.make_room(bytes)).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => tracing::error!(pump, "cannot make room in the spool: {e}"),
                    Err(e) => tracing::error!(pump, "spool task failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

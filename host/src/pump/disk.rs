//! `buffer = "disk"` lanes: a writer task spools each batch (fsynced, several
//! per commit when they queue up) and releases this lane's share of it at
//! once; the lane delivers from the spool, oldest first, and removes what it
//! delivered. Spool operations that fail are retried until they succeed:
//! giving up would lose a batch or deliver it twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::config::WhenFull;
use crate::record::Schema;
use crate::spool::{Spool, SpoolError};
use crate::telemetry;

use super::lane::{idle, Lane};

/// Batches the spool writer takes from its queue into one commit (one
/// fsync): bounds the commit size while the pump is busy.
const SPOOL_COMMIT_BATCHES: usize = 32;
/// Longest wait between attempts at a failing spool operation.
const SPOOL_RETRY_CAP: Duration = Duration::from_secs(10);

/// Runs a spool operation on the blocking pool until it succeeds, backing
/// off from `first` to [`SPOOL_RETRY_CAP`]; `what` completes "cannot …" in
/// the log line of each failure.
async fn spool_op<T, F>(pump: &str, what: &str, first: Duration, op: F) -> T
where
    T: Send + 'static,
    F: Fn() -> Result<T, SpoolError> + Clone + Send + 'static,
{
    crate::backoff::forever(
        first,
        SPOOL_RETRY_CAP,
        || {
            let op = op.clone();
            async move {
                match tokio::task::spawn_blocking(op).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(format!("spool task failed: {e}")),
                }
            }
        },
        |e, delay| tracing::error!(pump, "cannot {what}, retrying in {delay:?}: {e}"),
    )
    .await
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
        let writer = tokio::spawn(spool_writer(
            self.spec.name.clone(),
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
                &self.spec.name,
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
                        &self.spec.name,
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
                    }
                }
            }
        }
        let _ = writer.await;
    }
}

/// Spools batches as they arrive (several per commit when they queue up)
/// and releases this lane's share of each once it is durable.
async fn spool_writer(
    pump: Arc<str>,
    spool: Arc<Spool>,
    mut rx: mpsc::Receiver<Arc<Batch>>,
    done: mpsc::UnboundedSender<Arc<Batch>>,
    wake: Arc<Notify>,
    room: Arc<Notify>,
    closed: CancellationToken,
) {
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
        let (s, owned) = (spool.clone(), batches.clone());
        // The batches stay claimed in Redis until spooled.
        spool_op(
            &pump,
            "write to the spool",
            Duration::from_millis(50),
            move || {
                let refs: Vec<(&str, i64, &[bytes::Bytes])> = owned
                    .iter()
                    .map(|b| (&*b.key, b.claimed_at_ms, b.records.as_slice()))
                    .collect();
                s.append(&refs)
            },
        )
        .await;
        wake.notify_one();
        for b in batches {
            if b.finish_lane() {
                let _ = done.send(b);
            }
        }
    }
    closed.cancel();
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

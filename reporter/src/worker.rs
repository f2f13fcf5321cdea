//! A worker: takes a due batch, encodes it into one command (`ListBatched`)
//! or one pipeline, sends it,
//! and on failure reconnects and retries with backoff until Redis has been
//! unreachable for `give_up_after`; then the batch is counted as lost.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError};

use crate::format::Format;
use crate::options::{Options, Target};
use crate::queue::Take;
use crate::reporter::Shared;

/// Marks the worker gone however its task ends (finished or dropped).
struct Exit<R>(Arc<Shared<R>>);

impl<R> Drop for Exit<R> {
    fn drop(&mut self) {
        self.0.worker_exited();
    }
}

pub(crate) async fn run<F: Format>(
    id: usize,
    shared: Arc<Shared<F::Record>>,
    format: Arc<F>,
    client: redis::Client,
) {
    let _exit = Exit(Arc::clone(&shared));
    let opts = &shared.opts;
    let mut link = Link::new(client, opts);
    // Both are reused from batch to batch: after the first batches they
    // no longer allocate (or page-fault).
    let mut pipe = redis::pipe();
    let mut batched = Cmd::new();
    let mut scratch = Vec::with_capacity(1024);
    loop {
        // Register for the wake-up before looking: a batch sealed (or a
        // close) between the look and the wait is not missed.
        let ready = shared.queue.ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let (take, accepted) = shared.queue.take(Instant::now());
        shared.metrics.accepted.increment(accepted);
        let mut batch = match take {
            Take::Batch(b) => b,
            Take::Wait(until) => {
                tokio::select! {
                    _ = ready => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
                continue;
            }
            Take::Done => break,
        };
        let n = batch.len();
        let one_command = opts.target == Target::ListBatched;
        pipe.clear();
        batched.clear();
        batched.arg("RPUSH").arg(opts.key());
        let mut unencodable = 0u64;
        for record in batch.drain(..) {
            scratch.clear();
            match format.encode(&record, &mut scratch) {
                Ok(()) if one_command => {
                    batched.arg(scratch.as_slice());
                }
                Ok(()) => push_command(&mut pipe, opts, &scratch),
                Err(e) => {
                    unencodable += 1;
                    if unencodable == 1 {
                        tracing::warn!(worker = id, key = opts.key(), error = %e, "analytics record not encodable; counted as lost");
                    }
                }
            }
        }
        if unencodable > 0 {
            shared
                .counts
                .lost_unencodable
                .fetch_add(unencodable, Relaxed);
            shared.metrics.lost_unencodable.increment(unencodable);
        }
        let encoded = n as u64 - unencodable;
        if encoded > 0 {
            let request = if one_command {
                Request::Command(&batched)
            } else {
                Request::Pipeline(&pipe)
            };
            match link.send(request, &shared).await {
                Sent::Ok(took) => {
                    shared.counts.sent.fetch_add(encoded, Relaxed);
                    shared.counts.batches.fetch_add(1, Relaxed);
                    shared.metrics.sent.increment(encoded);
                    shared.metrics.batches.increment(1);
                    shared.metrics.send_seconds.record(took);
                }
                Sent::GaveUp(down_for) => {
                    shared.counts.lost_unreachable.fetch_add(encoded, Relaxed);
                    shared.metrics.lost_unreachable.increment(encoded);
                    tracing::error!(
                        worker = id,
                        key = opts.key(),
                        records = encoded,
                        down_for = ?down_for,
                        "Redis unreachable past give_up_after; analytics records lost"
                    );
                }
            }
        }
        let held = shared.queue.release(n, batch);
        shared.metrics.buffered.set(held as f64);
    }
}

/// Adds the command writing one record (`List` and `Stream` targets).
fn push_command(pipe: &mut Pipeline, opts: &Options, record: &[u8]) {
    let key = opts.key();
    let cmd = match opts.target {
        Target::Stream { max_len } => {
            let field = opts.stream_field.as_str();
            let mut cmd = Cmd::with_capacity(8, 32 + key.len() + field.len() + record.len());
            cmd.arg("XADD")
                .arg(key)
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg("*")
                .arg(field)
                .arg(record);
            cmd
        }
        Target::List | Target::ListBatched => {
            let mut cmd = Cmd::with_capacity(3, 5 + key.len() + record.len());
            cmd.arg("RPUSH").arg(key).arg(record);
            cmd
        }
    };
    pipe.add_command(cmd).ignore();
}

/// What a batch is sent as.
#[derive(Clone, Copy)]
enum Request<'a> {
    /// One command (`ListBatched`).
    Command(&'a Cmd),
    /// A command per record.
    Pipeline(&'a Pipeline),
}

enum Sent {
    /// Written; the reply took this long.
    Ok(Duration),
    /// Not written; Redis has been unreachable this long.
    GaveUp(Duration),
}

/// A worker's connection and the state of the current outage.
struct Link {
    client: redis::Client,
    config: AsyncConnectionConfig,
    conn: Option<MultiplexedConnection>,
    backoff: ExponentialBuilder,
    retry_max: Duration,
    give_up_after: Duration,
    outage: Option<Outage>,
}

struct Outage {
    since: Instant,
    delays: ExponentialBackoff,
    next_try: Instant,
}

impl Link {
    fn new(client: redis::Client, opts: &Options) -> Self {
        Link {
            client,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(opts.connect_timeout))
                .set_response_timeout(Some(opts.send_timeout)),
            conn: None,
            backoff: ExponentialBuilder::default()
                .with_min_delay(opts.retry_min)
                .with_max_delay(opts.retry_max)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
            retry_max: opts.retry_max,
            give_up_after: opts.give_up_after,
            outage: None,
        }
    }

    /// Sends `request`, retrying until it is written or Redis has been
    /// unreachable for `give_up_after`. Once past that deadline, a batch
    /// that arrives between two reconnection attempts is given up without
    /// an attempt of its own: attempts keep the backoff's pace.
    async fn send<R>(&mut self, request: Request<'_>, shared: &Shared<R>) -> Sent {
        loop {
            if let Some(o) = &self.outage {
                let now = Instant::now();
                let give_up_at = o.since + self.give_up_after;
                if now < o.next_try {
                    if now >= give_up_at {
                        return Sent::GaveUp(now - o.since);
                    }
                    tokio::time::sleep_until(o.next_try.min(give_up_at).into()).await;
                    continue;
                }
            }
            let started = Instant::now();
            match self.attempt(request).await {
                Ok(()) => {
                    if let Some(o) = self.outage.take() {
                        tracing::info!(key = shared.opts.key(), down_for = ?o.since.elapsed(), "Redis reachable again; analytics resumed");
                    }
                    return Sent::Ok(started.elapsed());
                }
                Err(e) => {
                    shared.counts.send_errors.fetch_add(1, Relaxed);
                    shared.metrics.send_errors.increment(1);
                    // Server error replies keep the connection; anything
                    // else (refused, reset, timeout) gets a new one.
                    if !matches!(e.kind(), ErrorKind::Server(_)) {
                        self.conn = None;
                    }
                    let now = Instant::now();
                    let o = self.outage.get_or_insert_with(|| {
                        tracing::warn!(key = shared.opts.key(), error = %e, "cannot write analytics to Redis; holding records and retrying");
                        Outage {
                            since: started,
                            delays: self.backoff.build(),
                            next_try: now,
                        }
                    });
                    o.next_try = now + o.delays.next().unwrap_or(self.retry_max);
                    if now >= o.since + self.give_up_after {
                        return Sent::GaveUp(now - o.since);
                    }
                }
            }
        }
    }

    async fn attempt(&mut self, request: Request<'_>) -> Result<(), RedisError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await?;
                self.conn.insert(c)
            }
        };
        match request {
            Request::Command(cmd) => cmd.query_async::<()>(conn).await,
            Request::Pipeline(pipe) => pipe.query_async::<()>(conn).await,
        }
    }
}

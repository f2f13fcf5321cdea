//! A worker: takes a due batch, encodes it into one command (`ListBatched`)
//! or one pipeline, framed for the socket as it is encoded, sends it,
//! and on failure reconnects and retries with backoff until Redis has been
//! unreachable for `give_up_after`; then the batch is counted as lost.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::conn::{self, Conn, ConnError, Redirect};
use crate::endpoint::{Addr, Endpoint, Topology};
use crate::format::Format;
use crate::options::{Options, Target};
use crate::queue::Take;
use crate::reporter::Shared;
use pumphouse_wire::resp;

/// `ASKING`, framed.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

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
    endpoint: Arc<Endpoint>,
) {
    let _exit = Exit(Arc::clone(&shared));
    let opts = &shared.opts;
    let mut link = Link::new(endpoint, opts, Arc::clone(&shared.switches));
    let one_command = opts.target == Target::ListBatched;
    // What comes before each record: nothing in the one `RPUSH` of a
    // batch, a whole command's head otherwise.
    let prefix = record_prefix(opts);
    // Reused from batch to batch: after the first batches they no longer
    // allocate (or page-fault).
    let mut body = Vec::new();
    let mut head = Vec::with_capacity(64);
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
        body.clear();
        let mut unencodable = 0u64;
        for record in batch.drain(..) {
            scratch.clear();
            match format.encode(&record, &mut scratch) {
                Ok(()) => {
                    body.extend_from_slice(&prefix);
                    resp::bulk(&mut body, &scratch);
                }
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
                head.clear();
                resp::array_header(&mut head, encoded as usize + 2);
                resp::bulk(&mut head, b"RPUSH");
                resp::bulk(&mut head, opts.key().as_bytes());
                Request {
                    parts: [&head, &body],
                    replies: 1,
                    one_command: true,
                }
            } else {
                Request {
                    parts: [&[], &body],
                    replies: encoded as usize,
                    one_command: false,
                }
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

/// The bytes before each record's bulk string: none in the batch's one
/// `RPUSH` (`ListBatched`), the head of its own command otherwise.
fn record_prefix(opts: &Options) -> Vec<u8> {
    let key = opts.key().as_bytes();
    let mut p = Vec::new();
    match opts.target {
        Target::ListBatched => {}
        Target::List => {
            resp::array_header(&mut p, 3);
            resp::bulk(&mut p, b"RPUSH");
            resp::bulk(&mut p, key);
        }
        Target::Stream { max_len } => {
            resp::array_header(&mut p, 8);
            for arg in [
                &b"XADD"[..],
                key,
                b"MAXLEN",
                b"~",
                max_len.to_string().as_bytes(),
                b"*",
                opts.stream_field.as_bytes(),
            ] {
                resp::bulk(&mut p, arg);
            }
        }
    }
    p
}

/// A batch framed for the socket: its parts, written one after the
/// other, and how many replies they get.
#[derive(Clone, Copy)]
struct Request<'a> {
    parts: [&'a [u8]; 2],
    replies: usize,
    /// One command (`ListBatched`): an `ASK` redirect can be followed
    /// with `ASKING` before it.
    one_command: bool,
}

/// Most cluster redirects followed in one attempt; more is an error
/// (slots moving faster than a batch can follow).
const MAX_REDIRECTS: usize = 5;

enum Sent {
    /// Written; the reply took this long.
    Ok(Duration),
    /// Not written; Redis has been unreachable this long.
    GaveUp(Duration),
}

/// A worker's connection and the state of the current outage.
struct Link {
    endpoint: Arc<Endpoint>,
    /// In a cluster: the node the last `MOVED` named, until it fails.
    node: Option<Addr>,
    /// Behind Sentinel: the failovers announced, and how many of them
    /// the connection postdates.
    switches: Arc<AtomicU64>,
    switches_seen: u64,
    connect_timeout: Duration,
    send_timeout: Duration,
    conn: Option<Conn>,
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
    fn new(endpoint: Arc<Endpoint>, opts: &Options, switches: Arc<AtomicU64>) -> Self {
        Link {
            endpoint,
            node: None,
            switches_seen: switches.load(Relaxed),
            switches,
            connect_timeout: opts.connect_timeout,
            send_timeout: opts.send_timeout,
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
            match self.attempt(request, shared).await {
                Ok(()) => {
                    if let Some(o) = self.outage.take() {
                        shared.set_redis_error(None);
                        tracing::info!(key = shared.opts.key(), down_for = ?o.since.elapsed(), "Redis reachable again; analytics resumed");
                    }
                    return Sent::Ok(started.elapsed());
                }
                Err(e) => {
                    shared.counts.send_errors.fetch_add(1, Relaxed);
                    shared.metrics.send_errors.increment(1);
                    shared.set_redis_error(Some(e.to_string()));
                    // Server error replies keep the connection; anything
                    // else (refused, reset, timeout, a primary turned
                    // replica) gets a new one, found anew behind Sentinel.
                    if !e.keeps_connection() {
                        self.conn = None;
                        if !matches!(e, ConnError::Server(_)) {
                            // A cluster node that fails: ask the seeds.
                            self.node = None;
                        }
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

    async fn attempt<R>(
        &mut self,
        request: Request<'_>,
        shared: &Shared<R>,
    ) -> Result<(), ConnError> {
        let cluster = matches!(self.endpoint.topology, Topology::Cluster { .. });
        let announced = self.switches.load(Relaxed);
        if announced != self.switches_seen {
            // A failover: the primary the sentinels name now, at once.
            self.switches_seen = announced;
            self.conn = None;
        }
        let mut redirects = 0;
        loop {
            let conn = match &mut self.conn {
                Some(c) => c,
                None => {
                    let c = conn::connect(&self.endpoint, self.node.as_ref(), self.connect_timeout)
                        .await?;
                    self.conn.insert(c)
                }
            };
            let result = conn
                .request(&request.parts, request.replies, self.send_timeout)
                .await;
            let redirect = match &result {
                Err(ConnError::Server(e)) if cluster && redirects < MAX_REDIRECTS => {
                    Redirect::parse(e, &conn.addr)
                }
                _ => None,
            };
            redirects += 1;
            match redirect {
                // The key's slot lives elsewhere now: this and later
                // batches go there. A one-command batch was not written;
                // a pipeline cut by a move half-way is sent again whole
                // (duplicates, as after a cut connection).
                Some(Redirect::Moved(addr)) => {
                    tracing::debug!(to = %addr, "cluster: the key's slot moved (MOVED)");
                    shared.counts.moved.fetch_add(1, Relaxed);
                    shared.metrics.moved.increment(1);
                    self.node = Some(addr);
                    self.conn = None;
                }
                // The slot is migrating and the key is at the target
                // already: this one command goes there, after `ASKING`.
                // A pipeline cannot be sent that way; it is retried until
                // the move completes (then `MOVED`).
                Some(Redirect::Ask(addr)) if request.one_command => {
                    shared.counts.asked.fetch_add(1, Relaxed);
                    shared.metrics.asked.increment(1);
                    let mut target =
                        conn::connect(&self.endpoint, Some(&addr), self.connect_timeout).await?;
                    let mut parts = vec![ASKING];
                    parts.extend_from_slice(&request.parts);
                    return target
                        .request(&parts, request.replies + 1, self.send_timeout)
                        .await;
                }
                _ => return result,
            }
        }
    }
}

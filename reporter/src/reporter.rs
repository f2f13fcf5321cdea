//! The handle applications hold: `record()`, `record_wait()`, `stats()`,
//! `shutdown()`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::announcements;
use crate::endpoint::{Endpoint, Topology};

use crate::format::Format;
use crate::metrics::Metrics;
use crate::options::{NoFormat, Options, ReporterBuilder, WhenFull};
use crate::queue::{Push, Queue};
use crate::worker;
use crate::RecordError;

/// Records analytics into Redis in the background. Cheap to clone: clones
/// share one buffer and one pool of workers.
///
/// When the last clone is dropped without [`shutdown`](Self::shutdown), the
/// workers still flush what they hold, in the background.
pub struct Reporter<R> {
    handle: Arc<Handle<R>>,
}

impl<R> Clone for Reporter<R> {
    fn clone(&self) -> Self {
        Reporter {
            handle: Arc::clone(&self.handle),
        }
    }
}

/// Counts since the reporter started. After [`Reporter::shutdown`]:
/// `accepted == sent + lost()` and `buffered == 0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records accepted by `record()`/`record_wait()`.
    pub accepted: u64,
    /// Accepted records Redis confirmed.
    pub sent: u64,
    /// Refused because the buffer was full (`WhenFull::Drop`); never accepted.
    pub dropped_full: u64,
    /// Refused because the reporter was shut down; never accepted.
    pub dropped_closed: u64,
    /// Accepted, then lost: Redis stayed unreachable past `give_up_after`.
    pub lost_unreachable: u64,
    /// Accepted, then lost: the format could not encode them.
    pub lost_unencodable: u64,
    /// Accepted and not yet sent or lost.
    pub buffered: u64,
    /// Pipelines written.
    pub batches: u64,
    /// Failed attempts (each retried until `give_up_after`).
    pub send_errors: u64,
    /// Redis Cluster `MOVED` redirects followed: the key's slot had moved,
    /// so the batch went to the node named, as do later ones.
    pub moved: u64,
    /// Redis Cluster `ASK` redirects followed: the key's slot was
    /// migrating and the key was on the target node already.
    pub asked: u64,
}

impl Stats {
    /// Records accepted and then not written, for any reason.
    pub fn lost(&self) -> u64 {
        self.lost_unreachable + self.lost_unencodable
    }

    /// Records refused, for any reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_closed
    }
}

/// State shared by the handles and the workers.
pub(crate) struct Shared<R> {
    pub queue: Queue<R>,
    pub opts: Options,
    pub metrics: Metrics,
    pub counts: Counts,
    live_workers: AtomicUsize,
    done: watch::Sender<bool>,
    /// Why the last attempt failed, until one succeeds.
    redis_error: Mutex<Option<String>>,
    /// Failovers the sentinels announced: a worker whose connection is
    /// older reconnects (behind Sentinel only).
    pub switches: Arc<AtomicU64>,
}

#[derive(Default)]
pub(crate) struct Counts {
    pub sent: AtomicU64,
    pub dropped_full: AtomicU64,
    pub dropped_closed: AtomicU64,
    pub lost_unreachable: AtomicU64,
    pub lost_unencodable: AtomicU64,
    pub batches: AtomicU64,
    pub send_errors: AtomicU64,
    pub moved: AtomicU64,
    pub asked: AtomicU64,
}

impl<R> Shared<R> {
    pub fn set_redis_error(&self, e: Option<String>) {
        *self
            .redis_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = e;
    }

    /// Called by each worker as it exits (also when its task is dropped).
    pub fn worker_exited(&self) {
        if self.live_workers.fetch_sub(1, Relaxed) == 1 {
            self.done.send_replace(true);
        }
    }
}

/// Owned by the clones of one [`Reporter`]; the last one to go closes it.
struct Handle<R> {
    shared: Arc<Shared<R>>,
}

impl<R> Drop for Handle<R> {
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

impl Reporter<()> {
    /// A builder with every option at its default; choose a
    /// [`format`](ReporterBuilder::format), then [`build`](ReporterBuilder::build).
    pub fn builder() -> ReporterBuilder<NoFormat> {
        ReporterBuilder::new()
    }
}

impl<R: Send + 'static> Reporter<R> {
    pub(crate) fn start<F: Format<Record = R>>(
        format: F,
        opts: Options,
        endpoint: Endpoint,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let shared = Arc::new(Shared {
            queue: Queue::new(
                opts.buffer_size,
                opts.batch_size,
                opts.flush_interval,
                opts.max_flush_interval,
                opts.pool_size,
            ),
            metrics: Metrics::new(opts.key()),
            counts: Counts::default(),
            live_workers: AtomicUsize::new(opts.pool_size),
            done: watch::Sender::new(false),
            redis_error: Mutex::new(None),
            switches: Arc::new(AtomicU64::new(0)),
            opts,
        });
        let format = Arc::new(format);
        let endpoint = Arc::new(endpoint);
        if matches!(endpoint.topology, Topology::Sentinel { .. }) {
            runtime.spawn(announcements::watch(
                Arc::clone(&endpoint),
                Arc::clone(&shared.switches),
                shared.opts.connect_timeout,
                shared.done.subscribe(),
            ));
        }
        for id in 0..shared.opts.pool_size {
            runtime.spawn(worker::run(
                id,
                Arc::clone(&shared),
                Arc::clone(&format),
                Arc::clone(&endpoint),
            ));
        }
        Reporter {
            handle: Arc::new(Handle { shared }),
        }
    }

    fn shared(&self) -> &Shared<R> {
        &self.handle.shared
    }

    /// Hands `record` to the background workers. Never waits (no network,
    /// no lock held for more than a few moves) and never panics.
    ///
    /// A full buffer returns `Err(Full(record))`: counted as dropped with
    /// [`WhenFull::Drop`], handed back uncounted with [`WhenFull::Block`]
    /// (use [`record_wait`](Self::record_wait) to wait for room). After
    /// shutdown it returns `Err(Closed(record))`, counted as dropped.
    pub fn record(&self, record: R) -> Result<(), RecordError<R>> {
        match self.shared().queue.push(record) {
            Push::Accepted => Ok(()),
            Push::Full(r) => {
                if self.shared().opts.when_full == WhenFull::Drop {
                    self.count_dropped_full();
                }
                Err(RecordError::Full(r))
            }
            Push::Closed(r) => Err(self.closed(r)),
        }
    }

    /// Like [`record`](Self::record), but with [`WhenFull::Block`] a full
    /// buffer makes it wait until a worker frees room. It waits only for
    /// room, never for the network itself; while Redis is down room is
    /// freed once batches are sent after the reconnect or given up. With
    /// [`WhenFull::Drop`] it is `record` (full: dropped and counted).
    pub async fn record_wait(&self, record: R) -> Result<(), RecordError<R>> {
        let queue = &self.shared().queue;
        let mut record = match queue.push(record) {
            Push::Accepted => return Ok(()),
            Push::Closed(r) => return Err(self.closed(r)),
            Push::Full(r) if self.shared().opts.when_full == WhenFull::Drop => {
                self.count_dropped_full();
                return Err(RecordError::Full(r));
            }
            Push::Full(r) => r,
        };
        loop {
            // Register for the wake-up before looking again: a release
            // between the look and the wait is not missed.
            let room = queue.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            record = match queue.push(record) {
                Push::Accepted => return Ok(()),
                Push::Closed(r) => return Err(self.closed(r)),
                Push::Full(r) => r,
            };
            room.await;
        }
    }

    fn count_dropped_full(&self) {
        let s = self.shared();
        s.counts.dropped_full.fetch_add(1, Relaxed);
        s.metrics.dropped_full.increment(1);
    }

    fn closed(&self, r: R) -> RecordError<R> {
        let s = self.shared();
        s.counts.dropped_closed.fetch_add(1, Relaxed);
        s.metrics.dropped_closed.increment(1);
        RecordError::Closed(r)
    }

    /// The current counts.
    pub fn stats(&self) -> Stats {
        let s = self.shared();
        let (accepted, held) = s.queue.counts();
        let c = &s.counts;
        Stats {
            accepted,
            sent: c.sent.load(Relaxed),
            dropped_full: c.dropped_full.load(Relaxed),
            dropped_closed: c.dropped_closed.load(Relaxed),
            lost_unreachable: c.lost_unreachable.load(Relaxed),
            lost_unencodable: c.lost_unencodable.load(Relaxed),
            buffered: held as u64,
            batches: c.batches.load(Relaxed),
            send_errors: c.send_errors.load(Relaxed),
            moved: c.moved.load(Relaxed),
            asked: c.asked.load(Relaxed),
        }
    }

    /// Why Redis cannot be written to, naming the cause (connection
    /// refused, TLS handshake, `WRONGPASS`, `NOPERM` and the command,
    /// sentinel discovery, …): the error of the last failed attempt, or
    /// `None` once an attempt has succeeded since. For health checks.
    pub fn redis_error(&self) -> Option<String> {
        self.shared()
            .redis_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The list or stream key written to.
    pub fn key(&self) -> &str {
        self.shared().opts.key()
    }

    /// The policy for a full buffer.
    pub fn when_full(&self) -> WhenFull {
        self.shared().opts.when_full
    }

    /// Stops accepting (later records fail with `Closed`, as do waiting
    /// `record_wait` calls), sends everything accepted before, and returns
    /// the final counts once every worker is done. If Redis is down, this
    /// waits for it up to `give_up_after` after the outage began; what is
    /// still unsent then is counted in `lost_unreachable`. Any clone may
    /// call it, any number of times; each call returns the final counts.
    pub async fn shutdown(&self) -> Stats {
        let s = self.shared();
        s.queue.close();
        let mut done = s.done.subscribe();
        // The sender lives in `Shared`, which outlives this call.
        let _ = done.wait_for(|d| *d).await;
        self.stats()
    }
}

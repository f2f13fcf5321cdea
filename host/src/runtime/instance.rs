//! Live plugin instances and the calls into them: each call runs under the
//! pump's epoch deadline and wall-clock timeout, and a failure is
//! classified as a timeout, a memory breach or a trap.
//!
//! Every instance runs on a thread of its own ([`Instance`] is a handle to
//! it): guest code that computes for seconds occupies that thread only,
//! never one of the async runtime's workers, which claims, acks, HTTP and
//! the other pumps need. Host calls the guest makes (timers, sockets, HTTP,
//! `kv`) still run on the runtime's reactor through its handle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use wasmtime::Store;

use super::bindings::{filter, sink, Batch, PluginInfo, Verdict, WriteError};
use super::text::{clean, PluginText};
use super::{CallError, PluginState};
use crate::config::EPOCH_TICK;

/// Advances the engine's epoch every [`EPOCH_TICK`] while a plugin call
/// runs, and sleeps while none does: an idle host would otherwise wake a
/// hundred times a second for nothing.
#[derive(Default)]
pub(super) struct Ticker {
    /// Plugin calls in progress.
    busy: AtomicUsize,
    pub(super) thread: OnceLock<std::thread::Thread>,
}

impl Ticker {
    /// Marks a call in progress until the guard drops.
    pub(super) fn enter(&self) -> Busy<'_> {
        if self.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        Busy(self)
    }

    pub(super) fn run(&self, engine: wasmtime::EngineWeak) {
        while let Some(engine) = engine.upgrade() {
            if self.busy.load(Ordering::Acquire) > 0 {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            } else {
                drop(engine);
                // Woken by the next call; the timeout only notices a
                // dropped engine.
                std::thread::park_timeout(Duration::from_secs(1));
            }
        }
    }
}

pub(super) struct Busy<'a>(&'a Ticker);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) enum Exports {
    Sink(sink::PumpSink),
    Filter(filter::PumpFilter),
}

/// A call that took at least this share of its timeout ran "near its
/// timeout": the pump is reported degraded, since a slightly larger batch
/// or a busier machine would make it time out.
pub const NEAR_TIMEOUT: f64 = 0.8;

/// How long past its own timeout a call may go unanswered before the
/// caller stops waiting: the guard on the instance's thread ends every
/// call at its timeout, and this covers a thread stuck in a blocking host
/// call (a hung file system) where neither epochs nor timers reach it.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// What a plugin call is given: a batch the caller keeps sharing (the
/// lane's encoded form of a claimed batch is shared by every pump) while
/// the instance's thread reads it.
pub trait AsBatch: Send + Sync + 'static {
    fn as_batch(&self) -> &Batch;
}

impl AsBatch for Batch {
    fn as_batch(&self) -> &Batch {
        self
    }
}

/// A batch handed to an instance's thread.
pub type SharedBatch = Arc<dyn AsBatch>;

/// An answer from the instance's thread and how long the call took.
type Reply<T> = oneshot::Sender<(Result<T, CallError>, Duration)>;

/// A call for the instance's thread.
enum Job {
    Describe(Reply<PluginInfo>),
    Init(String, Reply<()>),
    Write(SharedBatch, Reply<Result<(), WriteError>>),
    Process(SharedBatch, Reply<Result<Verdict, String>>),
}

/// A live plugin instance: a handle to the thread that owns its store.
/// After any [`CallError`] it must be dropped; dropping it ends the thread
/// once a call in progress returns.
pub struct Instance {
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// No call is in progress: the thread waits for the next job.
    idle: bool,
    timeout: Duration,
    /// How long the last call took.
    last: Duration,
}

impl Drop for Instance {
    /// An idle instance's thread frees the store as soon as it sees the
    /// channel close; waiting for that (a short, bounded wait) means the
    /// store's last words, such as its pump's log-suppression summary, come
    /// before the host exits. A thread still in an abandoned call is not
    /// waited for: its guard ends the call.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            if self.idle {
                let _ = t.join();
            }
        }
    }
}

/// The instance's store and exports, owned by its thread.
pub(super) struct Live {
    pub(super) store: Store<PluginState>,
    pub(super) exports: Exports,
    pub(super) ticks: u64,
    pub(super) timeout: Duration,
    pub(super) ticker: Arc<Ticker>,
}

/// Runs a plugin call under the wall-clock timeout and classifies failures.
/// Epochs stop a guest spinning on the CPU; the wall clock also covers time
/// spent waiting in host calls, where epochs do not fire.
pub(super) async fn guard<R>(
    ticker: &Ticker,
    timeout: Duration,
    call: impl std::future::Future<Output = wasmtime::Result<R>>,
) -> Result<R, CallError> {
    let _busy = ticker.enter();
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(CallError::Timeout(timeout)),
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(classify(e, timeout)),
    }
}

fn classify(e: wasmtime::Error, timeout: Duration) -> CallError {
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return CallError::Timeout(timeout);
        }
    }
    if let Some(over) = e.downcast_ref::<super::limits::OverLimit>() {
        return CallError::Memory(over.to_string());
    }
    let text = summary(&e);
    // wasmtime refuses a store's surplus memories, tables and instances
    // with a plain message ("resource limit exceeded: memory count too
    // high at 16"), so only the text tells.
    if text.contains("resource limit exceeded") {
        return CallError::Memory(format!(
            "{text} (an instance may have at most {} memories, {} tables and {} core instances)",
            super::limits::MAX_MEMORIES,
            super::limits::MAX_TABLES,
            super::limits::MAX_INSTANCES
        ));
    }
    if text.contains("growth failed") || text.contains("over sandbox.max_memory") {
        return CallError::Memory(text);
    }
    CallError::Trap(text)
}

/// What went wrong, then where. wasmtime wraps the cause (a trap code, or
/// the error of the host call that refused the guest, such as a stream
/// write over its 4096-byte copy limit) in the guest's backtrace, whose
/// text comes first: shown as is, the first lines said only where. Cut
/// like any plugin text: a trap message can quote the guest.
fn summary(e: &wasmtime::Error) -> String {
    // The backtrace is a context, not an error type: it is told apart in
    // the chain by its text.
    let backtrace = e
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| bt.to_string());
    let cause = e
        .chain()
        .map(|c| c.to_string())
        .filter(|c| Some(c) != backtrace.as_ref())
        .collect::<Vec<_>>()
        .join(": ");
    let frame = backtrace
        .as_deref()
        .and_then(|bt| bt.lines().nth(1))
        .map(|l| l.trim().to_string());
    let text = match frame {
        Some(frame) => format!("{cause} (in {frame})"),
        None => cause,
    };
    PluginText::new(&text).into_string()
}

/// Makes every string of a sink's answer a [`PluginText`], once, before
/// the host copies it into status, logs or dead letters.
fn clean_write_error(e: &mut WriteError) {
    match e {
        WriteError::Retry(s) | WriteError::InvalidBatch(s) | WriteError::Fatal(s) => clean(s),
        WriteError::Partial(failed) => failed.iter_mut().for_each(|f| clean(&mut f.reason)),
        WriteError::TooLarge => {}
    }
}

impl Live {
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.ticks);
    }

    /// The plugin's self-description, its name and version made
    /// [`PluginText`]s.
    async fn describe(&mut self) -> Result<PluginInfo, CallError> {
        let mut info = self.describe_raw().await?;
        clean(&mut info.name);
        clean(&mut info.version);
        Ok(info)
    }

    async fn describe_raw(&mut self) -> Result<PluginInfo, CallError> {
        self.arm();
        let (t, ticker) = (self.timeout, &self.ticker);
        // Both worlds export the same `plugin` interface, as two generated types.
        match &self.exports {
            Exports::Sink(s) => {
                let call = s.pumphouse_plugin_plugin().call_describe(&mut self.store);
                guard(ticker, t, call).await
            }
            Exports::Filter(f) => {
                let call = f.pumphouse_plugin_plugin().call_describe(&mut self.store);
                guard(ticker, t, call).await
            }
        }
    }

    pub(super) async fn init(&mut self, config_json: &str) -> Result<(), CallError> {
        self.arm();
        let (t, ticker) = (self.timeout, &self.ticker);
        let r = match &self.exports {
            Exports::Sink(s) => {
                let call = s.pumphouse_plugin_plugin();
                guard(ticker, t, call.call_init(&mut self.store, config_json)).await?
            }
            Exports::Filter(f) => {
                let call = f.pumphouse_plugin_plugin();
                guard(ticker, t, call.call_init(&mut self.store, config_json)).await?
            }
        };
        r.map_err(|e| CallError::Init(PluginText::new(&e).into_string()))
    }

    /// Sends a batch to a sink.
    async fn write(&mut self, batch: &Batch) -> Result<Result<(), WriteError>, CallError> {
        self.arm();
        let t = self.timeout;
        match &self.exports {
            Exports::Sink(s) => {
                let mut r = guard(
                    &self.ticker,
                    t,
                    s.pumphouse_plugin_sink().call_write(&mut self.store, batch),
                )
                .await;
                if let Ok(Err(e)) = &mut r {
                    clean_write_error(e);
                }
                r
            }
            Exports::Filter(_) => Err(CallError::Trap("write() called on a filter plugin".into())),
        }
    }

    /// Sends a batch through a filter.
    async fn process(&mut self, batch: &Batch) -> Result<Result<Verdict, String>, CallError> {
        self.arm();
        let t = self.timeout;
        match &self.exports {
            Exports::Filter(f) => {
                let mut r = guard(
                    &self.ticker,
                    t,
                    f.pumphouse_plugin_filter()
                        .call_process(&mut self.store, batch),
                )
                .await;
                if let Ok(Err(msg)) = &mut r {
                    clean(msg);
                }
                r
            }
            Exports::Sink(_) => Err(CallError::Trap("process() called on a sink plugin".into())),
        }
    }

    /// Answers calls until the [`Instance`] is dropped or a call fails (a
    /// failed instance is poisoned: its store is freed at once).
    fn serve(mut self, rt: &Handle, jobs: mpsc::Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            let started = Instant::now();
            let ok = match job {
                Job::Describe(tx) => answer(tx, started, rt.block_on(self.describe())),
                Job::Init(config, tx) => answer(tx, started, rt.block_on(self.init(&config))),
                Job::Write(b, tx) => answer(tx, started, rt.block_on(self.write(b.as_batch()))),
                Job::Process(b, tx) => answer(tx, started, rt.block_on(self.process(b.as_batch()))),
            };
            if !ok {
                break;
            }
        }
    }
}

/// A plugin instance called on the caller's own thread, without the hand-off
/// to a thread of its own that [`Instance`] makes: the reference of the
/// `handoff` benchmark, which measures what that hand-off costs. The host
/// never uses it: a call here would block the async runtime's thread.
#[doc(hidden)]
pub struct Inline(pub(super) Live);

impl Inline {
    /// Sends a batch to a sink, as [`Instance::write`] does.
    pub async fn write(&mut self, batch: &Batch) -> Result<Result<(), WriteError>, CallError> {
        self.0.write(batch).await
    }
}

/// Sends a call's result back; false when the call failed.
fn answer<T>(tx: Reply<T>, started: Instant, r: Result<T, CallError>) -> bool {
    let ok = r.is_ok();
    // The caller may have stopped waiting (shutdown); the result is moot.
    let _ = tx.send((r, started.elapsed()));
    ok
}

impl Instance {
    /// Starts the instance's thread and builds the instance on it with
    /// `build` (instantiation runs guest code too). Must be called from
    /// within the host's tokio runtime, whose handle the thread uses.
    pub(super) async fn spawn<F>(
        pump: &str,
        timeout: Duration,
        build: F,
    ) -> Result<Instance, CallError>
    where
        F: std::future::Future<Output = Result<Live, CallError>> + Send + 'static,
    {
        let rt = Handle::current();
        let (jobs, rx) = mpsc::channel();
        let (ready_tx, ready) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("plugin {pump}"))
            .spawn(move || match rt.block_on(build) {
                Ok(live) => {
                    if ready_tx.send(Ok(())).is_ok() {
                        live.serve(&rt, rx);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| {
                CallError::Instantiate(format!("cannot start the plugin's thread: {e}"))
            })?;
        match tokio::time::timeout(timeout + ANSWER_GRACE, ready).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(ended()),
            Err(_) => return Err(CallError::Timeout(timeout)),
        }
        Ok(Instance {
            jobs: Some(jobs),
            thread: Some(thread),
            idle: true,
            timeout,
            last: Duration::ZERO,
        })
    }

    /// Hands a call to the instance's thread and waits for its answer.
    async fn call<T>(&mut self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, CallError> {
        let (tx, rx) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or_else(ended)?;
        jobs.send(job(tx)).map_err(|_| ended())?;
        // Cleared until the answer comes: a caller that stops waiting
        // (timeout, shutdown) leaves the instance busy.
        self.idle = false;
        match tokio::time::timeout(self.timeout + ANSWER_GRACE, rx).await {
            Ok(Ok((r, took))) => {
                self.idle = true;
                self.last = took;
                r
            }
            Ok(Err(_)) => Err(ended()),
            Err(_) => Err(CallError::Timeout(self.timeout)),
        }
    }

    /// The plugin's self-description, its name and version made
    /// [`PluginText`]s.
    pub async fn describe(&mut self) -> Result<PluginInfo, CallError> {
        self.call(Job::Describe).await
    }

    pub(super) async fn init(&mut self, config_json: &str) -> Result<(), CallError> {
        let config = config_json.to_string();
        self.call(|tx| Job::Init(config, tx)).await
    }

    /// Sends a batch to a sink.
    pub async fn write(&mut self, batch: SharedBatch) -> Result<Result<(), WriteError>, CallError> {
        self.call(|tx| Job::Write(batch, tx)).await
    }

    /// Sends a batch through a filter.
    pub async fn process(
        &mut self,
        batch: SharedBatch,
    ) -> Result<Result<Verdict, String>, CallError> {
        self.call(|tx| Job::Process(batch, tx)).await
    }

    /// How long the last call took when that was at least [`NEAR_TIMEOUT`]
    /// of the timeout.
    pub fn near_timeout(&self) -> Option<Duration> {
        (self.last.as_secs_f64() >= self.timeout.as_secs_f64() * NEAR_TIMEOUT).then_some(self.last)
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn ended() -> CallError {
    CallError::Trap("the plugin's thread ended".into())
}

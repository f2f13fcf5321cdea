//! Live plugin instances and the calls into them: each call runs under the
//! pump's epoch deadline and wall-clock timeout, and a failure is
//! classified as a timeout, a memory breach or a trap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

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

/// A live plugin instance. After any [`CallError`] it must be dropped.
pub struct Instance {
    pub(super) store: Store<PluginState>,
    pub(super) exports: Exports,
    pub(super) ticks: u64,
    pub(super) timeout: Duration,
    pub(super) ticker: std::sync::Arc<Ticker>,
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
    let text = format!("{e:#}");
    if text.contains("growth failed") || text.contains("over sandbox.max_memory") {
        return CallError::Memory(summary(&text));
    }
    CallError::Trap(summary(&text))
}

/// The first lines of an error: wasmtime appends a multi-line backtrace,
/// and the first lines say what happened. Cut like any plugin text: a
/// trap message can quote the guest.
fn summary(s: &str) -> String {
    PluginText::new(&s.lines().take(3).collect::<Vec<_>>().join(" | ")).into_string()
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

impl Instance {
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.ticks);
    }

    /// The plugin's self-description, its name and version made
    /// [`PluginText`]s.
    pub async fn describe(&mut self) -> Result<PluginInfo, CallError> {
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
    pub async fn write(&mut self, batch: &Batch) -> Result<Result<(), WriteError>, CallError> {
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
    pub async fn process(&mut self, batch: &Batch) -> Result<Result<Verdict, String>, CallError> {
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
}

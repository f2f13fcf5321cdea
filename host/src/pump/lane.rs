//! One pump's lane: host filters, the filter-plugin chain
//! ([`super::filter_chain`]), then the sink ([`super::deliver`]), with
//! retry and dead letters. A lane owns its plugin instances; a call that
//! fails poisons only this lane's instance. This file holds the lane itself,
//! its memory loop and its ticks; `buffer = "disk"` lanes run
//! [`super::disk`]'s loop instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::batch::{Batch, Form};
use crate::config::RetryConfig;
use crate::dlq::{DeadLetters, DeadRecord};
use crate::record::Schema;
use crate::runtime::bindings as wit;
use crate::runtime::{CallError, Instance};
use crate::spool::Spool;
use crate::status::PumpState;
use crate::telemetry;

use super::encode::{Item, Payload};
use super::retry::{Next, RetryPolicy};
use super::spec::PumpSpec;
use super::{Phase, PumpError};

/// The queue a pump's workers share.
pub type SharedQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Arc<Batch>>>>;

/// Where a memory lane takes its batches from.
enum Inbox {
    Own(mpsc::Receiver<Arc<Batch>>),
    Shared(SharedQueue),
}

impl Inbox {
    /// The next batch and how many wait behind it; `None` once closed.
    async fn recv(&mut self) -> Option<(Arc<Batch>, usize)> {
        match self {
            Inbox::Own(rx) => rx.recv().await.map(|b| (b, rx.len())),
            Inbox::Shared(rx) => {
                let mut rx = rx.lock().await;
                rx.recv().await.map(|b| (b, rx.len()))
            }
        }
    }

    /// How many batches wait, when that can be read without waiting.
    fn len(&self) -> Option<usize> {
        match self {
            Inbox::Own(rx) => Some(rx.len()),
            Inbox::Shared(rx) => rx.try_lock().ok().map(|rx| rx.len()),
        }
    }
}

pub struct Lane {
    /// Shared by the pump's workers (one rate limit, one status).
    pub(super) spec: Arc<PumpSpec>,
    pub(super) sink: Option<Instance>,
    pub(super) filters: Vec<Option<Instance>>,
    pub(super) retry: RetryPolicy,
    pub(super) dead_letters: DeadLetters,
    /// `buffer = "disk"`: the spool, and the schema to decode it with.
    spool: Option<(Arc<Spool>, Schema)>,
    /// The schema of the last batch, for tick batches.
    schema: Schema,
    /// Which plugin of the current batch answered near its timeout, and
    /// that timeout: the pump is then degraded, not ok.
    slow_call: Option<(Arc<str>, Duration)>,
    /// After a failed start at the daemon's start: when to try again, and
    /// the backoff between tries. Retried on this timer while the lane is
    /// idle, so `/readyz` recovers without waiting for a batch; cleared
    /// once the pump delivers or its instances start.
    start_retry: Option<(tokio::time::Instant, RetryPolicy)>,
}

impl Lane {
    /// Starts the lane's plugin instances. At a reload an `init` failure
    /// is returned: the pump's old lane keeps running. At the daemon's
    /// start there is no old lane, and one failing pump must not keep the
    /// others from starting: the lane starts without instances, `/readyz`
    /// shows the pump `retrying` with the error, and the lane starts the
    /// instances again with the pump's backoff, on its own timer while
    /// idle ([`Lane::retry_start`]) and when batches come, as after a crash.
    pub async fn start(
        spec: Arc<PumpSpec>,
        dead_letters: DeadLetters,
        phase: Phase,
    ) -> Result<Lane, PumpError> {
        let mut start_retry = None;
        let (sink, filters) = match spec.start_instances().await {
            Ok((sink, filters)) => (Some(sink), filters.into_iter().map(Some).collect()),
            Err(PumpError::Instance {
                pump,
                role,
                path,
                source,
            }) if phase == Phase::Start => {
                let kind = source.kind();
                let e = PumpError::Instance {
                    pump,
                    role,
                    path,
                    source,
                };
                tracing::error!(
                    pump = &*spec.name,
                    "{e}; the other pumps start, this one is retried with backoff"
                );
                metrics::counter!(telemetry::PUMP_ERRORS, "pump" => spec.name.to_string(), "kind" => kind)
                    .increment(1);
                spec.status.add_error();
                spec.status.set(PumpState::Retrying {
                    kind: kind.to_string(),
                    error: e.to_string(),
                });
                // Start attempts are not attempts at records: they go on
                // until one works, whatever retry.max_attempts says.
                let mut policy = RetryPolicy::new(&RetryConfig {
                    max_attempts: None,
                    ..spec.retry.clone()
                });
                let delay = policy.after_failure().unwrap_or(spec.retry.max);
                start_retry = Some((tokio::time::Instant::now() + delay, policy));
                (None, spec.filters.iter().map(|_| None).collect())
            }
            Err(e) => return Err(e),
        };
        let retry = RetryPolicy::new(&spec.retry);
        Ok(Lane {
            spec,
            sink,
            filters,
            retry,
            dead_letters,
            spool: None,
            schema: Schema::Generic,
            slow_call: None,
            start_retry,
        })
    }

    /// The pump's name.
    pub fn name(&self) -> Arc<str> {
        self.spec.name.clone()
    }

    /// The form the lane's first plugin (its first filter, else its sink)
    /// reads batches in.
    pub fn first_form(&self) -> Form {
        let encoding = match self.spec.filters.first() {
            Some((plugin, _)) => plugin.info.accepts,
            None => self.spec.sink.info.accepts,
        };
        Form {
            encoding,
            omit_detail: self.spec.omit_detail,
        }
    }

    /// Makes this a disk-buffered lane draining `spool`.
    pub fn with_spool(mut self, spool: Arc<Spool>, schema: Schema) -> Lane {
        self.spool = Some((spool, schema));
        self.schema = schema;
        self
    }

    /// Works through batches until the dispatcher closes the channel; hands
    /// each finished batch to the acker when this was its last lane.
    pub async fn run(
        self,
        rx: mpsc::Receiver<Arc<Batch>>,
        done: mpsc::UnboundedSender<Arc<Batch>>,
    ) {
        match self.spool.clone() {
            Some((spool, schema)) => self.run_disk(spool, schema, rx, done).await,
            None => self.run_memory(Inbox::Own(rx), done).await,
        }
    }

    /// As [`Lane::run`] for one of a pump's `workers` (memory lanes only):
    /// it takes its batches from the queue the workers share.
    pub async fn run_shared(self, rx: SharedQueue, done: mpsc::UnboundedSender<Arc<Batch>>) {
        self.run_memory(Inbox::Shared(rx), done).await
    }

    async fn run_memory(mut self, mut rx: Inbox, done: mpsc::UnboundedSender<Arc<Batch>>) {
        let depth =
            metrics::gauge!(telemetry::PUMP_LANE_DEPTH, "pump" => self.spec.name.to_string());
        let latency = metrics::histogram!(telemetry::PUMP_BATCH_SECONDS, "pump" => self.spec.name.to_string());
        loop {
            let next = tokio::select! {
                next = rx.recv() => next,
                _ = idle(self.spec.tick) => {
                    self.tick().await;
                    continue;
                }
                _ = start_due(self.start_due_at()) => {
                    self.retry_start().await;
                    continue;
                }
            };
            let Some((batch, queued)) = next else { break };
            depth.set(queued as f64 + 1.0);
            let started = Instant::now();
            self.handle(&batch).await;
            latency.record(started.elapsed().as_secs_f64());
            if let Some(queued) = rx.len() {
                depth.set(queued as f64);
            }
            if batch.finish_lane() {
                // The acker outlives the lanes; a send error means shutdown
                // already gave up, and the claim will be re-delivered.
                let _ = done.send(batch);
            }
        }
    }

    /// Starts a sink instance if the last one was discarded (or none ran).
    pub(super) async fn start_sink(&mut self) -> Result<(), CallError> {
        if self.sink.is_none() {
            let spec = &self.spec;
            self.sink = Some(
                spec.sink
                    .start(&spec.name, &spec.sandbox, &spec.sink_config)
                    .await?,
            );
        }
        Ok(())
    }

    /// When the next start attempt of a lane whose start failed is due.
    pub(super) fn start_due_at(&self) -> Option<tokio::time::Instant> {
        self.start_retry.as_ref().map(|(at, _)| *at)
    }

    /// Tries again to start the instances that failed at the daemon's
    /// start: on success the pump is ok on `/readyz` before any batch
    /// comes; on failure it is counted and reported as at start, and the
    /// next try waits longer.
    pub(super) async fn retry_start(&mut self) {
        match self.start_missing().await {
            Ok(()) => {
                tracing::info!(pump = &*self.spec.name, "pump started after failing to");
                self.recovered();
            }
            Err((kind, error)) => {
                self.count_error(kind);
                self.spec.status.set(PumpState::Retrying {
                    kind: kind.to_string(),
                    error: error.clone(),
                });
                if let Some((at, policy)) = &mut self.start_retry {
                    let delay = policy.after_failure().unwrap_or(self.spec.retry.max);
                    *at = tokio::time::Instant::now() + delay;
                    tracing::warn!(pump = &*self.spec.name, kind, attempt = policy.failures, retry_in = ?delay, "{error}");
                }
            }
        }
    }

    /// Starts the sink and the filters that have no instance.
    async fn start_missing(&mut self) -> Result<(), (&'static str, String)> {
        self.start_sink().await.map_err(|e| {
            let path = self.spec.sink.path.display();
            (e.kind(), format!("sink {path}: {e}"))
        })?;
        let spec = &self.spec;
        for (slot, (plugin, config)) in self.filters.iter_mut().zip(&spec.filters) {
            if slot.is_none() {
                let inst = plugin
                    .start(&spec.name, &spec.sandbox, config)
                    .await
                    .map_err(|e| (e.kind(), format!("filter {}: {e}", plugin.path.display())))?;
                *slot = Some(inst);
            }
        }
        Ok(())
    }

    /// Sends the sink an empty batch: the pump's records have paused for
    /// `tick_interval`. A failed tick is counted and logged, never retried:
    /// the next tick comes soon enough.
    pub(super) async fn tick(&mut self) {
        if let Err(e) = self.start_sink().await {
            self.count_error(e.kind());
            tracing::warn!(pump = &*self.spec.name, "tick skipped: {e}");
            return;
        }
        let error = match self.write_empty(self.schema).await {
            Ok(()) => return,
            Err(error) => error,
        };
        self.count_error("tick");
        tracing::warn!(pump = &*self.spec.name, "tick failed: {error}");
    }

    /// Writes an empty batch of `schema` to the started sink (a tick's
    /// call); an instance that traps is discarded.
    pub(super) async fn write_empty(&mut self, schema: Schema) -> Result<(), String> {
        let empty = wit::Batch {
            schema: schema.into(),
            encoding: self.spec.sink.info.accepts,
            payloads: Vec::new(),
            events: Vec::new(),
        };
        let inst = self.sink.as_mut().expect("the sink is started");
        match inst.write(Arc::new(empty)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{e:?}")),
            Err(e) => {
                self.sink = None;
                Err(e.to_string())
            }
        }
    }

    /// One batch through the whole lane: host filters and size cap, the
    /// filter chain, the sink, then the dead letters of what failed.
    pub(super) async fn handle(&mut self, batch: &Batch) {
        self.schema = batch.schema;
        self.slow_call = None;
        let pump = self.spec.name.to_string();
        let mut dead = Vec::new();
        let mut items = Vec::with_capacity(batch.len());
        let mut filtered = 0u64;
        for (i, m) in batch.meta.iter().enumerate() {
            if !self.spec.host_filter.keep(m) {
                filtered += 1;
                continue;
            }
            let item = Item {
                id: m.id,
                timestamp: batch.event_timestamp(i),
                payload: Payload::Original(i as u32),
            };
            // Checked before anything copies or re-encodes the record.
            let size = batch.records[i].len() as u64;
            let max = self.spec.max_record_size;
            if size > max {
                dead.push(item.dead(
                    batch,
                    format!("record of {size} bytes exceeds max_record_size of {max} bytes"),
                ));
            } else {
                items.push(item);
            }
        }
        for fi in 0..self.spec.filters.len() {
            if items.is_empty() {
                break;
            }
            let (before, dead_before) = (items.len(), dead.len());
            items = self.run_filter(fi, batch, items, &mut dead).await;
            // Records the filter did not pass on and that were not
            // dead-lettered meanwhile were filtered: each record ends in
            // exactly one bucket.
            let died = dead.len() - dead_before;
            filtered += before.saturating_sub(items.len() + died) as u64;
        }
        if filtered > 0 {
            metrics::counter!(telemetry::PUMP_RECORDS_FILTERED, "pump" => pump.clone())
                .increment(filtered);
        }
        if !items.is_empty() {
            self.deliver(batch, items, &mut dead).await;
        }
        cap_dead_letters(&mut dead, batch.len(), &pump);
        if !dead.is_empty() {
            self.spec.status.add_dead_lettered(dead.len() as u64);
            self.dead_letters.write(&batch.key, Some(&pump), dead).await;
        }
    }

    /// Dead-letters records whose attempts ran out.
    pub(super) fn give_up(
        &mut self,
        batch: &Batch,
        items: Vec<Item>,
        dead: &mut Vec<DeadRecord>,
        error: &str,
    ) {
        let attempts = self.retry.failures;
        tracing::error!(
            pump = &*self.spec.name,
            records = items.len(),
            attempts,
            "giving up on records after retry.max_attempts; dead-lettering them: {error}"
        );
        metrics::counter!(telemetry::PUMP_RECORDS_GAVE_UP, "pump" => self.spec.name.to_string())
            .increment(items.len() as u64);
        let reason = format!("gave up after {attempts} attempts: {error}");
        dead.extend(items.into_iter().map(|i| i.dead(batch, reason.clone())));
        self.retry.reset();
    }

    pub(super) fn count_error(&self, kind: &'static str) {
        self.spec.status.add_error();
        metrics::counter!(telemetry::PUMP_ERRORS, "pump" => self.spec.name.to_string(), "kind" => kind).increment(1);
    }

    /// Counts and reports a failed attempt, then waits out the backoff.
    pub(super) async fn failed(&mut self, kind: &'static str, error: &str) -> Next {
        let state = PumpState::Retrying {
            kind: kind.to_string(),
            error: error.to_string(),
        };
        self.back_off(kind, error, state).await
    }

    /// Counts an error and shows `state` on `/readyz`; then, unless the
    /// attempts are used up, sleeps the policy's next delay.
    pub(super) async fn back_off(
        &mut self,
        kind: &'static str,
        error: &str,
        state: PumpState,
    ) -> Next {
        self.count_error(kind);
        self.spec.status.set(state);
        let Some(delay) = self.retry.after_failure() else {
            return Next::GiveUp;
        };
        tracing::warn!(pump = &*self.spec.name, kind, attempt = self.retry.failures, retry_in = ?delay, "{error}");
        tokio::time::sleep(delay).await;
        Next::Retry
    }

    pub(super) fn recovered(&mut self) {
        if self.retry.failures > 0 {
            tracing::info!(
                pump = &*self.spec.name,
                after = self.retry.failures,
                "pump recovered"
            );
        }
        self.retry.reset();
        self.start_retry = None;
        let state = match &self.slow_call {
            None => PumpState::Ok,
            Some((plugin, timeout)) => PumpState::Degraded {
                error: format!(
                    "{plugin} calls run near their timeout of {timeout:?} (over {:.0}% of it)",
                    crate::runtime::NEAR_TIMEOUT * 100.0
                ),
            },
        };
        self.spec.status.set(state);
    }

    /// Notes a call of `plugin` that answered near its timeout (see
    /// [`Lane::recovered`]).
    pub(super) fn note_slow(&mut self, plugin: &str, timeout: Duration) {
        if self.slow_call.is_none() {
            self.slow_call = Some((Arc::from(plugin), timeout));
        }
    }
}

/// Keeps a batch's dead letters within the batch's own record count: only
/// a filter's `replace` can make more records than it was shown, and its
/// surplus must not turn one claimed batch into a flood of entries in
/// Redis. What is left out is counted and logged.
pub(super) fn cap_dead_letters(dead: &mut Vec<DeadRecord>, records: usize, pump: &str) {
    let cap = records.max(1);
    if dead.len() <= cap {
        return;
    }
    let over = dead.len() - cap;
    let reason = crate::runtime::text::PluginText::new(&dead[cap].reason);
    dead.truncate(cap);
    metrics::counter!(telemetry::PUMP_DEAD_LETTERS_CAPPED, "pump" => pump.to_string())
        .increment(over as u64);
    tracing::error!(
        pump,
        kept = cap,
        left_out = over,
        "a batch of {records} records made more dead letters than it holds records; {over} filter-made records were counted, not stored (first: {reason})"
    );
}

/// Resolves at `at` when set; never otherwise.
pub(super) async fn start_due(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves after `tick` when set; never otherwise.
pub(super) async fn idle(tick: Option<Duration>) {
    match tick {
        Some(every) => tokio::time::sleep(every).await,
        None => std::future::pending().await,
    }
}

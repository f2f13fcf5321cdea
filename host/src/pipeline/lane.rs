//! One pump's lane: host filters, the filter-plugin chain, then the sink,
//! with retry, split, bisect and dead letters. A lane owns its plugin
//! instances; a call that fails poisons only this lane's instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, Encoded, Form};
use crate::dlq::{DeadLetters, DeadRecord};
use super::filters::HostFilter;
use super::ratelimit::RateLimits;
use super::retry::RetryPolicy;
use super::status::{PumpState, PumpStatus};
use crate::config::RetryConfig;
use crate::config::WhenFull;
use crate::record::{self, Schema};
use crate::runtime::bindings::{self as wit, Encoding, Verdict, WriteError};
use crate::runtime::{CallError, Instance, Plugin, Sandbox};
use crate::spool::Spool;
use crate::telemetry;

/// Batches the spool writer takes from its queue into one commit (one
/// fsync): bounds the commit size while the pump is busy.
const SPOOL_COMMIT_BATCHES: usize = 32;

/// Everything a lane needs, fixed at start.
pub struct LaneSpec {
    pub name: Arc<str>,
    pub sink: Arc<Plugin>,
    pub sink_config: String,
    pub filters: Vec<(Arc<Plugin>, String)>,
    pub host_filter: HostFilter,
    pub omit_detail: bool,
    pub max_record_size: Option<u64>,
    /// Largest payload per sink call; bigger groups are split first.
    pub max_batch_bytes: Option<usize>,
    pub rate: Option<RateLimits>,
    pub sandbox: Sandbox,
    pub retry: RetryConfig,
    pub status: Arc<PumpStatus>,
    /// Send the sink an empty batch after this long without records.
    pub tick: Option<Duration>,
}

/// The batch of one plugin call.
enum CallBatch {
    /// The shared form of the whole batch.
    Whole(Arc<Encoded>),
    /// Made for this call: some records were filtered out, replaced or
    /// could not be encoded.
    Own(wit::Batch),
}

impl CallBatch {
    fn get(&self) -> &wit::Batch {
        match self {
            CallBatch::Whole(e) => &e.whole,
            CallBatch::Own(b) => b,
        }
    }
}

/// A record on its way through the lane.
struct Item {
    id: u64,
    timestamp: i64,
    /// Index in the batch when the record is still the source's.
    origin: Option<u32>,
    /// Bytes a filter produced (`replace`), in the filter's encoding.
    owned: Option<(Encoding, Vec<u8>)>,
}

impl Item {
    fn dead(self, batch: &Batch, reason: String) -> DeadRecord {
        let (encoding, bytes) = match (self.origin, self.owned) {
            (_, Some((e, b))) => (e, b),
            (Some(i), None) => (Encoding::Msgpack, batch.records[i as usize].clone()),
            (None, None) => (Encoding::Msgpack, Vec::new()),
        };
        DeadRecord {
            bytes,
            encoding,
            reason,
        }
    }
}

/// Instantiates and inits a pump's sink and filters; the error names the
/// pump and the plugin file. Used by lanes and by `pumphouse check`.
pub async fn start_instances(spec: &LaneSpec) -> Result<(Instance, Vec<Instance>), String> {
    let sink = spec
        .sink
        .start(&spec.name, &spec.sandbox, &spec.sink_config)
        .await
        .map_err(|e| format!("pump {}: sink {}: {e}", spec.name, spec.sink.path.display()))?;
    let mut filters = Vec::with_capacity(spec.filters.len());
    for (plugin, config) in &spec.filters {
        let inst = plugin
            .start(&spec.name, &spec.sandbox, config)
            .await
            .map_err(|e| format!("pump {}: filter {}: {e}", spec.name, plugin.path.display()))?;
        filters.push(inst);
    }
    Ok((sink, filters))
}

pub struct Lane {
    spec: LaneSpec,
    sink: Option<Instance>,
    filters: Vec<Option<Instance>>,
    retry: RetryPolicy,
    dead_letters: DeadLetters,
    /// `buffer = "disk"`: the spool, and the schema to decode it with.
    spool: Option<(Arc<Spool>, Schema)>,
    /// The schema of the last batch, for tick batches.
    schema: Schema,
}

impl Lane {
    /// Starts the lane's plugin instances; an `init` failure is returned so
    /// a bad pump config stops the daemon at start with a clear message.
    pub async fn start(spec: LaneSpec, dead_letters: DeadLetters) -> Result<Lane, String> {
        let (sink, filters) = start_instances(&spec).await?;
        let retry = RetryPolicy::new(&spec.retry);
        Ok(Lane {
            spec,
            sink: Some(sink),
            filters: filters.into_iter().map(Some).collect(),
            retry,
            dead_letters,
            spool: None,
            schema: Schema::Generic,
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
            None => self.run_memory(rx, done).await,
        }
    }

    async fn run_memory(
        mut self,
        mut rx: mpsc::Receiver<Arc<Batch>>,
        done: mpsc::UnboundedSender<Arc<Batch>>,
    ) {
        let depth =
            metrics::gauge!(telemetry::PUMP_LANE_DEPTH, "pump" => self.spec.name.to_string());
        let latency = metrics::histogram!(telemetry::PUMP_BATCH_SECONDS, "pump" => self.spec.name.to_string());
        loop {
            let next = match self.spec.tick {
                None => rx.recv().await,
                Some(every) => match tokio::time::timeout(every, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.tick().await;
                        continue;
                    }
                },
            };
            let Some(batch) = next else { break };
            depth.set(rx.len() as f64 + 1.0);
            let started = Instant::now();
            self.handle(&batch).await;
            latency.record(started.elapsed().as_secs_f64());
            depth.set(rx.len() as f64);
            if batch.finish_lane() {
                // The acker outlives the lanes; a send error means shutdown
                // already gave up, and the claim will be re-delivered.
                let _ = done.send(batch);
            }
        }
    }

    /// `buffer = "disk"`: a writer task spools each batch and releases this
    /// lane's share of it at once; this task delivers from the spool, oldest
    /// first. On shutdown it stops after the batch in hand; the rest stays
    /// spooled for the next start.
    async fn run_disk(
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
        let mut delay = Duration::from_millis(100);
        loop {
            let s = spool.clone();
            let next = tokio::task::spawn_blocking(move || s.oldest()).await;
            match next {
                Ok(Ok(Some((seq, spooled)))) => {
                    delay = Duration::from_millis(100);
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
                    remove_spooled(&self.spec.name, &spool, seq).await;
                    room.notify_one();
                    if closed.is_cancelled() {
                        break;
                    }
                }
                Ok(Ok(None)) => {
                    if closed.is_cancelled() {
                        break;
                    }
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = closed.cancelled() => {}
                        _ = idle(self.spec.tick) => self.tick().await,
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        pump = &*self.spec.name,
                        "cannot read the spool, retrying in {delay:?}: {e}"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::error!(pump = &*self.spec.name, "spool read task failed: {e}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let _ = writer.await;
    }

    /// Starts a sink instance if the last one was discarded (or none ran).
    async fn start_sink(&mut self) -> Result<(), CallError> {
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

    /// Sends the sink an empty batch: the pump's records have paused for
    /// `tick_interval`. A failed tick is counted and logged, never retried:
    /// the next tick comes soon enough.
    async fn tick(&mut self) {
        if let Err(e) = self.start_sink().await {
            self.count_error(e.kind());
            tracing::warn!(pump = &*self.spec.name, "tick skipped: {e}");
            return;
        }
        let empty = wit::Batch {
            schema: self.schema.into(),
            encoding: self.spec.sink.info.accepts,
            payloads: Vec::new(),
            events: Vec::new(),
        };
        let inst = self.sink.as_mut().expect("started above");
        let error = match inst.write(&empty).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:?}"),
            Err(e) => {
                self.sink = None;
                e.to_string()
            }
        };
        self.count_error("tick");
        tracing::warn!(pump = &*self.spec.name, "tick failed: {error}");
    }

    async fn handle(&mut self, batch: &Batch) {
        self.schema = batch.schema;
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
                origin: Some(i as u32),
                owned: None,
            };
            let size = batch.records[i].len() as u64;
            match self.spec.max_record_size {
                Some(max) if size > max => dead.push(item.dead(
                    batch,
                    format!("record of {size} bytes exceeds max_record_size of {max} bytes"),
                )),
                _ => items.push(item),
            }
        }
        for fi in 0..self.spec.filters.len() {
            if items.is_empty() {
                break;
            }
            let before = items.len();
            items = self.run_filter(fi, batch, items, &mut dead).await;
            filtered += before.saturating_sub(items.len()) as u64;
        }
        if filtered > 0 {
            metrics::counter!(telemetry::PUMP_RECORDS_FILTERED, "pump" => pump.clone())
                .increment(filtered);
        }
        if !items.is_empty() {
            self.deliver(batch, items, &mut dead).await;
        }
        if !dead.is_empty() {
            self.spec.status.add_dead_lettered(dead.len() as u64);
            self.dead_letters.write(&batch.key, Some(&pump), dead).await;
        }
    }

    async fn run_filter(
        &mut self,
        fi: usize,
        batch: &Batch,
        mut items: Vec<Item>,
        dead: &mut Vec<DeadRecord>,
    ) -> Vec<Item> {
        let plugin = self.spec.filters[fi].0.clone();
        loop {
            let (wb, kept) = self.materialize(batch, items, plugin.info.accepts, dead);
            let wb = wb.get();
            items = kept;
            if items.is_empty() {
                return items;
            }
            if self.filters[fi].is_none() {
                match plugin
                    .start(
                        &self.spec.name,
                        &self.spec.sandbox,
                        &self.spec.filters[fi].1,
                    )
                    .await
                {
                    Ok(inst) => self.filters[fi] = Some(inst),
                    Err(e) => {
                        let why = format!("filter {}: {e}", plugin.info.name);
                        if !self.failed(e.kind(), &why).await {
                            self.give_up(batch, items, dead, &why);
                            return Vec::new();
                        }
                        continue;
                    }
                }
            }
            let inst = self.filters[fi].as_mut().expect("started above");
            let (kind, why) = match inst.process(wb).await {
                Ok(Ok(verdict)) => match apply_verdict(verdict, items, batch.claimed_at_ms) {
                    Ok(kept) => {
                        self.recovered();
                        return kept;
                    }
                    Err((back, why)) => {
                        items = back;
                        ("malformed", format!("filter {}: {why}", plugin.info.name))
                    }
                },
                Ok(Err(msg)) => (
                    "filter_error",
                    format!("filter {}: {msg}", plugin.info.name),
                ),
                Err(e) => {
                    self.filters[fi] = None;
                    (e.kind(), format!("filter {}: {e}", plugin.info.name))
                }
            };
            if !self.failed(kind, &why).await {
                self.give_up(batch, items, dead, &why);
                return Vec::new();
            }
        }
    }

    /// Writes items to the sink until each is delivered or dead-lettered.
    /// Groups the sink rejects as too large or invalid are halved; a single
    /// record it still rejects is dead-lettered with the sink's reason.
    async fn deliver(&mut self, batch: &Batch, items: Vec<Item>, dead: &mut Vec<DeadRecord>) {
        let pump = self.spec.name.to_string();
        let written = metrics::counter!(telemetry::PUMP_RECORDS_WRITTEN, "pump" => pump.clone());
        let accepts = self.spec.sink.info.accepts;
        let mut stack = vec![items];
        while let Some(mut group) = stack.pop() {
            let (wb, kept) = self.materialize(batch, group, accepts, dead);
            let wb = wb.get();
            group = kept;
            if group.is_empty() {
                continue;
            }
            if let Some(at) = self
                .spec
                .max_batch_bytes
                .and_then(|max| split_point(&wb.events, max))
            {
                // Over max_batch_bytes: send the part that fits first.
                stack.push(group.split_off(at));
                stack.push(group);
                continue;
            }
            if let Err(e) = self.start_sink().await {
                self.retry_or_give_up(e.kind(), &e.to_string(), group, &mut stack, batch, dead)
                    .await;
                continue;
            }
            if let Some(rate) = &self.spec.rate {
                let waited = rate.wait(group.len(), wb.payloads.len()).await;
                if !waited.is_zero() {
                    metrics::counter!(telemetry::PUMP_THROTTLED_MS, "pump" => pump.clone())
                        .increment(waited.as_millis() as u64);
                }
            }
            let inst = self.sink.as_mut().expect("started above");
            match inst.write(wb).await {
                Ok(Ok(())) => {
                    written.increment(group.len() as u64);
                    self.spec.status.add_written(group.len() as u64);
                    self.recovered();
                }
                Ok(Err(WriteError::Retry(msg))) => {
                    self.retry_or_give_up("retry", &msg, group, &mut stack, batch, dead)
                        .await;
                }
                Ok(Err(WriteError::TooLarge)) => {
                    self.count_error("too_large");
                    split_or_kill(
                        group,
                        &mut stack,
                        dead,
                        batch,
                        "the sink says this record is too large",
                    );
                }
                Ok(Err(WriteError::InvalidBatch(msg))) => {
                    self.count_error("invalid");
                    split_or_kill(group, &mut stack, dead, batch, &msg);
                }
                Ok(Err(WriteError::Partial(failed))) if failed.is_empty() => {
                    // "These records failed: none" is a success.
                    written.increment(group.len() as u64);
                    self.spec.status.add_written(group.len() as u64);
                    self.recovered();
                }
                Ok(Err(WriteError::Partial(failed))) => {
                    let n = group.len();
                    match split_partial(group, failed) {
                        Ok((ok, retry, rejected)) => {
                            written.increment(ok as u64);
                            self.spec.status.add_written(ok as u64);
                            if ok > 0 {
                                // Progress: attempts count afresh for the rest.
                                self.retry.reset();
                            }
                            self.count_error("partial");
                            dead.extend(
                                rejected
                                    .into_iter()
                                    .map(|(item, reason)| item.dead(batch, reason)),
                            );
                            if !retry.is_empty() {
                                let why = format!(
                                    "{} of {n} records failed and will be retried",
                                    retry.len()
                                );
                                self.retry_or_give_up(
                                    "partial", &why, retry, &mut stack, batch, dead,
                                )
                                .await;
                            }
                        }
                        Err((group, why)) => {
                            self.retry_or_give_up(
                                "malformed",
                                &why,
                                group,
                                &mut stack,
                                batch,
                                dead,
                            )
                            .await;
                        }
                    }
                }
                Ok(Err(WriteError::Fatal(msg))) => {
                    tracing::error!(pump = %pump, "sink reports a fatal error; its batches wait until it is fixed: {msg}");
                    let state = PumpState::Fatal { error: msg.clone() };
                    if self.back_off("fatal", &msg, state).await {
                        stack.push(group);
                    } else {
                        self.give_up(batch, group, dead, &msg);
                    }
                }
                Err(e) => {
                    self.sink = None;
                    self.retry_or_give_up(e.kind(), &e.to_string(), group, &mut stack, batch, dead)
                        .await;
                }
            }
        }
    }

    /// After a failed attempt: back off, then either queue `group` again or,
    /// past `retry.max_attempts`, dead-letter it.
    async fn retry_or_give_up(
        &mut self,
        kind: &'static str,
        error: &str,
        group: Vec<Item>,
        stack: &mut Vec<Vec<Item>>,
        batch: &Batch,
        dead: &mut Vec<DeadRecord>,
    ) {
        if self.failed(kind, error).await {
            stack.push(group);
        } else {
            self.give_up(batch, group, dead, error);
        }
    }

    /// Dead-letters records whose attempts ran out.
    fn give_up(
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

    /// Builds the WIT batch of `items` in `encoding`; items that cannot be
    /// encoded go to `dead`.
    fn materialize(
        &self,
        batch: &Batch,
        items: Vec<Item>,
        encoding: Encoding,
        dead: &mut Vec<DeadRecord>,
    ) -> (CallBatch, Vec<Item>) {
        let form = Form {
            encoding,
            omit_detail: self.spec.omit_detail,
        };
        // The whole batch, untouched by filters: the shared form is the
        // call's batch as it is.
        if items.len() == batch.len()
            && items
                .iter()
                .enumerate()
                .all(|(i, it)| it.owned.is_none() && it.origin == Some(i as u32))
        {
            let f = batch.form(form);
            if f.errors.is_empty() {
                return (CallBatch::Whole(f), items);
            }
        }
        let mut shared: Option<Arc<Encoded>> = None;
        let mut payloads = Vec::new();
        let mut events = Vec::with_capacity(items.len());
        let mut kept = Vec::with_capacity(items.len());
        for item in items {
            let start = payloads.len();
            let r = match (&item.owned, item.origin) {
                (Some((e, bytes)), _) => {
                    transcode(batch.schema, *e, bytes, encoding, &mut payloads)
                }
                (None, Some(i)) => {
                    let f = shared.get_or_insert_with(|| batch.form(form));
                    match f.spans[i as usize] {
                        Some((o, l)) => {
                            payloads
                                .extend_from_slice(&f.whole.payloads[o as usize..(o + l) as usize]);
                            Ok(())
                        }
                        None => Err(f.errors[i as usize].clone().unwrap_or_default()),
                    }
                }
                (None, None) => Err("record has no bytes".to_string()),
            };
            let span = r.and_then(|()| {
                let off =
                    u32::try_from(start).map_err(|_| "batch payload exceeds 4 GiB".to_string())?;
                let len = u32::try_from(payloads.len() - start)
                    .map_err(|_| "record exceeds 4 GiB".to_string())?;
                Ok((off, len))
            });
            match span {
                Ok((offset, len)) => {
                    events.push(wit::Event {
                        id: item.id,
                        timestamp: item.timestamp,
                        offset,
                        len,
                    });
                    kept.push(item);
                }
                Err(reason) => {
                    payloads.truncate(start);
                    dead.push(item.dead(
                        batch,
                        format!(
                            "cannot encode as {}: {reason}",
                            crate::runtime::encoding_name(encoding)
                        ),
                    ));
                }
            }
        }
        let wb = wit::Batch {
            schema: batch.schema.into(),
            encoding,
            payloads,
            events,
        };
        (CallBatch::Own(wb), kept)
    }

    fn count_error(&self, kind: &'static str) {
        self.spec.status.add_error();
        metrics::counter!(telemetry::PUMP_ERRORS, "pump" => self.spec.name.to_string(), "kind" => kind).increment(1);
    }

    /// Counts and reports a failed attempt, then waits out the backoff.
    /// False when `retry.max_attempts` is used up: the caller gives up.
    async fn failed(&mut self, kind: &'static str, error: &str) -> bool {
        let state = PumpState::Retrying {
            kind: kind.to_string(),
            error: error.to_string(),
        };
        self.back_off(kind, error, state).await
    }

    /// Counts an error and shows `state` on `/readyz`; then, unless the
    /// attempts are used up (false), sleeps the policy's next delay.
    async fn back_off(&mut self, kind: &'static str, error: &str, state: PumpState) -> bool {
        self.count_error(kind);
        self.spec.status.set(state);
        let delay = self.retry.next_delay();
        if self
            .spec
            .retry
            .max_attempts
            .is_some_and(|max| self.retry.failures >= u64::from(max))
        {
            return false;
        }
        tracing::warn!(pump = &*self.spec.name, kind, attempt = self.retry.failures, retry_in = ?delay, "{error}");
        tokio::time::sleep(delay).await;
        true
    }

    fn recovered(&mut self) {
        if self.retry.failures > 0 {
            tracing::info!(
                pump = &*self.spec.name,
                after = self.retry.failures,
                "pump recovered"
            );
        }
        self.retry.reset();
        self.spec.status.set(PumpState::Ok);
    }
}

/// Resolves after `tick` when set; never otherwise.
async fn idle(tick: Option<Duration>) {
    match tick {
        Some(every) => tokio::time::sleep(every).await,
        None => std::future::pending().await,
    }
}

/// Removes a delivered batch, retrying: leaving it would re-deliver it.
async fn remove_spooled(pump: &str, spool: &Arc<Spool>, seq: u64) {
    let mut delay = Duration::from_millis(50);
    loop {
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.remove(seq)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                tracing::error!(
                    pump,
                    "cannot remove a delivered batch from the spool, retrying in {delay:?}: {e}"
                )
            }
            Err(e) => tracing::error!(pump, "spool task failed: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
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
        let mut warned = false;
        while !spool.has_room(bytes) {
            match spool.when_full() {
                WhenFull::Block => {
                    if !warned {
                        tracing::warn!(pump = &*pump, "spool full (when_full = \"block\"): waiting for the pump to catch up; Redis buffers meanwhile");
                        warned = true;
                    }
                    room.notified().await;
                }
                WhenFull::DropOldest => {
                    let s = spool.clone();
                    match tokio::task::spawn_blocking(move || s.make_room(bytes)).await {
                        Ok(Ok(_)) => break,
                        Ok(Err(e)) => {
                            tracing::error!(pump = &*pump, "cannot make room in the spool: {e}")
                        }
                        Err(e) => tracing::error!(pump = &*pump, "spool task failed: {e}"),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let mut delay = Duration::from_millis(50);
        loop {
            let s = spool.clone();
            let owned = batches.clone();
            let r = tokio::task::spawn_blocking(move || {
                let refs: Vec<(&str, i64, &[Vec<u8>])> = owned
                    .iter()
                    .map(|b| (&*b.key, b.claimed_at_ms, b.records.as_slice()))
                    .collect();
                s.append(&refs)
            })
            .await;
            match r {
                Ok(Ok(())) => break,
                // The batches stay claimed in Redis until spooled.
                Ok(Err(e)) => tracing::error!(
                    pump = &*pump,
                    "cannot write to the spool, retrying in {delay:?}: {e}"
                ),
                Err(e) => tracing::error!(pump = &*pump, "spool task failed: {e}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
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

/// Where to cut a group whose payload exceeds `max` bytes: after the longest
/// prefix that fits (at least one record). `None` when it all fits.
fn split_point(events: &[wit::Event], max: usize) -> Option<usize> {
    if events.len() < 2 {
        return None;
    }
    let mut total = 0usize;
    for (i, e) in events.iter().enumerate() {
        total += e.len as usize;
        if total > max {
            return Some(i.max(1));
        }
    }
    None
}

/// Halves a rejected group, or dead-letters it when it is a single record.
fn split_or_kill(
    mut group: Vec<Item>,
    stack: &mut Vec<Vec<Item>>,
    dead: &mut Vec<DeadRecord>,
    batch: &Batch,
    reason: &str,
) {
    if group.len() > 1 {
        let second = group.split_off(group.len() / 2);
        // Pushed in reverse so the first half is tried first.
        stack.push(second);
        stack.push(group);
    } else if let Some(item) = group.pop() {
        dead.push(item.dead(batch, reason.to_string()));
    }
}

type Rejected = Vec<(Item, String)>;
/// Delivered count, records to retry, records to dead-letter.
type PartialSplit = (usize, Vec<Item>, Rejected);

/// Sorts a partial failure into (delivered count, to retry, to dead-letter).
fn split_partial(
    group: Vec<Item>,
    failed: Vec<wit::FailedEvent>,
) -> Result<PartialSplit, (Vec<Item>, String)> {
    let n = group.len();
    let mut verdict: Vec<Option<(bool, String)>> = (0..n).map(|_| None).collect();
    for f in failed {
        let i = f.index as usize;
        if i >= n || verdict[i].is_some() {
            return Err((
                group,
                format!(
                    "sink reported failed index {} for a batch of {n} (out of range or repeated)",
                    f.index
                ),
            ));
        }
        verdict[i] = Some((f.retryable, f.reason));
    }
    let mut ok = 0;
    let mut retry = Vec::new();
    let mut rejected = Vec::new();
    for (item, v) in group.into_iter().zip(verdict) {
        match v {
            None => ok += 1,
            Some((true, _)) => retry.push(item),
            Some((false, reason)) => rejected.push((item, reason)),
        }
    }
    Ok((ok, retry, rejected))
}

/// Applies a filter's verdict to the items it was shown.
fn apply_verdict(
    v: Verdict,
    items: Vec<Item>,
    default_ts: i64,
) -> Result<Vec<Item>, (Vec<Item>, String)> {
    match v {
        Verdict::KeepAll => Ok(items),
        Verdict::Keep(idx) => {
            let n = items.len();
            if idx.windows(2).any(|w| w[0] >= w[1]) || idx.last().is_some_and(|&l| l as usize >= n)
            {
                return Err((
                    items,
                    format!("keep indices must be ascending and below {n}"),
                ));
            }
            let mut want = idx.into_iter().peekable();
            Ok(items
                .into_iter()
                .enumerate()
                .filter(|(i, _)| {
                    if want.peek() == Some(&(*i as u32)) {
                        want.next();
                        true
                    } else {
                        false
                    }
                })
                .map(|(_, it)| it)
                .collect())
        }
        Verdict::Replace(b) => {
            let mut out = Vec::with_capacity(b.events.len());
            for e in &b.events {
                let (o, l) = (e.offset as usize, e.len as usize);
                let Some(bytes) = b.payloads.get(o..o.saturating_add(l)) else {
                    return Err((
                        items,
                        format!(
                            "replace: event at {o}+{l} lies outside the {} payload bytes",
                            b.payloads.len()
                        ),
                    ));
                };
                out.push(Item {
                    id: e.id,
                    timestamp: if e.timestamp == 0 {
                        default_ts
                    } else {
                        e.timestamp
                    },
                    origin: None,
                    owned: Some((b.encoding, bytes.to_vec())),
                });
            }
            Ok(out)
        }
    }
}

/// Re-encodes bytes a filter produced for a stage that wants another form.
fn transcode(
    schema: record::Schema,
    from: Encoding,
    bytes: &[u8],
    to: Encoding,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match (from, to) {
        (a, b) if a == b => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        (Encoding::Msgpack, Encoding::Json) => {
            record::write_json(schema, bytes, &[], out).map_err(|e| e.to_string())
        }
        (Encoding::Json, Encoding::Msgpack) => {
            let v: serde_json::Value = serde_json::from_slice(bytes)
                .map_err(|e| format!("filter output is not JSON: {e}"))?;
            rmp_serde::encode::write_named(out, &v).map_err(|e| e.to_string())
        }
        _ => unreachable!("two encodings, all pairs covered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                id: i as u64,
                timestamp: 0,
                origin: Some(i as u32),
                owned: None,
            })
            .collect()
    }

    #[test]
    fn groups_over_max_batch_bytes_are_cut_after_what_fits() {
        let ev = |len| wit::Event {
            id: 0,
            timestamp: 0,
            offset: 0,
            len,
        };
        let events: Vec<_> = [400, 400, 400].into_iter().map(ev).collect();
        assert_eq!(split_point(&events, 1000), Some(2));
        assert_eq!(split_point(&events, 1200), None);
        // A first record bigger than the limit still goes alone.
        assert_eq!(split_point(&events, 100), Some(1));
        assert_eq!(split_point(&events[..1], 100), None);
    }

    #[test]
    fn keep_verdict_selects_and_validates() {
        let kept = apply_verdict(Verdict::Keep(vec![0, 2]), items(3), 0)
            .map_err(|e| e.1)
            .unwrap();
        assert_eq!(kept.iter().map(|i| i.id).collect::<Vec<_>>(), vec![0, 2]);
        assert!(apply_verdict(Verdict::Keep(vec![3]), items(3), 0).is_err());
        assert!(apply_verdict(Verdict::Keep(vec![1, 1]), items(3), 0).is_err());
        assert!(apply_verdict(Verdict::Keep(vec![]), items(3), 0)
            .map_err(|e| e.1)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn partial_failures_sort_into_retry_and_reject() {
        let failed = vec![
            wit::FailedEvent {
                index: 1,
                reason: "later".into(),
                retryable: true,
            },
            wit::FailedEvent {
                index: 3,
                reason: "bad".into(),
                retryable: false,
            },
        ];
        let (ok, retry, rejected) = split_partial(items(4), failed).map_err(|e| e.1).unwrap();
        assert_eq!(ok, 2);
        assert_eq!(retry.iter().map(|i| i.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].1, "bad");
        let out_of_range = vec![wit::FailedEvent {
            index: 9,
            reason: String::new(),
            retryable: true,
        }];
        assert!(split_partial(items(4), out_of_range).is_err());
    }

    #[test]
    fn json_and_msgpack_transcode_both_ways() {
        let mut mp = Vec::new();
        transcode(
            record::Schema::Generic,
            Encoding::Json,
            br#"{"a":1,"b":"x"}"#,
            Encoding::Msgpack,
            &mut mp,
        )
        .unwrap();
        let mut js = Vec::new();
        transcode(
            record::Schema::Generic,
            Encoding::Msgpack,
            &mp,
            Encoding::Json,
            &mut js,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&js).unwrap(),
            serde_json::json!({"a":1,"b":"x"})
        );
        assert!(transcode(
            record::Schema::Generic,
            Encoding::Json,
            b"{",
            Encoding::Msgpack,
            &mut Vec::new()
        )
        .is_err());
    }
}

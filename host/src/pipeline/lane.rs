//! One pump's lane: host filters, the filter-plugin chain, then the sink,
//! with retry, split, bisect and dead letters. A lane owns its plugin
//! instances; a call that fails poisons only this lane's instance.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::batch::{wit_schema, Batch, Encoded, Form};
use super::deadletter::{DeadLetters, DeadRecord};
use super::filters::HostFilter;
use super::retry::RetryPolicy;
use super::status::{PumpState, PumpStatus};
use crate::config::RetryConfig;
use crate::record;
use crate::runtime::bindings::{self as wit, Encoding, Verdict, WriteError};
use crate::runtime::{Instance, Plugin, Sandbox};
use crate::telemetry;

/// Everything a lane needs, fixed at start.
pub struct LaneSpec {
    pub name: Arc<str>,
    pub sink: Arc<Plugin>,
    pub sink_config: String,
    pub filters: Vec<(Arc<Plugin>, String)>,
    pub host_filter: HostFilter,
    pub omit_detail: bool,
    pub max_record_size: Option<u64>,
    pub sandbox: Sandbox,
    pub retry: RetryConfig,
    pub status: Arc<PumpStatus>,
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
        })
    }

    /// Works through batches until the dispatcher closes the channel; hands
    /// each finished batch to the acker when this was its last lane.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Arc<Batch>>,
        done: mpsc::UnboundedSender<Arc<Batch>>,
    ) {
        let depth =
            metrics::gauge!(telemetry::PUMP_LANE_DEPTH, "pump" => self.spec.name.to_string());
        let latency = metrics::histogram!(telemetry::PUMP_BATCH_SECONDS, "pump" => self.spec.name.to_string());
        while let Some(batch) = rx.recv().await {
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

    async fn handle(&mut self, batch: &Batch) {
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
                timestamp: m.timestamp_ms.unwrap_or(batch.claimed_at_ms),
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
                        self.failed(e.kind(), &format!("filter {}: {e}", plugin.info.name))
                            .await;
                        continue;
                    }
                }
            }
            let inst = self.filters[fi].as_mut().expect("started above");
            match inst.process(&wb).await {
                Ok(Ok(verdict)) => match apply_verdict(verdict, items, batch.claimed_at_ms) {
                    Ok(kept) => {
                        self.recovered();
                        return kept;
                    }
                    Err((back, why)) => {
                        items = back;
                        self.failed("malformed", &format!("filter {}: {why}", plugin.info.name))
                            .await;
                    }
                },
                Ok(Err(msg)) => {
                    self.failed(
                        "filter_error",
                        &format!("filter {}: {msg}", plugin.info.name),
                    )
                    .await
                }
                Err(e) => {
                    self.filters[fi] = None;
                    self.failed(e.kind(), &format!("filter {}: {e}", plugin.info.name))
                        .await;
                }
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
        while let Some(group) = stack.pop() {
            let (wb, group) = self.materialize(batch, group, accepts, dead);
            if group.is_empty() {
                continue;
            }
            if self.sink.is_none() {
                match self
                    .spec
                    .sink
                    .start(&self.spec.name, &self.spec.sandbox, &self.spec.sink_config)
                    .await
                {
                    Ok(inst) => self.sink = Some(inst),
                    Err(e) => {
                        self.failed(e.kind(), &e.to_string()).await;
                        stack.push(group);
                        continue;
                    }
                }
            }
            let inst = self.sink.as_mut().expect("started above");
            match inst.write(&wb).await {
                Ok(Ok(())) => {
                    written.increment(group.len() as u64);
                    self.recovered();
                }
                Ok(Err(WriteError::Retry(msg))) => {
                    self.failed("retry", &msg).await;
                    stack.push(group);
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
                    self.recovered();
                }
                Ok(Err(WriteError::Partial(failed))) => {
                    let n = group.len();
                    match split_partial(group, failed) {
                        Ok((ok, retry, rejected)) => {
                            written.increment(ok as u64);
                            self.count_error("partial");
                            dead.extend(
                                rejected
                                    .into_iter()
                                    .map(|(item, reason)| item.dead(batch, reason)),
                            );
                            if !retry.is_empty() {
                                self.failed(
                                    "partial",
                                    &format!(
                                        "{} of {n} records failed and will be retried",
                                        retry.len()
                                    ),
                                )
                                .await;
                                stack.push(retry);
                            }
                        }
                        Err((group, why)) => {
                            self.failed("malformed", &why).await;
                            stack.push(group);
                        }
                    }
                }
                Ok(Err(WriteError::Fatal(msg))) => {
                    tracing::error!(pump = %pump, "sink reports a fatal error, batches stay claimed until it is fixed: {msg}");
                    self.back_off("fatal", &msg, PumpState::Fatal { error: msg.clone() })
                        .await;
                    stack.push(group);
                }
                Err(e) => {
                    self.sink = None;
                    self.failed(e.kind(), &e.to_string()).await;
                    stack.push(group);
                }
            }
        }
    }

    /// Builds the WIT batch of `items` in `encoding`; items that cannot be
    /// encoded go to `dead`.
    fn materialize(
        &self,
        batch: &Batch,
        items: Vec<Item>,
        encoding: Encoding,
        dead: &mut Vec<DeadRecord>,
    ) -> (wit::Batch, Vec<Item>) {
        let form = Form {
            encoding,
            omit_detail: self.spec.omit_detail,
        };
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
                            payloads.extend_from_slice(&f.payloads[o as usize..(o + l) as usize]);
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
            schema: wit_schema(batch.schema),
            encoding,
            payloads,
            events,
        };
        (wb, kept)
    }

    fn count_error(&self, kind: &'static str) {
        metrics::counter!(telemetry::PUMP_ERRORS, "pump" => self.spec.name.to_string(), "kind" => kind).increment(1);
    }

    /// Counts and reports a failed attempt, then waits out the backoff.
    async fn failed(&mut self, kind: &'static str, error: &str) {
        let state = PumpState::Retrying {
            kind: kind.to_string(),
            error: error.to_string(),
        };
        self.back_off(kind, error, state).await;
    }

    /// Counts an error, shows `state` on `/readyz`, and sleeps the policy's
    /// next delay.
    async fn back_off(&mut self, kind: &'static str, error: &str, state: PumpState) {
        self.count_error(kind);
        let delay = self.retry.next_delay();
        tracing::warn!(pump = &*self.spec.name, kind, attempt = self.retry.failures, retry_in = ?delay, "{error}");
        self.spec.status.set(state);
        tokio::time::sleep(delay).await;
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

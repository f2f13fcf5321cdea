//! Delivery to the sink: one loop over groups of records, acting on what
//! each call's outcome means ([`classify`] → [`Step`]): delivered, retry
//! with backoff, split or bisect, per-record failures, or a fatal sink.

use std::sync::Arc;

use crate::batch::{Batch, Form};
use crate::dlq::DeadRecord;
use crate::runtime::bindings::{self as wit, WriteError};
use crate::runtime::CallError;
use crate::status::PumpState;
use crate::telemetry;

use super::encode::{materialize, Item};
use super::lane::Lane;
use super::retry::Next;

/// What one sink call's outcome asks the lane to do with its group.
#[derive(Debug)]
enum Step {
    /// Every record was delivered.
    Delivered,
    /// Transient trouble: back off and send the group again (or give up
    /// after `retry.max_attempts`).
    Retry { kind: &'static str, reason: String },
    /// The group is refused as a whole: halve it; a single record is
    /// dead-lettered with `reason`.
    Split { kind: &'static str, reason: String },
    /// The plugin ran out of memory on the group: halve it too, since one
    /// record may be what needs the memory (see [`Lane::deliver`]).
    Memory(String),
    /// Only these records failed.
    Partial(Vec<wit::FailedEvent>),
    /// The sink is misconfigured: its batches wait until it is fixed.
    Fatal(String),
}

/// The meaning of a sink call's outcome. Pure: the lane's retry logic.
fn classify(outcome: Result<Result<(), WriteError>, CallError>) -> Step {
    match outcome {
        Ok(Ok(())) => Step::Delivered,
        // "These records failed: none" is a success.
        Ok(Err(WriteError::Partial(failed))) if failed.is_empty() => Step::Delivered,
        Ok(Err(WriteError::Partial(failed))) => Step::Partial(failed),
        Ok(Err(WriteError::Retry(reason))) => Step::Retry {
            kind: "retry",
            reason,
        },
        Ok(Err(WriteError::TooLarge)) => Step::Split {
            kind: "too_large",
            reason: "the sink says this record is too large".into(),
        },
        Ok(Err(WriteError::InvalidBatch(reason))) => Step::Split {
            kind: "invalid",
            reason,
        },
        Ok(Err(WriteError::Fatal(msg))) => Step::Fatal(msg),
        Err(e @ CallError::Memory(_)) => Step::Memory(e.to_string()),
        Err(e) => Step::Retry {
            kind: e.kind(),
            reason: e.to_string(),
        },
    }
}

impl Lane {
    /// Writes items to the sink until each is delivered or dead-lettered.
    /// Groups the sink rejects as too large or invalid are halved; a single
    /// record it still rejects is dead-lettered with the sink's reason.
    ///
    /// A group the sink runs out of memory on is halved as well. A single
    /// record that still does is the record's fault once the sink has
    /// shown it delivers others (in this batch or before, on this
    /// version of the pump): it is dead-lettered ("record needs more
    /// memory than the pump's max_memory"). Until then it waits for the
    /// rest of the batch. If nothing of the batch went through and the
    /// pump never delivered, one such record is still dead-lettered when a
    /// fresh instance handles an empty batch; otherwise (several such
    /// records, or a plugin that fails even then) the plugin itself is out
    /// of memory, and the records are retried with backoff, whole, as any
    /// failure is.
    pub(super) async fn deliver(
        &mut self,
        batch: &Batch,
        items: Vec<Item>,
        dead: &mut Vec<DeadRecord>,
    ) {
        let mut stack = vec![items];
        let mut isolate = true;
        let mut delivered_any = false;
        loop {
            let mut suspects = Vec::new();
            let last = self
                .deliver_stack(
                    batch,
                    &mut stack,
                    dead,
                    isolate,
                    &mut delivered_any,
                    &mut suspects,
                )
                .await;
            let Some(error) = last else { break };
            if suspects.is_empty() {
                break;
            }
            if delivered_any || self.spec.status.counters().written > 0 {
                let reason = self.needs_more_memory(&error);
                dead.extend(suspects.into_iter().map(|i| i.dead(batch, reason.clone())));
                self.recovered();
                break;
            }
            // A pump that never delivered (a new one, its first batch): one
            // record that fails alone is still the record's fault if a
            // fresh instance of the plugin handles an empty batch (the
            // tick's call) within the same memory. Several such records
            // point at the plugin instead, and are retried.
            if suspects.len() == 1 && self.fresh_sink_handles_an_empty_batch(batch).await {
                let reason = format!(
                    "{}; it fails alone, while a fresh instance handles an empty batch",
                    self.needs_more_memory(&error)
                );
                dead.extend(suspects.into_iter().map(|i| i.dead(batch, reason.clone())));
                self.recovered();
                break;
            }
            // Nothing went through: no record is to blame alone.
            isolate = false;
            self.retry_or_give_up("memory", &error, suspects, &mut stack, batch, dead)
                .await;
        }
    }

    /// The canary of [`Lane::deliver`]: whether a fresh instance of the
    /// sink starts and takes an empty batch without an error. It is kept
    /// for the next call when it does.
    async fn fresh_sink_handles_an_empty_batch(&mut self, batch: &Batch) -> bool {
        self.sink = None;
        if self.start_sink().await.is_err() {
            return false;
        }
        self.write_empty(batch.schema).await.is_ok()
    }

    fn needs_more_memory(&self, error: &str) -> String {
        format!(
            "record needs more memory than the pump's max_memory ({}): {error}",
            self.spec.config.sandbox.max_memory
        )
    }

    /// Works through `stack`. With `isolate`, single records the sink runs
    /// out of memory on go to `suspects` (or are dead-lettered at once when
    /// the sink has delivered before); returns the last memory error.
    async fn deliver_stack(
        &mut self,
        batch: &Batch,
        stack: &mut Vec<Vec<Item>>,
        dead: &mut Vec<DeadRecord>,
        isolate: bool,
        delivered_any: &mut bool,
        suspects: &mut Vec<Item>,
    ) -> Option<String> {
        let pump = self.spec.name.to_string();
        let written = metrics::counter!(telemetry::PUMP_RECORDS_WRITTEN, "pump" => pump.clone());
        let form = Form {
            encoding: self.spec.sink.info.accepts,
            omit_detail: self.spec.omit_detail,
        };
        let mut last_memory = None;
        while let Some(mut group) = stack.pop() {
            let (call, kept) = materialize(batch, group, form, dead);
            let call = Arc::new(call);
            let wb = call.get();
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
                self.retry_or_give_up(e.kind(), &e.to_string(), group, stack, batch, dead)
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
            let outcome = inst.write(call.clone()).await;
            let (slow, timeout) = (inst.near_timeout().is_some(), inst.timeout());
            if outcome.is_err() {
                // A trap poisons the instance: the next attempt gets a fresh one.
                self.sink = None;
            } else if slow {
                let plugin = self.spec.sink.clone();
                self.note_slow(&plugin.info.name, timeout);
            }
            match classify(outcome) {
                Step::Delivered => {
                    *delivered_any = true;
                    written.increment(group.len() as u64);
                    self.spec.status.add_written(group.len() as u64);
                    self.recovered();
                }
                Step::Retry { kind, reason } => {
                    self.retry_or_give_up(kind, &reason, group, stack, batch, dead)
                        .await;
                }
                Step::Split { kind, reason } => {
                    self.count_error(kind);
                    split_or_kill(group, stack, dead, batch, &reason);
                }
                Step::Memory(error) if isolate => {
                    self.count_error("memory");
                    self.spec.status.set(PumpState::Retrying {
                        kind: "memory".into(),
                        error: error.clone(),
                    });
                    if group.len() > 1 {
                        split_or_kill(group, stack, dead, batch, &error);
                    } else if *delivered_any || self.spec.status.counters().written > 0 {
                        let reason = self.needs_more_memory(&error);
                        dead.extend(group.into_iter().map(|i| i.dead(batch, reason.clone())));
                        // The sink is fine; the record was too much for it.
                        self.recovered();
                    } else {
                        suspects.extend(group);
                    }
                    last_memory = Some(error);
                }
                Step::Memory(error) => {
                    self.retry_or_give_up("memory", &error, group, stack, batch, dead)
                        .await;
                }
                Step::Partial(failed) => {
                    let n = group.len();
                    match split_partial(group, failed) {
                        Ok((ok, retry, rejected)) => {
                            *delivered_any |= ok > 0;
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
                                self.retry_or_give_up("partial", &why, retry, stack, batch, dead)
                                    .await;
                            }
                        }
                        Err((group, why)) => {
                            self.retry_or_give_up("malformed", &why, group, stack, batch, dead)
                                .await;
                        }
                    }
                }
                Step::Fatal(msg) => {
                    tracing::error!(pump = %pump, "sink reports a fatal error; its batches wait until it is fixed: {msg}");
                    let state = PumpState::Fatal { error: msg.clone() };
                    match self.back_off("fatal", &msg, state).await {
                        Next::Retry => stack.push(group),
                        Next::GiveUp => self.give_up(batch, group, dead, &msg),
                    }
                }
            }
        }
        last_memory
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
        match self.failed(kind, error).await {
            Next::Retry => stack.push(group),
            Next::GiveUp => self.give_up(batch, group, dead, error),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::super::filter_chain::items;
    use super::*;

    #[test]
    fn outcomes_map_to_steps() {
        assert!(matches!(classify(Ok(Ok(()))), Step::Delivered));
        assert!(matches!(
            classify(Ok(Err(WriteError::Partial(Vec::new())))),
            Step::Delivered
        ));
        assert!(matches!(
            classify(Ok(Err(WriteError::Retry("busy".into())))),
            Step::Retry { kind: "retry", reason } if reason == "busy"
        ));
        assert!(matches!(
            classify(Ok(Err(WriteError::TooLarge))),
            Step::Split {
                kind: "too_large",
                ..
            }
        ));
        assert!(matches!(
            classify(Ok(Err(WriteError::InvalidBatch("x".into())))),
            Step::Split {
                kind: "invalid",
                ..
            }
        ));
        assert!(matches!(
            classify(Ok(Err(WriteError::Fatal("bad".into())))),
            Step::Fatal(m) if m == "bad"
        ));
        assert!(matches!(
            classify(Err(CallError::Trap("boom".into()))),
            Step::Retry { kind: "trap", .. }
        ));
        assert!(matches!(
            classify(Err(CallError::Memory("grow".into()))),
            Step::Memory(m) if m.contains("exceeded its memory limit")
        ));
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
}

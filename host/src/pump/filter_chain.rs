//! The filter-plugin chain of a lane: each filter sees the records the
//! previous stage kept, in its own encoding, and answers with a verdict.

use std::sync::Arc;

use bytes::Bytes;

use crate::batch::{Batch, Form};
use crate::dlq::DeadRecord;
use crate::runtime::bindings::Verdict;

use super::encode::{materialize, Item, Payload};
use super::lane::Lane;
use super::retry::Next;

/// A filter's `replace` may answer with at most this many records per
/// record it was shown; more is `malformed`.
pub const MAX_REPLACE_FACTOR: usize = 10;

/// What a `replace` verdict may hold: records (a multiple of those shown)
/// and bytes over all records (the pump's `sandbox.max_memory`: no more
/// than the filter could have held itself). A record pointing at bytes
/// another one uses counts them again, so the host's copy for the next
/// stage stays within this.
#[derive(Debug, Clone, Copy)]
struct ReplaceLimits {
    records: usize,
    bytes: usize,
}

impl Lane {
    /// Runs filter `fi` over `items` until it answers; returns what it
    /// kept. Records it cannot be made to judge within
    /// `retry.max_attempts` are dead-lettered.
    pub(super) async fn run_filter(
        &mut self,
        fi: usize,
        batch: &Batch,
        mut items: Vec<Item>,
        dead: &mut Vec<DeadRecord>,
    ) -> Vec<Item> {
        let plugin = self.spec.filters[fi].0.clone();
        let form = Form {
            encoding: plugin.info.accepts,
            omit_detail: self.spec.omit_detail,
        };
        loop {
            let (call, kept) = materialize(batch, items, form, dead);
            let call = Arc::new(call);
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
                        if self.failed(e.kind(), &why).await == Next::GiveUp {
                            self.give_up(batch, items, dead, &why);
                            return Vec::new();
                        }
                        continue;
                    }
                }
            }
            let inst = self.filters[fi].as_mut().expect("started above");
            let limits = ReplaceLimits {
                records: items.len().saturating_mul(MAX_REPLACE_FACTOR),
                bytes: self.spec.sandbox.max_memory,
            };
            let outcome = inst.process(call).await;
            if outcome.is_ok() && inst.near_timeout().is_some() {
                let timeout = inst.timeout();
                self.note_slow(&plugin.info.name, timeout);
            }
            let (kind, why) = match outcome {
                Ok(Ok(verdict)) => match apply_verdict(verdict, items, batch.claimed_at_ms, limits)
                {
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
            if self.failed(kind, &why).await == Next::GiveUp {
                self.give_up(batch, items, dead, &why);
                return Vec::new();
            }
        }
    }
}

/// Applies a filter's verdict to the items it was shown.
fn apply_verdict(
    v: Verdict,
    items: Vec<Item>,
    default_ts: i64,
    limits: ReplaceLimits,
) -> Result<Vec<Item>, (Vec<Item>, String)> {
    let n = items.len();
    match v {
        Verdict::KeepAll => Ok(items),
        Verdict::Keep(idx) => {
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
            if b.events.len() > limits.records {
                return Err((
                    items,
                    format!(
                        "replace: {} records for {n} shown; at most {} ({MAX_REPLACE_FACTOR} per record)",
                        b.events.len(),
                        limits.records
                    ),
                ));
            }
            let total: u64 = b.events.iter().map(|e| u64::from(e.len)).sum();
            if total > limits.bytes as u64 {
                return Err((
                    items,
                    format!(
                        "replace: {total} bytes over its records; at most {} (sandbox.max_memory)",
                        limits.bytes
                    ),
                ));
            }
            let len = b.payloads.len();
            // One buffer for the whole verdict; each record is a view of it.
            let shared = Bytes::from(b.payloads);
            let mut out = Vec::with_capacity(b.events.len());
            for e in &b.events {
                let (o, l) = (e.offset as usize, e.len as usize);
                if o.checked_add(l).is_none_or(|end| end > len) {
                    return Err((
                        items,
                        format!("replace: event at {o}+{l} lies outside the {len} payload bytes"),
                    ));
                }
                out.push(Item {
                    id: e.id,
                    timestamp: if e.timestamp == 0 {
                        default_ts
                    } else {
                        e.timestamp
                    },
                    payload: Payload::Replaced(b.encoding, shared.slice(o..o + l)),
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
pub(super) fn items(n: usize) -> Vec<Item> {
    (0..n)
        .map(|i| Item {
            id: i as u64,
            timestamp: 0,
            payload: Payload::Original(i as u32),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::runtime::bindings::{self as wit, Encoding};

    const ROOMY: ReplaceLimits = ReplaceLimits {
        records: 1 << 20,
        bytes: 1 << 30,
    };

    #[test]
    fn keep_verdict_selects_and_validates() {
        let apply = |v| apply_verdict(v, items(3), 0, ROOMY);
        let kept = apply(Verdict::Keep(vec![0, 2])).map_err(|e| e.1).unwrap();
        assert_eq!(kept.iter().map(|i| i.id).collect::<Vec<_>>(), vec![0, 2]);
        assert!(apply(Verdict::Keep(vec![3])).is_err());
        assert!(apply(Verdict::Keep(vec![1, 1])).is_err());
        assert!(apply(Verdict::Keep(vec![]))
            .map_err(|e| e.1)
            .unwrap()
            .is_empty());
    }

    /// `n` events all pointing at one payload of `size` bytes.
    fn amplified(n: usize, size: usize) -> Verdict {
        Verdict::Replace(wit::Batch {
            schema: wit::Schema::Generic,
            encoding: Encoding::Json,
            payloads: vec![b'x'; size],
            events: (0..n as u64)
                .map(|id| wit::Event {
                    id,
                    timestamp: 0,
                    offset: 0,
                    len: size as u32,
                })
                .collect(),
        })
    }

    #[test]
    fn replaced_records_share_the_filters_buffer() {
        let out = apply_verdict(amplified(1000, 4096), items(200), 7, ROOMY)
            .map_err(|e| e.1)
            .unwrap();
        assert_eq!(out.len(), 1000);
        let ptrs: std::collections::HashSet<*const u8> = out
            .iter()
            .map(|i| match &i.payload {
                Payload::Replaced(_, b) => b.as_ptr(),
                Payload::Original(_) => panic!("replaced"),
            })
            .collect();
        assert_eq!(ptrs.len(), 1, "one buffer, not one copy per record");
        assert!(out.iter().all(|i| i.timestamp == 7));
    }

    #[test]
    fn replace_is_capped_in_records_and_bytes() {
        let limits = ReplaceLimits {
            records: 3 * MAX_REPLACE_FACTOR,
            bytes: 1 << 20,
        };
        let err = |v| apply_verdict(v, items(3), 0, limits).err().map(|e| e.1);
        assert!(err(amplified(30, 16)).is_none());
        let why = err(amplified(31, 16)).unwrap();
        assert!(why.contains("31 records for 3 shown"), "{why}");
        // Two views of one 4 MiB buffer count 8 MiB: the next stage copies each.
        let why = err(amplified(2, 4 << 20)).unwrap();
        assert!(why.contains("sandbox.max_memory"), "{why}");
        let Err((back, _)) = apply_verdict(amplified(31, 16), items(3), 0, limits) else {
            panic!("over the record cap");
        };
        assert_eq!(back.len(), 3, "the records shown come back for a retry");
    }
}

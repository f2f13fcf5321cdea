//! The filter-plugin chain of a lane: each filter sees the records the
//! previous stage kept, in its own encoding, and answers with a verdict.

use crate::batch::{Batch, Form};
use crate::dlq::DeadRecord;
use crate::runtime::bindings::Verdict;

use super::encode::{materialize, Item, Payload};
use super::lane::Lane;
use super::retry::Next;

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
            let (wb, kept) = materialize(batch, items, form, dead);
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
                        if self.failed(e.kind(), &why).await == Next::GiveUp {
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
                    payload: Payload::Replaced(b.encoding, bytes.to_vec()),
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
}

#![doc = include_str!("../README.md")]

mod config;
mod output;
mod state;

use std::time::{SystemTime, UNIX_EPOCH};

use pumphouse_sdk::{kv, metrics, Batch, Config, Encoding, Error, PluginInfo, Sink, WriteError};

use config::Settings;
use state::{Fnv, Seen, State};

/// The kv key holding the open windows.
const STATE_KEY: &str = "state";

/// Counts records into time windows and writes each finished window.
pub struct Aggregate {
    settings: Settings,
    /// Loaded from the kv store on the first call, then kept in step with
    /// it: every change is committed before it is kept here.
    state: Option<State>,
}

impl Sink for Aggregate {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "aggregate".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Msgpack,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        Ok(Aggregate {
            settings: Settings::parse(&config)?,
            state: None,
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        self.step(batch, now_ms()).map_err(WriteError::from)
    }
}

impl Aggregate {
    /// One batch (or tick, when empty): count it unless it was counted
    /// before, write the windows that are over, commit the new state and
    /// the batch's marker together.
    fn step(&mut self, batch: &Batch, now_ms: i64) -> Result<(), Error> {
        let mut next = match &self.state {
            Some(s) => s.clone(),
            None => load()?,
        };
        let mut writes = Vec::new();
        if !batch.is_empty() {
            let marker = format!("batch:{}", fingerprint(batch));
            if kv::get(&marker)?.is_some() {
                // Counted before the host could acknowledge it (a restart,
                // a lease takeover): counting it again would double it.
                metrics::counter_add("aggregate_duplicate_batches", 1, &[]);
                self.state = Some(next);
                return Ok(());
            }
            for r in batch.records() {
                let field = |name: &str| r.field(name).map(|c| c.into_owned());
                next.apply(
                    &Seen {
                        timestamp_ms: r.timestamp(),
                        schema: batch.schema,
                        field: &field,
                    },
                    &self.settings,
                );
            }
            metrics::counter_add("aggregate_records", batch.len() as u64, &[]);
            writes
                .push(kv::Write::set(marker, b"1".to_vec()).expire_after(self.settings.dedup_ttl));
        }
        let finished = next.finished(now_ms, &self.settings);
        if !finished.is_empty() {
            let rows = next.rows(&finished, &self.settings);
            match output::send(&self.settings.output, &rows) {
                Ok(()) => {
                    next.remove(&finished);
                    metrics::counter_add("aggregate_rows_written", rows.len() as u64, &[]);
                }
                // The counts are safe in the state; the windows are written
                // on a later batch or tick.
                Err(e) => {
                    metrics::counter_add("aggregate_flush_failures", 1, &[]);
                    pumphouse_sdk::warn!(
                        "cannot write {} finished window(s), keeping them for the next try: {}",
                        finished.len(),
                        e.message()
                    );
                }
            }
        }
        if writes.is_empty() && Some(&next) == self.state.as_ref() {
            return Ok(());
        }
        let json = serde_json::to_vec(&next).map_err(|e| Error::fatal(e.to_string()))?;
        writes.push(kv::Write::set(STATE_KEY, json));
        kv::commit(&writes)?;
        metrics::gauge_set("aggregate_open_windows", next.windows.len() as f64, &[]);
        self.state = Some(next);
        Ok(())
    }
}

fn load() -> Result<State, Error> {
    match kv::get(STATE_KEY)? {
        None => Ok(State::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::fatal(format!(
                "the stored aggregation state is unreadable ({e}); delete the kv key `{STATE_KEY}` to start afresh"
            ))
        }),
    }
}

/// Names a batch by its records' ids, in order: a redelivered batch has the
/// same records, so the same name.
fn fingerprint(batch: &Batch) -> String {
    let mut a = Fnv::default();
    let mut b = Fnv(0x9e37_79b9_7f4a_7c15);
    for e in &batch.events {
        a.write(&e.id.to_le_bytes());
        b.write(&e.id.to_be_bytes());
    }
    format!("{:016x}{:016x}-{}", a.0, b.0, batch.events.len())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pumphouse_sdk::export_sink!(Aggregate);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::http::Response;
    use pumphouse_sdk::testing;
    use pumphouse_sdk::TykRecord;
    use std::cell::RefCell;
    use std::rc::Rc;

    fn sink() -> Aggregate {
        Aggregate::init(Config::from(serde_json::json!({
            "window": "1m", "grace": "0s",
            "group_by": [["APIID"]],
            "output": {"kind": "http", "url": "http://agg.test/rows"}
        })))
        .unwrap()
    }

    fn batch(minute: i64, apis: &[&str]) -> Batch {
        let records: Vec<TykRecord> = apis
            .iter()
            .map(|a| TykRecord {
                api_id: a.to_string(),
                response_code: 200,
                request_time: 4,
                timestamp: pumphouse_sdk::Timestamp::from_unix_millis(minute * 60_000 + 5),
                ..Default::default()
            })
            .collect();
        let mut b = testing::tyk_batch(&records);
        for (i, e) in b.events.iter_mut().enumerate() {
            e.timestamp = minute * 60_000 + 5;
            // Ids as stable as the host's: the same records, the same ids.
            e.id = (minute as u64) << 32 | u64::from(apis[i].as_bytes()[0]) << 16 | i as u64;
        }
        b
    }

    fn capture_rows() -> Rc<RefCell<Vec<serde_json::Value>>> {
        let rows = Rc::new(RefCell::new(Vec::new()));
        let seen = rows.clone();
        testing::mock_http(move |req| {
            let body: Vec<serde_json::Value> = serde_json::from_slice(req.body_bytes()).unwrap();
            seen.borrow_mut().extend(body);
            Ok(Response::new(200))
        });
        rows
    }

    #[test]
    fn a_redelivered_batch_is_counted_once() {
        testing::reset();
        let rows = capture_rows();
        let mut s = sink();
        let b = batch(1, &["a", "a", "b"]);
        s.step(&b, 0).unwrap();
        // A new instance (host restart) sees the same batch again.
        let mut again = sink();
        again.step(&b, 0).unwrap();
        assert_eq!(testing::counter("aggregate_duplicate_batches", &[]), 1);
        again.step(&batch(3, &["c"]), 0).unwrap();
        let rows = rows.borrow();
        let a = rows.iter().find(|r| r["key"] == r#"["a"]"#).unwrap();
        assert_eq!(a["hits"], 2);
        assert_eq!(a["latency_total_ms"], 8.0);
        let state: State = serde_json::from_slice(&testing::kv_value(STATE_KEY).unwrap()).unwrap();
        assert_eq!(
            state.windows.keys().copied().collect::<Vec<_>>(),
            vec![180_000]
        );
    }

    #[test]
    fn state_survives_a_restart_and_a_tick_flushes_by_the_clock() {
        testing::reset();
        let rows = capture_rows();
        sink().step(&batch(1, &["a"]), 0).unwrap();
        let mut restarted = sink();
        restarted.step(&batch(1, &["a", "a"]), 0).unwrap();
        assert!(rows.borrow().is_empty(), "window still open");
        let tick = Batch::new(Encoding::Msgpack, pumphouse_sdk::Schema::Tyk);
        restarted.step(&tick, 10 * 60_000).unwrap();
        let rows = rows.borrow();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["hits"], 3);
    }

    #[test]
    fn kv_outage_is_a_retry_and_nothing_is_half_counted() {
        testing::reset();
        let _rows = capture_rows();
        let mut s = sink();
        s.step(&batch(1, &["a"]), 0).unwrap();
        testing::fail_kv(Some("redis down"));
        let e = s.step(&batch(1, &["b"]), 0).unwrap_err();
        assert_eq!(e.kind(), pumphouse_sdk::ErrorKind::Retry);
        testing::fail_kv(None);
        s.step(&batch(1, &["b"]), 0).unwrap();
        let state: State = serde_json::from_slice(&testing::kv_value(STATE_KEY).unwrap()).unwrap();
        let hits: Vec<u64> = state.windows[&60_000].values().map(|c| c.hits).collect();
        assert_eq!(
            hits,
            vec![1, 1],
            "the failed try left no trace in the state"
        );
    }

    #[test]
    fn a_failed_flush_keeps_the_window_for_later() {
        testing::reset();
        let mut s = sink();
        testing::mock_http(|_| Ok(Response::new(503)));
        s.step(&batch(1, &["a"]), 0).unwrap();
        s.step(&batch(3, &["b"]), 0).unwrap();
        assert_eq!(testing::counter("aggregate_flush_failures", &[]), 1);
        let rows = capture_rows();
        s.step(
            &Batch::new(Encoding::Msgpack, pumphouse_sdk::Schema::Tyk),
            0,
        )
        .unwrap();
        assert_eq!(rows.borrow().len(), 1);
        assert_eq!(rows.borrow()[0]["key"], r#"["a"]"#);
    }
}

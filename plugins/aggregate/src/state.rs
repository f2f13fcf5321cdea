//! The aggregation itself, free of I/O: counters per window and grouping
//! key, which windows are finished, and the rows they become.

use std::collections::BTreeMap;

use pumphouse_sdk::{Schema, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::Settings;

/// Separates the grouping's field names from its values in a state key.
const KEY_SEP: char = '\t';
/// The value every field takes once a window has `max_keys` keys.
pub const OTHER: &str = "__other__";

/// What one window knows about one grouping key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub hits: u64,
    pub success: u64,
    pub errors: u64,
    pub latency_total_ms: f64,
    pub latency_max_ms: f64,
}

/// Open windows; persisted as JSON after every batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Window start (unix ms) → `fields<TAB>values-as-JSON` → counters.
    pub windows: BTreeMap<i64, BTreeMap<String, Counters>>,
    /// The latest record time seen (unix ms): event time closes windows
    /// even when the records are older or newer than the host's clock.
    pub watermark: i64,
}

/// One record as the aggregation sees it.
pub struct Seen<'a> {
    pub timestamp_ms: i64,
    pub schema: Schema,
    /// The text of a top-level field.
    pub field: &'a dyn Fn(&str) -> Option<String>,
}

/// A finished window's counters for one key, as written to the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// `YYYY-MM-DD hh:mm:ss`, UTC (what ClickHouse's `DateTime` reads).
    pub window_start: String,
    pub window_seconds: u32,
    /// The grouping's field names, comma-separated, e.g. `OrgID,APIID`.
    pub dimension: String,
    /// The grouping's values as a JSON array, e.g. `["org1","api1"]`.
    pub key: String,
    pub hits: u64,
    pub success: u64,
    pub errors: u64,
    pub latency_total_ms: f64,
    pub latency_max_ms: f64,
    /// Same for the same window, key and counts: lets a destination drop a
    /// row sent twice (a crash between the insert and the state commit).
    pub flush_id: String,
}

impl State {
    /// Counts one record into its window under every grouping.
    pub fn apply(&mut self, r: &Seen<'_>, s: &Settings) {
        self.watermark = self.watermark.max(r.timestamp_ms);
        let start = r.timestamp_ms.div_euclid(s.window_ms) * s.window_ms;
        let error = match r.schema {
            Schema::Tyk => (r.field)("ResponseCode")
                .and_then(|c| c.parse::<i64>().ok())
                .is_some_and(|c| c >= s.error_status_from),
            Schema::Iam => (r.field)("Effect").is_some_and(|e| e != "allow"),
            Schema::Generic => false,
        };
        let latency = s
            .latency(r.schema)
            .and_then(|f| (r.field)(f))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite());
        // Groupings share fields (OrgID is in all of Tyk's): read each once.
        let mut read: Vec<(&str, String)> = Vec::new();
        let window = self.windows.entry(start).or_default();
        for fields in s.groupings(r.schema) {
            let values: Vec<String> = fields
                .iter()
                .map(|f| match read.iter().find(|(k, _)| k == f) {
                    Some((_, v)) => v.clone(),
                    None => {
                        let v = (r.field)(f).unwrap_or_default();
                        read.push((f, v.clone()));
                        v
                    }
                })
                .collect();
            let mut key = state_key(fields, &values);
            if !window.contains_key(&key) && window.len() >= s.max_keys {
                key = state_key(fields, &vec![OTHER.to_string(); fields.len()]);
            }
            let c = window.entry(key).or_default();
            c.hits += 1;
            if error {
                c.errors += 1;
            } else {
                c.success += 1;
            }
            if let Some(l) = latency {
                c.latency_total_ms += l;
                c.latency_max_ms = c.latency_max_ms.max(l);
            }
        }
    }

    /// Starts of the windows that are over: their end plus `grace` has
    /// passed by the record clock (watermark) or the host's clock.
    pub fn finished(&self, now_ms: i64, s: &Settings) -> Vec<i64> {
        let clock = self.watermark.max(now_ms);
        self.windows
            .keys()
            .copied()
            .filter(|start| start + s.window_ms + s.grace_ms <= clock)
            .collect()
    }

    /// The rows of the windows starting at `starts`.
    pub fn rows(&self, starts: &[i64], s: &Settings) -> Vec<Row> {
        let mut rows = Vec::new();
        for start in starts {
            let Some(window) = self.windows.get(start) else {
                continue;
            };
            let window_start = Timestamp::from_unix_millis(*start)
                .to_rfc3339()
                .replace('T', " ")
                .trim_end_matches('Z')
                .split('.')
                .next()
                .unwrap_or_default()
                .to_string();
            for (key, c) in window {
                let (dimension, values) = key.split_once(KEY_SEP).unwrap_or((key, "[]"));
                rows.push(Row {
                    window_start: window_start.clone(),
                    window_seconds: (s.window_ms / 1000) as u32,
                    dimension: dimension.to_string(),
                    key: values.to_string(),
                    hits: c.hits,
                    success: c.success,
                    errors: c.errors,
                    latency_total_ms: c.latency_total_ms,
                    latency_max_ms: c.latency_max_ms,
                    flush_id: flush_id(*start, key, c),
                });
            }
        }
        rows
    }

    /// Forgets the windows starting at `starts` (they were written).
    pub fn remove(&mut self, starts: &[i64]) {
        for s in starts {
            self.windows.remove(s);
        }
    }
}

fn state_key(fields: &[String], values: &[String]) -> String {
    let values = serde_json::to_string(values).unwrap_or_else(|_| "[]".into());
    format!("{}{KEY_SEP}{values}", fields.join(","))
}

fn flush_id(start: i64, key: &str, c: &Counters) -> String {
    let mut h = Fnv::default();
    h.write(&start.to_le_bytes());
    h.write(key.as_bytes());
    h.write(&c.hits.to_le_bytes());
    h.write(&c.errors.to_le_bytes());
    format!("{:016x}", h.0)
}

/// FNV-1a, 64 bits: stable across builds and platforms, unlike std's
/// `DefaultHasher`, which is what ids persisted in Redis need.
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings() -> Settings {
        settings_with_max_keys(10_000)
    }

    fn settings_with_max_keys(max_keys: usize) -> Settings {
        Settings::parse(&pumphouse_sdk::Config::from(serde_json::json!({
            "window": "1m", "grace": "10s", "max_keys": max_keys,
            "output": {"kind": "http", "url": "http://x.test/"}
        })))
        .unwrap()
    }

    fn tyk(state: &mut State, ts: i64, api: &str, code: &str, ms: &str) {
        tyk_with(state, ts, api, code, ms, &settings());
    }

    fn tyk_with(state: &mut State, ts: i64, api: &str, code: &str, ms: &str, s: &Settings) {
        let fields: HashMap<&str, String> = [
            ("OrgID", "org".to_string()),
            ("APIID", api.to_string()),
            ("ResponseCode", code.to_string()),
            ("APIKey", "k".to_string()),
            ("RequestTime", ms.to_string()),
        ]
        .into();
        let field = |f: &str| fields.get(f).cloned();
        state.apply(
            &Seen {
                timestamp_ms: ts,
                schema: Schema::Tyk,
                field: &field,
            },
            s,
        );
    }

    #[test]
    fn counts_hits_errors_and_latency_per_window_and_key() {
        let mut st = State::default();
        tyk(&mut st, 60_000, "a", "200", "10");
        tyk(&mut st, 61_000, "a", "500", "30");
        tyk(&mut st, 119_999, "b", "404", "5");
        tyk(&mut st, 120_000, "a", "200", "1");
        let s = settings();
        let rows = st.rows(&[60_000], &s);
        let api_a = rows
            .iter()
            .find(|r| r.dimension == "OrgID,APIID" && r.key == r#"["org","a"]"#)
            .unwrap();
        assert_eq!((api_a.hits, api_a.success, api_a.errors), (2, 1, 1));
        assert_eq!(api_a.latency_total_ms, 40.0);
        assert_eq!(api_a.latency_max_ms, 30.0);
        assert_eq!(api_a.window_start, "1970-01-01 00:01:00");
        assert_eq!(api_a.window_seconds, 60);
        let b = rows
            .iter()
            .find(|r| r.dimension == "OrgID,APIID" && r.key == r#"["org","b"]"#)
            .unwrap();
        assert_eq!((b.hits, b.errors), (1, 1));
        assert_eq!(st.windows.len(), 2);
        assert_eq!(st.watermark, 120_000);
    }

    #[test]
    fn windows_finish_by_record_time_or_clock_after_grace() {
        let mut st = State::default();
        let s = settings();
        tyk(&mut st, 60_000, "a", "200", "1");
        assert!(st.finished(0, &s).is_empty());
        tyk(&mut st, 129_999, "a", "200", "1");
        assert!(st.finished(0, &s).is_empty(), "grace not over yet");
        tyk(&mut st, 130_000, "a", "200", "1");
        assert_eq!(st.finished(0, &s), vec![60_000]);
        assert_eq!(st.finished(200_000, &s), vec![60_000, 120_000]);
        st.remove(&[60_000]);
        assert_eq!(
            st.windows.keys().copied().collect::<Vec<_>>(),
            vec![120_000]
        );
    }

    #[test]
    fn keys_past_max_keys_fold_into_other() {
        let mut st = State::default();
        let s = settings_with_max_keys(3);
        for api in ["a", "b", "c", "d", "e"] {
            tyk_with(&mut st, 0, api, "200", "1", &s);
        }
        let rows = st.rows(&[0], &s);
        let other = rows
            .iter()
            .filter(|r| r.key.contains(OTHER))
            .map(|r| r.hits)
            .sum::<u64>();
        assert!(st.windows[&0].len() <= 3 + 3, "{:?}", st.windows[&0].keys());
        assert!(other > 0);
        assert_eq!(rows.iter().map(|r| r.hits).sum::<u64>(), 5 * 3);
    }

    #[test]
    fn state_round_trips_through_json_and_flush_ids_are_stable() {
        let mut st = State::default();
        tyk(&mut st, 0, "a", "200", "1.5");
        let back: State = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(back, st);
        let s = settings();
        assert_eq!(st.rows(&[0], &s), back.rows(&[0], &s));
    }
}

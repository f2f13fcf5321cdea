//! The `aggregate` plugin end to end: real host, real redis-server, windows
//! written over HTTP to a local recorder, counts compared with what the
//! produced records add up to.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;
use crate::sandbox::Recorder;

use pumphouse::record::IAM_KEY;
use pumphouse::record::TYK_KEY;
const WAIT: Duration = Duration::from_secs(60);
/// 2100-01-01T00:00:00Z: windows this far ahead never finish by the host's
/// clock, only by record time, so the test decides when they close.
pub(crate) const FUTURE: i64 = 4_102_444_800;

/// `(window start, dimension, key)` → (hits, success, errors, latency sum,
/// latency max).
pub(crate) type Counts = BTreeMap<(String, String, String), (u64, u64, u64, f64, f64)>;

/// The `aggregate` pump: one-minute windows written to `recorder`.
pub(crate) fn aggregate_pump(recorder: &Recorder, grace: &str) -> Pump {
    let addr = recorder.addr;
    Pump::new("agg", plugin("aggregate"))
        .set("tick_interval", "200ms")
        .config("window", "1m")
        .config("grace", grace)
        .config("output.kind", "http")
        .config("output.url", format!("http://{addr}/rows"))
        .sandbox(
            "allowed_outbound_hosts",
            strings([format!("http://{addr}")]),
        )
}

fn window_start(secs: i64) -> String {
    rfc3339(secs - secs.rem_euclid(60), 0)
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

fn add(counts: &mut Counts, window: &str, dim: &str, key: serde_json::Value, error: bool, ms: f64) {
    let c = counts
        .entry((window.to_string(), dim.to_string(), key.to_string()))
        .or_default();
    c.0 += 1;
    if error {
        c.2 += 1;
    } else {
        c.1 += 1;
    }
    c.3 += ms;
    c.4 = c.4.max(ms);
}

pub(crate) fn tyk_expected(records: &[pumphouse::produce::TykRecord]) -> Counts {
    let mut counts = Counts::new();
    for r in records {
        let w = window_start(r.timestamp.0);
        let err = r.response_code >= 400;
        let ms = r.request_time as f64;
        let code = r.response_code.to_string();
        add(
            &mut counts,
            &w,
            "OrgID,APIID",
            serde_json::json!([r.org_id, r.api_id]),
            err,
            ms,
        );
        add(
            &mut counts,
            &w,
            "OrgID,APIID,ResponseCode",
            serde_json::json!([r.org_id, r.api_id, code]),
            err,
            ms,
        );
        add(
            &mut counts,
            &w,
            "OrgID,APIKey",
            serde_json::json!([r.org_id, r.api_key]),
            err,
            ms,
        );
    }
    counts
}

/// Sums the rows received (they are partial aggregates) per window and key.
pub(crate) fn received(recorder: &Recorder) -> Counts {
    let mut counts = Counts::new();
    for body in recorder.bodies_at("/rows") {
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("a JSON array");
        for r in rows {
            assert_eq!(r["window_seconds"], 60);
            let key: serde_json::Value =
                serde_json::from_str(r["key"].as_str().expect("key")).expect("key is JSON");
            let c = counts
                .entry((
                    r["window_start"].as_str().unwrap().to_string(),
                    r["dimension"].as_str().unwrap().to_string(),
                    key.to_string(),
                ))
                .or_default();
            c.0 += r["hits"].as_u64().unwrap();
            c.1 += r["success"].as_u64().unwrap();
            c.2 += r["errors"].as_u64().unwrap();
            c.3 += r["latency_total_ms"].as_f64().unwrap();
            c.4 = c.4.max(r["latency_max_ms"].as_f64().unwrap());
        }
    }
    counts
}

/// Hits of dimension `dim` in the plugin's stored state.
pub(crate) fn stored_hits(conn: &mut redis::Connection, dim: &str) -> u64 {
    let state: Option<Vec<u8>> = redis::cmd("GET")
        .arg("pumphouse:kv:{agg}:state")
        .query(conn)
        .unwrap();
    let Some(state) = state else { return 0 };
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    let mut hits = 0;
    for window in state["windows"].as_object().unwrap().values() {
        for (key, c) in window.as_object().unwrap() {
            if key.split('\t').next() == Some(dim) {
                hits += c["hits"].as_u64().unwrap();
            }
        }
    }
    hits
}

#[test]
fn tyk_windows_survive_a_kill_and_redelivered_batches_count_once() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let recorder = Recorder::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    // While this file exists a second pump refuses every batch, so no claim
    // is acknowledged: after the kill, every batch the aggregate pump
    // counted comes again.
    std::fs::write(dir.path().join("out/hold"), b"").unwrap();
    let config = HostConfig::new(&redis)
        .tyk()
        .source("batch_size", 40)
        .source("lease", "1s")
        .pump(aggregate_pump(&recorder, "5m"))
        .pump(
            Pump::sink("holder", fixture("faulty"), "held.jsonl")
                .config("fail_while_exists", "/out/hold"),
        );
    let mut sampler = pumphouse::produce::Sampler::new(11);
    let records: Vec<_> = (0..400)
        .map(|i| sampler.tyk(i, FUTURE + (i as i64 / 200) * 60 + (i as i64 % 50)))
        .collect();
    let bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_tyk).collect();
    let mut host = Host::start_at(dir.path(), &config);
    push(&mut conn, TYK_KEY, &bytes);
    wait_for(WAIT, "400 records counted in the stored state", || {
        (stored_hits(&mut conn, "OrgID,APIID") == 400).then_some(())
    });
    assert_eq!(
        left_in_redis(&mut conn, TYK_KEY),
        (0, 400),
        "all still claimed"
    );
    assert!(
        recorder.bodies_at("/rows").is_empty(),
        "no window finished yet"
    );
    host.kill9();

    std::fs::remove_file(dir.path().join("out/hold")).unwrap();
    let host = Host::start_at(dir.path(), &config);
    wait_for(WAIT, "the redelivered batches acknowledged", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });
    assert!(
        host.metric("pumphouse_plugin_aggregate_duplicate_batches_total{pump=\"agg\"}") >= 1.0,
        "the redelivered batches were recognised"
    );
    assert_eq!(
        stored_hits(&mut conn, "OrgID,APIID"),
        400,
        "none counted twice"
    );

    // A record ten minutes on closes both windows by record time.
    let late = sampler.tyk(400, FUTURE + 600);
    push(&mut conn, TYK_KEY, &[pumphouse::produce::encode_tyk(&late)]);
    let expected = tyk_expected(&records);
    let got = wait_for(WAIT, "both windows written", || {
        let got = received(&recorder);
        (got.len() >= expected.len()).then_some(got)
    });
    assert_eq!(got, expected);
}

#[test]
fn iam_effects_are_counted_per_user_in_partial_rows() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let recorder = Recorder::start();
    // Records from the past: their windows are over by the host's clock, so
    // each batch's counts are written at once, as partial rows.
    let config = HostConfig::new(&redis)
        .source("batch_size", 25)
        .pump(aggregate_pump(&recorder, "0s"));
    let _host = Host::start(&config);
    let mut sampler = pumphouse::produce::Sampler::new(5);
    let records: Vec<_> = (0..300)
        .map(|i| sampler.iam(i, T0 + i as i64 % 150))
        .collect();
    let bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_iam).collect();
    push(&mut conn, IAM_KEY, &bytes);
    let mut expected = Counts::new();
    for r in &records {
        let w = window_start(r.timestamp);
        let err = r.effect != "allow";
        add(
            &mut expected,
            &w,
            "Username",
            serde_json::json!([r.username]),
            err,
            0.0,
        );
        add(
            &mut expected,
            &w,
            "Effect",
            serde_json::json!([r.effect]),
            err,
            0.0,
        );
        add(
            &mut expected,
            &w,
            "Username,Effect",
            serde_json::json!([r.username, r.effect]),
            err,
            0.0,
        );
    }
    let got = wait_for(WAIT, "every record's counts written", || {
        let got = received(&recorder);
        let hits: u64 = got
            .iter()
            .filter(|(k, _)| k.1 == "Effect")
            .map(|(_, c)| c.0)
            .sum();
        (hits >= 300).then_some(got)
    });
    assert_eq!(got, expected);
    assert!(
        recorder.bodies_at("/rows").len() > 1,
        "written batch by batch, not all at once"
    );
}

//! The `prometheus` plugin end to end: real host, real redis-server, and a
//! real Prometheus server scraping the host's `/metrics` and answering
//! PromQL with counts equal to what the produced records add up to.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;
use crate::sink_servers::PrometheusServer;

use pumphouse::record::TYK_KEY;
const WAIT: Duration = Duration::from_secs(120);

/// The `prometheus` pump, with its default config.
fn prometheus_pump() -> Pump {
    Pump::new("prom", plugin("prometheus"))
}

/// Waits until every pushed record was delivered and acknowledged, so the
/// host's counters are final.
fn wait_drained(conn: &mut redis::Connection, key: &str) {
    wait_for(WAIT, "every record acknowledged", || {
        (left_in_redis(conn, key) == (0, 0)).then_some(())
    });
}

/// The samples of `name` in a `/metrics` text: labels and value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            Some((parse_labels(labels), value.trim().parse().ok()?))
        })
        .collect()
}

/// `a="x",b="y \"q\""` → {a: x, b: y "q"}.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        value.push(if e == 'n' { '\n' } else { e });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_string(), value);
        rest = &after[end..];
    }
    out
}

/// The values of `labels` of each sample, summed per combination.
fn sum_by(
    samples: &[(BTreeMap<String, String>, f64)],
    labels: &[&str],
) -> BTreeMap<Vec<String>, f64> {
    let mut out = BTreeMap::new();
    for (l, v) in samples {
        let key = labels
            .iter()
            .map(|k| l.get(*k).cloned().unwrap_or_default())
            .collect();
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

#[test]
fn tyk_counts_and_latencies_reach_a_real_prometheus() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let config = HostConfig::new(&redis)
        .tyk()
        .source("batch_size", 50)
        .pump(prometheus_pump());
    let host = Host::start(&config);
    let records = push_tyk(&mut conn, TYK_KEY, 600, 21);
    wait_drained(&mut conn, TYK_KEY);

    let mut expected: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for r in &records {
        *expected
            .entry(vec![r.response_code.to_string(), r.api_id.clone()])
            .or_insert(0.0) += 1.0;
    }
    assert!(
        expected.len() > 1,
        "the sample spans several codes and APIs"
    );
    let latency_sum: i64 = records.iter().map(|r| r.request_time).sum();

    let Some(prom) = PrometheusServer::start(&host.http, &[]) else {
        return;
    };
    let counts = r#"sum by (code, api) (pumphouse_plugin_tyk_http_requests_total{pump="prom"})"#;
    // The host's counters were final before the first scrape, so the first
    // answer with every record in it is the answer.
    let got = wait_for(
        WAIT,
        "prometheus to have scraped the request counts",
        || {
            let result = prom.query(counts);
            let total: f64 = result.iter().map(|(_, v)| v).sum();
            (total >= records.len() as f64).then_some(result)
        },
    );
    let got: BTreeMap<Vec<String>, f64> = got
        .into_iter()
        .map(|(l, v)| (vec![l["code"].clone(), l["api"].clone()], v))
        .collect();
    assert_eq!(got, expected);

    let count = wait_for(WAIT, "the latency histogram scraped", || {
        prom.scalar(r#"sum(pumphouse_plugin_tyk_latency_ms_count{pump="prom"})"#)
    });
    assert_eq!(count, records.len() as f64);
    let sum = prom
        .scalar(r#"sum(pumphouse_plugin_tyk_latency_ms_sum{pump="prom"})"#)
        .expect("the _sum series");
    assert_eq!(sum, latency_sum as f64);
    // Every observation is at most 60 s, so the last finite bucket holds all.
    let le_max = prom
        .scalar(r#"sum(pumphouse_plugin_tyk_latency_ms_bucket{pump="prom",le="60000"})"#)
        .expect("the 60000 bucket");
    assert_eq!(le_max, records.len() as f64);
    assert_eq!(
        prom.scalar(r#"sum(pumphouse_plugin_prometheus_values_missing_total{pump="prom"})"#),
        None,
        "every sample record has a RequestTime"
    );
}

#[test]
fn iam_decisions_are_counted_per_user_and_effect() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let config = HostConfig::new(&redis)
        .source("batch_size", 40)
        .pump(prometheus_pump());
    let host = Host::start(&config);
    let records = push_iam(&mut conn, 400, 8);
    wait_drained(&mut conn, pumphouse::record::IAM_KEY);

    let mut expected: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for r in &records {
        *expected
            .entry(vec![r.username.clone(), r.effect.clone(), "prom".into()])
            .or_insert(0.0) += 1.0;
    }
    assert!(expected.len() > 2, "the sample spans users and effects");
    let got = sum_by(
        &samples(
            &host.metrics(),
            "pumphouse_plugin_iam_authz_decisions_total",
        ),
        &["user", "effect", "pump"],
    );
    assert_eq!(got, expected);
}

#[test]
fn a_small_max_series_folds_new_label_sets_into_other_and_keeps_totals() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let config = HostConfig::new(&redis)
        .tyk()
        .source("batch_size", 25)
        .pump(prometheus_pump().config("max_series", 2));
    let host = Host::start(&config);
    let records = push_tyk(&mut conn, TYK_KEY, 300, 4);
    wait_drained(&mut conn, TYK_KEY);
    let latency_sum: i64 = records.iter().map(|r| r.request_time).sum();

    let text = host.metrics();
    let reqs = sum_by(
        &samples(&text, "pumphouse_plugin_tyk_http_requests_total"),
        &["code", "api", "method"],
    );
    let other = vec!["__other__".to_string(); 3];
    let folded = *reqs
        .get(&other)
        .unwrap_or_else(|| panic!("no __other__ in {reqs:?}"));
    assert!(folded > 0.0);
    assert_eq!(reqs.len(), 3, "two label sets plus __other__: {reqs:?}");
    assert_eq!(reqs.values().sum::<f64>(), records.len() as f64);
    // The two admitted label sets hold exactly their records.
    for (key, n) in reqs.iter().filter(|(k, _)| **k != other) {
        let own = records
            .iter()
            .filter(|r| {
                [
                    r.response_code.to_string(),
                    r.api_id.clone(),
                    r.method.clone(),
                ] == key[..]
            })
            .count();
        assert_eq!(*n, own as f64, "{key:?}");
    }
    let capped = sum_by(
        &samples(&text, "pumphouse_plugin_prometheus_series_capped_total"),
        &["metric"],
    );
    assert_eq!(
        capped.get(&vec!["tyk_http_requests".to_string()]),
        Some(&folded)
    );

    // Three APIs in the sample: two keep their latency series, the third
    // is observed under __other__.
    let latency_count = sum_by(
        &samples(&text, "pumphouse_plugin_tyk_latency_ms_count"),
        &["api"],
    );
    assert_eq!(latency_count.len(), 3, "{latency_count:?}");
    assert!(
        latency_count.contains_key(&vec!["__other__".to_string()]),
        "{latency_count:?}"
    );
    assert_eq!(latency_count.values().sum::<f64>(), records.len() as f64);
    let latency_sum_got: f64 = samples(&text, "pumphouse_plugin_tyk_latency_ms_sum")
        .iter()
        .map(|(_, v)| v)
        .sum();
    assert_eq!(latency_sum_got, latency_sum as f64);
}

#[test]
fn a_bad_config_fails_the_pump_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let config = HostConfig::at_url("redis://127.0.0.1:1/0").tyk().pump(
        prometheus_pump().toml(r#"config.metrics = [{ name = "Requests", type = "counter" }]"#),
    );
    std::fs::write(&path, config.to_toml()).unwrap();
    let (code, out, err) = pumphouse(&["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("metrics[0].name:") && err.contains("Requests"),
        "stdout: {out}\nstderr: {err}"
    );
}

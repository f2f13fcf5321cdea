//! Python plugins (`sdk/python`): the bundled `health-filter` example next
//! to a Rust pump, a scaffolded Python project built from a clean
//! directory, `plugins test` and `plugins inspect` on Python components,
//! and the hostile Python fixtures (`tests/python-plugins`) hitting the
//! same limits as the Rust ones.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pumphouse::record::TYK_KEY;
use serde_json::Value;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);

/// The seq the sample generator puts at the end of a Tyk record's path;
/// `RawPath` keeps it when the test rewrites `Path`.
fn tyk_seq(line: &Value) -> usize {
    let raw = line["RawPath"].as_str().expect("RawPath");
    raw.rsplit('/').next().unwrap().parse().unwrap()
}

fn masked(key: &str) -> String {
    let n = key.chars().count();
    if n <= 4 {
        return "*".repeat(n);
    }
    "*".repeat(n - 4) + &key[key.len() - 4..]
}

#[test]
fn the_python_health_filter_drops_health_checks_and_masks_keys_next_to_a_rust_pump() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let mut sampler = pumphouse::produce::Sampler::new(19);
    let mut records: Vec<_> = (0..300).map(|i| sampler.tyk(i, T0)).collect();
    // Every fifth record is a load balancer's health check.
    for (i, r) in records.iter_mut().enumerate() {
        if i % 5 == 0 {
            r.path = if i % 10 == 0 { "/health" } else { "/status/db" }.into();
        }
    }
    let bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_tyk).collect();
    push(&mut conn, TYK_KEY, &bytes);
    let host = Host::start(
        HostConfig::new(&redis)
            .tyk()
            .source("batch_size", 64)
            .pump(Pump::file("plain", "plain.jsonl"))
            .pump(Pump::file("masked", "masked.jsonl").filter_plugin(
                plugin("health-filter"),
                [("paths", strings(["/health", "/status/*"]))],
            )),
    );
    let plain = wait_lines(&host.out().join("plain.jsonl"), 300, WAIT);
    let masked_lines = wait_lines(&host.out().join("masked.jsonl"), 240, WAIT);
    wait_for(WAIT, "the filter's counter", || {
        (host.metric("pumphouse_plugin_health_checks_dropped_total{pump=\"masked\"}") >= 60.0)
            .then_some(())
    });
    // The Rust pump got every record as produced.
    let by_seq: HashMap<usize, &Value> = plain.iter().map(|l| (tyk_seq(l), l)).collect();
    assert_eq!(by_seq.len(), 300);
    for (seq, l) in &by_seq {
        let r = &records[*seq];
        assert_eq!(l["Path"], r.path.as_str());
        assert_eq!(l["APIKey"], r.api_key.as_str());
        assert_eq!(l["ResponseCode"], r.response_code);
        assert_eq!(l["TimeStamp"], rfc3339(r.timestamp.0, r.timestamp.1));
    }
    // The Python pump: no health checks, keys masked, every other field
    // exactly as the Rust pump wrote it.
    let mut seen = HashSet::new();
    assert_eq!(masked_lines.len(), 240);
    for l in &masked_lines {
        let seq = tyk_seq(l);
        assert!(seen.insert(seq), "seq {seq} twice");
        assert_ne!(seq % 5, 0, "health check {seq} was delivered");
        let mut want = by_seq[&seq].clone();
        let key = records[seq].api_key.clone();
        want["APIKey"] = masked(&key).into();
        assert_eq!(l, &want, "record {seq}");
        assert!(!l["APIKey"]
            .as_str()
            .unwrap()
            .contains(&key[..key.len() - 4]));
    }
    assert_eq!(
        host.metric("pumphouse_plugin_health_checks_dropped_total{pump=\"masked\"}"),
        60.0
    );
}

#[test]
fn iam_records_pass_the_python_filter_field_by_field() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_iam(&mut conn, 200, 23);
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 50)
            .pump(Pump::file("plain", "plain.jsonl"))
            .pump(
                Pump::file("filtered", "filtered.jsonl")
                    .filter_plugin(plugin("health-filter"), [("keep_last", 2)]),
            ),
    );
    assert_iam_lines(
        &wait_lines(&host.out().join("plain.jsonl"), 200, WAIT),
        &records,
    );
    assert_iam_lines(
        &wait_lines(&host.out().join("filtered.jsonl"), 200, WAIT),
        &records,
    );
}

#[test]
fn a_python_plugin_that_loops_forever_is_timed_out_alone() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 200, 29);
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 50)
            .pump(Pump::file("healthy", "healthy.jsonl"))
            .pump(
                Pump::new("spin", fixture("spin-py"))
                    .set("timeout", "300ms")
                    .retry("50ms", "200ms"),
            ),
    );
    let lines = wait_lines(&host.out().join("healthy.jsonl"), 200, WAIT);
    assert_eq!(lines.iter().map(iam_seq).collect::<HashSet<_>>().len(), 200);
    wait_for(WAIT, "timeouts counted", || {
        (host.metric("pumphouse_pump_errors_total{pump=\"spin\",kind=\"timeout\"}") >= 2.0)
            .then_some(())
    });
    let (_, body) = http_get(&host.http, "/readyz").unwrap();
    assert!(
        body.contains("\"spin\"") && body.contains("timed out"),
        "{body}"
    );
}

#[test]
fn a_python_plugin_that_allocates_without_bound_hits_its_memory_limit_alone() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 200, 31);
    let mut host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 50)
            .pump(Pump::file("healthy", "healthy.jsonl"))
            .pump(
                Pump::new("hog", fixture("hog-py"))
                    .retry("50ms", "200ms")
                    .sandbox("max_memory", "96MiB"),
            ),
    );
    let lines = wait_lines(&host.out().join("healthy.jsonl"), 200, WAIT);
    assert_eq!(lines.iter().map(iam_seq).collect::<HashSet<_>>().len(), 200);
    wait_for(WAIT, "memory errors counted", || {
        (host.metric("pumphouse_pump_errors_total{pump=\"hog\",kind=\"memory\"}") >= 2.0)
            .then_some(())
    });
    let (_, body) = http_get(&host.http, "/readyz").unwrap();
    assert!(
        body.contains("\"hog\"") && body.contains("memory"),
        "{body}"
    );
    assert!(host.is_running());
}

#[test]
fn plugins_test_and_inspect_run_on_a_python_filter() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    let input = input.to_str().unwrap();
    let (code, _, err) = pumphouse(&[
        "produce",
        "--format",
        "tyk",
        "--count",
        "120",
        "--to-file",
        input,
    ]);
    assert_eq!(code, 0, "{err}");
    let wasm = plugin("health-filter");
    let (code, out, err) = pumphouse(&[
        "plugins",
        "test",
        &wasm,
        "--input",
        input,
        "--format",
        "tyk",
        "--config",
        r#"{"paths": ["/nothing"]}"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    // No path matches: every record comes back, replaced (keys masked).
    assert!(out.contains("replace with 100 records (json)"), "{out}");
    assert!(out.contains("replace with 20 records (json)"), "{out}");
    let (code, out, err) = pumphouse(&[
        "plugins",
        "test",
        &wasm,
        "--input",
        input,
        "--format",
        "tyk",
        "--config",
        r#"{"keep_last": "four"}"#,
    ]);
    assert_ne!(code, 0, "a bad config fails: {out}");
    assert!(format!("{out}{err}").contains("keep_last"), "{out}{err}");
    let (code, out, err) = pumphouse(&["plugins", "inspect", &wasm]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("world:    pumphouse:plugin/pump-filter@0.1.0"),
        "{out}"
    );
    assert!(out.contains("language: Python 3."), "{out}");
    assert!(out.contains("(componentize-py)"), "{out}");
    // CPython, not the plugin, imports these; never the Rust note.
    for cap in ["env        ", "filesystem ", "sockets    "] {
        assert!(
            out.contains(&format!("{cap} imported   (by every Python plugin")),
            "{out}"
        );
    }
    assert!(!out.contains("Rust plugin"), "{out}");
    let (_, out, _) = pumphouse(&["plugins", "inspect", &plugin("blackhole")]);
    // Rust components also carry the C of wasi-libc in their producers.
    assert!(out.contains("language: Rust"), "{out}");
}

/// The pinned Python tools `scripts/build` installs.
fn python_tools() -> std::path::PathBuf {
    root().join("target/python-tools/bin/python")
}

#[test]
fn a_scaffolded_python_sink_and_filter_build_and_pass_their_tests_from_a_clean_dir() {
    scaffolds_build_and_pass("python", "py", "2 passed", &[("PYTHON", &python_tools())]);
}

#[test]
fn the_host_serves_http_while_it_compiles_an_uncached_python_plugin() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_iam(&mut conn, 100, 37);
    // An empty wasmtime cache: the host compiles the 18 MB component anew.
    let cache = tempfile::tempdir().unwrap();
    let host = Host::start_in_env(
        tempfile::tempdir().unwrap(),
        HostConfig::new(&redis).source("batch_size", 50).pump(
            Pump::file("filtered", "filtered.jsonl")
                .filter_plugin(plugin("health-filter"), [("keep_last", 2)]),
        ),
        &[("XDG_CACHE_HOME", cache.path().to_str().unwrap())],
    );
    // A cold compile on a loaded 2-core machine can take a minute.
    let lines = wait_lines(
        &host.out().join("filtered.jsonl"),
        100,
        Duration::from_secs(300),
    );
    assert_iam_lines(&lines, &records);
    let log = host.log_text();
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in the log: {log:.3000}"))
    };
    assert!(
        at("serving the status page") < at("loading plugin"),
        "HTTP is up before the compile: {log:.3000}"
    );
    // The compile was a real one: it filled the empty cache.
    let cached = walk_files(&cache.path().join("pumphouse/compiled"));
    assert!(cached > 0, "nothing in the compilation cache");
}

/// How many files are under `dir`, recursively.
fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

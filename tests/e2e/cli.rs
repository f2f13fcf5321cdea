//! The command line: `check`, `plugins inspect`, `produce`, and the example
//! config.

use std::time::Duration;

use crate::harness::*;

fn check(config: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    pumphouse(&["check", "--config", path.to_str().unwrap()])
}

/// A valid config: one file pump, its Redis down (`check` only reports it).
fn good_config() -> HostConfig {
    HostConfig::at_url("redis://127.0.0.1:1/0").pump(Pump::file("file", "x.jsonl"))
}

#[test]
fn check_accepts_a_good_config_and_names_what_it_loaded() {
    let (code, out, err) = check(&good_config().to_toml());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pump file: sink file"), "{out}");
    assert!(out.contains("redis: NOT reachable"), "{out}");
}

#[test]
fn check_rejects_bad_configs_naming_the_field_or_plugin() {
    let pump = |edit: fn(Pump) -> Pump| good_config().edit_pump("file", edit);
    let cases: Vec<(String, &str)> = vec![
        (good_config().source("batchsize", 10).to_toml(), "batchsize"),
        (
            good_config().source("batch_size", 0).to_toml(),
            "source.batch_size",
        ),
        (good_config().source("format", "xml").to_toml(), "xml"),
        (
            pump(|p| p.set("name", "has space")).to_toml(),
            "pumps[0].name",
        ),
        (
            pump(|p| p.set("plugin", "/nonexistent/nope.wasm")).to_toml(),
            "/nonexistent/nope.wasm",
        ),
        (
            pump(|p| p.set("plugin", plugin("match"))).to_toml(),
            "filter plugin",
        ),
        (
            pump(|p| p.config("path", "/elsewhere/x.jsonl")).to_toml(),
            "pump file: sink",
        ),
        (
            good_config()
                .source("redis_url", "${PUMPHOUSE_TEST_UNSET_VAR}")
                .to_toml(),
            "PUMPHOUSE_TEST_UNSET_VAR",
        ),
        ("this is [not toml".to_string(), "c.toml"),
        (
            pump(|p| p.sandbox("allowed_outbound_hosts", strings(["example.com:443"]))).to_toml(),
            "pumps[0] (file).sandbox.allowed_outbound_hosts[0]",
        ),
        (
            pump(|p| p.sandbox("sockets", strings(["https://statsd:8125"]))).to_toml(),
            "sandbox.sockets[0]",
        ),
    ];
    for (config, needle) in cases {
        let (code, out, err) = check(&config);
        assert_ne!(code, 0, "accepted a bad config:\n{config}\n{out}");
        assert!(
            err.contains(needle),
            "expected {needle:?} in the error, got:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_file_that_is_not_a_component_is_rejected_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("half-copied.wasm");
    let real = std::fs::read(plugin("file")).unwrap();
    std::fs::write(&bogus, &real[..real.len() / 2]).unwrap();
    let config = good_config().edit_pump("file", |p| p.set("plugin", bogus.to_str().unwrap()));
    let (code, _, err) = check(&config.to_toml());
    assert_ne!(code, 0);
    assert!(
        err.contains("half-copied.wasm") && err.contains("not a valid WebAssembly component"),
        "{err}"
    );
}

#[test]
fn plugins_inspect_shows_world_and_description() {
    let (code, out, err) = pumphouse(&["plugins", "inspect", &plugin("file")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("world:    pumphouse:plugin/pump-sink@0.1.0"),
        "{out}"
    );
    assert!(out.contains("name:     file"), "{out}");
    assert!(out.contains("accepts:  json"), "{out}");
    assert!(
        out.contains("pumphouse:plugin/host@0.1.0"),
        "imports listed: {out}"
    );
    let (code, out, _) = pumphouse(&["plugins", "inspect", &plugin("match")]);
    assert_eq!(code, 0);
    assert!(out.contains("pump-filter"), "{out}");
}

#[test]
fn produce_writes_records_the_host_can_decode() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let (code, _, err) = pumphouse(&[
        "produce", "--format", "tyk", "--count", "2500", "--shards", "4", "--redis", &url,
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut conn = redis_conn(&redis);
    let mut total = 0u64;
    for i in 0..4 {
        let key = format!("{}_{i}", pumphouse::record::TYK_KEY);
        let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        for it in &items {
            pumphouse::record::decode(pumphouse::record::Schema::Tyk, it).expect("decodes");
        }
        total += items.len() as u64;
    }
    assert_eq!(total, 2500);
}

#[test]
fn the_example_config_parses_and_documents_every_field() {
    let path = root().join("configs/pumphouse.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = pumphouse::config::Config::from_str_with(
        &text,
        &path,
        &root().join("configs"),
        |k| match k {
            "REDIS_PASSWORD" => Some("secret".into()),
            _ => None,
        },
    )
    .unwrap();
    assert!(!config.pumps.is_empty());
    // Every field the config structs accept appears in the example.
    for field in [
        "plugins_dir",
        "spool_dir",
        "watch",
        "debounce",
        "type",
        "group",
        "stream_field",
        "max_deliveries",
        "buffer",
        "max_spool_bytes",
        "when_full",
        "max_batch_bytes",
        "max_attempts",
        "rate_limit",
        "records_per_second",
        "bytes_per_second",
        "redis_url",
        "format",
        "key",
        "shards",
        "delivery",
        "batch_size",
        "lease",
        "poll_interval",
        "dead_letter_key",
        "listen",
        "drain_timeout",
        "name",
        "plugin",
        "usernames",
        "skip_usernames",
        "org_ids",
        "skip_org_ids",
        "api_ids",
        "skip_api_ids",
        "response_codes",
        "skip_response_codes",
        "omit_detailed_recording",
        "max_record_size",
        "filters_chain",
        "timeout",
        "max_in_flight_batches",
        "workers",
        "initial",
        "max",
        "max_memory",
        "dirs",
        "host",
        "guest",
        "read_only",
        "env",
        "allowed_outbound_hosts",
        "allow_private_networks",
        "http_timeout",
        "sockets",
        "log_lines_per_second",
        "log_burst",
        "config",
    ] {
        let documented = text.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{field} ="))
                || l.contains(&format!("{field} = "))
                || l.ends_with(&format!(".{field}]]"))
                || l.ends_with(&format!(".{field}]"))
        });
        assert!(documented, "example config lacks {field}");
    }
}

#[test]
fn metrics_endpoint_exposes_the_documented_series() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push(
        &mut conn,
        pumphouse::record::IAM_KEY,
        &[pumphouse::produce::encode_iam(
            &pumphouse::produce::Sampler::new(1).iam(0, 1_763_700_000),
        )],
    );
    let host = Host::start(HostConfig::new(&redis).pump(Pump::file("file", "x.jsonl")));
    wait_lines(&host.out().join("x.jsonl"), 1, Duration::from_secs(30));
    let m = wait_for(Duration::from_secs(10), "metrics", || {
        let m = host.metrics();
        (m.contains("pumphouse_records_acked_total") && m.contains("pumphouse_source_backlog"))
            .then_some(m)
    });
    for name in [
        "pumphouse_records_claimed_total",
        "pumphouse_records_acked_total",
        "pumphouse_pump_records_written_total{pump=\"file\"}",
        "pumphouse_source_backlog{key=\"analytics-iam-system-analytics\"}",
        "pumphouse_pump_batch_seconds_bucket",
    ] {
        assert!(m.contains(name), "missing {name} in:\n{m}");
    }
}

#[test]
fn check_require_redis_fails_when_redis_is_down_and_errors_say_each_cause_once() {
    let (code, out, err) = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, good_config().to_toml()).unwrap();
        pumphouse(&[
            "check",
            "--require-redis",
            "--config",
            path.to_str().unwrap(),
        ])
    };
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("check FAILED") && !out.contains("config OK"),
        "{out}"
    );

    // A plugin's init error, wrapped by the pump, is said once.
    let bad = good_config().edit_pump("file", |p| p.config("path", 5));
    let (code, _, err) = check(&bad.to_toml());
    assert_ne!(code, 0);
    assert_eq!(err.matches("init failed").count(), 1, "{err}");
    assert_eq!(err.matches("invalid type").count(), 1, "{err}");

    // produce against nothing: the address once, the OS error once.
    let (code, _, err) = pumphouse(&[
        "produce",
        "--format",
        "iam",
        "--count",
        "1",
        "--redis",
        "redis://127.0.0.1:1/0",
    ]);
    assert_ne!(code, 0);
    assert_eq!(err.matches("127.0.0.1:1").count(), 1, "{err}");
    assert_eq!(err.matches("os error 111").count(), 1, "{err}");
}

#[test]
fn a_plugin_named_without_wasm_resolves_and_a_non_wasm_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin("file"), dir.path().join("file.wasm")).unwrap();
    let config = good_config()
        .set("plugins_dir", dir.path().to_str().unwrap())
        .edit_pump("file", |p| p.set("plugin", "file"));
    let (code, out, err) = check(&config.to_toml());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pump file: sink file"), "{out}");

    let (code, _, err) = pumphouse(&[
        "plugins",
        "inspect",
        root().join("Cargo.toml").to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("not a WebAssembly component"), "{err}");
    assert!(err.lines().count() <= 2 && !err.contains("0x"), "{err}");
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let (_, _, err) = check(&good_config().to_toml());
    assert!(err.contains("plugin loaded"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

//! What `deploy/` ships, checked for real: the alert rules by `promtool`
//! and by a real Prometheus scraping a host whose pumps fail, every
//! Grafana dashboard expression evaluated by that Prometheus, the systemd
//! unit by `systemd-analyze verify`, and the readiness protocol the unit
//! relies on (`Type=notify`).

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::strings;
use crate::harness::*;
use crate::sink_servers::{find_binary, PrometheusServer};

fn deploy(path: &str) -> PathBuf {
    root().join("deploy").join(path)
}

/// Runs `program args` in `dir`; its combined output, asserting success.
fn run_ok(program: &std::path::Path, args: &[&str], dir: &std::path::Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} {args:?}: {text}",
        program.display()
    );
    text
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = find_binary(&["promtool"]) else {
        return;
    };
    let dir = deploy("prometheus");
    let checked = run_ok(&promtool, &["check", "rules", "pumphouse-alerts.yml"], &dir);
    assert!(checked.contains("SUCCESS: 6 rules found"), "{checked}");
    run_ok(
        &promtool,
        &["test", "rules", "pumphouse-alerts.test.yml"],
        &dir,
    );
}

#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = find_binary(&["systemd-analyze"]) else {
        return;
    };
    // The unit names /usr/bin/pumphouse; verify checks that it exists, so
    // point it at the binary under test.
    let unit = std::fs::read_to_string(deploy("systemd/pumphouse.service"))
        .unwrap()
        .replace("/usr/bin/pumphouse", env!("CARGO_BIN_EXE_pumphouse"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pumphouse.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    // verify also reports units outside ours that this machine lacks
    // (network-online.target's dependencies); ours must have no finding.
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("pumphouse.service"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {text}");
}

#[test]
fn tells_systemd_ready_reloading_and_stopping() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification within 60 s");
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    let config = HostConfig::new(&redis).pump(Pump::file("a", "a.jsonl"));
    let mut host = Host::start_in_env(
        dir,
        &config,
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let ready = next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    // By READY=1 the pumps run: records flow at once.
    push_iam(&mut redis_conn(&redis), 10, 1);
    wait_lines(&host.out().join("a.jsonl"), 10, Duration::from_secs(30));

    let (code, body) = http_post(&host.http, "/admin/reload");
    assert_eq!(code, 200, "{body}");
    let reloading = next();
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1")
            && reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    let again = next();
    assert!(again.lines().any(|l| l == "READY=1"), "{again:?}");

    host.signal(Signal::SIGTERM);
    let stopping = next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(host.wait_exit(Duration::from_secs(30)), Some(0));
}

/// The rules file with every `for:` cut to zero: the expressions are what
/// this test proves; their durations are `promtool test rules`' business.
fn rules_without_delays(into: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(deploy("prometheus/pumphouse-alerts.yml")).unwrap();
    let cut: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for: ") {
                let indent = &l[..l.len() - l.trim_start().len()];
                format!("{indent}for: 0s\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(cut, text, "the rules have for: durations to cut");
    let path = into.join("alerts.yml");
    std::fs::write(&path, cut).unwrap();
    path
}

fn firing(prom: &PrometheusServer, alert: &str) -> Vec<BTreeMap<String, String>> {
    prom.firing()
        .into_iter()
        .filter(|a| a.get("alertname").map(String::as_str) == Some(alert))
        .collect()
}

/// Waits (up to a minute) for `alert` to fire; its instances' labels.
fn wait_firing(prom: &PrometheusServer, alert: &str) -> Vec<BTreeMap<String, String>> {
    wait_for(Duration::from_secs(60), &format!("{alert} firing"), || {
        let a = firing(prom, alert);
        (!a.is_empty()).then_some(a)
    })
}

/// Every PromQL expression of the dashboard (panels and variables), with
/// Grafana's variables replaced by what "All" means.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(deploy("grafana/pumphouse.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let grafana = |e: &str| {
        e.replace("$instance", ".*")
            .replace("$pump", ".*")
            .replace("$__rate_interval", "30s")
    };
    let mut out: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| grafana(t["expr"].as_str().unwrap()))
        .collect();
    // `label_values(<selector>, <label>)` is Grafana's; its selector is
    // PromQL and must find series.
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel)
                .unwrap_or_else(|| panic!("variable query {q:?}"));
            out.push(grafana(inner));
        }
    }
    out
}

#[test]
fn alerts_fire_on_a_failing_host_and_every_dashboard_query_has_data() {
    let mut redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    // Both failing pumps fail while this file exists, from the start.
    std::fs::write(dir.path().join("out/outage"), "").unwrap();
    let failing = |name: &str| {
        Pump::sink(name, fixture("faulty"), &format!("{name}.jsonl"))
            .config("fail_while_exists", "/out/outage")
            .retry("20ms", "100ms")
    };
    let config = HostConfig::new(&redis)
        .source("batch_size", 50)
        .set("spool_dir", "spool")
        .pump(Pump::file("healthy", "healthy.jsonl"))
        .pump(Pump::file("admins", "admins.jsonl").set("filters.usernames", strings(["admin"])))
        // Retries for ever: not ok on /readyz, its batches in its spool.
        .pump(failing("stuck").set("buffer", "disk"))
        // Gives up: dead letters.
        .pump(failing("down").set("retry.max_attempts", 2));
    let host = Host::start_in(dir, &config);
    let Some(prom) =
        PrometheusServer::start(&host.http, &[rules_without_delays(host.dir.as_path())])
    else {
        return;
    };
    // Counters exported at 0 before the first dead letter: the scrape must
    // see that 0, or `increase` has nothing to compare the later value with.
    wait_for(Duration::from_secs(30), "a first scrape", || {
        (!prom
            .query(r#"pumphouse_records_dead_lettered_total{pump="down"}"#)
            .is_empty())
        .then_some(())
    });
    push_iam(&mut conn, 300, 1);
    wait_lines(
        &host.out().join("healthy.jsonl"),
        300,
        Duration::from_secs(60),
    );
    let (code, body) = http_post(&host.http, "/admin/reload");
    assert_eq!(code, 200, "{body}");

    let not_ok = wait_firing(&prom, "PumphousePumpNotOk");
    let pumps: Vec<&str> = not_ok.iter().map(|a| a["pump"].as_str()).collect();
    assert!(pumps.contains(&"stuck"), "{not_ok:?}");
    assert!(!pumps.contains(&"healthy"), "{not_ok:?}");
    let dead = wait_firing(&prom, "PumphouseDeadLetters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["pump"], "down");
    assert!(firing(&prom, "PumphouseRedisUnreachable").is_empty());
    assert!(firing(&prom, "PumphouseDown").is_empty());

    // Redis goes away: the host stays up and says so.
    redis.kill();
    let unreachable = wait_firing(&prom, "PumphouseRedisUnreachable");
    assert_eq!(unreachable[0]["instance"], host.http);

    // Every dashboard query is valid PromQL and finds series: a misspelt
    // metric or label would come back empty.
    let queries = dashboard_queries();
    assert!(queries.len() >= 17, "{queries:?}");
    for q in &queries {
        let result = wait_for(Duration::from_secs(30), &format!("data for {q}"), || {
            let r = prom.query(q);
            (!r.is_empty()).then_some(r)
        });
        assert!(
            result
                .iter()
                .all(|(_, v)| v.is_finite() || q.contains("histogram_quantile")),
            "{q}: {result:?}"
        );
    }
}

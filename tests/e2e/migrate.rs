//! `pumphouse migrate`: configs in tyk-pump's and iam-pump's own formats
//! (tests/e2e/fixtures/migrate, written from the upstream example configs
//! and option structs) are converted by the real binary, and each result
//! passes `pumphouse check` with the bundled plugins, its Redis URL
//! pointing at a redis-server started here.

use std::path::Path;
use std::process::Command;

use crate::harness::*;

fn fixture_path(name: &str) -> String {
    root()
        .join("tests/e2e/fixtures/migrate")
        .join(name)
        .display()
        .to_string()
}

/// Runs the binary with extra environment: exit code, stdout, stderr.
fn run(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pumphouse"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn plugins_dir() -> String {
    let file = plugin("file");
    Path::new(&file).parent().unwrap().display().to_string()
}

/// Migrates `fixture`, writes the result beside an `analytics-data`
/// folder (the csv pumps' directory) and runs `check` on it.
fn migrate_and_check(
    from: &str,
    fixture: &str,
    env: &[(&str, String)],
) -> (i32, String, String, String) {
    let plugins = plugins_dir();
    let (code, toml, err) = run(
        &[
            "migrate",
            "--from",
            from,
            "--plugins-dir",
            &plugins,
            &fixture_path(fixture),
        ],
        env,
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("analytics-data")).unwrap();
    let path = dir.path().join("pumphouse.toml");
    std::fs::write(&path, &toml).unwrap();
    let (check_code, check_out, check_err) =
        run(&["check", "--config", path.to_str().unwrap()], env);
    assert_eq!(
        check_code, 0,
        "check failed:\n{check_out}{check_err}\n--- config:\n{toml}"
    );
    (code, toml, err, check_out)
}

fn not_migrated(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("not migrated: "))
        .map(|l| l.split(':').next().unwrap().to_string())
        .collect()
}

#[test]
fn migrate_tyk_pump_config_passes_check() {
    let redis = RedisServer::start().unwrap();
    // The fixture's password, set on the real server: the percent-encoded
    // URL must authenticate.
    let mut conn = redis_conn(&redis);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret/pass")
        .query(&mut conn)
        .unwrap();
    // tyk-pump's own override variables point it at that server; the
    // migrated config keeps reading them.
    let env = [
        (
            "TYK_PMP_ANALYTICSSTORAGECONFIG_HOST",
            "127.0.0.1".to_string(),
        ),
        (
            "TYK_PMP_ANALYTICSSTORAGECONFIG_PORT",
            redis.port().to_string(),
        ),
    ];
    let (code, toml, err, check) = migrate_and_check("tyk-pump", "tyk-pump.conf", &env);
    assert_eq!(code, 2, "{err}");
    assert!(
        toml.contains(r#"redis_url = "redis://:s3cret%2Fpass@${TYK_PMP_ANALYTICSSTORAGECONFIG_HOST}:${TYK_PMP_ANALYTICSSTORAGECONFIG_PORT}/0""#),
        "{toml}"
    );
    assert_eq!(
        not_migrated(&err),
        [
            "pump kafka (type kafka)",
            "pump mongo (type mongo)",
            "pump prometheus",
            "pump splunk (type splunk)",
            "pump statsd (type statsd)",
            "pump syslog (type syslog)",
        ],
        "{err}"
    );
    for line in [
        "pump csv: sink csv",
        "pump dummy: sink blackhole",
        "pump elasticsearch: sink elasticsearch",
        "pump influx: sink influxdb",
        "pump logzio: sink http",
        "pump prometheus: sink prometheus",
        // No database listens where the fixture points: `check` passes,
        // as it does with an unreachable Redis, and the sink warns.
        "pump sql: sink sql",
        "pump sql_aggregate: sink sql",
        "pump stdout: sink stdout",
        "redis: reachable",
    ] {
        assert!(
            check.lines().any(|l| l.starts_with(line)),
            "{line:?} missing:\n{check}"
        );
    }
    assert_eq!(
        check.lines().filter(|l| l.starts_with("pump ")).count(),
        9,
        "{check}"
    );
}

#[test]
fn migrate_iam_pump_config_keeps_env_references_and_passes_check() {
    let redis = RedisServer::start().unwrap();
    // The variables iam-pump.yaml refers to, set for `check` only: the
    // migrated config must read them itself.
    let env = [
        ("REDIS_HOST", "127.0.0.1".to_string()),
        ("REDIS_PORT", redis.port().to_string()),
        ("REDIS_PASSWORD", String::new()),
        ("IAM_PUMP_ES_URL", "http://127.0.0.1:9200".to_string()),
        ("IAM_PUMP_ES_PASSWORD", "es-secret".to_string()),
        ("IAM_PUMP_INFLUX_PASSWORD", "influx-secret".to_string()),
    ];
    let (code, toml, err, check) = migrate_and_check("iam-pump", "iam-pump.yaml", &env);
    assert_eq!(code, 2, "{err}");
    assert!(
        toml.contains(r#"redis_url = "redis://:${REDIS_PASSWORD}@${REDIS_HOST}:${REDIS_PORT}/0""#),
        "{toml}"
    );
    // Secrets stay with the plugin: `$${NAME}` plus the sandbox grant.
    assert!(
        toml.contains(r#"password = "$${IAM_PUMP_ES_PASSWORD}""#),
        "{toml}"
    );
    assert!(!toml.contains("es-secret"));
    assert_eq!(
        not_migrated(&err),
        [
            "pump kafka (type kafka)",
            "pump mongo (type mongo)",
            "pump syslog (type syslog)"
        ],
        "{err}"
    );
    for line in [
        "pump csv: sink csv",
        "pump dummy: sink blackhole",
        "pump elasticsearch: sink elasticsearch",
        "pump influx: sink influxdb",
        "pump prometheus: sink prometheus",
        "redis: reachable",
    ] {
        assert!(
            check.lines().any(|l| l.starts_with(line)),
            "{line:?} missing:\n{check}"
        );
    }
}

/// Sentinel and cluster settings become the `redis+sentinel://` and
/// `redis+cluster://` URL forms. Only the text (and, for the cluster,
/// that `check` accepts it) is checked here: no sentinel or cluster runs
/// in this test.
#[test]
fn migrate_maps_sentinel_and_cluster_settings_to_their_url_forms() {
    let (code, toml, err) = run(
        &[
            "migrate",
            "--from",
            "tyk-pump",
            &fixture_path("tyk-pump-sentinel.conf"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(toml.contains(
        r#"redis_url = "rediss+sentinel://pump:p%40ss%20word@10.0.0.11:26379,10.0.0.12:26379,10.0.0.13:26379/mymaster/2""#
    ), "{toml}");
    assert!(toml.contains("[source.tls]\ninsecure = true"), "{toml}");
    assert!(
        toml.contains(r#"key = "tyk-tyk-system-analytics""#),
        "{toml}"
    );
    // `check` takes the cluster form (config OK; no cluster runs there).
    let (code, toml, err, check) = migrate_and_check("tyk-pump", "tyk-pump-cluster.conf", &[]);
    assert_eq!(code, 0, "{err}");
    assert!(toml.contains(
        r#"redis_url = "redis+cluster://:clusterpass@10.0.1.1:7000,10.0.1.2:7001,10.0.1.3:7002""#
    ), "{toml}");
    assert!(check.contains("config OK"), "{check}");
}

#[test]
fn migrate_names_the_file_when_it_cannot_be_read_or_parsed() {
    let (code, _, err) = run(
        &["migrate", "--from", "tyk-pump", "/nonexistent/pump.conf"],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/pump.conf"), "{err}");
    // iam-pump's YAML is not JSON.
    let yaml = fixture_path("iam-pump.yaml");
    let (code, _, err) = run(&["migrate", "--from", "tyk-pump", &yaml], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("iam-pump.yaml") && err.contains("not a valid tyk-pump config"),
        "{err}"
    );
}

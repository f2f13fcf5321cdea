//! The sandbox against hostile plugins (`tests/plugins/hostile`,
//! `tests/plugins/hostile-filter`): each test runs misbehaving pumps next
//! to a healthy `file` pump in the same host and checks that the host
//! stays up, the healthy pump delivers every record, the offender is
//! reported with the right error kind, and its batches are handled as the
//! README says.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::config::{strings, HostConfig, Pump};
use crate::harness::*;

use pumphouse::record::IAM_KEY;
pub(crate) const N: u64 = 200;
const WAIT: Duration = Duration::from_secs(60);

/// A hostile sink pump `name` in `mode`, retrying fast.
fn hostile(name: &str, mode: &str) -> Pump {
    Pump::new(name, fixture("hostile"))
        .retry("20ms", "100ms")
        .config("mode", mode)
}

/// Redis with `N` iam records, and the config start: source plus a
/// healthy file pump.
pub(crate) fn setup() -> (RedisServer, redis::Connection, HostConfig) {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, N, 11);
    let base = HostConfig::new(&redis)
        .source("batch_size", 50)
        .pump(Pump::file("healthy", "healthy.jsonl"));
    (redis, conn, base)
}

/// The healthy pump delivered every record exactly once.
pub(crate) fn assert_healthy_delivered(host: &Host) {
    let lines = wait_lines(&host.out().join("healthy.jsonl"), N as usize, WAIT);
    let seqs: HashSet<u64> = lines.iter().map(iam_seq).collect();
    assert_eq!(
        seqs.len() as u64,
        N,
        "every record reached the healthy pump"
    );
}

/// Waits until `pumphouse_pump_errors_total{pump,kind}` reaches `at_least`.
pub(crate) fn wait_errors(host: &Host, pump: &str, kind: &str, at_least: f64) {
    let name = format!("pumphouse_pump_errors_total{{pump=\"{pump}\",kind=\"{kind}\"}}");
    wait_for(WAIT, &name, || {
        (host.metric(&name) >= at_least).then_some(())
    });
}

/// Waits until the metric (exact name and labels) reaches `at_least`.
pub(crate) fn wait_metric(host: &Host, name: &str, at_least: f64) {
    wait_for(WAIT, name, || (host.metric(name) >= at_least).then_some(()));
}

/// `pump`'s entry in `/readyz` (which must be 503).
pub(crate) fn readyz_pump(host: &Host, pump: &str) -> serde_json::Value {
    let (code, body) = http_get(&host.http, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let pumps = v["pumps"]
        .as_array()
        .unwrap_or_else(|| panic!("no pumps in {body}"));
    pumps
        .iter()
        .find(|p| p["name"] == pump)
        .unwrap_or_else(|| panic!("{pump} missing from {body}"))
        .clone()
}

/// `/readyz` is 503 and its JSON shows `pump` in `state` with `needle` in
/// its error.
pub(crate) fn assert_reported(host: &Host, pump: &str, state: &str, needle: &str) {
    let p = readyz_pump(host, pump);
    assert_eq!(p["state"], state, "{p}");
    assert!(
        p["error"].as_str().unwrap_or("").contains(needle),
        "expected {needle:?} in {pump}'s error: {p}"
    );
}

/// The failing pump's batches stay claimed: nothing is acked, nothing is
/// dead-lettered.
pub(crate) fn assert_held_not_dropped(conn: &mut redis::Connection) {
    let (waiting, claimed) = left_in_redis(conn, IAM_KEY);
    assert_eq!(
        waiting + claimed,
        N,
        "no record acked while a pump holds it"
    );
    let dead: u64 = redis::cmd("LLEN")
        .arg(format!("pumphouse:dead-letter:{IAM_KEY}"))
        .query(conn)
        .unwrap();
    assert_eq!(dead, 0, "retried, not dead-lettered");
}

/// Peak and current resident memory of a process, in MiB (`VmHWM`,
/// `VmRSS` of `/proc/<pid>/status`).
fn rss_mib(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kib("VmHWM:") / 1024, kib("VmRSS:") / 1024)
}

/// Redis' `used_memory`, in MiB.
fn redis_mib(conn: &mut redis::Connection) -> f64 {
    let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / (1024.0 * 1024.0)
}

/// Prints the figures of a scenario (the test log keeps them) and checks
/// the host's peak memory stayed far below what the attack asked for.
fn report_figures(scenario: &str, host: &Host, conn: &mut redis::Connection) {
    let (peak, now) = rss_mib(host.pid());
    let healthy = read_jsonl(&host.out().join("healthy.jsonl")).len();
    let redis = redis_mib(conn);
    let _ = writeln!(
        std::io::stderr(),
        "FIGURES {scenario}: host RSS peak {peak} MiB, now {now} MiB; healthy pump delivered {healthy}/{N}; Redis used_memory {redis:.1} MiB"
    );
    assert!(peak < 1024, "{scenario}: host peaked at {peak} MiB");
}

#[test]
fn memories_and_tables_share_max_memory_and_their_numbers_are_capped() {
    use crate::wat_fixtures::{hog_component, Hog};
    let (_redis, mut conn, base) = setup();
    let dir = tempfile::tempdir().unwrap();
    let hog = |name: &str, what: Hog| {
        let path = hog_component(dir.path(), name, &what);
        Pump::new(name, path.display().to_string())
            .retry("20ms", "100ms")
            .sandbox("max_memory", "64MiB")
    };
    // Three memories besides the ABI's, each grown by 32 MiB in `write`:
    // each alone fits 64 MiB, the second already takes the sum over it.
    // A table grown by 128 Mi elements (1 GiB of pointers).
    let config = base
        .pump(hog(
            "memories",
            Hog::Memories {
                extra: 3,
                pages: 512,
            },
        ))
        .pump(hog(
            "table",
            Hog::TableGrow {
                elements: 128 << 20,
            },
        ));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    for pump in ["memories", "table"] {
        wait_errors(&host, pump, "memory", 2.0);
        assert_eq!(
            host.metric(&format!(
                "pumphouse_pump_errors_total{{pump=\"{pump}\",kind=\"trap\"}}"
            )),
            0.0,
            "{pump}: a refused growth must not look like a plain trap"
        );
    }
    assert_reported(
        &host,
        "memories",
        "retrying",
        "growing a memory by 33554432 bytes",
    );
    assert_reported(&host, "memories", "retrying", "over sandbox.max_memory");
    assert_reported(&host, "table", "retrying", "growing a table");
    assert!(host.is_running());
    report_figures("memories and tables", &host, &mut conn);
    assert_held_not_dropped(&mut conn);
}

#[test]
fn a_plugin_with_more_memories_than_allowed_is_refused_at_load_naming_why() {
    use crate::wat_fixtures::{hog_component, Hog};
    let dir = tempfile::tempdir().unwrap();
    // Sixteen memories: refused by their number before any is allocated.
    let path = hog_component(
        dir.path(),
        "sixteen",
        &Hog::Memories {
            extra: 15,
            pages: 1024,
        },
    );
    let config = HostConfig::at_url("redis://127.0.0.1:1/0")
        .pump(Pump::new("sixteen", path.display().to_string()));
    let file = dir.path().join("c.toml");
    std::fs::write(&file, config.to_toml()).unwrap();
    let (code, out, err) = pumphouse(&["check", "--config", file.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("sixteen.wasm"), "{text}");
    assert!(text.contains("memory count too high at 16"), "{text}");
    assert!(text.contains("at most 4 memories"), "{text}");
}

#[test]
fn a_trap_in_a_host_call_names_its_cause() {
    let (_redis, mut conn, base) = setup();
    let config = base.pump(hostile("overrun", "stream-overrun"));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_errors(&host, "overrun", "trap", 2.0);
    // Not just "trapped" followed by a backtrace: what the host refused.
    assert_reported(
        &host,
        "overrun",
        "retrying",
        "Buffer too large for blocking-write-and-flush",
    );
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

#[test]
fn a_plugin_that_traps_on_every_call_is_retried_on_fresh_instances() {
    let (_redis, mut conn, base) = setup();
    let config = base.pump(hostile("hostile", "trap"));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_errors(&host, "hostile", "trap", 3.0);
    assert_reported(&host, "hostile", "retrying", "trapped");
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

#[test]
fn a_plugin_sleeping_in_a_host_call_is_timed_out() {
    let (_redis, mut conn, base) = setup();
    // The guest blocks in a wasi:clocks poll, where epochs never fire: the
    // wall-clock guard has to end the call.
    let config = base.pump(hostile("sleeper", "sleep").set("timeout", "300ms"));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_errors(&host, "sleeper", "timeout", 2.0);
    assert_reported(&host, "sleeper", "retrying", "timed out");
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

#[test]
fn a_plugin_cannot_read_outside_its_dirs() {
    let (_redis, mut conn, base) = setup();
    let config = base.pump(hostile("escaper", "fs-escape").dir("out", "/out", true));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    // Every read failed inside the guest, so the plugin reports `retry`;
    // a successful read would have been `fatal` ("escaped").
    wait_errors(&host, "escaper", "retry", 2.0);
    assert_eq!(
        host.metric("pumphouse_pump_errors_total{pump=\"escaper\",kind=\"fatal\"}"),
        0.0
    );
    assert_reported(&host, "escaper", "retrying", "filesystem denied");
    assert!(!host.log_text().contains("escaped"), "{}", host.log_text());
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

#[test]
fn a_plugin_sees_only_the_environment_variables_it_is_given() {
    let (_redis, mut conn, base) = setup();
    let config = base.pump(
        hostile("env", "env")
            .config(
                "names",
                strings([
                    "PUMPHOUSE_TEST_GIVEN",
                    "PUMPHOUSE_TEST_SECRET",
                    "HOME",
                    "PATH",
                ]),
            )
            .sandbox(
                "env",
                strings(["PUMPHOUSE_TEST_GIVEN", "PUMPHOUSE_TEST_MISSING"]),
            ),
    );
    let host = Host::start_in_env(
        tempfile::tempdir().unwrap(),
        &config,
        &[
            ("PUMPHOUSE_TEST_GIVEN", "given-value"),
            ("PUMPHOUSE_TEST_SECRET", "hunter2"),
        ],
    );
    assert_healthy_delivered(&host);
    wait_for(WAIT, "the env pump delivered", || {
        (host.metric("pumphouse_pump_records_written_total{pump=\"env\"}") >= N as f64)
            .then_some(())
    });
    let log = host.log_text();
    assert!(
        log.contains("env probe: PUMPHOUSE_TEST_GIVEN=given-value, PUMPHOUSE_TEST_SECRET absent, HOME absent, PATH absent"),
        "{log}"
    );
    assert!(
        !log.contains("hunter2"),
        "the secret never reached the plugin"
    );
    assert!(
        log.contains("PUMPHOUSE_TEST_MISSING") && log.contains("sandbox.env"),
        "a listed but unset variable is warned about: {log}"
    );
    wait_for(WAIT, "everything acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
}

/// One request the recorder received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers 200 to everything and
/// records what it got. It stops when dropped.
pub(crate) struct Recorder {
    pub(crate) addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    pub(crate) fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve_one(stream, &g);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Recorder {
            addr,
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The bodies POSTed to `path`, in arrival order.
    pub(crate) fn bodies_at(&self, path: &str) -> Vec<Vec<u8>> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.body)
            .collect()
    }

    /// Lines POSTed to `path`, over all requests.
    pub(crate) fn lines_at(&self, path: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| {
                r.body
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .count()
            })
            .sum()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request, records it, then answers: recorded first, so a
/// client that has its answer finds its request already counted.
fn serve_one(stream: TcpStream, got: &Mutex<Vec<Received>>) -> Option<()> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    got.lock().unwrap().push(Received { path, body });
    let mut out = stream;
    out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .ok()
}

#[test]
fn outbound_http_reaches_only_allowlisted_destinations() {
    let (_redis, _conn, base) = setup();
    let server = Recorder::start();
    let port = server.addr.port();
    let http = |name: &str, url: String, allowed: String| {
        hostile(name, "http")
            .config("url", url)
            .sandbox("allowed_outbound_hosts", strings([allowed]))
    };
    let config = base
        // Allowed by name, and the name may resolve to loopback.
        .pump(
            http(
                "allowed",
                format!("http://localhost:{port}/allowed"),
                "http://localhost:*".into(),
            )
            .sandbox("allow_private_networks", true),
        )
        // Allowed because the entry names the loopback IP itself.
        .pump(http(
            "literal",
            format!("http://127.0.0.1:{port}/literal"),
            format!("http://127.0.0.1:{port}"),
        ))
        // Not on the allowlist.
        .pump(http(
            "unlisted",
            format!("http://127.0.0.1:{port}/unlisted"),
            "https://api.example.com:443".into(),
        ))
        // On the allowlist by name, but the name resolves to loopback.
        .pump(http(
            "private",
            format!("http://localhost:{port}/private"),
            format!("http://localhost:{port}"),
        ));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_for(WAIT, "both allowed pumps delivered over HTTP", || {
        (server.lines_at("/allowed") >= N as usize && server.lines_at("/literal") >= N as usize)
            .then_some(())
    });
    for pump in ["allowed", "literal"] {
        wait_for(WAIT, &format!("{pump} counted as written"), || {
            (host.metric(&format!(
                "pumphouse_pump_records_written_total{{pump=\"{pump}\"}}"
            )) >= N as f64)
                .then_some(())
        });
    }
    for pump in ["unlisted", "private"] {
        let denials =
            format!("pumphouse_sandbox_denials_total{{pump=\"{pump}\",capability=\"http\"}}");
        wait_for(WAIT, &denials, || {
            (host.metric(&denials) >= 2.0).then_some(())
        });
        // The SDK maps a denial to `fatal`: retrying cannot fix an allowlist.
        wait_errors(&host, pump, "fatal", 1.0);
        assert_reported(&host, pump, "fatal", "denied by the pump's sandbox");
    }
    let paths: HashSet<String> = server.received().into_iter().map(|r| r.path).collect();
    assert!(
        !paths.contains("/unlisted") && !paths.contains("/private"),
        "denied requests never left the host: {paths:?}"
    );
    let log = host.log_text();
    assert!(
        log.lines().any(|l| l.contains("outbound request denied")
            && l.contains("unlisted")
            && l.contains(&format!("127.0.0.1:{port}"))),
        "the denial names the pump and the authority: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains("outbound request denied")
            && l.contains("private")
            && l.contains("non-public address")),
        "{log}"
    );
    assert!(host.is_running());
}

#[test]
fn malformed_plugin_answers_are_retried_not_trusted() {
    let (_redis, mut conn, base) = setup();
    let config = base.pump(hostile("partial", "partial-oob")).pump(
        Pump::file("keep", "keep.jsonl")
            .retry("20ms", "100ms")
            .filter_plugin(
                fixture("hostile-filter"),
                [("mode", toml::Value::from("keep-oob"))],
            ),
    );
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_errors(&host, "partial", "malformed", 2.0);
    wait_errors(&host, "keep", "malformed", 2.0);
    assert_reported(&host, "partial", "retrying", "out of range");
    assert_reported(&host, "keep", "retrying", "keep indices");
    assert!(
        read_jsonl(&host.out().join("keep.jsonl")).is_empty(),
        "nothing passes a filter whose verdict is malformed"
    );
    assert_eq!(
        host.metric("pumphouse_pump_records_written_total{pump=\"partial\"}"),
        0.0,
        "a malformed partial answer does not count as delivered"
    );
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

#[test]
fn gigantic_log_floods_are_cut_and_rate_limited() {
    let (_redis, mut conn, base) = setup();
    const LINES: u64 = 300;
    let config = base.pump(
        hostile("flood", "log-flood")
            .config("lines", LINES as i64)
            .config("size", 100_000)
            .sandbox("log_lines_per_second", 10)
            .sandbox("log_burst", 20),
    );
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_for(WAIT, "the flood pump delivered", || {
        (host.metric("pumphouse_pump_records_written_total{pump=\"flood\"}") >= N as f64)
            .then_some(())
    });
    wait_for(WAIT, "everything acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let suppressed = host.metric("pumphouse_sandbox_log_suppressed_total{pump=\"flood\"}");
    assert!(suppressed >= 1.0, "lines were suppressed");
    let (log, logged) = stop_and_read_flood(&mut host);
    let logged: Vec<&str> = logged.iter().map(String::as_str).collect();
    // Every line the plugin wrote was either logged or counted, and the
    // counted ones are summarised (at the latest when the pump stops).
    let writes = (N / 50) * LINES;
    assert_eq!(logged.len() as f64 + suppressed, writes as f64);
    // "<n> log lines of this pump's plugins were suppressed ..."
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("log lines of this pump's plugins were suppressed"))
        .collect();
    let summarised: f64 = summaries
        .iter()
        .filter_map(|l| {
            let head = l.split(" log lines of this pump").next()?;
            head.split_whitespace().last()?.parse::<f64>().ok()
        })
        .sum();
    assert_eq!(summarised, suppressed, "{summaries:#?}");
}

#[test]
fn under_log_json_a_stderr_flood_stays_json_and_init_shares_the_budget() {
    let (_redis, _conn, base) = setup();
    const LINES: u64 = 300;
    const INIT_LINES: u64 = 100;
    let config = base.pump(
        hostile("flood", "stderr-flood")
            .config("lines", LINES as i64)
            .config("size", 10_000)
            .config("init_lines", INIT_LINES as i64)
            .sandbox("log_lines_per_second", 10)
            .sandbox("log_burst", 20),
    );
    let mut host = Host::start_json(&config);
    assert_healthy_delivered(&host);
    wait_metric(
        &host,
        "pumphouse_pump_records_written_total{pump=\"flood\"}",
        N as f64,
    );
    let suppressed = host.metric("pumphouse_sandbox_log_suppressed_total{pump=\"flood\"}");
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(WAIT), Some(0));
    let log = host.log_text();
    let mut from_plugin = 0u64;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:.300}"));
        let message = v["fields"]["message"].as_str().unwrap_or("");
        if v["fields"]["pump"] == "flood"
            && (message.starts_with("stderr flood") || message.starts_with("init "))
        {
            assert!(
                message.len() < 4096 + 200,
                "cut to 4 KiB: {} bytes",
                message.len()
            );
            from_plugin += 1;
        }
    }
    // One instance: init's log and stderr lines, then every batch's
    // stderr lines, all through the pump's one budget.
    let written = 2 * INIT_LINES + (N / 50) * LINES;
    assert_eq!(from_plugin as f64 + suppressed, written as f64);
    assert!(
        from_plugin < written / 2,
        "{from_plugin} of {written} lines logged"
    );
}

/// `/readyz` error of `pump` once it has one.
fn readyz_error(host: &Host, pump: &str) -> String {
    wait_for(WAIT, &format!("{pump}'s error on /readyz"), || {
        let p = readyz_pump(host, pump);
        p["error"].as_str().map(str::to_string)
    })
}

/// Dead-letter entries of `pump`.
pub(crate) fn dead_of(conn: &mut redis::Connection, pump: &str) -> Vec<pumphouse::dlq::Entry> {
    dead_letters(conn, IAM_KEY)
        .into_iter()
        .filter(|e| e.pump.as_deref() == Some(pump))
        .collect()
}

/// Longest text the host keeps from a plugin, plus room for the host's own
/// words around it ("filter x: ", "gave up after 1 attempts: ", the cut
/// note).
const CUT: usize = 4096 + 256;

#[test]
fn a_filter_replace_amplification_is_malformed_not_a_crash() {
    let (_redis, mut conn, base) = setup();
    let amplify = |name: &str, count: i64| {
        Pump::file(name, &format!("{name}.jsonl"))
            .retry("20ms", "100ms")
            // Room for the filter to build a million events.
            .sandbox("max_memory", "512MiB")
            .filter_plugin(
                fixture("hostile-filter"),
                [
                    ("mode", toml::Value::from("replace-amplify")),
                    ("count", count.into()),
                    ("size", (4i64 << 20).into()),
                ],
            )
    };
    // A million records on one 4 MiB payload (4 TB if copied per record),
    // and 500 records for 50 shown: within the record cap, but 2 GiB over
    // the 512 MiB byte cap.
    let config = base
        .pump(amplify("million", 1_000_000))
        .pump(amplify("bytes", 500));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_errors(&host, "million", "malformed", 3.0);
    wait_errors(&host, "bytes", "malformed", 3.0);
    assert_reported(&host, "million", "retrying", "records for 50 shown");
    assert_reported(&host, "bytes", "retrying", "sandbox.max_memory");
    for pump in ["million", "bytes"] {
        assert!(read_jsonl(&host.out().join(format!("{pump}.jsonl"))).is_empty());
    }
    assert!(host.is_running());
    report_figures("replace amplification", &host, &mut conn);
    assert_held_not_dropped(&mut conn);
}

#[test]
fn plugin_strings_are_cut_and_escaped_once_everywhere() {
    let (_redis, mut conn, base) = setup();
    let config = base
        // A 32 MiB `retry` reason, given up on at once: 200 dead letters.
        .pump(hostile("reason", "retry-huge").set("retry.max_attempts", 1))
        // A 1 MiB filter error, likewise.
        .pump(
            Pump::file("ferr", "ferr.jsonl")
                .retry("20ms", "100ms")
                .set("retry.max_attempts", 1)
                .filter_plugin(
                    fixture("hostile-filter"),
                    [("mode", toml::Value::from("error-huge"))],
                ),
        )
        .pump(hostile("forger", "log-forge"));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_metric(
        &host,
        "pumphouse_pump_records_written_total{pump=\"forger\"}",
        N as f64,
    );
    for pump in ["reason", "ferr"] {
        wait_metric(
            &host,
            &format!("pumphouse_records_dead_lettered_total{{pump=\"{pump}\"}}"),
            N as f64,
        );
        let error = readyz_error(&host, pump);
        assert!(
            error.len() < CUT,
            "{pump}: /readyz error of {} bytes",
            error.len()
        );
        assert!(error.contains("bytes cut]"), "{error}");
        assert!(!error.contains('\n'), "{error}");
        let dead = dead_of(&mut conn, pump);
        assert_eq!(dead.len() as u64, N, "{pump}");
        for e in &dead {
            assert!(
                e.reason.len() < CUT,
                "{pump}: a reason of {} bytes",
                e.reason.len()
            );
            assert!(
                e.reason.contains("\\n2026-01-01T"),
                "escaped: {}",
                &e.reason[..200]
            );
        }
        let (_, body) = http_get(&host.http, "/admin/pumps").unwrap();
        assert!(body.len() < 8 * CUT, "/admin/pumps is {} bytes", body.len());
    }
    // Every record in exactly one bucket: dead-lettered, not also filtered.
    assert_eq!(
        host.metric("pumphouse_pump_records_filtered_total{pump=\"ferr\"}"),
        0.0
    );
    wait_for(WAIT, "everything acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    report_figures("huge reasons", &host, &mut conn);
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(WAIT), Some(0));
    let log = host.log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01")),
        "no forged line in the log"
    );
    assert!(
        log.contains(
            "innocent\\n2026-01-01T00:00:00.000000Z ERROR pumphouse: forged line\\rcarriage"
        ),
        "the line is kept, escaped"
    );
    // Stderr is logged a line at a time, as the pump's.
    let from_stderr: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("forged on stderr"))
        .collect();
    assert!(!from_stderr.is_empty(), "stderr reaches the log");
    assert!(
        from_stderr
            .iter()
            .all(|l| l.contains("forger") && l.contains("stderr")),
        "{from_stderr:#?}"
    );
    assert!(
        log.lines().all(|l| l.len() < 3 * CUT),
        "no log line carries a whole plugin string"
    );
}

#[test]
fn dead_letters_and_their_log_lines_are_bounded_per_batch() {
    let (_redis, mut conn, base) = setup();
    let config = base
        // Ten unencodable records for each one shown.
        .pump(
            Pump::new("unenc", plugin("blackhole"))
                .retry("20ms", "100ms")
                .filter_plugin(
                    fixture("hostile-filter"),
                    [("mode", toml::Value::from("replace-unencodable"))],
                ),
        )
        // Every record rejected with a 1 MiB reason.
        .pump(hostile("rejects", "partial-huge"));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    for pump in ["unenc", "rejects"] {
        wait_metric(
            &host,
            &format!("pumphouse_records_dead_lettered_total{{pump=\"{pump}\"}}"),
            N as f64,
        );
    }
    wait_for(WAIT, "everything acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    // At most one dead letter per claimed record; the filter's surplus is
    // counted instead.
    assert_eq!(dead_of(&mut conn, "unenc").len() as u64, N);
    assert_eq!(
        host.metric("pumphouse_pump_dead_letters_capped_total{pump=\"unenc\"}"),
        (9 * N) as f64
    );
    let rejects = dead_of(&mut conn, "rejects");
    assert_eq!(rejects.len() as u64, N);
    assert!(rejects.iter().all(|e| e.reason.len() < CUT));
    // Nothing counted twice: dead-lettered, never also filtered.
    assert_eq!(
        host.metric("pumphouse_pump_records_filtered_total{pump=\"unenc\"}"),
        0.0
    );
    report_figures("dead-letter floods", &host, &mut conn);
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(WAIT), Some(0));
    // One summary line per batch and pump, not one per record.
    let batches = (N / 50) as usize;
    let log = host.log_text();
    for pump in ["unenc", "rejects"] {
        let lines = log
            .lines()
            .filter(|l| l.contains("dead-lettered a record") && l.contains(pump))
            .count();
        assert!(
            (1..=batches).contains(&lines),
            "{pump}: {lines} dead-letter lines for {batches} batches"
        );
    }
}

/// A Prometheus server scraping `target` every second, when installed.
fn prometheus(
    target: &str,
    dir: &std::path::Path,
) -> Option<(crate::sink_servers::ServerProcess, String)> {
    let bin = crate::sink_servers::find_binary(&["prometheus"])?;
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "scrape_configs:\n  - job_name: pumphouse\n    scrape_interval: 1s\n    \
             static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut p = crate::sink_servers::ServerProcess::new(
        bin,
        vec![
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
        ],
        dir.join("prometheus.log"),
    );
    p.spawn();
    Some((p, addr))
}

/// The value of an instant PromQL query with one result.
fn prom_scalar(addr: &str, promql: &str) -> Option<f64> {
    let (code, body) =
        http_get(addr, &format!("/api/v1/query?query={}", url_encode(promql))).ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn a_hostile_plugin_cannot_break_metrics() {
    let (_redis, mut conn, base) = setup();
    let config = base
        .pump(hostile("metrics", "metrics-abuse"))
        .pump(hostile("observer", "histogram-flood"));
    let host = Host::start(&config);
    assert_healthy_delivered(&host);
    for pump in ["metrics", "observer"] {
        wait_metric(
            &host,
            &format!("pumphouse_pump_records_written_total{{pump=\"{pump}\"}}"),
            N as f64,
        );
    }
    let text = host.metrics();
    // Nothing with a reserved label, the host's label or a duplicate one.
    for refused in [
        "abuse_latency",
        "abuse_quantile",
        "abuse_name",
        "abuse_pump",
        "abuse_dup",
        "pumphouse_plugin_..",
    ] {
        assert!(!text.contains(refused), "{refused} exported:\n{text}");
    }
    // One type per name.
    let mut types: HashMap<&str, usize> = HashMap::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        *types
            .entry(l.split_whitespace().nth(2).unwrap())
            .or_default() += 1;
    }
    assert!(types.values().all(|n| *n == 1), "{types:?}");
    assert!(types.contains_key("pumphouse_plugin_abuse_typed_total"));
    assert!(
        !types.contains_key("pumphouse_plugin_abuse_typed"),
        "{types:?}"
    );
    // The plugin's `log_suppressed` is its own series, not the host's.
    assert_eq!(
        host.metric("pumphouse_plugin_log_suppressed_total{pump=\"metrics\"}"),
        N as f64 / 50.0
    );
    assert_eq!(
        host.metric("pumphouse_sandbox_log_suppressed_total{pump=\"metrics\"}"),
        0.0
    );
    // Saturated, not wrapped.
    assert_eq!(
        host.metric("pumphouse_plugin_abuse_overflow_total{pump=\"metrics\"}"),
        u64::MAX as f64
    );
    assert!(
        host.metric("pumphouse_sandbox_denials_total{pump=\"metrics\",capability=\"metric_name\"}")
            >= 7.0 * (N / 50) as f64
    );
    assert!(
        host.metric("pumphouse_sandbox_denials_total{pump=\"metrics\",capability=\"metric_type\"}")
            >= 2.0
    );
    // A million observations per call: cut to the per-call cap.
    assert!(
        host.metric(
            "pumphouse_sandbox_denials_total{pump=\"observer\",capability=\"metric_observations\"}"
        ) >= 1.0
    );
    let count = host.metric("pumphouse_plugin_flood_ms_count{pump=\"observer\"}");
    assert!(
        count > 0.0 && count <= (N / 50 * 10 * 10_000) as f64,
        "{count}"
    );
    report_figures("metrics abuse", &host, &mut conn);
    // A real Prometheus still scrapes everything.
    let dir = tempfile::tempdir().unwrap();
    let Some((_prom, addr)) = prometheus(&host.http, dir.path()) else {
        return;
    };
    let up = wait_for(WAIT, "prometheus scraped the host", || {
        prom_scalar(&addr, "up{job=\"pumphouse\"}")
            .filter(|_| prom_scalar(&addr, "pumphouse_plugin_abuse_ok_total").is_some())
    });
    assert_eq!(up, 1.0, "the scrape succeeds");
    assert_eq!(
        prom_scalar(
            &addr,
            "pumphouse_pump_records_written_total{pump=\"healthy\"}"
        ),
        Some(N as f64)
    );
}

#[test]
fn an_oversized_kv_commit_is_refused_before_redis() {
    let (_redis, mut conn, base) = setup();
    let config = base.pump(hostile("kv", "kv-flood"));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_errors(&host, "kv", "retry", 2.0);
    assert_reported(&host, "kv", "retrying", "over the limit of 1000");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("pumphouse:kv:*")
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "nothing reached Redis: {keys:?}");
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

/// The keys of `pump`'s kv namespace and the bytes their values hold.
fn kv_namespace(conn: &mut redis::Connection, pump: &str) -> (Vec<String>, u64) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("pumphouse:kv:{{{pump}}}:*"))
        .query(conn)
        .unwrap();
    let bytes = keys
        .iter()
        .map(|k| redis::cmd("STRLEN").arg(k).query::<u64>(conn).unwrap())
        .sum();
    (keys, bytes)
}

#[test]
fn a_pump_over_its_kv_quota_is_refused_before_redis_also_after_a_restart() {
    let (_redis, mut conn, base) = setup();
    // Batches of 50 records; each batch commits 4 new keys of 100 000
    // bytes (400 KB): two batches fit in 1 MiB, the third does not.
    let quota = |p: Pump| {
        p.sandbox("kv_max_bytes", "1MiB")
            .sandbox("kv_max_keys", 100)
    };
    // The same, with keys expiring after 1 s and a quota one batch fits
    // in: every batch after the first needs the expired keys forgotten.
    // The refused batches retry until shutdown gives up on them; a short
    // drain keeps the restart below well inside `wait_exit`.
    let config = base
        .source("lease", "2s")
        .set("shutdown.drain_timeout", "2s")
        .pump(quota(hostile("kvq", "kv-quota")))
        .pump(quota(
            hostile("kvttl", "kv-quota")
                .config("ttl_s", 1)
                .config("size", 200_000),
        ));
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start_at(dir.path(), &config);
    assert_healthy_delivered(&host);
    let denied = "pumphouse_sandbox_denials_total{pump=\"kvq\",capability=\"kv_quota\"}";
    wait_metric(&host, denied, 2.0);
    assert_reported(&host, "kvq", "retrying", "over its quota of 1048576 bytes");
    let (keys, bytes) = kv_namespace(&mut conn, "kvq");
    assert_eq!(keys.len(), 8, "two batches' keys, no more: {keys:?}");
    assert_eq!(bytes, 8 * 100_000);
    // The usage kept beside the keys is what they are charged.
    let usage: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg("pumphouse:kv-usage:{kvq}")
        .query(&mut conn)
        .unwrap();
    let charged: u64 = keys.iter().map(|k| k.len() as u64 + 100_000 + 64).sum();
    assert_eq!(usage["keys"], 8, "{usage:?}");
    assert_eq!(usage["bytes"], charged, "{usage:?}");
    // 3.2 MB passed through a 1 MiB quota as keys expired.
    wait_metric(
        &host,
        "pumphouse_pump_records_written_total{pump=\"kvttl\"}",
        N as f64,
    );
    let (ttl_keys, ttl_bytes) = kv_namespace(&mut conn, "kvttl");
    assert!(
        ttl_bytes <= 1 << 20,
        "{} keys, {ttl_bytes} bytes",
        ttl_keys.len()
    );
    report_figures("kv quota", &host, &mut conn);
    // A restarted host (whose memory knows nothing of the usage) takes
    // over the refused batches when their lease ends and still refuses
    // them: the usage lives in Redis.
    host.signal(Signal::SIGTERM);
    assert!(host.wait_exit(Duration::from_secs(30)).is_some());
    let host = Host::start_at(dir.path(), &config);
    wait_metric(&host, denied, 2.0);
    let (keys, bytes) = kv_namespace(&mut conn, "kvq");
    assert_eq!((keys.len(), bytes), (8, 8 * 100_000), "{keys:?}");
    let (waiting, claimed) = left_in_redis(&mut conn, IAM_KEY);
    assert_eq!(waiting + claimed, N / 2, "the refused batches stay claimed");
}

#[test]
fn a_pump_whose_init_fails_at_start_does_not_keep_the_others_from_starting() {
    let (_redis, mut conn, base) = setup();
    let config = base.pump(hostile("broken", "no-such-mode"));
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    // Its start is retried as batches come, with backoff.
    wait_errors(&host, "broken", "init", 3.0);
    assert_reported(&host, "broken", "retrying", "unknown mode");
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

#[test]
fn a_pump_whose_start_failed_is_retried_on_its_own_timer_without_traffic() {
    // No records: nothing but the lane's own timer can start it again.
    let redis = RedisServer::start().unwrap();
    let config = HostConfig::new(&redis).pump(
        hostile("late", "env")
            .config("init_needs", "/out/ready")
            .dir("out", "/out", true),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let host = Host::start_in(dir, &config);
    wait_errors(&host, "late", "init", 2.0);
    assert_reported(&host, "late", "retrying", "init needs /out/ready");
    std::fs::write(host.out().join("ready"), b"").unwrap();
    wait_for(WAIT, "/readyz 200 once the pump starts", || {
        let (code, _) = http_get(&host.http, "/readyz").ok()?;
        (code == 200).then_some(())
    });
    assert!(host.log_text().contains("pump started after failing to"));
}

/// How many descriptors process `pid` holds.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A TCP server that accepts connections and never answers; returns its
/// address and the connections it holds.
fn silent_server() -> (SocketAddr, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            h.lock().unwrap().push(s);
        }
    });
    (addr, held)
}

#[test]
fn plugins_hoarding_files_and_connections_are_capped_and_the_host_keeps_working() {
    let (_redis, mut conn, base) = setup();
    let (addr, accepted) = silent_server();
    let url = format!("http://{addr}");
    let config = base
        .pump(
            hostile("files", "fd-hoard")
                .mount("hoard", "/out")
                .sandbox("max_open_files", 50),
        )
        .pump(
            hostile("conns", "http-hoard")
                .config("url", url.as_str())
                .config("lines", 200)
                .sandbox("allowed_outbound_hosts", strings([&url]))
                .sandbox("max_connections", 20)
                .sandbox("http_timeout", "10m"),
        );
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    // Each call asks for 10 000 files and 200 connections; the plugins see
    // the refusals as errors and report them.
    wait_metric(
        &host,
        "pumphouse_sandbox_denials_total{pump=\"files\",capability=\"open_files\"}",
        2.0,
    );
    wait_metric(
        &host,
        "pumphouse_sandbox_denials_total{pump=\"conns\",capability=\"connections\"}",
        2.0,
    );
    assert_reported(&host, "files", "retrying", "holding 50 files");
    assert_reported(&host, "conns", "retrying", "ConnectionLimitReached");
    let fds = open_fds(host.pid());
    let connections = accepted.lock().unwrap().len();
    assert!(
        connections <= 20,
        "{connections} connections reached the server"
    );
    // 50 files and 20 connections over the host's own descriptors; without
    // the caps the first call alone would hold 10 200.
    assert!(fds < 50 + 20 + 300, "the host holds {fds} descriptors");
    // The host still serves and reloads.
    assert_eq!(healthz_within(&host, Duration::from_secs(2)).unwrap(), 200);
    host.signal(Signal::SIGHUP);
    wait_metric(&host, "pumphouse_reloads_total{result=\"ok\"}", 1.0);
    let _ = writeln!(
        std::io::stderr(),
        "FIGURES fd hoard: host descriptors {fds}, connections accepted {connections}"
    );
    report_figures("fd hoard", &host, &mut conn);
    assert!(host.is_running());
}

#[test]
fn tcp_sockets_count_in_max_connections() {
    let (_redis, mut conn, base) = setup();
    let (addr, accepted) = silent_server();
    let peer = addr.to_string();
    let config = base.pump(
        hostile("sockets", "socket-hoard")
            .config("url", peer.as_str())
            .config("lines", 200)
            .sandbox("sockets", strings([&peer]))
            .sandbox("max_connections", 20),
    );
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_metric(
        &host,
        "pumphouse_sandbox_denials_total{pump=\"sockets\",capability=\"connections\"}",
        2.0,
    );
    assert_reported(&host, "sockets", "retrying", "holding 20 sockets");
    let connections = accepted.lock().unwrap().len();
    assert!(
        connections <= 20,
        "{connections} connections reached the server"
    );
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

#[test]
fn symlinks_are_refused_in_sandbox_dirs_unless_the_pump_allows_them() {
    let (_redis, _conn, base) = setup();
    let config = base
        .pump(hostile("planter", "symlink").mount("plant", "/out"))
        .pump(
            hostile("linker", "symlink")
                .mount("link", "/out")
                .sandbox("allow_symlinks", true),
        );
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    wait_errors(&host, "planter", "retry", 2.0);
    assert_reported(&host, "planter", "retrying", "symlink refused");
    wait_metric(
        &host,
        "pumphouse_sandbox_denials_total{pump=\"planter\",capability=\"symlink\"}",
        2.0,
    );
    assert!(
        std::fs::symlink_metadata(host.dir.join("plant/planted")).is_err(),
        "no link planted"
    );
    // Allowed, the link is made (and the fixture reports that as fatal).
    wait_errors(&host, "linker", "fatal", 1.0);
    let target = std::fs::read_link(host.dir.join("link/planted")).unwrap();
    assert_eq!(target, std::path::Path::new("../../../../etc/passwd"));
    assert!(host.is_running());
}

/// `GET /healthz` with a client timeout of `within`: the answer's status.
fn healthz_within(host: &Host, within: Duration) -> std::io::Result<u16> {
    http_request("GET", &host.http, "/healthz", &[], b"", within).map(|(code, _)| code)
}

#[test]
fn cpu_bound_plugins_run_off_the_runtime_and_are_reported_degraded() {
    let (_redis, mut conn, base) = setup();
    // Two disk-buffered sinks that compute for 5 s of their 6 s timeout on
    // every call: one per core of a 2-core machine. Were plugin calls run
    // on the async runtime's workers, both would be taken for 5 s at a
    // time and /healthz, claims and the healthy pump would wait on them.
    let busy = |name: &str| {
        hostile(name, "busy")
            .config("sleep_ms", 5000)
            .set("timeout", "6s")
            .disk()
    };
    let config = base.pump(busy("busy1")).pump(busy("busy2"));
    let mut host = Host::start(&config);
    // While both spin (their first calls take 5 s), /healthz answers each
    // time within a 2 s client timeout: a bound that only proves it is
    // not blocked behind a plugin call.
    for _ in 0..8 {
        let code = healthz_within(&host, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("/healthz did not answer while plugins spin: {e}"));
        assert_eq!(code, 200);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_healthy_delivered(&host);
    // The busy pumps deliver, but near their timeout: degraded, not ok.
    for pump in ["busy1", "busy2"] {
        let p = wait_for(WAIT, "a degraded busy pump on /readyz", || {
            let (_, body) = http_get(&host.http, "/readyz").ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let p = v["pumps"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == pump)?
                .clone();
            (p["state"] == "degraded").then_some(p)
        });
        assert!(
            p["error"]
                .as_str()
                .unwrap_or("")
                .contains("near their timeout"),
            "{p}"
        );
    }
    assert!(host.is_running());
    report_figures("cpu-bound plugins", &host, &mut conn);
}

#[test]
fn shutdown_is_bounded_by_drain_timeout_while_a_plugin_computes() {
    let (_redis, _conn, base) = setup();
    // Every call computes for 20 s of a 30 s timeout; shutdown may wait
    // for it only up to drain_timeout (1 s).
    let config = base.set("shutdown.drain_timeout", "1s").pump(
        hostile("busy", "busy")
            .config("sleep_ms", 20_000)
            .set("timeout", "30s")
            .disk(),
    );
    let mut host = Host::start(&config);
    assert_healthy_delivered(&host);
    host.signal(Signal::SIGTERM);
    // A generous bound, far below the 20 s the call still needs: it only
    // proves shutdown does not wait for the plugin.
    let code = host.wait_exit(Duration::from_secs(10));
    assert!(code.is_some(), "still running 10 s after SIGTERM");
    assert!(
        host.log_text().contains("drain timeout reached"),
        "{}",
        host.log_text()
    );
}

/// Stops `host` and returns its log and the flood pump's lines in it,
/// each checked to be cut to 4 KiB with the cut marked.
pub(crate) fn stop_and_read_flood(host: &mut Host) -> (String, Vec<String>) {
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(WAIT), Some(0));
    let log = host.log_text();
    let logged: Vec<String> = log
        .lines()
        .filter(|l| l.contains("flood ") && l.contains("xxxx"))
        .map(String::from)
        .collect();
    for l in &logged {
        assert!(
            l.len() < 4096 + 400,
            "a line is cut to 4 KiB: {} bytes",
            l.len()
        );
        assert!(l.contains("bytes cut]"), "{}", &l[l.len() - 100..]);
    }
    (log, logged)
}

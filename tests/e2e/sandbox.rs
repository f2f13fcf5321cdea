//! The sandbox against hostile plugins (`tests/plugins/hostile`,
//! `tests/plugins/hostile-filter`): each test runs one misbehaving pump
//! next to a healthy `file` pump in the same host and checks that the host
//! stays up, the healthy pump delivers every record, the offender is
//! reported with the right error kind, and its batches are handled as the
//! README says (retried; nothing is acked or dead-lettered for it).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::*;

use pumphouse::record::IAM_KEY;
const N: u64 = 200;
const WAIT: Duration = Duration::from_secs(60);

/// A hostile sink pump `name` in `mode`, retrying fast.
fn hostile_pump(name: &str, mode_config: &str, extra: &str, sandbox: &str) -> String {
    format!(
        r#"
[[pumps]]
name = "{name}"
plugin = "{plugin}"
retry = {{ initial = "20ms", max = "100ms" }}
{extra}
[pumps.config]
{mode_config}
[pumps.sandbox]
{sandbox}
"#,
        plugin = fixture("hostile"),
    )
}

/// Redis with `N` iam records, and the config start: source plus a
/// healthy file pump.
fn setup() -> (RedisServer, redis::Connection, String) {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, N, 11);
    let base = format!(
        "{}{}",
        source(&redis, "iam", "batch_size = 50"),
        file_pump("healthy", "healthy.jsonl", "")
    );
    (redis, conn, base)
}

/// The healthy pump delivered every record exactly once.
fn assert_healthy_delivered(host: &Host) {
    let lines = wait_lines(&host.out().join("healthy.jsonl"), N as usize, WAIT);
    let seqs: HashSet<u64> = lines.iter().map(iam_seq).collect();
    assert_eq!(
        seqs.len() as u64,
        N,
        "every record reached the healthy pump"
    );
}

/// Waits until `pumphouse_pump_errors_total{pump,kind}` reaches `at_least`.
fn wait_errors(host: &Host, pump: &str, kind: &str, at_least: f64) {
    let name = format!("pumphouse_pump_errors_total{{pump=\"{pump}\",kind=\"{kind}\"}}");
    wait_for(WAIT, &name, || {
        (host.metric(&name) >= at_least).then_some(())
    });
}

/// `/readyz` is 503 and its JSON shows `pump` in `state` with `needle` in
/// its error.
fn assert_reported(host: &Host, pump: &str, state: &str, needle: &str) {
    let (code, body) = http_get(&host.http, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let pumps = v["pumps"]
        .as_array()
        .unwrap_or_else(|| panic!("no pumps in {body}"));
    let p = pumps
        .iter()
        .find(|p| p["name"] == pump)
        .unwrap_or_else(|| panic!("{pump} missing from {body}"));
    assert_eq!(p["state"], state, "{body}");
    assert!(
        p["error"].as_str().unwrap_or("").contains(needle),
        "expected {needle:?} in {pump}'s error: {body}"
    );
}

/// The failing pump's batches stay claimed: nothing is acked, nothing is
/// dead-lettered.
fn assert_held_not_dropped(conn: &mut redis::Connection) {
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

#[test]
fn a_plugin_that_traps_on_every_call_is_retried_on_fresh_instances() {
    let (_redis, mut conn, base) = setup();
    let config = base + &hostile_pump("hostile", "mode = \"trap\"", "", "");
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
    let config = base + &hostile_pump("sleeper", "mode = \"sleep\"", "timeout = \"300ms\"", "");
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
    let config = base
        + &hostile_pump(
            "escaper",
            "mode = \"fs-escape\"",
            "",
            "dirs = [{ host = \"out\", guest = \"/out\", read_only = true }]",
        );
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
    let config = base
        + &hostile_pump(
            "env",
            r#"mode = "env"
names = ["PUMPHOUSE_TEST_GIVEN", "PUMPHOUSE_TEST_SECRET", "HOME", "PATH"]"#,
            "",
            r#"env = ["PUMPHOUSE_TEST_GIVEN", "PUMPHOUSE_TEST_MISSING"]"#,
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
    let http = |name: &str, url: String, sandbox: String| {
        hostile_pump(
            name,
            &format!("mode = \"http\"\nurl = \"{url}\""),
            "",
            &sandbox,
        )
    };
    let config = base
        // Allowed by name, and the name may resolve to loopback.
        + &http(
            "allowed",
            format!("http://localhost:{port}/allowed"),
            "allowed_outbound_hosts = [\"http://localhost:*\"]\nallow_private_networks = true".into(),
        )
        // Allowed because the entry names the loopback IP itself.
        + &http(
            "literal",
            format!("http://127.0.0.1:{port}/literal"),
            format!("allowed_outbound_hosts = [\"http://127.0.0.1:{port}\"]"),
        )
        // Not on the allowlist.
        + &http(
            "unlisted",
            format!("http://127.0.0.1:{port}/unlisted"),
            "allowed_outbound_hosts = [\"https://api.example.com:443\"]".into(),
        )
        // On the allowlist by name, but the name resolves to loopback.
        + &http(
            "private",
            format!("http://localhost:{port}/private"),
            format!("allowed_outbound_hosts = [\"http://localhost:{port}\"]"),
        );
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
    let config = base
        + &hostile_pump("partial", "mode = \"partial-oob\"", "", "")
        + &format!(
            r#"
[[pumps]]
name = "keep"
plugin = "{file}"
retry = {{ initial = "20ms", max = "100ms" }}
[pumps.config]
path = "/out/keep.jsonl"
[pumps.sandbox]
dirs = [{{ host = "out", guest = "/out" }}]
[[pumps.filters_chain]]
plugin = "{filter}"
config = {{ mode = "keep-oob" }}
"#,
            file = plugin("file"),
            filter = fixture("hostile-filter"),
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
    let config = base
        + &hostile_pump(
            "flood",
            &format!("mode = \"log-flood\"\nlines = {LINES}\nsize = 100000"),
            "",
            "log_lines_per_second = 10\nlog_burst = 20",
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
    let suppressed = host.metric("pumphouse_plugin_log_suppressed_total{pump=\"flood\"}");
    assert!(suppressed >= 1.0, "lines were suppressed");
    host.signal(Signal::SIGTERM);
    assert_eq!(host.wait_exit(WAIT), Some(0));
    let log = host.log_text();
    let logged: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("flood ") && l.contains("xxxx"))
        .collect();
    for l in &logged {
        assert!(
            l.len() < 4096 + 400,
            "a line is cut to 4 KiB: {} bytes",
            l.len()
        );
        assert!(l.contains("bytes cut]"), "{}", &l[l.len() - 100..]);
    }
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

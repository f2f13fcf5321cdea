//! JavaScript plugins (`sdk/js`): the bundled `webhook-sink` example next
//! to a Rust pump, posting signed batches to a receiver written here (iam
//! and Tyk records read back field by field), a scaffolded JS sink and
//! filter built and tested from a clean directory, `plugins inspect`
//! naming the language, and the hostile JavaScript fixture
//! (`tests/js-plugins/hostile_js`) held by the same limits as the Rust one,
//! next to a healthy `file` pump that delivers everything.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pumphouse::record::{IAM_KEY, TYK_KEY};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::*;
use crate::sandbox::{
    assert_healthy_delivered, assert_held_not_dropped, assert_reported, dead_of, readyz_pump,
    setup, wait_errors, wait_metric, N,
};

const WAIT: Duration = Duration::from_secs(90);
const SECRET: &str = "webhook-secret";

/// HMAC-SHA256 (RFC 2104), written out so the check is independent of the
/// plugin's own implementation.
fn hmac_sha256_hex(key: &[u8], msg: &[u8]) -> String {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// A webhook receiver: answers 503 to its first request (so the sink's
/// retry path runs), then 204, or 401 when the signature is wrong. Keeps
/// the bodies it accepted.
struct Receiver {
    port: u16,
    accepted: Arc<Mutex<Vec<Vec<u8>>>>,
    bad_signatures: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let bad = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b, s) = (accepted.clone(), bad.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        seen += 1;
                        let _ = serve(stream, seen == 1, &a, &b);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver {
            port,
            accepted,
            bad_signatures: bad,
            stop,
        }
    }

    fn records(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|body| match serde_json::from_slice(body).unwrap() {
                Value::Array(items) => items,
                other => panic!("a body that is no JSON array: {other}"),
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: TcpStream,
    first: bool,
    accepted: &Mutex<Vec<Vec<u8>>>,
    bad: &Mutex<usize>,
) -> Option<()> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length") {
        body.resize(n.parse().ok()?, 0);
        reader.read_exact(&mut body).ok()?;
    } else if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0; n + 2];
            reader.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    let want = format!("sha256={}", hmac_sha256_hex(SECRET.as_bytes(), &body));
    let status = if headers.get("x-signature-256") != Some(&want) {
        *bad.lock().unwrap() += 1;
        "401 Unauthorized"
    } else if first {
        "503 Service Unavailable"
    } else {
        accepted.lock().unwrap().push(body);
        "204 No Content"
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    Some(())
}

fn webhook(port: u16) -> Pump {
    Pump::new("webhook", plugin("webhook-sink"))
        .retry("50ms", "200ms")
        .config("url", format!("http://127.0.0.1:{port}/hook"))
        .config("secret", SECRET)
        .sandbox(
            "allowed_outbound_hosts",
            strings([format!("http://127.0.0.1:{port}")]),
        )
}

#[test]
fn the_js_webhook_sink_posts_signed_iam_batches_next_to_a_rust_pump() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_iam(&mut conn, 300, 41);
    let receiver = Receiver::start();
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 50)
            .pump(Pump::file("plain", "plain.jsonl"))
            .pump(webhook(receiver.port)),
    );
    assert_iam_lines(
        &wait_lines(&host.out().join("plain.jsonl"), 300, WAIT),
        &records,
    );
    let got = wait_for(WAIT, "300 records at the receiver", || {
        let r = receiver.records();
        (r.len() >= 300).then_some(r)
    });
    assert_iam_lines(&got, &records);
    assert_eq!(*receiver.bad_signatures.lock().unwrap(), 0);
    // The first batch was answered 503: a retry, not a loss.
    assert!(host.metric("pumphouse_pump_errors_total{pump=\"webhook\",kind=\"retry\"}") >= 1.0);
    wait_for(WAIT, "the sink's counter", || {
        (host.metric("pumphouse_plugin_webhook_records_total{pump=\"webhook\"}") >= 300.0)
            .then_some(())
    });
}

#[test]
fn the_js_webhook_sink_delivers_tyk_records_field_by_field() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_tyk(&mut conn, TYK_KEY, 200, 43);
    let receiver = Receiver::start();
    let host = Host::start(
        HostConfig::new(&redis)
            .tyk()
            .source("batch_size", 50)
            .pump(Pump::file("plain", "plain.jsonl"))
            .pump(webhook(receiver.port)),
    );
    let plain = wait_lines(&host.out().join("plain.jsonl"), 200, WAIT);
    let got = wait_for(WAIT, "200 records at the receiver", || {
        let r = receiver.records();
        (r.len() >= 200).then_some(r)
    });
    assert_eq!(got.len(), 200);
    let seq = |l: &Value| -> usize {
        l["Path"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let by_seq: HashMap<usize, &Value> = plain.iter().map(|l| (seq(l), l)).collect();
    let mut seen = std::collections::HashSet::new();
    for r in &got {
        let s = seq(r);
        assert!(seen.insert(s), "seq {s} twice");
        // Every field as the Rust pump wrote it.
        assert_eq!(r, by_seq[&s], "record {s}");
        assert_eq!(r["APIKey"], records[s].api_key.as_str());
        assert_eq!(r["ResponseCode"], records[s].response_code);
    }
}

#[test]
fn plugins_inspect_names_javascript_and_python_components() {
    let (code, out, err) = pumphouse(&["plugins", "inspect", &plugin("webhook-sink")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("language: JavaScript (ComponentizeJS 0.23.0)"),
        "{out}"
    );
    assert!(out.contains("http        used"), "{out}");
    let (code, out, err) = pumphouse(&["plugins", "inspect", &fixture("keep-5xx-js")]);
    assert_eq!(code, 0, "{err}");
    // Built without --http: no wasi:http import.
    assert!(out.contains("http        unused"), "{out}");
    // The engine, not the plugin, imports the filesystem; no environment.
    assert!(
        out.contains("filesystem  imported   (by every JavaScript plugin"),
        "{out}"
    );
    assert!(out.contains("env         unused"), "{out}");
    assert!(!out.contains("Rust plugin"), "{out}");
}

#[test]
fn a_scaffolded_js_sink_and_filter_build_and_pass_their_tests_from_a_clean_dir() {
    scaffolds_build_and_pass("js", "js", "# pass 2", &[]);
}

/// The hostile JavaScript sink as pump `name` in `mode`, retrying fast.
fn hostile_js(name: &str, mode: &str) -> Pump {
    Pump::new(name, fixture("hostile-js"))
        .retry("50ms", "200ms")
        .config("mode", mode)
}

#[test]
fn a_js_plugin_that_loops_forever_is_timed_out_alone() {
    let (_redis, mut conn, base) = setup();
    let mut host = Host::start(base.pump(hostile_js("spin", "spin").set("timeout", "300ms")));
    assert_healthy_delivered(&host);
    wait_errors(&host, "spin", "timeout", 2.0);
    assert_reported(&host, "spin", "retrying", "timed out");
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
}

#[test]
fn a_js_plugin_that_allocates_without_bound_hits_its_memory_limit_alone() {
    let (_redis, mut conn, base) = setup();
    let mut host = Host::start(base.pump(hostile_js("hog", "hog").sandbox("max_memory", "96MiB")));
    assert_healthy_delivered(&host);
    wait_errors(&host, "hog", "memory", 2.0);
    let p = readyz_pump(&host, "hog");
    assert!(
        p["error"]
            .as_str()
            .unwrap_or("")
            .contains("over sandbox.max_memory"),
        "{p}"
    );
    assert!(host.is_running());
    // It never delivered a record, so none is its record's fault: held.
    assert_held_not_dropped(&mut conn);
}

#[test]
fn a_js_plugin_that_throws_traps_and_is_retried_on_fresh_instances() {
    let (_redis, mut conn, base) = setup();
    let mut host = Host::start(base.pump(hostile_js("thrower", "throw")));
    assert_healthy_delivered(&host);
    wait_errors(&host, "thrower", "trap", 3.0);
    assert_reported(&host, "thrower", "retrying", "trapped");
    assert!(host.is_running());
    assert_held_not_dropped(&mut conn);
    // The engine prints the uncaught exception to stderr, which the host
    // logs as the pump's.
    let log = host.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("hostile-js: throwing on purpose") && l.contains("thrower")),
        "{log:.2000}"
    );
}

#[test]
fn a_js_plugin_rejecting_one_record_dead_letters_only_it() {
    let (_redis, mut conn, base) = setup();
    let host = Host::start(base.pump(hostile_js("picky", "bad-record")));
    assert_healthy_delivered(&host);
    let written = "pumphouse_pump_records_written_total{pump=\"picky\"}";
    let dead = wait_for(WAIT, "every record delivered or dead-lettered", || {
        let dead = dead_of(&mut conn, "picky");
        (host.metric(written) + dead.len() as f64 == N as f64).then_some(dead)
    });
    // One record per batch, the first, and only it.
    assert!(
        !dead.is_empty() && dead.len() < N as usize / 2,
        "{}",
        dead.len()
    );
    for d in &dead {
        assert!(
            d.reason.contains("hostile-js: rejecting the first record"),
            "{}",
            d.reason
        );
    }
    wait_for(WAIT, "everything acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
}

#[test]
fn a_js_log_flood_is_cut_and_rate_limited() {
    let (_redis, mut conn, base) = setup();
    const LINES: u64 = 300;
    let mut host = Host::start(
        base.pump(
            hostile_js("flood", "log-flood")
                // Each call writes 60 MB of lines; on a loaded machine it
                // can take longer than the default 10 s, and this test is
                // about the log budget, not time.
                .set("timeout", "60s")
                .config("lines", LINES as i64)
                .config("size", 100_000)
                .sandbox("log_lines_per_second", 10)
                .sandbox("log_burst", 20),
        ),
    );
    assert_healthy_delivered(&host);
    wait_metric(
        &host,
        "pumphouse_pump_records_written_total{pump=\"flood\"}",
        N as f64,
    );
    wait_for(WAIT, "everything acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    // Each batch logs LINES lines through `log` and as many to stderr, all
    // through the pump's one budget: logged or counted, never lost. The
    // stderr lines are read by the host as they come, so the count
    // settles a moment after the last ack.
    let writes = (N / 50) * LINES * 2;
    let flood_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("flood ") && l.contains("xxxx"))
            .count() as f64
    };
    let suppressed = wait_for(WAIT, "every line logged or counted", || {
        let suppressed = host.metric("pumphouse_sandbox_log_suppressed_total{pump=\"flood\"}");
        (flood_lines(&host.log_text()) + suppressed == writes as f64).then_some(suppressed)
    });
    let (_, logged) = crate::sandbox::stop_and_read_flood(&mut host);
    assert_eq!(logged.len() as f64 + suppressed, writes as f64);
    assert!(
        (logged.len() as u64) < writes / 2,
        "{} of {writes} lines logged",
        logged.len()
    );
}

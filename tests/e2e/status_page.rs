//! The status page: `/api/status` of a host with a healthy and a failing
//! pump, and the page itself rendered by a real headless Chromium.
//!
//! Chromium runs as `--headless --dump-dom --virtual-time-budget`: the
//! page's script runs (its timers on virtual time, its fetch of
//! `/api/status` real) and the DOM it built is printed. That is exactly
//! what the assertions need, with no DevTools client crate to add.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::config::{HostConfig, Pump};
use crate::harness::*;
use crate::sink_servers::find_binary;

/// A host with `healthy` (the file sink) and `failing` (the faulty
/// fixture, in an outage from the start: it retries for ever).
fn two_pumps(redis: &RedisServer) -> Host {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/outage"), "").unwrap();
    let config = HostConfig::new(redis)
        .source("batch_size", 20)
        .pump(Pump::file("healthy", "healthy.jsonl"))
        .pump(
            Pump::sink("failing", fixture("faulty"), "failing.jsonl")
                .config("fail_while_exists", "/out/outage")
                .retry("20ms", "100ms")
                // Room for every batch the test produces: once a stuck pump
                // holds max_in_flight_batches, claiming pauses (as it
                // should) and the healthy pump's rate falls to zero, which
                // a slow machine reaches before the page has rendered.
                .set("max_in_flight_batches", 100_000),
        );
    Host::start_in(dir, &config)
}

fn api_status(host: &Host) -> serde_json::Value {
    let (code, body) = http_get(&host.http, "/api/status").unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn pump<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["pumps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("pump {name} not in {doc}"))
}

/// Pushes records in the background until dropped, so rates stay up
/// while a page loads.
struct Producer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producer {
    fn start(redis: &RedisServer) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut conn = redis_conn(redis);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                push_iam(&mut conn, 20, 7);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Producer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until the healthy pump has a non-zero rate and the failing one
/// is retrying; returns that document.
fn wait_until_both_show(host: &Host) -> serde_json::Value {
    wait_for(
        Duration::from_secs(60),
        "a non-zero rate for healthy and failing retrying",
        || {
            let doc = api_status(host);
            // No pumps listed until they started.
            let started = doc["pumps"].as_array().unwrap().len() == 2;
            let ok = started
                && pump(&doc, "healthy")["rate"].as_f64().unwrap() > 0.0
                && pump(&doc, "failing")["state"] == "retrying";
            ok.then_some(doc)
        },
    )
}

#[test]
fn api_status_shows_the_source_both_pumps_the_failing_ones_error_and_the_last_reload() {
    let redis = RedisServer::start().unwrap();
    let host = two_pumps(&redis);
    let _producer = Producer::start(&redis);
    let doc = wait_until_both_show(&host);

    let src = &doc["source"];
    assert_eq!(src["topology"], "single", "{src}");
    assert_eq!(src["kind"], "list");
    assert_eq!(src["tls"], false);
    assert_eq!(src["reachable"], true);
    assert_eq!(src["redis"], redis.url());
    assert!(src["error"].is_null(), "{src}");
    let keys = src["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{src}");
    assert_eq!(keys[0]["key"], pumphouse::record::IAM_KEY);
    assert!(keys[0]["backlog"].is_u64(), "backlog measured: {src}");
    assert!(src["claimed"].as_u64().unwrap() >= 20, "{src}");
    assert_eq!(src["lease_takeovers"], 0);
    assert!(doc["history"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["claimed"].as_f64().unwrap() > 0.0));
    assert_eq!(doc["ready"], false, "a failing pump keeps the host unready");

    let healthy = pump(&doc, "healthy");
    assert_eq!(healthy["state"], "ok");
    assert_eq!(healthy["plugin_name"], "file");
    let wasm = std::fs::read(plugin("file")).unwrap();
    assert_eq!(
        healthy["sha256"].as_str().unwrap(),
        hex(&Sha256::digest(&wasm))
    );
    assert!(!healthy["plugin_version"].as_str().unwrap().is_empty());
    assert!(healthy["written"].as_u64().unwrap() > 0);
    assert!(healthy["spool"].is_null(), "a memory pump has no spool");
    assert_eq!(healthy["errors_by_kind"], serde_json::json!({}));

    let failing = pump(&doc, "failing");
    assert_eq!(failing["plugin_name"], "faulty");
    let error = failing["error"].as_str().unwrap();
    assert!(error.contains("outage: /out/outage exists"), "{failing}");
    let kind = failing["kind"].as_str().unwrap();
    assert!(
        failing["errors_by_kind"][kind].as_u64().unwrap() > 0,
        "{failing}"
    );
    assert_eq!(failing["written"], 0);
    assert_eq!(failing["rate"], 0.0);
    assert!(failing["since"].is_string(), "{failing}");
    assert!(
        failing["lane_depth"].as_u64().unwrap() >= 1,
        "its batches wait in its lane: {failing}"
    );

    assert!(doc["last_reload"].is_null());
    let (code, body) = http_post(&host.http, "/admin/reload");
    assert_eq!(code, 200, "{body}");
    let reload = &api_status(&host)["last_reload"];
    assert_eq!(reload["result"], "ok", "{reload}");

    // The page itself: self-contained, the same for every client.
    let (code, page) = http_get(&host.http, "/").unwrap();
    assert_eq!(code, 200);
    assert!(page.contains("<title>pumphouse status</title>"), "{page}");
    assert!(!page.contains("https://") && !page.contains(" src="));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Chromium binary; `None` (after a loud SKIPPED line) when it is not
/// installed, except in CI, where a missing browser fails the test.
fn chromium() -> Option<PathBuf> {
    let found = find_binary(&["chromium", "chromium-browser", "google-chrome"]);
    if found.is_none() && std::env::var("CI").as_deref() == Ok("true") {
        panic!("chromium is not installed (scripts/lib/ensure-deps installs it) and CI=true");
    }
    found
}

/// The DOM of `url` after its script ran for `budget` of virtual time.
fn dump_dom(browser: &Path, url: &str, budget: Duration) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = profile.path().join("dom.html");
    let err = profile.path().join("chromium.log");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            // The test may run as root, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn chromium");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "chromium failed: {status}: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    std::fs::read_to_string(&out).unwrap()
}

/// The markup of the pump card whose `data-pump` is `name`: from its tag
/// to the next card (or the end of the pump list).
fn card<'a>(dom: &'a str, name: &str) -> &'a str {
    let start = dom
        .find(&format!("data-pump=\"{name}\""))
        .unwrap_or_else(|| panic!("no card for pump {name} in {dom}"));
    let rest = &dom[start..];
    let end = rest[1..]
        .find("data-pump=\"")
        .map(|i| i + 1)
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The value of attribute `name` in `markup`'s first tag that has it.
fn attr(markup: &str, name: &str) -> String {
    let at = markup
        .find(&format!(" {name}=\""))
        .unwrap_or_else(|| panic!("no {name} in {markup}"));
    let rest = &markup[at + name.len() + 3..];
    rest[..rest.find('"').unwrap()].to_string()
}

#[test]
fn the_status_page_in_headless_chromium_lists_both_pumps_with_the_error_and_rates() {
    let Some(browser) = chromium() else {
        return;
    };
    let redis = RedisServer::start().unwrap();
    let host = two_pumps(&redis);
    let _producer = Producer::start(&redis);
    wait_until_both_show(&host);

    let dom = dump_dom(
        &browser,
        &format!("http://{}/", host.http),
        Duration::from_secs(5),
    );
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the script rendered a status: {dom}"
    );
    let healthy = card(&dom, "healthy");
    assert_eq!(attr(healthy, "data-state"), "ok");
    let rate: f64 = attr(healthy, "data-rate").parse().unwrap();
    let peak: f64 = attr(healthy, "data-peak").parse().unwrap();
    assert!(rate > 0.0 && peak > 0.0, "rates non-zero: {healthy}");
    assert!(healthy.contains("<polyline"), "a chart: {healthy}");

    let failing = card(&dom, "failing");
    assert_eq!(attr(failing, "data-state"), "retrying");
    assert!(
        failing.contains("class=\"error\"") && failing.contains("outage: /out/outage exists"),
        "the failing pump shows its error: {failing}"
    );
    assert!(
        dom.contains(pumphouse::record::IAM_KEY),
        "the source key is listed: {dom}"
    );
}

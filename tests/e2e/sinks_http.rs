//! The `http` and `elasticsearch` sinks end to end: the real host and the
//! real `.wasm` plugins against a receiver written here. No generic HTTP
//! ingest server exists to install, and no Elasticsearch (or OpenSearch)
//! server can be installed from the system package manager, so the
//! receiver plays both: it records every request, and as a bulk endpoint
//! it checks the bulk format strictly, stores documents by `_id` and
//! answers like the real API, per-item errors included.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use pumphouse::produce::{encode_iam, encode_tyk, IamRecord, Sampler, TykRecord};
use serde_json::{json, Value};

use crate::harness::*;

use pumphouse::record::IAM_KEY;
use pumphouse::record::TYK_KEY;
const WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// The receiver: a tiny HTTP/1.1 server, one request per connection (the
// host opens a connection per request and we answer `connection: close`).

/// One request as the receiver saw it; `body` is gunzipped when the
/// request said `content-encoding: gzip`.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

enum Reply {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering, like a server that crashed
    /// after doing the work.
    Drop,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    Reply::Respond {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

type Handler = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// Serves `handler` on a port until stopped; can start again on the same
/// port, as a restarted server would.
struct Receiver {
    port: u16,
    handler: Handler,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(handler: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut r = Receiver {
            port,
            handler: Arc::new(handler),
            stop: Arc::default(),
            thread: None,
        };
        r.serve(listener);
        r
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let handler = self.handler.clone();
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        std::thread::spawn(move || serve_one(stream, &handler));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        }));
    }

    /// Closes the listening socket: new connections are refused.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// Listens again on the same port.
    fn restart(&mut self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let listener = wait_for(Duration::from_secs(10), "the port to be free again", || {
            TcpListener::bind(&addr).ok()
        });
        self.serve(listener);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_one(stream: TcpStream, handler: &Handler) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(req) = read_request(&mut reader) else {
        return;
    };
    let mut out = stream;
    match handler(&req) {
        Reply::Drop => {}
        Reply::Respond {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\ncontent-type: application/json\r\n",
                body.len()
            );
            for (n, v) in headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = out.write_all(head.as_bytes());
            let _ = out.write_all(&body);
        }
    }
}

fn read_request(reader: &mut impl BufRead) -> Option<Received> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (n, v) = h.split_once(':')?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .expect("the plugins always send content-length");
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    if headers
        .iter()
        .any(|(n, v)| n == "content-encoding" && v == "gzip")
    {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .expect("a valid gzip body");
        body = plain;
    }
    Some(Received {
        method,
        target,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------
// Shared checks.

fn iam_records(seed: u64, n: u64, spacing_secs: i64) -> Vec<IamRecord> {
    let mut sampler = Sampler::new(seed);
    (0..n)
        .map(|i| sampler.iam(i, T0 + i as i64 * spacing_secs))
        .collect()
}

fn tyk_records(seed: u64, range: std::ops::Range<u64>) -> Vec<TykRecord> {
    let mut sampler = Sampler::new(seed);
    // Draw in order so that record i is the same whichever range asks.
    let all: Vec<_> = (0..range.end).map(|i| sampler.tyk(i, T0)).collect();
    all[range.start as usize..].to_vec()
}

/// The seq the sample generator put at the end of a Tyk `Path`.
fn tyk_seq(doc: &Value) -> usize {
    doc["Path"]
        .as_str()
        .and_then(|p| p.rsplit('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seq in {doc}"))
}

/// Compares a delivered Tyk record with the one produced, field by field.
fn assert_tyk_doc(doc: &Value, r: &TykRecord) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let seq = tyk_seq(doc);
    let ctx = format!("Tyk record {seq}: {doc}");
    assert_eq!(doc["Method"], r.method.as_str(), "{ctx}");
    assert_eq!(doc["Host"], r.host.as_str(), "{ctx}");
    assert_eq!(doc["Path"], r.path.as_str(), "{ctx}");
    assert_eq!(doc["RawPath"], r.raw_path.as_str(), "{ctx}");
    assert_eq!(doc["ContentLength"], r.content_length, "{ctx}");
    assert_eq!(doc["UserAgent"], r.user_agent.as_str(), "{ctx}");
    assert_eq!(doc["Day"], r.day, "{ctx}");
    assert_eq!(doc["Month"], r.month, "{ctx}");
    assert_eq!(doc["Year"], r.year, "{ctx}");
    assert_eq!(doc["Hour"], r.hour, "{ctx}");
    assert_eq!(doc["ResponseCode"], r.response_code, "{ctx}");
    assert_eq!(doc["APIKey"], r.api_key.as_str(), "{ctx}");
    assert_eq!(
        doc["TimeStamp"],
        rfc3339(r.timestamp.0, r.timestamp.1),
        "{ctx}"
    );
    assert_eq!(doc["APIVersion"], r.api_version.as_str(), "{ctx}");
    assert_eq!(doc["APIName"], r.api_name.as_str(), "{ctx}");
    assert_eq!(doc["APIID"], r.api_id.as_str(), "{ctx}");
    assert_eq!(doc["OrgID"], r.org_id.as_str(), "{ctx}");
    assert_eq!(doc["OauthID"], r.oauth_id.as_str(), "{ctx}");
    assert_eq!(doc["RequestTime"], r.request_time, "{ctx}");
    for (field, want) in [
        ("RawRequest", &r.raw_request),
        ("RawResponse", &r.raw_response),
    ] {
        assert_eq!(
            b64.decode(doc[field].as_str().unwrap()).unwrap(),
            b64.decode(want).unwrap(),
            "{ctx}: {field}"
        );
    }
    assert_eq!(doc["IPAddress"], r.ip_address.as_str(), "{ctx}");
    assert_eq!(
        doc["Geo"]["Country"]["ISOCode"],
        r.geo_country.as_str(),
        "{ctx}"
    );
    assert_eq!(doc["Geo"]["City"]["GeoNameID"], r.geo_city_id, "{ctx}");
    assert_eq!(
        doc["Geo"]["City"]["Names"],
        json!(r.geo_city_names),
        "{ctx}"
    );
    assert_eq!(doc["Geo"]["Location"]["Latitude"], r.geo_lat, "{ctx}");
    assert_eq!(doc["Geo"]["Location"]["Longitude"], r.geo_lon, "{ctx}");
    assert_eq!(
        doc["Geo"]["Location"]["TimeZone"],
        r.geo_tz.as_str(),
        "{ctx}"
    );
    assert_eq!(
        doc["Network"],
        json!({"OpenConnections": r.network[0], "ClosedConnection": r.network[1], "BytesIn": r.network[2], "BytesOut": r.network[3]}),
        "{ctx}"
    );
    assert_eq!(
        doc["Latency"],
        json!({"Total": r.latency[0], "Upstream": r.latency[1], "Gateway": r.latency[2]}),
        "{ctx}"
    );
    assert_eq!(doc["Tags"], json!(r.tags), "{ctx}");
    assert_eq!(doc["Alias"], r.alias.as_str(), "{ctx}");
    assert_eq!(doc["TrackPath"], r.track_path, "{ctx}");
    assert_eq!(
        doc["ExpireAt"],
        rfc3339(r.expire_at.0, r.expire_at.1),
        "{ctx}"
    );
    assert_eq!(doc["ApiSchema"], r.api_schema.as_str(), "{ctx}");
    assert_eq!(doc["OriginalPath"], r.original_path.as_str(), "{ctx}");
    assert_eq!(doc["ListenPath"], r.listen_path.as_str(), "{ctx}");
}

/// Entries of the source key's dead-letter list, parsed.
fn dead_letters(conn: &mut redis::Connection, key: &str) -> Vec<Value> {
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("pumphouse:dead-letter:{key}"))
        .arg(0)
        .arg(-1)
        .query(conn)
        .unwrap();
    entries
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn wait_drained(conn: &mut redis::Connection, key: &str) {
    wait_for(WAIT, &format!("{key} drained and acked"), || {
        (left_in_redis(conn, key) == (0, 0)).then_some(())
    });
}

/// The records in the bodies of `requests` (JSON array or NDJSON).
fn records_in(requests: &[Received]) -> Vec<Value> {
    let mut out = Vec::new();
    for r in requests {
        if r.body.first() == Some(&b'[') {
            let arr: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
            out.extend(arr);
        } else {
            for l in std::str::from_utf8(&r.body).unwrap().lines() {
                out.push(serde_json::from_str(l).unwrap());
            }
        }
    }
    out
}

/// The `http` sink sending to `url`, retrying quickly, allowed to reach
/// the receiver on `port`.
fn http_pump(name: &str, url: &str, port: u16) -> Pump {
    Pump::new(name, plugin("http"))
        .retry("50ms", "500ms")
        .config("url", url)
        .sandbox(
            "allowed_outbound_hosts",
            strings([format!("http://127.0.0.1:{port}")]),
        )
}

// ---------------------------------------------------------------------------
// http

/// Records every request and answers 200.
fn recorder() -> (Receiver, Arc<Mutex<Vec<Received>>>) {
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = seen.clone();
    let r = Receiver::start(move |req| {
        log.lock().unwrap().push(req.clone());
        reply(200, "{}")
    });
    (r, seen)
}

fn wait_records(seen: &Mutex<Vec<Received>>, path: &str, n: usize) -> Vec<Value> {
    wait_for(WAIT, &format!("{n} records at {path}"), || {
        let reqs: Vec<Received> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path() == path)
            .cloned()
            .collect();
        let recs = records_in(&reqs);
        (recs.len() >= n).then_some(recs)
    })
}

#[test]
fn http_sink_posts_iam_records_gzipped_with_a_secret_header() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = iam_records(21, 700, 1);
    push_iam_records(&mut conn, IAM_KEY, &records);
    let (rx, seen) = recorder();
    // `$${` keeps the host's own config interpolation away from the
    // placeholder, so the plugin resolves it from its sandbox env.
    let config = HostConfig::new(&redis).source("batch_size", 100).pump(
        http_pump("http", &rx.url("/ingest"), rx.port)
            .config("format", "json_array")
            .config("gzip", true)
            .config(
                "headers.Authorization",
                "Bearer $${PUMPHOUSE_TEST_HTTP_TOKEN}",
            )
            .config("headers.X-Source", "pumphouse-e2e")
            .sandbox("env", strings(["PUMPHOUSE_TEST_HTTP_TOKEN"])),
    );
    let host = Host::start_in_env(
        tempfile::tempdir().unwrap(),
        &config,
        &[("PUMPHOUSE_TEST_HTTP_TOKEN", "tok-4711")],
    );
    let got = wait_records(&seen, "/ingest", 700);
    assert_iam_lines(&got, &records);
    for req in seen.lock().unwrap().iter() {
        assert_eq!(req.method, "POST");
        assert_eq!(req.header("authorization"), Some("Bearer tok-4711"));
        assert_eq!(req.header("x-source"), Some("pumphouse-e2e"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("content-encoding"), Some("gzip"));
        assert!(req.body.starts_with(b"[{"), "a JSON array");
    }
    wait_drained(&mut conn, IAM_KEY);
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
    assert!(
        !host.log_text().contains("tok-4711"),
        "the secret is never logged"
    );
}

#[test]
fn http_sink_posts_tyk_records_as_ndjson() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = tyk_records(22, 0..400);
    push(
        &mut conn,
        TYK_KEY,
        &records.iter().map(encode_tyk).collect::<Vec<_>>(),
    );
    let (rx, seen) = recorder();
    let config = HostConfig::new(&redis).tyk().source("batch_size", 64).pump(
        http_pump("http", &rx.url("/tyk?team=edge"), rx.port)
            .config("format", "ndjson")
            .config("method", "PUT"),
    );
    let _host = Host::start(&config);
    let got = wait_records(&seen, "/tyk", 400);
    assert_eq!(got.len(), 400);
    let mut seqs = HashSet::new();
    for doc in &got {
        assert!(seqs.insert(tyk_seq(doc)), "seq {} twice", tyk_seq(doc));
        assert_tyk_doc(doc, &records[tyk_seq(doc)]);
    }
    for req in seen.lock().unwrap().iter() {
        assert_eq!(req.method, "PUT");
        assert_eq!(req.target, "/tyk?team=edge");
        assert_eq!(req.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(req.header("content-encoding"), None);
        assert!(req.body.ends_with(b"}\n"));
    }
    wait_drained(&mut conn, TYK_KEY);
}

#[test]
fn http_sink_init_fails_naming_a_variable_the_sandbox_does_not_grant() {
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig::new(&redis).pump(http_pump("http", "http://127.0.0.1:9/", 9).config(
        "headers.Authorization",
        "Bearer $${PUMPHOUSE_TEST_UNGRANTED}",
    ));
    let path = dir.path().join("pumphouse.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let (code, out, err) = pumphouse(&["check", "--config", path.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("headers.Authorization")
            && text.contains("PUMPHOUSE_TEST_UNGRANTED")
            && text.contains("sandbox.env"),
        "{text}"
    );
}

/// Fault injection the real servers cannot produce on demand, one pump
/// per fault on one host: a 429 with `Retry-After`, a 413 for bodies over
/// 50 records, and a 400 for any body holding the marked record.
#[test]
fn http_sink_faults_retry_after_too_large_and_a_bad_record() {
    const N: u64 = 300;
    const POISON: usize = 137;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let mut records = iam_records(23, N, 1);
    records[POISON].username = "poison".into();
    let bytes: Vec<Vec<u8>> = records.iter().map(encode_iam).collect();
    push(&mut conn, IAM_KEY, &bytes);

    let stored: Arc<Mutex<Vec<Received>>> = Arc::default();
    let answers: Arc<Mutex<Vec<(String, u16, Instant)>>> = Arc::default();
    let (log, told) = (stored.clone(), answers.clone());
    let retry_after_sent = Arc::new(AtomicBool::new(false));
    let rx = Receiver::start(move |req| {
        let recs = records_in(std::slice::from_ref(req));
        let status = match req.path() {
            "/retry-after" if !retry_after_sent.swap(true, Ordering::SeqCst) => 429,
            "/too-large" if recs.len() > 50 => 413,
            "/bad-record" if recs.iter().any(|r| r["Username"] == "poison") => 400,
            _ => 200,
        };
        told.lock()
            .unwrap()
            .push((req.path().to_string(), status, Instant::now()));
        match status {
            200 => {
                log.lock().unwrap().push(req.clone());
                reply(200, "{}")
            }
            429 => Reply::Respond {
                status,
                headers: vec![("Retry-After".into(), "1".into())],
                body: b"slow down".to_vec(),
            },
            _ => reply(status, format!("refused with {status}")),
        }
    });
    let pump = |name: &str| http_pump(name, &rx.url(&format!("/{name}")), rx.port);
    let config = HostConfig::new(&redis)
        .source("batch_size", 200)
        .pump(pump("retry-after"))
        .pump(pump("too-large"))
        .pump(pump("bad-record"));
    let host = Host::start(&config);

    let ra = wait_records(&stored, "/retry-after", N as usize);
    assert_iam_lines(&ra, &records);
    let tl = wait_records(&stored, "/too-large", N as usize);
    assert_iam_lines(&tl, &records);
    let mut good = records.clone();
    good.remove(POISON);
    let br = wait_records(&stored, "/bad-record", N as usize - 1);
    let mut by_seq: Vec<Value> = br;
    by_seq.sort_by_key(iam_seq);
    for (doc, want) in by_seq.iter().zip(&good) {
        assert_eq!(doc, &iam_json(want));
    }
    assert_eq!(by_seq.len(), good.len(), "every good record once");

    wait_for(WAIT, "the dead letter", || {
        (!dead_letters(&mut conn, IAM_KEY).is_empty()).then_some(())
    });
    wait_drained(&mut conn, IAM_KEY);
    let dead = dead_letters(&mut conn, IAM_KEY);
    assert_eq!(dead.len(), 1, "only the marked record: {dead:?}");
    assert_eq!(dead[0]["pump"], "bad-record");
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        b64.decode(dead[0]["payload"].as_str().unwrap()).unwrap(),
        bytes[POISON]
    );
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("400"),
        "{}",
        dead[0]
    );

    let answers = answers.lock().unwrap();
    // The request after the 429 came no sooner than Retry-After allows.
    let ra: Vec<_> = answers.iter().filter(|a| a.0 == "/retry-after").collect();
    assert_eq!(ra[0].1, 429);
    assert!(
        ra[1].2.duration_since(ra[0].2) >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert!(
        answers.iter().any(|a| a.0 == "/too-large" && a.1 == 413),
        "the 413 path was exercised"
    );
    assert!(
        answers
            .iter()
            .filter(|a| a.0 == "/too-large" && a.1 == 200)
            .count()
            >= (N as usize).div_ceil(50)
    );
    assert!(host.metric("pumphouse_pump_errors_total{pump=\"retry-after\",kind=\"retry\"}") >= 1.0);
    assert!(
        host.metric("pumphouse_pump_errors_total{pump=\"too-large\",kind=\"too_large\"}") >= 1.0
    );
    assert!(
        host.metric("pumphouse_pump_errors_total{pump=\"bad-record\",kind=\"invalid\"}") >= 1.0
    );
    assert!(
        host.log_text().contains("Retry-After: 1s, waited"),
        "{}",
        host.log_text()
    );
}

#[test]
fn http_sink_loses_nothing_when_the_receiver_restarts() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = iam_records(24, 1000, 1);
    let bytes: Vec<Vec<u8>> = records.iter().map(encode_iam).collect();
    push(&mut conn, IAM_KEY, &bytes[..500]);
    let (mut rx, seen) = recorder();
    let config = HostConfig::new(&redis)
        .source("batch_size", 50)
        .pump(http_pump("http", &rx.url("/ingest"), rx.port).config("format", "ndjson"));
    let host = Host::start(&config);
    wait_records(&seen, "/ingest", 500);

    rx.stop();
    push(&mut conn, IAM_KEY, &bytes[500..]);
    let metric = "pumphouse_pump_errors_total{pump=\"http\",kind=\"retry\"}";
    wait_for(WAIT, "retries against the stopped receiver", || {
        (host.metric(metric) >= 3.0).then_some(())
    });
    rx.restart();

    let got = wait_records(&seen, "/ingest", 1000);
    wait_drained(&mut conn, IAM_KEY);
    // The receiver refused connections while down and answered every
    // request it accepted, so nothing was delivered twice either.
    assert_iam_lines(&got, &records);
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
}

// ---------------------------------------------------------------------------
// elasticsearch

/// One stored document.
#[derive(Debug, Clone)]
struct Doc {
    index: String,
    source: Value,
    /// Times it was indexed: more than 1 means it was overwritten.
    version: u32,
}

/// A bulk endpoint that checks every request strictly and answers like the
/// real API. Format errors are answered with a 400 and recorded in
/// `violations`, which every test expects to stay empty.
#[derive(Default)]
struct Bulk {
    docs: HashMap<String, Doc>,
    violations: Vec<String>,
    /// `_id`s already refused once with a 429.
    rejected: HashSet<String>,
    /// The next request is applied and then left unanswered.
    crash_next: bool,
    crashed: bool,
    requests: usize,
}

/// What the test expects of every request.
#[derive(Clone)]
struct BulkRules {
    target: String,
    authorization: Option<String>,
    index_prefix: String,
}

/// The index a document belongs in: `<prefix><yyyy.mm.dd>` of its
/// `TimeStamp` (RFC 3339, UTC).
fn expected_index(prefix: &str, doc: &Value) -> Option<String> {
    let ts = doc["TimeStamp"].as_str()?;
    let date = ts.get(..10)?;
    Some(format!("{prefix}{}", date.replace('-', ".")))
}

impl Bulk {
    fn handle(&mut self, req: &Received, rules: &BulkRules) -> Reply {
        self.requests += 1;
        match self.check_and_apply(req, rules) {
            Ok(items) => {
                let errors = items.iter().any(|i| i["index"]["error"].is_object());
                let body = json!({"took": 1, "errors": errors, "items": items}).to_string();
                if std::mem::take(&mut self.crash_next) {
                    self.crashed = true;
                    return Reply::Drop;
                }
                reply(200, body)
            }
            Err(why) => {
                self.violations.push(why.clone());
                reply(
                    400,
                    json!({"error": {"type": "illegal_argument_exception", "reason": why}, "status": 400})
                        .to_string(),
                )
            }
        }
    }

    fn check_and_apply(&mut self, req: &Received, rules: &BulkRules) -> Result<Vec<Value>, String> {
        if req.method != "POST" || req.target != rules.target {
            return Err(format!(
                "{} {} is not the bulk endpoint",
                req.method, req.target
            ));
        }
        if req.header("content-type") != Some("application/x-ndjson") {
            return Err(format!("content-type {:?}", req.header("content-type")));
        }
        if req.header("authorization") != rules.authorization.as_deref() {
            return Err(format!("authorization {:?}", req.header("authorization")));
        }
        let text = std::str::from_utf8(&req.body).map_err(|e| e.to_string())?;
        if !text.ends_with('\n') {
            return Err("the bulk body must end with a newline".into());
        }
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() || !lines.len().is_multiple_of(2) {
            return Err(format!(
                "{} lines: actions and documents must pair up",
                lines.len()
            ));
        }
        // Check the whole request before applying any of it.
        let mut actions = Vec::new();
        for pair in lines.chunks(2) {
            let action: Value =
                serde_json::from_str(pair[0]).map_err(|e| format!("action line: {e}"))?;
            let meta = action
                .as_object()
                .filter(|o| o.len() == 1)
                .and_then(|o| o.get("index"))
                .and_then(Value::as_object)
                .ok_or_else(|| format!("not an index action: {action}"))?;
            let index = meta
                .get("_index")
                .and_then(Value::as_str)
                .ok_or("no _index")?;
            let id = meta.get("_id").and_then(Value::as_str).ok_or("no _id")?;
            if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("_id {id:?} is not the record id in hex"));
            }
            let source: Value =
                serde_json::from_str(pair[1]).map_err(|e| format!("document line: {e}"))?;
            if !source.is_object() {
                return Err(format!("document is not an object: {source}"));
            }
            let want = expected_index(&rules.index_prefix, &source);
            if want.as_deref() != Some(index) {
                return Err(format!("_index {index:?}, expected {want:?} for {source}"));
            }
            actions.push((index.to_string(), id.to_string(), source));
        }
        let mut items = Vec::new();
        for (index, id, source) in actions {
            let item = if source["Username"] == "mapper-poison" {
                json!({"index": {"_index": index, "_id": id, "status": 400, "error": {
                    "type": "mapper_parsing_exception",
                    "reason": "failed to parse field [Username] of type [long] in document with id '<id>'"}}})
            } else if source["Username"] == "reject-once" && self.rejected.insert(id.clone()) {
                json!({"index": {"_index": index, "_id": id, "status": 429, "error": {
                    "type": "es_rejected_execution_exception",
                    "reason": "rejected execution of coordinating operation"}}})
            } else {
                let doc = self.docs.entry(id.clone()).or_insert(Doc {
                    index: index.clone(),
                    source: Value::Null,
                    version: 0,
                });
                doc.index = index.clone();
                doc.source = source;
                doc.version += 1;
                let (status, result) = if doc.version == 1 {
                    (201, "created")
                } else {
                    (200, "updated")
                };
                json!({"index": {"_index": index, "_id": id, "_version": doc.version, "result": result, "status": status}})
            };
            items.push(item);
        }
        Ok(items)
    }
}

fn bulk_server(rules: BulkRules) -> (Receiver, Arc<Mutex<Bulk>>) {
    let state: Arc<Mutex<Bulk>> = Arc::default();
    let s = state.clone();
    let rx = Receiver::start(move |req| s.lock().unwrap().handle(req, &rules));
    (rx, state)
}

/// The `elasticsearch` sink sending to `rx`, retrying quickly.
fn es_pump(rx: &Receiver) -> Pump {
    Pump::new("es", plugin("elasticsearch"))
        .retry("50ms", "500ms")
        .config("url", rx.url(""))
        .sandbox(
            "allowed_outbound_hosts",
            strings([format!("http://127.0.0.1:{}", rx.port)]),
        )
}

fn wait_docs(state: &Mutex<Bulk>, n: usize) -> HashMap<String, Doc> {
    wait_for(WAIT, &format!("{n} documents"), || {
        let s = state.lock().unwrap();
        assert!(
            s.violations.is_empty(),
            "bulk format violations: {:?}",
            s.violations
        );
        (s.docs.len() >= n).then(|| s.docs.clone())
    })
}

#[test]
fn elasticsearch_sink_indexes_iam_records_by_day_and_id() {
    const N: u64 = 600;
    const POISON: usize = 77;
    const REJECTED: usize = 401;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    // Five hours apart: the records span about four months of daily indices.
    let mut records = iam_records(31, N, 5 * 3600);
    records[POISON].username = "mapper-poison".into();
    records[REJECTED].username = "reject-once".into();
    let bytes: Vec<Vec<u8>> = records.iter().map(encode_iam).collect();
    push(&mut conn, IAM_KEY, &bytes);
    let b64 = base64::engine::general_purpose::STANDARD;
    let (rx, state) = bulk_server(BulkRules {
        target: "/_bulk?pipeline=pumphouse-enrich".into(),
        authorization: Some(format!("Basic {}", b64.encode("pump:s3cret-pw"))),
        index_prefix: "iam-".into(),
    });
    let config = HostConfig::new(&redis).source("batch_size", 100).pump(
        es_pump(&rx)
            .config("index", "iam-%Y.%m.%d")
            .config("pipeline", "pumphouse-enrich")
            .config("username", "pump")
            .config("password", "$${PUMPHOUSE_TEST_ES_PASSWORD}")
            .sandbox("env", strings(["PUMPHOUSE_TEST_ES_PASSWORD"])),
    );
    let host = Host::start_in_env(
        tempfile::tempdir().unwrap(),
        &config,
        &[("PUMPHOUSE_TEST_ES_PASSWORD", "s3cret-pw")],
    );
    let docs = wait_docs(&state, N as usize - 1);
    wait_for(WAIT, "the dead letter", || {
        (!dead_letters(&mut conn, IAM_KEY).is_empty()).then_some(())
    });
    wait_drained(&mut conn, IAM_KEY);

    let state = state.lock().unwrap();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    assert_eq!(
        state.docs.len(),
        N as usize - 1,
        "one document per good record"
    );
    let mut indices = HashSet::new();
    for (i, r) in records.iter().enumerate() {
        let id = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes[i]));
        if i == POISON {
            assert!(
                !docs.contains_key(&id),
                "the unmappable record is not stored"
            );
            continue;
        }
        let doc = docs
            .get(&id)
            .unwrap_or_else(|| panic!("record {i} missing (id {id})"));
        assert_eq!(doc.source, iam_json(r), "record {i}");
        assert_eq!(doc.version, 1, "record {i} indexed once");
        assert_eq!(Some(doc.index.clone()), expected_index("iam-", &doc.source));
        indices.insert(doc.index.clone());
    }
    assert!(indices.len() > 100, "daily indices: {}", indices.len());
    assert!(
        state.rejected.contains(&format!(
            "{:016x}",
            xxhash_rust::xxh3::xxh3_64(&bytes[REJECTED])
        )),
        "the 429 path was exercised"
    );
    drop(state);

    let dead = dead_letters(&mut conn, IAM_KEY);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["pump"], "es");
    assert_eq!(
        b64.decode(dead[0]["payload"].as_str().unwrap()).unwrap(),
        bytes[POISON]
    );
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("mapper_parsing_exception")
            && reason.contains("failed to parse field [Username]"),
        "{reason}"
    );
    assert!(host.metric("pumphouse_pump_errors_total{pump=\"es\",kind=\"partial\"}") >= 2.0);
    assert!(!host.log_text().contains("s3cret-pw"));
}

#[test]
fn elasticsearch_sink_loses_and_duplicates_nothing_across_a_server_crash() {
    const TOTAL: usize = 1500;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = tyk_records(32, 0..TOTAL as u64);
    let bytes: Vec<Vec<u8>> = records.iter().map(encode_tyk).collect();
    push(&mut conn, TYK_KEY, &bytes[..600]);
    let (mut rx, state) = bulk_server(BulkRules {
        target: "/_bulk".into(),
        authorization: Some("ApiKey a2V5LWlkOmtleQ==".into()),
        index_prefix: "tyk-".into(),
    });
    let config = HostConfig::new(&redis)
        .tyk()
        .source("batch_size", 100)
        .pump(
            es_pump(&rx)
                .config("index", "tyk-%Y.%m.%d")
                .config("api_key", "a2V5LWlkOmtleQ=="),
        );
    let host = Host::start(&config);
    wait_docs(&state, 200);

    // The server indexes the next bulk request, then dies before answering.
    state.lock().unwrap().crash_next = true;
    push(&mut conn, TYK_KEY, &bytes[600..1000]);
    wait_for(WAIT, "the crash", || {
        state.lock().unwrap().crashed.then_some(())
    });
    rx.stop();
    // Producers keep going while the server is down.
    push(&mut conn, TYK_KEY, &bytes[1000..]);
    let metric = "pumphouse_pump_errors_total{pump=\"es\",kind=\"retry\"}";
    wait_for(WAIT, "retries against the dead server", || {
        (host.metric(metric) >= 3.0).then_some(())
    });
    rx.restart();

    let docs = wait_docs(&state, TOTAL);
    wait_drained(&mut conn, TYK_KEY);
    let state = state.lock().unwrap();
    assert!(state.violations.is_empty(), "{:?}", state.violations);
    assert_eq!(state.docs.len(), TOTAL, "no duplicate documents");
    let mut seqs = HashSet::new();
    for doc in docs.values() {
        assert!(seqs.insert(tyk_seq(&doc.source)));
        assert_tyk_doc(&doc.source, &records[tyk_seq(&doc.source)]);
        assert_eq!(Some(doc.index.clone()), expected_index("tyk-", &doc.source));
    }
    for (i, b) in bytes.iter().enumerate() {
        let id = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(b));
        assert!(docs.contains_key(&id), "record {i} under its id");
    }
    let overwritten = docs.values().filter(|d| d.version > 1).count();
    assert!(
        overwritten >= 1,
        "the batch whose answer was lost was sent again and overwrote its documents"
    );
    assert!(dead_letters(&mut conn, TYK_KEY).is_empty());
}

//! End-to-end drain benchmark (run by `scripts/bench`): a private
//! redis-server is pre-filled with iam records, then drained by
//! (a) a plain Rust client doing leased claims + decode + ack in a loop
//!     (the reference ceiling), and
//! (b) the `pumphouse` binary, at-least-once, with the WASM `match` filter
//!     and the WASM `blackhole` sink.
//! Each is run `RUNS` times on the same data; medians, min and max are
//! printed with the ratio and pumphouse's peak RSS.
//!
//! Environment: `BENCH_RECORDS` (default 500000), `BENCH_RUNS` (3).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pumphouse::demo::RedisServer;
use pumphouse::produce::{encode_iam, Sampler};
use pumphouse::source::redis::lease_key;

const KEY: &str = "analytics-iam-system-analytics";
const STAGING: &str = "bench:staging";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills the staging list; moved into place with RENAME when timing starts.
fn fill(conn: &mut redis::Connection, n: u64) {
    let mut s = Sampler::new(1);
    let now = 1_763_700_000;
    let mut sent = 0;
    while sent < n {
        let k = 5000.min(n - sent);
        let mut pipe = redis::pipe();
        for i in 0..k {
            pipe.cmd("RPUSH")
                .arg(STAGING)
                .arg(encode_iam(&s.iam(sent + i, now)))
                .ignore();
        }
        pipe.query::<()>(conn).unwrap();
        sent += k;
    }
}

/// The reference's typed record: the iam fields, decoded with rmp-serde.
#[derive(serde::Deserialize)]
#[allow(non_snake_case, dead_code)]
struct RefIam {
    TimeStamp: i64,
    Username: String,
    Effect: String,
    Conclusion: String,
    Request: String,
    Policies: String,
    Deciders: String,
    ExpireAt: rmpv::Value,
}

const CLAIM: &str = r#"
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items == 0 then return items end
redis.call('LTRIM', KEYS[1], #items, -1)
redis.call('RPUSH', KEYS[3], unpack(items))
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), KEYS[3])
return items
"#;

/// The plain-client reference: claim 1000 → decode → ack, synchronously.
fn reference(conn: &mut redis::Connection, n: u64) -> Duration {
    let script = redis::Script::new(CLAIM);
    let start = Instant::now();
    let mut done = 0u64;
    let mut batch = 0u64;
    while done < n {
        let bkey = format!("{{{KEY}}}:ref:{batch}");
        batch += 1;
        let items: Vec<Vec<u8>> = script
            .key(KEY)
            .key("{analytics-iam-system-analytics}:ref-leases")
            .key(&bkey)
            .arg(1000)
            .arg(i64::MAX)
            .invoke(conn)
            .unwrap();
        for it in &items {
            let r: RefIam = rmp_serde::from_slice(it).expect("decodes");
            std::hint::black_box(&r);
        }
        redis::pipe()
            .cmd("DEL")
            .arg(&bkey)
            .ignore()
            .cmd("ZREM")
            .arg("{analytics-iam-system-analytics}:ref-leases")
            .arg(&bkey)
            .ignore()
            .query::<()>(conn)
            .unwrap();
        done += items.len() as u64;
    }
    start.elapsed()
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut t = String::new();
    let _ = s.read_to_string(&mut t);
    t
}

fn http_ok(addr: &str, path: &str) -> bool {
    http_get(addr, path).starts_with("HTTP/1.1 200")
}

/// pumphouse end to end; returns (drain time, peak RSS MB).
fn pumphouse(
    root: &Path,
    redis: &RedisServer,
    conn: &mut redis::Connection,
    n: u64,
) -> (Duration, f64) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = format!("127.0.0.1:{port}");
    let plugins = root.join("target/plugins");
    let config = format!(
        r#"plugins_dir = "{plugins}"
[source]
redis_url = "{url}"
format = "iam"
batch_size = 1000
poll_interval = "10ms"
[server]
listen = "{http}"
[[pumps]]
name = "bench"
plugin = "blackhole.wasm"
[[pumps.filters_chain]]
plugin = "match.wasm"
config = {{ field = "Effect", pattern = "^(allow|deny)$" }}
"#,
        plugins = plugins.display(),
        url = redis.url()
    );
    let cfg = dir.path().join("bench.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(root.join("target/release/pumphouse"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("PUMPHOUSE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("run target/release/pumphouse (scripts/build first)");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http_ok(&http, "/readyz") {
        assert!(Instant::now() < deadline, "pumphouse did not become ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    redis::cmd("RENAME")
        .arg(STAGING)
        .arg(KEY)
        .query::<()>(conn)
        .unwrap();
    let start = Instant::now();
    loop {
        let (len, leased): (u64, u64) = redis::pipe()
            .cmd("LLEN")
            .arg(KEY)
            .cmd("ZCARD")
            .arg(lease_key(KEY))
            .query(conn)
            .unwrap();
        if len == 0 && leased == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    let rss = peak_rss_mb(child.id());
    // The run only counts if the sink really saw every record.
    let counted = pumphouse::demo::metric_value(
        &http_get(&http, "/metrics"),
        "pumphouse_plugin_blackhole_records_total{pump=\"bench\"}",
    );
    assert_eq!(
        counted as u64, n,
        "the blackhole sink counted {counted} of {n} records"
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    (elapsed, rss)
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let n = env_or("BENCH_RECORDS", 500_000);
    let runs = env_or("BENCH_RUNS", 3) as usize;
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let redis = RedisServer::start().expect("redis-server");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let mut reference_rates = Vec::new();
    let mut pumphouse_rates = Vec::new();
    let mut rss = Vec::new();
    for run in 1..=runs {
        fill(&mut conn, n);
        redis::cmd("RENAME")
            .arg(STAGING)
            .arg(KEY)
            .query::<()>(&mut conn)
            .unwrap();
        let t = reference(&mut conn, n);
        reference_rates.push(n as f64 / t.as_secs_f64());
        fill(&mut conn, n);
        let (t, peak) = pumphouse(&root, &redis, &mut conn, n);
        pumphouse_rates.push(n as f64 / t.as_secs_f64());
        rss.push(peak);
        eprintln!(
            "run {run}/{runs}: reference {:.0}/s, pumphouse {:.0}/s, peak RSS {:.1} MB",
            reference_rates[run - 1],
            pumphouse_rates[run - 1],
            peak
        );
    }
    let (rm, rmin, rmax) = stats(&mut reference_rates);
    let (pm, pmin, pmax) = stats(&mut pumphouse_rates);
    let (sm, smin, smax) = stats(&mut rss);
    println!();
    println!("{n} iam records, {runs} runs, medians (min–max)");
    println!("| drain | records/s | ratio |");
    println!("|---|---|---|");
    println!("| reference: plain client, claim 1000 → decode → ack | {rm:.0} ({rmin:.0}–{rmax:.0}) | 1.00 |");
    println!("| pumphouse at-least-once, WASM match filter + WASM blackhole | {pm:.0} ({pmin:.0}–{pmax:.0}) | {:.2} |", pm / rm);
    println!();
    println!("pumphouse peak RSS: {sm:.1} MB ({smin:.1}–{smax:.1})");
}

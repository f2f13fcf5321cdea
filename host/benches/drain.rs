//! End-to-end benchmarks of the `pumphouse` binary against a private
//! redis-server (run by `scripts/bench`). Scenarios, chosen by argument
//! (`cargo bench --bench drain -- throughput memory latency`; default all):
//!
//! - `throughput`: the same pre-filled iam records drained, in rotating
//!   order within each run, by
//!   - the reference: one synchronous plain Rust client doing the leased
//!     claim of 1000 (the Lua `LRANGE`/`LTRIM`/`RPUSH`/`ZADD` script) →
//!     rmp-serde decode of every record into a struct → ack (`DEL` +
//!     `ZREM`), in a loop;
//!   - the same client with pumphouse's `SORT … STORE` claim (shows how
//!     much of pumphouse's lead is the cheaper claim; not a target);
//!   - pumphouse at-least-once: WASM `match` filter + WASM `blackhole`;
//!   - pumphouse at-most-once: the same pump, `delivery = "at-most-once"`;
//!   - pumphouse fan-out: 4 pumps, three bare WASM `blackhole` sinks and a
//!     WASM `file` sink writing JSON Lines (no `fsync`); and, harder, the
//!     same with the `match` filter in front of each `blackhole`.
//! - `memory`: a 2 000 000-record backlog drained by the single pump;
//!   peak RSS (VmHWM).
//! - `latency`: `pumphouse produce --rate 20000` (its `--push-log` notes
//!   when each pipeline was sent) into pumphouse with default settings and
//!   a `file` pump; a tail of the file notes when each line appears. The
//!   latency of a record is appearance − send (both conservative: send is
//!   timed before the pipeline leaves, appearance at the next 1 ms poll).
//!   RSS is sampled every second (soak: growth between the first and last
//!   fifth after the first 10 s), then the host's CPU is read from
//!   /proc/<pid>/stat over `BENCH_IDLE_SECS` of idle.
//!
//! Environment: `BENCH_RECORDS` (1000000), `BENCH_RUNS` (3),
//! `BENCH_MEMORY_RECORDS` (2000000), `BENCH_STEADY_SECS` (60;
//! `PUMPHOUSE_SOAK=1` makes it 600), `BENCH_RATE` (20000),
//! `BENCH_IDLE_SECS` (30).

use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pumphouse::demo::RedisServer;
use pumphouse::produce::{encode_iam, Sampler};
use pumphouse::source::redis::lease_key;

const KEY: &str = "analytics-iam-system-analytics";
const MASTER: &str = "bench:master";
const STAGING: &str = "bench:staging";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills the master list once; every run copies it server-side (`COPY`).
fn fill_master(conn: &mut redis::Connection, n: u64) {
    let _: () = redis::cmd("DEL").arg(MASTER).query(conn).unwrap();
    let mut s = Sampler::new(1);
    let now = 1_763_700_000;
    let mut sent = 0;
    while sent < n {
        let k = 5000.min(n - sent);
        let mut pipe = redis::pipe();
        for i in 0..k {
            pipe.cmd("RPUSH")
                .arg(MASTER)
                .arg(encode_iam(&s.iam(sent + i, now)))
                .ignore();
        }
        pipe.query::<()>(conn).unwrap();
        sent += k;
    }
}

/// `n` records of the master list into `dest`.
fn stage(conn: &mut redis::Connection, dest: &str, n: u64) {
    let () = redis::pipe()
        .cmd("DEL")
        .arg(dest)
        .ignore()
        .cmd("COPY")
        .arg(MASTER)
        .arg(dest)
        .ignore()
        .cmd("LTRIM")
        .arg(dest)
        .arg(0)
        .arg(n as i64 - 1)
        .ignore()
        .query(conn)
        .unwrap();
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

const REF_LEASES: &str = "{analytics-iam-system-analytics}:ref-leases";

/// The plain-client reference: claim 1000 → decode → ack, synchronously.
/// `sort_claim` swaps the Lua claim for pumphouse's `SORT … STORE` one.
fn reference(conn: &mut redis::Connection, n: u64, sort_claim: bool) -> Duration {
    let script = redis::Script::new(CLAIM);
    let start = Instant::now();
    let mut done = 0u64;
    let mut batch = 0u64;
    while done < n {
        let bkey = format!("{{{KEY}}}:ref:{batch}");
        batch += 1;
        let items: Vec<Vec<u8>> = if sort_claim {
            let (items,): (Vec<Vec<u8>>,) = redis::pipe()
                .atomic()
                .cmd("SORT")
                .arg(KEY)
                .arg("BY")
                .arg("nosort")
                .arg("LIMIT")
                .arg(0)
                .arg(1000)
                .arg("STORE")
                .arg(&bkey)
                .ignore()
                .cmd("LTRIM")
                .arg(KEY)
                .arg(1000)
                .arg(-1)
                .ignore()
                .cmd("ZADD")
                .arg(REF_LEASES)
                .arg(i64::MAX)
                .arg(&bkey)
                .ignore()
                .cmd("LRANGE")
                .arg(&bkey)
                .arg(0)
                .arg(-1)
                .query(conn)
                .unwrap();
            items
        } else {
            script
                .key(KEY)
                .key(REF_LEASES)
                .key(&bkey)
                .arg(1000)
                .arg(i64::MAX)
                .invoke(conn)
                .unwrap()
        };
        for it in &items {
            let r: RefIam = rmp_serde::from_slice(it).expect("decodes");
            std::hint::black_box(&r);
        }
        redis::pipe()
            .cmd("DEL")
            .arg(&bkey)
            .ignore()
            .cmd("ZREM")
            .arg(REF_LEASES)
            .arg(&bkey)
            .ignore()
            .query::<()>(conn)
            .unwrap();
        done += items.len() as u64;
        assert!(!items.is_empty(), "the reference ran out of records");
    }
    start.elapsed()
}

fn proc_status_kb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::Write;
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

fn metric(addr: &str, name: &str) -> u64 {
    pumphouse::demo::metric_value(&http_get(addr, "/metrics"), name) as u64
}

/// A running `pumphouse run`; killed with SIGTERM when dropped.
struct Pumphouse {
    child: Child,
    http: String,
    _dir: tempfile::TempDir,
}

impl Pumphouse {
    /// Starts pumphouse with `[source]` extra lines and `pumps` (TOML) and
    /// waits until it is ready.
    fn start(root: &Path, redis: &RedisServer, source: &str, pumps: &str) -> Pumphouse {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http = format!("127.0.0.1:{port}");
        let pumps = pumps.replace("@OUT@", &dir.path().display().to_string());
        let config = format!(
            "plugins_dir = \"{plugins}\"\n[source]\nredis_url = \"{url}\"\nformat = \"iam\"\n{source}\n[server]\nlisten = \"{http}\"\n{pumps}",
            plugins = root.join("target/plugins").display(),
            url = redis.url()
        );
        let cfg = dir.path().join("bench.toml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(root.join("target/release/pumphouse"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("PUMPHOUSE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("run target/release/pumphouse (scripts/build first)");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !http_get(&http, "/readyz").starts_with("HTTP/1.1 200") {
            assert!(Instant::now() < deadline, "pumphouse did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        Pumphouse {
            child,
            http,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn peak_rss_mb(&self) -> f64 {
        proc_status_kb(self.pid(), "VmHWM:") / 1024.0
    }

    fn rss_mb(&self) -> f64 {
        proc_status_kb(self.pid(), "VmRSS:") / 1024.0
    }

    fn out_dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Pumphouse {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// One memory pump: the WASM `match` filter, then the WASM `blackhole`.
fn bench_pump(name: &str) -> String {
    format!(
        r#"
[[pumps]]
name = "{name}"
plugin = "blackhole.wasm"
[[pumps.filters_chain]]
plugin = "match.wasm"
config = {{ field = "Effect", pattern = "^(allow|deny)$" }}
"#
    )
}

/// A bare WASM `blackhole` pump.
fn blackhole_pump(name: &str) -> String {
    format!("\n[[pumps]]\nname = \"{name}\"\nplugin = \"blackhole.wasm\"\n")
}

fn file_pump(name: &str, file: &str) -> String {
    format!(
        r#"
[[pumps]]
name = "{name}"
plugin = "file.wasm"
sandbox.dirs = [{{ host = "@OUT@", guest = "/out" }}]
config = {{ path = "/out/{file}" }}
"#
    )
}

const FAST_SOURCE: &str = "batch_size = 1000\npoll_interval = \"10ms\"";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Reference,
    ReferenceSort,
    AtLeastOnce,
    AtMostOnce,
    FanOut,
    FanOutFiltered,
}

/// Drains `n` staged records with one pumphouse setup; (seconds, peak RSS).
fn drain(
    root: &Path,
    redis: &RedisServer,
    conn: &mut redis::Connection,
    n: u64,
    v: Variant,
) -> (f64, f64) {
    let (source, pumps, sinks): (String, String, Vec<String>) = match v {
        Variant::AtLeastOnce => (
            FAST_SOURCE.into(),
            bench_pump("bench"),
            vec!["pumphouse_plugin_blackhole_records_total{pump=\"bench\"}".into()],
        ),
        Variant::AtMostOnce => (
            format!("{FAST_SOURCE}\ndelivery = \"at-most-once\""),
            bench_pump("bench"),
            vec!["pumphouse_plugin_blackhole_records_total{pump=\"bench\"}".into()],
        ),
        Variant::FanOut | Variant::FanOutFiltered => {
            let mut p = String::new();
            let mut sinks = Vec::new();
            for i in 1..=3 {
                p += &if v == Variant::FanOut {
                    blackhole_pump(&format!("bh{i}"))
                } else {
                    bench_pump(&format!("bh{i}"))
                };
                sinks.push(format!(
                    "pumphouse_plugin_blackhole_records_total{{pump=\"bh{i}\"}}"
                ));
            }
            p += &file_pump("file", "fanout.jsonl");
            sinks.push("pumphouse_pump_records_written_total{pump=\"file\"}".into());
            (FAST_SOURCE.into(), p, sinks)
        }
        _ => unreachable!(),
    };
    stage(conn, STAGING, n);
    let ph = Pumphouse::start(root, redis, &source, &pumps);
    let () = redis::cmd("RENAME")
        .arg(STAGING)
        .arg(KEY)
        .query(conn)
        .unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(600);
    if v == Variant::AtMostOnce {
        // Nothing stays in Redis: done when the sink has counted them all.
        while metric(&ph.http, &sinks[0]) < n {
            assert!(Instant::now() < deadline, "at-most-once drain stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    } else {
        // At-least-once: done when everything is acked.
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
            assert!(Instant::now() < deadline, "drain stalled");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let rss = ph.peak_rss_mb();
    // A run only counts if every sink really saw every record.
    for s in &sinks {
        let got = metric(&ph.http, s);
        assert_eq!(got, n, "{s}: {got} of {n} records");
    }
    if std::env::var_os("BENCH_ONLY").is_some() {
        // The quick look also shows where each pump's time went.
        let text = http_get(&ph.http, "/metrics");
        let lanes: Vec<String> = ["bench", "bh1", "file"]
            .iter()
            .filter_map(|p| {
                let sum = pumphouse::demo::metric_value(
                    &text,
                    &format!("pumphouse_pump_batch_seconds_sum{{pump=\"{p}\"}}"),
                );
                let count = pumphouse::demo::metric_value(
                    &text,
                    &format!("pumphouse_pump_batch_seconds_count{{pump=\"{p}\"}}"),
                );
                (count > 0.0).then(|| format!("{p} {:.2} ms/batch", sum / count * 1e3))
            })
            .collect();
        eprintln!("  {v:?}: {}", lanes.join(", "));
    }
    (secs, rss)
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn fmt_rate(v: &[f64]) -> String {
    let (m, lo, hi) = stats(v);
    format!("{m:.0} ({lo:.0}–{hi:.0})")
}

fn fmt_f(v: &[f64], digits: usize) -> String {
    let (m, lo, hi) = stats(v);
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A variant's short name, as in the per-run lines and `BENCH_ONLY`.
fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Reference => "ref",
        Variant::ReferenceSort => "refsort",
        Variant::AtLeastOnce => "alo",
        Variant::AtMostOnce => "amo",
        Variant::FanOut => "fanout",
        Variant::FanOutFiltered => "fanoutf",
    }
}

fn throughput(root: &Path, redis: &RedisServer, conn: &mut redis::Connection) {
    let n = env_or("BENCH_RECORDS", 1_000_000);
    let runs = env_or("BENCH_RUNS", 3) as usize;
    eprintln!(
        "throughput: {n} records × {runs} runs; load before: {}",
        loadavg()
    );
    let order = [
        Variant::Reference,
        Variant::AtLeastOnce,
        Variant::AtMostOnce,
        Variant::FanOut,
        Variant::ReferenceSort,
        Variant::FanOutFiltered,
    ];
    // `BENCH_ONLY=alo,fanout` (names as in the per-run line): a quick look
    // at some variants, printed per run, without the table.
    let only = std::env::var("BENCH_ONLY").ok();
    let wanted = |v: Variant| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|n| n.trim() == variant_name(v)))
    };
    let mut rates: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut ratios: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for run in 0..runs {
        let mut this: HashMap<&'static str, f64> = HashMap::new();
        for i in 0..order.len() {
            // Rotate the order so no variant always runs first.
            let v = order[(i + run) % order.len()];
            if !wanted(v) {
                continue;
            }
            let (name, secs) = match v {
                Variant::Reference | Variant::ReferenceSort => {
                    stage(conn, KEY, n);
                    let t = reference(conn, n, v == Variant::ReferenceSort);
                    (variant_name(v), t.as_secs_f64())
                }
                _ => {
                    let (secs, _) = drain(root, redis, conn, n, v);
                    (variant_name(v), secs)
                }
            };
            this.insert(name, n as f64 / secs);
            rates.entry(name).or_default().push(n as f64 / secs);
        }
        if only.is_some() {
            let mut line: Vec<String> = this.iter().map(|(k, r)| format!("{k} {r:.0}/s")).collect();
            line.sort();
            if let (Some(f), Some(a)) = (this.get("fanout"), this.get("alo")) {
                line.push(format!("fan-out ratio {:.2}", f / a));
            }
            eprintln!(
                "run {}/{runs}: {}; load {}",
                run + 1,
                line.join(", "),
                loadavg()
            );
            continue;
        }
        ratios
            .entry("alo")
            .or_default()
            .push(this["alo"] / this["ref"]);
        ratios
            .entry("amo")
            .or_default()
            .push(this["amo"] / this["ref"]);
        ratios
            .entry("refsort")
            .or_default()
            .push(this["refsort"] / this["ref"]);
        ratios
            .entry("fanout")
            .or_default()
            .push(this["fanout"] / this["alo"]);
        ratios
            .entry("fanoutf")
            .or_default()
            .push(this["fanoutf"] / this["alo"]);
        eprintln!(
            "run {}/{runs}: reference {:.0}/s, reference+SORT claim {:.0}/s, at-least-once {:.0}/s, at-most-once {:.0}/s, fan-out {:.0}/s, fan-out with filters {:.0}/s; load {}",
            run + 1,
            this["ref"],
            this["refsort"],
            this["alo"],
            this["amo"],
            this["fanout"],
            this["fanoutf"],
            loadavg()
        );
    }
    if only.is_some() {
        return;
    }
    let r = |k: &str| stats(&ratios[k]).0;
    println!();
    println!(
        "### Throughput ({n} iam records, {runs} runs, medians (min–max); load after: {})",
        loadavg()
    );
    println!();
    println!("| drain | records/s | ratio (per run, median (min–max)) | goal | |");
    println!("|---|---|---|---|---|");
    println!(
        "| reference: plain client, Lua claim 1000 → rmp-serde decode → ack | {} | 1.00 | | |",
        fmt_rate(&rates["ref"])
    );
    println!(
        "| 1. pumphouse at-least-once, WASM `match` + WASM `blackhole` | {} | {} × reference | ≥ 1.2 | {} |",
        fmt_rate(&rates["alo"]),
        fmt_f(&ratios["alo"], 2),
        verdict(r("alo") >= 1.2)
    );
    println!(
        "| 2. pumphouse at-most-once, same pump | {} | {} × reference | ≥ 1.5 | {} |",
        fmt_rate(&rates["amo"]),
        fmt_f(&ratios["amo"], 2),
        verdict(r("amo") >= 1.5)
    );
    println!(
        "| 3. pumphouse fan-out: 3 × `blackhole` + `file` (JSON Lines) | {} | {} × at-least-once (1.) | ≥ 0.6 | {} |",
        fmt_rate(&rates["fanout"]),
        fmt_f(&ratios["fanout"], 2),
        verdict(r("fanout") >= 0.6)
    );
    println!(
        "| (harder) fan-out: 3 × (`match` + `blackhole`) + `file` | {} | {} × at-least-once (1.) | — | |",
        fmt_rate(&rates["fanoutf"]),
        fmt_f(&ratios["fanoutf"], 2)
    );
    println!(
        "| (for comparison) plain client with pumphouse's `SORT … STORE` claim | {} | {} × reference | — | |",
        fmt_rate(&rates["refsort"]),
        fmt_f(&ratios["refsort"], 2)
    );
}

fn memory(root: &Path, redis: &RedisServer, conn: &mut redis::Connection) {
    let n = env_or("BENCH_MEMORY_RECORDS", 2_000_000);
    let runs = env_or("BENCH_RUNS", 3) as usize;
    eprintln!(
        "memory: {n}-record backlog × {runs} runs; load before: {}",
        loadavg()
    );
    let mut peaks = Vec::new();
    let mut rates = Vec::new();
    for run in 1..=runs {
        let (secs, peak) = drain(root, redis, conn, n, Variant::AtLeastOnce);
        eprintln!(
            "run {run}/{runs}: {:.0} records/s, peak RSS {peak:.1} MB",
            n as f64 / secs
        );
        peaks.push(peak);
        rates.push(n as f64 / secs);
    }
    println!();
    println!("### Memory ({n}-record backlog, at-least-once, `match` + `blackhole`, {runs} runs; load after: {})", loadavg());
    println!();
    println!("| measure | median (min–max) | goal | |");
    println!("|---|---|---|---|");
    println!(
        "| 5. peak RSS (VmHWM) draining the backlog | {} MB | ≤ 200 MB | {} |",
        fmt_f(&peaks, 1),
        verdict(stats(&peaks).0 <= 200.0)
    );
    println!("| drain rate | {} records/s | — | |", fmt_rate(&rates));
}

/// Percentile of sorted `v` (nearest rank).
fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[i.clamp(1, v.len()) - 1]
}

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// The `seq` in a JSON line of an iam record (inside `Request.context`).
fn seq_of(line: &str) -> Option<u64> {
    let at = line.find("seq")? + 3;
    let digits: String = line[at..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn latency(root: &Path, redis: &RedisServer, conn: &mut redis::Connection) {
    let secs = if std::env::var_os("PUMPHOUSE_SOAK").is_some() {
        600
    } else {
        env_or("BENCH_STEADY_SECS", 60)
    };
    let rate = env_or("BENCH_RATE", 20_000);
    let idle = env_or("BENCH_IDLE_SECS", 30);
    eprintln!(
        "latency: {rate} records/s for {secs} s, then {idle} s idle; load before: {}",
        loadavg()
    );
    let () = redis::pipe()
        .cmd("DEL")
        .arg(KEY)
        .ignore()
        .cmd("DEL")
        .arg(lease_key(KEY))
        .ignore()
        .query(conn)
        .unwrap();
    // Default settings: batch_size 1000, poll_interval 100 ms.
    let ph = Pumphouse::start(root, redis, "", &file_pump("file", "latency.jsonl"));
    let out = ph.out_dir().join("latency.jsonl");
    let push_log = ph.out_dir().join("push.log");
    let count = rate * secs;
    let mut producer = Command::new(root.join("target/release/pumphouse"))
        .args(["produce", "--format", "iam", "--quiet"])
        .args(["--count", &count.to_string(), "--rate", &rate.to_string()])
        .args(["--redis", &redis.url()])
        .arg("--push-log")
        .arg(&push_log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut seen: Vec<(u64, i64)> = Vec::with_capacity(count as usize);
    let mut rss: Vec<(f64, f64)> = Vec::new();
    let mut next_rss = Instant::now();
    let mut reader = loop {
        if let Ok(f) = std::fs::File::open(&out) {
            break std::io::BufReader::with_capacity(1 << 20, f);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(secs + 120);
    while (seen.len() as u64) < count {
        assert!(
            Instant::now() < deadline,
            "latency run stalled at {} of {count}",
            seen.len()
        );
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        if n > 0 && line.ends_with('\n') {
            if let Some(seq) = seq_of(&line) {
                seen.push((seq, unix_us()));
            }
            continue;
        }
        if n > 0 {
            // A partial line: put it back by seeking over it next time.
            reader.seek_relative(-(n as i64)).unwrap();
        }
        if Instant::now() >= next_rss {
            rss.push((start.elapsed().as_secs_f64(), ph.rss_mb()));
            next_rss += Duration::from_secs(1);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = producer.wait();
    // Push times per seq from the producer's log.
    let mut pushed: HashMap<u64, i64> = HashMap::with_capacity(count as usize);
    for l in std::io::BufReader::new(std::fs::File::open(&push_log).unwrap()).lines() {
        let l = l.unwrap();
        let f: Vec<i64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
        for s in f[0]..f[0] + f[1] {
            pushed.insert(s as u64, f[2]);
        }
    }
    // p99 per third of the run (median and min–max of the three), and over all.
    let mut all = Vec::with_capacity(seen.len());
    let mut thirds: [Vec<f64>; 3] = Default::default();
    for (seq, at) in &seen {
        let ms = (at - pushed[seq]) as f64 / 1000.0;
        all.push(ms);
        thirds[((*seq * 3) / count).min(2) as usize].push(ms);
    }
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99s: Vec<f64> = thirds
        .iter_mut()
        .map(|t| {
            t.sort_by(|a, b| a.partial_cmp(b).unwrap());
            pct(t, 99.0)
        })
        .collect();
    let p50s: Vec<f64> = thirds.iter().map(|t| pct(t, 50.0)).collect();
    // Soak: RSS after warm-up, first fifth against last fifth.
    let warm: Vec<f64> = rss
        .iter()
        .filter(|(t, _)| *t >= 10.0)
        .map(|(_, m)| *m)
        .collect();
    let fifth = (warm.len() / 5).max(1);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let (early, late) = if warm.len() >= 2 {
        (mean(&warm[..fifth]), mean(&warm[warm.len() - fifth..]))
    } else {
        (0.0, 0.0)
    };
    let peak_steady = ph.peak_rss_mb();
    // Idle CPU: the host alone, nothing produced.
    std::thread::sleep(Duration::from_secs(3));
    let windows = 3;
    let mut idle_pct = Vec::new();
    for _ in 0..windows {
        let c0 = cpu_seconds(ph.pid());
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(idle as f64 / windows as f64));
        let c1 = cpu_seconds(ph.pid());
        idle_pct.push(100.0 * (c1 - c0) / t0.elapsed().as_secs_f64());
    }
    println!();
    println!(
        "### Latency, soak and idle ({rate} records/s from `pumphouse produce --rate {rate}` for {secs} s, default settings, `file` pump; load after: {})",
        loadavg()
    );
    println!();
    println!("| measure | median of 3 thirds of the run (min–max) | goal | |");
    println!("|---|---|---|---|");
    println!(
        "| 6. p99 latency, pipeline sent → line in the sink's file | {} ms | ≤ 250 ms | {} |",
        fmt_f(&p99s, 1),
        verdict(stats(&p99s).0 <= 250.0)
    );
    println!("| p50 latency | {} ms | — | |", fmt_f(&p50s, 1));
    println!(
        "| 6. idle CPU of the host ({idle} s in {windows} windows) | {} % of a core | ≤ 2 % | {} |",
        fmt_f(&idle_pct, 2),
        verdict(stats(&idle_pct).0 <= 2.0)
    );
    println!(
        "| 5. RSS growth over the soak (mean of the last fifth − first fifth after 10 s) | {:+.1} MB ({early:.1} → {late:.1} MB, {} samples) | no growth | {} |",
        late - early,
        warm.len(),
        verdict(late - early <= 2.0)
    );
    println!(
        "| whole run: p50 / p99 / p99.9 / max latency | {:.1} / {:.1} / {:.1} / {:.1} ms; peak RSS {peak_steady:.1} MB | — | |",
        pct(&all, 50.0),
        pct(&all, 99.0),
        pct(&all, 99.9),
        all[all.len() - 1]
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s || a == "all");
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let redis = RedisServer::start().expect("redis-server");
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    if want("throughput") || want("memory") {
        let n = env_or("BENCH_RECORDS", 1_000_000);
        let m = if want("memory") {
            env_or("BENCH_MEMORY_RECORDS", 2_000_000)
        } else {
            0
        };
        fill_master(&mut conn, n.max(m));
    }
    if want("throughput") {
        throughput(&root, &redis, &mut conn);
    }
    if want("memory") {
        memory(&root, &redis, &mut conn);
    }
    if want("latency") {
        let _: () = redis::cmd("DEL").arg(MASTER).query(&mut conn).unwrap();
        latency(&root, &redis, &mut conn);
    }
}

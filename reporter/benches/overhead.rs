//! What analytics cost a service (run by `scripts/bench reporter`):
//!
//! 1. Throughput: the example hello-world service without the analytics
//!    layer, with it writing one `RPUSH` per record (`Target::List`, the
//!    default) and with it writing one `RPUSH` per batch
//!    (`Target::ListBatched`); plus, to isolate the request path, with a
//!    reporter that refuses every record at once (Redis unreachable,
//!    buffer of 1). Each variant listens on its own loopback port in this
//!    process; the reporters' workers share one runtime thread of their
//!    own (`analytics`), and all record into the same private
//!    redis-server. A load generator in a child process (this binary
//!    again) drives one variant at a time with keep-alive HTTP/1.1
//!    connections, bounded by a duration and a request count;
//!    `BENCH_RUNS` rounds, variants alternating. Printed: medians of
//!    requests/s, the cost `1 - with/without`, and CPU time per request
//!    of the service's threads, of the reporter's workers and of
//!    redis-server.
//! 2. `record()` latency: `BENCH_RECORD_CALLS` calls on a runtime worker
//!    while the reporter's workers drain to Redis, each call timed on its
//!    own with `Instant` (the timer's own cost is printed and included).
//!
//! Environment: `BENCH_SECONDS` (5), `BENCH_RUNS` (3), `BENCH_CONNECTIONS`
//! (32), `BENCH_MAX_REQUESTS` (5000000), `BENCH_RECORD_CALLS` (1000000).

#[path = "../examples/service/app.rs"]
mod app;
#[path = "../examples/service/load.rs"]
mod load;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use pumphouse::demo::RedisServer;
use pumphouse_reporter::{
    HttpRecord, HttpTyk, RecordError, Reporter, Stats, Target, Tyk, TykRecord, DEFAULT_BUFFER_SIZE,
};
use pumphouse_wire::Sampler;

/// Set in the child process that generates the load.
const CLIENT_ENV: &str = "PUMPHOUSE_BENCH_LOAD";
/// Thread names of the service's runtime and of the reporters' workers.
const SERVICE_THREAD: &str = "service";
const WORKER_THREAD: &str = "analytics";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64], decimals: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{:.d$} ({:.d$}–{:.d$})", median(v), min, max, d = decimals)
}

/// CPU seconds (user + system) a process has used so far, from
/// `/proc/<pid>/stat` (clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11)
        .zip(f.get(12))
        .map_or(0.0, |(u, s)| (u + s) as f64 / 100.0)
}

/// CPU seconds used so far by this process's threads named `name`.
fn thread_cpu_seconds(name: &str) -> f64 {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map(|e| cpu_seconds(&format!("self/task/{}", e.file_name().to_string_lossy())))
        .sum()
}

/// The pid of the redis-server listening on `port` (it names itself
/// `redis-server 127.0.0.1:<port>`).
fn redis_pid(port: u16) -> String {
    let title = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&title))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .expect("redis-server process")
}

/// The child: drives `addr` and prints `requests errors seconds`.
fn client(spec: &str) {
    let p: Vec<&str> = spec.split(' ').collect();
    let (addr, conns, secs, max): (SocketAddr, usize, u64, u64) = (
        p[0].parse().unwrap(),
        p[1].parse().unwrap(),
        p[2].parse().unwrap(),
        p[3].parse().unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let l = rt
        .block_on(load::run(addr, "/", conns, Duration::from_secs(secs), max))
        .unwrap();
    println!("{} {} {}", l.requests, l.errors, l.elapsed.as_secs_f64());
}

/// Starts the example service on a free loopback port.
async fn start_service(reporter: Option<Reporter<HttpRecord>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(app::serve(
        listener,
        app::app(reporter),
        std::future::pending(),
    ));
    addr
}

struct Variant {
    name: &'static str,
    addr: SocketAddr,
    reporter: Option<Reporter<HttpRecord>>,
    rates: Vec<f64>,
    /// CPU µs per request: the service's threads, the reporter's
    /// workers, redis-server.
    cpu: Vec<f64>,
    worker_cpu: Vec<f64>,
    redis_cpu: Vec<f64>,
    served: u64,
}

fn main() {
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        return client(&spec);
    }
    let seconds = env_or("BENCH_SECONDS", 5);
    let runs = env_or("BENCH_RUNS", 3) as usize;
    let conns = env_or("BENCH_CONNECTIONS", 32);
    let max_requests = env_or("BENCH_MAX_REQUESTS", 5_000_000);
    let calls = env_or("BENCH_RECORD_CALLS", 1_000_000) as usize;

    let redis = RedisServer::start().expect("redis-server");
    let redis_pid = redis_pid(redis.port());
    let service = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SERVICE_THREAD)
        .enable_all()
        .build()
        .unwrap();
    // The reporters' workers run on a thread of their own, so their CPU
    // time can be told apart from the requests'.
    let analytics = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(WORKER_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let unreachable = "redis://127.0.0.1:1/0".to_string();
    let mut variants = Vec::new();
    for (name, target, url, buffer) in [
        ("hello world, no analytics", None, "", 0),
        (
            "+ `AnalyticsLayer`, RPUSH per record (`List`, default)",
            Some(Target::List),
            redis.url().as_str(),
            DEFAULT_BUFFER_SIZE,
        ),
        (
            "+ `AnalyticsLayer`, RPUSH per batch (`ListBatched`)",
            Some(Target::ListBatched),
            redis.url().as_str(),
            DEFAULT_BUFFER_SIZE,
        ),
        (
            "+ `AnalyticsLayer`, request path only (every record refused)",
            Some(Target::List),
            unreachable.as_str(),
            1,
        ),
    ] {
        let reporter = target.map(|t| {
            Reporter::builder()
                .format(HttpTyk)
                .redis_url(url)
                .key(format!("bench:{name}"))
                .target(t)
                .buffer_size(buffer)
                .give_up_after(Duration::from_secs(1))
                .runtime(analytics.handle().clone())
                .build()
                .unwrap()
        });
        let addr = service.block_on(start_service(reporter.clone()));
        variants.push(Variant {
            name,
            addr,
            reporter,
            rates: Vec::new(),
            cpu: Vec::new(),
            worker_cpu: Vec::new(),
            redis_cpu: Vec::new(),
            served: 0,
        });
    }

    println!(
        "throughput: {conns} keep-alive connections from a child process, {seconds} s or {max_requests} requests per run, {runs} rounds, variants alternating"
    );
    let me = std::env::current_exe().unwrap();
    for round in 1..=runs {
        for v in &mut variants {
            let cpu0 = (
                thread_cpu_seconds(SERVICE_THREAD),
                thread_cpu_seconds(WORKER_THREAD),
                cpu_seconds(&redis_pid),
            );
            let out = Command::new(&me)
                .env(
                    CLIENT_ENV,
                    format!("{} {conns} {seconds} {max_requests}", v.addr),
                )
                .output()
                .expect("run the load generator");
            let cpu1 = (
                thread_cpu_seconds(SERVICE_THREAD),
                thread_cpu_seconds(WORKER_THREAD),
                cpu_seconds(&redis_pid),
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<f64> = text
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert!(
                out.status.success() && f.len() == 3,
                "load generator: {text}"
            );
            let (requests, errors, secs) = (f[0], f[1], f[2]);
            assert_eq!(errors, 0.0, "failed requests");
            v.rates.push(requests / secs);
            v.cpu.push((cpu1.0 - cpu0.0) * 1e6 / requests);
            v.worker_cpu.push((cpu1.1 - cpu0.1) * 1e6 / requests);
            v.redis_cpu.push((cpu1.2 - cpu0.2) * 1e6 / requests);
            v.served += requests as u64;
            println!(
                "  round {round}: {:>8.0} requests/s; CPU µs/request: service {:>5.1}, workers {:>4.1}, redis-server {:>4.1}  {}",
                requests / secs,
                v.cpu.last().unwrap(),
                v.worker_cpu.last().unwrap(),
                v.redis_cpu.last().unwrap(),
                v.name
            );
        }
    }

    let base = median(&variants[0].rates);
    println!();
    println!("| service | requests/s, median (min–max) | throughput cost | CPU µs/request: service threads | reporter workers | redis-server |");
    println!("|---|---|---|---|---|---|");
    for v in &variants {
        let cost = 1.0 - median(&v.rates) / base;
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            v.name,
            spread(&v.rates, 0),
            if v.reporter.is_some() {
                format!("{:.1} %", cost * 100.0)
            } else {
                "—".to_string()
            },
            spread(&v.cpu, 1),
            spread(&v.worker_cpu, 1),
            spread(&v.redis_cpu, 1),
        );
    }
    for v in &variants {
        let Some(reporter) = &v.reporter else {
            continue;
        };
        let s = service.block_on(reporter.shutdown());
        assert_eq!(s.accepted + s.dropped_full, v.served, "{}", v.name);
        assert_eq!(s.sent + s.lost(), s.accepted, "{}", v.name);
        println!(
            "{}: {} recorded, {} sent in {} pipelines, {} dropped (buffer full), {} lost",
            v.name,
            s.accepted,
            s.sent,
            s.batches,
            s.dropped_full,
            s.lost()
        );
    }

    let (lat, st, timer) = service.block_on(record_latency(redis.url(), calls));
    println!();
    println!(
        "record(): {calls} calls, each timed with Instant (the timer alone: p50 {timer} ns, included below)"
    );
    println!("| record() | p50 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|");
    println!("| ns | {} | {} | {} | {} |", lat[0], lat[1], lat[2], lat[3]);
    println!(
        "records: {} accepted, {} sent, {} refused (buffer full)",
        st.accepted, st.sent, st.dropped_full
    );
}

/// Times `calls` calls of `record()` on a runtime worker while the
/// reporter's workers drain to Redis. Returns p50, p99, p99.9 and max in
/// ns, the final stats and the timer's own p50.
async fn record_latency(url: String, calls: usize) -> ([u64; 4], Stats, u64) {
    tokio::spawn(async move {
        let reporter = Reporter::builder()
            .format(Tyk)
            .redis_url(url)
            .key("bench:record")
            .build()
            .unwrap();
        let mut sampler = Sampler::new(5);
        let pool: Vec<TykRecord> = (0..1000).map(|i| sampler.tyk(i, 1_763_700_000)).collect();
        let mut ns = Vec::with_capacity(calls);
        let mut timer = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let t = Instant::now();
            timer.push(t.elapsed().as_nanos() as u64);
        }
        for i in 0..calls {
            let r = pool[i % pool.len()].clone();
            let t = Instant::now();
            let res = reporter.record(r);
            ns.push(t.elapsed().as_nanos() as u64);
            assert!(!matches!(res, Err(RecordError::Closed(_))));
            // Calls come far faster than any service makes them: pause
            // (outside the timed calls) while the workers catch up, so the
            // buffer holds a few batches, as in a service that keeps up.
            if i % 1000 == 999 {
                while reporter.stats().buffered > 4 * 1000 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        let stats = reporter.shutdown().await;
        ns.sort_unstable();
        timer.sort_unstable();
        let q = |p: f64| ns[((ns.len() as f64 * p) as usize).min(ns.len() - 1)];
        (
            [q(0.50), q(0.99), q(0.999), *ns.last().unwrap()],
            stats,
            timer[timer.len() / 2],
        )
    })
    .await
    .unwrap()
}

//! What analytics cost a service (run by `scripts/bench reporter`):
//!
//! 1. Throughput: the example hello-world service without the analytics
//!    layer, with it writing one `RPUSH` per batch (`Target::ListBatched`,
//!    the default), with it writing one `RPUSH` per record
//!    (`Target::List`), and, to isolate the request path, with a reporter
//!    that refuses every record at once (Redis unreachable, buffer of 1).
//!    Each variant listens on its own loopback port in this process; the
//!    reporters' workers share one runtime thread of their own
//!    (`analytics`), and all record into the same private redis-server.
//!    A load generator in a child process (this binary again) drives one
//!    variant at a time with keep-alive HTTP/1.1 connections, bounded by
//!    a duration and a request count. `BENCH_RUNS` rounds; in each round
//!    every layout runs every variant, one after the other, forward in
//!    odd rounds and backward in even ones. Two layouts:
//!    - `shared`: nothing pinned; the service, the load generator and
//!      redis-server share every core;
//!    - `pinned`: this process (service and reporter) on CPU 0,
//!      redis-server and the load generator on CPU 1 (with `taskset`),
//!      as when Redis runs on another host. Needs 2 CPUs and `taskset`.
//!
//!    Printed per layout: medians of requests/s; the throughput cost
//!    `1 - with/without` and the CPU cost, each taken per round against
//!    that round's baseline, as median (min–max) over the rounds, so that
//!    the machine's drift from round to round cancels; and CPU time per
//!    request (from `/proc/.../schedstat`, in ns) of the service's threads, of the
//!    reporter's workers, of the whole service process, of redis-server
//!    and of the load generator. The service process's CPU per request
//!    against the baseline's is the bill analytics add, whatever the
//!    layout.
//! 2. Request path: the same router called in-process (no sockets), with
//!    and without the layer, its reporter sending to Redis meanwhile;
//!    CPU time of the calling thread per request, and of the reporter's
//!    workers per record.
//! 3. `record()` latency: `BENCH_RECORD_CALLS` calls on a runtime worker
//!    while the reporter's workers drain to Redis, each call timed on its
//!    own with `Instant` (the timer's own cost is printed and included).
//!
//! Environment: `BENCH_SECONDS` (3), `BENCH_RUNS` (6), `BENCH_CONNECTIONS`
//! (32), `BENCH_MAX_REQUESTS` (5000000), `BENCH_REQUEST` (`/`, the hello
//! world; `/page/{rows}` renders a table, a request with work in it) for
//! the throughput part, `BENCH_LAYOUTS` (`shared,pinned`),
//! `BENCH_BATCH_SIZE` (the crate's default), `BENCH_PATH_CALLS` (300000),
//! `BENCH_RECORD_CALLS` (1000000).

#[path = "../examples/service/app.rs"]
mod app;
#[path = "../examples/service/load.rs"]
mod load;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::Request;
use pumphouse::demo::RedisServer;
use pumphouse_reporter::{
    HttpRecord, HttpTyk, RecordError, Reporter, Stats, Target, Tyk, TykRecord, DEFAULT_BATCH_SIZE,
    DEFAULT_BUFFER_SIZE,
};
use pumphouse_wire::Sampler;
use tower_service::Service;

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
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.d$} ({:.d$}–{:.d$})", median(v), min, max, d = decimals)
}

/// Fractions as percentages: median (min–max).
fn percent_spread(v: &[f64]) -> String {
    let p: Vec<f64> = v.iter().map(|x| x * 100.0).collect();
    let min = p.iter().copied().fold(f64::INFINITY, f64::min);
    let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.1} % ({min:.1}–{max:.1})", median(&p))
}

/// CPU time (ns) a thread has run, from `/proc/<task>/schedstat`.
fn schedstat_ns(task: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{task}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (ns) of the threads of process `pid` whose name passes
/// `keep`.
fn threads_ns(pid: &str, keep: impl Fn(&str) -> bool) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| keep(c.trim())))
        .map(|e| schedstat_ns(&format!("{pid}/task/{}", e.file_name().to_string_lossy())))
        .sum()
}

/// CPU time (ns) so far of this process's threads named `name`.
fn named_ns(name: &str) -> u64 {
    threads_ns("self", |c| c == name)
}

/// CPU time (ns) so far of every thread of process `pid`.
fn process_ns(pid: &str) -> u64 {
    threads_ns(pid, |_| true)
}

/// The calling thread's CPU time (ns). Yields first, so that the kernel
/// brings the running thread's count up to date.
fn my_ns() -> u64 {
    std::thread::yield_now();
    schedstat_ns("thread-self")
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

/// The child: drives `addr` and prints `requests errors seconds cpu_ns`.
fn client(spec: &str) {
    let p: Vec<&str> = spec.split(' ').collect();
    let (addr, conns, secs, max, path): (SocketAddr, usize, u64, u64, &str) = (
        p[0].parse().unwrap(),
        p[1].parse().unwrap(),
        p[2].parse().unwrap(),
        p[3].parse().unwrap(),
        p[4],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cpu0 = process_ns("self");
    let l = rt
        .block_on(load::run(addr, path, conns, Duration::from_secs(secs), max))
        .unwrap();
    let cpu = process_ns("self") - cpu0;
    println!(
        "{} {} {} {cpu}",
        l.requests,
        l.errors,
        l.elapsed.as_secs_f64()
    );
}

/// The reporters' batch size (`BENCH_BATCH_SIZE`, default the crate's).
fn batch_size() -> usize {
    env_or("BENCH_BATCH_SIZE", DEFAULT_BATCH_SIZE as u64) as usize
}

/// Where the processes run.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// Nothing pinned: all share every core.
    Shared,
    /// This process on CPU 0; redis-server and the load generator on CPU 1.
    Pinned,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Shared => "shared",
            Layout::Pinned => "pinned",
        }
    }

    /// CPUs of (this process, redis-server and the load generator).
    fn cpus(self) -> (&'static str, &'static str) {
        match self {
            Layout::Shared => ("0-1", "0-1"),
            Layout::Pinned => ("0", "1"),
        }
    }

    /// Pins every thread of this process and of redis-server.
    fn apply(self, redis_pid: &str) -> bool {
        let (me, others) = self.cpus();
        let pin = |cpus: &str, pid: &str| {
            Command::new("taskset")
                .args(["-a", "-p", "-c", cpus, pid])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        pin(me, &std::process::id().to_string()) && pin(others, redis_pid)
    }
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
    served: u64,
}

/// One layout's results for one variant, a value per round.
#[derive(Default)]
struct Runs {
    rates: Vec<f64>,
    /// CPU ns per request: the service's threads, the reporter's workers,
    /// the whole service process, redis-server, the load generator.
    service: Vec<f64>,
    workers: Vec<f64>,
    process: Vec<f64>,
    redis: Vec<f64>,
    load: Vec<f64>,
    /// The service process's CPU time over the run's wall time (1 = one
    /// core busy).
    busy: Vec<f64>,
}

fn main() {
    if let Ok(spec) = std::env::var(CLIENT_ENV) {
        return client(&spec);
    }
    let seconds = env_or("BENCH_SECONDS", 3);
    let runs = env_or("BENCH_RUNS", 6).max(1) as usize;
    let conns = env_or("BENCH_CONNECTIONS", 32);
    let max_requests = env_or("BENCH_MAX_REQUESTS", 5_000_000);
    let path_calls = env_or("BENCH_PATH_CALLS", 300_000) as usize;
    let calls = env_or("BENCH_RECORD_CALLS", 1_000_000) as usize;
    let request = std::env::var("BENCH_REQUEST").unwrap_or_else(|_| "/".into());
    assert!(
        request.starts_with('/') && !request.contains(char::is_whitespace),
        "BENCH_REQUEST must be a path without spaces, e.g. /page/100"
    );
    let layouts = std::env::var("BENCH_LAYOUTS").unwrap_or_else(|_| "shared,pinned".into());

    let redis = RedisServer::start().expect("redis-server");
    let redis_pid = redis_pid(redis.port());
    let mut layouts: Vec<Layout> = [Layout::Shared, Layout::Pinned]
        .into_iter()
        .filter(|l| layouts.split(',').any(|n| n.trim() == l.name()))
        .collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if layouts.contains(&Layout::Pinned) && (cpus < 2 || !Layout::Shared.apply(&redis_pid)) {
        println!("pinned layout not measured: needs 2 CPUs and taskset");
        layouts.retain(|l| *l != Layout::Pinned);
    }
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
        ("the service, no analytics", None, "", 0),
        (
            "+ `AnalyticsLayer`, RPUSH per batch (`ListBatched`, default)",
            Some(Target::ListBatched),
            redis.url().as_str(),
            DEFAULT_BUFFER_SIZE,
        ),
        (
            "+ `AnalyticsLayer`, RPUSH per record (`List`)",
            Some(Target::List),
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
                // The refusing reporter keeps the default batch size, so
                // its one record never fills a batch and wakes no worker.
                .batch_size(if buffer > 1 {
                    batch_size()
                } else {
                    DEFAULT_BATCH_SIZE
                })
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
            served: 0,
        });
    }

    println!(
        "throughput: GET {request} on {conns} keep-alive connections from a child process, {seconds} s or {max_requests} requests per run, {runs} rounds; each round runs every layout ({}), variants alternating",
        layouts.iter().map(|l| l.name()).collect::<Vec<_>>().join(", ")
    );
    let mut results: Vec<Vec<Runs>> = layouts
        .iter()
        .map(|_| variants.iter().map(|_| Runs::default()).collect())
        .collect();
    let me = std::env::current_exe().unwrap();
    let mut redis_conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    for round in 1..=runs {
        for (li, &layout) in layouts.iter().enumerate() {
            assert!(layout.apply(&redis_pid), "taskset failed");
            // Forward in odd rounds, backward in even ones: a drift in
            // the machine's speed weighs on both ends of the order alike.
            let order: Vec<usize> = if round % 2 == 1 {
                (0..variants.len()).collect()
            } else {
                (0..variants.len()).rev().collect()
            };
            for &vi in &order {
                let (v, r) = (&mut variants[vi], &mut results[li][vi]);
                let cpu0 = (
                    named_ns(SERVICE_THREAD),
                    named_ns(WORKER_THREAD),
                    process_ns("self"),
                    process_ns(&redis_pid),
                );
                let out = Command::new("taskset")
                    .args(["-c", layout.cpus().1])
                    .arg(&me)
                    .env(
                        CLIENT_ENV,
                        format!("{} {conns} {seconds} {max_requests} {request}", v.addr),
                    )
                    .output()
                    .expect("run the load generator");
                let cpu1 = (
                    named_ns(SERVICE_THREAD),
                    named_ns(WORKER_THREAD),
                    process_ns("self"),
                    process_ns(&redis_pid),
                );
                let text = String::from_utf8_lossy(&out.stdout);
                let f: Vec<f64> = text
                    .split_whitespace()
                    .map(|x| x.parse().unwrap())
                    .collect();
                assert!(
                    out.status.success() && f.len() == 4,
                    "load generator: {text}"
                );
                let (requests, errors, secs, load_ns) = (f[0], f[1], f[2], f[3]);
                assert_eq!(errors, 0.0, "failed requests");
                let per = |a: u64, b: u64| (b - a) as f64 / requests;
                r.rates.push(requests / secs);
                r.service.push(per(cpu0.0, cpu1.0));
                r.workers.push(per(cpu0.1, cpu1.1));
                r.process.push(per(cpu0.2, cpu1.2));
                r.redis.push(per(cpu0.3, cpu1.3));
                r.load.push(load_ns / requests);
                r.busy.push((cpu1.2 - cpu0.2) as f64 / 1e9 / secs);
                v.served += requests as u64;
                println!(
                    "  round {round} {:>6}: {:>7.0} requests/s; CPU ns/request: service {:>5.0}, workers {:>4.0}, process {:>5.0} ({:.2} cores), redis {:>4.0}, load {:>5.0}  {}",
                    layout.name(),
                    requests / secs,
                    r.service.last().unwrap(),
                    r.workers.last().unwrap(),
                    r.process.last().unwrap(),
                    r.busy.last().unwrap(),
                    r.redis.last().unwrap(),
                    r.load.last().unwrap(),
                    v.name
                );
                // Keep Redis's memory flat, as a pump draining the list
                // would: wait for the workers, then drop the list.
                if let Some(rep) = &v.reporter {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while rep.stats().buffered > 0 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _: () = redis::cmd("UNLINK")
                        .arg(rep.key())
                        .query(&mut redis_conn)
                        .unwrap();
                }
            }
        }
    }
    Layout::Shared.apply(&redis_pid);

    for (li, layout) in layouts.iter().enumerate() {
        let runs = &results[li];
        // Each round's variant against the same round's baseline.
        let paired = |r: &Runs, f: fn(&Runs, &Runs, usize) -> f64| -> Vec<f64> {
            (0..r.rates.len()).map(|i| f(r, &runs[0], i)).collect()
        };
        println!();
        println!(
            "layout {}: service process on CPUs {}, redis-server and load generator on CPUs {}",
            layout.name(),
            layout.cpus().0,
            layout.cpus().1
        );
        println!("| service | requests/s, median (min–max) | throughput cost | CPU ns/request: service process (cores busy) | of which reporter workers | CPU cost | redis-server | load generator |");
        println!("|---|---|---|---|---|---|---|---|");
        for (v, r) in variants.iter().zip(runs) {
            let cost = |f: fn(&Runs, &Runs, usize) -> f64| {
                if v.reporter.is_some() {
                    percent_spread(&paired(r, f))
                } else {
                    "—".to_string()
                }
            };
            println!(
                "| {} | {} | {} | {} ({:.2}) | {} | {} | {} | {} |",
                v.name,
                spread(&r.rates, 0),
                cost(|r, base, i| 1.0 - r.rates[i] / base.rates[i]),
                spread(&r.process, 0),
                median(&r.busy),
                spread(&r.workers, 0),
                cost(|r, base, i| r.process[i] / base.process[i] - 1.0),
                spread(&r.redis, 0),
                spread(&r.load, 0),
            );
        }
    }
    println!();
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

    let path = request_path(&service, &analytics, &redis.url(), path_calls, runs);
    println!();
    println!(
        "request path: the router called in-process {path_calls} times per round, {runs} rounds alternating, this process on CPUs 0-1"
    );
    println!("| CPU ns | median (min–max) |");
    println!("|---|---|");
    println!(
        "| per request, router without the layer | {} |",
        spread(&path.without, 0)
    );
    println!(
        "| per request, router with the layer | {} |",
        spread(&path.with, 0)
    );
    println!(
        "| per request, the layer and `record()` (difference) | {:.0} |",
        median(&path.with) - median(&path.without)
    );
    println!(
        "| per record, reporter workers (encode and send, `ListBatched`) | {} |",
        spread(&path.workers, 0)
    );
    println!(
        "| per record, in all | {:.0} |",
        median(&path.with) - median(&path.without) + median(&path.workers)
    );

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

/// CPU ns per call of the router without and with the layer, and of the
/// reporter's workers per record, one value per round.
struct PathCost {
    without: Vec<f64>,
    with: Vec<f64>,
    workers: Vec<f64>,
}

/// Calls the example router in-process (one request at a time on this
/// thread, no sockets): without the layer, then with it, alternating for
/// `rounds` rounds. The layer's reporter sends to Redis on the
/// `analytics` runtime meanwhile; its CPU is counted per record once it
/// has sent everything.
fn request_path(
    service: &tokio::runtime::Runtime,
    analytics: &tokio::runtime::Runtime,
    url: &str,
    calls: usize,
    rounds: usize,
) -> PathCost {
    let reporter = Reporter::builder()
        .format(HttpTyk)
        .redis_url(url)
        .key("bench:request-path")
        .target(Target::ListBatched)
        .batch_size(batch_size())
        .runtime(analytics.handle().clone())
        .build()
        .unwrap();
    // Finished with `with_state`, as `axum::serve` finishes a router:
    // otherwise axum applies the layers again for every request.
    let mut plain = app::app(None).with_state(());
    let mut layered = app::app(Some(reporter.clone())).with_state(());
    let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let request = || {
        Request::get("/")
            .header("host", "localhost")
            .header("user-agent", "pumphouse-load/1")
            .extension(ConnectInfo(client))
            .body(Body::empty())
            .unwrap()
    };
    let mut cost = PathCost {
        without: Vec::new(),
        with: Vec::new(),
        workers: Vec::new(),
    };
    let _guard = service.enter();
    let run = |router: &mut axum::Router| {
        let t0 = my_ns();
        for _ in 0..calls {
            let fut = router.call(request());
            let resp = futures_lite(fut);
            assert!(resp.is_ok_and(|r| r.status().is_success()));
        }
        (my_ns() - t0) as f64 / calls as f64
    };
    for _ in 0..rounds {
        cost.without.push(run(&mut plain));
        let sent0 = reporter.stats().sent;
        let w0 = named_ns(WORKER_THREAD);
        cost.with.push(run(&mut layered));
        let deadline = Instant::now() + Duration::from_secs(30);
        while reporter.stats().buffered > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let sent = reporter.stats().sent - sent0;
        cost.workers
            .push((named_ns(WORKER_THREAD) - w0) as f64 / sent.max(1) as f64);
    }
    let stats = service.block_on(reporter.shutdown());
    assert_eq!(stats.accepted, stats.sent, "{stats:?}");
    cost
}

/// Polls a future that completes without waiting (the example router's
/// `GET /`) to its end on this thread.
fn futures_lite<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
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

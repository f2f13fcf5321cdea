//! Scale-out over Redis Cluster (run by `scripts/bench cluster`): the drain
//! throughput of Tyk's 10 shards from one private redis-server and from a
//! private 3-node cluster (`--cluster-enabled yes`, joined with `redis-cli
//! --cluster create`), both started here on free loopback ports. On each
//! topology, in rotating order within each run:
//!
//! - the reference: plain synchronous Rust clients, one thread per shard,
//!   each connected straight to the node serving its shard (no routing),
//!   looping over pumphouse's own claim (`SORT … STORE` of 1000 in a
//!   transaction) → a MessagePack decode of every record → ack (`DEL` +
//!   `ZREM`);
//! - one pumphouse instance (`shards = 10`, WASM `blackhole`);
//! - two pumphouse instances with the same config, sharing the shards.
//!
//! A run is done when every shard and its lease set are empty; each
//! pumphouse run only counts if the instances' sinks together counted
//! every record exactly once. Ratios are against the reference on the same
//! topology in the same run, and cluster against single Redis.
//!
//! Environment: `BENCH_CLUSTER_RECORDS` (200000, spread evenly over the
//! shards), `BENCH_CLUSTER_RUNS` (3).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pumphouse::demo::RedisServer;
use pumphouse::produce::{encode_tyk, Sampler};
use pumphouse::record::TYK_KEY;
use pumphouse::source::redis::lease_key;

const SHARDS: usize = 10;
const BATCH: u64 = 1000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn shard(i: usize) -> String {
    format!("{TYK_KEY}_{i}")
}

/// Keys in the shard's slot (its hash tag), so `COPY` and `RENAME` work on
/// a cluster too.
fn master_key(shard: &str) -> String {
    format!("{{{shard}}}:bench:master")
}

fn staging_key(shard: &str) -> String {
    format!("{{{shard}}}:bench:staging")
}

fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free loopback port whose cluster bus port (+10000) is free too.
fn node_port() -> u16 {
    loop {
        let p = free_port();
        if p <= u16::MAX - 10_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// Three cluster primaries, no replicas; killed when dropped.
struct Cluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| node_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let work = dir.path().join(port.to_string());
                std::fs::create_dir_all(&work).unwrap();
                Command::new("redis-server")
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes"])
                    .args(["--cluster-config-file", "nodes.conf"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&work)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("run redis-server")
            })
            .collect();
        let cluster = Cluster {
            nodes,
            ports,
            _dir: dir,
        };
        for &port in &cluster.ports {
            wait(Duration::from_secs(20), "a cluster node up", || {
                redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
                    .ok()?
                    .get_connection_with_timeout(Duration::from_secs(1))
                    .ok()
                    .map(|_| ())
            });
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for port in &cluster.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for &port in &cluster.ports {
            wait(Duration::from_secs(30), "cluster_state:ok", || {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connect(port))
                    .ok()?;
                info.contains("cluster_state:ok").then_some(())
            });
        }
        cluster
    }

    fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.ports[0], self.ports[1]
        )
    }

    /// The port of the primary serving `key`.
    fn owner(&self, key: &str) -> u16 {
        let mut c = connect(self.ports[0]);
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut c)
            .unwrap();
        // Each: first slot, last slot, [ip, port, id, …] of the primary, replicas.
        let ranges: Vec<Vec<redis::Value>> =
            redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
        ranges
            .into_iter()
            .find_map(|r| {
                let first: i64 = redis::from_redis_value(r.first()?.clone()).ok()?;
                let last: i64 = redis::from_redis_value(r.get(1)?.clone()).ok()?;
                let node: Vec<redis::Value> = redis::from_redis_value(r.get(2)?.clone()).ok()?;
                let port: u16 = redis::from_redis_value(node.get(1)?.clone()).ok()?;
                (first..=last).contains(&slot).then_some(port)
            })
            .unwrap_or_else(|| panic!("no node serves slot {slot}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

fn wait<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where the shards are: the URL pumphouse gets and, per shard, the port
/// of the server that holds it.
struct Topology {
    name: &'static str,
    url: String,
    owners: Vec<u16>,
}

impl Topology {
    fn conn(&self, i: usize) -> redis::Connection {
        connect(self.owners[i])
    }

    /// Fills each shard's master list once with `per_shard` Tyk records.
    fn fill(&self, per_shard: u64) {
        let now = 1_763_700_000;
        for i in 0..SHARDS {
            let mut c = self.conn(i);
            let master = master_key(&shard(i));
            let _: () = redis::cmd("DEL").arg(&master).query(&mut c).unwrap();
            let mut s = Sampler::new(i as u64 + 1);
            let mut sent = 0;
            while sent < per_shard {
                let k = 2000.min(per_shard - sent);
                let mut pipe = redis::pipe();
                for j in 0..k {
                    pipe.cmd("RPUSH")
                        .arg(&master)
                        .arg(encode_tyk(&s.tyk(sent + j, now)))
                        .ignore();
                }
                pipe.query::<()>(&mut c).unwrap();
                sent += k;
            }
        }
    }

    /// Copies each master list to its staging key (server-side).
    fn stage(&self) {
        for i in 0..SHARDS {
            let key = shard(i);
            let () = redis::pipe()
                .cmd("DEL")
                .arg(&key)
                .arg(staging_key(&key))
                .ignore()
                .cmd("COPY")
                .arg(master_key(&key))
                .arg(staging_key(&key))
                .ignore()
                .query(&mut self.conn(i))
                .unwrap();
        }
    }

    /// Puts every staged list in place at once (as far as ten `RENAME`s go).
    fn release(&self) {
        for i in 0..SHARDS {
            let key = shard(i);
            let () = redis::cmd("RENAME")
                .arg(staging_key(&key))
                .arg(&key)
                .query(&mut self.conn(i))
                .unwrap();
        }
    }

    /// True when every shard and its lease set are empty.
    fn drained(&self, conns: &mut [redis::Connection]) -> bool {
        conns.iter_mut().enumerate().all(|(i, c)| {
            let key = shard(i);
            let (len, leased): (u64, u64) = redis::pipe()
                .cmd("LLEN")
                .arg(&key)
                .cmd("ZCARD")
                .arg(lease_key(&key))
                .query(c)
                .unwrap();
            len == 0 && leased == 0
        })
    }
}

/// One plain client draining shard `i`: claim 1000 → decode → ack.
fn plain_client(mut conn: redis::Connection, i: usize) -> u64 {
    let key = shard(i);
    let leases = format!("{{{key}}}:ref-leases");
    let mut done = 0u64;
    for batch in 0.. {
        let bkey = format!("{{{key}}}:ref:{batch}");
        let (items,): (Vec<Vec<u8>>,) = redis::pipe()
            .atomic()
            .cmd("SORT")
            .arg(&key)
            .arg("BY")
            .arg("nosort")
            .arg("LIMIT")
            .arg(0)
            .arg(BATCH)
            .arg("STORE")
            .arg(&bkey)
            .ignore()
            .cmd("LTRIM")
            .arg(&key)
            .arg(BATCH)
            .arg(-1)
            .ignore()
            .cmd("ZADD")
            .arg(&leases)
            .arg(i64::MAX)
            .arg(&bkey)
            .ignore()
            .cmd("LRANGE")
            .arg(&bkey)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        if items.is_empty() {
            break;
        }
        for it in &items {
            let v = rmpv::decode::read_value(&mut it.as_slice()).expect("decodes");
            std::hint::black_box(&v);
        }
        redis::pipe()
            .cmd("DEL")
            .arg(&bkey)
            .ignore()
            .cmd("ZREM")
            .arg(&leases)
            .arg(&bkey)
            .ignore()
            .query::<()>(&mut conn)
            .unwrap();
        done += items.len() as u64;
    }
    done
}

fn ceiling(t: &Topology, n: u64) -> f64 {
    t.stage();
    let conns: Vec<_> = (0..SHARDS).map(|i| t.conn(i)).collect();
    t.release();
    let start = Instant::now();
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| std::thread::spawn(move || plain_client(c, i)))
        .collect();
    let done: u64 = threads.into_iter().map(|h| h.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(done, n, "the plain clients drained {done} of {n}");
    secs
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

const SINK: &str = "pumphouse_plugin_blackhole_records_total{pump=\"bench\"}";

/// A running `pumphouse run` on `url`; SIGTERM when dropped.
struct Pumphouse {
    child: Child,
    http: String,
    _dir: tempfile::TempDir,
}

impl Pumphouse {
    fn start(root: &Path, url: &str) -> Pumphouse {
        let dir = tempfile::tempdir().unwrap();
        let http = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "plugins_dir = \"{plugins}\"\n\
             [source]\nredis_url = \"{url}\"\nformat = \"tyk\"\nshards = {SHARDS}\n\
             batch_size = {BATCH}\npoll_interval = \"10ms\"\n\
             [server]\nlisten = \"{http}\"\n\
             [[pumps]]\nname = \"bench\"\nplugin = \"blackhole.wasm\"\n",
            plugins = root.join("target/plugins").display(),
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
        wait(Duration::from_secs(60), "pumphouse ready", || {
            http_get(&http, "/readyz")
                .starts_with("HTTP/1.1 200")
                .then_some(())
        });
        Pumphouse {
            child,
            http,
            _dir: dir,
        }
    }

    fn delivered(&self) -> u64 {
        pumphouse::demo::metric_value(&http_get(&self.http, "/metrics"), SINK) as u64
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

fn pumphouse_drain(root: &Path, t: &Topology, n: u64, instances: usize) -> f64 {
    t.stage();
    let hosts: Vec<_> = (0..instances)
        .map(|_| Pumphouse::start(root, &t.url))
        .collect();
    let mut conns: Vec<_> = (0..SHARDS).map(|i| t.conn(i)).collect();
    t.release();
    let start = Instant::now();
    wait(Duration::from_secs(600), "the shards drained", || {
        t.drained(&mut conns).then_some(())
    });
    let secs = start.elapsed().as_secs_f64();
    let per_host: Vec<u64> = hosts.iter().map(Pumphouse::delivered).collect();
    assert_eq!(
        per_host.iter().sum::<u64>(),
        n,
        "{}: the sinks of {instances} instance(s) counted {per_host:?} of {n} records",
        t.name
    );
    if instances > 1 {
        assert!(
            per_host.iter().all(|&d| d > 0),
            "{}: an instance took no part: {per_host:?}",
            t.name
        );
    }
    secs
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    Ceiling,
    One,
    Two,
}

const VARIANTS: [Variant; 3] = [Variant::Ceiling, Variant::One, Variant::Two];

fn label(v: Variant) -> &'static str {
    match v {
        Variant::Ceiling => "reference: plain clients, a thread per shard",
        Variant::One => "pumphouse, 1 instance",
        Variant::Two => "pumphouse, 2 instances",
    }
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn fmt(v: &[f64], digits: usize) -> String {
    let (m, lo, hi) = stats(v);
    format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let per_shard = env_or("BENCH_CLUSTER_RECORDS", 200_000) / SHARDS as u64;
    let n = per_shard * SHARDS as u64;
    let runs = env_or("BENCH_CLUSTER_RUNS", 3) as usize;

    let single = RedisServer::start().expect("redis-server");
    let cluster = Cluster::start();
    let topologies = [
        Topology {
            name: "single Redis",
            url: single.url(),
            owners: vec![single.port(); SHARDS],
        },
        Topology {
            name: "3-node cluster",
            url: cluster.url(),
            owners: (0..SHARDS).map(|i| cluster.owner(&shard(i))).collect(),
        },
    ];
    let mut per_node = std::collections::BTreeMap::<u16, usize>::new();
    for &p in &topologies[1].owners {
        *per_node.entry(p).or_default() += 1;
    }
    eprintln!(
        "cluster: {n} Tyk records over {SHARDS} shards × {runs} runs; shards per cluster node: \
         {:?}; load before: {}",
        per_node.values().collect::<Vec<_>>(),
        loadavg()
    );
    for t in &topologies {
        t.fill(per_shard);
    }

    // rates[topology][variant][run], records/s
    let mut rates = vec![vec![Vec::new(); VARIANTS.len()]; topologies.len()];
    for run in 0..runs {
        for k in 0..VARIANTS.len() {
            let v = VARIANTS[(k + run) % VARIANTS.len()];
            let vi = VARIANTS.iter().position(|x| *x == v).unwrap();
            for (ti, t) in topologies.iter().enumerate() {
                let secs = match v {
                    Variant::Ceiling => ceiling(t, n),
                    Variant::One => pumphouse_drain(&root, t, n, 1),
                    Variant::Two => pumphouse_drain(&root, t, n, 2),
                };
                let rate = n as f64 / secs;
                eprintln!(
                    "  run {}: {:<15} {:<45} {rate:>9.0} records/s",
                    run + 1,
                    t.name,
                    label(v)
                );
                rates[ti][vi].push(rate);
            }
        }
    }

    println!();
    println!("### Redis Cluster scale-out: {n} Tyk records over {SHARDS} shards, {runs} runs");
    println!();
    println!(
        "| drain | single Redis, records/s | × reference | 3-node cluster, records/s | × reference | cluster ÷ single |"
    );
    println!("|---|---|---|---|---|---|");
    let ratio =
        |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| x / y).collect() };
    for (vi, v) in VARIANTS.iter().enumerate() {
        let s = &rates[0][vi];
        let c = &rates[1][vi];
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            label(*v),
            fmt(s, 0),
            fmt(&ratio(s, &rates[0][0]), 2),
            fmt(c, 0),
            fmt(&ratio(c, &rates[1][0]), 2),
            fmt(&ratio(c, s), 2),
        );
    }
    println!();
    println!(
        "two instances ÷ one: single Redis {}, cluster {}",
        fmt(&ratio(&rates[0][2], &rates[0][1]), 2),
        fmt(&ratio(&rates[1][2], &rates[1][1]), 2)
    );
    eprintln!("load after: {}", loadavg());
}

//! Redis Cluster: three `--cluster-enabled yes` redis-servers on free
//! loopback ports, joined with `redis-cli --cluster create`.
//! - Tyk records over 10 shards, pushed by `pumphouse produce` while two
//!   hosts drain them and `redis-cli --cluster reshard` moves the slot of
//!   a shard to another node, then another shard's slot is migrated by
//!   hand and held migrating for 1.5 s with the shard moved ahead: every
//!   record arrives, no claim is left on any node, both hosts took part,
//!   claims refused meanwhile were sent again (`ASK`/`TRYAGAIN` counted
//!   in `pumphouse_redis_redirects_total`); duplicates are counted and
//!   printed.
//! - A stream source and an `aggregate` pump, whose state is in `kv`, on
//!   the cluster: the windows survive a host restart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pumphouse::record::TYK_KEY;

use crate::aggregate::{aggregate_pump, received, stored_hits, tyk_expected, FUTURE};
use crate::harness::*;
use crate::redis_prod::{Pki, PUMPHOUSE_USER};
use crate::sandbox::Recorder;
use crate::sink_servers::ServerProcess;

const WAIT: Duration = Duration::from_secs(120);

/// A free loopback port whose cluster bus port (+10000) is free too.
fn node_port() -> u16 {
    loop {
        let p = free_port();
        if p <= u16::MAX - 10_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

fn connect(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()
}

/// One slot range of `CLUSTER SLOTS`: first and last slot, the primary's
/// port and node id.
#[derive(Debug, Clone)]
struct Range {
    first: u16,
    last: u16,
    port: u16,
    id: String,
}

/// Three primaries, no replicas.
struct Cluster {
    _nodes: Vec<ServerProcess>,
    /// The plain-TCP port of each node, for the test's own looks.
    ports: Vec<u16>,
    /// With TLS: each node's TLS port (the cluster bus is TLS too), which
    /// pumphouse is given.
    tls_ports: Option<Vec<u16>>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(None)
    }

    /// With `pki`: every node also listens for TLS (mutual TLS, the test
    /// CA), and the nodes talk to each other over TLS (`tls-cluster yes`;
    /// the bus port is then the TLS port + 10000). The cluster is made
    /// over TLS with `redis-cli --tls`.
    fn start_with(pki: Option<&Pki>) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        if let Some(pki) = pki {
            // The nodes are TLS clients of each other on the bus, and
            // verify each other's certificates: one for both ends.
            pki.leaf(
                "node",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
            );
        }
        let tls_ports: Option<Vec<u16>> = pki.map(|_| (0..3).map(|_| node_port()).collect());
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                if pki.is_some() {
                    free_port()
                } else {
                    node_port()
                }
            })
            .collect();
        let nodes = ports
            .iter()
            .enumerate()
            .map(|(i, &port)| {
                let work = dir.path().join(port.to_string());
                std::fs::create_dir_all(&work).unwrap();
                let mut args = [
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    work.to_str().unwrap(),
                ]
                .map(String::from)
                .to_vec();
                if let (Some(pki), Some(tls)) = (pki, &tls_ports) {
                    args.extend(
                        [
                            "--tls-port",
                            &tls[i].to_string(),
                            "--tls-cluster",
                            "yes",
                            // The bus port the others are told of, said
                            // outright: the TLS port's + 10000.
                            "--cluster-port",
                            &(tls[i] + 10_000).to_string(),
                            "--tls-cert-file",
                            &pki.path("node.crt"),
                            "--tls-key-file",
                            &pki.path("node.key"),
                            "--tls-ca-cert-file",
                            &pki.path("ca.crt"),
                            "--tls-auth-clients",
                            "yes",
                        ]
                        .map(String::from),
                    );
                }
                let mut p = ServerProcess::new(
                    PathBuf::from("redis-server"),
                    args,
                    dir.path().join(format!("node-{port}.log")),
                );
                p.spawn();
                p
            })
            .collect();
        for &port in &ports {
            wait_for(Duration::from_secs(20), "a cluster node up", || {
                redis::cmd("PING").query::<String>(&mut connect(port)?).ok()
            });
        }
        // Bounded: a cluster whose nodes cannot meet waits forever.
        let mut create = Command::new("timeout");
        create.args(["120", "redis-cli"]);
        if let Some(pki) = pki {
            create.args(["--tls", "--cacert", &pki.path("ca.crt")]);
            create.args(["--cert", &pki.path("client.crt")]);
            create.args(["--key", &pki.path("client.key")]);
        }
        create.args(["--cluster", "create"]);
        for port in tls_ports.as_ref().unwrap_or(&ports) {
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
        let cluster = Cluster {
            _nodes: nodes,
            ports,
            tls_ports,
            dir,
        };
        for &port in &cluster.ports {
            wait_for(Duration::from_secs(30), "cluster_state:ok", || {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut connect(port)?)
                    .ok()?;
                info.contains("cluster_state:ok").then_some(())
            });
        }
        cluster
    }

    /// `ACL SETUSER` with `rule` (an ACL `user` line) on every node.
    fn add_user(&self, rule: &str) {
        for &port in &self.ports {
            let () = redis::cmd("ACL")
                .arg("SETUSER")
                .arg(rule.split_whitespace().collect::<Vec<_>>())
                .query(&mut connect(port).unwrap())
                .unwrap();
        }
    }

    /// `rediss+cluster://USERINFO@…` on two of the TLS ports.
    fn tls_url(&self, userinfo: &str) -> String {
        let tls = self.tls_ports.as_ref().expect("a TLS cluster");
        format!(
            "rediss+cluster://{userinfo}@127.0.0.1:{},127.0.0.1:{}",
            tls[0], tls[1]
        )
    }

    /// Two of the three nodes as seeds: the third is discovered.
    fn url(&self) -> String {
        format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            self.ports[0], self.ports[1]
        )
    }

    fn slots(&self) -> Vec<Range> {
        let mut c = connect(self.ports[0]).unwrap();
        // Each: first slot, last slot, [ip, port, id, …] of the primary, replicas.
        let reply: Vec<Vec<redis::Value>> =
            redis::cmd("CLUSTER").arg("SLOTS").query(&mut c).unwrap();
        reply
            .into_iter()
            .map(|r| {
                let mut r = r.into_iter();
                let mut next = || r.next().expect("a CLUSTER SLOTS entry");
                let first: u16 = redis::from_redis_value(next()).unwrap();
                let last: u16 = redis::from_redis_value(next()).unwrap();
                let node: Vec<redis::Value> = redis::from_redis_value(next()).unwrap();
                let mut node = node.into_iter().skip(1);
                Range {
                    first,
                    last,
                    port: redis::from_redis_value(node.next().unwrap()).unwrap(),
                    id: redis::from_redis_value(node.next().unwrap()).unwrap(),
                }
            })
            .collect()
    }

    fn slot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connect(self.ports[0]).unwrap())
            .unwrap()
    }

    /// The range (and so the node) serving `key`.
    fn owner(&self, key: &str) -> Range {
        let slot = self.slot(key);
        self.slots()
            .into_iter()
            .find(|r| (r.first..=r.last).contains(&slot))
            .unwrap_or_else(|| panic!("no node serves slot {slot}"))
    }

    /// A connection to the node serving `key`.
    fn conn_for(&self, key: &str) -> redis::Connection {
        connect(self.owner(key).port).unwrap()
    }

    /// pumphouse's own keys on each node (leases, batches, dead letters).
    fn pumphouse_keys(&self) -> BTreeMap<u16, Vec<String>> {
        self.ports
            .iter()
            .map(|&port| {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("*pumphouse:*")
                    .query(&mut connect(port).unwrap())
                    .unwrap();
                (port, keys)
            })
            .collect()
    }

    /// Moves the slot of `key` to `to` as `redis-cli --cluster reshard`
    /// does (importing, migrating, `MIGRATE` of its keys, the new owner
    /// announced to every node), but moves `key` first and holds the slot
    /// migrating for `hold` before the rest: meanwhile a transaction on
    /// the slot finds `key` gone and is refused with `ASK` or `TRYAGAIN`.
    fn migrate_slot_holding(&self, key: &str, to: &Range, hold: Duration) {
        let from = self.owner(key);
        let slot = self.slot(key);
        let mut source = connect(from.port).unwrap();
        let mut target = connect(to.port).unwrap();
        let setslot = |c: &mut redis::Connection, state: &str, id: &str| {
            let () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query(c)
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state}: {e}"));
        };
        setslot(&mut target, "IMPORTING", &from.id);
        setslot(&mut source, "MIGRATING", &to.id);
        let migrate = |c: &mut redis::Connection, keys: &[String]| {
            let _: redis::Value = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to.port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(keys)
                .query(c)
                .unwrap_or_else(|e| panic!("MIGRATE {keys:?}: {e}"));
        };
        migrate(&mut source, &[key.to_string()]);
        std::thread::sleep(hold);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut source)
                .unwrap();
            if keys.is_empty() {
                break;
            }
            migrate(&mut source, &keys);
        }
        setslot(&mut target, "NODE", &to.id);
        setslot(&mut source, "NODE", &to.id);
        for &port in &self.ports {
            if port != from.port && port != to.port {
                setslot(&mut connect(port).unwrap(), "NODE", &to.id);
            }
        }
    }

    /// Moves the first `count` slots of the node with id `from` to `to`.
    fn reshard(&self, from: &str, to: &str, count: u16) {
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", self.ports[0]))
            .args(["--cluster-from", from, "--cluster-to", to])
            .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `pumphouse check` of a config on `url`: its whole output.
fn check(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let config = HostConfig::at_url(url).pump(Pump::file("file", "x.jsonl"));
    std::fs::write(&path, config.to_toml()).unwrap();
    let (code, out, err) = pumphouse(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    format!("{out}{err}")
}

/// The seq of each Tyk record in a file sink's output (the sample
/// generator ends each `Path` with it).
fn tyk_seqs(path: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["Path"]
                .as_str()
                .and_then(|p| p.rsplit('/').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no seq in {l}"))
        })
        .collect()
}

#[test]
fn tyk_shards_on_a_cluster_survive_a_reshard_and_two_hosts_share_them() {
    let cluster = Cluster::start();

    // `check` discovers the cluster, and names one it cannot discover:
    // nothing listening, or a seed that is no cluster node.
    assert!(
        check(&cluster.url()).contains("redis: reachable\n"),
        "{}",
        check(&cluster.url())
    );
    let closed = free_port();
    let out = check(&format!("redis+cluster://127.0.0.1:{closed}"));
    assert!(
        out.contains("cluster discovery failed")
            && out.contains(&format!("127.0.0.1:{closed}: connection refused")),
        "{out}"
    );
    let plain = RedisServer::start().unwrap();
    let out = check(&format!("redis+cluster://127.0.0.1:{}", plain.port()));
    assert!(
        out.contains("cluster discovery failed") && out.contains("not a cluster node"),
        "{out}"
    );

    // The 10 shards spread over the nodes.
    let shards: Vec<String> = (0..10).map(|i| format!("{TYK_KEY}_{i}")).collect();
    let mut by_node: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, key) in shards.iter().enumerate() {
        by_node.entry(cluster.owner(key).port).or_default().push(i);
    }
    assert!(by_node.len() >= 2, "all shards on one node: {by_node:?}");

    let config = HostConfig::at_url(&cluster.url())
        .tyk()
        .source("shards", 10)
        .source("batch_size", 50)
        .source("lease", "3s")
        .pump(Pump::file("file", "tyk.jsonl"));
    let hosts = [Host::start(&config), Host::start(&config)];
    let outputs: Vec<PathBuf> = hosts.iter().map(|h| h.out().join("tyk.jsonl")).collect();
    let delivered = || -> Vec<Vec<u64>> { outputs.iter().map(|p| tyk_seqs(p)).collect() };

    // The producer: the real `pumphouse produce`, on the cluster too.
    const TOTAL: u64 = 30_000;
    let mut producer = Command::new(env!("CARGO_BIN_EXE_pumphouse"))
        .args(["produce", "--format", "tyk", "--shards", "10", "--quiet"])
        .args(["--count", &TOTAL.to_string(), "--rate", "3000"])
        .args(["--redis", &cluster.url()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(cluster.dir.path().join("produce.log")).unwrap())
        .spawn()
        .expect("spawn pumphouse produce");
    wait_for(WAIT, "first deliveries", || {
        (delivered().iter().map(Vec::len).sum::<usize>() >= 2000).then_some(())
    });

    // Reshard mid-run: the shard nearest the start of its node's slots
    // moves, with every slot before it (redis-cli moves a node's slots
    // in order).
    let (moved, range) = shards
        .iter()
        .enumerate()
        .map(|(i, key)| (i, cluster.owner(key)))
        .min_by_key(|(i, r)| cluster.slot(&shards[*i]) - r.first)
        .unwrap();
    let to = cluster
        .slots()
        .into_iter()
        .find(|r| r.port != range.port)
        .unwrap();
    let count = cluster.slot(&shards[moved]) - range.first + 1;
    assert!(
        producer.try_wait().unwrap().is_none(),
        "the producer finished before the reshard"
    );
    let resharding = Instant::now();
    cluster.reshard(&range.id, &to.id, count);
    let reshard_secs = resharding.elapsed().as_secs_f64();
    assert_eq!(
        cluster.owner(&shards[moved]).port,
        to.port,
        "shard {moved} moved"
    );

    // A slot held migrating with its shard gone ahead: claims on it are
    // refused (`ASK`, `TRYAGAIN`) and sent again until the slot settles.
    let held = (0..shards.len())
        .find(|&i| i != moved && cluster.slot(&shards[i]) != cluster.slot(&shards[moved]))
        .unwrap();
    let held_from = cluster.owner(&shards[held]);
    let held_to = cluster
        .slots()
        .into_iter()
        .find(|r| r.port != held_from.port)
        .unwrap();
    assert!(
        producer.try_wait().unwrap().is_none(),
        "the producer finished before the slot migration"
    );
    cluster.migrate_slot_holding(&shards[held], &held_to, Duration::from_millis(1500));
    assert_eq!(cluster.owner(&shards[held]).port, held_to.port);
    let status = producer.wait().unwrap();
    assert!(
        status.success(),
        "pumphouse produce: {}",
        std::fs::read_to_string(cluster.dir.path().join("produce.log")).unwrap_or_default()
    );

    // Every record, at least once, from both hosts together.
    let per_host = wait_for(WAIT, "every record delivered", || {
        let per_host = delivered();
        let seen: BTreeSet<u64> = per_host.iter().flatten().copied().collect();
        (seen.len() as u64 == TOTAL).then_some(per_host)
    });
    for seq in per_host.iter().flatten() {
        assert!(*seq < TOTAL, "seq {seq} was never pushed");
    }
    wait_for(Duration::from_secs(60), "no claim left on any node", || {
        let left = cluster.pumphouse_keys();
        left.values().all(Vec::is_empty).then_some(())
    });
    for key in &shards {
        let len: u64 = redis::cmd("LLEN")
            .arg(key)
            .query(&mut cluster.conn_for(key))
            .unwrap();
        assert_eq!(len, 0, "{key} still holds records");
    }
    let counts: Vec<usize> = per_host.iter().map(Vec::len).collect();
    assert!(
        counts.iter().all(|&n| n > 0),
        "both hosts share the work: {counts:?}"
    );
    let duplicates = counts.iter().sum::<usize>() as u64 - TOTAL;
    let redirects = |kind: &str| -> f64 {
        hosts
            .iter()
            .map(|h| {
                h.metric(&format!(
                    "pumphouse_redis_redirects_total{{kind=\"{kind}\"}}"
                ))
            })
            .sum()
    };
    let (ask, tryagain, moved_redirects) =
        (redirects("ask"), redirects("tryagain"), redirects("moved"));
    assert!(
        ask + tryagain >= 1.0,
        "no transaction was sent again while shard {held}'s slot was held migrating \
         (ask {ask}, tryagain {tryagain}, moved {moved_redirects})"
    );
    for h in &hosts {
        assert!(
            !h.log_text().contains("panicked"),
            "a host panicked:\n{}",
            h.log_text()
        );
    }
    eprintln!(
        "redis cluster: {TOTAL} Tyk records over 10 shards on 3 nodes (shards by node port: \
         {by_node:?}); `redis-cli --cluster reshard` of {count} slots, moving shard {moved} \
         from :{} to :{}, took {reshard_secs:.1} s mid-run; shard {held}'s slot held migrating \
         1.5 s; transactions sent again: {ask} ASK, {tryagain} TRYAGAIN, {moved_redirects} MOVED; \
         the two hosts delivered {counts:?}; {duplicates} duplicates",
        range.port, to.port
    );
}

#[test]
fn a_stream_source_and_kv_state_on_a_cluster_keep_their_windows_across_a_restart() {
    const KEY: &str = "tyk-events";
    let cluster = Cluster::start();
    let recorder = Recorder::start();
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig::at_url(&cluster.url())
        .tyk()
        .source("type", "stream")
        .source("key", KEY)
        .source("batch_size", 40)
        .pump(aggregate_pump(&recorder, "5m"));
    // The stream and the plugin's state are in different slots.
    let state_key = "pumphouse:kv:{agg}:state";
    assert_ne!(cluster.slot(KEY), cluster.slot(state_key));

    let mut sampler = pumphouse::produce::Sampler::new(11);
    let records: Vec<_> = (0..400)
        .map(|i| sampler.tyk(i, FUTURE + (i as i64 / 200) * 60 + (i as i64 % 50)))
        .collect();
    let mut host = Host::start_at(dir.path(), &config);
    let mut pipe = redis::pipe();
    for r in &records {
        pipe.cmd("XADD")
            .arg(KEY)
            .arg("*")
            .arg("record")
            .arg(pumphouse::produce::encode_tyk(r))
            .ignore();
    }
    let () = pipe.query(&mut cluster.conn_for(KEY)).unwrap();
    wait_for(WAIT, "400 records counted in the stored state", || {
        (stored_hits(&mut cluster.conn_for(state_key), "OrgID,APIID") == 400).then_some(())
    });
    wait_for(WAIT, "every entry acknowledged", || {
        let summary: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(KEY)
            .arg("pumphouse")
            .query(&mut cluster.conn_for(KEY))
            .unwrap();
        matches!(summary.first(), Some(redis::Value::Int(0))).then_some(())
    });
    assert!(
        recorder.bodies_at("/rows").is_empty(),
        "no window finished yet"
    );
    host.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(host.wait_exit(Duration::from_secs(60)), Some(0));

    // A new host finds the windows in kv: a record ten minutes on closes
    // both, with the counts of all 400 records.
    let _host = Host::start_at(dir.path(), &config);
    let late = sampler.tyk(400, FUTURE + 600);
    let _: String = redis::cmd("XADD")
        .arg(KEY)
        .arg("*")
        .arg("record")
        .arg(pumphouse::produce::encode_tyk(&late))
        .query(&mut cluster.conn_for(KEY))
        .unwrap();
    let expected = tyk_expected(&records);
    let got = wait_for(WAIT, "both windows written", || {
        let got = received(&recorder);
        (got.len() >= expected.len()).then_some(got)
    });
    assert_eq!(got, expected);
}

/// A cluster-enabled redis-server stopped with `SIGSTOP`: the kernel still
/// accepts its connections, and nothing answers. Resumed and killed when
/// dropped.
struct StoppedNode {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl StoppedNode {
    fn start() -> StoppedNode {
        use nix::sys::signal::{kill, Signal};
        let dir = tempfile::tempdir().unwrap();
        let port = node_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server");
        wait_for(Duration::from_secs(20), "the node up", || {
            redis::cmd("PING").query::<String>(&mut connect(port)?).ok()
        });
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        kill(pid, Signal::SIGSTOP).unwrap();
        StoppedNode {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for StoppedNode {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        let _ = kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGCONT,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn check_names_the_cause_of_each_seed_that_does_not_answer() {
    let stopped = StoppedNode::start();
    let closed = free_port();
    let out = check(&format!(
        "redis+cluster://127.0.0.1:{},127.0.0.1:{closed}",
        stopped.port
    ));
    assert!(
        out.contains("cluster discovery failed")
            && out.contains(&format!(
                "127.0.0.1:{}: accepts TCP connections but gave no slot map",
                stopped.port
            ))
            && out.contains(&format!("127.0.0.1:{closed}: connection refused"))
            && !out.contains("no answer from redis"),
        "{out}"
    );
}

/// The README's least-privilege user (`+@all -@dangerous`) over mutual
/// TLS on a cluster whose nodes speak TLS to clients and to each other:
/// `check` passes, `pumphouse produce` pushes over TLS, and every record
/// reaches the sink exactly once. The `SORT` claim, refused when queued,
/// aborts its transaction: the log names it, and claims go on with the Lua
/// script. A pipeline with a key outside the ACL is refused whole, naming
/// the command and key, and pushes nothing.
#[test]
fn tyk_records_over_a_tls_cluster_reach_the_sink_once_each_as_a_user_without_dangerous_commands() {
    let pki = Pki::new();
    let cluster = Cluster::start_with(Some(&pki));
    cluster.add_user(PUMPHOUSE_USER);
    let url = cluster.tls_url("pumphouse:s3cret");
    let (ca, cert, key) = (
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key"),
    );
    let config = HostConfig::at_url(&url)
        .tls(&ca, &cert, &key)
        .tyk()
        .source("shards", 10)
        .source("batch_size", 50)
        .pump(Pump::file("file", "tyk.jsonl"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let (code, out, err) = pumphouse(&["check", "--config", path.to_str().unwrap()]);
    assert!(
        code == 0 && out.contains("redis: reachable\n"),
        "{out}{err}"
    );

    let produce = |extra: &[&str]| {
        let mut args = vec!["produce", "--format", "tyk", "--quiet", "--redis", &url];
        args.extend(["--tls-ca-file", &ca, "--tls-cert-file", &cert]);
        args.extend(["--tls-key-file", &key]);
        args.extend(extra);
        pumphouse(&args)
    };
    const TOTAL: u64 = 5000;
    let (code, out, err) = produce(&["--shards", "10", "--count", &TOTAL.to_string()]);
    assert_eq!(code, 0, "produce over TLS: {out}{err}");

    // `forbidden` is no key of the ACL's: each RPUSH is refused when
    // queued, so the pipeline's transaction runs none of them.
    let (code, out, err) = produce(&["--key", "forbidden", "--count", "10"]);
    assert_ne!(code, 0, "a push outside the ACL succeeded: {out}{err}");
    assert!(
        err.contains("NOPERM") && err.contains("`RPUSH forbidden`, and 9 more"),
        "{err}"
    );
    let held: u64 = redis::cmd("LLEN")
        .arg("forbidden")
        .query(&mut cluster.conn_for("forbidden"))
        .unwrap();
    assert_eq!(held, 0, "a refused pipeline pushed {held} records");

    let host = Host::start(&config);
    let file = host.out().join("tyk.jsonl");
    let mut seqs = wait_for(WAIT, "every record delivered", || {
        let seqs = tyk_seqs(&file);
        (seqs.len() as u64 >= TOTAL).then_some(seqs)
    });
    wait_for(Duration::from_secs(60), "no claim left on any node", || {
        cluster
            .pumphouse_keys()
            .values()
            .all(Vec::is_empty)
            .then_some(())
    });
    seqs.extend(tyk_seqs(&file).into_iter().skip(seqs.len()));
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..TOTAL).collect::<Vec<_>>(),
        "each record exactly once"
    );
    let log = host.log_text();
    assert!(
        log.contains("using the Lua claim")
            && log.contains("no permissions to run the 'sort' command")
            && log.contains(&format!(
                "refused when queued: command 1 of 4, `SORT {TYK_KEY}_"
            )),
        "{log}"
    );
}

//! Redis behind Sentinel: a primary, a replica and a sentinel, each a real
//! redis-server on a free loopback port. `SENTINEL FAILOVER` while the host
//! drains and a producer keeps pushing: every record arrives, no claim is
//! left on the new primary, `/readyz` is back to 200. The delivery gap the
//! failover causes is printed (a figure, not an assertion).
//!
//! The producer holds while the sentinel still names the old primary: a
//! push the old primary takes after the promotion is lost by Redis itself
//! (asynchronous replication), which is not what this test is about.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pumphouse::record::IAM_KEY;

use crate::harness::*;
use crate::redis_prod::Pki;
use crate::sink_servers::ServerProcess;

const MASTER: &str = "mymaster";

/// A primary, its replica and one sentinel watching them.
struct SentinelSetup {
    _primary: ServerProcess,
    _replica: ServerProcess,
    _sentinel: ServerProcess,
    sentinel_port: u16,
    _dir: tempfile::TempDir,
}

fn redis_server(dir: &std::path::Path, name: &str, args: &[String]) -> ServerProcess {
    let mut p = ServerProcess::new(
        PathBuf::from("redis-server"),
        args.to_vec(),
        dir.join(format!("{name}.log")),
    );
    p.spawn();
    p
}

fn node_args(dir: &std::path::Path, name: &str, port: u16) -> Vec<String> {
    let work = dir.join(name);
    std::fs::create_dir_all(&work).unwrap();
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        work.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn connect(port: u16) -> Option<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .ok()?
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()
}

/// The first element of `ROLE`: `master`, `slave` or `sentinel`.
fn role(port: u16) -> Option<String> {
    let mut c = connect(port)?;
    let v: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
    redis::from_redis_value(v.into_iter().next()?).ok()
}

impl SentinelSetup {
    fn start() -> SentinelSetup {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2, ps) = (free_port(), free_port(), free_port());
        let primary = redis_server(dir.path(), "primary", &node_args(dir.path(), "primary", p1));
        let mut replica_args = node_args(dir.path(), "replica", p2);
        replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), p1.to_string()]);
        let replica = redis_server(dir.path(), "replica", &replica_args);
        wait_for(Duration::from_secs(20), "the replica in sync", || {
            let mut c = connect(p2)?;
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
            info.contains("master_link_status:up").then_some(())
        });
        // Sentinel rewrites its config file: it lives in the test's dir.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {ps}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {MASTER} 127.0.0.1 {p1} 1\n\
                 sentinel down-after-milliseconds {MASTER} 1000\n\
                 sentinel failover-timeout {MASTER} 10000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let sentinel = redis_server(
            dir.path(),
            "sentinel",
            &[conf.display().to_string(), "--sentinel".into()],
        );
        let setup = SentinelSetup {
            _primary: primary,
            _replica: replica,
            _sentinel: sentinel,
            sentinel_port: ps,
            _dir: dir,
        };
        // A failover needs the sentinel to know the replica (it learns of
        // it from the primary's INFO).
        wait_for(
            Duration::from_secs(30),
            "the sentinel to see the replica",
            || {
                let mut c = connect(ps)?;
                let replicas: Vec<BTreeMap<String, String>> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(MASTER)
                    .query(&mut c)
                    .ok()?;
                replicas
                    .iter()
                    .any(|r| r.get("flags").is_some_and(|f| f == "slave"))
                    .then_some(())
            },
        );
        setup
    }

    fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{MASTER}/0",
            self.sentinel_port
        )
    }

    /// The port of the primary the sentinel names.
    fn primary_port(&self) -> Option<u16> {
        let mut c = connect(self.sentinel_port)?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER)
            .query(&mut c)
            .ok()?;
        Some(port)
    }
}

#[test]
fn a_sentinel_failover_mid_run_loses_no_record_and_leaves_no_claim() {
    let setup = SentinelSetup::start();
    let old_primary = setup.primary_port().unwrap();

    // `check` reaches the primary through the sentinel, and names a
    // primary the sentinel does not know.
    for (url, needle) in [
        (setup.url(), "redis: reachable\n"),
        (
            format!(
                "redis+sentinel://127.0.0.1:{}/nosuch/0",
                setup.sentinel_port
            ),
            "sentinel discovery failed",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let config = HostConfig::at_url(&url).pump(Pump::file("file", "x.jsonl"));
        std::fs::write(&path, config.to_toml()).unwrap();
        let (code, out, err) = pumphouse(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(format!("{out}{err}").contains(needle), "{url}: {out}{err}");
    }

    let host = Host::start(
        HostConfig::at_url(&setup.url())
            .source("batch_size", 20)
            .source("lease", "3s")
            .pump(Pump::file("file", "iam.jsonl")),
    );
    let out = host.out().join("iam.jsonl");

    // A producer pushing chunks of 500 to the primary the sentinel names,
    // holding while `hold` is set.
    const CHUNK: u64 = 500;
    const TOTAL: u64 = 40_000;
    let mut sampler = pumphouse::produce::Sampler::new(11);
    let records: Vec<_> = (0..TOTAL).map(|i| sampler.iam(i, T0)).collect();
    let bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_iam).collect();
    let hold = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let producer = {
        let (hold, holding, pushed) = (hold.clone(), holding.clone(), pushed.clone());
        let sentinel_port = setup.sentinel_port;
        std::thread::spawn(move || {
            let mut next = 0;
            while next < TOTAL {
                if hold.load(Ordering::SeqCst) {
                    holding.store(true, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                holding.store(false, Ordering::SeqCst);
                let primary = wait_for(Duration::from_secs(30), "a primary to push to", || {
                    let mut c = connect(sentinel_port)?;
                    let (_, port): (String, u16) = redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER)
                        .query(&mut c)
                        .ok()?;
                    (role(port)? == "master").then_some(port)
                });
                let mut c = connect(primary).expect("connect to the primary");
                push(
                    &mut c,
                    IAM_KEY,
                    &bytes[next as usize..(next + CHUNK) as usize],
                );
                next += CHUNK;
                pushed.store(next, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Mid-run: once records are arriving and more are queued.
    wait_for(Duration::from_secs(60), "first deliveries", || {
        (read_jsonl(&out).len() >= 1000).then_some(())
    });
    hold.store(true, Ordering::SeqCst);
    wait_for(Duration::from_secs(10), "the producer to hold", || {
        holding.load(Ordering::SeqCst).then_some(())
    });
    let backlog: u64 = {
        let mut c = connect(old_primary).unwrap();
        redis::cmd("LLEN").arg(IAM_KEY).query(&mut c).unwrap()
    };
    let delivered_before = read_jsonl(&out).len();
    let failover_at = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "SENTINEL FAILOVER accepted",
        || {
            let mut c = connect(setup.sentinel_port)?;
            redis::cmd("SENTINEL")
                .arg("FAILOVER")
                .arg(MASTER)
                .query::<()>(&mut c)
                .ok()
        },
    );
    // The producer resumes once the sentinel names the new primary.
    let new_primary = wait_for(Duration::from_secs(60), "the sentinel to switch", || {
        let port = setup.primary_port()?;
        (port != old_primary && role(port)? == "master").then_some(port)
    });
    let switched_in = failover_at.elapsed();
    let first_after = pushed.load(Ordering::SeqCst);
    let offset = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) as usize;
    hold.store(false, Ordering::SeqCst);
    // The gap: from the failover to the delivery of the first record
    // pushed after it.
    wait_for(
        Duration::from_secs(120),
        "a record pushed after the failover",
        || {
            let text = std::fs::read(&out).ok()?;
            let tail = String::from_utf8_lossy(text.get(offset..)?).into_owned();
            tail.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|l| iam_seq(&l) >= first_after)
                .then_some(())
        },
    );
    let gap = failover_at.elapsed();
    producer.join().unwrap();
    assert_eq!(pushed.load(Ordering::SeqCst), TOTAL);
    wait_for(
        Duration::from_secs(60),
        "the old primary to become a replica",
        || (role(old_primary)? == "slave").then_some(()),
    );

    // Every record, at least once; duplicates are what at-least-once may
    // cost across a failover (an ack written to the old primary after the
    // promotion is lost with it).
    let lines = wait_for(Duration::from_secs(120), "every record delivered", || {
        let lines = read_jsonl(&out);
        let seqs: std::collections::BTreeSet<u64> = lines.iter().map(iam_seq).collect();
        (seqs.len() as u64 == TOTAL).then_some(lines)
    });
    let mut new_conn = connect(new_primary).unwrap();
    wait_for(
        Duration::from_secs(30),
        "no claim left on the new primary",
        || (left_in_redis(&mut new_conn, IAM_KEY) == (0, 0)).then_some(()),
    );
    for l in &lines {
        let seq = iam_seq(l);
        assert!(seq < TOTAL, "seq {seq} was never pushed");
        assert_eq!(l, &iam_json(&records[seq as usize]), "record {seq}");
    }
    let duplicates = lines.len() as u64 - TOTAL;

    wait_for(Duration::from_secs(30), "/readyz 200", || {
        match http_get(&host.http, "/readyz") {
            Ok((200, body)) if body.contains("\"redis_error\":null") => Some(()),
            _ => None,
        }
    });
    assert!(
        host.log_text()
            .contains("following the primary the sentinels name"),
        "{}",
        host.log_text()
    );
    assert!(host.metric("pumphouse_redis_primary_changes_total") >= 1.0);
    eprintln!(
        "sentinel failover: delivery gap {:.2} s (SENTINEL FAILOVER to the delivery of the \
         first record pushed after it), the sentinel named the new primary after {:.2} s; \
         {delivered_before} delivered and {backlog} queued at the failover; \
         {duplicates} duplicates of {TOTAL}",
        gap.as_secs_f64(),
        switched_in.as_secs_f64()
    );
}

/// `rediss+sentinel://` with `source.sentinel_password`: a primary and a
/// replica on TLS ports (plain ports too, for the test's own pushes), and a
/// TLS-only sentinel with `requirepass` that reaches them over TLS.
/// `check` names the failure without the sentinels' password, and records
/// flow through the sentinel's primary with it.
#[test]
fn records_flow_through_a_tls_sentinel_that_wants_a_password() {
    const SENTINEL_PASSWORD: &str = "sentinel-s3cret";
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let tls_args = |tls_port: u16| -> Vec<String> {
        [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            pki.path("server.crt"),
            "--tls-key-file".into(),
            pki.path("server.key"),
            "--tls-ca-cert-file".into(),
            pki.path("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
            "--tls-replication".into(),
            "yes".into(),
        ]
        .to_vec()
    };
    let (p1, t1, p2, t2, ps) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let mut args = node_args(dir.path(), "primary", p1);
    args.extend(tls_args(t1));
    let _primary = redis_server(dir.path(), "primary", &args);
    let mut args = node_args(dir.path(), "replica", p2);
    args.extend(tls_args(t2));
    args.extend(["--replicaof".into(), "127.0.0.1".into(), t1.to_string()]);
    let _replica = redis_server(dir.path(), "replica", &args);
    wait_for(
        Duration::from_secs(20),
        "the replica in sync over TLS",
        || {
            let mut c = connect(p2)?;
            let info: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
            info.contains("master_link_status:up").then_some(())
        },
    );
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port 0\ntls-port {ps}\nbind 127.0.0.1\ndir {}\n\
             tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
             tls-auth-clients no\ntls-replication yes\n\
             requirepass {SENTINEL_PASSWORD}\n\
             sentinel monitor {MASTER} 127.0.0.1 {t1} 1\n\
             sentinel down-after-milliseconds {MASTER} 1000\n",
            dir.path().display(),
            pki.path("server.crt"),
            pki.path("server.key"),
            pki.path("ca.crt"),
        ),
    )
    .unwrap();
    let _sentinel = redis_server(
        dir.path(),
        "sentinel",
        &[conf.display().to_string(), "--sentinel".into()],
    );
    let url = format!("rediss+sentinel://127.0.0.1:{ps}/{MASTER}/0");
    let config = |password: Option<&str>| {
        let c = HostConfig::at_url(&url).source("tls.ca_file", pki.path("ca.crt").as_str());
        match password {
            Some(p) => c.source("sentinel_password", p),
            None => c,
        }
    };
    let check = |config: HostConfig| {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("c.toml");
        std::fs::write(&path, config.pump(Pump::file("file", "x.jsonl")).to_toml()).unwrap();
        let (code, out, err) = pumphouse(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}{err}");
        format!("{out}{err}")
    };
    // The sentinel answers once it is up; without its password it names
    // no primary.
    wait_for(
        Duration::from_secs(20),
        "check through the sentinel",
        || {
            check(config(Some(SENTINEL_PASSWORD)))
                .contains("redis: reachable\n")
                .then_some(())
        },
    );
    let without = check(config(None));
    assert!(
        !without.contains("redis: reachable\n") && without.contains("sentinel"),
        "{without}"
    );

    let host = Host::start(
        config(Some(SENTINEL_PASSWORD))
            .source("batch_size", 50)
            .pump(Pump::file("file", "iam.jsonl")),
    );
    let out = host.out().join("iam.jsonl");
    const TOTAL: u64 = 2_000;
    let mut sampler = pumphouse::produce::Sampler::new(5);
    let records: Vec<_> = (0..TOTAL).map(|i| sampler.iam(i, T0)).collect();
    let bytes: Vec<_> = records.iter().map(pumphouse::produce::encode_iam).collect();
    push(&mut connect(p1).unwrap(), IAM_KEY, &bytes);
    let lines = wait_lines(&out, TOTAL as usize, Duration::from_secs(60));
    assert_iam_lines(&lines, &records);
    wait_for(Duration::from_secs(30), "no claim left", || {
        (left_in_redis(&mut connect(p1)?, IAM_KEY) == (0, 0)).then_some(())
    });
    wait_for(Duration::from_secs(30), "/readyz 200", || {
        match http_get(&host.http, "/readyz") {
            Ok((200, _)) => Some(()),
            _ => None,
        }
    });
}

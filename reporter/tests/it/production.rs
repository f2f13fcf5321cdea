//! Production Redis: records over mutual TLS under a least-privilege ACL
//! user, through Sentinel across a `SENTINEL FAILOVER`, and into a Redis
//! Cluster across a reshard of the key's slot; errors name their cause.
//! Every server is a real one, started here on free loopback ports.

use std::collections::BTreeSet;
use std::time::Duration;

use pumphouse_reporter::{BuildError, Iam, IamRecord, Reporter, Stats, Tls, WhenFull, IAM_KEY};

use crate::servers::*;
use crate::support::*;

/// What the reporter needs and nothing more: push to the iam and Tyk
/// keys (the README's ACL line).
const REPORTER_ACL: &str =
    "reporter on >s3cret resetchannels ~analytics-* -@all +rpush +xadd +ping";

/// A TLS-only (for clients) redis-server requiring client certificates,
/// a plain port for the test's own checks, and the ACL users `reporter`
/// and `pushless` (no `RPUSH`).
struct TlsRedis {
    _proc: Proc,
    port: u16,
    tls_port: u16,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let pki = Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let (port, tls_port) = (free_port(), free_port());
        let mut args = node_args(dir.path(), "tls", port);
        args.extend(pki.server_args(tls_port));
        let proc = redis_server(dir.path(), "tls", &args);
        wait_up(port);
        let acl = |rule: &str| {
            let mut c = connect(port, None).unwrap();
            let mut cmd = redis::cmd("ACL");
            cmd.arg("SETUSER");
            for w in rule.split(' ') {
                cmd.arg(w);
            }
            cmd.query::<()>(&mut c).unwrap();
        };
        acl(REPORTER_ACL);
        acl("pushless on >s3cret ~analytics-* -@all +ping +xadd");
        TlsRedis {
            _proc: proc,
            port,
            tls_port,
            pki,
            _dir: dir,
        }
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!("rediss://{user}:{password}@127.0.0.1:{}/0", self.tls_port)
    }

    /// The test CA and the client certificate.
    fn tls(&self) -> Tls {
        Tls::new()
            .ca_file(self.pki.path("ca.crt"))
            .client_cert(self.pki.path("client.crt"), self.pki.path("client.key"))
    }
}

fn records(n: u64) -> (Vec<IamRecord>, Vec<Vec<u8>>) {
    iam_records(n)
}

#[tokio::test]
async fn records_reach_redis_over_mutual_tls_under_an_acl_user() {
    let redis = TlsRedis::start();
    let (records, expected) = records(2_000);
    let reporter = Reporter::builder()
        .format(Iam)
        .redis_url(redis.url("reporter", "s3cret"))
        .tls(redis.tls())
        .pool_size(1)
        .batch_size(300)
        .give_up_after(Duration::from_secs(30))
        .build()
        .unwrap();
    for r in &records {
        reporter.record(r.clone()).unwrap();
    }
    let stats = reporter.shutdown().await;
    assert_eq!((stats.sent, stats.lost(), stats.send_errors), (2_000, 0, 0));
    assert_eq!(reporter.redis_error(), None);
    // One worker keeps the order: the list is the records, once each.
    assert_eq!(lrange(redis.port, IAM_KEY), expected);
}

/// Records one record with `builder`'s reporter and returns the cause it
/// names once an attempt has failed; the record is then counted lost.
async fn cause_of(reporter: Reporter<IamRecord>) -> String {
    let (records, _) = records(1);
    reporter.record(records[0].clone()).unwrap();
    let r = reporter.clone();
    wait_until(Duration::from_secs(30), "a failed attempt", move || {
        let e = r.redis_error();
        async move { e.is_some() }
    })
    .await;
    let cause = reporter.redis_error().unwrap();
    let stats: Stats = reporter.shutdown().await;
    assert_eq!((stats.sent, stats.lost_unreachable), (0, 1), "{cause}");
    cause
}

fn failing(url: String) -> pumphouse_reporter::ReporterBuilder<Iam> {
    Reporter::builder()
        .format(Iam)
        .redis_url(url)
        .give_up_after(Duration::from_millis(300))
        .retry(Duration::from_millis(20), Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn errors_name_their_cause() {
    let redis = TlsRedis::start();
    let nobody = free_port();
    let nobody_addr = format!("127.0.0.1:{nobody}");
    let plain_addr = format!("127.0.0.1:{}", redis.port);
    let cases = [
        (
            "refused",
            failing(format!("redis://127.0.0.1:{nobody}/0")),
            vec!["connection refused", &nobody_addr],
        ),
        (
            "wrong CA",
            failing(redis.url("reporter", "s3cret")).tls(
                Tls::new()
                    .ca_file(redis.pki.path("other-ca.crt"))
                    .client_cert(redis.pki.path("client.crt"), redis.pki.path("client.key")),
            ),
            vec!["TLS handshake", "not trusted"],
        ),
        (
            "wrong name",
            failing(redis.url("reporter", "s3cret")).tls(redis.tls().server_name("elsewhere.test")),
            vec!["TLS handshake", "not valid for the name"],
        ),
        (
            "no client certificate",
            failing(redis.url("reporter", "s3cret"))
                .tls(Tls::new().ca_file(redis.pki.path("ca.crt"))),
            vec!["TLS handshake", "client certificate"],
        ),
        (
            "wrong password",
            failing(redis.url("reporter", "wrong")).tls(redis.tls()),
            vec!["authentication failed (WRONGPASS)"],
        ),
        (
            "no permission",
            failing(redis.url("pushless", "s3cret")).tls(redis.tls()),
            vec!["permission denied (NOPERM)", "rpush"],
        ),
        (
            // A plain server is no sentinel.
            "discovery",
            failing(format!(
                "redis+sentinel://127.0.0.1:{}/mymaster",
                redis.port
            )),
            vec!["sentinel discovery failed", &plain_addr],
        ),
    ];
    for (case, builder, needles) in cases {
        let cause = cause_of(builder.build().unwrap()).await;
        for n in needles {
            assert!(cause.contains(n), "{case}: {cause:?} lacks {n:?}");
        }
    }

    // Settings that cannot work are refused at build, by name.
    let missing = "/nonexistent/ca.pem";
    match failing(redis.url("reporter", "s3cret"))
        .tls(Tls::new().ca_file(missing))
        .build()
    {
        Err(BuildError::Tls(e)) => assert!(e.contains(missing), "{e}"),
        other => panic!("a missing CA file: {:?}", other.err()),
    }
    for (builder, option) in [
        (
            failing(format!("redis://127.0.0.1:{}/0", redis.port)).tls(redis.tls()),
            "tls",
        ),
        (
            failing(format!("redis://127.0.0.1:{}/0", redis.port)).sentinel_password("x"),
            "sentinel_password",
        ),
    ] {
        match builder.build() {
            Err(BuildError::InvalidOption { option: o, .. }) => assert_eq!(o, option),
            other => panic!("{option}: {:?}", other.err()),
        }
    }
}

/// Records `records` one after another, `per_ms` a millisecond at most,
/// waiting for room when the buffer is full; returns how many.
fn record_steadily(
    reporter: Reporter<IamRecord>,
    records: Vec<IamRecord>,
    per_ms: usize,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0;
        for chunk in records.chunks(per_ms) {
            for r in chunk {
                reporter.record_wait(r.clone()).await.unwrap();
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        n
    })
}

/// Asserts the accounting is exact: every accepted record was sent (none
/// lost), and the list holds every record recorded, at least once.
/// Returns the duplicates.
fn assert_all_there(stats: &Stats, recorded: u64, got: &[Vec<u8>], expected: &[Vec<u8>]) -> u64 {
    assert_eq!(stats.accepted, recorded);
    assert_eq!((stats.sent, stats.lost(), stats.buffered), (recorded, 0, 0));
    let seen = occurrences(got, expected);
    let missing: Vec<usize> = (0..recorded as usize).filter(|i| seen[*i] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} records counted sent are not in Redis, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(seen[recorded as usize..].iter().all(|n| *n == 0));
    got.len() as u64 - recorded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_new_primary_across_a_sentinel_failover() {
    let setup = SentinelSetup::start();
    let url = format!(
        "redis+sentinel://127.0.0.1:{}/{MASTER}/0",
        setup.sentinel_port
    );
    across_a_failover(&setup, url, None).await;
}

/// The same over TLS: the sentinel and both nodes speak TLS (client
/// certificates required) to the reporter, to each other and for
/// replication, and the reporter follows the primary by its TLS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_the_new_primary_across_a_sentinel_failover_over_tls() {
    let pki = Pki::new();
    let setup = SentinelSetup::start_with(Some(&pki));
    let (sentinel_tls, _) = setup.tls.clone().unwrap();
    let url = format!("rediss+sentinel://127.0.0.1:{sentinel_tls}/{MASTER}/0");
    let tls = Tls::new()
        .ca_file(pki.path("ca.crt"))
        .client_cert(pki.path("client.crt"), pki.path("client.key"));
    across_a_failover(&setup, url, Some(tls)).await;
}

/// Records 30 000 records through the sentinels at `url` while
/// `SENTINEL FAILOVER` moves the primary: every record is on the new
/// primary, the accounting exact.
async fn across_a_failover(setup: &SentinelSetup, url: String, tls: Option<Tls>) {
    let old_primary = setup.primary_port().unwrap();
    const TOTAL: u64 = 30_000;
    let (records, expected) = records(TOTAL);
    let mut builder = Reporter::builder().format(Iam).redis_url(url);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let reporter = builder
        .sentinel_password(SENTINEL_PASSWORD)
        .batch_size(200)
        .when_full(WhenFull::Block)
        .retry(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(120))
        .build()
        .unwrap();
    // About 20 000 records a second: the failover falls mid-run.
    let recorder = record_steadily(reporter.clone(), records.clone(), 20);
    let r = reporter.clone();
    wait_until(Duration::from_secs(60), "records sent before", move || {
        let sent = r.stats().sent;
        async move { sent >= 5_000 }
    })
    .await;
    let sent_before = reporter.stats().sent;
    wait_for(
        Duration::from_secs(30),
        "SENTINEL FAILOVER accepted",
        || setup.sentinel::<()>(&["SENTINEL", "FAILOVER", MASTER]),
    );
    let new_primary = wait_for(Duration::from_secs(60), "the sentinel to switch", || {
        let port = setup.primary_port()?;
        (port != old_primary && role(setup.plain(port))? == "master").then_some(port)
    });
    let recorded = recorder.await.unwrap();
    assert_eq!(recorded, TOTAL);
    let stats = reporter.shutdown().await;
    wait_for(
        Duration::from_secs(60),
        "the old primary to become a replica",
        || (role(setup.plain(old_primary))? == "slave").then_some(()),
    );
    let got = lrange(setup.plain(new_primary), IAM_KEY);
    let duplicates = assert_all_there(&stats, recorded, &got, &expected);
    assert!(
        stats.send_errors > 0,
        "the failover went unnoticed: {stats:?}"
    );
    eprintln!(
        "sentinel failover{}: {sent_before} sent before, {} after; {} failed attempts; \
         {duplicates} duplicates of {TOTAL}",
        if setup.tls.is_some() { " over TLS" } else { "" },
        stats.sent - sent_before,
        stats.send_errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_the_key_across_a_cluster_reshard() {
    let cluster = Cluster::start();
    let owner = cluster.owner(IAM_KEY);
    // The seed is not the owner: the first batches are redirected.
    let seed = *cluster.ports.iter().find(|p| **p != owner).unwrap();
    let to = *cluster
        .ports
        .iter()
        .find(|p| **p != owner && **p != seed)
        .unwrap();
    const TOTAL: u64 = 30_000;
    let (records, expected) = records(TOTAL);
    let reporter = Reporter::builder()
        .format(Iam)
        .redis_url(format!("redis+cluster://127.0.0.1:{seed}"))
        .batch_size(200)
        .when_full(WhenFull::Block)
        .retry(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(120))
        .build()
        .unwrap();
    let recorder = record_steadily(reporter.clone(), records.clone(), 20);
    let r = reporter.clone();
    wait_until(Duration::from_secs(60), "records sent before", move || {
        let sent = r.stats().sent;
        async move { sent >= 5_000 }
    })
    .await;
    let sent_before = reporter.stats().sent;
    // Every slot of the owner moves, the key's among them, while records
    // keep coming.
    let reshard = tokio::task::block_in_place(|| cluster.reshard_all(owner, to));
    assert!(
        reshard.status.success(),
        "redis-cli --cluster reshard: {}{}",
        String::from_utf8_lossy(&reshard.stdout),
        String::from_utf8_lossy(&reshard.stderr)
    );
    assert_eq!(cluster.owner(IAM_KEY), to, "the key's slot moved");
    let sent_during = reporter.stats().sent - sent_before;
    let recorded = recorder.await.unwrap();
    assert_eq!(recorded, TOTAL);
    let stats = reporter.shutdown().await;
    let got = lrange(to, IAM_KEY);
    let duplicates = assert_all_there(&stats, recorded, &got, &expected);
    // `ListBatched` batches are one command each: a redirect writes
    // nothing, so nothing comes twice.
    assert_eq!(duplicates, 0);
    let distinct: BTreeSet<&Vec<u8>> = got.iter().collect();
    assert_eq!(distinct.len() as u64, TOTAL);
    eprintln!(
        "cluster reshard: {sent_before} sent before, {sent_during} during, {} after; \
         {} failed attempts",
        stats.sent - sent_before - sent_during,
        stats.send_errors
    );
}

/// Records `records` one after another and waits until Redis confirmed
/// them all.
async fn record_all_sent(reporter: &Reporter<IamRecord>, records: &[IamRecord]) {
    let before = reporter.stats().sent;
    for r in records {
        reporter.record_wait(r.clone()).await.unwrap();
    }
    let r = reporter.clone();
    let want = before + records.len() as u64;
    wait_until(Duration::from_secs(60), "every record sent", move || {
        let sent = r.stats().sent;
        async move { sent >= want }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_to_the_old_owner_after_a_reshard_follows_its_moved() {
    let cluster = Cluster::start();
    let owner = cluster.owner(IAM_KEY);
    let to = *cluster.ports.iter().find(|p| **p != owner).unwrap();
    const HALF: u64 = 5_000;
    let (records, expected) = records(2 * HALF);
    // The seed is the owner: the first half goes there without a redirect.
    let reporter = Reporter::builder()
        .format(Iam)
        .redis_url(format!("redis+cluster://127.0.0.1:{owner}"))
        .batch_size(200)
        .when_full(WhenFull::Block)
        .retry(Duration::from_millis(20), Duration::from_millis(200))
        .give_up_after(Duration::from_secs(60))
        .build()
        .unwrap();
    record_all_sent(&reporter, &records[..HALF as usize]).await;
    let before = reporter.stats();
    assert_eq!((before.moved, before.asked), (0, 0), "{before:?}");

    // The reshard finishes while the reporter is idle, still connected to
    // the old owner: its next batch is answered `MOVED`.
    let reshard = tokio::task::block_in_place(|| cluster.reshard_all(owner, to));
    assert!(
        reshard.status.success(),
        "redis-cli --cluster reshard: {}{}",
        String::from_utf8_lossy(&reshard.stdout),
        String::from_utf8_lossy(&reshard.stderr)
    );
    assert_eq!(cluster.owner(IAM_KEY), to, "the key's slot moved");
    record_all_sent(&reporter, &records[HALF as usize..]).await;
    let stats = reporter.shutdown().await;
    assert!(stats.moved >= 1, "no MOVED was followed: {stats:?}");
    assert_eq!(stats.asked, 0, "{stats:?}");
    // A redirected batch was not written by the old owner: nothing twice.
    let got = lrange(to, IAM_KEY);
    assert_eq!(assert_all_there(&stats, 2 * HALF, &got, &expected), 0);
}

//! Faults injected for real: hostile plugins, signals, SIGKILL, Redis loss.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::*;

use pumphouse::record::IAM_KEY;

#[test]
fn trapping_and_looping_plugins_do_not_stop_the_other_pumps() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 300, 1);
    let config = HostConfig::new(&redis)
        .source("batch_size", 50)
        .pump(Pump::file("healthy", "healthy.jsonl"))
        .pump(
            Pump::sink("trap", fixture("trap"), "trap.jsonl")
                .retry("20ms", "100ms")
                .config("every", 3),
        )
        .pump(
            Pump::new("spin", fixture("spin"))
                .set("timeout", "200ms")
                .retry("50ms", "200ms"),
        );
    let mut host = Host::start(&config);
    let healthy = wait_lines(
        &host.out().join("healthy.jsonl"),
        300,
        Duration::from_secs(60),
    );
    assert_eq!(
        healthy.iter().map(iam_seq).collect::<HashSet<_>>().len(),
        300
    );
    // The trapping pump gets everything too: each trap discards the
    // instance and the batch is retried on a fresh one.
    let trapped = wait_lines(&host.out().join("trap.jsonl"), 300, Duration::from_secs(60));
    assert_eq!(
        trapped.iter().map(iam_seq).collect::<HashSet<_>>().len(),
        300
    );
    wait_for(
        Duration::from_secs(10),
        "trap and timeout errors counted",
        || {
            let m = host.metrics();
            let traps = pumphouse::demo::metric_value(
                &m,
                "pumphouse_pump_errors_total{pump=\"trap\",kind=\"trap\"}",
            );
            let timeouts = pumphouse::demo::metric_value(
                &m,
                "pumphouse_pump_errors_total{pump=\"spin\",kind=\"timeout\"}",
            );
            (traps >= 1.0 && timeouts >= 2.0).then_some(())
        },
    );
    // The looping pump holds its batches, so nothing is acked yet and
    // readiness says which pump is failing and why.
    let (code, body) = http_get(&host.http, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("\"spin\"") && body.contains("timed out"),
        "{body}"
    );
    assert!(host.is_running(), "the host survived");
    let (waiting, claimed) = left_in_redis(&mut conn, IAM_KEY);
    assert_eq!(
        waiting + claimed,
        300,
        "nothing acked while a pump still holds the batches"
    );
}

#[test]
fn sigterm_mid_stream_loses_nothing() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    const N: u64 = 20_000;
    push_iam(&mut conn, N, 2);
    let dir = tempfile::tempdir().unwrap();
    // A sink that takes 5 ms per batch of 200: draining takes over half a
    // second, so the signal surely lands mid-stream.
    let config = HostConfig::new(&redis).source("batch_size", 200).pump(
        Pump::sink("file", fixture("trap"), "iam.jsonl")
            .config("every", 0)
            .config("delay_ms", 5),
    );
    let out = dir.path().join("out/iam.jsonl");
    let mut host = Host::start_in(dir, &config);
    wait_lines(&out, 1, Duration::from_secs(60));
    host.signal(Signal::SIGTERM);
    assert_eq!(
        host.wait_exit(Duration::from_secs(40)),
        Some(0),
        "graceful exit code"
    );
    let delivered: HashSet<u64> = read_jsonl(&out).iter().map(iam_seq).collect();
    let (waiting, claimed) = left_in_redis(&mut conn, IAM_KEY);
    assert_eq!(
        claimed, 0,
        "a graceful stop acks or finishes everything it claimed"
    );
    assert!(
        delivered.len() as u64 + waiting >= N,
        "delivered {} + waiting {waiting} < {N}",
        delivered.len()
    );
    assert!(waiting > 0, "the stop really happened mid-stream");

    // A new host picks up the rest; every record arrives.
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir2.path().join("out")).unwrap();
    std::fs::copy(&out, dir2.path().join("out/iam.jsonl")).unwrap();
    drop(host);
    let host = Host::start_in(dir2, &config);
    let out2 = host.out().join("iam.jsonl");
    wait_for(Duration::from_secs(60), "the rest delivered", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let all = read_jsonl(&out2);
    let seqs: HashSet<u64> = all.iter().map(iam_seq).collect();
    assert_eq!(seqs.len() as u64, N, "every record delivered");
    assert_eq!(all.len() as u64, N, "a graceful stop causes no duplicates");
}

#[test]
fn a_batch_claimed_by_a_killed_host_is_redelivered_after_its_lease() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 100, 3);
    // First host: its only pump never finishes a batch, so the claim is
    // in flight when the host is killed.
    let stuck = HostConfig::new(&redis)
        .source("batch_size", 40)
        .source("lease", "2s")
        .pump(Pump::new("stuck", fixture("spin")).set("timeout", "60s"));
    let mut first = Host::start(&stuck);
    wait_for(Duration::from_secs(30), "a claim", || {
        let (_, claimed) = left_in_redis(&mut conn, IAM_KEY);
        (claimed > 0).then_some(())
    });
    first.kill9();
    let (waiting, claimed) = left_in_redis(&mut conn, IAM_KEY);
    assert_eq!(
        waiting + claimed,
        100,
        "the claimed batch is still in Redis"
    );
    assert!(claimed > 0);

    let second = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 40)
            .source("lease", "2s")
            .pump(Pump::file("file", "iam.jsonl")),
    );
    let lines = wait_lines(
        &second.out().join("iam.jsonl"),
        100,
        Duration::from_secs(60),
    );
    assert_eq!(lines.iter().map(iam_seq).collect::<HashSet<_>>().len(), 100);
    wait_for(Duration::from_secs(10), "nothing left", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    assert!(second.metric("pumphouse_batches_reclaimed_total") >= 1.0);
}

#[test]
fn readiness_follows_redis_and_delivery_resumes_after_a_restart() {
    let mut redis = RedisServer::start().unwrap();
    let config = HostConfig::new(&redis).pump(Pump::file("file", "iam.jsonl"));
    let host = Host::start(&config);
    wait_for(Duration::from_secs(20), "ready", || {
        (http_get(&host.http, "/readyz").ok()?.0 == 200).then_some(())
    });
    redis.kill();
    wait_for(Duration::from_secs(20), "not ready", || {
        (http_get(&host.http, "/readyz").ok()?.0 == 503).then_some(())
    });
    assert_eq!(
        http_get(&host.http, "/healthz").unwrap().0,
        200,
        "alive while Redis is down"
    );
    std::thread::sleep(Duration::from_secs(2));
    redis.restart().unwrap();
    wait_for(Duration::from_secs(30), "ready again", || {
        (http_get(&host.http, "/readyz").ok()?.0 == 200).then_some(())
    });
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 500, 4);
    let lines = wait_lines(&host.out().join("iam.jsonl"), 500, Duration::from_secs(60));
    assert_eq!(lines.iter().map(iam_seq).collect::<HashSet<_>>().len(), 500);
    let log = host.log_text();
    let warnings = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("redis"))
        .count();
    assert!(
        warnings < 20,
        "no log flood while Redis was down ({warnings} warnings)"
    );
}

#[test]
fn a_plugin_that_allocates_without_bound_hits_its_memory_limit_alone() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 200, 6);
    let config = HostConfig::new(&redis)
        .source("batch_size", 50)
        .pump(Pump::file("healthy", "healthy.jsonl"))
        .pump(
            Pump::new("hog", fixture("hog"))
                .retry("50ms", "200ms")
                .sandbox("max_memory", "16MiB"),
        );
    let mut host = Host::start(&config);
    let lines = wait_lines(
        &host.out().join("healthy.jsonl"),
        200,
        Duration::from_secs(60),
    );
    assert_eq!(lines.iter().map(iam_seq).collect::<HashSet<_>>().len(), 200);
    wait_for(Duration::from_secs(20), "memory errors counted", || {
        (host.metric("pumphouse_pump_errors_total{pump=\"hog\",kind=\"memory\"}") >= 2.0)
            .then_some(())
    });
    let (_, body) = http_get(&host.http, "/readyz").unwrap();
    assert!(
        body.contains("\"hog\"") && body.contains("memory"),
        "{body}"
    );
    assert!(host.is_running());
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", host.pid()))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse().unwrap())
        })
        .unwrap();
    assert!(
        rss_kb < 512 * 1024,
        "the host's RSS stays bounded ({rss_kb} kB) while the plugin keeps hitting its limit"
    );
}

/// A tmpfs mounted on a directory for one test (the suite runs as root),
/// unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount a tmpfs on {} (needs root)", path.display());
        Tmpfs(path.to_path_buf())
    }

    fn resize(&self, size: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {} with size {size}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Distinct iam seqs in a JSON-lines file, once its last line is whole.
fn whole_seqs(path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    if !text.ends_with('\n') {
        return None;
    }
    let lines = text.lines().map(|l| serde_json::from_str(l).unwrap());
    Some(
        lines
            .map(|l: serde_json::Value| iam_seq(&l))
            .collect::<HashSet<_>>()
            .len() as u64,
    )
}

/// The `/readyz` entry of pump `name`.
fn readyz_pump(host: &Host, name: &str) -> Option<serde_json::Value> {
    let (_, body) = http_get(&host.http, "/readyz").ok()?;
    let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
    doc["pumps"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

#[test]
fn a_full_spool_disk_degrades_the_pump_and_it_recovers_when_space_returns() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    const N: u64 = 60_000;
    push_iam(&mut conn, N, 7);
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let tmpfs = Tmpfs::mount(&spool_dir, "5m");
    // The disk pump drains slower than records arrive, so its spool fills
    // the 5 MiB disk (60 000 records are ~20 MiB).
    let config = HostConfig::new(&redis)
        .source("batch_size", 500)
        .set("spool_dir", spool_dir.display().to_string())
        .pump(Pump::file("memory", "memory.jsonl"))
        .pump(
            Pump::sink("disk", fixture("trap"), "disk.jsonl")
                .config("every", 0)
                .config("delay_ms", 50)
                .disk(),
        );
    let host = Host::start_at(dir.path(), &config);
    let degraded = wait_for(Duration::from_secs(60), "the disk pump degraded", || {
        let p = readyz_pump(&host, "disk")?;
        (p["state"] == "degraded").then_some(p)
    });
    let error = degraded["error"].as_str().unwrap();
    assert!(
        error.starts_with("spool: No space left on device"),
        "{degraded}"
    );
    assert!(host.metric("pumphouse_pump_errors_total{pump=\"disk\",kind=\"spool\"}") >= 1.0);
    let (waiting, claimed) = left_in_redis(&mut conn, IAM_KEY);
    assert!(
        waiting + claimed > 0,
        "the records the spool could not take are still in Redis"
    );

    tmpfs.resize("400m");
    let disk_out = host.out().join("disk.jsonl");
    let memory_out = host.out().join("memory.jsonl");
    wait_for(
        Duration::from_secs(120),
        "every record in both sinks",
        || (whole_seqs(&disk_out)? == N && whole_seqs(&memory_out)? == N).then_some(()),
    );
    wait_for(Duration::from_secs(30), "Redis and the spool empty", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)
            && host.metric("pumphouse_spool_records{pump=\"disk\"}") == 0.0)
            .then_some(())
    });
    wait_for(Duration::from_secs(30), "the disk pump ok again", || {
        (readyz_pump(&host, "disk")?["state"] == "ok").then_some(())
    });
    // The disk was found full before redb hit it (its sparse file would
    // have wedged removals), and the spool recovered by itself.
    let log = host.log_text();
    assert!(log.contains("bytes free; an append of"), "{log}");
    assert!(log.contains("the spool works again"));
    drop(host);
}

/// Distinct iam seqs in a JSON-lines file (every line whole).
fn seq_set(path: &std::path::Path) -> HashSet<u64> {
    read_jsonl(path).iter().map(iam_seq).collect()
}

/// `when_full = "drop_oldest"` with the spool's disk full (a 5 MiB tmpfs
/// and no `max_spool_bytes`, so the disk is the limit): the oldest spooled
/// batches make way and are counted, so nothing waits on the slow disk
/// pump: the memory pump gets every record and Redis drains. Each record
/// is either delivered by the disk pump or counted as dropped, never both
/// and never neither; the newest records are among the delivered. Once
/// space returns, new records are spooled and delivered without a drop.
///
/// redb grows its file sparsely, so a disk allowed to fill up would fail
/// removals too: the spool refuses appends short of that (statvfs).
///
/// Ignored: with that, Redis drains and the spool empties, but the counts
/// do not add up yet: 60 500 of 60 000, one batch both delivered and
/// counted as dropped. A discard picks its victims, skipping the batch in
/// delivery, and the lane can move on to one of them before the discard
/// commits. Run it with `--ignored` to reproduce.
#[test]
#[ignore = "a drop_oldest discard can race the lane's next read (see the doc)"]
fn drop_oldest_on_a_full_spool_disk_drops_and_counts_the_oldest_and_recovers() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    const N: u64 = 60_000;
    const LATER: u64 = 5_000;
    push_iam(&mut conn, N, 8);
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let tmpfs = Tmpfs::mount(&spool_dir, "5m");
    let config = HostConfig::new(&redis)
        .source("batch_size", 500)
        .set("spool_dir", spool_dir.display().to_string())
        .pump(Pump::file("memory", "memory.jsonl"))
        .pump(
            Pump::sink("disk", fixture("trap"), "disk.jsonl")
                .config("every", 0)
                .config("delay_ms", 50)
                .disk()
                .set("when_full", "drop_oldest"),
        );
    let host = Host::start_at(dir.path(), &config);
    let disk_out = host.out().join("disk.jsonl");
    let memory_out = host.out().join("memory.jsonl");
    wait_for(
        Duration::from_secs(120),
        "every record in the memory pump",
        || (whole_seqs(&memory_out)? == N).then_some(()),
    );
    wait_for(
        Duration::from_secs(120),
        "Redis drained and the spool empty",
        || {
            (left_in_redis(&mut conn, IAM_KEY) == (0, 0)
                && host.metric("pumphouse_spool_records{pump=\"disk\"}") == 0.0)
                .then_some(())
        },
    );
    let dropped = host.metric("pumphouse_spool_dropped_records_total{pump=\"disk\"}") as u64;
    wait_for(
        Duration::from_secs(10),
        "the disk pump's file whole",
        || whole_seqs(&disk_out),
    );
    let delivered = seq_set(&disk_out);
    eprintln!(
        "drop_oldest on a 5 MiB disk: {} delivered, {dropped} dropped of {N}",
        delivered.len()
    );
    assert!(dropped > 0, "the 5 MiB disk cannot hold the backlog");
    assert!(!delivered.is_empty());
    assert_eq!(
        delivered.len() as u64 + dropped,
        N,
        "each record delivered or counted as dropped"
    );
    assert!(
        delivered.contains(&(N - 1)),
        "the newest record is kept, the oldest make way"
    );
    let log = host.log_text();
    assert!(
        log.contains("discarded the oldest records"),
        "the drops are logged"
    );
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());

    // Space returns: new records are spooled and delivered, none dropped.
    tmpfs.resize("400m");
    let mut sampler = pumphouse::produce::Sampler::new(8);
    let later: Vec<_> = (N..N + LATER).map(|i| sampler.iam(i, T0)).collect();
    push_iam_records(&mut conn, IAM_KEY, &later);
    wait_for(
        Duration::from_secs(60),
        "the later records delivered",
        || {
            whole_seqs(&disk_out)?;
            let seqs = seq_set(&disk_out);
            (N..N + LATER).all(|s| seqs.contains(&s)).then_some(())
        },
    );
    wait_for(Duration::from_secs(30), "the disk pump ok", || {
        (readyz_pump(&host, "disk")?["state"] == "ok").then_some(())
    });
    assert_eq!(
        host.metric("pumphouse_spool_dropped_records_total{pump=\"disk\"}") as u64,
        dropped,
        "nothing dropped once there is space"
    );
    drop(host);
}

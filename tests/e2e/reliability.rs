//! The fault-injection suite: hosts killed with SIGKILL, Redis restarted,
//! sinks failing on cue, poison records, oversized batches, two instances,
//! stream takeover. Every test runs its own redis-server and real plugins.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::Rng;

use crate::harness::*;

use pumphouse::record::IAM_KEY;

/// The iam sample `seq` of every whole line in a JSON Lines file, and how
/// many lines were not whole records (a write torn by SIGKILL).
fn seqs_in(path: &Path) -> (Vec<u64>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seqs = Vec::new();
    let mut torn = 0;
    for line in text.lines() {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => seqs.push(iam_seq(&v)),
            Err(_) => torn += 1,
        }
    }
    (seqs, torn)
}

/// (distinct seqs below `n`, duplicates) in a sink's output.
fn coverage(path: &Path, n: u64) -> (usize, usize) {
    let (seqs, _) = seqs_in(path);
    let distinct: HashSet<u64> = seqs.iter().copied().filter(|s| *s < n).collect();
    (distinct.len(), seqs.len() - distinct.len())
}

fn iam_bytes(seqs: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    crate::harness::iam_bytes(7, seqs)
}

/// A file sink taking `delay_ms` per batch (the `trap` fixture, never
/// trapping), so runs last long enough for faults to land mid-stream.
fn slow_pump(delay_ms: i64) -> Pump {
    Pump::sink("slow", fixture("trap"), "iam.jsonl")
        .config("every", 0)
        .config("delay_ms", delay_ms)
}

/// An `XRANGE` reply.
type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;

/// A pump of the `faulty` fixture writing to `/out/<file>`.
fn faulty_pump(name: &str, file: &str) -> Pump {
    Pump::sink(name, fixture("faulty"), file)
}

fn payload(e: &pumphouse::dlq::Entry) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(&e.payload)
        .unwrap()
}

fn seq_of_msgpack(bytes: &[u8]) -> u64 {
    let v = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
    let request = v
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_str() == Some("Request"))
        .and_then(|(_, v)| v.as_str())
        .unwrap();
    let req: serde_json::Value = serde_json::from_str(request).unwrap();
    req["context"]["seq"].as_u64().unwrap()
}

#[test]
fn sigkill_at_random_points_loses_nothing_on_disk_and_memory_pumps() {
    // PUMPHOUSE_SOAK=1 runs the long variant: 1 000 000 records, 40 kills.
    let soak = std::env::var_os("PUMPHOUSE_SOAK").is_some();
    let total: u64 = if soak { 1_000_000 } else { 200_000 };
    let planned: usize = if soak { 40 } else { 10 };
    const BATCH: u64 = 500;
    const IN_FLIGHT: u64 = 4;
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig::new(&redis)
        .set("spool_dir", "spool")
        .source("batch_size", BATCH as i64)
        .source("lease", "2s")
        .pump(
            Pump::file("disk", "disk.jsonl")
                .disk()
                .set("max_in_flight_batches", IN_FLIGHT as i64),
        )
        .pump(Pump::file("memory", "memory.jsonl").set("max_in_flight_batches", IN_FLIGHT as i64));
    // The producer pushes steadily while the host is killed and restarted.
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let url = redis.url();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
            let start = Instant::now();
            for (i, chunk) in (0..total).step_by(2000).enumerate() {
                push(
                    &mut conn,
                    IAM_KEY,
                    &iam_bytes(chunk..(chunk + 2000).min(total)),
                );
                // About 20 000 records/s.
                let due = start + Duration::from_millis(100 * (i as u64 + 1));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            done.store(true, Ordering::Release);
        })
    };
    let seed: u64 = std::env::var("PUMPHOUSE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("kill schedule seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut kills = 0;
    let mut mid_flow = 0;
    while kills < planned {
        let mut host = Host::start_at(dir.path(), &config);
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1200)));
        if host.metric("pumphouse_records_claimed_total") > 0.0 {
            mid_flow += 1;
        }
        host.kill9();
        kills += 1;
    }
    producer.join().unwrap();
    assert!(done.load(Ordering::Acquire));

    let host = Host::start_at(dir.path(), &config);
    let out = dir.path().join("out");
    let mut conn = redis_conn(&redis);
    wait_for(
        Duration::from_secs(180),
        "every record in both sinks, nothing left in Redis or the spool",
        || {
            let disk = coverage(&out.join("disk.jsonl"), total).0;
            let memory = coverage(&out.join("memory.jsonl"), total).0;
            (disk == total as usize
                && memory == total as usize
                && left_in_redis(&mut conn, IAM_KEY) == (0, 0)
                && host.metric("pumphouse_spool_records{pump=\"disk\"}") == 0.0)
                .then_some(())
        },
    );
    let (disk_seqs, disk_torn) = seqs_in(&out.join("disk.jsonl"));
    let (memory_seqs, memory_torn) = seqs_in(&out.join("memory.jsonl"));
    let disk_dups = disk_seqs.len() - total as usize;
    let memory_dups = memory_seqs.len() - total as usize;
    // A kill can repeat at most what was in flight: the claims waiting for
    // decode and dispatch plus each lane's queue, and the spool's batch in
    // delivery, per kill.
    let bound = planned * ((IN_FLIGHT + 4 + 2) * BATCH) as usize;
    eprintln!(
        "kills {kills} ({mid_flow} after claiming had begun); records checked {total} per sink; duplicates: disk {disk_dups}, memory {memory_dups} (bound {bound}); torn lines: disk {disk_torn}, memory {memory_torn}"
    );
    assert!(disk_dups <= bound, "disk duplicates {disk_dups} > {bound}");
    assert!(
        memory_dups <= bound,
        "memory duplicates {memory_dups} > {bound}"
    );
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
}

#[test]
fn redis_restarted_mid_run_with_aof_loses_nothing_and_the_host_recovers() {
    const N: u64 = 30_000;
    let mut redis = RedisServer::start_with(true).unwrap();
    let mut conn = redis_conn(&redis);
    push(&mut conn, IAM_KEY, &iam_bytes(0..N));
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 200)
            .source("lease", "3s")
            // A slow sink keeps the run going while Redis restarts.
            .pump(slow_pump(20)),
    );
    let path = host.out().join("iam.jsonl");
    wait_for(Duration::from_secs(60), "some deliveries", || {
        (coverage(&path, N).0 > 2000).then_some(())
    });
    redis.kill();
    std::thread::sleep(Duration::from_secs(2));
    redis.restart().unwrap();
    wait_for(Duration::from_secs(180), "every record delivered", || {
        (coverage(&path, N).0 == N as usize).then_some(())
    });
    let mut conn = redis_conn(&redis);
    wait_for(Duration::from_secs(30), "nothing left in Redis", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    assert!(host.metric("pumphouse_redis_errors_total{op=\"claim\"}") >= 1.0);
    let (_, dups) = coverage(&path, N);
    eprintln!("redis restart: {N} records delivered, {dups} duplicates");
}

#[test]
fn a_failing_disk_buffered_pump_does_not_hold_back_the_healthy_one() {
    const N: u64 = 100_000;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let flag = dir.path().join("out/outage");
    let host = Host::start_in(
        dir,
        HostConfig::new(&redis)
            .set("spool_dir", "spool")
            .pump(Pump::file("healthy", "healthy.jsonl"))
            .pump(
                faulty_pump("failing", "failing.jsonl")
                    .disk()
                    .retry("20ms", "200ms")
                    .config("fail_while_exists", "/out/outage"),
            ),
    );
    let written = |pump: &str| {
        host.metric(&format!(
            "pumphouse_pump_records_written_total{{pump=\"{pump}\"}}"
        )) as u64
    };
    // How long the healthy pump takes for N records from a full list.
    let mut timed = |range: std::ops::Range<u64>| {
        let target = range.end;
        push(&mut conn, IAM_KEY, &iam_bytes(range));
        let started = Instant::now();
        wait_for(Duration::from_secs(120), "the healthy pump", || {
            (written("healthy") >= target).then_some(())
        });
        started.elapsed()
    };
    // Both pumps healthy.
    let both_ok = timed(0..N);
    wait_for(Duration::from_secs(60), "the other pump", || {
        (written("failing") == N).then_some(())
    });
    // The second pump's sink fails throughout the next N records.
    std::fs::write(&flag, b"").unwrap();
    let one_failing = timed(N..2 * N);
    assert_eq!(
        coverage(&host.out().join("healthy.jsonl"), 2 * N).0,
        2 * N as usize
    );
    // Everything is acked in Redis; the failing pump's share waits in its spool.
    wait_for(Duration::from_secs(30), "Redis drained", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    assert_eq!(written("failing"), N);
    assert_eq!(
        host.metric("pumphouse_spool_records{pump=\"failing\"}"),
        N as f64
    );
    let (code, body) = http_get(&host.http, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("failing") && body.contains("outage"),
        "{body}"
    );

    // The outage ends: the failing pump catches up from its spool.
    std::fs::remove_file(&flag).unwrap();
    let failing = host.out().join("failing.jsonl");
    wait_for(
        Duration::from_secs(120),
        "the failing pump catching up",
        || (coverage(&failing, 2 * N).0 == 2 * N as usize).then_some(()),
    );
    wait_for(Duration::from_secs(30), "the spool empty", || {
        (host.metric("pumphouse_spool_records{pump=\"failing\"}") == 0.0).then_some(())
    });
    wait_for(Duration::from_secs(10), "ready again", || {
        (http_get(&host.http, "/readyz").unwrap().0 == 200).then_some(())
    });
    let rate = |d: Duration| N as f64 / d.as_secs_f64();
    eprintln!(
        "healthy pump: {:.0} records/s with the other pump healthy, {:.0} records/s while it failed",
        rate(both_ok),
        rate(one_failing)
    );
}

#[test]
fn poison_records_are_dead_lettered_exactly_and_dlq_replays_them() {
    const N: u64 = 5_000;
    let poison: [u64; 4] = [17, 999, 1500, 4321];
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let sent = iam_bytes(0..N);
    push(&mut conn, IAM_KEY, &sent);
    let list = Vec::from(poison.map(|s| s as i64));
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 1000)
            .pump(faulty_pump("partial", "partial.jsonl").config("reject_seqs", list.clone()))
            .pump(faulty_pump("bisect", "bisect.jsonl").config("invalid_seqs", list)),
    );
    for file in ["partial.jsonl", "bisect.jsonl"] {
        let path = host.out().join(file);
        let lines = wait_lines(&path, (N - 4) as usize, Duration::from_secs(60));
        let seqs: HashSet<u64> = lines.iter().map(iam_seq).collect();
        assert_eq!(seqs.len(), lines.len(), "{file}: no duplicates");
        let expected: HashSet<u64> = (0..N).filter(|s| !poison.contains(s)).collect();
        assert_eq!(seqs, expected, "{file}");
    }
    let entries = wait_for(Duration::from_secs(30), "8 dead letters", || {
        let e = dead_letters(&mut conn, IAM_KEY);
        (e.len() == 8).then_some(e)
    });
    let mut by_pump: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &entries {
        let bytes = payload(e);
        let seq = seq_of_msgpack(&bytes);
        assert_eq!(bytes, sent[seq as usize], "original bytes kept");
        assert_eq!(e.source, IAM_KEY);
        by_pump
            .entry(e.pump.clone().unwrap())
            .or_default()
            .push(seq);
    }
    for (pump, reason) in [
        ("partial", "is rejected by this sink"),
        ("bisect", "cannot take"),
    ] {
        let mut seqs = by_pump.remove(pump).unwrap();
        seqs.sort();
        assert_eq!(seqs, poison, "{pump}");
        assert!(entries
            .iter()
            .filter(|e| e.pump.as_deref() == Some(pump))
            .all(|e| e.reason.contains(reason)));
    }
    wait_for(Duration::from_secs(10), "all acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    assert!(host.metric("pumphouse_records_dead_lettered_total{pump=\"partial\"}") == 4.0);

    // The dlq commands: list, replay one pump's entries, purge the rest.
    let cfg = host.dir.join("pumphouse.toml");
    let cfg = cfg.display().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["dlq"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", &cfg]);
        let (code, out, _) = pumphouse(&all);
        (code, out)
    };
    let (code, listed) = run(&["list", "--pump", "bisect"]);
    assert_eq!(code, 0);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert!(
        listed.lines().all(|l| l.contains("pump=bisect")),
        "{listed}"
    );
    let (code, out) = run(&["replay", "--pump", "partial", "--to", "replayed"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed 4 records"), "{out}");
    let replayed: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg("replayed")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    let mut seqs: Vec<u64> = replayed.iter().map(|b| seq_of_msgpack(b)).collect();
    seqs.sort();
    assert_eq!(seqs, poison);
    assert_eq!(dead_letters(&mut conn, IAM_KEY).len(), 4);
    assert_eq!(run(&["purge"]).0, 1, "purge without --yes refuses");
    assert_eq!(dead_letters(&mut conn, IAM_KEY).len(), 4);
    let (code, out) = run(&["purge", "--yes"]);
    assert_eq!(code, 0, "{out}");
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
}

#[test]
fn oversized_batches_are_split_until_the_sink_takes_them() {
    const N: u64 = 3_000;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push(&mut conn, IAM_KEY, &iam_bytes(0..N));
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 1000)
            // Refuses anything above 40 000 bytes: the host halves on demand.
            .pump(faulty_pump("halved", "halved.jsonl").config("too_large_above", 40000))
            // The same limit set on the pump: batches are cut before sending.
            .pump(
                faulty_pump("presplit", "presplit.jsonl")
                    .set("max_batch_bytes", 40000)
                    .config("too_large_above", 40000),
            ),
    );
    for file in ["halved.jsonl", "presplit.jsonl"] {
        let lines = wait_lines(&host.out().join(file), N as usize, Duration::from_secs(60));
        let seqs: HashSet<u64> = lines.iter().map(iam_seq).collect();
        assert_eq!(seqs.len(), N as usize, "{file}: each record once");
    }
    assert!(host.metric("pumphouse_pump_errors_total{pump=\"halved\",kind=\"too_large\"}") > 0.0);
    assert_eq!(
        host.metric("pumphouse_pump_errors_total{pump=\"presplit\",kind=\"too_large\"}"),
        0.0
    );
    assert!(dead_letters(&mut conn, IAM_KEY).is_empty());
}

#[test]
fn retries_stop_after_max_attempts_and_the_records_are_dead_lettered() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push(&mut conn, IAM_KEY, &iam_bytes(0..50));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/outage"), b"").unwrap();
    let _host = Host::start_in(
        dir,
        HostConfig::new(&redis).pump(
            faulty_pump("down", "down.jsonl")
                .retry("10ms", "20ms")
                .set("retry.max_attempts", 3)
                .config("fail_while_exists", "/out/outage"),
        ),
    );
    let entries = wait_for(Duration::from_secs(30), "50 dead letters", || {
        let e = dead_letters(&mut conn, IAM_KEY);
        (e.len() == 50).then_some(e)
    });
    assert!(
        entries
            .iter()
            .all(|e| e.reason.starts_with("gave up after 3 attempts: outage")),
        "{:?}",
        entries[0].reason
    );
    wait_for(Duration::from_secs(10), "acked", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
}

#[test]
fn a_rate_limited_pump_is_paced_and_delivers_everything() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push(&mut conn, IAM_KEY, &iam_bytes(0..3000));
    let host = Host::start(
        HostConfig::new(&redis)
            .pump(Pump::file("paced", "paced.jsonl").set("rate_limit.records_per_second", 1000)),
    );
    let lines = wait_lines(
        &host.out().join("paced.jsonl"),
        3000,
        Duration::from_secs(60),
    );
    assert_eq!(
        lines.iter().map(iam_seq).collect::<HashSet<_>>().len(),
        3000
    );
    // 3000 records at 1000/s with a 1000-record burst must have waited.
    assert!(host.metric("pumphouse_pump_throttled_milliseconds_total{pump=\"paced\"}") > 0.0);
}

#[test]
fn two_instances_share_one_source_and_the_survivor_finishes_after_a_kill() {
    const N: u64 = 20_000;
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push(&mut conn, IAM_KEY, &iam_bytes(0..N));
    // A sink that takes 10 ms per batch, so both instances get work.
    let config = HostConfig::new(&redis)
        .source("batch_size", 100)
        .source("lease", "2s")
        .pump(slow_pump(10));
    let a = Host::start(&config);
    let mut b = Host::start(&config);
    let (pa, pb) = (a.out().join("iam.jsonl"), b.out().join("iam.jsonl"));
    wait_for(Duration::from_secs(60), "both instances delivering", || {
        (coverage(&pa, N).0 > 2000 && coverage(&pb, N).0 > 2000).then_some(())
    });
    let (share_a, share_b) = (coverage(&pa, N).0, coverage(&pb, N).0);
    b.kill9();
    wait_for(Duration::from_secs(120), "every record delivered", || {
        let mut all: HashSet<u64> = seqs_in(&pa).0.into_iter().collect();
        all.extend(seqs_in(&pb).0);
        (all.len() == N as usize).then_some(())
    });
    wait_for(Duration::from_secs(30), "nothing left", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    eprintln!("while both ran: instance a {share_a}, instance b {share_b} records");
}

#[test]
fn a_stream_consumer_killed_with_pending_entries_is_taken_over_and_poison_dead_lettered() {
    const N: u64 = 2_000;
    const KEY: &str = "events";
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(KEY)
        .arg("pumphouse")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut conn)
        .unwrap();
    // A poison entry: a consumer that crashes on it already took it twice.
    let poison = iam_bytes(900_000..900_001).remove(0);
    let poison_id: String = redis::cmd("XADD")
        .arg(KEY)
        .arg("*")
        .arg("record")
        .arg(&poison)
        .query(&mut conn)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("pumphouse")
        .arg("ghost")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(KEY)
        .arg(">")
        .query(&mut conn)
        .unwrap();
    // Its second delivery (XCLAIM counts one), after which it crashed again.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(KEY)
        .arg("pumphouse")
        .arg("ghost")
        .arg(0)
        .arg(&poison_id)
        .query(&mut conn)
        .unwrap();
    let mut pipe = redis::pipe();
    for r in iam_bytes(0..N) {
        pipe.cmd("XADD")
            .arg(KEY)
            .arg("*")
            .arg("record")
            .arg(r)
            .ignore();
    }
    let () = pipe.query(&mut conn).unwrap();

    let src = HostConfig::new(&redis)
        .source("type", "stream")
        .source("key", KEY)
        .source("batch_size", 300)
        .source("lease", "2s")
        .source("max_deliveries", 2);
    // The first consumer's sink never returns: its entries stay pending.
    let mut first = Host::start(
        src.clone()
            .pump(Pump::new("stuck", fixture("spin")).set("timeout", "60s")),
    );
    wait_for(Duration::from_secs(30), "entries pending", || {
        let summary: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(KEY)
            .arg("pumphouse")
            .query(&mut conn)
            .unwrap();
        matches!(summary.first(), Some(redis::Value::Int(n)) if *n > 1).then_some(())
    });
    first.kill9();

    let second = Host::start(src.pump(Pump::file("file", "events.jsonl")));
    let path = second.out().join("events.jsonl");
    wait_for(Duration::from_secs(60), "all entries delivered", || {
        (coverage(&path, N).0 == N as usize).then_some(())
    });
    let dead = wait_for(
        Duration::from_secs(30),
        "the poison entry dead-lettered",
        || {
            let entries: StreamEntries = redis::cmd("XRANGE")
                .arg("pumphouse:dead-letter:events")
                .arg("-")
                .arg("+")
                .query(&mut conn)
                .unwrap();
            (!entries.is_empty()).then_some(entries)
        },
    );
    assert_eq!(dead.len(), 1);
    let entry: pumphouse::dlq::Entry = serde_json::from_slice(&dead[0].1[0].1).unwrap();
    assert!(entry.reason.contains("poison"), "{}", entry.reason);
    assert_eq!(payload(&entry), poison);
    wait_for(Duration::from_secs(30), "nothing pending", || {
        let summary: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(KEY)
            .arg("pumphouse")
            .query(&mut conn)
            .unwrap();
        matches!(summary.first(), Some(redis::Value::Int(0))).then_some(())
    });
    assert!(!seqs_in(&path).0.contains(&900_000));
}

#[test]
fn a_damaged_spool_is_set_aside_and_the_host_keeps_running() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/outage"), b"").unwrap();
    let config = HostConfig::new(&redis).set("spool_dir", "spool").pump(
        faulty_pump("spooled", "spooled.jsonl")
            .disk()
            .config("fail_while_exists", "/out/outage"),
    );
    let mut host = Host::start_at(dir.path(), &config);
    push(&mut conn, IAM_KEY, &iam_bytes(0..2000));
    wait_for(Duration::from_secs(30), "records spooled", || {
        (host.metric("pumphouse_spool_records{pump=\"spooled\"}") == 2000.0).then_some(())
    });
    host.kill9();
    // Damage the file the way a failing disk would: garbage over its start.
    let spool = dir.path().join("spool/spooled.spool");
    let mut bytes = std::fs::read(&spool).unwrap();
    let n = bytes.len().min(4096);
    bytes[..n].fill(0xa5);
    std::fs::write(&spool, bytes).unwrap();
    let host = Host::start_at(dir.path(), &config);
    // The spool opens once Redis is connected, after /healthz answers.
    wait_for(Duration::from_secs(30), "the damage counted", || {
        (host.metric("pumphouse_spool_corrupt_total{pump=\"spooled\"}") >= 1.0).then_some(())
    });
    let aside = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(aside, "the damaged file is kept for inspection");
    // The pump keeps working with a fresh spool.
    std::fs::remove_file(dir.path().join("out/outage")).unwrap();
    push(&mut conn, IAM_KEY, &iam_bytes(5000..5100));
    let path = dir.path().join("out/spooled.jsonl");
    wait_for(Duration::from_secs(30), "new records delivered", || {
        (seqs_in(&path).0.iter().filter(|s| **s >= 5000).count() == 100).then_some(())
    });
}

#[test]
fn one_damaged_byte_after_kill9_costs_only_the_entry_holding_it() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(dir.path().join("out/outage"), b"").unwrap();
    const N: u64 = 2000;
    let config = HostConfig::new(&redis)
        .source("batch_size", 100)
        .set("spool_dir", "spool")
        .pump(
            faulty_pump("spooled", "spooled.jsonl")
                .disk()
                .config("fail_while_exists", "/out/outage"),
        );
    let mut host = Host::start_at(dir.path(), &config);
    let records = iam_bytes(0..N);
    push(&mut conn, IAM_KEY, &records);
    wait_for(Duration::from_secs(30), "records spooled", || {
        (host.metric("pumphouse_spool_records{pump=\"spooled\"}") == N as f64).then_some(())
    });
    host.kill9();
    // One byte inside one spooled record changes, the way a bad sector
    // would change it.
    let spool = dir.path().join("spool/spooled.spool");
    let mut bytes = std::fs::read(&spool).unwrap();
    let victim = &records[1234];
    let mut flipped = 0;
    for at in 0..bytes.len() - victim.len() {
        if bytes[at..at + victim.len()] == victim[..] {
            bytes[at + victim.len() / 2] ^= 0x01;
            flipped += 1;
        }
    }
    assert!(flipped >= 1, "the record is in the spool file");
    std::fs::write(&spool, bytes).unwrap();
    std::fs::remove_file(dir.path().join("out/outage")).unwrap();

    let host = Host::start_at(dir.path(), &config);
    wait_for(Duration::from_secs(60), "the spool drained", || {
        (host.metric("pumphouse_spool_corrupt_total{pump=\"spooled\"}") >= 1.0
            && host.metric("pumphouse_spool_records{pump=\"spooled\"}") == 0.0)
            .then_some(())
    });
    let path = dir.path().join("out/spooled.jsonl");
    let lost = host.metric("pumphouse_spool_records_lost_total{pump=\"spooled\"}") as u64;
    let delivered = wait_for(Duration::from_secs(30), "the rest delivered", || {
        let (d, _) = coverage(&path, N);
        (d as u64 + lost == N).then_some(d)
    });
    let (seqs, _) = seqs_in(&path);
    assert!(!seqs.contains(&1234), "the damaged record is not delivered");
    assert!(
        (1..=100).contains(&lost),
        "one batch entry of at most 100 records lost, not the spool: lost {lost}, delivered {delivered}"
    );
    let aside = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(!aside, "the file was not set aside");
    assert!(host
        .log_text()
        .contains(&format!("its {lost} records are lost")));
}

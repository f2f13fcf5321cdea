//! Records pushed in the producers' real encodings come out of the sinks
//! complete and intact.

use std::time::Duration;

use base64::Engine as _;
use pumphouse::produce::{encode_iam, encode_tyk, Sampler};
use serde_json::{json, Value};

use crate::harness::*;

use pumphouse::record::IAM_KEY;
use pumphouse::record::TYK_KEY;

#[test]
fn iam_records_reach_the_file_sink_field_by_field() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let mut sampler = Sampler::new(3);
    let records: Vec<_> = (0..1000)
        .map(|i| sampler.iam(i, 1_763_700_000 + i as i64))
        .collect();
    push_iam_records(&mut conn, IAM_KEY, &records);

    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 128)
            .pump(Pump::file("file", "iam.jsonl")),
    );
    let lines = wait_lines(&host.out().join("iam.jsonl"), 1000, Duration::from_secs(60));
    assert_iam_lines(&lines, &records);
    wait_for(Duration::from_secs(10), "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    wait_for(Duration::from_secs(5), "acked metric", || {
        (host.metric("pumphouse_records_acked_total") == 1000.0).then_some(())
    });
    assert_eq!(
        host.metric("pumphouse_pump_records_written_total{pump=\"file\"}"),
        1000.0
    );
}

/// Appends `key: value` (a string) to an encoded map.
fn with_extra_field(mut bytes: Vec<u8>, key: &str, value: &str) -> Vec<u8> {
    // Tyk's record map has 32 entries: a map16 header (0xde, u16).
    assert_eq!(bytes[0], 0xde);
    let n = u16::from_be_bytes([bytes[1], bytes[2]]) + 1;
    bytes[1..3].copy_from_slice(&n.to_be_bytes());
    rmp::encode::write_str(&mut bytes, key).unwrap();
    rmp::encode::write_str(&mut bytes, value).unwrap();
    bytes
}

#[test]
fn tyk_records_from_sharded_keys_with_an_unknown_field_arrive_intact() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let mut sampler = Sampler::new(9);
    let records: Vec<_> = (0..400).map(|i| sampler.tyk(i, 1_763_700_000)).collect();
    // Spread over the base key and three shards, as Tyk does.
    for (i, r) in records.iter().enumerate() {
        let key = match i % 4 {
            0 => TYK_KEY.to_string(),
            s => format!("{TYK_KEY}_{}", s - 1),
        };
        push(
            &mut conn,
            &key,
            &[with_extra_field(
                encode_tyk(r),
                "FutureField",
                "from a newer gateway",
            )],
        );
    }
    let host = Host::start(
        HostConfig::new(&redis)
            .tyk()
            .source("shards", 3)
            .source("batch_size", 64)
            .pump(Pump::file("file", "tyk.jsonl")),
    );
    let lines = wait_lines(&host.out().join("tyk.jsonl"), 400, Duration::from_secs(60));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut seen = std::collections::HashSet::new();
    for l in &lines {
        let path = l["Path"].as_str().unwrap();
        let seq: usize = path.rsplit('/').next().unwrap().parse().unwrap();
        assert!(seen.insert(seq), "seq {seq} twice");
        let r = &records[seq];
        assert_eq!(l["Method"], r.method.as_str());
        assert_eq!(l["Host"], r.host.as_str());
        assert_eq!(l["RawPath"], r.raw_path.as_str());
        assert_eq!(l["ContentLength"], r.content_length);
        assert_eq!(l["ResponseCode"], r.response_code);
        assert_eq!(l["APIID"], r.api_id.as_str());
        assert_eq!(l["OrgID"], r.org_id.as_str());
        assert_eq!(l["APIKey"], r.api_key.as_str());
        assert_eq!(l["RequestTime"], r.request_time);
        assert_eq!(l["TimeStamp"], rfc3339(r.timestamp.0, r.timestamp.1));
        assert_eq!(l["ExpireAt"], rfc3339(r.expire_at.0, r.expire_at.1));
        assert_eq!(
            b64.decode(l["RawRequest"].as_str().unwrap()).unwrap(),
            b64.decode(&r.raw_request).unwrap()
        );
        assert_eq!(l["Geo"]["Country"]["ISOCode"], r.geo_country.as_str());
        assert_eq!(l["Geo"]["City"]["GeoNameID"], r.geo_city_id);
        assert_eq!(l["Geo"]["City"]["Names"]["en"], "London");
        assert_eq!(l["Geo"]["Location"]["Latitude"], r.geo_lat);
        assert_eq!(l["Network"]["BytesOut"], r.network[3]);
        assert_eq!(
            l["Latency"],
            json!({"Total": r.latency[0], "Upstream": r.latency[1], "Gateway": r.latency[2]})
        );
        assert_eq!(l["Tags"], json!(r.tags));
        assert_eq!(l["TrackPath"], r.track_path);
        assert_eq!(l["ListenPath"], r.listen_path.as_str());
        assert_eq!(
            l["FutureField"], "from a newer gateway",
            "unknown fields pass through"
        );
    }
    assert_eq!(seen.len(), 400);
    for key in [
        TYK_KEY.to_string(),
        format!("{TYK_KEY}_0"),
        format!("{TYK_KEY}_2"),
    ] {
        wait_for(Duration::from_secs(10), "acks", || {
            (left_in_redis(&mut conn, &key) == (0, 0)).then_some(())
        });
    }
}

#[test]
fn a_corrupt_record_is_dead_lettered_and_its_neighbours_delivered() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let mut sampler = Sampler::new(5);
    let good: Vec<Vec<u8>> = (0..4)
        .map(|i| encode_iam(&sampler.iam(i, 1_763_700_000)))
        .collect();
    let truncated = good[0][..good[0].len() - 5].to_vec();
    let not_a_map = vec![0x93, 1, 2, 3];
    push(
        &mut conn,
        IAM_KEY,
        &[
            good[0].clone(),
            truncated.clone(),
            good[1].clone(),
            not_a_map.clone(),
            good[2].clone(),
            good[3].clone(),
        ],
    );

    let host = Host::start(HostConfig::new(&redis).pump(Pump::file("file", "iam.jsonl")));
    let lines = wait_lines(&host.out().join("iam.jsonl"), 4, Duration::from_secs(60));
    let mut seqs: Vec<u64> = lines.iter().map(iam_seq).collect();
    seqs.sort();
    assert_eq!(seqs, vec![0, 1, 2, 3]);

    let dl_key = format!("pumphouse:dead-letter:{IAM_KEY}");
    let entries: Vec<String> = wait_for(Duration::from_secs(10), "dead letters", || {
        let v: Vec<String> = redis::cmd("LRANGE")
            .arg(&dl_key)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        (v.len() == 2).then_some(v)
    });
    let b64 = base64::engine::general_purpose::STANDARD;
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        b64.decode(entries[0]["payload"].as_str().unwrap()).unwrap(),
        truncated
    );
    assert!(
        entries[0]["reason"]
            .as_str()
            .unwrap()
            .contains("undecodable"),
        "{}",
        entries[0]
    );
    assert_eq!(entries[0]["source"], IAM_KEY);
    assert_eq!(entries[0]["pump"], Value::Null);
    assert_eq!(
        b64.decode(entries[1]["payload"].as_str().unwrap()).unwrap(),
        not_a_map
    );
    assert!(
        entries[1]["reason"]
            .as_str()
            .unwrap()
            .contains("expected a map"),
        "{}",
        entries[1]
    );
    wait_for(Duration::from_secs(5), "metrics", || {
        (host.metric("pumphouse_records_undecodable_total") == 2.0).then_some(())
    });
    assert_eq!(
        host.metric("pumphouse_records_dead_lettered_total{pump=\"source\"}"),
        2.0
    );
    wait_for(Duration::from_secs(10), "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    assert!(
        host.log_text().contains("dead-lettered a record"),
        "the log names the failure"
    );
}

#[test]
fn host_filters_and_omit_detailed_recording_apply_per_pump() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_iam(&mut conn, 600, 11);
    let alice = records.iter().filter(|r| r.username == "alice").count();
    assert!(alice > 0 && alice < 600);
    let config = HostConfig::new(&redis)
        .pump(
            Pump::file("alice", "alice.jsonl")
                .set("omit_detailed_recording", true)
                .filter("usernames", strings(["alice", "bob"]))
                .filter("skip_usernames", strings(["bob"])),
        )
        .pump(Pump::file("others", "others.jsonl").filter("skip_usernames", strings(["alice"])));
    let host = Host::start(&config);
    wait_lines(
        &host.out().join("alice.jsonl"),
        alice,
        Duration::from_secs(60),
    );
    let o = wait_lines(
        &host.out().join("others.jsonl"),
        600 - alice,
        Duration::from_secs(60),
    );
    wait_for(Duration::from_secs(10), "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let a = read_jsonl(&host.out().join("alice.jsonl"));
    assert_eq!(a.len(), alice);
    assert_eq!(o.len(), 600 - alice);
    for l in &a {
        assert_eq!(l["Username"], "alice");
        assert!(
            l.get("Policies").is_none() && l.get("Deciders").is_none(),
            "detail fields omitted: {l}"
        );
        assert!(l.get("Request").is_some());
    }
    for l in &o {
        assert_ne!(l["Username"], "alice");
        assert!(l.get("Policies").is_some(), "other pump keeps details");
    }
    assert_eq!(
        host.metric("pumphouse_pump_records_filtered_total{pump=\"alice\"}"),
        (600 - alice) as f64
    );
}

#[test]
fn tyk_host_filters_select_by_api_and_response_code() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_tyk(&mut conn, TYK_KEY, 300, 2);
    let api = records[0].api_id.clone();
    let want = records
        .iter()
        .filter(|r| r.api_id == api && r.response_code != 500)
        .count();
    let config = HostConfig::new(&redis).tyk().pump(
        Pump::file("f", "f.jsonl")
            .set("omit_detailed_recording", true)
            .filter("api_ids", strings([&api]))
            .filter("skip_response_codes", vec![500]),
    );
    let host = Host::start(&config);
    wait_for(Duration::from_secs(30), "acks", || {
        (left_in_redis(&mut conn, TYK_KEY) == (0, 0)).then_some(())
    });
    let lines = wait_lines(&host.out().join("f.jsonl"), want, Duration::from_secs(10));
    assert_eq!(lines.len(), want);
    for l in &lines {
        assert_eq!(l["APIID"], api.as_str());
        assert_ne!(l["ResponseCode"], 500);
        assert!(l.get("RawRequest").is_none() && l.get("RawResponse").is_none());
    }
}

#[test]
fn a_filter_plugin_in_the_chain_selects_records() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let records = push_iam(&mut conn, 500, 4);
    let denied = records.iter().filter(|r| r.effect == "deny").count();
    let host = Host::start(HostConfig::new(&redis).pump(
        Pump::file("denied", "denied.jsonl").filter_plugin(
            plugin("match"),
            [("field", "Effect"), ("pattern", "^deny$")],
        ),
    ));
    wait_for(Duration::from_secs(30), "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let lines = wait_lines(
        &host.out().join("denied.jsonl"),
        denied,
        Duration::from_secs(10),
    );
    assert_eq!(lines.len(), denied);
    assert!(lines.iter().all(|l| l["Effect"] == "deny"));
}

#[test]
fn at_most_once_delivery_pops_and_delivers() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    push_iam(&mut conn, 2000, 8);
    let host = Host::start(
        HostConfig::new(&redis)
            .source("delivery", "at-most-once")
            .pump(Pump::file("file", "iam.jsonl")),
    );
    let lines = wait_lines(&host.out().join("iam.jsonl"), 2000, Duration::from_secs(60));
    let seqs: std::collections::HashSet<u64> = lines.iter().map(iam_seq).collect();
    assert_eq!(seqs.len(), 2000);
    let leases: u64 = redis::cmd("ZCARD")
        .arg(pumphouse::source::redis::lease_key(IAM_KEY))
        .query(&mut conn)
        .unwrap();
    assert_eq!(leases, 0, "at-most-once takes no leases");
}

/// A Redis that refuses `SORT` (an ACL without it) still gets leased
/// claims: the source falls back to the Lua claim, once, and says so.
#[test]
fn claims_fall_back_to_lua_when_redis_refuses_sort() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-sort")
        .query(&mut conn)
        .unwrap();
    let records = push_iam(&mut conn, 3000, 5);
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 500)
            .pump(Pump::file("file", "iam.jsonl")),
    );
    let lines = wait_lines(&host.out().join("iam.jsonl"), 3000, Duration::from_secs(60));
    assert_iam_lines(&lines, &records);
    wait_for(Duration::from_secs(10), "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
    let log = host.log_text();
    assert_eq!(
        log.matches("refused the SORT claim").count(),
        1,
        "one warning expected:\n{log}"
    );
}

/// How often a thread named `name` of process `pid` has been scheduled in
/// (`/proc/<pid>/task/<tid>/schedstat`, third field), over all such threads.
fn times_scheduled(pid: i32, name: &str) -> u64 {
    let mut n = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
        n += stat
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    n
}

/// Once the source list is empty, each poll is one `LLEN` instead of a
/// claim's `MULTI`/`EXEC`, and the epoch ticker sleeps while no plugin
/// runs; a record pushed after the quiet spell is still delivered.
#[test]
fn an_idle_host_polls_with_llen_and_its_epoch_ticker_sleeps() {
    let redis = RedisServer::start().unwrap();
    let mut conn = redis_conn(&redis);
    let mut records = push_iam(&mut conn, 100, 3);
    let host = Host::start(HostConfig::new(&redis).pump(Pump::file("file", "iam.jsonl")));
    let out = host.out().join("iam.jsonl");
    wait_lines(&out, 100, Duration::from_secs(60));
    wait_for(Duration::from_secs(10), "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });

    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();
    let ticker_before = times_scheduled(host.pid(), "pumphouse-epoch");
    std::thread::sleep(Duration::from_millis(1500));
    let ticker_runs = times_scheduled(host.pid(), "pumphouse-epoch") - ticker_before;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut conn)
        .unwrap();
    let calls = |cmd: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(calls("llen") > 0, "the idle host polls:\n{stats}");
    assert_eq!(
        calls("exec"),
        0,
        "no claim transaction while idle:\n{stats}"
    );
    // Ticking every 10 ms would be ~150 runs.
    assert!(
        ticker_runs < 15,
        "the epoch ticker ran {ticker_runs} times in 1.5 s with no plugin call"
    );

    let mut sampler = pumphouse::produce::Sampler::new(4);
    let late: Vec<_> = (100..110).map(|i| sampler.iam(i, T0)).collect();
    push_iam_records(&mut conn, IAM_KEY, &late);
    records.extend(late);
    let lines = wait_lines(&out, 110, Duration::from_secs(60));
    assert_iam_lines(&lines, &records);
}

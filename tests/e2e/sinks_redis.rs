//! The `redis` sink against a second, real redis-server: records drained
//! from the source Redis arrive on the target as a list, a stream or a
//! pub/sub channel, intact; a target restart loses nothing; a socket the
//! sandbox does not grant lets nothing through and loses nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use pumphouse::produce::{encode_tyk, Sampler};
use serde_json::Value;

use crate::harness::*;

use pumphouse::record::IAM_KEY;
use pumphouse::record::TYK_KEY;
const WAIT: Duration = Duration::from_secs(60);

/// A `redis` pump writing to `target`, retrying quickly, with no socket
/// granted in its sandbox.
fn ungranted_redis_pump(name: &str, target: &RedisServer) -> Pump {
    Pump::new(name, plugin("redis"))
        .retry("20ms", "300ms")
        .config("address", format!("127.0.0.1:{}", target.port()))
}

/// A `redis` pump writing to `target`, the target's address granted in
/// `sandbox.sockets`.
fn redis_pump(name: &str, target: &RedisServer) -> Pump {
    ungranted_redis_pump(name, target)
        .sandbox("sockets", strings([format!("127.0.0.1:{}", target.port())]))
}

fn llen(conn: &mut redis::Connection, key: &str) -> usize {
    redis::cmd("LLEN").arg(key).query(conn).unwrap()
}

/// How many times each payload occurs.
fn counts(items: &[Vec<u8>]) -> BTreeMap<&[u8], usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i.as_slice()).or_default() += 1;
    }
    m
}

/// `got` holds exactly the `want` payloads, each as often as produced.
fn assert_same_payloads(got: &[Vec<u8>], want: &[Vec<u8>]) {
    assert_eq!(got.len(), want.len(), "record count");
    assert!(
        counts(got) == counts(want),
        "the target holds other bytes than were produced"
    );
}

/// Waits until the source holds nothing, waiting or claimed: every record
/// was acknowledged.
fn wait_drained(conn: &mut redis::Connection, key: &str) {
    wait_for(WAIT, &format!("{key} drained and acked"), || {
        (left_in_redis(conn, key) == (0, 0)).then_some(())
    });
}

/// Pushes Tyk records `range` of generator `seed` and returns their bytes.
fn push_tyk_bytes(
    conn: &mut redis::Connection,
    seed: u64,
    range: std::ops::Range<u64>,
) -> Vec<Vec<u8>> {
    let mut sampler = Sampler::new(seed);
    // Draw the earlier records too, so a range continues the same sequence.
    let all: Vec<_> = (0..range.end).map(|i| sampler.tyk(i, T0)).collect();
    let bytes: Vec<Vec<u8>> = all[range.start as usize..].iter().map(encode_tyk).collect();
    push(conn, TYK_KEY, &bytes);
    bytes
}

#[test]
fn iam_records_reach_the_target_list_byte_for_byte() {
    let source_redis = RedisServer::start().unwrap();
    let target = RedisServer::start().unwrap();
    let mut src = redis_conn(&source_redis);
    let mut dst = redis_conn(&target);
    let produced = iam_bytes(21, 0..1500);
    push(&mut src, IAM_KEY, &produced);
    let host = Host::start(
        HostConfig::new(&source_redis)
            .source("batch_size", 200)
            .pump(
                redis_pump("fwd", &target)
                    .config("key", "copy")
                    .config("mode", "list"),
            ),
    );
    wait_for(WAIT, "1500 records on the target", || {
        (llen(&mut dst, "copy") >= 1500).then_some(())
    });
    wait_drained(&mut src, IAM_KEY);
    assert_same_payloads(&lrange(&mut dst, "copy"), &produced);
    assert_eq!(
        host.metric("pumphouse_pump_records_written_total{pump=\"fwd\"}"),
        1500.0
    );
}

/// Host A forwards Tyk records to the producer's key on a second Redis;
/// host B drains that Redis as if the gateway had written it, and its file
/// sink sees every field.
#[test]
fn a_second_pumphouse_drains_the_forwarded_tyk_list_like_the_producers() {
    let source_redis = RedisServer::start().unwrap();
    let target = RedisServer::start().unwrap();
    let mut src = redis_conn(&source_redis);
    let mut dst = redis_conn(&target);
    let mut sampler = Sampler::new(17);
    let records: Vec<_> = (0..400).map(|i| sampler.tyk(i, T0)).collect();
    let produced: Vec<Vec<u8>> = records.iter().map(encode_tyk).collect();
    push(&mut src, TYK_KEY, &produced);

    let _a = Host::start(
        HostConfig::new(&source_redis)
            .tyk()
            .source("batch_size", 64)
            .pump(redis_pump("fwd", &target).config("key", TYK_KEY)),
    );
    let b = Host::start(
        HostConfig::new(&target)
            .tyk()
            .source("batch_size", 50)
            .pump(Pump::file("file", "tyk.jsonl")),
    );
    let lines = wait_lines(&b.out().join("tyk.jsonl"), 400, WAIT);
    wait_drained(&mut src, TYK_KEY);
    wait_drained(&mut dst, TYK_KEY);
    assert_eq!(lines.len(), 400);
    let mut seen = std::collections::HashSet::new();
    for l in &lines {
        let seq: usize = l["Path"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(seen.insert(seq), "seq {seq} twice");
        let r = &records[seq];
        assert_eq!(l["Method"], r.method.as_str());
        assert_eq!(l["Host"], r.host.as_str());
        assert_eq!(l["Path"], r.path.as_str());
        assert_eq!(l["ResponseCode"], r.response_code);
        assert_eq!(l["APIID"], r.api_id.as_str());
        assert_eq!(l["APIKey"], r.api_key.as_str());
        assert_eq!(l["OrgID"], r.org_id.as_str());
        assert_eq!(l["RequestTime"], r.request_time);
        assert_eq!(l["TimeStamp"], rfc3339(r.timestamp.0, r.timestamp.1));
        assert_eq!(l["ExpireAt"], rfc3339(r.expire_at.0, r.expire_at.1));
        assert_eq!(l["RawRequest"], r.raw_request.as_str());
        assert_eq!(l["Geo"]["Country"]["ISOCode"], r.geo_country.as_str());
        assert_eq!(l["Geo"]["Location"]["Latitude"], r.geo_lat);
        assert_eq!(l["Network"]["BytesOut"], r.network[3]);
        assert_eq!(l["Latency"]["Total"], r.latency[0]);
        assert_eq!(l["Tags"], serde_json::json!(r.tags));
        assert_eq!(l["TrackPath"], r.track_path);
    }
}

#[test]
fn json_payloads_match_the_iam_records_field_by_field() {
    let source_redis = RedisServer::start().unwrap();
    let target = RedisServer::start().unwrap();
    let mut src = redis_conn(&source_redis);
    let mut dst = redis_conn(&target);
    let records = push_iam(&mut src, 700, 5);
    let _host = Host::start(
        HostConfig::new(&source_redis)
            .source("batch_size", 128)
            .pump(
                redis_pump("json", &target)
                    .config("key", "iam-json")
                    .config("payload", "json")
                    .config("push", "lpush"),
            ),
    );
    wait_for(WAIT, "700 JSON records", || {
        (llen(&mut dst, "iam-json") >= 700).then_some(())
    });
    wait_drained(&mut src, IAM_KEY);
    let lines: Vec<Value> = lrange(&mut dst, "iam-json")
        .iter()
        .map(|b| serde_json::from_slice(b).expect("each element is a JSON object"))
        .collect();
    assert_iam_lines(&lines, &records);
    // LPUSH: the newest record is at the head.
    assert_eq!(iam_seq(&lines[0]), 699);
}

#[test]
fn stream_entries_hold_the_tyk_records() {
    let source_redis = RedisServer::start().unwrap();
    let target = RedisServer::start().unwrap();
    let mut src = redis_conn(&source_redis);
    let mut dst = redis_conn(&target);
    let produced = push_tyk_bytes(&mut src, 3, 0..600);
    // The stream's entries use the default field, `record`.
    let _host = Host::start(
        HostConfig::new(&source_redis)
            .tyk()
            .source("batch_size", 100)
            .pump(
                redis_pump("xadd", &target)
                    .config("key", "tyk-stream")
                    .config("mode", "stream"),
            ),
    );
    let entries: Vec<(String, BTreeMap<String, Vec<u8>>)> = wait_for(WAIT, "600 entries", || {
        let e: Vec<(String, BTreeMap<String, Vec<u8>>)> = redis::cmd("XRANGE")
            .arg("tyk-stream")
            .arg("-")
            .arg("+")
            .query(&mut dst)
            .unwrap();
        (e.len() >= 600).then_some(e)
    });
    wait_drained(&mut src, TYK_KEY);
    let payloads: Vec<Vec<u8>> = entries
        .into_iter()
        .map(|(id, fields)| {
            assert_eq!(fields.len(), 1, "entry {id} has one field: {fields:?}");
            fields
                .into_iter()
                .next()
                .map(|(k, v)| {
                    assert_eq!(k, "record");
                    v
                })
                .unwrap()
        })
        .collect();
    assert_same_payloads(&payloads, &produced);
}

#[test]
fn a_subscriber_receives_every_published_record() {
    let source_redis = RedisServer::start().unwrap();
    let target = RedisServer::start().unwrap();
    let mut src = redis_conn(&source_redis);
    // Subscribe before anything is published: pub/sub keeps nothing.
    let mut sub = redis_conn(&target);
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("iam-live").unwrap();
    pubsub.set_read_timeout(Some(WAIT)).unwrap();

    let produced = iam_bytes(8, 0..500);
    push(&mut src, IAM_KEY, &produced);
    let _host = Host::start(
        HostConfig::new(&source_redis)
            .source("batch_size", 100)
            .pump(
                redis_pump("pub", &target)
                    .config("key", "iam-live")
                    .config("mode", "pubsub"),
            ),
    );
    let mut got = Vec::new();
    while got.len() < produced.len() {
        let msg = pubsub.get_message().expect("a message within the wait");
        assert_eq!(msg.get_channel_name(), "iam-live");
        got.push(msg.get_payload_bytes().to_vec());
    }
    wait_drained(&mut src, IAM_KEY);
    assert_same_payloads(&got, &produced);
}

#[test]
fn a_target_restart_mid_run_loses_nothing() {
    let source_redis = RedisServer::start().unwrap();
    // Append-only file, fsynced per write: what the target acknowledged
    // survives the kill.
    let mut target = RedisServer::start_with(true).unwrap();
    let mut src = redis_conn(&source_redis);
    let first = push_tyk_bytes(&mut src, 12, 0..300);
    let host = Host::start(
        HostConfig::new(&source_redis)
            .tyk()
            .source("batch_size", 50)
            .pump(redis_pump("fwd", &target).config("key", "copy")),
    );
    wait_for(WAIT, "the first 300 on the target", || {
        (llen(&mut redis_conn(&target), "copy") >= 300).then_some(())
    });

    target.kill();
    let second = push_tyk_bytes(&mut src, 12, 300..700);
    // The pump sees the target gone and keeps retrying, holding the records.
    wait_for(WAIT, "a failed write while the target is down", || {
        (host.metric("pumphouse_pump_errors_total{pump=\"fwd\",kind=\"retry\"}") >= 1.0)
            .then_some(())
    });
    let (waiting, claimed) = left_in_redis(&mut src, TYK_KEY);
    assert!(
        waiting + claimed > 0,
        "records are held while the target is down"
    );

    target.restart().unwrap();
    let mut dst = redis_conn(&target);
    wait_for(WAIT, "all 700 on the target", || {
        (llen(&mut dst, "copy") >= 700).then_some(())
    });
    wait_drained(&mut src, TYK_KEY);
    let want: Vec<Vec<u8>> = first.into_iter().chain(second).collect();
    assert_same_payloads(&lrange(&mut dst, "copy"), &want);
}

/// Two pumps the sandbox stops: one lists another peer in
/// `sandbox.sockets` (the host checks the address and denies it), one
/// lists none (no sockets at all). Neither gets a byte through, both
/// report why, and every record stays claimed in the source.
#[test]
fn a_target_missing_from_sandbox_sockets_gets_nothing_and_loses_nothing() {
    let source_redis = RedisServer::start().unwrap();
    let target = RedisServer::start().unwrap();
    let mut src = redis_conn(&source_redis);
    let mut dst = redis_conn(&target);
    push_iam(&mut src, 200, 2);
    let other = free_port();
    let host = Host::start(
        HostConfig::new(&source_redis)
            .source("batch_size", 50)
            .pump(
                ungranted_redis_pump("unlisted", &target)
                    .config("key", "a")
                    .sandbox("sockets", strings([format!("127.0.0.1:{other}")])),
            )
            .pump(ungranted_redis_pump("ungranted", &target).config("key", "b")),
    );
    let denials = "pumphouse_sandbox_denials_total{pump=\"unlisted\",capability=\"socket\"}";
    wait_for(WAIT, denials, || {
        (host.metric(denials) >= 1.0).then_some(())
    });
    for pump in ["unlisted", "ungranted"] {
        let fatal = format!("pumphouse_pump_errors_total{{pump=\"{pump}\",kind=\"fatal\"}}");
        wait_for(WAIT, &fatal, || (host.metric(&fatal) >= 1.0).then_some(()));
        assert_reported_fatal(&host, pump, "sandbox.sockets");
    }
    let log = host.log_text();
    assert!(
        log.contains("socket use denied") && log.contains("unlisted"),
        "the host logs the denial:\n{log}"
    );
    assert_eq!(
        llen(&mut dst, "a") + llen(&mut dst, "b"),
        0,
        "nothing reached the target"
    );
    let (waiting, claimed) = left_in_redis(&mut src, IAM_KEY);
    assert_eq!(
        waiting + claimed,
        200,
        "no record acked while the pumps hold it"
    );
    let dead: u64 = redis::cmd("LLEN")
        .arg(format!("pumphouse:dead-letter:{IAM_KEY}"))
        .query(&mut src)
        .unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered");
}

/// `/readyz` is 503 and shows `pump` as `fatal` with `needle` in its error.
fn assert_reported_fatal(host: &Host, pump: &str, needle: &str) {
    let (code, body) = http_get(&host.http, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let p = v["pumps"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pump))
        .unwrap_or_else(|| panic!("{pump} missing from {body}"));
    assert_eq!(p["state"], "fatal", "{body}");
    assert!(
        p["error"].as_str().unwrap_or("").contains(needle),
        "expected {needle:?} in {pump}'s error: {body}"
    );
}

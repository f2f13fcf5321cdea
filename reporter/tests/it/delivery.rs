//! Records recorded through the reporter arrive in Redis exactly once,
//! byte for byte as the producers write them.

use std::time::Duration;

use pumphouse::record::{decode, Schema};
use pumphouse_reporter::{
    BuildError, Iam, Msgpack, RecordError, Reporter, Target, Tyk, WhenFull, IAM_KEY, TYK_KEY,
};

use crate::support::*;
use crate::tasks::record_from_tasks;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_many_tasks_arrive_exactly_once() {
    const N: u64 = 20_000;
    const TASKS: usize = 40;
    let redis = RedisServer::start().unwrap();
    let (records, expected) = iam_records(N);
    let reporter = Reporter::builder()
        .format(Iam)
        .redis_url(redis.url())
        .pool_size(4)
        .batch_size(256)
        // Smaller than N: the producers wait for room as the workers send.
        .buffer_size(4_000)
        .when_full(WhenFull::Block)
        .target(Target::List)
        .build()
        .unwrap();
    record_from_tasks(&reporter, &records, TASKS).await;
    let stats = reporter.shutdown().await;
    assert_eq!(stats.accepted, N);
    assert_eq!(stats.sent, N);
    assert_eq!(
        stats.dropped() + stats.lost() + stats.buffered,
        0,
        "{stats:?}"
    );
    assert!(stats.batches >= N / 256, "{stats:?}");

    let got = list(&redis, IAM_KEY).await;
    assert_exactly_once(&got, &expected);
    for b in &got {
        decode(Schema::Iam, b).expect("pumphouse decodes it");
    }
    // One RPUSH per record, as the producers send them.
    assert_eq!(rpush_calls(&redis).await, N);
}

/// How many RPUSH commands the server has run.
async fn rpush_calls(redis: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn(redis).await)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_rpush:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batched_list_target_writes_the_same_bytes_with_one_command_per_batch() {
    const N: u64 = 5_000;
    let redis = RedisServer::start().unwrap();
    let (records, expected) = tyk_records(N);
    // The default target; one worker, so that batches keep their order.
    let reporter = Reporter::builder()
        .format(Tyk)
        .redis_url(redis.url())
        .batch_size(300)
        .pool_size(1)
        .build()
        .unwrap();
    for r in records {
        reporter.record(r).unwrap();
    }
    let stats = reporter.shutdown().await;
    assert_eq!((stats.sent, stats.lost()), (N, 0));
    // What one RPUSH per record would have left: the same list.
    assert!(
        list(&redis, TYK_KEY).await == expected,
        "same bytes, same order"
    );
    assert_eq!(rpush_calls(&redis).await, stats.batches);
    assert!(stats.batches >= N / 300, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_everything_accepted_before_it() {
    const N: u64 = 5_000;
    let redis = RedisServer::start().unwrap();
    let (records, expected) = tyk_records(N);
    // Nothing is ever due on its own: only shutdown can send.
    let reporter = Reporter::builder()
        .format(Tyk)
        .redis_url(redis.url())
        .batch_size(1_000_000)
        .buffer_size(1_000_000)
        .flush_interval(Duration::from_secs(3600))
        .max_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for r in records {
        reporter.record(r).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        llen(&redis, TYK_KEY).await,
        0,
        "nothing sent before shutdown"
    );
    assert_eq!(reporter.stats().buffered, N);

    let stats = reporter.shutdown().await;
    assert_eq!((stats.accepted, stats.sent, stats.lost()), (N, N, 0));
    let got = list(&redis, TYK_KEY).await;
    assert_exactly_once(&got, &expected);
    for b in &got {
        decode(Schema::Tyk, b).expect("pumphouse decodes it");
    }

    // After shutdown: refused, counted, no panic; shutdown again is fine.
    let (mut more, _) = tyk_records(1);
    let refused = reporter.record(more.remove(0));
    assert!(matches!(refused, Err(RecordError::Closed(_))));
    let again = reporter.shutdown().await;
    assert_eq!(again.dropped_closed, 1);
    assert_eq!(again.sent, N);
}

#[tokio::test]
async fn dropping_every_handle_still_flushes() {
    let redis = RedisServer::start().unwrap();
    let (records, expected) = iam_records(300);
    let reporter = Reporter::builder()
        .format(Iam)
        .redis_url(redis.url())
        .flush_interval(Duration::from_secs(3600))
        .max_flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    for r in records {
        reporter.record(r).unwrap();
    }
    drop(reporter);
    wait_until(Duration::from_secs(30), "the background flush", || async {
        llen(&redis, IAM_KEY).await == 300
    })
    .await;
    assert_exactly_once(&list(&redis, IAM_KEY).await, &expected);
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Event {
    name: String,
    user_id: u64,
    tags: Vec<String>,
}

#[tokio::test]
async fn any_serialize_type_is_written_as_a_map_keyed_by_field_names() {
    let redis = RedisServer::start().unwrap();
    assert!(matches!(
        Reporter::builder().format(Msgpack::<Event>::new()).build(),
        Err(BuildError::MissingKey)
    ));
    let reporter = Reporter::builder()
        .format(Msgpack::<Event>::new())
        .redis_url(redis.url())
        .key("events")
        .build()
        .unwrap();
    for i in 0..100 {
        reporter
            .record(Event {
                name: format!("signup-{i}"),
                user_id: i,
                tags: vec!["web".into()],
            })
            .unwrap();
    }
    let stats = reporter.shutdown().await;
    assert_eq!(stats.sent, 100);
    let got = list(&redis, "events").await;
    assert_eq!(got.len(), 100);
    let mut ids = Vec::new();
    for b in &got {
        decode(Schema::Generic, b).expect("pumphouse decodes it");
        let rmpv::Value::Map(entries) = rmpv::decode::read_value(&mut b.as_slice()).unwrap() else {
            panic!("not a map");
        };
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.as_str().unwrap()).collect();
        assert_eq!(keys, ["name", "user_id", "tags"]);
        let e: Event = rmp_serde::from_slice(b).unwrap();
        assert_eq!(e.name, format!("signup-{}", e.user_id));
        ids.push(e.user_id);
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
}

/// Serializes its first field, then fails when `fail` is set, so the
/// encoder has already written part of the record.
struct Fragile {
    n: u64,
    fail: bool,
}

impl serde::Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        let mut st = s.serialize_struct("Fragile", 2)?;
        st.serialize_field("n", &self.n)?;
        if self.fail {
            return Err(S::Error::custom("refuses to serialize"));
        }
        st.serialize_field("ok", &true)?;
        st.end()
    }
}

#[tokio::test]
async fn a_record_that_fails_to_encode_is_counted_and_its_batch_neighbours_arrive_intact() {
    let redis = RedisServer::start().unwrap();
    for target in [Target::ListBatched, Target::List] {
        let key = format!("fragile:{target:?}");
        let reporter = Reporter::builder()
            .format(Msgpack::<Fragile>::new())
            .redis_url(redis.url())
            .key(key.as_str())
            .target(target)
            .batch_size(50)
            .build()
            .unwrap();
        for n in 0..200 {
            reporter
                .record(Fragile {
                    n,
                    fail: n % 7 == 3,
                })
                .unwrap();
        }
        let stats = reporter.shutdown().await;
        let bad = (0..200).filter(|n| n % 7 == 3).count() as u64;
        assert_eq!(stats.lost_unencodable, bad, "{target:?}: {stats:?}");
        assert_eq!(stats.sent, 200 - bad, "{target:?}: {stats:?}");
        let got = list(&redis, &key).await;
        let mut seen = Vec::new();
        for b in &got {
            let v: std::collections::BTreeMap<String, rmpv::Value> =
                rmp_serde::from_slice(b).unwrap_or_else(|e| panic!("{target:?}: {e}: {b:?}"));
            assert_eq!(v["ok"], rmpv::Value::Boolean(true), "{target:?}");
            seen.push(v["n"].as_u64().unwrap());
        }
        let want: Vec<u64> = (0..200).filter(|n| n % 7 != 3).collect();
        assert_eq!(seen, want, "{target:?}");
    }
}

#[tokio::test]
async fn invalid_options_are_refused_by_name() {
    let invalid = |b: Result<_, BuildError>| match b {
        Err(BuildError::InvalidOption { option, .. }) => option,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    };
    let b = || Reporter::builder().format(Iam);
    assert_eq!(invalid(b().pool_size(0).build()), "pool_size");
    assert_eq!(invalid(b().batch_size(0).build()), "batch_size");
    assert_eq!(invalid(b().buffer_size(0).build()), "buffer_size");
    assert_eq!(
        invalid(
            b().flush_interval(Duration::from_secs(2))
                .max_flush_interval(Duration::from_secs(1))
                .build()
        ),
        "max_flush_interval"
    );
    assert!(matches!(
        b().redis_url("not a url").build(),
        Err(BuildError::InvalidUrl(_))
    ));
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    assert!(matches!(
        Reporter::builder().format(Iam).build(),
        Err(BuildError::NoRuntime)
    ));
}

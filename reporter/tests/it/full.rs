//! A full buffer: `drop` counts every refused record exactly; `block`
//! waits for room instead.

use std::time::Duration;

use pumphouse_reporter::{Iam, RecordError, Reporter, WhenFull, IAM_KEY};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_counts_every_refused_record_exactly() {
    let mut redis = RedisServer::start().unwrap();
    redis.kill();
    let (records, expected) = iam_records(1_000);
    let reporter = Reporter::builder()
        .format(Iam)
        .redis_url(redis.url())
        .buffer_size(100)
        .batch_size(10)
        .flush_interval(Duration::from_millis(10))
        .retry(Duration::from_millis(10), Duration::from_millis(100))
        .when_full(WhenFull::Drop)
        .build()
        .unwrap();
    let (mut ok, mut full) = (0, 0);
    for r in records {
        match reporter.record(r) {
            Ok(()) => ok += 1,
            Err(RecordError::Full(_)) => full += 1,
            Err(RecordError::Closed(_)) => unreachable!(),
        }
    }
    // Redis is down: nothing leaves, so exactly the buffer is accepted.
    assert_eq!((ok, full), (100, 900));
    let stats = reporter.stats();
    assert_eq!((stats.accepted, stats.dropped_full), (100, 900));

    redis.restart().unwrap();
    let stats = reporter.shutdown().await;
    assert_eq!(
        (stats.sent, stats.lost(), stats.dropped_full),
        (100, 0, 900)
    );
    assert_exactly_once(&list(&redis, IAM_KEY).await, &expected[..100]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_for_room_instead_of_dropping() {
    let mut redis = RedisServer::start().unwrap();
    redis.kill();
    let (records, expected) = iam_records(200);
    let reporter = Reporter::builder()
        .format(Iam)
        .redis_url(redis.url())
        .buffer_size(50)
        .batch_size(10)
        .flush_interval(Duration::from_millis(10))
        .retry(Duration::from_millis(10), Duration::from_millis(100))
        .when_full(WhenFull::Block)
        .build()
        .unwrap();
    let producer = {
        let reporter = reporter.clone();
        let records = records.clone();
        tokio::spawn(async move {
            for r in records {
                reporter.record_wait(r).await.unwrap();
            }
        })
    };
    wait_until(Duration::from_secs(30), "a full buffer", || async {
        reporter.stats().accepted == 50
    })
    .await;
    // record() cannot wait: it hands the record back, uncounted.
    let (mut extra, _) = iam_records(1);
    assert!(matches!(
        reporter.record(extra.remove(0)),
        Err(RecordError::Full(_))
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = reporter.stats();
    assert_eq!((stats.accepted, stats.dropped()), (50, 0), "{stats:?}");
    assert!(!producer.is_finished(), "the producer waits for room");

    redis.restart().unwrap();
    producer.await.unwrap();
    let stats = reporter.shutdown().await;
    assert_eq!(
        (stats.accepted, stats.sent, stats.dropped(), stats.lost()),
        (200, 200, 0, 0)
    );
    assert_exactly_once(&list(&redis, IAM_KEY).await, &expected);
}

//! The reporting half end to end: records recorded through
//! `pumphouse-reporter` from many tasks are drained by the host into the
//! file sink, each exactly once and field for field.

use std::time::Duration;

use pumphouse::produce::Sampler;
use pumphouse_reporter::{Iam, Reporter, WhenFull, IAM_KEY};

use crate::harness::*;

#[path = "../../reporter/tests/it/tasks.rs"]
mod tasks;
use tasks::record_from_tasks;

#[test]
fn records_recorded_by_the_reporter_reach_the_file_sink_exactly_once() {
    const N: u64 = 10_000;
    const TASKS: usize = 20;
    let redis = RedisServer::start().unwrap();
    let mut sampler = Sampler::new(21);
    let records: Vec<_> = (0..N).map(|i| sampler.iam(i, T0 + i as i64)).collect();
    let host = Host::start(
        HostConfig::new(&redis)
            .source("batch_size", 500)
            .pump(Pump::file("file", "iam.jsonl")),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stats = runtime.block_on(async {
        let reporter = Reporter::builder()
            .format(Iam)
            .redis_url(redis.url())
            .batch_size(250)
            .buffer_size(2_000)
            .when_full(WhenFull::Block)
            .build()
            .unwrap();
        record_from_tasks(&reporter, &records, TASKS).await;
        reporter.shutdown().await
    });
    assert_eq!(
        (stats.accepted, stats.sent, stats.lost()),
        (N, N, 0),
        "{stats:?}"
    );

    let lines = wait_lines(
        &host.out().join("iam.jsonl"),
        N as usize,
        Duration::from_secs(60),
    );
    assert_iam_lines(&lines, &records);
    let mut conn = redis_conn(&redis);
    wait_for(Duration::from_secs(10), "acks", || {
        (left_in_redis(&mut conn, IAM_KEY) == (0, 0)).then_some(())
    });
}

//! The stream target: one `XADD … MAXLEN ~ n` entry per record.

use pumphouse_reporter::{Reporter, Target, Tyk, DEFAULT_STREAM_FIELD};

use crate::support::*;

/// A stream entry: its id and its field-value pairs.
type Entry = (String, Vec<(String, Vec<u8>)>);

#[tokio::test]
async fn stream_entries_hold_the_record_and_maxlen_trims() {
    const N: u64 = 5_000;
    const MAX_LEN: u64 = 1_000;
    let redis = RedisServer::start().unwrap();
    let (records, expected) = tyk_records(N);
    let reporter = Reporter::builder()
        .format(Tyk)
        .redis_url(redis.url())
        .key("analytics-stream")
        .target(Target::Stream { max_len: MAX_LEN })
        // One worker keeps the entries in recording order.
        .pool_size(1)
        .batch_size(500)
        .build()
        .unwrap();
    for r in records {
        reporter.record(r).unwrap();
    }
    let stats = reporter.shutdown().await;
    assert_eq!(stats.sent, N);

    let mut conn = conn(&redis).await;
    let xlen: u64 = redis::cmd("XLEN")
        .arg("analytics-stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    // `~` trims whole nodes only: at least MAX_LEN stay, far fewer than N.
    assert!((MAX_LEN..N / 2).contains(&xlen), "XLEN {xlen}");
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg("analytics-stream")
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len() as u64, xlen);
    let kept = &expected[(N - xlen) as usize..];
    for ((id, fields), want) in entries.iter().zip(kept) {
        assert_eq!(fields.len(), 1, "entry {id}");
        assert_eq!(fields[0].0, DEFAULT_STREAM_FIELD);
        assert_eq!(&fields[0].1, want, "entry {id}");
    }
}

//! Recording from many tasks at once (shared with the end-to-end suite).

use pumphouse_reporter::Reporter;

/// Records `records` from `tasks` concurrent tasks (task `t` takes every
/// `tasks`-th record from `t`), each waiting for room when the buffer is
/// full, and returns when all are accepted.
pub async fn record_from_tasks<R: Clone + Send + 'static>(
    reporter: &Reporter<R>,
    records: &[R],
    tasks: usize,
) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let reporter = reporter.clone();
        let mine: Vec<R> = records.iter().skip(t).step_by(tasks).cloned().collect();
        handles.push(tokio::spawn(async move {
            for (i, r) in mine.into_iter().enumerate() {
                if reporter.record_wait(r).await.is_err() {
                    panic!("record {i} of task {t} refused");
                }
                if i % 50 == 49 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

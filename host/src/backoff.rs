//! Retrying work that must not be given up: storing a dead letter, writing
//! or removing a spooled batch. Giving up would lose a record or deliver it
//! twice, so these wait out an outage with capped exponential backoff (no
//! jitter: each lane retries its own work, nothing herds).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

/// Runs `op` until it succeeds, sleeping `first`, doubling up to `cap`,
/// between attempts; `on_error` is told each failure and the next delay.
pub async fn forever<T, E, Fut>(
    first: Duration,
    cap: Duration,
    op: impl FnMut() -> Fut,
    on_error: impl Fn(&E, Duration),
) -> T
where
    E: Display,
    Fut: Future<Output = Result<T, E>>,
{
    let policy = ExponentialBuilder::default()
        .with_min_delay(first)
        .with_max_delay(cap)
        .with_factor(2.0)
        .without_max_times();
    match op
        .retry(policy)
        .sleep(tokio::time::sleep)
        .notify(|e, d| on_error(e, d))
        .await
    {
        Ok(v) => v,
        // Without a limit on attempts the policy never runs out.
        Err(_) => unreachable!("retried without a limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn retries_until_the_work_succeeds() {
        let calls = AtomicU32::new(0);
        let delays = std::sync::Mutex::new(Vec::new());
        let v = forever(
            Duration::from_millis(1),
            Duration::from_millis(3),
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 4 {
                    Err(format!("fail {n}"))
                } else {
                    Ok(n)
                }
            },
            |_, d| delays.lock().unwrap().push(d),
        )
        .await;
        assert_eq!(v, 4);
        assert_eq!(
            *delays.lock().unwrap(),
            [1, 2, 3, 3].map(Duration::from_millis)
        );
    }
}

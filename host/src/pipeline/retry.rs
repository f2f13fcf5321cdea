//! Retry policy: capped exponential backoff with jitter, as an object a
//! lane consults after each failure and resets after a success.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::config::RetryConfig;

/// Delays between attempts at the same work.
pub struct RetryPolicy {
    builder: ExponentialBuilder,
    current: Option<ExponentialBackoff>,
    max: Duration,
    /// Failures since the last success.
    pub failures: u64,
}

impl RetryPolicy {
    pub fn new(cfg: &RetryConfig) -> Self {
        RetryPolicy {
            builder: ExponentialBuilder::default()
                .with_min_delay(cfg.initial)
                .with_max_delay(cfg.max)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
            current: None,
            max: cfg.max,
            failures: 0,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures += 1;
        let builder = self.builder;
        self.current
            .get_or_insert_with(|| builder.build())
            .next()
            .unwrap_or(self.max)
    }

    /// Called after a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.current = None;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut p = RetryPolicy::new(&RetryConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            max_attempts: None,
        });
        let delays: Vec<_> = (0..8).map(|_| p.next_delay()).collect();
        assert!(
            delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200),
            "{delays:?}"
        );
        // Jitter adds up to one more base delay; the cap bounds the base.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(2)),
            "{delays:?}"
        );
        assert!(delays[7] >= Duration::from_secs(1), "{delays:?}");
        assert_eq!(p.failures, 8);
        p.reset();
        assert!(p.next_delay() <= Duration::from_millis(200));
    }
}

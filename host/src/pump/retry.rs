//! The retry policy of a lane: capped exponential backoff with jitter, as
//! an object the lane consults after each failure and resets after a
//! success, and the decision it makes.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use crate::config::RetryConfig;

/// What a lane does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The delay was waited out: try again.
    Retry,
    /// `retry.max_attempts` is used up: dead-letter the records.
    GiveUp,
}

/// Delays between attempts at the same work.
pub struct RetryPolicy {
    builder: ExponentialBuilder,
    current: Option<ExponentialBackoff>,
    max: Duration,
    max_attempts: Option<u32>,
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
            max_attempts: cfg.max_attempts,
            failures: 0,
        }
    }

    /// Counts a failure: the delay before the next attempt, or `None` when
    /// the attempts are used up.
    pub fn after_failure(&mut self) -> Option<Duration> {
        let delay = self.next_delay();
        match self.max_attempts {
            Some(max) if self.failures >= u64::from(max) => None,
            _ => Some(delay),
        }
    }

    /// The delay before the next attempt, never above `retry.max`: the
    /// backoff adds its jitter on top of a capped base, so it is capped
    /// again here.
    fn next_delay(&mut self) -> Duration {
        self.failures += 1;
        let builder = self.builder;
        self.current
            .get_or_insert_with(|| builder.build())
            .next()
            .unwrap_or(self.max)
            .min(self.max)
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
        let delays: Vec<_> = (0..8).map(|_| p.after_failure().unwrap()).collect();
        assert!(
            delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200),
            "{delays:?}"
        );
        // Jitter stays inside the cap.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(1)),
            "{delays:?}"
        );
        assert_eq!(delays[7], Duration::from_secs(1), "{delays:?}");
        assert_eq!(p.failures, 8);
        p.reset();
        assert!(p.after_failure().unwrap() <= Duration::from_millis(200));
    }

    #[test]
    fn attempts_run_out_at_max_attempts() {
        let mut p = RetryPolicy::new(&RetryConfig {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(2),
            max_attempts: Some(2),
        });
        assert!(p.after_failure().is_some());
        assert!(p.after_failure().is_none());
        p.reset();
        assert!(p.after_failure().is_some());
    }
}

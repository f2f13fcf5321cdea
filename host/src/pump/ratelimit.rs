//! Per-pump delivery rate limits: token buckets (governor) for records/s
//! and bytes/s, each allowing one second's worth of burst.

use std::num::NonZeroU32;
use std::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;

/// One bucket and its burst size (the most one wait may ask for).
struct Bucket {
    limiter: DefaultDirectRateLimiter,
    burst: u32,
}

impl Bucket {
    fn new(per_second: u32) -> Option<Bucket> {
        let rate = NonZeroU32::new(per_second)?;
        Some(Bucket {
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            burst: per_second,
        })
    }

    /// Waits until `n` units are available. Larger amounts than the burst
    /// are taken in burst-sized steps: the bucket never holds more.
    async fn take(&self, n: u64) {
        for step in steps(n, self.burst) {
            // Cannot fail: a step never exceeds the bucket's capacity.
            let _ = self.limiter.until_n_ready(step).await;
        }
    }
}

/// `n` split into waits no larger than `burst`.
fn steps(n: u64, burst: u32) -> impl Iterator<Item = NonZeroU32> {
    let burst = u64::from(burst.max(1));
    let full = n / burst;
    let rest = n % burst;
    (0..full)
        .map(move |_| burst)
        .chain((rest > 0).then_some(rest))
        .filter_map(|s| NonZeroU32::new(s as u32))
}

/// A pump's limits; `None` from [`RateLimits::new`] when none is set.
pub struct RateLimits {
    records: Option<Bucket>,
    bytes: Option<Bucket>,
}

impl RateLimits {
    pub fn new(cfg: &RateLimitConfig) -> Option<RateLimits> {
        let records = cfg.records_per_second.and_then(Bucket::new);
        let bytes = cfg
            .bytes_per_second
            .and_then(|b| Bucket::new(u32::try_from(b.as_u64()).unwrap_or(u32::MAX)));
        if records.is_none() && bytes.is_none() {
            return None;
        }
        Some(RateLimits { records, bytes })
    }

    /// Waits until `records` records of `bytes` bytes may be sent; returns
    /// how long that took.
    pub async fn wait(&self, records: usize, bytes: usize) -> std::time::Duration {
        let start = Instant::now();
        if let Some(b) = &self.records {
            b.take(records as u64).await;
        }
        if let Some(b) = &self.bytes {
            b.take(bytes as u64).await;
        }
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_above_the_burst_are_taken_in_burst_sized_steps() {
        let s: Vec<u32> = steps(2500, 1000).map(NonZeroU32::get).collect();
        assert_eq!(s, vec![1000, 1000, 500]);
        assert_eq!(steps(0, 1000).count(), 0);
        assert_eq!(steps(3, 1).count(), 3);
        assert!(RateLimits::new(&RateLimitConfig::default()).is_none());
    }
}

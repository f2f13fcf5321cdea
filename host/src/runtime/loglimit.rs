//! Rate limit for log lines a pump's plugins cause (their own `log` calls
//! and the host's warnings about their sandbox denials): a token bucket per
//! pump, shared by every instance of the pump so a crash loop that
//! re-instantiates cannot reset it. Suppressed lines are counted in
//! `pumphouse_sandbox_log_suppressed_total{pump}` and summarised in one line
//! when logging resumes.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::telemetry;

/// A pump's log budget.
pub struct LogLimiter {
    pump: Arc<str>,
    bucket: DefaultDirectRateLimiter,
    per_second: u32,
    /// Lines dropped since the last line that got through.
    suppressed: AtomicU64,
}

impl std::fmt::Debug for LogLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLimiter")
            .field("pump", &self.pump)
            .field("per_second", &self.per_second)
            .finish()
    }
}

impl LogLimiter {
    /// `per_second` lines on average, bursts of up to `burst`.
    pub fn new(pump: &str, per_second: NonZeroU32, burst: NonZeroU32) -> LogLimiter {
        LogLimiter {
            pump: Arc::from(pump),
            bucket: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            per_second: per_second.get(),
            suppressed: AtomicU64::new(0),
        }
    }

    /// A limiter that lets everything through (for `describe` and tools).
    pub fn unlimited(pump: &str) -> LogLimiter {
        let max = NonZeroU32::MAX;
        Self::new(pump, max, max)
    }

    /// Whether one more line may be logged now. When lines were suppressed
    /// before this one, logs how many first.
    pub fn admit(&self) -> bool {
        if self.bucket.check().is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            // Looked up only when lines are dropped, so pumps that never
            // hit the limit have no series.
            metrics::counter!(telemetry::PLUGIN_LOG_SUPPRESSED, "pump" => self.pump.to_string())
                .increment(1);
            return false;
        }
        self.flush();
        true
    }

    /// Lines suppressed and not yet summarised.
    pub fn pending(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    fn flush(&self) {
        let n = self.suppressed.swap(0, Ordering::Relaxed);
        if n > 0 {
            tracing::warn!(
                target: "plugin",
                pump = &*self.pump,
                suppressed = n,
                "{n} log lines of this pump's plugins were suppressed (limit: {} lines/s, see sandbox.log_lines_per_second)",
                self.per_second
            );
        }
    }
}

impl Drop for LogLimiter {
    /// A pump that stops while throttled still gets its summary line.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_counted_not_logged() {
        let l = LogLimiter::new(
            "p",
            NonZeroU32::new(1).unwrap(),
            NonZeroU32::new(5).unwrap(),
        );
        let admitted = (0..100).filter(|_| l.admit()).count();
        assert!((5..=6).contains(&admitted), "{admitted}");
        assert_eq!(l.pending(), 100 - admitted as u64);
    }

    #[test]
    fn unlimited_admits_everything() {
        let l = LogLimiter::unlimited("p");
        assert!((0..10_000).all(|_| l.admit()));
        assert_eq!(l.pending(), 0);
    }
}

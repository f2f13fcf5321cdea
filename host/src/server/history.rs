//! The last ten minutes of rates, one sample every two seconds, so the
//! status page's charts have history the moment it opens. The ring is
//! pure (totals in, rates out); [`spawn`] feeds it from the live status
//! and the metrics tap.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::status::Status;
use crate::telemetry::{self, tap};

/// Time between samples.
pub const EVERY: Duration = Duration::from_secs(2);
/// Samples kept: ten minutes at [`EVERY`].
pub const SAMPLES: usize = 300;

/// Counter totals at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub claimed: f64,
    pub pumps: BTreeMap<String, PumpTotals>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PumpTotals {
    pub written: f64,
    pub errors: f64,
    pub dead_lettered: f64,
}

/// Rates per second over the interval that ended at `t`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Sample {
    /// End of the interval, Unix milliseconds.
    pub t: i64,
    /// Records claimed from Redis per second.
    pub claimed: f64,
    pub pumps: BTreeMap<String, PumpRates>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct PumpRates {
    pub written: f64,
    pub errors: f64,
    pub dead_lettered: f64,
}

struct Ring {
    last: Option<(Instant, Totals)>,
    samples: VecDeque<Sample>,
}

/// The ring buffer of samples.
pub struct History {
    ring: Mutex<Ring>,
    capacity: usize,
}

impl History {
    pub fn new(capacity: usize) -> History {
        History {
            ring: Mutex::new(Ring {
                last: None,
                samples: VecDeque::with_capacity(capacity),
            }),
            capacity,
        }
    }

    /// Adds the rates since the previous totals; the first call only
    /// remembers its totals. A pump new since then counts from 0.
    pub fn record(&self, at: Instant, unix_ms: i64, totals: Totals) {
        let mut ring = self.ring.lock().expect("history lock");
        if let Some((before_at, before)) = &ring.last {
            let secs = at.saturating_duration_since(*before_at).as_secs_f64();
            let zero = PumpTotals::default();
            let pumps = totals
                .pumps
                .iter()
                .map(|(name, now)| {
                    let was = before.pumps.get(name).unwrap_or(&zero);
                    let rates = PumpRates {
                        written: per_second(now.written, was.written, secs),
                        errors: per_second(now.errors, was.errors, secs),
                        dead_lettered: per_second(now.dead_lettered, was.dead_lettered, secs),
                    };
                    (name.clone(), rates)
                })
                .collect();
            let sample = Sample {
                t: unix_ms,
                claimed: per_second(totals.claimed, before.claimed, secs),
                pumps,
            };
            if ring.samples.len() == self.capacity {
                ring.samples.pop_front();
            }
            ring.samples.push_back(sample);
        }
        ring.last = Some((at, totals));
    }

    /// Every sample kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let ring = self.ring.lock().expect("history lock");
        ring.samples.iter().cloned().collect()
    }

    /// The newest sample.
    pub fn latest(&self) -> Option<Sample> {
        let ring = self.ring.lock().expect("history lock");
        ring.samples.back().cloned()
    }
}

/// A counter's rate; never negative (counters only grow, but a clock or
/// a restarted series must not draw a negative rate).
fn per_second(now: f64, before: f64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    (now - before).max(0.0) / secs
}

/// The totals now, for the running pumps: the tap's counters live for the
/// whole process, so a reloaded pump's rate carries on unbroken.
fn totals(status: &Status) -> Totals {
    let pumps = status
        .pumps()
        .iter()
        .map(|p| {
            let of = |metric| tap::total_where(metric, "pump", &p.name);
            let totals = PumpTotals {
                written: of(telemetry::PUMP_RECORDS_WRITTEN),
                errors: of(telemetry::PUMP_ERRORS),
                dead_lettered: of(telemetry::RECORDS_DEAD_LETTERED),
            };
            (p.name.clone(), totals)
        })
        .collect();
    Totals {
        claimed: tap::total(telemetry::RECORDS_CLAIMED),
        pumps,
    }
}

/// Samples every [`EVERY`] until `stop`.
pub fn spawn(history: Arc<History>, status: Arc<Status>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let unix_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or_default();
            history.record(Instant::now(), unix_ms, totals(&status));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(claimed: f64, pumps: &[(&str, f64)]) -> Totals {
        Totals {
            claimed,
            pumps: pumps
                .iter()
                .map(|(n, w)| {
                    let t = PumpTotals {
                        written: *w,
                        errors: 0.0,
                        dead_lettered: 0.0,
                    };
                    (n.to_string(), t)
                })
                .collect(),
        }
    }

    #[test]
    fn rates_are_deltas_per_second_and_the_ring_keeps_the_newest() {
        let h = History::new(3);
        let t0 = Instant::now();
        h.record(t0, 0, totals(0.0, &[("a", 0.0)]));
        assert!(h.samples().is_empty(), "one total is no rate yet");
        h.record(
            t0 + Duration::from_secs(2),
            2000,
            totals(100.0, &[("a", 40.0)]),
        );
        let s = h.latest().unwrap();
        assert_eq!(s.claimed, 50.0);
        assert_eq!(s.pumps["a"].written, 20.0);
        // A pump added since the last sample counts from 0; a counter that
        // went down draws 0, not a negative rate.
        h.record(
            t0 + Duration::from_secs(4),
            4000,
            totals(90.0, &[("a", 40.0), ("b", 8.0)]),
        );
        let s = h.latest().unwrap();
        assert_eq!(s.claimed, 0.0);
        assert_eq!(s.pumps["a"].written, 0.0);
        assert_eq!(s.pumps["b"].written, 4.0);
        for i in 3..6 {
            h.record(
                t0 + Duration::from_secs(2 * i),
                2000 * i as i64,
                totals(90.0, &[]),
            );
        }
        let ts: Vec<i64> = h.samples().iter().map(|s| s.t).collect();
        assert_eq!(ts, [6000, 8000, 10000], "capacity 3, oldest dropped");
    }
}

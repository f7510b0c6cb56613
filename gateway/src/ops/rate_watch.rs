//! The platform's own rates watched for anomalies: messages received and messages
//! rejected per minute, each through an `analytics::detector::SeriesMonitor` (a robust
//! local line and its spread over the last 56 minutes). A collapse of the ingest rate
//! (fixtures or the broker gone quiet) or a surge of rejections (a firmware release
//! sending a malformed field) becomes one warning per episode and a counter, without
//! a fixed threshold to tune per fleet.
//!
//! Pure: [`RateWatch::sample`] takes the time and the running totals, and answers the
//! alerts; the readiness loop in `ops` calls it and logs them.

use analytics::detector::{Direction, MonitorConfig, SeriesMonitor};

/// Which platform series an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// MQTT messages received per minute.
    Received,
    /// Messages rejected (dead-lettered) per minute.
    Rejected,
}

impl Series {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Series::Received => "received",
            Series::Rejected => "rejected",
        }
    }
}

/// An anomaly in one of the platform's rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateAlert {
    /// The series.
    pub series: Series,
    /// The minute's rate.
    pub per_minute: f64,
    /// What the recent trend expected.
    pub expected: f64,
    /// Up or down.
    pub direction: Direction,
}

/// Per-minute samples of the platform's counters, fed to one monitor per series.
#[derive(Debug)]
pub struct RateWatch {
    received: SeriesMonitor,
    rejected: SeriesMonitor,
    last: Option<(i64, u64, u64)>,
}

/// One sample per this many milliseconds.
const MINUTE_MS: i64 = 60_000;

impl Default for RateWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RateWatch {
    /// A watch with the detector's platform-rate defaults ([`MonitorConfig::rate`]);
    /// rejections are watched for rises only.
    pub fn new() -> RateWatch {
        let rate = MonitorConfig::rate();
        let rejections = MonitorConfig {
            up_only: true,
            ..rate
        };
        RateWatch {
            received: SeriesMonitor::new(rate).unwrap_or_else(|_| unreachable_config()),
            rejected: SeriesMonitor::new(rejections).unwrap_or_else(|_| unreachable_config()),
            last: None,
        }
    }

    /// Takes the running totals at `now_ms`; once a minute or more has passed since the
    /// last sample, pushes each series' per-minute rate and answers any new alert.
    pub fn sample(&mut self, now_ms: i64, received: u64, rejected: u64) -> Vec<RateAlert> {
        let Some((t0, r0, j0)) = self.last else {
            self.last = Some((now_ms, received, rejected));
            return Vec::new();
        };
        let elapsed = now_ms - t0;
        if elapsed < MINUTE_MS {
            return Vec::new();
        }
        self.last = Some((now_ms, received, rejected));
        let minutes = elapsed as f64 / MINUTE_MS as f64;
        let mut alerts = Vec::new();
        for (series, monitor, delta) in [
            (
                Series::Received,
                &mut self.received,
                received.saturating_sub(r0),
            ),
            (
                Series::Rejected,
                &mut self.rejected,
                rejected.saturating_sub(j0),
            ),
        ] {
            let per_minute = delta as f64 / minutes;
            if let Some(a) = monitor.push(now_ms, per_minute) {
                alerts.push(RateAlert {
                    series,
                    per_minute,
                    expected: a.expected,
                    direction: a.direction,
                });
            }
        }
        alerts
    }
}

/// `MonitorConfig::rate()` is valid by construction (the detector's own tests check it).
fn unreachable_config() -> SeriesMonitor {
    // A fallback that cannot fail either: the daily defaults.
    SeriesMonitor::new(MonitorConfig::daily()).unwrap_or_else(|e| {
        panic!("the detector's built-in monitor configurations are invalid: {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `minutes` one-minute samples with `per_min(i)` received and `rej(i)` rejected.
    fn run(
        w: &mut RateWatch,
        start_min: i64,
        minutes: i64,
        totals: &mut (u64, u64),
        per_min: impl Fn(i64) -> u64,
        rej: impl Fn(i64) -> u64,
    ) -> Vec<(i64, RateAlert)> {
        let mut out = Vec::new();
        for i in start_min..start_min + minutes {
            totals.0 += per_min(i);
            totals.1 += rej(i);
            for a in w.sample(i * MINUTE_MS, totals.0, totals.1) {
                out.push((i, a));
            }
        }
        out
    }

    #[test]
    fn a_steady_platform_raises_nothing_then_a_collapse_and_a_rejection_surge_do_once() {
        let mut w = RateWatch::new();
        let mut totals = (0, 0);
        // Two hours of a gently varying ingest rate and a few rejections.
        let quiet = run(
            &mut w,
            0,
            120,
            &mut totals,
            |i| 3_000 + (i % 7) as u64 * 40,
            |i| u64::from(i % 10 == 0),
        );
        assert!(quiet.is_empty(), "{quiet:?}");
        // The fleet goes quiet (broker down): one alert, downwards, on received.
        let collapse = run(&mut w, 120, 10, &mut totals, |_| 0, |_| 0);
        assert_eq!(collapse.len(), 1, "{collapse:?}");
        assert_eq!(collapse[0].1.series, Series::Received);
        assert_eq!(collapse[0].1.direction, Direction::Down);
        assert_eq!(collapse[0].0, 120);
        // A firmware release starts sending a bad field: rejections surge.
        let mut w = RateWatch::new();
        let mut totals = (0, 0);
        run(&mut w, 0, 120, &mut totals, |_| 3_000, |_| 1);
        let surge = run(&mut w, 120, 10, &mut totals, |_| 3_000, |_| 900);
        assert_eq!(surge.len(), 1, "{surge:?}");
        assert_eq!(surge[0].1.series, Series::Rejected);
        assert_eq!(surge[0].1.direction, Direction::Up);
    }

    #[test]
    fn samples_closer_than_a_minute_wait_and_longer_gaps_are_rates() {
        let mut w = RateWatch::new();
        assert!(w.sample(0, 0, 0).is_empty());
        assert!(w.sample(30_000, 100, 0).is_empty());
        assert_eq!(w.last, Some((0, 0, 0)), "half a minute is not a sample");
        assert!(w.sample(120_000, 6_000, 0).is_empty());
        assert_eq!(w.last, Some((120_000, 6_000, 0)));
    }
}

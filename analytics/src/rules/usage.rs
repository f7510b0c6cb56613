//! Abnormal daily use of a resource (water, heater energy) for this household.
//!
//! Deltas of a cumulative counter are summed per UTC day (by device time). A closed day
//! joins a 28-day history unless it was incomplete (first day, offline gap, lost
//! telemetry), without any use (away, unused) or disturbed (a leak or stuck valve
//! explains the water, a clog or low pressure its lack: a norm learnt while clogged makes
//! the days after the repair look like guests). A day is
//! abnormal as soon as its running total exceeds the threshold of
//! [`super::config::UsageThresholds`] over the history's median and σ (1.4826 × MAD)
//! or, with `persist_days = 2`, as soon as it and the previous whole day together exceed
//! twice the median by the two-day margin, today by at least a quarter of it (a single
//! odd day is common, guests or a changed habit last). The two-day margin judges the
//! sum against its own spread, σ·√2 (`sum_k`), so guests in a small or erratic home,
//! whose days each stay within its natural range, still stand out together. The
//! condition clears at the close of a day back under the one-day threshold.

use serde::{Deserialize, Serialize};

use super::config::UsageThresholds;
use super::stats::{RobustSummary, SampleWindow};

const DAY_MS: i64 = 86_400_000;

/// Daily-total state of one resource of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// The current UTC day (days since the epoch); `None` before the first reading.
    day: Option<i64>,
    /// Total of the current day so far.
    total: f64,
    /// The current day is complete so far (the previous day was seen, no gap).
    complete: bool,
    /// Something else (a leak, a stuck valve) explains part of the current day.
    disturbed: bool,
    /// The fixture was used on the current day (a day without use says nothing of the
    /// household's norm: it was away, or the fixture unused).
    used: bool,
    history: SampleWindow<28>,
    active: bool,
    /// Total of the previous day, when it was complete and judged.
    previous_day_total: Option<f64>,
}

impl Default for DailyUsage {
    fn default() -> Self {
        DailyUsage {
            day: None,
            total: 0.0,
            complete: false,
            disturbed: false,
            used: false,
            history: SampleWindow::new(),
            active: false,
            previous_day_total: None,
        }
    }
}

/// Figures behind an abnormal-usage verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsageJudgement {
    /// The day's total (so far, or at its close).
    pub total: f64,
    /// Median and σ of the daily history.
    pub baseline: RobustSummary,
    /// The threshold.
    pub threshold: f64,
    /// Robust z-score of the total.
    pub z: f32,
}

fn judge(th: &UsageThresholds, history: &SampleWindow<28>, total: f64) -> Option<UsageJudgement> {
    let baseline = history.summary()?;
    let sigma = baseline.sigma.max(th.sigma_floor_ratio * baseline.median);
    let median = f64::from(baseline.median);
    let threshold = (median + f64::from(th.k * sigma))
        .max(median * f64::from(th.min_ratio))
        .max(median + f64::from(th.min_excess));
    Some(UsageJudgement {
        total,
        baseline,
        threshold,
        z: baseline.z(total as f32, sigma),
    })
}

/// The excess over twice the median that two days together must exceed:
/// `max(sum_k·σ·√2, 2·(min_ratio − 1)·median, 2·min_excess)`. The sum of two days spreads
/// by σ·√2, not 2σ, so a household tripling its use for two days stands out even when
/// neither day alone leaves its natural range.
fn two_day_excess(th: &UsageThresholds, j: &UsageJudgement) -> f64 {
    let median = f64::from(j.baseline.median);
    let sigma = f64::from(j.baseline.sigma.max(th.sigma_floor_ratio * j.baseline.median));
    let sum_k = th
        .sum_k
        .map_or(2.0 * f64::from(th.k), |z| f64::from(z) * std::f64::consts::SQRT_2);
    (sum_k * sigma)
        .max(2.0 * (f64::from(th.min_ratio) - 1.0) * median)
        .max(2.0 * f64::from(th.min_excess))
}

impl DailyUsage {
    /// Adds the use of one telemetry interval ending at `ts_ms`: `Some(amount)`, or
    /// `None` when the interval cannot be measured (gap, lost message, counter reset).
    /// `disturbed` marks the day as explained by another fault, `used` that sessions
    /// ended in the interval. Returns the verdict change with its figures.
    #[allow(clippy::too_many_arguments)]
    pub fn on_interval(
        &mut self,
        th: &UsageThresholds,
        min_days: u8,
        ts_ms: i64,
        amount: Option<f64>,
        disturbed: bool,
        used: bool,
    ) -> Option<(bool, UsageJudgement)> {
        let day = ts_ms.div_euclid(DAY_MS);
        let mut edge = None;
        match self.day {
            Some(current) if day < current => return None,
            Some(current) if day == current => {}
            previous => {
                edge = self.close_day(th, min_days);
                self.complete = previous == Some(day - 1);
                self.day = Some(day);
                self.total = 0.0;
                self.disturbed = false;
                self.used = false;
            }
        }
        self.used |= used;
        match amount {
            Some(a) => self.total += a,
            None => self.complete = false,
        }
        self.disturbed |= disturbed;
        if edge.is_some() {
            return edge;
        }
        if self.active || self.disturbed || self.history.len() < usize::from(min_days) {
            return None;
        }
        let j = judge(th, &self.history, self.total)?;
        let over = if th.persist_days <= 1 {
            self.total > j.threshold
        } else {
            // Two days together: their excess over twice the median must exceed the
            // two-day threshold, today at least a quarter of it.
            let median = f64::from(j.baseline.median);
            let excess = two_day_excess(th, &j);
            self.previous_day_total
                .is_some_and(|previous| previous + self.total > 2.0 * median + excess)
                && self.total > median + excess / 4.0
        };
        if over {
            self.active = true;
            return Some((true, j));
        }
        None
    }

    fn close_day(&mut self, th: &UsageThresholds, min_days: u8) -> Option<(bool, UsageJudgement)> {
        self.previous_day_total = None;
        if self.day.is_none() || !self.complete || self.disturbed || !self.used {
            return None;
        }
        let judged = (self.history.len() >= usize::from(min_days))
            .then(|| judge(th, &self.history, self.total))
            .flatten();
        self.history.push(self.total as f32);
        let j = judged?;
        self.previous_day_total = Some(self.total);
        if self.active && self.total <= j.threshold {
            self.active = false;
            return Some((false, j));
        }
        None
    }
}

//! Abnormal daily use of a resource (water, heater energy) for this household.
//!
//! Deltas of a cumulative counter are summed per UTC day (by device time), and the
//! telemetry intervals in which a usage session ended are counted (the day's *uses*,
//! give or take two ending in one interval). A closed day joins a 28-day history of
//! totals and uses unless it was incomplete (first day, offline gap, lost telemetry),
//! without any use (away, unused) or disturbed (a leak or stuck valve explains the water,
//! a clog or low pressure its lack: a norm learnt while clogged makes the days after the
//! repair look like guests). A day is abnormal as soon as its running total exceeds the
//! threshold of [`super::config::UsageThresholds`] over the history's median and σ
//! (1.4826 × MAD) or, with `persist_days = 2`, as soon as it and the previous whole day
//! together exceed twice the median by the two-day margin, today by at least a quarter
//! of it (a single odd day is common, guests or a changed habit last). The two-day margin
//! judges the sum against its own spread, σ·√2 (`sum_k`), so guests in a small or
//! erratic home, whose days each stay within its natural range, still stand out
//! together.
//!
//! With `min_use_ratio`, the judged days must also have had that many times the
//! household's median daily uses (two days: together, against twice the median). Guests
//! use a fixture more often; more water per use is something else: a new filter
//! cartridge restores a shower's flow by up to 40 % for good, and in a home of one or two
//! showers a day that step, or a few long showers, is as much extra water as a small
//! visit. Those were most of the false alarms of the volume-only rule. The condition
//! clears at the close of a day back under the one-day threshold.
//!
//! With `one_day_k` (and `persist_days = 2`), a day is also abnormal on its own, within
//! the day, once its running total exceeds `median + one_day_k·σ` (and the ratio and
//! excess floors) with as many uses as above: a party or guests for one evening.

use serde::{Deserialize, Serialize};

use super::config::UsageThresholds;
use super::stats::{RobustSummary, SampleWindow};

use protocol::catalog::DAY_MS;

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
    /// Telemetry intervals of the current day in which a usage session ended: the
    /// number of uses, give or take uses ending in the same interval.
    #[serde(default)]
    uses: u8,
    /// `uses` of the previous day (meaningful while `previous_day_total` is set).
    #[serde(default)]
    previous_day_uses: u8,
    /// `uses` of the days of `history`.
    #[serde(default)]
    use_history: UseCounts,
}

/// The last 28 daily use counts, in a ring (the uses of the days of the history).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct UseCounts {
    counts: [u8; 28],
    len: u8,
    next: u8,
}

impl UseCounts {
    fn push(&mut self, uses: u8) {
        let n = self.counts.len();
        if usize::from(self.len) < n {
            self.counts[usize::from(self.len)] = uses;
            self.len += 1;
        } else {
            self.counts[usize::from(self.next)] = uses;
            self.next = ((usize::from(self.next) + 1) % n) as u8;
        }
    }

    /// Median daily uses, `None` with fewer than `min_days` days.
    fn median(&self, min_days: u8) -> Option<f32> {
        let len = usize::from(self.len);
        if len == 0 || len < usize::from(min_days) {
            return None;
        }
        let mut sorted = self.counts;
        let sorted = &mut sorted[..len];
        sorted.sort_unstable();
        Some((f32::from(sorted[(len - 1) / 2]) + f32::from(sorted[len / 2])) / 2.0)
    }
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
            uses: 0,
            previous_day_uses: 0,
            use_history: UseCounts::default(),
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
    let sigma = f64::from(
        j.baseline
            .sigma
            .max(th.sigma_floor_ratio * j.baseline.median),
    );
    let sum_k = th.sum_k.map_or(2.0 * f64::from(th.k), |z| {
        f64::from(z) * std::f64::consts::SQRT_2
    });
    (sum_k * sigma)
        .max(2.0 * (f64::from(th.min_ratio) - 1.0) * median)
        .max(2.0 * f64::from(th.min_excess))
}

/// Today's threshold of the within-a-day test: `max(median + k·σ, min_ratio × median,
/// median + min_excess)` with `k = one_day_k`.
fn one_day_threshold(th: &UsageThresholds, j: &UsageJudgement, k: f32) -> f64 {
    let median = f64::from(j.baseline.median);
    let sigma = j
        .baseline
        .sigma
        .max(th.sigma_floor_ratio * j.baseline.median);
    (median + f64::from(k * sigma))
        .max(median * f64::from(th.min_ratio))
        .max(median + f64::from(th.min_excess))
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
                self.uses = 0;
            }
        }
        self.used |= used;
        self.uses = self.uses.saturating_add(u8::from(used));
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
        let (over, uses, days) = if th.persist_days <= 1 {
            (self.total > j.threshold, self.uses, 1.0)
        } else {
            // Two days together: their excess over twice the median must exceed the
            // two-day threshold, today at least a quarter of it.
            let median = f64::from(j.baseline.median);
            let excess = two_day_excess(th, &j);
            let over = self
                .previous_day_total
                .is_some_and(|previous| previous + self.total > 2.0 * median + excess)
                && self.total > median + excess / 4.0;
            (over, self.previous_day_uses.saturating_add(self.uses), 2.0)
        };
        // More people use the fixture more often; more water per use (a new filter
        // cartridge lets more through, longer showers) is not more people.
        let often = |uses: u8, days: f32| {
            th.min_use_ratio.is_none_or(|ratio| {
                self.use_history
                    .median(min_days)
                    .is_none_or(|median| f32::from(uses) >= ratio * days * median)
            })
        };
        // Within the day: today alone far over the one-day threshold with `one_day_k`
        // (a party, guests for an evening), as often used as above.
        let today = th.persist_days > 1
            && th.one_day_k.is_some_and(|k| {
                self.total > one_day_threshold(th, &j, k) && often(self.uses, 1.0)
            });
        let over = (over && often(uses, days)) || today;
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
        self.use_history.push(self.uses);
        let j = judged?;
        self.previous_day_total = Some(self.total);
        self.previous_day_uses = self.uses;
        if self.active && self.total <= j.threshold {
            self.active = false;
            return Some((false, j));
        }
        None
    }
}

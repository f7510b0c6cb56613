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
//!
//! The rule judges once the history holds `usage_min_days` days or, with
//! `cold_start_days`, already from that many (a household's guests may come in its first
//! fortnight, or a leak, an offline spell or an away trip may keep its history short).
//! A median and σ of a few days are themselves uncertain, so until the history is
//! `usage_min_days` long every margin over the median (its z-term and its ratio and
//! excess floors, which are measured from that median) is widened by
//! [`small_sample_k`]` / k`: the margin that a new day (or two-day sum) of a normal
//! household crosses as rarely as it crosses `k` at `usage_min_days` days, from the
//! median's sampling variance `π/2 · σ²/n` and Student's t with the degrees of freedom
//! of a MAD of `n` days. Nothing is fitted: the widening follows from `k`, `n` and
//! `usage_min_days` (about ×5 at 4 days, ×1.9 at 6, ×1.2 at 8, none from 10), and a
//! finding clears against the unwidened threshold (a visit still going on is not let go
//! because the history is short). The use-count condition stays as it is.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::compact::Maybe;
use super::config::UsageThresholds;
use super::stats::{RobustSummary, SampleWindow};

use protocol::catalog::DAY_MS;

/// Daily-total state of one resource of one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// The current UTC day (days since the epoch); `None` before the first reading.
    day: Maybe<i64>,
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
    /// Total of the previous day, when it was complete and judged (a total is never
    /// `-inf`, the absent value).
    previous_day_total: Maybe<f64>,
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
            day: Maybe::NONE,
            total: 0.0,
            complete: false,
            disturbed: false,
            used: false,
            history: SampleWindow::new(),
            active: false,
            previous_day_total: Maybe::NONE,
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

/// The fewest days of history [`UsageThresholds::cold_start_days`] may judge from: the
/// t distribution of [`small_sample_k`] has `0.3675·(n − 1)` degrees of freedom, at
/// least one (a mean) from four days on.
pub const MIN_COLD_START_DAYS: u8 = 4;

/// Asymptotic efficiency of σ from the MAD relative to the standard deviation, for
/// normal samples: σ of `n` days is as uncertain as a standard deviation of
/// `0.3675·n` days.
const MAD_EFFICIENCY: f64 = 0.3675;

/// The robust z-margin for a history of `n` days that a new value crosses as rarely as
/// it crosses `k` with `n_ref` days, for normally distributed days: `k` itself from
/// `n_ref` days on, else `c(n) · t⁻¹(ν(n); 1 − p)` with
/// `p = P(T(ν(n_ref)) > k / c(n_ref))`.
///
/// `c(n)` is the spread of the value's distance to the history's median in units of σ:
/// `√(1 + π/(2n))` for one day (the median of `n` normal samples varies by
/// `π/2 · σ²/n`), `√(1 + π/n)` for a sum of `days = 2` days (its distance to twice the
/// median, in units of σ·√2). Student's t carries the uncertainty of σ itself, with
/// `ν(n) = 0.3675·(n − 1)` degrees of freedom: those of a standard deviation, times the
/// MAD's efficiency. `None` when it cannot be computed (fewer than two days, a margin
/// that is not finite and positive).
pub fn small_sample_k(k: f32, n: usize, n_ref: usize, days: u8) -> Option<f32> {
    if n >= n_ref {
        return Some(k);
    }
    if n < 2 || !k.is_finite() || k <= 0.0 {
        return None;
    }
    let median_var = if days >= 2 {
        std::f64::consts::PI
    } else {
        std::f64::consts::FRAC_PI_2
    };
    let c = |n: usize| (1.0 + median_var / n as f64).sqrt();
    let t = |n: usize| StudentsT::new(0.0, 1.0, MAD_EFFICIENCY * (n - 1) as f64).ok();
    let p = t(n_ref)?.sf(f64::from(k) / c(n_ref));
    if !(p > 0.0 && p < 0.5) {
        return None;
    }
    let widened = c(n) * t(n)?.inverse_cdf(1.0 - p);
    (widened.is_finite() && widened > 0.0).then_some((widened as f32).max(k))
}

/// How much wider than usual the margins over the median are for a history of `n` days
/// (`n_ref = usage_min_days`): [`small_sample_k`] over `k` for the one-day test, over
/// `sum_k` for the two-day test and over `one_day_k` for the within-a-day test, all 1
/// from `n_ref` days on. The whole margin widens, its ratio and excess floors too: they
/// are measured from a median as uncertain as σ.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Widening {
    one: f32,
    two: f32,
    one_day: f32,
}

impl Widening {
    /// No widening (a full history).
    const NONE: Widening = Widening {
        one: 1.0,
        two: 1.0,
        one_day: 1.0,
    };

    fn of(th: &UsageThresholds, n: usize, n_ref: usize) -> Option<Widening> {
        let factor = |k: f32, days: u8| small_sample_k(k, n, n_ref, days).map(|w| w / k);
        let sum_k = th.sum_k.unwrap_or(th.k * std::f32::consts::SQRT_2);
        Some(Widening {
            one: factor(th.k, 1)?,
            two: factor(sum_k, 2)?,
            one_day: match th.one_day_k {
                Some(k) => factor(k, 1)?,
                None => 1.0,
            },
        })
    }
}

/// The days of history the rule judges from: `cold_start_days` (at least
/// [`MIN_COLD_START_DAYS`]) when set and fewer than `min_days`, else `min_days`.
fn judging_days(th: &UsageThresholds, min_days: u8) -> u8 {
    th.cold_start_days
        .map_or(min_days, |c| c.max(MIN_COLD_START_DAYS).min(min_days))
}

/// The margin over the median of one day: `widen × max(k·σ, (min_ratio − 1)·median,
/// min_excess)`.
fn one_day_margin(th: &UsageThresholds, b: &RobustSummary, k: f32, widen: f32) -> f64 {
    let median = f64::from(b.median);
    let sigma = b.sigma.max(th.sigma_floor_ratio * b.median);
    f64::from(widen)
        * f64::from(k * sigma)
            .max(median * (f64::from(th.min_ratio) - 1.0))
            .max(f64::from(th.min_excess))
}

/// The day's verdict figures, its threshold `median + widen × max(k·σ, (min_ratio −
/// 1)·median, min_excess)` (`widen` 1: the full-history threshold).
fn judge(
    th: &UsageThresholds,
    history: &SampleWindow<28>,
    total: f64,
    widen: f32,
) -> Option<UsageJudgement> {
    let baseline = history.summary()?;
    let sigma = baseline.sigma.max(th.sigma_floor_ratio * baseline.median);
    let threshold = f64::from(baseline.median) + one_day_margin(th, &baseline, th.k, widen);
    Some(UsageJudgement {
        total,
        baseline,
        threshold,
        z: baseline.z(total as f32, sigma),
    })
}

/// The excess over twice the median that two days together must exceed:
/// `widen × max(sum_k·σ·√2, 2·(min_ratio − 1)·median, 2·min_excess)`. The sum of two
/// days spreads by σ·√2, not 2σ, so a household tripling its use for two days stands out
/// even when neither day alone leaves its natural range.
fn two_day_excess(th: &UsageThresholds, j: &UsageJudgement, widen: f32) -> f64 {
    let median = f64::from(j.baseline.median);
    let sigma = f64::from(
        j.baseline
            .sigma
            .max(th.sigma_floor_ratio * j.baseline.median),
    );
    let sum_k = th.sum_k.map_or(2.0 * f64::from(th.k), |z| {
        f64::from(z) * std::f64::consts::SQRT_2
    });
    f64::from(widen)
        * (sum_k * sigma)
            .max(2.0 * (f64::from(th.min_ratio) - 1.0) * median)
            .max(2.0 * f64::from(th.min_excess))
}

/// Today's threshold of the within-a-day test: `median + widen × max(k·σ, (min_ratio −
/// 1)·median, min_excess)` with `k = one_day_k`.
fn one_day_threshold(th: &UsageThresholds, j: &UsageJudgement, k: f32, widen: f32) -> f64 {
    f64::from(j.baseline.median) + one_day_margin(th, &j.baseline, k, widen)
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
        match self.day.get() {
            Some(current) if day < current => return None,
            Some(current) if day == current => {}
            previous => {
                edge = self.close_day(th, min_days);
                self.complete = previous == Some(day - 1);
                self.day.replace(day);
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
        let judging = judging_days(th, min_days);
        let n = self.history.len();
        if self.active || self.disturbed || n < usize::from(judging) {
            return None;
        }
        // Widening only raises the thresholds: a day under the unwidened ones needs no
        // t quantiles.
        let (over, j) = self.verdict(th, judging, Widening::NONE)?;
        if !over {
            return None;
        }
        let (over, j) = if n < usize::from(min_days) {
            self.verdict(th, judging, Widening::of(th, n, usize::from(min_days))?)?
        } else {
            (over, j)
        };
        if over {
            self.active = true;
            return Some((true, j));
        }
        None
    }

    /// Whether the current day (with the previous one) is abnormal, margins widened by
    /// `widen`, and the figures; `judging` is the fewest days the use median needs.
    fn verdict(
        &self,
        th: &UsageThresholds,
        judging: u8,
        widen: Widening,
    ) -> Option<(bool, UsageJudgement)> {
        let j = judge(th, &self.history, self.total, widen.one)?;
        let (over, uses, days) = if th.persist_days <= 1 {
            (self.total > j.threshold, self.uses, 1.0)
        } else {
            // Two days together: their excess over twice the median must exceed the
            // two-day threshold, today at least a quarter of it.
            let median = f64::from(j.baseline.median);
            let excess = two_day_excess(th, &j, widen.two);
            let over = self
                .previous_day_total
                .get()
                .is_some_and(|previous| previous + self.total > 2.0 * median + excess)
                && self.total > median + excess / 4.0;
            (over, self.previous_day_uses.saturating_add(self.uses), 2.0)
        };
        // More people use the fixture more often; more water per use (a new filter
        // cartridge lets more through, longer showers) is not more people.
        let often = |uses: u8, days: f32| {
            th.min_use_ratio.is_none_or(|ratio| {
                self.use_history
                    .median(judging)
                    .is_none_or(|median| f32::from(uses) >= ratio * days * median)
            })
        };
        // Within the day: today alone far over the one-day threshold with `one_day_k`
        // (a party, guests for an evening), as often used as above.
        let today = th.persist_days > 1
            && th.one_day_k.is_some_and(|k| {
                self.total > one_day_threshold(th, &j, k, widen.one_day) && often(self.uses, 1.0)
            });
        Some(((over && often(uses, days)) || today, j))
    }

    fn close_day(&mut self, th: &UsageThresholds, min_days: u8) -> Option<(bool, UsageJudgement)> {
        self.previous_day_total = Maybe::NONE;
        if self.day.get().is_none() || !self.complete || self.disturbed || !self.used {
            return None;
        }
        // Cleared against the unwidened threshold: a visit still going on is not let go
        // because the history is short.
        let judged = (self.history.len() >= usize::from(judging_days(th, min_days)))
            .then(|| judge(th, &self.history, self.total, 1.0))
            .flatten();
        self.history.push(self.total as f32);
        self.use_history.push(self.uses);
        let j = judged?;
        self.previous_day_total.replace(self.total);
        self.previous_day_uses = self.uses;
        if self.active && self.total <= j.threshold {
            self.active = false;
            return Some((false, j));
        }
        None
    }
}

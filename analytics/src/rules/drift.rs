//! Temperature-sensor drift of a thermostatic shower, judged against the household's
//! whole range of temperatures, not one person's.
//!
//! A shower's sessions are regulated to each user's preference: a home of several
//! people shows several clusters of temperatures, and which of them showered lately
//! varies. A drifting sensor moves **every** cluster the same way, so the rule watches
//! both ends of the range: the second-lowest and second-highest temperature of the
//! last sessions against the lowest and highest of a baseline of many sessions over
//! several days (every user is in it). Only
//! when both ends moved the same way by more than `drift_min_c` is it the sensor; a
//! person away moves one end, a guest with other tastes widens it.
//!
//! The baseline keeps learning one session every two days while nothing is found, so
//! a slow seasonal change is followed while a drift of a few tenths of a degree a day
//! is not.

use serde::{Deserialize, Serialize};

use super::compact::Maybe;
use super::config::RulesConfig;
use super::stats::SampleWindow;

const BASELINE_EVERY_MS: i64 = 2 * protocol::catalog::DAY_MS;
/// The baseline spans at least this much time before the rule judges.
const WARM_SPAN_MS: i64 = 6 * protocol::catalog::DAY_MS;
/// Sessions in the recent window.
const RECENT: usize = 8;
/// Consecutive sessions the shift must be seen in (a random subset of a household's
/// users moves both ends for a session or two; a drift stays).
const PERSIST: u8 = 3;

/// Drift state of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemperatureDrift {
    recent_c: SampleWindow<RECENT>,
    baseline_c: SampleWindow<16>,
    first_ts_ms: Maybe<i64>,
    baseline_pushed_ts_ms: Maybe<i64>,
    /// Consecutive sessions with a shift beyond the threshold.
    streak: u8,
    active: bool,
}

/// The lowest and highest of a window, or with `trim` the second-lowest and
/// second-highest (one odd session does not move them), °C.
fn ends<const N: usize>(w: &SampleWindow<N>, trim: bool) -> Option<(f32, f32)> {
    let mut buf = [0.0f32; N];
    let mut n = 0;
    for (slot, x) in buf.iter_mut().zip(w.iter()) {
        *slot = x;
        n += 1;
    }
    let v = &mut buf[..n];
    if v.len() < 2 {
        return None;
    }
    v.sort_by(f32::total_cmp);
    let trim = usize::from(trim && v.len() >= 4);
    Some((v[trim], v[v.len() - 1 - trim]))
}

impl TemperatureDrift {
    /// A session at `ts_ms` had mean temperature `temp_c`. Returns `Some((drifting,
    /// recent shift °C, baseline middle °C))` when the verdict changes.
    pub fn on_session(
        &mut self,
        cfg: &RulesConfig,
        ts_ms: i64,
        temp_c: f32,
    ) -> Option<(bool, f32, f32)> {
        if !temp_c.is_finite() {
            return None;
        }
        let first = self.first_ts_ms.get_or_insert(ts_ms);
        self.recent_c.push(temp_c);
        // Warm once the baseline is full (every user seen a few times) and spans days.
        // (or, for a home showering rarely, half full over a longer span).
        let n = self.baseline_c.len();
        let need = usize::from(cfg.drift_min_baseline).min(16);
        let warm = (n >= need && ts_ms - first >= WARM_SPAN_MS)
            || (n >= need / 2 && ts_ms - first >= 2 * WARM_SPAN_MS);
        let mut verdict = None;
        let mut calm = true;
        if let (true, Some((base_lo, base_hi)), Some((lo, hi))) = (
            warm && self.recent_c.len() >= RECENT,
            ends(&self.baseline_c, false),
            ends(&self.recent_c, true),
        ) {
            let (d_lo, d_hi) = (lo - base_lo, hi - base_hi);
            // Both ends moved the same way: the smaller move is the sensor's.
            let shift = if d_lo.signum() == d_hi.signum() {
                d_lo.signum() * d_lo.abs().min(d_hi.abs())
            } else {
                0.0
            };
            let threshold = cfg.drift_min_c;
            calm = d_lo.abs() < threshold / 2.0 && d_hi.abs() < threshold / 2.0;
            let middle = (base_lo + base_hi) / 2.0;
            if shift.abs() > threshold {
                self.streak = self.streak.saturating_add(1);
            } else {
                self.streak = 0;
            }
            if !self.active && self.streak >= PERSIST {
                self.active = true;
                verdict = Some((true, shift, middle));
            } else if self.active && shift.abs() < threshold / 2.0 {
                self.active = false;
                verdict = Some((false, shift, middle));
            }
        }
        let due = !warm
            || self
                .baseline_pushed_ts_ms
                .get()
                .is_none_or(|t| ts_ms - t >= BASELINE_EVERY_MS);
        if !self.active && calm && due {
            self.baseline_c.push(temp_c);
            if warm {
                self.baseline_pushed_ts_ms.replace(ts_ms);
            }
        }
        verdict
    }
}

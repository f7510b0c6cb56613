//! Temperature-sensor drift of a thermostatic shower, judged against every user's
//! cluster of temperatures at once.
//!
//! A shower's sessions are regulated to each user's preference: a home of several
//! people shows several clusters of temperatures, and which of them showered lately
//! varies. A drifting sensor moves **every** cluster by the same amount, so the rule
//! looks for the one shift that lays the last sessions onto a baseline of earlier
//! sessions (every user is in it): each recent session is *explained* by a shift when,
//! once shifted back, it lies within `drift_min_c` of some baseline session (fully when
//! on it, less the further off). The shift that explains the most sessions is the
//! sensor's offset, when
//!
//! - it explains clearly more than no shift at all (a quarter of the recent sessions),
//!   so a new user or a guest, who is a new cluster next to unmoved ones, is no drift;
//! - and, in a home whose baseline has clusters further apart than `drift_min_c`, the
//!   sessions it explains better than no shift come from two clusters (two sessions
//!   each): a sensor moves every user, while one new person's sessions can be laid
//!   onto *some* other user's cluster by chance.
//!
//! An offset beyond `drift_min_c` in three sessions in a row is a drifting sensor; it
//! is cleared once the best shift is back under half of that.
//!
//! The baseline learns one session every two days, and only while the recent sessions
//! lie on it unshifted (within 0.1 °C): it follows a household's slow change of
//! tastes (or a new user, who leaves the shift at zero) but never a drift, which would
//! otherwise be learnt a few tenths of a degree at a time and never stand out.

use serde::{Deserialize, Serialize};

use super::compact::MaybeA4;
use super::config::RulesConfig;
use super::stats::SampleWindow;

const DAY_MS: i64 = protocol::catalog::DAY_MS;
const BASELINE_EVERY_MS: i64 = 2 * DAY_MS;
/// The baseline spans at least this much time before the rule judges.
const WARM_SPAN_MS: i64 = 6 * DAY_MS;
/// Sessions in the baseline.
const BASELINE: usize = 16;
/// Sessions in the recent window.
const RECENT: usize = 6;
/// Consecutive sessions the offset must be seen in (a random subset of a household's
/// users can line up with a shift for a session or two; a drift stays).
const PERSIST: u8 = 3;
/// Resolution of the search for the shift, °C.
const SHIFT_STEP_C: f32 = 0.05;
/// The largest shift searched, °C: beyond the whole range of water a shower mixes.
const MAX_SHIFT_C: f32 = 60.0;
/// The fastest common change of a household's temperatures the baseline follows, °C a
/// day: tastes follow the seasons (a degree or two over months), while the drifts worth
/// a technician are a few tenths of a degree a day.
const FOLLOW_C_PER_DAY: f32 = 0.05;
/// The baseline learns only while the best shift is within this, °C (what
/// [`FOLLOW_C_PER_DAY`] allows between two learnt sessions).
const ALIGNED_C: f32 = FOLLOW_C_PER_DAY * (BASELINE_EVERY_MS / DAY_MS) as f32;
/// Share of the recent sessions a shift must explain beyond what no shift explains.
const MARGIN_SHARE: f32 = 0.25;
/// Sessions of one cluster the shift must explain for that cluster to count as moved.
const PER_CLUSTER: usize = 2;
/// Clusters that must have moved, in a home of separate clusters.
const CLUSTERS_MOVED: usize = 2;

/// Drift state of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemperatureDrift {
    recent_c: SampleWindow<RECENT>,
    baseline_c: SampleWindow<BASELINE>,
    first_ts_ms: MaybeA4,
    baseline_pushed_ts_ms: MaybeA4,
    /// Consecutive sessions with an offset beyond the threshold.
    streak: u8,
    active: bool,
}

/// The samples of a window in ascending order, on the stack, and how many there are.
fn sorted<const N: usize>(w: &SampleWindow<N>) -> ([f32; N], usize) {
    let mut buf = [0.0f32; N];
    let mut n = 0;
    for (slot, x) in buf.iter_mut().zip(w.iter()) {
        *slot = x;
        n += 1;
    }
    buf[..n].sort_by(f32::total_cmp);
    (buf, n)
}

/// How well one session at `temp_c` is explained by the baseline `base` (ascending,
/// not empty) moved by `shift_c`: 1 on a baseline session, falling to 0 at `width_c`.
fn explanation(temp_c: f32, base: &[f32], shift_c: f32, width_c: f32) -> f32 {
    let unshifted = temp_c - shift_c;
    let i = base.partition_point(|&b| b < unshifted);
    let above = base.get(i).map_or(f32::INFINITY, |&b| b - unshifted);
    let below = i
        .checked_sub(1)
        .and_then(|j| base.get(j))
        .map_or(f32::INFINITY, |&b| unshifted - b);
    let off = above.min(below) / width_c;
    (1.0 - off * off).max(0.0)
}

/// How many of the `recent` sessions the baseline moved by `shift_c` explains.
fn explained(recent: &[f32], base: &[f32], shift_c: f32, width_c: f32) -> f32 {
    recent
        .iter()
        .map(|&x| explanation(x, base, shift_c, width_c))
        .sum()
}

/// The shift that best lays the recent sessions onto the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Alignment {
    /// The shift, °C (the smallest of equally good ones).
    shift_c: f32,
    /// Sessions it explains.
    explained: f32,
    /// Sessions no shift explains.
    unshifted: f32,
}

/// Searches the shifts between the two windows' extremes, every [`SHIFT_STEP_C`];
/// `recent` and `base` ascending and not empty.
fn best_shift(recent: &[f32], base: &[f32], width_c: f32) -> Alignment {
    const TIE: f32 = 1e-5;
    let unshifted = explained(recent, base, 0.0, width_c);
    let mut best = Alignment {
        shift_c: 0.0,
        explained: unshifted,
        unshifted,
    };
    let (Some(&r_lo), Some(&r_hi), Some(&b_lo), Some(&b_hi)) =
        (recent.first(), recent.last(), base.first(), base.last())
    else {
        return best;
    };
    let lo = (r_lo - b_hi).clamp(-MAX_SHIFT_C, MAX_SHIFT_C);
    let hi = (r_hi - b_lo).clamp(-MAX_SHIFT_C, MAX_SHIFT_C);
    // Bounded by MAX_SHIFT_C / SHIFT_STEP_C steps either way.
    let (k_lo, k_hi) = (
        (lo / SHIFT_STEP_C).floor() as i32,
        (hi / SHIFT_STEP_C).floor() as i32,
    );
    for k in k_lo..=k_hi {
        let shift_c = k as f32 * SHIFT_STEP_C;
        let e = explained(recent, base, shift_c, width_c);
        if e > best.explained + TIE
            || (e >= best.explained - TIE && shift_c.abs() < best.shift_c.abs())
        {
            best.shift_c = shift_c;
            best.explained = e;
        }
    }
    best
}

/// True when the baseline (ascending) holds clusters further apart than `width_c`.
fn separate_clusters(base: &[f32], width_c: f32) -> bool {
    base.windows(2).any(|w| w[1] - w[0] > width_c)
}

/// Clusters of the recent sessions (ascending) that `shift_c` explains better than no
/// shift: runs of such sessions closer than `width_c` to each other, counted when they
/// hold [`PER_CLUSTER`] sessions.
fn clusters_moved(recent: &[f32], base: &[f32], shift_c: f32, width_c: f32) -> usize {
    let mut moved = 0;
    let mut run: Option<(f32, usize)> = None;
    for &x in recent {
        if explanation(x, base, shift_c, width_c) <= explanation(x, base, 0.0, width_c) {
            continue;
        }
        run = match run {
            Some((last, n)) if x - last <= width_c => Some((x, n + 1)),
            other => {
                moved += usize::from(other.is_some_and(|(_, n)| n >= PER_CLUSTER));
                Some((x, 1))
            }
        };
    }
    moved + usize::from(run.is_some_and(|(_, n)| n >= PER_CLUSTER))
}

impl TemperatureDrift {
    /// A session at `ts_ms` had mean temperature `temp_c`. Returns `Some((drifting,
    /// offset °C, baseline middle °C))` when the verdict changes.
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
        // Warm once the baseline is full (every user seen a few times) and spans days
        // (or, for a home showering rarely, half full over a longer span).
        let n = self.baseline_c.len();
        let need = usize::from(cfg.drift_min_baseline).min(BASELINE);
        let warm = (n >= need && ts_ms - first >= WARM_SPAN_MS)
            || (n >= need / 2 && ts_ms - first >= 2 * WARM_SPAN_MS);
        let threshold = cfg.drift_min_c;
        let width_c = threshold.max(SHIFT_STEP_C);
        let mut verdict = None;
        let mut aligned = true;
        let (base_buf, n_base) = sorted(&self.baseline_c);
        let (recent_buf, n_recent) = sorted(&self.recent_c);
        let (base, recent) = (&base_buf[..n_base], &recent_buf[..n_recent]);
        if let (true, Some(&b_lo), Some(&b_hi)) =
            (warm && n_recent >= RECENT, base.first(), base.last())
        {
            let a = best_shift(recent, base, width_c);
            aligned = a.shift_c.abs() <= ALIGNED_C;
            let significant = a.explained >= a.unshifted + MARGIN_SHARE * n_recent as f32
                && (!separate_clusters(base, width_c)
                    || clusters_moved(recent, base, a.shift_c, width_c) >= CLUSTERS_MOVED);
            let offset = if significant { a.shift_c } else { 0.0 };
            let middle = (b_lo + b_hi) / 2.0;
            if offset.abs() > threshold {
                self.streak = self.streak.saturating_add(1);
            } else {
                self.streak = 0;
            }
            if !self.active && self.streak >= PERSIST {
                self.active = true;
                verdict = Some((true, offset, middle));
            } else if self.active && a.shift_c.abs() < threshold / 2.0 {
                // Cleared once the sessions lie on the baseline again (not merely
                // when the evidence for one shift is thin).
                self.active = false;
                verdict = Some((false, offset, middle));
            }
        }
        let due = !warm
            || self
                .baseline_pushed_ts_ms
                .get()
                .is_none_or(|t| ts_ms - t >= BASELINE_EVERY_MS);
        if !self.active && aligned && due {
            self.baseline_c.push(temp_c);
            if warm {
                self.baseline_pushed_ts_ms.replace(ts_ms);
            }
        }
        verdict
    }
}

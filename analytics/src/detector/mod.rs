//! Online, per-series anomaly detector ([`StreamingDetector`]).
//!
//! Each update is O(1) in time and the state is a fixed-size struct (about 1 KiB, see
//! [`StreamingDetector::state_size`]), so one detector can run per device metric. The
//! score of a point uses only that point and the points before it (no look-ahead) and
//! event time only (no clock). Parameters: [`DetectorConfig`]; building blocks:
//! [`stages`].
//!
//! Method, per point:
//!
//! 1. **Prediction and robust scale.** Two predictors of each value: a level (EWMA)
//!    predictor and a daily-seasonal predictor (a slow level plus a time-of-day
//!    profile of [`SEASON_BUCKETS`] buckets indexed by event time). Each has an EWMA
//!    mean-absolute-error scale, updated with errors clipped at `clip` scales so that
//!    outliers do not inflate it. The standardised error `z` of a point is the smaller
//!    of the two (the model that explains the point better wins).
//! 2. **Point evidence.** Under a Laplace error model `P(|E| > z·b) = exp(-z)`, so the
//!    log tail probability is `-z`; it is mapped to `[0, 1]` NAB-style (`-ln p / -ln 1e-10`).
//!    **Contextual novelty** (after NAB's "contextOSE" detector): each point gets a
//!    signed value bucket, `±floor(ctx_res·log2(1 + |x - slow| / mad))` with `mad` the
//!    long-run mean absolute deviation from the slow level, and the context is the pair
//!    (previous bucket, current bucket), remembered for 1-2 generations of
//!    `ctx_generation` points ([`stages::ContextNovelty`]). If the context was seen, the
//!    point evidence is multiplied by `novelty_damp`: a recurrent spike (same jump from
//!    the same level) stops alarming, a jump never seen before keeps its score.
//! 3. **Anomaly likelihood** (after Numenta's NAB detectors, [`stages::Likelihood`]):
//!    the mean of the last [`SHORT_WINDOW`] per-point surprise probabilities
//!    `1 - exp(-z)` against the long-run mean and variance of that mean (Gaussian tail):
//!    a burst of moderately surprising points.
//! 4. **Mean shift** ([`stages::MeanShift`]): the mean of the last [`SHIFT_WINDOW`]
//!    deviations `x - slow` against the long-run mean and variance of that mean
//!    (two-sided Gaussian tail), weighted by `shift_weight` and damped like the point
//!    evidence when the context is not novel. It sees a sustained shift of a fraction
//!    of the noise level that no single point reveals.
//! 5. **Spatial novelty** (Numenta's NAB detector, [`stages::SpatialRange`]): a value
//!    outside the range of all values seen so far by more than `spatial_tolerance` of
//!    that range scores `spatial_score` (1).
//! 6. **Combination and refractory suppression** ([`stages::Refractory`]). The evidence
//!    is the largest of the weighted stages; the reported score is the evidence in
//!    excess of a decaying memory of the recent peak evidence, so one event gives one
//!    strong alarm rather than a burst, or the spatial score if that is larger (a value
//!    never seen before always alarms). The first `warmup / 2` points only train the
//!    models; the evidence (and the peak memory) starts after them, and scores are
//!    reported after `warmup` points.
//!
//! Non-finite values are ignored: the state is not touched and the score is 0.
//!
//! For the product's own series (a device's daily water or energy total, the
//! platform's ingest and rejection rates per minute), use [`SeriesMonitor`]: a
//! rank-based monitor (a robust local line and the MAD around it) with a two-week
//! warm-up and one alarm per episode.

mod config;
mod monitor;
pub mod stages;

pub use config::DetectorConfig;
pub use monitor::{Anomaly, Direction, MonitorConfig, SeriesMonitor, MONITOR_WINDOW};
pub use stages::{CTX_WORDS, SHIFT_WINDOW, SHORT_WINDOW};

use crate::error::ConfigError;
use stages::{
    gauss_tail_score_bound, neg_ln_gauss_tail, tail_to_score, ContextNovelty, Likelihood,
    MeanShift, Refractory, SpatialRange,
};

/// Number of time-of-day buckets of the seasonal profile.
pub const SEASON_BUCKETS: usize = 48;

/// Per-series streaming anomaly detector. See the module docs for the method.
#[derive(Debug, Clone)]
pub struct StreamingDetector {
    cfg: DetectorConfig,
    n: u64,
    level: f64,
    level_scale: f64,
    slow: f64,
    season_scale: f64,
    dev_scale: f64,
    last_score: f64,
    since_novel: u16,
    context: ContextNovelty,
    likelihood: Likelihood,
    shift: MeanShift,
    range: SpatialRange,
    refractory: Refractory,
    season: [f32; SEASON_BUCKETS],
    season_seen: [u8; SEASON_BUCKETS],
}

impl StreamingDetector {
    /// Create a detector; fails if `cfg` is out of range.
    pub fn new(cfg: DetectorConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            n: 0,
            level: 0.0,
            level_scale: 0.0,
            slow: 0.0,
            season_scale: 0.0,
            dev_scale: 0.0,
            last_score: 0.0,
            since_novel: 0,
            context: ContextNovelty::default(),
            likelihood: Likelihood::default(),
            shift: MeanShift::default(),
            range: SpatialRange::new(0.0),
            refractory: Refractory::default(),
            season: [0.0; SEASON_BUCKETS],
            season_seen: [0; SEASON_BUCKETS],
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &DetectorConfig {
        &self.cfg
    }

    /// Number of finite values consumed.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The score returned by the last finite update.
    pub fn last_score(&self) -> f64 {
        self.last_score
    }

    /// Bytes of state per series (`size_of::<StreamingDetector>()`, config included).
    pub const fn state_size() -> usize {
        std::mem::size_of::<Self>()
    }

    fn bucket(&self, ts_ms: i64) -> Option<usize> {
        let p = self.cfg.season_period_ms;
        if p <= 0 {
            return None;
        }
        let phase = i128::from(ts_ms.rem_euclid(p));
        Some(((phase * SEASON_BUCKETS as i128) / i128::from(p)) as usize % SEASON_BUCKETS)
    }

    /// Feed one observation (event time in ms, value) and get its anomaly score in
    /// `[0, 1]`. Non-finite values return 0 and leave the state unchanged.
    pub fn update(&mut self, ts_ms: i64, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        let c = self.cfg;
        let bucket = self.bucket(ts_ms);
        if self.n == 0 {
            self.n = 1;
            self.level = value;
            self.slow = value;
            self.range = SpatialRange::new(value);
            self.last_score = 0.0;
            return 0.0;
        }
        self.n += 1;
        let report = self.n > u64::from(c.warmup);
        let scoring = self.n > u64::from(c.warmup / 2);
        let inv_n = 1.0 / self.n as f64;
        let floor = (c.rel_scale_floor * self.slow.abs()).max(1e-9);

        // 1. Predictions and standardised error (the better model wins).
        let e_level = value - self.level;
        let mut z = e_level.abs() / self.level_scale.max(floor);
        let mut season_err = None;
        if let Some(b) = bucket {
            let e = value - (self.slow + f64::from(self.season[b]));
            let ready = u32::from(self.season_seen[b]) >= c.season_min_cycles;
            if ready && self.season_scale > 0.0 {
                z = z.min(e.abs() / self.season_scale.max(floor));
            }
            season_err = Some((b, e, ready));
        }

        // 2. Point evidence, damped when its context (previous and current value bucket,
        //    or time-of-day slot and value bucket) is not novel.
        let dev = value - self.slow;
        let mut novelty = 1.0;
        let mut window_novelty = 1.0;
        if c.novelty_damp < 1.0 {
            let u = dev.abs() / self.dev_scale.max(floor);
            let mag = ((1.0 + u).log2() * c.ctx_res).floor().min(15.0) as i32;
            let b = if dev < 0.0 { -mag } else { mag };
            let slot = (c.ctx_tod > 0 && c.season_period_ms > 0).then(|| {
                let p = c.season_period_ms;
                (i128::from(ts_ms.rem_euclid(p)) * i128::from(c.ctx_tod) / i128::from(p)) as i32
            });
            if self.context.observe(b, slot, c.ctx_generation) {
                novelty = c.novelty_damp;
                self.since_novel = self.since_novel.saturating_add(1);
            } else {
                self.since_novel = 0;
            }
            self.dev_scale += c.slow_alpha.max(inv_n) * (dev.abs() - self.dev_scale);
            if usize::from(self.since_novel) >= SHIFT_WINDOW {
                window_novelty = c.novelty_damp;
            }
        }
        let point = novelty * tail_to_score(z);

        // 3. Anomaly likelihood of the short window of surprises (standardised mean).
        let surprise = (1.0 - (-z).exp()) as f32;
        let z_likelihood = self.likelihood.update(surprise, self.n, c.long_alpha);

        // 4. Mean shift of the short window of deviations from the slow level (|z|).
        let z_shift = self.shift.update(dev, c.shift_alpha, floor);

        // 5. Spatial novelty: a value beyond the range seen so far.
        let spatial = if self.range.observe(value, floor) > c.spatial_tolerance {
            c.spatial_score
        } else {
            0.0
        };

        // Model updates, after this point's evidence has been computed.
        let sa = c.scale_alpha.max(inv_n);
        let clip = |e: f64, b: f64| {
            if b > 0.0 {
                e.abs().min(c.clip * b)
            } else {
                e.abs()
            }
        };
        self.level_scale += sa * (clip(e_level, self.level_scale) - self.level_scale);
        self.level += c.level_alpha * e_level;
        if let Some((b, e, ready)) = season_err {
            if ready {
                self.season_scale += sa * (clip(e, self.season_scale) - self.season_scale);
            }
            let seen = self.season_seen[b];
            let ba = c.season_alpha.max(1.0 / (f64::from(seen) + 1.0));
            self.season[b] += (ba * (dev - f64::from(self.season[b]))) as f32;
            self.season_seen[b] = seen.saturating_add(1);
        }
        self.slow += c.slow_alpha.max(inv_n) * dev;

        // 6. Combine, keep the excess over the decaying recent peak (the spatial score
        //    passes unreduced).
        // The Gaussian tails (an `erfc` each) are only evaluated when their bound can
        // beat the evidence already found; the result is the same as evaluating both.
        let evidence = if scoring {
            let mut ev = (c.point_weight * point).max(spatial);
            let tail_stage = |ev: f64, weight: f64, z: f64| {
                if weight * gauss_tail_score_bound(z) > ev {
                    ev.max(weight * tail_to_score(neg_ln_gauss_tail(z)))
                } else {
                    ev
                }
            };
            ev = tail_stage(ev, c.likelihood_weight, z_likelihood);
            if let Some(zs) = z_shift {
                ev = tail_stage(ev, c.shift_weight * window_novelty, zs);
            }
            ev.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let score = if c.refractory_decay > 0.0 {
            self.refractory.excess(evidence, c.refractory_decay)
        } else {
            evidence
        };
        let score = if report {
            score.max(if scoring { spatial } else { 0.0 })
        } else {
            0.0
        };
        self.last_score = score;
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 300_000;

    /// Deterministic pseudo-random noise in [-0.5, 0.5).
    fn noise(seed: &mut u64) -> f64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        (*seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    fn noisy_series(n: usize) -> Vec<(i64, f64)> {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|i| {
                let v =
                    50.0 + 10.0 * (i as f64 * std::f64::consts::TAU / 288.0).sin() + noise(&mut s);
                (i as i64 * STEP, v)
            })
            .collect()
    }

    fn run(points: &[(i64, f64)]) -> Vec<f64> {
        let mut d =
            StreamingDetector::new(DetectorConfig::default()).expect("default config is valid");
        points.iter().map(|&(t, v)| d.update(t, v)).collect()
    }

    #[test]
    fn state_is_small() {
        assert!(
            StreamingDetector::state_size() < 1024,
            "{}",
            StreamingDetector::state_size()
        );
    }

    #[test]
    fn bad_config_is_rejected() {
        let cfg = DetectorConfig {
            level_alpha: 0.0,
            ..DetectorConfig::default()
        };
        assert!(StreamingDetector::new(cfg).is_err());
        let cfg = DetectorConfig {
            refractory_decay: 1.0,
            ..DetectorConfig::default()
        };
        assert!(StreamingDetector::new(cfg).is_err());
        let cfg = DetectorConfig {
            novelty_damp: 1.5,
            ..DetectorConfig::default()
        };
        assert!(StreamingDetector::new(cfg).is_err());
        let cfg = DetectorConfig {
            clip: f64::NAN,
            ..DetectorConfig::default()
        };
        assert!(StreamingDetector::new(cfg).is_err());
    }

    #[test]
    fn flat_series_scores_low() {
        let pts: Vec<(i64, f64)> = (0..2000).map(|i| (i * STEP, 42.0)).collect();
        let s = run(&pts);
        // The likelihood stage reports its median (p = 0.5 -> 0.03) once; afterwards only
        // the refractory leak (1 - decay) of that constant evidence remains.
        assert!(
            s.iter().all(|&x| x < 0.05),
            "{:?}",
            s.iter().cloned().fold(0.0, f64::max)
        );
        assert!(s[400..].iter().all(|&x| x < 1e-3));
    }

    #[test]
    fn scores_in_unit_interval_and_noise_is_low() {
        let pts = noisy_series(3000);
        let s = run(&pts);
        assert!(s.iter().all(|&x| (0.0..=1.0).contains(&x)));
        let late_max = s[1000..].iter().cloned().fold(0.0, f64::max);
        assert!(late_max < 0.3, "noise max {late_max}");
    }

    #[test]
    fn big_spike_scores_high() {
        let mut pts = noisy_series(3000);
        pts[2500].1 += 40.0;
        let s = run(&pts);
        let before = s[1000..2500].iter().cloned().fold(0.0, f64::max);
        assert!(s[2500] > 0.9, "spike score {}", s[2500]);
        assert!(
            s[2500] > 3.0 * before,
            "spike {} vs background {before}",
            s[2500]
        );
    }

    #[test]
    fn level_shift_is_detected_once() {
        let mut pts = noisy_series(3000);
        for p in &mut pts[2000..] {
            p.1 += 15.0;
        }
        let s = run(&pts);
        // The shifted values lie partly in the range the daily swing already visited, so
        // some points are damped as non-novel; the first novel transition still alarms
        // far above the corpus thresholds (~0.1).
        assert!(
            s[2000..2010].iter().cloned().fold(0.0, f64::max) > 0.3,
            "{:?}",
            &s[1995..2015]
        );
        // The refractory memory keeps the aftermath quiet.
        let after = s[2020..2100].iter().filter(|&&x| x > 0.5).count();
        assert!(after <= 2, "{after} repeated alarms");
    }

    #[test]
    fn recurring_daily_spike_loses_novelty() {
        // The same spike at the same time of day, every day: once its (time-of-day, value)
        // context has been seen, later repeats score lower than the first occurrence.
        let mut pts = noisy_series(288 * 6);
        let days: Vec<usize> = (2..6).map(|d| d * 288 + 100).collect();
        for &i in &days {
            pts[i].1 += 40.0;
        }
        let s = run(&pts);
        assert!(s[days[0]] > 0.9, "first spike {}", s[days[0]]);
        for &i in &days[1..] {
            assert!(s[i] < 0.5 * s[days[0]], "repeat at {i}: {}", s[i]);
        }
    }

    #[test]
    fn no_look_ahead() {
        let mut pts = noisy_series(1500);
        pts[900].1 += 30.0;
        let full = run(&pts);
        for cut in [1, 150, 899, 901, 1200] {
            let prefix = run(&pts[..cut]);
            assert_eq!(prefix, full[..cut].to_vec(), "prefix of {cut} differs");
        }
    }

    #[test]
    fn non_finite_values_do_not_poison_state() {
        let pts = noisy_series(1500);
        let clean = run(&pts);
        let mut d = StreamingDetector::new(DetectorConfig::default()).expect("valid");
        let mut got = Vec::new();
        for (i, &(t, v)) in pts.iter().enumerate() {
            if i % 100 == 50 {
                assert_eq!(d.update(t, f64::NAN), 0.0);
                assert_eq!(d.update(t, f64::INFINITY), 0.0);
                assert_eq!(d.update(t, f64::NEG_INFINITY), 0.0);
            }
            got.push(d.update(t, v));
        }
        assert_eq!(got, clean);
        assert_eq!(d.count(), 1500);
    }

    /// Level 50 plus uniform noise in [-0.5, 0.5) (no daily cycle).
    fn flat_noisy(n: usize) -> Vec<(i64, f64)> {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|i| (i as i64 * STEP, 50.0 + noise(&mut s)))
            .collect()
    }

    fn run_with(cfg: DetectorConfig, points: &[(i64, f64)]) -> Vec<f64> {
        let mut d = StreamingDetector::new(cfg).expect("valid config");
        points.iter().map(|&(t, v)| d.update(t, v)).collect()
    }

    fn max_of(s: &[f64]) -> f64 {
        s.iter().cloned().fold(0.0, f64::max)
    }

    #[test]
    fn sustained_shift_is_caught_early_by_the_mean_shift_stage() {
        // +0.8 (about 2.8 noise standard deviations) for 40 points: single points are
        // only mildly surprising, the mean of a few of them is not. (Shifted values leave
        // the range seen so far, so the spatial stage is off here to isolate the
        // mean-shift stage.)
        let mut pts = flat_noisy(3000);
        for p in &mut pts[2500..2540] {
            p.1 += 0.8;
        }
        let no_spatial = DetectorConfig {
            spatial_score: 0.0,
            ..DetectorConfig::default()
        };
        let with = run_with(no_spatial, &pts);
        let background = max_of(&with[1000..2500]);
        let early = max_of(&with[2500..2505]);
        assert!(
            early > 0.12 && early > 2.0 * background,
            "within 5 points {early}, background {background}"
        );
        let without = run_with(
            DetectorConfig {
                shift_weight: 0.0,
                ..no_spatial
            },
            &pts,
        );
        assert!(
            max_of(&without[2500..2505]) < 0.05,
            "{:?}",
            &without[2500..2505]
        );
    }

    #[test]
    fn value_beyond_the_seen_range_scores_one() {
        // 0.1 above the range [49.5, 50.5) seen so far: 10 % of the range, and only about
        // 2.5 noise scales from the level, so the point evidence alone is modest.
        let mut pts = flat_noisy(3000);
        pts[2500].1 = 50.6;
        let s = run(&pts);
        assert_eq!(s[2500], 1.0);
        assert!(max_of(&s[1000..2500]) < 0.3);
        let without = run_with(
            DetectorConfig {
                spatial_score: 0.0,
                ..DetectorConfig::default()
            },
            &pts,
        );
        assert!(without[2500] < 0.5, "{}", without[2500]);
    }

    #[test]
    fn no_alarm_when_reporting_starts_after_a_warm_up_event() {
        // A spike just before the warm-up ends (still in the mean-shift window when the
        // reporting starts) has fed the refractory memory, so the first reported points
        // are not alarms just because that memory was empty.
        let mut pts = flat_noisy(400);
        let warmup = DetectorConfig::default().warmup as usize;
        pts[warmup - 3].1 += 20.0;
        let s = run(&pts);
        assert!(s[..warmup].iter().all(|&x| x == 0.0));
        assert!(
            max_of(&s[warmup..warmup + 50]) < 0.1,
            "{:?}",
            &s[warmup..warmup + 50]
        );
    }

    #[test]
    fn deterministic() {
        let pts = noisy_series(800);
        assert_eq!(run(&pts), run(&pts));
    }
}

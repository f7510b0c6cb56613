//! Online, per-series anomaly detector ([`StreamingDetector`]).
//!
//! Each update is O(1) in time and the state is a fixed-size struct (well under
//! 1 KiB), so one detector can run per device metric. Scores use only the points
//! seen so far (no look-ahead) and event time only (no clock). The method:
//!
//! 1. **Prediction and robust scale.** Two predictors of the next value: a level
//!    (EWMA) predictor and a daily-seasonal predictor (a slow level plus a
//!    time-of-day profile of `SEASON_BUCKETS` buckets, indexed by event time). Each
//!    has an EWMA mean-absolute-error scale. The surprise of a point is the smaller of
//!    the two absolute errors in units of the respective scale (the better model wins).
//! 2. **Point evidence.** Under a Laplace model of the errors, `P(|e| > x) = exp(-x/b)`,
//!    so `-ln P` grows linearly with the standardised error; it is mapped to `[0, 1]`
//!    like NAB's log-likelihood scores (1 at a tail probability of 1e-10).
//! 3. **Anomaly likelihood** (as in Numenta's NAB detectors): the mean of the last
//!    `SHORT_WINDOW` per-point surprise probabilities is compared with the long-run
//!    distribution (EWMA mean and variance) of that mean; its Gaussian tail probability
//!    gives the evidence that the recent regime differs from the learned one, which
//!    catches sustained changes that no single point reveals.
//! 4. **Combination and refractory suppression.** The evidence is the larger of the
//!    two; the score reported is the evidence in excess of a decaying memory of the
//!    recent peak evidence, so one event gives one strong alarm, not a burst.
//!
//! Non-finite values are ignored (state unchanged, score 0).

use statrs::function::erf::erfc;

use crate::error::ConfigError;

/// Number of time-of-day buckets of the seasonal profile.
pub const SEASON_BUCKETS: usize = 48;
/// Length of the short window of the anomaly-likelihood stage.
pub const SHORT_WINDOW: usize = 10;

/// `-ln(1e-10)`: tail probability that maps to score 1.
const LN_TAIL_FLOOR: f64 = 23.025_850_929_940_457;

/// Detector parameters. [`DetectorConfig::default`] is the tuned general-purpose set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Points seen before any non-zero score is reported.
    pub warmup: u32,
    /// EWMA rate of the level predictor.
    pub level_alpha: f64,
    /// EWMA rate of the error scales.
    pub scale_alpha: f64,
    /// EWMA rate of the slow level under the seasonal profile.
    pub slow_alpha: f64,
    /// EWMA rate of each seasonal bucket (per visit of that bucket).
    pub season_alpha: f64,
    /// Seasonal period in milliseconds of event time (0 disables the seasonal model).
    pub season_period_ms: i64,
    /// Visits per bucket (on average) before the seasonal predictor is trusted.
    pub season_min_cycles: u32,
    /// EWMA rate of the long-run distribution of the short-window mean.
    pub long_alpha: f64,
    /// Residuals are clipped at this many scale units when updating the scales.
    pub clip: f64,
    /// Per-point decay of the refractory peak memory (0 disables suppression).
    pub refractory_decay: f64,
    /// Relative floor of the scales (fraction of |level|) to keep flat series sane.
    pub rel_scale_floor: f64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            warmup: 100,
            level_alpha: 0.1,
            scale_alpha: 0.01,
            slow_alpha: 0.002,
            season_alpha: 0.1,
            season_period_ms: 86_400_000,
            season_min_cycles: 2,
            long_alpha: 0.001,
            clip: 6.0,
            refractory_decay: 0.99,
            rel_scale_floor: 1e-3,
        }
    }
}

impl DetectorConfig {
    /// Check all parameters are in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let unit = |name: &'static str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::OutOfRange { name, value: v, reason: "must be in (0, 1]" })
            }
        };
        unit("level_alpha", self.level_alpha)?;
        unit("scale_alpha", self.scale_alpha)?;
        unit("slow_alpha", self.slow_alpha)?;
        unit("season_alpha", self.season_alpha)?;
        unit("long_alpha", self.long_alpha)?;
        if !(self.clip > 0.0 && self.clip.is_finite()) {
            return Err(ConfigError::OutOfRange { name: "clip", value: self.clip, reason: "must be > 0" });
        }
        if !(0.0..1.0).contains(&self.refractory_decay) {
            return Err(ConfigError::OutOfRange {
                name: "refractory_decay",
                value: self.refractory_decay,
                reason: "must be in [0, 1)",
            });
        }
        if !(self.rel_scale_floor >= 0.0 && self.rel_scale_floor.is_finite()) {
            return Err(ConfigError::OutOfRange {
                name: "rel_scale_floor",
                value: self.rel_scale_floor,
                reason: "must be >= 0",
            });
        }
        if self.season_period_ms < 0 {
            return Err(ConfigError::OutOfRange {
                name: "season_period_ms",
                value: self.season_period_ms as f64,
                reason: "must be >= 0",
            });
        }
        Ok(())
    }
}

/// Per-series streaming anomaly detector. See the module docs for the method.
#[derive(Debug, Clone)]
pub struct StreamingDetector {
    cfg: DetectorConfig,
    n: u64,
    level: f64,
    level_scale: f64,
    slow: f64,
    season_scale: f64,
    season: [f32; SEASON_BUCKETS],
    season_seen: [u8; SEASON_BUCKETS],
    ring: [f32; SHORT_WINDOW],
    ring_sum: f64,
    long_mean: f64,
    long_var: f64,
    peak: f64,
    last_score: f64,
}

/// Score in `[0, 1]` from a tail probability, NAB style: `-ln(p) / -ln(1e-10)`.
fn tail_to_score(neg_ln_p: f64) -> f64 {
    (neg_ln_p / LN_TAIL_FLOOR).clamp(0.0, 1.0)
}

/// `-ln` of the upper Gaussian tail probability at `z`, stable for large `z`.
fn neg_ln_gauss_tail(z: f64) -> f64 {
    let q = 0.5 * erfc(z / std::f64::consts::SQRT_2);
    if q > 1e-300 {
        -q.ln()
    } else {
        // Asymptotic expansion: ln Q(z) ~ -z^2/2 - ln(z sqrt(2 pi)).
        0.5 * z * z + (z * (2.0 * std::f64::consts::PI).sqrt()).ln()
    }
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
            season: [0.0; SEASON_BUCKETS],
            season_seen: [0; SEASON_BUCKETS],
            ring: [0.0; SHORT_WINDOW],
            ring_sum: 0.0,
            long_mean: 0.0,
            long_var: 0.0,
            peak: 0.0,
            last_score: 0.0,
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

    /// Bytes of state per series (`size_of::<StreamingDetector>()`).
    pub const fn state_size() -> usize {
        std::mem::size_of::<Self>()
    }

    fn bucket(&self, ts_ms: i64) -> Option<usize> {
        let p = self.cfg.season_period_ms;
        if p <= 0 {
            return None;
        }
        let phase = ts_ms.rem_euclid(p) as i128;
        Some(((phase * SEASON_BUCKETS as i128) / p as i128) as usize % SEASON_BUCKETS)
    }

    /// Feed one observation (event time in ms, value) and get its anomaly score in `[0, 1]`.
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
            self.last_score = 0.0;
            return 0.0;
        }
        self.n += 1;
        let floor = (c.rel_scale_floor * self.slow.abs()).max(1e-9);

        // 1. Predictions and their standardised errors.
        let e_level = value - self.level;
        let b_level = self.level_scale.max(floor);
        let mut z = e_level.abs() / b_level;
        let mut e_season = None;
        if let Some(b) = bucket {
            let ready = self.season_seen[b] as u32 >= c.season_min_cycles;
            let e = value - (self.slow + f64::from(self.season[b]));
            if ready && self.season_scale > 0.0 {
                z = z.min(e.abs() / self.season_scale.max(floor));
            }
            e_season = Some(e);
        }

        // 2. Point evidence (Laplace tail) and per-point surprise probability.
        let point = if self.n as u32 > c.warmup { tail_to_score(z) } else { 0.0 };
        let surprise = 1.0 - (-z).exp(); // P(|E| < |e|) under Laplace

        // 3. Anomaly likelihood of the short window under the long-run distribution.
        let slot = (self.n as usize) % SHORT_WINDOW;
        self.ring_sum += surprise - f64::from(self.ring[slot]);
        self.ring[slot] = surprise as f32;
        let short = self.ring_sum / SHORT_WINDOW as f64;
        let mut likelihood = 0.0;
        if self.n as u32 > c.warmup {
            let sd = self.long_var.max(1e-6).sqrt();
            likelihood = tail_to_score(neg_ln_gauss_tail((short - self.long_mean) / sd));
        }
        let la = c.long_alpha.max(1.0 / self.n as f64);
        let d = short - self.long_mean;
        self.long_mean += la * d;
        self.long_var = (1.0 - la) * (self.long_var + la * d * d);

        // Model updates (after scoring: no look-ahead into the current point's score).
        let sa = c.scale_alpha.max(1.0 / self.n as f64);
        let clip = |e: f64, b: f64| if b > 0.0 { e.abs().min(c.clip * b) } else { e.abs() };
        self.level_scale += sa * (clip(e_level, self.level_scale) - self.level_scale);
        self.level += c.level_alpha * e_level;
        if let (Some(b), Some(e)) = (bucket, e_season) {
            if self.season_seen[b] as u32 >= c.season_min_cycles {
                self.season_scale += sa * (clip(e, self.season_scale) - self.season_scale);
            }
            let dev = value - self.slow;
            let seen = self.season_seen[b];
            let ba = c.season_alpha.max(1.0 / (f64::from(seen) + 1.0));
            self.season[b] += (ba * (dev - f64::from(self.season[b]))) as f32;
            self.season_seen[b] = seen.saturating_add(1);
            self.slow += c.slow_alpha.max(1.0 / self.n as f64) * (value - self.slow);
        }

        // 4. Combine and suppress repeats.
        let evidence = point.max(likelihood);
        let score = if c.refractory_decay > 0.0 {
            let prev_peak = self.peak * c.refractory_decay;
            self.peak = prev_peak.max(evidence);
            (evidence - prev_peak).max(0.0)
        } else {
            evidence
        };
        let score = score.clamp(0.0, 1.0);
        self.last_score = score;
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_small() {
        assert!(StreamingDetector::state_size() < 1024, "{}", StreamingDetector::state_size());
    }

    #[test]
    fn bad_config_is_rejected() {
        let cfg = DetectorConfig { level_alpha: 0.0, ..DetectorConfig::default() };
        assert!(StreamingDetector::new(cfg).is_err());
        let cfg = DetectorConfig { refractory_decay: 1.0, ..DetectorConfig::default() };
        assert!(StreamingDetector::new(cfg).is_err());
    }
}
